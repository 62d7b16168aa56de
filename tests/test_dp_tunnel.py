"""Tunnel kernels: TNL_PUSH in the executor (dpif.tunnel), tunnel_handover, and termination (dpif.tunnel_pop).

Pushed headers are parsed with scapy (Geneve, VXLAN, GRE over IPv4 and IPv6: lengths, checksums, the UDP
source port); frames built with scapy are decapsulated; malformed ones are counted by reason while the good
frames of the burst go on; push then pop gives the frame back; the plain-Python model agrees with the
executor on random programs that include TNL_PUSH.
"""

from __future__ import annotations

import ipaddress
import os
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import ARP, GRE, IP, TCP, UDP, VXLAN, Ether, ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6, Raw
from scapy.contrib.geneve import GENEVE

from backends.pool import META_HEAD, META_IN_PORT, META_LEN, TUN_WORDS, PacketPool
from dpif import actions as A
from dpif import actions_ref as R
from dpif import key as K
from dpif import tunnel as T
from dpif import tunnel_pop as P
from dpif.meters import NO_METERS
from tests.test_dp_actions import actions, frames, run_kernel

SLOT = 512
N_PORTS = 4
MAC_LOCAL, MAC_PEER = 0x020000000001, 0x020000000002
V4_LOCAL, V4_PEER = "192.168.50.1", "192.168.50.2"
V6_LOCAL, V6_PEER = "fd00:50::1", "fd00:50::2"
MACS = ("02:00:00:00:00:01", "02:00:00:00:00:02")


def GN(**kw: object) -> GENEVE:  # noqa: N802 - scapy's style
    """A Geneve header carrying Ethernet (scapy leaves the protocol 0 before a Raw payload)."""
    return GENEVE(proto=0x6558, **kw)


def _v(ip: str) -> int:
    return int(ipaddress.ip_address(ip))


def header(kind: int, v6: bool = False, **kw: object) -> T.TunnelHeader:
    """A header from the peer's view: local -> peer."""
    src, dst = (V6_LOCAL, V6_PEER) if v6 else (V4_LOCAL, V4_PEER)
    kw.setdefault("key", 0x1C7)
    return T.TunnelHeader(kind, MAC_PEER, MAC_LOCAL, v6, _v(src), _v(dst), **kw)  # type: ignore[arg-type]


def inner(sport: int = 1234, tos: int = 0, v6: bool = False, size: int = 64) -> bytes:
    """A TCP frame of ``size`` bytes between two VMs."""
    l3 = IPv6(src="fd00:1::1", dst="fd00:1::2", tc=tos) if v6 else IP(src="10.0.0.1", dst="10.0.0.2", tos=tos)
    f = Ether(src="0a:00:00:00:00:01", dst="0a:00:00:00:00:02") / l3 / TCP(sport=sport, dport=80)
    return bytes(f / Raw(bytes(max(0, size - len(f)))))


def run(items: list[tuple[int, bytes, list[int]]], free: int = 0) -> tuple[dict[int, list[tuple[int, bytes]]],
                                                                           list[int], int]:
    """``execute_burst`` over ``(head, frame, program)``: (port -> [(head, frame)], drops, fresh slots)."""
    n = len(items)
    data = np.zeros((n + free, SLOT), dtype=np.uint8)
    meta = np.zeros((n + free, 4), dtype=np.int32)
    progs_l: list[int] = []
    index = np.zeros((n, 2), dtype=np.int64)
    for i, (head, f, prog) in enumerate(items):
        data[i, head : head + len(f)] = np.frombuffer(f, dtype=np.uint8)
        meta[i, META_LEN], meta[i, META_HEAD] = len(f), head
        index[i] = (len(progs_l), len(prog))
        progs_l += prog
    out = np.zeros((2, N_PORTS * 64), dtype=np.int32)
    out_start = np.zeros((2, N_PORTS + 1), dtype=np.int32)
    drops = np.zeros((N_PORTS + 1, A.N_DROP_REASONS), dtype=np.int64)
    extra = np.zeros(max(free, 1), dtype=np.int32)
    k = A.execute_burst(data, meta, np.arange(n, dtype=np.int32), n, index, np.array(progs_l + [0], dtype=np.int64),
                        out, out_start, drops, np.arange(n + free - 1, n - 1, -1, dtype=np.int32),
                        np.array([free], dtype=np.int64), extra, np.zeros((A.SIDE_ROWS, 64), dtype=np.int32),
                        np.zeros(2, dtype=np.int64), NO_METERS, 0)
    q: dict[int, list[tuple[int, bytes]]] = {}
    for p in range(N_PORTS):
        for j in range(out_start[1, p]):
            s = out[0, out_start[0, p] + j]
            h, ln = int(meta[s, META_HEAD]), int(meta[s, META_LEN])
            q.setdefault(p, []).append((h, bytes(data[s, h : h + ln])))
    return q, drops[0].tolist(), k


def push(h: T.TunnelHeader, f: bytes, head: int = 128) -> bytes:
    q, drops, _ = run([(head, f, T.tnl_push(h, 5, 1) + A.output(1))])
    assert sum(drops) == 0, drops
    return q[1][0][1]


