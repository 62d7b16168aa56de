"""The real Faucet controller (PyPI ``faucet`` 1.10, in ``.venv-faucet``, which ``make test`` installs) drives
pyvswitch as it drives Open vSwitch: a ``fail_mode=secure`` bridge with ``protocols=OpenFlow13`` and a datapath ID,
namespace hosts on veth ports pinned with ``ofport_request``, VLANs from Faucet's own configuration.

Faucet runs as a real process (``faucet``, which execs ``osken-manager``) listening on a free TCP port; the bridge
connects to it. Its log, exception log and Prometheus counters say whether the switch gave it any trouble.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netutil import Sniffer, mac_of, send_frames, unique
from tests.test_bridge_identity import RealOvs
from tests.test_openflow import ofctl

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
FAUCET_VENV = ROOT / ".venv-faucet"
FAUCET_COOKIE = "0x5adc15c0"      # Faucet's cookie on every flow it installs
OF13 = ("-O", "OpenFlow13")
#: Faucet 1.10.12 logs this ERROR once per connection, whatever the switch: its handler of the port descriptions
#: (os-ken asks for them while the connection is still in CONFIG_DISPATCHER) sends its flow messages, an empty list
#: here, through ``dpset.get(dp_id)``, and dpset registers a datapath only once it reaches MAIN_DISPATCHER.
#: ``test_faucet_logs_dp_not_up_with_open_vswitch_too`` shows ovs-vswitchd 3.1 getting it just the same.
FAUCET_OWN_ERRORS = ("send_flow_msgs: DP not up",)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _yaml(value: dict, indent: int = 0) -> str:
    """Nested dicts of JSON scalars and lists as YAML (integer keys stay integers: Faucet's port numbers)."""
    out = []
    for k, v in value.items():
        if isinstance(v, dict):
            out.append(f"{'  ' * indent}{k}:\n{_yaml(v, indent + 1)}")
        else:
            out.append(f"{'  ' * indent}{k}: {json.dumps(v)}\n")
    return "".join(out)


@pytest.fixture(scope="session")
def faucet_bin() -> str:
    """The ``faucet`` executable of ``.venv-faucet`` (built by ``make faucet-venv`` when missing)."""
    path = FAUCET_VENV / "bin" / "faucet"
    if not os.access(path, os.X_OK):
        proc = subprocess.run(["make", "-C", str(ROOT), "faucet-venv"], capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return str(path)


class Faucet:
    """A Faucet process with its configuration, log, exception log and Prometheus endpoint in ``workdir``."""

    def __init__(self, binary: str, workdir: Path, config: dict) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self.prometheus = _free_port()
        self.target = f"tcp:127.0.0.1:{self.port}"
        self.config = workdir / "faucet.yaml"
        self.config.write_text(_yaml(config))
        self.log_path = workdir / "faucet.log"
        self.exception_path = workdir / "faucet_exception.log"
        self.out_path = workdir / "faucet.out"
        self.netns = ""        # run in this network namespace (its own 127.0.0.1)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env.update(FAUCET_CONFIG=str(self.config), FAUCET_LOG=str(self.log_path),
                   FAUCET_EXCEPTION_LOG=str(self.exception_path), FAUCET_PROMETHEUS_PORT=str(self.prometheus),
                   FAUCET_PROMETHEUS_ADDR="127.0.0.1", PATH=f"{FAUCET_VENV / 'bin'}:{env.get('PATH', '')}")
        cmd = [self.binary, f"--ryu-ofp-tcp-listen-port={self.port}", "--ryu-ofp-listen-host=127.0.0.1"]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        with open(self.out_path, "w") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.workdir,
                                         start_new_session=True)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def metrics(self) -> dict[str, float]:
        """Faucet's Prometheus counters for its datapath (``of_errors_total``, ``of_dp_connections_total``, ...)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.prometheus}/metrics", timeout=5) as r:
            text = r.read().decode()
        return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+)\{dp_id=[^}]*\} (\S+)$", text, re.M)}

    def errors(self) -> list[str]:
        """The lines of its log with an error, an exception or an OpenFlow error in them."""
        return [ln for ln in self.log().splitlines() if re.search(r"\b(ERROR|CRITICAL)\b|Traceback|OFError", ln)]

    def check_clean(self) -> None:
        """No error (but Faucet's own, once: see ``FAUCET_OWN_ERRORS``), no exception, no OFPT_ERROR received."""
        assert self.proc is not None and self.proc.poll() is None, self.out_path.read_text()
        log, errors = self.log(), self.errors()
        assert [ln for ln in errors if not any(e in ln for e in FAUCET_OWN_ERRORS)] == [], log
        assert len(errors) <= 1, log                                     # one connection, so at most once
        exceptions = self.exception_path.read_text() if self.exception_path.exists() else ""
        assert exceptions.strip() == "", exceptions
        metrics = self.metrics()
        assert metrics.get("of_errors_total") == 0, metrics
        assert metrics.get("of_dp_connections_total") == 1, metrics      # connected once, never dropped
        assert metrics.get("of_dp_disconnections_total") == 0, metrics
        assert metrics.get("dp_status") == 1, metrics


@pytest.fixture
def faucet_factory(faucet_bin: str, tmp_path: Path) -> Iterator:
    """Make Faucets; each is stopped afterwards, also when the test fails."""
    made: list[Faucet] = []

    def make(config: dict) -> Faucet:
        f = Faucet(faucet_bin, tmp_path, config)
        made.append(f)
        return f

    try:
        yield make
    finally:
        for f in made:
            f.stop()


def faucet_bridge(switch, faucet: Faucet, name: str, dpid: int, ports: list[str]) -> None:  # noqa: ANN001
    """A secure OpenFlow 1.3 bridge with datapath ID ``dpid``, ``ports`` as ofports 1, 2, ..., and Faucet as its
    controller (retried every second at most)."""
    args = ["add-br", name, "--", "set", "Bridge", name, "fail_mode=secure", "protocols=OpenFlow13",
            f"other_config:datapath-id={dpid:016x}"]
    for i, port in enumerate(ports, 1):
        args += ["--", "add-port", name, port, "--", "set", "Interface", port, f"ofport_request={i}"]
    args += ["--", "--id=@c", "create", "Controller", f"target=\"{faucet.target}\"", "max_backoff=1000",
             "--", "set", "Bridge", name, "controller=@c"]
    switch.vsctl(*args)
    for i, port in enumerate(ports, 1):
        switch.wait_for(f"{port} attached", lambda i=i, port=port: switch.get("Interface", port, "ofport") == str(i))
    assert switch.get("Bridge", name, "datapath_id") == f"{dpid:016x}"


def faucet_up(switch, faucet: Faucet, name: str, n_ports: int) -> list[str]:  # noqa: ANN001
    """Start Faucet; wait until the bridge is connected and Faucet's pipeline is in it (every port's VLAN flow in
    table 0, the flood table filled); its flows."""
    faucet.start()
    switch.wait_for("Controller.is_connected", lambda: switch.get("Controller", name, "is_connected") == "true",
                    timeout=60)

    def flows() -> list[str]:
        return [ln.strip() for ln in ofctl(switch, *OF13, "dump-flows", name).splitlines()[1:] if ln.strip()]

    def programmed() -> bool:
        lines = flows()
        return (all(any("table=0," in ln and f"in_port={i}," in ln for ln in lines) for i in range(1, n_ports + 1))
                and any("table=3," in ln and "output:" in ln for ln in lines))

    switch.wait_for("Faucet's pipeline", programmed, timeout=30)
    lines = flows()
    assert all(f"cookie={FAUCET_COOKIE}," in ln for ln in lines), lines
    tables = {int(m.group(1)) for ln in lines if (m := re.search(r"table=(\d+),", ln))}
    assert {0, 1, 2, 3} <= tables, lines
    return lines


def ping_all(net, ns: str, ip: str, count: int = 10) -> tuple[int, int]:  # noqa: ANN001
    """(sent, received) of ``count`` pings."""
    out = net.exec(ns, ["ping", "-c", str(count), "-i", "0.2", "-W", "2", ip], check=False, timeout=60).stdout
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    return int(m.group(1)), int(m.group(2))



def access_vlans(name: str, dpid: int) -> dict:
    """Faucet's config for the access scenario: ports 1 and 2 native in VLAN 100 (office), 3 in 200 (guest)."""
    return {"vlans": {"office": {"vid": 100}, "guest": {"vid": 200}},
            "dps": {name: {"dp_id": dpid, "hardware": "Open vSwitch",
                           "interfaces": {1: {"name": "h1", "native_vlan": "office"},
                                          2: {"name": "h2", "native_vlan": "office"},
                                          3: {"name": "h3", "native_vlan": "guest"}}}}}

def test_faucet_access_vlans(switch, net, faucet_factory) -> None:  # noqa: ANN001
    """Two hosts in VLAN 100 and one in VLAN 200, all untagged access ports: nothing crosses the secure bridge
    before Faucet connects; then Faucet's multi-table pipeline is in the switch, the VLAN 100 hosts ping each other
    with no loss, the VLAN 200 host sees no frame of theirs, and Faucet saw no error."""
    stem = unique("fc")
    name = f"{stem}sw"
    dpid = secrets.randbits(40) | 1 << 40
    hosts = [(f"{stem}-h{i}", f"{stem}p{i}", f"10.73.0.{i}", f"02:00:00:73:00:0{i}") for i in (1, 2, 3)]
    for ns, port, ip, mac in hosts:
        net.add_host(ns, port, f"{ip}/24", mac=mac)
    (h1, _, ip1, mac1), (h2, _, ip2, mac2), (h3, _, ip3, mac3) = hosts
    faucet = faucet_factory(access_vlans(name, dpid))
    faucet_bridge(switch, faucet, name, dpid, [port for _, port, _, _ in hosts])

    # Before Faucet connects (it is not even running: the bridge retries): nothing crosses the bridge.
    sniff2, sniff3 = Sniffer(h2, "eth0", f"not ether src {mac2}"), Sniffer(h3, "eth0", f"not ether src {mac3}")
    assert ping_all(net, h1, ip2, count=3)[1] == 0
    assert sniff2.stop() == [] and sniff3.stop() == []
    assert switch.get("Controller", name, "is_connected") == "false"

    lines = faucet_up(switch, faucet, name, 3)
    assert any("table=0," in ln and "in_port=3," in ln and "set_field:4296->vlan_vid" in ln for ln in lines), lines

    # Same VLAN: no loss, and h2 sees h1's frames (the positive twin of both checks before and of h3's below).
    net.exec(h1, ["ip", "neigh", "flush", "all"])
    sniff2, sniff3 = Sniffer(h2, "eth0", f"not ether src {mac2}"), Sniffer(h3, "eth0", f"not ether src {mac3}")
    assert ping_all(net, h1, ip2) == (10, 10)
    assert ping_all(net, h2, ip1) == (10, 10)
    assert ping_all(net, h1, ip3, count=3)[1] == 0      # across VLANs: nothing
    assert ping_all(net, h3, ip2, count=3)[1] == 0
    seen2, seen3 = sniff2.stop(), sniff3.stop()
    assert [ln for ln in seen2 if ln.split()[1] == mac1], seen2
    assert not [ln for ln in seen2 if ln.split()[1] == mac3], seen2
    assert seen3 == [], seen3                              # VLAN 200's host: not a single frame
    # Faucet learned the hosts from packet-ins (its SET_ASYNC asks for action packet-ins only)
    switch.wait_for("learned hosts", lambda: all(
        any("table=1," in ln and f"dl_src={mac}" in ln for ln in ofctl(switch, *OF13, "dump-flows", name).splitlines())
        for mac in (mac1, mac2)))
    assert faucet.metrics().get("of_packet_ins_total", 0) > 0
    faucet.check_clean()


RESPONDER = r"""
# A host on an 802.1Q trunk without VLAN devices: answers ARP and ping for one address per VLAN, tagged.
import socket, struct, sys, time
ifname, mac, spec, seconds = sys.argv[1], bytes.fromhex(sys.argv[2]), sys.argv[3], float(sys.argv[4])
ips = {int(v): socket.inet_aton(ip) for v, ip in (x.split("=") for x in spec.split(","))}
SOL_PACKET, PACKET_AUXDATA, TP_STATUS_VLAN_VALID = 263, 8, 1 << 4
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((ifname, 0))
s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)   # the kernel takes the tag off received frames: it is in here
s.settimeout(0.2)

def checksum(b):
    b += b"\0" * (len(b) % 2)
    total = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

print("ready", flush=True)
answered = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        data, anc, _, addr = s.recvmsg(4096, socket.CMSG_SPACE(32))
    except TimeoutError:
        continue
    if addr[2] == socket.PACKET_OUTGOING:
        continue
    vid = None
    for level, kind, cdata in anc:
        if level == SOL_PACKET and kind == PACKET_AUXDATA:
            status, _, _, _, _, tci, _ = struct.unpack("IIIHHHH", cdata[:20])
            if status & TP_STATUS_VLAN_VALID:
                vid = tci & 0xFFF
    if data[12:14] == b"\x81\x00":
        vid, data = struct.unpack("!H", data[14:16])[0] & 0xFFF, data[:12] + data[16:]
    if vid not in ips:
        continue
    ip, src, tag = ips[vid], data[6:12], b"\x81\x00" + struct.pack("!H", vid)
    if data[12:14] == b"\x08\x06" and data[20:22] == b"\x00\x01" and data[38:42] == ip:
        reply = src + mac + tag + b"\x08\x06" + data[14:20] + b"\x00\x02" + mac + ip + data[22:32]
    elif data[12:14] == b"\x08\x00" and data[23] == 1 and data[30:34] == ip:
        ihl, total = (data[14] & 15) * 4, struct.unpack("!H", data[16:18])[0]
        iph = bytearray(data[14:14 + ihl])
        iph[12:16], iph[16:20] = data[30:34], data[26:30]
        icmp = bytearray(data[14 + ihl:14 + total])
        if icmp[0] != 8:
            continue
        icmp[0], icmp[2:4] = 0, b"\0\0"
        icmp[2:4] = struct.pack("!H", checksum(bytes(icmp)))
        reply = src + mac + tag + b"\x08\x00" + bytes(iph) + bytes(icmp)
    else:
        continue
    s.send(reply.ljust(64, b"\0"))
    answered += 1
print("answered", answered, flush=True)
"""


def test_faucet_trunk_port(switch, net, faucet_factory) -> None:  # noqa: ANN001
    """One trunk port carrying VLANs 100 and 200 tagged, two untagged access hosts (one per VLAN): each access
    host pings the trunk host's address in its VLAN with no loss, frames reach the trunk tagged with their VLAN,
    tagged frames from the trunk reach their VLAN untagged and no other, a VLAN not on the trunk reaches nobody."""
    stem = unique("ft")
    name = f"{stem}sw"
    dpid = secrets.randbits(40) | 1 << 41
    a, b, t = f"{stem}-a", f"{stem}-b", f"{stem}-t"
    net.add_host(a, f"{stem}pa", "10.74.0.1/24", mac="02:00:00:74:00:01")
    net.add_host(b, f"{stem}pb", "10.74.0.2/24", mac="02:00:00:74:00:02")
    net.add_host(t, f"{stem}pt", None, mac="02:00:00:74:00:0f")
    a_mac, b_mac, t_mac = mac_of(net, a), mac_of(net, b), mac_of(net, t)
    faucet = faucet_factory({
        "vlans": {"office": {"vid": 100}, "guest": {"vid": 200}},
        "dps": {name: {"dp_id": dpid, "hardware": "Open vSwitch",
                       "interfaces": {1: {"name": "a", "native_vlan": "office"},
                                      2: {"name": "b", "native_vlan": "guest"},
                                      3: {"name": "trunk", "tagged_vlans": ["office", "guest"]}}}}})
    faucet_bridge(switch, faucet, name, dpid, [f"{stem}pa", f"{stem}pb", f"{stem}pt"])
    lines = faucet_up(switch, faucet, name, 3)
    assert any("in_port=3,dl_vlan=100" in ln for ln in lines) and any("in_port=3,dl_vlan=200" in ln
                                                                     for ln in lines), lines

    responder = subprocess.Popen(["ip", "netns", "exec", t, sys.executable, "-c", RESPONDER, "eth0",
                                  t_mac.replace(":", ""), "100=10.74.0.100,200=10.74.0.200", "30"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert responder.stdout.readline().strip() == "ready"
        sniff_t = Sniffer(t, "eth0", f"not ether src {t_mac}")
        sniff_b = Sniffer(b, "eth0", f"not ether src {b_mac}")
        assert ping_all(net, a, "10.74.0.100") == (10, 10)      # VLAN 100 over the trunk, both ways
        assert ping_all(net, a, "10.74.0.200", count=3)[1] == 0  # the trunk's VLAN 200 address: not from VLAN 100
        seen_b = sniff_b.stop()
        assert ping_all(net, b, "10.74.0.200") == (10, 10)      # VLAN 200 over the trunk
        seen_t = sniff_t.stop()
    finally:
        responder.kill()
        out = responder.communicate(timeout=10)[0]
    assert seen_b == [], seen_b                                 # nothing of VLAN 100's reached VLAN 200's host
    from_a = [ln for ln in seen_t if ln.split()[1] == a_mac]
    from_b = [ln for ln in seen_t if ln.split()[1] == b_mac]
    assert from_a and all("vlan 100," in ln for ln in from_a), (seen_t, out)
    assert from_b and all("vlan 200," in ln for ln in from_b), (seen_t, out)

    # Tagged broadcasts from the trunk: VLAN 100 reaches a (untagged) only, 200 b only, 300 nobody.
    frames = {vid: b"\xff" * 6 + bytes.fromhex(t_mac.replace(":", "")) + b"\x81\x00" + vid.to_bytes(2, "big")
              + b"\x88\xb5" + f"tagged-{vid}".encode().ljust(46, b"\0") for vid in (100, 200, 300)}
    for vid, reaches_a, reaches_b in ((100, True, False), (200, False, True), (300, False, False)):
        sniff_a = Sniffer(a, "eth0", "ether proto 0x88b5")
        sniff_b = Sniffer(b, "eth0", "ether proto 0x88b5")
        assert send_frames(net, t, "eth0", [frames[vid]] * 3) == 3
        got_a, got_b = sniff_a.stop(), sniff_b.stop()
        assert len(got_a) == (3 if reaches_a else 0) and not [ln for ln in got_a if "vlan" in ln], (vid, got_a)
        assert len(got_b) == (3 if reaches_b else 0) and not [ln for ln in got_b if "vlan" in ln], (vid, got_b)
    faucet.check_clean()


def test_faucet_logs_dp_not_up_with_open_vswitch_too(faucet_factory) -> None:  # noqa: ANN001
    """The evidence for ``FAUCET_OWN_ERRORS``: the access-VLAN scenario against a real ovs-vswitchd 3.1 (userspace
    datapath, its own ovsdb-server, rundir and network namespace, Faucet in that namespace). Faucet connects and
    programs its pipeline, and its log has ``send_flow_msgs: DP not up`` once, as with pyvswitch, and no other error."""
    stem = unique("fo")
    name = f"{stem}sw"
    dpid = secrets.randbits(40) | 1 << 42
    with tempfile.TemporaryDirectory(prefix="realovs-") as rundir:
        ovs = RealOvs(rundir)
        try:
            ovs.start()
            ovs.run("ip", "-n", ovs.ns, "link", "set", "lo", "up")       # Faucet listens on its 127.0.0.1
            ports = [f"{stem}p{i}" for i in (1, 2, 3)]
            for i, port in enumerate(ports, 1):
                ovs.run("ip", "-n", ovs.ns, "link", "add", port, "type", "veth", "peer", "name", f"{stem}q{i}")
                ovs.run("ip", "-n", ovs.ns, "link", "set", port, "up")
                ovs.run("ip", "-n", ovs.ns, "link", "set", f"{stem}q{i}", "up")
            faucet = faucet_factory(access_vlans(name, dpid))
            faucet.netns = ovs.ns
            args = ["add-br", name, "--", "set", "Bridge", name, "datapath_type=netdev", "fail_mode=secure",
                    "protocols=OpenFlow13", f"other_config:datapath-id={dpid:016x}"]
            for i, port in enumerate(ports, 1):
                args += ["--", "add-port", name, port, "--", "set", "Interface", port, f"ofport_request={i}"]
            args += ["--", "--id=@c", "create", "Controller", f"target=\"{faucet.target}\"", "max_backoff=1000",
                     "--", "set", "Bridge", name, "controller=@c"]
            ovs.vsctl(*args)
            faucet.start()

            def flows() -> list[str]:
                out = ovs.run("ovs-ofctl", *OF13, "dump-flows", name).stdout
                return [ln.strip() for ln in out.splitlines()[1:] if ln.strip()]

            deadline = time.monotonic() + 60
            while not (ovs.vsctl("get", "Controller", name, "is_connected") == "true"
                       and any("table=3," in ln and "output:" in ln for ln in flows())):
                assert time.monotonic() < deadline, (faucet.log(), flows())
                time.sleep(0.2)
            lines = flows()
            assert all(f"cookie={FAUCET_COOKIE}," in ln for ln in lines), lines      # Faucet's pipeline, in OVS
            assert {0, 1, 2, 3} <= {int(m.group(1)) for ln in lines if (m := re.search(r"table=(\d+),", ln))}
            errors = faucet.errors()
            assert len(errors) == 1 and FAUCET_OWN_ERRORS[0] in errors[0], faucet.log()
            assert f"{name} send_flow_msgs: DP not up" in errors[0], errors
        finally:
            ovs.stop()
