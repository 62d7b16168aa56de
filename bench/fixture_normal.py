"""``python -m bench fixture-normal``: does OVN's flow set, loaded on ``br-int``, slow L2 NORMAL forwarding on
another bridge of the same datapath?

Method: the ``bench forward`` topology (generator in pvb-gen, sink in pvb-sink, veth ports, switch in pvb-sw
on CPU 1, traffic and harness on CPU 0). Each switch runs from OVSDB with two bridges: ``br0`` (standalone,
its default NORMAL flow, the two veths as ports 1 and 2: the traffic) and ``br-int`` (``datapath_type=netdev``,
``fail_mode=secure`` as ovn-controller sets it, two internal ports at OpenFlow ports 1 and 2, the ports chassis
A's flows name; no traffic). pyvswitch is ``pyvswitch run`` (its ovsdb-server and OpenFlow agents included,
all on CPU 1); OVS is ``ovsdb-server`` + ``ovs-vswitchd`` netdev in its own rundir (vswitchd on CPU 1,
ovsdb-server on CPU 0), both bridges in its one ``netdev@ovs-netdev`` datapath. ``br-int`` alternates
between two states, A B A B ... in one run so the machine's drift falls on both alike: **empty** (no flows,
groups, meters nor TLV mappings: a secure bridge that drops) and **loaded** (tests/fixtures/ovn-23.03-flows,
chassis A, loaded as tests/test_ovn_fixture.py loads it: ``add-tlv-map``, meters, ``add-groups``, every flow
in one ``ovs-ofctl -O OpenFlow15 --bundle add-flows``; the flow count is checked after every change). Each
state change is followed by ``--settle`` seconds, then one window per load: ``max`` (generator unlimited:
the switch's forwarding capacity) and rate-capped loads (CPU per packet at an equal load). A round is one
empty and one loaded window per load; ``ratio`` (loaded / empty) is computed per round, each loaded window
against the mean of the empty windows either side of it where there are two (drift cancels), and reported
as the median with the min and max over rounds. The first empty state is br-int as made (never loaded), the
later ones cleared after a load (``del-flows``, ``del-groups``, ``del-meters``, ``del-tlv-map``).
Columns per window as in ``bench forward`` (``mpps``: frames counted at the sink per second;
``cycles_per_packet``: CPU 1 busy time x clock / forwarded frames; ``proc_cycles_per_packet``: the switch's
process tree's CPU time x clock / forwarded frames), plus where the switch's CPU went: ``top_thread_s`` (the
busiest thread of the switch's processes in the window: the datapath thread for pyvswitch, the polling thread
for OVS) and ``other_threads_s`` (all its other threads and child processes), and for pyvswitch the
datapath thread's own time per packet in its busy iterations (``dp_ns_per_packet``,
``dpif-netdev/pmd-stats-show``) and its epoll sleeps per second.
"""

from __future__ import annotations

import argparse
import os
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
    run,
    signals_raise,
    write_results,
)
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
STATES = ("empty", "loaded")
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
    """utime+stime of every thread of ``pid`` and its descendants, keyed ``comm/tid``."""
    tick = os.sysconf("SC_CLK_TCK")
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
            try:
                with open(f"/proc/{p}/task/{tid}/stat") as f:
                    stat = f.read()
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
            except OSError:
                continue
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat.rsplit(")", 1)[1].split()
            out[f"{comm}/{tid}"] = (int(fields[11]) + int(fields[12])) / tick
    return out


def pmd_stats(env: dict[str, str]) -> dict[str, float]:
    """pyvswitch's datapath thread counters (``dpif-netdev/pmd-stats-show``): packets, busy ns, epoll sleeps."""
    out = run(["ovs-appctl", "--timeout=10", "dpif-netdev/pmd-stats-show"], env=env).stdout
    vals: dict[str, float] = {}
    for line in out.splitlines():
        key, _, rest = line.strip().partition(":")
        if key == "packets received":
            vals["packets"] = float(rest)
        elif key == "epoll sleeps":
            vals["sleeps"] = float(rest)
        elif key == "avg. processing cycles per packet":
            vals["ns_per_packet"] = float(rest.split("(")[1].split()[0])
    vals["busy_ns"] = vals.get("ns_per_packet", 0.0) * vals.get("packets", 0.0)
    vals["t"] = time.monotonic()
    return vals


