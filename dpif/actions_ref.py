"""Plain-Python model of ``dpif.actions``: the same programs run on ``bytes``, checksums recomputed
from scratch (incrementally only for the L4 checksum of a first fragment, whose payload is partial).
Assumes the frames' checksums were right before the edits (tests build them so)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dpif import actions as A
from dpif import key as K


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


def ip_csum_fix(f: bytearray, l3: int) -> None:
    """Recompute the IPv4 header checksum."""
    ihl = (f[l3] & 15) * 4
    f[l3 + 10 : l3 + 12] = b"\0\0"
    f[l3 + 10 : l3 + 12] = csum(bytes(f[l3 : l3 + ihl])).to_bytes(2, "big")


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


def set_masked(f: bytearray, w: int, v: int, m: int) -> None:
    """One ``SET_MASKED`` on frame ``f``."""
    if w in (K.W_ETH_DST, K.W_ETH_SRC):
        base = 0 if w == K.W_ETH_DST else 6
        old = int.from_bytes(f[base : base + 6], "big")
        f[base : base + 6] = ((old & ~m) | (v & m)).to_bytes(6, "big")
        return
    if w == K.W_VLAN_TCI:
        if int.from_bytes(f[12:14], "big") in (A.ETH_VLAN, A.ETH_QINQ):
            mm = m & 0xEFFF
            old = int.from_bytes(f[14:16], "big")
            f[14:16] = ((old & ~mm) | (v & mm)).to_bytes(2, "big")
        return
    l3 = l3_offset(f)
    if l3 < 0:
        _set_masked_v6(f, w, v, m)
        return
    l4, l4c, first_frag = l4_info(f, l3)
    udp = f[l3 + 9] == A.PROTO_UDP
    old_l4c = int.from_bytes(f[l4c : l4c + 2], "big") if l4c >= 0 else 0
    before = bytes(f)
    if w == K.W_NW:
        tos, ttl = (m >> 8) & 0xFF, (m >> 16) & 0xFF
        f[l3 + 1] = (f[l3 + 1] & ~tos) | ((v >> 8) & tos)
        f[l3 + 8] = (f[l3 + 8] & ~ttl) | ((v >> 16) & ttl)
        ip_csum_fix(f, l3)
        return
    if w in (K.W_NW_SRC, K.W_NW_DST):
        at = l3 + 12 if w == K.W_NW_SRC else l3 + 16
        old = int.from_bytes(f[at : at + 4], "big")
        f[at : at + 4] = ((old & ~m) | (v & m)).to_bytes(4, "big")
        ip_csum_fix(f, l3)
    elif w == K.W_TP:
        if l4c < 0:
            return
        old = int.from_bytes(f[l4 : l4 + 4], "big")
        mm = (m & 0xFFFF) << 16 | (m >> 16) & 0xFFFF        # key: src low; wire: src first
        vv = (v & 0xFFFF) << 16 | (v >> 16) & 0xFFFF
        f[l4 : l4 + 4] = ((old & ~mm) | (vv & mm)).to_bytes(4, "big")
    if l4c < 0 or (udp and old_l4c == 0):
        return
    if not first_frag:
        f[l4c : l4c + 2] = l4_full(f, l3).to_bytes(2, "big")
        return
    c = old_l4c                                          # first fragment: incremental over changed words
    for p in list(range(l3 + 12, l3 + 20, 2)) + [l4, l4 + 2]:
        o, n = int.from_bytes(before[p : p + 2], "big"), int.from_bytes(f[p : p + 2], "big")
        if o != n:
            c = _adj(c, o, n)
            if udp and c == 0:
                c = 0xFFFF
    f[l4c : l4c + 2] = c.to_bytes(2, "big")


def l3v6_offset(f: bytes | bytearray) -> int:
    """Offset of the IPv6 header, or -1."""
    l3 = l3_start(f, A.ETH_IPV6)
    return l3 if 0 <= l3 and l3 + 40 <= len(f) and f[l3] >> 4 == 6 else -1


def _set_masked_v6(f: bytearray, w: int, v: int, m: int) -> None:
    """IPv6: ``W_NW`` traffic class and hop limit; ``W_TP`` TCP/UDP ports right after the fixed header."""
    l3 = l3v6_offset(f)
    if l3 < 0:
        return
    if w == K.W_NW:
        first = int.from_bytes(f[l3 : l3 + 4], "big")
        tm = (m >> 8) & 0xFF
        tc = (first >> 20 & 0xFF & ~tm) | ((v >> 8) & tm)
        f[l3 : l3 + 4] = ((first & ~(0xFF << 20)) | tc << 20).to_bytes(4, "big")
        hm = (m >> 16) & 0xFF
        f[l3 + 7] = (f[l3 + 7] & ~hm) | ((v >> 16) & hm)
        return
    if w != K.W_TP:
        return
    nh, l4 = f[l3 + 6], l3 + 40
    if nh == A.PROTO_TCP and l4 + 18 <= len(f):
        l4c = l4 + 16
    elif nh == A.PROTO_UDP and l4 + 8 <= len(f):
        l4c = l4 + 6
    else:
        return
    c = int.from_bytes(f[l4c : l4c + 2], "big")
    for half, at in ((0, l4), (1, l4 + 2)):
        mw = (m >> (16 * half)) & 0xFFFF
        if not mw:
            continue
        old = int.from_bytes(f[at : at + 2], "big")
        new = (old & ~mw) | ((v >> (16 * half)) & mw)
        f[at : at + 2] = new.to_bytes(2, "big")
        if nh == A.PROTO_UDP and c == 0:
            continue
        c = _adj(c, old, new)
        if nh == A.PROTO_UDP and c == 0:
            c = 0xFFFF
    f[l4c : l4c + 2] = c.to_bytes(2, "big")


@dataclass
class RefResult:
    """What the model's burst did."""

    queues: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)  # port -> (head, frame)
    drops: list[int] = field(default_factory=lambda: [0] * A.N_DROP_REASONS)
    copies: int = 0
    normal: list[tuple[int, bytes]] = field(default_factory=list)                   # (head, frame)
    userspace: list[tuple[int, int, int, bytes]] = field(default_factory=list)      # (cookie, max_len, head, frame)


def run_burst(frames: list[tuple[int, bytes, list[int] | None]], slot_size: int, n_ports: int, qcap: int,
              free: int, side_cap: int = 1 << 30) -> RefResult:
    """Run ``(head, frame, program or None)`` in order with ``free`` fresh slots available."""
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
        for op, args in A.decode(np.array(prog, dtype=np.int64)):
            if op == A.OP_OUTPUT:
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
            elif op in (A.OP_SET_MASKED, A.OP_SET_ETH, A.OP_PUSH_VLAN, A.OP_POP_VLAN):
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
        if not stopped and outputs == 0:
            res.drops[A.DR_NO_OUTPUT] += 1
    return res