def _udp_csum_ok(p: Ether) -> bool:
    c = p[UDP].chksum
    q = p.copy()
    del q[UDP].chksum
    return Ether(bytes(q))[UDP].chksum == c


CASES = [(kind, v6, csum) for kind in (T.TNL_GENEVE, T.TNL_VXLAN, T.TNL_GRE) for v6 in (False, True)
         for csum in (False, True)]


@pytest.mark.parametrize(("kind", "v6", "csum"), CASES)
def test_pushed_headers_parse(kind: int, v6: bool, csum: bool) -> None:
    opts = T.geneve_option(0x102, 0x80, b"\x00\x01\x02\x03") if kind == T.TNL_GENEVE else b""
    h = header(kind, v6, csum=csum, options=opts, ttl=33, df=not v6)
    f = inner()
    g = push(h, f)
    assert len(g) == len(f) + len(T.header_bytes(h))
    p = Ether(g)
    assert (p.src, p.dst) == MACS
    if v6:
        assert p[IPv6].plen == len(g) - 54 and p[IPv6].hlim == 33
        assert (p[IPv6].src, p[IPv6].dst) == (V6_LOCAL, V6_PEER)
    else:
        assert p[IP].len == len(g) - 14 and p[IP].ttl == 33 and p[IP].flags == "DF" and p[IP].id == 0
        assert R.csum(g[14:34]) == 0
        assert (p[IP].src, p[IP].dst) == (V4_LOCAL, V4_PEER)
    if kind == T.TNL_GRE:
        assert p[GRE].proto == 0x6558 and p[GRE].key == 0x1C7 and p[GRE].key_present
        assert bool(p[GRE].chksum_present) == csum
        if csum:
            o = 54 if v6 else 34
            assert R.csum(g[o:]) == 0
        assert bytes(p[GRE].payload) == f
        return
    u = p[UDP]
    assert u.len == len(g) - (54 if v6 else 34)
    assert T.UDP_SRC_MIN <= u.sport < T.UDP_SRC_MAX
    assert (u.chksum != 0 and _udp_csum_ok(p)) if csum or v6 else u.chksum == 0      # OVS: always over IPv6
    if kind == T.TNL_VXLAN:
        assert u.dport == 4789 and p[VXLAN].vni == 0x1C7 and p[VXLAN].flags == 0x08
        assert bytes(p[VXLAN].payload) == f
    else:
        gn = GENEVE(bytes(u.payload))
        assert u.dport == 6081 and gn.vni == 0x1C7 and gn.optionlen == 2 and gn.critical == 1 and gn.version == 0
        assert bytes(gn.payload) == f


def test_source_port_hashes_the_inner_flow() -> None:
    h = header(T.TNL_VXLAN)
    ports = [Ether(push(h, inner(sport)))[UDP].sport for sport in range(1000, 1064)]
    assert all(T.UDP_SRC_MIN <= p < T.UDP_SRC_MAX for p in ports)
    assert len(set(ports)) > 50
    assert Ether(push(h, inner(1000)))[UDP].sport == ports[0]
    v6 = [Ether(push(h, inner(sport, v6=True)))[UDP].sport for sport in range(1000, 1016)]
    assert len(set(v6)) > 12


def test_tos_inherit_and_ecn() -> None:
    f = inner(tos=0xB8 | 3)                                 # DSCP 46, ECN CE
    assert Ether(push(header(T.TNL_GENEVE, tos=0x10), f))[IP].tos == 0x10 | 2       # ECN: CE sent as ECT(0)
    assert Ether(push(header(T.TNL_GENEVE, tos_inherit=True), f))[IP].tos == 0xB8 | 2
    assert Ether(push(header(T.TNL_GENEVE, v6=True, tos_inherit=True), inner(tos=0x20 | 1, v6=True)))[IPv6].tc == \
        0x21
    arp = bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP())
    assert Ether(push(header(T.TNL_GENEVE, tos=0x10, tos_inherit=True), arp))[IP].tos == 0x10


def test_push_after_output_copies() -> None:
    f = inner()
    h = header(T.TNL_GENEVE)
    prog = A.output(0) + T.tnl_push(h, 5, 2) + A.output(2)
    q, drops, k = run([(128, f, prog)], free=1)
    assert k == 1 and q[0] == [(128, f)] and len(q[2][0][1]) == len(f) + 50 and sum(drops) == 0
    _, drops, k = run([(128, f, prog)], free=0)
    assert k == 0 and drops[A.DR_POOL_EMPTY] == 1


def test_no_room_too_big_and_move_right() -> None:
    h = header(T.TNL_GENEVE, v6=True)                     # 70 bytes
    f = inner(size=400)
    q, drops, _ = run([(10, f, T.tnl_push(h) + A.output(1)),                # moved right: head 0
                       (40, inner(size=460), T.tnl_push(h) + A.output(1))])     # no room at all
    assert q[1][0][0] == 0 and q[1][0][1][70:] == f
    assert drops[A.DR_NO_ROOM] == 1
    big = T.TunnelHeader(T.TNL_VXLAN, 1, 2, False, 1, 2, key=1, mtu=100)
    _, drops, _ = run([(128, inner(size=65), T.tnl_push(big) + A.output(1)),
                       (128, inner(size=64), T.tnl_push(big) + A.output(1))])
    assert drops[A.DR_TUNNEL_TOO_BIG] == 1 and drops[A.DR_NO_OUTPUT] == 0


