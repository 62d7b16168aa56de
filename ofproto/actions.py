"""The OpenFlow action model: the actions a flow's instructions (or a packet-out) hold, as Python objects.

OpenFlow's own actions (``Output``, ``PushVlan``, ``PopVlan``, ``SetField``, ``ModVlanVid``) and the
Nicira extensions the translator runs: ``Resubmit``, ``Load`` (a ``SetField`` written as
``load:``), ``Move``, ``StackPush`` / ``StackPop``, ``Note``, ``Exit``, ``OutputReg``, ``DecTtl``,
``Clone``, ``Conjunction``, ``Controller`` (``controller(...)``: reason, id, userdata, pause, meter), and
conntrack / learning: ``Ct`` (with ``Nat`` inside), ``CtClear``, ``Learn``, ``FinTimeout`` (their text:
``ofproto.nxtext``). Fields are named as the field registry (``ofproto.fields``) names them (``reg13``,
``xxreg0``, ``eth_src``, ``ip_dst``, ``metadata`` ...); a bit range is ``(field, ofs, nbits)``, OVS's
``field[ofs..ofs+nbits-1]``.

``check_action`` refuses, with a ``FlowError``, what the switch cannot execute: a field the registry
does not know, a bit range outside its field, a write to a read-only field, or a header the
datapath's executor (``dpif.actions``) cannot rewrite (IPv6 addresses and label, ARP, ICMP, ND, VLAN
TCI, tunnel and conntrack fields, for now; ``ct_mark`` / ``ct_label`` only inside ``ct``'s exec). ``Group``
and ``Meter`` name entries of the bridge's group and meter tables (``ofproto.groups``, ``ofproto.meters``).
A flow whose actions hold ``conjunction`` may hold only ``conjunction`` and ``note`` (``Instructions.check``:
``bad_conjunction``, OVS's NXBAC_BAD_CONJUNCTION).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ofproto import fields as _fields
from ofproto import tlvmap

OFPP_MAX = 0xFFFFFF00         # port numbers below this are ports
OFPP_IN_PORT = 0xFFFFFFF8
OFPP_TABLE = 0xFFFFFFF9
OFPP_NORMAL = 0xFFFFFFFA
OFPP_FLOOD = 0xFFFFFFFB
OFPP_ALL = 0xFFFFFFFC
OFPP_CONTROLLER = 0xFFFFFFFD
OFPP_LOCAL = 0xFFFFFFFE
OFPP_ANY = 0xFFFFFFFF
OFPCML_NO_BUFFER = 0xFFFF

#: the register stack's depth (``StackPush`` beyond it does nothing; OVS bounds it by memory alone)
STACK_DEPTH = 1024


class FlowError(ValueError):
    """A flow-mod the tables refuse; ``code`` is a short OpenFlow-like error name."""

    def __init__(self, code: str, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code


# ---------------------------------------------------------------- OpenFlow actions


@dataclass(frozen=True)
class Output:
    """OUTPUT to an OpenFlow port or a reserved ``OFPP_*`` port; ``max_len`` for CONTROLLER."""

    port: int
    max_len: int = OFPCML_NO_BUFFER


@dataclass(frozen=True)
class PushVlan:
    """PUSH_VLAN: a new outer tag copying the VID/PCP of the current outer tag (0 when untagged)."""

    ethertype: int = 0x8100


@dataclass(frozen=True)
class PopVlan:
    """POP_VLAN: remove the outer tag."""


@dataclass(frozen=True)
class SetField:
    """SET_FIELD: ``field = (field & ~mask) | (value & mask)`` (``mask`` None: the whole field).

    ``vlan_vid`` (with or without OFPVID_PRESENT) and ``vlan_pcp`` change the outer tag of a tagged
    frame only, and take no mask. Every other field is a registry name: a header field the datapath
    can rewrite (``WRITABLE_HEADERS``), ``pkt_mark``, or pipeline state (registers, ``metadata``)."""

    field: str
    value: int
    mask: int | None = None


@dataclass(frozen=True)
class Load(SetField):
    """Nicira's ``load:value->field[ofs..ofs+nbits-1]``: a masked ``SetField`` that remembers it was
    written as a load (``Load.bits`` builds one from a bit range)."""

    @classmethod
    def bits(cls, field: str, value: int, ofs: int = 0, nbits: int | None = None) -> Load:
        """``load:value->field[ofs..ofs+nbits-1]`` (``nbits`` None: to the end of the field)."""
        width = field_bits(field)
        n = width - ofs if nbits is None else nbits
        return cls(field, value << ofs, ((1 << n) - 1) << ofs)

    @property
    def ofs(self) -> int:
        m = self.mask or 0
        return (m & -m).bit_length() - 1 if m else 0

    @property
    def nbits(self) -> int:
        return (self.mask or 0).bit_length() - self.ofs


@dataclass(frozen=True)
class ModVlanVid:
    """OpenFlow 1.0 SET_VLAN_VID (``mod_vlan_vid``): sets the VID of the outer tag; a frame without a tag gets an
    802.1Q tag with this VID and PCP 0."""

    vid: int


# ---------------------------------------------------------------- Nicira extensions


@dataclass(frozen=True)
class Resubmit:
    """``resubmit(port,table)``: look the frame up in ``table`` (None: the current one) as if it came
    from ``port`` (None: its in_port), run that flow's instructions, come back."""

    port: int | None = None
    table: int | None = None


