"""A vhost-user *frontend* (the role QEMU or DPDK's virtio_user plays) in pure Python + numpy, for tests.

It is used two ways:

1. as a simple virtio-net peer: :meth:`VhostUserFrontend.start` does the whole handshake, then
   :meth:`~VhostUserFrontend.send` / :meth:`~VhostUserFrontend.recv` move Ethernet frames over split virtqueues
   (queue 0 = RX, the backend writes into it; queue 1 = TX, the backend reads from it);
2. as a HOSTILE peer: the shared memory (:attr:`~VhostUserFrontend.mem`) and numpy views of every ring part are
   public, :meth:`~VhostUserFrontend.post_raw` publishes unvalidated descriptors, and
   :meth:`~VhostUserFrontend.message` sends any vhost-user message.

Specs followed: QEMU ``docs/interop/vhost-user.rst`` and virtio 1.1 (split virtqueues, virtio-net header,
mergeable RX buffers, EVENT_IDX, indirect descriptors).

Memory: ONE memfd region of ``mem_size`` bytes, announced with guest physical address 0 and a userspace
address of :data:`USERSPACE_ADDR` (deliberately not equal to the GPA), so a GPA in a descriptor is simply an
offset into :attr:`~VhostUserFrontend.mem`, while the ring addresses in SET_VRING_ADDR are that offset plus
:data:`USERSPACE_ADDR`. With ``guard_bytes`` the memory file has that many more bytes before and after the
region, which are not in the memory table (its ``mmap_offset`` is ``guard_bytes``): :attr:`file_mem` shows them,
so a test can fill them with canaries and see whether the back-end ever touched them. Layout, from offset 0::

    for q in (0, 1):  desc table (16-byte aligned) | avail ring (2-byte aligned) | used ring (4-byte aligned)
    for q in (0, 1):  queue_size indirect tables of INDIRECT_MAX entries (16-byte aligned)
    for q in (0, 1):  queue_size buffers of buf_size bytes (page aligned); buffer i belongs to descriptor i

Ordering: numpy stores are issued in program order and x86 keeps stores in order, so ring entries are written
before the index that publishes them. Where the spec needs a full barrier (store of an index, then load of the
peer's event index) :func:`_fence` takes a lock, which is a locked (fully ordering) instruction on x86.
"""

from __future__ import annotations

import array
import contextlib
import mmap
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Sequence
from types import TracebackType

import numpy as np

# --- vhost-user message header ------------------------------------------------------------------------------------

VHOST_USER_VERSION = 0x1
VHOST_USER_VERSION_MASK = 0x3
VHOST_USER_REPLY_MASK = 0x1 << 2
VHOST_USER_NEED_REPLY_MASK = 0x1 << 3
VHOST_USER_HDR_SIZE = 12
VHOST_USER_VRING_IDX_MASK = 0xFF
VHOST_USER_VRING_NOFD_MASK = 0x1 << 8
VHOST_USER_MAX_FDS = 8
VHOST_VRING_F_LOG = 0

# --- front-end message types (vhost-user.rst "Front-end message types") --------------------------------------------

VHOST_USER_GET_FEATURES = 1
VHOST_USER_SET_FEATURES = 2
VHOST_USER_SET_OWNER = 3
VHOST_USER_RESET_OWNER = 4
VHOST_USER_SET_MEM_TABLE = 5
VHOST_USER_SET_LOG_BASE = 6
VHOST_USER_SET_LOG_FD = 7
VHOST_USER_SET_VRING_NUM = 8
VHOST_USER_SET_VRING_ADDR = 9
VHOST_USER_SET_VRING_BASE = 10
VHOST_USER_GET_VRING_BASE = 11
VHOST_USER_SET_VRING_KICK = 12
VHOST_USER_SET_VRING_CALL = 13
VHOST_USER_SET_VRING_ERR = 14
VHOST_USER_GET_PROTOCOL_FEATURES = 15
VHOST_USER_SET_PROTOCOL_FEATURES = 16
VHOST_USER_GET_QUEUE_NUM = 17
VHOST_USER_SET_VRING_ENABLE = 18
VHOST_USER_SEND_RARP = 19
VHOST_USER_NET_SET_MTU = 20
VHOST_USER_SET_BACKEND_REQ_FD = 21
VHOST_USER_IOTLB_MSG = 22
VHOST_USER_SET_VRING_ENDIAN = 23
VHOST_USER_GET_CONFIG = 24
VHOST_USER_SET_CONFIG = 25
VHOST_USER_CREATE_CRYPTO_SESSION = 26
VHOST_USER_CLOSE_CRYPTO_SESSION = 27
VHOST_USER_POSTCOPY_ADVISE = 28
VHOST_USER_POSTCOPY_LISTEN = 29
VHOST_USER_POSTCOPY_END = 30
VHOST_USER_GET_INFLIGHT_FD = 31
VHOST_USER_SET_INFLIGHT_FD = 32
VHOST_USER_GPU_SET_SOCKET = 33
VHOST_USER_RESET_DEVICE = 34
VHOST_USER_VRING_KICK = 35
VHOST_USER_GET_MAX_MEM_SLOTS = 36
VHOST_USER_ADD_MEM_REG = 37
VHOST_USER_REM_MEM_REG = 38
VHOST_USER_SET_STATUS = 39
VHOST_USER_GET_STATUS = 40