def test_format_and_decode() -> None:
    h = T.TunnelHeader(T.TNL_GENEVE, 0xF8BC124434B6, 0xF8BC124658E0, False, _v("1.1.2.88"), _v("1.1.2.92"), key=1)
    prog = A.encode([T.tnl_push(h, 6, 1), A.output(1)])
    assert A.format_actions(prog) == (
        "tnl_push(tnl_port(6),header(size=50,type=5,eth(dst=f8:bc:12:44:34:b6,src=f8:bc:12:46:58:e0,"
        "dl_type=0x0800),ipv4(src=1.1.2.88,dst=1.1.2.92,proto=17,tos=0,ttl=64,frag=0x4000),"
        "udp(src=0,dst=6081,csum=0x0),geneve(vni=0x1)),out_port(1)),1")
    vx = T.TunnelHeader(T.TNL_VXLAN, 0xF8BC124434B6, 0xF8BC124658E0, True, _v("2001:cafe::88"),
                        _v("2001:cafe::92"), key=0x1C7, df=False)
    assert A.format_actions(A.encode([T.tnl_push(vx, 6, 1)])) == (
        "tnl_push(tnl_port(6),header(size=70,type=4,eth(dst=f8:bc:12:44:34:b6,src=f8:bc:12:46:58:e0,"
        "dl_type=0x86dd),ipv6(src=2001:cafe::88,dst=2001:cafe::92,label=0,proto=17,tclass=0x0,hlimit=64),"
        "udp(src=0,dst=4789,csum=0xffff),vxlan(flags=0x8000000,vni=0x1c7)),out_port(1))")    # always over IPv6
    gre = T.TunnelHeader(T.TNL_GRE, 1, 2, False, 1, 2, key=0x1E241, csum=True)
    assert "gre((flags=0xa000,proto=0x6558),csum=0x0,key=0x1e241)" in A.format_actions(A.encode([T.tnl_push(gre)]))
    gen = header(T.TNL_GENEVE, oam=True, options=T.geneve_option(0xFFFF, 0x80, b"\0\0\0\x0a"))
    assert "geneve(crit,oam,vni=0x1c7,options({class=0xffff,type=0x80,len=4,0xa}))" in \
        A.format_actions(A.encode([T.tnl_push(gen)]))
    w = T.tnl_push(h)
    for bad in (w[:-1], [w[0], 4, *w[2:6]], [*w[:4], 0x21, *w[5:]], [*w[:4], 0, *w[5:]]):
        with pytest.raises(ValueError):
            A.decode(bad)
    q, drops, _ = run([(128, inner(), [A.OP_TNL_PUSH, 6, *w[2:8]] + A.output(1))])
    assert drops[A.DR_BAD_PROGRAM] == 1 and not q


# ---------------------------------------------------------------- termination


TLV = P.tlv_table([(0x102, 0x80, 4, 0), (0x102, 0x01, 8, 8), (0x103, 0x81, 4, -1)])


class Term:
    """A termination table with Geneve / VXLAN / GRE ports over IPv4 and a Geneve port over IPv6; port 0 is
    the underlay (terminating), port 1 is not."""

    def __init__(self) -> None:
        t = P.TerminationTable()
        t.add_endpoint(V4_LOCAL, MAC_LOCAL)
        t.add_endpoint(V6_LOCAL, MAC_LOCAL, ipv6=True)
        t.add_port(T.TNL_GENEVE, 6081, None, V4_PEER, 0x1C7, False, 10)
        t.add_port(T.TNL_GENEVE, 6081, None, None, None, False, 11)              # remote=flow, key=flow
        t.add_port(T.TNL_VXLAN, 4789, V4_LOCAL, V4_PEER, 5, False, 12)
        t.add_port(T.TNL_GRE, 0, None, V4_PEER, 7, False, 13)
        t.add_port(T.TNL_GRE, 0, None, V4_PEER, None, False, 14)                 # key=flow
        t.add_port(T.TNL_GENEVE, 6081, None, V6_PEER, 0x1C7, True, 15)
        self.endpoints, self.tports = t.arrays()
        self.port_term = np.array([1, 0, 0, 0], dtype=np.uint8)

    def run(self, frames: list[bytes], in_port: int = 0, snoop_rows: int = 8) -> dict:
        pool = PacketPool(len(frames) + 1, SLOT - 128, 128)
        for i, f in enumerate(frames):
            pool.put(i, f, in_port)
        n = len(frames)
        lists = [np.zeros(n, dtype=np.int32) for _ in range(3)]
        drops = np.zeros((N_PORTS + 1, A.N_DROP_REASONS), dtype=np.int64)
        snoop = np.zeros((snoop_rows, P.SN_WORDS), dtype=np.uint64)
        snoop_n = np.zeros(2, dtype=np.int64)
        nk, nt, nd = P.tnl_terminate(pool.data, pool.meta, pool.tun, np.arange(n, dtype=np.int32), n,
                                     self.port_term, self.endpoints, self.tports, TLV, *lists, drops, snoop, snoop_n)
        keys = np.zeros((n + 1, K.KEY_WORDS), dtype=np.uint64)
        P.fill_tun_words(keys, lists[1], nt, pool.tun)
        return {"keep": lists[0][:nk].tolist(), "tunneled": lists[1][:nt].tolist(), "dropped": lists[2][:nd].tolist(),
                "drops": {A.DROP_REASONS[r]: int(c) for r, c in enumerate(drops[in_port]) if c},
                "frame": pool.frame, "meta": pool.meta, "keys": keys, "snoop": snoop[: snoop_n[0]].tolist(),
                "lost": int(snoop_n[1])}


