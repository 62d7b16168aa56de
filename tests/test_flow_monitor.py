"""Flow monitors (vswitch/openflow/monitor.py): ``ovs-ofctl monitor br0 watch:...`` in OpenFlow 1.0 (Nicira's
NXST_FLOW_MONITOR), 1.3 (ONF's extension) and 1.4 / 1.5 (OFPMP_FLOW_MONITOR), held to a real ovs-vswitchd 3.1.

The same ``ovs-ofctl monitor`` runs against pyvswitch and against a real OVS (netdev datapath, its own namespace and
rundir) while another ``ovs-ofctl`` adds, modifies and deletes flows; the lines it prints (the snapshot, then one
reply per change with ADDED / MODIFIED / DELETED and the reason) must be the same, for the filters ``!initial``,
``table=``, ``out_port=``, a match, ``!actions``, ``!delete`` and ``!modify``, and the reasons of timeouts and group
deletes. Then, with raw clients: ``!own`` (one ABBREV with the flow-mod's xid) and the cancel and modify commands
(the same replies as a real OVS), errors (OVS's codes; the connection lives, nothing half-applies), a refused
bundle (its flows are never told), the flow control (PAUSED, RESUMED) and fuzzed requests.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import struct
import subprocess
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.switchutil import private_switch
from tests.test_bridge_identity import RealOvs, running_ovs
from tests.test_openflow import Client
from vswitch.openflow.codec import OFP10, OFP13, OFP14, OFP15, Msg, encode

pytestmark = pytest.mark.integration

BR = "br0"
#: a flow every watch below selects (table 1, IP, output to port 2): once it is printed, all before it was too
MARKER = "table=1,priority=1,ip,nw_dst=10.9.9.9,actions=output:2"
CHANGES = [
    ("add-flow", "table=0,priority=9,in_port=1,cookie=0x5,idle_timeout=60,actions=output:2"),
    ("add-flow", "table=1,priority=9,arp,actions=drop"),
    ("mod-flows", "table=0,cookie=0x5,in_port=1,actions=output:2,output:1"),
    ("add-flow", "table=0,priority=9,in_port=1,cookie=0x5,idle_timeout=60,actions=output:3"),   # replaces: ADDED
    ("del-flows", "table=0,in_port=1"),
    ("del-flows", "arp"),
    ("add-flows", "-"),   # two flows in one message each (one reply each)
    ("del-flows", "table=2"),   # both in one reply
]
ADD_FLOWS = "table=2,priority=4,udp,actions=output:1\ntable=2,priority=5,tcp,actions=output:2\n"


def ofctl(sw, *args: str, stdin: str | None = None) -> str:  # noqa: ANN001 - Switch / RealOvs
    proc = subprocess.run(["ovs-ofctl", "--timeout=10", *args], capture_output=True, text=True, env=sw.env,
                          input=stdin, timeout=20)
    assert proc.returncode == 0, (args, proc.stderr)
    return proc.stdout


@pytest.fixture(scope="module")
def sw() -> Iterator:
    with private_switch(prefix="pvmon-") as s:
        s.vsctl("add-br", BR)
        yield s


@pytest.fixture(scope="module")
def real_ovs() -> Iterator[RealOvs]:
    with running_ovs("realmon-", BR) as ovs:
        yield ovs


class Watch:
    """A running ``ovs-ofctl monitor BR watch:SPEC`` whose lines are read as they come (line-buffered)."""

    def __init__(self, sw, proto: str, spec: str) -> None:  # noqa: ANN001
        # a terminal: ovs-ofctl's output is line-buffered then (to a pipe it would sit in its buffer); the snapshot
        # goes to stdout, the updates to stderr
        self.fd, tty = pty.openpty()
        self.proc = subprocess.Popen(["ovs-ofctl", "--no-names", "-O", proto, "monitor", BR, f"watch:{spec}"],
                                     env=sw.env, stdout=tty, stderr=tty)
        os.close(tty)
        self.lines: list[str] = []
        self.buf = b""

    def until(self, pred, timeout: float = 15) -> list[str]:  # noqa: ANN001
        """Read lines until one satisfies ``pred``; all lines so far."""
        deadline = time.monotonic() + timeout
        fd = self.fd
        while not any(pred(ln) for ln in self.lines):
            left = deadline - time.monotonic()
            assert left > 0, ("monitor printed no expected line", self.lines, self.proc.poll())
            if select.select([fd], [], [], left)[0]:
                data = os.read(fd, 65536)
                assert data, ("monitor ended", self.lines)
                self.buf += data
                *done, self.buf = self.buf.split(b"\n")
                self.lines += [ln.decode().rstrip("\r") for ln in done]
        return self.lines

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=10)
        os.close(self.fd)


def run_watch(sw, proto: str, spec: str) -> list[str]:  # noqa: ANN001
    """The lines ``ovs-ofctl monitor`` prints for the snapshot and CHANGES (xids of the snapshot normalised)."""
    ofctl(sw, "del-flows", BR)
    ofctl(sw, "add-flow", BR, "table=0,priority=0,actions=NORMAL")
    ofctl(sw, "add-flow", BR, "table=1,priority=5,ip,nw_dst=10.0.0.1,actions=output:1")
    w = Watch(sw, proto, spec)
    try:
        w.until(lambda ln: "reply" in ln)   # the snapshot's header: the monitor is in place
        time.sleep(0.2)                     # the snapshot's lines
        for cmd, arg in CHANGES:
            if arg == "-":
                ofctl(sw, cmd, BR, "-", stdin=ADD_FLOWS)
            else:
                ofctl(sw, cmd, BR, arg)
        ofctl(sw, "add-flow", BR, MARKER)
        lines = w.until(lambda ln: "nw_dst=10.9.9.9" in ln)
    finally:
        w.stop()
    # the snapshot's xid is ovs-ofctl's count of what it sent first; the updates' are 0
    return [re.sub(r"xid=0x[1-9a-f][0-9a-f]*", "xid=X", ln) for ln in lines if "fatal_signal" not in ln]


WATCHES = ["", "!initial", "table=1", "!actions", "!delete,out_port=2", "ip", "!modify,ip"]


@pytest.mark.parametrize("proto", ["OpenFlow10", "OpenFlow13", "OpenFlow14", "OpenFlow15"])
def test_monitor_prints_what_real_ovs_prints(sw, real_ovs: RealOvs, proto: str) -> None:  # noqa: ANN001
    """Snapshot and updates, line for line as a real OVS 3.1 gives them, for every filter."""
    for spec in WATCHES:
        ours = run_watch(sw, proto, spec)
        theirs = run_watch(real_ovs, proto, spec)
        assert ours == theirs, (spec, ours, theirs)


# ---------------------------------------------------------------- a raw client: own changes, cancel, errors
ANY = 0xFFFFFFFF
OFPFMF_DEFAULT = 0x1F                       # initial, add, removed, modify, instructions (own changes abbreviated)
OFPFMF_ONLY_OWN = 0x40                      # what ovs-ofctl sends for "own": OVS reads it as own changes in full


def monitor_request(version: int, xid: int, mid: int, flags: int, command: int = 0, table: int = 0xFF) -> bytes:
    """An OFPMP_FLOW_MONITOR request (1.4+) with an empty match."""
    body = struct.pack("!IIIHBB", mid, ANY, ANY, flags, table, command) + struct.pack("!HH4x", 1, 4)
    return struct.pack("!BBHIHH4x", version, 18, 16 + len(body), xid, 16, 0) + body


def nx_monitor_request(xid: int, mid: int, flags: int, table: int = 0xFF) -> bytes:
    """A NXST_FLOW_MONITOR request (OpenFlow 1.0) with an empty match."""
    body = struct.pack("!IHHHB5x", mid, flags, 0xFFFF, 0, table)
    return struct.pack("!BBHIHHII4x", OFP10, 16, 24 + len(body), xid, 0xFFFF, 0, 0x2320, 2) + body


def updates(msg: Msg) -> list[tuple[int, ...]]:
    """A flow-monitor reply's updates: (event, table, priority) of a full one, (event, xid) of an ABBREV."""
    body, out = bytes(msg.body), []
    if msg.type == "stats_reply":   # Nicira's statistics header first
        body = body[12:]
    while body:
        length, event = struct.unpack_from("!HH", body)
        assert 8 <= length <= len(body), body.hex()
        if length == 8:
            out.append((event, struct.unpack_from("!I", body, 4)[0]))
        else:
            table, priority = body[4], struct.unpack_from("!H", body, 10)[0]
            out.append((event, table, priority))
        body = body[length:]
    return out


