"""OpenFlow 1.0 and 1.3 flow descriptions onto one form: OXM-named masked matches and 1.3 instructions.

``match_from(version, match)`` gives ``{oxm_name: (value, mask)}`` (an OpenFlow 1.0 match translated
field by field, with 1.0's VLAN and transport-port conventions), after checking OpenFlow 1.3's
prerequisites (``ipv4_src`` needs ``eth_type=0x0800``, ``tcp_dst`` needs ``ip_proto=6``, ...).
``instructions_from(version, msg)`` gives 1.3 instructions (1.0 actions become one apply-actions).
``match_to``/``instructions_to`` go back for flow statistics. Anything the switch cannot do raises
``OfpError`` with the code OpenFlow prescribes, so the controller learns why.
"""

from __future__ import annotations

from typing import Any

from ofproto import fields as _fields
from ofproto import tlvmap
from ofproto.rules import ALL_MATCH_FIELDS
from vswitch.openflow.codec import (
    OFP10,
    OFPET_BAD_ACTION,
    OFPET_BAD_INSTRUCTION,
    OFPET_BAD_MATCH,
    OfpError,
)

OFPBMC_BAD_FIELD, OFPBMC_BAD_VALUE, OFPBMC_BAD_PREREQ = 6, 7, 9
OFPBAC_BAD_TYPE, OFPBAC_BAD_ARGUMENT, OFPBAC_BAD_SET_TYPE = 0, 5, 13
OFPBIC_UNSUP_INST = 1
OFPVID_PRESENT = 0x1000
OFP10_VLAN_NONE = 0xFFFF

#: the fields a match may name (OXM names, else registry names: registers, metadata, NXM-only fields) and
#: their widths (the rules' fields, from the registry)
MATCHABLE = {name: bits for name, (bits, _cols) in ALL_MATCH_FIELDS.items()}


def _tlv_map_changed() -> None:
    MATCHABLE.clear()
    MATCHABLE.update({name: bits for name, (bits, _cols) in ALL_MATCH_FIELDS.items()})


tlvmap.listen(_tlv_map_changed)


def _prereqs(name: str) -> tuple[tuple[str, tuple[int, ...], int | None], ...]:
    """The registry's prerequisites of field ``name``, with the fields they name as a match names them."""
    f = _fields.by_oxm_name(name) or _fields.by_name(name)
    out = []
    for field, values, mask in f.prereqs if f is not None else ():
        req = _fields.by_name(field)
        oxm = req.oxm_name if req is not None and req.oxm_name else {"vlan_tci": "vlan_vid"}.get(field, field)
        out.append((oxm, values, mask))
    return tuple(out)


#: a field whose bits another name matches too (NXM's vlan_tci holds OXM's vlan_vid)
_SAME_BITS = {"vlan_vid": "vlan_tci"}
#: prerequisites: field -> ((required field, allowed values, mask or None for the whole field), ...)
PREREQ = {name: p for name in MATCHABLE if (p := _prereqs(name))}
#: OpenFlow actions the datapath executes (1.3 names; Nicira's ``nx_*`` too); which fields set_field may
#: write, ``ofproto.actions.check_action`` decides
ACTIONS = {"output", "push_vlan", "pop_vlan", "set_field", "copy_field", "dec_nw_ttl"}
INSTRUCTIONS = {"apply_actions", "write_actions", "clear_actions", "goto_table", "write_metadata"}
#: OpenFlow 1.0's header-setting actions: name -> (OXM field, the action's value key)
_SET10 = {"set_nw_src": ("ipv4_src", "nw_addr"), "set_nw_dst": ("ipv4_dst", "nw_addr"),
          "set_nw_tos": ("nw_tos", "nw_tos"), "set_tp_src": ("tcp_src", "tp_port"),
          "set_tp_dst": ("tcp_dst", "tp_port")}
_TO10 = {field: (name, key) for name, (field, key) in _SET10.items()}
ACTIONS |= {"group", "meter"}          # groups and meters (vswitch.openflow.groupmeter)
INSTRUCTIONS |= {"meter"}


def _full(name: str) -> int:
    return (1 << MATCHABLE[name]) - 1


