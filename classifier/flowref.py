"""Plain-Python reference model of the OpenFlow 1.3 pipeline that ``classifier.flowtable`` compiles.

Written from the rules (OpenFlow 1.3.5 sections 5 and 7, and the conventions documented in
``classifier.flowtable``), not from the kernel: flows sit in a list and every lookup scans it;
a frame is edited as bytes, action by action, and every output is the bytes that leave the port.
The tests run the same flow-mods and frames through both and compare outputs, packet-ins, drop
counts, flow and table counters. Nothing here is fast.

Rules the two share (they are choices, not OpenFlow's):

* ties between matching flows of equal priority: the flow added first (lowest serial) wins;
* a frame is ``dst, src, up to two known VLAN tags, rest``: parsing knows one tag at most;
  ``pop_vlan``/``set vlan_*`` on a frame without a known tag and a third ``push_vlan`` do nothing;
* later tables match the headers as modified by apply-actions (MACs, VLAN VID/PCP);
* OUTPUT to the ingress port (other than through OFPP_IN_PORT), to a down or unknown port does
  nothing; FLOOD skips the ingress, down and no-flood ports, ALL the ingress and down ones;
* drops are events by ingress port: ``rx_invalid``, ``table_miss`` (pipeline ended on a miss) and
  ``no_output`` (ended with nothing sent and nothing failed) once per frame; ``tx_queue_full`` and
  ``controller_queue_full`` once per output that did not fit.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from classifier import flowtable as F
from classifier import keys as K
from classifier.reference import parse_reference

# OXM field -> (key column, lowest bit in the column, width); IPv6 addresses span two columns.
_SIMPLE = {
    "in_port": (K.K_IN_PORT, 0, 32),
    "eth_dst": (K.K_ETH_DST, 0, 48),
    "eth_src": (K.K_ETH_SRC, 0, 48),
    "eth_type": (K.K_ETH_TYPE, 0, 16),
    "vlan_vid": (K.K_VLAN_VID, 0, 13),
    "vlan_pcp": (K.K_VLAN_PCP, 0, 3),
    "ip_dscp": (K.K_IP_TOS, 2, 6),
    "ip_ecn": (K.K_IP_TOS, 0, 2),
    "ip_proto": (K.K_IP_PROTO, 0, 8),
    "ipv4_src": (K.K_NW_SRC, 0, 32),
    "ipv4_dst": (K.K_NW_DST, 0, 32),
    "tcp_src": (K.K_TP_SRC, 0, 16),
    "tcp_dst": (K.K_TP_DST, 0, 16),
    "udp_src": (K.K_TP_SRC, 0, 16),
    "udp_dst": (K.K_TP_DST, 0, 16),
    "sctp_src": (K.K_TP_SRC, 0, 16),
    "sctp_dst": (K.K_TP_DST, 0, 16),
    "icmpv4_type": (K.K_TP_SRC, 0, 8),
    "icmpv4_code": (K.K_TP_DST, 0, 8),
    "icmpv6_type": (K.K_TP_SRC, 0, 8),
    "icmpv6_code": (K.K_TP_DST, 0, 8),
    "arp_op": (K.K_ARP_OP, 0, 16),
    "arp_spa": (K.K_ARP_SPA, 0, 32),
    "arp_tpa": (K.K_ARP_TPA, 0, 32),
    "arp_sha": (K.K_ARP_SHA, 0, 48),
    "arp_tha": (K.K_ARP_THA, 0, 48),
}
_WIDE = {"ipv6_src": (K.K_IPV6_SRC_HI, K.K_IPV6_SRC_LO), "ipv6_dst": (K.K_IPV6_DST_HI, K.K_IPV6_DST_LO)}


def field_value(name: str, key: dict[int, int]) -> int:
    """The value of OXM field ``name`` in a key row given as ``{column: value}`` (absent = 0)."""
    if name in _WIDE:
        hi, lo = _WIDE[name]
        return key.get(hi, 0) << 64 | key.get(lo, 0)
    col, low, width = _SIMPLE[name]
    return key.get(col, 0) >> low & ((1 << width) - 1)


def matches(match: F.Match, key: dict[int, int]) -> bool:
    """Does ``key`` satisfy every (value, mask) of the match?"""
    return all(field_value(name, key) & mask == value for name, value, mask in match.fields)


def covers(general: F.Match, specific: F.Match) -> bool:
    """OpenFlow's non-strict selection: ``specific`` constrains at least the bits ``general`` does, the same way."""
    spec = {name: (v, m) for name, v, m in specific.fields}
    for name, v, m in general.fields:
        if name not in spec:
            return False
        sv, sm = spec[name]
        for bit in range(F.FIELDS[name][0]):
            if m >> bit & 1 and (not sm >> bit & 1 or (sv >> bit & 1) != (v >> bit & 1)):
                return False
    return True