def make_probe(sw: Switch, with_pmd: bool) -> Callable[[], dict[str, Any]]:
    """What ``measure`` samples at the start and end of a window: per-thread CPU time (and pyvswitch's pmd stats)."""
    def probe() -> dict[str, Any]:
        pid = sw.pid()
        got: dict[str, Any] = {"threads": thread_cpu_seconds(pid) if pid else {}}
        if with_pmd:
            got["pmd"] = pmd_stats(sw.env)  # type: ignore[attr-defined]
        return got
    return probe


def _breakdown(trial: Trial) -> dict[str, Any]:
    """A window's CPU split: the busiest thread's seconds, the others', and pyvswitch's datapath figures."""
    assert trial.probes is not None
    a, b = trial.probes
    delta = {k: v - a["threads"].get(k, 0.0) for k, v in b["threads"].items()}
    top = max(delta, key=delta.__getitem__) if delta else ""
    out: dict[str, Any] = {"top_thread": top.split("/")[0], "top_thread_s": round(delta.get(top, 0.0), 3),
                           "other_threads_s": round(sum(delta.values()) - delta.get(top, 0.0), 3)}
    if "pmd" in a:
        pa, pb = a["pmd"], b["pmd"]
        dp = pb["packets"] - pa["packets"]
        out["dp_ns_per_packet"] = round((pb["busy_ns"] - pa["busy_ns"]) / dp, 1) if dp > 0 else None
        out["dp_sleeps_per_s"] = round((pb["sleeps"] - pa["sleeps"]) / max(pb["t"] - pa["t"], 1e-9))
    return out


# ------------------------------------------------------------------ rounds and ratios
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


def round_ratios(windows: list[dict[str, Any]], metric: str) -> list[float]:
    """Per round, loaded / empty of ``metric``: each loaded window against the mean of the empty windows either side
    of it (the one before when it is the last)."""
    empty = {w["round"]: w[metric] for w in windows if w["state"] == "empty" and w[metric] is not None}
    out = []
    for w in windows:
        if w["state"] != "loaded" or not w[metric]:
            continue
        near = [empty[k] for k in (w["round"], w["round"] + 1) if k in empty]
        if near and statistics.fmean(near):
            out.append(w[metric] / statistics.fmean(near))
    return out


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per switch and load: medians of each state, and the loaded / empty ratios with their spread over rounds."""
    out = []
    for switch in dict.fromkeys(r["switch"] for r in rows):
        for load in dict.fromkeys(r["load"] for r in rows if r["switch"] == switch):
            ws = [r for r in rows if r["switch"] == switch and r["load"] == load]
            entry: dict[str, Any] = {"switch": switch, "load": load, "rounds": sum(w["state"] == "loaded" for w in ws)}
            for metric in ("mpps", "cycles_per_packet", "proc_cycles_per_packet", "other_threads_s",
                           "dp_ns_per_packet"):
                for state in STATES:
                    vals = [w[metric] for w in ws if w["state"] == state and w.get(metric) is not None]
                    if vals:
                        entry[f"{metric}_{state}"] = round(statistics.median(vals), 4)
                ratios = round_ratios(ws, metric) if metric in ("mpps", "cycles_per_packet",
                                                                "proc_cycles_per_packet") else []
                if ratios:
                    entry[f"{metric}_ratio"] = round(statistics.median(ratios), 3)
                    entry[f"{metric}_ratio_min"] = round(min(ratios), 3)
                    entry[f"{metric}_ratio_max"] = round(max(ratios), 3)
            out.append(entry)
    return out


def verdict(summary: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's goal for pyvswitch: loaded / empty forwarding rate at max load >= ``GOAL``."""
    py = next((s for s in summary if s["switch"] == "pyvswitch" and s["load"] == "max"), None)
    ratio = py.get("mpps_ratio") if py else None
    return {"rule": f"pyvswitch br0 forwarding at max load with br-int loaded / with br-int empty >= {GOAL} "
                    "(median over rounds)", "ratio": ratio, "met": None if ratio is None else ratio >= GOAL}


