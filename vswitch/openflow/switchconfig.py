"""The switch's configuration as each connection sees and sets it: features, get / set config, role (1.4+: role
status to the master it replaces), SET_ASYNC / GET_ASYNC (1.3 fields, 1.4+ properties) and port-mod.

A mixin of ``OfAgent`` (which gives it ``bridge``, ``conns``, ``dpid`` and the port views of ``SwitchViews``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ofproto.rules import N_TABLES
from vswitch.openflow.channel import ASYNC_KINDS, ROLE_SLAVE, Controller, OfConnection
from vswitch.openflow.codec import OFP10, OFP14, Msg, OfpError
from vswitch.openflow.views import OFPPC_PORT_DOWN

OFPC_FLOW_STATS, OFPC_TABLE_STATS, OFPC_PORT_STATS, OFPC_GROUP_STATS, OFPC_QUEUE_STATS = 1, 2, 4, 8, 64
OFPC10_ARP_MATCH_IP = 128      # 1.0's bit 7 (1.3+: port blocked is bit 8, bit 7 unused)
OFPC14_BUNDLES = 1 << 9
OFPC_FRAG_MASK = 3             # get/set config: the fragment handling (normal, drop, reassemble)
OFPET_PORT_MOD_FAILED = 7
ROLE_MASTER = 2
OFPCRR_MASTER_REQUEST = 0
OFPET_ASYNC_CONFIG_FAILED, OFPACFC_UNSUPPORTED = 15, 1


class SwitchConfig:
    """Per-connection switch configuration handlers for ``OfAgent``."""

    bridge: Any
    conns: dict[int, OfConnection]
    controllers: dict[str, Controller]
    dpid: int
    datapath_id: Callable[[], int]
    changed: Callable[[], None]
    _ports: Callable[..., list[dict[str, Any]]]
    _port_by_ofport: Callable[..., Any]
    _port_status: Callable[[], None]
    frag_flags: int = 0    # the switch's fragment handling (set_config)

    def _on_features_request(self, conn: OfConnection, msg: Msg) -> None:
        # as OVS: queue statistics, and ARP_MATCH_IP (1.0) / GROUP_STATS (1.3+) at bit 7 / 3; BUNDLES from 1.4
        caps = OFPC_FLOW_STATS | OFPC_TABLE_STATS | OFPC_PORT_STATS | OFPC_QUEUE_STATS
        caps |= OFPC10_ARP_MATCH_IP if conn.version == OFP10 else OFPC_GROUP_STATS
        if conn.version >= OFP14:
            caps |= OFPC14_BUNDLES
        fields: dict[str, Any] = {"datapath_id": self.dpid or self.datapath_id(), "n_buffers": 0, "n_tables": N_TABLES,
                                  "capabilities": caps}
        if conn.version == OFP10:
            fields["actions"] = 0xFFF
            fields["ports"] = self._ports(OFP10)
        conn.send(Msg(conn.version, "features_reply", msg.xid, fields))

    def _on_get_config_request(self, conn: OfConnection, msg: Msg) -> None:
        conn.send(Msg(conn.version, "get_config_reply", msg.xid,
                      {"flags": self.frag_flags, "miss_send_len": conn.miss_send_len}))

    def _on_set_config(self, conn: OfConnection, msg: Msg) -> None:
        self.frag_flags = msg.flags & OFPC_FRAG_MASK   # the switch's, as OVS keeps it (not the connection's)
        conn.config_flags = msg.flags
        conn.miss_send_len = msg.miss_send_len

    def controller_status(self) -> dict[str, dict[str, Any]]:
        """Per controller target: ``is_connected``, ``role``, ``status`` (for the ``Controller`` table)."""
        roles = {0: "other", 1: "other", 2: "master", 3: "slave"}
        return {t: {"is_connected": c.conn is not None and bool(c.conn.version),
                    "role": roles.get(c.conn.role if c.conn else 0, "other"), "status": c.status()}
                for t, c in list(self.controllers.items())}

    def _on_role_request(self, conn: OfConnection, msg: Msg) -> None:
        if msg.role != 0:   # 0 = NOCHANGE
            conn.role = msg.role
            if msg.role == ROLE_MASTER:   # the other master becomes a slave; 1.4+ tells it with a role status
                for other in list(self.conns.values()):
                    if other is not conn and other.role == ROLE_MASTER:
                        other.role = ROLE_SLAVE
                        if other.version >= OFP14 and other.role_status_mask[1] & 1 << OFPCRR_MASTER_REQUEST:
                            other.send(Msg(other.version, "role_status", 0, {
                                "role": ROLE_SLAVE, "reason": OFPCRR_MASTER_REQUEST,
                                "generation_id": msg.generation_id}))
        conn.send(Msg(conn.version, "role_reply", msg.xid, {"role": conn.role or 1, "generation_id":
                                                            msg.generation_id}))

    def _on_set_async(self, conn: OfConnection, msg: Msg) -> None:
        if conn.version < OFP14:
            conn.async_masks = [(msg.get(f"{kind}_master"), msg.get(f"{kind}_slave")) for kind in ASYNC_KINDS]
            return
        # 1.4+: properties, each one (type 2k: slave, 2k + 1: master) of kind k; those absent stay as they are
        masks = [list(m) for m in [*conn.async_masks, conn.role_status_mask]]
        for prop in msg.properties:
            kind, master = divmod(prop["prop_type"], 2)
            if kind >= len(masks):
                if prop["prop_type"] in (0xFFFE, 0xFFFF):
                    raise OfpError(OFPET_ASYNC_CONFIG_FAILED, OFPACFC_UNSUPPORTED, "experimenter property")
                continue   # table status and request-forward: pyvswitch sends neither
            masks[kind][0 if master else 1] = prop["mask"]
        conn.async_masks = [(m[0], m[1]) for m in masks[:3]]
        conn.role_status_mask = (masks[3][0], masks[3][1])

    def _on_get_async_request(self, conn: OfConnection, msg: Msg) -> None:
        if conn.version >= OFP14:
            props = [{"prop_type": 2 * kind + master, "mask": m[0 if master else 1]}
                     for kind, m in enumerate([*conn.async_masks, conn.role_status_mask]) for master in (0, 1)]
            conn.send(Msg(conn.version, "get_async_reply", msg.xid, {"properties": props}))
            return
        fields = {}
        for kind, (master, slave) in zip(ASYNC_KINDS, conn.async_masks, strict=True):
            fields[f"{kind}_master"], fields[f"{kind}_slave"] = master, slave
        conn.send(Msg(conn.version, "get_async_reply", msg.xid, fields))

    def _on_port_mod(self, conn: OfConnection, msg: Msg) -> None:
        self.check_port_mod(conn, msg)
        bp = self._port_by_ofport(conn.version, msg.port_no)
        if msg.mask & OFPPC_PORT_DOWN:
            self.bridge.set_admin_state(bp.name, not msg.config & OFPPC_PORT_DOWN)
            self._port_status()
            self.changed()

    def check_port_mod(self, conn: OfConnection, msg: Msg) -> None:
        """A port-mod names a port (else OFPET_PORT_MOD_FAILED / OFPPMFC_BAD_PORT)."""
        if self._port_by_ofport(conn.version, msg.port_no) is None:
            raise OfpError(OFPET_PORT_MOD_FAILED, 0, f"port_mod: no port {msg.port_no}")
