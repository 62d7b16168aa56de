"""``python -m bench fixture-normal``: does OVN's flow set, loaded on ``br-int``, slow L2 NORMAL forwarding on
another bridge of the same datapath?

Method: the ``bench forward`` topology (generator in pvb-gen, sink in pvb-sink, veth ports, switch in pvb-sw
on CPU 1, traffic and harness on CPU 0). Each switch runs from OVSDB with two bridges in its one datapath:
``br0`` (standalone, its default NORMAL flow, the two veths as ports 1 and 2: all the traffic) and ``br-int``
(``datapath_type=netdev``, ``fail_mode=secure`` as ovn-controller sets it, two internal ports at OpenFlow ports 1
and 2, the ports chassis A's flows name; no traffic). pyvswitch is ``pyvswitch run`` (its ovsdb-server and
OpenFlow agents included, all on CPU 1); OVS is ``ovsdb-server`` + ``ovs-vswitchd`` netdev in its own rundir
(vswitchd on CPU 1, ovsdb-server on CPU 0). ``br-int`` goes through its states in turn, every round (A B A B
... in one run, so the machine's drift falls on all alike): **empty** (no flows, groups, meters nor TLV
mappings: a secure bridge that drops), **loaded** (tests/fixtures/ovn-23.03-flows, chassis A, loaded as
tests/test_ovn_fixture.py loads it: ``add-tlv-map``, meters, ``add-groups``, every flow in one ``ovs-ofctl -O
OpenFlow15 --bundle add-flows``; the flow count is checked after every change) and, with ``--states``, **absent**
(no br-int: the cost of the second bridge itself). Leaving loaded, br-int is cleared with ``del-flows``,
``del-groups``, ``del-meters``, ``del-tlv-map``. After each change: ``--settle`` seconds, the sink's MAC taught
to br0, then one window per load: ``max`` (generator unlimited: the switch's forwarding capacity) and
rate-capped loads (CPU per packet at an equal load). Ratios (``mpps_loaded_over_empty``, the goal's, and each
state over absent) are taken for every two windows next to each other in time (a window against the reference
state's window before it and the one after it: 2 x rounds - 1 pairs), reported as their median with the min
and max. Columns per window
as in ``bench forward`` (``mpps``: frames counted at the sink per second; ``cycles_per_packet``: CPU 1 busy
time x clock / forwarded frames, which counts whatever else runs on CPU 1; ``proc_cycles_per_packet``: the
switch's processes' CPU time x clock / forwarded frames), plus where the switch's CPU went: ``top_thread_s``
(the busiest thread of the switch's processes in the window: pyvswitch's datapath thread, OVS's main thread
polling its non-PMD ports) and ``other_threads_s`` (all its other threads and child processes), and for
pyvswitch its datapath thread's own figures from ``dpif-netdev/pmd-stats-show``: time per packet in its busy
iterations (``dp_ns_per_packet``, wall-clock, so it includes time the thread was preempted), frames per iteration
(``dp_burst``) and epoll sleeps per second. With ``perf`` on PATH, the system calls of the switch's threads in the
window (``raw_syscalls:sys_enter`` per thread) per forwarded frame: ``top_thread_syscalls_per_packet`` and
``syscalls_per_packet`` (all threads), a count that the machine's noise does not change. ``--profile`` samples
pyvswitch's datapath thread with py-spy in every window (``bench/dpprofile.py``) and adds, per load, each function's
share of the samples by state (self: at the top of the stack; incl: anywhere on it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

from bench.common import (
    Cleanup,
    PlotSpec,
    Progress,
    add_output_args,
    log,
    machine_info,
    pyvswitch_command,
    require_host,
    run,
    signals_raise,
    write_results,
)
from bench.dpprofile import Samples, SpyWindow, SyscallCount, compare, find_py_spy
from bench.forward import (
    TRAFFIC_CPU,
    OvsNetdev,
    Switch,
    Trial,
    build_topology,
    learn,
    load_label,
    measure,
    parse_loads,
)
from bench.openflow import PyVSwitchDaemon
from tests import ovn_fixture as fx

CHASSIS = "chA"
STATES = ("absent", "empty", "loaded")
INT_PORTS = ("pvbi1", "pvbi2")          # br-int's internal ports, OpenFlow ports 1 and 2 (what chassis A names)
GOAL = 0.95                             # loaded / empty forwarding rate the issue asks for


# ------------------------------------------------------------------ br-int and the fixture
def _ofctl(env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 60) -> str:
    """``ovs-ofctl -O OpenFlow15 ARGS`` on the switch of ``env``; its stdout (an error raises)."""
    cmd = ["ovs-ofctl", f"--timeout={int(timeout)}", "-O", "OpenFlow15", *args]
    if stdin is None:
        return run(cmd, env=env, timeout=timeout + 5).stdout
    res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env, timeout=timeout + 5)
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {(res.stdout + res.stderr).strip()[:500]}")
    return res.stdout


def add_br_int(env: dict[str, str]) -> None:
    """``br-int`` as ovn-controller has it (netdev, secure), with internal ports at OpenFlow ports 1 and 2."""
    args = ["ovs-vsctl", "--timeout=60", "add-br", "br-int", "--", "set", "Bridge", "br-int", "datapath_type=netdev",
            "fail_mode=secure"]
    for ofport, name in enumerate(INT_PORTS, start=1):
        args += ["--", "add-port", "br-int", name, "--", "set", "Interface", name, "type=internal",
                 f"ofport_request={ofport}"]
    run(args, env=env, timeout=65)
    for ofport, name in enumerate(INT_PORTS, start=1):
        got = run(["ovs-vsctl", "--timeout=30", "get", "Interface", name, "ofport"], env=env).stdout.strip()
        if got != str(ofport):
            raise RuntimeError(f"br-int: {name} got OpenFlow port {got}, the fixture's flows need {ofport}")


def flow_count(env: dict[str, str]) -> int:
    """How many flows ``br-int`` holds (``dump-aggregate``)."""
    out = _ofctl(env, "dump-aggregate", "br-int")
    return int(out.split("flow_count=", 1)[1].split()[0])


def load_fixture(env: dict[str, str], chassis: str = CHASSIS) -> float:
    """Chassis ``chassis``' TLV map, meters, groups and every flow (one bundle) into ``br-int``; seconds taken.
    Raises unless br-int then holds exactly the fixture's flow count."""
    t = time.perf_counter()
    run(["ovs-ofctl", "--timeout=30", "add-tlv-map", "br-int", fx.tlv_map(chassis)], env=env)
    for meter in fx.meters(chassis):
        _ofctl(env, "add-meter", "br-int", meter)
    if fx.groups(chassis):
        _ofctl(env, "add-groups", "br-int", "-", stdin="\n".join(fx.groups(chassis)) + "\n")
    flows = fx.flows(chassis)
    _ofctl(env, "--bundle", "add-flows", "br-int", "-", stdin="\n".join(flows) + "\n")
    dt = time.perf_counter() - t
    if (n := flow_count(env)) != len(flows):
        raise RuntimeError(f"br-int holds {n} flows after loading the fixture's {len(flows)}")
    return dt


