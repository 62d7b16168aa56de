"""Forwarding benchmark: 64-byte frames from one port to another through a two-port bridge, for
pyvswitch, the Open vSwitch userspace (netdev) datapath and the Linux bridge.

Topology (every switch gets fresh namespaces; nothing is created in the root namespace):

```
 netns pvb-gen              netns pvb-sw (switch under test, CPU 1)            netns pvb-sink
 gen0 / tap  ──veth/tap──►  swg ──► [ pyvswitch | ovs-vswitchd | br0 ] ──► sws  ──►  sink0 / tap
 trafgen gen (CPU 0)                                                          trafgen sink (CPU 0)
```

``--port-type system``: veth pairs gen0/swg and sink0/sws; the switch attaches swg and sws.
``--port-type tap``: the switch creates two tap ports in pvb-sw (it holds their fds); the harness
then moves the tap netdevs into pvb-gen and pvb-sink, where generator and sink use them.

Results go to ``bench/results/forward-<port type>.{json,png,md}``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.common import (
    REPO_DIR,
    Cleanup,
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
    set_rps,
    signals_raise,
    start_subject,
    wait_quiet,
    write_results,
)
from bench.trafgen import STAT_ERRORS, STAT_PACKETS, TrafProc

GEN_NS, SINK_NS, SW_NS = "pvb-gen", "pvb-sink", "pvb-sw"
GEN_IF, SINK_IF = "gen0", "sink0"  # veth ends the generator and the sink use (system ports)
SW_GEN_IF, SW_SINK_IF = "swg", "sws"  # switch-side veth ends (system ports)
TAP_GEN, TAP_SINK = "pvbtapg", "pvbtaps"  # tap ports (tap mode), created by the switch
SWITCH_CPU, TRAFFIC_CPU = 1, 0
OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
ALL_SWITCHES = ("pyvswitch", "ovs", "linux-bridge")


@dataclass
class Topology:
    """Where generator and sink attach, and the switch-side names the switch must bridge."""

    port_type: str
    gen_if: str = GEN_IF
    sink_if: str = SINK_IF
    sw_ports: tuple[str, str] = (SW_GEN_IF, SW_SINK_IF)
    gen_mac: str = ""
    sink_mac: str = ""


def steer_ingress_to_switch_cpu() -> None:
    """RPS: run the kernel receive processing of the switch-side veths on the switch's CPU."""
    set_rps(SW_GEN_IF, SW_NS, [SWITCH_CPU])
    set_rps(SW_SINK_IF, SW_NS, [SWITCH_CPU])


def build_topology(port_type: str, cl: Cleanup, ingress_rps: bool = False) -> Topology:
    """Create the three namespaces (and, for system ports, the two veth pairs; ``ingress_rps``
    steers their switch-side receive processing to the switch's CPU)."""
    for ns in (GEN_NS, SINK_NS, SW_NS):
        cl.netns(ns)
    if port_type == "system":
        cl.veth(GEN_IF, GEN_NS, SW_GEN_IF, SW_NS)
        cl.veth(SINK_IF, SINK_NS, SW_SINK_IF, SW_NS)
        if ingress_rps:
            steer_ingress_to_switch_cpu()
        topo = Topology(port_type)
        topo.gen_mac = link_mac(GEN_IF, GEN_NS)
        topo.sink_mac = link_mac(SINK_IF, SINK_NS)
        return topo
    return Topology(port_type, gen_if=TAP_GEN, sink_if=TAP_SINK, sw_ports=(TAP_GEN, TAP_SINK))


def move_taps(topo: Topology) -> None:
    """Move the switch's two tap netdevs into the generator and sink namespaces and bring them up."""
    for tap, ns in ((TAP_GEN, GEN_NS), (TAP_SINK, SINK_NS)):
        run(["ip", "link", "set", tap, "netns", ns], ns=SW_NS)
        run(["ip", "link", "set", tap, "up"], ns=ns)
    topo.gen_mac = link_mac(TAP_GEN, GEN_NS)
    topo.sink_mac = link_mac(TAP_SINK, SINK_NS)


