"""Pipeline state and the Nicira actions (registers, metadata, resubmit, load / set_field with masks, move,
push / pop, output:reg, dec_ttl, clone, exit, note, write_metadata) through the real datapath, against the
reference model (``xlate.reference``), plus OVN-style examples.

Hypothesis draws flow sets over six tables whose matches use registers (reg, xreg, xxreg views of the same
bits, masked) and metadata, and whose actions load, move, push and pop bit ranges between key fields and
registers, rewrite IPv4 / TCP / UDP headers, resubmit to any table (loops included: OVS's limits cut them),
and output to ports named by registers. The datapath (``tests.test_xlate.Rig``) and the model must agree on
the bytes every port sends, the packet-ins and the drop counters, three runs in a row (translation,
megaflow, EMC); and a key changed only outside a translation's megaflow mask must translate to the same
program. Frames carry correct checksums (the model recomputes them from scratch) and no DEI bit.
"""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpif import actions_ref as AR
from dpif import key as K
from dpif.extract_ref import extract
from ofproto.rules import (
    OFPP_CONTROLLER,
    OFPP_IN_PORT,
    OFPP_NORMAL,
    Clone,
    DecTtl,
    Exit,
    Flow,
    FlowError,
    Instructions,
    Load,
    Match,
    Move,
    Note,
    Output,
    OutputReg,
    PopVlan,
    PushVlan,
    Resubmit,
    SetField,
    StackPop,
    StackPush,
)
from ofproto.tables import FlowTables
from tests.test_xlate import SETTINGS, check_burst, rig
from xlate.reference import RefTables
from xlate.translate import CUT_DEPTH, CUT_RESUBMITS, MAX_CROSSINGS, BaseRecorder, UpcallCookies, translate

N_PORTS = 4
N_TABLES = 6
MACS = [0x020000000001, 0x020000000002, 0x0200000000A5, 0xFFFFFFFFFFFF]
IP4 = [0x0A000001, 0x0A000002, 0xC0A80001]
IP6 = [0x20010DB8 << 96 | 1, 0xFE80 << 112 | 5]


# ---------------------------------------------------------------- frames with correct checksums

def ipv4_frame(dst: int, src: int, tags: bytes, proto: int, ip_src: int, ip_dst: int, ttl: int, tos: int,
               sport: int, dport: int) -> bytes:
    if proto == 1:
        l4 = struct.pack("!BBHI", 8, 0, 0, 0) + b"\0" * 12
    elif proto == 6:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 1024, 0, 0)
    else:
        l4 = struct.pack("!HHHH", sport, dport, 8 + 4, 0) + b"abcd"
    ip = bytearray(struct.pack("!BBHHHBBHII", 0x45, tos, 20 + len(l4), 0, 0, ttl, proto, 0, ip_src, ip_dst) + l4)
    ip[10:12] = AR.csum(bytes(ip[:20])).to_bytes(2, "big")
    frame = bytearray(dst.to_bytes(6, "big") + src.to_bytes(6, "big") + tags + b"\x08\x00" + ip)
    l3 = 14 + len(tags)
    if proto == 6:
        frame[l3 + 36 : l3 + 38] = AR.l4_full(frame, l3).to_bytes(2, "big")
    elif proto == 17:
        frame[l3 + 26 : l3 + 28] = AR.l4_full(frame, l3).to_bytes(2, "big")
    return bytes(frame)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    dst, src = draw(st.sampled_from(MACS)), draw(st.sampled_from(MACS[:3]))
    tags = b"".join(struct.pack("!HH", 0x8100, draw(st.integers(0, 7)) << 13 | draw(st.sampled_from([10, 20])))
                    for _ in range(draw(st.integers(0, 2))))
    kind = draw(st.sampled_from(["ipv4", "ipv4", "ipv4", "ipv6", "arp"]))
    if kind == "ipv4":
        return ipv4_frame(dst, src, tags, draw(st.sampled_from([6, 17, 1])), draw(st.sampled_from(IP4)),
                          draw(st.sampled_from(IP4)), draw(st.sampled_from([0, 1, 2, 64])),
                          draw(st.sampled_from([0, 0xB8])), draw(st.sampled_from([80, 443, 4000])),
                          draw(st.sampled_from([80, 443, 4000])))
    if kind == "ipv6":
        out = dst.to_bytes(6, "big") + src.to_bytes(6, "big") + tags + b"\x86\xdd"
        out += struct.pack("!IHBB", 0x60000000, 8, 17, draw(st.sampled_from([1, 64])))
        out += draw(st.sampled_from(IP6)).to_bytes(16, "big") + draw(st.sampled_from(IP6)).to_bytes(16, "big")
        return out + struct.pack("!HHHH", 53, 53, 8, 0)
    return (dst.to_bytes(6, "big") + src.to_bytes(6, "big") + tags + b"\x08\x06"
            + struct.pack("!HHBBH6sI6sI", 1, 0x0800, 6, 4, 1, src.to_bytes(6, "big"), IP4[0], b"\0" * 6, IP4[1]))