def exchange(path: str, version: int, script: list[tuple[str, bytes]], raw_errors: bool = False) -> list[tuple]:
    """Two connections, ``a`` and ``b``; each (who, message) is sent and answered up to a barrier: what each got
    back, as (who, type, xid, updates or error type and code)."""
    conns = {who: Client(path, version) for who in ("a", "b")}
    got: list[tuple] = []
    try:
        for who, raw in script:
            c = conns[who]
            c.sock.sendall(raw)
            c.sock.sendall(encode(Msg(version, "barrier_request", 0xBA)))
            for name in sorted(conns, key=lambda n: n != who):
                conn = conns[name]
                if conn is not c:   # the other: what it got, up to a barrier sent once the actor's was answered
                    conn.sock.sendall(encode(Msg(version, "barrier_request", 0xBB)))
                while (msg := conn.recv()).type != "barrier_reply":
                    if msg.type == "error" and raw_errors:
                        got.append((name, "error", msg.xid, bytes(msg.data)))
                    elif msg.type == "error":
                        got.append((name, "error", msg.xid, msg.err_type, msg.code))
                    elif msg.type in ("multipart_reply", "stats_reply"):
                        got.append((name, msg.type, msg.xid, updates(msg)))
        for c in conns.values():
            assert c.echo().type == "echo_reply"   # the connection lives
    finally:
        for c in conns.values():
            c.sock.close()
    return got


