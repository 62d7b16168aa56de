"""Plain-Python model of ``dpif.actions``: the same programs run on ``bytes``, checksums recomputed
from scratch (incrementally only for the L4 checksum of a fragment or a packet cut short, whose payload is
partial).
Assumes the frames' checksums were right before the edits (tests build them so)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dpif import actions as A
from dpif import key as K
from dpif import meters as DM
from dpif import tunnel as T


def csum(b: bytes) -> int:
    """Ones'-complement checksum (complemented) of ``b``."""
    if len(b) % 2:
        b += b"\0"
    acc = sum(int.from_bytes(b[i : i + 2], "big") for i in range(0, len(b), 2))
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return ~acc & 0xFFFF


def l3_start(f: bytes | bytearray, ethertype: int) -> int:
    """Offset of the L3 header after up to two tags when the frame's ethertype is ``ethertype``, or -1."""
    off = 12
    for _ in range(2):
        if off + 4 > len(f):
            return -1
        if int.from_bytes(f[off : off + 2], "big") not in (A.ETH_VLAN, A.ETH_QINQ):
            break
        off += 4
    if off + 2 > len(f) or int.from_bytes(f[off : off + 2], "big") != ethertype:
        return -1
    return off + 2


def l3_offset(f: bytes | bytearray) -> int:
    """Offset of the IPv4 header, or -1."""
    l3 = l3_start(f, A.ETH_IPV4)
    if l3 < 0 or l3 + 20 > len(f) or f[l3] >> 4 != 4 or (f[l3] & 15) < 5 or l3 + (f[l3] & 15) * 4 > len(f):
        return -1
    return l3


def ip_csum_fix(f: bytearray, l3: int, before: bytes, words: list[int]) -> None:
    """Update the IPv4 header checksum for the header words at ``words`` the edit touched (RFC 1624, word by
    word as the executor and OVS do it: a checksum that was wrong stays as wrong)."""
    c = int.from_bytes(f[l3 + 10 : l3 + 12], "big")
    for p in words:
        o, n = int.from_bytes(before[p : p + 2], "big"), int.from_bytes(f[p : p + 2], "big")
        if o != n:   # an unchanged word leaves the checksum alone
            c = _adj(c, o, n)
    f[l3 + 10 : l3 + 12] = c.to_bytes(2, "big")


def l4_info(f: bytes | bytearray, l3: int) -> tuple[int, int, bool]:
    """(l4 offset, checksum offset or -1, first fragment)."""
    fo = int.from_bytes(f[l3 + 6 : l3 + 8], "big")
    l4 = l3 + (f[l3] & 15) * 4
    if fo & 0x1FFF:
        return l4, -1, False
    if f[l3 + 9] == A.PROTO_TCP and l4 + 18 <= len(f):
        return l4, l4 + 16, bool(fo & 0x2000)
    if f[l3 + 9] == A.PROTO_UDP and l4 + 8 <= len(f):
        return l4, l4 + 6, bool(fo & 0x2000)
    return l4, -1, False


def l4_full(f: bytes | bytearray, l3: int) -> int:
    """The TCP/UDP checksum of an unfragmented datagram, from scratch (UDP: 0 -> 0xFFFF)."""
    tot = int.from_bytes(f[l3 + 2 : l3 + 4], "big")
    l4 = l3 + (f[l3] & 15) * 4
    proto = f[l3 + 9]
    seg = bytearray(f[l4 : l3 + tot])
    at = 16 if proto == A.PROTO_TCP else 6
    seg[at : at + 2] = b"\0\0"
    pseudo = bytes(f[l3 + 12 : l3 + 20]) + bytes([0, proto]) + len(seg).to_bytes(2, "big")
    c = csum(pseudo + bytes(seg))
    return 0xFFFF if proto == A.PROTO_UDP and c == 0 else c


def _adj(c: int, old: int, new: int) -> int:
    acc = (~c & 0xFFFF) + (~old & 0xFFFF) + new
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return ~acc & 0xFFFF


def _put(f: bytearray, at: int, n: int, v: int, m: int) -> None:
    """``n`` bytes at ``at`` = (old & ~m) | (v & m), big-endian."""
    old = int.from_bytes(f[at : at + n], "big")
    f[at : at + n] = ((old & ~m) | (v & m)).to_bytes(n, "big")


