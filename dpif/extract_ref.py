"""Plain-Python model of ``dpif.extract``: one frame (bytes) -> one key row and a drop reason.

The oracle the kernel is tested against (``tests/test_dp_extract.py``): the same rules as the
kernel's docstring, written as a straightforward walk over the headers.
"""

from __future__ import annotations

import numpy as np

from classifier.drops import DROP_RX_RUNT, DROP_RX_VLAN_TRUNCATED
from dpif import key as K

TPIDS = (0x8100, 0x88A8)
IPV6_EXT_HEADERS = (0, 43, 60)   # hop-by-hop, routing, destination options (fragment: 44, below)


def _be(b: bytes, o: int, size: int) -> int:
    return int.from_bytes(b[o : o + size], "big")


def _l4(ip: bytes, o: int, proto: int, version: int, key: list[int]) -> None:
    """Ports / ICMP type and code / ND fields from the L4 header at ``ip[o:]`` (``ip`` is the IP packet)."""
    l4 = ip[o:]
    if proto == 6 and len(l4) >= 20:
        flags = _be(l4, 12, 2) & 0x0FFF
        key[K.W_TP] = _be(l4, 0, 2) | _be(l4, 2, 2) << 16 | flags << 32
    elif proto == 17 and len(l4) >= 8 or proto == 132 and len(l4) >= 12:
        key[K.W_TP] = _be(l4, 0, 2) | _be(l4, 2, 2) << 16
    elif proto == 1 and version == 4 and len(l4) >= 8:
        key[K.W_TP] = l4[0] | l4[1] << 16
    elif proto == 58 and version == 6 and len(l4) >= 8:
        icmp_type, code = l4[0], l4[1]
        key[K.W_TP] = icmp_type | code << 16
        if icmp_type in (135, 136) and code == 0:
            _nd(l4, icmp_type, key)


def _nd(msg: bytes, icmp_type: int, key: list[int]) -> None:
    """Neighbour solicitation (135) / advertisement (136): target and source / target link-layer address."""
    if len(msg) < 24:
        return
    wanted = 1 if icmp_type == 135 else 2          # NS carries the source address, NA the target's
    found = []
    options = msg[24:]
    while len(options) >= 8:
        length = options[1] * 8
        if length == 0 or length > len(options):
            return
        if options[0] == wanted and length == 8:
            found.append(_be(options, 2, 6))
        options = options[length:]
    if len(found) > 1:
        return
    target = _be(msg, 8, 16)
    key[K.W_ND_TARGET] = target >> 64
    key[K.W_ND_TARGET + 1] = target & (1 << 64) - 1
    lla = found[0] if found else 0
    if icmp_type == 135:
        key[K.W_ARP_SHA] = lla
    else:
        key[K.W_ARP_THA] = lla


def _ipv4(pkt: bytes, key: list[int]) -> None:
    if len(pkt) < 20:
        return
    header_len = (pkt[0] & 0x0F) * 4
    total = _be(pkt, 2, 2)
    if header_len < 20 or total < header_len or total > len(pkt):
        return
    pkt = pkt[:total]
    tos, ttl, proto = pkt[1], pkt[8], pkt[9]
    flags_offset = _be(pkt, 6, 2)
    more_fragments = bool(flags_offset & 0x2000)
    offset = flags_offset & 0x1FFF
    frag = 0
    if more_fragments or offset:
        frag |= K.FRAG_ANY
    if offset:
        frag |= K.FRAG_LATER
    key[K.W_NW] = proto | tos << 8 | ttl << 16 | frag << 24
    key[K.W_NW_SRC] = _be(pkt, 12, 4)
    key[K.W_NW_DST] = _be(pkt, 16, 4)
    if not offset:
        _l4(pkt, header_len, proto, 4, key)


