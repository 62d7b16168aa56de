"""Flat datapath actions: the program a megaflow runs on each frame, and its numba executor.

Encoding
--------

A program is one ``int64`` array, a sequence of actions ``[op, nwords, args...]`` where ``nwords``
is the number of argument words (the next action starts at ``pc + 2 + nwords``). An empty program
drops the frame (counted as ``no_output``). Ops (``OP_*``), with their arguments:

* ``OUTPUT(port)``: append the frame to ``port``'s queue (dense datapath port number).
* ``SET_MASKED(word, value, mask)``: ``field = (field & ~mask) | (value & mask)`` where ``word`` is a
  key word (``dpif.key.W_*``) and value/mask are in that word's key form. Supported words and bits
  (``SET_BITS``): ``W_ETH_DST``/``W_ETH_SRC`` (48), ``W_VLAN_TCI`` (VID and PCP of the outer tag,
  ``0xEFFF``; no-op on an untagged frame), ``W_NW_SRC``/``W_NW_DST`` (32), ``W_NW`` tos (bits 8..15)
  and ttl (bits 16..23), ``W_TP`` src (bits 0..15) and dst (bits 16..31) of TCP/UDP. IPv4 edits fix
  the IPv4 header checksum and, when the frame carries the L4 header (not a later fragment), the
  TCP/UDP checksum (RFC 1624, incremental; a UDP checksum of 0 stays 0); ICMP gets only the IP header
  fix. On IPv6 (no extension header before TCP/UDP), ``W_NW`` tos is the traffic class and ttl the hop
  limit (no header checksum), and ``W_TP`` rewrites the TCP/UDP ports with the L4 checksum fixed. An
  IPv4/IPv6/L4 edit on a frame without that header is a no-op.
* ``SET_ETH(dst, src)``: both MAC addresses (what a routing step writes), one action.
* ``PUSH_VLAN(tpid, tci)``: a new outer tag; ``tci`` in key form (``VID | 0x1000 | PCP << 13``),
  written with DEI 0.
* ``POP_VLAN()``: remove the outer 802.1Q/802.1ad tag (no-op when untagged).
* ``DROP(reason)``: stop here and count ``reason`` (an index into ``DROP_REASONS``).
* ``NORMAL(bridge, in_port)``: hand the frame to bridge ``bridge``'s L2 learning switch (the caller runs
  it) as received on ``in_port`` (-1: the port that received it; after a patch port the bridge's
  ingress is the patch port's peer).
* ``USERSPACE(cookie, max_len)``: a copy to the controllers; ``cookie`` names the translator's
  upcall context (``xlate.translate.UpcallCookies``).
* Reserved, decoded but not executed yet (stop and count ``unsupported_action``): ``TNL_PUSH``,
  ``TNL_POP``, ``CT``, ``RECIRC``, ``METER``, ``HASH`` (any arguments).

A frame whose program stops (``DROP``, a reserved op, an edit that cannot be done) keeps the outputs
it already made. Build programs with ``encode([output(2), set_field("eth_dst", mac), ...])``; print
them with ``format_actions`` (OVS ``dpctl`` style).

Headroom
--------

A frame is ``data[slot, meta[slot, META_HEAD] : META_HEAD + meta[slot, META_LEN]]``. ``META_HEAD``
comes from ``backends/pool.py``. ``PUSH_VLAN`` moves the 12 MAC bytes 4
bytes left into the headroom when head >= 4, else moves the rest of the frame 4 bytes right if it
fits in the slot, else drops (``no_room``). ``POP_VLAN`` moves the MACs 4 bytes right. Nothing is
written outside the slot.

Executor
--------

``execute_burst(data, meta, burst, n, prog_index, progs, out, out_start, drops, free_stack,
free_top, extra, side, side_n) -> int``:

* ``prog_index``: ``int64[>= n, 2]``, the program of frame ``i`` is ``progs[o : o + length]`` with
  ``(o, length) = prog_index[i]`` (a megaflow's ``E_ACT``, ``E_ACT_LEN``); ``o < 0`` skips the frame
  (a miss held for upcall).
* ``out``/``out_start``: the per-port queue layout of ``classifier.l2switch.switch_burst`` (reset
  here): port ``p``'s queue is ``out[:, out_start[0, p] : out_start[0, p] + out_start[1, p]]``, row 0
  slots, row 1 the egress VLAN edit (always ``-1``: the program did the edits).
* Copy on output: once a frame is queued, its slot is never written again. An edit after an output
  first copies the frame into a fresh pool slot (``slot_alloc``) and goes on there. Fresh slots are
  written to ``extra`` and their number returned: the caller frees ``extra[:k]`` after transmit,
  like the burst itself. No fresh slot (pool empty or ``extra`` full) drops the frame's remaining
  program (``pool_empty``).
* ``NORMAL`` and ``USERSPACE`` are outputs too: the slot goes to a side list (``side[SIDE_NORMAL]``
  with ``side[SIDE_NORMAL_BRIDGE]`` and ``side[SIDE_NORMAL_IN]``;
  ``side[SIDE_UP_*]`` with the upcall cookie and max_len), counts in ``side_n[N_NORMAL]`` /
  ``side_n[N_USERSPACE]``; the caller runs the NORMAL list through the L2 switch and copies the
  USERSPACE frames for the controllers before the slots go back to the pool.
* ``drops``: ``int64[ports + 1, N_DROP_REASONS]`` counts by ingress port (``meta[slot, META_IN_PORT]``;
  the last row for frames of no port, e.g. a packet-out) and ``DROP_REASONS``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numba
import numpy as np

from backends.pool import META_HEAD, META_IN_PORT, META_LEN, slot_alloc
from dpif import key as K

OP_OUTPUT = 1
OP_SET_MASKED = 2
OP_PUSH_VLAN = 3
OP_POP_VLAN = 4
OP_DROP = 5
OP_SET_ETH = 6      # both MAC addresses at once (a router's rewrite): one action, twelve bytes
# reserved
OP_TNL_PUSH = 16
OP_TNL_POP = 17
OP_CT = 18
OP_RECIRC = 19
OP_METER = 20
OP_USERSPACE = 21
OP_NORMAL = 22
OP_HASH = 23

OP_ARGS = {OP_OUTPUT: 1, OP_SET_MASKED: 3, OP_PUSH_VLAN: 2, OP_POP_VLAN: 0, OP_DROP: 1, OP_NORMAL: 2,
           OP_USERSPACE: 2, OP_SET_ETH: 2}
RESERVED_OPS = {
    OP_TNL_PUSH: "tnl_push", OP_TNL_POP: "tnl_pop", OP_CT: "ct", OP_RECIRC: "recirc",
    OP_METER: "meter", OP_HASH: "hash",
}

DROP_REASONS = (
    "no_output",           # the program ended without any output
    "explicit_drop",       # DROP
    "unsupported_action",  # a reserved op
    "no_room",             # PUSH_VLAN: the frame would not fit in its slot
    "pool_empty",          # no fresh slot for the copy an edit after an output needs
    "queue_full",          # one OUTPUT lost: the port's queue is full
    "bad_program",         # malformed program (truncated action, unknown op, port out of range)
    "bad_frame",           # head/length outside the slot, or shorter than an Ethernet header
    "table_miss",          # DROP from the translator: the pipeline ended on a table without a matching flow
    "rx_invalid",          # not looked up: a runt or a truncated VLAN tag (the key extraction's verdict)
    "controller_queue_full",  # USERSPACE: the packet-in list of the burst is full
    "conntrack_unavailable",  # DROP from the translator: the walk reached ct (no connection tracker yet)
)
DR_NO_OUTPUT, DR_EXPLICIT, DR_UNSUPPORTED, DR_NO_ROOM, DR_POOL_EMPTY, DR_QUEUE_FULL, DR_BAD_PROGRAM, \
    DR_BAD_FRAME, DR_TABLE_MISS, DR_RX_INVALID, DR_CONTROLLER_QUEUE_FULL, DR_CONNTRACK = range(len(DROP_REASONS))

# side lists execute_burst fills besides the port queues: int32[SIDE_ROWS, cap], counts in side_n[2]
SIDE_NORMAL = 0        # slots for NORMAL (the caller runs them through the L2 switch)
SIDE_UP_SLOT = 1       # USERSPACE: slot
SIDE_UP_COOKIE = 2     # USERSPACE: the translator's upcall cookie
SIDE_UP_MAX_LEN = 3    # USERSPACE: bytes of the frame the controllers want
SIDE_NORMAL_BRIDGE = 4  # NORMAL: the bridge whose L2 switch takes the frame
SIDE_NORMAL_IN = 5     # NORMAL: the frame's ingress port for that bridge
SIDE_ROWS = 6
N_NORMAL, N_USERSPACE = 0, 1
N_DROP_REASONS = len(DROP_REASONS)

# SET_MASKED: key word -> bits that may be set
SET_BITS = {
    K.W_ETH_DST: 0xFFFF_FFFF_FFFF,
    K.W_ETH_SRC: 0xFFFF_FFFF_FFFF,
    K.W_VLAN_TCI: 0xEFFF,
    K.W_NW_SRC: 0xFFFF_FFFF,
    K.W_NW_DST: 0xFFFF_FFFF,
    K.W_NW: 0xFFFF00,
    K.W_TP: 0xFFFF_FFFF,
}

# set_field names -> (word, shift, width)
SET_FIELDS: dict[str, tuple[int, int, int]] = {
    "eth_dst": (K.W_ETH_DST, 0, 48),
    "eth_src": (K.W_ETH_SRC, 0, 48),
    "vlan_vid": (K.W_VLAN_TCI, 0, 12),
    "vlan_pcp": (K.W_VLAN_TCI, 13, 3),
    "nw_src": (K.W_NW_SRC, 0, 32),
    "nw_dst": (K.W_NW_DST, 0, 32),
    "nw_tos": (K.W_NW, 8, 8),
    "nw_ecn": (K.W_NW, 8, 2),
    "nw_dscp": (K.W_NW, 10, 6),
    "nw_ttl": (K.W_NW, 16, 8),
    "tp_src": (K.W_TP, 0, 16),
    "tp_dst": (K.W_TP, 16, 16),
}

ETH_VLAN = 0x8100
ETH_QINQ = 0x88A8
ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
PROTO_TCP = 6
PROTO_UDP = 17


# ---------------------------------------------------------------- building and printing programs


def output(port: int) -> list[int]:
    """``OUTPUT(port)``."""
    return [OP_OUTPUT, 1, port]


def set_eth(dst: int, src: int) -> list[int]:
    """``SET_ETH(dst, src)``: both MAC addresses."""
    return [OP_SET_ETH, 2, dst & 0xFFFF_FFFF_FFFF, src & 0xFFFF_FFFF_FFFF]


def set_masked(word: int, value: int, mask: int) -> list[int]:
    """``SET_MASKED(word, value, mask)`` on a key word (``SET_BITS``)."""
    return [OP_SET_MASKED, 3, word, value & mask, mask]


def set_field(name: str, value: int, mask: int | None = None) -> list[int]:
    """``SET_MASKED`` of one named field (``SET_FIELDS``), all its bits unless ``mask`` is given."""
    word, shift, width = SET_FIELDS[name]
    full = (1 << width) - 1
    m = full if mask is None else mask & full
    if not 0 <= value <= full:
        raise ValueError(f"{name}={value:#x} is wider than {width} bits")
    return set_masked(word, value << shift, m << shift)


def push_vlan(vid: int, pcp: int = 0, tpid: int = ETH_VLAN) -> list[int]:
    """``PUSH_VLAN(tpid, tci)``."""
    return [OP_PUSH_VLAN, 2, tpid, (vid & 0xFFF) | K.VLAN_CFI | (pcp & 7) << 13]


def pop_vlan() -> list[int]:
    """``POP_VLAN``."""
    return [OP_POP_VLAN, 0]


def drop(reason: int = DR_EXPLICIT) -> list[int]:
    """``DROP(reason)``."""
    return [OP_DROP, 1, reason]


def normal(bridge: int = 0, in_port: int = -1) -> list[int]:
    """``NORMAL(bridge, in_port)``: bridge ``bridge``'s L2 learning switch decides, for a frame received on
    ``in_port`` (-1: the port that received it)."""
    return [OP_NORMAL, 2, bridge, in_port]


def userspace(cookie: int, max_len: int) -> list[int]:
    """``USERSPACE(cookie, max_len)``: a copy to the controllers (packet-in)."""
    return [OP_USERSPACE, 2, cookie, max_len]


def reserved(op: int, *args: int) -> list[int]:
    """A reserved op (decoded, not executed yet)."""
    return [op, len(args), *args]


def decode(prog: Sequence[int] | np.ndarray) -> list[tuple[int, list[int]]]:
    """The actions of ``prog`` as ``(op, args)``; ``ValueError`` when malformed."""
    words = [int(x) for x in prog]
    acts: list[tuple[int, list[int]]] = []
    pc = 0
    while pc < len(words):
        if pc + 2 > len(words):
            raise ValueError(f"truncated action at word {pc}")
        op, nw = words[pc], words[pc + 1]
        if nw < 0 or pc + 2 + nw > len(words):
            raise ValueError(f"action at word {pc} runs past the end")
        args = words[pc + 2 : pc + 2 + nw]
        if op in OP_ARGS:
            if nw != OP_ARGS[op]:
                raise ValueError(f"op {op} takes {OP_ARGS[op]} words, got {nw}")
            if op == OP_SET_MASKED:
                w, v, m = args
                if w not in SET_BITS or m & ~SET_BITS[w] or v & ~m:
                    raise ValueError(f"bad SET_MASKED word {w} value {v:#x} mask {m:#x}")
            if op == OP_DROP and not 0 <= args[0] < N_DROP_REASONS:
                raise ValueError(f"unknown drop reason {args[0]}")
        elif op not in RESERVED_OPS:
            raise ValueError(f"unknown op {op}")
        acts.append((op, args))
        pc += 2 + nw
    return acts


def encode(actions: Iterable[Sequence[int]]) -> np.ndarray:
    """The ``int64`` program of ``actions`` (each from ``output``, ``set_field``, ...), validated."""
    prog = np.array([int(w) for a in actions for w in a], dtype=np.int64)
    decode(prog)
    return prog


def _mac(v: int) -> str:
    return ":".join(f"{(v >> (40 - 8 * i)) & 0xFF:02x}" for i in range(6))


def _ip(v: int) -> str:
    return ".".join(str((v >> (24 - 8 * i)) & 0xFF) for i in range(4))


def _sub(name: str, v: int, m: int, full: int, fmt: object = str) -> str:
    s = f"{name}={fmt(v)}"  # type: ignore[operator]
    return s if m == full else f"{s}/{fmt(m)}"  # type: ignore[operator]


def _format_set(w: int, v: int, m: int) -> str:
    if w in (K.W_ETH_DST, K.W_ETH_SRC):
        name = "dst" if w == K.W_ETH_DST else "src"
        return f"set(eth({_sub(name, v, m, 0xFFFF_FFFF_FFFF, _mac)}))"
    if w in (K.W_NW_SRC, K.W_NW_DST):
        name = "src" if w == K.W_NW_SRC else "dst"
        return f"set(ipv4({_sub(name, v, m, 0xFFFF_FFFF, _ip)}))"
    parts: list[str] = []
    if w == K.W_VLAN_TCI:
        subs = (("vid", 0, 0xFFF), ("pcp", 13, 7))
        kind = "vlan"
    elif w == K.W_NW:
        subs = (("tos", 8, 0xFF), ("ttl", 16, 0xFF))
        kind = "ipv4"
    else:
        subs = (("src", 0, 0xFFFF), ("dst", 16, 0xFFFF))
        kind = "tp"
    for name, shift, full in subs:
        fm = (m >> shift) & full
        if fm:
            parts.append(_sub(name, (v >> shift) & full, fm, full, hex if fm != full else str))
    return f"set({kind}({','.join(parts)}))"


def format_actions(prog: Sequence[int] | np.ndarray) -> str:
    """``prog`` in OVS ``dpctl`` style, e.g. ``set(eth(dst=02:00:00:00:00:01)),push_vlan(vid=10,pcp=0),2``."""
    out: list[str] = []
    for op, args in decode(prog):
        if op == OP_OUTPUT:
            out.append(str(args[0]))
        elif op == OP_SET_MASKED:
            out.append(_format_set(*args))
        elif op == OP_SET_ETH:
            out.append(f"set(eth(src={_mac(args[1])},dst={_mac(args[0])}))")
        elif op == OP_PUSH_VLAN:
            tpid, tci = args
            t = "" if tpid == ETH_VLAN else f"tpid={tpid:#x},"
            out.append(f"push_vlan({t}vid={tci & 0xFFF},pcp={tci >> 13 & 7})")
        elif op == OP_POP_VLAN:
            out.append("pop_vlan")
        elif op == OP_DROP:
            out.append("drop" if args[0] == DR_EXPLICIT else f"drop({DROP_REASONS[args[0]]})")
        elif op == OP_NORMAL:
            out.append("normal" if args[1] < 0 else f"normal(bridge={args[0]},in_port={args[1]})")
        elif op == OP_USERSPACE:
            out.append(f"userspace(controller(cookie={args[0]},max_len={args[1]}))")
        else:
            name = RESERVED_OPS[op]
            out.append(f"{name}({','.join(hex(a) for a in args)})" if args else name)
    return ",".join(out) if out else "drop"


# ---------------------------------------------------------------- kernel helpers


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _ld16(data: np.ndarray, s: int, off: int) -> int:
    return (np.int64(data[s, off]) << 8) | np.int64(data[s, off + 1])


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _st16(data: np.ndarray, s: int, off: int, v: int) -> None:
    data[s, off] = (v >> 8) & 0xFF
    data[s, off + 1] = v & 0xFF


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _csum_adj(csum: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3: the checksum after a 16-bit word changes from ``old`` to ``new``."""
    acc = (~csum & 0xFFFF) + (~old & 0xFFFF) + (new & 0xFFFF)
    acc = (acc & 0xFFFF) + (acc >> 16)
    acc = (acc & 0xFFFF) + (acc >> 16)
    return ~acc & 0xFFFF


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _l3_start(data: np.ndarray, s: int, head: int, end: int, ethertype: int) -> int:
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


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _l3_offset(data: np.ndarray, s: int, head: int, end: int) -> int:
    """Offset of the IPv4 header (after up to two tags), or -1 when the frame is not IPv4."""
    l3 = _l3_start(data, s, head, end, ETH_IPV4)
    if l3 < 0 or l3 + 20 > end:
        return -1
    vi = np.int64(data[s, l3])
    if vi >> 4 != 4 or (vi & 15) < 5 or l3 + (vi & 15) * 4 > end:
        return -1
    return l3


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _l3v6_offset(data: np.ndarray, s: int, head: int, end: int) -> int:
    """Offset of the IPv6 header (after up to two tags), or -1 when the frame is not IPv6."""
    l3 = _l3_start(data, s, head, end, ETH_IPV6)
    if l3 < 0 or l3 + 40 > end or np.int64(data[s, l3]) >> 4 != 6:
        return -1
    return l3


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _set_masked_v6(data: np.ndarray, s: int, l3: int, end: int, w: int, v: int, m: int) -> None:
    """``SET_MASKED`` of ``W_NW`` (traffic class, hop limit) or ``W_TP`` (TCP/UDP ports) on an IPv6 frame."""
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
    if w == K.W_TP:
        nh = data[s, l3 + 6]
        l4 = l3 + 40
        if nh == PROTO_TCP and l4 + 18 <= end:
            l4c = l4 + 16
        elif nh == PROTO_UDP and l4 + 8 <= end:
            l4c = l4 + 6
        else:
            return
        udp = nh == PROTO_UDP
        _set_ports(data, s, l4, l4c, v, m, udp)


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
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


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
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


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _fix16(data: np.ndarray, s: int, at: int, old: int, new: int, udp: bool) -> None:
    """Adjust the checksum at ``at`` for a 16-bit word ``old -> new`` (UDP: 0 stays 0, 0 becomes 0xFFFF)."""
    c = _ld16(data, s, at)
    if udp and c == 0:
        return
    c = _csum_adj(c, old, new)
    if udp and c == 0:
        c = 0xFFFF
    _st16(data, s, at, c)


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _set_masked(data: np.ndarray, s: int, head: int, end: int, w: int, v: int, m: int) -> None:
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
        for k in range(6):
            sh = 40 - 8 * k
            mb = (m >> sh) & 0xFF
            if mb:
                data[s, base + k] = (np.int64(data[s, base + k]) & ~mb) | ((v >> sh) & mb)
        return
    if w == K.W_VLAN_TCI:
        et = _ld16(data, s, head + 12)
        if (et == ETH_VLAN or et == ETH_QINQ) and head + 16 <= end:
            mm = m & 0xEFFF
            old = _ld16(data, s, head + 14)
            _st16(data, s, head + 14, (old & ~mm) | (v & mm))
        return
    l3 = _l3_offset(data, s, head, end)
    if l3 < 0:
        l3 = _l3v6_offset(data, s, head, end)
        if l3 >= 0:
            _set_masked_v6(data, s, l3, end, w, v, m)
        return
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
        l4c = _l4_csum_offset(data, s, l3, end)
        if l4c < 0:
            return
        l4 = l3 + (np.int64(data[s, l3]) & 15) * 4
        udp = data[s, l3 + 9] == PROTO_UDP
        _set_ports(data, s, l4, l4c, v, m, udp)


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _enqueue(out: np.ndarray, out_start: np.ndarray, qcap: int, p: int, slot: int) -> bool:
    c = out_start[1, p]
    if c >= qcap:
        return False
    pos = out_start[0, p] + c
    out[0, pos] = slot
    out[1, pos] = -1
    out_start[1, p] = c + 1
    return True


