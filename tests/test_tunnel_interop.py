"""Tunnel ports against a real ovs-vswitchd 3.1 (netdev datapath), issue 19: Geneve, VXLAN and GRE between two
switches in namespaces (tests/tunnel_hosts.py), each carrying a "VM" host's traffic over a veth underlay.

Every case runs with pyvswitch on one side and OVS on the other, both ways round. Until pyvswitch has tunnel ports
those cases fail: ``PENDING`` marks them strict xfail (the lead flips it). ``test_harness_geneve_ovs_ovs`` runs the
basic case OVS <-> OVS unmarked, so the harness itself is always checked; ``PV_TUNNEL_OVS_OVS=1`` adds the
OVS <-> OVS variant of every case (each must pass with a correct switch on both ends).
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.tunnel_hosts import TUN_PORT, Capture, TunnelNet, tunnel_net, tunnel_pair

pytestmark = pytest.mark.integration

PENDING = False           # True: the pyvswitch cases become strict xfail (a switch without tunnel ports)
KINDS = ("geneve", "vxlan", "gre")
UDP_PORT = {"geneve": 6081, "vxlan": 4789}
SRC_PORT_RANGE = (32768, 61000)     # OVS's tunnel UDP source ports: a hash of the inner flow scaled into this range
TLV_MAP = "{class=0xffff,type=0,len=4}->tun_metadata0"

_PAIRS = [("ovs", "pyvswitch"), ("pyvswitch", "ovs")]
if os.environ.get("PV_TUNNEL_OVS_OVS") == "1":
    _PAIRS.append(("ovs", "ovs"))


def _marks(*impls: str) -> list[pytest.MarkDecorator]:
    if PENDING and "pyvswitch" in impls:
        return [pytest.mark.xfail(strict=True, reason="tunnels pending")]
    return []


PAIRS = [pytest.param(a, b, marks=_marks(a, b), id=f"{a}-{b}") for a, b in _PAIRS]


def _ifaces(impls: list[str]) -> list[Any]:
    return [pytest.param(impl, marks=_marks(impl), id=impl) for impl in impls]


# ------------------------------------------------------------------ helpers
def both_ways(t: TunnelNet, what: Callable[[str, str], Any], want: Any) -> None:
    """``what(a, b)`` and ``what(b, a)`` both give ``want``."""
    for src, dst in (("a", "b"), ("b", "a")):
        got = what(src, dst)
        assert got == want, f"{src} -> {dst}: {got!r}, expected {want!r}\n{t.diagnose()}"


def outer(pkts: list[Any], kind: str, src: str, dst: str) -> list[Any]:
    """The frames among ``pkts`` arriving ("in") that are ``kind`` tunnel packets from ``src`` to ``dst``."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6

    out = []
    for p in pkts:
        if p.direction != "in":
            continue
        ip = p.payload     # the outer IP header (getlayer could find the inner one once Geneve is dissected)
        if not isinstance(ip, (IP, IPv6)) or ip.src != src or ip.dst != dst:
            continue
        if kind == "gre":
            if (ip.proto if ip.name == "IP" else ip.nh) == 47:
                out.append(p)
        elif p.haslayer(UDP) and p[UDP].dport == UDP_PORT[kind]:
            out.append(p)
    return out


def tunnel_header(p: Any, kind: str) -> bytes:
    """The bytes after the outer IP header (UDP + Geneve / VXLAN, or GRE)."""
    return bytes(p.payload.payload)


def geneve_options(p: Any) -> list[tuple[int, int, bytes]]:
    """The Geneve options of an outer frame: (class, type, data)."""
    hdr = tunnel_header(p, "geneve")[8:]
    opt_len = (hdr[0] & 0x3F) * 4
    opts, raw = [], hdr[8:8 + opt_len]
    while raw:
        cls, typ, ln = int.from_bytes(raw[0:2], "big"), raw[2], (raw[3] & 0x1F) * 4
        opts.append((cls, typ, raw[4:4 + ln]))
        raw = raw[4 + ln:]
    return opts


