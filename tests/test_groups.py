"""OpenFlow groups (ofproto.groups, xlate.groups, vswitch.openflow.groupmeter), with real peers.

* os-ken builds group-mods (1.3, 1.5 with bucket properties) to the same bytes as our codec, and ours decodes them;
* the real ``ovs-ofctl`` (-O OpenFlow13 / 14 / 15) against pyvswitch and against a real ovs-vswitchd 3.1: the same
  commands print the same text (add-group, mod-group, insert-buckets, remove-buckets, del-groups, dump-groups,
  dump-group-stats with durations blanked, dump-group-features) and get the same errors;
* traffic: an ``all`` group copies to every bucket, ``select`` keeps a flow on one bucket and spreads flows by
  weight, ``fast_failover`` moves to the next bucket when the watched port goes down; the group and bucket
  counters count what went through.
"""

from __future__ import annotations

import re
import struct
import subprocess
import time
from collections.abc import Iterator

import numpy as np
import pytest
from os_ken.ofproto import ofproto_v1_3_parser as p13
from os_ken.ofproto import ofproto_v1_5_parser as p15
from os_ken.ofproto.ofproto_protocol import ProtocolDesc

from dpif import actions as DA
from dpif import key as K
from dpif.extract_ref import extract
from ofproto.actions import Group as GroupAction
from ofproto.groups import OFPGT_ALL, OFPGT_FF, OFPGT_SELECT, Bucket, Group
from ofproto.rules import Flow, Instructions, Match, Output, SetField
from ofproto.tables import FlowTables
from tests.netutil import send_frames, unique
from tests.switchutil import private_switch
from tests.test_bridge_identity import RealOvs, running_ovs
from tests.test_openflow15 import _parse, bundle_add, bundle_ctrl, run_script
from tests.test_xlate_nicira import ipv4_frame
from vswitch.openflow.codec import OFP13, OFP15, Msg, decode, encode
from vswitch.openflow.groupmeter import group_desc, multipart
from xlate.translate import PF_DOWN, UpcallCookies, XlateResult, translate

pytestmark = pytest.mark.integration


def ofctl(sw, *args: str, check: bool = True) -> subprocess.CompletedProcess:  # noqa: ANN001 - Switch / RealOvs
    proc = subprocess.run(["ovs-ofctl", "--timeout=10", *args], capture_output=True, text=True, env=sw.env,
                          timeout=20)
    if check:
        assert proc.returncode == 0, (args, proc.stderr)
    return proc


@pytest.fixture(scope="module")
def sw() -> Iterator:
    """One pyvswitch for the module: bridge ``brg`` with internal ports p1, p2 (OpenFlow 1, 2)."""
    with private_switch(prefix="pvgrp-") as s:
        s.vsctl("add-br", "brg", "--", "add-port", "brg", "p1", "--", "set", "Interface", "p1", "type=internal",
                "ofport_request=1", "--", "add-port", "brg", "p2", "--", "set", "Interface", "p2", "type=internal",
                "ofport_request=2")
        yield s


@pytest.fixture(scope="module")
def real_ovs() -> Iterator[RealOvs]:
    """A real ovs-vswitchd 3.1 with the same bridge on the userspace datapath."""
    with running_ovs("realovsgrp-", "brg") as ovs:
        ovs.vsctl("add-port", "brg", "p1", "--", "set", "Interface", "p1", "type=internal", "ofport_request=1",
                  "--", "add-port", "brg", "p2", "--", "set", "Interface", "p2", "type=internal", "ofport_request=2")
        yield ovs


# ---------------------------------------------------------------- os-ken: byte for byte
def test_group_mod_matches_os_ken_byte_for_byte() -> None:
    """1.3 group-mod (weights, watch fields) and 1.5 group-mod (bucket ids, weight / watch properties, a command
    bucket id): os-ken's bytes are ours, and ours decode back to the same fields."""
    dp13, dp15 = ProtocolDesc(version=OFP13), ProtocolDesc(version=OFP15)
    out13 = p13.OFPActionOutput(2, 0)
    theirs13 = p13.OFPGroupMod(dp13, command=0, type_=1, group_id=7, buckets=[
        p13.OFPBucket(weight=10, watch_port=0xFFFFFFFF, watch_group=0xFFFFFFFF, actions=[out13]),
        p13.OFPBucket(weight=20, watch_port=3, watch_group=0xFFFFFFFF, actions=[p13.OFPActionGroup(9)])])
    ours13 = Msg(OFP13, "group_mod", 0, {"command": 0, "type": 1, "group_id": 7, "buckets": [
        {"weight": 10, "watch_port": 0xFFFFFFFF, "watch_group": 0xFFFFFFFF,
         "actions": [{"type": "output", "port": 2, "max_len": 0}]},
        {"weight": 20, "watch_port": 3, "watch_group": 0xFFFFFFFF, "actions": [{"type": "group", "group_id": 9}]}]})
    out15 = p15.OFPActionOutput(2, 0)
    theirs15 = p15.OFPGroupMod(dp15, command=3, type_=3, group_id=8, command_bucket_id=0xFFFFFFFE, buckets=[
        p15.OFPBucket(bucket_id=4, actions=[out15], properties=[p15.OFPGroupBucketPropWatch(type_=1, watch=2)]),
        p15.OFPBucket(bucket_id=5, actions=[out15], properties=[p15.OFPGroupBucketPropWeight(type_=0, weight=3)])])
    ours15 = Msg(OFP15, "group_mod", 0, {"command": 3, "type": 3, "group_id": 8, "command_bucket_id": 0xFFFFFFFE,
                                         "buckets": [
        {"bucket_id": 4, "actions": [{"type": "output", "port": 2, "max_len": 0}],
         "properties": [{"prop_type": 1, "body": struct.pack("!I", 2)}]},
        {"bucket_id": 5, "actions": [{"type": "output", "port": 2, "max_len": 0}],
         "properties": [{"prop_type": 0, "body": struct.pack("!H2x", 3)}]}]})
    for theirs, ours in ((theirs13, ours13), (theirs15, ours15)):
        theirs.set_xid(0)
        theirs.serialize()
        assert bytes(theirs.buf) == encode(ours), (bytes(theirs.buf).hex(), encode(ours).hex())
        back = decode(bytes(theirs.buf))
        assert {k: back.fields[k] for k in ("command", "group_id", "type")} == {
            k: ours.fields[k] for k in ("command", "group_id", "type")}
        assert [b["actions"][0]["type"] for b in back.buckets] == [b["actions"][0]["type"] for b in ours.buckets]


