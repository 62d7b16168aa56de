"""The OpenFlow flow-table kernels (classifier.flowtable) against the reference model (classifier.flowref).

Hypothesis generates flow sets (priorities with ties, masks, overlapping matches, several tables
with goto, apply/clear/write actions, VLAN and MAC rewrites, every reserved output port), flow-mods
(add, strict and non-strict modify and delete with cookies and out_port) and bursts of frames
(tagged, IPv4/IPv6/ARP/TCP/UDP/ICMP, runts); kernel and reference must agree on the flow each table
matches, the bytes every port sends (the kernel's queue entries rendered through the transmit
path's VLAN edit), NORMAL and packet-in lists, drop counters, flow and table counters, and the
flows that time out. A small EMC (64 rows) is kept across recompilations to catch stale entries.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.vlan_edit import copy_edit
from classifier import flowtable as F
from classifier import keys as K
from classifier.drops import N_DROPS
from classifier.flowref import RefResult, RefTables
from classifier.flowtable import (
    OFPP_ALL,
    OFPP_CONTROLLER,
    OFPP_FLOOD,
    OFPP_IN_PORT,
    OFPP_LOCAL,
    OFPP_NORMAL,
    OFPTT_ALL,
    Flow,
    FlowError,
    FlowTables,
    Instructions,
    Match,
    Output,
    PopVlan,
    PushVlan,
    SetField,
)
from classifier.l2switch import switch_burst
from classifier.l2table import make_l2table
from classifier.parse import parse_burst
from classifier.reference import parse_reference

SLOT = 256
N_PORTS = 4
N_TABLES = 8       # tables the tests create; flows use 0..3
QCAP = 64
CAP = 64

# ---------------------------------------------------------------- frames

MACS = [0x020000000001, 0x020000000002, 0x020000000003, 0xFFFFFFFFFFFF, 0x01005E000001]
IP4 = [0x0A000001, 0x0A000002, 0x0A000102, 0xC0A80001]
IP6 = [0x20010DB8 << 96 | 1, 0x20010DB8 << 96 | 2, 0xFE80 << 112 | 5]
L4PORTS = [22, 80, 443, 8080]


@st.composite
def frames(draw) -> bytes:
    """A frame built from small pools of addresses, so flows and frames meet often."""
    out = draw(st.sampled_from(MACS)).to_bytes(6, "big") + draw(st.sampled_from(MACS)).to_bytes(6, "big")
    if draw(st.booleans()):
        tci = draw(st.integers(0, 7)) << 13 | draw(st.integers(0, 1)) << 12 | draw(st.sampled_from([0, 10, 20, 100]))
        out += struct.pack("!HH", 0x8100, tci)
    kind = draw(st.sampled_from(["ipv4", "ipv4", "ipv6", "arp", "other", "inner-tag"]))
    if kind == "inner-tag":
        out += struct.pack("!HH", 0x8100, draw(st.sampled_from([10, 30])))
        kind = "ipv4"
    if kind == "ipv4":
        proto = draw(st.sampled_from([6, 17, 1]))
        out += b"\x08\x00" + struct.pack("!BBHHHBBHII", 0x45, draw(st.sampled_from([0, 0xB8, 0x02])), 0, 0, 0, 64,
                                         proto, 0, draw(st.sampled_from(IP4)), draw(st.sampled_from(IP4)))
        if proto == 1:
            out += struct.pack("!BBHI", draw(st.sampled_from([0, 8])), draw(st.integers(0, 1)), 0, 0)
        else:
            out += struct.pack("!HH", draw(st.sampled_from(L4PORTS)), draw(st.sampled_from(L4PORTS))) + b"\0" * 16
    elif kind == "ipv6":
        nh = draw(st.sampled_from([6, 17, 58]))
        out += b"\x86\xdd" + struct.pack("!IHBB", 0x60000000, 0, nh, 64)
        out += draw(st.sampled_from(IP6)).to_bytes(16, "big") + draw(st.sampled_from(IP6)).to_bytes(16, "big")
        out += struct.pack("!HH", draw(st.sampled_from(L4PORTS)), draw(st.sampled_from(L4PORTS))) + b"\0" * 16
    elif kind == "arp":
        out += b"\x08\x06" + struct.pack("!HHBBH6sI6sI", 1, 0x0800, 6, 4, draw(st.integers(1, 2)), out[6:12],
                                         draw(st.sampled_from(IP4)), b"\0" * 6, draw(st.sampled_from(IP4)))
    else:
        out += b"\x88\xb5" + b"\x55" * draw(st.integers(0, 20))
    if draw(st.integers(0, 15)) == 0:
        out = out[: draw(st.integers(0, 17))]
    return out


def frame_burst(max_size: int = 24):
    return st.lists(st.tuples(frames(), st.integers(0, N_PORTS - 1)), min_size=1, max_size=max_size)


# ---------------------------------------------------------------- flows

def _macs():
    return st.one_of(st.sampled_from(MACS), st.tuples(st.sampled_from(MACS),
                                                      st.sampled_from([0x010000000000, 0xFFFFFF000000])))


def _ip4():
    return st.one_of(st.sampled_from(IP4), st.tuples(st.sampled_from(IP4),
                                                     st.sampled_from([0xFFFFFF00, 0xFFFF0000, 0x00000001])))


def _ports():
    return st.one_of(st.sampled_from(L4PORTS), st.tuples(st.sampled_from(L4PORTS), st.sampled_from([0xFF00, 0x0001])))


# groups of fields; at most one field per group, so aliases of one key column never contradict
FIELD_GROUPS = {
    "in_port": [("in_port", st.integers(0, N_PORTS - 1))],
    "eth_dst": [("eth_dst", _macs())],
    "eth_src": [("eth_src", _macs())],
    "eth_type": [("eth_type", st.sampled_from([0x0800, 0x86DD, 0x0806, 0x88B5, 0x8100]))],
    "vlan_vid": [("vlan_vid", st.sampled_from([0x1000 | 10, 0x1000 | 20, 0x1000 | 30, 0, (0x1000, 0x1000),
                                               (10, 0x0FFF), 0x1000]))],
    "vlan_pcp": [("vlan_pcp", st.integers(0, 7))],
    "ip_proto": [("ip_proto", st.sampled_from([6, 17, 1, 58]))],
    "tos": [("ip_dscp", st.sampled_from([0, 46])), ("ip_ecn", st.integers(0, 3))],
    "ipv4_src": [("ipv4_src", _ip4()), ("arp_spa", _ip4())],
    "ipv4_dst": [("ipv4_dst", _ip4()), ("arp_tpa", _ip4())],
    "ipv6": [("ipv6_dst", st.one_of(st.sampled_from(IP6), st.tuples(st.sampled_from(IP6),
                                                                     st.just((1 << 128) - (1 << 64))))),
             ("ipv6_src", st.sampled_from(IP6))],
    "tp_src": [("tcp_src", _ports()), ("udp_src", _ports()), ("icmpv4_type", st.sampled_from([0, 8]))],
    "tp_dst": [("tcp_dst", _ports()), ("udp_dst", _ports()), ("icmpv4_code", st.integers(0, 1))],
    "arp_op": [("arp_op", st.integers(1, 2))],
}


@st.composite
def matches(draw, max_fields: int = 3) -> Match:
    size = draw(st.sampled_from([0, 1, 1, 2, 2, 3][: max_fields * 2]))
    groups = draw(st.lists(st.sampled_from(sorted(FIELD_GROUPS)), min_size=size, max_size=size, unique=True))
    fields = {}
    for g in groups:
        name, strat = draw(st.sampled_from(FIELD_GROUPS[g]))
        fields[name] = draw(strat)
    return Match(**fields)


actions = st.one_of(
    st.builds(Output, st.sampled_from([0, 1, 2, 3, 7, OFPP_FLOOD, OFPP_ALL, OFPP_IN_PORT, OFPP_NORMAL, OFPP_LOCAL])),
    st.builds(Output, st.just(OFPP_CONTROLLER), st.sampled_from([0xFFFF, 64])),
    st.builds(PushVlan, st.sampled_from([0x8100, 0x8100, 0x88A8])),
    st.just(PopVlan()),
    st.builds(SetField, st.sampled_from(["eth_dst", "eth_src"]), st.sampled_from(MACS[:3])),
    st.builds(SetField, st.just("vlan_vid"), st.sampled_from([10, 20, 0x1000 | 30, 0])),
    st.builds(SetField, st.just("vlan_pcp"), st.integers(0, 7)),
)


@st.composite
def instructions(draw, table: int, last_table: int = 3) -> Instructions:
    if draw(st.integers(0, 2)) == 0:   # the common flow: one output (the kernel's EMC fast path)
        return Instructions(apply=(draw(st.builds(Output, st.sampled_from([0, 1, 2, 3, 7, OFPP_NORMAL]))),))
    goto = None
    if table < last_table and draw(st.booleans()):
        goto = draw(st.integers(table + 1, last_table))
    return Instructions(apply=tuple(draw(st.lists(actions, max_size=4))), clear=draw(st.integers(0, 3)) == 0,
                        write=tuple(draw(st.lists(actions, max_size=2))), goto=goto)


@st.composite
def flows(draw) -> Flow:
    table = draw(st.sampled_from([0, 0, 1, 2, 3]))
    return Flow(table_id=table, priority=draw(st.sampled_from([0, 1, 10, 10, 100, 0x8000])),
                match=draw(matches()), instructions=draw(instructions(table)),
                cookie=draw(st.sampled_from([0, 1, 2, 0x100, 2**63 + 5])),
                flags=draw(st.sampled_from([0, 0, 0, F.OFPFF_RESET_COUNTS, F.OFPFF_CHECK_OVERLAP])))


@st.composite
def flow_mods(draw):
    kind = draw(st.sampled_from(["add", "add", "modify", "delete"]))
    if kind == "add":
        return ("add", draw(flows()))
    strict = draw(st.booleans())
    cookie_mask = draw(st.sampled_from([0, 0, 0xFF, 2**64 - 1]))
    cookie = draw(st.sampled_from([0, 1, 2, 0x100]))
    priority = draw(st.sampled_from([0, 1, 10, 100, 0x8000]))
    match = draw(matches(max_fields=2))
    if kind == "modify":
        table = draw(st.integers(0, 3))
        return ("modify", table, match, priority, strict, cookie, cookie_mask, draw(instructions(table)),
                draw(st.booleans()))
    out_port = draw(st.sampled_from([F.OFPP_ANY, F.OFPP_ANY, 1, 2, OFPP_NORMAL, OFPP_CONTROLLER]))
    return ("delete", draw(st.sampled_from([OFPTT_ALL, 0, 1, 3])), match, priority, strict, out_port, cookie,
            cookie_mask)


@st.composite
def related_match(draw, match: Match) -> Match:
    """A match near ``match``: fields dropped, masks shortened or lengthened, a field added."""
    fields = {}
    for name, value, mask in match.fields:
        if draw(st.integers(0, 3)) == 0:
            continue
        bits = F.FIELDS[name][0]
        full = (1 << bits) - 1
        how = draw(st.sampled_from(["keep", "shorter", "longer"]))
        if how == "shorter":
            mask &= (full << draw(st.sampled_from([1, 8, 16]))) & full
        elif how == "longer":
            extra = full & ~mask & draw(st.sampled_from([1, 0xFF, 0xFF00, full]))
            value |= extra & draw(st.sampled_from([0, full, draw(st.integers(0, full))]))
            mask |= extra
        if mask:
            fields[name] = (value & mask, mask)
    if draw(st.integers(0, 4)) == 0:
        extra_match = draw(matches(max_fields=1))
        for name, value, mask in extra_match.fields:
            fields.setdefault(name, (value, mask))
    try:
        return Match(**fields)
    except FlowError:   # an added alias contradicts a kept field
        return match


def draw_mod(data, tables: FlowTables) -> tuple:
    """A flow-mod; half of them aimed at an installed flow (same table, priority, a related or equal match)."""
    existing = sorted(tables.flows(), key=lambda f: f.serial)
    if not existing or data.draw(st.booleans()):
        return data.draw(flow_mods())
    f = data.draw(st.sampled_from(existing))
    kind = data.draw(st.sampled_from(["add", "modify", "delete"]))
    match = f.match if data.draw(st.booleans()) else data.draw(related_match(f.match))
    if kind == "add":
        return ("add", Flow(f.table_id, f.priority, match, data.draw(instructions(f.table_id)), f.cookie,
                            flags=data.draw(st.sampled_from([0, F.OFPFF_RESET_COUNTS, F.OFPFF_CHECK_OVERLAP]))))
    strict = data.draw(st.booleans())
    cookie_mask = data.draw(st.sampled_from([0, 0xFF, 2**64 - 1]))
    cookie = f.cookie if data.draw(st.booleans()) else data.draw(st.sampled_from([0, 1]))
    if kind == "modify":
        return ("modify", f.table_id, match, f.priority, strict, cookie, cookie_mask,
                data.draw(instructions(f.table_id)), data.draw(st.booleans()))
    out_port = data.draw(st.sampled_from([F.OFPP_ANY, F.OFPP_ANY, 1, OFPP_NORMAL]))
    return ("delete", data.draw(st.sampled_from([f.table_id, OFPTT_ALL])), match, f.priority, strict, out_port,
            cookie, cookie_mask)


def apply_mod(tables: FlowTables, ref: RefTables, op: tuple, now: int) -> None:
    """Run one flow-mod on both sides; they must select the same flows (or both refuse)."""
    kind = op[0]
    if kind == "add":
        try:
            tables.add(op[1], now)
        except FlowError as e:
            with pytest.raises(FlowError):
                ref.add(op[1], now)
            assert e.code == "overlap"
            return
        ref.add(op[1], now)
    elif kind == "modify":
        _, table, match, prio, strict, cookie, cmask, ins, reset = op
        got = tables.modify(table, match, prio, strict, cookie, cmask, ins, reset)
        want = ref.modify(table, match, prio, strict, cookie, cmask, ins, reset)
        assert sorted(map(ident, got), key=repr) == sorted((f.ident() for f in want), key=repr)
    else:
        _, table, match, prio, strict, out_port, cookie, cmask = op
        got = tables.delete(table, match, prio, strict, out_port, cookie, cmask, now)
        want = ref.delete(table, match, prio, strict, out_port, cookie, cmask)
        assert sorted(((ident(s.flow), s.packets, s.bytes) for s in got), key=repr) == sorted(
            ((f.ident(), f.packets, f.bytes) for f in want), key=repr)


def ident(f: Flow) -> tuple[int, int, Match]:
    return f.table_id, f.priority, f.match


def table_contents(tables: FlowTables) -> set:
    return {(ident(f), f.instructions, f.cookie) for f in tables.flows()}


def ref_contents(ref: RefTables) -> set:
    return {(f.ident(), f.instructions, f.cookie) for f in ref.flows}


# ---------------------------------------------------------------- the kernel, wired like a datapath

class KernelPipe:
    """flow_burst with its arrays; renders every output as the bytes the port would send."""

    def __init__(self, tables: FlowTables, port_flags: list[int], emc_rows: int = 64, n_slots: int = 256) -> None:
        self.tables = tables
        self.port_flags = np.array(port_flags, dtype=np.int64)
        n_ports = len(port_flags)
        self.data = np.zeros((n_slots, SLOT), dtype=np.uint8)
        self.meta = np.zeros((n_slots, 4), dtype=np.int32)
        self.keys = np.zeros((n_slots, K.NKEYS), dtype=np.uint64)
        self.emc = F.make_emc(emc_rows)
        self.drops = np.zeros((n_ports, F.N_FDROPS), dtype=np.int64)
        self.out = np.zeros((2, n_ports * QCAP), dtype=np.int32)
        self.out_start = np.zeros((2, n_ports + 1), dtype=np.int32)
        self.side = F.make_side(CAP)
        self.compiled: F.CompiledFlows | None = None

    def update(self) -> None:
        self.compiled = self.tables.activate(self.tables.compile())

    def frame(self, slot: int, edit: int = -1) -> bytes:
        buf = np.zeros(SLOT + 8, dtype=np.uint8)
        n = copy_edit(self.data[slot], int(self.meta[slot, 0]), edit, buf, 0)
        return bytes(buf[:n])

    def load(self, burst_frames: list[tuple[bytes, int]]) -> np.ndarray:
        n = len(burst_frames)
        # Frame i in slot 2n-1-i: slot numbers differ from burst positions.
        burst = np.array([2 * n - 1 - i for i in range(n)], dtype=np.int32)
        for (f, p), s in zip(burst_frames, burst, strict=True):
            self.data[s] = 0x77
            self.data[s, : len(f)] = np.frombuffer(f, dtype=np.uint8)
            self.meta[s] = (len(f), p, 0, 0)
        return burst

    def run(self, burst_frames: list[tuple[bytes, int]], now: int, free: int | None = None) -> RefResult:
        burst = self.load(burst_frames)
        n = len(burst)
        parse_burst(self.data, self.meta, burst, n, self.keys)
        free_stack = np.arange(self.data.shape[0] - 1, 2 * n - 1, -1, dtype=np.int32)
        if free is not None:
            free_stack = free_stack[:free]
        free_top = np.array([len(free_stack)], dtype=np.int64)
        before = set(free_stack.tolist())
        c = self.compiled
        total = F.flow_burst(self.data, self.meta, burst, n, self.keys, c.ft, self.emc, self.port_flags,
                             now, self.drops, self.out, self.out_start, self.side, free_stack, free_top)
        side = self.side
        n_normal, n_pi, n_extra = (int(side[F.SIDE_N, k]) for k in (F.N_NORMAL, F.N_PKTIN, F.N_EXTRA))
        assert total == int(side[F.SIDE_N, F.N_OUT]) == int(self.out_start[1, :-1].sum())
        extra = side[F.SIDE_EXTRA, :n_extra].tolist()
        assert len(set(extra)) == n_extra and set(extra) <= before
        assert int(free_top[0]) == len(before) - n_extra
        res = RefResult({p: [] for p in range(len(self.port_flags))})
        for p in range(len(self.port_flags)):
            first = int(self.out_start[0, p])
            for k in range(first, first + int(self.out_start[1, p])):
                res.outputs[p].append(self.frame(int(self.out[0, k]), int(self.out[1, k])))
        res.normal = [self.frame(int(s)) for s in side[F.SIDE_NORMAL, :n_normal]]
        for k in range(n_pi):
            info = int(side[F.SIDE_PI_REASON, k])
            flow = c.flows[int(side[F.SIDE_PI_FLOW, k])]
            res.packet_in.append((self.frame(int(side[F.SIDE_PI_SLOT, k])), info & 0xFF, info >> 8, flow.cookie,
                                  int(side[F.SIDE_PI_MAX_LEN, k])))
        return res

    def drop_counts(self) -> dict[tuple[int, str], int]:
        return {(p, F.FDROP_NAMES[r]): int(self.drops[p, r]) for p in range(self.drops.shape[0])
                for r in range(1, F.N_FDROPS) if self.drops[p, r]}


def check_counters(tables: FlowTables, ref: RefTables) -> None:
    got = {ident(s.flow): (s.packets, s.bytes) for s in tables.stats()}
    want = {f.ident(): (f.packets, f.bytes) for f in ref.flows}
    assert got == want
    for t, _active, lookups, matched in tables.table_stats():
        assert (lookups, matched) == (ref.lookups[t], ref.matched[t])


port_flag_sets = st.lists(st.sampled_from([0, 0, 0, F.PF_NO_FLOOD, F.PF_DOWN, F.PF_LOCAL]),
                          min_size=N_PORTS, max_size=N_PORTS)


# ---------------------------------------------------------------- differential tests

@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(flows(), max_size=40), frame_burst(30))
def test_lookup_matches_reference(flow_list: list[Flow], burst_frames) -> None:
    """Every table's tuple-space search finds the flow the linear scan finds."""
    tables, ref = FlowTables(N_TABLES), RefTables(N_TABLES)
    for f in flow_list:
        apply_mod(tables, ref, ("add", f), 0)
    pipe = KernelPipe(tables, [0] * N_PORTS)
    pipe.update()
    burst = pipe.load(burst_frames)
    parse_burst(pipe.data, pipe.meta, burst, len(burst), pipe.keys)
    found = np.zeros(len(burst), dtype=np.int64)
    for t in range(N_TABLES):
        F.flow_lookup(pipe.compiled.ft, pipe.keys, burst, len(burst), t, found)
        for i, (frame, port) in enumerate(burst_frames):
            key = parse_reference(frame)
            key[K.K_IN_PORT] = port
            want = ref.lookup(t, key)
            got = None if found[i] < 0 else ident(pipe.compiled.flows[found[i]])
            if key.get(K.K_DROP):
                continue
            assert got == (want.ident() if want else None), (t, frame.hex())


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(flows(), max_size=25), frame_burst(), st.integers(1, 4), port_flag_sets,
       st.sampled_from([0, 64, 64]), st.booleans(), st.data())
