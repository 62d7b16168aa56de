"""Tunnels against bad input and offloaded senders (issue 19).

* Malformed outer frames sent with scapy to a running pyvswitch's tunnel endpoint (br-phy's address) are dropped
  before anything reaches the VM behind br-int, each counted under its reason (``ovs-appctl coverage/show`` at
  once, ``Interface`` statistics of the underlay port every ``stats-update-interval``); good frames of each kind
  still get through, before and after; a frame for the endpoint's address on another UDP port is a plain frame
  the kernel behind br-phy receives.
* A VM whose veth hands the switch TCP frames with partial checksums (tx checksum offload on, the default): the
  switch completes them before it encapsulates them (the system port's receive kernel does it from the
  ``virtio_net_hdr``), so a real OVS on the other end delivers valid segments.

```
 netns <p>i (injector)                     netns <p>s (pyvswitch)                          netns <p>v ("VM")
 <p>i 172.31.0.2 ──veth── <p>u ─ br-phy (internal: 172.31.0.1/24)
                                  br-int ─ geneve (key 5), vxlan, gre (remote 172.31.0.2) ─ <p>h ──veth── eth0
```
"""

from __future__ import annotations

import contextlib
import re
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from scapy.all import GRE, IP, TCP, UDP, Ether, IPv6, Raw
from scapy.contrib.geneve import GENEVE

from backends import system as S
from backends.pool import META_HEAD, META_LEN, PacketPool
from dpif import tunnel as T
from tests.netutil import SEND_SCRIPT, unique
from tests.tunnel_hosts import Capture, PyvSwitch, in_ns, sh, tunnel_pair, tx_checksum_off

ENDPOINT, PEER = "172.31.0.1", "172.31.0.2"
VM_IP, FAR_IP = "10.9.0.1", "10.9.0.99"
OFPORT = {"vm": 1, "geneve": 2, "vxlan": 3, "gre": 4}
TUNNEL_DROPS = ("flow_tunnel_truncated", "flow_tunnel_bad_header", "flow_tunnel_unknown_critical_option",
                "flow_tunnel_no_port")


# ------------------------------------------------------------------ the endpoint under attack
@dataclass
class Endpoint:
    """A pyvswitch with a tunnel endpoint, an injector namespace on its underlay and a VM behind br-int."""

    prefix: str
    sw: PyvSwitch | None = None
    vm_mac: str = ""
    phy_mac: str = ""
    inj_mac: str = ""
    undo: list[Any] = field(default_factory=list)

    @property
    def sw_ns(self) -> str:
        return f"{self.prefix}s"

    @property
    def inj_ns(self) -> str:
        return f"{self.prefix}i"

    @property
    def vm_ns(self) -> str:
        return f"{self.prefix}v"

    @property
    def underlay(self) -> str:
        return f"{self.prefix}u"

    def vsctl(self, *args: str) -> str:
        assert self.sw is not None
        return self.sw.tool("ovs-vsctl", "--timeout=20", *args).stdout.strip()

    def appctl(self, *args: str) -> str:
        assert self.sw is not None
        return self.sw.tool("ovs-appctl", "--timeout=20", *args).stdout

    def drops(self) -> dict[str, int]:
        """The tunnel drop counters, now (``coverage/show`` lists the named drops of every bridge)."""
        out = dict.fromkeys(TUNNEL_DROPS, 0)
        for line in self.appctl("coverage/show").splitlines():
            m = re.match(r"(\S+)\s+total: (\d+)", line)
            if m and m.group(1) in out:
                out[m.group(1)] = int(m.group(2))
        return out

    def inject(self, frames: list[bytes]) -> None:
        """Send raw ``frames`` from the injector's veth."""
        got = in_ns(self.inj_ns, sys.executable, "-c", SEND_SCRIPT, self.inj_ns, _json(frames))
        assert got.stdout.strip() == str(len(frames)), got.stderr

    def outer(self, payload: Any, proto: str = "udp", dport: int = 6081, **ip: Any) -> Ether:
        """An outer frame from the injector to the endpoint: ``payload`` in UDP to ``dport`` or in GRE."""
        l3 = IP(src=PEER, dst=ENDPOINT, flags="DF", **ip)
        l4 = UDP(sport=40000, dport=dport, chksum=0) if proto == "udp" else GRE(proto=0x6558)
        return Ether(src=self.inj_mac, dst=self.phy_mac) / l3 / l4 / payload

    def inner(self, marker: str) -> Ether:
        """An inner frame to the VM, tagged with ``marker``."""
        return Ether(src="0a:00:00:00:00:99", dst=self.vm_mac) / IP(src=FAR_IP, dst=VM_IP) / \
            UDP(sport=5555, dport=9999) / Raw(marker.encode().ljust(32, b"."))