# ---------------------------------------------------------------- ovs-ofctl against both switches
_DURATION = re.compile(r"duration=[0-9.]+s")


def _lines(text: str) -> list[str]:
    """Reply lines without the xid, durations blanked, sorted (both switches list groups in table order)."""
    out = [_DURATION.sub("duration=?", re.sub(r"xid=0x[0-9a-f]+", "xid=?", line)) for line in text.splitlines()]
    return sorted(line for line in out if line.strip())


GROUP_SCRIPT = [
    ("OpenFlow13", "add-group", "group_id=1,type=all,bucket=output:1,bucket=output:2"),
    ("OpenFlow13", "add-group", "group_id=1,type=all,bucket=output:1"),                      # exists
    ("OpenFlow13", "add-group", "group_id=2,type=select,bucket=weight:10,output:1,bucket=weight:20,output:2"),
    ("OpenFlow14", "add-group", "group_id=3,type=fast_failover,bucket=watch_port:1,output:1,"
                                "bucket=watch_port:2,output:2"),
    ("OpenFlow13", "add-group", "group_id=4,type=indirect,bucket=set_field:10.0.0.9->ip_dst,output:1"),
    ("OpenFlow13", "add-group", "group_id=6,type=all,bucket=group:4,bucket=group:7"),         # 7 need not exist
    ("OpenFlow13", "add-group", "group_id=9,type=select,bucket=watch_port:1,output:1,bucket=watch_group:3,output:2"),
    ("OpenFlow13", "add-group", "group_id=10,type=indirect,bucket=watch_port:1,output:1"),     # watch unsupported
    ("OpenFlow13", "mod-group", "group_id=99,type=indirect,bucket=output:1"),                 # unknown group
    ("OpenFlow13", "mod-group", "group_id=2,type=select,bucket=weight:5,output:2"),
    ("OpenFlow15", "add-group", "group_id=5,type=select,selection_method=hash,fields(ip_src,tcp_dst),"
                                "bucket=bucket_id:0,output:1,bucket=bucket_id:1,output:2"),
    ("OpenFlow15", "add-group", "group_id=8,type=select,selection_method=dp_hash,bucket=weight:100,output:1,"
                                "bucket=weight:100,output:2"),
    ("OpenFlow15", "insert-buckets", "group_id=5,command_bucket_id=last,bucket=bucket_id:7,output:2"),
    ("OpenFlow15", "insert-buckets", "group_id=5,command_bucket_id=first,bucket=bucket_id:7,output:1"),  # exists
    ("OpenFlow15", "remove-buckets", "group_id=5,command_bucket_id=0"),
    ("OpenFlow15", "remove-buckets", "group_id=5,command_bucket_id=44"),                      # unknown bucket
    ("OpenFlow15", "insert-buckets", "group_id=77,command_bucket_id=last,bucket=bucket_id:7,output:2"),
    ("OpenFlow13", "add-flow", "in_port=1,actions=group:99"),                                  # no such group
    ("OpenFlow13", "add-flow", "in_port=1,actions=group:1"),
    ("OpenFlow13", "add-flow", "table=1,in_port=2,actions=write_actions(group:2)"),
]


