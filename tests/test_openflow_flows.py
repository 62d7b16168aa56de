"""OpenFlow programs pyvswitch: flows from the real ovs-ofctl (1.0 and 1.3) and from a real os-ken controller
steer traffic between namespaces; ofproto/trace explains it; asynchronous messages reach controllers.

Every test builds hosts in network namespaces on veth ports of a bridge whose ports have fixed
ofports (``ofport_request``), so flows can name them.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.netutil import Sniffer, flood_random_sources, send_frames, unique
from tests.test_openflow import Client, ofctl
from vswitch.openflow.codec import OFP13, Msg, encode

pytestmark = pytest.mark.integration

OF13 = ("-O", "OpenFlow13")


@pytest.fixture
def two_hosts(switch, net):  # noqa: ANN001, ANN201 - fixtures
    """Bridge ``ofb`` with host A (10.71.0.1, ofport 1) and host B (10.71.0.2, ofport 2)."""
    stem = unique("of")
    a, b = f"{stem}a", f"{stem}b"
    net.add_host(f"{stem}-na", a, "10.71.0.1/24", mac="02:00:00:00:71:01")
    net.add_host(f"{stem}-nb", b, "10.71.0.2/24", mac="02:00:00:00:71:02")
    switch.vsctl("add-br", "ofb", "--", "add-port", "ofb", a, "--", "set", "Interface", a, "ofport_request=1",
                 "--", "add-port", "ofb", b, "--", "set", "Interface", b, "ofport_request=2")
    switch.wait_for("ports attached", lambda: switch.get("Interface", b, "ofport") == "2"
                    and switch.get("Interface", a, "ofport") == "1")
    return switch, net, f"{stem}-na", f"{stem}-nb", a, b


def flows_of(switch, *proto: str) -> list[str]:  # noqa: ANN001
    """dump-flows lines without the reply header."""
    return [ln.strip() for ln in ofctl(switch, *proto, "dump-flows", "ofb").splitlines()[1:] if ln.strip()]


def controller_connected(switch) -> bool:  # noqa: ANN001
    """The bridge's Controller row says is_connected=true."""
    return switch.vsctl("--columns=is_connected", "list", "Controller").stdout.split(":")[-1].strip() == "true"


def pings(net, ns: str) -> bool:  # noqa: ANN001
    """A short ping that is expected to fail; the failed ARP is forgotten so later pings start afresh."""
    ok = net.ping(ns, "10.71.0.2", count=2, deadline=2)
    net.exec(ns, ["ip", "neigh", "flush", "all"])
    return ok


def packets_of(line: str) -> int:
    return int(re.search(r"n_packets=(\d+)", line).group(1))


@pytest.mark.parametrize("proto", [(), OF13], ids=["of10", "of13"])
def test_flows_from_ovs_ofctl_steer_traffic(two_hosts, proto: tuple[str, ...]) -> None:  # noqa: ANN001
    sw, net, na, nb, a, b = two_hosts
    # OVS's default for a standalone bridge without controller: one visible NORMAL flow.
    assert [re.sub(r"duration=[^,]*, ", "", ln) for ln in flows_of(sw, *proto)] == [
        "cookie=0x0, table=0, n_packets=0, n_bytes=0, priority=0 actions=NORMAL"]
    assert net.ping(na, "10.71.0.2")
    assert packets_of(flows_of(sw, *proto)[0]) >= 4
    # Without flows nothing is forwarded, and the drops are counted by reason.
    ofctl(sw, *proto, "del-flows", "ofb")
    assert flows_of(sw, *proto) == []
    assert not pings(net, na)
    assert "flow_table_miss" in sw.appctl("coverage/show").stdout
    # Port to port flows, with counters.
    ofctl(sw, *proto, "add-flow", "ofb", "in_port=1,actions=output:2")
    ofctl(sw, *proto, "add-flow", "ofb", "priority=10,in_port=2,actions=output:1")
    assert net.ping(na, "10.71.0.2")
    lines = flows_of(sw, *proto)
    assert len(lines) == 2 and all(packets_of(ln) >= 3 for ln in lines), lines
    assert any("priority=10,in_port=2 actions=output:1" in ln for ln in lines), lines
    # A more specific flow wins by priority: B's replies dropped -> no ping.
    ofctl(sw, *proto, "add-flow", "ofb", "priority=200,in_port=2,dl_type=0x0800,actions=drop")
    assert not pings(net, na)
    # Strict delete takes only the exact flow; the ping works again.
    ofctl(sw, *proto, "--strict", "del-flows", "ofb", "priority=200,in_port=2,dl_type=0x0800")
    assert len(flows_of(sw, *proto)) == 2
    assert net.ping(na, "10.71.0.2")
    # mod-flows changes the actions of what it selects and keeps the counters.
    before = packets_of(next(ln for ln in flows_of(sw, *proto) if "in_port=1" in ln))
    ofctl(sw, *proto, "mod-flows", "ofb", "in_port=1,actions=drop")
    line = next(ln for ln in flows_of(sw, *proto) if "in_port=1" in ln)
    assert "actions=drop" in line and packets_of(line) == before
    assert not pings(net, na)
    # Non-strict delete with a match removes only what it covers.
    ofctl(sw, *proto, "del-flows", "ofb", "in_port=1")
    assert [ln for ln in flows_of(sw, *proto) if "in_port=1" in ln] == []
    assert len(flows_of(sw, *proto)) == 1


