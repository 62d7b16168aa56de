"""The flows of one bridge: OpenFlow flow-mods onto ``ofproto.tables.FlowTables``, compiled and
swapped into the datapath; flow statistics in wire form; packet-out; ``ofproto/trace``.

```
 flow_mod (1.0 / 1.3) ──► translate ──► Flow (OpenFlow port numbers) ──► FlowTables
                                                                            │ compile(port map)
 barrier / quiet / deadline ───────────────────────────────────────────────►│ (agent thread)
                                                                            ▼
              DpBridge.set_flows (between bursts: megaflows revalidated, counters carried over)
 packet-out, ofproto/trace ──► xlate.translate (the same translator the datapath's upcalls use)
```

Flows keep OpenFlow port numbers (1.3 numbering: LOCAL is ``0xfffffffe``); only the compiled
arrays use the datapath's dense port numbers, so adding or removing a port recompiles and no flow
changes. When compiles happen: at a barrier while compiling is cheap (a small table: the barrier
reply then means the datapath forwards by the new flows), unless flow-mods arrive back to back (a
bulk load: each came within ``BULK_GAP`` of the previous barrier reply on its connection); otherwise after the
flow-mods pause (``QUIET``, or twice the last compile time: a hiccup is no pause) or at the
latest ``max(MAX_DELAY, DELAY_FACTOR x the last compile time)`` after the first pending change.
A 100,000-flow ``ovs-ofctl add-flows`` (one flow-mod and one barrier per round trip) thus
compiles a handful of times instead of 100,000 (OVS's own datapath caches are revalidated in the
background too). The datapath takes a compiled set between two bursts
(``DpBridge.publish_flows``); nobody waits for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from backends.pool import META_HEAD, META_IN_PORT, META_LEN
from classifier.l2switch import switch_burst
from classifier.l2table import make_l2table
from dpif import actions as DA
from dpif import key as K
from dpif.extract import extract_burst
from dpif.megaflow import MegaflowCache, mf_programs
from dpif.meters import NO_METERS
from ofproto import tlvmap
from ofproto.rules import (
    OFPFF_RESET_COUNTS,
    OFPFF_SEND_FLOW_REM,
    OFPP_ALL,
    OFPP_ANY,
    OFPP_CONTROLLER,
    OFPP_FLOOD,
    OFPP_IN_PORT,
    OFPP_LOCAL,
    OFPP_NORMAL,
    OFPP_TABLE,
    OFPTT_ALL,
    Action,
    Flow,
    FlowError,
    FlowStats,
    Instructions,
    Match,
    Output,
    PushVlan,
    check_action,
)
from ofproto.tables import FlowTables, TableSet
from vswitch.openflow.actionwire import (  # noqa: F401  (re-exported: the agent and tests take them from here)
    NX_FROM_WIRE,
    NX_TO_WIRE,
    action_from_wire,
    action_to_wire,
    actions10_of,
    instructions_from_wire,
    instructions_to_wire,
    port13,
    port_wire,
)
from vswitch.openflow.channel import NXET_VENDOR
from vswitch.openflow.codec import (
    OFP10,
    OFP13,
    OFP15,
    OFP_NO_BUFFER,
    OFPET_BAD_ACTION,
    OFPET_BAD_INSTRUCTION,
    OFPET_BAD_MATCH,
    OFPET_BAD_REQUEST,
    OFPET_FLOW_MOD_FAILED,
    OfpError,
)
from vswitch.openflow.tracespec import (  # noqa: F401
    build_frame,
    final_flow,
    format_spec,
    parse_flow_spec,
    set_key_only,
)
from vswitch.openflow.tracetext import TraceRecorder, action_text
from vswitch.openflow.translate import actions_to10, instructions_from, match_from, match_to
from xlate.ctlearn import FinHit, TableChange
from xlate.translate import PF_DOWN, UpcallCookies, set_action_formatter, translate

log = logging.getLogger(__name__)

QUIET = 0.01              # seconds without flow-mods (or 2 compile times) after which changes are compiled
MAX_DELAY = 0.25          # ... and at the latest this long (or DELAY_FACTOR compile times) after the first change
DELAY_FACTOR = 8          # so compiling takes at most ~1/8 of the agent's time during a bulk load
SYNC_COMPILE_S = 0.003    # a barrier compiles at once when the last compile took less than this ...
BULK_GAP = 0.002          # ... unless its flow-mod came this soon after the previous barrier (a bulk load)

OFPFC_ADD, OFPFC_MODIFY, OFPFC_MODIFY_STRICT, OFPFC_DELETE, OFPFC_DELETE_STRICT = 0, 1, 2, 3, 4
OFPFMFC_UNKNOWN, OFPFMFC_TABLE_FULL, OFPFMFC_BAD_TABLE_ID, OFPFMFC_OVERLAP = 0, 1, 2, 3
OFPFMFC_BAD_TIMEOUT, OFPFMFC_BAD_COMMAND = 6, 7
OFPBRC_BUFFER_UNKNOWN, OFPBRC_BAD_PORT = 8, 11
OFPBRC_EPERM = 5
#: OVS's hidden table: it exists (past the 254 a controller sees) and no flow-mod may touch it
HIDDEN_TABLE = 254
OFPBAC_BAD_OUT_PORT, OFPBAC_BAD_ARGUMENT, OFPBAC_BAD_SET_TYPE, OFPBAC_BAD_SET_ARGUMENT = 4, 5, 13, 15
OFPBAC_MATCH_INCONSISTENT = 10
OFPBIC_BAD_TABLE_ID = 2
OFPBMC_BAD_FIELD, OFPBMC_BAD_VALUE = 6, 7
OFPBAC_BAD_TYPE = 0
OFPET_EXPERIMENTER = 0xFFFF
NXBAC_BAD_CONJUNCTION = 15    # OVS's Nicira error (experimenter 0x2320): conjunction mixed with other actions
NXFMFC_INVALID_TLV_FIELD, NX10_INVALID_TLV_FIELD = 37, 536   # a tun_metadata field the TLV map does not map

#: FlowError codes -> OpenFlow 1.3 (type, code)
FLOW_ERRORS = {
    "bad_table_id": (OFPET_FLOW_MOD_FAILED, OFPFMFC_BAD_TABLE_ID),
    "overlap": (OFPET_FLOW_MOD_FAILED, OFPFMFC_OVERLAP),
    "bad_timeout": (OFPET_FLOW_MOD_FAILED, OFPFMFC_BAD_TIMEOUT),
    "bad_priority": (OFPET_FLOW_MOD_FAILED, OFPFMFC_UNKNOWN),
    "bad_cookie": (OFPET_FLOW_MOD_FAILED, OFPFMFC_UNKNOWN),
    "bad_goto": (OFPET_BAD_INSTRUCTION, OFPBIC_BAD_TABLE_ID),
    "bad_out_port": (OFPET_BAD_ACTION, OFPBAC_BAD_OUT_PORT),
    "bad_argument": (OFPET_BAD_ACTION, OFPBAC_BAD_ARGUMENT),
    "bad_set_field": (OFPET_BAD_ACTION, OFPBAC_BAD_SET_TYPE),
    "bad_set_value": (OFPET_BAD_ACTION, OFPBAC_BAD_SET_ARGUMENT),
    "bad_action": (OFPET_BAD_ACTION, 0),
    "unsupported_order": (OFPET_BAD_ACTION, OFPBAC_BAD_TYPE),   # OVS: an action the action set cannot hold
    "bad_conjunction": (OFPET_EXPERIMENTER, NXBAC_BAD_CONJUNCTION),
    "bad_field": (OFPET_BAD_MATCH, OFPBMC_BAD_FIELD),
    "bad_value": (OFPET_BAD_MATCH, OFPBMC_BAD_VALUE),
    "bad_match": (OFPET_BAD_MATCH, OFPBMC_BAD_VALUE),
    "bad_out_group": (OFPET_BAD_ACTION, 9),      # OFPBAC_BAD_OUT_GROUP
    "invalid_meter": (12, 2),                    # OFPET_METER_MOD_FAILED, OFPMMFC_INVALID_METER
    "match_inconsistent": (OFPET_BAD_ACTION, OFPBAC_MATCH_INCONSISTENT),
}

RESERVED_NAMES = {OFPP_IN_PORT: "IN_PORT", OFPP_TABLE: "TABLE", OFPP_NORMAL: "NORMAL", OFPP_FLOOD: "FLOOD",
                  OFPP_ALL: "ALL", OFPP_CONTROLLER: "CONTROLLER", OFPP_LOCAL: "LOCAL", OFPP_ANY: "ANY"}

_warm_lock = threading.Lock()
_warm = False


def warm_up() -> None:
    """Load (or compile) the kernels of the OpenFlow datapath once per process, off the datapath thread."""
    global _warm
    with _warm_lock:
        if _warm:
            return
        tables = FlowTables(n_tables=2)
        tables.add(Flow(0, 1, Match(eth_type=0x0800), Instructions(apply=(Output(0),))))
        ts = tables.activate(tables.compile())
        data = np.zeros((4, 192), dtype=np.uint8)
        meta = np.zeros((4, 4), dtype=np.int32)
        meta[:, META_HEAD] = 64
        meta[:, META_LEN] = 60
        burst = np.arange(4, dtype=np.int32)
        keys = np.zeros((4, K.KEY_WORDS), dtype=np.uint64)
        extract_burst(data, meta, burst, 4, keys, np.zeros(4, dtype=np.int32))
        cache = MegaflowCache(16, 16)
        res = translate(ts, [int(w) for w in keys[0]], np.zeros(2, dtype=np.int64), UpcallCookies())
        e = cache.install(keys[0], res.mask_row(), res.program())
        other = keys[1].copy()
        other[K.W_IN_PORT] = 1
        cache.remove(cache.install(other, res.mask_row(), res.program()))   # a second one under the same mask
        out_entry = np.zeros(4, dtype=np.int64)
        cache.lookup(keys, burst, 4, meta, out_entry)
        cache.remove(e)
        prog_index = np.zeros((4, 2), dtype=np.int64)
        mf_programs(cache.ent, out_entry, 4, prog_index)
        out = np.zeros((2, 8), dtype=np.int32)
        out_start = np.zeros((2, 3), dtype=np.int32)
        DA.execute_burst(data, meta, burst, 0, prog_index, cache.actions, out, out_start,
                         np.zeros((3, DA.N_DROP_REASONS), dtype=np.int64), np.zeros(4, dtype=np.int32),
                         np.zeros(1, dtype=np.int64), np.zeros(4, dtype=np.int32),
                         np.zeros((DA.SIDE_ROWS, 4), dtype=np.int32), np.zeros(2, dtype=np.int64), NO_METERS, 0)
        DA.append_queues(out, out_start, out.copy(), out_start.copy())
        DA.count_rule(meta, burst, 0, ts.counters, ts.table_counters, 0, 0)
        l2, info = make_l2table(16, 300)
        switch_burst(data, meta, burst, 0, np.zeros((4, 24), dtype=np.uint64), l2, info,
                     np.zeros((1, 2, 4096), dtype=np.int16), 0, np.zeros((1, 16), dtype=np.int64), out, out_start)
        _warm = True


def ofport13(ofport: int) -> int:
    """A bridge port's OpenFlow number in 1.3 form (the LOCAL port is ``OFPP_LOCAL``)."""
    return OFPP_LOCAL if ofport == 65534 else ofport


