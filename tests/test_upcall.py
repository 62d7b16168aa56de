"""Upcalls, megaflows and revalidation (``xlate.upcall``) as a user notices them, through a real ``Datapath``
with capture ports (``tests.test_xlate.Rig``):

* a flow-mod that changes the answer takes effect on the very next burst (no frame on a stale megaflow),
  and one that cannot change it keeps the megaflows;
* a full megaflow cache stays bounded and still forwards right;
* idle megaflows expire;
* rule and table counters equal what was sent, across recompiles;
* masks are as wide as the tables allow (one megaflow for many flows of traffic);
* packet-outs (``translate_actions``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

from dpif.megaflow import MegaflowCache
from ofproto.rules import (
    OFPFF_RESET_COUNTS,
    OFPP_ALL,
    OFPP_CONTROLLER,
    OFPP_FLOOD,
    OFPP_NORMAL,
    OFPP_TABLE,
    OFPR_ACTION,
    Flow,
    Instructions,
    Match,
    Output,
    PopVlan,
    PushVlan,
    SetField,
)
from tests.test_xlate import PF_DOWN, PF_LOCAL, PF_NO_FLOOD, Rig, flows_on, pin_tuples, rig, tcp_frame
from vswitch.openflow.codec import OFP13
from vswitch.openflow.flows import BridgeFlows, normal_only

SRC = 0x020000000001
DST = 0x020000000002
WEB = 0x0A000002          # tcp_frame()'s IPv4 destination


def frame_to(ip_dst: int = WEB, src: int = SRC, dst: int = DST, vid: int | None = None) -> bytes:
    f = tcp_frame(dst=dst, src=src, vid=vid)
    o = 30 + (4 if vid is not None else 0)
    return f[:o] + ip_dst.to_bytes(4, "big") + f[o + 4:]


def sent(r: Rig, frames: list[tuple[bytes, int]], now: int = 1) -> dict[int, int]:
    """How many frames each port sent for one burst of ``frames``."""
    return {p: len(out) for p, out in r.run(frames, now).outputs.items()}


def counts(r: Rig) -> dict[tuple[int, int], tuple[int, int]]:
    """(table, priority) -> (packets, bytes), after crediting the megaflows."""
    r.sync()
    return {(s.flow.table_id, s.flow.priority): (s.packets, s.bytes) for s in r.tables.stats()}


# ---------------------------------------------------------------- (a) revalidation

@contextmanager
def two_table_pipeline(**kwargs: object) -> Iterator[Rig]:
    """Table 0 sends IPv4 to table 1, which sends everything to port 1; table 2 is never visited."""
    with flows_on(Flow(0, 10, Match(eth_type=0x0800), Instructions(goto=1)),
                  Flow(1, 0, Match(), Instructions(apply=(Output(1),))),
                  Flow(2, 0, Match(), Instructions(apply=(Output(3),))), **kwargs) as r:
        yield r


def test_a_higher_priority_flow_in_a_visited_table_takes_the_next_burst() -> None:
    with two_table_pipeline() as r:
        burst = [(frame_to(), 0)] * 4 + [(frame_to(0x0A000009), 0)] * 2
        for _ in range(3):
            assert sent(r, burst) == {0: 0, 1: 6, 2: 0, 3: 0}
        r.tables.add(Flow(1, 20, Match(eth_type=0x0800, ipv4_dst=WEB), Instructions(apply=(Output(2),))))
        r.update()
        assert r.dp.upcalls.counters["revalidated_removed"] >= 1
        assert sent(r, burst) == {0: 0, 1: 2, 2: 4, 3: 0}


def test_a_deleted_flow_stops_forwarding_at_once() -> None:
    with two_table_pipeline() as r:
        r.tables.add(Flow(1, 20, Match(eth_type=0x0800, ipv4_dst=WEB), Instructions(apply=(Output(2),))))
        r.update()
        burst = [(frame_to(), 0)] * 3
        assert sent(r, burst) == {0: 0, 1: 0, 2: 3, 3: 0}
        assert sent(r, burst) == {0: 0, 1: 0, 2: 3, 3: 0}
        r.tables.delete(1, Match(eth_type=0x0800, ipv4_dst=WEB), 20, strict=True)
        r.update()
        assert sent(r, burst) == {0: 0, 1: 3, 2: 0, 3: 0}
        r.tables.delete(1)          # the table-miss flow of table 1 too: a table miss, counted
        r.update()
        assert sent(r, burst) == {0: 0, 1: 0, 2: 0, 3: 0}
        assert r.drop_counts() == {(0, "table_miss"): 3}


def test_a_flow_added_to_the_table_that_missed_takes_the_next_burst() -> None:
    """Frames whose walk ended on a miss in table 1 (a drop) take a flow added there on the next burst."""
    with flows_on(Flow(0, 10, Match(eth_type=0x0800), Instructions(goto=1))) as r:
        burst = [(frame_to(), 0)] * 2
        assert sent(r, burst) == sent(r, burst) == {0: 0, 1: 0, 2: 0, 3: 0}
        assert r.drop_counts() == {(0, "table_miss"): 4}
        r.tables.add(Flow(1, 1, Match(eth_type=0x0800, ipv4_dst=(WEB, 0xFFFFFF00)), Instructions(apply=(Output(2),))))
        r.update()
        assert sent(r, burst) == {0: 0, 1: 0, 2: 2, 3: 0}
        assert r.drop_counts() == {(0, "table_miss"): 4}


def test_a_modified_instruction_takes_the_next_burst() -> None:
    with two_table_pipeline() as r:
        burst = [(frame_to(), 0)] * 2
        assert sent(r, burst) == sent(r, burst) == {0: 0, 1: 2, 2: 0, 3: 0}
        r.tables.modify(1, Match(), 0, strict=True, instructions=Instructions(apply=(PushVlan(), Output(3))))
        r.update()
        got = r.run(burst, now=2)
        assert got.outputs == {0: [], 1: [], 2: [], 3: [frame_to(vid=0)] * 2}


def test_a_port_going_down_takes_the_next_burst() -> None:
    with two_table_pipeline() as r:
        burst = [(frame_to(), 0)] * 2
        assert sent(r, burst) == sent(r, burst) == {0: 0, 1: 2, 2: 0, 3: 0}
        r.set_down(1, True)
        assert sent(r, burst) == {0: 0, 1: 0, 2: 0, 3: 0}
        assert r.drop_counts() == {(0, "no_output"): 2}
        r.set_down(1, False)
        assert sent(r, burst) == {0: 0, 1: 2, 2: 0, 3: 0}


def test_a_change_in_a_table_the_walk_did_not_visit_keeps_the_megaflows() -> None:
    """Table 2 is not on the walk: changing it keeps the megaflows (no new translation), and they go on
    crediting the right flows."""
    with two_table_pipeline() as r:
        up = r.dp.upcalls
        burst = [(frame_to(), 0)] * 3 + [(frame_to(0x0A000009), 0)]
        assert sent(r, burst) == {0: 0, 1: 4, 2: 0, 3: 0}
        before = (len(up.cache), up.counters["translations"], up.counters["revalidated_removed"])
        r.tables.add(Flow(2, 50, Match(eth_type=0x0800, ipv4_dst=WEB), Instructions(apply=(Output(2),))))
        r.update()
        assert sent(r, burst, now=2) == {0: 0, 1: 4, 2: 0, 3: 0}
        assert (len(up.cache), up.counters["translations"], up.counters["revalidated_removed"]) == before
        assert counts(r) == {(0, 10): (8, 8 * 54), (1, 0): (8, 8 * 54), (2, 0): (0, 0), (2, 50): (0, 0)}


def test_a_flow_set_the_datapath_never_took_is_not_forgotten() -> None:
    """Flow sets compiled but replaced before the datapath took them (``publish_flows``): the one it takes
    must still drop the megaflows the skipped set's changes touched."""
    with two_table_pipeline() as r:
        burst = [(frame_to(), 0)] * 2
        assert sent(r, burst) == sent(r, burst) == {0: 0, 1: 2, 2: 0, 3: 0}
        r.tables.modify(1, Match(), 0, strict=True, instructions=Instructions(apply=(Output(2),)))
        r.tables.compile(r.port_map, r.miss_max_len)          # published, never taken
        r.tables.add(Flow(2, 50, Match(), Instructions(apply=(Output(3),))))   # a change elsewhere
        r.update()
        assert sent(r, burst) == {0: 0, 1: 0, 2: 2, 3: 0}


