"""OpenFlow 1.3 flow tables: a control-side ``FlowTables`` that compiles flows into arrays, and the
``flow_burst`` kernel that runs a burst of parsed frames through the pipeline.

```
keys[slot] (parse_burst) ──► EMC (whole pipeline) ──hit──► flows of each table, replayed
                                   │ miss
                                   ▼
      table t: tuple-space search (one hash table per mask, best subtable first) ──► flow
      ──► counters ──► apply-actions (outputs, VLAN, set-field) ──► clear/write action set
      ──► goto_table (> t) or end: execute the action set ──► per-port queues | NORMAL list
                                                                          | packet-in list
```

Matching
    A match is a set of OXM fields, each ``(value, mask)`` (``Match``); the kernel sees it as a
    masked comparison ``keys[slot, col] & mask == value`` per key column (``classifier.keys``).
    Prerequisites (``ipv4_src`` needs ``eth_type=0x0800`` ...) are the control plane's job.
    ``vlan_vid`` uses the key's ``VID | 0x1000`` form, which is OpenFlow's ``OFPVID_PRESENT``.
    Later tables match the headers as modified by earlier apply-actions (eth_src/dst, VLAN).

Ties
    The best flow is the highest priority; among equal priorities the flow *added first* (the
    lowest ``Flow.serial``) wins. Compilation sorts each table by ``(priority desc, serial asc)``,
    so "best" is simply the lowest flow index, in the kernel and in ``classifier.flowref``.

Lookup
    Tuple-space search: each table has one subtable per distinct set of ``(column, mask)``, each an
    open-addressing hash table from the masked key to the lowest flow index with that masked key
    (flows with the same match and a worse rank can never win). Subtables are sorted by their best
    flow index; the search stops at the first subtable whose best flow cannot beat the one found.
    In front of the pipeline an exact-match cache (EMC) maps the key (masked by the union of every
    mask of every table, plus the OFPVID_PRESENT bit when a program has VLAN actions: they are no-ops
    on untagged frames; keys of up to ``EMC_FAST`` columns are hashed unrolled) to the sequence of
    flows the pipeline matched (``TRACE_MAX`` tables at most): actions are deterministic, so the same
    masked key always takes the same path. EMC rows carry the generation of the compiled tables
    (``H_GEN``): any ``compile()`` invalidates them all.

Actions and the egress form of a frame
    A frame is ``dst, src, up to two VLAN tags the pipeline knows of (at most one from parsing),
    then the rest`` (inner tags of a double-tagged frame are part of the rest). Outputs do not
    copy: a queue entry is (slot, egress VLAN edit) exactly as ``switch_burst`` produces
    (``-1`` keep, ``0`` strip, ``1..4095`` push with PCP 0 / replace the VID), so ``pop_vlan`` →
    ``0``, ``push_vlan`` + ``set vlan_vid v`` → ``v``, ``set vlan_vid v`` on a tagged frame → ``v``.
    A state the edit cannot express (new MAC addresses, a PCP change, two tags, VID 0, TPID
    0x88a8), and any frame handed to NORMAL or to the controller with changed headers, is written
    out: in place if the frame's current slot is not queued anywhere yet, otherwise into a fresh
    pool slot (``free_stack``), so a slot already queued for another port is never modified.
    ``set_field vlan_vid/vlan_pcp`` and ``pop_vlan`` on a frame without a tag do nothing;
    ``push_vlan`` on a frame with two tags does nothing; OpenFlow 1.0's ``mod_vlan_vid`` (``ModVlanVid``)
    gives a frame without a tag one (PCP 0).

Kernel: ``flow_burst(data, meta, burst, n, keys, ft, emc, port_flags, now, drops, out,
out_start, side, free_stack, free_top) -> int`` (queue entries made); see its docstring.

Datapath integration (what the caller does around ``flow_burst``):

* ``parse_burst`` first (``flow_burst`` reads the full key row and ``K_DROP``); ``flow_burst``
  rewrites the L2 fields of ``keys[slot]`` as apply-actions modify them.
* NORMAL: the slots in ``side[SIDE_NORMAL, :side[SIDE_N, N_NORMAL]]`` go through
  ``switch_burst`` as a burst of their own, with a second ``out``/``out_start`` pair
  (``switch_burst`` resets its queues); ``append_queues`` merges them into the flow queues,
  or transmit both sets.
* Packet-in: rows ``SIDE_PI_*``; copy ``data[slot, :min(len, max_len)]`` before the burst's slots
  go back to the pool. The cookie is ``CompiledFlows.flows[flow].cookie``; a flow index of
  ``len(CompiledFlows.flows)`` is a table miss (``compile(miss_max_len=...)``, OVS's OpenFlow 1.0 behaviour).
* Fresh slots: ``side[SIDE_EXTRA, :side[SIDE_N, N_EXTRA]]`` must go back to the pool after
  transmit, like the burst itself.
* Ports: ``OUTPUT`` numbers are dense datapath port numbers (the control plane translates
  OpenFlow port numbers before building a ``Flow``); the reserved ports are the OpenFlow
  ``OFPP_*`` numbers. ``port_flags[p]`` (``PF_*``) marks no-flood, down and the LOCAL port.
* Updates: ``FlowTables.compile()`` (any thread) builds new arrays; the datapath thread, between
  bursts, calls ``FlowTables.activate(compiled)`` (carries counters over by flow identity) and then
  uses ``compiled.ft``. The EMC array belongs to the datapath and is reused.

Unit test: ``tests/test_flowtable.py`` (against ``classifier.flowref``); micro-benchmark:
``python -m bench flowtable``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from classifier.keys import (
    ETH_TYPE_VLAN,
    K_ARP_OP,
    K_ARP_SHA,
    K_ARP_SPA,
    K_ARP_THA,
    K_ARP_TPA,
    K_DROP,
    K_ETH_DST,
    K_ETH_SRC,
    K_ETH_TYPE,
    K_IN_PORT,
    K_IP_PROTO,
    K_IP_TOS,
    K_IPV6_DST_HI,
    K_IPV6_DST_LO,
    K_IPV6_SRC_HI,
    K_IPV6_SRC_LO,
    K_NW_DST,
    K_NW_SRC,
    K_TP_DST,
    K_TP_SRC,
    K_VLAN_PCP,
    K_VLAN_VID,
    NKEYS,
    VID_PRESENT,
)
from classifier.parse import META_IN_PORT, META_LEN

# ---------------------------------------------------------------------------------------------
# OpenFlow 1.3 numbers

N_TABLES = 32                 # tables 0 .. N_TABLES-1 (FlowTables(n_tables=...) may use fewer)
OFP_DEFAULT_PRIORITY = 0x8000
OFPP_MAX = 0xFFFFFF00         # port numbers below this are (dense datapath) ports
OFPP_IN_PORT = 0xFFFFFFF8
OFPP_TABLE = 0xFFFFFFF9
OFPP_NORMAL = 0xFFFFFFFA
OFPP_FLOOD = 0xFFFFFFFB
OFPP_ALL = 0xFFFFFFFC
OFPP_CONTROLLER = 0xFFFFFFFD
OFPP_LOCAL = 0xFFFFFFFE
OFPP_ANY = 0xFFFFFFFF
OFPCML_NO_BUFFER = 0xFFFF
OFPTT_ALL = 0xFF
OFPVID_PRESENT = VID_PRESENT
NO_PORT = 0x7FFFFFF0          # dense port of an OpenFlow port the datapath does not have (never matches)

OFPFF_SEND_FLOW_REM = 1 << 0
OFPFF_CHECK_OVERLAP = 1 << 1
OFPFF_RESET_COUNTS = 1 << 2
OFPFF_NO_PKT_COUNTS = 1 << 3
OFPFF_NO_BYT_COUNTS = 1 << 4

OFPRR_IDLE_TIMEOUT = 0        # flow-removed reasons
OFPRR_HARD_TIMEOUT = 1
OFPRR_DELETE = 2

OFPR_NO_MATCH = 0             # packet-in reasons: the flow was a table-miss flow (priority 0, empty match)
OFPR_ACTION = 1               # any other flow

# ---------------------------------------------------------------------------------------------
# the action program: one int64 word per action/instruction, ``op | arg << 8``

OP_OUTPUT = 1          # arg: dense datapath port
OP_IN_PORT = 2
OP_FLOOD = 3
OP_ALL = 4
OP_CONTROLLER = 5      # arg: max_len
OP_NORMAL = 6
OP_LOCAL = 7
OP_PUSH_VLAN = 8       # arg: TPID (0x8100 or 0x88a8)
OP_POP_VLAN = 9
OP_SET_ETH_DST = 10    # arg: 48-bit MAC
OP_SET_ETH_SRC = 11
OP_SET_VLAN_VID = 12   # arg: VID (12 bits)
OP_SET_VLAN_PCP = 13   # arg: PCP (3 bits)
OP_CLEAR_ACTIONS = 14
OP_GOTO_TABLE = 15     # arg: table id (> the current table)
OP_MOD_VLAN_VID = 16   # arg: VID; OpenFlow 1.0 SET_VLAN_VID: a frame without a tag gets one (PCP 0)
OP_WRITE = 0x80        # flag on ops 1..13: write the action into the action set instead of applying it
OP_MASK = 0x7F
OP_LAST_OUTPUT = OP_LOCAL

OP_NAMES = {
    OP_OUTPUT: "output", OP_IN_PORT: "in_port", OP_FLOOD: "flood", OP_ALL: "all", OP_CONTROLLER: "controller",
    OP_NORMAL: "normal", OP_LOCAL: "local", OP_PUSH_VLAN: "push_vlan", OP_POP_VLAN: "pop_vlan",
    OP_SET_ETH_DST: "set_eth_dst", OP_SET_ETH_SRC: "set_eth_src", OP_SET_VLAN_VID: "set_vlan_vid",
    OP_SET_VLAN_PCP: "set_vlan_pcp", OP_CLEAR_ACTIONS: "clear_actions", OP_GOTO_TABLE: "goto_table",
    OP_MOD_VLAN_VID: "mod_vlan_vid",
}

# action set (write-actions), one of each type, executed at the end of the pipeline in the order of
# these bits, which is OpenFlow's: pop, push, set-field, output
AS_POP = 1 << 0
AS_PUSH = 1 << 1
AS_ETH_DST = 1 << 2
AS_ETH_SRC = 1 << 3
AS_VID = 1 << 4
AS_PCP = 1 << 5
AS_OUT = 1 << 6

# ---------------------------------------------------------------------------------------------
# drop reasons of flow_burst: drops is int64[n_ports, N_FDROPS], by ingress port

FDROP_NONE = 0
FDROP_RX_INVALID = 1           # the parser marked the frame (runt, truncated tag): not looked up
FDROP_TABLE_MISS = 2           # the pipeline ended on a table without a matching flow
FDROP_NO_OUTPUT = 3            # the pipeline ended without sending the frame anywhere (drop flow)
FDROP_NO_FREE_SLOT = 4         # a modified copy needed a pool slot and none was free (per output)
FDROP_CONTROLLER_QUEUE_FULL = 5  # the packet-in list was full (per packet-in)
FDROP_TX_QUEUE_FULL = 6        # a port queue or the NORMAL list was full (per output)
FDROP_FRAME_TOO_LONG = 7       # writing out a pushed VLAN tag would overflow the slot (per output)
N_FDROPS = 8

FDROP_NAMES = {
    FDROP_RX_INVALID: "rx_invalid",
    FDROP_TABLE_MISS: "table_miss",
    FDROP_NO_OUTPUT: "no_output",
    FDROP_NO_FREE_SLOT: "no_free_slot",
    FDROP_CONTROLLER_QUEUE_FULL: "controller_queue_full",
    FDROP_TX_QUEUE_FULL: "tx_queue_full",
    FDROP_FRAME_TOO_LONG: "frame_too_long",
}

# port_flags[p]
PF_NO_FLOOD = 1 << 0   # not an output of FLOOD (OFPPC_NO_FLOOD)
PF_DOWN = 1 << 1       # no output at all (down, or no port with that number)
PF_LOCAL = 1 << 2      # the bridge's LOCAL port (the first port with this flag)

# side: int32[SIDE_ROWS, cap], the lists flow_burst fills besides the port queues
SIDE_N = 0             # counts: side[SIDE_N, N_*]
N_NORMAL = 0
N_PKTIN = 1
N_EXTRA = 2
N_OUT = 3
SIDE_NORMAL = 1        # slots for the NORMAL action (hand to switch_burst)
SIDE_EXTRA = 2         # fresh pool slots taken for modified copies (free after transmit)
SIDE_PI_SLOT = 3       # packet-in: slot
SIDE_PI_FLOW = 4       # packet-in: flow index (CompiledFlows.flows[i])
SIDE_PI_REASON = 5     # packet-in: OFPR_* | table_id << 8
SIDE_PI_MAX_LEN = 6    # packet-in: max_len of the CONTROLLER action
SIDE_ROWS = 7


# emc: int64[rows (power of two), EMC_W]
E_HASH = 0
E_META = 1             # generation << 8 | E_FAST | number of trace entries; 0 = invalid
E_FAST = 0x80          # the trace is one flow whose program is one OUTPUT to a port: no interpreter
E_TRACE = 2            # flow index per table visited, -1 for the table that missed
TRACE_MAX = 6          # longer pipelines are not cached
EMC_FAST = 8           # EMC keys of up to this many columns are hashed and compared unrolled
E_KEY = E_TRACE + TRACE_MAX
EMC_W = E_KEY + NKEYS
DEFAULT_EMC_ROWS = 8192

# ft: int64 image of the compiled tables; header, then sections at the offsets it names
H_GEN = 0
H_N_FLOWS = 1
H_N_TABLES = 2
H_TB = 3               # table rows: TB_W words each
H_ST = 4               # subtable rows: ST_W words each
H_FL = 5               # flow rows: FL_W words each
H_NU = 6               # EMC key: number of (column, mask) pairs
H_U = 7                # EMC key: offset of the pairs (padded with (0, 0) to EMC_FAST pairs)
H_EMC = 8              # 1 when the EMC may be used
H_MISS = 9             # 1 + index of the hidden flow a table miss runs (packet-in, OFPR_NO_MATCH); 0: a miss drops
H_SIZE = 16
TB_FIRST = 0           # first subtable of the table
TB_COUNT = 1           # number of subtables
TB_LOOKUPS = 2         # counter: frames looked up in the table
TB_MISSES = 3          # counter: ... that found no flow
TB_W = 4
ST_BEST = 0            # lowest flow index in the subtable
ST_HOFS = 1            # offset of bucket 0 in ft
ST_HMASK = 2           # buckets - 1
ST_STRIDE = 3          # words per bucket: hash, flow index, NF masked values
ST_NF = 4              # number of (column, mask) pairs
ST_F = 5               # the pairs
ST_W = ST_F + 2 * NKEYS + 3
FL_PROG = 0            # flow rows, one 64-byte line each: offset of the program in ft
FL_PLEN = 1            # words in the program
FL_PACKETS = 2         # counters, updated by flow_burst
FL_BYTES = 3
FL_USED = 4            # last time (``now``) a frame matched; the install time at first
FL_INFO = 5            # table_id | priority << 8 | FLF_* << 24
FL_COOKIE = 6
FL_INLINE = 7          # a one-word program lives here (FL_PROG points at it)
FL_W = 8
FLF_TABLE_MISS = 1     # priority 0 and an empty match: packet-ins say OFPR_NO_MATCH

_K1 = np.int64(-7046029254386353131)    # 0x9E3779B97F4A7C15
_K2 = np.int64(-4658895280553007687)    # 0xBF58476D1CE4E5B9
_K3 = np.int64(-7723592293110705685)    # 0x94D049BB133111EB
_EMC_SEED = np.int64(0x2545F4914F6CDD1D)
_BIG = np.int64(1 << 62)

# ---------------------------------------------------------------------------------------------
# match fields: OXM name -> (bits, ((column, value shift, column shift, width), ...))

FIELDS: dict[str, tuple[int, tuple[tuple[int, int, int, int], ...]]] = {
    "in_port": (32, ((K_IN_PORT, 0, 0, 32),)),
    "eth_dst": (48, ((K_ETH_DST, 0, 0, 48),)),
    "eth_src": (48, ((K_ETH_SRC, 0, 0, 48),)),
    "eth_type": (16, ((K_ETH_TYPE, 0, 0, 16),)),
    "vlan_vid": (13, ((K_VLAN_VID, 0, 0, 13),)),
    "vlan_pcp": (3, ((K_VLAN_PCP, 0, 0, 3),)),
    "ip_dscp": (6, ((K_IP_TOS, 0, 2, 6),)),
    "ip_ecn": (2, ((K_IP_TOS, 0, 0, 2),)),
    "ip_proto": (8, ((K_IP_PROTO, 0, 0, 8),)),
    "ipv4_src": (32, ((K_NW_SRC, 0, 0, 32),)),
    "ipv4_dst": (32, ((K_NW_DST, 0, 0, 32),)),
    "ipv6_src": (128, ((K_IPV6_SRC_HI, 64, 0, 64), (K_IPV6_SRC_LO, 0, 0, 64))),
    "ipv6_dst": (128, ((K_IPV6_DST_HI, 64, 0, 64), (K_IPV6_DST_LO, 0, 0, 64))),
    "tcp_src": (16, ((K_TP_SRC, 0, 0, 16),)),
    "tcp_dst": (16, ((K_TP_DST, 0, 0, 16),)),
    "udp_src": (16, ((K_TP_SRC, 0, 0, 16),)),
    "udp_dst": (16, ((K_TP_DST, 0, 0, 16),)),
    "sctp_src": (16, ((K_TP_SRC, 0, 0, 16),)),
    "sctp_dst": (16, ((K_TP_DST, 0, 0, 16),)),
    "icmpv4_type": (8, ((K_TP_SRC, 0, 0, 8),)),
    "icmpv4_code": (8, ((K_TP_DST, 0, 0, 8),)),
    "icmpv6_type": (8, ((K_TP_SRC, 0, 0, 8),)),
    "icmpv6_code": (8, ((K_TP_DST, 0, 0, 8),)),
    "arp_op": (16, ((K_ARP_OP, 0, 0, 16),)),
    "arp_spa": (32, ((K_ARP_SPA, 0, 0, 32),)),
    "arp_tpa": (32, ((K_ARP_TPA, 0, 0, 32),)),
    "arp_sha": (48, ((K_ARP_SHA, 0, 0, 48),)),
    "arp_tha": (48, ((K_ARP_THA, 0, 0, 48),)),
}

SET_FIELDS = {"eth_dst": OP_SET_ETH_DST, "eth_src": OP_SET_ETH_SRC, "vlan_vid": OP_SET_VLAN_VID,
              "vlan_pcp": OP_SET_VLAN_PCP}


def _s64(x: int) -> int:
    """The int64 with the bit pattern of the 64-bit unsigned ``x``."""
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >> 63 else x


class FlowError(ValueError):
    """A flow-mod the tables refuse; ``code`` is a short OpenFlow-like error name."""

    def __init__(self, code: str, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code


class Match:
    """An OpenFlow match: OXM field name -> (value, mask), normalised (value & mask, no zero masks).

    ``Match(in_port=1, eth_dst=0x020000000001, ipv4_dst=(0x0A000000, 0xFFFFFF00))``: a plain int
    is an exact match. Two matches are equal when their normalised fields are.
    """

    __slots__ = ("fields", "_cols", "_hash")

    def __init__(self, **fields: int | tuple[int, int]) -> None:
        norm: dict[str, tuple[int, int]] = {}
        for name, vm in fields.items():
            if name not in FIELDS:
                raise FlowError("bad_field", f"unknown match field {name!r}")
            bits = FIELDS[name][0]
            full = (1 << bits) - 1
            value, mask = (vm, full) if isinstance(vm, int) else (int(vm[0]), int(vm[1]))
            if value < 0 or value > full or mask < 0 or mask > full:
                raise FlowError("bad_value", f"{name}: value {value:#x} / mask {mask:#x} wider than {bits} bits")
            if mask:
                norm[name] = (value & mask, mask)
        self.fields: tuple[tuple[str, int, int], ...] = tuple(sorted((k, v, m) for k, (v, m) in norm.items()))
        cols: dict[int, tuple[int, int]] = {}
        for name, value, mask in self.fields:
            for col, vshift, cshift, width in FIELDS[name][1]:
                w = (1 << width) - 1
                cv, cm = ((value >> vshift) & w) << cshift, ((mask >> vshift) & w) << cshift
                if not cm:
                    continue
                ov, om = cols.get(col, (0, 0))
                if (ov ^ cv) & om & cm:
                    raise FlowError("bad_match", f"{name} contradicts another field on the same header bits")
                cols[col] = (ov | cv, om | cm)
        self._cols = tuple(sorted((c, v, m) for c, (v, m) in cols.items()))
        self._hash = hash(self.fields)

    def get(self, name: str) -> tuple[int, int] | None:
        """``(value, mask)`` of field ``name``, or None when it is wildcarded."""
        for k, v, m in self.fields:
            if k == name:
                return v, m
        return None

    def columns(self) -> tuple[tuple[int, int, int], ...]:
        """The match as ``(key column, value, mask)`` triples sorted by column (what the kernel compares)."""
        return self._cols

    def covers(self, other: Match) -> bool:
        """True when every packet ``other`` matches is matched by ``self`` (``other`` is at least as
        specific): OpenFlow's non-strict modify/delete/stats selection."""
        theirs = {k: (v, m) for k, v, m in other.fields}
        for name, value, mask in self.fields:
            if name not in theirs:
                return False
            ov, om = theirs[name]
            if mask & ~om or (ov & mask) != value:
                return False
        return True

    def overlaps(self, other: Match) -> bool:
        """True when some packet could match both (per OXM field; aliasing fields count as distinct)."""
        theirs = {k: (v, m) for k, v, m in other.fields}
        for name, value, mask in self.fields:
            if name in theirs:
                ov, om = theirs[name]
                if (value ^ ov) & mask & om:
                    return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Match) and self.fields == other.fields

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        parts = [f"{k}={v:#x}" if m == (1 << FIELDS[k][0]) - 1 else f"{k}={v:#x}/{m:#x}" for k, v, m in self.fields]
        return f"Match({', '.join(parts)})"


