"""The flow tables of one bridge (control side) and their compiled, read-only form for the translator.

```
 flow-mods ──► FlowTables (Python objects: add / modify / delete / expire / stats)
                   │ compile(port map, miss policy)           (agent thread)
                   ▼
               TableSet: flows ranked per table, a TableIndex per table (conjunctive flows: its
                   │      ClauseIndex, ofproto.conjunction), counters                   ──► translator
                   │ activate (datapath thread, between bursts: counters carried over by flow uid)
```

Counters live in the active ``TableSet`` (``counters``: packets, bytes, last used, per rank;
``table_counters``: lookups and matches per table). The datapath credits them from its megaflows'
statistics (``dpif.upcall``), so ``dump-flows`` and idle timeouts see every frame a megaflow
forwarded for a flow. A ``TableSet`` also records which tables changed since the set compiled
before it, so the datapath re-examines only the megaflows whose translation visited one of them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import numpy as np

from dpif import key as K
from ofproto import fields as _fields
from ofproto.conjunction import ClauseIndex
from ofproto.groups import OFPG_ANY, referenced_groups
from ofproto.lookup import TableIndex
from ofproto.rules import (
    ALL_MATCH_FIELDS,
    DROP,
    N_TABLES,
    NO_PORT,
    OFPFF_CHECK_OVERLAP,
    OFPFF_RESET_COUNTS,
    OFPP_ANY,
    OFPRR_DELETE,
    OFPRR_HARD_TIMEOUT,
    OFPRR_IDLE_TIMEOUT,
    OFPTT_ALL,
    Clone,
    Ct,
    Flow,
    FlowError,
    FlowStats,
    Instructions,
    Learn,
    Match,
)

C_PACKETS, C_BYTES, C_USED = 0, 1, 2
_EMPTY_INDEX = TableIndex([])
_ALG_PROTO = {21: 6, 69: 17}     # ct(alg=ftp) needs TCP, alg=tftp UDP


def _match_field(name: str) -> str:
    f = _fields.by_name(name) or _fields.by_oxm_name(name)
    if f is not None and f.oxm_name in ALL_MATCH_FIELDS:
        return f.oxm_name
    return f.name if f is not None else name


def _has(match: Match, name: str, values: tuple[int, ...], mask: int | None) -> bool:
    got = match.get(_match_field(name))
    if got is None:
        return False
    m = got[1] if mask is None else mask
    return got[1] & m == m and got[0] & m in values


def _prereqs_met(match: Match, name: str) -> bool:
    """The flow's match gives field ``name``'s prerequisites (OVS's ``mf_check_src``)."""
    f = _fields.by_name(name) or _fields.by_oxm_name(name)
    return all(_has(match, c, values, cmask) for c, values, cmask in (f.prereqs if f is not None else ()))


def check_consistency(match: Match, ins: Instructions) -> None:
    """``FlowError("match_inconsistent")`` (OVS's OFPBAC_MATCH_INCONSISTENT) for a ``ct`` in a flow that does
    not match IP (or TCP / UDP for alg=ftp / tftp), or a ``ct`` zone / ``learn`` source field whose
    prerequisites the match does not give."""
    def walk(acts: tuple) -> None:
        for a in acts:
            if isinstance(a, Clone):
                walk(a.actions)
            elif isinstance(a, Ct):
                if not _has(match, "eth_type", (0x0800, 0x86DD), None) or (
                        a.alg in _ALG_PROTO and not _has(match, "nw_proto", (_ALG_PROTO[a.alg],), None)) or (
                        isinstance(a.zone, tuple) and not _prereqs_met(match, a.zone[0])):
                    raise FlowError("match_inconsistent", f"{a} needs a match on IP (and the fields it reads)")
            elif isinstance(a, Learn):
                learned: dict[str, tuple[int, int]] = {}     # what the learned flow matches, as far as known
                for sp in a.specs:
                    if sp.src is not None and not _prereqs_met(match, sp.src):
                        raise FlowError("match_inconsistent", f"learn source {sp.src} lacks its prerequisites")
                    if sp.dst is None:
                        continue
                    if not _prereqs_met(Match(**learned), sp.dst):
                        raise FlowError("match_inconsistent", f"learned field {sp.dst} lacks its prerequisites")
                    if sp.dst_type == "match" and sp.src is None:
                        name = _match_field(sp.dst)
                        v, m = learned.get(name, (0, 0))
                        bits = ((1 << sp.n_bits) - 1) << sp.dst_ofs
                        learned[name] = ((v & ~bits) | (sp.value << sp.dst_ofs), m | bits)
    walk(ins.apply)
    walk(ins.write)
_GENERATIONS = itertools.count(1)


def _hidden(flows: list[Flow]) -> dict[int, frozenset[int]]:
    """Per table, the ranks of its ordinary flows that have the match of a conjunctive flow of a higher
    priority (``ofproto.conjunction``: the ``conj_id`` lookups do not see them)."""
    top: dict[tuple[int, Match], int] = {}
    for f in flows:
        if f.instructions.conjunctions():
            k = (f.table_id, f.match)
            top[k] = max(top.get(k, -1), f.priority)
    out: dict[int, set[int]] = {}
    if top:
        for rank, f in enumerate(flows):
            if top.get((f.table_id, f.match), -1) > f.priority and not f.instructions.conjunctions():
                out.setdefault(f.table_id, set()).add(rank)
    return {t: frozenset(ranks) for t, ranks in out.items()}


class TableSet:
    """One compilation of the flow tables: immutable but for its counters.

    ``flows[rank]`` sorted by (table, priority desc, serial asc); ``index[t]`` the lookup of table
    ``t``; ``port_map`` OpenFlow port -> datapath port as compiled; ``miss_max_len`` > 0: a table miss
    goes to the controllers (OpenFlow 1.0 behaviour); ``changed``: tables changed since the set
    ``prev_gen`` (``None``: anything may have changed); ``groups``: the bridge's group table as compiled
    (``ofproto.groups``: group_id -> Group).
    """

    groups: dict = {}   # noqa: RUF012 - replaced per set by FlowTables.compile, never mutated
    meters: dict = {}   # noqa: RUF012 - the meter table (ofproto.meters: meter_id -> Meter), likewise

    def __init__(self, flows: list[Flow], n_tables: int, port_map: dict[int, int] | None, miss_max_len: int,
                 prev_gen: int, changed: frozenset[int] | None) -> None:
        self.flows = flows
        self.n_tables = n_tables
        self.port_map = dict(port_map) if port_map is not None else None
        self.miss_max_len = miss_max_len
        self.gen = next(_GENERATIONS)
        self.prev_gen = prev_gen
        self.changed = changed
        self.uids = np.array([f.uid for f in flows], dtype=np.int64)
        self.table_of = np.array([f.table_id for f in flows], dtype=np.int64)
        self.counters = np.zeros((len(flows), 3), dtype=np.int64)
        self.counters[:, C_USED] = [f.installed for f in flows]
        self.table_counters = np.zeros((n_tables, 2), dtype=np.int64)   # lookups, matches
        self._rank = {f.uid: i for i, f in enumerate(flows)}
        per_table: dict[int, list[tuple[int, tuple[tuple[int, int, int], ...]]]] = {}
        clauses: dict[int, list] = {}   # the conjunctive flows of each table (``ofproto.conjunction``)
        for rank, f in enumerate(flows):
            words = f.match.words()
            if self.port_map is not None:
                words = tuple((w, self.port_map.get(v, NO_PORT) if w == K.W_IN_PORT else v, m) for w, v, m in words)
            conjs = f.instructions.conjunctions()
            if conjs:
                clauses.setdefault(f.table_id, []).append(
                    (rank, words, tuple((c.id, c.clause, c.n_clauses) for c in conjs)))
            else:
                per_table.setdefault(f.table_id, []).append((rank, words))
        prio = [f.priority for f in flows] if clauses else []
        hidden = _hidden(flows) if clauses else {}
        self.index = [_EMPTY_INDEX] * n_tables   # most of the 254 tables are empty: one shared, read-only index
        for t in per_table.keys() | clauses.keys():
            cl = clauses.get(t)
            self.index[t] = TableIndex(per_table.get(t, []),
                                       ClauseIndex(cl, prio, hidden.get(t, frozenset())) if cl else None)

    def rank_of(self, flow: Flow) -> int:
        """Rank of ``flow`` (by uid) in this set, or -1."""
        return self._rank.get(flow.uid, -1)

    def flow_counters(self, flow: Flow) -> tuple[int, int, int]:
        """(packets, bytes, last used) of ``flow``; zeros (and -1) when it is not in this set."""
        r = self.rank_of(flow)
        if r < 0:
            return 0, 0, -1
        c = self.counters[r]
        return int(c[C_PACKETS]), int(c[C_BYTES]), int(c[C_USED])

    def table_stats(self, table_id: int) -> tuple[int, int]:
        """(lookups, matches) of a table."""
        return int(self.table_counters[table_id, 0]), int(self.table_counters[table_id, 1])

    def carry_from(self, old: TableSet) -> None:
        """Take the counters of the flows ``old`` also has (by uid), and the table counters."""
        _common, i_old, i_new = np.intersect1d(old.uids, self.uids, assume_unique=True, return_indices=True)
        if len(i_new):
            self.counters[i_new, C_PACKETS] = old.counters[i_old, C_PACKETS]
            self.counters[i_new, C_BYTES] = old.counters[i_old, C_BYTES]
            self.counters[i_new, C_USED] = np.maximum(old.counters[i_old, C_USED], self.counters[i_new, C_USED])
        n = min(old.n_tables, self.n_tables)
        self.table_counters[:n] = old.table_counters[:n]

    def rank_map_from(self, old: TableSet) -> np.ndarray:
        """``m[old rank] = new rank`` (-1: gone), for megaflows that outlive a recompile."""
        m = np.full(len(old.flows) + 1, -1, dtype=np.int64)   # the extra slot maps -1 to -1
        _common, i_old, i_new = np.intersect1d(old.uids, self.uids, assume_unique=True, return_indices=True)
        m[i_old] = i_new
        return m


class FlowTables:
    """The flow tables of one bridge, as Python objects; ``compile()`` makes a ``TableSet``.

    Not thread-safe: one control thread calls add/modify/delete/expire/stats/compile; the datapath
    thread calls only ``activate``.
    """

    def __init__(self, n_tables: int = N_TABLES) -> None:
        if not 1 <= n_tables <= 254:
            raise ValueError(f"n_tables must be 1..254, got {n_tables}")
        self.n_tables = n_tables
        self._tables: list[dict[tuple[int, Match], Flow]] = [{} for _ in range(n_tables)]
        self._timed: dict[int, Flow] = {}   # serial -> flow, the flows with an idle or hard timeout
        self._serial = itertools.count(1)
        self._uid = itertools.count(1)
        self.live: TableSet | None = None
        self._dirty: set[int] = set()
        self._last: tuple[int, dict[int, int] | None, int] | None = None   # gen, port map, miss_max_len
        self._groups: dict = {}     # the group table the next compile hands the translator
        self._meters: dict = {}     # ... and the meter table
        self._learned: dict[int, set[tuple[int, int, Match]]] = {}   # owner uid -> flows it learned (delete_learned)

    # -------------------------------------------------------------- queries
    def has_timeouts(self) -> bool:
        """Whether some flow has an idle or hard timeout."""
        return bool(self._timed)

    def __len__(self) -> int:
        return sum(len(t) for t in self._tables)

    def flows(self, table_id: int = OFPTT_ALL) -> Iterator[Flow]:
        """The flows of one table (or all), in no particular order."""
        for t in self._table_ids(table_id):
            yield from self._tables[t].values()

    def _table_ids(self, table_id: int) -> range:
        if table_id == OFPTT_ALL:
            return range(self.n_tables)
        if not 0 <= table_id < self.n_tables:
            raise FlowError("bad_table_id", f"table {table_id} (have {self.n_tables})")
        return range(table_id, table_id + 1)

    def _select(self, table_id: int, match: Match, priority: int, strict: bool, out_port: int,
                cookie: int, cookie_mask: int, out_group: int = OFPG_ANY) -> list[Flow]:
        chosen = []
        for t in self._table_ids(table_id):
            if strict:
                f = self._tables[t].get((priority, match))
                cands: Iterable[Flow] = (f,) if f is not None else ()
            else:
                cands = [f for f in self._tables[t].values() if match.covers(f.match)]
            for f in cands:
                if (f.cookie ^ cookie) & cookie_mask:
                    continue
                if out_port != OFPP_ANY and out_port not in f.instructions.output_ports():
                    continue
                if out_group != OFPG_ANY and out_group not in referenced_groups((*f.instructions.apply,
                                                                                 *f.instructions.write)):
                    continue
                chosen.append(f)
        return chosen

    def _counters(self, f: Flow) -> tuple[int, int, int]:
        return self.live.flow_counters(f) if self.live is not None else (0, 0, -1)

    def _stats(self, f: Flow, now: int) -> FlowStats:
        packets, nbytes, used = self._counters(f)
        return FlowStats(f, packets - f.packet_base, nbytes - f.byte_base, now - f.installed,
                         now - max(used, f.installed))

    def stats(self, table_id: int = OFPTT_ALL, match: Match | None = None, out_port: int = OFPP_ANY,
              cookie: int = 0, cookie_mask: int = 0, now: int = 0, out_group: int = OFPG_ANY) -> list[FlowStats]:
        """Multipart flow stats: the flows non-strictly selected by the arguments (``out_group``: those that
        send to that group), with counters."""
        sel = self._select(table_id, match or Match(), 0, False, out_port, cookie, cookie_mask, out_group)
        return [self._stats(f, now) for f in sel]

    def aggregate(self, table_id: int = OFPTT_ALL, match: Match | None = None, out_port: int = OFPP_ANY,
                  cookie: int = 0, cookie_mask: int = 0) -> tuple[int, int, int]:
        """Multipart aggregate stats: (packets, bytes, flows)."""
        st = self.stats(table_id, match, out_port, cookie, cookie_mask)
        return sum(s.packets for s in st), sum(s.bytes for s in st), len(st)

    def table_stats(self) -> list[tuple[int, int, int, int]]:
        """(table_id, active flows, lookups, matches) per table."""
        out = []
        for t in range(self.n_tables):
            lookups, matched = self.live.table_stats(t) if self.live is not None and t < self.live.n_tables else (0, 0)
            out.append((t, len(self._tables[t]), lookups, matched))
        return out

    # -------------------------------------------------------------- flow-mods
    def _check(self, flow: Flow) -> None:
        if not 0 <= flow.table_id < self.n_tables:
            raise FlowError("bad_table_id", f"table {flow.table_id} (have {self.n_tables})")
        if not 0 <= flow.priority <= 0xFFFF:
            raise FlowError("bad_priority", f"priority {flow.priority}")
        if not (0 <= flow.idle_timeout <= 0xFFFF and 0 <= flow.hard_timeout <= 0xFFFF):
            raise FlowError("bad_timeout", "timeouts are 0..65535 seconds")
        if not 0 <= flow.cookie < 1 << 64:
            raise FlowError("bad_cookie", f"cookie {flow.cookie:#x}")
        self._check_instructions(flow.table_id, flow.instructions)
        check_consistency(flow.match, flow.instructions)

    def _check_instructions(self, table_id: int, ins: Instructions) -> None:
        if ins.goto is not None and not table_id < ins.goto < self.n_tables:
            raise FlowError("bad_goto", f"goto_table {ins.goto} from table {table_id}")
        ins.check()

    def add(self, flow: Flow, now: int = 0) -> Flow:
        """OpenFlow ADD: install a copy of ``flow`` (returned); a flow with the same match and
        priority in that table is replaced (its counters carried over unless OFPFF_RESET_COUNTS).
        OFPFF_CHECK_OVERLAP refuses a flow that overlaps another of the same priority."""
        self._check(flow)
        table = self._tables[flow.table_id]
        key = (flow.priority, flow.match)
        old = table.get(key)
        if flow.flags & OFPFF_CHECK_OVERLAP:
            for f in table.values():
                if f is not old and f.priority == flow.priority and f.match.overlaps(flow.match):
                    raise FlowError("overlap", f"overlaps {f.match} at priority {f.priority}")
        uid = old.uid if old is not None and not flow.flags & OFPFF_RESET_COUNTS else next(self._uid)
        new = Flow(flow.table_id, flow.priority, flow.match, flow.instructions, flow.cookie, flow.idle_timeout,
                   flow.hard_timeout, flow.flags, now, next(self._serial), uid, importance=flow.importance)
        if old is not None and uid == old.uid:
            new.packet_base, new.byte_base = old.packet_base, old.byte_base
        if old is not None:
            self._timed.pop(old.serial, None)
        if new.idle_timeout or new.hard_timeout:
            self._timed[new.serial] = new
        table[key] = new
        self._dirty.add(flow.table_id)
        return new

    def learn(self, flow: Flow, owner: int = 0, delete_learned: bool = False, now: int = 0) -> tuple[Flow, bool]:
        """A flow ``learn`` made (``xlate.ctlearn``): added, or replacing the one with the same match and
        priority (counters kept); the same flow learned again only restarts its timers. ``delete_learned``: it
        goes when the flow with uid ``owner`` goes. Returns the flow and whether the tables changed."""
        old = self._tables[flow.table_id].get((flow.priority, flow.match)) if 0 <= flow.table_id < self.n_tables \
            else None
        if owner and delete_learned:
            self._learned.setdefault(owner, set()).add((flow.table_id, flow.priority, flow.match))
        if old is not None and (old.instructions, old.cookie, old.idle_timeout, old.hard_timeout, old.flags) == (
                flow.instructions, flow.cookie, flow.idle_timeout, flow.hard_timeout, flow.flags):
            old.installed = now
            return old, False
        return self.add(flow, now), True

    def fin_timeout(self, uid: int, idle_timeout: int, hard_timeout: int) -> bool:
        """``fin_timeout`` of the flow with ``uid`` saw a FIN or RST: each of its timeouts that is 0 or longer
        becomes the given one (0: left alone). False when that flow is gone."""
        for f in self.flows():
            if f.uid == uid:
                if idle_timeout and (not f.idle_timeout or f.idle_timeout > idle_timeout):
                    f.idle_timeout = idle_timeout
                if hard_timeout and (not f.hard_timeout or f.hard_timeout > hard_timeout):
                    f.hard_timeout = hard_timeout
                if f.idle_timeout or f.hard_timeout:
                    self._timed[f.serial] = f
                return True
        return False

    def _drop_learned(self, gone: list[Flow], now: int) -> list[FlowStats]:
        """Remove the flows that flows ``gone`` learned with ``delete_learned``; their final stats."""
        out = []
        for f in gone:
            for table_id, priority, match in self._learned.pop(f.uid, ()):
                lf = self._tables[table_id].get((priority, match))
                if lf is None:
                    continue
                out.append(self._stats(lf, now))
                del self._tables[table_id][(priority, match)]
                self._timed.pop(lf.serial, None)
                self._dirty.add(table_id)
        return out

    def modify(self, table_id: int, match: Match, priority: int = 0, strict: bool = False, cookie: int = 0,
               cookie_mask: int = 0, instructions: Instructions = DROP, reset_counts: bool = False) -> list[Flow]:
        """OpenFlow MODIFY(_STRICT): replace the instructions of the selected flows (cookie, timeouts
        and counters are kept; ``reset_counts`` clears the counters). Returns the modified flows;
        nothing is added when nothing matches."""
        chosen = self._select(table_id, match, priority, strict, OFPP_ANY, cookie, cookie_mask)
        for f in chosen:
            self._check_instructions(f.table_id, instructions)
            check_consistency(f.match, instructions)
        for f in chosen:
            f.instructions = instructions
            self._dirty.add(f.table_id)
            if reset_counts:
                f.packet_base, f.byte_base, _used = self._counters(f)
        return chosen

    def delete(self, table_id: int = OFPTT_ALL, match: Match | None = None, priority: int = 0,
               strict: bool = False, out_port: int = OFPP_ANY, cookie: int = 0, cookie_mask: int = 0,
               now: int = 0, out_group: int = OFPG_ANY) -> list[FlowStats]:
        """OpenFlow DELETE(_STRICT): remove the selected flows (and the flows they learned with
        ``delete_learned``); returns them with their final counters.

        Non-strict: every flow whose match ``match`` covers (at least as specific), any priority.
        Strict: the flow with exactly ``match`` and ``priority``."""
        chosen = self._select(table_id, match or Match(), priority, strict, out_port, cookie, cookie_mask, out_group)
        out = []
        for f in chosen:
            out.append(self._stats(f, now))
            del self._tables[f.table_id][(f.priority, f.match)]
            self._timed.pop(f.serial, None)
            self._dirty.add(f.table_id)
        if self._learned:
            out += self._drop_learned(chosen, now)
        return out

    def expire(self, now: int) -> list[tuple[FlowStats, int]]:
        """Remove the flows whose idle or hard timeout has passed at ``now``; returns (stats, OFPRR_*)."""
        gone = []
        for f in list(self._timed.values()):
            st = self._stats(f, now)
            if f.hard_timeout and st.duration >= f.hard_timeout:
                reason = OFPRR_HARD_TIMEOUT
            elif f.idle_timeout and st.idle >= f.idle_timeout:
                reason = OFPRR_IDLE_TIMEOUT
            else:
                continue
            del self._tables[f.table_id][(f.priority, f.match)]
            del self._timed[f.serial]
            self._dirty.add(f.table_id)
            gone.append((st, reason))
        if self._learned and gone:
            gone += [(st, OFPRR_DELETE) for st in self._drop_learned([st.flow for st, _r in gone], now)]
        return gone

    def set_groups(self, groups: dict) -> None:
        """The group table (group_id -> ``ofproto.groups.Group``) the next compiled set carries; every table
        counts as changed, so megaflows translated with the old groups are revalidated."""
        self._groups = groups
        self._dirty.update(range(self.n_tables))

    def set_meters(self, meters: dict) -> None:
        """The meter table (meter_id -> ``ofproto.meters.Meter``) the next compiled set carries (every table
        counts as changed, as for ``set_groups``)."""
        self._meters = meters
        self._dirty.update(range(self.n_tables))

    # -------------------------------------------------------------- compilation
    def compile(self, port_map: dict[int, int] | None = None, miss_max_len: int = 0,
                snapshot: bool = False) -> TableSet:
        """A new ``TableSet`` of the current flows (the datapath keeps using the old one until it
        activates this one). ``port_map``: OpenFlow port -> datapath port for ``in_port`` matches
        (absent ports never match); ``miss_max_len`` > 0: table misses go to the controllers.
        ``snapshot``: a set for looking at (``ofproto/trace``), never activated: the record of what
        changed since the last compile is left alone."""
        flows = sorted(self.flows(), key=lambda f: (f.table_id, -f.priority, f.serial))
        if snapshot:
            ts = TableSet(flows, self.n_tables, port_map, miss_max_len, 0, None)
            ts.groups, ts.meters = self._groups, self._meters
            return ts
        last = self._last
        if last is None or last[1] != port_map or last[2] != miss_max_len:
            changed: frozenset[int] | None = None
        else:
            changed = frozenset(self._dirty)
        ts = TableSet(flows, self.n_tables, port_map, miss_max_len, last[0] if last else 0, changed)
        ts.groups, ts.meters = self._groups, self._meters
        self._last = (ts.gen, dict(port_map) if port_map is not None else None, miss_max_len)
        self._dirty = set()
        return ts

    def activate(self, compiled: TableSet) -> TableSet:
        """Make ``compiled`` the live set, carrying counters over from the previous one by flow uid.
        Call on the datapath thread between bursts."""
        old = self.live
        if old is not None and old is not compiled:
            compiled.carry_from(old)
        self.live = compiled
        return compiled
