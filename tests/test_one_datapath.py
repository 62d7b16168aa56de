"""One datapath for every bridge (``vswitch.datapath``): a burst that holds frames of several bridges is
handled bridge by bridge, with capture ports (``tests.test_xlate.CapturePort``) and no daemon.

* ``group_burst`` / ``group_normal`` are stable partitions (against a plain model);
* two NORMAL bridges in one burst learn in their own L2 tables and flood only to their own ports;
* an OpenFlow bridge, a NORMAL-only bridge and a secure bridge without flows in one burst: each frame is
  handled by its bridge's mode, the secure bridge's frames are counted as table misses;
* FLOOD, ALL and LOCAL stay in the bridge; packet-ins go to the bridge's own queue;
* the megaflow cache is shared, and a flow change in one bridge leaves the other bridge's megaflows.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from backends.pool import META_IN_PORT
from dpif import actions as A
from dpif.actions import DROP_REASONS
from dpif.partition import group_burst, group_normal
from ofproto.rules import OFPP_CONTROLLER, OFPP_FLOOD, OFPP_LOCAL, OFPP_NORMAL, Flow, Instructions, Match, Output
from ofproto.tables import FlowTables
from tests.test_xlate import CapturePort, tcp_frame
from vswitch.datapath import Datapath
from vswitch.dpbridge import DpBridge
from vswitch.openflow.flows import normal_only
from vswitch.vlan import VlanConfig, fill_vlan_map
from xlate.translate import PF_LOCAL

BCAST = 0xFFFFFFFFFFFF
MAC = [0x020000000000 + i for i in range(1, 9)]


def test_group_burst_is_a_stable_partition() -> None:
    rnd = random.Random(5)
    for _ in range(200):
        n_ports, n_groups = rnd.randint(1, 9), rnd.randint(1, 6)
        port_group = np.array([rnd.randrange(n_groups) for _ in range(n_ports)], dtype=np.int64)
        n = rnd.randint(0, 40)
        meta = np.zeros((n, 4), dtype=np.int32)
        meta[:, META_IN_PORT] = [rnd.randrange(n_ports + 2) for _ in range(n)]    # some outside port_group
        burst = np.array(rnd.sample(range(n), n), dtype=np.int32)
        out = np.zeros(max(n, 1), dtype=np.int32)
        start = np.zeros(n_groups + 1, dtype=np.int64)
        listed = np.full(n_groups + 1, -1, dtype=np.int64)
        used = group_burst(meta, burst, n, port_group, out, start, listed)

        groups = [int(port_group[p]) if p < n_ports else n_groups - 1 for p in meta[:, META_IN_PORT].tolist()]
        want = [[int(s) for s in burst if groups[s] == g] for g in range(n_groups)]
        assert [out[start[g]:start[g + 1]].tolist() for g in range(n_groups)] == want
        assert used == sum(1 for w in want if w)
        assert listed[:used].tolist() == [g for g in range(n_groups) if want[g]]


def test_group_normal_is_a_stable_partition_and_refuses_no_port() -> None:
    rnd = random.Random(6)
    for _ in range(200):
        n_bridges, n_ports, n = rnd.randint(1, 4), rnd.randint(1, 6), rnd.randint(0, 30)
        side = np.zeros((A.SIDE_ROWS, max(n, 1)), dtype=np.int32)
        rows = [(rnd.randrange(1000), rnd.randrange(n_bridges + 1), rnd.randrange(n_ports + 1)) for _ in range(n)]
        for i, (s, b, p) in enumerate(rows):
            side[A.SIDE_NORMAL, i], side[A.SIDE_NORMAL_BRIDGE, i], side[A.SIDE_NORMAL_IN, i] = s, b, p
        slots, ins = np.zeros(max(n, 1), dtype=np.int32), np.zeros(max(n, 1), dtype=np.int32)
        start = np.zeros(n_bridges + 1, dtype=np.int64)
        lost = group_normal(side, n, n_ports, slots, ins, start)
        ok = [r for r in rows if r[1] < n_bridges and r[2] < n_ports]
        assert lost == n - len(ok)
        for b in range(n_bridges):
            a, z = int(start[b]), int(start[b + 1])
            assert list(zip(slots[a:z].tolist(), ins[a:z].tolist(), strict=True)) == [(s, p) for s, bb, p in ok
                                                                                      if bb == b]


# ---------------------------------------------------------------- a datapath with bridges of capture ports

class Switch:
    """A ``Datapath`` with bridges of capture ports (every VLAN on every port, as OVS's default), no thread."""

    def __init__(self) -> None:
        self.datapath = Datapath("one-dp-test", n_slots=2048, slot_size=512)
        self.now = 0
        self.datapath.now = lambda: self.now
        self.bridges: dict[str, DpBridge] = {}
        self.ports: dict[str, CapturePort] = {}

    def bridge(self, name: str, ports: list[str], fail_secure: bool = False) -> DpBridge:
        br = self.datapath.add_bridge(name, fail_secure=fail_secure)
        br.pi_rate = br.pi_burst = br._pi_tokens = 1e12
        self.bridges[name] = br
        for p in ports:
            port = self.ports[p] = CapturePort(p)
            br.attach(port)
            fill_vlan_map(br.vlan_map, port.port_no, VlanConfig(), True)
        return br

    def no(self, port: str) -> int:
        return self.ports[port].port_no

    def flows(self, br: DpBridge, *flows: Flow, secure: bool = False, port_map: dict[int, int] | None = None) -> None:
        tables = FlowTables(4)
        for f in flows:
            tables.add(f)
        compiled = tables.compile(port_map)
        br.set_flows(tables, compiled, normal_only(compiled), False, secure)

    def run(self, frames: list[tuple[bytes, str]]) -> dict[str, list[bytes]]:
        """One iteration over ``frames`` (frame, port): what every port sent."""
        for p in self.ports.values():
            p.sent = []
        for f, port in frames:
            self.ports[port].inbox.append(f)
        free = self.datapath.pool.free_count
        assert self.datapath.poll_once() == len(frames)
        assert self.datapath.pool.free_count == free, "pool slots leaked"
        return {name: p.sent for name, p in self.ports.items() if p.sent}

    def fdb(self, br: DpBridge) -> set[tuple[int, int]]:
        """(port, MAC) of every learned entry."""
        from classifier.l2table import l2_entries
        return {(p, mac) for p, _vlan, mac, _age, _static in l2_entries(br.l2, self.now)}

    def close(self) -> None:
        self.datapath.close()


@contextmanager
def switch() -> Iterator[Switch]:
    sw = Switch()
    try:
        yield sw
    finally:
        sw.close()


def test_two_normal_bridges_in_one_burst_learn_apart_and_flood_apart() -> None:
    with switch() as sw:
        a = sw.bridge("a", ["a0", "a1"])
        b = sw.bridge("b", ["b0", "b1", "b2"])
        fa, fb = tcp_frame(dst=BCAST, src=MAC[0]), tcp_frame(dst=BCAST, src=MAC[1])
        assert sw.datapath.single_group < 0
        got = sw.run([(fa, "a0"), (fb, "b1"), (fa, "b2")])     # one MAC in both bridges, on different ports
        assert got == {"a1": [fa], "b0": [fb, fa], "b2": [fb], "b1": [fa]}
        assert sw.fdb(a) == {(sw.no("a0"), MAC[0])}
        assert sw.fdb(b) == {(sw.no("b1"), MAC[1]), (sw.no("b2"), MAC[0])}
        # unicast answers go to the learned port of each bridge
        ra, rb = tcp_frame(dst=MAC[0], src=MAC[2]), tcp_frame(dst=MAC[0], src=MAC[3])
        assert sw.run([(rb, "b0"), (ra, "a1")]) == {"b2": [rb], "a0": [ra]}


def test_each_frame_is_handled_by_its_bridges_mode() -> None:
    """An OpenFlow bridge, a NORMAL-only bridge and a secure bridge without flows share one burst."""
    with switch() as sw:
        of = sw.bridge("of", ["o0", "o1", "o2"])
        sw.bridge("nl", ["n0", "n1"])
        sec = sw.bridge("sec", ["s0", "s1"], fail_secure=True)
        sw.flows(of, Flow(0, 10, Match(in_port=sw.no("o0")), Instructions(apply=(Output(sw.no("o2")),))))
        f = [tcp_frame(dst=BCAST, src=m) for m in MAC]
        got = sw.run([(f[0], "s0"), (f[1], "o0"), (f[2], "n0"), (f[3], "o1"), (f[4], "s1"), (f[5], "n1")])
        assert got == {"o2": [f[1]], "n1": [f[2]], "n0": [f[5]]}
        fd = sw.datapath.fdrops
        assert fd[sw.no("s0"), DROP_REASONS.index("table_miss")] == 1
        assert fd[sw.no("s1"), DROP_REASONS.index("table_miss")] == 1
        assert fd[sw.no("o1"), DROP_REASONS.index("table_miss")] == 1
        # flows made for the secure bridge open it, and only it
        sw.flows(sec, Flow(0, 0, Match(), Instructions(apply=(Output(OFPP_NORMAL),))), secure=True)
        assert sw.run([(f[0], "s0"), (f[6], "o1")]) == {"s1": [f[0]]}


def test_flood_and_local_stay_in_the_bridge_and_packet_ins_go_to_its_queue() -> None:
    with switch() as sw:
        a = sw.bridge("a", ["a0", "a1", "alocal"])
        b = sw.bridge("b", ["b0", "b1", "blocal"])
        sw.datapath.set_port_flag(sw.no("alocal"), PF_LOCAL, True)
        sw.datapath.set_port_flag(sw.no("blocal"), PF_LOCAL, True)
        sw.flows(a, Flow(0, 0, Match(), Instructions(apply=(Output(OFPP_FLOOD), Output(OFPP_CONTROLLER)))))
        sw.flows(b, Flow(0, 0, Match(), Instructions(apply=(Output(OFPP_LOCAL),))))
        fa, fb = tcp_frame(src=MAC[0]), tcp_frame(src=MAC[1])
        assert sw.run([(fa, "a0"), (fb, "b1")]) == {"a1": [fa], "alocal": [fa], "blocal": [fb]}
        assert [(p.data, p.port_no) for p in a.packet_ins] == [(fa, sw.no("a0"))]
        assert not b.packet_ins


def test_a_flow_change_in_one_bridge_keeps_the_other_bridges_megaflows() -> None:
    with switch() as sw:
        a = sw.bridge("a", ["a0", "a1"])
        b = sw.bridge("b", ["b0", "b1"])
        sw.flows(a, Flow(0, 0, Match(), Instructions(apply=(Output(sw.no("a1")),))))
        sw.flows(b, Flow(0, 0, Match(), Instructions(apply=(Output(sw.no("b1")),))))
        burst = [(tcp_frame(src=MAC[0]), "a0"), (tcp_frame(src=MAC[1]), "b0")]
        assert sw.run(burst) == {"a1": [burst[0][0]], "b1": [burst[1][0]]}
        up = sw.datapath.upcalls
        assert up is not None and len(up.cache) == 2
        translations = up.counters["translations"]
        sw.flows(b, Flow(0, 0, Match(), Instructions(apply=(Output(sw.no("b0")),))))   # a new set: b's go
        assert len(up.cache) == 1
        assert sw.run(burst) == {"a1": [burst[0][0]]}     # b's frame would go back to its ingress port
        assert up.counters["translations"] == translations + 1
        # the rule counters of each bridge got their own frames
        a.sync_stats()
        assert int(a.flows.counters[0, 0]) == 2 and int(b.flows.counters[0, 0]) == 1