def _in_sw_ns_on_cpu(cmd: list[str], cpu: int) -> list[str]:
    return ["ip", "netns", "exec", SW_NS, "taskset", "-c", str(cpu), *cmd]


# --------------------------------------------------------------------------------------------
# switches under test


class Switch:
    """A switch under test: started inside ``pvb-sw`` bridging ``topo.sw_ports``."""

    name = ""
    port_types: tuple[str, ...] = ("system", "tap")

    def start(self, topo: Topology, cl: Cleanup) -> None:
        """Start forwarding between the two ports; stopping is registered on ``cl``."""
        raise NotImplementedError

    def pid(self) -> int | None:
        """The process whose CPU time is reported as the switch's own (None: in-kernel)."""
        return None

    def version(self) -> str:
        """The version of the switch software."""
        return ""

    def cpu_note(self) -> str:
        """How the switch's CPU shows up in the accounting."""
        return ""


class PyVSwitch(Switch):
    """pyvswitch: ``pyvswitch bridge br0 --port system:IF --port system:IF`` (or ``tap:NAME``)."""

    name = "pyvswitch"

    def __init__(self, command: list[str]) -> None:
        self.cmd = command
        self.proc: subprocess.Popen[str] | None = None

    def command(self, topo: Topology) -> list[str]:
        """The pyvswitch command line the harness runs (inside pvb-sw, pinned to the switch CPU)."""
        ports: list[str] = []
        for p in topo.sw_ports:
            ports += ["--port", f"{topo.port_type}:{p}"]
        return [*self.cmd, "bridge", "br0", *ports]

    def start(self, topo: Topology, cl: Cleanup) -> None:
        self.proc = start_subject(cl, _in_sw_ns_on_cpu(self.command(topo), SWITCH_CPU), "pyvswitch", "ready",
                                  signal.SIGINT, cwd=str(REPO_DIR))
        if topo.port_type == "tap":
            move_taps(topo)

    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def version(self) -> str:
        try:
            from importlib.metadata import version

            return version("pyvswitch")
        except Exception:  # noqa: BLE001
            return "unknown"

    def cpu_note(self) -> str:
        return "pyvswitch process pinned to CPU 1"


