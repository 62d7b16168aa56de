"""Helpers shared by every benchmark: machine description, progress bar, result files, and
scoped clean-up of the namespaces, links and processes a benchmark creates.

Result files (``write_results``) go to ``bench/results/<name>.{json,png,md}``:

* ``.json`` is the payload, ``{"benchmark", "method", "machine", "results": [row, ...]}``
  (extra top-level keys are kept);
* ``.png`` is a grouped bar chart described by a ``PlotSpec``;
* ``.md`` is the method text, the machine and a table of the result rows.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_DIR = Path(__file__).resolve().parent.parent


def pyvswitch_command(given: str = "") -> list[str]:
    """The pyvswitch a benchmark measures: ``given`` (a command line), else the one installed with this Python.

    Raises SystemExit with the reason when it cannot run: the subject of a benchmark is never skipped.
    """
    import importlib.util

    cmd = shlex.split(given) if given else [sys.executable, "-m", "vswitch.cli"]
    if not given and importlib.util.find_spec("vswitch.cli") is None:
        raise SystemExit(f"pyvswitch is not installed for {sys.executable}: pip install -e . (or make venv), "
                         "or give --pyvswitch")
    try:
        proc = subprocess.run([*cmd, "--help"], capture_output=True, text=True)
    except OSError as exc:
        raise SystemExit(f"pyvswitch cannot run ({shlex.join(cmd)}): {exc}") from None
    if proc.returncode:
        raise SystemExit(f"pyvswitch cannot run ({shlex.join(cmd)} --help exited {proc.returncode}): "
                         f"{proc.stderr.strip()[-500:]}")
    return cmd


class OutputReader:
    """Drains a process's stdout in a thread (so it never blocks on a full pipe), keeps the last
    lines, and signals when a line containing ``marker`` appears."""

    def __init__(self, proc: subprocess.Popen[str], marker: str) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=50)
        self.ready = threading.Event()
        self._marker = marker
        self._proc = proc
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self.lines.append(line.rstrip())
            if self._marker in line:
                self.ready.set()

    def drained(self, timeout: float = 2.0) -> list[str]:
        """The lines kept, once the process's stdout is closed (or after ``timeout``)."""
        self._thread.join(timeout)
        return list(self.lines)


def start_subject(cl: Cleanup, cmd: Sequence[str], what: str, marker: str, sig: int = signal.SIGTERM,
                  timeout: float = 120.0, **kwargs: Any) -> subprocess.Popen[str]:
    """Start the process a benchmark measures and wait until its stdout prints ``marker``.

    Its stderr goes to a file (nobody reads a pipe while it runs); when it exits or does not get ready within
    ``timeout`` seconds, RuntimeError says so with its exit status, what it printed and the end of its stderr:
    the subject of a benchmark never fails silently."""
    err = tempfile.NamedTemporaryFile("w+", prefix=f"pvb-{what}-", suffix=".stderr", delete=False)  # noqa: SIM115
    cl.push(f"{what} stderr", lambda: (err.close(), os.unlink(err.name)))
    proc = cl.popen(cmd, what, sig, stdout=subprocess.PIPE, stderr=err, text=True, **kwargs)
    out = OutputReader(proc, marker)
    deadline = time.monotonic() + timeout
    while not out.ready.wait(0.1):
        exited = proc.poll() is not None
        if not exited and time.monotonic() < deadline:
            continue
        lines = out.drained() if exited else list(out.lines)
        if out.ready.is_set():        # it printed the marker as it exited: the caller finds out
            break
        state = f"exited with status {proc.returncode}" if exited else f"printed no {marker!r} in {timeout:.0f} s"
        err.flush()
        with open(err.name, errors="replace") as f:
            tail = f.read()[-2000:].strip()
        printed = "\n".join(lines) or "(nothing)"
        raise RuntimeError(f"{what} did not start ({shlex.join(cmd)}): {state}\n"
                           f"stdout: {printed}\nstderr: {tail or '(nothing)'}")
    return proc


# --------------------------------------------------------------------------------------------
# machine description


