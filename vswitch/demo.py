"""``pyvswitch demo``: three hosts ping each other through pyvswitch configured with the stock OVS tools.

```
 netns pvdemo-a            netns pvdemo-b            netns pvdemo-c
 eth0 10.77.0.1            eth0 10.77.0.2            pvdemo-tap 10.77.0.3
   │ veth                    │ veth                    │ (tap netdev moved into the netns)
 pvdemo-a0 ──system──┐   pvdemo-b0 ──system──┐       │
                     └──────── bridge pvdemo ─────────┘ tap
            pyvswitch run (private ovsdb-server) ◄── ovs-vsctl / ovs-appctl
```
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile

from vswitch.hostnet import HostNet, HostNetError

HOSTS = [("pvdemo-a", "pvdemo-a0", "10.77.0.1"), ("pvdemo-b", "pvdemo-b0", "10.77.0.2")]
TAP_NS, TAP_DEV, TAP_IP = "pvdemo-c", "pvdemo-tap", "10.77.0.3"


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class _Tools:
    """ovs-vsctl / ovs-appctl pointed at the demo's rundir, echoing each command."""

    def __init__(self, rundir: str) -> None:
        self.env = dict(os.environ, OVS_RUNDIR=rundir)

    def __call__(self, *cmd: str, show: bool = True) -> str:
        if show:
            print(f"  $ {' '.join(cmd)}")
        proc = subprocess.run(list(cmd), capture_output=True, text=True, env=self.env, timeout=30)
        if proc.returncode:
            raise HostNetError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
        return proc.stdout


def run_demo(verbose: bool = False) -> int:
    """Build the topology through OVSDB, ping, print fdb/show and counters, tear down; 0 when all pings passed."""
    for tool in ("ovsdb-server", "ovs-vsctl", "ovs-appctl"):
        if not shutil.which(tool):
            print(f"pyvswitch demo: {tool} is missing: apt-get install --no-install-recommends openvswitch-switch",
                  file=sys.stderr)
            return 1
    signal.signal(signal.SIGTERM, _interrupt)
    net = HostNet()
    rundir = tempfile.mkdtemp(prefix="pvdemo-")
    daemon: subprocess.Popen | None = None
    try:
        print("pyvswitch demo: creating namespaces pvdemo-a, pvdemo-b, pvdemo-c")
        for ns, dev, ip in HOSTS:
            net.add_host(ns, dev, f"{ip}/24")
        net.add_netns(TAP_NS)
        cmd = [sys.executable, "-m", "vswitch.cli"] + (["-v"] if verbose else []) + ["run", "--rundir", rundir]
        daemon = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = daemon.stdout.readline() if daemon.stdout else ""
        if "running" not in line:
            raise HostNetError("pyvswitch run did not start")
        print(f"pyvswitch demo: started {line.strip().removeprefix('pyvswitch: ')}")
        vsctl = _Tools(rundir)
        print(f"pyvswitch demo: configuring with the stock Open vSwitch tools (OVS_RUNDIR={rundir})")
        vsctl("ovs-vsctl", "add-br", "pvdemo")
        for _, dev, _ in HOSTS:
            vsctl("ovs-vsctl", "add-port", "pvdemo", dev)
        vsctl("ovs-vsctl", "add-port", "pvdemo", TAP_DEV, "--", "set", "Interface", TAP_DEV, "type=tap")
        net.move_to_netns(TAP_DEV, TAP_NS, f"{TAP_IP}/24")
        print(vsctl("ovs-vsctl", "show"))
        ok = True
        for src_ns, dst_ip in (("pvdemo-a", "10.77.0.2"), ("pvdemo-b", "10.77.0.1"),
                               ("pvdemo-a", TAP_IP), (TAP_NS, "10.77.0.2")):
            passed = net.ping(src_ns, dst_ip, count=3)
            ok &= passed
            print(f"  ping {src_ns} -> {dst_ip}: {'ok' if passed else 'FAILED'}")
        print()
        print(vsctl("ovs-appctl", "fdb/show", "pvdemo"))
        print(vsctl("ovs-appctl", "dpif/show"))
        print(vsctl("ovs-appctl", "dpif-pyvswitch/pmd-stats-show"))
        print("pyvswitch demo: " + ("all pings passed" if ok else "some pings FAILED"))
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("\npyvswitch demo: interrupted, cleaning up", file=sys.stderr)
        return 130
    except (HostNetError, OSError, subprocess.SubprocessError) as exc:
        print(f"pyvswitch demo: failed: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if daemon is not None:
            daemon.terminate()
            try:
                daemon.wait(20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        net.cleanup()
        shutil.rmtree(rundir, ignore_errors=True)
        print("pyvswitch demo: removed everything it created")
