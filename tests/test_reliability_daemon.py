"""Issue 15, defects 3, 8 and 9: a failing management command, a killed ovsdb-server and a crashed daemon never
take the switch down or keep it from starting again.

Through the real ``pyvswitch run`` and the stock ovs-vsctl / ovs-appctl, each test watches what a user notices:
the daemon's pid, a canary ping between two veth-attached namespace hosts, and how fast ovs-vsctl answers. Every
test removes the namespaces, devices and processes it created (a daemon or ovsdb-server of its rundir included),
also when it fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

import pytest

from tests.netutil import Canary, unique
from tests.switchutil import Switch
from vswitch.hostnet import HostNet
from vswitch.ovsdb_server import OvsdbServer, is_running

pytestmark = pytest.mark.integration

PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT = 17, 0x4206, 0x4207
WALL = 0x40000000   # waitpid's __WALL: wait for a thread that is not a child
#: epoll_wait / epoll_pwait / epoll_pwait2 on x86_64 (232, 281, 441) and aarch64 (22, 441)
EPOLL_SYSCALLS = {232, 281, 441, 22}


# ------------------------------------------------------------------ helpers
def wait_until(what: str, check: Callable[[], bool], timeout: float) -> float:
    """Poll ``check`` until it holds; the seconds it took (AssertionError naming ``what`` after ``timeout``)."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - t0


def add_hosts(net: HostNet, stem: str, n: int, subnet: str) -> list[str]:
    """``n`` namespace hosts ``stem0..`` at ``subnet.1..``, their veth ends (named like them) left for the switch."""
    for i in range(n):
        net.add_host(f"{stem}{i}", f"{stem}{i}", f"{subnet}.{i + 1}/24")
    return [f"{stem}{i}" for i in range(n)]



def _ptrace(request: int, tid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    libc.ptrace.restype = ctypes.c_long
    if libc.ptrace(request, tid, None, None) == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"ptrace({request:#x}, {tid}): {os.strerror(err)}")


def thread_id(pid: int, name: str, timeout: float = 5.0) -> int:
    """The kernel id of the thread of ``pid`` named ``name`` (the daemon names its threads, e.g. datapath-br0)."""
    found: list[int] = []

    def look() -> bool:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() == name[:15]:
                    found.append(int(tid))
        return bool(found)

    wait_until(f"thread {name} of pid {pid}", look, timeout)
    return found[0]


@contextlib.contextmanager
def frozen_thread(tid: int) -> Iterator[None]:
    """Stop one thread of another process, as a debugger does (ptrace SEIZE + INTERRUPT), while the process's other
    threads run on; it resumes on leaving (PTRACE_DETACH; the kernel also detaches if this process dies).

    It is stopped only while it waits in epoll, holding neither the GIL nor any lock, as a thread that is stuck in
    the kernel would."""
    for _ in range(100):
        _ptrace(PTRACE_SEIZE, tid)
        try:
            _ptrace(PTRACE_INTERRUPT, tid)
            os.waitpid(tid, WALL)
            with open(f"/proc/{tid}/syscall") as f:
                in_epoll = int(f.read().split()[0]) in EPOLL_SYSCALLS
        except BaseException:
            with contextlib.suppress(OSError):
                _ptrace(PTRACE_DETACH, tid)
            raise
        if in_epoll:
            break
        _ptrace(PTRACE_DETACH, tid)
        time.sleep(0.02)
    else:
        raise AssertionError(f"thread {tid} was never found waiting in epoll")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            _ptrace(PTRACE_DETACH, tid)


