"""A private ``ovsdb-server`` with Open vSwitch's schema, started, supervised and stopped by ``pyvswitch run``.

Supervision: ``pyvswitch run`` notices at once (a pidfd) when its server dies, logs why and starts it again on
the same database file, at once the first time and after a growing delay (``RESTART_DELAYS``) while it keeps
dying. A server left running by a daemon that crashed (its pidfile names an ``ovsdb-server`` of this rundir whose
parent is no pyvswitch) is replaced at start, so starting again after a crash just works.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from typing import IO

log = logging.getLogger(__name__)

SCHEMA_PATHS = ("/usr/share/openvswitch/vswitch.ovsschema", "/usr/local/share/openvswitch/vswitch.ovsschema")
#: seconds to wait before restarting a server that died after 1, 2, 3, ... consecutive short runs
RESTART_DELAYS = (0.0, 2.0, 4.0, 8.0, 16.0, 30.0)
#: a server that ran at least this long before dying was stable: its restart is immediate again
STABLE_AFTER = 30.0


class OvsdbServerError(RuntimeError):
    """ovsdb-server could not be found, created or started; the message says what to install or check."""


def find_schema() -> str:
    """Path of the installed ``vswitch.ovsschema``."""
    for path in SCHEMA_PATHS:
        if os.path.exists(path):
            return path
    raise OvsdbServerError(
        "Open vSwitch's database schema (vswitch.ovsschema) is not installed: "
        "apt-get install --no-install-recommends openvswitch-switch")


def find_tool(name: str) -> str:
    """Path of an Open vSwitch tool (ovsdb-server, ovsdb-tool, ovs-vsctl)."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if not path:
        raise OvsdbServerError(
            f"{name} is not installed: apt-get install --no-install-recommends openvswitch-switch")
    return path


