"""``ofproto/trace``'s text as OVS 3.1 prints it: the recorder the translator tells every step (a tree of
tables, actions, group buckets and details), that tree laid out with OVS's indentation, and matches and
actions in the words OVS's trace uses (``arp,reg14=0x2,metadata=0x2``, ``move:NXM_NX_REG10[12]->NXM_NX_XXREG0[111]``).

OVS's layout, as its traces show it: a table's actions hang under the table; the table a resubmit (or a goto)
looks up is the resubmit's next sibling, its actions under it; a group's chosen buckets follow the ``group:N``
line, each bucket's actions under it; ``clone``'s actions follow it on its level; details
(``-> NXM_NX_REG14[0..14] is now 0x2``) follow the action they tell about. A node is indented one step more than
its level, and its children two levels deeper, unless it is the last of its list and a table or bridge (then
both are at its level). A walk that ends at ``ct`` (pyvswitch has no conntrack yet) is laid out as OVS's, whose
``ct`` forks and whose walk goes on with the actions after it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from dpif import key as K
from ofproto import fields as _fields
from ofproto.actions import (
    OFPP_ANY,
    OFPP_CONTROLLER,
    Clone,
    Load,
    ModVlanVid,
    Move,
    Note,
    Output,
    OutputReg,
    PopVlan,
    PushVlan,
    SetField,
    StackPop,
    StackPush,
    field_bits,
    format_nicira,
)
from ofproto.nxtext import c_hex, field_value, subfield
from ofproto.rules import ALL_MATCH_FIELDS, Action, Flow, Match
from xlate.bridges import PF_PATCH, PF_TUNNEL, Bridges
from xlate.translate import MAX_DEPTH, translate, translate_actions

if TYPE_CHECKING:
    from vswitch.openflow.flows import BridgeFlows

TABLE, BRIDGE, ACTION, DETAIL, WARN, BUCKET = "table", "bridge", "action", "detail", "warn", "bucket"
HIDDEN = "hidden"    # a list goes on past the walk's end (its ct): laid out as OVS's, printed as nothing


@dataclass
class Node:
    """One line of the trace and the lines that hang under it."""

    kind: str
    text: str
    subs: list[Node] = field(default_factory=list)


def render(nodes: list[Node], level: int = 0) -> list[str]:
    """The lines of ``nodes`` (a list at ``level``) as OVS lays out its trace."""
    out: list[str] = []
    for i, n in enumerate(nodes):
        more = i < len(nodes) - 1 or n.kind not in (TABLE, BRIDGE)
        pad = " " * ((level + more) * 4)
        if n.kind == HIDDEN:
            continue
        if n.kind == BRIDGE:
            out += ["", pad + n.text, pad + "-" * len(n.text)]
        elif n.kind == DETAIL:
            out.append(f"{pad} -> {n.text}")
        elif n.kind == WARN:
            out.append(f"{pad} >> {n.text}")
        else:
            out.append(pad + n.text)
        out += render(n.subs, level + 2 * more)
    return out


class TraceRecorder:
    """``ofproto/trace``'s recorder (``xlate.recorder.Recorder``): the walk as a tree of nodes, into the
    bridges behind patch ports (NORMAL's too)."""

    def __init__(self, flows: BridgeFlows, flags: np.ndarray, bridges: Bridges) -> None:
        self.flows = flows
        self.flags = flags
        self.bridges = bridges
        self.normal_outputs: list[list[str]] = []
        self.depth = 0
        self.root: list[Node] = []
        self.cur = self.root
        self.top = self.root        # the current bridge's list of its first tables
        self.stack: list[list[Node]] = []
        self.tops: list[list[Node]] = []

    def lines(self) -> list[str]:
        """The trace's pipeline section."""
        return render(self.root)

    def _add(self, kind: str, text: str) -> Node:
        node = Node(kind, text)
        self.cur.append(node)
        return node

    def table(self, table_id: int, flow: Flow | None) -> None:
        if flow is None:
            self.cur = self._add(TABLE, f"{table_id:2d}. No match.").subs
            return
        match = match_text(flow.match)
        self.cur = self._add(TABLE, f"{table_id:2d}. {match}{', ' if match else ''}priority {flow.priority}"
                             + (f", cookie {flow.cookie:#x}" if flow.cookie else "")).subs
        ins = flow.instructions
        if not (ins.apply or ins.write or ins.clear or ins.metadata is not None or ins.goto is not None):
            self._add(ACTION, "drop")

    def note(self, text: str) -> None:
        s = text.strip()
        if s.startswith("-> "):
            self._add(DETAIL, s[3:])
        elif s.startswith(">> "):
            self._add(WARN, s[3:])
        elif s.startswith("--. "):      # the action set, run when the pipeline ends: a table of its own, last
            first = next((n for n in self.top if n.kind == TABLE), None)    # under the bridge's first table
            if first is not None:
                self.cur = first.subs
            self.cur = self._add(TABLE, s).subs
        elif s:
            self._add(ACTION, s)

    def action(self, a: Action, nest: int) -> None:
        self._add(ACTION, action_text(a))

    def enter(self) -> None:
        self.stack.append(self.cur)

    def mark(self) -> object:
        return self.cur

    def more(self, mark: object) -> None:
        if isinstance(mark, list):
            mark.append(Node(HIDDEN, ""))

    def leave(self) -> None:
        self.cur = self.stack.pop() if self.stack else self.root

    def bucket(self, bucket_id: int) -> None:
        self.stack.append(self.cur)
        self.cur = self._add(BUCKET, f"bucket {bucket_id}").subs

    def subfield(self, name: str, ofs: int, nbits: int, value: int) -> None:
        whole = ofs == 0 and nbits >= field_bits(name)
        self._add(DETAIL, f"{subfield(name, ofs, nbits)} is now "
                          f"{field_value(name, value) if whole else c_hex(value)}")

    def _name(self, bridge: int) -> str:
        bridges = self.flows.bridge.dp.datapath.bridges
        return bridges[bridge].name if 0 <= bridge < len(bridges) and bridges[bridge] is not None else "?"

    def bridge(self, bridge: int, in_port: int) -> None:
        self.stack.append(self.cur)
        self.tops.append(self.top)
        self.cur = self.top = self._add(BRIDGE, f'bridge("{self._name(bridge)}")').subs

    def resume(self, bridge: int) -> None:
        self.cur = self.stack.pop() if self.stack else self.root    # OVS says nothing: the layout shows it
        self.top = self.tops.pop() if self.tops else self.root

    def normal(self, key: list[int], in_port: int) -> None:
        here = self.flows.peer_flows(in_port) or self.flows
        texts: list[str] = []
        said: list[str] = []
        ports = here._trace_normal(key, in_port, said, self.flags)
        for line in said:
            self.note(line)
        for q in ports:
            if q < len(self.flags) and self.flags[q] & PF_PATCH:
                texts += self._cross(key, q)
            elif q < len(self.flags) and self.flags[q] & PF_TUNNEL:
                texts += self._tunnel(key, q)
            else:
                texts.append(self.flows.port_text(q))
        self.normal_outputs.append(texts)

    def _tunnel(self, key: list[int], q: int) -> list[str]:
        """NORMAL sent the frame to tunnel port ``q``: the encapsulation and the underlay bridge's walk, as an
        OpenFlow output to it is traced (what the datapath does with NORMAL's frames for it)."""
        b = self.bridges.bridge_of(q)
        flows = self.flows.peer_flows(q) or self.flows
        if self.depth >= MAX_DEPTH or b < 0:
            return []
        saved, self.normal_outputs = self.normal_outputs, []
        self.depth += 1
        res = translate_actions(self.bridges, key, (Output(flows.ofport_of(q)),), self.flags,
                                self.flows.bridge.dp.cookies, self, bridge=b)
        self.depth -= 1
        texts = self.flows.render_actions(res.actions, self.normal_outputs)
        self.normal_outputs = saved
        return texts

    def _cross(self, key: list[int], q: int) -> list[str]:
        """NORMAL sent the frame to patch port ``q``: the walk in the peer's bridge, and its datapath actions."""
        peer = int(self.bridges.peer[q]) if q < len(self.bridges.peer) else -1
        if peer < 0 or self.bridges.bridge_of(peer) < 0:
            self.note("     -> patch port without a peer: dropped")
            return []
        if self.depth >= MAX_DEPTH:
            self.note(f"     -> over max translation depth {MAX_DEPTH}")
            return []
        self.bridge(self.bridges.bridge_of(peer), peer)
        saved, self.normal_outputs = self.normal_outputs, []
        self.depth += 1
        walked = list(key)
        walked[K.W_IN_PORT] = peer
        res = translate(self.bridges, walked, self.flags, self.flows.bridge.dp.cookies, self)
        self.depth -= 1
        self.resume(self.bridges.bridge_of(key[K.W_IN_PORT]))
        texts = self.flows.render_actions(res.actions, self.normal_outputs)
        self.normal_outputs = saved
        return texts


# ---------------------------------------------------------------- actions in OVS's words
def action_text(a: Action) -> str:
    """An action as OVS's trace prints it: subfields by NXM / OXM name, ``load`` as the ``set_field`` OVS
    holds it as, values as ``mf_format`` writes them."""
    if isinstance(a, Move):
        return f"move:{subfield(a.src, a.src_ofs, a.nbits)}->{subfield(a.dst, a.dst_ofs, a.nbits)}"
    if isinstance(a, (StackPush, StackPop, OutputReg)):
        n = field_bits(a.field) - a.ofs if a.nbits is None else a.nbits
        verb = "push" if isinstance(a, StackPush) else "pop" if isinstance(a, StackPop) else "output"
        return f"{verb}:{subfield(a.field, a.ofs, n)}"
    if isinstance(a, Load):
        n = field_bits(a.field) - a.ofs if a.nbits is None else a.nbits
        return _set_field(a.field, a.value, ((1 << n) - 1) << a.ofs)
    if isinstance(a, SetField) and a.field != "vlan_vid":
        return _set_field(a.field, a.value, a.mask)
    if isinstance(a, SetField):
        return f"set_field:{a.value & 0xFFF | 0x1000}->vlan_vid" if a.field == "vlan_vid" else \
            f"set_field:{a.value}->{a.field}"
    if isinstance(a, Clone):
        return f"clone({','.join(action_text(x) for x in a.actions)})"
    if isinstance(a, Note):      # OVS pads a note so that the action fills whole 8-byte units
        data = a.data + bytes(-(10 + len(a.data)) % 8)
        return "note:" + ".".join(f"{b:02x}" for b in data)
    if isinstance(a, Output):
        if a.port == OFPP_CONTROLLER:
            return f"CONTROLLER:{a.max_len}"
        return _RESERVED.get(a.port, f"output:{a.port}") if a.port != OFPP_ANY else "output:ANY"
    if isinstance(a, PushVlan):
        return f"push_vlan:{a.ethertype:#06x}"
    if isinstance(a, PopVlan):
        return "pop_vlan"
    if isinstance(a, ModVlanVid):
        return f"mod_vlan_vid:{a.vid}"
    return format_nicira(a) or repr(a)


def _ovs_name(name: str) -> str:
    """The name OVS's ``set_field`` prints for field ``name`` (its short name)."""
    f = _fields.by_name(name) or _fields.by_oxm_name(name)
    return f.name if f is not None else name


def _set_field(name: str, value: int, mask: int | None) -> str:
    full = (1 << field_bits(name)) - 1
    fname = _ovs_name(name)
    if fname == "in_port" and (mask is None or mask == full):
        return f"set_field:{_RESERVED.get(value | 0xFFFF0000 if value >= 0xFFF8 else value, value)}->in_port"
    if mask is None or mask == full:
        return f"set_field:{field_value(fname, value)}->{fname}"
    return f"set_field:{field_value(fname, value & mask)}/{field_value(fname, mask)}->{fname}"


# ---------------------------------------------------------------- matches in OVS's words
_PROTO = {(0x0800, 1): "icmp", (0x0800, 6): "tcp", (0x0800, 17): "udp", (0x0800, 132): "sctp",
          (0x86DD, 58): "icmp6", (0x86DD, 6): "tcp6", (0x86DD, 17): "udp6", (0x86DD, 132): "sctp6"}
_ETH = {0x0800: "ip", 0x86DD: "ipv6", 0x0806: "arp", 0x8035: "rarp"}
#: OVS's name and place (after the protocol, before the registers: below 0; after them: above) of each field
_ORDER = [("recirc_id", "recirc_id"), ("dp_hash", "dp_hash"), ("conj_id", "conj_id"), ("pkt_mark", "pkt_mark"),
          ("ct_state", "ct_state"), ("ct_zone", "ct_zone"), ("ct_mark", "ct_mark"), ("ct_label", "ct_label"),
          ("ct_nw_src", "ct_nw_src"), ("ct_nw_dst", "ct_nw_dst"), ("ct_ipv6_src", "ct_ipv6_src"),
          ("ct_ipv6_dst", "ct_ipv6_dst"), ("ct_nw_proto", "ct_nw_proto"), ("ct_tp_src", "ct_tp_src"),
          ("ct_tp_dst", "ct_tp_dst"), ("PROTO", ""), ("tunnel_id", "tun_id"), ("tun_src", "tun_src"),
          ("tun_dst", "tun_dst"), ("tun_ipv6_src", "tun_ipv6_src"), ("tun_ipv6_dst", "tun_ipv6_dst"),
          ("tun_flags", "tun_flags"), ("TUN_METADATA", ""), ("REGS", ""), ("metadata", "metadata"),
          ("in_port", "in_port"), ("VLAN", ""), ("eth_src", "dl_src"), ("eth_dst", "dl_dst"), ("ETH_TYPE", ""),
          ("ipv6_src", "ipv6_src"), ("ipv6_dst", "ipv6_dst"), ("ipv6_flabel", "ipv6_label"),
          ("ipv4_src", "nw_src"), ("ipv4_dst", "nw_dst"), ("arp_spa", "arp_spa"), ("arp_tpa", "arp_tpa"),
          ("NW_PROTO", ""), ("arp_op", "arp_op"), ("nw_tos", "nw_tos"), ("ip_dscp", "nw_tos"),
          ("ip_ecn", "nw_ecn"), ("nw_ttl", "nw_ttl"), ("ip_frag", "nw_frag"), ("arp_sha", "arp_sha"),
          ("arp_tha", "arp_tha"), ("tcp_src", "tp_src"), ("udp_src", "tp_src"), ("sctp_src", "tp_src"),
          ("tcp_dst", "tp_dst"), ("udp_dst", "tp_dst"), ("sctp_dst", "tp_dst"), ("icmpv4_type", "icmp_type"),
          ("icmpv6_type", "icmp_type"), ("icmpv4_code", "icmp_code"), ("icmpv6_code", "icmp_code"),
          ("ipv6_nd_target", "nd_target"), ("ipv6_nd_sll", "nd_sll"), ("ipv6_nd_tll", "nd_tll"),
          ("tcp_flags", "tcp_flags")]
_MACS = frozenset({"eth_src", "eth_dst", "arp_sha", "arp_tha", "ipv6_nd_sll", "ipv6_nd_tll"})
_IPV4 = frozenset({"ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa", "tun_src", "tun_dst", "ct_nw_src", "ct_nw_dst"})
_IPV6 = frozenset({"ipv6_src", "ipv6_dst", "ipv6_nd_target", "tun_ipv6_src", "tun_ipv6_dst", "ct_ipv6_src",
                   "ct_ipv6_dst"})
_DECIMAL = frozenset({"vlan_pcp", "ip_proto", "ip_dscp", "nw_tos", "ip_ecn", "nw_ttl", "tcp_src", "tcp_dst",
                      "udp_src", "udp_dst", "sctp_src", "sctp_dst", "icmpv4_type", "icmpv4_code", "icmpv6_type",
                      "icmpv6_code", "arp_op", "ct_zone", "ct_nw_proto", "ct_tp_src", "ct_tp_dst", "conj_id",
                      "recirc_id"})
CT_STATE_FLAGS = ("new", "est", "rel", "rpl", "inv", "trk", "snat", "dnat")
_FRAG = {(0, 1): "no", (1, 1): "yes", (0, 3): "no", (1, 3): "first", (3, 3): "later", (2, 2): "later",
         (0, 2): "not_later"}
_RESERVED = {0xFFFFFFF8: "IN_PORT", 0xFFFFFFF9: "TABLE", 0xFFFFFFFA: "NORMAL", 0xFFFFFFFB: "FLOOD",
             0xFFFFFFFC: "ALL", 0xFFFFFFFD: "CONTROLLER", 0xFFFFFFFE: "LOCAL", 0xFFFFFFFF: "ANY"}


def _masked(text: str, mtext: str, m: int, full: int) -> str:
    return text if m == full else f"{text}/{mtext}"


def value_text(name: str, v: int, m: int, bits: int) -> str:
    """A match field's value (and mask) as OVS's ``match_format`` writes it."""
    full = (1 << bits) - 1
    if name in _MACS:
        def mac(x: int) -> str:
            return ":".join(f"{x >> s & 0xFF:02x}" for s in range(40, -8, -8))
        return _masked(mac(v), mac(m), m, full)
    if name in _IPV4 or name in _IPV6:
        cls = ipaddress.IPv4Address if name in _IPV4 else ipaddress.IPv6Address
        if m == full:
            return str(cls(v))
        prefix = bin(m).count("1")
        cidr = m == full ^ ((1 << (bits - prefix)) - 1)
        return f"{cls(v)}/{prefix}" if cidr else f"{cls(v)}/{cls(m)}"
    if name == "in_port":
        return _RESERVED.get(v, str(v))
    if name == "ct_state":
        return "".join(("+" if v >> i & 1 else "-") + flag for i, flag in enumerate(CT_STATE_FLAGS) if m >> i & 1)
    if name == "ip_frag":
        return _FRAG.get((v, m), f"{v:#x}/{m:#x}")
    if name in _DECIMAL:
        return _masked(str(v), c_hex(m), m, full)
    return _masked(c_hex(v), c_hex(m), m, full)


def _registers(fields: dict[str, tuple[int, int]]) -> list[str]:
    """reg / xreg / xxreg matches as OVS prints them: 32-bit ``regN`` each."""
    regs: dict[int, tuple[int, int]] = {}
    for name, (v, m) in fields.items():
        for prefix, width in (("xxreg", 4), ("xreg", 2), ("reg", 1)):
            if name.startswith(prefix) and name[len(prefix):].isdigit():
                base = int(name[len(prefix):]) * width
                for j in range(width):      # the high 32 bits are the lowest-numbered register
                    shift = 32 * (width - 1 - j)
                    rv, rm = v >> shift & 0xFFFFFFFF, m >> shift & 0xFFFFFFFF
                    if rm:
                        ov, om = regs.get(base + j, (0, 0))
                        regs[base + j] = (ov | rv, om | rm)
                break
    return [f"reg{n}={_masked(c_hex(v), c_hex(m), m, 0xFFFFFFFF)}" for n, (v, m) in sorted(regs.items())]


def _vlan(fields: dict[str, tuple[int, int]]) -> list[str]:
    out = []
    if "vlan_tci" in fields:
        v, m = fields["vlan_tci"]
        out.append(f"vlan_tci={v:#06x}" + ("" if m == 0xFFFF else f"/{m:#06x}"))
    if "vlan_vid" in fields:
        v, m = fields["vlan_vid"]
        out.append("vlan_tci=0x0000/0x1fff" if v == 0 and m & 0x1000 else
                   f"dl_vlan={v & 0xFFF}" if m == 0x1FFF else f"vlan_tci={v:#06x}/{m:#06x}")
    if "vlan_pcp" in fields:
        out.append(f"dl_vlan_pcp={fields['vlan_pcp'][0]}")
    return out


def match_text(match: Match) -> str:
    """A flow's match as OVS's trace prints it (``ct_state=-trk,ip,reg0=0x8/0x8,metadata=0x2,nw_dst=10.0.0.1``)."""
    fields = {name: (v, m) for name, v, m in match.fields}
    bits = {name: ALL_MATCH_FIELDS[name][0] if name in ALL_MATCH_FIELDS else 64 for name in fields}
    eth = fields.get("eth_type")
    eth_type = eth[0] if eth is not None and eth[1] == 0xFFFF else None
    proto = fields.get("ip_proto")
    ip_proto = proto[0] if proto is not None and proto[1] == 0xFF else None
    short = _PROTO.get((eth_type, ip_proto)) if eth_type is not None and ip_proto is not None else None
    if short is None and eth_type in _ETH and (ip_proto is None or eth_type in (0x0806, 0x8035)):
        short = _ETH[eth_type]
    parts: list[str] = []
    for name, ovs in _ORDER:
        if name == "PROTO":
            parts += [short] if short else []
        elif name == "TUN_METADATA":
            parts += [f"{n}={value_text(n, *fields[n], bits[n])}" for n in sorted(fields, key=_tun_index)
                      if n.startswith("tun_metadata")]
        elif name == "REGS":
            parts += _registers(fields)
        elif name == "VLAN":
            parts += _vlan(fields)
        elif name == "ETH_TYPE":
            if eth is not None and not short:
                parts.append(f"dl_type={eth[0]:#06x}" + ("" if eth[1] == 0xFFFF else f"/{eth[1]:#06x}"))
        elif name == "NW_PROTO":
            if proto is not None and (short is None or short in ("ip", "ipv6")):
                parts.append(f"nw_proto={value_text('ip_proto', *proto, 8)}")
        elif name in fields:
            parts.append(f"{ovs}={value_text(name, *fields[name], bits[name])}")
    return ",".join(parts)


def _tun_index(name: str) -> int:
    tail = name[len("tun_metadata"):]
    return int(tail) if tail.isdigit() else -1
