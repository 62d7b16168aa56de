"""The OpenFlow agent of one bridge: the management socket ``<rundir>/<bridge>.mgmt`` that ovs-ofctl uses.

One connection and one controller target are ``vswitch.openflow.channel``'s ``OfConnection`` and ``Controller``
(importable from here too); bundles are ``vswitch.openflow.bundles``; ports, statistics and multipart replies
``vswitch.openflow.views``; features, config, role, async configuration and port-mod
``vswitch.openflow.switchconfig``; connecting to and listening for controller targets ``vswitch.openflow.links``.
The agent keeps the sockets, the event loop, the dispatch of messages and the asynchronous messages.

```
 ovs-ofctl ──unix──► <rundir>/br0.mgmt ──┐
 controllers ◄─tcp/unix (active/passive)─┴► OfAgent thread (selectors) ──► OfConnection per client
                                               │  hello (Bridge.protocols of 1.5/1.4/1.3/1.0), echo,
                                               │  features, config, set/get_async, barrier, role
                                               │  (1.4+: role status), flow_mod, packet_out, port_mod,
                                               │  bundles (bundles.py; 1.3: ONF experimenter),
                                               │  multipart / stats (desc, port_desc, port_stats,
                                               │  table, table_features, flow, aggregate, meter features),
                                               │  group_mod / meter_mod and their multiparts (groupmeter.py),
                                               │  flow monitors (monitor.py: told after each message and turn)
                                               ├─► BridgeFlows (flow tables ─► datapath)
                                               ◄── packet-ins, flow expiry, port changes ─► port_status,
                                                   packet_in, flow_removed to the controllers
 ovs-ofctl snoop ──unix──► <rundir>/br0.snoop ──► snoop.py: copies of a controller's messages, both ways
```

Fail modes as OVS has them: a bridge without controllers in ``standalone`` mode gets the flow
``priority=0 actions=NORMAL``; in ``secure`` mode it gets none (nothing is forwarded until flows are
added). Flows are flushed whenever the bridge gains its first or loses its last controller, or the
fail mode changes while it has none. A ``standalone`` bridge none of whose controllers has been connected
for ``FAIL_OPEN_PROBES`` inactivity probe intervals fails open: it forwards as a learning switch (NORMAL)
until one connects again. A ``secure`` bridge never does; its datapath forwards only by flows the agent
compiled for a secure bridge. While an OpenFlow 1.0 controller is connected, table misses are sent to it
(``OFPR_NO_MATCH``), as OVS does; 1.3 controllers get none.

The daemon sets what identifies the bridge, as ovs-vswitchd does: the datapath ID (a change drops the controller
connections, which reconnect at once) and the versions offered and accepted (``Bridge.protocols``; a peer without a
common version gets OFPET_HELLO_FAILED). Each controller's SET_ASYNC masks (by role; OVS's defaults until it sends
one) choose the packet-in, port-status and flow-removed reasons it is sent.

Every message is decoded by ``vswitch.openflow.codec``; whatever cannot be decoded or is not
supported gets an OFPT_ERROR (type and code as OpenFlow says, the offending message, whole as OVS
sends it, as data) and the connection stays up. Requests are answered in order, so a barrier reply
means everything before it was applied.

No client can stall the agent (and so every other client, ``ofproto/trace`` and the flow timeouts): sockets are
non-blocking, each connection has its own output queue, and a client that lets more than ``TX_LIMIT`` bytes pile
up (it sends requests but does not read the replies) is disconnected and logged; a controller that is behind gets
no packet-ins until it catches up. Requests are served at most ``MSGS_PER_TURN`` per connection per turn. A
controller's host name is looked up on a resolver thread; failed attempts back off 1, 2, 4, ... seconds up to
``Controller.max_backoff``, each error is logged once and shown in ``Controller.status`` (``state``,
``last_error``, ``sec_since_connect``, ``sec_since_disconnect``, as OVS writes them).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ofproto.rules import N_TABLES, OFPCML_NO_BUFFER, OFPR_ACTION, OFPR_NO_MATCH, OFPRR_DELETE
from vswitch.dpbridge import PACKET_IN_BURST, PACKET_IN_RATE
from vswitch.openflow import groupmeter, packetin2
from vswitch.openflow.bundles import BundleHandler
from vswitch.openflow.channel import (  # noqa: F401 - importable from here, as before the split
    ASYNC_DEFAULT,
    ASYNC_FLOW_REMOVED,
    ASYNC_KINDS,
    ASYNC_PACKET_IN,
    ASYNC_PORT_STATUS,
    MAX_BACKOFF,
    OFPBRC_IS_SLAVE,
    PROBE_INTERVAL,
    PROTOCOLS,
    ROLE_SLAVE,
    SUPPORTED_VERSIONS,
    TX_LIMIT,
    Controller,
    OfConnection,
    _error10,
    _names,
    _numeric_family,
    _port_number,
    _version_bitmap,
)
from vswitch.openflow.codec import (
    MP_EXPERIMENTER,
    NX_VENDOR_ID,
    OFP10,
    OFP13,
    OFP14,
    OFP15,
    OFP_NO_BUFFER,
    OFPBMC_BAD_FIELD,
    OFPBRC_BAD_EXPERIMENTER,
    OFPBRC_BAD_TYPE,
    OFPBRC_BAD_VERSION,
    OFPET_BAD_MATCH,
    OFPET_BAD_REQUEST,
    OFPET_HELLO_FAILED,
    ONF_ET_BUNDLE_ADD_MESSAGE,
    ONF_ET_BUNDLE_CONTROL,
    ONF_VENDOR_ID,
    Msg,
    OfpError,
    decode,
    encode,
    hello_versions,
    split,
)
from vswitch.openflow.flows import BULK_GAP, BridgeFlows, port_wire
from vswitch.openflow.groupmeter import OFPRR_GROUP_DELETE, OFPRR_METER_DELETE
from vswitch.openflow.links import ControllerLinks
from vswitch.openflow.monitor import (
    MP_FLOW_MONITOR,
    ONF_FLOW_MONITOR_HEAD,
    ONFT_FLOW_MONITOR_CANCEL,
    FlowMonitors,
)
from vswitch.openflow.nxhandlers import NiciraMessages, TlvMap, vendor_of
from vswitch.openflow.snoop import Snoop, Snooper
from vswitch.openflow.switchconfig import (  # noqa: F401 - importable from here, as before
    ROLE_MASTER,
    SwitchConfig,
)
from vswitch.openflow.views import SwitchViews
from xlate import pause
from xlate.translate import OFPR_INVALID_TTL

log = logging.getLogger(__name__)

OFPHFC_INCOMPATIBLE = 0
OFPP13_CONTROLLER = 0xFFFFFFFD
EXPIRE_TICK = 1.0         # seconds between flow-timeout passes
FAIL_OPEN_PROBES = 3      # a standalone bridge fails open after this many of its longest probe intervals without
#                           a controller (OVS: one to probe, one for the answer, one to reconnect)
MAX_RECV = 1 << 20        # a connection that buffers more than this without a whole message is dropped
ASYNC_BACKLOG = 256 << 10  # a controller this far behind gets no packet-ins (dropped, like OVS's queue limit)
MSGS_PER_TURN = 50        # requests handled per connection per loop turn, so one busy client cannot starve others


class _Stop(Exception):
    """The agent thread is asked to end."""

class OfAgent(SwitchViews, SwitchConfig, ControllerLinks, NiciraMessages):
    """Serves OpenFlow for one bridge on ``<rundir>/<bridge>.mgmt`` (and, later, controller connections)."""

    def __init__(self, bridge: Any, rundir: str, datapath_id: Callable[[], int],
                 changed: Callable[[], None] | None = None) -> None:
        self.bridge = bridge
        self.changed = changed or (lambda: None)
        self.path = os.path.join(rundir, f"{bridge.name}.mgmt")
        self.datapath_id = datapath_id
        self.sel = selectors.DefaultSelector()
        self.conns: dict[int, OfConnection] = {}
        self._stop_r, self._stop_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._started = time.monotonic()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.listener.bind(self.path)
        self.listener.listen(16)
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, "listen")
        self.sel.register(self._stop_r, selectors.EVENT_READ, "stop")
        self.snoop = Snoop(self, rundir)   # <rundir>/<bridge>.snoop: ovs-ofctl snoop
        self.controllers: dict[str, Controller] = {}
        #: ``Bridge.fail_mode``: "standalone" (NORMAL forwarding without a controller) or "secure"
        self.fail_mode = "secure" if bridge.dp.fail_secure else "standalone"   # the daemon created it so
        self._wanted: list[tuple[str, float]] | list[tuple[str, float, float]] | None = None
        self._wanted_mode = self.fail_mode
        self._mode: tuple[str, bool] | None = None      # (fail mode, has controllers) the flows were set up for
        self._ports_dirty = True
        self._port_descs: dict[int, dict[str, Any]] = {}
        self._last_expire = 0.0
        self._calls: collections.deque[tuple[Callable[[], Any], Future]] = collections.deque()
        self._resolved: collections.deque[tuple[Controller, Any]] = collections.deque()   # from resolver threads
        self._busy: set[OfConnection] = set()   # connections with received requests not handled yet
        self._serial = 0                        # numbers the management connections (their names in the log)
        self._wake_lock = threading.Lock()
        self._closed = False
        #: the OpenFlow versions offered and accepted (``Bridge.protocols`` and what pyvswitch speaks), newest first
        self.versions: tuple[int, ...] = SUPPORTED_VERSIONS
        self.dpid = 0                           # the datapath ID set by the daemon (0: ask ``datapath_id``)
        self._reconnects: collections.deque[tuple[str, bool]] = collections.deque()   # (why, every connection)
        self.flows = BridgeFlows(bridge, N_TABLES)
        self.monitors = FlowMonitors(self)   # its tables note flow changes for the flow monitors
        self.bundles = BundleHandler(self)
        self.tlv_map = TlvMap()
        self._raw = b""   # the message being handled, as received
        bridge.dp.on_packet_in = self._wake_for_packet_in
        self._thread = threading.Thread(target=self._run, name=f"openflow-{bridge.name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ loop
    def _wake(self, why: bytes = b"w") -> None:
        """Wake the agent thread (from any thread; a no-op once the agent is closed)."""
        with self._wake_lock:
            if not self._closed:
                with contextlib.suppress(BlockingIOError):
                    os.write(self._stop_w, why)

    def _wake_for_packet_in(self) -> None:
        self._wake(b"p")

    def _run(self) -> None:
        last_failure, logged_at = "", 0.0
        while True:
            try:
                self._iteration()
            except _Stop:
                return
            except Exception as e:  # a bug must not stop the agent for good: log (not every turn), go on
                failure = f"{type(e).__name__}: {e}"
                if failure != last_failure or time.monotonic() - logged_at > 60:
                    log.exception("openflow %s: agent iteration failed", self.bridge.name)
                    last_failure, logged_at = failure, time.monotonic()
                time.sleep(0.1)

    def _iteration(self) -> None:
        due = self.flows.due_in()
        timeout = 0.0 if self._busy else min(self._next_try_in(), 0.5 if due is None else due)
        served: set[OfConnection] = set()
        try:
            for key, events in self.sel.select(timeout=timeout):
                data = key.data
                if data == "stop":
                    if os.read(self._stop_r, 4096).count(b"x"):
                        raise _Stop
                    continue   # a wake-up: controllers, resolved names, ports or packet-ins
                if data == "listen":
                    self._accept(self.listener, None)
                elif isinstance(data, (Snoop, Snooper)):
                    self.snoop.event(data, events)
                elif isinstance(data, Controller):
                    if data.passive:
                        self._accept(data.listener, data)
                    else:
                        self._connected(data)
                else:
                    if events & selectors.EVENT_WRITE:
                        data.flush()
                    if events & selectors.EVENT_READ:
                        self._readable(data)
                        served.add(data)
            for conn in list(self._busy):      # clients with requests left over from an earlier turn
                if conn not in served:
                    self._serve(conn)
            self._maintain()
            self._deliver_packet_ins()
            self._take_learned()
            self.monitors.flush()   # what timeouts, learn and flushes changed
        finally:
            self._run_calls()   # ofproto/trace and the like are answered even if a step above failed
            self._sweep()

    def _run_calls(self) -> None:
        while self._calls:
            fn, fut = self._calls.popleft()
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)

    def _sweep(self) -> None:
        """Close the connections marked dead; watch for writability exactly where output is waiting."""
        self.snoop.sweep()
        for conn in list(self.conns.values()):
            if conn.dead:
                if conn.overflowed:
                    log.warning("openflow %s: %s is %s; disconnecting", self.bridge.name, conn.peer, conn.dead)
                self._close(conn, "disconnected: not reading its messages" if conn.overflowed else "")
            elif bool(conn.tx) != conn.writing:
                conn.writing = bool(conn.tx)
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.writing else 0)
                self.sel.modify(conn.sock, events, conn)

    def set_datapath_id(self, dpid: int) -> None:
        """The datapath ID the FEATURES_REPLY carries. A change drops the controller connections, which reconnect at
        once and learn the new one (OpenFlow cannot tell a connected controller), as OVS does."""
        old, self.dpid = self.dpid, dpid
        if old and old != dpid:
            self._reconnects.append(("datapath ID changed", False))
            self._wake()

    def set_protocols(self, protocols: list[str]) -> None:
        """``Bridge.protocols``: offer and accept only these versions (empty: OVS's default, every version), of
        those pyvswitch speaks (1.0, 1.3, 1.4 and 1.5). A change drops every connection, which then negotiates
        afresh."""
        wanted = {PROTOCOLS[p] for p in protocols if p in PROTOCOLS} or set(PROTOCOLS.values())
        versions = tuple(v for v in SUPPORTED_VERSIONS if v in wanted)
        if versions == self.versions:
            return
        unsupported = sorted(p for p in protocols if PROTOCOLS.get(p) not in SUPPORTED_VERSIONS)
        if unsupported:
            log.warning("openflow %s: protocols %s: pyvswitch speaks %s only; %s",
                        self.bridge.name, ", ".join(unsupported), ", ".join(_names(SUPPORTED_VERSIONS)),
                        f"offering {', '.join(_names(versions))}" if versions
                        else "no OpenFlow version is left, so every connection will fail")
        log.info("openflow %s: OpenFlow versions %s", self.bridge.name, ", ".join(_names(versions)) or "none")
        self.versions = versions
        self._reconnects.append(("OpenFlow versions changed", True))
        self._wake()

    def set_controllers(self, targets: list[tuple[str, float]] | list[tuple[str, float, float]]) -> None:
        """``Bridge.controller``: ``(target, inactivity probe seconds[, max backoff seconds])``; applied by the
        agent thread."""
        self._wanted = list(targets)
        self._wake()

    def configure(self, fail_mode: str, targets: list[tuple[str, float]] | list[tuple[str, float, float]],
                  rate_limit: int | None = None, burst_limit: int | None = None) -> None:
        """``Bridge.fail_mode`` and ``Bridge.controller`` (with the packet-in rate limit of the controllers)."""
        self._wanted_mode = fail_mode if fail_mode in ("standalone", "secure") else "standalone"
        dp = self.bridge.dp
        if rate_limit:
            dp.pi_rate = float(max(100, rate_limit))
            dp.pi_burst = float(max(1, burst_limit or rate_limit // 4))
        else:
            dp.pi_rate, dp.pi_burst = float(PACKET_IN_RATE), float(PACKET_IN_BURST)
        self.set_controllers(targets)

    def trace(self, spec: str, timeout: float = 10.0) -> str:
        """``ofproto/trace`` of the flow ``spec`` (run on the agent thread, which owns the flow tables)."""
        fut: Future = Future()
        self._calls.append((lambda: self.flows.trace(spec), fut))
        self._wake()
        return fut.result(timeout)

    def ports_changed(self) -> None:
        """The bridge's ports changed: recompile the flows' port map, tell the controllers (agent thread)."""
        self._ports_dirty = True
        self._wake()

    def _maintain(self) -> None:
        """Apply a new controller list and fail mode, (re)connect with backoff, probe idle connections,
        follow port changes, expire flows."""
        now = time.monotonic()
        while self._reconnects:
            self._reconnect(*self._reconnects.popleft())
        if self._ports_dirty:
            self._ports_dirty = False
            self.flows.refresh_ports()
            self._port_status()
        if now - self._last_expire >= EXPIRE_TICK:
            self._last_expire = now
            for stats, reason in self.flows.expire():
                self._flow_removed(stats, reason)
        if self._wanted is not None:
            wanted, self._wanted = self._wanted, None
            self._apply_controllers(wanted)
        self._apply_mode()
        while self._resolved:
            self._on_resolved(*self._resolved.popleft())
        for ctl in self.controllers.values():
            if ctl.passive:
                if ctl.listener is None and now >= ctl.next_try:
                    self._listen(ctl)
            elif ctl.pending is not None and now - ctl.attempt_at > max(1.0, ctl.backoff):
                self._abandon_connect(ctl)
                self._backoff(ctl, "Connection timed out")
            elif ctl.conn is None and ctl.pending is None and not ctl.resolving and now >= ctl.next_try:
                self._connect(ctl)
        for conn in list(self.conns.values()):
            if conn.target is None or conn.dead:
                continue
            idle = now - conn.last_rx
            if conn.probe_sent and idle > 2 * conn.target.probe:
                log.warning("openflow %s: no answer to an echo request; reconnecting", conn.peer)
                self._close(conn, "inactivity probe timed out")
            elif not conn.probe_sent and idle > conn.target.probe and conn.version:
                conn.probe_sent = now
                conn.target.state = "IDLE"
                conn.send(Msg(conn.version, "echo_request", 0, {"data": b""}))
        self._update_bypass()

    def _update_bypass(self) -> None:
        """Fail open as OVS does: a standalone bridge none of whose controllers has been connected for
        ``FAIL_OPEN_PROBES`` of their longest inactivity probe intervals (since they were configured, or since the
        last one was last heard from) acts as a learning switch until one connects; until then its flows stay in
        force. And, as OVS does, table misses go to the controllers while an OpenFlow 1.0 one is connected."""
        ctls = list(self.controllers.values())
        connected = [c.conn for c in ctls if c.conn is not None and c.conn.version]
        fail_open = False
        if self.fail_mode == "standalone" and ctls and not connected:
            quiet_since = max(max(c.created_at, c.last_admitted) for c in ctls)
            fail_open = time.monotonic() - quiet_since >= FAIL_OPEN_PROBES * max(c.probe for c in ctls)
        self.flows.set_bypass(fail_open)
        self.flows.set_miss_to_controller(OFPCML_NO_BUFFER if any(c.version == OFP10 for c in connected) else 0)

    def _apply_mode(self) -> None:
        """OVS's flushes: on gaining the first / losing the last controller, or a fail-mode change without
        controllers; then ``priority=0 actions=NORMAL`` for a standalone bridge without controllers."""
        if self._wanted is not None:
            return   # the controller list is about to change: decide after it has
        has = bool(self.controllers)
        mode = (self._wanted_mode, has)
        if mode == self._mode:
            return
        old, self._mode = self._mode, mode
        self.fail_mode = self._wanted_mode
        self.flows.secure = self.fail_mode == "secure"
        if old is None or old[1] != has or not has:
            self.flows.reset(default_normal=not has and self.fail_mode == "standalone")
            groupmeter.flush(self)   # OVS's flush takes the groups and meters too
        self._update_bypass()   # in the same compile: no moment without flows and without fail-open
        self.flows.push()       # a fail-mode change alone too: a secure datapath forwards only by flows made for it

    def _send_async(self, make: Callable[[OfConnection], Msg], droppable: bool = False, *, kind: int,
                    reason: int) -> int:
        """Send an asynchronous message of ``kind`` (``ASYNC_*``) and ``reason`` (built per connection: version,
        miss_send_len) to every controller whose role and SET_ASYNC configuration take it; a ``droppable`` one
        (packet-in) is skipped for a controller that is far behind (and counted there). Returns how many
        controllers it was for."""
        taken = 0
        for conn in list(self.conns.values()):
            if conn.wants(kind, reason):
                if droppable and conn.tx_bytes > ASYNC_BACKLOG:
                    conn.pi_dropped += 1
                    taken += 1
                    continue
                msg = make(conn)
                if msg is not None:   # None: not for this connection (a table miss for a 1.3 one, another id)
                    conn.send(msg)
                    taken += 1
        return taken

    def _flow_removed(self, stats: Any, reason: int) -> None:
        self._send_async(lambda c: Msg(c.version, "flow_removed", 0, self.flows.flow_removed(c.version, stats, reason)),
                         kind=ASYNC_FLOW_REMOVED, reason=reason)

    def _port_status(self) -> None:
        """port_status ADD / DELETE / MODIFY for what changed since the last look."""
        now = {p["port_no"]: p for p in self._ports(OFP13)}
        old, self._port_descs = self._port_descs, now
        for no in sorted(set(old) | set(now)):
            if old.get(no) == now.get(no):
                continue
            reason, desc = (0, now[no]) if no not in old else (1, old[no]) if no not in now else (2, now[no])
            self._send_async(lambda c, reason=reason, desc=desc: Msg(c.version, "port_status", 0, {
                "reason": reason, "desc": self._desc10(desc) if c.version == OFP10 else desc}),
                kind=ASYNC_PORT_STATUS, reason=reason)

    def _take_learned(self) -> None:
        """Add the flows ``learn`` made in the datapath to the tables (compiled as any change is)."""
        dp = self.bridge.dp
        while dp.learned:
            self.flows.learn(dp.learned.popleft())

    def _deliver_packet_ins(self) -> None:
        """Hand the datapath's packet-ins to the controllers (a table miss's, with no flow, to OpenFlow 1.0 ones
        only: in 1.3 a miss drops unless a table-miss flow says otherwise)."""
        dp = self.bridge.dp
        while dp.packet_ins:
            pi = dp.packet_ins.popleft()
            in_port = self.flows.ofport_of(pi.port_no)
            taken = self._send_async(lambda c, pi=pi, in_port=in_port: self._packet_in(c, pi, in_port),
                                     droppable=True, kind=ASYNC_PACKET_IN, reason=pi.reason)
            if not taken and pi.reason == OFPR_INVALID_TTL:
                # dec_ttl stopped the frame (TTL 0 or 1) and no controller (of its ids) asked for such packet-ins
                # (OVS's default: none does until SET_ASYNC): the frame ends here
                dp.dp_drops["invalid_ttl_no_controller"] += 1

    def _packet_in(self, conn: OfConnection, pi: Any, in_port: int) -> Msg | None:
        if pi.flow is None and conn.version != OFP10 or packetin2.controller_id_of(pi) != conn.controller_id:
            return None
        if conn.pin_format == packetin2.NXPIF_NXT_PACKET_IN2:
            return packetin2.packet_in2(conn.version, pi, in_port, self.dpid or self.datapath_id(),
                                        self._fingerprints(pi))
        if conn.pin_format == packetin2.NXPIF_NXT_PACKET_IN:
            return packetin2.nxt_packet_in(conn.version, pi, in_port)
        if conn.version >= OFP13:   # 1.5's match would carry the pipeline fields too: in_port is the one set
            return Msg(conn.version, "packet_in", 0, {"buffer_id": OFP_NO_BUFFER, "total_len": pi.total_len,
                                               "reason": pi.reason, "table_id": pi.table_id, "cookie": pi.flow.cookie,
                                               "match": {"in_port": in_port}, "data": pi.data})
        # OpenFlow 1.0, as OVS 3.1 sends it (nothing buffered, so no miss_send_len cut): a table miss says
        # OFPR_NO_MATCH, a CONTROLLER action OFPR_ACTION (also a priority-0 catch-all's: 1.0 has no table-miss flows)
        # (a controller(reason=...) action: its reason)
        from_action = pi.pin is not None and pi.pin.action
        reason = OFPR_NO_MATCH if pi.flow is None else pi.reason if from_action else OFPR_ACTION
        return Msg(OFP10, "packet_in", 0, {"buffer_id": OFP_NO_BUFFER, "total_len": pi.total_len,
                                           "in_port": port_wire(OFP10, in_port), "reason": reason, "data": pi.data})

    def _fingerprints(self, pi: Any) -> dict[int, int]:
        """Digests of the live flows a paused packet-in's continuation names (``xlate.pause.seal``)."""
        frozen = pi.pin.frozen if pi.pin is not None else None
        ts = self.bridge.dp.flows
        if frozen is None or ts is None:
            return {}
        uids = {u for u, _i, _t in frozen.frames} | {u for _s, u, _i in frozen.action_set}
        return {int(u): pause.fingerprint(ts.flows[r]) for r, u in enumerate(ts.uids.tolist()) if u in uids}

    # ------------------------------------------------------------ connections
    def _accept(self, listener: socket.socket | None, ctl: Controller | None) -> None:
        if listener is None:
            return
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            return
        self._serial += 1
        self._accept_socket(sock, ctl, ctl.target if ctl else f"{self.bridge.name}<->unix#{self._serial}")

    def _accept_socket(self, sock: socket.socket, ctl: Controller | None, peer: str) -> None:
        conn = OfConnection(sock, peer, ctl)
        if ctl is not None:
            if ctl.conn is not None and not ctl.passive:
                sock.close()
                return
            ctl.conn = conn
            ctl.state = "ACTIVE"
            ctl.connected_at = time.monotonic()
            ctl.logged_error = ""
            log.info("openflow %s: connected to controller %s", self.bridge.name, peer)
            self.changed()
        sock.setblocking(False)
        self.conns[sock.fileno()] = conn
        self.sel.register(sock, selectors.EVENT_READ, conn)
        conn.send(self._our_hello())

    def hello_bytes(self) -> bytes:
        """Our hello, encoded (a snooper's too)."""
        return encode(self._our_hello())

    def _our_hello(self) -> Msg:
        """We speak first: a hello in the newest version we offer, with a version bitmap element unless the
        versions offered are 1.0 up to that one (OVS's rule: then the header says it all)."""
        versions = self.versions or (OFP13,)
        bitmap = _version_bitmap(versions)
        top = max(versions)
        if ((bitmap >> 1) + 1) & (bitmap >> 1):   # not 1.0 .. top without gaps
            return Msg(top, "hello", 0, {"elements": [{"type": 1, "bitmaps": [bitmap]}]})
        return Msg(top, "hello", 0)

    def _close(self, conn: OfConnection, why: str = "") -> None:
        """Close a connection; a controller's records ``why`` (default: the peer closed it) and backs off."""
        if self.conns.get(conn.sock.fileno()) is conn:
            del self.conns[conn.sock.fileno()]
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(conn.sock)
        conn.sock.close()
        conn.dead = conn.dead or "closed"
        self.monitors.closed(conn)
        conn.rxq.clear()
        conn.tx.clear()
        self._busy.discard(conn)
        ctl = conn.target
        if ctl is not None and ctl.conn is conn:
            ctl.conn = None
            now = time.monotonic()
            ctl.disconnected_at = now
            if conn.version:
                ctl.last_admitted = conn.last_rx
            if now - ctl.connected_at >= ctl.backoff:
                ctl.backoff = 1.0   # the connection lasted: start the backoff afresh (a flapping one keeps growing)
            if not ctl.passive:
                self._backoff(ctl, why or "connection closed by peer")
            else:
                ctl.state = "ACTIVE"   # still listening
                ctl.last_error = why or ctl.last_error
            self.changed()

    def _readable(self, conn: OfConnection) -> None:
        if conn.dead:
            return
        if conn.rxq:   # requests from the last read are still waiting: serve them (this turn's share); read
            self._serve(conn)   # more once they are done
            return
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        conn.buf += data
        conn.last_rx = time.monotonic()
        if conn.probe_sent:
            conn.probe_sent = 0.0
            if conn.target is not None and conn.target.conn is conn:
                conn.target.state = "ACTIVE"
        try:
            conn.rxq.extend(split(conn.buf))
        except OfpError as e:
            log.warning("openflow %s: %s; closing", conn.peer, e)
            self._close(conn)
            return
        if len(conn.buf) > MAX_RECV:
            self._close(conn)
            return
        self._serve(conn)

    def _serve(self, conn: OfConnection) -> None:
        """Handle up to ``MSGS_PER_TURN`` of the connection's received requests, in order."""
        for _ in range(MSGS_PER_TURN):
            if not conn.rxq or conn.dead:
                break
            raw = conn.rxq.popleft()
            xid = int.from_bytes(raw[4:8], "big")
            if conn.version and conn.target is not None and conn.target.snoopers:
                conn.target.snoop(raw)   # ovs-ofctl snoop: what the controller sent
            try:
                self._handle(conn, raw)
            except OfpError as e:
                self.monitors.discard()   # nothing of a refused message stays applied
                conn.error(conn.version or raw[0], xid, e.err_type, e.code, raw)
            except Exception:  # a bug must not take the agent (or the switch) down: answer, log, go on
                log.exception("openflow %s: handling a message failed", conn.peer)
                conn.error(conn.version or OFP13, xid, OFPET_BAD_REQUEST, 0, raw)
            self.monitors.flush(conn, xid)   # the flow monitors hear of this message's changes
        if conn.rxq and not conn.dead:
            self._busy.add(conn)
        else:
            self._busy.discard(conn)

    def close(self) -> None:
        """Stop the thread, close every connection, remove the socket."""
        self._wake(b"x")
        self._thread.join(5)
        for ctl in self.controllers.values():
            self._drop_controller(ctl)
        for conn in list(self.conns.values()):
            self._close(conn)
        self.listener.close()
        self.snoop.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        with self._wake_lock:
            self._closed = True
            os.close(self._stop_r)
            os.close(self._stop_w)

    # ------------------------------------------------------------ messages
    def _handle(self, conn: OfConnection, raw: bytes) -> None:
        version = raw[0]
        if not conn.version:
            self._hello(conn, raw)
            return
        if version != conn.version:
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_VERSION, f"version 0x{version:02x} after negotiating "
                                                                  f"0x{conn.version:02x}")
        msg = decode(raw)
        self._raw = raw
        handler = getattr(self, f"_on_{msg.type}", None)
        if handler is None:
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_TYPE, f"{msg.type} not supported")
        handler(conn, msg)

    def _hello(self, conn: OfConnection, raw: bytes) -> None:
        version = raw[0]
        if raw[1] != 0:   # anything before a hello: OpenFlow says fail the negotiation
            conn.error(OFP10, int.from_bytes(raw[4:8], "big"), OFPET_HELLO_FAILED, 0, raw)
            return
        # the peer's versions: its bitmap, or without one every version up to its header's (as OVS reads a hello)
        theirs = hello_versions(raw)
        if theirs is None:
            theirs = set(range(OFP10, version + 1))
        common = [v for v in self.versions if v in theirs]
        if not common:
            # OFPHFC_INCOMPATIBLE, in the newest version we offer, with the reason as text; then hang up
            ours = ", ".join(f"0x{v:02x}" for v in sorted(self.versions)) or "none"
            peer = ", ".join(f"0x{v:02x}" for v in sorted(theirs)) or f"none (hello version 0x{version:02x})"
            why = (f"version negotiation failed (we support version{'s' if len(self.versions) > 1 else ''} {ours}, "
                   f"peer supports version{'s' if len(theirs) > 1 else ''} {peer})")
            log.warning("openflow %s: %s", conn.peer, why)
            conn.error(max(self.versions, default=OFP13), int.from_bytes(raw[4:8], "big"), OFPET_HELLO_FAILED,
                       OFPHFC_INCOMPATIBLE, why.encode(), text=True)
            conn.dead = "version negotiation failed"
            return
        conn.version = max(common)
        log.info("openflow %s: negotiated version 0x%02x", conn.peer, conn.version)
        if conn.target is not None:
            self.changed()   # Controller.is_connected turns true now

    def _on_echo_request(self, conn: OfConnection, msg: Msg) -> None:
        conn.send(Msg(conn.version, "echo_reply", msg.xid, {"data": msg.data}))

    def _on_echo_reply(self, conn: OfConnection, msg: Msg) -> None:
        pass

    def _on_barrier_request(self, conn: OfConnection, msg: Msg) -> None:
        self.flows.barrier()
        conn.send(Msg(conn.version, "barrier_reply", msg.xid))
        conn.last_barrier = time.monotonic()

    def _on_flow_mod(self, conn: OfConnection, msg: Msg) -> None:
        if conn.role == ROLE_SLAVE:
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_IS_SLAVE, "a slave controller cannot modify flows")
        self.check_flow_refs(conn.version, msg)
        self.flows.bulk = time.monotonic() - conn.last_barrier < BULK_GAP
        if conn.version == OFP10 and conn.flow_mod_table_id and not msg.get("nxm"):   # NXT_FLOW_MOD_TABLE_ID
            msg = Msg(msg.version, msg.type, msg.xid,
                      {**msg.fields, "table_id": msg.command >> 8, "command": msg.command & 0xFF})
        for stats in self.flows.flow_mod(conn.version, msg):
            self._flow_removed(stats, OFPRR_DELETE)

    def _on_group_mod(self, conn: OfConnection, msg: Msg) -> None:
        with self.monitors.reason(OFPRR_GROUP_DELETE):
            groupmeter.group_mod(self, conn, msg)

    def _on_meter_mod(self, conn: OfConnection, msg: Msg) -> None:
        with self.monitors.reason(OFPRR_METER_DELETE):
            groupmeter.meter_mod(self, conn, msg)

    def _on_multipart_request(self, conn: OfConnection, msg: Msg) -> None:
        if msg.mp_type == MP_FLOW_MONITOR and conn.version >= OFP14:
            self.monitors.of_request(conn, msg)
        elif conn.version == OFP13 and msg.mp_type == MP_EXPERIMENTER and bytes(msg.body)[:8] == ONF_FLOW_MONITOR_HEAD:
            self.monitors.nx_request(conn, msg)
        else:
            SwitchViews._on_multipart_request(self, conn, msg)

    def check_flow_refs(self, version: int, msg: Msg) -> None:
        """A flow-mod names only groups and meters that exist (else OVS's error)."""
        groupmeter.check_refs(self, version, msg)

    def _on_packet_out(self, conn: OfConnection, msg: Msg) -> None:
        if conn.role == ROLE_SLAVE:
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_IS_SLAVE, "a slave controller cannot send packets")
        self.flows.packet_out(conn.version, Msg(msg.version, msg.type, msg.xid, self.packet_out_fields(conn, msg)))
        self._take_learned()    # what its learn actions made is in the tables before the next request (as OVS)

    @staticmethod
    def packet_out_fields(conn: OfConnection, msg: Msg) -> dict[str, Any]:
        """A packet-out's fields with ``in_port`` (OpenFlow 1.5 puts it in a match: in_port is the one pipeline
        field pyvswitch takes there; others get OFPBMC_BAD_FIELD)."""
        if conn.version < OFP15:
            return msg.fields
        match = dict(msg.match)
        in_port = match.pop("in_port", OFPP13_CONTROLLER)
        if match:
            raise OfpError(OFPET_BAD_MATCH, OFPBMC_BAD_FIELD, f"packet_out match: {', '.join(match)} not supported")
        return {**msg.fields, "in_port": in_port}

    def flow_removed_deleted(self, stats: Any) -> None:
        """Tell the controllers a flow they asked about was deleted by a flow-mod."""
        self._flow_removed(stats, OFPRR_DELETE)

    def _on_bundle_control(self, conn: OfConnection, msg: Msg) -> None:
        self.bundles.control(conn, msg)

    def _on_bundle_add_message(self, conn: OfConnection, msg: Msg) -> None:
        self.bundles.add(conn, msg, self._raw)

    def _on_experimenter(self, conn: OfConnection, msg: Msg) -> None:
        """Nicira's messages (``packetin2``, ``nxhandlers``) and OpenFlow 1.3's ONF bundle extension (1.4+ has
        bundles of its own); any other experimenter message gets OFPBRC_BAD_EXPERIMENTER."""
        if packetin2.handle(self, conn, msg):
            return
        if conn.version == OFP13 and msg.experimenter == ONF_VENDOR_ID and msg.exp_type in (
                ONF_ET_BUNDLE_CONTROL, ONF_ET_BUNDLE_ADD_MESSAGE):
            self.bundles.experimenter(conn, msg, self._raw)
            return
        if conn.version == OFP13 and msg.experimenter == ONF_VENDOR_ID and msg.exp_type == ONFT_FLOW_MONITOR_CANCEL:
            self.monitors.nx_cancel(conn, bytes(msg.data))
            return
        if msg.experimenter == NX_VENDOR_ID:
            self._nicira(conn, msg, msg.exp_type, bytes(msg.data))
            return
        raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_EXPERIMENTER, f"experimenter {msg.experimenter:#x}")

    def _on_vendor(self, conn: OfConnection, msg: Msg) -> None:
        """OpenFlow 1.0's vendor messages: Nicira's (``packetin2``, ``nxhandlers``); others get OFPBRC_BAD_VENDOR."""
        if packetin2.handle(self, conn, msg):
            return
        vendor, subtype, body = vendor_of(conn.version, msg)
        if vendor != NX_VENDOR_ID:
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_EXPERIMENTER, f"vendor {vendor:#x}")
        self._nicira(conn, msg, subtype, body)