def clear_fixture(env: dict[str, str]) -> float:
    """Every flow, group, meter and TLV mapping of ``br-int`` deleted; seconds taken. Raises unless it is empty."""
    t = time.perf_counter()
    _ofctl(env, "del-flows", "br-int")
    _ofctl(env, "del-groups", "br-int")
    _ofctl(env, "del-meters", "br-int")
    run(["ovs-ofctl", "--timeout=30", "del-tlv-map", "br-int"], env=env)
    dt = time.perf_counter() - t
    if (n := flow_count(env)) != 0:
        raise RuntimeError(f"br-int still holds {n} flows after del-flows")
    return dt


# ------------------------------------------------------------------ where the switch's CPU goes
def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time of every thread of ``pid`` and its descendants, keyed ``comm/tid``: the scheduler's exact run time
    (``/proc/.../schedstat``, nanoseconds; not the 10 ms ticks of ``stat``)."""
    out: dict[str, float] = {}
    todo, seen = [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            base = f"/proc/{p}/task/{tid}"
            try:
                with open(f"{base}/comm") as f:
                    comm = f.read().strip()
                with open(f"{base}/schedstat") as f:
                    ns = int(f.read().split()[0])
                with open(f"{base}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
            except (OSError, ValueError, IndexError):
                continue
            out[f"{comm}/{tid}"] = ns / 1e9
    return out


def pmd_stats(env: dict[str, str]) -> dict[str, float]:
    """pyvswitch's datapath thread counters (``dpif-netdev/pmd-stats-show``): packets, busy ns, epoll sleeps."""
    out = run(["ovs-appctl", "--timeout=10", "dpif-netdev/pmd-stats-show"], env=env).stdout
    vals: dict[str, float] = {}
    for line in out.splitlines():
        key, _, rest = line.strip().partition(":")
        if key == "packets received":
            vals["packets"] = float(rest)
        elif key == "bursts":
            vals["bursts"] = float(rest)
        elif key == "epoll sleeps":
            vals["sleeps"] = float(rest)
        elif key == "avg. processing cycles per packet":
            vals["ns_per_packet"] = float(rest.split("(")[1].split()[0])
    vals["busy_ns"] = vals.get("ns_per_packet", 0.0) * vals.get("packets", 0.0)
    vals["t"] = time.monotonic()
    return vals


