"""Actions and instructions between their wire form and the action model.

```
 codec dicts                                   ofproto.actions
 {"type": "output", ...}        ──from_wire──►  Output, PushVlan, SetField, ...
 {"type": "nx_resubmit_table"}  ◄──to_wire───   Resubmit, Load, Move, Clone, ...   (NX_FROM_WIRE / NX_TO_WIRE)
```

The wire dicts are ``vswitch.openflow.codec``'s (OpenFlow's own actions, in 1.3 form) and
``vswitch.openflow.nicira``'s (``nx_*``: Nicira extension actions, the same in every version). Port
numbers in the model are OpenFlow 1.3's; OpenFlow 1.0 and the Nicira actions carry 16-bit ones.
A Nicira action joins by one entry in each registry: ``NX_FROM_WIRE[name](version, dict) -> Action``
and ``NX_TO_WIRE[cls](version, action) -> dict``. What the model cannot hold gets the OpenFlow error
OVS sends for it (``OfpError``), never a partial flow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ofproto import fields as _fields
from ofproto.actions import (
    OFPP_CONTROLLER,
    Action,
    Clone,
    Conjunction,
    Controller,
    DecTtl,
    Exit,
    Group,
    Load,
    Meter,
    ModVlanVid,
    Move,
    Note,
    Output,
    OutputReg,
    PopVlan,
    PushVlan,
    Resubmit,
    SetField,
    StackPop,
    StackPush,
    field_bits,
)
from ofproto.rules import Instructions
from vswitch.openflow import nx_ct, packetin2
from vswitch.openflow.codec import OFP10, OFP15, OFPET_BAD_ACTION, OXM_FIELDS, OfpError
from vswitch.openflow.translate import instructions_from

OFPBAC_BAD_TYPE, OFPBAC_BAD_ARGUMENT, OFPBAC_BAD_SET_ARGUMENT = 0, 5, 15
OFPR_ACTION = 1
#: OpenFlow 1.0 / Nicira: "no table" in a resubmit, and the 16-bit IN_PORT
NX_TABLE_NONE = 0xFF
OFPP10_IN_PORT = 0xFFF8


def port13(version: int, port: int) -> int:
    """A wire port number as OpenFlow 1.3 numbers it (1.0's reserved ports are 16-bit)."""
    if version == OFP10 and port >= 0xFF00:
        return port | 0xFFFF0000
    return port


def port_wire(version: int, port: int) -> int:
    """A 1.3 port number in the wire form of ``version``."""
    return port & 0xFFFF if version == OFP10 and port >= 0xFFFFFF00 else port


def port16(port: int) -> int:
    """A 1.3 port number as a Nicira action's 16-bit one."""
    return port & 0xFFFF if port >= 0xFFFFFF00 else port


def _registry_name(name: str) -> str:
    f = _fields.by_name(name) or _fields.by_oxm_name(name)
    return f.name if f is not None else name


# ---------------------------------------------------------------- Nicira actions: wire -> model
def _unsupported(why: str) -> Callable[[int, dict[str, Any]], Action]:
    def refuse(_version: int, _a: dict[str, Any]) -> Action:
        raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_ARGUMENT, why)
    return refuse


def _resubmit(_version: int, a: dict[str, Any]) -> Action:
    port = a["in_port"]
    table = a.get("table", NX_TABLE_NONE)
    return Resubmit(None if port == OFPP10_IN_PORT else port13(OFP10, port), None if table == NX_TABLE_NONE else table)


def _controller(_version: int, a: dict[str, Any]) -> Action:
    """NXAST_CONTROLLER: an output to CONTROLLER, or with a reason or an id a ``Controller`` (``packetin2``)."""
    if a["reason"] != OFPR_ACTION or a["controller_id"] != 0:
        return packetin2.controller_from_wire(a)
    return Output(OFPP_CONTROLLER, a["max_len"])


def _reg_load2(_version: int, a: dict[str, Any]) -> Action:
    return SetField(a["field"], a["value"], a.get("mask"))


def _nx_ct_from(conv: Callable[[dict[str, Any], Callable[[Any], Any]], Action]
                ) -> Callable[[int, dict[str, Any]], Action]:
    """An ``nx_ct`` converter as a registry entry (its nested actions converted in the same version)."""
    return lambda v, a: conv(a, lambda x: action_from_wire(v, x))