def test_pipeline_matches_reference(flow_list, first_burst, n_rounds, port_flags, emc_rows, emc_on, data) -> None:
    """Outputs, NORMAL, packet-ins, drops and counters agree, burst after burst, across flow-mods
    (the same frames often come back after a flow-mod: stale EMC entries would show)."""
    tables, ref = FlowTables(N_TABLES, emc=emc_on), RefTables(N_TABLES)
    now = 10
    for f in flow_list:
        apply_mod(tables, ref, ("add", f), now)
    pipe = KernelPipe(tables, port_flags, emc_rows=emc_rows)
    for r in range(n_rounds):
        if r:
            for _ in range(data.draw(st.integers(0, 4))):
                apply_mod(tables, ref, draw_mod(data, tables), now)
        burst_frames = first_burst if r == 0 or data.draw(st.booleans()) else data.draw(frame_burst())
        assert table_contents(tables) == ref_contents(ref)
        pipe.update()
        # Twice the same burst: the second run hits the EMC entries the first one made.
        for _ in range(2):
            got = pipe.run(burst_frames, now)
            want = ref.process(burst_frames, port_flags, now, QCAP, CAP)
            assert got.outputs == want.outputs
            assert got.normal == want.normal
            assert got.packet_in == want.packet_in
            assert pipe.drop_counts() == ref.drops
            check_counters(tables, ref)
        now += 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(flows(), max_size=25), st.integers(1, 12), st.data())
