"""Plain ``ovs-ofctl`` (no ``-O``: OpenFlow 1.0 with Nicira's extensions) against the pyvswitch daemon, with a real
ovs-vswitchd 3.1 (netdev datapath, its own rundir and namespace) as the oracle:

* groups: OVS carries them in 1.0 as Nicira messages (NXT_GROUP_MOD, NXST_GROUP / _DESC / _FEATURES: 1.5's group
  structures with 1.0 actions, ``vswitch.openflow.nxt``); the bytes real ``ovs-ofctl`` sent and real OVS answered
  (recorded) are ours; add-group(s), mod-group, insert-buckets, remove-buckets, del-groups, dump-groups,
  dump-group-stats, dump-group-features, ``--bundle add-groups`` and a flow's ``group:N`` (NXAST_GROUP) print the
  same text on both switches, with the same errors (OVS's NXET_VENDOR wrapping of 1.0); meters are refused by
  ovs-ofctl itself in 1.0, the same way for both;
* an ARP flow in OpenFlow 1.0's own match (``nw_proto`` is the ARP opcode there) and in NXM: ``--strict del-flows``
  deletes it, on both switches;
* registers + resubmit, learn (the learned flows in dump-flows) and conjunction, added with plain ovs-ofctl, dump
  as OVS dumps them;
* malformed group messages get the errors OVS sends (a bad one adds nothing) and the connection lives;
* traffic between namespace hosts: a register set and resubmitted on carries a ping (and a wrong register stops
  it); learned flows carry the replies (none without the learn flow); a conjunctive flow passes what matches both
  dimensions and not what matches one; an ``all`` group copies to both buckets' ports, a ``select`` group sends
  every packet through one bucket, the group and bucket counters counting them.
"""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from ofproto.groups import Group
from tests.netutil import unique
from tests.ofctl_text import flow_lines
from tests.switchutil import Switch, private_switch
from tests.test_bridge_identity import RealOvs, recv_msg
from vswitch.hostnet import HostNet
from vswitch.openflow import nxt
from vswitch.openflow.codec import OFP10, OFP13, Msg, encode
from vswitch.openflow.groupmeter import buckets_from_wire, group_desc
from vswitch.openflow.translate import match_from, match_to

pytestmark = pytest.mark.integration

BR = unique("b10")               # bridges and internal ports are devices: unique names for parallel runs
TRAFFIC_BR = unique("t10")
PORTS = (unique("p10"), unique("p10"))