def _flags(version: int, f: dict[str, Any]) -> int:
    """A flow-mod's flags as 1.3 numbers them: a 1.0 flow (whose counters a modify always resets) carries
    reset_counts, as OVS records it; 1.0's EMERG bit has no 1.3 meaning."""
    return (f["flags"] & ~OFPFF_RESET_COUNTS) | OFPFF_RESET_COUNTS if version == OFP10 else f["flags"]


def _flow_error(e: FlowError) -> OfpError:
    if e.code == "bad_field" and "is not in the TLV map" in str(e):   # tlvmap.why_unplaced: OVS's Nicira error
        return OfpError(OFPET_EXPERIMENTER, NXFMFC_INVALID_TLV_FIELD, str(e))
    err_type, code = FLOW_ERRORS.get(e.code, (OFPET_FLOW_MOD_FAILED, OFPFMFC_UNKNOWN))
    return OfpError(err_type, code, str(e))


def nx_error10(version: int, e: OfpError) -> OfpError:
    """``e`` as OVS sends it in OpenFlow 1.0 when it is a Nicira error 1.0 numbers differently
    (NXFMFC_INVALID_TLV_FIELD: (OFPET_BAD_REQUEST, 536) inside NXET_VENDOR)."""
    if version == OFP10 and (e.err_type, e.code) == (OFPET_EXPERIMENTER, NXFMFC_INVALID_TLV_FIELD):
        return OfpError(NXET_VENDOR, OFPET_BAD_REQUEST << 16 | NX10_INVALID_TLV_FIELD, str(e))
    return e