# ---------------------------------------------------------------- (b) megaflow limits

def dst_flows(n: int) -> list[Flow]:
    """One flow per destination IP 10.1.0.i (i < n) to port 1 + i % 3."""
    return [Flow(0, 10, Match(eth_type=0x0800, ipv4_dst=0x0A010000 + i), Instructions(apply=(Output(1 + i % 3),)))
            for i in range(n)]


def test_a_full_cache_stays_bounded_and_forwards_right_burst_by_burst() -> None:
    """A cache of 8 megaflows and 40 flows of traffic, one new flow a burst, the datapath's once-a-second
    expiry between bursts: at most 8 megaflows, what did not fit runs uninstalled, the least recently used
    are evicted (counted), every frame where its flow says."""
    with flows_on(*dst_flows(40), max_flows=8) as r:
        up = r.dp.upcalls
        for rnd in range(2):
            for i in range(40):
                got = sent(r, [(frame_to(0x0A010000 + i), 0)] * 2, now=1 + rnd)
                assert got == {0: 0, 1: 0, 2: 0, 3: 0} | {1 + i % 3: 2}, (rnd, i)
                assert len(up.cache) <= 8
                up.expire(r.dp.flows, 1 + rnd)
                assert len(up.cache) <= 6
        assert up.counters["not_installed"] == 0
        assert up.counters["evicted_full"] > 0
        assert up.counters["evicted_full"] == up.counters["installed"] - len(up.cache)


