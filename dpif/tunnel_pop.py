"""Tunnel termination (decapsulation): frames for a local tunnel endpoint leave the burst with their outer
headers removed, received on the tunnel port, their tunnel metadata in ``PacketPool.tun``.

```
 burst ─► tnl_terminate ─┬─► tunneled: outer headers popped, META_IN_PORT = the tunnel port, tun[slot] filled
                         ├─► keep: every other frame, unchanged (ARP / ND for an endpoint recorded in snoop)
                         └─► dropped: counted in drops[ingress port, DR_TUNNEL_*]; the caller frees them
 extract_burst(tunneled) ─► fill_tun_words(keys, tunneled) ─► lookups with in_port = the tunnel port
```

A frame *terminates* when it arrives on a port with ``port_term[port] != 0``, is untagged, its Ethernet
destination is an endpoint's MAC and its IP destination that endpoint's address, and it is GRE (protocol
47) or UDP to a tunnel port's UDP port. Those frames are validated; failing frames are dropped and counted:

* ``tunnel_truncated``: the IP packet longer than the frame, the UDP header, the Geneve / VXLAN / GRE
  header or the Geneve options cut short, an inner frame shorter than an Ethernet header;
* ``tunnel_bad_header``: IPv4 options or a fragment, a bad IPv4 header checksum, a UDP length that does not
  fit, a non-zero UDP checksum that is wrong; Geneve version != 0, protocol not Ethernet (0x6558) or
  malformed options, an option whose length is not the TLV map's; VXLAN flags other than the I flag alone
  or a non-zero reserved byte; GRE version / routing / reserved flags, protocol not 0x6558, a bad checksum;
* ``tunnel_unknown_critical_option``: a Geneve option the TLV table does not name, with the critical bit;
* ``tunnel_no_port``: no tunnel port for (kind, UDP port, local address, remote = outer source, key).

Among the ports that match, the first row of ``tports`` wins: ``TerminationTable`` orders them as OVS's
``tnl_find`` searches (ofproto/tunnel.c): an exact ``in_key`` before ``in_key=flow``, then an exact
``remote_ip`` before ``remote_ip=flow``, then a configured ``local_ip`` before none before ``flow``.

Arrays (built by ``TerminationTable.arrays()`` and ``tlv_table``):

* ``port_term``: ``uint8[n_ports]``, 1 where frames may terminate (the underlay bridge's ports).
* ``endpoints``: ``uint64[E, EP_WORDS]``: ``EP_FLAGS`` (``EP_V4`` / ``EP_V6``), ``EP_MAC``, ``EP_IP_HI``,
  ``EP_IP_LO`` (an IPv4 address in ``EP_IP_LO``).
* ``tports``: ``uint64[T, TP_WORDS]``: ``TP_KIND``, ``TP_UDP`` (0 for GRE), ``TP_FLAGS`` (``TPF_V6``,
  ``TPF_LOCAL`` a configured local address, ``TPF_REMOTE`` an exact remote, ``TPF_KEY`` an exact key),
  ``TP_LOCAL_HI/LO``, ``TP_REMOTE_HI/LO``, ``TP_KEY``, ``TP_DP_PORT`` (the tunnel's datapath port).
* ``tlv``: ``int64[R, TLV_WORDS]``: ``(class, type, length in bytes, byte offset in the 64 option bytes of
  W_TUN_METADATA, -1: mapped but not held in the key)``. The option bytes go big-endian into the option
  words (byte ``o`` of the 64: word ``o // 8``, bits ``56 - 8 * (o % 8)``), as ``ofproto.tlvmap`` places
  fields: a field placed at half-word ``start`` (``tlvmap._places``) has offset ``4 * start``. The lead
  builds the rows from ``tlvmap.mapped()`` (class, type, length) and ``tlvmap.flow_slice(name)`` (``(word,
  shift, bits)`` -> offset ``8 * (word - W_TUN_METADATA) + (64 - shift - bits) // 8``); a mapped field
  without a place gives offset -1 (the option is known, not critical-unknown, and not kept).
* ``tun``: ``PacketPool.tun``, ``uint64[slots, TUN_WORDS]``; all 16 words of a decapsulated frame's row are
  written: ``tun[s, 0]`` = W_TUN_ID (VNI, 24 bits, or the GRE key, 32 bits), ``[1]``/``[2]`` tun_src /
  tun_dst (IPv4), ``[3]`` W_TUN_MISC = ``flags | tos << 16 | ttl << 24 | udp dst << 32`` (``TF_KEY`` when a
  VNI / key was present, ``TF_CSUM`` for a non-zero UDP checksum or GRE's C bit, ``TF_DONT_FRAGMENT`` for
  IPv4 DF, ``TF_OAM`` for Geneve's O bit), ``[4..7]`` the IPv6 addresses, ``[8..15]`` the option words.
* ``keep``, ``tunneled``, ``dropped``: ``int32[>= n]`` slot lists; ``drops``: ``int64[ports + 1,
  N_DROP_REASONS]`` (``dpif.actions``'s layout, by ingress port).
* ``snoop``: ``uint64[S, SN_WORDS]`` rows ``(SN_IP_HI, SN_IP_LO, SN_MAC, SN_INFO = port | kind << 32)`` with
  kind ``SNK_ARP_REQUEST``, ``SNK_ARP_REPLY`` (an ARP whose target is an endpoint's IPv4 address: its
  sender) or ``SNK_ND_ADVERT`` (a neighbour advertisement to an endpoint or a multicast address with a
  target link-layer address option: its target); ``snoop_n``: ``int64[2]``, rows written (at most S) and
  rows lost; the caller reads ``snoop[:snoop_n[0]]`` after the burst and zeroes ``snoop_n``.
"""