@dataclass(frozen=True)
class Output:
    """OUTPUT to a dense datapath port or a reserved ``OFPP_*`` port; ``max_len`` for CONTROLLER."""

    port: int
    max_len: int = OFPCML_NO_BUFFER


@dataclass(frozen=True)
class PushVlan:
    """PUSH_VLAN: a new outer tag copying the VID/PCP of the current outer tag (0 when untagged)."""

    ethertype: int = ETH_TYPE_VLAN


@dataclass(frozen=True)
class PopVlan:
    """POP_VLAN: remove the outer tag."""


@dataclass(frozen=True)
class SetField:
    """SET_FIELD of ``eth_dst``, ``eth_src``, ``vlan_vid`` (with or without OFPVID_PRESENT) or ``vlan_pcp``."""

    field: str
    value: int


@dataclass(frozen=True)
class ModVlanVid:
    """OpenFlow 1.0 SET_VLAN_VID (``mod_vlan_vid``): sets the VID of the outer tag; a frame without a tag gets an
    802.1Q tag with this VID and PCP 0."""

    vid: int


Action = Output | PushVlan | PopVlan | SetField | ModVlanVid

_SPECIAL_OPS = {OFPP_IN_PORT: OP_IN_PORT, OFPP_NORMAL: OP_NORMAL, OFPP_FLOOD: OP_FLOOD, OFPP_ALL: OP_ALL,
                OFPP_CONTROLLER: OP_CONTROLLER, OFPP_LOCAL: OP_LOCAL}


