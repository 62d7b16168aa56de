"""OpenFlow meters (ofproto.meters, vswitch.openflow.groupmeter), with real peers.

* os-ken builds meter-mods, the 1.3 meter instruction and the 1.5 meter action to the same bytes as our codec;
* the real ``ovs-ofctl`` (-O OpenFlow13 / 14 / 15) against pyvswitch and a real ovs-vswitchd 3.1: add-meter,
  mod-meter, del-meters, dump-meters, meter-stats (durations blanked), meter-features print the same text, flows
  using meters dump the same, deleting a meter deletes its flows, and malformed meter-mods get the same errors;
* traffic: a pktps meter passes its burst and drops the excess, counted by the meter and the datapath; the
  metered flow's megaflow is cached (``dpctl/dump-flows`` shows it with its ``meter``) and paced traffic passes
  the meter's rate; ``controller(meter_id=N)`` sends the controllers N's rate of packet-ins (the frames still go
  on), the rest counted as N's drops.

The token buckets themselves (rates over simulated time, bands, the executor against its model):
tests/test_dp_meters.py.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator

import pytest
from os_ken.ofproto import ofproto_v1_3_parser as p13
from os_ken.ofproto import ofproto_v1_5_parser as p15
from os_ken.ofproto.ofproto_protocol import ProtocolDesc

from tests.netutil import send_frames, unique
from tests.switchutil import private_switch
from tests.test_bridge_identity import RealOvs, running_ovs
from tests.test_groups import _settled, _udp, ofctl
from tests.test_openflow15 import run_script
from vswitch.openflow.codec import OFP13, OFP15, OFP_NO_BUFFER, Msg, decode, encode

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sw() -> Iterator:
    """One pyvswitch for the module: bridge ``brm`` with internal ports p1, p2 (OpenFlow 1, 2)."""
    with private_switch(prefix="pvmtr-") as s:
        s.vsctl("add-br", "brm", "--", "add-port", "brm", "p1", "--", "set", "Interface", "p1", "type=internal",
                "ofport_request=1", "--", "add-port", "brm", "p2", "--", "set", "Interface", "p2", "type=internal",
                "ofport_request=2", "--", "set", "Bridge", "brm", "protocols=OpenFlow13,OpenFlow14,OpenFlow15")
        yield s


@pytest.fixture(scope="module")
def real_ovs() -> Iterator[RealOvs]:
    """A real ovs-vswitchd 3.1 with the same bridge on the userspace datapath."""
    with running_ovs("realovsmtr-", "brm") as ovs:
        ovs.vsctl("add-port", "brm", "p1", "--", "set", "Interface", "p1", "type=internal", "ofport_request=1",
                  "--", "add-port", "brm", "p2", "--", "set", "Interface", "p2", "type=internal",
                  "ofport_request=2", "--", "set", "Bridge", "brm", "protocols=OpenFlow13,OpenFlow14,OpenFlow15")
        yield ovs


# ---------------------------------------------------------------- os-ken: byte for byte
def test_meter_messages_match_os_ken_byte_for_byte() -> None:
    """A meter-mod with two drop bands, a 1.3 flow-mod with the meter instruction and a 1.5 flow-mod with the
    meter action: os-ken's bytes are ours, and ours decode back to the same fields."""
    dp13, dp15 = ProtocolDesc(version=OFP13), ProtocolDesc(version=OFP15)
    bands = [p13.OFPMeterBandDrop(rate=100, burst_size=10), p13.OFPMeterBandDrop(rate=200, burst_size=0)]
    ours_bands = [{"type": 1, "rate": 100, "burst_size": 10}, {"type": 1, "rate": 200, "burst_size": 0}]
    out = {"type": "output", "port": 2, "max_len": 0}
    pairs = [
        (p13.OFPMeterMod(dp13, command=0, flags=2 | 4 | 8, meter_id=7, bands=bands),
         Msg(OFP13, "meter_mod", 0, {"command": 0, "flags": 14, "meter_id": 7, "bands": ours_bands})),
        (p13.OFPFlowMod(dp13, table_id=0, command=0, priority=5, buffer_id=OFP_NO_BUFFER, out_port=0, out_group=0,
                        match=p13.OFPMatch(in_port=1), instructions=[
                            p13.OFPInstructionMeter(7), p13.OFPInstructionActions(4, [p13.OFPActionOutput(2, 0)])]),
         Msg(OFP13, "flow_mod", 0, {"table_id": 0, "command": 0, "priority": 5, "buffer_id": OFP_NO_BUFFER,
                                    "match": {"in_port": 1}, "instructions": [
                                        {"type": "meter", "meter_id": 7},
                                        {"type": "apply_actions", "actions": [out]}]})),
        (p15.OFPFlowMod(dp15, table_id=0, command=0, priority=5, buffer_id=OFP_NO_BUFFER, out_port=0, out_group=0,
                        match=p15.OFPMatch(in_port=1), instructions=[p15.OFPInstructionActions(4, [
                            p15.OFPActionMeter(7), p15.OFPActionOutput(2, 0)])]),
         Msg(OFP15, "flow_mod", 0, {"table_id": 0, "command": 0, "priority": 5, "buffer_id": OFP_NO_BUFFER,
                                    "match": {"in_port": 1}, "instructions": [
                                        {"type": "apply_actions", "actions": [{"type": "meter", "meter_id": 7},
                                                                              out]}]})),
    ]
    for theirs, ours in pairs:
        theirs.set_xid(0)
        theirs.serialize()
        assert bytes(theirs.buf) == encode(ours), (bytes(theirs.buf).hex(), encode(ours).hex())
        back = decode(bytes(theirs.buf))
        key = "bands" if ours.type == "meter_mod" else "instructions"
        assert [{k: v for k, v in x.items() if k in y} for x, y in zip(back.fields[key], ours.fields[key],
                                                                        strict=True)] == ours.fields[key]