from __future__ import annotations

import ipaddress

import numba
import numpy as np

from backends.pool import META_HEAD, META_IN_PORT, META_LEN, TUN_WORDS
from classifier.wire import be16, be32, be48, be64
from dpif import actions as A
from dpif.tunnel import TF_CSUM, TF_DONT_FRAGMENT, TF_KEY, TF_OAM, TNL_GRE, TNL_VXLAN, _sum16

EP_FLAGS, EP_MAC, EP_IP_HI, EP_IP_LO = range(4)
EP_WORDS = 4
EP_V4, EP_V6 = 1, 2

TP_KIND, TP_UDP, TP_FLAGS, TP_LOCAL_HI, TP_LOCAL_LO, TP_REMOTE_HI, TP_REMOTE_LO, TP_KEY, TP_DP_PORT = range(9)
TP_WORDS = 9
TPF_V6, TPF_LOCAL, TPF_REMOTE, TPF_KEY = 1, 2, 4, 8

TLV_CLASS, TLV_TYPE, TLV_LEN, TLV_OFFSET = range(4)
TLV_WORDS = 4

SN_IP_HI, SN_IP_LO, SN_MAC, SN_INFO = range(4)
SN_WORDS = 4
SNK_ARP_REQUEST, SNK_ARP_REPLY, SNK_ND_ADVERT = 1, 2, 3

_M64 = (1 << 64) - 1


def _addr(ip: int | str | None, v6: bool) -> int:
    if ip is None:
        return 0
    if isinstance(ip, str):
        return int(ipaddress.IPv6Address(ip) if v6 else ipaddress.IPv4Address(ip))
    return ip


