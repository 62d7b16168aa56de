"""The benchmarks measure the pyvswitch of the interpreter that runs them, and stop with the reason when it cannot run.

No traffic and no Open vSwitch: each benchmark's own ``PyVSwitch.start`` is run in a private namespace (the
benchmark's namespace name swapped for it), once where pyvswitch starts and once where it cannot.
"""

from __future__ import annotations

import os
import sys

import pytest

import bench.forward
import bench.vhost
from bench.common import Cleanup, pyvswitch_command
from tests.netutil import unique

pytestmark = pytest.mark.integration

NO_VENV_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"   # no .venv/bin/pyvswitch on it


def _is_this_interpreter(pid: int) -> bool:
    """``pid`` runs this test's Python with ``-m vswitch.cli`` from this checkout."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().decode().split("\0")
    return (os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath(sys.executable)
            and argv[1:3] == ["-m", "vswitch.cli"]
            and os.path.realpath(f"/proc/{pid}/cwd") == os.path.realpath(bench.vhost.REPO_DIR))


def test_the_pyvswitch_measured_is_the_one_of_this_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", NO_VENV_PATH)
    assert pyvswitch_command() == [sys.executable, "-m", "vswitch.cli"]
    with pytest.raises(SystemExit, match=r"pyvswitch cannot run \(/nonexistent/pyvswitch\): .*No such file"):
        pyvswitch_command("/nonexistent/pyvswitch")


def test_bench_vhost_starts_pyvswitch_or_says_why_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", NO_VENV_PATH)
    ns = unique("pvbt")
    monkeypatch.setattr(bench.vhost, "NS", ns)
    cmd = pyvswitch_command()
    with Cleanup() as cl:
        cl.netns(ns)
        sw = bench.vhost.PyVSwitch(cmd)
        sockets = sw.start(cl)
        assert _is_this_interpreter(sw.pid())
        assert all(os.path.exists(s) for s in sockets), sockets     # its two vhost-user ports are there
        # The same start where the interpreter cannot come up (it printed nothing: 'did not start: ''' before).
        monkeypatch.setenv("PYTHONHOME", "/nonexistent")
        with pytest.raises(RuntimeError) as failed:
            bench.vhost.PyVSwitch(cmd).start(cl)
    text = str(failed.value)
    assert text.startswith("pyvswitch did not start (ip netns exec") and "exited with status 1" in text, text
    assert "No module named 'encodings'" in text, text       # the reason, from the daemon's stderr


def test_bench_forward_starts_pyvswitch_or_says_why_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", NO_VENV_PATH)
    ns = unique("pvbt")
    monkeypatch.setattr(bench.forward, "SW_NS", ns)
    cmd = pyvswitch_command()
    with Cleanup() as cl:
        cl.netns(ns)
        cl.veth(f"{ns}a", ns, f"{ns}b", ns)
        sw = bench.forward.PyVSwitch(cmd)
        sw.start(bench.forward.Topology("system", sw_ports=(f"{ns}a", f"{ns}b")), cl)
        assert sw.pid() is not None and _is_this_interpreter(sw.pid())
        # Ports that do not exist: pyvswitch refuses them, and the benchmark stops with its words.
        with pytest.raises(RuntimeError) as failed:
            bench.forward.PyVSwitch(cmd).start(bench.forward.Topology("system", sw_ports=(f"{ns}x", f"{ns}y")), cl)
    text = str(failed.value)
    assert text.startswith("pyvswitch did not start (") and "exited with status 1" in text, text
    assert f"pyvswitch bridge: port {ns}x: system port {ns}x: no such network device" in text, text
    assert "Traceback" not in text, text