# ---------------------------------------------------------------- ovs-ofctl against both switches
def _lines(text: str) -> list[str]:
    """Reply lines without the xid, durations blanked, sorted (the switches list meters in table order)."""
    text = re.sub(r"xid=0x[0-9a-f]+", "xid=?", re.sub(r"duration:[0-9.]+s", "duration:?", text))
    head, _, rest = text.partition("\n")
    blocks = [b.strip() for b in rest.split("\n\n")]   # a meter's lines stay together
    return [head, *sorted(b for b in blocks if b)]


METER_SCRIPT = [
    ("OpenFlow13", "add-meter", "meter=1,pktps,band=type=drop,rate=10"),
    ("OpenFlow13", "add-meter", "meter=1,pktps,band=type=drop,rate=10"),                        # exists
    ("OpenFlow14", "add-meter", "meter=2,kbps,burst,stats,band=type=drop,rate=1000,burst_size=100"),
    ("OpenFlow13", "add-meter", "meter=3,kbps,band=type=dscp_remark,rate=1000,prec_level=1"),    # bad band
    ("OpenFlow13", "add-meter", "meter=6,kbps,pktps,band=type=drop,rate=1"),                      # bad flags
    ("OpenFlow15", "add-meter", "meter=300000,pktps,band=type=drop,rate=10"),
    ("OpenFlow13", "mod-meter", "meter=99,pktps,band=type=drop,rate=10"),                         # unknown
    ("OpenFlow15", "mod-meter", "meter=1,pktps,stats,band=type=drop,rate=20"),
    ("OpenFlow13", "add-flow", "in_port=1,actions=meter:1,output:2"),
    ("OpenFlow13", "add-flow", "in_port=1,actions=meter:55,output:2"),                            # no meter
    ("OpenFlow15", "add-flow", "in_port=2,actions=meter:1,output:1"),
    ("OpenFlow14", "add-flow", "table=1,in_port=2,actions=meter:2,output:1"),
]


