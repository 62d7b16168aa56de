"""vhost-user ports: virtio-net guests (QEMU, DPDK virtio_user) over shared memory.

```
  front-end (QEMU / virtio_user)           VhostUserPort
  ──────────────────────────────          ───────────────────────────────────────────────────────
   unix socket  ◄──── messages ────►  protocol thread: features, memory table (GuestMemory),
                                        ring sizes/addresses/bases, kick/call fds ─┐ (under the port lock)
   guest memory (memfd / hugepages) ◄─── mmap ─────────────────────────────────────┤
   TX ring (queue 1) ──────────────────► rx_burst:  vq_dequeue (numba) ──► pool    ▼
   RX ring (queue 0) ◄────────────────── tx_burst:  vq_enqueue (numba) ◄── pool   vq / regions arrays
   kick eventfd (queue 1) ─► the port's epoll fd (wakeup_fds) ─► datapath
   call eventfds ◄──────── written by the kernels, once per burst, per EVENT_IDX
```

``dpdkvhostuser``: the port listens at ``socket_path`` (the daemon uses ``<rundir>/<name>``)
and serves one front-end at a time. ``dpdkvhostuserclient``: the port connects to
``socket_path`` (``options:vhost-server-path``) and reconnects whenever the connection
drops, so either side can restart.

The protocol thread and the datapath share the queue state through a lock that the datapath
only *tries* (it never waits on the control side: a burst that finds it taken moves nothing).
A guest that breaks the virtio rules gets its connection reset, ``error`` set and a named
counter incremented; a disconnect unmaps all guest memory and closes every fd, and the next
connection starts from nothing. Nothing a guest sends can stop the datapath: kick, call and
error fds must be eventfds (checked when received, made non-blocking), and a memory file that
shrinks under the switch is survived (``memguard``) and resets only that guest's port.

A guest shares its eventfds' file status flags with the switch, so it can clear ``O_NONBLOCK``
again after sending them. The kernels therefore never wait on a guest's fd by themselves: kicks
are read with ``RWF_NOWAIT``, the TX ring's "look again" goes to the port's own eventfd, and a
write to a call eventfd that the guest made blocking and filled is broken by a watchdog
(``INTERRUPT_SIGNAL`` after ``WATCHDOG_PERIOD``): that guest's port is reset and takes its next
session only after a back-off that doubles each time (``BLOCKED_BACKOFF``).
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import errno
import logging
import os
import select
import signal
import socket
import stat
import struct
import threading
import time
import weakref

import numba
import numpy as np

from backends import memguard
from backends.guestmem import GuestMemory, GuestMemoryError, Region
from backends.pool import PacketPool
from backends.port import PORT_COUNTERS, PORT_RESETS, TX_DROPPED, TX_QUEUE_FULL, PortError, StatePort
from backends.virtq import (
    F_ADDRESS,
    F_BLOCKED,
    F_MEMORY,
    FAULT_COUNTER,
    FAULT_NAMES,
    MAX_QUEUE_SIZE,
    Q_AVAIL,
    Q_CALL_FD,
    Q_DESC,
    Q_KICK_FD,
    Q_KICKS_ON,
    Q_LAST_AVAIL,
    Q_READY,
    Q_SIZE,
    Q_USED,
    Q_USED_IDX,
    RX_QUEUE,
    S_BUSY,
    S_CALLS,
    S_EVENT_IDX,
    S_FAULT,
    S_FAULT_QUEUE,
    S_FAULT_VALUE,
    S_GUEST_FD_BUSY,
    S_GUEST_FD_SEQ,
    S_GUEST_FD_THREAD,
    S_HDR_LEN,
    S_HEADROOM,
    S_INDIRECT,
    S_MRG_RXBUF,
    S_NREGIONS,
    S_PORT_NO,
    S_RX_MAX,
    S_RX_START,
    S_SELF_KICK_FD,
    S_SELF_KICKED,
    S_TX_COUNT,
    S_TX_START,
    STATE_WORDS,
    TX_QUEUE,
    VQ_WORDS,
    VRING_USED_F_NO_NOTIFY,
    WORK_ROWS,
    vq_dequeue,
    vq_enqueue,
)

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- protocol constants (vhost-user.rst)
GET_FEATURES = 1
SET_FEATURES = 2
SET_OWNER = 3
RESET_OWNER = 4
SET_MEM_TABLE = 5
SET_LOG_BASE = 6
SET_LOG_FD = 7
SET_VRING_NUM = 8
SET_VRING_ADDR = 9
SET_VRING_BASE = 10
GET_VRING_BASE = 11
SET_VRING_KICK = 12
SET_VRING_CALL = 13
SET_VRING_ERR = 14
GET_PROTOCOL_FEATURES = 15
SET_PROTOCOL_FEATURES = 16
GET_QUEUE_NUM = 17
SET_VRING_ENABLE = 18
SEND_RARP = 19
NET_SET_MTU = 20
REQUEST_NAMES = {v: k for k, v in dict(globals()).items() if isinstance(v, int) and k.isupper() and 1 <= v <= 20
                 and k[:3] in ("GET", "SET", "RES", "SEN", "NET")}

HEADER = struct.Struct("<III")       # request, flags, payload size
FLAG_VERSION = 0x1
FLAG_REPLY = 0x4
FLAG_NEED_REPLY = 0x8
VRING_NOFD = 0x100
VRING_INDEX_MASK = 0xFF
MAX_PAYLOAD = 4096
MAX_FDS = 8

# virtio feature bits
VIRTIO_NET_F_MTU = 3
VIRTIO_NET_F_MRG_RXBUF = 15
VIRTIO_F_ANY_LAYOUT = 27
VIRTIO_RING_F_INDIRECT_DESC = 28
VIRTIO_RING_F_EVENT_IDX = 29
VHOST_USER_F_PROTOCOL_FEATURES = 30
VIRTIO_F_VERSION_1 = 32
OFFERED_FEATURES = sum(1 << b for b in (
    VIRTIO_NET_F_MTU, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_F_ANY_LAYOUT, VIRTIO_RING_F_INDIRECT_DESC,
    VIRTIO_RING_F_EVENT_IDX, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_VERSION_1))

# protocol feature bits
PROTOCOL_F_MQ = 0
PROTOCOL_F_REPLY_ACK = 3
PROTOCOL_F_NET_MTU = 4
OFFERED_PROTOCOL_FEATURES = (1 << PROTOCOL_F_MQ) | (1 << PROTOCOL_F_REPLY_ACK) | (1 << PROTOCOL_F_NET_MTU)

N_QUEUES = 2                  # one queue pair
RECONNECT_INTERVAL = 0.25     # client mode: seconds between connection attempts
WORK_SIZE = 1024              # frames read ahead per burst (>= the datapath's largest burst)
BUSY_FRAMES = 32              # a dequeue this large stops guest kicks (the datapath busy-polls then)
WATCHDOG_PERIOD = 0.05        # seconds: a syscall on a guest's eventfd running longer than this is broken into
INTERRUPT_SIGNAL = signal.SIGRTMIN + 3    # its handler does nothing and does not restart the syscall (EINTR)
BLOCKED_BACKOFF = (1.0, 60.0)  # seconds before a port whose guest blocked the switch takes a session: first, most
LOG_RATE = (5.0, 20)          # a port logs what its guests do at most this many lines a second (and burst)


class ProtocolError(Exception):
    """The front-end sent something the protocol does not allow; the connection is dropped."""


class _Refused(Exception):
    """A request we answer with a failure (REPLY_ACK) but that does not end the session."""


def _interrupt_handler():  # noqa: ANN202 - a numba cfunc
    """The handler of ``INTERRUPT_SIGNAL``: it does nothing, the signal only interrupts the syscall (cached)."""

    @numba.cfunc(numba.types.void(numba.types.intc), nopython=True, cache=True)
    def on_interrupt(signo):  # noqa: ANN001, ANN202
        pass

    return on_interrupt


class _Watchdog:
    """Breaks a thread out of a syscall that a guest's eventfd keeps waiting (see the module docstring).

    The kernels mark each syscall on a guest's fd in the port's state (``S_GUEST_FD_*``); the same
    one still running a period later gets ``INTERRUPT_SIGNAL``, returns EINTR, and the kernel
    records ``F_BLOCKED``. One thread for the process, started with the first port (or ``warm_up``).
    """

    def __init__(self) -> None:
        self._ports: weakref.WeakSet[VhostUserPort] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._handler = None      # keeps the compiled signal handler alive

    def start(self) -> None:
        """Install the signal handler and start the thread, once."""
        with self._lock:
            if self._thread is not None:
                return
            on_interrupt = _interrupt_handler()
            libc = ctypes.CDLL(None, use_errno=True)
            libc.sigaction.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
            action = (ctypes.c_uint8 * 152)()      # struct sigaction: handler, empty mask, flags 0 (no SA_RESTART)
            ctypes.c_uint64.from_buffer(action, 0).value = on_interrupt.address
            if libc.sigaction(int(INTERRUPT_SIGNAL), ctypes.addressof(action), None) != 0:
                raise OSError(ctypes.get_errno(), "sigaction failed")
            self._handler = on_interrupt
            self._thread = threading.Thread(target=self._run, name="vhost-watchdog", daemon=True)
            self._thread.start()

    def watch(self, port: VhostUserPort) -> None:
        """Watch ``port`` until it is garbage."""
        self.start()
        with self._lock:
            self._ports.add(port)

    def _run(self) -> None:
        seen: dict[int, int] = {}
        while True:
            time.sleep(WATCHDOG_PERIOD)
            with self._lock:
                ports = list(self._ports)
            for port in ports:
                st = port._st
                seq = int(st[S_GUEST_FD_SEQ])
                if st[S_GUEST_FD_BUSY] and seen.get(id(port)) == seq:
                    log.warning("vhost-user port %s: a guest's eventfd blocks the switch; breaking in", port.name)
                    thread = int(st[S_GUEST_FD_THREAD])
                    if st[S_GUEST_FD_BUSY] and int(st[S_GUEST_FD_SEQ]) == seq:    # still that same syscall
                        with contextlib.suppress(OSError, ValueError):
                            signal.pthread_kill(thread, INTERRUPT_SIGNAL)
                seen[id(port)] = seq


_watchdog = _Watchdog()


class _LogLimit:
    """Rate-limited logging for what a guest makes a port say: a guest must not fill the switch's log.

    At most ``LOG_RATE[0]`` lines a second, bursts of ``LOG_RATE[1]``; what is over is counted
    and the count logged with the next line that passes (as OVS's rate-limited VLOG does).
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._tokens = float(LOG_RATE[1])
        self._t = time.monotonic()
        self._dropped = 0
        self._lock = threading.Lock()

    def __call__(self, level: int, fmt: str, *args: object) -> None:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(float(LOG_RATE[1]), self._tokens + (now - self._t) * LOG_RATE[0])
            self._t = now
            if self._tokens < 1:
                self._dropped += 1
                return
            self._tokens -= 1
            dropped, self._dropped = self._dropped, 0
        if dropped:
            log.warning("vhost-user port %s: %d log messages about its guests suppressed (rate limit)", self._name,
                        dropped)
        log.log(level, fmt, *args)


def _require_eventfd(fd: int, what: str) -> None:
    """Refuse any fd but an eventfd (a pipe or socket could block the datapath or pin the session); set O_NONBLOCK."""
    try:
        kind = os.readlink(f"/proc/self/fd/{fd}")
    except OSError as e:
        raise ProtocolError(f"{what}: unusable fd ({e.strerror})") from e
    if kind != "anon_inode:[eventfd]":
        raise ProtocolError(f"{what}: the fd is {kind}, not an eventfd")
    os.set_blocking(fd, False)


class _Ring:
    """What the front-end told us about one virtqueue."""

    def __init__(self) -> None:
        self.num = 0
        self.desc = self.avail = self.used = -1
        self.base = 0
        self.kick_fd = -1
        self.kick_nofd = False
        self.call_fd = -1
        self.err_fd = -1
        self.started = False
        self.enabled = False

    def close_fds(self) -> None:
        for attr in ("kick_fd", "call_fd", "err_fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, attr, -1)


def warm_up() -> None:
    """Load (or compile) the virtqueue kernels with a port's argument types, the bus-error guard and the watchdog."""
    memguard.warm_up()
    _watchdog.start()
    pool = PacketPool(1, 64)
    one = np.zeros(1, dtype=np.int32)
    st = np.zeros(STATE_WORDS, dtype=np.int64)
    vq = np.zeros((N_QUEUES, VQ_WORDS), dtype=np.int64)
    vq[:, Q_CALL_FD] = vq[:, Q_KICK_FD] = -1
    e = np.zeros(16, dtype=np.uint8)
    regions = np.zeros((8, 4), dtype=np.int64)
    work = np.zeros((WORK_ROWS, WORK_SIZE), dtype=np.int64)
    mem = (e, e.view(np.uint16), e.view(np.uint32), e.view(np.uint64))
    vq_dequeue(st, vq, regions, *mem, work, pool.data, pool.meta, pool.free_stack, pool.free_top, one)
    vq_enqueue(st, vq, regions, *mem, work, pool.data, pool.meta, one, one)


class VhostUserPort(StatePort):
    """A vhost-user port: ``dpdkvhostuser`` (we listen) or, with ``client=True``, ``dpdkvhostuserclient``.

    ``VhostUserPort(name, *, socket_path, client=False)``: ``socket_path`` is where we listen
    (server) or the front-end listens (client).
    """

    type = "dpdkvhostuser"
    PORT_NO_WORD = S_PORT_NO

    def __init__(self, name: str, *, socket_path: str, client: bool = False) -> None:
        self._st = np.zeros(STATE_WORDS, dtype=np.int64)
        super().__init__(name)
        self.counters = self._st[:PORT_COUNTERS]
        self._st[S_BUSY] = BUSY_FRAMES
        self._vq = np.zeros((N_QUEUES, VQ_WORDS), dtype=np.int64)
        self._vq[:, Q_CALL_FD] = -1
        self._vq[:, Q_KICK_FD] = -1
        self.client = client
        self.socket_path = os.path.abspath(socket_path)
        if len(self.socket_path.encode()) >= 108:
            raise PortError(f"vhost-user port {name}: socket path {self.socket_path} is longer than 107 bytes")
        self._lock = threading.Lock()
        self._mem: GuestMemory | None = None
        self._regions = np.zeros((8, 4), dtype=np.int64)
        self._work = np.zeros((WORK_ROWS, WORK_SIZE), dtype=np.int64)
        self._rings = [_Ring() for _ in range(N_QUEUES)]
        self._conn: socket.socket | None = None
        self._listener: socket.socket | None = None
        self.features = 0
        self.protocol_features = 0
        self.mtu = 0
        self._error = ""
        self._link = False
        self._poll_fd = os.eventfd(1, os.EFD_NONBLOCK | os.EFD_CLOEXEC)   # always readable: a polled (no-fd) kick
        self._self_kick = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)  # ours: the kernel's "look again"
        self._st[S_SELF_KICK_FD] = self._self_kick
        self._epoll = select.epoll()
        self._epoll.register(self._self_kick, select.EPOLLIN)
        self._blocked_resets = 0
        self._backoff_until = 0.0
        self._say = _LogLimit(name)
        self._kick_registered = -1
        self._stop_r, self._stop_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._closed = False
        self._bus_errors_seen = int(memguard.TOTAL[0])
        self._connect_error = ""
        try:
            if client and os.path.isdir(self.socket_path):
                raise PortError(f"vhost-user port {name}: {self.socket_path} is a directory, not the front-end's "
                                "socket (options:vhost-server-path names the socket itself)")
            if not client:
                self._listen()
        except BaseException:
            self._release()
            raise
        warm_up()
        _watchdog.watch(self)
        self._thread = threading.Thread(target=self._serve, name=f"vhost-{name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ Port interface (datapath thread)


    def rx_burst(self, pool: PacketPool, burst: np.ndarray, start: int, max_n: int) -> int:
        """Frames the guest transmitted, up to ``max_n``, into fresh pool slots; never blocks."""
        mem = self._mem
        if mem is None or not self._vq[TX_QUEUE, Q_READY] or not self._lock.acquire(blocking=False):
            return 0
        try:
            mem = self._mem
            if mem is None:
                return 0
            st = self._st
            st[S_RX_START] = start
            st[S_RX_MAX] = max_n
            st[S_HEADROOM] = pool.headroom
            n = vq_dequeue(st, self._vq, self._regions, mem.mem, mem.m16, mem.m32, mem.m64, self._work,
                           pool.data, pool.meta, pool.free_stack, pool.free_top, burst)
            if st[S_FAULT] or memguard.TOTAL[0] != self._bus_errors_seen:
                self._on_fault()
            return n
        finally:
            self._lock.release()

    def tx_burst(
        self, pool: PacketPool, slots: np.ndarray, vlans: np.ndarray, start: int, count: int
    ) -> int:
        """Copy ``slots[start:start+count]`` (with egress VLAN edits) into the guest's receive ring."""
        st = self._st
        if self._mem is None or not self._vq[RX_QUEUE, Q_READY] or not self._lock.acquire(blocking=False):
            st[TX_DROPPED] += count
            st[TX_QUEUE_FULL] += count
            return 0
        try:
            mem = self._mem
            if mem is None:
                st[TX_DROPPED] += count
                st[TX_QUEUE_FULL] += count
                return 0
            st[S_TX_START] = start
            st[S_TX_COUNT] = count
            n = vq_enqueue(st, self._vq, self._regions, mem.mem, mem.m16, mem.m32, mem.m64, self._work,
                           pool.data, pool.meta, slots, vlans)
            if st[S_FAULT] or memguard.TOTAL[0] != self._bus_errors_seen:
                self._on_fault()
            return n
        finally:
            self._lock.release()

    def set_busy_frames(self, n: int) -> None:
        """Guest kicks stop after a dequeue of ``n`` frames or more (the datapath busy-polls from there)."""
        self._st[S_BUSY] = n

    def wakeup_fds(self) -> list[int]:
        """The port's epoll fd: readable when the guest kicked its transmit ring (or the ring is polled)."""
        return [self._epoll.fileno()]

    def _on_fault(self) -> None:
        """A kernel found a violation or guest memory shrank (caller holds the lock): count it, say why, reset."""
        st = self._st
        shrunk = ""
        if memguard.TOTAL[0] != self._bus_errors_seen:
            self._bus_errors_seen = int(memguard.TOTAL[0])
            mem = self._mem
            shrunk = mem.faulted() if mem is not None else ""
        if shrunk:   # reads of the lost pages gave zeros: whatever the kernels made of them is moot
            st[S_FAULT] = F_MEMORY
            self._vq[:, Q_READY] = 0
        if not st[S_FAULT]:
            return
        code, q, value = int(st[S_FAULT]), int(st[S_FAULT_QUEUE]), int(st[S_FAULT_VALUE])
        st[S_FAULT] = 0
        st[FAULT_COUNTER[code]] += 1
        st[PORT_RESETS] += 1
        what = f"0x{value & 0xFFFFFFFFFFFFFFFF:x}" if code == F_ADDRESS else str(value)
        if shrunk:
            self._error = f"vhost-user port {self.name}: {shrunk}; port reset"
        elif code == F_BLOCKED:
            backoff = min(BLOCKED_BACKOFF[0] * 2 ** self._blocked_resets, BLOCKED_BACKOFF[1])
            self._blocked_resets += 1
            self._backoff_until = time.monotonic() + backoff
            self._error = (f"vhost-user port {self.name}: guest broke the rules on vring {q} ({FAULT_NAMES[code]}: "
                           f"fd {value}); port reset, next session in {backoff:.0f} s")
        else:
            self._error = (f"vhost-user port {self.name}: guest broke the virtio rules on vring {q} "
                           f"({FAULT_NAMES[code]}: {what}); port reset")
        self._say(logging.WARNING, "%s", self._error)
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)   # the protocol thread sees EOF and tears the session down
        self._link = False
        self.changed()

    # ------------------------------------------------------------ state for the daemon
    @property
    def error(self) -> str:
        """The last reset's reason (cleared when a new session brings the rings up)."""
        return self._error

    @property
    def link_up(self) -> bool:
        """True while a front-end is connected and its driver runs both rings."""
        return self._link

    def status(self) -> dict[str, str]:
        """``Interface.status`` as OVS writes it for vhost-user ports."""
        out = {"mode": "client" if self.client else "server", "socket": self.socket_path,
               "status": "connected" if self._conn is not None else "disconnected"}
        if self._conn is not None:
            rings = [r for r in self._rings if r.num]
            out["features"] = f"0x{self.features:016x}"
            out["num_of_vrings"] = str(len(rings))
            for i, r in enumerate(self._rings):
                if r.num:
                    out[f"vring_{i}_size"] = str(r.num)
            if self.mtu:
                out["mtu"] = str(self.mtu)
        return out

    def stats(self) -> dict[str, int]:
        """Port counters plus the number of guest notifications sent."""
        out = super().stats()
        out["guest_notifications"] = int(self._st[S_CALLS])
        return out

    # ------------------------------------------------------------ connection handling (protocol thread)
    def _listen(self) -> None:
        path = self.socket_path
        if not os.path.isdir(os.path.dirname(path)):
            raise PortError(f"vhost-user port {self.name}: directory {os.path.dirname(path)} does not exist")
        if os.path.exists(path):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise PortError(f"vhost-user port {self.name}: {path} exists and is not a socket")
            os.unlink(path)   # a stale socket from an earlier run
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            s.bind(path)
            s.listen(4)
        except OSError as e:
            s.close()
            raise PortError(f"vhost-user port {self.name}: cannot listen on {path}: {e.strerror}") from e
        self._listener = s

    def _wait_readable(self, fd: int, timeout: float | None = None) -> bool:
        """Block until ``fd`` is readable (True) or the port is closing / the timeout passes (False)."""
        r, _, _ = select.select([fd, self._stop_r], [], [], timeout)
        return fd in r and self._stop_r not in r

    def _next_connection(self) -> socket.socket | None:
        if self._listener is not None:
            if not self._wait_readable(self._listener.fileno()):
                return None
            conn, _ = self._listener.accept()
            return conn
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            s.connect(self.socket_path)
            self._connect_error = ""
            return s
        except OSError as e:
            s.close()
            # No front-end yet (no socket, or nobody listening) is normal; anything else is the user's to fix.
            why = f"vhost-user port {self.name}: cannot connect to {self.socket_path}: {e.strerror}"
            if e.errno in (errno.ENOENT, errno.ECONNREFUSED):
                try:
                    why = "" if stat.S_ISSOCK(os.stat(self.socket_path).st_mode) else \
                        f"vhost-user port {self.name}: {self.socket_path} is not a socket (options:vhost-server-path)"
                except FileNotFoundError:
                    why = ""
            if why != self._connect_error:
                self._connect_error = self._error = why
                if why:
                    log.warning("%s", why)
                self.changed()
            self._wait_readable(self._stop_r, RECONNECT_INTERVAL)
            return None

    def _serve(self) -> None:
        """The protocol thread: one front-end session after another until the port closes."""
        while not self._closed:
            backoff = self._backoff_until - time.monotonic()
            if backoff > 0:       # the last guest blocked the switch: the next one waits
                self._wait_readable(self._stop_r, backoff)
                continue
            try:
                conn = self._next_connection()
            except OSError as e:
                self._say(logging.WARNING, "vhost-user port %s: %s", self.name, e)
                time.sleep(RECONNECT_INTERVAL)
                continue
            if conn is None:
                continue
            self._say(logging.INFO, "vhost-user port %s: front-end connected (%s)", self.name, self.socket_path)
            self._conn = conn
            self.changed()
            reason = "front-end closed the connection"
            try:
                while not self._closed:
                    if not self._wait_readable(conn.fileno()):
                        reason = "port closed"
                        break
                    msg = self._recv(conn)
                    if msg is None:
                        break
                    self._handle(conn, *msg)
                    if memguard.TOTAL[0] != self._bus_errors_seen:   # the handler touched shrunk memory
                        with self._lock:
                            self._on_fault()
            except ProtocolError as e:
                reason = str(e)
                self._error = f"vhost-user port {self.name}: protocol error: {e}; connection closed"
                self._say(logging.WARNING, "%s", self._error)
            except OSError as e:
                reason = e.strerror or str(e)
            finally:
                self._end_session(conn, reason)

    def _recv(self, conn: socket.socket) -> tuple[int, int, bytes, list[int]] | None:
        """One message: ``(request, flags, payload, fds)``, or None at end of stream."""
        fds = array.array("i")
        try:
            head, anc, _flags, _addr = conn.recvmsg(HEADER.size, socket.CMSG_SPACE(MAX_FDS * fds.itemsize),
                                                    socket.MSG_CMSG_CLOEXEC)
        except ConnectionResetError:
            return None
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        fd_list = list(fds)
        if not head:
            self._close_fds(fd_list)
            return None
        try:
            while len(head) < HEADER.size:
                more = conn.recv(HEADER.size - len(head))
                if not more:
                    raise ProtocolError("truncated message header")
                head += more
            request, flags, size = HEADER.unpack(head)
            if flags & 0x3 != FLAG_VERSION:
                raise ProtocolError(f"unsupported protocol version {flags & 0x3}")
            if size > MAX_PAYLOAD:
                raise ProtocolError(f"message {request} has a {size}-byte payload (at most {MAX_PAYLOAD})")
            payload = b""
            while len(payload) < size:
                more = conn.recv(size - len(payload))
                if not more:
                    raise ProtocolError("truncated message payload")
                payload += more
        except BaseException:
            self._close_fds(fd_list)
            raise
        return request, flags, payload, fd_list

    @staticmethod
    def _close_fds(fds: list[int]) -> None:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _reply(self, conn: socket.socket, request: int, payload: bytes) -> None:
        conn.sendall(HEADER.pack(request, FLAG_VERSION | FLAG_REPLY, len(payload)) + payload)

    # ------------------------------------------------------------ messages
    def _handle(self, conn: socket.socket, request: int, flags: int, payload: bytes, fds: list[int]) -> None:
        name = REQUEST_NAMES.get(request, str(request))
        log.debug("vhost-user port %s: %s (%d bytes, %d fds)", self.name, name, len(payload), len(fds))
        reply: bytes | None = None
        ok = True
        try:
            if request == GET_FEATURES:
                reply = struct.pack("<Q", OFFERED_FEATURES)
            elif request == GET_PROTOCOL_FEATURES:
                reply = struct.pack("<Q", OFFERED_PROTOCOL_FEATURES)
            elif request == GET_QUEUE_NUM:
                reply = struct.pack("<Q", 1)
            elif request == GET_VRING_BASE:
                index, _ = self._unpack("<II", payload, name)
                reply = struct.pack("<II", index, self._stop_ring(self._ring_index(index)))
            elif request == SET_FEATURES:
                (features,) = self._unpack("<Q", payload, name)
                self._set_features(features)
            elif request == SET_PROTOCOL_FEATURES:
                (pf,) = self._unpack("<Q", payload, name)
                self.protocol_features = pf & OFFERED_PROTOCOL_FEATURES
            elif request == SET_OWNER:
                pass
            elif request == RESET_OWNER:
                self._reset_session()
            elif request == SET_MEM_TABLE:
                owned, fds = fds, []
                self._set_mem_table(payload, owned)
            elif request == SET_VRING_NUM:
                index, num = self._unpack("<II", payload, name)
                ring = self._rings[self._ring_index(index)]
                if not 1 <= num <= MAX_QUEUE_SIZE or num & (num - 1):
                    raise ProtocolError(f"vring {index}: size {num} is not a power of two in 1..{MAX_QUEUE_SIZE}")
                ring.num = num
            elif request == SET_VRING_ADDR:
                index, _flags, desc, used, avail, _log = self._unpack("<IIQQQQ", payload, name)
                ring = self._rings[self._ring_index(index)]
                ring.desc, ring.used, ring.avail = desc, used, avail
                self._apply()
            elif request == SET_VRING_BASE:
                index, base = self._unpack("<II", payload, name)
                self._rings[self._ring_index(index)].base = base & 0xFFFF
            elif request in (SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR):
                owned, fds = fds, []
                self._set_vring_fd(request, payload, owned, name)
            elif request == SET_VRING_ENABLE:
                index, enable = self._unpack("<II", payload, name)
                self._rings[self._ring_index(index)].enabled = bool(enable)
                self._apply()
            elif request == NET_SET_MTU:
                (mtu,) = self._unpack("<Q", payload, name)
                if not 68 <= mtu <= 65535:
                    raise ProtocolError(f"MTU {mtu} outside 68..65535")
                self.mtu = mtu
                self.changed()
            else:
                self._say(logging.INFO, "vhost-user port %s: ignoring unsupported request %s", self.name, name)
                ok = False
        except _Refused as e:
            self._say(logging.WARNING, "vhost-user port %s: %s refused: %s", self.name, name, e)
            ok = False
        finally:
            self._close_fds(fds)
        if reply is not None:
            self._reply(conn, request, reply)
        elif flags & FLAG_NEED_REPLY and self.protocol_features & (1 << PROTOCOL_F_REPLY_ACK):
            self._reply(conn, request, struct.pack("<Q", 0 if ok else 1))

    @staticmethod
    def _unpack(fmt: str, payload: bytes, name: str) -> tuple[int, ...]:
        size = struct.calcsize(fmt)
        if len(payload) < size:
            raise ProtocolError(f"{name}: {len(payload)}-byte payload, {size} expected")
        return struct.unpack_from(fmt, payload)

    @staticmethod
    def _ring_index(index: int) -> int:
        if not 0 <= index < N_QUEUES:
            raise _Refused(f"vring {index} does not exist (one queue pair: vrings 0 and 1)")
        return index

    def _set_features(self, features: int) -> None:
        if features & ~OFFERED_FEATURES:
            raise ProtocolError(f"features 0x{features:x} include ones never offered (0x{OFFERED_FEATURES:x})")
        self.features = features
        with self._lock:
            st = self._st
            st[S_HDR_LEN] = 12 if features & (1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_NET_F_MRG_RXBUF) else 10
            st[S_MRG_RXBUF] = bool(features & (1 << VIRTIO_NET_F_MRG_RXBUF))
            st[S_EVENT_IDX] = bool(features & (1 << VIRTIO_RING_F_EVENT_IDX))
            st[S_INDIRECT] = bool(features & (1 << VIRTIO_RING_F_INDIRECT_DESC))

    def _set_mem_table(self, payload: bytes, fds: list[int]) -> None:
        """Map the new table (taking the fds), swap it in under the lock, unmap the old one."""
        try:
            (n, _pad) = self._unpack("<II", payload, "SET_MEM_TABLE")
            if not 1 <= n <= 8 or len(payload) < 8 + 32 * n:
                raise ProtocolError(f"SET_MEM_TABLE: {n} regions in a {len(payload)}-byte payload")
            regions = [Region(*struct.unpack_from("<QQQQ", payload, 8 + 32 * i)) for i in range(n)]
            try:
                mem = GuestMemory(regions, fds)
            except GuestMemoryError as e:
                raise ProtocolError(f"SET_MEM_TABLE: {e}") from e
        finally:
            self._close_fds(fds)   # the mappings keep the memory; the fds are not needed
        with self._lock:
            old, self._mem = self._mem, mem
            self._regions = mem.table
            self._st[S_NREGIONS] = mem.n
            try:
                self._apply_locked()
            finally:
                if old is not None:
                    old.close()
        self._update_link()
        self._say(logging.INFO, "vhost-user port %s: guest memory %d MiB in %d region(s)", self.name, mem.size >> 20,
                  mem.n)

    def _set_vring_fd(self, request: int, payload: bytes, fds: list[int], name: str) -> None:
        """SET_VRING_KICK / CALL / ERR (taking the fds); a kick starts the ring."""
        try:
            (value,) = self._unpack("<Q", payload, name)
            nofd = bool(value & VRING_NOFD)
            if not nofd and len(fds) != 1:
                raise ProtocolError(f"{name}: expected one fd, got {len(fds)}")
            index = self._ring_index(value & VRING_INDEX_MASK)
            if not nofd:
                _require_eventfd(fds[0], f"{name} {index}")
        except BaseException:
            self._close_fds(fds)
            raise
        if nofd:
            self._close_fds(fds)
        fd = -1 if nofd else fds[0]
        ring = self._rings[index]
        if request == SET_VRING_ERR:
            old, ring.err_fd = ring.err_fd, fd
            self._close_fds([old] if old >= 0 else [])
            return
        if request == SET_VRING_CALL:
            with self._lock:
                old, ring.call_fd = ring.call_fd, fd
                self._vq[index, Q_CALL_FD] = fd
            self._close_fds([old] if old >= 0 else [])
            return
        # SET_VRING_KICK: the ring starts
        old = -1
        try:
            with self._lock:
                old, ring.kick_fd = ring.kick_fd, fd
                ring.kick_nofd = nofd
                if not ring.started:   # a new kick fd for a running ring keeps its place
                    ring.started = True
                    self._start_ring_locked(index)
                self._vq[index, Q_KICK_FD] = fd if index == TX_QUEUE else -1
                self._apply_locked()
        finally:
            self._close_fds([old] if old >= 0 else [])
            self._update_link()
        if fd >= 0 and index == TX_QUEUE:
            with self._lock:          # look at the ring once: buffers may be waiting already
                self._kick_self_locked()

    def _register_kick(self, fd: int) -> None:
        if fd == self._kick_registered:
            return
        if self._kick_registered >= 0:
            with contextlib.suppress(OSError):
                self._epoll.unregister(self._kick_registered)
            self._kick_registered = -1
        if fd >= 0:
            self._epoll.register(fd, select.EPOLLIN)
            self._kick_registered = fd

    def _start_ring_locked(self, index: int) -> None:
        """Set the ring's indices from its base (and the used index the guest sees, as DPDK does)."""
        vq = self._vq[index]
        vq[Q_LAST_AVAIL] = self._rings[index].base
        vq[Q_USED_IDX] = self._rings[index].base
        vq[Q_KICKS_ON] = 1

    def _stop_ring(self, index: int) -> int:
        """GET_VRING_BASE: stop the ring and return the next avail index it would have taken."""
        ring = self._rings[index]
        with self._lock:
            ring.started = False
            self._vq[index, Q_READY] = 0
            base = int(self._vq[index, Q_LAST_AVAIL]) if ring.num else ring.base
            ring.base = base
            if index == TX_QUEUE:
                self._register_kick(-1)
                self._drain_self_kick_locked()
            self._vq[index, Q_KICK_FD] = -1
            kick, ring.kick_fd = ring.kick_fd, -1
        if kick >= 0:
            os.close(kick)
        self._update_link()
        return base

    def _apply(self) -> None:
        with self._lock:
            self._apply_locked()
        self._update_link()

    def _apply_locked(self) -> None:
        """Recompute which rings the kernels may touch, translating their addresses (caller holds the lock).

        Both rings stop first: when one cannot be translated (ProtocolError), none is left running
        on offsets into memory that may just have been replaced.
        """
        mem = self._mem
        was = [bool(r) for r in self._vq[:, Q_READY]]
        self._vq[:, Q_READY] = 0
        for index, ring in enumerate(self._rings):
            vq = self._vq[index]
            was_ready = was[index]
            if mem is None or not ring.started or not ring.num or ring.desc < 0:
                continue
            if self.features & (1 << VHOST_USER_F_PROTOCOL_FEATURES) and not ring.enabled:
                continue
            n = ring.num
            desc = mem.uva_to_flat(ring.desc, 16 * n)
            avail = mem.uva_to_flat(ring.avail, 6 + 2 * n)
            used = mem.uva_to_flat(ring.used, 6 + 8 * n)
            if min(desc, avail, used) < 0:
                raise ProtocolError(f"vring {index}: ring addresses outside the memory table "
                                    f"(desc 0x{ring.desc:x}, avail 0x{ring.avail:x}, used 0x{ring.used:x})")
            if desc % 8 or avail % 2 or used % 4:
                raise ProtocolError(f"vring {index}: misaligned ring (desc 0x{ring.desc:x}, avail 0x{ring.avail:x}, "
                                    f"used 0x{ring.used:x})")
            vq[Q_SIZE], vq[Q_DESC], vq[Q_AVAIL], vq[Q_USED] = n, desc, avail, used
            if not was_ready:
                guest_used = int(mem.m16[(used + 2) >> 1])
                if guest_used != vq[Q_USED_IDX]:
                    self._say(logging.INFO, "vhost-user port %s: vring %d base %d, guest's used index %d: using the "
                              "latter", self.name, index, vq[Q_USED_IDX], guest_used)
                    vq[Q_LAST_AVAIL] = vq[Q_USED_IDX] = guest_used
                if index == RX_QUEUE and not self._st[S_EVENT_IDX]:
                    mem.m16[used >> 1] = VRING_USED_F_NO_NOTIFY   # we never wait for receive buffers
                vq[Q_KICKS_ON] = 1
            vq[Q_READY] = 1
        tx = self._rings[TX_QUEUE]
        if not self._vq[TX_QUEUE, Q_READY]:
            self._register_kick(-1)      # a stopped or disabled ring's kicks must not keep waking the datapath
            self._drain_self_kick_locked()
        else:
            self._register_kick(tx.kick_fd if tx.kick_fd >= 0 else self._poll_fd)
            if not was[TX_QUEUE]:
                self._kick_self_locked()     # a TX ring that starts running is looked at once

    def _kick_self_locked(self) -> None:
        """Make the datapath look at the TX ring (if it runs): the port's own eventfd, never the guest's."""
        if self._vq[TX_QUEUE, Q_READY]:
            os.eventfd_write(self._self_kick, 1)
            self._st[S_SELF_KICKED] = 1

    def _drain_self_kick_locked(self) -> None:
        """Forget a pending "look again" (the TX ring stopped): the port's epoll fd must not stay readable."""
        self._st[S_SELF_KICKED] = 0
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._self_kick)

    def _update_link(self) -> None:
        up = bool(self._vq[RX_QUEUE, Q_READY] and self._vq[TX_QUEUE, Q_READY])
        if up and self._error and self._conn is not None:
            self._error = ""   # a new session runs: the last reset is history
        if up != self._link:
            self._link = up
            self._say(logging.INFO, "vhost-user port %s: link %s", self.name, "up" if up else "down")
            self.changed()

    def _reset_session(self) -> None:
        """Forget everything the front-end set up (disconnect or RESET_OWNER)."""
        with self._lock:
            self._vq[:, Q_READY] = 0
            self._vq[:, Q_CALL_FD] = -1
            self._vq[:, Q_KICK_FD] = -1
            self._register_kick(-1)
            self._drain_self_kick_locked()
            for ring in self._rings:
                ring.close_fds()
            self._rings = [_Ring() for _ in range(N_QUEUES)]
            mem, self._mem = self._mem, None
            self._st[S_NREGIONS] = 0
            self._st[S_FAULT] = 0
            if mem is not None:
                mem.close()
        self.features = 0
        self.protocol_features = 0
        self.mtu = 0
        self._update_link()

    def _end_session(self, conn: socket.socket, reason: str) -> None:
        self._reset_session()
        self._conn = None
        with contextlib.suppress(OSError):
            conn.close()
        self._say(logging.INFO, "vhost-user port %s: front-end disconnected (%s)", self.name, reason)
        self.changed()

    # ------------------------------------------------------------ teardown
    def close(self) -> None:
        """Stop the protocol thread, drop the front-end, unmap its memory, remove our socket. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(5)
        self._release()

    def _release(self) -> None:
        self._reset_session()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)
        self._epoll.close()
        for fd in (self._poll_fd, self._self_kick, self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class VhostUserClientPort(VhostUserPort):
    """``dpdkvhostuserclient``: connects to the front-end's socket and reconnects after either side restarts."""

    type = "dpdkvhostuserclient"

    def __init__(self, name: str, *, socket_path: str) -> None:
        super().__init__(name, socket_path=socket_path, client=True)
