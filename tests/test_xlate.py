"""The OpenFlow datapath (ofproto tables -> xlate -> megaflows -> flat actions) against the reference
model (``xlate.reference``).

The datapath runs for real: a ``vswitch.datapath.Datapath`` with capture ports (``CapturePort``:
``rx_burst`` hands out the frames a test queued, ``tx_burst`` records the bytes it would send, egress
VLAN edit applied), driven by ``poll_once``, so every burst goes extract -> megaflow lookup -> upcall
and translation -> execute -> NORMAL (the L2 switch) -> packet-ins -> transmit. The model gets the
same frames in the order the datapath polls them (port by port).

Hypothesis generates flow sets (priorities with ties, masks, overlapping matches, several tables
with goto, apply/clear/write actions, VLAN and MAC rewrites, every reserved output port), flow-mods
(add, strict and non-strict modify and delete with cookies and out_port) and bursts of frames (up
to three VLAN tags of either TPID, IPv4/IPv6/ARP/TCP/UDP/ICMP, runts); datapath and model must agree
on the bytes every port sends (NORMAL's forwarding included: the model's NORMAL list goes through
``classifier.reference.ReferenceSwitch``), packet-ins, drop counters, flow and table counters, and
the flows that time out. The same frames come back after flow-mods (a stale megaflow would show)
and two or three times in a row (the second run hits the megaflows, the third the EMC); every
install is checked not to overlap a megaflow already there. The same test runs with a cache of four
megaflows, so translations that do not fit run uninstalled and the cache is trimmed between bursts.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.pool import META_HEAD, META_LEN, PacketPool
from backends.port import Port
from backends.vlan_edit import copy_edit
from classifier.reference import PortVlanConfig, ReferenceSwitch
from dpif import key as K
from dpif.actions import DROP_REASONS, N_DROP_REASONS
from dpif.extract_ref import extract
from dpif.megaflow import H_EMC_HITS, H_MF_HITS, MegaflowCache
from ofproto.lookup import TableIndex
from ofproto.rules import (
    MATCH_FIELDS,
    OFPFF_CHECK_OVERLAP,
    OFPFF_RESET_COUNTS,
    OFPP_ALL,
    OFPP_ANY,
    OFPP_CONTROLLER,
    OFPP_FLOOD,
    OFPP_IN_PORT,
    OFPP_LOCAL,
    OFPP_NORMAL,
    OFPP_TABLE,
    OFPR_ACTION,
    OFPR_NO_MATCH,
    OFPTT_ALL,
    Flow,
    FlowError,
    Instructions,
    Match,
    ModVlanVid,
    Output,
    PopVlan,
    PushVlan,
    SetField,
)
from ofproto.tables import FlowTables
from vswitch.burstpath import MAX_BURST
from vswitch.datapath import Datapath
from vswitch.dpbridge import PacketIn
from vswitch.vlan import VlanConfig, fill_vlan_map
from xlate.reference import PF_DOWN, PF_LOCAL, PF_NO_FLOOD, RefResult, RefTables
from xlate.upcall import Upcalls

SLOT = 512
N_PORTS = 4
N_TABLES = 8       # tables the tests create; flows use 0..3
QCAP = MAX_BURST   # a port's queue in one burst (Datapath.out: MAX_BURST entries per port)
CAP = 2 * MAX_BURST  # the NORMAL and packet-in lists of one burst (Datapath.xside)
SETTINGS = settings(derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ---------------------------------------------------------------- the datapath, wired to capture ports


class CapturePort(Port):
    """A port for tests: ``rx_burst`` hands out the frames ``inbox`` holds, ``tx_burst`` records the bytes
    it is given (read at the slot's ``META_HEAD``, the egress VLAN edit applied by ``backends.vlan_edit``,
    as the real backends do)."""

    type = "capture"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.inbox: list[bytes] = []
        self.sent: list[bytes] = []

    def rx_burst(self, pool: PacketPool, burst: np.ndarray, start: int, max_n: int) -> int:
        n = 0
        while self.inbox and n < max_n:
            if pool.alloc(burst, start + n, 1) != 1:
                break
            pool.put(int(burst[start + n]), self.inbox.pop(0), self.port_no)
            n += 1
        return n

    def tx_burst(self, pool: PacketPool, slots: np.ndarray, vlans: np.ndarray, start: int, count: int) -> int:
        for i in range(start, start + count):
            s = int(slots[i])
            head, length = int(pool.meta[s, META_HEAD]), int(pool.meta[s, META_LEN])
            assert 0 <= head and head + length <= pool.data.shape[1], (head, length)
            buf = np.zeros(length + 4, dtype=np.uint8)
            n = copy_edit(pool.data[s, head:], length, int(vlans[i]), buf, 0)
            self.sent.append(bytes(buf[:n]))
        return count

    def wakeup_fds(self) -> list[int]:
        return []

    def close(self) -> None:
        pass


@dataclass
class DpResult:
    """What one burst made the datapath do."""

    outputs: dict[int, list[bytes]]
    packet_ins: list[PacketIn] = field(default_factory=list)


class Rig:
    """A ``Datapath`` with a capture port per entry of ``port_flags`` (``PF_*``; trunks of every VLAN, as OVS's
    default port), flow tables, a clock the test moves (``now``), and an unlimited packet-in rate.

    ``max_flows``, ``emc_size``: the megaflow cache (the EMC takes every new megaflow: the second run of
    a frame finds it there); ``port_map`` and ``miss_max_len`` as ``FlowTables.compile`` takes them."""

    def __init__(self, port_flags: list[int] | None = None, n_tables: int = N_TABLES, max_flows: int = 1024,
                 emc_size: int = 1024, port_map: dict[int, int] | None = None, miss_max_len: int = 0,
                 n_slots: int = 1024, max_idle: int = 10) -> None:
        self.port_flags = list(port_flags if port_flags is not None else [0] * N_PORTS)
        self.datapath = Datapath("xlate-test", n_slots=n_slots, slot_size=SLOT)
        self.dp = dp = self.datapath.add_bridge("xlate-test", mac_table_size=1024)
        self.ports = [CapturePort(f"cap{i}") for i in range(len(self.port_flags))]
        for p in self.ports:
            dp.attach(p)
        for p, flags in enumerate(self.port_flags):
            dp.port_flags[p] = flags
            fill_vlan_map(dp.vlan_map, p, VlanConfig(), up=not flags & PF_DOWN)
        self.datapath.upcalls = Upcalls(max_flows, emc_size, max_idle=max_idle, cookies=dp.cookies)
        # every new megaflow goes to the EMC; an install that overlaps a megaflow already there raises
        dp.upcalls.cache = MegaflowCache(max_flows, emc_size, emc_insert_inv_prob=1, check_overlap=True)
        dp.pi_rate = dp.pi_burst = dp._pi_tokens = 1e12
        self.now = 0
        self.datapath.now = lambda: self.now   # the datapath's clock: megaflow and flow "used" times, MAC learning
        self.tables = FlowTables(n_tables)
        self.port_map = port_map
        self.miss_max_len = miss_max_len
        self.l2 = ReferenceSwitch([PortVlanConfig(up=not flags & PF_DOWN) for flags in self.port_flags])

    def close(self) -> None:
        self.datapath.close()

    def set_down(self, port: int, down: bool) -> None:
        """A port goes down (or up): no output of any kind goes to it, NORMAL included (the bridge rewrites
        its VLAN map row)."""
        self.dp.set_port_flag(port, PF_DOWN, down)
        self.port_flags[port] = int(self.dp.port_flags[port])
        fill_vlan_map(self.dp.vlan_map, port, VlanConfig(), up=not down)
        self.l2.ports[port].up = not down

    def update(self) -> None:
        """Compile the tables and make them the datapath's (megaflows revalidated), as the agent does."""
        compiled = self.tables.compile(self.port_map, self.miss_max_len)
        self.dp.set_flows(self.tables, compiled, -1, False)

    def run(self, frames: list[tuple[bytes, int]], now: int | None = None) -> DpResult:
        """One ``poll_once`` over ``frames`` (frame, datapath port): what every port sent, the packet-ins."""
        if now is not None:
            self.now = now
        for p in self.ports:
            p.sent = []
        for f, port in frames:
            self.ports[port].inbox.append(f)
        free = self.dp.pool.free_count
        assert self.dp.poll_once() == len(frames)
        assert self.dp.pool.free_count == free, "pool slots leaked"
        pins = list(self.dp.packet_ins)
        self.dp.packet_ins.clear()
        return DpResult({p: port.sent for p, port in enumerate(self.ports)}, pins)

    def sync(self) -> None:
        """Credit the flows with what the megaflows forwarded (``sync_stats``, as the agent does before it
        reads or changes counters)."""
        self.dp.sync_stats()

    def drop_counts(self) -> dict[tuple[int, str], int]:
        """Flow drops by (ingress port, DROP_REASONS name); the row after the last port is "no port"."""
        fd = self.dp.fdrops
        return {(p, DROP_REASONS[r]): int(fd[p, r]) for p in range(fd.shape[0]) for r in range(N_DROP_REASONS)
                if fd[p, r]}

    def l2_drop_counts(self) -> dict[tuple[int, int], int]:
        """NORMAL's drops by (ingress port, classifier.drops reason)."""
        d = self.dp.drops
        return {(p, r): int(d[p, r]) for p in range(d.shape[0]) for r in range(d.shape[1]) if d[p, r]}

    def expected(self, want: RefResult, now: int) -> dict[int, list[bytes]]:
        """The bytes each port must send for the model's result: its port outputs, then what NORMAL (the
        L2 reference, learning as the datapath's L2 table does) makes of the NORMAL list."""
        queues = self.l2.process(want.normal, now)
        return {p: want.outputs[p] + [egress_edit(want.normal[i][0], edit) for i, edit in queues[p]]
                for p in want.outputs}


