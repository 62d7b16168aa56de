"""``learn``, ``ct`` and ``ct_clear`` through the translator and the real datapath, against the reference model
(``xlate.reference``): learned flows appear in the tables and forward later traffic, a translation that learned
is never cached (every packet learns again), ``delete_learned`` takes the learned flows with the learning flow
(deleted or expired), ``ct`` drops with the named reason ``conntrack_unavailable`` (and ``ofproto/trace``'s
recorder says so), ``ct_clear`` zeroes the ct fields later lookups see.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpif import actions as A
from dpif import key as K
from dpif.extract_ref import extract
from ofproto.rules import (
    OFPRR_HARD_TIMEOUT,
    Ct,
    CtClear,
    FinTimeout,
    Flow,
    Instructions,
    Learn,
    LearnSpec,
    Load,
    Match,
    Nat,
    Output,
    Resubmit,
)
from ofproto.tables import FlowTables
from tests.netutil import send_frames, unique
from tests.test_xlate import SETTINGS, Rig, check_burst, rig
from tests.test_xlate_nicira import IP4, MACS, ipv4_frame
from xlate.ctlearn import FinHit
from xlate.reference import RefTables
from xlate.translate import BaseRecorder, UpcallCookies, translate

N_TABLES = 4
COOKIE = 0x5E8907A2

#: OVN's affinity learn, made smaller: remember the client's address, answer its replies to the port it came in
LEARN = Learn(table=2, priority=7, cookie=COOKIE, delete_learned=True, specs=(
    LearnSpec("match", 16, None, 0, 0x800, "eth_type", 0),
    LearnSpec("match", 8, None, 0, 6, "nw_proto", 0),
    LearnSpec("match", 32, "ip_src", 0, 0, "ip_dst", 0),
    LearnSpec("match", 16, "tcp_src", 0, 0, "tcp_dst", 0),
    LearnSpec("load", 1, None, 0, 1, "reg10", 7),
    LearnSpec("output", 16, "in_port"),
))
LEARNER = Flow(0, 10, Match(in_port=0, eth_type=0x800, ip_proto=6), Instructions(apply=(LEARN, Output(2))),
               cookie=9)
REPLY_PATH = Flow(0, 5, Match(in_port=2), Instructions(apply=(Resubmit(None, 2),)))


def tcp_frame(ip_src: int, ip_dst: int, sport: int, dport: int) -> bytes:
    return ipv4_frame(MACS[1], MACS[0], b"", 6, ip_src, ip_dst, 64, 0, sport, dport)


def take_learned(r: Rig, now: int) -> int:
    """What the agent does with the flows the datapath learned for its bridge: into the tables, republished."""
    changed = 0
    while r.dp.learned:
        got = r.dp.learned.popleft()
        if isinstance(got, FinHit):
            r.tables.fin_timeout(got.uid, got.idle_timeout, got.hard_timeout)
            continue
        _flow, ch = r.tables.learn(got.flow, got.owner, got.delete_learned, now)
        changed += ch
    if changed:
        r.update()
    return changed


def load(r: Rig, ref: RefTables, flows: list[Flow]) -> None:
    for f in flows:
        r.tables.add(f)
        ref.add(f)
    r.update()


def test_learned_flows_forward_replies_and_match_the_reference() -> None:
    ref = RefTables(N_TABLES)
    request = tcp_frame(IP4[0], IP4[1], 4000, 80)
    reply = tcp_frame(IP4[1], IP4[0], 80, 4000)
    other_reply = tcp_frame(IP4[1], IP4[0], 80, 4001)      # to a port nobody learned
    with rig(n_tables=N_TABLES) as r:
        load(r, ref, [LEARNER, REPLY_PATH])
        got = check_burst(r, ref, [(reply, 2)], 1)        # nothing learned yet: the resubmit finds nothing
        assert got.outputs[0] == [] and r.drop_counts() == {(2, "no_output"): 1}
        got = check_burst(r, ref, [(request, 0)], 1)
        assert got.outputs[2] == [request]
        assert take_learned(r, 1) == 1
        learned = list(r.tables.flows(2))
        assert len(learned) == 1 and learned[0].cookie == COOKIE and learned[0].priority == 7
        assert learned[0].match == Match(eth_type=0x800, ip_proto=6, ipv4_dst=IP4[0], tcp_dst=4000)
        assert learned[0].instructions.apply == (Load("reg10", 1 << 7, 1 << 7), Output(0))
        assert {(f.ident(), f.instructions) for f in ref.flows if f.table_id == 2} == {
            ((2, 7, learned[0].match), learned[0].instructions)}
        for _ in range(3):                                # megaflow, then EMC: the learned flow keeps forwarding
            got = check_burst(r, ref, [(reply, 2)], 2)
            assert got.outputs[0] == [reply]
        got = check_burst(r, ref, [(other_reply, 2)], 2)
        assert got.outputs[0] == []
        # every request learns again (never cached); the same flow again changes nothing
        before = r.dp.upcalls.counters["learn_not_cached"]
        for _ in range(3):
            got = check_burst(r, ref, [(request, 0)], 3)
            assert got.outputs[2] == [request]
            assert take_learned(r, 3) == 0
        assert r.dp.upcalls.counters["learn_not_cached"] == before + 3
        r.sync()
        stats = {s.flow.table_id: s.packets for s in r.tables.stats()}
        assert stats[2] == 3                              # the three replies that took the learned flow
        # delete_learned: the learning flow goes, the learned one with it
        gone = r.tables.delete(0, LEARNER.match, LEARNER.priority, strict=True)
        ref.delete(0, LEARNER.match, LEARNER.priority, True, 0xFFFFFFFF, 0, 0)
        assert [s.flow.table_id for s in gone] == [0, 2]
        r.update()
        assert list(r.tables.flows(2)) == [] and not [f for f in ref.flows if f.table_id == 2]
        check_burst(r, ref, [(reply, 2)], 4)
        assert r.drop_counts()[(2, "no_output")] == 3


def test_a_learner_that_expires_takes_its_learned_flows() -> None:
    tables = FlowTables(N_TABLES)
    learner = Flow(0, 10, LEARNER.match, LEARNER.instructions, hard_timeout=5)
    kept = Learn(table=3, specs=(LearnSpec("match", 16, None, 0, 0x800, "eth_type", 0),     # no delete_learned
                                 LearnSpec("match", 32, "ip_src", 0, 0, "ip_src", 0)))
    other = Flow(0, 11, LEARNER.match, Instructions(apply=(kept,)), hard_timeout=5)
    tables.add(learner)
    tables.add(other)
    ts = tables.compile()
    key = [int(w) for w in extract(tcp_frame(IP4[0], IP4[1], 4000, 80), 0)[0]]
    res = translate(ts, key, np.zeros(4, dtype=np.int64), UpcallCookies())
    assert [lr.flow.table_id for lr in res.learned] == [3]           # priority 11 wins
    tables.learn(res.learned[0].flow, res.learned[0].owner, res.learned[0].delete_learned, 0)
    ts = tables.compile()
    tables.delete(0, LEARNER.match, 11, strict=True)
    tables.add(learner)
    res = translate(tables.compile(), key, np.zeros(4, dtype=np.int64), UpcallCookies())
    (lr,) = res.learned
    assert lr.delete_learned and lr.owner == next(iter(tables.flows(0))).uid
    tables.learn(lr.flow, lr.owner, lr.delete_learned, 1)
    assert len(list(tables.flows(2))) == 1 and len(list(tables.flows(3))) == 1
    gone = tables.expire(6)
    assert sorted((s.flow.table_id, reason) for s, reason in gone) == [(0, OFPRR_HARD_TIMEOUT), (2, 2)]
    assert list(tables.flows(2)) == [] and len(list(tables.flows(3))) == 1   # the one without delete_learned stays


class Notes(BaseRecorder):
    """A recorder that keeps the trace's notes."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def table(self, table_id: int, flow: object) -> None:
        self.lines.append(f"table {table_id}")

    def note(self, text: str) -> None:
        self.lines.append(text)