def test_ovs_ofctl_groups_as_real_ovs(sw, real_ovs: RealOvs) -> None:  # noqa: ANN001
    """The same group commands against pyvswitch and a real ovs-vswitchd: the same errors (or none), the same
    dump-groups / dump-group-stats / dump-group-features text in 1.3, 1.4 and 1.5, and deleting a group deletes
    the flows that use it."""
    for proto, cmd, arg in GROUP_SCRIPT:
        ours = ofctl(sw, "-O", proto, cmd, "brg", arg, check=False)
        real = ofctl(real_ovs, "-O", proto, cmd, "brg", arg, check=False)
        assert ours.returncode == real.returncode, (cmd, arg, ours.stderr, real.stderr)
        first = lambda e: _lines(e.splitlines()[0] if e else "")   # noqa: E731 - the error line alone
        assert first(ours.stderr) == first(real.stderr), (cmd, arg, ours.stderr, real.stderr)
    for proto in ("OpenFlow13", "OpenFlow14", "OpenFlow15"):
        for cmd in ("dump-groups", "dump-group-stats", "dump-group-features"):
            ours, real = ofctl(sw, "-O", proto, cmd, "brg").stdout, ofctl(real_ovs, "-O", proto, cmd, "brg").stdout
            assert _lines(ours) == _lines(real), (proto, cmd, ours, real)
    assert "ref_count=1" in ofctl(sw, "-O", "OpenFlow13", "dump-group-stats", "brg", "group_id=1").stdout
    for spec in ("out_group=1", "out_group=2", "out_group=3"):   # the flows that send to a group
        ours, real = (ofctl(t, "-O", "OpenFlow13", "dump-flows", "brg", spec, "--no-stats").stdout
                      for t in (sw, real_ovs))
        assert ours == real and ours.count("\n") == (0 if spec.endswith("3") else 1), (spec, ours, real)
    for target in (sw, real_ovs):
        ofctl(target, "-O", "OpenFlow13", "del-flows", "brg", "out_group=2")
    ours, real = (ofctl(t, "-O", "OpenFlow13", "dump-flows", "brg", "--no-stats").stdout for t in (sw, real_ovs))
    assert "group:2" not in ours and "group:1" in ours and sorted(ours.splitlines()) == sorted(real.splitlines())
    for target in (sw, real_ovs):
        ofctl(target, "-O", "OpenFlow13", "del-groups", "brg", "group_id=1")
    ours, real = (ofctl(t, "-O", "OpenFlow13", "dump-flows", "brg", "--no-stats").stdout for t in (sw, real_ovs))
    assert "group:1" not in ours and sorted(ours.splitlines()) == sorted(real.splitlines()), (ours, real)
    for target in (sw, real_ovs):
        ofctl(target, "-O", "OpenFlow13", "del-groups", "brg")
        ofctl(target, "-O", "OpenFlow13", "del-flows", "brg")
    assert _lines(ofctl(sw, "-O", "OpenFlow15", "dump-groups", "brg").stdout) == \
        _lines(ofctl(real_ovs, "-O", "OpenFlow15", "dump-groups", "brg").stdout)


def test_bundle_naming_an_unknown_group_fails_at_commit_as_in_ovs(sw, real_ovs: RealOvs, tmp_path) -> None:  # noqa: ANN001
    """``--bundle add-flows`` whose second flow names a group that does not exist: the same errors as OVS (the
    flow-mod's OFPBAC_BAD_OUT_GROUP, then OFPBFC_MSG_FAILED for the commit), and the first flow is not there."""
    path = tmp_path / "flows.txt"
    path.write_text("add table=3,in_port=1,actions=output:2\nadd table=3,in_port=2,actions=group:4242\n")
    outs = [ofctl(t, "-O", "OpenFlow14", "--bundle", "add-flows", "brg", str(path), check=False)
            for t in (sw, real_ovs)]
    ours, real = ([ln for ln in o.stderr.splitlines() if not ln.startswith("ovs-ofctl: talking")] for o in outs)
    assert outs[0].returncode == outs[1].returncode != 0 and ours == real, (ours, real)
    assert "OFPBAC_BAD_OUT_GROUP" in ours[0] and "OFPBFC_MSG_FAILED" in ours[1], ours
    assert "in_port=1" not in ofctl(sw, "-O", "OpenFlow14", "dump-flows", "brg", "table=3").stdout


def test_add_groups_from_a_file_and_may_create_as_ovs(sw, real_ovs: RealOvs, tmp_path) -> None:  # noqa: ANN001
    """``add-groups FILE`` and ``--may-create mod-group`` (OpenFlow's add-or-modify) in 1.3, 1.4 and 1.5 leave the
    same groups on both switches."""
    path = tmp_path / "groups.txt"
    path.write_text("group_id=11,type=all,bucket=output:1\ngroup_id=12,type=indirect,bucket=output:2\n")
    for target in (sw, real_ovs):
        ofctl(target, "-O", "OpenFlow13", "add-groups", "brg", str(path))
        ofctl(target, "-O", "OpenFlow13", "--may-create", "mod-group", "brg", "group_id=13,type=all,bucket=output:1")
        ofctl(target, "-O", "OpenFlow15", "--may-create", "mod-group", "brg", "group_id=14,type=all,bucket=output:2")
        ofctl(target, "-O", "OpenFlow14", "--may-create", "mod-group", "brg", "group_id=11,type=all,bucket=output:2")
    ours, real = (ofctl(t, "-O", "OpenFlow15", "dump-groups", "brg").stdout for t in (sw, real_ovs))
    assert _lines(ours) == _lines(real) and len(_lines(ours)) == 5, (ours, real)
    for target in (sw, real_ovs):
        ofctl(target, "-O", "OpenFlow13", "del-groups", "brg")


def test_a_fail_mode_change_flushes_groups_and_meters_as_ovs(sw, real_ovs: RealOvs) -> None:  # noqa: ANN001
    """OVS's flush on a fail-mode change takes the groups and meters with the flows: both switches dump none."""
    for target in (sw, real_ovs):
        ofctl(target, "-O", "OpenFlow13", "add-group", "brg", "group_id=41,type=all,bucket=output:1")
        ofctl(target, "-O", "OpenFlow13", "add-meter", "brg", "meter=41,pktps,band=type=drop,rate=10")
        target.vsctl("set-fail-mode", "brg", "secure")
    deadline = time.monotonic() + 10
    while "group_id=41" in ofctl(sw, "-O", "OpenFlow13", "dump-groups", "brg").stdout:
        assert time.monotonic() < deadline, "the groups were not flushed"
        time.sleep(0.1)
    for cmd in ("dump-groups", "dump-meters"):
        ours, real = (ofctl(t, "-O", "OpenFlow13", cmd, "brg").stdout for t in (sw, real_ovs))
        assert _lines(ours) == _lines(real) and len(_lines(ours)) == 1, (cmd, ours, real)
    for target in (sw, real_ovs):
        target.vsctl("set-fail-mode", "brg", "standalone")