def action_word(action: Action, port_map: dict[int, int] | None = None) -> int:
    """The program word of one action (without ``OP_WRITE``); ``port_map`` turns OpenFlow port numbers
    into dense datapath ports (a port missing from it becomes ``NO_PORT``: nothing is sent there)."""
    if isinstance(action, Output):
        p = action.port
        if 0 <= p < OFPP_MAX:
            if port_map is not None:
                p = port_map.get(p, NO_PORT)
            return OP_OUTPUT | p << 8
        if p == OFPP_CONTROLLER:
            if not 0 <= action.max_len <= 0xFFFF:
                raise FlowError("bad_argument", f"max_len {action.max_len}")
            return OP_CONTROLLER | action.max_len << 8
        if p in _SPECIAL_OPS:
            return _SPECIAL_OPS[p]
        raise FlowError("bad_out_port", f"output to {p:#x}")
    if isinstance(action, PushVlan):
        if action.ethertype not in (0x8100, 0x88A8):
            raise FlowError("bad_argument", f"push_vlan ethertype {action.ethertype:#x}")
        return OP_PUSH_VLAN | action.ethertype << 8
    if isinstance(action, PopVlan):
        return OP_POP_VLAN
    if isinstance(action, ModVlanVid):
        if not 0 <= action.vid <= 0xFFF:
            raise FlowError("bad_set_value", f"mod_vlan_vid {action.vid}")
        return OP_MOD_VLAN_VID | action.vid << 8
    if isinstance(action, SetField):
        op = SET_FIELDS.get(action.field)
        if op is None:
            raise FlowError("bad_set_field", f"set_field {action.field!r} is not supported")
        v = action.value
        limit = {OP_SET_ETH_DST: 1 << 48, OP_SET_ETH_SRC: 1 << 48, OP_SET_VLAN_VID: 1 << 13, OP_SET_VLAN_PCP: 8}[op]
        if not 0 <= v < limit:
            raise FlowError("bad_set_value", f"set_field {action.field}={v:#x}")
        if op == OP_SET_VLAN_VID:
            v &= 0xFFF
        return op | v << 8
    raise FlowError("bad_action", f"unsupported action {action!r}")


@dataclass(frozen=True)
class Instructions:
    """A flow's instructions, executed in OpenFlow order: apply-actions, clear-actions, write-actions,
    goto-table. No instruction at all (and no goto) means drop."""

    apply: tuple[Action, ...] = ()
    clear: bool = False
    write: tuple[Action, ...] = ()
    goto: int | None = None

    def words(self, port_map: dict[int, int] | None = None) -> list[int]:
        """The compiled program (see the ``OP_*`` constants); ``port_map`` as for ``action_word``."""
        out = [action_word(a, port_map) for a in self.apply]
        if self.clear:
            out.append(OP_CLEAR_ACTIONS)
        out += [action_word(a, port_map) | OP_WRITE for a in self.write]
        if self.goto is not None:
            out.append(OP_GOTO_TABLE | self.goto << 8)
        return out

    def output_ports(self) -> set[int]:
        """Ports named by OUTPUT actions (apply and write), for the ``out_port`` filter."""
        return {a.port for a in (*self.apply, *self.write) if isinstance(a, Output)}


DROP = Instructions()