def test_flow_mods_match_reference(flow_list, n_mods, data) -> None:
    """add / modify / delete (strict and not, cookies, out_port) select and leave the same flows;
    flow stats and aggregates select the same flows."""
    tables, ref = FlowTables(N_TABLES), RefTables(N_TABLES)
    for f in flow_list:
        apply_mod(tables, ref, ("add", f), 0)
    for _ in range(n_mods):
        op = draw_mod(data, tables)
        apply_mod(tables, ref, op, 0)
        assert table_contents(tables) == ref_contents(ref)
        if op[0] != "add":
            match = op[2]
            op_cookie = (op[5], op[6]) if op[0] == "modify" else (op[6], op[7])
            for cookie, cmask in (op_cookie, (0, 0)):
                got = sorted((ident(s.flow) for s in tables.stats(OFPTT_ALL, match, F.OFPP_ANY, cookie, cmask)),
                             key=repr)
                want = sorted((f.ident() for f in ref.select(OFPTT_ALL, match, 0, False, F.OFPP_ANY, cookie, cmask)),
                              key=repr)
                assert got == want
                assert tables.aggregate(OFPTT_ALL, match, F.OFPP_ANY, cookie, cmask)[2] == len(want)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(flows(), st.sampled_from([0, 2, 5]), st.sampled_from([0, 3, 7])), min_size=1, max_size=15),
       st.lists(st.tuples(st.integers(1, 3), frame_burst(10)), min_size=1, max_size=5))
