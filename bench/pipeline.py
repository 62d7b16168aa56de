"""``python -m bench pipeline``: a 30-table OpenFlow pipeline chained by goto_table through the megaflow
datapath (one translation per megaflow, then cache hits) against the ``flow_burst`` interpreter (every
table looked up for every frame), and the translation rate of that pipeline.

Method: 30 tables (OpenFlow ports 1-4, datapath ports 0-3). Tables 0-27 take turns matching one
field group, with a few flows each and a priority-0 flow that goes on: ``in_port`` (one flow per
port, write_actions(output) that a later table overrides), ``eth_type`` (IPv4 / IPv6 / ARP; IPv4
apply_actions(set eth_src)), IPv4 destination prefixes (/24, /16, /8 and a /24 no frame uses;
write_actions(set eth_src)) and ``tcp_dst`` (22, 80, 443, one more per table); every flow goes to
the next table. Table 28 is a router: ``eth_dst`` = router MAC A -> apply set eth_dst B, write set
eth_src A, and the reverse, so every pass over a frame rewrites both MACs (a frame that kept the
MACs the previous pass left would otherwise need no rewrite). Table 29 sends by destination prefix
(write_actions(output:3|4)). Every frame's walk visits all 30 tables; its megaflow matches in_port,
eth_dst, eth_src, eth_type, ip_proto, the destination /24 and tcp_dst, and its program is a SET_ETH
(both MACs) and an OUTPUT (checked). 1,024 hot 64-byte IPv4/TCP frames (2 ingress ports x 4
destination /24s x 2 TCP ports, random source address, source port and host part) fall in 32
megaflows (16 per MAC phase); they sit in a ``PacketPool`` (frames at the 128-byte headroom) and go
in bursts of 256 through the sequence of ``Datapath._of_burst`` (``bench.flowtable.MegaflowPath``:
``hit_burst``: extract_burst, mf_lookup_programs, execute_burst in one call; upcalls on a miss;
no transmit). The first
pass installs the megaflows and is checked against the interpreter: same ports, same bytes. The
interpreter is ``classifier/flowtable.py`` of commit 07e438a, read with ``git show`` into a private
module in a temporary directory (``bench.flowtable.load_interpreter``), on the same flows and frames
(pool without headroom), as "parse_burst + flow_burst" and "flow_burst" (keys parsed once); its
exact-match cache holds pipelines of at most 6 tables, so every frame walks the 30 tables. All
variants run round-robin in ~0.01 s windows (best and median window), as ``bench flowtable``; the
breakdown times each step of the megaflow path alone. Upcall rate: 1,024 frames whose keys differ in
tcp_dst (each its own megaflow), the cache flushed before each round (not timed), each burst of 256
misses through the whole path a window: translations (each also an install) per second, best and
median window; plus ``translate`` and ``MegaflowCache.install`` timed alone on the same keys
(``rest_us``: the rest of a translation's cost on the path). Pinned to one core (the
highest-numbered it may use).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np

from bench import nicira
from bench.common import Progress, add_output_args, machine_info, write_results
from bench.flowtable import (
    INTERPRETER_COMMIT,
    N_FRAMES,
    N_PORTS,
    WINDOW,
    FlowSpec,
    InterpreterPath,
    MegaflowPath,
    Runner,
    breakdown_rows,
    bursts_of,
    code_version,
    emc_share,
    load_interpreter,
    make_pool,
    measure,
    new_tables,
    old_tables,
    rounded,
    same_forwarding,
    stage_runners,
    tcp_frame,
    upcall_rate,
    upcall_split,
)
from dpif import actions as A
from dpif import key as K
from xlate.translate import translate

N_TABLES = 30
ROUTER_A = 0x0200000000A1
ROUTER_B = 0x0200000000B2
HOT_NETS = (0x0A010100, 0x0A010200, 0x0A020100, 0x0A030300)   # 10.1.1.0/24 10.1.2.0/24 10.2.1.0/24 10.3.3.0/24
HOT_TCP = (80, 443)
HOT_IN = (1, 2)                                              # OpenFlow ports the frames arrive on
KINDS = ("in_port", "eth_type", "ipv4_dst", "tcp_dst")
IP = {"eth_type": 0x0800}
TCP = {"eth_type": 0x0800, "ip_proto": 6}
WORD_NAMES = {v: k for k, v in vars(K).items() if k.startswith("W_") and isinstance(v, int)}


def make_pipeline() -> list[FlowSpec]:
    """The 30 tables' flows (see the module docstring)."""
    specs: list[FlowSpec] = []
    router, last = N_TABLES - 2, N_TABLES - 1
    for t in range(N_TABLES - 2):
        nxt = t + 1
        kind = KINDS[t % len(KINDS)]
        if kind == "in_port":
            specs += [FlowSpec(t, 100, {"in_port": p}, write=(("output", p % N_PORTS + 1),), goto=nxt)
                      for p in range(1, N_PORTS + 1)]
        elif kind == "eth_type":
            specs += [FlowSpec(t, 100, {"eth_type": 0x0800}, apply=(("set", "eth_src", 0x020000000100 | t),),
                               goto=nxt),
                      FlowSpec(t, 100, {"eth_type": 0x86DD}, goto=nxt),
                      FlowSpec(t, 100, {"eth_type": 0x0806}, goto=nxt)]
        elif kind == "ipv4_dst":
            net = HOT_NETS[(t // len(KINDS)) % len(HOT_NETS)]
            specs += [FlowSpec(t, 30, {**IP, "ipv4_dst": (net, 0xFFFFFF00)}, goto=nxt),
                      FlowSpec(t, 30, {**IP, "ipv4_dst": (0x0A00C800 | t << 16, 0xFFFFFF00)}, goto=nxt),
                      FlowSpec(t, 20, {**IP, "ipv4_dst": (0x0A010000, 0xFFFF0000)},
                               write=(("set", "eth_src", 0x020000000200 | t),), goto=nxt),
                      FlowSpec(t, 10, {**IP, "ipv4_dst": (0x0A000000, 0xFF000000)}, goto=nxt)]
        else:
            specs += [FlowSpec(t, 100, {**TCP, "tcp_dst": port}, goto=nxt) for port in (22, 80, 443, 8000 + t)]
        specs.append(FlowSpec(t, 0, {}, goto=nxt))
    specs += [FlowSpec(router, 100, {"eth_dst": ROUTER_A}, apply=(("set", "eth_dst", ROUTER_B),),
                       write=(("set", "eth_src", ROUTER_A),), goto=last),
              FlowSpec(router, 100, {"eth_dst": ROUTER_B}, apply=(("set", "eth_dst", ROUTER_A),),
                       write=(("set", "eth_src", ROUTER_B),), goto=last),
              FlowSpec(router, 0, {}, goto=last)]
    specs += [FlowSpec(last, 30, {**IP, "ipv4_dst": (net, 0xFFFFFF00)}, write=(("output", 3 + i % 2),))
              for i, net in enumerate(HOT_NETS)]
    specs.append(FlowSpec(last, 10, {**IP, "ipv4_dst": (0x0A000000, 0xFF000000)}, write=(("output", 4),)))
    return [FlowSpec(s.table, s.priority, s.match, s.apply, s.write, s.goto, cookie=i) for i, s in enumerate(specs)]


def hot_frames(rng: np.random.Generator) -> list[tuple[bytes, int]]:
    """``N_FRAMES`` (frame, datapath in_port): 2 ports x 4 destination /24s x 2 TCP ports, the rest random."""
    frames = []
    for i in range(N_FRAMES):
        in_port = HOT_IN[i % 2] - 1
        net = HOT_NETS[(i // 2) % len(HOT_NETS)]
        tp_dst = HOT_TCP[(i // 8) % len(HOT_TCP)]
        frames.append((tcp_frame(ROUTER_A, ROUTER_B, 0xC0A80000 | int(rng.integers(1 << 16)),
                                 net | int(rng.integers(1, 255)), int(rng.integers(1024, 65536)), tp_dst), in_port))
    return frames


def miss_frames(rng: np.random.Generator) -> list[tuple[bytes, int]]:
    """``N_FRAMES`` frames as ``hot_frames`` but each with its own tcp_dst (1000 + i): each its own megaflow."""
    return [(tcp_frame(ROUTER_A, ROUTER_B, 0xC0A80001, HOT_NETS[i % len(HOT_NETS)] | 7, 40000, 1000 + i),
             HOT_IN[i % 2] - 1) for i in range(N_FRAMES)]


def describe_walk(path: MegaflowPath, slot: int) -> dict[str, Any]:
    """The translation of one frame: tables visited, megaflow mask words, program (and checks them)."""
    path.extract(np.array([slot], dtype=np.int32), 1)
    key = [int(w) for w in path.keys[slot]]
    r = translate(path.ts, key, path.port_flags, path.up.cookies)
    tables = [int(path.ts.table_of[rank]) for rank in r.ranks]
    if tables != list(range(N_TABLES)):
        raise AssertionError(f"the walk visits tables {tables}, not all {N_TABLES}")
    mask = {WORD_NAMES.get(w, str(w)): f"{m:#x}" for w, m in enumerate(r.mask) if m}
    ops = [op for op, _args in A.decode(r.program())]
    if ops != [A.OP_SET_ETH, A.OP_OUTPUT]:     # both MACs rewritten (one SET_ETH), one output
        raise AssertionError(f"unexpected program {A.format_actions(r.program())}")
    return {"tables_visited": len(tables), "mask": mask, "actions": A.format_actions(r.program())}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write bench/results/pipeline.{json,png,md}."""
    ap = argparse.ArgumentParser(prog="python -m bench pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--burst", type=int, default=256, help="burst size (default 256)")
    ap.add_argument("--seconds", type=float, default=3.0,
                    help="measuring time per variant, spread over the run (default 3)")
    ap.add_argument("--upcall-rounds", type=int, default=10, help="flushed-cache rounds (default 10)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    if N_FRAMES % args.burst:
        ap.error(f"--burst must divide {N_FRAMES}")
    n = args.burst
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    mod = load_interpreter()
    rng = np.random.default_rng(42)
    specs = make_pipeline()
    ts, compile_s = new_tables(specs, N_TABLES)
    compiled, old_compile_s = old_tables(mod, specs, N_TABLES)
    frames = hot_frames(rng)
    pool, slots = make_pool(frames, 128)
    path = MegaflowPath(ts, pool, N_PORTS, n)
    bursts = bursts_of(slots, n)
    walk = describe_walk(path, int(slots[0]))
    old_pool, old_slots = make_pool(frames, 0)
    old = InterpreterPath(mod, compiled, old_pool, N_PORTS, n)
    old_bursts = bursts_of(old_slots, n)
    same_forwarding(path, old, bursts, old_bursts, n)     # first pass: installs the megaflows
    runs: dict[str, Runner] = {}
    for extract in (True, False):
        def run(calls: int, extract: bool = extract) -> None:
            nb = len(bursts)
            for c in range(calls):
                path.run(bursts[c % nb], n, extract)

        run(4 * len(bursts))    # second phase of the MACs installed too, and the EMC filled
        runs["extract + megaflow + execute" if extract else "megaflow + execute"] = run
    for parse in (True, False):
        def run_old(calls: int, parse: bool = parse) -> None:
            nb = len(old_bursts)
            for c in range(calls):
                old.run(old_bursts[c % nb], n, parse)

        run_old(len(old_bursts))
        runs["parse_burst + flow_burst" if parse else "flow_burst"] = run_old
    stats0 = path.up.cache.stats()
    misses0 = stats0["misses"]
    megaflows = len(path.up.cache)
    stages = stage_runners(path, bursts, n, prefix="stage/")
    runs.update(stages)
    with Progress(max(5, int(args.seconds / WINDOW)), "pipeline: hit path, round-robin") as bar:
        rates = measure(runs, n, args.seconds, bar)
    for b in bursts:
        path.run(b, n)
        assert path.out_start[1].sum() == n, "every frame goes to exactly one port"
    assert path.up.cache.stats()["misses"] == misses0, "a megaflow missed while measuring the hit path"
    assert path.drops.sum() == 0 and path.side_frames == 0, path.drops.sum(0)
    old.run(old_bursts[0], n)
    assert old.out_start[1].sum() == n and old.drops.sum() == 0, old.drops.sum(0)
    st = path.up.cache.stats()
    emc_hits = emc_share(stats0, st)

    miss_pool, miss_slots = make_pool(miss_frames(rng), 128)
    miss_path = MegaflowPath(ts, miss_pool, N_PORTS, n)
    miss_bursts = bursts_of(miss_slots, n)
    with Progress(args.upcall_rounds, "pipeline: upcalls") as bar:
        up = upcall_rate(miss_path, miss_bursts, n, args.upcall_rounds, bar)
    if up["translations_per_round"] != N_FRAMES:
        raise AssertionError(f"{up['translations_per_round']} translations for {N_FRAMES} distinct frames")
    split = upcall_split(ts, miss_path, miss_bursts, n, 5)
    per = 1e6 / up["translations_per_s"]
    up.update({"path_us": per, "translate_us": split["translate_us"], "install_us": split["install_us"],
               "rest_us": per - split["translate_us"] - split["install_us"],
               "translate_us_per_table": split["translate_us"] / N_TABLES})

    with Progress(1, "pipeline: the Nicira case") as bar:
        nx = nicira.run_case(hot_frames(rng), miss_frames(rng), HOT_NETS, n, args.seconds, args.upcall_rounds)
        bar.step()

    results = []
    for variant in ("extract + megaflow + execute", "megaflow + execute", "parse_burst + flow_burst", "flow_burst"):
        best, median = rates[variant]
        results.append({"variant": variant, "mpps": round(best / 1e6, 2), "mpps_median": round(median / 1e6, 2)})
    old_best = rates["parse_burst + flow_burst"][0]
    for r in results:
        r["x_interpreter"] = round(r["mpps"] * 1e6 / old_best, 1)
    whole = n / rates["extract + megaflow + execute"][0] * 1e9
    breakdown = breakdown_rows([k.removeprefix("stage/") for k in stages], rates, n, whole, "stage/")
    breakdown.append({"step": "whole path (extract + megaflow + execute)", "ns_per_burst": round(whole, 1),
                      "ns_per_burst_median": round(n / rates["extract + megaflow + execute"][1] * 1e9, 1),
                      "ns_per_frame": round(whole / n, 2), "share_of_path": 1.0})
    hit = rates["extract + megaflow + execute"][0] / 1e6
    hit_keys = rates["megaflow + execute"][0] / 1e6
    ratio = hit * 1e6 / old_best
    tps = up["translations_per_s"]
    gates = [
        {"gate": "30-table pipeline, megaflow hit (extract + megaflow + execute) >= 20 Mpps",
         "measured": round(hit, 2), "threshold": 20.0, "met": hit >= 20.0},
        {"gate": "30-table pipeline, megaflow hit (megaflow + execute, keys extracted once) >= 20 Mpps",
         "measured": round(hit_keys, 2), "threshold": 20.0, "met": hit_keys >= 20.0},
        {"gate": "megaflow hit >= 10x the interpreter (extract + megaflow + execute / parse_burst + flow_burst)",
         "measured": round(ratio, 1), "threshold": 10.0, "met": ratio >= 10.0},
        {"gate": ">= 10,000 translations/s (30-table pipeline, every frame a new megaflow)",
         "measured": round(tps), "threshold": 10000, "met": tps >= 10000},
    ]
    gates += [
        {"gate": "Nicira case (resubmit, registers, " + ", ".join(nx["holds"][2:]) + "): megaflow hit >= 15 Mpps",
         "measured": round(nx["mpps"], 2), "threshold": 15.0, "met": nx["mpps"] >= 15.0},
        {"gate": "Nicira case: >= 5,000 translations/s", "measured": round(nx["translations_per_s"]),
         "threshold": 5000, "met": nx["translations_per_s"] >= 5000},
    ]
    results.append({"variant": "nicira: extract + megaflow + execute", "mpps": round(nx["mpps"], 2),
                    "mpps_median": round(nx["mpps_median"], 2),
                    "x_interpreter": round(nx["mpps"] * 1e6 / old_best, 1)})
    upcall_row = rounded(up)
    setup = {"tables": N_TABLES, "flows": len(specs), "megaflows_hot": megaflows, "megaflow_subtables": st["subtables"],
             "emc_hit_share": emc_hits, "compile_s": round(compile_s, 3),
             "flow_burst_compile_s": round(old_compile_s, 3), **walk}
    payload = {"benchmark": "pipeline", "method": __doc__.split("\n\n", 1)[1].strip(), "burst": n,
               "machine": machine_info(pinned_cpu=cpu, code=code_version()), "interpreter_commit": INTERPRETER_COMMIT,
               "results": results, "gates": gates, "upcalls": [upcall_row, rounded(
                   {"case": "nicira", "translations_per_s": nx["translations_per_s"],
                    "translations_per_s_median": nx["translations_per_s_median"]})],
               "nicira": [{k: v for k, v in nx.items() if k not in ("mpps", "mpps_median")}],
               "breakdown": breakdown,
               "setup": [setup]}
    write_results("pipeline", payload, {"group": "variant", "series": "",
                                        "metrics": [("mpps", "Mpps (best window)"),
                                                    ("x_interpreter", "× parse_burst + flow_burst")],
                                        "title": f"{N_TABLES}-table goto pipeline, one core, burst {n}",
                                        "log_metrics": ("mpps", "x_interpreter")},
                  print_json=args.json, out_dir=args.out_dir)
    if not args.json:
        for r in results:
            print(f"  {r['variant']:32s} {r['mpps']:8.2f} Mpps (median {r['mpps_median']:.2f})  "
                  f"x{r['x_interpreter']} of the interpreter")
        print(f"  upcalls: {upcall_row['translations_per_s']} translations/s (median "
              f"{upcall_row['translations_per_s_median']}); per translation {upcall_row['path_us']} us: translate "
              f"{upcall_row['translate_us']}, install {upcall_row['install_us']}, rest {upcall_row['rest_us']}")
        for b in breakdown:
            print(f"  {b['step']:42s} {b['ns_per_burst']:9.1f} ns/burst {b['ns_per_frame']:7.2f} ns/frame "
                  f"{b['share_of_path']:6.1%}")
        print(f"  walk: {walk['tables_visited']} tables, mask {walk['mask']}, actions {walk['actions']}")
        for g in gates:
            print(f"gate {'MET ' if g['met'] else 'MISSED'}: {g['gate']}: {g['measured']} (threshold {g['threshold']})")
    return 0
