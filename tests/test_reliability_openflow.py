"""A controller or an OpenFlow client can never stall or break the switch (issue 15: defects 4 and 5, and the
version-0 HELLO), through the real daemon and the real ovs-vsctl / ovs-ofctl / ovs-appctl.

Every test keeps a canary ping going between two namespace hosts on the bridge and checks that it is answered
throughout, that the daemon is the same process at the end, and that ``ovs-ofctl`` / ``ofproto/trace`` answer
within a couple of seconds while the misbehaviour goes on.

The daemon runs in a mount namespace of its own whose ``/etc/resolv.conf`` points at ``FakeDns``, a resolver on a
loopback address that the test controls: it answers NXDOMAIN at once or never answers, and records every query
(so the connection attempts, and the backoff between them, can be timed).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest

from tests.netutil import Canary, unique
from tests.switchutil import Switch
from tests.test_openflow import Client, ofctl
from vswitch.openflow.codec import OFP13, OFP15, Msg, decode, encode

pytestmark = pytest.mark.integration

FLOW = "in_port=1,dl_src=02:00:00:00:73:01,dl_dst=02:00:00:00:73:02"


class FakeDns:
    """A DNS server on a loopback address: every query is answered NXDOMAIN, or (``silent``) never answered."""

    def __init__(self) -> None:
        self.addr = f"127.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}.53"
        self.silent = False
        self.queries: list[tuple[float, str, int]] = []   # (monotonic time, name, qtype)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.addr, 53))
        self.sock.settimeout(0.2)
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                data, peer = self.sock.recvfrom(1500)
            except TimeoutError:
                continue
            off, labels = 12, []
            while off < len(data) and data[off]:
                labels.append(data[off + 1:off + 1 + data[off]].decode(errors="replace"))
                off += 1 + data[off]
            if off + 5 > len(data):
                continue
            self.queries.append((time.monotonic(), ".".join(labels), int.from_bytes(data[off + 1:off + 3], "big")))
            if not self.silent:   # the question back, flags QR RD RA and rcode NXDOMAIN, no records
                self.sock.sendto(data[:2] + b"\x81\x83" + data[4:6] + bytes(6) + data[12:off + 5], peer)

    def lookups(self, name: str) -> list[float]:
        """When the switch asked for ``name`` (one A query per lookup)."""
        return [t for t, n, qtype in self.queries if n == name and qtype == 1]

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


class ResolvSwitch(Switch):
    """``pyvswitch run`` in its own mount namespace, with ``/etc/resolv.conf`` pointing at a ``FakeDns``."""

    def __init__(self, rundir: str, dns: FakeDns, timeout: int) -> None:
        super().__init__(rundir, extra_args=("--log-file", os.path.join(rundir, "ovs-vswitchd.log")))
        self.resolv = os.path.join(rundir, "resolv.conf")
        with open(self.resolv, "w") as f:
            f.write(f"nameserver {dns.addr}\noptions timeout:{timeout} attempts:1\n")
        self.pid = 0

    def command(self) -> list[str]:
        # the shell execs the daemon: the process started here is the daemon itself
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount --bind "$0" /etc/resolv.conf && exec "$@"', self.resolv, *super().command()]

    def start(self, expect: str = "running") -> str:
        line = super().start(expect)
        self.pid = self.proc.pid
        return line

    def log(self) -> str:
        with open(os.path.join(self.rundir, "ovs-vswitchd.log")) as f:
            return f.read()

    def same_process(self) -> bool:
        """The daemon started by the test is still running, and it is the one the pidfile names."""
        with open(os.path.join(self.rundir, "ovs-vswitchd.pid")) as f:
            return self.proc is not None and self.proc.poll() is None and int(f.read().strip()) == self.pid



class Rig:
    """The switch, its bridge with two hosts (``10.73.0.1`` on ofport 1, ``10.73.0.2`` on ofport 2) and the canary."""

    def __init__(self, sw: ResolvSwitch, net: object, dns: FakeDns) -> None:
        self.sw, self.net, self.dns = sw, net, dns
        stem = unique("rl")
        self.br = f"{stem}s"     # not "...br": other suites look for leftover bridges by that suffix
        self.ns_a, self.ns_b = f"{stem}-na", f"{stem}-nb"
        a, b = f"{stem}a", f"{stem}b"
        net.add_host(self.ns_a, a, "10.73.0.1/24", mac="02:00:00:00:73:01")
        net.add_host(self.ns_b, b, "10.73.0.2/24", mac="02:00:00:00:73:02")
        sw.vsctl("add-br", self.br, "--", "add-port", self.br, a, "--", "set", "Interface", a, "ofport_request=1",
                 "--", "add-port", self.br, b, "--", "set", "Interface", b, "ofport_request=2")
        sw.wait_for("ports attached", lambda: sw.get("Interface", a, "ofport") == "1"
                    and sw.get("Interface", b, "ofport") == "2")
        assert net.ping(self.ns_a, "10.73.0.2")
        self.canary = Canary(self.ns_a, "10.73.0.2", interval=0.2)

    def canary_answered_throughout(self) -> None:
        self.canary.check("the test", min_sent=6)

    def forward_with_a_controller(self) -> None:
        """A controller was set: as in OVS, the bridge's flows are flushed and it fails open only after three probe
        intervals without a controller. Put the NORMAL flow back and restart the canary."""
        self.sw.wait_for("the flows flushed", lambda: "actions=NORMAL" not in self.dump_flows())
        ofctl(self.sw, "add-flow", self.br, "priority=0,actions=NORMAL")
        self.canary.__exit__()
        self.canary = Canary(self.ns_a, "10.73.0.2", interval=0.2)

    def timed(self, what: str, fn: object, limit: float = 2.0) -> str:
        """Run ``fn`` and check it answered within ``limit`` seconds."""
        t = time.monotonic()
        out = fn()
        took = time.monotonic() - t
        assert took < limit, f"{what} took {took:.1f} s"
        return out

    def dump_flows(self, limit: float = 2.0) -> str:
        out = self.timed("ovs-ofctl dump-flows", lambda: ofctl(self.sw, "-O", "OpenFlow13", "dump-flows", self.br),
                         limit)
        assert out.startswith("OFPST_FLOW reply"), out
        return out

    def trace(self, limit: float = 2.0) -> str:
        out = self.timed("ofproto/trace", lambda: self.sw.appctl("ofproto/trace", self.br, FLOW).stdout, limit)
        assert "Datapath actions:" in out, out
        return out

    def controller_status(self) -> dict[str, str]:
        """``Controller.status`` of the bridge's (only) controller; {} when it has none."""
        out = json.loads(self.sw.vsctl("--format=json", "--columns=status", "list", "Controller").stdout)
        return {k: v for row in out["data"] for k, v in row[0][1]}


