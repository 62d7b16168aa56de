"""``ct``, ``nat``, ``ct_clear`` and ``learn`` in ovs-ofctl's text, exactly as OVS 3.1 prints them
(``ovs-ofctl dump-flows``): subfields by their NXM / OXM names (``NXM_NX_REG13[0..15]``,
``OXM_OF_METADATA[]``), values as OVS's ``mf_format`` writes them (C's ``%#x``: 0 is ``0``; addresses
dotted; ports and protocol numbers decimal). Tests: ``tests/test_nicira_ct.py`` (every ct / learn of the
OVN fixture, and the names of every field ``ovs-ofctl`` prints).
"""

from __future__ import annotations

import ipaddress

from ofproto import fields as F
from ofproto.actions import Action, Ct, CtClear, FinTimeout, Learn, LearnSpec, Move, Nat, SetField, field_bits

#: NXM names that are not ``NXM_OF_`` / ``NXM_NX_`` + the upper-cased registry name
_NXM_NAMES = {"nw_tos": "IP_TOS", "nw_proto": "IP_PROTO", "nw_ecn": "IP_ECN", "nw_ttl": "IP_TTL",
              "tun_src": "TUN_IPV4_SRC", "tun_dst": "TUN_IPV4_DST", "icmp_type": "ICMP_TYPE",
              "icmp_code": "ICMP_CODE"}
#: fields OVS writes in decimal (``MFS_DECIMAL``); the others are hex, addresses or ports
_DECIMAL = frozenset({"nw_proto", "nw_ttl", "ip_dscp", "nw_ecn", "vlan_pcp", "tcp_src", "tcp_dst", "udp_src",
                      "udp_dst", "sctp_src", "sctp_dst", "icmp_type", "icmp_code", "icmpv6_type", "icmpv6_code",
                      "ct_nw_proto", "ct_tp_src", "ct_tp_dst", "ct_zone", "mpls_label", "mpls_tc", "mpls_bos",
                      "arp_op", "in_port", "in_port_oxm", "tun_ttl", "tun_tos"})
_IPV4 = frozenset({"ip_src", "ip_dst", "arp_spa", "arp_tpa", "tun_src", "tun_dst", "ct_nw_src", "ct_nw_dst"})
_ALGS = {21: "ftp", 69: "tftp"}


def c_hex(v: int) -> str:
    """C's ``%#x``: ``0`` for zero, else ``0x...``."""
    return f"{v:#x}" if v else "0"


def ovs_field_name(name: str) -> str:
    """The name OVS prints for a field in a subfield: its NXM name, else its OXM name."""
    f = F.by_name(name) or F.by_oxm_name(name)
    if f is None:
        return name
    if f.nxm is not None:
        prefix = "NXM_OF_" if f.nxm[0] == F.OFPXMC_NXM_0 else "NXM_NX_"
        return prefix + _NXM_NAMES.get(f.name, f.name.upper())
    if f.oxm is not None:
        if f.oxm[0] == F.OFPXMC_PACKET_REGS:
            return f"OXM_OF_PKT_REG{f.oxm[1]}"
        return "OXM_OF_" + (f.oxm_name or f.name).upper()
    return f.name


def subfield(name: str, ofs: int, nbits: int) -> str:
    """``NXM_NX_REG13[0..15]``, ``NXM_NX_REG10[7]``, ``OXM_OF_METADATA[]`` (OVS's ``mf_format_subfield``)."""
    base = ovs_field_name(name)
    if ofs == 0 and nbits == field_bits(name):
        return f"{base}[]"
    return f"{base}[{ofs}]" if nbits == 1 else f"{base}[{ofs}..{ofs + nbits - 1}]"


def field_value(name: str, value: int) -> str:
    """A whole-field value as OVS's ``mf_format`` writes it."""
    f = F.by_name(name) or F.by_oxm_name(name)
    fname = f.name if f is not None else name
    if fname in _DECIMAL:
        return str(value)
    if fname in _IPV4:
        return str(ipaddress.IPv4Address(value))
    if f is not None and f.bits == 128 and ("ipv6" in fname or fname == "nd_target"):
        return str(ipaddress.IPv6Address(value))
    if f is not None and f.bits == 48 and not fname.startswith(("reg", "xreg", "xxreg")):
        return ":".join(f"{value >> s & 0xFF:02x}" for s in range(40, -8, -8))
    return c_hex(value)


def _hex_bytes(value: int, nbits: int) -> str:
    """OVS's ``ds_put_hex`` of a value ``nbits`` wide: leading zero bytes dropped, ``0`` for none."""
    return c_hex(value)


