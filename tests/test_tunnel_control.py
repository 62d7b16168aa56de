"""The tunnels' control plane (issue 19) against a real ovs-vswitchd 3.1 (userspace datapath) as the oracle.

Both run in one network namespace made for the test, with a netdev bridge ``br-phy`` whose internal port holds
IPv4 and IPv6 addresses and routes (a connected subnet, a route via a gateway, an IPv6 route): the real
``ovs-vswitchd`` and ``python -m vswitch.tunnels.serve``, our route table, neighbour cache and tunnel port map
behind a unixctl socket with ``appctl.register``'s commands. The same ``ovs-appctl`` commands go to both and
their whole answers (text, errors, exit status) are compared; nothing is normalised but the socket's path in
ovs-appctl's error line, and the order of ``tnl/neigh/show``'s lines (OVS lists a hash table seeded at random).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netutil import unique
from vswitch.tunnels.neigh import NeighCache, arp_request, nd_solicit, neighbour_of
from vswitch.tunnels.ovstext import (
    format_mac,
    format_mapped,
    mapped,
    parse_ipv4_cidr,
    parse_ipv6_cidr,
    parse_mac,
    scan_pkt_mark,
)
from vswitch.tunnels.route import RouteError, RouteTable
from vswitch.tunnels.tnlports import TunnelPortMap, dpif_port_name, ports_show

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "ovs-tunnel-control.txt"


def sh(*cmd: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)
    assert not check or proc.returncode == 0, (cmd, proc.stdout, proc.stderr)
    return proc


class Underlay:
    """A network namespace with a real ovs-vswitchd (its own ovsdb-server and rundir) holding br-phy (netdev)
    and br-int with tunnel ports, and our control plane serving the same commands on its own socket."""

    def __init__(self, rundir: str) -> None:
        self.rundir = rundir
        self.ns = unique("c")
        self.env = dict(os.environ, OVS_RUNDIR=rundir)
        self.db = f"unix:{rundir}/db.sock"
        self.ours_ctl = f"{rundir}/ours.ctl"
        self.ours: subprocess.Popen | None = None

    # ------------------------------------------------------------ the real ovs-vswitchd
    def start_ovs(self) -> None:
        r = self.rundir
        sh("ip", "netns", "add", self.ns)
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        sh("ovsdb-tool", "create", f"{r}/conf.db", "/usr/share/openvswitch/vswitch.ovsschema")
        sh("ovsdb-server", f"{r}/conf.db", f"--remote=punix:{r}/db.sock", f"--pidfile={r}/ovsdb-server.pid",
           f"--unixctl={r}/ovsdb-server.ctl", "--detach", f"--log-file={r}/ovsdb-server.log", env=self.env)
        self.vsctl("--no-wait", "init")
        sh("ip", "netns", "exec", self.ns, "ovs-vswitchd", self.db, f"--pidfile={r}/ovs-vswitchd.pid", "--detach",
           f"--log-file={r}/ovs-vswitchd.log", env=self.env)

    def vsctl(self, *args: str) -> str:
        return sh("ovs-vsctl", f"--db={self.db}", "--timeout=10", *args, env=self.env).stdout.strip()

    def ip(self, *args: str) -> None:
        sh("ip", "-n", self.ns, *args)

    def pid(self, name: str) -> int:
        try:
            return int(Path(f"{self.rundir}/{name}.pid").read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    @property
    def ovs_ctl(self) -> str:
        return f"{self.rundir}/ovs-vswitchd.{self.pid('ovs-vswitchd')}.ctl"

    def add_bridge(self, name: str) -> None:
        self.vsctl("add-br", name, "--", "set", "Bridge", name, "datapath_type=netdev")
        deadline = time.monotonic() + 10
        while self.vsctl("get", "Bridge", name, "datapath_id") == "[]":
            assert time.monotonic() < deadline, "ovs-vswitchd wrote no datapath_id"
            time.sleep(0.1)

    def add_tunnel(self, name: str, kind: str, remote: str) -> int:
        """A tunnel port on br-int; its datapath port's number (shared by the ports of one type and UDP port)."""
        self.vsctl("add-port", "br-int", name, "--", "set", "Interface", name, f"type={kind}",
                   f"options:remote_ip={remote}")
        deadline = time.monotonic() + 10
        while True:
            for line in self.appctl("dpif/show", target=self.ovs_ctl)[1].splitlines():
                words = line.split()
                if words and words[0] == name and "/" in words[1]:
                    return int(words[1].rstrip(":").split("/")[1])
            assert time.monotonic() < deadline, f"{name} never reached the datapath"
            time.sleep(0.1)

    # ------------------------------------------------------------ ours
    def start_ours(self, ports: list[tuple[str, int, int]]) -> None:
        args = [f"--port={t}:{dst}:{odp}" for t, dst, odp in ports]
        self.ours = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, "-m", "vswitch.tunnels.serve",
             f"--unixctl={self.ours_ctl}", *args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore"))
        ready, _, _ = select.select([self.ours.stdout], [], [], 30)
        assert ready and self.ours.stdout.readline().strip() == "ready", "the control plane did not start"

    def stop(self) -> None:
        if self.ours is not None:
            self.ours.terminate()
            try:
                self.ours.wait(10)
            except subprocess.TimeoutExpired:
                self.ours.kill()
                self.ours.wait()
        if self.pid("ovs-vswitchd"):
            subprocess.run(["ovs-appctl", "-t", self.ovs_ctl, "exit", "--cleanup"], capture_output=True,
                           env=self.env, timeout=30)
        for name in ("ovs-vswitchd", "ovsdb-server"):
            pid = self.pid(name)
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 15)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=30)

    # ------------------------------------------------------------ asking both
    def appctl(self, *args: str, target: str) -> tuple[int, str, str]:
        proc = subprocess.run(["ovs-appctl", "-t", target, *args], capture_output=True, text=True, timeout=30,
                              env=self.env)
        return proc.returncode, proc.stdout, proc.stderr.replace(target, "<target>")

    def both(self, *args: str) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
        """(the real ovs-vswitchd's answer, ours) to ``ovs-appctl args``."""
        return self.appctl(*args, target=self.ovs_ctl), self.appctl(*args, target=self.ours_ctl)

    def same(self, *args: str, timeout: float = 0.0) -> tuple[int, str, str]:
        """Assert both answer ``args`` alike (retrying up to ``timeout`` s while either still follows a kernel
        change); the answer."""
        deadline = time.monotonic() + timeout
        while True:
            real, ours = self.both(*args)
            if real == ours or time.monotonic() >= deadline:
                assert ours == real, f"ovs-appctl {' '.join(args)}:\nreal: {real}\nours: {ours}"
                return real
            time.sleep(0.2)


