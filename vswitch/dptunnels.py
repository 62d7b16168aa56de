"""Tunnels in the datapath (``DpTunnels``, a part of ``vswitch.datapath.Datapath``): the tunnel ports, the underlay
the translator asks (``SwitchUnderlay``: routes, neighbours, egress bridges) and the decapsulation of frames that
arrive for a local tunnel endpoint.

```
 burst ─► tnl_terminate (numba; only when some bridge holds a tunnel endpoint)
            ├─ for a local endpoint, protocol, port: outer headers checked and removed, tun_* kept per slot,
            │  in_port = the tunnel port ─► its bridge's pipeline (keys + tun words, megaflows, upcalls)
            ├─ malformed / no tunnel port for it: dropped, counted by reason (tunnel_truncated, tunnel_no_port, ...)
            ├─ ARP / NA for an endpoint: the sender's MAC snooped for tnl/neigh, the frame goes on
            └─ anything else ─► the usual burst path
```

An endpoint is a bridge's LOCAL (internal) port with its addresses: frames received on that bridge's other ports
whose destination is that port's MAC and address may terminate a tunnel (OVS decapsulates what its bridge sends to
the internal port; here before the bridge's pipeline, so a flow on the underlay bridge cannot divert them).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from typing import Any

import numpy as np

from backends.port import Port
from backends.tunnel import TunnelPort
from xlate.bridges import PF_LOCAL
from xlate.tunnel import Egress

log = logging.getLogger(__name__)

ETH_P_ALL = 0x0003
REQUEST_INTERVAL = 1.0      # at most one ARP / NS per next hop a second (OVS: one per miss, rate-limited)


def _mac_int(mac: str) -> int:
    return int(mac.replace(":", ""), 16) if mac else 0


def _mtu(dev: str) -> int:
    try:
        with open(f"/sys/class/net/{dev}/mtu") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 1500


def _carrier(dev: str) -> bool:
    try:
        with open(f"/sys/class/net/{dev}/carrier") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


class SwitchUnderlay:
    """The translator's ``xlate.tunnel.Underlay``: routes (``RouteTable``), neighbours (``NeighCache``) and the
    datapath's bridges and LOCAL ports. Lookups run on the datapath thread; ARP / NS requests are sent from a
    packet socket on the egress bridge's internal port (the switch receives them there and forwards them as
    the bridge's own frames)."""

    def __init__(self, routes: Any, neigh: Any, datapath: DpTunnels | None = None) -> None:
        self.routes = routes
        self.neigh = neigh
        self.datapath = datapath
        self._asked: dict[tuple[int, bool], float] = {}
        self._lock = threading.Lock()

    def egress(self, remote: int, ipv6: bool, src: int | None) -> Egress | None:
        """The route to ``remote``: the bridge named by its device, its LOCAL port, source and next hop."""
        addr = ipaddress.IPv6Address(remote) if ipv6 else ipaddress.IPv4Address(remote)
        route = self.routes.lookup(addr)
        if route is None:
            return None
        dev = route.dev
        local = self.datapath.local_port(dev) if self.datapath is not None else None
        if local is None:
            return None
        bridge, port, mac = local
        source = src if src is not None else (int(route.src) if route.src is not None else 0)
        if not source:
            return None
        gw = route.gateway
        nexthop = int(gw) if gw is not None and int(gw) else remote
        return Egress(bridge, port, dev, source, mac, nexthop, _mtu(dev))

    def neighbor(self, ip: int, ipv6: bool, egress: Egress) -> int | None:
        addr = ipaddress.IPv6Address(ip) if ipv6 else ipaddress.IPv4Address(ip)
        mac = self.neigh.lookup(addr, egress.dev)
        if mac is None:
            return None
        return mac if isinstance(mac, int) else _mac_int(str(mac))

    def resolve(self, ip: int, ipv6: bool, egress: Egress) -> None:
        """Send an ARP request (IPv6: a neighbour solicitation) for ``ip`` out of ``egress.dev``, at most one a
        second per address."""
        now = time.monotonic()
        with self._lock:
            if now - self._asked.get((ip, ipv6), -1e9) < REQUEST_INTERVAL:
                return
            self._asked[(ip, ipv6)] = now
        mac = ":".join(f"{egress.mac >> (8 * i) & 0xFF:02x}" for i in range(5, -1, -1))
        try:
            if ipv6:
                frame = self.neigh.nd_solicit(ipaddress.IPv6Address(ip), ipaddress.IPv6Address(egress.src), mac)
            else:
                frame = self.neigh.arp_request(ipaddress.IPv4Address(ip), ipaddress.IPv4Address(egress.src), mac)
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as s:
                s.bind((egress.dev, 0))
                s.send(frame)
        except OSError as exc:
            log.warning("tunnel: could not ask for %s's MAC on %s: %s", ip, egress.dev, exc)


def egress_status(routes: Any, port: TunnelPort) -> tuple[str, bool] | None:
    """``Interface.status`` of a tunnel port: the device the route to its remote leaves by, and its carrier."""
    cfg = port.config
    if cfg.remote < 0:
        return None
    addr = ipaddress.IPv6Address(cfg.remote) if cfg.ipv6 else ipaddress.IPv4Address(cfg.remote)
    route = routes.lookup(addr) if routes is not None else None
    if route is None:
        return None
    return route.dev, _carrier(route.dev)


class DpTunnels:
    """The datapath's tunnel state (mixed into ``Datapath``; datapath thread unless said)."""

    ports: list[Port | None]
    port_flags: np.ndarray
    port_bridge: np.ndarray
    bridges: list[Any]

    def _init_tunnels(self) -> None:
        self.underlay: SwitchUnderlay | None = None
        self.tunnel_configs: dict[int, Any] = {}

    def set_underlay(self, underlay: SwitchUnderlay | None) -> None:
        """The routes and neighbours the translator uses for tunnels (control side, once at start)."""
        self.underlay = underlay

    def _tunnel_rebuild(self) -> None:
        """The tunnel ports (after any port or bridge change)."""
        self.tunnel_configs = {p.port_no: p.config for p in self.ports if isinstance(p, TunnelPort)}

    def local_port(self, dev: str) -> tuple[int, int, int] | None:
        """(bridge number, LOCAL datapath port, its MAC) of the bridge named ``dev`` (None: no such bridge or it
        has no LOCAL port)."""
        for port_no, port in enumerate(self.ports):
            if port is not None and port.name == dev and self.port_flags[port_no] & PF_LOCAL:
                b = int(self.port_bridge[port_no])
                br = self.bridges[b] if 0 <= b < len(self.bridges) else None
                if br is not None and br.name == dev:
                    return b, port_no, _mac_int(port.mac)
        return None