# ---------------------------------------------------------------- errors on the wire
def _out(port: int) -> list[dict]:
    return [{"type": "output", "port": port, "max_len": 0}]


def _b13(weight: int = 0, watch_port: int = 0xFFFFFFFF, watch_group: int = 0xFFFFFFFF, port: int = 1) -> dict:
    return {"weight": weight, "watch_port": watch_port, "watch_group": watch_group, "actions": _out(port)}


def _gm13(xid: int, command: int, gtype: int, gid: int, buckets: list[dict]) -> bytes:
    return encode(Msg(OFP13, "group_mod", xid, {"command": command, "type": gtype, "group_id": gid,
                                                "buckets": buckets}))


def _b15(bid: int, props: tuple = ()) -> dict:
    return {"bucket_id": bid, "actions": _out(1), "properties": list(props)}


def _gm15(xid: int, command: int, gtype: int, gid: int, buckets: list[dict], cbid: int = 0xFFFFFFFF,
          props: tuple = ()) -> bytes:
    return encode(Msg(OFP15, "group_mod", xid, {"command": command, "type": gtype, "group_id": gid,
                                                "command_bucket_id": cbid, "buckets": buckets,
                                                "properties": list(props)}))


def _weight(w: int) -> dict:
    return {"prop_type": 0, "body": struct.pack("!H2x", w)}


def _method(name: str) -> dict:
    return {"prop_type": 0xFFFF, "body": struct.pack("!II4x16sQ", 0x154D, 1, name.encode(), 0)}


GROUP_ERRORS = {
    "bad type": [_gm13(1, 0, 9, 1, [_b13()])],
    "indirect with two buckets": [_gm13(2, 0, 2, 2, [_b13(), _b13()])],
    "indirect without buckets": [_gm13(3, 0, 2, 3, [])],
    "fast failover bucket watching nothing": [_gm13(4, 0, 3, 4, [_b13()])],
    "bad command": [_gm13(5, 9, 0, 5, [_b13()])],
    "group id ANY": [_gm13(6, 0, 0, 0xFFFFFFFF, [_b13()])],
    "group id ALL": [_gm13(7, 0, 0, 0xFFFFFFFC, [_b13()])],
    "weight in an all group": [_gm13(8, 0, 0, 8, [_b13(weight=5)])],
    "select bucket of weight 0": [_gm13(9, 0, 1, 9, [_b13(weight=0)])],
    "watch in an all group": [_gm13(10, 0, 0, 10, [_b13(watch_port=1)])],
    "bad output port": [_gm13(11, 0, 0, 11, [_b13(port=0xFFFFFF55)])],
    "1.5: insert into an indirect group": [_gm15(1, 0, 2, 21, [_b15(0)]), _gm15(2, 3, 2, 21, [_b15(1)], 0xFFFFFFFE)],
    "1.5: remove an indirect group's bucket": [_gm15(3, 0, 2, 22, [_b15(0)]), _gm15(4, 5, 2, 22, [])],
    "1.5: duplicate bucket ids": [_gm15(5, 0, 0, 23, [_b15(0), _b15(0)])],
    "1.5: bucket id too big": [_gm15(6, 0, 0, 24, [_b15(0xFFFFFF01)])],
    "1.5: unknown bucket property": [_gm15(7, 0, 0, 25, [_b15(0, ({"prop_type": 9, "body": bytes(4)},))])],
    "1.5: selection method on an all group": [_gm15(8, 0, 0, 26, [_b15(0)], props=(_method("hash"),))],
    "1.5: unknown selection method": [_gm15(9, 0, 1, 27, [_b15(0, (_weight(1),))], props=(_method("foo"),))],
    "1.5: weight in an all group": [_gm15(10, 0, 0, 28, [_b15(0, (_weight(3),))])],
    "1.5: add_or_mod twice": [_gm15(11, 0x8000, 0, 29, [_b15(0)]), _gm15(12, 0x8000, 0, 29, [_b15(0), _b15(1)])],
    "1.5: insert an existing bucket id": [_gm15(13, 0, 0, 30, [_b15(0)]), _gm15(14, 3, 0, 30, [_b15(0)], 0xFFFFFFFE)],
    "1.5: insert before an unknown bucket": [_gm15(15, 0, 0, 31, [_b15(0)]), _gm15(16, 3, 0, 31, [_b15(1)], 7)],
    "1.5: insert bucket id ALL": [_gm15(17, 0, 0, 32, [_b15(0)]), _gm15(18, 3, 0, 32, [_b15(0xFFFFFFFF)],
                                                                         0xFFFFFFFE)],
    "1.5: delete every group": [_gm15(19, 2, 0, 0xFFFFFFFC, [])],
}


