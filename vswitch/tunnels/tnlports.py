"""The tunnel ports' receive map, as ovs-vswitchd's ``tnl-ports`` keeps it (OVS 3.1): which frames arriving on an
underlay bridge are tunnel traffic to decapsulate, and ``tnl/ports/show``.

One datapath port serves every tunnel port of a type and UDP port (``genev_sys_6081``, ``vxlan_sys_4789``,
``gre_sys``): ``insert`` / ``delete`` count the OpenFlow ports sharing it (``ref_cnt``). The addresses that
receive are those of the devices routes go out of (the route table tells: ``insert_ipdev`` / ``delete_ipdev``;
loopback devices excluded): a frame is tunnel traffic when its destination MAC is the device's, its destination
IP one of the device's addresses, its protocol the type's (UDP, GRE, TCP for STT) and, for UDP, its destination
port the port's. ``lookup`` answers that question for the decapsulation path.

``tnl/ports/show -v`` lists the receive rules in OVS's order: by rule shape (IPv4 / IPv6, with or without a UDP
port), shapes in the order they appeared (a removed shape's place is taken by the last one), rules of a shape in
insertion order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from vswitch.tunnels.kernel import Device
from vswitch.tunnels.ovstext import format_mac, format_mapped, is_mapped

UDP, TCP, GRE = 17, 6, 47
NW_PROTO = {"geneve": UDP, "vxlan": UDP, "gtpu": UDP, "stt": TCP,
            "gre": GRE, "erspan": GRE, "ip6erspan": GRE, "ip6gre": GRE}
DPIF_PORT = {"geneve": "genev_sys", "vxlan": "vxlan_sys", "gre": "gre_sys", "lisp": "lisp_sys", "stt": "stt_sys",
             "erspan": "erspan_sys", "ip6erspan": "ip6erspan_sys", "ip6gre": "ip6gre_sys", "gtpu": "gtpu_sys",
             "bareudp": "udp_sys"}
NEEDS_DST_PORT = frozenset({"geneve", "vxlan", "lisp", "stt", "gtpu", "bareudp"})
DEFAULT_DST_PORT = {"geneve": 6081, "vxlan": 4789, "lisp": 4341, "stt": 7471, "gtpu": 2152}
IFACE_TYPES = ("afxdp", "afxdp-nonpmd", "bareudp", "erspan", "geneve", "gre", "gtpu", "internal", "ip6erspan",
               "ip6gre", "lisp", "patch", "stt", "system", "tap", "vxlan")   # ovs-vswitchd 3.1's, netdev


def dpif_port_name(tnl_type: str, dst_port: int | None = None) -> str:
    """The datapath port a tunnel port of ``tnl_type`` uses: ``genev_sys_6081``, ``vxlan_sys_4789``, ``gre_sys``."""
    base = DPIF_PORT[tnl_type]
    if tnl_type not in NEEDS_DST_PORT:
        return base
    return f"{base}_{dst_port if dst_port is not None else DEFAULT_DST_PORT.get(tnl_type, 0)}"


@dataclass
class _TnlPort:
    port: int
    tp_port: int
    nw_proto: int
    dev_name: str
    ref_cnt: int = 1


@dataclass
class _Rule:
    key: tuple              # (mac, addr, nw_proto, tp_port or 0)
    port: int
    dev_name: str
    ref_cnt: int = 1

    def line(self) -> str:
        mac, addr, proto, tp = self.key
        if is_mapped(addr):
            l3 = f"eth_type(0x0800),ipv4(dst={format_mapped(addr)},proto={proto},frag=no)"
        else:
            l3 = f"eth_type(0x86dd),ipv6(dst={format_mapped(addr)},proto={proto},frag=no)"
        l4 = "" if not tp else f",{'tcp' if proto == TCP else 'udp'}(dst={tp})"
        return f"{self.dev_name} ({self.port}) : eth(dst={format_mac(mac)}),{l3}{l4}"


@dataclass
class _IpDev:
    name: str
    mac: bytes
    addrs: list[int]
    stamp: tuple


@dataclass
class TunnelPortMap:
    """OVS's tunnel receive map: tunnel datapath ports x local addresses of the route table's devices."""
    ports: list[_TnlPort] = field(default_factory=list)
    ipdevs: list[_IpDev] = field(default_factory=list)
    _shapes: list[tuple[bool, bool]] = field(default_factory=list)
    _rules: dict[tuple[bool, bool], list[_Rule]] = field(default_factory=dict)
    version: int = 0

    # ------------------------------------------------------------ rules (OVS's classifier, priority 0)
    def _find(self, key: tuple) -> _Rule | None:
        for rule in self._rules.get((is_mapped(key[1]), bool(key[3])), ()):
            if rule.key == key:
                return rule
        return None

    def _map_insert(self, port: int, mac: bytes, addr: int, proto: int, tp: int, dev_name: str) -> None:
        key = (mac, addr, proto, tp)
        rule = self._find(key)
        if rule is not None:
            rule.ref_cnt += 1
            return
        shape = (is_mapped(addr), bool(tp))
        if shape not in self._rules:
            self._rules[shape] = []
            self._shapes.append(shape)
        self._rules[shape].append(_Rule(key, port, dev_name))

    def _map_delete(self, mac: bytes, addr: int, proto: int, tp: int) -> None:
        rule = self._find((mac, addr, proto, tp))
        if rule is None:
            return
        rule.ref_cnt -= 1
        if rule.ref_cnt:
            return
        shape = (is_mapped(addr), bool(tp))
        self._rules[shape].remove(rule)
        if not self._rules[shape]:
            del self._rules[shape]
            i = self._shapes.index(shape)
            last = self._shapes.pop()
            if last != shape:
                self._shapes[i] = last

    # ------------------------------------------------------------ tunnel datapath ports
    def insert(self, port: int, tp_port: int, dev_name: str, tnl_type: str) -> None:
        """``tnl_port_map_insert``: an OpenFlow tunnel port using datapath port ``port`` (``dev_name``, UDP port
        ``tp_port``; 0 for GRE) now exists."""
        proto = NW_PROTO.get(tnl_type, 0)
        if not proto:
            return
        for p in self.ports:
            if p.port == port and p.nw_proto == proto:
                p.ref_cnt += 1
                return
        p = _TnlPort(port, tp_port if proto != GRE else 0, proto, dev_name)
        self.ports.append(p)
        for dev in self.ipdevs:
            for addr in dev.addrs:
                self._map_insert(p.port, dev.mac, addr, p.nw_proto, p.tp_port, p.dev_name)
        self.version += 1

    def delete(self, port: int, tnl_type: str) -> None:
        """``tnl_port_map_delete``: one OpenFlow port using ``port`` went away."""
        proto = NW_PROTO.get(tnl_type, 0)
        for p in self.ports:
            if p.port == port and p.nw_proto == proto:
                p.ref_cnt -= 1
                if not p.ref_cnt:
                    self.ports.remove(p)
                    for dev in self.ipdevs:
                        for addr in dev.addrs:
                            self._map_delete(dev.mac, addr, p.nw_proto, p.tp_port)
                    self.version += 1
                return

    # ------------------------------------------------------------ local addresses (told by the route table)
    def insert_ipdev(self, dev: Device) -> None:
        """``tnl_port_map_insert_ipdev``: a route goes out of ``dev``; its addresses receive tunnel traffic."""
        stamp = dev.stamp()
        for old in list(self.ipdevs):
            if old.name == dev.name:
                if old.stamp == stamp:
                    return
                self._delete_ipdev(old)
        if dev.loopback:
            return
        ipdev = _IpDev(dev.name, dev.mac, [a for a, _ in dev.addrs], stamp)
        self.ipdevs.append(ipdev)
        for p in self.ports:
            for addr in ipdev.addrs:
                self._map_insert(p.port, ipdev.mac, addr, p.nw_proto, p.tp_port, p.dev_name)
        self.version += 1

    def delete_ipdev(self, name: str) -> None:
        """``tnl_port_map_delete_ipdev``."""
        for old in [d for d in self.ipdevs if d.name == name]:
            self._delete_ipdev(old)

    def _delete_ipdev(self, ipdev: _IpDev) -> None:
        for p in self.ports:
            for addr in ipdev.addrs:
                self._map_delete(ipdev.mac, addr, p.nw_proto, p.tp_port)
        self.ipdevs.remove(ipdev)
        self.version += 1

    # ------------------------------------------------------------ queries
    def lookup(self, dl_dst: bytes, dst: int, nw_proto: int, tp_dst: int) -> int | None:
        """``tnl_port_map_lookup``: the tunnel datapath port a frame (destination MAC, 128-bit destination IP,
        protocol, destination port) is for, or None."""
        for shape in self._shapes:
            for rule in self._rules[shape]:
                mac, addr, proto, tp = rule.key
                if mac == dl_dst and addr == dst and proto == nw_proto and (not tp or tp == tp_dst):
                    return rule.port
        return None

    def show(self, verbose: bool = False) -> str:
        """``tnl/ports/show`` (``-v``: the receive rules)."""
        lines = ["Listening ports:\n"]
        if verbose:
            lines += [rule.line() + "\n" for shape in self._shapes for rule in self._rules[shape]]
        else:
            lines += [f"{p.dev_name} ({p.port}) ref_cnt={p.ref_cnt}\n" for p in self.ports]
        return "".join(lines)


def ports_show(ports: Iterable[tuple[str, int, int]]) -> str:
    """``tnl/ports/show`` for OpenFlow tunnel ports given as (type, UDP destination port, datapath port), in the
    order they were added."""
    tmap = TunnelPortMap()
    for tnl_type, dst_port, odp_port in ports:
        tmap.insert(odp_port, dst_port, dpif_port_name(tnl_type, dst_port), tnl_type)
    return tmap.show()


@dataclass
class SourcePorts:
    """``tnl/egress_port_range``: the UDP source ports tunnel headers take, from a hash of the inner flow."""
    low: int = 32768
    high: int = 61000

    def pick(self, flow_hash: int) -> int:
        """OVS's ``netdev_tnl_get_src_port``: the 32-bit ``flow_hash`` scaled into [low, high)."""
        return ((flow_hash & 0xFFFFFFFF) * (self.high - self.low) >> 32) + self.low
