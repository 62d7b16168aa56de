"""Layout of the per-slot key array that ``parse_burst`` fills.

``keys`` is ``uint64[n_slots, NKEYS]``: row ``slot`` holds the header fields of the frame in
that pool slot. The same row feeds the VMDq-style L2 table and, later, OpenFlow matching.
Fields absent from a frame are 0. MAC addresses are 48-bit big-endian integers, IPv4
addresses 32-bit, IPv6 addresses two 64-bit halves.
"""

# First cache line: what the NORMAL action reads and writes for every frame.
K_ETH_DST = 0
K_ETH_SRC = 1
K_VLAN_VID = 2     # 802.1Q VID | VID_PRESENT when the frame carries a tag, 0 when untagged
K_VLAN_PCP = 3     # priority of the tag, 0 when untagged
K_ETH_TYPE = 4     # ethertype after the tag; ETH_TYPE_NONE for 802.3 length-field frames
K_L3_OFS = 5       # byte offset of the L3 header
K_FLAGS = 6        # F_* bits below
K_DROP = 7         # 0, or the DROP_* reason the parser found (see classifier.drops)
K_IN_PORT = 8      # datapath port number the frame arrived on (parse_burst)
# L3/L4 fields (parse_burst only).
K_IP_PROTO = 9     # IPv4 protocol / IPv6 next header (after extension headers)
K_IP_TOS = 10      # IPv4 TOS / IPv6 traffic class
K_NW_SRC = 11      # IPv4 source address
K_NW_DST = 12      # IPv4 destination address
K_IPV6_SRC_HI = 13
K_IPV6_SRC_LO = 14
K_IPV6_DST_HI = 15
K_IPV6_DST_LO = 16
K_TP_SRC = 17      # TCP/UDP source port, ICMP/ICMPv6 type
K_TP_DST = 18      # TCP/UDP destination port, ICMP/ICMPv6 code
K_ARP_OP = 19
K_ARP_SPA = 20
K_ARP_TPA = 21
K_ARP_SHA = 22
K_ARP_THA = 23
NKEYS = 24

K_L3_FIRST = K_IP_PROTO   # parse_burst rewrites K_L3_FIRST .. NKEYS-1 for every frame
HEADER_FIELDS = tuple(range(K_IN_PORT)) + tuple(range(K_L3_FIRST, NKEYS))  # what parsing fills


VID_PRESENT = 0x1000      # same meaning as OpenFlow's OFPVID_PRESENT
ETH_TYPE_NONE = 0x05FF    # frames with an 802.3 length field instead of an ethertype

ETH_TYPE_VLAN = 0x8100
ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_IPV6 = 0x86DD
ETH_TYPE_ARP = 0x0806

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58

# K_FLAGS bits
F_VLAN = 1 << 0            # frame carried an 802.1Q tag
F_L3_TRUNCATED = 1 << 1    # L3 header announced by the ethertype is cut short
F_L4_TRUNCATED = 1 << 2    # L4 header announced by the IP protocol is cut short
F_IP_LATER_FRAG = 1 << 3   # IP fragment other than the first: no L4 header
F_IP_FRAG = 1 << 4         # any IP fragment (first or later)
F_L4 = 1 << 5              # K_TP_SRC / K_TP_DST are valid