def outer(payload: object, v6: bool = False, udp: int | None = 6081, gre: bool = False, **ip: object) -> bytes:
    """A frame from the peer to the local endpoint around ``payload`` (UDP to ``udp``, or GRE)."""
    base: dict = {"src": V6_PEER, "dst": V6_LOCAL} if v6 else {"src": V4_PEER, "dst": V4_LOCAL, "flags": "DF"}
    l3 = (IPv6 if v6 else IP)(**{**base, **ip})
    l4 = payload if gre else UDP(sport=40000, dport=udp) / payload
    return bytes(Ether(src=MACS[1], dst=MACS[0]) / l3 / l4)


def test_decap_scapy_frames() -> None:
    f = inner()
    opts = bytes.fromhex("0102 80 01 0a0b0c0d") + bytes.fromhex("0102 01 02 1112131415161718") + \
        bytes.fromhex("0103 81 01 99999999") + bytes.fromhex("0104 01 01 77777777")       # the last: unknown
    frames = [outer(GN(vni=0x1C7, options=opts) / Raw(f), tos=0x21, ttl=40),
              outer(GN(vni=0x99, oam=1) / Raw(f)),                                     # key=flow port
              outer(VXLAN(vni=5, flags=0x08) / Raw(f), udp=4789),
              outer(GRE(key_present=1, key=7, chksum_present=1, proto=0x6558) / Raw(f), gre=True),
              outer(GRE(key_present=1, key=8, proto=0x6558) / Raw(f), gre=True),             # key=flow GRE port
              outer(GN(vni=0x1C7) / Raw(f), v6=True, tc=0x10, hlim=9)]
    frames[5] = frames[5]
    r = Term().run(frames)
    assert r["tunneled"] == [0, 1, 2, 3, 4, 5] and r["drops"] == {}
    for s in range(6):
        assert r["frame"](s) == f
    assert [int(r["meta"][s, META_IN_PORT]) for s in range(6)] == [10, 11, 12, 13, 14, 15]
    k = r["keys"]
    assert k[0, K.W_TUN_ID] == 0x1C7 and k[0, K.W_TUN_SRC] == _v(V4_PEER) and k[0, K.W_TUN_DST] == _v(V4_LOCAL)
    assert k[0, K.W_TUN_MISC] == (T.TF_KEY | T.TF_DONT_FRAGMENT | T.TF_CSUM) | 0x21 << 16 | 40 << 24 | 6081 << 32
    assert k[0, K.W_TUN_METADATA] == 0x0A0B0C0D << 32 and k[0, K.W_TUN_METADATA + 1] == 0x1112131415161718
    assert not k[0, K.W_TUN_METADATA + 2 :].any()
    assert k[1, K.W_TUN_ID] == 0x99 and k[1, K.W_TUN_MISC] & 0xFFFF == T.TF_KEY | T.TF_DONT_FRAGMENT | T.TF_CSUM | \
        T.TF_OAM
    assert k[3, K.W_TUN_ID] == 7 and k[3, K.W_TUN_MISC] == T.TF_KEY | T.TF_CSUM | T.TF_DONT_FRAGMENT | 64 << 24
    assert k[5, K.W_TUN_SRC] == 0 and k[5, K.W_TUN_IPV6_SRC + 1] == _v(V6_PEER) & ((1 << 64) - 1)
    assert k[5, K.W_TUN_IPV6_DST] == _v(V6_LOCAL) >> 64
    assert (k[5, K.W_TUN_MISC] >> 16) & 0xFFFF == 0x10 | 9 << 8


def test_non_tunnel_frames_kept_and_snooped() -> None:
    f = inner()
    frames = [f,                                                                          # not for us
              outer(Raw(b"x" * 20), udp=53),                                              # UDP, not a tunnel port
              bytes(Ether(src=MACS[1], dst="02:00:00:00:00:09") / IP(src=V4_PEER, dst=V4_LOCAL) / UDP(dport=6081)
                    / GN() / Raw(f)),                                                 # another MAC
              bytes(Ether(src=MACS[1], dst=MACS[0]) / ARP(op=2, hwsrc=MACS[1], psrc=V4_PEER, hwdst=MACS[0],
                                                           pdst=V4_LOCAL)),
              bytes(Ether(src=MACS[1], dst=MACS[0]) / ARP(op=1, psrc="192.168.50.3", pdst="192.168.50.9")),
              bytes(Ether(src=MACS[1], dst=MACS[0]) / IPv6(src=V6_PEER, dst=V6_LOCAL)
                    / ICMPv6ND_NA(tgt=V6_PEER) / ICMPv6NDOptDstLLAddr(lladdr=MACS[1])),
              outer(GN(vni=0x1C7) / Raw(f))[:33]]                                     # IP header cut: not ours
    t = Term()
    r = t.run(frames)
    assert r["keep"] == list(range(7)) and r["drops"] == {}
    assert all(r["frame"](i) == frames[i] for i in range(7))
    assert r["snoop"] == [[0, _v(V4_PEER), MAC_PEER, 0 | 2 << 32],
                          [_v(V6_PEER) >> 64, _v(V6_PEER) & ((1 << 64) - 1), MAC_PEER, 0 | 3 << 32]]
    r = t.run([frames[3]] * 3, snoop_rows=2)
    assert len(r["snoop"]) == 2 and r["lost"] == 1
    assert t.run([outer(GN(vni=0x1C7) / Raw(f))], in_port=1)["keep"] == [0]          # port 1 does not terminate


