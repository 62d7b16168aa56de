"""The reference model's own reading of fields and matches (``xlate.reference``): which key bits each OXM
field is, the fields actions write and their prerequisites, the pipeline state (registers, metadata), and
OpenFlow's match, cover and overlap relations, written plainly to check the fast path against."""

from __future__ import annotations

from dataclasses import dataclass, field

from dpif import key as K
from ofproto import rules as R

TPIDS = (0x8100, 0x88A8)
PF_NO_FLOOD = 1 << 0    # port flags, as the datapath keeps them per port (xlate.translate PF_*)
PF_DOWN = 1 << 1
PF_LOCAL = 1 << 2

# OXM field -> (key word, lowest bit in the word, bits the key holds); the model's own reading of dpif.key
FIELD_BITS: dict[str, tuple[int, int, int]] = {
    "in_port": (K.W_IN_PORT, 0, 32),
    "eth_dst": (K.W_ETH_DST, 0, 48),
    "eth_src": (K.W_ETH_SRC, 0, 48),
    "eth_type": (K.W_ETH_TYPE, 0, 16),
    "vlan_vid": (K.W_VLAN_TCI, 0, 13),     # VID | 0x1000 when a tag is present
    "vlan_pcp": (K.W_VLAN_TCI, 13, 3),
    "ip_dscp": (K.W_NW, 10, 6),
    "ip_ecn": (K.W_NW, 8, 2),
    "ip_proto": (K.W_NW, 0, 8),
    "ipv4_src": (K.W_NW_SRC, 0, 32),
    "ipv4_dst": (K.W_NW_DST, 0, 32),
    "tcp_src": (K.W_TP, 0, 16),
    "tcp_dst": (K.W_TP, 16, 16),
    "udp_src": (K.W_TP, 0, 16),
    "udp_dst": (K.W_TP, 16, 16),
    "sctp_src": (K.W_TP, 0, 16),
    "sctp_dst": (K.W_TP, 16, 16),
    "icmpv4_type": (K.W_TP, 0, 8),
    "icmpv4_code": (K.W_TP, 16, 8),
    "icmpv6_type": (K.W_TP, 0, 8),
    "icmpv6_code": (K.W_TP, 16, 8),
    "arp_op": (K.W_NW, 0, 8),
    "arp_spa": (K.W_NW_SRC, 0, 32),
    "arp_tpa": (K.W_NW_DST, 0, 32),
    "arp_sha": (K.W_ARP_SHA, 0, 48),
    "arp_tha": (K.W_ARP_THA, 0, 48),
    "pkt_mark": (K.W_PKT_MARK, 0, 32),
}
WIDE_FIELDS = {"ipv6_src": K.W_IPV6_SRC, "ipv6_dst": K.W_IPV6_DST}   # 128 bits over two words, high first
#: OXM widths on the wire (for non-strict selection)
OXM_BITS = {**{name: bits for name, (_w, _s, bits) in FIELD_BITS.items()}, "arp_op": 16, "ipv6_src": 128,
            "ipv6_dst": 128, "metadata": 64, **{f"reg{i}": 32 for i in range(16)},
            **{f"xreg{i}": 64 for i in range(8)}, **{f"xxreg{i}": 128 for i in range(4)}, "conj_id": 32}

