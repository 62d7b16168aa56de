"""``python -m bench openflow``: OpenFlow flow install rate and forwarding with N flows, pyvswitch vs OVS netdev.

Method: the ``bench forward`` topology (generator and sink namespaces, veth ports, switch on CPU 1,
traffic on CPU 0). Each switch runs from OVSDB: ``pyvswitch run`` (its own ovsdb-server) or
``ovsdb-server`` + ``ovs-vswitchd`` with a ``datapath_type=netdev`` bridge; the bridge is
``fail_mode=secure`` with the two veths as ofports 1 and 2. For each flow count N, the switch starts
afresh and ``ovs-ofctl -O OpenFlow13 add-flows`` installs N flows from a file (one flow-mod and one
barrier per round trip, as ovs-ofctl does): N-1 flows in three shapes the traffic never matches
(``ip,nw_dst=A`` priority 300, ``dl_dst=M`` priority 200, ``tcp,nw_src=A,tp_dst=80`` priority 100)
and ``priority=1,in_port=1,actions=output:2``, so each frame's lookup visits every subtable before
the one flow that forwards it. The install time is timed end to end (``flows_per_s``). Then
64-byte frames at the generator's full rate; ``mpps`` is the median forwarded rate over
``--repeat`` windows. The row ``flows=0`` is the L2-only rate: a standalone bridge with its
default ``priority=0 actions=NORMAL`` flow, measured first and last (the median of both runs'
windows). ``ratio_l2`` is a row's rate over the same switch's L2-only rate; ``ratio_ovs`` is
pyvswitch over OVS at the same N.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import tempfile
import time
from typing import Any

from bench.common import (
    REPO_DIR,
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
    start_subject,
    write_results,
)
from bench.forward import (
    SWITCH_CPU,
    TRAFFIC_CPU,
    OvsNetdev,
    PyVSwitch,
    Switch,
    Topology,
    _in_sw_ns_on_cpu,
    build_topology,
    learn,
    measure,
)

DEFAULT_FLOWS = "10,1000,100000"


class PyVSwitchDaemon(PyVSwitch):
    """``pyvswitch run`` (OVSDB-driven, with its OpenFlow agent) in the switch namespace on CPU 1."""

    def __init__(self, command: list[str]) -> None:
        super().__init__(command)
        self.rundir = ""
        self.env: dict[str, str] = {}

    def start(self, topo: Topology, cl: Cleanup) -> None:
        self.rundir = tempfile.mkdtemp(prefix="pvb-of-")
        rd = self.rundir
        cl.push("pyvswitch rundir", lambda: shutil.rmtree(rd, ignore_errors=True))
        # runs after the daemon's stop: a daemon killed before it could stop its ovsdb-server (SIGKILL while it
        # compiles at start-up) leaves it running, and the next start would not find it once the rundir is gone
        cl.push("pyvswitch's ovsdb-server", lambda: stop_orphan_ovsdb(rd))
        self.env = dict(os.environ, OVS_RUNDIR=rd)
        self.proc = start_subject(cl, _in_sw_ns_on_cpu([*self.cmd, "run", "--rundir", rd], SWITCH_CPU), "pyvswitch",
                                  "running", signal.SIGTERM, env=self.env, cwd=str(REPO_DIR))
        a, b = topo.sw_ports
        run(["ovs-vsctl", "--timeout=60", "add-br", "br0", "--", "add-port", "br0", a, "--", "set", "Interface", a,
             "ofport_request=1", "--", "add-port", "br0", b, "--", "set", "Interface", b, "ofport_request=2"],
            env=self.env)

    def cpu_note(self) -> str:
        return "pyvswitch run pinned to CPU 1 (its ovsdb-server too)"


def stop_orphan_ovsdb(rundir: str, timeout: float = 5.0) -> None:
    """Stop the ovsdb-server of ``rundir`` if it still runs (its pidfile names a process whose command line has that
    pidfile): SIGTERM, then SIGKILL after ``timeout`` seconds."""
    pidfile = os.path.join(rundir, "ovsdb-server.pid")
    try:
        with open(pidfile) as f:
            pid = int(f.read().split()[0])
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except (OSError, ValueError, IndexError):
        return
    if f"--pidfile={pidfile}" not in argv:
        return
    log(f"stopping the ovsdb-server pyvswitch left running (pid {pid})")
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _running(pid):
            return


def _running(pid: int) -> bool:
    """``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def flow_file(path: str, n: int) -> None:
    """``n`` flows: ``n - 1`` that 64-byte test frames never match, in three shapes, and the one that forwards."""
    with open(path, "w") as f:
        for i in range(n - 1):
            a, b, c = i >> 16 & 255, i >> 8 & 255, i & 255
            shape = i % 3
            if shape == 0:
                f.write(f"priority=300,ip,nw_dst=10.{a}.{b}.{c},actions=output:2\n")
            elif shape == 1:
                f.write(f"priority=200,dl_dst=0a:00:00:{a:02x}:{b:02x}:{c:02x},actions=output:2\n")
            else:
                f.write(f"priority=100,tcp,nw_src=172.{a}.{b}.{c},tp_dst=80,actions=output:2\n")
        f.write("priority=1,in_port=1,actions=output:2\n")