class WindowProbe:
    """What ``measure`` samples as a window starts and as it ends (called once each, in turn): per-thread CPU time,
    pyvswitch's pmd stats, and while the window runs the system calls per thread (``perf``) and py-spy's samples."""

    def __init__(self, sw: Switch, with_pmd: bool, perf: str | None, py_spy: str | None, seconds: float) -> None:
        self.sw, self.with_pmd, self.perf, self.py_spy, self.seconds = sw, with_pmd, perf, py_spy, seconds
        self.started = False
        self.spy: SpyWindow | None = None
        self.sys: SyscallCount | None = None

    def __call__(self) -> dict[str, Any]:
        pid = self.sw.pid() or 0
        got: dict[str, Any] = {}
        if self.started:        # the window ends: stop the counters first, so they cover no more than it
            if self.sys is not None:
                got["syscalls"] = self.sys.finish()
            if self.spy is not None:
                got["samples"] = self.spy.finish().get("datapath")
        got["threads"] = thread_cpu_seconds(pid) if pid else {}
        if self.with_pmd:
            got["pmd"] = pmd_stats(self.sw.env)  # type: ignore[attr-defined]
        got["t"] = time.monotonic()
        if not self.started:
            self.sys = SyscallCount(self.perf, pid) if self.perf and pid else None
            self.spy = SpyWindow(self.py_spy, pid, self.seconds) if self.py_spy and pid else None
            for counter in (self.sys, self.spy):
                if counter is not None:
                    counter.start()
        self.started = not self.started
        return got

    def close(self) -> None:
        """Stop whatever still counts (the window ended with an exception)."""
        for counter in (self.sys, self.spy):
            if counter is not None:
                counter.close()


def _breakdown(trial: Trial) -> dict[str, Any]:
    """A window's CPU split: the busiest thread's seconds, the others', their system calls per forwarded frame,
    and pyvswitch's datapath figures."""
    assert trial.probes is not None
    a, b = trial.probes
    delta = {k: v - a["threads"].get(k, 0.0) for k, v in b["threads"].items()}
    top = max(delta, key=delta.__getitem__) if delta else ""
    out: dict[str, Any] = {"top_thread": top.split("/")[0], "top_thread_s": round(delta.get(top, 0.0), 4),
                           "other_threads_s": round(sum(delta.values()) - delta.get(top, 0.0), 4)}
    others = sorted(((v, k) for k, v in delta.items() if k != top), reverse=True)[:3]
    out["busiest_others"] = ", ".join(f"{k.split('/')[0]} {v * 1e3:.1f} ms" for v, k in others if v > 0)
    frames = trial.mpps * 1e6 * (b["t"] - a["t"])
    if b.get("syscalls") and frames > 0:
        calls = b["syscalls"]
        out["top_thread_syscalls_per_packet"] = round(calls.get(int(top.rsplit("/", 1)[-1] or 0), 0) / frames, 3)
        out["syscalls_per_packet"] = round(sum(calls.values()) / frames, 3)
    if "pmd" in a:
        pa, pb = a["pmd"], b["pmd"]
        dp = pb["packets"] - pa["packets"]
        out["dp_ns_per_packet"] = round((pb["busy_ns"] - pa["busy_ns"]) / dp, 1) if dp > 0 else None
        bursts = pb["bursts"] - pa["bursts"]
        out["dp_burst"] = round(dp / bursts, 1) if bursts > 0 else None
        out["dp_sleeps_per_s"] = round((pb["sleeps"] - pa["sleeps"]) / max(pb["t"] - pa["t"], 1e-9))
    return out