@numba.njit(nogil=True, cache=True, _nrt=False)
def execute_burst(
    data: np.ndarray,
    meta: np.ndarray,
    burst: np.ndarray,
    n: int,
    prog_index: np.ndarray,
    progs: np.ndarray,
    out: np.ndarray,
    out_start: np.ndarray,
    drops: np.ndarray,
    free_stack: np.ndarray,
    free_top: np.ndarray,
    extra: np.ndarray,
    side: np.ndarray,
    side_n: np.ndarray,
) -> int:
    """Run each frame's program over ``burst[:n]``, filling the per-port queues and the NORMAL and
    USERSPACE lists (``side``, counts in ``side_n``); returns the number of fresh slots written to
    ``extra`` (the caller frees them after transmit). ``drops[in_port, reason]`` counts by ingress
    port (the last row for frames of no port)."""
    n_ports = out_start.shape[1] - 1
    qcap = out.shape[1] // n_ports if n_ports > 0 else 0
    for p in range(n_ports):
        out_start[0, p] = p * qcap
        out_start[1, p] = 0
    out_start[0, n_ports] = n_ports * qcap
    out_start[1, n_ports] = 0
    slot_size = data.shape[1]
    n_prog = progs.shape[0]
    n_extra = 0
    side_n[N_NORMAL] = 0
    side_n[N_USERSPACE] = 0
    side_cap = side.shape[1]
    last_row = drops.shape[0] - 1
    for i in range(n):
        pc = prog_index[i, 0]
        if pc < 0:
            continue
        end_pc = min(pc + prog_index[i, 1], n_prog)
        s = burst[i]
        ip = np.int64(meta[s, META_IN_PORT])
        dr = drops[ip if 0 <= ip < last_row else last_row]
        head = np.int64(meta[s, META_HEAD])
        ln = np.int64(meta[s, META_LEN])
        if head < 0 or ln < 14 or head + ln > slot_size:
            dr[DR_BAD_FRAME] += 1
            continue
        if end_pc - pc == 3 and progs[pc] == OP_OUTPUT and progs[pc + 1] == 1:   # the common program
            port = progs[pc + 2]
            if port < 0 or port >= n_ports:
                dr[DR_BAD_PROGRAM] += 1
                dr[DR_NO_OUTPUT] += 1
            elif not _enqueue(out, out_start, qcap, port, s):
                dr[DR_QUEUE_FULL] += 1
                dr[DR_NO_OUTPUT] += 1
            continue
        queued = False
        outputs = 0
        stopped = False
        while pc < end_pc:
            if pc + 2 > end_pc:
                dr[DR_BAD_PROGRAM] += 1
                stopped = True
                break
            op = progs[pc]
            nw = progs[pc + 1]
            nxt = pc + 2 + nw
            need = 0
            if op == OP_OUTPUT or op == OP_DROP:
                need = 1
            elif op == OP_USERSPACE or op == OP_NORMAL or op == OP_SET_ETH:
                need = 2
            elif op == OP_SET_MASKED:
                need = 3
            elif op == OP_PUSH_VLAN:
                need = 2
            if nxt > end_pc or nw < need:
                dr[DR_BAD_PROGRAM] += 1
                stopped = True
                break
            if op == OP_OUTPUT:
                port = progs[pc + 2]
                if port < 0 or port >= n_ports:
                    dr[DR_BAD_PROGRAM] += 1
                elif _enqueue(out, out_start, qcap, port, s):
                    queued = True
                    outputs += 1
                else:
                    dr[DR_QUEUE_FULL] += 1
            elif op == OP_NORMAL or op == OP_USERSPACE:
                if op == OP_NORMAL:
                    c = side_n[N_NORMAL]
                    if c < side_cap:
                        side[SIDE_NORMAL, c] = s
                        side[SIDE_NORMAL_BRIDGE, c] = progs[pc + 2]
                        side[SIDE_NORMAL_IN, c] = ip if progs[pc + 3] < 0 else progs[pc + 3]
                        side_n[N_NORMAL] = c + 1
                        queued = True
                        outputs += 1
                    else:
                        dr[DR_QUEUE_FULL] += 1
                else:
                    c = side_n[N_USERSPACE]
                    if c < side_cap:
                        side[SIDE_UP_SLOT, c] = s
                        side[SIDE_UP_COOKIE, c] = progs[pc + 2]
                        side[SIDE_UP_MAX_LEN, c] = progs[pc + 3]
                        side_n[N_USERSPACE] = c + 1
                        queued = True
                        outputs += 1
                    else:
                        dr[DR_CONTROLLER_QUEUE_FULL] += 1
            elif op == OP_SET_MASKED or op == OP_SET_ETH or op == OP_PUSH_VLAN or op == OP_POP_VLAN:
                if queued:
                    d = -1
                    if n_extra < extra.shape[0]:
                        d = slot_alloc(free_stack, free_top)
                    if d < 0:
                        dr[DR_POOL_EMPTY] += 1
                        stopped = True
                        break
                    for k in range(head, head + ln):
                        data[d, k] = data[s, k]
                    for k in range(meta.shape[1]):
                        meta[d, k] = meta[s, k]
                    extra[n_extra] = d
                    n_extra += 1
                    s = d
                    queued = False
                if op == OP_SET_MASKED:
                    _set_masked(data, s, head, head + ln, progs[pc + 2], progs[pc + 3], progs[pc + 4])
                elif op == OP_SET_ETH:
                    _set_masked(data, s, head, head + ln, K.W_ETH_DST, progs[pc + 2], 0xFFFF_FFFF_FFFF)
                    _set_masked(data, s, head, head + ln, K.W_ETH_SRC, progs[pc + 3], 0xFFFF_FFFF_FFFF)
                elif op == OP_PUSH_VLAN:
                    if head >= 4:
                        for k in range(head, head + 12):
                            data[s, k - 4] = data[s, k]
                        head -= 4
                    elif head + ln + 4 <= slot_size:
                        for k in range(head + ln - 1, head + 11, -1):
                            data[s, k + 4] = data[s, k]
                    else:
                        dr[DR_NO_ROOM] += 1
                        stopped = True
                        break
                    _st16(data, s, head + 12, progs[pc + 2])
                    _st16(data, s, head + 14, progs[pc + 3] & 0xEFFF)
                    ln += 4
                    meta[s, META_HEAD] = head
                    meta[s, META_LEN] = ln
                else:
                    et = _ld16(data, s, head + 12)
                    if (et == ETH_VLAN or et == ETH_QINQ) and ln >= 18:
                        for k in range(head + 11, head - 1, -1):
                            data[s, k + 4] = data[s, k]
                        head += 4
                        ln -= 4
                        meta[s, META_HEAD] = head
                        meta[s, META_LEN] = ln
            elif op == OP_DROP:
                r = progs[pc + 2]
                dr[r if 0 <= r < N_DROP_REASONS else DR_BAD_PROGRAM] += 1
                stopped = True
                break
            elif OP_TNL_PUSH <= op <= OP_HASH:
                dr[DR_UNSUPPORTED] += 1
                stopped = True
                break
            else:
                dr[DR_BAD_PROGRAM] += 1
                stopped = True
                break
            pc = nxt
        if not stopped and outputs == 0:
            dr[DR_NO_OUTPUT] += 1
    return n_extra


