"""``pyvswitch vm`` for real: QEMU guests (TCG) started by the launcher on a running ``pyvswitch run``.

One bridge carries two guests on vhost-user NICs, one guest on a tap NIC and a namespace host on a
system port. The guests boot once for the whole module (~5 s each under TCG) and the tests run in
file order: pings between all four, start errors, a switch restart under the running guests, and
``vm stop`` last. Guests run commands through their serial console socket (``vm console``'s socket).
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.guest import guest_image
from tests.netutil import unique
from tests.switchutil import Switch
from vswitch.hostnet import HostNet
from vswitch.vm import stable_mac

pytestmark = pytest.mark.integration
BRIDGE = "vmbr"
SUBNET = "10.94.0"
HOST_IP = f"{SUBNET}.1"


@dataclass
class Lab:
    """The shared switch, namespace host and guests (``vms``: name -> IP)."""

    switch: Switch
    net: HostNet
    host_ns: str
    vms: dict[str, str]

    def pyvswitch(self, *args: str, stdin: str | None = None, timeout: float = 200) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "vswitch.cli", "vm", *args, "--rundir", self.switch.rundir],
                              input=stdin, capture_output=True, text=True, timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "vswitch.cli", "vm", "start", *args,
                                 "--rundir", self.switch.rundir],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def status(self, name: str) -> dict:
        proc = self.pyvswitch("status", name, "--json")
        return json.loads(proc.stdout)

    def vm_name(self, letter: str) -> str:
        return next(n for n in self.vms if n.endswith(letter))

    def guest_run(self, vm: str, command: str, timeout: float = 30) -> str:
        """Run ``command`` on ``vm``'s console; returns the output up to its exit status line."""
        marker = f"DONE{unique('')}"
        path = Path(self.switch.rundir, "vms", vm, "console.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(path))
            sock.settimeout(1)
            sock.sendall(f"{command}; echo {marker}-$?\n".encode())
            deadline = time.monotonic() + timeout
            out = b""
            while time.monotonic() < deadline:
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                out += data
                text = out.decode(errors="replace").replace("\r", "")
                m = re.search(rf"^{marker}-(\d+)$", text, re.M)
                if m:
                    return text
        raise AssertionError(f"{vm}: {command!r} did not finish within {timeout} s:\n{out.decode(errors='replace')}")

    def guest_ping(self, vm: str, ip: str, tries: int = 3) -> bool:
        """True once one of ``tries`` single pings from ``vm`` to ``ip`` is answered."""
        for _ in range(tries):
            out = self.guest_run(vm, f"ping -c 1 -W 2 {ip} >/dev/null")
            if re.search(r"^DONE\w*-0$", out, re.M):
                return True
        return False


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    guest_image()   # builds the test image once (skips without root or QEMU; a failure in CI)
    stem = unique()
    with tempfile.TemporaryDirectory(prefix="pvvm-") as rundir:
        switch = Switch(rundir)
        switch.start()
        net = HostNet()
        lab = Lab(switch, net, f"{stem}h", {f"{stem}a": f"{SUBNET}.11", f"{stem}b": f"{SUBNET}.12",
                                            f"{stem}c": f"{SUBNET}.13"})
        try:
            switch.vsctl("add-br", BRIDGE)
            net.add_host(lab.host_ns, f"{stem}s", f"{HOST_IP}/24")
            switch.vsctl("add-port", BRIDGE, f"{stem}s")
            kinds = ["vhost-user", "vhost-user", "tap"]
            procs = [lab.start(name, "--memory", "256M", "--nic", f"{kind},bridge={BRIDGE}", "--ip", f"{ip}/24")
                     for (name, ip), kind in zip(lab.vms.items(), kinds, strict=True)]
            for proc in procs:   # the three boot side by side
                out, err = proc.communicate(timeout=300)
                assert proc.returncode == 0, f"vm start failed:\n{err}\n{out}"
            yield lab
        finally:
            for name in lab.vms:
                lab.pyvswitch("stop", name, "--timeout", "5", timeout=60)
            subprocess.run(["pkill", "-9", "-f", f"{rundir}/vms/"], capture_output=True)
            net.cleanup()
            if switch.proc is not None:
                code, err = switch.stop()
                assert code == 0, err
            links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
            assert stem not in links, f"the launcher left a tap behind:\n{links}"


def test_guests_and_a_namespace_host_ping_each_other(lab: Lab) -> None:
    a, b, c = lab.vms
    for name, ip in lab.vms.items():
        assert lab.net.ping(lab.host_ns, ip), f"the host cannot ping {name} ({ip})"
    assert lab.guest_ping(a, lab.vms[b]), "vhost-user guest -> vhost-user guest"
    assert lab.guest_ping(b, HOST_IP), "vhost-user guest -> namespace host"
    assert lab.guest_ping(c, lab.vms[a]), "tap guest -> vhost-user guest"
    assert lab.guest_ping(a, lab.vms[c]), "vhost-user guest -> tap guest"
    assert lab.guest_ping(c, HOST_IP), "tap guest -> namespace host"


def test_list_status_and_ports(lab: Lab) -> None:
    listing = lab.pyvswitch("list").stdout.splitlines()
    assert listing[0].split()[:3] == ["NAME", "STATE", "PID"]
    rows = {line.split()[0]: line.split() for line in listing[1:]}
    assert set(rows) == set(lab.vms)
    assert all(row[1] == "running" and row[3] in ("tcg", "kvm") for row in rows.values()), listing
    for i, (name, ip) in enumerate(lab.vms.items()):
        st = lab.status(name)
        assert st["state"] == "running" and st["pid"] and st["accel_reason"]
        nic = st["config"]["nics"][0]
        port = f"{name}-0"
        assert nic["port"] == port and nic["bridge"] == BRIDGE
        assert nic["mac"] == stable_mac(name, 0)
        assert st["guest"] == {"eth0": [stable_mac(name, 0), [f"{ip}/24"]]}
        assert st["ports"][port]["link_state"] == "up" and st["ports"][port]["error"] is None
        expected_type = "dpdkvhostuserclient" if i < 2 else ""
        assert lab.switch.get("Interface", port, "type") == expected_type
        assert lab.switch.get("Interface", port, "external_ids:vm-id") == name
        assert lab.switch.get("Interface", port, "external_ids:attached-mac") == nic["mac"]
    c = lab.vm_name("c")
    assert Path(f"/sys/class/net/{c}-0/tun_flags").exists(), "the tap NIC's netdev"
    human = lab.pyvswitch("status", c).stdout
    assert re.search(rf"nic 0: +tap +{stable_mac(c, 0)}  port {c}-0 on {BRIDGE}  ofport \d+ link up", human), human
    fdb = lab.switch.appctl("fdb/show", BRIDGE).stdout
    for name in lab.vms:
        assert stable_mac(name, 0) in fdb


def test_console_from_a_pipe_and_its_log(lab: Lab) -> None:
    a = lab.vm_name("a")
    proc = lab.pyvswitch("console", a, "--idle", "4", stdin="echo console-$((6*7))\n", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "console-42" in proc.stdout.replace("\r", "").splitlines(), proc.stdout
    log = lab.pyvswitch("console", a, "--log").stdout
    assert "pyvswitch-guest ready eth0=" in log and "console-42" in log


def test_console_on_a_terminal_detaches_with_ctrl_bracket(lab: Lab) -> None:
    a = lab.vm_name("a")
    controller, terminal = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "vswitch.cli", "vm", "console", a, "--rundir", lab.switch.rundir],
                            stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    out = b""
    try:
        deadline = time.monotonic() + 60
        sent_at = 0.0
        while time.monotonic() < deadline and b"tty-84" not in out:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if ready:
                out += os.read(controller, 65536)
            # the console's own echo can come before the guest's shell reads (a loaded CI machine): ask again
            if b"Ctrl-] detaches" in out and time.monotonic() - sent_at > 10:
                os.write(controller, b"echo tty-$((42*2))\r")
                sent_at = time.monotonic()
        assert b"tty-84" in out, out
        os.write(controller, b"\x1d")
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(controller)
    assert b"Connected to the console of " + a.encode() in out


def test_start_errors_leave_nothing_behind(lab: Lab) -> None:
    a = lab.vm_name("a")
    ports_before = lab.switch.vsctl("list-ports", BRIDGE).stdout
    running = lab.pyvswitch("start", a, "--nic", f"tap,bridge={BRIDGE}")
    assert running.returncode == 1 and f"VM {a} is already running" in running.stderr
    assert f"pyvswitch vm stop {a}" in running.stderr
    nobridge = lab.pyvswitch("start", "nobr", "--nic", "vhost-user,bridge=nosuchbr")
    assert nobridge.returncode == 1
    assert "bridge nosuchbr does not exist (create it: ovs-vsctl add-br nosuchbr); bridges: vmbr" in nobridge.stderr
    saved = lab.pyvswitch("start", a, "--memory", "1G")
    assert saved.returncode == 1 and "--memory would be ignored" in saved.stderr
    noqemu = lab.pyvswitch("start", "noqemu", "--qemu", "/nonexistent/qemu", "--nic", f"tap,bridge={BRIDGE}")
    assert noqemu.returncode == 1 and "QEMU not found (/nonexistent/qemu)" in noqemu.stderr
    taken = lab.pyvswitch("start", "thief", "--nic", f"tap,bridge={BRIDGE},port={a}-0")
    assert taken.returncode == 1 and f"port {a}-0 already exists in the switch (VM {a}'s)" in taken.stderr
    same_mac = lab.pyvswitch("start", "thief", "--nic", f"tap,bridge={BRIDGE},mac={stable_mac(a, 0)}")
    assert same_mac.returncode == 1
    assert f"NIC 0: MAC {stable_mac(a, 0)} is already NIC 0 of running VM {a}" in same_mac.stderr
    two_ips = lab.pyvswitch("start", "thief", "--nic", f"tap,bridge={BRIDGE},ip=10.9.0.1/24", "--ip", "10.9.0.2/24")
    assert two_ips.returncode == 1 and "give one of them" in two_ips.stderr

    # A guest whose kernel panics (no init): QEMU ends (-no-reboot), the last console lines say why.
    bad = lab.pyvswitch("start", "panics", "--nic", f"vhost-user,bridge={BRIDGE}", "--append", "rdinit=/nonexistent",
                        "--boot-timeout", "120")
    assert bad.returncode == 1
    assert "VM panics: the guest failed to boot: QEMU exited" in bad.stderr, bad.stderr
    assert "last console lines:" in bad.stderr and "Kernel panic" in bad.stderr
    assert lab.switch.vsctl("list-ports", BRIDGE).stdout == ports_before
    assert lab.status("panics")["state"] == "failed"
    assert subprocess.run(["pgrep", "-f", f"{lab.switch.rundir}/vms/panics/"], capture_output=True).returncode == 1
    assert not list(Path(lab.switch.rundir, "vms", "panics").glob("*.sock"))
    # Refused starts left no VM directory behind; the failed one keeps its logs for a post-mortem.
    assert sorted(os.listdir(Path(lab.switch.rundir, "vms"))) == sorted([*lab.vms, "panics"])

    # The administrator now uses the port name the failed VM had: stop and delete leave it alone.
    lab.switch.vsctl("add-port", BRIDGE, "panics-0", "--", "set", "Interface", "panics-0",
                     "type=dpdkvhostuserclient", "options:vhost-server-path=/nonexistent/admin.sock")
    assert "was not running" in lab.pyvswitch("stop", "panics").stdout
    assert lab.pyvswitch("delete", "panics").returncode == 0
    assert "panics" not in lab.pyvswitch("list").stdout
    assert "panics-0" in lab.switch.vsctl("list-ports", BRIDGE).stdout, "vm stop/delete removed a foreign port"
    lab.switch.vsctl("del-port", BRIDGE, "panics-0")


def test_switch_restart_under_running_guests(lab: Lab) -> None:
    pids = {name: lab.status(name)["pid"] for name in lab.vms}
    code, err = lab.switch.stop()
    assert code == 0, err
    lab.switch.start()
    for name in lab.vms:
        lab.switch.wait_for(f"{name}-0 up again",
                            lambda n=name: lab.switch.get("Interface", f"{n}-0", "link_state") == "up")
    for name, ip in lab.vms.items():
        assert lab.net.ping(lab.host_ns, ip, deadline=20), f"no traffic to {name} after the switch restarted"
    a, b, c = lab.vms
    assert lab.guest_ping(a, lab.vms[b]) and lab.guest_ping(c, lab.vms[a])
    assert {name: lab.status(name)["pid"] for name in lab.vms} == pids, "a guest was restarted"


def meminfo(key: str) -> int:
    return int(re.search(rf"^{key}:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M).group(1))


def hugepages_available() -> int:
    """Hugepages neither used nor reserved (a shared hugetlb mapping reserves its pages when mapped)."""
    return meminfo("HugePages_Free") - meminfo("HugePages_Rsvd")


def test_guest_ram_on_hugepages(lab: Lab) -> None:
    nr_hugepages = Path("/proc/sys/vm/nr_hugepages")
    saved = nr_hugepages.read_text()
    name = f"{lab.vm_name('a')[:-1]}h"
    page_kb = meminfo("Hugepagesize")
    short = (hugepages_available() + 64) * page_kb // 1024   # MiB: 64 pages more than there are
    too_big = lab.pyvswitch("start", name, "--memory", f"{short}M", "--hugepages",
                            "--nic", f"vhost-user,bridge={BRIDGE}")
    assert too_big.returncode == 1
    assert (f"--hugepages: {short} MiB needs {hugepages_available() + 64} free hugepages of {page_kb} kB, "
            f"{hugepages_available()} are free") in too_big.stderr, too_big.stderr
    pages = 128 * 1024 // page_kb
    try:
        nr_hugepages.write_text(str(int(saved) + pages))   # 128 MiB more
        if hugepages_available() < pages:
            pytest.fail(f"could not reserve {pages} hugepages: {hugepages_available()} available")
        free = hugepages_available()
        start = lab.pyvswitch("start", name, "--memory", "128M", "--hugepages",
                              "--nic", f"vhost-user,bridge={BRIDGE}", "--ip", f"{SUBNET}.21/24")
        assert start.returncode == 0, start.stderr
        assert "memory:      128 MiB (hugepages)" in start.stdout
        assert hugepages_available() == free - pages, "the guest's 128 MiB of RAM are not on hugepages"
        assert lab.net.ping(lab.host_ns, f"{SUBNET}.21"), "no traffic to the guest whose RAM is on hugepages"
        assert lab.pyvswitch("stop", name).returncode == 0
    finally:
        lab.pyvswitch("stop", name, "--timeout", "5")
        nr_hugepages.write_text(saved)


def test_stop_powers_off_and_start_again_keeps_the_mac(lab: Lab) -> None:
    b, c = lab.vm_name("b"), lab.vm_name("c")
    stop = lab.pyvswitch("stop", b)
    assert stop.returncode == 0, stop.stderr
    assert "powered off (ACPI power button)" in stop.stdout
    console = Path(lab.switch.rundir, "vms", b, "console.log").read_text(errors="replace")
    assert "power button pressed, powering off" in console
    assert lab.status(b)["state"] == "stopped" and lab.pyvswitch("status", b).returncode == 3
    assert f"{b}-0" not in lab.switch.vsctl("list-ports", BRIDGE).stdout
    assert not lab.net.ping(lab.host_ns, lab.vms[b], count=1, deadline=2)

    again = lab.pyvswitch("start", b)   # the saved configuration
    assert again.returncode == 0, again.stderr
    assert lab.status(b)["guest"]["eth0"][0] == stable_mac(b, 0)
    assert lab.net.ping(lab.host_ns, lab.vms[b])

    # A guest that ignores the power button (acpid killed): QEMU is told to quit after --timeout.
    lab.guest_run(c, "killall acpid")
    forced = lab.pyvswitch("stop", c, "--timeout", "2")
    assert forced.returncode == 0, forced.stderr
    assert "did not power off within 2 s after the ACPI power button: QEMU was told to quit" in forced.stdout
    assert not os.path.exists(f"/sys/class/net/{c}-0"), "the tap NIC's netdev is removed"
    assert f"{c}-0" not in lab.switch.vsctl("list-ports", BRIDGE).stdout
    stopped_again = lab.pyvswitch("stop", c)
    assert stopped_again.returncode == 0 and "was not running" in stopped_again.stdout
