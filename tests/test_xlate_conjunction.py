"""Conjunctive matches (``conjunction(id,k/n)`` actions, the ``conj_id`` field) in the translator.

* examples written as ovs-ofctl flows: the man page's two-clause example, three clauses, flows shared by
  several conjunctions, partial matches falling through, the priorities of clauses, ``conj_id`` flows and
  ordinary flows; each packet's flow is asserted, and a real ovs-vswitchd 3.1 (``ofproto/trace``, its own
  namespace) must pick the same flows for the same packets;
* the megaflow: hypothesis draws conjunctive tables and packets; every key that agrees with a translated
  key on its mask (random bits elsewhere, and the other packets of the draw) translates to the same
  program, and the flow found is the one the reference model (``xlate.reference``) finds;
* the datapath against the reference model with conjunctive tables among the Nicira pipelines of
  ``tests.test_xlate_nicira`` (registers in clause matches, resubmits into conjunctive tables): bytes,
  packet-ins, drops and counters (clause flows never count, as in OVS);
* the rules: 2..64 clauses, a clause flow holds conjunction and note only (OVS's NXBAC_BAD_CONJUNCTION, the
  same error a real ovs-vswitchd sends for the same flow-mod), the text ovs-ofctl prints;
* ``BridgeFlows``: the counters a controller reads and ``ofproto/trace``'s line for the ``conj_id`` flow.
"""

from __future__ import annotations

import pathlib
import random
import re
import socket
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpif import key as K
from dpif.extract_ref import extract
from ofproto.actions import format_nicira
from ofproto.rules import (
    OFPP_ANY,
    Clone,
    Conjunction,
    DecTtl,
    Flow,
    FlowError,
    Instructions,
    Load,
    Match,
    Note,
    Output,
    Resubmit,
)
from ofproto.tables import FlowTables, TableSet
from tests.test_bridge_identity import RealOvs
from tests.test_xlate import SETTINGS, apply_mod, check_burst, check_counters, rig
from tests.test_xlate_nicira import MACS, N_TABLES, ipv4_frame, nicira_action
from tests.test_xlate_nicira import flows as nicira_flows
from tests.test_xlate_nicira import frames as nicira_frames
from vswitch.openflow.channel import OfConnection
from vswitch.openflow.codec import OFP10, Msg, encode
from vswitch.openflow.flows import FLOW_ERRORS, BridgeFlows
from xlate.reference import RefTables
from xlate.translate import UpcallCookies, XlateResult, translate

N_PORTS = 4
FLAGS = np.zeros(N_PORTS, dtype=np.int64)


# ---------------------------------------------------------------- flows written as ovs-ofctl writes them

def ip(text: str) -> int:
    return int.from_bytes(socket.inet_aton(text), "big")


def parse_flow(line: str, cookie: int = 0) -> Flow:
    """The few ovs-ofctl words the examples use: table, priority, ip / tcp / udp, nw_src, nw_dst, tp_dst,
    conj_id; actions conjunction(id,k/n), output:N, resubmit(,T), note, drop."""
    head, actions = line.split(" actions=")
    fields: dict[str, int | tuple[int, int]] = {}
    table, priority = 0, 0x8000
    for word in head.split(","):
        name, _, value = word.partition("=")
        if name == "table":
            table = int(value)
        elif name == "priority":
            priority = int(value)
        elif name in ("ip", "tcp", "udp"):
            fields["eth_type"] = 0x0800
            if name != "ip":
                fields["ip_proto"] = 6 if name == "tcp" else 17
        elif name in ("nw_src", "nw_dst"):
            addr, _, plen = value.partition("/")
            mask = (0xFFFFFFFF << (32 - int(plen or 32))) & 0xFFFFFFFF
            fields["ipv4_src" if name == "nw_src" else "ipv4_dst"] = (ip(addr), mask)
        elif name == "tp_dst":
            fields["tcp_dst" if fields.get("ip_proto") == 6 else "udp_dst"] = int(value)
        elif name == "conj_id":
            fields["conj_id"] = int(value)
        else:
            raise AssertionError(f"the examples do not use {word!r}")
    acts: list = []
    for cid, k, n, out, resub, note in re.findall(
            r"conjunction\((\d+),(\d+)/(\d+)\)|output:(\d+)|resubmit\(,(\d+)\)|(note)", actions):
        if cid:
            acts.append(Conjunction(int(cid), int(k), int(n)))
        elif out:
            acts.append(Output(int(out)))
        elif resub:
            acts.append(Resubmit(None, int(resub)))
        elif note:
            acts.append(Note(b"\0" * 6))
    return Flow(table, priority, Match(**fields), Instructions(apply=tuple(acts)), cookie=cookie)


def parse_flows(lines: list[str]) -> list[Flow]:
    """Flows of the lines, the cookie of each its line number (from 1)."""
    return [parse_flow(line, i) for i, line in enumerate(lines, 1)]


