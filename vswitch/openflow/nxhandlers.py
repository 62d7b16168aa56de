"""The agent's Nicira messages: the flow format and NXM flow-mods of plain ``ovs-ofctl``, NXM flow
statistics, OpenFlow 1.0's groups, the Geneve TLV map, controller ids and conntrack zone flushes.

```
 vendor / experimenter 0x2320 ──► NiciraMessages._nicira(subtype)
     NXT_SET_FLOW_FORMAT, NXT_FLOW_MOD_TABLE_ID, NXT_SET_CONTROLLER_ID   per connection
     NXT_FLOW_MOD ──► BridgeFlows.flow_mod (an NXM match; 1.0 actions + Nicira's)
     NXT_GROUP_MOD ──► groupmeter.group_mod (1.5's group-mod, 1.0 actions; errors NXET_VENDOR-wrapped)
     NXT_TLV_TABLE_MOD / REQUEST ──► TlvMap (per bridge; one placement in the key for all)
     NXT_CT_FLUSH_ZONE ──► accepted (no conntrack yet: nothing to flush)
     NXT_FLOW_MONITOR_CANCEL ──► FlowMonitors (``monitor``)
 stats type 0xffff (1.0) ──► NXST_FLOW / NXST_AGGREGATE, NXST_GROUP / _DESC / _FEATURES (groupmeter.multipart),
                             split into messages of at most 64 KiB; NXST_FLOW_MONITOR ──► FlowMonitors (``monitor``)
```

A mixin of ``OfAgent`` (which gives it ``flows``, ``tlv_map`` and the message helpers).
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from typing import Any

from ofproto import tlvmap
from vswitch.openflow import groupmeter, monitor, nxt
from vswitch.openflow.channel import NXET_VENDOR, ROLE_SLAVE, OfConnection
from vswitch.openflow.codec import (
    MP_GROUP,
    MP_GROUP_DESC,
    MP_GROUP_FEATURES,
    OFP10,
    OFPET_BAD_REQUEST,
    Msg,
    OfpError,
    encode,
)
from vswitch.openflow.flows import port13

log = logging.getLogger(__name__)

OFPBRC_BAD_VENDOR, OFPBRC_EPERM, OFPBRC_IS_SLAVE = 3, 5, 10
OFPET_EXPERIMENTER = 0xFFFF
#: Nicira's TLV-table errors (experimenter errors; 1.0 numbers them 511 + code in OFPET_BAD_REQUEST)
NXTTMFC_BAD_COMMAND, NXTTMFC_BAD_OPT_LEN, NXTTMFC_BAD_FIELD_IDX = 16, 17, 18
NXTTMFC_TABLE_FULL, NXTTMFC_ALREADY_MAPPED, NXTTMFC_DUP_ENTRY = 19, 20, 21
#: NXTTMFC_INVALID_TLV_DEL: 1.3+ Nicira experimenter code; 1.0: (OFPET_BAD_REQUEST, 537) in NXET_VENDOR
NXTTMFC_INVALID_TLV_DEL, NX10_INVALID_TLV_DEL = 38, 537
NXTTMC_ADD, NXTTMC_DELETE, NXTTMC_CLEAR = 0, 1, 2
OFPMPF_REPLY_MORE = 1
MAX_MSG = 0xFFFF
#: NXST subtype -> the group multipart it answers as (``groupmeter.multipart``)
_GROUP_STATS = {nxt.NXST_GROUP: MP_GROUP, nxt.NXST_GROUP_DESC: MP_GROUP_DESC,
                nxt.NXST_GROUP_FEATURES: MP_GROUP_FEATURES}


class TlvMap:
    """One bridge's Geneve option -> ``tun_metadata<index>`` mappings (``ovs-ofctl add-tlv-map``), as OVS keeps a
    map per bridge. The flow key has one placement for the switch (``ofproto.tlvmap``): it holds every bridge's
    mappings, so two bridges may map an index only to the same option. A bridge's mappings go with it
    (``release``)."""

    MAX_OPTION_SPACE = 256
    MAX_FIELDS = 64
    #: every bridge's map (the switch's placement is their union)
    _all: weakref.WeakSet[TlvMap] = weakref.WeakSet()
    _lock = threading.Lock()    # bridges' agents run on threads of their own

    def __init__(self) -> None:
        self.own: dict[int, tuple[int, int, int]] = {}
        TlvMap._all.add(self)

    @property
    def maps(self) -> dict[int, tuple[int, int, int]]:
        """index -> (option class, type, length): this bridge's mappings."""
        return dict(self.own)

    def apply(self, command: int, mappings: list[dict[str, int]]) -> None:
        """One TLV table mod: all of it applies or, with the error OVS sends, none of it."""
        with TlvMap._lock:
            self._apply(command, mappings)

    def _apply(self, command: int, mappings: list[dict[str, int]]) -> None:
        if command == NXTTMC_CLEAR:
            self._place({})
            return
        if command == NXTTMC_DELETE:
            gone = {m["index"] for m in mappings}
            self._place({i: m for i, m in self.own.items() if i not in gone})
            return
        if command != NXTTMC_ADD:
            raise OfpError(OFPET_EXPERIMENTER, NXTTMFC_BAD_COMMAND, f"TLV table mod command {command}")
        new = self.maps
        others = self._others()
        for m in mappings:
            idx, key = m["index"], (m["option_class"], m["option_type"])
            length = m["option_len"]
            if length == 0 or length % 4 or length > 124:
                raise OfpError(OFPET_EXPERIMENTER, NXTTMFC_BAD_OPT_LEN, f"option length {length}")
            if idx >= self.MAX_FIELDS:
                raise OfpError(OFPET_EXPERIMENTER, NXTTMFC_BAD_FIELD_IDX, f"tun_metadata{idx}")
            if idx in new:
                raise OfpError(OFPET_EXPERIMENTER, NXTTMFC_ALREADY_MAPPED, f"tun_metadata{idx} is already mapped")
            if any((c, t) == key for c, t, _ in new.values()):
                raise OfpError(OFPET_EXPERIMENTER, NXTTMFC_DUP_ENTRY,
                               f"option class {key[0]:#x} type {key[1]:#x} is mapped already")
            if others.get(idx, (*key, length)) != (*key, length):
                raise OfpError(OFPET_EXPERIMENTER, NXTTMFC_ALREADY_MAPPED,
                               f"tun_metadata{idx} is mapped to another option on another bridge (pyvswitch has one "
                               "placement of Geneve options for every bridge)")
            new[idx] = (*key, length)
        if sum(length for _, _, length in new.values()) > self.MAX_OPTION_SPACE:
            raise OfpError(OFPET_EXPERIMENTER, NXTTMFC_TABLE_FULL, "the TLV options take more than 256 bytes")
        self._place(new)

    def release(self) -> None:
        """The bridge is gone: its mappings leave the switch's placement (those other bridges share stay)."""
        with TlvMap._lock:
            self._place({})
            TlvMap._all.discard(self)

    def _others(self) -> dict[int, tuple[int, int, int]]:
        """The other bridges' mappings."""
        return {i: m for other in list(TlvMap._all) if other is not self for i, m in other.own.items()}

    def _place(self, own: dict[int, tuple[int, int, int]]) -> None:
        self.own = own
        tlvmap.place({**self._others(), **own})

    def reply(self) -> dict[str, Any]:
        """The fields of NXT_TLV_TABLE_REPLY."""
        return {"max_option_space": self.MAX_OPTION_SPACE, "max_fields": self.MAX_FIELDS,
                "mappings": [{"option_class": c, "option_type": t, "option_len": n, "index": i}
                             for i, (c, t, n) in sorted(self.maps.items())]}


