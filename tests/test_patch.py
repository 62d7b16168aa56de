"""Patch ports (``Interface.type=patch``, ``options:peer``): two bridges of the one datapath joined.

Without a daemon (``tests.test_one_datapath.Switch``, capture ports):

* a translation that crosses a patch port walks the peer bridge's tables in the same walk: one program,
  one megaflow mask, the rules of both bridges, the peer bridge's header changes undone for the rest of
  the first bridge's actions; crossings are bounded (OVS's depth 64);
* NORMAL on both bridges: a frame crosses through the L2 switch's choice, each bridge learns the frame
  on its own ingress port (the peer patch port for the second), VLAN edits of the patch ports apply;
* flows on one bridge, NORMAL on the other; a loop of patch ports stays bounded.

Through the real daemon: a namespace host on each of two bridges pings across a patch pair (NORMAL on
both; then flows on one); ``ofproto/trace`` shows the walk crossing; ``dpif/show`` lists the pair as OVS
does; a patch port without a peer, with itself as peer, or with a peer that does not name it back gets
OVS's ``Interface.error``.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from backends.patch import PatchPort
from dpif import actions as A
from dpif import key as K
from ofproto.rules import OFPP_FLOOD, OFPP_IN_PORT, OFPP_NORMAL, Flow, Instructions, Match, Output, SetField
from ofproto.tables import FlowTables
from tests.netutil import unique
from tests.test_one_datapath import BCAST, MAC, Switch, switch
from tests.test_openflow import ofctl
from tests.test_xlate import tcp_frame
from vswitch.dpbridge import DpBridge
from vswitch.vlan import VlanConfig, fill_vlan_map
from xlate.translate import (
    MAX_DEPTH,
    MODE_NORMAL,
    MODE_TABLES,
    PF_PATCH,
    BaseRecorder,
    Bridges,
    UpcallCookies,
    translate,
)

# ---------------------------------------------------------------- the translator


def _tables(*flows: Flow) -> FlowTables:
    t = FlowTables(4)
    for f in flows:
        t.add(f)
    return t


def test_a_translation_crosses_a_patch_port_into_the_peer_bridge() -> None:
    """Bridge 0 (ports 0, 1 and patch 2) rewrites eth_dst and outputs to the patch port, then to port 1;
    bridge 1 (patch 3, ports 4, 5) outputs frames from its patch port to port 4 after a rewrite of its own."""
    t0 = _tables(Flow(0, 10, Match(in_port=0), Instructions(apply=(SetField("eth_dst", 0x0A), Output(2),
                                                                         Output(1)))))
    t1 = _tables(Flow(0, 10, Match(in_port=3), Instructions(apply=(SetField("eth_src", 0x0B), Output(4)))),
                 Flow(0, 0, Match(), Instructions()))
    ts0, ts1 = t0.activate(t0.compile()), t1.activate(t1.compile())
    port_bridge = np.array([0, 0, 0, 1, 1, 1, -1], dtype=np.int64)
    peer = np.array([-1, -1, 3, 2, -1, -1, -1], dtype=np.int64)
    flags = np.array([0, 0, PF_PATCH, PF_PATCH, 0, 0], dtype=np.int64)
    bridges = Bridges([ts0, ts1], [MODE_TABLES, MODE_TABLES], [-1, -1], port_bridge, peer)
    key = [0] * K.KEY_WORDS
    key[K.W_IN_PORT], key[K.W_ETH_DST], key[K.W_ETH_SRC], key[K.W_ETH_TYPE] = 0, 0x02, 0x01, 0x0800
    seen: list[tuple[str, int]] = []

    class Rec(BaseRecorder):
        def table(self, table_id: int, flow: Flow | None) -> None:
            seen.append(("table", -1 if flow is None else flow.priority))

        def note(self, text: str) -> None:
            pass

        def normal(self, key: list[int], in_port: int) -> None:
            seen.append(("normal", in_port))

        def bridge(self, bridge: int, in_port: int) -> None:
            seen.append(("bridge", bridge))

        def resume(self, bridge: int) -> None:
            seen.append(("resume", bridge))

    res = translate(bridges, key, flags, UpcallCookies(), Rec())
    assert A.decode(res.program()) == [
        (A.OP_SET_ETH, [0x0A, 0x0B]),                                # both MACs: one action
        (A.OP_OUTPUT, [4]),
        (A.OP_SET_MASKED, [K.W_ETH_SRC, 0x01, 0xFFFF_FFFF_FFFF]),    # bridge 0's frame has its own source again
        (A.OP_OUTPUT, [1]),
    ]
    assert seen == [("table", 10), ("bridge", 1), ("table", 10), ("resume", 0)]
    assert list(zip(res.rank_bridges, res.ranks, strict=True)) == [(0, 0), (1, 0)]
    assert res.bridges == {0, 1}
    assert res.mask[K.W_IN_PORT] == 0xFFFF_FFFF and res.mask[K.W_ETH_SRC] == 0xFFFF_FFFF_FFFF
    assert res.final[K.W_IN_PORT] == 0     # the walk ends back in bridge 0


def test_normal_behind_a_patch_port_names_the_peer_bridge_and_ingress() -> None:
    t0 = _tables(Flow(0, 0, Match(), Instructions(apply=(Output(OFPP_FLOOD),))))
    ts0 = t0.activate(t0.compile())
    bridges = Bridges([ts0, None], [MODE_TABLES, MODE_NORMAL], [-1, -1], np.array([0, 0, 1, 1], dtype=np.int64),
                      np.array([-1, 2, 1, -1], dtype=np.int64))
    key = [0] * K.KEY_WORDS
    res = translate(bridges, key, np.array([0, PF_PATCH, PF_PATCH, 0], dtype=np.int64), UpcallCookies())
    assert A.decode(res.program()) == [(A.OP_NORMAL, [1, 2])]     # bridge 1's L2 switch, from patch port 2


def test_a_loop_of_patch_ports_stops_at_the_depth_limit() -> None:
    """Two bridges that send every frame coming from the patch port back out of it: each crossing leads to
    the other end, until OVS's depth limit."""
    back = Instructions(apply=(Output(OFPP_IN_PORT),))
    ts = [t.activate(t.compile()) for t in (_tables(Flow(0, 10, Match(in_port=0), Instructions(apply=(Output(1),))),
                                                    Flow(0, 5, Match(in_port=1), back)),
                                            _tables(Flow(0, 0, Match(), back)))]
    bridges = Bridges(ts, [MODE_TABLES, MODE_TABLES], [-1, -1], np.array([0, 0, 1], dtype=np.int64),
                      np.array([-1, 2, 1], dtype=np.int64))
    key = [0] * K.KEY_WORDS
    res = translate(bridges, key, np.array([0, PF_PATCH, PF_PATCH], dtype=np.int64), UpcallCookies())
    assert res.actions == [] and len(res.ranks) == MAX_DEPTH + 1


