"""``ovs-ofctl snoop`` (vswitch/openflow/snoop.py): the messages between the switch and its controller, copied to
``<rundir>/<bridge>.snoop``, held to a real ovs-vswitchd 3.1.

A controller of our own (a unix socket the bridge's ``unix:`` target connects to) talks to the switch while
``ovs-ofctl snoop`` prints what goes by; pyvswitch and a real OVS print the same. A bridge without a controller to
snoop refuses the snooper, as OVS does; a snooper that reads nothing never holds the switch up (its copies are
dropped and counted).
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.switchutil import private_switch
from tests.test_bridge_identity import RealOvs, recv_msg, running_ovs
from vswitch.openflow.codec import OFP10, OFP13, OFP15, Msg, encode

pytestmark = pytest.mark.integration

BR = "br0"


@pytest.fixture(scope="module")
def sw() -> Iterator:
    with private_switch(prefix="pvsnoop-") as s:
        s.vsctl("add-br", BR)
        yield s


@pytest.fixture(scope="module")
def real_ovs() -> Iterator[RealOvs]:
    with running_ovs("realsnoop-", BR) as ovs:
        yield ovs


class OwnController:
    """A controller the bridge connects to (``unix:PATH``), the bridge allowing ``version`` only: it speaks first
    with a hello of that version, then as told."""

    def __init__(self, sw, version: int = OFP13) -> None:  # noqa: ANN001 - Switch / RealOvs
        self.sw = sw
        self.version = version
        path = self.path = os.path.join(sw.rundir, "ctl.sock")   # OVS takes unix: sockets in its rundir only
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(1)
        self.listener.settimeout(15)
        sw.vsctl("set", "Bridge", BR, f"protocols={PROTO[version]}", "--", "--id=@c", "create", "Controller",
                 f'target="unix:{path}"', "inactivity_probe=60000", "--", "set", "Bridge", BR, "controller=@c")
        self.sock, _ = self.listener.accept()
        self.sock.settimeout(10)
        self.sock.sendall(encode(Msg(version, "hello", 1)))
        assert self.recv().type == "hello"

    def recv(self) -> Msg:
        msg = recv_msg(self.sock)
        assert msg is not None, "connection closed"
        return msg

    def ask(self, raw: bytes) -> Msg:
        """Send one message; the answer (a barrier's reply follows each, so one without an answer is fine)."""
        self.sock.sendall(raw + encode(Msg(self.version, "barrier_request", 0xBA)))
        first = self.recv()
        if first.type != "barrier_reply":
            assert self.recv().type == "barrier_reply"
        return first

    def close(self) -> None:
        self.sw.vsctl("clear", "Bridge", BR, "controller", "--", "clear", "Bridge", BR, "protocols")
        self.sock.close()
        self.listener.close()
        os.unlink(self.path)


class Snooper:
    """``ovs-ofctl snoop BR`` on a terminal (its output line-buffered), read as it comes."""

    def __init__(self, sw, proto: str = "OpenFlow13") -> None:  # noqa: ANN001
        self.fd, tty = pty.openpty()
        self.proc = subprocess.Popen(["ovs-ofctl", "--no-names", "-O", proto, "snoop", BR], env=sw.env, stdout=tty,
                                     stderr=tty)
        os.close(tty)
        self.text = b""

    def read_until(self, needle: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while needle.encode() not in self.text:
            left = deadline - time.monotonic()
            assert left > 0, (needle, self.text.decode())
            if select.select([self.fd], [], [], left)[0]:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:   # the terminal's other side closed: ovs-ofctl ended
                    data = b""
                assert data, ("snoop ended", self.text.decode())
                self.text += data
        return self.text.decode().replace("\r", "")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=10)
        os.close(self.fd)
        return code


SYNC = 0x99
PROTO = {OFP10: "OpenFlow10", OFP13: "OpenFlow13", OFP15: "OpenFlow15"}
TAG = {OFP10: "", OFP13: " (OF1.3)", OFP15: " (OF1.5)"}


def blocks(text: str) -> list[str]:
    """The snooped messages: each printed header with its hex dump lines, without the sync echoes and the log."""
    out: list[list[str]] = []
    for line in text.splitlines():
        if re.match(r"\d{4}-\d\d-\d\dT", line) or not line.strip():
            continue
        if line.startswith(("0000", " ")) and out:
            out[-1].append(line)
        else:
            out.append([line])
    return ["\n".join(b) for b in out if f"xid={SYNC:#x}" not in b[0]]


def snooped_exchange(sw, v: int) -> list[str]:  # noqa: ANN001
    """What ``ovs-ofctl snoop`` prints while our controller (OpenFlow ``v``) sends an echo, a get-config, a barrier
    and a message of an unknown type (an error comes back)."""
    ctl = OwnController(sw, v)
    snoop = Snooper(sw, PROTO[v])
    try:
        # echo until the snooper is attached (prints one): from then on it sees all
        deadline = time.monotonic() + 10
        while "OFPT_ECHO_REPLY" not in snoop.text.decode():
            assert time.monotonic() < deadline, snoop.text
            ctl.ask(encode(Msg(v, "echo_request", SYNC, {"data": b"sync"})))
            time.sleep(0.2)
            if select.select([snoop.fd], [], [], 0.2)[0]:
                snoop.text += os.read(snoop.fd, 65536)
        assert ctl.ask(encode(Msg(v, "echo_request", 0x11, {"data": b"abc"}))).data == b"abc"
        assert ctl.ask(encode(Msg(v, "get_config_request", 0x12))).type == "get_config_reply"
        assert ctl.ask(struct.pack("!BBHI", v, 99, 8, 0x15)).type == "error"
        ctl.ask(encode(Msg(v, "echo_request", 0x16, {"data": b"end"})))
        end_reply = f"OFPT_ECHO_REPLY{TAG[v]} (xid=0x16)"
        text = snoop.read_until(end_reply)
    finally:
        snoop.stop()
        ctl.close()
    got = blocks(text)
    start = next(i for i, b in enumerate(got) if "(xid=0x11)" in b)   # (before it: the sync's barriers)
    end = next(i for i, b in enumerate(got) if b.startswith(end_reply))
    return got[start:end + 1]   # (the end's barrier may be printed or not yet)


@pytest.mark.parametrize("version", [OFP10, OFP13, OFP15])
def test_snoop_prints_the_controller_exchange_as_real_ovs(sw, real_ovs: RealOvs, version: int) -> None:  # noqa: ANN001
    """Both ways, in order, every message after the hellos: the same text from pyvswitch's snoop socket as from
    a real OVS's."""
    got = []
    for target in (sw, real_ovs):
        got.append(snooped_exchange(target, version))
    ours, theirs = got
    assert ours == theirs, ("\n".join(ours), "\n".join(theirs))
    assert any(b.startswith("OFPT_GET_CONFIG_REPLY") for b in ours), ours


def test_snoop_without_a_controller_to_snoop_is_refused_as_by_real_ovs(sw, real_ovs: RealOvs) -> None:  # noqa: ANN001
    """No primary controller (the bridge has none): the snooper is closed at once; ovs-ofctl fails, as with a real
    OVS (whose closing races ovs-ofctl's hello too: a broken pipe or a reset, either way)."""
    for target in (sw, real_ovs):
        proc = subprocess.run(["ovs-ofctl", "snoop", BR], env=target.env, capture_output=True, text=True, timeout=20)
        assert proc.returncode == 1, proc
        assert re.search(r"failed to (open|connect to) socket \((Broken pipe|Connection reset by peer)\)",
                         proc.stderr), proc.stderr


def test_a_snooper_that_reads_nothing_never_holds_up_the_switch(sw) -> None:  # noqa: ANN001
    """A snooper that sends its hello and never reads: the controller's 400 echoes of 32 KiB each (12 MiB of
    copies) are all answered at once; the copies beyond the snooper's bounded queue are dropped and counted
    (logged when it goes)."""
    ctl = OwnController(sw)
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        stuck.connect(f"{sw.rundir}/{BR}.snoop")
        stuck.sendall(encode(Msg(OFP13, "hello", 1)))
        time.sleep(0.5)
        payload = os.urandom(32 << 10)
        started = time.monotonic()
        for i in range(400):
            assert ctl.ask(encode(Msg(OFP13, "echo_request", i, {"data": payload}))).data == payload
        assert time.monotonic() - started < 30
    finally:
        stuck.close()
        ctl.close()
    deadline = time.monotonic() + 10
    while not (m := re.search(r"snooper \S+ gone \(.*?\): (\d+) messages copied, (\d+) dropped", sw.stderr())):
        assert time.monotonic() < deadline, sw.stderr()[-2000:]
        time.sleep(0.2)
    copied, dropped = int(m.group(1)), int(m.group(2))
    assert dropped > 0 and copied + dropped >= 800, (copied, dropped)
