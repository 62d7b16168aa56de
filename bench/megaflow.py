"""``python -m bench megaflow``: the megaflow cache's hit path (``dpif.megaflow.mf_lookup``) with
100,000 installed megaflows over 1, 8 and 32 masks (subtables), with and without the EMC, bursts of
32 and 256.

Method: every mask matches ``recirc_id``, ``in_port``, ``eth_type`` and ``nw_dst`` exactly, plus a
different subset of ``eth_dst``, ``vlan_tci``, the IP protocol, ``nw_src/24`` and ``tp_dst`` (OVS's
megaflows always un-wildcard the first three). Megaflow k belongs to subtable ``k % masks``, whose
``in_port`` is its own (so megaflows never overlap) and has ``nw_dst = 10.0.0.0 + k``; its actions
are two words. The frames are 1,024 hot keys (``--frames``), each from a random megaflow, with the
fields its mask leaves out random, fed in bursts by slot index; frame lengths come from ``meta``.
"EMC" is the default cache (8,192 rows in 2-way sets, one subtable hit in 100 inserted, warmed until nearly every
hot key has its row); "no EMC" passes an empty EMC, so every frame searches the subtables in their
hit order (after a ``resort()``; with uniform traffic, about half of them on average). The kernel
is called once per burst from Python, so numba's call overhead is included. Windows as in ``bench
flowtable``: ~0.01 s each, round-robin over the variants, each after an unmeasured quarter window;
``mpps`` is a variant's best window, ``mpps_median`` its median. ``emc_hit_pct`` and
``probes_per_frame`` (subtables probed per frame) are counted over one pass of the hot keys. The
process is pinned to one core (the highest-numbered it may use).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bench.common import Progress, add_output_args, machine_info, write_results
from bench.flowtable import WINDOW, Runner, measure
from dpif import key as K
from dpif.megaflow import EMC_W, H_EMC_HITS, H_SUB_LOOKUPS, MegaflowCache, mf_lookup

ONES32 = 0xFFFF_FFFF
ONES48 = (1 << 48) - 1


def make_mask(j: int) -> np.ndarray:
    """Mask ``j`` (0..31): the four base fields plus the optional fields named by the bits of ``j``."""
    f = {"recirc_id": ONES32, "in_port": ONES32, "eth_type": 0xFFFF, "nw_dst": ONES32}
    if j & 1:
        f["eth_dst"] = ONES48
    if j & 2:
        f["vlan_tci"] = 0xFFFF
    if j & 4:
        f["nw_proto"] = 0xFF
    if j & 8:
        f["nw_src"] = 0xFFFFFF00
    if j & 16:
        f["tp_dst"] = 0xFFFF
    return K.key_from_fields(**f)


def flow_key(k: int, n_masks: int) -> np.ndarray:
    """The key of megaflow ``k`` (before masking)."""
    j = k % n_masks
    return K.key_from_fields(in_port=j, eth_type=0x0800, nw_dst=0x0A000000 + k, eth_dst=0x020000000000 | j,
                             vlan_tci=0x1000 | j, nw_proto=6, nw_src=0xC0A80000 | j << 8, tp_dst=80)


def build(n_flows: int, n_masks: int, n_frames: int, rng: np.random.Generator) -> dict:
    """A cache with ``n_flows`` megaflows over ``n_masks`` masks, and ``n_frames`` hot keys hitting them."""
    cache = MegaflowCache(max_flows=n_flows, emc_size=8192)
    masks = [make_mask(j) for j in range(n_masks)]
    t0 = time.perf_counter()
    for k in range(n_flows):
        e = cache.install(flow_key(k, n_masks), masks[k % n_masks], np.array([1, k % 4], dtype=np.int64))
        assert e == k
    install_s = time.perf_counter() - t0
    keys = np.zeros((n_frames, K.KEY_WORDS), dtype=np.uint64)
    for s in range(n_frames):
        k = int(rng.integers(n_flows))
        key = flow_key(k, n_masks)
        noise = K.key_from_fields(eth_src=0x020000100000 | int(rng.integers(1 << 20)),
                                  tp_src=int(rng.integers(1 << 16)), nw_ttl=int(rng.integers(1, 256)),
                                  nw_src=int(rng.integers(256)))
        m = masks[k % n_masks]
        keys[s] = (key & m) | (noise & ~m)
    meta = np.zeros((n_frames, 4), dtype=np.int32)
    meta[:, 0] = 64
    return {"cache": cache, "keys": keys, "meta": meta, "install_s": install_s}


def runners(setup: dict, bursts: list[int]) -> dict[str, tuple[Runner, int]]:
    """{variant: (run, burst size)} for one cache: EMC / no EMC x burst sizes."""
    cache: MegaflowCache = setup["cache"]
    keys, meta = setup["keys"], setup["meta"]
    n_frames = keys.shape[0]
    st, ent, buckets, emc = cache.arrays()
    no_emc = np.zeros((0, EMC_W), dtype=np.int64)
    out = np.zeros(max(bursts), dtype=np.int64)
    order = np.arange(n_frames, dtype=np.int32)
    # subtables by hits, the EMC warm (one subtable hit in 100 inserted)
    warm = np.zeros(n_frames, dtype=np.int64)
    mf_lookup(keys, order, n_frames, meta, st, ent, buckets, no_emc, warm, 0)
    cache.resort()
    for _ in range(600):
        mf_lookup(keys, order, n_frames, meta, st, ent, buckets, emc, warm, 0)
    assert (warm >= 0).all()
    runs: dict[str, tuple[Runner, int]] = {}
    for bs in bursts:
        chunks = [order[i:i + bs] for i in range(0, n_frames - bs + 1, bs)]
        nb = len(chunks)
        for label, e in (("EMC", emc), ("no EMC", no_emc)):
            def run(calls: int, e: np.ndarray = e, chunks: list = chunks, nb: int = nb, bs: int = bs) -> None:
                for c in range(calls):
                    if mf_lookup(keys, chunks[c % nb], bs, meta, st, ent, buckets, e, out, 0):
                        raise AssertionError("a hot key missed")
            run(nb)
            runs[f"{label}, burst {bs}"] = (run, bs)
    return runs


def pass_counters(setup: dict, use_emc: bool) -> tuple[float, float]:
    """(EMC hit %, subtables probed per frame) over one pass of the hot keys."""
    cache: MegaflowCache = setup["cache"]
    keys, meta = setup["keys"], setup["meta"]
    n = keys.shape[0]
    st, ent, buckets, emc = cache.arrays()
    before = st[H_EMC_HITS], st[H_SUB_LOOKUPS]
    mf_lookup(keys, np.arange(n, dtype=np.int32), n, meta, st, ent, buckets,
              emc if use_emc else np.zeros((0, EMC_W), dtype=np.int64), np.zeros(n, dtype=np.int64), 0)
    return 100.0 * (st[H_EMC_HITS] - before[0]) / n, (st[H_SUB_LOOKUPS] - before[1]) / n


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write bench/results/megaflow.{json,png,md}."""
    ap = argparse.ArgumentParser(prog="python -m bench megaflow", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", type=int, default=100_000, help="installed megaflows (default 100000)")
    ap.add_argument("--masks", default="1,8,32", help="subtables (default 1,8,32; at most 32)")
    ap.add_argument("--bursts", default="32,256", help="burst sizes (default 32,256)")
    ap.add_argument("--frames", type=int, default=1024, help="hot keys (default 1024)")
    ap.add_argument("--seconds", type=float, default=3.0,
                    help="measuring time per variant, spread over the run (default 3)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    masks = [int(x) for x in args.masks.split(",")]
    bursts = [int(x) for x in args.bursts.split(",")]
    rng = np.random.default_rng(42)
    sets: dict[int, dict] = {}
    runs: dict[str, Runner] = {}
    burst_of: dict[str, int] = {}
    with Progress(len(masks), "megaflow: installing") as bar:
        for nm in masks:
            sets[nm] = build(args.flows, nm, args.frames, rng)
            for variant, (run, bs) in runners(sets[nm], bursts).items():
                runs[f"{nm}/{variant}"] = run
                burst_of[f"{nm}/{variant}"] = bs
            bar.update(1)
    rates: dict[str, tuple[float, float]] = {}
    for bs in bursts:   # measure() takes one burst size per call
        with Progress(max(5, int(args.seconds / WINDOW)), f"megaflow: lookups, burst {bs}, round-robin") as bar:
            rates.update(measure({n: r for n, r in runs.items() if burst_of[n] == bs}, bs, args.seconds, bar))
    results = []
    setup = []
    for nm in masks:
        emc_pct, emc_probes = pass_counters(sets[nm], True)
        _, probes = pass_counters(sets[nm], False)
        for name in runs:
            if not name.startswith(f"{nm}/"):
                continue
            variant = name.split("/", 1)[1]
            best, median = rates[name]
            with_emc = variant.startswith("EMC")
            results.append({"subtables": nm, "variant": variant, "mpps": round(best / 1e6, 2),
                            "mpps_median": round(median / 1e6, 2), "emc_hit_pct": round(emc_pct if with_emc else 0, 1),
                            "probes_per_frame": round(emc_probes if with_emc else probes, 2)})
        c = sets[nm]["cache"]
        setup.append({"subtables": nm, "flows": len(c), "install_s": round(sets[nm]["install_s"], 2),
                      "installs_per_s": round(args.flows / sets[nm]["install_s"])})
    payload = {"benchmark": "megaflow", "method": __doc__.split("\n\n", 1)[1].strip(), "flows": args.flows,
               "frames": args.frames, "gate_mpps": 30, "machine": machine_info(pinned_cpu=cpu), "setup": setup,
               "results": results}
    write_results("megaflow", payload, {"group": "subtables", "series": "variant",
                                        "metrics": [("mpps", "Mpps (best window)")],
                                        "title": f"Megaflow cache hit path, {args.flows:,} megaflows, one core"},
                  print_json=args.json, out_dir=args.out_dir)
    if not args.json:
        for r in results:
            print(f"{r['subtables']:>3} subtables  {r['variant']:18s} {r['mpps']:8.2f} Mpps (median "
                  f"{r['mpps_median']:.2f})  EMC hits {r['emc_hit_pct']}%  probes/frame {r['probes_per_frame']}")
        for s in setup:
            print(f"{s['subtables']:>3} subtables: {s['flows']} megaflows installed in {s['install_s']} s "
                  f"({s['installs_per_s']}/s)")
    return 0