def vni_or_key(p: Any, kind: str) -> int | None:
    """The VNI (Geneve, VXLAN) or the GRE key of an outer frame (None: a GRE frame without a key)."""
    hdr = tunnel_header(p, kind)
    if kind == "geneve":
        return int.from_bytes(hdr[8 + 4:8 + 7], "big")
    if kind == "vxlan":
        return int.from_bytes(hdr[8 + 4:8 + 7], "big")
    flags = hdr[0]
    if not flags & 0x20:
        return None
    off = 4 + (4 if flags & 0x80 else 0)
    return int.from_bytes(hdr[off:off + 4], "big")


def sniffed(t: TunnelNet, traffic: Callable[[], Any]) -> dict[str, list[Any]]:
    """Run ``traffic`` while capturing on both sides' underlay veths: frames per side."""
    caps: dict[str, Capture] = {s: t.sniff_underlay(s) for s in ("a", "b")}
    try:
        traffic()
    finally:
        got = {s: c.stop() for s, c in caps.items()}
    return got


# ------------------------------------------------------------------ the cases
def _ping_and_tcp(kind: str, a: str, b: str) -> None:
    with tunnel_pair(kind, a, b) as t:
        both_ways(t, lambda s, d: t.reaches(s, d), True)
        both_ways(t, lambda s, d: t.ping(s, d, count=5), 5)           # once resolved, nothing is lost
        both_ways(t, t.tcp, "ok")