@pytest.fixture
def underlay() -> Iterator[Underlay]:
    """br-phy at 10.9.0.1/24 and fd00:9::1/64, routes 10.20.0.0/16 via 10.9.0.254 and fd00:20::/48 via
    fd00:9::fe; br-int with geneve gnv0 (-> 10.20.0.5, via the gateway), vxlan vx0 (-> 10.9.0.7, on link),
    geneve gnv1 (-> 192.0.2.9, no route), geneve gnv6 (-> fd00:20::5); both control planes answering."""
    with tempfile.TemporaryDirectory(prefix="tnlctl-") as rundir:
        u = Underlay(rundir)
        try:
            u.start_ovs()
            u.add_bridge("br-phy")
            u.add_bridge("br-int")
            u.ip("addr", "add", "10.9.0.1/24", "dev", "br-phy")
            u.ip("addr", "add", "fd00:9::1/64", "dev", "br-phy", "nodad")
            u.ip("link", "set", "br-phy", "up")
            u.ip("route", "add", "10.20.0.0/16", "via", "10.9.0.254")
            u.ip("-6", "route", "add", "fd00:20::/48", "via", "fd00:9::fe")
            ports = [("geneve", 6081, u.add_tunnel("gnv0", "geneve", "10.20.0.5")),
                     ("vxlan", 4789, u.add_tunnel("vx0", "vxlan", "10.9.0.7")),
                     ("geneve", 6081, u.add_tunnel("gnv1", "geneve", "192.0.2.9")),
                     ("geneve", 6081, u.add_tunnel("gnv6", "geneve", "fd00:20::5"))]
            u.start_ours(ports)
            yield u
        finally:
            u.stop()


# ---------------------------------------------------------------------- ovs/route/*
def test_route_show_is_ovs_route_show(underlay: Underlay) -> None:
    """The route table as ovs-vswitchd caches it from the namespace: local addresses (lo's too), the connected
    subnets, the gateway routes, IPv6 link-local, in OVS's order, with the source addresses OVS picks."""
    _, text, _ = underlay.same("ovs/route/show", timeout=5)
    assert "Cached: 10.20.0.0/16 dev br-phy GW 10.9.0.254 SRC 10.9.0.1\n" in text
    assert "Cached: fd00:20::/48 dev br-phy GW fd00:9::fe SRC fd00:9::1\n" in text
    assert "Cached: 10.9.0.1/32 dev br-phy SRC 10.9.0.1 local\n" in text


LOOKUPS = ["10.20.3.4", "10.9.0.7", "10.9.0.1", "127.0.0.1", "192.0.2.9", "fd00:20::5", "fd00:9::77", "fd00:9::1",
           "fe80::1", "2001:db8::1", "10.20.3.4/32", "10.20.0.0/16", "fd00:20::5/128", "fd00:20::/48", "junk",
           "::ffff:10.9.0.7"]