def test_timeouts_match_reference(flow_specs, steps) -> None:
    """Idle timeouts follow the last matching frame, hard timeouts the installation time."""
    tables, ref = FlowTables(N_TABLES), RefTables(N_TABLES)
    now = 100
    for f, idle, hard in flow_specs:
        f.idle_timeout, f.hard_timeout = idle, hard
        apply_mod(tables, ref, ("add", f), now)
    pipe = KernelPipe(tables, [0] * N_PORTS)
    pipe.update()
    for dt, burst_frames in steps:
        pipe.run(burst_frames, now)
        ref.process(burst_frames, [0] * N_PORTS, now, QCAP, CAP)
        now += dt
        got = sorted(((ident(s.flow), reason) for s, reason in tables.expire(now)), key=repr)
        want = sorted(((f.ident(), reason) for f, reason in ref.expire(now)), key=repr)
        assert got == want
        pipe.update()
        check_counters(tables, ref)


# ---------------------------------------------------------------- cases a user would notice

def tcp_frame(dst: int = 0x020000000002, src: int = 0x020000000001, vid: int | None = None, pcp: int = 0) -> bytes:
    tag = struct.pack("!HH", 0x8100, pcp << 13 | vid) if vid is not None else b""
    return (dst.to_bytes(6, "big") + src.to_bytes(6, "big") + tag + b"\x08\x00"
            + bytes.fromhex("45000028000040004006" "0000" "0a000001" "0a000002" "3039" "0050") + b"\0" * 16)