def test_malformed_frames_counted_by_reason() -> None:
    f = inner()
    good = outer(GN(vni=0x1C7) / Raw(f))
    gre = outer(GRE(key_present=1, key=7, proto=0x6558) / Raw(f), gre=True)
    bad_ipck = bytearray(good)
    bad_ipck[24] ^= 0xFF
    bad_udpck = bytearray(outer(GN(vni=0x1C7) / Raw(f)))
    bad_udpck[40] ^= 0x55
    if bad_udpck[40:42] == b"\0\0":
        bad_udpck[41] = 1
    cases = {
        "tunnel_truncated": [good[:40], good[:45], good[:50], good[:60], good[:49 + 14],
                             outer(GN(vni=0x1C7, optionlen=4) / Raw(b"")), gre[:37], gre[:41],
                             bytes(outer(GN(vni=0x1C7) / Raw(b"0123456789")))],
        "tunnel_bad_header": [outer(GN(version=1, vni=0x1C7) / Raw(f)),
                              outer(GENEVE(vni=0x1C7, proto=0x0800) / Raw(f)),
                              outer(VXLAN(vni=5, flags=0x0C) / Raw(f), udp=4789),
                              outer(VXLAN(vni=5, flags=0x00) / Raw(f), udp=4789),
                              outer(GRE(version=1, key_present=1, key=7, proto=0x6558) / Raw(f), gre=True),
                              outer(GRE(routing_present=1, key_present=1, key=7, proto=0x6558) / Raw(f), gre=True),
                              bytes(Ether(src=MACS[1], dst=MACS[0]) / IP(src=V4_PEER, dst=V4_LOCAL, options=b"\x01" * 4)
                                    / UDP(sport=1, dport=6081) / GN(vni=0x1C7) / Raw(f)),
                              bytes(Ether(src=MACS[1], dst=MACS[0]) / IP(src=V4_PEER, dst=V4_LOCAL, flags="MF")
                                    / UDP(sport=1, dport=6081) / GN(vni=0x1C7) / Raw(f)),
                              bytes(bad_ipck), bytes(bad_udpck),
                              outer(GN(vni=0x1C7, options=bytes.fromhex("0102 80 02 0a0b0c0d0e0f0102")) / Raw(f))],
        "tunnel_unknown_critical_option": [outer(GN(vni=0x1C7, options=bytes.fromhex("0105 80 01 00000001"))
                                                 / Raw(f))],
        "tunnel_no_port": [outer(VXLAN(vni=6, flags=0x08) / Raw(f), udp=4789),
                           outer(GN(vni=0x1C7) / Raw(f), v6=True, src="fd00:50::7"),
                           bytes(Ether(src=MACS[1], dst=MACS[0]) / IP(src="192.168.50.7", dst=V4_LOCAL)
                                 / GRE(key_present=1, key=7, proto=0x6558) / Raw(f))],
    }
    frames = [good]
    for fs in cases.values():
        frames += fs + [good]
    r = Term().run(frames)
    assert r["drops"] == {k: len(v) for k, v in cases.items()}
    goods = [i for i, fr in enumerate(frames) if fr == good]
    assert r["tunneled"] == goods and all(r["frame"](s) == f for s in goods)
    assert sorted(r["dropped"] + r["tunneled"]) == list(range(len(frames))) and r["keep"] == []


def test_port_search_order() -> None:
    """An exact key and remote win over flow-based ports; remote=flow takes other remotes."""
    t = P.TerminationTable()
    t.add_endpoint(V4_LOCAL, MAC_LOCAL)
    t.add_port(T.TNL_GENEVE, 6081, None, None, None, False, 20)
    t.add_port(T.TNL_GENEVE, 6081, None, V4_PEER, None, False, 21)
    t.add_port(T.TNL_GENEVE, 6081, None, None, 3, False, 22)
    t.add_port(T.TNL_GENEVE, 6081, V4_LOCAL, V4_PEER, 3, False, 23)
    t.add_port(T.TNL_GENEVE, 6081, None, V4_PEER, 3, False, 24)
    term = Term()
    term.endpoints, term.tports = t.arrays()
    f = inner()
    frames = [outer(GN(vni=3) / Raw(f)), outer(GN(vni=4) / Raw(f)),
              bytes(Ether(src=MACS[1], dst=MACS[0]) / IP(src="192.168.50.9", dst=V4_LOCAL) / UDP(dport=6081)
                    / GN(vni=3) / Raw(f)),
              bytes(Ether(src=MACS[1], dst=MACS[0]) / IP(src="192.168.50.9", dst=V4_LOCAL) / UDP(dport=6081)
                    / GN(vni=4) / Raw(f))]
    r = term.run(frames)
    assert [int(r["meta"][s, META_IN_PORT]) for s in r["tunneled"]] == [23, 21, 22, 20]


