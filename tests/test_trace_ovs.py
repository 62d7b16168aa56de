"""``ovs-appctl ofproto/trace`` of pyvswitch against a real ovs-vswitchd 3.1 given the same flows and groups: the
pipeline section (``bridge(...)``, table lines with their match, the indented action lines, ``group:N``,
``-> using bucket N``, ``bucket N`` and the resubmits nested in buckets, ``-> ... is now ...`` details) equal line
for line, and the ``Datapath actions:`` line equal with OVS's datapath ports named by their OpenFlow numbers
(``tests/trace_text.py`` reduces both answers; it says what it leaves out and why).

* groups: every type (all, indirect, fast_failover, select by ``hash`` and by ``dp_hash``), buckets holding
  set_field / load / move / push / pop / output / resubmit and a nested group, buckets whose actions OVS runs as an
  action set (one output, set-fields first);
* the other actions' lines: OVS's ``>>`` warnings, output:reg, goto_table and the action set, write_actions /
  clear_actions, dec_ttl, exit, note, controller, VLAN push / pop, stack, clone, NORMAL / FLOOD; a patch port's walk
  into the peer bridge;
* the OVN fixture (``tests/fixtures/ovn-23.03-flows``, chassis A and B): every packet ``tests/test_ovn_fixture.py``
  traces, up to the first ``ct``: all equal (378 on A, 504 on B); each chassis' count is printed.

``KNOWN`` lists what stays different, each entry checked to still hold (an entry that no longer does fails).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests import ovn_fixture as fx
from tests.netutil import unique
from tests.switchutil import private_switch
from tests.test_bridge_identity import RealOvs
from tests.test_ovn_fixture import _load, _ovs_ports, _traces
from tests.trace_text import datapath_actions, pipeline

pytestmark = pytest.mark.integration

#: what stays different, and why (each checked by the test that meets it)
KNOWN = {
    "flood_down": "NORMAL's and FLOOD's datapath actions: OVS floods to a port taken down by mod-port too (the device "
                  "drops), pyvswitch skips it; and the order of the ports differs (OVS's follows its port hash). The "
                  "pipeline lines are equal; the datapath lines are compared as sets, differing by that port only",
    "controller_dp": "a packet-in's datapath action: OVS writes userspace(pid=...,controller(...,recirc_id=N,...)), "
                     "pyvswitch 'controller' (the pipeline lines are equal)",
    "select_scores": "a select group by hash: OVS prints each bucket's score ('-> bucket N: score S', its own hash "
                     "of the flow) and picks the highest; pyvswitch hashes otherwise and prints only the bucket it "
                     "uses, so the score lines are left out (tests/trace_text.py) and the tests' hash group has one "
                     "bucket (with several, the bucket chosen for a given flow may differ from OVS's)",
    "dp_hash": "a select group with selection_method=dp_hash (OVS 3.1's default method too): OVS computes the "
               "hash in the datapath and recirculates (hash(...),recirc(...)); its trace stops at the group ('-> no "
               "live bucket', the hash not known yet). pyvswitch hashes the flow while translating and goes on into "
               "the bucket: the sections are equal up to the group:N line",
}

GROUPS = """\
group_id=1,type=all,bucket=bucket_id:0,actions=set_field:00:00:00:00:00:aa->eth_dst,output:2,\
bucket=bucket_id:1,actions=resubmit(,1),bucket=bucket_id:2,actions=load:0x5->NXM_NX_REG0[],output:3
group_id=2,type=select,selection_method=hash,fields(ip_src,ip_dst),\
bucket=bucket_id:0,weight:100,actions=set_field:10.0.0.9->ip_dst,output:2
group_id=3,type=select,selection_method=dp_hash,bucket=bucket_id:0,weight:100,actions=output:2,\
bucket=bucket_id:1,weight:100,actions=output:3
group_id=4,type=indirect,bucket=bucket_id:0,actions=load:0x7->NXM_NX_REG3[0..3],group:1
group_id=5,type=fast_failover,bucket=bucket_id:0,watch_port:4,actions=output:4,\
bucket=bucket_id:1,watch_port:2,actions=output:2
group_id=6,type=all,bucket=bucket_id:0,actions=output:2,set_field:00:00:00:00:00:bb->eth_dst,\
bucket=bucket_id:1,actions=resubmit(,1),output:3,bucket=bucket_id:2,actions=resubmit(,1),resubmit(,2)
group_id=7,type=fast_failover,bucket=bucket_id:0,watch_port:2,actions=output:2
group_id=9,type=fast_failover,bucket=bucket_id:0,watch_port:4,actions=output:4
group_id=8,type=fast_failover,bucket=bucket_id:0,watch_group:9,actions=output:2,\
bucket=bucket_id:1,watch_port:3,actions=output:3
group_id=10,type=fast_failover,bucket=bucket_id:5,watch_port:4,actions=output:4
"""
FLOWS = """\
table=0,priority=10,udp,tp_dst=1,actions=group:1
table=0,priority=10,udp,tp_dst=2,actions=group:2
table=0,priority=10,udp,tp_dst=3,actions=group:3
table=0,priority=10,udp,tp_dst=4,actions=set_field:0x9->reg9,group:4,set_field:0x8->reg8
table=0,priority=10,udp,tp_dst=5,actions=group:5
table=0,priority=10,udp,tp_dst=6,actions=group:6
table=0,priority=10,udp,tp_dst=7,actions=resubmit(,3),group:7
table=0,priority=10,udp,tp_dst=8,actions=group:8
table=0,priority=10,udp,tp_dst=10,actions=group:10,output:3
table=0,priority=10,udp,tp_dst=20,actions=output:1
table=0,priority=10,udp,tp_dst=21,actions=output:9
table=0,priority=10,udp,tp_dst=22,actions=resubmit(,7)
table=0,priority=10,udp,tp_dst=23,actions=goto_table:4
table=0,priority=10,udp,tp_dst=24,actions=write_actions(output:2),goto_table:4
table=0,priority=10,udp,tp_dst=25,actions=dec_ttl,output:2
table=0,priority=10,udp,tp_dst=26,actions=set_field:2->reg0,exit,output:2
table=0,priority=10,udp,tp_dst=27,actions=note:01.02,output:2
table=0,priority=10,udp,tp_dst=28,actions=controller(userdata=01.02),CONTROLLER:100
table=0,priority=10,udp,tp_dst=29,actions=push_vlan:0x8100,set_field:4196->vlan_vid,output:2,pop_vlan,output:3
table=0,priority=10,udp,tp_dst=30,actions=output:NXM_NX_REG0[0..15],set_field:3->reg0,output:NXM_NX_REG0[0..15]
table=0,priority=10,udp,tp_dst=31,actions=resubmit(2,4)
table=0,priority=10,udp,tp_dst=32,actions=clear_actions,write_metadata:0x5/0xff,goto_table:5
table=0,priority=10,udp,tp_dst=33,actions=mod_nw_dst:10.0.0.7,mod_tp_dst:99,output:2
table=0,priority=10,udp,tp_dst=34,actions=NORMAL
table=0,priority=10,udp,tp_dst=35,actions=dec_ttl(5,6),push:NXM_OF_ETH_SRC[],pop:NXM_OF_ETH_DST[],output:in_port
table=0,priority=10,udp,tp_dst=36,actions=FLOOD
table=0,priority=10,udp,tp_dst=37,actions=clone(set_field:0x1->reg1,resubmit(,4)),output:3
table=0,priority=10,udp,tp_dst=38,actions=move:NXM_OF_ETH_SRC[0..15]->NXM_NX_REG0[16..31],output:2
table=0,priority=10,udp,tp_dst=39,actions=ct_clear,set_field:0x1/0x1->xxreg0,output:2
table=4,priority=1,actions=output:3
table=5,priority=1,metadata=0x5,actions=drop
table=1,priority=5,ip,actions=move:NXM_OF_IP_SRC[]->NXM_NX_REG1[],push:NXM_NX_REG1[],pop:NXM_NX_REG2[],resubmit(,2)
table=2,priority=5,reg2=0xa000001,actions=load:0x7->NXM_NX_REG3[0..3],resubmit(,3),output:3
table=2,priority=1,actions=drop
table=3,priority=5,reg3=0x7/0xf,actions=mod_dl_src:00:00:00:00:00:bb
table=3,priority=1,actions=group:5
"""
PACKET = "in_port=1,udp,nw_src=10.0.0.1,nw_dst=10.0.0.2,nw_ttl=64,udp_src=99,udp_dst={}"
STEM = unique("pvt")           # the bridges' names (the same in both switches; pyvswitch's LOCAL ports are host
BR, BP0, BP1 = f"{STEM}b", f"{STEM}x", f"{STEM}y"    # devices, so no name another test may use)
UP_PORTS = (1, 2, 3)           # port 4 is down (mod-port): fast_failover's first bucket watches it


def _ofctl(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(["ovs-ofctl", "--timeout=10", "-O", "OpenFlow15", *args], capture_output=True, text=True,
                          env=env, input=stdin, timeout=20)
    assert proc.returncode == 0, (args, proc.stderr)
    return proc.stdout


def _trace(env: dict[str, str], bridge: str, spec: str) -> str:
    proc = subprocess.run(["ovs-appctl", "--timeout=20", "ofproto/trace", bridge, spec], capture_output=True,
                          text=True, env=env, timeout=30)
    assert proc.returncode == 0, (spec, proc.stdout, proc.stderr)
    return proc.stdout


#: BP0 (internal ports 1, 3; patch port 2) and BP1 (patch port 2, internal port 1): the flows of each
PATCH_FLOWS = ("table=0,priority=10,in_port=1,actions=set_field:0x3->reg3,output:2,output:3\n",
               "table=0,priority=10,in_port=2,actions=set_field:0x7->reg2,resubmit(,1)\n"
               "table=1,priority=1,reg2=0x7,actions=mod_dl_dst:00:00:00:00:00:cc,output:1\n")


def _patch_bridges(vsctl, names: list[str], add_bridge) -> None:  # noqa: ANN001 - the two switches' calls
    """BP0 and BP1 joined by a patch port pair (OpenFlow port 2 on both), with internal ports ``names``."""
    add_bridge(BP0)
    add_bridge(BP1)
    vsctl("add-port", BP0, names[0], "--", "set", "Interface", names[0], "type=internal", "ofport_request=1",
          "--", "add-port", BP0, names[1], "--", "set", "Interface", names[1], "type=internal", "ofport_request=3",
          "--", "add-port", BP1, names[2], "--", "set", "Interface", names[2], "type=internal", "ofport_request=1",
          "--", "add-port", BP0, "pa", "--", "set", "Interface", "pa", "type=patch", "options:peer=pb",
          "ofport_request=2",
          "--", "add-port", BP1, "pb", "--", "set", "Interface", "pb", "type=patch", "options:peer=pa",
          "ofport_request=2")


def _ports_args(names: list[str]) -> list[str]:
    args: list[str] = []
    for i, name in enumerate(names, 1):
        args += ["--", "add-port", BR, name, "--", "set", "Interface", name, "type=internal",
                 f"ofport_request={i}"]
    return args


@dataclass
class Pair:
    """pyvswitch and OVS with the same bridge, ports, groups and flows."""

    ours: dict[str, str]
    theirs: dict[str, str]
    dp_to_of: dict[int, int]
    local_dp: int            # OVS's datapath port of the bridge's LOCAL port
    patch_dp: dict            # OVS's datapath ports of BP0 / BP1 as pyvswitch's trace names them (1, BP1:1)


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    """``BR`` with internal ports 1-4 (1-3 up, 4 taken down by ``mod-port``) in pyvswitch and in a real OVS,
    ``GROUPS`` and ``FLOWS`` in both."""
    stem = STEM
    names = [f"{stem}p{i}" for i in range(1, 5)]
    with private_switch(prefix="pvtrace-") as sw, tempfile.TemporaryDirectory(prefix="realovs-trace-") as rundir:
        real = RealOvs(rundir)
        try:
            real.start()
            real.add_bridge(BR)
            real.vsctl(*_ports_args([f"p{i}" for i in range(1, 5)])[1:])
            sw.vsctl("add-br", BR, *_ports_args(names))
            for i in UP_PORTS:
                real.run("ip", "netns", "exec", real.ns, "ip", "link", "set", f"p{i}", "up")
                subprocess.run(["ip", "link", "set", names[i - 1], "up"], check=True, timeout=10)
            _patch_bridges(real.vsctl, ["q1", "q3", "r1"], real.add_bridge)
            _patch_bridges(lambda *a: sw.vsctl(*a).stdout, [f"{stem}q1", f"{stem}q3", f"{stem}r1"],
                           lambda name: sw.vsctl("add-br", name))
            for env in (sw.env, real.env):
                _ofctl(env, "add-flows", BP0, "-", stdin=PATCH_FLOWS[0])
                _ofctl(env, "add-flows", BP1, "-", stdin=PATCH_FLOWS[1])
                _ofctl(env, "mod-port", BR, "4", "down")
                _ofctl(env, "add-groups", BR, "-", stdin=GROUPS)
                _ofctl(env, "add-flows", BR, "-", stdin=FLOWS)
            show = real.run("ovs-appctl", "dpif/show").stdout
            local = int(re.search(rf"{BR} 65534/(\d+)", show)[1])    # type: ignore[index]
            patch_dp = {**fx.dp_ports(show, BP0), **{dp: f"{BP1}:{of}" for dp, of in fx.dp_ports(show, BP1).items()}}
            yield Pair(sw.env, real.env, fx.dp_ports(show, BR), local, patch_dp)
        finally:
            real.stop()


def _both(pair: Pair, group: int) -> tuple[str, str]:
    spec = PACKET.format(group)
    return _trace(pair.theirs, BR, spec), _trace(pair.ours, BR, spec)


def _diff(theirs: list[str], ours: list[str]) -> str:
    return "\nOVS:\n" + "\n".join(theirs) + "\npyvswitch:\n" + "\n".join(ours)


GROUP_CASES = {"all": 1, "select-hash": 2, "indirect-nested": 4, "fast_failover": 5, "action-set-buckets": 6,
               "ff-after-resubmit": 7, "ff-watch-group": 8}


@pytest.mark.parametrize("group", list(GROUP_CASES.values()), ids=list(GROUP_CASES))
def test_group_traces_equal_real_ovs(pair: Pair, group: int) -> None:
    """The pipeline section and the datapath actions of a packet through each kind of group are OVS's, line for
    line: buckets, the resubmits and group nested in them (indented as OVS does), the ``is now`` details of
    move / pop, the bucket a select or fast_failover group uses."""
    theirs, ours = _both(pair, group)
    want, got = pipeline(theirs), pipeline(ours)
    assert any(ln.strip().startswith("bucket ") for ln in want), theirs   # the group ran a bucket in OVS
    if group == GROUP_CASES["select-hash"]:     # KNOWN["select_scores"] still holds: OVS scores, pyvswitch does not
        assert "select_scores" in KNOWN and ": score " in theirs and ": score " not in ours, (theirs, ours)
    assert got == want, _diff(want, got)
    assert datapath_actions(ours) == datapath_actions(theirs, pair.dp_to_of), (theirs, ours)


def test_fast_failover_without_a_live_bucket_as_ovs(pair: Pair) -> None:
    """A fast_failover group whose only bucket watches a down port: OVS's two lines (the bucket not live, no live
    bucket), no bucket run, the rest of the flow's actions go on."""
    theirs, ours = _both(pair, 10)
    want, got = pipeline(theirs), pipeline(ours)
    assert [ln.strip() for ln in want][-3:] == ["-> bucket 5: not live due to port 4", "-> no live bucket",
                                               "output:3"], theirs
    assert got == want, _diff(want, got)
    assert datapath_actions(ours) == datapath_actions(theirs, pair.dp_to_of)