def test_group_mod_errors_as_real_ovs_sends_them(sw, real_ovs: RealOvs) -> None:  # noqa: ANN001
    """Each group-mod script gets the same errors (by xid, type and code; or none) from pyvswitch and from OVS,
    and the connection lives; a refused group-mod changes nothing (the group tables dump the same)."""
    for target in (sw, real_ovs):
        target.vsctl("set", "Bridge", "brg", "protocols=OpenFlow13,OpenFlow14,OpenFlow15")
    refused = 0
    for what, script in GROUP_ERRORS.items():
        version = script[0][0]
        ours = run_script(f"{sw.rundir}/brg.mgmt", version, script)
        theirs = run_script(f"{real_ovs.rundir}/brg.mgmt", version, script)
        assert ours == theirs, (what, ours, theirs)
        refused += bool(ours)
    assert refused >= 18, refused     # most scripts are mistakes; the others must be accepted by both
    ours, real = (ofctl(t, "-O", "OpenFlow15", "dump-groups", "brg").stdout for t in (sw, real_ovs))
    assert _lines(ours) == _lines(real), (ours, real)
    for target in (sw, real_ovs):
        ofctl(target, "-O", "OpenFlow13", "del-groups", "brg")


def _flow_to_group(version: int, xid: int, gid: int) -> bytes:
    return encode(Msg(version, "flow_mod", xid, {"table_id": 5, "command": 0, "priority": 9, "buffer_id": 0xFFFFFFFF,
                                                 "out_port": 0xFFFFFFFF, "out_group": 0xFFFFFFFF, "match": {},
                                                 "instructions": [{"type": "apply_actions", "actions": [
                                                     {"type": "group", "group_id": gid}]}]}))


@pytest.mark.parametrize("version", [OFP13, OFP15])
def test_group_mods_in_bundles_as_real_ovs(sw, real_ovs: RealOvs, version: int) -> None:  # noqa: ANN001
    """A bundle may carry group-mods: one that adds a group and then a flow sending to it commits; one whose
    second group-mod fails at commit (the group exists) applies nothing (its first group is not there); a
    group-mod that cannot be decoded is refused when it is added. The same answers as OVS."""
    gm = _gm13 if version == OFP13 else (lambda xid, c, t, gid, b: _gm15(xid, c, t, gid, [_b15(0)] if b else []))
    scripts = [
        [bundle_ctrl(version, 1, 60, 0, 3), bundle_add(version, 2, 60, gm(2, 0, 0, 60, [_b13()]), 3),
         bundle_add(version, 3, 60, _flow_to_group(version, 3, 60), 3), bundle_ctrl(version, 4, 60, 4, 3)],
        [bundle_ctrl(version, 1, 61, 0, 3), bundle_add(version, 2, 61, gm(2, 0, 0, 61, [_b13()]), 3),
         bundle_add(version, 3, 61, gm(3, 0, 0, 60, [_b13()]), 3), bundle_ctrl(version, 4, 61, 4, 3)],
        [bundle_ctrl(version, 1, 62, 0, 3), bundle_add(version, 2, 62, gm(2, 0, 9, 62, [_b13()]), 3)],
    ]
    answers = []
    for script in scripts:
        ours = run_script(f"{sw.rundir}/brg.mgmt", version, script)
        theirs = run_script(f"{real_ovs.rundir}/brg.mgmt", version, script)
        assert ours == theirs, (ours, theirs)
        answers.append([a[0] for a in ours])
    assert "error" not in answers[0] and answers[1].count("error") == 2 and answers[2] == ["bundle_control", "error"], \
        answers
    for args in (("dump-groups",), ("dump-flows", "--no-stats")):
        ours, real = (ofctl(t, "-O", "OpenFlow15", args[0], "brg", *args[1:]).stdout for t in (sw, real_ovs))
        assert "group_id=61" not in ours and ("group_id=60" in ours or "group:60" in ours), ours
        assert _lines(ours) == _lines(real), (ours, real)
    for target in (sw, real_ovs):
        ofctl(target, "-O", "OpenFlow13", "del-groups", "brg")


# ---------------------------------------------------------------- traffic
def _udp(src_mac: str, sport: int, dport: int = 9) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0, bytes([10, 79, 0, 1]), bytes([10, 79, 0, 2]))
    return bytes.fromhex("ffffffffffff" + src_mac.replace(":", "") + "0800") + ip + struct.pack(
        "!HHHH", sport, dport, 8, 0) + bytes(18)


def _tx(sw, br: str) -> dict[int, int]:  # noqa: ANN001
    """Transmitted packets by OpenFlow port."""
    text = ofctl(sw, "-O", "OpenFlow13", "dump-ports", br).stdout
    out: dict[int, int] = {}
    port = None
    for line in text.splitlines():
        m = re.match(r"\s*port\s+(\w+): rx", line)
        if m:
            port = int(m.group(1)) if m.group(1).isdigit() else -1
        m = re.search(r"tx pkts=(\d+)", line)
        if m and port is not None:
            out[port] = int(m.group(1))
    return out


def _settled(sw, br: str) -> dict[int, int]:  # noqa: ANN001
    time.sleep(0.5)
    return _tx(sw, br)


