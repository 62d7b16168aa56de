"""A QEMU guest (TCG) on a ``dpdkvhostuser`` port (pyvswitch listens, QEMU connects) of a bridge that
also has a namespace host on a system port.

The other mode, ``dpdkvhostuserclient`` (QEMU listens, pyvswitch connects and reconnects after a
restart), is what ``pyvswitch vm start`` uses: tests/test_vm.py covers it, restart included.
QEMU 7.2 under TCG needs ``vectors=0`` on a vhost-user virtio-net device (it crashes otherwise).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.guest import QEMU, guest_image, wait_for_ready
from tests.netutil import unique
from vswitch.hostnet import HostNet
from vswitch.vmimage import GuestImage, kernel_cmdline, parse_ready_line

pytestmark = pytest.mark.integration
BOOT_TIMEOUT = 120


@pytest.fixture(scope="module")
def image() -> GuestImage:
    return guest_image()


class Guest:
    """A QEMU guest with one vhost-user NIC on socket ``sock`` (``server``: QEMU listens)."""

    def __init__(self, image: GuestImage, workdir: Path, name: str, sock: str, mac: str, ip: str,
                 server: bool) -> None:
        self.serial = workdir / f"{name}.serial"
        self.log = open(workdir / f"{name}.log", "w")  # noqa: SIM115 - closed in stop()
        chardev = f"socket,id=c0,path={sock}" + (",server=on" if server else "")
        cmd = [QEMU, "-accel", "tcg", "-m", "256", "-nodefaults", "-no-user-config", "-display", "none",
               "-no-reboot", "-serial", f"file:{self.serial}",
               "-object", "memory-backend-memfd,id=mem0,size=256M,share=on", "-numa", "node,memdev=mem0",
               "-chardev", chardev, "-netdev", "vhost-user,id=n0,chardev=c0",
               # vectors=0: QEMU 7.2 under TCG crashes on a vhost-user virtio-net device with MSI-X vectors
               "-device", f"virtio-net-pci,netdev=n0,mac={mac},vectors=0",
               "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", kernel_cmdline(ip)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)

    def ready(self) -> dict:
        return parse_ready_line(wait_for_ready(self.proc, self.serial, BOOT_TIMEOUT)) or {}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.log.close()


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pvt-qemu-") as d:
        yield Path(d)


def test_guest_on_a_server_port_pings_a_namespace_host(
        switch, net: HostNet, image: GuestImage, workdir: Path) -> None:  # noqa: ANN001 - fixture
    stem = unique()
    host_ns, host_if = f"{stem}h", f"{stem}s"
    net.add_host(host_ns, host_if, "10.93.0.1/24")
    switch.vsctl("add-br", "vqbr")
    switch.vsctl("add-port", "vqbr", host_if)
    switch.vsctl("add-port", "vqbr", "vhuq0", "--", "set", "Interface", "vhuq0", "type=dpdkvhostuser")
    guest = Guest(image, workdir, "g0", os.path.join(switch.rundir, "vhuq0"), "52:54:00:93:00:02",
                  "10.93.0.2/24", server=False)
    try:
        assert guest.ready() == {"eth0": ("52:54:00:93:00:02", ["10.93.0.2/24"])}
        switch.wait_for("vhuq0 link up", lambda: switch.get("Interface", "vhuq0", "link_state") == "up")
        assert net.ping(host_ns, "10.93.0.2"), "the guest on the dpdkvhostuser port does not answer"
        assert switch.get("Interface", "vhuq0", "status:mode") == "server"
        assert switch.get("Interface", "vhuq0", "error") == "[]"
    finally:
        guest.stop()