@dataclass(frozen=True)
class Move:
    """``move:src[src_ofs..]->dst[dst_ofs..]``: copy ``nbits`` bits between fields."""

    src: str
    dst: str
    nbits: int
    src_ofs: int = 0
    dst_ofs: int = 0


@dataclass(frozen=True)
class StackPush:
    """``push:field[ofs..ofs+nbits-1]``: push those bits onto the register stack."""

    field: str
    ofs: int = 0
    nbits: int | None = None


@dataclass(frozen=True)
class StackPop:
    """``pop:field[ofs..ofs+nbits-1]``: pop the top of the stack into those bits (its low ``nbits``);
    an empty stack leaves the field alone."""

    field: str
    ofs: int = 0
    nbits: int | None = None


@dataclass(frozen=True)
class Note:
    """``note:hex``: does nothing."""

    data: bytes = b""


@dataclass(frozen=True)
class Exit:
    """``exit``: stop this action list and every list that resubmitted to it (in this bridge; the action
    set still runs)."""


@dataclass(frozen=True)
class OutputReg:
    """``output:field[ofs..ofs+nbits-1]``: output to the OpenFlow port those bits hold."""

    field: str
    ofs: int = 0
    nbits: int | None = None
    max_len: int = OFPCML_NO_BUFFER


@dataclass(frozen=True)
class DecTtl:
    """``dec_ttl`` / ``dec_ttl(ids)``: decrement the IPv4 TTL / IPv6 hop limit; at 0 or 1 the frame goes to
    the controllers with reason ``invalid_ttl`` and the rest of the action list is skipped. A frame that
    is not IP is left alone."""

    ids: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class Clone:
    """``clone(actions)``: run ``actions`` on a copy of the frame and its pipeline state; nothing they
    change is seen afterwards."""

    actions: tuple[Action, ...] = ()


@dataclass(frozen=True)
class Controller:
    """``controller(reason=,max_len=,id=,userdata=,pause,meter_id=)``: a packet-in to the controllers whose
    controller id is ``controller_id``, carrying ``userdata``; ``pause`` freezes the pipeline (registers, stack,
    the actions still to run) into the packet-in's continuation, and NXT_RESUME runs the rest. ``meter_id``
    (0: none): the packet-in pays that meter first (over its rate, no packet-in; the frame goes on)."""

    max_len: int = OFPCML_NO_BUFFER
    controller_id: int = 0
    reason: int = 1             # OFPR_ACTION
    userdata: bytes = b""
    pause: bool = False
    meter_id: int = 0