def test_a_full_cache_keeps_every_packet_in_the_flow_counters() -> None:
    with flows_on(*dst_flows(24), max_flows=8) as r:
        for i in range(24):
            r.run([(frame_to(0x0A010000 + i), 0)] * 2, now=1)
        r.sync()
        assert [(s.packets, s.bytes) for s in r.tables.stats()] == [(2, 2 * 54)] * 24


def test_a_full_cache_evicts_and_still_forwards_right() -> None:
    with flows_on(*dst_flows(8), max_flows=4) as r:
        burst = [(frame_to(0x0A010000 + i), 0) for i in range(8)]
        got = r.run(burst, now=1)
        assert {p: [f[30:34] for f in out] for p, out in got.outputs.items()} == {
            0: [], 1: [(0x0A010000 + i).to_bytes(4, "big") for i in (0, 3, 6)],
            2: [(0x0A010000 + i).to_bytes(4, "big") for i in (1, 4, 7)],
            3: [(0x0A010000 + i).to_bytes(4, "big") for i in (2, 5)]}


def test_a_frame_whose_megaflow_cannot_be_installed_is_forwarded() -> None:
    x, y = 0x020000000002, 0x020000000001
    with flows_on(Flow(0, 30, Match(eth_dst=x), Instructions(apply=(Output(1),))),   # masks: dst;
                  Flow(0, 20, Match(eth_src=y), Instructions(apply=(Output(2),))),   # dst, src;
                  Flow(0, 10, Match(eth_type=0x0806), Instructions(apply=(Output(3),))),  # dst, src, type
                  Flow(0, 0, Match(), Instructions(apply=(Output(3),)))) as r:
        r.dp.upcalls.cache = MegaflowCache(64, 64, max_subtables=2)
        assert sent(r, [(tcp_frame(dst=0x020000000100 + i, src=y), 0) for i in range(8)], now=1)[2] == 8
        assert sent(r, [(tcp_frame(dst=x, src=0x020000000009), 0)], now=2)[1] == 1
        assert sent(r, [(tcp_frame(dst=0x020000000005, src=0x020000000007), 0)], now=3)[3] == 1