@contextmanager
def rig(*args: Any, **kwargs: Any) -> Iterator[Rig]:
    """A ``Rig`` closed afterwards."""
    r = Rig(*args, **kwargs)
    try:
        yield r
    finally:
        r.close()


def egress_edit(frame: bytes, edit: int) -> bytes:
    """A port's egress VLAN edit (``backends.port``), written out plainly: -1 keep, 0 remove an 802.1Q
    tag, a VID: replace the VID of an 802.1Q tag (PCP and DEI kept) or push a tag with PCP 0."""
    tagged = len(frame) >= 18 and frame[12:14] == b"\x81\x00"
    if edit < 0 or (edit == 0 and not tagged):
        return frame
    if edit == 0:
        return frame[:12] + frame[16:]
    if tagged:
        tci = int.from_bytes(frame[14:16], "big") & 0xF000 | edit
        return frame[:14] + tci.to_bytes(2, "big") + frame[16:]
    return frame[:12] + struct.pack("!HH", 0x8100, edit) + frame[12:]


def polled(frames: list[tuple[bytes, int]]) -> list[tuple[bytes, int]]:
    """``frames`` in the order ``poll_once`` takes them: port by port, each port's in its order."""
    return sorted(frames, key=lambda fp: fp[1])


def pin_tuples(pins: list[PacketIn]) -> list[tuple]:
    """Packet-ins as (data, total_len, in_port, reason, table, cookie), the cookie None for a table miss."""
    return [(p.data, p.total_len, p.port_no, p.reason, p.table_id, p.flow.cookie if p.flow is not None else None)
            for p in pins]


def ref_pin_tuples(want: RefResult) -> list[tuple]:
    return [(p.frame[: p.max_len], len(p.frame), p.in_port, p.reason, p.table_id, p.cookie())
            for p in want.packet_in]


def check_burst(r: Rig, ref: RefTables, frames: list[tuple[bytes, int]], now: int) -> DpResult:
    """Run ``frames`` through the datapath and the model; everything a user sees must agree."""
    got = r.run(frames, now)
    want = ref.process(polled(frames), r.port_flags, now, QCAP, CAP)
    assert got.outputs == r.expected(want, now)
    assert pin_tuples(got.packet_ins) == ref_pin_tuples(want)
    assert r.drop_counts() == ref.drops
    assert r.l2_drop_counts() == {k: v for k, v in r.l2.drops.items() if v}
    assert r.dp.dp_drops == dict.fromkeys(r.dp.dp_drops, 0)
    return got


def check_counters(tables: FlowTables, ref: RefTables) -> None:
    got = {ident(s.flow): (s.packets, s.bytes) for s in tables.stats()}
    want = {f.ident(): (f.packets, f.bytes) for f in ref.flows}
    assert got == want
    for t, _active, lookups, matched in tables.table_stats():
        assert (lookups, matched) == (ref.lookups[t], ref.matched[t]), t


# ---------------------------------------------------------------- frames

MACS = [0x020000000001, 0x020000000002, 0x020000000003, 0xFFFFFFFFFFFF, 0x01005E000001]
IP4 = [0x0A000001, 0x0A000002, 0x0A000102, 0xC0A80001]
IP6 = [0x20010DB8 << 96 | 1, 0x20010DB8 << 96 | 2, 0xFE80 << 112 | 5]
L4PORTS = [22, 80, 443, 8080]


@st.composite
def vlan_tag(draw: st.DrawFn) -> bytes:
    tpid = draw(st.sampled_from([0x8100, 0x8100, 0x88A8]))
    tci = draw(st.integers(0, 7)) << 13 | draw(st.integers(0, 1)) << 12 | draw(st.sampled_from([0, 10, 20, 100]))
    return struct.pack("!HH", tpid, tci)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """A frame built from small pools of addresses, so flows and frames meet often."""
    out = draw(st.sampled_from(MACS)).to_bytes(6, "big") + draw(st.sampled_from(MACS)).to_bytes(6, "big")
    out += b"".join(draw(st.lists(vlan_tag(), max_size=3)))
    kind = draw(st.sampled_from(["ipv4", "ipv4", "ipv6", "arp", "other"]))
    if kind == "ipv4":
        proto = draw(st.sampled_from([6, 17, 1]))
        out += b"\x08\x00" + struct.pack("!BBHHHBBHII", 0x45, draw(st.sampled_from([0, 0xB8, 0x02])), 40, 0, 0, 64,
                                         proto, 0, draw(st.sampled_from(IP4)), draw(st.sampled_from(IP4)))
        if proto == 1:
            out += struct.pack("!BBHI", draw(st.sampled_from([0, 8])), draw(st.integers(0, 1)), 0, 0) + b"\0" * 12
        else:
            out += struct.pack("!HH", draw(st.sampled_from(L4PORTS)), draw(st.sampled_from(L4PORTS))) + b"\0" * 16
    elif kind == "ipv6":
        nh = draw(st.sampled_from([6, 17, 58]))
        out += b"\x86\xdd" + struct.pack("!IHBB", 0x60000000, 20, nh, 64)
        out += draw(st.sampled_from(IP6)).to_bytes(16, "big") + draw(st.sampled_from(IP6)).to_bytes(16, "big")
        out += struct.pack("!HH", draw(st.sampled_from(L4PORTS)), draw(st.sampled_from(L4PORTS))) + b"\0" * 16
    elif kind == "arp":
        out += b"\x08\x06" + struct.pack("!HHBBH6sI6sI", 1, 0x0800, 6, 4, draw(st.integers(1, 2)), out[6:12],
                                         draw(st.sampled_from(IP4)), b"\0" * 6, draw(st.sampled_from(IP4)))
    else:
        out += b"\x88\xb5" + b"\x55" * draw(st.integers(0, 20))
    if draw(st.integers(0, 15)) == 0:
        out = out[: draw(st.integers(0, 21))]    # runts, truncated tags, cut headers
    return out


