"""Tunnel encapsulation (Geneve, VXLAN, GRE over IPv4 / IPv6): the header model, the ``TNL_PUSH`` action and
the kernel that pushes a header in the headroom; frames NORMAL queued for a tunnel port (``tunnel_handover``).

```
 TunnelHeader (control side: addresses, next hop's MAC, key, options, csum, tos, ttl, df, mtu)
      │ header_bytes(): Ethernet + IPv4/IPv6 + UDP + Geneve/VXLAN (or GRE), lengths and checksums 0
      ▼ tnl_push(): [OP_TNL_PUSH, nw, tnl_port, out_port, flags, size, mtu, header bytes 8 per word...]
 execute_burst ─► push_header(): header copied in front of the frame (META_HEAD moves down), then per frame:
      IPv4 total length + header checksum (IPv6 payload length), outer TOS (tos=inherit: the inner DSCP;
      ECN always from the inner IP, CE sent as ECT(0), as OVS's tnl_port_send), UDP length, UDP source
      port from a hash of the inner flow (OVS's range 32768..61000), UDP checksum when csum or over IPv6
      (else 0: real OVS 3.1 checksums UDP tunnels over IPv6 whatever csum says), GRE checksum when csum
```

The program's later actions apply to the outer frame (OUTPUT to the underlay port, NORMAL, SET_MASKED of
the outer Ethernet). ``TNL_PUSH`` words: ``tnl_port`` (the tunnel's datapath port, shown as ``tnl_port(N)``),
``out_port`` (the underlay port the frame goes to next, shown as ``out_port(M)``; -1: none), ``flags``
(``PF_KIND`` bits: the kind, ``PF_IPV6``, ``PF_CSUM``, ``PF_TOS_INHERIT``), ``size`` (header bytes),
``mtu`` (the underlay's: an outer IP packet larger than it is dropped, ``tunnel_too_big``; 0: no limit),
then the header bytes, byte ``j`` in bits ``8 * (j % 8)`` of word ``j // 8``.

Headroom: the header goes in front of the frame when ``META_HEAD >= size``; else the frame is moved right
(the header at 0) if it fits in the slot; else ``no_room``. The IPv4 ID is 0 and DF is ``df`` (OVS's
userspace tunnels send ID 0).

``tunnel_handover`` mirrors ``dpif.patch.patch_handover``: the frames the L2 switch queued for a tunnel
port are copied into fresh slots (egress VLAN edit applied), the port's header pushed (``hdrs[port]``, the
``TNL_PUSH`` words after ``nw``), received on ``underlay[port]`` in the next round; a port whose ``state``
is not ``TS_READY`` drops them (``TC_NO_ROUTE``, ``TC_NEIGH_UNRESOLVED``). Decapsulation is
``dpif.tunnel_pop``. Tests: ``tests/test_dp_tunnel.py``; benchmark: ``python -m bench tunnel-kernels``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from backends.pool import META_HEAD, META_IN_PORT, META_LEN, slot_alloc, slot_free
from backends.vlan_edit import copy_edit
from classifier.wire import be16, be32

TNL_GENEVE, TNL_VXLAN, TNL_GRE = 1, 2, 3
KIND_NAMES = {TNL_GENEVE: "geneve", TNL_VXLAN: "vxlan", TNL_GRE: "gre"}
#: OVS's OVS_VPORT_TYPE_* (the ``type=`` of a tnl_push header)
VPORT_TYPE = {TNL_GRE: 3, TNL_VXLAN: 4, TNL_GENEVE: 5}
DEFAULT_UDP_PORT = {TNL_GENEVE: 6081, TNL_VXLAN: 4789, TNL_GRE: 0}

# tun_flags (OVS's flow.h FLOW_TNL_F_*)
TF_OAM, TF_DONT_FRAGMENT, TF_CSUM, TF_KEY = 1, 2, 4, 8

# TNL_PUSH flags word
PF_KIND = 0x3
PF_IPV6 = 0x4
PF_CSUM = 0x8
PF_TOS_INHERIT = 0x10

# TNL_PUSH argument words (after op, nw)
A_TNL_PORT, A_OUT_PORT, A_FLAGS, A_SIZE, A_MTU, A_HDR = range(6)
MAX_OPTIONS = 252
MAX_HEADER = 14 + 40 + 8 + 8 + MAX_OPTIONS          # Ethernet + IPv6 + UDP + Geneve + options
HDR_ROW_WORDS = A_HDR + (MAX_HEADER + 7) // 8       # one port's TNL_PUSH words (tunnel_handover's hdrs)

#: OVS's default source port range for UDP tunnels (tnl_udp_port_min / max)
UDP_SRC_MIN, UDP_SRC_MAX = 32768, 61000

# push_header's verdicts (negative: the frame is dropped)
PUSH_NO_ROOM = -1
PUSH_TOO_BIG = -2
PUSH_BAD = -3

# tunnel_handover: a port's state and its count columns
TS_READY, TS_NO_ROUTE, TS_NEIGH_UNRESOLVED = 0, 1, 2
TC_TX_PACKETS = 0    # pushed and handed to the underlay
TC_TX_BYTES = 1      # outer bytes
TC_NO_ROUTE = 2
TC_NEIGH_UNRESOLVED = 3
TC_NO_SLOT = 4       # no free slot for the copy
TC_OVERFLOW = 5      # more frames than one round takes, or a frame that does not fit
TC_TOO_BIG = 6       # larger than the underlay MTU once encapsulated
TC_FIELDS = 7


def _ip_int(ip: int | str, v6: bool) -> int:
    return int(ipaddress.IPv6Address(ip) if v6 else ipaddress.IPv4Address(ip)) if isinstance(ip, str) else ip


@dataclass(frozen=True)
class TunnelHeader:
    """One tunnel's outer headers, as the control side knows them (route, next hop, port options)."""

    kind: int
    eth_dst: int
    eth_src: int
    ipv6: bool
    ip_src: int
    ip_dst: int
    tos: int = 0
    ttl: int = 64
    df: bool = True
    udp_dst: int = 0            # 0: the kind's IANA port
    csum: bool = False          # UDP (IPv4 underlay) or GRE checksum; UDP over IPv6 always has one
    key: int | None = None      # VNI (Geneve / VXLAN, 24 bits) or GRE key (32 bits); None: GRE without a key
    options: bytes = b""        # Geneve TLVs, encoded
    oam: bool = False
    tos_inherit: bool = False
    mtu: int = 1500

    def __post_init__(self) -> None:
        if self.kind not in KIND_NAMES:
            raise ValueError(f"unknown tunnel kind {self.kind}")
        if self.options and self.kind != TNL_GENEVE:
            raise ValueError("options are Geneve's")
        if len(self.options) % 4 or len(self.options) > MAX_OPTIONS:
            raise ValueError(f"Geneve options of {len(self.options)} bytes (a multiple of 4, at most 252)")
        width = 32 if self.kind == TNL_GRE else 24
        if self.key is not None and not 0 <= self.key < 1 << width:
            raise ValueError(f"key {self.key:#x} is wider than {width} bits")
        _critical(self.options)    # well-formed TLVs

    @property
    def port(self) -> int:
        """The UDP destination port (0 for GRE)."""
        return 0 if self.kind == TNL_GRE else (self.udp_dst or DEFAULT_UDP_PORT[self.kind])