def overlap(a: F.Match, b: F.Match) -> bool:
    """Could one packet match both? (Fields compared by name.)"""
    bf = {name: (v, m) for name, v, m in b.fields}
    for name, v, m in a.fields:
        if name in bf and (v ^ bf[name][0]) & m & bf[name][1]:
            return False
    return True


@dataclass(eq=False)
class RefFlow:
    """A flow entry of the reference, with its counters."""

    table_id: int
    priority: int
    match: F.Match
    instructions: F.Instructions
    cookie: int
    idle_timeout: int
    hard_timeout: int
    flags: int
    serial: int
    installed: int
    packets: int = 0
    bytes: int = 0
    last_used: int = -1

    def ident(self) -> tuple[int, int, F.Match]:
        """(table, priority, match): unique among installed flows."""
        return self.table_id, self.priority, self.match


@dataclass
class Packet:
    """A frame as the actions see it."""

    dst: int
    src: int
    tags: list[tuple[int, int]]   # (TPID, TCI), outermost first
    rest: bytes                   # ethertype and payload after the known tags

    def to_bytes(self) -> bytes:
        tags = b"".join(struct.pack("!HH", tpid, tci) for tpid, tci in self.tags)
        return self.dst.to_bytes(6, "big") + self.src.to_bytes(6, "big") + tags + self.rest


@dataclass
class RefResult:
    """What one burst produced."""

    outputs: dict[int, list[bytes]]
    normal: list[bytes] = field(default_factory=list)
    # (bytes, reason, table_id, cookie, max_len)
    packet_in: list[tuple[bytes, int, int, int, int]] = field(default_factory=list)


