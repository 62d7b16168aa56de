"""The datapath: one thread for every bridge, moving bursts port -> pipeline -> ports, with adaptive polling.

```
        ┌────────── busy-poll while bursts come back non-empty ─────────────────────────────────┐
        ▼                                                                                       │
 rx_burst of every port ─► group_burst (by the ingress port's bridge) ─┬─► megaflow bridges:    │
        ▲                                                              │   extract ─► megaflow lookup ─► execute
        │                                                              │     miss ─► Upcalls.handle_misses
        │                                                              │     NORMAL list ─► switch_list per bridge
        │                                                              │     USERSPACE ─► packet-ins per bridge
        │                                                              ├─► NORMAL-only bridge b: switch_burst(b)
        │                                                              └─► secure bridge without flows: drop
        │                                                                    ▼
        └─ epoll on the ports' wake-up fds + the control eventfd      tx_burst per port
                                                                            │ queued for a patch port:
                               the next round, ingress = the peer  ◄─ patch_handover (copy, VLAN edit)
```

One ``Datapath`` serves every bridge (as OVS's ``netdev@ovs-netdev``): one thread, one packet pool, one
megaflow cache, and datapath port numbers shared by all bridges. A bridge is a ``DpBridge`` over it: its
L2 table and VLAN map (NORMAL), its live OpenFlow tables (``TableSet``), its fail-secure state and its
packet-in queue. A burst holds frames of several bridges; ``group_burst`` sorts it by the group of each
frame's ingress port (every megaflow bridge shares one group, the cache's keys carry the ``in_port``; a
NORMAL-only bridge has its own; a secure bridge without flows drops), so each bridge's work is one slice
and no Python runs per frame. When every port is in one group the burst is used as it is.

The OpenFlow tables (``ofproto.tables``) are compiled by each bridge's OpenFlow agent into a ``TableSet``
and swapped in between bursts (``DpBridge.publish_flows``), which first removes the megaflows the change
may translate differently (``xlate.upcall.Upcalls.revalidate``). A bridge whose only flow is
``priority=0 actions=NORMAL`` (OVS's default), or a standalone bridge that lost its controller
(fail-open), runs ``switch_burst`` alone. Misses are translated on this thread, within the burst they
arrived in (as OVS's userspace datapath runs upcalls on its PMD threads): no frame waits or is
re-ordered.

Patch ports (``backends.patch``) join two bridges: an OpenFlow output to one continues the translation in
the peer's bridge (one megaflow for both); a frame NORMAL queues for one is handed to the peer's bridge
in a further round of the same iteration (``dpif.patch.patch_handover``), at most ``MAX_DEPTH`` rounds.

A ``fail_secure`` bridge (``Bridge.fail_mode=secure``) is secure from its construction: it forwards only by
flows that were compiled for a secure bridge (``set_flows(..., secure=True)``), never fails open, and drops
every frame while it has none, so no frame crosses it before a flow says so, whatever order the control
plane's steps come in.

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
from backends.pool import META_IN_PORT as POOL_META_IN_PORT
from backends.pool import META_LEN as POOL_META_LEN
from backends.pool import PacketPool
from backends.port import RX_BYTES, RX_PACKETS, TX_BYTES, TX_PACKETS, Port
from classifier import parse as _parse
from classifier.drops import N_DROPS
from classifier.keys import NKEYS
from classifier.l2switch import switch_burst, switch_list
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
from dpif.partition import group_burst, group_normal
from dpif.patch import PC_FIELDS, PC_NO_PEER, PC_NO_SLOT, PC_OVERFLOW, PC_TX_BYTES, PC_TX_PACKETS, patch_handover
from ofproto.rules import Action
from ofproto.tables import FlowTables, TableSet
from xlate.translate import (
    MAX_DEPTH,
    MODE_DROP,
    MODE_NORMAL,
    MODE_TABLES,
    PF_DOWN,
    PF_PATCH,
    Bridges,
    UpcallCookies,
    translate_actions,
)
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

#: drops of a bridge that belong to no ingress port (VPP-style named counters)
DP_DROP_NAMES = ("packet_in_rate_limited", "packet_in_queue_full", "normal_queue_full", "packet_out_no_free_slot",
                 "packet_out_normal_without_in_port", "patch_no_peer", "patch_no_free_slot", "patch_overflow",
                 "patch_too_deep")

# burst groups (``group_burst``): every megaflow bridge, drops, then one group per NORMAL-only bridge
G_TABLES = 0
G_DROP = 1
G_NORMAL = 2


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
        self.port_no = port_no      # datapath port of the bridge (no port's number: a packet-out from the controller)
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


class DpBridge:
    """One bridge inside the datapath: its L2 table and VLAN map, its live flows, its fail mode, its packet-ins.

    What all bridges share (the pool, the megaflow cache, port numbers, flags and drop counters, the
    thread) is reached through it, so a bridge's code reads as if the datapath were its own.
    """

    def __init__(self, datapath: Datapath, index: int, name: str, mac_table_size: int, mac_aging_time: int,
                 fail_secure: bool) -> None:
        self.datapath = datapath
        self.index = index
        self.name = name
        #: Bridge.fail_mode=secure: forward only by flows made for a secure bridge, never fail open
        self.fail_secure = fail_secure
        self.l2, self.l2_info = make_l2table(mac_table_size, mac_aging_time)
        # the VLAN map over every datapath port: a port of another bridge is in no VLAN of this one
        self.vlan_map = np.full((len(datapath.ports), 2, 4096), -1, dtype=np.int16)
        self.dp_drops = dict.fromkeys(DP_DROP_NAMES, 0)
        # OpenFlow: the live flow tables (None: no flow tables, every frame goes to NORMAL)
        self.flows: TableSet | None = None
        self.normal_flow = -1    # >= 0: the only flow is priority-0 NORMAL (its rank): switch_burst alone
        self.bypass = False      # fail-open: switch_burst alone, flows kept but not used
        self.flows_secure = False  # the live flows were compiled for a secure bridge
        self._next_flows: tuple[FlowTables, TableSet, int, bool, bool] | None = None
        self.packet_ins: collections.deque[PacketIn] = collections.deque()
        self.on_packet_in: Callable[[], None] = lambda: None
        self.pi_rate = float(PACKET_IN_RATE)
        self.pi_burst = float(PACKET_IN_BURST)
        self._pi_tokens = self.pi_burst
        self._pi_last = time.monotonic()
        #: the bridge's OpenFlow view (``vswitch.openflow.flows.BridgeFlows``), for traces that cross into it
        self.openflow: Any = None

    # ------------------------------------------------------------ what the bridges share
    @property
    def pool(self) -> PacketPool:
        return self.datapath.pool

    @property
    def pmd(self) -> PmdStats:
        return self.datapath.pmd

    @property
    def upcalls(self) -> Upcalls | None:
        return self.datapath.upcalls

    @property
    def cookies(self) -> UpcallCookies:
        return self.datapath.cookies

    @property
    def port_flags(self) -> np.ndarray:
        return self.datapath.port_flags

    @property
    def drops(self) -> np.ndarray:
        return self.datapath.drops

    @property
    def fdrops(self) -> np.ndarray:
        return self.datapath.fdrops

    def now(self) -> int:
        """Seconds since the datapath started (the L2 tables' clock)."""
        return self.datapath.now()

    def call(self, fn: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Run ``fn`` on the datapath thread between bursts and return its result."""
        return self.datapath.call(fn, timeout)

    def poll_once(self, ports: list[Port | None] | None = None) -> int:
        """One iteration of the datapath (every bridge's ports unless ``ports``)."""
        return self.datapath.poll_once(ports)

    def sync_stats(self) -> None:
        """Credit the rules with what the megaflows forwarded until now (on the datapath thread)."""
        self.datapath.sync_stats()

    # ------------------------------------------------------------ ports (datapath thread)
    def attach(self, port: Port) -> int:
        """Give ``port`` the lowest free datapath port number, in this bridge, and start polling it."""
        return self.datapath.attach(port, self)

    def detach(self, port: Port) -> None:
        """Stop polling ``port`` and forget what was learned on it (static entries included)."""
        self.datapath.detach(port)

    def set_port_flag(self, port_no: int, flag: int, on: bool) -> None:
        """Set or clear a ``PF_*`` flag of a port (LOCAL, down)."""
        self.datapath.set_port_flag(port_no, flag, on)

    # ------------------------------------------------------------ the bridge's mode
    @property
    def mode(self) -> int:
        """How the datapath handles this bridge's frames (``xlate.translate.MODE_*``)."""
        if self.fail_secure and not self.flows_secure:
            return MODE_DROP
        if self.flows is None or self.bypass or self.normal_flow >= 0:
            return MODE_NORMAL
        return MODE_TABLES

    @property
    def normal_rank(self) -> int:
        """The rank of the one NORMAL flow the shortcut credits (-1: none)."""
        return self.normal_flow if self.flows is not None and not self.bypass else -1

    # ------------------------------------------------------------ OpenFlow (datapath thread, via call())
    def set_flows(self, tables: FlowTables, compiled: TableSet, normal_flow: int, bypass: bool,
                  secure: bool = False) -> None:
        """Make ``compiled`` the live flows (counters carried over); ``normal_flow`` >= 0 when it is only
        the priority-0 NORMAL flow; ``bypass``: fail-open, NORMAL for every frame; ``secure``: compiled for a
        secure bridge (a ``fail_secure`` bridge drops everything while its flows were not, and never
        fails open). Megaflows the new tables may translate differently are removed first."""
        dp = self.datapath
        mode = self.mode
        up = dp.upcalls
        if up is not None and self.flows is not compiled:
            up.revalidate(dp.tables(), compiled, self.index)
        tables.activate(compiled)
        self.flows = compiled
        self.normal_flow = normal_flow
        self.bypass = bypass and not secure
        self.flows_secure = secure
        if up is not None and self.mode != mode:
            up.remove_bridge(dp.tables(), self.index)
        dp.rebuild()

    def set_fail_secure(self, on: bool) -> None:
        """``Bridge.fail_mode``: secure (``on``) or standalone; in force for every burst that starts after the
        call, and once it returns no burst started before it is still running."""
        def apply() -> None:
            mode = self.mode
            self.fail_secure = on
            up = self.datapath.upcalls
            if up is not None and self.mode != mode:
                up.remove_bridge(self.datapath.tables(), self.index)
            self.datapath.rebuild()

        self.call(apply)

    def publish_flows(self, tables: FlowTables, compiled: TableSet, normal_flow: int, bypass: bool,
                      secure: bool = False) -> None:
        """Hand new flows to the datapath thread, which swaps them in before its next burst (the caller
        does not wait; a newer publication replaces one not taken yet)."""
        item = (tables, compiled, normal_flow, bypass, secure)
        if not self.datapath.running:
            self.set_flows(*item)
            return
        self._next_flows = item
        self.datapath.flows_published()

    def take_flows(self) -> None:
        """Swap in the flows published last, if any (datapath thread)."""
        item, self._next_flows = self._next_flows, None
        if item is not None:
            self.set_flows(*item)

    def packet_out(self, frame: bytes, port_no: int, actions: tuple[Action, ...], ts: TableSet) -> None:
        """Run ``actions`` on ``frame`` (``output:TABLE``: the tables of ``ts``) as if received on
        ``port_no`` (-1: from the controller, on no port). Runs on the datapath thread (``call``)."""
        self.datapath.packet_out(self, frame, port_no, actions, ts)

    def xlate_bridges(self, ts: TableSet) -> Bridges:
        """The datapath's bridges for the translator, this one walking ``ts`` (a packet-out's or a trace's)."""
        return self.datapath.xbridges.replaced(self.index, ts, MODE_TABLES)

    # ------------------------------------------------------------ packet-ins (datapath thread)
    def take_packet_ins(self, n: int) -> int:
        """How many of ``n`` packet-ins the rate limit and the queue let through now (the rest counted)."""
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
        take = max(take, 0)
        self._pi_tokens -= take
        return take

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


class Datapath:
    """The forwarding engine of every bridge: ports by datapath number, the bridges, the pool, the thread."""

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
        self.keys = np.zeros((n_slots, NKEYS), dtype=np.uint64)
        self.burst = np.zeros(MAX_BURST, dtype=np.int32)
        self.bridges: list[DpBridge | None] = []
        self.ports: list[Port | None] = []
        self.port_bridge = np.zeros(0, dtype=np.int64)   # the bridge of each port (-1: none)
        self.port_group = np.zeros(0, dtype=np.int64)    # its burst group (G_*)
        self.peer = np.zeros(0, dtype=np.int64)          # a patch port's peer (-1: none)
        self.patch_ports = np.zeros(0, dtype=np.int64)   # the patch ports, paired or not
        self.patch_counts = np.zeros((0, PC_FIELDS), dtype=np.int64)
        self.rounds = (np.zeros(MAX_BURST, dtype=np.int32), np.zeros(MAX_BURST, dtype=np.int32))
        self.single_group = -1                           # >= 0: every port is in this group
        self.drops = np.zeros((0, N_DROPS), dtype=np.int64)
        self.port_flags = np.zeros(0, dtype=np.int64)    # xlate.translate PF_* per port
        # flow drops by ingress port (dpif.actions.DROP_REASONS); the last row: frames of no port (packet-out)
        self.fdrops = np.zeros((1, N_DROP_REASONS), dtype=np.int64)
        # the megaflow datapath (made when the first flow set other than NORMAL arrives)
        self.cookies = UpcallCookies()
        self.upcalls: Upcalls | None = None
        self.xbridges = Bridges([], [], [], self.port_bridge, self.peer)
        self.dkeys = np.zeros((n_slots, KEY_WORDS), dtype=np.uint64)
        self.reasons = np.zeros(MAX_BURST, dtype=np.int32)
        self.good = np.zeros(MAX_BURST, dtype=np.int32)
        self.gsorted = np.zeros(MAX_BURST, dtype=np.int32)
        self.gstart = np.zeros(G_NORMAL + 1, dtype=np.int64)
        self.out_entry = np.zeros(MAX_BURST, dtype=np.int64)
        self.prog_index = np.zeros((MAX_BURST, 2), dtype=np.int64)
        self.xside = np.zeros((SIDE_ROWS, 2 * MAX_BURST), dtype=np.int32)
        self.xside_n = np.zeros(3, dtype=np.int64)   # NORMAL, USERSPACE, fresh slots (hit_burst)
        self.nslots = np.zeros(2 * MAX_BURST, dtype=np.int32)    # the NORMAL list by bridge (group_normal)
        self.nin = np.zeros(2 * MAX_BURST, dtype=np.int32)
        self.nstart = np.zeros(1, dtype=np.int64)
        self.extra = np.zeros(4 * MAX_BURST, dtype=np.int32)
        self._alloc_queues(0)
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
        self._n_extra = 0

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
            self.gstart = np.zeros(G_NORMAL + len(self.bridges) + 1, dtype=np.int64)
            self.nstart = np.zeros(len(self.bridges) + 1, dtype=np.int64)
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
        used = {int(groups[p]) for p, port in enumerate(self.ports) if port is not None}
        self.single_group = used.pop() if len(used) == 1 else -1
        self.xbridges = Bridges(self.tables(), modes,
                                [br.normal_rank if br is not None else -1 for br in self.bridges],
                                self.port_bridge.copy(), self.peer.copy())

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
    def _alloc_queues(self, n_ports: int) -> None:
        self.out = np.zeros((2, MAX_BURST * max(1, n_ports)), dtype=np.int32)
        self.out_slots = self.out[0]
        self.out_vlans = self.out[1]
        self.out_start = np.zeros((2, n_ports + 1), dtype=np.int32)
        # switch_burst's queues for NORMAL work after the first (merged into ``out`` afterwards)
        self.out2 = np.zeros((2, 2 * MAX_BURST * max(1, n_ports)), dtype=np.int32)
        self.out_start2 = np.zeros((2, n_ports + 1), dtype=np.int32)

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
        self.port_flags[port_no] = PF_PATCH if isinstance(port, PatchPort) else 0
        self.port_bridge[port_no] = br.index
        port.port_no = port_no
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
        self._n_extra = 0
        now = self.now()
        self._process(burst, total, now)
        self._send(now)
        pool.free(burst, total)
        return total

    def _send(self, now: int) -> None:
        """Transmit the queues, hand what went to patch ports to their peers, free the copies the actions made."""
        self._transmit()
        if len(self.patch_ports):
            self._patch_rounds(now)
        if self._n_extra:
            self.pool.free(self.extra, self._n_extra)
            self._n_extra = 0

    def _patch_rounds(self, now: int) -> None:
        """Hand what was queued for patch ports to their peers' bridges, round after round until nothing is
        (at most ``MAX_DEPTH`` rounds: a loop of patch ports). Frees the fresh slots of every round."""
        pool = self.pool
        counts = self.patch_counts
        done: tuple[np.ndarray, int] | None = None
        for depth in range(MAX_DEPTH + 1):
            nxt = self.rounds[depth % 2]
            n = patch_handover(pool.data, pool.meta, self.out, self.out_start, self.patch_ports, self.peer,
                               pool.headroom, pool.free_stack, pool.free_top, nxt, counts)
            self._count_patch()
            if self._n_extra:            # the round's copies are made: its fresh slots and frames can go
                pool.free(self.extra, self._n_extra)
                self._n_extra = 0
            if done is not None:
                pool.free(*done)
            if n == 0:
                return
            if depth == MAX_DEPTH:
                ports, lost = np.unique(pool.meta[nxt[:n], POOL_META_IN_PORT], return_counts=True)
                for p, k in zip(ports.tolist(), lost.tolist(), strict=True):
                    self._bridge_of(p, "patch_too_deep", k)
                pool.free(nxt, n)
                return
            self._process(nxt, n, now)
            self._transmit()
            done = (nxt, n)

    def _bridge_of(self, port_no: int, counter: str, n: int) -> None:
        """Add ``n`` to the drop counter ``counter`` of the bridge of ``port_no``."""
        b = int(self.port_bridge[port_no]) if 0 <= port_no < len(self.port_bridge) else -1
        br = self.bridges[b] if 0 <= b < len(self.bridges) else None
        if br is not None:
            br.dp_drops[counter] += n

    def _count_patch(self) -> None:
        """Move the patch counts of a round to the ports' counters and the bridges' drop counters."""
        counts = self.patch_counts
        for p in self.patch_ports.tolist():
            row = counts[p]
            if not row.any():
                continue
            port = self.ports[p]
            q = int(self.peer[p])
            if port is not None:
                port.counters[TX_PACKETS] += row[PC_TX_PACKETS]
                port.counters[TX_BYTES] += row[PC_TX_BYTES]
            other = self.ports[q] if q >= 0 else None
            if other is not None:
                other.counters[RX_PACKETS] += row[PC_TX_PACKETS]
                other.counters[RX_BYTES] += row[PC_TX_BYTES]
            for counter, i in (("patch_no_peer", PC_NO_PEER), ("patch_no_free_slot", PC_NO_SLOT),
                               ("patch_overflow", PC_OVERFLOW)):
                if row[i]:
                    self._bridge_of(p, counter, int(row[i]))
            row[:] = 0

    def _process(self, burst: np.ndarray, n: int, now: int) -> None:
        """Switch ``burst[:n]`` into the port queues, each frame by its bridge; the burst stays allocated
        (``_n_extra``: the fresh slots the actions took, to free after transmit)."""
        g = self.single_group
        if g >= 0:
            self._group(g, burst, n, now, True)
            return
        group_burst(self.pool.meta, burst, n, self.port_group, self.gsorted, self.gstart)
        start = self.gstart
        first = True
        for g in np.flatnonzero(start[1:] - start[:-1]).tolist():
            a, z = int(start[g]), int(start[g + 1])
            if self._group(g, self.gsorted[a:z], z - a, now, first):
                first = False
        if first:
            self.out_start[1] = 0

    def _group(self, g: int, burst: np.ndarray, n: int, now: int, first: bool) -> bool:
        """The frames of one group (``G_*``); ``first``: nothing is queued yet this iteration. Whether it
        queued (the port queues now hold this iteration's work)."""
        if g == G_TABLES:
            self._of_burst(burst, n, now)
            return True
        if g == G_DROP:
            # a secure bridge with no flows made for a secure bridge (yet): table misses, by ingress port
            np.add.at(self.fdrops[:, DR_TABLE_MISS], self.pool.meta[burst[:n], POOL_META_IN_PORT], 1)
            if first:
                self.out_start[1] = 0
            return False
        br = self.bridges[g - G_NORMAL]
        assert br is not None
        pool = self.pool
        if first:
            switch_burst(pool.data, pool.meta, burst, n, self.keys, br.l2, br.l2_info, br.vlan_map, now, self.drops,
                         self.out, self.out_start)
        else:
            switch_burst(pool.data, pool.meta, burst, n, self.keys, br.l2, br.l2_info, br.vlan_map, now, self.drops,
                         self.out2, self.out_start2)
            lost = append_queues(self.out, self.out_start, self.out2, self.out_start2)
            if lost:
                br.dp_drops["normal_queue_full"] += lost
        flows = br.flows
        if flows is not None and not br.bypass:
            count_rule(pool.meta, burst, n, flows.counters, flows.table_counters, br.normal_flow, now)
        return True

    def _transmit(self) -> None:
        pool = self.pool
        start, count = self.out_start
        out_slots, out_vlans = self.out_slots, self.out_vlans
        for port_no, port in enumerate(self.ports):
            if count[port_no] and port is not None:
                port.tx_burst(pool, out_slots, out_vlans, int(start[port_no]), int(count[port_no]))

    def _upcalls(self) -> Upcalls:
        if self.upcalls is None:
            self.upcalls = Upcalls(cookies=self.cookies)
        return self.upcalls

    def _of_burst(self, burst: np.ndarray, n: int, now: int) -> None:
        """The OpenFlow pipeline over ``burst[:n]``: keys, megaflows (upcalls for misses), their actions,
        NORMAL and packet-ins; the port queues are rewritten. The burst stays allocated."""
        pool = self.pool
        meta = pool.meta
        up = self._upcalls()
        cache = up.cache
        r = hit_burst(pool.data, meta, burst, n, self.dkeys, self.reasons, cache.st, cache.ent, cache.buckets,
                      cache.emc, self.out_entry, now, self.prog_index, cache.actions, self.out, self.out_start,
                      self.fdrops, pool.free_stack, pool.free_top, self.extra, self.xside, self.xside_n)
        if r == 0:
            self._n_extra = int(self.xside_n[2])
        else:
            if r < 0:
                burst, n = self._drop_invalid(burst, n)
                cache.lookup(self.dkeys, burst, n, meta, self.out_entry, now)
            up.handle_misses(self.xbridges, self.port_flags, self.dkeys, burst, n, meta, self.out_entry, now)
            up.programs(self.out_entry, n, self.prog_index)
            self._n_extra = execute_burst(pool.data, meta, burst, n, self.prog_index, cache.actions, self.out,
                                          self.out_start, self.fdrops, pool.free_stack, pool.free_top, self.extra,
                                          self.xside, self.xside_n)
        self._side_lists(now, None)

    def _side_lists(self, now: int, packet_out: DpBridge | None) -> None:
        """What the actions handed to NORMAL (each bridge's L2 switch, from the ingress port the action named)
        and to the controllers. ``packet_out``: the bridge of a packet-out, whose NORMAL without an ingress
        port is refused and counted there."""
        n_normal = int(self.xside_n[N_NORMAL])
        if n_normal:
            pool = self.pool
            lost = group_normal(self.xside, n_normal, len(self.ports), self.nslots, self.nin, self.nstart)
            if lost and packet_out is not None:
                packet_out.dp_drops["packet_out_normal_without_in_port"] += lost
            start = self.nstart
            for b in np.flatnonzero(start[1:] - start[:-1]).tolist():
                br = self.bridges[b]
                if br is None:
                    continue
                a, z = int(start[b]), int(start[b + 1])
                switch_list(pool.data, pool.meta, self.nslots[a:z], self.nin[a:z], z - a, self.keys, br.l2,
                            br.l2_info, br.vlan_map, now, self.drops, self.out2, self.out_start2)
                queue_lost = append_queues(self.out, self.out_start, self.out2, self.out_start2)
                if queue_lost:
                    br.dp_drops["normal_queue_full"] += queue_lost
        n_up = int(self.xside_n[N_USERSPACE])
        if n_up:
            self._packet_ins(n_up)

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
            self.upcalls.flush(self.tables())

    def sync_stats(self) -> None:
        """Credit the rules with what the megaflows forwarded until now (on the datapath thread)."""
        if self.upcalls is not None:
            self.call(lambda: self.upcalls.push_stats(self.tables()) if self.upcalls is not None else None)

    def _packet_ins(self, n: int) -> None:
        """Copy up to each bridge's rate limit of packet-ins for its agent; count the rest by reason."""
        by_id = self.cookies.by_id
        side, data, meta = self.xside, self.pool.data, self.pool.meta
        bridge_of = self.cookies.bridge_of[side[SIDE_UP_COOKIE, :n]]
        for b in np.unique(bridge_of).tolist():
            br = self.bridges[b] if 0 <= b < len(self.bridges) else None
            if br is None:
                continue
            rows = np.flatnonzero(bridge_of == b)
            take = br.take_packet_ins(len(rows))
            for i in rows[:take].tolist():   # a packet-in is a slow-path message: per-frame Python, bounded by the rate
                slot = int(side[SIDE_UP_SLOT, i])
                head = int(meta[slot, META_HEAD])
                length = int(meta[slot, POOL_META_LEN])
                keep = min(length, int(side[SIDE_UP_MAX_LEN, i]))
                up = by_id[int(side[SIDE_UP_COOKIE, i])]
                in_port = up.in_port if up.in_port >= 0 else int(meta[slot, POOL_META_IN_PORT])
                br.packet_ins.append(PacketIn(bytes(data[slot, head:head + keep]), length, in_port, up.flow,
                                              up.reason, up.table_id))
            if take:
                br.on_packet_in()

    def packet_out(self, br: DpBridge, frame: bytes, port_no: int, actions: tuple[Action, ...],
                   ts: TableSet) -> None:
        """Run ``actions`` on ``frame`` in bridge ``br`` (``output:TABLE``: the tables of ``ts``) as if received
        on ``port_no`` (-1: from the controller, on no port). Datapath thread."""
        pool = self.pool
        one = np.zeros(1, dtype=np.int32)
        if pool.alloc(one, 0, 1) != 1:
            br.dp_drops["packet_out_no_free_slot"] += 1
            return
        try:
            in_port = port_no if port_no >= 0 else len(self.port_flags)
            pool.put(int(one[0]), frame[: pool.slot_size], in_port)
            extract_burst(pool.data, pool.meta, one, 1, self.dkeys, self.reasons)
            key = [int(w) for w in self.dkeys[int(one[0])]]
            res = translate_actions(br.xlate_bridges(ts), key, actions, self.port_flags, self.cookies,
                                    bridge=br.index)
            program = res.program()
            self.prog_index[0, 0] = 0
            self.prog_index[0, 1] = len(program)
            self._n_extra = execute_burst(pool.data, pool.meta, one, 1, self.prog_index, program, self.out,
                                          self.out_start, self.fdrops, pool.free_stack, pool.free_top, self.extra,
                                          self.xside, self.xside_n)
            now = self.now()
            self._side_lists(now, br)
            self._send(now)
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

        While an iteration moves at least ``BUSY_FRAMES`` frames, the next one polls every port
        at once (a PMD). Below that, the thread asks epoll which ports have work: it polls only
        those, and blocks (up to ``AGING_TICK``) when none has, so an idle datapath sleeps and a
        lightly loaded one pays one epoll call per batch instead of spinning.
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
                ports = self._ready_ports(0)
                if not ports:
                    if self._calls or self._flows_pending:  # its wake-up was consumed just now: run it first
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