# ---------------------------------------------------------------- (c) idle expiry

def test_idle_megaflows_expire_after_max_idle() -> None:
    """A megaflow lives ``max_idle`` seconds after its last hit (the aging pass credits its statistics
    first); then the next frame is translated again."""
    with flows_on(Flow(0, 5, Match(), Instructions(apply=(Output(2),))), max_idle=10) as r:
        up = r.dp.upcalls

        def age(now: int) -> None:
            r.now = now
            r.datapath._last_aging = 0.0     # the datapath thread's once-a-second pass, now
            r.datapath._age()

        sent(r, [(tcp_frame(), 0)], now=0)
        sent(r, [(tcp_frame(), 0)] * 2, now=5)
        age(14)
        assert len(up.cache) == 1 and up.counters["expired"] == 0
        age(15)
        assert len(up.cache) == 0 and up.counters["expired"] == 1
        assert r.tables.stats()[0].packets == 3          # credited by the aging pass, no sync needed
        assert sent(r, [(tcp_frame(), 0)], now=16) == {0: 0, 1: 0, 2: 1, 3: 0}
        assert up.counters["translations"] == 2
        assert counts(r) == {(0, 5): (4, 4 * 54)}


# ---------------------------------------------------------------- (d) rule statistics

def test_rule_counters_of_a_goto_pipeline_equal_what_was_sent() -> None:
    """Tables 0 -> 2 -> 4: every rule hit counts each frame once with its length; each table counts its
    lookups and matches; recompiles for flows in tables 1 and 3 (off the walk, but before its flows in the
    compiled order) keep the megaflows and the counts, and so does one that changes table 4's flows."""
    with flows_on(
        Flow(0, 10, Match(in_port=0), Instructions(goto=2)),
        Flow(2, 10, Match(eth_type=0x0800), Instructions(goto=4)),
        Flow(4, 10, Match(eth_type=0x0800, ipv4_dst=WEB), Instructions(apply=(Output(1),))),
        Flow(4, 0, Match(), Instructions(apply=(Output(2),))),
    ) as r:
        arp = tcp_frame()[:12] + b"\x08\x06" + bytes(46)
        burst = [(frame_to(), 0)] * 5 + [(frame_to(0x0A000009), 0)] * 3 + [(arp, 0)] * 2 + [(frame_to(), 1)]
        assert sent(r, burst) == {0: 0, 1: 5, 2: 3, 3: 0}
        want = {(0, 10): (10, 10 * 54 + 12), (2, 10): (8, 8 * 54), (4, 10): (5, 5 * 54), (4, 0): (3, 3 * 54)}
        assert counts(r) == want
        for table, lookups, matched in ((0, 11, 10), (1, 0, 0), (2, 10, 8), (3, 0, 0), (4, 8, 8)):
            assert r.tables.table_stats()[table][2:] == (lookups, matched), table
        translations = r.dp.upcalls.counters["translations"]
        r.tables.add(Flow(1, 1, Match(), Instructions(apply=(Output(3),))))
        r.tables.add(Flow(3, 1, Match(), Instructions(apply=(Output(3),))))
        r.update()
        assert sent(r, burst) == {0: 0, 1: 5, 2: 3, 3: 0}
        assert r.dp.upcalls.counters["translations"] == translations      # kept, with their rules renumbered
        want = {k: (p * 2, b * 2) for k, (p, b) in want.items()} | {(1, 1): (0, 0), (3, 1): (0, 0)}
        assert counts(r) == want
        r.tables.add(Flow(4, 5, Match(eth_type=0x0806), Instructions(apply=(Output(3),))))
        r.update()
        assert sent(r, burst) == {0: 0, 1: 5, 2: 3, 3: 0}
        assert counts(r)[(4, 10)] == (15, 15 * 54) and counts(r)[(0, 10)] == (30, 30 * 54 + 36)


