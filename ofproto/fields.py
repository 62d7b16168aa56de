"""The match field registry: every OpenFlow match field pyvswitch knows, in one declarative table.

Each ``Field`` records its OVS name (ovs-fields(7) spelling) and aliases, its wire identities
(OpenFlow 1.0 wildcard bits, OXM class/field, NXM class/field, experimenter OXM), its width, whether
OVS lets it be bitwise-masked, its prerequisites, and where it lives: a slice of a datapath key word
(``dpif.key``), pipeline state of the translator (registers, metadata, ...), a Geneve option placed
by the TLV map, or nowhere yet (a wire field the key has no room for).

Wire numbers come from OVS's ``meta-flow.h`` (the source of ovs-fields(7)); a ``# ?`` comment marks
a number not checked against it.
"""

from __future__ import annotations

from dataclasses import dataclass

from dpif import key as K
from ofproto import tlvmap

# OXM classes
OFPXMC_NXM_0 = 0x0000
OFPXMC_NXM_1 = 0x0001
OFPXMC_OPENFLOW_BASIC = 0x8000
OFPXMC_PACKET_REGS = 0x8001
OFPXMC_EXPERIMENTER = 0xFFFF
# experimenter ids of experimenter OXMs
NX_EXPERIMENTER = 0x00002320
ONF_EXPERIMENTER = 0x4F4E4600

# where a field lives
KEY = "key"            # a slice of a datapath key word
PIPELINE = "pipeline"  # translator state, never in the key
TLV = "tlv"            # a Geneve option, placed in W_TUN_METADATA by the TLV map
ABSENT = "absent"      # a wire field the datapath key has no room for (yet)

#: a prerequisite clause: (field, allowed values, mask or None for the whole field)
Clause = tuple[str, tuple[int, ...], int | None]


@dataclass(frozen=True)
class Field:
    """One match field."""

    name: str
    bits: int
    nbytes: int
    maskable: bool
    aliases: tuple[str, ...] = ()
    oxm_name: str | None = None                # the OpenFlow spec's name (codec / translate)
    oxm: tuple[int, int] | None = None         # (class 0x8000 / 0x8001, field)
    nxm: tuple[int, int] | None = None         # (class 0x0000 / 0x0001, field)
    exp: tuple[tuple[int, int], ...] = ()      # experimenter OXMs: (experimenter id, field), class 0xffff
    of10: tuple[str, int] | None = None        # (OpenFlow 1.0 name, its bits in ofp_match.wildcards)
    of10_cidr: bool = False                    # OpenFlow 1.0 takes a CIDR prefix (nw_src / nw_dst)
    prereqs: tuple[Clause, ...] = ()
    where: str = KEY
    key: tuple[int, int, int] | None = None    # (word, shift, bits); bits > 64 spans words, high half first
    shares: str | None = None                  # the field whose key bits these are too (nw_src for arp_spa)
    read_only: bool = False

    @property
    def prereq_text(self) -> str:
        """The prerequisites as an expression, e.g. ``eth_type in (0x0800, 0x86dd) and nw_proto == 6``."""
        parts = []
        for name, values, mask in self.prereqs:
            lhs = name if mask is None else f"{name} & {mask:#x}"
            vals = [f"{v:#x}" if v > 9 else str(v) for v in values]
            parts.append(f"{lhs} == {vals[0]}" if len(vals) == 1 else f"{lhs} in ({', '.join(vals)})")
        return " and ".join(parts) or "none"


