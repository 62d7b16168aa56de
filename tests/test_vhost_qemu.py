"""QEMU guests (TCG) on vhost-user ports of a bridge that also has a namespace host on a system port.

One guest uses a ``dpdkvhostuser`` port (pyvswitch listens, QEMU connects), the other a
``dpdkvhostuserclient`` port (QEMU listens, pyvswitch connects). The host pings both, and pings the
client-mode guest again after pyvswitch was restarted under it. QEMU 7.2 under TCG needs
``vectors=0`` on a vhost-user virtio-net device (it crashes otherwise).
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


def test_guests_on_server_and_client_ports_ping_a_namespace_host(
        switch, net: HostNet, image: GuestImage, workdir: Path) -> None:  # noqa: ANN001 - fixture
    stem = unique()
    host_ns, host_if = f"{stem}h", f"{stem}s"
    net.add_host(host_ns, host_if, "10.93.0.1/24")
    switch.vsctl("add-br", "vqbr")
    switch.vsctl("add-port", "vqbr", host_if)
    switch.vsctl("add-port", "vqbr", "vhuq0", "--", "set", "Interface", "vhuq0", "type=dpdkvhostuser")
    qemu_sock = str(workdir / "guest1.sock")
    guests = []
    try:
        guests.append(Guest(image, workdir, "g0", os.path.join(switch.rundir, "vhuq0"), "52:54:00:93:00:02",
                            "10.93.0.2/24", server=False))
        # QEMU as the socket server waits for pyvswitch to connect before it starts the guest
        guests.append(Guest(image, workdir, "g1", qemu_sock, "52:54:00:93:00:03", "10.93.0.3/24", server=True))
        switch.wait_for("QEMU's socket", lambda: os.path.exists(qemu_sock))
        switch.vsctl("add-port", "vqbr", "vhuq1", "--", "set", "Interface", "vhuq1", "type=dpdkvhostuserclient",
                     f"options:vhost-server-path={qemu_sock}")
        for g, mac, ip in zip(guests, ("52:54:00:93:00:02", "52:54:00:93:00:03"), ("10.93.0.2", "10.93.0.3"),
                              strict=True):
            assert g.ready() == {"eth0": (mac, [f"{ip}/24"])}
        for name in ("vhuq0", "vhuq1"):
            switch.wait_for(f"{name} link up", lambda n=name: switch.get("Interface", n, "link_state") == "up")
        assert net.ping(host_ns, "10.93.0.2"), "the guest on the dpdkvhostuser port does not answer"
        assert net.ping(host_ns, "10.93.0.3"), "the guest on the dpdkvhostuserclient port does not answer"
        assert switch.get("Interface", "vhuq0", "status:mode") == "server"
        assert switch.get("Interface", "vhuq1", "status:mode") == "client"
        assert switch.get("Interface", "vhuq0", "error") == "[]"

        # pyvswitch restarts under the running guest: the client port reconnects and traffic resumes
        code, err = switch.stop()
        assert code == 0, err
        switch.start()
        switch.wait_for("vhuq1 up again", lambda: switch.get("Interface", "vhuq1", "link_state") == "up")
        assert net.ping(host_ns, "10.93.0.3", deadline=20), "no traffic after pyvswitch restarted"
        assert all(g.proc.poll() is None for g in guests), "a guest died"
    finally:
        for g in guests:
            g.stop()