def test_buckets_run_as_action_sets_as_in_ovs(pair: Pair) -> None:
    """A bucket's actions are an action set: set-fields before the output, one output (the last), a resubmit only
    when there is no output; what OVS drops from the bucket is neither traced nor run."""
    theirs, ours = _both(pair, 6)
    lines = [ln.strip() for ln in pipeline(ours)]
    first = lines.index("bucket 0")
    assert lines[first + 1:first + 3] == ["set_field:00:00:00:00:00:bb->eth_dst", "output:2"], lines
    second = lines.index("bucket 1")
    assert lines[second + 1:second + 2] == ["output:3"] and "bucket 2" in lines, lines
    assert datapath_actions(ours) == datapath_actions(theirs, pair.dp_to_of)


def test_dp_hash_select_is_known_to_differ_after_the_group_line(pair: Pair) -> None:
    """``KNOWN['dp_hash']``: OVS recirculates for the hash, pyvswitch selects while translating; the sections are
    equal up to ``group:3`` and OVS still recirculates (else the entry must go)."""
    theirs, ours = _both(pair, 3)
    want, got = pipeline(theirs), pipeline(ours)
    cut = next(i for i, ln in enumerate(want) if ln.strip() == "group:3") + 1
    assert got[:cut] == want[:cut], _diff(want, got)
    assert datapath_actions(theirs).startswith("hash("), f"OVS no longer recirculates: drop KNOWN['dp_hash']\n{theirs}"
    assert "dp_hash" in KNOWN
    assert any(ln.strip() == "bucket 0" or ln.strip() == "bucket 1" for ln in got[cut:]), ours


