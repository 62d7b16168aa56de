"""A first start on an empty numba cache never makes a control call fail, and the daemon says what it waits for."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from tests.netutil import unique
from tests.switchutil import Switch
from vswitch.hostnet import HostNet
from vswitch.ovsdb_server import OvsdbServer

pytestmark = pytest.mark.integration


def test_first_start_on_a_cold_cache_applies_the_first_vsctl_without_error(net: HostNet) -> None:
    stem = unique("cs")
    a, b = f"{stem}a", f"{stem}b"
    net.add_host(a, a, "10.58.0.1/24")
    net.add_host(b, b, "10.58.0.2/24")
    with tempfile.TemporaryDirectory(prefix="pvcold-") as cache, \
            tempfile.TemporaryDirectory(prefix="pvrun-") as rundir:
        env = dict(os.environ, OVS_RUNDIR=rundir, NUMBA_CACHE_DIR=cache)
        log = os.path.join(rundir, "daemon.log")
        proc = subprocess.Popen([sys.executable, "-m", "vswitch.cli", "run", "--rundir", rundir, "--log-file", log],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            # Right away, while the daemon compiles: ovs-vsctl waits for it and then succeeds.
            deadline = time.monotonic() + 30
            while not os.path.exists(os.path.join(rundir, "db.sock")):
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.05)
            t = time.monotonic()
            vsctl = subprocess.run(["ovs-vsctl", "--timeout=300", "add-br", f"{stem}s", "--", "add-port", f"{stem}s",
                                    a, "--", "add-port", f"{stem}s", b], capture_output=True, text=True, env=env)
            took = time.monotonic() - t
            assert vsctl.returncode == 0 and vsctl.stderr == "", vsctl.stderr
            assert "running" in proc.stdout.readline()
            for port in (a, b):
                got = subprocess.run(["ovs-vsctl", "get", "Interface", port, "error"], capture_output=True,
                                     text=True, env=env).stdout.strip()
                assert got == "[]", (port, got)
            assert net.ping(a, "10.58.0.2", count=2)
            text = open(log).read()
            compiled = re.search(r"kernels loaded or compiled in ([0-9.]+) s", text)
            assert compiled, text
            assert float(compiled.group(1)) > 1.0, "the cache was not cold"
            assert took >= float(compiled.group(1)) - 1.0     # ovs-vsctl really waited for the warm-up
            for bad in ("Traceback", "TimeoutError", "Error detected", "compiled after the start-up warm-up"):
                assert bad not in text, text
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err


def test_run_with_an_unreachable_database_says_it_waits_then_applies_it() -> None:
    with tempfile.TemporaryDirectory(prefix="pvrun-") as rundir, \
            tempfile.TemporaryDirectory(prefix="pvdb-") as dbdir:
        server = OvsdbServer(dbdir)
        sw = Switch(rundir, db=server.remote)
        log = os.path.join(rundir, "daemon.log")
        sw.extra_args = ("--log-file", log)
        try:
            line = sw.start(expect="waiting for the database")
            assert server.remote in line and "running" not in line, line
            server.start()                 # the database appears: the daemon connects and applies it
            stem = unique("cd")
            sw.vsctl("add-br", f"{stem}s")       # returns once the daemon has applied it (cur_cfg)
            sw.wait_for("datapath_id", lambda: len(sw.get("Bridge", f"{stem}s", "datapath_id")) == 16)
            code, err = sw.stop()
            assert code == 0, err
            text = open(log).read()
            assert "waiting for the database" in text and "connected to database" in text, text
            assert "Traceback" not in text + err, text + err
        finally:
            if sw.proc is not None:
                sw.stop()
            server.stop()


def test_a_daemon_stopped_while_compiling_leaves_nothing_running() -> None:
    """SIGTERM while the first start still compiles: the daemon stops with a clear message, and its private
    ovsdb-server and the warm-up's second process stop with it (nothing left holding the rundir)."""
    with tempfile.TemporaryDirectory(prefix="pvcold-") as cache, \
            tempfile.TemporaryDirectory(prefix="pvrun-") as rundir:
        env = dict(os.environ, OVS_RUNDIR=rundir, NUMBA_CACHE_DIR=cache)
        proc = subprocess.Popen([sys.executable, "-m", "vswitch.cli", "run", "--rundir", rundir],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        pidfile = os.path.join(rundir, "ovsdb-server.pid")
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(os.path.join(rundir, "db.sock")):
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.05)
            server = int(open(pidfile).read().split()[0])
            os.kill(server, 0)                       # the private ovsdb-server runs
            children = _children(proc.pid)
            time.sleep(1.0)                          # well inside a cold compile (tens of seconds)
            assert proc.poll() is None
            proc.terminate()
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        deadline = time.monotonic() + 10
        left = [p for p in sorted({server, *children}) if _alive(p)]
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = [p for p in left if _alive(p)]
        for pid in left:       # the failure is reported; what it left must not outlive the test
            os.kill(pid, signal.SIGKILL)
        assert not left, f"still running after the daemon stopped: {left}"
        assert "stopped by SIGTERM while starting" in out + err, (out, err)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _alive(pid: int) -> bool:
    """``pid`` runs and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