def test_ovs_ofctl_meters_as_real_ovs(sw, real_ovs: RealOvs) -> None:  # noqa: ANN001
    """The same meter commands against pyvswitch and a real ovs-vswitchd: the same errors (or none); the same
    dump-meters, meter-stats, meter-features and dump-flows text in 1.3, 1.4 and 1.5; deleting a meter deletes the
    flows that use it."""
    for proto, cmd, arg in METER_SCRIPT:
        ours = ofctl(sw, "-O", proto, cmd, "brm", arg, check=False)
        real = ofctl(real_ovs, "-O", proto, cmd, "brm", arg, check=False)
        assert ours.returncode == real.returncode, (cmd, arg, ours.stderr, real.stderr)
        assert ours.stderr.splitlines()[:1] == real.stderr.splitlines()[:1], (cmd, arg, ours.stderr, real.stderr)
    for proto in ("OpenFlow13", "OpenFlow14", "OpenFlow15"):
        for cmd in ("dump-meters", "meter-stats", "meter-features"):
            ours, real = ofctl(sw, "-O", proto, cmd, "brm").stdout, ofctl(real_ovs, "-O", proto, cmd, "brm").stdout
            assert _lines(ours) == _lines(real), (proto, cmd, ours, real)
        ours, real = (ofctl(t, "-O", proto, "dump-flows", "brm", "--no-stats").stdout for t in (sw, real_ovs))
        assert sorted(ln for ln in ours.splitlines() if "meter" in ln) == \
            sorted(ln for ln in real.splitlines() if "meter" in ln), (proto, ours, real)
    assert "flow_count:2" in ofctl(sw, "-O", "OpenFlow13", "meter-stats", "brm", "meter=1").stdout
    for target in (sw, real_ovs):
        ofctl(target, "-O", "OpenFlow13", "del-meters", "brm", "meter=1")
    ours, real = (ofctl(t, "-O", "OpenFlow13", "dump-flows", "brm", "--no-stats").stdout for t in (sw, real_ovs))
    assert "meter:1" not in ours and "meter:2" in ours, ours
    assert sorted(ln for ln in ours.splitlines() if "meter" in ln) == \
        sorted(ln for ln in real.splitlines() if "meter" in ln)
    for target in (sw, real_ovs):
        ofctl(target, "-O", "OpenFlow13", "del-meters", "brm")
        ofctl(target, "-O", "OpenFlow13", "del-flows", "brm")
    assert ofctl(sw, "-O", "OpenFlow13", "dump-meters", "brm").stdout.strip().endswith("(xid=0x2):")


# ---------------------------------------------------------------- errors on the wire
def _mm(xid: int, command: int, flags: int, meter_id: int, bands: list[dict]) -> bytes:
    return encode(Msg(OFP13, "meter_mod", xid, {"command": command, "flags": flags, "meter_id": meter_id,
                                                "bands": bands}))


def _drop(rate: int, burst: int = 0) -> dict:
    return {"type": 1, "rate": rate, "burst_size": burst}


METER_ERRORS = {
    "kbps and pktps": [_mm(20, 0, 3, 1, [_drop(5)])],
    "neither kbps nor pktps": [_mm(21, 0, 0, 2, [_drop(5)])],
    "rate 0": [_mm(22, 0, 2, 3, [_drop(0)])],
    "no bands": [_mm(23, 0, 2, 4, [])],
    "dscp remark band": [_mm(24, 0, 2, 5, [{"type": 2, "rate": 5, "burst_size": 0, "prec_level": 1}])],
    "meter id 0": [_mm(25, 0, 2, 0, [_drop(5)])],
    "meter id above OFPM_MAX": [_mm(26, 0, 2, 0xFFFF0001, [_drop(5)])],
    "meter id ALL": [_mm(27, 0, 2, 0xFFFFFFFF, [_drop(5)])],
    "nine bands": [_mm(28, 0, 2, 6, [_drop(i + 1) for i in range(9)])],
    "two bands": [_mm(29, 0, 2, 7, [_drop(5), _drop(10)])],
    "bad command": [_mm(30, 7, 2, 8, [_drop(5)])],
    "burst size without the burst flag": [_mm(31, 0, 2, 9, [_drop(5, 100)])],
    "burst flag without a burst size": [_mm(32, 0, 6, 10, [_drop(5, 0)])],
    "unknown band type": [_mm(33, 0, 2, 11, [{"type": 7, "rate": 5, "burst_size": 0}])],
    "meter id above max_meter": [_mm(34, 0, 2, 262145, [_drop(5)])],
    "delete an unknown meter": [_mm(35, 2, 0, 4242, [])],
}


def test_meter_mod_errors_as_real_ovs_sends_them(sw, real_ovs: RealOvs) -> None:  # noqa: ANN001
    """Each meter-mod gets the same error (by xid, type and code; or none) from pyvswitch and from OVS, and the
    connection lives; what was accepted dumps the same."""
    refused = 0
    for what, script in METER_ERRORS.items():
        ours = run_script(f"{sw.rundir}/brm.mgmt", OFP13, script)
        theirs = run_script(f"{real_ovs.rundir}/brm.mgmt", OFP13, script)
        assert ours == theirs, (what, ours, theirs)
        refused += bool(ours)
    assert refused >= 10, refused
    ours, real = (ofctl(t, "-O", "OpenFlow13", "dump-meters", "brm").stdout for t in (sw, real_ovs))
    assert _lines(ours) == _lines(real) and "meter=7" in ours, (ours, real)
    for target in (sw, real_ovs):
        ofctl(target, "-O", "OpenFlow13", "del-meters", "brm")


