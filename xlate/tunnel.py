"""An output to a tunnel port: the outer headers built, then the walk goes on in the underlay bridge (OVS's
native tunnelling, ``build_tunnel_send``). A part of the translator's walk (``xlate.translate``).

```
 output:tun ─► remote (the port's remote_ip, or the flow's tun_dst) ─► Underlay.egress: route ─► bridge, src
            ─► Underlay.neighbor: the next hop's MAC  (unknown: an ARP / NS is asked for, the packet dropped)
            ─► CLONE( TNL_PUSH(outer Ethernet / IP / UDP / Geneve | VXLAN | GRE), <the underlay bridge's walk of
                      the outer packet, from its LOCAL port: NORMAL, or its flows> )
```

The header is a constant of the megaflow: everything it holds comes from the port's options, the route, the
neighbour cache and flow fields the walk un-wildcards (``tun_id`` / ``tun_dst`` with ``flow`` options, the Geneve
options of the TLV map); the outer TOS's inherited DSCP (``tos=inherit``) and ECN are copied by the datapath, per
frame. The underlay walk's own mask is left out: it looks
at the outer packet, which the inner megaflow fixes (the UDP source port, a hash the datapath computes per frame,
reads as 0 there, as in OVS). A route or neighbour change flushes the megaflows (``Datapath.tunnels_changed``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from backends.tunnel import FLOW, NO_KEY, TunnelConfig
from dpif import actions as A
from dpif import key as K
from dpif.tunnel import TunnelHeader, tnl_push
from ofproto import fields as F
from ofproto import tlvmap
from ofproto.actions import FieldValue

if TYPE_CHECKING:
    from xlate.translate import _Walk

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
PROTO_UDP = 17
PROTO_GRE = 47
TNL_F_OAM = 1


@dataclass(frozen=True)
class Egress:
    """Where a tunnel's packets leave: the underlay bridge (its number) and its LOCAL datapath port, whose device
    ``dev`` holds the source address ``src``; the MAC of that port, the next hop and the device's MTU."""

    bridge: int
    port: int
    dev: str
    src: int
    mac: int
    nexthop: int
    mtu: int


class Underlay(Protocol):
    """What the switch answers the translator about the underlay (``vswitch.tunnelports``)."""

    def egress(self, remote: int, ipv6: bool, src: int | None) -> Egress | None:
        """The route to ``remote`` (from ``src``, when the port fixes it), or None."""

    def neighbor(self, ip: int, ipv6: bool, egress: Egress) -> int | None:
        """The MAC of ``ip`` on the egress bridge, or None (unresolved)."""

    def resolve(self, ip: int, ipv6: bool, egress: Egress) -> None:
        """Ask for ``ip``'s MAC (an ARP request / neighbour solicitation from the egress bridge)."""


def _ip(v: int, ipv6: bool) -> str:
    return str(ipaddress.IPv6Address(v) if ipv6 else ipaddress.IPv4Address(v))


def _mac(v: int) -> str:
    return ":".join(f"{v >> (8 * i) & 0xFF:02x}" for i in range(5, -1, -1))


