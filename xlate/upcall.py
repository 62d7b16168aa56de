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
                         "revalidated_removed": 0, "flushes": 0, "expired": 0, "not_installed": 0}
        self.translate_ns = 0
        self._scratch: list[tuple[np.ndarray, int, int]] = []
        self._covered = np.zeros(4096, dtype=np.uint8)

    # -------------------------------------------------------------- misses (datapath thread)
    def handle_misses(self, ts: TableSet, port_flags: np.ndarray, keys: np.ndarray, burst: np.ndarray, n: int,
                      meta: np.ndarray, out_entry: np.ndarray, now: int) -> None:
        """Give every frame of ``burst[:n]`` with ``out_entry[i] < 0`` a megaflow (translating and
        installing), then fill ``self.prog_index``-style rows with ``programs``. A translation the cache has
        no room for (``megaflow_table_full`` / ``megaflow_subtables_full``) still runs on its frames, from
        a scratch copy of its program (OVS executes an upcall whose install fails), and credits its rules
        at once; the cache is trimmed on the next ``expire``, never in the middle of a burst."""
        cache = self.cache
        ent = cache.ent
        t0 = time.perf_counter_ns()
        miss = np.flatnonzero(out_entry[:n] < 0)
        self.counters["upcalls"] += len(miss)
        uninstalled: list[tuple[np.ndarray, np.ndarray]] = []
        while len(miss):
            i = int(miss[0])
            slot = int(burst[i])
            key = keys[slot]
            res = translate(ts, key.tolist(), port_flags, self.cookies)
            self.counters["translations"] += 1
            mask = res.mask_row()
            prog = res.program()
            e = cache.install(key, mask, prog, now)
            if e >= 0 and ent[e, M.E_PACKETS] == 0:   # a new megaflow (an id may be reused: forget the old one)
                self.pushed[e] = 0
                self.rules[e] = 0
                r = res.ranks[:MAX_RULES]
                self.rules[e, :len(r)] = np.array(r, dtype=np.int32) + 1
                self.miss_table[e] = res.miss_table
                self.counters["installed"] += 1
            # the frames of this burst the translation covers (this one included) take it
            if len(miss) == 1:
                took = miss
                covered = np.ones(1, dtype=bool)
            else:
                flags = self._covered[:len(miss)]
                M.mf_covered(keys, burst, miss, len(miss), key, mask, flags)
                covered = flags.astype(bool)
                took = miss[covered]
            nbytes = int(meta[burst[took], M.META_LEN].sum())
            if e >= 0:
                out_entry[took] = e
                ent[e, M.E_PACKETS] += len(took)
                ent[e, M.E_BYTES] += nbytes
                ent[e, M.E_USED] = now
            else:
                self.counters["not_installed"] += len(took)
                self._credit(ts, res.ranks, res.miss_table, len(took), nbytes, now)
                uninstalled.append((took, prog))
            miss = miss[~covered]
        # scratch programs last: allocating may move the installed ones, whose offsets are read afterwards
        self._scratch = []
        if uninstalled:   # one block: a second allocation could compact the first away
            base = cache.scratch_program(np.concatenate([prog for _took, prog in uninstalled]))
            for took, prog in uninstalled:
                self._scratch.append((took, base, len(prog)))
                base += len(prog)
        self.translate_ns += time.perf_counter_ns() - t0

    def programs(self, out_entry: np.ndarray, n: int, prog_index: np.ndarray) -> None:
        """``prog_index[i]``: the program of frame ``i`` after ``handle_misses`` (its megaflow's, or a scratch one)."""
        M.mf_programs(self.cache.ent, out_entry, n, prog_index)
        for took, offset, length in self._scratch:
            prog_index[took, 0] = offset
            prog_index[took, 1] = length
        self._scratch = []

    def _credit(self, ts: TableSet, ranks: list[int], miss_table: int, packets: int, nbytes: int, now: int) -> None:
        """Credit rules and tables directly (frames that ran without a megaflow)."""
        r = np.array(ranks[:MAX_RULES], dtype=np.int64)
        if len(r):
            ts.counters[r, C_PACKETS] += packets
            ts.counters[r, C_BYTES] += nbytes
            ts.counters[r, C_USED] = np.maximum(ts.counters[r, C_USED], now)
            np.add.at(ts.table_counters[:, 0], ts.table_of[r], packets)
            np.add.at(ts.table_counters[:, 1], ts.table_of[r], packets)
        if miss_table >= 0:
            ts.table_counters[miss_table, 0] += packets

    def trim(self) -> int:
        """When the cache is 7/8 full, remove the least recently used megaflows down to 3/4 (their
        statistics must have been pushed); returns how many went."""
        cache = self.cache
        if len(cache) < cache.max_flows * 7 // 8:
            return 0
        ent = cache.ent
        live = np.flatnonzero(ent[:, M.E_SUB] >= 0)
        k = len(live) - cache.max_flows * 3 // 4
        if k <= 0:
            return 0
        old = live[np.lexsort((-live, ent[live, M.E_USED]))[:k]]    # oldest first; the newest id last among equals
        for e in old:
            cache.remove(int(e))
        self.counters["evicted_full"] += k
        return k

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
        """Credit statistics, then remove the megaflows idle for ``max_idle`` seconds and, when the cache is
        nearly full, the least recently used ones (``trim``); returns how many went."""
        self.push_stats(ts)
        gone = self.cache.expire(now, self.max_idle)
        self.counters["expired"] += len(gone)
        return len(gone) + self.trim()

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
            self._prune_cookies(new)
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
        self._prune_cookies(new)

    def _prune_cookies(self, ts: TableSet) -> None:
        """Drop the upcall contexts of flows ``ts`` no longer has (no megaflow left can name them)."""
        if len(self.cookies):
            self.cookies.prune(set(ts.uids.tolist()))

    def stats(self) -> dict[str, int]:
        """Cache and upcall counters (``upcall/show``, ``dpif-netdev/pmd-stats-show``)."""
        return {**self.cache.stats(), **self.counters, "translate_us": self.translate_ns // 1000}