# ---------------------------------------------------------------- prerequisites
_E_IP4, _E_IP6, _E_ARP, _E_RARP, _E_MPLS, _E_MPLSM = 0x0800, 0x86DD, 0x0806, 0x8035, 0x8847, 0x8848
P_NONE: tuple[Clause, ...] = ()
P_IPV4: tuple[Clause, ...] = (("eth_type", (_E_IP4,), None),)
P_IPV6: tuple[Clause, ...] = (("eth_type", (_E_IP6,), None),)
P_IP: tuple[Clause, ...] = (("eth_type", (_E_IP4, _E_IP6), None),)
P_ARP: tuple[Clause, ...] = (("eth_type", (_E_ARP, _E_RARP), None),)
P_MPLS: tuple[Clause, ...] = (("eth_type", (_E_MPLS, _E_MPLSM), None),)
P_VLAN: tuple[Clause, ...] = (("vlan_tci", (0x1000,), 0x1000),)
P_TCP: tuple[Clause, ...] = P_IP + (("nw_proto", (6,), None),)
P_UDP: tuple[Clause, ...] = P_IP + (("nw_proto", (17,), None),)
P_SCTP: tuple[Clause, ...] = P_IP + (("nw_proto", (132,), None),)
P_ICMP4: tuple[Clause, ...] = P_IPV4 + (("nw_proto", (1,), None),)
P_ICMP6: tuple[Clause, ...] = P_IPV6 + (("nw_proto", (58,), None),)
P_ND: tuple[Clause, ...] = P_ICMP6 + (("icmpv6_type", (135, 136), None), ("icmpv6_code", (0,), None))
P_ND_SOL: tuple[Clause, ...] = P_ICMP6 + (("icmpv6_type", (135,), None), ("icmpv6_code", (0,), None))
P_ND_ADV: tuple[Clause, ...] = P_ICMP6 + (("icmpv6_type", (136,), None), ("icmpv6_code", (0,), None))
# OVS's "CT": ct_state has +trk-inv (trk 0x20, inv 0x10); it implies an IP packet
P_CT: tuple[Clause, ...] = (("ct_state", (0x20,), 0x30),)
P_CT4: tuple[Clause, ...] = P_IPV4 + P_CT
P_CT6: tuple[Clause, ...] = P_IPV6 + P_CT

#: ovs-fields(7) protocol shorthands: name -> the clauses it stands for
PROTOCOLS: dict[str, tuple[Clause, ...]] = {
    "ip": P_IPV4, "ipv6": P_IPV6, "arp": (("eth_type", (_E_ARP,), None),),
    "rarp": (("eth_type", (_E_RARP,), None),), "mpls": (("eth_type", (_E_MPLS,), None),),
    "mplsm": (("eth_type", (_E_MPLSM,), None),),
    "icmp": P_ICMP4, "icmp6": P_ICMP6,
    "tcp": P_IPV4 + (("nw_proto", (6,), None),), "tcp6": P_IPV6 + (("nw_proto", (6,), None),),
    "udp": P_IPV4 + (("nw_proto", (17,), None),), "udp6": P_IPV6 + (("nw_proto", (17,), None),),
    "sctp": P_IPV4 + (("nw_proto", (132,), None),), "sctp6": P_IPV6 + (("nw_proto", (132,), None),),
}

_B = OFPXMC_OPENFLOW_BASIC
_N0, _N1 = OFPXMC_NXM_0, OFPXMC_NXM_1
_KT = K.W_TP
_KN = K.W_NW