def geneve_options(flow: list[int]) -> bytes:
    """The Geneve options of the TLV map that the flow holds (a mapped option with a non-zero value), encoded."""
    out = b""
    for name, (cls, typ, length) in sorted(tlvmap.mapped().items(), key=lambda kv: int(kv[0][12:])):
        where = tlvmap.flow_slice(name)
        if where is None:
            continue
        word, shift, bits = where
        if bits <= 64:
            v = flow[word] >> shift & ((1 << bits) - 1)
        else:
            v = 0
            for j in range(bits // 64):
                v = v << 64 | flow[word + j]
        if v:
            out += cls.to_bytes(2, "big") + bytes([typ, length // 4]) + v.to_bytes(length, "big")
    return out


def _read(walk: _Walk, name: str) -> int:
    fv = FieldValue.of(name)
    return walk.read(fv, 0, fv.bits)


def tunnel_output(walk: _Walk, q: int) -> None:
    """Output to tunnel port ``q``: encapsulate and continue in the underlay bridge, or drop with the reason."""
    tunnels = walk.bridges.tunnels
    cfg: TunnelConfig | None = tunnels.get(q)
    rec = walk.rec
    underlay = walk.bridges.underlay
    if cfg is None or underlay is None:
        if rec:
            rec.note("     -> a tunnel port the datapath does not know: dropped")
        return
    if walk.in_tunnel:
        if rec:
            rec.note("     -> a tunnel output inside a tunnel's underlay walk: not supported, dropped")
        return
    if rec:
        rec.note("     -> output to native tunnel")
    ipv6 = cfg.ipv6
    remote = cfg.remote
    if remote == FLOW:
        remote = _read(walk, "tun_dst")
        ipv6 = False
        if not remote:
            remote = _read(walk, "tun_ipv6_dst")
            ipv6 = True
    src = cfg.local
    if src == FLOW:
        src = _read(walk, "tun_ipv6_src" if ipv6 else "tun_src") or None
    key: int | None = cfg.out_key
    if key == FLOW:
        key = _read(walk, "tun_id") & ((1 << (32 if cfg.kind == "gre" else 24)) - 1)
    elif key == NO_KEY:
        key = None
    tos = max(cfg.tos, 0)     # tos=inherit (-1): the datapath copies each frame's DSCP (and always its ECN)
    options = b""
    oam = False
    if cfg.kind == "geneve":    # the options and the OAM flag go as the flow holds them (received or set)
        options = geneve_options(walk.flow)
        for w in range(K.W_TUN_METADATA, K.W_TUN_METADATA + K.TUN_METADATA_WORDS):
            walk.r.mask[w] = (1 << 64) - 1
        walk.r.mask[K.W_TUN_MISC] |= TNL_F_OAM
        oam = bool(walk.flow[K.W_TUN_MISC] & TNL_F_OAM)
    if not remote:
        walk.r.drop_reason = walk.r.drop_reason or "tunnel_no_route (no tunnel destination)"
        _drop(walk, "tunnel_no_route")
        if rec:
            rec.note("     -> native tunnel: no destination (tun_dst is 0): dropped")
        return
    egress = underlay.egress(remote, ipv6, src)
    if egress is None:
        walk.r.drop_reason = walk.r.drop_reason or f"tunnel_no_route (no route to {_ip(remote, ipv6)})"
        walk.r.no_cache = "tunnel_no_route"
        _drop(walk, "tunnel_no_route")
        if rec:
            rec.note("     -> native tunnel routing failed")
        return
    if rec:
        rec.note(f"     -> tunneling to {_ip(remote, ipv6)} via {egress.dev}")
    mac = underlay.neighbor(egress.nexthop, ipv6, egress)
    if mac is None:
        if rec is None:
            underlay.resolve(egress.nexthop, ipv6, egress)
        walk.r.drop_reason = walk.r.drop_reason or (
            f"tunnel_neigh_unresolved (no MAC for {_ip(egress.nexthop, ipv6)} on {egress.dev} yet)")
        walk.r.no_cache = "tunnel_neigh_unresolved"
        _drop(walk, "tunnel_neigh_unresolved")
        if rec:
            rec.note(f"     -> neighbor cache miss for {_ip(egress.nexthop, ipv6)} on bridge {egress.dev}, "
                     f"sending {'NS' if ipv6 else 'ARP'} request")
        return
    if rec:
        rec.note(f"     -> tunneling from {_mac(egress.mac)} {_ip(egress.src, ipv6)} to {_mac(mac)} "
                 f"{_ip(remote, ipv6)}")
    header = TunnelHeader(
        kind=cfg.kind_id, eth_dst=mac, eth_src=egress.mac, ipv6=ipv6, ip_src=egress.src, ip_dst=remote, tos=tos,
        ttl=cfg.ttl, df=cfg.df, udp_dst=cfg.dst_port, csum=cfg.csum, key=key, options=options, oam=oam,
        tos_inherit=cfg.tos < 0, mtu=egress.mtu)
    _underlay_walk(walk, q, header, egress, ipv6, remote, tos, cfg)


def _drop(walk: _Walk, reason: str) -> None:
    """A drop (``dpif.actions.DROP_REASONS``) that ends only this output (the rest of the actions go on)."""
    walk.commit()
    walk.r.actions += A.clone(A.drop(A.DROP_REASONS.index(reason)))


def outer_key(egress: Egress, mac: int, ipv6: bool, remote: int, tos: int, cfg: TunnelConfig) -> list[int]:
    """The key words of the encapsulated packet as it enters the underlay bridge from its LOCAL port."""
    key = [0] * K.KEY_WORDS
    key[K.W_IN_PORT] = egress.port
    key[K.W_ETH_DST] = mac
    key[K.W_ETH_SRC] = egress.mac
    proto = PROTO_GRE if cfg.kind == "gre" else PROTO_UDP
    key[K.W_NW] = proto | tos << 8 | cfg.ttl << 16
    if ipv6:
        key[K.W_ETH_TYPE] = ETH_IPV6
        key[K.W_IPV6_SRC], key[K.W_IPV6_SRC + 1] = egress.src >> 64, egress.src & ((1 << 64) - 1)
        key[K.W_IPV6_DST], key[K.W_IPV6_DST + 1] = remote >> 64, remote & ((1 << 64) - 1)
    else:
        key[K.W_ETH_TYPE] = ETH_IPV4
        key[K.W_NW_SRC] = egress.src
        key[K.W_NW_DST] = remote
    if proto == PROTO_UDP:
        key[K.W_TP] = cfg.dst_port << 16
    return key


def _underlay_walk(walk: _Walk, q: int, header: TunnelHeader, egress: Egress, ipv6: bool, remote: int, tos: int,
                   cfg: TunnelConfig) -> None:
    """``CLONE(TNL_PUSH(header), <the underlay bridge's actions>)``: the walk of the outer packet in the egress
    bridge, from its LOCAL port; its mask is not the megaflow's (it looks at the outer packet only)."""
    rec = walk.rec
    if walk.limited():
        return
    walk.commit()
    r = walk.r
    start = len(r.actions)
    r.actions += [A.OP_CLONE, 0]
    r.actions += tnl_push(header, q, egress.port)
    walk.sync_rank_bridges()
    saved = (walk.bridge, walk.ts, walk.in_port, walk.flow, walk.base, walk.dirty, walk.written, walk.action_set,
             walk.stack, walk.exiting, walk.table_id, r.mask)
    key = outer_key(egress, header.eth_dst, ipv6, remote, tos, cfg)
    walk.flow = key + [0] * (F.FLOW_WORDS - K.KEY_WORDS)
    walk.base = list(key)
    walk.dirty = [0] * K.KEY_WORDS
    walk.written = [0] * K.KEY_WORDS
    walk.action_set = {}
    walk.stack = []
    walk.exiting = False
    r.mask = [0] * F.FLOW_WORDS
    walk.bridge, walk.ts, walk.in_port = egress.bridge, walk.bridges.tables[egress.bridge], egress.port
    walk.crossings += 1
    walk.nest += 1
    walk.depth += 1
    r.bridges.add(egress.bridge)
    if rec:
        rec.bridge(egress.bridge, egress.port)
    walk.in_tunnel = True
    try:
        walk.enter()
    finally:
        walk.in_tunnel = False
        walk.depth -= 1
        walk.nest -= 1
        walk.sync_rank_bridges()
        (walk.bridge, walk.ts, walk.in_port, walk.flow, walk.base, walk.dirty, walk.written, walk.action_set,
         walk.stack, walk.exiting, walk.table_id, r.mask) = saved
        r.actions[start + 1] = len(r.actions) - start - 2
    if rec:
        rec.resume(walk.bridge)
