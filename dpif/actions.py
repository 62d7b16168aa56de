"""Flat datapath actions: the program a megaflow runs on each frame, and its numba executor.

Encoding
--------

A program is one ``int64`` array, a sequence of actions ``[op, nwords, args...]`` where ``nwords``
is the number of argument words (the next action starts at ``pc + 2 + nwords``). An empty program
drops the frame (counted as ``no_output``). Ops (``OP_*``), with their arguments:

* ``OUTPUT(port)``: append the frame to ``port``'s queue (dense datapath port number).
* ``SET_MASKED(word, value, mask)``: ``field = (field & ~mask) | (value & mask)`` where ``word`` is a
  key word (``dpif.key.W_*``) and value/mask are in that word's key form (a 64-bit word held as
  ``int64``; a 128-bit field is one ``SET_MASKED`` per word, high first). Supported words and bits
  (``SET_BITS``): Ethernet addresses, the outer VLAN tag's VID and PCP (``0xEFFF``; no-op untagged), IPv4
  addresses, tos / ttl, TCP/UDP ports and ICMP type / code; IPv6 addresses, traffic class / hop limit,
  ports, ICMPv6 type / code, ND target and link-layer address options; ARP opcode, spa / tpa, sha / tha.
  Checksums are fixed incrementally (RFC 1624): IPv4 header, TCP/UDP/ICMP/ICMPv6 (pseudo-headers
  included). An edit on a frame without that header (or too short for it) is a no-op; the words, bits
  and frames each edit applies to are ``dpif.rewrite``'s docstring.
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
* ``METER(slot, gen, skip)``: the frame pays meter ``slot`` of ``dpif.meters`` (if it is still generation
  ``gen``; else it passes); over the rate it is counted ``meter_drop`` and, ``skip`` 0, its program stops; else
  the next ``skip`` words are skipped and the program goes on (``controller(meter_id=N)``: the packet-in alone
  is metered, OVS's ``clone(meter, userspace)``).
* ``CLONE(actions...)``: ``nwords`` words of nested actions run on a copy of the frame (made at its first edit),
  then the program goes on with the frame as it was (OVS's ``clone``); a ``DROP`` inside ends the clone only
  (counted). A clone that ends the program runs on the frame itself. Clones do not nest (``bad_program``).
  What a tunnel output emits: ``CLONE(TNL_PUSH(...), <the underlay bridge's actions>)``.
* ``TNL_PUSH(tnl_port, out_port, flags, size, mtu, header...)``: the outer headers of a tunnel pushed in
  front of the frame and completed (``dpif.tunnel``: lengths, checksums, the UDP source port from the inner
  flow); the later actions apply to the outer frame. Larger than ``mtu``: ``tunnel_too_big``; no room even
  after moving the frame right: ``no_room``. Build it with ``dpif.tunnel.tnl_push(TunnelHeader(...))``.
* Reserved, decoded but not executed yet (stop and count ``unsupported_action``): ``TNL_POP``, ``CT``,
  ``RECIRC``, ``HASH`` (any arguments).

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
free_top, extra, side, side_n, meters, now_ns) -> int``:

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
* ``meters``/``now_ns``: the meter rows ``METER`` charges (``dpif.meters.MeterBank.arr``; ``NO_METERS``
  without meters) and the burst's time (``time.monotonic_ns``, read once per burst).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

import numba
import numpy as np

from backends.pool import META_HEAD, META_IN_PORT, META_LEN, slot_alloc
from dpif import key as K
from dpif.meters import meter_admit
from dpif.rewrite import (  # noqa: F401  (ETH_*, PROTO_*: re-exported for the model and tests)
    ETH_ARP,
    ETH_IPV4,
    ETH_IPV6,
    ETH_QINQ,
    ETH_RARP,
    ETH_VLAN,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    _ld16,
    _st16,
)
from dpif.rewrite import set_masked as _set_masked
from dpif.tunnel import PUSH_NO_ROOM, PUSH_TOO_BIG, push_header
from dpif.tunnel import check_args as _tnl_check

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
OP_CLONE = 24       # run the next nwords words on a copy of the frame, then go on with the frame as it was

OP_ARGS = {OP_OUTPUT: 1, OP_SET_MASKED: 3, OP_PUSH_VLAN: 2, OP_POP_VLAN: 0, OP_DROP: 1, OP_NORMAL: 2,
           OP_USERSPACE: 2, OP_SET_ETH: 2, OP_METER: 3}
#: ops whose argument count varies: CLONE's nested actions
VARIABLE_OPS = {OP_CLONE}
RESERVED_OPS = {
    OP_TNL_POP: "tnl_pop", OP_CT: "ct", OP_RECIRC: "recirc", OP_HASH: "hash",
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
    "meter_drop",          # METER: a meter's drop band (dpif.meters)
    "tunnel_truncated",    # decap (dpif.tunnel_pop): outer headers or the inner frame cut short
    "tunnel_bad_header",   # decap: a malformed outer IP / UDP / GRE / Geneve / VXLAN header or checksum
    "tunnel_unknown_critical_option",  # decap: a critical Geneve option the TLV map does not name
    "tunnel_no_port",      # decap: no tunnel port for its remote, local address and key / VNI
    "tunnel_too_big",      # TNL_PUSH: the outer IP packet would be larger than the underlay MTU
    "tunnel_no_route",     # encap: no route to the tunnel's remote
    "tunnel_neigh_unresolved",  # encap: the next hop's MAC is not known (yet)
)
DR_NO_OUTPUT, DR_EXPLICIT, DR_UNSUPPORTED, DR_NO_ROOM, DR_POOL_EMPTY, DR_QUEUE_FULL, DR_BAD_PROGRAM, \
    DR_BAD_FRAME, DR_TABLE_MISS, DR_RX_INVALID, DR_CONTROLLER_QUEUE_FULL, DR_CONNTRACK, DR_METER, \
    DR_TUNNEL_TRUNCATED, DR_TUNNEL_BAD_HEADER, DR_TUNNEL_UNKNOWN_CRITICAL, DR_TUNNEL_NO_PORT, \
    DR_TUNNEL_TOO_BIG, DR_TUNNEL_NO_ROUTE, DR_TUNNEL_NEIGH_UNRESOLVED = range(len(DROP_REASONS))

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
_ALL64 = 0xFFFF_FFFF_FFFF_FFFF
SET_BITS = {
    K.W_ETH_DST: 0xFFFF_FFFF_FFFF,
    K.W_ETH_SRC: 0xFFFF_FFFF_FFFF,
    K.W_VLAN_TCI: 0xEFFF,
    K.W_NW_SRC: 0xFFFF_FFFF,
    K.W_NW_DST: 0xFFFF_FFFF,
    K.W_NW: 0xFFFFFF,              # ARP opcode (bits 0..7; IP's protocol there is not written), tos, ttl
    K.W_IPV6_SRC: _ALL64,
    K.W_IPV6_SRC + 1: _ALL64,
    K.W_IPV6_DST: _ALL64,
    K.W_IPV6_DST + 1: _ALL64,
    K.W_TP: 0xFFFF_FFFF,
    K.W_ARP_SHA: 0xFFFF_FFFF_FFFF,
    K.W_ARP_THA: 0xFFFF_FFFF_FFFF,
    K.W_ND_TARGET: _ALL64,
    K.W_ND_TARGET + 1: _ALL64,
}

# set_field names -> (word, shift, width); 128 bits span two words, high first (two SET_MASKED actions)
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
    "icmp_type": (K.W_TP, 0, 8),
    "icmp_code": (K.W_TP, 16, 8),
    "ipv6_src": (K.W_IPV6_SRC, 0, 128),
    "ipv6_dst": (K.W_IPV6_DST, 0, 128),
    "nd_target": (K.W_ND_TARGET, 0, 128),
    "arp_op": (K.W_NW, 0, 8),
    "arp_spa": (K.W_NW_SRC, 0, 32),
    "arp_tpa": (K.W_NW_DST, 0, 32),
    "arp_sha": (K.W_ARP_SHA, 0, 48),
    "arp_tha": (K.W_ARP_THA, 0, 48),
    "nd_sll": (K.W_ARP_SHA, 0, 48),
    "nd_tll": (K.W_ARP_THA, 0, 48),
}


def _s64(x: int) -> int:
    """A 64-bit word as the ``int64`` a program holds."""
    x &= _ALL64
    return x - (1 << 64) if x >> 63 else x


# ---------------------------------------------------------------- building and printing programs


def output(port: int) -> list[int]:
    """``OUTPUT(port)``."""
    return [OP_OUTPUT, 1, port]


def set_eth(dst: int, src: int) -> list[int]:
    """``SET_ETH(dst, src)``: both MAC addresses."""
    return [OP_SET_ETH, 2, dst & 0xFFFF_FFFF_FFFF, src & 0xFFFF_FFFF_FFFF]


def set_masked(word: int, value: int, mask: int) -> list[int]:
    """``SET_MASKED(word, value, mask)`` on a key word (``SET_BITS``); value and mask are the word's 64 bits
    (unsigned), held as ``int64``."""
    return [OP_SET_MASKED, 3, word, _s64(value & mask), _s64(mask)]


def set_field(name: str, value: int, mask: int | None = None) -> list[int]:
    """``SET_MASKED`` of one named field (``SET_FIELDS``), all its bits unless ``mask`` is given; a 128-bit
    field gives one ``SET_MASKED`` per 64-bit word its mask touches."""
    word, shift, width = SET_FIELDS[name]
    full = (1 << width) - 1
    m = full if mask is None else mask & full
    if not 0 <= value <= full:
        raise ValueError(f"{name}={value:#x} is wider than {width} bits")
    if width <= 64:
        return set_masked(word, value << shift, m << shift)
    out: list[int] = []
    for j, sh in enumerate((64, 0)):
        mw = (m >> sh) & _ALL64
        if mw:
            out += set_masked(word + j, (value >> sh) & _ALL64, mw)
    return out


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


def meter(slot: int, gen: int = 0, skip: int = 0) -> list[int]:
    """``METER(slot, gen, skip)``: over the rate, stop (``skip`` 0) or skip the next ``skip`` words."""
    return [OP_METER, 3, slot, gen, skip]


def clone(*actions: Sequence[int]) -> list[int]:
    """``CLONE``: ``actions`` (each from ``output``, ``set_field``, ...) on a copy of the frame."""
    body = [int(w) for a in actions for w in a]
    return [OP_CLONE, len(body), *body]


def reserved(op: int, *args: int) -> list[int]:
    """A reserved op (decoded, not executed yet)."""
    return [op, len(args), *args]


def decode(prog: Sequence[int] | np.ndarray) -> list[tuple[int, list[int]]]:
    """The actions of ``prog`` as ``(op, args)``; ``ValueError`` when malformed."""
    words = [int(x) for x in prog]
    acts: list[tuple[int, list[int]]] = []
    starts: list[int] = []
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
                w, v, m = args[0], args[1] & _ALL64, args[2] & _ALL64
                args = [w, v, m]
                if w not in SET_BITS or m & ~SET_BITS[w] or v & ~m:
                    raise ValueError(f"bad SET_MASKED word {w} value {v:#x} mask {m:#x}")
            if op == OP_DROP and not 0 <= args[0] < N_DROP_REASONS:
                raise ValueError(f"unknown drop reason {args[0]}")
            if op == OP_METER and not 0 <= args[2] <= len(words) - pc - 5:
                raise ValueError(f"METER at word {pc} skips past the end")
        elif op == OP_CLONE:
            if any(o == OP_CLONE for o, _a in decode(args)):
                raise ValueError(f"CLONE at word {pc} holds another CLONE")
        elif op == OP_TNL_PUSH:
            why = _tnl_check(args)
            if why:
                raise ValueError(f"{why} at word {pc}")
        elif op not in RESERVED_OPS:
            raise ValueError(f"unknown op {op}")
        acts.append((op, args))
        starts.append(pc)
        pc += 2 + nw
    ends = {*starts, pc}
    for at, (op, args) in zip(starts, acts, strict=True):
        if op == OP_METER and at + 5 + args[2] not in ends:
            raise ValueError(f"METER at word {at} skips into the middle of an action")
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


def _ip6(v: int) -> str:
    return str(ipaddress.IPv6Address(v))


_WIDE_NAMES = {K.W_IPV6_SRC: ("ipv6", "src"), K.W_IPV6_DST: ("ipv6", "dst"), K.W_ND_TARGET: ("nd", "target")}


def _format_wide(w: int, v: int, m: int) -> str:
    """A 128-bit field of which ``v``/``m`` are set (``w``: its first word)."""
    kind, name = _WIDE_NAMES[w]
    return f"set({kind}({_sub(name, v, m, (1 << 128) - 1, _ip6)}))"


def _format_set(w: int, v: int, m: int) -> str:
    if w in (K.W_ETH_DST, K.W_ETH_SRC):
        name = "dst" if w == K.W_ETH_DST else "src"
        return f"set(eth({_sub(name, v, m, 0xFFFF_FFFF_FFFF, _mac)}))"
    if w in (K.W_NW_SRC, K.W_NW_DST):
        name = "src" if w == K.W_NW_SRC else "dst"
        return f"set(ipv4({_sub(name, v, m, 0xFFFF_FFFF, _ip)}))"
    if w in (K.W_ARP_SHA, K.W_ARP_THA):
        name = "sha" if w == K.W_ARP_SHA else "tha"
        return f"set(arp({_sub(name, v, m, 0xFFFF_FFFF_FFFF, _mac)}))"
    for first in _WIDE_NAMES:
        if w in (first, first + 1):
            sh = 64 if w == first else 0
            return _format_wide(first, v << sh, m << sh)
    out: list[str] = []
    if w == K.W_VLAN_TCI:
        groups = (("vlan", (("vid", 0, 0xFFF), ("pcp", 13, 7))),)
    elif w == K.W_NW:
        groups = (("ipv4", (("tos", 8, 0xFF), ("ttl", 16, 0xFF))), ("arp", (("op", 0, 0xFF),)))
    else:
        groups = (("tp", (("src", 0, 0xFFFF), ("dst", 16, 0xFFFF))),)
    for kind, subs in groups:
        parts: list[str] = []
        for name, shift, full in subs:
            fm = (m >> shift) & full
            if fm:
                parts.append(_sub(name, (v >> shift) & full, fm, full, hex if fm != full else str))
        if parts:
            out.append(f"set({kind}({','.join(parts)}))")
    return ",".join(out) or f"set({groups[0][0]}())"


def format_tnl_push(args: list[int]) -> str:
    """A ``TNL_PUSH`` as OVS's dpctl prints ``tnl_push`` (``header(size=..,type=..,eth(..),ipv4(..),udp(..),
    geneve(..))``; the UDP checksum shows 0xffff when it will be computed, as OVS's header template holds)."""
    from dpif import tunnel as T
    b = T.header_of(args)
    flags = args[T.A_FLAGS]
    kind, v6, csum = flags & T.PF_KIND, bool(flags & T.PF_IPV6), bool(flags & T.PF_CSUM)
    et = int.from_bytes(b[12:14], "big")
    parts = [f"eth(dst={_mac(int.from_bytes(b[0:6], 'big'))},src={_mac(int.from_bytes(b[6:12], 'big'))},"
             f"dl_type={et:#06x})"]
    if v6:
        first = int.from_bytes(b[14:18], "big")
        parts.append(f"ipv6(src={_ip6(int.from_bytes(b[22:38], 'big'))},dst={_ip6(int.from_bytes(b[38:54], 'big'))},"
                     f"label={first & 0xFFFFF},proto={b[20]},tclass={first >> 20 & 0xFF:#x},hlimit={b[21]})")
        o = 54
    else:
        tos = f"{b[15]:#x}" if b[15] else "0"
        parts.append(f"ipv4(src={_ip(int.from_bytes(b[26:30], 'big'))},dst={_ip(int.from_bytes(b[30:34], 'big'))},"
                     f"proto={b[23]},tos={tos},ttl={b[22]},frag={int.from_bytes(b[20:22], 'big'):#x})")
        o = 34
    if kind == T.TNL_GRE:
        gf = int.from_bytes(b[o : o + 2], "big")
        g = f"gre((flags={gf:#x},proto={int.from_bytes(b[o + 2 : o + 4], 'big'):#x})"
        q = o + 4
        if gf & 0x8000:
            g += ",csum=0x0"
            q += 4
        if gf & 0x2000:
            g += f",key={int.from_bytes(b[q : q + 4], 'big'):#x}"
        parts.append(g + ")")
    else:
        parts.append(f"udp(src=0,dst={int.from_bytes(b[o + 2 : o + 4], 'big')},csum={0xFFFF if csum else 0:#x})")
        t = o + 8
        vni = int.from_bytes(b[t + 4 : t + 7], "big")
        if kind == T.TNL_VXLAN:
            parts.append(f"vxlan(flags={int.from_bytes(b[t : t + 4], 'big'):#x},vni={vni:#x})")
        else:
            g = [w for w, bit in (("crit", 0x40), ("oam", 0x80)) if b[t + 1] & bit] + [f"vni={vni:#x}"]
            opts, q = [], t + 8
            while q + 4 <= len(b):
                n = (b[q + 3] & 0x1F) * 4
                data = f",{int.from_bytes(b[q + 4 : q + 4 + n], 'big'):#x}" if n else ""
                opts.append(f"{{class={int.from_bytes(b[q : q + 2], 'big'):#x},type={b[q + 2]:#x},len={n}{data}}}")
                q += 4 + n
            if opts:
                g.append(f"options({''.join(opts)})")
            parts.append(f"geneve({','.join(g)})")
    out = f",out_port({args[T.A_OUT_PORT]})" if args[T.A_OUT_PORT] >= 0 else ""
    return (f"tnl_push(tnl_port({args[T.A_TNL_PORT]}),header(size={args[T.A_SIZE]},type={T.VPORT_TYPE[kind]},"
            f"{','.join(parts)}){out})")


