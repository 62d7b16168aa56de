"""packet-in2, ``controller(userdata, pause)`` and NXT_RESUME (``vswitch.openflow.packetin2``, ``xlate.pause``).

* codec: NXAST_CONTROLLER2 byte for byte as ``ovs-ofctl`` writes it and as os-ken's NXActionController2 does;
  NXT_PACKET_IN2 byte for byte as a real OVS 3.1 sent it (captured: the same packet and flows);
* the translator: a pause inside a resubmit freezes the outer lists too; the resume runs them in order and the
  paused megaflow outputs nothing; a continuation that was tampered with is stale;
* a real ``ovs-ofctl monitor ... resume`` peer against the daemon: a ping (netns / veth) through
  ``load:2->reg0,controller(userdata=...,pause),resubmit(,1)`` / ``output:reg0`` crosses only through the resume
  (without the monitor: nothing), and the monitor prints the userdata and registers as OVS prints them; the
  same flows and packets give the same ``ovs-ofctl monitor`` text from pyvswitch and from a real OVS;
* malformed NXT_SET_PACKET_IN_FORMAT / NXT_RESUME messages get the errors a real ovs-vswitchd sends (each
  version's numbering), and the connection lives.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from os_ken.ofproto import ofproto_v1_3_parser as p

from dpif import actions as A
from dpif.extract_ref import extract
from ofproto import fields as F
from ofproto.actions import FieldValue, format_controller
from ofproto.rules import Controller, Flow, Instructions, Load, Match, Output, Resubmit
from ofproto.tables import FlowTables
from tests.netutil import unique
from tests.switchutil import private_switch
from tests.test_bridge_identity import RealOvs
from tests.test_xlate_nicira import tcp
from vswitch.openflow import nicira, packetin2
from vswitch.openflow.codec import OfpError, encode
from xlate import pause
from xlate.translate import UpcallCookies, translate

# ---------------------------------------------------------------- codec
#: what ovs-ofctl 3.1 writes (captured from its flow-mods) for these actions
OVS_ACTIONS = {
    "controller(reason=no_match,max_len=100,id=3,userdata=01.02)":
        "ffff00300000232000250000000000000000000800640000000100080003000000020005000000000003000601020000",
    "controller(userdata=00.00.00.0b.00,pause,meter_id=2)":
        "ffff0030000023200025000000000000000300090000000b000000000000000000040004000000000005000800000002",
}


def _enc(a: dict) -> bytes:
    return nicira.encode_action(a, lambda acts: b"")


def _dec(raw: bytes) -> dict:
    return nicira.decode_action(raw, lambda b: [])


@pytest.mark.parametrize("text", list(OVS_ACTIONS))
def test_controller2_is_what_ovs_ofctl_writes(text: str) -> None:
    """Decoded, the Controller action it makes prints as ovs-ofctl's text and encodes back to the same bytes."""
    raw = bytes.fromhex(OVS_ACTIONS[text])
    action = packetin2.controller_from_wire(_dec(raw))
    assert format_controller(action) == text
    assert _enc(packetin2.controller_to_wire(action)) == raw


def test_controller2_matches_os_ken_byte_for_byte() -> None:
    theirs = p.NXActionController2(max_len=100, controller_id=3, reason=0, userdata=[1, 2], pause=True)
    buf = bytearray()
    theirs.serialize(buf, 0)
    mine = {"type": "nx_controller2", "max_len": 100, "controller_id": 3, "reason": 0, "userdata": b"\1\2",
            "pause": True}
    assert _dec(bytes(buf)) == mine and _enc(mine) == bytes(buf)