def test_group_traffic_all_select_fast_failover(switch, net) -> None:  # noqa: ANN001
    """Frames from port 1 through each group type, counted on the output ports and in the group statistics."""
    stem = unique("grp")
    br = f"{stem}s"
    mac = "02:00:00:00:79:01"
    net.add_host(f"{stem}-na", f"{stem}a", "10.79.0.1/24", mac=mac)
    net.add_host(f"{stem}-nb", f"{stem}b", "10.79.0.2/24")
    net.add_host(f"{stem}-nc", f"{stem}c", "10.79.0.3/24")
    switch.vsctl("add-br", br, "--", "set-fail-mode", br, "secure",
                 *[x for i, p in enumerate("abc", 1) for x in ("--", "add-port", br, f"{stem}{p}", "--", "set",
                                                               "Interface", f"{stem}{p}", f"ofport_request={i}")])
    of = lambda *a: ofctl(switch, "-O", "OpenFlow13", *a)   # noqa: E731
    of("add-group", br, "group_id=1,type=all,bucket=output:2,bucket=output:3")
    of("add-group", br, "group_id=2,type=select,bucket=weight:1,output:2,bucket=weight:3,output:3")
    of("add-group", br, "group_id=3,type=fast_failover,bucket=watch_port:2,output:2,bucket=watch_port:3,output:3")
    ns = f"{stem}-na"

    # all: a copy to each bucket
    of("add-flow", br, "in_port=1,actions=group:1")
    before = _settled(switch, br)
    send_frames(net, ns, "eth0", [_udp(mac, 1000 + i) for i in range(20)])
    after = _settled(switch, br)
    assert after[2] - before[2] >= 20 and after[3] - before[3] >= 20, (before, after)
    stats = of("dump-group-stats", br, "group_id=1").stdout
    assert re.search(r"group_id=1,.*packet_count=20,.*bucket0:packet_count=20,.*bucket1:packet_count=20", stats), \
        stats

    # select: one flow stays on one bucket; many flows spread by weight (1:3)
    of("mod-flows", br, "in_port=1,actions=group:2")
    before = _settled(switch, br)
    send_frames(net, ns, "eth0", [_udp(mac, 4242)] * 10)
    after = _settled(switch, br)
    moved = sorted([after[2] - before[2], after[3] - before[3]])
    assert moved[0] < 2 <= 10 <= moved[1], (before, after)      # (a stray host frame at most)
    before = after
    send_frames(net, ns, "eth0", [_udp(mac, 2000 + i) for i in range(400)])
    after = _settled(switch, br)
    to2, to3 = after[2] - before[2], after[3] - before[3]
    assert to2 + to3 >= 400 and 50 <= to2 <= 160 and to3 >= 2 * to2, (to2, to3)
    stats = of("dump-group-stats", br, "group_id=2").stdout
    counts = [int(x) for x in re.findall(r"bucket\d:packet_count=(\d+)", stats)]
    assert sum(counts) == 410 and counts[1] > counts[0], stats

    # fast failover: bucket 0 while port 2 is up; port 2 down: bucket 1
    of("mod-flows", br, "in_port=1,actions=group:3")
    before = _settled(switch, br)
    send_frames(net, ns, "eth0", [_udp(mac, 3000 + i) for i in range(10)])
    after = _settled(switch, br)
    assert after[2] - before[2] >= 10 and after[3] - before[3] < 2, (before, after)
    of("mod-port", br, "2", "down")
    before = _settled(switch, br)
    send_frames(net, ns, "eth0", [_udp(mac, 3000 + i) for i in range(10)])
    after = _settled(switch, br)
    assert after[3] - before[3] >= 10 and after[2] == before[2], (before, after)
    # the link (carrier) counts too, as in OVS: port 2 up again, then its veth peer taken down
    of("mod-port", br, "2", "up")
    before = _settled(switch, br)
    send_frames(net, ns, "eth0", [_udp(mac, 3000 + i) for i in range(10)])
    after = _settled(switch, br)
    assert after[2] - before[2] >= 10 and after[3] - before[3] < 2, (before, after)
    subprocess.run(["ip", "-n", f"{stem}-nb", "link", "set", "eth0", "down"], check=True)
    switch.wait_for("link_state down in OVSDB", lambda: switch.vsctl(
        "get", "Interface", f"{stem}b", "link_state").stdout.strip() == "down", 10)
    assert "LINK_DOWN" in of("dump-ports-desc", br).stdout
    before = _settled(switch, br)
    send_frames(net, ns, "eth0", [_udp(mac, 3100 + i) for i in range(10)])
    after = _settled(switch, br)
    assert after[3] - before[3] >= 10 and after[2] == before[2], (before, after)
    subprocess.run(["ip", "-n", f"{stem}-nb", "link", "set", "eth0", "up"], check=True)
    switch.wait_for("link_state up in OVSDB", lambda: switch.vsctl(
        "get", "Interface", f"{stem}b", "link_state").stdout.strip() == "up", 10)


# ---------------------------------------------------------------- OVN's groups (the fixture)
@pytest.mark.parametrize("chassis", ["chA", "chB"])
def test_ovn_select_groups_dump_as_in_the_fixture(sw, chassis: str) -> None:  # noqa: ANN001
    """OVN's load-balancer groups (tests/fixtures/ovn-23.03-flows/groups-chX.txt: select, dp_hash, buckets of
    weight 100 whose actions are ct(commit,table=..,zone=reg[..],nat(dst=..),exec(set_field ct_mark))), added
    with ovs-ofctl 1.5 the way ovn-controller sends them: dump-groups prints the fixture's text exactly."""
    with open(f"tests/fixtures/ovn-23.03-flows/groups-{chassis}.txt") as f:
        want = f.read()
    lines = [line.strip() for line in want.splitlines() if line.startswith(" group_id=")]
    assert len(lines) == 2 and all("ct(commit" in line for line in lines)
    try:
        for line in lines:
            ofctl(sw, "-O", "OpenFlow15", "add-group", "brg", line)
        got = ofctl(sw, "-O", "OpenFlow15", "dump-groups", "brg").stdout
        assert sorted(got.splitlines()) == sorted(want.splitlines()), (got, want)
    finally:
        ofctl(sw, "-O", "OpenFlow15", "del-groups", "brg")