@dataclass(eq=False)
class Flow:
    """A flow entry. ``installed``, ``serial`` and ``uid`` are set by ``FlowTables.add``: ``serial``
    orders equal-priority flows (lower wins), ``uid`` is the identity its counters follow."""

    table_id: int = 0
    priority: int = OFP_DEFAULT_PRIORITY
    match: Match = Match()
    instructions: Instructions = DROP
    cookie: int = 0
    idle_timeout: int = 0
    hard_timeout: int = 0
    flags: int = 0
    installed: int = 0
    serial: int = 0
    uid: int = 0
    packet_base: int = 0   # counters at the last reset (MODIFY with reset_counts)
    byte_base: int = 0

    @property
    def is_table_miss(self) -> bool:
        """Priority 0 with an empty match."""
        return self.priority == 0 and not self.match.fields


@dataclass
class FlowStats:
    """A flow with its counters (multipart flow stats, flow-removed)."""

    flow: Flow
    packets: int
    bytes: int
    duration: int      # seconds since installed
    idle: int          # seconds since a frame last matched (or since installed)


# ---------------------------------------------------------------------------------------------
# kernels


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _mix(h: np.int64, v: np.int64) -> np.int64:
    h = (h ^ v) * _K1
    return h ^ (h >> 31)


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _fin(h: np.int64) -> np.int64:
    h = (h ^ (h >> 29)) * _K2
    h = (h ^ (h >> 32)) * _K3
    return (h ^ (h >> 29)) | 1


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _seed(nf: int) -> np.int64:
    return np.int64(nf) * _K3 + 1


@intrinsic
def _prefetch(typingctx, arr, i, j):
    """Prefetch ``arr[i, j]`` (a 2-D array) into the cache, for reading."""
    sig = types.void(arr, i, j)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        array = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, array, [args[1], args[2]], wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])  # read, keep in all levels, data
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _tss(ft: np.ndarray, keys: np.ndarray, s: int, t: int) -> int:
    """Best flow index of table ``t`` for key row ``keys[s]`` (tuple-space search), or -1."""
    tb = ft[H_TB] + t * TB_W
    first = ft[tb + TB_FIRST]
    nst = ft[tb + TB_COUNT]
    best = _BIG
    st0 = ft[H_ST]
    for j in range(nst):
        st = st0 + (first + j) * ST_W
        if ft[st + ST_BEST] >= best:
            break
        nf = ft[st + ST_NF]
        h = _seed(nf)
        for q in range(nf):
            h = _mix(h, np.int64(keys[s, ft[st + ST_F + 2 * q]]) & ft[st + ST_F + 2 * q + 1])
        h = _fin(h)
        hofs = ft[st + ST_HOFS]
        hmask = ft[st + ST_HMASK]
        stride = ft[st + ST_STRIDE]
        b = h & hmask
        while True:
            o = hofs + b * stride
            bh = ft[o]
            if bh == 0:
                break
            if bh == h:
                same = True
                for q in range(nf):
                    if (np.int64(keys[s, ft[st + ST_F + 2 * q]]) & ft[st + ST_F + 2 * q + 1]) != ft[o + 2 + q]:
                        same = False
                        break
                if same:
                    best = ft[o + 1]
                    break
            b = (b + 1) & hmask
    return best if best < _BIG else -1


@numba.njit(nogil=True, cache=True, _nrt=False)
def flow_lookup(ft: np.ndarray, keys: np.ndarray, burst: np.ndarray, n: int, table_id: int,
                found: np.ndarray) -> None:
    """``found[i]`` = the flow index table ``table_id`` matches for ``keys[burst[i]]`` (-1: miss).

    Tuple-space search only (no EMC, no counters, no actions): for tracing and tests.
    """
    for i in range(n):
        found[i] = _tss(ft, keys, burst[i], table_id)


@numba.njit(nogil=True, cache=True, _nrt=False)
def _fill_buckets(ft: np.ndarray, hofs: int, hmask: int, stride: int, vals: np.ndarray, idx: np.ndarray) -> None:
    """Insert masked keys ``vals[r]`` -> flow ``idx[r]`` (ascending) into one subtable's buckets."""
    nf = vals.shape[1]
    for r in range(vals.shape[0]):
        h = _seed(nf)
        for q in range(nf):
            h = _mix(h, vals[r, q])
        h = _fin(h)
        b = h & hmask
        while True:
            o = hofs + b * stride
            if ft[o] == 0:
                ft[o] = h
                ft[o + 1] = idx[r]
                for q in range(nf):
                    ft[o + 2 + q] = vals[r, q]
                break
            if ft[o] == h:
                same = True
                for q in range(nf):
                    if ft[o + 2 + q] != vals[r, q]:
                        same = False
                        break
                if same:  # an earlier (better) flow has the same masked key: this one never wins
                    break
            b = (b + 1) & hmask


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _vlan_edit(ntag: int, tag0: int, tag1: int, bntag: int, btag0: int, btag1: int, rest8100: bool) -> int:
    """Egress edit turning the slot's tags (b*) into the frame's tags, or -2 when none can."""
    if ntag == bntag and tag0 == btag0 and tag1 == btag1:
        return -1
    if ntag == 0:
        if bntag == 1 and (btag0 >> 16) == ETH_TYPE_VLAN:
            return 0
        return -2
    if ntag == 1 and (tag0 >> 16) == ETH_TYPE_VLAN:
        vid = tag0 & 0xFFF
        if vid == 0:
            return -2
        if bntag == 0:
            if (tag0 & 0xF000) == 0 and not rest8100:
                return vid
            return -2
        if bntag == 1 and (btag0 >> 16) == ETH_TYPE_VLAN and (tag0 & 0xF000) == (btag0 & 0xF000):
            return vid
    return -2


@numba.njit(nogil=True, cache=True, _nrt=False)
def _rewrite(data: np.ndarray, meta: np.ndarray, b: int, d: int, bntag: int, dst: int, src: int,
             ntag: int, tag0: int, tag1: int) -> int:
    """Write frame ``dst, src, tags, rest of slot b`` into slot ``d`` (``d == b``: in place); its length or -1."""
    slot_len = data.shape[1]
    length = min(np.int64(meta[b, META_LEN]), slot_len)
    old = 12 + 4 * bntag
    new = 12 + 4 * ntag
    rest = max(length - old, 0)
    nl = new + rest
    if nl > slot_len:
        return -1
    if d == b:
        if new > old:
            for k in range(rest - 1, -1, -1):
                data[d, new + k] = data[b, old + k]
        elif new < old:
            for k in range(rest):
                data[d, new + k] = data[b, old + k]
    else:
        for k in range(rest):
            data[d, new + k] = data[b, old + k]
        for c in range(meta.shape[1]):
            meta[d, c] = meta[b, c]
    for k in range(6):
        data[d, k] = (dst >> (40 - 8 * k)) & 0xFF
        data[d, 6 + k] = (src >> (40 - 8 * k)) & 0xFF
    if ntag >= 1:
        for k in range(4):
            data[d, 12 + k] = (tag0 >> (24 - 8 * k)) & 0xFF
    if ntag >= 2:
        for k in range(4):
            data[d, 16 + k] = (tag1 >> (24 - 8 * k)) & 0xFF
    meta[d, META_LEN] = nl
    return nl


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _set_vlan_keys(keys: np.ndarray, s: int, ntag: int, tag0: int) -> None:
    if ntag > 0:
        keys[s, K_VLAN_VID] = (tag0 & 0xFFF) | VID_PRESENT
        keys[s, K_VLAN_PCP] = (tag0 >> 13) & 7
    else:
        keys[s, K_VLAN_VID] = 0
        keys[s, K_VLAN_PCP] = 0


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _enqueue(out: np.ndarray, out_start: np.ndarray, qcap: int, p: int, slot: int, edit: int) -> bool:
    c = out_start[1, p]
    if c >= qcap:
        return False
    pos = out_start[0, p] + c
    out[0, pos] = slot
    out[1, pos] = edit
    out_start[1, p] = c + 1
    return True


