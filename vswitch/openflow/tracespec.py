"""``ofproto/trace``'s packet: the flow a user writes (``in_port=1,icmp6,ipv6_dst=fe80::1,icmp_type=135``)
parsed, turned into a frame, and the datapath key after the pipeline written back as OVS's "Final flow".

```
 "in_port=1,tcp6,ipv6_src=..,tp_dst=80" ──parse_flow_spec──► {field: int} ──build_frame──► frame bytes
                                                               format_spec ◄─┘               │ key extraction
                                           final_flow(key after translation) ◄─────────────────┘
```

Field names are OVS's (``ovs-fields(7)``): OpenFlow 1.0 names (``dl_src``, ``nw_dst``, ``tp_src``), registry
and OXM names (``eth_src``, ``ipv4_dst``, ``tcp_dst``, ``icmpv6_type``, ``nd_target``), and the protocol
shorthands (``ip``, ``ipv6``, ``icmp``, ``icmp6``, ``tcp``, ``tcp6``, ``udp``, ``udp6``, ``sctp``, ``sctp6``,
``arp``, ``rarp``). Fields a frame does not carry (registers, metadata) are refused with a ``ValueError``
that says so; tokens OVS prints in a trace's ``Flow:`` line that describe nothing to build (``nw_frag=no``,
``vlan_tci=0x0000``, ``recirc_id=0``) are accepted.
"""

from __future__ import annotations

import ipaddress

from dpif import key as K
from ofproto import fields as F

#: spec keys (internal) -> OVS's name when printed
_PRINT = {"eth_src": "dl_src", "eth_dst": "dl_dst", "eth_type": "dl_type", "vlan": "dl_vlan", "vlan_pcp": "dl_vlan_pcp",
          "ipv4_src": "nw_src", "ipv4_dst": "nw_dst", "ip_proto": "nw_proto"}
#: every accepted name -> spec key
_NAMES = {
    "dl_src": "eth_src", "eth_src": "eth_src", "dl_dst": "eth_dst", "eth_dst": "eth_dst", "dl_type": "eth_type",
    "eth_type": "eth_type", "dl_vlan": "vlan", "vlan": "vlan", "vlan_vid": "vlan", "dl_vlan_pcp": "vlan_pcp",
    "vlan_pcp": "vlan_pcp", "nw_src": "ipv4_src", "ip_src": "ipv4_src", "ipv4_src": "ipv4_src",
    "nw_dst": "ipv4_dst", "ip_dst": "ipv4_dst", "ipv4_dst": "ipv4_dst", "nw_proto": "ip_proto", "ip_proto": "ip_proto",
    "nw_tos": "nw_tos", "nw_ttl": "nw_ttl", "ip_dscp": "ip_dscp", "nw_ecn": "nw_ecn", "ip_ecn": "nw_ecn",
    "tp_src": "tp_src", "tcp_src": "tp_src", "udp_src": "tp_src", "sctp_src": "tp_src",
    "tp_dst": "tp_dst", "tcp_dst": "tp_dst", "udp_dst": "tp_dst", "sctp_dst": "tp_dst",
    "icmp_type": "tp_src", "icmpv4_type": "tp_src", "icmpv6_type": "tp_src",
    "icmp_code": "tp_dst", "icmpv4_code": "tp_dst", "icmpv6_code": "tp_dst",
    "arp_op": "arp_op", "arp_spa": "arp_spa", "arp_tpa": "arp_tpa", "arp_sha": "arp_sha", "arp_tha": "arp_tha",
    "ipv6_src": "ipv6_src", "ipv6_dst": "ipv6_dst", "ipv6_label": "ipv6_label", "nd_target": "nd_target",
    "ipv6_nd_target": "nd_target", "nd_sll": "nd_sll", "ipv6_nd_sll": "nd_sll", "nd_tll": "nd_tll",
    "ipv6_nd_tll": "nd_tll", "in_port": "in_port", "tun_id": "tun_id", "tunnel_id": "tun_id", "tun_src": "tun_src",
    "tun_dst": "tun_dst",
}
#: spec keys that are metadata of the packet's arrival, not headers: set in its key after extraction
KEY_ONLY = ("tun_id", "tun_src", "tun_dst")
_IGNORED = {"nw_frag": "no", "vlan_tci": "0x0000", "recirc_id": "0", "dp_hash": "0"}
_MACS = {"eth_src", "eth_dst", "arp_sha", "arp_tha", "nd_sll", "nd_tll"}
_IPV4 = {"ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa", "tun_src", "tun_dst"}
_IPV6 = {"ipv6_src", "ipv6_dst", "nd_target"}
_SHORTHANDS = {name: {"eth_type": clauses[0][1][0],
                      **({"ip_proto": clauses[1][1][0]} if len(clauses) > 1 else {})}
               for name, clauses in F.PROTOCOLS.items()}

OFPP_LOCAL = 0xFFFFFFFE


def _port_name(p: int) -> str:
    return "LOCAL" if p == OFPP_LOCAL else str(p)