def one_flow_pipe(*flow_list: Flow, port_flags: list[int] | None = None) -> KernelPipe:
    tables = FlowTables()
    for f in flow_list:
        tables.add(f)
    pipe = KernelPipe(tables, port_flags or [0] * N_PORTS)
    pipe.update()
    return pipe


def queue(pipe: KernelPipe, p: int) -> list[tuple[int, int]]:
    first = int(pipe.out_start[0, p])
    return [(int(pipe.out[0, k]), int(pipe.out[1, k])) for k in range(first, first + int(pipe.out_start[1, p]))]


def test_specific_flow_beats_normal_table_miss() -> None:
    pipe = one_flow_pipe(
        Flow(0, 0, Match(), Instructions(apply=(Output(OFPP_NORMAL),))),
        Flow(0, 100, Match(in_port=1, vlan_vid=0x1000 | 10), Instructions(apply=(Output(3),))),
    )
    f = tcp_frame(vid=10)
    res = pipe.run([(f, 1), (f, 2), (tcp_frame(), 1)], now=1)
    assert res.outputs[3] == [f] and res.normal == [f, tcp_frame()]
    counts = {ident(s.flow)[1]: s.packets for s in pipe.tables.stats()}
    assert counts == {100: 1, 0: 2}


def test_pop_vlan_is_an_untag_edit_without_copy() -> None:
    pipe = one_flow_pipe(Flow(0, 10, Match(vlan_vid=(0x1000, 0x1000)), Instructions(apply=(PopVlan(), Output(2)))))
    res = pipe.run([(tcp_frame(vid=10, pcp=3), 0)], now=1)
    assert queue(pipe, 2) == [(1, 0)]               # slot 1 (frame 0), strip
    assert res.outputs[2] == [tcp_frame()]
    assert pipe.side[F.SIDE_N, F.N_EXTRA] == 0