def test_ct_drops_the_packet_with_a_named_reason() -> None:
    """OVN's ``ct(table=N,zone=reg13,nat)`` after a resubmit: the walk ends there, nothing after it runs, the
    drop is counted as ``conntrack_unavailable`` by ingress port, in the datapath and the model alike; an output
    before ct still goes out."""
    ct = Ct(commit=True, zone=("reg13", 0, 16), table=3, actions=(Nat("src"),))
    flows = [Flow(0, 5, Match(in_port=0), Instructions(apply=(Load.bits("reg13", 7), Resubmit(None, 1), Output(3)))),
             Flow(1, 5, Match(eth_type=0x800), Instructions(apply=(ct, Output(2)))),
             Flow(0, 5, Match(in_port=1, eth_type=0x800), Instructions(apply=(Output(2), ct))),
             Flow(3, 5, Match(), Instructions(apply=(Output(3),)))]
    ref = RefTables(N_TABLES)
    frame = tcp_frame(IP4[0], IP4[1], 4000, 80)
    with rig(n_tables=N_TABLES) as r:
        load(r, ref, flows)
        for _ in range(3):
            got = check_burst(r, ref, [(frame, 0), (frame, 1)], 1)
            assert got.outputs[2] == [frame] and got.outputs[3] == []     # only port 1's output before its ct
        assert r.drop_counts() == {(0, "conntrack_unavailable"): 3, (1, "conntrack_unavailable"): 3}
    tables = FlowTables(N_TABLES)
    for f in flows:
        tables.add(f)
    rec = Notes()
    key = [int(w) for w in extract(frame, 0)[0]]
    res = translate(tables.compile(), key, np.zeros(4, dtype=np.int64), UpcallCookies(), rec)
    assert res.drop_reason.startswith("conntrack_unavailable")
    assert res.actions[-3:] == A.drop(A.DR_CONNTRACK)
    assert any("conntrack_unavailable" in line for line in rec.lines), rec.lines
    assert "table 3" not in rec.lines                                   # no recirculation


