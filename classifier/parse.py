"""Header parsing: a burst of frames into rows of the key array (see ``classifier.keys``).

``parse_burst(data, meta, burst, n, keys)`` reads the frame ``data[slot, head:head + length]``
(``head = meta[slot, META_HEAD]``, ``length = meta[slot, META_LEN]``, see ``backends.pool``) for
each ``slot`` in ``burst[:n]`` and writes ``keys[slot]``; offsets in the key (``K_L3_OFS``) count
from the frame's first byte. Ethernet, one 802.1Q tag, ARP, IPv4, IPv6 (hop-by-hop, routing,
destination-options and fragment headers skipped), TCP, UDP, ICMP and ICMPv6. A frame the
switch cannot forward (runt, truncated tag, a head outside its row) gets a drop reason in
``K_DROP``; a truncated L3/L4 header only sets a flag, as the frame can still be switched at
layer 2.

Unit test: ``tests/test_classifier.py``; micro-benchmark: ``python -m bench classify``.
"""

from __future__ import annotations

import numba
import numpy as np

from classifier.drops import DROP_RX_RUNT, DROP_RX_VLAN_TRUNCATED
from classifier.keys import (
    ETH_TYPE_ARP,
    ETH_TYPE_IPV4,
    ETH_TYPE_IPV6,
    ETH_TYPE_NONE,
    ETH_TYPE_VLAN,
    F_IP_FRAG,
    F_IP_LATER_FRAG,
    F_L3_TRUNCATED,
    F_L4,
    F_L4_TRUNCATED,
    F_VLAN,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    K_ARP_OP,
    K_ARP_SHA,
    K_ARP_SPA,
    K_ARP_THA,
    K_ARP_TPA,
    K_DROP,
    K_ETH_DST,
    K_ETH_SRC,
    K_ETH_TYPE,
    K_FLAGS,
    K_IN_PORT,
    K_IP_PROTO,
    K_IP_TOS,
    K_IPV6_DST_HI,
    K_IPV6_DST_LO,
    K_IPV6_SRC_HI,
    K_IPV6_SRC_LO,
    K_L3_FIRST,
    K_L3_OFS,
    K_NW_DST,
    K_NW_SRC,
    K_TP_DST,
    K_TP_SRC,
    K_VLAN_PCP,
    K_VLAN_VID,
    NKEYS,
    VID_PRESENT,
)
from classifier.wire import be16, be32, be48, be64

# Column layout of the pool's per-slot metadata that the classifier reads (the same as
# backends.pool.META_LEN / META_IN_PORT / META_HEAD; vswitch and tests/test_classifier.py check they agree).
META_LEN = 0
META_IN_PORT = 1
META_HEAD = 2

MAX_IPV6_EXT_HEADERS = 8


