"""``pyvswitch vm start --nic vf,...`` on a SIMULATED PF (no SR-IOV NIC, no VFIO on these machines).

The launcher binds the VF to vfio-pci through a simulated sysfs (``tests/sriov_sim.SimulatedSysfs``, which
answers ``driver_override``/``unbind``/``drivers_probe`` as the kernel does), configures it through a
netlink stand-in, and starts the real QEMU, which cannot open a VFIO device here and exits: the test checks
that the failure is reported with QEMU's reason and that everything is given back (driver, port).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests import sriov_sim as sim
from tests.guest import guest_image
from tests.netutil import unique
from vswitch.hostnet import HostNet
from vswitch.vm import VmConfig, VmError, VmManager, parse_nic

pytestmark = pytest.mark.integration


def test_vf_nic_is_bound_configured_and_given_back_when_qemu_cannot_take_it(net: HostNet, tmp_path: Path) -> None:
    image = guest_image()
    stem = unique("vv")
    pf = f"{stem}pf"
    net.add_host(f"{stem}w", pf)
    root = tmp_path / "sys"
    sim.build_sysfs(root, pf, {0: ("0000:01:10.0", "iavf", f"{pf}v0"), 1: ("0000:01:10.1", "iavf", f"{pf}v1")},
                    ifindex=socket.if_nametoindex(pf))
    fs = sim.SimulatedSysfs(root, pf)
    with sim.switch_on_simulated_pf(root, pf, 2) as (sw, standin, netlink):
        br = f"{stem}br"
        sw.vsctl("add-br", br, "--", "add-port", br, pf)
        vms = VmManager(sw.rundir, sysfs=fs, netlink=netlink)

        # Without a bridge: the launcher sets the VF's MAC and VLAN through the PF itself.
        cfg = VmConfig("vf1", kernel=str(image.kernel), initrd=str(image.initrd),
                       nics=[parse_nic(f"vf,pf={pf},vf=1,mac=52:54:00:00:00:21")])
        with pytest.raises(VmError) as exc:
            vms.start(cfg, boot_timeout=30)
        assert "vfio" in str(exc.value).lower() and "QEMU said" in str(exc.value), exc.value
        dev = "bus/pci/devices/0000:01:10.1"
        assert fs.writes == [(f"{dev}/driver_override", "vfio-pci"), (f"{dev}/driver/unbind", "0000:01:10.1"),
                             ("bus/pci/drivers_probe", "0000:01:10.1"),            # ... QEMU fails ...
                             (f"{dev}/driver_override", ""), (f"{dev}/driver/unbind", "0000:01:10.1"),
                             ("bus/pci/drivers_probe", "0000:01:10.1")]
        vf1 = sim.SimulatedSysfs(root, pf)
        from backends.sriov import virtual_function
        assert (virtual_function(pf, 1, vf1).driver, virtual_function(pf, 1, vf1).netdev) == ("iavf", f"{pf}v1")
        assert standin.log == [(1, "mac", ("52:54:00:00:00:21",)), (1, "vlan", (0, 0, 0x8100)),
                               (1, "spoofchk", (1,)), (1, "trust", (0,))]
        assert vms.status("vf1").state == "failed"

        # With a bridge: a sriov-vf port, configured by the switch and reached through the PF's port,
        # exists before QEMU starts; QEMU's failure removes it and gives the VF back.
        standin.log.clear()
        fs.writes.clear()
        cfg = VmConfig("vf0", kernel=str(image.kernel), initrd=str(image.initrd),
                       nics=[parse_nic(f"vf,pf={pf},vf=0,bridge={br},tag=30")])
        with pytest.raises(VmError, match="vfio"):
            vms.start(cfg, boot_timeout=30)
        mac = cfg.nics[0].mac
        assert standin.log[:2] == [(0, "mac", (mac,)), (0, "vlan", (30, 0, 0x8100))]
        assert (0, "spoofchk", (1,)) in standin.log and (0, "trust", (0,)) in standin.log
        assert sw.vsctl("list-ports", br).stdout.split() == [pf]
        assert virtual_function(pf, 0, vf1).driver == "iavf"
        assert len(fs.writes) == 6
        # A VF that is a port of the switch is not free for a guest.
        sw.vsctl("add-port", br, "hostvf", "--", "set", "Interface", "hostvf", "type=sriov-vf",
                 f"options:pf={pf}", "options:vf=0")
        with pytest.raises(VmError, match="is in use: it is switch port hostvf"):
            vms.start(VmConfig("vf2", kernel=str(image.kernel), nics=[parse_nic(f"vf,pf={pf},vf=0")]))
