"""The datapath's hit path in one kernel call: extract keys, find megaflows, run their actions.

```
 hit_burst: extract_burst ─► mf_lookup_programs ─► every frame hit? ─yes─► execute_burst ─► 0
                 │ invalid frames: -1                 │ no: the number of misses (out_entry filled)
                 ▼                                    ▼
        the caller drops them and goes on        the caller runs the upcalls, then mf_programs and
        step by step                              execute_burst itself
```

One call instead of four saves numba's per-call argument handling (about 1 µs per burst, ~4 ns a
frame at burst 256) and keeps the burst's rows in cache between the steps. Benchmark:
``python -m bench flowtable`` / ``bench pipeline``; tests: every test that runs ``Datapath._of_burst``.
"""

from __future__ import annotations

import numba
import numpy as np

from dpif.actions import execute_burst
from dpif.extract import extract_burst
from dpif.megaflow import mf_lookup_programs


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def hit_keys(data: np.ndarray, meta: np.ndarray, burst: np.ndarray, n: int, keys: np.ndarray,
             st: np.ndarray, ent: np.ndarray, buckets: np.ndarray, emc: np.ndarray,
             out_entry: np.ndarray, now: int, prog_index: np.ndarray, progs: np.ndarray, out: np.ndarray,
             out_start: np.ndarray, drops: np.ndarray, free_stack: np.ndarray, free_top: np.ndarray,
             extra: np.ndarray, side: np.ndarray, side_n: np.ndarray, meters: np.ndarray, now_ns: int) -> int:
    """``hit_burst`` for frames whose keys are already in ``keys``: look up and, when every frame has a
    megaflow, execute. Returns 0 (done) or the number of misses."""
    misses = mf_lookup_programs(keys, burst, n, meta, st, ent, buckets, emc, out_entry, now, prog_index)
    if misses:
        return misses
    side_n[2] = execute_burst(data, meta, burst, n, prog_index, progs, out, out_start, drops, free_stack,
                              free_top, extra, side, side_n, meters, now_ns)
    return 0


@numba.njit(nogil=True, cache=True, _nrt=False)
def hit_burst(data: np.ndarray, meta: np.ndarray, burst: np.ndarray, n: int, keys: np.ndarray,
              reasons: np.ndarray, st: np.ndarray, ent: np.ndarray, buckets: np.ndarray, emc: np.ndarray,
              out_entry: np.ndarray, now: int, prog_index: np.ndarray, progs: np.ndarray, out: np.ndarray,
              out_start: np.ndarray, drops: np.ndarray, free_stack: np.ndarray, free_top: np.ndarray,
              extra: np.ndarray, side: np.ndarray, side_n: np.ndarray, meters: np.ndarray, now_ns: int) -> int:
    """Extract, look up and, when every frame of ``burst[:n]`` has a megaflow, execute it. Returns 0
    (done; the fresh slots the actions took are ``extra[:side_n[2]]``), -1 (some frames are invalid,
    ``reasons`` says which; nothing looked up) or the number of misses (``out_entry`` is filled, nothing
    executed). ``meters``/``now_ns``: the meter rows and the burst's clock (``execute_burst``)."""
    if extract_burst(data, meta, burst, n, keys, reasons):
        return -1
    return hit_keys(data, meta, burst, n, keys, st, ent, buckets, emc, out_entry, now, prog_index, progs, out,
                    out_start, drops, free_stack, free_top, extra, side, side_n, meters, now_ns)