def test_controller2_bad_properties_are_refused() -> None:
    raw = bytearray(bytes.fromhex(OVS_ACTIONS["controller(userdata=00.00.00.0b.00,pause,meter_id=2)"]))
    raw[32:34] = b"\x00\x63"             # the pause property's type: 99
    with pytest.raises(OfpError) as e:
        _dec(bytes(raw))
    assert (e.value.err_type, e.value.code) == (nicira.OFPET_BAD_PROPERTY, nicira.OFPBPC_BAD_TYPE)
    raw[32:36] = b"\x00\x04\x00\x30"     # a length past the action
    with pytest.raises(OfpError) as e:
        _dec(bytes(raw))
    assert e.value.code == nicira.OFPBPC_BAD_LEN


def test_simple_controller_actions_print_as_ovs() -> None:
    assert format_controller(Controller()) == "CONTROLLER:65535"
    assert format_controller(Controller(controller_id=3)) == "controller(id=3)"
    assert packetin2.controller_to_wire(Controller(controller_id=3)) == {
        "type": "nx_controller", "max_len": 65535, "controller_id": 3, "reason": 1}


BR = unique("pib")   # the bridge of the module's switches (its internal port is a host-wide name)
PKT = bytes.fromhex("ffffffffffff02000000000108004500001c000100004001f98e0a0000010a000002080000000000000000000000")
#: a real OVS 3.1's NXT_PACKET_IN2 bodies (after the 16-byte Nicira header) for PKT from port 2 hitting
#: ``in_port=2 actions=controller(reason=no_match,max_len=100,userdata=01.02)`` (OpenFlow 1.0 and 1.5 alike)
OVS_PIN2 = ("00000032" + PKT.hex() + "000000000000" + "0003000500000000" + "00040010000000000000000000000000"
            + "0005000500000000" + "0006000c800000040000000200000000" + "0007000601020000")


def test_packet_in2_is_byte_for_byte_what_ovs_sends() -> None:
    body = packetin2.encode_props(1, {"packet": PKT, "table_id": 0, "cookie": 0, "reason": 0,
                                      "metadata": packetin2.metadata_tlvs(1, 2, ()), "userdata": b"\1\2"})
    assert body.hex() == OVS_PIN2
    assert packetin2.decode_props(1, body)["userdata"] == b"\1\2"


def test_packet_in2_metadata_is_what_ovs_writes() -> None:
    """reg3=5, metadata=0x1234 from in_port 1: OpenFlow 1.0 NXM_NX_REG3; 1.5 a masked xreg1 (OVS's bytes)."""
    state = [0] * F.FLOW_WORDS
    for name, v in (("reg3", 5), ("metadata", 0x1234)):
        for w, val, m in FieldValue.of(name).values(v, (1 << FieldValue.of(name).bits) - 1):
            state[w] = (state[w] & ~m) | val
    pipe = pause.pipeline_words(state)
    assert packetin2.metadata_tlvs(1, 1, pipe).hex() == "80000004000000010001060400000005800004080000000000001234"
    assert packetin2.metadata_tlvs(6, 1, pipe).hex() == (
        "8000000400000001800103100000000000000005" "00000000ffffffff800004080000000000001234")
    in_port, words = packetin2.pipeline_from_tlvs(packetin2.metadata_tlvs(6, 1, pipe))
    assert in_port == 1 and all(words[w] == state[w] for w in words)


#: a real OVS 3.1's NXT_PACKET_IN (format 1) bodies for PKT: from port 1 through ``cookie=0x77,in_port=1,
#: actions=load:0x5->NXM_NX_REG3[],set_field:0x1234->metadata,controller(userdata=01.02.03)``, and from port 2
#: through ``load:0x9->NXM_NX_REG1[],controller(reason=no_match,...,pause)`` (no cookie after a pause)
OVS_NXT_PIN = [
    "ffffffff002e01000000000000000077001a00000000000000000002000100010604000000058000040800000000000012340000"
    "000000000000" + PKT.hex(),
    "ffffffff002e0000ffffffffffffffff000e000000000000000000020002000102040000000900000000" + PKT.hex()]


def _pipeline(**regs: int) -> tuple[int, ...]:
    state = [0] * F.FLOW_WORDS
    for name, v in regs.items():
        for w, val, m in FieldValue.of(name).values(v, (1 << FieldValue.of(name).bits) - 1):
            state[w] = (state[w] & ~m) | val
    return pause.pipeline_words(state)


