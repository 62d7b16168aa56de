"""Plain ``ovs-ofctl`` (OpenFlow 1.0 with Nicira's NXM) and the Nicira actions in every version, against a real
ovs-vswitchd 3.1 (netdev datapath, its own rundir) as the oracle:

* the same ``add-flow`` commands (plain, ``-O OpenFlow13``, ``-O OpenFlow15``) give the same ``dump-flows`` in 1.0
  (``NXST_FLOW``), 1.3 and 1.5 from both switches: registers, xregs, metadata, ct_state, nw_ttl in matches;
  load / set_field (masked), move (1.5: copy_field), push / pop, note, clone, dec_ttl, output:reg, exit, resubmit;
* the Geneve TLV map (``add-tlv-map`` / ``del-tlv-map`` / ``dump-tlv-map``) and its errors, as OVS answers them;
* a dump longer than one OpenFlow message comes whole in every version (replies flagged REPLY_MORE);
* traffic: a pipeline of registers and resubmits programmed by plain ovs-ofctl forwards a ping, and stops it when
  the register test fails (the same test's positive twin first);
* malformed Nicira messages get an error each, and the connection lives.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from tests.ofctl_text import flow_lines
from tests.switchutil import Switch, private_switch
from tests.test_bridge_identity import RealOvs, recv_msg
from tests.test_openflow import ofctl
from tests.test_openflow_flows import two_hosts  # noqa: F401 - a fixture
from vswitch.openflow.codec import OFP10, Msg, encode

pytestmark = pytest.mark.integration

# (ovs-ofctl options, flow) pairs: what plain ovs-ofctl and the 1.3 / 1.5 ones add
FLOWS = [
    ((), "table=3,reg0=1,actions=resubmit(,4)"),
    ((), "table=4,priority=5,reg0=1,ip,nw_ttl=3,actions=load:0x5->NXM_NX_REG1[0..7],"
         "move:NXM_OF_ETH_SRC[]->NXM_NX_XXREG0[0..47],push:NXM_NX_REG0[],pop:NXM_NX_REG2[],set_field:0x7->reg3,"
         "note:aa.bb,clone(output:1),dec_ttl,output:NXM_NX_REG1[0..15],exit"),
    ((), "table=5,priority=9,metadata=0x2/0xff,in_port=1,actions=load:0x1->NXM_NX_XXREG1[],set_field:0x1->tun_id,"
         "dec_ttl(1,2),mod_nw_src:1.2.3.4,resubmit(2,7)"),
    (("-O", "OpenFlow13"), "table=6,xreg1=0x5,ct_state=+trk,ip,actions=set_field:0x3/0x3->reg9,resubmit(1,7)"),
    (("-O", "OpenFlow15"), "table=7,priority=3,reg15=0x8000/0x8000,metadata=0x1,"
                           "actions=move:NXM_NX_REG0[1..4]->NXM_NX_REG1[5..8],set_field:0x5/0xff->metadata,"
                           "set_field:0x3->reg13,push:NXM_NX_REG14[],resubmit(,8),pop:NXM_NX_REG14[]"),
    (("-O", "OpenFlow15"), "table=8,priority=100,icmp6,icmp_type=135,nd_target=fe80::1,"
                           "actions=set_field:0x1->reg10,dec_ttl,resubmit(,9)"),
    (("-O", "OpenFlow15"), "table=64,priority=100,reg10=0x1/0x1,reg15=0x2,metadata=0x3,"
                           "actions=push:NXM_OF_IN_PORT[],set_field:ANY->in_port,resubmit(,65),pop:NXM_OF_IN_PORT[]"),
    (("-O", "OpenFlow13"), "table=64,priority=100,reg15=0x3,actions=set_field:5->in_port,load:0x7->NXM_OF_IN_PORT[]"),
]
TLV_COMMANDS = [
    ("add-tlv-map", "{class=0x102,type=0x80,len=4}->tun_metadata0"),
    ("add-tlv-map", "{class=0x102,type=0x81,len=8}->tun_metadata1,{class=0x103,type=0x1,len=124}->tun_metadata5"),
    ("dump-tlv-map",),
    ("add-tlv-map", "{class=0x102,type=0x80,len=4}->tun_metadata2"),         # the same option again: DUP_ENTRY
    ("add-tlv-map", "{class=0x102,type=0x90,len=4}->tun_metadata0"),         # a mapped field: ALREADY_MAPPED
    ("add-tlv-map", "{class=0x102,type=0x91,len=124}->tun_metadata9,"        # over 256 bytes: TABLE_FULL
                    "{class=0x102,type=0x92,len=124}->tun_metadata10"),
    ("del-tlv-map", "{class=0x102,type=0x81,len=8}->tun_metadata1"),
    ("dump-tlv-map",),
    ("del-tlv-map",),
    ("dump-tlv-map",),
]


def _run(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(["ovs-ofctl", "--timeout=10", *args], capture_output=True, text=True, env=env, timeout=30)
    return proc.stdout + proc.stderr


def _program_and_dump(env: dict[str, str], bridge: str) -> dict[str, object]:
    """Add ``FLOWS``, then dump them in 1.0, 1.3 and 1.5 (normalised) and run ``TLV_COMMANDS``."""
    for opts, flow in FLOWS:
        out = _run(env, *opts, "add-flow", bridge, flow)
        assert out == "", (flow, out)
    got: dict[str, object] = {}
    for version in ("OpenFlow10", "OpenFlow13", "OpenFlow15"):
        text = _run(env, "-O", version, "dump-flows", bridge)
        got[version] = sorted(flow_lines(text), key=repr)
        assert "decode error" not in text, text
    got["plain header"] = _run(env, "dump-flows", bridge).splitlines()[0].split(" (")[0]
    tlv = []
    for cmd, *rest in TLV_COMMANDS:
        out = _run(env, cmd, bridge, *rest)
        # the error's name and the table, without xids
        tlv.append([ln for ln in out.splitlines() if "xid" not in ln or "ERROR" in ln])
        tlv[-1] = [ln.split(": ", 1)[-1] if "OFPT_ERROR" in ln else ln for ln in tlv[-1]]
    got["tlv"] = tlv
    return got


@pytest.fixture(scope="module")
def ovs_answers() -> Iterator[dict[str, object]]:
    with tempfile.TemporaryDirectory(prefix="realovs-nx-") as rundir:
        ovs = RealOvs(rundir)
        try:
            ovs.start()
            ovs.add_bridge("brnx")
            yield _program_and_dump(ovs.env, "brnx")
        finally:
            ovs.stop()


@pytest.fixture(scope="module")
def sw() -> Iterator[Switch]:
    with private_switch(prefix="pvnx-") as s:
        s.vsctl("add-br", "brnx")
        yield s


def test_nicira_flows_dump_as_ovs_dumps_them(sw: Switch, ovs_answers: dict[str, object]) -> None:
    ours = _program_and_dump(sw.env, "brnx")
    assert ours["plain header"] == ovs_answers["plain header"] == "NXST_FLOW reply"
    for version in ("OpenFlow10", "OpenFlow13", "OpenFlow15"):
        assert len(ours[version]) == len(FLOWS) + 1, ours[version]   # and table 0's NORMAL
        assert ours[version] == ovs_answers[version], version
    assert ours["tlv"] == ovs_answers["tlv"]
    assert any("tun_metadata5" in ln for ln in ours["tlv"][2]), ours["tlv"]          # the positive twin of ...
    assert ["NXTTMFC_DUP_ENTRY", "NXTTMFC_ALREADY_MAPPED", "NXTTMFC_TABLE_FULL"] == [   # ... the refusals
        next(ln for ln in ours["tlv"][i] if ln.startswith("NXTTMFC")) for i in (3, 4, 5)]


def test_long_dumps_come_whole_in_every_version(sw: Switch) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".flows") as f:
        f.write("".join(f"table=20,priority={i},reg1={i},actions=resubmit(,21)\n" for i in range(1, 3001)))
        f.flush()
        assert _run(sw.env, "add-flows", "brnx", f.name) == ""
    for version in ("OpenFlow10", "OpenFlow13", "OpenFlow15"):
        lines = flow_lines(_run(sw.env, "-O", version, "dump-flows", "brnx", "table=20"))
        assert len(lines) == 3000, version
        assert {ln.actions for ln in lines} == {"resubmit(,21)"}
    assert "flow_count=3000" in _run(sw.env, "dump-aggregate", "brnx", "table=20")
    assert _run(sw.env, "del-flows", "brnx", "table=20") == ""
    assert flow_lines(_run(sw.env, "dump-flows", "brnx", "table=20")) == []


def test_register_pipeline_from_plain_ovs_ofctl_forwards(two_hosts) -> None:  # noqa: ANN001, F811
    sw, net, na, nb, a, b = two_hosts
    ofctl(sw, "del-flows", "ofb")
    for flow in ("table=0,in_port=1,actions=set_field:0x5->reg1,push:NXM_NX_REG1[],pop:NXM_NX_REG2[],"
                 "move:NXM_NX_REG2[0..15]->NXM_NX_REG3[16..31],resubmit(,3)",
                 "table=0,in_port=2,actions=load:0x1->NXM_NX_REG0[],resubmit(,4)",
                 "table=3,reg3=0x50000,actions=output:2",
                 "table=4,reg0=1,actions=output:1"):
        assert ofctl(sw, "add-flow", "ofb", flow) == ""
    assert net.ping(na, "10.71.0.2")
    # the register test now fails: nothing is forwarded (its positive twin just passed)
    assert ofctl(sw, "mod-flows", "ofb", "table=3,reg3=0x50000,actions=drop") == ""
    assert ofctl(sw, "add-flow", "ofb", "table=3,priority=40000,reg3=0x50000,actions=drop") == ""
    assert not net.ping(na, "10.71.0.2", count=2, deadline=2)
    trace = sw.appctl("ofproto/trace", "ofb", "in_port=1,dl_src=02:00:00:00:71:01,dl_dst=02:00:00:00:71:02").stdout
    assert "resubmit(,3)" in trace and "reg3=0x50000" in trace, trace


def _raw_client(sw: Switch) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(f"{sw.rundir}/brnx.mgmt")
    s.sendall(encode(Msg(OFP10, "hello", 1)))
    assert recv_msg(s).type == "hello"
    return s


def _nx(subtype: int, body: bytes, xid: int) -> bytes:
    return encode(Msg(OFP10, "vendor", xid, {"vendor": 0x2320, "data": struct.pack("!I", subtype) + body}))


def test_malformed_nicira_messages_get_errors_and_the_connection_lives(sw: Switch) -> None:
    s = _raw_client(sw)
    try:
        bad = [
            _nx(13, bytes(10), 10),                                            # NXT_FLOW_MOD, truncated
            _nx(13, bytes(22) + struct.pack("!H", 64) + bytes(6), 11),         # match_len past the end
            _nx(13, bytes(22) + struct.pack("!H", 4) + bytes(6) + b"\xaa\xbb\x00\x00" + bytes(4), 12),  # bad TLV
            _nx(12, struct.pack("!I", 7), 13),                                 # flow format 7
            _nx(9999, b"", 14),                                                # unknown subtype
            _nx(24, struct.pack("!H6x", 9), 15),                               # TLV table mod command 9
            encode(Msg(OFP10, "vendor", 16, {"vendor": 0x1234, "data": bytes(8)})),   # another vendor
            encode(Msg(OFP10, "stats_request", 17, {"mp_type": 0xFFFF, "flags": 0,
                                                    "body": struct.pack("!II4x", 0x2320, 77)})),  # NXST 77
        ]
        for raw in bad:
            s.sendall(raw)
            reply = recv_msg(s)
            assert reply.type == "error", (raw.hex(), reply)
            assert reply.xid == struct.unpack_from("!I", raw, 4)[0]
        # the connection lives, and a good NXT_SET_FLOW_FORMAT is taken silently (the barrier answers first)
        s.sendall(_nx(12, struct.pack("!I", 2), 20) + encode(Msg(OFP10, "barrier_request", 21)))
        assert recv_msg(s).type == "barrier_reply"
    finally:
        s.close()
    assert "NXST_FLOW reply" in _run(sw.env, "dump-flows", "brnx")


TLV_FLOWS = [
    "table=30,priority=100,tun_metadata0=0x1234/0xffff,actions=move:NXM_NX_TUN_METADATA0[16..30]->NXM_NX_REG14[0..14],"
    "move:NXM_NX_TUN_METADATA0[0..15]->NXM_NX_REG15[0..15],resubmit(,31)",
    "table=31,reg15=0x8000,actions=set_field:0x8000->tun_metadata0,move:NXM_NX_REG14[0..14]->NXM_NX_TUN_METADATA0[16..30],"
    "set_field:0x5->tun_metadata1",
]


def _tlv_program(env: dict[str, str], bridge: str) -> list[object]:
    out = [_run(env, "add-tlv-map", bridge, "{class=0x102,type=0x80,len=4}->tun_metadata0,"
                                          "{class=0x102,type=0x81,len=8}->tun_metadata1")]
    out += [_run(env, "-O", "OpenFlow15", "add-flow", bridge, f) for f in TLV_FLOWS]
    for version in ("OpenFlow10", "OpenFlow13", "OpenFlow15"):
        out.append(sorted(flow_lines(_run(env, "-O", version, "dump-flows", bridge, "table=30")), key=repr))
        out.append(sorted(flow_lines(_run(env, "-O", version, "dump-flows", bridge, "table=31")), key=repr))
    _run(env, "del-flows", bridge)
    _run(env, "del-tlv-map", bridge)
    return out


def test_tun_metadata_flows_as_ovs_takes_them(sw: Switch) -> None:
    """Geneve options through the TLV map: matched (masked), moved to and from registers, set; dumped as OVS
    dumps them in every version."""
    with tempfile.TemporaryDirectory(prefix="realovs-tlv-") as rundir:
        ovs = RealOvs(rundir)
        try:
            ovs.start()
            ovs.add_bridge("brnx")
            theirs = _tlv_program(ovs.env, "brnx")
        finally:
            ovs.stop()
    ours = _tlv_program(sw.env, "brnx")
    assert ours[:3] == ["", "", ""], ours[:3]
    assert all(len(dump) == 1 for dump in ours[3:]), ours[3:]   # each table's flow came back
    assert ours == theirs


def test_options_the_key_cannot_hold_are_mapped_but_refused_in_flows(sw: Switch) -> None:
    """pyvswitch's key holds 64 bytes of options of 4 or 8·k bytes: a 124-byte option is mapped (the TLV map is
    OVS's) and a flow naming it gets an error that says why; the 4-byte one beside it works."""
    assert _run(sw.env, "add-tlv-map", "brnx", "{class=0x102,type=0x80,len=4}->tun_metadata0,"
                                             "{class=0x103,type=0x1,len=124}->tun_metadata5") == ""
    try:
        assert "tun_metadata5" in _run(sw.env, "dump-tlv-map", "brnx")
        assert _run(sw.env, "add-flow", "brnx", "table=32,tun_metadata0=0x1,actions=drop") == ""
        out = _run(sw.env, "-O", "OpenFlow13", "add-flow", "brnx", "table=32,tun_metadata5=0x1,actions=drop")
        assert "OFPBMC_BAD_FIELD" in out, out
        assert len(flow_lines(_run(sw.env, "dump-flows", "brnx", "table=32"))) == 1
    finally:
        _run(sw.env, "del-flows", "brnx", "table=32")
        _run(sw.env, "del-tlv-map", "brnx")


