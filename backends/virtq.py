"""Split virtqueues in numba: move bursts between a guest's rings and the packet pool.

The device side of a virtio-net queue pair, over guest memory mapped by ``guestmem``:

```
 guest TX ring (queue 1) ──vq_dequeue──► pool slots          pool slots ──vq_enqueue──► guest RX ring (queue 0)
   avail → desc chain (direct or indirect),                    copy (+ VLAN edit) into one or more writable
   virtio-net header skipped, frame copied,                     buffers (mergeable: num_buffers), used len set,
   used len 0; guest notified per EVENT_IDX                     one used-idx store per burst, one call per burst
```

Frames are dequeued into a slot at ``st[S_HEADROOM]`` (the pool's headroom; ``META_HEAD`` is
set) and enqueued from their ``META_HEAD``. A VLAN push on a frame with headroom is done in the
slot (``vlan_edit.push_in_place``, undone once the frame is in the guest's buffers), so a tagged
frame is copied as one piece, by the one-buffer fast path when it fits.

Everything the guest wrote is untrusted: each descriptor field is read once, every address is
translated through the memory table and must lie wholly inside the guest's regions, a chain
may not visit more descriptors than its table holds (loop detection) nor exceed
``MAX_CHAIN_BYTES``, indices are checked against the ring size and the avail index may not run
more than a ring ahead. The first violation stops the port: the kernel records a *fault*
(``F_*`` code, queue, offending value) in the state array, marks both queues not ready and
returns; the Python side resets the connection. No access ever leaves the mapped regions.

Layouts (all ``int64`` arrays, so a kernel takes few arguments):

* ``st``: the port's counters (``backends.port``) then ``S_*`` words;
* ``vq[2, VQ_WORDS]``: per-queue state (``Q_*``); queue 0 is the guest's RX ring (we
  enqueue), queue 1 its TX ring (we dequeue);
* ``regions[MAX_REGIONS, 4]``: guest-physical start, size, front-end virtual start and
  offset in the flat mapping (``R_*``).

* ``work[4, W]``: per-burst scratch (heads and first descriptors read ahead, W >= the burst).

Each kernel runs in three passes over the burst: read the avail heads (prefetching their
descriptors), read the first descriptor of each chain (prefetching its buffer), then copy. The
cache misses of a burst overlap instead of following one another: the guest writes rings
and buffers from another core, so nearly every first touch is a miss.

Guest memory is one flat ``uint8`` array ``mem`` with ``uint16/32/64`` views of the same bytes
(``m16``, ``m32``, ``m64``); ring structures are aligned, so their fields are read through the
views. Kernels run with ``_nrt=False``: no allocation, no reference counting per frame.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils
from numba.core import types as nbtypes
from numba.extending import intrinsic

from backends.libc import EINTR, c_memcpy, c_read, c_write
from backends.pool import META_HEAD, META_IN_PORT, META_LEN, slot_alloc, slot_free
from backends.port import (
    GUEST_BAD_ADDRESS,
    GUEST_BAD_CHAIN,
    GUEST_BAD_DESCRIPTOR,
    GUEST_BAD_INDEX,
    GUEST_FD_BLOCKED,
    GUEST_MEMORY_SHRUNK,
    NO_FREE_SLOT,
    PORT_COUNTERS,
    RX_BYTES,
    RX_DROPPED,
    RX_ERRORS,
    RX_OVERSIZE,
    RX_PACKETS,
    TX_BYTES,
    TX_DROPPED,
    TX_ERROR,
    TX_ERRORS,
    TX_PACKETS,
    TX_QUEUE_FULL,
)
from backends.vlan_edit import push_in_place, undo_push, vlan_iov

# virtq descriptor flags, avail/used ring flags
VRING_DESC_F_NEXT = 1
VRING_DESC_F_WRITE = 2
VRING_DESC_F_INDIRECT = 4
VRING_USED_F_NO_NOTIFY = 1
VRING_AVAIL_F_NO_INTERRUPT = 1

MAX_REGIONS = 8
MAX_QUEUE_SIZE = 32768
#: Longest descriptor chain (bytes) accepted; without TSO a frame is at most 64 KiB.
MAX_CHAIN_BYTES = 131072

# regions[r, R_*]
R_GPA = 0
R_SIZE = 1
R_UVA = 2
R_FLAT = 3

# st[S_*]: port-wide state after the counters
S_PORT_NO = PORT_COUNTERS
S_RX_START = S_PORT_NO + 1
S_RX_MAX = S_PORT_NO + 2
S_TX_START = S_PORT_NO + 3
S_TX_COUNT = S_PORT_NO + 4
S_HDR_LEN = S_PORT_NO + 5       # virtio-net header: 12 bytes (VERSION_1 or MRG_RXBUF) or 10
S_MRG_RXBUF = S_PORT_NO + 6     # 1 when VIRTIO_NET_F_MRG_RXBUF was negotiated
S_EVENT_IDX = S_PORT_NO + 7     # 1 when VIRTIO_RING_F_EVENT_IDX was negotiated
S_INDIRECT = S_PORT_NO + 8      # 1 when VIRTIO_RING_F_INDIRECT_DESC was negotiated
S_NREGIONS = S_PORT_NO + 9
S_FAULT = S_PORT_NO + 10        # F_* of the first violation, 0 while the guest behaves
S_FAULT_QUEUE = S_PORT_NO + 11
S_FAULT_VALUE = S_PORT_NO + 12  # the offending address / index / length
S_BUSY = S_PORT_NO + 13         # frames per dequeue from which guest kicks are suppressed
S_CALLS = S_PORT_NO + 14        # call-eventfd notifications sent
S_SCRATCH = S_PORT_NO + 15      # 16 words: eventfd value, header, iovecs, VLAN tag, kick iovec ([12..13])
S_SELF_KICK_FD = S_SCRATCH + 16  # the port's own eventfd: "look at the TX ring again" (never a guest's fd)
S_SELF_KICKED = S_SCRATCH + 17   # 1 while that eventfd holds a count
S_GUEST_FD_BUSY = S_SCRATCH + 18  # 1 while a kernel is inside a syscall on a guest's eventfd (the watchdog looks)
S_GUEST_FD_SEQ = S_SCRATCH + 19  # such syscalls started
S_GUEST_FD_THREAD = S_SCRATCH + 20  # pthread_self() of the thread that started the last one
S_HEADROOM = S_SCRATCH + 21     # where dequeued frames start in a slot (the pool's headroom)
STATE_WORDS = S_SCRATCH + 22

# vq[q, Q_*]
Q_READY = 0        # started (kick received), enabled, addresses translated, memory mapped
Q_SIZE = 1         # ring size, a power of two
Q_DESC = 2         # flat offsets of the descriptor table, avail ring and used ring
Q_AVAIL = 3
Q_USED = 4
Q_LAST_AVAIL = 5   # next avail entry to take (free-running u16)
Q_USED_IDX = 6     # our used index (free-running u16)
Q_CALL_FD = 7      # eventfd to notify the guest, -1 for none
Q_KICK_FD = 8      # eventfd the guest kicks, -1 for none (polling)
Q_KICKS_ON = 9     # 1 while the guest is asked to kick (we may sleep)
VQ_WORDS = 10

RX_QUEUE = 0       # the guest's receive ring: the switch enqueues into it
TX_QUEUE = 1       # the guest's transmit ring: the switch dequeues from it

# fault codes (S_FAULT)
F_ADDRESS = 1      # a guest address (buffer or indirect table) outside the memory table
F_CHAIN = 2        # a descriptor chain that loops or is longer than allowed
F_INDEX = 3        # an avail index, head or next index outside the ring
F_DESCRIPTOR = 4   # flags that make no sense (write-only buffer to transmit, nested indirect, ...)
F_MEMORY = 5       # set by the port, not a kernel: the guest's memory file shrank while mapped (memguard)
F_BLOCKED = 6      # a kick/call eventfd blocked the datapath (the guest cleared O_NONBLOCK); the watchdog broke in
FAULT_NAMES = {
    F_ADDRESS: "guest address outside its memory",
    F_CHAIN: "descriptor chain loops or is too long",
    F_INDEX: "ring index out of range",
    F_DESCRIPTOR: "invalid descriptor",
    F_MEMORY: "guest memory shrank under the switch",
    F_BLOCKED: "its kick/call eventfd was made blocking and blocked the switch",
}
FAULT_COUNTER = {F_ADDRESS: GUEST_BAD_ADDRESS, F_CHAIN: GUEST_BAD_CHAIN, F_INDEX: GUEST_BAD_INDEX,
                 F_DESCRIPTOR: GUEST_BAD_DESCRIPTOR, F_MEMORY: GUEST_MEMORY_SHRUNK, F_BLOCKED: GUEST_FD_BLOCKED}


#: ``ssize_t preadv2(int fd, const struct iovec *iov, int iovcnt, off_t offset, int flags)``
c_preadv2 = nbtypes.ExternalFunction("preadv2", nbtypes.intp(nbtypes.intc, nbtypes.uintp, nbtypes.intc, nbtypes.int64,
                                                             nbtypes.intc))
#: ``pthread_t pthread_self(void)`` (the thread id ``signal.pthread_kill`` takes)
c_pthread_self = nbtypes.ExternalFunction("pthread_self", nbtypes.uintp())
_errno_location = nbtypes.ExternalFunction("__errno_location", nbtypes.CPointer(nbtypes.intc)())
RWF_NOWAIT = 0x8
EOPNOTSUPP = 95


@numba.njit(nogil=True, cache=True, inline="always")
def _errno() -> int:
    """The calling thread's ``errno`` (``libc.errno`` builds an array, which kernels without NRT may not)."""
    return _errno_location()[0]


