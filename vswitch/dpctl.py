"""Datapath views for ``ovs-appctl``: ``dpctl/dump-flows`` (the megaflows, in OVS's datapath flow
syntax), ``upcall/show`` and the megaflow lines of ``dpif-netdev/pmd-stats-show``."""

from __future__ import annotations

from typing import Any

import numpy as np

from dpif import actions as DA
from dpif import key as K
from dpif.megaflow import Megaflow

W_VLAN_TCI2 = getattr(K, "W_VLAN_TCI2", 21)


def _mac(v: int) -> str:
    return ":".join(f"{v >> s & 0xFF:02x}" for s in range(40, -8, -8))


def _ip(v: int) -> str:
    return ".".join(str(v >> s & 0xFF) for s in (24, 16, 8, 0))


def _item(name: str, v: int, m: int, full: int, fmt: Any = str) -> str:
    return f"{name}={fmt(v)}" if m == full else f"{name}={fmt(v)}/{fmt(m)}"


def _sub(key: np.ndarray, mask: np.ndarray, w: int, shift: int, bits: int) -> tuple[int, int]:
    full = (1 << bits) - 1
    return (int(key[w]) >> shift) & full, (int(mask[w]) >> shift) & full


def format_megaflow_match(key: np.ndarray, mask: np.ndarray) -> str:
    """A megaflow's match in OVS's datapath flow syntax (``recirc_id(0),in_port(1),eth(...),...``)."""
    parts = [f"recirc_id({int(key[K.W_RECIRC_ID])})", f"in_port({int(key[K.W_IN_PORT])})"]
    eth = []
    for name, w in (("src", K.W_ETH_SRC), ("dst", K.W_ETH_DST)):
        if mask[w]:
            eth.append(_item(name, int(key[w]), int(mask[w]), (1 << 48) - 1, _mac))
    if eth:
        parts.append(f"eth({','.join(eth)})")
    for w in (K.W_VLAN_TCI, W_VLAN_TCI2):
        if mask[w] & 0xFFFF:
            tci, m = _sub(key, mask, w, 0, 16)
            if m & 0x1000 and not tci & 0x1000:
                parts.append("vlan(none)" if w == K.W_VLAN_TCI else "cvlan(none)")
            else:
                items = [_item("vid", tci & 0xFFF, m & 0xFFF, 0xFFF)] if m & 0xFFF else []
                if m & 0xE000:
                    items.append(_item("pcp", tci >> 13, m >> 13, 7))
                parts.append(f"{'vlan' if w == K.W_VLAN_TCI else 'cvlan'}({','.join(items)})")
    if mask[K.W_ETH_TYPE]:
        parts.append(f"eth_type({int(key[K.W_ETH_TYPE]):#06x})")
    et = int(key[K.W_ETH_TYPE])
    l3 = []
    for name, w, sh, bits, fmt in (("src", K.W_NW_SRC, 0, 32, _ip), ("dst", K.W_NW_DST, 0, 32, _ip),
                                   ("proto", K.W_NW, 0, 8, str), ("tos", K.W_NW, 8, 8, hex),
                                   ("ttl", K.W_NW, 16, 8, str), ("frag", K.W_NW, 24, 8, hex)):
        v, m = _sub(key, mask, w, sh, bits)
        if m:
            l3.append(_item("op" if et == 0x0806 and name == "proto" else name, v, m, (1 << bits) - 1, fmt))
    if l3:
        parts.append(f"{'arp' if et == 0x0806 else 'ipv4' if et == 0x0800 else 'l3'}({','.join(l3)})")
    for name, w in (("ipv6_src", K.W_IPV6_SRC), ("ipv6_dst", K.W_IPV6_DST)):
        if mask[w] or mask[w + 1]:
            parts.append(f"{name}({int(key[w]):#x}{int(key[w + 1]):016x}/{int(mask[w]):#x}{int(mask[w + 1]):016x})")
    tp = []
    for name, sh, bits in (("src", 0, 16), ("dst", 16, 16), ("flags", 32, 12)):
        v, m = _sub(key, mask, K.W_TP, sh, bits)
        if m:
            tp.append(_item(name, v, m, (1 << bits) - 1, str if m == (1 << bits) - 1 else hex))
    if tp:
        proto = int(key[K.W_NW]) & 0xFF
        kind = {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 58: "icmpv6"}.get(proto, "tp")
        parts.append(f"{kind}({','.join(tp)})")
    for name, w in (("sha", K.W_ARP_SHA), ("tha", K.W_ARP_THA)):
        if mask[w]:
            parts.append(f"arp_{name}({_item('', int(key[w]), int(mask[w]), (1 << 48) - 1, _mac)[1:]})")
    return ",".join(parts)


def format_megaflow(mf: Megaflow, now: int) -> str:
    """One ``dpctl/dump-flows`` line."""
    used = "never" if mf.packets == 0 else f"{max(0, now - mf.used)}.000s"
    return (f"{format_megaflow_match(mf.key, mf.mask)}, packets:{mf.packets}, bytes:{mf.bytes}, used:{used}, "
            f"actions:{DA.format_actions(mf.actions)}")


def port_line(name: str, ofport: int, port_no: int, kind: str, peer: str = "") -> str:
    """One port in ``dpif/show``: ``name ofport/datapath port`` and its type when not a system port (a patch
    port, which has no datapath port in OVS: ``none`` and its ``peer``, as OVS shows it)."""
    if kind == "patch":
        return f"{name} {ofport}/none: (patch: peer={peer})"
    return f"{name} {ofport}/{port_no}" + ("" if kind in ("system", "") else f": (type {kind})")


def upcall_show(name: str, stats: dict[str, int], max_idle: int) -> str:
    """``upcall/show`` for the datapath ``name``."""
    return (f"{name}:\n"
            f"  flows         : (current {stats['flows']}) (max {stats.get('max_flows', 0)})\n"
            f"  max idle      : {max_idle * 1000}ms\n"
            f"  upcalls       : {stats['upcalls']} ({stats['translations']} translations, "
            f"{stats['translate_us']} us translating)\n"
            f"  installed     : {stats['installed']}, evicted when full: {stats['evicted_full']}, "
            f"expired: {stats['expired']}, removed by revalidation: {stats['revalidated_removed']}, "
            f"flushes: {stats['flushes']}\n"
            f"  subtables     : {stats['subtables']}\n"
            f"  not cached    : {stats.get('learn_not_cached', 0)} (the translation ran learn)\n")
