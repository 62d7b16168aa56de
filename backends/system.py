"""System ports: an existing netdev (veth, NIC) attached through ``AF_PACKET``.

Receive: a ``TPACKET_V3`` ring shared with the kernel (``PACKET_VNET_HDR`` on, promiscuous,
``PACKET_IGNORE_OUTGOING``). A numba kernel walks the ring's blocks and copies each frame
into a pool slot, at the pool's headroom (``META_HEAD``), finishing what the kernel left
undone for a local sender: the 802.1Q tag the kernel moved out of the frame is put back,
partial TCP/UDP checksums are completed and GSO super-frames are cut into MSS-sized frames.

Transmit: a second ``AF_PACKET`` socket (bound with protocol 0, so it never receives),
either ``sendmmsg`` from numba with iovecs pointing into the slots (default) or a
``TPACKET_V2`` ``PACKET_TX_RING`` filled by numba and kicked with one ``send``. Frames are
read at their ``META_HEAD``; a slot whose ``META_HEAD``/``META_LEN`` reach outside it is
counted as ``tx_error``, never read.
"""

from __future__ import annotations

import contextlib
import mmap
import socket
import struct

import numba
import numpy as np

from backends.libc import (
    EAGAIN,
    EINVAL,
    EMSGSIZE,
    ENOBUFS,
    EWOULDBLOCK,
    MSG_DONTWAIT,
    c_memcpy,
    c_send,
    c_sendmmsg,
    copy_bytes,
    errno,
    ld16le,
    ld32le,
    st32le,
)
from backends.offload import (
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP_L4,
    IPPROTO_TCP,
    IPPROTO_UDP,
    VNET_F_NEEDS_CSUM,
    VNET_HDR_LEN,
    complete_partial_csum,
    find_l3,
    fix_segment,
)
from backends.pool import META_HEAD, META_IN_PORT, META_LEN, PacketPool, slot_alloc
from backends.port import (
    NO_FREE_SLOT,
    PORT_COUNTERS,
    RX_BYTES,
    RX_CSUM_FIXED,
    RX_DROPPED,
    RX_ERRORS,
    RX_GSO_SPLIT,
    RX_OVERSIZE,
    RX_PACKETS,
    RX_RING_FULL,
    TX_BYTES,
    TX_DROPPED,
    TX_ERROR,
    TX_PACKETS,
    TX_QUEUE_FULL,
    PortError,
    StatePort,
)
from backends.tap import check_ifname, sys_read
from backends.vlan_edit import copy_edit, push_in_place, undo_push, vlan_iov

# <linux/if_packet.h>
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_TX_RING = 13
PACKET_LOSS = 14
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
PACKET_MR_PROMISC = 1
TPACKET_V2 = 1
TPACKET_V3 = 2
ETH_P_ALL = 0x0003
SO_SNDBUFFORCE = 32

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
TP_STATUS_AVAILABLE = 0
TP_STATUS_SEND_REQUEST = 1

# struct tpacket_block_desc / tpacket_hdr_v1
BLK_STATUS = 8
BLK_NUM_PKTS = 12
BLK_FIRST = 16
# struct tpacket3_hdr
H3_SNAPLEN = 12
H3_LEN = 16
H3_STATUS = 20
H3_MAC = 24
H3_VLAN_TCI = 32
H3_VLAN_TPID = 36
# struct tpacket2_hdr (TX ring): frame data starts at TPACKET2_HDRLEN - sizeof(sockaddr_ll)
H2_LEN = 4
H2_SNAPLEN = 8
H2_DATA = 32

TX_MMSG = "sendmmsg"
TX_RING = "ring"
DEFAULT_TX_MODE = TX_MMSG