def own_and_cancel_script(v: int) -> list[tuple[str, bytes]]:
    from tests.test_openflow15 import flow_add

    return [
        ("a", monitor_request(v, 0x10, 1, OFPFMF_DEFAULT)),                     # a: own changes abbreviated
        ("b", monitor_request(v, 0x11, 1, OFPFMF_DEFAULT | OFPFMF_ONLY_OWN)),   # b: own changes in full
        ("a", flow_add(v, 0x21, 3, priority=30)),       # a sees ABBREV(0x21), b the flow
        ("b", flow_add(v, 0x22, 3, priority=31)),       # b sees its own flow in full, so does a
        ("a", monitor_request(v, 0x12, 1, 0, command=2)),   # a cancels its monitor: an empty reply
        ("b", flow_add(v, 0x23, 4, priority=32)),       # only b hears of it
        ("b", monitor_request(v, 0x13, 1, OFPFMF_DEFAULT, command=1, table=4)),   # b's, modified: table 4's snapshot
    ]


@pytest.mark.parametrize("version", [OFP14, OFP15])
def test_own_changes_and_cancel_as_real_ovs(sw, real_ovs: RealOvs, version: int) -> None:  # noqa: ANN001
    """A monitor without "own" hears of its connection's changes as one ABBREV carrying the flow-mod's xid, with it
    in full; a cancelled monitor hears nothing more; a modified one gives the snapshot of its new selection: the
    same replies, update for update, as a real OVS."""
    results = []
    for target in (sw, real_ovs):
        ofctl(target, "del-flows", BR)
        results.append(exchange(f"{target.rundir}/{BR}.mgmt", version, own_and_cancel_script(version)))
    ours, theirs = results
    assert ours == theirs, (ours, theirs)
    assert ("a", "multipart_reply", 0, [(4, 0x21)]) in ours   # the ABBREV
    assert ("b", "multipart_reply", 0, [(1, 3, 30)]) in ours  # the full update