def test_ct_clear_zeroes_what_later_lookups_see() -> None:
    """A frame whose key carries ct_state / ct_mark (as after conntrack) matches them before ``ct_clear`` and
    sees them as 0 after it."""
    tables = FlowTables(N_TABLES)
    tables.add(Flow(0, 5, Match(), Instructions(apply=(Resubmit(None, 1), CtClear(), Resubmit(None, 1)))))
    tables.add(Flow(1, 9, Match(ct_mark=5, ct_state=(0x20, 0x20)), Instructions(apply=(Output(1),))))
    tables.add(Flow(1, 5, Match(ct_mark=0, ct_state=(0, 0x20)), Instructions(apply=(Output(2),))))
    key = [int(w) for w in extract(tcp_frame(IP4[0], IP4[1], 4000, 80), 0)[0]]
    key[K.W_CT_MARK] = 5
    key[K.W_CT_STATE] |= 0x21
    res = translate(tables.compile(), key, np.zeros(4, dtype=np.int64), UpcallCookies())
    assert res.actions == A.output(1) + A.output(2)
    assert res.mask[K.W_CT_MARK] == 0xFFFFFFFF


def test_learn_of_an_ipv4_match_from_an_address_in_the_trace() -> None:
    """The learned match holds the frame's value (an address, here) exactly."""
    tables = FlowTables(N_TABLES)
    tables.add(LEARNER)
    rec = Notes()
    key = [int(w) for w in extract(tcp_frame(IP4[2], IP4[1], 5000, 80), 0)[0]]
    res = translate(tables.compile(), key, np.zeros(4, dtype=np.int64), UpcallCookies(), rec)
    (lr,) = res.learned
    assert lr.flow.match.get("ipv4_dst") == (int(ipaddress.IPv4Address("192.168.0.1")), 0xFFFFFFFF)
    assert any("learned a flow in table 2" in line for line in rec.lines), rec.lines
    assert res.mask[K.W_NW_SRC] == 0xFFFFFFFF                         # the copied source bits are in the mask


