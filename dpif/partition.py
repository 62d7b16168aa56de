"""Split a burst between the bridges of one datapath, keeping each bridge's frames in arrival order.

```
 burst ─► group_burst: group of each frame's ingress port ─► sorted[start[g] : start[g + 1]] per group
 NORMAL list (slot, bridge, in_port) ─► group_normal ─► slots / in_ports per bridge, in list order
```

One datapath serves every bridge: a burst holds frames of several bridges, and what happens to a frame
depends on its bridge (the NORMAL-only shortcut, the bridge's L2 table, a secure bridge's drop). The
caller gives each datapath port a group (``port_group``: the megaflow path, a drop, one group per
NORMAL-only bridge); these kernels make one stable counting sort per burst, so the per-bridge work is
a slice per group and no Python runs per frame.

Tests: ``tests/test_one_datapath.py``.
"""

from __future__ import annotations

import numba
import numpy as np

from backends.pool import META_IN_PORT
from dpif.actions import SIDE_NORMAL, SIDE_NORMAL_BRIDGE, SIDE_NORMAL_IN


@numba.njit(nogil=True, cache=True, _nrt=False)
def group_burst(meta: np.ndarray, burst: np.ndarray, n: int, port_group: np.ndarray, sorted_out: np.ndarray,
                start: np.ndarray, used_out: np.ndarray) -> int:
    """Sort ``burst[:n]`` by the group of each frame's ingress port (``port_group``; a port outside it goes to
    the last group) into ``sorted_out[:n]``, stable; ``start[g]`` is where group ``g`` begins (``start`` has
    one entry more than there are groups). Returns the number of groups that have frames, listed in ascending
    order in ``used_out`` (as long as ``start``)."""
    n_groups = start.shape[0] - 1
    n_ports = port_group.shape[0]
    for g in range(n_groups + 1):
        start[g] = 0
    for i in range(n):
        p = meta[burst[i], META_IN_PORT]
        g = port_group[p] if 0 <= p < n_ports else n_groups - 1
        start[g + 1] += 1
    used = 0
    total = 0
    for g in range(n_groups):     # start[g + 1]: the count of group g, then its cursor, then its end
        c = start[g + 1]
        if c:
            used_out[used] = g
            used += 1
        start[g + 1] = total
        total += c
    for i in range(n):
        s = burst[i]
        p = meta[s, META_IN_PORT]
        g = port_group[p] if 0 <= p < n_ports else n_groups - 1
        sorted_out[start[g + 1]] = s
        start[g + 1] += 1
    return used


@numba.njit(nogil=True, cache=True, _nrt=False)
def group_normal(side: np.ndarray, n: int, n_ports: int, slots_out: np.ndarray, in_out: np.ndarray,
                 start: np.ndarray) -> int:
    """Sort the NORMAL list ``side[SIDE_NORMAL*, :n]`` by bridge into ``slots_out`` / ``in_out``, stable;
    ``start[b]`` is where bridge ``b`` begins (``start`` has one entry more than there are bridges). Entries
    whose ingress port is not a port (a packet-out from the controller) or whose bridge is out of range are
    left out. Returns how many were left out."""
    n_bridges = start.shape[0] - 1
    for b in range(n_bridges + 1):
        start[b] = 0
    lost = 0
    for i in range(n):
        b = side[SIDE_NORMAL_BRIDGE, i]
        p = side[SIDE_NORMAL_IN, i]
        if 0 <= b < n_bridges and 0 <= p < n_ports:
            start[b + 1] += 1
        else:
            lost += 1
    total = 0
    for b in range(n_bridges):
        c = start[b + 1]
        start[b + 1] = total
        total += c
    for i in range(n):
        b = side[SIDE_NORMAL_BRIDGE, i]
        p = side[SIDE_NORMAL_IN, i]
        if 0 <= b < n_bridges and 0 <= p < n_ports:
            k = start[b + 1]
            slots_out[k] = side[SIDE_NORMAL, i]
            in_out[k] = p
            start[b + 1] = k + 1
    return lost