@pytest.mark.parametrize("version", [OFP10, OFP14, OFP15])
def test_bad_monitor_requests_get_errors_and_nothing_half_applies(sw, version: int) -> None:  # noqa: ANN001
    """A duplicate id, an unknown cancel, a bad command, flags or table get OVS's error codes (1.0: Nicira's
    BAD_REQUEST 517..519, 1.4+: OFPET_FLOW_MONITOR_FAILED); a request whose second monitor is refused adds
    neither, so a flow added afterwards reaches no monitor; the connection lives."""
    from tests.test_openflow15 import flow_add

    path = f"{sw.rundir}/{BR}.mgmt"
    ofctl(sw, "del-flows", BR)
    if version == OFP10:
        dup = nx_monitor_request(2, 1, 0x3F)
        script = [("a", nx_monitor_request(1, 1, 0x3F)), ("a", dup),
                  ("a", nx_monitor_request(3, 2, 0x40)), ("a", nx_monitor_request(4, 3, 0)),
                  ("a", struct.pack("!BBHIII", OFP10, 4, 20, 5, 0x2320, 21) + struct.pack("!I", 9))]
        got = exchange(path, version, script, raw_errors=True)
        # NXET_VENDOR errors: Nicira's vendor id, then OFPET_BAD_REQUEST and OVS's codes
        nx = [(g[2], struct.unpack_from("!IHH", g[3])) for g in got if g[1] == "error"]
        assert nx == [(2, (0x2320, 1, 517)), (3, (0x2320, 1, 518)), (4, (0x2320, 1, 518)), (5, (0x2320, 1, 519))], got
        return
    two = bytearray(monitor_request(version, 2, 5, OFPFMF_DEFAULT) + monitor_request(version, 2, 5, 0x80)[16:])
    struct.pack_into("!H", two, 2, len(two))
    script = [("a", monitor_request(version, 1, 1, OFPFMF_DEFAULT)),
              ("a", monitor_request(version, 2, 1, OFPFMF_DEFAULT)),            # duplicate id
              ("a", monitor_request(version, 3, 9, 0, command=2)),              # cancel of an unknown id
              ("a", monitor_request(version, 4, 2, OFPFMF_DEFAULT, command=7)),  # bad command
              ("a", monitor_request(version, 5, 3, 0x80)),                      # bad flags
              ("a", monitor_request(version, 6, 4, OFPFMF_DEFAULT, table=254)),  # no such table
              ("a", monitor_request(version, 8, 1, 0, command=2)),              # cancel the one monitor
              ("a", bytes(two)),                                                # 5 fine, its twin refused
              ("b", flow_add(version, 9, 3))]
    got = exchange(path, version, script)
    assert [g for g in got if g[1] == "error"] == [
        ("a", "error", 2, 16, 1), ("a", "error", 3, 16, 3), ("a", "error", 4, 16, 4), ("a", "error", 5, 16, 5),
        ("a", "error", 6, 16, 6), ("a", "error", 2, 16, 5)], got
    assert not [g for g in got if g[0] == "a" and g[2] == 0], got   # no monitor left: no update for the flow


def test_timeouts_and_group_deletes_are_told_with_their_reason(sw, real_ovs: RealOvs) -> None:  # noqa: ANN001
    """A flow whose hard timeout passes is DELETED with reason=hard; deleting a group deletes the flows that send
    to it, DELETED with reason=group_delete: as a real OVS tells them."""
    got = []
    for target in (sw, real_ovs):
        ofctl(target, "del-flows", BR)
        ofctl(target, "-O", "OpenFlow13", "del-groups", BR)
        w = Watch(target, "OpenFlow14", "!initial")
        try:
            w.until(lambda ln: "reply" in ln)
            ofctl(target, "add-flow", BR, "table=0,priority=7,in_port=2,hard_timeout=1,actions=drop")
            w.until(lambda ln: "reason=hard" in ln)
            ofctl(target, "-O", "OpenFlow13", "add-group", BR, "group_id=5,type=all,bucket=output:1")
            ofctl(target, "-O", "OpenFlow13", "add-flow", BR, "table=0,priority=8,in_port=3,actions=group:5")
            ofctl(target, "-O", "OpenFlow13", "del-groups", BR, "group_id=5")
            lines = w.until(lambda ln: "reason=group_delete" in ln)
        finally:
            w.stop()
        got.append([re.sub(r"xid=0x[1-9a-f][0-9a-f]*", "xid=X", ln) for ln in lines])
    assert got[0] == got[1], got


def test_a_refused_bundle_tells_the_monitors_nothing(sw) -> None:  # noqa: ANN001
    """A bundle whose last flow-mod fails at commit applies nothing, so a monitor hears of none of its flows; a
    bundle that commits is told as its flow-mods."""
    from tests.test_openflow15 import bundle_add, bundle_ctrl, flow_add

    v = OFP14
    ofctl(sw, "del-flows", BR)
    script = [("b", monitor_request(v, 1, 1, OFPFMF_DEFAULT)),
              ("a", bundle_ctrl(v, 2, 7, 0, 3)), ("a", bundle_add(v, 3, 7, flow_add(v, 3, 5, 40), 3)),
              ("a", bundle_add(v, 4, 7, flow_add(v, 4, 5, 40, flags=2, ip=False), 3)),   # overlaps: refused
              ("a", bundle_ctrl(v, 5, 7, 4, 3)),
              ("a", bundle_ctrl(v, 6, 8, 0, 3)), ("a", bundle_add(v, 7, 8, flow_add(v, 7, 6, 41), 3)),
              ("a", bundle_ctrl(v, 8, 8, 4, 3))]
    got = exchange(f"{sw.rundir}/{BR}.mgmt", v, script)
    told = [g for g in got if g[0] == "b" and g[2] == 0]
    assert told == [("b", "multipart_reply", 0, [(1, 6, 41)])], got
    assert ("a", "error", 5, 17, 12) in got or any(g[1] == "error" and g[2] == 5 for g in got), got


