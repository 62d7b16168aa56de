"""Nicira's packet-in2 and resume messages: NXT_SET_PACKET_IN_FORMAT (16), NXT_RESUME (28), NXT_PACKET_IN2
(30); and the agent's side of them (NXT_SET_CONTROLLER_ID, which ``controller(id=)`` packet-ins a connection
takes, is ``nxhandlers``').

```
 Nicira message: OpenFlow 1.0 vendor / 1.2+ experimenter header, vendor 0x2320, subtype (32) | body
 NXT_PACKET_IN2 / NXT_RESUME body: properties  type (16) | length (16) | value, padded to 8
   0 packet  1 full_len (u32)  2 buffer_id (u32)  3 table_id (u8)  4 cookie (4 pad, u64)  5 reason (u8)
   6 metadata (NXM / OXM TLVs: in_port, registers, metadata)  7 userdata  8 continuation (4 pad, properties)
```

A connection that sent NXT_SET_PACKET_IN_FORMAT(2) gets NXT_PACKET_IN2 for every packet-in, the properties
in OVS's order (packet, full_len when cut, table_id, cookie except after a pause, reason, metadata,
continuation, userdata) and its metadata as OVS writes it (OpenFlow 1.5: registers as masked 64-bit
``xreg``s; before: ``NXM_NX_REGn``). The continuation holds one property (``CONTINUATION_STATE``): the
frozen walk sealed by ``xlate.pause.seal``. Errors as OVS 3.1 answers: a format other than 0, 1, 2
``OFPBRC_EPERM``, a body of the wrong size or a truncated property ``OFPBRC_BAD_LEN``, an unknown property
``OFPBPC_BAD_TYPE`` (each version's numbers: ``nx_error``), a resume without a genuine, current continuation
``NXR_STALE``, a resume from a slave controller ``OFPBRC_IS_SLAVE``. Format 1 gets NXT_PACKET_IN (17): the
OpenFlow 1.0 packet-in with a cookie, the table and an nx_match of the pipeline fields, as OVS writes it.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from dpif import key as K
from ofproto import fields as F
from ofproto.actions import Controller, FieldValue
from vswitch.openflow import nxm, nxt
from vswitch.openflow.channel import NXET_VENDOR, OFPBRC_IS_SLAVE, ROLE_SLAVE
from vswitch.openflow.codec import OFP10, OFP13, OFP15, OFPBRC_BAD_LEN, OFPET_BAD_REQUEST, Msg, OfpError
from xlate import pause

NXT_SET_PACKET_IN_FORMAT, NXT_PACKET_IN, NXT_RESUME, NXT_PACKET_IN2 = 16, 17, 28, 30
NXPIF_STANDARD, NXPIF_NXT_PACKET_IN, NXPIF_NXT_PACKET_IN2 = 0, 1, 2
(NXPINT_PACKET, NXPINT_FULL_LEN, NXPINT_BUFFER_ID, NXPINT_TABLE_ID, NXPINT_COOKIE, NXPINT_REASON, NXPINT_METADATA,
 NXPINT_USERDATA, NXPINT_CONTINUATION) = range(9)
CONTINUATION_STATE = 0xFFF0     # our one continuation property (OVS's own are 0x8000 and up)
OFPBRC_EPERM = 5
OFPET_EXPERIMENTER = 0xFFFF
NXR_STALE_10, NXR_STALE = (1, 534), 35

#: what a NXT_RESUME / packet-in2 property holds: type -> (name, kind)
PIN_PROPS = {NXPINT_PACKET: ("packet", "bytes"), NXPINT_FULL_LEN: ("full_len", "I"),
             NXPINT_BUFFER_ID: ("buffer_id", "I"), NXPINT_TABLE_ID: ("table_id", "B"),
             NXPINT_COOKIE: ("cookie", "4xQ"), NXPINT_REASON: ("reason", "B"), NXPINT_METADATA: ("metadata", "bytes"),
             NXPINT_USERDATA: ("userdata", "bytes"), NXPINT_CONTINUATION: ("continuation", "bytes")}


def nx_error(version: int, kind: str, why: str) -> OfpError:
    """OVS's error ``kind`` (``stale``, ``bad_prop_type``) as version ``version`` numbers it (OpenFlow 1.0: a
    Nicira vendor error, ``code`` = type << 16 | code for ``channel``)."""
    if kind == "stale":
        if version == OFP10:
            return OfpError(NXET_VENDOR, NXR_STALE_10[0] << 16 | NXR_STALE_10[1], why)
        return OfpError(OFPET_EXPERIMENTER, NXR_STALE, why)
    if version == OFP10:
        return OfpError(NXET_VENDOR, 13 << 16 | 2, why)
    return OfpError(13, 2, why) if version == OFP13 else OfpError(14, 0, why)


def nx_msg(version: int, subtype: int, body: bytes, xid: int = 0) -> Msg:
    """A Nicira message in version ``version``'s header."""
    kind, fields = nxt.vendor_fields(version, subtype, body)
    return Msg(version, kind, xid, fields)