def test_route_lookup_is_ovs_route_lookup(underlay: Underlay) -> None:
    """ovs/route/lookup: on link (gateway ::), via a gateway, local addresses, IPv6, no route ("Not found"),
    a prefix or junk ("Invalid parameters"), marks."""
    underlay.same("ovs/route/show", timeout=5)
    for ip in LOOKUPS:
        underlay.same("ovs/route/lookup", ip)
    assert underlay.same("ovs/route/lookup", "10.20.3.4")[1] == "src 10.9.0.1\ngateway 10.9.0.254\ndev br-phy\n"
    for mark in ("pkt_mark=0", "pkt_mark=5", "pkt_mark=x", "mark=1"):
        underlay.same("ovs/route/lookup", "10.9.0.7", mark)
    assert underlay.same("ovs/route/lookup", "192.0.2.9")[2].startswith("Not found\n")


ROUTE_COMMANDS = [
    ("ovs/route/add", "10.30.0.0/16", "br-phy", "10.9.0.253"),
    ("ovs/route/add", "10.31.0.0/16", "br-phy"),                       # no source for it: an error
    ("ovs/route/add", "10.9.0.0/24", "br-phy", "pkt_mark=5"),
    ("ovs/route/add", "10.40.0.0/16", "br-phy", "10.9.0.9", "pkt_mark=0x10"),
    ("ovs/route/add", "fd00:30::/64", "br-phy", "fd00:9::2"),
    ("ovs/route/add", "10.9.0.5/8", "br-phy"),                         # host bits: 10.0.0.0/8
    ("ovs/route/add", "10.50.0.0/16", "nosuchdev"),
    ("ovs/route/add", "10.50.0.0/33", "br-phy"),
    ("ovs/route/add", "bad", "br-phy"),
    ("ovs/route/add", "10.50.0.0/16", "br-phy", "1.2.3"),
    ("ovs/route/add", "10.50.0.0/16", "br-phy", "10.9.0.1", "pkt=3"),
    ("ovs/route/add", "fd00:40::/64", "br-phy", "10.9.0.1"),
    ("ovs/route/add", "10.62.0.0/255.255.0.0", "br-phy", "10.9.0.2"),
    ("ovs/route/add", "10.63.0.0/255.0.255.0", "br-phy", "10.9.0.2"),
    ("ovs/route/add", "10.64.0.0/16", "lo", "127.0.0.9"),
    ("ovs/route/add",),
    ("ovs/route/add", "1", "2", "3", "4", "5"),
    ("ovs/route/lookup", "10.30.1.1"),
    ("ovs/route/lookup", "10.9.0.7", "pkt_mark=5"),
    ("ovs/route/lookup", "10.9.0.7", "pkt_mark=6"),
    ("ovs/route/lookup", "10.40.0.1", "pkt_mark=16"),
    ("ovs/route/lookup", "10.77.0.1"),
    ("ovs/route/del", "10.99.0.0/16"),                                  # a missing route
    ("ovs/route/del", "10.20.0.0/16"),                                  # a kernel route: not a user one
    ("ovs/route/del", "10.9.0.0/24"),                                   # the user one has a mark
    ("ovs/route/del", "10.9.0.0/24", "pkt_mark=5"),
    ("ovs/route/del", "10.9.0.0/24", "pkt_mark=5"),
    ("ovs/route/del", "bad"),
    ("ovs/route/del", "10.30.0.0/16", "junk"),
    ("ovs/route/lookup", "10.9.0.7", "pkt_mark=5"),
]


def test_route_add_del_as_ovs(underlay: Underlay) -> None:
    """ovs/route/add / del, good and bad, answer as ovs-vswitchd does, and leave the same table ("User:"
    lines placed where OVS's classifier places them)."""
    underlay.same("ovs/route/show", timeout=5)
    for cmd in ROUTE_COMMANDS:
        underlay.same(*cmd)
        underlay.same("ovs/route/show")
    assert "User: 10.40.0.0/16 MARK 16 dev br-phy GW 10.9.0.9 SRC 10.9.0.1\n" in underlay.same("ovs/route/show")[1]
    assert underlay.same("ovs/route/del", "10.99.0.0/16")[2].startswith("Not found\n")


def test_route_table_follows_the_kernel(underlay: Underlay) -> None:
    """Kernel routes and addresses that come and go while both run: both re-read the namespace, user routes
    stay and keep OVS's order."""
    underlay.same("ovs/route/show", timeout=5)
    underlay.same("ovs/route/add", "10.30.0.0/16", "br-phy", "10.9.0.253")
    underlay.same("ovs/route/add", "fd00:30::/64", "br-phy", "fd00:9::2")
    underlay.ip("route", "add", "10.21.0.0/16", "via", "10.9.0.254")
    underlay.ip("route", "add", "default", "via", "10.9.0.254")
    underlay.ip("addr", "add", "10.10.0.1/16", "dev", "br-phy")
    text = underlay.same("ovs/route/show", timeout=5)[1]
    assert "Cached: 0.0.0.0/0 dev br-phy GW 10.9.0.254 SRC 10.9.0.1\n" in text
    assert "User: 10.30.0.0/16 dev br-phy GW 10.9.0.253 SRC 10.9.0.1\n" in text
    underlay.same("ovs/route/lookup", "192.0.2.9")
    underlay.ip("route", "del", "10.21.0.0/16")
    underlay.ip("addr", "del", "10.10.0.1/16", "dev", "br-phy")
    text = underlay.same("ovs/route/show", timeout=5)[1]
    assert "10.21.0.0" not in text and "10.10.0.1" not in text
    underlay.same("tnl/ports/show", "-v", timeout=5)


