"""An OpenFlow channel: one connection (``OfConnection``: its output queue, negotiated version, role, asynchronous
configuration and open bundles) and one ``Bridge.controller`` target (``Controller``: address, backoff, status).

The agent (``vswitch.openflow.agent``) owns the sockets' event loop; this module holds what one peer is.
"""

from __future__ import annotations

import collections
import socket
import struct
import time
from typing import TYPE_CHECKING, Any

from vswitch.openflow.codec import (
    NX_VENDOR_ID,
    OFP10,
    OFP13,
    OFP14,
    OFP15,
    ONF_BUNDLE_ERROR_BASE,
    ONF_ET_BUNDLE_CONTROL,
    ONF_VENDOR_ID,
    Msg,
    encode,
    encode_body,
)

if TYPE_CHECKING:
    from vswitch.openflow.bundles import Bundle

#: the versions pyvswitch speaks, newest first
SUPPORTED_VERSIONS = (OFP15, OFP14, OFP13, OFP10)
#: ``Bridge.protocols`` names; OVS (3.1) allows every one of them when the column is empty
PROTOCOLS = {"OpenFlow10": 0x01, "OpenFlow11": 0x02, "OpenFlow12": 0x03, "OpenFlow13": 0x04, "OpenFlow14": 0x05,
             "OpenFlow15": 0x06}
#: asynchronous message kinds, indexes of ``OfConnection.async_masks`` (names as in SET_ASYNC's fields)
ASYNC_PACKET_IN, ASYNC_PORT_STATUS, ASYNC_FLOW_REMOVED = 0, 1, 2
ASYNC_KINDS = ("packet_in", "port_status", "flow_removed")
#: OVS's asynchronous configuration until a controller sends SET_ASYNC: (master/equal, slave) bitmaps by reason.
#: Packet-ins for no-match and action, every port-status, every flow-removed to the master; port-status to slaves.
ASYNC_DEFAULT = ((0b011, 0), (0b111, 0b111), (0b1111, 0))
ROLE_SLAVE = 3
OFPBRC_IS_SLAVE = 10
PROBE_INTERVAL = 5.0      # seconds of silence before an echo request (Controller.inactivity_probe)
MAX_BACKOFF = 8.0         # seconds between connection attempts, at most (Controller.max_backoff)
OFPET_EXPERIMENTER = 0xFFFF
TX_LIMIT = 2 << 20        # bytes queued for a client that does not read them before it is disconnected


def _version_bitmap(versions: tuple[int, ...]) -> int:
    return sum(1 << v for v in versions)


def _names(versions: tuple[int, ...] | set[int]) -> list[str]:
    """``Bridge.protocols`` names of OpenFlow wire versions, oldest first."""
    by_version = {v: name for name, v in PROTOCOLS.items()}
    return [by_version.get(v, f"0x{v:02x}") for v in sorted(versions)]