def frame_burst(max_size: int = 16) -> st.SearchStrategy[list[tuple[bytes, int]]]:
    return st.lists(st.tuples(frames(), st.integers(0, N_PORTS - 1)), min_size=1, max_size=max_size)


# ---------------------------------------------------------------- flows

REGS = ["reg0", "reg1", "reg2", "reg3", "reg4", "xreg0", "xreg2", "xxreg0", "metadata"]
WIDTH = {"reg0": 32, "reg1": 32, "reg2": 32, "reg3": 32, "reg4": 32, "xreg0": 64, "xreg2": 64, "xxreg0": 128,
         "metadata": 64, "eth_src": 48, "eth_dst": 48, "ip_src": 32, "ip_dst": 32, "tcp_dst": 16,
         "tcp_src": 16, "udp_src": 16, "nw_ttl": 8, "ip_dscp": 6, "in_port": 16, "eth_type": 16, "pkt_mark": 32}
SOURCES = REGS + ["eth_src", "eth_dst", "ip_src", "ip_dst", "tcp_dst", "udp_src", "nw_ttl", "in_port", "eth_type"]
DESTS = REGS + ["eth_dst", "eth_src", "ip_src", "ip_dst", "tcp_src", "tcp_dst", "udp_src", "nw_ttl", "ip_dscp",
                "pkt_mark"]