def frame_burst(max_size: int = 24) -> st.SearchStrategy[list[tuple[bytes, int]]]:
    return st.lists(st.tuples(frames(), st.integers(0, N_PORTS - 1)), min_size=1, max_size=max_size)


# ---------------------------------------------------------------- flows

def _macs() -> st.SearchStrategy:
    return st.one_of(st.sampled_from(MACS), st.tuples(st.sampled_from(MACS),
                                                      st.sampled_from([0x010000000000, 0xFFFFFF000000])))


def _ip4() -> st.SearchStrategy:
    return st.one_of(st.sampled_from(IP4), st.tuples(st.sampled_from(IP4),
                                                     st.sampled_from([0xFFFFFF00, 0xFFFF0000, 0x00000001])))


def _ports() -> st.SearchStrategy:
    return st.one_of(st.sampled_from(L4PORTS), st.tuples(st.sampled_from(L4PORTS), st.sampled_from([0xFF00, 0x0001])))


# groups of fields; at most one field per group, so fields sharing key bits (ip_proto and arp_op, the L4
# ports and ICMP type/code) never contradict
FIELD_GROUPS = {
    "in_port": [("in_port", st.integers(0, N_PORTS - 1))],
    "eth_dst": [("eth_dst", _macs())],
    "eth_src": [("eth_src", _macs())],
    "eth_type": [("eth_type", st.sampled_from([0x0800, 0x86DD, 0x0806, 0x88B5, 0x8100]))],
    "vlan_vid": [("vlan_vid", st.sampled_from([0x1000 | 10, 0x1000 | 20, 0x1000 | 100, 0, (0x1000, 0x1000),
                                               (10, 0x0FFF), 0x1000]))],
    "vlan_pcp": [("vlan_pcp", st.integers(0, 7))],
    "nw_proto": [("ip_proto", st.sampled_from([6, 17, 1, 58])), ("arp_op", st.integers(1, 2))],
    "tos": [("ip_dscp", st.sampled_from([0, 46])), ("ip_ecn", st.integers(0, 3))],
    "nw_src": [("ipv4_src", _ip4()), ("arp_spa", _ip4())],
    "nw_dst": [("ipv4_dst", _ip4()), ("arp_tpa", _ip4())],
    "ipv6": [("ipv6_dst", st.one_of(st.sampled_from(IP6), st.tuples(st.sampled_from(IP6),
                                                                     st.just((1 << 128) - (1 << 64))))),
             ("ipv6_src", st.sampled_from(IP6))],
    "tp_src": [("tcp_src", _ports()), ("udp_src", _ports()), ("icmpv4_type", st.sampled_from([0, 8]))],
    "tp_dst": [("tcp_dst", _ports()), ("udp_dst", _ports()), ("icmpv4_code", st.integers(0, 1))],
    "arp_ha": [("arp_sha", _macs()), ("arp_tha", st.just(0))],
}

#: what a controller must add for a field (OpenFlow prerequisites); a choice where there are several
PREREQUISITES: dict[str, list[dict[str, int | tuple[int, int]]]] = {
    "vlan_pcp": [{"vlan_vid": (0x1000, 0x1000)}],
    "ip_proto": [{"eth_type": 0x0800}, {"eth_type": 0x86DD}],
    "ip_dscp": [{"eth_type": 0x0800}, {"eth_type": 0x86DD}],
    "ip_ecn": [{"eth_type": 0x0800}, {"eth_type": 0x86DD}],
    "ipv4_src": [{"eth_type": 0x0800}], "ipv4_dst": [{"eth_type": 0x0800}],
    "ipv6_src": [{"eth_type": 0x86DD}], "ipv6_dst": [{"eth_type": 0x86DD}],
    "arp_op": [{"eth_type": 0x0806}], "arp_spa": [{"eth_type": 0x0806}], "arp_tpa": [{"eth_type": 0x0806}],
    "arp_sha": [{"eth_type": 0x0806}], "arp_tha": [{"eth_type": 0x0806}],
    "tcp_src": [{"ip_proto": 6, "eth_type": 0x0800}, {"ip_proto": 6, "eth_type": 0x86DD}],
    "tcp_dst": [{"ip_proto": 6, "eth_type": 0x0800}, {"ip_proto": 6, "eth_type": 0x86DD}],
    "udp_src": [{"ip_proto": 17, "eth_type": 0x0800}, {"ip_proto": 17, "eth_type": 0x86DD}],
    "udp_dst": [{"ip_proto": 17, "eth_type": 0x0800}, {"ip_proto": 17, "eth_type": 0x86DD}],
    "icmpv4_type": [{"ip_proto": 1, "eth_type": 0x0800}], "icmpv4_code": [{"ip_proto": 1, "eth_type": 0x0800}],
}


@st.composite
def matches(draw: st.DrawFn, max_fields: int = 3) -> Match:
    """A match of up to ``max_fields`` drawn fields, usually with their prerequisites (the datapath and the
    model read the same key bits either way: a match without them is only less realistic)."""
    size = draw(st.sampled_from([0, 1, 1, 2, 2, 3][: max_fields * 2]))
    groups = draw(st.lists(st.sampled_from(sorted(FIELD_GROUPS)), min_size=size, max_size=size, unique=True))
    fields: dict[str, int | tuple[int, int]] = {}
    for g in groups:
        name, strat = draw(st.sampled_from(FIELD_GROUPS[g]))
        fields[name] = draw(strat)
    if draw(st.integers(0, 3)):
        for name in list(fields):
            for k, v in draw(st.sampled_from(PREREQUISITES.get(name, [{}]))).items():
                fields.setdefault(k, v)
    try:
        return Match(**fields)
    except FlowError:   # a prerequisite contradicts a drawn field on the same bits (ip_proto vs arp_op)
        return Match()


OUT_PORTS = [0, 1, 2, 3, 7, OFPP_FLOOD, OFPP_ALL, OFPP_IN_PORT, OFPP_NORMAL, OFPP_LOCAL, OFPP_TABLE]
actions = st.one_of(
    st.builds(Output, st.sampled_from(OUT_PORTS)),
    st.builds(Output, st.just(OFPP_CONTROLLER), st.sampled_from([0xFFFF, 64, 0])),
    st.builds(PushVlan, st.sampled_from([0x8100, 0x8100, 0x88A8])),
    st.just(PopVlan()),
    st.builds(SetField, st.sampled_from(["eth_dst", "eth_src"]), st.sampled_from(MACS[:3])),
    st.builds(SetField, st.just("vlan_vid"), st.sampled_from([10, 20, 0x1000 | 30, 0])),
    st.builds(SetField, st.just("vlan_pcp"), st.integers(0, 7)),
    st.builds(ModVlanVid, st.sampled_from([10, 30, 0])),
)