# ---------------------------------------------------------------- the translator (no switch)
def _xlate(groups: dict, actions: tuple, frame: bytes, port_flags: np.ndarray | None = None,
           write: tuple = ()) -> XlateResult:
    tables = FlowTables(4)
    tables.set_groups(groups)
    tables.add(Flow(0, 1, Match(), Instructions(apply=actions, write=write)))
    flags = np.zeros(4, dtype=np.int64) if port_flags is None else port_flags
    return translate(tables.compile(), [int(w) for w in extract(frame, 0)[0]], flags, UpcallCookies())


def _outputs(res: XlateResult) -> list[int]:
    return [args[0] for op, args in DA.decode(res.actions) if op == DA.OP_OUTPUT]


def _udp_frame(sport: int, dst_ip: int = 2) -> bytes:
    return ipv4_frame(0x020000000002, 0x020000000001, b"", 17, 0x0A000001, 0x0A000000 | dst_ip, 64, 0, sport, 53)


def test_select_hashes_the_listed_fields_and_the_megaflow_holds_them() -> None:
    """selection_method=hash,fields(ip_dst): the bucket depends on ip_dst alone (UDP ports do not change it), and
    the mask holds ip_dst in full and nothing of the ports; the default hash holds the 5-tuple, so the ports."""
    b = (Bucket((Output(1),), 1, bucket_id=0), Bucket((Output(2),), 1, bucket_id=1), Bucket((Output(3),), 1,
                                                                                           bucket_id=2))
    by_ip = {5: Group(5, OFPGT_SELECT, b, "hash", ("ip_dst",))}
    seen = {}
    for dst in range(1, 40):
        outs = {tuple(_outputs(_xlate(by_ip, (GroupAction(5),), _udp_frame(sport, dst)))) for sport in (1, 2, 3)}
        assert len(outs) == 1, outs                     # the ports are not hashed
        seen[dst] = outs.pop()
    assert len(set(seen.values())) == 3                 # and the addresses spread over every bucket
    res = _xlate(by_ip, (GroupAction(5),), _udp_frame(7))
    assert res.mask[K.W_NW_DST] == 0xFFFFFFFF and res.mask[K.W_TP] == 0, res.mask
    default = {6: Group(6, OFPGT_SELECT, b)}
    res = _xlate(default, (GroupAction(6),), _udp_frame(7))
    assert res.mask[K.W_TP] == 0xFFFFFFFF and res.mask[K.W_NW_SRC] == 0xFFFFFFFF, res.mask
    again = [tuple(_outputs(_xlate(default, (GroupAction(6),), _udp_frame(7)))) for _ in range(5)]
    assert len(set(again)) == 1 and len(again[0]) == 1   # the same flow: the same one bucket


def test_select_weights_all_copies_fast_failover_liveness() -> None:
    """Weights 1:0:3 (a weight-0 bucket never chosen); all: each bucket on its own copy of the headers (a bucket's
    set_field is not seen by the next); fast failover: the first bucket whose port is up; none: no output; select:
    only live buckets."""
    weighted = {1: Group(1, OFPGT_SELECT, (Bucket((Output(1),), 1, bucket_id=0), Bucket((Output(2),), 0, bucket_id=1),
                                           Bucket((Output(3),), 3, bucket_id=2)))}
    counts = {1: 0, 2: 0, 3: 0}
    for sport in range(400):
        (out,) = _outputs(_xlate(weighted, (GroupAction(1),), _udp_frame(sport)))
        counts[out] += 1
    assert counts[2] == 0 and 60 <= counts[1] <= 140 and counts[3] == 400 - counts[1], counts
    everyone = {2: Group(2, OFPGT_ALL, (Bucket((SetField("ip_dst", 0x0A000009), Output(1))),
                                        Bucket((Output(2),), bucket_id=1)))}
    prog = DA.decode(_xlate(everyone, (GroupAction(2), Output(3)), _udp_frame(1)).actions)
    assert [op for op, _ in prog] == [DA.OP_SET_MASKED, DA.OP_OUTPUT, DA.OP_SET_MASKED, DA.OP_OUTPUT,
                                      DA.OP_OUTPUT], prog   # the address is set back for bucket 1 and output:3
    ff = {3: Group(3, OFPGT_FF, (Bucket((Output(1),), watch_port=1), Bucket((Output(2),), watch_port=2,
                                                                              bucket_id=1)))}
    flags = np.zeros(4, dtype=np.int64)
    assert _outputs(_xlate(ff, (GroupAction(3),), _udp_frame(1), flags)) == [1]
    flags[1] = PF_DOWN
    assert _outputs(_xlate(ff, (GroupAction(3),), _udp_frame(1), flags)) == [2]
    flags[2] = PF_DOWN
    res = _xlate(ff, (GroupAction(3),), _udp_frame(1), flags)
    assert _outputs(res) == [] and res.drop_reason.startswith("flow_no_output")
    live = {4: Group(4, OFPGT_SELECT, (Bucket((Output(1),), 1, watch_port=1), Bucket((Output(2),), 1, watch_port=2,
                                                                                      bucket_id=1)))}
    flags = np.zeros(4, dtype=np.int64)
    seen = {tuple(_outputs(_xlate(live, (GroupAction(4),), _udp_frame(sport), flags))) for sport in range(40)}
    assert seen == {(1,), (2,)}, seen                   # both buckets live: both chosen
    flags[1] = PF_DOWN
    seen = {tuple(_outputs(_xlate(live, (GroupAction(4),), _udp_frame(sport), flags))) for sport in range(40)}
    assert seen == {(2,)}, seen                         # select liveness: the dead bucket is never chosen
    in_set = _xlate(everyone, (), _udp_frame(1), write=(Output(3), GroupAction(2)))
    assert _outputs(in_set) == [1, 2]                   # in the action set a group takes the output's place