def describe_exit(code: int) -> str:
    """A process's exit as words: ``killed by SIGKILL``, ``exited with status 1``."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def is_running(pid: int) -> bool:
    """Process ``pid`` exists and has not exited (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    """Wait until process ``pid`` (not necessarily a child) has exited; True if it did in time."""
    deadline = time.monotonic() + timeout
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:   # no pidfds (kernel before 5.3): poll /proc
        while is_running(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


class OvsdbServer:
    """``ovsdb-server`` serving ``<rundir>/conf.db`` at ``unix:<rundir>/db.sock``, restarted by ``supervise``."""

    def __init__(self, rundir: str) -> None:
        self.rundir = os.path.abspath(rundir)
        self.db_path = os.path.join(self.rundir, "conf.db")
        self.sock_path = os.path.join(self.rundir, "db.sock")
        self.pidfile = os.path.join(self.rundir, "ovsdb-server.pid")
        self.remote = f"unix:{self.sock_path}"
        self.proc: subprocess.Popen | None = None
        self._stderr: IO[bytes] | None = None
        self._pidfd = -1
        self.started_at = 0.0
        #: how many times ``supervise`` restarted the server, and why it last stopped
        self.restarts = 0
        self.last_exit = ""
        #: while the server is down: since when (monotonic), and when the next start is tried
        self.down_since: float | None = None
        self.restart_at = 0.0
        self._short_runs = 0

    # ------------------------------------------------------------ start / stop
    def start(self, timeout: float = 10.0) -> None:
        """Create the database if absent, start the server, wait for its socket, init the root row.

        An ``ovsdb-server`` of this rundir left running by a pyvswitch that died is stopped first."""
        server, tool = find_tool("ovsdb-server"), find_tool("ovsdb-tool")
        os.makedirs(self.rundir, exist_ok=True)
        if not os.path.exists(self.db_path):
            proc = subprocess.run([tool, "create", self.db_path, find_schema()], capture_output=True, text=True)
            if proc.returncode:
                raise OvsdbServerError(f"ovsdb-tool create {self.db_path} failed: {proc.stderr.strip()}")
        self._replace_orphan()
        if os.path.exists(self.sock_path):
            os.unlink(self.sock_path)
        # Its log goes to the log file; stderr (fatal start-up errors only) to a file nobody has to drain.
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [server, self.db_path, f"--remote=punix:{self.sock_path}",
             f"--unixctl={os.path.join(self.rundir, 'ovsdb-server.ctl')}", f"--pidfile={self.pidfile}",
             f"--log-file={os.path.join(self.rundir, 'ovsdb-server.log')}", "-vconsole:off", "--no-chdir"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr, start_new_session=True)
        self.started_at = time.monotonic()
        try:
            self._pidfd = os.pidfd_open(self.proc.pid)
        except OSError:   # kernels before 5.3: supervise() polls instead
            self._pidfd = -1
        try:
            self._wait_ready(timeout)
        except BaseException:
            self._kill()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.sock_path):
            if self.proc.poll() is not None:
                code, err = self.proc.returncode, self._error_output()
                self._forget_proc()
                if "already running" in err:
                    err += (f" (an ovsdb-server that pyvswitch did not start for this rundir holds {self.pidfile}: "
                            f"stop it, or use it with --db {self.remote})")
                raise OvsdbServerError(f"ovsdb-server {describe_exit(code)}: {err}")
            if time.monotonic() > deadline:
                raise OvsdbServerError(f"ovsdb-server did not create {self.sock_path} within {timeout:.0f} s")
            time.sleep(0.02)
        proc = subprocess.run([find_tool("ovs-vsctl"), f"--db={self.remote}", "--no-wait", "init"],
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode:
            raise OvsdbServerError(f"ovs-vsctl init failed: {proc.stderr.strip()}")

    def stop(self) -> None:
        """Stop the server (the database file stays: configuration survives restarts)."""
        self._kill()
        self.down_since = None
        for name in ("db.sock", "ovsdb-server.ctl", "ovsdb-server.pid"):
            try:
                os.unlink(os.path.join(self.rundir, name))
            except FileNotFoundError:
                pass

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._forget_proc()

    def _forget_proc(self) -> None:
        self.proc = None
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _error_output(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()[-2000:].decode(errors="replace").strip()

    def owned_pid(self) -> int | None:
        """The pid in ``<rundir>/ovsdb-server.pid`` if that process is an ``ovsdb-server`` of this rundir
        (its command line names this database and this pidfile), else None."""
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        argv = _cmdline(pid)
        if not argv or os.path.basename(argv[0]) != "ovsdb-server":
            return None
        if self.db_path not in argv or f"--pidfile={self.pidfile}" not in argv:
            return None
        return pid

    def _replace_orphan(self) -> None:
        """Stop an ovsdb-server of this rundir whose pyvswitch died (one that a live pyvswitch runs is left)."""
        pid = self.owned_pid()
        if pid is None or (self.proc is not None and pid == self.proc.pid):
            return
        parent = _parent(pid)
        if parent > 1 and any("vswitch" in a for a in _cmdline(parent)):
            return   # a running pyvswitch's server: starting ours fails with "already running"
        log.warning("ovsdb-server pid %d of %s was left running by a pyvswitch that did not stop cleanly; "
                    "replacing it (database %s kept)", pid, self.rundir, self.db_path)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if _wait_gone(pid, 5.0):
                return
        raise OvsdbServerError(f"ovsdb-server pid {pid} of {self.rundir} does not exit; stop it by hand")

    # ------------------------------------------------------------ supervision
    @property
    def pid(self) -> int | None:
        """The running server's pid (None while it is down)."""
        return self.proc.pid if self.proc is not None else None

    @property
    def down(self) -> bool:
        """The server died and is not running again yet."""
        return self.down_since is not None

    def exit_fd(self) -> int | None:
        """An fd that becomes readable when the running server exits (a pidfd), if the kernel offers one."""
        return self._pidfd if self._pidfd >= 0 else None

    def next_wakeup(self) -> float | None:
        """Monotonic time by which ``supervise`` must run again: the next restart, or a poll without a pidfd."""
        if self.down_since is not None:
            return self.restart_at
        if self.proc is not None and self._pidfd < 0:
            return time.monotonic() + 1.0
        return None

    def check(self) -> None:
        """Notice (and log) that the server died, and schedule its restart."""
        if self.proc is None or self.down_since is not None:
            return
        code = self.proc.poll()
        if code is None:
            return
        now = time.monotonic()
        ran = now - self.started_at
        pid, err = self.proc.pid, self._error_output()
        self._forget_proc()
        self.last_exit = describe_exit(code) + (f" ({err.splitlines()[-1]})" if err and code > 0 else "")
        delay = self._schedule(now, ran)
        log.error("ovsdb-server pid %d %s after %.1f s; %s on the same database %s; until then ovs-vsctl "
                  "cannot reach it, forwarding goes on", pid, self.last_exit, ran,
                  "restarting it" if delay == 0 else f"restarting it in {delay:.0f} s (it keeps dying)",
                  self.db_path)

    def _schedule(self, now: float, ran: float) -> float:
        self._short_runs = self._short_runs + 1 if ran < STABLE_AFTER else 1
        delay = RESTART_DELAYS[min(self._short_runs, len(RESTART_DELAYS)) - 1]
        if self.down_since is None:
            self.down_since = now
        self.restart_at = now + delay
        return delay

    def supervise(self) -> bool:
        """Notice a dead server and restart it once its delay has passed; True when it was restarted just now."""
        self.check()
        if self.down_since is None or time.monotonic() < self.restart_at:
            return False
        try:
            self.start()
        except (OvsdbServerError, OSError, subprocess.SubprocessError) as exc:
            delay = self._schedule(time.monotonic(), 0.0)
            self.last_exit = f"could not be restarted: {exc}"
            log.error("restarting ovsdb-server failed: %s; trying again in %.0f s", exc, delay)
            return False
        self.restarts += 1
        log.warning("ovsdb-server restarted (pid %d, restart %d) on the same database %s after %.1f s down",
                    self.proc.pid, self.restarts, self.db_path, time.monotonic() - self.down_since)
        self.down_since = None
        return True

    def status(self) -> str:
        """One line for ``pyvswitch status``: running (pid, restarts) or down (why, next restart)."""
        now = time.monotonic()
        if self.down_since is not None:
            return (f"DOWN for {now - self.down_since:.1f} s: {self.last_exit}; next restart in "
                    f"{max(0.0, self.restart_at - now):.1f} s (ovs-vsctl cannot reach the database until then; "
                    "forwarding goes on)")
        if self.proc is None:
            return "not running"
        text = f"running, pid {self.proc.pid}, up {now - self.started_at:.0f} s"
        if self.restarts:
            text += f", restarted {self.restarts} time{'s' if self.restarts > 1 else ''} (last stop: {self.last_exit})"
        return text