@numba.njit(nogil=True, cache=True, _nrt=False)
def flow_burst(
    data: np.ndarray,
    meta: np.ndarray,
    burst: np.ndarray,
    n: int,
    keys: np.ndarray,
    ft: np.ndarray,
    emc: np.ndarray,
    port_flags: np.ndarray,
    now: int,
    drops: np.ndarray,
    out: np.ndarray,
    out_start: np.ndarray,
    side: np.ndarray,
    free_stack: np.ndarray,
    free_top: np.ndarray,
) -> int:
    """Run the frames in ``burst[:n]`` through the OpenFlow pipeline; returns the queue entries made.

    * ``data``, ``meta``, ``burst[:n]``: the frames (``backends.pool``); ``keys``: their parsed
      header rows (``parse_burst``), whose L2 fields follow the apply-actions.
    * ``ft``: ``CompiledFlows.ft``, whose flow and table counters this updates;
      ``emc``: ``make_emc()`` (or 0 rows: no cache).
    * ``port_flags``: ``int64[n_ports]`` of ``PF_*``; ``now``: seconds, stored as the last-used time.
    * ``drops``: ``int64[n_ports, N_FDROPS]`` by ingress port (``FDROP_*``).
    * ``out`` ``int32[2, n_ports * qcap]``, ``out_start`` ``int32[2, n_ports + 1]``: per-port queues as
      ``switch_burst`` makes them (row 0 slot, row 1 egress VLAN edit).
    * ``side``: ``int32[SIDE_ROWS, cap]`` (cap >= 4): the NORMAL list, fresh slots, packet-ins, and
      their counts in ``side[SIDE_N, N_*]``.
    * ``free_stack``, ``free_top``: the pool's free stack, for modified copies.
    """
    n_ports = port_flags.shape[0]
    qcap = out.shape[1] // n_ports
    for p in range(n_ports):
        out_start[0, p] = p * qcap
        out_start[1, p] = 0
    out_start[0, n_ports] = n_ports * qcap
    out_start[1, n_ports] = 0
    local_port = -1
    for p in range(n_ports):
        if port_flags[p] & PF_LOCAL:
            local_port = p
            break
    cap = side.shape[1]
    n_tables = ft[H_N_TABLES]
    gen = ft[H_GEN]
    fl0 = ft[H_FL]
    tb0 = ft[H_TB]
    nu = ft[H_NU]
    uo = ft[H_U]
    emc_rows = emc.shape[0]
    use_emc = emc_rows > 0 and ft[H_EMC] != 0
    emask = emc_rows - 1
    # EMC keys of up to EMC_FAST columns are computed unrolled (the section is padded with mask 0).
    fast = nu <= EMC_FAST
    c0 = ft[uo]
    m0 = ft[uo + 1]
    c1 = ft[uo + 2]
    m1 = ft[uo + 3]
    c2 = ft[uo + 4]
    m2 = ft[uo + 5]
    c3 = ft[uo + 6]
    m3 = ft[uo + 7]
    c4 = ft[uo + 8]
    m4 = ft[uo + 9]
    c5 = ft[uo + 10]
    m5 = ft[uo + 11]
    c6 = ft[uo + 12]
    m6 = ft[uo + 13]
    c7 = ft[uo + 14]
    m7 = ft[uo + 15]
    n_out = 0
    n_normal = 0
    n_pi = 0
    n_extra = 0
    h_next = np.int64(0)
    w0 = w1 = w2 = w3 = w4 = w5 = w6 = w7 = np.int64(0)
    for pos in range(n + 1):
        # Software pipeline: step pos hashes frame pos (its cache row on its way), processes frame pos-1.
        h = h_next
        v0 = w0
        v1 = w1
        v2 = w2
        v3 = w3
        v4 = w4
        v5 = w5
        v6 = w6
        v7 = w7
        if use_emc and pos < n:
            s1 = burst[pos]
            w0 = np.int64(keys[s1, c0]) & m0
            w1 = np.int64(keys[s1, c1]) & m1
            w2 = np.int64(keys[s1, c2]) & m2
            w3 = np.int64(keys[s1, c3]) & m3
            w4 = np.int64(keys[s1, c4]) & m4
            w5 = np.int64(keys[s1, c5]) & m5
            w6 = np.int64(keys[s1, c6]) & m6
            w7 = np.int64(keys[s1, c7]) & m7
            if fast:
                h_next = _fin(_mix(_mix(_mix(_mix(_EMC_SEED, w0), w1), w2), w3)
                              ^ _mix(_mix(_mix(_mix(_K2, w4), w5), w6), w7) * _K3)
            else:
                h_next = _EMC_SEED
                for q in range(nu):
                    h_next = _mix(h_next, np.int64(keys[s1, ft[uo + 2 * q]]) & ft[uo + 2 * q + 1])
                h_next = _fin(h_next)
            _prefetch(emc, h_next & emask, 0)
            _prefetch(emc, h_next & emask, E_KEY)
        if pos == 0:
            continue
        s = burst[pos - 1]
        in_port = np.int64(meta[s, META_IN_PORT])
        if keys[s, K_DROP] != 0:
            drops[in_port, FDROP_RX_INVALID] += 1
            continue
        length = np.int64(meta[s, META_LEN])
        # Exact-match cache over the whole pipeline.
        hit = -1
        rec = -1
        if use_emc:
            r1 = h & emask
            r2 = (h >> 32) & emask
            for k in range(2):
                r = r1 if k == 0 else r2
                if emc[r, E_HASH] == h and (emc[r, E_META] >> 8) == gen:
                    if fast:
                        same = ((emc[r, E_KEY] ^ v0) | (emc[r, E_KEY + 1] ^ v1) | (emc[r, E_KEY + 2] ^ v2)
                                | (emc[r, E_KEY + 3] ^ v3) | (emc[r, E_KEY + 4] ^ v4) | (emc[r, E_KEY + 5] ^ v5)
                                | (emc[r, E_KEY + 6] ^ v6) | (emc[r, E_KEY + 7] ^ v7)) == 0
                    else:
                        same = True
                        for j in range(nu):
                            if emc[r, E_KEY + j] != (np.int64(keys[s, ft[uo + 2 * j]]) & ft[uo + 2 * j + 1]):
                                same = False
                                break
                    if same:
                        hit = r
                        break
            if hit < 0:
                if (emc[r1, E_META] >> 8) != gen:
                    rec = r1
                elif (emc[r2, E_META] >> 8) != gen:
                    rec = r2
                else:
                    rec = r1 if (h >> 40) & 1 else r2
                emc[rec, E_HASH] = h
                emc[rec, E_META] = 0
                if fast:
                    emc[rec, E_KEY] = v0
                    emc[rec, E_KEY + 1] = v1
                    emc[rec, E_KEY + 2] = v2
                    emc[rec, E_KEY + 3] = v3
                    emc[rec, E_KEY + 4] = v4
                    emc[rec, E_KEY + 5] = v5
                    emc[rec, E_KEY + 6] = v6
                    emc[rec, E_KEY + 7] = v7
                else:
                    for j in range(nu):
                        emc[rec, E_KEY + j] = np.int64(keys[s, ft[uo + 2 * j]]) & ft[uo + 2 * j + 1]
            if hit >= 0 and emc[hit, E_META] & E_FAST:
                # One flow, one OUTPUT to a port, no header change: no interpreter.
                fo = fl0 + emc[hit, E_TRACE] * FL_W
                ft[tb0 + TB_LOOKUPS] += 1
                ft[fo + FL_PACKETS] += 1
                ft[fo + FL_BYTES] += length
                ft[fo + FL_USED] = now
                q = ft[fo + FL_INLINE] >> 8
                if q == in_port or q >= n_ports or port_flags[q] & PF_DOWN:
                    drops[in_port, FDROP_NO_OUTPUT] += 1
                elif _enqueue(out, out_start, qcap, q, s, -1):
                    n_out += 1
                else:
                    drops[in_port, FDROP_TX_QUEUE_FULL] += 1
                continue
        # The frame as the actions leave it (MACs in keys[s]), and the slot holding its latest form.
        ntag = 0
        tag0 = 0
        tag1 = 0
        if keys[s, K_VLAN_VID] != 0:
            ntag = 1
            tag0 = (ETH_TYPE_VLAN << 16) | (np.int64(data[s, 14]) << 8) | np.int64(data[s, 15])
        bslot = s
        bntag = ntag
        btag0 = tag0
        btag1 = 0
        bused = False     # bslot is queued somewhere: never write to it again
        dirty = False     # MAC addresses differ from bslot's
        as_flags = 0
        as_push = 0
        as_dst = 0
        as_src = 0
        as_vid = 0
        as_pcp = 0
        as_out = 0
        pending = 0
        sent = 0
        failed = 0
        t = 0
        step = 0
        fo = 0
        missed = False
        while True:
            if hit >= 0 and step < TRACE_MAX:
                f = emc[hit, E_TRACE + step]
            else:
                f = _tss(ft, keys, s, t)
                if rec >= 0:
                    if step < TRACE_MAX:
                        emc[rec, E_TRACE + step] = f
                    else:
                        rec = -1
            step += 1
            tbo = tb0 + t * TB_W
            ft[tbo + TB_LOOKUPS] += 1
            if f < 0:
                ft[tbo + TB_MISSES] += 1
                if ft[H_MISS] == 0:
                    missed = True
                    break
                # OVS's implicit table-miss for OpenFlow 1.0 controllers: the hidden flow sends the frame to
                # them; the action set is not executed
                f = ft[H_MISS] - 1
                as_flags = 0
            fo = fl0 + f * FL_W
            ft[fo + FL_PACKETS] += 1
            ft[fo + FL_BYTES] += length
            ft[fo + FL_USED] = now
            pc = ft[fo + FL_PROG]
            p1 = pc + ft[fo + FL_PLEN]
            goto = -1
            while True:
                if pc < p1:
                    w = ft[pc]
                else:
                    # Program done: next table, or the action set in OpenFlow order (the AS_* bit order).
                    if goto >= 0:
                        break
                    if pc == p1:
                        pending = as_flags
                    if pending == 0:
                        break
                    bit = pending & -pending
                    pending ^= bit
                    if bit == AS_POP:
                        w = OP_POP_VLAN
                    elif bit == AS_PUSH:
                        w = OP_PUSH_VLAN | (as_push << 8)
                    elif bit == AS_ETH_DST:
                        w = OP_SET_ETH_DST | (as_dst << 8)
                    elif bit == AS_ETH_SRC:
                        w = OP_SET_ETH_SRC | (as_src << 8)
                    elif bit == AS_VID:
                        w = OP_SET_VLAN_VID | (as_vid << 8)
                    elif bit == AS_PCP:
                        w = OP_SET_VLAN_PCP | (as_pcp << 8)
                    else:
                        w = as_out
                pc += 1
                op = w & 0xFF
                arg = w >> 8
                if op > OP_LAST_OUTPUT:
                    if op & OP_WRITE:
                        op &= OP_MASK
                        if op <= OP_LAST_OUTPUT:
                            as_flags |= AS_OUT
                            as_out = w & ~np.int64(OP_WRITE)
                        elif op == OP_POP_VLAN:
                            as_flags |= AS_POP
                        elif op == OP_PUSH_VLAN:
                            as_flags |= AS_PUSH
                            as_push = arg
                        elif op == OP_SET_ETH_DST:
                            as_flags |= AS_ETH_DST
                            as_dst = arg
                        elif op == OP_SET_ETH_SRC:
                            as_flags |= AS_ETH_SRC
                            as_src = arg
                        elif op == OP_SET_VLAN_VID:
                            as_flags |= AS_VID
                            as_vid = arg
                        elif op == OP_SET_VLAN_PCP:
                            as_flags |= AS_PCP
                            as_pcp = arg
                    elif op == OP_GOTO_TABLE:
                        goto = arg
                    elif op == OP_CLEAR_ACTIONS:
                        as_flags = 0
                    elif op == OP_SET_ETH_DST:
                        dirty = True
                        keys[s, K_ETH_DST] = arg
                    elif op == OP_SET_ETH_SRC:
                        dirty = True
                        keys[s, K_ETH_SRC] = arg
                    elif op == OP_PUSH_VLAN:
                        if ntag < 2:
                            tag1 = tag0
                            tag0 = (arg << 16) | (tag0 & 0xFFFF)
                            ntag += 1
                            _set_vlan_keys(keys, s, ntag, tag0)
                    elif op == OP_POP_VLAN:
                        if ntag > 0:
                            tag0 = tag1
                            tag1 = 0
                            ntag -= 1
                            _set_vlan_keys(keys, s, ntag, tag0)
                    elif op == OP_SET_VLAN_VID:
                        if ntag > 0:
                            tag0 = (tag0 & ~np.int64(0xFFF)) | arg
                            _set_vlan_keys(keys, s, ntag, tag0)
                    elif op == OP_SET_VLAN_PCP:
                        if ntag > 0:
                            tag0 = (tag0 & ~np.int64(0xE000)) | (arg << 13)
                            _set_vlan_keys(keys, s, ntag, tag0)
                    elif op == OP_MOD_VLAN_VID:
                        if ntag == 0:
                            tag1 = tag0
                            tag0 = ETH_TYPE_VLAN << 16
                            ntag = 1
                        tag0 = (tag0 & ~np.int64(0xFFF)) | arg
                        _set_vlan_keys(keys, s, ntag, tag0)
                    continue
                # An output: the slot and egress edit that carry the frame as it is now.
                edit = -1
                if dirty or ntag != bntag or tag0 != btag0 or tag1 != btag1:
                    need = True
                    if not dirty and op != OP_NORMAL and op != OP_CONTROLLER:
                        edit = _vlan_edit(ntag, tag0, tag1, bntag, btag0, btag1,
                                          keys[s, K_ETH_TYPE] == ETH_TYPE_VLAN)
                        need = edit < -1
                    if need:
                        d = bslot
                        if bused:
                            d = -1
                            if n_extra < cap:
                                top = free_top[0]
                                if top > 0:
                                    top -= 1
                                    free_top[0] = top
                                    d = free_stack[top]
                            if d < 0:
                                drops[in_port, FDROP_NO_FREE_SLOT] += 1
                                failed += 1
                                continue
                        if _rewrite(data, meta, bslot, d, bntag, np.int64(keys[s, K_ETH_DST]),
                                    np.int64(keys[s, K_ETH_SRC]), ntag, tag0, tag1) < 0:
                            if d != bslot:
                                top = free_top[0]
                                free_stack[top] = d
                                free_top[0] = top + 1
                            drops[in_port, FDROP_FRAME_TOO_LONG] += 1
                            failed += 1
                            continue
                        if d != bslot:
                            side[SIDE_EXTRA, n_extra] = d
                            n_extra += 1
                        bslot = d
                        bntag = ntag
                        btag0 = tag0
                        btag1 = tag1
                        bused = False
                        dirty = False
                        edit = -1
                if op == OP_OUTPUT or op == OP_IN_PORT or op == OP_LOCAL:
                    if op == OP_OUTPUT:
                        q = arg
                    elif op == OP_LOCAL:
                        q = local_port
                    else:
                        q = in_port
                    if (q == in_port and op != OP_IN_PORT) or q < 0 or q >= n_ports or port_flags[q] & PF_DOWN:
                        continue  # OpenFlow: only OFPP_IN_PORT sends a frame back
                    if _enqueue(out, out_start, qcap, q, bslot, edit):
                        n_out += 1
                        sent += 1
                        bused = True
                    else:
                        drops[in_port, FDROP_TX_QUEUE_FULL] += 1
                        failed += 1
                elif op == OP_FLOOD or op == OP_ALL:
                    for q in range(n_ports):
                        fl = port_flags[q]
                        if q == in_port or fl & PF_DOWN or (op == OP_FLOOD and fl & PF_NO_FLOOD):
                            continue
                        if _enqueue(out, out_start, qcap, q, bslot, edit):
                            n_out += 1
                            sent += 1
                            bused = True
                        else:
                            drops[in_port, FDROP_TX_QUEUE_FULL] += 1
                            failed += 1
                elif op == OP_NORMAL:
                    if n_normal >= cap:
                        drops[in_port, FDROP_TX_QUEUE_FULL] += 1
                        failed += 1
                        continue
                    side[SIDE_NORMAL, n_normal] = bslot
                    n_normal += 1
                    bused = True
                    sent += 1
                else:  # OP_CONTROLLER
                    if n_pi >= cap:
                        drops[in_port, FDROP_CONTROLLER_QUEUE_FULL] += 1
                        failed += 1
                        continue
                    side[SIDE_PI_SLOT, n_pi] = bslot
                    side[SIDE_PI_FLOW, n_pi] = f
                    reason = OFPR_NO_MATCH if (ft[fo + FL_INFO] >> 24) & FLF_TABLE_MISS else OFPR_ACTION
                    side[SIDE_PI_REASON, n_pi] = reason | (t << 8)
                    side[SIDE_PI_MAX_LEN, n_pi] = arg
                    n_pi += 1
                    bused = True
                    sent += 1
            if goto > t and goto < n_tables:
                t = goto
                continue
            break
        if rec >= 0:
            meta_word = (gen << 8) | step
            if step == 1 and not missed and ft[fo + FL_PLEN] == 1 and (ft[fo + FL_INLINE] & 0xFF) == OP_OUTPUT:
                meta_word |= E_FAST
            emc[rec, E_META] = meta_word
        if missed:
            drops[in_port, FDROP_TABLE_MISS] += 1
        elif sent == 0 and failed == 0:
            drops[in_port, FDROP_NO_OUTPUT] += 1
    side[SIDE_N, N_NORMAL] = n_normal
    side[SIDE_N, N_PKTIN] = n_pi
    side[SIDE_N, N_EXTRA] = n_extra
    side[SIDE_N, N_OUT] = n_out
    return n_out