def _ofctl(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = subprocess.run(["ovs-ofctl", "--timeout=10", *args], capture_output=True, text=True, env=env, timeout=30)
    return proc.returncode, proc.stdout + proc.stderr


def ok(env: dict[str, str], *args: str) -> str:
    rc, out = _ofctl(env, *args)
    assert rc == 0, (args, out)
    return out


def _two_internal_ports(vsctl, bridge: str) -> None:  # noqa: ANN001 - Switch.vsctl / RealOvs.vsctl
    p1, p2 = PORTS
    vsctl("add-port", bridge, p1, "--", "set", "Interface", p1, "type=internal", "ofport_request=1",
          "--", "add-port", bridge, p2, "--", "set", "Interface", p2, "type=internal", "ofport_request=2")


@pytest.fixture(scope="module")
def real_ovs() -> Iterator[RealOvs]:
    """A real ovs-vswitchd 3.1: bridge ``BR`` with two internal ports (OpenFlow 1, 2)."""
    with tempfile.TemporaryDirectory(prefix="realovs10-") as rundir:
        ovs = RealOvs(rundir)
        try:
            ovs.start()
            ovs.add_bridge(BR)
            _two_internal_ports(ovs.vsctl, BR)
            yield ovs
        finally:
            ovs.stop()


@pytest.fixture(scope="module")
def sw() -> Iterator[Switch]:
    """One pyvswitch for the module: ``BR`` as the real OVS has it; ``TRAFFIC_BR`` for the traffic tests."""
    with private_switch(prefix="pv10-") as s:
        s.vsctl("add-br", BR)
        _two_internal_ports(s.vsctl, BR)
        s.vsctl("add-br", TRAFFIC_BR)
        yield s


@pytest.fixture(scope="module")
def hosts(sw: Switch) -> Iterator[tuple[Switch, HostNet, list[str], list[str]]]:
    """Hosts A, B, C (10.72.0.1-3, OpenFlow ports 1-3 of ``TRAFFIC_BR``): (switch, net, namespaces, switch ends)."""
    stem = unique("o10")
    net = HostNet()
    try:
        ns, ends = [], []
        for i in (1, 2, 3):
            ns.append(net.add_host(f"{stem}-n{i}", f"{stem}{i}", f"10.72.0.{i}/24", mac=f"02:00:00:00:72:0{i}"))
            ends.append(f"{stem}{i}")
            sw.vsctl("add-port", TRAFFIC_BR, ends[-1], "--", "set", "Interface", ends[-1], f"ofport_request={i}")
        sw.wait_for("ports attached", lambda: all(sw.get("Interface", e, "ofport") == str(i)
                                                   for i, e in enumerate(ends, 1)))
        yield sw, net, ns, ends
    finally:
        for e in ends:
            sw.vsctl("--if-exists", "del-port", TRAFFIC_BR, e, check=False)
        net.cleanup()


def _fresh(sw: Switch, bridge: str = TRAFFIC_BR) -> None:
    ok(sw.env, "del-flows", bridge)
    ok(sw.env, "del-groups", bridge)


def _forget_arp(net: HostNet, ns: list[str]) -> None:
    for n in ns:
        net.exec(n, ["ip", "neigh", "flush", "all"])


# ---------------------------------------------------------------- the messages, against OVS's recorded bytes
#: ``ovs-ofctl add-group br 'group_id=5,type=select,selection_method=hash,fields(ip_src,tcp_dst),
#: bucket=weight:3,mod_dl_dst:02:00:00:00:00:09,output:1,bucket=watch_port:2,group:4'``: the NXT_GROUP_MOD body
#: it sent (after the subtype), and real OVS's NXST_GROUP_DESC reply body (after the stats type and flags)
GROUP_MOD_BODY = bytes.fromhex(
    "000001000000000500500000ffffffff00280018000000000005001002000000000900000000000000000008000100000000000800030000"
    "0028001000000001ffff001000002320002800000000000400000008000100000001000800000002ffff00360000154d000000010000"
    "000068617368000000000000000000000000000000000000000000000e04ffffffff00001402ffff0000")
GROUP_DESC_REPLY = bytes.fromhex(
    "000023200000000800000000009801000000000500500000000000000028001800000000000500100200000000090000000000000000"
    "00080001000000000008000300000028001000000001ffff001000002320002800000000000400000008000100000001000800000002"
    "ffff00360000154d000000010000000068617368000000000000000000000000000000000000000000000e04ffffffff00001402ffff"
    "0000")


def test_group_mod_and_description_are_ovs_s_bytes() -> None:
    """The NXT_GROUP_MOD real ovs-ofctl sent decodes (1.0 actions, NXAST_GROUP, weight / watch properties, the
    selection method) and encodes back to the same bytes; the group it makes is described in the bytes real OVS
    answered NXST_GROUP_DESC with."""
    fields = nxt.decode(nxt.NXT_GROUP_MOD, GROUP_MOD_BODY)
    assert (fields["command"], fields["type"], fields["group_id"]) == (0, 1, 5)
    assert fields["buckets"][0]["actions"] == [{"type": "set_dl_dst", "dl_addr": 0x020000000009},
                                               {"type": "output", "port": 1, "max_len": 0}]
    assert fields["buckets"][1]["actions"] == [{"type": "nx_group", "group_id": 4}]
    assert nxt.encode(nxt.NXT_GROUP_MOD, fields) == GROUP_MOD_BODY
    buckets = buckets_from_wire(OFP10, fields["type"], fields["buckets"])
    assert [(b.weight, b.watch_port) for b in buckets] == [(3, 0xFFFFFFFF), (1, 2)]
    group = Group(5, 1, buckets, "hash", ("ip_src", "tcp_dst"), 0)
    assert nxt.stats_reply_encode(nxt.NXST_GROUP_DESC, [group_desc(OFP10, group)]) == GROUP_DESC_REPLY


def test_arp_opcode_is_nw_proto_in_an_openflow10_arp_match() -> None:
    """OpenFlow 1.0's nw_proto is the ARP opcode when dl_type is ARP (and the IP protocol otherwise)."""
    assert match_from(OFP10, {"dl_type": 0x0806, "nw_proto": 1}) == {"eth_type": (0x0806, 0xFFFF),
                                                                    "arp_op": (1, 0xFFFF)}
    assert match_to(OFP10, {"eth_type": (0x0806, 0xFFFF), "arp_op": (2, 0xFFFF)}) == {"dl_type": 0x0806,
                                                                                       "nw_proto": 2}
    assert match_from(OFP10, {"dl_type": 0x0800, "nw_proto": 6}) == {"eth_type": (0x0800, 0xFFFF),
                                                                    "ip_proto": (6, 0xFF)}


# ---------------------------------------------------------------- plain ovs-ofctl against both switches
_XID = re.compile(r"xid=0x[0-9a-f]+")
_DURATION = re.compile(r"duration=[0-9.]+s")


def _normal(cmd: str, rc: int, out: str) -> tuple[int, object]:
    """A command's exit code and output, comparable between switches: xids and durations blanked, lines sorted
    (both list groups in hash order), flows as ``flow_lines``; an error with the whole request it answers, as
    OVS echoes it."""
    if cmd == "dump-flows":
        return rc, sorted(map(repr, flow_lines(out)))
    lines = [_DURATION.sub("duration=?", _XID.sub("xid=?", ln)) for ln in out.splitlines() if ln.strip()]
    return rc, sorted(lines)


def _group_script(groups_file: str) -> list[tuple[str, ...]]:
    """(options..., command, arguments...) with ``-`` for the bridge."""
    return [
        ("add-group", "-", "group_id=1,type=all,bucket=output:1,bucket=output:2"),
        ("add-group", "-", "group_id=1,type=all,bucket=output:1"),                                  # exists
        ("add-group", "-", "group_id=2,type=select,bucket=weight:10,output:1,bucket=weight:20,output:2"),
        ("add-group", "-", "group_id=3,type=fast_failover,bucket=watch_port:1,output:1,bucket=watch_port:2,output:2"),
        ("add-group", "-", "group_id=4,type=indirect,bucket=mod_dl_dst:02:00:00:00:00:09,mod_nw_tos:8,output:1"),
        ("add-group", "-", "group_id=5,type=select,selection_method=hash,fields(ip_src,tcp_dst),"
                           "bucket=weight:3,output:1,bucket=group:4"),
        ("mod-group", "-", "group_id=99,type=indirect,bucket=output:1"),                           # unknown group
        ("mod-group", "-", "group_id=2,type=select,bucket=weight:5,output:2"),
        ("insert-buckets", "-", "group_id=1,command_bucket_id=last,bucket=bucket_id:7,output:2"),
        ("insert-buckets", "-", "group_id=1,command_bucket_id=first,bucket=bucket_id:7,output:1"),  # bucket exists
        ("remove-buckets", "-", "group_id=1,command_bucket_id=0"),
        ("remove-buckets", "-", "group_id=1,command_bucket_id=44"),                                # unknown bucket
        ("dump-groups", "-"),
        ("dump-groups", "-", "5"),
        ("dump-group-stats", "-"),
        ("dump-group-stats", "-", "group_id=2"),
        ("dump-group-features", "-"),
        ("add-flow", "-", "in_port=1,actions=group:1"),
        ("add-flow", "-", "in_port=2,actions=group:77"),                                           # no group 77
        ("dump-flows", "-"),
        ("del-groups", "-", "group_id=1"),                                          # takes the flow naming it
        ("dump-flows", "-"),
        ("add-groups", "-", groups_file),
        ("add-groups", "-", groups_file),                                           # exists: the first refused
        ("del-groups", "-"),
        ("--bundle", "add-groups", "-", groups_file),
        ("dump-groups", "-"),
        ("add-meter", "-", "meter=1,pktps,band=type=drop,rate=10"),                 # ovs-ofctl: no meters in 1.0
        ("dump-meters", "-"),
        ("del-groups", "-"),
        ("dump-groups", "-"),
    ]


def _run_script(env: dict[str, str], groups_file: str) -> list[tuple[int, object]]:
    ok(env, "del-flows", BR)
    out = []
    for step in _group_script(groups_file):
        args = [BR if a == "-" else a for a in step]
        cmd = next(a for a in step if not a.startswith("--"))
        out.append(_normal(cmd, *_ofctl(env, *args)))
    return out


def test_group_commands_print_what_ovs_prints(sw: Switch, real_ovs: RealOvs) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".groups") as f:
        f.write("group_id=8,type=all,bucket=output:1\ngroup_id=9,type=select,bucket=output:2,bucket=output:1\n")
        f.flush()
        ours, theirs = _run_script(sw.env, f.name), _run_script(real_ovs.env, f.name)
    steps = _group_script("")
    for step, a, b in zip(steps, ours, theirs, strict=True):
        assert a == b, (step, a, b)

    def says(i: int, text: str) -> bool:
        return any(text in ln for ln in ours[i][1])   # type: ignore[union-attr]

    # the positive twins of the refusals, and the refusals' names
    assert [o[0] for o in ours[:12]] == [0, 1, 0, 0, 0, 0, 1, 0, 0, 1, 0, 1]
    assert says(1, "OFPGMFC_GROUP_EXISTS") and says(6, "OFPGMFC_UNKNOWN_GROUP")
    assert says(9, "OFPGMFC_BUCKET_EXISTS") and says(11, "OFPGMFC_UNKNOWN_BUCKET")
    assert says(12, "group_id=1,type=all,bucket=bucket_id:1,actions=output:2,bucket=bucket_id:7,actions=output:2")
    assert says(12, "weight:3,actions=output:1,bucket=bucket_id:1,actions=group:4")
    assert says(12, "actions=mod_dl_dst:02:00:00:00:00:09,mod_nw_tos:8,output:1")
    assert says(16, "actions: output enqueue set_vlan_vid")
    assert ours[18][0] == 1 and says(18, "OFPBAC_BAD_OUT_GROUP")
    assert says(19, "group:1") and not says(21, "group:1")          # deleting group 1 took its flow
    assert ours[23][0] == 1 and says(23, "OFPGMFC_GROUP_EXISTS")
    assert ours[25][0] == 0 and says(26, "group_id=9,type=select")     # the bundle's groups are there
    assert ours[27][0] == 1 and says(27, "none of the usable flow formats")
    assert ours[30][1] == ["NXST_GROUP_DESC reply (xid=?):"]