# ---------------------------------------------------------------------- tnl/neigh/*, tnl/arp/*
def _neigh_lines(answer: tuple[int, str, str]) -> tuple[int, list[str], list[str], str]:
    rc, out, err = answer
    lines = out.splitlines(keepends=True)
    return rc, lines[:2], sorted(lines[2:]), err


NEIGH_COMMANDS = [
    ("tnl/neigh/set", "br-phy", "10.9.0.2", "aa:55:aa:55:00:02"),
    ("tnl/neigh/set", "br-phy", "10.9.0.3", "aa:55:aa:55:00:03"),
    ("tnl/neigh/set", "br-other", "10.9.0.3", "aa:55:aa:55:00:33"),        # OVS takes any bridge name
    ("tnl/neigh/set", "br-phy", "fd00:9::2", "aa:55:aa:55:00:12"),
    ("tnl/arp/set", "br-phy", "10.9.0.5", "AA:55:aa:55:0:5"),
    ("tnl/neigh/set", "br-phy", "10.9.0.2", "aa:55:aa:55:00:22"),          # a new MAC replaces the old
    ("tnl/neigh/set", "br-phy", "10.9.0.300", "aa:55:aa:55:00:05"),
    ("tnl/neigh/set", "br-phy", "10.9.0.6", "aa:55:aa:55:00"),
    ("tnl/neigh/set", "br-phy", "10.9.0.6", "aa:55:aa:55:00:06:07"),
    ("tnl/neigh/set", "br-phy", "fd00::zz", "aa:55:aa:55:00:06"),
    ("tnl/neigh/set", "br-phy", "10.9.0.6"),
    ("tnl/neigh/aging",),
    ("tnl/neigh/aging", "0"),
    ("tnl/neigh/aging", "3601"),
    ("tnl/neigh/aging", "abc"),
    ("tnl/arp/aging", "3600"),
    ("tnl/neigh/aging",),
]


def test_neigh_commands_as_ovs(underlay: Underlay) -> None:
    """tnl/neigh/set (IPv4 and IPv6, any bridge, errors), show (IPv4 and IPv6, OVS's columns), flush, aging and
    the older tnl/arp/* names answer as ovs-vswitchd does."""
    for cmd in NEIGH_COMMANDS:
        underlay.same(*cmd)
        for show in ("tnl/neigh/show", "tnl/arp/show"):
            real, ours = underlay.both(show)
            assert _neigh_lines(ours) == _neigh_lines(real)
    rc, out, _ = underlay.both("tnl/neigh/show")[1]
    assert "fd00:9::2                                     aa:55:aa:55:00:12   br-phy\n" in out
    assert "10.9.0.2                                      aa:55:aa:55:00:22   br-phy\n" in out
    underlay.same("tnl/arp/flush")
    assert underlay.same("tnl/neigh/show")[1].count("\n") == 2


# ---------------------------------------------------------------------- tnl/ports/show, egress
def test_tnl_ports_show_as_ovs(underlay: Underlay) -> None:
    """tnl/ports/show: one line per tunnel datapath port with the number of ports sharing it; -v: the receive
    rules (br-phy's MAC, its addresses, the protocol and UDP port)."""
    _, text, _ = underlay.same("tnl/ports/show")
    assert text.startswith("Listening ports:\ngenev_sys_6081 (") and "ref_cnt=3\n" in text
    underlay.same("tnl/ports/show", "-V")
    _, text, _ = underlay.same("tnl/ports/show", "-v", timeout=5)
    mac = sh("ip", "netns", "exec", underlay.ns, "cat", "/sys/class/net/br-phy/address").stdout.strip()
    assert f"eth(dst={mac}),eth_type(0x86dd),ipv6(dst=fd00:9::1,proto=17,frag=no),udp(dst=4789)" in text
    underlay.same("tnl/ports/show", "x")
    underlay.same("tnl/egress_port_range")