# ---------------------------------------------------------------- the table
FIELDS: tuple[Field, ...] = (
    # metadata
    Field("dp_hash", 32, 4, True, nxm=(_N1, 35), exp=((NX_EXPERIMENTER, 0),), key=(K.W_DP_HASH, 0, 32),
          read_only=True),
    Field("recirc_id", 32, 4, False, nxm=(_N1, 36), key=(K.W_RECIRC_ID, 0, 32), read_only=True),
    Field("packet_type", 32, 4, False, oxm=(_B, 44), where=ABSENT, read_only=True),
    Field("conj_id", 32, 4, False, nxm=(_N1, 37), where=PIPELINE, read_only=True),
    Field("tun_id", 64, 8, True, aliases=("tunnel_id",), oxm_name="tunnel_id", oxm=(_B, 38), nxm=(_N1, 16),
          key=(K.W_TUN_ID, 0, 64)),
    Field("tun_src", 32, 4, True, nxm=(_N1, 31), key=(K.W_TUN_SRC, 0, 32)),
    Field("tun_dst", 32, 4, True, nxm=(_N1, 32), key=(K.W_TUN_DST, 0, 32)),
    Field("tun_ipv6_src", 128, 16, True, nxm=(_N1, 109), key=(K.W_TUN_IPV6_SRC, 0, 128)),
    Field("tun_ipv6_dst", 128, 16, True, nxm=(_N1, 110), key=(K.W_TUN_IPV6_DST, 0, 128)),
    Field("tun_flags", 1, 2, True, nxm=(_N1, 104), key=(K.W_TUN_MISC, 0, 16)),
    # internal tunnel fields: no wire identity, matched only in the datapath key
    Field("tun_tos", 8, 1, False, key=(K.W_TUN_MISC, 16, 8), read_only=True),
    Field("tun_ttl", 8, 1, False, key=(K.W_TUN_MISC, 24, 8), read_only=True),
    Field("tun_tp_dst", 16, 2, False, key=(K.W_TUN_MISC, 32, 16), read_only=True),
    Field("tun_gbp_id", 16, 2, True, nxm=(_N1, 38), where=ABSENT),
    Field("tun_gbp_flags", 8, 1, True, nxm=(_N1, 39), where=ABSENT),
    *(Field(f"tun_metadata{i}", 124 * 8, 124, True, nxm=(_N1, 40 + i), where=TLV) for i in range(64)),
    Field("metadata", 64, 8, True, oxm_name="metadata", oxm=(_B, 2), where=PIPELINE),
    Field("in_port", 16, 2, False, nxm=(_N0, 0), of10=("in_port", 1 << 0), key=(K.W_IN_PORT, 0, 32)),
    Field("in_port_oxm", 32, 4, False, oxm_name="in_port", oxm=(_B, 0), key=(K.W_IN_PORT, 0, 32),
          shares="in_port"),
    Field("in_phy_port", 32, 4, False, oxm_name="in_phy_port", oxm=(_B, 1), where=ABSENT),  # not in OVS
    Field("actset_output", 32, 4, False, oxm=(_B, 43), exp=((ONF_EXPERIMENTER, 43),), where=PIPELINE,
          read_only=True),
    Field("pkt_mark", 32, 4, True, nxm=(_N1, 33), key=(K.W_PKT_MARK, 0, 32)),
    Field("ct_state", 32, 4, True, nxm=(_N1, 105), key=(K.W_CT_STATE, 0, 8), read_only=True),
    Field("ct_zone", 16, 2, False, nxm=(_N1, 106), key=(K.W_CT_STATE, 32, 16), read_only=True),
    Field("ct_mark", 32, 4, True, nxm=(_N1, 107), key=(K.W_CT_MARK, 0, 32)),
    Field("ct_label", 128, 16, True, nxm=(_N1, 108), key=(K.W_CT_LABEL, 0, 128)),
    Field("ct_nw_proto", 8, 1, False, nxm=(_N1, 119), prereqs=P_CT, key=(K.W_CT_TUPLE, 0, 8), read_only=True),
    Field("ct_nw_src", 32, 4, True, nxm=(_N1, 120), prereqs=P_CT4, key=(K.W_CT_TUPLE + 1, 0, 32),
          read_only=True),
    Field("ct_nw_dst", 32, 4, True, nxm=(_N1, 121), prereqs=P_CT4, key=(K.W_CT_TUPLE + 2, 0, 32),
          read_only=True),
    # the key's ct tuple holds IPv4 addresses only
    Field("ct_ipv6_src", 128, 16, True, nxm=(_N1, 122), prereqs=P_CT6, where=ABSENT, read_only=True),
    Field("ct_ipv6_dst", 128, 16, True, nxm=(_N1, 123), prereqs=P_CT6, where=ABSENT, read_only=True),
    Field("ct_tp_src", 16, 2, True, nxm=(_N1, 124), prereqs=P_CT, key=(K.W_CT_TUPLE, 16, 16), read_only=True),
    Field("ct_tp_dst", 16, 2, True, nxm=(_N1, 125), prereqs=P_CT, key=(K.W_CT_TUPLE, 32, 16), read_only=True),
    *(Field(f"reg{i}", 32, 4, True, nxm=(_N1, i), where=PIPELINE) for i in range(16)),
    *(Field(f"xreg{i}", 64, 8, True, oxm=(OFPXMC_PACKET_REGS, i), where=PIPELINE) for i in range(8)),
    *(Field(f"xxreg{i}", 128, 16, True, nxm=(_N1, 111 + i), where=PIPELINE) for i in range(4)),
    # Ethernet
    Field("eth_src", 48, 6, True, aliases=("dl_src",), oxm_name="eth_src", oxm=(_B, 4), nxm=(_N0, 2),
          of10=("dl_src", 1 << 2), key=(K.W_ETH_SRC, 0, 48)),
    Field("eth_dst", 48, 6, True, aliases=("dl_dst",), oxm_name="eth_dst", oxm=(_B, 3), nxm=(_N0, 1),
          of10=("dl_dst", 1 << 3), key=(K.W_ETH_DST, 0, 48)),
    Field("eth_type", 16, 2, False, aliases=("dl_type",), oxm_name="eth_type", oxm=(_B, 5), nxm=(_N0, 3),
          of10=("dl_type", 1 << 4), key=(K.W_ETH_TYPE, 0, 16), read_only=True),
    # VLAN: every view is a slice of W_VLAN_TCI (VID | 0x1000 present | PCP << 13)
    Field("vlan_tci", 16, 2, True, nxm=(_N0, 4), key=(K.W_VLAN_TCI, 0, 16)),
    Field("dl_vlan", 12, 2, False, of10=("dl_vlan", 1 << 1), key=(K.W_VLAN_TCI, 0, 12), shares="vlan_tci"),
    Field("vlan_vid", 13, 2, True, oxm_name="vlan_vid", oxm=(_B, 6), key=(K.W_VLAN_TCI, 0, 13),
          shares="vlan_tci"),
    Field("dl_vlan_pcp", 3, 1, False, of10=("dl_vlan_pcp", 1 << 20), key=(K.W_VLAN_TCI, 13, 3),
          shares="vlan_tci"),
    Field("vlan_pcp", 3, 1, False, oxm_name="vlan_pcp", oxm=(_B, 7), prereqs=P_VLAN, key=(K.W_VLAN_TCI, 13, 3),
          shares="vlan_tci"),
    # MPLS, PBB: no room in the key
    Field("mpls_label", 20, 4, False, oxm_name="mpls_label", oxm=(_B, 34), prereqs=P_MPLS, where=ABSENT),
    Field("mpls_tc", 3, 1, False, oxm_name="mpls_tc", oxm=(_B, 35), prereqs=P_MPLS, where=ABSENT),
    Field("mpls_bos", 1, 1, False, oxm_name="mpls_bos", oxm=(_B, 36), prereqs=P_MPLS, where=ABSENT,
          read_only=True),
    Field("mpls_ttl", 8, 1, False, nxm=(_N1, 30), prereqs=P_MPLS, where=ABSENT),
    Field("pbb_isid", 24, 3, True, oxm_name="pbb_isid", oxm=(_B, 37), where=ABSENT),  # not in OVS; prereq ?
    # IPv4 / IPv6
    Field("ip_src", 32, 4, True, aliases=("nw_src", "ipv4_src"), oxm_name="ipv4_src", oxm=(_B, 11),
          nxm=(_N0, 7), of10=("nw_src", 0x3F << 8), of10_cidr=True, prereqs=P_IPV4, key=(K.W_NW_SRC, 0, 32)),
    Field("ip_dst", 32, 4, True, aliases=("nw_dst", "ipv4_dst"), oxm_name="ipv4_dst", oxm=(_B, 12),
          nxm=(_N0, 8), of10=("nw_dst", 0x3F << 14), of10_cidr=True, prereqs=P_IPV4, key=(K.W_NW_DST, 0, 32)),
    Field("ipv6_src", 128, 16, True, oxm_name="ipv6_src", oxm=(_B, 26), nxm=(_N1, 19), prereqs=P_IPV6,
          key=(K.W_IPV6_SRC, 0, 128)),
    Field("ipv6_dst", 128, 16, True, oxm_name="ipv6_dst", oxm=(_B, 27), nxm=(_N1, 20), prereqs=P_IPV6,
          key=(K.W_IPV6_DST, 0, 128)),
    Field("ipv6_label", 20, 4, True, aliases=("ipv6_flabel",), oxm_name="ipv6_flabel", oxm=(_B, 28),
          nxm=(_N1, 27), prereqs=P_IPV6, key=(K.W_IPV6_LABEL, 0, 20)),
    Field("ipv6_exthdr", 9, 2, True, oxm_name="ipv6_exthdr", oxm=(_B, 39), prereqs=P_IPV6,
          where=ABSENT),  # not in OVS
    Field("nw_proto", 8, 1, False, aliases=("ip_proto",), oxm_name="ip_proto", oxm=(_B, 10), nxm=(_N0, 6),
          of10=("nw_proto", 1 << 5), prereqs=P_IP, key=(_KN, 0, 8), read_only=True),
    Field("nw_tos", 8, 1, False, nxm=(_N0, 5), of10=("nw_tos", 1 << 21), prereqs=P_IP, key=(_KN, 8, 8)),
    Field("ip_dscp", 6, 1, False, oxm_name="ip_dscp", oxm=(_B, 8), prereqs=P_IP, key=(_KN, 10, 6),
          shares="nw_tos"),
    Field("nw_ecn", 2, 1, False, aliases=("ip_ecn",), oxm_name="ip_ecn", oxm=(_B, 9), nxm=(_N1, 28),
          prereqs=P_IP, key=(_KN, 8, 2), shares="nw_tos"),
    Field("nw_ttl", 8, 1, False, nxm=(_N1, 29), prereqs=P_IP, key=(_KN, 16, 8)),
    Field("ip_frag", 2, 1, True, aliases=("nw_frag",), nxm=(_N1, 26), prereqs=P_IP, key=(_KN, 24, 8),
          read_only=True),
    # ARP (ARP's opcode keeps its low byte in nw_proto's bits, as OVS does)
    Field("arp_op", 16, 2, False, oxm_name="arp_op", oxm=(_B, 21), nxm=(_N0, 15), prereqs=P_ARP,
          key=(_KN, 0, 8), shares="nw_proto"),
    Field("arp_spa", 32, 4, True, oxm_name="arp_spa", oxm=(_B, 22), nxm=(_N0, 16), prereqs=P_ARP,
          key=(K.W_NW_SRC, 0, 32), shares="ip_src"),
    Field("arp_tpa", 32, 4, True, oxm_name="arp_tpa", oxm=(_B, 23), nxm=(_N0, 17), prereqs=P_ARP,
          key=(K.W_NW_DST, 0, 32), shares="ip_dst"),
    Field("arp_sha", 48, 6, True, oxm_name="arp_sha", oxm=(_B, 24), nxm=(_N1, 17), prereqs=P_ARP,
          key=(K.W_ARP_SHA, 0, 48)),
    Field("arp_tha", 48, 6, True, oxm_name="arp_tha", oxm=(_B, 25), nxm=(_N1, 18), prereqs=P_ARP,
          key=(K.W_ARP_THA, 0, 48)),
    # L4: every transport view is a slice of W_TP (src | dst << 16 | tcp_flags << 32)
    Field("tcp_src", 16, 2, True, aliases=("tp_src",), oxm_name="tcp_src", oxm=(_B, 13), nxm=(_N0, 9),
          of10=("tp_src", 1 << 6), prereqs=P_TCP, key=(_KT, 0, 16)),
    Field("tcp_dst", 16, 2, True, aliases=("tp_dst",), oxm_name="tcp_dst", oxm=(_B, 14), nxm=(_N0, 10),
          of10=("tp_dst", 1 << 7), prereqs=P_TCP, key=(_KT, 16, 16)),
    Field("tcp_flags", 12, 2, True, nxm=(_N1, 34), oxm=(_B, 42), exp=((ONF_EXPERIMENTER, 42),), prereqs=P_TCP,
          key=(_KT, 32, 12), read_only=True),
    Field("udp_src", 16, 2, True, oxm_name="udp_src", oxm=(_B, 15), nxm=(_N0, 11), prereqs=P_UDP,
          key=(_KT, 0, 16), shares="tcp_src"),
    Field("udp_dst", 16, 2, True, oxm_name="udp_dst", oxm=(_B, 16), nxm=(_N0, 12), prereqs=P_UDP,
          key=(_KT, 16, 16), shares="tcp_dst"),
    Field("sctp_src", 16, 2, True, oxm_name="sctp_src", oxm=(_B, 17), prereqs=P_SCTP, key=(_KT, 0, 16),
          shares="tcp_src"),
    Field("sctp_dst", 16, 2, True, oxm_name="sctp_dst", oxm=(_B, 18), prereqs=P_SCTP, key=(_KT, 16, 16),
          shares="tcp_dst"),
    Field("icmp_type", 8, 1, False, aliases=("icmpv4_type",), oxm_name="icmpv4_type", oxm=(_B, 19),
          nxm=(_N0, 13), prereqs=P_ICMP4, key=(_KT, 0, 8), shares="tcp_src"),
    Field("icmp_code", 8, 1, False, aliases=("icmpv4_code",), oxm_name="icmpv4_code", oxm=(_B, 20),
          nxm=(_N0, 14), prereqs=P_ICMP4, key=(_KT, 16, 8), shares="tcp_dst"),
    Field("icmpv6_type", 8, 1, False, oxm_name="icmpv6_type", oxm=(_B, 29), nxm=(_N1, 21), prereqs=P_ICMP6,
          key=(_KT, 0, 8), shares="tcp_src"),
    Field("icmpv6_code", 8, 1, False, oxm_name="icmpv6_code", oxm=(_B, 30), nxm=(_N1, 22), prereqs=P_ICMP6,
          key=(_KT, 16, 8), shares="tcp_dst"),
    # IPv6 neighbour discovery (sll / tll share the ARP hardware address words)
    Field("nd_target", 128, 16, True, aliases=("ipv6_nd_target",), oxm_name="ipv6_nd_target", oxm=(_B, 31),
          nxm=(_N1, 23), prereqs=P_ND, key=(K.W_ND_TARGET, 0, 128)),
    Field("nd_sll", 48, 6, True, aliases=("ipv6_nd_sll",), oxm_name="ipv6_nd_sll", oxm=(_B, 32),
          nxm=(_N1, 24), prereqs=P_ND_SOL, key=(K.W_ARP_SHA, 0, 48), shares="arp_sha"),
    Field("nd_tll", 48, 6, True, aliases=("ipv6_nd_tll",), oxm_name="ipv6_nd_tll", oxm=(_B, 33),
          nxm=(_N1, 25), prereqs=P_ND_ADV, key=(K.W_ARP_THA, 0, 48), shares="arp_tha"),
)

