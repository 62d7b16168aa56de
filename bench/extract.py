"""``python -m bench extract``: flow key extraction (``dpif.extract.extract_burst``, the 48-word
datapath key) next to today's parser (``classifier.parse.parse_burst``, the 24-column classifier key).

Method: a pool of 1,024 slots (``--slots``) holding a mix of 64-byte frames: 40% IPv4/TCP, 40%
IPv4/UDP, 20% ARP, a third of them with an 802.1Q tag, random addresses and ports; frames start at
head 128 for ``extract_burst`` (the pool's headroom) and at 0 for ``parse_burst`` (which reads
there). Both kernels run over the same slots in bursts of 256 (``--burst``), cycling through the
pool, so frames and keys stay in cache as with the datapath's LIFO free stack. The kernels are
called once per burst from Python, so numba's call overhead is included. Windows as in ``bench
flowtable``: ~0.01 s each, round-robin between the two kernels, each after an unmeasured quarter
window; ``mpps`` is the best window, ``mpps_median`` the median; ``ratio`` is extract over parse.
Before timing, every key is checked against the model ``dpif.extract_ref``. The process is pinned
to one core (the highest-numbered it may use). Nothing is written to bench/results.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from bench.common import Progress, machine_info
from bench.flowtable import WINDOW, Runner, measure
from classifier.keys import NKEYS
from classifier.parse import parse_burst
from dpif import extract_ref
from dpif.extract import META_HEAD, extract_burst
from dpif.key import KEY_WORDS

HEAD = 128
ROW = HEAD + 2048


def make_frame(rng: np.random.Generator) -> bytes:
    """One 64-byte frame: TCP (40%), UDP (40%) or ARP (20%), a third of them tagged."""
    r = rng.random()
    macs = rng.integers(0, 256, 12, dtype=np.uint8).tobytes()
    tag = b"\x81\x00" + int(rng.integers(1, 4095)).to_bytes(2, "big") if rng.random() < 1 / 3 else b""
    ips = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
    ports = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
    if r < 0.8:
        proto = 6 if r < 0.4 else 17
        l4 = ports + (b"\0" * 8 + b"\x50\x10\xff\xff" + b"\0" * 4 if proto == 6 else b"\x00\x08\0\0")
        ip = b"\x45\x00" + (20 + len(l4)).to_bytes(2, "big") + b"\0\0\x40\x00\x40" + bytes([proto]) + b"\0\0" + ips
        frame = macs + tag + b"\x08\x00" + ip + l4
    else:
        frame = (macs + tag + b"\x08\x06\x00\x01\x08\x00\x06\x04\x00\x01" + macs[6:] + ips[:4] + b"\0" * 6
                 + ips[4:])
    return frame + b"\0" * max(0, 64 - len(frame))


def build(n_slots: int, rng: np.random.Generator) -> dict:
    """The two pools (head 128 and head 0) holding the same frames, with their key arrays."""
    frames = [make_frame(rng) for _ in range(n_slots)]
    data = np.zeros((n_slots, ROW), dtype=np.uint8)
    data0 = np.zeros((n_slots, ROW), dtype=np.uint8)
    meta = np.zeros((n_slots, 4), dtype=np.int32)
    meta0 = np.zeros((n_slots, 4), dtype=np.int32)
    for s, f in enumerate(frames):
        data[s, HEAD : HEAD + len(f)] = np.frombuffer(f, dtype=np.uint8)
        data0[s, : len(f)] = np.frombuffer(f, dtype=np.uint8)
        meta[s, 0], meta[s, 1], meta[s, META_HEAD] = len(f), s % 4, HEAD
        meta0[s, 0], meta0[s, 1] = len(f), s % 4
    return {"frames": frames, "data": data, "meta": meta, "data0": data0, "meta0": meta0,
            "keys": np.zeros((n_slots, KEY_WORDS), dtype=np.uint64),
            "keys0": np.zeros((n_slots, NKEYS), dtype=np.uint64)}


def runners(p: dict, burst: int) -> dict[str, Runner]:
    """{kernel name: run(calls)} over the pool in bursts of ``burst`` slots."""
    n_slots = p["data"].shape[0]
    order = np.random.default_rng(1).permutation(n_slots).astype(np.int32)
    chunks = [order[i : i + burst] for i in range(0, n_slots - burst + 1, burst)]
    nb = len(chunks)
    reasons = np.zeros(burst, dtype=np.int64)
    data, meta, keys = p["data"], p["meta"], p["keys"]
    data0, meta0, keys0 = p["data0"], p["meta0"], p["keys0"]

    def run_extract(calls: int) -> None:
        for c in range(calls):
            if extract_burst(data, meta, chunks[c % nb], burst, keys, reasons):
                raise AssertionError("a frame got a drop reason")

    def run_parse(calls: int) -> None:
        for c in range(calls):
            parse_burst(data0, meta0, chunks[c % nb], burst, keys0)

    run_extract(nb)
    run_parse(nb)
    for s, f in enumerate(p["frames"]):
        row, reason = extract_ref.extract(f, s % 4)
        assert reason == 0 and (p["keys"][s] == row).all(), f.hex()
    return {"extract_burst": run_extract, "parse_burst": run_parse}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the rates and their ratio."""
    ap = argparse.ArgumentParser(prog="python -m bench extract", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--burst", type=int, default=256, help="frames per kernel call (default 256)")
    ap.add_argument("--slots", type=int, default=1024, help="pool slots cycled through (default 1024)")
    ap.add_argument("--seconds", type=float, default=3.0, help="measuring time per kernel, spread over the run")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    if args.slots < args.burst:
        ap.error("--slots must be at least --burst")
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    pool = build(args.slots, np.random.default_rng(42))
    runs = runners(pool, args.burst)
    with Progress(max(5, int(args.seconds / WINDOW)), f"extract: burst {args.burst}, round-robin") as bar:
        rates = measure(runs, args.burst, args.seconds, bar)
    results = [{"kernel": name, "mpps": round(best / 1e6, 2), "mpps_median": round(median / 1e6, 2)}
               for name, (best, median) in rates.items()]
    ratio = rates["extract_burst"][0] / rates["parse_burst"][0]
    ratio_median = rates["extract_burst"][1] / rates["parse_burst"][1]
    if args.json:
        print(json.dumps({"benchmark": "extract", "burst": args.burst, "slots": args.slots,
                          "machine": machine_info(pinned_cpu=cpu), "results": results,
                          "ratio": round(ratio, 2), "ratio_median": round(ratio_median, 2)}, indent=1))
        return 0
    for r in results:
        print(f"{r['kernel']:14s} {r['mpps']:8.2f} Mpps (median {r['mpps_median']:.2f})  burst {args.burst}")
    print(f"extract_burst / parse_burst: x{ratio:.2f} (medians x{ratio_median:.2f})")
    return 0