def format_actions(prog: Sequence[int] | np.ndarray) -> str:
    """``prog`` in OVS ``dpctl`` style, e.g. ``set(eth(dst=02:00:00:00:00:01)),push_vlan(vid=10,pcp=0),2``."""
    out: list[str] = []
    acts = decode(prog)
    i = 0
    while i < len(acts):
        op, args = acts[i]
        i += 1
        if (op == OP_SET_MASKED and args[0] in _WIDE_NAMES and i < len(acts) and acts[i][0] == OP_SET_MASKED
                and acts[i][1][0] == args[0] + 1):       # both halves of a 128-bit field: one set()
            lo = acts[i][1]
            i += 1
            out.append(_format_wide(args[0], args[1] << 64 | lo[1], args[2] << 64 | lo[2]))
        elif op == OP_OUTPUT:
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
        elif op == OP_METER and args[2]:    # OVS's clone(meter, ...): the skipped actions are metered
            body, words = [], 0
            while words < args[2] and i < len(acts):
                body.append(acts[i])
                words += 2 + len(acts[i][1])
                i += 1
            inner = format_actions([w for o, a in body for w in (o, len(a), *a)])
            out.append(f"sample(sample=100.0%,actions(meter({args[0]}),{inner}))")
        elif op == OP_METER:
            out.append(f"meter({args[0]})")
        elif op == OP_CLONE:
            out.append(f"clone({format_actions(args)})")
        elif op == OP_TNL_PUSH:
            out.append(format_tnl_push(args))
        else:
            name = RESERVED_OPS[op]
            out.append(f"{name}({','.join(hex(a) for a in args)})" if args else name)
    return ",".join(out) if out else "drop"


