"""Patch ports in the datapath: the frames queued for one end enter the peer's bridge.

```
 port queues (slot, egress VLAN edit) of patch port p ─► patch_handover ─► fresh slot: the frame with the
        edit applied, ingress port = peer[p] ─► the next round of the same iteration (group_burst, ...)
```

OpenFlow outputs to a patch port never reach a queue: the translator continues in the peer's bridge.
What does is NORMAL's choice (the L2 switch runs at line rate, after translation): a frame the switch
queues for a patch port is copied into a fresh slot (the original may be queued for other ports too),
with the port's egress VLAN edit applied, and handed to the peer's bridge as a frame received on the
peer, within the same datapath iteration. The caller bounds the rounds (a loop of patch ports).

Tests: ``tests/test_patch.py``.
"""

from __future__ import annotations

import numba
import numpy as np

from backends.pool import META_HEAD, META_IN_PORT, META_LEN, slot_alloc
from backends.vlan_edit import copy_edit

# per patch port counts (``patch_handover``'s ``counts``)
PC_TX_PACKETS = 0    # handed to the peer
PC_TX_BYTES = 1
PC_NO_PEER = 2       # dropped: the port has no peer
PC_NO_SLOT = 3       # dropped: no free slot for the copy
PC_OVERFLOW = 4      # dropped: more frames than one round takes
PC_FIELDS = 5


@numba.njit(nogil=True, cache=True, _nrt=False)
def patch_handover(data: np.ndarray, meta: np.ndarray, out: np.ndarray, out_start: np.ndarray,
                   patch_ports: np.ndarray, peer: np.ndarray, headroom: int, free_stack: np.ndarray,
                   free_top: np.ndarray, dst: np.ndarray, counts: np.ndarray) -> int:
    """Copy the frames queued for each port of ``patch_ports`` into fresh slots (``dst``, in queue order),
    each with its egress VLAN edit applied, at ``headroom``, received on ``peer[port]``; empty those queues.
    ``counts[port, PC_*]`` adds up what was handed over and dropped. Returns the number of slots in ``dst``."""
    n = 0
    cap = dst.shape[0]
    width = data.shape[1]
    for i in range(patch_ports.shape[0]):
        p = patch_ports[i]
        q = peer[p]
        a = out_start[0, p]
        c = out_start[1, p]
        out_start[1, p] = 0
        for k in range(c):
            s = out[0, a + k]
            if q < 0:
                counts[p, PC_NO_PEER] += 1
                continue
            if n >= cap:
                counts[p, PC_OVERFLOW] += 1
                continue
            head = meta[s, META_HEAD]
            ln = meta[s, META_LEN]
            if head < 0 or ln < 14 or head + ln > width or headroom + ln + 4 > width:
                counts[p, PC_OVERFLOW] += 1
                continue
            d = slot_alloc(free_stack, free_top)
            if d < 0:
                counts[p, PC_NO_SLOT] += 1
                continue
            new_len = copy_edit(data[s, head:], ln, out[1, a + k], data[d], headroom)
            meta[d, META_LEN] = new_len
            meta[d, META_HEAD] = headroom
            meta[d, META_IN_PORT] = q
            dst[n] = d
            n += 1
            counts[p, PC_TX_PACKETS] += 1
            counts[p, PC_TX_BYTES] += new_len
    return n