# ---------------------------------------------------------------- properties
def _prop(ptype: int, value: bytes) -> bytes:
    n = 4 + len(value)
    return struct.pack("!HH", ptype, n) + value + bytes(-n % 8)


def encode_props(version: int, fields: dict[str, Any]) -> bytes:
    """A packet-in2 body (or a NXT_RESUME's) from ``fields`` (``packet``, ``full_len``, ``table_id``, ``cookie``,
    ``reason``, ``metadata`` (TLV bytes), ``continuation`` (its properties), ``userdata``; absent: not sent)."""
    out = _prop(NXPINT_PACKET, fields["packet"])
    if fields.get("full_len") is not None:
        out += _prop(NXPINT_FULL_LEN, struct.pack("!I", fields["full_len"]))
    if fields.get("buffer_id") is not None:
        out += _prop(NXPINT_BUFFER_ID, struct.pack("!I", fields["buffer_id"]))
    out += _prop(NXPINT_TABLE_ID, struct.pack("!B", fields.get("table_id", 0)))
    if fields.get("cookie") is not None:
        out += _prop(NXPINT_COOKIE, struct.pack("!4xQ", fields["cookie"]))
    out += _prop(NXPINT_REASON, struct.pack("!B", fields.get("reason", 1)))
    out += _prop(NXPINT_METADATA, fields.get("metadata", b""))
    if fields.get("continuation") is not None:
        out += _prop(NXPINT_CONTINUATION, bytes(4) + fields["continuation"])
    if fields.get("userdata"):
        out += _prop(NXPINT_USERDATA, fields["userdata"])
    return out


def decode_props(version: int, buf: bytes) -> dict[str, Any]:
    """A packet-in2 / NXT_RESUME body as ``{name: value}`` (``continuation``: the bytes after its 4 pad)."""
    out: dict[str, Any] = {}
    off = 0
    while off < len(buf):
        if len(buf) - off < 4:
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, "truncated property header")
        ptype, length = struct.unpack_from("!HH", buf, off)
        if length < 4 or off + length + (-length % 8) > len(buf):
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, f"property {ptype}: length {length}")
        if ptype not in PIN_PROPS:
            raise nx_error(version, "bad_prop_type", f"unknown property {ptype}")
        name, kind = PIN_PROPS[ptype]
        value = bytes(buf[off + 4:off + length])
        if kind != "bytes":
            if len(value) != struct.calcsize("!" + kind):
                raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, f"{name}: {len(value)} bytes")
            out[name] = struct.unpack("!" + kind, value)[0]
        else:
            out[name] = value[4:] if name == "continuation" else value
        off += length + (-length % 8)
    return out


# ---------------------------------------------------------------- metadata: in_port and the pipeline fields
def _by_id(ident: tuple[int, ...]) -> F.Field:
    f = nxm.field_by_id(ident)
    assert f is not None, ident
    return f


_IN_PORT = _by_id((F.OFPXMC_OPENFLOW_BASIC, 0))
_NXM_IN_PORT = _by_id((F.OFPXMC_NXM_0, 0))
_METADATA = _by_id((F.OFPXMC_OPENFLOW_BASIC, 2))
_REGS = [_by_id((F.OFPXMC_NXM_1, i)) for i in range(16)]
_XREGS = [_by_id((F.OFPXMC_PACKET_REGS, i)) for i in range(8)]