# ---------------------------------------------------------------- kernel helpers


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
    meters: np.ndarray,
    now_ns: int,
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
        metered = False     # a metered side action (a packet-in) was dropped
        clone_end = np.int64(-1)     # >= 0: running a clone's actions, which end there
        s0 = s
        head0 = head
        ln0 = ln
        while pc < end_pc or clone_end >= 0:
            if pc == clone_end:      # the clone is done: back to the frame as it was (maybe queued inside)
                s = s0
                head = head0
                ln = ln0
                queued = True
                clone_end = -1
                if pc >= end_pc:
                    break
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
            elif op == OP_SET_MASKED or op == OP_METER:
                need = 3
            elif op == OP_PUSH_VLAN:
                need = 2
            elif op == OP_TNL_PUSH:
                need = 5
                if nw >= 5 and pc + 7 <= end_pc:
                    sz = progs[pc + 5]
                    if sz < 0 or sz > 512 or nw != 5 + (sz + 7) // 8:
                        need = nw + 1
            if nxt > end_pc or nw < need or (clone_end >= 0 and nxt > clone_end):
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
            elif (op == OP_SET_MASKED or op == OP_SET_ETH or op == OP_PUSH_VLAN or op == OP_POP_VLAN
                  or op == OP_TNL_PUSH):
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
                elif op == OP_TNL_PUSH:
                    nh = push_header(data, s, head, ln, progs, pc + 2)
                    if nh < 0:
                        dr[DR_NO_ROOM if nh == PUSH_NO_ROOM else DR_TUNNEL_TOO_BIG if nh == PUSH_TOO_BIG
                           else DR_BAD_PROGRAM] += 1
                        stopped = True
                        break
                    ln += progs[pc + 5]
                    head = nh
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
                if clone_end >= 0:   # ends the clone only
                    metered = True   # counted: not also a no_output
                    pc = clone_end
                    continue
                stopped = True
                break
            elif op == OP_CLONE:
                if clone_end >= 0:
                    dr[DR_BAD_PROGRAM] += 1
                    stopped = True
                    break
                if nxt < end_pc:     # more follows: the clone's edits go to a copy, the frame comes back after
                    clone_end = nxt
                    s0 = s
                    head0 = head
                    ln0 = ln
                    queued = True
                nxt = pc + 2         # run the nested actions

            elif op == OP_METER:
                if not meter_admit(meters, progs[pc + 2], progs[pc + 3], ln, now_ns):
                    dr[DR_METER] += 1
                    skip = progs[pc + 4]
                    if skip <= 0:
                        stopped = True
                        break
                    metered = True
                    nxt += skip
                    if nxt > end_pc:
                        dr[DR_BAD_PROGRAM] += 1
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
        if not stopped and outputs == 0 and not metered:
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