@pytest.mark.parametrize(("kind", "v6"), [(k, v) for k in (T.TNL_GENEVE, T.TNL_VXLAN, T.TNL_GRE)
                                          for v in (False, True)])
def test_push_then_pop(kind: int, v6: bool) -> None:
    """What this switch pushes, its peer's termination pops (headers reversed: the peer's view)."""
    key = {T.TNL_GENEVE: 0x1C7, T.TNL_VXLAN: 5, T.TNL_GRE: 7}[kind]
    opts = T.geneve_option(0x102, 0x80, b"\xde\xad\xbe\xef") + T.geneve_option(0x102, 0x01, bytes(range(8))) \
        if kind == T.TNL_GENEVE else b""
    src, dst = (V6_PEER, V6_LOCAL) if v6 else (V4_PEER, V4_LOCAL)
    h = T.TunnelHeader(kind, MAC_LOCAL, MAC_PEER, v6, _v(src), _v(dst), key=key, options=opts, csum=True, tos=0x28,
                       ttl=17)
    term = Term()
    if v6:
        t = P.TerminationTable()
        t.add_endpoint(V6_LOCAL, MAC_LOCAL, ipv6=True)
        t.add_port(kind, T.DEFAULT_UDP_PORT[kind], V6_LOCAL, V6_PEER, key, True, 30)
        term.endpoints, term.tports = t.arrays()
    for f in (inner(), inner(v6=True, size=280)):
        g = push(h, f)
        r = term.run([g])
        assert len(r["tunneled"]) == 1, r["drops"]
        assert r["frame"](0) == f
        k = r["keys"][0]
        assert k[K.W_TUN_ID] == key and (k[K.W_TUN_MISC] >> 16) & 0xFF == 0x28 and (k[K.W_TUN_MISC] >> 24) & 0xFF == 17
        assert k[K.W_TUN_MISC] & T.TF_CSUM
        if kind == T.TNL_GENEVE:
            assert k[K.W_TUN_METADATA] >> 32 == 0xDEADBEEF and k[K.W_TUN_METADATA + 1] == 0x0001020304050607


def test_tunnel_handover() -> None:
    pool = PacketPool(16, SLOT - 128, 128)
    tp = T.TunnelPorts(N_PORTS)
    tp.set_port(1, header(T.TNL_VXLAN), underlay=3)
    tp.set_port(2, header(T.TNL_GENEVE), underlay=3, state=T.TS_NEIGH_UNRESOLVED)
    f = inner()
    taken = np.zeros(3, dtype=np.int32)
    pool.alloc(taken, 0, 3)
    for s in taken:
        pool.put(int(s), f, 0)
    out = np.zeros((2, N_PORTS * 8), dtype=np.int32)
    out_start = np.zeros((2, N_PORTS + 1), dtype=np.int32)
    out_start[0] = np.arange(N_PORTS + 1) * 8
    out[:, 8:10] = [[taken[0], taken[1]], [-1, 10]]          # port 1: as is, then with VLAN 10 pushed
    out[:, 16] = [taken[2], -1]
    out[:, 0:2] = [[taken[0], taken[2]], [-1, -1]]           # port 0: no route
    out_start[1, 0], out_start[1, 1], out_start[1, 2] = 2, 2, 1
    tp.set_port(0, None)
    tp.set_port(3, T.TunnelHeader(T.TNL_VXLAN, 1, 2, False, 1, 2, key=1, mtu=len(f) + 35), underlay=0)
    out[:, 24] = [taken[0], -1]                              # port 3: one byte over its underlay MTU
    out_start[1, 3] = 1
    dst = np.zeros(8, dtype=np.int32)
    n = T.tunnel_handover(pool.data, pool.meta, out, out_start, np.array([0, 1, 2, 3], dtype=np.int32), tp.hdrs,
                          tp.state, tp.underlay, pool.headroom, pool.free_stack, pool.free_top, dst, tp.counts)
    assert n == 2 and not out_start[1, :4].any()
    assert tp.counts[0, T.TC_NO_ROUTE] == 2 and tp.counts[3, T.TC_TOO_BIG] == 1 and tp.counts[3, T.TC_TX_PACKETS] == 0
    assert pool.frame(int(dst[0])) == push(header(T.TNL_VXLAN), f)
    g = Ether(pool.frame(int(dst[1])))
    assert g[VXLAN].vni == 0x1C7 and bytes(g[VXLAN].payload) == f[:12] + b"\x81\x00\x00\x0a" + f[12:]
    assert all(pool.meta[int(d), META_IN_PORT] == 3 for d in dst[:2])
    assert tp.counts[1, T.TC_TX_PACKETS] == 2 and tp.counts[2, T.TC_NEIGH_UNRESOLVED] == 1
    assert tp.counts[1, T.TC_TX_BYTES] == 2 * 50 + 2 * len(f) + 4
    assert pool.free_count == 16 - 3 - 2
    assert TUN_WORDS == 16 and pool.tun.shape == (16, 16)


# ---------------------------------------------------------------- the model on random programs