# ------------------------------------------------------------------ rounds and ratios
def set_state(env: dict[str, str], now: str, want: str) -> float:
    """Take ``br-int`` from state ``now`` to ``want`` (``absent``, ``empty``, ``loaded``); seconds the change took."""
    t = time.perf_counter()
    if want == "absent":
        if now == "loaded":   # pyvswitch keeps one TLV map for the switch: a bridge made again would inherit it
            clear_fixture(env)
        if now != "absent":
            run(["ovs-vsctl", "--timeout=60", "del-br", "br-int"], env=env, timeout=65)
        return time.perf_counter() - t
    if now == "absent":
        add_br_int(env)
    elif now == "loaded":
        clear_fixture(env)
    if want == "loaded":
        load_fixture(env)
    return time.perf_counter() - t


def window_row(switch: str, rnd: int, state: str, rate: float, trial: Trial) -> dict[str, Any]:
    """One window as a result row."""
    def r(v: float | None, nd: int) -> float | None:
        return None if v is None or v != v else round(v, nd)
    return {"switch": switch, "round": rnd, "state": state, "load": load_label(rate),
            "offered_mpps": r(trial.offered_mpps, 4), "mpps": r(trial.mpps, 4), "loss": r(trial.loss, 4),
            "cycles_per_packet": r(trial.cycles_per_packet, 0),
            "proc_cycles_per_packet": r(trial.proc_cycles_per_packet, 0),
            "cpu1_util": r(trial.cpu1_util, 3), "foreign_cpu_s": r(trial.foreign_cpu_s, 2),
            "sink_drops": trial.sink_drops, **_breakdown(trial)}


def ratio_pairs(states: list[str]) -> list[tuple[str, str]]:
    """The (state, reference) pairs reported: loaded / empty (the goal), and each other state / absent."""
    pairs = [("loaded", "empty")] if {"loaded", "empty"} <= set(states) else []
    if "absent" in states:
        pairs += [(s, "absent") for s in states if s != "absent"]
    return pairs


def round_ratios(windows: list[dict[str, Any]], metric: str, state: str, ref: str, order: list[str]) -> list[float]:
    """``state`` / ``ref`` of ``metric`` for every pair of windows next to each other in time (A B A B ...: each
    window of ``state`` against the ``ref`` window before it and the one after it), so one disturbed window spoils
    at most two of the ratios and their median stands."""
    refs = {w["round"]: w[metric] for w in windows if w["state"] == ref and w[metric]}
    ahead = order.index(ref) < order.index(state)       # ref comes first in each round
    out = []
    for w in windows:
        if w["state"] != state or w[metric] is None:
            continue
        for rnd in ((w["round"], w["round"] + 1) if ahead else (w["round"] - 1, w["round"])):
            if rnd in refs:
                out.append(w[metric] / refs[rnd])
    return out


RATIO_METRICS = ("mpps", "cycles_per_packet", "proc_cycles_per_packet")
MEDIAN_METRICS = (*RATIO_METRICS, "other_threads_s", "top_thread_syscalls_per_packet", "syscalls_per_packet",
                  "dp_ns_per_packet", "dp_burst")