def test_of13_tables_vlans_cookies_and_timeouts(two_hosts) -> None:  # noqa: ANN001
    """A's frames reach B tagged with VLAN 10 (push_vlan/set_field in table 0, output in table 1); B's
    tagged frames reach A untagged (the issue's ``dl_vlan=10,actions=pop_vlan,output`` flow)."""
    sw, net, na, nb, a, b = two_hosts
    ofctl(sw, *OF13, "del-flows", "ofb")
    ofctl(sw, *OF13, "add-flow", "ofb",
          "table=0,priority=100,in_port=1,cookie=0x1,actions=push_vlan:0x8100,set_field:4106->vlan_vid,goto_table:1")
    ofctl(sw, *OF13, "add-flow", "ofb", "table=1,priority=100,cookie=0x1,actions=output:2")
    ofctl(sw, *OF13, "add-flow", "ofb", "priority=100,in_port=2,dl_vlan=10,cookie=0x2,actions=pop_vlan,output:1")
    plain = bytes.fromhex("020000007102020000007101" "88b5") + b"to B".ljust(46, b".")
    tagged = bytes.fromhex("020000007101020000007102" "8100000a" "88b5") + b"to A".ljust(46, b".")
    sniff_b = Sniffer(nb, "eth0", "ether proto 0x8100 or ether proto 0x88b5")
    sniff_a = Sniffer(na, "eth0", "ether proto 0x8100 or ether proto 0x88b5")
    send_frames(net, na, "eth0", [plain] * 3)
    send_frames(net, nb, "eth0", [tagged] * 3)
    seen_b, seen_a = sniff_b.stop(), sniff_a.stop()
    assert len([ln for ln in seen_b if "02:00:00:00:71:01 >" in ln and "vlan 10" in ln and "0x88b5" in ln]) == 3, seen_b
    got_a = [ln for ln in seen_a if "02:00:00:00:71:02 >" in ln]
    assert len(got_a) == 3 and not any("vlan" in ln for ln in got_a), seen_a
    lines = flows_of(sw, *OF13)
    assert all(packets_of(ln) == 3 for ln in lines), lines
    assert any("table=1" in ln for ln in lines)
    dump = ofctl(sw, *OF13, "dump-tables", "ofb")
    assert re.search(r"table 1:\s+active=1, lookup=3, matched=3", dump), dump
    # Cookies select: deleting cookie 0x1 leaves only the 0x2 flow.
    ofctl(sw, *OF13, "del-flows", "ofb", "cookie=0x1/-1")
    lines = flows_of(sw, *OF13)
    assert len(lines) == 1 and "cookie=0x2" in lines[0], lines
    # Aggregate stats over what is left.
    agg = ofctl(sw, *OF13, "dump-aggregate", "ofb")
    assert "flow_count=1" in agg, agg
    # A hard timeout removes the flow by itself.
    ofctl(sw, *OF13, "add-flow", "ofb", "priority=5,hard_timeout=1,actions=drop")
    assert any("hard_timeout=1" in ln for ln in flows_of(sw, *OF13))
    sw.wait_for("flow expired", lambda: not any("hard_timeout" in ln for ln in flows_of(sw, *OF13)), timeout=6)


