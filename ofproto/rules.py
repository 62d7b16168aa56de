"""OpenFlow rules as the control side holds them: matches, actions, instructions, flows.

A ``Match`` is a set of OXM fields, each ``(value, mask)``; ``Match.words()`` gives it as masked
comparisons on the datapath key (``dpif.key``), the form the translator's lookup uses, with each
field's place taken from the field registry (``ofproto.fields``). Prerequisites (``ipv4_src`` needs
``eth_type=0x0800`` ...) are checked where a flow-mod is decoded. ``vlan_vid`` uses the key's
``VID | 0x1000`` form, which is OpenFlow's ``OFPVID_PRESENT``.

Flows keep OpenFlow port numbers (1.3 numbering: LOCAL is ``0xfffffffe``); the translator maps them
to datapath ports. Ties between flows of one priority go to the flow added first (lowest ``serial``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ofproto import fields as _fields
from ofproto import tlvmap
from ofproto.actions import (  # noqa: F401  (re-exported: callers import the action model from here)
    OFPCML_NO_BUFFER,
    OFPP_ALL,
    OFPP_ANY,
    OFPP_CONTROLLER,
    OFPP_FLOOD,
    OFPP_IN_PORT,
    OFPP_LOCAL,
    OFPP_MAX,
    OFPP_NORMAL,
    OFPP_TABLE,
    Action,
    Clone,
    Conjunction,
    Controller,
    Ct,
    CtClear,
    DecTtl,
    Exit,
    FinTimeout,
    FlowError,
    Learn,
    LearnSpec,
    Load,
    ModVlanVid,
    Move,
    Nat,
    Note,
    Output,
    OutputReg,
    PopVlan,
    PushVlan,
    Resubmit,
    SetField,
    StackPop,
    StackPush,
    check_action,
)

N_TABLES = 254                # tables 0 .. 253, as OVS (FlowTables(n_tables=...) may use fewer)
OFP_DEFAULT_PRIORITY = 0x8000
OFPTT_ALL = 0xFF
OFPVID_PRESENT = 0x1000
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
# match fields: OXM name -> (bits, ((key word, value shift, word shift, width), ...))

#: the OpenFlow-basic (OXM) fields of the registry that live in the datapath key
_OXM_NAMES = tuple(f.oxm_name for f in sorted(
    (f for f in _fields.FIELDS if f.oxm is not None and f.oxm[0] == _fields.OFPXMC_OPENFLOW_BASIC
     and f.oxm_name and f.where == _fields.KEY), key=lambda f: f.oxm[1]))


def _match_field(name: str) -> tuple[int, tuple[tuple[int, int, int, int], ...]]:
    f = _fields.by_oxm_name(name)
    if f is None or f.key is None:
        raise ImportError(f"the field registry has no key slice for OXM field {name!r}")
    word, shift, width = f.key
    if width > 64:   # high word first
        n = width // 64
        return f.bits, tuple((word + j, 64 * (n - 1 - j), 0, 64) for j in range(n))
    # arp_op is 16 bits on the wire and 8 in the key (OVS keeps it in nw_proto): the high byte is dropped
    return f.bits, ((word, 0, shift, min(width, f.bits)),)


MATCH_FIELDS: dict[str, tuple[int, tuple[tuple[int, int, int, int], ...]]] = {n: _match_field(n) for n in _OXM_NAMES}


def _flow_field(name: str) -> tuple[int, tuple[tuple[int, int, int, int], ...]]:
    f = _fields.by_name(name)
    sl = _fields.flow_slice(f) if f is not None else None
    if f is None or sl is None:
        raise ImportError(f"the field registry has no flow-state slice for {name!r}")
    word, shift, width = sl
    bits = width if f.where == _fields.TLV else f.bits   # a Geneve option: as long as the TLV map says
    if width > 64:
        n = width // 64
        return bits, tuple((word + j, 64 * (n - 1 - j), 0, 64) for j in range(n))
    return bits, ((word, 0, shift, width),)


#: fields a ``Match`` takes besides the OXM ones, by registry name: pipeline state (registers, metadata,
#: ``conj_id``; words after the key's, ``fields.FLOW_WORDS``) and the key fields only NXM names (``pkt_mark``,
#: ``nw_ttl``, ``ip_frag``, ``tcp_flags``, ``vlan_tci``, ``ct_*``, ``tun_*`` ...). The wire side admits them.
NX_MATCH_FIELDS: dict[str, tuple[int, tuple[tuple[int, int, int, int], ...]]] = {
    n: _flow_field(n) for n in ("metadata", *_fields.PIPELINE_SLICES)}
NX_MATCH_FIELDS.update({f.name: _flow_field(f.name) for f in _fields.FIELDS
                        if f.where == _fields.KEY and f.nxm is not None and f.name not in MATCH_FIELDS
                        and f.oxm_name not in MATCH_FIELDS})
#: every name a ``Match`` takes
ALL_MATCH_FIELDS = {**MATCH_FIELDS, **NX_MATCH_FIELDS}


def _tlv_map_changed() -> None:
    """The mapped ``tun_metadata`` fields join (and the unmapped leave) the match fields."""
    for table in (NX_MATCH_FIELDS, ALL_MATCH_FIELDS):
        for name in [n for n in table if n.startswith("tun_metadata")]:
            del table[name]
        for name in tlvmap.placed():
            table[name] = _flow_field(name)


tlvmap.listen(_tlv_map_changed)

#: fields ``set_field`` may write, with their widths
SET_FIELDS = {"eth_dst": 48, "eth_src": 48, "vlan_vid": 13, "vlan_pcp": 3}


class Match:
    """An OpenFlow match: OXM field name -> (value, mask), normalised (value & mask, no zero masks).

    ``Match(in_port=1, eth_dst=0x020000000001, ipv4_dst=(0x0A000000, 0xFFFFFF00))``: a plain int
    is an exact match. Two matches are equal when their normalised fields are.
    """

    __slots__ = ("fields", "_cols", "_hash")

    def __init__(self, **fields: int | tuple[int, int]) -> None:
        norm: dict[str, tuple[int, int]] = {}
        for name, vm in fields.items():
            if name not in ALL_MATCH_FIELDS:
                why = tlvmap.why_unplaced(name) if name.startswith("tun_metadata") else ""
                raise FlowError("bad_field", why or f"unknown match field {name!r}")
            bits = ALL_MATCH_FIELDS[name][0]
            full = (1 << bits) - 1
            value, mask = (vm, full) if isinstance(vm, int) else (int(vm[0]), int(vm[1]))
            if value < 0 or value > full or mask < 0 or mask > full:
                raise FlowError("bad_value", f"{name}: value {value:#x} / mask {mask:#x} wider than {bits} bits")
            if mask:
                norm[name] = (value & mask, mask)
        self.fields: tuple[tuple[str, int, int], ...] = tuple(sorted((k, v, m) for k, (v, m) in norm.items()))
        cols: dict[int, tuple[int, int]] = {}
        for name, value, mask in self.fields:
            for col, vshift, cshift, width in ALL_MATCH_FIELDS[name][1]:
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

    def words(self) -> tuple[tuple[int, int, int], ...]:
        """The match as ``(flow-state word, value, mask)`` triples sorted by word: key words
        (``dpif.key``), then pipeline words (``fields.FLOW_WORDS``); ``in_port`` still the OpenFlow
        port number."""
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
        parts = [f"{k}={v:#x}" if m == (1 << ALL_MATCH_FIELDS[k][0]) - 1 else f"{k}={v:#x}/{m:#x}"
                 for k, v, m in self.fields]
        return f"Match({', '.join(parts)})"


@dataclass(frozen=True)
class Instructions:
    """A flow's instructions, executed in OpenFlow order: apply-actions, clear-actions, write-actions,
    write-metadata (``metadata``: value, mask), goto-table. No instruction at all (and no goto) means drop."""

    apply: tuple[Action, ...] = ()
    clear: bool = False
    write: tuple[Action, ...] = ()
    goto: int | None = None
    metadata: tuple[int, int] | None = None

    def check(self) -> None:
        """Raise ``FlowError`` for an action the switch cannot execute, or a conjunctive flow with other
        actions or instructions than ``conjunction`` and ``note`` (``bad_conjunction``, as OVS refuses it)."""
        for a in self.apply:
            check_action(a)
        if self.conjunctions():
            other = next((a for a in self.apply if not isinstance(a, (Conjunction, Note))), None)
            if other is not None or self.write or self.clear or self.goto is not None or self.metadata is not None:
                what = type(other).__name__ if other is not None else "another instruction"
                raise FlowError("bad_conjunction", f"conjunction actions may be used along with note only, not {what}")
        for a in self.write:
            check_action(a, in_action_set=True)
        if self.metadata is not None:
            value, mask = self.metadata
            if not (0 <= value < 1 << 64 and 0 <= mask < 1 << 64) or value & ~mask:
                raise FlowError("bad_metadata", f"write_metadata {value:#x}/{mask:#x}")

    def conjunctions(self) -> tuple[Conjunction, ...]:
        """The ``conjunction`` actions of apply-actions (not inside ``clone``): the flow is a clause of each."""
        return tuple(a for a in self.apply if isinstance(a, Conjunction))

    def output_ports(self) -> set[int]:
        """Ports named by OUTPUT actions (apply, write, inside clone), for the ``out_port`` filter."""
        def walk(acts: tuple[Action, ...]) -> set[int]:
            out: set[int] = set()
            for a in acts:
                if isinstance(a, Output):
                    out.add(a.port)
                elif isinstance(a, Clone):
                    out |= walk(a.actions)
                elif isinstance(a, Controller):
                    out.add(OFPP_CONTROLLER)
            return out
        return walk((*self.apply, *self.write))


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
    importance: int = 0    # 1.4+: which flows an evicting table keeps (kept and reported, nothing evicts yet)

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