def test_counters_continue_across_the_normal_only_shortcut() -> None:
    """A bridge whose only flow is ``priority=0,NORMAL`` switches without megaflows (``normal_only``) and
    counts that flow directly; adding and removing a flow moves it onto megaflows and back, and the
    NORMAL flow's counters and table 0's go on from where they were."""
    with rig() as r:
        tables = r.tables

        def update() -> None:
            compiled = tables.compile()
            r.dp.set_flows(tables, compiled, normal_only(compiled), False)

        tables.add(Flow(0, 0, Match(), Instructions(apply=(Output(OFPP_NORMAL),))))
        update()
        assert r.dp.normal_flow == 0
        assert sent(r, [(tcp_frame(), 0)] * 3, now=1) == {0: 0, 1: 3, 2: 3, 3: 3}      # flooded
        tables.add(Flow(0, 10, Match(in_port=2), Instructions(apply=(Output(1),))))
        update()
        assert r.dp.normal_flow == -1
        assert sent(r, [(tcp_frame(), 0)] * 2 + [(tcp_frame(), 2)], now=2) == {0: 0, 1: 3, 2: 2, 3: 2}
        tables.delete(0, Match(in_port=2), 10, strict=True)
        update()
        assert r.dp.normal_flow == 0
        assert sent(r, [(tcp_frame(), 0)] * 2, now=3) == {0: 0, 1: 2, 2: 2, 3: 2}
        assert counts(r) == {(0, 0): (7, 7 * 54)}
        assert tables.table_stats()[0] == (0, 1, 8, 8)


def test_modify_with_reset_counts_forgets_the_frames_before_it() -> None:
    with rig() as r:
        ports = {f"p{i}": SimpleNamespace(ofport=i + 1, port_no=i, name=f"p{i}") for i in range(4)}
        flows = BridgeFlows(SimpleNamespace(dp=r.dp, ports=ports), 8)

        def flow_mod(command: int, flags: int, port: int) -> SimpleNamespace:
            return SimpleNamespace(fields={
                "command": command, "out_port": 0xFFFFFFFF, "table_id": 0, "match": {"in_port": 1}, "cookie": 0,
                "cookie_mask": 0, "priority": 10, "idle_timeout": 0, "hard_timeout": 0, "flags": flags,
                "buffer_id": 0xFFFFFFFF,
                "instructions": [{"type": "apply_actions", "actions": [{"type": "output", "port": port}]}]})

        flows.flow_mod(OFP13, flow_mod(0, 0, 2))                          # ADD in_port=1 -> output:2
        flows.push()
        assert sent(r, [(tcp_frame(), 0)] * 3) == {0: 0, 1: 3, 2: 0, 3: 0}
        flows.flow_mod(OFP13, flow_mod(1, OFPFF_RESET_COUNTS, 3))         # MODIFY, reset_counts -> output:3
        flows.push()
        assert sent(r, [(tcp_frame(), 0)]) == {0: 0, 1: 0, 2: 1, 3: 0}
        assert [(e["packet_count"], e["byte_count"]) for e in flows.flow_stats(OFP13, {"table_id": 0xFF})] == [
            (1, 54)]


# ---------------------------------------------------------------- (e) masks as wide as the tables allow

