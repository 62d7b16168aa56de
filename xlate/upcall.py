"""Upcalls and revalidation: between the datapath's megaflow cache and the translator.

```
 burst ─► mf_lookup ─miss─► handle_misses: translate the frame's key ─► install (key & mask, mask, actions)
                                    │  frames of the same burst the new megaflow covers take it too
                                    ▼  (in arrival order: nothing is re-ordered or held back)
                           every frame has a megaflow ─► execute_burst
 each second / before a flow set change / on demand:
      push_stats: megaflow packets and bytes since the last push ─► the flows they hit (rule counters)
                  and the tables they looked in (table lookups / matches), bridge by bridge; then idle
                  megaflows expire
 a bridge's flow set change (revalidate): megaflows whose walk visited a changed table of that bridge are
      removed, the others keep their rules (renumbered); anything else about a bridge (its mode, a skipped
      set) removes the megaflows that entered it (remove_bridge); a port change removes them all (flush)
```

One cache serves every bridge of the datapath (keys carry the datapath ``in_port``, which names the
bridge). A megaflow remembers the rules it hit and the lookups that missed as (bridge, rank or table)
pairs, and the bridges it entered, so a change in one bridge touches only the megaflows whose walk
went through it.

This runs on the datapath thread, as OVS's userspace datapath runs upcalls on its PMD threads: a
miss is translated within the burst it arrived in, so no frame waits and none overtakes another.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from dpif import megaflow as M
from ofproto.groups import Group
from ofproto.tables import C_BYTES, C_PACKETS, C_USED, TableSet
from xlate.ctlearn import Learned, TableChange
from xlate.translate import Bridges, UpcallCookies, XlateResult, translate

MAX_RULES = 64           # rules and missed lookups a megaflow credits (a longer walk: its first 64)
DEFAULT_MAX_IDLE = 10    # seconds a megaflow lives without a hit (OVS's other_config:max-idle, 10 s)

#: the live tables of each bridge (a ``TableSet`` alone: one bridge, number 0; None: none)
Tables = Sequence[TableSet | None] | TableSet | None


def _tables(tables: Tables) -> Sequence[TableSet | None]:
    if tables is None:
        return ()
    return (tables,) if isinstance(tables, TableSet) else tables


def _bit(bridge: int) -> int:
    return 1 << (bridge % 63)


class Upcalls:
    """The megaflow cache of one datapath, with what each megaflow was translated from."""

    def __init__(self, max_flows: int = M.DEFAULT_MAX_FLOWS, emc_size: int = M.DEFAULT_EMC_SIZE,
                 max_idle: int = DEFAULT_MAX_IDLE, cookies: UpcallCookies | None = None) -> None:
        self.cache = M.MegaflowCache(max_flows, emc_size)
        self.cookies = cookies if cookies is not None else UpcallCookies()
        self.max_idle = max_idle
        # what each megaflow's walk did, in order: rank + 1 of a rule it hit (> 0), -(table + 1) of a lookup that
        # missed (< 0), 0: nothing; and the bridge of each. Zeros, so untouched rows cost no memory.
        self.rules = np.zeros((max_flows, MAX_RULES), dtype=np.int32)
        self.rule_bridge = np.zeros((max_flows, MAX_RULES), dtype=np.int16)
        self.visited = np.zeros(max_flows, dtype=np.int64)      # bit (bridge % 63) of each bridge it entered
        self.overflow = np.zeros(max_flows, dtype=bool)         # its walk did more than MAX_RULES lookups
        self.pushed = np.zeros((max_flows, 2), dtype=np.int64)     # packets, bytes already credited
        self.group_hits: dict[int, list[tuple[Group, int]]] = {}    # megaflow -> the groups / buckets it ran
        self.counters = {"upcalls": 0, "translations": 0, "installed": 0, "evicted_full": 0,
                         "revalidated_removed": 0, "flushes": 0, "expired": 0, "not_installed": 0,
                         "translations_cut": 0, "learn_not_cached": 0, "tunnel_not_cached": 0,
                         "pin_context_flushes": 0}
        #: flows ``learn`` made in translations since the owner last took them (``take_learned``)
        self.learned: list[TableChange] = []
        self.translate_ns = 0
        self._scratch: list[tuple[np.ndarray, int, int]] = []
        self._covered = np.zeros(4096, dtype=np.uint8)
        self._took = np.zeros(4096, dtype=np.int64)   # burst indexes a translation covers (``mf_take``)

    # -------------------------------------------------------------- misses (datapath thread)
    def handle_misses(self, bridges: Bridges | TableSet, port_flags: np.ndarray, keys: np.ndarray, burst: np.ndarray,
                      n: int, meta: np.ndarray, out_entry: np.ndarray, now: int) -> None:
        """Give every frame of ``burst[:n]`` with ``out_entry[i] < 0`` a megaflow (translating with the tables
        of ``bridges`` and installing), then fill ``self.prog_index``-style rows with ``programs``. A
        translation the cache has no room for (``megaflow_table_full`` / ``megaflow_subtables_full``) still
        runs on its frames, from a scratch copy of its program (OVS executes an upcall whose install fails),
        and credits its rules at once; the cache is trimmed on the next ``expire``, never in the middle of a
        burst."""
        cache = self.cache
        ent = cache.ent
        t0 = time.perf_counter_ns()
        miss = np.flatnonzero(out_entry[:n] < 0)
        self.counters["upcalls"] += len(miss)
        uninstalled: list[tuple[np.ndarray, np.ndarray]] = []
        if not isinstance(bridges, Bridges):
            bridges = Bridges.single(bridges, len(port_flags))
        tables = bridges.tables
        while len(miss):
            i = int(miss[0])
            slot = int(burst[i])
            key = keys[slot]
            res = translate(bridges, key.tolist(), port_flags, self.cookies)
            self.counters["translations"] += 1
            if res.cut:    # a resubmit / patch crossing past OVS's limits was not done (a loop, most likely)
                self.counters["translations_cut"] += 1
            mask = res.mask_row()
            self.learned += res.learned
            prog = res.program()
            if any(isinstance(x, Learned) for x in res.learned):   # not cached: every later frame learns again
                self.counters["learn_not_cached"] += 1
                e = -1
            elif res.no_cache:    # e.g. a tunnel's next hop unresolved: the next frame translates again
                self.counters["tunnel_not_cached"] += 1
                e = -1
            else:
                e = cache.install(key, mask, prog, now)
            if e >= 0 and ent[e, M.E_PACKETS] == 0:   # a new megaflow (an id may be reused: forget the old one)
                self.pushed[e] = 0
                self._remember(e, res)
                self.counters["installed"] += 1
            # the frames of this burst the translation covers (this one included) take it
            nt, nbytes, left = M.mf_take(keys, burst, miss, len(miss), key, mask, meta, self._took, out_entry, ent,
                                         e, now)
            if e < 0:
                self.counters["not_installed"] += nt
                self._credit(tables, res, nt, nbytes, now)
                uninstalled.append((self._took[:nt].copy(), prog))
            miss = miss[:left]
        # scratch programs last: allocating may move the installed ones, whose offsets are read afterwards
        self._scratch = []
        if uninstalled:   # one block: a second allocation could compact the first away
            base = cache.scratch_program(np.concatenate([prog for _took, prog in uninstalled]))
            for took, prog in uninstalled:
                self._scratch.append((took, base, len(prog)))
                base += len(prog)
        self.translate_ns += time.perf_counter_ns() - t0

    @staticmethod
    def _walk(res: XlateResult) -> list[tuple[int, int]]:
        """(bridge, rank + 1 or -(table + 1)) of every lookup of a translation."""
        walk = [(b, r + 1) for b, r in zip(res.rank_bridges, res.ranks, strict=True)]
        return walk + [(b, -(t + 1)) for b, t in res.misses]

    def _remember(self, e: int, res: XlateResult) -> None:
        """Record what megaflow ``e``'s translation hit, missed and entered."""
        rules, rule_bridge = self.rules[e], self.rule_bridge[e]
        rules[:] = 0
        k = min(len(res.ranks), MAX_RULES)
        if k:
            rules[:k] = res.ranks[:k]
            rules[:k] += 1
        if len(res.bridges) == 1:      # the usual walk: every rule in one bridge
            (b,) = res.bridges
            rule_bridge[:] = b
            self.visited[e] = _bit(b)
        else:
            rule_bridge[:] = 0
            rule_bridge[:k] = res.rank_bridges[:k]
            self.visited[e] = sum({_bit(b) for b in res.bridges})
        for b, t in res.misses[:MAX_RULES - k]:
            rules[k] = -(t + 1)
            rule_bridge[k] = b
            k += 1
        self.overflow[e] = len(res.ranks) + len(res.misses) > MAX_RULES
        if res.groups:
            self.group_hits[e] = list(res.groups)
        else:
            self.group_hits.pop(e, None)

    def programs(self, out_entry: np.ndarray, n: int, prog_index: np.ndarray) -> None:
        """``prog_index[i]``: the program of frame ``i`` after ``handle_misses`` (its megaflow's, or a scratch one)."""
        M.mf_programs(self.cache.ent, out_entry, n, prog_index)
        for took, offset, length in self._scratch:
            prog_index[took, 0] = offset
            prog_index[took, 1] = length
        self._scratch = []

    def _credit(self, tables: Sequence[TableSet | None], res: XlateResult, packets: int, nbytes: int,
                now: int) -> None:
        """Credit rules, tables and groups directly (frames that ran without a megaflow)."""
        for g, b in res.groups:
            g.credit(b, packets, nbytes)
        for b, v in self._walk(res)[:MAX_RULES]:
            ts = tables[b] if 0 <= b < len(tables) else None
            if ts is None:
                continue
            if v > 0:
                r = v - 1
                ts.counters[r, C_PACKETS] += packets
                ts.counters[r, C_BYTES] += nbytes
                ts.counters[r, C_USED] = max(int(ts.counters[r, C_USED]), now)
                t = int(ts.table_of[r])
                ts.table_counters[t, 0] += packets
                ts.table_counters[t, 1] += packets
            else:
                ts.table_counters[-v - 1, 0] += packets

    def trim(self) -> int:
        """When the cache is 7/8 full, remove the least recently used megaflows down to 3/4 (their
        statistics must have been pushed); returns how many went."""
        cache = self.cache
        if len(cache) < cache.max_flows * 7 // 8:
            return 0
        ent = cache.ent
        live = self.cache.live()
        k = len(live) - cache.max_flows * 3 // 4
        if k <= 0:
            return 0
        old = live[np.lexsort((-live, ent[live, M.E_USED]))[:k]]    # oldest first; the newest id last among equals
        for e in old:
            cache.remove(int(e))
        self.counters["evicted_full"] += k
        return k

    # -------------------------------------------------------------- statistics and revalidation
    def push_stats(self, tables: Tables) -> None:
        """Credit the flows and tables of each bridge (``tables[b]``: its live ``TableSet``) with what their
        megaflows forwarded since the last push."""
        tables = _tables(tables)
        ent = self.cache.ent
        live = self.cache.live()
        if not len(live):
            return
        dp = ent[live, M.E_PACKETS] - self.pushed[live, 0]
        moved = dp > 0
        if moved.any() and any(ts is not None for ts in tables):
            e = live[moved]
            dp = dp[moved]
            db = ent[e, M.E_BYTES] - self.pushed[e, 1]
            used = ent[e, M.E_USED]
            rules = self.rules[e]
            rb = self.rule_bridge[e]
            for b in np.unique(rb[rules != 0]).tolist():
                ts = tables[b] if b < len(tables) else None
                if ts is None:
                    continue
                hit = (rb == b) & (rules > 0)
                r = rules[hit] - 1
                rows = np.nonzero(hit)[0]
                np.add.at(ts.counters[:, C_PACKETS], r, dp[rows])
                np.add.at(ts.counters[:, C_BYTES], r, db[rows])
                np.maximum.at(ts.counters[:, C_USED], r, used[rows])
                t = ts.table_of[r]
                np.add.at(ts.table_counters[:, 0], t, dp[rows])
                np.add.at(ts.table_counters[:, 1], t, dp[rows])
                missed = (rb == b) & (rules < 0)
                np.add.at(ts.table_counters[:, 0], -rules[missed] - 1, dp[np.nonzero(missed)[0]])
        if self.group_hits:
            self._credit_groups(live)
        self.pushed[live, 0] = ent[live, M.E_PACKETS]
        self.pushed[live, 1] = ent[live, M.E_BYTES]

    def _credit_groups(self, live: np.ndarray) -> None:
        """Credit the groups and buckets the live megaflows ran with what they forwarded since the last push."""
        ent = self.cache.ent
        with_groups = live[np.isin(live, np.fromiter(self.group_hits, dtype=np.int64))]
        for e in with_groups.tolist():
            dp = int(ent[e, M.E_PACKETS] - self.pushed[e, 0])
            if dp > 0:
                db = int(ent[e, M.E_BYTES] - self.pushed[e, 1])
                for g, b in self.group_hits[e]:
                    g.credit(b, dp, db)

    def expire(self, tables: Tables, now: int) -> int:
        """Credit statistics, then remove the megaflows idle for ``max_idle`` seconds and, when the cache is
        nearly full, the least recently used ones (``trim``); returns how many went."""
        self.push_stats(tables)
        if self.cookies.pins_over:    # controller(...) contexts (one per register state) are bounded: start over
            self.flush(tables)
            self.cookies.forget_pins()
            self.counters["pin_context_flushes"] += 1
        gone = self.cache.expire(now, self.max_idle)
        self.counters["expired"] += len(gone)
        return len(gone) + self.trim()

    def flush(self, tables: Tables) -> None:
        """Credit statistics to ``tables`` and remove every megaflow."""
        self.push_stats(tables)
        if len(self.cache):
            self.counters["flushes"] += 1
        self.cache.clear()
        self.pushed[:] = 0
        self.group_hits.clear()

    def remove_bridge(self, tables: Tables, bridge: int) -> int:
        """Credit statistics to ``tables``, then remove the megaflows whose walk entered ``bridge``; returns how
        many went."""
        self.push_stats(tables)
        live = self.cache.live()
        gone = live[(self.visited[live] & _bit(bridge)) != 0]
        for e in gone:
            self.cache.remove(int(e))
        self.counters["revalidated_removed"] += len(gone)
        return len(gone)

    def revalidate(self, tables: Tables, new: TableSet, bridge: int = 0) -> None:
        """``new`` replaces ``tables[bridge]``: credit the old tables, remove the megaflows ``new`` may translate
        differently (their walk looked in a table of ``bridge`` that changed), renumber the rules of ``bridge``
        in the others, forget the upcall contexts of the flows that went."""
        self._revalidate(tables, new, bridge)
        self._prune_cookies(new, bridge)

    def _revalidate(self, tables: Tables, new: TableSet, bridge: int) -> None:
        tables = _tables(tables)
        old = tables[bridge] if bridge < len(tables) else None
        if old is None or new.changed is None or new.prev_gen != old.gen:
            self.remove_bridge(tables, bridge)
            return
        self.push_stats(tables)
        live = self.cache.live()
        if not len(live):
            return
        rules = self.rules[live]
        mine = self.rule_bridge[live] == bridge
        hits = mine & (rules > 0)
        table_of = np.append(old.table_of, -1)     # rank -> table; the last: no rule
        tables_of = np.where(hits, table_of[np.where(hits, rules - 1, len(table_of) - 1)],
                             np.where(mine & (rules < 0), -rules - 1, -1))
        changed = np.array(sorted(new.changed), dtype=np.int64)
        hit = np.isin(tables_of, changed).any(axis=1)
        hit |= self.overflow[live] & ((self.visited[live] & _bit(bridge)) != 0)
        for e in live[hit]:
            self.cache.remove(int(e))
        self.counters["revalidated_removed"] += int(hit.sum())
        keep = live[~hit]
        if not len(keep):
            return
        m = np.insert(new.rank_map_from(old)[:-1] + 1, 0, 0)    # rank + 1 -> new rank + 1 (0: none, or gone)
        kept = self.rules[keep]
        mine = (self.rule_bridge[keep] == bridge) & (kept > 0)
        self.rules[keep] = np.where(mine, m[np.where(mine, kept, 0)], kept)

    def take_learned(self) -> list[TableChange]:
        """What walks asked of the tables since the last call: flows ``learn`` made, ``fin_timeout`` hits."""
        got, self.learned = self.learned, []
        return got

    def _prune_cookies(self, ts: TableSet, bridge: int) -> None:
        """Drop the upcall contexts of ``bridge``'s flows that ``ts`` no longer has (no megaflow left can
        name them: the megaflows whose walk met them visited a changed table and are gone)."""
        if len(self.cookies):
            self.cookies.prune(bridge, set(ts.uids.tolist()))

    def stats(self) -> dict[str, int]:
        """Cache and upcall counters (``upcall/show``, ``dpif-netdev/pmd-stats-show``)."""
        return {**self.cache.stats(), **self.counters, "translate_us": self.translate_ns // 1000}