def parse_flow_spec(spec: str, port_names: dict[str, int]) -> dict[str, int]:
    """``in_port=1,dl_src=..,tcp,tp_dst=80`` as spec key -> integer (``ValueError`` says what is wrong)."""
    out: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in spec.replace(" ", ",").split(","))):
        if item in _SHORTHANDS:
            out.update(_SHORTHANDS[item])
            continue
        if "=" not in item:
            raise ValueError(f"{item!r}: expected field=value (or a protocol: {', '.join(sorted(_SHORTHANDS))})")
        key, value = (s.strip() for s in item.split("=", 1))
        if key in _IGNORED and value == _IGNORED[key]:
            continue
        name = _NAMES.get(key)
        if name is None and key.startswith("tun_metadata") and F.flow_slice(key) is not None:
            name = key   # a mapped Geneve option: set in the key
        if name is None:
            f = F.by_name(key) or F.by_oxm_name(key)
            if f is not None and f.where != F.KEY:
                raise ValueError(f"{key}: not a field of the packet (ofproto/trace builds a frame)")
            raise ValueError(f"{key}: ofproto/trace does not know this field")
        try:
            out[name] = _value(name, value, port_names)
        except ValueError as e:
            raise ValueError(f"{key}={value}: {e}") from None
    if out.get("eth_type") == 0x0806:   # nw_src / nw_dst of an ARP are its protocol addresses
        for a, b in (("ipv4_src", "arp_spa"), ("ipv4_dst", "arp_tpa")):
            if a in out:
                out.setdefault(b, out.pop(a))
    return out


def _value(name: str, value: str, port_names: dict[str, int]) -> int:
    if name == "in_port":
        if value in port_names:
            return port_names[value]
        return OFPP_LOCAL if value.upper() == "LOCAL" else int(value, 0)
    if name in _MACS:
        parts = value.split(":")
        if len(parts) != 6:
            raise ValueError("not a MAC address")
        return int("".join(p.zfill(2) for p in parts), 16)
    if name in _IPV4:
        return int(ipaddress.IPv4Address(value))
    if name in _IPV6:
        return int(ipaddress.IPv6Address(value))
    return int(value, 0)


def set_key_only(key: list[int], fields: dict[str, int]) -> None:
    """Write the spec's ``KEY_ONLY`` fields (the tunnel a packet came from) into its extracted key."""
    for name in (*KEY_ONLY, *(n for n in fields if n.startswith("tun_metadata"))):
        if name in fields:
            word, shift, bits = F.flow_slice(name)   # type: ignore[misc]
            if bits > 64:   # whole words, high first
                n = bits // 64
                for j in range(n):
                    key[word + j] = fields[name] >> (64 * (n - 1 - j)) & (1 << 64) - 1
                continue
            key[word] = (key[word] & ~(((1 << bits) - 1) << shift)) | (fields[name] << shift)


def format_spec(fields: dict[str, int]) -> str:
    """The trace's input in ovs-ofctl's words."""
    parts = []
    for name in ("in_port", "vlan", "vlan_pcp", "eth_src", "eth_dst", "eth_type", "ipv4_src", "ipv4_dst", "ipv6_src",
                 "ipv6_dst", "ipv6_label", "ip_proto", "nw_tos", "nw_ttl", "tp_src", "tp_dst", "arp_op", "arp_spa",
                 "arp_tpa", "arp_sha", "arp_tha", "nd_target", "nd_sll", "nd_tll", "tun_id", "tun_src", "tun_dst"):
        if name in fields:
            parts.append(f"{_PRINT.get(name, name)}={_text(name, fields[name])}")
    return ",".join(parts)


def _text(name: str, v: int) -> str:
    if name in _MACS:
        return ":".join(f"{v >> s & 0xFF:02x}" for s in range(40, -8, -8))
    if name in _IPV4:
        return str(ipaddress.IPv4Address(v))
    if name in _IPV6:
        return str(ipaddress.IPv6Address(v))
    if name == "eth_type":
        return f"{v:#06x}"
    if name == "in_port":
        return _port_name(v)
    return str(v)


def _l4(fields: dict[str, int], proto: int) -> bytes:
    if proto in (6, 17, 132):
        ports = fields.get("tp_src", 0).to_bytes(2, "big") + fields.get("tp_dst", 0).to_bytes(2, "big")
        return ports + bytes({6: 16, 17: 4, 132: 8}[proto])
    if proto in (1, 58):
        head = bytes([fields.get("tp_src", 0), fields.get("tp_dst", 0)]) + bytes(2)
        if proto == 58 and fields.get("tp_src") in (135, 136) and fields.get("tp_dst", 0) == 0:
            body = bytes(4) + fields.get("nd_target", 0).to_bytes(16, "big")
            opt, mac = (1, "nd_sll") if fields["tp_src"] == 135 else (2, "nd_tll")
            if mac in fields:
                body += bytes([opt, 1]) + fields[mac].to_bytes(6, "big")
            return head + body
        return head + bytes(4)
    return b""