def _arp_script(env: dict[str, str], fmt: tuple[str, ...]) -> list[object]:
    ok(env, "del-flows", BR)
    out: list[object] = []
    for op in (1, 2):
        ok(env, *fmt, "add-flow", BR, f"arp,arp_op={op},actions=drop")
    out.append(sorted(map(repr, flow_lines(ok(env, *fmt, "dump-flows", BR, "arp")))))
    out.append(ok(env, *fmt, "--strict", "del-flows", BR, "arp,arp_op=1"))
    out.append(sorted(map(repr, flow_lines(ok(env, *fmt, "dump-flows", BR, "arp")))))
    return out


@pytest.mark.parametrize("fmt", [(), ("-F", "openflow10")], ids=["plain", "openflow10"])
def test_arp_flows_delete_strictly(sw: Switch, real_ovs: RealOvs, fmt: tuple[str, ...]) -> None:
    """``arp,arp_op=1`` (plain ovs-ofctl sends it in OpenFlow 1.0's own match) is added, dumped and strictly
    deleted as on OVS; the other opcode's flow stays."""
    ours = _arp_script(sw.env, fmt)
    assert ours == _arp_script(real_ovs.env, fmt)
    assert len(ours[0]) == 2 and len(ours[2]) == 1 and "arp_op=2" in ours[2][0], ours