def test_harness_geneve_ovs_ovs() -> None:
    """The harness itself, with OVS on both ends: VM hosts ping each other and exchange 200 KB over TCP both ways
    through a Geneve tunnel."""
    _ping_and_tcp("geneve", "ovs", "ovs")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_ping_and_tcp(kind: str, a: str, b: str) -> None:
    """The VM hosts behind the two switches ping each other and exchange 200 KB over TCP, both ways."""
    _ping_and_tcp(kind, a, b)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_key_honoured(kind: str, a: str, b: str) -> None:
    """With the same key (VNI) on both ends the hosts reach each other and the key is on the wire; once one end
    has another key nothing reaches the other host, either way; the same key again, and they do."""
    key = 0x5A5A if kind != "gre" else 0x5A5A5A
    with tunnel_pair(kind, a, b, options={"key": str(key)}) as t:
        both_ways(t, lambda s, d: t.reaches(s, d), True)
        wire = sniffed(t, lambda: t.ping("a", "b", count=2))
        for side, (src, dst) in (("b", ("172.31.0.1", "172.31.0.2")), ("a", ("172.31.0.2", "172.31.0.1"))):
            frames = outer(wire[side], kind, src, dst)
            assert frames, f"no {kind} frame from {src} seen at {side}"
            assert {vni_or_key(p, kind) for p in frames} == {key}, [p.summary() for p in frames]
        t.vsctl("b", "set", "Interface", TUN_PORT, f"options:key={key + 1}")
        vm_b = Capture(t.sides["b"].vm_ns, "eth0")
        try:
            assert t.ping("a", "b", count=3, deadline=3) == 0, t.diagnose()
            assert t.ping("b", "a", count=3, deadline=3) == 0, t.diagnose()
        finally:
            arrived = [p for p in vm_b.stop() if p.direction == "in" and p.haslayer("ICMP")]
        assert arrived == [], [p.summary() for p in arrived]     # not even the requests
        t.vsctl("b", "set", "Interface", TUN_PORT, f"options:key={key}")
        both_ways(t, lambda s, d: t.reaches(s, d), True)


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_geneve_tun_metadata(a: str, b: str) -> None:
    """tun_metadata0 set by a flow on side a (``set_field:0x1234->tun_metadata0``) travels as a Geneve option and a
    flow on side b matching ``tun_metadata0=0x1234`` forwards the packet; another value matches nothing."""
    with tunnel_pair("geneve", a, b) as t:
        for side in ("a", "b"):
            t.ofctl(side, "add-tlv-map", "br-int", TLV_MAP)

        def sender(value: int) -> None:
            t.flows("a", f"in_port={{vm}},actions=set_field:{value:#x}->tun_metadata0,output:{{tun}}",
                    "in_port={tun},actions=output:{vm}")

        sender(0x1234)
        t.flows("b", "priority=100,in_port={tun},tun_metadata0=0x1234,actions=output:{vm}",
                "priority=10,in_port={vm},actions=output:{tun}")
        assert t.reaches("a", "b"), t.diagnose()
        wire = sniffed(t, lambda: t.ping("a", "b", count=2))
        frames = outer(wire["b"], "geneve", "172.31.0.1", "172.31.0.2")
        assert frames and all(geneve_options(p) == [(0xFFFF, 0, b"\x00\x00\x12\x34")] for p in frames), \
            [geneve_options(p) for p in frames]
        assert "tun_metadata0=0x1234" in t.ofctl("b", "dump-flows", "br-int")
        sender(0x4321)
        assert t.ping("a", "b", count=3, deadline=3) == 0, t.diagnose()
        sender(0x1234)
        assert t.reaches("a", "b"), t.diagnose()


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_geneve_ipv6_underlay(a: str, b: str) -> None:
    """Geneve over an IPv6 underlay (fd00:31::1 <-> ::2): ping and TCP both ways; the outer IPv6 header has the
    underlay addresses and the UDP checksum is set (IPv6 requires it)."""
    from scapy.layers.inet import UDP

    with tunnel_pair("geneve", a, b, ipv6=True) as t:
        both_ways(t, lambda s, d: t.reaches(s, d), True)
        both_ways(t, t.tcp, "ok")
        wire = sniffed(t, lambda: both_ways(t, lambda s, d: t.ping(s, d, count=2), 2))
        for side, (src, dst) in (("b", ("fd00:31::1", "fd00:31::2")), ("a", ("fd00:31::2", "fd00:31::1"))):
            frames = outer(wire[side], "geneve", src, dst)
            assert frames, f"no Geneve frame from {src} seen at {side}: {[p.summary() for p in wire[side]]}"
            for p in frames:
                assert p[UDP].chksum != 0 and p["IPv6"].hlim == 64, p.show(dump=True)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_outer_headers(kind: str, a: str, b: str) -> None:
    """The outer headers each end builds, as sniffed on the underlay: the underlay addresses, the UDP destination
    port (6081 / 4789) and a source port in 32768-61000, TTL 64, TOS 0, DF set and no UDP checksum by default; with
    ``csum=true ttl=33 tos=40`` a UDP checksum (GRE: the C bit and a checksum), TTL 33 and TOS 40."""
    from scapy.layers.inet import IP, UDP

    with tunnel_pair(kind, a, b) as t:
        both_ways(t, lambda s, d: t.reaches(s, d), True)
        for opts, ttl, tos, csum in (({}, 64, 0, False), ({"csum": "true", "ttl": "33", "tos": "40"}, 33, 40, True)):
            for side in ("a", "b"):
                if opts:
                    t.vsctl(side, "set", "Interface", TUN_PORT, *(f"options:{k}={v}" for k, v in opts.items()))
            wire = sniffed(t, lambda: both_ways(t, lambda s, d: t.ping(s, d, count=2), 2))
            for side, (src, dst) in (("b", ("172.31.0.1", "172.31.0.2")), ("a", ("172.31.0.2", "172.31.0.1"))):
                frames = outer(wire[side], kind, src, dst)
                assert frames, f"{opts}: no {kind} frame from {src} seen at {side}"
                for p in frames:
                    what = f"{opts} from {src}: {p.show(dump=True)}"
                    assert (p[IP].ttl, p[IP].tos, bool(p[IP].flags.DF)) == (ttl, tos, True), what
                    if kind == "gre":
                        assert bool(tunnel_header(p, kind)[0] & 0x80) == csum, what     # C bit
                        continue
                    assert p[UDP].dport == UDP_PORT[kind], what
                    assert SRC_PORT_RANGE[0] <= p[UDP].sport <= SRC_PORT_RANGE[1], what
                    assert (p[UDP].chksum != 0) == csum, what