@pytest.mark.parametrize("version", [1, 4])
def test_nxt_packet_in_is_byte_for_byte_what_ovs_sends(version: int) -> None:
    from types import SimpleNamespace

    flow = SimpleNamespace(cookie=0x77)
    plain = SimpleNamespace(data=PKT, total_len=46, reason=1, table_id=0, flow=flow,
                            pin=pause.PinInfo(userdata=b"\1\2\3", pipeline=_pipeline(reg3=5, metadata=0x1234)))
    paused = SimpleNamespace(data=PKT, total_len=46, reason=0, table_id=0, flow=flow,
                             pin=pause.PinInfo(pipeline=_pipeline(reg1=9), frozen=pause.Frozen(((1, 1, 0),))))
    for pi, want in zip((plain, paused), OVS_NXT_PIN, strict=True):
        msg = packetin2.nxt_packet_in(version, pi, 1 if pi is plain else 2)
        raw = encode(msg)
        assert raw[1] == 4 and raw[8:16] == struct.pack("!II", 0x2320, 17) and raw[16:].hex() == want


# ---------------------------------------------------------------- the translator
def test_pause_in_a_resubmit_resumes_every_level_in_order() -> None:
    t = FlowTables(4)
    t.add(Flow(0, 1, Match(), Instructions(apply=(Load.bits("reg3", 5), Resubmit(None, 1), Output(2)), goto=2)))
    t.add(Flow(1, 1, Match(), Instructions(apply=(Controller(userdata=b"\1", pause=True), Output(3)))))
    t.add(Flow(2, 1, Match(), Instructions(apply=(Output(1),))))
    ts = t.compile()
    key = [int(w) for w in extract(tcp(), 0)[0]]
    cookies, flags = UpcallCookies(), np.zeros(4, dtype=np.int64)
    paused = translate(ts, key, flags, cookies)
    assert paused.actions[0] == A.OP_USERSPACE and paused.outputs == 1   # nothing else goes out
    info = cookies.by_id[paused.actions[2]].pin
    flows = {f.uid: f for f in ts.flows}
    blob = pause.seal(info.frozen, 9, {u: pause.fingerprint(f) for u, f in flows.items()})
    frozen, _prints = pause.unseal(blob, 9)
    res = pause.translate_resume(ts, key, flags, cookies, 0, frozen, flows, {})
    outs = [res.actions[i + 2] for i in range(0, len(res.actions), 3) if res.actions[i] == A.OP_OUTPUT]
    assert outs == [3, 2, 1]
    for bad in (blob[:-1] + bytes([blob[-1] ^ 1]), blob[:8]):
        with pytest.raises(pause.StaleContinuation):
            pause.unseal(bad, 9)
    with pytest.raises(pause.StaleContinuation):
        pause.unseal(blob, 10)     # another bridge's


# ---------------------------------------------------------------- a real ovs-ofctl monitor peer
def _ofctl(sw, *args: str) -> str:  # noqa: ANN001
    proc = subprocess.run(["ovs-ofctl", "--timeout=10", *args], capture_output=True, text=True, env=sw.env, timeout=20)
    assert proc.returncode == 0, (args, proc.stderr)
    return proc.stdout