# ---------------------------------------------------------------- traffic
def test_a_pktps_meter_drops_the_excess_counted(switch, net) -> None:  # noqa: ANN001
    """200 frames at once through ``meter=1,pktps,band=type=drop,rate=10`` (a bucket of 10 packets): about 10
    leave, the rest are dropped; meter-stats counts every frame in and the band's drops, and the datapath counts
    them as ``flow_meter_drop``. With the meter raised (mod-meter) the same burst goes through."""
    stem = unique("mtr")
    br = f"{stem}s"
    mac = "02:00:00:00:7a:01"
    net.add_host(f"{stem}-na", f"{stem}a", "10.79.1.1/24", mac=mac)
    net.add_host(f"{stem}-nb", f"{stem}b", "10.79.1.2/24")
    switch.vsctl("add-br", br, "--", "set-fail-mode", br, "secure",
                 *[x for i, p in enumerate("ab", 1) for x in ("--", "add-port", br, f"{stem}{p}", "--", "set",
                                                              "Interface", f"{stem}{p}", f"ofport_request={i}")])
    of = lambda *a: ofctl(switch, "-O", "OpenFlow13", *a)   # noqa: E731
    of("add-meter", br, "meter=1,pktps,stats,band=type=drop,rate=10")
    of("add-flow", br, "in_port=1,actions=meter:1,output:2")
    before = _settled(switch, br)
    sent = send_frames(net, f"{stem}-na", "eth0", [_udp(mac, 5000 + i % 7) for i in range(200)])
    assert sent == 200
    after = _settled(switch, br)
    passed = after[2] - before[2]
    assert 10 <= passed <= 40, (before, after)
    stats = of("meter-stats", br, "meter=1").stdout
    m = re.search(r"packet_in_count:(\d+).*\n0: packet_count:(\d+)", stats)
    assert m, stats
    seen, dropped = int(m.group(1)), int(m.group(2))
    assert seen >= 200 and dropped >= 160 and seen - dropped <= passed + 4, stats   # (stray host frames too)
    coverage = switch.appctl("coverage/show").stdout
    c = re.search(r"flow_meter_drop\s+total: (\d+)", coverage)
    assert c and int(c.group(1)) == dropped, coverage
    of("mod-meter", br, "meter=1,pktps,stats,band=type=drop,rate=100000")
    before = _settled(switch, br)
    send_frames(net, f"{stem}-na", "eth0", [_udp(mac, 5000 + i % 7) for i in range(200)])
    after = _settled(switch, br)
    assert after[2] - before[2] >= 200, (before, after)


def test_ovn_meter_dumps_as_in_the_fixture(sw) -> None:  # noqa: ANN001
    """OVN's ACL-log meter (tests/fixtures/ovn-23.03-flows/meters-chB.txt), added with ovs-ofctl 1.5: dump-meters
    prints exactly the fixture's text."""
    with open("tests/fixtures/ovn-23.03-flows/meters-chB.txt") as f:
        want = f.read()
    ofctl(sw, "-O", "OpenFlow15", "add-meter", "brm", "meter=1,pktps,stats,band=type=drop,rate=100")
    try:
        assert ofctl(sw, "-O", "OpenFlow15", "dump-meters", "brm").stdout == want
    finally:
        ofctl(sw, "-O", "OpenFlow15", "del-meters", "brm")


def _metered_bridge(switch, net, stem: str, mac: str, *extra: str) -> tuple[str, object]:  # noqa: ANN001
    """A secure bridge ``{stem}s`` between hosts ``{stem}-na`` (port 1, MAC ``mac``) and ``{stem}-nb`` (port 2);
    ``extra``: more ovs-vsctl arguments. The bridge and an OpenFlow 1.3 ovs-ofctl."""
    br = f"{stem}s"
    net.add_host(f"{stem}-na", f"{stem}a", "10.79.2.1/24", mac=mac)
    net.add_host(f"{stem}-nb", f"{stem}b", "10.79.2.2/24")
    switch.vsctl("add-br", br, "--", "set-fail-mode", br, "secure",
                 *[x for i, p in enumerate("ab", 1) for x in ("--", "add-port", br, f"{stem}{p}", "--", "set",
                                                              "Interface", f"{stem}{p}", f"ofport_request={i}")],
                 *extra)
    return br, lambda *a: ofctl(switch, "-O", "OpenFlow13", *a)