@st.composite
def instructions(draw: st.DrawFn, table: int, last_table: int = 3) -> Instructions:
    if draw(st.integers(0, 2)) == 0:   # the common flow: one output
        return Instructions(apply=(draw(st.builds(Output, st.sampled_from([0, 1, 2, 3, 7, OFPP_NORMAL]))),))
    goto = None
    if table < last_table and draw(st.booleans()):
        goto = draw(st.integers(table + 1, last_table))
    return Instructions(apply=tuple(draw(st.lists(actions, max_size=4))), clear=draw(st.integers(0, 3)) == 0,
                        write=tuple(draw(st.lists(actions, max_size=2))), goto=goto)


@st.composite
def flows(draw: st.DrawFn) -> Flow:
    table = draw(st.sampled_from([0, 0, 1, 2, 3]))
    return Flow(table_id=table, priority=draw(st.sampled_from([0, 1, 10, 10, 100, 0x8000])),
                match=draw(matches()), instructions=draw(instructions(table)),
                cookie=draw(st.sampled_from([0, 1, 2, 0x100, 2**63 + 5])),
                flags=draw(st.sampled_from([0, 0, 0, OFPFF_RESET_COUNTS, OFPFF_CHECK_OVERLAP])))


@st.composite
def flow_sets(draw: st.DrawFn, max_size: int = 25) -> list[Flow]:
    """Flows; in half of the sets tables 0 to 3 also have a table-miss flow, so most frames go somewhere."""
    out = draw(st.lists(flows(), max_size=max_size))
    if draw(st.booleans()):
        out += [Flow(t, 0, Match(), draw(instructions(t))) for t in range(4)]
    return out


@st.composite
def flow_mods(draw: st.DrawFn) -> tuple:
    kind = draw(st.sampled_from(["add", "add", "modify", "delete"]))
    if kind == "add":
        return ("add", draw(flows()))
    strict = draw(st.booleans())
    cookie_mask = draw(st.sampled_from([0, 0, 0xFF, 2**64 - 1]))
    cookie = draw(st.sampled_from([0, 1, 2, 0x100]))
    priority = draw(st.sampled_from([0, 1, 10, 100, 0x8000]))
    match = draw(matches(max_fields=2))
    if kind == "modify":
        table = draw(st.integers(0, 3))
        return ("modify", table, match, priority, strict, cookie, cookie_mask, draw(instructions(table)),
                draw(st.booleans()))
    out_port = draw(st.sampled_from([OFPP_ANY, OFPP_ANY, 1, 2, OFPP_NORMAL, OFPP_CONTROLLER]))
    return ("delete", draw(st.sampled_from([OFPTT_ALL, 0, 1, 3])), match, priority, strict, out_port, cookie,
            cookie_mask)


@st.composite
def related_match(draw: st.DrawFn, match: Match) -> Match:
    """A match near ``match``: fields dropped, masks shortened or lengthened, a field added."""
    fields: dict[str, tuple[int, int]] = {}
    for name, value, mask in match.fields:
        if draw(st.integers(0, 3)) == 0:
            continue
        full = (1 << MATCH_FIELDS[name][0]) - 1
        how = draw(st.sampled_from(["keep", "shorter", "longer"]))
        if how == "shorter":
            mask &= (full << draw(st.sampled_from([1, 8, 16]))) & full
        elif how == "longer":
            extra = full & ~mask & draw(st.sampled_from([1, 0xFF, 0xFF00, full]))
            value |= extra & draw(st.sampled_from([0, full, draw(st.integers(0, full))]))
            mask |= extra
        if mask:
            fields[name] = (value & mask, mask)
    if draw(st.integers(0, 4)) == 0:
        for name, value, mask in draw(matches(max_fields=1)).fields:
            fields.setdefault(name, (value, mask))
    try:
        return Match(**fields)
    except FlowError:   # an added field contradicts a kept one
        return match


def draw_mod(data: st.DataObject, tables: FlowTables) -> tuple:
    """A flow-mod; half of them aimed at an installed flow (same table, priority, a related or equal match)."""
    existing = sorted(tables.flows(), key=lambda f: f.serial)
    if not existing or data.draw(st.booleans()):
        return data.draw(flow_mods())
    f = data.draw(st.sampled_from(existing))
    kind = data.draw(st.sampled_from(["add", "modify", "delete"]))
    match = f.match if data.draw(st.booleans()) else data.draw(related_match(f.match))
    if kind == "add":
        return ("add", Flow(f.table_id, f.priority, match, data.draw(instructions(f.table_id)), f.cookie,
                            flags=data.draw(st.sampled_from([0, OFPFF_RESET_COUNTS, OFPFF_CHECK_OVERLAP]))))
    strict = data.draw(st.booleans())
    cookie_mask = data.draw(st.sampled_from([0, 0xFF, 2**64 - 1]))
    cookie = f.cookie if data.draw(st.booleans()) else data.draw(st.sampled_from([0, 1]))
    if kind == "modify":
        return ("modify", f.table_id, match, f.priority, strict, cookie, cookie_mask,
                data.draw(instructions(f.table_id)), data.draw(st.booleans()))
    out_port = data.draw(st.sampled_from([OFPP_ANY, OFPP_ANY, 1, OFPP_NORMAL]))
    return ("delete", data.draw(st.sampled_from([f.table_id, OFPTT_ALL])), match, f.priority, strict, out_port,
            cookie, cookie_mask)


def ident(f: Flow) -> tuple[int, int, Match]:
    return f.table_id, f.priority, f.match


def apply_mod(tables: FlowTables, ref: RefTables, op: tuple, now: int, r: Rig | None = None) -> None:
    """Run one flow-mod on both sides; they must select the same flows (or both refuse). With a rig, the
    datapath's megaflow statistics are credited first where the flow-mod reads counters (delete, modify
    with reset_counts), as the agent must."""
    kind = op[0]
    if kind == "add":
        try:
            tables.add(op[1], now)
        except FlowError as e:
            with pytest.raises(FlowError):
                ref.add(op[1], now)
            assert e.code == "overlap"
            return
        ref.add(op[1], now)
    elif kind == "modify":
        _, table, match, prio, strict, cookie, cmask, ins, reset = op
        if r is not None and reset:
            r.sync()
        got = tables.modify(table, match, prio, strict, cookie, cmask, ins, reset)
        want = ref.modify(table, match, prio, strict, cookie, cmask, ins, reset)
        assert sorted(map(ident, got), key=repr) == sorted((f.ident() for f in want), key=repr)
    else:
        _, table, match, prio, strict, out_port, cookie, cmask = op
        if r is not None:
            r.sync()
        got = tables.delete(table, match, prio, strict, out_port, cookie, cmask, now)
        want = ref.delete(table, match, prio, strict, out_port, cookie, cmask)
        assert sorted(((ident(s.flow), s.packets, s.bytes) for s in got), key=repr) == sorted(
            ((f.ident(), f.packets, f.bytes) for f in want), key=repr)


def table_contents(tables: FlowTables) -> set:
    return {(ident(f), f.instructions, f.cookie) for f in tables.flows()}