# Port state array: counters first (``Port.counters`` is a view of them), then kernel state.
S_FD_RX = PORT_COUNTERS
S_FD_TX = S_FD_RX + 1
S_PORT_NO = S_FD_RX + 2
S_RX_START = S_FD_RX + 3
S_RX_MAX = S_FD_RX + 4
S_TX_START = S_FD_RX + 5
S_TX_COUNT = S_FD_RX + 6
S_RX_BSIZE = S_FD_RX + 7     # rx ring block size
S_RX_BNR = S_FD_RX + 8       # rx ring block count
S_RX_BLK = S_FD_RX + 9       # block being read
S_RX_IDX = S_FD_RX + 10      # frames of that block already consumed
S_RX_OFF = S_FD_RX + 11      # ring offset of the next frame (0: block not started)
S_RX_SEG = S_FD_RX + 12      # next GSO segment of that frame (0: frame not started)
S_TX_FSIZE = S_FD_RX + 13    # tx ring frame size
S_TX_FPB = S_FD_RX + 14      # tx ring frames per block
S_TX_BSIZE = S_FD_RX + 15    # tx ring block size
S_TX_FNR = S_FD_RX + 16      # tx ring frame count
S_TX_HEAD = S_FD_RX + 17     # next tx ring frame to fill
S_MTU = S_FD_RX + 18
S_MMSG_BATCH = S_FD_RX + 19
S_HEADROOM = S_FD_RX + 20    # where received frames start in a slot (the pool's headroom)
STATE_WORDS = S_FD_RX + 21


# ---------------------------------------------------------------------------- receive


# The per-frame path below passes no arrays to helpers with branches: numba would take and
# drop a reference on every array argument of such a helper, twice per frame per array
# (atomic operations that cost more than copying a small frame).


@numba.njit(nogil=True, cache=True, inline="always")
def _copy_in(dst: int, src: int, n: int, tag: int) -> None:
    """Copy ``n`` bytes from address ``src`` to ``dst``, inserting the 4-byte tag ``tag`` (if not 0)
    after the MACs."""
    if tag == 0:
        c_memcpy(dst, src, n)
    else:
        c_memcpy(dst, src, 12)
        c_memcpy(dst + 16, src + 12, n - 12)


@numba.njit(nogil=True, cache=True, inline="always")
def _store_tag(data: np.ndarray, s: int, head: int, tag: int) -> None:
    """Write the 4-byte tag ``tag`` after the MACs of the frame at ``data[s, head:]``."""
    data[s, head + 12] = (tag >> 24) & 0xFF
    data[s, head + 13] = (tag >> 16) & 0xFF
    data[s, head + 14] = (tag >> 8) & 0xFF
    data[s, head + 15] = tag & 0xFF


@numba.njit(nogil=True, cache=True)
def _rx_gso(
    ring: np.ndarray, fstart: int, snap: int, tag: int, st: np.ndarray, data: np.ndarray, meta: np.ndarray,
    free_stack: np.ndarray, free_top: np.ndarray, burst: np.ndarray, pos: int, room: int, seg: int,
) -> tuple[int, int]:
    """Cut the GSO super-frame at ``ring[fstart:fstart+snap]`` into slots ``burst[pos:pos+room]`` (each frame
    at ``st[S_HEADROOM]``), starting with segment ``seg``. Returns ``(slots used, next segment)``, next segment
    0 when done."""
    v = fstart - VNET_HDR_LEN
    gso = ring[v + 1] & 0x7F
    gso_size = ld16le(ring, v + 4)
    l4 = ld16le(ring, v + 6)
    ins = 4 if tag != 0 else 0
    l3 = find_l3(ring, fstart, l4)
    if gso == GSO_UDP_L4:
        proto = IPPROTO_UDP
        hdr = l4 + 8
    else:
        proto = IPPROTO_TCP
        hdr = l4 + ((ring[fstart + l4 + 12] >> 4) & 0xF) * 4
    if l3 < 0 or l4 <= l3 or hdr >= snap or gso_size == 0:
        st[RX_ERRORS] += 1
        st[RX_DROPPED] += 1
        return 0, 0
    paylen = snap - hdr
    nseg = (paylen + gso_size - 1) // gso_size
    head = st[S_HEADROOM]
    if hdr + ins + min(gso_size, paylen) > data.shape[1] - head:
        st[RX_OVERSIZE] += 1
        st[RX_DROPPED] += 1
        return 0, 0
    dbase = np.int64(data.ctypes.data) + head
    stride = np.int64(data.strides[0])
    src = np.int64(ring.ctypes.data) + fstart
    port_no = st[S_PORT_NO]
    used = 0
    k = seg
    while k < nseg and used < room:
        s = slot_alloc(free_stack, free_top)
        if s < 0:
            st[NO_FREE_SLOT] += nseg - k
            st[RX_DROPPED] += nseg - k
            return used, 0
        pay_off = k * gso_size
        chunk = min(gso_size, paylen - pay_off)
        dst = dbase + s * stride
        _copy_in(dst, src, hdr, tag)
        c_memcpy(dst + hdr + ins, src + hdr + pay_off, chunk)
        if tag != 0:
            _store_tag(data, s, head, tag)
        total = hdr + ins + chunk
        fix_segment(data[s, head:], total, l3 + ins, l4 + ins, proto, k, k == nseg - 1, pay_off)
        meta[s, META_LEN] = total
        meta[s, META_IN_PORT] = port_no
        meta[s, META_HEAD] = head
        burst[pos + used] = s
        st[RX_PACKETS] += 1
        st[RX_BYTES] += total
        used += 1
        k += 1
    if k < nseg:
        return used, k
    st[RX_GSO_SPLIT] += 1
    return used, 0


