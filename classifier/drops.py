"""Named drop reasons of the classifier (the VPP-style error-counter table of the node).

Counters are kept per ingress port: ``drops`` is ``int64[n_ports, N_DROPS]``. Reason 0 is
never counted (it means "forwarded").
"""

DROP_NONE = 0
DROP_RX_RUNT = 1              # shorter than an Ethernet header (14 bytes)
DROP_RX_VLAN_TRUNCATED = 2    # ethertype 0x8100 but the 802.1Q tag or inner ethertype is cut short
DROP_RX_SRC_MULTICAST = 3     # source MAC is a multicast/broadcast address
DROP_RESERVED_MULTICAST = 4   # destination 01:80:c2:00:00:00-0f (STP, LACP, LLDP, pause): not forwarded
DROP_VLAN_FILTERED = 5        # the frame's VLAN is not allowed on the ingress (or learned egress) port
DROP_SAME_PORT = 6            # destination learned on the ingress port: never sent back
DROP_NO_OUTPUT_PORT = 7       # flood with no other port in the frame's VLAN
DROP_PORT_DOWN = 8            # destination learned on a port that is down or removed
N_DROPS = 9

DROP_NAMES = {
    DROP_RX_RUNT: "rx_runt",
    DROP_RX_VLAN_TRUNCATED: "rx_vlan_truncated",
    DROP_RX_SRC_MULTICAST: "rx_src_multicast",
    DROP_RESERVED_MULTICAST: "reserved_multicast",
    DROP_VLAN_FILTERED: "vlan_filtered",
    DROP_SAME_PORT: "same_port",
    DROP_NO_OUTPUT_PORT: "no_output_port",
    DROP_PORT_DOWN: "port_down",
}

DROP_HELP = {
    "rx_runt": "frame shorter than an Ethernet header",
    "rx_vlan_truncated": "802.1Q tag cut short",
    "rx_src_multicast": "source MAC is multicast or broadcast",
    "reserved_multicast": "destination is an IEEE 802.1D reserved address (STP/LACP/LLDP), not forwarded",
    "vlan_filtered": "VLAN not allowed on the ingress or egress port",
    "same_port": "destination is on the ingress port",
    "no_output_port": "flooded frame had no other port in its VLAN",
    "port_down": "destination port is down",
}
