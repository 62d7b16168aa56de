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
from typing import Any

import numpy as np

from backends.port import TX_BYTES, TX_PACKETS, Port
from backends.tunnel import FLOW, NO_KEY, TunnelPort
from dpif import key as K
from dpif.tunnel import (
    KIND_NAMES,
    TC_NEIGH_UNRESOLVED,
    TC_NO_ROUTE,
    TC_NO_SLOT,
    TC_OVERFLOW,
    TC_TOO_BIG,
    TC_TX_BYTES,
    TC_TX_PACKETS,
    TNL_GRE,
    TS_NEIGH_UNRESOLVED,
    TS_NO_ROUTE,
    TS_READY,
    TunnelHeader,
    TunnelPorts,
)
from dpif.tunnel_pop import (
    EP_FLAGS,
    EP_IP_HI,
    EP_IP_LO,
    EP_MAC,
    EP_V4,
    EP_V6,
    SN_WORDS,
    SNK_ND_ADVERT,
    TP_DP_PORT,
    TP_FLAGS,
    TP_KIND,
    TP_UDP,
    TPF_V6,
    TerminationTable,
    tlv_table,
    tnl_terminate,
)
from ofproto import tlvmap
from vswitch.tunnels.neigh import arp_request, nd_solicit
from xlate.bridges import PF_LOCAL
from xlate.tunnel import Egress

log = logging.getLogger(__name__)

ETH_P_ALL = 0x0003
MAX_BURST = 1024           # vswitch.burstpath's
SNOOP_ROWS = 64            # ARP / ND answers kept per burst


def _mac_int(mac: str) -> int:
    return int(mac.replace(":", ""), 16) if mac else 0


def _mtu(dev: str) -> int:
    try:
        with open(f"/sys/class/net/{dev}/mtu") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 1500


class SwitchUnderlay:
    """The translator's ``xlate.tunnel.Underlay``: routes (``RouteTable``), neighbours (``NeighCache``) and the
    datapath's bridges and LOCAL ports. Lookups run on the datapath thread; ARP / NS requests are sent from a
    packet socket on the egress bridge's internal port (the switch receives them there and forwards them as
    the bridge's own frames)."""

    def __init__(self, routes: Any, neigh: Any, datapath: DpTunnels | None = None) -> None:
        self.routes = routes
        self.neigh = neigh
        self.datapath = datapath
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
        gw = route.gw
        nexthop = int(gw) if gw is not None and int(gw) else remote
        return Egress(bridge, port, dev, source, mac, nexthop, _mtu(dev))

    def neighbor(self, ip: int, ipv6: bool, egress: Egress) -> int | None:
        addr = ipaddress.IPv6Address(ip) if ipv6 else ipaddress.IPv4Address(ip)
        mac = self.neigh.lookup(addr, egress.dev)
        return None if mac is None else int.from_bytes(mac, "big")

    def resolve(self, ip: int, ipv6: bool, egress: Egress) -> None:
        """Send an ARP request (IPv6: a neighbour solicitation) for ``ip`` out of ``egress.dev``, at most one a
        second per address (the neighbour cache's ``should_request``)."""
        target = ipaddress.IPv6Address(ip) if ipv6 else ipaddress.IPv4Address(ip)
        with self._lock:
            if not self.neigh.should_request(target):
                return
        mac = egress.mac.to_bytes(6, "big")
        try:
            if ipv6:
                frame = nd_solicit(target, ipaddress.IPv6Address(egress.src), mac)
            else:
                frame = arp_request(target, ipaddress.IPv4Address(egress.src), mac)
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as s:
                s.bind((egress.dev, 0))
                s.send(frame)
        except OSError as exc:
            log.warning("tunnel: could not ask for %s's MAC on %s: %s", target, egress.dev, exc)


def egress_status(routes: Any, port: TunnelPort) -> tuple[str, bool] | None:
    """``Interface.status`` of a tunnel port: the device the route to its remote leaves by, and its carrier."""
    cfg = port.config
    if cfg.remote < 0:
        return None
    addr = ipaddress.IPv6Address(cfg.remote) if cfg.ipv6 else ipaddress.IPv4Address(cfg.remote)
    got = routes.egress(addr) if routes is not None else {}
    if not got:
        return None
    return got["tunnel_egress_iface"], got["tunnel_egress_iface_carrier"] == "up"