# The L3/L4 parsers below take ``o``, an offset in the slot's row, and ``n``, the row offset where the
# frame ends (the frame's head plus its length).


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _parse_l4(d: np.ndarray, s: int, n: int, o: int, proto: int, flags: int, k: np.ndarray) -> int:
    """Fill the L4 ports (or ICMP type/code) at offset ``o``; return the updated flags."""
    if proto == IPPROTO_TCP:
        need = 20
    elif proto == IPPROTO_UDP:
        need = 8
    elif proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6:
        need = 4
    else:
        return flags
    if o + need > n:
        return flags | F_L4_TRUNCATED
    if proto == IPPROTO_TCP or proto == IPPROTO_UDP:
        k[s, K_TP_SRC] = be16(d, s, o)
        k[s, K_TP_DST] = be16(d, s, o + 2)
    else:
        k[s, K_TP_SRC] = d[s, o]
        k[s, K_TP_DST] = d[s, o + 1]
    return flags | F_L4


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _parse_ipv4(d: np.ndarray, s: int, n: int, o: int, flags: int, k: np.ndarray) -> int:
    if o + 20 > n:
        return flags | F_L3_TRUNCATED
    vihl = np.int64(d[s, o])
    ihl = (vihl & 0xF) * 4
    if (vihl >> 4) != 4 or ihl < 20 or o + ihl > n:
        return flags | F_L3_TRUNCATED
    k[s, K_IP_TOS] = d[s, o + 1]
    proto = np.int64(d[s, o + 9])
    k[s, K_IP_PROTO] = proto
    k[s, K_NW_SRC] = be32(d, s, o + 12)
    k[s, K_NW_DST] = be32(d, s, o + 16)
    frag = be16(d, s, o + 6)
    if (frag & 0x3FFF) != 0:  # MF set or offset != 0
        flags |= F_IP_FRAG
    if (frag & 0x1FFF) != 0:
        return flags | F_IP_LATER_FRAG
    return _parse_l4(d, s, n, o + ihl, proto, flags, k)


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _parse_ipv6(d: np.ndarray, s: int, n: int, o: int, flags: int, k: np.ndarray) -> int:
    if o + 40 > n:
        return flags | F_L3_TRUNCATED
    k[s, K_IP_TOS] = ((np.int64(d[s, o]) & 0xF) << 4) | (np.int64(d[s, o + 1]) >> 4)
    k[s, K_IPV6_SRC_HI] = be64(d, s, o + 8)
    k[s, K_IPV6_SRC_LO] = be64(d, s, o + 16)
    k[s, K_IPV6_DST_HI] = be64(d, s, o + 24)
    k[s, K_IPV6_DST_LO] = be64(d, s, o + 32)
    nh = np.int64(d[s, o + 6])
    p = o + 40
    for _ in range(MAX_IPV6_EXT_HEADERS):
        if nh == 0 or nh == 43 or nh == 60 or nh == 44:
            if p + 8 > n:
                k[s, K_IP_PROTO] = nh
                return flags | F_L3_TRUNCATED
            nxt = np.int64(d[s, p])
            if nh == 44:
                flags |= F_IP_FRAG
                if (be16(d, s, p + 2) & 0xFFF8) != 0:
                    flags |= F_IP_LATER_FRAG
                p += 8
            else:
                p += (np.int64(d[s, p + 1]) + 1) * 8
            nh = nxt
        else:
            break
    k[s, K_IP_PROTO] = nh
    if (flags & F_IP_LATER_FRAG) != 0:
        return flags
    if p > n:
        return flags | F_L3_TRUNCATED
    return _parse_l4(d, s, n, p, nh, flags, k)


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _parse_arp(d: np.ndarray, s: int, n: int, o: int, flags: int, k: np.ndarray) -> int:
    if o + 28 > n:
        return flags | F_L3_TRUNCATED
    # Ethernet/IPv4 ARP only (htype 1, ptype 0x0800, hlen 6, plen 4).
    if be16(d, s, o) == 1 and be16(d, s, o + 2) == ETH_TYPE_IPV4 and d[s, o + 4] == 6 and d[s, o + 5] == 4:
        k[s, K_ARP_OP] = be16(d, s, o + 6)
        k[s, K_ARP_SHA] = be48(d, s, o + 8)
        k[s, K_ARP_SPA] = be32(d, s, o + 14)
        k[s, K_ARP_THA] = be48(d, s, o + 18)
        k[s, K_ARP_TPA] = be32(d, s, o + 24)
    return flags


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def parse_l2(d: np.ndarray, s: int, h: int, n: int, k: np.ndarray) -> int:
    """Parse the Ethernet header and 802.1Q tag of frame ``d[s, h:h+n]`` into ``k[s]``.

    Writes ``K_ETH_DST`` .. ``K_L3_OFS`` (from the frame's first byte), ``K_FLAGS`` and ``K_DROP``;
    returns the drop reason (0 when the frame can be switched). This is all the NORMAL action needs.
    """
    k[s, K_FLAGS] = 0
    k[s, K_VLAN_VID] = 0
    k[s, K_VLAN_PCP] = 0
    if n < 14:
        k[s, K_ETH_DST] = 0
        k[s, K_ETH_SRC] = 0
        k[s, K_ETH_TYPE] = 0
        k[s, K_L3_OFS] = 0
        k[s, K_DROP] = DROP_RX_RUNT
        return DROP_RX_RUNT
    k[s, K_ETH_DST] = be48(d, s, h)
    k[s, K_ETH_SRC] = be48(d, s, h + 6)
    et = be16(d, s, h + 12)
    o = 14
    if et == ETH_TYPE_VLAN:
        if n < 18:
            k[s, K_ETH_TYPE] = 0
            k[s, K_L3_OFS] = 0
            k[s, K_DROP] = DROP_RX_VLAN_TRUNCATED
            return DROP_RX_VLAN_TRUNCATED
        tci = be16(d, s, h + 14)
        k[s, K_VLAN_VID] = (tci & 0xFFF) | VID_PRESENT
        k[s, K_VLAN_PCP] = tci >> 13
        k[s, K_FLAGS] = F_VLAN
        et = be16(d, s, h + 16)
        o = 18
    if et < 0x600:
        et = ETH_TYPE_NONE
    k[s, K_ETH_TYPE] = et
    k[s, K_L3_OFS] = o
    k[s, K_DROP] = 0
    return 0


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def parse_frame(d: np.ndarray, s: int, h: int, n: int, k: np.ndarray) -> None:
    """Parse frame ``d[s, h:h+n]`` into key row ``k[s]`` (every field before ``K_IN_PORT`` rewritten).

    Takes whole arrays and a row index rather than row views: views cost reference-count
    updates on every branch.
    """
    for i in range(K_L3_FIRST, NKEYS):
        k[s, i] = 0
    if parse_l2(d, s, h, n, k) != 0:
        return
    et = np.int64(k[s, K_ETH_TYPE])
    # the L3/L4 parsers take offsets in the row and the row offset where the frame ends
    o = h + np.int64(k[s, K_L3_OFS])
    end = h + n
    flags = np.int64(k[s, K_FLAGS])
    if et == ETH_TYPE_IPV4:
        flags = _parse_ipv4(d, s, end, o, flags, k)
    elif et == ETH_TYPE_IPV6:
        flags = _parse_ipv6(d, s, end, o, flags, k)
    elif et == ETH_TYPE_ARP:
        flags = _parse_arp(d, s, end, o, flags, k)
    k[s, K_FLAGS] = flags


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def frame_span(meta: np.ndarray, s: int, width: int) -> tuple[int, int]:
    """``(head, length)`` of the frame in slot ``s`` of a ``width``-byte row, cut to the row; a head outside the
    row gives a length below 14 (the frame is a runt)."""
    h = np.int64(meta[s, META_HEAD])
    if h < 0:
        return 0, 0
    return h, min(np.int64(meta[s, META_LEN]), width - h)


@numba.njit(nogil=True, cache=True, _nrt=False)
def parse_burst(data: np.ndarray, meta: np.ndarray, burst: np.ndarray, n: int, keys: np.ndarray) -> None:
    """Parse the frames in ``burst[:n]`` into ``keys[slot]`` (including ``K_IN_PORT``)."""
    width = data.shape[1]
    for i in range(n):
        s = burst[i]
        keys[s, K_IN_PORT] = meta[s, META_IN_PORT]
        h, ln = frame_span(meta, s, width)
        parse_frame(data, s, h, ln, keys)
