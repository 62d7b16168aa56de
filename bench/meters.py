"""Micro-benchmark of the datapath meters (dpif/meters.py through dpif.actions.execute_burst): ns per frame.

Bursts of 64-byte frames in a pool, every frame's program the same: ``output`` alone (the executor's shortcut),
``set_eth,output`` (the general loop), ``meter,set_eth,output`` with a meter the frames pass (a rate far above
the offered load) and with one they exceed (every frame dropped by its band), and a two-band meter. The clock
advances 10 µs per burst, as it would on a busy datapath. Anchor: the plain-Python model's ``meter_admit``
(dpif/actions_ref.py) per frame. Results: ``bench/results/meters.{json,png,md}``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import PlotSpec, add_output_args, log, machine_info, write_results
from dpif import actions as A
from dpif import actions_ref as R
from dpif import meters as DM

SLOT = 256


def _rig(burst: int) -> dict:
    """The executor's arrays for ``burst`` frames in ``burst`` slots (no free slots: no copies)."""
    data = np.zeros((burst, SLOT), dtype=np.uint8)
    data[:, 12:14] = (0x08, 0x00)
    meta = np.zeros((burst, 4), dtype=np.int32)
    meta[:, 1] = 64
    return {"data": data, "meta": meta, "burst": np.arange(burst, dtype=np.int32),
            "index": np.zeros((burst, 2), dtype=np.int64), "out": np.zeros((2, 4 * burst), dtype=np.int32),
            "out_start": np.zeros((2, 5), dtype=np.int32), "drops": np.zeros((5, A.N_DROP_REASONS), dtype=np.int64),
            "free_stack": np.zeros(1, dtype=np.int32), "free_top": np.zeros(1, dtype=np.int64),
            "extra": np.zeros(1, dtype=np.int32), "side": np.zeros((A.SIDE_ROWS, burst), dtype=np.int32),
            "side_n": np.zeros(2, dtype=np.int64)}


def _run(rig: dict, burst: int, prog: np.ndarray, meters: np.ndarray, seconds: float) -> float:
    """Best ns per frame over 0.05 s windows."""
    rig["index"][:, 0] = 0
    rig["index"][:, 1] = len(prog)
    args = [rig[k] for k in ("data", "meta", "burst")]
    rest = [rig[k] for k in ("out", "out_start", "drops", "free_stack", "free_top", "extra", "side", "side_n")]
    now = 0
    best = float("inf")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        frames, t0 = 0, time.perf_counter_ns()
        while time.perf_counter_ns() - t0 < 50_000_000:
            now += 10_000
            A.execute_burst(*args, burst, rig["index"], prog, *rest, meters, now)
            frames += burst
        best = min(best, (time.perf_counter_ns() - t0) / frames)
    return best


def main(argv: list[str] | None = None) -> int:
    """Run the micro-benchmark (``python -m bench meters --help``)."""
    ap = argparse.ArgumentParser(prog="python -m bench meters", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bursts", default="32,256", help="comma-separated burst sizes")
    ap.add_argument("--seconds", type=float, default=1.0, help="measuring time per case")
    add_output_args(ap)
    args = ap.parse_args(argv)
    bank = DM.MeterBank(4)
    passing = bank.alloc()
    bank.configure(passing[0], DM.F_PKTPS, [(1 << 30, 1 << 30)])
    over = bank.alloc()
    bank.configure(over[0], DM.F_PKTPS, [(1, 1)])
    two = bank.alloc()
    bank.configure(two[0], DM.F_KBPS, [(1 << 30, 1 << 20), (1 << 31, 1 << 20)])
    mac = A.set_eth(0x020000000001, 0x020000000002)
    cases = {"output": A.output(1), "set_eth,output": mac + A.output(1),
             "meter (passing),set_eth,output": A.meter(*passing) + mac + A.output(1),
             "meter (over the rate)": A.meter(*over) + mac + A.output(1),
             "meter (two kbps bands),set_eth,output": A.meter(*two) + mac + A.output(1)}
    rows = []
    for burst in (int(b) for b in args.bursts.split(",")):
        rig = _rig(burst)
        for name, prog in cases.items():
            p = np.array(prog, dtype=np.int64)
            _run(rig, burst, p, bank.arr, 0.05)      # compiled and warm
            ns = _run(rig, burst, p, bank.arr, args.seconds)
            rows.append({"burst": burst, "program": name, "ns_per_frame": round(ns, 1)})
            log(f"burst {burst}: {name}: {ns:.1f} ns/frame")
    arr = bank.arr.copy()
    t0, n = time.perf_counter_ns(), 0
    while time.perf_counter_ns() - t0 < 0.3e9:
        R.meter_admit(arr, two[0], two[1], 64, n * 1000)
        n += 1
    py = (time.perf_counter_ns() - t0) / n
    log(f"python meter_admit: {py:.0f} ns/frame")
    method = ("execute_burst over bursts of 64-byte frames already in the pool, every frame running the same "
              "program; the meter clock advances 10 µs per burst. Best of 0.05 s windows over "
              f"{args.seconds} s per case (the kernel call's Python overhead included). Anchor: the plain-Python "
              f"model's meter_admit, {py:.0f} ns per frame.")
    write_results("meters", {"method": method, "machine": machine_info(), "results": rows,
                             "python_meter_admit_ns": round(py)},
                  PlotSpec(group="program", series="burst", metrics=[("ns_per_frame", "ns/frame")]),
                  print_json=args.json, out_dir=args.out_dir)
    return 0