def _measure_switch(name: str, sw: Switch, args: argparse.Namespace, loads: list[float], bar: Progress,
                    done: float, rows: list[dict[str, Any]], changes: list[dict[str, Any]]) -> str:
    """Start ``sw`` with br0 and br-int, alternate br-int's states, one window per load and state; its version."""
    per = args.warmup + args.duration
    with Cleanup() as cl:
        topo = build_topology("system", cl)
        sw.start(topo, cl)
        env: dict[str, str] = sw.env  # type: ignore[attr-defined]
        add_br_int(env)
        probe = make_probe(sw, with_pmd=name == "pyvswitch")
        version = sw.version()
        step = 0
        for rnd in range(args.rounds):
            for state in STATES:
                if state == "loaded":
                    dt = load_fixture(env)
                elif rnd:
                    dt = clear_fixture(env)
                else:
                    dt = 0.0
                changes.append({"switch": name, "round": rnd, "state": state, "seconds": round(dt, 2)})
                time.sleep(args.settle)
                for rate in loads:
                    learn(topo)
                    base = done + step * per
                    label = f"{name} round {rnd + 1} {state} {load_label(rate)}"
                    trial = measure(topo, sw, rate, args.warmup, args.duration,
                                    lambda t, base=base, label=label: bar.set(base + t, label), probe=probe)
                    step += 1
                    rows.append(window_row(name, rnd, state, rate, trial))
                    w = rows[-1]
                    log(f"{label}: {w['mpps']} Mpps, loss {w['loss']}, {w['cycles_per_packet']} cycles/packet, "
                        f"other threads {w['other_threads_s']} s")
    return version


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write bench/results/fixture-normal.{json,png,md}."""
    ap = argparse.ArgumentParser(prog="python -m bench fixture-normal", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", default="ovs", help="reference switch: ovs (OVS netdev) or '' for none")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of (empty, loaded) per switch (default 3)")
    ap.add_argument("--loads", default="max,0.1", help="offered loads in Mpps, 'max' = unlimited (default max,0.1)")
    ap.add_argument("--duration", type=float, default=2.5, help="seconds per measurement window (default 2.5)")
    ap.add_argument("--warmup", type=float, default=0.5, help="seconds of traffic before each window (default 0.5)")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds after each change of br-int (default 1)")
    ap.add_argument("--pyvswitch", default="", metavar="COMMAND",
                    help="pyvswitch command line (default: python -m vswitch.cli of this Python)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        ap.error("needs root (network namespaces, veth, AF_PACKET)")
    if (os.cpu_count() or 1) < 2:
        ap.error("needs at least 2 CPUs (switch on CPU 1, traffic on CPU 0)")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    loads = parse_loads(args.loads)
    makers: dict[str, Callable[[], Switch]] = {"pyvswitch": lambda: PyVSwitchDaemon(pyvswitch_command(args.pyvswitch))}
    if args.against == "ovs":
        makers["ovs"] = OvsNetdev
    elif args.against:
        ap.error(f"unknown reference switch {args.against!r} (known: ovs)")
    os.sched_setaffinity(0, {TRAFFIC_CPU})
    rows: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    versions: dict[str, str] = {}
    per_switch = args.rounds * len(STATES) * len(loads) * (args.warmup + args.duration)
    with signals_raise(), Progress(len(makers) * per_switch, "fixture-normal") as bar:
        for i, (name, make) in enumerate(makers.items()):
            versions[name] = _measure_switch(name, make(), args, loads, bar, i * per_switch, rows, changes)
    summary = summarise(rows)
    payload = {"benchmark": "fixture-normal", "method": " ".join(__doc__.split("\n\n", 1)[1].split()),
               "machine": machine_info(switch_versions=versions), "results": summary, "windows": rows,
               "state_changes": changes, "goal": verdict(summary),
               "fixture": {"chassis": CHASSIS, "flows": len(fx.flows(CHASSIS)), "groups": len(fx.groups(CHASSIS)),
                           "meters": len(fx.meters(CHASSIS))}}
    write_results("fixture-normal", payload,
                  PlotSpec(group="load", series="switch",
                           metrics=[("mpps_ratio", "forwarded Mpps, loaded / empty"),
                                    ("cycles_per_packet_ratio", "CPU-1 cycles/packet, loaded / empty")],
                           title="br0 NORMAL with OVN's flows on br-int: loaded / empty"),
                  print_json=args.json, out_dir=args.out_dir)
    return 0