def test_tunnel_status_as_ovs(underlay: Underlay) -> None:
    """Interface.status of a tunnel port: the egress device and its carrier as ovs-vswitchd writes them (carrier
    down when br-phy goes down and a user route still leads there), nothing when no route reaches the remote;
    the real texts, with iface_types, are those of tests/fixtures/ovs-tunnel-control.txt."""
    underlay.same("ovs/route/show", timeout=5)
    remotes = {"gnv0": "10.20.0.5", "vx0": "10.9.0.7", "gnv1": "192.0.2.9", "gnv6": "fd00:20::5"}

    def ours() -> list[str]:
        out = []
        for remote in remotes.values():
            status = json.loads(underlay.appctl("pyvswitch/tnl-egress", remote, target=underlay.ours_ctl)[1])
            out.append("{" + ", ".join(f"{k}={v}" for k, v in sorted(status.items())) + "}")
        return out

    def real() -> list[str]:
        return [underlay.vsctl("get", "Interface", name, "status") for name in remotes]

    def settled() -> list[str]:
        deadline = time.monotonic() + 10
        while ours() != real() and time.monotonic() < deadline:
            time.sleep(0.3)
        assert ours() == real()
        return real()

    up = settled()
    assert up[0] == "{tunnel_egress_iface=br-phy, tunnel_egress_iface_carrier=up}" and up[2] == "{}"
    underlay.same("ovs/route/add", "10.20.0.0/16", "br-phy", "10.9.0.254")   # stays when br-phy goes down
    underlay.ip("link", "set", "br-phy", "down")
    down = settled()
    assert down[0] == "{tunnel_egress_iface=br-phy, tunnel_egress_iface_carrier=down}" and down[1] == "{}"
    types = underlay.vsctl("get", "Open_vSwitch", ".", "iface_types")
    text = ("# Captured from ovs-vswitchd 3.1.0 (netdev) by tests/test_tunnel_control.py::test_tunnel_status_as_ovs\n"
            "# br-phy 10.9.0.1/24 + fd00:9::1/64, 10.20.0.0/16 via 10.9.0.254, fd00:20::/48 via fd00:9::fe\n"
            + "".join(f"Interface.status {name} (remote_ip={remote}, br-phy up): {st}\n"
                      for (name, remote), st in zip(remotes.items(), up, strict=True))
            + "# br-phy down, the user route 10.20.0.0/16 br-phy 10.9.0.254 added before\n"
            + "".join(f"Interface.status {name} (remote_ip={remote}, br-phy down): {st}\n"
                      for (name, remote), st in zip(remotes.items(), down, strict=True))
            + f"Open_vSwitch.iface_types: {types}\n")
    if os.environ.get("TNL_FIXTURE_WRITE"):
        FIXTURE.write_text(text)
    assert text == FIXTURE.read_text()


# ---------------------------------------------------------------------- without a switch
def test_ovs_parsers() -> None:
    """The prefixes, marks and MACs OVS's commands accept, and what they make of them."""
    assert parse_ipv4_cidr("10.9.0.5/8") == (mapped("10.9.0.5"), 8)
    assert parse_ipv4_cidr("10.0.0.0/255.255.0.0") == (mapped("10.0.0.0"), 16)
    assert parse_ipv4_cidr("10.0.0.0/255.0.255.0") is None
    assert parse_ipv4_cidr("10.0.0.1") == (mapped("10.0.0.1"), 32)
    assert parse_ipv4_cidr("256.0.0.1") == (mapped("0.0.0.1"), 32)       # %hhu keeps the low bits
    assert parse_ipv4_cidr("10.0.0.0/33") is None and parse_ipv4_cidr("10.0.0.0/") is None
    assert parse_ipv6_cidr("fd00::/64") == (mapped("fd00::"), 64)
    assert parse_ipv6_cidr("fd00::/ffff::") == (mapped("fd00::"), 16)
    assert parse_ipv6_cidr("fd00::/129") is None
    assert scan_pkt_mark("pkt_mark=0x10") == 16 and scan_pkt_mark("pkt_mark=010") == 8
    assert scan_pkt_mark("pkt_mark=-1") == 0xFFFFFFFF and scan_pkt_mark("mark=1") is None
    assert parse_mac("AA:5:0:0:0:1") == bytes.fromhex("aa0500000001") and parse_mac("aa:bb") is None


def test_route_table_model_errors() -> None:
    """The route table's own API refuses what ovs/route/add refuses, with OVS's texts."""
    table = RouteTable(load=False)
    with pytest.raises(RouteError, match="Invalid parameters"):
        table.add("bad", "br-phy")
    with pytest.raises(RouteError, match="Error while inserting route."):
        table.add("10.0.0.0/8", "nosuchdev")
    with pytest.raises(RouteError, match="Not found"):
        table.delete("10.0.0.0/8")
    assert table.lookup("10.0.0.1") is None and table.show() == "Route Table:\n"