def format_nat(n: Nat) -> str:
    """``nat``, ``nat(src)``, ``nat(dst=10.77.0.2:22)``, ``nat(src=10.0.0.1-10.0.0.9:1-9,random)``."""
    if not n.kind:
        return "nat"
    text = n.kind
    if n.addr_min is not None:
        bracket = n.addr_min.version == 6 and n.port_min is not None
        def addr(a: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
            return f"[{a}]" if bracket else str(a)
        text += "=" + addr(n.addr_min)
        if n.addr_max is not None and n.addr_max != n.addr_min:
            text += "-" + addr(n.addr_max)
        if n.port_min:
            text += f":{n.port_min}"
            if n.port_max and n.port_max != n.port_min:
                text += f"-{n.port_max}"
    flags = [name for name, on in (("persistent", n.persistent), ("hash", n.hash), ("random", n.random)) if on]
    return f"nat({','.join([text, *flags])})"


def _exec_action(a: Action) -> str:
    if isinstance(a, Move):
        return f"move:{subfield(a.src, a.src_ofs, a.nbits)}->{subfield(a.dst, a.dst_ofs, a.nbits)}"
    if isinstance(a, SetField):
        full = (1 << field_bits(a.field)) - 1
        mask = "" if a.mask is None or a.mask == full else f"/{c_hex(a.mask)}"
        return f"set_field:{c_hex(a.value)}{mask}->{a.field}"
    if isinstance(a, Nat):
        return format_nat(a)
    return repr(a)


def format_ct(ct: Ct) -> str:
    """``ct(commit,force,table=N,zone=...,nat(...),exec(...),alg=...)`` in OVS's order."""
    parts = []
    if ct.commit:
        parts.append("commit")
    if ct.force:
        parts.append("force")
    if ct.table is not None:
        parts.append(f"table={ct.table}")
    if isinstance(ct.zone, tuple):
        parts.append("zone=" + subfield(*ct.zone))
    elif ct.zone:
        parts.append(f"zone={ct.zone}")
    acts = list(ct.actions)
    if acts and isinstance(acts[0], Nat):
        parts.append(format_nat(acts.pop(0)))
    if acts:
        parts.append(f"exec({','.join(_exec_action(a) for a in acts)})")
    if ct.alg:
        parts.append(f"alg={_ALGS.get(ct.alg, ct.alg)}")
    return f"ct({','.join(parts)})"


def _spec(sp: LearnSpec) -> str:
    if sp.dst_type == "output":
        return "output:" + subfield(sp.src or "", sp.src_ofs, sp.n_bits)
    assert sp.dst is not None
    dst = subfield(sp.dst, sp.dst_ofs, sp.n_bits)
    if sp.dst_type == "load":
        src = _hex_bytes(sp.value, sp.n_bits) if sp.src is None else subfield(sp.src, sp.src_ofs, sp.n_bits)
        return f"load:{src}->{dst}"
    if sp.src is None:
        if sp.dst_ofs == 0 and sp.n_bits == field_bits(sp.dst):
            f = F.by_name(sp.dst) or F.by_oxm_name(sp.dst)
            return f"{f.name if f is not None else sp.dst}={field_value(sp.dst, sp.value)}"
        return f"{dst}={_hex_bytes(sp.value, sp.n_bits)}"
    if sp.src == sp.dst and sp.src_ofs == sp.dst_ofs:
        return dst
    return f"{dst}={subfield(sp.src, sp.src_ofs, sp.n_bits)}"


def format_learn(lr: Learn) -> str:
    """``learn(table=N,idle_timeout=..,...,specs)`` in OVS's order."""
    parts = [f"table={lr.table}"]
    for name, v, default in (("idle_timeout", lr.idle_timeout, 0), ("hard_timeout", lr.hard_timeout, 0),
                             ("fin_idle_timeout", lr.fin_idle_timeout, 0),
                             ("fin_hard_timeout", lr.fin_hard_timeout, 0), ("priority", lr.priority, 0x8000)):
        if v != default:
            parts.append(f"{name}={v}")
    if lr.send_flow_rem:
        parts.append("send_flow_rem")
    if lr.delete_learned:
        parts.append("delete_learned")
    if lr.cookie:
        parts.append(f"cookie={lr.cookie:#x}")
    parts += [_spec(sp) for sp in lr.specs]
    return f"learn({','.join(parts)})"


def format_ct_family(a: Action) -> str:
    """``ct``, ``nat``, ``ct_clear``, ``learn`` or ``fin_timeout`` as OVS prints it."""
    if isinstance(a, Ct):
        return format_ct(a)
    if isinstance(a, Nat):
        return format_nat(a)
    if isinstance(a, CtClear):
        return "ct_clear"
    if isinstance(a, FinTimeout):
        args = [f"{k}={v}" for k, v in (("idle_timeout", a.idle_timeout), ("hard_timeout", a.hard_timeout)) if v]
        return f"fin_timeout({','.join(args)})"
    assert isinstance(a, Learn)
    return format_learn(a)