def metadata_tlvs(version: int, in_port: int, pipeline: tuple[int, ...], nxm_in_port: bool = False) -> bytes:
    """The packet-in2 metadata: ``in_port`` (OpenFlow number; ``nxm_in_port``: NXM's 16-bit one, as
    NXT_PACKET_IN has it), then the registers and metadata that are not 0."""
    state = [0] * K.KEY_WORDS + list(pipeline)
    state += [0] * (F.FLOW_WORDS - len(state))
    items: list[tuple[F.Field, int, int | None]] = [
        (_NXM_IN_PORT, in_port & 0xFFFF, None) if nxm_in_port else (_IN_PORT, in_port, None)]
    if version >= OFP15:
        for f in _XREGS:
            v = FieldValue.of(f.name).read(state)
            if v:
                mask = (0xFFFFFFFF if v & 0xFFFFFFFF else 0) | (0xFFFFFFFF << 32 if v >> 32 else 0)
                items.append((f, v, mask))
    else:
        for f in _REGS:
            v = FieldValue.of(f.name).read(state)
            if v:
                items.append((f, v, None))
    md = FieldValue.of(_METADATA.name).read(state)
    if md:
        items.append((_METADATA, md, None))
    return nxm.encode(items, nxm.OXM)


def pipeline_from_tlvs(buf: bytes) -> tuple[int | None, dict[int, int]]:
    """A resume's metadata: ``(in_port or None, {flow word: value})`` of the registers and metadata it sets."""
    state = [0] * F.FLOW_WORDS
    in_port = None
    for f, value, mask in nxm.decode(buf):
        if f.name == _IN_PORT.name or f.name == "in_port":
            in_port = value
            continue
        if f.where != F.PIPELINE:
            continue
        fv = FieldValue.of(f.name)
        for w, v, m in fv.values(value, (1 << fv.bits) - 1 if mask is None else mask):
            state[w] = (state[w] & ~m) | v
    return in_port, {w: state[w] for w in range(K.KEY_WORDS, F.FLOW_WORDS)}


# ---------------------------------------------------------------- packet-in2 from a datapath packet-in
def packet_in2(version: int, pi: Any, in_port: int, dpid: int, fingerprints: dict[int, int]) -> Msg:
    """The NXT_PACKET_IN2 of datapath packet-in ``pi`` (``vswitch.dpbridge.PacketIn``)."""
    info: pause.PinInfo | None = pi.pin
    frozen = info.frozen if info is not None else None
    fields: dict[str, Any] = {
        "packet": pi.data, "full_len": pi.total_len if pi.total_len != len(pi.data) else None,
        "table_id": pi.table_id, "reason": pi.reason,
        "cookie": None if frozen is not None else (pi.flow.cookie if pi.flow is not None else 0xFFFFFFFFFFFFFFFF),
        "metadata": metadata_tlvs(version, in_port, info.pipeline if info is not None else ()),
        "userdata": info.userdata if info is not None else b""}
    if frozen is not None:
        fields["continuation"] = _prop(CONTINUATION_STATE, pause.seal(frozen, dpid, fingerprints))
    return nx_msg(version, NXT_PACKET_IN2, encode_props(version, fields))


def nxt_packet_in(version: int, pi: Any, in_port: int) -> Msg:
    """The NXT_PACKET_IN (format 1) of datapath packet-in ``pi``: an nx_match of in_port and the pipeline fields,
    no userdata, no continuation (as OVS 3.1 writes it)."""
    info: pause.PinInfo | None = pi.pin
    match = metadata_tlvs(OFP13, in_port, info.pipeline if info is not None else (), nxm_in_port=True)
    paused = info is not None and info.frozen is not None
    cookie = 0xFFFFFFFFFFFFFFFF if paused or pi.flow is None else pi.flow.cookie
    body = struct.pack("!IHBBQH6x", 0xFFFFFFFF, pi.total_len, pi.reason, pi.table_id, cookie, len(match))
    return nx_msg(version, NXT_PACKET_IN, body + match + bytes(-len(match) % 8) + bytes(2) + pi.data)


def controller_id_of(pi: Any) -> int:
    """The controller id a packet-in is for (0: a plain output to CONTROLLER)."""
    return pi.pin.controller_id if getattr(pi, "pin", None) is not None else 0