class NiciraMessages:
    """Handlers of the Nicira messages for ``OfAgent``."""

    flows: Any
    tlv_map: TlvMap
    monitors: monitor.FlowMonitors

    def _nicira(self, conn: OfConnection, msg: Msg, subtype: int, body: bytes) -> None:
        if subtype == nxt.NXT_GROUP_MOD and conn.version != OFP10:   # 1.1+ has OFPT_GROUP_MOD (OVS refuses it so)
            raise OfpError(OFPET_BAD_REQUEST, nxt.OFPBRC_BAD_SUBTYPE, "NXT_GROUP_MOD is OpenFlow 1.0's")
        if subtype == monitor.NXT_FLOW_MONITOR_CANCEL:
            self.monitors.nx_cancel(conn, body)
            return
        fields = nxt.decode(subtype, body)
        if subtype == nxt.NXT_SET_FLOW_FORMAT:
            if fields["format"] not in (nxt.NXFF_OPENFLOW10, nxt.NXFF_NXM):
                raise OfpError(OFPET_BAD_REQUEST, OFPBRC_EPERM, f"flow format {fields['format']}")
            conn.flow_format = fields["format"]
        elif subtype == nxt.NXT_FLOW_MOD_TABLE_ID:
            conn.flow_mod_table_id = bool(fields["set"])
        elif subtype == nxt.NXT_SET_CONTROLLER_ID:
            conn.controller_id = fields["controller_id"]
        elif subtype == nxt.NXT_FLOW_MOD:
            self._nx_flow_mod(conn, msg, fields)
        elif subtype == nxt.NXT_GROUP_MOD:
            try:
                groupmeter.group_mod(self, conn, Msg(OFP10, "group_mod", msg.xid, fields))
            except OfpError as e:
                raise groupmeter.error10(e) if conn.version == OFP10 else e from None
        elif subtype == nxt.NXT_TLV_TABLE_MOD:
            if conn.role == ROLE_SLAVE:
                raise OfpError(OFPET_BAD_REQUEST, OFPBRC_IS_SLAVE, "a slave controller cannot change the TLV map")
            self._tlv_in_use(conn.version, fields["command"], fields["mappings"])
            self.tlv_map.apply(fields["command"], fields["mappings"])
        elif subtype == nxt.NXT_TLV_TABLE_REQUEST:
            kind, out = nxt.vendor_fields(conn.version, nxt.NXT_TLV_TABLE_REPLY,
                                          nxt.encode(nxt.NXT_TLV_TABLE_REPLY, self.tlv_map.reply()))
            conn.send(Msg(conn.version, kind, msg.xid, out))
        elif subtype == nxt.NXT_CT_FLUSH_ZONE:
            log.info("openflow %s: ct flush of zone %d (no conntrack yet: nothing to flush)", conn.peer,
                     fields["zone_id"])
        else:
            raise OfpError(OFPET_BAD_REQUEST, nxt.OFPBRC_BAD_SUBTYPE, f"Nicira message subtype {subtype}")

    def _tlv_in_use(self, version: int, command: int, mappings: list[dict[str, int]]) -> None:
        """A TLV table mod that would unmap an option this bridge's flows match on or act on gets OVS's
        NXTTMFC_INVALID_TLV_DEL, and changes nothing."""
        if command == NXTTMC_CLEAR:
            gone = set(self.tlv_map.maps)
        elif command == NXTTMC_DELETE:
            gone = {m["index"] for m in mappings} & set(self.tlv_map.maps)
        else:
            return
        names = re.compile(r"\btun_metadata(\d+)\b")
        for flow in self.flows.tables.flows():
            used = {int(n) for n in names.findall(f"{flow.match} {flow.instructions}")}
            if used & gone:
                if version == OFP10:
                    raise OfpError(NXET_VENDOR, OFPET_BAD_REQUEST << 16 | NX10_INVALID_TLV_DEL, "TLV option in use")
                raise OfpError(OFPET_EXPERIMENTER, NXTTMFC_INVALID_TLV_DEL,
                               f"tun_metadata{min(used & gone)} is used by a flow in table {flow.table_id}")

    def _nx_flow_mod(self, conn: OfConnection, msg: Msg, fields: dict[str, Any]) -> None:
        """NXT_FLOW_MOD: OpenFlow 1.0's flow-mod with an NXM match (the command's high byte is the table
        when NXT_FLOW_MOD_TABLE_ID is on)."""
        f = dict(fields)
        f["nxm"] = True
        if conn.flow_mod_table_id:
            f["table_id"], f["command"] = f["command"] >> 8, f["command"] & 0xFF
        if "cookie_match" in f:   # NXM_NX_COOKIE_W: modify / delete the flows of that cookie
            f["cookie"], f["cookie_mask"] = f.pop("cookie_match")
        self._on_flow_mod(conn, Msg(OFP10, "flow_mod", msg.xid, f))   # type: ignore[attr-defined]

    def _nicira_stats(self, conn: OfConnection, msg: Msg) -> None:
        """NXST_FLOW / NXST_AGGREGATE and the group statistics (OpenFlow 1.0 vendor statistics)."""
        if conn.version != OFP10:
            raise OfpError(OFPET_BAD_REQUEST, 2, "experimenter statistics")   # OFPBRC_BAD_MULTIPART
        if bytes(msg.body)[:8] == monitor.NXST_FLOW_MONITOR_HEAD:
            self.monitors.nx_request(conn, msg)
            return
        subtype, req = nxt.stats_request_decode(bytes(msg.body))
        kind = _GROUP_STATS.get(subtype)
        if kind == MP_GROUP_FEATURES:
            self._send_stats(conn, msg, nxt.stats_reply_encode(subtype, groupmeter.multipart(self, OFP10, kind, {})),
                             0)
            return
        if kind is not None:
            self._send_entries(conn, msg, subtype, groupmeter.multipart(self, OFP10, kind, req))
            return
        request = {"table_id": req["table_id"], "match": req["match"], "nxm": True,
                   "out_port": port13(OFP10, req["out_port"])}
        if "cookie_match" in req:   # NXM_NX_COOKIE_W: the flows of that cookie
            request["cookie"], request["cookie_mask"] = req["cookie_match"]
        entries = self.flows.flow_stats(OFP10, request)
        if subtype == nxt.NXST_AGGREGATE:
            reply: Any = {"packet_count": sum(e["packet_count"] for e in entries),
                          "byte_count": sum(e["byte_count"] for e in entries), "flow_count": len(entries)}
            self._send_stats(conn, msg, nxt.stats_reply_encode(subtype, reply), 0)
            return
        self._send_entries(conn, msg, subtype, entries)

    def _send_entries(self, conn: OfConnection, msg: Msg, subtype: int, entries: list[dict[str, Any]]) -> None:
        """A statistics reply of ``entries``, split into messages of at most 64 KiB."""
        head = 8 + 4 + 12   # OpenFlow header, stats type and flags, Nicira's stats header
        part: list[dict[str, Any]] = []
        size = head
        for e in entries:
            n = nxt.stats_reply_size(subtype, e)
            if part and size + n > MAX_MSG:
                self._send_stats(conn, msg, nxt.stats_reply_encode(subtype, part), OFPMPF_REPLY_MORE)
                part, size = [], head
            part.append(e)
            size += n
        self._send_stats(conn, msg, nxt.stats_reply_encode(subtype, part), 0)

    @staticmethod
    def _send_stats(conn: OfConnection, request: Msg, body: bytes, flags: int) -> None:
        reply = Msg(OFP10, "stats_reply", request.xid, {"mp_type": request.mp_type, "flags": flags, "body": body})
        assert len(encode(reply)) <= MAX_MSG
        conn.send(reply)


def vendor_of(version: int, msg: Msg) -> tuple[int, int, bytes]:
    """``(vendor, subtype, body)`` of a vendor / experimenter message."""
    return nxt.split_vendor(version, msg.fields)


def nx_error10(code: int) -> tuple[int, int]:
    """A Nicira experimenter error code as OpenFlow 1.0 (OFPET_BAD_REQUEST, 511 + code) numbers it."""
    return OFPET_BAD_REQUEST, 511 + code