#: (udp_dst, nw_ttl) of the packets through the other actions' flows, and what their datapath lines need
OTHER = [(20, 64), (21, 64), (22, 64), (23, 64), (24, 64), (25, 64), (25, 1), (26, 64), (27, 64), (28, 64), (29, 64),
         (30, 64), (31, 64), (32, 64), (33, 64), (34, 64), (35, 64), (36, 64), (37, 64), (38, 64), (39, 64)]
DP_KNOWN = {(25, 1): "controller_dp", (28, 64): "controller_dp", (34, 64): "flood_down", (36, 64): "flood_down"}


@pytest.mark.parametrize(("port", "ttl"), OTHER, ids=[f"{p}-ttl{t}" for p, t in OTHER])
def test_other_action_lines_equal_real_ovs(pair: Pair, port: int, ttl: int) -> None:
    """Output to the input port and to a port that does not exist (OVS's ``>>`` warnings), resubmit to an empty
    table, goto_table, write_actions with the action set run at the end, dec_ttl (and its exception at TTL 1), exit,
    note (OVS's padding), controller, VLAN push / pop, output:reg (``-> output port is N``), resubmit from another
    port, clear_actions / write_metadata, header rewrites, NORMAL, stack push / pop, FLOOD, clone, move, ct_clear:
    the pipeline section is OVS's line for line, and the datapath actions too (but ``DP_KNOWN``'s, see ``KNOWN``)."""
    spec = PACKET.replace("nw_ttl=64", f"nw_ttl={ttl}").format(port)
    theirs, ours = _trace(pair.theirs, BR, spec), _trace(pair.ours, BR, spec)
    want, got = pipeline(theirs), pipeline(ours)
    assert len(want) >= 2, theirs
    assert got == want, _diff(want, got)
    dp_theirs, dp_ours = datapath_actions(theirs, pair.dp_to_of), datapath_actions(ours)
    if (port, ttl) not in DP_KNOWN:
        assert dp_ours == dp_theirs, (theirs, ours)
    elif DP_KNOWN[port, ttl] == "controller_dp":
        assert dp_ours.split(",") == ["controller"] * dp_theirs.count("userspace(pid=0,controller("), \
            (dp_theirs, dp_ours)
    else:    # the same ports in another order, and OVS's has the port mod-port took down besides pyvswitch's
        theirs_ports = {"LOCAL" if p == str(pair.local_dp) else p for p in dp_theirs.split(",")}
        assert theirs_ports - set(dp_ours.split(",")) == {"4"}, (dp_theirs, dp_ours)
        assert set(dp_ours.split(",")) < theirs_ports, (dp_theirs, dp_ours)