def test_neigh_cache_ages_as_ovs() -> None:
    """Entries live 900 s after their last set or lookup, show STALE once expired, go at run(); a changed MAC
    moves ``version``, the same MAC does not; aging 1..3600 cuts longer lifetimes."""
    cache = NeighCache(clock=lambda: 0.0)
    mac = bytes.fromhex("aa5500000002")
    cache.set("br-phy", "10.9.0.2", mac, now=0)
    v = cache.version
    cache.set("br-phy", "10.9.0.2", mac, now=10)
    assert cache.version == v
    assert cache.lookup("10.9.0.2", "br-phy", now=900) == mac           # used at 900: lives to 1800
    assert cache.lookup("10.9.0.2", "br-other", now=900) is None
    assert cache.lookup("10.9.0.2", "br-phy", now=1800) is None
    assert cache.show(now=1800).endswith("aa:55:00:00:00:02   br-phy STALE\n")
    assert cache.run(now=1800) and cache.version != v and "br-phy" not in cache.show(now=1800)
    cache.set("br-phy", "fd00::2", mac, now=0)
    cache.set_aging(5, now=0)
    assert cache.lookup("fd00::2", "br-phy", now=4.9) == mac and cache.lookup("fd00::2", "br-phy", now=10) is None
    with pytest.raises(ValueError):
        cache.set_aging(3601)
    assert cache.should_request("10.9.0.9", now=0) and not cache.should_request("10.9.0.9", now=0.5)
    assert cache.should_request("10.9.0.9", now=1.0) and cache.should_request("10.9.0.8", now=1.0)


def test_neighbour_frames_match_scapy() -> None:
    """The ARP request and Neighbour Solicitation OVS sends for an unknown next hop, field by field (scapy),
    and what snooping learns from a reply / advertisement (and does not)."""
    from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptDstLLAddr, ICMPv6NDOptSrcLLAddr, IPv6
    from scapy.layers.l2 import ARP, Ether

    mac = bytes.fromhex("aa5500000001")
    arp = Ether(arp_request("10.9.0.254", "10.9.0.1", mac))
    assert (arp.dst, arp.src, arp[ARP].op, arp[ARP].psrc, arp[ARP].pdst, arp[ARP].hwdst) == (
        "ff:ff:ff:ff:ff:ff", "aa:55:00:00:00:01", 1, "10.9.0.1", "10.9.0.254", "00:00:00:00:00:00")
    raw = nd_solicit("fd00:9::fe", "fd00:9::1", mac)
    ns = Ether(raw)
    assert (ns.dst, ns[IPv6].dst, ns[IPv6].hlim, ns[ICMPv6ND_NS].tgt, ns[ICMPv6NDOptSrcLLAddr].lladdr) == (
        "33:33:ff:00:00:fe", "ff02::1:ff00:fe", 255, "fd00:9::fe", "aa:55:00:00:00:01")
    ns[ICMPv6ND_NS].cksum = None
    assert bytes(Ether(bytes(ns))) == raw                                  # scapy's checksum is ours
    reply = bytes(Ether(dst="aa:55:00:00:00:01", src="aa:55:00:00:00:fe") / ARP(
        op=2, hwsrc="aa:55:00:00:00:fe", psrc="10.9.0.254", hwdst="aa:55:00:00:00:01", pdst="10.9.0.1"))
    assert neighbour_of(reply, ["10.9.0.1"]) == (mapped("10.9.0.254"), bytes.fromhex("aa55000000fe"))
    assert neighbour_of(reply, ["10.9.0.2"]) is None                       # not to us
    garp = bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc="aa:55:00:00:00:07", psrc="10.9.0.7",
                                                      pdst="10.9.0.7"))
    assert neighbour_of(garp, []) == (mapped("10.9.0.7"), bytes.fromhex("aa5500000007"))
    request = bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc="aa:55:00:00:00:07", psrc="10.9.0.7",
                                                         pdst="10.9.0.1"))
    assert neighbour_of(request, ["10.9.0.1"]) is None                     # requests teach nothing
    na = Ether() / IPv6(src="fd00:9::fe", dst="ff02::1:ff00:1") / ICMPv6ND_NA(tgt="fd00:9::fe") / \
        ICMPv6NDOptDstLLAddr(lladdr="aa:55:00:00:00:fe")
    assert neighbour_of(bytes(na), ["fd00:9::1"]) == (mapped("fd00:9::fe"), bytes.fromhex("aa55000000fe"))
    bare = Ether() / IPv6(src="fd00:9::fe", dst="fd00:9::1") / ICMPv6ND_NA(tgt="fd00:9::fe")
    assert neighbour_of(bytes(bare), ["fd00:9::1"]) is None                # no target address option


