"""Tunnel ports: ``geneve``, ``vxlan`` and ``gre`` interfaces, Open vSwitch's userspace tunnelling.

A tunnel port has no device. Frames output to it are encapsulated (the translator builds the outer headers
from the port's options, the route to ``remote_ip`` and the next hop's MAC) and go on through the bridge whose
internal port holds the route's source address (e.g. ``br-phy``); frames that arrive on that bridge for a local
tunnel address, protocol and UDP port are decapsulated and enter the tunnel port's bridge with ``in_port`` = the
tunnel port and the ``tun_*`` fields set. ``TunnelConfig`` is the port's ``Interface.options`` parsed and
checked as ``ovs-vswitchd`` checks them (ovs-vswitchd.conf.db(5), "Tunnel Options"):

=============  =================================================================================
option         meaning
=============  =================================================================================
remote_ip      the far end (IPv4 or IPv6), or ``flow``: the flow's ``tun_dst`` / ``tun_ipv6_dst``
local_ip       the near end's address (default: the route's source), or ``flow`` (``tun_src``)
key            ``in_key`` and ``out_key`` at once: a number (VNI 24 bits, GRE key 32 bits) or ``flow``
in_key         the key a received frame must carry (``flow``: any; then ``tun_id`` holds it)
out_key        the key sent (``flow``: the flow's ``tun_id``)
dst_port       the UDP port (Geneve 6081, VXLAN 4789)
csum           ``true``: an outer UDP (GRE) checksum
tos            the outer TOS (a number, or ``inherit``: the inner packet's)
ttl            the outer TTL (default 64; ``inherit`` is refused here)
df_default     the outer IPv4 DF bit (default ``true``)
packet_type    ``legacy_l2`` (the default; ``legacy_l3`` / ``ptap`` are refused)
=============  =================================================================================
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from backends.port import DevicelessPort, PortError

KINDS = {"geneve": 1, "vxlan": 2, "gre": 3}
DEFAULT_DST_PORT = {"geneve": 6081, "vxlan": 4789, "gre": 0}
KEY_BITS = {"geneve": 24, "vxlan": 24, "gre": 32}
FLOW = -1            # remote / local / key taken from the flow
NO_KEY = -2          # GRE without a key (OVS's default for GRE: key 0 is "no key" as well)
DEFAULT_TTL = 64
_KNOWN = {"remote_ip", "local_ip", "key", "in_key", "out_key", "dst_port", "csum", "tos", "ttl", "df_default",
          "packet_type"}


@dataclass(frozen=True)
class TunnelConfig:
    """A tunnel port's options, checked. Addresses are ints (``FLOW``: from the flow; local ``None``: the route's
    source); keys are ints, ``FLOW`` or ``NO_KEY``."""

    kind: str
    remote: int
    local: int | None
    ipv6: bool
    in_key: int
    out_key: int
    dst_port: int
    csum: bool
    tos: int              # -1: inherit
    ttl: int
    df: bool

    @property
    def kind_id(self) -> int:
        """``dpif.tunnel``'s number for the kind (Geneve 1, VXLAN 2, GRE 3)."""
        return KINDS[self.kind]

    def receives_same(self, other: TunnelConfig) -> bool:
        """Both ports would receive the same frames (OVS refuses the second: "same config")."""
        return (self.kind, self.dst_port, self.remote, self.local, self.in_key, self.ipv6) == (
            other.kind, other.dst_port, other.remote, other.local, other.in_key, other.ipv6)

    @property
    def flow_based(self) -> bool:
        return self.remote == FLOW

    def describe(self) -> str:
        """One line, as ``tnl/ports/show -v`` lists a port's options."""
        def ip(v: int | None) -> str:
            if v is None:
                return ""
            if v == FLOW:
                return "flow"
            return str(ipaddress.ip_address(v) if not self.ipv6 else ipaddress.IPv6Address(v))
        parts = [f"remote_ip={ip(self.remote)}"]
        if self.local is not None:
            parts.append(f"local_ip={ip(self.local)}")
        for name, v in (("in_key", self.in_key), ("out_key", self.out_key)):
            if v == FLOW:
                parts.append(f"{name}=flow")
            elif v >= 0:
                parts.append(f"{name}={v}")
        if self.dst_port and self.dst_port != DEFAULT_DST_PORT[self.kind]:
            parts.append(f"dst_port={self.dst_port}")
        if self.csum:
            parts.append("csum=true")
        return ", ".join(parts)


def _address(name: str, kind: str, option: str, text: str) -> tuple[int, bool]:
    if text == "flow":
        return FLOW, False
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        if option == "remote_ip":
            raise PortError(f"{name}: bad {kind} 'remote_ip'\n{name}: {kind} type requires valid 'remote_ip' "
                            "argument") from None
        raise PortError(f"{name}: bad {kind} '{option}'") from None
    if option == "remote_ip" and addr.is_multicast:
        raise PortError(f"{name}: multicast remote_ip={text} not allowed")
    return int(addr), addr.version == 6


def _number(text: str) -> int | None:
    try:
        return int(text, 0)
    except ValueError:
        return None