def _json(frames: list[bytes]) -> str:
    import json
    return json.dumps([f.hex() for f in frames])


def _mac(ns: str, dev: str) -> str:
    return in_ns(ns, "cat", f"/sys/class/net/{dev}/address").stdout.strip()


@contextlib.contextmanager
def endpoint() -> Iterator[Endpoint]:
    """Build the topology of the module docstring; everything is removed afterwards, even on failure."""
    ep = Endpoint(unique("rr"))
    tmp = tempfile.TemporaryDirectory(prefix=f"{ep.prefix}-")
    try:
        for ns in (ep.sw_ns, ep.inj_ns, ep.vm_ns):
            sh(["ip", "netns", "add", ns])
            ep.undo.append(lambda ns=ns: sh(["ip", "netns", "del", ns], check=False))
            sh(["ip", "-n", ns, "link", "set", "lo", "up"])
            in_ns(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        for a, ns_a, b, ns_b in ((ep.underlay, ep.sw_ns, ep.inj_ns, ep.inj_ns),
                                 (f"{ep.prefix}h", ep.sw_ns, "eth0", ep.vm_ns)):
            in_ns(ns_a, "ip", "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns_b)
            for ifname, ns in ((a, ns_a), (b, ns_b)):
                tx_checksum_off(ns, ifname)
                sh(["ip", "-n", ns, "link", "set", ifname, "up"])
        # the switch namespace's own stack must not take frames on the underlay veth (only br-phy's address)
        sh(["ip", "-n", ep.sw_ns, "link", "set", ep.underlay, "arp", "off"])
        in_ns(ep.sw_ns, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1", f"net.ipv4.conf.{ep.underlay}.rp_filter=1")
        sh(["ip", "-n", ep.inj_ns, "addr", "add", f"{PEER}/24", "dev", ep.inj_ns])
        sh(["ip", "-n", ep.vm_ns, "addr", "add", f"{VM_IP}/24", "dev", "eth0"])
        ep.sw = PyvSwitch(ep.sw_ns, tmp.name)
        ep.undo.append(ep.sw.stop)
        ep.sw.start()
        ep.vsctl("add-br", "br-phy", "--", "set", "Bridge", "br-phy", "datapath_type=netdev",
                 "--", "add-port", "br-phy", ep.underlay)
        sh(["ip", "-n", ep.sw_ns, "addr", "add", f"{ENDPOINT}/24", "dev", "br-phy"])
        sh(["ip", "-n", ep.sw_ns, "link", "set", "br-phy", "up"])
        ports = ["--", "add-port", "br-int", f"{ep.prefix}h", "--", "set", "Interface", f"{ep.prefix}h",
                 f"ofport_request={OFPORT['vm']}"]
        for kind, extra in (("geneve", ["options:key=5"]), ("vxlan", []), ("gre", [])):
            ports += ["--", "add-port", "br-int", kind, "--", "set", "Interface", kind, f"type={kind}",
                      f"options:remote_ip={PEER}", f"ofport_request={OFPORT[kind]}", *extra]
        ep.vsctl("add-br", "br-int", "--", "set", "Bridge", "br-int", "datapath_type=netdev", *ports)
        for kind in ("geneve", "vxlan", "gre"):
            assert ep.vsctl("get", "Interface", kind, "ofport") == str(OFPORT[kind]), \
                ep.vsctl("get", "Interface", kind, "error")
        flows = "".join(f"in_port={OFPORT[k]},actions=output:{OFPORT['vm']}\n" for k in ("geneve", "vxlan", "gre"))
        ep.sw.tool("ovs-ofctl", "add-flows", "br-int", "-", stdin=flows)
        ep.vm_mac = _mac(ep.vm_ns, "eth0")
        ep.phy_mac = _mac(ep.sw_ns, "br-phy")
        ep.inj_mac = _mac(ep.inj_ns, ep.inj_ns)
        yield ep
    finally:
        while ep.undo:
            with contextlib.suppress(Exception):
                ep.undo.pop()()
        with contextlib.suppress(Exception):
            tmp.cleanup()


def geneve(vni: int = 5, ver: int = 0, options: bytes = b"", optlen: int | None = None) -> bytes:
    """A Geneve header (``optlen`` in 4-byte words overrides the options' own length)."""
    words = len(options) // 4 if optlen is None else optlen
    return bytes([ver << 6 | words, 0x40 if options and options[2] & 0x80 else 0]) + b"\x65\x58" + \
        (vni << 8).to_bytes(4, "big") + options


def cut(frame: Ether, keep: int) -> bytes:
    """``frame``'s first ``keep`` bytes with the IPv4 total length (and the UDP length, if any is left) made to
    match, so that only the header named is cut short."""
    b = bytearray(bytes(frame)[:keep])
    if keep >= 34:
        b[16:18] = (keep - 14).to_bytes(2, "big")
        b[24:26] = b"\0\0"
        c = _csum(bytes(b[14:34]))
        b[24:26] = c.to_bytes(2, "big")
    if keep >= 42 and b[23] == 17:
        b[38:40] = (keep - 34).to_bytes(2, "big")
    return bytes(b)


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _ip_in_hdr_errors(ns: str) -> int:
    """The kernel's IPv4 InHdrErrors count in ``ns``."""
    names, values = [ln.split()[1:] for ln in in_ns(ns, "cat", "/proc/net/snmp").stdout.splitlines()
                     if ln.startswith("Ip:")][:2]
    return int(values[names.index("InHdrErrors")])


def _seen(pkts: list[Any], marker: str) -> bool:
    return any(p.direction == "in" and marker.encode() in bytes(p) for p in pkts)


def _deliver(ep: Endpoint, frame: bytes, marker: str, wait: float = 20) -> None:
    """Send ``frame`` until the VM receives the inner frame tagged ``marker`` (the switch may still be learning
    br-phy's address); fail after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        cap = Capture(ep.vm_ns, "eth0")
        try:
            ep.inject([frame])
            time.sleep(0.3)
        finally:
            pkts = cap.stop()
        if _seen(pkts, marker):
            return
        assert time.monotonic() < deadline, f"{marker}: the VM never received it\n{ep.sw.log() if ep.sw else ''}"


@pytest.mark.integration
def test_malformed_outer_frames_dropped_and_counted() -> None:
    """Each malformed frame to the endpoint is dropped (the VM sees nothing of it) and counted once under its
    reason; good Geneve, VXLAN and GRE frames reach the VM before and after, the daemon lives, and the counts
    show in the underlay port's Interface statistics. A frame cut inside its outer IPv4 header is no tunnel's:
    br-phy's kernel gets it (and counts a header error); one to the endpoint's address on another UDP port is an
    ordinary frame too: the kernel behind br-phy receives the datagram."""
    with endpoint() as ep:
        _deliver(ep, bytes(ep.outer(geneve() / ep.inner("good-geneve-1"))), "good-geneve-1")
        _deliver(ep, bytes(ep.outer(b"\x08\0\0\0\0\0\0\0" / ep.inner("good-vxlan"), dport=4789)), "good-vxlan")
        _deliver(ep, bytes(ep.outer(ep.inner("good-gre"), proto="gre")), "good-gre")
        # an unknown option without the critical bit is skipped
        _deliver(ep, bytes(ep.outer(geneve(options=T.geneve_option(0x0102, 0x01, bytes(4)))
                                    / ep.inner("good-noncritical"))), "good-noncritical")

        def g(marker: str, **kw: Any) -> Ether:
            return ep.outer(geneve(**kw) / ep.inner(marker))

        ip_long = bytearray(bytes(g("trunc-ip")))
        ip_long[16:18] = (len(ip_long) - 14 + 100).to_bytes(2, "big")       # IPv4 total length past the frame
        ip_long[24:26] = b"\0\0"
        ip_long[24:26] = _csum(bytes(ip_long[14:34])).to_bytes(2, "big")
        bad_ipsum = bytearray(bytes(g("bad-ip-csum")))
        bad_ipsum[24] ^= 0x5A
        vxlan_no_i = ep.outer(b"\0\0\0\0\0\0\0\0" / ep.inner("vxlan-no-i"), dport=4789)
        gre_v1 = bytearray(bytes(ep.outer(ep.inner("gre-v1"), proto="gre")))
        gre_v1[35] |= 1                                                        # GRE version 1
        critical = T.geneve_option(0x0102, 0x80, bytes(4))
        cases: list[tuple[str, bytes, str]] = [
            ("IPv4 total length past the frame", bytes(ip_long), "flow_tunnel_truncated"),
            ("cut in UDP", cut(g("trunc-udp"), 34 + 6), "flow_tunnel_truncated"),
            ("cut in the Geneve header", cut(g("trunc-geneve"), 42 + 5), "flow_tunnel_truncated"),
            ("cut in the Geneve options", cut(g("trunc-opts", options=bytes([1, 2, 0, 2]) + bytes(8)), 42 + 8 + 6),
             "flow_tunnel_truncated"),
            ("Geneve version 1", bytes(g("geneve-v1", ver=1)), "flow_tunnel_bad_header"),
            ("VXLAN without the I flag", bytes(vxlan_no_i), "flow_tunnel_bad_header"),
            ("GRE version 1", bytes(gre_v1), "flow_tunnel_bad_header"),
            ("bad IPv4 header checksum", bytes(bad_ipsum), "flow_tunnel_bad_header"),
            ("unknown critical Geneve option", bytes(g("critical", options=critical)),
             "flow_tunnel_unknown_critical_option"),
            ("wrong VNI", bytes(g("wrong-vni", vni=6)), "flow_tunnel_no_port"),
        ]
        base = ep.drops()
        want = dict(base)
        cap = Capture(ep.vm_ns, "eth0")
        try:
            for what, frame, reason in cases:
                before = ep.drops()
                ep.inject([frame])
                deadline = time.monotonic() + 5
                while (now := ep.drops()) == before and time.monotonic() < deadline:
                    time.sleep(0.05)
                want[reason] += 1
                assert now == {k: before[k] + (k == reason) for k in TUNNEL_DROPS}, f"{what}: {before} -> {now}"
            # cut inside the outer IPv4 header: nothing says it is a tunnel's, it is an ordinary (broken) frame that
            # br-phy hands its kernel, which drops it as a header error (as behind OVS)
            hdr_errors = _ip_in_hdr_errors(ep.sw_ns)
            ep.inject([bytes(g("trunc-in-ip"))[:14 + 19]])
            deadline = time.monotonic() + 5
            while _ip_in_hdr_errors(ep.sw_ns) == hdr_errors and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _ip_in_hdr_errors(ep.sw_ns) == hdr_errors + 1
        finally:
            pkts = cap.stop()
        markers = ["trunc-ip", "bad-ip-csum", "vxlan-no-i", "gre-v1", "trunc-udp", "trunc-geneve", "trunc-opts",
                   "geneve-v1", "critical", "wrong-vni", "trunc-in-ip"]
        assert not [m for m in markers if _seen(pkts, m)], "the VM received a malformed frame's inner frame"
        assert not [p for p in pkts if p.direction == "in" and p.haslayer(UDP) and p[UDP].dport == 9999]
        assert ep.drops() == want
        assert ep.sw is not None and ep.sw.alive()
        _deliver(ep, bytes(ep.outer(geneve() / ep.inner("good-geneve-2"))), "good-geneve-2", wait=5)

        # the endpoint's address, another UDP port: the kernel behind br-phy gets the datagram
        rx = subprocess.Popen(["ip", "netns", "exec", ep.sw_ns, sys.executable, "-c", UDP_RECV, ENDPOINT, "7777"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert rx.stdout.readline().strip() == "ready"
            ep.inject([bytes(Ether(src=ep.inj_mac, dst=ep.phy_mac) / IP(src=PEER, dst=ENDPOINT)
                             / UDP(sport=40000, dport=7777) / Raw(b"not-a-tunnel"))])
            out, err = rx.communicate(timeout=15)
        finally:
            if rx.poll() is None:
                rx.kill()
                rx.wait(5)
        assert out.strip() == "not-a-tunnel", err
        assert ep.drops() == want

        # the same counts in the underlay port's statistics (written every stats-update-interval)
        ep.vsctl("set", "Open_vSwitch", ".", "other_config:stats-update-interval=5000")
        deadline = time.monotonic() + 20
        while True:
            stats = ep.vsctl("get", "Interface", ep.underlay, "statistics")
            got = {k: int(v) for k, v in re.findall(r"(flow_tunnel_\w+)=(\d+)", stats)}
            if all(got.get(k) == want[k] for k in TUNNEL_DROPS):
                break
            assert time.monotonic() < deadline, f"statistics {stats}, want {want}"
            time.sleep(0.5)
        assert ep.sw.alive()


UDP_RECV = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(10)
print("ready", flush=True)
print(s.recv(2048).decode(), flush=True)
"""


# ------------------------------------------------------------------ partial checksums
TX_CSUM = r"""
import array, fcntl, socket, struct, sys
value = array.array("B", struct.pack("II", 0x17, int(sys.argv[2])))    # ETHTOOL_STXCSUM
addr, _ = value.buffer_info()
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    fcntl.ioctl(s, 0x8946, struct.pack("16sP", sys.argv[1].encode(), addr))
"""


def _l4_csum_ok(p: Ether) -> bool:
    """The TCP / UDP checksum of ``p`` (IPv4 or IPv6) is the one scapy computes."""
    l4 = p[TCP] if p.haslayer(TCP) else p[UDP]
    c = l4.chksum
    q = p.copy()
    del q[TCP if p.haslayer(TCP) else UDP].chksum
    q = Ether(bytes(q))
    return (q[TCP] if p.haslayer(TCP) else q[UDP]).chksum == c


@pytest.mark.integration
def test_partial_checksums_completed_before_encapsulation() -> None:
    """Side a's VM has tx checksum offload on, so its veth hands pyvswitch TCP segments whose checksum holds
    only the pseudo-header sum (seen on the switch's side of the veth); through Geneve to a real OVS, the
    exchange works and every segment b's VM receives carries a valid TCP checksum."""
    with tunnel_pair("geneve", "pyvswitch", "ovs", prefix="rc") as t:
        a, b = t.sides["a"], t.sides["b"]
        in_ns(a.vm_ns, sys.executable, "-c", TX_CSUM, "eth0", "1")
        assert t.reaches("a", "b"), t.diagnose()
        sent = Capture(a.sw_ns, a.vm_port)
        got = Capture(b.vm_ns, "eth0")
        try:
            assert t.tcp("a", "b", size=100_000) == "ok", t.diagnose()
        finally:
            from_vm, at_b = sent.stop(), got.stop()
        partial = [p for p in from_vm if p.direction == "in" and p.haslayer(TCP) and p[IP].src == a.vm_ip]
        assert partial and sum(not _l4_csum_ok(p) for p in partial) > len(partial) // 2, \
            "the VM's veth did not hand over partial checksums (offload off?)"
        segs = [p for p in at_b if p.direction == "in" and p.haslayer(TCP) and p[IP].src == a.vm_ip]
        assert segs and all(_l4_csum_ok(p) for p in segs), [p.summary() for p in segs if not _l4_csum_ok(p)]


def _partial(frame: Ether) -> tuple[bytes, int, int]:
    """``frame`` as a sender with checksum offload hands it over (the L4 checksum field holds the folded
    pseudo-header sum), with ``csum_start`` and ``csum_offset``."""
    raw = bytearray(bytes(frame))
    v6 = frame.haslayer(IPv6)
    l4 = 54 if v6 else 34
    tcp = frame.haslayer(TCP)
    off = 16 if tcp else 6
    ln = len(raw) - l4
    proto = 6 if tcp else 17
    pseudo = (bytes(raw[22:54]) if v6 else bytes(raw[26:34])) + struct.pack("!IxxxB" if v6 else "!xBH", *(
        (ln, proto) if v6 else (proto, ln)))
    raw[l4 + off : l4 + off + 2] = (~_csum(pseudo) & 0xFFFF).to_bytes(2, "big")
    return bytes(raw), l4, off


def test_push_header_of_a_received_partial_checksum_frame() -> None:
    """TCP / IPv4 and UDP / IPv6 frames handed over with partial checksums (NEEDS_CSUM in the virtio_net_hdr,
    TP_STATUS_CSUMNOTREADY in tp_status) go through the system port's receive kernel and a Geneve push: the
    inner checksum is the one scapy computes. The same frames pushed without that receive keep a wrong one."""
    frames = [
        Ether(src="0a:00:00:00:00:01", dst="0a:00:00:00:00:02") / IP(src="10.0.0.1", dst="10.0.0.2")
        / TCP(sport=40000, dport=80, flags="PA") / Raw(bytes(range(200))),
        Ether(src="0a:00:00:00:00:01", dst="0a:00:00:00:00:02") / IPv6(src="fd00:1::1", dst="fd00:1::2")
        / UDP(sport=40000, dport=53) / Raw(bytes(range(77))),
    ]
    from tests.test_backends import _v3_block

    hdr = T.TunnelHeader(T.TNL_GENEVE, 0x020000000002, 0x020000000001, False, int.from_bytes(b"\xac\x1f\0\1", "big"),
                         int.from_bytes(b"\xac\x1f\0\2", "big"), key=5)
    words = np.array(T.push_words(hdr), dtype=np.int64)
    ring_frames = []
    for f in frames:
        raw, l4, off = _partial(f)
        vnet = struct.pack("<BBHHHH", 1, 0, 0, 0, l4, off)             # VIRTIO_NET_HDR_F_NEEDS_CSUM
        ring_frames.append((raw, 0x8, 0, vnet, len(raw)))             # TP_STATUS_CSUMNOTREADY
    ring = _v3_block(ring_frames)
    pool = PacketPool(8, 2048, 128)
    st = np.zeros(S.STATE_WORDS, dtype=np.int64)
    st[S.S_RX_BSIZE], st[S.S_RX_BNR], st[S.S_HEADROOM], st[S.S_RX_MAX] = len(ring), 1, 128, 8
    burst = np.zeros(8, dtype=np.int32)
    n = S.system_rx(ring, st, pool.data, pool.meta, pool.free_stack, pool.free_top, burst)
    assert n == 2

    def pushed(s: int) -> Ether:
        head, ln = int(pool.meta[s, META_HEAD]), int(pool.meta[s, META_LEN])
        nh = T.push_header(pool.data, s, head, ln, words, 0)
        assert nh >= 0
        return Ether(bytes(pool.data[s, nh : nh + ln + int(words[T.A_SIZE])]))

    for i, f in enumerate(frames):
        out = pushed(int(burst[i]))
        inner = Ether(bytes(out[GENEVE].payload))
        assert inner.haslayer(TCP if i == 0 else UDP) and _l4_csum_ok(inner), inner.show(dump=True)
        assert bytes(inner) == bytes(f)
    # negative twin: the partial frames pushed as they are (no receive kernel) keep the pseudo-header sum
    for f in frames:
        raw, _, _ = _partial(f)
        pool.put(7, raw)
        inner = Ether(bytes(pushed(7)[GENEVE].payload))
        assert not _l4_csum_ok(inner)
