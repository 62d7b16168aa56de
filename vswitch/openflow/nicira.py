"""Nicira extension actions (``NXAST_*``) on the wire, declared as data: an experimenter action with
vendor 0x2320 and a subtype, as ``ovs-ofctl`` writes them in every OpenFlow version.

```
 type 0xffff | length | vendor 0x00002320 | subtype (16) | body by the layout below, padded to 8
```

A decoded action is a dict ``{"type": "nx_<name>", ...}`` in the style of ``vswitch.openflow.codec``.
Layout kinds: a ``struct`` code (``H``, ``B``, ``I``, ``Q``) or pad (``"4x"``); ``nxm`` (a 4-byte
NXM / OXM field header: the registry name of the field); ``ofs_nbits`` (``ofs << 6 | nbits - 1``,
decoded to ``ofs`` and ``nbits``); ``note`` (the rest, trailing zeros dropped); ``load2`` (one
NXM / OXM TLV with an optional mask, ``vswitch.openflow.nxm``); ``field2`` (a field header of 4 or 8
bytes, OVS's OUTPUT_REG2); ``ids`` (a count, then that many 16-bit controller ids); ``actions``
(nested actions, ``clone``); ``props:<name>`` (OpenFlow properties: type (16) | length (16) | value,
each padded to 8, the types and value kinds from ``NX_PROPS[name]``; a decoded dict holds the properties
present, ``flag`` ones as True). Errors are ``OfpError`` with OVS's codes: an unknown vendor
``OFPBAC_BAD_EXPERIMENTER``, an unknown subtype ``OFPBAC_BAD_EXPERIMENTER_TYPE``, a bad length
``OFPBAC_BAD_LEN``, a field the registry does not know ``OFPBAC_BAD_ARGUMENT``. ``nxm_opt`` (a
field header, or 4 zero bytes for none: ``ct``'s zone source); ``nat_range`` (``nat``'s present bits and
the ranges they announce, ``NAT_RANGES``); ``learn_specs`` (``learn``'s flow_mod_spec list, ``nx_learn``
below). An unknown property ``OFPBPC_BAD_TYPE``, a property of a bad length ``OFPBPC_BAD_LEN`` (OpenFlow
1.4 numbers; ``nx_error`` of ``vswitch.openflow.packetin2`` gives each version's). Tests:
``tests/test_nicira.py`` (byte for byte against os-ken's NXAction classes),
``tests/test_nicira_ct.py`` (ct / nat / learn against ``ovs-ofctl``'s bytes and OVS's errors).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from ofproto import fields as F
from vswitch.openflow import nxm
from vswitch.openflow.codec import OFPBAC_BAD_LEN, OFPET_BAD_ACTION, OfpError

NX_VENDOR = 0x00002320
OFPAT_EXPERIMENTER = 0xFFFF
OFPBAC_BAD_EXPERIMENTER = 2
OFPBAC_BAD_EXPERIMENTER_TYPE = 3
OFPBAC_BAD_ARGUMENT = 5
OFPBAC_BAD_SET_TYPE = 13

Layout = list[tuple[str, str]]

#: name -> (subtype, layout after the subtype)
NX_ACTIONS: dict[str, tuple[int, Layout]] = {
    "resubmit": (1, [("in_port", "H"), ("pad", "4x")]),
    "set_tunnel": (2, [("pad", "2x"), ("tun_id", "I")]),
    "reg_move": (6, [("n_bits", "H"), ("src_ofs", "H"), ("dst_ofs", "H"), ("src", "nxm"), ("dst", "nxm")]),
    "reg_load": (7, [("dst_bits", "ofs_nbits"), ("dst", "nxm"), ("value", "Q")]),
    "note": (8, [("note", "note")]),
    "set_tunnel64": (9, [("pad", "6x"), ("tun_id", "Q")]),
    "resubmit_table": (14, [("in_port", "H"), ("table", "B"), ("pad", "3x")]),
    "output_reg": (15, [("src_bits", "ofs_nbits"), ("src", "nxm"), ("max_len", "H"), ("pad", "6x")]),
    "exit": (17, [("pad", "6x")]),
    "dec_ttl": (18, [("pad", "6x")]),
    "controller": (20, [("max_len", "H"), ("controller_id", "H"), ("reason", "B"), ("pad", "1x")]),
    "dec_ttl_cnt_ids": (21, [("ids", "ids")]),
    "write_metadata": (22, [("pad", "6x"), ("metadata", "Q"), ("mask", "Q")]),
    "stack_push": (27, [("ofs", "H"), ("field", "nxm"), ("n_bits", "H"), ("pad", "6x")]),
    "stack_pop": (28, [("ofs", "H"), ("field", "nxm"), ("n_bits", "H"), ("pad", "6x")]),
    "output_reg2": (32, [("src_bits", "ofs_nbits"), ("max_len", "H"), ("src", "field2")]),
    "reg_load2": (33, [("field", "load2")]),
    "conjunction": (34, [("clause", "B"), ("n_clauses", "B"), ("id", "I")]),
    "group": (40, [("pad", "2x"), ("group_id", "I")]),        # OpenFlow 1.0's group action (OVS's)
    "clone": (42, [("pad", "6x"), ("actions", "actions")]),
    "ct_clear": (43, [("pad", "6x")]),
    "resubmit_table_ct": (44, [("in_port", "H"), ("table", "B"), ("pad", "3x")]),
    "controller2": (37, [("pad", "6x"), ("props", "props:controller2")]),
    "learn": (16, [("idle_timeout", "H"), ("hard_timeout", "H"), ("priority", "H"), ("cookie", "Q"),
                   ("flags", "H"), ("table", "B"), ("pad", "1x"), ("fin_idle_timeout", "H"),
                   ("fin_hard_timeout", "H"), ("specs", "learn_specs")]),
    "ct": (35, [("flags", "H"), ("zone_src", "nxm_opt"), ("zone", "H"), ("recirc_table", "B"), ("pad", "3x"),
                ("alg", "H"), ("actions", "actions")]),
    "nat": (36, [("pad", "2x"), ("flags", "H"), ("range", "nat_range")]),
    "fin_timeout": (19, [("fin_idle_timeout", "H"), ("fin_hard_timeout", "H"), ("pad", "2x")]),
}
#: property sets: name -> {type: (key, value kind: a struct code (a 16-bit value is padded to 4 bytes, as OVS
#: writes it), ``bytes`` or ``flag`` (no value))}
NX_PROPS: dict[str, dict[int, tuple[str, str]]] = {
    "controller2": {0: ("max_len", "H2x"), 1: ("controller_id", "H2x"), 2: ("reason", "B"), 3: ("userdata", "bytes"),
                    4: ("pause", "flag"), 5: ("meter_id", "I")},
}
OFPET_BAD_PROPERTY = 14
OFPBPC_BAD_TYPE, OFPBPC_BAD_LEN = 0, 1
NX_BY_SUBTYPE = {sub: name for name, (sub, _) in NX_ACTIONS.items()}


#: ``nat``'s optional ranges in wire order: (key, present bit, struct code)
NAT_RANGES = (("ipv4_min", 0x01, "4s"), ("ipv4_max", 0x02, "4s"), ("ipv6_min", 0x04, "16s"),
              ("ipv6_max", 0x08, "16s"), ("proto_min", 0x10, "H"), ("proto_max", 0x20, "H"))
#: ``learn``'s flow_mod_spec header: source is an immediate (else a field), destination kind, bit count
LEARN_SRC_IMMEDIATE = 1 << 13
LEARN_DST_SHIFT = 11
LEARN_DSTS = ("match", "load", "output")
LEARN_N_BITS = 0x3FF


def _pad8(n: int) -> int:
    return (n + 7) // 8 * 8


def field_header(name: str, dialect: str = nxm.NXM) -> bytes:
    """The 4-byte (8 for an experimenter OXM) header naming field ``name`` in an action."""
    f = _field(name)
    ident = nxm.wire_id(f, dialect)
    if ident[0] == F.OFPXMC_EXPERIMENTER:
        return struct.pack("!HBBI", ident[0], ident[2] << 1, 4 + f.nbytes, ident[1])
    return struct.pack("!HBB", ident[0], ident[1] << 1, f.nbytes)


def _field(name: str) -> F.Field:
    for f in F.FIELDS:
        if f.name == name:
            return f
    raise ValueError(f"no field {name!r} in the registry")


def _header_field(buf: bytes, off: int) -> tuple[str, int]:
    """The field a header at ``buf[off:]`` names, and the header's length (4, or 8 for experimenter)."""
    if len(buf) - off < 4:
        raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_LEN, "truncated field header")
    cls, fh, length = struct.unpack_from("!HBB", buf, off)
    size = 4
    if cls == F.OFPXMC_EXPERIMENTER:
        if len(buf) - off < 8:
            raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_LEN, "truncated experimenter field header")
        ident: tuple[int, ...] = (cls, struct.unpack_from("!I", buf, off + 4)[0], fh >> 1)
        size = 8
    else:
        ident = (cls, fh >> 1)
    f = nxm.field_by_id(ident)
    if f is None:
        raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_ARGUMENT, f"unknown field {'/'.join(f'0x{x:x}' for x in ident)}")
    return f.name, size