class OvsNetdev(Switch):
    """Open vSwitch with the userspace (netdev) datapath, in its own rundir and netns."""

    name = "ovs"

    def __init__(self) -> None:
        self.vswitchd: subprocess.Popen[str] | None = None
        self.rundir = ""
        self.env: dict[str, str] = {}

    def _vsctl(self, *args: str) -> str:
        cmd = ["ovs-vsctl", f"--db=unix:{self.rundir}/db.sock", "--timeout=30", *args]
        return run(cmd, env=self.env).stdout

    def start(self, topo: Topology, cl: Cleanup) -> None:
        self.rundir = tempfile.mkdtemp(prefix="pvb-ovs-")
        rd = self.rundir
        cl.push("ovs rundir", lambda: shutil.rmtree(rd, ignore_errors=True))
        self.env = dict(os.environ, OVS_RUNDIR=rd, OVS_DBDIR=rd, OVS_LOGDIR=rd, OVS_SYSCONFDIR=rd,
                        OVS_PKGDATADIR="/usr/share/openvswitch")
        run(["ovsdb-tool", "create", f"{rd}/conf.db", OVS_SCHEMA], env=self.env)
        cl.popen(["ip", "netns", "exec", SW_NS, "taskset", "-c", str(TRAFFIC_CPU),
                  "ovsdb-server", f"{rd}/conf.db", f"--remote=punix:{rd}/db.sock",
                  f"--pidfile={rd}/ovsdb-server.pid", "--no-chdir", f"--log-file={rd}/ovsdb-server.log",
                  f"--unixctl={rd}/ovsdb-server.ctl"],
                 "ovsdb-server", env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not os.path.exists(f"{rd}/db.sock"):
            if time.monotonic() > deadline:
                raise RuntimeError("ovsdb-server did not create its socket")
            time.sleep(0.05)
        self._vsctl("--no-wait", "init")
        self.vswitchd = cl.popen(
            _in_sw_ns_on_cpu(["ovs-vswitchd", f"unix:{rd}/db.sock", f"--pidfile={rd}/ovs-vswitchd.pid",
                              "--no-chdir", f"--log-file={rd}/ovs-vswitchd.log",
                              f"--unixctl={rd}/ovs-vswitchd.ctl"], SWITCH_CPU),
            "ovs-vswitchd", env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cmd = ["add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev"]
        for p in topo.sw_ports:
            cmd += ["--", "add-port", "br0", p]
            if topo.port_type == "tap":
                cmd += ["--", "set", "interface", p, "type=tap"]
        self._vsctl(*cmd)  # waits until ovs-vswitchd applied it
        for p in topo.sw_ports:
            ofport = self._vsctl("get", "interface", p, "ofport").strip()
            if not ofport.isdigit() or int(ofport) <= 0:
                raise RuntimeError(f"OVS did not attach {p} (ofport {ofport})")
        if topo.port_type == "tap":
            move_taps(topo)

    def pid(self) -> int | None:
        return self.vswitchd.pid if self.vswitchd else None

    def version(self) -> str:
        return run(["ovs-vswitchd", "--version"]).stdout.splitlines()[0]

    def cpu_note(self) -> str:
        return "ovs-vswitchd (all threads) pinned to CPU 1, ovsdb-server on CPU 0"


class LinuxBridge(Switch):
    """The in-kernel Linux bridge; its forwarding runs in softirq on the CPU RPS steers to."""

    name = "linux-bridge"
    port_types = ("system",)

    def start(self, topo: Topology, cl: Cleanup) -> None:
        # without RPS the bridge would run inside the generator's sendto on CPU 0
        steer_ingress_to_switch_cpu()
        run(["ip", "link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0"], ns=SW_NS)
        for p in topo.sw_ports:
            run(["ip", "link", "set", p, "master", "br0"], ns=SW_NS)
        run(["ip", "link", "set", "br0", "up"], ns=SW_NS)

    def version(self) -> str:
        return f"kernel {os.uname().release}"

    def cpu_note(self) -> str:
        return "softirq on CPU 1 (RPS)"


SWITCHES: dict[str, type[Switch]] = {"pyvswitch": PyVSwitch, "ovs": OvsNetdev, "linux-bridge": LinuxBridge}


# --------------------------------------------------------------------------------------------
# one measurement


@dataclass
class Trial:
    """One measurement window at one offered load."""

    offered_mpps: float
    mpps: float
    loss: float
    cycles_per_packet: float
    proc_cycles_per_packet: float | None
    cpu1_util: float
    foreign_cpu_s: float
    sink_drops: int
    probes: tuple[Any, Any] | None = None   # what ``measure``'s probe returned at the window's start and end


def learn(topo: Topology) -> None:
    """Send a few frames from the sink side so the switch learns the sink's MAC (known unicast)."""
    gen = TrafProc("gen", SINK_NS, topo.sink_if, TRAFFIC_CPU,
                   ["--dst", topo.gen_mac, "--src", topo.sink_mac, "--count", "16"])
    try:
        gen.wait(60)
    finally:
        gen.close()
    time.sleep(0.2)


def measure(topo: Topology, sw: Switch, rate_mpps: float, warmup: float, duration: float,
            tick: Any, burst: int = 32, probe: Callable[[], Any] | None = None) -> Trial:
    """Run generator and sink at ``rate_mpps`` (0: unlimited; else bursts of ``burst`` frames)
    and measure one window (``probe``, if given, is called as the window starts and as it ends;
    its two answers are the trial's ``probes``)."""
    with Cleanup() as cl:
        sink = TrafProc("sink", SINK_NS, topo.sink_if, TRAFFIC_CPU, [], cl)
        sink.wait_running()
        args = ["--dst", topo.sink_mac, "--src", topo.gen_mac]
        if rate_mpps > 0:
            args += ["--rate-mpps", str(rate_mpps), "--burst", str(burst)]
        gen = TrafProc("gen", GEN_NS, topo.gen_if, TRAFFIC_CPU, args, cl)
        gen.wait_running()
        t_start = time.monotonic()
        while time.monotonic() - t_start < warmup:
            time.sleep(0.05)
            tick(time.monotonic() - t_start)
        pid = sw.pid()
        f0 = foreign_cpu_seconds()
        g0, s0 = gen.stats(), sink.stats()
        c0 = cpu_sample(SWITCH_CPU)
        proc0 = proc_tree_cpu_seconds(pid) if pid else 0.0
        p0 = probe() if probe else None
        while time.monotonic() - c0.t < duration:
            time.sleep(0.05)
            tick(warmup + time.monotonic() - c0.t)
        p1 = probe() if probe else None
        g1, s1 = gen.stats(), sink.stats()
        c1 = cpu_sample(SWITCH_CPU)
        proc1 = proc_tree_cpu_seconds(pid) if pid else 0.0
        foreign = foreign_delta(f0, foreign_cpu_seconds())
        if pid and not os.path.exists(f"/proc/{pid}"):
            raise RuntimeError(f"{sw.name} exited during the measurement")
    dt = c1.t - c0.t
    busy = cpu_busy_between(c0, c1)
    sent = int(g1[STAT_PACKETS] - g0[STAT_PACKETS])
    got = int(s1[STAT_PACKETS] - s0[STAT_PACKETS])
    hz = cpu_hz()
    per = hz / got if got else float("nan")
    return Trial(
        offered_mpps=sent / dt / 1e6,
        mpps=got / dt / 1e6,
        loss=max(0.0, 1.0 - got / sent) if sent else float("nan"),
        cycles_per_packet=busy * per,
        proc_cycles_per_packet=(proc1 - proc0) * per if pid else None,
        cpu1_util=busy / dt,
        foreign_cpu_s=foreign,
        sink_drops=int(s1[STAT_ERRORS] - s0[STAT_ERRORS]),
        probes=(p0, p1) if probe else None,
    )


def _median(vals: list[float | None]) -> float | None:
    v = [x for x in vals if x is not None]
    return statistics.median(v) if v else None


def _r(v: float | None, nd: int) -> float | int | None:
    if v is None or v != v:  # None or NaN
        return None
    return int(round(v)) if nd == 0 else round(v, nd)


def load_label(rate: float) -> str:
    """The group label of an offered load."""
    return "max" if rate <= 0 else f"{rate:g} Mpps"


def parse_loads(text: str) -> list[float]:
    """``"max,0.05"`` -> ``[0.0, 0.05]`` (0 means unlimited)."""
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        if part:
            out.append(0.0 if part in ("max", "0") else float(part))
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return _r(a / b, 2) if a is not None and b else None


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Forwarded Mpps and cycles/packet of each switch relative to OVS and the Linux bridge."""
    out = []
    for r in rows:
        entry: dict[str, Any] = {"switch": r["switch"], "load": r["load"]}
        for ref in ("ovs", "linux-bridge"):
            base = next((b for b in rows if b["switch"] == ref and b["load"] == r["load"]), None)
            key = ref.replace("-", "_")
            if base is None or r["switch"] == ref:
                continue
            entry[f"mpps_vs_{key}"] = _ratio(r["mpps"], base["mpps"])
            entry[f"cycles_vs_{key}"] = _ratio(r["cycles_per_packet"], base["cycles_per_packet"])
        if len(entry) > 2:
            out.append(entry)
    return out


def target(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's target for pyvswitch against OVS: >= 2x its forwarded Mpps at max load, and
    <= 0.5x its cycles per packet at every rate-capped load (equal offered load)."""
    def get(sw: str, load: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["switch"] == sw and r["load"] == load), None)

    out: dict[str, Any] = {"rule": "pyvswitch mpps >= 2x ovs at max load, cycles/packet <= 0.5x ovs at every "
                           "rate-capped load"}
    py, ovs = get("pyvswitch", "max"), get("ovs", "max")
    if not (py and ovs and ovs["mpps"]):
        out["met"] = None
        return out
    met = py["mpps"] >= 2.0 * ovs["mpps"]
    out["mpps_ratio_at_max"] = _ratio(py["mpps"], ovs["mpps"])
    for r in rows:
        if r["switch"] != "pyvswitch" or r["load"] == "max":
            continue
        o = get("ovs", r["load"])
        ratio = _ratio(r["cycles_per_packet"], o["cycles_per_packet"]) if o else None
        out[f"cycles_ratio_at_{r['load'].replace(' ', '_')}"] = ratio
        met = met and ratio is not None and ratio <= 0.5
    out["met"] = bool(met)
    return out


# --------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m bench forward``."""
    ap = argparse.ArgumentParser(prog="python -m bench forward", description=__doc__.split("\n\n")[0])
    ap.add_argument("--port-type", choices=("system", "tap"), default="system")
    ap.add_argument("--against", default="ovs,linux-bridge",
                    help="comma-separated reference switches: ovs, linux-bridge (default both)")
    ap.add_argument("--switches", default=None,
                    help="comma-separated switches to run, replacing 'pyvswitch + --against'")
    ap.add_argument("--loads", default="max,0.1,0.05",
                    help="offered loads in Mpps, 'max' = unlimited (default max,0.1,0.05)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement window")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of traffic before each window")
    ap.add_argument("--repeat", type=int, default=3, help="windows per switch and load (median reported)")
    ap.add_argument("--burst", type=int, default=32, help="frames per burst at the rate-capped loads")
    ap.add_argument("--ingress-rps", action="store_true",
                    help="system ports: steer the kernel receive work of the switch-side veths to the "
                         "switch's CPU for every switch (default: only for the Linux bridge)")
    ap.add_argument("--pyvswitch", default="", metavar="COMMAND",
                    help="pyvswitch command line (default: the one installed with this Python, "
                         "python -m vswitch.cli)")
    ap.add_argument("--quiet-wait", type=float, default=60.0,
                    help="max seconds to wait for other processes to go idle before each window")
    ap.add_argument("--attempts", type=int, default=4,
                    help="tries per window while other processes disturb it (the least disturbed is kept)")
    add_output_args(ap)
    args = ap.parse_args(argv)

    require_host(ap, cpus=2)
    if args.switches:
        names = [s.strip() for s in args.switches.split(",") if s.strip()]
    else:
        names = ["pyvswitch"] + [s.strip() for s in args.against.split(",") if s.strip()]
    for n in names:
        if n not in SWITCHES:
            ap.error(f"unknown switch {n!r} (known: {', '.join(SWITCHES)})")
    loads = parse_loads(args.loads)
    # the harness (and the generator and sink it starts) stays off the switch's CPU
    os.sched_setaffinity(0, {TRAFFIC_CPU})
    name = f"forward-{args.port_type}"
    if args.ingress_rps and args.port_type == "system":
        name += "-ingress-rps"

    skipped: list[dict[str, str]] = []
    switches: list[Switch] = []
    for n in names:
        sw = PyVSwitch(pyvswitch_command(args.pyvswitch)) if n == "pyvswitch" else SWITCHES[n]()
        if args.port_type not in sw.port_types:
            skipped.append({"switch": n, "reason": f"no {args.port_type} ports: the Linux bridge has no "
                            "tap-fd datapath of its own (see forward-system)"})
            continue
        switches.append(sw)

    rows: list[dict[str, Any]] = []
    versions: dict[str, str] = {}
    notes: dict[str, str] = {}
    per_trial = args.warmup + args.duration
    with signals_raise(), Progress(len(switches) * len(loads) * args.repeat * per_trial, name) as bar:
        done = 0.0
        for sw in switches:
            with Cleanup() as cl:
                topo = build_topology(args.port_type, cl, ingress_rps=args.ingress_rps)
                sw.start(topo, cl)
                versions[sw.name] = sw.version()
                notes[sw.name] = sw.cpu_note()
                for rate in loads:
                    trials = [_trial(topo, sw, rate, args, bar, done + i * per_trial, i)
                              for i in range(args.repeat)]
                    done += args.repeat * per_trial
                    rows.append(_row(sw.name, args.port_type, rate, trials, args.duration))
                    r = rows[-1]
                    log(f"{sw.name:13s} {r['load']:>9s}: offered {r['offered_mpps']:.4f} Mpps, forwarded "
                        f"{r['mpps']:.4f} Mpps, loss {r['loss']}, {r['cycles_per_packet']} cycles/packet")

    payload: dict[str, Any] = {
        "benchmark": name,
        "method": method_text(args, notes),
        "machine": machine_info(switch_versions=versions),
        "results": rows,
        "ratios": ratios(rows),
        "target": target(rows),
    }
    if skipped:
        payload["skipped"] = skipped
    spec = PlotSpec(group="load", series="switch",
                    metrics=[("mpps", "forwarded Mpps"), ("cycles_per_packet", "CPU-1 cycles / packet")],
                    title=f"{name}: 64-byte frames, switch on CPU 1")
    write_results(name, payload, spec, print_json=args.json, out_dir=args.out_dir)
    return 0


def _trial(topo: Topology, sw: Switch, rate: float, args: argparse.Namespace, bar: Progress, base: float,
           index: int) -> Trial:
    """One window; while other processes disturb it, retried (``--attempts``), keeping the least
    disturbed one."""
    label = f"{sw.name} {load_label(rate)} #{index + 1}"
    best: Trial | None = None
    for attempt in range(max(args.attempts, 1)):
        bar.set(base, label + (" (waiting for quiet)" if attempt == 0 else " (retry: disturbed)"))
        wait_quiet(args.quiet_wait)
        learn(topo)
        trial = measure(topo, sw, rate, args.warmup, args.duration, lambda t: bar.set(base + t, label),
                        args.burst)
        if best is None or trial.foreign_cpu_s < best.foreign_cpu_s:
            best = trial
        if trial.foreign_cpu_s <= 0.05 * args.duration:
            break
        log(f"note: {label}: other processes used {trial.foreign_cpu_s:.2f} CPU-s during the window")
    assert best is not None
    return best


def _limited_by(rate: float, trials: list[Trial]) -> str:
    """What capped the forwarded rate: 'switch' (it dropped frames), 'generator' (at max load the
    switch kept up), or 'offered' (a rate-capped load the switch kept up with)."""
    loss = _median([t.loss for t in trials]) or 0.0
    if loss > 0.01:
        return "switch"
    return "generator" if rate <= 0 else "offered"


def _row(name: str, port_type: str, rate: float, trials: list[Trial], duration: float) -> dict[str, Any]:
    mpps = [t.mpps for t in trials]
    return {
        "switch": name,
        "port_type": port_type,
        "frame": "64B",
        "load": load_label(rate),
        "offered_mpps": _r(_median([t.offered_mpps for t in trials]), 4),
        "mpps": _r(_median(mpps), 4),
        "loss": _r(_median([t.loss for t in trials]), 4),
        "cycles_per_packet": _r(_median([t.cycles_per_packet for t in trials]), 0),
        "proc_cycles_per_packet": _r(_median([t.proc_cycles_per_packet for t in trials]), 0),
        "cpu1_util": _r(_median([t.cpu1_util for t in trials]), 3),
        "limited_by": _limited_by(rate, trials),
        "mpps_min": _r(min(mpps), 4),
        "mpps_max": _r(max(mpps), 4),
        "runs": len(trials),
        "disturbed_runs": sum(1 for t in trials if t.foreign_cpu_s > 0.05 * duration),
        "sink_drops": sum(t.sink_drops for t in trials),
    }


_PORTS_SYSTEM = """
veth pairs gen0<->swg and sink0<->sws; the switch attaches swg and sws as system ports.
"""
_PORTS_SYSTEM_NATURAL = """
Kernel receive work stays where Linux puts it for a veth: the sender's CPU pays for receiving into the
peer (the generator's CPU 0 pays for a userspace switch's socket enqueue; the switch's CPU pays, inside
its transmit calls, for the delivery into the sink's socket). The Linux bridge would run entirely inside
the generator's sendto that way, so for it alone RPS steers swg's receive work to CPU 1, where the bridge
then forwards and delivers into the sink.
"""
_PORTS_SYSTEM_RPS = """
RPS steers the kernel receive work of swg/sws to CPU 1 for every switch, so the switch's CPU also pays for
receiving its input (a userspace switch then competes with that softirq, and OVS livelocks under
overload).
"""
_PORTS_TAP = """
the switch creates two tap ports in pvb-sw and holds their fds; the harness moves the tap netdevs into
pvb-gen and pvb-sink, where the generator and the sink use them (a tap fd stays valid across the move).
The generator's CPU pays for queueing into the tap, the switch's CPU for reading and writing the fds and,
inside its writes, for the delivery into the sink's socket.
"""
_METHOD = """
Topology: netns pvb-gen (generator) -> switch in netns pvb-sw -> netns pvb-sink (sink); {ports}
Fresh namespaces per switch. Traffic: bench.trafgen (numba; PACKET_TX_RING generator, TPACKET_V3 sink
that counts only frames with ethertype 0x88b5 + magic), 64-byte frames (60 bytes + FCS), one flow, known
unicast (before each window the sink side sends 16 frames so the switch learns the sink's MAC).
Pinning with taskset: switch on CPU 1 ({notes}), generator and sink on CPU 0.
Rate-capped loads are sent in bursts of {burst} frames, evenly spaced.
Each window: {warmup:g} s warm-up, then {duration:g} s measured; {repeat} windows per switch and load,
medians reported (mpps_min/max give the spread); a window during which other processes on the machine
used more than 5% of a CPU is retried (up to {attempts} tries, the least disturbed kept; disturbed_runs counts
windows kept although disturbed). The harness itself runs on CPU 0.
Loads: 'max' = generator unlimited (generator and sink share CPU 0, so it offers roughly 0.4-0.9 Mpps
depending on how much receive work lands on CPU 0); the fixed loads are rate-capped below every
switch's forwarding capacity, so CPU per packet compares like with like there.
offered_mpps = frames the generator handed to the kernel per second (those the device refused because
its queue was full included: they are retried from the ring); mpps = signature frames counted at the
sink per second; loss = 1 - received/offered; limited_by says what capped mpps
(switch: it dropped more than 1%; generator: at max load the switch kept up with all it was offered).
cycles_per_packet = CPU 1 busy time x CPU clock (cpu MHz of /proc/cpuinfo) / forwarded frames, where
busy = elapsed - idle - iowait of CPU 1 in /proc/stat (idle is measured exactly by the NO_HZ
idle tracking; the user/system/softirq columns are tick samples that miss most short softirq bursts on
a mostly idle CPU). It covers the switch process and all kernel work on CPU 1 (for the Linux bridge
all of it is softirq; a busy-polling switch counts its whole CPU).
proc_cycles_per_packet = the switch process's utime+stime (/proc/PID/stat, all threads, scaled by the
kernel to exact run time) per forwarded frame; n/a for the in-kernel bridge.
Ratios: switch / OVS and switch / Linux bridge at the same load; the target is pyvswitch >= 2x OVS
forwarded Mpps at max load with <= 0.5x its cycles per packet at the rate-capped loads (target.met).
"""


def method_text(args: argparse.Namespace, notes: dict[str, str]) -> str:
    """The method paragraph stored with the results."""
    if args.port_type == "system":
        ports = _PORTS_SYSTEM + (_PORTS_SYSTEM_RPS if args.ingress_rps else _PORTS_SYSTEM_NATURAL)
    else:
        ports = _PORTS_TAP
    text = _METHOD.format(ports=ports, notes="; ".join(f"{k}: {v}" for k, v in notes.items()),
                          warmup=args.warmup, duration=args.duration, repeat=args.repeat, burst=args.burst,
                          attempts=args.attempts)
    return " ".join(text.split())