def _paced(net, ns: str, mac: str, chunks: int, per_chunk: int, gap: float) -> float:  # noqa: ANN001
    """``chunks`` sends of ``per_chunk`` UDP frames, ``gap`` seconds apart; the seconds from the first send's
    end to the last's."""
    t0 = t1 = 0.0
    for c in range(chunks):
        assert send_frames(net, ns, "eth0", [_udp(mac, 6000 + i % 5) for i in range(per_chunk)]) == per_chunk
        t1 = time.monotonic()
        t0 = t0 or t1
        if c < chunks - 1:
            time.sleep(gap)
    return t1 - t0


def test_metered_megaflow_is_cached_and_paced_traffic_passes_the_rate(switch, net) -> None:  # noqa: ANN001
    """``udp,in_port=1,actions=meter:1,output:2`` with a 20 pktps meter: 200 frames sent over about two seconds
    pass the bucket (20) and 20 a second, the rest dropped by the datapath; ``dpctl/dump-flows`` lists one
    megaflow with the meter that took every frame (no upcall per frame); meter-stats counts them all. Deleting
    the meter deletes its flow and the megaflow: the next frames miss."""
    stem = unique("mtc")
    mac = "02:00:00:00:7a:11"
    br, of = _metered_bridge(switch, net, stem, mac)
    of("add-meter", br, "meter=1,pktps,stats,band=type=drop,rate=20")
    of("add-flow", br, "udp,in_port=1,actions=meter:1,output:2")
    before = _settled(switch, br)
    elapsed = _paced(net, f"{stem}-na", mac, 10, 20, 0.2)
    after = _settled(switch, br)
    passed = after[2] - before[2]
    assert 20 + 20 * elapsed * 0.8 - 3 <= passed <= 20 + 20 * (elapsed + 0.5) + 3, (passed, elapsed)
    flows = [ln for ln in switch.appctl("dpctl/dump-flows").stdout.splitlines() if "meter(" in ln]
    assert len(flows) == 1, flows
    m = re.search(r"packets:(\d+).*actions:meter\(\d+\),\d+$", flows[0])
    assert m and int(m.group(1)) == 200, flows
    stats = of("meter-stats", br, "meter=1").stdout
    m = re.search(r"packet_in_count:(\d+).*\n0: packet_count:(\d+)", stats)
    assert m and int(m.group(1)) == 200 and int(m.group(1)) - int(m.group(2)) == passed, stats
    of("del-meters", br, "meter=1")       # its flow goes, and the megaflow with it: the frames now miss
    assert "meter" not in of("dump-flows", br).stdout
    _paced(net, f"{stem}-na", mac, 1, 20, 0)
    assert _settled(switch, br)[2] == after[2]
    assert not [ln for ln in switch.appctl("dpctl/dump-flows").stdout.splitlines() if "meter(" in ln]


def test_controller_meter_limits_the_packet_ins(switch, net, tmp_path) -> None:  # noqa: ANN001
    """``controller(meter_id=1),output:2`` with a 10 pktps meter and a controller listening: a flood of 200 frames
    over about two seconds gives the controller the bucket (10) and 10 packet-ins a second; every frame still
    reaches port 2; meter-stats counts the packet-ins that were not sent as the band's drops."""
    stem = unique("mtp")
    mac = "02:00:00:00:7a:21"
    path = str(tmp_path / "ctl.sock")
    br, of = _metered_bridge(switch, net, stem, mac, "--", "set-controller", f"{stem}s", f"punix:{path}")
    of("add-meter", br, "meter=1,pktps,stats,band=type=drop,rate=10")
    of("add-flow", br, "udp,in_port=1,actions=controller(meter_id=1),output:2")
    assert "controller(meter_id=1)" in of("dump-flows", br).stdout
    mon = subprocess.Popen(["stdbuf", "-oL", "ovs-ofctl", "monitor", f"unix:{path}"], env=switch.env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        switch.wait_for("monitor connected", lambda: switch.get("Controller", br, "is_connected") == "true")
        time.sleep(0.5)
        before = _settled(switch, br)
        elapsed = _paced(net, f"{stem}-na", mac, 10, 20, 0.2)
        after = _settled(switch, br)
    finally:
        mon.terminate()
        out, _ = mon.communicate(timeout=10)
    pins = sum("PACKET_IN" in ln for ln in out.splitlines())
    assert 10 + 10 * elapsed * 0.8 - 2 <= pins <= 10 + 10 * (elapsed + 0.5) + 2, (pins, elapsed, out[-2000:])
    assert after[2] - before[2] == 200, (before, after)
    stats = of("meter-stats", br, "meter=1").stdout
    m = re.search(r"packet_in_count:(\d+).*\n0: packet_count:(\d+)", stats)
    assert m and int(m.group(1)) == 200 and int(m.group(2)) == 200 - pins, (stats, pins)
