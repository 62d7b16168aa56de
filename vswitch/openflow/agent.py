"""The OpenFlow agent of one bridge: the management socket ``<rundir>/<bridge>.mgmt`` that ovs-ofctl uses.

```
 ovs-ofctl ──unix──► <rundir>/br0.mgmt ──┐
 controllers ◄─tcp/unix (active/passive)─┴► OfAgent thread (selectors) ──► OfConnection per client
                                               │  hello (version 1.3 / 1.0), echo, features, config,
                                               │  barrier, role, flow_mod, packet_out, port_mod,
                                               │  multipart / stats (desc, port_desc, port_stats,
                                               │  table, table_features, flow, aggregate)
                                               ├─► BridgeFlows (flow tables ─► datapath)
                                               ◄── packet-ins, flow expiry, port changes ─► port_status,
                                                   packet_in, flow_removed to the controllers
```

Fail modes as OVS has them: a bridge without controllers in ``standalone`` mode gets the flow
``priority=0 actions=NORMAL``; in ``secure`` mode it gets none (nothing is forwarded until flows are
added). Flows are flushed whenever the bridge gains its first or loses its last controller, or the
fail mode changes while it has none. A ``standalone`` bridge whose controllers are all disconnected
fails open: it forwards as a learning switch (NORMAL) until one connects again.

Every message is decoded by ``vswitch.openflow.codec``; whatever cannot be decoded or is not
supported gets an OFPT_ERROR (type and code as OpenFlow says, the first 64 bytes of the offending
message as data) and the connection stays up. Requests are answered in order, so a barrier reply
means everything before it was applied.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from classifier.flowtable import N_TABLES, OFPR_NO_MATCH, OFPRR_DELETE
from vswitch.datapath import PACKET_IN_BURST, PACKET_IN_RATE
from vswitch.openflow.codec import (
    MP_AGGREGATE,
    MP_DESC,
    MP_FLOW,
    MP_PORT_DESC,
    MP_PORT_STATS,
    MP_TABLE,
    MP_TABLE_FEATURES,
    OFP10,
    OFP13,
    OFP_NO_BUFFER,
    OFPBRC_BAD_MULTIPART,
    OFPBRC_BAD_TYPE,
    OFPBRC_BAD_VERSION,
    OFPET_BAD_REQUEST,
    OFPET_HELLO_FAILED,
    Msg,
    OfpError,
    decode,
    encode,
    split,
)
from vswitch.openflow.flows import BULK_GAP, BridgeFlows, port_wire

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = (OFP13, OFP10)
OFPP13_LOCAL, OFPP10_LOCAL = 0xFFFFFFFE, 0xFFFE
OFPP13_ANY, OFPP10_NONE = 0xFFFFFFFF, 0xFFFF
OFPPC_PORT_DOWN = 1
OFPPS_LINK_DOWN = 1
OFPPS13_LIVE = 4
OFPC_FLOW_STATS, OFPC_TABLE_STATS, OFPC_PORT_STATS = 1, 2, 4
OFPPF_10GB_FD = 1 << 6   # 1.3 numbering (1.0: 1 << 6 too)
OFPPF_COPPER = 1 << 11   # 1.3 (1.0: 1 << 7)
ROLE_SLAVE = 3
OFPBRC_IS_SLAVE = 10
OFPET_PORT_MOD_FAILED = 7
EXPIRE_TICK = 1.0         # seconds between flow-timeout passes
PROBE_INTERVAL = 5.0      # seconds of silence before an echo request (Controller.inactivity_probe)
MAX_BACKOFF = 8.0         # seconds between connection attempts, at most
MAX_RECV = 1 << 20        # a connection that buffers more than this without a whole message is dropped


class _Stop(Exception):
    """The agent thread is asked to end."""


def _version_bitmap(versions: tuple[int, ...]) -> int:
    return sum(1 << v for v in versions)


class OfConnection:
    """One OpenFlow client (ovs-ofctl, a controller) on a stream socket."""

    def __init__(self, sock: socket.socket, peer: str, target: Controller | None = None) -> None:
        self.sock = sock
        self.peer = peer
        self.target = target      # the controller this connection serves (None: ovs-ofctl on the mgmt socket)
        self.last_rx = time.monotonic()
        self.probe_sent = 0.0
        self.buf = bytearray()
        self.version = 0          # negotiated; 0 until the client's hello arrives
        self.miss_send_len = 128
        self.config_flags = 0
        self.role = 0
        self.connected_at = time.monotonic()
        self.last_barrier = 0.0   # when the last barrier reply went out (bulk flow-mod loads)

    def send(self, msg: Msg) -> None:
        """Encode and send one message (blocking: replies are small)."""
        self.sock.sendall(encode(msg))

    def error(self, version: int, xid: int, err_type: int, code: int, data: bytes) -> None:
        """An OFPT_ERROR carrying the first 64 bytes of the message it answers (1.3 numbers, translated
        for OpenFlow 1.0)."""
        if version == OFP10:
            err_type, code = _error10(err_type, code)
        self.send(Msg(version, "error", xid, {"err_type": err_type, "code": code, "data": data[:64]}))

    @property
    def is_controller(self) -> bool:
        """A controller connection that receives asynchronous messages (not a slave, not ovs-ofctl)."""
        return self.target is not None and bool(self.version) and self.role != ROLE_SLAVE


def _error10(err_type: int, code: int) -> tuple[int, int]:
    """An OpenFlow 1.3 error (type, code) as OpenFlow 1.0 numbers it."""
    if err_type in (0, 1):          # hello failed, bad request: same numbers for what 1.0 has
        return err_type, code if code <= 8 else 1
    if err_type == 2:               # bad action
        return 2, code if code <= 8 else 5
    if err_type == 5 and code == 3:  # flow-mod failed: overlap
        return 3, 1
    if err_type == 7:               # port-mod failed
        return 4, code
    if err_type in (3, 4, 5):       # bad instruction, bad match, other flow-mod failures: unsupported
        return 3, 5
    return err_type, code


class Controller:
    """One ``Bridge.controller`` target: ``tcp:IP:PORT`` / ``unix:PATH`` (we connect, with backoff) or
    ``ptcp:PORT[:IP]`` / ``punix:PATH`` (we listen)."""

    def __init__(self, target: str, inactivity_probe: float = PROBE_INTERVAL) -> None:
        self.target = target
        self.probe = inactivity_probe
        kind, _, rest = target.partition(":")
        if kind not in ("tcp", "unix", "ptcp", "punix") or not rest:
            raise ValueError(f"controller target {target!r}: use tcp:IP:PORT, unix:PATH, ptcp:PORT[:IP] or "
                             f"punix:PATH")
        self.kind = kind
        self.passive = kind.startswith("p")
        if kind in ("tcp", "ptcp"):
            if kind == "tcp":
                host, _, port = rest.rpartition(":")
                self.addr: Any = (host.strip("[]") or "127.0.0.1", int(port or 6653))
            else:
                port, _, host = rest.partition(":")
                self.addr = (host.strip("[]") or "0.0.0.0", int(port or 6653))
        else:
            self.addr = rest
        self.conn: OfConnection | None = None
        self.listener: socket.socket | None = None
        self.pending: socket.socket | None = None   # a non-blocking connect in progress
        self.backoff = 1.0
        self.next_try = 0.0
        self.state = "BACKOFF"
        self.last_error = ""
        self.connected_at = 0.0

    def family(self) -> int:
        return socket.AF_UNIX if self.kind in ("unix", "punix") else (
            socket.AF_INET6 if ":" in self.addr[0] else socket.AF_INET)

    def status(self) -> dict[str, str]:
        """``Controller.status`` as OVS writes it."""
        out = {"state": self.state}
        if self.last_error:
            out["last_error"] = self.last_error
        if self.conn is not None:
            out["sec_since_connect"] = str(int(time.monotonic() - self.connected_at))
        return out


class OfAgent:
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
        self.controllers: dict[str, Controller] = {}
        #: ``Bridge.fail_mode``: "standalone" (NORMAL forwarding without a controller) or "secure"
        self.fail_mode = "standalone"
        self._wanted: list[tuple[str, float]] | None = None
        self._wanted_mode = "standalone"
        self._mode: tuple[str, bool] | None = None      # (fail mode, has controllers) the flows were set up for
        self._ports_dirty = True
        self._port_descs: dict[int, dict[str, Any]] = {}
        self._last_expire = 0.0
        self._calls: collections.deque[tuple[Callable[[], Any], Future]] = collections.deque()
        self.flows = BridgeFlows(bridge, N_TABLES)
        bridge.dp.on_packet_in = self._wake_for_packet_in
        self._thread = threading.Thread(target=self._run, name=f"openflow-{bridge.name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ loop
    def _wake_for_packet_in(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._stop_w, b"p")

    def _run(self) -> None:
        while True:
            try:
                self._iteration()
            except _Stop:
                return
            except Exception:  # a bug must not stop the agent for good: log, go on
                log.exception("openflow %s: agent iteration failed", self.bridge.name)
                time.sleep(0.1)

    def _iteration(self) -> None:
        due = self.flows.due_in()
        timeout = 0.5 if due is None else min(0.5, due)
        for key, _events in self.sel.select(timeout=timeout):
            if key.data == "stop":
                if os.read(self._stop_r, 4096).count(b"x"):
                    raise _Stop
                continue   # a wake-up: controllers, ports or packet-ins
            if key.data == "listen":
                self._accept(self.listener, None)
            elif isinstance(key.data, Controller):
                ctl = key.data
                if ctl.passive:
                    self._accept(ctl.listener, ctl)
                else:
                    self._connected(ctl)
            else:
                self._readable(key.data)
        self._maintain()
        self._deliver_packet_ins()
        while self._calls:
            fn, fut = self._calls.popleft()
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)

    def set_controllers(self, targets: list[tuple[str, float]]) -> None:
        """``Bridge.controller``: ``(target, inactivity probe seconds)`` pairs; applied by the agent thread."""
        self._wanted = list(targets)
        os.write(self._stop_w, b"w")

    def configure(self, fail_mode: str, targets: list[tuple[str, float]], rate_limit: int | None = None,
                  burst_limit: int | None = None) -> None:
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
        with contextlib.suppress(BlockingIOError):
            os.write(self._stop_w, b"w")
        return fut.result(timeout)

    def ports_changed(self) -> None:
        """The bridge's ports changed: recompile the flows' port map, tell the controllers (agent thread)."""
        self._ports_dirty = True
        with contextlib.suppress(BlockingIOError):
            os.write(self._stop_w, b"w")

    def _maintain(self) -> None:
        """Apply a new controller list and fail mode, (re)connect with backoff, probe idle connections,
        follow port changes, expire flows."""
        now = time.monotonic()
        if self._ports_dirty:
            self._ports_dirty = False
            self.flows.refresh_ports()
            self._port_status()
        if now - self._last_expire >= EXPIRE_TICK:
            self._last_expire = now
            for stats, reason in self.flows.expire():
                self._flow_removed(stats, reason)
        if self._wanted is not None:
            wanted, self._wanted = {t: p for t, p in self._wanted}, None
            for target in list(self.controllers):
                if target not in wanted:
                    self._drop_controller(self.controllers.pop(target))
            for target, probe in wanted.items():
                if target not in self.controllers:
                    try:
                        self.controllers[target] = Controller(target, probe or PROBE_INTERVAL)
                    except ValueError as e:
                        log.warning("%s", e)
            self.changed()
        self._apply_mode()
        for ctl in self.controllers.values():
            if ctl.passive and ctl.listener is None and now >= ctl.next_try:
                self._listen(ctl)
            elif not ctl.passive and ctl.conn is None and ctl.pending is None and now >= ctl.next_try:
                self._connect(ctl)
        for conn in list(self.conns.values()):
            if conn.target is None:
                continue
            idle = now - conn.last_rx
            if conn.probe_sent and idle > 2 * conn.target.probe:
                log.warning("openflow %s: no answer to an echo request; reconnecting", conn.peer)
                conn.target.last_error = "inactivity probe timed out"
                self._close(conn)
            elif not conn.probe_sent and idle > conn.target.probe and conn.version:
                conn.probe_sent = now
                with contextlib.suppress(OSError):
                    conn.send(Msg(conn.version, "echo_request", 0, {"data": b""}))
        connected = any(c.conn is not None and c.conn.version for c in self.controllers.values())
        self.flows.set_bypass(self.fail_mode == "standalone" and bool(self.controllers) and not connected)

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
        if old is None or old[1] != has or not has:
            self.flows.reset(default_normal=not has and self.fail_mode == "standalone")
            self.flows.push()

    def _send_async(self, make: Callable[[OfConnection], Msg]) -> None:
        """Send an asynchronous message (built per connection: version, miss_send_len) to every controller."""
        for conn in list(self.conns.values()):
            if conn.is_controller:
                try:
                    conn.send(make(conn))
                except OSError:
                    self._close(conn)

    def _flow_removed(self, stats: Any, reason: int) -> None:
        self._send_async(lambda c: Msg(c.version, "flow_removed", 0, self.flows.flow_removed(c.version, stats, reason)))

    def _port_status(self) -> None:
        """port_status ADD / DELETE / MODIFY for what changed since the last look."""
        now = {p["port_no"]: p for p in self._ports(OFP13)}
        old, self._port_descs = self._port_descs, now
        for no in sorted(set(old) | set(now)):
            if old.get(no) == now.get(no):
                continue
            reason, desc = (0, now[no]) if no not in old else (1, old[no]) if no not in now else (2, now[no])
            self._send_async(lambda c, reason=reason, desc=desc: Msg(c.version, "port_status", 0, {
                "reason": reason, "desc": desc if c.version == OFP13 else self._desc10(desc)}))

    @staticmethod
    def _desc10(desc: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in desc.items() if k not in ("curr_speed", "max_speed")}
        out["port_no"] = port_wire(OFP10, desc["port_no"])
        out["state"] = desc["state"] & 1
        out["curr"] = (desc["curr"] & 0x7F) | (0x80 if desc["curr"] & (1 << 11) else 0)
        return out

    def _deliver_packet_ins(self) -> None:
        """Hand the datapath's packet-ins to the controllers."""
        dp = self.bridge.dp
        while dp.packet_ins:
            pi = dp.packet_ins.popleft()
            in_port = self.flows.ofport_of(pi.port_no)
            self._send_async(lambda c, pi=pi, in_port=in_port: self._packet_in(c, pi, in_port))

    @staticmethod
    def _packet_in(conn: OfConnection, pi: Any, in_port: int) -> Msg:
        if conn.version == OFP13:
            return Msg(OFP13, "packet_in", 0, {"buffer_id": OFP_NO_BUFFER, "total_len": pi.total_len,
                                               "reason": pi.reason, "table_id": pi.table_id, "cookie": pi.flow.cookie,
                                               "match": {"in_port": in_port}, "data": pi.data})
        # OpenFlow 1.0: a table-miss flow's packet-ins are cut to the connection's miss_send_len
        data = pi.data[:conn.miss_send_len] if pi.reason == OFPR_NO_MATCH else pi.data
        return Msg(OFP10, "packet_in", 0, {"buffer_id": OFP_NO_BUFFER, "total_len": pi.total_len,
                                           "in_port": port_wire(OFP10, in_port), "reason": pi.reason, "data": data})

    def _listen(self, ctl: Controller) -> None:
        s = socket.socket(ctl.family(), socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            if ctl.kind == "ptcp":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(ctl.addr)
            s.bind(ctl.addr)
            s.listen(8)
            s.setblocking(False)
        except OSError as e:
            s.close()
            ctl.last_error = e.strerror or str(e)
            ctl.next_try = time.monotonic() + MAX_BACKOFF
            return
        ctl.listener = s
        ctl.state = "ACTIVE"
        self.sel.register(s, selectors.EVENT_READ, ctl)

    def _connect(self, ctl: Controller) -> None:
        s = socket.socket(ctl.family(), socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        s.setblocking(False)
        ctl.state = "CONNECTING"
        err = s.connect_ex(ctl.addr)
        if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
            s.close()
            self._backoff(ctl, os.strerror(err))
            return
        ctl.pending = s
        self.sel.register(s, selectors.EVENT_WRITE, ctl)

    def _connected(self, ctl: Controller) -> None:
        s, ctl.pending = ctl.pending, None
        if s is None:
            return
        self.sel.unregister(s)
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            s.close()
            self._backoff(ctl, os.strerror(err))
            return
        s.setblocking(True)
        self._accept_socket(s, ctl, ctl.target)

    def _backoff(self, ctl: Controller, why: str) -> None:
        ctl.state = "BACKOFF"
        if why != ctl.last_error:
            log.info("openflow %s %s: %s; retrying in %.0f s", self.bridge.name, ctl.target, why, ctl.backoff)
        ctl.last_error = why
        ctl.next_try = time.monotonic() + ctl.backoff
        ctl.backoff = min(MAX_BACKOFF, ctl.backoff * 2)
        self.changed()

    def _drop_controller(self, ctl: Controller) -> None:
        if ctl.conn is not None:
            self._close(ctl.conn)
        for s in (ctl.pending, ctl.listener):
            if s is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self.sel.unregister(s)
                s.close()
        if ctl.kind == "punix":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(ctl.addr)

    def _accept(self, listener: socket.socket | None, ctl: Controller | None) -> None:
        if listener is None:
            return
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(True)
        self._accept_socket(sock, ctl, ctl.target if ctl else f"unix:{self.path}")

    def _accept_socket(self, sock: socket.socket, ctl: Controller | None, peer: str) -> None:
        conn = OfConnection(sock, peer, ctl)
        if ctl is not None:
            if ctl.conn is not None and not ctl.passive:
                sock.close()
                return
            ctl.conn = conn
            ctl.state = "ACTIVE"
            ctl.backoff = 1.0
            ctl.last_error = ""
            ctl.connected_at = time.monotonic()
            log.info("openflow %s: connected to controller %s", self.bridge.name, peer)
            self.changed()
        sock.settimeout(5)
        self.conns[sock.fileno()] = conn
        self.sel.register(sock, selectors.EVENT_READ, conn)
        # we speak first: a hello with every version we support (OpenFlow 1.3's version bitmap element)
        conn.send(Msg(OFP13, "hello", 0, {"elements": [{"type": 1,
                                                        "bitmaps": [_version_bitmap(SUPPORTED_VERSIONS)]}]}))

    def _close(self, conn: OfConnection) -> None:
        self.conns.pop(conn.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(conn.sock)
        conn.sock.close()
        ctl = conn.target
        if ctl is not None and ctl.conn is conn:
            ctl.conn = None
            if not ctl.passive:
                self._backoff(ctl, ctl.last_error or "connection closed")
            self.changed()

    def _readable(self, conn: OfConnection) -> None:
        try:
            data = conn.sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        conn.buf += data
        conn.last_rx = time.monotonic()
        conn.probe_sent = 0.0
        try:
            messages = split(conn.buf)
        except OfpError as e:
            log.warning("openflow %s: %s; closing", conn.peer, e)
            self._close(conn)
            return
        if len(conn.buf) > MAX_RECV:
            self._close(conn)
            return
        for raw in messages:
            try:
                self._handle(conn, raw)
            except OfpError as e:
                conn.error(conn.version or raw[0], int.from_bytes(raw[4:8], "big"), e.err_type, e.code, raw)
            except OSError:
                self._close(conn)
                return
            except Exception:  # a bug must not take the agent (or the switch) down: answer, log, go on
                log.exception("openflow %s: handling a message failed", conn.peer)
                conn.error(conn.version or OFP13, int.from_bytes(raw[4:8], "big"), OFPET_BAD_REQUEST, 0, raw)

    def close(self) -> None:
        """Stop the thread, close every connection, remove the socket."""
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        for ctl in self.controllers.values():
            self._drop_controller(ctl)
        for conn in list(self.conns.values()):
            self._close(conn)
        self.listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
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
        handler = getattr(self, f"_on_{msg.type}", None)
        if handler is None:
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_TYPE, f"{msg.type} not supported")
        handler(conn, msg)

    def _hello(self, conn: OfConnection, raw: bytes) -> None:
        version = raw[0]
        if raw[1] != 0:   # anything before a hello: OpenFlow says fail the negotiation
            conn.error(OFP10, int.from_bytes(raw[4:8], "big"), OFPET_HELLO_FAILED, 0, raw)
            return
        theirs = {version}
        if version >= OFP13:
            try:
                hello = decode(raw) if version in SUPPORTED_VERSIONS else None
            except OfpError:
                hello = None
            for el in (hello.fields.get("elements", []) if hello else []):
                if el["type"] == 1 and el["bitmaps"]:
                    theirs = {v for v in range(32) if el["bitmaps"][0] >> v & 1}
        common = [v for v in SUPPORTED_VERSIONS if v in theirs or (v <= version and len(theirs) == 1)]
        if not common:
            conn.error(min(version, OFP13), int.from_bytes(raw[4:8], "big"), OFPET_HELLO_FAILED, 0,
                       f"no common OpenFlow version (we support 1.0 and 1.3, peer sent 0x{version:02x})".encode())
            self._close(conn)
            return
        conn.version = max(common)
        log.info("openflow %s: negotiated version 0x%02x", conn.peer, conn.version)

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
        self.flows.bulk = time.monotonic() - conn.last_barrier < BULK_GAP
        for stats in self.flows.flow_mod(conn.version, msg):
            self._flow_removed(stats, OFPRR_DELETE)

    def _on_packet_out(self, conn: OfConnection, msg: Msg) -> None:
        if conn.role == ROLE_SLAVE:
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_IS_SLAVE, "a slave controller cannot send packets")
        self.flows.packet_out(conn.version, msg)

    def _on_features_request(self, conn: OfConnection, msg: Msg) -> None:
        caps = OFPC_FLOW_STATS | OFPC_TABLE_STATS | OFPC_PORT_STATS
        fields: dict[str, Any] = {"datapath_id": self.datapath_id(), "n_buffers": 0, "n_tables": N_TABLES,
                                  "capabilities": caps}
        if conn.version == OFP10:
            fields["actions"] = 0xFFF
            fields["ports"] = self._ports(OFP10)
        conn.send(Msg(conn.version, "features_reply", msg.xid, fields))

    def _on_get_config_request(self, conn: OfConnection, msg: Msg) -> None:
        conn.send(Msg(conn.version, "get_config_reply", msg.xid,
                      {"flags": conn.config_flags, "miss_send_len": conn.miss_send_len}))

    def _on_set_config(self, conn: OfConnection, msg: Msg) -> None:
        conn.config_flags = msg.flags
        conn.miss_send_len = msg.miss_send_len

    def controller_status(self) -> dict[str, dict[str, Any]]:
        """Per controller target: ``is_connected``, ``role``, ``status`` (for the ``Controller`` table)."""
        roles = {0: "other", 1: "other", 2: "master", 3: "slave"}
        return {t: {"is_connected": c.conn is not None and bool(c.conn.version),
                    "role": roles.get(c.conn.role if c.conn else 0, "other"), "status": c.status()}
                for t, c in self.controllers.items()}

    def _on_role_request(self, conn: OfConnection, msg: Msg) -> None:
        if msg.role != 0:   # 0 = NOCHANGE
            conn.role = msg.role
        conn.send(Msg(conn.version, "role_reply", msg.xid, {"role": conn.role or 1, "generation_id":
                                                            msg.generation_id}))

    def _on_port_mod(self, conn: OfConnection, msg: Msg) -> None:
        bp = self._port_by_ofport(conn.version, msg.port_no)
        if bp is None:
            raise OfpError(OFPET_PORT_MOD_FAILED, 0, f"port_mod: no port {msg.port_no}")
        if msg.mask & OFPPC_PORT_DOWN:
            self.bridge.set_admin_state(bp.name, not msg.config & OFPPC_PORT_DOWN)
            self._port_status()
            self.changed()

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
            body = self._ports(v)
        elif kind == MP_PORT_STATS:
            want = msg.body.get("port_no", OFPP13_ANY)
            body = [self._port_stats(v, bp) for bp in self._sorted_ports()
                    if want in (OFPP13_ANY, OFPP10_NONE) or self._ofport(v, bp) == want]
        elif kind == MP_TABLE:
            body = self._table_stats(v)
        elif kind == MP_TABLE_FEATURES and v == OFP13:
            # ovs-ofctl looks table names up here; each entry needs the 8 required property headers
            props = b"".join(struct.pack("!HH4x", t, 4) for t in range(0, 16, 2))
            body = [{"table_id": t, "name": f"table{t}", "metadata_match": 0, "metadata_write": 0, "config": 0,
                     "max_entries": 1_000_000, "properties": props} for t in range(N_TABLES)]
        elif kind in (MP_FLOW, MP_AGGREGATE):
            flows = self.flows.flow_stats(v, msg.body)
            if kind == MP_FLOW:
                body = flows
            else:
                body = {"packet_count": sum(f["packet_count"] for f in flows),
                        "byte_count": sum(f["byte_count"] for f in flows), "flow_count": len(flows)}
        else:
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_MULTIPART, f"multipart type {kind}")
        conn.send(Msg(v, reply, msg.xid, {"mp_type": kind, "flags": 0, "body": body}))

    # ------------------------------------------------------------ bridge views
    def _sorted_ports(self) -> list[Any]:
        return sorted(list(self.bridge.ports.values()), key=lambda bp: bp.ofport)

    @staticmethod
    def _ofport(version: int, bp: Any) -> int:
        if bp.ofport == 65534:
            return OFPP13_LOCAL if version == OFP13 else OFPP10_LOCAL
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
                    "state": (0 if up else OFPPS_LINK_DOWN) | (OFPPS13_LIVE if up and version == OFP13 else 0),
                    "curr": OFPPF_10GB_FD | OFPPF_COPPER, "advertised": 0, "supported": 0, "peer": 0}
            if version == OFP13:
                port.update(curr_speed=10_000_000, max_speed=0)
            out.append(port)
        return out

    def _port_stats(self, version: int, bp: Any) -> dict[str, Any]:
        s = self.bridge.port_stats(bp.name)
        out = {"port_no": self._ofport(version, bp), "rx_frame_err": 0, "rx_over_err": 0, "rx_crc_err": 0,
               "collisions": 0}
        for k in ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped", "tx_dropped", "rx_errors",
                  "tx_errors"):
            out[k] = s.get(k, 0)
        if version == OFP13:
            age = time.monotonic() - self._started
            out.update(duration_sec=int(age), duration_nsec=int(age % 1 * 1e9))
        return out

    def _table_stats(self, version: int) -> list[dict[str, Any]]:
        stats = self.flows.table_stats()
        if version == OFP13:
            return [{"table_id": t, "active_count": n, "lookup_count": lookups, "matched_count": matched}
                    for t, n, lookups, matched in stats]
        return [{"table_id": t, "name": f"table{t}", "wildcards": 0x3FFFFF, "max_entries": 1_000_000,
                 "active_count": n, "lookup_count": lookups, "matched_count": matched}
                for t, n, lookups, matched in stats]


def _version() -> str:
    try:
        from importlib.metadata import version

        return f"pyvswitch {version('pyvswitch')}"
    except Exception:  # noqa: BLE001
        return "pyvswitch"