@pytest.mark.parametrize("impl", _ifaces(["pyvswitch"] + (["ovs"] if ("ovs", "ovs") in _PAIRS else [])))
def test_flow_based_port_steers_to_two_remotes(impl: str) -> None:
    """Three switches on one underlay segment (a Linux bridge): a's Geneve port has ``remote_ip=flow`` and its flows
    steer each VM's traffic with ``set_field:172.31.0.N->tun_dst``; b and c have ordinary ports to a. a's host
    reaches both, each over the tunnel to its own remote (the outer destinations sniffed at b)."""
    flows = ["priority=10,in_port={tun},actions=output:{vm}"]
    for n in (2, 3):
        for match in (f"ip,nw_dst=10.9.0.{n}", f"arp,arp_tpa=10.9.0.{n}"):
            flows.append(f"priority=10,in_port={{vm}},{match},actions=set_field:172.31.0.{n}->tun_dst,output:{{tun}}")
    with tunnel_net("geneve", {"a": impl, "b": impl, "c": impl},
                    per_side={"b": {"remote_ip": "172.31.0.1"}, "c": {"remote_ip": "172.31.0.1"}}) as t:
        t.flows("a", *flows)
        cap = t.sniff_underlay("b")
        try:
            for dst in ("b", "c"):
                assert t.reaches("a", dst), f"a -> {dst}\n{t.diagnose()}"
                assert t.ping(dst, "a", count=3) == 3, f"{dst} -> a\n{t.diagnose()}"
                assert t.tcp("a", dst) == "ok"
        finally:
            wire = cap.stop()
        to_b = outer(wire, "geneve", "172.31.0.1", "172.31.0.2")
        to_c = outer(wire, "geneve", "172.31.0.1", "172.31.0.3")
        assert to_b and not to_c, (len(to_b), len(to_c))


# ------------------------------------------------------------------ malformed outer frames
MARK = b"PVTNL-MALFORMED!"


def _inner(n: int) -> bytes:
    """A broadcast inner frame br-int's NORMAL floods to host b when it is decapsulated, with ``MARK`` inside; each
    case has its own source MAC, so its own megaflow (OVS's megaflows do not match unmapped Geneve options: a frame
    with an unknown critical option would take the fate of a non-critical one cached before it, and vice versa)."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    return bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=f"02:00:00:00:0a:{n:02x}") / IP(src="10.9.0.77", dst="10.9.0.2") /
                 UDP(sport=7, dport=9) / MARK)


def _geneve(vni: int, ver: int = 0, opts: bytes = b"", crit: bool = False, proto: int = 0x6558) -> bytes:
    return struct.pack("!BBHI", ver << 6 | len(opts) // 4, 0x40 if crit else 0, proto, vni << 8) + opts


def _outer(t: TunnelNet, payload: bytes, dport: int | None = 6081, csum: int = 0, **ip: Any) -> bytes:
    """``payload`` in an outer Ethernet + IPv4 (+ UDP to ``dport``; None: GRE) frame from a's br-phy to b's."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    fields = {"src": "172.31.0.1", "dst": "172.31.0.2", "flags": "DF", **ip}
    pkt = Ether(dst=t.underlay_mac("b"), src=t.underlay_mac("a"))
    if dport is None:
        return bytes(pkt / IP(proto=47, **fields) / payload)
    return bytes(pkt / IP(**fields) / UDP(sport=40000, dport=dport, chksum=csum) / payload)


