"""Nicira extension messages (``NXT_*``) and statistics (``NXST_*``) on the wire, declared as data:
what plain ``ovs-ofctl`` (OpenFlow 1.0 with NXM) and ovn-controller send besides OpenFlow's own.

```
 OpenFlow 1.0  vendor (type 4):        vendor 0x2320 | subtype (32) | body
 OpenFlow 1.3+ experimenter (type 4):  experimenter 0x2320 | exp_type = subtype | body
 OpenFlow 1.0  stats (type 16/17), stats type 0xffff: vendor 0x2320 | subtype (32) | pad 4 | body
```

``decode(subtype, body)`` gives a dict of the subtype's fields; ``encode(subtype, fields)`` the body.
Layout kinds are those of ``vswitch.openflow.nicira`` plus ``nx_match`` (an NXM match: its length in
a ``match_len`` field earlier in the layout, its TLVs padded to 8 bytes, decoded to the codec's
``{name: value or (value, mask)}`` with OpenFlow 1.3 port numbers), ``actions10`` (OpenFlow 1.0 and
Nicira actions to the end), ``tlv_maps`` (a TLV table's Geneve option mappings) and ``ofp10:<name>`` (the
codec's OpenFlow 1.0 structure ``name`` to the end, its fields merged in: OVS carries groups in 1.0 as 1.5's
group-mod and group description with 1.0 actions, 1.3's group statistics and features). Tests:
``tests/test_nxt.py`` (byte for byte against os-ken, and plain ``ovs-ofctl`` against the switch),
``tests/test_ofctl10.py`` (the group messages, against real OVS's bytes and text).
"""

from __future__ import annotations

import struct
from typing import Any

from ofproto import fields as F
from vswitch.openflow import nxm
from vswitch.openflow.codec import (
    OFP10,
    OFPBRC_BAD_LEN,
    OFPET_BAD_REQUEST,
    OfpError,
    actions_decode,
    actions_encode,
    decode_body,
    encode_body,
    match_entry,
)

NX_VENDOR = 0x00002320
OFPBRC_BAD_SUBTYPE = 4

# NXT subtypes
NXT_SET_FLOW_FORMAT = 12
NXT_FLOW_MOD = 13
NXT_FLOW_REMOVED = 14
NXT_FLOW_MOD_TABLE_ID = 15
NXT_SET_PACKET_IN_FORMAT = 16
NXT_SET_CONTROLLER_ID = 20
NXT_TLV_TABLE_MOD = 24
NXT_TLV_TABLE_REQUEST = 25
NXT_TLV_TABLE_REPLY = 26
NXT_CT_FLUSH_ZONE = 29
NXT_GROUP_MOD = 31
# NXST subtypes
NXST_FLOW = 0
NXST_AGGREGATE = 1
NXST_GROUP = 7
NXST_GROUP_DESC = 8
NXST_GROUP_FEATURES = 9

NXFF_OPENFLOW10, NXFF_NXM = 0, 2

Layout = list[tuple[str, str]]
_FLOW_REQUEST: Layout = [("out_port", "H"), ("match_len", "H"), ("table_id", "B"), ("pad", "3x"),
                         ("match", "nx_match")]
#: NXT subtype -> layout of its body
NXT: dict[int, Layout] = {
    NXT_SET_FLOW_FORMAT: [("format", "I")],
    NXT_FLOW_MOD: [("cookie", "Q"), ("command", "H"), ("idle_timeout", "H"), ("hard_timeout", "H"),
                   ("priority", "H"), ("buffer_id", "I"), ("out_port", "H"), ("flags", "H"), ("match_len", "H"),
                   ("pad", "6x"), ("match", "nx_match"), ("actions", "actions10")],
    NXT_FLOW_MOD_TABLE_ID: [("set", "B"), ("pad", "7x")],
    NXT_SET_CONTROLLER_ID: [("pad", "6x"), ("controller_id", "H")],
    NXT_TLV_TABLE_MOD: [("command", "H"), ("pad", "6x"), ("mappings", "tlv_maps")],
    NXT_TLV_TABLE_REQUEST: [],
    NXT_TLV_TABLE_REPLY: [("max_option_space", "I"), ("max_fields", "H"), ("pad", "10x"), ("mappings", "tlv_maps")],
    NXT_CT_FLUSH_ZONE: [("pad", "6x"), ("zone_id", "H")],
    NXT_GROUP_MOD: [("group_mod", "ofp10:group_mod")],
}
_GROUP_REQUEST: Layout = [("group_id", "I"), ("pad", "4x")]
#: NXST subtype -> (request layout, reply entry layout, reply is a list)
NXST: dict[int, tuple[Layout, Layout, bool]] = {
    NXST_FLOW: (_FLOW_REQUEST,
                [("length", "H"), ("table_id", "B"), ("pad", "1x"), ("duration_sec", "I"), ("duration_nsec", "I"),
                 ("priority", "H"), ("idle_timeout", "H"), ("hard_timeout", "H"), ("match_len", "H"),
                 ("idle_age", "H"), ("hard_age", "H"), ("cookie", "Q"), ("packet_count", "Q"), ("byte_count", "Q"),
                 ("match", "nx_match"), ("actions", "actions10")], True),
    NXST_AGGREGATE: (_FLOW_REQUEST,
                     [("packet_count", "Q"), ("byte_count", "Q"), ("flow_count", "I"), ("pad", "4x")], False),
    NXST_GROUP: (_GROUP_REQUEST, [("entry", "ofp10:group_stats")], True),
    NXST_GROUP_DESC: (_GROUP_REQUEST, [("entry", "ofp10:group_desc")], True),
    NXST_GROUP_FEATURES: ([], [("features", "ofp10:mp_group_features_reply")], False),
}
_TLV_MAP = struct.Struct("!HBBH2x")   # option class, type, length; the tun_metadata index


