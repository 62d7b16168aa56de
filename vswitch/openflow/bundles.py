"""OpenFlow bundles (``OFPT_BUNDLE_CONTROL`` / ``OFPT_BUNDLE_ADD_MESSAGE``, OpenFlow 1.4+), as OVS 3.1 has them.

A connection opens a bundle (or its first BUNDLE_ADD does), adds messages, may close it, then commits or discards
it. Each added message is decoded and checked when it is added, as OVS does: a bad one gets its error at once
(answering the BUNDLE_ADD, whose xid is the embedded message's) and is not added. A commit applies the flow-mods in
order and atomically: the flow tables are snapshotted first, and when one flow-mod fails they are put back, the
failing message gets its error (the BUNDLE_ADD that carried it, as data) and the commit gets
``OFPBFC_MSG_FAILED``; nothing of the bundle applies. Packet-outs and port-mods in a committed bundle run after
its flow-mods, in order. A bundle ends with its commit or discard (successful or not) or with its connection.

Errors (type ``OFPET_BUNDLE_FAILED``, codes as OVS sends them): an unknown bundle id ``OFPBFC_BAD_ID``; opening
an id that is open ``OFPBFC_BAD_ID`` (and the old bundle goes, as in OVS); adding to or closing a closed bundle
``OFPBFC_BUNDLE_CLOSED``; flags other than the bundle's ``OFPBFC_BAD_FLAGS``; a reply type as request
``OFPBFC_BAD_TYPE``; an embedded message longer than its carrier ``OFPBFC_MSG_BAD_LEN``, of another xid
``OFPBFC_MSG_BAD_XID``, of another type than flow-mod, port-mod or packet-out ``OFPBFC_MSG_UNSUP`` (also one that is
shorter than its fixed part or of an unknown type), of another version Nicira's ``OFPBFC_BAD_VERSION`` (an
experimenter error; in 1.3 ``NXBRC_UNENCODABLE_ERROR``). A slave controller gets ``OFPBRC_IS_SLAVE``.

OpenFlow 1.3 has bundles through the ONF extension (``ovs-ofctl --bundle -O OpenFlow13`` uses it): the same
bodies in experimenter messages 2300 (control) and 2301 (add), the errors as ONF experimenter errors
(code 2300 + the OFPBFC code).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vswitch.openflow import groupmeter
from vswitch.openflow.channel import OFPBRC_IS_SLAVE, OFPET_EXPERIMENTER, ROLE_SLAVE, OfConnection
from vswitch.openflow.codec import (
    HEADER,
    NXBFC_BAD_VERSION,
    OFP13,
    OFPBFC_BAD_FLAGS,
    OFPBFC_BAD_ID,
    OFPBFC_BAD_TYPE,
    OFPBFC_BUNDLE_CLOSED,
    OFPBFC_MSG_BAD_LEN,
    OFPBFC_MSG_BAD_XID,
    OFPBFC_MSG_FAILED,
    OFPBFC_MSG_UNSUP,
    OFPBRC_BAD_LEN,
    OFPET_BAD_REQUEST,
    OFPET_BUNDLE_FAILED,
    ONF_BUNDLE_ERROR_BASE,
    ONF_ET_BUNDLE_CONTROL,
    TYPE_NAMES,
    Msg,
    OfpError,
    decode,
    decode_body,
)

if TYPE_CHECKING:
    from ofproto.tables import FlowTables
    from vswitch.openflow.agent import OfAgent

#: OFPBCT_* control types: requests, and the reply each gets
OPEN_REQUEST, OPEN_REPLY, CLOSE_REQUEST, CLOSE_REPLY, COMMIT_REQUEST, COMMIT_REPLY, DISCARD_REQUEST, \
    DISCARD_REPLY = range(8)
REPLY_OF = {OPEN_REQUEST: OPEN_REPLY, CLOSE_REQUEST: CLOSE_REPLY, COMMIT_REQUEST: COMMIT_REPLY,
            DISCARD_REQUEST: DISCARD_REPLY}
OFPBF_ATOMIC, OFPBF_ORDERED = 1, 2
#: what a bundle may carry (as OVS; group-mods apply in order with the flow-mods, atomically)
BUNDLED_TYPES = ("flow_mod", "port_mod", "packet_out", "group_mod")


def bundle_error(code: int, why: str) -> OfpError:
    """An ``OFPET_BUNDLE_FAILED`` error."""
    return OfpError(OFPET_BUNDLE_FAILED, code, why)


@dataclass
class Bundle:
    """One bundle of one connection: its id, flags, whether it is closed, and what was added (each entry: the
    BUNDLE_ADD message's bytes, which errors quote, and the embedded message decoded)."""

    bundle_id: int
    flags: int
    closed: bool = False
    entries: list[tuple[bytes, Msg]] = field(default_factory=list)


def _snapshot(tables: FlowTables) -> tuple[Any, ...]:
    """What a commit may change in the flow tables: each table's flows, the timed flows, and each flow's
    instructions and counter bases (a modify changes those in place)."""
    tabs = [dict(t) for t in tables._tables]
    attrs = {id(f): (f, f.instructions, f.packet_base, f.byte_base) for t in tabs for f in t.values()}
    return tabs, dict(tables._timed), attrs


def _restore(tables: FlowTables, snap: tuple[Any, ...]) -> None:
    """Put the flow tables back as ``_snapshot`` found them; every table is recompiled."""
    tabs, timed, attrs = snap
    for f, instructions, packet_base, byte_base in attrs.values():
        f.instructions, f.packet_base, f.byte_base = instructions, packet_base, byte_base
    tables._tables = tabs
    tables._timed = timed
    tables._dirty.update(range(tables.n_tables))


#: Nicira's error for one that the connection's OpenFlow version cannot express
NXBRC_UNENCODABLE_ERROR = 10


class BundleHandler:
    """Serves one agent's bundle messages (the agent's ``_on_bundle_control`` / ``_on_bundle_add_message``)."""

    def __init__(self, agent: OfAgent) -> None:
        self.agent = agent

    def experimenter(self, conn: OfConnection, msg: Msg, raw: bytes) -> None:
        """An OpenFlow 1.3 ONF bundle message (experimenter 2300 / 2301): served as its 1.4 twin, errors in the
        ONF numbering."""
        name = "bundle_control" if msg.exp_type == ONF_ET_BUNDLE_CONTROL else "bundle_add_message"
        inner = Msg(OFP13, name, msg.xid, decode_body(OFP13, name, msg.data))
        try:
            if name == "bundle_control":
                self.control(conn, inner)
            else:
                self.add(conn, inner, raw)
        except OfpError as e:
            if e.err_type != OFPET_BUNDLE_FAILED:
                raise
            raise OfpError(OFPET_EXPERIMENTER, ONF_BUNDLE_ERROR_BASE + e.code, str(e)) from None

    def control(self, conn: OfConnection, msg: Msg) -> None:
        """OPEN, CLOSE, COMMIT or DISCARD; a reply of the same id and type + 1, or an error."""
        if conn.role == ROLE_SLAVE:
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_IS_SLAVE, "a slave controller cannot use bundles")
        bid, kind, flags = msg.bundle_id, msg.ctrl_type, msg.flags
        bundle = conn.bundles.get(bid)
        if kind == OPEN_REQUEST:
            if bundle is not None:
                del conn.bundles[bid]
                raise bundle_error(OFPBFC_BAD_ID, f"bundle {bid:#x} already exists")
            if flags & ~(OFPBF_ATOMIC | OFPBF_ORDERED):
                raise bundle_error(OFPBFC_BAD_FLAGS, f"bundle flags {flags:#x}")
            conn.bundles[bid] = Bundle(bid, flags)
        elif kind in (CLOSE_REQUEST, COMMIT_REQUEST, DISCARD_REQUEST):
            if bundle is None:
                raise bundle_error(OFPBFC_BAD_ID, f"no bundle {bid:#x}")
            if kind == DISCARD_REQUEST:
                del conn.bundles[bid]
            elif kind == CLOSE_REQUEST:
                if bundle.closed or bundle.flags != flags:
                    del conn.bundles[bid]
                    raise bundle_error(OFPBFC_BUNDLE_CLOSED if bundle.closed else OFPBFC_BAD_FLAGS,
                                       f"bundle {bid:#x} is closed" if bundle.closed else "flags differ")
                bundle.closed = True
            else:
                del conn.bundles[bid]
                if bundle.flags != flags:
                    raise bundle_error(OFPBFC_BAD_FLAGS, f"bundle {bid:#x}: commit flags differ from open's")
                self.commit(conn, bundle)
        else:
            raise bundle_error(OFPBFC_BAD_TYPE, f"bundle control type {kind}")
        conn.reply("bundle_control", msg.xid, {"bundle_id": bid, "ctrl_type": REPLY_OF[kind], "flags": 0})

    def add(self, conn: OfConnection, msg: Msg, raw: bytes) -> None:
        """BUNDLE_ADD_MESSAGE: check the embedded message and add it (no reply; an error when it is refused)."""
        if conn.role == ROLE_SLAVE:
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_IS_SLAVE, "a slave controller cannot use bundles")
        inner = msg.message
        if len(inner) < HEADER.size:
            raise bundle_error(OFPBFC_MSG_BAD_LEN, "embedded message shorter than a header")
        version, mtype, length, xid = HEADER.unpack_from(inner)   # checked in OVS's order
        if version != msg.version:   # Nicira's error in 1.4+; 1.3 cannot say it: NXBRC_UNENCODABLE_ERROR
            raise OfpError(OFPET_EXPERIMENTER, NXBFC_BAD_VERSION if msg.version > OFP13 else NXBRC_UNENCODABLE_ERROR,
                           f"embedded version 0x{version:02x} in a 0x{msg.version:02x} bundle")
        if length < HEADER.size or length > len(inner):
            raise bundle_error(OFPBFC_MSG_BAD_LEN, f"embedded message says {length} bytes, has {len(inner)}")
        if xid != msg.xid:
            raise bundle_error(OFPBFC_MSG_BAD_XID, f"embedded xid {xid:#x}, bundle add xid {msg.xid:#x}")
        name = TYPE_NAMES[version].get(mtype)
        if name not in BUNDLED_TYPES:
            raise bundle_error(OFPBFC_MSG_UNSUP, f"{name or f'message type {mtype}'} in a bundle")
        try:
            embedded = decode(inner[:length])   # a bad match, action, instruction: that error
        except OfpError as e:
            if (e.err_type, e.code) == (OFPET_BAD_REQUEST, OFPBRC_BAD_LEN):   # shorter than its fixed part
                raise bundle_error(OFPBFC_MSG_UNSUP, f"embedded {name}: {e}") from None
            raise
        self.check(conn, embedded)
        bundle = conn.bundles.get(msg.bundle_id)
        if bundle is None:
            bundle = conn.bundles[msg.bundle_id] = Bundle(msg.bundle_id, msg.flags)
        elif bundle.closed or bundle.flags != msg.flags:
            del conn.bundles[msg.bundle_id]
            raise bundle_error(OFPBFC_BUNDLE_CLOSED if bundle.closed else OFPBFC_BAD_FLAGS,
                               f"bundle {msg.bundle_id:#x} is closed" if bundle.closed else "flags differ")
        bundle.entries.append((raw, embedded))

    def check(self, conn: OfConnection, embedded: Msg) -> None:
        """What OVS checks when a message is added: a flow-mod's match, instructions and table translate; a
        port-mod names a port; a packet-out's in_port is a port."""
        agent = self.agent
        if embedded.type == "flow_mod":
            agent.flows.check_flow_mod(conn.version, embedded)
        elif embedded.type == "group_mod":
            groupmeter.check_group_mod(conn.version, embedded)
        elif embedded.type == "port_mod":
            agent.check_port_mod(conn, embedded)
        else:
            agent.flows.check_packet_out(conn.version, agent.packet_out_fields(conn, embedded))

    def commit(self, conn: OfConnection, bundle: Bundle) -> None:
        """Apply every flow-mod in order, all or none; then the packet-outs and port-mods. On a failure the
        failing message's error goes out and ``OFPBFC_MSG_FAILED`` is raised (for the commit)."""
        agent = self.agent
        flows = agent.flows
        snap = _snapshot(flows.tables)
        groups = groupmeter.snapshot(agent)
        removed: list[Any] = []
        for raw, embedded in bundle.entries:
            if embedded.type not in ("flow_mod", "group_mod"):
                continue
            try:
                if embedded.type == "group_mod":
                    groupmeter.group_mod(agent, conn, embedded)
                    continue
                agent.check_flow_refs(conn.version, embedded)   # groups and meters: checked at commit, as OVS
                removed += flows.flow_mod(conn.version, embedded)
            except Exception as e:   # a bug too: nothing of the bundle may stay applied
                _restore(flows.tables, snap)
                groupmeter.restore(agent, groups)
                flows.changed()
                if not isinstance(e, OfpError):
                    raise
                conn.error(conn.version, struct.unpack_from("!I", raw, 4)[0], e.err_type, e.code, raw)
                raise bundle_error(OFPBFC_MSG_FAILED, f"bundle {bundle.bundle_id:#x}: {e}") from None
        if bundle.entries:
            flows.changed()
        for stats in removed:
            agent.flow_removed_deleted(stats)
        for _raw, embedded in bundle.entries:
            if embedded.type == "port_mod":
                agent._on_port_mod(conn, embedded)
            elif embedded.type == "packet_out":
                agent._on_packet_out(conn, embedded)

