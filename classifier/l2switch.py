"""The L2 switch kernel (OVS's NORMAL action): a burst in, per-output-port queues out.

```
burst ──► parse ──► ingress VLAN ──► learn (VLAN, src) ──► lookup (VLAN, dst)
      ──► unicast / flood within the VLAN ──► the frame's slot appended to each output port's queue
```

``switch_burst(data, meta, burst, n, keys, l2, info, vlan_map, now, drops, out, out_start)``

* ``data``, ``meta``, ``burst[:n]``: the frames, each read at its ``meta[slot, META_HEAD]`` (see
  ``backends.pool``).
* ``keys``: ``uint64[n_slots, NKEYS]`` parsed headers (``classifier.keys``): the L2 fields
  (``parse_l2``) and ``K_DROP`` are filled here; L3/L4 fields are left alone (``parse_burst``
  fills them when flow tables need them).
* ``l2``, ``info``: the L2 table (``classifier.l2table``).
* ``vlan_map``: ``int16[n_ports, 2, 4096]``, the VLAN configuration of each port:
  ``vlan_map[p, 0, vid]`` is the bridge VLAN of a frame received on ``p`` with 802.1Q VID
  ``vid`` (index 0 for untagged and priority-tagged frames) or ``-1`` when such frames are
  not allowed; ``vlan_map[p, 1, vlan]`` is how a frame of bridge VLAN ``vlan`` leaves ``p``:
  ``0`` untagged, ``vlan`` tagged, ``EGRESS_NOT_MEMBER`` or ``EGRESS_PORT_DOWN``.
  ``vswitch`` builds it from OVS's ``tag``/``trunks``/``vlan_mode``.
* ``now``: seconds, for learning timestamps.
* ``drops``: ``int64[n_ports, N_DROPS]`` counts by ingress port and reason (``classifier.drops``).
* ``out``: ``int32[2, n_ports * qcap]`` with ``qcap >= n``, ``out_start``: ``int32[2, n_ports + 1]``.
  Each port owns a queue region of ``qcap`` entries, so a frame is placed the moment it is
  decided (no second pass over the burst). On return, the queue of port ``p`` is
  ``out[:, out_start[0, p]:out_start[0, p] + out_start[1, p]]``; row 0 holds slots in burst
  order, row 1 the egress VLAN edit (``-1`` keep, ``0`` untag, ``1..4095`` tag) the port's
  ``tx_burst`` applies.

Returns the number of queue entries. A frame is never sent back to its ingress port.
``keys[slot, K_DROP]`` tells why a frame was dropped.

``switch_list(data, meta, slots, in_ports, n, ...)`` is the same switch for frames whose ingress port is
given rather than read from ``meta`` (the frames OpenFlow flows hand to NORMAL: after a patch port, the
bridge's ingress is the patch port, not the port that received the frame).

Unit test: ``tests/test_classifier.py`` (against ``classifier.reference``);
micro-benchmark: ``python -m bench classify``.
"""

from __future__ import annotations

import numba
import numpy as np

from classifier.drops import (
    DROP_NO_OUTPUT_PORT,
    DROP_PORT_DOWN,
    DROP_RESERVED_MULTICAST,
    DROP_RX_SRC_MULTICAST,
    DROP_SAME_PORT,
    DROP_VLAN_FILTERED,
)
from classifier.keys import (
    K_DROP,
    K_ETH_DST,
    K_ETH_SRC,
    K_VLAN_VID,
    VID_PRESENT,
)
from classifier.l2table import I_HITS, I_MISSES, l2_learn, l2_lookup
from classifier.parse import META_IN_PORT, frame_span, parse_l2

EGRESS_NOT_MEMBER = -1
EGRESS_PORT_DOWN = -2
INGRESS_DENY = -1

