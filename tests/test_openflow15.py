"""OpenFlow 1.4 and 1.5 on the wire (vswitch/openflow: codec, agent, bundles), with real peers.

* the real ``ovs-ofctl -O OpenFlow14`` / ``-O OpenFlow15``: show, add-flow, dump-flows, dump-aggregate, dump-ports,
  dump-ports-desc, dump-tables, dump-table-features, meter-features, mod-port, packet-out, ``--bundle add-flows``
  (atomic: a file whose last flow is refused, at add or at commit, applies nothing and the error names it);
* os-ken's OpenFlow 1.4 / 1.5 parsers: what a controller sends is built by os-ken and by our codec to the same
  bytes (and decodes back); what the switch sends, os-ken parses to the values we encoded;
* a real ovs-vswitchd 3.1 (netdev datapath, its own namespace): the same HELLOs and the same bundle mistakes get
  the same answers (version negotiated, error type and code) from both.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from os_ken.ofproto import ofproto_parser
from os_ken.ofproto import ofproto_v1_4_parser as p14
from os_ken.ofproto import ofproto_v1_5_parser as p15
from os_ken.ofproto.ofproto_protocol import ProtocolDesc

from tests.netutil import send_frames, unique
from tests.switchutil import private_switch
from tests.test_bridge_identity import RealOvs, recv_msg, running_ovs
from tests.test_openflow import Client
from tests.test_openflow_flows import Controller
from vswitch.openflow.codec import (
    OFP13,
    OFP14,
    OFP15,
    OFP_NO_BUFFER,
    ONF_ET_BUNDLE_ADD_MESSAGE,
    ONF_ET_BUNDLE_CONTROL,
    ONF_VENDOR_ID,
    Msg,
    decode,
    decode_body,
    encode,
    encode_body,
)

pytestmark = pytest.mark.integration

ARP = ("ffffffffffff0000000000010806000108000604000100000000000" "1c0a80001000000000000c0a80002")
OFPET_BUNDLE_FAILED = 17


def ofctl(sw, *args: str, check: bool = True) -> subprocess.CompletedProcess:  # noqa: ANN001 - Switch / RealOvs
    proc = subprocess.run(["ovs-ofctl", "--timeout=10", *args], capture_output=True, text=True, env=sw.env,
                          timeout=20)
    if check:
        assert proc.returncode == 0, (args, proc.stderr)
    return proc


@pytest.fixture(scope="module")
def sw() -> Iterator:
    """One pyvswitch for the module, with bridge ``br15`` and internal port ``p7`` (OpenFlow port 7)."""
    with private_switch(prefix="pvof15-") as s:
        s.vsctl("add-br", "br15", "--", "add-port", "br15", "p7", "--", "set", "Interface", "p7", "type=internal",
                "ofport_request=7")
        yield s


@pytest.fixture(scope="module")
def real_ovs() -> Iterator[RealOvs]:
    """A real ovs-vswitchd with bridge ``br15`` on the userspace datapath."""
    with running_ovs("realovs15-", "br15") as ovs:
        yield ovs


# ---------------------------------------------------------------- ovs-ofctl
@pytest.mark.parametrize("proto", ["OpenFlow14", "OpenFlow15"])
def test_ovs_ofctl_speaks_1_4_and_1_5(sw, proto: str) -> None:  # noqa: ANN001
    tag = "OF1.4" if proto == "OpenFlow14" else "OF1.5"
    o = ("-O", proto)
    show = ofctl(sw, *o, "show", "br15").stdout
    assert f"OFPT_FEATURES_REPLY ({tag})" in show and " 7(p7): addr:" in show and "LOCAL(br15)" in show, show
    assert "speed: 10000 Mbps now" in show, show                     # the port's Ethernet property
    table = 10 if proto == "OpenFlow14" else 11
    ofctl(sw, *o, "add-flow", "br15", f"table={table},priority=7,ip,nw_dst=10.1.2.3,actions=output:7")
    flows = ofctl(sw, *o, "dump-flows", "br15", f"table={table}").stdout
    assert f"OFPST_FLOW reply ({tag})" in flows and "priority=7,ip,nw_dst=10.1.2.3 actions=output:7" in flows, flows
    agg = ofctl(sw, *o, "dump-aggregate", "br15", f"table={table}").stdout
    assert "flow_count=1" in agg, agg
    ports = ofctl(sw, *o, "dump-ports", "br15", "7").stdout
    assert "port  7: rx pkts=0" in ports and "frame=0, over=0, crc=0" in ports and "coll=0" in ports, ports
    assert "7(p7)" in ofctl(sw, *o, "dump-ports-desc", "br15").stdout
    assert f"table {table}:" in ofctl(sw, *o, "dump-tables", "br15").stdout
    assert "table 0:" in ofctl(sw, *o, "dump-table-features", "br15").stdout   # unnamed, as OVS's
    assert "max_meter:262144 max_bands:8" in ofctl(sw, *o, "meter-features", "br15").stdout   # OVS netdev's
    ofctl(sw, *o, "packet-out", "br15", f"in_port=7 packet={ARP} actions=output:LOCAL")
    bad = ofctl(sw, *o, "packet-out", "br15", f"in_port=99 packet={ARP} actions=output:LOCAL", check=False)
    assert bad.returncode != 0 and "OFPBRC_BAD_PORT" in bad.stderr, bad.stderr   # negative twin: not a port
    ofctl(sw, *o, "mod-port", "br15", "p7", "down")
    sw.wait_for("admin down", lambda: sw.get("Interface", "p7", "admin_state") == "down")
    assert "PORT_DOWN" in ofctl(sw, *o, "dump-ports-desc", "br15").stdout
    ofctl(sw, *o, "mod-port", "br15", "p7", "up")
    sw.wait_for("admin up", lambda: sw.get("Interface", "p7", "admin_state") == "up")
    ofctl(sw, *o, "del-flows", "br15", f"table={table}")


def _flows_file(tmp_path, name: str, lines: list[str]) -> str:  # noqa: ANN001
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize("proto", ["OpenFlow13", "OpenFlow14", "OpenFlow15"])
def test_bundle_add_flows_is_atomic(sw, tmp_path, proto: str) -> None:  # noqa: ANN001
    """``ovs-ofctl --bundle add-flows``: a good file applies whole; a file whose last flow is refused when it is
    added (table 254: OVS's hidden one) or when the bundle commits (check_overlap against the file's own first
    flow) applies nothing, and the error names that flow. OpenFlow 1.3: ovs-ofctl uses the ONF extension."""
    o = ("-O", proto, "--bundle")
    table = {"OpenFlow13": 22, "OpenFlow14": 20, "OpenFlow15": 21}[proto]
    good = _flows_file(tmp_path, "good", [f"table={table},priority=1,actions=drop",
                                          f"table={table},priority=2,ip,actions=output:7"])
    ofctl(sw, *o, "add-flows", "br15", good)
    dump = ofctl(sw, "-O", proto, "dump-flows", "br15", f"table={table}").stdout
    assert "priority=1 actions=drop" in dump and "priority=2,ip actions=output:7" in dump, dump
    ofctl(sw, "-O", proto, "del-flows", "br15", f"table={table}")

    at_add = _flows_file(tmp_path, "at_add", [f"table={table},priority=1,actions=drop", "table=254,actions=drop"])
    bad = ofctl(sw, *o, "add-flows", "br15", at_add, check=False)
    assert bad.returncode != 0 and "Error OFPBRC_EPERM" in bad.stderr and "table:254" in bad.stderr, bad
    at_commit = _flows_file(tmp_path, "at_commit", [f"table={table},priority=5,ip,actions=drop",
                                                    f"table={table},priority=6,udp,actions=drop",
                                                    f"table={table},check_overlap,priority=5,tcp,actions=drop"])
    bad = ofctl(sw, *o, "add-flows", "br15", at_commit, check=False)
    assert bad.returncode != 0 and "Error OFPFMFC_OVERLAP" in bad.stderr and "OFPBFC_MSG_FAILED" in bad.stderr, bad
    assert "priority=5,tcp" in bad.stderr.replace("priority:5", "priority=5").replace(" tcp", ",tcp"), bad.stderr
    dump = ofctl(sw, "-O", proto, "dump-flows", "br15", f"table={table}").stdout
    assert "priority" not in dump, dump     # nothing of either bundle applied


# ---------------------------------------------------------------- raw bundles: errors, and the connection lives
def _bundle_msg(version: int, name: str, xid: int, fields: dict) -> bytes:
    """A 1.4+ bundle message, or in OpenFlow 1.3 its ONF experimenter twin."""
    if version == OFP13:
        return encode(Msg(OFP13, "experimenter", xid, {
            "experimenter": ONF_VENDOR_ID, "data": encode_body(OFP13, name, fields),
            "exp_type": ONF_ET_BUNDLE_CONTROL if name == "bundle_control" else ONF_ET_BUNDLE_ADD_MESSAGE}))
    return encode(Msg(version, name, xid, fields))


def bundle_ctrl(version: int, xid: int, bundle_id: int, ctrl_type: int, flags: int = 0) -> bytes:
    return _bundle_msg(version, "bundle_control", xid, {"bundle_id": bundle_id, "ctrl_type": ctrl_type,
                                                        "flags": flags})


def bundle_add(version: int, xid: int, bundle_id: int, inner: bytes, flags: int = 0) -> bytes:
    return _bundle_msg(version, "bundle_add_message", xid, {"bundle_id": bundle_id, "flags": flags,
                                                            "message": inner})


def flow_add(version: int, xid: int, table: int, priority: int = 9, flags: int = 0, ip: bool = True) -> bytes:
    return encode(Msg(version, "flow_mod", xid, {"table_id": table, "command": 0, "priority": priority,
                                                  "buffer_id": OFP_NO_BUFFER, "out_port": 0xFFFFFFFF,
                                                  "out_group": 0xFFFFFFFF, "flags": flags,
                                                  "match": {"eth_type": 0x0800} if ip else {}, "instructions": []}))


#: (what, messages to send) -> the answer expected, as (message type, error type, error code) in order; the
#: same script goes to pyvswitch and to real OVS
BUNDLE_SCRIPTS = [
    ("open, add, close, commit", lambda v: [bundle_ctrl(v, 1, 5, 0, 3), bundle_add(v, 2, 5, flow_add(v, 2, 30), 3),
                                            bundle_ctrl(v, 3, 5, 2, 3), bundle_ctrl(v, 4, 5, 4, 3)]),
    ("commit of an unknown id", lambda v: [bundle_ctrl(v, 1, 6, 4)]),
    ("open twice", lambda v: [bundle_ctrl(v, 1, 7, 0), bundle_ctrl(v, 2, 7, 0)]),
    ("add to a closed bundle", lambda v: [bundle_ctrl(v, 1, 8, 0), bundle_ctrl(v, 2, 8, 2),
                                          bundle_add(v, 3, 8, flow_add(v, 3, 30))]),
    ("embedded xid differs", lambda v: [bundle_ctrl(v, 1, 9, 0), bundle_add(v, 2, 9, flow_add(v, 99, 30))]),
    ("embedded barrier", lambda v: [bundle_ctrl(v, 1, 10, 0),
                                    bundle_add(v, 2, 10, encode(Msg(v, "barrier_request", 2)))]),
    ("embedded version differs", lambda v: [bundle_ctrl(v, 1, 15, 0),
                                            bundle_add(v, 2, 15, bytes([v - 1]) + flow_add(v, 2, 30)[1:])]),
    ("embedded longer than its carrier", lambda v: [
        bundle_ctrl(v, 1, 16, 0), bundle_add(v, 2, 16, flow_add(v, 2, 30)[:-8])]),
    ("embedded unknown type", lambda v: [bundle_ctrl(v, 1, 17, 0),
                                         bundle_add(v, 2, 17, struct.pack("!BBHI", v, 99, 8, 2))]),
    ("embedded flow-mod cut short", lambda v: [bundle_ctrl(v, 1, 18, 0),
                                               bundle_add(v, 2, 18, struct.pack("!BBHI", v, 14, 16, 2) + bytes(8))]),
    ("embedded flow-mod with a bad instruction", lambda v: [
        bundle_ctrl(v, 1, 19, 0), bundle_add(v, 2, 19, _bad_instruction(flow_add(v, 2, 30)))]),
    ("a reply type as request", lambda v: [bundle_ctrl(v, 1, 11, 1)]),
    ("commit flags differ", lambda v: [bundle_ctrl(v, 1, 12, 0, 1), bundle_ctrl(v, 2, 12, 4, 3)]),
    ("commit fails on the last message", lambda v: [
        bundle_ctrl(v, 1, 14, 0, 3), bundle_add(v, 2, 14, flow_add(v, 2, 31, 40), 3),
        bundle_add(v, 3, 14, flow_add(v, 3, 31, 40, flags=2, ip=False), 3), bundle_ctrl(v, 4, 14, 4, 3)]),
    ("discard", lambda v: [bundle_ctrl(v, 1, 13, 0), bundle_add(v, 2, 13, flow_add(v, 2, 31)),
                           bundle_ctrl(v, 3, 13, 6), bundle_ctrl(v, 4, 13, 4)]),
]


def _bad_instruction(flow_mod: bytes) -> bytes:
    """The flow-mod with an instruction of an unknown type (99) appended."""
    out = bytearray(flow_mod + struct.pack("!HH4x", 99, 8))
    struct.pack_into("!H", out, 2, len(out))
    return bytes(out)


def run_script(path: str, version: int, messages: list[bytes]) -> list[tuple]:
    """Send ``messages`` on a fresh connection, then an echo; the answers before the echo reply (type, and error
    type and code), and that the echo came back (the connection lives)."""
    c = Client(path, version)
    try:
        c.sock.sendall(b"".join(messages) + encode(Msg(version, "echo_request", 777, {"data": b"alive"})))
        out: list[tuple] = []
        while True:
            m = c.recv()
            if m.type == "echo_reply" and m.xid == 777:
                return out
            if m.type == "error":
                out.append(("error", m.xid, m.err_type, m.code))
            elif m.type == "bundle_control":
                out.append(("bundle_control", m.xid, m.ctrl_type))
            elif m.type == "experimenter" and m.exp_type == ONF_ET_BUNDLE_CONTROL:
                out.append(("bundle_control", m.xid, decode_body(OFP13, "bundle_control", m.data)["ctrl_type"]))
            else:
                out.append((m.type, m.xid))
    finally:
        c.sock.close()


@pytest.mark.parametrize("version", [OFP13, OFP14, OFP15])
def test_bundle_errors_as_real_ovs_sends_them(sw, real_ovs: RealOvs, version: int) -> None:  # noqa: ANN001
    """Each script gets the same replies and errors (by xid, type and code) from pyvswitch and from OVS; the
    positive twin (open, add, close, commit) gets replies only, and its flow is there afterwards. OpenFlow 1.3:
    the ONF extension (experimenter messages; errors OFPET_EXPERIMENTER with ONF's codes)."""
    for what, script in BUNDLE_SCRIPTS:
        ours = run_script(f"{sw.rundir}/br15.mgmt", version, script(version))
        theirs = run_script(f"{real_ovs.rundir}/br15.mgmt", version, script(version))
        assert ours == theirs, (what, ours, theirs)
        if what.startswith("open, add"):
            assert all(kind != "error" for kind, *_ in ours), ours
        else:
            assert any(kind == "error" for kind, *_ in ours), (what, ours)
    for target in (sw, real_ovs):
        flows = ofctl(target, "-O", "OpenFlow15", "dump-flows", "br15", "table=30").stdout
        assert "priority=9,ip" in flows, flows
        assert "priority=" not in ofctl(target, "-O", "OpenFlow15", "dump-flows", "br15", "table=31").stdout
        ofctl(target, "-O", "OpenFlow15", "del-flows", "br15", "table=30")


def _hello(version: int, bitmap: int | None) -> bytes:
    fields = {"elements": [{"type": 1, "bitmaps": [bitmap]}]} if bitmap is not None else {}
    return encode(Msg(version, "hello", 1, fields))


def negotiate(path: str, hello: bytes) -> tuple:
    """Send ``hello`` and a features request in the version it names; (the switch's hello version and bitmap,
    what came back: the features reply's version or the error's type and code)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    try:
        def recv() -> Msg | None:
            return recv_msg(s)

        theirs = recv()
        assert theirs is not None
        bitmap = struct.unpack_from("!I", hello, 12)[0] if len(hello) > 8 else (1 << hello[0] + 1) - 1
        version = max(v for v in (1, OFP13, OFP14, OFP15) if bitmap >> v & 1) if bitmap & 0b1110010 else 1
        s.sendall(hello + encode(Msg(version, "features_request", 2)))
        answer = recv()
        got = None if answer is None else (answer.type, answer.version) if answer.type != "error" else (
            "error", answer.err_type, answer.code)
        return theirs.version, got
    finally:
        s.close()


def test_version_negotiation_as_real_ovs(sw, real_ovs: RealOvs) -> None:  # noqa: ANN001
    """HELLOs of 1.5 (bitmap 1.5 only, as ovn-controller sends), 1.4, 1.5 with 1.0 and 1.4 in its bitmap, 1.3,
    and one offering only version 0x07 (which neither takes): the same version, or the same HELLO_FAILED, from
    both. Both offer up to 1.5 in their HELLO (OVS's default: 1.0 to 1.5)."""
    cases = [_hello(OFP15, 1 << OFP15), _hello(OFP14, None), _hello(OFP15, 1 << 1 | 1 << OFP14),
             _hello(OFP13, None), struct.pack("!BBHIHHI", 7, 0, 16, 1, 1, 8, 1 << 7)]
    for hello in cases:
        ours = negotiate(f"{sw.rundir}/br15.mgmt", hello)
        theirs = negotiate(f"{real_ovs.rundir}/br15.mgmt", hello)
        assert ours == theirs, (hello.hex(), ours, theirs)
        assert ours[0] == OFP15
    assert negotiate(f"{sw.rundir}/br15.mgmt", cases[0])[1] == ("features_reply", OFP15)
    assert negotiate(f"{sw.rundir}/br15.mgmt", cases[-1])[1][:2] == ("error", 0)


# ---------------------------------------------------------------- os-ken: byte for byte
def _osken(version: int) -> tuple:
    return (p14, ProtocolDesc(version=OFP14)) if version == OFP14 else (p15, ProtocolDesc(version=OFP15))


@pytest.mark.parametrize("version", [OFP14, OFP15])
def test_controller_messages_match_os_ken_byte_for_byte(version: int) -> None:
    """Messages a controller sends, built by os-ken and by our codec: the same bytes, and ours decodes os-ken's."""
    p, dp = _osken(version)
    out = p.OFPActionOutput(2, 0)
    ins = [p.OFPInstructionActions(4, [out])]
    pairs = [
        (p.OFPFlowMod(dp, cookie=1, table_id=3, command=0, priority=5, buffer_id=OFP_NO_BUFFER, importance=9,
                      out_port=0, out_group=0, match=p.OFPMatch(in_port=1, eth_type=0x0800), instructions=ins),
         Msg(version, "flow_mod", 0, {"cookie": 1, "table_id": 3, "command": 0, "priority": 5, "importance": 9,
                                      "buffer_id": OFP_NO_BUFFER, "match": {"in_port": 1, "eth_type": 0x0800},
                                      "instructions": [{"type": "apply_actions", "actions": [
                                          {"type": "output", "port": 2, "max_len": 0}]}]})),
        (p.OFPBundleCtrlMsg(dp, bundle_id=7, type_=4, flags=3, properties=[]),
         Msg(version, "bundle_control", 0, {"bundle_id": 7, "ctrl_type": 4, "flags": 3})),
        (p.OFPSetAsync(dp, properties=[p.OFPAsyncConfigPropReasons(type_=1, mask=3),
                                       p.OFPAsyncConfigPropReasons(type_=2, mask=5)]),
         Msg(version, "set_async", 0, {"properties": [{"prop_type": 1, "mask": 3}, {"prop_type": 2, "mask": 5}]})),
        (p.OFPPortMod(dp, port_no=7, hw_addr="0a:00:00:00:00:01", config=1, mask=1, properties=[]),
         Msg(version, "port_mod", 0, {"port_no": 7, "hw_addr": 0x0A0000000001, "config": 1, "mask": 1})),
        (p.OFPRoleRequest(dp, role=2, generation_id=4),
         Msg(version, "role_request", 0, {"role": 2, "generation_id": 4})),
    ]
    inner = p.OFPFlowMod(dp, table_id=3, command=0, priority=5, buffer_id=OFP_NO_BUFFER, match=p.OFPMatch(),
                         instructions=[])
    inner.set_xid(0)
    inner.serialize()
    pairs.append((p.OFPBundleAddMsg(dp, bundle_id=7, flags=3, message=inner, properties=[]),
                  Msg(version, "bundle_add_message", 0, {"bundle_id": 7, "flags": 3, "message": bytes(inner.buf)})))
    if version == OFP15:
        pairs.append((p.OFPPacketOut(dp, buffer_id=OFP_NO_BUFFER, match=p.OFPMatch(in_port=7), actions=[out],
                                     data=b"xyz"),
                      Msg(version, "packet_out", 0, {"buffer_id": OFP_NO_BUFFER, "match": {"in_port": 7},
                                                     "actions": [{"type": "output", "port": 2, "max_len": 0}],
                                                     "data": b"xyz"})))
    for theirs, ours in pairs:
        theirs.set_xid(0)
        theirs.serialize()
        assert bytes(theirs.buf) == encode(ours), (type(theirs).__name__, bytes(theirs.buf).hex(), encode(ours).hex())
        back = decode(bytes(theirs.buf))
        assert {k: back.fields[k] for k in ours.fields} == ours.fields, (back, ours)


def _parse(raw: bytes):  # noqa: ANN202 - an os-ken message
    version, mtype, length, xid = struct.unpack_from("!BBHI", raw)
    return ofproto_parser.msg(ProtocolDesc(version=version), version, mtype, length, xid, raw)


@pytest.mark.parametrize("version", [OFP14, OFP15])
def test_switch_messages_parse_in_os_ken(version: int) -> None:
    """Messages the switch sends, encoded by our codec: os-ken's parser reads back the values we put in."""
    port = {"port_no": 7, "hw_addr": 0x0A0000000001, "name": "p7", "config": 0, "state": 4, "curr": 0x840,
            "curr_speed": 10_000_000, "eth_prop_len": 32}
    m = _parse(encode(Msg(version, "port_status", 0, {"reason": 2, "desc": port})))
    prop = m.desc.properties[0]
    assert (m.reason, m.desc.port_no, m.desc.name, m.desc.state, prop.curr, prop.curr_speed) == \
        (2, 7, b"p7", 4, 0x840, 10_000_000)
    m = _parse(encode(Msg(version, "multipart_reply", 1, {"mp_type": 13, "body": [port, dict(port, port_no=8)]})))
    assert [pd.port_no for pd in m.body] == [7, 8]
    m = _parse(encode(Msg(version, "multipart_reply", 1, {"mp_type": 4, "body": [
        {"port_no": 7, "rx_packets": 3, "tx_bytes": 11, "collisions": 2, "eth_prop_len": 40, "duration_sec": 1}]})))
    st = m.body[0]
    assert (st.port_no, st.rx_packets, st.tx_bytes, st.duration_sec, st.properties[0].collisions) == (7, 3, 11, 1, 2)
    m = _parse(encode(Msg(version, "packet_in", 0, {"buffer_id": OFP_NO_BUFFER, "total_len": 4, "reason": 1,
                                                    "table_id": 3, "cookie": 5, "match": {"in_port": 7},
                                                    "data": b"abcd"})))
    assert (m.match["in_port"], m.reason, m.table_id, m.cookie, m.data) == (7, 1, 3, 5, b"abcd")
    m = _parse(encode(Msg(version, "role_status", 0, {"role": 3, "reason": 0, "generation_id": 5})))
    assert (m.role, m.reason, m.generation_id) == (3, 0, 5)
    m = _parse(encode(Msg(version, "get_async_reply", 3, {"properties": [
        {"prop_type": t, "mask": t + 1} for t in range(8)]})))
    assert [(pr.type, pr.mask) for pr in m.properties] == [(t, t + 1) for t in range(8)]
    m = _parse(encode(Msg(version, "bundle_control", 3, {"bundle_id": 7, "ctrl_type": 5, "flags": 0})))
    assert (m.bundle_id, m.type, m.flags) == (7, 5, 0)
    m = _parse(encode(Msg(version, "features_reply", 4, {"datapath_id": 5, "n_tables": 32, "capabilities": 7})))
    assert (m.datapath_id, m.n_tables, m.capabilities) == (5, 32, 7)
    stats = {"duration": 5 << 32, "idle_time": 1 << 32, "packet_count": 3, "byte_count": 9}
    flow = {"table_id": 1, "priority": 5, "cookie": 9, "match": {"in_port": 1}, "stats": stats, "packet_count": 3,
            "byte_count": 9, "instructions": [{"type": "goto_table", "table_id": 4}]}
    m = _parse(encode(Msg(version, "multipart_reply", 4, {"mp_type": 1, "body": [flow]})))
    f = m.body[0]
    assert (f.table_id, f.priority, f.cookie, f.match["in_port"], f.instructions[0].table_id) == (1, 5, 9, 1, 4)
    if version == OFP15:
        assert f.stats["packet_count"] == 3 and f.stats["byte_count"] == 9 and f.stats["duration"] == (5, 0)
        agg = {"stats": {"packet_count": 1, "byte_count": 2, "flow_count": 3}}
        m = _parse(encode(Msg(version, "multipart_reply", 4, {"mp_type": 2, "body": agg})))
        assert dict(m.body.stats.fields if hasattr(m.body.stats, "fields") else m.body.stats.oxs_fields) == \
            agg["stats"]
    else:
        assert (f.packet_count, f.byte_count) == (3, 9)
        # OVS's meter features reply is 1.3's 16 bytes in every version (os-ken's 1.5 parser wants 1.5's 24)
        m = _parse(encode(Msg(version, "multipart_reply", 4, {"mp_type": 11, "body": {"max_meter": 4}})))
        assert m.body[0].max_meter == 4


# ---------------------------------------------------------------- roles and asynchronous configuration
def test_role_status_and_async_properties(sw) -> None:  # noqa: ANN001
    """A 1.4+ master displaced by another master gets OFPT_ROLE_STATUS (slave, reason MASTER_REQUEST) and is a
    slave after it (a flow-mod gets OFPBRC_IS_SLAVE); the new master's flow-mod goes through. SET_ASYNC's 1.4
    properties change only the reasons named, GET_ASYNC gives them back."""
    path = f"{sw.rundir}/br15.mgmt"
    first, second = Client(path, OFP15), Client(path, OFP14)
    try:
        first.sock.sendall(encode(Msg(OFP15, "role_request", 3, {"role": 2, "generation_id": 1})))
        reply = first.recv()
        assert reply.type == "role_reply" and reply.role == 2, reply
        second.sock.sendall(encode(Msg(OFP14, "role_request", 4, {"role": 2, "generation_id": 2})))
        assert second.recv().role == 2
        status = first.recv()
        assert status.type == "role_status" and (status.role, status.reason, status.generation_id) == (3, 0, 2)
        first.sock.sendall(flow_add(OFP15, 5, 25))
        err = first.recv()
        assert err.type == "error" and (err.err_type, err.code, err.xid) == (1, 10, 5), err
        second.sock.sendall(flow_add(OFP14, 6, 25))
        assert second.echo().type == "echo_reply"                       # the positive twin: no error first
        assert "priority=9,ip" in ofctl(sw, "-O", "OpenFlow15", "dump-flows", "br15", "table=25").stdout

        second.sock.sendall(encode(Msg(OFP14, "get_async_request", 7)))
        before = {p["prop_type"]: p["mask"] for p in second.recv().properties}
        assert before[1] == 0b011 and before[3] == 0b111, before          # OVS's defaults: PI master, PS master
        second.sock.sendall(encode(Msg(OFP14, "set_async", 8, {"properties": [{"prop_type": 1, "mask": 0b001}]})))
        second.sock.sendall(encode(Msg(OFP14, "get_async_request", 9)))
        after = {p["prop_type"]: p["mask"] for p in second.recv().properties}
        assert after == {**before, 1: 0b001}, after
    finally:
        first.sock.close()
        second.sock.close()
        ofctl(sw, "-O", "OpenFlow15", "del-flows", "br15", "table=25")


# ---------------------------------------------------------------- a 1.5 controller: packet-in, port status
class Controller15(Controller):
    """A raw controller on a ``punix:`` socket that offers OpenFlow 1.5 only (as ovn-controller does)."""

    def __init__(self, path: str) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(5)
                s.connect(path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.sock, self.version = s, OFP15
        assert self.recv().type == "hello"
        self.sock.sendall(_hello(OFP15, 1 << OFP15))

    def wait(self, kind: str, timeout: float = 10) -> Msg:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.recv()
            if msg.type == "echo_request":
                self.send(Msg(OFP15, "echo_reply", msg.xid, {"data": msg.data}))
            elif msg.type == kind:
                return msg
        raise AssertionError(f"no {kind} within {timeout} s")


def test_a_1_5_controller_gets_packet_ins_and_port_status(switch, net, tmp_path) -> None:  # noqa: ANN001
    """A controller offering 1.5 alone: a CONTROLLER action's packet-in (1.5, the match carrying in_port), a
    port-status with the Ethernet property when a port is added, and its 1.5 packet-out (in_port in the match)
    goes out of the port named."""
    stem = unique("of15")
    name = f"{stem}s"
    net.add_host(f"{stem}-na", f"{stem}a", "10.76.0.1/24", mac="02:00:00:00:76:01")
    path = str(tmp_path / "ctl.sock")
    switch.vsctl("add-br", name, "--", "add-port", name, f"{stem}a", "--", "set", "Interface", f"{stem}a",
                 "ofport_request=1", "--", "set-controller", name, f"punix:{path}")
    ctl = Controller15(path)
    switch.wait_for("controller connected", lambda: switch.get("Controller", name, "is_connected") == "true")
    ofctl(switch, "-O", "OpenFlow15", "add-flow", name, "priority=10,dl_type=0x88b6,actions=CONTROLLER:65535")
    frame = bytes.fromhex("ffffffffffff020000007601" "88b6") + b"to the controller".ljust(46, b".")
    other = bytes.fromhex("ffffffffffff020000007601" "88b7") + b"no flow".ljust(46, b".")
    send_frames(net, f"{stem}-na", "eth0", [other, frame])
    pin = ctl.wait("packet_in")
    assert pin.version == OFP15 and pin.match == {"in_port": 1} and pin.data == frame, pin   # not `other`
    net.add_host(f"{stem}-nb", f"{stem}b", "10.76.0.2/24")
    switch.vsctl("add-port", name, f"{stem}b", "--", "set", "Interface", f"{stem}b", "ofport_request=2")
    status = ctl.wait("port_status")
    assert status.version == OFP15 and status.desc["port_no"] == 2 and status.desc["eth_prop_len"] == 32, status
    ctl.send(Msg(OFP15, "packet_out", 9, {"buffer_id": OFP_NO_BUFFER, "match": {"in_port": 0xFFFFFFFD},
                                          "actions": [{"type": "output", "port": 1, "max_len": 0}], "data": frame}))
    ctl.send(Msg(OFP15, "packet_out", 10, {"buffer_id": OFP_NO_BUFFER, "match": {"in_port": 1, "eth_type": 0x88b6},
                                           "actions": [], "data": frame}))
    err = ctl.wait("error")
    assert err.xid == 10 and (err.err_type, err.code) == (4, 6), err    # only in_port: the first went through
    sw_stats = ofctl(switch, "-O", "OpenFlow15", "dump-ports", name, "1").stdout
    assert "tx pkts=1" in sw_stats, sw_stats


# ---------------------------------------------------------------- fuzz: malformed bundled messages
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(version=st.sampled_from([OFP13, OFP14, OFP15]), mtype=st.sampled_from([13, 14, 16, 2, 99]),
       body=st.binary(max_size=96), cut=st.integers(0, 12))
def test_fuzzed_bundled_messages_get_errors_and_the_connection_lives(sw, version: int, mtype: int, body: bytes,
                                                                     cut: int) -> None:  # noqa: ANN001
    """A bundle gets an embedded message of a bundlable type (or not) with a random body, maybe cut short: it is
    refused with an error or taken, the commit succeeds or fails with OFPBFC_MSG_FAILED (never a crash), and an
    echo comes back on the same connection."""
    inner = struct.pack("!BBHI", version, mtype, 8 + len(body), 2) + body
    msgs = [bundle_ctrl(version, 1, 3, 0), bundle_add(version, 2, 3, inner[:len(inner) - cut] if cut < 8 else inner),
            bundle_ctrl(version, 3, 3, 4)]
    answers = run_script(f"{sw.rundir}/br15.mgmt", version, msgs)
    assert answers[0] == ("bundle_control", 1, 1), answers
    for kind, xid, *rest in answers[1:]:
        assert kind == "error" or (kind, rest) == ("bundle_control", [5]), answers
        assert xid in (2, 3), answers
    ofctl(sw, "-O", "OpenFlow15", "del-flows", "br15")