def _push_actions() -> st.SearchStrategy[list[int]]:
    return st.builds(
        lambda kind, v6, csum, inherit, tos, opts, mtu: T.tnl_push(
            T.TunnelHeader(kind, MAC_PEER, MAC_LOCAL, v6, 1, 2, tos=tos, key=5, csum=csum, tos_inherit=inherit,
                           options=opts if kind == T.TNL_GENEVE else b"", mtu=mtu), 1, 2),
        st.sampled_from([T.TNL_GENEVE, T.TNL_VXLAN, T.TNL_GRE]), st.booleans(), st.booleans(), st.booleans(),
        st.integers(0, 255), st.sampled_from([b"", b"", T.geneve_option(1, 0x80, b"abcd"), bytes(T.MAX_OPTIONS - 4)
                                               + b"\x00\x01\x00\x00"]), st.sampled_from([0, 1500, 1500, 120]))


@st.composite
def _bursts(draw: st.DrawFn) -> list[tuple[int, bytes, list[int]]]:
    items = []
    for _ in range(draw(st.integers(1, 4))):
        f = draw(frames())
        head = min(draw(st.sampled_from([0, 4, 30, 64, 128, 200])), 256 - len(f))
        prog = draw(st.lists(st.one_of(actions(), _push_actions()), max_size=5))
        prog.insert(draw(st.integers(0, len(prog))), draw(_push_actions()))        # one push at least
        if draw(st.booleans()):
            prog.append(A.output(draw(st.integers(0, 3))))
        items.append((head, f, [w for a in prog for w in a]))
    return items


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_bursts(), st.integers(0, 4))
def test_model_agrees_with_executor(items: list[tuple[int, bytes, list[int]]], free: int) -> None:
    sides: list = [[], []]
    q, drops, k = run_kernel(items, free, sides=sides)
    ref = R.run_burst(items, 256, 4, 64, free, side_cap=64)
    assert q == {p: v for p, v in ref.queues.items() if v}
    assert sides == [ref.normal, ref.userspace]
    assert drops == ref.drops and k == ref.copies


# ---------------------------------------------------------------- real OVS as the oracle of the header


_SNIFF = r"""
import sys
from scapy.all import sniff
pkts = sniff(iface=sys.argv[1], count=1, timeout=15, lfilter=lambda p: b"pyvswitch" in bytes(p),
             filter="udp port 6081 or udp port 4789 or ip proto 47 or ip6 proto 47",
             started_callback=lambda: print("ready", flush=True))
print(bytes(pkts[0]).hex() if pkts else "", flush=True)
"""
_SEND = r"""
import sys
from scapy.all import Ether, sendp
sendp(Ether(bytes.fromhex(sys.argv[2])), iface=sys.argv[1], verbose=False)
"""


@pytest.mark.parametrize(("kind", "v6", "csum", "opt"), [
    (T.TNL_GENEVE, False, False, False), (T.TNL_VXLAN, False, False, False), (T.TNL_GRE, False, False, False),
    (T.TNL_GRE, False, True, False), (T.TNL_GENEVE, False, True, False), (T.TNL_GENEVE, True, True, False),
    (T.TNL_VXLAN, True, False, False), (T.TNL_GENEVE, False, False, True), (T.TNL_GENEVE, True, False, True)])
