"""The tunnels' neighbour cache, as ovs-vswitchd's ``tnl-neigh-cache`` keeps it (OVS 3.1): the next hop's MAC per
(underlay bridge, IP), learned by snooping ARP / ND on the bridge and set by ``tnl/neigh/set``.

What OVS learns (``terminate_native_tunnel``, for a frame going to a bridge port that holds addresses):
  * an ARP reply addressed to one of the bridge's addresses, or a gratuitous ARP (broadcast, sender = target),
    with a non-zero sender MAC: sender IP -> sender MAC;
  * a Neighbour Advertisement to one of the bridge's addresses (or its solicited-node group) with a non-zero
    target link-layer option: target -> that MAC;
  * a decapsulated tunnel frame: outer source IP -> outer source MAC.
An entry lives ``aging`` seconds (900 by default, ``tnl/neigh/aging`` sets 1..3600) after it was last set or
used by a lookup; an expired entry is no longer found, shows as STALE until ``run()`` removes it.

When the next hop is unknown OVS sends an ARP request / Neighbour Solicitation out of the egress bridge
(``arp_request`` / ``nd_solicit`` build them byte for byte); ``should_request`` keeps that to one per address per
second (OVS sends one per translation of the flow).

``show()`` lists the entries in insertion order: OVS lists its hash table, whose order changes with a random
seed per process, so no order is OVS's and the tests compare lines as a set.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from vswitch.tunnels.ovstext import format_mac, format_mapped, is_mapped, mapped

DEFAULT_AGING = 15 * 60          # NEIGH_ENTRY_DEFAULT_IDLE_TIME_MS, in seconds
MAX_AGING = 3600                 # NEIGH_ENTRY_MAX_AGING_TIME_S
REQUEST_INTERVAL = 1.0           # seconds between two ARP / ND requests for one address
INET6_ADDRSTRLEN = 46
HEADER = ("IP                                            MAC                 Bridge\n"
          "==========================================================================\n")
BROADCAST = b"\xff" * 6
ETH_ARP, ETH_IPV6 = 0x0806, 0x86DD
ICMPV6, ND_NS, ND_NA = 58, 135, 136


@dataclass
class Neighbour:
    """One entry: ``ip`` (128-bit, IPv4 mapped), ``mac``, the bridge it was learned on, when it expires."""
    ip: int
    mac: bytes
    bridge: str
    expires: float


class NeighCache:
    """OVS's tunnel neighbour cache. ``version`` moves whenever an entry is added, changed or removed (a tunnel
    header built with an older version may carry a stale MAC)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.aging = DEFAULT_AGING
        self.entries: dict[tuple[str, int], Neighbour] = {}
        self.version = 0
        self._requested: dict[int, float] = {}

    def _now(self, now: float | None) -> float:
        return self.clock() if now is None else now

    def lookup(self, ip: object, bridge: str, now: float | None = None) -> bytes | None:
        """The MAC of ``ip`` on ``bridge`` (found entries live ``aging`` more seconds), None if unknown or
        expired."""
        now = self._now(now)
        entry = self.entries.get((bridge, mapped(ip)))
        if entry is None or entry.expires <= now:
            return None
        entry.expires = now + self.aging
        return entry.mac

    def set(self, bridge: str, ip: object, mac: bytes, now: float | None = None) -> None:
        """``tnl_neigh_set``: the same MAC only refreshes the entry; another MAC replaces it."""
        now = self._now(now)
        key = (bridge, mapped(ip))
        entry = self.entries.get(key)
        if entry is not None and entry.expires > now and entry.mac == bytes(mac):
            entry.expires = now + self.aging
            return
        self.entries.pop(key, None)
        self.entries[key] = Neighbour(key[1], bytes(mac), bridge, now + self.aging)
        self._requested.pop(key[1], None)
        self.version += 1

    def snoop(self, ip: object, mac: bytes, bridge: str, now: float | None = None) -> None:
        """What the datapath saw (see ``neighbour_of``): ``ip`` is at ``mac`` on ``bridge``."""
        self.set(bridge, ip, mac, now)

    def flush(self) -> None:
        """``tnl/neigh/flush``: forget everything."""
        if self.entries:
            self.entries.clear()
            self.version += 1

    def flush_bridge(self, bridge: str) -> None:
        """Forget what was learned on ``bridge`` (OVS does when the bridge's port goes away)."""
        gone = [k for k in self.entries if k[0] == bridge]
        for k in gone:
            del self.entries[k]
        if gone:
            self.version += 1

    def run(self, now: float | None = None) -> bool:
        """``tnl_neigh_cache_run``: remove expired entries; True when any went."""
        now = self._now(now)
        gone = [k for k, e in self.entries.items() if e.expires <= now]
        for k in gone:
            del self.entries[k]
        if gone:
            self.version += 1
        return bool(gone)

    def set_aging(self, seconds: int, now: float | None = None) -> None:
        """``tnl/neigh/aging SECS``: the new lifetime; entries expiring later than now + ``seconds`` are cut."""
        if not 1 <= seconds <= MAX_AGING:
            raise ValueError("bad aging value")
        now = self._now(now)
        self.aging = seconds
        for e in self.entries.values():
            e.expires = min(e.expires, now + seconds)

    def show(self, now: float | None = None) -> str:
        """``tnl/neigh/show``'s text (IPv4 and IPv6, the address padded to INET6_ADDRSTRLEN)."""
        now = self._now(now)
        lines = [HEADER]
        for e in self.entries.values():
            ip = format_mapped(e.ip)
            stale = " STALE" if e.expires <= now else ""
            lines.append(f"{ip}{' ' * (INET6_ADDRSTRLEN - len(ip))}{format_mac(e.mac)}   {e.bridge}{stale}\n")
        return "".join(lines)

    def should_request(self, ip: object, now: float | None = None) -> bool:
        """Whether to send an ARP request / Neighbour Solicitation for ``ip`` now: at most one per address per
        ``REQUEST_INTERVAL``."""
        now = self._now(now)
        addr = mapped(ip)
        last = self._requested.get(addr)
        if last is not None and now - last < REQUEST_INTERVAL:
            return False
        if len(self._requested) > 4096:        # bounded: forget requests that are long past
            self._requested = {a: t for a, t in self._requested.items() if now - t < REQUEST_INTERVAL}
        self._requested[addr] = now
        return True