def _incremental(c: int, before: bytes, f: bytearray, words: list[int], udp: bool) -> int:
    """Checksum ``c`` adjusted for every 16-bit word at ``words`` that changed from ``before`` to ``f``."""
    if udp and c == 0:
        return 0
    for p in words:
        o, n = int.from_bytes(before[p : p + 2], "big"), int.from_bytes(f[p : p + 2], "big")
        if o != n:
            c = _adj(c, o, n)
            if udp and c == 0:
                c = 0xFFFF
    return c


def set_masked(f: bytearray, w: int, v: int, m: int) -> None:
    """One ``SET_MASKED`` on frame ``f``."""
    if w in (K.W_ETH_DST, K.W_ETH_SRC):
        _put(f, 0 if w == K.W_ETH_DST else 6, 6, v, m)
        return
    if w == K.W_VLAN_TCI:
        if int.from_bytes(f[12:14], "big") in (A.ETH_VLAN, A.ETH_QINQ):
            _put(f, 14, 2, v, m & 0xEFFF)
        return
    l3 = l3_offset(f)
    if l3 >= 0:
        _set_masked_v4(f, l3, w, v, m)
        return
    l3 = l3v6_offset(f)
    if l3 >= 0:
        _set_masked_v6(f, l3, w, v, m)
        return
    l3 = arp_offset(f)
    if l3 >= 0:
        at = {K.W_NW_SRC: (14, 4), K.W_NW_DST: (24, 4), K.W_ARP_SHA: (8, 6), K.W_ARP_THA: (18, 6)}.get(w)
        if at is not None:
            _put(f, l3 + at[0], at[1], v, m)
        elif w == K.W_NW:
            _put(f, l3 + 7, 1, v, m & 0xFF)


def arp_offset(f: bytes | bytearray) -> int:
    """Offset of an Ethernet/IPv4 ARP or RARP header, or -1."""
    for et in (A.ETH_ARP, A.ETH_RARP):
        l3 = l3_start(f, et)
        if l3 >= 0:
            return l3 if l3 + 28 <= len(f) and bytes(f[l3 : l3 + 6]) == b"\0\x01\x08\0\x06\x04" else -1
    return -1


def _set_masked_v4(f: bytearray, l3: int, w: int, v: int, m: int) -> None:
    l4, l4c, first_frag = l4_info(f, l3)
    udp = f[l3 + 9] == A.PROTO_UDP
    old_l4c = int.from_bytes(f[l4c : l4c + 2], "big") if l4c >= 0 else 0
    before = bytes(f)
    if w == K.W_NW:
        tos, ttl = (m >> 8) & 0xFF, (m >> 16) & 0xFF
        f[l3 + 1] = (f[l3 + 1] & ~tos) | ((v >> 8) & tos)
        f[l3 + 8] = (f[l3 + 8] & ~ttl) | ((v >> 16) & ttl)
        ip_csum_fix(f, l3, before, [p for p, mb in ((l3, tos), (l3 + 8, ttl)) if mb])
        return
    if w in (K.W_NW_SRC, K.W_NW_DST):
        at = l3 + 12 if w == K.W_NW_SRC else l3 + 16
        _put(f, at, 4, v, m)
        ip_csum_fix(f, l3, before, [p for p, mw in ((at, m >> 16 & 0xFFFF), (at + 2, m & 0xFFFF)) if mw])
    elif w == K.W_TP:
        if l4c < 0:
            _set_icmp4(f, l3, l4, v, m)
            return
        mm = (m & 0xFFFF) << 16 | (m >> 16) & 0xFFFF        # key: src low; wire: src first
        vv = (v & 0xFFFF) << 16 | (v >> 16) & 0xFFFF
        _put(f, l4, 4, vv, mm)
    else:
        return
    if l4c < 0 or (udp and old_l4c == 0):
        return
    if not first_frag and l3 + int.from_bytes(f[l3 + 2 : l3 + 4], "big") <= len(f):
        f[l4c : l4c + 2] = l4_full(f, l3).to_bytes(2, "big")
        return
    words = list(range(l3 + 12, l3 + 20, 2)) + [l4, l4 + 2]    # first fragment, cut short: incremental
    f[l4c : l4c + 2] = _incremental(old_l4c, before, f, words, udp).to_bytes(2, "big")


