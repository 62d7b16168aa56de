"""Two (or more) switches joined by a tunnel, each in a network namespace of its own, for the tunnel tests.

Per side (``a``, ``b``, ...):

```
 netns <p>v<side> ("VM")          netns <p>s<side> (the switch: ovs-vswitchd 3.1 netdev or pyvswitch run)
 eth0 10.9.0.N/24 ──veth── <p>h<side> ─ br-int ─ tun0 (geneve / vxlan / gre)
                                        br-phy (internal: 172.31.0.N/24 or fd00:31::N/64) ─ <p>u<side> ──┐
                                                                                                           │ underlay
```

Two sides: the underlay is one veth pair between the two switch namespaces. More sides: each side's underlay
veth ends in a Linux bridge in a hub namespace (``<p>hub``), one L2 segment for all (also with two sides when
asked: ``hub=True``); the hub has one more port, not learning, that ``send_underlay`` sends from.

Everything is created under a unique prefix per topology and removed when the ``with`` block ends, even when
the block or the set-up fails (the switches stopped, the namespaces deleted).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.netutil import unique
from tests.switchutil import Switch

OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
VM_MTU = 1400                      # the inner MTU: leaves room for the outer headers on the 1500-byte underlay
TUN_PORT = "tun0"
SIDES = "abcdefgh"


def vm_ip(i: int) -> str:
    """The VM address of side number ``i`` (0 = a)."""
    return f"10.9.0.{i + 1}"


def underlay_ip(i: int, ipv6: bool = False) -> str:
    """The underlay (br-phy) address of side number ``i``."""
    return f"fd00:31::{i + 1}" if ipv6 else f"172.31.0.{i + 1}"


def sh(cmd: list[str], check: bool = True, timeout: float = 30, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run ``cmd``, capturing its output; with ``check`` a failure raises with the command and its stderr."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout}")
    return proc


def in_ns(ns: str, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    """``cmd`` run inside netns ``ns``."""
    return sh(["ip", "netns", "exec", ns, *cmd], check=check, timeout=timeout)


# ------------------------------------------------------------------ the switches
class SideSwitch:
    """A switch daemon running inside a netns, driven with the unchanged OVS tools through its rundir."""

    impl = ""

    def __init__(self, ns: str, rundir: str, wrap: tuple[str, ...] = ()) -> None:
        self.ns = ns
        self.rundir = rundir
        self.wrap = wrap            # a command the daemon runs under, inside the netns (e.g. taskset -c 1)
        self.env = dict(os.environ, OVS_RUNDIR=rundir)

    def start(self) -> None:
        """Start the daemon in ``ns``."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the daemon (never raises)."""
        raise NotImplementedError

    def alive(self) -> bool:
        """The daemon still runs."""
        raise NotImplementedError

    def pid(self) -> int:
        """The daemon's process id (0: not running)."""
        raise NotImplementedError

    def tool(self, *cmd: str, check: bool = True, timeout: float = 30,
             stdin: str | None = None) -> subprocess.CompletedProcess:
        """An OVS tool pointed at this switch's rundir."""
        proc = subprocess.run(list(cmd), capture_output=True, text=True, env=self.env, timeout=timeout,
                              input=stdin)
        if check and proc.returncode != 0:
            raise AssertionError(f"{self.impl}: {' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def log(self) -> str:
        """The end of the daemon's log (for failure messages)."""
        return ""


class OvsSwitch(SideSwitch):
    """A real ovs-vswitchd 3.1 (userspace datapath) and its own ovsdb-server."""

    impl = "ovs"

    def start(self) -> None:
        r = self.rundir
        self.tool("ovsdb-tool", "create", f"{r}/conf.db", OVS_SCHEMA)
        self.tool("ovsdb-server", f"{r}/conf.db", f"--remote=punix:{r}/db.sock", f"--pidfile={r}/ovsdb-server.pid",
                  f"--unixctl={r}/ovsdb-server.ctl", "--detach", f"--log-file={r}/ovsdb-server.log")
        self.tool("ovs-vsctl", f"--db=unix:{r}/db.sock", "--no-wait", "init")
        self.tool("ip", "netns", "exec", self.ns, *self.wrap, "ovs-vswitchd", f"unix:{r}/db.sock",
                  f"--pidfile={r}/ovs-vswitchd.pid", "--detach", f"--log-file={r}/ovs-vswitchd.log")

    def _pid(self, name: str) -> int:
        try:
            with open(f"{self.rundir}/{name}.pid") as f:
                return int(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0

    def alive(self) -> bool:
        pid = self._pid("ovs-vswitchd")
        return bool(pid) and os.path.exists(f"/proc/{pid}")

    def pid(self) -> int:
        return self._pid("ovs-vswitchd")

    def stop(self) -> None:
        if self.alive():
            self.tool("ovs-appctl", "exit", "--cleanup", check=False)
        for name in ("ovs-vswitchd", "ovsdb-server"):
            pid = self._pid(name)
            deadline = time.monotonic() + 5
            while pid and os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                time.sleep(0.05)
            if pid and os.path.exists(f"/proc/{pid}"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def log(self) -> str:
        try:
            with open(f"{self.rundir}/ovs-vswitchd.log") as f:
                return f.read()[-3000:]
        except OSError:
            return ""


class _NsSwitch(Switch):
    """``pyvswitch run`` started under ``ip netns exec``."""

    def __init__(self, rundir: str, ns: str, wrap: tuple[str, ...] = ()) -> None:
        super().__init__(rundir)
        self.ns = ns
        self.wrap = wrap

    def command(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *self.wrap, *super().command()]


class PyvSwitch(SideSwitch):
    """pyvswitch (``python -m vswitch.cli run --rundir R``) inside the netns."""

    impl = "pyvswitch"

    def __init__(self, ns: str, rundir: str, wrap: tuple[str, ...] = ()) -> None:
        super().__init__(ns, rundir, wrap)
        self.sw = _NsSwitch(rundir, ns, wrap)
        self.exit: tuple[int, str] | None = None       # (exit status, stderr) once stopped

    def check_exit(self) -> None:
        """It exited cleanly when stopped, and no kernel compiled after its start-up warm-up."""
        assert self.exit is not None, "pyvswitch was not stopped"
        code, err = self.exit
        assert code == 0, f"pyvswitch exited with {code}: {err[-3000:]}"
        assert "compiled after the start-up warm-up" not in err, err[-3000:]

    def start(self) -> None:
        self.sw.start()

    def alive(self) -> bool:
        return self.sw.proc is not None and self.sw.proc.poll() is None

    def pid(self) -> int:
        return self.sw.proc.pid if self.alive() else 0      # ip netns exec and its wrapper exec the daemon

    def stop(self) -> None:
        if self.sw.proc is None:
            return
        with contextlib.suppress(Exception):
            self.exit = self.sw.stop()
        # a daemon killed before it stopped its ovsdb-server leaves it running
        try:
            with open(f"{self.rundir}/ovsdb-server.pid") as f:
                pid = int(f.read().split()[0])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if self.rundir.encode() in f.read():
                    os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            pass

    def log(self) -> str:
        return self.sw.stderr()[-3000:]


IMPLS: dict[str, type[SideSwitch]] = {"ovs": OvsSwitch, "pyvswitch": PyvSwitch}


# ------------------------------------------------------------------ traffic helpers run inside namespaces
SNIFF_SCRIPT = r"""
import json, select, signal, socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
limit = int(sys.argv[2])
got = []
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
print("ready", flush=True)
while not stop and len(got) < limit:
    try:
        r, _, _ = select.select([s], [], [], 0.05)
    except InterruptedError:
        continue
    if r:
        data, addr = s.recvfrom(65535)
        got.append((addr[2], data.hex()))
s.setblocking(False)
try:
    while len(got) < limit:
        data, addr = s.recvfrom(65535)
        got.append((addr[2], data.hex()))
except BlockingIOError:
    pass
print(json.dumps(got), flush=True)
"""

TCP_SERVER = r"""
import socket, sys
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(1)
srv.settimeout(float(sys.argv[3]))
print("listening", flush=True)
c, _ = srv.accept()
c.settimeout(float(sys.argv[3]))
buf = b""
while True:
    d = c.recv(65536)
    if not d:
        break
    buf += d
c.sendall(buf[::-1])
c.close()
print(len(buf), flush=True)
"""

TCP_CLIENT = r"""
import os, socket, sys
data = os.urandom(int(sys.argv[3]))
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[4]))
c.sendall(data)
c.shutdown(socket.SHUT_WR)
back = b""
while True:
    d = c.recv(65536)
    if not d:
        break
    back += d
print("ok" if back == data[::-1] else f"mismatch {len(back)} of {len(data)}", flush=True)
"""


TX_OFF = r"""
import array, fcntl, socket, struct, sys
# ethtool -K IF tx off: ETHTOOL_STXCSUM (0x17) through SIOCETHTOOL (0x8946); ethtool itself is not installed
value = array.array("B", struct.pack("II", 0x17, 0))
addr, _ = value.buffer_info()
ifreq = struct.pack("16sP", sys.argv[1].encode(), addr)
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    fcntl.ioctl(s, 0x8946, ifreq)
"""


def tx_checksum_off(ns: str, ifname: str) -> None:
    """``ethtool -K IFNAME tx off`` inside ``ns``: the kernel completes checksums itself (the userspace datapath
    rejects partial ones)."""
    in_ns(ns, sys.executable, "-c", TX_OFF, ifname)


SEND_SCRIPT = r"""
import json, socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
print(sum(1 for f in json.loads(sys.argv[2]) if s.send(bytes.fromhex(f))))
"""


class Capture:
    """An AF_PACKET capture of every frame on one interface of a netns (both directions), running until
    ``stop()``; returns scapy packets, each with ``direction`` = ``"out"`` (sent on the interface) or ``"in"``."""

    def __init__(self, ns: str, ifname: str, limit: int = 2000) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SNIFF_SCRIPT, ifname,
                                      str(limit)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            raise AssertionError(f"the capture on {ns}/{ifname} did not start: {line} {self.proc.stderr.read()}")

    def stop(self) -> list[Any]:
        """End the capture; the frames seen, oldest first."""
        import scapy.layers.inet
        import scapy.layers.inet6
        import scapy.layers.vxlan  # noqa: F401 - binds the dissectors (UDP 4789; IPv4 / IPv6 under Ethernet)
        from scapy.layers.l2 import Ether

        time.sleep(0.2)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=20)
        lines = [ln for ln in out.splitlines() if ln.startswith("[")]
        assert lines, f"the capture printed nothing: {out} {err}"
        pkts = []
        for pkttype, hexdata in json.loads(lines[-1]):
            p = Ether(bytes.fromhex(hexdata))
            p.direction = "out" if pkttype == 4 else "in"      # PACKET_OUTGOING
            pkts.append(p)
        return pkts

    def close(self) -> None:
        """Kill the capture if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


# ------------------------------------------------------------------ the topology
@dataclass
class Side:
    """One side: its switch, netns names and addresses."""

    name: str
    index: int
    impl: str
    sw_ns: str
    vm_ns: str
    underlay_if: str
    vm_port: str
    vm_ip: str
    underlay_ip: str
    switch: SideSwitch | None = None
    ofports: dict[str, int] = field(default_factory=dict)


class TunnelNet:
    """Built switches and hosts; the methods drive them (see ``tunnel_pair``)."""

    def __init__(self, prefix: str, impls: Mapping[str, str], ipv6: bool, wrap: tuple[str, ...] = (),
                 hub: bool = False) -> None:
        self.prefix = prefix
        self.ipv6 = ipv6
        self.wrap = wrap
        self.sides: dict[str, Side] = {}
        for i, (name, impl) in enumerate(impls.items()):
            self.sides[name] = Side(name, i, impl, f"{prefix}s{name}", f"{prefix}v{name}", f"{prefix}u{name}",
                                    f"{prefix}h{name}", vm_ip(i), underlay_ip(i, ipv6))
        self.hub_ns = f"{prefix}hub" if len(self.sides) > 2 or hub else ""
        self._undo: list[tuple[str, Callable[[], None]]] = []
        self._tmp: list[tempfile.TemporaryDirectory] = []
        self.port_of: dict[str, str] = {}

    # ---- building
    def _netns(self, ns: str) -> None:
        sh(["ip", "netns", "add", ns])
        self._undo.append((f"netns {ns}", lambda: sh(["ip", "netns", "del", ns], check=False)))
        sh(["ip", "-n", ns, "link", "set", "lo", "up"])

    def _veth(self, a: str, ns_a: str, b: str, ns_b: str) -> None:
        in_ns(ns_a, "ip", "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns_b)
        for ifname, ns in ((a, ns_a), (b, ns_b)):
            tx_checksum_off(ns, ifname)
            sh(["ip", "-n", ns, "link", "set", ifname, "up"])

    def build(self, kind: str, options: Mapping[str, str], per_side: Mapping[str, Mapping[str, str]]) -> None:
        """Namespaces, links, switches, bridges and the tunnel port of every side."""
        for s in self.sides.values():
            self._netns(s.sw_ns)
            self._netns(s.vm_ns)
            # no IPv6 chatter (router solicitations, MLD) from the namespaces' own stacks into the switches; the
            # IPv6 underlay enables it on br-phy alone
            for ns in (s.sw_ns, s.vm_ns):
                in_ns(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        if self.hub_ns:
            self._netns(self.hub_ns)
            sh(["ip", "-n", self.hub_ns, "link", "add", "hub", "type", "bridge", "stp_state", "0",
                "forward_delay", "0"])
            sh(["ip", "-n", self.hub_ns, "link", "set", "hub", "up"])
            for s in self.sides.values():
                self._veth(s.underlay_if, s.sw_ns, f"{self.prefix}x{s.name}", self.hub_ns)
                sh(["ip", "-n", self.hub_ns, "link", "set", f"{self.prefix}x{s.name}", "master", "hub"])
            # the injection port: frames sent from <p>xj enter the hub at <p>xi, which learns nothing from them
            self._veth(f"{self.prefix}xi", self.hub_ns, f"{self.prefix}xj", self.hub_ns)
            sh(["ip", "-n", self.hub_ns, "link", "set", f"{self.prefix}xi", "master", "hub"])
            sh(["bridge", "-n", self.hub_ns, "link", "set", "dev", f"{self.prefix}xi", "learning", "off"])
        else:
            a, b = self.sides.values()
            self._veth(a.underlay_if, a.sw_ns, b.underlay_if, b.sw_ns)
        for s in self.sides.values():
            # the underlay veth is the switch's port only: the namespace's own stack must not answer ARP for
            # br-phy's address with the veth's MAC (NOARP) nor take the tunnel packets arriving there (strict
            # reverse-path filter: their source routes via br-phy; IPv6 is off on the veth); packet sockets (the
            # switch's, a capture's) still get every frame
            sh(["ip", "-n", s.sw_ns, "link", "set", s.underlay_if, "arp", "off"])
            in_ns(s.sw_ns, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1",
                  f"net.ipv4.conf.{s.underlay_if}.rp_filter=1")
        for s in self.sides.values():
            self._veth(s.vm_port, s.sw_ns, "eth0", s.vm_ns)
            sh(["ip", "-n", s.vm_ns, "link", "set", "eth0", "mtu", str(VM_MTU)])
            sh(["ip", "-n", s.vm_ns, "addr", "add", f"{s.vm_ip}/24", "dev", "eth0"])
            tmp = tempfile.TemporaryDirectory(prefix=f"{self.prefix}{s.name}-")
            self._tmp.append(tmp)
            s.switch = IMPLS[s.impl](s.sw_ns, tmp.name, self.wrap)
            sw = s.switch
            self._undo.append((f"switch {s.name}", sw.stop))
            sw.start()
        for s in self.sides.values():
            opts = {"remote_ip": self._default_remote(s), **options, **per_side.get(s.name, {})}
            self.configure(s, kind, opts)

    def _default_remote(self, s: Side) -> str:
        """The other side's underlay address (two sides), else ``flow``."""
        others = [o for o in self.sides.values() if o is not s]
        return others[0].underlay_ip if len(others) == 1 else "flow"

    def configure(self, s: Side, kind: str, opts: Mapping[str, str]) -> None:
        """br-phy with the underlay veth and address, br-int with the VM's port and the tunnel port."""
        plen = 64 if self.ipv6 else 24
        self.vsctl(s.name, "add-br", "br-phy", "--", "set", "Bridge", "br-phy", "datapath_type=netdev",
                   "--", "add-port", "br-phy", s.underlay_if)
        if self.ipv6:
            sh(["ip", "netns", "exec", s.sw_ns, "sysctl", "-qw", "net.ipv6.conf.br-phy.disable_ipv6=0"],
               check=False)
            sh(["ip", "-n", s.sw_ns, "addr", "add", f"{s.underlay_ip}/{plen}", "dev", "br-phy", "nodad"])
        else:
            sh(["ip", "-n", s.sw_ns, "addr", "add", f"{s.underlay_ip}/{plen}", "dev", "br-phy"])
        sh(["ip", "-n", s.sw_ns, "link", "set", "br-phy", "up"])
        iface = ["type=" + kind] + [f"options:{k}={v}" for k, v in opts.items()]
        self.vsctl(s.name, "add-br", "br-int", "--", "set", "Bridge", "br-int", "datapath_type=netdev",
                   "--", "add-port", "br-int", s.vm_port, "--", "set", "Interface", s.vm_port, "ofport_request=1",
                   "--", "add-port", "br-int", TUN_PORT, "--", "set", "Interface", TUN_PORT, "ofport_request=2",
                   *iface)
        for port in (s.vm_port, TUN_PORT):
            got = self.vsctl(s.name, "get", "Interface", port, "ofport")
            err = self.vsctl(s.name, "get", "Interface", port, "error")
            assert got.isdigit() and int(got) > 0, \
                f"side {s.name} ({s.impl}): {port} has no OpenFlow port ({got}; error {err})"
            s.ofports[port] = int(got)

    def close(self) -> None:
        """Undo everything, newest first; failures are ignored (things may be gone already)."""
        while self._undo:
            _, fn = self._undo.pop()
            with contextlib.suppress(Exception):
                fn()
        for tmp in self._tmp:
            with contextlib.suppress(Exception):
                tmp.cleanup()

    # ---- the switches
    def switch(self, side: str) -> SideSwitch:
        sw = self.sides[side].switch
        assert sw is not None
        return sw

    def vsctl(self, side: str, *args: str) -> str:
        """``ovs-vsctl ARGS`` on the switch of ``side``; its stdout, unquoted."""
        return self.switch(side).tool("ovs-vsctl", "--timeout=20", *args).stdout.strip().strip('"')

    def ofctl(self, side: str, *args: str, stdin: str | None = None) -> str:
        """``ovs-ofctl ARGS`` on the switch of ``side``; its stdout."""
        return self.switch(side).tool("ovs-ofctl", "--timeout=20", *args, stdin=stdin).stdout

    def appctl(self, side: str, *args: str, check: bool = True) -> str:
        """``ovs-appctl ARGS`` on the switch of ``side``; its stdout."""
        return self.switch(side).tool("ovs-appctl", "--timeout=20", *args, check=check).stdout

    def flows(self, side: str, *flows: str) -> None:
        """Replace br-int's flows of ``side`` with ``flows`` (``{vm}`` and ``{tun}`` name its two ports)."""
        s = self.sides[side]
        text = "\n".join(f.format(vm=s.ofports[s.vm_port], tun=s.ofports[TUN_PORT]) for f in flows) + "\n"
        self.ofctl(side, "del-flows", "br-int")
        self.ofctl(side, "add-flows", "br-int", "-", stdin=text)

    # ---- traffic
    def ping(self, src: str, dst: str, count: int = 3, deadline: int = 6) -> int:
        """Pings from the VM of ``src`` to the VM of ``dst``: how many were answered."""
        proc = in_ns(self.sides[src].vm_ns, "ping", "-n", "-c", str(count), "-i", "0.2", "-W", "1", "-w",
                     str(deadline), self.sides[dst].vm_ip, check=False, timeout=deadline + 10)
        for line in proc.stdout.splitlines():
            if "packets transmitted" in line:
                return int(line.split(",")[1].split()[0])
        return 0

    def reaches(self, src: str, dst: str, count: int = 3, deadline: int = 6) -> bool:
        """At least one ping of ``count`` answered."""
        return self.ping(src, dst, count, deadline) > 0

    def tcp(self, src: str, dst: str, size: int = 200_000, port: int = 5201, timeout: float = 15) -> str:
        """A TCP connection from the VM of ``src`` to the VM of ``dst``: ``size`` bytes sent, the server sends
        them back reversed; ``"ok"`` when they came back intact, else what went wrong."""
        d = self.sides[dst]
        server = subprocess.Popen(["ip", "netns", "exec", d.vm_ns, sys.executable, "-c", TCP_SERVER, d.vm_ip,
                                   str(port), str(timeout)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        try:
            line = server.stdout.readline()
            if line.strip() != "listening":
                return f"server did not start: {line} {server.stderr.read()}"
            client = in_ns(self.sides[src].vm_ns, sys.executable, "-c", TCP_CLIENT, d.vm_ip, str(port), str(size),
                           str(timeout), check=False, timeout=timeout + 10)
            return client.stdout.strip() or client.stderr.strip().splitlines()[-1]
        finally:
            if server.poll() is None:
                server.kill()
            server.communicate(timeout=10)

    def sniff_underlay(self, side: str, limit: int = 2000) -> Capture:
        """Start capturing every frame on ``side``'s underlay veth (``stop()`` returns scapy packets). The frames
        another side encapsulates are best seen arriving here ("in"), whatever the sender's transmit path."""
        s = self.sides[side]
        cap = Capture(s.sw_ns, s.underlay_if, limit)
        self._undo.append((f"capture {side}", cap.close))
        return cap

    def send_underlay(self, to: str, frames: list[bytes]) -> int:
        """Send raw ``frames`` onto the underlay, to arrive on side ``to``'s underlay port as a peer's would (with a
        hub: from its injection port, so they may carry a peer's addresses and no one learns them there; without
        one: out of the far end of ``to``'s veth, where the peer's switch sees them leave and would learn a source
        MAC of its own on that port). Returns how many the kernel took."""
        s = self.sides[to]
        if self.hub_ns:
            ns, ifname = self.hub_ns, f"{self.prefix}xj"
        else:
            peer = next(o for o in self.sides.values() if o is not s)
            ns, ifname = peer.sw_ns, peer.underlay_if
        proc = in_ns(ns, sys.executable, "-c", SEND_SCRIPT, ifname, json.dumps([f.hex() for f in frames]))
        return int(proc.stdout.strip())

    def underlay_mac(self, side: str) -> str:
        """The MAC of ``side``'s br-phy (where the peers send its tunnel packets)."""
        return in_ns(self.sides[side].sw_ns, "cat", "/sys/class/net/br-phy/address").stdout.strip()

    def diagnose(self) -> str:
        """What each switch says about its tunnel state (for assertion messages)."""
        out = []
        for name, s in self.sides.items():
            sw = s.switch
            if sw is None:
                continue
            out.append(f"--- side {name} ({s.impl}) alive={sw.alive()}")
            for cmd in (("ovs-appctl", "--timeout=5", "dpctl/dump-flows"),
                        ("ovs-appctl", "--timeout=5", "tnl/neigh/show"),
                        ("ovs-vsctl", "--timeout=5", "list", "Interface", TUN_PORT)):
                with contextlib.suppress(Exception):
                    p = sw.tool(*cmd, check=False, timeout=10)
                    out.append(f"$ {' '.join(cmd[0:1] + cmd[2:])}\n{p.stdout}{p.stderr}")
            out.append(sw.log()[-1500:])
        return "\n".join(out)


@contextlib.contextmanager
def tunnel_net(kind: str = "geneve", impls: Mapping[str, str] | None = None, ipv6: bool = False,
               options: Mapping[str, str] | None = None, per_side: Mapping[str, Mapping[str, str]] | None = None,
               prefix: str = "ti", wrap: tuple[str, ...] = (), hub: bool = False) -> Iterator[TunnelNet]:
    """Sides ``impls`` (side name -> ``"ovs"`` or ``"pyvswitch"``) joined by ``kind`` tunnels with ``options``
    (``per_side`` adds or overrides some per side; ``remote_ip`` defaults to the other side's address with two
    sides, ``flow`` with more), torn down afterwards. The switch daemons run under ``wrap`` (e.g. ``taskset -c 1``)."""
    net = TunnelNet(unique(prefix), impls or {"a": "ovs", "b": "ovs"}, ipv6, wrap, hub)
    try:
        net.build(kind, options or {}, per_side or {})
        yield net
    finally:
        net.close()
    for s in net.sides.values():        # reached only when the block succeeded
        if isinstance(s.switch, PyvSwitch):
            s.switch.check_exit()


@contextlib.contextmanager
def tunnel_pair(kind: str = "geneve", a: str = "ovs", b: str = "ovs", ipv6: bool = False,
                options: Mapping[str, str] | None = None, per_side: Mapping[str, Mapping[str, str]] | None = None,
                prefix: str = "ti", wrap: tuple[str, ...] = (), hub: bool = False) -> Iterator[TunnelNet]:
    """Two sides, ``a`` and ``b`` (``"ovs"`` or ``"pyvswitch"``), joined by a ``kind`` tunnel (see ``tunnel_net``)."""
    with tunnel_net(kind, {"a": a, "b": b}, ipv6, options, per_side, prefix, wrap, hub) as net:
        yield net