# ---------------------------------------------------------------- the datapath

def patched(sw: Switch, vlan_a: VlanConfig | None = None) -> tuple[DpBridge, DpBridge]:
    """Bridge ``a`` (a0, a1, patch pa) and ``b`` (patch pb, b0, b1), the patch pair joined."""
    a = sw.bridge("a", ["a0", "a1"])
    b = sw.bridge("b", ["b0", "b1"])
    for br, name, peer, vlan in ((a, "pa", "pb", vlan_a), (b, "pb", "pa", None)):
        port = sw.ports[name] = PatchPort(name, peer)
        br.attach(port)
        fill_vlan_map(br.vlan_map, port.port_no, vlan or VlanConfig(), True)
    assert sw.ports["pa"].paired and sw.ports["pb"].paired
    return a, b


def test_normal_on_both_bridges_crosses_and_learns_on_the_patch_port() -> None:
    with switch() as sw:
        a, b = patched(sw)
        ask = tcp_frame(dst=BCAST, src=MAC[0])
        assert sw.run([(ask, "a0")]) == {"a1": [ask], "b0": [ask], "b1": [ask]}
        assert sw.fdb(a) == {(sw.no("a0"), MAC[0])}
        assert sw.fdb(b) == {(sw.no("pb"), MAC[0])}       # learned on the peer patch port
        answer = tcp_frame(dst=MAC[0], src=MAC[1])
        assert sw.run([(answer, "b1")]) == {"a0": [answer]}
        assert sw.fdb(a) == {(sw.no("a0"), MAC[0]), (sw.no("pa"), MAC[1])}
        assert sw.ports["pb"].counters[0] == 1 and sw.ports["pa"].counters[4] == 1   # rx on pb, tx on pa


def test_the_patch_ports_vlan_settings_apply_across() -> None:
    """Patch port ``pa`` is an access port of VLAN 10 in bridge a: a0's untagged frames in VLAN 10 cross
    untagged; a frame of VLAN 20 does not cross."""
    with switch() as sw:
        a, _b = patched(sw, VlanConfig(tag=10))
        fill_vlan_map(a.vlan_map, sw.no("a0"), VlanConfig(tag=10), True)
        fill_vlan_map(a.vlan_map, sw.no("a1"), VlanConfig(tag=20), True)
        f0, f1 = tcp_frame(dst=BCAST, src=MAC[0]), tcp_frame(dst=BCAST, src=MAC[1])
        assert sw.run([(f0, "a0"), (f1, "a1")]) == {"b0": [f0], "b1": [f0]}


