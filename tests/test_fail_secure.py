"""A ``fail_mode=secure`` bridge forwards nothing until a flow says so (issue 16, part 1), through the real daemon,
ovs-vsctl and ovs-ofctl.

Every test keeps a traffic generator sending into host A's port (broadcast and unicast to B, about 50,000 frames a
second) from before the ports are added until after the bridge is complete, with tcpdump on host B timestamping
every frame that arrives. No frame may arrive before the moment the test adds a flow; and, the positive twin in
the same test, frames do arrive once ``ovs-ofctl add-flow ... actions=NORMAL`` is in. The switch's own counters
show that A's frames reached it (and were dropped as table misses) all along, so a quiet sniffer means a secure
switch, not an idle one.

Covered: creation (one transaction, and ports added one by one), standalone -> secure on a live bridge, a daemon
restart on the same database, a reconcile that fails half-way (a fault injected into the daemon), unreachable and
flapping controllers, and creation on a cold numba cache.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest

from tests.netutil import unique
from tests.switchutil import Switch, private_switch
from tests.test_openflow import ofctl
from vswitch.hostnet import HostNet

pytestmark = pytest.mark.integration

MAC_A, MAC_B = "02:00:00:00:16:01", "02:00:00:00:16:02"

GENERATOR = r"""
import signal, socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
src, dst = (bytes.fromhex(m.replace(":", "")) for m in sys.argv[2:4])
body = b"\x88\xb5" + b"fail-secure probe".ljust(46, b".")
burst = (b"\xff" * 6 + src + body, dst + src + body) * 8
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
print("sending", flush=True)
sent = 0
while not stop:
    for f in burst:
        try:
            s.send(f)
            sent += 1
        except OSError:
            pass
    time.sleep(0.0002)