#: names that mean another field once the match has an IPv6 eth_type (ovs-ofctl prints ICMPv6
#: type/code as icmp_type/icmp_code after "icmp6")
IPV6_CONTEXT = {"icmp_type": "icmpv6_type", "icmp_code": "icmpv6_code"}

_BY_NAME: dict[str, Field] = {}
_BY_OXM_NAME: dict[str, Field] = {}
_BY_OXM: dict[tuple[int, int], Field] = {}
_BY_NXM: dict[tuple[int, int], Field] = {}
_BY_EXP: dict[tuple[int, int], Field] = {}
_BY_OF10: dict[str, Field] = {}


def _index() -> None:
    for f in FIELDS:
        for n in (f.name, *f.aliases):
            if n in _BY_NAME:
                raise ValueError(f"field name {n!r} used twice")
            _BY_NAME[n] = f
        for table, k in ((_BY_OXM_NAME, f.oxm_name), (_BY_OXM, f.oxm), (_BY_NXM, f.nxm),
                         (_BY_OF10, f.of10[0] if f.of10 else None), *((_BY_EXP, e) for e in f.exp)):
            if k is None:
                continue
            if k in table:
                raise ValueError(f"{f.name}: wire identity {k!r} used twice")
            table[k] = f  # type: ignore[index]


