"""Meters in the datapath: every meter's token buckets and counters in one ``int64`` array the executor's
``METER`` action charges (OVS's ``dp_netdev_run_meter``).

```
 meter-mod ──► ofproto.meters.MeterTable ──► MeterBank.alloc / configure / free   (control side, any thread)
                                                   │  rows of MeterBank.arr
 OP_METER(slot, gen, skip) in a megaflow's program ──► meter_admit (executor, one clock read per burst)
 meter-stats ◄── the row's counters (packets / bytes in, per band the drops)
```

Row layout (``M_*``, then ``MAX_BANDS`` bands of ``B_WORDS`` words, ``B_*``): a generation (``M_GEN``), the
OpenFlow flags, the number of bands, when the buckets were last refilled (ns, the caller's monotonic clock),
packets and bytes in; per band its rate (kb/s or packets/s), bucket capacity and fill, packets and bytes it
dropped. Tokens are in units of 10^-9 packet or kilobit, so that ``elapsed_ns * rate`` refills exactly: one
packet costs 10^9, a frame of ``n`` bytes costs ``n * 8 * 10^6`` (``n * 8 / 1000`` kilobits).

A frame pays every band: a band whose bucket holds the frame's cost pays it; the frame exceeds a band that
cannot, and when it exceeds any, the highest-rate band exceeded (the first of equal rates) counts it and
drops it (every band is a drop band: what OVS's userspace datapath accepts).

A megaflow names a meter by slot and generation: deleting a meter bumps its slot's generation, so a megaflow
translated before the delete (removed at the next revalidation: OpenFlow deletes the meter's flows) passes
frames without charging the slot's next meter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numba
import numpy as np

M_GEN, M_FLAGS, M_NBANDS, M_LAST, M_PACKETS, M_BYTES = range(6)
M_HDR = 6
B_RATE, B_CAP, B_TOKENS, B_PACKETS, B_BYTES = range(5)
B_WORDS = 5
MAX_BANDS = 8
M_WORDS = M_HDR + MAX_BANDS * B_WORDS
F_KBPS, F_PKTPS = 1, 2           # OpenFlow's OFPMF_KBPS / OFPMF_PKTPS
TOKEN_SCALE = 1_000_000_000      # tokens per packet or kilobit
BYTE_COST = 8 * 1_000_000        # tokens per byte in a kbps meter

#: no meters, for programs without any (tests, warm-up): no generation matches its row
NO_METERS = np.zeros((1, M_WORDS), dtype=np.int64)
NO_METERS[0, M_GEN] = -1


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def meter_admit(meters: np.ndarray, slot: int, gen: int, nbytes: int, now_ns: int) -> bool:
    """Charge one frame of ``nbytes`` to meter ``slot`` (if it is still generation ``gen``) at ``now_ns``:
    False when a band drops it (counted for that band)."""
    if slot < 0 or slot >= meters.shape[0] or meters[slot, M_GEN] != gen:
        return True
    elapsed = now_ns - meters[slot, M_LAST]
    if elapsed > 0:
        meters[slot, M_LAST] = now_ns
    else:
        elapsed = 0
    meters[slot, M_PACKETS] += 1
    meters[slot, M_BYTES] += nbytes
    cost = TOKEN_SCALE if meters[slot, M_FLAGS] & F_PKTPS else nbytes * BYTE_COST
    hit = -1
    hit_rate = -1
    nb = min(meters[slot, M_NBANDS], MAX_BANDS)
    for b in range(nb):
        o = M_HDR + b * B_WORDS
        rate = meters[slot, o + B_RATE]
        cap = meters[slot, o + B_CAP]
        t = meters[slot, o + B_TOKENS]
        room = cap - t
        if elapsed > 0 and room > 0 and rate > 0:
            if elapsed >= (room + rate - 1) // rate:     # elapsed * rate >= room, without overflow
                t = cap
            else:
                t += elapsed * rate
        if t >= cost:
            t -= cost
        elif rate > hit_rate:
            hit = b
            hit_rate = rate
        meters[slot, o + B_TOKENS] = t
    if hit < 0:
        return True
    o = M_HDR + hit * B_WORDS
    meters[slot, o + B_PACKETS] += 1
    meters[slot, o + B_BYTES] += nbytes
    return False


@numba.njit(nogil=True, cache=True, _nrt=False)
def meter_burst(meters: np.ndarray, slot: int, gen: int, sizes: np.ndarray, n: int, now_ns: int,
                passed: np.ndarray) -> int:
    """``meter_admit`` for ``sizes[:n]`` in order (``passed[i]`` 1 or 0); the number passed. For tests and
    benchmarks of the buckets alone."""
    k = 0
    for i in range(n):
        ok = meter_admit(meters, slot, gen, sizes[i], now_ns)
        passed[i] = 1 if ok else 0
        k += passed[i]
    return k


class MeterBank:
    """The datapath's meter rows: allocated, configured and freed from the control side (any thread, under a
    lock); read and charged by the executor (``arr``, read once per burst: growing it replaces the array)."""

    def __init__(self, slots: int = 64) -> None:
        self.arr = np.zeros((slots, M_WORDS), dtype=np.int64)
        self._free = list(range(slots - 1, -1, -1))
        self._lock = threading.Lock()

    def alloc(self) -> tuple[int, int]:
        """A free slot and its generation."""
        with self._lock:
            if not self._free:
                old = self.arr
                n = old.shape[0]
                new = np.zeros((2 * n, M_WORDS), dtype=np.int64)
                new[:n] = old
                self.arr = new
                self._free = list(range(2 * n - 1, n - 1, -1))
            slot = self._free.pop()
            return slot, int(self.arr[slot, M_GEN])

    def configure(self, slot: int, flags: int, bands: Sequence[tuple[int, int]]) -> None:
        """Meter ``slot`` with OpenFlow ``flags`` and ``(rate, capacity)`` bands (capacity in packets or
        kilobits): buckets full, counters at 0."""
        if len(bands) > MAX_BANDS:
            raise ValueError(f"{len(bands)} bands (at most {MAX_BANDS})")
        with self._lock:
            row = self.arr[slot]
            row[M_NBANDS] = 0
            for b, (rate, cap) in enumerate(bands):
                o = M_HDR + b * B_WORDS
                row[o + B_RATE] = rate
                row[o + B_CAP] = cap * TOKEN_SCALE
                row[o + B_TOKENS] = cap * TOKEN_SCALE
                row[o + B_PACKETS] = row[o + B_BYTES] = 0
            row[M_PACKETS] = row[M_BYTES] = 0
            row[M_LAST] = time.monotonic_ns()
            row[M_FLAGS] = flags
            row[M_NBANDS] = len(bands)

    def free(self, slot: int) -> None:
        """Give ``slot`` back; programs naming its old generation pass frames uncharged from now on."""
        with self._lock:
            self.arr[slot, M_GEN] += 1
            self.arr[slot, M_NBANDS] = 0
            self._free.append(slot)

    def counters(self, slot: int, gen: int, n_bands: int) -> tuple[int, int, list[list[int]]]:
        """(packets in, bytes in, per band [packets, bytes] dropped) of meter ``slot``; zeros when the slot is
        no longer generation ``gen``."""
        row = self.arr[slot].tolist()
        if row[M_GEN] != gen:
            return 0, 0, [[0, 0] for _ in range(n_bands)]
        bands = [[row[M_HDR + b * B_WORDS + B_PACKETS], row[M_HDR + b * B_WORDS + B_BYTES]] for b in range(n_bands)]
        return row[M_PACKETS], row[M_BYTES], bands


#: the process's bank: the datapath charges it, every bridge's meter table allocates from it
BANK = MeterBank()