#: packet-in reasons by name, as ovs-ofctl writes them in ``controller(reason=...)``
CONTROLLER_REASONS = {0: "no_match", 1: "action", 2: "invalid_ttl", 3: "action_set", 4: "group", 5: "packet_out"}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: a bit range of a field: (registry name, ofs, nbits)
Subfield = tuple[str, int, int]


@dataclass(frozen=True)
class Nat:
    """``nat(src|dst=addr_min[-addr_max][:port_min[-port_max]],persistent,hash,random)``, only inside
    ``ct``: ``kind`` "src" or "dst" (a new connection's translation), "" (reverse the translation of an
    established one)."""

    kind: str = ""
    addr_min: IPAddress | None = None
    addr_max: IPAddress | None = None
    port_min: int | None = None
    port_max: int | None = None
    persistent: bool = False
    hash: bool = False
    random: bool = False


@dataclass(frozen=True)
class Ct:
    """``ct(commit,force,table=N,zone=Z,nat(...),exec(...),alg=A)``: send the frame through the
    connection tracker in zone ``zone`` (a number, or a 16-bit ``Subfield`` it is read from); ``table``:
    continue in that table with the ct_* fields filled in (None: no recirculation); ``actions``: a
    ``Nat`` and the writes to ``ct_mark`` / ``ct_label`` ``commit`` stores with the connection."""

    commit: bool = False
    force: bool = False
    zone: int | Subfield = 0
    table: int | None = None
    alg: int = 0
    actions: tuple[Action, ...] = ()


@dataclass(frozen=True)
class CtClear:
    """``ct_clear``: the frame's conntrack state (ct_state, ct_zone, ct_mark, ct_label, the ct tuple) back
    to none."""


@dataclass(frozen=True)
class FinTimeout:
    """``fin_timeout(idle_timeout=N,hard_timeout=M)``: a TCP FIN or RST through this flow cuts its idle / hard
    timeout down to N / M seconds (0: that timeout is left alone). ``learn`` with fin timeouts gives its
    flows one."""

    idle_timeout: int = 0
    hard_timeout: int = 0


@dataclass(frozen=True)
class LearnSpec:
    """One argument of ``learn``: ``dst_type`` "match" (the learned flow matches ``dst`` bits on the value),
    "load" (it loads the value into ``dst`` bits) or "output" (it outputs to the port the value names);
    the value is ``n_bits`` bits of field ``src`` from ``src_ofs`` of the packet that learns, or the
    immediate ``value`` when ``src`` is None."""

    dst_type: str
    n_bits: int
    src: str | None = None
    src_ofs: int = 0
    value: int = 0
    dst: str | None = None
    dst_ofs: int = 0


@dataclass(frozen=True)
class Learn:
    """``learn(table=N,idle_timeout=..,priority=..,cookie=..,delete_learned,...,specs)``: add (or replace)
    a flow in ``table`` built from ``specs`` and the packet; ``delete_learned``: the flows it learned go
    when the learning flow goes."""

    table: int = 1
    specs: tuple[LearnSpec, ...] = ()
    idle_timeout: int = 0
    hard_timeout: int = 0
    priority: int = 0x8000
    cookie: int = 0
    send_flow_rem: bool = False
    delete_learned: bool = False
    fin_idle_timeout: int = 0
    fin_hard_timeout: int = 0


@dataclass(frozen=True)
class Group:
    """GROUP: process the frame through group ``group_id`` of the bridge's group table (``ofproto.groups``)."""

    group_id: int


@dataclass(frozen=True)
class Meter:
    """METER (OpenFlow 1.5's action, 1.3/1.4's meter instruction): the frame passes meter ``meter_id``
    (``ofproto.meters``)."""

    meter_id: int


OFPG_MAX = 0xFFFFFF00        # group numbers above this are reserved (OFPG_ALL, OFPG_ANY)
OFPM_MAX = 0xFFFF0000        # meter numbers above this are reserved (slowpath, controller, all)


@dataclass(frozen=True)
class Conjunction:
    """``conjunction(id,k/n)``: the flow is clause ``clause`` (1-based) of the ``n_clauses`` of conjunctive
    match ``id`` in its table (ovs-fields(7), "Conjunctive Match Fields"); it is never executed as such: a
    packet that matches a flow of every clause is looked up again with ``conj_id=id``. Run by a packet-out
    or inside ``clone`` it does nothing."""

    id: int
    clause: int
    n_clauses: int