def _writable(table_id: int, command: int) -> None:
    """OVS's answer to a flow-mod (add, modify or delete) in its hidden table: OFPBRC_EPERM."""
    if table_id == HIDDEN_TABLE:
        raise OfpError(OFPET_BAD_REQUEST, OFPBRC_EPERM, f"table {table_id} is OVS's hidden table")


def match_from_wire(version: int, wire: dict[str, Any]) -> Match:
    """A wire match (1.0 or OXM) as a ``Match`` with OpenFlow 1.3 port numbers."""
    unmapped = sorted(n for n in wire if n.startswith("tun_metadata") and tlvmap.length(n) is None)
    if unmapped:   # OVS's Nicira error, not OFPBMC_BAD_FIELD
        raise OfpError(OFPET_EXPERIMENTER, NXFMFC_INVALID_TLV_FIELD, f"{unmapped[0]} is not in the TLV map")
    fields = match_from(version, wire)
    if "in_port" in fields:
        v, m = fields["in_port"]
        fields["in_port"] = (port13(version, v), m)
    try:
        return Match(**fields)
    except FlowError as e:
        raise _flow_error(e) from None


def match_to_wire(version: int, match: Match) -> dict[str, Any]:
    """A ``Match`` in the wire form of ``version``."""
    fields = {k: (v, m) for k, v, m in match.fields}
    if "in_port" in fields:
        v, m = fields["in_port"]
        fields["in_port"] = (port_wire(version, v), m)
    return match_to(version, fields)