def _ipv6(pkt: bytes, key: list[int]) -> None:
    if len(pkt) < 40:
        return
    total = 40 + _be(pkt, 4, 2)
    if total > len(pkt):
        return
    pkt = pkt[:total]
    first = _be(pkt, 0, 4)
    tos = first >> 20 & 0xFF
    ttl = pkt[7]
    for word, o in ((K.W_IPV6_SRC, 8), (K.W_IPV6_DST, 24)):
        key[word] = _be(pkt, o, 8)
        key[word + 1] = _be(pkt, o + 8, 8)
    key[K.W_IPV6_LABEL] = first & 0xFFFFF
    next_header = pkt[6]
    o = 40
    frag = 0
    while next_header in IPV6_EXT_HEADERS or next_header == 44:
        if len(pkt) - o < 8:
            key[K.W_NW] = tos << 8 | ttl << 16 | frag << 24
            return
        if next_header == 44:
            frag |= K.FRAG_ANY
            if _be(pkt, o + 2, 2) >> 3:
                key[K.W_NW] = 44 | tos << 8 | ttl << 16 | (frag | K.FRAG_LATER) << 24
                return
            length = 8
        else:
            length = (pkt[o + 1] + 1) * 8
            if length > len(pkt) - o:
                key[K.W_NW] = tos << 8 | ttl << 16 | frag << 24
                return
        next_header = pkt[o]
        o += length
    key[K.W_NW] = next_header | tos << 8 | ttl << 16 | frag << 24
    _l4(pkt, o, next_header, 6, key)


def _arp(pkt: bytes, key: list[int]) -> None:
    if len(pkt) < 28:
        return
    if _be(pkt, 0, 2) != 1 or _be(pkt, 2, 2) != 0x0800 or pkt[4] != 6 or pkt[5] != 4:
        return
    opcode = _be(pkt, 6, 2)
    key[K.W_NW] = opcode if opcode <= 255 else 0
    key[K.W_ARP_SHA] = _be(pkt, 8, 6)
    key[K.W_NW_SRC] = _be(pkt, 14, 4)
    key[K.W_ARP_THA] = _be(pkt, 18, 6)
    key[K.W_NW_DST] = _be(pkt, 24, 4)


def extract(frame: bytes, in_port: int) -> tuple[np.ndarray, int]:
    """``(key row uint64[KEY_WORDS], drop reason or 0)`` of one frame received on ``in_port``."""
    key = [0] * K.KEY_WORDS
    key[K.W_IN_PORT] = in_port & 0xFFFFFFFF
    reason = 0
    if len(frame) < 14:
        reason = DROP_RX_RUNT
    else:
        key[K.W_ETH_DST] = _be(frame, 0, 6)
        key[K.W_ETH_SRC] = _be(frame, 6, 6)
        o = 12
        ethertype = _be(frame, o, 2)
        for word in (K.W_VLAN_TCI, K.W_VLAN_TCI2):
            if ethertype not in TPIDS:
                break
            if len(frame) < o + 6:             # TCI and the next ethertype
                reason = DROP_RX_VLAN_TRUNCATED
                break
            key[word] = _be(frame, o + 2, 2) | K.VLAN_CFI | ethertype << 16
            o += 4
            ethertype = _be(frame, o, 2)
        o += 2
        if not reason and ethertype < 0x600:
            llc_snap = frame[o : o + 8]
            if len(llc_snap) == 8 and llc_snap[:6] == b"\xaa\xaa\x03\x00\x00\x00" and _be(llc_snap, 6, 2) >= 0x600:
                ethertype = _be(llc_snap, 6, 2)
                o += 8
            else:
                ethertype = K.ETH_TYPE_NONE
        key[K.W_ETH_TYPE] = ethertype
        if not reason:
            l3 = frame[o:]
            if ethertype == 0x0800:
                _ipv4(l3, key)
            elif ethertype == 0x86DD:
                _ipv6(l3, key)
            elif ethertype in (0x0806, 0x8035):
                _arp(l3, key)
    return np.array(key, dtype=np.uint64), reason
