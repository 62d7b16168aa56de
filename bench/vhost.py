"""vhost-user forwarding benchmark: pyvswitch vs OVS-DPDK, two vhost-user ports looped by one testpmd.

```
            ┌──────────────── dpdk-testpmd (CPU 0: main and forwarding lcore), io mode ────────────────┐
            │  virtio_user0 ── rx → tx ──┐                           ┌── tx ← rx ── virtio_user1       │
            └──────┬─────────────────────┼───────────────────────────┼─────────────────────┬─────────┘
                   │ vhu0                │ (each frame it receives    │                vhu1 │
            ┌──────▼─────────────────────┴─── goes out of the other) ─┴─────────────────────▼─────────┐
            │  switch under test (CPU 1): pyvswitch (MAC learning)  |  OVS-DPDK (in_port=1,output:2 ... )│
            └────────────────────────────────────────────────────────────────────────────────────────┘
```

``start tx_first 48`` puts 48 bursts of 32 frames (64 bytes) into each direction; testpmd forwards
whatever arrives on one port out of the other, so the frames circle as fast as the slower of
testpmd and the switch. The rate is what the switch forwards (both ports' receive counters in
testpmd, summed) over ``--duration`` seconds after ``--warmup``; cycles per packet are the switch
process's CPU time over the same window times the CPU clock, divided by the frames.

Each switch runs in its own rundir and network namespace. Results go to
``bench/results/vhost.{json,png,md}``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    REPO_DIR,
    Cleanup,
    PlotSpec,
    add_output_args,
    cpu_hz,
    log,
    machine_info,
    proc_tree_cpu_seconds,
    pyvswitch_command,
    run,
    signals_raise,
    start_subject,
    write_results,
)

SWITCH_CPU, TESTPMD_CPU = 1, 0
OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
OVS_DPDK = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk"
NS = "pvb-vhost"
SWITCHES = ("pyvswitch", "ovs-dpdk")
MACS = ("02:00:00:00:00:01", "02:00:00:00:00:02")
HUGEPAGES = 1200         # 2 MiB pages: 1 GiB for testpmd's guest memory, 1 GiB for OVS-DPDK
_PROC_CYCLES = re.compile(r"avg\.? processing cycles per packet:\s+([\d.]+)")
_RX = re.compile(r"NIC statistics for port (\d+)\s+#+\s+RX-packets:\s+(\d+)", re.S)


def reserve_hugepages(cl: Cleanup, n: int) -> None:
    """Make at least ``n`` 2 MiB hugepages available (testpmd's and OVS-DPDK's memory); restored afterwards."""
    path = "/proc/sys/vm/nr_hugepages"
    with open(path) as f:
        before = int(f.read())
    if before >= n:
        return
    with open(path, "w") as f:
        f.write(str(n))

    def restore() -> None:
        with open(path, "w") as f:
            f.write(str(before))

    cl.push("hugepages", restore)


class Testpmd:
    """One testpmd with a virtio_user port per socket, interactive over stdin, output unbuffered to a log."""

    def __init__(self, sockets: list[str], cl: Cleanup, ns: str) -> None:
        self.prefix = "pvbv" + uuid.uuid4().hex[:8]
        self.log = tempfile.NamedTemporaryFile("w+", prefix="pvb-testpmd-", suffix=".log", delete=False)  # noqa: SIM115
        cl.push("testpmd log", lambda: (self.log.close(), os.unlink(self.log.name)))
        cl.push("dpdk runtime dir", lambda: shutil.rmtree(f"/var/run/dpdk/{self.prefix}", ignore_errors=True))
        vdevs, peers = [], []
        for i, s in enumerate(sockets):
            # port i has MAC ...:0i+1 and sends to the other port's MAC: every frame then enters the switch
            # through the same port each time round and goes to a learned MAC (no flooding after the first).
            vdevs += ["--vdev", f"net_virtio_user{i},path={s},queue_size=1024,mac={MACS[i]}"]
            peers.append(f"--eth-peer={i},{MACS[1 - i]}")
        cmd = ["ip", "netns", "exec", ns, "stdbuf", "-o0", "dpdk-testpmd", "--no-pci", "--in-memory",
               "--single-file-segments", "-m", "1024", f"--file-prefix={self.prefix}",
               f"--lcores=0@{TESTPMD_CPU},1@{TESTPMD_CPU}", *vdevs, "--", "-i",
               "--total-num-mbufs=65536", "--forward-mode=io", "--rxd=1024", "--txd=1024", *peers]
        self.proc = cl.popen(cmd, "testpmd", stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT,
                             text=True)
        self.prompts = 1

    def text(self) -> str:
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def cmd(self, line: str, timeout: float = 60.0) -> str:
        """Run one command to completion; return what it printed."""
        before = len(self.text())
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        self.prompts += 1
        deadline = time.monotonic() + timeout
        while self.text().count("testpmd> ") < self.prompts:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"testpmd did not finish {line!r}:\n{self.text()[-3000:]}")
            time.sleep(0.02)
        return self.text()[before:]

    def rx_packets(self) -> int:
        """Frames received on all ports so far (= frames the switch delivered)."""
        out = self.cmd("show port stats all")
        return sum(int(n) for _, n in _RX.findall(out))


class PyVSwitch:
    """``pyvswitch run`` in its own rundir, configured through ovs-vsctl, pinned to the switch CPU."""

    name = "pyvswitch"

    def __init__(self, command: list[str]) -> None:
        self.cmd = command

    def start(self, cl: Cleanup) -> list[str]:
        self.rundir = tempfile.mkdtemp(prefix="pvb-pyvs-")
        rd = self.rundir
        cl.push("pyvswitch rundir", lambda: shutil.rmtree(rd, ignore_errors=True))
        self.env = dict(os.environ, OVS_RUNDIR=rd)
        self.proc = start_subject(cl, ["ip", "netns", "exec", NS, "taskset", "-c", str(SWITCH_CPU), *self.cmd, "run",
                                       "--rundir", rd], "pyvswitch", "running", env=self.env, cwd=str(REPO_DIR))
        vs = ["ovs-vsctl", "--timeout=30", "add-br", "br0"]
        for p in ("vhu0", "vhu1"):
            vs += ["--", "add-port", "br0", p, "--", "set", "Interface", p, "type=dpdkvhostuser"]
        run(vs, env=self.env)
        return [f"{rd}/vhu0", f"{rd}/vhu1"]

    def pid(self) -> int:
        return self.proc.pid

    def appctl(self, *args: str) -> str:
        return run(["ovs-appctl", *args], env=self.env).stdout

    def pmd_stats(self, clear: bool = False) -> str:
        return self.appctl("dpif-pyvswitch/pmd-stats-clear" if clear else "dpif-pyvswitch/pmd-stats-show")

    def version(self) -> str:
        from importlib.metadata import version

        return version("pyvswitch")


class OvsDpdk:
    """ovs-vswitchd-dpdk with a netdev bridge of two dpdkvhostuser ports and port-to-port flows."""

    name = "ovs-dpdk"

    def _vsctl(self, *args: str) -> str:
        return run(["ovs-vsctl", f"--db=unix:{self.rundir}/db.sock", "--timeout=60", *args], env=self.env).stdout

    def start(self, cl: Cleanup) -> list[str]:
        if not os.path.exists(OVS_DPDK):
            raise FileNotFoundError(f"{OVS_DPDK} missing: apt-get install --no-install-recommends "
                                    "openvswitch-switch-dpdk")
        self.rundir = tempfile.mkdtemp(prefix="pvb-ovsdpdk-")
        rd = self.rundir
        cl.push("ovs rundir", lambda: shutil.rmtree(rd, ignore_errors=True))
        self.env = dict(os.environ, OVS_RUNDIR=rd, OVS_DBDIR=rd, OVS_LOGDIR=rd, OVS_SYSCONFDIR=rd)
        run(["ovsdb-tool", "create", f"{rd}/conf.db", OVS_SCHEMA], env=self.env)
        cl.popen(["ip", "netns", "exec", NS, "taskset", "-c", str(TESTPMD_CPU), "ovsdb-server", f"{rd}/conf.db",
                  f"--remote=punix:{rd}/db.sock", f"--pidfile={rd}/ovsdb-server.pid", "--no-chdir",
                  f"--unixctl={rd}/ovsdb-server.ctl"], "ovsdb-server", env=self.env,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not os.path.exists(f"{rd}/db.sock"):
            if time.monotonic() > deadline:
                raise RuntimeError("ovsdb-server did not create its socket")
            time.sleep(0.05)
        self._vsctl("--no-wait", "init", "--", "set", "Open_vSwitch", ".", "other_config:dpdk-init=true",
                    f"other_config:dpdk-extra=--no-pci --file-prefix=pvbovs{os.getpid()}",
                    "other_config:dpdk-socket-mem=1024",
                    f"other_config:pmd-cpu-mask={1 << SWITCH_CPU:#x}",
                    f"other_config:dpdk-lcore-mask={1 << SWITCH_CPU:#x}")
        self.vswitchd = cl.popen(["ip", "netns", "exec", NS, "taskset", "-c", str(SWITCH_CPU), OVS_DPDK,
                                  f"unix:{rd}/db.sock", f"--pidfile={rd}/ovs-vswitchd.pid", "--no-chdir",
                                  f"--log-file={rd}/ovs-vswitchd.log", f"--unixctl={rd}/ovs-vswitchd.ctl"],
                                 "ovs-vswitchd-dpdk", env=self.env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        cl.push("ovs dpdk runtime dir", lambda: shutil.rmtree(f"/var/run/dpdk/pvbovs{os.getpid()}",
                                                              ignore_errors=True))
        cmd = ["add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev"]
        for i, p in enumerate(("vhu0", "vhu1")):
            cmd += ["--", "add-port", "br0", p, "--", "set", "Interface", p, "type=dpdkvhostuser",
                    f"ofport_request={i + 1}"]
        self._vsctl(*cmd)
        of = ["ovs-ofctl", "-O", "OpenFlow13"]
        run([*of, "del-flows", f"unix:{rd}/br0.mgmt"], env=self.env)
        run([*of, "add-flow", f"unix:{rd}/br0.mgmt", "in_port=1,actions=output:2"], env=self.env)
        run([*of, "add-flow", f"unix:{rd}/br0.mgmt", "in_port=2,actions=output:1"], env=self.env)
        return [f"{rd}/vhu0", f"{rd}/vhu1"]

    def pid(self) -> int:
        return self.vswitchd.pid

    def pmd_stats(self, clear: bool = False) -> str:
        cmd = "dpif-netdev/pmd-stats-clear" if clear else "dpif-netdev/pmd-stats-show"
        return run(["ovs-appctl", "-t", f"{self.rundir}/ovs-vswitchd.ctl", cmd], env=self.env).stdout

    def version(self) -> str:
        return run([OVS_DPDK, "--version"]).stdout.splitlines()[0]


def measure(sw: Any, warmup: float, duration: float, repeats: int) -> dict[str, Any]:
    """Start ``sw`` and one testpmd on its two ports; loop traffic; return the best of ``repeats`` windows."""
    with Cleanup() as cl:
        reserve_hugepages(cl, HUGEPAGES)
        cl.netns(NS)
        sockets = sw.start(cl)
        pmd = Testpmd(sockets, cl, NS)
        pmd.cmd("show port info all", timeout=120)     # the ports are up once testpmd prompts
        pmd.cmd("start tx_first 48")
        time.sleep(warmup)
        windows = []
        for _ in range(repeats):
            sw.pmd_stats(clear=True)
            p0, c0, t0 = pmd.rx_packets(), proc_tree_cpu_seconds(sw.pid()), time.monotonic()
            time.sleep(duration)
            p1, c1, t1 = pmd.rx_packets(), proc_tree_cpu_seconds(sw.pid()), time.monotonic()
            busy = _PROC_CYCLES.search(sw.pmd_stats())
            pkts = p1 - p0
            windows.append({"mpps": pkts / (t1 - t0) / 1e6,
                            "cycles_per_packet": (c1 - c0) * cpu_hz() / pkts if pkts else None,
                            "processing_cycles_per_packet": float(busy.group(1)) if busy else None})
            log(f"{sw.name}: {windows[-1]['mpps']:.3f} Mpps")
        pmd.cmd("stop")
        best = max(windows, key=lambda w: w["mpps"])
        return {"switch": sw.name, "mpps": round(best["mpps"], 3),
                "cycles_per_packet": round(best["cycles_per_packet"] or 0),
                "processing_cycles_per_packet": round(best["processing_cycles_per_packet"] or 0),
                "version": sw.version(),
                "windows_mpps": [round(w["mpps"], 3) for w in windows]}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (``python -m bench vhost --help``)."""
    ap = argparse.ArgumentParser(prog="python -m bench vhost", description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", default="ovs-dpdk", help="comma-separated comparison switches (ovs-dpdk or none)")
    ap.add_argument("--pyvswitch", default="", metavar="COMMAND",
                    help="pyvswitch command line (default: the one installed with this Python, "
                         "python -m vswitch.cli)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of traffic before measuring")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per measurement window")
    ap.add_argument("--repeats", type=int, default=3, help="windows per run (the best counts)")
    ap.add_argument("--rounds", type=int, default=3, help="runs per switch, interleaved (the best is reported, "
                    "the median too)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    cmd = pyvswitch_command(args.pyvswitch)      # before anything: the subject must run
    others = [s for s in args.against.split(",") if s and s != "none"]
    for s in others:
        if s not in SWITCHES:
            print(f"unknown switch {s!r} (known: {', '.join(SWITCHES)})", file=sys.stderr)
            return 2
    runs: dict[str, list[dict[str, Any]]] = {}
    with signals_raise():
        for rnd in range(args.rounds):      # interleaved: this VM's neighbours come and go
            for name in ["pyvswitch", *others]:
                sw = PyVSwitch(cmd) if name == "pyvswitch" else OvsDpdk()
                log(f"round {rnd + 1}/{args.rounds}: {name}")
                runs.setdefault(name, []).append(measure(sw, args.warmup, args.duration, args.repeats))
    rows = []
    for results in runs.values():
        best = dict(max(results, key=lambda r: r["mpps"]))
        best["median_mpps"] = round(statistics.median(r["mpps"] for r in results), 3)
        best["rounds_mpps"] = [r["mpps"] for r in results]
        best.pop("windows_mpps", None)
        rows.append(best)
    base = next((r for r in rows if r["switch"] == "ovs-dpdk"), None)
    for r in rows:
        if base and base["mpps"]:
            r["rate_vs_ovs_dpdk"] = round(r["mpps"] / base["mpps"], 3)
            if base["processing_cycles_per_packet"]:
                r["processing_cycles_vs_ovs_dpdk"] = round(r["processing_cycles_per_packet"]
                                                           / base["processing_cycles_per_packet"], 3)
    method = (f"One dpdk-testpmd (CPU {TESTPMD_CPU}, --no-huge, io mode, two virtio_user ports, queue size "
              f"1024) loops 64-byte frames through the switch's two vhost-user ports (`start tx_first 48`); "
              f"the switch runs pinned to CPU {SWITCH_CPU}. Rate: frames testpmd received on both ports per "
              f"second (= frames the switch forwarded), best of {args.repeats} windows of {args.duration} s "
              f"after {args.warmup} s warm-up, in each of {args.rounds} runs per switch, run in turn (the best "
              f"run is reported, with the median over runs); cycles/packet: the switch process's CPU time in "
              f"the window "
              f"x CPU clock / frames (both switches poll, so this is their whole core divided by the rate); "
              f"processing cycles/packet: the switches' own PMD statistics (dpif-netdev/pmd-stats-show, "
              f"dpif-pyvswitch/pmd-stats-show) over the window, cycles spent in iterations that moved frames. "
              f"pyvswitch learns MACs (NORMAL); OVS-DPDK has in_port=1,output:2 and back.")
    payload = {"method": method, "machine": machine_info(), "results": rows}
    write_results("vhost", payload, PlotSpec(group="switch", series="", metrics=[
        ("mpps", "Mpps (both directions)"), ("processing_cycles_per_packet", "processing cycles / packet")],
        title="vhost-user loop through two ports, 64-byte frames"), print_json=args.json,
        out_dir=Path(args.out_dir) if args.out_dir else None)
    for r in rows:
        print(f"{r['switch']:10s} {r['mpps']:7.3f} Mpps  {r['cycles_per_packet']:6d} cycles/packet  "
              f"{r['processing_cycles_per_packet']:6d} processing cycles/packet"
              + (f"  ({r['rate_vs_ovs_dpdk']:.2f}x OVS-DPDK's rate)" if "rate_vs_ovs_dpdk" in r else ""))
    return 0
