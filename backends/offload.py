"""Software completion of checksum and segmentation offloads, as numba helpers.

A frame a local sender hands to a veth (or any device with offloads) may be *unfinished*:

* ``CHECKSUM_PARTIAL``: the TCP/UDP checksum field holds only the pseudo-header sum;
  whoever transmits the frame must sum ``frame[csum_start:]`` into
  ``frame[csum_start + csum_offset]``;
* GSO: one "super-frame" of up to 64 KiB carries many MSS-sized TCP (or UDP) segments
  that must be cut apart before they go on a wire.

``AF_PACKET`` hands such frames over as they are, with a ``virtio_net_hdr`` in front
that says which work is left (``PACKET_VNET_HDR``). A switch port must finish the work
before the frame leaves through another port; these helpers do it on pool slots.
"""

from __future__ import annotations

import numba
import numpy as np

from backends.libc import ld16be, ld32be, st16be, st32be

# virtio_net_hdr
VNET_HDR_LEN = 10
VNET_F_NEEDS_CSUM = 1
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80

IPPROTO_TCP = 6
IPPROTO_UDP = 17

TCP_FIN = 0x01
TCP_PSH = 0x08
TCP_CWR = 0x80


@numba.njit(nogil=True, cache=True, inline="always")
def csum_fold(acc: int) -> int:
    """Fold a ones'-complement accumulator to 16 bits (not complemented)."""
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return acc


@numba.njit(nogil=True, cache=True)
def csum_sum(buf: np.ndarray, start: int, end: int) -> int:
    """Ones'-complement sum (folded, not complemented) of the big-endian words in ``buf[start:end]``."""
    # Sum little-endian words 8 bytes at a time (byte order does not change a ones'-complement
    # sum up to a final byte swap); words pair bytes from ``start``, whatever its parity.
    n8 = (end - start) & ~7
    if n8 < 64:
        n8 = 0                                   # short: a view costs more than it saves
    lo = np.uint64(0)
    hi = np.uint64(0)
    if n8 > 0:
        w = buf[start : start + n8].view(np.uint64)
        for k in range(w.size):
            x = w[k]
            lo += x & np.uint64(0xFFFFFFFF)
            hi += x >> np.uint64(32)
    le = np.int64(lo & np.uint64(0xFFFFFFFF)) + np.int64(lo >> np.uint64(32))
    le += np.int64(hi & np.uint64(0xFFFFFFFF)) + np.int64(hi >> np.uint64(32))
    i = start + n8
    while i + 1 < end:
        le += np.int64(buf[i]) | (np.int64(buf[i + 1]) << 8)
        i += 2
    if i < end:
        le += np.int64(buf[i])
    f = csum_fold(le)
    return ((f & 0xFF) << 8) | (f >> 8)


@numba.njit(nogil=True, cache=True)
def complete_partial_csum(buf: np.ndarray, length: int, csum_start: int, csum_offset: int) -> bool:
    """Finish a ``CHECKSUM_PARTIAL`` frame in ``buf[:length]``; False if the offsets are out of range."""
    field = csum_start + csum_offset
    if csum_start < 14 or field + 2 > length:
        return False
    c = (~csum_sum(buf, csum_start, length)) & 0xFFFF
    if c == 0:
        c = 0xFFFF
    st16be(buf, field, c)
    return True


@numba.njit(nogil=True, cache=True, inline="always")
def ipv4_header_csum(buf: np.ndarray, l3: int) -> None:
    """Recompute the IPv4 header checksum of the header at ``buf[l3]``."""
    ihl = (buf[l3] & 0x0F) * 4
    buf[l3 + 10] = 0
    buf[l3 + 11] = 0
    st16be(buf, l3 + 10, (~csum_sum(buf, l3, l3 + ihl)) & 0xFFFF)


@numba.njit(nogil=True, cache=True, inline="always")
def find_l3(buf: np.ndarray, base: int, limit: int) -> int:
    """Offset from ``base`` of the IPv4/IPv6 header of the frame at ``buf[base]``, after the MACs
    and any 802.1Q/802.1ad tags and before ``limit``; -1 if there is none."""
    pos = 12
    while pos + 2 <= limit:
        et = ld16be(buf, base + pos)
        if et == 0x8100 or et == 0x88A8:
            pos += 4
            continue
        if et == 0x0800 or et == 0x86DD:
            return pos + 2
        return -1
    return -1


@numba.njit(nogil=True, cache=True)
def l4_full_csum(buf: np.ndarray, total: int, l3: int, l4: int, proto: int, field: int) -> None:
    """Compute the TCP/UDP checksum of ``buf[l4:total]`` (pseudo header included) into ``buf[field]``."""
    buf[field] = 0
    buf[field + 1] = 0
    l4len = total - l4
    if (buf[l3] >> 4) == 4:
        acc = csum_sum(buf, l3 + 12, l3 + 20)
    else:
        acc = csum_sum(buf, l3 + 8, l3 + 40)
    acc += proto + (l4len & 0xFFFF) + (l4len >> 16)
    acc += csum_sum(buf, l4, total)
    c = (~csum_fold(acc)) & 0xFFFF
    if c == 0 and proto == IPPROTO_UDP:
        c = 0xFFFF
    st16be(buf, field, c)


@numba.njit(nogil=True, cache=True)
def fix_segment(
    buf: np.ndarray, total: int, l3: int, l4: int, proto: int, index: int, last: bool, pay_off: int
) -> None:
    """Turn a copy of a GSO super-frame's headers plus one payload chunk into a valid frame.

    ``buf[:total]`` holds the headers and the chunk of payload starting at byte
    ``pay_off`` of the super-frame's payload; ``index`` counts segments from 0.
    Lengths, IPv4 ID, TCP sequence number and flags, and all checksums are rewritten.
    """
    if (buf[l3] >> 4) == 4:
        st16be(buf, l3 + 2, total - l3)
        st16be(buf, l3 + 4, (ld16be(buf, l3 + 4) + index) & 0xFFFF)
        ipv4_header_csum(buf, l3)
    else:
        st16be(buf, l3 + 4, total - l3 - 40)
    if proto == IPPROTO_TCP:
        st32be(buf, l4 + 4, (ld32be(buf, l4 + 4) + pay_off) & 0xFFFFFFFF)
        flags = buf[l4 + 13]
        if not last:
            flags &= ~(TCP_FIN | TCP_PSH) & 0xFF
        if index > 0:
            flags &= ~TCP_CWR & 0xFF
        buf[l4 + 13] = flags
        l4_full_csum(buf, total, l3, l4, proto, l4 + 16)
    else:
        st16be(buf, l4 + 4, total - l4)
        l4_full_csum(buf, total, l3, l4, proto, l4 + 6)
