"""Where a running switch's threads spend their time in one measurement window: py-spy samples of a pyvswitch,
summed by function, and the system calls of each thread of any switch (perf).

``SpyWindow`` runs ``py-spy record --nonblocking --idle --threads --format raw`` on a process for one measurement
window (the target is never paused; idle samples are kept, so shares are of wall-clock time) and reads back, per
thread name, how many samples each function was on the stack (inclusive) and at the top of it (self). Native code
called from Python (numba kernels, syscalls) counts as the Python function that called it. ``SyscallCount`` counts
the ``raw_syscalls:sys_enter`` tracepoint per thread with ``perf stat`` (no hardware counters needed).
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
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
                    "--rate", str(rate), "--duration", str(max(1, int(seconds)))]
        self.proc: subprocess.Popen[str] | None = None
        self.path = ""

    def start(self) -> None:
        """Begin sampling."""
        fd, self.path = tempfile.mkstemp(prefix="pvb-pyspy-", suffix=".txt")
        os.close(fd)
        self.proc = subprocess.Popen([*self.cmd, "--output", self.path], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)

    def close(self) -> None:
        """Stop py-spy if it still runs and remove its file (a window that ended with an exception)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.path and os.path.exists(self.path):
            os.unlink(self.path)

    def finish(self, timeout: float = 30.0) -> dict[str, Samples]:
        """Wait for py-spy to end; the samples by thread name (its failure is raised)."""
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


class SyscallCount:
    """``perf stat --per-thread -e raw_syscalls:sys_enter`` on a process for one window: system calls by thread."""

    def __init__(self, perf: str, pid: int) -> None:
        self.cmd = [perf, "stat", "-x,", "--per-thread", "-e", "raw_syscalls:sys_enter", "-p", str(pid)]
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        """Begin counting."""
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def close(self) -> None:
        """Stop perf if it still runs (a window that ended with an exception)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def finish(self, timeout: float = 20.0) -> dict[int, int]:
        """Stop counting; system calls by thread id (empty when perf did not stop in ``timeout`` seconds; its
        failure is raised)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:     # seen once on a machine at load 25: this window has no count
            self.proc.kill()
            self.proc.communicate()
            return {}
        out: dict[int, int] = {}
        for line in err.splitlines():
            fields = line.split(",")
            if len(fields) > 3 and fields[3] == "raw_syscalls:sys_enter":
                tid = fields[0].rsplit("-", 1)[-1]
                if tid.isdigit():
                    out[int(tid)] = int(fields[1]) if fields[1].isdigit() else 0
        if not out:
            raise RuntimeError(f"perf stat counted nothing: {err.strip()[-500:]}")
        return out