@numba.njit(nogil=True, cache=True)
def system_rx(
    ring: np.ndarray, st: np.ndarray, data: np.ndarray, meta: np.ndarray, free_stack: np.ndarray,
    free_top: np.ndarray, burst: np.ndarray,
) -> int:
    """Move up to ``st[S_RX_MAX]`` frames from the TPACKET_V3 ring into ``burst[st[S_RX_START]:]``, each
    frame at ``st[S_HEADROOM]`` in its slot."""
    start = st[S_RX_START]
    max_n = st[S_RX_MAX]
    bsize = st[S_RX_BSIZE]
    bnr = st[S_RX_BNR]
    blk = st[S_RX_BLK]
    idx = st[S_RX_IDX]
    off = st[S_RX_OFF]
    seg = st[S_RX_SEG]
    port_no = st[S_PORT_NO]
    head = st[S_HEADROOM]
    slot_size = data.shape[1] - head
    dbase = np.int64(data.ctypes.data) + head
    stride = np.int64(data.strides[0])
    rbase = np.int64(ring.ctypes.data)
    n = 0
    rx_packets = 0
    rx_bytes = 0
    while n < max_n:
        boff = blk * bsize
        if (ld32le(ring, boff + BLK_STATUS) & TP_STATUS_USER) == 0:
            break
        num = ld32le(ring, boff + BLK_NUM_PKTS)
        if idx < num:
            if off == 0:
                off = boff + ld32le(ring, boff + BLK_FIRST)
            # ---- one frame: struct tpacket3_hdr at ring[off], virtio_net_hdr just before the data
            status = ld32le(ring, off + H3_STATUS)
            snap = ld32le(ring, off + H3_SNAPLEN)
            fstart = off + ld16le(ring, off + H3_MAC)
            tag = 0
            if status & TP_STATUS_VLAN_VALID:
                tpid = 0x8100
                if status & TP_STATUS_VLAN_TPID_VALID:
                    tpid = ld16le(ring, off + H3_VLAN_TPID)
                    if tpid == 0:
                        tpid = 0x8100
                tag = (tpid << 16) | (ld32le(ring, off + H3_VLAN_TCI) & 0xFFFF)
            ins = 4 if tag != 0 else 0
            v = fstart - VNET_HDR_LEN
            gso = ring[v + 1] & 0x7F
            if snap < ld32le(ring, off + H3_LEN):
                st[RX_OVERSIZE] += 1           # truncated: larger than a ring block
                st[RX_DROPPED] += 1
            elif gso == GSO_TCPV4 or gso == GSO_TCPV6 or gso == GSO_UDP_L4:
                used, seg = _rx_gso(ring, fstart, snap, tag, st, data, meta, free_stack, free_top, burst,
                                    start + n, max_n - n, seg)
                n += used
                if seg != 0:
                    break
            elif snap + ins > slot_size:
                st[RX_OVERSIZE] += 1
                st[RX_DROPPED] += 1
            else:
                s = slot_alloc(free_stack, free_top)
                if s < 0:
                    st[NO_FREE_SLOT] += 1
                    st[RX_DROPPED] += 1
                else:
                    total = snap + ins
                    _copy_in(dbase + s * stride, rbase + fstart, snap, tag)
                    if tag != 0:
                        _store_tag(data, s, head, tag)
                    if ring[v] & VNET_F_NEEDS_CSUM:
                        if complete_partial_csum(data[s, head:], total, ld16le(ring, v + 6) + ins,
                                                 ld16le(ring, v + 8)):
                            st[RX_CSUM_FIXED] += 1
                    meta[s, META_LEN] = total
                    meta[s, META_IN_PORT] = port_no
                    meta[s, META_HEAD] = head
                    burst[start + n] = s
                    n += 1
                    rx_packets += 1
                    rx_bytes += total
            idx += 1
            off += ld32le(ring, off)
        if idx >= num:
            # whole block consumed: hand it back to the kernel
            st32le(ring, boff + BLK_STATUS, TP_STATUS_KERNEL)
            blk += 1
            if blk == bnr:
                blk = 0
            idx = 0
            off = 0
    st[S_RX_BLK] = blk
    st[S_RX_IDX] = idx
    st[S_RX_OFF] = off
    st[S_RX_SEG] = seg
    st[RX_PACKETS] += rx_packets
    st[RX_BYTES] += rx_bytes
    return n