def _tlv_per_bridge(env: dict[str, str], vsctl: object, a: str, b: str) -> list[str]:
    """Each bridge's own TLV map as OVS keeps it: one bridge's mapping is not another's, and a bridge deleted
    and made again starts with none."""
    m0 = "{class=0x102,type=0x80,len=4}->tun_metadata0"
    out = [_run(env, "add-tlv-map", a, m0), _run(env, "dump-tlv-map", b), _run(env, "add-tlv-map", b, m0)]
    vsctl("del-br", a)                                                            # type: ignore[operator]
    vsctl("add-br", a, "--", "set", "Bridge", a, "datapath_type=netdev")          # type: ignore[operator]
    out += [_run(env, "dump-tlv-map", a), _run(env, "add-tlv-map", a, m0),
            _run(env, "dump-tlv-map", a), _run(env, "dump-tlv-map", b)]
    return out


def test_each_bridge_has_its_own_tlv_map() -> None:
    """A TLV map belongs to its bridge, as in OVS (the same dumps and answers as a real OVS); pyvswitch's one
    placement in the key refuses only an index two bridges would map to different options."""
    a, b = f"brta{os.getpid() % 10000}", f"brtb{os.getpid() % 10000}"
    with tempfile.TemporaryDirectory(prefix="realovs-tlvb-") as rundir:
        ovs = RealOvs(rundir)
        try:
            ovs.start()
            ovs.add_bridge(a)
            ovs.add_bridge(b)
            theirs = _tlv_per_bridge(ovs.env, ovs.vsctl, a, b)
        finally:
            ovs.stop()
    with private_switch() as sw:
        for br in (a, b):
            sw.vsctl("add-br", br, "--", "set", "Bridge", br, "datapath_type=netdev")
        ours = _tlv_per_bridge(sw.env, sw.vsctl, a, b)
        assert "tun_metadata0" in ours[5] and "tun_metadata0" not in ours[1], ours
        assert ours == theirs
        # the placement is shared: an index mapped to another option on the other bridge is refused, the
        # same option is not
        out = _run(sw.env, "add-tlv-map", b, "{class=0x103,type=0x1,len=8}->tun_metadata1")
        assert out == "", out
        out = _run(sw.env, "add-tlv-map", a, "{class=0x104,type=0x1,len=4}->tun_metadata1")
        assert "NXTTMFC_ALREADY_MAPPED" in out, out
        assert _run(sw.env, "add-tlv-map", a, "{class=0x103,type=0x1,len=8}->tun_metadata1") == ""
        assert "tun_metadata1" in _run(sw.env, "dump-tlv-map", a)