@numba.njit(nogil=True, cache=True, _nrt=False)
def append_queues(out: np.ndarray, out_start: np.ndarray, src: np.ndarray, src_start: np.ndarray) -> int:
    """Append the per-port queues ``src``/``src_start`` (e.g. ``switch_burst``'s for the NORMAL list)
    to ``out``/``out_start`` (same number of ports); returns the entries that did not fit."""
    n_ports = out_start.shape[1] - 1
    qcap = out.shape[1] // n_ports if n_ports > 0 else 0
    lost = 0
    for p in range(n_ports):
        c = out_start[1, p]
        m = src_start[1, p]
        room = qcap - c
        if m > room:
            lost += m - room
            m = room
        a = out_start[0, p] + c
        b = src_start[0, p]
        for k in range(m):
            out[0, a + k] = src[0, b + k]
            out[1, a + k] = src[1, b + k]
        out_start[1, p] = c + m
    return lost


@numba.njit(nogil=True, cache=True, _nrt=False)
def count_rule(meta: np.ndarray, burst: np.ndarray, n: int, counters: np.ndarray, table_counters: np.ndarray,
               rank: int, now: int) -> None:
    """Credit ``burst[:n]`` to rule ``rank`` (packets, bytes, used) and to table 0 (lookups, matches): the
    datapath's NORMAL-only shortcut, which runs the L2 switch without megaflows."""
    total = 0
    for i in range(n):
        total += meta[burst[i], META_LEN]
    counters[rank, 0] += n
    counters[rank, 1] += total
    counters[rank, 2] = now
    table_counters[0, 0] += n
    table_counters[0, 1] += n
