"""The packet pool: preallocated fixed-size slots that every port receives into.

A *slot* is one row of ``PacketPool.data``; a *burst* is an ``int32`` array of slot
indices. Nothing on the packet path allocates: ports pop free slots inside their numba
receive kernels (``slot_alloc``) and the datapath pushes them back after transmit
(``pool_free``).

Per-slot metadata lives in ``PacketPool.meta`` (``int32[n_slots, META_FIELDS]``):

* ``META_LEN``      frame length in bytes (the frame starts at ``data[slot, 0]``)
* ``META_IN_PORT``  datapath port number (``Port.port_no``) that received the frame

Jumbo frames: a frame longer than ``slot_size`` is dropped by the receiving port and
counted as ``rx_oversize``; build the pool with a larger ``slot_size`` (e.g. 9216 + 64)
to switch jumbo frames.
"""

from __future__ import annotations

import numba
import numpy as np

META_LEN = 0
META_IN_PORT = 1
META_FIELDS = 4

DEFAULT_SLOTS = 8192
DEFAULT_SLOT_SIZE = 2048


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
    """Preallocated packet buffers shared by all ports of one datapath."""

    def __init__(self, n_slots: int = DEFAULT_SLOTS, slot_size: int = DEFAULT_SLOT_SIZE) -> None:
        if n_slots <= 0 or slot_size < 64:
            raise ValueError(f"pool needs n_slots > 0 and slot_size >= 64, got {n_slots}, {slot_size}")
        self.n_slots = n_slots
        self.slot_size = slot_size
        self.data = np.zeros((n_slots, slot_size), dtype=np.uint8)
        self.meta = np.zeros((n_slots, META_FIELDS), dtype=np.int32)
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
        """Copy of the frame in ``slot`` (slow path: tests, tracing)."""
        return bytes(self.data[slot, : self.meta[slot, META_LEN]])

    def put(self, slot: int, frame: bytes, in_port: int = 0) -> None:
        """Write ``frame`` into ``slot`` (slow path: tests, packet-out)."""
        if len(frame) > self.slot_size:
            raise ValueError(f"frame of {len(frame)} bytes does not fit a {self.slot_size}-byte slot")
        self.data[slot, : len(frame)] = np.frombuffer(frame, dtype=np.uint8)
        self.meta[slot, META_LEN] = len(frame)
        self.meta[slot, META_IN_PORT] = in_port