def _set_icmp4(f: bytearray, l3: int, l4: int, v: int, m: int) -> None:
    """ICMP type / code (``W_TP`` bits 0..7, 16..23); the ICMP checksum from scratch when the datagram is
    whole in the frame, else incrementally."""
    fo = int.from_bytes(f[l3 + 6 : l3 + 8], "big")
    if f[l3 + 9] != 1 or fo & 0x1FFF or l4 + 8 > len(f):
        return
    before = bytes(f)
    _put(f, l4, 2, (v & 0xFF) << 8 | (v >> 16) & 0xFF, (m & 0xFF) << 8 | (m >> 16) & 0xFF)
    tot = int.from_bytes(f[l3 + 2 : l3 + 4], "big")
    if fo & 0x2000 or l3 + tot > len(f) or l3 + tot < l4 + 8:
        c = _incremental(int.from_bytes(f[l4 + 2 : l4 + 4], "big"), before, f, [l4], False)
    else:
        msg = bytearray(f[l4 : l3 + tot])
        msg[2:4] = b"\0\0"
        c = csum(bytes(msg))
    f[l4 + 2 : l4 + 4] = c.to_bytes(2, "big")


def l3v6_offset(f: bytes | bytearray) -> int:
    """Offset of the IPv6 header, or -1."""
    l3 = l3_start(f, A.ETH_IPV6)
    return l3 if 0 <= l3 and l3 + 40 <= len(f) and f[l3] >> 4 == 6 else -1


def v6_upper(f: bytes | bytearray, l3: int) -> tuple[int, int, bool, bool]:
    """(offset of the upper-layer header or -1, its protocol, a routing header with segments left before
    it, a fragment header before it) of the IPv6 packet at ``l3``."""
    nh, q, routed, frag = f[l3 + 6], l3 + 40, False, False
    while nh in (0, 43, 60, 44):
        if q + 8 > len(f):
            return -1, nh, routed, frag
        if nh == 44:
            if int.from_bytes(f[q + 2 : q + 4], "big") & 0xFFF8:
                return -1, nh, routed, True
            frag, nh, q = True, f[q], q + 8
            continue
        hl = (f[q + 1] + 1) * 8
        if q + hl > len(f):
            return -1, nh, routed, frag
        routed |= nh == 43 and f[q + 3] != 0
        nh, q = f[q], q + hl
    return q, nh, routed, frag


def _set_masked_v6(f: bytearray, l3: int, w: int, v: int, m: int) -> None:
    """IPv6: traffic class / hop limit, addresses, ports, ICMPv6 type / code, ND target and options; the
    upper-layer checksum from scratch when the packet is whole in the frame, else incrementally."""
    if w == K.W_NW:
        first = int.from_bytes(f[l3 : l3 + 4], "big")
        tm = (m >> 8) & 0xFF
        tc = (first >> 20 & 0xFF & ~tm) | ((v >> 8) & tm)
        f[l3 : l3 + 4] = ((first & ~(0xFF << 20)) | tc << 20).to_bytes(4, "big")
        hm = (m >> 16) & 0xFF
        f[l3 + 7] = (f[l3 + 7] & ~hm) | ((v >> 16) & hm)
        return
    l4, nh, routed, frag = v6_upper(f, l3)
    need = {A.PROTO_TCP: (18, 16), A.PROTO_UDP: (8, 6), A.PROTO_ICMPV6: (8, 2)}.get(nh)
    if l4 < 0 or need is None or l4 + need[0] > len(f):
        l4c = -1
    else:
        l4c = l4 + need[1]
    udp = nh == A.PROTO_UDP
    before = bytes(f)
    if K.W_IPV6_SRC <= w < K.W_IPV6_DST + 2:
        _put(f, l3 + 8 + 8 * (w - K.W_IPV6_SRC), 8, v, m)
        if w >= K.W_IPV6_DST and routed:
            return
    elif l4c < 0:
        return
    elif w == K.W_TP and nh == A.PROTO_ICMPV6:
        _put(f, l4, 2, (v & 0xFF) << 8 | (v >> 16) & 0xFF, (m & 0xFF) << 8 | (m >> 16) & 0xFF)
    elif w == K.W_TP:
        _put(f, l4, 4, (v & 0xFFFF) << 16 | (v >> 16) & 0xFFFF, (m & 0xFFFF) << 16 | (m >> 16) & 0xFFFF)
    elif nh != A.PROTO_ICMPV6 or l4 + 24 > len(f) or f[l4 + 1] != 0 or f[l4] not in (135, 136):
        return
    elif w in (K.W_ND_TARGET, K.W_ND_TARGET + 1):
        _put(f, l4 + 8 + 8 * (w - K.W_ND_TARGET), 8, v, m)
    elif w in (K.W_ARP_SHA, K.W_ARP_THA):
        want = 1 if w == K.W_ARP_SHA else 2
        end = min(len(f), l3 + 40 + int.from_bytes(f[l3 + 4 : l3 + 6], "big"))
        q = l4 + 24
        while q + 8 <= end and f[q + 1] and q + f[q + 1] * 8 <= end:
            if f[q] == want and f[q + 1] == 1:
                _put(f, q + 2, 6, v, m)
                break
            q += f[q + 1] * 8
    else:
        return
    if l4c < 0:
        return
    old = int.from_bytes(f[l4c : l4c + 2], "big")
    if udp and old == 0:
        return
    end = l3 + 40 + int.from_bytes(f[l3 + 4 : l3 + 6], "big")
    if frag or routed or end > len(f):     # partial, or a pseudo-header with another destination
        words = list(range(l3 + 8, l3 + 40, 2)) + list(range(l4, len(f) - 1, 2))
        f[l4c : l4c + 2] = _incremental(old, before, f, words, udp).to_bytes(2, "big")
        return
    f[l4c : l4c + 2] = v6_l4_full(f, l3, l4, nh).to_bytes(2, "big")


