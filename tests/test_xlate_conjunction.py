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

import random
import re
import socket
import subprocess
import tempfile
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpif import key as K
from dpif.extract_ref import extract
from ofproto.actions import format_nicira
from ofproto.rules import (
    Clone,
    Conjunction,
    Flow,
    Instructions,
    Load,
    Match,
    Note,
    Output,
    Resubmit,
)
from ofproto.tables import FlowTables, TableSet
from tests.test_bridge_identity import RealOvs
from tests.test_xlate import SETTINGS, check_burst, check_counters, rig
from tests.test_xlate_nicira import MACS, N_TABLES, ipv4_frame, nicira_action
from tests.test_xlate_nicira import flows as nicira_flows
from tests.test_xlate_nicira import frames as nicira_frames
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
    flows per clause, some flows in two conjunctions of their priority, conj_id flows (of any priority,
    some matching more than conj_id) and ordinary flows in between."""
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
                others = [(c, m) for (p, c), m in conjs.items() if p == prio and c != cid]
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