@st.composite
def bit_range(draw: st.DrawFn, name: str, nbits: int | None = None) -> tuple[int, int]:
    width = WIDTH[name]
    n = nbits if nbits is not None else draw(st.sampled_from([1, 4, 8, 16, width]))
    n = min(n, width)
    ofs = draw(st.sampled_from([0, 0, width - n, (width - n) // 2]))
    return ofs, n


@st.composite
def reg_match(draw: st.DrawFn) -> dict:
    out: dict = {}
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from(REGS))
        width = WIDTH[name]
        full = (1 << width) - 1
        mask = draw(st.sampled_from([full, 0xFF, 0xF0, 1 << (width - 1), (1 << 48) - 1 & full]))
        value = draw(st.sampled_from([0, 1, 5, 0x50, 0x0200000000A5, (1 << width) - 1])) & mask
        out[name] = (value, mask)
    return out


@st.composite
def matches(draw: st.DrawFn) -> Match:
    if draw(st.integers(0, 2)) == 0:
        return Match()
    fields = draw(reg_match())
    for name, strat in draw(st.lists(st.sampled_from([
            ("in_port", st.integers(0, N_PORTS - 1)), ("eth_type", st.sampled_from([0x0800, 0x86DD, 0x0806])),
            ("eth_src", st.sampled_from(MACS[:3])), ("ip_proto", st.sampled_from([6, 17])),
            ("pkt_mark", st.sampled_from([0, 5]))]), max_size=2, unique_by=lambda t: t[0])):
        fields[name] = draw(strat)
    try:
        return Match(**fields)
    except FlowError:    # aliasing views of the same register bits contradict each other
        return Match()


@st.composite
def nicira_action(draw: st.DrawFn, depth: int = 0) -> object:
    kind = draw(st.sampled_from(["load", "load", "move", "move", "resubmit", "resubmit", "resubmit", "output",
                                 "output", "push", "pop",
                                 "output_reg", "set_header", "dec_ttl", "note", "exit", "clone", "vlan"]))
    if kind == "load":
        name = draw(st.sampled_from(REGS))
        ofs, n = draw(bit_range(name))
        return Load.bits(name, draw(st.sampled_from([0, 1, 5, 0x50, 0xA5, (1 << n) - 1])) & ((1 << n) - 1), ofs, n)
    if kind == "move":
        src, dst = draw(st.sampled_from(SOURCES)), draw(st.sampled_from(DESTS))
        n = draw(st.sampled_from([1, 4, 8, 16, 32, 48]))
        n = min(n, WIDTH[src], WIDTH[dst])
        so, _ = draw(bit_range(src, n))
        do, _ = draw(bit_range(dst, n))
        return Move(src, dst, n, so, do)
    if kind == "resubmit":
        return Resubmit(None, draw(st.integers(0, N_TABLES - 1)))
    if kind == "output":
        return Output(draw(st.sampled_from([0, 1, 2, 3, OFPP_NORMAL, OFPP_CONTROLLER])))
    if kind == "push":
        name = draw(st.sampled_from(SOURCES))
        ofs, n = draw(bit_range(name))
        return StackPush(name, ofs, n)
    if kind == "pop":
        name = draw(st.sampled_from(DESTS))
        ofs, n = draw(bit_range(name))
        return StackPop(name, ofs, n)
    if kind == "output_reg":
        return OutputReg(draw(st.sampled_from(["reg0", "reg1", "xxreg0"])), 0, 2)
    if kind == "set_header":
        name = draw(st.sampled_from(["nw_ttl", "ip_dscp", "tcp_dst", "udp_src", "ip_dst", "eth_src", "eth_dst"]))
        width = WIDTH[name]
        mask = draw(st.sampled_from([None, 0xF, 1 << (width - 1)]))
        value = draw(st.sampled_from([0, 7, 33, 0x0A000009])) & ((1 << width) - 1)
        if mask is not None:
            value &= mask
        return SetField(name, value, mask)
    if kind == "dec_ttl":
        return DecTtl()
    if kind == "note":
        return Note(b"hi")
    if kind == "exit":
        return Exit()
    if kind == "vlan":
        return draw(st.sampled_from([PopVlan(), PushVlan(), SetField("vlan_vid", 30)]))
    if depth >= 1:
        return Note()
    return Clone(tuple(draw(st.lists(nicira_action(depth + 1), max_size=3))))


@st.composite
def flows(draw: st.DrawFn) -> Flow:
    table = draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3, 4, 5]))
    apply = tuple(draw(st.lists(nicira_action(), min_size=1, max_size=5)))
    goto = draw(st.sampled_from([None, None, None, *range(table + 1, N_TABLES)]))
    write = tuple(draw(st.lists(st.sampled_from([Output(1), SetField("eth_dst", MACS[2]),
                                                 SetField("reg1", 5, 0xF)]), max_size=1)))
    metadata = draw(st.sampled_from([None, None, (0x50, 0xFF), (1 << 63, 1 << 63)]))
    return Flow(table, draw(st.sampled_from([0, 1, 10, 100])), draw(matches()),
                Instructions(apply=apply, write=write, goto=goto, metadata=metadata))


def load(tables: FlowTables, ref: RefTables, flow_list: list[Flow]) -> None:
    for f in flow_list:
        tables.add(f)
        ref.add(f)


# ---------------------------------------------------------------- differential tests

@settings(SETTINGS, max_examples=150)
@given(st.lists(flows(), max_size=18), frame_burst(), st.booleans())
def test_nicira_pipelines_match_reference(flow_list: list[Flow], burst: list, misses: bool) -> None:
    """Datapath and model agree on every byte sent, packet-in and drop, translated, from the megaflow and
    from the EMC."""
    if not misses:   # most frames go somewhere
        flow_list = flow_list + [Flow(t, 0, Match(), Instructions(apply=(Output(t % N_PORTS),)))
                                 for t in range(N_TABLES)]
    ref = RefTables(N_TABLES)
    with rig(n_tables=N_TABLES) as r:
        load(r.tables, ref, flow_list)
        r.update()
        for now in (1, 1, 1):
            check_burst(r, ref, burst, now)


