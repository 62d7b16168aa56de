"""``python -m bench classify``: the numba L2 classifier (``classifier.l2switch.switch_burst``) vs the Python reference.

Method: 64-byte IPv4/UDP frames between MACs drawn from a table of M learned MACs spread
over 4 access ports of VLAN 0; every frame's destination sits on another port than its
source, so each frame is parsed, learned (refresh), looked up and queued for one port.
Frames sit in a pool of hot slots, as in the datapath, whose LIFO free stack keeps reusing
the same slots. The kernel is called once per burst from Python, so the numba call
overhead is included; ``mpps`` is the best of many ~0.1 s windows (as timeit does: this VM's
neighbours steal CPU in bursts), ``mpps_median`` their median. The reference is
``classifier.reference.ReferenceSwitch`` on the same frames. The process is pinned to one core
(the highest-numbered it may use).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bench.common import Progress, add_output_args, machine_info, write_results
from classifier.drops import N_DROPS
from classifier.keys import NKEYS
from classifier.l2switch import switch_burst
from classifier.l2table import l2_learn, make_l2table
from classifier.reference import PortVlanConfig, ReferenceSwitch
from vswitch.vlan import VlanConfig, fill_vlan_map

N_PORTS = 4
SLOT = 2048


def make_frames(n_frames: int, macs: np.ndarray, mac_port: np.ndarray, rng: np.random.Generator):
    """Pool data/meta holding ``n_frames`` unicast frames between distinct ports."""
    data = np.zeros((n_frames, SLOT), dtype=np.uint8)
    meta = np.zeros((n_frames, 4), dtype=np.int32)
    frames = []
    for s in range(n_frames):
        si = int(rng.integers(len(macs)))
        while True:
            di = int(rng.integers(len(macs)))
            if mac_port[di] != mac_port[si] or len(macs) < N_PORTS:
                break
        f = (int(macs[di]).to_bytes(6, "big") + int(macs[si]).to_bytes(6, "big") + b"\x08\x00"
             + bytes.fromhex("4500002e00004000401100000a0000010a000002") + bytes.fromhex("303900350014") + b"\0" * 24)
        f = f[:64]
        data[s, : len(f)] = np.frombuffer(f, dtype=np.uint8)
        meta[s, 0] = len(f)
        meta[s, 1] = int(mac_port[si])
        frames.append((f, int(mac_port[si])))
    return data, meta, frames


def run_kernel(burst_size: int, n_macs: int, seconds: float, rng: np.random.Generator) -> tuple[tuple, tuple]:
    """(best, median) frames per second through ``switch_burst``; also the frames for the reference."""
    macs = (rng.choice(2**46, n_macs, replace=False).astype(np.uint64) & ~np.uint64(0x010000000000)) | np.uint64(
        0x020000000000)  # locally administered unicast
    mac_port = np.arange(n_macs) % N_PORTS
    n_slots = max(1024, 4 * burst_size)
    data, meta, frames = make_frames(n_slots, macs, mac_port, rng)
    l2, info = make_l2table(max(n_macs, 8192))
    for m, p in zip(macs, mac_port, strict=True):
        l2_learn(l2, info, 0, np.uint64(m), int(p), 0)
    vlan_map = np.zeros((N_PORTS, 2, 4096), dtype=np.int16)
    for p in range(N_PORTS):
        fill_vlan_map(vlan_map, p, VlanConfig(tag=0), True)
    keys = np.zeros((n_slots, NKEYS), dtype=np.uint64)
    drops = np.zeros((N_PORTS, N_DROPS), dtype=np.int64)
    out = np.zeros((2, burst_size * N_PORTS), dtype=np.int32)
    out_start = np.zeros((2, N_PORTS + 1), dtype=np.int32)
    bursts = [np.arange(i, i + burst_size, dtype=np.int32) for i in range(0, n_slots, burst_size)]
    switch_burst(data, meta, bursts[0], burst_size, keys, l2, info, vlan_map, 0, drops, out, out_start)
    # Best of many short windows (like timeit): this VM's neighbours steal time in bursts.
    nb = len(bursts)
    rates = []
    calls_per_window = max(16, int(2e5 // burst_size))
    deadline = time.perf_counter() + seconds
    calls = 0
    while time.perf_counter() < deadline or len(rates) < 5:
        t0 = time.perf_counter()
        for _ in range(calls_per_window):
            switch_burst(data, meta, bursts[calls % nb], burst_size, keys, l2, info, vlan_map, 0, drops, out,
                         out_start)
            calls += 1
        rates.append(calls_per_window * burst_size / (time.perf_counter() - t0))
    assert out_start[1].sum() == burst_size, "every frame must be forwarded to exactly one port"
    assert drops.sum() == 0
    rates.sort()
    return (rates[-1], rates[len(rates) // 2]), (frames, macs, mac_port)


def run_reference(frames: list, macs: np.ndarray, mac_port: np.ndarray, burst_size: int, seconds: float) -> float:
    """Frames per second through the plain-Python reference on the same frames."""
    ref = ReferenceSwitch([PortVlanConfig(tag=0) for _ in range(N_PORTS)], limit=max(len(macs), 8192))
    for m, p in zip(macs, mac_port, strict=True):
        ref.learn_static_free(0, int(m), int(p), 0)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for i in range(0, len(frames), burst_size):
            ref.process(frames[i : i + burst_size], 0)
            n += len(frames[i : i + burst_size])
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write bench/results/classify.{json,png,md}."""
    ap = argparse.ArgumentParser(prog="python -m bench classify", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bursts", default="32,256,1024", help="burst sizes (default 32,256,1024)")
    ap.add_argument("--macs", default="16,1024,65536", help="learned MACs in the table (default 16,1024,65536)")
    ap.add_argument("--seconds", type=float, default=1.0, help="time per kernel measurement (default 1)")
    ap.add_argument("--python-seconds", type=float, default=0.5, help="time per reference measurement")
    add_output_args(ap)
    args = ap.parse_args(argv)
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})  # one core, and no migrations between windows
    bursts = [int(b) for b in args.bursts.split(",")]
    n_macs = [int(m) for m in args.macs.split(",")]
    rng = np.random.default_rng(42)
    results = []
    with Progress(len(bursts) * len(n_macs), "classify") as bar:
        for m in n_macs:
            for b in bursts:
                bar.update(0, f"burst {b}, {m} MACs")
                (fps, fps_median), (frames, macs, mac_port) = run_kernel(b, m, args.seconds, rng)
                py = run_reference(frames, macs, mac_port, b, args.python_seconds)
                results.append({"burst": b, "macs": m, "mpps": round(fps / 1e6, 2),
                                "mpps_median": round(fps_median / 1e6, 2),
                                "python_mpps": round(py / 1e6, 4), "speedup": round(fps / py, 1)})
                bar.update(1)
    payload = {"benchmark": "classify", "method": __doc__.split("\n\n", 1)[1].strip(),
               "machine": machine_info(pinned_cpu=cpu), "results": results}
    write_results("classify", payload, {"group": "burst", "series": "macs",
                                        "metrics": [("mpps", "Mpps (numba)"), ("speedup", "× Python reference")],
                                        "title": "L2 classifier: frames per second on one core"},
                  print_json=args.json, out_dir=args.out_dir)
    if not args.json:
        for r in results:
            print(f"burst {r['burst']:5d}  macs {r['macs']:6d}  {r['mpps']:7.2f} Mpps (median {r['mpps_median']})  "
                  f"python {r['python_mpps']:.4f} Mpps  x{r['speedup']}")
    return 0
