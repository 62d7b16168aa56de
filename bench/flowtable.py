"""``python -m bench flowtable``: the megaflow datapath's hit path (``dpif``: extract, megaflow cache,
flat actions) with 10 / 1,000 / 100,000 OpenFlow flows installed, next to the ``flow_burst``
interpreter it replaces, the L2-only ``switch_burst``, and the upcall rate (translations per second).

Method: one table holding three mask shapes in equal numbers: ``in_port + eth_dst`` exact (priority
300), ``eth_type + ipv4_dst/24`` (priority 200) and ``eth_type + ip_proto + tcp_dst`` (priority
100), each flow with one OUTPUT to another port (OpenFlow ports 1-4, datapath ports 0-3). 1,024 hot
64-byte IPv4/TCP frames, each built to hit one random flow of a random shape (a tcp_dst frame misses
the two higher-priority subtables first), sit in a packet pool (``backends.pool.PacketPool``, frames
at the 128-byte headroom) and are fed in bursts of 256. The megaflow path runs the sequence of
``vswitch.burstpath.BurstPath._of_burst`` (without transmit): ``dpif.fastpath.hit_burst``
(``extract_burst`` -> ``mf_lookup_programs`` -> ``execute_burst``, one call) and, when something
missed, ``Upcalls.handle_misses`` -> ``mf_programs`` -> ``execute_burst``; then NORMAL / packet-in
counts. The megaflows are installed by a
first pass (upcalls, checked against the interpreter: same ports, same bytes), so the measured
bursts are all hits (checked: no miss while measuring); the cache holds the megaflows this traffic
makes (one per hot frame, at most 1,024), not one per OpenFlow flow. Variants: "extract + megaflow +
execute" (the whole datapath per burst, frames already in the pool: ``hit_burst``), "megaflow +
execute" (keys extracted once: ``hit_keys``, the same call without extraction), both again
without the EMC (``emc_size=0``: every frame searches the megaflow subtables).
The interpreter is ``classifier/flowtable.py`` as of commit 07e438a (what the megaflow
datapath replaces), read with ``git show`` into a private module in a temporary directory and
compiled there; it runs on the same flows and frames (in a pool with no headroom, the layout it was
written for) with its exact-match cache, as "parse_burst + flow_burst"
(``classifier.parse.parse_burst`` as in the working tree, then the tables) and "flow_burst" (keys
parsed once). ``switch_burst`` (the L2 NORMAL path) runs on ``bench classify``'s frames (1,024
learned MACs, 4 ports); ``ratio_l2`` is each rate over its rate. Every kernel is called once per
burst from Python, so numba's dispatch and the per-burst Python of the datapath are included. This
VM's speed drifts for seconds at a time and other jobs may share it, so every variant is measured in
short windows (~0.01 s) taken round-robin over the whole run, each after an unmeasured quarter
window that warms the caches again: ``mpps`` is a variant's best window, ``mpps_median`` its median.
The breakdown times each step of the megaflow path alone at the largest flow count in the same
round-robin (and each kernel called with an empty burst: the dispatch cost). Upcall rate: the cache
is flushed (not timed), then the 1,024 frames go through the whole path in bursts of 256, every
megaflow a miss translated (``xlate.translate``) and installed (``Upcalls.handle_misses``); each
burst is a window: translations (and installs) per second, best and median window over the rounds.
``translate_us`` and ``install_us`` time ``translate`` and ``MegaflowCache.install`` alone on the
same keys (best window); ``rest_us`` is what else a translation costs on the path
(``handle_misses``' own work, mostly numpy). The process is pinned to one core (the highest-numbered
it may use).
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from backends.pool import PacketPool
from bench.classify import make_frames as make_l2_frames
from bench.common import REPO_DIR, Progress, add_output_args, machine_info, write_results
from classifier.drops import N_DROPS
from classifier.keys import NKEYS
from classifier.l2switch import switch_burst
from classifier.l2table import l2_learn, make_l2table
from classifier.parse import parse_burst
from dpif import key as K
from dpif import megaflow as M
from dpif.actions import N_DROP_REASONS, N_NORMAL, N_USERSPACE, SIDE_ROWS, execute_burst
from dpif.extract import extract_burst
from dpif.fastpath import hit_burst, hit_keys
from dpif.megaflow import mf_lookup_programs
from dpif.meters import NO_METERS
from ofproto import rules as R
from ofproto.tables import FlowTables, TableSet
from vswitch.vlan import VlanConfig, fill_vlan_map
from xlate.translate import translate
from xlate.upcall import Upcalls

N_PORTS = 4
N_FRAMES = 1024
L2_MACS = 1024
SHAPES = ("in_port+eth_dst", "ipv4_dst/24", "tcp_dst")
PRIORITY = {"in_port+eth_dst": 300, "ipv4_dst/24": 200, "tcp_dst": 100}
PORT_MAP = {p + 1: p for p in range(N_PORTS)}       # OpenFlow port -> datapath port
INTERPRETER_COMMIT = "07e438a"                       # the last commit with classifier/flowtable.py's flow_burst

WINDOW = 0.01                    # seconds per measuring window
Runner = Callable[[int], None]   # run(calls): that many bursts through one variant


# ---------------------------------------------------------------------------------------------
# the interpreter, from git history


_loaded: dict[str, ModuleType] = {}


def load_interpreter(commit: str = INTERPRETER_COMMIT) -> ModuleType:
    """``classifier/flowtable.py`` as of ``commit`` (``flow_burst`` and its ``FlowTables``), imported as a
    private module from a temporary directory; SystemExit with the reason when git cannot give it."""
    if commit in _loaded:
        return _loaded[commit]
    try:
        proc = subprocess.run(["git", "-C", str(REPO_DIR), "show", f"{commit}:classifier/flowtable.py"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SystemExit(f"bench: the flow_burst interpreter is read from git history ({commit}:classifier/"
                         f"flowtable.py) and git could not run: {e}") from e
    if proc.returncode:
        raise SystemExit(f"bench: the flow_burst interpreter is read from git history and `git show "
                         f"{commit}:classifier/flowtable.py` failed in {REPO_DIR} ({proc.stderr.strip()}); "
                         "run from a clone that has that commit (not a shallow one or an export)")
    tmp = tempfile.mkdtemp(prefix="pyvswitch-bench-flowtable-")
    atexit.register(shutil.rmtree, tmp, True)
    path = Path(tmp) / f"flowtable_{commit}.py"
    path.write_text(proc.stdout)
    name = f"_bench_flowtable_{commit}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"bench: cannot import {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod    # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    _loaded[commit] = mod
    return mod


def code_version() -> str:
    """``git describe --always --dirty`` of the repository (what the figures were measured on)."""
    try:
        proc = subprocess.run(["git", "-C", str(REPO_DIR), "describe", "--always", "--dirty"], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return proc.stdout.strip() or "unknown"


# ---------------------------------------------------------------------------------------------
# flows, described once, built for either implementation


@dataclass(frozen=True)
class FlowSpec:
    """One flow, independent of the implementation: ``apply`` / ``write`` hold ``("output", port)`` and
    ``("set", field, value)`` tuples; ports are OpenFlow port numbers."""

    table: int
    priority: int
    match: dict[str, int | tuple[int, int]]
    apply: tuple[tuple[Any, ...], ...] = ()
    write: tuple[tuple[Any, ...], ...] = ()
    goto: int | None = None
    cookie: int = 0


def build_flow(mod: ModuleType, spec: FlowSpec) -> Any:
    """``spec`` as a ``Flow`` of ``mod`` (``ofproto.rules`` or the interpreter's module)."""

    def action(a: tuple[Any, ...]) -> Any:
        return mod.Output(a[1]) if a[0] == "output" else mod.SetField(a[1], a[2])

    ins = mod.Instructions(apply=tuple(action(a) for a in spec.apply), write=tuple(action(a) for a in spec.write),
                           goto=spec.goto)
    return mod.Flow(spec.table, spec.priority, mod.Match(**spec.match), ins, cookie=spec.cookie)


def make_flows(n_flows: int) -> list[FlowSpec]:
    """``n_flows`` flows in table 0, a third of each shape; flow k of a shape outputs to port ``k % 4 + 1``
    (in_port+eth_dst: to the port after ``in_port``)."""
    flows = []
    for i in range(n_flows):
        shape, k = SHAPES[i % 3], i // 3
        if shape == "in_port+eth_dst":
            port = k % N_PORTS
            match: dict[str, int | tuple[int, int]] = {"in_port": port + 1, "eth_dst": 0x020000000000 | k}
            out = (port + 1) % N_PORTS
        elif shape == "ipv4_dst/24":
            match = {"eth_type": 0x0800, "ipv4_dst": (0x0A000000 | k << 8, 0xFFFFFF00)}
            out = k % N_PORTS
        else:
            match = {"eth_type": 0x0800, "ip_proto": 6, "tcp_dst": 1 + k}
            out = k % N_PORTS
        flows.append(FlowSpec(0, PRIORITY[shape], match, apply=(("output", out + 1),), cookie=i))
    return flows


def new_tables(specs: Sequence[FlowSpec], n_tables: int) -> tuple[TableSet, float]:
    """The flows in ``ofproto.tables.FlowTables``, compiled and activated; (table set, compile seconds)."""
    tables = FlowTables(n_tables)
    for s in specs:
        tables.add(build_flow(R, s))
    t0 = time.perf_counter()
    ts = tables.activate(tables.compile(PORT_MAP))
    return ts, time.perf_counter() - t0


def old_tables(mod: ModuleType, specs: Sequence[FlowSpec], n_tables: int) -> tuple[Any, float]:
    """The flows in the interpreter's ``FlowTables``, compiled and activated; (compiled set, compile seconds)."""
    tables = mod.FlowTables(n_tables)
    for s in specs:
        tables.add(build_flow(mod, s))
    t0 = time.perf_counter()
    compiled = tables.activate(tables.compile(PORT_MAP))
    return compiled, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# frames


def tcp_frame(dst: int, src: int, ip_src: int, ip_dst: int, tp_src: int, tp_dst: int) -> bytes:
    """A 64-byte Ethernet/IPv4/TCP frame (checksums left 0: nothing here verifies them)."""
    f = (dst.to_bytes(6, "big") + src.to_bytes(6, "big") + b"\x08\x00"
         + bytes.fromhex("45000028000040004006" "0000") + ip_src.to_bytes(4, "big") + ip_dst.to_bytes(4, "big")
         + tp_src.to_bytes(2, "big") + tp_dst.to_bytes(2, "big") + bytes.fromhex("00000000000000005002200000000000"))
    return f + b"\0" * (64 - len(f))


def make_frames(specs: Sequence[FlowSpec], rng: np.random.Generator) -> list[tuple[bytes, int]]:
    """``N_FRAMES`` (frame, datapath in_port) pairs, each hitting a random flow of ``specs``."""
    frames = []
    for _ in range(N_FRAMES):
        spec = specs[int(rng.integers(len(specs)))]
        m = spec.match
        out = spec.apply[0][1] - 1
        dst = 0x060000000000 | int(rng.integers(1 << 32))        # in no in_port+eth_dst flow
        ip_dst = 0xC0A80000 | int(rng.integers(1 << 16))         # in no /24 flow
        tp_dst = 0                                               # in no tcp_dst flow
        in_port = (out + 1 + int(rng.integers(N_PORTS - 1))) % N_PORTS
        if "eth_dst" in m:
            dst, in_port = int(m["eth_dst"]), int(m["in_port"]) - 1  # type: ignore[arg-type]
        elif "ipv4_dst" in m:
            ip_dst = int(m["ipv4_dst"][0]) | int(rng.integers(1, 255))  # type: ignore[index]
        else:
            tp_dst = int(m["tcp_dst"])  # type: ignore[arg-type]
        src = 0x020000100000 | int(rng.integers(1 << 16))
        frames.append((tcp_frame(dst, src, 0x0A000001, ip_dst, 12345, tp_dst), in_port))
    return frames


def make_pool(frames: Sequence[tuple[bytes, int]], headroom: int) -> tuple[PacketPool, np.ndarray]:
    """A pool twice the frames' size holding ``frames`` as received (the rest free); (pool, their slots)."""
    pool = PacketPool(2 * len(frames), 2048, headroom)
    slots = np.zeros(len(frames), dtype=np.int32)
    if pool.alloc(slots, 0, len(frames)) != len(frames):
        raise RuntimeError("pool too small")
    for s, (f, in_port) in zip(slots, frames, strict=True):
        pool.put(int(s), f, in_port)
    return pool, slots


def bursts_of(slots: np.ndarray, burst_size: int) -> list[np.ndarray]:
    """``slots`` cut into bursts of ``burst_size``."""
    return [np.ascontiguousarray(slots[i:i + burst_size]) for i in range(0, len(slots) - burst_size + 1, burst_size)]


# ---------------------------------------------------------------------------------------------
# the two datapaths


class MegaflowPath:
    """The megaflow datapath of one bridge over a private pool, a burst at a time, as
    ``Datapath._of_burst`` runs it (no transmit): the queues, NORMAL and packet-in lists are left
    for ``outputs()`` to read."""

    def __init__(self, ts: TableSet, pool: PacketPool, n_ports: int, burst_size: int,
                 emc_size: int = M.DEFAULT_EMC_SIZE, max_flows: int = M.DEFAULT_MAX_FLOWS) -> None:
        self.ts = ts
        self.pool = pool
        self.up = Upcalls(max_flows=max_flows, emc_size=emc_size)
        self.keys = np.zeros((pool.n_slots, K.KEY_WORDS), dtype=np.uint64)
        self.reasons = np.zeros(burst_size, dtype=np.int32)
        self.out_entry = np.zeros(burst_size, dtype=np.int64)
        self.prog_index = np.zeros((burst_size, 2), dtype=np.int64)
        self.port_flags = np.zeros(n_ports, dtype=np.int64)
        self.out = np.zeros((2, burst_size * n_ports), dtype=np.int32)
        self.out_start = np.zeros((2, n_ports + 1), dtype=np.int32)
        self.drops = np.zeros((n_ports + 1, N_DROP_REASONS), dtype=np.int64)
        self.extra = np.zeros(4 * burst_size, dtype=np.int32)
        self.side = np.zeros((SIDE_ROWS, 2 * burst_size), dtype=np.int32)
        self.side_n = np.zeros(3, dtype=np.int64)
        self.side_frames = 0    # frames the programs sent to NORMAL or the controllers

    def extract(self, burst: np.ndarray, n: int) -> None:
        """Extract the keys of ``burst[:n]`` (all frames valid, or RuntimeError)."""
        if extract_burst(self.pool.data, self.pool.meta, burst, n, self.keys, self.reasons):
            raise RuntimeError("the benchmark's frames are all valid")

    def run(self, burst: np.ndarray, n: int, extract: bool = True) -> None:
        """One burst: keys (unless ``extract`` is False: they are already there), megaflows, upcalls
        for the misses, programs, actions; fresh slots freed."""
        pool = self.pool
        meta = pool.meta
        up = self.up
        c = up.cache
        if extract:   # the datapath's one-call hit path (dpif.fastpath.hit_burst)
            r = hit_burst(pool.data, meta, burst, n, self.keys, self.reasons, c.st, c.ent, c.buckets, c.emc,
                          self.out_entry, 0, self.prog_index, c.actions, self.out, self.out_start, self.drops,
                          pool.free_stack, pool.free_top, self.extra, self.side, self.side_n, NO_METERS, 0)
            if r < 0:
                raise RuntimeError("the benchmark's frames are all valid")
            if r == 0:
                self._after(int(self.side_n[2]))
                return
        else:         # keys already extracted: the same call without extraction (dpif.fastpath.hit_keys)
            r = hit_keys(pool.data, meta, burst, n, self.keys, c.st, c.ent, c.buckets, c.emc, self.out_entry, 0,
                         self.prog_index, c.actions, self.out, self.out_start, self.drops, pool.free_stack,
                         pool.free_top, self.extra, self.side, self.side_n, NO_METERS, 0)
            if r == 0:
                self._after(int(self.side_n[2]))
                return
        up.handle_misses(self.ts, self.port_flags, self.keys, burst, n, meta, self.out_entry, 0)
        up.programs(self.out_entry, n, self.prog_index)
        self._after(execute_burst(pool.data, meta, burst, n, self.prog_index, c.actions, self.out,
                                  self.out_start, self.drops, pool.free_stack, pool.free_top, self.extra, self.side,
                                  self.side_n, NO_METERS, 0))

    def _after(self, n_extra: int) -> None:
        pool = self.pool
        if self.side_n[N_NORMAL] or self.side_n[N_USERSPACE]:
            self.side_frames += int(self.side_n[N_NORMAL] + self.side_n[N_USERSPACE])
        if n_extra:
            pool.free(self.extra, n_extra)

    def flush(self) -> None:
        """Forget every megaflow (statistics credited to the flows first, as a flow-set change does)."""
        self.up.flush(self.ts)

    def outputs(self) -> dict[int, list[int]]:
        """Slot -> datapath ports it was queued to in the last burst."""
        return queued(self.out, self.out_start)


class InterpreterPath:
    """The interpreter's datapath over a private pool: ``parse_burst`` then ``flow_burst``."""

    def __init__(self, mod: ModuleType, compiled: Any, pool: PacketPool, n_ports: int, burst_size: int,
                 emc_rows: int | None = None) -> None:
        self.mod = mod
        self.ft = compiled.ft
        self.compiled = compiled
        self.pool = pool
        self.emc = mod.make_emc() if emc_rows is None else mod.make_emc(emc_rows)
        self.keys = np.zeros((pool.n_slots, NKEYS), dtype=np.uint64)
        self.port_flags = np.zeros(n_ports, dtype=np.int64)
        self.drops = np.zeros((n_ports, mod.N_FDROPS), dtype=np.int64)
        self.out = np.zeros((2, burst_size * n_ports), dtype=np.int32)
        self.out_start = np.zeros((2, n_ports + 1), dtype=np.int32)
        self.side = mod.make_side(burst_size)

    def run(self, burst: np.ndarray, n: int, parse: bool = True) -> None:
        """One burst (``parse`` False: the keys are already there); fresh slots freed."""
        pool = self.pool
        mod = self.mod
        if parse:
            parse_burst(pool.data, pool.meta, burst, n, self.keys)
        mod.flow_burst(pool.data, pool.meta, burst, n, self.keys, self.ft, self.emc, self.port_flags, 0,
                       self.drops, self.out, self.out_start, self.side, pool.free_stack, pool.free_top)
        n_extra = int(self.side[mod.SIDE_N, mod.N_EXTRA])
        if n_extra:
            pool.free(self.side[mod.SIDE_EXTRA], n_extra)

    def outputs(self) -> dict[int, list[int]]:
        """Slot -> datapath ports it was queued to in the last burst."""
        return queued(self.out, self.out_start)


def queued(out: np.ndarray, out_start: np.ndarray) -> dict[int, list[int]]:
    """Slot -> ports, from ``switch_burst``-style queues."""
    got: dict[int, list[int]] = {}
    for p in range(out_start.shape[1] - 1):
        start, count = int(out_start[0, p]), int(out_start[1, p])
        for s in out[0, start:start + count]:
            got.setdefault(int(s), []).append(p)
    return got


def same_forwarding(new: MegaflowPath, old: InterpreterPath, bursts_new: Sequence[np.ndarray],
                    bursts_old: Sequence[np.ndarray], n: int) -> None:
    """Run every burst once through both paths (the first pass: upcalls on the new one) and check they
    queue the same frames to the same ports with the same bytes (AssertionError otherwise)."""
    for bn, bo in zip(bursts_new, bursts_old, strict=True):
        new.run(bn, n)
        old.run(bo, n)
        got_new, got_old = new.outputs(), old.outputs()
        if len(got_new) != n:
            raise AssertionError(f"megaflow path queued {len(got_new)} of {n} frames")
        by_index_new = {i: got_new.get(int(s)) for i, s in enumerate(bn)}
        by_index_old = {i: got_old.get(int(s)) for i, s in enumerate(bo)}
        if by_index_new != by_index_old:
            diff = [i for i in by_index_new if by_index_new[i] != by_index_old[i]][:5]
            raise AssertionError(f"the paths disagree on output ports, frames {diff}: "
                                 f"{[(by_index_new[i], by_index_old[i]) for i in diff]}")
        for sn, so in zip(bn, bo, strict=True):
            if new.pool.frame(int(sn)) != old.pool.frame(int(so)):
                raise AssertionError(f"the paths leave different bytes in frame {int(sn)}")


# ---------------------------------------------------------------------------------------------
# measuring


def measure(runs: dict[str, Runner], burst_size: int, seconds: float,
            bar: Progress | None = None) -> dict[str, tuple[float, float]]:
    """(best, median) frames/s of every runner, from ``WINDOW`` windows taken round-robin for ``seconds`` each."""
    calls = {}
    for name, run in runs.items():   # calls per window
        t0 = time.perf_counter()
        run(16)
        calls[name] = max(4, int(16 * WINDOW / max(time.perf_counter() - t0, 1e-6)))
    rounds = max(5, int(seconds / WINDOW))
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(rounds):
        for name, run in runs.items():
            run(calls[name] // 4 + 1)  # warm the caches the other variants evicted (not measured)
            t0 = time.perf_counter()
            run(calls[name])
            rates[name].append(calls[name] * burst_size / (time.perf_counter() - t0))
        if bar is not None:
            bar.set(r + 1)
    return {name: (max(v), sorted(v)[len(v) // 2]) for name, v in rates.items()}


def upcall_rate(path: MegaflowPath, bursts: Sequence[np.ndarray], n: int, rounds: int,
                bar: Progress | None = None) -> dict[str, float]:
    """Translations and installs per second when every megaflow misses: per round the cache is flushed
    (not timed), then ``bursts`` go through the whole path, each burst timed on its own (a window).
    Best and median window over ``rounds``; also the share of the time spent in ``handle_misses``
    and the translations per round."""
    c = path.up.counters
    per_s: list[float] = []
    inst_s: list[float] = []
    share: list[float] = []
    per_round = 0
    for _ in range(rounds):
        path.flush()
        tr_round = c["translations"]
        for b in bursts:
            tr0, in0, ns0 = c["translations"], c["installed"], path.up.translate_ns
            t0 = time.perf_counter_ns()
            path.run(b, n)
            dt = time.perf_counter_ns() - t0
            per_s.append((c["translations"] - tr0) / dt * 1e9)
            inst_s.append((c["installed"] - in0) / dt * 1e9)
            share.append((path.up.translate_ns - ns0) / dt)
        per_round = c["translations"] - tr_round
        if bar is not None:
            bar.update(1)
    med = len(per_s) // 2
    return {"translations_per_s": max(per_s), "translations_per_s_median": sorted(per_s)[med],
            "installs_per_s": max(inst_s), "installs_per_s_median": sorted(inst_s)[med],
            "handle_misses_share": sorted(share)[med], "translations_per_round": per_round}


def rounded(row: dict[str, float]) -> dict[str, float | int]:
    """``row`` for a result table: microseconds to 0.01, shares to 0.001, rates and counts whole."""
    def one(k: str, v: float) -> float | int:
        if "us" in k.split("_"):
            return round(v, 2)
        return round(v, 3) if k.endswith("share") else round(v)
    return {k: one(k, v) for k, v in row.items()}


def emc_share(before: dict[str, int], after: dict[str, int]) -> float:
    """Share of the frames found through the EMC between two ``MegaflowCache.stats()``."""
    emc = after["emc_hits"] - before["emc_hits"]
    total = emc + after["megaflow_hits"] - before["megaflow_hits"]
    return round(emc / total, 4) if total else 0.0


def upcall_split(ts: TableSet, path: MegaflowPath, bursts: Sequence[np.ndarray], n: int,
                 rounds: int) -> dict[str, float]:
    """Microseconds per translation of two parts of the upcall path, best window (``n`` keys) of
    ``rounds``: ``translate`` alone over the frames' keys and ``MegaflowCache.install`` of the distinct
    results into an empty cache."""
    slots = np.concatenate(list(bursts))
    for b in bursts:
        path.extract(b, n)
    keys = [[int(w) for w in path.keys[s]] for s in slots]
    seen: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()
    rows = []      # one (key, mask, program) per distinct megaflow
    for key in keys:
        r = translate(ts, key, path.port_flags, path.up.cookies)
        mf = (tuple(k & m for k, m in zip(key, r.mask, strict=True)), tuple(r.mask))
        if mf not in seen:
            seen.add(mf)
            rows.append((np.array(key, dtype=np.uint64), r.mask_row(), r.program()))
    t_tr, t_in = [], []
    for _ in range(rounds):
        for lo in range(0, len(keys), n):     # windows of one burst's worth
            t0 = time.perf_counter_ns()
            for k in keys[lo:lo + n]:
                translate(ts, k, path.port_flags, path.up.cookies)
            t_tr.append((time.perf_counter_ns() - t0) / len(keys[lo:lo + n]) / 1e3)
        cache = M.MegaflowCache(path.up.cache.max_flows, 0)
        for lo in range(0, len(rows), n):
            t0 = time.perf_counter_ns()
            for key, mask, prog in rows[lo:lo + n]:
                cache.install(key, mask, prog)
            t_in.append((time.perf_counter_ns() - t0) / len(rows[lo:lo + n]) / 1e3)
    return {"translate_us": min(t_tr), "install_us": min(t_in), "keys": len(keys), "megaflows": len(rows)}


def stage_runners(path: MegaflowPath, bursts: Sequence[np.ndarray], n: int, prefix: str = "") -> dict[str, Runner]:
    """Each step of the megaflow path alone over ``bursts`` (state left by a full pass), and each
    kernel called with an empty burst (what one call costs from Python)."""
    pool, up = path.pool, path.up
    data, meta = pool.data, pool.meta
    nb = len(bursts)
    index = []
    for b in bursts:       # every burst's keys in place; its megaflows and programs kept
        path.run(b, n)
        index.append(path.prog_index.copy())
    empty = bursts[0][:0]

    def extract(calls: int) -> None:
        for c in range(calls):
            extract_burst(data, meta, bursts[c % nb], n, path.keys, path.reasons)

    c_ = up.cache

    def lookup(calls: int) -> None:
        for c in range(calls):
            mf_lookup_programs(path.keys, bursts[c % nb], n, meta, c_.st, c_.ent, c_.buckets, c_.emc, path.out_entry,
                               0, path.prog_index)

    def execute(calls: int) -> None:
        for c in range(calls):
            execute_burst(data, meta, bursts[c % nb], n, index[c % nb], up.cache.actions, path.out, path.out_start,
                          path.drops, pool.free_stack, pool.free_top, path.extra, path.side, path.side_n, NO_METERS, 0)

    def extract0(calls: int) -> None:
        for _ in range(calls):
            extract_burst(data, meta, empty, 0, path.keys, path.reasons)

    def lookup0(calls: int) -> None:
        for _ in range(calls):
            mf_lookup_programs(path.keys, empty, 0, meta, c_.st, c_.ent, c_.buckets, c_.emc, path.out_entry, 0,
                               path.prog_index)

    def execute0(calls: int) -> None:
        for _ in range(calls):
            execute_burst(data, meta, empty, 0, path.prog_index, up.cache.actions, path.out, path.out_start,
                          path.drops, pool.free_stack, pool.free_top, path.extra, path.side, path.side_n, NO_METERS, 0)

    return {f"{prefix}extract_burst": extract, f"{prefix}mf_lookup_programs": lookup,
            f"{prefix}execute_burst": execute, f"{prefix}extract_burst, empty burst": extract0,
            f"{prefix}mf_lookup_programs, empty burst": lookup0, f"{prefix}execute_burst, empty burst": execute0}


def breakdown_rows(stages: Sequence[str], rates: dict[str, tuple[float, float]], burst_size: int,
                   whole: float, prefix: str = "") -> list[dict[str, Any]]:
    """ns per burst and per frame of each step (best and median window) and its share of ``whole`` (the
    whole path's best ns per burst)."""
    rows = []
    for name in stages:
        best, median = rates[prefix + name]
        ns = burst_size / best * 1e9
        rows.append({"step": name, "ns_per_burst": round(ns, 1),
                     "ns_per_burst_median": round(burst_size / median * 1e9, 1),
                     "ns_per_frame": round(ns / burst_size, 2), "share_of_path": round(ns / whole, 3)})
    return rows


# ---------------------------------------------------------------------------------------------
# this benchmark


def l2_runner(burst_size: int, rng: np.random.Generator) -> tuple[Runner, Callable[[], None]]:
    """``switch_burst`` set up as ``bench classify`` does (1,024 learned MACs); (run, check)."""
    macs = (rng.choice(2**46, L2_MACS, replace=False).astype(np.uint64) & ~np.uint64(0x010000000000)) | np.uint64(
        0x020000000000)
    mac_port = np.arange(L2_MACS) % N_PORTS
    data, meta, _ = make_l2_frames(N_FRAMES, macs, mac_port, rng)
    l2, info = make_l2table(8192)
    for m, p in zip(macs, mac_port, strict=True):
        l2_learn(l2, info, 0, np.uint64(m), int(p), 0)
    vlan_map = np.zeros((N_PORTS, 2, 4096), dtype=np.int16)
    for p in range(N_PORTS):
        fill_vlan_map(vlan_map, p, VlanConfig(tag=0), True)
    keys = np.zeros((N_FRAMES, NKEYS), dtype=np.uint64)
    drops = np.zeros((N_PORTS, N_DROPS), dtype=np.int64)
    out = np.zeros((2, burst_size * N_PORTS), dtype=np.int32)
    out_start = np.zeros((2, N_PORTS + 1), dtype=np.int32)
    bursts = [np.arange(i, i + burst_size, dtype=np.int32) for i in range(0, N_FRAMES, burst_size)]
    nb = len(bursts)

    def run(calls: int) -> None:
        for c in range(calls):
            switch_burst(data, meta, bursts[c % nb], burst_size, keys, l2, info, vlan_map, 0, drops, out, out_start)

    def check() -> None:
        assert out_start[1].sum() == burst_size and drops.sum() == 0, "every frame goes to exactly one port"

    return run, check


MF_VARIANTS = ("extract + megaflow + execute", "megaflow + execute",
               "extract + megaflow + execute, no EMC", "megaflow + execute, no EMC")
OLD_VARIANTS = ("parse_burst + flow_burst", "flow_burst")


def flow_set(n_flows: int, burst_size: int, rng: np.random.Generator, mod: ModuleType) -> dict[str, Any]:
    """Both datapaths for ``n_flows`` flows: {"runs": {variant: run}, "check", "paths", "upcall", "setup"}."""
    specs = make_flows(n_flows)
    frames = make_frames(specs, rng)
    ts, new_compile_s = new_tables(specs, 1)
    compiled, old_compile_s = old_tables(mod, specs, 1)
    old_pool, old_slots = make_pool(frames, 0)
    old = InterpreterPath(mod, compiled, old_pool, N_PORTS, burst_size)
    old_bursts = bursts_of(old_slots, burst_size)
    paths: dict[str, tuple[MegaflowPath, list[np.ndarray]]] = {}
    for emc_size, suffix in ((M.DEFAULT_EMC_SIZE, ""), (0, ", no EMC")):
        pool, slots = make_pool(frames, 128)
        paths[suffix] = (MegaflowPath(ts, pool, N_PORTS, burst_size, emc_size=emc_size), bursts_of(slots, burst_size))
    same_forwarding(paths[""][0], old, paths[""][1], old_bursts, burst_size)   # also installs the megaflows
    for b in paths[", no EMC"][1]:
        paths[", no EMC"][0].run(b, burst_size)
    runs: dict[str, Runner] = {}
    for suffix, (path, bursts) in paths.items():
        for extract in (True, False):
            def run(calls: int, path: MegaflowPath = path, bursts: list = bursts, extract: bool = extract) -> None:
                nb = len(bursts)
                for c in range(calls):
                    path.run(bursts[c % nb], burst_size, extract)

            run(2 * len(bursts))
            runs[("extract + " if extract else "") + "megaflow + execute" + suffix] = run
    for parse in (True, False):
        def run_old(calls: int, parse: bool = parse) -> None:
            nb = len(old_bursts)
            for c in range(calls):
                old.run(old_bursts[c % nb], burst_size, parse)

        run_old(len(old_bursts))
        runs["parse_burst + flow_burst" if parse else "flow_burst"] = run_old
    stats0 = paths[""][0].up.cache.stats()
    misses0 = {k: p.up.cache.stats()["misses"] for k, (p, _b) in paths.items()}

    def check() -> None:
        setup["emc_hit_share"] = emc_share(stats0, paths[""][0].up.cache.stats())
        for k, (p, bursts) in paths.items():
            for b in bursts:
                p.run(b, burst_size)
                assert p.out_start[1].sum() == burst_size, "every frame goes to exactly one port"
            assert p.up.cache.stats()["misses"] == misses0[k], "a megaflow missed while measuring the hit path"
            assert p.drops.sum() == 0 and p.side_frames == 0, p.drops.sum(0)
        old.run(old_bursts[0], burst_size)
        assert old.out_start[1].sum() == burst_size, "every frame goes to exactly one port"
        assert old.drops.sum() == 0, old.drops.sum(0)

    upcall_pool, upcall_slots = make_pool(frames, 128)
    upcall_path = MegaflowPath(ts, upcall_pool, N_PORTS, burst_size)
    setup: dict[str, Any] = {
        "flows": n_flows, "megaflows": len(paths[""][0].up.cache), "megaflow_subtables": stats0["subtables"],
        "compile_s": round(new_compile_s, 3), "flow_burst_compile_s": round(old_compile_s, 3),
        "flow_burst_subtables": int(compiled.ft[int(compiled.ft[mod.H_TB]) + mod.TB_COUNT])}
    return {"runs": runs, "check": check, "paths": paths, "ts": ts,
            "upcall": (upcall_path, bursts_of(upcall_slots, burst_size)), "setup": setup}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write bench/results/flowtable.{json,png,md}."""
    ap = argparse.ArgumentParser(prog="python -m bench flowtable", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", default="10,1000,100000", help="installed flows (default 10,1000,100000)")
    ap.add_argument("--burst", type=int, default=256, help="burst size (default 256)")
    ap.add_argument("--seconds", type=float, default=3.0,
                    help="measuring time per variant, spread over the run (default 3)")
    ap.add_argument("--upcall-rounds", type=int, default=10, help="flushed-cache rounds per flow count (default 10)")
    ap.add_argument("--gate-mpps", type=float, default=30.0, help="issue 17 gate at the largest flow count (30)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    if N_FRAMES % args.burst:
        ap.error(f"--burst must divide {N_FRAMES}")
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})  # one core, and no migrations between windows
    n_flows = [int(x) for x in args.flows.split(",")]
    mod = load_interpreter()
    rng = np.random.default_rng(42)
    runs: dict[str, Runner] = {}
    checks = []
    sets = {}
    l2_run, l2_check = l2_runner(args.burst, np.random.default_rng(42))
    runs["L2/switch_burst"] = l2_run
    checks.append(l2_check)
    with Progress(len(n_flows), "flowtable: flows, frames, first pass") as bar:
        for nf in n_flows:
            sets[nf] = flow_set(nf, args.burst, rng, mod)
            checks.append(sets[nf]["check"])
            for variant, run in sets[nf]["runs"].items():
                runs[f"{nf}/{variant}"] = run
            bar.update(1)
    top = max(n_flows)
    stages = stage_runners(*sets[top]["paths"][""], args.burst, prefix="stage/")
    runs.update(stages)
    with Progress(max(5, int(args.seconds / WINDOW)), "flowtable: hit path, round-robin") as bar:
        rates = measure(runs, args.burst, args.seconds, bar)
    for check in checks:
        check()
    upcalls = {}
    with Progress(len(n_flows) * args.upcall_rounds, "flowtable: upcalls") as bar:
        for nf in n_flows:
            path, bursts = sets[nf]["upcall"]
            upcalls[nf] = upcall_rate(path, bursts, args.burst, args.upcall_rounds, bar)
            split = upcall_split(sets[nf]["ts"], path, bursts, args.burst, 5)
            per = 1e6 / upcalls[nf]["translations_per_s"]
            upcalls[nf].update({"path_us": per, "translate_us": split["translate_us"],
                                "install_us": split["install_us"],
                                "rest_us": per - split["translate_us"] - split["install_us"]})

    l2 = rates["L2/switch_burst"][0]
    results: list[dict[str, Any]] = [{"flows": "L2", "variant": "switch_burst", "mpps": round(l2 / 1e6, 2),
                                      "mpps_median": round(rates["L2/switch_burst"][1] / 1e6, 2), "ratio_l2": 1.0}]
    for nf in n_flows:
        for variant in (*MF_VARIANTS, *OLD_VARIANTS):
            best, median = rates[f"{nf}/{variant}"]
            results.append({"flows": nf, "variant": variant, "mpps": round(best / 1e6, 2),
                            "mpps_median": round(median / 1e6, 2), "ratio_l2": round(best / l2, 3)})
    whole = args.burst / rates[f"{top}/extract + megaflow + execute"][0] * 1e9
    breakdown = breakdown_rows([k.removeprefix("stage/") for k in stages], rates, args.burst, whole, "stage/")
    breakdown.append({"step": "whole path (extract + megaflow + execute)", "ns_per_burst": round(whole, 1),
                      "ns_per_burst_median": round(
                          args.burst / rates[f"{top}/extract + megaflow + execute"][1] * 1e9, 1),
                      "ns_per_frame": round(whole / args.burst, 2), "share_of_path": 1.0})
    upcall_rows = [{"flows": nf, **rounded(upcalls[nf])} for nf in n_flows]

    def mpps(nf: int, variant: str) -> float:
        return rates[f"{nf}/{variant}"][0] / 1e6

    hit, hit_keys = mpps(top, MF_VARIANTS[0]), mpps(top, MF_VARIANTS[1])
    gates = [
        {"gate": f"megaflow hit, {top} flows, extract + megaflow + execute >= {args.gate_mpps} Mpps",
         "measured": round(hit, 2), "threshold": args.gate_mpps, "met": hit >= args.gate_mpps},
        {"gate": f"megaflow hit, {top} flows, megaflow + execute (keys extracted once) >= {args.gate_mpps} Mpps",
         "measured": round(hit_keys, 2), "threshold": args.gate_mpps, "met": hit_keys >= args.gate_mpps},
        {"gate": f"extract + megaflow + execute >= parse_burst + flow_burst, {top} flows",
         "measured": round(hit, 2), "threshold": round(mpps(top, OLD_VARIANTS[0]), 2),
         "met": hit >= mpps(top, OLD_VARIANTS[0])},
        {"gate": f"megaflow + execute >= flow_burst, {top} flows",
         "measured": round(hit_keys, 2), "threshold": round(mpps(top, OLD_VARIANTS[1]), 2),
         "met": hit_keys >= mpps(top, OLD_VARIANTS[1])},
    ]
    payload = {"benchmark": "flowtable", "method": __doc__.split("\n\n", 1)[1].strip(), "burst": args.burst,
               "machine": machine_info(pinned_cpu=cpu, code=code_version()), "interpreter_commit": INTERPRETER_COMMIT,
               "results": results, "gates": gates, "upcalls": upcall_rows,
               f"breakdown_{top}_flows": breakdown, "setup": [sets[nf]["setup"] for nf in n_flows]}
    write_results("flowtable", payload, {"group": "flows", "series": "variant",
                                         "metrics": [("mpps", "Mpps (best window)")],
                                         "title": f"OpenFlow flows: megaflow datapath vs flow_burst, one core, burst "
                                                  f"{args.burst}", "log_metrics": ("mpps",)},
                  print_json=args.json, out_dir=args.out_dir)
    if not args.json:
        for r in results:
            print(f"{r['flows']!s:>7}  {r['variant']:38s} {r['mpps']:8.2f} Mpps (median {r['mpps_median']:.2f})"
                  f"  x{r['ratio_l2']} of L2")
        for u in upcall_rows:
            print(f"{u['flows']:>7} flows: {u['translations_per_s']} translations/s (median "
                  f"{u['translations_per_s_median']}), {u['installs_per_s']} installs/s")
        for b in breakdown:
            print(f"  {b['step']:42s} {b['ns_per_burst']:9.1f} ns/burst {b['ns_per_frame']:7.2f} ns/frame "
                  f"{b['share_of_path']:6.1%}")
        for g in gates:
            print(f"gate {'MET ' if g['met'] else 'MISSED'}: {g['gate']}: {g['measured']} (threshold {g['threshold']})")
    return 0
