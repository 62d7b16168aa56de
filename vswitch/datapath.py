"""The datapath: one thread for every bridge, moving bursts port -> pipeline -> ports, with adaptive polling.

```
       ┌───────── busy-poll while an iteration moves busy_frames frames or more (adaptive) ─────────┐
       ▼                                                                                        │
 rx_burst of every port (or of the ready ones; up to MAX_BURST frames) ─► BurstPath: each frame │
       ▲                                              by its bridge ─► tx_burst ─► patch rounds ┘
       │  between iterations: control calls (call()), published flows (take_flows), aging
       └─ epoll on the ports' wake-up fds + the control eventfd (idle: blocks up to AGING_TICK)
```

One ``Datapath`` serves every bridge (as OVS's ``netdev@ovs-netdev``): one thread, one packet pool, one
megaflow cache, and datapath port numbers shared by all bridges. Here: the ports and bridges, what follows
from them (each port's burst group, patch peers, the translator's ``Bridges`` view), the thread and its
loop (adaptive polling, control calls, flow swaps, aging). Elsewhere:

* ``vswitch.dpbridge``: a bridge is a ``DpBridge`` over the datapath: its L2 table and VLAN map (NORMAL),
  its live OpenFlow tables (``TableSet``), its fail-secure state and its packet-in queue.
* ``vswitch.burstpath``: what one burst goes through (``BurstPath``, which ``Datapath`` extends): split by
  bridge, megaflows and upcalls, NORMAL, packet-ins, transmit, patch rounds; and packet-outs.

The datapath thread owns every array it touches (pool, keys, L2 tables, VLAN maps, megaflows, queues).
The control side never writes them: it queues a function with ``call()`` and the datapath
runs it between bursts, so the hot path takes no lock. Per-burst Python work is O(ports + bridges);
per-frame work happens only inside numba kernels (and in upcalls, once per new megaflow).
"""

from __future__ import annotations

import collections
import logging
import os
import select
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from backends.patch import PatchPort
from backends.pool import PacketPool
from backends.port import Port
from backends.tunnel import TunnelPort
from classifier.drops import N_DROPS
from classifier.l2switch import switch_burst
from classifier.l2table import DEFAULT_AGING, DEFAULT_LIMIT, l2_age, l2_flush, make_l2table
from dpif.actions import N_DROP_REASONS
from dpif.patch import PC_FIELDS
from ofproto.tables import TableSet
from vswitch.burstpath import BURST, G_DROP, G_NORMAL, G_TABLES, MAX_BURST, BurstPath
from vswitch.dpbridge import DpBridge
from vswitch.dptunnels import DpTunnels
from xlate.bridges import PF_LOCAL, PF_TUNNEL
from xlate.translate import MODE_DROP, MODE_TABLES, PF_DOWN, PF_PATCH, Bridges, UpcallCookies
from xlate.upcall import Upcalls

log = logging.getLogger(__name__)

BUSY_FRAMES = 32         # the fewest frames an iteration moves to make the next one poll every port
AGING_TICK = 1.0         # seconds between aging passes (and the longest epoll wait)


def _grown(a: np.ndarray, fill: int) -> np.ndarray:
    """``a`` with one more row (per-port arrays when a port number is added), the new row ``fill``."""
    out = np.full((a.shape[0] + 1, *a.shape[1:]), fill, dtype=a.dtype)
    out[:-1] = a
    return out


class PmdStats:
    """Counters of the polling loop (``dpif-pyvswitch/pmd-stats-show``)."""

    def __init__(self) -> None:
        self.iterations = 0
        self.busy_polls = 0
        self.idle_polls = 0
        self.sleeps = 0
        self.packets = 0
        self.bursts = 0
        self.busy_ns = 0

    def as_dict(self) -> dict[str, float]:
        """Snapshot with derived averages."""
        return {
            "iterations": self.iterations,
            "busy_polls": self.busy_polls,
            "idle_polls": self.idle_polls,
            "sleeps": self.sleeps,
            "packets": self.packets,
            "bursts": self.bursts,
            "avg_burst": self.packets / self.bursts if self.bursts else 0.0,
            "ns_per_packet": self.busy_ns / self.packets if self.packets else 0.0,
        }