def packet(src: int, dst: int, dport: int = 80, proto: int = 6) -> bytes:
    return ipv4_frame(MACS[1], MACS[0], b"", proto, ip(f"10.0.0.{src}"), ip(f"10.0.0.{dst}"), 64, 0, 4000, dport)


def key_of(frame: bytes, port: int = 0) -> list[int]:
    key, reason = extract(frame, port)
    assert not reason
    return [int(w) for w in key]


def found(ts: TableSet, res: XlateResult) -> int | None:
    """The cookie of the first flow the walk ran (None: table 0 missed)."""
    return ts.flows[res.ranks[0]].cookie if res.ranks else None


# (name, flows, [((src, dst, dport, proto), cookie of the flow that must be found or None)])
EXAMPLES = [
    ("man page: 4 x 4 addresses", [
        "conj_id=1234 actions=output:2",
        "ip,nw_src=10.0.0.1 actions=conjunction(1234,1/2)", "ip,nw_src=10.0.0.4 actions=conjunction(1234,1/2)",
        "ip,nw_src=10.0.0.6 actions=conjunction(1234,1/2)", "ip,nw_src=10.0.0.7 actions=conjunction(1234,1/2)",
        "ip,nw_dst=10.0.0.2 actions=conjunction(1234,2/2)", "ip,nw_dst=10.0.0.5 actions=conjunction(1234,2/2)",
        "ip,nw_dst=10.0.0.7 actions=conjunction(1234,2/2)", "ip,nw_dst=10.0.0.8 actions=conjunction(1234,2/2)"],
     [((1, 2, 80, 6), 1), ((4, 8, 80, 6), 1), ((7, 7, 80, 6), 1), ((6, 5, 80, 17), 1), ((2, 2, 80, 6), None),
      ((1, 3, 80, 6), None), ((3, 3, 80, 6), None)]),
    ("three clauses", [
        "priority=5,conj_id=7,tcp actions=output:2",
        "priority=5,ip,nw_src=10.0.0.1 actions=conjunction(7,1/3)",
        "priority=5,ip,nw_src=10.0.0.2 actions=conjunction(7,1/3)",
        "priority=5,ip,nw_dst=10.0.0.3 actions=conjunction(7,2/3)",
        "priority=5,tcp,tp_dst=80 actions=conjunction(7,3/3)",
        "priority=5,tcp,tp_dst=443 actions=conjunction(7,3/3)",
        "priority=1 actions=output:3"],
     [((1, 3, 80, 6), 1), ((2, 3, 443, 6), 1), ((1, 3, 22, 6), 7), ((1, 4, 80, 6), 7), ((3, 3, 80, 6), 7)]),
    ("flows shared by two conjunctions", [
        "priority=10,ip,nw_src=10.0.0.1 actions=conjunction(1,1/2)",
        "priority=10,ip,nw_src=10.0.0.2 actions=note,conjunction(1,1/2),conjunction(2,1/2)",
        "priority=10,ip,nw_src=10.0.0.3 actions=conjunction(2,1/2)",
        "priority=10,ip,nw_dst=10.0.0.4 actions=conjunction(1,2/2)",
        "priority=10,ip,nw_dst=10.0.0.5 actions=conjunction(1,2/2)",
        "priority=10,ip,nw_dst=10.0.0.6 actions=conjunction(2,2/2)",
        "priority=10,ip,nw_dst=10.0.0.7 actions=conjunction(2,2/2)",
        "priority=10,conj_id=1 actions=output:2",
        "priority=10,conj_id=2 actions=output:3"],
     [((1, 4, 80, 6), 8), ((2, 5, 80, 6), 8), ((2, 6, 80, 6), 9), ((3, 7, 80, 6), 9), ((1, 6, 80, 6), None),
      ((3, 4, 80, 6), None)]),
    ("a partial match falls through, to a lower conjunction too", [
        "priority=100,ip,nw_src=10.0.0.1 actions=conjunction(1,1/2)",
        "priority=100,ip,nw_dst=10.0.0.3 actions=conjunction(1,2/2)",
        "priority=80,ip,nw_src=10.0.0.1 actions=conjunction(2,1/2)",
        "priority=80,ip,nw_dst=10.0.0.2 actions=conjunction(2,2/2)",
        "priority=1,conj_id=1 actions=output:2",
        "priority=1,conj_id=2 actions=output:3",
        "priority=50,ip,nw_src=10.0.0.5 actions=output:1"],
     [((1, 3, 80, 6), 5), ((1, 2, 80, 6), 6), ((1, 4, 80, 6), None), ((5, 3, 80, 6), 7)]),
    ("an ordinary flow above the conj_id flow wins", [
        "priority=100,ip,nw_src=10.0.0.1 actions=conjunction(1,1/2)",
        "priority=100,ip,nw_dst=10.0.0.2 actions=conjunction(1,2/2)",
        "priority=10,conj_id=1 actions=output:2",
        "priority=50,ip actions=output:3"],
     [((1, 2, 80, 6), 4), ((1, 3, 80, 6), 4)]),
    ("clauses below an ordinary flow never count", [
        "priority=40,ip,nw_src=10.0.0.1 actions=conjunction(1,1/2)",
        "priority=40,ip,nw_dst=10.0.0.2 actions=conjunction(1,2/2)",
        "priority=200,conj_id=1 actions=output:2",
        "priority=50,ip actions=output:3"],
     [((1, 2, 80, 6), 4)]),
    ("the conj_id flow between the clauses and an ordinary flow", [
        "priority=100,ip,nw_src=10.0.0.1 actions=conjunction(1,1/2)",
        "priority=100,ip,nw_dst=10.0.0.2 actions=conjunction(1,2/2)",
        "priority=60,conj_id=1 actions=output:2",
        "priority=50,ip actions=output:3"],
     [((1, 2, 80, 6), 3), ((1, 3, 80, 6), 4), ((9, 2, 80, 6), 4)]),
    ("an ordinary flow of the clauses' priority wins", [
        "priority=100,ip,nw_src=10.0.0.1 actions=conjunction(1,1/2)",
        "priority=100,ip,nw_dst=10.0.0.2 actions=conjunction(1,2/2)",
        "priority=200,conj_id=1 actions=output:2",
        "priority=100,tcp,tp_dst=80 actions=output:3"],
     [((1, 2, 80, 6), 4), ((1, 2, 443, 6), 3)]),
    ("one id at two priorities is two conjunctions", [
        "priority=100,ip,nw_src=10.0.0.1 actions=conjunction(1,1/2)",
        "priority=90,ip,nw_dst=10.0.0.2 actions=conjunction(1,2/2)",
        "priority=1,conj_id=1 actions=output:2"],
     [((1, 2, 80, 6), None)]),
    ("a flow under a clause flow of the same match: found, but not by the conj_id lookup (as OVS)", [
        "priority=100,ip,nw_src=10.0.0.1 actions=conjunction(1,1/2)",
        "priority=100,ip,nw_dst=10.0.0.3 actions=conjunction(1,2/2)",
        "priority=90,ip,nw_src=10.0.0.1 actions=output:2",
        "priority=5,ip actions=output:3"],
     [((1, 2, 80, 6), 3), ((1, 3, 80, 6), 4), ((2, 3, 80, 6), 4)]),
    ("... nor by a lower conjunction's conj_id lookup", [
        "priority=100,ip,nw_src=10.0.0.1 actions=conjunction(1,1/2)",
        "priority=100,ip,nw_dst=10.0.0.9 actions=conjunction(1,2/2)",
        "priority=90,ip,nw_src=10.0.0.1 actions=output:2",
        "priority=95,ip,nw_dst=10.0.0.2 actions=conjunction(2,1/2)",
        "priority=95,tcp,tp_dst=80 actions=conjunction(2,2/2)",
        "priority=10,conj_id=2 actions=output:3"],
     [((1, 2, 80, 6), 6), ((1, 2, 443, 6), 3), ((1, 9, 80, 6), 3), ((4, 2, 80, 6), 6)]),
    ("a flow per clause: one flow with both clauses is not enough alone (as OVS)", [
        "priority=100,ip,nw_src=10.0.0.1 actions=conjunction(1,1/2),conjunction(1,2/2)",
        "priority=100,conj_id=1 actions=output:2",
        "priority=100,tcp,tp_dst=443 actions=conjunction(7,1/2)",
        "priority=1 actions=output:3"],
     [((1, 2, 80, 6), 4), ((1, 2, 443, 6), 2), ((2, 2, 443, 6), 4)]),
    ("clauses of another number of clauses do not add up", [
        "priority=100,ip,nw_src=10.0.0.1 actions=conjunction(1,1/2)",
        "priority=100,ip,nw_dst=10.0.0.2 actions=conjunction(1,2/3)",
        "priority=100,conj_id=1 actions=output:2",
        "priority=1 actions=output:3"],
     [((1, 2, 80, 6), 4)]),
    ("a conj_id flow that does not match is no conjunction", [
        "priority=100,ip,nw_src=10.0.0.1 actions=conjunction(1,1/2)",
        "priority=100,ip,nw_dst=10.0.0.2 actions=conjunction(1,2/2)",
        "priority=100,conj_id=1,tcp actions=output:2",
        "priority=5,ip actions=output:3"],
     [((1, 2, 80, 6), 3), ((1, 2, 80, 17), 4)]),
]


