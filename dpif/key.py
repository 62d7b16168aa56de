"""The datapath flow key: ``uint64[n, KEY_WORDS]``, one row per frame (or per mask / megaflow).

Dense and fixed: every field group has its own word (``W_*``), so a mask is a row of the same shape
and a megaflow is ``(key & mask, mask)``. Absent fields are 0. Addresses are big-endian integers
(MAC 48 bits, IPv4 32 bits); a 128-bit field takes two words, the high half first. Registers,
metadata, conj_id and the action stack are pipeline state of the translator, never in the key.

Words, by cache line (bit 0 is the least significant bit):

* line 0, metadata and L2 (what every megaflow looks at):
  ``W_RECIRC_ID`` recirculation id (32 bits), ``W_IN_PORT`` global datapath port (32 bits),
  ``W_DP_HASH`` (32 bits), ``W_PKT_MARK`` (32 bits), ``W_ETH_DST``, ``W_ETH_SRC`` (48 bits),
  ``W_VLAN_TCI`` the outer 802.1Q / 802.1ad tag: ``tci | tpid << 16`` (0 when untagged), where ``tci``
  is OVS's form ``VID | 0x1000 | PCP << 13``: bit 12 (the frame's CFI/DEI bit) means "a tag is
  present" and is always 1 in a tagged frame's key, so the frame's DEI bit is not kept (ovs-fields(7):
  the TCI "with the bit in CFI's position forced to 1"; OpenFlow and OVS cannot match or set DEI);
  ``tpid`` is 0x8100 or 0x88a8. ``W_ETH_TYPE`` (16 bits): the ethertype after the tags (up to two);
  an 802.3 length field gives ``ETH_TYPE_NONE`` (0x05FF) unless an LLC/SNAP header with OUI 0
  follows, whose type is taken.
* line 1, L3: ``W_NW`` ``proto | tos << 8 | ttl << 16 | frag << 24`` (``FRAG_*``; ARP: the opcode
  as proto, 0 when above 255, as OVS does; an IPv6 later fragment: proto 44), ``W_NW_SRC`` /
  ``W_NW_DST`` IPv4 addresses (ARP: spa / tpa), ``W_IPV6_SRC`` (2 words), ``W_IPV6_DST`` (2 words),
  ``W_IPV6_LABEL`` (20 bits).
* line 2, L4 and neighbour discovery: ``W_TP`` ``src | dst << 16 | tcp_flags << 32`` (ICMP: type as
  src, code as dst), ``W_ARP_SHA`` / ``W_ARP_THA`` (48 bits; IPv6 ND: sll / tll), ``W_ND_TARGET``
  (2 words), ``W_VLAN_TCI2`` the inner tag of a double-tagged frame (same form as ``W_VLAN_TCI``);
  words 22, 23 reserved.
* line 3, connection tracking: ``W_CT_STATE`` ``state (8 bits) | zone << 32`` (16 bits),
  ``W_CT_MARK`` (32 bits), ``W_CT_LABEL`` (2 words), ``W_CT_TUPLE`` (3 words: ``nw_proto |
  tp_src << 16 | tp_dst << 32``, then the IPv4 src and dst of the original direction); word 31 reserved.
* line 4, tunnel: ``W_TUN_ID`` (64 bits), ``W_TUN_SRC`` / ``W_TUN_DST`` (IPv4), ``W_TUN_MISC``
  ``flags (16 bits) | tos << 16 | ttl << 24 | tp_dst << 32``, ``W_TUN_IPV6_SRC`` (2 words),
  ``W_TUN_IPV6_DST`` (2 words).
* line 5: ``W_TUN_METADATA``, 8 words of Geneve options as the TLV table maps them.

``KEY_WORDS`` = 48 (six cache lines); 45 are named, 3 are reserved for fields still to come.

``dpif.extract.extract_burst`` fills keys from frames (``dpif/README.md``, "Extraction").
"""

from __future__ import annotations

import numpy as np

W_RECIRC_ID = 0
W_IN_PORT = 1
W_DP_HASH = 2
W_PKT_MARK = 3
W_ETH_DST = 4
W_ETH_SRC = 5
W_VLAN_TCI = 6
W_ETH_TYPE = 7
W_NW = 8
W_NW_SRC = 9
W_NW_DST = 10
W_IPV6_SRC = 11       # 2 words: high, low
W_IPV6_DST = 13       # 2 words
W_IPV6_LABEL = 15
W_TP = 16
W_ARP_SHA = 17
W_ARP_THA = 18
W_ND_TARGET = 19      # 2 words
W_VLAN_TCI2 = 21      # inner tag, as W_VLAN_TCI
# 22, 23 reserved
W_CT_STATE = 24
W_CT_MARK = 25
W_CT_LABEL = 26       # 2 words
W_CT_TUPLE = 28       # 3 words
# 31 reserved
W_TUN_ID = 32
W_TUN_SRC = 33
W_TUN_DST = 34
W_TUN_MISC = 35
W_TUN_IPV6_SRC = 36   # 2 words
W_TUN_IPV6_DST = 38   # 2 words
W_TUN_METADATA = 40   # 8 words
TUN_METADATA_WORDS = 8
KEY_WORDS = 48
RESERVED_WORDS = (22, 23, 31)

VLAN_CFI = 0x1000     # W_VLAN_TCI / W_VLAN_TCI2: a tag is present
ETH_TYPE_NONE = 0x05FF  # W_ETH_TYPE of a frame with an 802.3 length field (OVS's FLOW_DL_TYPE_NONE)

# W_NW frag byte
FRAG_ANY = 1 << 0     # an IP fragment (first or later)
FRAG_LATER = 1 << 1   # not the first fragment: no L4 header