def normal_only(compiled: TableSet) -> int:
    """Index of the one flow when the tables hold only ``priority=0 actions=NORMAL`` in table 0, else -1."""
    if len(compiled.flows) != 1:
        return -1
    f = compiled.flows[0]
    ins = f.instructions
    if (f.table_id == 0 and f.is_table_miss and not ins.write and not ins.clear and ins.goto is None
            and len(ins.apply) == 1 and isinstance(ins.apply[0], Output) and ins.apply[0].port == OFPP_NORMAL):
        return 0
    return -1


class BridgeFlows:
    """The OpenFlow flow tables of one bridge and their compiled form in its datapath.

    Used from the OpenFlow agent's thread only (``FlowTables`` is not thread-safe).
    """

    def __init__(self, bridge: Any, n_tables: int) -> None:
        self.bridge = bridge
        self.tables = FlowTables(n_tables)
        self.port_map: dict[int, int] = {}
        self.dirty_since = 0.0
        self.last_change = 0.0
        self.last_compile_s = 0.0
        self.compiles = 0
        self.bypass = False
        self.secure = False      # set by the agent: the bridge is fail_mode=secure (the datapath checks it)
        self.miss_max_len = 0    # > 0: table misses go to the controllers (an OpenFlow 1.0 controller is connected)
        self.bulk = False   # set by the agent: this flow-mod came right after a barrier on the same connection
        bridge.dp.openflow = self   # traces that cross a patch port into this bridge read its ports and MAC table
        self.refresh_ports()

    # ------------------------------------------------------------ time and ports
    def now(self) -> int:
        """The datapath clock (whole seconds), which flow timestamps use."""
        return self.bridge.dp.now()

    def refresh_ports(self) -> bool:
        """Rebuild the OpenFlow -> datapath port map; True (and a compile pending) when it changed."""
        new = {ofport13(bp.ofport): bp.port_no for bp in list(self.bridge.ports.values())}
        if new == self.port_map:
            return False
        self.port_map = new
        self.changed()
        return True

    def ofport_of(self, port_no: int) -> int:
        """The OpenFlow 1.3 number of datapath port ``port_no`` (OFPP_CONTROLLER when there is none)."""
        for of, no in self.port_map.items():
            if no == port_no:
                return of
        return OFPP_CONTROLLER

    # ------------------------------------------------------------ compile policy
    def changed(self) -> None:
        """Note a change the datapath does not have yet."""
        now = time.monotonic()
        self.last_change = now
        if not self.dirty_since:
            self.dirty_since = now

    def learn(self, got: TableChange) -> None:
        """A flow ``learn`` made (``xlate.ctlearn``): into the tables, a change when it is new or different; a
        ``fin_timeout`` hit: that flow's timeouts cut down."""
        if isinstance(got, FinHit):
            self.tables.fin_timeout(got.uid, got.idle_timeout, got.hard_timeout)
            return
        try:
            _flow, changed = self.tables.learn(got.flow, got.owner, got.delete_learned, self.now())
        except FlowError:
            return
        if changed:
            self.changed()

    def set_miss_to_controller(self, max_len: int) -> None:
        """Table misses to the controllers, ``max_len`` bytes of them (0: misses drop); takes effect with the
        next compile, which this schedules."""
        if max_len != self.miss_max_len:
            self.miss_max_len = max_len
            self.changed()

    def set_bypass(self, bypass: bool) -> None:
        """Fail-open on or off (takes effect with the next compile, which this schedules)."""
        if bypass != self.bypass:
            self.bypass = bypass
            self.changed()

    def push(self) -> TableSet:
        """Compile the tables and hand them to the datapath (which swaps them in before its next burst)."""
        self.dirty_since = 0.0
        t = time.perf_counter()
        compiled = self.tables.compile(self.port_map, self.miss_max_len)
        normal = normal_only(compiled)
        spent = time.perf_counter() - t
        if normal < 0 and not self.bypass:
            warm_up()   # once per process; not part of the compile time the barrier policy looks at
        self.bridge.dp.publish_flows(self.tables, compiled, normal, self.bypass, self.secure)
        self.last_compile_s = spent
        self.compiles += 1
        return compiled

    def barrier(self) -> None:
        """At a barrier: compile now when that is cheap and no bulk load is going on, so the reply means
        the datapath has the flows (a bulk load, flow-mod after flow-mod, compiles when it pauses)."""
        if self.dirty_since and self.last_compile_s < SYNC_COMPILE_S and not self.bulk:
            self.push()

    def due_in(self) -> float | None:
        """Seconds until pending changes must be compiled (None: nothing pending); compiles when due."""
        if not self.dirty_since:
            return None
        now = time.monotonic()
        quiet = max(QUIET, 2 * self.last_compile_s)   # a hiccup in a bulk load is no pause
        deadline = min(self.last_change + quiet, self.dirty_since + max(MAX_DELAY, DELAY_FACTOR * self.last_compile_s))
        if now >= deadline:
            self.push()
            return None
        return deadline - now

    # ------------------------------------------------------------ flow-mods
    def reset(self, default_normal: bool) -> None:
        """Delete every flow (OVS flushes on a controller or fail-mode change); with ``default_normal``
        install OVS's ``priority=0 actions=NORMAL``."""
        self.tables.delete(OFPTT_ALL)
        if default_normal:
            self.tables.add(Flow(0, 0, Match(), Instructions(apply=(Output(OFPP_NORMAL, 0),))), self.now())
        self.changed()

    def flow_mod(self, version: int, msg: Any) -> list[FlowStats]:
        """Apply a flow_mod; returns the flows it removed that asked for flow-removed messages."""
        f = msg.fields
        command = f["command"]
        out_port = port13(version, f["out_port"])
        # OpenFlow 1.0 has no table_id (unless Nicira's NXT_FLOW_MOD_TABLE_ID put one in the command): adds go
        # to table 0, the other commands apply to every table
        table_id = f.get("table_id", OFPTT_ALL if version == OFP10 and command != OFPFC_ADD else 0)
        _writable(table_id, command)
        try:
            match = match_from_wire(OFP13 if f.get("nxm") else version, f["match"])   # nxm: NXT_FLOW_MOD's match
        except OfpError as e:
            raise nx_error10(version, e) from None
        cookie_mask = f.get("cookie_mask", 0)
        now = self.now()
        removed: list[FlowStats] = []
        try:
            if command == OFPFC_ADD or (version == OFP10 and command in (OFPFC_MODIFY, OFPFC_MODIFY_STRICT)):
                ins = instructions_from_wire(version, f)
                if command != OFPFC_ADD:   # OpenFlow 1.0: a modify that selects nothing adds the flow, unless
                    # it selects by cookie (NXM_NX_COOKIE_W) or sets none (OVS: new cookie all-ones)
                    chosen = self.tables.modify(table_id, match, f["priority"], command == OFPFC_MODIFY_STRICT,
                                                f["cookie"], cookie_mask, instructions=ins)
                    if chosen or cookie_mask or f["cookie"] == (1 << 64) - 1:
                        self.changed()
                        return removed
                self.tables.add(Flow(0 if table_id == OFPTT_ALL else table_id, f["priority"], match, ins,
                                     f["cookie"], f["idle_timeout"], f["hard_timeout"], _flags(version, f),
                                     importance=f.get("importance", 0)), now)
            elif command in (OFPFC_MODIFY, OFPFC_MODIFY_STRICT):
                ins = instructions_from_wire(version, f)
                if f["flags"] & OFPFF_RESET_COUNTS:
                    self.bridge.dp.sync_stats()   # the counts to forget include what the megaflows hold
                self.tables.modify(table_id, match, f["priority"], command == OFPFC_MODIFY_STRICT, f["cookie"],
                                   cookie_mask, ins, reset_counts=bool(f["flags"] & OFPFF_RESET_COUNTS))
            elif command in (OFPFC_DELETE, OFPFC_DELETE_STRICT):
                self.bridge.dp.sync_stats()
                gone = self.tables.delete(table_id, match, f["priority"], command == OFPFC_DELETE_STRICT, out_port,
                                          f["cookie"], cookie_mask, now, f.get("out_group", 0xFFFFFFFF))
                removed = [s for s in gone if s.flow.flags & OFPFF_SEND_FLOW_REM]
            else:
                raise OfpError(OFPET_FLOW_MOD_FAILED, OFPFMFC_BAD_COMMAND, f"flow_mod command {command}")
        except FlowError as e:
            raise nx_error10(version, _flow_error(e)) from None
        self.changed()
        if f["buffer_id"] != OFP_NO_BUFFER:
            # applied; but the switch keeps no buffers, so the packet the controller named is unknown
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BUFFER_UNKNOWN, "pyvswitch buffers no packets (n_buffers=0)")
        return removed

    def check_flow_mod(self, version: int, msg: Any) -> None:
        """The checks a flow_mod gets before anything is applied (a bundle's flow-mods, when they are added):
        command, match, instructions, table, priority and timeouts; raises the ``OfpError`` it would get."""
        f = msg.fields
        command = f["command"]
        if command not in (OFPFC_ADD, OFPFC_MODIFY, OFPFC_MODIFY_STRICT, OFPFC_DELETE, OFPFC_DELETE_STRICT):
            raise OfpError(OFPET_FLOW_MOD_FAILED, OFPFMFC_BAD_COMMAND, f"flow_mod command {command}")
        _writable(f.get("table_id", 0), command)
        try:
            match = match_from_wire(version, f["match"])
            if command == OFPFC_ADD:
                ins = instructions_from_wire(version, f)
                self.tables._check(Flow(0 if version == OFP10 else f.get("table_id", 0), f["priority"], match, ins,
                                        f["cookie"], f["idle_timeout"], f["hard_timeout"], _flags(version, f)))
            elif command in (OFPFC_MODIFY, OFPFC_MODIFY_STRICT):
                instructions_from_wire(version, f).check()
        except FlowError as e:
            raise _flow_error(e) from None

    def expire(self) -> list[tuple[FlowStats, int]]:
        """Remove the flows whose timeouts passed; returns (stats, reason) of those that asked to be told."""
        if self.tables.has_timeouts():
            self.bridge.dp.sync_stats()
        gone = self.tables.expire(self.now())
        if gone:
            self.changed()
        return [(s, r) for s, r in gone if s.flow.flags & OFPFF_SEND_FLOW_REM]

    # ------------------------------------------------------------ statistics
    def flow_stats(self, version: int, request: dict[str, Any]) -> list[dict[str, Any]]:
        """Multipart flow stats entries for a flow stats request, in the wire form of ``version``."""
        table_id = request.get("table_id", OFPTT_ALL)
        if version == OFP10 and table_id == 0xFF:
            table_id = OFPTT_ALL
        nxm = request.get("nxm", False)   # Nicira's NXST_FLOW: an NXM match, entries in NXM form
        match = match_from_wire(OFP13 if nxm else version, request.get("match", {}))
        out_port = port13(version, request.get("out_port", OFPP_ANY))   # 1.0's OFPP_NONE becomes OFPP_ANY
        self.bridge.dp.sync_stats()
        try:
            stats = self.tables.stats(table_id, match, out_port, request.get("cookie", 0),
                                      request.get("cookie_mask", 0), self.now(), request.get("out_group", 0xFFFFFFFF))
        except FlowError as e:
            raise _flow_error(e) from None
        stats.sort(key=lambda s: (s.flow.table_id, -s.flow.priority, s.flow.serial))
        return [self.stats_to_wire(version, s, nxm) for s in stats]

    def stats_to_wire(self, version: int, s: FlowStats, nxm: bool = False) -> dict[str, Any]:
        """One flow-stats entry (``nxm``: Nicira's, with the match as an OXM-named dict and ages)."""
        f = s.flow
        entry: dict[str, Any] = {"table_id": f.table_id, "duration_sec": s.duration, "duration_nsec": 0,
                                 "priority": f.priority, "idle_timeout": f.idle_timeout,
                                 "hard_timeout": f.hard_timeout, "cookie": f.cookie, "packet_count": s.packets,
                                 "byte_count": s.bytes,
                                 "match": match_to_wire(OFP13 if nxm else version, f.match)}
        if nxm:
            entry.update(idle_age=min(s.idle, 0xFFFF), hard_age=min(s.duration, 0xFFFF))
        if version == OFP10:
            entry["actions"] = actions_to10(actions10_of(OFP10, f.instructions))
        else:
            entry.update(flags=f.flags, importance=f.importance)
            entry["instructions"] = instructions_to_wire(version, f.instructions)
        if version >= OFP15:   # the 1.5 flow description carries its counters as OXS statistics
            entry["stats"] = {"duration": s.duration << 32, "idle_time": s.idle << 32, "packet_count": s.packets,
                              "byte_count": s.bytes}
        return entry

    def flow_removed(self, version: int, s: FlowStats, reason: int) -> dict[str, Any]:
        """The fields of a flow_removed message."""
        f = s.flow
        out = {"cookie": f.cookie, "priority": f.priority, "reason": reason, "duration_sec": s.duration,
               "duration_nsec": 0, "idle_timeout": f.idle_timeout, "packet_count": s.packets,
               "byte_count": s.bytes, "match": match_to_wire(version, f.match)}
        if version != OFP10:
            out.update(table_id=f.table_id, hard_timeout=f.hard_timeout)
        if version >= OFP15:
            out["stats"] = {"duration": s.duration << 32, "idle_time": s.idle << 32, "packet_count": s.packets,
                            "byte_count": s.bytes}
        return out

    def table_stats(self) -> list[tuple[int, int, int, int]]:
        """(table_id, active flows, lookups, matches) per table."""
        self.bridge.dp.sync_stats()
        return self.tables.table_stats()

    # ------------------------------------------------------------ packet-out
    def packet_out(self, version: int, msg: Any) -> None:
        """Execute a packet_out's actions on its frame in the datapath."""
        port_no, acts = self.check_packet_out(version, msg.fields)
        dp = self.bridge.dp
        ts = self.push() if self.dirty_since or dp.flows is None else dp.flows
        warm_up()
        frame = bytes(msg.fields["data"])
        dp.call(lambda: dp.packet_out(frame, port_no, acts, ts))

    def check_packet_out(self, version: int, f: dict[str, Any]) -> tuple[int, tuple[Action, ...]]:
        """A packet_out's fields checked: ``(datapath port it comes in on or -1, its actions)``; raises the
        ``OfpError`` OVS answers a bad one with."""
        if f["buffer_id"] != OFP_NO_BUFFER:
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BUFFER_UNKNOWN, "pyvswitch buffers no packets (n_buffers=0)")
        in_port = port13(version, f["in_port"])
        if in_port in (OFPP_CONTROLLER, OFPP_ANY):
            port_no = -1
        elif in_port in self.port_map:
            port_no = self.port_map[in_port]
        else:
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_PORT, f"packet_out in_port {in_port:#x} is not a port")
        acts = tuple(action_from_wire(version, a) for a in
                     (instructions_from(version, {"actions": f["actions"]})[0]["actions"] if version == OFP10
                      else f["actions"]))
        try:
            for a in acts:
                check_action(a)
        except FlowError as e:
            raise _flow_error(e) from None
        for a in acts:
            if isinstance(a, PushVlan) and a.ethertype != 0x8100:
                raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_ARGUMENT, "push_vlan supports ethertype 0x8100")
        if any(isinstance(a, Output) and a.port == OFPP_TABLE for a in acts) and len(acts) != 1:
            raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_OUT_PORT, "output:TABLE must be the only action")
        return port_no, acts

    # ------------------------------------------------------------ trace
    def trace(self, spec: str) -> str:
        """``ofproto/trace``: the translator's walk for a packet described by ``spec`` (tables, flows,
        actions, and the bridges behind patch ports), the datapath actions it produces and the verdict
        (with a named drop reason)."""
        fields = parse_flow_spec(spec, {bp.name: ofport13(bp.ofport) for bp in self.bridge.ports.values()})
        in_port = fields.get("in_port", OFPP_CONTROLLER)
        dp = self.bridge.dp
        flags = dp.port_flags.copy()
        dense = self.port_map.get(in_port, len(flags))
        key = key_of_frame(build_frame(fields), dense)
        set_key_only(key, fields)
        name = self.bridge.name
        lines = [f"Flow: {format_spec(fields)}", "", f'bridge("{name}")', "-" * (len(name) + 10)]
        ts = self.tables.compile(self.port_map, self.miss_max_len, snapshot=True)
        rec = TraceRecorder(self, flags, dp.xlate_bridges(ts))
        popped = dp.datapath.termination_of(key) if hasattr(dp.datapath, "termination_of") else None
        if popped is not None:    # tunnel traffic for this bridge's address: decapsulated before its tables
            tport, kind = popped
            rec.note(f"     -> {kind} traffic for this bridge's tunnel endpoint: the datapath removes the outer "
                     "headers before the bridge's tables and the frame enters the tunnel port "
                     f"{self.port_text(tport)} (its key and remote pick the port)")
            lines += rec.lines()
            return "\n".join(lines + ["", "Final flow: unchanged", f"Datapath actions: tnl_pop({tport})"]) + "\n"
        if self.bypass:
            rec.note("fail-open: no controller connected in standalone mode, the bridge acts as a learning switch")
            rec.normal(key, dense)
            actions = DA.normal(dp.index)
            final, drop_reason = key, ""
        else:
            res = translate(rec.bridges, key, flags, UpcallCookies(), rec)   # ids never executed: its own
            actions, final, drop_reason = res.actions, res.final, res.drop_reason
        lines += rec.lines()
        parts = self.render_actions(actions, rec.normal_outputs)
        l4 = {6: "tcp(", 17: "udp(", 132: "sctp("}.get(final[K.W_NW] & 0xFF) if final else None
        if l4 and final[K.W_ETH_TYPE] & 0xFFFF in (0x0800, 0x86DD):    # OVS names the L4 header it rewrites
            parts = [p.replace("set(tp(", "set(" + l4) for p in parts]
        text = ",".join(parts) if any(not p.startswith(("set(", "push_vlan", "pop_vlan")) for p in parts) else ""
        lines += ["", f"Final flow: {final_flow(final)}", f"Datapath actions: {text or 'drop'}"]
        if not text:
            lines.append(f"Drop reason: {drop_reason or 'flow_no_output (no port to send to)'}")
        return "\n".join(lines) + "\n"

    def render_actions(self, program: list[int], normal_outputs: list[list[str]]) -> list[str]:
        """The datapath actions of ``program`` in OVS's words, with OpenFlow port numbers (``bridge:port`` for a
        port of another bridge) and each NORMAL replaced by what it does (``normal_outputs``, in order)."""
        return self._render(program, iter(normal_outputs))

    def _render(self, program: list[int], normals: Iterator[list[str]]) -> list[str]:
        parts: list[str] = []
        for op, args in DA.decode(program):
            if op == DA.OP_OUTPUT:
                parts.append(self.port_text(args[0]))
            elif op == DA.OP_NORMAL:
                parts += next(normals, [])
            elif op == DA.OP_USERSPACE:
                parts.append("controller")
            elif op == DA.OP_CLONE:      # a tunnel output: OVS prints the push, then where the outer frame goes
                body = DA.decode(args)
                if body and body[0][0] == DA.OP_TNL_PUSH:
                    push = body[0][1]
                    parts.append(DA.format_actions([DA.OP_TNL_PUSH, len(push), *push]))
                    parts += self._render(args[2 + len(push):], normals)
                elif body and body[0][0] != DA.OP_DROP:
                    parts.append(f"clone({','.join(self._render(args, normals))})")
            elif op != DA.OP_DROP:
                parts.append(DA.format_actions([op, len(args), *args]))
        return parts

    def port_text(self, port_no: int) -> str:
        """Datapath port ``port_no`` as a trace names it: its OpenFlow number here, ``bridge:number`` in
        another bridge."""
        of = self.ofport_of(port_no)
        if of != OFPP_CONTROLLER:
            return _port_name(of)
        other = self.peer_flows(port_no)
        if other is None:
            return str(port_no)
        return f"{other.bridge.name}:{_port_name(other.ofport_of(port_no))}"

    def peer_flows(self, port_no: int) -> BridgeFlows | None:
        """The OpenFlow view of the bridge of datapath port ``port_no`` (None: no bridge has it)."""
        datapath = self.bridge.dp.datapath
        b = datapath.xbridges.bridge_of(port_no)
        br = datapath.bridges[b] if 0 <= b < len(datapath.bridges) else None
        return getattr(br, "openflow", None)

    def _flood(self, in_port: int, flags: np.ndarray) -> list[int]:
        """The datapath ports a flood from datapath port ``in_port`` reaches (every port up but the input port)."""
        return [self.port_map[of] for of in sorted(self.port_map)
                if self.port_map[of] != in_port and self.port_map[of] < len(flags)
                and not flags[self.port_map[of]] & PF_DOWN]

    def _trace_normal(self, key: list[int], in_port: int, lines: list[str], flags: np.ndarray) -> list[int]:
        """What NORMAL does with a frame of key ``key`` from datapath port ``in_port``, told from the MAC table:
        the datapath ports it goes to."""
        dst = key[K.W_ETH_DST]
        vid = key[K.W_VLAN_TCI] & 0xFFF
        if dst >> 40 & 1:
            lines.append("     -> multicast or broadcast destination, flooding")
            return self._flood(in_port, flags)
        mac = ":".join(f"{dst >> s & 0xFF:02x}" for s in range(40, -8, -8))
        for e in self.bridge.fdb():
            if e["mac"] == mac and (e["vlan"] == vid or not vid):
                port = ofport13(int(e["ofport"]))
                if self.port_map.get(port) == in_port:
                    lines.append(f"     -> learned port is input port {_port_name(port)}, dropping")
                    return []
                lines.append(f"     -> forwarding to learned port {_port_name(port)}")
                return [self.port_map[port]] if port in self.port_map else []
        lines.append("     -> no learned MAC for destination, flooding")
        return self._flood(in_port, flags)


def key_of_frame(frame: bytes, in_port: int) -> list[int]:
    """The datapath key of ``frame`` received on datapath port ``in_port``."""
    data = np.zeros((1, len(frame)), dtype=np.uint8)
    data[0] = np.frombuffer(frame, dtype=np.uint8)
    meta = np.zeros((1, 4), dtype=np.int32)
    meta[0, META_LEN] = len(frame)
    meta[0, META_IN_PORT] = in_port
    keys = np.zeros((1, K.KEY_WORDS), dtype=np.uint64)
    extract_burst(data, meta, np.zeros(1, dtype=np.int32), 1, keys, np.zeros(1, dtype=np.int32))
    return [int(w) for w in keys[0]]


def _port_name(p: int) -> str:
    return RESERVED_NAMES.get(p, str(p)) if p >= 0xFFFFFF00 else str(p)


set_action_formatter(action_text)
