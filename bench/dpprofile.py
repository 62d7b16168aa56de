"""Where a running pyvswitch's threads spend their time: py-spy samples of one window, summed by function.

``SpyWindow`` runs ``py-spy record --nonblocking --idle --threads --format raw`` on a process for one measurement
window (the target is never paused; idle samples are kept, so shares are of wall-clock time) and reads back, per
thread name, how many samples each function was on the stack (inclusive) and at the top of it (self). Native code
called from Python (numba kernels, syscalls) counts as the Python function that called it.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import tempfile
from typing import Any

_LINE = re.compile(r":\d+\)$")


def find_py_spy(given: str = "") -> str | None:
    """The py-spy executable: ``given``, else the one on PATH, else None."""
    return given or shutil.which("py-spy")


class Samples:
    """Sample counts of one thread: total, by function at the top of the stack, by function anywhere on it."""

    def __init__(self) -> None:
        self.total = 0
        self.self_: collections.Counter[str] = collections.Counter()
        self.incl: collections.Counter[str] = collections.Counter()

    def add(self, frames: list[str], n: int) -> None:
        """Count ``n`` samples of the stack ``frames`` (outermost first)."""
        self.total += n
        names = [_LINE.sub(")", f) for f in frames]
        if names:
            self.self_[names[-1]] += n
        for name in set(names):
            self.incl[name] += n

    def merge(self, other: Samples) -> None:
        """Add another window's counts."""
        self.total += other.total
        self.self_.update(other.self_)
        self.incl.update(other.incl)


def parse_raw(text: str) -> dict[str, Samples]:
    """py-spy's raw (collapsed) output with ``--threads``, by thread name."""
    out: dict[str, Samples] = collections.defaultdict(Samples)
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        head, *frames = stack.split(";")
        thread = head.split(": ", 1)[1] if ": " in head else head
        out[thread].add(frames, int(count))
    return dict(out)


class SpyWindow:
    """py-spy on ``pid`` for ``seconds``: ``start()`` as a window begins, ``finish()`` (the samples) as it ends."""

    def __init__(self, py_spy: str, pid: int, seconds: float, rate: int = 200) -> None:
        self.cmd = [py_spy, "record", "--pid", str(pid), "--nonblocking", "--idle", "--threads", "--format", "raw",
                    "--rate", str(rate), "--duration", str(max(1, round(seconds)))]
        self.proc: subprocess.Popen[str] | None = None
        self.path = ""

    def start(self) -> None:
        """Begin sampling."""
        fd, self.path = tempfile.mkstemp(prefix="pvb-pyspy-", suffix=".txt")
        os.close(fd)
        self.proc = subprocess.Popen([*self.cmd, "--output", self.path], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)

    def finish(self, timeout: float = 30.0) -> dict[str, Samples]:
        """Wait for py-spy to end; the samples by thread name (empty if it failed: its error is raised)."""
        assert self.proc is not None
        try:
            _, err = self.proc.communicate(timeout=timeout)
            if self.proc.returncode:
                raise RuntimeError(f"py-spy failed ({self.proc.returncode}): {err.strip()[-500:]}")
            with open(self.path) as f:
                return parse_raw(f.read())
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            os.unlink(self.path)


def compare(by_state: dict[str, Samples], top: int = 12) -> list[dict[str, Any]]:
    """Rows of the functions most often on top of the stack in any state: each state's self and inclusive share
    of the thread's samples (percent)."""
    names: dict[str, None] = {}
    for s in by_state.values():
        for name, _ in s.self_.most_common(top):
            names[name] = None
    rows = []
    for name in names:
        row: dict[str, Any] = {"function": name}
        for state, s in by_state.items():
            row[f"self_pct_{state}"] = round(100 * s.self_[name] / s.total, 2) if s.total else None
            row[f"incl_pct_{state}"] = round(100 * s.incl[name] / s.total, 2) if s.total else None
        rows.append(row)
    first = next(iter(by_state), "")
    rows.sort(key=lambda r: -(r.get(f"self_pct_{first}") or 0))
    return rows