def _field_bits() -> list[int]:
    """Per key word, the bits some field of ``dpif.key`` uses (the others are 0 in every key)."""
    bits = [0] * K.KEY_WORDS
    for word, shift, width in K.FIELDS.values():
        for j in range(max(1, width // 64)):
            bits[word + j] |= ((1 << min(width, 64)) - 1) << (shift if width <= 64 else 0)
    return bits


FIELD_BITS = _field_bits()


@settings(SETTINGS, max_examples=150)
@given(st.lists(flows(), max_size=18), frame_burst(8), st.randoms(use_true_random=False))
def test_bits_outside_the_mask_do_not_matter(flow_list: list[Flow], burst: list, rnd: random.Random) -> None:
    """A key that agrees with a translated key on the megaflow mask translates to the same program."""
    tables = FlowTables(N_TABLES)
    for f in flow_list:
        tables.add(f)
    ts = tables.compile()
    flags = np.zeros(N_PORTS, dtype=np.int64)
    for frame, port in burst:
        key, reason = extract(frame, port)
        if reason:
            continue
        key_l = [int(w) for w in key]
        res = translate(ts, key_l, flags, UpcallCookies())
        assert len(res.mask) == K.KEY_WORDS
        for _ in range(4):
            other = [(k & m) | (rnd.getrandbits(64) & ~m & b)
                     for k, m, b in zip(key_l, res.mask, FIELD_BITS, strict=True)]
            other[K.W_IN_PORT] = key_l[K.W_IN_PORT]
            res2 = translate(ts, other, flags, UpcallCookies())
            assert res2.actions == res.actions
            assert res2.cut == res.cut


# ---------------------------------------------------------------- examples (OVN's style)

def tcp(src: int = MACS[0], ttl: int = 64, dst: int = MACS[1]) -> bytes:
    return ipv4_frame(dst, src, b"", 6, IP4[0], IP4[1], ttl, 0, 4000, 80)


def run_both(flow_list: list[Flow], frames_in: list[tuple[bytes, int]]) -> object:
    ref = RefTables(N_TABLES)
    with rig(n_tables=N_TABLES) as r:
        load(r.tables, ref, flow_list)
        r.update()
        for _ in range(3):
            got = check_burst(r, ref, frames_in, 1)
        return got, len(r.dp.upcalls.cache)


def test_ovn_register_and_xxreg_move() -> None:
    """``table=0,in_port=1 actions=load:0x5->NXM_NX_REG13[],resubmit(,8)``;
    ``table=8``-style ``reg13=5 actions=move:NXM_OF_ETH_SRC[]->NXM_NX_XXREG0[0..47],resubmit(,9)``; the
    next table matches the MAC in xxreg0's low bits, i.e. in reg2's low 16 and reg3."""
    flow_list = [
        Flow(0, 100, Match(in_port=1), Instructions(apply=(Load.bits("reg13", 5), Resubmit(None, 2)))),
        Flow(2, 100, Match(reg13=5), Instructions(apply=(Move("eth_src", "xxreg0", 48, 0, 0), Resubmit(None, 3)))),
        Flow(3, 100, Match(reg3=MACS[2] & 0xFFFFFFFF, reg2=(MACS[2] >> 32, 0xFFFF)),
             Instructions(apply=(Output(2),))),
        Flow(3, 10, Match(), Instructions(apply=(Output(3),))),
    ]
    got, n_megaflows = run_both(flow_list, [(tcp(MACS[2]), 1), (tcp(MACS[0]), 1), (tcp(MACS[2]), 0)])
    assert got.outputs[2] == [tcp(MACS[2])] and got.outputs[3] == [tcp(MACS[0])]
    assert n_megaflows == 3   # eth_src was copied into a register that a lookup read: it is in the mask


def test_a_resubmit_loop_is_cut_and_counted() -> None:
    tables = FlowTables(N_TABLES)
    tables.add(Flow(0, 1, Match(), Instructions(apply=(Resubmit(None, 0),))))
    res = translate(tables.compile(), [int(w) for w in extract(tcp(), 0)[0]], np.zeros(4, dtype=np.int64),
                    UpcallCookies())
    assert res.cut == {CUT_DEPTH: 1} and len(res.ranks) == 65
    tables.add(Flow(0, 1, Match(), Instructions(apply=(Resubmit(None, 0), Resubmit(None, 0)))))
    res = translate(tables.compile(), [int(w) for w in extract(tcp(), 0)[0]], np.zeros(4, dtype=np.int64),
                    UpcallCookies())
    assert res.cut[CUT_RESUBMITS] >= 1 and len(res.ranks) == MAX_CROSSINGS + 1
    run_both([Flow(0, 1, Match(), Instructions(apply=(Resubmit(None, 0), Output(1))))], [(tcp(), 0)])


def test_forward_resubmits_do_not_deepen() -> None:
    """A chain of resubmits to later tables is limited by the resubmit count, not the depth."""
    flow_list = [Flow(t, 1, Match(), Instructions(apply=(Load.bits("reg0", 1, t, 1), Resubmit(None, t + 1))))
                 for t in range(N_TABLES - 1)]
    flow_list.append(Flow(N_TABLES - 1, 1, Match(reg0=(0x1F, 0x1F)), Instructions(apply=(Output(2),))))
    got, _ = run_both(flow_list, [(tcp(), 0)])
    assert got.outputs[2] == [tcp()]


def test_dec_ttl() -> None:
    """TTL 64: decremented, checksum fixed; TTL 1: a packet-in (invalid_ttl), the rest of the list skipped."""
    flow_list = [Flow(0, 1, Match(), Instructions(apply=(DecTtl(), Output(1))))]
    got, _ = run_both(flow_list, [(tcp(ttl=64), 0), (tcp(ttl=1), 0)])
    assert got.outputs[1] == [tcp(ttl=63)]
    assert [(p.reason, p.data) for p in got.packet_ins] == [(2, tcp(ttl=1))]


def test_clone_changes_do_not_leak() -> None:
    flow_list = [Flow(0, 1, Match(), Instructions(apply=(
        Clone((SetField("eth_dst", MACS[2]), Load.bits("reg0", 1), DecTtl(), Output(1))),
        Output(2), Resubmit(None, 1)))),
        Flow(1, 1, Match(reg0=1), Instructions(apply=(Output(3),))),
        Flow(1, 0, Match(), Instructions(apply=(Output(0),)))]
    got, _ = run_both(flow_list, [(tcp(), 3)])
    assert got.outputs[1] == [tcp(dst=MACS[2], ttl=63)] and got.outputs[2] == [tcp()] and got.outputs[0] == [tcp()]


def test_push_pop_exit_output_reg_and_write_metadata() -> None:
    flow_list = [
        Flow(0, 1, Match(), Instructions(apply=(Load.bits("reg0", 2), StackPush("reg0"), Load.bits("reg0", 0),
                                                StackPop("reg5"), OutputReg("reg5", 0, 16), Resubmit(None, 1),
                                                Output(3)), metadata=(0x10, 0xF0), goto=2)),
        Flow(1, 1, Match(), Instructions(apply=(Output(1), Exit(), Output(0)))),
        Flow(2, 1, Match(metadata=(0x10, 0xFF)), Instructions(apply=(Output(0),))),
    ]
    got, _ = run_both(flow_list, [(tcp(), 3)])
    assert got.outputs == {0: [], 1: [tcp()], 2: [tcp()], 3: []}   # exit skipped output:3, goto and table 2


def test_register_views_alias() -> None:
    """xxreg0 is reg0 (high) .. reg3; xreg1 is reg2 (high), reg3; metadata is its own."""
    flow_list = [
        Flow(0, 1, Match(), Instructions(apply=(Load.bits("xxreg0", 0xAB << 96 | 0xCD << 32 | 0xEF),
                                                Resubmit(None, 1)))),
        Flow(1, 1, Match(reg0=0xAB, reg2=0xCD, reg3=0xEF, xreg1=(0xCD << 32 | 0xEF))),
        Flow(1, 2, Match(reg0=0xAB, reg2=0xCD, reg3=0xEF, xreg1=(0xCD << 32 | 0xEF), reg1=0),
             Instructions(apply=(Output(1),))),
    ]
    got, _ = run_both(flow_list, [(tcp(), 0)])
    assert got.outputs[1] == [tcp()]


def test_header_writes_through_move_and_load() -> None:
    flow_list = [Flow(0, 1, Match(eth_type=0x0800, ip_proto=6), Instructions(apply=(
        Move("ip_src", "ip_dst", 32), Load.bits("tcp_dst", 0x1F90), SetField("nw_ttl", 9),
        Move("eth_src", "eth_dst", 48), Output(1))))]
    got, _ = run_both(flow_list, [(tcp(), 0)])
    want = ipv4_frame(MACS[0], MACS[0], b"", 6, IP4[0], IP4[0], 9, 0, 4000, 8080)
    assert got.outputs[1] == [want]


def test_resubmit_from_another_port_looks_up_with_it() -> None:
    flow_list = [Flow(0, 1, Match(in_port=0), Instructions(apply=(Resubmit(2, 1),))),
                 Flow(1, 1, Match(in_port=2), Instructions(apply=(Output(OFPP_IN_PORT),))),
                 Flow(1, 0, Match(), Instructions(apply=(Output(3),)))]
    got, _ = run_both(flow_list, [(tcp(), 0)])
    assert got.outputs[0] == [tcp()]   # the flow's actions see the real in_port


@pytest.mark.parametrize("action", [
    SetField("ipv6_label", 1), SetField("sctp_src", 1), Move("reg0", "tcp_flags", 8), Move("reg0", "conj_id", 8),
    Load("reg0", 1 << 40, 1 << 40), Move("reg0", "reg1", 16, 20, 0), StackPop("eth_type"), Move("no_such", "reg0", 1),
    OutputReg("xreg0", 0, 64), Resubmit(None, 300), SetField("vlan_vid", 5, 0xF),
])
def test_what_the_datapath_cannot_do_is_refused(action: object) -> None:
    with pytest.raises(FlowError):
        FlowTables(N_TABLES).add(Flow(0, 1, Match(), Instructions(apply=(action,))))


def test_nicira_actions_are_refused_in_the_action_set() -> None:
    with pytest.raises(FlowError):
        FlowTables(N_TABLES).add(Flow(0, 1, Match(), Instructions(write=(Resubmit(None, 1),))))


def test_trace_shows_the_resubmit_nesting() -> None:
    class Rec(BaseRecorder):
        def __init__(self) -> None:
            self.lines: list[str] = []

        def table(self, table_id: int, flow: Flow | None) -> None:
            self.lines.append(f"table {table_id}: {'miss' if flow is None else flow.priority}")

        def note(self, text: str) -> None:
            self.lines.append(text)

    tables = FlowTables(N_TABLES)
    tables.add(Flow(0, 1, Match(), Instructions(apply=(Resubmit(None, 1), Output(2)))))
    tables.add(Flow(1, 7, Match(), Instructions(apply=(Load.bits("reg0", 1), Output(1)))))
    rec = Rec()
    translate(tables.compile(), [int(w) for w in extract(tcp(), 0)[0]], np.zeros(4, dtype=np.int64),
              UpcallCookies(), rec)
    assert rec.lines[0] == "table 0: 1" and "table 1: 7" in rec.lines
    nested = rec.lines[rec.lines.index("table 1: 7") + 1]
    assert nested.startswith("        ")   # the resubmitted flow's actions are indented once more


def udp6(hop: int = 64, sport: int = 53, tc: int = 0) -> bytes:
    body = struct.pack("!HHHH", sport, 53, 12, 0) + b"abcd"
    src, dst = IP6[0].to_bytes(16, "big"), IP6[1].to_bytes(16, "big")
    pseudo = src + dst + struct.pack("!IxxxB", len(body), 17)
    c = AR.csum(pseudo + body) or 0xFFFF
    body = body[:6] + c.to_bytes(2, "big") + body[8:]
    return (MACS[1].to_bytes(6, "big") + MACS[0].to_bytes(6, "big") + b"\x86\xdd"
            + struct.pack("!IHBB", 0x60000000 | tc << 20, len(body), 17, hop) + src + dst + body)


def test_ipv6_hop_limit_traffic_class_and_ports() -> None:
    """dec_ttl and nw_tos / udp_src writes on IPv6: the hop limit, the traffic class and the port change,
    the UDP checksum is fixed (the executor's IPv6 rewrites)."""
    flow_list = [Flow(0, 1, Match(eth_type=0x86DD), Instructions(apply=(
        DecTtl(), SetField("nw_tos", 0xB8), Load.bits("udp_src", 5353), Output(1))))]
    got, _ = run_both(flow_list, [(udp6(), 0), (udp6(hop=1), 0)])
    assert got.outputs[1] == [udp6(hop=63, sport=5353, tc=0xB8)]
    assert [p.reason for p in got.packet_ins] == [2]