def kill_leftovers(rundir: str) -> None:
    """SIGKILL every process still running for ``rundir`` (a failed test's daemon or ovsdb-server): those whose
    command line names this unique directory."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
            if int(pid) != os.getpid() and any(re.search(re.escape(rundir) + "(/|$)", arg) for arg in argv):
                os.kill(int(pid), signal.SIGKILL)


@pytest.fixture
def rundir() -> Iterator[str]:
    """A private rundir; whatever still runs there at the end is killed."""
    with tempfile.TemporaryDirectory(prefix="pvrel-") as path:
        try:
            yield path
        finally:
            kill_leftovers(path)


@pytest.fixture
def logged_switch(rundir: str) -> Iterator[Switch]:
    """``pyvswitch run`` (private ovsdb-server) logging to ``<rundir>/switch.log``; must exit cleanly at the end."""
    sw = Switch(rundir, extra_args=("--log-file", os.path.join(rundir, "switch.log")))
    sw.start()
    try:
        yield sw
    finally:
        if sw.proc is not None:
            if sw.proc.poll() is None:
                code, err = sw.stop()
                assert code == 0, err
            else:
                sw.proc.communicate()
                raise AssertionError(f"the daemon exited on its own ({sw.proc.returncode})")
        assert OvsdbServer(rundir).owned_pid() is None, "the private ovsdb-server outlived the daemon"


def log_of(rundir: str) -> str:
    with open(os.path.join(rundir, "switch.log")) as f:
        return f.read()


def vsctl_answers(sw: Switch) -> bool:
    return subprocess.run(["ovs-vsctl", "--timeout=2", "show"], capture_output=True, env=sw.env,
                          timeout=10).returncode == 0


def pyvswitch_status(rundir: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vswitch.cli", "status", "--rundir", rundir], capture_output=True,
                          text=True, timeout=20)


# ------------------------------------------------------------------ defect 3
def test_a_command_that_times_out_fails_alone_and_the_daemon_lives_on(logged_switch: Switch, net: HostNet) -> None:
    sw = logged_switch
    stem = unique()
    victim = unique()
    a, b = add_hosts(net, stem, 2, "10.91.0")
    sw.vsctl("add-br", f"{stem}c", "--", "add-port", f"{stem}c", a, "--", "add-port", f"{stem}c", b)
    sw.vsctl("add-br", victim)
    assert net.ping(a, "10.91.0.2")
    pid = sw.proc.pid
    stuck = thread_id(pid, "datapath")   # the one datapath thread, every bridge's
    with frozen_thread(stuck):
        t0 = time.monotonic()
        failed = sw.appctl("fdb/show", victim, check=False)
        took = time.monotonic() - t0
        assert failed.returncode != 0, failed.stdout
        assert "fdb/show: timed out waiting for a switch thread" in failed.stderr, failed.stderr
        assert took < 9, f"the error came after {took:.1f} s"
        assert sw.proc.poll() is None, "the daemon exited"
        assert sw.appctl("version").stdout.startswith("ovs-vswitchd (pyvswitch)")   # the daemon answers meanwhile
    # The thread runs again: the next commands answer, about it and the others, and forwarding goes on.
    canary = Canary(a, "10.91.0.2")
    try:
        t0 = time.monotonic()
        assert sw.appctl("fdb/show", victim).stdout.startswith(" port  VLAN  MAC")
        assert sw.appctl("version").stdout.startswith("ovs-vswitchd (pyvswitch)")
        assert time.monotonic() - t0 < 8
    finally:
        canary.check("the commands after a command that timed out")
    assert sw.proc.poll() is None and sw.proc.pid == pid
    assert sw.appctl("pyvswitch/status").stdout.startswith("state: ok")
    assert f"ovs-appctl fdb/show {victim}: timed out waiting for a switch thread" in log_of(sw.rundir)


# ------------------------------------------------------------------ defect 8
def test_a_killed_ovsdb_server_is_restarted_with_its_configuration(logged_switch: Switch, net: HostNet) -> None:
    sw = logged_switch
    stem = unique()
    br = f"{stem}br"
    a, b, c = add_hosts(net, stem, 3, "10.92.0")
    sw.vsctl("add-br", br, "--", "add-port", br, a, "--", "add-port", br, b)
    assert net.ping(a, "10.92.0.2")
    pid = sw.proc.pid
    server = OvsdbServer(sw.rundir)
    first = server.owned_pid()
    assert first is not None
    canary = Canary(a, "10.92.0.2")
    try:
        os.kill(first, signal.SIGKILL)
        took = wait_until("ovs-vsctl to answer after the kill", lambda: vsctl_answers(sw), 5)
        assert took < 4, f"ovs-vsctl answered again only after {took:.1f} s"
        second = server.owned_pid()
        assert second not in (None, first)
        assert sw.vsctl("list-ports", br).stdout.split() == sorted([a, b])   # the configuration is kept
        sw.vsctl("add-port", br, c)   # waits until the daemon, reconnected, applied it (cur_cfg)
        assert net.ping(c, "10.92.0.1")
        assert re.search(rf"ovsdb-server pid {first} killed by SIGKILL .*restarting it", log_of(sw.rundir))
        assert f"ovsdb-server restarted (pid {second}, restart 1)" in log_of(sw.rundir)

        # It keeps dying: restarted after a delay, and the status says it is down meanwhile.
        os.kill(second, signal.SIGKILL)
        wait_until("the killed ovsdb-server to be gone", lambda: not is_running(second), 2)
        status = pyvswitch_status(sw.rundir)
        assert status.returncode == 1, status.stdout + status.stderr
        assert status.stdout.startswith("state: degraded: ovsdb-server down"), status.stdout
        assert "ovsdb-server: private, DOWN for" in status.stdout and "killed by SIGKILL" in status.stdout
        assert "DOWN for" in sw.appctl("pyvswitch/status").stdout
        wait_until("ovs-vsctl to answer after the second kill", lambda: vsctl_answers(sw), 8)
        wait_until("pyvswitch status to say ok", lambda: pyvswitch_status(sw.rundir).returncode == 0, 5)
        assert "restarted 2 times" in pyvswitch_status(sw.rundir).stdout
        assert sw.vsctl("list-ports", br).stdout.split() == sorted([a, b, c])
    finally:
        canary.check("the ovsdb-server restarts")
    assert sw.proc.poll() is None and sw.proc.pid == pid


# ------------------------------------------------------------------ defect 9
def test_run_detach_after_a_daemon_crash_starts_at_once_and_forwards_again(rundir: str, net: HostNet) -> None:
    stem = unique()
    br = f"{stem}br"
    a, b = add_hosts(net, stem, 2, "10.93.0")
    env = dict(os.environ, OVS_RUNDIR=rundir)
    run = [sys.executable, "-m", "vswitch.cli", "run", "--detach", "--rundir", rundir]
    pidfile = os.path.join(rundir, "ovs-vswitchd.pid")

    def vsctl(*args: str) -> str:
        proc = subprocess.run(["ovs-vsctl", "--timeout=10", *args], capture_output=True, text=True, env=env,
                              timeout=20)
        assert proc.returncode == 0, (args, proc.stderr)
        return proc.stdout

    started = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert started.returncode == 0 and "running" in started.stdout, started.stdout + started.stderr
    crashed = int(open(pidfile).read())
    vsctl("add-br", br, "--", "add-port", br, a, "--", "add-port", br, b)
    assert net.ping(a, "10.93.0.2")
    orphan = OvsdbServer(rundir).owned_pid()
    assert orphan is not None

    os.kill(crashed, signal.SIGKILL)
    wait_until("the killed daemon to be gone", lambda: not is_running(crashed), 5)
    assert is_running(orphan), "the crash should leave the private ovsdb-server running"
    status = pyvswitch_status(rundir)
    assert status.returncode == 3 and f"its ovsdb-server (pid {orphan}) still runs" in status.stdout, status.stdout

    t0 = time.monotonic()
    again = subprocess.run(run, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    assert again.returncode == 0 and "running" in again.stdout, again.stdout + again.stderr
    assert took < 6, f"starting again took {took:.1f} s"
    daemon = int(open(pidfile).read())
    assert daemon != crashed and is_running(daemon)
    assert not is_running(orphan), "the orphaned ovsdb-server should have been replaced"
    assert vsctl("list-ports", br).split() == sorted([a, b])
    assert net.ping(a, "10.93.0.2")
    assert not os.path.exists(os.path.join(rundir, f"ovs-vswitchd.{crashed}.ctl"))
    with open(os.path.join(rundir, "ovs-vswitchd.log")) as f:
        assert f"ovsdb-server pid {orphan} of {rundir} was left running by a pyvswitch" in f.read()

    subprocess.run(["ovs-appctl", "--timeout=10", "exit"], env=env, capture_output=True, timeout=20, check=True)
    wait_until("the daemon to exit", lambda: not is_running(daemon), 15)
    assert OvsdbServer(rundir).owned_pid() is None
