"""The VMDq-style L2 table: (VLAN, MAC) -> port, with learning, aging, a size limit and static entries.

Like the receive-queue sorter of an Intel VMDq NIC, the table maps a destination
(VLAN, MAC) to the port (queue) of the VM that owns it. It is an open-addressing hash
table with linear probing, kept in two arrays so numba kernels can use it directly:

* ``l2``: ``uint64[capacity, 2]``; column 0 is the key
  ``VALID | vlan << 48 | mac`` (0 = empty bucket), column 1 the value
  ``last_seen << 32 | static << 16 | port``.
* ``info``: ``int64[INFO_SIZE]``: sizes, settings and event counters (``I_*`` below).

Rules: a learned entry is refreshed by every frame from its MAC and moves when the MAC
shows up on another port; it ages out ``aging`` seconds after it was last seen. Static
entries (a VM's configured MAC) never age and never move. When ``limit`` learned entries
exist, a new MAC is not learned (it keeps being flooded) and ``I_TABLE_FULL`` counts the
miss: learned entries never displace static ones nor each other.

Unit test: ``tests/test_classifier.py``; micro-benchmark: ``python -m bench classify``.
"""

from __future__ import annotations

import numba
import numpy as np

VALID = np.uint64(1 << 63)
MAC_MASK = np.uint64((1 << 48) - 1)
GOLDEN = np.uint64(0x9E3779B97F4A7C15)

I_LEARNED_COUNT = 0   # learned entries in the table
I_STATIC_COUNT = 1    # static entries in the table
I_LIMIT = 2           # maximum learned entries (OVS other_config:mac-table-size)
I_MASK = 3            # capacity - 1
I_SHIFT = 4           # 64 - log2(capacity)
I_AGING = 5           # seconds (OVS other_config:mac-aging-time)
I_LEARNED = 6         # event counters: new entries learned
I_MOVED = 7           # MAC moved to another port
I_AGED = 8            # entries removed by aging
I_TABLE_FULL = 9      # new MACs not learned because the table was full
I_STATIC_MOVE_REFUSED = 10  # frames from a static MAC on another port (entry kept)
I_HITS = 11           # unicast lookups that found a port
I_MISSES = 12         # unicast lookups that did not (flooded)
INFO_SIZE = 16

INFO_NAMES = {
    "learned": I_LEARNED,
    "moved": I_MOVED,
    "aged": I_AGED,
    "table_full": I_TABLE_FULL,
    "static_move_refused": I_STATIC_MOVE_REFUSED,
    "hits": I_HITS,
    "misses": I_MISSES,
}

DEFAULT_LIMIT = 8192
DEFAULT_AGING = 300
STATIC_HEADROOM = 1024


def make_l2table(limit: int = DEFAULT_LIMIT, aging: int = DEFAULT_AGING) -> tuple[np.ndarray, np.ndarray]:
    """Empty table for ``limit`` learned entries (plus static headroom) and an aging time in seconds."""
    if limit < 1:
        raise ValueError(f"mac-table-size must be at least 1, got {limit}")
    if aging < 1:
        raise ValueError(f"mac-aging-time must be at least 1 second, got {aging}")
    capacity = 64
    while capacity < 2 * (limit + STATIC_HEADROOM):
        capacity *= 2
    l2 = np.zeros((capacity, 2), dtype=np.uint64)
    info = np.zeros(INFO_SIZE, dtype=np.int64)
    info[I_LIMIT] = limit
    info[I_MASK] = capacity - 1
    info[I_SHIFT] = 64 - (capacity.bit_length() - 1)
    info[I_AGING] = aging
    return l2, info


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def l2_key(vlan: int, mac: np.uint64) -> np.uint64:
    """Table key of (vlan, mac)."""
    return VALID | (np.uint64(vlan) << np.uint64(48)) | (np.uint64(mac) & MAC_MASK)


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _home(key: np.uint64, info: np.ndarray) -> int:
    return np.int64((key * GOLDEN) >> np.uint64(info[I_SHIFT]))


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def l2_find(l2: np.ndarray, info: np.ndarray, key: np.uint64) -> int:
    """Bucket index holding ``key``, or -1."""
    mask = info[I_MASK]
    i = _home(key, info)
    while True:
        k = l2[i, 0]
        if k == key:
            return i
        if k == 0:
            return -1
        i = (i + 1) & mask


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _insert_new(l2: np.ndarray, info: np.ndarray, key: np.uint64, value: np.uint64) -> None:
    mask = info[I_MASK]
    i = _home(key, info)
    while l2[i, 0] != 0:
        i = (i + 1) & mask
    l2[i, 0] = key
    l2[i, 1] = value