def test_fast_failover_watching_a_group_and_chains() -> None:
    """A fast-failover bucket that watches a group is live while that group has a live bucket; a group chain
    runs the inner group's bucket; a group that sends to itself is cut at the depth limit, not looped."""
    groups = {
        9: Group(9, OFPGT_FF, (Bucket((Output(1),), watch_port=1),)),
        3: Group(3, OFPGT_FF, (Bucket((GroupAction(9),), watch_group=9), Bucket((Output(2),), watch_port=2,
                                                                                 bucket_id=1))),
        7: Group(7, OFPGT_ALL, (Bucket((GroupAction(7),)),)),
    }
    flags = np.zeros(4, dtype=np.int64)
    assert _outputs(_xlate(groups, (GroupAction(3),), _udp_frame(1), flags)) == [1]   # via group 9
    flags[1] = PF_DOWN
    assert _outputs(_xlate(groups, (GroupAction(3),), _udp_frame(1), flags)) == [2]
    res = _xlate(groups, (GroupAction(7), Output(3)), _udp_frame(1))
    assert res.cut and _outputs(res) == [3], res.cut


@pytest.mark.parametrize("version", [OFP13, OFP15])
def test_group_and_meter_replies_parse_in_os_ken(version: int) -> None:
    """The switch's group desc / stats / features and meter config / stats replies, encoded by our codec: os-ken's
    parser reads back the values we put in. (os-ken 4.2 reads a 1.5 bucket's properties up to ``len`` bytes past
    their start, so the next bucket's too: 1.5 gets one bucket here; ovs-ofctl against real OVS checks more.)"""
    g = Group(5, OFPGT_SELECT, (Bucket((Output(2),), 10, bucket_id=0), Bucket((Output(3),), 20, bucket_id=1)))
    if version == OFP15:
        g = Group(5, OFPGT_SELECT, g.buckets[:1])
    d = _parse(encode(Msg(version, "multipart_reply", 1, {"mp_type": 7, "body": [group_desc(version, g)]}))).body[0]
    assert (d.type, d.group_id) == (OFPGT_SELECT, 5)
    if version == OFP13:
        assert [(b.weight, b.actions[0].port) for b in d.buckets] == [(10, 2), (20, 3)]
    else:
        assert [(b.bucket_id, b.properties[0].weight, b.actions[0].port) for b in d.buckets] == [(0, 10, 2)]
    stats = {"group_id": 5, "ref_count": 2, "packet_count": 7, "byte_count": 700, "duration_sec": 3,
             "duration_nsec": 5, "bucket_stats": [{"packet_count": 3, "byte_count": 300},
                                                  {"packet_count": 4, "byte_count": 400}]}
    s = _parse(encode(Msg(version, "multipart_reply", 1, {"mp_type": 6, "body": [stats]}))).body[0]
    assert (s.group_id, s.ref_count, s.packet_count, s.duration_sec) == (5, 2, 7, 3)
    assert [(b.packet_count, b.byte_count) for b in s.bucket_stats] == [(3, 300), (4, 400)]
    f = _parse(encode(Msg(version, "multipart_reply", 1, {"mp_type": 8, "body": multipart(None, version, 8, {})}))).body
    assert (f.types, f.capabilities, f.max_groups) == (0xF, 7, [0xFFFFFF00] * 4)
    band = {"type": 1, "rate": 100, "burst_size": 10}
    c = _parse(encode(Msg(version, "multipart_reply", 1, {"mp_type": 10, "body": [
        {"flags": 12, "meter_id": 9, "bands": [band]}]}))).body[0]
    assert (c.flags, c.meter_id, c.bands[0].rate, c.bands[0].burst_size) == (12, 9, 100, 10)
    ms = _parse(encode(Msg(version, "multipart_reply", 1, {"mp_type": 9, "body": [
        {"meter_id": 9, "flow_count": 1, "packet_in_count": 50, "byte_in_count": 5000, "duration_sec": 2,
         "band_stats": [{"packet_count": 40, "byte_count": 4000}]}]}))).body[0]
    flows = ms.flow_count if version == OFP13 else ms.ref_count    # 1.5 calls it ref_count
    assert (ms.meter_id, flows, ms.packet_in_count, ms.band_stats[0].packet_band_count) == (9, 1, 50, 40)