def test_tunnel_port_map_lookup_and_show() -> None:
    """The receive map: a frame to br-phy's MAC and address with the port's protocol and UDP port finds the
    tunnel datapath port; ports sharing one are counted; the last one going removes its rules."""
    from vswitch.tunnels.kernel import Device

    tmap = TunnelPortMap()
    mac = bytes.fromhex("aa5500000001")
    tmap.insert(3, 6081, dpif_port_name("geneve", 6081), "geneve")
    tmap.insert(3, 6081, dpif_port_name("geneve", 6081), "geneve")
    tmap.insert(4, 0, dpif_port_name("gre"), "gre")
    tmap.insert_ipdev(Device("br-phy", 5, mac, 0x41, [(mapped("10.9.0.1"), 0)]))
    tmap.insert_ipdev(Device("lo", 1, bytes(6), 0x49, [(mapped("127.0.0.1"), 0)]))
    assert tmap.lookup(mac, mapped("10.9.0.1"), 17, 6081) == 3
    assert tmap.lookup(mac, mapped("10.9.0.1"), 47, 0) == 4
    assert tmap.lookup(mac, mapped("10.9.0.1"), 17, 4789) is None
    assert tmap.lookup(bytes(6), mapped("127.0.0.1"), 17, 6081) is None     # loopback never receives
    assert tmap.show() == "Listening ports:\ngenev_sys_6081 (3) ref_cnt=2\ngre_sys (4) ref_cnt=1\n"
    tmap.delete(3, "geneve")
    assert tmap.lookup(mac, mapped("10.9.0.1"), 17, 6081) == 3
    tmap.delete(3, "geneve")
    assert tmap.lookup(mac, mapped("10.9.0.1"), 17, 6081) is None
    assert ports_show([("vxlan", 4789, 2), ("geneve", 6081, 3), ("geneve", 6081, 3)]) == (
        "Listening ports:\nvxlan_sys_4789 (2) ref_cnt=1\ngenev_sys_6081 (3) ref_cnt=2\n")


SNIFF = r"""
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
s.settimeout(0.2)
print("ready", flush=True)
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        frame = s.recv(65536)
    except socket.timeout:
        continue
    if frame[12:14] == b"\x08\x06" or (frame[12:14] == b"\x86\xdd" and frame[20] == 58 and frame[54] == 135):
        print(frame.hex(), flush=True)
"""