def build_frame(fields: dict[str, int]) -> bytes:
    """A frame with the headers ``fields`` describe (zeros elsewhere; TTL / hop limit 64 unless given)."""
    eth_type = fields.get("eth_type", 0)
    head = fields.get("eth_dst", 0).to_bytes(6, "big") + fields.get("eth_src", 0).to_bytes(6, "big")
    if "vlan" in fields:
        tci = (fields.get("vlan_pcp", 0) << 13) | (fields["vlan"] & 0xFFF)
        head += b"\x81\x00" + tci.to_bytes(2, "big")
    head += eth_type.to_bytes(2, "big")
    tos = fields.get("nw_tos", (fields.get("ip_dscp", 0) << 2) | fields.get("nw_ecn", 0))
    ttl = fields.get("nw_ttl", 64)
    body = b""
    if eth_type == 0x0800:
        proto = fields.get("ip_proto", 0)
        l4 = _l4(fields, proto)
        total = 20 + len(l4)
        body = (bytes([0x45, tos]) + total.to_bytes(2, "big") + bytes(4) + bytes([ttl, proto])
                + bytes(2) + fields.get("ipv4_src", 0).to_bytes(4, "big") + fields.get("ipv4_dst", 0).to_bytes(4, "big")
                + l4)
    elif eth_type == 0x86DD:
        proto = fields.get("ip_proto", 59)
        l4 = _l4(fields, proto)
        first = 6 << 28 | tos << 20 | fields.get("ipv6_label", 0) & 0xFFFFF
        body = (first.to_bytes(4, "big") + len(l4).to_bytes(2, "big") + bytes([proto, ttl])
                + fields.get("ipv6_src", 0).to_bytes(16, "big") + fields.get("ipv6_dst", 0).to_bytes(16, "big") + l4)
    elif eth_type in (0x0806, 0x8035):
        body = (b"\x00\x01\x08\x00\x06\x04" + fields.get("arp_op", 1).to_bytes(2, "big")
                + fields.get("arp_sha", fields.get("eth_src", 0)).to_bytes(6, "big")
                + fields.get("arp_spa", 0).to_bytes(4, "big") + fields.get("arp_tha", 0).to_bytes(6, "big")
                + fields.get("arp_tpa", 0).to_bytes(4, "big"))
    frame = head + body
    return frame + bytes(max(0, 60 - len(frame)))


def _get(key: list[int], name: str) -> int:
    word, shift, bits = F.key_slice(name)   # type: ignore[misc]
    if bits > 64:
        n = bits // 64
        v = 0
        for j in range(n):
            v = v << 64 | key[word + j]
        return v
    return key[word] >> shift & ((1 << bits) - 1)


def final_flow(key: list[int]) -> str:
    """The datapath key after the pipeline as OVS prints a trace's "Final flow" (the packet's header fields)."""
    parts: list[str] = []
    eth_type = _get(key, "eth_type")
    proto = _get(key, "nw_proto") if eth_type in (0x0800, 0x86DD) else -1
    names = {0x0800: {1: "icmp", 6: "tcp", 17: "udp", 132: "sctp"}, 0x86DD: {58: "icmp6", 6: "tcp6", 17: "udp6",
                                                                            132: "sctp6"}}
    shorthand = names.get(eth_type, {}).get(proto) or {0x0800: "ip", 0x86DD: "ipv6", 0x0806: "arp"}.get(eth_type)
    if shorthand:
        parts.append(shorthand)
    tci = key[K.W_VLAN_TCI]
    if tci & 0x1000:
        parts.append(f"dl_vlan={tci & 0xFFF},dl_vlan_pcp={tci >> 13 & 7}")
    parts.append(f"dl_src={_text('eth_src', _get(key, 'eth_src'))},dl_dst={_text('eth_dst', _get(key, 'eth_dst'))}")
    if not shorthand:
        parts.append(f"dl_type={eth_type:#06x}")
    if eth_type == 0x0800:
        parts.append(f"nw_src={_text('ipv4_src', _get(key, 'ip_src'))},"
                     f"nw_dst={_text('ipv4_dst', _get(key, 'ip_dst'))}")
    elif eth_type == 0x86DD:
        parts.append(f"ipv6_src={_text('ipv6_src', _get(key, 'ipv6_src'))},"
                     f"ipv6_dst={_text('ipv6_dst', _get(key, 'ipv6_dst'))}")
    if eth_type in (0x0800, 0x86DD):
        parts.append(f"nw_proto={proto},nw_tos={_get(key, 'nw_tos')},nw_ttl={_get(key, 'nw_ttl')}")
        if proto in (6, 17, 132):
            parts.append(f"tp_src={_get(key, 'tcp_src')},tp_dst={_get(key, 'tcp_dst')}")
        elif proto in (1, 58):
            itype, code = _get(key, "icmp_type"), _get(key, "icmp_code")
            parts.append(f"icmp_type={itype},icmp_code={code}")
            if proto == 58 and itype in (135, 136) and code == 0:
                nd = ("nd_target", "nd_sll", "nd_tll")
                parts.append(",".join(f"{n}={_text(n, _get(key, n))}" for n in nd))
    elif eth_type == 0x0806:
        arp = ("arp_spa", "arp_tpa", "arp_op", "arp_sha", "arp_tha")
        parts.append(",".join(f"{n}={_text(n, _get(key, n))}" for n in arp))
    return ",".join(parts)