class TerminationTable:
    """The local tunnel endpoints and tunnel ports ``tnl_terminate`` looks frames up in (control side)."""

    def __init__(self) -> None:
        self.endpoints: list[tuple[int, int, int, int]] = []
        self.ports: list[tuple[int, list[int]]] = []

    def add_endpoint(self, ip: int | str, mac: int, ipv6: bool = False) -> None:
        """A local tunnel address (the underlay bridge's internal port) and its MAC."""
        a = _addr(ip, ipv6)
        self.endpoints.append((EP_V6 if ipv6 else EP_V4, mac, a >> 64 if ipv6 else 0, a & _M64))

    def add_port(self, kind: int, udp_port: int, local_ip: int | str | None, remote_ip: int | str | None,
                 in_key: int | None, ipv6: bool, dp_port: int) -> None:
        """A tunnel port: ``remote_ip`` None = ``flow``, ``in_key`` None = ``flow``, ``local_ip`` None = any."""
        loc, rem = _addr(local_ip, ipv6), _addr(remote_ip, ipv6)
        flags = (TPF_V6 if ipv6 else 0) | (TPF_LOCAL if local_ip is not None else 0) | \
            (TPF_REMOTE if remote_ip is not None else 0) | (TPF_KEY if in_key is not None else 0)
        row = [kind, 0 if kind == TNL_GRE else udp_port, flags, loc >> 64, loc & _M64, rem >> 64, rem & _M64,
               in_key or 0, dp_port]
        rank = (0 if in_key is not None else 4) + (0 if remote_ip is not None else 2) + (0 if local_ip is not None
                                                                                         else 1)
        self.ports.append((rank, row))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(endpoints, tports)``, the ports in OVS's search order."""
        ep = np.array(self.endpoints or [(0, 0, 0, 0)], dtype=np.uint64)[: len(self.endpoints)]
        rows = [r for _, r in sorted(self.ports, key=lambda x: x[0])]
        tp = np.array(rows or [[0] * TP_WORDS], dtype=np.uint64)[: len(rows)]
        return ep.reshape(-1, EP_WORDS), tp.reshape(-1, TP_WORDS)


def tlv_table(rows: list[tuple[int, int, int, int]]) -> np.ndarray:
    """``tlv`` from ``(class, type, length in bytes, byte offset or -1)`` rows."""
    return np.array(rows or [(0, 0, 0, 0)], dtype=np.int64)[: len(rows)].reshape(-1, TLV_WORDS)


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _folds_to_zero(acc: int) -> bool:
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return acc == 0xFFFF


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _snoop(snoop: np.ndarray, snoop_n: np.ndarray, hi: int, lo: int, mac: int, info: int) -> None:
    c = snoop_n[0]
    if c >= snoop.shape[0]:
        snoop_n[1] += 1
        return
    snoop[c, SN_IP_HI] = hi
    snoop[c, SN_IP_LO] = lo
    snoop[c, SN_MAC] = mac
    snoop[c, SN_INFO] = info
    snoop_n[0] = c + 1


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _endpoint(endpoints: np.ndarray, flag: int, hi: int, lo: int) -> int:
    for e in range(endpoints.shape[0]):
        if endpoints[e, EP_FLAGS] == flag and endpoints[e, EP_IP_LO] == np.uint64(lo) and \
                endpoints[e, EP_IP_HI] == np.uint64(hi):
            return e
    return -1


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _udp_kind(tports: np.ndarray, port: int, v6: int) -> int:
    for t in range(tports.shape[0]):
        k = np.int64(tports[t, TP_KIND])
        if k != TNL_GRE and np.int64(tports[t, TP_UDP]) == port and (np.int64(tports[t, TP_FLAGS]) & TPF_V6) == v6:
            return k
    return 0


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _has_gre(tports: np.ndarray, v6: int) -> bool:
    for t in range(tports.shape[0]):
        if np.int64(tports[t, TP_KIND]) == TNL_GRE and (np.int64(tports[t, TP_FLAGS]) & TPF_V6) == v6:
            return True
    return False


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _find_port(tports: np.ndarray, kind: int, port: int, v6: int, lhi: int, llo: int, rhi: int, rlo: int,
               key: int) -> int:
    for t in range(tports.shape[0]):
        f = np.int64(tports[t, TP_FLAGS])
        if np.int64(tports[t, TP_KIND]) != kind or np.int64(tports[t, TP_UDP]) != port or (f & TPF_V6) != v6:
            continue
        if f & TPF_LOCAL and (tports[t, TP_LOCAL_HI] != np.uint64(lhi) or tports[t, TP_LOCAL_LO] != np.uint64(llo)):
            continue
        if f & TPF_REMOTE and (tports[t, TP_REMOTE_HI] != np.uint64(rhi)
                               or tports[t, TP_REMOTE_LO] != np.uint64(rlo)):
            continue
        if f & TPF_KEY and tports[t, TP_KEY] != np.uint64(key):
            continue
        return np.int64(tports[t, TP_DP_PORT])
    return -1