#: requests whose back-end always answers with a reply message (independent of need_reply / REPLY_ACK)
REPLY_REQUESTS = frozenset({
    VHOST_USER_GET_FEATURES, VHOST_USER_GET_VRING_BASE, VHOST_USER_SET_LOG_BASE, VHOST_USER_GET_PROTOCOL_FEATURES,
    VHOST_USER_GET_QUEUE_NUM, VHOST_USER_IOTLB_MSG, VHOST_USER_GET_CONFIG, VHOST_USER_CREATE_CRYPTO_SESSION,
    VHOST_USER_POSTCOPY_ADVISE, VHOST_USER_GET_INFLIGHT_FD, VHOST_USER_GET_MAX_MEM_SLOTS, VHOST_USER_GET_STATUS,
})

# --- protocol feature bits (GET/SET_PROTOCOL_FEATURES) --------------------------------------------------------------

VHOST_USER_PROTOCOL_F_MQ = 0
VHOST_USER_PROTOCOL_F_LOG_SHMFD = 1
VHOST_USER_PROTOCOL_F_RARP = 2
VHOST_USER_PROTOCOL_F_REPLY_ACK = 3
VHOST_USER_PROTOCOL_F_NET_MTU = 4
VHOST_USER_PROTOCOL_F_BACKEND_REQ = 5
VHOST_USER_PROTOCOL_F_CROSS_ENDIAN = 6
VHOST_USER_PROTOCOL_F_CRYPTO_SESSION = 7
VHOST_USER_PROTOCOL_F_PAGEFAULT = 8
VHOST_USER_PROTOCOL_F_CONFIG = 9
VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD = 10
VHOST_USER_PROTOCOL_F_HOST_NOTIFIER = 11
VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD = 12
VHOST_USER_PROTOCOL_F_RESET_DEVICE = 13
VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS = 14
VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS = 15
VHOST_USER_PROTOCOL_F_STATUS = 16

# --- virtio / virtio-net feature bits -------------------------------------------------------------------------------

VIRTIO_NET_F_CSUM = 0
VIRTIO_NET_F_GUEST_CSUM = 1
VIRTIO_NET_F_CTRL_GUEST_OFFLOADS = 2
VIRTIO_NET_F_MTU = 3
VIRTIO_NET_F_MAC = 5
VIRTIO_NET_F_GUEST_TSO4 = 7
VIRTIO_NET_F_GUEST_TSO6 = 8
VIRTIO_NET_F_GUEST_ECN = 9
VIRTIO_NET_F_GUEST_UFO = 10
VIRTIO_NET_F_HOST_TSO4 = 11
VIRTIO_NET_F_HOST_TSO6 = 12
VIRTIO_NET_F_HOST_ECN = 13
VIRTIO_NET_F_HOST_UFO = 14
VIRTIO_NET_F_MRG_RXBUF = 15
VIRTIO_NET_F_STATUS = 16
VIRTIO_NET_F_CTRL_VQ = 17
VIRTIO_NET_F_CTRL_RX = 18
VIRTIO_NET_F_CTRL_VLAN = 19
VIRTIO_NET_F_GUEST_ANNOUNCE = 21
VIRTIO_NET_F_MQ = 22
VIRTIO_NET_F_CTRL_MAC_ADDR = 23
VIRTIO_F_NOTIFY_ON_EMPTY = 24
VHOST_F_LOG_ALL = 26
VIRTIO_F_ANY_LAYOUT = 27
VIRTIO_RING_F_INDIRECT_DESC = 28
VIRTIO_RING_F_EVENT_IDX = 29
VHOST_USER_F_PROTOCOL_FEATURES = 30
VIRTIO_F_VERSION_1 = 32
VIRTIO_F_ACCESS_PLATFORM = 33
VIRTIO_F_RING_PACKED = 34
VIRTIO_F_IN_ORDER = 35
VIRTIO_F_ORDER_PLATFORM = 36
VIRTIO_F_SR_IOV = 37
VIRTIO_F_NOTIFICATION_DATA = 38

# --- split virtqueue flags ------------------------------------------------------------------------------------------

VRING_DESC_F_NEXT = 1
VRING_DESC_F_WRITE = 2
VRING_DESC_F_INDIRECT = 4
VRING_AVAIL_F_NO_INTERRUPT = 1
VRING_USED_F_NO_NOTIFY = 1

# --- virtio-net header ----------------------------------------------------------------------------------------------

VIRTIO_NET_HDR_LEN = 10  # struct virtio_net_hdr (legacy, without num_buffers)
VIRTIO_NET_HDR_MRG_RXBUF_LEN = 12  # with num_buffers: VERSION_1 or MRG_RXBUF

# --- this frontend's choices ----------------------------------------------------------------------------------------

RX_QUEUE = 0
TX_QUEUE = 1
#: the userspace address announced for the region: deliberately far from GPA 0
USERSPACE_ADDR = 0x7F00_0000_0000
#: entries of each indirect table (TX uses 2: header + frame; RX uses 2: header + data)
INDIRECT_MAX = 16
#: feature bits this frontend can drive (split ring only; no offloads, no control queue, no IOMMU, no logging)
SUPPORTED_FEATURES = (
    (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_F_ANY_LAYOUT) | (1 << VIRTIO_NET_F_MRG_RXBUF)
    | (1 << VIRTIO_RING_F_EVENT_IDX) | (1 << VIRTIO_RING_F_INDIRECT_DESC) | (1 << VHOST_USER_F_PROTOCOL_FEATURES)
    | (1 << VIRTIO_NET_F_MAC) | (1 << VIRTIO_NET_F_STATUS) | (1 << VIRTIO_F_NOTIFY_ON_EMPTY)
)
#: protocol features requested when offered
WANTED_PROTOCOL_FEATURES = (1 << VHOST_USER_PROTOCOL_F_MQ) | (1 << VHOST_USER_PROTOCOL_F_REPLY_ACK)

