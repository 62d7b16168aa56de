"""Header rewrites of the executor's ``SET_MASKED`` (numba): one key word written into a frame's bytes,
its checksums fixed incrementally (RFC 1624).

``set_masked(data, s, head, end, w, v, m)`` writes ``v`` under ``m`` (key form of word ``w``, ``dpif.key``)
into the frame ``data[s, head:end]``, where that header is:

* Ethernet: ``W_ETH_DST`` / ``W_ETH_SRC``; ``W_VLAN_TCI`` (VID and PCP of the outer tag).
* IPv4 (after up to two tags): ``W_NW`` tos and ttl, ``W_NW_SRC`` / ``W_NW_DST`` (header checksum; the
  TCP/UDP checksum when the frame carries that header), ``W_TP``: TCP/UDP ports (L4 checksum), ICMP type
  (bits 0..7) and code (16..23) (ICMP checksum, no pseudo-header).
* IPv6 (extension headers skipped as extraction does; a later fragment has no L4): ``W_NW`` traffic class
  and hop limit; ``W_IPV6_SRC`` / ``W_IPV6_DST`` (each two words, high first: ``w`` names one 64-bit
  half) with the TCP/UDP/ICMPv6 checksum fixed for the pseudo-header (not for a destination behind a
  routing header with segments left, whose pseudo-header holds the final one, as OVS does); ``W_TP``:
  TCP/UDP ports, ICMPv6 type / code; on a neighbour solicitation / advertisement (code 0): ``W_ND_TARGET``
  (two words), ``W_ARP_SHA`` the source and ``W_ARP_THA`` the target link-layer address option (the first
  such option of 8 bytes; none: nothing), ICMPv6 checksum fixed.
* ARP / RARP (Ethernet / IPv4): ``W_NW`` bits 0..7 the opcode's low byte, ``W_NW_SRC`` / ``W_NW_DST`` spa /
  tpa, ``W_ARP_SHA`` / ``W_ARP_THA`` sha / tha.

Any other word, or a frame without that header (or too short to hold it), is left alone: nothing is read
or written outside ``[head, end)``. A UDP checksum of 0 (none) stays 0; one that becomes 0 is 0xFFFF.
"""

from __future__ import annotations

import numba
import numpy as np

from dpif import key as K

ETH_VLAN = 0x8100
ETH_QINQ = 0x88A8
ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_ARP = 0x0806
ETH_RARP = 0x8035
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58
PROTO_HOPOPT = 0
PROTO_ROUTING = 43
PROTO_FRAGMENT = 44
PROTO_DSTOPTS = 60
ND_SOLICIT = 135
ND_ADVERT = 136
ND_OPT_SLL = 1
ND_OPT_TLL = 2

_JIT = {"nogil": True, "cache": True, "_nrt": False, "inline": "always"}


@numba.njit(**_JIT)
def _ld16(data: np.ndarray, s: int, off: int) -> int:
    return (np.int64(data[s, off]) << 8) | np.int64(data[s, off + 1])


@numba.njit(**_JIT)
def _st16(data: np.ndarray, s: int, off: int, v: int) -> None:
    data[s, off] = (v >> 8) & 0xFF
    data[s, off + 1] = v & 0xFF