# ---------------------------------------------------------------- differential: random learners, ct, ct_clear
_SPEC_POOL = [
    LearnSpec("match", 32, "ip_src", 0, 0, "ip_dst", 0),
    LearnSpec("match", 32, "ip_dst", 0, 0, "ip_src", 0),
    LearnSpec("match", 16, "tcp_src", 0, 0, "tcp_dst", 0),
    LearnSpec("match", 8, "tcp_dst", 0, 0, "tcp_src", 8),
    LearnSpec("load", 32, "ip_src", 0, 0, "reg1", 0),
    LearnSpec("load", 4, None, 0, 9, "reg2", 4),
    LearnSpec("output", 16, "in_port"),
]


@st.composite
def learner_flows(draw: st.DrawFn) -> list[Flow]:
    """Table 0: TCP learners (into table 2 or 3), a ct flow, a ct_clear-and-resubmit flow, a default to table 2;
    tables 2 / 3: flows reading reg1 / reg2 / ct_mark, so what was learned shows in the outputs."""
    out = []
    for prio in draw(st.lists(st.integers(10, 14), min_size=1, max_size=3, unique=True)):
        picked = draw(st.lists(st.sampled_from(_SPEC_POOL), min_size=1, max_size=4, unique=True))
        specs = (LearnSpec("match", 16, None, 0, 0x800, "eth_type", 0),
                 LearnSpec("match", 8, None, 0, 6, "nw_proto", 0), *picked)
        lr = Learn(table=draw(st.sampled_from([2, 3])), specs=specs, priority=draw(st.integers(1, 9)),
                   cookie=prio, delete_learned=draw(st.booleans()), idle_timeout=draw(st.sampled_from([0, 30])),
                   fin_idle_timeout=draw(st.sampled_from([0, 0, 5])), fin_hard_timeout=draw(st.sampled_from([0, 7])))
        port = draw(st.sampled_from([0, 1]))
        out.append(Flow(0, prio, Match(in_port=port, eth_type=0x800, ip_proto=6),
                        Instructions(apply=(lr, Output(draw(st.sampled_from([2, 3])))))))
    out.append(Flow(0, 20, Match(eth_type=0x800, ip_proto=17, in_port=draw(st.sampled_from([0, 1, 2]))),
                    Instructions(apply=(Output(3), Ct(commit=True, zone=("reg13", 0, 16), table=1)))))
    out.append(Flow(0, 15, Match(in_port=3), Instructions(apply=(CtClear(), Resubmit(None, 3)))))
    out.append(Flow(0, 16, Match(in_port=2, eth_type=0x800, ip_proto=6), hard_timeout=40,
                    instructions=Instructions(apply=(FinTimeout(3, 9), Resubmit(None, 2)))))
    out.append(Flow(0, 1, Match(), Instructions(apply=(Resubmit(None, 2),))))
    out.append(Flow(2, 0, Match(), Instructions(apply=(Resubmit(None, 3),))))
    out.append(Flow(3, 0, Match(reg2=(9 << 4, 0xF0)), Instructions(apply=(Output(0),))))
    return out


def _with_tcp_flags(frame: bytes, flags: int) -> bytes:
    """A TCP frame of ``ipv4_frame`` with other flags (nothing here reads its checksum)."""
    return frame[:47] + bytes([flags]) + frame[48:] if frame[23] == 6 else frame


def _frames() -> st.SearchStrategy[tuple[bytes, int]]:
    return st.tuples(st.builds(lambda p, s, d, sp, dp, fl: _with_tcp_flags(
                                   ipv4_frame(MACS[1], MACS[0], b"", p, s, d, 64, 0, sp, dp), fl),
                               st.sampled_from([6, 6, 17]), st.sampled_from(IP4), st.sampled_from(IP4),
                               st.sampled_from([80, 4000]), st.sampled_from([80, 4000]),
                               st.sampled_from([0x02, 0x10, 0x11, 0x04])),
                     st.integers(0, 3))


