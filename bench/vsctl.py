"""``python -m bench vsctl``: how long ``ovs-vsctl add-port`` / ``del-port`` take to return, pyvswitch vs OVS.

Method: in a fresh network namespace, N veth pairs (no traffic); the switch under test runs in
that namespace with its own rundir and ovsdb-server: ``pyvswitch run`` (private ovsdb-server)
or ``ovsdb-server`` + ``ovs-vswitchd`` with a ``datapath_type=netdev`` bridge. Each
``ovs-vsctl add-port br0 vethI`` (without ``--no-wait``: it returns once the switch has applied
the change and set ``cur_cfg``) is timed end to end, then each ``del-port``. Medians and 90th
percentiles in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable

from bench.common import (
    REPO_DIR,
    Cleanup,
    Progress,
    add_output_args,
    machine_info,
    pyvswitch_command,
    run,
    start_subject,
    write_results,
)
from vswitch.ovsdb_server import OvsdbServer

NS = "pvb-vsctl"


def start_pyvswitch(rundir: str, env: dict[str, str], cl: Cleanup, cmd: list[str]) -> list[subprocess.Popen]:
    """``pyvswitch run`` (``cmd``: ``pyvswitch_command()``) in the namespace; stopped by ``cl``."""
    start_subject(cl, ["ip", "netns", "exec", NS, *cmd, "run", "--rundir", rundir], "pyvswitch", "running", env=env,
                  cwd=str(REPO_DIR))
    run(["ovs-vsctl", "add-br", "br0"], env=env)
    return []


def start_ovs(rundir: str, env: dict[str, str], cl: Cleanup, cmd: list[str]) -> list[subprocess.Popen]:
    """ovsdb-server (the same one pyvswitch runs privately) + ovs-vswitchd (userspace datapath) in the namespace."""
    db = OvsdbServer(rundir)
    db.start()
    vswitchd = subprocess.Popen(["ip", "netns", "exec", NS, "ovs-vswitchd", f"unix:{rundir}/db.sock",
                                 f"--pidfile={rundir}/ovs-vswitchd.pid", "--no-chdir",
                                 f"--log-file={rundir}/ovs-vswitchd.log"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run(["ovs-vsctl", "--timeout=30", "add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev"],
        env=env)
    assert db.proc is not None
    return [vswitchd, db.proc]


SWITCHES: dict[str, Callable[[str, dict[str, str], Cleanup, list[str]], list[subprocess.Popen]]] = {
    "pyvswitch": start_pyvswitch, "ovs": start_ovs,
}


def measure(name: str, n_ports: int, bar: Progress, cmd: list[str]) -> dict[str, object]:
    """Time add-port and del-port of ``n_ports`` veths on one switch; everything is removed after."""
    run(["ip", "netns", "add", NS])
    procs: list[subprocess.Popen] = []
    rundir = tempfile.mkdtemp(prefix="pvb-vsctl-")
    env = dict(os.environ, OVS_RUNDIR=rundir, OVS_DBDIR=rundir, OVS_LOGDIR=rundir)
    cl = Cleanup()
    try:
        for i in range(n_ports):
            run(["ip", "-n", NS, "link", "add", f"vb{i}", "type", "veth", "peer", "name", f"vp{i}"])
            run(["ip", "-n", NS, "link", "set", f"vb{i}", "up"])
            run(["ip", "-n", NS, "link", "set", f"vp{i}", "up"])
        procs = SWITCHES[name](rundir, env, cl, cmd)
        add, delete = [], []
        for i in range(n_ports):
            t0 = time.perf_counter()
            run(["ovs-vsctl", "--timeout=30", "add-port", "br0", f"vb{i}"], env=env)
            add.append((time.perf_counter() - t0) * 1e3)
            bar.update(1, f"{name} add-port {i + 1}/{n_ports}")
        ofports = run(["ovs-vsctl", "--columns=ofport", "list", "Interface"], env=env).stdout
        if "-1" in ofports:
            raise RuntimeError(f"{name}: a port failed to attach: {ofports}")
        for i in range(n_ports):
            t0 = time.perf_counter()
            run(["ovs-vsctl", "--timeout=30", "del-port", "br0", f"vb{i}"], env=env)
            delete.append((time.perf_counter() - t0) * 1e3)
            bar.update(1, f"{name} del-port {i + 1}/{n_ports}")
        q = statistics.quantiles
        return {"switch": name, "ports": n_ports,
                "add_port_median_ms": round(statistics.median(add), 1), "add_port_p90_ms": round(q(add, n=10)[-1], 1),
                "del_port_median_ms": round(statistics.median(delete), 1),
                "del_port_p90_ms": round(q(delete, n=10)[-1], 1)}
    finally:
        cl.close()
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)
        shutil.rmtree(rundir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write bench/results/vsctl.{json,png,md}."""
    ap = argparse.ArgumentParser(prog="python -m bench vsctl", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ports", type=int, default=20, help="ports added then deleted per switch (default 20)")
    ap.add_argument("--switches", default="pyvswitch,ovs", help="switches to measure (default pyvswitch,ovs)")
    ap.add_argument("--pyvswitch", default="", metavar="COMMAND",
                    help="pyvswitch command line (default: the one installed with this Python, "
                         "python -m vswitch.cli)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    names = args.switches.split(",")
    cmd = pyvswitch_command(args.pyvswitch) if "pyvswitch" in names else []   # before anything: the subject runs
    results = []
    with Progress(2 * args.ports * len(names), "vsctl") as bar:
        for name in names:
            results.append(measure(name, args.ports, bar, cmd))
    payload = {"benchmark": "vsctl", "method": __doc__.split("\n\n", 1)[1].strip(), "machine": machine_info(),
               "results": results}
    write_results("vsctl", payload, {"group": "ports", "series": "switch",
                                     "metrics": [("add_port_median_ms", "add-port median (ms)"),
                                                 ("del_port_median_ms", "del-port median (ms)")],
                                     "title": "ovs-vsctl add-port / del-port round trip"},
                  print_json=args.json, out_dir=args.out_dir)
    if not args.json:
        for r in results:
            print(f"{r['switch']:10s} add-port median {r['add_port_median_ms']} ms (p90 {r['add_port_p90_ms']}), "
                  f"del-port median {r['del_port_median_ms']} ms (p90 {r['del_port_p90_ms']})")
    return 0
