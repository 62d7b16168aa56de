"""Differences from Open vSwitch that controllers notice (issue 16, part 5), through the real daemon: OpenFlow 1.0
table-miss packet-ins, fail-open only after three inactivity-probe intervals, and OpenFlow 1.0 ``mod_vlan_vid`` on
an untagged frame. What OVS does was checked against ovs-vswitchd 3.1 (netdev datapath) with the same controllers:

* a table miss sends an OpenFlow 1.0 controller a packet-in (``OFPR_NO_MATCH``, the whole frame, no buffer id) and
  an OpenFlow 1.3 controller nothing; with a ``priority=0 actions=CONTROLLER`` flow the 1.3 controller's
  packet-in says ``OFPR_NO_MATCH`` and the 1.0 controller's ``OFPR_ACTION``;
* ``inactivity_probe=1000``: fail-open 3 s after the controller was set, never connecting;
* ``mod_vlan_vid:10`` pushes ``vlan 10, p 0`` onto an untagged frame and keeps the PCP of a tagged one.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from queue import Empty, Queue
from types import SimpleNamespace

import pytest

from ofproto.rules import Flow, Instructions, Match, ModVlanVid, Output, SetField
from tests.netutil import Sniffer, send_frames, unique
from tests.switchutil import Switch
from tests.test_fail_secure import MAC_A, MAC_B, Traffic, attached, ports_args
from tests.test_openflow import Client, ofctl
from tests.test_xlate import N_TABLES, apply_mod, check_burst, pin_tuples, rig, tcp_frame
from vswitch.hostnet import HostNet
from vswitch.openflow.codec import OFP10, OFP13, Msg, encode
from xlate.reference import RefTables

OF13 = ("-O", "OpenFlow13")
OFPR_NO_MATCH, OFPR_ACTION = 0, 1
NO_BUFFER = 0xFFFFFFFF


class Peer(Client):
    """A raw OpenFlow controller of one version: a reader thread answers echo requests and queues the rest."""

    def __init__(self, sock: socket.socket, version: int) -> None:  # noqa: D107 - see the constructors below
        self.sock = sock
        self.version = version
        sock.settimeout(5)
        assert self.recv().type == "hello"
        self.send(Msg(version, "hello", 1))
        self.inbox: Queue[Msg] = Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @classmethod
    def dial(cls, path: str, version: int) -> Peer:
        """Connect to the bridge's ``punix:`` listener (retried until it listens)."""
        deadline = time.monotonic() + 10
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                return cls(s, version)
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _read(self) -> None:
        self.sock.settimeout(None)
        with contextlib.suppress(OSError, AssertionError):
            while True:
                msg = self.recv()
                if msg.type == "echo_request":
                    self.send(Msg(self.version, "echo_reply", msg.xid, {"data": msg.data}))
                else:
                    self.inbox.put(msg)

    def send(self, msg: Msg) -> None:
        self.sock.sendall(encode(msg))

    def wait(self, kind: str, timeout: float = 10.0) -> Msg | None:
        """The next message of ``kind`` (others are skipped); None when none comes within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.inbox.get(timeout=left)
            except Empty:
                return None
            if msg.type == kind:
                return msg
        return None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._reader.join(5)


def connected(sw: Switch) -> dict[str, bool]:
    """``Controller.is_connected`` by target."""
    rows = json.loads(sw.vsctl("--format=json", "--columns=target,is_connected", "list", "Controller").stdout)["data"]
    return {target: ok for target, ok in rows}


def frame(payload: bytes, size: int = 200) -> bytes:
    return bytes.fromhex("ffffffffffff" + MAC_A.replace(":", "")) + b"\x88\xb5" + payload.ljust(size - 14, b".")


@pytest.fixture
def hosts(switch: Switch, net: HostNet) -> tuple[Switch, HostNet, SimpleNamespace]:
    """Host A (``h.ns_a``, port ``h.a``) and host B (``h.ns_b``, port ``h.b``) on veths, and a bridge name."""
    stem = unique("oc")
    h = SimpleNamespace(a=f"{stem}a", b=f"{stem}b", ns_a=f"{stem}-na", ns_b=f"{stem}-nb", br=f"{stem}s")
    net.add_host(h.ns_a, h.a, "10.17.0.1/24", mac=MAC_A)
    net.add_host(h.ns_b, h.b, "10.17.0.2/24", mac=MAC_B)
    return switch, net, h


@pytest.mark.integration
def test_of10_controllers_get_table_miss_packet_ins(hosts: tuple[Switch, HostNet, SimpleNamespace],
                                                     tmp_path: Path) -> None:
    """A secure bridge without flows and two controllers: the OpenFlow 1.0 one is sent every table miss, the 1.3
    one nothing. A table-miss flow then sends both a packet-in (NO_MATCH in 1.3, ACTION in 1.0); without a 1.0
    controller a miss drops again."""
    sw, net, h = hosts
    br, na = h.br, h.ns_a
    c10_path, c13_path = str(tmp_path / "c10.sock"), str(tmp_path / "c13.sock")
    sw.vsctl("add-br", br, "--", "set-fail-mode", br, "secure", *ports_args(br, h), "--", "set-controller", br,
             f"punix:{c10_path}", f"punix:{c13_path}")
    c10, c13 = Peer.dial(c10_path, OFP10), Peer.dial(c13_path, OFP13)
    try:
        sw.wait_for("both controllers connected", lambda: all(connected(sw).values()))
        miss = frame(b"table miss")
        send_frames(net, na, "eth0", [miss])
        pin = c10.wait("packet_in")
        assert pin is not None, "the OpenFlow 1.0 controller got no packet-in for a table miss"
        assert (pin.version, pin.fields["reason"], pin.fields["in_port"], pin.fields["total_len"],
                pin.fields["buffer_id"]) == (OFP10, OFPR_NO_MATCH, 1, len(miss), NO_BUFFER), pin
        assert pin.fields["data"] == miss                 # the whole frame: nothing is buffered (OVS 3.1 alike)
        assert c13.wait("packet_in", timeout=1.0) is None  # OpenFlow 1.3: a miss drops
        # the miss behaviour is no flow of the tables (OVS's is hidden too), and ofproto/trace tells it
        assert ofctl(sw, "dump-flows", br).splitlines()[1:] == []
        trace = sw.appctl("ofproto/trace", br, f"in_port=1,dl_src={MAC_A},dl_dst=ff:ff:ff:ff:ff:ff").stdout
        assert "No match" in trace and "packet-in to the OpenFlow 1.0 controllers" in trace, trace

        # the positive twin for 1.3: a table-miss flow sends it packet-ins
        ofctl(sw, *OF13, "add-flow", br, "priority=0,actions=CONTROLLER:65535")
        send_frames(net, na, "eth0", [frame(b"table-miss flow")])
        p13, p10 = c13.wait("packet_in"), c10.wait("packet_in")
        assert p13 is not None and p10 is not None
        assert (p13.fields["reason"], p13.fields["match"]["in_port"], p13.fields["table_id"]) == (OFPR_NO_MATCH, 1, 0)
        assert p10.fields["reason"] == OFPR_ACTION and p10.fields["data"] == frame(b"table-miss flow")

        # without a 1.0 controller, and without the table-miss flow, a miss is dropped and counted again
        ofctl(sw, *OF13, "del-flows", br)
        c10.close()
        sw.wait_for("the 1.0 controller gone", lambda: not connected(sw)[f"punix:{c10_path}"])
        cov = sw.appctl("coverage/show").stdout
        before = int(m.group(1)) if (m := re.search(r"flow_table_miss\s+total: (\d+)", cov)) else 0
        send_frames(net, na, "eth0", [frame(b"dropped")] * 3)
        sw.wait_for("the misses counted as drops", lambda: (m := re.search(
            r"flow_table_miss\s+total: (\d+)", sw.appctl("coverage/show").stdout)) is not None
            and int(m.group(1)) >= before + 3, timeout=5)
        assert c13.wait("packet_in", timeout=0.5) is None
    finally:
        c10.close()
        c13.close()


@pytest.fixture
def tagged_traffic(net: HostNet) -> Iterator[Traffic]:
    """test_fail_secure's traffic (A sending without pause), with B capturing A's frames tagged or not."""
    t = Traffic(net, tagged_too=True)
    try:
        yield t
    finally:
        t.stop()


@pytest.mark.integration
def test_fail_open_waits_three_probe_intervals(switch: Switch, tagged_traffic: Traffic) -> None:
    """A standalone bridge, its controller with ``inactivity_probe=1000``:

    1. the controller does not answer the switch's HELLO: the bridge has no flows (flushed when the controller was
       set) for ~3 s, then it fails open (A's frames reach B untagged, by NORMAL);
    2. the controller answers: fail-open ends, and its flow (A's frames to B in VLAN 7) is in force;
    3. the controller goes away: its flow stays in force ~3 s more, then the bridge fails open again.
    """
    sw, t = switch, tagged_traffic
    br = f"{t.stem}s"
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    peer = None
    try:
        sw.vsctl("add-br", br, *ports_args(br, t))
        sw.wait_for("ports attached", lambda: attached(sw, t))
        t.wait_arriving(time.time())                 # standalone: NORMAL
        sw.vsctl("--", "--id=@c", "create", "Controller", f'target="tcp:127.0.0.1:{port}"', "inactivity_probe=1000",
                 "max_backoff=1000", "--", "set", "Bridge", br, "controller=@c")
        t_set = time.time()
        # 1. never connected (the switch's TCP connection waits in our backlog, its HELLO unanswered)
        opened = wait_untagged(t, t_set + 0.3, t_set + 6)
        assert t_set + 2.5 <= opened <= t_set + 4.5, f"failed open {opened - t_set:.2f} s after the controller was set"
        # 2. the controller answers: fail-open ends, its flow is in force
        listener.settimeout(5)
        conn, _ = listener.accept()
        peer = Peer(conn, OFP13)
        sw.wait_for("controller connected", lambda: all(connected(sw).values()))
        t_up = time.time()
        peer.send(Msg(OFP13, "flow_mod", 2, {
            "cookie": 0x16, "cookie_mask": 0, "table_id": 0, "command": 0, "idle_timeout": 0, "hard_timeout": 0,
            "priority": 10, "buffer_id": NO_BUFFER, "out_port": 0xFFFFFFFF, "out_group": 0xFFFFFFFF, "flags": 0,
            "match": {"in_port": 1}, "instructions": [{"type": "apply_actions", "actions": [
                {"type": "push_vlan", "ethertype": 0x8100}, {"type": "set_field", "field": {"vlan_vid": 0x1000 | 7}},
                {"type": "output", "port": 2, "max_len": 0}]}]}))
        wait_vlan(t, 7, t_up)
        time.sleep(1.5)
        peer.send(Msg(OFP13, "barrier_request", 3))     # the controller is active up to the moment it goes away
        assert peer.wait("barrier_reply") is not None
        # 3. the controller goes away: its flow stays in force ~3 s, then the bridge fails open
        listener.close()
        peer.close()
        t_down = time.time()
        assert t.arrivals.between(t_up + 0.5, t_down, vlan=None) == []     # no fail-open while connected
        opened = wait_untagged(t, t_down, t_down + 7)
        assert t.arrivals.between(t_down + 0.2, t_down + 2.4, vlan=7), "the flow was not in force after the disconnect"
        assert t_down + 2.5 <= opened <= t_down + 4.5, f"failed open {opened - t_down:.2f} s after the disconnect"
        status = json.loads(sw.vsctl("--format=json", "--columns=status", "list", "Controller").stdout)["data"]
        assert dict(status[0][0][1]).get("sec_since_disconnect") is not None, status
    finally:
        listener.close()
        if peer is not None:
            peer.close()


def wait_untagged(t: Traffic, since: float, until: float) -> float:
    """The capture time of the first untagged frame at or after ``since``; fails after ``until``."""
    while time.time() < until:
        got = t.arrivals.between(since, until, vlan=None)
        if got:
            return got[0]
        time.sleep(0.05)
    raise AssertionError(f"no untagged frame reached B within {until - since:.1f} s")


def wait_vlan(t: Traffic, vlan: int, since: float, timeout: float = 5.0) -> None:
    deadline = time.time() + timeout
    while not t.arrivals.between(since, deadline, vlan=vlan):
        assert time.time() < deadline, f"no frame in VLAN {vlan} reached B"
        time.sleep(0.05)


@pytest.mark.integration
def test_of10_mod_vlan_vid_tags_an_untagged_frame(hosts: tuple[Switch, HostNet, SimpleNamespace]) -> None:
    """``ovs-ofctl add-flow`` (OpenFlow 1.0) ``mod_vlan_vid:10``: an untagged frame leaves tagged VLAN 10 with PCP 0,
    a tagged one (VLAN 20, PCP 5) leaves with VLAN 10 and its PCP kept."""
    sw, net, h = hosts
    br = h.br
    sw.vsctl("add-br", br, *ports_args(br, h))
    sw.wait_for("ports attached", lambda: attached(sw, h))
    ofctl(sw, "del-flows", br)
    ofctl(sw, "add-flow", br, "in_port=1,actions=mod_vlan_vid:10,output:2")
    flows = ofctl(sw, "dump-flows", br)
    assert "in_port=1 actions=mod_vlan_vid:10,output:2" in flows, flows
    dst = bytes.fromhex(MAC_B.replace(":", "") + MAC_A.replace(":", ""))
    untagged = dst + b"\x88\xb5" + b"untagged".ljust(46, b".")
    tagged = dst + bytes.fromhex("8100a014") + b"\x88\xb5" + b"tagged".ljust(46, b".")   # PCP 5, VID 20
    sniff = Sniffer(h.ns_b, "eth0", f"ether src {MAC_A}")
    send_frames(net, h.ns_a, "eth0", [untagged] * 3 + [tagged] * 3)
    seen = sniff.stop()
    assert len([ln for ln in seen if "vlan 10, p 0, ethertype" in ln and "0x88b5" in ln]) == 3, seen
    assert len([ln for ln in seen if "vlan 10, p 5, ethertype" in ln and "0x88b5" in ln]) == 3, seen
    assert not [ln for ln in seen if "vlan 20" in ln or "802.1Q" not in ln], seen
    trace = sw.appctl("ofproto/trace", br, f"in_port=1,dl_src={MAC_A},dl_dst={MAC_B}").stdout
    assert "mod_vlan_vid:10" in trace and "dl_vlan=10" in trace, trace
    assert trace.rstrip().endswith("Datapath actions: push_vlan(vid=10,pcp=0),2"), trace   # OVS's words


# ---------------------------------------------------------------- the kernel side of both OpenFlow 1.0 behaviours

def test_kernel_mod_vlan_vid_agrees_with_the_reference() -> None:
    """``ModVlanVid`` in the datapath and in the reference model: untagged frames get VLAN 10 with PCP 0, tagged
    ones VLAN 10 with their PCP; a later table matches the new VID (so the megaflows tell tagged from untagged)."""
    ref = RefTables(N_TABLES)
    with rig() as r:
        for f in (Flow(0, 10, Match(in_port=0), Instructions(apply=(ModVlanVid(10),), goto=1)),
                  Flow(1, 10, Match(vlan_vid=0x1000 | 10), Instructions(apply=(Output(1),))),
                  Flow(1, 5, Match(), Instructions(apply=(Output(2),)))):
            apply_mod(r.tables, ref, ("add", f), 0)
        r.update()
        burst = [(tcp_frame(), 0), (tcp_frame(vid=20, pcp=5), 0), (tcp_frame(), 0)]
        for _ in range(3):   # translated, then from the megaflows, then from the EMC
            got = check_burst(r, ref, burst, 1)
            assert got.outputs[1] == [tcp_frame(vid=10), tcp_frame(vid=10, pcp=5), tcp_frame(vid=10)]
            assert got.outputs[2] == []
        assert len(r.dp.upcalls.cache) == 2      # untagged, tagged


def test_kernel_table_miss_to_controller() -> None:
    """Compiled with ``miss_max_len``, a miss in any table becomes a packet-in (OFPR_NO_MATCH, that table, no flow,
    the frame as the actions left it, ``miss_max_len`` bytes of it) instead of a ``table_miss`` drop; compiled
    without, it drops. On, off, on again: no megaflow made under one policy answers under the other."""
    with rig(n_tables=4) as r:
        r.tables.add(Flow(0, 10, Match(in_port=0), Instructions(apply=(SetField("eth_dst", 0x020000000009),), goto=2)))
        frames = [(tcp_frame(), 0), (tcp_frame(), 1)]    # port 0: misses in table 2 after a rewrite; port 1: in table 0
        for miss_max_len in (0xFFFF, 0, 0xFFFF, 20):
            r.miss_max_len = miss_max_len
            r.update()
            for _ in range(2):
                before = r.drop_counts()
                got = r.run(frames, now=1)
                drops = {k: v - before.get(k, 0) for k, v in r.drop_counts().items() if v != before.get(k, 0)}
                if not miss_max_len:
                    assert got.packet_ins == []
                    assert drops == {(0, "table_miss"): 1, (1, "table_miss"): 1}
                    continue
                assert pin_tuples(got.packet_ins) == [
                    (tcp_frame(dst=0x020000000009)[:miss_max_len], 54, 0, OFPR_NO_MATCH, 2, None),
                    (tcp_frame()[:miss_max_len], 54, 1, OFPR_NO_MATCH, 0, None)]
                assert drops == {}