@numba.njit(**_JIT)
def _csum_adj(csum: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3: the checksum after a 16-bit word (or a folded sum of words) goes ``old -> new``."""
    acc = (~csum & 0xFFFF) + (~old & 0xFFFF) + (new & 0xFFFF)
    acc = (acc & 0xFFFF) + (acc >> 16)
    acc = (acc & 0xFFFF) + (acc >> 16)
    return ~acc & 0xFFFF


@numba.njit(**_JIT)
def _fold(acc: int) -> int:
    acc = (acc & 0xFFFF) + (acc >> 16)
    acc = (acc & 0xFFFF) + (acc >> 16)
    return acc


@numba.njit(**_JIT)
def _sum16(data: np.ndarray, s: int, at: int, nwords: int) -> int:
    """The folded ones'-complement sum of ``nwords`` 16-bit words at ``at``."""
    acc = np.int64(0)
    for k in range(nwords):
        acc += _ld16(data, s, at + 2 * k)
    return _fold(acc)


@numba.njit(**_JIT)
def _put(data: np.ndarray, s: int, at: int, nbytes: int, v: int, m: int) -> None:
    """Write the low ``nbytes`` bytes of ``v`` under ``m`` big-endian at ``at``."""
    for k in range(nbytes):
        sh = 8 * (nbytes - 1 - k)
        mb = (m >> sh) & 0xFF
        if mb:
            data[s, at + k] = (np.int64(data[s, at + k]) & ~mb) | ((v >> sh) & mb)


@numba.njit(**_JIT)
def _fix16(data: np.ndarray, s: int, at: int, old: int, new: int, udp: bool) -> None:
    """Adjust the checksum at ``at`` for a 16-bit word ``old -> new`` (UDP: 0 stays 0, 0 becomes 0xFFFF)."""
    if old == new:
        return
    c = _ld16(data, s, at)
    if udp and c == 0:
        return
    c = _csum_adj(c, old, new)
    if udp and c == 0:
        c = 0xFFFF
    _st16(data, s, at, c)


@numba.njit(**_JIT)
def _put_fix(data: np.ndarray, s: int, at: int, nbytes: int, v: int, m: int, c1: int, c2: int,
             udp2: bool) -> None:
    """``_put`` of an even number of bytes at an even distance from the checksums at ``c1`` and ``c2``
    (-1: none), both adjusted for the change (``udp2``: the one at ``c2`` is UDP's)."""
    if c1 < 0 and c2 < 0:
        _put(data, s, at, nbytes, v, m)
        return
    old = _sum16(data, s, at, nbytes // 2)
    _put(data, s, at, nbytes, v, m)
    new = _sum16(data, s, at, nbytes // 2)
    if c1 >= 0:
        _fix16(data, s, c1, old, new, False)
    if c2 >= 0:
        _fix16(data, s, c2, old, new, udp2)


@numba.njit(**_JIT)
def l3_start(data: np.ndarray, s: int, head: int, end: int, ethertype: int) -> int:
    """Offset of the L3 header after up to two tags when the frame's ethertype is ``ethertype``, else -1."""
    off = head + 12
    for _ in range(2):
        if off + 4 > end:
            return -1
        et = _ld16(data, s, off)
        if et != ETH_VLAN and et != ETH_QINQ:
            break
        off += 4
    if off + 2 > end or _ld16(data, s, off) != ethertype:
        return -1
    return off + 2


@numba.njit(**_JIT)
def _l3_offset(data: np.ndarray, s: int, head: int, end: int) -> int:
    """Offset of the IPv4 header (after up to two tags), or -1 when the frame is not IPv4."""
    l3 = l3_start(data, s, head, end, ETH_IPV4)
    if l3 < 0 or l3 + 20 > end:
        return -1
    vi = np.int64(data[s, l3])
    if vi >> 4 != 4 or (vi & 15) < 5 or l3 + (vi & 15) * 4 > end:
        return -1
    return l3


@numba.njit(**_JIT)
def _l3v6_offset(data: np.ndarray, s: int, head: int, end: int) -> int:
    """Offset of the IPv6 header (after up to two tags), or -1 when the frame is not IPv6."""
    l3 = l3_start(data, s, head, end, ETH_IPV6)
    if l3 < 0 or l3 + 40 > end or np.int64(data[s, l3]) >> 4 != 6:
        return -1
    return l3


@numba.njit(**_JIT)
def _arp_offset(data: np.ndarray, s: int, head: int, end: int) -> int:
    """Offset of an Ethernet/IPv4 ARP or RARP header, or -1."""
    l3 = l3_start(data, s, head, end, ETH_ARP)
    if l3 < 0:
        l3 = l3_start(data, s, head, end, ETH_RARP)
    if (l3 < 0 or l3 + 28 > end or _ld16(data, s, l3) != 1 or _ld16(data, s, l3 + 2) != ETH_IPV4
            or data[s, l3 + 4] != 6 or data[s, l3 + 5] != 4):
        return -1
    return l3


@numba.njit(**_JIT)
def _l4_csum_offset(data: np.ndarray, s: int, l3: int, end: int) -> int:
    """Offset of the TCP/UDP checksum when the frame carries that header, else -1 (ICMP, later fragment)."""
    if _ld16(data, s, l3 + 6) & 0x1FFF:
        return -1
    l4 = l3 + (np.int64(data[s, l3]) & 15) * 4
    proto = data[s, l3 + 9]
    if proto == PROTO_TCP and l4 + 18 <= end:
        return l4 + 16
    if proto == PROTO_UDP and l4 + 8 <= end:
        return l4 + 6
    return -1


@numba.njit(**_JIT)
def _set_ports(data: np.ndarray, s: int, l4: int, l4c: int, v: int, m: int, udp: bool) -> None:
    """Write ``W_TP``'s ports (``v`` under ``m``: source in bits 0-15, destination 16-31) into the L4 header
    at ``l4`` and fix its checksum at ``l4c``."""
    for half in range(2):
        sh = 16 * half
        mw = (m >> sh) & 0xFFFF
        if mw:
            p = l4 + 2 * half
            old = _ld16(data, s, p)
            new = (old & ~mw) | ((v >> sh) & mw)
            _st16(data, s, p, new)
            _fix16(data, s, l4c, old, new, udp)


@numba.njit(**_JIT)
def _set_icmp(data: np.ndarray, s: int, l4: int, v: int, m: int) -> None:
    """ICMP / ICMPv6 type (``v`` bits 0..7) and code (bits 16..23) under ``m``, checksum at ``l4 + 2``."""
    tm = m & 0xFF
    cm = (m >> 16) & 0xFF
    if tm == 0 and cm == 0:
        return
    old = _ld16(data, s, l4)
    new = (old & ~((tm << 8) | cm)) | (((v & tm) << 8) | ((v >> 16) & cm))
    _st16(data, s, l4, new)
    _fix16(data, s, l4 + 2, old, new, False)


@numba.njit(**_JIT)
def _set_v4(data: np.ndarray, s: int, l3: int, end: int, w: int, v: int, m: int) -> None:
    """``SET_MASKED`` on an IPv4 frame whose header is at ``l3``."""
    if w == K.W_NW:
        for at, sh in ((l3, 8), (l3 + 8, 16)):  # header words (ver_ihl, tos) and (ttl, proto)
            mb = (m >> sh) & 0xFF
            if mb:
                pos = at + 1 if sh == 8 else at
                old = _ld16(data, s, at)
                b = (np.int64(data[s, pos]) & ~mb) | ((v >> sh) & mb)
                data[s, pos] = b
                _fix16(data, s, l3 + 10, old, _ld16(data, s, at), False)
        return
    if w == K.W_NW_SRC or w == K.W_NW_DST:
        at = l3 + 12 if w == K.W_NW_SRC else l3 + 16
        l4c = _l4_csum_offset(data, s, l3, end)
        udp = data[s, l3 + 9] == PROTO_UDP
        for half in range(2):
            sh = 16 - 16 * half
            mw = (m >> sh) & 0xFFFF
            if mw:
                p = at + 2 * half
                old = _ld16(data, s, p)
                new = (old & ~mw) | ((v >> sh) & mw)
                _st16(data, s, p, new)
                _fix16(data, s, l3 + 10, old, new, False)
                if l4c >= 0:
                    _fix16(data, s, l4c, old, new, udp)
        return
    if w == K.W_TP:
        l4 = l3 + (np.int64(data[s, l3]) & 15) * 4
        l4c = _l4_csum_offset(data, s, l3, end)
        if l4c >= 0:
            _set_ports(data, s, l4, l4c, v, m, data[s, l3 + 9] == PROTO_UDP)
        elif data[s, l3 + 9] == PROTO_ICMP and (_ld16(data, s, l3 + 6) & 0x1FFF) == 0 and l4 + 8 <= end:
            _set_icmp(data, s, l4, v, m)


@numba.njit(**_JIT)
def _l4v6(data: np.ndarray, s: int, l3: int, end: int) -> tuple[int, int, bool]:
    """(offset of the upper-layer header or -1 (a later fragment, an extension header cut short), its
    protocol, whether a routing header with segments left precedes it) of the IPv6 packet at ``l3``."""
    nh = np.int64(data[s, l3 + 6])
    q = l3 + 40
    routed = False
    while True:                                   # every extension header is >= 8 bytes: the loop ends
        if nh == PROTO_HOPOPT or nh == PROTO_ROUTING or nh == PROTO_DSTOPTS:
            if q + 8 > end:
                return -1, nh, routed
            hl = (np.int64(data[s, q + 1]) + 1) * 8
            if q + hl > end:
                return -1, nh, routed
            if nh == PROTO_ROUTING and data[s, q + 3] != 0:
                routed = True
            nh = np.int64(data[s, q])
            q += hl
        elif nh == PROTO_FRAGMENT:
            if q + 8 > end or _ld16(data, s, q + 2) & 0xFFF8:
                return -1, nh, routed
            nh = np.int64(data[s, q])
            q += 8
        else:
            return q, nh, routed


@numba.njit(**_JIT)
def _nd_option(data: np.ndarray, s: int, l4: int, end: int, want: int) -> int:
    """Offset of the first 8-byte link-layer address option of type ``want`` in the neighbour solicitation /
    advertisement at ``l4`` (options end at ``end``), or -1 (none, or malformed before it)."""
    q = l4 + 24
    while q + 8 <= end:
        olen = np.int64(data[s, q + 1]) * 8
        if olen == 0 or q + olen > end:
            return -1
        if data[s, q] == want and olen == 8:
            return q
        q += olen
    return -1


@numba.njit(**_JIT)
def _set_v6(data: np.ndarray, s: int, l3: int, end: int, w: int, v: int, m: int) -> None:
    """``SET_MASKED`` on an IPv6 frame whose header is at ``l3``."""
    if w == K.W_NW:
        tm = (m >> 8) & 0xFF
        if tm:
            b0 = np.int64(data[s, l3])
            b1 = np.int64(data[s, l3 + 1])
            tc = ((b0 & 0xF) << 4) | (b1 >> 4)
            tc = (tc & ~tm) | ((v >> 8) & tm)
            data[s, l3] = (b0 & 0xF0) | ((tc >> 4) & 0xF)
            data[s, l3 + 1] = (b1 & 0x0F) | ((tc & 0xF) << 4)
        hm = (m >> 16) & 0xFF
        if hm:
            data[s, l3 + 7] = (np.int64(data[s, l3 + 7]) & ~hm) | ((v >> 16) & hm)
        return
    l4, nh, routed = _l4v6(data, s, l3, end)
    l4c = -1                          # the upper-layer checksum, when the frame holds that header
    if l4 >= 0:
        if nh == PROTO_TCP and l4 + 18 <= end:
            l4c = l4 + 16
        elif nh == PROTO_UDP and l4 + 8 <= end:
            l4c = l4 + 6
        elif nh == PROTO_ICMPV6 and l4 + 8 <= end:
            l4c = l4 + 2
    udp = nh == PROTO_UDP
    if K.W_IPV6_SRC <= w < K.W_IPV6_DST + 2:
        if w >= K.W_IPV6_DST and routed:
            l4c = -1
        _put_fix(data, s, l3 + 8 + 8 * (w - K.W_IPV6_SRC), 8, v, m, -1, l4c, udp)
        return
    if l4c < 0:
        return
    if w == K.W_TP:
        if nh == PROTO_ICMPV6:
            _set_icmp(data, s, l4, v, m)
        else:
            _set_ports(data, s, l4, l4c, v, m, udp)
        return
    if nh != PROTO_ICMPV6 or l4 + 24 > end or data[s, l4 + 1] != 0:
        return
    t = data[s, l4]
    if t != ND_SOLICIT and t != ND_ADVERT:
        return
    if w == K.W_ND_TARGET or w == K.W_ND_TARGET + 1:
        _put_fix(data, s, l4 + 8 + 8 * (w - K.W_ND_TARGET), 8, v, m, l4c, -1, False)
    elif w == K.W_ARP_SHA or w == K.W_ARP_THA:
        pend = min(end, l3 + 40 + _ld16(data, s, l3 + 4))   # options end with the packet, not the frame
        q = _nd_option(data, s, l4, pend, ND_OPT_SLL if w == K.W_ARP_SHA else ND_OPT_TLL)
        if q >= 0:
            _put_fix(data, s, q + 2, 6, v, m, l4c, -1, False)


@numba.njit(**_JIT)
def _set_arp(data: np.ndarray, s: int, l3: int, w: int, v: int, m: int) -> None:
    """``SET_MASKED`` on an ARP frame whose header is at ``l3``."""
    if w == K.W_NW:
        mb = m & 0xFF
        if mb:
            data[s, l3 + 7] = (np.int64(data[s, l3 + 7]) & ~mb) | (v & mb)
    elif w == K.W_NW_SRC:
        _put(data, s, l3 + 14, 4, v, m)
    elif w == K.W_NW_DST:
        _put(data, s, l3 + 24, 4, v, m)
    elif w == K.W_ARP_SHA:
        _put(data, s, l3 + 8, 6, v, m)
    elif w == K.W_ARP_THA:
        _put(data, s, l3 + 18, 6, v, m)


@numba.njit(**_JIT)
def set_masked(data: np.ndarray, s: int, head: int, end: int, w: int, v: int, m: int) -> None:
    """Apply one ``SET_MASKED`` to the frame ``data[s, head:end]`` with its checksum fixes."""
    if w == K.W_ETH_DST or w == K.W_ETH_SRC:
        base = head if w == K.W_ETH_DST else head + 6
        if m == 0xFFFF_FFFF_FFFF:       # the whole address (what set_field writes): no per-byte masks
            data[s, base] = (v >> 40) & 0xFF
            data[s, base + 1] = (v >> 32) & 0xFF
            data[s, base + 2] = (v >> 24) & 0xFF
            data[s, base + 3] = (v >> 16) & 0xFF
            data[s, base + 4] = (v >> 8) & 0xFF
            data[s, base + 5] = v & 0xFF
            return
        _put(data, s, base, 6, v, m)
        return
    if w == K.W_VLAN_TCI:
        et = _ld16(data, s, head + 12)
        if (et == ETH_VLAN or et == ETH_QINQ) and head + 16 <= end:
            mm = m & 0xEFFF
            old = _ld16(data, s, head + 14)
            _st16(data, s, head + 14, (old & ~mm) | (v & mm))
        return
    l3 = _l3_offset(data, s, head, end)
    if l3 >= 0:
        _set_v4(data, s, l3, end, w, v, m)
        return
    l3 = _l3v6_offset(data, s, head, end)
    if l3 >= 0:
        _set_v6(data, s, l3, end, w, v, m)
        return
    l3 = _arp_offset(data, s, head, end)
    if l3 >= 0:
        _set_arp(data, s, l3, w, v, m)