def match_from(version: int, match: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """A wire match as ``{oxm_name: (value, mask)}`` with prerequisites checked."""
    out: dict[str, tuple[int, int]] = {}
    if version == OFP10:
        match = _from10(match)
    for name, v in match.items():
        if name not in MATCHABLE:
            raise OfpError(OFPET_BAD_MATCH, OFPBMC_BAD_FIELD, f"cannot match on {name}")
        value, mask = v if isinstance(v, tuple) else (v, _full(name))
        if value & ~mask:
            raise OfpError(OFPET_BAD_MATCH, OFPBMC_BAD_VALUE, f"{name}: value has bits outside its mask")
        out[name] = (value, mask)
    for name in out:
        for need, allowed, cmask in PREREQ.get(name, ()):
            # as OVS checks them: on the match's values, a field not matched counting as 0 (so "icmpv6_code == 0"
            # holds when the code is not matched)
            have = out.get(need) or out.get(_SAME_BITS.get(need, "")) or (0, 0)
            m = _full(need) if cmask is None else cmask
            if have[0] & m not in allowed:
                raise OfpError(OFPET_BAD_MATCH, OFPBMC_BAD_PREREQ,
                               f"{name} needs {need}={'/'.join(hex(a) for a in allowed)}"
                               + (f"/{cmask:#x}" if cmask is not None else ""))
    return out


def _from10(m: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "in_port" in m:
        out["in_port"] = m["in_port"]
    for a, b in (("dl_src", "eth_src"), ("dl_dst", "eth_dst"), ("dl_type", "eth_type")):
        if a in m:
            out[b] = m[a]
    arp = out.get("eth_type") == 0x0806
    if "nw_proto" in m:   # OpenFlow 1.0's nw_proto is the ARP opcode (its low 8 bits) in an ARP match
        out["arp_op" if arp else "ip_proto"] = m["nw_proto"]
    if "dl_vlan" in m:
        out["vlan_vid"] = 0 if m["dl_vlan"] == OFP10_VLAN_NONE else (m["dl_vlan"] & 0xFFF) | OFPVID_PRESENT
    if "dl_vlan_pcp" in m:
        out["vlan_pcp"] = m["dl_vlan_pcp"]
        out.setdefault("vlan_vid", (OFPVID_PRESENT, OFPVID_PRESENT))   # as OVS: a priority means a tag
    if "nw_tos" in m:
        out["ip_dscp"] = m["nw_tos"] >> 2
    for a, b4, barp in (("nw_src", "ipv4_src", "arp_spa"), ("nw_dst", "ipv4_dst", "arp_tpa")):
        if a in m:
            addr, plen = m[a] if isinstance(m[a], tuple) else (m[a], 32)
            mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
            out[barp if arp else b4] = (addr & mask, mask)
    proto = out.get("ip_proto")
    for a, idx in (("tp_src", 0), ("tp_dst", 1)):
        if a in m:
            name = {6: ("tcp_src", "tcp_dst"), 17: ("udp_src", "udp_dst"),
                    1: ("icmpv4_type", "icmpv4_code")}.get(proto)
            if name is None:
                raise OfpError(OFPET_BAD_MATCH, OFPBMC_BAD_PREREQ, f"{a} needs nw_proto tcp, udp or icmp")
            out[name[idx]] = m[a]
    return out


def match_to(version: int, match: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """The wire form of a normalised match (exact fields without masks)."""
    plain = {k: (v if m == _full(k) else (v, m)) for k, (v, m) in match.items()}
    if version != OFP10:
        return plain
    out: dict[str, Any] = {}
    for a, b in (("in_port", "in_port"), ("dl_src", "eth_src"), ("dl_dst", "eth_dst"), ("dl_type", "eth_type"),
                 ("nw_proto", "ip_proto"), ("nw_proto", "arp_op"), ("dl_vlan_pcp", "vlan_pcp")):
        if b in plain:
            out[a] = plain[b] & 0xFF if b == "arp_op" else plain[b]
    if "vlan_vid" in plain:
        vid = plain["vlan_vid"]
        out["dl_vlan"] = OFP10_VLAN_NONE if vid == 0 else (vid if isinstance(vid, int) else vid[0]) & 0xFFF
    if "ip_dscp" in plain:
        out["nw_tos"] = plain["ip_dscp"] << 2
    for a, names in (("nw_src", ("ipv4_src", "arp_spa")), ("nw_dst", ("ipv4_dst", "arp_tpa"))):
        for n in names:
            if n in match:
                v, m = match[n]
                out[a] = (v, bin(m).count("1"))
    for a, names in (("tp_src", ("tcp_src", "udp_src", "icmpv4_type")), ("tp_dst", ("tcp_dst", "udp_dst",
                                                                                    "icmpv4_code"))):
        for n in names:
            if n in plain:
                out[a] = plain[n]
    return out


def actions_from10(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenFlow 1.0 actions as 1.3 actions."""
    out: list[dict[str, Any]] = []
    for a in actions:
        t = a["type"]
        if t == "output":
            port = a["port"]
            out.append({"type": "output", "port": port | 0xFFFF0000 if port >= 0xFF00 else port,
                        "max_len": a["max_len"]})
        elif t == "strip_vlan":
            out.append({"type": "pop_vlan"})
        elif t == "set_vlan_vid":   # unlike 1.3's set_field, it tags an untagged frame (as OVS does)
            out.append({"type": "mod_vlan_vid", "vlan_vid": a["vlan_vid"] & 0xFFF})
        elif t == "set_vlan_pcp":
            out.append({"type": "set_field", "field": {"vlan_pcp": a["vlan_pcp"]}})
        elif t in ("set_dl_src", "set_dl_dst"):
            out.append({"type": "set_field", "field": {"eth_src" if t == "set_dl_src" else "eth_dst":
                                                       a["dl_addr"]}})
        elif t in _SET10:
            out.append({"type": "set_field", "field": {_SET10[t][0]: a[_SET10[t][1]]}})
        elif t == "nx_group":       # 1.0 has groups through Nicira's action
            out.append({"type": "group", "group_id": a["group_id"]})
        elif t.startswith("nx_"):   # Nicira actions are the same in every version
            out.append(a)
        else:
            raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_TYPE, f"action {t} is not supported")
    return out


def actions_to10(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """1.3 actions in OpenFlow 1.0 form (for flow statistics); a set_field 1.0 cannot say becomes Nicira's
    REG_LOAD2, and Nicira actions stay as they are."""
    out: list[dict[str, Any]] = []
    for a in actions:
        t = a["type"]
        if t == "output":
            out.append({"type": "output", "port": a["port"] & 0xFFFF, "max_len": a.get("max_len", 0)})
        elif t == "pop_vlan":
            out.append({"type": "strip_vlan"})
        elif t == "set_field":
            (k, v), = a["field"].items()
            if k == "vlan_vid":
                out.append({"type": "set_vlan_vid", "vlan_vid": v & 0xFFF})
            elif k == "vlan_pcp":
                out.append({"type": "set_vlan_pcp", "vlan_pcp": v})
            elif k in ("eth_src", "eth_dst"):
                out.append({"type": "set_dl_src" if k == "eth_src" else "set_dl_dst", "dl_addr": v})
            elif k in _TO10:
                out.append({"type": _TO10[k][0], _TO10[k][1]: v})
            else:
                f = _fields.by_oxm_name(k) or _fields.by_name(k)
                out.append({"type": "nx_reg_load2", "field": f.name if f is not None else k, "value": v,
                            "mask": None})
        elif t.startswith("nx_"):
            out.append(a)
        elif t == "group":
            out.append({"type": "nx_group", "group_id": a["group_id"]})
        elif t == "push_vlan":
            raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_TYPE, "push_vlan has no OpenFlow 1.0 form")
    return out


def instructions_from(version: int, fields: dict[str, Any]) -> list[dict[str, Any]]:
    """The flow_mod's program as 1.3 instructions, checked against what the datapath can do."""
    if version == OFP10:
        return [{"type": "apply_actions", "actions": actions_from10(fields.get("actions", []))}]
    out = []
    for ins in fields.get("instructions", []):
        if ins["type"] not in INSTRUCTIONS:
            raise OfpError(OFPET_BAD_INSTRUCTION, OFPBIC_UNSUP_INST, f"instruction {ins['type']} is not supported")
        for a in ins.get("actions", []):
            if a["type"] not in ACTIONS and not a["type"].startswith("nx_"):
                raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_TYPE, f"action {a['type']} is not supported")
            if a["type"] == "push_vlan" and a["ethertype"] != 0x8100:
                raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_ARGUMENT, "push_vlan supports ethertype 0x8100")
        out.append(ins)
    return out


def instructions_to(version: int, instructions: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"instructions": ...}`` (1.3) or ``{"actions": ...}`` (1.0) for flow statistics."""
    if version != OFP10:
        return {"instructions": instructions}
    actions: list[dict[str, Any]] = []
    for ins in instructions:
        if ins["type"] == "apply_actions":
            actions += actions_to10(ins["actions"])
    return {"actions": actions}