_index()


def by_name(name: str, eth_type: int | None = None) -> Field | None:
    """The field an ovs-ofctl name or alias means (``icmp_type`` after an IPv6 eth_type is ICMPv6's)."""
    if eth_type == 0x86DD and name in IPV6_CONTEXT:
        name = IPV6_CONTEXT[name]
    return _BY_NAME.get(name)


def by_oxm_name(name: str) -> Field | None:
    """The field the OpenFlow spec (and ``codec.OXM_FIELDS``) calls ``name``, e.g. ``in_port``, ``ipv4_src``."""
    return _BY_OXM_NAME.get(name)


def by_oxm(oxm_class: int, field: int, experimenter: int | None = None) -> Field | None:
    """The field of an OXM header's class and field (NXM classes and experimenter OXMs included)."""
    if oxm_class == OFPXMC_EXPERIMENTER:
        return None if experimenter is None else _BY_EXP.get((experimenter, field))
    if oxm_class in (OFPXMC_NXM_0, OFPXMC_NXM_1):
        return _BY_NXM.get((oxm_class, field))
    return _BY_OXM.get((oxm_class, field))


def by_nxm_header(header: int) -> Field | None:
    """The field of a 32-bit NXM/OXM header (``class << 16 | field << 9 | hasmask << 8 | length``)."""
    return by_oxm(header >> 16, (header >> 9) & 0x7F)