MCAST_BIT = np.uint64(1 << 40)
RESERVED_PREFIX = np.uint64(0x0180C2000000 >> 4)  # 01:80:c2:00:00:0X


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _egress_edit(eg: int, tagged: bool, vid: int) -> int:
    if eg == 0:
        return 0 if tagged else -1
    if tagged and vid == eg:
        return -1
    return eg


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _empty_queues(vlan_map: np.ndarray, out: np.ndarray, out_start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every port's queue empty, each owning ``out.shape[1] // n_ports`` entries; returns the rows of
    ``out_start`` (each queue's start, its count)."""
    n_ports = vlan_map.shape[0]
    qcap = out.shape[1] // n_ports
    start = out_start[0]
    count = out_start[1]
    for p in range(n_ports):
        start[p] = p * qcap
        count[p] = 0
    start[n_ports] = n_ports * qcap
    count[n_ports] = 0
    return start, count


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _switch_frame(
    data: np.ndarray,
    meta: np.ndarray,
    s: int,
    in_port: int,
    width: int,
    keys: np.ndarray,
    l2: np.ndarray,
    info: np.ndarray,
    vlan_map: np.ndarray,
    now: int,
    drops: np.ndarray,
    out: np.ndarray,
    start: np.ndarray,
    count: np.ndarray,
) -> int:
    """Decide the outputs of the frame in slot ``s`` received on ``in_port``; returns the queue entries made."""
    n_ports = vlan_map.shape[0]
    h, ln = frame_span(meta, s, width)
    reason = parse_l2(data, s, h, ln, keys)
    if reason != 0:
        drops[in_port, reason] += 1
        return 0
    src = keys[s, K_ETH_SRC]
    dst = keys[s, K_ETH_DST]
    if src & MCAST_BIT:
        keys[s, K_DROP] = DROP_RX_SRC_MULTICAST
        drops[in_port, DROP_RX_SRC_MULTICAST] += 1
        return 0
    if (dst >> np.uint64(4)) == RESERVED_PREFIX:
        keys[s, K_DROP] = DROP_RESERVED_MULTICAST
        drops[in_port, DROP_RESERVED_MULTICAST] += 1
        return 0
    tci = keys[s, K_VLAN_VID]
    tagged = (tci & np.uint64(VID_PRESENT)) != 0
    vid = np.int64(tci & np.uint64(0xFFF))
    vlan = np.int64(vlan_map[in_port, 0, vid])
    if vlan < 0:
        keys[s, K_DROP] = DROP_VLAN_FILTERED
        drops[in_port, DROP_VLAN_FILTERED] += 1
        return 0
    l2_learn(l2, info, vlan, src, in_port, now)
    if not (dst & MCAST_BIT):
        p = l2_lookup(l2, info, vlan, dst)
        if p >= 0:
            info[I_HITS] += 1
            if p == in_port:
                keys[s, K_DROP] = DROP_SAME_PORT
                drops[in_port, DROP_SAME_PORT] += 1
                return 0
            eg = np.int64(vlan_map[p, 1, vlan])
            if eg < 0:
                reason = DROP_PORT_DOWN if eg == EGRESS_PORT_DOWN else DROP_VLAN_FILTERED
                keys[s, K_DROP] = reason
                drops[in_port, reason] += 1
                return 0
            pos = start[p] + count[p]
            out[0, pos] = s
            out[1, pos] = _egress_edit(eg, tagged, vid)
            count[p] += 1
            return 1
        info[I_MISSES] += 1
    # Flood within the VLAN, never back to the ingress port.
    copies = 0
    for q in range(n_ports):
        if q != in_port:
            eg = np.int64(vlan_map[q, 1, vlan])
            if eg >= 0:
                pos = start[q] + count[q]
                out[0, pos] = s
                out[1, pos] = _egress_edit(eg, tagged, vid)
                count[q] += 1
                copies += 1
    if copies == 0:
        keys[s, K_DROP] = DROP_NO_OUTPUT_PORT
        drops[in_port, DROP_NO_OUTPUT_PORT] += 1
    return copies


@numba.njit(nogil=True, cache=True, _nrt=False)
def switch_burst(
    data: np.ndarray,
    meta: np.ndarray,
    burst: np.ndarray,
    n: int,
    keys: np.ndarray,
    l2: np.ndarray,
    info: np.ndarray,
    vlan_map: np.ndarray,
    now: int,
    drops: np.ndarray,
    out: np.ndarray,
    out_start: np.ndarray,
) -> int:
    """Decide the output of every frame in ``burst[:n]`` and place it in per-port queues."""
    start, count = _empty_queues(vlan_map, out, out_start)
    width = data.shape[1]
    total = 0
    for i in range(n):
        s = burst[i]
        total += _switch_frame(data, meta, s, meta[s, META_IN_PORT], width, keys, l2, info, vlan_map, now, drops,
                               out, start, count)
    return total


@numba.njit(nogil=True, cache=True, _nrt=False)
def switch_list(
    data: np.ndarray,
    meta: np.ndarray,
    slots: np.ndarray,
    in_ports: np.ndarray,
    n: int,
    keys: np.ndarray,
    l2: np.ndarray,
    info: np.ndarray,
    vlan_map: np.ndarray,
    now: int,
    drops: np.ndarray,
    out: np.ndarray,
    out_start: np.ndarray,
) -> int:
    """``switch_burst`` for frames whose ingress port is given (``in_ports[i]`` for ``slots[i]``, each in
    ``0 .. n_ports - 1``) instead of read from the slot: the frames OpenFlow actions hand to NORMAL, whose
    ingress for this bridge may be a patch port rather than the port that received them."""
    start, count = _empty_queues(vlan_map, out, out_start)
    width = data.shape[1]
    total = 0
    for i in range(n):
        total += _switch_frame(data, meta, slots[i], in_ports[i], width, keys, l2, info, vlan_map, now, drops, out,
                               start, count)
    return total