def _set_field_header(buf: bytes, off: int) -> tuple[str, int]:
    """``_header_field`` for ``ct``'s zone and ``learn``'s fields: an unknown field is OVS's
    ``OFPBAC_BAD_SET_TYPE`` there."""
    try:
        return _header_field(buf, off)
    except OfpError as e:
        if e.code == OFPBAC_BAD_ARGUMENT:
            raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_SET_TYPE, str(e)) from e
        raise


def _encode_body(layout: Layout, action: dict[str, Any], encode_actions: Callable[[list[dict[str, Any]]], bytes]
                 ) -> bytes:
    out = b""
    for key, kind in layout:
        if kind.endswith("x"):
            out += bytes(int(kind[:-1]))
        elif kind in ("H", "B", "I", "Q"):
            out += struct.pack("!" + kind, action[key])
        elif kind == "nxm":
            out += field_header(action[key])
        elif kind == "ofs_nbits":
            out += struct.pack("!H", action["ofs"] << 6 | (action["nbits"] - 1))
        elif kind == "note":
            out += bytes(action[key])
        elif kind == "load2":
            f = _field(action[key])
            out += nxm.encode([(f, action["value"], action.get("mask"))], nxm.NXM)
        elif kind == "field2":
            out += field_header(action[key])
        elif kind == "ids":
            ids = action[key]
            out += struct.pack(f"!H4x{len(ids)}H", len(ids), *ids)
        elif kind == "actions":
            out += encode_actions(action[key])
        elif kind.startswith("props:"):
            out += encode_props(kind[6:], action)
        elif kind == "nxm_opt":
            out += bytes(4) if action.get(key) is None else field_header(action[key])
        elif kind == "nat_range":
            out += _encode_nat_range(action)
        elif kind == "learn_specs":
            out += b"".join(_encode_spec(sp) for sp in action[key])
    return out