def test_patch_port_walk_equals_real_ovs(pair: Pair) -> None:
    """Output to a patch port: the peer bridge's section (``bridge(BP1)``, its tables and resubmit)
    nested under the output as OVS lays it out, then the first bridge's actions go on; the
    datapath actions name the same ports."""
    spec = "in_port=1,udp,nw_src=10.0.0.1,nw_dst=10.0.0.2,nw_ttl=64,udp_src=99,udp_dst=1"
    theirs, ours = _trace(pair.theirs, BP0, spec), _trace(pair.ours, BP0, spec)
    want, got = pipeline(theirs), pipeline(ours)
    assert any(ln.strip() == f'bridge("{BP1}")' for ln in want), theirs
    assert got == want, _diff(want, got)
    assert datapath_actions(ours) == datapath_actions(theirs, pair.patch_dp), (theirs, ours)


# ------------------------------------------------------------------ the OVN fixture
@dataclass
class Traced:
    """One chassis' packets traced on both switches."""

    chassis: str
    specs: list[str]
    theirs: list[str]
    ours: list[str]
    dp_to_of: dict[int, int]


@pytest.fixture(scope="module", params=fx.CHASSIS)
def traced(request: pytest.FixtureRequest) -> Iterator[Traced]:
    """The fixture of a chassis in pyvswitch (internal ports) and OVS (a Geneve tunnel port and an underlay), every
    packet of ``fx.packets`` traced on both."""
    chassis = request.param
    specs = [spec for _, spec in fx.packets(chassis)]
    tag = f"{os.getpid() % 100000}"
    with private_switch(prefix="pvtrovn-") as sw, tempfile.TemporaryDirectory(prefix="realovs-trovn-") as rundir:
        args = ["add-br", "br-int"]
        for port in fx.PORTS[chassis]:
            name = f"otr{tag}{chassis[-1]}{port}"
            args += ["--", "add-port", "br-int", name, "--", "set", "Interface", name, "type=internal",
                     f"ofport_request={port}"]
        sw.vsctl(*args)
        real = RealOvs(rundir)
        try:
            real.start()
            real.add_bridge("br-int")
            _ovs_ports(real, chassis)
            for env in (sw.env, real.env):
                loaded = _load(env, chassis, per_flow=False)
                assert all(rc == 0 for rc, _ in loaded.steps.values()), loaded.steps
            dp_to_of = fx.dp_ports(real.run("ovs-appctl", "dpif/show").stdout)
            theirs = [text for rc, text in _traces(real.env, specs)]
            ours = [text for rc, text in _traces(sw.env, specs)]
        finally:
            real.stop()
    yield Traced(chassis, specs, theirs, ours, dp_to_of)