@pytest.mark.integration
@pytest.mark.parametrize("peer", ["service", "controller"])
def test_ping_crosses_only_through_the_monitors_resume(switch, net, tmp_path, peer: str) -> None:  # noqa: ANN001
    """``ovs-ofctl monitor BRIDGE resume`` on the management socket, or on a ``punix:`` controller target."""
    stem = unique("pi2")
    br = f"{stem}s"
    net.add_host(f"{stem}-na", f"{stem}a", "10.77.0.1/24")
    net.add_host(f"{stem}-nb", f"{stem}b", "10.77.0.2/24")
    path = str(tmp_path / "ctl.sock")
    switch.vsctl("add-br", br, "--", "set-fail-mode", br, "secure",
                 "--", "add-port", br, f"{stem}a", "--", "set", "Interface", f"{stem}a", "ofport_request=1",
                 "--", "add-port", br, f"{stem}b", "--", "set", "Interface", f"{stem}b", "ofport_request=2",
                 "--", "set-controller", br, f"punix:{path}")
    # the port comes from a register set before the pause, in a table resubmitted to after it
    _ofctl(switch, "add-flow", br, "in_port=1,actions=load:0x2->NXM_NX_REG0[],controller(userdata=01.02.03,pause),"
                                   "resubmit(,1)")
    _ofctl(switch, "add-flow", br, "table=1,actions=output:NXM_NX_REG0[]")
    _ofctl(switch, "add-flow", br, "in_port=2,actions=output:1")
    dump = _ofctl(switch, "dump-flows", br)
    assert "actions=load:0x2->NXM_NX_REG0[],controller(userdata=01.02.03,pause),resubmit(,1)" in dump, dump
    assert not net.ping(f"{stem}-na", "10.77.0.2", count=2, deadline=3)     # no controller: paused forever
    target = br if peer == "service" else f"unix:{path}"
    mon = subprocess.Popen(["stdbuf", "-oL", "ovs-ofctl", "monitor", target, "resume"], env=switch.env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        if peer == "controller":
            switch.wait_for("monitor connected", lambda: switch.get("Controller", br, "is_connected") == "true")
        time.sleep(1)
        assert net.ping(f"{stem}-na", "10.77.0.2", count=3, deadline=10)
    finally:
        mon.terminate()
        out, _ = mon.communicate(timeout=10)
    assert "NXT_PACKET_IN2" in out and "userdata=01.02.03" in out and "send: NXT_RESUME" in out, out
    assert "reg0=0x2,in_port=1 (via action)" in out, out


# ---------------------------------------------------------------- malformed messages, as real OVS answers them
def _prop(t: int, data: bytes, nested: bool = False) -> bytes:
    body = (bytes(4) if nested else b"") + data
    n = 4 + len(body)
    return struct.pack("!HH", t, n) + body + bytes(-n % 8)


_META = _prop(6, bytes.fromhex("8000000400000001"))
BAD = [
    (16, struct.pack("!I", 3)), (16, b"\0\0\0"), (16, struct.pack("!II", 2, 0)),
    (28, _prop(0, PKT) + _META + _prop(8, _prop(0x8000, bytes(16)), nested=True)),     # not ours: stale
    (28, _prop(0, PKT) + _META),                                                     # no continuation
    (28, _prop(0, PKT) + _META + b"\x00\x08\x00"),                                   # truncated
    (28, _prop(0, PKT) + _prop(99, b"zz") + _META),                                   # unknown property
    (28, _META + _prop(8, _prop(0x8000, bytes(16)), nested=True)),                    # no packet
    (16, struct.pack("!I", 2)),                                                       # fine: no answer
]


def _script(path: str, version: int) -> list[tuple]:
    """Send BAD then an echo on a fresh connection; each error's (xid, type, code, the NX type/code of a 1.0
    vendor error or the experimenter id) up to the echo reply (the connection lives)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    buf = b""

    def recv() -> bytes:
        nonlocal buf
        while len(buf) < 8 or len(buf) < struct.unpack_from("!H", buf, 2)[0]:
            chunk = s.recv(65536)
            assert chunk, "connection closed"
            buf += chunk
        n = struct.unpack_from("!H", buf, 2)[0]
        m, buf = buf[:n], buf[n:]
        return m

    try:
        s.sendall(struct.pack("!BBHIHHI", version, 0, 16, 1, 1, 8, 1 << version))
        recv()
        out = b"".join(struct.pack("!BBHIII", version, 4, 16 + len(body), 10 + i, 0x2320, sub) + body
                       for i, (sub, body) in enumerate(BAD))
        s.sendall(out + struct.pack("!BBHI", version, 2, 8, 777))
        got = []
        while True:
            m = recv()
            xid = struct.unpack_from("!I", m, 4)[0]
            if m[1] == 3 and xid == 777:
                return got
            if m[1] == 1:
                et, code = struct.unpack_from("!HH", m, 8)
                got.append((xid, et, code, m[12:20].hex() if et in (0xB0C2, 0xFFFF) else ""))
    finally:
        s.close()


@pytest.fixture(scope="module")
def both() -> Iterator[tuple]:
    with tempfile.TemporaryDirectory(prefix="realovspi2-") as rundir, private_switch(prefix="pvpi2-") as sw:
        ovs = RealOvs(rundir)
        try:
            ovs.start()
            ovs.add_bridge(BR)
            sw.vsctl("add-br", BR)
            stem = unique("pi")   # internal ports are host-wide names: unique ones
            for target in (sw, ovs):
                target.vsctl("--", "add-port", BR, f"{stem}1", "--", "set", "Interface", f"{stem}1",
                             "type=internal", "ofport_request=1", "--", "add-port", BR, f"{stem}2", "--", "set",
                             "Interface", f"{stem}2", "type=internal", "ofport_request=2")
            yield sw, ovs
        finally:
            ovs.stop()


@pytest.mark.integration
@pytest.mark.parametrize("version", [1, 4, 6])
def test_malformed_messages_get_ovs_errors(both, version: int) -> None:  # noqa: ANN001
    sw, ovs = both
    ours = _script(f"{sw.rundir}/{BR}.mgmt", version)
    theirs = _script(f"{ovs.rundir}/{BR}.mgmt", version)
    assert ours == theirs
    assert len(ours) == len(BAD) - 1     # the good one is answered by nothing


PACKET_OUT = f"in_port=1 packet={PKT.hex()} actions=table"
MONITOR_FLOWS = ["cookie=0x77,in_port=1,actions=load:0x5->NXM_NX_REG3[],set_field:0x1234->metadata,"
                 "controller(userdata=01.02.03)",
                 "in_port=2,actions=load:0x9->NXM_NX_REG1[],controller(reason=no_match,max_len=20,userdata=0a.0b,pause)"
                 ",output:1",
                 "in_port=LOCAL,actions=controller(max_len=20,userdata=0c)",
                 "table=5,actions=CONTROLLER:65535"]
#: the packet-outs: (in_port, actions); the last one's output:CONTROLLER only before 1.4 (OVS says reason
#: packet_out from 1.4 on, which pyvswitch's packet-outs do not yet)
MONITOR_OUTS = [("1", "table"), ("2", "table"), ("LOCAL", "table"), ("1", "load:0x7->NXM_NX_REG2[],resubmit(,5)")]


def _monitor_text(target, bridge: str, version: str, fmt: str) -> list[str]:  # noqa: ANN001 - Switch / RealOvs
    """What ``ovs-ofctl -O version monitor bridge 65534 -P fmt`` prints for the packet-outs of MONITOR_OUTS (the
    continuation's own lines left out: its contents are each switch's own; log lines too)."""
    mon = subprocess.Popen(["stdbuf", "-oL", "ovs-ofctl", "-O", version, "monitor", bridge, "65534", "-P",
                            fmt], env=target.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    try:
        time.sleep(1)
        for port, actions in MONITOR_OUTS if version in ("OpenFlow10", "OpenFlow13") else MONITOR_OUTS[:3]:
            _ofctl(target, "-O", version, "packet-out", bridge, f"in_port={port} packet={PKT.hex()} actions={actions}")
        time.sleep(1)
    finally:
        mon.terminate()
        out, _ = mon.communicate(timeout=10)
    return [line for line in out.splitlines() if not line.startswith(" continuation.") and not line[:1].isdigit()]


@pytest.mark.integration
@pytest.mark.parametrize(("version", "fmt"), [("OpenFlow10", "nxt_packet_in2"), ("OpenFlow13", "nxt_packet_in2"),
                                             ("OpenFlow15", "nxt_packet_in2"), ("OpenFlow10", "nxt_packet_in")])
def test_monitor_prints_the_same_packet_in2_as_for_ovs(both, version: str, fmt: str) -> None:  # noqa: ANN001
    """The same flows and packets on both switches: ``ovs-ofctl monitor -P nxt_packet_in2`` (or
    ``nxt_packet_in``) prints the same packet-ins (table, cookie (none after a pause), registers, metadata and
    in_port, reason, userdata, the whole frame)."""
    sw, ovs = both
    for target in (sw, ovs):
        _ofctl(target, "del-flows", BR)
        for flow in MONITOR_FLOWS:
            _ofctl(target, "add-flow", BR, flow)
    ours = _monitor_text(sw, BR, version, fmt)
    theirs = _monitor_text(ovs, BR, version, fmt)
    assert ours == theirs
    if fmt == "nxt_packet_in":   # format 1 carries no userdata
        assert any(line.startswith("NXT_PACKET_IN ") for line in ours), ours
        return
    assert any("userdata=01.02.03" in line for line in ours), ours
    assert any("reg3=0x5,metadata=0x1234,in_port=1" in line for line in ours), ours
    if version != "OpenFlow15":   # output:CONTROLLER's packet-in2 carries the registers too
        assert any("reg2=0x7,in_port=1 (via action)" in line for line in ours), ours
    # max_len=20 cuts nothing (OVS 3.1 buffers nothing)
    assert any("total_len=46 reg1=0x9,in_port=2 (via no_match) data_len=46" in line for line in ours), ours
    assert any("total_len=46 in_port=LOCAL (via action) data_len=46" in line for line in ours), ours


def test_controller_contexts_are_bounded(monkeypatch) -> None:  # noqa: ANN001
    """One upcall context per register state: past the bound, the next expiry flushes the megaflows and forgets
    them (counted); a plain output:CONTROLLER context stays."""
    from xlate import cookies as T
    from xlate.upcall import Upcalls

    monkeypatch.setattr(T, "MAX_PIN_CONTEXTS", 3)
    ups = Upcalls(max_flows=64, emc_size=64)
    plain = ups.cookies.id_for(T.Upcall(None, 0, 0))
    for reg in range(5):
        ups.cookies.id_for(T.Upcall(None, 1, 0, pin=pause.PinInfo(pipeline=(reg,))))
    assert ups.cookies.pins_over and len(ups.cookies) == 6
    ups.expire([None], 1)
    assert ups.counters["pin_context_flushes"] == 1 and not ups.cookies.pins_over
    assert list(ups.cookies.by_id) == [plain]


class _Raw:
    """A raw OpenFlow connection to a management socket (a service connection, as ovs-ofctl's)."""

    def __init__(self, path: str, version: int) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(path)
        self.version, self.buf = version, b""
        self.send(0, struct.pack("!HHI", 1, 8, 1 << version))
        self.recv()

    def send(self, mtype: int, body: bytes = b"", xid: int = 0) -> None:
        self.sock.sendall(struct.pack("!BBHI", self.version, mtype, 8 + len(body), xid) + body)

    def nx(self, subtype: int, body: bytes, xid: int = 0) -> None:
        self.send(4, struct.pack("!II", 0x2320, subtype) + body, xid)

    def recv(self) -> bytes:
        while len(self.buf) < 8 or len(self.buf) < struct.unpack_from("!H", self.buf, 2)[0]:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed"
            self.buf += chunk
        n = struct.unpack_from("!H", self.buf, 2)[0]
        m, self.buf = self.buf[:n], self.buf[n:]
        return m

    def until(self, pred) -> bytes:  # noqa: ANN001
        while True:
            m = self.recv()
            if pred(m):
                return m


def _tx(sw, port: int) -> int:  # noqa: ANN001
    out = _ofctl(sw, "dump-ports", BR, str(port))
    return int(out.split("tx pkts=")[1].split(",")[0])


@pytest.mark.integration
def test_a_continuation_resumes_once_its_flow_is_unchanged_and_is_stale_after(both) -> None:  # noqa: ANN001
    """A raw controller takes the packet-in2 of ``controller(pause),output:2`` and sends its properties back as
    NXT_RESUME: the frame leaves port 2 (and not before); after the flow is modified, the same NXT_RESUME is
    NXR_STALE and sends nothing; the connection lives."""
    sw, _ovs = both
    _ofctl(sw, "del-flows", BR)
    _ofctl(sw, "add-flow", BR, "in_port=1,actions=controller(userdata=0d,pause),output:2")
    c = _Raw(f"{sw.rundir}/{BR}.mgmt", 6)
    try:
        c.send(9, struct.pack("!HH", 0, 0xFFFF), 1)                     # set_config: miss_send_len
        c.nx(packetin2.NXT_SET_PACKET_IN_FORMAT, struct.pack("!I", 2), 2)
        c.send(20, b"", 3)
        c.until(lambda m: m[1] == 21)
        before = _tx(sw, 2)
        _ofctl(sw, "-O", "OpenFlow15", "packet-out", BR, PACKET_OUT)
        pin = c.until(lambda m: m[1] == 4 and struct.unpack_from("!I", m, 12)[0] == packetin2.NXT_PACKET_IN2)
        props = packetin2.decode_props(6, pin[16:])
        assert props["userdata"] == b"\x0d" and props["packet"] == PKT and "continuation" in props
        time.sleep(0.5)
        assert _tx(sw, 2) == before                                     # paused: nothing went out yet
        resume = {k: props[k] for k in ("packet", "table_id", "reason")}
        resume.update(metadata=props["metadata"], continuation=props["continuation"])
        c.nx(packetin2.NXT_RESUME, packetin2.encode_props(6, resume), 4)
        c.send(20, b"", 5)
        assert c.until(lambda m: m[1] in (1, 21))[1] == 21               # no error
        deadline = time.monotonic() + 5
        while _tx(sw, 2) != before + 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _tx(sw, 2) == before + 1
        _ofctl(sw, "mod-flows", BR, "in_port=1,actions=controller(userdata=0d,pause),output:LOCAL")
        c.nx(packetin2.NXT_RESUME, packetin2.encode_props(6, resume), 6)
        err = c.until(lambda m: m[1] == 1)
        assert struct.unpack_from("!HHI", err, 8) == (0xFFFF, packetin2.NXR_STALE, 0x2320)
        c.send(2, b"", 7)
        assert c.until(lambda m: m[1] == 3)[4:8] == struct.pack("!I", 7)  # the connection lives
        assert _tx(sw, 2) == before + 1
    finally:
        c.sock.close()


def test_a_packet_outs_own_actions_do_not_freeze() -> None:
    """A pause reached from a packet-out's own action list (here its resubmit) cannot be frozen (no flow holds
    that list): a packet-in without a continuation, and the rest runs as without ``pause``."""
    from xlate.translate import translate_actions

    t = FlowTables(4)
    t.add(Flow(1, 1, Match(), Instructions(apply=(Controller(pause=True), Output(3)))))
    ts = t.compile()
    key = [int(w) for w in extract(tcp(), 0)[0]]
    cookies = UpcallCookies()
    res = translate_actions(ts, key, (Resubmit(None, 1), Output(2)), np.zeros(4, dtype=np.int64), cookies)
    assert res.actions[0] == A.OP_USERSPACE and cookies.by_id[res.actions[2]].pin.frozen is None
    outs = [res.actions[i + 2] for i in range(4, len(res.actions), 3) if res.actions[i] == A.OP_OUTPUT]
    assert outs == [3, 2]


@pytest.mark.integration
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(version=st.sampled_from([1, 4, 6]), cut=st.integers(0, 400), flips=st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=4))
def test_mangled_resumes_get_errors_and_the_connection_lives(both, version: int, cut: int, flips: list) -> None:  # noqa: ANN001
    """A genuine continuation's NXT_RESUME, cut short and with bytes changed: answered by an error (stale when the
    continuation is touched) or run, never a crash; the connection lives and nothing half-applies."""
    sw, _ovs = both
    if not _fuzz_resume:
        _ofctl(sw, "del-flows", BR)
        _ofctl(sw, "add-flow", BR, "in_port=1,actions=controller(pause),output:2")
        c = _Raw(f"{sw.rundir}/{BR}.mgmt", 6)
        try:
            c.send(9, struct.pack("!HH", 0, 0xFFFF), 1)
            c.nx(packetin2.NXT_SET_PACKET_IN_FORMAT, struct.pack("!I", 2), 2)
            c.send(20, b"", 3)
            c.until(lambda m: m[1] == 21)
            _ofctl(sw, "packet-out", BR, PACKET_OUT)
            pin = c.until(lambda m: m[1] == 4 and struct.unpack_from("!I", m, 12)[0] == packetin2.NXT_PACKET_IN2)
        finally:
            c.sock.close()
        _fuzz_resume.append(pin[16:])
    body = bytearray(_fuzz_resume[0])
    sealed = _continuation_range(bytes(body))
    for at, x in flips:
        body[at % len(body)] ^= x
    touched = any(at % len(body) in sealed for at, _x in flips)
    body = body[:len(body) - cut % len(body)] if cut else body
    c = _Raw(f"{sw.rundir}/{BR}.mgmt", version)
    try:
        c.nx(packetin2.NXT_RESUME, bytes(body), 9)
        c.send(2, b"", 10)
        got = c.until(lambda m: m[1] in (1, 3))
        if got[1] == 1:
            c.until(lambda m: m[1] == 3)        # the echo still comes back: the connection lives
        assert got[1] == 1 or not (touched or cut), "a mangled continuation was resumed"
    finally:
        c.sock.close()
    assert _ofctl(sw, "dump-flows", BR)   # the switch answers


_fuzz_resume: list[bytes] = []


def _continuation_range(body: bytes) -> range:
    """Where the sealed state sits in a NXT_RESUME body (after the continuation's header, pad and inner header)."""
    off = 0
    while off < len(body):
        ptype, length = struct.unpack_from("!HH", body, off)
        if ptype == packetin2.NXPINT_CONTINUATION:
            return range(off + 12, off + length)
        off += length + (-length % 8)
    raise AssertionError("no continuation")


OVN_FLOWS = "tests/fixtures/ovn-23.03-flows/flows-chA.txt"


def _ovn_controller_flows() -> list[str]:
    """The fixture's flows (as OVS 3.1 dumped them) whose actions are one controller(userdata=...) (its
    meter_id ones match conj_id, which is another piece of work)."""
    with open(OVN_FLOWS) as f:
        return [line.strip() for line in f if " actions=controller(" in line and line.strip().endswith(")")
                and line.split(" actions=")[1].count("(") == 1]


@pytest.mark.integration
def test_ovn_controller_actions_dump_as_ovs_dumped_them(both, tmp_path) -> None:  # noqa: ANN001
    """OVN's controller(userdata=...) flows (from the real dump) added with ``ovs-ofctl -O OpenFlow15 add-flows``
    dump back as OVS dumped them."""
    sw, _ovs = both
    flows = _ovn_controller_flows()
    assert len(flows) >= 20
    _ofctl(sw, "del-flows", BR)
    path = tmp_path / "flows"
    path.write_text("\n".join(flows) + "\n")
    _ofctl(sw, "-O", "OpenFlow15", "add-flows", BR, str(path))
    dump = _ofctl(sw, "-O", "OpenFlow15", "--no-stats", "dump-flows", BR)
    got = {line.strip() for line in dump.splitlines() if "actions=" in line}
    assert got == set(flows), sorted(set(flows) ^ got)[:6]
    _ofctl(sw, "del-flows", BR)