def test_flow_mod_errors_keep_the_connection(two_hosts) -> None:  # noqa: ANN001
    sw, net, na, nb, a, b = two_hosts
    out = ofctl(sw, *OF13, "add-flow", "ofb", "table=254,actions=drop", check=False)   # OVS's hidden table
    assert "OFPBRC_EPERM" in out, out
    out = ofctl(sw, *OF13, "add-flow", "ofb", "table=3,actions=goto_table:2", check=False)
    assert "BAD_TABLE_ID" in out, out
    # a header the datapath cannot rewrite yet (the IPv6 flow label): refused, not half-installed
    out = ofctl(sw, *OF13, "add-flow", "ofb", "ipv6,actions=set_field:1->ipv6_label", check=False)
    assert "OFPBAC_BAD_SET_TYPE" in out or "BAD_SET" in out, out
    # its positive twin: one it can (ip_dscp) is taken
    assert ofctl(sw, *OF13, "add-flow", "ofb", "table=7,ip,actions=set_field:1->ip_dscp", check=False) == ""
    ofctl(sw, *OF13, "del-flows", "ofb", "table=7")
    # the bridge still works and kept its flows
    assert len(flows_of(sw, *OF13)) == 1
    assert net.ping(na, "10.71.0.2")


def test_ofproto_trace(two_hosts) -> None:  # noqa: ANN001
    sw, net, na, nb, a, b = two_hosts
    ofctl(sw, *OF13, "del-flows", "ofb")
    ofctl(sw, *OF13, "add-flow", "ofb", "table=0,priority=50,in_port=1,tcp,tp_dst=80,actions=goto_table:3")
    ofctl(sw, *OF13, "add-flow", "ofb", "table=3,priority=1,actions=output:2")
    trace = sw.appctl("ofproto/trace", "ofb",
                      "in_port=1,dl_src=02:00:00:00:71:01,dl_dst=02:00:00:00:71:02,tcp,nw_dst=10.71.0.2,tp_dst=80")
    text = trace.stdout
    assert 'bridge("ofb")' in text
    assert " 0. tcp,in_port=1,tp_dst=80, priority 50" in text, text   # OVS's words
    assert "goto_table:3" in text and " 3. priority 1" in text and "output:2" in text, text
    assert text.rstrip().endswith("Datapath actions: 2"), text
    miss = sw.appctl("ofproto/trace", "ofb", f"in_port={a},dl_src=02:00:00:00:71:01,tcp,tp_dst=22").stdout
    assert "No match" in miss and "Datapath actions: drop" in miss
    assert "Drop reason: flow_table_miss" in miss, miss
    # The NORMAL action explains the MAC table's decision.
    ofctl(sw, *OF13, "add-flow", "ofb", "priority=0,actions=NORMAL")
    normal = sw.appctl("ofproto/trace", "ofb", "in_port=2,dl_src=02:00:00:00:71:02,dl_dst=ff:ff:ff:ff:ff:ff").stdout
    assert "NORMAL" in normal and "flooding" in normal and "Datapath actions: 1" in normal, normal
    bad = sw.appctl("ofproto/trace", "ofb", "in_port=1,nonsense=3", check=False)
    assert bad.returncode != 0 and "nonsense" in bad.stderr


