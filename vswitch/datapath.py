"""The datapath: one thread per bridge moving bursts port -> pipeline -> ports, with adaptive polling.

```
        ┌────────── busy-poll while bursts come back non-empty ──────────┐
        ▼                                                                │
 rx_burst of every port ─► switch_burst (NORMAL: parse, VLAN, learn, lookup, sort) ─► tx_burst per port
        ▲          │  or, with OpenFlow flows (``_of_burst``):                        ▲
        │          └► extract_burst ─► megaflow lookup (EMC, subtables) ─► execute_burst ─┤
        │                     miss ─► Upcalls.handle_misses: translate, install ─┘    │ NORMAL list ─► switch_burst
        │                                                                        └► packet-ins (rate-limited)
        └─ epoll on the ports' wake-up fds + the control eventfd ◄── fewer than BUSY_FRAMES
```

The OpenFlow tables (``ofproto.tables``) are compiled by the OpenFlow agent into a ``TableSet`` and
swapped in between bursts (``set_flows``), which first removes the megaflows the change may
translate differently (``xlate.upcall.Upcalls.revalidate``). A bridge whose only flow is
``priority=0 actions=NORMAL`` (OVS's default), or a standalone bridge that lost its controller
(fail-open), runs ``switch_burst`` alone. Misses are translated on this thread, within the burst they
arrived in (as OVS's userspace datapath runs upcalls on its PMD threads): no frame waits or is
re-ordered.

A ``fail_secure`` datapath (``Bridge.fail_mode=secure``) is secure from its construction: it forwards only by
flows that were compiled for a secure bridge (``set_flows(..., secure=True)``), never fails open, and drops
every frame while it has none, so no frame crosses it before a flow says so, whatever order the control
plane's steps come in.

The datapath thread owns every array it touches (pool, keys, L2 table, VLAN map, megaflows, queues).
The control side never writes them: it queues a function with ``call()`` and the datapath
runs it between bursts, so the hot path takes no lock. Per-burst Python work is O(ports);
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

from backends.pool import META_IN_PORT as POOL_META_IN_PORT
from backends.pool import META_LEN as POOL_META_LEN
from backends.pool import PacketPool
from backends.port import Port
from classifier import parse as _parse
from classifier.drops import N_DROPS
from classifier.keys import NKEYS
from classifier.l2switch import switch_burst
from classifier.l2table import (
    DEFAULT_AGING,
    DEFAULT_LIMIT,
    I_AGING,
    I_LEARNED,
    I_LIMIT,
    l2_age,
    l2_copy,
    l2_flush,
    make_l2table,
)
from dpif.actions import (
    DR_RX_INVALID,
    DR_TABLE_MISS,
    META_HEAD,
    N_DROP_REASONS,
    N_NORMAL,
    N_USERSPACE,
    SIDE_NORMAL,
    SIDE_ROWS,
    SIDE_UP_COOKIE,
    SIDE_UP_MAX_LEN,
    SIDE_UP_SLOT,
    append_queues,
    count_rule,
    execute_burst,
)
from dpif.extract import extract_burst
from dpif.fastpath import hit_burst
from dpif.key import KEY_WORDS
from ofproto.rules import Action
from ofproto.tables import FlowTables, TableSet
from xlate.translate import PF_DOWN, UpcallCookies, translate_actions
from xlate.upcall import Upcalls

if (POOL_META_LEN, POOL_META_IN_PORT) != (_parse.META_LEN, _parse.META_IN_PORT):
    raise ImportError("backends.pool and classifier.parse disagree on the slot metadata layout")

log = logging.getLogger(__name__)

BURST = 256              # frames taken from one port per poll
MAX_BURST = 1024         # frames switched per iteration, over all ports
BUSY_FRAMES = 32         # an iteration moving this many frames makes the next one poll every port
AGING_TICK = 1.0         # seconds between aging passes (and the longest epoll wait)
PACKET_IN_RATE = 1000    # packet-ins per second to the controllers unless Controller.controller_rate_limit says
PACKET_IN_BURST = 250
PACKET_IN_QUEUE = 1024   # packet-ins waiting for the agent, at most

#: drops of the datapath that belong to no ingress port (VPP-style named counters)
DP_DROP_NAMES = ("packet_in_rate_limited", "packet_in_queue_full", "normal_queue_full", "packet_out_no_free_slot",
                 "packet_out_normal_without_in_port")


def _grown(a: np.ndarray, fill: int) -> np.ndarray:
    """``a`` with one more row (per-port arrays when a port number is added), the new row ``fill``."""
    out = np.full((a.shape[0] + 1, *a.shape[1:]), fill, dtype=a.dtype)
    out[:-1] = a
    return out


class PacketIn:
    """A frame for the controllers: its first bytes, where it came from and which flow sent it."""

    __slots__ = ("data", "total_len", "port_no", "flow", "reason", "table_id")

    def __init__(self, data: bytes, total_len: int, port_no: int, flow: object, reason: int, table_id: int) -> None:
        self.data = data
        self.total_len = total_len
        self.port_no = port_no      # dense datapath port (no port's number: a packet-out from the controller)
        self.flow = flow            # ofproto.rules.Flow (None: a table miss, for OpenFlow 1.0 controllers)
        self.reason = reason        # OFPR_*
        self.table_id = table_id


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


class Datapath:
    """The forwarding engine of one bridge: ports by number, the L2 table, the VLAN map, the thread."""

    def __init__(
        self,
        name: str,
        n_slots: int = 8192,
        slot_size: int = 2048,
        mac_table_size: int = DEFAULT_LIMIT,
        mac_aging_time: int = DEFAULT_AGING,
        fail_secure: bool = False,
    ) -> None:
        self.name = name
        #: Bridge.fail_mode=secure: forward only by flows made for a secure bridge, never fail open
        self.fail_secure = fail_secure
        self.pool = PacketPool(n_slots, slot_size)
        self.keys = np.zeros((n_slots, NKEYS), dtype=np.uint64)
        self.burst = np.zeros(MAX_BURST, dtype=np.int32)
        self.l2, self.l2_info = make_l2table(mac_table_size, mac_aging_time)
        self.ports: list[Port | None] = []
        self.vlan_map = np.zeros((0, 2, 4096), dtype=np.int16)
        self.drops = np.zeros((0, N_DROPS), dtype=np.int64)
        self.port_flags = np.zeros(0, dtype=np.int64)    # xlate.translate PF_* per port
        # flow drops by ingress port (dpif.actions.DROP_REASONS); the last row: frames of no port (packet-out)
        self.fdrops = np.zeros((1, N_DROP_REASONS), dtype=np.int64)
        self.dp_drops = dict.fromkeys(DP_DROP_NAMES, 0)
        # OpenFlow: the live flow tables (None: no flow tables, every frame goes to NORMAL)
        self.flows: TableSet | None = None
        self.normal_flow = -1    # >= 0: the only flow is priority-0 NORMAL (its rank): switch_burst alone
        self.bypass = False      # fail-open: switch_burst alone, flows kept but not used
        self.flows_secure = False  # the live flows were compiled for a secure bridge
        # the megaflow datapath (made when the first flow set other than NORMAL arrives)
        self.cookies = UpcallCookies()
        self.upcalls: Upcalls | None = None
        self.dkeys = np.zeros((n_slots, KEY_WORDS), dtype=np.uint64)
        self.reasons = np.zeros(MAX_BURST, dtype=np.int32)
        self.good = np.zeros(MAX_BURST, dtype=np.int32)
        self.out_entry = np.zeros(MAX_BURST, dtype=np.int64)
        self.prog_index = np.zeros((MAX_BURST, 2), dtype=np.int64)
        self.xside = np.zeros((SIDE_ROWS, 2 * MAX_BURST), dtype=np.int32)
        self.xside_n = np.zeros(3, dtype=np.int64)   # NORMAL, USERSPACE, fresh slots (hit_burst)
        self.extra = np.zeros(4 * MAX_BURST, dtype=np.int32)
        self.packet_ins: collections.deque[PacketIn] = collections.deque()
        self.on_packet_in: Callable[[], None] = lambda: None
        self.pi_rate = float(PACKET_IN_RATE)
        self.pi_burst = float(PACKET_IN_BURST)
        self._pi_tokens = self.pi_burst
        self._pi_last = time.monotonic()
        self._next_flows: tuple[FlowTables, TableSet, int, bool, bool] | None = None
        self._alloc_queues(0)
        # Load (or compile) the kernels now, not in the first burst.
        switch_burst(self.pool.data, self.pool.meta, self.burst, 0, self.keys, self.l2, self.l2_info,
                     np.zeros((1, 2, 4096), dtype=np.int16), 0, np.zeros((1, N_DROPS), dtype=np.int64),
                     np.zeros((2, MAX_BURST), dtype=np.int32), np.zeros((2, 2), dtype=np.int32))
        l2_age(self.l2, self.l2_info, 0)
        self.pool.free(self.burst, 0)
        self.pmd = PmdStats()
        self.t0 = time.monotonic()
        self._calls: collections.deque[tuple[Callable[[], Any], Future]] = collections.deque()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll = select.epoll()
        self._epoll.register(self._wake_fd, select.EPOLLIN)
        self._fd_port: dict[int, Port] = {}
        self._thread: threading.Thread | None = None
        self._running = False
        self._last_aging = 0.0

    # ------------------------------------------------------------ time
    def now(self) -> int:
        """Seconds since the datapath started (the L2 table's clock)."""
        return int(time.monotonic() - self.t0)

    # ------------------------------------------------------------ control side
    def call(self, fn: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Run ``fn`` on the datapath thread between bursts and return its result."""
        if self._thread is None or not self._thread.is_alive() or threading.current_thread() is self._thread:
            return fn()
        fut: Future = Future()
        self._calls.append((fn, fut))
        os.eventfd_write(self._wake_fd, 1)
        return fut.result(timeout)

    def start(self) -> None:
        """Start the datapath thread."""
        if self._thread is not None:
            return
        self._running = True
        self._thread = threading.Thread(target=self._run, name=f"datapath-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (ports stay open; the bridge closes them)."""
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

    # ------------------------------------------------------------ ports (datapath thread)
    def _alloc_queues(self, n_ports: int) -> None:
        self.out = np.zeros((2, MAX_BURST * max(1, n_ports)), dtype=np.int32)
        self.out_slots = self.out[0]
        self.out_vlans = self.out[1]
        self.out_start = np.zeros((2, n_ports + 1), dtype=np.int32)
        # switch_burst's queues for the frames flows hand to NORMAL (merged into ``out`` afterwards)
        self.out2 = np.zeros((2, 2 * MAX_BURST * max(1, n_ports)), dtype=np.int32)
        self.out_start2 = np.zeros((2, n_ports + 1), dtype=np.int32)

    def attach(self, port: Port) -> int:
        """Give ``port`` the lowest free port number and start polling it; returns the number."""
        try:
            port_no = self.ports.index(None)
        except ValueError:
            port_no = len(self.ports)
            self.ports.append(None)
            self.vlan_map = _grown(self.vlan_map, -1)
            self.drops = _grown(self.drops, 0)
            fd = np.zeros((len(self.ports) + 1, N_DROP_REASONS), dtype=np.int64)
            fd[:-2], fd[-1] = self.fdrops[:-1], self.fdrops[-1]
            self.fdrops = fd
            self.port_flags = _grown(self.port_flags, PF_DOWN)
            self._alloc_queues(len(self.ports))
        self.drops[port_no] = 0
        self.fdrops[port_no] = 0
        self.port_flags[port_no] = 0
        port.port_no = port_no
        self.ports[port_no] = port
        for fd in port.wakeup_fds():
            self._epoll.register(fd, select.EPOLLIN)
            self._fd_port[fd] = port
        self._flush_megaflows()
        return port_no

    def detach(self, port: Port) -> None:
        """Stop polling ``port`` and forget what was learned on it (static entries included)."""
        port_no = port.port_no
        for fd in port.wakeup_fds():
            if self._fd_port.pop(fd, None) is not None:
                self._epoll.unregister(fd)
        self.vlan_map[port_no] = -1
        self.port_flags[port_no] = PF_DOWN
        self.ports[port_no] = None
        l2_flush(self.l2, self.l2_info, port_no, True)
        self._flush_megaflows()

    # ------------------------------------------------------------ the loop
    def poll_once(self, ports: list[Port | None] | None = None) -> int:
        """One iteration: receive from ``ports`` (default all), switch, transmit; returns frames switched."""
        pool = self.pool
        burst = self.burst
        total = 0
        for port in self.ports if ports is None else ports:
            if port is not None and total < MAX_BURST:
                total += port.rx_burst(pool, burst, total, min(BURST, MAX_BURST - total))
        if total == 0:
            return 0
        flows = self.flows
        now = self.now()
        if self.fail_secure and not self.flows_secure:
            self._drop_unflowed(burst, total)   # secure, and no flows made for a secure bridge (yet)
        elif flows is None or self.bypass or self.normal_flow >= 0:
            switch_burst(pool.data, pool.meta, burst, total, self.keys, self.l2, self.l2_info,
                         self.vlan_map, now, self.drops, self.out, self.out_start)
            if flows is not None and not self.bypass:
                count_rule(pool.meta, burst, total, flows.counters, flows.table_counters, self.normal_flow, now)
            self._transmit()
        else:
            self._of_burst(flows, burst, total, now)
        pool.free(burst, total)
        return total

    def _drop_unflowed(self, burst: np.ndarray, n: int) -> None:
        """Drop ``burst[:n]`` on a secure bridge that has no flows for it, counted as table misses by ingress port."""
        np.add.at(self.fdrops[:, DR_TABLE_MISS], self.pool.meta[burst[:n], POOL_META_IN_PORT], 1)

    def _transmit(self) -> None:
        pool = self.pool
        start, count = self.out_start
        out_slots, out_vlans = self.out_slots, self.out_vlans
        for port_no, port in enumerate(self.ports):
            if count[port_no] and port is not None:
                port.tx_burst(pool, out_slots, out_vlans, int(start[port_no]), int(count[port_no]))

    def _of_burst(self, ts: TableSet, burst: np.ndarray, n: int, now: int, program: np.ndarray | None = None,
                  normal: bool = True) -> None:
        """The OpenFlow pipeline over ``burst[:n]``: keys, megaflows (upcalls for misses), their actions,
        NORMAL, packet-ins and transmit. ``program``: run it on every frame instead (a packet-out). The
        burst stays allocated; the fresh slots the actions took are freed."""
        pool = self.pool
        meta = pool.meta
        if program is None:
            up = self.upcalls
            if up is None:
                up = self.upcalls = Upcalls(cookies=self.cookies)
            cache = up.cache
            r = hit_burst(pool.data, meta, burst, n, self.dkeys, self.reasons, cache.st, cache.ent, cache.buckets,
                          cache.emc, self.out_entry, now, self.prog_index, cache.actions, self.out, self.out_start,
                          self.fdrops, pool.free_stack, pool.free_top, self.extra, self.xside, self.xside_n)
            if r == 0:
                n_extra = int(self.xside_n[2])
            else:
                if r < 0:
                    burst, n = self._drop_invalid(burst, n)
                    cache.lookup(self.dkeys, burst, n, meta, self.out_entry, now)
                up.handle_misses(ts, self.port_flags, self.dkeys, burst, n, meta, self.out_entry, now)
                up.programs(self.out_entry, n, self.prog_index)
                n_extra = execute_burst(pool.data, meta, burst, n, self.prog_index, cache.actions, self.out,
                                        self.out_start, self.fdrops, pool.free_stack, pool.free_top, self.extra,
                                        self.xside, self.xside_n)
        else:
            self.prog_index[:n, 0] = 0
            self.prog_index[:n, 1] = len(program)
            n_extra = execute_burst(pool.data, meta, burst, n, self.prog_index, program, self.out, self.out_start,
                                    self.fdrops, pool.free_stack, pool.free_top, self.extra, self.xside,
                                    self.xside_n)
        n_normal = int(self.xside_n[N_NORMAL])
        if n_normal:
            if normal:
                switch_burst(pool.data, meta, self.xside[SIDE_NORMAL], n_normal, self.keys, self.l2, self.l2_info,
                             self.vlan_map, now, self.drops, self.out2, self.out_start2)
                lost = append_queues(self.out, self.out_start, self.out2, self.out_start2)
                if lost:
                    self.dp_drops["normal_queue_full"] += lost
            else:
                self.dp_drops["packet_out_normal_without_in_port"] += n_normal
        n_up = int(self.xside_n[N_USERSPACE])
        if n_up:
            self._packet_ins(n_up)
        self._transmit()
        if n_extra:
            pool.free(self.extra, n_extra)

    def _drop_invalid(self, burst: np.ndarray, n: int) -> tuple[np.ndarray, int]:
        """Count the frames key extraction refused (runts, truncated tags) and return the others."""
        bad = self.reasons[:n] != 0
        np.add.at(self.fdrops[:, DR_RX_INVALID], self.pool.meta[burst[:n][bad], POOL_META_IN_PORT], 1)
        keep = burst[:n][~bad]
        self.good[:len(keep)] = keep
        return self.good, len(keep)

    def _flush_megaflows(self) -> None:
        """Forget every megaflow (their translations depended on ports that changed)."""
        if self.upcalls is not None:
            self.upcalls.flush(self.flows)

    def sync_stats(self) -> None:
        """Credit the rules with what the megaflows forwarded until now (on the datapath thread)."""
        if self.upcalls is not None:
            self.call(lambda: self.upcalls.push_stats(self.flows) if self.upcalls is not None else None)

    def _packet_ins(self, n: int) -> None:
        """Copy up to the rate limit's worth of packet-ins for the agent; count the rest by reason."""
        t = time.monotonic()
        self._pi_tokens = min(self.pi_burst, self._pi_tokens + (t - self._pi_last) * self.pi_rate)
        self._pi_last = t
        take = min(n, int(self._pi_tokens))
        if take < n:
            self.dp_drops["packet_in_rate_limited"] += n - take
        room = PACKET_IN_QUEUE - len(self.packet_ins)
        if take > room:
            self.dp_drops["packet_in_queue_full"] += take - room
            take = max(room, 0)
        if take <= 0:
            return
        self._pi_tokens -= take
        side, data, meta = self.xside, self.pool.data, self.pool.meta
        by_id = self.cookies.by_id
        for i in range(take):   # a packet-in is a slow-path message: per-frame Python, bounded by the rate
            slot = int(side[SIDE_UP_SLOT, i])
            head = int(meta[slot, META_HEAD])
            length = int(meta[slot, POOL_META_LEN])
            keep = min(length, int(side[SIDE_UP_MAX_LEN, i]))
            up = by_id[int(side[SIDE_UP_COOKIE, i])]
            self.packet_ins.append(PacketIn(bytes(data[slot, head:head + keep]), length,
                                            int(meta[slot, POOL_META_IN_PORT]), up.flow, up.reason, up.table_id))
        self.on_packet_in()

    # ------------------------------------------------------------ OpenFlow (datapath thread, via call())
    def set_flows(self, tables: FlowTables, compiled: TableSet, normal_flow: int, bypass: bool,
                  secure: bool = False) -> None:
        """Make ``compiled`` the live flows (counters carried over); ``normal_flow`` >= 0 when it is only
        the priority-0 NORMAL flow; ``bypass``: fail-open, NORMAL for every frame; ``secure``: compiled for a
        secure bridge (a ``fail_secure`` datapath drops everything while its flows were not, and never
        fails open). Megaflows the new tables may translate differently are removed first."""
        if self.upcalls is not None and self.flows is not compiled:
            self.upcalls.revalidate(self.flows, compiled)
        tables.activate(compiled)
        self.flows = compiled
        self.normal_flow = normal_flow
        self.bypass = bypass and not secure
        self.flows_secure = secure

    def set_fail_secure(self, on: bool) -> None:
        """``Bridge.fail_mode``: secure (``on``) or standalone; in force for every burst that starts after the
        call, and once it returns no burst started before it is still running."""
        self.fail_secure = on   # read by the datapath thread before every burst
        self.call(lambda: None)

    def publish_flows(self, tables: FlowTables, compiled: TableSet, normal_flow: int, bypass: bool,
                      secure: bool = False) -> None:
        """Hand new flows to the datapath thread, which swaps them in before its next burst (the caller
        does not wait; a newer publication replaces one not taken yet)."""
        item = (tables, compiled, normal_flow, bypass, secure)
        if self._thread is None or not self._thread.is_alive():
            self.set_flows(*item)
            return
        self._next_flows = item
        os.eventfd_write(self._wake_fd, 1)

    def _take_flows(self) -> None:
        item, self._next_flows = self._next_flows, None
        if item is not None:
            self.set_flows(*item)

    def set_port_flag(self, port_no: int, flag: int, on: bool) -> None:
        """Set or clear a ``PF_*`` flag of a port (LOCAL, down)."""
        if 0 <= port_no < len(self.port_flags):
            before = int(self.port_flags[port_no])
            if on:
                self.port_flags[port_no] |= flag
            else:
                self.port_flags[port_no] &= ~flag
            if int(self.port_flags[port_no]) != before:
                self._flush_megaflows()

    def packet_out(self, frame: bytes, port_no: int, actions: tuple[Action, ...], ts: TableSet) -> None:
        """Run ``actions`` on ``frame`` (``output:TABLE``: the tables of ``ts``) as if received on
        ``port_no`` (-1: from the controller, on no port). Runs on the datapath thread (``call``)."""
        pool = self.pool
        one = np.zeros(1, dtype=np.int32)
        if pool.alloc(one, 0, 1) != 1:
            self.dp_drops["packet_out_no_free_slot"] += 1
            return
        try:
            in_port = port_no if port_no >= 0 else len(self.port_flags)
            pool.put(int(one[0]), frame[: pool.slot_size], in_port)
            extract_burst(pool.data, pool.meta, one, 1, self.dkeys, self.reasons)
            key = [int(w) for w in self.dkeys[int(one[0])]]
            res = translate_actions(ts, key, actions, self.port_flags, self.cookies)
            self._of_burst(ts, one, 1, self.now(), program=res.program(), normal=port_no >= 0)
        finally:
            pool.free(one, 1)

    def _run_calls(self) -> None:
        while self._calls:
            fn, fut = self._calls.popleft()
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    fut.set_exception(exc)

    def _age(self) -> None:
        t = time.monotonic()
        if t - self._last_aging >= AGING_TICK:
            self._last_aging = t
            l2_age(self.l2, self.l2_info, self.now())
            if self.upcalls is not None:
                self.upcalls.expire(self.flows, self.now())
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

        While an iteration moves at least ``BUSY_FRAMES`` frames, the next one polls every port
        at once (a PMD). Below that, the thread asks epoll which ports have work: it polls only
        those, and blocks (up to ``AGING_TICK``) when none has, so an idle bridge sleeps and a
        lightly loaded one pays one epoll call per batch instead of spinning.
        """
        pmd = self.pmd
        busy = False
        while self._running:
            if self._next_flows is not None:
                try:
                    self._take_flows()
                except Exception:  # a bug must not kill forwarding: the old flows stay, log it
                    log.exception("datapath %s: taking new flows failed", self.name)
            if self._calls:
                self._run_calls()
            self._age()
            if busy:
                ports = None
            else:
                ports = self._ready_ports(0)
                if not ports:
                    if self._calls:  # its wake-up was consumed just now: run it before sleeping
                        continue
                    pmd.sleeps += 1
                    ports = self._ready_ports(AGING_TICK)
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
            busy = n >= BUSY_FRAMES
        self._run_calls()

    # ------------------------------------------------------------ settings
    def set_mac_table(self, size: int, aging: int) -> None:
        """Apply ``mac-table-size`` and ``mac-aging-time`` (a new size keeps the entries that fit)."""
        if size != int(self.l2_info[I_LIMIT]):
            l2, info = make_l2table(size, aging)
            l2_copy(self.l2, l2, info)  # keep what was learned, up to the new limit
            info[I_LEARNED:] = self.l2_info[I_LEARNED:]
            self.l2, self.l2_info = l2, info
        else:
            self.l2_info[I_AGING] = aging