def test_ovn_fixture_pipeline_sections_equal_real_ovs(traced: Traced) -> None:
    """Every packet the OVN differential trace sends: the pipeline section up to the first ``ct`` is OVS's, line
    for line (registers, load / move with their ``is now`` lines, conjunction flows, clone, output, the layout)."""
    differ = []
    for spec, theirs, ours in zip(traced.specs, traced.theirs, traced.ours, strict=True):
        want, got = pipeline(theirs), pipeline(ours)
        assert want, theirs
        if got != want:
            first = next((i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b),
                         min(len(want), len(got)))
            differ.append(f"{spec}\n  OVS:       {want[first] if first < len(want) else '<end>'}\n"
                          f"  pyvswitch: {got[first] if first < len(got) else '<end>'}")
    equal = len(traced.specs) - len(differ)
    print(f"\n{traced.chassis}: {equal} of {len(traced.specs)} pipeline sections equal OVS's")
    assert not differ, f"{len(differ)} sections differ:\n" + "\n".join(differ[:10])


# ------------------------------------------------------------------ the words, without a switch
@pytest.mark.parametrize(("fields", "text"), [
    ({"eth_type": 0x0806, "reg14": 2, "metadata": 2}, "arp,reg14=0x2,metadata=0x2"),
    ({"ct_state": (0, 0x20), "metadata": 2}, "ct_state=-trk,metadata=0x2"),
    ({"xreg0": (0x8000 << 32, 0x8000 << 32), "metadata": 2}, "reg0=0x8000/0x8000,metadata=0x2"),
    ({"xxreg0": (5 << 64 | 7, 0xFFFFFFFF << 64 | 0xFF)}, "reg1=0x5,reg3=0x7/0xff"),   # reg0 is the top word
    ({"ct_mark": (2, 2), "eth_type": 0x0800, "ip_proto": 6, "reg1": 0xA4D0064, "reg2": (0x50, 0xFFFF),
      "ipv4_src": 0x0A4D0002, "ipv4_dst": 0x0A4D0002, "tcp_dst": 22},
     "ct_mark=0x2/0x2,tcp,reg1=0xa4d0064,reg2=0x50/0xffff,nw_src=10.77.0.2,nw_dst=10.77.0.2,tp_dst=22"),
    ({"metadata": 2, "eth_dst": (1 << 40, 1 << 40)}, "metadata=0x2,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00"),
    ({"eth_type": 0x86DD, "ip_proto": 58, "metadata": 2, "nw_ttl": 255, "icmpv6_type": 136, "icmpv6_code": 0},
     "icmp6,metadata=0x2,nw_ttl=255,icmp_type=136,icmp_code=0"),
    ({"conj_id": 886551665, "eth_type": 0x0800, "ip_proto": 6, "reg0": (0x80, 0x80), "reg15": 3, "metadata": 2},
     "conj_id=886551665,tcp,reg0=0x80/0x80,reg15=0x3,metadata=0x2"),
    ({"metadata": 1, "vlan_tci": (0x1000, 0x1000)}, "metadata=0x1,vlan_tci=0x1000/0x1000"),
    ({"eth_type": 0x0800, "ipv4_dst": (0x0A000000, 0xFFFFFF00), "ip_frag": (0, 1)}, "ip,nw_dst=10.0.0.0/24,nw_frag=no"),
    ({"eth_type": 0x0806, "reg14": 2, "arp_tpa": 0x0A4D0001, "arp_op": 1}, "arp,reg14=0x2,arp_tpa=10.77.0.1,arp_op=1"),
])
def test_matches_in_ovs_words(fields: dict, text: str) -> None:
    """Table lines' matches as the OVN fixture's dump (OVS's ``match_format``) writes them: the protocol first,
    registers as 32-bit ``regN`` (xreg / xxreg split), hex values with ``0`` for zero, CIDR prefixes."""
    from ofproto.rules import Match
    from vswitch.openflow.tracetext import match_text
    assert match_text(Match(**fields)) == text


