"""Flow monitors, as OVS has them: a connection asks to be told about flows as they are added, modified and
deleted (``ovs-ofctl monitor br0 watch:...``), with the flows present now as a first snapshot.

```
 OpenFlow 1.0   NXST_FLOW_MONITOR request (stats, vendor 0x2320) ──► monitors of the connection ──► NXST_FLOW_MONITOR
                NXT_FLOW_MONITOR_CANCEL (vendor message)                replies: the snapshot (request's xid),
 OpenFlow 1.3   ONFST_FLOW_MONITOR (ONF experimenter multipart 1870: Nicira's layout with an ofp_match and
                instructions), ONFT_FLOW_MONITOR_CANCEL
 OpenFlow 1.4+  OFPMP_FLOW_MONITOR request: command add / modify /      then one reply (xid 0) per change: ADDED,
                delete (the cancel)                                     MODIFIED, DELETED (+ reason), ABBREV
 FlowTables (WatchedTables) ── add / modify / delete / expire ──► events ──► flush after each message and turn
```

A monitor selects flows by table (``table=``), by an output port its actions name before or after a change
(``out_port=``), and by a match (OVS's loose match: the flow is at least as specific); its flags choose the
snapshot (``!initial``), the events (``!add``, ``!delete``, ``!modify``), whether actions are sent (``!actions``) and
how changes made by the monitoring connection itself are told (``!own``: one ABBREV carrying the flow-mod's xid in
place of the updates). Every flow-mod's changes go out together, in one reply per connection.

Flow control as OVS has it: a monitoring connection with more than ``PAUSE_BYTES`` of output waiting is told
PAUSED (1.0: NXT_FLOW_MONITOR_PAUSED; 1.4+: an update of event PAUSED) and from then on only the deletions of flows
that were there before; once it has taken all its output, the flows changed meanwhile that are still there
(ADDED, or MODIFIED for a monitor without ADD) and then RESUMED. A client that reads nothing at all is still
disconnected at the connection's output bound (``channel.TX_LIMIT``), as any client is.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ofproto.rules import (
    DROP,
    OFPP_ANY,
    OFPRR_DELETE,
    OFPTT_ALL,
    Flow,
    FlowStats,
    Instructions,
    Match,
)
from ofproto.tables import FlowTables
from vswitch.openflow import nxt
from vswitch.openflow.actionwire import actions10_of, instructions_to_wire, port13
from vswitch.openflow.channel import NXET_VENDOR, OfConnection
from vswitch.openflow.codec import (
    MP_EXPERIMENTER,
    NX_VENDOR_ID,
    OFP10,
    OFP13,
    OFPBRC_BAD_LEN,
    OFPET_BAD_REQUEST,
    ONF_VENDOR_ID,
    Msg,
    OfpError,
    actions_encode,
    instructions_encode,
    match13_decode,
    match13_encode,
)
from vswitch.openflow.flows import match_from_wire, match_to_wire
from vswitch.openflow.translate import actions_to10

NXST_FLOW_MONITOR = 2
NXT_FLOW_MONITOR_CANCEL, NXT_FLOW_MONITOR_PAUSED, NXT_FLOW_MONITOR_RESUMED = 21, 22, 23
MP_FLOW_MONITOR = 16   # OpenFlow 1.4+
#: Nicira's monitor flags (the model's): snapshot, the three events, actions, own changes in full
NXFMF_INITIAL, NXFMF_ADD, NXFMF_DELETE, NXFMF_MODIFY, NXFMF_ACTIONS, NXFMF_OWN = 1, 2, 4, 8, 16, 32
NXFMF_ALL = 0x3F
NXFMF_EVENTS = NXFMF_INITIAL | NXFMF_ADD | NXFMF_DELETE | NXFMF_MODIFY
#: OpenFlow 1.4's: the same first five bits, then NO_ABBREV (own changes in full) and ONLY_OWN
OFPFMF_NO_ABBREV, OFPFMF_ONLY_OWN = 32, 64
OFPFMC_ADD, OFPFMC_MODIFY, OFPFMC_DELETE = 0, 1, 2
#: events: the model's (Nicira's numbers) and OpenFlow 1.4's
ADDED, DELETED, MODIFIED, ABBREV = 0, 1, 2, 3
_EVENT14 = {ADDED: 1, DELETED: 2, MODIFIED: 3, ABBREV: 4}
OFPFME_INITIAL = 0
#: errors: OpenFlow 1.4's OFPET_FLOW_MONITOR_FAILED codes; OVS's Nicira numbers of them in 1.0 (BAD_REQUEST 517..519)
OFPET_FLOW_MONITOR_FAILED = 16
OFPET_EXPERIMENTER = 0xFFFF
OFPMOFC_MONITOR_EXISTS, OFPMOFC_UNKNOWN_MONITOR, OFPMOFC_BAD_COMMAND, OFPMOFC_BAD_FLAGS = 1, 3, 4, 5
OFPMOFC_BAD_TABLE_ID = 6
_NX_ERRORS = {OFPMOFC_MONITOR_EXISTS: 517, OFPMOFC_BAD_FLAGS: 518, OFPMOFC_UNKNOWN_MONITOR: 519}
OFPBRC_BAD_TABLE_ID = 9
OFPMPF_REPLY_MORE = 1
MAX_MSG = 0xFFFF
_NX_REQUEST = struct.Struct("!IHHHB5x")      # id, flags, out_port, match_len, table_id
_ONF_REQUEST = struct.Struct("!IHHIB3x")     # id, flags, match_len, out_port, table_id
_OF14_REQUEST = struct.Struct("!IIIHBB")     # id, out_port, out_group, flags, table_id, command
_NX_FULL = struct.Struct("!HHHHHHHBxQ")      # length, event, reason, priority, idle, hard, match_len, table, cookie
_OF14_FULL = struct.Struct("!HHBBHHH4xQ")    # length, event, table, reason, idle, hard, priority, cookie
_ABBREV = struct.Struct("!HHI")              # length 8, event, xid
_NX_STATS_HEAD = struct.Struct("!II4x")      # vendor, subtype
#: how a NXST_FLOW_MONITOR request's statistics body starts (Nicira's vendor id, the subtype)
NXST_FLOW_MONITOR_HEAD = struct.pack("!II", NX_VENDOR_ID, NXST_FLOW_MONITOR)
#: OpenFlow 1.3's ONF extension: Nicira's bodies in an ONF experimenter multipart (1870) and messages (cancel 1870,
#: paused 1871, resumed 1872)
ONFMP_FLOW_MONITOR = ONFT_FLOW_MONITOR_CANCEL = 1870
ONFT_FLOW_MONITOR_PAUSED, ONFT_FLOW_MONITOR_RESUMED = 1871, 1872
ONF_FLOW_MONITOR_HEAD = struct.pack("!II", ONF_VENDOR_ID, ONFMP_FLOW_MONITOR)
_NX_ERRORS13 = {OFPMOFC_MONITOR_EXISTS: 6, OFPMOFC_BAD_FLAGS: 7, OFPMOFC_UNKNOWN_MONITOR: 8}
PAUSE_BYTES = 128 << 10   # output waiting for a monitoring connection that pauses its monitors (as OVS)
OFPFME_PAUSED, OFPFME_RESUMED = 5, 6


def _pad8(n: int) -> int:
    return (n + 7) // 8 * 8


def _error(version: int, code: int, why: str) -> OfpError:
    """A flow-monitor error as ``version`` numbers it (1.0: OVS's Nicira vendor error, BAD_REQUEST 517..519;
    1.4+: OFPET_FLOW_MONITOR_FAILED)."""
    if version == OFP10:   # Nicira's vendor error: type and code after the vendor id
        return OfpError(NXET_VENDOR, OFPET_BAD_REQUEST << 16 | _NX_ERRORS.get(code, 0), why)
    if version == OFP13:   # Nicira's experimenter error
        return OfpError(OFPET_EXPERIMENTER, _NX_ERRORS13.get(code, 0), why)
    return OfpError(OFPET_FLOW_MONITOR_FAILED, code, why)


@dataclass
class Monitor:
    """One flow monitor of one connection (flags in Nicira's numbering)."""

    id: int
    flags: int
    table_id: int           # OFPTT_ALL: every table
    out_port: int           # OpenFlow 1.3 numbering; OFPP_ANY: no filter
    match: Match

    def selects(self, flow: Flow, event: int, ins: Instructions, old: Instructions | None) -> bool:
        """Whether a change ``event`` of ``flow`` (its instructions ``ins`` then, ``old`` before a modify) is for
        this monitor."""
        want = {ADDED: NXFMF_ADD, DELETED: NXFMF_DELETE, MODIFIED: NXFMF_MODIFY}[event]
        if not self.flags & want or self.table_id not in (OFPTT_ALL, flow.table_id):
            return False
        if self.out_port != OFPP_ANY and self.out_port not in ins.output_ports() and (
                old is None or self.out_port not in old.output_ports()):
            return False
        return self.match.covers(flow.match)


@dataclass
class Change:
    """One change of a flow, as it was when it happened."""

    event: int
    flow: Flow
    ins: Instructions
    reason: int = 0
    old: Instructions | None = None   # a modify's instructions before it


@dataclass
class Paused:
    """A paused connection's monitors: the flows there when it paused, the changes it was not told since."""

    serial: int   # the flows present at the pause have serials up to this one (an add gives a new, higher one)
    missed: dict[tuple[int, int, Match], None] = field(default_factory=dict)   # (table, priority, match), in order


class WatchedTables(FlowTables):
    """``FlowTables`` that note every flow added, modified or removed while some monitor watches."""

    def __init__(self, n_tables: int) -> None:
        super().__init__(n_tables)
        self.watched = False
        self.changes: list[Change] = []
        self.reason = OFPRR_DELETE   # why flows removed by a delete go (a group or meter delete says its own)

    def add(self, flow: Flow, now: int = 0) -> Flow:
        if not self.watched:
            return super().add(flow, now)
        replaced = self._tables[flow.table_id].get((flow.priority, flow.match)) \
            if 0 <= flow.table_id < self.n_tables else None
        new = super().add(flow, now)
        # a flow that replaces one is ADDED, as OVS tells it; the old one's actions count for out_port too
        self.changes.append(Change(ADDED, new, new.instructions, 0, replaced.instructions if replaced else None))
        return new

    def modify(self, table_id: int, match: Match, priority: int = 0, strict: bool = False, cookie: int = 0,
               cookie_mask: int = 0, instructions: Instructions = DROP, reset_counts: bool = False) -> list[Flow]:
        if not self.watched:
            return super().modify(table_id, match, priority, strict, cookie, cookie_mask, instructions, reset_counts)
        before = {id(f): f.instructions for f in self._select(table_id, match, priority, strict, OFPP_ANY, cookie,
                                                                cookie_mask)}
        chosen = super().modify(table_id, match, priority, strict, cookie, cookie_mask, instructions, reset_counts)
        self.changes.extend(Change(MODIFIED, f, f.instructions, 0, before.get(id(f))) for f in chosen)
        return chosen

    def delete(self, *args: Any, **kwargs: Any) -> list[FlowStats]:
        gone = super().delete(*args, **kwargs)
        if self.watched:
            self.changes.extend(Change(DELETED, s.flow, s.flow.instructions, self.reason) for s in gone)
        return gone

    def get(self, table_id: int, priority: int, match: Match) -> Flow | None:
        """The flow with exactly this match and priority in that table, if there is one."""
        return self._tables[table_id].get((priority, match))

    def expire(self, now: int) -> list[tuple[FlowStats, int]]:
        gone = super().expire(now)
        if self.watched:
            self.changes.extend(Change(DELETED, s.flow, s.flow.instructions, r) for s, r in gone)
        return gone


class FlowMonitors:
    """The flow monitors of one bridge's connections; ``agent.flows.tables`` becomes a ``WatchedTables``."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        old = agent.flows.tables
        if len(old):
            raise ValueError("flow monitors are set up before any flow is added")
        self.tables = WatchedTables(old.n_tables)
        agent.flows.tables = self.tables
        self.by_conn: dict[OfConnection, dict[int, Monitor]] = {}
        self.paused: dict[OfConnection, Paused] = {}

    # ------------------------------------------------------------ requests
    def nx_request(self, conn: OfConnection, msg: Msg) -> None:
        """NXST_FLOW_MONITOR (1.3: ONFST_FLOW_MONITOR): add the monitors it carries; the reply is their snapshot
        (an empty one without NXFMF_INITIAL)."""
        onf = conn.version == OFP13
        body = bytes(msg.body)[len(ONF_FLOW_MONITOR_HEAD) if onf else _NX_STATS_HEAD.size:]
        new: list[Monitor] = []
        off = 0
        while off < len(body):
            if len(body) - off < _NX_REQUEST.size:
                raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, "truncated flow monitor request")
            if onf:   # 32-bit out_port, an ofp_match (OXM)
                mid, flags, match_len, out_port, table_id = _ONF_REQUEST.unpack_from(body, off)
            else:
                mid, flags, out_port, match_len, table_id = _NX_REQUEST.unpack_from(body, off)
                out_port = port13(OFP10, out_port)
            off += _NX_REQUEST.size
            if off + _pad8(match_len) > len(body):
                raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, f"flow monitor match_len {match_len}")
            wire = match13_decode(body[off:off + _pad8(match_len)])[0] if onf else \
                nxt.match_decode(body[off:off + match_len])
            off += _pad8(match_len)
            new.append(self._monitor(conn, mid, flags, table_id, out_port, wire))
        self._add(conn, new)
        self._reply(conn, msg.xid, self._snapshot(conn, new))

    def nx_cancel(self, conn: OfConnection, body: bytes) -> None:
        """NXT_FLOW_MONITOR_CANCEL: the monitor with that id goes (OFPMOFC_UNKNOWN_MONITOR if there is none)."""
        if len(body) != 4:
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, "flow monitor cancel")
        self._remove(conn, struct.unpack("!I", body)[0])

    def of_request(self, conn: OfConnection, msg: Msg) -> None:
        """OFPMP_FLOW_MONITOR (1.4+): each request adds, replaces (modify) or removes (delete) a monitor; the reply
        is the snapshot of those added or replaced with OFPFMF_INITIAL."""
        body = bytes(msg.body)
        new: list[Monitor] = []
        off = 0
        while off < len(body):
            if len(body) - off < _OF14_REQUEST.size:
                raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, "truncated flow monitor request")
            mid, out_port, _out_group, flags, table_id, command = _OF14_REQUEST.unpack_from(body, off)
            wire, used = match13_decode(body[off + _OF14_REQUEST.size:])
            off += _OF14_REQUEST.size + used
            if command == OFPFMC_DELETE:
                self._remove(conn, mid)
                continue
            if command not in (OFPFMC_ADD, OFPFMC_MODIFY):
                raise _error(conn.version, OFPMOFC_BAD_COMMAND, f"flow monitor command {command}")
            if command == OFPFMC_MODIFY:
                self._remove(conn, mid)
            if flags & ~0x7F:
                raise _error(conn.version, OFPMOFC_BAD_FLAGS, f"flow monitor flags {flags:#x}")
            # OVS reads ONLY_OWN (what ovs-ofctl sends for Nicira's OWN) and NO_ABBREV as "own changes in full"
            nx_flags = (flags & 0x1F) | (NXFMF_OWN if flags & (OFPFMF_NO_ABBREV | OFPFMF_ONLY_OWN) else 0)
            new.append(self._monitor(conn, mid, nx_flags, table_id, out_port, wire))
        self._add(conn, new)
        self._reply(conn, msg.xid, self._snapshot(conn, new))

    def _monitor(self, conn: OfConnection, mid: int, flags: int, table_id: int, out_port: int,
                 wire: dict[str, Any]) -> Monitor:
        if flags & ~NXFMF_ALL or not flags & NXFMF_EVENTS:
            raise _error(conn.version, OFPMOFC_BAD_FLAGS, f"flow monitor flags {flags:#x}")
        if table_id != 0xFF and table_id >= self.tables.n_tables:
            if conn.version == OFP10:
                raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_TABLE_ID, f"flow monitor table {table_id}")
            raise _error(conn.version, OFPMOFC_BAD_TABLE_ID, f"flow monitor table {table_id}")
        if mid in self.by_conn.get(conn, {}):
            raise _error(conn.version, OFPMOFC_MONITOR_EXISTS, f"flow monitor {mid} exists")
        return Monitor(mid, flags, OFPTT_ALL if table_id == 0xFF else table_id, out_port,
                       match_from_wire(OFP13, wire))

    def _add(self, conn: OfConnection, monitors: list[Monitor]) -> None:
        """Add checked monitors (all of a request or, when one is refused, none)."""
        ids = [m.id for m in monitors]
        if len(set(ids)) != len(ids):
            raise _error(conn.version, OFPMOFC_MONITOR_EXISTS, "flow monitor id repeated")
        if monitors:
            self.by_conn.setdefault(conn, {}).update({m.id: m for m in monitors})
            self.tables.watched = True

    def _remove(self, conn: OfConnection, mid: int) -> None:
        if self.by_conn.get(conn, {}).pop(mid, None) is None:
            raise _error(conn.version, OFPMOFC_UNKNOWN_MONITOR, f"no flow monitor {mid}")
        self._forget_empty(conn)

    def _forget_empty(self, conn: OfConnection) -> None:
        if not self.by_conn.get(conn, True):
            del self.by_conn[conn]
        if not self.by_conn:
            self.tables.watched = False
            self.tables.changes.clear()

    def closed(self, conn: OfConnection) -> None:
        """A connection closed: its monitors go."""
        self.paused.pop(conn, None)
        if self.by_conn.pop(conn, None) is not None:
            self._forget_empty(conn)

    @contextlib.contextmanager
    def reason(self, reason: int) -> Iterator[None]:
        """Flows deleted inside the block go for ``reason`` (a group's or a meter's deletion)."""
        old, self.tables.reason = self.tables.reason, reason
        try:
            yield
        finally:
            self.tables.reason = old

    # ------------------------------------------------------------ updates
    def _snapshot(self, conn: OfConnection, monitors: list[Monitor]) -> list[bytes]:
        initial = [m for m in monitors if m.flags & NXFMF_INITIAL]
        if not initial:
            return []
        flows = sorted(self.tables.flows(), key=lambda f: (f.table_id, -f.priority, f.serial))
        out = []
        for f in flows:
            chosen = [m for m in initial if m.table_id in (OFPTT_ALL, f.table_id) and m.match.covers(f.match) and (
                m.out_port == OFPP_ANY or m.out_port in f.instructions.output_ports())]
            if chosen:
                actions = any(m.flags & NXFMF_ACTIONS for m in chosen)
                out.append(self._full(conn.version, Change(ADDED, f, f.instructions), actions, initial=True))
        return out

    def discard(self) -> None:
        """Forget the changes noted since the last flush (what made them was undone)."""
        self.tables.changes.clear()

    def flush(self, origin: OfConnection | None = None, xid: int = 0) -> None:
        """Tell each monitoring connection the changes noted since the last flush (those ``origin`` made with
        message ``xid`` as one ABBREV to it unless its monitors want its own changes in full)."""
        if self.paused:
            self._resume()
        changes = self.tables.changes
        if not changes:
            return
        self.tables.changes = []
        for conn, monitors in list(self.by_conn.items()):
            if conn.dead:
                continue
            updates: list[bytes] = []
            abbreviated = False
            paused = self.paused.get(conn)
            for ch in changes:
                chosen = [m for m in monitors.values() if m.selects(ch.flow, ch.event, ch.ins, ch.old)]
                if not chosen:
                    continue
                flags = 0
                for m in chosen:
                    flags |= m.flags
                if paused is not None and not (ch.event == DELETED and ch.flow.serial <= paused.serial):
                    paused.missed[(ch.flow.table_id, ch.flow.priority, ch.flow.match)] = None
                    continue
                if conn is origin and not flags & NXFMF_OWN:
                    if not abbreviated:
                        updates.append(_ABBREV.pack(_ABBREV.size, ABBREV if conn.version in (OFP10, OFP13)
                                                    else _EVENT14[ABBREV], xid))
                        abbreviated = True
                    continue
                updates.append(self._full(conn.version, ch, bool(flags & NXFMF_ACTIONS)))
            if updates:
                self._reply(conn, 0, updates)
            if paused is None and conn.tx_bytes > PAUSE_BYTES:
                self._pause(conn)

    def _pause(self, conn: OfConnection) -> None:
        self.paused[conn] = Paused(max((f.serial for f in self.tables.flows()), default=0))
        self._flow_control(conn, NXT_FLOW_MONITOR_PAUSED, OFPFME_PAUSED)

    def _resume(self) -> None:
        """Resume each paused connection that has taken all its output: the flows changed meanwhile that are still
        there, then RESUMED."""
        for conn, paused in list(self.paused.items()):
            if conn.tx_bytes or conn.dead:
                continue
            del self.paused[conn]
            monitors = self.by_conn.get(conn, {}).values()
            updates = []
            for table_id, priority, match in paused.missed:
                f = self.tables.get(table_id, priority, match)
                if f is None:
                    continue
                flags = 0
                for m in monitors:
                    if m.table_id in (OFPTT_ALL, f.table_id) and m.match.covers(f.match):
                        flags |= m.flags
                if flags:
                    event = ADDED if flags & NXFMF_ADD else MODIFIED
                    updates.append(self._full(conn.version, Change(event, f, f.instructions),
                                              bool(flags & NXFMF_ACTIONS)))
            if updates:
                self._reply(conn, 0, updates)
            self._flow_control(conn, NXT_FLOW_MONITOR_RESUMED, OFPFME_RESUMED)

    @staticmethod
    def _flow_control(conn: OfConnection, subtype: int, event: int) -> None:
        if conn.version == OFP10:
            kind, fields = nxt.vendor_fields(OFP10, subtype, b"")
            conn.send(Msg(OFP10, kind, 0, fields))
        elif conn.version == OFP13:
            onf = ONFT_FLOW_MONITOR_PAUSED if subtype == NXT_FLOW_MONITOR_PAUSED else ONFT_FLOW_MONITOR_RESUMED
            conn.send(Msg(OFP13, "experimenter", 0, {"experimenter": ONF_VENDOR_ID, "exp_type": onf, "data": b""}))
        else:
            conn.send(Msg(conn.version, "multipart_reply", 0, {"mp_type": MP_FLOW_MONITOR, "flags": 0,
                                                              "body": struct.pack("!HH4x", 8, event)}))

    def _full(self, version: int, ch: Change, actions: bool, initial: bool = False) -> bytes:
        """One full flow update in ``version``'s form."""
        f = ch.flow
        if version == OFP10:   # Nicira's update: an NXM match, 1.0 actions
            m = nxt.match_encode(match_to_wire(OFP13, f.match))
            acts = actions_encode(OFP10, actions_to10(actions10_of(OFP10, ch.ins))) if actions else b""
            tail = m + bytes(_pad8(len(m)) - len(m)) + acts
            return _NX_FULL.pack(_NX_FULL.size + len(tail), ch.event, ch.reason, f.priority, f.idle_timeout,
                                 f.hard_timeout, len(m), f.table_id, f.cookie) + tail
        if version == OFP13:   # ONF's: Nicira's layout with an ofp_match (its length as match_len), instructions
            m = match13_encode(match_to_wire(OFP13, f.match))
            tail = m + (instructions_encode(instructions_to_wire(OFP13, ch.ins), OFP13) if actions else b"")
            return _NX_FULL.pack(_NX_FULL.size + len(tail), ch.event, ch.reason, f.priority, f.idle_timeout,
                                 f.hard_timeout, int.from_bytes(m[2:4], "big"), f.table_id, f.cookie) + tail
        tail = match13_encode(match_to_wire(version, f.match))
        if actions:
            tail += instructions_encode(instructions_to_wire(version, ch.ins), version)
        event = OFPFME_INITIAL if initial else _EVENT14[ch.event]
        return _OF14_FULL.pack(_OF14_FULL.size + len(tail), event, f.table_id, ch.reason, f.idle_timeout,
                               f.hard_timeout, f.priority, f.cookie) + tail

    @staticmethod
    def _reply(conn: OfConnection, xid: int, updates: list[bytes]) -> None:
        """Flow updates as NXST_FLOW_MONITOR (1.0) / OFPMP_FLOW_MONITOR replies, each under 64 KiB (all but the
        last flagged REPLY_MORE); one empty reply when there are none."""
        if conn.version == OFP10:
            head, kind, mp_type, prefix = 12, "stats_reply", MP_EXPERIMENTER, _NX_STATS_HEAD.pack(NX_VENDOR_ID,
                                                                                                  NXST_FLOW_MONITOR)
        elif conn.version == OFP13:
            head, kind, mp_type, prefix = 16, "multipart_reply", MP_EXPERIMENTER, ONF_FLOW_MONITOR_HEAD
        else:
            head, kind, mp_type, prefix = 16, "multipart_reply", MP_FLOW_MONITOR, b""
        parts: list[list[bytes]] = [[]]
        size = head + len(prefix)
        for u in updates:
            if parts[-1] and size + len(u) > MAX_MSG:
                parts.append([])
                size = head + len(prefix)
            parts[-1].append(u)
            size += len(u)
        for i, part in enumerate(parts):
            conn.send(Msg(conn.version, kind, xid, {"mp_type": mp_type, "flags": OFPMPF_REPLY_MORE if
                                                   i < len(parts) - 1 else 0, "body": prefix + b"".join(part)}))
