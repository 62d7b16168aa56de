"""The OVN 23.03 fixture (``tests/fixtures/ovn-23.03-flows``) as test data: its per-chassis ports, TLV map, meters
and groups in the forms ``ovs-ofctl`` takes, which known gap each flow needs, the packets the differential trace
sends, and the two switches' ``ofproto/trace`` answers reduced to what is compared (output ports, header fields,
the flows hit before the first ``ct``)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from tests.ofctl_text import fixture

CHASSIS = ("chA", "chB")
#: OpenFlow ports the fixture's flows name, per chassis: 1 is OVN's Geneve tunnel to the other chassis (a real geneve
#: port in OVS; an internal port in pyvswitch, which has no tunnel ports yet: issue 19), the others VM ports
PORTS = {"chA": (1, 2), "chB": (1, 2, 3)}
TUNNEL_PORT = 1
#: the header fields of a trace's "Final flow" that are compared (when both switches print them)
HEADER_FIELDS = ("dl_src", "dl_dst", "dl_type", "nw_src", "nw_dst", "nw_ttl", "nw_proto", "ipv6_src", "ipv6_dst",
                 "tp_src", "tp_dst", "icmp_type", "icmp_code", "arp_op", "arp_spa", "arp_tpa", "arp_sha",
                 "arp_tha", "nd_target", "nd_sll", "nd_tll", "dl_vlan")

# ------------------------------------------------------------------ what each flow needs
_WRITE = re.compile(r"(?:set_field:[^,()]*?->|move:[^,()]*?->|load:[^,()]*?->|pop:)([A-Za-z_0-9]+)")
_REWRITES = frozenset(
    "ipv6_src ipv6_dst nxm_nx_ipv6_src nxm_nx_ipv6_dst arp_op arp_spa arp_tpa arp_sha arp_tha nxm_of_arp_op "
    "nxm_of_arp_spa nxm_of_arp_tpa nxm_nx_arp_sha nxm_nx_arp_tha icmp_type icmp_code icmpv4_type icmpv4_code "
    "icmpv6_type icmpv6_code nxm_of_icmp_type nxm_of_icmp_code nxm_nx_icmpv6_type nxm_nx_icmpv6_code nd_target "
    "nd_sll nd_tll nxm_nx_nd_target nxm_nx_nd_sll nxm_nx_nd_tll".split())
_TUNNEL_WRITES = frozenset({"tun_id", "nxm_nx_tun_id", "tun_metadata0", "nxm_nx_tun_metadata0"})


def flow_needs(line: str) -> frozenset[str]:
    """The features (keys of a test's ``KNOWN_GAPS``) the fixture flow ``line`` uses that a switch may still lack:
    ``ct``, ``learn``, ``conjunction``, ``group``, ``meter``, ``controller``, ``rewrite``, ``tunnel``."""
    match, _, actions = line.partition("actions=")
    needs = set()
    if re.search(r"\bct\(|ct_clear|\bnat\b", actions):
        needs.add("ct")
    if "learn(" in actions:
        needs.add("learn")
    if "conjunction(" in actions or "conj_id=" in match:
        needs.add("conjunction")
    if re.search(r"\bgroup:", actions):
        needs.add("group")
    if "meter_id=" in actions or re.search(r"\bmeter:", actions):
        needs.add("meter")
    if "controller(" in actions:
        needs.add("controller")
    written = {w.lower() for w in _WRITE.findall(actions)}
    if written & _REWRITES:
        needs.add("rewrite")
    if written & _TUNNEL_WRITES or "tun_metadata" in line.lower():
        needs.add("tunnel")
    return frozenset(needs)


def flows(chassis: str) -> list[str]:
    """The fixture's flow lines of ``chassis``, as ``ovs-ofctl add-flow(s)`` takes them."""
    return [ln.strip() for ln in fixture(f"flows-{chassis}.txt").splitlines() if "actions=" in ln]


def fixture_text(chassis: str, kind: str) -> str:
    """The fixture file ``<kind>-<chassis>.txt`` (``flows``, ``groups``, ``meters``, ``tlv-map``)."""
    return fixture(f"{kind}-{chassis}.txt")


def groups(chassis: str) -> list[str]:
    """The fixture's groups of ``chassis``, one ``add-groups`` line each."""
    return [ln.strip() for ln in fixture(f"groups-{chassis}.txt").splitlines() if ln.strip().startswith("group_id=")]


def meters(chassis: str) -> list[str]:
    """The fixture's meters of ``chassis``, one ``add-meter`` argument each (dump-meters prints bands on lines of
    their own)."""
    out: list[str] = []
    for ln in fixture(f"meters-{chassis}.txt").splitlines():
        if ln.startswith("meter="):
            out.append(ln.strip())
        elif out and ln.strip() and "reply" not in ln:
            out[-1] += ln.strip() if out[-1].endswith("=") else " " + ln.strip()
    return out


def tlv_map(chassis: str) -> str:
    """The fixture's TLV map of ``chassis`` as ``add-tlv-map`` takes it."""
    rows = tlv_rows(fixture(f"tlv-map-{chassis}.txt"))
    return ",".join(f"{{class={c},type={t},len={n}}}->{f}" for c, t, n, f in rows)


def tlv_rows(text: str) -> list[tuple[str, ...]]:
    """The mapping rows (class, type, length, field) of ``dump-tlv-map`` text."""
    return [tuple(ln.split()) for ln in text.splitlines() if re.match(r"\s*0x[0-9a-f]+\s+0x[0-9a-f]+\s+\d+\s+\S+$", ln)]


def group_set(text: str) -> set[str]:
    """``dump-groups`` text as a set of group lines (header and xid dropped)."""
    return {ln.strip() for ln in text.splitlines() if ln.strip().startswith("group_id=")}


def meter_set(text: str) -> set[str]:
    """``dump-meters`` text as a set of meters, each with its bands on one line."""
    out: list[str] = []
    for ln in text.splitlines():
        if "reply" in ln or not ln.strip():
            continue
        if ln.startswith("meter=") or not out:
            out.append(ln.strip())
        else:
            out[-1] += " " + ln.strip()
    return set(out)


# ------------------------------------------------------------------ the packets of the differential trace
@dataclass(frozen=True)
class Endpoint:
    """A logical port as the fixture's port-security flows describe it."""

    ofport: int
    metadata: int
    reg14: int
    mac: str
    ipv4: str


def endpoints(chassis: str) -> list[Endpoint]:
    """The VM ports of ``chassis``: table 0 gives their metadata / reg14, the L2 lookup (table 33) their MAC, the ARP
    responder (table 27) their IPv4 address."""
    lines = flows(chassis)
    out = []
    for ln in lines:
        m = re.search(r"table=0, priority=100,in_port=(\d+) actions=.*set_field:(0x[0-9a-f]+)->metadata,"
                      r"set_field:(0x[0-9a-f]+)->reg14", ln)
        if not m:
            continue
        port, md, r14 = int(m[1]), int(m[2], 16), int(m[3], 16)
        mac = next(re.search(r"dl_dst=([0-9a-f:]{17}) ", x)[1] for x in lines
                   if re.search(rf"table=33, priority=50,metadata={md:#x},dl_dst=[0-9a-f:]{{17}} "
                                rf"actions=set_field:{r14:#x}->reg15,", x))
        ip = next(re.search(r"arp_tpa=([0-9.]+),", x)[1] for x in lines
                  if f"table=27, priority=50,arp,metadata={md:#x}," in x and f"set_field:{mac}->eth_src" in x)
        out.append(Endpoint(port, md, r14, mac, ip))
    return out


def remote_keys(chassis: str) -> list[tuple[int, int]]:
    """(datapath key, output port key) pairs table 40 delivers from the tunnel: what a Geneve packet from the other
    chassis carries in tun_id and tun_metadata0."""
    keys = []
    for ln in flows(chassis):
        m = re.search(r"table=40, priority=100,reg15=(0x[0-9a-f]+),metadata=(0x[0-9a-f]+) ", ln)
        if m:
            keys.append((int(m[2], 16), int(m[1], 16)))
    return keys


def _v6_link_local(mac: str) -> str:
    b = bytes(int(x, 16) for x in mac.split(":"))
    eui = bytes([b[0] ^ 2]) + b[1:3] + b"\xff\xfe" + b[3:]
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui))