def ref_contents(ref: RefTables) -> set:
    return {(f.ident(), f.instructions, f.cookie) for f in ref.flows}


port_flag_sets = st.lists(st.sampled_from([0, 0, 0, PF_NO_FLOOD, PF_DOWN, PF_LOCAL]), min_size=N_PORTS,
                          max_size=N_PORTS)


# ---------------------------------------------------------------- differential tests

@settings(SETTINGS, max_examples=300)
@given(st.lists(flows(), max_size=40), frame_burst(30), st.data())
def test_lookup_and_its_mask_match_reference(flow_list: list[Flow], burst_frames: list, data: st.DataObject) -> None:
    """Every table's staged lookup finds the flow the linear scan finds, and the mask it widens is right:
    any key that agrees with the looked-up key on the mask finds the same flow."""
    tables, ref = FlowTables(N_TABLES), RefTables(N_TABLES)
    for f in flow_list:
        apply_mod(tables, ref, ("add", f), 0)
    ts = tables.compile()
    keys = []
    for frame, port in burst_frames:
        key, reason = extract(frame, port)
        if not reason:
            keys.append([int(w) for w in key])
    for t in range(N_TABLES):
        index: TableIndex = ts.index[t]
        for key in keys:
            wc = [0] * K.KEY_WORDS
            rank = index.lookup(key, wc)
            want = ref.lookup(t, key)
            assert (ident(ts.flows[rank]) if rank >= 0 else None) == (want.ident() if want else None)
            other = data.draw(st.sampled_from(keys))
            mixed = [(k & m) | (o & ~m) for k, o, m in zip(key, other, wc, strict=True)]
            again = ref.lookup(t, mixed)
            assert (again.ident() if again else None) == (want.ident() if want else None), (t, wc)


PORT_MAPS: list[dict[int, int] | None] = [None, None, {1: 0, 2: 1, 3: 2, 4: 3}, {3: 0, 0: 1, 1: 2, 2: 3}]


def pipeline_matches_reference(flow_list: list[Flow], first_burst: list, n_rounds: int, port_flags: list[int],
                               max_flows: int, data: st.DataObject) -> None:
    """Outputs (NORMAL's too), packet-ins, drops and counters agree, burst after burst, across flow-mods,
    ports going down and up, the miss policy changing: the same frames often come back after a change (a
    stale megaflow would show), and every burst runs two or three times (megaflow hits, then EMC hits);
    megaflows idle for 2 s expire now and then. OpenFlow port numbers are the datapath's or not."""
    port_map = data.draw(st.sampled_from(PORT_MAPS))
    ref = RefTables(N_TABLES, port_map)
    now = 10
    with rig(port_flags, max_flows=max_flows, port_map=port_map, max_idle=2) as r:
        for f in flow_list:
            apply_mod(r.tables, ref, ("add", f), now, r)
        for rnd in range(n_rounds):
            if rnd:
                for _ in range(data.draw(st.integers(0, 4))):
                    apply_mod(r.tables, ref, draw_mod(data, r.tables), now, r)
                if data.draw(st.integers(0, 3)) == 0:
                    port = data.draw(st.integers(0, N_PORTS - 1))
                    r.set_down(port, not r.port_flags[port] & PF_DOWN)
            r.miss_max_len = ref.miss_max_len = data.draw(st.sampled_from([0, 0, 0, 0xFFFF, 20]))
            burst_frames = first_burst if rnd == 0 or data.draw(st.booleans()) else data.draw(frame_burst())
            assert table_contents(r.tables) == ref_contents(ref)
            r.update()
            for _ in range(data.draw(st.integers(2, 3))):
                check_burst(r, ref, burst_frames, now)
                if data.draw(st.booleans()):
                    r.sync()
                    check_counters(r.tables, ref)
            now += data.draw(st.sampled_from([1, 1, 3]))
            if data.draw(st.booleans()):
                r.now = now
                r.dp.upcalls.expire(r.dp.flows, now)
                r.dp.upcalls.cache.resort()
        r.sync()
        check_counters(r.tables, ref)


@settings(SETTINGS, max_examples=600)
@given(flow_sets(), frame_burst(), st.integers(1, 4), port_flag_sets, st.data())
def test_pipeline_matches_reference(flow_list: list[Flow], first_burst: list, n_rounds: int, port_flags: list[int],
                                    data: st.DataObject) -> None:
    """The pipeline with a megaflow cache that never fills."""
    pipeline_matches_reference(flow_list, first_burst, n_rounds, port_flags, 1024, data)


@settings(SETTINGS, max_examples=40)
@given(flow_sets(), frame_burst(), st.integers(1, 4), port_flag_sets, st.data())
def test_pipeline_matches_reference_small_cache(flow_list: list[Flow], first_burst: list, n_rounds: int,
                                                port_flags: list[int], data: st.DataObject) -> None:
    """The pipeline with a cache of 4 megaflows: translations that do not fit run uninstalled (their rules
    credited at once), and the expiry between bursts trims the cache."""
    pipeline_matches_reference(flow_list, first_burst, n_rounds, port_flags, 4, data)


@settings(SETTINGS, max_examples=300)
@given(st.lists(flows(), max_size=25), st.integers(1, 12), st.data())
def test_flow_mods_match_reference(flow_list: list[Flow], n_mods: int, data: st.DataObject) -> None:
    """add / modify / delete (strict and not, cookies, out_port) select and leave the same flows;
    flow stats and aggregates select the same flows."""
    tables, ref = FlowTables(N_TABLES), RefTables(N_TABLES)
    for f in flow_list:
        apply_mod(tables, ref, ("add", f), 0)
    for _ in range(n_mods):
        op = draw_mod(data, tables)
        apply_mod(tables, ref, op, 0)
        assert table_contents(tables) == ref_contents(ref)
        if op[0] != "add":
            match = op[2]
            op_cookie = (op[5], op[6]) if op[0] == "modify" else (op[6], op[7])
            for cookie, cmask in (op_cookie, (0, 0)):
                got = sorted((ident(s.flow) for s in tables.stats(OFPTT_ALL, match, OFPP_ANY, cookie, cmask)),
                             key=repr)
                want = sorted((f.ident() for f in ref.select(OFPTT_ALL, match, 0, False, OFPP_ANY, cookie, cmask)),
                              key=repr)
                assert got == want
                assert tables.aggregate(OFPTT_ALL, match, OFPP_ANY, cookie, cmask)[2] == len(want)


@settings(SETTINGS, max_examples=200)
@given(st.lists(st.tuples(flows(), st.sampled_from([0, 2, 5]), st.sampled_from([0, 3, 7])), min_size=1, max_size=15),
       st.lists(st.tuples(st.integers(1, 3), frame_burst(10)), min_size=1, max_size=5))
def test_timeouts_match_reference(flow_specs: list, steps: list) -> None:
    """Idle timeouts follow the last frame a flow forwarded (through its megaflows), hard timeouts the
    installation time; the flows left forward as the model's do."""
    ref = RefTables(N_TABLES)
    now = 100
    with rig() as r:
        for f, idle, hard in flow_specs:
            f.idle_timeout, f.hard_timeout = idle, hard
            apply_mod(r.tables, ref, ("add", f), now, r)
        r.update()
        for dt, burst_frames in steps:
            check_burst(r, ref, burst_frames, now)
            now += dt
            r.now = now
            r.sync()
            got = sorted(((ident(s.flow), reason) for s, reason in r.tables.expire(now)), key=repr)
            want = sorted(((f.ident(), reason) for f, reason in ref.expire(now)), key=repr)
            assert got == want
            r.update()
            check_counters(r.tables, ref)