DESC_DTYPE = np.dtype([("addr", "<u8"), ("len", "<u4"), ("flags", "<u2"), ("next", "<u2")])
USED_ELEM_DTYPE = np.dtype([("id", "<u4"), ("len", "<u4")])

_fence_lock = threading.Lock()


def _fence() -> None:
    """Full memory barrier (store -> load), from Python: a lock round trip is a locked instruction on x86."""
    _fence_lock.acquire()
    _fence_lock.release()


def _align(x: int, a: int) -> int:
    return (x + a - 1) & ~(a - 1)


def vring_need_event(event_idx: int, new_idx: int, old_idx: int) -> bool:
    """virtio spec ``vring_need_event``: did moving the index from old to new cross ``event_idx``?"""
    return ((new_idx - event_idx - 1) & 0xFFFF) < ((new_idx - old_idx) & 0xFFFF)


#: In ``start(vring_fds=...)``: the front-end's own vhost-user socket.
OWN_SOCKET = -2


class VhostUserError(RuntimeError):
    """The back-end refused a request (nonzero REPLY_ACK) or broke the protocol (ring or message contents)."""


class _Ring:
    """Offsets and numpy views of one split virtqueue in the shared memory, plus the frontend's private state."""

    def __init__(self, mem: np.ndarray, q: int, size: int, desc_off: int, table_off: int, buf_off: int,
                 buf_size: int) -> None:
        self.q = q
        self.size = size
        self.desc_off = desc_off
        self.avail_off = desc_off + 16 * size
        self.used_off = _align(self.avail_off + 6 + 2 * size, 4)
        self.end = self.used_off + 6 + 8 * size
        self.table_off = table_off
        self.buf_off = buf_off
        self.buf_size = buf_size
        self.desc = mem[self.desc_off:self.avail_off].view(DESC_DTYPE)
        avail_dt = np.dtype([("flags", "<u2"), ("idx", "<u2"), ("ring", "<u2", (size,)), ("used_event", "<u2")])
        used_dt = np.dtype([("flags", "<u2"), ("idx", "<u2"), ("ring", USED_ELEM_DTYPE, (size,)),
                            ("avail_event", "<u2")])
        self.avail = mem[self.avail_off:self.avail_off + avail_dt.itemsize].view(avail_dt).reshape(())
        self.used = mem[self.used_off:self.used_off + used_dt.itemsize].view(used_dt).reshape(())
        # flat views for the hot path
        a16 = mem[self.avail_off:self.avail_off + avail_dt.itemsize].view("<u2")
        self.avail_flags = a16[0:1]
        self.avail_idx = a16[1:2]
        self.avail_ring = a16[2:2 + size]
        self.used_event = a16[2 + size:3 + size]
        u16 = mem[self.used_off:self.used_off + used_dt.itemsize - 2].view("<u2")
        self.used_flags = u16[0:1]
        self.used_idx = u16[1:2]
        self.used_ring = mem[self.used_off + 4:self.used_off + 4 + 8 * size].view("<u4").reshape(size, 2)
        self.avail_event = mem[self.used_off + 4 + 8 * size:self.used_off + 6 + 8 * size].view("<u2")
        # frontend-private state
        self.next_avail = 0  # shadow of avail->idx
        self.last_used = 0  # next used entry to consume
        self.inflight: dict[int, list[int]] = {}  # head -> descriptor indices of its chain
        self.free: list[int] = list(range(size - 1, -1, -1))  # free descriptor indices (TX), pop() from the end

    def buf_addr(self, i: int) -> int:
        """GPA of the buffer that belongs to descriptor ``i``."""
        return self.buf_off + i * self.buf_size

    def table_addr(self, i: int) -> int:
        """GPA of the indirect table that belongs to descriptor ``i``."""
        return self.table_off + i * 16 * INDIRECT_MAX

    def publish(self, heads: Sequence[int]) -> tuple[int, int]:
        """Put heads in the avail ring, then store avail->idx; returns (old, new) idx."""
        old = self.next_avail
        for h in heads:
            self.avail_ring[self.next_avail % self.size] = h
            self.next_avail = (self.next_avail + 1) & 0xFFFF
        self.avail_idx[0] = self.next_avail
        return old, self.next_avail