def test_a_monitor_that_falls_behind_is_paused_then_resumed(sw, tmp_path) -> None:  # noqa: ANN001
    """A monitoring connection that does not read while 5,000 flows arrive in one bundle falls more than 128 KiB
    behind: after their updates it is told PAUSED; then only deletions of flows it already knew reach it; once it
    has read all, the flows added meanwhile (ADDED) and RESUMED. Every flow is told once."""
    v = OFP14
    ofctl(sw, "del-flows", BR)
    c = Client(f"{sw.rundir}/{BR}.mgmt", v)
    try:
        c.sock.sendall(monitor_request(v, 1, 1, OFPFMF_DEFAULT | OFPFMF_ONLY_OWN))
        assert c.recv().type == "multipart_reply"   # the (empty) snapshot
        big = tmp_path / "flows.txt"
        big.write_text("".join(f"table=7,priority={p},ip,nw_dst=10.{p >> 8}.{p & 255}.1,"
                               f"actions=output:1,output:2,output:3,output:4,output:5\n" for p in range(1, 5001)))
        ofctl(sw, "-O", "OpenFlow14", "--bundle", "add-flows", BR, str(big))
        ofctl(sw, "add-flow", BR, "table=8,priority=1,actions=drop")        # while paused: told at the resume
        ofctl(sw, "add-flow", BR, "table=8,priority=2,actions=drop")
        ofctl(sw, "del-flows", BR, "table=7,ip,nw_dst=10.0.1.1")              # known before: told at once
        told: list[tuple[int, ...]] = []
        while (6, 0) not in told:   # RESUMED
            msg = c.recv()
            if msg.type == "multipart_reply":
                told += updates(msg)
    finally:
        c.sock.close()
    paused = told.index((5, 0))
    assert told[paused + 1:] == [(2, 7, 1), (1, 8, 1), (1, 8, 2), (6, 0)], told[paused:]
    # the bundle is one message: its 5,000 updates were queued whole, then the connection was paused
    assert sorted(told[:paused]) == [(1, 7, p) for p in range(1, 5001)], told[:5]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(version=st.sampled_from([OFP10, OFP13, OFP14, OFP15]), body=st.binary(max_size=80),
       head=st.tuples(st.integers(0, 3), st.integers(0, 0x7F), st.sampled_from([0, 1, 2, 7, 254, 255])))
def test_fuzzed_monitor_requests_get_an_answer_and_the_connection_lives(sw, version: int, body: bytes,
                                                                        head: tuple) -> None:  # noqa: ANN001
    """A flow monitor request with random flags, command, table and match bytes gets a reply or an error (never
    a failure of the switch), and an echo comes back on the same connection."""
    mid, flags, table = head
    if version == OFP10:
        req = struct.pack("!IHHHB5x", mid, flags, 0xFFFF, len(body), table) + body
        raw = struct.pack("!BBHIHHII4x", OFP10, 16, 24 + len(req), 7, 0xFFFF, 0, 0x2320, 2) + req
    elif version == OFP13:   # ONF's experimenter multipart
        req = struct.pack("!IHHIB3x", mid, flags, len(body), ANY, table) + body
        raw = struct.pack("!BBHIHH4xII", OFP13, 18, 24 + len(req), 7, 0xFFFF, 0, 0x4F4E4600, 1870) + req
    else:
        req = struct.pack("!IIIHBB", mid, ANY, ANY, flags, table, flags & 3) + body
        raw = struct.pack("!BBHIHH4x", version, 18, 16 + len(req), 7, 16, 0) + req
    got = exchange(f"{sw.rundir}/{BR}.mgmt", version, [("a", raw)])
    assert [g[1] for g in got] in (["error"], ["stats_reply"], ["multipart_reply"]), got
    assert "handling a message failed" not in sw.stderr()