PIPELINE = [
    "table=0,in_port=1,actions=load:5->NXM_NX_REG0[],resubmit(,3)",
    "table=3,reg0=5,actions=output:2",
    "table=0,in_port=2,actions=learn(table=10,idle_timeout=60,priority=5,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],"
    "load:NXM_NX_REG0[0..15]->NXM_NX_REG1[0..15],output:NXM_OF_IN_PORT[]),resubmit(,20)",
    "table=20,priority=10,ip,nw_src=10.72.0.1,actions=conjunction(7,1/2)",
    "table=20,priority=10,ip,nw_src=10.72.0.2,actions=conjunction(7,1/2)",
    "table=20,priority=10,tcp,tp_dst=80,actions=conjunction(7,2/2)",
    "table=20,priority=10,conj_id=7,ip,actions=output:1",
]
#: an ARP request from 02:00:00:00:72:02 (port 2): it makes the learn flow learn
ARP_FROM_2 = ("ffffffffffff020000007202080600010800060400010200000072020a4800020000000000000a480001")


def _pipeline_dumps(env: dict[str, str]) -> list[list[str]]:
    ok(env, "del-flows", BR)
    for flow in PIPELINE:
        assert ok(env, "add-flow", BR, flow) == ""
    before = sorted(map(repr, flow_lines(ok(env, "dump-flows", BR))))
    ok(env, "packet-out", BR, f"in_port=2 packet={ARP_FROM_2} actions=table")
    after = sorted(map(repr, flow_lines(ok(env, "dump-flows", BR))))
    return [before, after]


