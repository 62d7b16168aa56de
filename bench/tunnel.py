"""``python -m bench tunnel``: 64-byte frames between two hosts, each behind its own switch, the switches joined by a
Geneve (``--kind vxlan``: VXLAN) tunnel over a veth underlay: pyvswitch–pyvswitch against OVS–OVS (netdev).

Topology (tests/tunnel_hosts.py, fresh namespaces per subject, all removed afterwards):

```
 netns host A: gen on eth0 ─veth─ switch A: br-int (flows: host port <-> tunnel port) ── tun0 (geneve, remote B)
                                           br-phy 172.31.0.1/24 (internal) + the underlay veth ──┐
 netns host B: sink on eth0 ─veth─ switch B: br-int ── tun0 (remote A), br-phy 172.31.0.2/24 ────┘
```

Both switch daemons of a subject run on CPU 1 (pyvswitch: ``pyvswitch run`` each, its ovsdb-server included; OVS:
ovs-vswitchd each, ovsdb-server unpinned), generator and sink (``bench.trafgen``) and this harness on CPU 0. br-int
of each switch has two flows (``in_port=host -> tunnel``, ``in_port=tunnel -> host``); br-phy is NORMAL. Before
measuring, a few frames resolve the underlay neighbour; a subject that delivers nothing then fails with the reason
(its switches' state) and the others are still measured. Windows: ``--warmup`` s of traffic, then ``--duration`` s
measured, ``--repeat`` times per load, medians. ``mpps``: signature frames counted at host B per second;
``cycles_per_packet``: CPU 1 busy time x clock / delivered frames (both switches, and the kernel work on CPU 1);
``proc_cycles_a`` / ``proc_cycles_b``: each switch's process CPU time x clock / delivered frame (encapsulating
side A, decapsulating side B), ``switch_cycles_per_packet`` their sum (what the goal compares: on a shared machine
CPU 1 also runs other users' work, counted in ``disturbed_runs``, windows during which other processes used more
than 0.1 CPU-s). At max load the encapsulating switch takes CPU 1 from the decapsulating one, whose socket then
overflows: the delivered rate is the pair's. Ratios pyvswitch / OVS at the same load; the issue's goal: >= 2x OVS's
rate at max load with at most half its CPU per packet (as ``bench forward``; the CPU ratio at the rate-capped loads
is reported beside it). At the rate-capped loads the generator sends ``--burst`` frames at a time: each burst wakes
the switches once.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench.common import (
    PlotSpec,
    Progress,
    add_output_args,
    cpu_busy_between,
    cpu_hz,
    cpu_sample,
    foreign_cpu_seconds,
    foreign_delta,
    link_mac,
    log,
    machine_info,
    proc_tree_cpu_seconds,
    pyvswitch_command,
    require_host,
    run,
    signals_raise,
    wait_quiet,
    write_results,
)
from bench.forward import load_label, parse_loads
from bench.trafgen import STAT_PACKETS, TrafProc
from tests.tunnel_hosts import TUN_PORT, TunnelNet, tunnel_pair

SWITCH_CPU, TRAFFIC_CPU = 1, 0
SUBJECTS = ("pyvswitch", "ovs")
GOAL_RATE, GOAL_CYCLES = 2.0, 0.5


class CannotForward(RuntimeError):
    """A subject's switches delivered nothing through the tunnel."""


@dataclass
class Window:
    """One measurement window."""

    offered_mpps: float
    mpps: float
    cycles_per_packet: float
    proc_cycles_a: float
    proc_cycles_b: float
    foreign_cpu_s: float


def _macs(t: TunnelNet) -> tuple[str, str]:
    return link_mac("eth0", t.sides["a"].vm_ns), link_mac("eth0", t.sides["b"].vm_ns)


def set_flows(t: TunnelNet) -> None:
    """br-int of both sides: the host's port to the tunnel and back."""
    for side in ("a", "b"):
        t.flows(side, "in_port={vm},actions=output:{tun}", "in_port={tun},actions=output:{vm}")


def verify_forwarding(t: TunnelNet, name: str, timeout: float = 15.0) -> None:
    """Send a few frames from host A until host B counts some (the first ones go while the encapsulating switch
    resolves the underlay neighbour); raise ``CannotForward`` with the switches' state after ``timeout`` s."""
    gen_mac, sink_mac = _macs(t)
    sink = TrafProc("sink", t.sides["b"].vm_ns, "eth0", TRAFFIC_CPU, [])
    try:
        sink.wait_running()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            gen = TrafProc("gen", t.sides["a"].vm_ns, "eth0", TRAFFIC_CPU,
                           ["--dst", sink_mac, "--src", gen_mac, "--count", "32"])
            try:
                gen.wait(30)
            finally:
                gen.close()
            time.sleep(0.5)
            if sink.stats()[STAT_PACKETS] > 0:
                return
            for side in ("a", "b"):
                if not t.switch(side).alive():
                    break
    finally:
        sink.close()
    raise CannotForward(f"{name}: host B received nothing from host A through the tunnel in {timeout:.0f} s\n"
                        f"{t.diagnose()}")