@settings(SETTINGS, max_examples=60)
@given(learner_flows(), st.lists(_frames(), min_size=1, max_size=10), st.data())
def test_random_learners_agree_with_the_reference(flow_list: list[Flow], frames_in: list, data: st.DataObject
                                                  ) -> None:
    """Frame after frame (one a burst, as learned flows go in between), the datapath with its agent's part and the
    model send the same bytes, count the same drops and end with the same tables; now and then a learner is
    deleted (and with delete_learned, what it learned)."""
    ref = RefTables(N_TABLES)
    with rig(n_tables=N_TABLES) as r:
        load(r, ref, flow_list)
        for i, fp in enumerate(frames_in):
            check_burst(r, ref, [fp], i)
            take_learned(r, i)
            if data.draw(st.integers(0, 5)) == 0:
                victim = data.draw(st.sampled_from([f for f in flow_list if f.table_id == 0]))
                r.tables.delete(0, victim.match, victim.priority, strict=True)
                ref.delete(0, victim.match, victim.priority, True, 0xFFFFFFFF, 0, 0)
                r.update()
        def contents(flows: Any) -> set:
            return {(f.table_id, f.priority, f.match, f.instructions, f.idle_timeout, f.hard_timeout) for f in flows}
        assert contents(r.tables.flows()) == contents(ref.flows)
        late = len(frames_in) + 8                 # past every cut-down timeout, before the long ones
        r.sync()
        r.tables.expire(late)
        ref.expire(late)
        assert contents(r.tables.flows()) == contents(ref.flows)


# ---------------------------------------------------------------- through the daemon, with the real ovs-ofctl
LEARN_TEXT = ("learn(table=2,fin_idle_timeout=5,priority=7,delete_learned,cookie=0x5e8907a2,eth_type=0x800,nw_proto=6,"
              "NXM_OF_IP_DST[]=NXM_OF_IP_SRC[],NXM_OF_TCP_DST[]=NXM_OF_TCP_SRC[],load:0x1->NXM_NX_REG10[7],"
              "output:NXM_OF_IN_PORT[])")


def _ofctl(sw: Any, *args: str) -> str:
    proc = subprocess.run(["ovs-ofctl", "--timeout=30", *args], capture_output=True, text=True, env=sw.env,
                          timeout=40)   # a loaded machine: the OVN file is 60 flows
    assert proc.returncode == 0, (args, proc.stderr)
    return proc.stdout


def _table2(sw: Any, br: str) -> list[str]:
    return [line for line in _ofctl(sw, "dump-flows", br, "table=2").splitlines() if "priority=" in line]