@numba.njit(nogil=True, cache=True, _nrt=False)
def l2_delete_at(l2: np.ndarray, info: np.ndarray, i: int) -> None:
    """Remove the entry in bucket ``i`` (backward-shift deletion keeps probe chains intact)."""
    mask = info[I_MASK]
    if (l2[i, 1] >> np.uint64(16)) & np.uint64(1):
        info[I_STATIC_COUNT] -= 1
    else:
        info[I_LEARNED_COUNT] -= 1
    j = i
    while True:
        j = (j + 1) & mask
        kj = l2[j, 0]
        if kj == 0:
            break
        h = _home(kj, info)
        # Move j back to i unless its home lies cyclically in (i, j].
        if (j > i and (h <= i or h > j)) or (j < i and (h <= i and h > j)):
            l2[i, 0] = kj
            l2[i, 1] = l2[j, 1]
            i = j
    l2[i, 0] = 0
    l2[i, 1] = 0


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def l2_learn(l2: np.ndarray, info: np.ndarray, vlan: int, mac: np.uint64, port: int, now: int) -> None:
    """Learn that (vlan, mac) was seen on ``port`` at time ``now`` (seconds)."""
    key = l2_key(vlan, mac)
    i = l2_find(l2, info, key)
    value = (np.uint64(now) << np.uint64(32)) | np.uint64(port)
    if i >= 0:
        old = l2[i, 1]
        if (old >> np.uint64(16)) & np.uint64(1):
            if (old & np.uint64(0xFFFF)) != np.uint64(port):
                info[I_STATIC_MOVE_REFUSED] += 1
            return
        if old != value:  # same port, same second: no store, the bucket's cache line stays clean
            if (old & np.uint64(0xFFFF)) != np.uint64(port):
                info[I_MOVED] += 1
            l2[i, 1] = value
        return
    if info[I_LEARNED_COUNT] >= info[I_LIMIT]:
        info[I_TABLE_FULL] += 1
        return
    _insert_new(l2, info, key, value)
    info[I_LEARNED_COUNT] += 1
    info[I_LEARNED] += 1


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def l2_lookup(l2: np.ndarray, info: np.ndarray, vlan: int, mac: np.uint64) -> int:
    """Port of (vlan, mac), or -1 when unknown."""
    i = l2_find(l2, info, l2_key(vlan, mac))
    if i < 0:
        return -1
    return np.int64(l2[i, 1] & np.uint64(0xFFFF))


@numba.njit(nogil=True, cache=True, _nrt=False)
def l2_add_static(l2: np.ndarray, info: np.ndarray, vlan: int, mac: np.uint64, port: int) -> bool:
    """Add or replace a static entry; False when the static headroom is exhausted."""
    key = l2_key(vlan, mac)
    value = (np.uint64(1) << np.uint64(16)) | np.uint64(port)
    i = l2_find(l2, info, key)
    if i >= 0:
        if not ((l2[i, 1] >> np.uint64(16)) & np.uint64(1)):
            info[I_LEARNED_COUNT] -= 1
            info[I_STATIC_COUNT] += 1
        l2[i, 1] = value
        return True
    if info[I_STATIC_COUNT] >= STATIC_HEADROOM:
        return False
    _insert_new(l2, info, key, value)
    info[I_STATIC_COUNT] += 1
    return True


@numba.njit(nogil=True, cache=True, _nrt=False)
def l2_remove(l2: np.ndarray, info: np.ndarray, vlan: int, mac: np.uint64) -> bool:
    """Remove (vlan, mac), learned or static; False when absent."""
    i = l2_find(l2, info, l2_key(vlan, mac))
    if i < 0:
        return False
    l2_delete_at(l2, info, i)
    return True


@numba.njit(nogil=True, cache=True, _nrt=False)
def l2_age(l2: np.ndarray, info: np.ndarray, now: int) -> int:
    """Remove learned entries last seen ``aging`` or more seconds before ``now``; return how many."""
    aging = info[I_AGING]
    removed = 0
    i = 0
    cap = l2.shape[0]
    while i < cap:
        if l2[i, 0] != 0:
            v = l2[i, 1]
            if not ((v >> np.uint64(16)) & np.uint64(1)) and now - np.int64(v >> np.uint64(32)) >= aging:
                l2_delete_at(l2, info, i)
                removed += 1
                continue  # bucket i now holds a shifted entry (or is empty): look again
        i += 1
    info[I_AGED] += removed
    return removed


@numba.njit(nogil=True, cache=True, _nrt=False)
def l2_flush(l2: np.ndarray, info: np.ndarray, port: int, include_static: bool) -> int:
    """Remove learned entries (and static ones when asked) of ``port``, or of every port when -1."""
    removed = 0
    i = 0
    cap = l2.shape[0]
    while i < cap:
        if l2[i, 0] != 0:
            v = l2[i, 1]
            is_static = (v >> np.uint64(16)) & np.uint64(1)
            p = np.int64(v & np.uint64(0xFFFF))
            if (port < 0 or p == port) and (include_static or not is_static):
                l2_delete_at(l2, info, i)
                removed += 1
                continue
        i += 1
    return removed


@numba.njit(nogil=True, cache=True, _nrt=False)
def l2_copy(src: np.ndarray, dst: np.ndarray, dst_info: np.ndarray) -> int:
    """Insert every entry of table ``src`` into ``dst`` (timestamps kept, ``dst``'s limit applied); returns how many."""
    copied = 0
    for i in range(src.shape[0]):
        key = src[i, 0]
        if key == 0 or l2_find(dst, dst_info, key) >= 0:
            continue
        value = src[i, 1]
        if (value >> np.uint64(16)) & np.uint64(1):
            if dst_info[I_STATIC_COUNT] >= STATIC_HEADROOM:
                continue
            dst_info[I_STATIC_COUNT] += 1
        else:
            if dst_info[I_LEARNED_COUNT] >= dst_info[I_LIMIT]:
                continue
            dst_info[I_LEARNED_COUNT] += 1
        _insert_new(dst, dst_info, key, value)
        copied += 1
    return copied


def l2_entries(l2: np.ndarray, now: int) -> list[tuple[int, int, int, int, bool]]:
    """All entries as (port, vlan, mac, age_seconds, static), sorted by port, VLAN, MAC (slow path)."""
    used = np.nonzero(l2[:, 0])[0]
    out = []
    for i in used:
        key = int(l2[i, 0])
        value = int(l2[i, 1])
        static = bool((value >> 16) & 1)
        age = 0 if static else max(0, now - (value >> 32))
        out.append((value & 0xFFFF, (key >> 48) & 0xFFF, key & ((1 << 48) - 1), age, static))
    out.sort()
    return out
