"""What the tunnels' control plane reads of the kernel: links, addresses and routes of the current network
namespace, in the kernel's own dump order (OVS's results depend on it), and a netlink socket that hears changes.

```
 kernel ──RTM_GETLINK / GETADDR / GETROUTE dumps──► Snapshot (links, addresses per device, routes)
 kernel ──RTMGRP_IPV4_ROUTE | IPV6_ROUTE | LINK──► RouteWatch.fileno() readable ──run()──► RouteTable.refresh()
```
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from pyroute2 import IPRoute

from vswitch.tunnels.ovstext import V4_MAPPED, prefix_mask

log = logging.getLogger(__name__)

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_RUNNING = 0x40
RTN_UNICAST = 1
RTN_LOCAL = 2
RT_SCOPE_NOWHERE = 255
RTMGRP_LINK = 0x1
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_ROUTE = 0x400
RCVBUF = 1 << 20


@dataclass
class Device:
    """A network device as OVS's netdev layer sees it: name, MAC, flags and its addresses (128-bit, IPv4
    mapped, with 128-bit masks) in ``getifaddrs`` order (IPv4 first, then IPv6, each in the kernel's order)."""
    name: str
    index: int
    mac: bytes
    flags: int
    addrs: list[tuple[int, int]] = field(default_factory=list)

    @property
    def carrier(self) -> bool:
        """``netdev_get_carrier``: the device is running."""
        return bool(self.flags & IFF_RUNNING)

    @property
    def loopback(self) -> bool:
        return bool(self.flags & IFF_LOOPBACK)

    def stamp(self) -> tuple:
        """What changes when OVS's netdev change sequence would: its MAC, flags or addresses."""
        return self.mac, self.flags, tuple(self.addrs)


@dataclass(frozen=True)
class KernelRoute:
    """One route of the kernel's dump, as ``route_table_parse`` keeps it (IPv4 mapped; ``plen`` in 128 bits)."""
    dst: int
    plen: int
    dev: str
    gw: int
    mark: int
    local: bool


@dataclass
class Snapshot:
    """The namespace's devices (by name) and its routes (kernel dump order; only those OVS takes)."""
    devices: dict[str, Device]
    routes: list[KernelRoute]


def _mapped_ip(family: int, text: str) -> int:
    raw = socket.inet_pton(family, text)
    return V4_MAPPED | int.from_bytes(raw, "big") if family == socket.AF_INET else int.from_bytes(raw, "big")


def read_snapshot(ipr: IPRoute | None = None) -> Snapshot:
    """Dump links, addresses and routes of the current namespace (or of ``ipr``'s)."""
    own = ipr is None
    ipr = IPRoute() if ipr is None else ipr
    try:
        devices: dict[str, Device] = {}
        by_index: dict[int, Device] = {}
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME")
            mac = link.get_attr("IFLA_ADDRESS") or "00:00:00:00:00:00"
            dev = Device(name, link["index"], bytes.fromhex(mac.replace(":", "")[:12].ljust(12, "0")),
                         link["flags"])
            devices[name] = by_index[link["index"]] = dev
        for msg in ipr.get_addr():
            dev = by_index.get(msg["index"])
            family = msg["family"]
            text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if dev is None or text is None or family not in (socket.AF_INET, socket.AF_INET6):
                continue
            plen = msg["prefixlen"] + (96 if family == socket.AF_INET else 0)
            mask = prefix_mask(plen)
            if family == socket.AF_INET:      # getifaddrs' IPv4 mask, mapped: ::ffff:<netmask>
                mask = (0xFFFF << 32) | (mask & 0xFFFFFFFF)
            dev.addrs.append((_mapped_ip(family, text), mask))
        # getifaddrs lists IPv4 addresses before IPv6 ones; the dump already comes in that order per family.
        routes = []
        for msg in ipr.route("dump", family=socket.AF_UNSPEC):
            route = _parse_route(msg, by_index)
            if route is not None:
                routes.append(route)
        return Snapshot(devices, routes)
    finally:
        if own:
            ipr.close()


def _parse_route(msg: object, by_index: dict[int, Device]) -> KernelRoute | None:
    """``route_table_parse`` + ``route_table_handle_msg``'s filter: unicast and local routes, not of scope
    nowhere, with an output device that exists."""
    family = msg["family"]
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    if msg["scope"] == RT_SCOPE_NOWHERE or msg["type"] not in (RTN_UNICAST, RTN_LOCAL):
        return None
    oif = msg.get_attr("RTA_OIF")
    dev = by_index.get(oif) if oif is not None else None
    if dev is None:
        return None
    dst_text = msg.get_attr("RTA_DST")
    gw_text = msg.get_attr("RTA_GATEWAY")
    dst = _mapped_ip(family, dst_text) if dst_text else (V4_MAPPED if family == socket.AF_INET else 0)
    gw = _mapped_ip(family, gw_text) if gw_text else 0
    plen = msg["dst_len"] + (96 if family == socket.AF_INET else 0)
    return KernelRoute(dst, plen, dev.name, gw, msg.get_attr("RTA_MARK") or 0, msg["type"] == RTN_LOCAL)


class RouteWatch:
    """A non-blocking netlink socket subscribed to IPv4 / IPv6 route and link changes, as ovs-vswitchd's route
    table is: put ``fileno()`` in the poll loop, call ``run()`` when it is readable."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self.on_change = on_change
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                  socket.NETLINK_ROUTE)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            self.sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE))
        except OSError:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def run(self) -> bool:
        """Read every pending notification; when any arrived (or some were lost), call ``on_change`` once
        (OVS re-reads the whole table once per batch). True when it did."""
        seen = False
        while True:
            try:
                if not self.sock.recv(65536):
                    break
                seen = True
            except BlockingIOError:
                break
            except OSError as e:      # ENOBUFS: notifications were dropped, so something changed
                log.debug("route notifications: %s", e)
                seen = True
        if seen:
            self.on_change()
        return seen

    def close(self) -> None:
        self.sock.close()