# ---------------------------------------------------------------------- frames OVS sends
def arp_request(target_ip: object, src_ip: object, src_mac: bytes) -> bytes:
    """OVS's ``compose_arp`` request: broadcast, sender ``src_mac`` / ``src_ip``, target MAC zero (42 bytes)."""
    tpa, spa = mapped(target_ip), mapped(src_ip)
    if not (is_mapped(tpa) and is_mapped(spa)):
        raise ValueError("ARP needs IPv4 addresses")
    return (BROADCAST + bytes(src_mac) + struct.pack("!HHHBBH", ETH_ARP, 1, 0x0800, 6, 4, 1)
            + bytes(src_mac) + struct.pack("!I", spa & 0xFFFFFFFF) + bytes(6) + struct.pack("!I", tpa & 0xFFFFFFFF))


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def solicited_node(ip6: int) -> int:
    """ff02::1:ffXX:XXXX for ``ip6``."""
    return (0xFF02 << 112) | (0x1FF << 24) | (ip6 & 0xFFFFFF)


def nd_solicit(target_ip6: object, src_ip6: object, src_mac: bytes) -> bytes:
    """OVS's ``compose_nd_ns``: to the target's solicited-node group (and its 33:33:ff:.. MAC), hop limit 255,
    with the source link-layer address option (86 bytes)."""
    target, src = mapped(target_ip6), mapped(src_ip6)
    group = solicited_node(target)
    dst_mac = b"\x33\x33" + (group & 0xFFFFFFFF).to_bytes(4, "big")
    body = struct.pack("!BBHI", ND_NS, 0, 0, 0) + target.to_bytes(16, "big") + bytes((1, 1)) + bytes(src_mac)
    pseudo = src.to_bytes(16, "big") + group.to_bytes(16, "big") + struct.pack("!I3xB", len(body), ICMPV6)
    csum = _checksum(pseudo + body)
    body = body[:2] + struct.pack("!H", csum) + body[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(body), ICMPV6, 255) + src.to_bytes(16, "big") + group.to_bytes(16, "big")
    return dst_mac + bytes(src_mac) + struct.pack("!H", ETH_IPV6) + ip6 + body


# ---------------------------------------------------------------------- what OVS learns from
def neighbour_of(frame: bytes, addrs: Iterable[object]) -> tuple[int, bytes] | None:
    """The (IP, MAC) OVS's snooping learns from ``frame`` going to a bridge port holding ``addrs`` (the
    bridge's addresses), or None. See the module's docstring for the rules."""
    if len(frame) < 14:
        return None
    eth_type, off = struct.unpack_from("!H", frame, 12)[0], 14
    while eth_type in (0x8100, 0x88A8) and len(frame) >= off + 4:
        eth_type, off = struct.unpack_from("!H", frame, off + 2)[0], off + 4
    mine = {mapped(a) for a in addrs}
    if eth_type == ETH_ARP:
        if len(frame) < off + 28:
            return None
        hrd, pro, hln, pln, op = struct.unpack_from("!HHBBH", frame, off)
        if hrd != 1 or pro != 0x0800 or hln != 6 or pln != 4:
            return None
        sha = frame[off + 8:off + 14]
        spa = mapped(0xFFFF << 32 | struct.unpack_from("!I", frame, off + 14)[0])
        tpa = mapped(0xFFFF << 32 | struct.unpack_from("!I", frame, off + 24)[0])
        garp = frame[:6] == BROADCAST and spa == tpa
        if not (garp or tpa in mine) or not (garp or op == 2) or sha == bytes(6):
            return None
        return spa, sha
    if eth_type == ETH_IPV6 and len(frame) >= off + 40 + 24:
        nxt = frame[off + 6]
        dst = int.from_bytes(frame[off + 24:off + 40], "big")
        icmp = off + 40
        if nxt != ICMPV6 or frame[icmp] != ND_NA or frame[icmp + 1] != 0:
            return None
        if not any(dst == a or (dst >> 24 == solicited_node(a) >> 24 and dst & 0xFFFFFF == a & 0xFFFFFF)
                   for a in mine if not is_mapped(a)):
            return None
        target = int.from_bytes(frame[icmp + 8:icmp + 24], "big")
        tll, opt = None, icmp + 24
        while opt + 8 <= len(frame):
            kind, length = frame[opt], frame[opt + 1] * 8
            if length == 0 or opt + length > len(frame):
                return None                     # OVS's extract zeroes the addresses of a malformed ND
            if kind == 2 and length == 8:
                tll = frame[opt + 2:opt + 8]
            opt += length
        if tll is None or tll == bytes(6):
            return None
        return target, tll
    return None
