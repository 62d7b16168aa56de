"""The Bridge settings that identify a switch to OpenFlow controllers, through the real daemon and the real
ovs-vsctl / ovs-ofctl: ``other_config:datapath-id`` and ``hwaddr``, ``protocols``, ``other_config:disable-in-band``,
``Bridge.datapath_id`` written back, and a connected controller reconnected when the datapath ID changes.

Where it is cheap the same settings go to a real ovs-vswitchd 3.1 (userspace datapath, its own ovsdb-server)
and pyvswitch must end up where it does.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.netutil import unique
from tests.switchutil import Switch, private_switch
from tests.test_openflow import ofctl
from vswitch.daemon import default_bridge_mac
from vswitch.openflow.codec import OFP10, OFP13, OFP14, OFP15, Msg, decode, encode

pytestmark = pytest.mark.integration

OF13 = ("-O", "OpenFlow13")


class LoggedSwitch(Switch):
    """A ``pyvswitch run`` that also logs to ``<rundir>/pvs.log``."""

    def __init__(self, rundir: str) -> None:
        super().__init__(rundir, extra_args=("--log-file", os.path.join(rundir, "pvs.log")))

    def log(self) -> str:
        with open(os.path.join(self.rundir, "pvs.log")) as f:
            return f.read()


@pytest.fixture
def sw() -> Iterator[LoggedSwitch]:
    """A switch in a private rundir, stopped cleanly afterwards."""
    with private_switch(LoggedSwitch, prefix="pvid-") as s:
        yield s


class RealOvs:
    """A real ovs-vswitchd (userspace ``netdev`` datapath) with its own ovsdb-server in a private rundir, in a
    network namespace of its own (its datapath's tap is always called ovs-netdev)."""

    def __init__(self, rundir: str) -> None:
        self.rundir = rundir
        self.env = dict(os.environ, OVS_RUNDIR=rundir)
        self.db = f"unix:{rundir}/db.sock"
        self.ns = unique("rovs")

    def run(self, *cmd: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=30)
        assert proc.returncode == 0, (cmd, proc.stderr)
        return proc

    def start(self) -> None:
        r = self.rundir
        self.run("ip", "netns", "add", self.ns)
        self.run("ovsdb-tool", "create", f"{r}/conf.db", "/usr/share/openvswitch/vswitch.ovsschema")
        self.run("ovsdb-server", f"{r}/conf.db", f"--remote=punix:{r}/db.sock", f"--pidfile={r}/ovsdb-server.pid",
                 f"--unixctl={r}/ovsdb-server.ctl", "--detach", f"--log-file={r}/ovsdb-server.log")
        self.run("ovs-vsctl", f"--db={self.db}", "--no-wait", "init")
        self.run("ip", "netns", "exec", self.ns, "ovs-vswitchd", self.db, f"--pidfile={r}/ovs-vswitchd.pid",
                 "--detach", f"--log-file={r}/ovs-vswitchd.log")

    def vsctl(self, *args: str) -> str:
        return self.run("ovs-vsctl", f"--db={self.db}", "--timeout=10", *args).stdout.strip().strip('"')

    def add_bridge(self, name: str) -> None:
        """A bridge on the userspace datapath, once ovs-vswitchd has written its datapath ID."""
        self.vsctl("add-br", name, "--", "set", "Bridge", name, "datapath_type=netdev")
        deadline = time.monotonic() + 10
        while self.vsctl("get", "Bridge", name, "datapath_id") == "[]":
            assert time.monotonic() < deadline, "ovs-vswitchd wrote no datapath_id"
            time.sleep(0.1)

    def stop(self) -> None:
        subprocess.run(["ovs-appctl", "-t", f"{self.rundir}/ovs-vswitchd.{self.pid('ovs-vswitchd')}.ctl", "exit",
                        "--cleanup"], capture_output=True, env=self.env, timeout=30)
        for name in ("ovs-vswitchd", "ovsdb-server"):
            pid = self.pid(name)
            if pid:
                try:
                    os.kill(pid, 15)
                except ProcessLookupError:
                    pass
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=30)

    def link_mac(self, name: str) -> str:
        """The MAC of netdev ``name`` in the namespace of ovs-vswitchd."""
        return subprocess.run(["ip", "netns", "exec", self.ns, "cat", f"/sys/class/net/{name}/address"],
                              capture_output=True, text=True, check=True).stdout.strip()

    def pid(self, name: str) -> int:
        try:
            with open(f"{self.rundir}/{name}.pid") as f:
                return int(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0


@contextlib.contextmanager
def running_ovs(prefix: str, *bridges: str) -> Iterator[RealOvs]:
    """A real ovs-vswitchd 3.1 (userspace datapath, its own netns and rundir) with ``bridges``, stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as rundir:
        ovs = RealOvs(rundir)
        try:
            ovs.start()
            for br in bridges:
                ovs.add_bridge(br)
            yield ovs
        finally:
            ovs.stop()


@pytest.fixture
def real_ovs() -> Iterator[RealOvs]:
    """A real ovs-vswitchd, stopped (and its bridges' taps removed) afterwards."""
    with tempfile.TemporaryDirectory(prefix="realovs-") as rundir:
        ovs = RealOvs(rundir)
        try:
            ovs.start()
            yield ovs
        finally:
            ovs.stop()


def link_mac(name: str) -> str:
    with open(f"/sys/class/net/{name}/address") as f:
        return f.read().strip()


def dpid_of(sw: Switch, bridge: str) -> str:
    return sw.get("Bridge", bridge, "datapath_id")


def wait_dpid(sw: Switch, bridge: str, want: str) -> None:
    sw.wait_for(f"datapath_id {want}", lambda: dpid_of(sw, bridge) == want, timeout=10)


# ---------------------------------------------------------------- datapath-id
# (value, what ovs-vswitchd 3.1 makes of it: the datapath ID, or None when it ignores the value)
DPID_VALUES = [("0000000000000abc", 0xABC), ("0x1234", 0x1234), ("0XABCD", 0xABCD), ("0x00000000000000ff", 0xFF),
               ("abc", None), ("00000000000000abc", None), ("0000000000000000", None), ("zzzzzzzzzzzzzzzz", None),
               ("0x", None), ("0x0000000000000000abc", None)]


def test_datapath_id_as_ovs_vswitchd_takes_it(sw: LoggedSwitch, real_ovs: RealOvs) -> None:
    """other_config:datapath-id: valid values become Bridge.datapath_id and the FEATURES_REPLY's dpid; invalid
    ones are logged and ignored (the default, derived from the bridge's MAC, stays); each value lands exactly
    where it lands with the real ovs-vswitchd 3.1."""
    name, real = unique("id"), unique("ro")
    sw.vsctl("add-br", name, "--", "set", "Bridge", name, "other_config:disable-in-band=true")
    real_ovs.add_bridge(real)
    # the default: the bridge's MAC, derived from its row's UUID exactly as ovs-vswitchd derives it
    for get, default_of in ((lambda: dpid_of(sw, name), lambda: sw.get("Bridge", name, "_uuid")),
                            (lambda: real_ovs.vsctl("get", "Bridge", real, "datapath_id"),
                             lambda: real_ovs.vsctl("get", "Bridge", real, "_uuid"))):
        assert get() == f"{default_bridge_mac(uuid.UUID(default_of())):016x}"
    default, real_default = dpid_of(sw, name), real_ovs.vsctl("get", "Bridge", real, "datapath_id")
    assert link_mac(name).replace(":", "") == default[4:]     # the LOCAL port has that MAC
    assert f"dpid:{default}" in ofctl(sw, *OF13, "show", name)
    for value, expected in DPID_VALUES:
        sw.vsctl("set", "Bridge", name, f"other_config:datapath-id={value}")
        real_ovs.vsctl("set", "Bridge", real, f"other_config:datapath-id={value}")
        want = f"{expected:016x}" if expected else default
        wait_dpid(sw, name, want)
        assert f"dpid:{want}" in ofctl(sw, *OF13, "show", name), value
        assert real_ovs.vsctl("get", "Bridge", real, "datapath_id") == (f"{expected:016x}" if expected
                                                                         else real_default), value
    log = sw.log()
    for value, expected in DPID_VALUES:
        logged = f"other_config:datapath-id='{value}' is not 16 hex digits" in log
        assert logged == (expected is None), (value, log)
    assert "disable-in-band" not in log and "Traceback" not in log, log   # accepted without a word
    sw.vsctl("remove", "Bridge", name, "other_config", "datapath-id")
    wait_dpid(sw, name, default)


class TcpController:
    """A raw OpenFlow 1.3 controller listening on TCP: the switch connects to it."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.listener.settimeout(15)
        self.target = f"tcp:127.0.0.1:{self.listener.getsockname()[1]}"
        self.sock: socket.socket | None = None

    def accept(self) -> None:
        """Take the switch's next connection and negotiate OpenFlow 1.3."""
        if self.sock is not None:
            self.sock.close()
        self.sock, _ = self.listener.accept()
        self.sock.settimeout(10)
        hello = self.recv()
        assert hello is not None and hello.type == "hello" and hello.version == OFP13, hello
        self.sock.sendall(encode(Msg(OFP13, "hello", 1)))

    def recv(self) -> Msg | None:
        """The next message (echo requests answered), None when the switch closed the connection."""
        while True:
            head = self._exact(8)
            if head is None:
                return None
            body = self._exact(struct.unpack_from("!H", head, 2)[0] - 8)
            msg = decode(head + (body or b""))
            if msg.type != "echo_request":
                return msg
            self.sock.sendall(encode(Msg(OFP13, "echo_reply", msg.xid, {"data": msg.data})))

    def _exact(self, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            more = self.sock.recv(n - len(buf))
            if not more:
                return None
            buf += more
        return buf

    def dpid(self) -> int:
        self.sock.sendall(encode(Msg(OFP13, "features_request", 9)))
        while (msg := self.recv()) is not None and msg.type != "features_reply":
            pass
        assert msg is not None, "the switch closed the connection"
        return msg.datapath_id

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.listener.close()


def test_a_datapath_id_change_reconnects_the_controllers(sw: LoggedSwitch) -> None:
    """A connected controller is dropped when the datapath ID changes and the switch connects again at once,
    with the new ID in its FEATURES_REPLY (OpenFlow has no message for it; OVS does the same)."""
    name = unique("id")
    ctl = TcpController()
    try:
        sw.vsctl("add-br", name, "--", "set", "Bridge", name, "other_config:datapath-id=00000000000000a1",
                 "protocols=OpenFlow13", "--", "set-controller", name, ctl.target)
        ctl.accept()
        assert ctl.dpid() == 0xA1
        sw.wait_for("is_connected", lambda: sw.get("Controller", name, "is_connected") == "true")
        sw.vsctl("set", "Bridge", name, "other_config:datapath-id=00000000000000a2")
        t0 = time.monotonic()
        while ctl.recv() is not None:   # the switch hangs up ...
            pass
        ctl.accept()                    # ... and comes back at once
        assert time.monotonic() - t0 < 3
        assert ctl.dpid() == 0xA2
        assert dpid_of(sw, name) == "00000000000000a2"
        sw.vsctl("set", "Bridge", name, "other_config:mac-aging-time=120")   # no ID change: no reconnect
        ctl.sock.settimeout(1.5)
        with pytest.raises(TimeoutError):
            ctl.recv()
        ctl.sock.settimeout(10)
        assert ctl.dpid() == 0xA2
    finally:
        ctl.close()
    assert "datapath ID changed: disconnecting" in sw.log()


# ---------------------------------------------------------------- hwaddr
def test_hwaddr_is_the_local_mac_and_the_default_datapath_id(sw: LoggedSwitch, real_ovs: RealOvs) -> None:
    """other_config:hwaddr sets the LOCAL port's MAC (the internal port's netdev, mac_in_use, ovs-ofctl show)
    and so the default datapath ID; a multicast or malformed one is logged and ignored; without it the MAC
    derived from the bridge's UUID comes back, the same after a restart. ovs-vswitchd does the same."""
    name, real = unique("hw"), unique("ro")
    sw.vsctl("add-br", name)
    real_ovs.add_bridge(real)
    default = dpid_of(sw, name)
    for value, mac in (("02:11:22:33:44:55", "02:11:22:33:44:55"), ("2:1:2:3:4:5", "02:01:02:03:04:05"),
                       ("01:11:22:33:44:55", None), ("junk", None)):
        sw.vsctl("set", "Bridge", name, f"other_config:hwaddr={value}")
        real_ovs.vsctl("set", "Bridge", real, f"other_config:hwaddr={value}")
        if mac is None:   # ignored: the default again
            wait_dpid(sw, name, default)
            assert link_mac(name).replace(":", "") == default[4:]
            real_mac = real_ovs.link_mac(real)
            assert real_ovs.vsctl("get", "Bridge", real, "datapath_id") == "0000" + real_mac.replace(":", "")
            assert real_mac != "02:01:02:03:04:05"
            continue
        dpid = "0000" + mac.replace(":", "")
        wait_dpid(sw, name, dpid)
        assert link_mac(name) == mac and sw.get("Interface", name, "mac_in_use") == mac
        show = ofctl(sw, *OF13, "show", name)
        assert f"dpid:{dpid}" in show and f"LOCAL({name}): addr:{mac}" in show, show
        assert real_ovs.link_mac(real) == mac and real_ovs.vsctl("get", "Bridge", real, "datapath_id") == dpid
    log = sw.log()
    assert "other_config:hwaddr='01:11:22:33:44:55' is a multicast address; ignored" in log, log
    assert "other_config:hwaddr='junk' is not a MAC address; ignored" in log, log
    # datapath-id wins over hwaddr for the ID; the MAC stays hwaddr's
    sw.vsctl("set", "Bridge", name, "other_config:hwaddr=02:aa:bb:cc:dd:ee", "other_config:datapath-id=0x77")
    wait_dpid(sw, name, "0000000000000077")
    assert link_mac(name) == "02:aa:bb:cc:dd:ee"
    sw.vsctl("remove", "Bridge", name, "other_config", "hwaddr", "--", "remove", "Bridge", name, "other_config",
             "datapath-id")
    wait_dpid(sw, name, default)
    assert link_mac(name).replace(":", "") == default[4:]
    code, err = sw.stop()   # stable across restarts: derived from the database, not from a random tap MAC
    assert code == 0, err
    sw.start()
    sw.wait_for("bridge back", lambda: os.path.exists(f"/sys/class/net/{name}"))
    wait_dpid(sw, name, default)
    assert link_mac(name).replace(":", "") == default[4:]


# ---------------------------------------------------------------- protocols
def recv_msg(s: socket.socket) -> Msg | None:
    """The next OpenFlow message on ``s``, decoded (None when the peer hung up)."""
    head = s.recv(8, socket.MSG_WAITALL)
    if len(head) < 8:
        return None
    n = struct.unpack_from("!H", head, 2)[0] - 8
    return decode(head + (s.recv(n, socket.MSG_WAITALL) if n else b""))


def hello_exchange(path: str, version: int) -> tuple[Msg, Msg | None]:
    """Connect to a management socket, read the switch's hello, send a hello of ``version`` (no bitmap) and an
    echo request: (the switch's hello, its answer: an error or the echo reply; None if it just hung up)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    try:
        def recv() -> Msg | None:
            return recv_msg(s)

        theirs = recv()
        s.sendall(encode(Msg(version, "hello", 5)) + encode(Msg(version, "echo_request", 6, {"data": b"hi"})))
        return theirs, recv()
    finally:
        s.close()


def test_protocols_limit_the_versions_offered_and_accepted(sw: LoggedSwitch) -> None:
    """Bridge.protocols: the switch's HELLO offers exactly those versions (of those pyvswitch speaks), and a
    peer that wants another one gets OFPT_ERROR HELLO_FAILED/INCOMPATIBLE; ovs-ofctl works with a listed
    version and fails with another, on the management socket as on controller connections (as with OVS).
    Empty: OVS's default (every version), so 1.0, 1.3, 1.4 and 1.5."""
    name = unique("pr")
    sw.vsctl("add-br", name, "--", "set", "Bridge", name, "protocols=OpenFlow13")
    path = f"{sw.rundir}/{name}.mgmt"
    ok = ofctl(sw, *OF13, "show", name)
    assert "OFPT_FEATURES_REPLY (OF1.3)" in ok, ok
    bad = ofctl(sw, "show", name, check=False)    # ovs-ofctl's default: OpenFlow 1.0
    assert "version negotiation failed" in bad and "OFPT_FEATURES_REPLY" not in bad, bad
    hello, answer = hello_exchange(path, OFP10)
    assert hello.version == OFP13 and hello.elements == [{"type": 1, "bitmaps": [1 << OFP13]}], hello
    assert answer is not None and answer.type == "error" and (answer.err_type, answer.code) == (0, 0), answer
    assert b"we support version 0x04, peer supports version 0x01" in answer.data, answer
    hello, answer = hello_exchange(path, OFP13)     # the positive twin
    assert answer is not None and answer.type == "echo_reply" and answer.data == b"hi", answer

    sw.vsctl("set", "Bridge", name, "protocols=OpenFlow10")
    sw.wait_for("OpenFlow 1.0 only", lambda: "OFPT_FEATURES_REPLY" in ofctl(sw, "show", name, check=False))
    assert "version negotiation failed" in ofctl(sw, *OF13, "show", name, check=False)
    hello, answer = hello_exchange(path, OFP10)
    assert hello.version == OFP10 and hello.fields == {"data": b""}, hello   # 1.0 up to 1.0: no bitmap
    assert answer is not None and answer.type == "echo_reply", answer

    every = 1 << OFP10 | 1 << OFP13 | 1 << OFP14 | 1 << OFP15
    for protocols, bitmap in (("OpenFlow10,OpenFlow13", 1 << OFP10 | 1 << OFP13), ("[]", every)):
        sw.vsctl("set", "Bridge", name, f"protocols={protocols}")
        sw.wait_for(f"protocols={protocols}", lambda: "OFPT_FEATURES_REPLY" in ofctl(sw, *OF13, "show", name,
                                                                                      check=False))
        assert "OFPT_FEATURES_REPLY (xid" in ofctl(sw, "show", name)
        hello, _ = hello_exchange(path, OFP13)
        assert hello.version == max(v for v in range(7) if bitmap >> v & 1), hello
        assert hello.elements == [{"type": 1, "bitmaps": [bitmap]}], hello

    sw.vsctl("set", "Bridge", name, "protocols=OpenFlow12,OpenFlow15")   # 1.2: not spoken, logged
    sw.wait_for("1.5 only", lambda: "version negotiation failed" in ofctl(sw, *OF13, "show", name, check=False))
    assert "OFPT_FEATURES_REPLY (OF1.5)" in ofctl(sw, "-O", "OpenFlow15", "show", name)
    log = sw.log()
    assert ("protocols OpenFlow12: pyvswitch speaks OpenFlow10, OpenFlow13, OpenFlow14, OpenFlow15 only; offering "
            "OpenFlow15") in log, log
    assert "Traceback" not in log, log