def test_registers_resubmit_learn_conjunction_dump_as_ovs(sw: Switch, real_ovs: RealOvs) -> None:
    ours = _pipeline_dumps(sw.env)
    assert ours == _pipeline_dumps(real_ovs.env)
    learned = set(ours[1]) - set(ours[0])
    assert len(learned) == 1 and "dl_dst=02:00:00:00:72:02" in learned.pop()


# ---------------------------------------------------------------- traffic
def test_registers_and_resubmit_carry_a_ping(hosts) -> None:  # noqa: ANN001
    sw, net, ns, _ = hosts
    _fresh(sw)
    for flow in ("table=0,in_port=1,actions=load:5->NXM_NX_REG0[],resubmit(,3)", "table=3,reg0=5,actions=output:2",
                 "table=0,in_port=2,actions=output:1"):
        assert ok(sw.env, "add-flow", TRAFFIC_BR, flow) == ""
    assert net.ping(ns[0], "10.72.0.2")
    # the register no longer matches: nothing gets through (the positive twin just passed)
    ok(sw.env, "--strict", "del-flows", TRAFFIC_BR, "table=3,reg0=5")
    ok(sw.env, "add-flow", TRAFFIC_BR, "table=3,reg0=6,actions=output:2")
    _forget_arp(net, ns)
    assert not net.ping(ns[0], "10.72.0.2", count=2, deadline=2)