def encode_props(name: str, values: dict[str, Any]) -> bytes:
    """The properties of set ``name`` that ``values`` holds (a ``flag`` when true), in type order."""
    out = b""
    for ptype, (key, kind) in sorted(NX_PROPS[name].items()):
        v = values.get(key)
        if v is None or v is False:
            continue
        body = b"" if kind == "flag" else bytes(v) if kind == "bytes" else struct.pack("!" + kind, v)
        out += struct.pack("!HH", ptype, 4 + len(body)) + body + bytes(_pad8(4 + len(body)) - 4 - len(body))
    return out


def decode_props(name: str, buf: bytes) -> dict[str, Any]:
    """The properties of set ``name`` in ``buf`` (which holds nothing else) as ``{key: value}``."""
    table = NX_PROPS[name]
    out: dict[str, Any] = {}
    off = 0
    while off < len(buf):
        if len(buf) - off < 4:
            raise OfpError(OFPET_BAD_PROPERTY, OFPBPC_BAD_LEN, f"{name}: truncated property header")
        ptype, length = struct.unpack_from("!HH", buf, off)
        if length < 4 or off + _pad8(length) > len(buf):
            raise OfpError(OFPET_BAD_PROPERTY, OFPBPC_BAD_LEN, f"{name}: property {ptype} length {length}")
        if ptype not in table:
            raise OfpError(OFPET_BAD_PROPERTY, OFPBPC_BAD_TYPE, f"{name}: unknown property {ptype}")
        key, kind = table[ptype]
        body = bytes(buf[off + 4:off + length])
        if kind == "flag":
            if body:
                raise OfpError(OFPET_BAD_PROPERTY, OFPBPC_BAD_LEN, f"{name}: {key} takes no value")
            out[key] = True
        elif kind == "bytes":
            out[key] = body
        else:
            if kind == "H2x" and len(body) == 2:   # OVS takes a 16-bit value with or without its padding
                kind = "H"
            if len(body) != struct.calcsize("!" + kind):
                raise OfpError(OFPET_BAD_PROPERTY, OFPBPC_BAD_LEN, f"{name}: {key} of {len(body)} bytes")
            out[key] = struct.unpack("!" + kind, body)[0]
        off += _pad8(length)
    return out