@numba.njit(nogil=True, cache=True, _nrt=False)
def _geneve_options(data: np.ndarray, s: int, o: int, end: int, tlv: np.ndarray, tun: np.ndarray) -> int:
    """Parse the options at ``data[s, o:end]`` into ``tun[s, 8:16]``; 0 or a drop reason."""
    while o < end:
        if o + 4 > end:
            return A.DR_TUNNEL_BAD_HEADER
        cls = be16(data, s, o)
        typ = np.int64(data[s, o + 2])
        n = (np.int64(data[s, o + 3]) & 0x1F) * 4
        if o + 4 + n > end:
            return A.DR_TUNNEL_BAD_HEADER
        r = -1
        for k in range(tlv.shape[0]):
            if tlv[k, TLV_CLASS] == cls and tlv[k, TLV_TYPE] == typ:
                r = k
                break
        if r < 0:
            if typ & 0x80:
                return A.DR_TUNNEL_UNKNOWN_CRITICAL
        elif tlv[r, TLV_LEN] != n:
            return A.DR_TUNNEL_BAD_HEADER
        elif tlv[r, TLV_OFFSET] >= 0 and tlv[r, TLV_OFFSET] + n <= 64:
            at = tlv[r, TLV_OFFSET]
            for b in range(n):
                q = at + b
                w = 8 + (q >> 3)
                sh = 56 - 8 * (q & 7)
                tun[s, w] = (tun[s, w] & ~(np.uint64(0xFF) << np.uint64(sh))) | \
                    (np.uint64(data[s, o + 4 + b]) << np.uint64(sh))
        o += 4 + n
    return 0