NX_FROM_WIRE: dict[str, Callable[[int, dict[str, Any]], Action]] = {
    "nx_resubmit": _resubmit,
    "nx_resubmit_table": _resubmit,
    "nx_resubmit_table_ct": _unsupported("resubmit(...,ct) needs conntrack"),
    "nx_set_tunnel": lambda v, a: SetField("tun_id", a["tun_id"]),
    "nx_set_tunnel64": lambda v, a: SetField("tun_id", a["tun_id"]),
    "nx_reg_move": lambda v, a: Move(a["src"], a["dst"], a["n_bits"], a["src_ofs"], a["dst_ofs"]),
    "copy_field": lambda v, a: Move(a["src"], a["dst"], a["n_bits"], a["src_ofs"], a["dst_ofs"]),
    "dec_nw_ttl": lambda v, a: DecTtl(),
    "nx_reg_load": lambda v, a: Load.bits(a["dst"], a["value"], a["ofs"], a["nbits"]),
    "nx_reg_load2": _reg_load2,
    "nx_note": lambda v, a: Note(bytes(a["note"])),
    "nx_output_reg": lambda v, a: OutputReg(a["src"], a["ofs"], a["nbits"], a["max_len"]),
    "nx_output_reg2": lambda v, a: OutputReg(a["src"], a["ofs"], a["nbits"], a["max_len"]),
    "nx_exit": lambda v, a: Exit(),
    "nx_dec_ttl": lambda v, a: DecTtl(),
    "nx_dec_ttl_cnt_ids": lambda v, a: DecTtl(tuple(a["ids"])),
    "nx_controller": _controller,
    "nx_controller2": lambda v, a: packetin2.controller_from_wire(a),
    "nx_write_metadata": lambda v, a: SetField("metadata", a["metadata"], a["mask"]),
    "nx_stack_push": lambda v, a: StackPush(a["field"], a["ofs"], a["n_bits"]),
    "nx_stack_pop": lambda v, a: StackPop(a["field"], a["ofs"], a["n_bits"]),
    "nx_clone": lambda v, a: Clone(tuple(action_from_wire(v, x) for x in a["actions"])),
    "nx_conjunction": lambda v, a: Conjunction(a["id"], a["clause"] + 1, a["n_clauses"]),
    **{name: _nx_ct_from(conv) for name, conv in nx_ct.FROM_NX.items()},    # ct, nat, ct_clear, learn
}


# ---------------------------------------------------------------- Nicira actions: model -> wire
def _resubmit_to(_version: int, a: Action) -> dict[str, Any]:
    assert isinstance(a, Resubmit)
    port = OFPP10_IN_PORT if a.port is None else port16(a.port)
    if a.table is None and port != OFPP10_IN_PORT:
        return {"type": "nx_resubmit", "in_port": port}
    return {"type": "nx_resubmit_table", "in_port": port, "table": NX_TABLE_NONE if a.table is None else a.table}


def _load_to(version: int, a: Action) -> dict[str, Any]:
    assert isinstance(a, Load)
    name = _registry_name(a.field)
    if version >= OFP15:   # 1.5 has masked set_field, and OVS takes no REG_LOAD there
        return _set_field_to(version, a)
    if a.nbits <= 64:
        return {"type": "nx_reg_load", "dst": name, "ofs": a.ofs, "nbits": a.nbits, "value": a.value >> a.ofs}
    return {"type": "nx_reg_load2", "field": name, "value": a.value, "mask": a.mask}


def _nbits(field: str, ofs: int, nbits: int | None) -> int:
    return field_bits(field) - ofs if nbits is None else nbits


def _output_reg_to(_version: int, a: Action) -> dict[str, Any]:
    assert isinstance(a, OutputReg)
    f = _fields.by_name(a.field) or _fields.by_oxm_name(a.field)
    kind = "nx_output_reg" if f is not None and f.nxm is not None else "nx_output_reg2"
    return {"type": kind, "src": _registry_name(a.field), "ofs": a.ofs, "nbits": _nbits(a.field, a.ofs, a.nbits),
            "max_len": a.max_len}


def _stack_to(kind: str) -> Callable[[int, Action], dict[str, Any]]:
    def to(_version: int, a: Action) -> dict[str, Any]:
        assert isinstance(a, (StackPush, StackPop))
        return {"type": kind, "field": _registry_name(a.field), "ofs": a.ofs,
                "n_bits": _nbits(a.field, a.ofs, a.nbits)}
    return to


def _dec_ttl_to(version: int, a: Action) -> dict[str, Any]:
    assert isinstance(a, DecTtl)
    if a.ids == (0,):   # OpenFlow 1.1+ has its own (and OVS takes Nicira's there no more)
        return {"type": "nx_dec_ttl"} if version == OFP10 else {"type": "dec_nw_ttl"}
    return {"type": "nx_dec_ttl_cnt_ids", "ids": list(a.ids)}


