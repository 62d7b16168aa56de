"""``Switch``: a ``pyvswitch run`` process and the OVS tools (ovs-vsctl, ovs-appctl) pointed at its rundir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Switch:
    """A ``pyvswitch run`` process and the OVS tools pointed at its rundir."""

    def __init__(self, rundir: str, db: str | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.rundir = rundir
        self.extra_args = extra_args
        self.env = dict(os.environ, OVS_RUNDIR=rundir)
        self.db = db
        self.proc: subprocess.Popen | None = None
        self._stderr: tempfile.TemporaryFile | None = None   # type: ignore[valid-type]

    def command(self) -> list[str]:
        """The command line that starts the daemon (subclasses wrap or replace it)."""
        cmd = [sys.executable, "-m", "vswitch.cli", "run", "--rundir", self.rundir]
        if self.db:
            cmd += ["--db", self.db]
        return cmd + list(self.extra_args)

    def start(self, expect: str = "running") -> str:
        """Start the daemon; returns its first line, which must contain ``expect``."""
        # stderr goes to a file, not a pipe: nobody reads it while the daemon runs, and a full pipe would stall it
        self._stderr = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                                     env=self.env)
        line = self.proc.stdout.readline()
        assert expect in line, (line, self.stderr() if self.proc.poll() is not None else "")
        return line

    def stderr(self) -> str:
        """What the daemon wrote to stderr so far."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()

    def stop(self) -> tuple[int, str]:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        code, err = self.proc.returncode, self.stderr()
        self._stderr.close()
        self.proc = None
        return code, err

    def vsctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        db = [f"--db={self.db}"] if self.db else []
        proc = subprocess.run(["ovs-vsctl", "--timeout=10", *db, *args], capture_output=True, text=True,
                              env=self.env, timeout=20)
        if check:
            assert proc.returncode == 0, (args, proc.stderr)
        return proc

    def appctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(["ovs-appctl", "--timeout=10", *args], capture_output=True, text=True, env=self.env,
                              timeout=20)
        if check:
            assert proc.returncode == 0, (args, proc.stderr)
        return proc

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
        """Poll ``check`` until it holds; fail with ``what`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.1)

    def get(self, table: str, record: str, column: str) -> str:
        """``ovs-vsctl get`` of one column (or ``column:key``), unquoted."""
        return self.vsctl("--if-exists", "get", table, record, column).stdout.strip().strip('"')


@contextmanager
def private_switch(kind: type[Switch] = Switch, prefix: str = "pvrun-",
                   after_stop: Callable[[Switch], None] | None = None, **env: str) -> Iterator[Switch]:
    """A ``kind`` daemon in a private rundir (``env`` added to its environment), stopped afterwards: it must
    exit cleanly, and no kernel may have compiled after its start-up warm-up (a stall vswitch/warmup.py missed).
    ``after_stop(switch)`` then checks what it left behind, before the rundir goes."""
    with tempfile.TemporaryDirectory(prefix=prefix) as rundir:
        sw = kind(rundir)
        sw.env.update(env)
        sw.start()
        try:
            yield sw
        finally:
            if sw.proc is not None:
                code, err = sw.stop()
                assert code == 0, err
                assert "compiled after the start-up warm-up" not in err, err
            if after_stop is not None:
                after_stop(sw)