class VhostUserFrontend:
    """A vhost-user frontend driving one virtio-net queue pair (queue 0 RX, queue 1 TX) over split rings.

    ``listen=False`` connects to a back-end listening at ``path`` (retrying until the ``start`` timeout);
    ``listen=True`` creates the socket now and :meth:`start` accepts ONE back-end connection (the switch's
    ``dpdkvhostuserclient`` mode). ``features`` is the exact set of virtio feature bits wanted (it overrides
    ``event_idx``, ``mrg_rxbuf``, ``indirect`` and ``protocol_features``); it is intersected with what the
    back-end offers. ``buf_size`` is the size of each RX/TX buffer (one per descriptor).

    Attributes after :meth:`start`: ``features`` / ``protocol_features`` (negotiated), ``offered_features`` /
    ``offered_protocol_features`` (what the back-end offered), ``queue_num`` (GET_QUEUE_NUM answer or None),
    ``hdr_len`` (virtio-net header length in use). ``mem`` is the whole shared region (GPA == offset).
    ``memory`` says what backs it: ``"memfd"`` (cannot be sealed, as DPDK's), ``"memfd-sealable"`` (allows seals, as
    QEMU's), ``"memfd-hugetlb"`` (2 MiB pages; they must be reserved) or the path of a file to create (tmpfs,
    hugetlbfs, ...). ``memory_fd`` is that file's fd.
    """

    def __init__(self, path: str, *, mem_size: int = 16 << 20, queue_size: int = 256, listen: bool = False,
                 features: int | None = None, event_idx: bool = True, mrg_rxbuf: bool = True,
                 indirect: bool = False, protocol_features: bool = True, buf_size: int = 2048,
                 memory: str = "memfd", guard_bytes: int = 0) -> None:
        if queue_size < 1 or queue_size > 32768 or queue_size & (queue_size - 1):
            raise ValueError(f"queue_size must be a power of 2 in 1..32768, not {queue_size}")
        if buf_size < 64:
            raise ValueError("buf_size must be at least 64")
        if guard_bytes < 0 or guard_bytes % 4096:
            raise ValueError(f"guard_bytes must be a multiple of 4096, not {guard_bytes}")
        self.path = path
        self.listen = listen
        self.queue_size = queue_size
        self.buf_size = buf_size
        if features is None:
            features = (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_F_ANY_LAYOUT)
            features |= (1 << VIRTIO_NET_F_MRG_RXBUF) if mrg_rxbuf else 0
            features |= (1 << VIRTIO_RING_F_EVENT_IDX) if event_idx else 0
            features |= (1 << VIRTIO_RING_F_INDIRECT_DESC) if indirect else 0
            features |= (1 << VHOST_USER_F_PROTOCOL_FEATURES) if protocol_features else 0
        self.wanted_features = features
        self.features = 0
        self.protocol_features = 0
        self.offered_features = 0
        self.offered_protocol_features = 0
        self.queue_num: int | None = None
        self.hdr_len = VIRTIO_NET_HDR_MRG_RXBUF_LEN
        self.timeout = 5.0
        self.started = False
        self._closed = False
        self._sock: socket.socket | None = None
        self._listener: socket.socket | None = None
        self._kick_fds: list[int] = []
        self._call_fds: list[int] = []

        # memory and layout
        off = 0
        ring_offs = []
        for _ in range(2):
            off = _align(off, 16)
            ring_offs.append(off)
            avail_end = off + 16 * queue_size + 6 + 2 * queue_size
            off = _align(avail_end, 4) + 6 + 8 * queue_size
        table_offs = []
        for _ in range(2):
            off = _align(off, 16)
            table_offs.append(off)
            off += queue_size * 16 * INDIRECT_MAX
        buf_offs = []
        for _ in range(2):
            off = _align(off, 4096)
            buf_offs.append(off)
            off += queue_size * buf_size
        if off > mem_size:
            raise ValueError(f"mem_size {mem_size} too small: the layout needs {off} bytes")
        self.mem_size = mem_size
        self.guard_bytes = guard_bytes
        file_size = mem_size + 2 * guard_bytes
        if memory == "memfd":
            self._memfd = os.memfd_create("vhost-frontend", os.MFD_CLOEXEC)
        elif memory == "memfd-sealable":
            self._memfd = os.memfd_create("vhost-frontend", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        elif memory == "memfd-hugetlb":
            self._memfd = os.memfd_create("vhost-frontend", os.MFD_CLOEXEC | os.MFD_HUGETLB)
        else:
            self._memfd = os.open(memory, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(self._memfd, file_size)
            self._mmap = mmap.mmap(self._memfd, file_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(self._memfd)
            raise
        #: the whole memory file: ``guard_bytes``, the guest's region (:attr:`mem`), ``guard_bytes``
        self.file_mem: np.ndarray = np.frombuffer(self._mmap, dtype=np.uint8)
        self.mem: np.ndarray = self.file_mem[guard_bytes:guard_bytes + mem_size]
        self._rings = [_Ring(self.mem, q, queue_size, ring_offs[q], table_offs[q], buf_offs[q], buf_size)
                       for q in range(2)]

        if listen:
            try:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._listener.bind(path)
                self._listener.listen(1)
            except BaseException:
                self.close()
                raise

    # --- context manager --------------------------------------------------------------------------------------------

    def __enter__(self) -> VhostUserFrontend:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- feature helpers --------------------------------------------------------------------------------------------

    def has(self, bit: int) -> bool:
        """Whether virtio feature ``bit`` was negotiated."""
        return bool(self.features >> bit & 1)

    def has_protocol(self, bit: int) -> bool:
        """Whether vhost-user protocol feature ``bit`` was negotiated."""
        return bool(self.protocol_features >> bit & 1)

    # --- raw ring access --------------------------------------------------------------------------------------------

    def desc(self, q: int) -> np.ndarray:
        """Descriptor table of queue ``q``: structured array (addr u64, len u32, flags u16, next u16)[queue_size]."""
        return self._rings[q].desc

    def avail(self, q: int) -> np.ndarray:
        """Avail ring of queue ``q`` as a 0-d structured view with fields flags, idx, ring[queue_size], used_event."""
        return self._rings[q].avail

    def used(self, q: int) -> np.ndarray:
        """Used ring of queue ``q``: 0-d structured view with fields flags, idx, ring[(id, len)], avail_event."""
        return self._rings[q].used

    def ring_offsets(self, q: int) -> dict[str, int]:
        """GPAs (== offsets in :attr:`mem`) of queue ``q``'s parts: desc, avail, used, tables, bufs."""
        r = self._rings[q]
        return {"desc": r.desc_off, "avail": r.avail_off, "used": r.used_off, "tables": r.table_off,
                "bufs": r.buf_off}

    def buf_addr(self, q: int, i: int) -> int:
        """GPA of the buffer belonging to descriptor ``i`` of queue ``q`` (``buf_size`` bytes)."""
        return self._rings[q].buf_addr(i)

    def post_raw(self, q: int, head: int, descs: Sequence[tuple[int, int, int, int]]) -> None:
        """Write ``descs`` = [(addr, len, flags, next), ...] WITHOUT validation into descriptor slots head, head+1, ...
        (mod queue_size) of queue ``q``, publish ``head`` in the avail ring and store avail->idx. No kick.

        Chaining is entirely the caller's business (set VRING_DESC_F_NEXT and ``next``). On the TX queue the
        written slots are taken out of the frontend's free list and given back when the back-end returns ``head``.
        """
        r = self._rings[q]
        slots = []
        for k, (addr, length, flags, nxt) in enumerate(descs):
            i = (head + k) % r.size
            r.desc[i] = (addr & 0xFFFF_FFFF_FFFF_FFFF, length & 0xFFFF_FFFF, flags & 0xFFFF, nxt & 0xFFFF)
            slots.append(i)
        if q == TX_QUEUE:
            taken = [i for i in slots if i in r.free]
            for i in taken:
                r.free.remove(i)
            r.inflight[head % r.size] = taken
        r.publish([head & 0xFFFF])

    def set_avail_idx(self, q: int, idx: int) -> None:
        """Store ``idx`` into avail->idx of queue ``q`` (and the frontend's shadow of it), unvalidated."""
        r = self._rings[q]
        r.next_avail = idx & 0xFFFF
        r.avail_idx[0] = r.next_avail

    @property
    def memory_fd(self) -> int:
        """The fd of the file behind the guest memory (a hostile guest may truncate it)."""
        return self._memfd

    def kick_fd(self, q: int) -> int:
        """The kick eventfd of queue ``q`` (the frontend writes it; the back-end waits on it)."""
        return self._kick_fds[q]

    def call_fd(self, q: int) -> int:
        """The call eventfd of queue ``q`` (the back-end writes it; :meth:`recv` waits on it for queue 0)."""
        return self._call_fds[q]

    def kick(self, q: int) -> None:
        """Signal queue ``q``'s kick eventfd unconditionally."""
        os.eventfd_write(self._kick_fds[q], 1)

    # --- messages ---------------------------------------------------------------------------------------------------

    def send_bytes(self, data: bytes, fds: Sequence[int] = ()) -> None:
        """Write raw bytes (possibly a malformed message) to the socket, with ``fds`` as SCM_RIGHTS."""
        assert self._sock is not None, "not connected"
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
        self._sock.sendmsg([data], anc)

    def message(self, request: int, payload: bytes = b"", fds: Sequence[int] = (),
                need_reply: bool = False) -> bytes | None:
        """Send one vhost-user message and return the reply payload, or None when no reply is expected.

        A reply is awaited for the requests in :data:`REPLY_REQUESTS` and whenever ``need_reply`` is set (the
        NEED_REPLY flag is then sent; a nonzero u64 ack raises :class:`VhostUserError`). Waiting for an ack the
        back-end will not send (REPLY_ACK not negotiated) ends in ``TimeoutError`` after :attr:`timeout`.
        File descriptors arriving with a reply are closed.
        """
        flags = VHOST_USER_VERSION | (VHOST_USER_NEED_REPLY_MASK if need_reply else 0)
        self.send_bytes(struct.pack("<III", request, flags, len(payload)) + payload, fds)
        if request not in REPLY_REQUESTS and not need_reply:
            return None
        req, rflags, body = self._read_message()
        if req != request or not rflags & VHOST_USER_REPLY_MASK:
            raise VhostUserError(f"reply to request {request} has request {req}, flags {rflags:#x}")
        if request not in REPLY_REQUESTS:
            if len(body) < 8:
                raise VhostUserError(f"short REPLY_ACK to request {request}: {body!r}")
            status = struct.unpack_from("<Q", body)[0]
            if status:
                raise VhostUserError(f"back-end failed request {request}: ack {status:#x}")
        return body

    def read_message(self) -> tuple[int, int, bytes]:
        """The next message from the back-end: ``(request, flags, payload)``; fds that came with it are closed."""
        return self._read_message()

    def shutdown_write(self) -> None:
        """Half-close the connection: the back-end reads end-of-stream after what was sent (a truncated message)."""
        assert self._sock is not None, "not connected"
        self._sock.shutdown(socket.SHUT_WR)

    def _recv_exact(self, n: int) -> bytes:
        assert self._sock is not None
        chunks = []
        while n:
            b = self._sock.recv(n)
            if not b:
                raise ConnectionError("vhost-user back-end closed the connection")
            chunks.append(b)
            n -= len(b)
        return b"".join(chunks)

    def _read_message(self) -> tuple[int, int, bytes]:
        assert self._sock is not None
        data, anc, _flags, _addr = self._sock.recvmsg(VHOST_USER_HDR_SIZE,
                                                       socket.CMSG_SPACE(VHOST_USER_MAX_FDS * 4))
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                for fd in array.array("i", cdata[:len(cdata) - len(cdata) % 4]):
                    os.close(fd)
        if not data:
            raise ConnectionError("vhost-user back-end closed the connection")
        data += self._recv_exact(VHOST_USER_HDR_SIZE - len(data))
        req, flags, size = struct.unpack("<III", data)
        return req, flags, self._recv_exact(size)

    def _get_u64(self, request: int) -> int:
        body = self.message(request)
        assert body is not None
        if len(body) != 8:
            raise VhostUserError(f"reply to request {request} has {len(body)} bytes, not 8")
        return struct.unpack("<Q", body)[0]

    def _ack(self) -> bool:
        return self.has_protocol(VHOST_USER_PROTOCOL_F_REPLY_ACK)

    # --- handshake --------------------------------------------------------------------------------------------------

    def _connect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        if self.listen:
            assert self._listener is not None
            self._listener.settimeout(timeout)
            try:
                self._sock, _ = self._listener.accept()
            except TimeoutError:
                raise TimeoutError(f"no vhost-user back-end connected to {self.path} in {timeout} s") from None
            self._listener.close()
            self._listener = None
        else:
            while True:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(self.path)
                    self._sock = s
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    s.close()
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"no vhost-user back-end listening at {self.path}") from None
                    time.sleep(0.05)
        self._sock.settimeout(self.timeout)

    def _post_rx_buffers(self) -> None:
        r = self._rings[RX_QUEUE]
        indirect = self.has(VIRTIO_RING_F_INDIRECT_DESC)
        for i in range(r.size):
            buf = r.buf_addr(i)
            if indirect:
                table = self.mem[r.table_addr(i):r.table_addr(i) + 32].view(DESC_DTYPE)
                table[0] = (buf, self.hdr_len, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1)
                table[1] = (buf + self.hdr_len, r.buf_size - self.hdr_len, VRING_DESC_F_WRITE, 0)
                r.desc[i] = (r.table_addr(i), 32, VRING_DESC_F_INDIRECT, 0)
            else:
                r.desc[i] = (buf, r.buf_size, VRING_DESC_F_WRITE, 0)
        r.free.clear()
        r.inflight = {i: [i] for i in range(r.size)}
        r.used_event[0] = 0  # interrupt on the first used buffer
        r.avail_flags[0] = 0
        r.publish(range(r.size))
        t = self._rings[TX_QUEUE]
        if self.has(VIRTIO_RING_F_EVENT_IDX):
            t.used_event[0] = 0xFFFF  # no interrupt wanted for TX completions
        else:
            t.avail_flags[0] = VRING_AVAIL_F_NO_INTERRUPT

    def connect(self, timeout: float = 5.0) -> None:
        """Connect (or accept) without any handshake: for a front-end that sends only raw messages."""
        if self._closed:
            raise RuntimeError("frontend is closed")
        self.timeout = timeout
        self._connect(timeout)

    def socket_fd(self) -> int:
        """The fd of the connection to the back-end (-1 before :meth:`connect` / :meth:`start`)."""
        return self._sock.fileno() if self._sock is not None else -1

    def start(self, timeout: float = 5.0, vring_fds: dict[tuple[str, int], int] | None = None) -> None:
        """Connect (or accept) and run the whole handshake; RX buffers are posted before the rings are kicked.

        GET_FEATURES, SET_OWNER, GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM (if MQ is offered), SET_FEATURES,
        SET_MEM_TABLE, then for queues 0 and 1: SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR, SET_VRING_KICK,
        SET_VRING_CALL, and SET_VRING_ENABLE 1 when protocol features were negotiated. With REPLY_ACK, need_reply
        is set on SET_FEATURES, SET_MEM_TABLE, SET_VRING_ADDR and SET_VRING_ENABLE (as QEMU >= 8.1 does).
        ``vring_fds`` sends other fds than the eventfds: ``{("kick" | "call", queue): fd}`` (a hostile guest);
        :data:`OWN_SOCKET` stands for this connection's own socket.
        """
        vring_fds = vring_fds or {}
        if self._closed:
            raise RuntimeError("frontend is closed")
        self.timeout = timeout
        self._connect(timeout)
        vring_fds = {k: self._sock.fileno() if fd == OWN_SOCKET else fd for k, fd in vring_fds.items()}
        self.offered_features = self._get_u64(VHOST_USER_GET_FEATURES)
        self.message(VHOST_USER_SET_OWNER)
        want = self.wanted_features & self.offered_features
        if want >> VHOST_USER_F_PROTOCOL_FEATURES & 1:
            self.offered_protocol_features = self._get_u64(VHOST_USER_GET_PROTOCOL_FEATURES)
            self.protocol_features = self.offered_protocol_features & WANTED_PROTOCOL_FEATURES
            self.message(VHOST_USER_SET_PROTOCOL_FEATURES, struct.pack("<Q", self.protocol_features))
            if self.offered_protocol_features >> VHOST_USER_PROTOCOL_F_MQ & 1:
                self.queue_num = self._get_u64(VHOST_USER_GET_QUEUE_NUM)
        self.features = want
        self.message(VHOST_USER_SET_FEATURES, struct.pack("<Q", want), need_reply=self._ack())
        legacy_hdr = not (self.has(VIRTIO_F_VERSION_1) or self.has(VIRTIO_NET_F_MRG_RXBUF))
        self.hdr_len = VIRTIO_NET_HDR_LEN if legacy_hdr else VIRTIO_NET_HDR_MRG_RXBUF_LEN
        self._post_rx_buffers()

        region = struct.pack("<QQQQ", 0, self.mem_size, USERSPACE_ADDR, self.guard_bytes)
        self.message(VHOST_USER_SET_MEM_TABLE, struct.pack("<II", 1, 0) + region, [self._memfd],
                     need_reply=self._ack())
        for q, r in enumerate(self._rings):
            self._kick_fds.append(os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC))
            self._call_fds.append(os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC))
            self.message(VHOST_USER_SET_VRING_NUM, struct.pack("<II", q, r.size))
            self.message(VHOST_USER_SET_VRING_BASE, struct.pack("<II", q, 0))
            addr = struct.pack("<IIQQQQ", q, 0, USERSPACE_ADDR + r.desc_off, USERSPACE_ADDR + r.used_off,
                               USERSPACE_ADDR + r.avail_off, 0)
            self.message(VHOST_USER_SET_VRING_ADDR, addr, need_reply=self._ack())
            self.message(VHOST_USER_SET_VRING_KICK, struct.pack("<Q", q), [vring_fds.get(("kick", q),
                                                                                        self._kick_fds[q])])
            self.message(VHOST_USER_SET_VRING_CALL, struct.pack("<Q", q), [vring_fds.get(("call", q),
                                                                                        self._call_fds[q])])
        if self.has(VHOST_USER_F_PROTOCOL_FEATURES):
            for q in range(2):
                self.message(VHOST_USER_SET_VRING_ENABLE, struct.pack("<II", q, 1), need_reply=self._ack())
        self.started = True
        self.kick(RX_QUEUE)

    # --- data path --------------------------------------------------------------------------------------------------

    def _notify(self, r: _Ring, old: int, new: int) -> None:
        """Kick ``r`` after publishing old..new, unless the back-end suppressed notifications."""
        if old == new:
            return
        _fence()
        if self.has(VIRTIO_RING_F_EVENT_IDX):
            if not vring_need_event(int(r.avail_event[0]), new, old):
                return
        elif int(r.used_flags[0]) & VRING_USED_F_NO_NOTIFY:
            return
        os.eventfd_write(self._kick_fds[r.q], 1)

    def _reclaim_tx(self) -> int:
        r = self._rings[TX_QUEUE]
        n = 0
        while r.last_used != int(r.used_idx[0]):
            head = int(r.used_ring[r.last_used % r.size, 0])
            chain = r.inflight.pop(head, None)
            if chain is None:
                raise VhostUserError(f"TX used ring returned descriptor {head}, which is not in flight")
            r.free.extend(chain)
            r.last_used = (r.last_used + 1) & 0xFFFF
            n += 1
        if self.has(VIRTIO_RING_F_EVENT_IDX):
            r.used_event[0] = (r.last_used - 1) & 0xFFFF
        return n

    def send(self, frames: Sequence[bytes]) -> int:
        """Queue frames on the TX ring (each behind a zeroed virtio-net header), kick if the back-end wants it.

        Used TX descriptors are reclaimed first. A frame larger than a buffer uses a chain of descriptors (not with
        indirect descriptors, where header + frame must fit one buffer). Returns how many frames were queued: fewer
        than given when the ring is full.
        """
        if not self.started:
            raise RuntimeError("start() first")
        self._reclaim_tx()
        r = self._rings[TX_QUEUE]
        hdr = bytes(self.hdr_len)
        any_layout = self.has(VIRTIO_F_VERSION_1) or self.has(VIRTIO_F_ANY_LAYOUT)
        indirect = self.has(VIRTIO_RING_F_INDIRECT_DESC)
        mem = self.mem
        bs = r.buf_size
        heads: list[int] = []
        for frame in frames:
            if indirect:
                if self.hdr_len + len(frame) > bs:
                    raise ValueError(f"frame of {len(frame)} bytes does not fit one {bs}-byte buffer")
                if not r.free:
                    break
                i = r.free.pop()
                buf = r.buf_addr(i)
                mem[buf:buf + self.hdr_len] = 0
                mem[buf + self.hdr_len:buf + self.hdr_len + len(frame)] = np.frombuffer(frame, np.uint8)
                ta = r.table_addr(i)
                table = mem[ta:ta + 32].view(DESC_DTYPE)
                table[0] = (buf, self.hdr_len, VRING_DESC_F_NEXT, 1)
                table[1] = (buf + self.hdr_len, len(frame), 0, 0)
                r.desc[i] = (ta, 32, VRING_DESC_F_INDIRECT, 0)
                r.inflight[i] = [i]
                heads.append(i)
                continue
            if any_layout:
                data = hdr + bytes(frame)
                segs = [data[k:k + bs] for k in range(0, len(data), bs)]
            else:
                segs = [hdr] + [bytes(frame[k:k + bs]) for k in range(0, len(frame), bs)]
            if len(segs) > len(r.free):
                break
            chain = [r.free.pop() for _ in segs]
            for k, (i, seg) in enumerate(zip(chain, segs, strict=True)):
                buf = r.buf_addr(i)
                mem[buf:buf + len(seg)] = np.frombuffer(seg, np.uint8)
                last = k == len(chain) - 1
                r.desc[i] = (buf, len(seg), 0 if last else VRING_DESC_F_NEXT, 0 if last else chain[k + 1])
            r.inflight[chain[0]] = chain
            heads.append(chain[0])
        old, new = r.publish(heads)
        self._notify(r, old, new)
        return len(heads)

    def _drain_rx(self, out: list[bytes], limit: int | None) -> None:
        r = self._rings[RX_QUEUE]
        mem = self.mem
        mrg = self.has(VIRTIO_NET_F_MRG_RXBUF)
        consumed: list[int] = []
        while limit is None or len(out) < limit:
            pending = (int(r.used_idx[0]) - r.last_used) & 0xFFFF
            if not pending:
                break
            if pending > r.size:
                raise VhostUserError(f"RX used->idx ran {pending} entries ahead of the frontend (ring of {r.size})")
            head, length = (int(v) for v in r.used_ring[r.last_used % r.size])
            if head >= r.size or head not in r.inflight:
                raise VhostUserError(f"RX used ring returned descriptor {head}, which is not available")
            if length < self.hdr_len or length > r.buf_size:
                raise VhostUserError(f"RX used length {length} outside {self.hdr_len}..{r.buf_size}")
            buf = r.buf_addr(head)
            nbuf = int(mem[buf + 10:buf + 12].view("<u2")[0]) if mrg else 1
            if nbuf < 1 or nbuf > r.size:
                raise VhostUserError(f"RX num_buffers {nbuf}")
            if nbuf > pending:
                break  # rest of the frame not published yet
            parts = []
            for k in range(nbuf):
                slot = (r.last_used + k) % r.size
                h, ln = (int(v) for v in r.used_ring[slot])
                if h >= r.size or h not in r.inflight or ln > r.buf_size:
                    raise VhostUserError(f"RX used entry ({h}, {ln}) invalid")
                b = r.buf_addr(h)
                parts.append(mem[b + (self.hdr_len if k == 0 else 0):b + ln].tobytes())
                del r.inflight[h]
                consumed.append(h)
            r.last_used = (r.last_used + nbuf) & 0xFFFF
            out.append(b"".join(parts))
        if consumed:
            for h in consumed:
                r.inflight[h] = [h]
            old, new = r.publish(consumed)
            self._notify(r, old, new)

    def recv(self, n: int | None = None, timeout: float = 2.0) -> list[bytes]:
        """Frames from the RX used ring (virtio-net header stripped, mergeable buffers joined).

        Waits on the call eventfd (and polls) until ``n`` frames arrived or ``timeout`` passed; with ``n=None``
        it returns as soon as at least one frame is in (everything available then), or ``[]`` at the timeout.
        Consumed buffers are reposted; with EVENT_IDX used_event asks for an interrupt on the next used entry.
        """
        if not self.started:
            raise RuntimeError("start() first")
        r = self._rings[RX_QUEUE]
        out: list[bytes] = []
        deadline = time.monotonic() + timeout
        call_fd = self._call_fds[RX_QUEUE]
        while True:
            self._drain_rx(out, n)
            if self.has(VIRTIO_RING_F_EVENT_IDX):
                r.used_event[0] = r.last_used  # interrupt on the next used entry (the driver re-arming callbacks)
            if (out and n is None) or (n is not None and len(out) >= n):
                return out
            _fence()
            if int(r.used_idx[0]) != r.last_used:
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            select.select([call_fd], [], [], min(left, 0.02))
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(call_fd)

    def stop(self) -> dict[int, int]:
        """GET_VRING_BASE for queues 0 and 1 (the back-end stops them); returns {queue: base}."""
        bases = {}
        for q in range(2):
            body = self.message(VHOST_USER_GET_VRING_BASE, struct.pack("<II", q, 0))
            assert body is not None
            if len(body) != 8:
                raise VhostUserError(f"GET_VRING_BASE reply has {len(body)} bytes")
            idx, num = struct.unpack("<II", body)
            if idx != q:
                raise VhostUserError(f"GET_VRING_BASE for queue {q} answered for queue {idx}")
            bases[q] = num
        self.started = False
        return bases

    def close(self) -> None:
        """Close the socket(s), eventfds and memfd and unmap the memory; idempotent.

        The mapping stays alive while the caller still holds numpy views of it (it is then freed with them).
        """
        if self._closed:
            return
        self._closed = True
        self.started = False
        for s in (self._sock, self._listener):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()
        if self.listen:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self._sock = self._listener = None
        for fd in self._kick_fds + self._call_fds + [self._memfd]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._kick_fds, self._call_fds = [], []
        self._rings = []
        self.mem = self.file_mem = np.zeros(0, np.uint8)
        with contextlib.suppress(BufferError):
            self._mmap.close()
