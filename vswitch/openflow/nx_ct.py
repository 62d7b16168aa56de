"""Decoded ``nx_ct`` / ``nx_nat`` / ``nx_ct_clear`` / ``nx_learn`` / ``nx_fin_timeout`` dicts
(``vswitch.openflow.nicira``) to the action model (``ofproto.actions``: ``Ct``, ``Nat``, ``CtClear``, ``Learn``,
``FinTimeout``) and back.

``FROM_NX[type](d, inner)`` and ``TO_NX[cls](a, inner)`` are what ``flows.action_from_wire`` /
``action_to_wire`` register: ``inner`` converts one nested action (``ct``'s exec list) the same way.
A dict that cannot be an action (flags OVS does not define, a nat range without src or dst) raises
``OfpError`` with OVS's code (``OFPBAC_BAD_ARGUMENT``); the model's own rules are ``check_action``'s.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from ofproto.actions import Action, Ct, CtClear, FinTimeout, Learn, LearnSpec, Nat
from vswitch.openflow.codec import OFPET_BAD_ACTION, OfpError
from vswitch.openflow.nicira import OFPBAC_BAD_ARGUMENT

OFPBAC_BAD_SET_LEN = 14
NX_CT_F_COMMIT, NX_CT_F_FORCE = 1, 2
NX_CT_RECIRC_NONE = 0xFF
NX_NAT_F_SRC, NX_NAT_F_DST, NX_NAT_F_PERSISTENT, NX_NAT_F_PROTO_HASH, NX_NAT_F_PROTO_RANDOM = 1, 2, 4, 8, 16
NX_LEARN_F_SEND_FLOW_REM, NX_LEARN_F_DELETE_LEARNED = 1, 2

Inner = Callable[[Any], Any]


def _bad(why: str) -> OfpError:
    return OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_ARGUMENT, why)


def ct_from_nx(d: dict[str, Any], inner: Inner) -> Ct:
    """An ``nx_ct`` dict as ``Ct`` (``inner``: one nested action dict -> action); flags OVS does not define
    are ignored, as OVS ignores them."""
    flags = d["flags"]
    zone: int | tuple[str, int, int]
    if d.get("zone_src") is not None:
        raw = d["zone"]
        zone = (d["zone_src"], raw >> 6, (raw & 0x3F) + 1)
        if zone[2] != 16:     # OVS: a zone is 16 bits, another width is OFPBAC_BAD_SET_LEN
            raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_SET_LEN, f"ct zone from {zone[2]} bits")
    else:
        zone = d["zone"]
    table = None if d["recirc_table"] == NX_CT_RECIRC_NONE else d["recirc_table"]
    return Ct(bool(flags & NX_CT_F_COMMIT), bool(flags & NX_CT_F_FORCE), zone, table, d["alg"],
              tuple(inner(x) for x in d.get("actions", ())))


def ct_to_nx(a: Ct, inner: Inner) -> dict[str, Any]:
    """``Ct`` as an ``nx_ct`` dict (``inner``: one nested action -> dict)."""
    if isinstance(a.zone, tuple):
        name, ofs, nbits = a.zone
        zone_src, zone = name, ofs << 6 | (nbits - 1)
    else:
        zone_src, zone = None, a.zone
    return {"type": "nx_ct", "flags": (NX_CT_F_COMMIT if a.commit else 0) | (NX_CT_F_FORCE if a.force else 0),
            "zone_src": zone_src, "zone": zone,
            "recirc_table": NX_CT_RECIRC_NONE if a.table is None else a.table, "alg": a.alg,
            "actions": [inner(x) for x in a.actions]}


def _addr(v: int | None, v6: bool) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if v is None:
        return None
    return ipaddress.IPv6Address(v) if v6 else ipaddress.IPv4Address(v)


def nat_from_nx(d: dict[str, Any], inner: Inner | None = None) -> Nat:
    """An ``nx_nat`` dict as ``Nat``."""
    flags = d["flags"]
    if flags & ~0x1F or flags & 3 == 3:
        raise _bad(f"nat flags {flags:#x}")
    kind = "src" if flags & NX_NAT_F_SRC else "dst" if flags & NX_NAT_F_DST else ""
    v4 = d.get("ipv4_min") is not None or d.get("ipv4_max") is not None
    v6 = d.get("ipv6_min") is not None or d.get("ipv6_max") is not None
    if v4 and v6:
        raise _bad("nat with both IPv4 and IPv6 ranges")
    lo, hi = (d.get("ipv6_min"), d.get("ipv6_max")) if v6 else (d.get("ipv4_min"), d.get("ipv4_max"))
    if not kind and (v4 or v6 or d.get("proto_min") is not None):
        raise _bad("a nat range needs src or dst")
    return Nat(kind, _addr(lo, v6), _addr(hi, v6), d.get("proto_min"), d.get("proto_max"),
               bool(flags & NX_NAT_F_PERSISTENT), bool(flags & NX_NAT_F_PROTO_HASH),
               bool(flags & NX_NAT_F_PROTO_RANDOM))


def nat_to_nx(a: Nat, inner: Inner | None = None) -> dict[str, Any]:
    """``Nat`` as an ``nx_nat`` dict."""
    flags = ({"src": NX_NAT_F_SRC, "dst": NX_NAT_F_DST}.get(a.kind, 0)
             | (NX_NAT_F_PERSISTENT if a.persistent else 0) | (NX_NAT_F_PROTO_HASH if a.hash else 0)
             | (NX_NAT_F_PROTO_RANDOM if a.random else 0))
    d: dict[str, Any] = {"type": "nx_nat", "flags": flags}
    fam = "ipv6" if a.addr_min is not None and a.addr_min.version == 6 else "ipv4"
    if a.addr_min is not None:
        d[f"{fam}_min"] = int(a.addr_min)
    if a.addr_max is not None:
        d[f"{fam}_max"] = int(a.addr_max)
    if a.port_min is not None:
        d["proto_min"] = a.port_min
    if a.port_max is not None:
        d["proto_max"] = a.port_max
    return d


def ct_clear_from_nx(d: dict[str, Any], inner: Inner | None = None) -> CtClear:
    """``nx_ct_clear`` as ``CtClear``."""
    return CtClear()


def ct_clear_to_nx(a: CtClear, inner: Inner | None = None) -> dict[str, Any]:
    """``CtClear`` as ``nx_ct_clear``."""
    return {"type": "nx_ct_clear"}


def learn_from_nx(d: dict[str, Any], inner: Inner | None = None) -> Learn:
    """An ``nx_learn`` dict as ``Learn``."""
    flags = d["flags"]
    if flags & ~(NX_LEARN_F_SEND_FLOW_REM | NX_LEARN_F_DELETE_LEARNED):
        raise _bad(f"learn flags {flags:#x}")
    specs = tuple(LearnSpec(sp["dst_type"], sp["n_bits"], sp.get("src"), sp.get("src_ofs", 0), sp.get("value", 0),
                            sp.get("dst"), sp.get("dst_ofs", 0)) for sp in d["specs"])
    return Learn(d["table"], specs, d["idle_timeout"], d["hard_timeout"], d["priority"], d["cookie"],
                 bool(flags & NX_LEARN_F_SEND_FLOW_REM), bool(flags & NX_LEARN_F_DELETE_LEARNED),
                 d["fin_idle_timeout"], d["fin_hard_timeout"])


def learn_to_nx(a: Learn, inner: Inner | None = None) -> dict[str, Any]:
    """``Learn`` as an ``nx_learn`` dict."""
    specs = []
    for sp in a.specs:
        s: dict[str, Any] = {"dst_type": sp.dst_type, "n_bits": sp.n_bits}
        if sp.src is None:
            s["value"] = sp.value
        else:
            s.update(src=sp.src, src_ofs=sp.src_ofs)
        if sp.dst_type != "output":
            s.update(dst=sp.dst, dst_ofs=sp.dst_ofs)
        specs.append(s)
    return {"type": "nx_learn", "idle_timeout": a.idle_timeout, "hard_timeout": a.hard_timeout,
            "priority": a.priority, "cookie": a.cookie,
            "flags": (NX_LEARN_F_SEND_FLOW_REM if a.send_flow_rem else 0)
            | (NX_LEARN_F_DELETE_LEARNED if a.delete_learned else 0),
            "table": a.table, "fin_idle_timeout": a.fin_idle_timeout, "fin_hard_timeout": a.fin_hard_timeout,
            "specs": specs}


#: ``nx_*`` type -> dict to action (``inner`` converts nested actions)
FROM_NX: dict[str, Callable[[dict[str, Any], Inner], Action]] = {
    "nx_ct": ct_from_nx, "nx_nat": nat_from_nx, "nx_ct_clear": ct_clear_from_nx, "nx_learn": learn_from_nx,
    "nx_fin_timeout": lambda d, inner=None: FinTimeout(d["fin_idle_timeout"], d["fin_hard_timeout"]),
}
#: action class -> action to dict
TO_NX: dict[type, Callable[[Any, Inner], dict[str, Any]]] = {
    Ct: ct_to_nx, Nat: nat_to_nx, CtClear: ct_clear_to_nx, Learn: learn_to_nx,
    FinTimeout: lambda a, inner=None: {"type": "nx_fin_timeout", "fin_idle_timeout": a.idle_timeout,
                                       "fin_hard_timeout": a.hard_timeout},
}