# ---------------------------------------------------------------- the agent's handlers
def handle(agent: Any, conn: Any, msg: Msg) -> bool:
    """Serve a Nicira message of this module; False when it is not one (the caller answers it)."""
    vendor, subtype, body = nxt.split_vendor(msg.version, msg.fields)
    if vendor != nxt.NX_VENDOR:
        return False
    if subtype == NXT_SET_PACKET_IN_FORMAT:
        if len(body) != 4:
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, f"set_packet_in_format: {len(body)} bytes")
        fmt = struct.unpack("!I", body)[0]
        if fmt not in (NXPIF_STANDARD, NXPIF_NXT_PACKET_IN, NXPIF_NXT_PACKET_IN2):
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_EPERM, f"packet-in format {fmt}")
        conn.pin_format = fmt
        return True
    if subtype == NXT_RESUME:
        if conn.role == ROLE_SLAVE:
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_IS_SLAVE, "a slave controller cannot resume packets")
        resume(agent, conn, msg.version, body)
        return True
    return False


def resume(agent: Any, conn: Any, version: int, body: bytes) -> None:
    """NXT_RESUME: check the continuation, then run the rest of the walk on its packet in the datapath."""
    props = decode_props(version, body)
    if "packet" not in props:
        raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, "resume without a packet")
    cont = props.get("continuation", b"")
    if len(cont) < 4 or struct.unpack_from("!H", cont)[0] != CONTINUATION_STATE:
        raise nx_error(version, "stale", "resume without a continuation of this switch")
    length = struct.unpack_from("!H", cont, 2)[0]
    if length > len(cont) or any(cont[length:]):   # the state's padding is part of what was handed out
        raise nx_error(version, "stale", "resume with a continuation whose padding changed")
    dpid = agent.dpid or agent.datapath_id()
    try:
        frozen, prints = pause.unseal(cont[4:length], dpid)
    except pause.StaleContinuation as e:
        raise nx_error(version, "stale", str(e)) from None
    try:
        in_port, pipeline = pipeline_from_tlvs(props.get("metadata", b""))
    except OfpError:
        raise nx_error(version, "stale", "resume metadata") from None
    bf = agent.flows
    dp = agent.bridge.dp
    ts = bf.push() if bf.dirty_since or dp.flows is None else dp.flows
    flows = {}
    for uid, fp in prints.items():
        hit = np.flatnonzero(ts.uids == uid)
        rank = int(hit[0]) if len(hit) else -1
        if rank < 0 or pause.fingerprint(ts.flows[rank]) != fp:
            raise nx_error(version, "stale", f"flow {uid} changed since the pause")
        flows[uid] = ts.flows[rank]
    port_no = bf.port_map.get(in_port, -1) if in_port is not None else -1
    frame = props["packet"]

    def run(bridges: Any, key: list[int], port_flags: Any, cookies: Any, bridge: int) -> Any:
        return pause.translate_resume(bridges, key, port_flags, cookies, bridge, frozen, flows, pipeline)

    dp.call(lambda: dp.packet_out(frame, port_no, (), ts, run))


def controller_from_wire(a: dict[str, Any]) -> Controller:
    """An ``nx_controller`` / ``nx_controller2`` action dict as a ``Controller`` action."""
    return Controller(a.get("max_len", 0xFFFF), a.get("controller_id", 0), a.get("reason", 1),
                      bytes(a.get("userdata", b"")), bool(a.get("pause", False)), a.get("meter_id", 0))


def controller_to_wire(a: Controller) -> dict[str, Any]:
    """A ``Controller`` as the action dict ovs-ofctl would send: ``nx_controller`` when it has no userdata,
    pause or meter, else ``nx_controller2`` with the properties that differ from the defaults."""
    if not a.userdata and not a.pause and not a.meter_id:
        return {"type": "nx_controller", "max_len": a.max_len, "controller_id": a.controller_id, "reason": a.reason}
    out: dict[str, Any] = {"type": "nx_controller2"}
    if a.max_len != 0xFFFF:
        out["max_len"] = a.max_len
    if a.controller_id:
        out["controller_id"] = a.controller_id
    if a.reason != 1:
        out["reason"] = a.reason
    if a.userdata:
        out["userdata"] = a.userdata
    if a.pause:
        out["pause"] = True
    if a.meter_id:
        out["meter_id"] = a.meter_id
    return out