def summarise(rows: list[dict[str, Any]], states: list[str]) -> list[dict[str, Any]]:
    """Per switch and load: medians of each state, and the ratios of ``ratio_pairs`` with their spread over
    rounds (``mpps_loaded_over_empty`` etc., ``_min`` / ``_max``)."""
    out = []
    for switch in dict.fromkeys(r["switch"] for r in rows):
        for load in dict.fromkeys(r["load"] for r in rows if r["switch"] == switch):
            ws = [r for r in rows if r["switch"] == switch and r["load"] == load]
            entry: dict[str, Any] = {"switch": switch, "load": load, "rounds": 1 + max(w["round"] for w in ws)}
            for metric in MEDIAN_METRICS:
                for state in states:
                    vals = [w[metric] for w in ws if w["state"] == state and w.get(metric) is not None]
                    if vals:
                        entry[f"{metric}_{state}"] = round(statistics.median(vals), 4)
            for metric in RATIO_METRICS:
                for state, ref in ratio_pairs(states):
                    ratios = round_ratios(ws, metric, state, ref, states)
                    if ratios:
                        key = f"{metric}_{state}_over_{ref}"
                        entry[key] = round(statistics.median(ratios), 3)
                        entry[f"{key}_min"] = round(min(ratios), 3)
                        entry[f"{key}_max"] = round(max(ratios), 3)
            out.append(entry)
    return out


