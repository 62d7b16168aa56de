"""Upcalls and revalidation: between the datapath's megaflow cache and the translator.

```
 burst ─► mf_lookup ─miss─► handle_misses: translate the frame's key ─► install (key & mask, mask, actions)
                                    │  frames of the same burst the new megaflow covers take it too
                                    ▼  (in arrival order: nothing is re-ordered or held back)
                           every frame has a megaflow ─► execute_burst
 each second / before a flow set change / on demand:
      push_stats: megaflow packets and bytes since the last push ─► the flows they hit (rule counters)
                  and the tables they looked in (table lookups / matches); then idle megaflows expire
 flow set change (activate): megaflows whose walk visited a changed table are removed, the others keep
      their rules (renumbered); anything else (ports, miss policy, a skipped set) removes them all
```

This runs on the datapath thread, as OVS's userspace datapath runs upcalls on its PMD threads: a
miss is translated within the burst it arrived in, so no frame waits and none overtakes another.
"""

from __future__ import annotations

import time

import numpy as np

from dpif import megaflow as M
from ofproto.tables import C_BYTES, C_PACKETS, C_USED, TableSet
from xlate.translate import UpcallCookies, translate

MAX_RULES = 64           # rules a megaflow credits (a longer walk credits its first 64)
DEFAULT_MAX_IDLE = 10    # seconds a megaflow lives without a hit (OVS's other_config:max-idle, 10 s)