#: clauses of one conjunction, at most (OVS's limit)
MAX_CLAUSES = 64

Action = (Output | PushVlan | PopVlan | SetField | ModVlanVid | Resubmit | Move | StackPush | StackPop | Note | Exit
          | OutputReg | DecTtl | Clone | Controller | Ct | Nat | CtClear | Learn | FinTimeout | Group | Meter
          | Conjunction)

#: actions a write-actions instruction (the action set) may hold
ACTION_SET_KINDS = (Output, PushVlan, PopVlan, SetField, ModVlanVid, Group)

# ---------------------------------------------------------------- fields the actions read and write

#: key fields whose bits the datapath's SET_MASKED rewrites in the frame: Ethernet addresses, IPv4 / IPv6
#: addresses, tos / ttl (IPv6: traffic class / hop limit), TCP/UDP ports, ICMP / ICMPv6 type and code, ND
#: target and link-layer addresses, ARP opcode and addresses (``dpif.rewrite``)
WRITABLE_HEADERS = frozenset({"eth_src", "eth_dst", "ip_src", "ip_dst", "nw_tos", "ip_dscp", "nw_ecn", "nw_ttl",
                              "tcp_src", "tcp_dst", "udp_src", "udp_dst", "ipv6_src", "ipv6_dst", "arp_op",
                              "arp_spa", "arp_tpa", "arp_sha", "arp_tha", "icmp_type", "icmp_code", "icmpv6_type",
                              "icmpv6_code", "nd_target", "nd_sll", "nd_tll"})
#: key fields written as translator state only (no header carries them): later lookups and outputs see
#: the value (``in_port``: an OpenFlow port number; the tunnel fields: what a tunnel port's output will use)
WRITABLE_STATE = frozenset({"pkt_mark", "in_port", "tun_id", "tun_src", "tun_dst", "tun_ipv6_src", "tun_ipv6_dst",
                            "tun_flags"})
_VLAN_SET = {"vlan_vid": 13, "vlan_pcp": 3}


def _field(name: str) -> _fields.Field:
    f = _fields.by_name(name) or _fields.by_oxm_name(name)
    if f is None or _fields.flow_slice(f) is None:
        if f is not None and f.where == _fields.TLV:
            raise FlowError("bad_field", tlvmap.why_unplaced(f.name))
        raise FlowError("bad_field", f"unknown field {name!r} (or one the switch has no place for)")
    return f


def field_bits(name: str) -> int:
    """The width of field ``name`` (registry or OXM name) in bits."""
    if name in _VLAN_SET:
        return _VLAN_SET[name]
    f = _field(name)
    if f.where == _fields.TLV:   # as long as the TLV map makes it
        return _fields.flow_slice(f)[2]   # type: ignore[index]
    if f.name == "arp_op":     # 16 bits on the wire; the key (nw_proto's bits) keeps the low 8, as OVS does
        return f.bits
    return f.bits if f.where != _fields.KEY or f.key is None else min(f.bits, f.key[2])


def writable(name: str) -> str:
    """The registry name of a field actions may write (raises ``FlowError`` otherwise)."""
    f = _field(name)
    if f.read_only:
        raise FlowError("bad_set_field", f"{f.name} is read-only")
    if f.where in (_fields.PIPELINE, _fields.TLV) or f.name in WRITABLE_HEADERS or f.name in WRITABLE_STATE:
        return f.name
    raise FlowError("bad_set_field", f"the datapath cannot rewrite {f.name} yet")


def _range(name: str, ofs: int, nbits: int | None) -> int:
    width = field_bits(name)
    n = width - ofs if nbits is None else nbits
    if ofs < 0 or n <= 0 or ofs + n > width:
        raise FlowError("bad_argument", f"{name}[{ofs}..{ofs + n - 1}] is outside its {width} bits")
    return n


