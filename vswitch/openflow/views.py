"""The switch as OpenFlow sees it, for the agent: ports (1.0, 1.3 and 1.4+ forms), port and table statistics,
table and meter features, and the multipart / stats replies built from them (``SwitchViews``, a mixin of
``OfAgent``: it reads ``self.bridge``, ``self.flows``, ``self.dpid`` and ``self._started``)."""

from __future__ import annotations

import struct
import time
from typing import Any

from ofproto.rules import N_TABLES
from vswitch.openflow import groupmeter
from vswitch.openflow.channel import OfConnection
from vswitch.openflow.codec import (
    MP_AGGREGATE,
    MP_DESC,
    MP_EXPERIMENTER,
    MP_FLOW,
    MP_METER_FEATURES,
    MP_PORT_DESC,
    MP_PORT_STATS,
    MP_QUEUE,
    MP_TABLE,
    MP_TABLE_FEATURES,
    OFP10,
    OFP13,
    OFP15,
    OFPBRC_BAD_MULTIPART,
    OFPET_BAD_REQUEST,
    Msg,
    OfpError,
    encode,
)
from vswitch.openflow.flows import port_wire

OFPP13_LOCAL, OFPP10_LOCAL = 0xFFFFFFFE, 0xFFFE
OFPP13_ANY, OFPP10_NONE = 0xFFFFFFFF, 0xFFFF
OFPPC_PORT_DOWN = 1
OFPPS_LINK_DOWN = 1
OFPPS13_LIVE = 4
OFPPF_10GB_FD = 1 << 6   # 1.3 numbering (1.0: 1 << 6 too)
OFPPF_COPPER = 1 << 11   # 1.3 (1.0: 1 << 7)
OFPPF10_COPPER = 1 << 7
#: OFPET_QUEUE_OP_FAILED (1.3+: 9; 1.0: 5, as ``channel._error10`` numbers it) and its codes
OFPET13_QUEUE_OP_FAILED, OFPQOFC_BAD_PORT, OFPQOFC_BAD_QUEUE = 9, 0, 1
OFPP10_ALL, OFPP13_ALL, OFPQ_ALL = 0xFFFC, 0xFFFFFFFC, 0xFFFFFFFF