def test_push_vlan_and_set_vid_is_a_tag_edit() -> None:
    pipe = one_flow_pipe(Flow(0, 10, Match(), Instructions(apply=(PushVlan(), SetField("vlan_vid", 0x1000 | 42),
                                                                  Output(1)))))
    res = pipe.run([(tcp_frame(), 0)], now=1)
    assert queue(pipe, 1) == [(1, 42)]
    assert res.outputs[1] == [tcp_frame(vid=42)]


def test_set_eth_dst_on_flooded_frame_leaves_other_copies_intact() -> None:
    new_dst = 0x02000000BEEF
    pipe = one_flow_pipe(Flow(0, 10, Match(), Instructions(apply=(Output(OFPP_FLOOD), SetField("eth_dst", new_dst),
                                                                  Output(2)))))
    f = tcp_frame()
    res = pipe.run([(f, 0)], now=1)
    assert res.outputs[1] == [f] and res.outputs[3] == [f]
    assert res.outputs[2] == [f, tcp_frame(dst=new_dst)]
    assert pipe.frame(1) == f                      # the original slot is untouched
    assert pipe.side[F.SIDE_N, F.N_EXTRA] == 1     # one fresh slot for the modified copy


def test_set_eth_dst_before_any_output_rewrites_in_place() -> None:
    pipe = one_flow_pipe(Flow(0, 10, Match(), Instructions(apply=(SetField("eth_src", 0x020000000099), Output(2),
                                                                  Output(3)))))
    res = pipe.run([(tcp_frame(), 0)], now=1)
    assert res.outputs[2] == res.outputs[3] == [tcp_frame(src=0x020000000099)]
    assert pipe.side[F.SIDE_N, F.N_EXTRA] == 0


def test_no_free_slot_is_counted() -> None:
    pipe = one_flow_pipe(Flow(0, 10, Match(), Instructions(apply=(Output(1), SetField("eth_dst", 0x0200000000AA),
                                                                  Output(2)))))
    res = pipe.run([(tcp_frame(), 0)], now=1, free=0)
    assert res.outputs[1] == [tcp_frame()] and res.outputs[2] == []
    assert pipe.drop_counts() == {(0, "no_free_slot"): 1}


def test_table_miss_no_output_and_controller() -> None:
    pipe = one_flow_pipe(
        Flow(0, 5, Match(eth_type=0x0800), Instructions(goto=1)),
        Flow(1, 0, Match(), Instructions(apply=(Output(OFPP_CONTROLLER, 128),))),
        Flow(1, 7, Match(tcp_dst=80), Instructions(apply=(Output(OFPP_CONTROLLER),))),
        Flow(0, 5, Match(eth_type=0x0806), Instructions()),
    )
    arp = tcp_frame()[:12] + b"\x08\x06" + bytes(28)
    other = tcp_frame()[:12] + b"\x88\xb5" + bytes(40)
    tcp81 = tcp_frame()[:36] + b"\x00\x51" + tcp_frame()[38:]
    res = pipe.run([(tcp_frame(), 0), (tcp81, 0), (arp, 1), (other, 2)], now=1)
    cookie0 = 0
    assert res.packet_in == [(tcp_frame(), F.OFPR_ACTION, 1, cookie0, 0xFFFF), (tcp81, F.OFPR_NO_MATCH, 1, 0, 128)]
    assert pipe.drop_counts() == {(1, "no_output"): 1, (2, "table_miss"): 1}


def test_controller_queue_full() -> None:
    pipe = one_flow_pipe(Flow(0, 0, Match(), Instructions(apply=(Output(OFPP_CONTROLLER),))))
    res = pipe.run([(tcp_frame(), 0)] * (CAP + 3), now=1)
    assert len(res.packet_in) == CAP
    assert pipe.drop_counts() == {(0, "controller_queue_full"): 3}