def check_action(action: Action, in_action_set: bool = False) -> None:
    """Raise ``FlowError`` when ``action`` is malformed or not supported (``in_action_set``: for
    write-actions, which hold only ``ACTION_SET_KINDS``)."""
    if in_action_set and not isinstance(action, ACTION_SET_KINDS):
        raise FlowError("unsupported_order", f"{type(action).__name__} cannot be in the action set")
    if isinstance(action, Output):
        p = action.port
        if 0 <= p < OFPP_MAX:
            return
        if p == OFPP_CONTROLLER:
            if not 0 <= action.max_len <= 0xFFFF:
                raise FlowError("bad_argument", f"max_len {action.max_len}")
            return
        if p in (OFPP_IN_PORT, OFPP_NORMAL, OFPP_FLOOD, OFPP_ALL, OFPP_LOCAL, OFPP_TABLE):
            return
        raise FlowError("bad_out_port", f"output to {p:#x}")
    if isinstance(action, PushVlan):
        if action.ethertype not in (0x8100, 0x88A8):
            raise FlowError("bad_argument", f"push_vlan ethertype {action.ethertype:#x}")
        return
    if isinstance(action, (PopVlan, Note, Exit)):
        return
    if isinstance(action, ModVlanVid):
        if not 0 <= action.vid <= 0xFFF:
            raise FlowError("bad_set_value", f"mod_vlan_vid {action.vid}")
        return
    if isinstance(action, SetField):
        if action.field in _VLAN_SET:
            if action.mask is not None:
                raise FlowError("bad_set_argument", f"set_field {action.field} with a mask")
            if not 0 <= action.value < 1 << _VLAN_SET[action.field]:
                raise FlowError("bad_set_value", f"set_field {action.field}={action.value:#x}")
            return
        name = writable(action.field)
        full = (1 << field_bits(name)) - 1
        mask = full if action.mask is None else action.mask
        if not 0 <= action.value <= full or not 0 < mask <= full or action.value & ~mask:
            raise FlowError("bad_set_value", f"set_field {action.field}={action.value:#x}/{mask:#x}")
        return
    if isinstance(action, Resubmit):
        if action.port is not None and not (0 <= action.port < OFPP_MAX or action.port == OFPP_IN_PORT):
            raise FlowError("bad_out_port", f"resubmit from port {action.port:#x}")
        if action.table is not None and not 0 <= action.table < 255:
            raise FlowError("bad_table_id", f"resubmit to table {action.table}")
        return
    if isinstance(action, Move):
        _field(action.src)
        writable(action.dst)
        if action.nbits <= 0:
            raise FlowError("bad_argument", "move of no bits")
        _range(action.src, action.src_ofs, action.nbits)
        _range(action.dst, action.dst_ofs, action.nbits)
        return
    if isinstance(action, StackPush):
        _field(action.field)
        _range(action.field, action.ofs, action.nbits)
        return
    if isinstance(action, StackPop):
        writable(action.field)
        _range(action.field, action.ofs, action.nbits)
        return
    if isinstance(action, OutputReg):
        _field(action.field)
        n = _range(action.field, action.ofs, action.nbits)
        if n > 32:
            raise FlowError("bad_argument", f"output:{action.field} takes at most 32 bits")
        return
    if isinstance(action, DecTtl):
        if not all(0 <= i <= 0xFFFF for i in action.ids):
            raise FlowError("bad_argument", f"dec_ttl controller ids {action.ids}")
        return
    if isinstance(action, Clone):
        for a in action.actions:
            check_action(a)
        return
    if isinstance(action, Conjunction):
        if not 2 <= action.n_clauses <= MAX_CLAUSES:
            raise FlowError("bad_conjunction", f"a conjunction has 2 to {MAX_CLAUSES} clauses, not {action.n_clauses}")
        if not 1 <= action.clause <= action.n_clauses:
            raise FlowError("bad_conjunction", f"clause {action.clause} of {action.n_clauses}")
        if not 0 <= action.id < 1 << 32:
            raise FlowError("bad_conjunction", f"conjunction id {action.id}")
        return
    if isinstance(action, Controller):
        if not (0 <= action.max_len <= 0xFFFF and 0 <= action.controller_id <= 0xFFFF
                and action.reason in CONTROLLER_REASONS and 0 <= action.meter_id <= 0xFFFFFFFF):
            raise FlowError("bad_argument", f"{action!r}")
        return
    if isinstance(action, Group):
        if not 0 <= action.group_id <= OFPG_MAX:
            raise FlowError("bad_out_group", f"group {action.group_id:#x}")
        return
    if isinstance(action, Meter):
        if not 1 <= action.meter_id <= OFPM_MAX:
            raise FlowError("invalid_meter", f"meter {action.meter_id:#x}")
        return
    if isinstance(action, CtClear):
        return
    if isinstance(action, FinTimeout):
        if not (0 <= action.idle_timeout <= 0xFFFF and 0 <= action.hard_timeout <= 0xFFFF):
            raise FlowError("bad_argument", f"fin_timeout {action}")
        return
    if isinstance(action, Ct):
        _check_ct(action)
        return
    if isinstance(action, Nat):
        raise FlowError("bad_set_value", "nat is only allowed inside ct")     # OVS: OFPBAC_BAD_SET_ARGUMENT
    if isinstance(action, Learn):
        _check_learn(action)
        return
    raise FlowError("bad_action", f"unsupported action {action!r}")