def measure(t: TunnelNet, rate_mpps: float, warmup: float, duration: float, burst: int) -> Window:
    """One window at ``rate_mpps`` (0: as fast as the generator goes)."""
    gen_mac, sink_mac = _macs(t)
    pa, pb = t.switch("a").pid(), t.switch("b").pid()
    sink = TrafProc("sink", t.sides["b"].vm_ns, "eth0", TRAFFIC_CPU, [])
    gen = None
    try:
        sink.wait_running()
        args = ["--dst", sink_mac, "--src", gen_mac]
        if rate_mpps > 0:
            args += ["--rate-mpps", str(rate_mpps), "--burst", str(burst)]
        gen = TrafProc("gen", t.sides["a"].vm_ns, "eth0", TRAFFIC_CPU, args)
        gen.wait_running()
        time.sleep(warmup)
        f0 = foreign_cpu_seconds()
        g0, s0, c0 = gen.stats(), sink.stats(), cpu_sample(SWITCH_CPU)
        a0, b0 = proc_tree_cpu_seconds(pa), proc_tree_cpu_seconds(pb)
        time.sleep(duration)
        g1, s1, c1 = gen.stats(), sink.stats(), cpu_sample(SWITCH_CPU)
        a1, b1 = proc_tree_cpu_seconds(pa), proc_tree_cpu_seconds(pb)
        foreign = foreign_delta(f0, foreign_cpu_seconds())
    finally:
        if gen is not None:
            gen.close()
        sink.close()
    for side in ("a", "b"):
        if not t.switch(side).alive():
            raise CannotForward(f"switch {side} exited during the measurement\n{t.diagnose()}")
    dt = c1.t - c0.t
    got = int(s1[STAT_PACKETS] - s0[STAT_PACKETS])
    per = cpu_hz() / got if got else float("nan")
    return Window(offered_mpps=(g1[STAT_PACKETS] - g0[STAT_PACKETS]) / dt / 1e6, mpps=got / dt / 1e6,
                  cycles_per_packet=cpu_busy_between(c0, c1) * per, proc_cycles_a=(a1 - a0) * per,
                  proc_cycles_b=(b1 - b0) * per, foreign_cpu_s=foreign)


def _med(vals: list[float]) -> float | None:
    v = [x for x in vals if x == x]
    return statistics.median(v) if v else None


def _r(v: float | None, nd: int) -> float | int | None:
    if v is None or v != v:
        return None
    return int(round(v)) if nd == 0 else round(v, nd)


def row(name: str, kind: str, rate: float, windows: list[Window]) -> dict[str, Any]:
    """The result row of one subject at one load (medians of its windows)."""
    mpps = [w.mpps for w in windows]
    offered = _med([w.offered_mpps for w in windows])
    got = _med(mpps)
    return {"switch": name, "kind": kind, "frame": "64B", "load": load_label(rate),
            "offered_mpps": _r(offered, 4), "mpps": _r(got, 4),
            "loss": _r(max(0.0, 1 - got / offered) if offered and got is not None else None, 4),
            "switch_cycles_per_packet": _r(_med([w.proc_cycles_a + w.proc_cycles_b for w in windows]), 0),
            "cycles_per_packet": _r(_med([w.cycles_per_packet for w in windows]), 0),
            "proc_cycles_a": _r(_med([w.proc_cycles_a for w in windows]), 0),
            "proc_cycles_b": _r(_med([w.proc_cycles_b for w in windows]), 0),
            "mpps_min": _r(min(mpps), 4), "mpps_max": _r(max(mpps), 4), "runs": len(windows),
            "disturbed_runs": sum(1 for w in windows if w.foreign_cpu_s > 0.1)}


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """pyvswitch / OVS of rate and CPU per packet, per load."""
    out = []
    for r in rows:
        if r["switch"] != "pyvswitch":
            continue
        o = next((x for x in rows if x["switch"] == "ovs" and x["load"] == r["load"]), None)
        if o is None:
            continue
        entry: dict[str, Any] = {"load": r["load"]}
        for key in ("mpps", "switch_cycles_per_packet", "cycles_per_packet", "proc_cycles_a", "proc_cycles_b"):
            entry[f"{key}_vs_ovs"] = round(r[key] / o[key], 2) if r[key] is not None and o[key] else None
        out.append(entry)
    return out