def known_addresses(chassis: str) -> tuple[list[str], list[str], list[str]]:
    """Every MAC, IPv4 and IPv6 address the flows of ``chassis`` match on (single addresses, not prefixes)."""
    text = "\n".join(flows(chassis))
    macs = sorted({m for m in re.findall(r"(?:dl_src|dl_dst|arp_sha|arp_tha|nd_sll|nd_tll)=([0-9a-f:]{17})(?![/0-9])",
                                         text) if m != "00:00:00:00:00:00" and not int(m[:2], 16) & 1})
    ipv4 = sorted({a for a in re.findall(r"(?:nw_src|nw_dst|arp_spa|arp_tpa)=(\d+\.\d+\.\d+\.\d+)(?![/\d])", text)
                   if a.startswith("10.")}, key=lambda a: ipaddress.IPv4Address(a))
    ipv6 = sorted({a for a in re.findall(r"(?:ipv6_src|ipv6_dst|nd_target)=([0-9a-f:]+)(?![/0-9a-f:])", text)
                   if a.startswith("fe80") and a != "fe80::"})
    return macs, ipv4, ipv6


UNKNOWN_MAC, UNKNOWN_IPV4, UNKNOWN_IPV6 = "00:00:00:99:99:99", "10.99.0.9", "fe80::99"
BROADCAST = "ff:ff:ff:ff:ff:ff"