# ---------------------------------------------------------------- pipeline state and the Nicira actions
# Pipeline state is 16 32-bit registers and a 64-bit metadata, all 0 when a frame enters; xregN is
# reg<2N> (high) and reg<2N+1>; xxregN is reg<4N> (high) .. reg<4N+3>.
#
# Fields the actions read and write, by registry name -> (key word, lowest bit, bits); ``in_port`` reads
# and writes the OpenFlow number. Header fields need their header: a write to a field whose
# prerequisites the frame (as the actions left it) lacks is skipped.
ACTION_FIELDS: dict[str, tuple[int, int, int]] = {
    "eth_src": (K.W_ETH_SRC, 0, 48), "eth_dst": (K.W_ETH_DST, 0, 48), "eth_type": (K.W_ETH_TYPE, 0, 16),
    "vlan_tci": (K.W_VLAN_TCI, 0, 16), "in_port": (K.W_IN_PORT, 0, 16), "pkt_mark": (K.W_PKT_MARK, 0, 32),
    "ip_src": (K.W_NW_SRC, 0, 32), "ip_dst": (K.W_NW_DST, 0, 32), "nw_proto": (K.W_NW, 0, 8),
    "nw_tos": (K.W_NW, 8, 8), "ip_dscp": (K.W_NW, 10, 6), "nw_ecn": (K.W_NW, 8, 2), "nw_ttl": (K.W_NW, 16, 8),
    "tcp_src": (K.W_TP, 0, 16), "tcp_dst": (K.W_TP, 16, 16), "udp_src": (K.W_TP, 0, 16),
    "udp_dst": (K.W_TP, 16, 16),
    "icmp_type": (K.W_TP, 0, 8), "icmp_code": (K.W_TP, 16, 8), "icmpv6_type": (K.W_TP, 0, 8),
    "icmpv6_code": (K.W_TP, 16, 8), "arp_op": (K.W_NW, 0, 8), "arp_spa": (K.W_NW_SRC, 0, 32),
    "arp_tpa": (K.W_NW_DST, 0, 32), "arp_sha": (K.W_ARP_SHA, 0, 48), "arp_tha": (K.W_ARP_THA, 0, 48),
    "nd_sll": (K.W_ARP_SHA, 0, 48), "nd_tll": (K.W_ARP_THA, 0, 48),
    "ipv6_src": (K.W_IPV6_SRC, 0, 128), "ipv6_dst": (K.W_IPV6_DST, 0, 128), "nd_target": (K.W_ND_TARGET, 0, 128),
}
IP_TYPES = (0x0800, 0x86DD)
ARP_TYPES = (0x0806, 0x8035)
#: a header field's prerequisites: (eth_type values, nw_proto or None)
HEADER_PREREQS: dict[str, tuple[tuple[int, ...], int | None]] = {
    "ip_src": ((0x0800,), None), "ip_dst": ((0x0800,), None), "nw_tos": (IP_TYPES, None), "ip_dscp": (IP_TYPES, None),
    "nw_ecn": (IP_TYPES, None), "nw_ttl": (IP_TYPES, None), "tcp_src": (IP_TYPES, 6), "tcp_dst": (IP_TYPES, 6),
    "udp_src": (IP_TYPES, 17), "udp_dst": (IP_TYPES, 17), "ipv6_src": ((0x86DD,), None), "ipv6_dst": ((0x86DD,), None),
    "icmp_type": ((0x0800,), 1), "icmp_code": ((0x0800,), 1), "icmpv6_type": ((0x86DD,), 58),
    "icmpv6_code": ((0x86DD,), 58), "nd_target": ((0x86DD,), 58), "nd_sll": ((0x86DD,), 58),
    "nd_tll": ((0x86DD,), 58), **{f: (ARP_TYPES, None) for f in ("arp_op", "arp_spa", "arp_tpa", "arp_sha", "arp_tha")},
}
#: ND fields: the ICMPv6 types (code 0) that carry them
ND_TYPES = {"nd_target": (135, 136), "nd_sll": (135,), "nd_tll": (136,)}
MAX_DEPTH = 64          # nested resubmits that go back to (or stay in) a table
MAX_RESUBMITS = 4096    # resubmits per frame
STACK_DEPTH = 1024


@dataclass
class Pipe:
    """A frame's pipeline state."""

    regs: list[int] = field(default_factory=lambda: [0] * 16)
    metadata: int = 0
    conj_id: int = 0          # set only while a conjunction's flow is looked up

    def get(self, name: str) -> int:
        if name == "metadata":
            return self.metadata
        if name == "conj_id":
            return self.conj_id
        for prefix, n in (("xxreg", 4), ("xreg", 2), ("reg", 1)):
            if name.startswith(prefix):
                i = int(name[len(prefix):])
                v = 0
                for r in self.regs[i * n:(i + 1) * n]:
                    v = v << 32 | r
                return v
        raise KeyError(name)

    def set(self, name: str, value: int, mask: int) -> None:
        if name == "metadata":
            self.metadata = (self.metadata & ~mask) | (value & mask)
            return
        for prefix, n in (("xxreg", 4), ("xreg", 2), ("reg", 1)):
            if name.startswith(prefix):
                i = int(name[len(prefix):])
                for j in range(n):
                    sh = 32 * (n - 1 - j)
                    m, v = mask >> sh & 0xFFFFFFFF, value >> sh & 0xFFFFFFFF
                    self.regs[i * n + j] = (self.regs[i * n + j] & ~m) | (v & m)
                return
        raise KeyError(name)


def is_pipeline(name: str) -> bool:
    return name in ("metadata", "conj_id") or name.startswith(("reg", "xreg", "xxreg"))



def field_value(name: str, key: list[int], pipe: Pipe | None = None) -> int:
    """The value of OXM field ``name`` in the key row ``key`` (pipeline fields: in ``pipe``)."""
    if is_pipeline(name):
        return (pipe or Pipe()).get(name)
    if name in WIDE_FIELDS:
        w = WIDE_FIELDS[name]
        return key[w] << 64 | key[w + 1]
    word, low, bits = FIELD_BITS[name]
    return key[word] >> low & ((1 << bits) - 1)


def matches(match: R.Match, key: list[int], pipe: Pipe | None = None) -> bool:
    """Does ``key`` (and the pipeline state ``pipe``) satisfy every (value, mask) of the match?"""
    for name, value, mask in match.fields:
        if name == "arp_op":
            value, mask = value & 0xFF, mask & 0xFF
        if field_value(name, key, pipe) & mask != value:
            return False
    return True


def covers(general: R.Match, specific: R.Match) -> bool:
    """OpenFlow's non-strict selection: ``specific`` constrains at least the bits ``general`` does, the same way."""
    spec = {name: (v, m) for name, v, m in specific.fields}
    for name, v, m in general.fields:
        if name not in spec:
            return False
        sv, sm = spec[name]
        for bit in range(OXM_BITS[name]):
            if m >> bit & 1 and (not sm >> bit & 1 or (sv >> bit & 1) != (v >> bit & 1)):
                return False
    return True


def overlap(a: R.Match, b: R.Match) -> bool:
    """Could one packet match both? (Fields compared by name.)"""
    bf = {name: (v, m) for name, v, m in b.fields}
    for name, v, m in a.fields:
        if name in bf and (v ^ bf[name][0]) & m & bf[name][1]:
            return False
    return True