#: the fields ``ct``'s exec may write (OVS: only these, committed with the connection)
CT_EXEC_FIELDS = frozenset({"ct_mark", "ct_label"})


def _check_ct(ct: Ct) -> None:
    if ct.table is not None and not 0 <= ct.table < 255:
        raise FlowError("bad_table_id", f"ct table {ct.table}")
    if not 0 <= ct.alg <= 0xFFFF:
        raise FlowError("bad_argument", f"ct alg {ct.alg}")
    if ct.force and not ct.commit:
        raise FlowError("bad_argument", "ct(force) needs commit")
    if isinstance(ct.zone, tuple):
        name, ofs, nbits = ct.zone
        _field(name)
        if nbits != 16:
            raise FlowError("bad_argument", f"ct zone from {nbits} bits (a zone is 16)")
        _range(name, ofs, nbits)
    elif not 0 <= ct.zone <= 0xFFFF:
        raise FlowError("bad_argument", f"ct zone {ct.zone}")
    if not ct.commit and any(a != Nat() for a in ct.actions):
        raise FlowError("bad_argument", "ct without commit takes no action but a plain nat")   # OVS's rule
    for a in ct.actions:
        if isinstance(a, Nat):
            _check_nat(a)
            continue
        dst = a.field if isinstance(a, SetField) else a.dst if isinstance(a, Move) else None
        if dst is None:
            raise FlowError("bad_argument", f"ct's exec cannot hold {type(a).__name__}")
        f = _field(dst)
        if f.name not in CT_EXEC_FIELDS:
            raise FlowError("bad_argument", f"ct's exec may set ct_mark or ct_label, not {f.name}")
        if isinstance(a, Move):
            _field(a.src)
            _range(a.src, a.src_ofs, a.nbits)
            _range(a.dst, a.dst_ofs, a.nbits)
        else:
            full = (1 << f.bits) - 1
            mask = full if a.mask is None else a.mask
            if not 0 <= a.value <= full or not 0 < mask <= full or a.value & ~mask:
                raise FlowError("bad_set_value", f"set_field {f.name}={a.value:#x}/{mask:#x}")


def _check_nat(n: Nat) -> None:
    if n.kind not in ("", "src", "dst"):
        raise FlowError("bad_argument", f"nat kind {n.kind!r}")
    if not n.kind and (n.addr_min is not None or n.port_min is not None):
        raise FlowError("bad_argument", "a nat range needs src or dst")
    if n.addr_max is not None and (n.addr_min is None or n.addr_max.version != n.addr_min.version
                                   or n.addr_max < n.addr_min):
        raise FlowError("bad_argument", f"nat address range {n.addr_min}-{n.addr_max}")
    for port in (n.port_min, n.port_max):
        if port is not None and not 0 <= port <= 0xFFFF:
            raise FlowError("bad_argument", f"nat port {port}")
    if n.port_max is not None and (n.port_min is None or n.port_max < n.port_min):
        raise FlowError("bad_argument", f"nat port range {n.port_min}-{n.port_max}")