@pytest.fixture
def dns() -> Iterator[FakeDns]:
    server = FakeDns()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def rig(net, dns) -> Iterator[Rig]:  # noqa: ANN001 - fixtures
    """The switch (name lookups time out after 3 s), the bridge and the canary; all removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="pvrel-") as rundir:
        sw = ResolvSwitch(rundir, dns, timeout=3)
        sw.start()
        rig = None
        try:
            rig = Rig(sw, net, dns)
            yield rig
        finally:
            if rig is not None and rig.canary.proc.poll() is None:
                rig.canary.proc.kill()
                rig.canary.proc.communicate()
            code, err = sw.stop()
            assert code == 0, err


def test_unresolvable_controller_backs_off_reports_and_never_stalls_the_agent(rig: Rig) -> None:
    """Issue 15 defect 4: ``tcp:999.1.1.1:6653`` (no such address, so a name lookup that fails) with
    ``max_backoff=2000``: lookups at 0, 1, 3, 5 s (backoff 1, 2, then capped at 2), ``Controller.status`` says
    BACKOFF with the error, the log has it once, and the agent answers all along."""
    sw, target = rig.sw, "tcp:999.1.1.1:6653"
    sw.vsctl("--", "--id=@c", "create", "Controller", f'target="{target}"', "max_backoff=2000",
             "--", "set", "Bridge", rig.br, "controller=@c")
    rig.trace()            # answered at once, while the first lookup fails
    rig.dump_flows()
    rig.forward_with_a_controller()
    sw.wait_for("the lookup error in Controller.status",
                lambda: "999.1.1.1" in rig.controller_status().get("last_error", ""), timeout=5)
    status = rig.controller_status()
    assert status["state"] in ("BACKOFF", "CONNECTING"), status
    assert "lookup failed" in status["last_error"], status
    assert "sec_since_connect" not in status, status     # it never connected
    # the fourth lookup comes 1 + 2 + 2 s after the first
    sw.wait_for("four lookups", lambda: len(rig.dns.lookups("999.1.1.1")) >= 4, timeout=8)
    times = rig.dns.lookups("999.1.1.1")
    gaps = [round(b - a, 2) for a, b in zip(times[:3], times[1:4], strict=True)]
    assert [round(g) for g in gaps] == [1, 2, 2], gaps
    rig.trace()
    rig.dump_flows()
    # the failure is in the log once, not once per attempt, and no traceback
    log = sw.log()
    failures = [ln for ln in log.splitlines() if "999.1.1.1" in ln and "lookup failed" in ln]
    assert len(failures) == 1, failures
    assert "Traceback" not in log, log
    # the controller goes away: its status with it, and the agent is still fine
    sw.vsctl("del-controller", rig.br)
    sw.wait_for("Controller row gone", lambda: rig.controller_status() == {})
    rig.trace()
    assert sw.same_process()
    rig.canary_answered_throughout()


def test_slow_name_lookup_never_blocks_the_agent(rig: Rig) -> None:
    """A controller name whose lookup hangs (the resolver never answers; glibc gives up after 3 s): meanwhile
    ``ovs-ofctl`` and ``ofproto/trace`` answer at once and ``Controller.status`` says CONNECTING; then the
    error is recorded and the switch backs off."""
    sw, dns = rig.sw, rig.dns
    dns.silent = True
    sw.vsctl("set-controller", rig.br, "tcp:controller.invalid:6653")
    sw.wait_for("the lookup to start", lambda: dns.lookups("controller.invalid"), timeout=3)
    rig.trace(limit=1.0)
    rig.dump_flows(limit=1.0)
    # still CONNECTING after both answered: they were answered while the lookup hung
    assert rig.controller_status().get("state") == "CONNECTING", rig.controller_status()
    rig.forward_with_a_controller()
    sw.wait_for("the lookup error in Controller.status",
                lambda: "controller.invalid" in rig.controller_status().get("last_error", ""), timeout=6)
    assert rig.controller_status()["state"] in ("BACKOFF", "CONNECTING")
    rig.trace(limit=1.0)
    assert "Traceback" not in sw.log()
    assert sw.same_process()
    rig.canary_answered_throughout()


class Hog(threading.Thread):
    """A management client that sends requests (an echo request with 60 KB of data every 10 ms, so it takes a
    while to fill its queue) and never reads a reply."""

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.settimeout(15)
        self.sent = 0
        self.cut_off = ""   # how the switch ended the connection

    def run(self) -> None:
        request = encode(Msg(OFP13, "echo_request", 9, {"data": bytes(60_000)}))
        try:
            self.sock.sendall(encode(Msg(OFP13, "hello", 1)))
            while self.sent < 400:     # 24 MB: far more than the switch queues for one client
                self.sock.sendall(request)
                self.sent += 1
                time.sleep(0.01)
            self.cut_off = "never"
        except OSError as e:
            self.cut_off = type(e).__name__
        finally:
            self.sock.close()


def test_clients_that_never_read_are_disconnected_and_do_not_stall_the_others(rig: Rig) -> None:
    """Issue 15 defect 5: six management clients that request and never read. Each is disconnected (and logged)
    once its queue is full; ``ovs-ofctl dump-flows`` and a reading client with the same load answer within
    about a second all along."""
    sw = rig.sw
    path = f"{sw.rundir}/{rig.br}.mgmt"
    good = Client(path, OFP13)
    good.sock.settimeout(3)
    payload = bytes(60_000)
    hogs = [Hog(path) for _ in range(6)]
    for h in hogs:
        h.start()
    deadline = time.monotonic() + 15
    worst, rounds = 0.0, 0
    while any(h.is_alive() for h in hogs) and time.monotonic() < deadline:
        rounds += 1
        rig.dump_flows(limit=1.5)
        t = time.monotonic()
        good.sock.sendall(encode(Msg(OFP13, "echo_request", 5, {"data": payload})))
        reply = good.recv()
        worst = max(worst, time.monotonic() - t)
        assert reply.type == "echo_reply" and reply.xid == 5 and len(reply.data) == len(payload)
    for h in hogs:
        h.join(5)
    assert all(h.cut_off in ("BrokenPipeError", "ConnectionResetError") for h in hogs), \
        [(h.cut_off, h.sent) for h in hogs]
    assert worst < 1.5, worst
    assert rounds >= 2, rounds    # the others were served while the hogs were at it
    # the reading client, which had as much to read, is still connected and served
    assert good.echo(xid=6).xid == 6
    rig.dump_flows(limit=1.0)
    rig.trace(limit=1.0)
    cut = [ln for ln in sw.log().splitlines() if "not reading its messages" in ln]
    assert len(cut) == 6, cut         # one line per client, not one per message
    assert "Traceback" not in sw.log()
    good.sock.close()
    assert sw.same_process()
    rig.canary_answered_throughout()


def test_version_0_hello_gets_hello_failed_and_no_traceback(rig: Rig) -> None:
    """A HELLO with version byte 0: the OFPET_HELLO_FAILED / OFPHFC_INCOMPATIBLE error and a hang-up, logged as a
    failed negotiation (no traceback); a proper hello on the same socket still negotiates."""
    sw = rig.sw
    path = f"{sw.rundir}/{rig.br}.mgmt"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect(path)
    try:
        head = s.recv(8)
        s.recv(struct.unpack("!H", head[2:4])[0] - 8)   # our hello
        s.sendall(struct.pack("!BBHI", 0, 0, 8, 42))
        head = s.recv(8)
        err = decode(head + s.recv(struct.unpack("!H", head[2:4])[0] - 8))
        # in the newest version offered (1.5), as OVS sends it
        assert (err.type, err.version, err.xid, err.err_type, err.code) == ("error", OFP15, 42, 0, 0), err
        assert b"0x00" in err.data
        assert s.recv(64) == b""    # then the switch hangs up
    finally:
        s.close()
    ok = Client(path, OFP13)        # the positive twin: a proper hello negotiates, and the switch answers
    assert ok.echo().type == "echo_reply"
    ok.sock.close()
    rig.dump_flows(limit=1.0)
    log = sw.log()
    assert len([ln for ln in log.splitlines() if "version negotiation failed" in ln]) == 1, log
    assert "Traceback" not in log, log
    assert sw.same_process()
    rig.canary_answered_throughout()