def goal(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's goal, read as ``bench forward`` reads the same words: at max load, pyvswitch >= 2x OVS's rate
    with <= 0.5x its CPU per packet (the two switches' processes): ``met``. The same CPU bound at every load,
    the rate-capped ones included, is reported beside it (``met_at_every_load``), not part of the goal."""
    rs = ratios(rows)
    out: dict[str, Any] = {"rule": f"at max load: pyvswitch mpps >= {GOAL_RATE}x ovs and switch_cycles_per_packet "
                                   f"<= {GOAL_CYCLES}x ovs (met_at_every_load: the CPU bound at every load too)"}
    at_max = next((r for r in rs if r["load"] == "max"), None)
    if at_max is None or at_max["mpps_vs_ovs"] is None:
        out["met"] = None
        return out
    out["mpps_ratio_at_max"] = at_max["mpps_vs_ovs"]
    out["cycles_ratios"] = {r["load"]: r["switch_cycles_per_packet_vs_ovs"] for r in rs}
    cyc = at_max["switch_cycles_per_packet_vs_ovs"]
    out["met"] = bool(at_max["mpps_vs_ovs"] >= GOAL_RATE and cyc is not None and cyc <= GOAL_CYCLES)
    out["met_at_every_load"] = bool(out["met"] and all(
        v is not None and v <= GOAL_CYCLES for v in out["cycles_ratios"].values()))
    return out


def measure_subject(name: str, args: argparse.Namespace, loads: list[float], bar: Progress, base: float,
                    rows: list[dict[str, Any]]) -> str:
    """Build the two switches of ``name``, check they forward, measure every load; their version."""
    per = args.warmup + args.duration
    with tunnel_pair(args.kind, name, name, prefix="pvbt", wrap=("taskset", "-c", str(SWITCH_CPU))) as t:
        set_flows(t)
        verify_forwarding(t, name)
        version = run(["ovs-vswitchd", "--version"]).stdout.splitlines()[0] if name == "ovs" else "pyvswitch"
        done = base
        for rate in loads:
            windows = []
            for i in range(args.repeat):
                bar.set(done, f"{name} {load_label(rate)} #{i + 1}")
                wait_quiet(args.quiet_wait)
                windows.append(measure(t, rate, args.warmup, args.duration, args.burst))
                done += per
            rows.append(row(name, args.kind, rate, windows))
            r = rows[-1]
            log(f"{name:10s} {r['load']:>9s}: offered {r['offered_mpps']} Mpps, delivered {r['mpps']} Mpps, "
                f"switches {r['switch_cycles_per_packet']} cycles/packet "
                f"(A {r['proc_cycles_a']}, B {r['proc_cycles_b']}), "
                f"CPU 1 {r['cycles_per_packet']}, disturbed windows {r['disturbed_runs']}")
        stats = t.vsctl("a", "get", "Interface", TUN_PORT, "statistics")
        log(f"{name}: switch A's {TUN_PORT} statistics {stats}")
    return version


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; write bench/results/tunnel.* (``--kind vxlan``: tunnel-vxlan.*). Exit status 1 when a
    subject could not forward (the others' results are written)."""
    ap = argparse.ArgumentParser(prog="python -m bench tunnel", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=("geneve", "vxlan"), default="geneve")
    ap.add_argument("--switches", default=",".join(SUBJECTS),
                    help="subjects, each on both ends (default pyvswitch,ovs)")
    ap.add_argument("--loads", default="max,0.02", help="offered loads in Mpps, 'max' = unlimited (default max,0.02)")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per measurement window (default 3)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of traffic before each window (default 1)")
    ap.add_argument("--repeat", type=int, default=2, help="windows per subject and load (default 2)")
    ap.add_argument("--burst", type=int, default=32, help="frames per burst at the rate-capped loads")
    ap.add_argument("--quiet-wait", type=float, default=5.0,
                    help="max seconds to wait for other processes to go idle before each window (default 5)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    require_host(ap, cpus=2)
    names = [s.strip() for s in args.switches.split(",") if s.strip()]
    if not names or set(names) - set(SUBJECTS):
        ap.error(f"--switches: among {', '.join(SUBJECTS)}")
    if "pyvswitch" in names:
        pyvswitch_command()        # stops here, with the reason, when pyvswitch cannot run
    loads = parse_loads(args.loads)
    os.sched_setaffinity(0, {TRAFFIC_CPU})
    name = "tunnel" if args.kind == "geneve" else f"tunnel-{args.kind}"
    rows: list[dict[str, Any]] = []
    versions: dict[str, str] = {}
    failed: list[dict[str, str]] = []
    per_subject = len(loads) * args.repeat * (args.warmup + args.duration)
    with signals_raise(), Progress(len(names) * per_subject, name) as bar:
        for i, subject in enumerate(names):
            try:
                versions[subject] = measure_subject(subject, args, loads, bar, i * per_subject, rows)
            except (CannotForward, AssertionError) as exc:      # the harness asserts what it sets up
                reason = str(exc)
                log(f"{subject}: cannot forward through the {args.kind} tunnel:\n{reason[:3000]}")
                failed.append({"switch": subject, "reason": reason.splitlines()[0][:500]})
    payload: dict[str, Any] = {
        "benchmark": name, "method": " ".join(__doc__.split("\n\n", 1)[1].split()),
        "machine": machine_info(switch_versions=versions), "results": rows, "ratios": ratios(rows),
        "goal": goal(rows)}
    if failed:
        payload["failed"] = failed
    spec = PlotSpec(group="load", series="switch",
                    metrics=[("mpps", "delivered Mpps"), ("switch_cycles_per_packet", "switch cycles / packet"),
                             ("cycles_per_packet", "CPU-1 cycles / packet")],
                    title=f"{name}: 64-byte frames host to host over {args.kind}, both switches on CPU 1")
    write_results(name, payload, spec if rows else None, print_json=args.json, out_dir=args.out_dir)
    return 1 if failed else 0