@numba.njit(nogil=True, cache=True, _nrt=False)
def append_queues(out: np.ndarray, out_start: np.ndarray, src: np.ndarray, src_start: np.ndarray) -> int:
    """Append the per-port queues ``src``/``src_start`` (e.g. ``switch_burst``'s for the NORMAL list)
    to ``out``/``out_start`` (same number of ports); returns the entries that did not fit."""
    n_ports = out_start.shape[1] - 1
    qcap = out.shape[1] // n_ports
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
def count_flow(meta: np.ndarray, burst: np.ndarray, n: int, ft: np.ndarray, flow: int, now: int) -> None:
    """Count ``burst[:n]`` as lookups of table 0 that matched flow index ``flow`` (the datapath's
    NORMAL-only shortcut, which runs ``switch_burst`` without ``flow_burst``)."""
    total = 0
    for i in range(n):
        total += meta[burst[i], META_LEN]
    fo = ft[H_FL] + flow * FL_W
    ft[fo + FL_PACKETS] += n
    ft[fo + FL_BYTES] += total
    ft[fo + FL_USED] = now
    ft[ft[H_TB] + TB_LOOKUPS] += n


@numba.njit(nogil=True, cache=True, _nrt=False)
def _carry(old_ft: np.ndarray, old_uids: np.ndarray, old_order: np.ndarray,
           new_ft: np.ndarray, new_uids: np.ndarray, new_order: np.ndarray) -> None:
    """Copy flow counters from the old compiled set to the new one, matching by uid (merge of two sorted lists)."""
    o_fl = old_ft[H_FL]
    n_fl = new_ft[H_FL]
    i = 0
    j = 0
    no = old_order.shape[0]
    nn = new_order.shape[0]
    while i < no and j < nn:
        a = old_uids[old_order[i]]
        b = new_uids[new_order[j]]
        if a < b:
            i += 1
        elif b < a:
            j += 1
        else:
            src = o_fl + old_order[i] * FL_W
            dst = n_fl + new_order[j] * FL_W
            new_ft[dst + FL_PACKETS] = old_ft[src + FL_PACKETS]
            new_ft[dst + FL_BYTES] = old_ft[src + FL_BYTES]
            new_ft[dst + FL_USED] = max(old_ft[src + FL_USED], new_ft[dst + FL_USED])
            i += 1
            j += 1