def valid_frames() -> st.SearchStrategy[bytes]:
    """Frames extraction accepts (what a controller's packet-out carries)."""
    return frames().filter(lambda f: extract(f, 0)[1] == 0)


#: a packet-out's actions: output:TABLE alone (``BridgeFlows.packet_out`` refuses it with other actions), or others
packet_out_actions = st.one_of(st.just((Output(OFPP_TABLE),)), st.lists(
    actions.filter(lambda a: not (isinstance(a, Output) and a.port == OFPP_TABLE)), min_size=1, max_size=4).map(tuple))


@settings(SETTINGS, max_examples=300)
@given(flow_sets(12), st.lists(st.tuples(valid_frames(), st.sampled_from([None, 0, 1, 2, 3]), packet_out_actions),
                               min_size=1, max_size=6),
       port_flag_sets)
def test_packet_out_matches_reference(flow_list: list[Flow], outs: list, port_flags: list[int]) -> None:
    """Packet-outs (``Datapath.packet_out``: ``translate_actions``, then the executor): the actions alone,
    or output:TABLE alone (the tables from table 0), from a port or from the controller (no port: no output
    to the input port, NORMAL refused and counted)."""
    ref = RefTables(N_TABLES)
    with rig(port_flags) as r:
        for f in flow_list:
            apply_mod(r.tables, ref, ("add", f), 0)
        r.update()
        refused_normal = 0
        for frame, port, acts in outs:
            for p in r.ports:
                p.sent = []
            r.dp.packet_out(frame, -1 if port is None else port, acts, r.dp.flows)
            want = ref.packet_out(frame, port, acts, r.port_flags, 0, QCAP, CAP)
            pins = list(r.dp.packet_ins)
            r.dp.packet_ins.clear()
            if port is None:
                refused_normal += len(want.normal)
                want.normal = []
            assert {p: c.sent for p, c in enumerate(r.ports)} == r.expected(want, 0)
            assert pin_tuples(pins) == ref_pin_tuples(want)
            assert r.drop_counts() == ref.drops
            assert r.dp.dp_drops["packet_out_normal_without_in_port"] == refused_normal
            assert r.dp.pool.free_count == r.dp.pool.n_slots


# ---------------------------------------------------------------- cases a user would notice

def tcp_frame(dst: int = 0x020000000002, src: int = 0x020000000001, vid: int | None = None, pcp: int = 0,
              tpid: int = 0x8100, dei: int = 0) -> bytes:
    tag = struct.pack("!HH", tpid, pcp << 13 | dei << 12 | vid) if vid is not None else b""
    return (dst.to_bytes(6, "big") + src.to_bytes(6, "big") + tag + b"\x08\x00"
            + bytes.fromhex("45000028000040004006" "0000" "0a000001" "0a000002" "3039" "0050") + b"\0" * 16)


@contextmanager
def flows_on(*flow_list: Flow, port_flags: list[int] | None = None, **kwargs: Any) -> Iterator[Rig]:
    """A ``Rig`` whose datapath has ``flow_list`` (compiled, live), closed afterwards."""
    with rig(port_flags, **kwargs) as r:
        for f in flow_list:
            r.tables.add(f)
        r.update()
        yield r


def packets_by_priority(r: Rig) -> dict[int, int]:
    r.sync()
    return {s.flow.priority: s.packets for s in r.tables.stats()}


def test_specific_flow_beats_normal_table_miss() -> None:
    """A port-and-VLAN flow takes its frames; every other frame goes to NORMAL, which floods it (nothing
    learned yet) and then forwards to the learned port; counters follow."""
    with flows_on(Flow(0, 0, Match(), Instructions(apply=(Output(OFPP_NORMAL),))),
                  Flow(0, 100, Match(in_port=1, vlan_vid=0x1000 | 10), Instructions(apply=(Output(3),)))) as r:
        f = tcp_frame(vid=10)
        back = tcp_frame(dst=0x020000000001, src=0x020000000002)
        got = r.run([(f, 1), (f, 2), (tcp_frame(), 1)], now=1)   # polled port by port: f and tcp from 1, f from 2
        assert got.outputs == {0: [tcp_frame(), f], 1: [f], 2: [tcp_frame()], 3: [f, tcp_frame(), f]}
        got = r.run([(back, 3)], now=1)     # 02:..:01 was learned on port 1 (VLAN 0)
        assert got.outputs == {0: [], 1: [back], 2: [], 3: []}
        assert packets_by_priority(r) == {100: 1, 0: 3}


def test_set_eth_dst_on_flooded_frame_leaves_other_copies_intact() -> None:
    """An edit after an output works on a copy: the ports that got the frame before see it unchanged."""
    new_dst = 0x02000000BEEF
    with flows_on(Flow(0, 10, Match(), Instructions(apply=(Output(OFPP_FLOOD), SetField("eth_dst", new_dst),
                                                           Output(2))))) as r:
        f = tcp_frame()
        for _ in range(3):   # translation, megaflow, EMC
            got = r.run([(f, 0), (f, 0)], now=1)
            new = tcp_frame(dst=new_dst)
            assert got.outputs == {0: [], 1: [f, f], 2: [f, new, f, new], 3: [f, f]}


def test_no_free_slot_is_counted() -> None:
    """An edit after an output needs a fresh slot; with none free the rest of the program is dropped and
    counted (``pool_empty``) and the output made before it still leaves."""
    with flows_on(Flow(0, 10, Match(), Instructions(apply=(Output(1), SetField("eth_dst", 0x0200000000AA),
                                                           Output(2))))) as r:
        pool = r.dp.pool
        hold = np.zeros(pool.n_slots, dtype=np.int32)
        held = pool.alloc(hold, 0, pool.free_count - 1)    # one slot left: the frame's own
        try:
            got = r.run([(tcp_frame(), 0)], now=1)
        finally:
            pool.free(hold, held)
        assert got.outputs[1] == [tcp_frame()] and got.outputs[2] == []
        assert r.drop_counts() == {(0, "pool_empty"): 1}
        assert r.run([(tcp_frame(), 0)], now=1).outputs[2] == [tcp_frame(dst=0x0200000000AA)]


def test_table_miss_no_output_and_controller() -> None:
    with flows_on(
        Flow(0, 5, Match(eth_type=0x0800), Instructions(goto=1)),
        Flow(1, 0, Match(), Instructions(apply=(Output(OFPP_CONTROLLER, 128),)), cookie=0x77),
        Flow(1, 7, Match(eth_type=0x0800, ip_proto=6, tcp_dst=80), Instructions(apply=(Output(OFPP_CONTROLLER),)),
             cookie=0x80),
        Flow(0, 5, Match(eth_type=0x0806), Instructions()),
    ) as r:
        arp = tcp_frame()[:12] + b"\x08\x06" + bytes(28)
        other = tcp_frame()[:12] + b"\x88\xb5" + bytes(40)
        tcp81 = tcp_frame()[:36] + b"\x00\x51" + tcp_frame()[38:]
        got = r.run([(tcp_frame(), 0), (tcp81, 0), (arp, 1), (other, 2)], now=1)
        assert pin_tuples(got.packet_ins) == [(tcp_frame(), 54, 0, OFPR_ACTION, 1, 0x80),
                                              (tcp81, 54, 0, OFPR_NO_MATCH, 1, 0x77)]
        assert r.drop_counts() == {(1, "no_output"): 1, (2, "table_miss"): 1}