def translate_example(lines: list[str]) -> tuple[TableSet, list[Flow]]:
    tables = FlowTables(4)
    for f in parse_flows(lines):
        tables.add(f)
    return tables.compile(), parse_flows(lines)


@pytest.mark.parametrize(("name", "lines", "packets"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_examples(name: str, lines: list[str], packets: list) -> None:
    """Each packet finds the flow the example says (a clause flow never), and the reference model agrees."""
    ts, flow_list = translate_example(lines)
    ref = RefTables(4)
    for f in flow_list:
        ref.add(f)
    for (src, dst, dport, proto), want in packets:
        key = key_of(packet(src, dst, dport, proto))
        res = translate(ts, key, FLAGS, UpcallCookies())
        assert found(ts, res) == want, (name, src, dst, dport, proto)
        ref_flow = ref.lookup(0, [key[w] if w != K.W_IN_PORT else 0 for w in range(K.KEY_WORDS)])
        assert (ref_flow.cookie if ref_flow else None) == want
        for rank in res.ranks:
            assert not ts.flows[rank].instructions.conjunctions()


# ---------------------------------------------------------------- the same examples in a real ovs-vswitchd

@pytest.fixture(scope="module")
def real_ovs() -> Iterator[RealOvs]:
    """A real ovs-vswitchd with bridge ``brc`` (userspace datapath) and internal port ``pc1`` (OpenFlow 1)."""
    with tempfile.TemporaryDirectory(prefix="realovsconj-") as rundir:
        ovs = RealOvs(rundir)
        try:
            ovs.start()
            ovs.add_bridge("brc")
            ovs.vsctl("add-port", "brc", "pc1", "--", "set", "Interface", "pc1", "type=internal", "ofport_request=1")
            yield ovs
        finally:
            ovs.stop()


def ovs_tool(ovs: RealOvs, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(list(args), input=stdin, capture_output=True, text=True, env=ovs.env, timeout=30)
    assert proc.returncode == 0, (args, proc.stderr)
    return proc.stdout


@pytest.mark.integration
@pytest.mark.parametrize(("name", "lines", "packets"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_real_ovs_finds_the_same_flows(real_ovs: RealOvs, name: str, lines: list[str], packets: list) -> None:
    """ovs-vswitchd, given the same flows (each with its line number as cookie), traces each packet to the
    same flow; ovs-ofctl prints each conjunction action as ``format_nicira`` does."""
    ovs_tool(real_ovs, "ovs-ofctl", "del-flows", "brc")
    ovs_tool(real_ovs, "ovs-ofctl", "add-flows", "brc", "-",
             stdin="".join(f"cookie={i},{line.replace(' actions=', ',actions=')}\n" for i, line in enumerate(lines, 1)))
    dump = ovs_tool(real_ovs, "ovs-ofctl", "dump-flows", "brc")
    for f in parse_flows(lines):
        for c in f.instructions.conjunctions():
            assert format_nicira(c) in dump, dump
    for (src, dst, dport, proto), want in packets:
        l4 = "tcp" if proto == 6 else "udp"
        spec = (f"in_port=1,{l4},nw_src=10.0.0.{src},nw_dst=10.0.0.{dst},{l4}_src=4000,{l4}_dst={dport},"
                "nw_ttl=64")
        trace = ovs_tool(real_ovs, "ovs-appctl", "ofproto/trace", "brc", spec)
        line = next(ln for ln in trace.splitlines() if ln.startswith(" 0. "))
        m = re.search(r", cookie (0x[0-9a-f]+)$", line)
        got = int(m[1], 16) if m else None
        assert got == want, (name, spec, trace)


# ---------------------------------------------------------------- conjunctive tables drawn by hypothesis

HOSTS = [ip(f"10.0.0.{i}") for i in (1, 2, 3, 4)]
#: clause matches (besides ip): one or two of these
CLAUSE_FIELDS = [
    ("ipv4_src", st.sampled_from(HOSTS + [(HOSTS[0], 0xFFFFFFFE), (HOSTS[2], 0xFFFFFFFC)])),
    ("ipv4_dst", st.sampled_from(HOSTS + [(HOSTS[1], 0xFFFFFFFE)])),
    ("ip_proto", st.sampled_from([6, 17])),
    ("in_port", st.integers(0, N_PORTS - 1)),
    ("reg0", st.sampled_from([0, 1, 5])),
]


@st.composite
def clause_match(draw: st.DrawFn) -> Match:
    fields = dict(draw(st.lists(st.sampled_from(CLAUSE_FIELDS), min_size=1, max_size=2, unique_by=lambda t: t[0])))
    return Match(eth_type=0x0800, **{name: draw(strat) for name, strat in fields.items()})


@st.composite
def conjunctive_table(draw: st.DrawFn, table: int = 0, actions: st.SearchStrategy | None = None) -> list[Flow]:
    """Conjunctions (ids 1..3, 2 or 3 clauses, priorities 10..30; one id may come at two priorities), 1..3
    flows per clause, some flows in two conjunctions of their priority (or two clauses of one), conj_id flows
    (of any priority, some matching more than conj_id) and ordinary flows in between."""
    acts = actions if actions is not None else st.tuples(st.builds(Output, st.integers(0, N_PORTS - 1)))
    conjs: dict[tuple[int, int], int] = {}     # (priority, id) -> clauses
    for _ in range(draw(st.integers(1, 3))):
        key = (draw(st.sampled_from([10, 20, 30])), draw(st.integers(1, 3)))
        conjs.setdefault(key, draw(st.integers(2, 3)))
    out: list[Flow] = []
    for (prio, cid), n in conjs.items():
        for k in range(1, n + 1):
            for _ in range(draw(st.integers(1, 3))):
                mine = [Conjunction(cid, k, n)]
                others = [(c, m) for (p, c), m in conjs.items() if p == prio]   # this one too: another clause
                if others and draw(st.integers(0, 3)) == 0:
                    c, m = draw(st.sampled_from(others))
                    mine.append(Conjunction(c, draw(st.integers(1, m)), m))
                out.append(Flow(table, prio, draw(clause_match()), Instructions(apply=tuple(mine))))
    for _prio, cid in conjs:
        if draw(st.integers(0, 4)):
            extra = draw(st.sampled_from([{}, {}, {"eth_type": 0x0800, "ip_proto": 6}, {"in_port": 1}]))
            out.append(Flow(table, draw(st.sampled_from([5, 15, 25, 35])), Match(conj_id=cid, **extra),
                            Instructions(apply=tuple(draw(acts)))))
    for _ in range(draw(st.integers(0, 3))):
        match = draw(st.one_of(clause_match(), st.just(Match())))
        out.append(Flow(table, draw(st.sampled_from([0, 10, 15, 20, 25])), match,
                        Instructions(apply=tuple(draw(acts)))))
    return draw(st.permutations(out))


@st.composite
def ip_frames(draw: st.DrawFn) -> tuple[bytes, int]:
    frame = ipv4_frame(MACS[1], MACS[0], b"", draw(st.sampled_from([6, 17])), draw(st.sampled_from(HOSTS)),
                       draw(st.sampled_from(HOSTS)), 64, 0, 4000, draw(st.sampled_from([80, 443])))
    return frame, draw(st.integers(0, N_PORTS - 1))


def _field_bits() -> list[int]:
    bits = [0] * K.KEY_WORDS
    for word, shift, width in K.FIELDS.values():
        for j in range(max(1, width // 64)):
            bits[word + j] |= ((1 << min(width, 64)) - 1) << (shift if width <= 64 else 0)
    return bits


KEY_FIELD_BITS = _field_bits()


@settings(SETTINGS, max_examples=300)
@given(conjunctive_table(), st.lists(ip_frames(), min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_megaflow_mask_is_sound(flow_list: list[Flow], packets: list, rnd: random.Random) -> None:
    """Every key that agrees with a translated key on its megaflow mask, whatever its other bits and
    whichever of the drawn packets it is, gets the same program; the flow found is the reference's."""
    tables, ref = FlowTables(2), RefTables(2)
    for f in flow_list:
        tables.add(f)
        ref.add(f)
    ts = tables.compile()
    keys = [key_of(frame, port) for frame, port in packets]
    for key in keys:
        res = translate(ts, key, FLAGS, UpcallCookies())
        want = ref.lookup(0, list(key))
        got = ts.flows[res.ranks[0]] if res.ranks else None
        assert ((got.priority, got.match) if got else None) == ((want.priority, want.match) if want else None)
        mask = res.mask
        for _ in range(6):
            other = [(k & m) | (rnd.getrandbits(64) & ~m & b) for k, m, b in zip(key, mask, KEY_FIELD_BITS,
                                                                                  strict=True)]
            other[K.W_IN_PORT] = key[K.W_IN_PORT]
            assert translate(ts, other, FLAGS, UpcallCookies()).actions == res.actions
        for other in keys:
            if all((o ^ k) & m == 0 for o, k, m in zip(other, key, mask, strict=True)):
                assert translate(ts, other, FLAGS, UpcallCookies()).actions == res.actions


def forward(f: Flow) -> Flow:
    """``f`` with one resubmit at most, to a later table (the others made notes): no loops, no walk longer
    than the datapath credits (``xlate.upcall.MAX_RULES``) or with more packet-ins than its queue holds."""
    def fix(acts: tuple, allow: bool) -> tuple:
        out = []
        for a in acts:
            if isinstance(a, Resubmit):
                keep = allow and a.table is not None and a.table > f.table_id
                out.append(a if keep else Note())
                allow = allow and not keep
            elif isinstance(a, Clone):
                out.append(Clone(fix(a.actions, False)))
            else:
                out.append(a)
        return tuple(out)
    ins = f.instructions
    return Flow(f.table_id, f.priority, f.match, Instructions(fix(ins.apply, True), ins.clear, ins.write, ins.goto,
                                                              ins.metadata))


@st.composite
def conjunctive_pipeline(draw: st.DrawFn) -> list[Flow]:
    """Nicira pipelines (``tests.test_xlate_nicira``) over six tables, tables 0 and 2 conjunctive too, their
    conj_id flows running Nicira actions (register loads, outputs, a resubmit onwards ...)."""
    acts = st.lists(nicira_action(), min_size=1, max_size=3)
    out = draw(conjunctive_table(0, acts)) + draw(conjunctive_table(2, acts))
    # Nicira flows under the conjunctions in their tables (above them, they would hide them mostly)
    out += [Flow(f.table_id, f.priority if f.table_id not in (0, 2) else min(f.priority, 5), f.match, f.instructions)
            for f in draw(st.lists(nicira_flows(), max_size=8))]
    out += [Flow(0, 1, Match(), Instructions(apply=(Load.bits("reg0", draw(st.sampled_from([0, 1, 5]))),
                                                    Resubmit(None, 2))))]
    return draw(st.permutations([forward(f) for f in out]))


@settings(SETTINGS, max_examples=200)
@given(conjunctive_pipeline(), st.lists(st.one_of(ip_frames(), ip_frames(), ip_frames(),
                                                  st.tuples(nicira_frames(), st.integers(0, N_PORTS - 1))),
                                        min_size=1, max_size=12))
def test_conjunctive_pipelines_match_reference(flow_list: list[Flow], burst: list) -> None:
    """The datapath (translation, megaflow, EMC: three runs) and the reference model agree on every byte,
    packet-in, drop and counter; clause flows count nothing in either."""
    ref = RefTables(N_TABLES)
    with rig(n_tables=N_TABLES) as r:
        for f in flow_list:
            r.tables.add(f)
            ref.add(f)
        r.update()
        for now in (1, 1, 1):
            check_burst(r, ref, burst, now)
        r.sync()
        check_counters(r.tables, ref)
    for f in ref.flows:
        if f.instructions.conjunctions():
            assert f.packets == 0


@settings(SETTINGS, max_examples=120)
@given(conjunctive_table(), st.lists(ip_frames(), min_size=1, max_size=10), st.data())
def test_flow_mods_on_conjunctive_tables_revalidate(flow_list: list[Flow], burst: list, data: st.DataObject) -> None:
    """Flow-mods between bursts (a clause flow or conj_id flow added, deleted, its actions changed): the same
    frames, from megaflows made before, go where the reference model sends them now; counters agree."""
    ref = RefTables(N_TABLES)
    with rig(n_tables=N_TABLES) as r:
        for f in flow_list + [Flow(0, 0, Match(), Instructions(apply=(Output(3),)))]:
            apply_mod(r.tables, ref, ("add", f), 1, r)
        r.update()
        for now in range(1, 5):
            for _ in range(2):
                check_burst(r, ref, burst, now)
            for _ in range(data.draw(st.integers(1, 3))):
                existing = sorted(r.tables.flows(), key=lambda f: f.serial)
                kind = data.draw(st.sampled_from(["add", "delete", "modify"]))
                if kind == "add":
                    op: tuple = ("add", data.draw(st.sampled_from(data.draw(conjunctive_table()))))
                else:
                    f = data.draw(st.sampled_from(existing))
                    op = (("delete", 0, f.match, f.priority, True, OFPP_ANY, 0, 0) if kind == "delete" else
                          ("modify", 0, f.match, f.priority, True, 0, 0,
                           Instructions(apply=(Output(data.draw(st.integers(0, N_PORTS - 1))),)), False))
                apply_mod(r.tables, ref, op, now, r)
            r.update()
        r.sync()
        check_counters(r.tables, ref)


# ---------------------------------------------------------------- what a flow with conjunction may hold

def _ofp_conj(k: int, n: int, cid: int) -> bytes:
    return struct.pack("!HHIHBBI", 0xFFFF, 16, 0x2320, 34, (k - 1) & 0xFF, n & 0xFF, cid)


def _ofp_output(port: int) -> bytes:
    return struct.pack("!HHIH6x", 0, 16, port, 0xFFFF)


def _ofp_note() -> bytes:
    return struct.pack("!HHIH6x", 0xFFFF, 16, 0x2320, 8)


def _ofp_clone(inner: bytes) -> bytes:
    return struct.pack("!HHIH6x", 0xFFFF, 16 + len(inner), 0x2320, 42) + inner


def _ofp_actions(kind: int, acts: bytes) -> bytes:
    return struct.pack("!HH4x", kind, 8 + len(acts)) + acts


C12 = Conjunction(1, 1, 2)
#: (name, instructions, the same instructions as OpenFlow 1.3 bytes, the FlowError code or None)
RULES = [
    ("conjunction and output", Instructions(apply=(C12, Output(1))),
     _ofp_actions(4, _ofp_conj(1, 2, 1) + _ofp_output(1)), "bad_conjunction"),
    ("output and conjunction", Instructions(apply=(Output(1), C12)),
     _ofp_actions(4, _ofp_output(1) + _ofp_conj(1, 2, 1)), "bad_conjunction"),
    ("conjunction and dec_ttl", Instructions(apply=(C12, DecTtl())),
     _ofp_actions(4, _ofp_conj(1, 2, 1) + struct.pack("!HH4x", 24, 8)), "bad_conjunction"),
    ("conjunction and goto_table", Instructions(apply=(C12,), goto=3),
     _ofp_actions(4, _ofp_conj(1, 2, 1)) + struct.pack("!HHB3x", 1, 8, 3), "bad_conjunction"),
    ("conjunction and write_metadata", Instructions(apply=(C12,), metadata=(1, 1)),
     _ofp_actions(4, _ofp_conj(1, 2, 1)) + struct.pack("!HH4xQQ", 2, 24, 1, 1), "bad_conjunction"),
    ("conjunction and write_actions", Instructions(apply=(C12,), write=(Output(1),)),
     _ofp_actions(4, _ofp_conj(1, 2, 1)) + _ofp_actions(3, _ofp_output(1)), "bad_conjunction"),
    ("conjunction and clear_actions", Instructions(apply=(C12,), clear=True),
     _ofp_actions(4, _ofp_conj(1, 2, 1)) + struct.pack("!HH4x", 5, 8), "bad_conjunction"),
    ("one clause", Instructions(apply=(Conjunction(1, 1, 1),)), _ofp_actions(4, _ofp_conj(1, 1, 1)),
     "bad_conjunction"),
    ("clause 3 of 2", Instructions(apply=(Conjunction(1, 3, 2),)), _ofp_actions(4, _ofp_conj(3, 2, 1)),
     "bad_conjunction"),
    ("65 clauses", Instructions(apply=(Conjunction(1, 1, 65),)), _ofp_actions(4, _ofp_conj(1, 65, 1)),
     "bad_conjunction"),
    ("conjunction in the action set", Instructions(write=(C12,)), _ofp_actions(3, _ofp_conj(1, 2, 1)),
     "unsupported_order"),
    ("notes and conjunctions", Instructions(apply=(Note(b"\0" * 6), C12, Conjunction(2, 2, 2), Note(b"\0" * 6))),
     _ofp_actions(4, _ofp_note() + _ofp_conj(1, 2, 1) + _ofp_conj(2, 2, 2) + _ofp_note()), None),
    ("clause 64 of 64, id 0", Instructions(apply=(Conjunction(0, 64, 64),)), _ofp_actions(4, _ofp_conj(64, 64, 0)),
     None),
    ("conjunction inside clone: not a clause", Instructions(apply=(Output(1), Clone((C12,)))),
     _ofp_actions(4, _ofp_output(1) + _ofp_clone(_ofp_conj(1, 2, 1))), None),
]
RULE_MATCH = Match(eth_type=0x0800, ipv4_src=ip("10.0.0.1"))


def our_error(ins: Instructions) -> tuple[int, int] | None:
    """The OpenFlow error (type, code) our tables answer a flow-mod with these instructions with, None if added;
    an error adds nothing."""
    tables = FlowTables(8)
    try:
        tables.add(Flow(0, 10, RULE_MATCH, ins))
    except FlowError as e:
        assert len(tables) == 0
        return FLOW_ERRORS[e.code]
    return None


@pytest.mark.parametrize(("name", "ins", "wire", "code"), RULES, ids=[r[0] for r in RULES])
def test_what_a_conjunctive_flow_may_hold(name: str, ins: Instructions, wire: bytes, code: str | None) -> None:
    assert our_error(ins) == (FLOW_ERRORS[code] if code else None)
    if code == "bad_conjunction":
        assert FLOW_ERRORS[code] == (0xFFFF, 15)   # NXBAC_BAD_CONJUNCTION: Nicira's experimenter error 15
    if code is None:
        tables = FlowTables(8)
        tables.add(Flow(0, 10, RULE_MATCH, ins))
        ts = tables.compile()   # inside clone, a conjunction is an action that does nothing: not a clause
        res = translate(ts, key_of(packet(1, 2)), FLAGS, UpcallCookies())
        assert bool(res.ranks) == (not ins.conjunctions())


def _flow_mod13(xid: int, instructions: bytes) -> bytes:
    oxm = struct.pack("!IH", 0x80000A02, 0x0800) + struct.pack("!II", 0x80001604, ip("10.0.0.1"))
    match = struct.pack("!HH", 1, 4 + len(oxm)) + oxm
    match += b"\0" * (-len(match) % 8)
    body = struct.pack("!QQBBHHHIIIH2x", 0, 0, 0, 0, 0, 0, 10, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    body += match + instructions
    return struct.pack("!BBHI", 4, 14, 8 + len(body), xid) + body


@pytest.mark.integration
def test_real_ovs_answers_the_same_errors(real_ovs: RealOvs) -> None:
    """The same flow-mods (OpenFlow 1.3, Nicira actions as OVS encodes them) sent to a real ovs-vswitchd get
    the error our tables' FlowError maps to (experimenter errors: type 0xffff, the Nicira id, the code), or
    none; the connection lives on (a barrier after each is answered)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(f"{real_ovs.rundir}/brc.mgmt")

    def recv() -> bytes:
        head = s.recv(8, socket.MSG_WAITALL)
        n = struct.unpack_from("!H", head, 2)[0]
        return head + s.recv(n - 8, socket.MSG_WAITALL)

    try:
        recv()                                        # the switch's hello
        s.sendall(struct.pack("!BBHI", 4, 0, 8, 1))   # ours: OpenFlow 1.3
        for i, (name, ins, wire, _code) in enumerate(RULES):
            s.sendall(_flow_mod13(100 + i, wire) + struct.pack("!BBHI", 4, 20, 8, 200 + i))
            msg = recv()
            theirs = None
            if msg[1] == 1:                           # OFPT_ERROR
                err_type, code = struct.unpack_from("!HH", msg, 8)
                if err_type == 0xFFFF:
                    assert struct.unpack_from("!I", msg, 12)[0] == 0x2320, name
                theirs = (err_type, code)
                msg = recv()
            assert msg[1] == 21 and struct.unpack_from("!I", msg, 4)[0] == 200 + i, name   # the barrier reply
            assert theirs == our_error(ins), name
    finally:
        s.close()


def test_bad_conjunction_in_openflow_10_is_ovs_s_vendor_error() -> None:
    """In OpenFlow 1.0 the error is Nicira's vendor error (NXET_VENDOR, type 2 code 526): the bytes a real
    ovs-vswitchd 3.1 sent for a 1.0 flow-mod with conjunction and output (xid 7), up to the request's copy."""
    sent: list[Msg] = []
    OfConnection.error(SimpleNamespace(send=sent.append), OFP10, 7, *FLOW_ERRORS["bad_conjunction"], b"")
    assert encode(sent[0])[4:20] == bytes.fromhex("00000007b0c20000000023200002020e")


def test_conjunction_text_is_ovs_ofctl_s() -> None:
    """Every conjunction action of the OVN fixture's flows (what ovs-ofctl printed) reads back to the same text."""
    texts = []
    for path in sorted(pathlib.Path(__file__).parent.glob("fixtures/ovn-23.03-flows/flows-*.txt")):
        texts += re.findall(r"conjunction\(\d+,\d+/\d+\)", path.read_text())
    assert len(texts) == 10   # the fixture's README counts them
    for text in texts:
        cid, k, n = map(int, re.findall(r"\d+", text))
        assert format_nicira(Conjunction(cid, k, n)) == text


# ---------------------------------------------------------------- through BridgeFlows (what the agent uses)

def test_bridge_flows_count_the_conj_id_flow_and_trace_it() -> None:
    """The man page's example in a bridge: frames that satisfy the conjunction go out of OpenFlow port 2 and
    count in the conj_id flow only (its table's lookups and matches too); ofproto/trace shows the conj_id flow
    as OVS does (`` 0. conj_id=1234, priority 32768, cookie 0x1``)."""
    with rig() as r:
        ports = {f"p{i}": SimpleNamespace(ofport=i + 1, port_no=i, name=f"p{i}") for i in range(N_PORTS)}
        flows = BridgeFlows(SimpleNamespace(dp=r.dp, ports=ports, name="brc"), 8)
        for f in parse_flows(EXAMPLES[0][1]):
            flows.tables.add(f)
        flows.push()
        got = r.run([(packet(1, 2), 0)] * 3 + [(packet(2, 2), 0)], now=1)
        assert {p: len(v) for p, v in got.outputs.items()} == {0: 0, 1: 3, 2: 0, 3: 0}
        r.sync()
        counts = {s.flow.cookie: s.packets for s in flows.tables.stats(now=1)}
        assert counts == {1: 3, **dict.fromkeys(range(2, 10), 0)}
        assert flows.tables.table_stats()[0] == (0, 9, 4, 3)
        trace = flows.trace("in_port=1,tcp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_dst=80").splitlines()
        assert " 0. conj_id=1234, priority 32768, cookie 0x1" in trace and "Datapath actions: 2" in trace, trace
        trace = flows.trace("in_port=1,tcp,nw_src=10.0.0.1,nw_dst=10.0.0.3,tp_dst=80").splitlines()
        assert " 0. No match." in trace, trace