def test_pushed_header_as_real_ovs_sends_it(kind: int, v6: bool, csum: bool, opt: bool) -> None:
    """Real ovs-vswitchd 3.1 (userspace tunnelling: br-phy's internal port holds the underlay address) sends an
    inner frame through a tunnel port; the frame it puts on the underlay is the one TNL_PUSH makes of it, byte for
    byte, but the UDP source port (each hashes the inner flow its own way) and so the UDP checksum, which must
    be right in both."""
    import subprocess
    import sys

    from tests.test_bridge_identity import running_ovs
    name = {T.TNL_GENEVE: "geneve", T.TNL_VXLAN: "vxlan", T.TNL_GRE: "gre"}[kind]
    with running_ovs("kt-", "br-phy", "br-int") as ovs:
        ns = ovs.ns

        def nsx(*cmd: str) -> str:
            return ovs.run("ip", "netns", "exec", ns, *cmd).stdout

        nsx("ip", "link", "add", "kp0", "type", "veth", "peer", "name", "kp1")
        for dev in ("kp0", "kp1", "br-phy"):
            nsx("ip", "link", "set", dev, "up")
        if v6:
            nsx("ip", "-6", "addr", "add", f"{V6_LOCAL}/64", "dev", "br-phy", "nodad")
        else:
            nsx("ip", "addr", "add", f"{V4_LOCAL}/24", "dev", "br-phy")
        local, peer = (V6_LOCAL, V6_PEER) if v6 else (V4_LOCAL, V4_PEER)
        ovs.vsctl("add-port", "br-phy", "kp0")
        ovs.vsctl("add-port", "br-int", "kvm0", "--", "set", "Interface", "kvm0", "type=internal")
        ovs.vsctl("add-port", "br-int", "tnl0", "--", "set", "Interface", "tnl0", f"type={name}",
                  f"options:remote_ip={peer}", "options:key=0x1c7", f"options:csum={str(csum).lower()}")
        nsx("ip", "link", "set", "kvm0", "up")
        options = b""
        if opt:     # a critical option from tun_metadata0, set by a flow
            ovs.run("ovs-ofctl", "add-tlv-map", "br-int", "{class=0x102,type=0x80,len=4}->tun_metadata0")
            ovs.run("ovs-ofctl", "add-flow", "br-int", "actions=set_field:0xabcd1234->tun_metadata0,output:tnl0")
            options = T.geneve_option(0x102, 0x80, bytes.fromhex("abcd1234"))
        ovs.run("ovs-appctl", "-t", f"{ovs.rundir}/ovs-vswitchd.{ovs.pid('ovs-vswitchd')}.ctl", "tnl/neigh/set",
                "br-phy", peer, MACS[1])
        phy_mac = int(ovs.link_mac("br-phy").replace(":", ""), 16)
        f = bytes(Ether(src="0a:00:00:00:00:01", dst="0a:00:00:00:00:02") / IP(src="10.0.0.1", dst="10.0.0.2", tos=0x12)
                  / UDP(sport=5000, dport=6000) / Raw(b"pyvswitch" * 4))
        py = "/work/main/.venv/bin/python" if os.path.exists("/work/main/.venv/bin/python") else sys.executable
        sniffer = subprocess.Popen(["ip", "netns", "exec", ns, py, "-c", _SNIFF, "kp1"], stdout=subprocess.PIPE,
                                   text=True)
        try:
            assert sniffer.stdout is not None and sniffer.stdout.readline().strip() == "ready"
            got = ""
            for _ in range(20):            # until ovs-vswitchd has its route and tunnel port
                nsx(py, "-c", _SEND, "kvm0", f.hex())
                import select
                if select.select([sniffer.stdout], [], [], 0.5)[0]:
                    got = sniffer.stdout.readline().strip()
                    break
        finally:
            sniffer.kill()
            sniffer.wait()
        assert got, "ovs-vswitchd sent nothing on the underlay"
        theirs = bytes.fromhex(got)
        # what real OVS sent, this switch's termination takes (the peer's side: the frame is for it)
        t = P.TerminationTable()
        t.add_endpoint(peer, MAC_PEER, ipv6=v6)
        t.add_port(kind, T.DEFAULT_UDP_PORT[kind], peer, local, 0x1C7, v6, 9)
        term = Term()
        term.endpoints, term.tports = t.arrays()
        r = term.run([theirs])
        assert r["tunneled"] == [0] and r["frame"](0) == f and r["meta"][0, META_IN_PORT] == 9
        assert r["keys"][0, K.W_TUN_METADATA] == (0xABCD1234 << 32 if opt else 0)
        misc = int(r["keys"][0, K.W_TUN_MISC])
        assert r["keys"][0, K.W_TUN_ID] == 0x1C7 and (misc >> 16) & 0xFF == 0x02 and (misc >> 24) & 0xFF == 64
        assert misc & 0xFFFF == T.TF_KEY | (0 if v6 else T.TF_DONT_FRAGMENT) | (T.TF_CSUM if csum or (
            v6 and kind != T.TNL_GRE) else 0)
        flows = ovs.run("ovs-appctl", "-t", f"{ovs.rundir}/ovs-vswitchd.{ovs.pid('ovs-vswitchd')}.ctl",
                        "dpctl/dump-flows").stdout
    h = T.TunnelHeader(kind, MAC_PEER, phy_mac, v6, _v(local), _v(peer), key=0x1C7, csum=csum, options=options)
    ours = push(h, f)
    if kind != T.TNL_GRE:           # the UDP source port: each switch's own hash of the inner flow
        u = 54 if v6 else 34
        assert T.UDP_SRC_MIN <= int.from_bytes(theirs[u : u + 2], "big") < T.UDP_SRC_MAX
        if csum or v6:
            assert _udp_csum_ok(Ether(theirs)) and _udp_csum_ok(Ether(ours))
            theirs = theirs[: u + 6] + ours[u + 6 : u + 8] + theirs[u + 8 :]
        theirs = theirs[:u] + ours[u : u + 2] + theirs[u + 2 :]
    assert theirs == ours, (Ether(theirs).show2(dump=True), Ether(ours).show2(dump=True))
    # dpctl/dump-flows shows the same action for the frame's megaflow; OVS writes the inner frame's ECN into the
    # header (a megaflow per ECN value), TNL_PUSH sets it per frame: shown here with the frame's ECN (ECT(0))
    line = next(ln for ln in flows.splitlines() if "tnl_push(" in ln and "eth_type(0x0800)" in ln)
    at = line.index("tnl_push(")
    flows = line
    depth, end = 0, at
    for end in range(at + len("tnl_push"), len(flows)):
        depth += {"(": 1, ")": -1}.get(flows[end], 0)
        if depth == 0:
            break
    action = flows[at : end + 1]
    nums = [int(x) for x in re.findall(r"(?:tnl_port|out_port)\((\d+)\)", action)]
    assert len(nums) == 2, action
    shown = T.TunnelHeader(kind, MAC_PEER, phy_mac, v6, _v(local), _v(peer), key=0x1C7, csum=csum, tos=0x02,
                           options=options)
    assert A.format_actions(A.encode([T.tnl_push(shown, nums[0], nums[-1])])) == action