def endpoint_addresses(routes: Any) -> dict[str, list[tuple[int, bool]]]:
    """Each device's addresses [(address, ipv6)] from the route table's view of the namespace."""
    out: dict[str, list[tuple[int, bool]]] = {}
    for name, dev in getattr(routes, "devices", {}).items():
        addrs = []
        for addr, _mask in dev.addrs:
            if addr >> 32 == 0xFFFF:          # an IPv4-mapped address
                addrs.append((addr & 0xFFFF_FFFF, False))
            elif addr >> 118 != 0x3FA:        # IPv6, link-local (fe80::/10) left out
                addrs.append((addr, True))
        out[name] = addrs
    return out


class DpTunnels:
    """The datapath's tunnel state (mixed into ``Datapath``; datapath thread unless said)."""

    ports: list[Port | None]
    port_flags: np.ndarray
    port_bridge: np.ndarray
    bridges: list[Any]
    pool: Any
    fdrops: np.ndarray
    patch_ports: np.ndarray

    def _init_tunnels(self) -> None:
        self.underlay: SwitchUnderlay | None = None
        self.tunnel_configs: dict[int, Any] = {}
        #: bridge device -> its addresses [(address, ipv6)] (from the control side: ``set_tunnel_endpoints``)
        self.endpoint_addrs: dict[str, list[tuple[int, bool]]] = {}
        self.term: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self.term_ports: frozenset[int] = frozenset()    # the ports whose frames ``tnl_terminate`` looks at
        self.tunnel_group = -1          # >= 0: the burst group of every tunnel port (``BurstPath._process``)
        self.tkeep = np.zeros(MAX_BURST, dtype=np.int32)
        self.tburst = np.zeros(MAX_BURST, dtype=np.int32)
        self.tdropped = np.zeros(MAX_BURST, dtype=np.int32)
        self.tn = 0
        self.snoop = np.zeros((SNOOP_ROWS, SN_WORDS), dtype=np.uint64)
        self.snoop_n = np.zeros(2, dtype=np.int64)
        self.tunnel_ports = TunnelPorts(0)
        self.tnl_port_list = np.zeros(0, dtype=np.int64)
        self.round_ports = np.zeros(0, dtype=np.int64)   # patch and tunnel ports: what the rounds hand over

    # ------------------------------------------------------------ control side
    def set_underlay(self, underlay: SwitchUnderlay | None) -> None:
        """The routes and neighbours the translator uses for tunnels (control side, once at start)."""
        def put() -> None:
            self.underlay = underlay
            self.rebuild()
        self.call(put)

    def set_tunnel_endpoints(self, addrs: dict[str, list[tuple[int, bool]]]) -> None:
        """The addresses of each bridge's internal port (control side, when they change): tunnels terminate
        there; headers and megaflows follow."""
        def put() -> None:
            self.endpoint_addrs = addrs
            self.tunnels_changed()
        self.call(put)

    def refresh_tunnels(self) -> None:
        """Routes, neighbours or the TLV map changed (control side): headers, tables and megaflows follow."""
        self.call(self.tunnels_changed)

    # ------------------------------------------------------------ datapath thread
    def tunnels_changed(self) -> None:
        """Rebuild what depends on routes, neighbours, addresses and tunnel ports; forget the megaflows."""
        self._tunnel_rebuild()
        self._flush_megaflows()

    def _tunnel_rebuild(self) -> None:
        """The tunnel ports, the termination tables and the headers NORMAL's frames get (after any port, bridge,
        route or neighbour change)."""
        self.tunnel_configs = {p.port_no: p.config for p in self.ports if isinstance(p, TunnelPort)}
        n = len(self.ports)
        if self.tunnel_ports.state.shape[0] != n:
            self.tunnel_ports = TunnelPorts(n)
        self.tnl_port_list = np.array(sorted(self.tunnel_configs), dtype=np.int64)
        self.round_ports = np.concatenate([self.patch_ports, self.tnl_port_list])
        groups = {int(self.port_group[p]) for p in self.tunnel_configs if p < len(self.port_group)}
        self.tunnel_group = groups.pop() if len(groups) == 1 else -1
        self._tunnel_headers()
        self._termination_tables()

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

    def _tunnel_headers(self) -> None:
        """Each fixed-remote tunnel port's header for the frames NORMAL sends it (``tunnel_handover``)."""
        tp = self.tunnel_ports
        for port_no, cfg in self.tunnel_configs.items():
            h, underlay, state = None, -1, TS_NO_ROUTE
            if self.underlay is not None and cfg.remote >= 0 and cfg.out_key != FLOW:
                eg = self.underlay.egress(cfg.remote, cfg.ipv6, cfg.local if cfg.local not in (None, FLOW) else None)
                if eg is not None:
                    mac = self.underlay.neighbor(eg.nexthop, cfg.ipv6, eg)
                    underlay, state = eg.port, TS_READY if mac is not None else TS_NEIGH_UNRESOLVED
                    h = TunnelHeader(kind=cfg.kind_id, eth_dst=mac or 0, eth_src=eg.mac, ipv6=cfg.ipv6,
                                     ip_src=eg.src, ip_dst=cfg.remote, tos=max(cfg.tos, 0), ttl=cfg.ttl, df=cfg.df,
                                     udp_dst=cfg.dst_port, csum=cfg.csum,
                                     key=None if cfg.out_key == NO_KEY else cfg.out_key, tos_inherit=cfg.tos < 0,
                                     mtu=eg.mtu)
            tp.set_port(port_no, h, underlay, state)

    def _termination_tables(self) -> None:
        """``tnl_terminate``'s arrays: endpoints (each bridge's internal port with addresses), the tunnel ports,
        the TLV map; None when nothing can terminate."""
        table = TerminationTable()
        port_term = np.zeros(len(self.ports), dtype=np.uint8)
        for dev, addrs in self.endpoint_addrs.items():
            local = self.local_port(dev)
            if local is None or not addrs:
                continue
            b, local_port, mac = local
            for addr, ipv6 in addrs:
                table.add_endpoint(addr, mac, ipv6)
            port_term[(self.port_bridge[: len(port_term)] == b)] = 1
            port_term[local_port] = 0
        for port_no, cfg in self.tunnel_configs.items():
            table.add_port(cfg.kind_id, cfg.dst_port, None if cfg.local in (None, FLOW) else cfg.local,
                           None if cfg.remote == FLOW else cfg.remote,
                           None if cfg.in_key == FLOW else max(cfg.in_key, 0), cfg.ipv6, port_no)
        if not table.endpoints or not table.ports:
            self.term = None
            self.term_ports = frozenset()
            return
        endpoints, tports = table.arrays()
        self.term = (port_term, endpoints, tports, tlv_rows())
        self.term_ports = frozenset(np.flatnonzero(port_term).tolist())

    def termination_of(self, key: list[int]) -> tuple[int, str] | None:
        """For ``ofproto/trace``: when a frame with key words ``key`` would be taken by ``tnl_terminate`` (an
        endpoint's MAC and address, a tunnel port's protocol and UDP port), the datapath port of the first tunnel
        port of that kind and port (the key and remote are in the outer payload: not in a trace's flow), and the
        kind; else None."""
        if self.term is None:
            return None
        port_term, endpoints, tports, _tlv = self.term
        p = key[K.W_IN_PORT]
        if not (0 <= p < len(port_term) and port_term[p]):
            return None
        ethertype, proto = key[K.W_ETH_TYPE] & 0xFFFF, key[K.W_NW] & 0xFF
        if ethertype == 0x0800:
            v6, hi, lo = False, 0, key[K.W_NW_DST]
        elif ethertype == 0x86DD:
            v6, hi, lo = True, key[K.W_IPV6_DST], key[K.W_IPV6_DST + 1]
        else:
            return None
        if not any(int(e[EP_FLAGS]) == (EP_V6 if v6 else EP_V4) and int(e[EP_MAC]) == key[K.W_ETH_DST]
                   and int(e[EP_IP_HI]) == hi and int(e[EP_IP_LO]) == lo for e in endpoints):
            return None
        udp = key[K.W_TP] >> 16 & 0xFFFF
        for t in tports:
            kind = int(t[TP_KIND])
            if bool(int(t[TP_FLAGS]) & TPF_V6) != v6:
                continue
            if (proto == 47 and kind == TNL_GRE) or (proto == 17 and kind != TNL_GRE and int(t[TP_UDP]) == udp):
                return int(t[TP_DP_PORT]), KIND_NAMES[kind]
        return None

    def _terminate(self, burst: np.ndarray, n: int) -> tuple[np.ndarray, int]:
        """Take the frames for local tunnel endpoints out of ``burst[:n]``: decapsulated ones into ``tburst``
        (``tn``), dropped ones counted and freed; returns the rest (``tkeep``, in burst order) and their count."""
        assert self.term is not None
        port_term, endpoints, tports, tlv = self.term
        pool = self.pool
        nk, nt, nd = tnl_terminate(pool.data, pool.meta, pool.tun, burst, n, port_term, endpoints, tports, tlv,
                                   self.tkeep, self.tburst, self.tdropped, self.fdrops, self.snoop, self.snoop_n)
        if nd:
            pool.free(self.tdropped, nd)
        self.tn = nt
        if self.snoop_n[0] or self.snoop_n[1]:
            self._snooped()
        return self.tkeep, nk

    def _snooped(self) -> None:
        """The ARP / ND answers the burst held: into the neighbour cache (a change rebuilds the headers)."""
        rows = self.snoop[: int(self.snoop_n[0])].tolist()
        self.snoop_n[:] = 0
        if self.underlay is None:
            return
        neigh = self.underlay.neigh
        changed = False
        for hi, lo, mac, info in rows:
            port = int(info) & 0xFFFF_FFFF
            b = int(self.port_bridge[port]) if 0 <= port < len(self.port_bridge) else -1
            br = self.bridges[b] if 0 <= b < len(self.bridges) else None
            if br is None:
                continue
            ipv6 = bool(hi) or (int(info) >> 32) == SNK_ND_ADVERT
            ip = (int(hi) << 64 | int(lo)) if ipv6 else int(lo)
            addr = ipaddress.IPv6Address(ip) if ipv6 else ipaddress.IPv4Address(ip)
            raw = int(mac).to_bytes(6, "big")
            if neigh.lookup(addr, br.name) != raw:
                changed = True
            neigh.snoop(addr, raw, br.name)
        if changed:
            self.tunnels_changed()

    def _count_tunnels(self) -> None:
        """Move ``tunnel_handover``'s counts to the ports' counters and their bridges' drop counters."""
        counts = self.tunnel_ports.counts
        for p in self.tnl_port_list.tolist():
            row = counts[p]
            if not row.any():
                continue
            port = self.ports[p]
            if port is not None:
                port.counters[TX_PACKETS] += row[TC_TX_PACKETS]
                port.counters[TX_BYTES] += row[TC_TX_BYTES]
            for counter, i in (("tunnel_no_route", TC_NO_ROUTE), ("tunnel_neigh_unresolved", TC_NEIGH_UNRESOLVED),
                               ("tunnel_no_free_slot", TC_NO_SLOT), ("tunnel_overflow", TC_OVERFLOW),
                               ("tunnel_too_big", TC_TOO_BIG)):
                if row[i]:
                    self._bridge_of(p, counter, int(row[i]))
            if row[TC_NEIGH_UNRESOLVED] and self.underlay is not None:
                self._ask_neighbor(p)
            row[:] = 0

    def _ask_neighbor(self, port_no: int) -> None:
        """NORMAL sent frames to a tunnel port whose next hop is unresolved: ask for it."""
        cfg = self.tunnel_configs.get(port_no)
        if cfg is None or self.underlay is None:
            return
        eg = self.underlay.egress(cfg.remote, cfg.ipv6, cfg.local if cfg.local not in (None, FLOW) else None)
        if eg is not None:
            self.underlay.resolve(eg.nexthop, cfg.ipv6, eg)


def tlv_rows() -> np.ndarray:
    """``tnl_terminate``'s TLV table from the TLV map: (class, type, length, byte offset in the option words or
    -1 when the key does not hold it)."""
    rows = []
    for name, (cls, typ, length) in tlvmap.mapped().items():
        where = tlvmap.flow_slice(name)
        if where is None:
            rows.append((cls, typ, length, -1))
        else:
            word, shift, bits = where
            rows.append((cls, typ, length, 8 * (word - K.W_TUN_METADATA) + (64 - shift - bits) // 8))
    return tlv_table(rows)
