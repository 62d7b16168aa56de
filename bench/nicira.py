"""The Nicira case of ``python -m bench pipeline``: 30 tables chained by ``resubmit(,N)``, as OVN programs a
chassis, through the megaflow datapath: megaflow-hit rate and translations per second.

Method: OpenFlow ports 1-4 (datapath ports 0-3). Table 0 gives each in_port a logical port number and a
datapath number in registers (``set_field:p->reg14``, ``set_field:1->metadata``) and resubmits to table 1.
Tables 1-26 take turns: a ``reg14``/``metadata`` match that loads a register (``load:...->reg<k>``); an
``eth_type`` match that copies the source MAC into ``xxreg0`` (``move``); an IPv4 destination prefix that
saves and restores ``reg0`` around a nested resubmit to a helper table (``push`` / ``resubmit`` / ``pop``, OVN's
pattern); a ``tcp_dst`` match; each flow resubmits to the next table, with a priority-0 flow that does
too. Table 27 is a conjunctive match (``conjunction(1, 1/2)`` on the source /16s, ``(1, 2/2)`` on tcp_dst
80 / 443, ``conj_id=1`` loads ``reg9``), table 28 the router (both MACs), table 29 outputs through a
select group of two buckets (output:3 / output:4, dp_hash-like selection by the 5-tuple) when the
tables allow. The frames and the measurement are the goto pipeline's (``bench.pipeline``): 1,024 hot
64-byte IPv4/TCP frames in bursts of 256 (hit path), 1,024 frames that are each their own megaflow
(translations per second). The interpreter has no resubmit: no comparison with it here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.flowtable import N_FRAMES, N_PORTS, PORT_MAP, MegaflowPath, bursts_of, make_pool, measure, upcall_rate
from dpif import actions as A
from ofproto import actions as OA
from ofproto.rules import Flow, Instructions, Match
from ofproto.tables import FlowTables, TableSet
from xlate.translate import translate

N_TABLES = 30
HELPER = 40                     # the table the push/resubmit/pop flows call
ROUTER_A = 0x0200000000A1
ROUTER_B = 0x0200000000B2
IP = {"eth_type": 0x0800}
TCP = {"eth_type": 0x0800, "ip_proto": 6}


def _flow(table: int, priority: int, match: dict[str, Any], *actions: Any, cookie: int = 0) -> Flow:
    return Flow(table, priority, Match(**match), Instructions(apply=tuple(actions)), cookie=cookie)


def _next(t: int) -> OA.Resubmit:
    return OA.Resubmit(None, t + 1)


def conjunction_available() -> bool:
    """Whether the action model has OVS's conjunctive matches (``ofproto.actions.Conjunction``)."""
    return hasattr(OA, "Conjunction")


def groups_available() -> bool:
    """Whether the action model has groups (``ofproto.actions.Group``)."""
    return hasattr(OA, "Group")


