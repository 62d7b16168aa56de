"""The tunnels' route table, as ovs-vswitchd's ``ovs-router`` keeps it (OVS 3.1).

Every unicast and local route of every kernel table of the namespace is cached ("Cached:"), user routes are added
with ``ovs/route/add`` ("User:"). A lookup takes the matching entry of highest priority, where the priority is the
prefix length (IPv4 counted as IPv4-mapped, so +96) plus 64 for a local route and 32 for a user route: a local
address wins over everything, a user route over a cached one up to 32 bits longer. The source address of an
entry is the address of its output device whose subnet holds the destination (the longest such), else the one
whose subnet holds the gateway; a route without one is not taken (OVS 3.1 does not read the route's prefsrc).

``show()`` lists the entries in the order OVS's classifier walks them: by subtable (one per prefix length) in
decreasing order of the subtable's highest priority, ties in the order the subtables came (OVS sorts with glibc's
stable sort and, on removal, moves the last subtable into the hole), entries of a subtable in insertion order.
A refresh (any route or link notification) removes every cached entry and inserts the kernel's dump again, in
the kernel's order, as ``route_table_reset`` does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from vswitch.tunnels.kernel import Device, Snapshot, read_snapshot
from vswitch.tunnels.ovstext import (
    format_mapped,
    is_mapped,
    mapped,
    parse_ipv4_cidr,
    parse_ipv6_cidr,
    prefix_mask,
    to_address,
)

LOCAL_BONUS = 64
USER_BONUS = 32


class RouteError(Exception):
    """A route command refused, with OVS's reply text."""


