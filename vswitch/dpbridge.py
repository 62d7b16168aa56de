"""One bridge inside the datapath (``DpBridge``): its L2 table and VLAN map, its live flows, its fail mode,
its packet-ins.

```
 vswitch.bridge.Bridge.dp ─┐                 ┌─ l2, l2_info, vlan_map ──── NORMAL: switch_burst / switch_list
 OfAgent: publish_flows ───┼─► DpBridge ─────┼─ flows (TableSet), bypass,
          ◄── packet_ins ──┘       │         │  fail_secure ─────────────── mode: MODE_NORMAL / TABLES / DROP
                                   │         └─ packet_ins ◄── take_packet_ins (rate limit, queue bound)
                                   └─► what every bridge shares: its Datapath (pool, megaflows, ports, thread)
```

The OpenFlow tables (``ofproto.tables``) are compiled by each bridge's OpenFlow agent into a ``TableSet``
and swapped in between bursts (``DpBridge.publish_flows``), which first removes the megaflows the change
may translate differently (``xlate.upcall.Upcalls.revalidate``). A bridge whose only flow is
``priority=0 actions=NORMAL`` (OVS's default), or a standalone bridge that lost its controller
(fail-open), runs ``switch_burst`` alone.

A ``fail_secure`` bridge (``Bridge.fail_mode=secure``) is secure from its construction: it forwards only by
flows that were compiled for a secure bridge (``set_flows(..., secure=True)``), never fails open, and drops
every frame while it has none, so no frame crosses it before a flow says so, whatever order the control
plane's steps come in.

Packet-ins wait in the bridge's queue for its agent (``on_packet_in`` wakes it), at most ``PACKET_IN_QUEUE``,
let through by a token bucket (``PACKET_IN_RATE`` a second, bursts of ``PACKET_IN_BURST``, unless
``Controller.controller_rate_limit`` says); the others are counted in ``dp_drops``.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from backends.pool import PacketPool
from backends.port import Port
from classifier.l2table import I_AGING, I_LEARNED, I_LIMIT, l2_copy, make_l2table
from ofproto.rules import Action
from ofproto.tables import FlowTables, TableSet
from xlate.ctlearn import TableChange
from xlate.translate import MODE_DROP, MODE_NORMAL, MODE_TABLES, Bridges, UpcallCookies
from xlate.upcall import Upcalls

if TYPE_CHECKING:
    from vswitch.datapath import Datapath, PmdStats

PACKET_IN_RATE = 1000    # packet-ins per second to the controllers unless Controller.controller_rate_limit says
PACKET_IN_BURST = 250
PACKET_IN_QUEUE = 1024   # packet-ins waiting for the agent, at most

#: drops of a bridge that belong to no ingress port (VPP-style named counters)
DP_DROP_NAMES = ("packet_in_rate_limited", "packet_in_queue_full", "normal_queue_full", "packet_out_no_free_slot",
                 "packet_out_normal_without_in_port", "patch_no_peer", "patch_no_free_slot", "patch_overflow",
                 "patch_too_deep", "learn_queue_full", "invalid_ttl_no_controller",
                 # NORMAL's frames for a tunnel port (``dpif.tunnel.tunnel_handover``)
                 "tunnel_no_route", "tunnel_neigh_unresolved", "tunnel_no_free_slot", "tunnel_overflow",
                 "tunnel_too_big")
LEARN_QUEUE = 4096   # learned flows waiting for the agent (more: counted as learn_queue_full, not learned)


class PacketIn:
    """A frame for the controllers: its first bytes, where it came from and which flow sent it."""

    __slots__ = ("data", "total_len", "port_no", "flow", "reason", "table_id", "pin")

    def __init__(self, data: bytes, total_len: int, port_no: int, flow: object, reason: int, table_id: int,
                 pin: object = None) -> None:
        self.data = data
        self.total_len = total_len
        self.port_no = port_no      # datapath port of the bridge (no port's number: a packet-out from the controller)
        self.flow = flow            # ofproto.rules.Flow (None: a table miss, for OpenFlow 1.0 controllers)
        self.reason = reason        # OFPR_*
        self.table_id = table_id
        self.pin = pin              # xlate.pause.PinInfo of a controller() action (userdata, pause), or None


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
        #: flows ``learn`` made for this bridge and ``fin_timeout`` hits, for its agent, at most ``LEARN_QUEUE``
        self.learned: collections.deque[TableChange] = collections.deque()
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

    def packet_out(self, frame: bytes, port_no: int, actions: tuple[Action, ...], ts: TableSet,
                   xlate: Callable[..., Any] | None = None) -> None:
        """Run ``actions`` on ``frame`` (``output:TABLE``: the tables of ``ts``) as if received on
        ``port_no`` (-1: from the controller, on no port), or the translation ``xlate`` makes (a resume). Runs on
        the datapath thread (``call``)."""
        self.datapath.packet_out(self, frame, port_no, actions, ts, xlate)

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