def test_flows_on_one_bridge_and_normal_on_the_other() -> None:
    """Bridge a sends a0's IPv4 to the patch port with a new destination MAC; bridge b is NORMAL-only: the
    translation hands the frame to b's L2 switch as received on pb (one megaflow for both)."""
    with switch() as sw:
        a, b = patched(sw)
        tables = FlowTables(4)
        tables.add(Flow(0, 10, Match(in_port=sw.no("a0"), eth_type=0x0800),
                        Instructions(apply=(SetField("eth_dst", MAC[5]), Output(sw.no("pa"))))))
        tables.add(Flow(0, 0, Match(), Instructions(apply=(Output(OFPP_NORMAL),))))
        a.set_flows(tables, tables.compile(), -1, False)
        f = tcp_frame(dst=MAC[1], src=MAC[0])
        moved = tcp_frame(dst=MAC[5], src=MAC[0])
        assert sw.run([(f, "a0")]) == {"b0": [moved], "b1": [moved]}
        assert sw.fdb(b) == {(sw.no("pb"), MAC[0])}
        mf = sw.datapath.upcalls.cache.dump()
        assert len(mf) == 1 and A.format_actions(mf[0].actions).endswith(f"normal(bridge={b.index},"
                                                                          f"in_port={sw.no('pb')})")
        # b learns MAC[5] on b1: the next frame goes there alone, by the same megaflow
        sw.run([(tcp_frame(dst=MAC[0], src=MAC[5]), "b1")])
        translations = sw.datapath.upcalls.counters["translations"]
        assert sw.run([(f, "a0")]) == {"b1": [moved]}
        assert sw.datapath.upcalls.counters["translations"] == translations


def test_a_loop_of_normal_bridges_is_bounded() -> None:
    """Two patch pairs between two NORMAL bridges make a loop: a broadcast circles for at most the depth
    limit of rounds in one iteration, and the drop is counted."""
    with switch() as sw:
        a, b = patched(sw)
        for br, name, peer in ((a, "pa2", "pb2"), (b, "pb2", "pa2")):
            port = sw.ports[name] = PatchPort(name, peer)
            br.attach(port)
            fill_vlan_map(br.vlan_map, port.port_no, VlanConfig(), True)
        f = tcp_frame(dst=BCAST, src=MAC[0])
        t0 = time.monotonic()
        got = sw.run([(f, "a0")])
        assert time.monotonic() - t0 < 5
        assert 0 < len(got["b0"]) <= 2 * MAX_DEPTH
        assert a.dp_drops["patch_too_deep"] + b.dp_drops["patch_too_deep"] > 0


# ---------------------------------------------------------------- through the daemon

@pytest.fixture
def patched_hosts(switch, net):  # noqa: ANN001, ANN201 - fixtures
    """Bridges ``<stem>1`` (host A, 10.72.0.1, ofport 1; patch ``<stem>p1`` ofport 5) and ``<stem>2`` (host B,
    10.72.0.2, ofport 1; patch ``<stem>p2`` ofport 5), the patch pair joined."""
    stem = unique("pt")
    a, b, p1, p2 = f"{stem}a", f"{stem}b", f"{stem}p1", f"{stem}p2"
    net.add_host(f"{stem}-na", a, "10.72.0.1/24", mac="02:00:00:00:72:01")
    net.add_host(f"{stem}-nb", b, "10.72.0.2/24", mac="02:00:00:00:72:02")
    br1, br2 = f"{stem}1", f"{stem}2"
    switch.vsctl("add-br", br1, "--", "add-port", br1, a, "--", "set", "Interface", a, "ofport_request=1",
                 "--", "add-port", br1, p1, "--", "set", "Interface", p1, "type=patch", f"options:peer={p2}",
                 "ofport_request=5",
                 "--", "add-br", br2, "--", "add-port", br2, b, "--", "set", "Interface", b, "ofport_request=1",
                 "--", "add-port", br2, p2, "--", "set", "Interface", p2, "type=patch", f"options:peer={p1}",
                 "ofport_request=5")
    switch.wait_for("ports attached", lambda: switch.get("Interface", p2, "ofport") == "5"
                    and switch.get("Interface", p1, "ofport") == "5")
    return switch, net, stem