def _encode_nat_range(action: dict[str, Any]) -> bytes:
    present, body = 0, b""
    for key, bit, code in NAT_RANGES:
        if action.get(key) is not None:
            present |= bit
            v = action[key]
            body += struct.pack("!" + code, v.to_bytes(struct.calcsize(code), "big") if code.endswith("s") else v)
    return struct.pack("!H", present) + body


def _encode_spec(sp: dict[str, Any]) -> bytes:
    """One learn flow_mod_spec: ``{"dst_type": match|load|output, "n_bits", "src" (field) + "src_ofs" or
    "value", "dst" + "dst_ofs" (not for output)}``."""
    n = sp["n_bits"]
    imm = sp.get("src") is None
    head = (LEARN_SRC_IMMEDIATE if imm else 0) | LEARN_DSTS.index(sp["dst_type"]) << LEARN_DST_SHIFT | n
    out = struct.pack("!H", head)
    if imm:
        out += sp["value"].to_bytes(2 * ((n + 15) // 16), "big")
    else:
        out += field_header(sp["src"]) + struct.pack("!H", sp["src_ofs"])
    if sp["dst_type"] != "output":
        out += field_header(sp["dst"]) + struct.pack("!H", sp["dst_ofs"])
    return out


def encode_action(action: dict[str, Any], encode_actions: Callable[[list[dict[str, Any]]], bytes]) -> bytes:
    """One ``nx_*`` action dict as its experimenter action (``encode_actions`` encodes nested ones)."""
    name = action["type"].removeprefix("nx_")
    sub, layout = NX_ACTIONS[name]
    body = _encode_body(layout, action, encode_actions)
    head = 10 + len(body)
    length = _pad8(head)
    return struct.pack("!HHIH", OFPAT_EXPERIMENTER, length, NX_VENDOR, sub) + body + bytes(length - head)


def decode_action(buf: bytes, decode_actions: Callable[[bytes], list[dict[str, Any]]]) -> dict[str, Any]:
    """The experimenter action ``buf`` (the whole action, header included) as an ``nx_*`` dict."""
    if len(buf) < 16 or len(buf) % 8:
        raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_LEN, f"experimenter action length {len(buf)}")
    _t, _length, vendor, sub = struct.unpack_from("!HHIH", buf)
    if vendor != NX_VENDOR:
        raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_EXPERIMENTER, f"experimenter 0x{vendor:08x}")
    name = NX_BY_SUBTYPE.get(sub)
    if name is None:
        raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_EXPERIMENTER_TYPE, f"Nicira action subtype {sub}")
    body = buf[10:]
    action: dict[str, Any] = {"type": f"nx_{name}"}
    off = 0

    def take(fmt: str) -> tuple[Any, ...]:
        nonlocal off
        size = struct.calcsize("!" + fmt)
        if off + size > len(body):
            raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_LEN, f"nx_{name}: {len(buf)} bytes")
        got = struct.unpack_from("!" + fmt, body, off)
        off += size
        return got

    for key, kind in NX_ACTIONS[name][1]:
        if kind.endswith("x"):
            take(kind)
        elif kind in ("H", "B", "I", "Q"):
            action[key] = take(kind)[0]
        elif kind in ("nxm", "field2"):
            action[key], used = _header_field(body, off)
            off += used
        elif kind == "ofs_nbits":
            (v,) = take("H")
            action["ofs"], action["nbits"] = v >> 6, (v & 0x3F) + 1
        elif kind == "note":
            action[key] = bytes(body[off:]).rstrip(b"\0")
            off = len(body)
        elif kind == "load2":
            ((f, value, mask),) = _one_tlv(body[off:], name)
            action.update({key: f.name, "value": value, "mask": mask})
            off = len(body)
        elif kind == "ids":
            (n,) = take("H4x")
            action[key] = list(take(f"{n}H"))
        elif kind == "actions":
            action[key] = decode_actions(bytes(body[off:]))
            off = len(body)
        elif kind.startswith("props:"):
            action.update(decode_props(kind[6:], bytes(body[off:])))
            off = len(body)
        elif kind == "nxm_opt":
            if len(body) - off >= 4 and not any(body[off:off + 4]):
                action[key] = None
                off += 4
            else:
                action[key], used = _set_field_header(body, off)
                off += used
        elif kind == "nat_range":
            (present,) = take("H")       # bits OVS does not define are ignored, as OVS ignores them
            for rkey, bit, code in NAT_RANGES:
                if present & bit:
                    if off + struct.calcsize("!" + code) > len(body):    # OVS: a range cut short is an argument
                        raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_ARGUMENT, f"nx_nat: {rkey} cut short")
                    (v,) = take(code)
                    action[rkey] = int.from_bytes(v, "big") if code.endswith("s") else v
        elif kind == "learn_specs":
            action[key], off = _decode_specs(body, off)
            if any(body[off:]):      # OVS: what follows the specs must be zeros (padding)
                raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_ARGUMENT, "nx_learn: bytes after its specs")
    if any(body[off:]):
        raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_LEN, f"nx_{name}: non-zero bytes after its body")
    return action