def _move_to(version: int, a: Action) -> dict[str, Any]:
    assert isinstance(a, Move)
    kind = "copy_field" if version >= OFP15 else "nx_reg_move"   # OVS takes no REG_MOVE in 1.5
    return {"type": kind, "src": _registry_name(a.src), "dst": _registry_name(a.dst), "n_bits": a.nbits,
            "src_ofs": a.src_ofs, "dst_ofs": a.dst_ofs}


def _nx_ct_to(conv: Callable[[Any, Callable[[Any], Any]], dict[str, Any]]) -> Callable[[int, Any], dict[str, Any]]:
    return lambda v, a: conv(a, lambda x: action_to_wire(v, x))


NX_TO_WIRE: dict[type, Callable[[int, Any], dict[str, Any]]] = {
    Resubmit: _resubmit_to,
    Load: _load_to,
    Move: _move_to,
    Note: lambda v, a: {"type": "nx_note", "note": a.data},
    Exit: lambda v, a: {"type": "nx_exit"},
    OutputReg: _output_reg_to,
    DecTtl: _dec_ttl_to,
    StackPush: _stack_to("nx_stack_push"),
    StackPop: _stack_to("nx_stack_pop"),
    Clone: lambda v, a: {"type": "nx_clone", "actions": [action_to_wire(v, x) for x in a.actions]},
    Conjunction: lambda v, a: {"type": "nx_conjunction", "clause": a.clause - 1, "n_clauses": a.n_clauses,
                               "id": a.id},
    Controller: lambda v, a: packetin2.controller_to_wire(a),
    **{cls: _nx_ct_to(conv) for cls, conv in nx_ct.TO_NX.items()},           # Ct, Nat, CtClear, Learn
}


# ---------------------------------------------------------------- all actions
def action_from_wire(version: int, a: dict[str, Any]) -> Action:
    """One wire action (1.3 form, or a Nicira ``nx_*`` one) as an ``ofproto.actions`` action."""
    t = a["type"]
    if t == "output":
        return Output(port13(version, a["port"]), a.get("max_len", 0xFFFF))
    if t == "push_vlan":
        return PushVlan(a["ethertype"])
    if t == "pop_vlan":
        return PopVlan()
    if t == "mod_vlan_vid":
        return ModVlanVid(a["vlan_vid"])
    if t == "group":
        return Group(a["group_id"])
    if t == "meter":   # OpenFlow 1.5's action (1.3 / 1.4: the meter instruction, instructions_from_wire)
        return Meter(a["meter_id"])
    if t == "set_field":
        (name, value), = a["field"].items()
        if name == "in_port" and isinstance(value, int):   # OXM's 32-bit port: the model's in_port is 16 bits
            return SetField("in_port", port16(value))
        if isinstance(value, tuple):
            return SetField(name, value[0], value[1])
        return SetField(name, value)
    conv = NX_FROM_WIRE.get(t)
    if conv is None:
        raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_TYPE, f"action {t} is not supported")
    return conv(version, a)


#: fields OpenFlow 1.0 has an action of its own for (``translate.actions_to10`` writes it)
_SET10 = frozenset({"eth_src", "eth_dst", "vlan_vid", "vlan_pcp", "ipv4_src", "ipv4_dst", "nw_tos", "tcp_src",
                    "tcp_dst"})


def _set_field_to(version: int, a: SetField) -> dict[str, Any]:
    """A set_field as OVS writes it: OpenFlow 1.5's set_field (masked too); before 1.5 set_field when unmasked
    (any field class; 1.0: its own actions, for the fields it has), else Nicira's REG_LOAD (REG_LOAD2 past 64
    bits). A ``Load`` (written as ``load:``) stays a REG_LOAD before 1.5, as OVS remembers it."""
    if a.field == "in_port" and a.mask in (None, 0xFFFF) and version != OFP10:   # with Nicira's 16-bit in_port, as OVS
        return {"type": "set_field", "field": {"nxm_in_port": a.value}}   # (ovs-ofctl takes no OXM ANY back)
    f = _fields.by_oxm_name(a.field) or _fields.by_name(a.field)
    name = f.oxm_name if f is not None and f.oxm_name in OXM_FIELDS else _registry_name(a.field)
    bits = field_bits(a.field)
    full = (1 << bits) - 1
    mask = full if a.mask is None else a.mask
    if version >= OFP15:
        return {"type": "set_field", "field": {name: a.value if mask == full else (a.value & mask, mask)}}
    if mask == full and (name in _SET10 if version == OFP10 else True):
        return {"type": "set_field", "field": {name: a.value}}
    reg = _registry_name(a.field)
    if f is not None and f.where == _fields.TLV:   # a Geneve option: its length is the map's, REG_LOAD2 as OVS
        return {"type": "nx_reg_load2", "field": reg, "value": a.value & mask, "mask": None if mask == full else mask}
    ofs = (mask & -mask).bit_length() - 1
    nbits = mask.bit_length() - ofs
    if nbits <= 64 and mask == ((1 << nbits) - 1) << ofs:
        return {"type": "nx_reg_load", "dst": reg, "ofs": ofs, "nbits": nbits, "value": (a.value & mask) >> ofs}
    return {"type": "nx_reg_load2", "field": reg, "value": a.value & mask, "mask": None if mask == full else mask}