class Upcalls:
    """The megaflow cache of one datapath, with what each megaflow was translated from."""

    def __init__(self, max_flows: int = M.DEFAULT_MAX_FLOWS, emc_size: int = M.DEFAULT_EMC_SIZE,
                 max_idle: int = DEFAULT_MAX_IDLE, cookies: UpcallCookies | None = None) -> None:
        self.cache = M.MegaflowCache(max_flows, emc_size)
        self.cookies = cookies if cookies is not None else UpcallCookies()
        self.max_idle = max_idle
        # rank + 1 of each rule a megaflow hit (0: none); zeros, so untouched rows cost no memory
        self.rules = np.zeros((max_flows, MAX_RULES), dtype=np.int32)
        self.miss_table = np.full(max_flows, -1, dtype=np.int64)
        self.pushed = np.zeros((max_flows, 2), dtype=np.int64)     # packets, bytes already credited
        self.counters = {"upcalls": 0, "translations": 0, "installed": 0, "evicted_full": 0,
                         "revalidated_removed": 0, "flushes": 0, "expired": 0}
        self.translate_ns = 0

    # -------------------------------------------------------------- misses (datapath thread)
    def handle_misses(self, ts: TableSet, port_flags: np.ndarray, keys: np.ndarray, burst: np.ndarray, n: int,
                      meta: np.ndarray, out_entry: np.ndarray, now: int) -> None:
        """Give every frame of ``burst[:n]`` with ``out_entry[i] < 0`` a megaflow (translating and installing)."""
        cache = self.cache
        ent = cache.ent
        t0 = time.perf_counter_ns()
        miss = np.flatnonzero(out_entry[:n] < 0)
        self.counters["upcalls"] += len(miss)
        while len(miss):
            i = int(miss[0])
            slot = int(burst[i])
            key = keys[slot]
            res = translate(ts, [int(w) for w in key], port_flags, self.cookies)
            self.counters["translations"] += 1
            mask = res.mask_row()
            e = cache.install(key, mask, res.program(), now)
            if e < 0:
                self._evict_oldest()
                e = cache.install(key, mask, res.program(), now)
            if e < 0:   # still no room (every subtable in use): drop this frame, counted by the cache
                out_entry[i] = -1
                miss = miss[1:]
                continue
            if ent[e, M.E_PACKETS] == 0:    # a new megaflow (an id may be reused: forget the old one)
                self.pushed[e] = 0
                self.rules[e] = 0
                r = res.ranks[:MAX_RULES]
                self.rules[e, :len(r)] = np.array(r, dtype=np.int32) + 1
                self.miss_table[e] = res.miss_table
                self.counters["installed"] += 1
            # the frames of this burst the megaflow covers (this one included) take it
            rest = burst[miss]
            covered = ~((keys[rest] & mask) ^ (key & mask)).any(axis=1)
            took = miss[covered]
            out_entry[took] = e
            ent[e, M.E_PACKETS] += len(took)
            ent[e, M.E_BYTES] += int(meta[burst[took], M.META_LEN].sum())
            ent[e, M.E_USED] = now
            miss = miss[~covered]
        self.translate_ns += time.perf_counter_ns() - t0

    def _evict_oldest(self) -> None:
        """Make room: remove the least recently used eighth of the megaflows."""
        ent = self.cache.ent
        live = np.flatnonzero(ent[:, M.E_SUB] >= 0)
        if not len(live):
            return
        k = max(1, len(live) // 8)
        old = live[np.argsort(ent[live, M.E_USED], kind="stable")[:k]]
        for e in old:
            self.cache.remove(int(e))
        self.counters["evicted_full"] += k

    # -------------------------------------------------------------- statistics and revalidation
    def push_stats(self, ts: TableSet | None) -> None:
        """Credit the flows and tables of ``ts`` with what their megaflows forwarded since the last push."""
        ent = self.cache.ent
        live = np.flatnonzero(ent[:, M.E_SUB] >= 0)
        if not len(live):
            return
        dp = ent[live, M.E_PACKETS] - self.pushed[live, 0]
        moved = dp > 0
        if ts is None or not moved.any():
            self.pushed[live, 0] = ent[live, M.E_PACKETS]
            self.pushed[live, 1] = ent[live, M.E_BYTES]
            return
        e = live[moved]
        dp = dp[moved]
        db = ent[e, M.E_BYTES] - self.pushed[e, 1]
        used = ent[e, M.E_USED]
        rules = self.rules[e]
        hit = rules > 0
        r = rules[hit] - 1
        rows = np.nonzero(hit)[0]
        np.add.at(ts.counters[:, C_PACKETS], r, dp[rows])
        np.add.at(ts.counters[:, C_BYTES], r, db[rows])
        np.maximum.at(ts.counters[:, C_USED], r, used[rows])
        tables = ts.table_of[r]
        np.add.at(ts.table_counters[:, 0], tables, dp[rows])
        np.add.at(ts.table_counters[:, 1], tables, dp[rows])
        mt = self.miss_table[e]
        m = mt >= 0
        np.add.at(ts.table_counters[:, 0], mt[m], dp[m])
        self.pushed[live, 0] = ent[live, M.E_PACKETS]
        self.pushed[live, 1] = ent[live, M.E_BYTES]

    def expire(self, ts: TableSet | None, now: int) -> int:
        """Credit statistics, then remove the megaflows idle for ``max_idle`` seconds; returns how many."""
        self.push_stats(ts)
        gone = self.cache.expire(now, self.max_idle)
        self.counters["expired"] += len(gone)
        return len(gone)

    def flush(self, ts: TableSet | None) -> None:
        """Credit statistics to ``ts`` and remove every megaflow."""
        self.push_stats(ts)
        if len(self.cache):
            self.counters["flushes"] += 1
        self.cache.clear()
        self.pushed[:] = 0

    def revalidate(self, old: TableSet | None, new: TableSet) -> None:
        """``new`` replaces ``old``: credit ``old``, remove the megaflows ``new`` may translate differently,
        renumber the rules of the others."""
        if old is None or new.changed is None or new.prev_gen != old.gen:
            self.flush(old)
            return
        self.push_stats(old)
        ent = self.cache.ent
        live = np.flatnonzero(ent[:, M.E_SUB] >= 0)
        if not len(live):
            return
        changed = np.array(sorted(new.changed), dtype=np.int64)
        tables = np.insert(old.table_of, 0, -1)[self.rules[live]]     # rank + 1; 0 (no rule) -> table -1
        hit = np.isin(tables, changed).any(axis=1) | np.isin(self.miss_table[live], changed)
        for e in live[hit]:
            self.cache.remove(int(e))
        self.counters["revalidated_removed"] += int(hit.sum())
        keep = live[~hit]
        m = np.insert(new.rank_map_from(old)[:-1] + 1, 0, 0)    # rank + 1 -> new rank + 1 (0: none, or gone)
        self.rules[keep] = m[self.rules[keep]]

    def stats(self) -> dict[str, int]:
        """Cache and upcall counters (``upcall/show``, ``dpif-netdev/pmd-stats-show``)."""
        return {**self.cache.stats(), **self.counters, "translate_us": self.translate_ns // 1000}
