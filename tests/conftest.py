"""Shared pytest setup: the repository root on sys.path, and CI's rule that integration tests never skip."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture(scope="session", autouse=True)
def _compiled_kernels() -> None:
    """Every kernel in numba's cache before any test needs it (``make`` has normally done this already)."""
    from vswitch.warmup import warm_up_kernels

    warm_up_kernels()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """In CI (CI=true) a skipped test is a failure: a skip would hide a missing install."""
    if os.environ.get("CI") == "true" and report.skipped and report.when in ("setup", "call"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which counts as a failure: {report.longrepr}"


@pytest.fixture
def net() -> Iterator:
    """Namespaces and veths for one test, removed afterwards even when the test fails."""
    from vswitch.hostnet import HostNet

    hn = HostNet()
    try:
        yield hn
    finally:
        hn.cleanup()


def _left_nothing_behind(sw: object) -> None:
    """No pidfile or socket left behind (the database and its lock file stay for restarts), no internal port,
    no ovsdb-server."""
    import subprocess

    rundir = sw.rundir  # type: ignore[attr-defined]
    left = [f for f in os.listdir(rundir) if f.endswith((".pid", ".ctl", ".sock"))]
    assert left == [], left
    assert "conf.db" in os.listdir(rundir)
    # this switch's bridges (read from its database file): none may have left its internal port behind
    query = ('["Open_vSwitch", {"op": "select", "table": "Bridge", "where": [], "columns": ["name"]}]')
    rows = json.loads(subprocess.run(["ovsdb-tool", "query", os.path.join(rundir, "conf.db"), query],
                                     capture_output=True, text=True, check=True).stdout)[0]["rows"]
    names = {r["name"] for r in rows}
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not [ln for ln in links.splitlines() if ln.split()[1].rstrip(":").split("@")[0] in names], links
    assert subprocess.run(["pgrep", "-f", f"ovsdb-server {rundir}"], capture_output=True).returncode == 1


@pytest.fixture
def switch() -> Iterator:
    """A ``pyvswitch run`` in a private rundir; checks it exits cleanly and leaves nothing behind."""
    from tests.switchutil import private_switch

    with private_switch(after_stop=_left_nothing_behind) as sw:
        yield sw