def test_traffic_no_flow_looks_at_takes_one_megaflow() -> None:
    """``in_port=1,dl_dst=X`` and ``priority=0,NORMAL``: frames from port 2 (OpenFlow 3) never reach the
    dl_dst comparison, so 50 MACs take one megaflow; frames from port 1 do, one megaflow per destination."""
    x = 0x02000000AAAA
    with flows_on(Flow(0, 100, Match(in_port=1, eth_dst=x), Instructions(apply=(Output(4),))),
                  Flow(0, 0, Match(), Instructions(apply=(Output(OFPP_NORMAL),))),
                  port_map={1: 0, 2: 1, 3: 2, 4: 3}) as r:
        up = r.dp.upcalls
        many = [(tcp_frame(dst=0x020000001000 + i, src=0x020000002000 + i), 2) for i in range(50)]
        got = r.run(many, now=1)
        assert [len(got.outputs[p]) for p in range(4)] == [50, 50, 0, 50]   # NORMAL floods unknown destinations
        assert len(up.cache) == 1 and up.counters["translations"] == 1
        got = r.run([(tcp_frame(dst=x), 0), (tcp_frame(dst=x + 1), 0), (tcp_frame(dst=x + 2), 0)], now=1)
        assert len(got.outputs[3]) == 3       # one to port 4 by the flow, two flooded by NORMAL
        assert len(up.cache) == 4


# ---------------------------------------------------------------- (f) packet-out

def test_packet_out_to_table_runs_the_pipeline_from_its_in_port() -> None:
    with flows_on(Flow(0, 10, Match(in_port=2), Instructions(apply=(SetField("eth_dst", 0x020000000009),
                                                                    Output(1)))),
                  Flow(0, 0, Match(), Instructions(apply=(Output(3),)))) as r:
        r.dp.packet_out(tcp_frame(), 2, (Output(OFPP_TABLE),), r.dp.flows)
        r.dp.packet_out(tcp_frame(), 0, (Output(OFPP_TABLE),), r.dp.flows)
        assert {p: c.sent for p, c in enumerate(r.ports)} == {0: [], 1: [tcp_frame(dst=0x020000000009)], 2: [],
                                                              3: [tcp_frame()]}
        assert len(r.dp.upcalls.cache) == 0          # a packet-out installs no megaflow
        assert r.dp.pool.free_count == r.dp.pool.n_slots


def test_packet_out_flood_and_all_from_the_controller() -> None:
    """From no port: FLOOD reaches every port up and not no-flood; ALL every port up."""
    with flows_on(port_flags=[0, PF_NO_FLOOD, PF_DOWN, PF_LOCAL]) as r:
        r.dp.packet_out(tcp_frame(), -1, (Output(OFPP_FLOOD),), r.dp.flows)
        assert [len(c.sent) for c in r.ports] == [1, 0, 0, 1]
        r.dp.packet_out(tcp_frame(), -1, (PopVlan(), Output(OFPP_ALL)), r.dp.flows)
        assert [len(c.sent) for c in r.ports] == [2, 1, 0, 2]
        r.dp.packet_out(tcp_frame(), 3, (Output(OFPP_FLOOD),), r.dp.flows)     # from LOCAL: not back to it
        assert [len(c.sent) for c in r.ports] == [3, 1, 0, 2]


def test_packet_out_to_the_controller_from_no_port() -> None:
    with flows_on() as r:
        r.dp.packet_out(tcp_frame(vid=5), -1, (PopVlan(), Output(OFPP_CONTROLLER, 20)), r.dp.flows)
        pins = list(r.dp.packet_ins)
        assert pin_tuples(pins) == [(tcp_frame()[:20], 54, 4, OFPR_ACTION, 0, None)]
        r.dp.packet_out(tcp_frame(), -1, (Output(OFPP_NORMAL),), r.dp.flows)   # NORMAL needs an in_port
        assert r.dp.dp_drops["packet_out_normal_without_in_port"] == 1
        assert all(c.sent == [] for c in r.ports)