def _solicited_node(ip6: str) -> tuple[str, str]:
    low = int(ipaddress.IPv6Address(ip6)) & 0xFFFFFF
    group = ipaddress.IPv6Address(int(ipaddress.IPv6Address("ff02::1:ff00:0")) | low)
    return str(group), "33:33:ff:" + ":".join(f"{low >> s & 0xFF:02x}" for s in (16, 8, 0))


def packets(chassis: str) -> list[tuple[str, str]]:
    """(category, ofproto/trace flow) for every packet the differential trace sends on ``chassis``: ARP, ND (NS/NA),
    ICMP / ICMPv6 echo, TCP, UDP over IPv4 and IPv6, from every in_port (the tunnel's with each key table 40
    delivers), to the addresses the flows know and to unknown ones."""
    macs, ipv4s, ipv6s = known_addresses(chassis)
    eps = endpoints(chassis)
    sources: list[tuple[str, str, str, str]] = []        # (in_port prefix, src MAC, src IPv4, src IPv6)
    for ep in eps:
        sources.append((f"in_port={ep.ofport}", ep.mac, ep.ipv4, _v6_link_local(ep.mac)))
        sources.append((f"in_port={ep.ofport}", UNKNOWN_MAC, UNKNOWN_IPV4, UNKNOWN_IPV6))   # port security's miss
    keys = remote_keys(chassis)
    unicast = {md: (md, r15) for md, r15 in reversed(keys) if r15 < 0x8000}
    chosen = [*unicast.values(), *[k for k in keys if k[1] >= 0x8000][:1]]
    for md, r15 in chosen:
        sources.append((f"in_port={TUNNEL_PORT},tun_id={md:#x},tun_metadata0={(1 << 16) | r15:#x}",
                        "00:00:00:77:00:03" if md == 2 else "00:00:00:78:00:03",
                        "10.77.0.3" if md == 2 else "10.78.0.3", UNKNOWN_IPV6))
    dst_macs = [*macs, UNKNOWN_MAC]
    dst_v4 = [*ipv4s, UNKNOWN_IPV4]
    dst_v6 = [*ipv6s, UNKNOWN_IPV6]
    out: list[tuple[str, str]] = []
    for port, smac, sip, sip6 in sources:
        eth = f"{port},dl_src={smac}"
        for tpa in dst_v4:
            out.append(("arp", f"{eth},dl_dst={BROADCAST},arp,arp_op=1,arp_spa={sip},arp_tpa={tpa},arp_sha={smac}"))
        out.append(("arp", f"{eth},dl_dst={macs[0]},arp,arp_op=2,arp_spa={sip},arp_tpa={dst_v4[0]},arp_sha={smac},"
                           f"arp_tha={macs[0]}"))
        for tgt in dst_v6:
            group, gmac = _solicited_node(tgt)
            out.append(("nd", f"{eth},dl_dst={gmac},icmp6,ipv6_src={sip6},ipv6_dst={group},nw_ttl=255,icmpv6_type=135,"
                              f"icmpv6_code=0,nd_target={tgt},nd_sll={smac}"))
        out.append(("nd", f"{eth},dl_dst={macs[0]},icmp6,ipv6_src={sip6},ipv6_dst={dst_v6[0]},nw_ttl=255,"
                          f"icmpv6_type=136,icmpv6_code=0,nd_target={sip6},nd_tll={smac}"))
        for i, dmac in enumerate(dst_macs):
            for dip in (dst_v4[(2 * i) % len(dst_v4)], dst_v4[(2 * i + 1) % len(dst_v4)]):
                out.append(("icmp", f"{eth},dl_dst={dmac},icmp,nw_src={sip},nw_dst={dip},nw_ttl=64,icmp_type=8,"
                                    "icmp_code=0"))
            dip, dip6 = dst_v4[i % len(dst_v4)], dst_v6[i % len(dst_v6)]
            out.append(("tcp", f"{eth},dl_dst={dmac},tcp,nw_src={sip},nw_dst={dip},nw_ttl=64,tp_src=40000,tp_dst=22"))
            out.append(("udp", f"{eth},dl_dst={dmac},udp,nw_src={sip},nw_dst={dip},nw_ttl=64,udp_src=68,udp_dst=67"))
            out.append(("icmp6", f"{eth},dl_dst={dmac},icmp6,ipv6_src={sip6},ipv6_dst={dip6},nw_ttl=64,"
                                 "icmpv6_type=128,icmpv6_code=0"))
            out.append(("tcp6", f"{eth},dl_dst={dmac},tcp6,ipv6_src={sip6},ipv6_dst={dip6},nw_ttl=64,"
                                "tp_src=40000,tp_dst=80"))
            out.append(("udp6", f"{eth},dl_dst={dmac},udp6,ipv6_src={sip6},ipv6_dst={dip6},nw_ttl=64,"
                                "udp_src=547,udp_dst=546"))
    return out