@numba.njit(nogil=True, cache=True, _nrt=False)
def _terminate_one(data: np.ndarray, meta: np.ndarray, tun: np.ndarray, s: int, head: int, end: int,
                   endpoints: np.ndarray, tports: np.ndarray, tlv: np.ndarray, snoop: np.ndarray,
                   snoop_n: np.ndarray, ip: int) -> int:
    """-1: keep; 0: decapsulated (meta and tun written); > 0: the drop reason."""
    et = be16(data, s, head + 12)
    l3 = head + 14
    mac = be48(data, s, head)
    if et == 0x0806:
        if l3 + 28 <= end and be48(data, s, l3) == 0x000108000604:
            op = be16(data, s, l3 + 6)
            if (op == 1 or op == 2) and _endpoint(endpoints, EP_V4, 0, be32(data, s, l3 + 24)) >= 0:
                _snoop(snoop, snoop_n, 0, be32(data, s, l3 + 14), be48(data, s, l3 + 8), ip | op << 32)
        return -1
    if et == 0x0800:
        if l3 + 20 > end or data[s, l3] >> 4 != 4:
            return -1
        e = _endpoint(endpoints, EP_V4, 0, be32(data, s, l3 + 16))
        if e < 0 or np.int64(endpoints[e, EP_MAC]) != mac:
            return -1
        v6 = 0
        ihl = (np.int64(data[s, l3]) & 15) * 4
        proto = np.int64(data[s, l3 + 9])
        tot = be16(data, s, l3 + 2)
        frag = be16(data, s, l3 + 6)
        l4 = l3 + ihl
        src_hi, src_lo, dst_hi, dst_lo = 0, be32(data, s, l3 + 12), 0, be32(data, s, l3 + 16)
        tos = np.int64(data[s, l3 + 1])
        ttl = np.int64(data[s, l3 + 8])
        ip_end = l3 + tot
    elif et == 0x86DD:
        if l3 + 40 > end or data[s, l3] >> 4 != 6:
            return -1
        dst_hi, dst_lo = np.int64(be64(data, s, l3 + 24)), np.int64(be64(data, s, l3 + 32))
        proto = np.int64(data[s, l3 + 6])
        e = _endpoint(endpoints, EP_V6, dst_hi, dst_lo)
        if proto == 58 and l3 + 64 <= end and data[s, l3 + 40] == 136 and (e >= 0 or data[s, l3 + 24] == 0xFF):
            q = l3 + 64
            pend = min(end, l3 + 40 + be16(data, s, l3 + 4))
            while q + 8 <= pend and data[s, q + 1] != 0:
                if data[s, q] == 2 and data[s, q + 1] == 1:
                    _snoop(snoop, snoop_n, np.int64(be64(data, s, l3 + 48)), np.int64(be64(data, s, l3 + 56)),
                           be48(data, s, q + 2), ip | SNK_ND_ADVERT << 32)
                    break
                q += np.int64(data[s, q + 1]) * 8
            return -1
        if e < 0 or np.int64(endpoints[e, EP_MAC]) != mac:
            return -1
        v6 = TPF_V6
        ihl = 40
        frag = 0
        l4 = l3 + 40
        src_hi, src_lo = np.int64(be64(data, s, l3 + 8)), np.int64(be64(data, s, l3 + 16))
        first = be32(data, s, l3)
        tos = (first >> 20) & 0xFF
        ttl = np.int64(data[s, l3 + 7])
        ip_end = l3 + 40 + be16(data, s, l3 + 4)
    else:
        return -1
    # is it a tunnel's? (UDP to a tunnel port, GRE)
    kind = 0
    port = 0
    if proto == 17:
        if frag & 0x1FFF or l4 + 4 > end:
            return -1
        port = be16(data, s, l4 + 2)
        kind = _udp_kind(tports, port, v6)
    elif proto == 47 and _has_gre(tports, v6):
        kind = TNL_GRE
    if kind == 0:
        return -1
    if ip_end > end:
        return A.DR_TUNNEL_TRUNCATED
    if v6 == 0:
        if ihl != 20 or frag & 0x3FFF or tot < 20 or not _folds_to_zero(_sum16(data, s, l3, l3 + 20, 0)):
            return A.DR_TUNNEL_BAD_HEADER
    flags = TF_DONT_FRAGMENT if (v6 == 0 and frag & 0x4000) else 0
    key = 0
    if kind == TNL_GRE:
        if l4 + 4 > ip_end:
            return A.DR_TUNNEL_TRUNCATED
        gf = be16(data, s, l4)
        if gf & ~0xB000 or be16(data, s, l4 + 2) != 0x6558:
            return A.DR_TUNNEL_BAD_HEADER
        inner = l4 + 4 + (4 if gf & 0x8000 else 0) + (4 if gf & 0x2000 else 0) + (4 if gf & 0x1000 else 0)
        if inner > ip_end:
            return A.DR_TUNNEL_TRUNCATED
        if gf & 0x8000:
            flags |= TF_CSUM
            if not _folds_to_zero(_sum16(data, s, l4, ip_end, 0)):
                return A.DR_TUNNEL_BAD_HEADER
        if gf & 0x2000:
            flags |= TF_KEY
            key = be32(data, s, l4 + (8 if gf & 0x8000 else 4))
        port = 0
        for w in range(8, TUN_WORDS):
            tun[s, w] = 0
    else:
        if l4 + 8 > ip_end:
            return A.DR_TUNNEL_TRUNCATED
        ulen = be16(data, s, l4 + 4)
        if ulen < 8 or l4 + ulen > ip_end:
            return A.DR_TUNNEL_BAD_HEADER
        ip_end = l4 + ulen
        uc = be16(data, s, l4 + 6)
        if uc != 0:
            flags |= TF_CSUM
            if v6:
                acc = _sum16(data, s, l3 + 8, l3 + 40, 0)
            else:
                acc = _sum16(data, s, l3 + 12, l3 + 20, 0)
            if not _folds_to_zero(_sum16(data, s, l4, ip_end, acc + 17 + ulen)):
                return A.DR_TUNNEL_BAD_HEADER
        t = l4 + 8
        if t + 8 > ip_end:
            return A.DR_TUNNEL_TRUNCATED
        for w in range(8, TUN_WORDS):
            tun[s, w] = 0
        if kind == TNL_VXLAN:
            if be32(data, s, t) != 0x08000000 or data[s, t + 7] != 0:
                return A.DR_TUNNEL_BAD_HEADER
            inner = t + 8
        else:
            b0 = np.int64(data[s, t])
            if b0 >> 6 != 0 or be16(data, s, t + 2) != 0x6558:
                return A.DR_TUNNEL_BAD_HEADER
            if data[s, t + 1] & 0x80:
                flags |= TF_OAM
            inner = t + 8 + (b0 & 0x3F) * 4
            if inner > ip_end:
                return A.DR_TUNNEL_TRUNCATED
            if inner > t + 8:
                r = _geneve_options(data, s, t + 8, inner, tlv, tun)
                if r:
                    return r
        flags |= TF_KEY
        key = be32(data, s, t + 4) >> 8
    if ip_end - inner < 14:
        return A.DR_TUNNEL_TRUNCATED
    dp = _find_port(tports, kind, port, v6, dst_hi, dst_lo, src_hi, src_lo, key)
    if dp < 0:
        return A.DR_TUNNEL_NO_PORT
    tun[s, 0] = key
    if v6:
        tun[s, 1] = 0
        tun[s, 2] = 0
        tun[s, 4] = src_hi
        tun[s, 5] = src_lo
        tun[s, 6] = dst_hi
        tun[s, 7] = dst_lo
    else:
        tun[s, 1] = src_lo
        tun[s, 2] = dst_lo
        tun[s, 4] = 0
        tun[s, 5] = 0
        tun[s, 6] = 0
        tun[s, 7] = 0
    tun[s, 3] = flags | tos << 16 | ttl << 24 | port << 32
    meta[s, META_HEAD] = inner
    meta[s, META_LEN] = ip_end - inner
    meta[s, META_IN_PORT] = dp
    return 0