def _one_tlv(buf: bytes, name: str) -> list[tuple[F.Field, int, int | None]]:
    """The TLV at the start of ``buf`` (its padding after it)."""
    if len(buf) < 4:
        raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_LEN, f"nx_{name}: no field")
    end = 4 + buf[3]
    if end > len(buf) or any(buf[end:]):
        raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_LEN, f"nx_{name}: field length {buf[3]}")
    try:
        return nxm.decode(bytes(buf[:end]))
    except OfpError as e:
        raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_ARGUMENT, f"nx_{name}: {e}") from e


def _decode_specs(body: bytes, off: int) -> tuple[list[dict[str, Any]], int]:
    """The flow_mod_specs from ``body[off:]`` up to a zero header or the end; the offset after them."""
    specs: list[dict[str, Any]] = []

    def bad(why: str) -> OfpError:
        return OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_ARGUMENT, f"nx_learn: {why}")

    while len(body) - off >= 2:
        (head,) = struct.unpack_from("!H", body, off)
        if head == 0:
            break
        off += 2
        n, dst_code = head & LEARN_N_BITS, head >> LEARN_DST_SHIFT & 3
        if head & ~(LEARN_N_BITS | LEARN_SRC_IMMEDIATE | 3 << LEARN_DST_SHIFT) or dst_code == 3:
            raise bad(f"flow_mod_spec header {head:#06x}")
        sp: dict[str, Any] = {"dst_type": LEARN_DSTS[dst_code], "n_bits": n}
        if head & LEARN_SRC_IMMEDIATE:
            size = 2 * ((n + 15) // 16)
            if off + size > len(body):
                raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_LEN, "nx_learn: truncated immediate")
            sp["value"] = int.from_bytes(body[off:off + size], "big")
            off += size
        else:
            sp["src"], used = _set_field_header(body, off)
            if off + used + 2 > len(body):
                raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_LEN, "nx_learn: truncated source")
            (sp["src_ofs"],) = struct.unpack_from("!H", body, off + used)
            off += used + 2
        if sp["dst_type"] != "output":
            sp["dst"], used = _set_field_header(body, off)
            if off + used + 2 > len(body):
                raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_LEN, "nx_learn: truncated destination")
            (sp["dst_ofs"],) = struct.unpack_from("!H", body, off + used)
            off += used + 2
        specs.append(sp)
    return specs, off