def _critical(options: bytes) -> bool:
    """Whether any TLV of ``options`` is critical (type bit 0x80); ValueError when they are malformed."""
    o, crit = 0, False
    while o < len(options):
        if o + 4 > len(options):
            raise ValueError("a Geneve option is cut short")
        n = 4 + (options[o + 3] & 0x1F) * 4
        if o + n > len(options):
            raise ValueError("a Geneve option runs past the options")
        crit |= bool(options[o + 2] & 0x80)
        o += n
    return crit


def geneve_option(opt_class: int, opt_type: int, data: bytes) -> bytes:
    """One Geneve TLV (``data`` a multiple of 4 bytes, at most 124)."""
    if len(data) % 4 or len(data) > 124:
        raise ValueError(f"a Geneve option's data is a multiple of 4 bytes up to 124, not {len(data)}")
    return opt_class.to_bytes(2, "big") + bytes([opt_type & 0xFF, len(data) // 4]) + data


def header_bytes(h: TunnelHeader) -> bytes:
    """The outer headers of ``h`` with lengths, checksums and the UDP source port 0 (the push fills them)."""
    eth = h.eth_dst.to_bytes(6, "big") + h.eth_src.to_bytes(6, "big") + (b"\x86\xdd" if h.ipv6 else b"\x08\x00")
    proto = 47 if h.kind == TNL_GRE else 17
    if h.ipv6:
        ip = ((6 << 28) | (h.tos & 0xFF) << 20).to_bytes(4, "big") + bytes([0, 0, proto, h.ttl & 0xFF]) + \
            h.ip_src.to_bytes(16, "big") + h.ip_dst.to_bytes(16, "big")
    else:
        ip = bytes([0x45, h.tos & 0xFF, 0, 0, 0, 0, 0x40 if h.df else 0, 0, h.ttl & 0xFF, proto, 0, 0]) + \
            h.ip_src.to_bytes(4, "big") + h.ip_dst.to_bytes(4, "big")
    if h.kind == TNL_GRE:
        flags = (0x8000 if h.csum else 0) | (0x2000 if h.key is not None else 0)
        t = flags.to_bytes(2, "big") + b"\x65\x58" + (bytes(4) if h.csum else b"") + \
            (h.key.to_bytes(4, "big") if h.key is not None else b"")
        return eth + ip + t
    udp = bytes(2) + h.port.to_bytes(2, "big") + bytes(4)
    vni = ((h.key or 0) << 8).to_bytes(4, "big")
    if h.kind == TNL_VXLAN:
        return eth + ip + udp + b"\x08\x00\x00\x00" + vni
    b1 = (0x80 if h.oam else 0) | (0x40 if _critical(h.options) else 0)
    return eth + ip + udp + bytes([len(h.options) // 4, b1]) + b"\x65\x58" + vni + h.options


def _s64(x: int) -> int:
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >> 63 else x


def push_words(h: TunnelHeader, tnl_port: int = 0, out_port: int = -1) -> list[int]:
    """The ``TNL_PUSH`` argument words of ``h`` (what ``tnl_push`` wraps, and a row of ``hdrs``)."""
    b = header_bytes(h)
    csum = h.csum or (h.ipv6 and h.kind != TNL_GRE)     # OVS 3.1 checksums every UDP tunnel packet over IPv6
    flags = h.kind | (PF_IPV6 if h.ipv6 else 0) | (PF_CSUM if csum else 0) | (PF_TOS_INHERIT if h.tos_inherit else 0)
    words = [_s64(int.from_bytes(b[i : i + 8], "little")) for i in range(0, len(b), 8)]
    return [tnl_port, out_port, flags, len(b), h.mtu, *words]


def tnl_push(h: TunnelHeader, tnl_port: int = 0, out_port: int = -1) -> list[int]:
    """The flat ``TNL_PUSH`` action of ``h`` for a program (``dpif.actions.encode``)."""
    from dpif.actions import OP_TNL_PUSH
    w = push_words(h, tnl_port, out_port)
    return [OP_TNL_PUSH, len(w), *w]


def header_of(args: list[int]) -> bytes:
    """The header bytes a ``TNL_PUSH``'s arguments hold."""
    size = args[A_SIZE]
    raw = b"".join((w & ((1 << 64) - 1)).to_bytes(8, "little") for w in args[A_HDR:])
    return raw[:size]


def check_args(args: list[int]) -> str:
    """Why ``TNL_PUSH`` arguments are malformed ("" when they are not)."""
    if len(args) < A_HDR:
        return "TNL_PUSH takes at least 5 words"
    kind, size = args[A_FLAGS] & PF_KIND, args[A_SIZE]
    if kind not in KIND_NAMES or args[A_FLAGS] & ~0x1F:
        return f"TNL_PUSH flags {args[A_FLAGS]:#x}"
    least = 14 + (40 if args[A_FLAGS] & PF_IPV6 else 20) + (4 if kind == TNL_GRE else 16)
    if not least <= size <= MAX_HEADER or len(args) != A_HDR + (size + 7) // 8:
        return f"TNL_PUSH header of {size} bytes in {len(args) - A_HDR} words"
    return ""


# ---------------------------------------------------------------- kernels


@intrinsic
def _st64(typingctx, arr, s, o, v):  # noqa: ANN001, ANN202 - a numba intrinsic
    """Store the 8 bytes of ``v`` at ``arr[s, o]`` in memory order (little-endian: byte j = bits 8j), unaligned."""
    sig = types.void(arr, s, o, v)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        aryty = signature.args[0]
        array = context.make_array(aryty)(context, builder, args[0])
        stride0 = cgutils.unpack_tuple(builder, array.strides, aryty.ndim)[0]
        row = context.cast(builder, args[1], signature.args[1], types.intp)
        col = context.cast(builder, args[2], signature.args[2], types.intp)
        ptr = builder.gep(array.data, [builder.add(builder.mul(row, stride0), col)])
        val = context.cast(builder, args[3], signature.args[3], types.int64)
        builder.store(val, builder.bitcast(ptr, ir.IntType(64).as_pointer()), align=1)
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(nogil=True, cache=True, _nrt=False)
def _sum16(data: np.ndarray, s: int, a: int, b: int, acc: int) -> int:
    """``acc`` plus the big-endian 16-bit words of ``data[s, a:b]`` (an odd last byte padded with 0), summed
    32 bits at a time (the folded sum is the same)."""
    k = a
    while k + 4 <= b:
        acc += be32(data, s, k)
        k += 4
    if k + 2 <= b:
        acc += be16(data, s, k)
        k += 2
    if k < b:
        acc += np.int64(data[s, k]) << 8
    return acc


@numba.njit(nogil=True, cache=True, _nrt=False)
def _fold(acc: int) -> int:
    """The complemented ones'-complement checksum of the sum ``acc``."""
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return ~acc & 0xFFFF


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _mix(h: int, w: int) -> int:
    h = ((h ^ w) * 0x85EBCA6B) & 0xFFFFFFFF
    return h ^ (h >> 13)


@numba.njit(nogil=True, cache=True, _nrt=False)
def inner_flow(data: np.ndarray, s: int, head: int, ln: int) -> tuple[int, int]:
    """``(hash, tos)`` of the frame at ``head``: a 32-bit hash of its flow (IP addresses, protocol and ports
    of an IPv4 / IPv6 packet, one VLAN tag skipped; else the MAC addresses and ethertype) and its IP TOS /
    traffic class (-1: not IP). ``dpif.actions_ref.inner_flow`` is the same in Python."""
    end = head + ln
    o = head + 12
    et = be16(data, s, o)
    if (et == 0x8100 or et == 0x88A8) and o + 6 <= end:
        o += 4
        et = be16(data, s, o)
    l3 = o + 2
    h = 0x2F1D
    if et == 0x0800 and l3 + 20 <= end and data[s, l3] >> 4 == 4:
        tos = np.int64(data[s, l3 + 1])
        proto = np.int64(data[s, l3 + 9])
        h = _mix(h, be32(data, s, l3 + 12))
        h = _mix(h, be32(data, s, l3 + 16))
        h = _mix(h, proto)
        l4 = l3 + (data[s, l3] & 15) * 4
        if (proto == 6 or proto == 17 or proto == 132) and be16(data, s, l3 + 6) & 0x3FFF == 0 and l4 + 4 <= end:
            h = _mix(h, be32(data, s, l4))
    elif et == 0x86DD and l3 + 40 <= end and data[s, l3] >> 4 == 6:
        tos = (be16(data, s, l3) >> 4) & 0xFF
        proto = np.int64(data[s, l3 + 6])
        for k in range(8):
            h = _mix(h, be32(data, s, l3 + 8 + 4 * k))
        h = _mix(h, proto)
        if (proto == 6 or proto == 17 or proto == 132) and l3 + 44 <= end:
            h = _mix(h, be32(data, s, l3 + 40))
    else:
        tos = -1
        for k in range(3):
            h = _mix(h, be32(data, s, head + 4 * k))
        h = _mix(h, et)
    h ^= h >> 16
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h, tos


@numba.njit(nogil=True, cache=True, _nrt=False)
def push_header(data: np.ndarray, s: int, head: int, ln: int, words: np.ndarray, a: int) -> int:
    """Push the ``TNL_PUSH`` whose arguments start at ``words[a]`` in front of the frame ``data[s, head:][:ln]``
    and complete it; returns the new head (the new length is ``ln + size``) or ``PUSH_*`` (< 0), the frame
    then left as it was."""
    flags = words[a + A_FLAGS]
    size = words[a + A_SIZE]
    mtu = words[a + A_MTU]
    kind = flags & PF_KIND
    v6 = (flags & PF_IPV6) != 0
    l4 = 54 if v6 else 34
    if kind == 0 or size < l4 + 4 or size > MAX_HEADER or words.shape[0] < a + A_HDR + (size + 7) // 8:
        return PUSH_BAD
    total = size + ln
    if mtu > 0 and total - 14 > mtu:
        return PUSH_TOO_BIG
    slot_size = data.shape[1]
    if head >= size:
        nh = head - size
    elif total <= slot_size:
        for k in range(ln - 1, -1, -1):
            data[s, size + k] = data[s, head + k]
        head = size
        nh = 0
    else:
        return PUSH_NO_ROOM
    hsh, itos = inner_flow(data, s, head, ln)
    w = a + A_HDR
    j = 0
    while j + 8 <= size:
        _st64(data, s, nh + j, words[w + (j >> 3)])
        j += 8
    if j < size:
        v = words[w + (j >> 3)]
        for b in range(size - j):
            data[s, nh + j + b] = (v >> (8 * b)) & 0xFF
    # outer TOS: the configured one (tos=inherit: the inner DSCP), ECN from the inner IP (CE -> ECT(0))
    if v6:
        tos = (be16(data, s, nh + 14) >> 4) & 0xFF
    else:
        tos = np.int64(data[s, nh + 15])
    if itos >= 0:
        if flags & PF_TOS_INHERIT:
            tos = itos & 0xFC
        ecn = itos & 3
        tos = (tos & 0xFC) | (2 if ecn == 3 else ecn)
    if v6:
        data[s, nh + 14] = 0x60 | (tos >> 4)
        data[s, nh + 15] = ((tos & 15) << 4) | (data[s, nh + 15] & 15)
        plen = total - 54
        data[s, nh + 18] = (plen >> 8) & 0xFF
        data[s, nh + 19] = plen & 0xFF
    else:
        data[s, nh + 15] = tos
        tl = total - 14
        data[s, nh + 16] = (tl >> 8) & 0xFF
        data[s, nh + 17] = tl & 0xFF
        data[s, nh + 24] = 0
        data[s, nh + 25] = 0
        c = _fold(_sum16(data, s, nh + 14, nh + 34, 0))
        data[s, nh + 24] = c >> 8
        data[s, nh + 25] = c & 0xFF
    u = nh + l4
    end = nh + total
    if kind == 3:                  # GRE: its checksum over the GRE header and payload
        if flags & PF_CSUM:
            c = _fold(_sum16(data, s, u, end, 0))
            data[s, u + 4] = c >> 8
            data[s, u + 5] = c & 0xFF
        return nh
    sport = UDP_SRC_MIN + ((hsh * (UDP_SRC_MAX - UDP_SRC_MIN)) >> 32)
    data[s, u] = sport >> 8
    data[s, u + 1] = sport & 0xFF
    ulen = total - l4
    data[s, u + 4] = (ulen >> 8) & 0xFF
    data[s, u + 5] = ulen & 0xFF
    data[s, u + 6] = 0
    data[s, u + 7] = 0
    if flags & PF_CSUM:
        if v6:
            acc = _sum16(data, s, nh + 22, nh + 54, 0)
        else:
            acc = _sum16(data, s, nh + 26, nh + 34, 0)
        acc += 17 + ulen
        c = _fold(_sum16(data, s, u, end, acc))
        if c == 0:
            c = 0xFFFF
        data[s, u + 6] = c >> 8
        data[s, u + 7] = c & 0xFF
    return nh


@numba.njit(nogil=True, cache=True, _nrt=False)
def tunnel_handover(data: np.ndarray, meta: np.ndarray, out: np.ndarray, out_start: np.ndarray,
                    tnl_ports: np.ndarray, hdrs: np.ndarray, state: np.ndarray, underlay: np.ndarray,
                    headroom: int, free_stack: np.ndarray, free_top: np.ndarray, dst: np.ndarray,
                    counts: np.ndarray) -> int:
    """Encapsulate the frames queued for each port of ``tnl_ports`` into fresh slots (``dst``, in queue order):
    the frame with its egress VLAN edit at ``headroom``, then ``hdrs[port]``'s header pushed, received on
    ``underlay[port]``; empty those queues. ``counts[port, TC_*]`` adds up what was handed over and dropped.
    Returns the number of slots in ``dst``."""
    n = 0
    cap = dst.shape[0]
    width = data.shape[1]
    for i in range(tnl_ports.shape[0]):
        p = tnl_ports[i]
        a = out_start[0, p]
        c = out_start[1, p]
        out_start[1, p] = 0
        st = state[p]
        row = hdrs[p]
        for k in range(c):
            s = out[0, a + k]
            if st == TS_NO_ROUTE:
                counts[p, TC_NO_ROUTE] += 1
                continue
            if st != TS_READY:
                counts[p, TC_NEIGH_UNRESOLVED] += 1
                continue
            if n >= cap:
                counts[p, TC_OVERFLOW] += 1
                continue
            head = meta[s, META_HEAD]
            ln = meta[s, META_LEN]
            if head < 0 or ln < 14 or head + ln > width or headroom + ln + 4 > width:
                counts[p, TC_OVERFLOW] += 1
                continue
            d = slot_alloc(free_stack, free_top)
            if d < 0:
                counts[p, TC_NO_SLOT] += 1
                continue
            new_len = copy_edit(data[s, head:], ln, out[1, a + k], data[d], headroom)
            nh = push_header(data, d, headroom, new_len, row, 0)
            if nh < 0:
                slot_free(free_stack, free_top, d)
                counts[p, TC_TOO_BIG if nh == PUSH_TOO_BIG else TC_OVERFLOW] += 1
                continue
            total = new_len + row[A_SIZE]
            meta[d, META_LEN] = total
            meta[d, META_HEAD] = nh
            meta[d, META_IN_PORT] = underlay[p]
            dst[n] = d
            n += 1
            counts[p, TC_TX_PACKETS] += 1
            counts[p, TC_TX_BYTES] += total
    return n


class TunnelPorts:
    """``tunnel_handover``'s per-port arrays over ``n_ports`` datapath ports: ``hdrs`` (``int64[n_ports,
    HDR_ROW_WORDS]``), ``state`` (``int8``, ``TS_*``), ``underlay`` (``int32``: the port the outer frame enters),
    ``counts`` (``int64[n_ports, TC_FIELDS]``)."""

    def __init__(self, n_ports: int) -> None:
        self.hdrs = np.zeros((n_ports, HDR_ROW_WORDS), dtype=np.int64)
        self.state = np.full(n_ports, TS_NO_ROUTE, dtype=np.int8)
        self.underlay = np.full(n_ports, -1, dtype=np.int32)
        self.counts = np.zeros((n_ports, TC_FIELDS), dtype=np.int64)

    def set_port(self, port: int, h: TunnelHeader | None, underlay: int = -1, state: int = TS_READY) -> None:
        """Port ``port`` encapsulates with ``h`` into ``underlay``; ``h`` None: no route."""
        self.hdrs[port] = 0
        if h is None:
            self.state[port] = TS_NO_ROUTE
            return
        w = push_words(h, port, underlay)
        self.hdrs[port, : len(w)] = w
        self.underlay[port] = underlay
        self.state[port] = state