print(sent, flush=True)
"""


class Arrivals:
    """tcpdump in a namespace: the capture time (epoch seconds) of every frame matching ``bpf``, and its VLAN (None:
    untagged), read as it runs."""

    def __init__(self, ns: str, ifname: str, bpf: str) -> None:
        self.times: list[float] = []
        self.vlans: list[int | None] = []
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "-i", ifname, "-nn", "-tt", "-e", "-q",
                                      "-l", "-U", *bpf.split()], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if "listening on" in line or not line:
                break
        assert self.proc.poll() is None, self.proc.stderr.read()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError, IndexError):
                t = float(line.split()[0])
                m = re.search(r": vlan (\d+),", line)
                self.vlans.append(int(m.group(1)) if m else None)   # before the time: readers go by len(times)
                self.times.append(t)

    def since(self, t: float) -> int:
        """Frames captured at or after ``t``."""
        return sum(1 for x in list(self.times) if x >= t)

    def before(self, t: float) -> list[float]:
        """Capture times earlier than ``t``."""
        return [x for x in list(self.times) if x < t]

    def between(self, t0: float, t1: float, vlan: int | None | str = "any") -> list[float]:
        """Capture times in [t0, t1) of frames in ``vlan`` (None: untagged; "any": all)."""
        n = len(self.times)
        return [x for x, v in zip(self.times[:n], self.vlans[:n], strict=True)
                if t0 <= x < t1 and (vlan == "any" or v == vlan)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)


class Traffic:
    """Host A (``10.16.0.1``, MAC_A) sending into its port without pause, host B (MAC_B) capturing what reaches it
    (A's untagged probes, or with ``tagged_too`` whatever comes from A, tagged or not)."""

    def __init__(self, net: HostNet, tagged_too: bool = False) -> None:
        stem = unique("fs")
        self.stem = stem
        self.a, self.b = f"{stem}a", f"{stem}b"
        self.ns_a, self.ns_b = f"{stem}-na", f"{stem}-nb"
        net.add_host(self.ns_a, self.a, "10.16.0.1/24", mac=MAC_A)
        net.add_host(self.ns_b, self.b, "10.16.0.2/24", mac=MAC_B)
        self.arrivals = Arrivals(self.ns_b, "eth0", f"ether src {MAC_A}" if tagged_too else
                                 f"ether proto 0x88b5 and ether src {MAC_A}")
        self.gen = subprocess.Popen(["ip", "netns", "exec", self.ns_a, sys.executable, "-c", GENERATOR, "eth0", MAC_A,
                                     MAC_B], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.gen.stdout.readline().strip() == "sending", self.gen.stderr.read()
        self.sent = 0

    def wait_arriving(self, since: float, timeout: float = 15.0) -> None:
        """Until frames captured after ``since`` arrive (the positive twin)."""
        deadline = time.monotonic() + timeout
        while self.arrivals.since(since) < 20:
            assert time.monotonic() < deadline, f"no frame reached B within {timeout:.0f} s of {since:.3f}"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.gen.poll() is None:
            self.gen.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired, ValueError):
                self.sent = int(self.gen.communicate(timeout=10)[0].strip() or 0)
        if self.gen.poll() is None:
            self.gen.kill()
            self.gen.communicate()
        self.arrivals.stop()


@pytest.fixture
def traffic(net: HostNet) -> Iterator[Traffic]:
    t = Traffic(net)
    try:
        yield t
    finally:
        t.stop()


def ports_args(br: str, t: Traffic) -> list[str]:
    """ovs-vsctl arguments adding A's and B's ports (``t.a``, ``t.b``) as ofports 1 and 2."""
    return ["--", "add-port", br, t.a, "--", "set", "Interface", t.a, "ofport_request=1",
            "--", "add-port", br, t.b, "--", "set", "Interface", t.b, "ofport_request=2"]


def attached(sw: Switch, t: Traffic) -> bool:
    """Both ports (``t.a``, ``t.b``) are polled by the daemon (``dpif/show``; ``Interface.ofport`` survives a
    restart in OVSDB)."""
    out = sw.appctl("dpif/show", check=False).stdout
    return f" {t.a} 1/" in out and f" {t.b} 2/" in out


def tool(sw: Switch, name: str, timeout: int, *args: str) -> str:
    """``ovs-vsctl`` / ``ovs-ofctl`` with a long timeout (a cold numba cache), checked."""
    proc = subprocess.run([name, f"--timeout={timeout}", *args], capture_output=True, text=True, env=sw.env,
                          timeout=timeout + 10)
    assert proc.returncode == 0, (args, proc.stderr)
    return proc.stdout


def rx_port1(sw: Switch, br: str, timeout: int = 10) -> int:
    """Frames the switch received on ofport 1 (``ovs-ofctl dump-ports``)."""
    out = tool(sw, "ovs-ofctl", timeout, "dump-ports", br, "1")
    return int(re.search(r"port\s+1: rx pkts=(\d+)", out).group(1))


def misses(sw: Switch) -> int:
    m = re.search(r"flow_table_miss\s+total: (\d+)", sw.appctl("coverage/show").stdout)
    return int(m.group(1)) if m else 0


def hold_secure_then_open(sw: Switch, br: str, t: Traffic, secure_from: float, ofctl_timeout: int = 10) -> None:
    """The bridge is complete and A is sending: keep it up for a second more, check the switch received A's frames and
    dropped them, then add ``actions=NORMAL`` and check that frames arrive from then on and none before."""
    time.sleep(1.0)
    received = rx_port1(sw, br, ofctl_timeout)
    assert received > 1000, f"the switch got only {received} frames on port 1: the test would prove nothing"
    assert misses(sw) > 1000
    opened = time.time()
    tool(sw, "ovs-ofctl", ofctl_timeout, "add-flow", br, "actions=NORMAL")
    t.wait_arriving(opened, timeout=max(15, ofctl_timeout))
    t.stop()
    leaked = t.arrivals.before(opened)
    assert [x for x in leaked if x >= secure_from] == [], \
        f"{len(leaked)} frames crossed the secure bridge before it had a flow (first at {leaked[0]:.6f}, " \
        f"secure from {secure_from:.6f}, flow added at {opened:.6f})"
    assert t.arrivals.since(opened) >= 20
    assert t.sent > 20000, t.sent


@pytest.mark.parametrize("how", ["one-transaction", "port-by-port"])
def test_secure_from_creation(switch: Switch, traffic: Traffic, how: str) -> None:
    """``add-br -- set-fail-mode secure`` with the ports in the same transaction, or added one by one afterwards."""
    sw, t = switch, traffic
    br = f"{t.stem}s"
    time.sleep(0.3)                      # A is sending before the bridge or its ports exist
    if how == "one-transaction":
        sw.vsctl("add-br", br, "--", "set-fail-mode", br, "secure", *ports_args(br, t))
    else:
        sw.vsctl("add-br", br, "--", "set-fail-mode", br, "secure")
        sw.vsctl("add-port", br, t.a, "--", "set", "Interface", t.a, "ofport_request=1")
        sw.vsctl("add-port", br, t.b, "--", "set", "Interface", t.b, "ofport_request=2")
    sw.wait_for("ports attached", lambda: attached(sw, t))
    hold_secure_then_open(sw, br, t, secure_from=0.0)


def test_secure_from_a_fail_mode_change_on_a_live_bridge(switch: Switch, traffic: Traffic) -> None:
    """A standalone bridge forwards A's frames; from the moment ``set-fail-mode secure`` returns, none arrives until
    a flow is added."""
    sw, t = switch, traffic
    br = f"{t.stem}s"
    sw.vsctl("add-br", br, *ports_args(br, t))
    sw.wait_for("ports attached", lambda: attached(sw, t))
    t.wait_arriving(time.time())         # standalone: NORMAL forwards
    sw.vsctl("set-fail-mode", br, "secure")
    secure_from = time.time()
    sw.wait_for("the NORMAL flow gone with the change, as in OVS", lambda: ofctl(sw, "dump-flows", br).splitlines()[1:]
                == [])
    hold_secure_then_open(sw, br, t, secure_from)


def test_secure_after_a_daemon_restart(switch: Switch, traffic: Traffic) -> None:
    """A secure bridge with a flow forwards; the daemon restarts on the same database; the flow is gone (flows are not
    kept across restarts, as in OVS) and nothing is forwarded from the moment the daemon starts until one is
    added again."""
    sw, t = switch, traffic
    br = f"{t.stem}s"
    sw.vsctl("add-br", br, "--", "set-fail-mode", br, "secure", *ports_args(br, t))
    sw.wait_for("ports attached", lambda: attached(sw, t))
    before = time.time()
    ofctl(sw, "add-flow", br, "actions=NORMAL")
    t.wait_arriving(before)              # forwarding by the flow before the restart
    code, err = sw.stop()
    assert code == 0, err
    stopped = time.time()
    time.sleep(0.3)
    sw.start()
    sw.wait_for("ports attached again", lambda: attached(sw, t))
    hold_secure_then_open(sw, br, t, secure_from=stopped)


class FaultySwitch(Switch):
    """``pyvswitch run`` whose reconcile raises after attaching the ports, where it would configure the bridges'
    OpenFlow agents (fail mode, controllers): a reconcile that fails half-way, every time it is retried."""

    INJECT = ("import sys\n"
              "from vswitch.openflow.agent import OfAgent\n"
              "def faulty(self, *args, **kwargs):\n"
              "    raise RuntimeError('injected fault: reconcile fails half-way')\n"
              "OfAgent.configure = faulty\n"
              "from vswitch.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")

    def command(self) -> list[str]:
        return [sys.executable, "-c", self.INJECT, "run", "--rundir", self.rundir]



def test_secure_after_a_reconcile_that_failed_half_way(net: HostNet, traffic: Traffic) -> None:
    """The bridge, its fail mode and the ports in one transaction; the reconcile raises after attaching the ports,
    before it configures the bridge's OpenFlow agent (retried every 2 s, failing each time). Nothing crosses; a
    flow from ovs-ofctl still opens the bridge."""
    t = traffic
    with private_switch(FaultySwitch, prefix="pvsec-") as sw:
        br = f"{t.stem}s"
        sw.vsctl("--no-wait", "add-br", br, "--", "set-fail-mode", br, "secure", *ports_args(br, t))
        sw.wait_for("ports attached", lambda: attached(sw, t))
        hold_secure_then_open(sw, br, t, secure_from=0.0)
        # the configuration is not applied, so ovs-vsctl is not told it is: waiting for it times out
        waited = sw.vsctl("--timeout=1", "set", "Bridge", br, "external_ids:probe=1", check=False)
        assert waited.returncode != 0 and "Alarm clock" in waited.stderr, waited
        assert sw.get("Open_vSwitch", ".", "cur_cfg") != sw.get("Open_vSwitch", ".", "next_cfg")
        code, err = sw.stop()
        assert code == 0, err
    assert err.count("injected fault: reconcile fails half-way") >= 2, err   # the failure, and a retry of it


class Flapper:
    """A controller that accepts, says HELLO (OpenFlow 1.3) and hangs up after 0.3 s, every time."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            with conn:
                with contextlib.suppress(OSError):
                    conn.sendall(bytes.fromhex("0400000800000001"))
                    time.sleep(0.3)

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


def test_secure_while_controllers_connect_and_reconnect(switch: Switch, traffic: Traffic) -> None:
    """Controllers set from the start: one where nothing listens, one that keeps accepting and hanging up. The
    secure bridge never forwards by itself (no fail-open, no NORMAL) while they come and go."""
    sw, t = switch, traffic
    br = f"{t.stem}s"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]      # nothing listens there once this socket is closed
    flapper = Flapper()
    try:
        sw.vsctl("add-br", br, "--", "set-fail-mode", br, "secure", "--", "set-controller", br,
                 f"tcp:127.0.0.1:{closed}", f"tcp:127.0.0.1:{flapper.port}", *ports_args(br, t))
        sw.wait_for("ports attached", lambda: attached(sw, t))
        sw.wait_for("the controller connected and was dropped twice", lambda: flapper.accepted >= 2, timeout=10)
        hold_secure_then_open(sw, br, t, secure_from=0.0)
        assert flapper.accepted >= 2
    finally:
        flapper.close()


def test_secure_from_creation_on_a_cold_numba_cache(net: HostNet, traffic: Traffic) -> None:
    """The creation case again, with the daemon on an empty numba cache (every kernel compiles)."""
    t = traffic
    with tempfile.TemporaryDirectory(prefix="pvnumba-") as cache, \
            private_switch(prefix="pvsec-", NUMBA_CACHE_DIR=cache) as sw:
        br = f"{t.stem}s"
        tool(sw, "ovs-vsctl", 150, "add-br", br, "--", "set-fail-mode", br, "secure", *ports_args(br, t))
        sw.wait_for("ports attached", lambda: attached(sw, t), timeout=150)
        hold_secure_then_open(sw, br, t, secure_from=0.0, ofctl_timeout=150)
        assert os.listdir(cache), "the daemon did not use the empty numba cache"