def verdict(summary: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's goal for pyvswitch: loaded / empty forwarding rate at max load >= ``GOAL``."""
    py = next((s for s in summary if s["switch"] == "pyvswitch" and s["load"] == "max"), None)
    ratio = py.get("mpps_loaded_over_empty") if py else None
    return {"rule": f"pyvswitch br0 forwarding at max load with br-int loaded / with br-int empty >= {GOAL} "
                    "(median over rounds)", "ratio": ratio,
            "spread": [py.get("mpps_loaded_over_empty_min"), py.get("mpps_loaded_over_empty_max")] if py else None,
            "met": None if ratio is None else ratio >= GOAL}


def _measure_switch(name: str, sw: Switch, args: argparse.Namespace, loads: list[float], bar: Progress,
                    done: float, out: dict[str, Any]) -> str:
    """Start ``sw`` with br0 (and br-int), take br-int through ``args.states`` each round, one window per load and
    state (profiled by py-spy when ``args.py_spy``); its version."""
    per = args.warmup + args.duration
    spy = args.py_spy if name == "pyvswitch" else None
    with Cleanup() as cl:
        topo = build_topology("system", cl)
        sw.start(topo, cl)
        env: dict[str, str] = sw.env  # type: ignore[attr-defined]
        version = sw.version()
        step, now = 0, "absent"
        for rnd in range(args.rounds):
            for state in args.states:
                dt = set_state(env, now, state)
                now = state
                out["state_changes"].append({"switch": name, "round": rnd, "state": state, "seconds": round(dt, 2)})
                time.sleep(args.settle)
                learn(topo)
                for rate in loads:
                    base = done + step * per
                    label = f"{name} round {rnd + 1} {state} {load_label(rate)}"
                    probe = WindowProbe(sw, name == "pyvswitch", args.perf, spy, args.duration)
                    try:
                        trial = measure(topo, sw, rate, args.warmup, args.duration,
                                        lambda t, base=base, label=label: bar.set(base + t, label), probe=probe)
                    finally:
                        probe.close()
                    samples = trial.probes[1].get("samples") if trial.probes else None
                    if samples:
                        out["profiles"].setdefault((state, load_label(rate)), Samples()).merge(samples)
                    step += 1
                    out["windows"].append(window_row(name, rnd, state, rate, trial))
                    w = out["windows"][-1]
                    log(f"{label}: {w['mpps']} Mpps, loss {w['loss']}, {w['cycles_per_packet']} cycles/packet, "
                        f"{w['proc_cycles_per_packet']} process cycles/packet, other threads {w['other_threads_s']} s")
    return version


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write bench/results/fixture-normal.{json,png,md} (``--states`` other than
    ``empty,loaded``: fixture-normal-<states>.*)."""
    ap = argparse.ArgumentParser(prog="python -m bench fixture-normal", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", default="ovs", help="reference switch: ovs (OVS netdev) or '' for none")
    ap.add_argument("--states", default="empty,loaded",
                    help="br-int's states, in the order each round takes them: absent (no br-int), empty, loaded "
                         "(default empty,loaded)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the states per switch (default 3)")
    ap.add_argument("--loads", default="max,0.1", help="offered loads in Mpps, 'max' = unlimited (default max,0.1)")
    ap.add_argument("--duration", type=float, default=2.5, help="seconds per measurement window (default 2.5)")
    ap.add_argument("--warmup", type=float, default=0.5, help="seconds of traffic before each window (default 0.5)")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds after each change of br-int (default 1)")
    ap.add_argument("--profile", nargs="?", const="", default=None, metavar="PY_SPY",
                    help="sample pyvswitch's datapath thread with py-spy in every window (optionally the py-spy "
                         "executable; default the one on PATH) and report the functions' shares by state")
    ap.add_argument("--no-syscalls", action="store_true",
                    help="do not count the switches' system calls per thread with perf (counted when perf is on PATH)")
    ap.add_argument("--pyvswitch", default="", metavar="COMMAND",
                    help="pyvswitch command line (default: python -m vswitch.cli of this Python)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    require_host(ap, cpus=2)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    args.states = [s.strip() for s in args.states.split(",") if s.strip()]
    if not args.states or set(args.states) - set(STATES) or len(set(args.states)) != len(args.states):
        ap.error(f"--states: distinct states among {', '.join(STATES)}")
    args.py_spy = None
    if args.profile is not None:
        args.py_spy = find_py_spy(args.profile)
        if not args.py_spy:
            ap.error("--profile needs py-spy (pip install py-spy, or give its path)")
    args.perf = None if args.no_syscalls else shutil.which("perf")
    loads = parse_loads(args.loads)
    makers: dict[str, Callable[[], Switch]] = {"pyvswitch": lambda: PyVSwitchDaemon(pyvswitch_command(args.pyvswitch))}
    if args.against == "ovs":
        makers["ovs"] = OvsNetdev
    elif args.against:
        ap.error(f"unknown reference switch {args.against!r} (known: ovs)")
    os.sched_setaffinity(0, {TRAFFIC_CPU})
    out: dict[str, Any] = {"windows": [], "state_changes": [], "profiles": {}}
    versions: dict[str, str] = {}
    per_switch = args.rounds * len(args.states) * len(loads) * (args.warmup + args.duration)
    # other state sequences get files of their own (results/fixture-normal-absent-empty-loaded.*)
    result = "fixture-normal" if args.states == ["empty", "loaded"] else "-".join(["fixture-normal", *args.states])
    with signals_raise(), Progress(len(makers) * per_switch, result) as bar:
        for i, (name, make) in enumerate(makers.items()):
            versions[name] = _measure_switch(name, make(), args, loads, bar, i * per_switch, out)
    summary = summarise(out["windows"], args.states)
    payload: dict[str, Any] = {
        "benchmark": result, "method": " ".join(__doc__.split("\n\n", 1)[1].split()),
        "machine": machine_info(switch_versions=versions), "results": summary, "goal": verdict(summary),
        "fixture": {"chassis": CHASSIS, "flows": len(fx.flows(CHASSIS)), "groups": len(fx.groups(CHASSIS)),
                    "meters": len(fx.meters(CHASSIS))},
        "windows": out["windows"], "state_changes": out["state_changes"]}
    for load in dict.fromkeys(load for _, load in out["profiles"]):
        by_state = {st: out["profiles"][st, load] for st in args.states if (st, load) in out["profiles"]}
        payload[f"profile_datapath_{load.replace(' ', '_')}"] = compare(by_state)
    pair = ratio_pairs(args.states)[0] if ratio_pairs(args.states) else None
    metrics = [(f"{m}_{pair[0]}_over_{pair[1]}", f"{label}, {pair[0]} / {pair[1]}") for m, label in
               (("mpps", "forwarded Mpps"), ("proc_cycles_per_packet", "switch cycles/packet"))] if pair else []
    write_results(result, payload,
                  PlotSpec(group="load", series="switch", metrics=metrics,
                           title="br0 NORMAL forwarding with OVN's flows on br-int") if metrics else None,
                  print_json=args.json, out_dir=args.out_dir)
    return 0