def action_to_wire(version: int, a: Action) -> dict[str, Any]:
    """An ``ofproto.actions`` action in 1.3 wire form or as a Nicira action (``translate.actions_to10``
    makes the OpenFlow ones 1.0's)."""
    conv = NX_TO_WIRE.get(type(a))
    if conv is not None:
        return conv(version, a)
    if isinstance(a, Output):
        return {"type": "output", "port": port_wire(version, a.port) if version == OFP10 else a.port,
                "max_len": a.max_len}
    if isinstance(a, PushVlan):
        return {"type": "push_vlan", "ethertype": a.ethertype}
    if isinstance(a, PopVlan):
        return {"type": "pop_vlan"}
    if isinstance(a, ModVlanVid):   # 1.0's set_vlan_vid again (translate.actions_to10)
        return {"type": "set_field", "field": {"vlan_vid": a.vid | 0x1000}}
    if isinstance(a, SetField):
        return _set_field_to(version, a)
    if isinstance(a, Group):
        return {"type": "group", "group_id": a.group_id}
    if isinstance(a, Meter):
        return {"type": "meter", "meter_id": a.meter_id}
    raise ValueError(f"no wire form for {a!r}")


# ---------------------------------------------------------------- instructions
def instructions_from_wire(version: int, fields: dict[str, Any]) -> Instructions:
    """A flow-mod's instructions (or 1.0 actions) as ``Instructions``."""
    apply: tuple[Action, ...] = ()
    write: tuple[Action, ...] = ()
    clear = False
    goto = None
    metadata = None
    meter: tuple[Action, ...] = ()
    for ins in instructions_from(version, fields):
        kind = ins["type"]
        if kind == "apply_actions":
            apply = tuple(action_from_wire(version, a) for a in ins["actions"])
        elif kind == "write_actions":
            write = tuple(action_from_wire(version, a) for a in ins["actions"])
        elif kind == "clear_actions":
            clear = True
        elif kind == "goto_table":
            goto = ins["table_id"]
        elif kind == "write_metadata":
            metadata = (ins["metadata"] & ins["metadata_mask"], ins["metadata_mask"])
        elif kind == "meter":   # 1.3 / 1.4: the meter goes first, as the model's (and 1.5's) meter action
            meter = (Meter(ins["meter_id"]),)
    return Instructions((*meter, *apply), clear, write, goto, metadata)


def instructions_to_wire(version: int, ins: Instructions) -> list[dict[str, Any]]:
    """``Instructions`` as 1.3 wire instructions."""
    out: list[dict[str, Any]] = []
    apply = ins.apply
    if version < OFP15 and apply and isinstance(apply[0], Meter):   # 1.3 / 1.4: the meter instruction
        out.append({"type": "meter", "meter_id": apply[0].meter_id})
        apply = apply[1:]
    if apply:
        out.append({"type": "apply_actions", "actions": [action_to_wire(version, a) for a in apply]})
    if ins.clear:
        out.append({"type": "clear_actions", "actions": []})
    if ins.write:
        out.append({"type": "write_actions", "actions": [action_to_wire(version, a) for a in ins.write]})
    if ins.metadata is not None:
        out.append({"type": "write_metadata", "metadata": ins.metadata[0], "metadata_mask": ins.metadata[1]})
    if ins.goto is not None:
        out.append({"type": "goto_table", "table_id": ins.goto})
    return out


def actions10_of(version: int, ins: Instructions) -> list[dict[str, Any]]:
    """A flow's program as one OpenFlow 1.0 action list (with Nicira actions): apply-actions, then
    write-metadata and goto-table as OVS writes them in 1.0 (``write_metadata``, ``resubmit(,N)``)."""
    out = [action_to_wire(version, a) for a in ins.apply]
    if ins.metadata is not None:
        out.append({"type": "nx_write_metadata", "metadata": ins.metadata[0], "mask": ins.metadata[1]})
    if ins.goto is not None:
        out.append({"type": "nx_resubmit_table", "in_port": OFPP10_IN_PORT, "table": ins.goto})
    return out