def by_of10(name: str) -> Field | None:
    """The field an OpenFlow 1.0 ``ofp_match`` member name stands for (``tp_src`` is TCP's port)."""
    return _BY_OF10.get(name)


def nxm_header(f: Field, masked: bool = False) -> int | None:
    """The NXM header of ``f`` (``None`` if it has no NXM identity); the length doubles when masked."""
    if f.nxm is None:
        return None
    cls, num = f.nxm
    return cls << 16 | num << 9 | int(masked) << 8 | f.nbytes * (2 if masked else 1)


def key_slice(f: Field | str) -> tuple[int, int, int] | None:
    """``(word, shift, bits)`` of the field in the datapath key, or ``None`` if it is not in the key."""
    field = by_name(f) if isinstance(f, str) else f
    if field is None:
        raise KeyError(f)
    return field.key if field.where == KEY else None


# ---------------------------------------------------------------- the translator's flow state
# The walk's flow state is the 48 key words followed by the pipeline words below; a pipeline field is
# a slice of them as a key field is a slice of the key. The 16 32-bit registers are stored as the 8
# xregs (``xregN = reg<2N> << 32 | reg<2N+1>``) and ``xxregN = xreg<2N> << 64 | xreg<2N+1>`` (high word
# first), the aliasing OVS defines.
W_METADATA = K.KEY_WORDS           # 64 bits
W_XREG = K.KEY_WORDS + 1           # xreg0 .. xreg7, one word each
W_CONJ_ID = K.KEY_WORDS + 9        # 32 bits
FLOW_WORDS = K.KEY_WORDS + 10      # key words + pipeline words

PIPELINE_SLICES: dict[str, tuple[int, int, int]] = {
    "metadata": (W_METADATA, 0, 64),
    "conj_id": (W_CONJ_ID, 0, 32),
    **{f"reg{i}": (W_XREG + i // 2, 0 if i % 2 else 32, 32) for i in range(16)},
    **{f"xreg{i}": (W_XREG + i, 0, 64) for i in range(8)},
    **{f"xxreg{i}": (W_XREG + 2 * i, 0, 128) for i in range(4)},
}


def flow_slice(f: Field | str) -> tuple[int, int, int] | None:
    """``(word, shift, bits)`` of the field in the translator's flow state (key words, then pipeline
    words; bits > 64 span words, high first), or ``None`` when the field has no place there."""
    field = by_name(f) if isinstance(f, str) else f
    if field is None:
        raise KeyError(f)
    if field.where == KEY:
        return field.key
    if field.where == TLV:
        return tlvmap.flow_slice(field.name)
    return PIPELINE_SLICES.get(field.name)
