"""A private ``ovsdb-server`` with Open vSwitch's schema, started and stopped by ``pyvswitch run``."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

SCHEMA_PATHS = ("/usr/share/openvswitch/vswitch.ovsschema", "/usr/local/share/openvswitch/vswitch.ovsschema")


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


class OvsdbServer:
    """``ovsdb-server`` serving ``<rundir>/conf.db`` at ``unix:<rundir>/db.sock``."""

    def __init__(self, rundir: str) -> None:
        self.rundir = rundir
        self.db_path = os.path.join(rundir, "conf.db")
        self.sock_path = os.path.join(rundir, "db.sock")
        self.remote = f"unix:{self.sock_path}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Create the database if absent, start the server, wait for its socket, init the root row."""
        server, tool = find_tool("ovsdb-server"), find_tool("ovsdb-tool")
        os.makedirs(self.rundir, exist_ok=True)
        if not os.path.exists(self.db_path):
            proc = subprocess.run([tool, "create", self.db_path, find_schema()], capture_output=True, text=True)
            if proc.returncode:
                raise OvsdbServerError(f"ovsdb-tool create {self.db_path} failed: {proc.stderr.strip()}")
        if os.path.exists(self.sock_path):
            os.unlink(self.sock_path)
        self.proc = subprocess.Popen(
            [server, self.db_path, f"--remote=punix:{self.sock_path}",
             f"--unixctl={os.path.join(self.rundir, 'ovsdb-server.ctl')}",
             f"--pidfile={os.path.join(self.rundir, 'ovsdb-server.pid')}",
             f"--log-file={os.path.join(self.rundir, 'ovsdb-server.log')}", "--no-chdir"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.sock_path):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace").strip() if self.proc.stderr else ""
                raise OvsdbServerError(f"ovsdb-server exited ({self.proc.returncode}): {err}")
            if time.monotonic() > deadline:
                self.stop()
                raise OvsdbServerError(f"ovsdb-server did not create {self.sock_path} within {timeout:.0f} s")
            time.sleep(0.02)
        proc = subprocess.run([find_tool("ovs-vsctl"), f"--db={self.remote}", "--no-wait", "init"],
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode:
            raise OvsdbServerError(f"ovs-vsctl init failed: {proc.stderr.strip()}")

    def stop(self) -> None:
        """Stop the server (the database file stays: configuration survives restarts)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        for name in ("db.sock", "ovsdb-server.ctl", "ovsdb-server.pid"):
            try:
                os.unlink(os.path.join(self.rundir, name))
            except FileNotFoundError:
                pass
