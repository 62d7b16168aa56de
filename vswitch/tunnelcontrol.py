"""The daemon's tunnel control plane (``TunnelControl``): the route table (the kernel's, followed by netlink, and
``ovs/route/add``'s), the neighbour cache, the tunnel port map, their ``ovs-appctl`` commands, and what follows
from their changes: the datapath's underlay and termination tables, megaflows flushed, ``Interface.status``.

```
 kernel routes / links ─► RouteWatch ─► RouteTable.refresh ┐
 ovs-appctl ovs/route/*, tnl/neigh/* ──────────────────────┤ a version moved (checked every loop)
 the datapath's snooped ARP / ND ──► NeighCache ───────────┘        │
                                                                     ▼
          Datapath.set_tunnel_endpoints (the bridges' internal ports' addresses), refresh_tunnels (headers,
          termination tables, megaflows), TunnelPort.set_egress (Interface.status: tunnel_egress_iface)
```

The tables are shared with the datapath thread (the translator's lookups): ``Locked*`` wrap them in a lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from backends.tunnel import TunnelPort
from vswitch.dptunnels import SwitchUnderlay, egress_status, endpoint_addresses
from vswitch.tunnels import appctl
from vswitch.tunnels.kernel import RouteWatch
from vswitch.tunnels.neigh import NeighCache
from vswitch.tunnels.route import RouteTable
from vswitch.tunnels.tnlports import SourcePorts, TunnelPortMap, dpif_port_name

log = logging.getLogger(__name__)


class LockedRouteTable(RouteTable):
    """A ``RouteTable`` the control thread changes while the datapath thread looks routes up."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.lock = threading.RLock()
        super().__init__(*args, **kwargs)

    def refresh(self, *args: Any, **kwargs: Any) -> None:
        with self.lock:
            super().refresh(*args, **kwargs)

    def add(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return super().add(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return super().delete(*args, **kwargs)

    def lookup(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return super().lookup(*args, **kwargs)

    def show(self) -> str:
        with self.lock:
            return super().show()

    def egress(self, *args: Any, **kwargs: Any) -> dict[str, str]:
        with self.lock:
            return super().egress(*args, **kwargs)


class LockedNeighCache(NeighCache):
    """A ``NeighCache`` the datapath thread snoops into while ``tnl/neigh/*`` read and change it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.lock = threading.RLock()
        super().__init__(*args, **kwargs)

    def lookup(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return super().lookup(*args, **kwargs)

    def set(self, *args: Any, **kwargs: Any) -> None:
        with self.lock:
            super().set(*args, **kwargs)

    def snoop(self, *args: Any, **kwargs: Any) -> None:
        with self.lock:
            super().snoop(*args, **kwargs)

    def flush(self) -> None:
        with self.lock:
            super().flush()

    def flush_bridge(self, bridge: str) -> None:
        with self.lock:
            super().flush_bridge(bridge)

    def run(self, *args: Any, **kwargs: Any) -> bool:
        with self.lock:
            return super().run(*args, **kwargs)

    def show(self, *args: Any, **kwargs: Any) -> str:
        with self.lock:
            return super().show(*args, **kwargs)


class TunnelControl:
    """Routes, neighbours and tunnel ports for the daemon; ``run`` after every loop iteration."""

    def __init__(self) -> None:
        self.ports = TunnelPortMap()
        self.routes = LockedRouteTable(ipdevs=self.ports, load=False)
        self.neigh = LockedNeighCache()
        self.source_ports = SourcePorts()
        try:
            self.watch: RouteWatch | None = RouteWatch(self.routes.refresh)
        except OSError as exc:
            self.watch = None
            log.warning("no route notifications (%s): tunnel routes are read at start and on ovs/route/*", exc)
        try:
            self.routes.refresh()
        except OSError as exc:
            log.warning("could not read the kernel's routes: %s", exc)
        self.datapath: Any = None
        self.seen: tuple[int, int] = (-1, -1)
        self.listed: dict[tuple[str, int], tuple[int, int]] = {}   # (type, udp port) -> (odp number, ports)

    def register(self, command_register: Callable) -> None:
        """The ``ovs/route/*``, ``tnl/neigh/*``, ``tnl/arp/*``, ``tnl/ports/show`` commands."""
        appctl.register(command_register, self.routes, self.neigh, self.ports, self.source_ports)

    def fileno(self) -> int | None:
        """The netlink socket to poll (None: none)."""
        return self.watch.fileno() if self.watch is not None else None

    def attach(self, datapath: Any) -> None:
        """The datapath translates tunnel outputs with these tables and terminates tunnels on its bridges."""
        self.datapath = datapath
        datapath.set_underlay(SwitchUnderlay(self.routes, self.neigh, datapath))
        self.seen = (-1, -1)

    def run(self, tunnel_ports: Iterable[TunnelPort]) -> None:
        """Read route notifications, age neighbours; when routes or neighbours changed, the datapath and the
        tunnel ports' status follow (control thread)."""
        if self.watch is not None:
            try:
                self.watch.run()
            except OSError as exc:
                log.warning("reading route notifications failed: %s", exc)
        self.neigh.run()
        now = (self.routes.version, self.neigh.version)
        if now == self.seen:
            return
        routes_moved = now[0] != self.seen[0]
        self.seen = now
        if self.datapath is not None:
            if routes_moved:
                with self.routes.lock:
                    addrs = endpoint_addresses(self.routes)
                self.datapath.set_tunnel_endpoints(addrs)
            else:
                self.datapath.refresh_tunnels()
        for port in tunnel_ports:
            port.set_egress(egress_status(self.routes, port))

    def sync_ports(self, tunnel_ports: Iterable[TunnelPort]) -> None:
        """``tnl/ports/show``'s map follows the tunnel ports (one entry per type and UDP port, as OVS's
        ``genev_sys_6081`` is one datapath port for every Geneve port); their status is read again."""
        want: dict[tuple[str, int], list[TunnelPort]] = {}
        for port in tunnel_ports:
            want.setdefault((port.type, port.config.dst_port), []).append(port)
            port.set_egress(egress_status(self.routes, port))
        for (kind, udp), (odp, n) in list(self.listed.items()):
            if len(want.get((kind, udp), [])) != n:
                for _ in range(n):
                    self.ports.delete(odp, kind)
                del self.listed[(kind, udp)]
        for (kind, udp), ports in want.items():
            if (kind, udp) not in self.listed:
                odp = min(p.port_no for p in ports)
                for _ in ports:
                    self.ports.insert(odp, udp, dpif_port_name(kind, udp), kind)
                self.listed[(kind, udp)] = (odp, len(ports))
