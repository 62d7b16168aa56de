"""The OpenFlow agent (vswitch/openflow/agent.py) driven by the real ovs-ofctl, in OpenFlow 1.0 (its default) and 1.3.

Also: malformed and unsupported messages on the management socket get an OFPT_ERROR and the
connection stays usable (a fuzz test with hypothesis sends mutated messages and then an echo).
"""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vswitch.openflow.codec import OFP10, OFP13, OFP14, OFP15, Msg, decode, encode

pytestmark = pytest.mark.integration


def ofctl(switch, *args: str, check: bool = True) -> str:  # noqa: ANN001 - the Switch helper
    import subprocess

    proc = subprocess.run(["ovs-ofctl", "--timeout=10", *args], capture_output=True, text=True, env=switch.env,
                          timeout=20)
    if check:
        assert proc.returncode == 0, (args, proc.stderr)
    return proc.stdout + proc.stderr


@pytest.fixture
def ofbridge(switch):  # noqa: ANN001, ANN201 - fixtures
    switch.vsctl("add-br", "ofbr", "--", "add-port", "ofbr", "ofint7", "--", "set", "Interface", "ofint7",
                 "type=internal", "ofport_request=7")
    return switch


@pytest.mark.parametrize("proto", [[], ["-O", "OpenFlow13"]], ids=["of10", "of13"])
def test_ovs_ofctl_show_and_port_commands(ofbridge, proto: list[str]) -> None:  # noqa: ANN001
    sw = ofbridge
    show = ofctl(sw, *proto, "show", "ofbr")
    dpid = sw.get("Bridge", "ofbr", "datapath_id")
    assert f"dpid:{dpid}" in show
    assert " 7(ofint7): addr:" in show and "LOCAL(ofbr): addr:" in show
    assert "LINK_DOWN" not in show.split(" 7(ofint7)")[1].split("LOCAL")[0]   # an internal port is up
    ports = ofctl(sw, *proto, "dump-ports", "ofbr")
    assert "port  7: rx pkts=0" in ports and "port LOCAL:" in ports
    assert "7(ofint7)" in ofctl(sw, *proto, "dump-ports-desc", "ofbr")
    assert "table 0" in ofctl(sw, *proto, "dump-tables", "ofbr")
    # plain ovs-ofctl switches to Nicira's flow format and asks NXST_FLOW, as it does with OVS
    assert ofctl(sw, *proto, "dump-flows", "ofbr").startswith("OFPST_FLOW reply" if proto else "NXST_FLOW reply")
    ofctl(sw, *proto, "mod-port", "ofbr", "ofint7", "down")
    sw.wait_for("admin down", lambda: sw.get("Interface", "ofint7", "admin_state") == "down")
    ofctl(sw, *proto, "mod-port", "ofbr", "ofint7", "up")
    sw.wait_for("admin up", lambda: sw.get("Interface", "ofint7", "admin_state") == "up")


class Client:
    """A raw OpenFlow client on the management socket."""

    def __init__(self, path: str, version: int) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(path)
        self.version = version
        hello = self.recv()
        assert hello.type == "hello"
        self.sock.sendall(encode(Msg(version, "hello", 1)))

    def recv(self) -> Msg:
        head = self._exact(8)
        length = struct.unpack_from("!H", head, 2)[0]
        return decode(head + self._exact(length - 8))

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            more = self.sock.recv(n - len(buf))
            assert more, "connection closed"
            buf += more
        return buf

    def echo(self, xid: int = 77) -> Msg:
        self.sock.sendall(encode(Msg(self.version, "echo_request", xid, {"data": b"alive"})))
        return self.recv()


@pytest.mark.parametrize("version", [OFP10, OFP13, OFP14, OFP15])
def test_unsupported_and_malformed_messages_get_errors_and_the_connection_lives(ofbridge, version: int) -> None:
    c = Client(f"{ofbridge.rundir}/ofbr.mgmt", version)
    c.sock.sendall(struct.pack("!BBHI", version, 99, 8, 5))                  # unknown type
    err = c.recv()
    assert err.type == "error" and (err.err_type, err.code) == (1, 1) and err.xid == 5
    c.sock.sendall(struct.pack("!BBHI", version, 14, 12, 6) + b"\0\0\0\0")  # flow_mod cut short
    err = c.recv()
    assert err.type == "error" and err.err_type == 1 and err.xid == 6
    reply = c.echo()
    assert reply.type == "echo_reply" and reply.data == b"alive"


@pytest.fixture(scope="module")
def fuzz_switch():  # noqa: ANN201
    import tempfile

    from tests.switchutil import Switch

    with tempfile.TemporaryDirectory(prefix="pvof-") as rundir:
        sw = Switch(rundir)
        sw.start()
        try:
            sw.vsctl("add-br", "fzbr")
            yield sw
        finally:
            code, err = sw.stop()
            assert code == 0, err


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mtype=st.integers(0, 36), body=st.binary(max_size=80), version=st.sampled_from([OFP10, OFP13, OFP14, OFP15]))
def test_fuzzed_messages_never_break_the_connection(fuzz_switch, mtype: int, body: bytes, version: int) -> None:
    c = Client(f"{fuzz_switch.rundir}/fzbr.mgmt", version)
    try:
        c.sock.sendall(struct.pack("!BBHI", version, mtype, 8 + len(body), 9) + body)
        c.sock.sendall(encode(Msg(version, "echo_request", 77, {"data": b"alive"})))
        for _ in range(5):       # the fuzzed message may get a reply or an error first; then our echo comes back
            m = c.recv()
            if m.type == "echo_reply" and m.xid == 77:
                break
            assert m.xid == 9, m
        else:
            raise AssertionError("no echo reply after a fuzzed message")
    finally:
        c.sock.close()
    assert fuzz_switch.proc.poll() is None