# ------------------------------------------------------------------ trace answers
@dataclass
class Trace:
    """What one ``ofproto/trace`` answer says, up to the first ``ct`` action: the flows hit (table, priority,
    cookie, match tokens), the output ports (OpenFlow numbers, ``controller``), the final header fields, and
    whether a ``ct`` cut it short (``error`` holds a refusal)."""

    hits: list[tuple[int, int, int, frozenset[str]]] = field(default_factory=list)
    outputs: tuple[str, ...] = ()
    final: dict[str, str] = field(default_factory=dict)
    ct: bool = False
    error: str = ""


_HIT = re.compile(r"^\s*(\d+)\. (.*?)(?:, )?priority (\d+)(?:, cookie (0x[0-9a-f]+))?$")


def _fields(text: str) -> dict[str, str]:
    out = {}
    for tok in text.split(","):
        k, eq, v = tok.partition("=")
        if eq:
            out[k.strip()] = v.strip()
    return out


def parse_trace(text: str, dp_to_of: dict[int, int] | None = None) -> Trace:
    """An ``ofproto/trace`` answer (OVS's or pyvswitch's) reduced to a ``Trace``; ``dp_to_of`` maps OVS's datapath
    port numbers to OpenFlow ports (pyvswitch's trace prints OpenFlow numbers)."""
    tr = Trace()
    first = text.split("\n====", 1)[0]           # OVS: what follows is the walk after a recirculation
    for ln in first.splitlines():
        m = _HIT.match(ln)
        if m and not tr.ct:
            tokens = frozenset(t for t in m[2].split(",") if t)
            tr.hits.append((int(m[1]), int(m[3]), int(m[4] or "0", 16), tokens))
        elif ln.strip().startswith("ct(") and not tr.ct:
            tr.ct = True
        elif ln.startswith("Final flow:") and not tr.final:
            tr.final = _fields(ln.split(":", 1)[1])
        elif ln.startswith("Datapath actions:"):
            tr.outputs = _outputs(ln.split(":", 1)[1].strip(), dp_to_of)
    return tr


def _outputs(actions: str, dp_to_of: dict[int, int] | None) -> tuple[str, ...]:
    """The ports (and ``controller``) of datapath actions, up to the first ``ct(``."""
    actions = actions.split("ct(", 1)[0]
    out = []
    depth, tok = 0, ""
    for ch in actions + ",":
        if ch == "," and depth == 0:
            tok = tok.strip()
            m = re.match(r"tnl_push\(tnl_port\((\d+)\)", tok)
            if m:
                out.append(str(dp_to_of.get(int(m[1]), m[1]) if dp_to_of else m[1]))
            elif tok.isdigit() and (dp_to_of is None or int(tok) in dp_to_of):   # others: the underlay bridge's
                out.append(str(dp_to_of[int(tok)]) if dp_to_of is not None else tok)
            elif tok.startswith("userspace(") and "controller" in tok or tok == "controller":
                out.append("controller")
            elif tok.startswith("clone("):
                out += _outputs(tok[6:-1], dp_to_of)
            tok = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        tok += ch
    return tuple(sorted(out))


def dp_ports(dpif_show: str, bridge: str = "br-int") -> dict[int, int]:
    """OVS's datapath port -> OpenFlow port of ``bridge``, from ``ovs-appctl dpif/show`` (``p2 2/3: (tap)``: OpenFlow
    2 is datapath port 3; a tunnel's ``1/6081`` names its datapath port by the UDP port's vport)."""
    out, inside = {}, False
    for ln in dpif_show.splitlines():
        if re.match(r"\s+\S+:$", ln):                    # a bridge's heading
            inside = ln.strip() == f"{bridge}:"
            continue
        m = re.match(r"\s+\S+ (\d+)/(\d+):", ln)
        if inside and m and m[1] != "65534":
            out[int(m[2])] = int(m[1])
    return out