def malformed_cases(t: TunnelNet, kind: str, key: int) -> list[tuple[str, bytes, bool]]:
    """(what, frame, whether a correct switch delivers its inner frame) for a port with ``key``; the first is the
    well-formed twin of the others."""
    counter = iter(range(1, 256))

    def inner() -> bytes:
        """The next case's inner frame."""
        return _inner(next(counter))

    if kind == "geneve":
        ok = _geneve(key) + inner()
        unknown = struct.pack("!HBB", 0x0102, 0x01, 1) + b"\0\0\0\1"
        return [("well-formed", _outer(t, ok), True),
                ("an unknown option, not critical", _outer(t, _geneve(key, opts=unknown) + inner()), True),
                ("truncated header (4 of 8 bytes)", _outer(t, ok[:4]), False),
                ("options longer than the packet", _outer(t, struct.pack("!BBHI", 0x3F, 0, 0x6558, key << 8)), False),
                ("version 1", _outer(t, _geneve(key, ver=1) + inner()), False),
                ("an unknown critical option", _outer(t, _geneve(key, opts=struct.pack("!HBB", 0x0102, 0x80, 1)
                                                                 + b"\0\0\0\1", crit=True) + inner()), False),
                ("protocol 0x0800", _outer(t, _geneve(key, proto=0x0800) + inner()[14:]), False),
                ("another VNI", _outer(t, _geneve(key + 1) + inner()), False),
                ("a bad UDP checksum", _outer(t, _geneve(key) + inner(), csum=0x1234), False),
                ("a bad IPv4 header checksum", _outer(t, _geneve(key) + inner(), chksum=0x1234), False),
                ("an IPv4 fragment", _outer(t, _geneve(key) + inner(), flags="MF"), False),
                ("a truncated inner frame (6 bytes)", _outer(t, _geneve(key) + inner()[:6]), False)]
    if kind == "vxlan":
        def vxlan(vni: int, flags: int = 0x08) -> bytes:
            return struct.pack("!B3xI", flags, vni << 8)
        return [("well-formed", _outer(t, vxlan(key) + inner(), 4789), True),
                ("truncated header (4 of 8 bytes)", _outer(t, (vxlan(key) + inner())[:4], 4789), False),
                ("no I flag", _outer(t, vxlan(key, flags=0) + inner(), 4789), False),
                ("another VNI", _outer(t, vxlan(key + 1) + inner(), 4789), False)]

    def gre(flags: int, extra: bytes) -> bytes:
        return struct.pack("!HH", flags, 0x6558) + extra
    k = struct.pack("!I", key)
    return [("well-formed", _outer(t, gre(0x2000, k) + inner(), None), True),
            ("truncated header (2 bytes)", _outer(t, b"\x20\x00", None), False),
            ("version 1", _outer(t, gre(0x2001, k) + inner(), None), False),
            ("the routing bit", _outer(t, gre(0x6000, k) + inner(), None), False),
            ("another key", _outer(t, gre(0x2000, struct.pack("!I", key + 1)) + inner(), None), False),
            ("no key", _outer(t, gre(0x0000, b"") + inner(), None), False)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("impl", _ifaces(["pyvswitch"] + (["ovs"] if ("ovs", "ovs") in _PAIRS else [])))
def test_malformed_outer_frames(kind: str, impl: str) -> None:
    """Outer frames from a's address sent to side b (``impl``, its tunnel port with key 100) from a third port of
    the underlay: the well-formed one and one with an unknown non-critical Geneve option reach host b; each malformed
    one (truncated at each header, bad version or flags, unknown critical option, another VNI or key, bad checksums,
    a fragment) reaches nothing, the daemon lives, and the tunnel still carries pings afterwards."""
    with tunnel_pair(kind, "ovs", impl, options={"key": "100"}, hub=True) as t:
        assert t.reaches("a", "b"), t.diagnose()
        for what, frame, delivered in malformed_cases(t, kind, 100):
            vm_b = Capture(t.sides["b"].vm_ns, "eth0")
            try:
                assert t.send_underlay("b", [frame] * 3) == 3
                time.sleep(0.5)
            finally:
                got = sum(1 for p in vm_b.stop() if p.direction == "in" and MARK in bytes(p))
            assert got == (3 if delivered else 0), f"{kind} {what}: {got} of 3 reached host b\n{t.diagnose()}"
            assert t.switch("b").alive(), f"{kind} {what}: the switch died\n{t.diagnose()}"
        both_ways(t, lambda s, d: t.reaches(s, d), True)