# field name -> (word, shift, width); a width above 64 spans consecutive words, high half first
FIELDS: dict[str, tuple[int, int, int]] = {
    "recirc_id": (W_RECIRC_ID, 0, 32),
    "in_port": (W_IN_PORT, 0, 32),
    "dp_hash": (W_DP_HASH, 0, 32),
    "pkt_mark": (W_PKT_MARK, 0, 32),
    "eth_dst": (W_ETH_DST, 0, 48),
    "eth_src": (W_ETH_SRC, 0, 48),
    "vlan_tci": (W_VLAN_TCI, 0, 16),
    "vlan_tpid": (W_VLAN_TCI, 16, 16),
    "vlan_tci2": (W_VLAN_TCI2, 0, 16),
    "vlan_tpid2": (W_VLAN_TCI2, 16, 16),
    "eth_type": (W_ETH_TYPE, 0, 16),
    "nw_proto": (W_NW, 0, 8),
    "arp_op": (W_NW, 0, 8),
    "nw_tos": (W_NW, 8, 8),
    "nw_ttl": (W_NW, 16, 8),
    "nw_frag": (W_NW, 24, 8),
    "nw_src": (W_NW_SRC, 0, 32),
    "nw_dst": (W_NW_DST, 0, 32),
    "arp_spa": (W_NW_SRC, 0, 32),
    "arp_tpa": (W_NW_DST, 0, 32),
    "ipv6_src": (W_IPV6_SRC, 0, 128),
    "ipv6_dst": (W_IPV6_DST, 0, 128),
    "ipv6_label": (W_IPV6_LABEL, 0, 20),
    "tp_src": (W_TP, 0, 16),
    "tp_dst": (W_TP, 16, 16),
    "icmp_type": (W_TP, 0, 8),
    "icmp_code": (W_TP, 16, 8),
    "tcp_flags": (W_TP, 32, 12),
    "arp_sha": (W_ARP_SHA, 0, 48),
    "arp_tha": (W_ARP_THA, 0, 48),
    "nd_sll": (W_ARP_SHA, 0, 48),
    "nd_tll": (W_ARP_THA, 0, 48),
    "nd_target": (W_ND_TARGET, 0, 128),
    "ct_state": (W_CT_STATE, 0, 8),
    "ct_zone": (W_CT_STATE, 32, 16),
    "ct_mark": (W_CT_MARK, 0, 32),
    "ct_label": (W_CT_LABEL, 0, 128),
    "ct_nw_proto": (W_CT_TUPLE, 0, 8),
    "ct_tp_src": (W_CT_TUPLE, 16, 16),
    "ct_tp_dst": (W_CT_TUPLE, 32, 16),
    "ct_nw_src": (W_CT_TUPLE + 1, 0, 32),
    "ct_nw_dst": (W_CT_TUPLE + 2, 0, 32),
    "tun_id": (W_TUN_ID, 0, 64),
    "tun_src": (W_TUN_SRC, 0, 32),
    "tun_dst": (W_TUN_DST, 0, 32),
    "tun_flags": (W_TUN_MISC, 0, 16),
    "tun_tos": (W_TUN_MISC, 16, 8),
    "tun_ttl": (W_TUN_MISC, 24, 8),
    "tun_tp_dst": (W_TUN_MISC, 32, 16),
    "tun_ipv6_src": (W_TUN_IPV6_SRC, 0, 128),
    "tun_ipv6_dst": (W_TUN_IPV6_DST, 0, 128),
    "tun_metadata": (W_TUN_METADATA, 0, 64 * TUN_METADATA_WORDS),
}


# datapath-only fields: no OpenFlow / NXM identity (OVS matches one tag and never its TPID)
DATAPATH_ONLY = frozenset({"vlan_tpid", "vlan_tci2", "vlan_tpid2"})

# other names for bits a field above already names
ALIASES = frozenset({"arp_op", "arp_spa", "arp_tpa", "icmp_type", "icmp_code", "nd_sll", "nd_tll"})


def key_from_fields(**fields: int) -> np.ndarray:
    """One key row (``uint64[KEY_WORDS]``) with the named fields set, e.g.
    ``key_from_fields(eth_dst=0x020000000001, nw_src=0x0A000001, tp_src=80)``; the same call with
    all-ones values builds a mask row. Fields sharing bits (``nw_src``/``arp_spa``) are OR-ed."""
    row = [0] * KEY_WORDS
    for name, value in fields.items():
        if name not in FIELDS:
            raise ValueError(f"unknown key field {name!r}")
        word, shift, width = FIELDS[name]
        value = int(value)
        if not 0 <= value < 1 << width:
            raise ValueError(f"{name}={value:#x} is wider than {width} bits")
        if width <= 64:
            row[word] |= value << shift
        else:
            n = width // 64
            for j in range(n):
                row[word + j] |= (value >> (64 * (n - 1 - j))) & ((1 << 64) - 1)
    return np.array(row, dtype=np.uint64)


def key_fields(row: np.ndarray) -> dict[str, int]:
    """The non-zero fields of a key (or mask) row by name (aliases left out: ``nw_src``, not
    ``arp_spa``), for listings such as ``dpctl/dump-flows``."""
    out: dict[str, int] = {}
    for name, (word, shift, width) in FIELDS.items():
        if name in ALIASES:
            continue
        if width <= 64:
            v = (int(row[word]) >> shift) & ((1 << width) - 1)
        else:
            v = 0
            for j in range(width // 64):
                v = v << 64 | int(row[word + j])
        if v:
            out[name] = v
    return out
