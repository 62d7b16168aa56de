"""The test guest image: built (or taken from the cache), booted in QEMU under TCG, pinged, powered off over QMP.

The image is cached in ``$PYVSWITCH_GUEST_CACHE`` (default ``<repo>/.cache/guest``); the first build
downloads the Debian cloud kernel package (~27 MB), later runs reuse it.
QEMU runs inside a network namespace of its own, its tap devices live there too, and the namespace
is the only place traffic goes; QEMU is killed and the namespace deleted even when the test fails.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.guest import QEMU, guest_image, wait_for_ready
from tests.netutil import unique
from vswitch.hostnet import HostNet
from vswitch.vm import Qmp
from vswitch.vmimage import (
    GuestImage,
    build_image,
    default_cache_dir,
    kernel_cmdline,
    parse_ready_line,
)

pytestmark = pytest.mark.integration

BOOT_TIMEOUT = 120  # TCG on a slow shared runner; ~4 s is normal
POWEROFF_TIMEOUT = 30


@pytest.fixture(scope="module")
def image() -> GuestImage:
    """The cached guest image (built on first use)."""
    return guest_image()


def test_kernel_cmdline_and_ready_line() -> None:
    cmdline = kernel_cmdline("10.0.0.2/24", "ip1=10.0.1.2/24 gw=10.0.0.1")
    assert cmdline.split()[0] == "console=ttyS0"
    assert {"ip=10.0.0.2/24", "ip1=10.0.1.2/24", "gw=10.0.0.1", "panic=-1"} <= set(cmdline.split())
    assert "ip=" not in kernel_cmdline(None)
    line = "\x1b[0mpyvswitch-guest ready eth0=52:54:00:00:00:01,10.0.0.2/24 eth1=52:54:00:00:00:02\r"
    assert parse_ready_line(line) == {"eth0": ("52:54:00:00:00:01", ["10.0.0.2/24"]),
                                      "eth1": ("52:54:00:00:00:02", [])}
    assert parse_ready_line("Booting the kernel") is None


def test_build_image_is_cached(image: GuestImage) -> None:
    start = time.monotonic()
    again = build_image(default_cache_dir())
    elapsed = time.monotonic() - start
    assert again == image
    assert elapsed < 1.0, f"a cached build_image took {elapsed:.2f} s"
    assert image.kernel.stat().st_size > 1 << 20 and image.initrd.stat().st_size > 1 << 18
    assert image.version.endswith("-cloud-amd64")


def test_guest_boots_answers_ping_and_powers_off(image: GuestImage, net: HostNet, tmp_path: Path) -> None:
    pid = os.getpid()
    ns = net.add_netns(f"pvvm{pid}{unique('')}")
    net.exec(ns, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], check=False)
    net.exec(ns, ["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"], check=False)
    taps = [f"pvt{pid}a", f"pvt{pid}b"]  # live and die with the namespace
    macs = ["52:54:00:77:01:02", "52:54:00:77:02:02"]
    for i, tap in enumerate(taps):
        net.exec(ns, ["ip", "tuntap", "add", "dev", tap, "mode", "tap"])
        net.exec(ns, ["ip", "addr", "add", f"10.77.{i + 1}.1/24", "dev", tap])
        net.exec(ns, ["ip", "link", "set", tap, "up"])
    # An address on no guest subnet: its pings are only answered through the guest's default route (gw=).
    net.exec(ns, ["ip", "addr", "add", "10.77.9.1/24", "dev", taps[0]])

    serial, qmp_path = tmp_path / "serial.log", tmp_path / "qmp.sock"
    cmd = ["ip", "netns", "exec", ns, QEMU, "-accel", "tcg", "-m", "256", "-nodefaults", "-no-user-config",
           "-display", "none", "-no-reboot", "-serial", f"file:{serial}",
           "-qmp", f"unix:{qmp_path},server=on,wait=off",
           "-kernel", str(image.kernel), "-initrd", str(image.initrd),
           "-append", kernel_cmdline("10.77.1.2/24", "ip1=10.77.2.2/24 gw=10.77.1.1")]
    for i, (tap, mac) in enumerate(zip(taps, macs, strict=True)):
        cmd += ["-netdev", f"tap,id=n{i},ifname={tap},script=no,downscript=no",
                "-device", f"virtio-net-pci,netdev=n{i},mac={mac}"]
    log = open(tmp_path / "qemu.log", "w")
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    qmp: Qmp | None = None
    try:
        ready = wait_for_ready(proc, serial, BOOT_TIMEOUT)
        boot = time.monotonic() - start
        print(f"guest {image.version} ready after {boot:.1f} s under TCG: {ready.strip()}")
        assert parse_ready_line(ready) == {"eth0": (macs[0], ["10.77.1.2/24"]), "eth1": (macs[1], ["10.77.2.2/24"])}

        assert net.ping(ns, "10.77.1.2"), "guest eth0 does not answer ping"
        assert net.ping(ns, "10.77.2.2"), "guest eth1 does not answer ping"
        via_gw = net.exec(ns, ["ping", "-c", "3", "-i", "0.2", "-W", "1", "-w", "10", "-I", "10.77.9.1", "10.77.1.2"],
                          check=False, timeout=15)
        assert via_gw.returncode == 0, f"no reply through the guest's default route:\n{via_gw.stdout}"

        qmp = Qmp(qmp_path)
        assert qmp.execute("query-status")["status"] == "running"
        qmp.execute("system_powerdown")
        try:
            code = proc.wait(timeout=POWEROFF_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"QEMU still running {POWEROFF_TIMEOUT} s after system_powerdown:\n{serial.read_text()}")
        assert code == 0, (code, (tmp_path / "qemu.log").read_text())
        assert "powering off" in serial.read_text(errors="replace")
    finally:
        if qmp:
            qmp.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