def test_layout_of_nested_nodes() -> None:
    """OVS's indentation: a table that is the last of its list stays at its level with its actions one step in; one
    followed by more is one step in, its actions three; a bucket is one step in; details sit under their action."""
    from vswitch.openflow.tracetext import ACTION, BUCKET, DETAIL, TABLE, Node, render
    t1 = Node(TABLE, " 1. priority 1", [Node(ACTION, "output:3")])
    tree = [Node(TABLE, " 0. priority 5", [Node(ACTION, "resubmit(,1)"), t1, Node(ACTION, "group:1"),
                                            Node(BUCKET, "bucket 0", [Node(ACTION, "move:NXM_NX_REG0[]->NXM_NX_REG1[]"),
                                                                      Node(DETAIL, "NXM_NX_REG1[] is now 0x5")])])]
    assert render(tree) == [" 0. priority 5", "    resubmit(,1)", "     1. priority 1", "            output:3",
                            "    group:1", "    bucket 0", "            move:NXM_NX_REG0[]->NXM_NX_REG1[]",
                            "             -> NXM_NX_REG1[] is now 0x5"]
    t1.subs.append(Node(TABLE, " 2. priority 0", [Node(ACTION, "drop")]))
    assert render([t1]) == [" 1. priority 1", "    output:3", " 2. priority 0", "    drop"]