def make_emc(rows: int = DEFAULT_EMC_ROWS) -> np.ndarray:
    """An empty exact-match cache of ``rows`` entries (a power of two; 0 disables the cache)."""
    if rows and rows & (rows - 1):
        raise ValueError(f"EMC rows must be a power of two, got {rows}")
    return np.zeros((rows, EMC_W), dtype=np.int64)


def make_side(cap: int) -> np.ndarray:
    """The ``side`` array of ``flow_burst`` for lists of up to ``cap`` entries."""
    return np.zeros((SIDE_ROWS, max(cap, 4)), dtype=np.int32)


# ---------------------------------------------------------------------------------------------
# control side

_GENERATIONS = itertools.count(1)


@dataclass
class CompiledFlows:
    """One immutable compilation of the flow tables (the datapath swaps whole sets between bursts).

    ``ft`` is the int64 image (header ``H_*``; tables, subtables with their hash buckets, flows with
    their counters, programs); ``flows[i]`` is the ``Flow`` of index ``i``. Only the counters in it
    change after compilation (``flow_burst``, ``FlowTables.activate``).
    """

    ft: np.ndarray
    flows: list[Flow]
    uids: np.ndarray
    uid_order: np.ndarray
    gen: int
    n_tables: int

    def __post_init__(self) -> None:
        self._index = {int(u): i for i, u in enumerate(self.uids.tolist())}

    def index_of(self, flow: Flow) -> int:
        """Index of ``flow`` (by uid) in this set, or -1."""
        return self._index.get(flow.uid, -1)

    def counters(self, flow: Flow) -> tuple[int, int, int]:
        """(packets, bytes, last used) of ``flow`` in this set; zeros (and -1) when it is not in it."""
        i = self.index_of(flow)
        if i < 0:
            return 0, 0, -1
        o = int(self.ft[H_FL]) + i * FL_W
        return int(self.ft[o + FL_PACKETS]), int(self.ft[o + FL_BYTES]), int(self.ft[o + FL_USED])

    def table_counters(self, table_id: int) -> tuple[int, int]:
        """(lookups, matches) of a table."""
        o = int(self.ft[H_TB]) + table_id * TB_W
        return int(self.ft[o + TB_LOOKUPS]), int(self.ft[o + TB_LOOKUPS] - self.ft[o + TB_MISSES])