def test_controller_queue_full() -> None:
    """A burst's packet-in list holds 2 * MAX_BURST frames: a flow sending each of 1,024 frames to the
    controllers three times fills it; every packet-in that did not fit is counted by ingress port, and
    the agent's queue (``PACKET_IN_QUEUE``) takes what it has room for."""
    with flows_on(Flow(0, 0, Match(), Instructions(apply=(Output(OFPP_CONTROLLER),) * 3))) as r:
        burst = [(tcp_frame(src=0x020000000100 + i), i % N_PORTS) for i in range(MAX_BURST)]
        got = r.run(burst, now=1)
        assert len(got.packet_ins) == 1024
        assert r.dp.dp_drops["packet_in_queue_full"] == CAP - 1024
        fd = r.dp.fdrops[:, DROP_REASONS.index("controller_queue_full")]
        assert int(fd.sum()) == 3 * MAX_BURST - CAP
        assert r.drop_counts().get((0, "no_output"), 0) == 0
        # the first frames of the burst (port 0's, polled first) made the packet-ins the agent got
        assert [p.data for p in got.packet_ins[:3]] == [tcp_frame(src=0x020000000100)] * 3


def test_counters_carry_over_by_flow_identity() -> None:
    """Replacing a flow (same table, priority, match) keeps its counters; OFPFF_RESET_COUNTS clears them;
    a recompile for another flow loses nothing."""
    with flows_on(Flow(0, 10, Match(in_port=0), Instructions(apply=(Output(1),)))) as r:
        tables = r.tables
        r.run([(tcp_frame(), 0)] * 3, now=5)
        tables.add(Flow(0, 20, Match(in_port=2), Instructions(apply=(Output(1),))))   # another flow
        r.update()
        tables.add(Flow(0, 10, Match(in_port=0), Instructions(apply=(Output(2),))))   # replace: counters kept
        r.update()
        assert r.run([(tcp_frame(), 0)], now=6).outputs[2] == [tcp_frame()]
        r.sync()
        assert [(s.packets, s.bytes, s.flow.instructions.apply) for s in tables.stats(match=Match(in_port=0))] == [
            (4, 4 * 54, (Output(2),))]
        tables.add(Flow(0, 10, Match(in_port=0), Instructions(apply=(Output(2),)), flags=OFPFF_RESET_COUNTS))
        r.update()
        r.sync()
        assert tables.aggregate(match=Match(in_port=0)) == (0, 0, 1)


def test_bad_goto_and_overlap_are_refused() -> None:
    tables = FlowTables(8)
    with pytest.raises(FlowError):
        tables.add(Flow(2, 1, Match(), Instructions(goto=2)))
    with pytest.raises(FlowError):
        tables.add(Flow(8, 1, Match()))
    tables.add(Flow(0, 5, Match(tcp_dst=80)))
    with pytest.raises(FlowError):
        tables.add(Flow(0, 5, Match(ip_proto=6), flags=OFPFF_CHECK_OVERLAP))
    with pytest.raises(FlowError):
        Match(tcp_dst=80, udp_dst=81)
    assert len(tables) == 1


def test_normal_after_an_edit_forwards_the_edited_frame() -> None:
    """NORMAL gets the frame as the actions left it, after the outputs made before (each from its own
    copy): frame 0 floods by NORMAL from port 0; frame 1 goes to port 0 unmodified, then NORMAL floods
    its rewritten copy from port 3 and learns the new source there."""
    with flows_on(
        Flow(0, 0, Match(), Instructions(apply=(Output(OFPP_NORMAL),))),
        Flow(0, 9, Match(in_port=3), Instructions(apply=(Output(0), SetField("eth_src", 0x020000000077),
                                                         Output(OFPP_NORMAL)))),
    ) as r:
        modified = tcp_frame(src=0x020000000077)
        got = r.run([(tcp_frame(), 0), (tcp_frame(), 3)], now=1)
        assert got.outputs == {0: [tcp_frame(), modified], 1: [tcp_frame(), modified], 2: [tcp_frame(), modified],
                               3: [tcp_frame()]}
        to_77 = tcp_frame(dst=0x020000000077, src=0x020000000005)
        assert r.run([(to_77, 1)], now=2).outputs == {0: [], 1: [], 2: [], 3: [to_77]}


def test_untagged_and_priority_tagged_frames_take_different_megaflows() -> None:
    """``set_field vlan_vid`` does nothing on an untagged frame: an untagged frame and a VID-0 tagged one
    that no match tells apart must not share a megaflow (the mask holds the tag-present bit)."""
    with flows_on(Flow(0, 1, Match(), Instructions(apply=(SetField("vlan_vid", 5),), goto=1)),
                  Flow(1, 10, Match(vlan_vid=(5, 0x0FFF)), Instructions(apply=(Output(1),))),
                  Flow(1, 0, Match(), Instructions(apply=(Output(2),)))) as r:
        for _ in range(3):
            got = r.run([(tcp_frame(), 0), (tcp_frame(vid=0), 0), (tcp_frame(), 0)], now=1)
            assert got.outputs[2] == [tcp_frame(), tcp_frame()] and got.outputs[1] == [tcp_frame(vid=5)]
        assert len(r.dp.upcalls.cache) == 2


def test_second_and_third_runs_hit_megaflows_and_the_emc() -> None:
    """What the differential tests rely on: a burst run again is answered by its megaflows (no new
    translation), and after that by the EMC."""
    with flows_on(Flow(0, 5, Match(eth_type=0x0800, ipv4_dst=(0x0A000000, 0xFFFFFF00)),
                       Instructions(apply=(Output(1),))),
                  Flow(0, 0, Match(), Instructions(apply=(Output(2),)))) as r:
        burst = [(tcp_frame(src=0x020000000100 + i), 0) for i in range(8)]
        up = r.dp.upcalls
        r.run(burst, now=1)
        assert up.counters["translations"] == 1
        st_ = up.cache.st
        mf, emc = int(st_[H_MF_HITS]), int(st_[H_EMC_HITS])
        assert r.run(burst, now=1).outputs[1] == [f for f, _ in burst]
        assert up.counters["translations"] == 1
        assert int(st_[H_MF_HITS]) + int(st_[H_EMC_HITS]) == mf + emc + 8
        emc = int(st_[H_EMC_HITS])
        r.run(burst, now=1)
        assert int(st_[H_EMC_HITS]) == emc + 8


QINQ = (0x020000000002).to_bytes(6, "big") + (0x020000000001).to_bytes(6, "big") + bytes.fromhex(
    "8100a00a" "8100301e" "0800") + tcp_frame()[14:]