def _check_learn(lr: Learn) -> None:
    if not 0 <= lr.table < 255:
        raise FlowError("bad_table_id", f"learn table {lr.table}")
    for v in (lr.idle_timeout, lr.hard_timeout, lr.priority, lr.fin_idle_timeout, lr.fin_hard_timeout):
        if not 0 <= v <= 0xFFFF:
            raise FlowError("bad_argument", f"learn timeout or priority {v}")
    if not 0 <= lr.cookie < 1 << 64:
        raise FlowError("bad_argument", f"learn cookie {lr.cookie:#x}")
    for sp in lr.specs:
        if sp.dst_type not in ("match", "load", "output") or not 0 < sp.n_bits <= 0x3FF:
            raise FlowError("bad_argument", f"learn spec {sp}")
        if sp.src is None:
            if not 0 <= sp.value < 1 << sp.n_bits:
                raise FlowError("bad_argument", f"learn value {sp.value:#x} wider than {sp.n_bits} bits")
            if sp.dst_type == "output":
                raise FlowError("bad_argument", "learn's output takes a field")
        else:
            _field(sp.src)
            _range(sp.src, sp.src_ofs, sp.n_bits)
        if sp.dst_type == "output":
            continue
        if sp.dst is None:
            raise FlowError("bad_argument", f"learn {sp.dst_type} without a destination")
        if sp.dst_type == "load":
            writable(sp.dst)
        else:
            _field(sp.dst)
        _range(sp.dst, sp.dst_ofs, sp.n_bits)


#: field name -> its ``FieldValue`` (forgotten when the TLV map moves Geneve options)
_FIELD_VALUES: dict[str, FieldValue] = {}
tlvmap.listen(_FIELD_VALUES.clear)