def v6_l4_full(f: bytes | bytearray, l3: int, l4: int, nh: int) -> int:
    """The TCP/UDP/ICMPv6 checksum of the whole upper-layer packet at ``l4``, from scratch (UDP: 0 -> 0xFFFF)."""
    seg = bytearray(f[l4 : l3 + 40 + int.from_bytes(f[l3 + 4 : l3 + 6], "big")])
    at = {A.PROTO_TCP: 16, A.PROTO_UDP: 6, A.PROTO_ICMPV6: 2}[nh]
    seg[at : at + 2] = b"\0\0"
    pseudo = bytes(f[l3 + 8 : l3 + 40]) + len(seg).to_bytes(4, "big") + bytes([0, 0, 0, nh])
    c = csum(pseudo + bytes(seg))
    return 0xFFFF if nh == A.PROTO_UDP and c == 0 else c


def meter_admit(meters: np.ndarray, slot: int, gen: int, nbytes: int, now_ns: int) -> bool:
    """``dpif.meters.meter_admit`` in plain Python: the frame pays every band of meter ``slot``, refilled
    for the time since the last frame; False when the highest-rate band it exceeds drops it."""
    if not 0 <= slot < len(meters) or int(meters[slot, DM.M_GEN]) != gen:
        return True
    row = meters[slot]
    last = int(row[DM.M_LAST])
    elapsed = max(0, now_ns - last)
    row[DM.M_LAST] = max(last, now_ns)
    row[DM.M_PACKETS] += 1
    row[DM.M_BYTES] += nbytes
    cost = DM.TOKEN_SCALE if int(row[DM.M_FLAGS]) & DM.F_PKTPS else nbytes * 8 * DM.TOKEN_SCALE // 1000
    exceeded = []
    for b in range(min(int(row[DM.M_NBANDS]), DM.MAX_BANDS)):
        o = DM.M_HDR + b * DM.B_WORDS
        rate, cap = int(row[o + DM.B_RATE]), int(row[o + DM.B_CAP])
        tokens = max(int(row[o + DM.B_TOKENS]), min(cap, int(row[o + DM.B_TOKENS]) + elapsed * rate))
        if tokens >= cost:
            tokens -= cost
        else:
            exceeded.append((rate, -b))
        row[o + DM.B_TOKENS] = tokens
    if not exceeded:
        return True
    o = DM.M_HDR - max(exceeded)[1] * DM.B_WORDS
    row[o + DM.B_PACKETS] += 1
    row[o + DM.B_BYTES] += nbytes
    return False


def _mix(h: int, w: int) -> int:
    h = ((h ^ w) * 0x85EBCA6B) & 0xFFFFFFFF
    return h ^ (h >> 13)