def test_emc_is_invalidated_by_updates() -> None:
    tables = FlowTables()
    tables.add(Flow(0, 1, Match(), Instructions(apply=(Output(1),))))
    pipe = KernelPipe(tables, [0] * N_PORTS)
    pipe.update()
    f = tcp_frame()
    for _ in range(2):
        assert pipe.run([(f, 0)], 1).outputs[1] == [f]
    assert pipe.emc[:, F.E_META].any()              # cached
    tables.add(Flow(0, 50, Match(ipv4_dst=(0x0A000000, 0xFFFFFF00)), Instructions(apply=(Output(2),))))
    pipe.update()
    assert pipe.run([(f, 0)], 2).outputs[2] == [f]
    assert pipe.run([(f, 0)], 2).outputs[2] == [f]
    tables.modify(0, Match(ipv4_dst=(0x0A000000, 0xFFFFFF00)), 50, True, instructions=Instructions(
        apply=(Output(3),)))
    pipe.update()
    assert pipe.run([(f, 0)], 3).outputs[3] == [f]
    tables.delete(0, Match(), strict=False, out_port=3)
    pipe.update()
    assert pipe.run([(f, 0)], 4).outputs[1] == [f]


def test_counters_carry_over_by_flow_identity() -> None:
    tables = FlowTables()
    a = tables.add(Flow(0, 10, Match(in_port=0), Instructions(apply=(Output(1),))))
    pipe = KernelPipe(tables, [0] * N_PORTS)
    pipe.update()
    pipe.run([(tcp_frame(), 0)] * 3, now=5)
    tables.add(Flow(0, 20, Match(in_port=2), Instructions(apply=(Output(1),))))   # another flow
    pipe.update()
    tables.add(Flow(0, 10, Match(in_port=0), Instructions(apply=(Output(2),))))   # replace: counters kept
    pipe.update()
    assert [(s.packets, s.flow.instructions.apply) for s in tables.stats(match=Match(in_port=0))] == [
        (3, (Output(2),))]
    tables.add(Flow(0, 10, Match(in_port=0), Instructions(apply=(Output(2),)), flags=F.OFPFF_RESET_COUNTS))
    pipe.update()
    assert tables.aggregate(match=Match(in_port=0)) == (0, 0, 1)
    assert a.uid != 0


def test_bad_goto_and_overlap_are_refused() -> None:
    tables = FlowTables(8)
    with pytest.raises(FlowError):
        tables.add(Flow(2, 1, Match(), Instructions(goto=2)))
    with pytest.raises(FlowError):
        tables.add(Flow(8, 1, Match()))
    tables.add(Flow(0, 5, Match(tcp_dst=80)))
    with pytest.raises(FlowError):
        tables.add(Flow(0, 5, Match(ip_proto=6), flags=F.OFPFF_CHECK_OVERLAP))
    with pytest.raises(FlowError):
        Match(tcp_dst=80, udp_dst=81)


def test_normal_frames_go_through_switch_burst() -> None:
    """The NORMAL list is a burst for switch_burst; append_queues merges its queues into the flow queues."""
    pipe = one_flow_pipe(
        Flow(0, 0, Match(), Instructions(apply=(Output(OFPP_NORMAL),))),
        Flow(0, 9, Match(in_port=3), Instructions(apply=(Output(0), SetField("eth_src", 0x020000000077),
                                                         Output(OFPP_NORMAL)))),
    )
    pipe.run([(tcp_frame(), 0), (tcp_frame(), 3)], now=1)
    n_normal = int(pipe.side[F.SIDE_N, F.N_NORMAL])
    normal = pipe.side[F.SIDE_NORMAL, :n_normal].copy()
    l2, info = make_l2table()
    vlan_map = np.zeros((N_PORTS, 2, 4096), dtype=np.int16)    # everyone untagged in VLAN 0
    out2 = np.zeros((2, N_PORTS * QCAP), dtype=np.int32)
    start2 = np.zeros((2, N_PORTS + 1), dtype=np.int32)
    switch_burst(pipe.data, pipe.meta, normal, n_normal, pipe.keys, l2, info, vlan_map, 1,
                 np.zeros((N_PORTS, N_DROPS), dtype=np.int64), out2, start2)
    assert F.append_queues(pipe.out, pipe.out_start, out2, start2) == 0
    sent = {p: [pipe.frame(s, e) for s, e in queue(pipe, p)] for p in range(N_PORTS)}
    modified = tcp_frame(src=0x020000000077)
    # frame 0 floods from port 0; frame 1 goes to port 0 unmodified, then is flooded modified from port 3
    assert sent == {0: [tcp_frame(), modified], 1: [tcp_frame(), modified], 2: [tcp_frame(), modified],
                    3: [tcp_frame()]}


def test_emc_tells_untagged_from_priority_tagged() -> None:
    """set_field vlan_vid does nothing on an untagged frame: an untagged frame and a VID-0 tagged frame
    with the same masked fields must not share an EMC entry even when no match looks at the tag bit."""
    tables = FlowTables()
    tables.add(Flow(0, 1, Match(), Instructions(apply=(SetField("vlan_vid", 5),), goto=1)))
    tables.add(Flow(1, 10, Match(vlan_vid=(5, 0x0FFF)), Instructions(apply=(Output(1),))))
    tables.add(Flow(1, 0, Match(), Instructions(apply=(Output(2),))))
    pipe = KernelPipe(tables, [0] * N_PORTS)
    pipe.update()
    res = pipe.run([(tcp_frame(), 0), (tcp_frame(vid=0), 0), (tcp_frame(), 0)], now=1)
    assert res.outputs[2] == [tcp_frame(), tcp_frame()] and res.outputs[1] == [tcp_frame(vid=5)]


QINQ = (0x020000000002).to_bytes(6, "big") + (0x020000000001).to_bytes(6, "big") + bytes.fromhex(
    "8100a00a" "8100001e" "0800") + tcp_frame()[14:]