# ---------------------------------------------------------------------------- transmit


@numba.njit(nogil=True, cache=True)
def system_tx_mmsg(
    st: np.ndarray, data: np.ndarray, meta: np.ndarray, slots: np.ndarray, vlans: np.ndarray,
    scratch: np.ndarray,
) -> int:
    """Send ``slots[st[S_TX_START]:][:st[S_TX_COUNT]]`` with ``sendmmsg``, iovecs pointing into the slots."""
    fd = st[S_FD_TX]
    j = st[S_TX_START]           # next queue entry to put in a batch
    end = j + st[S_TX_COUNT]
    batch = st[S_MMSG_BATCH]
    iov0 = batch * 8
    tag0 = batch * 14
    width = data.shape[1]
    base = np.int64(data.ctypes.data)
    stride = np.int64(data.strides[0])
    sbase = np.int64(scratch.ctypes.data)
    sent = 0
    while j < end:
        m = 0                    # messages in this batch
        while m < batch and j < end:
            s = slots[j]
            vlan = vlans[j]
            j += 1
            head = meta[s, META_HEAD]
            length = meta[s, META_LEN]
            if head < 0 or length < 0 or head + length > width:
                st[TX_ERROR] += 1          # slot metadata outside the slot: never read past it
                st[TX_DROPPED] += 1
                continue
            iov = iov0 + m * 6
            niov, _ = vlan_iov(base + s * stride + head, data[s, head:], length, vlan, scratch, iov, tag0 + m)
            mb = m * 8
            scratch[mb] = 0
            scratch[mb + 1] = 0
            scratch[mb + 2] = sbase + iov * 8
            scratch[mb + 3] = niov
            scratch[mb + 4] = 0
            scratch[mb + 5] = 0
            scratch[mb + 6] = 0
            scratch[mb + 7] = 0
            m += 1
        k = 0
        while k < m:
            r = c_sendmmsg(fd, sbase + k * 64, m - k, MSG_DONTWAIT)
            if r > 0:
                for q in range(k, k + r):
                    st[TX_BYTES] += scratch[q * 8 + 7] & 0xFFFFFFFF
                st[TX_PACKETS] += r
                sent += r
                k += r
                continue
            e = errno()
            left = (m - k) + (end - j)
            if e == EMSGSIZE or e == EINVAL:
                st[TX_ERROR] += 1
                st[TX_DROPPED] += 1
                k += 1
                continue
            if e == EAGAIN or e == EWOULDBLOCK or e == ENOBUFS:
                st[TX_QUEUE_FULL] += left
            else:
                st[TX_ERROR] += left
            st[TX_DROPPED] += left
            return sent
    return sent


