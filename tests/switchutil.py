"""``Switch``: a ``pyvswitch run`` process and the OVS tools (ovs-vsctl, ovs-appctl) pointed at its rundir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable


class Switch:
    """A ``pyvswitch run`` process and the OVS tools pointed at its rundir."""

    def __init__(self, rundir: str, db: str | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.rundir = rundir
        self.extra_args = extra_args
        self.env = dict(os.environ, OVS_RUNDIR=rundir)
        self.db = db
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "vswitch.cli", "run", "--rundir", self.rundir]
        if self.db:
            cmd += ["--db", self.db]
        cmd += self.extra_args
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env)
        line = self.proc.stdout.readline()
        assert "running" in line, (line, self.proc.stderr.read() if self.proc.poll() is not None else "")

    def stop(self) -> tuple[int, str]:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        code = self.proc.returncode
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