def cpu_mhz() -> float:
    """The nominal CPU clock in MHz (``cpu MHz`` of /proc/cpuinfo, the first CPU)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":", 1)[1])
    except OSError:
        pass
    return 0.0


def cpu_hz() -> float:
    """The CPU clock in Hz, used to turn CPU seconds into cycles."""
    return cpu_mhz() * 1e6


def _cpuinfo_field(name: str) -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":", 1)[0].strip() == name:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _version(module: str) -> str:
    try:
        mod = __import__(module)
    except Exception:  # noqa: BLE001 - a missing optional module is reported, not fatal
        return "absent"
    return str(getattr(mod, "__version__", "unknown"))


def machine_info(**extra: Any) -> dict[str, Any]:
    """A description of the machine and software the benchmark ran on (plus ``extra`` keys)."""
    flags = _cpuinfo_field("flags").split()
    info: dict[str, Any] = {
        "cpu_model": _cpuinfo_field("model name") or platform.processor(),
        "cpu_mhz": round(cpu_mhz(), 1),
        "cores": os.cpu_count(),
        "hypervisor": "hypervisor" in flags,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numba": _version("numba"),
        "numpy": _version("numpy"),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    info.update(extra)
    return info


# --------------------------------------------------------------------------------------------
# progress bar


class Progress:
    """A one-line progress bar on stderr (redrawn in place on a terminal, every 10% otherwise)."""

    def __init__(self, total: float, label: str = "", width: int = 30) -> None:
        self.total = max(float(total), 1e-9)
        self.done = 0.0
        self.label = label
        self.width = width
        self.tty = sys.stderr.isatty()
        self._last_decile = -1
        self._draw()

    def update(self, amount: float = 1.0, label: str | None = None) -> None:
        """Advance by ``amount`` (and change the label if given)."""
        self.set(self.done + amount, label)

    def set(self, done: float, label: str | None = None) -> None:
        """Set the absolute progress (and change the label if given)."""
        self.done = min(max(done, 0.0), self.total)
        if label is not None:
            self.label = label
        self._draw()

    def close(self) -> None:
        """Finish the bar line."""
        if self.tty:
            sys.stderr.write("\n")
        sys.stderr.flush()

    def _draw(self) -> None:
        frac = self.done / self.total
        filled = int(round(frac * self.width))
        line = f"[{'#' * filled}{'-' * (self.width - filled)}] {frac * 100:5.1f}% {self.label}"
        if self.tty:
            cols = shutil.get_terminal_size((100, 20)).columns
            sys.stderr.write("\r" + line[: cols - 1].ljust(cols - 1))
            sys.stderr.flush()
        else:
            decile = int(frac * 10)
            if decile != self._last_decile:
                self._last_decile = decile
                sys.stderr.write(line + "\n")
                sys.stderr.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def log(msg: str) -> None:
    """A status message on stderr (stdout is kept for ``--json``)."""
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------------------------
# result files


@dataclass
class PlotSpec:
    """What the grouped bar chart shows.

    One subplot per metric; along the x axis one group per distinct value of ``group``
    (e.g. the offered load), inside a group one bar per distinct value of ``series``
    (e.g. the switch; ``""`` for one bar per group).  Rows lacking a metric are left out.
    """

    group: str
    series: str
    metrics: Sequence[tuple[str, str]]  # (result key, axis label)
    title: str = ""
    log_metrics: Sequence[str] = field(default_factory=tuple)  # metrics drawn on a log axis

    @classmethod
    def from_any(cls, spec: PlotSpec | Mapping[str, Any]) -> PlotSpec:
        """Accept a ``PlotSpec`` or a dict with the same keys."""
        if isinstance(spec, PlotSpec):
            return spec
        return cls(
            group=spec["group"],
            series=spec["series"],
            metrics=[tuple(m) if not isinstance(m, str) else (m, m) for m in spec["metrics"]],
            title=spec.get("title", ""),
            log_metrics=tuple(spec.get("log_metrics", ())),
        )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.4g}" if abs(v) < 10 else f"{v:.1f}"
    if v is None:
        return "n/a"
    return str(v)


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of ``rows``; columns are the keys in order of first appearance."""
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    if not cols:
        return "(no results)\n"
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _plot(path: Path, name: str, rows: Sequence[Mapping[str, Any]], spec: PlotSpec) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: list[Any] = []
    series: list[Any] = []
    for r in rows:
        if r.get(spec.group) not in groups:
            groups.append(r.get(spec.group))
        s = r.get(spec.series) if spec.series else None
        if s not in series:
            series.append(s)
    n_m = max(len(spec.metrics), 1)
    fig, axes = plt.subplots(1, n_m, figsize=(max(5.0, 1.2 * len(groups) * max(len(series), 1)) * 0.6 * n_m
                                              + 1.0, 4.2), squeeze=False)
    width = 0.8 / max(len(series), 1)
    for ax, (key, label) in zip(axes[0], spec.metrics, strict=False):
        for si, s in enumerate(series):
            xs, ys = [], []
            for gi, g in enumerate(groups):
                for r in rows:
                    v = r.get(key)
                    r_series = r.get(spec.series) if spec.series else None
                    if r_series == s and r.get(spec.group) == g and isinstance(v, int | float):
                        if not (isinstance(v, float) and math.isnan(v)):
                            xs.append(gi - 0.4 + width * (si + 0.5))
                            ys.append(float(v))
                        break
            bars = ax.bar(xs, ys, width, label=str(s) if spec.series else None)
            ax.bar_label(bars, labels=[_fmt(y) for y in ys], fontsize=7, padding=1)
        ax.set_xticks(range(len(groups)))
        long_labels = max((len(str(g)) for g in groups), default=0) > 12
        ax.set_xticklabels([str(g) for g in groups], fontsize=8, rotation=20 if long_labels else 0,
                           ha="right" if long_labels else "center")
        ax.set_xlabel(spec.group)
        ax.set_ylabel(label)
        if key in spec.log_metrics:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    if spec.series:
        axes[0][0].legend(fontsize=8, title=spec.series, title_fontsize=8)
    fig.suptitle(spec.title or name, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(
    name: str,
    payload: Mapping[str, Any],
    plot_spec: PlotSpec | Mapping[str, Any] | None,
    print_json: bool = False,
    out_dir: Path | str | None = None,
) -> dict[str, Path]:
    """Write ``<name>.json``, ``<name>.png`` (if ``plot_spec``) and ``<name>.md`` into the results
    directory, print the JSON to stdout if ``print_json``; return the written paths."""
    out = Path(out_dir) if out_dir else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    data = dict(payload)
    data.setdefault("benchmark", name)
    data.setdefault("machine", machine_info())
    data.setdefault("results", [])
    paths = {"json": out / f"{name}.json", "md": out / f"{name}.md"}
    text = json.dumps(data, indent=2, default=str)
    paths["json"].write_text(text + "\n")

    md = [f"# {name}\n"]
    if data.get("method"):
        md.append("## Method\n\n" + str(data["method"]).strip() + "\n")
    md.append("## Results\n")
    if plot_spec is not None and data["results"]:
        paths["png"] = out / f"{name}.png"
        _plot(paths["png"], name, data["results"], PlotSpec.from_any(plot_spec))
        md.append(f"![{name}]({name}.png)\n")
    md.append(markdown_table(data["results"]))
    for key, val in data.items():
        if key in ("benchmark", "method", "machine", "results"):
            continue
        md.append(f"## {key}\n")
        if isinstance(val, list) and val and all(isinstance(v, Mapping) for v in val):
            md.append(markdown_table(val))
        else:
            md.append("```\n" + json.dumps(val, indent=2, default=str) + "\n```\n")
    md.append("## Machine\n")
    md.append(markdown_table([{"key": k, "value": json.dumps(v) if isinstance(v, dict | list) else v}
                              for k, v in data["machine"].items()]))
    paths["md"].write_text("\n".join(md))
    if print_json:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    return paths


def add_output_args(parser: argparse.ArgumentParser) -> None:
    """Add the options every benchmark takes: ``--json`` and ``--out-dir``."""
    parser.add_argument("--json", action="store_true", help="also print the result JSON on stdout")
    parser.add_argument("--out-dir", default=None, help=f"where result files go (default {RESULTS_DIR})")


def require_host(parser: argparse.ArgumentParser, cpus: int = 1) -> None:
    """Stop with the parser's error unless this runs as root (network namespaces, veth, AF_PACKET) on at least
    ``cpus`` CPUs (2: the switch on CPU 1, the traffic on CPU 0)."""
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces, veth, AF_PACKET)")
    if (os.cpu_count() or 1) < cpus:
        parser.error(f"needs at least {cpus} CPUs (switch on CPU 1, traffic on CPU 0)")


