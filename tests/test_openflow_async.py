"""OpenFlow 1.3's asynchronous configuration (SET_ASYNC / GET_ASYNC, which Faucet sends first thing): per
controller connection, which packet-in, port-status and flow-removed reasons it is sent, by role; OVS's defaults
until it asks. Also the codec's side of it and of version-bitmap hellos."""

from __future__ import annotations

import pytest

from tests.netutil import send_frames, unique
from tests.test_openflow import ofctl
from tests.test_openflow_flows import Controller
from vswitch.openflow.codec import OFP10, OFP13, Msg, decode, encode, hello_versions

OF13 = ("-O", "OpenFlow13")
OFPR_NO_MATCH, OFPR_ACTION = 0, 1


def test_async_messages_encode_and_decode() -> None:
    fields = {"packet_in_master": 2, "packet_in_slave": 6, "port_status_master": 7, "port_status_slave": 1,
              "flow_removed_master": 3, "flow_removed_slave": 0}
    for kind in ("set_async", "get_async_reply"):
        raw = encode(Msg(OFP13, kind, 7, fields))
        assert len(raw) == 32 and raw[1] == {"set_async": 28, "get_async_reply": 27}[kind]
        msg = decode(raw)
        assert (msg.type, msg.xid, msg.fields) == (kind, 7, fields)
    assert decode(encode(Msg(OFP13, "get_async_request", 8))).type == "get_async_request"


def test_hello_versions() -> None:
    bitmap = {"elements": [{"type": 1, "bitmaps": [1 << OFP10 | 1 << OFP13 | 1 << 6]}]}
    assert hello_versions(encode(Msg(OFP13, "hello", 1, bitmap))) == {OFP10, OFP13, 6}
    assert hello_versions(encode(Msg(OFP13, "hello", 1))) is None          # no bitmap: the header's version decides
    assert hello_versions(encode(Msg(OFP10, "hello", 1))) is None
    assert hello_versions(bytes([6, 0, 0, 16, 0, 0, 0, 1]) + bytes([0, 1, 0, 8, 0, 0, 0, 0x50])) == {4, 6}


def until_barrier(ctl: Controller, xid: int) -> list[Msg]:
    """Send a barrier request; the messages (but echo requests) that arrive before its reply."""
    ctl.send(Msg(OFP13, "barrier_request", xid))
    seen = []
    while (msg := ctl.recv()).type != "barrier_reply":
        if msg.type == "echo_request":
            ctl.send(Msg(OFP13, "echo_reply", msg.xid, {"data": msg.data}))
        else:
            seen.append(msg)
    return seen


@pytest.mark.integration
def test_set_async_selects_what_a_controller_is_sent(switch, net, tmp_path) -> None:  # noqa: ANN001
    """Defaults (OVS's): no-match and action packet-ins, every port-status. After SET_ASYNC with action packet-ins
    only and no port-status (what Faucet asks while it configures), a table-miss packet-in and a port-status are
    not sent while an action packet-in is; GET_ASYNC reports the configuration."""
    stem = unique("as")
    name = f"{stem}sw"
    net.add_host(f"{stem}-na", f"{stem}a", "10.75.0.1/24", mac="02:00:00:00:75:01")
    path = str(tmp_path / "ctl.sock")
    switch.vsctl("add-br", name, "--", "add-port", name, f"{stem}a", "--", "set", "Interface", f"{stem}a",
                 "ofport_request=1", "--", "set-controller", name, f"punix:{path}")
    ctl = Controller(path)
    switch.wait_for("controller connected", lambda: switch.get("Controller", name, "is_connected") == "true")
    ctl.send(Msg(OFP13, "get_async_request", 2))
    got = ctl.wait("get_async_reply")
    assert got.xid == 2 and got.fields == {"packet_in_master": 0b11, "packet_in_slave": 0, "port_status_master": 7,
                                           "port_status_slave": 7, "flow_removed_master": 0b1111,
                                           "flow_removed_slave": 0}, got
    ofctl(switch, *OF13, "add-flow", name, "priority=0,actions=CONTROLLER:65535")               # a table-miss flow
    ofctl(switch, *OF13, "add-flow", name, "priority=10,dl_type=0x88b6,actions=CONTROLLER:65535")
    miss = bytes.fromhex("ffffffffffff020000007501" "88b5") + b"no match".ljust(46, b".")
    action = bytes.fromhex("ffffffffffff020000007501" "88b6") + b"action".ljust(46, b".")
    send_frames(net, f"{stem}-na", "eth0", [miss])
    pin = ctl.wait("packet_in")
    assert pin.reason == OFPR_NO_MATCH and pin.data == miss       # the default sends table misses

    ctl.send(Msg(OFP13, "set_async", 3, {"packet_in_master": 1 << OFPR_ACTION, "packet_in_slave": 1 << OFPR_ACTION,
                                         "port_status_master": 0, "port_status_slave": 0,
                                         "flow_removed_master": 0, "flow_removed_slave": 0}))
    ctl.send(Msg(OFP13, "get_async_request", 4))
    got = ctl.wait("get_async_reply")
    assert (got.packet_in_master, got.port_status_master, got.port_status_slave) == (2, 0, 0), got
    send_frames(net, f"{stem}-na", "eth0", [miss, action])
    pin = ctl.wait("packet_in")
    assert pin.reason == OFPR_ACTION and pin.data == action, pin   # the miss before it was not sent
    net.add_host(f"{stem}-nb", f"{stem}b", "10.75.0.2/24")
    switch.vsctl("add-port", name, f"{stem}b", "--", "set", "Interface", f"{stem}b", "ofport_request=2")
    for xid in (10, 11):   # the second barrier is served after the agent has dealt with the new port
        assert [m.type for m in until_barrier(ctl, xid)] == [], "a port-status although port-status is off"

    ctl.send(Msg(OFP13, "set_async", 5, {"packet_in_master": 0b11, "packet_in_slave": 0, "port_status_master": 7,
                                         "port_status_slave": 7, "flow_removed_master": 0, "flow_removed_slave": 0}))
    net.add_host(f"{stem}-nc", f"{stem}c", "10.75.0.3/24")
    switch.vsctl("add-port", name, f"{stem}c", "--", "set", "Interface", f"{stem}c", "ofport_request=3")
    status = ctl.wait("port_status")
    assert status.desc["port_no"] == 3, status                    # port 2's came while port-status was off
    send_frames(net, f"{stem}-na", "eth0", [miss])
    assert ctl.wait("packet_in").reason == OFPR_NO_MATCH