class OfConnection:
    """One OpenFlow client (ovs-ofctl, a controller) on a non-blocking stream socket, with its output queue."""

    def __init__(self, sock: socket.socket, peer: str, target: Controller | None = None) -> None:
        self.sock = sock
        self.peer = peer
        self.target = target      # the controller this connection serves (None: ovs-ofctl on the mgmt socket)
        self.last_rx = time.monotonic()
        self.probe_sent = 0.0
        self.buf = bytearray()
        self.rxq: collections.deque[bytes] = collections.deque()   # whole messages not handled yet
        self.tx: collections.deque[bytes | memoryview] = collections.deque()   # not yet taken by the socket
        self.tx_bytes = 0
        self.writing = False      # registered for EVENT_WRITE (output is waiting)
        self.dead = ""            # why the connection must be closed ("" while it is fine)
        self.overflowed = False   # closed because the client let its output pile up
        self.version = 0          # negotiated; 0 until the client's hello arrives
        self.miss_send_len = 128 if target is not None else 0   # OVS: a service connection (ovs-ofctl) 0
        self.config_flags = 0
        self.role = 0
        self.connected_at = time.monotonic()
        self.last_barrier = 0.0   # when the last barrier reply went out (bulk flow-mod loads)
        self.pi_dropped = 0       # packet-ins not queued because the controller was behind
        #: per asynchronous message kind, the reasons (bitmaps) it is sent for: (master/equal, slave)
        self.async_masks: list[tuple[int, int]] = list(ASYNC_DEFAULT)
        #: OpenFlow 1.4+ role-status messages, (master/equal, slave) bitmaps by reason (OVS: none until asked)
        self.role_status_mask: tuple[int, int] = (0b111, 0b111)
        self.bundles: dict[int, Bundle] = {}   # open or closed bundles by id (OpenFlow 1.4+)
        self.flow_format = 0          # Nicira's NXT_SET_FLOW_FORMAT: 0 OpenFlow 1.0, 2 NXM
        self.flow_mod_table_id = False   # NXT_FLOW_MOD_TABLE_ID: a 1.0 flow-mod's command carries the table
        self.controller_id = 0        # NXT_SET_CONTROLLER_ID
        self.pin_format = 0           # NXT_SET_PACKET_IN_FORMAT: 0 standard, 2 NXT_PACKET_IN2

    def reply(self, version_type: str, xid: int, fields: dict[str, Any]) -> None:
        """Send a 1.4+ message of type ``version_type``; in OpenFlow 1.3 the bundle replies go as ONF experimenter
        messages."""
        if self.version == OFP13 and version_type == "bundle_control":
            self.send(Msg(OFP13, "experimenter", xid, {"experimenter": ONF_VENDOR_ID, "exp_type": ONF_ET_BUNDLE_CONTROL,
                                                       "data": encode_body(OFP13, version_type, fields)}))
            return
        self.send(Msg(self.version, version_type, xid, fields))

    def send(self, msg: Msg) -> None:
        """Queue one message for the client. It never blocks; a client that lets more than ``TX_LIMIT`` bytes
        pile up is marked dead (the agent closes it)."""
        if self.dead:
            return
        data = encode(msg)
        if self.version and self.target is not None and self.target.snoopers:
            self.target.snoop(data)
        self.tx.append(data)
        self.tx_bytes += len(data)
        if self.flush() or self.tx_bytes <= TX_LIMIT:
            return
        self.dead = f"not reading its messages ({self.tx_bytes} bytes queued, limit {TX_LIMIT})"
        self.overflowed = True

    def flush(self) -> bool:
        """Hand the socket as much queued output as it takes now; True when nothing is left."""
        while self.tx:
            head = self.tx[0]
            try:
                n = self.sock.send(head)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as e:
                self.dead = self.dead or (e.strerror or str(e))
                self.tx.clear()
                self.tx_bytes = 0
                return True
            self.tx_bytes -= n
            if n < len(head):
                self.tx[0] = memoryview(head)[n:]
                return False
            self.tx.popleft()
        return True

    def error(self, version: int, xid: int, err_type: int, code: int, data: bytes, text: bool = False) -> None:
        """An OFPT_ERROR carrying the message it answers (whole, as OVS sends it, up to what fits in one
        message), or (``text``) an explanation
        (1.3 numbers, translated for OpenFlow 1.0). A version we do not speak is answered in the nearest one we
        do."""
        if version not in SUPPORTED_VERSIONS:
            version = OFP10 if version < OFP10 else OFP13 if version < OFP15 else OFP15
        data = data if text else data[:0xFFFF - 24]     # room for the error and Nicira vendor headers
        if err_type == NXET_VENDOR:          # raised as such (``packetin2.nx_error``): (type << 16 | code) in 1.0
            data = struct.pack("!IHH", NX_VENDOR_ID, code >> 16, code & 0xFFFF) + data
            code = 0
        elif version == OFP10:
            err_type, code = _error10(err_type, code)
        if version == OFP10 and code >= 0x100:   # a Nicira extension code: OVS's NXET_VENDOR wrapping of 1.0
            data = struct.pack("!IHH", NX_VENDOR_ID, err_type, code) + data
            err_type, code = NXET_VENDOR, 0
        if err_type == OFPET_EXPERIMENTER:   # the experimenter id comes before the data: ONF's bundle errors
            vendor = ONF_VENDOR_ID if code >= ONF_BUNDLE_ERROR_BASE else NX_VENDOR_ID   # (1.3), else Nicira's
            data = vendor.to_bytes(4, "big") + data
        self.send(Msg(version, "error", xid, {"err_type": err_type, "code": code, "data": data}))

    def wants(self, kind: int, reason: int) -> bool:
        """Whether this connection takes an asynchronous message of ``kind`` (``ASYNC_*``) with ``reason``:
        controllers, and service connections that set a miss_send_len, as their role and SET_ASYNC configuration
        say."""
        if not self.version or self.dead or self.target is None and not self.miss_send_len:
            return False   # a service connection takes them once it set a miss_send_len (ovs-ofctl monitor), as OVS
        return bool(self.async_masks[kind][1 if self.role == ROLE_SLAVE else 0] >> reason & 1)