def make_tables(hot_nets: tuple[int, ...]) -> tuple[FlowTables, list[str]]:
    """The 30 tables (see the module docstring), and what the case holds."""
    tables = FlowTables(64)
    flows: list[Flow] = []
    holds = ["registers", "resubmit", "move", "push/pop"]
    for p in range(1, N_PORTS + 1):
        flows.append(_flow(0, 100, {"in_port": p}, OA.SetField("reg14", p), OA.SetField("metadata", 1), _next(0)))
    flows.append(_flow(0, 0, {}, _next(0)))
    kinds = ("reg", "eth", "ip", "tcp")
    for t in range(1, 27):
        kind = kinds[t % len(kinds)]
        if kind == "reg":
            flows += [_flow(t, 100, {"reg14": p, "metadata": 1}, OA.Load.bits(f"reg{t % 8 + 1}", p + t, 0, 16),
                            _next(t)) for p in range(1, N_PORTS + 1)]
        elif kind == "eth":
            flows.append(_flow(t, 100, IP, OA.Move("eth_src", "xxreg0", 48, 0, 64), _next(t)))
        elif kind == "ip":
            net = hot_nets[(t // len(kinds)) % len(hot_nets)]
            flows.append(_flow(t, 50, {**IP, "ipv4_dst": (net, 0xFFFFFF00)}, OA.StackPush("reg0"),
                               OA.Resubmit(None, HELPER), OA.StackPop("reg0"), _next(t)))
            flows.append(_flow(t, 40, {**IP, "ipv4_dst": (0x0A000000, 0xFF000000)}, _next(t)))
        else:
            flows += [_flow(t, 100, {**TCP, "tcp_dst": port}, OA.SetField("reg10", port), _next(t))
                      for port in (22, 80, 443, 8000 + t)]
        flows.append(_flow(t, 0, {}, _next(t)))
    flows.append(_flow(HELPER, 0, {}, OA.SetField("reg0", 7)))
    if conjunction_available():
        holds.append("conjunction")
        conj = OA.Conjunction   # type: ignore[attr-defined]
        flows += [_flow(27, 200, {**IP, "ipv4_src": (0xC0A80000 | k << 8, 0xFFFFFF00)}, conj(1, 1, 2))
                  for k in range(4)]
        flows += [_flow(27, 200, {**TCP, "tcp_dst": port}, conj(1, 2, 2)) for port in (80, 443)]
        flows.append(_flow(27, 200, {"conj_id": 1}, OA.SetField("reg9", 1), _next(27)))
    flows.append(_flow(27, 0, {}, _next(27)))
    flows += [_flow(28, 100, {"eth_dst": ROUTER_A}, OA.SetField("eth_dst", ROUTER_B),
                    OA.SetField("eth_src", ROUTER_A), _next(28)),
              _flow(28, 100, {"eth_dst": ROUTER_B}, OA.SetField("eth_dst", ROUTER_A),
                    OA.SetField("eth_src", ROUTER_B), _next(28)),
              _flow(28, 0, {}, _next(28))]
    if groups_available():
        holds.append("select group")
        flows.append(_flow(29, 10, IP, OA.Group(1)))   # type: ignore[attr-defined]
    else:
        flows += [_flow(29, 30, {**IP, "ipv4_dst": (net, 0xFFFFFF00)}, OA.Output(3 + i % 2))
                  for i, net in enumerate(hot_nets)]
        flows.append(_flow(29, 10, IP, OA.Output(4)))
    for i, f in enumerate(flows):
        tables.add(Flow(f.table_id, f.priority, f.match, f.instructions, cookie=i))
    return tables, holds


def compile_tables(tables: FlowTables) -> TableSet:
    """The tables compiled and activated, with group 1: select (dp_hash), buckets output:3 and output:4."""
    if groups_available():
        from ofproto.groups import OFPGT_SELECT, Bucket, Group
        tables.set_groups({1: Group(1, OFPGT_SELECT, (Bucket((OA.Output(3),), weight=100, bucket_id=0),
                                                      Bucket((OA.Output(4),), weight=100, bucket_id=1)),
                                    selection_method="dp_hash")})
    return tables.activate(tables.compile(PORT_MAP))


def walk(path: MegaflowPath, slot: int) -> dict[str, Any]:
    """One frame's translation: rules hit, program (checked: rewrites both MACs and outputs once)."""
    path.extract(np.array([slot], dtype=np.int32), 1)
    key = [int(w) for w in path.keys[slot]]
    r = translate(path.ts, key, path.port_flags, path.up.cookies)
    tables = sorted({int(path.ts.table_of[rank]) for rank in r.ranks})
    if [t for t in tables if t < N_TABLES] != list(range(N_TABLES)):
        raise AssertionError(f"the walk visits tables {tables}, not all {N_TABLES}")
    ops = [op for op, _args in A.decode(r.program())]
    if ops.count(A.OP_OUTPUT) != 1:
        raise AssertionError(f"unexpected program {A.format_actions(r.program())}")
    return {"rules_hit": len(r.ranks), "tables_visited": len(tables), "actions": A.format_actions(r.program())}


def run_case(hot: list[tuple[bytes, int]], misses: list[tuple[bytes, int]], hot_nets: tuple[int, ...], n: int,
             seconds: float, upcall_rounds: int) -> dict[str, Any]:
    """Measure the case: hit rate (best, median), translations per second, what it holds."""
    tables, holds = make_tables(hot_nets)
    ts = compile_tables(tables)
    pool, slots = make_pool(hot, 128)
    path = MegaflowPath(ts, pool, N_PORTS, n)
    bursts = bursts_of(slots, n)
    described = walk(path, int(slots[0]))
    for b in bursts * 4:          # install every megaflow (both MAC phases), fill the EMC
        path.run(b, n)
    misses0 = path.up.cache.stats()["misses"]

    def run(calls: int) -> None:
        nb = len(bursts)
        for c in range(calls):
            path.run(bursts[c % nb], n, True)

    rates = measure({"nicira": run}, n, seconds)
    if path.up.cache.stats()["misses"] != misses0:
        raise AssertionError("a megaflow missed while measuring the hit path")
    for b in bursts:
        path.run(b, n)
        if path.out_start[1].sum() != n:
            raise AssertionError("every frame goes to exactly one port")
    miss_pool, miss_slots = make_pool(misses, 128)
    miss_path = MegaflowPath(ts, miss_pool, N_PORTS, n)
    up = upcall_rate(miss_path, bursts_of(miss_slots, n), n, upcall_rounds)
    if up["translations_per_round"] != N_FRAMES:
        raise AssertionError(f"{up['translations_per_round']} translations for {N_FRAMES} distinct frames")
    return {"mpps": rates["nicira"][0] / 1e6, "mpps_median": rates["nicira"][1] / 1e6,
            "translations_per_s": up["translations_per_s"],
            "translations_per_s_median": up["translations_per_s_median"], "holds": holds,
            "megaflows_hot": len(path.up.cache), **described}
