"""The tunnels' ``ovs-appctl`` commands, with OVS 3.1's names, usage strings, argument counts, replies and
errors: ``ovs/route/{add,del,show,lookup}``, ``tnl/neigh/{show,set,flush,aging}`` and their older ``tnl/arp/*``
names, ``tnl/ports/show [-v]``, ``tnl/egress_port_range``.

``register(ovs.unixctl.command_register, route, neigh, ports)`` registers them; callbacks take the ``ovs``
package's ``(conn, argv, aux)`` (``argv`` without the command's name). Replies end with a newline as
ovs-vswitchd's do.
"""

from __future__ import annotations

from collections.abc import Callable

from vswitch.tunnels.neigh import NeighCache
from vswitch.tunnels.ovstext import (
    parse_host,
    parse_ip,
    parse_ipv4_cidr,
    parse_ipv6,
    parse_ipv6_cidr,
    parse_mac,
    scan_pkt_mark,
    scan_u32,
    to_address,
)
from vswitch.tunnels.route import RouteError, RouteTable
from vswitch.tunnels.tnlports import SourcePorts, TunnelPortMap


def _text(body: str) -> str:
    return body if not body or body.endswith("\n") else body + "\n"


def _ok(conn: object, body: str) -> None:
    conn.reply(_text(body))


def _error(conn: object, body: str) -> None:
    conn.reply_error(_text(body))


def _atoi(s: str) -> int:
    """C's ``atoi``: spaces, a sign, digits; 0 when there are none."""
    s = s.lstrip(" \t\n\v\f\r")
    sign = -1 if s[:1] == "-" else 1
    s = s[1:] if s[:1] in "+-" else s
    digits = ""
    for ch in s:
        if not ch.isdigit():
            break
        digits += ch
    return sign * int(digits) if digits else 0