def install(sw: Switch, n: int) -> dict[str, Any]:
    """Install ``n`` flows with ovs-ofctl add-flows; (seconds, flows/s); checks the count."""
    env = sw.env  # type: ignore[attr-defined]
    if n == 0:
        run(["ovs-vsctl", "--timeout=30", "set-fail-mode", "br0", "standalone"], env=env)
        return {"install_s": None, "flows_per_s": None}
    run(["ovs-vsctl", "--timeout=30", "set-fail-mode", "br0", "secure"], env=env)
    time.sleep(0.5)
    path = os.path.join(sw.rundir, "flows.txt")  # type: ignore[attr-defined]
    flow_file(path, n)
    t = time.perf_counter()
    run(["ovs-ofctl", "-O", "OpenFlow13", "--timeout=3600", "add-flows", "br0", path], env=env, timeout=3600)
    dt = time.perf_counter() - t
    agg = run(["ovs-ofctl", "-O", "OpenFlow13", "dump-aggregate", "br0"], env=env).stdout
    if f"flow_count={n}" not in agg:
        raise RuntimeError(f"{sw.name}: expected {n} flows, got {agg.strip()}")
    return {"install_s": round(dt, 2), "flows_per_s": round(n / dt)}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write bench/results/openflow.{json,png,md}."""
    ap = argparse.ArgumentParser(prog="python -m bench openflow", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", default=DEFAULT_FLOWS, help=f"flow counts (default {DEFAULT_FLOWS}; 0 = L2 only, "
                    "always measured)")
    ap.add_argument("--against", default="ovs", help="reference switch: ovs (OVS netdev) or '' for none")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per forwarding window")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of traffic before each window")
    ap.add_argument("--repeat", type=int, default=2, help="windows per switch and flow count (median)")
    ap.add_argument("--pyvswitch", default="", metavar="COMMAND",
                    help="pyvswitch command line (default: the one installed with this Python, "
                         "python -m vswitch.cli)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    require_host(ap)
    wanted = [int(x) for x in args.flows.split(",") if x.strip() and int(x) > 0]
    counts = [0, *wanted, 0]   # the L2-only rate before and after: this VM's speed drifts
    makers: dict[str, Any] = {"pyvswitch": lambda: PyVSwitchDaemon(pyvswitch_command(args.pyvswitch))}
    if args.against == "ovs":
        makers["ovs"] = OvsNetdev
    os.sched_setaffinity(0, {TRAFFIC_CPU})
    trials_by: dict[tuple[int, str], list[Any]] = {}
    install_by: dict[tuple[int, str], dict[str, Any]] = {}
    versions: dict[str, str] = {}
    per = args.warmup + args.duration
    with signals_raise(), Progress(len(makers) * len(counts) * args.repeat * per, "openflow") as bar:
        done = 0.0
        for n in counts:
            for name, make in makers.items():
                sw = make()
                with Cleanup() as cl:
                    topo = build_topology("system", cl)
                    sw.start(topo, cl)
                    if name == "ovs":   # OvsNetdev keeps its env and rundir under these names too
                        for p, want in zip(topo.sw_ports, ("1", "2"), strict=True):
                            got = run(["ovs-vsctl", f"--db=unix:{sw.rundir}/db.sock", "get", "Interface", p,
                                       "ofport"], env=sw.env).stdout.strip()
                            if got != want:
                                raise RuntimeError(f"OVS gave {p} ofport {got}, the flows assume {want}")
                    versions[name] = sw.version()
                    log(f"{name}: installing {n} flows")
                    inst = install(sw, n)
                    learn(topo)
                    trials = []
                    for i in range(args.repeat):
                        base = done + i * per
                        trials.append(measure(topo, sw, 0.0, args.warmup, args.duration,
                                              lambda t, base=base: bar.set(base + t)))
                    done += args.repeat * per
                    trials_by.setdefault((n, name), []).extend(trials)
                    install_by[(n, name)] = inst
                    log(f"{name:10s} flows={n:<7d} {statistics.median(t.mpps for t in trials):.4f} Mpps  "
                        f"install {inst['flows_per_s']} flows/s")
    rows: list[dict[str, Any]] = []
    for (n, name), trials in trials_by.items():
        rows.append({"flows": n, "switch": name, "mpps": round(statistics.median(t.mpps for t in trials), 4),
                     "mpps_best": round(max(t.mpps for t in trials), 4),
                     "loss": round(statistics.median(t.loss for t in trials), 3), "windows": len(trials),
                     **install_by[(n, name)]})
    base = {r["switch"]: r["mpps"] for r in rows if r["flows"] == 0}
    by = {(r["flows"], r["switch"]): r for r in rows}
    for r in rows:
        r["ratio_l2"] = round(r["mpps"] / base[r["switch"]], 3) if base.get(r["switch"]) else None
        ovs = by.get((r["flows"], "ovs"))
        if r["switch"] == "pyvswitch" and ovs:
            r["ratio_ovs"] = round(r["mpps"] / ovs["mpps"], 3) if ovs["mpps"] else None
            if ovs.get("flows_per_s") and r.get("flows_per_s"):
                r["install_ratio_ovs"] = round(r["flows_per_s"] / ovs["flows_per_s"], 3)
    top = max(counts)
    py_top, ovs_top = by.get((top, "pyvswitch")), by.get((top, "ovs"))
    target = {"install_ge_ovs": bool(py_top and ovs_top and (py_top.get("flows_per_s") or 0)
                                     >= (ovs_top.get("flows_per_s") or 0)),
              f"forward_{top}_within_20pct_of_l2": bool(py_top and (py_top["ratio_l2"] or 0) >= 0.8)}
    payload = {"benchmark": "openflow", "method": __doc__.split("\n\n", 1)[1].strip(),
               "machine": machine_info(switch_versions=versions), "results": rows, "target": target}
    write_results("openflow", payload, PlotSpec(group="flows", series="switch",
                                                metrics=[("mpps", "forwarded Mpps (64 B)"),
                                                         ("flows_per_s", "add-flows flows/s")],
                                                title="OpenFlow: forwarding with N flows, install rate"),
                  print_json=args.json, out_dir=args.out_dir)
    return 0