TRIPLE = QINQ[:12] + bytes.fromhex("88a8e064") + QINQ[12:]
SEQUENCES: dict[str, tuple[bytes, list]] = {
    "push, pcp, vid on untagged": (tcp_frame(), [(0, [PushVlan(), SetField("vlan_pcp", 5), SetField("vlan_vid", 7),
                                                      Output(1)], None)]),
    "pop, output, push on two known tags": (QINQ, [(0, [PopVlan(), SetField("eth_dst", 0x02000000000A), Output(1),
                                                        PushVlan(), SetField("vlan_vid", 9), Output(2)], None)]),
    "push on two known tags does nothing": (QINQ, [(0, [PushVlan(), SetField("vlan_vid", 9), Output(1)], None)]),
    "pop twice leaves the third tag": (TRIPLE, [(0, [PopVlan(), Output(1), PopVlan(), Output(2), PopVlan(),
                                                     Output(3)], None)]),
    "802.1ad outer tag is known": (tcp_frame(vid=10, tpid=0x88A8, pcp=4), [(0, [SetField("vlan_vid", 11), Output(1),
                                                                                PopVlan(), Output(2)], None)]),
    "push without vid is a VID-0 tag": (tcp_frame(), [(0, [PushVlan(), Output(1)], None)]),
    "push 802.1ad": (tcp_frame(vid=10), [(0, [PushVlan(0x88A8), Output(1), PopVlan(), Output(2)], None)]),
    "two pushes, two pops": (tcp_frame(vid=10, pcp=2), [(0, [PushVlan(), SetField("vlan_vid", 99), Output(1),
                                                             PopVlan(), Output(2), PopVlan(), Output(3)], None)]),
    "pcp change": (tcp_frame(vid=10), [(0, [SetField("vlan_pcp", 3), Output(1), SetField("vlan_pcp", 0),
                                            Output(2)], None)]),
    "set the same vid": (tcp_frame(vid=10), [(0, [SetField("vlan_vid", 10), Output(1)], None)]),
    "vlan actions on untagged do nothing": (tcp_frame(), [(0, [PopVlan(), SetField("vlan_vid", 5), Output(1)], None)]),
    "third push does nothing": (tcp_frame(vid=3), [(0, [PushVlan(), PushVlan(), Output(1)], None)]),
    "action set across tables": (tcp_frame(), [(0, [], ([PushVlan(), SetField("vlan_pcp", 6)], 1)),
                                               (1, [], ([SetField("vlan_vid", 12), Output(3)], None))]),
    "controller after pop": (tcp_frame(vid=10), [(0, [PopVlan(), Output(OFPP_CONTROLLER), Output(1)], None)]),
    "normal after push": (tcp_frame(), [(0, [PushVlan(), SetField("vlan_vid", 4), Output(OFPP_NORMAL)], None)]),
    "later table sees the rewrite": (tcp_frame(vid=10), [(0, [SetField("vlan_vid", 20)], ([], 1)),
                                                         (1, [Output(2)], None)]),
    "action set pops before it pushes": (tcp_frame(vid=10), [(0, [], ([PushVlan(), PopVlan(), Output(1)], None))]),
    "action set sets after it pushes": (tcp_frame(), [(0, [], ([SetField("vlan_vid", 7), PushVlan(), Output(1)],
                                                               None))]),
    "mod_vlan_vid on untagged": (tcp_frame(), [(0, [ModVlanVid(10), Output(1)], None)]),
    "mod_vlan_vid keeps the pcp": (tcp_frame(vid=20, pcp=5), [(0, [ModVlanVid(10), Output(1)], None)]),
    "pushed tag copies vid and pcp, not DEI": (tcp_frame(vid=10, pcp=3, dei=1), [(0, [PushVlan(), Output(1)], None)]),
    "DEI kept when the tag is left alone": (tcp_frame(vid=10, dei=1), [(0, [SetField("eth_src", 0x020000000009),
                                                                            Output(1)], None)]),
    "DEI kept by pop and push of the same tag": (tcp_frame(vid=10, dei=1), [(0, [PopVlan(), PushVlan(),
                                                                                 SetField("vlan_vid", 10),
                                                                                 Output(1)], None)]),
}
for _port in (2, 0, 9, OFPP_NORMAL, OFPP_FLOOD, OFPP_ALL, OFPP_IN_PORT, OFPP_LOCAL, OFPP_CONTROLLER, OFPP_TABLE):
    SEQUENCES[f"one output to {_port:#x}"] = (tcp_frame(), [(0, [Output(_port)], None)])


@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_vlan_sequences_match_reference(name: str) -> None:
    frame, specs = SEQUENCES[name]
    ref = RefTables(N_TABLES)
    port_flags = [0, PF_NO_FLOOD, 0, PF_LOCAL]
    with rig(port_flags) as r:
        for table, apply, rest in specs:
            write, goto = rest if rest else ([], None)
            flow = Flow(table, 5, Match(), Instructions(apply=tuple(apply), write=tuple(write), goto=goto))
            if table == 1 and name == "later table sees the rewrite":
                flow = Flow(1, 5, Match(vlan_vid=0x1000 | 20), flow.instructions)
            apply_mod(r.tables, ref, ("add", flow), 0)
        r.update()
        for _ in range(3):   # translated, then from the megaflow, then from the EMC
            got = check_burst(r, ref, [(frame, 0)], 1)
            assert any(got.outputs.values()) or got.packet_ins or r.drop_counts()
        r.sync()
        check_counters(r.tables, ref)


def test_non_strict_selection_takes_only_more_specific_flows() -> None:
    """A /24 request covers a /32 flow and the /24 flow itself, never a /16 one nor a flow without the field."""
    tables = FlowTables()
    for prefix, mask in ((0x0A000001, 0xFFFFFFFF), (0x0A000000, 0xFFFFFF00), (0x0A000000, 0xFFFF0000)):
        tables.add(Flow(0, 10, Match(eth_type=0x0800, ipv4_dst=(prefix, mask)), Instructions(apply=(Output(1),))))
    tables.add(Flow(0, 10, Match(eth_type=0x0800), Instructions(apply=(Output(1),))))
    request = Match(ipv4_dst=(0x0A000000, 0xFFFFFF00))
    assert sorted(s.flow.match.get("ipv4_dst")[1] for s in tables.stats(match=request)) == [0xFFFFFF00, 0xFFFFFFFF]
    gone = tables.delete(0, request)
    assert sorted(s.flow.match.get("ipv4_dst")[1] for s in gone) == [0xFFFFFF00, 0xFFFFFFFF]
    assert len(tables) == 2
    assert tables.delete(0, Match(ipv4_dst=(0x0A000000, 0xFFFFFF00)), 10, strict=True) == []



def test_output_to_local_from_the_local_port_is_skipped() -> None:
    with flows_on(Flow(0, 0, Match(), Instructions(apply=(Output(OFPP_LOCAL), Output(1)))),
                  port_flags=[0, 0, 0, PF_LOCAL]) as r:
        assert r.run([(tcp_frame(), 3)], now=1).outputs == {0: [], 1: [tcp_frame()], 2: [], 3: []}


def test_output_to_local_from_another_port() -> None:
    with flows_on(Flow(0, 0, Match(), Instructions(apply=(Output(OFPP_LOCAL),))),
                  port_flags=[0, PF_LOCAL | PF_NO_FLOOD, PF_LOCAL, 0]) as r:   # the first LOCAL port is LOCAL
        assert r.run([(tcp_frame(), 0)], now=1).outputs == {0: [], 1: [tcp_frame()], 2: [], 3: []}


def test_set_vid_on_a_dei_tag_clears_dei() -> None:
    with flows_on(Flow(0, 0, Match(), Instructions(apply=(SetField("vlan_vid", 20), Output(1))))) as r:
        assert r.run([(tcp_frame(vid=10, pcp=3, dei=1), 0)], now=1).outputs[1] == [tcp_frame(vid=20, pcp=3)]