@pytest.mark.integration
def test_learn_and_ct_through_the_daemon(switch, net) -> None:  # noqa: ANN001
    """``ovs-ofctl -O OpenFlow15 add-flow`` of OVN's kind of learn flow; a TCP frame in makes the learned flow,
    which ``dump-flows`` shows as OVS would; a reply takes it; deleting the learning flow deletes it
    (delete_learned). A UDP frame reaching ``ct`` is dropped, counted as ``flow_conntrack_unavailable`` in
    ``coverage/show``, and ``ofproto/trace`` names the reason."""
    stem = unique("lrn")
    br = f"{stem}s"
    net.add_host(f"{stem}-na", f"{stem}a", "10.79.0.1/24", mac="02:00:00:00:79:01")
    net.add_host(f"{stem}-nb", f"{stem}b", "10.79.0.2/24", mac="02:00:00:00:79:02")
    switch.vsctl("add-br", br, "--", "add-port", br, f"{stem}a", "--", "set", "Interface", f"{stem}a",
                 "ofport_request=1", "--", "add-port", br, f"{stem}b", "--", "set", "Interface", f"{stem}b",
                 "ofport_request=2")
    learner = f"table=0,priority=10,tcp,in_port=1,actions={LEARN_TEXT},output:2"
    _ofctl(switch, "-O", "OpenFlow15", "add-flow", br, learner)
    _ofctl(switch, "-O", "OpenFlow15", "add-flow", br, "table=0,priority=5,in_port=2,actions=resubmit(,2)")
    _ofctl(switch, "-O", "OpenFlow15", "add-flow", br,
           "table=0,priority=20,udp,in_port=1,actions=ct(commit,table=3,zone=NXM_NX_REG13[0..15],nat)")
    dump = _ofctl(switch, "-O", "OpenFlow15", "dump-flows", br, "table=0")
    assert f"actions={LEARN_TEXT},output:2" in dump, dump
    assert "actions=ct(commit,table=3,zone=NXM_NX_REG13[0..15],nat)" in dump, dump
    a_mac, b_mac = 0x020000007901, 0x020000007902
    # to an address b does not have: its kernel stays quiet (no RST that would take the learned flow too)
    request = ipv4_frame(b_mac, a_mac, b"", 6, 0x0A4F0001, 0x0A4F0009, 64, 0, 4000, 80)
    reply = ipv4_frame(a_mac, b_mac, b"", 6, 0x0A4F0009, 0x0A4F0001, 64, 0, 80, 4000)
    send_frames(net, f"{stem}-na", "eth0", [request])
    switch.wait_for("the learned flow", lambda: len(_table2(switch, br)) == 1)
    (line,) = _table2(switch, br)
    assert "cookie=0x5e8907a2" in line and "priority=7,tcp,nw_dst=10.79.0.1,tp_dst=4000" in line, line
    assert line.endswith("actions=fin_timeout(idle_timeout=5),load:0x1->NXM_NX_REG10[7],output:1"), line
    up = switch.appctl("upcall/show").stdout
    assert re.search(r"not cached\s+: 1 \(the translation ran learn\)", up), up
    def packets() -> int:
        return int(re.search(r"n_packets=(\d+),", _table2(switch, br)[0]).group(1))   # type: ignore[union-attr]
    send_frames(net, f"{stem}-nb", "eth0", [reply])
    switch.wait_for("the reply counted on the learned flow", lambda: packets() == 1)
    _ofctl(switch, "--strict", "del-flows", br, "table=0,priority=10,tcp,in_port=1")
    assert _table2(switch, br) == []                          # delete_learned
    udp = ipv4_frame(b_mac, a_mac, b"", 17, 0x0A4F0001, 0x0A4F0002, 64, 0, 5000, 53)
    send_frames(net, f"{stem}-na", "eth0", [udp])

    def ct_drops() -> int:
        m = re.search(r"flow_conntrack_unavailable\s+total: (\d+)", switch.appctl("coverage/show").stdout)
        return int(m.group(1)) if m else 0
    switch.wait_for("the ct drop counted", lambda: ct_drops() == 1)
    trace = switch.appctl("ofproto/trace", br, "in_port=1,udp,nw_src=10.79.0.1,nw_dst=10.79.0.2").stdout
    assert "ct(commit,table=3,zone=NXM_NX_REG13[0..15],nat)" in trace, trace
    assert "Drop reason: conntrack_unavailable" in trace, trace


@pytest.mark.integration
def test_ovn_ct_and_learn_flows_load_and_dump_as_ovs_held_them(switch, tmp_path) -> None:  # noqa: ANN001
    """Every flow of the OVN fixture with a ct, learn or ct_clear (chassis by chassis, one bridge each), added
    with ``ovs-ofctl -O OpenFlow15 add-flows``, comes back from ``dump-flows`` as OVS 3.1 held it: the same
    matches, cookies and priorities, and the same action text."""
    from tests.ofctl_text import fixture, flow_lines
    for chassis in ("chA", "chB"):
        want = {fl for fl in flow_lines(fixture(f"flows-{chassis}.txt"))
                if any(k in fl.actions for k in ("ct(", "learn(", "ct_clear"))}
        assert len(want) > 40, chassis
        br = unique(f"ovn{chassis}")
        switch.vsctl("add-br", br)
        path = tmp_path / f"{chassis}.flows"
        path.write_text("".join(f"{','.join(sorted(fl.match))} actions={fl.actions}\n" for fl in want))
        _ofctl(switch, "-O", "OpenFlow15", "add-flows", br, str(path))
        got = {fl for fl in flow_lines(_ofctl(switch, "-O", "OpenFlow15", "dump-flows", br))
               if "priority=0" not in fl.match or fl.actions != "NORMAL"}
        assert got == want, (chassis, sorted(want - got)[:3], sorted(got - want)[:3])