def _key(kind: str, text: str | None) -> int:
    if text is None:
        return NO_KEY if kind == "gre" else 0
    if text == "flow":
        return FLOW
    v = _number(text)   # ovs-vswitchd reads a bad number as 0
    return (v or 0) & ((1 << KEY_BITS[kind]) - 1)


def parse_config(name: str, kind: str, options: dict[str, str]) -> tuple[TunnelConfig, list[str]]:
    """``Interface.options`` of a tunnel port ``name`` of type ``kind``, checked as ``ovs-vswitchd`` checks them:
    ``PortError`` (OVS's words) for what makes the port unusable; warnings (logged, the port works: an unknown
    option, a TOS out of range) for the rest."""
    if kind not in KINDS:
        raise PortError(f"{name}: unknown tunnel type {kind!r}")
    opts = {k: str(v) for k, v in options.items()}
    warnings = []
    for k in sorted(opts):
        if k not in _KNOWN or (k == "dst_port" and kind == "gre"):
            warnings.append(f"{name}: unknown {kind} argument '{k}'")
    if "remote_ip" not in opts:
        raise PortError(f"{name}: {kind} type requires valid 'remote_ip' argument")
    remote, ipv6 = _address(name, kind, "remote_ip", opts["remote_ip"])
    local: int | None = None
    if "local_ip" in opts:
        local, local6 = _address(name, kind, "local_ip", opts["local_ip"])
        if remote != FLOW and local != FLOW and local6 != ipv6:
            raise PortError(f"{name}: 'remote_ip' and 'local_ip' has to be of the same address family")
        if remote == FLOW:
            ipv6 = local6
    ptype = opts.get("packet_type", "legacy_l2")
    if ptype != "legacy_l2":
        if ptype == "legacy_l3" and kind != "gre":
            raise PortError(f"{name}: legacy_l3 configured on {kind} tunnel that cannot carry L3 traffic")
        raise PortError(f"{name}: packet_type={ptype} is not supported by pyvswitch (legacy_l2 only)")
    key = opts.get("key")
    in_key = _key(kind, opts.get("in_key", key))
    out_key = _key(kind, opts.get("out_key", key))
    dst_port = DEFAULT_DST_PORT[kind]
    if "dst_port" in opts and kind != "gre":
        dst_port = _number(opts["dst_port"]) or dst_port
        if not 0 < dst_port < 65536:
            dst_port = DEFAULT_DST_PORT[kind]
    tos = 0
    if "tos" in opts:
        if opts["tos"] == "inherit":
            tos = -1
        else:
            v = _number(opts["tos"])
            if v is None or not 0 <= v <= 255:
                warnings.append(f"{name}: invalid TOS {opts['tos']}")
            else:
                tos = v
    ttl = DEFAULT_TTL
    if "ttl" in opts:
        if opts["ttl"] == "inherit":
            raise PortError(f"{name}: ttl=inherit is not supported by pyvswitch (a number, 1..255)")
        v = _number(opts["ttl"])
        ttl = v if v is not None and 1 <= v <= 255 else DEFAULT_TTL
    csum = opts.get("csum", "true" if ipv6 else "false") == "true"   # OVS: on by default over IPv6
    df = opts.get("df_default", "true") != "false"
    return TunnelConfig(kind, remote, local, ipv6, in_key, out_key, dst_port, csum, tos, ttl, df), warnings


class TunnelPort(DevicelessPort):
    """A ``geneve`` / ``vxlan`` / ``gre`` port (``options``: its ``Interface.options``). Nothing is received from
    or sent to a device: the datapath encapsulates what is output to it and decapsulates what arrives for it."""

    def __init__(self, name: str, **options: object) -> None:
        super().__init__(name)
        self.config, self.warnings = parse_config(name, self.type, {k: _text(v) for k, v in options.items()})
        #: set by the switch from the route to ``remote_ip``: (egress interface, its carrier up), or None
        self.egress: tuple[str, bool] | None = None

    @property
    def link_up(self) -> bool:
        return True

    def set_egress(self, egress: tuple[str, bool] | None) -> None:
        """The route to the remote changed: ``Interface.status`` follows."""
        if egress != self.egress:
            self.egress = egress
            self.changed()

    def status(self) -> dict[str, str] | None:
        """OVS's tunnel status: the egress interface of the route to ``remote_ip`` and its carrier."""
        if self.egress is None:
            return {}
        dev, up = self.egress
        return {"tunnel_egress_iface": dev, "tunnel_egress_iface_carrier": "up" if up else "down"}


def _text(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


class GenevePort(TunnelPort):
    """A Geneve tunnel port (RFC 8926; UDP 6081)."""

    type = "geneve"


class VxlanPort(TunnelPort):
    """A VXLAN tunnel port (RFC 7348; UDP 4789)."""

    type = "vxlan"


class GrePort(TunnelPort):
    """A GRE tunnel port (RFC 2890: key and checksum)."""

    type = "gre"


TUNNEL_TYPES: dict[str, type[TunnelPort]] = {"geneve": GenevePort, "vxlan": VxlanPort, "gre": GrePort}