def _pad8(n: int) -> int:
    return (n + 7) // 8 * 8


def match_decode(buf: bytes) -> dict[str, Any]:
    """An NXM match's TLVs as the codec's match dict (OpenFlow 1.3 port numbers)."""
    return dict(match_entry(f, value, mask) for f, value, mask in nxm.decode(buf))


#: NXM_NX_COOKIE (class 1, field 30): not a match field, the flow cookie and mask a request selects by
_COOKIE_CLASS, _COOKIE_FIELD = 0x0001, 30


def split_cookie(buf: bytes) -> tuple[bytes, tuple[int, int] | None]:
    """An NXM match without its NXM_NX_COOKIE(_W) entry, and that entry's (cookie, mask) if there was one
    (a malformed match is left whole, for ``match_decode`` to refuse)."""
    off, rest, cookie = 0, b"", None
    while off + 4 <= len(buf):
        header = struct.unpack_from("!I", buf, off)[0]
        size = header & 0xFF
        if off + 4 + size > len(buf):
            return buf, None
        if header >> 16 == _COOKIE_CLASS and header >> 9 & 0x7F == _COOKIE_FIELD and size in (8, 16):
            value = struct.unpack_from("!Q", buf, off + 4)[0]
            cookie = (value, struct.unpack_from("!Q", buf, off + 12)[0] if header >> 8 & 1 else (1 << 64) - 1)
        else:
            rest += buf[off:off + 4 + size]
        off += 4 + size
    return rest + buf[off:], cookie


def match_encode(match: dict[str, Any]) -> bytes:
    """The codec's match dict as NXM TLVs (NXM classes first, as OVS writes them; not padded)."""
    items = []
    for name, v in match.items():
        value, mask = v if isinstance(v, tuple) else (v, None)
        if name == "in_port":
            f = F.by_name("in_port")   # NXM_OF_IN_PORT, 16 bits
            value = value & 0xFFFF if value >= 0xFFFFFF00 else value
        else:
            f = F.by_oxm_name(name) or F.by_name(name)
        if f is None:
            raise ValueError(f"no match field {name!r}")
        items.append((f, value, mask))
    items.sort(key=lambda t: nxm.wire_id(t[0], nxm.NXM))
    return nxm.encode(items, nxm.NXM)


def _tlv_maps_decode(buf: bytes) -> list[dict[str, int]]:
    if len(buf) % _TLV_MAP.size:
        raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, f"TLV mappings of {len(buf)} bytes")
    return [dict(zip(("option_class", "option_type", "option_len", "index"), _TLV_MAP.unpack_from(buf, off),
                     strict=True)) for off in range(0, len(buf), _TLV_MAP.size)]


def _decode(layout: Layout, body: bytes, what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    off = 0
    for key, kind in layout:
        if kind.endswith("x") or kind in ("B", "H", "I", "Q"):
            size = struct.calcsize("!" + kind)
            if off + size > len(body):
                raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, f"{what}: {len(body)} bytes")
            if not kind.endswith("x"):
                out[key] = struct.unpack_from("!" + kind, body, off)[0]
            off += size
        elif kind == "nx_match":
            n = out.pop("match_len")
            if off + _pad8(n) > len(body):
                raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, f"{what}: match_len {n}")
            match, cookie = split_cookie(bytes(body[off:off + n]))
            out[key] = match_decode(match)
            if cookie is not None:
                out["cookie_match"] = cookie
            off += _pad8(n)
        elif kind == "actions10":
            end = out["length"] if "length" in out else len(body)
            out[key] = actions_decode(OFP10, bytes(body[off:end]))
            off = end
        elif kind == "tlv_maps":
            out[key] = _tlv_maps_decode(bytes(body[off:]))
            off = len(body)
        elif kind.startswith("ofp10:"):
            out.update(decode_body(OFP10, kind[6:], bytes(body[off:])))
            off = len(body)
    if off != len(body):
        raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, f"{what}: {len(body) - off} bytes after its body")
    return out


