"""Shared pytest setup: the repository root on sys.path, and CI's rule that integration tests never skip."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


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