#: OpenFlow 1.0 has no experimenter errors: OVS sends Nicira's in an error of this type (NXVC_VENDOR_ERROR)
NXET_VENDOR = 0xB0C2


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
    if err_type == 9:               # queue op failed (bad port, bad queue): 1.0's type 5
        return 5, code
    if err_type in (3, 4, 5):       # bad instruction, bad match, other flow-mod failures: unsupported
        return 3, 5
    if err_type == 0xFFFF and 16 <= code <= 21:   # Nicira's TLV-table errors: OVS's 1.0 numbers
        return 1, 511 + code
    if err_type == 0xFFFF and code == 15:         # NXBAC_BAD_CONJUNCTION: OVS's 1.0 number
        return 2, 526
    return err_type, code


def _numeric_family(host: str) -> int | None:
    """``AF_INET`` / ``AF_INET6`` when ``host`` is an IP address (no name lookup needed), else None."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family
    return None


def _port_number(text: str, target: str) -> int:
    if not text:
        return 6653
    if not text.isdigit() or int(text) > 65535:
        raise ValueError(f"controller target {target!r}: bad port {text!r}")
    return int(text)


class Controller:
    """One ``Bridge.controller`` target: ``tcp:HOST[:PORT]`` / ``unix:PATH`` (we connect, with backoff; a host
    name is looked up off the agent thread) or ``ptcp:[PORT][:IP]`` / ``punix:PATH`` (we listen)."""

    def __init__(self, target: str, inactivity_probe: float = PROBE_INTERVAL,
                 max_backoff: float = MAX_BACKOFF) -> None:
        self.target = target
        self.probe = inactivity_probe
        self.max_backoff = max(1.0, max_backoff)
        kind, _, rest = target.partition(":")
        if kind not in ("tcp", "unix", "ptcp", "punix") or not rest and kind != "ptcp":
            raise ValueError(f"controller target {target!r}: use tcp:IP:PORT, unix:PATH, ptcp:PORT[:IP] or "
                             f"punix:PATH")
        self.kind = kind
        self.passive = kind.startswith("p")
        if kind == "tcp":
            if rest.startswith("["):                        # tcp:[IPv6]:PORT
                host, _, tail = rest[1:].partition("]")
                port = tail[1:] if tail.startswith(":") else tail
            elif rest.count(":") == 1:
                host, port = rest.split(":")
            else:                                           # tcp:HOST, or a bare IPv6 address
                host, port = rest, ""
            self.addr: Any = (host or "127.0.0.1", _port_number(port, target))
        elif kind == "ptcp":
            port, _, host = rest.partition(":")
            host = host.strip("[]") or "0.0.0.0"
            if _numeric_family(host) is None:
                raise ValueError(f"controller target {target!r}: ptcp needs an IP address to listen on")
            self.addr = (host, _port_number(port, target))
        else:
            self.addr = rest
        self.conn: OfConnection | None = None
        self.listener: socket.socket | None = None
        self.pending: socket.socket | None = None   # a non-blocking connect in progress
        self.resolving = False    # a name lookup for this target is running on a resolver thread
        self.attempt_at = 0.0     # when the current non-blocking connect started
        self.backoff = 1.0        # seconds to wait after the next failure (doubles up to max_backoff)
        self.next_try = 0.0
        self.state = "BACKOFF"
        self.last_error = ""
        self.logged_error = ""    # the error already in the log (each error is logged once, not per attempt)
        self.connected_at = 0.0
        self.disconnected_at = 0.0
        self.created_at = time.monotonic()
        self.last_admitted = 0.0  # when a negotiated connection last heard from the controller before it closed
        self.snoopers: list[Any] = []   # ``snoop.Snooper``s copied every message to and from this controller

    def snoop(self, data: bytes) -> None:
        """Copy one message (either way) to the snoopers of this controller (``ovs-ofctl snoop``)."""
        for s in self.snoopers:
            s.copy(data)

    def family(self) -> int:
        """The address family to listen on (passive targets)."""
        if self.kind in ("unix", "punix"):
            return socket.AF_UNIX
        return _numeric_family(self.addr[0]) or socket.AF_INET

    def status(self) -> dict[str, str]:
        """``Controller.status`` with OVS's keys: ``state``, ``last_error``, ``sec_since_connect``,
        ``sec_since_disconnect``."""
        now = time.monotonic()
        out = {"state": self.state}
        if self.last_error:
            out["last_error"] = self.last_error
        if self.connected_at:
            out["sec_since_connect"] = str(int(now - self.connected_at))
        if self.disconnected_at:
            out["sec_since_disconnect"] = str(int(now - self.disconnected_at))
        return out
