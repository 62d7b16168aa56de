"""Egress VLAN edits shared by every port's transmit kernel.

An egress edit ``vlan`` (see ``backends.port``) is applied while a frame leaves a pool
slot and never stays in the slot (a flooded slot is sent by several ports with different
edits):

* ``-1`` keep the frame as it is;
* ``0`` remove the outer 802.1Q (TPID 0x8100) tag, if there is one;
* ``1..4095`` tag the frame with that VID: the VID of an outer 802.1Q tag is replaced
  (its PCP and DEI bits are kept), an untagged frame gets a new tag with PCP 0.

Three forms, each given the frame where it starts (``data[slot, META_HEAD:]``, see
``backends.pool``):

* ``vlan_iov`` describes the edited frame as up to three iovecs that point into the slot
  (zero copy; ``sendmmsg`` uses it for every edit, as one batch may hold the same slot
  twice with different edits);
* ``copy_edit`` writes the edited frame into a buffer;
* ``push_in_place`` tags a frame that has at least 4 bytes of headroom in its slot: the 12
  MAC bytes move 4 bytes left into the headroom and the tag follows them, so the tagged
  frame is one contiguous range (one iovec, one copy) and no byte after the MACs moves.
  ``undo_push`` puts the slot back; a transmit kernel calls it as soon as the device (or
  guest) has the frame, before it looks at the next queue entry, so a slot queued for
  several ports is never seen edited. A slot must not be read by another thread while a
  port transmits it.
"""

from __future__ import annotations

import numba
import numpy as np

from backends.libc import copy_bytes, ld16be

ETH_P_8021Q = 0x8100

OP_KEEP = 0
OP_STRIP = 1
OP_PUSH = 2
OP_REPLACE = 3


@numba.njit(nogil=True, cache=True, inline="always")
def vlan_plan(frame: np.ndarray, length: int, vlan: int) -> tuple[int, int]:
    """Which edit ``vlan`` means for this frame: ``(op, tci)`` with ``op`` one of ``OP_*``."""
    if vlan < 0 or length < 12:
        return OP_KEEP, 0
    tagged = length >= 18 and frame[12] == 0x81 and frame[13] == 0x00
    if vlan == 0:
        if tagged:
            return OP_STRIP, 0
        return OP_KEEP, 0
    vid = vlan & 0xFFF
    if tagged:
        return OP_REPLACE, (ld16be(frame, 14) & 0xF000) | vid
    return OP_PUSH, vid


@numba.njit(nogil=True, cache=True, inline="always")
def edited_len(op: int, length: int) -> int:
    """Length of a ``length``-byte frame after edit ``op``."""
    if op == OP_STRIP:
        return length - 4
    if op == OP_PUSH:
        return length + 4
    return length


@numba.njit(nogil=True, cache=True, inline="always")
def vlan_iov(
    frame_addr: int, frame: np.ndarray, length: int, vlan: int, scratch: np.ndarray, iov: int, tag: int
) -> tuple[int, int]:
    """Describe the edited frame as iovecs in ``scratch[iov:iov+6]``; return ``(n_iov, out_len)``.

    ``frame_addr`` is the address of ``frame[0]``; a new tag is stored in the 8-byte word
    ``scratch[tag]`` (it must stay untouched until the frame is sent).
    """
    op, tci = vlan_plan(frame, length, vlan)
    if op == OP_KEEP:
        scratch[iov] = frame_addr
        scratch[iov + 1] = length
        return 1, length
    scratch[iov] = frame_addr
    scratch[iov + 1] = 12
    if op == OP_STRIP:
        scratch[iov + 2] = frame_addr + 16
        scratch[iov + 3] = length - 16
        return 2, length - 4
    # bytes 81 00 <tci hi> <tci lo> as a little-endian word
    scratch[tag] = 0x81 | (((tci >> 8) & 0xFF) << 16) | ((tci & 0xFF) << 24)
    scratch[iov + 2] = np.int64(scratch.ctypes.data) + tag * 8
    scratch[iov + 3] = 4
    rest = 12 if op == OP_PUSH else 16
    scratch[iov + 4] = frame_addr + rest
    scratch[iov + 5] = length - rest
    return 3, edited_len(op, length)


@numba.njit(nogil=True, cache=True, inline="always")
def copy_edit(frame: np.ndarray, length: int, vlan: int, dst: np.ndarray, dst_off: int) -> int:
    """Write the edited frame to ``dst[dst_off:]`` (room for ``length + 4`` bytes); return its length."""
    op, tci = vlan_plan(frame, length, vlan)
    if op == OP_KEEP:
        copy_bytes(dst, dst_off, frame, 0, length)
        return length
    copy_bytes(dst, dst_off, frame, 0, 12)
    if op == OP_STRIP:
        copy_bytes(dst, dst_off + 12, frame, 16, length - 16)
        return length - 4
    dst[dst_off + 12] = 0x81
    dst[dst_off + 13] = 0x00
    dst[dst_off + 14] = (tci >> 8) & 0xFF
    dst[dst_off + 15] = tci & 0xFF
    if op == OP_PUSH:
        copy_bytes(dst, dst_off + 16, frame, 12, length - 12)
        return length + 4
    copy_bytes(dst, dst_off + 16, frame, 16, length - 16)
    return length


@numba.njit(nogil=True, cache=True, inline="always")
def push_in_place(data: np.ndarray, s: int, head: int, length: int, vlan: int) -> int:
    """Tag the frame at ``data[s, head:head+length]`` in its slot when ``vlan`` is a push and ``head >= 4``.

    Returns the tagged frame's head (``head - 4``; its length is ``length + 4``), or -1 when the edit
    is not a push or there is no headroom (nothing written). Bytes from ``head + 12`` on are untouched.
    """
    if vlan <= 0 or head < 4:
        return -1
    op, tci = vlan_plan(data[s, head:], length, vlan)
    if op != OP_PUSH:
        return -1
    for k in range(head - 4, head + 8):
        data[s, k] = data[s, k + 4]
    data[s, head + 8] = 0x81
    data[s, head + 9] = 0x00
    data[s, head + 10] = (tci >> 8) & 0xFF
    data[s, head + 11] = tci & 0xFF
    return head - 4


@numba.njit(nogil=True, cache=True, inline="always")
def undo_push(data: np.ndarray, s: int, head: int) -> None:
    """Put back the MACs ``push_in_place`` moved (``head``: the frame's head before the push)."""
    for k in range(head + 11, head - 1, -1):
        data[s, k] = data[s, k - 4]