def inner_flow(f: bytes | bytearray) -> tuple[int, int]:
    """``dpif.tunnel.inner_flow`` of frame ``f``: (32-bit flow hash, IP TOS or -1)."""
    be = int.from_bytes
    o = 12
    et = be(f[o : o + 2], "big")
    if et in (A.ETH_VLAN, A.ETH_QINQ) and o + 6 <= len(f):
        o += 4
        et = be(f[o : o + 2], "big")
    l3, h = o + 2, 0x2F1D
    if et == A.ETH_IPV4 and l3 + 20 <= len(f) and f[l3] >> 4 == 4:
        tos, proto = f[l3 + 1], f[l3 + 9]
        for w in (be(f[l3 + 12 : l3 + 16], "big"), be(f[l3 + 16 : l3 + 20], "big"), proto):
            h = _mix(h, w)
        l4 = l3 + (f[l3] & 15) * 4
        if proto in (6, 17, 132) and be(f[l3 + 6 : l3 + 8], "big") & 0x3FFF == 0 and l4 + 4 <= len(f):
            h = _mix(h, be(f[l4 : l4 + 4], "big"))
    elif et == A.ETH_IPV6 and l3 + 40 <= len(f) and f[l3] >> 4 == 6:
        tos, proto = (be(f[l3 : l3 + 2], "big") >> 4) & 0xFF, f[l3 + 6]
        for k in range(8):
            h = _mix(h, be(f[l3 + 8 + 4 * k : l3 + 12 + 4 * k], "big"))
        h = _mix(h, proto)
        if proto in (6, 17, 132) and l3 + 44 <= len(f):
            h = _mix(h, be(f[l3 + 40 : l3 + 44], "big"))
    else:
        tos = -1
        for k in range(3):
            h = _mix(h, be(f[4 * k : 4 * k + 4], "big"))
        h = _mix(h, et)
    h ^= h >> 16
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16), tos


def tnl_push(f: bytes | bytearray, head: int, args: list[int], slot_size: int) -> tuple[int, bytearray] | int:
    """``TNL_PUSH`` on frame ``f`` at ``head``: ``(new head, outer frame)``, or the drop reason."""
    hdr = bytearray(T.header_of(args))
    size, flags, mtu = len(hdr), args[T.A_FLAGS], args[T.A_MTU]
    if mtu > 0 and size + len(f) - 14 > mtu:
        return A.DR_TUNNEL_TOO_BIG
    if head >= size:
        head -= size
    elif size + len(f) <= slot_size:
        head = 0
    else:
        return A.DR_NO_ROOM
    hsh, itos = inner_flow(f)
    v6 = bool(flags & T.PF_IPV6)
    g = hdr + bytes(f)
    tos = (be16(g, 14) >> 4) & 0xFF if v6 else g[15]
    if itos >= 0:
        if flags & T.PF_TOS_INHERIT:
            tos = itos & 0xFC
        tos = (tos & 0xFC) | (2 if itos & 3 == 3 else itos & 3)
    if v6:
        first = be16(g, 14) & 0xF00F | tos << 4
        g[14:16] = first.to_bytes(2, "big")
        g[18:20] = (len(g) - 54).to_bytes(2, "big")
        l4 = 54
    else:
        g[15] = tos
        g[16:18] = (len(g) - 14).to_bytes(2, "big")
        g[24:26] = csum(bytes(g[14:34])).to_bytes(2, "big")
        l4 = 34
    if flags & T.PF_KIND == T.TNL_GRE:
        if flags & T.PF_CSUM:
            g[l4 + 4 : l4 + 6] = csum(bytes(g[l4:])).to_bytes(2, "big")
        return head, g
    sport = T.UDP_SRC_MIN + ((hsh * (T.UDP_SRC_MAX - T.UDP_SRC_MIN)) >> 32)
    g[l4 : l4 + 2] = sport.to_bytes(2, "big")
    g[l4 + 4 : l4 + 6] = (len(g) - l4).to_bytes(2, "big")
    if flags & T.PF_CSUM:
        pseudo = bytes(g[22:54]) if v6 else bytes(g[26:34])
        c = csum(pseudo + bytes([0, 17]) + (len(g) - l4).to_bytes(2, "big") + bytes(g[l4:]))
        g[l4 + 6 : l4 + 8] = (c or 0xFFFF).to_bytes(2, "big")
    return head, g


def be16(f: bytes | bytearray, o: int) -> int:
    """The big-endian 16 bits at ``f[o]``."""
    return int.from_bytes(f[o : o + 2], "big")