class Datapath(BurstPath, DpTunnels):
    """The forwarding engine of every bridge: ports by datapath number, the bridges, the pool, the thread
    (what it does with one burst: ``BurstPath``)."""

    def __init__(
        self,
        name: str = "ovs-netdev",
        n_slots: int = 8192,
        slot_size: int = 2048,
        thread_name: str = "datapath",
    ) -> None:
        self.name = name
        self.thread_name = thread_name
        self.pool = PacketPool(n_slots, slot_size)
        self._init_burst_path(n_slots)
        self.bridges: list[DpBridge | None] = []
        self.ports: list[Port | None] = []
        self.port_bridge = np.zeros(0, dtype=np.int64)   # the bridge of each port (-1: none)
        self.port_group = np.zeros(0, dtype=np.int64)    # its burst group (G_*)
        self.peer = np.zeros(0, dtype=np.int64)          # a patch port's peer (-1: none)
        self.patch_ports = np.zeros(0, dtype=np.int64)   # the patch ports, paired or not
        self.rx_ports: list[Port] = []                   # the ports with a device (what a busy poll reads)
        self.patch_counts = np.zeros((0, PC_FIELDS), dtype=np.int64)
        self.single_group = -1                           # >= 0: every port is in this group
        self.group_of: list[int] = []                    # ``port_group`` as a list (a poll's group, in Python)
        self.drops = np.zeros((0, N_DROPS), dtype=np.int64)
        self.port_flags = np.zeros(0, dtype=np.int64)    # xlate.translate PF_* per port
        # flow drops by ingress port (dpif.actions.DROP_REASONS); the last row: frames of no port (packet-out)
        self.fdrops = np.zeros((1, N_DROP_REASONS), dtype=np.int64)
        # the megaflow datapath (made when the first flow set other than NORMAL arrives)
        self.cookies = UpcallCookies()
        self.upcalls: Upcalls | None = None
        self.xbridges = Bridges([], [], [], self.port_bridge, self.peer)
        self._init_tunnels()
        # Load (or compile) the kernels now, not in the first burst.
        l2, info = make_l2table(16, 300)
        switch_burst(self.pool.data, self.pool.meta, self.burst, 0, self.keys, l2, info,
                     np.zeros((1, 2, 4096), dtype=np.int16), 0, np.zeros((1, N_DROPS), dtype=np.int64),
                     np.zeros((2, MAX_BURST), dtype=np.int32), np.zeros((2, 2), dtype=np.int32))
        l2_age(l2, info, 0)
        self.pmd = PmdStats()
        self.t0 = time.monotonic()
        self._calls: collections.deque[tuple[Callable[[], Any], Future]] = collections.deque()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll = select.epoll()
        self._epoll.register(self._wake_fd, select.EPOLLIN)
        self._fd_port: dict[int, Port] = {}
        self._thread: threading.Thread | None = None
        self._running = False
        self._flows_pending = False
        self._last_aging = 0.0
        #: frames an iteration moves to make the next one a busy poll: BUSY_FRAMES up to BURST, doubled by a busy
        #: poll that found nothing, halved by one that found frames
        self.busy_frames = BUSY_FRAMES

    # ------------------------------------------------------------ time
    def now(self) -> int:
        """Seconds since the datapath started (the L2 tables' clock)."""
        return int(time.monotonic() - self.t0)

    # ------------------------------------------------------------ control side
    @property
    def running(self) -> bool:
        """The datapath thread runs (otherwise calls run in the caller's thread)."""
        return self._thread is not None and self._thread.is_alive()

    def call(self, fn: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Run ``fn`` on the datapath thread between bursts and return its result."""
        if not self.running or threading.current_thread() is self._thread:
            return fn()
        fut: Future = Future()
        self._calls.append((fn, fut))
        os.eventfd_write(self._wake_fd, 1)
        return fut.result(timeout)

    def flows_published(self) -> None:
        """A bridge published flows: the thread takes them before its next burst."""
        self._flows_pending = True
        os.eventfd_write(self._wake_fd, 1)

    def start(self) -> None:
        """Start the datapath thread."""
        if self._thread is not None:
            return
        self._running = True
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (ports stay open; their bridges close them)."""
        self._running = False
        if self._thread is not None:
            os.eventfd_write(self._wake_fd, 1)
            self._thread.join(5)
            self._thread = None

    def close(self) -> None:
        """Stop and release the epoll and eventfd."""
        self.stop()
        self._epoll.close()
        os.close(self._wake_fd)

    # ------------------------------------------------------------ bridges
    def add_bridge(self, name: str, mac_table_size: int = DEFAULT_LIMIT, mac_aging_time: int = DEFAULT_AGING,
                   fail_secure: bool = False) -> DpBridge:
        """A new bridge in the datapath (secure from now on when ``fail_secure``)."""
        def add() -> DpBridge:
            try:
                index = self.bridges.index(None)
            except ValueError:
                index = len(self.bridges)
                self.bridges.append(None)
            br = DpBridge(self, index, name, mac_table_size, mac_aging_time, fail_secure)
            self.bridges[index] = br
            self._size_for_bridges(len(self.bridges))
            self.rebuild()
            return br

        return self.call(add)

    def remove_bridge(self, br: DpBridge) -> None:
        """Forget bridge ``br`` (its ports detached already) and the megaflows that went through it."""
        def remove() -> None:
            if self.upcalls is not None:
                self.upcalls.remove_bridge(self.tables(), br.index)
            for port in list(self.ports):
                if port is not None and self.port_bridge[port.port_no] == br.index:
                    self.detach(port)
            self.bridges[br.index] = None
            self.rebuild()

        self.call(remove)

    def tables(self) -> list[TableSet | None]:
        """The live tables of each bridge, by bridge number."""
        return [b.flows if b is not None else None for b in self.bridges]

    def rebuild(self) -> None:
        """Recompute what follows from the ports, the bridges and their modes: each port's burst group and the
        translator's view (datapath thread, after any such change)."""
        self._pair_patch_ports()
        groups = np.full(len(self.ports), G_DROP, dtype=np.int64)
        modes = []
        for b, br in enumerate(self.bridges):
            mode = br.mode if br is not None else MODE_DROP
            modes.append(mode)
            mine = self.port_bridge == b
            groups[mine] = G_TABLES if mode == MODE_TABLES else G_DROP if mode == MODE_DROP else G_NORMAL + b
        self.port_group = groups
        self.group_of = groups.tolist()
        used = {int(groups[p]) for p, port in enumerate(self.ports) if port is not None}
        self.single_group = used.pop() if len(used) == 1 else -1
        self.rx_ports = [p for p in self.ports if p is not None and not p.deviceless]
        self._tunnel_rebuild()
        self.xbridges = Bridges(self.tables(), modes,
                                [br.normal_rank if br is not None else -1 for br in self.bridges],
                                self.port_bridge.copy(), self.peer.copy(), self.tunnel_configs, self.underlay)

    def _pair_patch_ports(self) -> None:
        """Each patch port's peer: the patch port its ``peer`` names, when that one names it back."""
        by_name = {p.name: p for p in self.ports if isinstance(p, PatchPort)}
        peer = np.full(len(self.ports), -1, dtype=np.int64)
        for port in by_name.values():
            other = by_name.get(port.peer)
            paired = other is not None and other.peer == port.name
            if paired:
                peer[port.port_no] = other.port_no
            port.set_paired(paired)
        self.peer = peer
        self.patch_ports = np.array(sorted(p.port_no for p in by_name.values()), dtype=np.int64)
        if self.patch_counts.shape[0] != len(self.ports):
            self.patch_counts = np.zeros((len(self.ports), PC_FIELDS), dtype=np.int64)

    # ------------------------------------------------------------ ports (datapath thread)
    def attach(self, port: Port, br: DpBridge) -> int:
        """Give ``port`` the lowest free port number, in bridge ``br``, and start polling it; returns the number."""
        try:
            port_no = self.ports.index(None)
        except ValueError:
            port_no = len(self.ports)
            self.ports.append(None)
            for b in self.bridges:
                if b is not None:
                    b.vlan_map = _grown(b.vlan_map, -1)
            self.drops = _grown(self.drops, 0)
            fd = np.zeros((len(self.ports) + 1, N_DROP_REASONS), dtype=np.int64)
            fd[:-2], fd[-1] = self.fdrops[:-1], self.fdrops[-1]
            self.fdrops = fd
            self.port_flags = _grown(self.port_flags, PF_DOWN)
            self.port_bridge = _grown(self.port_bridge, -1)
            self.peer = _grown(self.peer, -1)
            self._alloc_queues(len(self.ports))
        self.drops[port_no] = 0
        self.fdrops[port_no] = 0
        self.port_flags[port_no] = PF_PATCH if isinstance(port, PatchPort) else PF_TUNNEL if isinstance(
            port, TunnelPort) else 0
        self.port_bridge[port_no] = br.index
        port.port_no = port_no
        port.set_busy_frames(self.busy_frames)
        self.ports[port_no] = port
        for fd in port.wakeup_fds():
            self._epoll.register(fd, select.EPOLLIN)
            self._fd_port[fd] = port
        self._flush_megaflows()
        self.rebuild()
        return port_no

    def detach(self, port: Port) -> None:
        """Stop polling ``port`` and forget what its bridge learned on it (static entries included)."""
        port_no = port.port_no
        for fd in port.wakeup_fds():
            if self._fd_port.pop(fd, None) is not None:
                self._epoll.unregister(fd)
        b = int(self.port_bridge[port_no])
        br = self.bridges[b] if 0 <= b < len(self.bridges) else None
        if br is not None:
            br.vlan_map[port_no] = -1
            l2_flush(br.l2, br.l2_info, port_no, True)
        self.port_flags[port_no] = PF_DOWN
        self.port_bridge[port_no] = -1
        self.ports[port_no] = None
        self._flush_megaflows()
        self.rebuild()

    def set_port_flag(self, port_no: int, flag: int, on: bool) -> None:
        """Set or clear a ``PF_*`` flag of a port (LOCAL, down)."""
        if 0 <= port_no < len(self.port_flags):
            before = int(self.port_flags[port_no])
            if on:
                self.port_flags[port_no] |= flag
            else:
                self.port_flags[port_no] &= ~flag
            if int(self.port_flags[port_no]) != before:
                if flag & PF_LOCAL:     # a bridge's LOCAL port: where tunnels leave and terminate
                    self._tunnel_rebuild()
                self._flush_megaflows()

    # ------------------------------------------------------------ the loop
    def poll_once(self, ports: list[Port | None] | None = None) -> int:
        """One iteration: receive from ``ports`` (default: every port with a device), switch, transmit; returns
        frames switched."""
        pool = self.pool
        burst = self.burst
        total = 0
        for port in self.rx_ports if ports is None else ports:
            if port is not None and total < MAX_BURST:
                total += port.rx_burst(pool, burst, total, min(BURST, MAX_BURST - total))
        if total == 0:
            return 0
        self._n_extra = 0
        now = self.now()
        n = total
        group = -1      # the group of every frame, when the ports polled share one
        if ports is not None and self.single_group < 0:
            groups = {self.group_of[p.port_no] for p in ports if p is not None}
            group = groups.pop() if len(groups) == 1 else -1
        if self.term is not None and (ports is None or any(p is not None and p.port_no in self.term_ports
                                                           for p in ports)):
            burst, n = self._terminate(burst, total)
        if n:
            self._process(burst, n, now, group=group)
            self._send(now)
            pool.free(burst, n)
        if self.tn:       # decapsulated frames: their own round, in the tunnel ports' bridges
            tn, self.tn = self.tn, 0
            self._n_extra = 0
            self._process(self.tburst, tn, now, tunneled=True, group=self.tunnel_group)
            self._send(now)
            pool.free(self.tburst, tn)
        return total

    def _flush_megaflows(self) -> None:
        """Forget every megaflow (their translations depended on ports that changed)."""
        if self.upcalls is not None:
            self.upcalls.flush(self.tables())

    def sync_stats(self) -> None:
        """Credit the rules with what the megaflows forwarded until now (on the datapath thread)."""
        if self.upcalls is not None:
            self.call(lambda: self.upcalls.push_stats(self.tables()) if self.upcalls is not None else None)

    def _run_calls(self) -> None:
        while self._calls:
            fn, fut = self._calls.popleft()
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    fut.set_exception(exc)

    def _take_flows(self) -> None:
        self._flows_pending = False
        for br in list(self.bridges):
            if br is not None and br._next_flows is not None:
                try:
                    br.take_flows()
                except Exception:  # a bug must not kill forwarding: the old flows stay, log it
                    log.exception("datapath: bridge %s: taking new flows failed", br.name)

    def _age(self) -> None:
        t = time.monotonic()
        if t - self._last_aging >= AGING_TICK:
            self._last_aging = t
            now = self.now()
            for br in self.bridges:
                if br is not None:
                    l2_age(br.l2, br.l2_info, now)
            if self.upcalls is not None:
                self.upcalls.expire(self.tables(), now)
                self.upcalls.cache.resort()

    def _ready_ports(self, timeout: float) -> list[Port]:
        """Wait up to ``timeout`` seconds in epoll; the ports whose wake-up fds are readable."""
        ready: list[Port] = []
        for fd, _ev in self._epoll.poll(timeout):
            if fd == self._wake_fd:
                try:
                    os.eventfd_read(self._wake_fd)
                except BlockingIOError:
                    pass
                continue
            port = self._fd_port.get(fd)
            if port is not None and port not in ready:
                ready.append(port)
        return ready

    def _run(self) -> None:
        """Adaptive polling: busy-poll every port while bursts keep coming, epoll otherwise.

        While an iteration moves at least ``busy_frames`` frames, the next one polls every port at once (a
        PMD). Below that, the thread waits in epoll (up to ``AGING_TICK``) for the ports that have work and
        polls only those: an idle datapath sleeps, and a lightly loaded one pays one epoll call per batch
        instead of spinning. ``busy_frames`` adapts: a busy poll that finds nothing doubles it (bursts that
        arrive whole, then nothing, wake the thread once each), one that finds frames halves it (down to
        ``BUSY_FRAMES``).
        """
        pmd = self.pmd
        busy = False
        while self._running:
            if self._flows_pending:
                self._take_flows()
            if self._calls:
                self._run_calls()
            self._age()
            if busy:
                ports = None
            else:
                pmd.sleeps += 1
                ports = self._ready_ports(AGING_TICK)    # at once when a port (or a call's wake-up) is ready
                if not ports:
                    continue
            t = time.perf_counter_ns()
            try:
                n = self.poll_once(ports)
            except Exception:  # a bug must not kill forwarding for good: log, count, go on
                log.exception("datapath %s: iteration failed", self.name)
                n = 0
            pmd.iterations += 1
            if n:
                pmd.busy_polls += 1
                pmd.packets += n
                pmd.bursts += 1
                pmd.busy_ns += time.perf_counter_ns() - t
            else:
                pmd.idle_polls += 1
            if busy:
                want = max(self.busy_frames // 2, BUSY_FRAMES) if n else min(2 * self.busy_frames, BURST)
                if want != self.busy_frames:
                    self._set_busy_frames(want)
            busy = n >= self.busy_frames
        self._run_calls()

    def _set_busy_frames(self, n: int) -> None:
        """Busy-poll after iterations of ``n`` frames or more (and tell the ports)."""
        self.busy_frames = n
        for port in self.rx_ports:
            port.set_busy_frames(n)
