"""What the translator knows of the datapath's bridges (``Bridges``): which bridge each datapath port
belongs to, its patch peer, each bridge's tables and how it handles a frame (``MODE_*``); and the
per-port flags the datapath keeps (``PF_*``)."""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from ofproto.tables import TableSet

# port flags (per datapath port, owned by the datapath)
PF_NO_FLOOD = 1 << 0   # not an output of FLOOD (OFPPC_NO_FLOOD)
PF_DOWN = 1 << 1       # no output at all (down, or no port with that number)
PF_LOCAL = 1 << 2      # the bridge's LOCAL port (the first port of the bridge with this flag)
PF_PATCH = 1 << 3      # a patch port: an output continues in the peer's bridge (``Bridges.peer``)
PF_LINK_DOWN = 1 << 4  # the port's link (carrier, admin state) is down: no group bucket watching it is live
PF_TUNNEL = 1 << 5     # a tunnel port: an output encapsulates and continues in the underlay (``Bridges.tunnels``)

# how a bridge handles a frame (``Bridges.modes``)
MODE_TABLES = 0        # its OpenFlow tables
MODE_NORMAL = 1        # NORMAL alone: no flow tables, only ``priority=0 actions=NORMAL``, or fail-open
MODE_DROP = 2          # a secure bridge without flows made for it: nothing crosses it


class Bridges:
    """What the translator knows of the datapath's bridges: each datapath port's bridge (-1: none) and
    patch peer (-1: none), and each bridge's live tables, mode (``MODE_*``) and the rank of its only flow
    when that flow is NORMAL (-1: none). Immutable once made; the datapath makes a new one when any of it
    changes."""

    __slots__ = ("tables", "modes", "normal_rank", "port_bridge", "peer", "tunnels", "underlay")

    def __init__(self, tables: list[TableSet | None], modes: list[int], normal_rank: list[int],
                 port_bridge: np.ndarray, peer: np.ndarray, tunnels: dict[int, Any] | None = None,
                 underlay: Any = None) -> None:
        self.tables = tables
        self.modes = modes
        self.normal_rank = normal_rank
        self.port_bridge = port_bridge
        self.peer = peer
        #: datapath port -> ``backends.tunnel.TunnelConfig`` of every tunnel port
        self.tunnels: dict[int, Any] = tunnels or {}
        #: the switch's answers on routes and neighbours (``xlate.tunnel.Underlay``), None: no tunnels
        self.underlay = underlay

    @classmethod
    def single(cls, ts: TableSet, n_ports: int) -> Bridges:
        """One bridge with tables ``ts`` owning ports ``0 .. n_ports - 1`` (and the "no port" number after them)."""
        made = _SINGLE.get(ts)
        if made is None or len(made.port_bridge) != n_ports + 1:
            made = _SINGLE[ts] = cls([ts], [MODE_TABLES], [-1], np.zeros(n_ports + 1, dtype=np.int64),
                                     np.full(n_ports + 1, -1, dtype=np.int64))
        return made

    def replaced(self, bridge: int, ts: TableSet, mode: int) -> Bridges:
        """A copy in which bridge ``bridge`` walks ``ts`` in ``mode`` (a packet-out's or a trace's tables)."""
        tables, modes = list(self.tables), list(self.modes)
        normal_rank = list(self.normal_rank)
        while len(tables) <= bridge:
            tables.append(None)
            modes.append(MODE_DROP)
            normal_rank.append(-1)
        tables[bridge], modes[bridge] = ts, mode
        return Bridges(tables, modes, normal_rank, self.port_bridge, self.peer, self.tunnels, self.underlay)

    def bridge_of(self, port: int) -> int:
        """The bridge of datapath port ``port`` (-1: none)."""
        return int(self.port_bridge[port]) if 0 <= port < len(self.port_bridge) else -1


#: ``Bridges.single`` of each ``TableSet`` (made once per set, not per translation)
_SINGLE: weakref.WeakKeyDictionary[TableSet, Bridges] = weakref.WeakKeyDictionary()