def _encode(layout: Layout, fields: dict[str, Any]) -> bytes:
    out = b""
    length_at = match_len_at = -1
    for key, kind in layout:
        if kind.endswith("x"):
            out += bytes(int(kind[:-1]))
        elif kind in ("B", "H", "I", "Q"):
            if key == "length":
                length_at = len(out)
            if key == "match_len":
                match_len_at = len(out)
            out += struct.pack("!" + kind, fields.get(key, 0))
        elif kind == "nx_match":
            m = match_encode(fields.get(key, {}))
            out = out[:match_len_at] + struct.pack("!H", len(m)) + out[match_len_at + 2:]
            out += m + bytes(_pad8(len(m)) - len(m))
        elif kind == "actions10":
            out += actions_encode(OFP10, fields.get(key, []))
        elif kind == "tlv_maps":
            out += b"".join(_TLV_MAP.pack(m["option_class"], m["option_type"], m["option_len"], m["index"])
                            for m in fields.get(key, []))
        elif kind.startswith("ofp10:"):
            out += encode_body(OFP10, kind[6:], fields)
    if length_at >= 0:
        out = out[:length_at] + struct.pack("!H", len(out)) + out[length_at + 2:]
    return out


def decode(subtype: int, body: bytes) -> dict[str, Any]:
    """An NXT message's body; ``OFPBRC_BAD_SUBTYPE`` for a subtype pyvswitch does not take."""
    layout = NXT.get(subtype)
    if layout is None:
        raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_SUBTYPE, f"Nicira message subtype {subtype}")
    return _decode(layout, body, f"NXT subtype {subtype}")


def encode(subtype: int, fields: dict[str, Any]) -> bytes:
    """An NXT message's body."""
    return _encode(NXT[subtype], fields)


def split_vendor(version: int, fields: dict[str, Any]) -> tuple[int, int, bytes]:
    """``(vendor, subtype, body)`` of a vendor (1.0) or experimenter (1.3+) message's decoded fields."""
    if version == OFP10:
        data = bytes(fields["data"])
        if len(data) < 4:
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, "vendor message without a subtype")
        return fields["vendor"], struct.unpack_from("!I", data)[0], data[4:]
    return fields["experimenter"], fields["exp_type"], bytes(fields["data"])


def vendor_fields(version: int, subtype: int, body: bytes) -> tuple[str, dict[str, Any]]:
    """The message type and fields that carry Nicira message ``subtype`` with ``body`` in ``version``."""
    if version == OFP10:
        return "vendor", {"vendor": NX_VENDOR, "data": struct.pack("!I", subtype) + body}
    return "experimenter", {"experimenter": NX_VENDOR, "exp_type": subtype, "data": body}


def stats_request_decode(body: bytes) -> tuple[int, dict[str, Any]]:
    """An OpenFlow 1.0 vendor statistics request's body (after the stats type and flags): ``(subtype, fields)``."""
    if len(body) < 12:
        raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, "truncated vendor statistics request")
    vendor, subtype = struct.unpack_from("!II", body)
    if vendor != NX_VENDOR:
        raise OfpError(OFPET_BAD_REQUEST, 3, f"vendor statistics of 0x{vendor:08x}")   # OFPBRC_BAD_VENDOR
    if subtype not in NXST:
        raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_SUBTYPE, f"Nicira statistics subtype {subtype}")
    return subtype, _decode(NXST[subtype][0], body[12:], f"NXST subtype {subtype}")


def stats_reply_encode(subtype: int, reply: list[dict[str, Any]] | dict[str, Any]) -> bytes:
    """An OpenFlow 1.0 vendor statistics reply's body: the header, then the entries (or the one reply)."""
    entry = NXST[subtype][1]
    items = reply if isinstance(reply, list) else [reply]
    return struct.pack("!II4x", NX_VENDOR, subtype) + b"".join(_encode(entry, e) for e in items)


def stats_reply_size(subtype: int, entry: dict[str, Any]) -> int:
    """Bytes one reply entry takes (to split a long reply into messages)."""
    return len(_encode(NXST[subtype][1], entry))