@dataclass(frozen=True)
class FieldValue:
    """Reads and writes of fields on a flow-state vector (``fields.flow_slice`` places)."""

    word: int
    shift: int
    bits: int

    def __post_init__(self) -> None:
        pieces = ((self.word, self.shift, self.bits),) if self.bits <= 64 else tuple(
            (self.word + j, 0, 64) for j in range(self.bits // 64))
        object.__setattr__(self, "_pieces", pieces)
        object.__setattr__(self, "field_mask", (1 << self.bits) - 1)

    @classmethod
    def of(cls, name: str) -> FieldValue:
        """The place of field ``name`` (cached: a translation asks for the same few fields again and again)."""
        fv = _FIELD_VALUES.get(name)
        if fv is None:
            sl = _fields.flow_slice(_field(name))
            assert sl is not None
            fv = _FIELD_VALUES[name] = cls(*sl)
        return fv

    def words(self) -> tuple[tuple[int, int, int], ...]:
        """``(word, shift, bits)`` pieces, most significant first."""
        return self._pieces   # type: ignore[attr-defined, no-any-return]

    def read(self, state: list[int]) -> int:
        if self.bits <= 64:   # one word (most fields)
            return (state[self.word] >> self.shift) & ((1 << self.bits) - 1)
        v = 0
        for w, sh, n in self.words():
            v = v << n | (state[w] >> sh) & ((1 << n) - 1)
        return v

    def masks(self, mask: int) -> list[tuple[int, int]]:
        """``mask`` (of the field's bits) as ``(word, word mask)`` pairs."""
        return [(w, m) for w, _v, m in self.values(0, mask)]

    def values(self, value: int, mask: int) -> list[tuple[int, int, int]]:
        """``(word, word value, word mask)`` triples that write ``value`` under ``mask``."""
        if self.bits <= 64:   # one word (most fields)
            m = mask & ((1 << self.bits) - 1)
            return [(self.word, (value & m) << self.shift, m << self.shift)] if m else []
        out = []
        rest = self.bits
        for w, sh, n in self.words():
            rest -= n
            m = (mask >> rest) & ((1 << n) - 1)
            if m:
                out.append((w, ((value >> rest) & m) << sh, m << sh))
        return out


# ---------------------------------------------------------------- text

def _sub(name: str, ofs: int, nbits: int | None) -> str:
    width = field_bits(name)
    n = width - ofs if nbits is None else nbits
    if ofs == 0 and n == width:
        return f"{name}[]"
    return f"{name}[{ofs}]" if n == 1 else f"{name}[{ofs}..{ofs + n - 1}]"


def format_nicira(a: Action) -> str | None:
    """A Nicira action (or a masked / Nicira-field set_field) in ovs-ofctl's syntax with the registry's field
    names (``move:eth_src[]->xxreg0[0..47]``); None for the OpenFlow actions the wire side formats."""
    if isinstance(a, Load):
        return f"load:{(a.value >> a.ofs):#x}->{_sub(a.field, a.ofs, a.nbits)}"
    if isinstance(a, SetField):
        if a.mask is None and a.field in ("eth_dst", "eth_src", "vlan_vid", "vlan_pcp"):
            return None
        full = (1 << field_bits(a.field)) - 1
        mask = "" if a.mask is None or a.mask == full else f"/{a.mask:#x}"
        return f"set_field:{a.value:#x}{mask}->{a.field}"
    if isinstance(a, Resubmit):
        port = "" if a.port is None else "in_port" if a.port == OFPP_IN_PORT else str(a.port)
        return f"resubmit({port},{'' if a.table is None else a.table})"
    if isinstance(a, Move):
        return f"move:{_sub(a.src, a.src_ofs, a.nbits)}->{_sub(a.dst, a.dst_ofs, a.nbits)}"
    if isinstance(a, StackPush):
        return f"push:{_sub(a.field, a.ofs, a.nbits)}"
    if isinstance(a, StackPop):
        return f"pop:{_sub(a.field, a.ofs, a.nbits)}"
    if isinstance(a, Note):
        return "note:" + ".".join(f"{b:02x}" for b in a.data)
    if isinstance(a, Exit):
        return "exit"
    if isinstance(a, OutputReg):
        return f"output:{_sub(a.field, a.ofs, a.nbits)}"
    if isinstance(a, DecTtl):
        return "dec_ttl" if a.ids == (0,) else f"dec_ttl({','.join(map(str, a.ids))})"
    if isinstance(a, Conjunction):
        return f"conjunction({a.id},{a.clause}/{a.n_clauses})"
    if isinstance(a, Clone):
        return f"clone({','.join(format_nicira(x) or repr(x) for x in a.actions)})"
    if isinstance(a, Controller):
        return format_controller(a)
    if isinstance(a, Group):
        return f"group:{a.group_id}"
    if isinstance(a, Meter):
        return f"meter:{a.meter_id}"
    if isinstance(a, (Ct, Nat, CtClear, Learn, FinTimeout)):
        from ofproto.nxtext import format_ct_family
        return format_ct_family(a)
    return None


def format_controller(a: Controller) -> str:
    """``controller(...)`` as ovs-ofctl prints it: ``CONTROLLER:max_len`` when only the length differs from the
    defaults, else the arguments that do, in OVS's order."""
    if a.reason == 1 and not a.controller_id and not a.userdata and not a.pause and not a.meter_id:
        return f"CONTROLLER:{a.max_len}"
    args = []
    if a.reason != 1:
        args.append(f"reason={CONTROLLER_REASONS[a.reason]}")
    if a.max_len != OFPCML_NO_BUFFER:
        args.append(f"max_len={a.max_len}")
    if a.controller_id:
        args.append(f"id={a.controller_id}")
    if a.userdata:
        args.append("userdata=" + ".".join(f"{b:02x}" for b in a.userdata))
    if a.pause:
        args.append("pause")
    if a.meter_id:
        args.append(f"meter_id={a.meter_id}")
    return f"controller({','.join(args)})"