@intrinsic
def fence_full(typingctx):  # noqa: ANN001, ANN201 - numba intrinsic
    """A full memory barrier (``mfence`` on x86): stores before it are visible before loads after it."""

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return nbtypes.void(), codegen


@intrinsic
def fence_order(typingctx):  # noqa: ANN001, ANN201 - numba intrinsic
    """An acquire/release barrier: a compiler barrier on x86 (loads and stores keep program order there)."""

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        builder.fence("acq_rel")
        return context.get_dummy_value()

    return nbtypes.void(), codegen


def _prefetch_intrinsic(write: int):  # noqa: ANN202
    @intrinsic
    def prefetch(typingctx, addr):  # noqa: ANN001, ANN202 - numba intrinsic
        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            i32 = ir.IntType(32)
            ptr_t = ir.IntType(8).as_pointer()
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [ptr_t, i32, i32, i32]),
                                                "llvm.prefetch.p0")
            builder.call(fn, [builder.inttoptr(args[0], ptr_t), ir.Constant(i32, write), ir.Constant(i32, 3),
                              ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return nbtypes.void(nbtypes.int64), codegen

    return prefetch


#: ``prefetch(address)``: start loading a cache line that will be read soon.
prefetch = _prefetch_intrinsic(0)
#: ``prefetch_w(address)``: start loading a cache line that will be written soon.
prefetch_w = _prefetch_intrinsic(1)


@numba.njit(nogil=True, cache=True, inline="always")
def gpa_chunk(regions: np.ndarray, nreg: int, addr: int, length: int) -> tuple[int, int]:
    """``(flat offset, bytes)`` of the longest prefix of ``[addr, addr+length)`` in one region, else ``(-1, 0)``."""
    for r in range(nreg):
        start = regions[r, R_GPA]
        d = addr - start
        if addr >= start and d < regions[r, R_SIZE]:
            n = regions[r, R_SIZE] - d
            if n > length:
                n = length
            return regions[r, R_FLAT] + d, n
    return -1, 0


@numba.njit(nogil=True, cache=True, _nrt=False)
def uva_to_flat(regions: np.ndarray, nreg: int, addr: int, length: int) -> int:
    """Flat offset of front-end virtual range ``[addr, addr+length)`` if one region holds all of it, else -1."""
    for r in range(nreg):
        start = regions[r, R_UVA]
        d = addr - start
        if addr >= start and d < regions[r, R_SIZE] and length <= regions[r, R_SIZE] - d:
            return regions[r, R_FLAT] + d
    return -1


@numba.njit(nogil=True, cache=True, inline="always")
def _desc(m16: np.ndarray, m32: np.ndarray, m64: np.ndarray, d: int) -> tuple[int, int, int, int]:
    """``(addr, len, flags, next)`` of the descriptor at flat offset ``d`` (addr < 0 when above 2**63)."""
    return np.int64(m64[d >> 3]), np.int64(m32[(d + 8) >> 2]), np.int64(m16[(d + 12) >> 1]), \
        np.int64(m16[(d + 14) >> 1])


@numba.njit(nogil=True, cache=True, inline="always")
def _bad_indirect(indirect: bool, indirect_ok: int, flags: int, addr: int, length: int) -> bool:
    """Whether an INDIRECT descriptor breaks the rules (nested, not negotiated, NEXT too, bad size/alignment)."""
    return indirect or not indirect_ok or (flags & VRING_DESC_F_NEXT) != 0 or length == 0 or (length & 15) != 0 \
        or length > 16 * MAX_QUEUE_SIZE or (addr & 7) != 0


@numba.njit(nogil=True, cache=True, inline="always")
def _enter_indirect(
    regions: np.ndarray, nreg: int, m16: np.ndarray, m32: np.ndarray, m64: np.ndarray, indirect: bool,
    indirect_ok: int, flags: int, addr: int, length: int,
) -> tuple[int, int, int, int, int, int, int, int]:
    """Check an INDIRECT descriptor and read its table's first entry.

    Returns ``(fault, fault_value, table, table_n, addr, len, flags, next)``; ``fault`` is 0 or ``F_*``.
    """
    if _bad_indirect(indirect, indirect_ok, flags, addr, length):
        return F_DESCRIPTOR, length, 0, 0, 0, 0, 0, 0
    flat, nb = gpa_chunk(regions, nreg, addr, length)
    if flat < 0 or nb < length:
        return F_ADDRESS, addr, 0, 0, 0, 0, 0, 0
    a, n, f, x = _desc(m16, m32, m64, flat)
    return 0, 0, flat, length >> 4, a, n, f, x


@numba.njit(nogil=True, cache=True, inline="always")
def _next_desc(
    m16: np.ndarray, m32: np.ndarray, m64: np.ndarray, table: int, table_n: int, nxt: int, seen: int, head: int,
) -> tuple[int, int, int, int, int, int]:
    """Follow ``next`` to the ``seen``-th descriptor of a chain: ``(fault, fault_value, addr, len, flags, next)``."""
    if nxt >= table_n:
        return F_INDEX, nxt, 0, 0, 0, 0
    if seen > table_n:
        return F_CHAIN, head, 0, 0, 0, 0
    a, n, f, x = _desc(m16, m32, m64, table + 16 * nxt)
    return 0, 0, a, n, f, x


@numba.njit(nogil=True, cache=True, inline="always")
def _fault(st: np.ndarray, vq: np.ndarray, code: int, q: int, value: int) -> None:
    if st[S_FAULT] == 0:
        st[S_FAULT] = code
        st[S_FAULT_QUEUE] = q
        st[S_FAULT_VALUE] = value
    vq[0, Q_READY] = 0
    vq[1, Q_READY] = 0


@numba.njit(nogil=True, cache=True, inline="always")
def _guest_fd_begin(st: np.ndarray) -> None:
    """Mark the start of a syscall on a guest's eventfd, for the watchdog (``vhost_user``) to break into."""
    st[S_GUEST_FD_THREAD] = np.int64(c_pthread_self())
    st[S_GUEST_FD_SEQ] += 1
    st[S_GUEST_FD_BUSY] = 1


@numba.njit(nogil=True, cache=True, inline="always")
def _guest_fd_end(st: np.ndarray, vq: np.ndarray, q: int, fd: int, r: int) -> None:
    """After that syscall: interrupted (the watchdog broke in) means the guest's fd blocked: fault."""
    st[S_GUEST_FD_BUSY] = 0
    if r < 0 and _errno() == EINTR:
        _fault(st, vq, F_BLOCKED, q, fd)


@numba.njit(nogil=True, cache=True, inline="always")
def _read_kick(st: np.ndarray, vq: np.ndarray, q: int) -> None:
    """Clear the guest's kick without waiting for one, whatever the guest set on its fd (RWF_NOWAIT)."""
    fd = vq[q, Q_KICK_FD]
    buf = np.int64(st.ctypes.data) + S_SCRATCH * 8
    st[S_SCRATCH + 12] = buf
    st[S_SCRATCH + 13] = 8
    _guest_fd_begin(st)
    r = c_preadv2(fd, buf + 12 * 8, 1, -1, RWF_NOWAIT)
    if r < 0 and _errno() == EOPNOTSUPP:    # kernels before 5.12: a plain read, under the watchdog
        r = c_read(fd, buf, 8)
    _guest_fd_end(st, vq, q, fd, r)


@numba.njit(nogil=True, cache=True, inline="always")
def _notify(st: np.ndarray, vq: np.ndarray, q: int, m16: np.ndarray, old_used: int, new_used: int) -> None:
    """Signal the call eventfd if the guest wants an interrupt for used entries ``old_used..new_used``."""
    fd = vq[q, Q_CALL_FD]
    if fd < 0 or old_used == new_used:
        return
    avail = vq[q, Q_AVAIL]
    if st[S_EVENT_IDX]:
        event = np.int64(m16[(avail + 4 + 2 * vq[q, Q_SIZE]) >> 1])
        # vring_need_event: the driver asked to be told once used passes ``event``
        if ((new_used - event - 1) & 0xFFFF) >= ((new_used - old_used) & 0xFFFF):
            return
    elif m16[avail >> 1] & VRING_AVAIL_F_NO_INTERRUPT:
        return
    st[S_SCRATCH] = 1
    _guest_fd_begin(st)
    r = c_write(fd, st.ctypes.data + S_SCRATCH * 8, 8)
    _guest_fd_end(st, vq, q, fd, r)
    st[S_CALLS] += 1


@numba.njit(nogil=True, cache=True, inline="always")
def _set_kicks(st: np.ndarray, vq: np.ndarray, q: int, m16: np.ndarray, on: int) -> None:
    """Ask the guest to kick on its next buffer (``on``) or not to kick at all."""
    used = vq[q, Q_USED]
    last = vq[q, Q_LAST_AVAIL]
    if st[S_EVENT_IDX]:
        m16[(used + 4 + 8 * vq[q, Q_SIZE]) >> 1] = (last if on else last - 1) & 0xFFFF
    else:
        m16[used >> 1] = 0 if on else VRING_USED_F_NO_NOTIFY
    vq[q, Q_KICKS_ON] = on


W_HEAD = 0     # work rows: avail head, then the head descriptor's fields
W_ADDR = 1
W_LEN = 2
W_FLAGS = 3    # flags | next << 16
WORK_ROWS = 4


@numba.njit(nogil=True, cache=True, inline="always")
def _read_ahead(
    vq: np.ndarray, q: int, regions: np.ndarray, nreg: int, mem_base: int, m16: np.ndarray, m32: np.ndarray,
    m64: np.ndarray, work: np.ndarray, last: int, n: int, skip: int, write: bool,
) -> int:
    """Passes 1 and 2: heads of avail entries ``last..last+n`` and their first descriptors into ``work``.

    Prefetches descriptors, then buffers (from byte ``skip``). Returns how many heads are valid
    (< ring size); the caller faults on the next one.
    """
    size = vq[q, Q_SIZE]
    mask = size - 1
    desc = vq[q, Q_DESC]
    avail = vq[q, Q_AVAIL]
    for k in range(n):
        head = np.int64(m16[(avail + 4 + 2 * ((last + k) & mask)) >> 1])
        if head >= size:
            n = k
            break
        work[W_HEAD, k] = head
        prefetch(mem_base + desc + 16 * head)
    for k in range(n):
        addr, length, flags, nxt = _desc(m16, m32, m64, desc + 16 * work[W_HEAD, k])
        work[W_ADDR, k] = addr
        work[W_LEN, k] = length
        work[W_FLAGS, k] = flags | (nxt << 16)
        flat, nb = gpa_chunk(regions, nreg, addr + skip if not flags & VRING_DESC_F_INDIRECT else addr, 1)
        if flat >= 0:
            if write:
                prefetch_w(mem_base + flat)
                prefetch_w(mem_base + flat + 64)
            else:
                prefetch(mem_base + flat)
                prefetch(mem_base + flat + 64)
    return n


@numba.njit(nogil=True, cache=True, _nrt=False)
def vq_dequeue(
    st: np.ndarray, vq: np.ndarray, regions: np.ndarray, mem: np.ndarray, m16: np.ndarray, m32: np.ndarray,
    m64: np.ndarray, work: np.ndarray, data: np.ndarray, meta: np.ndarray, free_stack: np.ndarray,
    free_top: np.ndarray, burst: np.ndarray,
) -> int:
    """Take up to ``st[S_RX_MAX]`` frames from the guest's TX ring into fresh slots at ``burst[st[S_RX_START]:]``,
    each frame at ``st[S_HEADROOM]`` in its slot."""
    q = TX_QUEUE
    if vq[q, Q_READY] == 0:
        return 0
    size = vq[q, Q_SIZE]
    mask = size - 1
    desc = vq[q, Q_DESC]
    avail = vq[q, Q_AVAIL]
    used = vq[q, Q_USED]
    nreg = st[S_NREGIONS]
    hdr_len = st[S_HDR_LEN]
    indirect_ok = st[S_INDIRECT]
    start = st[S_RX_START]
    max_n = min(st[S_RX_MAX], work.shape[1])
    port_no = st[S_PORT_NO]
    head_room = st[S_HEADROOM]
    slot_size = data.shape[1] - head_room
    data_base = np.int64(data.ctypes.data) + head_room
    data_stride = np.int64(data.strides[0])
    mem_base = np.int64(mem.ctypes.data)
    last = vq[q, Q_LAST_AVAIL]
    used_idx = vq[q, Q_USED_IDX]
    old_used = used_idx
    got = 0
    fault = 0
    fault_value = 0
    if st[S_SELF_KICKED]:
        st[S_SELF_KICKED] = 0
        c_read(st[S_SELF_KICK_FD], st.ctypes.data + S_SCRATCH * 8, 8)
    if vq[q, Q_KICKS_ON] and vq[q, Q_KICK_FD] >= 0:
        _read_kick(st, vq, q)   # clear the kick before looking at the ring
        if st[S_FAULT]:
            return 0
    avail_idx = np.int64(m16[(avail + 2) >> 1])
    pending = (avail_idx - last) & 0xFFFF
    fence_order()  # the avail entries are read after the index that published them
    if pending > size:
        fault = F_INDEX
        fault_value = avail_idx
        pending = 0
    n = min(pending, max_n)
    n_ok = _read_ahead(vq, q, regions, nreg, mem_base, m16, m32, m64, work, last, n, hdr_len, False)
    for k in range(n):
        if k == n_ok:
            fault = F_INDEX
            fault_value = np.int64(m16[(avail + 4 + 2 * (last & mask)) >> 1])
            break
        slot = slot_alloc(free_stack, free_top)
        if slot < 0:
            st[NO_FREE_SLOT] += 1   # the frame stays in the ring for the next poll
            break
        dst = data_base + slot * data_stride
        head = work[W_HEAD, k]
        addr = work[W_ADDR, k]
        length = work[W_LEN, k]
        flags = work[W_FLAGS, k] & 0xFFFF
        nxt = work[W_FLAGS, k] >> 16
        if flags == 0 and hdr_len < length <= hdr_len + slot_size:
            # Fast path: header and frame in one plain buffer (the common case).
            flat, nb = gpa_chunk(regions, nreg, addr, length)
            if nb == length:
                total = length - hdr_len
                c_memcpy(dst, mem_base + flat + hdr_len, total)
                u = used + 4 + 8 * (used_idx & mask)
                m32[u >> 2] = head
                m32[(u + 4) >> 2] = 0
                used_idx += 1
                last += 1
                meta[slot, META_LEN] = total
                meta[slot, META_IN_PORT] = port_no
                meta[slot, META_HEAD] = head_room
                burst[start + got] = slot
                got += 1
                st[RX_PACKETS] += 1
                st[RX_BYTES] += total
                continue
        # Walk the chain in descriptor table ``table`` of ``table_n`` entries.
        table = desc
        table_n = size
        seen = 1
        indirect = False
        skip = hdr_len     # header bytes still to skip
        total = 0          # frame bytes in the chain
        while True:
            if flags & VRING_DESC_F_INDIRECT:
                fault, fault_value, table, table_n, addr, length, flags, nxt = _enter_indirect(
                    regions, nreg, m16, m32, m64, indirect, indirect_ok, flags, addr, length)
                if fault:
                    break
                indirect = True
                seen = 1
                continue
            if flags & VRING_DESC_F_WRITE:
                fault = F_DESCRIPTOR
                fault_value = flags
                break
            if addr < 0:
                fault = F_ADDRESS
                fault_value = addr
                break
            if total + length > MAX_CHAIN_BYTES + hdr_len:
                fault = F_CHAIN
                fault_value = total + length
                break
            # copy this buffer (it may span regions), skipping the header
            while length > 0:
                flat, nb = gpa_chunk(regions, nreg, addr, length)
                if flat < 0:
                    fault = F_ADDRESS
                    fault_value = addr
                    break
                addr += nb
                length -= nb
                if skip >= nb:
                    skip -= nb
                    continue
                flat += skip
                nb -= skip
                skip = 0
                if total + nb <= slot_size:
                    c_memcpy(dst + total, mem_base + flat, nb)
                total += nb
            if fault or not flags & VRING_DESC_F_NEXT:
                break
            seen += 1
            fault, fault_value, addr, length, flags, nxt = _next_desc(m16, m32, m64, table, table_n, nxt, seen, head)
            if fault:
                break
        if fault:
            slot_free(free_stack, free_top, slot)
            break
        # the buffer goes back to the guest whatever became of the frame
        u = used + 4 + 8 * (used_idx & mask)
        m32[u >> 2] = head
        m32[(u + 4) >> 2] = 0
        used_idx += 1
        last += 1
        if total > slot_size:
            st[RX_OVERSIZE] += 1
            st[RX_DROPPED] += 1
            slot_free(free_stack, free_top, slot)
            continue
        meta[slot, META_LEN] = total
        meta[slot, META_IN_PORT] = port_no
        meta[slot, META_HEAD] = head_room
        burst[start + got] = slot
        got += 1
        st[RX_PACKETS] += 1
        st[RX_BYTES] += total
    last &= 0xFFFF
    used_idx &= 0xFFFF
    vq[q, Q_LAST_AVAIL] = last
    vq[q, Q_USED_IDX] = used_idx
    if fault:
        st[RX_ERRORS] += 1
        _fault(st, vq, fault, q, fault_value)
    if used_idx != old_used:
        fence_order()  # used entries before the index that publishes them
        m16[(used + 2) >> 1] = used_idx
    # Kicks: off only after a busy poll (the datapath then polls every port again at once); otherwise on,
    # with avail_event at the next entry, and a look at the ring afterwards in case the guest added a
    # buffer before it could see that (then we kick ourselves).
    if got < st[S_BUSY] and not fault:
        if not vq[q, Q_KICKS_ON]:
            _set_kicks(st, vq, q, m16, 1)
        elif st[S_EVENT_IDX]:
            m16[(used + 4 + 8 * size) >> 1] = last
        fence_full()
        if np.int64(m16[(avail + 2) >> 1]) != last and vq[q, Q_KICK_FD] >= 0 and not st[S_SELF_KICKED]:
            st[S_SCRATCH] = 1
            c_write(st[S_SELF_KICK_FD], st.ctypes.data + S_SCRATCH * 8, 8)
            st[S_SELF_KICKED] = 1
    else:
        if vq[q, Q_KICKS_ON]:
            _set_kicks(st, vq, q, m16, 0)
        elif st[S_EVENT_IDX]:
            m16[(used + 4 + 8 * size) >> 1] = (last - 1) & 0xFFFF
        fence_full()  # used index visible before used_event is read
    if used_idx != old_used:
        _notify(st, vq, q, m16, old_used, used_idx)
    return got


@numba.njit(nogil=True, cache=True, _nrt=False)
def vq_enqueue(
    st: np.ndarray, vq: np.ndarray, regions: np.ndarray, mem: np.ndarray, m16: np.ndarray, m32: np.ndarray,
    m64: np.ndarray, work: np.ndarray, data: np.ndarray, meta: np.ndarray, slots: np.ndarray, vlans: np.ndarray,
) -> int:
    """Copy ``slots[st[S_TX_START]:][:st[S_TX_COUNT]]`` (VLAN-edited) into the guest's RX ring; return frames sent."""
    count = st[S_TX_COUNT]
    q = RX_QUEUE
    if vq[q, Q_READY] == 0:
        st[TX_DROPPED] += count
        st[TX_QUEUE_FULL] += count
        return 0
    size = vq[q, Q_SIZE]
    mask = size - 1
    desc = vq[q, Q_DESC]
    avail = vq[q, Q_AVAIL]
    used = vq[q, Q_USED]
    nreg = st[S_NREGIONS]
    hdr_len = st[S_HDR_LEN]
    mrg = st[S_MRG_RXBUF]
    indirect_ok = st[S_INDIRECT]
    first = st[S_TX_START]
    width = data.shape[1]
    data_base = np.int64(data.ctypes.data)
    data_stride = np.int64(data.strides[0])
    mem_base = np.int64(mem.ctypes.data)
    scr = S_SCRATCH + 1                       # scratch words: [0] header (2 words), [2..9] iovecs, [10] tag
    scr_addr = np.int64(st.ctypes.data) + scr * 8
    last = vq[q, Q_LAST_AVAIL]
    last0 = last
    used_idx = vq[q, Q_USED_IDX]
    old_used = used_idx
    avail_idx = np.int64(m16[(avail + 2) >> 1])
    fence_order()
    if ((avail_idx - last) & 0xFFFF) > size:
        _fault(st, vq, F_INDEX, q, avail_idx)
        st[TX_ERRORS] += 1
        st[TX_DROPPED] += count
        return 0
    n_ahead = _read_ahead(vq, q, regions, nreg, mem_base, m16, m32, m64, work, last,
                          min((avail_idx - last) & 0xFFFF, count, work.shape[1]), 0, True)
    sent = 0
    fault = 0
    fault_value = 0
    i = 0
    while i < count:
        slot = np.int64(slots[first + i])
        fhead = np.int64(meta[slot, META_HEAD])
        flen = np.int64(meta[slot, META_LEN])
        if fhead < 0 or flen < 0 or fhead + flen > width:
            st[TX_ERROR] += 1          # slot metadata outside the slot: never read past it
            st[TX_DROPPED] += 1
            i += 1
            continue
        # A push with headroom is done in the slot (undone once the frame is in the guest's buffers): the
        # frame is then sent as it is, by the fast path when it fits one buffer.
        edit = np.int64(vlans[first + i])
        pushed = push_in_place(data, slot, fhead, flen, edit)
        src = fhead
        if pushed >= 0:
            src = pushed
            flen += 4
            edit = -1
        k = (last - last0) & 0xFFFF
        if edit < 0 and k < n_ahead and (work[W_FLAGS, k] & 0xFFFF) == VRING_DESC_F_WRITE \
                and hdr_len + flen <= work[W_LEN, k] <= MAX_CHAIN_BYTES + hdr_len:
            # Fast path: the frame as it is into one plain buffer (the common case): header by stores.
            # (A buffer over the chain limit takes the slow path, which faults, whatever the frame.)
            flat, nb = gpa_chunk(regions, nreg, work[W_ADDR, k], hdr_len + flen)
            if nb == hdr_len + flen and (flat & 3) == 0:
                m32[flat >> 2] = 0
                m32[(flat + 4) >> 2] = 0
                if hdr_len == 12:
                    m16[(flat + 8) >> 1] = 0
                    m16[(flat + 10) >> 1] = 1      # num_buffers
                else:
                    m16[(flat + 8) >> 1] = 0
                c_memcpy(mem_base + flat + hdr_len, data_base + slot * data_stride + src, flen)
                if pushed >= 0:
                    undo_push(data, slot, fhead)
                u = used + 4 + 8 * (used_idx & mask)
                m32[u >> 2] = work[W_HEAD, k]
                m32[(u + 4) >> 2] = hdr_len + flen
                used_idx += 1
                last += 1
                sent += 1
                st[TX_PACKETS] += 1
                st[TX_BYTES] += flen
                i += 1
                continue
        frame = data[slot, src:]
        # pieces: the virtio-net header, then the frame as 1-3 iovecs (VLAN edit)
        st[scr] = 0
        st[scr + 1] = 0
        st[scr + 2] = scr_addr
        st[scr + 3] = hdr_len
        n_iov, out_len = vlan_iov(data_base + slot * data_stride + src, frame, flen, edit, st, scr + 4, scr + 10)
        n_pieces = 1 + n_iov
        piece = 0
        piece_off = 0
        remaining = hdr_len + out_len
        nb_lo = -1            # flat offsets of the header's num_buffers bytes
        nb_hi = -1
        n_bufs = 0
        pkt_last = last
        pkt_used = used_idx
        while remaining > 0:
            if ((avail_idx - last) & 0xFFFF) == 0:
                avail_idx = np.int64(m16[(avail + 2) >> 1])   # the guest may have posted more
                fence_order()
                pending = (avail_idx - last) & 0xFFFF
                if pending > size:
                    fault = F_INDEX
                    fault_value = avail_idx
                    break
                if pending == 0:
                    break
            k = (last - last0) & 0xFFFF
            if k < n_ahead:
                head = work[W_HEAD, k]
                addr = work[W_ADDR, k]
                length = work[W_LEN, k]
                flags = work[W_FLAGS, k] & 0xFFFF
                nxt = work[W_FLAGS, k] >> 16
            else:
                head = np.int64(m16[(avail + 4 + 2 * (last & mask)) >> 1])
                if head >= size:
                    fault = F_INDEX
                    fault_value = head
                    break
                addr, length, flags, nxt = _desc(m16, m32, m64, desc + 16 * head)
            last += 1
            n_bufs += 1
            table = desc
            table_n = size
            seen = 1
            indirect = False
            written = 0
            while True:
                if flags & VRING_DESC_F_INDIRECT:
                    fault, fault_value, table, table_n, addr, length, flags, nxt = _enter_indirect(
                        regions, nreg, m16, m32, m64, indirect, indirect_ok, flags, addr, length)
                    if fault:
                        break
                    indirect = True
                    seen = 1
                    continue
                if not flags & VRING_DESC_F_WRITE:
                    fault = F_DESCRIPTOR
                    fault_value = flags
                    break
                if addr < 0:
                    fault = F_ADDRESS
                    fault_value = addr
                    break
                if written + length > MAX_CHAIN_BYTES + hdr_len:
                    fault = F_CHAIN
                    fault_value = written + length
                    break
                # fill this buffer from the pieces (it may span regions)
                while length > 0 and remaining > 0:
                    flat, nb = gpa_chunk(regions, nreg, addr, length)
                    if flat < 0:
                        fault = F_ADDRESS
                        fault_value = addr
                        break
                    if nb > remaining:
                        nb = remaining
                    addr += nb
                    length -= nb
                    remaining -= nb
                    written += nb
                    while nb > 0:
                        p = scr + 2 + 2 * piece
                        take = st[p + 1] - piece_off
                        if take > nb:
                            take = nb
                        if piece == 0:
                            if piece_off <= 10 < piece_off + take:
                                nb_lo = flat + 10 - piece_off
                            if piece_off <= 11 < piece_off + take:
                                nb_hi = flat + 11 - piece_off
                        c_memcpy(mem_base + flat, st[p] + piece_off, take)
                        flat += take
                        nb -= take
                        piece_off += take
                        if piece_off == st[p + 1] and piece + 1 < n_pieces:
                            piece += 1
                            piece_off = 0
                if fault or remaining == 0 or not flags & VRING_DESC_F_NEXT:
                    break
                seen += 1
                fault, fault_value, addr, length, flags, nxt = _next_desc(m16, m32, m64, table, table_n, nxt, seen,
                                                                          head)
                if fault:
                    break
            if fault:
                break
            u = used + 4 + 8 * (used_idx & mask)
            m32[u >> 2] = head
            m32[(u + 4) >> 2] = written
            used_idx += 1
            if not mrg and remaining > 0:
                break   # without mergeable buffers a frame must fit one chain
        if pushed >= 0:
            undo_push(data, slot, fhead)
        if fault:
            break
        if remaining > 0:
            # the buffers go back untouched
            last = pkt_last
            used_idx = pkt_used
            if mrg or n_bufs == 0:
                # the guest has no (more) receive buffers: drop this frame and the rest of the burst
                st[TX_QUEUE_FULL] += count - i
                st[TX_DROPPED] += count - i
                break
            # without mergeable buffers a frame must fit one chain: this one did not
            st[TX_ERROR] += 1
            st[TX_DROPPED] += 1
            i += 1
            continue
        if hdr_len == 12:
            if nb_lo >= 0:
                mem[nb_lo] = n_bufs & 0xFF
            if nb_hi >= 0:
                mem[nb_hi] = (n_bufs >> 8) & 0xFF
        sent += 1
        st[TX_PACKETS] += 1
        st[TX_BYTES] += out_len
        i += 1
    if fault:
        st[TX_ERRORS] += 1
        st[TX_DROPPED] += count - i     # this frame and the rest (those before it are sent or counted already)
        _fault(st, vq, fault, q, fault_value)
        return sent
    last &= 0xFFFF
    used_idx &= 0xFFFF
    vq[q, Q_LAST_AVAIL] = last
    vq[q, Q_USED_IDX] = used_idx
    if st[S_EVENT_IDX]:
        m16[(used + 4 + 8 * size) >> 1] = (last - 1) & 0xFFFF  # no kicks for receive buffers: we never sleep on them
    if used_idx != old_used:
        fence_order()
        m16[(used + 2) >> 1] = used_idx
        fence_full()
        _notify(st, vq, q, m16, old_used, used_idx)
    return sent