@dataclass(frozen=True)
class Route:
    """A lookup's answer: the output device (the egress bridge's internal port), the gateway (None when the
    destination is on link) and the source address; ``prefix`` / ``mark`` / ``user`` / ``local`` say which
    entry answered."""
    dev: str
    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    gw: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    prefix: str
    mark: int
    user: bool
    local: bool

    def next_hop(self, dst: ipaddress.IPv4Address | ipaddress.IPv6Address
                 ) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The address whose MAC the tunnel header needs: the gateway, else the destination itself."""
        return self.gw if self.gw is not None else dst


@dataclass
class _Entry:
    nw_addr: int
    plen: int
    mark: int
    priority: int
    local: bool
    dev: str
    gw: int
    src: int

    @property
    def cached(self) -> bool:
        return self.priority == self.plen or self.local

    def line(self) -> str:
        plen = self.plen - 96 if is_mapped(self.nw_addr) else self.plen
        text = f"{'Cached' if self.cached else 'User'}: {format_mapped(self.nw_addr)}/{plen}"
        if self.mark:
            text += f" MARK {self.mark}"
        text += f" dev {self.dev}"
        if self.gw:
            text += f" GW {format_mapped(self.gw)}"
        text += f" SRC {format_mapped(self.src)}"
        return text + (" local" if self.local else "")


@dataclass
class _Subtable:
    plen: int
    rules: list[_Entry] = field(default_factory=list)
    max_priority: int = 0


class IpdevHook(Protocol):
    """Told when a route is inserted for a device and when one of its routes goes (``tnl-ports``' ipdevs)."""

    def insert_ipdev(self, dev: Device) -> None: ...

    def delete_ipdev(self, name: str) -> None: ...


class RouteTable:
    """OVS's ``ovs-router``: the cached kernel routes plus the user routes, ``lookup`` / ``show`` as OVS answers.
    ``version`` moves on every change (a tunnel header built from an older version may be stale)."""

    def __init__(self, read: Callable[[], Snapshot] = read_snapshot, ipdevs: IpdevHook | None = None,
                 load: bool = True) -> None:
        self.read = read
        self.ipdevs = ipdevs
        self.devices: dict[str, Device] = {}
        self._subtables: dict[int, _Subtable] = {}
        self._vector: list[_Subtable] = []        # OVS's pvector of subtables, kept sorted when published
        self.version = 0
        if load:
            self.refresh()

    # ------------------------------------------------------------------ the classifier as OVS orders it
    def _publish(self) -> None:
        self._vector.sort(key=lambda st: -st.max_priority)      # list.sort is stable, as glibc's qsort here

    def _insert(self, entry: _Entry) -> None:
        """``classifier_replace``: an equal entry (same prefix, length, mark and priority) is replaced in place."""
        st = self._subtables.get(entry.plen)
        new_subtable = st is None
        if st is None:
            st = self._subtables[entry.plen] = _Subtable(entry.plen)
        for i, old in enumerate(st.rules):
            if (old.nw_addr, old.mark, old.priority) == (entry.nw_addr, entry.mark, entry.priority):
                st.rules[i] = entry
                return
        st.rules.append(entry)
        if new_subtable:
            st.max_priority = entry.priority
            self._vector.append(st)
        elif entry.priority > st.max_priority:
            st.max_priority = entry.priority
        self._publish()

    def _remove(self, entry: _Entry, publish: bool = True) -> None:
        st = self._subtables[entry.plen]
        st.rules.remove(entry)
        if not st.rules:
            del self._subtables[entry.plen]
            i = self._vector.index(st)            # pvector_remove: the last entry fills the hole
            last = self._vector.pop()
            if last is not st:
                self._vector[i] = last
        elif entry.priority == st.max_priority:
            st.max_priority = max(r.priority for r in st.rules)
        if publish:
            self._publish()

    def _walk(self) -> list[_Entry]:
        """``CLS_FOR_EACH``: subtables in vector order, each one's entries in insertion order."""
        return [e for st in self._vector for e in st.rules]

    # ------------------------------------------------------------------ source addresses
    def source_address(self, dst: int, dev: str) -> int | None:
        """``ovs_router_get_netdev_source_address``: the address of ``dev`` whose subnet holds ``dst`` (the
        longest mask; IPv4 destinations only look at IPv4 addresses), None if none does or ``dev`` is unknown."""
        device = self.devices.get(dev)
        if device is None:
            return None
        best, best_bits = None, -1
        v4 = is_mapped(dst)
        for addr, mask in device.addrs:
            if v4 and not is_mapped(addr):
                continue
            bits = bin(mask).count("1")
            if dst & mask == addr & mask and bits > best_bits:
                best, best_bits = addr, bits
        return best

    def _entry(self, dst: int, plen: int, dev: str, gw: int, mark: int, priority: int, local: bool
               ) -> _Entry | None:
        src = self.source_address(dst, dev)
        if src is None and gw:
            src = self.source_address(gw, dev)
        if src is None:
            return None
        return _Entry(dst & prefix_mask(plen), plen, mark, priority, local, dev, gw, src)

    def _note_ipdev(self, dev: str) -> None:
        device = self.devices.get(dev)
        if self.ipdevs is not None and device is not None:
            self.ipdevs.insert_ipdev(device)

    # ------------------------------------------------------------------ kernel routes
    def refresh(self, snapshot: Snapshot | None = None) -> None:
        """``route_table_reset``: drop every cached entry, re-read the namespace, insert its routes again."""
        snapshot = self.read() if snapshot is None else snapshot
        before = self._signature()
        for entry in self._walk():
            if entry.cached:
                if self.ipdevs is not None:
                    self.ipdevs.delete_ipdev(entry.dev)
                self._remove(entry, publish=False)
        self._publish()
        self.devices = snapshot.devices
        for r in snapshot.routes:
            entry = self._entry(r.dst, r.plen, r.dev, r.gw, r.mark, r.plen + (LOCAL_BONUS if r.local else 0),
                                r.local)
            if entry is not None:
                self._insert(entry)
                self._note_ipdev(r.dev)
        if self._signature() != before:
            self.version += 1

    def _signature(self) -> tuple:
        """What a lookup or an egress status depends on: the entries and the devices' carriers."""
        return (tuple((e.nw_addr, e.plen, e.mark, e.priority, e.dev, e.gw, e.src) for e in self._walk()),
                tuple(sorted((name, dev.carrier) for name, dev in self.devices.items())))

    # ------------------------------------------------------------------ user routes
    @staticmethod
    def parse_prefix(prefix: str) -> tuple[int, int]:
        """``ip/len`` (IPv4 or IPv6, as OVS parses it) as (128-bit address, 128-bit prefix length)."""
        v4 = parse_ipv4_cidr(prefix)
        if v4 is not None:
            return v4[0], v4[1] + 96
        v6 = parse_ipv6_cidr(prefix)
        if v6 is not None:
            return v6
        raise RouteError("Invalid parameters")

    def add(self, prefix: str, dev: str, gw: str | ipaddress.IPv4Address | ipaddress.IPv6Address | None = None,
            pkt_mark: int | None = None) -> None:
        """``ovs/route/add``: a user route; RouteError("Invalid parameters") for a bad prefix,
        RouteError("Error while inserting route.") when ``dev`` has no address to use as the source."""
        dst, plen = self.parse_prefix(prefix)
        gw_addr = mapped(gw) if gw is not None else 0
        if gw_addr and is_mapped(gw_addr) != is_mapped(dst):
            raise RouteError("Invalid pkt_mark or gateway")
        entry = self._entry(dst, plen, dev, gw_addr if gw_addr not in (0, mapped("0.0.0.0")) else 0,
                            (pkt_mark or 0) & 0xFFFFFFFF, plen + USER_BONUS, False)
        if entry is None:
            raise RouteError("Error while inserting route.")
        self._insert(entry)
        self._note_ipdev(dev)
        self.version += 1

    def delete(self, prefix: str, pkt_mark: int | None = None) -> None:
        """``ovs/route/del``: remove the user route of exactly that prefix and mark; RouteError("Not found")."""
        dst, plen = self.parse_prefix(prefix)
        mark = (pkt_mark or 0) & 0xFFFFFFFF
        st = self._subtables.get(plen)
        for entry in st.rules if st is not None else ():
            if (entry.nw_addr, entry.mark, entry.priority) == (dst & prefix_mask(plen), mark, plen + USER_BONUS):
                if self.ipdevs is not None:
                    self.ipdevs.delete_ipdev(entry.dev)
                self._remove(entry)
                self.version += 1
                return
        raise RouteError("Not found")

    # ------------------------------------------------------------------ queries
    def lookup(self, ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address | int, pkt_mark: int = 0
               ) -> Route | None:
        """``ovs_router_lookup``: the entry of highest priority whose prefix holds ``ip`` for ``pkt_mark``."""
        addr = mapped(ip)
        best: _Entry | None = None
        for entry in self._walk():
            if entry.mark == pkt_mark and addr & prefix_mask(entry.plen) == entry.nw_addr:
                if best is None or entry.priority > best.priority:
                    best = entry
        if best is None:
            return None
        plen = best.plen - 96 if is_mapped(best.nw_addr) else best.plen
        return Route(best.dev, to_address(best.src), to_address(best.gw) if best.gw else None,
                     f"{format_mapped(best.nw_addr)}/{plen}", best.mark, not best.cached, best.local)

    def show(self) -> str:
        """``ovs/route/show``'s text."""
        return "Route Table:\n" + "".join(entry.line() + "\n" for entry in self._walk())

    def lookup_text(self, ip: int, pkt_mark: int = 0) -> str | None:
        """``ovs/route/lookup``'s text for a 128-bit ``ip``, None when there is no route."""
        route = self.lookup(ip, pkt_mark)
        if route is None:
            return None
        gw = format_mapped(mapped(route.gw)) if route.gw is not None else "::"
        return f"src {format_mapped(mapped(route.src))}\ngateway {gw}\ndev {route.dev}\n"

    def egress(self, remote: str | ipaddress.IPv4Address | ipaddress.IPv6Address, pkt_mark: int = 0
               ) -> dict[str, str]:
        """A tunnel port's ``Interface.status`` for ``remote``: ``tunnel_egress_iface`` and
        ``tunnel_egress_iface_carrier`` ("up" / "down"), or nothing when no route reaches it."""
        route = self.lookup(remote, pkt_mark)
        if route is None:
            return {}
        device = self.devices.get(route.dev)
        return {"tunnel_egress_iface": route.dev,
                "tunnel_egress_iface_carrier": "up" if device is not None and device.carrier else "down"}
