"""The packet pool: preallocated fixed-size slots that every port receives into.

A *slot* is one row of ``PacketPool.data``; a *burst* is an ``int32`` array of slot
indices. Nothing on the packet path allocates: ports pop free slots inside their numba
receive kernels (``slot_alloc``) and the datapath pushes them back after transmit
(``pool_free``).

Each row is ``headroom + slot_size`` bytes: ``headroom`` bytes (``DEFAULT_HEADROOM``, 128)
in front of the frame, so that a header can be prepended (VLAN push, tunnel push) without
moving the frame, then room for a frame of up to ``slot_size`` bytes::

    data[slot]:  | headroom ............ | frame (META_LEN bytes) ......... | unused |
                 0                    META_HEAD                META_HEAD + META_LEN

Per-slot metadata lives in ``PacketPool.meta`` (``int32[n_slots, META_FIELDS]``):

* ``META_LEN``      frame length in bytes
* ``META_IN_PORT``  datapath port number (``Port.port_no``) that received the frame
* ``META_HEAD``     where the frame starts in the row: the frame is
  ``data[slot, meta[slot, META_HEAD] : meta[slot, META_HEAD] + meta[slot, META_LEN]]``

The rules every kernel follows:

* every receive writes the frame at ``headroom`` and sets ``META_HEAD = headroom``
  (``PacketPool.put`` too);
* every reader and transmitter reads the frame at ``META_HEAD``, never at 0 nor at
  ``headroom``;
* a kernel may move ``META_HEAD`` down into the headroom (a push: the new header goes in
  front) or up (a pop), adjusting ``META_LEN``; ``META_HEAD + META_LEN`` never passes the
  end of the row, and ``META_HEAD`` never goes below 0.

Tunnel metadata lives in ``PacketPool.tun`` (``uint64[n_slots, TUN_WORDS]``): the key's tunnel words
(``dpif.key`` words 32..47: tun_id, tun_src / tun_dst, flags / tos / ttl / tp_dst, the IPv6 addresses, the
Geneve option words) of a frame a tunnel port decapsulated. ``dpif.tunnel_pop.tnl_terminate`` writes all 16
words of each frame it decapsulates, and a row is meaningful only for the frames of that call's ``tunneled``
list (``dpif.tunnel_pop.fill_tun_words`` copies those rows into their keys); any other slot's row is stale and
nothing reads it (the key extraction leaves a frame not received from a tunnel with tunnel words 0).

``headroom=0`` gives the old layout (a frame at ``data[slot, 0]``), for code that still
assumes it.

Jumbo frames: a frame longer than ``slot_size`` is dropped by the receiving port and
counted as ``rx_oversize``; build the pool with a larger ``slot_size`` (e.g. 9216 + 64)
to switch jumbo frames.
"""

from __future__ import annotations

import numba
import numpy as np

META_LEN = 0
META_IN_PORT = 1
META_HEAD = 2
META_FIELDS = 4
#: words of a slot's tunnel metadata row (``PacketPool.tun``): the key's words 32..47
TUN_WORDS = 16

DEFAULT_SLOTS = 8192
DEFAULT_SLOT_SIZE = 2048
#: Bytes in front of every received frame (an outer Ethernet + IPv6 + UDP + Geneve header is 70 bytes).
DEFAULT_HEADROOM = 128


@numba.njit(nogil=True, cache=True, inline="always")
def slot_alloc(free_stack: np.ndarray, free_top: np.ndarray) -> int:
    """Pop one free slot index, or -1 when the pool is empty."""
    top = free_top[0]
    if top == 0:
        return -1
    top -= 1
    free_top[0] = top
    return free_stack[top]


@numba.njit(nogil=True, cache=True, inline="always")
def slot_free(free_stack: np.ndarray, free_top: np.ndarray, slot: int) -> None:
    """Push one slot index back onto the free stack."""
    top = free_top[0]
    free_stack[top] = slot
    free_top[0] = top + 1