class Controller(Client):
    """A raw OpenFlow 1.3 controller on a ``punix:`` socket the bridge listens on (retries until it listens)."""

    def __init__(self, path: str) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                super().__init__(path, OFP13)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def send(self, msg: Msg) -> None:
        self.sock.sendall(encode(msg))

    def wait(self, kind: str, timeout: float = 10) -> Msg:
        """The next message of type ``kind`` (echo requests answered, others skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.recv()
            if msg.type == "echo_request":
                self.send(Msg(OFP13, "echo_reply", msg.xid, {"data": msg.data}))
            elif msg.type == kind:
                return msg
        raise AssertionError(f"no {kind} within {timeout} s")


def test_megaflows_are_listed_counted_and_revalidated(two_hosts) -> None:  # noqa: ANN001
    """What the datapath caches is visible as in OVS: ``dpctl/dump-flows`` lists one megaflow per direction
    with its packets and actions, ``upcall/show`` and ``pmd-stats-show`` count them; a flow-mod that changes
    the answer replaces them before the next frame (the ping stops), and the rules' counters hold every
    frame the megaflows forwarded."""
    sw, net, na, nb, a, b = two_hosts
    ofctl(sw, "del-flows", "ofb")
    ofctl(sw, "add-flow", "ofb", "in_port=1,actions=output:2")
    ofctl(sw, "add-flow", "ofb", "in_port=2,actions=output:1")
    assert net.ping(na, "10.71.0.2", count=5)
    dump = sw.appctl("dpctl/dump-flows").stdout.splitlines()
    assert len(dump) == 2, dump
    got = sorted((re.search(r"in_port\((\d+)\)", ln).group(1), re.search(r"actions:(\S+)", ln).group(1),
                  int(re.search(r"packets:(\d+)", ln).group(1))) for ln in dump)
    (pa, pb), (qa, qb) = ((i, o) for i, o, _ in got)      # datapath port numbers, as OVS lists them
    assert pa == qb and pb == qa and pa != pb, dump
    assert all(n >= 5 for _, _, n in got), dump
    assert "recirc_id(0)" in dump[0] and "eth(" not in dump[0], dump   # the flows look at in_port only
    up = sw.appctl("upcall/show").stdout
    assert re.search(r"flows\s+: \(current 2\)", up), up
    pmd = sw.appctl("dpif-netdev/pmd-stats-show", "ofb").stdout
    hits = sum(int(x) for x in re.findall(r"(?:emc|megaflow) hits: (\d+)", pmd))
    assert hits >= 8 and "miss with success upcall" in pmd, pmd
    # counted on the rules: every frame the megaflows forwarded (and the first of each direction)
    counts = sorted(packets_of(ln) for ln in flows_of(sw))
    assert counts == sorted(n for _, _, n in got), (counts, got)
    # a higher-priority drop for one direction: the megaflow goes before the next frame uses it
    ofctl(sw, "add-flow", "ofb", "priority=40000,in_port=1,actions=drop")
    assert not pings(net, na)
    dump = sw.appctl("dpctl/dump-flows").stdout
    dropped = {m.group(1) for m in re.finditer(r"in_port\((\d+)\).*actions:drop", dump)}
    assert len(dropped) == 1, dump                        # host A's port
    (x,) = dropped
    assert not re.search(rf"in_port\({x}\).*actions:\d", dump), dump   # its forwarding megaflow is gone


def test_async_messages_to_a_controller(two_hosts, tmp_path: Path) -> None:  # noqa: ANN001
    """packet_in (with in_port, table-miss reason and data), packet_out, flow_removed and port_status."""
    sw, net, na, nb, a, b = two_hosts
    path = str(tmp_path / "ctl.sock")
    sw.vsctl("set-controller", "ofb", f"punix:{path}")
    ctl = Controller(path)
    sw.wait_for("controller connected", lambda: controller_connected(sw))
    # A controller appeared: the flows were flushed (no NORMAL flow): install a table-miss flow to us.
    ctl.send(Msg(OFP13, "flow_mod", 2, {"cookie": 7, "cookie_mask": 0, "table_id": 0, "command": 0,
                                        "idle_timeout": 0, "hard_timeout": 0, "priority": 0,
                                        "buffer_id": 0xFFFFFFFF, "out_port": 0xFFFFFFFF, "out_group": 0xFFFFFFFF,
                                        "flags": 0, "match": {}, "instructions": [
                                            {"type": "apply_actions",
                                             "actions": [{"type": "output", "port": 0xFFFFFFFD, "max_len": 0xFFFF}]}]}))
    ctl.send(Msg(OFP13, "barrier_request", 3))
    ctl.wait("barrier_reply")
    frame = bytes.fromhex("020000007102020000007101" "88b5") + b"packet-in test".ljust(46, b".")
    send_frames(net, na, "eth0", [frame])
    pin = ctl.wait("packet_in")
    assert pin.fields["match"]["in_port"] == 1 and pin.fields["reason"] == 0 and pin.fields["cookie"] == 7
    assert pin.fields["data"] == frame and pin.fields["buffer_id"] == 0xFFFFFFFF
    # packet_out: the controller sends a frame out of port 2
    sniff = Sniffer(nb, "eth0", "ether proto 0x88b6")
    out = bytes.fromhex("020000007102020000007101" "88b6") + b"packet-out".ljust(46, b".")
    ctl.send(Msg(OFP13, "packet_out", 4, {"buffer_id": 0xFFFFFFFF, "in_port": 0xFFFFFFFD,
                                          "actions": [{"type": "output", "port": 2, "max_len": 0}], "data": out}))
    ctl.send(Msg(OFP13, "barrier_request", 5))
    ctl.wait("barrier_reply")
    assert len(sniff.stop()) == 1
    # flow_removed for a flow that asked for it
    ctl.send(Msg(OFP13, "flow_mod", 6, {"cookie": 9, "cookie_mask": 0, "table_id": 0, "command": 0,
                                        "idle_timeout": 0, "hard_timeout": 1, "priority": 9,
                                        "buffer_id": 0xFFFFFFFF, "out_port": 0xFFFFFFFF, "out_group": 0xFFFFFFFF,
                                        "flags": 1, "match": {"in_port": 2}, "instructions": []}))
    removed = ctl.wait("flow_removed")
    assert removed.fields["cookie"] == 9 and removed.fields["reason"] == 1   # OFPRR_HARD_TIMEOUT
    # port_status when a port is added
    stem = unique("of")
    net.add_host(f"{stem}-nc", f"{stem}c", "10.71.0.3/24")
    sw.vsctl("add-port", "ofb", f"{stem}c", "--", "set", "Interface", f"{stem}c", "ofport_request=3")
    status = ctl.wait("port_status")
    assert status.fields["reason"] == 0 and status.fields["desc"]["port_no"] == 3
    assert status.fields["desc"]["name"] == f"{stem}c"


def test_packet_in_flood_is_rate_limited(two_hosts, tmp_path: Path) -> None:  # noqa: ANN001
    """A controller with controller_rate_limit=100 gets at most ~100 packet-ins/s; the rest are counted and
    flows keep forwarding."""
    sw, net, na, nb, a, b = two_hosts
    path = str(tmp_path / "ctl.sock")
    sw.vsctl("--", "--id=@c", "create", "Controller", f"target=\"punix:{path}\"", "controller_rate_limit=100",
             "controller_burst_limit=25", "--", "set", "Bridge", "ofb", "controller=@c")
    ctl = Controller(path)
    ofctl(sw, *OF13, "add-flow", "ofb", "priority=0,actions=CONTROLLER:128")
    ofctl(sw, *OF13, "add-flow", "ofb", "priority=10,icmp,actions=NORMAL")
    ofctl(sw, *OF13, "add-flow", "ofb", "priority=10,arp,actions=NORMAL")
    t0 = time.monotonic()
    flood_random_sources(net, na, "eth0", 2000)
    assert net.ping(na, "10.71.0.2")   # forwarding goes on
    got = 0
    ctl.sock.settimeout(0.5)
    try:
        while True:
            ctl.wait("packet_in", timeout=2)
            got += 1
    except (TimeoutError, AssertionError):
        pass
    elapsed = time.monotonic() - t0
    assert 1 <= got <= 25 + 100 * elapsed + 5, (got, elapsed)
    cov = sw.appctl("coverage/show").stdout
    limited = int(re.search(r"packet_in_rate_limited\s+total: (\d+)", cov).group(1))
    assert limited >= 2000 - got - 50, cov


OSKEN_APP = Path(__file__).with_name("osken_learning_switch.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_osken_learning_switch_on_a_secure_bridge(two_hosts) -> None:  # noqa: ANN001
    sw, net, na, nb, a, b = two_hosts
    sw.vsctl("set-fail-mode", "ofb", "secure")
    sw.wait_for("secure bridge has no flows", lambda: flows_of(sw, *OF13) == [])
    assert not pings(net, na)
    port = _free_port()
    app = subprocess.Popen([sys.executable, str(OSKEN_APP), str(port)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        assert app.stdout.readline().strip() == "ready"
        sw.vsctl("set-controller", "ofb", f"tcp:127.0.0.1:{port}")
        sw.wait_for("controller connected", lambda: controller_connected(sw))
        sw.wait_for("table-miss flow", lambda: any("CONTROLLER" in ln for ln in flows_of(sw, *OF13)))
        assert net.ping(na, "10.71.0.2", count=5)
        sw.wait_for("learned flows", lambda: len([ln for ln in flows_of(sw, *OF13) if "priority=1," in ln]) >= 2)
        lines = flows_of(sw, *OF13)
        assert any("priority=1,in_port=1,dl_src=02:00:00:00:71:01,dl_dst=02:00:00:00:71:02 actions=output:2" in ln
                   for ln in lines), lines
    finally:
        app.kill()
        out = app.communicate(timeout=10)[0]
    assert "packet-in 02:00:00:00:71:01 -> ff:ff:ff:ff:ff:ff port 1" in out, out