def test_learned_flows_carry_the_replies(hosts) -> None:  # noqa: ANN001
    sw, net, ns, _ = hosts
    _fresh(sw)
    ok(sw.env, "add-flow", TRAFFIC_BR, "table=0,in_port=1,actions=output:2")
    ok(sw.env, "add-flow", TRAFFIC_BR, "table=0,in_port=2,actions=resubmit(,10)")
    _forget_arp(net, ns)
    assert not net.ping(ns[0], "10.72.0.2", count=2, deadline=2)          # table 10 is empty: replies drop
    ok(sw.env, "add-flow", TRAFFIC_BR, "table=0,in_port=1,actions=learn(table=10,idle_timeout=60,"
                                       "NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],output:NXM_OF_IN_PORT[]),output:2")
    _forget_arp(net, ns)
    assert net.ping(ns[0], "10.72.0.2")
    learned = [ln for ln in flow_lines(ok(sw.env, "dump-flows", TRAFFIC_BR, "table=10"))]
    assert [(sorted(ln.match), ln.actions) for ln in learned] == [
        (["cookie=0x0", "dl_dst=02:00:00:00:72:01", "idle_timeout=60", "table=10"], "output:1")], learned


def test_conjunction_needs_every_dimension(hosts) -> None:  # noqa: ANN001
    sw, net, ns, _ = hosts
    _fresh(sw)
    for flow in ("priority=100,arp,actions=NORMAL",
                 "priority=10,ip,nw_src=10.72.0.1,actions=conjunction(9,1/2)",
                 "priority=10,ip,nw_dst=10.72.0.2,actions=conjunction(9,2/2)",
                 "priority=10,conj_id=9,ip,actions=NORMAL",
                 "priority=5,ip,in_port=2,actions=NORMAL", "priority=5,ip,in_port=3,actions=NORMAL"):
        assert ok(sw.env, "add-flow", TRAFFIC_BR, flow) == ""
    assert net.ping(ns[0], "10.72.0.2")                                   # both dimensions
    assert not net.ping(ns[0], "10.72.0.3", count=2, deadline=2)          # nw_src only
    ok(sw.env, "add-flow", TRAFFIC_BR, "priority=10,ip,nw_dst=10.72.0.3,actions=conjunction(9,2/2)")
    assert net.ping(ns[0], "10.72.0.3")                                   # its positive twin


def _tx_packets(end: str) -> int:
    with open(f"/sys/class/net/{end}/statistics/tx_packets") as f:
        return int(f.read())


def _group_counts(sw: Switch, gid: int) -> tuple[int, list[int]]:
    line = ok(sw.env, "dump-group-stats", TRAFFIC_BR, f"group_id={gid}").splitlines()[1]
    total = int(re.search(r",packet_count=(\d+)", line).group(1))
    return total, [int(n) for n in re.findall(r"bucket\d+:packet_count=(\d+)", line)]


def test_groups_flood_and_select(hosts) -> None:  # noqa: ANN001
    sw, net, ns, ends = hosts
    _fresh(sw)
    ok(sw.env, "add-group", TRAFFIC_BR, "group_id=1,type=all,bucket=output:2,bucket=output:3")
    ok(sw.env, "add-group", TRAFFIC_BR, "group_id=2,type=select,bucket=weight:10,output:1,bucket=weight:30,output:1")
    for flow in ("in_port=1,actions=group:1", "in_port=2,actions=group:2", "in_port=3,actions=drop"):
        assert ok(sw.env, "add-flow", TRAFFIC_BR, flow) == ""
    _forget_arp(net, ns)
    c_before = _tx_packets(ends[2])
    assert net.ping(ns[0], "10.72.0.2", count=5)
    assert _tx_packets(ends[2]) - c_before >= 5                          # C got a copy of A's frames too
    total, buckets = _group_counts(sw, 1)
    assert total >= 5 and buckets == [total, total], (total, buckets)
    total, buckets = _group_counts(sw, 2)
    assert total >= 5 and sum(buckets) == total, (total, buckets)
    assert flow_lines(ok(sw.env, "dump-flows", TRAFFIC_BR, "in_port=1"))[0].actions == "group:1"


# ---------------------------------------------------------------- malformed group messages, as OVS answers them
def _nx(subtype: int, body: bytes, xid: int) -> bytes:
    return encode(Msg(OFP10, "vendor", xid, {"vendor": nxt.NX_VENDOR, "data": struct.pack("!I", subtype) + body}))