@pytest.mark.integration
def test_hosts_on_two_bridges_ping_across_a_patch_pair(patched_hosts) -> None:  # noqa: ANN001
    sw, net, stem = patched_hosts
    br1, br2, p1, p2 = f"{stem}1", f"{stem}2", f"{stem}p1", f"{stem}p2"
    assert net.ping(f"{stem}-na", "10.72.0.2")
    assert sw.get("Interface", p1, "error") == "[]" and sw.get("Interface", p2, "error") == "[]"
    # each bridge learned the far host on its patch port (ofport 5)
    fdb1 = {tuple(ln.split()[:3]) for ln in sw.appctl("fdb/show", br1).stdout.splitlines()[1:]}
    fdb2 = {tuple(ln.split()[:3]) for ln in sw.appctl("fdb/show", br2).stdout.splitlines()[1:]}
    assert ("5", "0", "02:00:00:00:72:02") in fdb1 and ("1", "0", "02:00:00:00:72:01") in fdb1
    assert ("5", "0", "02:00:00:00:72:01") in fdb2 and ("1", "0", "02:00:00:00:72:02") in fdb2
    # one datapath, every port; the patch ports as OVS shows them
    show = sw.appctl("dpif/show").stdout
    assert show.startswith("netdev@ovs-netdev: hit:") and show.count("@") == 1
    assert f"  {br1}:\n" in show and f"  {br2}:\n" in show
    assert f"    {p1} 5/none: (patch: peer={p2})" in show and f"    {p2} 5/none: (patch: peer={p1})" in show
    # the trace of a broadcast from A walks into the second bridge through NORMAL's flood
    trace = sw.appctl("ofproto/trace", br1, "in_port=1,dl_src=02:00:00:00:72:01,dl_dst=ff:ff:ff:ff:ff:ff").stdout
    assert f'bridge("{br1}")' in trace and f'bridge("{br2}")' in trace, trace
    assert re.search(rf"Datapath actions: .*{br2}:1", trace), trace

    # flows on the first bridge, NORMAL on the second: A's IPv4 goes to the patch port by a flow
    ofctl(sw, "del-flows", br1)
    ofctl(sw, "add-flow", br1, "priority=10,in_port=1,actions=output:5")
    ofctl(sw, "add-flow", br1, "priority=10,in_port=5,actions=output:1")
    net.exec(f"{stem}-na", ["ip", "neigh", "flush", "all"])
    assert net.ping(f"{stem}-na", "10.72.0.2")
    trace = sw.appctl("ofproto/trace", br1, "in_port=1,dl_src=02:00:00:00:72:01,dl_dst=02:00:00:00:72:02").stdout
    assert " 0. in_port=1, priority 10" in trace and f'bridge("{br2}")' in trace, trace
    assert "forwarding to learned port 1" in trace and trace.rstrip().endswith(f"Datapath actions: {br2}:1"), trace
    flows = ofctl(sw, "dump-flows", br1)
    assert re.search(r"n_packets=[1-9].*in_port=1 actions=output:5", flows), flows
    megaflows = sw.appctl("dpctl/dump-flows").stdout
    assert "normal(bridge=" in megaflows, megaflows     # one megaflow runs bridge 1's flow and bridge 2's NORMAL


@pytest.mark.integration
def test_a_patch_port_without_a_usable_peer_gets_ovss_error(switch) -> None:  # noqa: ANN001
    sw = switch
    stem = unique("pe")
    br, nopeer, selfp, lonely, extra = f"{stem}b", f"{stem}n", f"{stem}s", f"{stem}l", f"{stem}x"
    sw.vsctl("add-br", br, "--", "add-port", br, nopeer, "--", "set", "Interface", nopeer, "type=patch",
             "--", "add-port", br, selfp, "--", "set", "Interface", selfp, "type=patch", f"options:peer={selfp}",
             "--", "add-port", br, lonely, "--", "set", "Interface", lonely, "type=patch", "options:peer=ghost",
             "--", "add-port", br, extra, "--", "set", "Interface", extra, "type=patch", "options:peer=ghost",
             "options:color=blue")
    sw.wait_for("errors written", lambda: sw.get("Interface", lonely, "error") != "[]")
    assert sw.get("Interface", nopeer, "error") == f"{nopeer}: patch type requires valid 'peer' argument"
    assert sw.get("Interface", nopeer, "ofport") == "-1"
    assert sw.get("Interface", selfp, "error") == f"{selfp}: patch peer must not be self"
    assert sw.get("Interface", extra, "error") == f"{extra}: patch type takes only a 'peer' argument"
    assert sw.get("Interface", lonely, "error") == "No usable peer 'ghost' exists in 'netdev' datapath."
    assert int(sw.get("Interface", lonely, "ofport")) > 0     # unpaired, but a port of the bridge (as in OVS)
    # a peer that names it back makes the pair: the error goes
    other = f"{stem}o"
    sw.vsctl("add-br", other, "--", "add-port", other, "ghost", "--", "set", "Interface", "ghost", "type=patch",
             f"options:peer={lonely}")
    sw.wait_for("the pair joined", lambda: sw.get("Interface", lonely, "error") == "[]"
                and sw.get("Interface", "ghost", "error") == "[]")
    sw.vsctl("del-br", other)
    sw.wait_for("the pair parted", lambda: sw.get("Interface", lonely, "error") != "[]")