# --------------------------------------------------------------------------------------------
# CPU accounting


@dataclass
class CpuSample:
    """One CPU's /proc/stat counters at a moment (seconds)."""

    t: float  # time.monotonic() when read
    idle: float  # idle + iowait: measured exactly by the NO_HZ idle tracking, not by ticks
    steal: float  # time the hypervisor ran something else
    softirq: float  # irq + softirq (tick-sampled: misses short bursts on a mostly idle CPU)


def cpu_sample(cpu: int) -> CpuSample:
    """Read one CPU's line of /proc/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        t = time.monotonic()
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                return CpuSample(t=t, idle=(v[3] + v[4]) / tick, steal=v[7] / tick,
                                 softirq=(v[5] + v[6]) / tick)
    raise ValueError(f"cpu{cpu} not in /proc/stat")


def cpu_busy_between(a: CpuSample, b: CpuSample) -> float:
    """Seconds the CPU did work between two samples: elapsed - idle - iowait.

    Computed from idle time rather than from the user/system/softirq columns because those
    are sampled at timer ticks, which a NO_HZ CPU that wakes briefly for each packet (softirq
    after an IPI, a switch woken by poll) mostly does not take; idle time is measured exactly.
    Steal is not subtracted: on this kind of VM it accrues mostly while the vCPU idles
    (haltpoll), i.e. inside the idle time already."""
    return max(0.0, (b.t - a.t) - (b.idle - a.idle))


def proc_cpu_seconds(pid: int) -> float:
    """utime+stime of a process (all its threads) so far, in seconds; 0 if it is gone.

    The kernel scales these to the scheduler's exact run time, so unlike the per-CPU tick
    columns they are precise (to 1/CLK_TCK)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_tree_cpu_seconds(pid: int) -> float:
    """utime+stime of a process and all its descendants still alive, in seconds."""
    total = 0.0
    todo = [pid]
    seen: set[int] = set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += proc_cpu_seconds(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return total


# --------------------------------------------------------------------------------------------
# background load: other users of the machine disturb a measurement


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children[ppid].append(int(d))
    out = {root}
    todo = [root]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def foreign_cpu_seconds() -> dict[int, float]:
    """utime+stime of every user-space process that is not this harness or one of its children."""
    ours = _descendants(os.getpid())
    out: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in ours:
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[6]) & 0x00200000:  # PF_KTHREAD: kernel threads do our softirq work
            continue
        out[int(d)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def foreign_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds foreign processes used between two ``foreign_cpu_seconds`` snapshots."""
    return sum(max(0.0, v - before.get(p, 0.0)) for p, v in after.items())


def wait_quiet(max_wait: float, limit: float = 0.05) -> float:
    """Wait (up to ``max_wait`` s) until foreign processes use under ``limit`` of a CPU; returns
    the last measured foreign load (CPUs)."""
    deadline = time.monotonic() + max_wait
    load = 0.0
    while True:
        a = foreign_cpu_seconds()
        time.sleep(0.5)
        load = foreign_delta(a, foreign_cpu_seconds()) / 0.5
        if load < limit or time.monotonic() > deadline:
            return load


# --------------------------------------------------------------------------------------------
# clean-up and namespaces


class NamespaceBusy(RuntimeError):
    """A network namespace the benchmark needs already exists."""


class Interrupted(Exception):
    """SIGTERM/SIGHUP arrived; raised so ``finally`` blocks tear everything down."""


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into ``Interrupted`` and SIGINT into ``KeyboardInterrupt`` (also
    when SIGINT was ignored, as for a background job of a script), so clean-up always runs."""

    def handler(signum: int, _frame: object) -> None:
        raise Interrupted(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run(cmd: Sequence[str], ns: str | None = None, check: bool = True, quiet: bool = False,
        env: Mapping[str, str] | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a command (inside netns ``ns`` if given) and return its completed process."""
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    res = subprocess.run(full, capture_output=True, text=True, env=dict(env) if env else None,
                         timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} failed ({res.returncode}): {res.stderr.strip()}")
    if not quiet and res.returncode != 0:
        log(f"warning: {' '.join(full)}: {res.stderr.strip()}")
    return res


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
    """Signal a process we started, wait for it, and kill it if it does not exit in time."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


class Cleanup:
    """A stack of undo actions run in reverse order on exit, each one even if others fail.

    Creating a namespace or veth through this object registers its deletion at once, so
    an exception, Ctrl-C or SIGTERM at any point leaves nothing behind.
    """

    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, fn: Callable[[], None]) -> None:
        """Register an undo action."""
        self._undo.append((what, fn))

    def close(self) -> None:
        """Run every undo action, newest first; failures are reported, not raised."""
        while self._undo:
            what, fn = self._undo.pop()
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - keep tearing down whatever happens
                log(f"cleanup: {what}: {e!r}")

    def __enter__(self) -> Cleanup:
        return self

    def __exit__(self, *exc: object) -> None:
        # a second Ctrl-C during teardown must not abort it
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self.close()
        finally:
            signal.signal(signal.SIGINT, old)

    # -- namespaces and links ---------------------------------------------------------------

    def netns(self, name: str) -> str:
        """Create network namespace ``name``, bring its loopback up, and register its deletion.

        An existing namespace of that name is never touched (it may belong to a benchmark that
        is running): ``NamespaceBusy`` is raised instead."""
        if name in list_netns():
            raise NamespaceBusy(
                f"network namespace {name} already exists: another benchmark is running, or an earlier "
                f"run was killed with SIGKILL (then remove it with `ip netns del {name}`)")
        run(["ip", "netns", "add", name])
        self.push(f"netns {name}", lambda: run(["ip", "netns", "del", name], check=False, quiet=True))
        run(["ip", "link", "set", "lo", "up"], ns=name)
        # no IPv6 autoconfiguration chatter on the test links
        run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], ns=name, check=False, quiet=True)
        run(["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"], ns=name, check=False, quiet=True)
        return name

    def veth(self, a: str, ns_a: str, b: str, ns_b: str) -> None:
        """Create veth pair ``a``/``b`` with ``a`` in netns ``ns_a`` and ``b`` in ``ns_b``, both up.

        The pair is created inside ``ns_a`` so it never appears in the root namespace; it
        disappears with the namespaces (the deletion is registered anyway)."""
        run(["ip", "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns_b], ns=ns_a)
        self.push(f"veth {a}", lambda: run(["ip", "link", "del", a], ns=ns_a, check=False, quiet=True))
        run(["ip", "link", "set", a, "up"], ns=ns_a)
        run(["ip", "link", "set", b, "up"], ns=ns_b)

    def popen(self, cmd: Sequence[str], what: str, sig: int = signal.SIGTERM,
              **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a process and register stopping it (``sig``, then SIGKILL after 5 s)."""
        proc = subprocess.Popen(list(cmd), **kwargs)
        self.push(what, lambda: stop_process(proc, sig))
        return proc


def list_netns() -> list[str]:
    """Names of the existing network namespaces."""
    res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return [line.split()[0] for line in res.stdout.splitlines() if line.strip()]


def link_mac(ifname: str, ns: str | None = None) -> str:
    """The MAC address of an interface."""
    return run(["cat", f"/sys/class/net/{ifname}/address"], ns=ns).stdout.strip()


def set_rps(ifname: str, ns: str | None, cpus: Sequence[int]) -> None:
    """Steer the receive processing of ``ifname`` (RPS on its rx queues) to ``cpus``."""
    mask = 0
    for c in cpus:
        mask |= 1 << c
    run(["sh", "-c", f"for q in /sys/class/net/{ifname}/queues/rx-*; do echo {mask:x} > $q/rps_cpus; done"],
        ns=ns)