@numba.njit(nogil=True, cache=True, inline="always")
def _tx_frame_off(st: np.ndarray, head: int) -> int:
    fpb = st[S_TX_FPB]
    return (head // fpb) * st[S_TX_BSIZE] + (head % fpb) * st[S_TX_FSIZE]


@numba.njit(nogil=True, cache=True)
def system_tx_ring(
    ring: np.ndarray, st: np.ndarray, data: np.ndarray, meta: np.ndarray, slots: np.ndarray,
    vlans: np.ndarray,
) -> int:
    """Copy ``slots[st[S_TX_START]:][:st[S_TX_COUNT]]`` into the TX ring and kick it with one ``send``."""
    fd = st[S_FD_TX]
    width = data.shape[1]
    i = st[S_TX_START]
    end = i + st[S_TX_COUNT]
    fnr = st[S_TX_FNR]
    room = st[S_TX_FSIZE] - H2_DATA
    maxlen = st[S_MTU] + 14
    head = st[S_TX_HEAD]
    queued = 0
    kicked = False
    sent = 0
    while i < end:
        foff = _tx_frame_off(st, head)
        if ld32le(ring, foff) != TP_STATUS_AVAILABLE:
            if not kicked:
                # frames still owned by the kernel: push out what is pending, look again
                c_send(fd, 0, 0, MSG_DONTWAIT)
                kicked = True
                queued = 0
                continue
            st[TX_QUEUE_FULL] += end - i
            st[TX_DROPPED] += end - i
            break
        s = slots[i]
        fhead = meta[s, META_HEAD]
        length = meta[s, META_LEN]
        i += 1
        if length + 4 > room or length < 14 or fhead < 0 or fhead + length > width:
            st[TX_ERROR] += 1
            st[TX_DROPPED] += 1
            continue
        d = foff + H2_DATA
        pushed = push_in_place(data, s, fhead, length, vlans[i - 1])
        if pushed >= 0:
            out = length + 4
            copy_bytes(ring, d, data[s], pushed, out)
            undo_push(data, s, fhead)
        else:
            out = copy_edit(data[s, fhead:], length, vlans[i - 1], ring, d)
        et = (np.int64(ring[d + 12]) << 8) | ring[d + 13]
        if out > maxlen + (4 if (et == 0x8100 or et == 0x88A8) else 0):
            st[TX_ERROR] += 1
            st[TX_DROPPED] += 1
            continue
        st32le(ring, foff + H2_LEN, out)
        st32le(ring, foff + H2_SNAPLEN, out)
        st32le(ring, foff, TP_STATUS_SEND_REQUEST)
        head += 1
        if head == fnr:
            head = 0
        queued += 1
        sent += 1
        st[TX_PACKETS] += 1
        st[TX_BYTES] += out
    if queued:
        r = c_send(fd, 0, 0, MSG_DONTWAIT)
        if r < 0:
            e = errno()
            if e != EAGAIN and e != EWOULDBLOCK and e != ENOBUFS:
                # the device refused the whole ring (down, gone): take back what is still queued
                while True:
                    prev = head - 1 if head > 0 else fnr - 1
                    poff = _tx_frame_off(st, prev)
                    if ld32le(ring, poff) != TP_STATUS_SEND_REQUEST:
                        break
                    plen = ld32le(ring, poff + H2_LEN)
                    st32le(ring, poff, TP_STATUS_AVAILABLE)
                    head = prev
                    st[TX_PACKETS] -= 1
                    st[TX_BYTES] -= plen
                    st[TX_ERROR] += 1
                    st[TX_DROPPED] += 1
                    if sent > 0:
                        sent -= 1
    st[S_TX_HEAD] = head
    return sent


# ---------------------------------------------------------------------------- the port


def warm_up() -> None:
    """Load (or compile) the kernels with the argument types a port passes them, moving nothing."""
    st = np.zeros(STATE_WORDS, dtype=np.int64)
    st[S_FD_RX] = st[S_FD_TX] = -1
    pool = PacketPool(1, 64)
    one = np.zeros(1, dtype=np.int32)
    ring = np.zeros(64, dtype=np.uint8)
    system_rx(ring, st, pool.data, pool.meta, pool.free_stack, pool.free_top, one)
    system_tx_ring(ring, st, pool.data, pool.meta, one, one)
    system_tx_mmsg(st, pool.data, pool.meta, one, one, np.zeros(15, dtype=np.int64))


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


class SystemPort(StatePort):
    """An existing netdev (veth, NIC, ...) driven through AF_PACKET sockets.

    ``SystemPort(name, tx_mode="sendmmsg", rx_block_size=256 KiB, rx_blocks=16,
    rx_block_timeout_ms=1, tx_ring_frames=1024, mmsg_batch=64, promisc=True)``.

    ``tx_mode`` is ``"sendmmsg"`` (zero-copy iovecs into the slots) or ``"ring"``
    (``PACKET_TX_RING``). ``rx_block_size`` bounds the largest frame the kernel can hand
    over (a 64 KiB GSO super-frame must fit); ``rx_block_timeout_ms`` is how long a
    partly filled block waits before the kernel hands it over (the added latency at low
    rates).
    """

    type = "system"
    PORT_NO_WORD = S_PORT_NO

    def __init__(
        self,
        name: str,
        *,
        tx_mode: str = DEFAULT_TX_MODE,
        rx_block_size: int = 1 << 18,
        rx_blocks: int = 16,
        rx_block_timeout_ms: int = 1,
        tx_ring_frames: int = 1024,
        mmsg_batch: int = 64,
        promisc: bool = True,
    ) -> None:
        self._st = np.zeros(STATE_WORDS, dtype=np.int64)
        self._st[S_FD_RX] = -1
        self._st[S_FD_TX] = -1
        super().__init__(name)
        self.counters = self._st[:PORT_COUNTERS]
        self._rx_sock: socket.socket | None = None
        self._tx_sock: socket.socket | None = None
        self._rx_map: mmap.mmap | None = None
        self._tx_map: mmap.mmap | None = None
        self._rx_ring = np.zeros(0, dtype=np.uint8)
        self._tx_ring = np.zeros(0, dtype=np.uint8)
        self._open = False
        check_ifname(name)
        if tx_mode not in (TX_MMSG, TX_RING):
            raise PortError(
                f"system port {name}: tx_mode must be {TX_MMSG!r} or {TX_RING!r}, not {tx_mode!r}"
            )
        if rx_block_size < 4096 or rx_block_size % mmap.PAGESIZE or rx_blocks < 2:
            raise PortError(f"system port {name}: rx_block_size must be a multiple of the page size and "
                            f"rx_blocks >= 2 (got {rx_block_size}, {rx_blocks})")
        self.tx_mode = tx_mode
        idx = sys_read(name, "ifindex")
        if idx is None:
            raise PortError(f"system port {name}: no such network device (create it first, e.g. a veth pair)")
        self._ifindex = int(idx)
        st = self._st
        st[S_MTU] = int(sys_read(name, "mtu") or 1500)
        st[S_MMSG_BATCH] = max(1, int(mmsg_batch))
        self._tx_scratch = np.zeros(int(st[S_MMSG_BATCH]) * 15, dtype=np.int64)
        try:
            self._open_rx(rx_block_size, rx_blocks, rx_block_timeout_ms, promisc)
            self._open_tx(tx_ring_frames)
        except OSError as e:
            self.close()
            raise PortError(f"system port {name}: {e.strerror or e}") from e
        except BaseException:
            self.close()
            raise
        self._open = True
        warm_up()   # load (or compile) the kernels now, not in the datapath's first burst

    def _open_rx(self, block_size: int, blocks: int, timeout_ms: int, promisc: bool) -> None:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self._rx_sock = s
        s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        frame_size = 2048
        req = struct.pack("IIIIIII", block_size, blocks, frame_size, block_size * blocks // frame_size,
                          max(0, int(timeout_ms)), 0, 0)
        s.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self._rx_map = mmap.mmap(s.fileno(), block_size * blocks, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
        self._rx_ring = np.frombuffer(self._rx_map, dtype=np.uint8)
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        s.bind((self.name, ETH_P_ALL))
        if promisc:
            mreq = struct.pack("iHH8s", self._ifindex, PACKET_MR_PROMISC, 0, b"")
            s.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        s.setblocking(False)
        st = self._st
        st[S_RX_BSIZE] = block_size
        st[S_RX_BNR] = blocks
        st[S_FD_RX] = s.fileno()

    def _open_tx(self, ring_frames: int) -> None:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self._tx_sock = s
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 4 << 20)
        st = self._st
        if self.tx_mode == TX_RING:
            s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
            s.setsockopt(SOL_PACKET, PACKET_LOSS, 1)
            frame_size = max(2048, _align(H2_DATA + int(st[S_MTU]) + 18, 16))
            block_size = max(1 << 16, _align(frame_size, mmap.PAGESIZE))
            fpb = block_size // frame_size
            nblocks = max(1, (int(ring_frames) + fpb - 1) // fpb)
            req = struct.pack("IIII", block_size, nblocks, frame_size, fpb * nblocks)
            s.setsockopt(SOL_PACKET, PACKET_TX_RING, req)
            self._tx_map = mmap.mmap(s.fileno(), block_size * nblocks, mmap.MAP_SHARED,
                                     mmap.PROT_READ | mmap.PROT_WRITE)
            self._tx_ring = np.frombuffer(self._tx_map, dtype=np.uint8)
            st[S_TX_FSIZE] = frame_size
            st[S_TX_FPB] = fpb
            st[S_TX_BSIZE] = block_size
            st[S_TX_FNR] = fpb * nblocks
            st[S_TX_HEAD] = 0
        # protocol 0: this socket transmits only, it never receives
        s.bind((self.name, 0))
        s.setblocking(False)
        st[S_FD_TX] = s.fileno()


    def rx_burst(self, pool: PacketPool, burst: np.ndarray, start: int, max_n: int) -> int:
        """Receive up to ``max_n`` frames into fresh pool slots; never blocks."""
        if not self._open:
            return 0
        st = self._st
        st[S_RX_START] = start
        st[S_RX_MAX] = max_n
        st[S_HEADROOM] = pool.headroom
        return system_rx(self._rx_ring, st, pool.data, pool.meta, pool.free_stack, pool.free_top, burst)

    def tx_burst(
        self, pool: PacketPool, slots: np.ndarray, vlans: np.ndarray, start: int, count: int
    ) -> int:
        """Send ``slots[start:start+count]`` with per-frame egress VLAN edits; never blocks."""
        st = self._st
        if not self._open:
            st[TX_DROPPED] += count
            st[TX_ERROR] += count
            return 0
        st[S_TX_START] = start
        st[S_TX_COUNT] = count
        if self.tx_mode == TX_RING:
            return system_tx_ring(self._tx_ring, st, pool.data, pool.meta, slots, vlans)
        return system_tx_mmsg(st, pool.data, pool.meta, slots, vlans, self._tx_scratch)

    def wakeup_fds(self) -> list[int]:
        """The receive socket (readable when the kernel has handed a ring block over)."""
        return [self._rx_sock.fileno()] if self._open and self._rx_sock is not None else []

    def close(self) -> None:
        """Close both sockets and unmap the rings; the netdev itself is left alone. Idempotent."""
        self._open = False
        self._st[S_FD_RX] = -1
        self._st[S_FD_TX] = -1
        self._rx_ring = np.zeros(0, dtype=np.uint8)
        self._tx_ring = np.zeros(0, dtype=np.uint8)
        for attr in ("_rx_map", "_tx_map"):
            m = getattr(self, attr)
            setattr(self, attr, None)
            if m is not None:
                m.close()
        for attr in ("_rx_sock", "_tx_sock"):
            s = getattr(self, attr)
            setattr(self, attr, None)
            if s is not None:
                s.close()

    def stats(self) -> dict[str, int]:
        """Counters by OVS statistics name plus drop reasons, with the kernel's ring drops folded in."""
        self._collect_kernel_drops()
        return super().stats()

    def _collect_kernel_drops(self) -> None:
        if not self._open or self._rx_sock is None:
            return
        with contextlib.suppress(OSError):
            # struct tpacket_stats_v3; reading it resets the kernel's counters
            _packets, drops, _freeze = struct.unpack(
                "III", self._rx_sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12))
            if drops:
                self._st[RX_RING_FULL] += drops
                self._st[RX_DROPPED] += drops

    @property
    def ifindex(self) -> int:
        """Interface index of the netdev, 0 once it is gone."""
        v = sys_read(self.name, "ifindex")
        return int(v) if v is not None else 0

    @property
    def mac(self) -> str:
        """MAC address of the netdev, "" once it is gone."""
        return sys_read(self.name, "address") or ""

    @property
    def mtu(self) -> int:
        """MTU of the netdev (also refreshes the length limit the TX ring checks frames against)."""
        v = sys_read(self.name, "mtu")
        if v is not None:
            self._st[S_MTU] = int(v)
        return int(self._st[S_MTU])

    @property
    def link_up(self) -> bool:
        """Whether the netdev is administratively up with carrier."""
        _ = self.mtu
        return sys_read(self.name, "carrier") == "1"