@numba.njit(nogil=True, cache=True)
def pool_alloc(free_stack: np.ndarray, free_top: np.ndarray, burst: np.ndarray, start: int, n: int) -> int:
    """Fill ``burst[start:start+k]`` with up to ``n`` free slots; return k."""
    k = 0
    while k < n:
        s = slot_alloc(free_stack, free_top)
        if s < 0:
            break
        burst[start + k] = s
        k += 1
    return k


@numba.njit(nogil=True, cache=True)
def pool_free(free_stack: np.ndarray, free_top: np.ndarray, burst: np.ndarray, n: int) -> None:
    """Return the first ``n`` slots of ``burst`` to the pool."""
    for i in range(n):
        slot_free(free_stack, free_top, burst[i])


class PacketPool:
    """Preallocated packet buffers shared by all ports of one datapath.

    ``PacketPool(n_slots, slot_size, headroom)``: ``slot_size`` is the longest frame a port
    accepts; each row of ``data`` is ``headroom + slot_size`` bytes and a received frame
    starts at ``headroom`` (see the module docstring for ``META_HEAD``).
    """

    def __init__(
        self, n_slots: int = DEFAULT_SLOTS, slot_size: int = DEFAULT_SLOT_SIZE, headroom: int = DEFAULT_HEADROOM
    ) -> None:
        if n_slots <= 0 or slot_size < 64 or headroom < 0:
            raise ValueError(f"pool needs n_slots > 0, slot_size >= 64 and headroom >= 0, "
                             f"got {n_slots}, {slot_size}, {headroom}")
        self.n_slots = n_slots
        self.slot_size = slot_size
        self.headroom = headroom
        self.data = np.zeros((n_slots, headroom + slot_size), dtype=np.uint8)
        self.meta = np.zeros((n_slots, META_FIELDS), dtype=np.int32)
        self.meta[:, META_HEAD] = headroom
        self.tun = np.zeros((n_slots, TUN_WORDS), dtype=np.uint64)
        self.free_stack = np.arange(n_slots - 1, -1, -1, dtype=np.int32)
        self.free_top = np.array([n_slots], dtype=np.int64)

    @property
    def free_count(self) -> int:
        """Number of slots currently free."""
        return int(self.free_top[0])

    def alloc(self, burst: np.ndarray, start: int, n: int) -> int:
        """Take up to ``n`` free slots into ``burst[start:]``; return how many were taken."""
        return pool_alloc(self.free_stack, self.free_top, burst, start, n)

    def free(self, burst: np.ndarray, n: int) -> None:
        """Give the first ``n`` slots of ``burst`` back (more than were taken is an error, not a corruption)."""
        if n > burst.shape[0] or int(self.free_top[0]) + n > self.n_slots:
            raise ValueError(f"freeing {n} slots would overflow the pool ({self.free_count} of {self.n_slots} free)")
        pool_free(self.free_stack, self.free_top, burst, n)

    def frame(self, slot: int) -> bytes:
        """Copy of the frame in ``slot``, read at its ``META_HEAD`` (slow path: tests, tracing)."""
        head = int(self.meta[slot, META_HEAD])
        return bytes(self.data[slot, head : head + int(self.meta[slot, META_LEN])])

    def put(self, slot: int, frame: bytes, in_port: int = 0) -> None:
        """Write ``frame`` into ``slot`` at ``headroom``, as a receive does (slow path: tests, packet-out)."""
        if len(frame) > self.slot_size:
            raise ValueError(f"frame of {len(frame)} bytes does not fit a {self.slot_size}-byte slot")
        h = self.headroom
        self.data[slot, h : h + len(frame)] = np.frombuffer(frame, dtype=np.uint8)
        self.meta[slot, META_LEN] = len(frame)
        self.meta[slot, META_IN_PORT] = in_port
        self.meta[slot, META_HEAD] = h