class RefTables:
    """Flow tables and the pipeline, the slow and obvious way."""

    def __init__(self, n_tables: int) -> None:
        self.n_tables = n_tables
        self.flows: list[RefFlow] = []
        self.serial = 0
        self.lookups = [0] * n_tables
        self.matched = [0] * n_tables
        self.drops: dict[tuple[int, str], int] = {}

    # ------------------------------------------------------------ flow-mods
    def add(self, flow: F.Flow, now: int = 0) -> RefFlow:
        """ADD: replace the flow with the same table, priority and match (counters kept unless RESET_COUNTS)."""
        if flow.flags & F.OFPFF_CHECK_OVERLAP:
            for f in self.flows:
                if (f.table_id == flow.table_id and f.priority == flow.priority and f.match != flow.match
                        and overlap(f.match, flow.match)):
                    raise F.FlowError("overlap", "overlapping flow")
        old = [f for f in self.flows if f.ident() == (flow.table_id, flow.priority, flow.match)]
        self.serial += 1
        new = RefFlow(flow.table_id, flow.priority, flow.match, flow.instructions, flow.cookie, flow.idle_timeout,
                      flow.hard_timeout, flow.flags, self.serial, now, last_used=now)
        for f in old:
            self.flows.remove(f)
            if not flow.flags & F.OFPFF_RESET_COUNTS:
                new.packets, new.bytes, new.last_used = f.packets, f.bytes, max(f.last_used, now)
        self.flows.append(new)
        return new

    def select(self, table_id: int, match: F.Match, priority: int, strict: bool, out_port: int = F.OFPP_ANY,
               cookie: int = 0, cookie_mask: int = 0) -> list[RefFlow]:
        """The flows a modify/delete/stats request names."""
        out = []
        for f in self.flows:
            if table_id != F.OFPTT_ALL and f.table_id != table_id:
                continue
            if strict:
                if f.priority != priority or f.match != match:
                    continue
            elif not covers(match, f.match):
                continue
            if f.cookie & cookie_mask != cookie & cookie_mask:
                continue
            if out_port != F.OFPP_ANY:
                ports = [a.port for a in f.instructions.apply + f.instructions.write if isinstance(a, F.Output)]
                if out_port not in ports:
                    continue
            out.append(f)
        return out

    def modify(self, table_id: int, match: F.Match, priority: int, strict: bool, cookie: int, cookie_mask: int,
               instructions: F.Instructions, reset_counts: bool = False) -> list[RefFlow]:
        """MODIFY(_STRICT): new instructions for the selected flows."""
        chosen = self.select(table_id, match, priority, strict, F.OFPP_ANY, cookie, cookie_mask)
        for f in chosen:
            f.instructions = instructions
            if reset_counts:
                f.packets = f.bytes = 0
        return chosen

    def delete(self, table_id: int, match: F.Match, priority: int, strict: bool, out_port: int, cookie: int,
               cookie_mask: int) -> list[RefFlow]:
        """DELETE(_STRICT): remove and return the selected flows."""
        chosen = self.select(table_id, match, priority, strict, out_port, cookie, cookie_mask)
        self.flows = [f for f in self.flows if f not in chosen]
        return chosen

    def expire(self, now: int) -> list[tuple[RefFlow, int]]:
        """Remove flows past their hard or idle timeout."""
        gone = []
        for f in list(self.flows):
            if f.hard_timeout and now - f.installed >= f.hard_timeout:
                gone.append((f, F.OFPRR_HARD_TIMEOUT))
            elif f.idle_timeout and now - max(f.last_used, f.installed) >= f.idle_timeout:
                gone.append((f, F.OFPRR_IDLE_TIMEOUT))
            else:
                continue
            self.flows.remove(f)
        return gone

    # ------------------------------------------------------------ the pipeline
    def lookup(self, table_id: int, key: dict[int, int]) -> RefFlow | None:
        """Highest priority matching flow of a table; the earliest added among equals."""
        best = None
        for f in self.flows:
            if f.table_id == table_id and matches(f.match, key):
                if best is None or (f.priority, -f.serial) > (best.priority, -best.serial):
                    best = f
        return best

    def _drop(self, port: int, reason: str) -> None:
        self.drops[(port, reason)] = self.drops.get((port, reason), 0) + 1

    def process(self, frames: list[tuple[bytes, int]], port_flags: list[int], now: int, qcap: int,
                cap: int) -> RefResult:
        """Run a burst of (frame, in_port): port queues hold ``qcap`` frames, the NORMAL and
        packet-in lists ``cap``."""
        n_ports = len(port_flags)
        res = RefResult({p: [] for p in range(n_ports)})
        local = next((p for p, fl in enumerate(port_flags) if fl & F.PF_LOCAL), None)
        for frame, in_port in frames:
            key = parse_reference(frame)
            if key.get(K.K_DROP):
                self._drop(in_port, "rx_invalid")
                continue
            key[K.K_IN_PORT] = in_port
            ntag = 1 if key.get(K.K_VLAN_VID, 0) & K.VID_PRESENT else 0
            pkt = Packet(key[K.K_ETH_DST], key[K.K_ETH_SRC],
                         [(0x8100, struct.unpack_from("!H", frame, 14)[0])] if ntag else [], frame[12 + 4 * ntag:])
            action_set: dict[str, F.Action] = {}
            sent = failed = 0
            missed = False

            def sync_vlan(pkt: Packet = pkt, key: dict[int, int] = key) -> None:
                if pkt.tags:
                    key[K.K_VLAN_VID] = pkt.tags[0][1] & 0xFFF | K.VID_PRESENT
                    key[K.K_VLAN_PCP] = pkt.tags[0][1] >> 13
                else:
                    key[K.K_VLAN_VID] = key[K.K_VLAN_PCP] = 0

            def do(a: F.Action, flow: RefFlow, table: int, pkt: Packet = pkt, key: dict[int, int] = key,
                   in_port: int = in_port) -> None:
                nonlocal sent, failed
                if isinstance(a, F.PushVlan):
                    if len(pkt.tags) < 2:
                        pkt.tags.insert(0, (a.ethertype, pkt.tags[0][1] if pkt.tags else 0))
                        sync_vlan()
                elif isinstance(a, F.PopVlan):
                    if pkt.tags:
                        pkt.tags.pop(0)
                        sync_vlan()
                elif isinstance(a, F.ModVlanVid):   # OpenFlow 1.0: a frame without a tag gets one, PCP 0
                    tpid, tci = pkt.tags[0] if pkt.tags else (0x8100, 0)
                    pkt.tags[:1] = [(tpid, tci & 0xF000 | a.vid)]
                    sync_vlan()
                elif isinstance(a, F.SetField):
                    if a.field == "eth_dst":
                        pkt.dst = key[K.K_ETH_DST] = a.value
                    elif a.field == "eth_src":
                        pkt.src = key[K.K_ETH_SRC] = a.value
                    elif pkt.tags:
                        tpid, tci = pkt.tags[0]
                        if a.field == "vlan_vid":
                            tci = tci & 0xF000 | a.value & 0xFFF
                        else:
                            tci = tci & 0x1FFF | a.value << 13
                        pkt.tags[0] = (tpid, tci)
                        sync_vlan()
                elif isinstance(a, F.Output):
                    data = pkt.to_bytes()
                    p = a.port
                    if p == F.OFPP_NORMAL:
                        if len(res.normal) < cap:
                            res.normal.append(data)
                            sent += 1
                        else:
                            self._drop(in_port, "tx_queue_full")
                            failed += 1
                        return
                    if p == F.OFPP_CONTROLLER:
                        if len(res.packet_in) < cap:
                            reason = F.OFPR_NO_MATCH if flow.priority == 0 and not flow.match.fields else F.OFPR_ACTION
                            res.packet_in.append((data, reason, table, flow.cookie, a.max_len))
                            sent += 1
                        else:
                            self._drop(in_port, "controller_queue_full")
                            failed += 1
                        return
                    if p in (F.OFPP_FLOOD, F.OFPP_ALL):
                        targets = [q for q in range(n_ports) if q != in_port and not port_flags[q] & F.PF_DOWN
                                   and not (p == F.OFPP_FLOOD and port_flags[q] & F.PF_NO_FLOOD)]
                    elif p == F.OFPP_IN_PORT:
                        targets = [in_port]
                    else:
                        q = local if p == F.OFPP_LOCAL else p
                        targets = [] if q is None or q == in_port else [q]
                    for q in targets:
                        if q >= n_ports or port_flags[q] & F.PF_DOWN:
                            continue
                        if len(res.outputs[q]) < qcap:
                            res.outputs[q].append(data)
                            sent += 1
                        else:
                            self._drop(in_port, "tx_queue_full")
                            failed += 1

            table = 0
            while True:
                flow = self.lookup(table, key)
                self.lookups[table] += 1
                if flow is None:
                    missed = True
                    break
                self.matched[table] += 1
                flow.packets += 1
                flow.bytes += len(frame)
                flow.last_used = now
                ins = flow.instructions
                for a in ins.apply:
                    do(a, flow, table)
                if ins.clear:
                    action_set.clear()
                for a in ins.write:
                    kind = a.field if isinstance(a, F.SetField) else type(a).__name__
                    action_set[kind] = a
                if ins.goto is not None:
                    table = ins.goto
                    continue
                # The action set, in OpenFlow's order: pop, push, set-field, output.
                for kind in ("PopVlan", "PushVlan", "eth_dst", "eth_src", "vlan_vid", "vlan_pcp", "Output"):
                    if kind in action_set:
                        do(action_set[kind], flow, table)
                break
            if missed:
                self._drop(in_port, "table_miss")
            elif sent == 0 and failed == 0:
                self._drop(in_port, "no_output")
        return res