def test_neighbour_requests_are_ovs_bytes(underlay: Underlay) -> None:
    """What the real ovs-vswitchd sends out of br-phy when a tunnel's next hop is unknown — an ARP request
    for the IPv4 gateway, a Neighbour Solicitation for the IPv6 one — is byte for byte what ``arp_request`` /
    ``nd_solicit`` build from the route's source address and br-phy's MAC."""
    u = underlay
    u.ip("link", "add", "cv0", "type", "veth", "peer", "name", "cv1")
    u.ip("link", "set", "cv0", "up")
    u.ip("link", "set", "cv1", "up")
    u.vsctl("add-port", "br-phy", "cv0")
    sniffer = subprocess.Popen(["ip", "netns", "exec", u.ns, sys.executable, "-c", SNIFF, "cv1", "8"],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert sniffer.stdout.readline().strip() == "ready"
        inner = "ffffffffffff" "aa5500000009" "0800" + "45000014000100004000" "0000" "0a000001" "0a000002"
        for port in ("gnv0", "gnv6"):
            sh("ovs-ofctl", "packet-out", f"unix:{u.rundir}/br-int.mgmt",
               f"in_port=LOCAL packet={inner} actions=output:{u.vsctl('get', 'Interface', port, 'ofport')}")
        mac = bytes.fromhex(sh("ip", "netns", "exec", u.ns, "cat", "/sys/class/net/br-phy/address")
                            .stdout.strip().replace(":", ""))
        want = {arp_request("10.9.0.254", "10.9.0.1", mac), nd_solicit("fd00:9::fe", "fd00:9::1", mac)}
        frames: set[bytes] = set()
        deadline = time.monotonic() + 8
        while not want <= frames and time.monotonic() < deadline:
            ready, _, _ = select.select([sniffer.stdout], [], [], 0.5)
            if ready:
                frame = bytes.fromhex(sniffer.stdout.readline().strip())
                if frame[6:12] == mac:              # not the veth's own duplicate address detection
                    frames.add(frame)
    finally:
        sniffer.kill()
        sniffer.wait()
    assert frames == want


SEND = r"""
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
s.send(bytes.fromhex(sys.argv[2]))
"""


def test_snooping_learns_what_ovs_learns(underlay: Underlay) -> None:
    """Frames arriving on br-phy from the wire: ovs-vswitchd learns a neighbour from an ARP reply to br-phy's
    address, a gratuitous ARP and a Neighbour Advertisement with a target address option to br-phy's address
    (or its solicited-node group), and nothing from a request, a reply to another address or a bare NA;
    ``neighbour_of`` learns exactly the same from each frame."""
    from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
    from scapy.layers.l2 import ARP, Ether

    u = underlay
    u.ip("link", "add", "cv0", "type", "veth", "peer", "name", "cv1")
    u.ip("link", "set", "cv0", "up")
    u.ip("link", "set", "cv1", "up")
    u.vsctl("add-port", "br-phy", "cv0")
    br = sh("ip", "netns", "exec", u.ns, "cat", "/sys/class/net/br-phy/address").stdout.strip()
    frames = {
        "reply to br-phy": Ether(dst=br, src="aa:55:00:00:00:fe") / ARP(
            op=2, hwsrc="aa:55:00:00:00:fe", psrc="10.9.0.254", hwdst=br, pdst="10.9.0.1"),
        "reply to another": Ether(dst=br, src="aa:55:00:00:00:fd") / ARP(
            op=2, hwsrc="aa:55:00:00:00:fd", psrc="10.9.0.253", hwdst=br, pdst="10.9.0.99"),
        "gratuitous": Ether(dst="ff:ff:ff:ff:ff:ff", src="aa:55:00:00:00:07") / ARP(
            op=1, hwsrc="aa:55:00:00:00:07", psrc="10.9.0.7", pdst="10.9.0.7"),
        "request": Ether(dst="ff:ff:ff:ff:ff:ff", src="aa:55:00:00:00:08") / ARP(
            op=1, hwsrc="aa:55:00:00:00:08", psrc="10.9.0.8", pdst="10.9.0.1"),
        "na to br-phy": Ether(dst=br, src="aa:55:00:00:00:f1") / IPv6(src="fd00:9::fe", dst="fd00:9::1")
        / ICMPv6ND_NA(tgt="fd00:9::fe", S=1) / ICMPv6NDOptDstLLAddr(lladdr="aa:55:00:00:00:f1"),
        "na to the group": Ether(dst="33:33:ff:00:00:01", src="aa:55:00:00:00:f2")
        / IPv6(src="fd00:9::fd", dst="ff02::1:ff00:1") / ICMPv6ND_NA(tgt="fd00:9::fd")
        / ICMPv6NDOptDstLLAddr(lladdr="aa:55:00:00:00:f2"),
        "bare na": Ether(dst=br, src="aa:55:00:00:00:f3") / IPv6(src="fd00:9::fc", dst="fd00:9::1")
        / ICMPv6ND_NA(tgt="fd00:9::fc", S=1),
    }
    addrs = ["10.9.0.1", "fd00:9::1"]
    for name, frame in frames.items():
        raw = bytes(frame)
        sh("ip", "netns", "exec", u.ns, sys.executable, "-c", SEND, "cv1", raw.hex())
        deadline = time.monotonic() + 3
        learned = neighbour_of(raw, addrs)
        while True:
            lines = u.appctl("tnl/neigh/show", target=u.ovs_ctl)[1].splitlines()[2:]
            real = {(line.split()[0], line.split()[1]) for line in lines}
            if learned is None or time.monotonic() > deadline or real:
                break
            time.sleep(0.1)
        if learned is None:
            time.sleep(0.5)                                    # give OVS the time to learn what it should not
            real = {(line.split()[0], line.split()[1])
                    for line in u.appctl("tnl/neigh/show", target=u.ovs_ctl)[1].splitlines()[2:]}
        ours = set() if learned is None else {(format_mapped(learned[0]), format_mac(learned[1]))}
        assert real == ours, name
        u.appctl("tnl/neigh/flush", target=u.ovs_ctl)


def test_command_list_as_ovs(underlay: Underlay) -> None:
    """The tunnel commands are listed (``list-commands``) with OVS's names and usage strings (trailing blanks
    aside: the ``ovs`` package's list-commands strips them after an empty usage, ovs-vswitchd pads it)."""
    def tunnel_lines(target: str) -> list[str]:
        out = u.appctl("list-commands", target=target)[1]
        return [line.rstrip() for line in out.splitlines() if line.split()[:1] and line.split()[0].startswith(
            ("ovs/route/", "tnl/"))]

    u = underlay
    real = tunnel_lines(u.ovs_ctl)
    assert len(real) == 14 and tunnel_lines(u.ours_ctl) == real


def test_route_version_moves_on_changes_only() -> None:
    """``RouteTable.version`` moves when a lookup could answer differently (a route, a source address, a
    carrier), not when the namespace is read again unchanged."""
    from vswitch.tunnels.kernel import Device, KernelRoute, Snapshot

    brphy = Device("br-phy", 2, bytes.fromhex("aa5500000001"), 0x41, [(mapped("10.9.0.1"), mapped("255.255.255.0"))])
    snap = Snapshot({"br-phy": brphy}, [KernelRoute(mapped("10.9.0.0"), 120, "br-phy", 0, 0, False)])
    table = RouteTable(read=lambda: snap)
    v = table.version
    table.refresh()
    assert table.version == v
    assert table.lookup("10.9.0.7").src == ipaddress.ip_address("10.9.0.1")
    assert table.egress("10.9.0.7") == {"tunnel_egress_iface": "br-phy", "tunnel_egress_iface_carrier": "up"}
    snap = Snapshot({"br-phy": Device("br-phy", 2, brphy.mac, 0x1, brphy.addrs)}, snap.routes)   # carrier lost
    table.refresh()
    assert table.version == v + 1
    assert table.egress("10.9.0.7")["tunnel_egress_iface_carrier"] == "down"
    table.add("10.20.0.0/16", "br-phy", "10.9.0.254")
    assert table.version == v + 2 and table.lookup("10.20.1.1").next_hop(ipaddress.ip_address("10.20.1.1")) == \
        ipaddress.ip_address("10.9.0.254")