class SwitchViews:
    """Ports, statistics and multipart replies of one bridge (mixed into ``OfAgent``)."""

    bridge: Any
    flows: Any
    dpid: int
    _started: float

    @staticmethod
    def _desc10(desc: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in desc.items() if k not in ("curr_speed", "max_speed")}
        out["port_no"] = port_wire(OFP10, desc["port_no"])
        out["state"] = desc["state"] & 1
        out["curr"] = (desc["curr"] & 0x7F) | (0x80 if desc["curr"] & (1 << 11) else 0)
        return out

    def _on_multipart_request(self, conn: OfConnection, msg: Msg) -> None:
        self._stats(conn, msg, "multipart_reply")

    def _on_stats_request(self, conn: OfConnection, msg: Msg) -> None:
        self._stats(conn, msg, "stats_reply")

    def _stats(self, conn: OfConnection, msg: Msg, reply: str) -> None:
        v = conn.version
        kind = msg.mp_type
        if kind == MP_DESC:
            body: Any = {"mfr_desc": "pyvswitch", "hw_desc": "pyvswitch numba datapath",
                         "sw_desc": _version(), "serial_num": "None", "dp_desc": self.bridge.name}
        elif kind == MP_PORT_DESC:
            want = msg.body.get("port_no", OFPP13_ANY) if isinstance(msg.body, dict) else OFPP13_ANY
            body = [p for p in self._ports(v) if want == OFPP13_ANY or p["port_no"] == want]
        elif kind == MP_PORT_STATS:
            want = msg.body.get("port_no", OFPP13_ANY)
            body = [self._port_stats(v, bp) for bp in self._sorted_ports()
                    if want in (OFPP13_ANY, OFPP10_NONE) or self._ofport(v, bp) == want]
        elif kind == MP_TABLE:
            body = self._table_stats(v)
        elif kind == MP_QUEUE:
            body = self._queue_stats(v, msg.body)
        elif kind == MP_METER_FEATURES and v >= OFP13:
            body = groupmeter.meter_features()
        elif kind in groupmeter.MP_KINDS and v >= OFP13:
            body = groupmeter.multipart(self, v, kind, msg.body)
        elif kind == MP_TABLE_FEATURES and v >= OFP13:
            # unnamed tables, as OVS's (ovs-ofctl prints no name); metadata fully matchable and writable; the 8
            # required property headers, empty (OVS lists its instructions, actions and fields there)
            props = b"".join(struct.pack("!HH4x", t, 4) for t in range(0, 16, 2))
            every = (1 << 64) - 1
            body = [{"table_id": t, "name": "", "metadata_match": every, "metadata_write": every, "config": 0,
                     "max_entries": 1_000_000, "properties": props} for t in range(N_TABLES)]
        elif kind == MP_EXPERIMENTER:
            self._nicira_stats(conn, msg)   # type: ignore[attr-defined]
            return
        elif kind in (MP_FLOW, MP_AGGREGATE):
            flows = self.flows.flow_stats(v, msg.body)
            if kind == MP_FLOW:
                body = flows
            else:
                body = {"packet_count": sum(f["packet_count"] for f in flows),
                        "byte_count": sum(f["byte_count"] for f in flows), "flow_count": len(flows)}
                if v >= OFP15:
                    body = {"stats": body}
        else:
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_MULTIPART, f"multipart type {kind}")
        for part, more in _parts(v, reply, kind, body):
            conn.send(Msg(v, reply, msg.xid, {"mp_type": kind, "flags": OFPMPF_REPLY_MORE if more else 0,
                                             "body": part}))

    # ------------------------------------------------------------ bridge views
    def _sorted_ports(self) -> list[Any]:
        return sorted(list(self.bridge.ports.values()), key=lambda bp: bp.ofport)

    @staticmethod
    def _ofport(version: int, bp: Any) -> int:
        if bp.ofport == 65534:
            return OFPP10_LOCAL if version == OFP10 else OFPP13_LOCAL
        return bp.ofport

    def _port_by_ofport(self, version: int, no: int) -> Any:
        for bp in self.bridge.ports.values():
            if self._ofport(version, bp) == no:
                return bp
        return None

    def _ports(self, version: int) -> list[dict[str, Any]]:
        out = []
        for bp in self._sorted_ports():
            mac = bp.port.mac
            up = bp.port.link_up
            port = {"port_no": self._ofport(version, bp), "hw_addr": int(mac.replace(":", ""), 16) if mac else 0,
                    "name": bp.name, "config": 0 if bp.admin_up else OFPPC_PORT_DOWN,
                    "state": (0 if up else OFPPS_LINK_DOWN) | (OFPPS13_LIVE if up and version >= OFP13 else 0),
                    "curr": OFPPF_10GB_FD | (OFPPF10_COPPER if version == OFP10 else OFPPF_COPPER),
                    "advertised": 0, "supported": 0, "peer": 0}
            if version >= OFP13:   # 1.4+: the same numbers in the port's Ethernet property
                port.update(curr_speed=10_000_000, max_speed=0, eth_prop_type=0, eth_prop_len=32)
            out.append(port)
        return out

    def _port_stats(self, version: int, bp: Any) -> dict[str, Any]:
        s = self.bridge.port_stats(bp.name)
        out = {"port_no": self._ofport(version, bp), "rx_frame_err": 0, "rx_over_err": 0, "rx_crc_err": 0,
               "collisions": 0}
        for k in ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped", "tx_dropped", "rx_errors",
                  "tx_errors"):
            out[k] = s.get(k, 0)
        if version >= OFP13:   # 1.4+: the error counters go in the Ethernet property
            age = time.monotonic() - self._started
            out.update(duration_sec=int(age), duration_nsec=int(age % 1 * 1e9), eth_prop_type=0, eth_prop_len=40)
        return out

    def _table_stats(self, version: int) -> list[dict[str, Any]]:
        stats = self.flows.table_stats()
        if version >= OFP13:
            return [{"table_id": t, "active_count": n, "lookup_count": lookups, "matched_count": matched}
                    for t, n, lookups, matched in stats]
        # 1.0: no name, as OVS sends its tables that have none (ovs-ofctl prints none)
        return [{"table_id": t, "name": "", "wildcards": 0x3FFFFF, "max_entries": 1_000_000,
                 "active_count": n, "lookup_count": lookups, "matched_count": matched}
                for t, n, lookups, matched in stats]

    def _queue_stats(self, version: int, want: dict[str, Any]) -> list[dict[str, Any]]:
        """No port has queues: every port (or one that exists) has none; a port that does not exist, or a
        queue named, is OVS's OFPQOFC_BAD_PORT / OFPQOFC_BAD_QUEUE."""
        err = OFPET13_QUEUE_OP_FAILED     # 1.3's number; the channel gives 1.0 its own (5)
        port = want.get("port_no", OFPQ_ALL)
        every = port in (OFPP10_ALL, OFPP10_NONE, OFPP13_ALL, OFPP13_ANY)
        if not every and self._port_by_ofport(version, port) is None:
            raise OfpError(err, OFPQOFC_BAD_PORT, f"no port {port}")
        if want.get("queue_id", OFPQ_ALL) != OFPQ_ALL:
            raise OfpError(err, OFPQOFC_BAD_QUEUE, f"no queue {want['queue_id']}")
        return []


def _version() -> str:
    try:
        from importlib.metadata import version

        return f"pyvswitch {version('pyvswitch')}"
    except Exception:  # noqa: BLE001
        return "pyvswitch"


OFPMPF_REPLY_MORE = 1
MAX_MSG = 0xFFFF


def _parts(version: int, reply: str, kind: int, body: Any) -> list[tuple[Any, bool]]:
    """A multipart reply's body in pieces whose messages fit OpenFlow's 64 KiB (a list body is split, as OVS
    splits a long flow dump, each piece but the last flagged REPLY_MORE)."""
    if not isinstance(body, list) or len(body) < 2:
        return [(body, False)]
    try:
        if len(encode(Msg(version, reply, 0, {"mp_type": kind, "flags": 0, "body": body}))) <= MAX_MSG:
            return [(body, False)]
    except struct.error:   # the length does not fit the header
        pass
    half = len(body) // 2
    first, second = _parts(version, reply, kind, body[:half]), _parts(version, reply, kind, body[half:])
    return [(p, True) for p, _ in first] + second