SEQUENCES = {
    "push, pcp, vid on untagged": (tcp_frame(), [(0, [PushVlan(), SetField("vlan_pcp", 5), SetField("vlan_vid", 7),
                                                      Output(1)], None)]),
    "push onto a frame whose rest is a tag": (QINQ, [(0, [PopVlan(), SetField("eth_dst", 0x02000000000A), Output(1),
                                                          PushVlan(), SetField("vlan_vid", 9), Output(2)], None)]),
    "push without vid is a VID-0 tag": (tcp_frame(), [(0, [PushVlan(), Output(1)], None)]),
    "push 802.1ad": (tcp_frame(vid=10), [(0, [PushVlan(0x88A8), Output(1), PopVlan(), Output(2)], None)]),
    "two pushes, two pops": (tcp_frame(vid=10, pcp=2), [(0, [PushVlan(), SetField("vlan_vid", 99), Output(1),
                                                             PopVlan(), Output(2), PopVlan(), Output(3)], None)]),
    "pcp change": (tcp_frame(vid=10), [(0, [SetField("vlan_pcp", 3), Output(1), SetField("vlan_pcp", 0),
                                            Output(2)], None)]),
    "set the same vid": (tcp_frame(vid=10), [(0, [SetField("vlan_vid", 10), Output(1)], None)]),
    "vlan actions on untagged do nothing": (tcp_frame(), [(0, [PopVlan(), SetField("vlan_vid", 5), Output(1)], None)]),
    "third push does nothing": (tcp_frame(vid=3), [(0, [PushVlan(), PushVlan(), Output(1)], None)]),
    "action set across tables": (tcp_frame(), [(0, [], ([PushVlan(), SetField("vlan_pcp", 6)], 1)),
                                               (1, [], ([SetField("vlan_vid", 12), Output(3)], None))]),
    "controller after pop": (tcp_frame(vid=10), [(0, [PopVlan(), Output(OFPP_CONTROLLER), Output(1)], None)]),
    "normal after push": (tcp_frame(), [(0, [PushVlan(), SetField("vlan_vid", 4), Output(OFPP_NORMAL)], None)]),
    "later table sees the rewrite": (tcp_frame(vid=10), [(0, [SetField("vlan_vid", 20)], ([], 1)),
                                                         (1, [Output(2)], None)]),
    "action set pops before it pushes": (tcp_frame(vid=10), [(0, [], ([PushVlan(), PopVlan(), Output(1)], None))]),
    "action set sets after it pushes": (tcp_frame(), [(0, [], ([SetField("vlan_vid", 7), PushVlan(), Output(1)],
                                                               None))]),
}
for _port in (2, 0, 9, OFPP_NORMAL, OFPP_FLOOD, OFPP_ALL, OFPP_IN_PORT, OFPP_LOCAL, OFPP_CONTROLLER):
    SEQUENCES[f"one output to {_port:#x}"] = (tcp_frame(), [(0, [Output(_port)], None)])


@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_vlan_sequences_match_reference(name: str) -> None:
    frame, specs = SEQUENCES[name]
    tables, ref = FlowTables(N_TABLES), RefTables(N_TABLES)
    for table, apply, rest in specs:
        write, goto = rest if rest else ([], None)
        flow = Flow(table, 5, Match(), Instructions(apply=tuple(apply), write=tuple(write), goto=goto))
        if table == 1 and name == "later table sees the rewrite":
            flow = Flow(1, 5, Match(vlan_vid=0x1000 | 20), flow.instructions)
        tables.add(flow)
        ref.add(flow)
    port_flags = [0, F.PF_NO_FLOOD, 0, F.PF_LOCAL]
    pipe = KernelPipe(tables, port_flags)
    pipe.update()
    for _ in range(2):   # the second time from the EMC
        got = pipe.run([(frame, 0)], now=1)
        want = ref.process([(frame, 0)], port_flags, 1, QCAP, CAP)
        assert (got.outputs, got.normal, got.packet_in) == (want.outputs, want.normal, want.packet_in)
        assert pipe.drop_counts() == ref.drops
    assert pipe.emc[:, F.E_META].any()


def test_non_strict_selection_takes_only_more_specific_flows() -> None:
    """A /24 request covers a /32 flow and the /24 flow itself, never a /16 one nor a flow without the field."""
    tables = FlowTables()
    for prefix, mask in ((0x0A000001, 0xFFFFFFFF), (0x0A000000, 0xFFFFFF00), (0x0A000000, 0xFFFF0000)):
        tables.add(Flow(0, 10, Match(eth_type=0x0800, ipv4_dst=(prefix, mask)), Instructions(apply=(Output(1),))))
    tables.add(Flow(0, 10, Match(eth_type=0x0800), Instructions(apply=(Output(1),))))
    request = Match(ipv4_dst=(0x0A000000, 0xFFFFFF00))
    assert sorted(s.flow.match.get("ipv4_dst")[1] for s in tables.stats(match=request)) == [0xFFFFFF00, 0xFFFFFFFF]
    gone = tables.delete(0, request)
    assert sorted(s.flow.match.get("ipv4_dst")[1] for s in gone) == [0xFFFFFF00, 0xFFFFFFFF]
    assert len(tables) == 2
    assert tables.delete(0, Match(ipv4_dst=(0x0A000000, 0xFFFFFF00)), 10, strict=True) == []
