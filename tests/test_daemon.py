"""``pyvswitch run`` driven by the real ovs-vsctl and ovs-appctl, against a real ovsdb-server.

Each test has its own rundir (OVS_RUNDIR) and namespaces, and checks that the daemon leaves no
process, socket or device behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from tests.netutil import mac_of, unique
from tests.switchutil import Switch
from vswitch.hostnet import HostNet
from vswitch.ovsdb_server import OvsdbServer

pytestmark = pytest.mark.integration


def hosts(net: HostNet, stem: str, n: int, subnet: str) -> list[str]:
    ends = []
    for i in range(n):
        ends.append(f"{stem}{i}")
        net.add_host(f"{stem}{i}", f"{stem}{i}", f"{subnet}.{i + 1}/24")
    return ends


def test_ovs_vsctl_and_ovs_appctl_drive_the_switch(switch: Switch, net: HostNet) -> None:
    stem = unique()
    br = f"{stem}br"
    a, b = hosts(net, stem, 2, "10.81.0")
    switch.vsctl("add-br", br)
    t0 = time.monotonic()
    switch.vsctl("add-port", br, a)
    switch.vsctl("add-port", br, b)
    assert time.monotonic() - t0 < 5
    show = switch.vsctl("show").stdout
    assert f"Bridge {br}" in show and f"Port {a}" in show and f"Interface {b}" in show
    assert switch.vsctl("get", "Interface", a, "ofport").stdout.strip() == "1"
    assert switch.vsctl("get", "Interface", b, "ofport").stdout.strip() == "2"
    assert switch.vsctl("get", "Interface", br, "ofport").stdout.strip() == "65534"
    listing = switch.vsctl("list", "Interface", a).stdout
    assert 'link_state          : up' in listing and "mac_in_use" in listing
    assert switch.vsctl("get", "Open_vSwitch", ".", "ovs_version").stdout.strip() == '"0.1.0"'
    assert len(switch.vsctl("get", "Bridge", br, "datapath_id").stdout.strip().strip('"')) == 16

    assert net.ping(f"{stem}0", "10.81.0.2")
    fdb = switch.appctl("fdb/show", br).stdout.splitlines()
    assert fdb[0] == " port  VLAN  MAC                Age"
    rows = {tuple(line.split()[:3]) for line in fdb[1:]}
    assert ("1", "0", mac_of(net, f"{stem}0")) in rows and ("2", "0", mac_of(net, f"{stem}1")) in rows
    assert switch.appctl("version").stdout.strip() == "ovs-vswitchd (pyvswitch) 0.1.0"
    dpif = switch.appctl("dpif/show").stdout
    assert f"    {a} 1/" in dpif and f"    {br} 65534/" in dpif and "(type internal)" in dpif
    stats = switch.appctl("fdb/stats-show", br).stdout
    assert "Current/maximum MAC entries in the table: 2/8192" in stats
    assert switch.vsctl("get", "Interface", a, "link_speed").stdout.strip() == "10000000000"  # veth: 10 Gb/s
    assert "driver_name=veth" in switch.vsctl("get", "Interface", a, "status").stdout
    assert net.ping(f"{stem}0", "10.81.0.2", count=1)
    switch.vsctl("set", "Bridge", br, "other_config:mac-table-size=100", "other_config:mac-aging-time=42")
    stats = switch.appctl("fdb/stats-show", br).stdout
    assert "table: 2/100\n" in stats and "MAC aging time (seconds)                : 42" in stats  # entries kept
    # Out-of-range sizes are clamped like OVS does (10 .. 1,000,000), never fatal.
    switch.vsctl("set", "Bridge", br, "other_config:mac-table-size=2000000000")
    assert "/1000000\n" in switch.appctl("fdb/stats-show", br).stdout
    switch.vsctl("set", "Bridge", br, "other_config:mac-table-size=0")
    assert "/10\n" in switch.appctl("fdb/stats-show", br).stdout
    assert switch.appctl("fdb/stats-clear", br).stdout.strip() == "statistics successfully cleared"
    assert "fdb/stats-show" in switch.appctl("list-commands").stdout
    assert "syslog" in switch.appctl("vlog/set", "vswitch:syslog:dbg", check=False).stderr
    assert net.ping(f"{stem}0", "10.81.0.2", count=1)
    assert switch.appctl("fdb/flush", br).stdout.strip() == "table successfully flushed"
    assert switch.appctl("fdb/show", br).stdout.splitlines()[1:] == []
    assert "never hit" in switch.appctl("coverage/show").stdout
    assert "bridges:1 ports:3" in switch.appctl("memory/show").stdout
    assert "vswitch.datapath" in switch.appctl("vlog/list").stdout
    switch.appctl("vlog/set", "vswitch:file:dbg")
    assert switch.appctl("vlog/set", "nonsense:bogus", check=False).returncode != 0
    pmd = switch.appctl("dpif-pyvswitch/pmd-stats-show").stdout
    assert "pmd thread datapath:" in pmd and "avg. packets per burst" in pmd   # one datapath thread for all bridges
    assert int(pmd.split("packets received: ")[1].split()[0]) >= 4
    assert switch.appctl("fdb/show", "nosuchbr", check=False).returncode != 0
    bad = switch.appctl("fdb/show", check=False)
    assert bad.returncode != 0 and bad.stderr.startswith('"fdb/show" command requires at least 1 arguments\n')
    # Statistics are written back every 5 seconds.
    deadline = time.monotonic() + 8
    while "rx_packets" not in switch.vsctl("get", "Interface", a, "statistics").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    # An internal port: pyvswitch creates the host interface, and removes it with the port.
    internal = f"{stem}i"
    switch.vsctl("add-port", br, internal, "--", "set", "Interface", internal, "type=internal")
    assert switch.vsctl("get", "Interface", internal, "ofport").stdout.strip() == "3"
    assert os.path.exists(f"/sys/class/net/{internal}")
    assert switch.vsctl("get", "Interface", internal, "mac_in_use").stdout.strip().strip('"') == open(
        f"/sys/class/net/{internal}/address").read().strip()
    switch.vsctl("del-port", br, internal)
    assert not os.path.exists(f"/sys/class/net/{internal}")
    switch.vsctl("del-port", br, a)
    assert f"Port {a}" not in switch.vsctl("show").stdout
    assert not net.ping(f"{stem}0", "10.81.0.2", count=1, deadline=2)


def test_vlan_tag_change_takes_effect_live(switch: Switch, net: HostNet) -> None:
    stem = unique()
    br = f"{stem}br"
    a, b = hosts(net, stem, 2, "10.82.0")
    switch.vsctl("add-br", br)
    switch.vsctl("add-port", br, a, "tag=10")
    switch.vsctl("add-port", br, b, "tag=10")
    assert net.ping(f"{stem}0", "10.82.0.2")
    switch.vsctl("set", "Port", b, "tag=20")
    assert not net.ping(f"{stem}0", "10.82.0.2", count=2, deadline=2)
    switch.vsctl("set", "Port", b, "tag=10")
    assert net.ping(f"{stem}0", "10.82.0.2")
    fdb = switch.appctl("fdb/show", br).stdout
    assert f"   10  {mac_of(net, f'{stem}0')}" in fdb


def test_pmd_stats_count_processing_not_waits_or_compiles(switch: Switch, net: HostNet) -> None:
    """``dpif-netdev/pmd-stats-show`` after pings from a fresh start: every frame is counted, and the processing
    time per packet is what forwarding costs (microseconds), not the datapath's sleeps between pings (100 ms) nor
    kernels compiled on the first frames (seconds): ``make demo`` once printed ``5962344 ns/pkt`` for 35 pings."""
    stem = unique()
    br = f"{stem}br"
    a, b = hosts(net, stem, 2, "10.83.0")
    switch.vsctl("add-br", br)
    switch.vsctl("add-port", br, a)
    switch.vsctl("add-port", br, b)
    pings = 20
    out = net.exec(a, ["ping", "-c", str(pings), "-i", "0.1", "-W", "1", "-w", "15", "10.83.0.2"], check=False,
                   timeout=20).stdout
    assert f"{pings} received" in out, out
    pmd = switch.appctl("dpif-netdev/pmd-stats-show", br).stdout
    packets = int(re.search(r"packets received: (\d+)", pmd).group(1))
    assert packets >= 2 * pings, pmd                      # each request and each reply crossed the switch
    got = re.search(r"avg\. processing cycles per packet: (\d+) \((\d+) ns/pkt\)", pmd)
    assert got, pmd
    cycles, ns = int(got.group(1)), int(got.group(2))
    # Measured, and what forwarding one frame costs here (70-150 us in bursts of one); counting the sleeps between
    # pings would give over 50 ms per packet, a kernel compiled on the first frames more than 25 ms.
    assert 0 < ns < 2_000_000 and cycles > 0, pmd
    switch.appctl("dpif-netdev/pmd-stats-clear", br)      # OVS's name for it works too
    cleared = switch.appctl("dpif-netdev/pmd-stats-show", br).stdout
    assert int(re.search(r"packets received: (\d+)", cleared).group(1)) < pings, cleared   # (a stray ARP may come)


def test_bad_ports_get_an_error_and_do_not_disturb_the_others(switch: Switch, net: HostNet) -> None:
    stem = unique()
    br = f"{stem}br"
    a, b = hosts(net, stem, 2, "10.83.0")
    switch.vsctl("add-br", br)
    switch.vsctl("add-port", br, a)
    switch.vsctl("add-port", br, b)
    missing = f"{stem}x"
    proc = switch.vsctl("add-port", br, missing, check=False)
    assert f"Error detected while setting up '{missing}'" in proc.stderr
    assert "no such network device" in switch.vsctl("get", "Interface", missing, "error").stdout
    assert switch.vsctl("get", "Interface", missing, "ofport").stdout.strip() == "-1"
    proc = switch.vsctl("add-port", br, "weird0", "--", "set", "Interface", "weird0", "type=lisp", check=False)
    assert "unsupported interface type 'lisp'" in switch.vsctl("get", "Interface", "weird0", "error").stdout
    assert net.ping(f"{stem}0", "10.83.0.2")
    # The device appears: the port is retried and comes up without any command.
    net.add_host(f"{stem}x", missing, "10.83.0.3/24")
    deadline = time.monotonic() + 6
    while switch.vsctl("get", "Interface", missing, "ofport").stdout.strip() in ("-1", "[]"):
        assert time.monotonic() < deadline, switch.vsctl("get", "Interface", missing, "error").stdout
        time.sleep(0.3)
    assert switch.vsctl("get", "Interface", missing, "error").stdout.strip() == "[]"
    assert net.ping(f"{stem}x", "10.83.0.1")


def test_restart_keeps_configuration_and_ofports_and_applies_offline_changes(net: HostNet) -> None:
    stem = unique()
    br = f"{stem}br"
    a, b, c = hosts(net, stem, 3, "10.84.0")
    with tempfile.TemporaryDirectory(prefix="pvdb-") as dbdir, tempfile.TemporaryDirectory(prefix="pvrun-") as rundir:
        server = OvsdbServer(dbdir)
        server.start()
        sw = Switch(rundir, db=server.remote)
        try:
            sw.start()
            sw.vsctl("add-br", br)
            sw.vsctl("add-port", br, a)
            sw.vsctl("add-port", br, b)
            sw.vsctl("add-port", br, c, "--", "set", "Interface", c, "ofport_request=7")
            sw.vsctl("del-port", br, a)  # leaves ofport 1 free
            before = {p: sw.vsctl("get", "Interface", p, "ofport").stdout.strip() for p in (b, c)}
            assert before == {b: "2", c: "7"}
            code, err = sw.stop()
            assert code == 0, err
            # While pyvswitch is down: a new port and a VLAN change.
            sw.vsctl("--no-wait", "add-port", br, a)
            sw.vsctl("--no-wait", "set", "Port", c, "tag=30")
            sw.start()
            sw.vsctl("--no-wait", "--", "--if-exists", "del-port", br, "nonexistent")
            deadline = time.monotonic() + 5
            while sw.vsctl("get", "Interface", a, "ofport").stdout.strip() in ("[]", "-1"):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            after = {p: sw.vsctl("get", "Interface", p, "ofport").stdout.strip() for p in (b, c)}
            assert after == before
            assert net.ping(f"{stem}0", "10.84.0.2")
            assert not net.ping(f"{stem}0", "10.84.0.3", count=1, deadline=2)  # c is now in VLAN 30
        finally:
            if sw.proc is not None:
                sw.stop()
            server.stop()


def test_demo_runs_through_ovsdb_and_cleans_up() -> None:
    proc = subprocess.run([sys.executable, "-m", "vswitch.cli", "demo"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all pings passed" in proc.stdout and " port  VLAN  MAC" in proc.stdout
    assert "ovs-vsctl add-port pvdemo pvdemo-tap -- set Interface pvdemo-tap type=tap" in proc.stdout
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "pvdemo" not in left
    assert "pvdemo" not in subprocess.run(["ip", "link"], capture_output=True, text=True).stdout


def test_detach_then_ovs_appctl_exit_stops_everything() -> None:
    with tempfile.TemporaryDirectory(prefix="pvrun-") as rundir:
        env = dict(os.environ, OVS_RUNDIR=rundir)
        proc = subprocess.run([sys.executable, "-m", "vswitch.cli", "run", "--detach", "--rundir", rundir],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "running" in proc.stdout, proc.stdout + proc.stderr
        pid = int(open(os.path.join(rundir, "ovs-vswitchd.pid")).read())
        out = subprocess.run(["ovs-appctl", "version"], capture_output=True, text=True, env=env, timeout=20)
        assert out.stdout.strip() == "ovs-vswitchd (pyvswitch) 0.1.0"
        subprocess.run(["ovs-appctl", "exit"], capture_output=True, env=env, timeout=20, check=True)
        deadline = time.monotonic() + 15

        def alive() -> bool:
            try:
                with open(f"/proc/{pid}/status") as f:
                    return "\nState:\tZ" not in f.read()
            except FileNotFoundError:
                return False

        while alive():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert not [f for f in os.listdir(rundir) if f.endswith((".pid", ".ctl", ".sock"))]
        assert subprocess.run(["pgrep", "-f", f"ovsdb-server {rundir}"], capture_output=True).returncode == 1


def test_sighup_reopens_the_log_file(net: HostNet) -> None:
    stem = unique()
    br = f"{stem}br"
    (a,) = hosts(net, stem, 1, "10.85.0")
    with tempfile.TemporaryDirectory(prefix="pvrun-") as rundir:
        log_path = os.path.join(rundir, "pyvswitch.log")
        env = dict(os.environ, OVS_RUNDIR=rundir)
        proc = subprocess.Popen([sys.executable, "-m", "vswitch.cli", "run", "--rundir", rundir,
                                 "--log-file", log_path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert "running" in proc.stdout.readline()
            subprocess.run(["ovs-vsctl", "add-br", br], env=env, check=True, timeout=20)
            assert f"created bridge {br}" in open(log_path).read()
            os.rename(log_path, log_path + ".1")  # what logrotate does
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            subprocess.run(["ovs-vsctl", "add-port", br, a], env=env, check=True, timeout=20)
            assert f"added system port {a}" in open(log_path).read()
            assert f"added system port {a}" not in open(log_path + ".1").read()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=20)
        assert proc.returncode == 0