class FlowTables:
    """The flow tables of one bridge, as Python objects; ``compile()`` turns them into kernel arrays.

    Not thread-safe: one control thread calls add/modify/delete/expire/stats/compile; the datapath
    thread calls only ``activate``.
    """

    def __init__(self, n_tables: int = N_TABLES, emc: bool = True) -> None:
        if not 1 <= n_tables <= 254:
            raise ValueError(f"n_tables must be 1..254, got {n_tables}")
        self.n_tables = n_tables
        self.emc = emc
        self._tables: list[dict[tuple[int, Match], Flow]] = [{} for _ in range(n_tables)]
        self._timed: dict[int, Flow] = {}   # serial -> flow, the flows with an idle or hard timeout
        self._serial = itertools.count(1)
        self._uid = itertools.count(1)
        self.live: CompiledFlows | None = None

    # -------------------------------------------------------------- queries
    def __len__(self) -> int:
        return sum(len(t) for t in self._tables)

    def flows(self, table_id: int = OFPTT_ALL) -> Iterator[Flow]:
        """The flows of one table (or all), in no particular order."""
        for t in self._table_ids(table_id):
            yield from self._tables[t].values()

    def _table_ids(self, table_id: int) -> range:
        if table_id == OFPTT_ALL:
            return range(self.n_tables)
        if not 0 <= table_id < self.n_tables:
            raise FlowError("bad_table_id", f"table {table_id} (have {self.n_tables})")
        return range(table_id, table_id + 1)

    def _select(self, table_id: int, match: Match, priority: int, strict: bool, out_port: int,
                cookie: int, cookie_mask: int) -> list[Flow]:
        chosen = []
        for t in self._table_ids(table_id):
            if strict:
                f = self._tables[t].get((priority, match))
                cands: Iterable[Flow] = (f,) if f is not None else ()
            else:
                cands = [f for f in self._tables[t].values() if match.covers(f.match)]
            for f in cands:
                if (f.cookie ^ cookie) & cookie_mask:
                    continue
                if out_port != OFPP_ANY and out_port not in f.instructions.output_ports():
                    continue
                chosen.append(f)
        return chosen

    def _counters(self, f: Flow) -> tuple[int, int, int]:
        return self.live.counters(f) if self.live is not None else (0, 0, -1)

    def _stats(self, f: Flow, now: int) -> FlowStats:
        packets, nbytes, used = self._counters(f)
        return FlowStats(f, packets - f.packet_base, nbytes - f.byte_base, now - f.installed,
                         now - max(used, f.installed))

    def stats(self, table_id: int = OFPTT_ALL, match: Match | None = None, out_port: int = OFPP_ANY,
              cookie: int = 0, cookie_mask: int = 0, now: int = 0) -> list[FlowStats]:
        """Multipart flow stats: the flows non-strictly selected by the arguments, with counters."""
        sel = self._select(table_id, match or Match(), 0, False, out_port, cookie, cookie_mask)
        return [self._stats(f, now) for f in sel]

    def aggregate(self, table_id: int = OFPTT_ALL, match: Match | None = None, out_port: int = OFPP_ANY,
                  cookie: int = 0, cookie_mask: int = 0) -> tuple[int, int, int]:
        """Multipart aggregate stats: (packets, bytes, flows)."""
        st = self.stats(table_id, match, out_port, cookie, cookie_mask)
        return sum(s.packets for s in st), sum(s.bytes for s in st), len(st)

    def table_stats(self) -> list[tuple[int, int, int, int]]:
        """(table_id, active flows, lookups, matches) per table."""
        out = []
        for t in range(self.n_tables):
            lookups, matched = self.live.table_counters(t) if self.live is not None else (0, 0)
            out.append((t, len(self._tables[t]), lookups, matched))
        return out

    # -------------------------------------------------------------- flow-mods
    def _check(self, flow: Flow) -> None:
        if not 0 <= flow.table_id < self.n_tables:
            raise FlowError("bad_table_id", f"table {flow.table_id} (have {self.n_tables})")
        if not 0 <= flow.priority <= 0xFFFF:
            raise FlowError("bad_priority", f"priority {flow.priority}")
        if not (0 <= flow.idle_timeout <= 0xFFFF and 0 <= flow.hard_timeout <= 0xFFFF):
            raise FlowError("bad_timeout", "timeouts are 0..65535 seconds")
        if not 0 <= flow.cookie < 1 << 64:
            raise FlowError("bad_cookie", f"cookie {flow.cookie:#x}")
        self._check_instructions(flow.table_id, flow.instructions)

    def _check_instructions(self, table_id: int, ins: Instructions) -> None:
        if ins.goto is not None and not table_id < ins.goto < self.n_tables:
            raise FlowError("bad_goto", f"goto_table {ins.goto} from table {table_id}")
        ins.words()  # validates every action

    def add(self, flow: Flow, now: int = 0) -> Flow:
        """OpenFlow ADD: install a copy of ``flow`` (returned); a flow with the same match and
        priority in that table is replaced (its counters carried over unless OFPFF_RESET_COUNTS).
        OFPFF_CHECK_OVERLAP refuses a flow that overlaps another of the same priority."""
        self._check(flow)
        table = self._tables[flow.table_id]
        key = (flow.priority, flow.match)
        old = table.get(key)
        if flow.flags & OFPFF_CHECK_OVERLAP:
            for f in table.values():
                if f is not old and f.priority == flow.priority and f.match.overlaps(flow.match):
                    raise FlowError("overlap", f"overlaps {f.match} at priority {f.priority}")
        uid = old.uid if old is not None and not flow.flags & OFPFF_RESET_COUNTS else next(self._uid)
        new = Flow(flow.table_id, flow.priority, flow.match, flow.instructions, flow.cookie, flow.idle_timeout,
                   flow.hard_timeout, flow.flags, now, next(self._serial), uid)
        if old is not None and uid == old.uid:
            new.packet_base, new.byte_base = old.packet_base, old.byte_base
        if old is not None:
            self._timed.pop(old.serial, None)
        if new.idle_timeout or new.hard_timeout:
            self._timed[new.serial] = new
        table[key] = new
        return new

    def modify(self, table_id: int, match: Match, priority: int = 0, strict: bool = False, cookie: int = 0,
               cookie_mask: int = 0, instructions: Instructions = DROP, reset_counts: bool = False) -> list[Flow]:
        """OpenFlow MODIFY(_STRICT): replace the instructions of the selected flows (cookie, timeouts
        and counters are kept; ``reset_counts`` clears the counters). Returns the modified flows;
        nothing is added when nothing matches."""
        chosen = self._select(table_id, match, priority, strict, OFPP_ANY, cookie, cookie_mask)
        for f in chosen:
            self._check_instructions(f.table_id, instructions)
        for f in chosen:
            f.instructions = instructions
            if reset_counts:
                f.packet_base, f.byte_base, _used = self._counters(f)
        return chosen

    def delete(self, table_id: int = OFPTT_ALL, match: Match | None = None, priority: int = 0,
               strict: bool = False, out_port: int = OFPP_ANY, cookie: int = 0, cookie_mask: int = 0,
               now: int = 0) -> list[FlowStats]:
        """OpenFlow DELETE(_STRICT): remove the selected flows; returns them with their final counters.

        Non-strict: every flow whose match ``match`` covers (at least as specific), any priority.
        Strict: the flow with exactly ``match`` and ``priority``."""
        chosen = self._select(table_id, match or Match(), priority, strict, out_port, cookie, cookie_mask)
        out = []
        for f in chosen:
            out.append(self._stats(f, now))
            del self._tables[f.table_id][(f.priority, f.match)]
            self._timed.pop(f.serial, None)
        return out

    def expire(self, now: int) -> list[tuple[FlowStats, int]]:
        """Remove the flows whose idle or hard timeout has passed at ``now``; returns (stats, OFPRR_*)."""
        gone = []
        for f in list(self._timed.values()):
            st = self._stats(f, now)
            if f.hard_timeout and st.duration >= f.hard_timeout:
                reason = OFPRR_HARD_TIMEOUT
            elif f.idle_timeout and st.idle >= f.idle_timeout:
                reason = OFPRR_IDLE_TIMEOUT
            else:
                continue
            del self._tables[f.table_id][(f.priority, f.match)]
            del self._timed[f.serial]
            gone.append((st, reason))
        return gone

    # -------------------------------------------------------------- compilation
    def compile(self, port_map: dict[int, int] | None = None, miss_max_len: int = 0) -> CompiledFlows:
        """Build a new ``CompiledFlows`` from the current flows (the datapath keeps running the old one).

        ``port_map``: OpenFlow port number -> dense datapath port, applied to ``in_port`` matches and
        OUTPUT actions (flows keep OpenFlow numbers; ports absent from the map become ``NO_PORT``).
        Without it the flows' port numbers are the dense ports. ``miss_max_len`` > 0: a table miss sends
        the frame's first ``miss_max_len`` bytes to the controllers (``OFPR_NO_MATCH``, flow index
        ``len(flows)`` in the packet-in list), as OVS does for OpenFlow 1.0 controllers, instead of dropping it."""
        flows = sorted(self.flows(), key=lambda f: (f.table_id, -f.priority, f.serial))
        n = len(flows)
        nt = self.n_tables
        progs: list[list[int]] = []
        groups: dict[tuple[int, tuple[tuple[int, int], ...]], list[int]] = {}
        union: dict[int, int] = {}
        matches: list[tuple[tuple[int, int, int], ...]] = []
        for i, f in enumerate(flows):
            progs.append(f.instructions.words(port_map))
            cols = f.match.columns()
            if port_map is not None:
                cols = tuple((c, port_map.get(v, NO_PORT) if c == K_IN_PORT else v, m) for c, v, m in cols)
            matches.append(cols)
            sig = tuple((c, m) for c, _v, m in cols)
            groups.setdefault((f.table_id, sig), []).append(i)
            for c, _v, m in cols:
                union[c] = union.get(c, 0) | m
        # VLAN actions do nothing on an untagged frame: with any of them, tagged-or-not is part of the EMC key.
        vlan_ops = (OP_PUSH_VLAN, OP_POP_VLAN, OP_SET_VLAN_VID, OP_SET_VLAN_PCP, OP_MOD_VLAN_VID)
        if any((w & OP_MASK) in vlan_ops for p in progs for w in p):
            union[K_VLAN_VID] = union.get(K_VLAN_VID, 0) | VID_PRESENT
        # subtables, per table in order of their best flow
        subs = sorted(groups.items(), key=lambda kv: (kv[0][0], kv[1][0]))
        plen = np.array([len(p) for p in progs], dtype=np.int64)
        sizes = []
        for (_t, sig), idx in subs:
            cap = 2
            while cap < 2 * len(idx):
                cap *= 2
            sizes.append((cap, 2 + len(sig)))
        o_tb = H_SIZE
        o_st = o_tb + nt * TB_W
        o_u = o_st + len(subs) * ST_W
        inline = plen == 1
        n_words = int(plen[~inline].sum())
        o_fl = o_u + 2 * max(len(union), EMC_FAST)
        hidden = 1 if miss_max_len > 0 else 0   # the table-miss flow's row, after the flows
        total = o_fl + FL_W + (n + hidden) * FL_W + n_words + sum(c * w for c, w in sizes)
        ft = np.zeros(total, dtype=np.int64)
        o_fl += (-(ft.ctypes.data // 8) - o_fl) % FL_W  # flow rows on cache lines
        o_prog = o_fl + (n + hidden) * FL_W
        o_ht = o_prog + n_words
        gen = next(_GENERATIONS)
        ft[H_GEN] = gen
        ft[H_N_FLOWS] = n
        ft[H_N_TABLES] = nt
        ft[H_TB] = o_tb
        ft[H_ST] = o_st
        ft[H_FL] = o_fl
        ft[H_NU] = len(union)
        ft[H_U] = o_u
        ft[H_EMC] = 1 if self.emc else 0
        for j, (c, m) in enumerate(sorted(union.items())):
            ft[o_u + 2 * j] = c
            ft[o_u + 2 * j + 1] = _s64(m)
        # flows (one-word programs inline) and the other programs
        out_of_line = np.where(inline, 0, plen)
        prog_ofs = o_prog + np.cumsum(out_of_line) - out_of_line
        fl = np.zeros((n, FL_W), dtype=np.int64)
        fl[:, FL_PROG] = np.where(inline, o_fl + np.arange(n) * FL_W + FL_INLINE, prog_ofs)
        fl[:, FL_PLEN] = plen
        fl[:, FL_USED] = [f.installed for f in flows]
        fl[:, FL_INFO] = [f.table_id | f.priority << 8 | (FLF_TABLE_MISS if f.is_table_miss else 0) << 24
                          for f in flows]
        fl[:, FL_COOKIE] = [_s64(f.cookie) for f in flows]
        fl[:, FL_INLINE] = [_s64(p[0]) if len(p) == 1 else 0 for p in progs]
        ft[o_fl:o_fl + n * FL_W] = fl.reshape(-1)
        if hidden:
            row = o_fl + n * FL_W
            ft[row + FL_PROG] = row + FL_INLINE
            ft[row + FL_PLEN] = 1
            ft[row + FL_INFO] = FLF_TABLE_MISS << 24
            ft[row + FL_INLINE] = OP_CONTROLLER | min(miss_max_len, OFPCML_NO_BUFFER) << 8
            ft[H_MISS] = n + 1
        if n_words:
            ft[o_prog:o_ht] = [_s64(w) for p in progs if len(p) != 1 for w in p]
        # tables, subtables, buckets
        hofs = o_ht
        for k, (((t, sig), idx), (cap, stride)) in enumerate(zip(subs, sizes, strict=True)):
            st = o_st + k * ST_W
            tb = o_tb + t * TB_W
            if ft[tb + TB_COUNT] == 0:
                ft[tb + TB_FIRST] = k
            ft[tb + TB_COUNT] += 1
            ft[st + ST_BEST] = idx[0]
            ft[st + ST_HOFS] = hofs
            ft[st + ST_HMASK] = cap - 1
            ft[st + ST_STRIDE] = stride
            ft[st + ST_NF] = len(sig)
            for q, (c, m) in enumerate(sig):
                ft[st + ST_F + 2 * q] = c
                ft[st + ST_F + 2 * q + 1] = _s64(m)
            vals = np.array([[_s64(v) for _c, v, _m in matches[i]] for i in idx],
                            dtype=np.int64).reshape(len(idx), len(sig))
            _fill_buckets(ft, hofs, cap - 1, stride, vals, np.array(idx, dtype=np.int64))
            hofs += cap * stride
        uids = np.array([f.uid for f in flows], dtype=np.int64)
        return CompiledFlows(ft, flows, uids, np.argsort(uids, kind="stable"), gen, nt)

    def activate(self, compiled: CompiledFlows) -> CompiledFlows:
        """Make ``compiled`` the live set: carry counters over from the previous live set by flow uid
        (and the table counters). Call on the datapath thread between bursts, then pass
        ``compiled.ft`` to ``flow_burst``."""
        old = self.live
        if old is not None and old is not compiled:
            _carry(old.ft, old.uids, old.uid_order, compiled.ft, compiled.uids, compiled.uid_order)
            for t in range(min(old.n_tables, compiled.n_tables)):
                a, b = int(old.ft[H_TB]) + t * TB_W, int(compiled.ft[H_TB]) + t * TB_W
                compiled.ft[b + TB_LOOKUPS:b + TB_W] = old.ft[a + TB_LOOKUPS:a + TB_W]
        self.live = compiled
        return compiled