class TunnelCommands:
    """The callbacks, bound to the daemon's route table, neighbour cache, tunnel port map and source ports."""

    def __init__(self, route: RouteTable, neigh: NeighCache, ports: TunnelPortMap,
                 source_ports: SourcePorts | None = None) -> None:
        self.route = route
        self.neigh = neigh
        self.ports = ports
        self.source_ports = source_ports if source_ports is not None else SourcePorts()

    # ------------------------------------------------------------ ovs/route/*
    def route_add(self, conn: object, argv: list[str], _aux: object) -> None:
        gw = None
        mark = 0
        if parse_ipv4_cidr(argv[0]) is not None:
            parse_gw, bad_gw = parse_ip, "Invalid pkt_mark or gateway"
        elif parse_ipv6_cidr(argv[0]) is not None:
            parse_gw, bad_gw = parse_ipv6, "Invalid pkt_mark or IPv6 gateway"
        else:
            return _error(conn, "Invalid parameters")
        if len(argv) > 2:    # a pkt_mark, or the gateway of the prefix's family
            scanned = scan_pkt_mark(argv[2])
            if scanned is not None:
                mark = scanned
            else:
                gw = parse_gw(argv[2])
                if gw is None:
                    return _error(conn, bad_gw)
        if len(argv) > 3:
            scanned = scan_pkt_mark(argv[3])
            if scanned is None:
                return _error(conn, "Invalid pkt_mark")
            mark = scanned
        try:
            self.route.add(argv[0], argv[1], to_address(gw) if gw else None, mark)
        except RouteError as e:
            return _error(conn, str(e))
        _ok(conn, "OK")

    def route_del(self, conn: object, argv: list[str], _aux: object) -> None:
        if parse_ipv4_cidr(argv[0]) is None and parse_ipv6_cidr(argv[0]) is None:
            return _error(conn, "Invalid parameters")
        mark = 0
        if len(argv) > 1:
            scanned = scan_pkt_mark(argv[1])
            if scanned is None:
                return _error(conn, "Invalid pkt_mark")
            mark = scanned
        try:
            self.route.delete(argv[0], mark)
        except RouteError as e:
            return _error(conn, str(e))
        _ok(conn, "OK")

    def route_show(self, conn: object, argv: list[str], _aux: object) -> None:
        _ok(conn, self.route.show())

    def route_lookup(self, conn: object, argv: list[str], _aux: object) -> None:
        v4 = parse_ipv4_cidr(argv[0])
        v6 = parse_ipv6_cidr(argv[0]) if v4 is None or v4[1] != 32 else None
        if v4 is not None and v4[1] == 32:
            ip = v4[0]
        elif v6 is not None and v6[1] == 128:
            ip = v6[0]
        else:
            return _error(conn, "Invalid parameters")
        mark = 0
        if len(argv) > 1:
            scanned = scan_pkt_mark(argv[1])
            if scanned is None:
                return _error(conn, "Invalid pkt_mark")
            mark = scanned
        text = self.route.lookup_text(ip, mark)
        if text is None:
            return _error(conn, "Not found")
        _ok(conn, text)

    # ------------------------------------------------------------ tnl/neigh/*, tnl/arp/*
    def neigh_show(self, conn: object, argv: list[str], _aux: object) -> None:
        _ok(conn, self.neigh.show())

    def neigh_set(self, conn: object, argv: list[str], _aux: object) -> None:
        ip = parse_host(argv[1])
        if ip is None:
            return _error(conn, "bad IP address")
        mac = parse_mac(argv[2])
        if mac is None:
            return _error(conn, "bad MAC address")
        self.neigh.set(argv[0], ip, mac)
        _ok(conn, "OK")

    def neigh_flush(self, conn: object, argv: list[str], _aux: object) -> None:
        self.neigh.flush()
        _ok(conn, "OK")

    def neigh_aging(self, conn: object, argv: list[str], _aux: object) -> None:
        if not argv:
            return _ok(conn, str(self.neigh.aging))
        seconds = scan_u32(argv[0])
        if seconds is None or not 1 <= seconds <= 3600:
            return _error(conn, "bad aging value")
        self.neigh.set_aging(seconds)
        _ok(conn, "OK")

    # ------------------------------------------------------------ tnl/ports/show, tnl/egress_port_range
    def ports_show(self, conn: object, argv: list[str], _aux: object) -> None:
        _ok(conn, self.ports.show(verbose=bool(argv) and argv[0].lower() == "-v"))

    def egress_port_range(self, conn: object, argv: list[str], _aux: object) -> None:
        sp = self.source_ports
        if len(argv) < 2:
            return _ok(conn, f"Tunnel UDP source port range: {sp.low}-{sp.high}\n")
        low, high = _atoi(argv[0]), _atoi(argv[1])
        if not 0 < low <= 0xFFFF:
            return _ok(conn, "Invalid min.")
        if not 0 < high <= 0xFFFF:
            return _ok(conn, "Invalid max.")
        sp.low, sp.high = min(low, high), max(low, high)
        _ok(conn, "OK")


def register(command_register: Callable, route: RouteTable, neigh: NeighCache, ports: TunnelPortMap,
             source_ports: SourcePorts | None = None) -> TunnelCommands:
    """Register the tunnel commands with ``command_register`` (``ovs.unixctl.command_register``'s signature:
    name, usage, min args, max args, callback, aux) and return their holder."""
    cmds = TunnelCommands(route, neigh, ports, source_ports)
    command_register("ovs/route/add", "ip_addr/prefix_len out_br_name [gw] [pkt_mark=mark]", 2, 4,
                     cmds.route_add, None)
    command_register("ovs/route/show", "", 0, 0, cmds.route_show, None)
    command_register("ovs/route/del", "ip_addr/prefix_len [pkt_mark=mark]", 1, 2, cmds.route_del, None)
    command_register("ovs/route/lookup", "ip_addr [pkt_mark=mark]", 1, 2, cmds.route_lookup, None)
    for family in ("arp", "neigh"):
        command_register(f"tnl/{family}/show", "", 0, 0, cmds.neigh_show, None)
        command_register(f"tnl/{family}/set", "BRIDGE IP MAC", 3, 3, cmds.neigh_set, None)
        command_register(f"tnl/{family}/flush", "", 0, 0, cmds.neigh_flush, None)
        command_register(f"tnl/{family}/aging", "[SECS]", 0, 1, cmds.neigh_aging, None)
    command_register("tnl/ports/show", "-v", 0, 1, cmds.ports_show, None)
    command_register("tnl/egress_port_range", "min max", 0, 2, cmds.egress_port_range, None)
    return cmds
