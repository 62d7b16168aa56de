"""``type=sriov-vf`` ports in a real ``pyvswitch run`` driven by ``ovs-vsctl``, on a SIMULATED PF.

These machines have no SR-IOV NIC: the PF's sysfs entries are a tree built here (``--sysfs``) and its
rtnetlink is a stand-in that parses the kernel's uapi layouts (``--netlink unix:PATH``,
``tests/sriov_sim.py``). What is real: the switch, OVSDB and the OVS tools, the PF's netdev (a veth,
a system port), the VF netdev of a host-use VF (a veth standing in for it, switched through AF_PACKET)
and the traffic in namespaces.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import sriov_sim as sim
from tests.netutil import Sniffer, unique
from tests.switchutil import Switch
from vswitch.hostnet import HostNet

pytestmark = pytest.mark.integration


@pytest.fixture
def lab(net: HostNet, tmp_path: Path) -> Iterator[dict]:
    stem = unique("sv")
    pf, vf1, host = f"{stem}pf", f"{stem}v1", f"{stem}h"
    net.add_host(f"{stem}wire", pf)                        # the PF's netdev; its peer is "the wire"
    net.add_host(f"{stem}vf", vf1, "10.77.0.2/24")         # VF 1's netdev (host use), its far side
    net.add_host(host, host, "10.77.0.1/24")
    net.add_host(f"{stem}h2", f"{stem}h2", "10.77.0.4/24")     # on a second bridge, with VF 1's netdev
    root = tmp_path / "sys"
    sim.build_sysfs(root, pf, {0: ("0000:01:10.0", "vfio-pci", ""), 1: ("0000:01:10.1", "iavf", vf1)},
                    ifindex=socket.if_nametoindex(pf), total=4)
    (root / "class/net" / host / "device").mkdir(parents=True)   # a netdev without SR-IOV
    with sim.switch_on_simulated_pf(root, pf, 2) as (sw, standin, _netlink):
        yield {"sw": sw, "stem": stem, "pf": pf, "vf1": vf1, "host": host, "root": root, "standin": standin,
               "br": f"{stem}br", "host2": f"{stem}h2"}


def iface_error(sw: Switch, name: str) -> str:
    """``Interface.error``, "" when empty."""
    text = sw.get("Interface", name, "error")
    return "" if text == "[]" else text


def test_sriov_vf_ports_from_ovsdb_on_a_simulated_pf(lab: dict, net: HostNet) -> None:
    sw, pf, br, root, standin = lab["sw"], lab["pf"], lab["br"], lab["root"], lab["standin"]
    stem, host = lab["stem"], lab["host"]
    numvfs = root / "devices/pci0000:00/0000:01:00.0/sriov_numvfs"
    sw.vsctl("add-br", br, "--", "add-port", br, pf, "--", "add-port", br, host, "tag=10")

    # options:num-vfs on the PF: refused while VF 0 is passed through; the PF keeps forwarding.
    sw.vsctl("set", "Interface", pf, "options:num-vfs=3")
    assert "options:num-vfs not applied: cannot change the number of VFs" in iface_error(sw, pf)
    assert "VF 0: bound to vfio-pci (passed through to a guest)" in iface_error(sw, pf)
    assert numvfs.read_text() == "2\n"
    vf0_driver = root / "devices/pci0000:00/0000:01:10.0/driver"
    os.unlink(vf0_driver)
    os.symlink(root / "bus/pci/drivers/iavf", vf0_driver)   # the guest is gone, VF 0 is the host's again
    sw.wait_for("options:num-vfs retried (every 2 s)", lambda: iface_error(sw, pf) == "", timeout=10)
    assert numvfs.read_text() == "3\n"
    sw.vsctl("set", "Interface", pf, "options:num-vfs=2")
    assert numvfs.read_text() == "2\n"
    os.unlink(vf0_driver)
    os.symlink(root / "bus/pci/drivers/vfio-pci", vf0_driver)

    # (b) host use: VF 1's netdev becomes a system port; the VF's hardware gets the MAC, VLAN 10 and
    # spoof checking off / trust on (the bridge sends frames of many MACs through it). Not on the PF's
    # bridge: the NIC's built-in switch copies broadcasts between PF and VF, a loop.
    vf1_args = ["--", "set", "Interface", "vf1", "type=sriov-vf", f"options:pf={pf}", "options:vf=1",
                'mac="52:54:00:00:01:01"']
    sw.vsctl("add-port", br, "vf1", "tag=10", *vf1_args)
    assert "would make a loop through the NIC's built-in switch" in iface_error(sw, "vf1")
    assert standin.log == []                              # refused before the VF was touched
    br2 = f"{stem}b2"
    sw.vsctl("del-port", "vf1", "--", "add-br", br2, "--", "add-port", br2, lab["host2"], "tag=10",
             "--", "add-port", br2, "vf1", "tag=10", *vf1_args)
    assert iface_error(sw, "vf1") == ""
    status = sw.get("Interface", "vf1", "status")
    assert "mode=host" in status and f"netdev={lab['vf1']}" in status and 'pci="0000:01:10.1"' in status
    assert [e for e in standin.log if e[0] == 1] == [
        (1, "mac", ("52:54:00:00:01:01",)), (1, "vlan", (10, 0, 0x8100)), (1, "spoofchk", (0,)), (1, "trust", (1,))]
    assert net.ping(lab["host2"], "10.77.0.2")            # access VLAN 10 <-> the VF (untagged on its netdev)
    standin.stats[1].update(rx_packets=1234, tx_packets=99)
    sw.wait_for("VF counters in Interface.statistics",
                lambda: "vf_rx_packets=1234" in sw.get("Interface", "vf1", "statistics"), timeout=15)
    stats = sw.get("Interface", "vf1", "statistics")
    assert "vf_tx_packets=99" in stats and "rx_packets=0" not in stats.replace("vf_rx_packets", "")

    # (a) passthrough: VF 0 is on vfio-pci; its MAC becomes a static entry on the PF's port, in its VLAN.
    sw.vsctl("add-port", br, "vf0", "tag=10", "--", "set", "Interface", "vf0", "type=sriov-vf",
             f"options:pf={pf}", "options:vf=0", 'mac="52:54:00:00:00:10"', "ingress_policing_rate=2500")
    assert iface_error(sw, "vf0") == ""
    assert "mode=passthrough" in sw.get("Interface", "vf0", "status")
    assert [e for e in standin.log if e[0] == 0] == [
        (0, "mac", ("52:54:00:00:00:10",)), (0, "vlan", (10, 0, 0x8100)), (0, "rate", (0, 3)),
        (0, "spoofchk", (1,)), (0, "trust", (0,))]        # the guest's transmit is the switch's ingress: 3 Mbit/s
    pf_ofport = sw.get("Interface", pf, "ofport")
    fdb = sw.appctl("fdb/show", br).stdout.splitlines()
    assert f"{pf_ofport:>5}    10  52:54:00:00:00:10  static" in fdb
    net.exec(host, ["ip", "neigh", "replace", "10.77.0.10", "lladdr", "52:54:00:00:00:10", "dev", "eth0"])
    sniffer = Sniffer(f"{stem}wire", "eth0", "ether dst 52:54:00:00:00:10")
    net.ping(host, "10.77.0.10", count=2, deadline=2)
    lines = sniffer.stop()
    assert lines and all("vlan 10" in line for line in lines), lines   # through the NIC, tagged
    standin.stats[0].update(tx_packets=7, rx_packets=5)
    sw.wait_for("a passed-through VF's counters, seen from the switch",
                lambda: "rx_packets=7" in sw.get("Interface", "vf0", "statistics").replace("vf_rx", "x"),
                timeout=15)
    assert "tx_vf_passthrough=0" in sw.get("Interface", "vf0", "statistics")   # no floods sent to it

    # Port.tag re-programs the VF's VLAN; the static entry follows.
    sw.vsctl("set", "Port", "vf0", "tag=20")
    assert standin.vfs[0]["vlan"] == 20
    assert any(line.endswith("20  52:54:00:00:00:10  static") for line in sw.appctl("fdb/show", br).stdout.splitlines())

    # Errors: each in its Interface.error, nothing half-done, the rest keeps forwarding.
    sw.vsctl("set", "Interface", pf, "options:num-vfs=4")
    assert "VF 0: interface vf0 of bridge" in iface_error(sw, pf) and numvfs.read_text() == "2\n"
    sw.vsctl("add-port", br, "vfx", "--", "set", "Interface", "vfx", "type=sriov-vf", f"options:pf={pf}",
             "options:vf=7")
    assert f"{pf} has no VF 7 (2 of 4 VFs are enabled" in iface_error(sw, "vfx")
    sw.vsctl("set", "Interface", "vfx", f"options:pf={host}", "options:vf=0")
    assert f"{host} has no SR-IOV capability" in iface_error(sw, "vfx")
    sw.vsctl("set", "Interface", "vfx", f"options:pf={pf}", "options:vf=1")
    assert "VF 1 of" in iface_error(sw, "vfx") and "is in use by interface vf1" in iface_error(sw, "vfx")
    sw.vsctl("set", "Interface", "vfx", "options:vf=0", "options:spoofchk=maybe")
    assert "options:spoofchk is true or false, not 'maybe'" in iface_error(sw, "vfx")
    sw.vsctl("set", "Interface", "vfx", "options:spoofchk=true", "options:link-state=bogus")
    assert "options:link-state is auto, enable or disable, not 'bogus'" in iface_error(sw, "vfx")
    sw.vsctl("remove", "Interface", "vfx", "options", "link-state", "--", "set", "Port", "vfx", "tag=4095")
    assert "Port tag 4095 is outside 1..4094" in iface_error(sw, "vfx")
    sw.vsctl("del-port", "vfx")
    assert sw.get("Interface", "vf0", "ofport") not in ("-1", "")
    assert net.ping(lab["host2"], "10.77.0.2", count=1)

    # The PF's port goes: the passed-through VF cannot be reached and says so; it comes back with the PF.
    sw.vsctl("del-port", pf)
    assert f"{pf} is not a port of bridge {br}: ovs-vsctl add-port {br} {pf}" in iface_error(sw, "vf0")
    settings = len(standin.log)
    time.sleep(2.5)                                        # a retry: refused again before touching the VF
    assert len(standin.log) == settings
    sw.vsctl("add-port", br, pf)
    sw.wait_for("vf0 reached through the PF again", lambda: iface_error(sw, "vf0") == "", timeout=10)
    assert "52:54:00:00:00:10" in sw.appctl("fdb/show", br).stdout
    sw.vsctl("del-port", "vf0")
    assert "52:54:00:00:00:10" not in sw.appctl("fdb/show", br).stdout
    # deleted: VF 0 gets back what it had before the switch took it (not the tag 10 of its first opening)
    assert (standin.vfs[0]["mac"], standin.vfs[0]["vlan"], standin.vfs[0]["trust"]) == ("00:00:00:00:00:00", 0, 0)
    assert standin.vfs[0]["max_tx_rate"] == 0


def test_switchdev_representor_is_the_vfs_port(lab: dict, net: HostNet) -> None:
    """A PF in switchdev mode: a VF's frames reach the host through its representor netdev (here a veth with
    the PF's ``phys_switch_id`` and ``phys_port_name`` pf0vf0), which becomes the port; VLANs are the bridge's."""
    sw, pf, br, root, standin, host = lab["sw"], lab["pf"], lab["br"], lab["root"], lab["standin"], lab["host"]
    rep = f"{lab['stem']}r0"
    net.add_host(f"{lab['stem']}rep", rep, "10.77.0.3/24")     # the guest behind VF 0, seen through its representor
    (root / "class/net" / pf / "phys_switch_id").write_text("00aa11bb\n")
    (root / "class/net" / rep).mkdir()
    (root / "class/net" / rep / "phys_switch_id").write_text("00aa11bb\n")
    (root / "class/net" / rep / "phys_port_name").write_text("pf0vf0\n")
    sw.vsctl("add-br", br, "--", "add-port", br, pf, "--", "add-port", br, host, "tag=10")
    sw.vsctl("add-port", br, "vf0", "tag=10", "--", "set", "Interface", "vf0", "type=sriov-vf",
             f"options:pf={pf}", "options:vf=0", 'mac="52:54:00:00:00:30"', "options:max-tx-rate=500")
    assert iface_error(sw, "vf0") == ""
    status = sw.get("Interface", "vf0", "status")
    assert "mode=representor" in status and f"representor={rep}" in status and "vlan=" not in status
    assert standin.log == [(0, "mac", ("52:54:00:00:00:30",)), (0, "rate", (0, 500)), (0, "spoofchk", (1,)),
                           (0, "trust", (0,))]                    # no hardware VLAN: the bridge tags
    assert net.ping(host, "10.77.0.3")
    assert "52:54:00:00:00:30" not in sw.appctl("fdb/show", br).stdout    # no static entry through the PF
    sw.vsctl("set", "Port", "vf0", "trunks=10,20")                        # a representor can be a trunk
    assert iface_error(sw, "vf0") == ""