@numba.njit(nogil=True, cache=True, _nrt=False)
def tnl_terminate(data: np.ndarray, meta: np.ndarray, tun: np.ndarray, burst: np.ndarray, n: int,
                  port_term: np.ndarray, endpoints: np.ndarray, tports: np.ndarray, tlv: np.ndarray,
                  keep: np.ndarray, tunneled: np.ndarray, dropped: np.ndarray, drops: np.ndarray,
                  snoop: np.ndarray, snoop_n: np.ndarray) -> tuple[int, int, int]:
    """Split ``burst[:n]`` into ``keep`` (not for a tunnel port), ``tunneled`` (decapsulated: received on the
    tunnel port, ``tun[slot]`` written) and ``dropped`` (counted in ``drops[ingress, reason]``), each in burst
    order; returns their counts. ARP / ND answers for an endpoint are recorded in ``snoop``."""
    nk, nt, nd = 0, 0, 0
    width = data.shape[1]
    last_row = drops.shape[0] - 1
    n_term = port_term.shape[0]
    for i in range(n):
        s = burst[i]
        ip = np.int64(meta[s, META_IN_PORT])
        head = np.int64(meta[s, META_HEAD])
        ln = np.int64(meta[s, META_LEN])
        r = -1
        if 0 <= ip < n_term and port_term[ip] != 0 and head >= 0 and ln >= 14 and head + ln <= width:
            r = _terminate_one(data, meta, tun, s, head, head + ln, endpoints, tports, tlv, snoop, snoop_n, ip)
        if r < 0:
            keep[nk] = s
            nk += 1
        elif r == 0:
            tunneled[nt] = s
            nt += 1
        else:
            drops[ip if 0 <= ip < last_row else last_row, r] += 1
            dropped[nd] = s
            nd += 1
    return nk, nt, nd


@numba.njit(nogil=True, cache=True, _nrt=False)
def fill_tun_words(keys: np.ndarray, burst: np.ndarray, n: int, tun: np.ndarray) -> None:
    """Copy ``tun[slot]`` into ``keys[slot]``'s words 32..47 for ``burst[:n]`` (decapsulated frames, after
    ``extract_burst``)."""
    for i in range(n):
        s = burst[i]
        for w in range(TUN_WORDS):
            keys[s, 32 + w] = tun[s, w]