def _group_mod(command: int, gtype: int, gid: int, buckets: bytes, bucket_len: int | None = None) -> bytes:
    return struct.pack("!HBxIH2xI", command, gtype, gid, len(buckets) if bucket_len is None else bucket_len,
                       0xFFFFFFFF) + buckets


def _bucket(bucket_id: int, actions: bytes) -> bytes:
    return struct.pack("!HHI", 8 + len(actions), len(actions), bucket_id) + actions


OUT1 = struct.pack("!HHHH", 0, 8, 1, 0)                       # OpenFlow 1.0 output:1
BAD_GROUP_MESSAGES = [
    _nx(nxt.NXT_GROUP_MOD, bytes(10), 10),                                          # truncated
    _nx(nxt.NXT_GROUP_MOD, _group_mod(0, 0, 20, b"", bucket_len=64), 11),          # buckets past the end
    _nx(nxt.NXT_GROUP_MOD, _group_mod(0, 0, 21, _bucket(0, OUT1) + _bucket(1, struct.pack("!HH4x", 99, 8))), 12),
    _nx(nxt.NXT_GROUP_MOD, _group_mod(0, 7, 22, _bucket(0, OUT1)), 13),             # group type 7
    _nx(nxt.NXT_GROUP_MOD, _group_mod(9, 0, 23, _bucket(0, OUT1)), 14),             # command 9
    encode(Msg(OFP10, "stats_request", 15, {"mp_type": 0xFFFF, "flags": 0,         # NXST_GROUP_DESC, truncated
                                            "body": struct.pack("!II4xH", nxt.NX_VENDOR, nxt.NXST_GROUP_DESC, 1)})),
]


#: NXT_GROUP_MOD as an OpenFlow 1.3 experimenter message (1.3 has OFPT_GROUP_MOD: OVS refuses it)
NX_GROUP_MOD13 = encode(Msg(OFP13, "experimenter", 16, {"experimenter": nxt.NX_VENDOR, "exp_type": nxt.NXT_GROUP_MOD,
                                                        "data": _group_mod(0, 0, 24, _bucket(0, bytes(16)))}))


def _errors(path: str, version: int = OFP10,
            messages: list[bytes] = BAD_GROUP_MESSAGES) -> list[tuple[int, int, bytes]]:
    """Each bad message's error (type, code, and a vendor error's vendor / type / code), then a barrier answered."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    try:
        s.sendall(encode(Msg(version, "hello", 1)))
        assert recv_msg(s).type == "hello"
        out = []
        for raw in messages:
            s.sendall(raw)
            reply = recv_msg(s)
            assert reply is not None and reply.type == "error", (raw.hex(), reply)
            assert reply.xid == struct.unpack_from("!I", raw, 4)[0]
            out.append((reply.err_type, reply.code, bytes(reply.data[:8]) if reply.err_type == 0xB0C2 else b""))
        s.sendall(encode(Msg(version, "barrier_request", 30)))
        assert recv_msg(s).type == "barrier_reply"        # the connection lives
        return out
    finally:
        s.close()


def test_malformed_group_messages_get_ovs_s_errors(sw: Switch, real_ovs: RealOvs) -> None:
    ok(sw.env, "del-groups", BR)
    ok(real_ovs.env, "del-groups", BR)
    ours = _errors(f"{sw.rundir}/{BR}.mgmt")
    assert [e[:2] for e in ours] == [(1, 6), (1, 6), (2, 0), (0xB0C2, 0), (0xB0C2, 0), (1, 6)]   # BAD_LEN, ...
    assert ours == _errors(f"{real_ovs.rundir}/{BR}.mgmt")
    # nothing half-applied: the group whose second bucket was bad is not there
    assert ok(sw.env, "dump-groups", BR).splitlines()[1:] == []
    ours = _errors(f"{sw.rundir}/{BR}.mgmt", OFP13, [NX_GROUP_MOD13])
    assert ours == _errors(f"{real_ovs.rundir}/{BR}.mgmt", OFP13, [NX_GROUP_MOD13]) == [(1, 4, b"")]   # BAD_SUBTYPE