@dataclass
class RefResult:
    """What the model's burst did."""

    queues: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)  # port -> (head, frame)
    drops: list[int] = field(default_factory=lambda: [0] * A.N_DROP_REASONS)
    copies: int = 0
    normal: list[tuple[int, bytes]] = field(default_factory=list)                   # (head, frame)
    userspace: list[tuple[int, int, int, bytes]] = field(default_factory=list)      # (cookie, max_len, head, frame)


def run_burst(frames: list[tuple[int, bytes, list[int] | None]], slot_size: int, n_ports: int, qcap: int,
              free: int, side_cap: int = 1 << 30, meters: np.ndarray | None = None, now_ns: int = 0) -> RefResult:
    """Run ``(head, frame, program or None)`` in order with ``free`` fresh slots available, charging the meter
    rows ``meters`` (changed in place) at ``now_ns``."""
    res = RefResult()
    for head, frame, prog in frames:
        if prog is None:
            continue
        f = bytearray(frame)
        if head < 0 or len(f) < 14 or head + len(f) > slot_size:
            res.drops[A.DR_BAD_FRAME] += 1
            continue
        queued = False
        outputs = 0
        stopped = False
        metered = False
        skip = 0
        for op, args in A.decode(np.array(prog, dtype=np.int64)):
            if skip > 0:          # the actions a METER over the rate skips
                skip -= 2 + len(args)
                continue
            if op == A.OP_METER:
                if not meter_admit(meters if meters is not None else DM.NO_METERS.copy(), args[0], args[1], len(f),
                                   now_ns):
                    res.drops[A.DR_METER] += 1
                    if not args[2]:
                        stopped = True
                        break
                    metered = True
                    skip = args[2]
            elif op == A.OP_OUTPUT:
                q = res.queues.setdefault(args[0], []) if 0 <= args[0] < n_ports else []
                if not 0 <= args[0] < n_ports:
                    res.drops[A.DR_BAD_PROGRAM] += 1
                elif len(q) >= qcap:
                    res.drops[A.DR_QUEUE_FULL] += 1
                else:
                    q.append((head, bytes(f)))
                    queued = True
                    outputs += 1
            elif op == A.OP_NORMAL:
                if len(res.normal) >= side_cap:
                    res.drops[A.DR_QUEUE_FULL] += 1
                else:
                    res.normal.append((head, bytes(f)))
                    queued = True
                    outputs += 1
            elif op == A.OP_USERSPACE:
                if len(res.userspace) >= side_cap:
                    res.drops[A.DR_CONTROLLER_QUEUE_FULL] += 1
                else:
                    res.userspace.append((args[0], args[1], head, bytes(f)))
                    queued = True
                    outputs += 1
            elif op in (A.OP_SET_MASKED, A.OP_SET_ETH, A.OP_PUSH_VLAN, A.OP_POP_VLAN, A.OP_TNL_PUSH):
                if queued:
                    if free == 0:
                        res.drops[A.DR_POOL_EMPTY] += 1
                        stopped = True
                        break
                    free -= 1
                    res.copies += 1
                    queued = False
                if op == A.OP_SET_MASKED:
                    set_masked(f, *args)
                elif op == A.OP_SET_ETH:
                    f[0:6] = args[0].to_bytes(6, "big")
                    f[6:12] = args[1].to_bytes(6, "big")
                elif op == A.OP_TNL_PUSH:
                    r = tnl_push(f, head, args, slot_size)
                    if isinstance(r, int):
                        res.drops[r] += 1
                        stopped = True
                        break
                    head, f = r
                elif op == A.OP_PUSH_VLAN:
                    if head >= 4:
                        head -= 4
                    elif head + len(f) + 4 > slot_size:
                        res.drops[A.DR_NO_ROOM] += 1
                        stopped = True
                        break
                    f[12:12] = args[0].to_bytes(2, "big") + (args[1] & 0xEFFF).to_bytes(2, "big")
                elif int.from_bytes(f[12:14], "big") in (A.ETH_VLAN, A.ETH_QINQ) and len(f) >= 18:
                    del f[12:16]
                    head += 4
            elif op == A.OP_DROP:
                res.drops[args[0]] += 1
                stopped = True
                break
            else:
                res.drops[A.DR_UNSUPPORTED] += 1
                stopped = True
                break
        if not stopped and outputs == 0 and not metered:
            res.drops[A.DR_NO_OUTPUT] += 1
    return res
