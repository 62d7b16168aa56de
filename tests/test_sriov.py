"""SR-IOV PF/VF management (``backends/sriov.py``).

Tests named ``test_simulated_*`` run against a SIMULATED PF (``tests/sriov_sim.py``): a sysfs tree built
here and a netlink stand-in that parses and answers with the kernel's uapi layouts. These machines have no
SR-IOV NIC and no VFIO. ``test_real_kernel_*`` send the same messages to the real kernel on a veth.
"""

from __future__ import annotations

import errno
import socket
import struct
from pathlib import Path

import pytest
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from backends.sriov import (
    ETH_P_8021AD,
    KernelNetlink,
    SriovError,
    SriovVfPort,
    VfConfig,
    VfNetlink,
    bind_driver,
    physical_function,
    set_num_vfs,
    virtual_function,
    virtual_functions,
)
from tests import sriov_sim as sim
from vswitch.hostnet import HostNet

PF = "enp1s0f0"


@pytest.fixture
def sysfs(tmp_path: Path) -> sim.SimulatedSysfs:
    """A PF with VF 0 on vfio-pci and VF 1 on iavf (netdev enp1s0f0v1); 8 VFs possible."""
    sim.build_sysfs(tmp_path, PF, {0: ("0000:01:10.0", "vfio-pci", ""), 1: ("0000:01:10.1", "iavf", f"{PF}v1")})
    return sim.SimulatedSysfs(tmp_path, PF)


def test_kernel_layouts_match_the_uapi_header() -> None:
    """The stand-in's numbers and pyroute2's attribute order are the kernel's (linux/if_link.h)."""
    vf_attrs = sim.kernel_header_enum("IFLA_VF_UNSPEC")
    assert (vf_attrs["IFLA_VF_MAC"], vf_attrs["IFLA_VF_VLAN"], vf_attrs["IFLA_VF_RATE"]) == (
        sim.IFLA_VF_MAC, sim.IFLA_VF_VLAN, sim.IFLA_VF_RATE)
    assert (vf_attrs["IFLA_VF_SPOOFCHK"], vf_attrs["IFLA_VF_TRUST"], vf_attrs["IFLA_VF_LINK_STATE"]) == (
        sim.IFLA_VF_SPOOFCHK, sim.IFLA_VF_TRUST, sim.IFLA_VF_LINK_STATE)
    assert (vf_attrs["IFLA_VF_STATS"], vf_attrs["IFLA_VF_VLAN_LIST"]) == (sim.IFLA_VF_STATS, sim.IFLA_VF_VLAN_LIST)
    pyroute2_order = [name for name, _ in ifinfmsg.vflist.vfinfo.nla_map]
    for name, value in vf_attrs.items():
        if name.startswith("IFLA_VF_") and value < len(pyroute2_order):
            assert pyroute2_order[value] == name
    stats = sim.kernel_header_enum("IFLA_VF_STATS_RX_PACKETS")
    assert [stats[f"IFLA_VF_STATS_{n.upper()}"] for n in sim.STATS_NAMES if n] == [0, 1, 2, 3, 4, 5, 7, 8]
    link = sim.kernel_header_enum("IFLA_UNSPEC")
    assert (link["IFLA_NUM_VF"], link["IFLA_VFINFO_LIST"], link["IFLA_EXT_MASK"]) == (
        sim.IFLA_NUM_VF, sim.IFLA_VFINFO_LIST, sim.IFLA_EXT_MASK)


def test_simulated_pf_discovery_and_its_errors(sysfs: sim.SimulatedSysfs, tmp_path: Path) -> None:
    pf = physical_function(PF, sysfs)
    assert (pf.pci, pf.total_vfs, pf.num_vfs, pf.ifindex) == ("0000:01:00.0", 8, 2, 7)
    vf0, vf1 = virtual_functions(PF, sysfs)
    assert (vf0.pci, vf0.driver, vf0.netdev, vf0.mode, vf0.iommu_group) == ("0000:01:10.0", "vfio-pci", "",
                                                                            "passthrough", "40")
    assert (vf1.pci, vf1.driver, vf1.netdev, vf1.mode) == ("0000:01:10.1", "iavf", f"{PF}v1", "host")
    with pytest.raises(SriovError, match=r"enp1s0f0 has no VF 2 \(2 of 8 VFs are enabled; enable more with "
                                         r"ovs-vsctl set Interface enp1s0f0 options:num-vfs=N\)"):
        virtual_function(PF, 2, sysfs)
    with pytest.raises(SriovError, match="no network device eth9"):
        physical_function("eth9", sysfs)
    (tmp_path / "class/net/veth0/device").mkdir(parents=True)
    with pytest.raises(SriovError, match="veth0 has no SR-IOV capability"):
        virtual_function("veth0", 0, sysfs)


def test_simulated_switchdev_representors_are_found(sysfs: sim.SimulatedSysfs, tmp_path: Path) -> None:
    assert virtual_function(PF, 1, sysfs).representor == ""          # legacy mode: no phys_switch_id
    (tmp_path / "class/net" / PF / "phys_switch_id").write_text("c0ffee\n")
    for netdev, switch, port in (("eth5", "c0ffee", "pf0vf1"), ("eth6", "0bad", "pf0vf0"), ("eth7", "c0ffee", "p0")):
        (tmp_path / "class/net" / netdev).mkdir()
        (tmp_path / "class/net" / netdev / "phys_switch_id").write_text(switch + "\n")
        (tmp_path / "class/net" / netdev / "phys_port_name").write_text(port + "\n")
    vf1 = virtual_function(PF, 1, sysfs)
    assert (vf1.representor, vf1.mode) == ("eth5", "representor")
    assert virtual_function(PF, 0, sysfs).representor == ""          # eth6 is another switch's


def test_simulated_num_vfs_writes_zero_first_and_refuses_vfs_in_use(sysfs: sim.SimulatedSysfs) -> None:
    path = f"class/net/{PF}/device/sriov_numvfs"
    with pytest.raises(SriovError, match=r"VF 0: bound to vfio-pci \(passed through to a guest\)"):
        set_num_vfs(PF, 4, sysfs)     # VF 0 belongs to a guest
    assert sysfs.writes == []
    bind_driver(virtual_function(PF, 0, sysfs), "", sysfs)    # back to its host driver
    with pytest.raises(SriovError, match="VF 1: interface vf1 of bridge br0"):
        set_num_vfs(PF, 4, sysfs, busy={1: "interface vf1 of bridge br0"})
    sysfs.writes.clear()
    assert set_num_vfs(PF, 4, sysfs)
    assert sysfs.writes == [(path, "0"), (path, "4")]          # the kernel refuses 2 -> 4 directly (EBUSY)
    assert [vf.netdev for vf in virtual_functions(PF, sysfs)] == [f"{PF}v{i}" for i in range(4)]
    assert not set_num_vfs(PF, 4, sysfs) and len(sysfs.writes) == 2
    with pytest.raises(SriovError, match=r"enp1s0f0 supports 0 to 8 VFs \(sriov_totalvfs\), not 9"):
        set_num_vfs(PF, 9, sysfs)
    assert set_num_vfs(PF, 0, sysfs) and virtual_functions(PF, sysfs) == []


def test_simulated_vf_moves_to_vfio_pci_and_back(sysfs: sim.SimulatedSysfs, tmp_path: Path) -> None:
    vf1 = virtual_function(PF, 1, sysfs)
    moved = bind_driver(vf1, "vfio-pci", sysfs)
    dev = "bus/pci/devices/0000:01:10.1"
    assert sysfs.writes == [(f"{dev}/driver_override", "vfio-pci"), (f"{dev}/driver/unbind", "0000:01:10.1"),
                            ("bus/pci/drivers_probe", "0000:01:10.1")]
    assert (moved.driver, moved.netdev, moved.mode) == ("vfio-pci", "", "passthrough")
    back = bind_driver(moved, "", sysfs)
    assert (back.driver, back.netdev, back.mode) == ("iavf", f"{PF}v1", "host")
    assert (tmp_path / dev / "driver_override").read_text() == "(null)\n"
    fs2 = sim.SimulatedSysfs(tmp_path, PF)
    fs2.refuse_probe.add("vfio-pci")                         # vfio-pci refuses the device
    with pytest.raises(SriovError, match="vfio-pci did not take it .* no driver"):
        bind_driver(back, "vfio-pci", fs2)
    after = virtual_function(PF, 1, sysfs)
    assert (after.driver, after.netdev) == ("iavf", f"{PF}v1")        # not left without a driver
    assert (tmp_path / dev / "driver_override").read_text() == "(null)\n"
    (tmp_path / "bus/pci/drivers/vfio-pci").rmdir()
    with pytest.raises(SriovError, match=r"the vfio-pci driver is not loaded \(modprobe vfio-pci"):
        bind_driver(back, "vfio-pci", sysfs)
    assert virtual_function(PF, 1, sysfs).driver == "iavf"     # nothing changed


def test_simulated_netlink_messages_are_the_kernels_bytes(sysfs: sim.SimulatedSysfs) -> None:
    """Each setting is one RTM_SETLINK on the PF; the bytes are checked against the uapi structs."""
    standin = sim.NetlinkStandIn(7, 2)
    sent: list[bytes] = []

    class Recording:
        def request(self, data: bytes) -> bytes:
            sent.append(data)
            return standin.request(data)

        def close(self) -> None:
            pass

    nl = VfNetlink(Recording())
    nl.configure(physical_function(PF, sysfs), 1, VfConfig(mac="52:54:00:00:00:11", vlan=10, qos=3,
                                                           spoofchk=False, trust=True, link_state="enable",
                                                           min_tx_rate=100, max_tx_rate=2500))
    assert standin.bad == []
    assert standin.log == [(1, "mac", ("52:54:00:00:00:11",)), (1, "vlan", (10, 3, 0x8100)),
                           (1, "rate", (100, 2500)), (1, "spoofchk", (0,)), (1, "trust", (1,)),
                           (1, "link_state", (1,))]
    # the MAC message, byte for byte: nlmsghdr, ifinfomsg(index 7), IFLA_VFINFO_LIST{IFLA_VF_INFO{IFLA_VF_MAC}},
    # nests without NLA_F_NESTED, as iproute2's ``ip link set PF vf 1 mac ...`` sends them
    mac = struct.pack("=I32s", 1, bytes.fromhex("525400000011"))
    vf_mac = struct.pack("=HH", 4 + len(mac), sim.IFLA_VF_MAC) + mac
    info = struct.pack("=HH", 4 + len(vf_mac), sim.IFLA_VF_INFO) + vf_mac
    vflist = struct.pack("=HH", 4 + len(info), sim.IFLA_VFINFO_LIST) + info
    body = struct.pack("=BxHiII", 0, 0, 7, 0, 0) + vflist
    get, set_mac = sent[0], sent[1]
    assert set_mac[16:] == body
    assert struct.unpack_from("=IHH", set_mac) == (16 + len(body), sim.RTM_SETLINK, 0x5)  # REQUEST|ACK
    assert struct.unpack_from("=H", get, 4)[0] == sim.RTM_GETLINK   # the configuration before, for a rollback
    seen = nl.vfs(7)[1]
    assert seen["mac"] == "52:54:00:00:00:11" and (seen["vlan"], seen["qos"]) == (10, 3)
    assert (seen["spoofchk"], seen["trust"], seen["link_state"]) == (False, True, "enable")
    assert (seen["min_tx_rate"], seen["max_tx_rate"]) == (100, 2500)


def test_simulated_qinq_vlan_uses_the_kernels_16_byte_vlan_info(sysfs: sim.SimulatedSysfs) -> None:
    """pyroute2 packs struct ifla_vf_vlan_info in 14 bytes; the kernel needs sizeof = 16 (else EINVAL)."""
    standin = sim.NetlinkStandIn(7, 2)
    VfNetlink(standin).configure(physical_function(PF, sysfs), 0, VfConfig(vlan=100, vlan_proto=ETH_P_8021AD))
    assert standin.bad == [] and (0, "vlan", (100, 0, 0x88A8)) in standin.log
    stock = ifinfmsg()
    stock["index"] = 7
    stock["attrs"] = [("IFLA_VFINFO_LIST", {"attrs": [("IFLA_VF_INFO", {"attrs": [("IFLA_VF_VLAN_LIST", {"attrs": [
        ("IFLA_VF_VLAN_INFO", {"vf": 0, "vlan": 100, "qos": 0, "proto": 0x88A8})]})]})]})]
    stock["header"]["type"] = sim.RTM_SETLINK
    stock.encode()
    reply = standin.request(bytes(stock.data))
    assert struct.unpack_from("=i", reply, 16)[0] == -errno.EINVAL
    assert standin.bad == ["IFLA_VF_VLAN_INFO of 14 bytes (struct ifla_vf_vlan_info: 16)"]


def test_simulated_refused_setting_puts_back_the_earlier_ones(sysfs: sim.SimulatedSysfs) -> None:
    standin = sim.NetlinkStandIn(7, 2)
    standin.vfs[1].update(mac="52:54:00:aa:aa:aa", vlan=5)
    standin.refuse["trust"] = errno.EOPNOTSUPP
    nl = VfNetlink(standin)
    with pytest.raises(SriovError, match=r"enp1s0f0 VF 1: setting trust failed: the PF driver does not support "
                                         r"it \(EOPNOTSUPP\); mac, vlan, rate, spoofchk put back as before"):
        nl.configure(physical_function(PF, sysfs), 1, VfConfig(mac="52:54:00:00:00:11", vlan=10, spoofchk=False,
                                                               trust=True, max_tx_rate=100))
    assert (standin.vfs[1]["mac"], standin.vfs[1]["vlan"], standin.vfs[1]["spoofchk"]) == ("52:54:00:aa:aa:aa", 5, 1)
    assert standin.vfs[1]["max_tx_rate"] == 0
    with pytest.raises(SriovError, match="VF VLAN 4095 is outside 0..4094"):
        nl.configure(physical_function(PF, sysfs), 1, VfConfig(vlan=4095))
    with pytest.raises(SriovError, match="min-tx-rate 500 is above max-tx-rate 100"):
        nl.configure(physical_function(PF, sysfs), 1, VfConfig(min_tx_rate=500, max_tx_rate=100))


def test_simulated_flags_the_driver_does_not_report_are_unknown(sysfs: sim.SimulatedSysfs) -> None:
    """The kernel reports -1 for spoofchk/trust a driver does not give: not "on", and never written back."""
    standin = sim.NetlinkStandIn(7, 2)
    standin.unreported.add("trust")
    nl = VfNetlink(standin)
    assert nl.vfs(7)[0]["trust"] is None and nl.vfs(7)[0]["spoofchk"] is True
    pf = physical_function(PF, sysfs)
    before = nl.configure(pf, 0, VfConfig(mac="52:54:00:00:00:01", trust=True))
    standin.log.clear()
    nl.restore(pf, 0, before, VfConfig(mac="52:54:00:00:00:01", trust=True))
    assert [name for _, name, _ in standin.log] == ["mac", "vlan"]    # trust unknown before: left alone
    assert [name for name, _ in VfConfig().settings(0, {"max_tx_rate": 0})] == ["vlan"]   # no rate asked or set


def test_simulated_host_vf_without_netdev_yet_is_retried(sysfs: sim.SimulatedSysfs, tmp_path: Path) -> None:
    """iavf registers its netdev a moment after binding: such a VF is not taken for a passed-through one."""
    (tmp_path / "bus/pci/devices/0000:01:10.1/net" / f"{PF}v1").rmdir()
    with pytest.raises(SriovError, match=r"VF 1 of enp1s0f0 \(0000:01:10.1\) is bound to iavf but has no netdev"):
        SriovVfPort("vf1", pf=PF, vf=1, sysfs=sysfs, netlink=VfNetlink(sim.NetlinkStandIn(7, 2)))


def test_simulated_vf_statistics(sysfs: sim.SimulatedSysfs) -> None:
    standin = sim.NetlinkStandIn(7, 2)
    standin.stats[0].update(rx_packets=11, tx_packets=22, rx_bytes=3300, tx_bytes=4400, multicast=2,
                            rx_dropped=1, tx_dropped=4)
    stats = VfNetlink(standin).vfs(7)[0]["stats"]
    assert stats == {"rx_packets": 11, "tx_packets": 22, "rx_bytes": 3300, "tx_bytes": 4400, "broadcast": 0,
                     "multicast": 2, "rx_dropped": 1, "tx_dropped": 4}


@pytest.mark.integration
def test_real_kernel_parses_vf_messages_on_a_veth() -> None:
    """The real kernel takes our IFLA_VF_* attributes apart and answers that a veth has no VFs: EOPNOTSUPP.

    A truncated attribute is refused earlier, by the kernel's length policy (EINVAL/ERANGE), so the
    EOPNOTSUPP shows the layout passed the kernel's checks.
    """
    name = f"pvsr{socket.gethostname()[-2:]}".replace("-", "")[:12] + "x"
    with HostNet() as net:
        net._undo.append(["ip", "link", "del", name])
        sim_run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"])
        ifindex = socket.if_nametoindex(name)
        nl = VfNetlink()
        with pytest.raises(OSError) as exc:
            nl.set_attr(ifindex, ("IFLA_VF_MAC", {"vf": 0, "mac": "52:54:00:00:00:10"}))
        assert exc.value.errno == errno.EOPNOTSUPP
        transport = KernelNetlink()
        short = struct.pack("=HH", 8, sim.IFLA_VF_MAC) + struct.pack("=I", 0)
        info = struct.pack("=HH", 4 + len(short), 0x8000 | sim.IFLA_VF_INFO) + short
        vflist = struct.pack("=HH", 4 + len(info), 0x8000 | sim.IFLA_VFINFO_LIST) + info
        body = struct.pack("=BxHiII", 0, 0, ifindex, 0, 0) + vflist
        reply = transport.request(struct.pack("=IHHII", 16 + len(body), sim.RTM_SETLINK, 0x5, 99, 0) + body)
        assert -struct.unpack_from("=i", reply, 16)[0] in (errno.EINVAL, errno.ERANGE)
        transport.close()
        assert nl.vfs(ifindex) == {}          # a veth reports no VFs
        pf = physical_function_like(name, ifindex)
        with pytest.raises(SriovError, match=r"setting mac failed: the veth driver does not support it \(EOPNOTSUPP\)"):
            nl.configure(pf, 0, VfConfig(mac="52:54:00:00:00:10"))
        nl.close()


def physical_function_like(netdev: str, ifindex: int):  # noqa: ANN201 - a PhysicalFunction for a real netdev
    from backends.sriov import PhysicalFunction

    return PhysicalFunction(netdev, "", "veth", ifindex, 0, 0)


def sim_run(cmd: list[str]) -> None:
    import subprocess

    subprocess.run(cmd, check=True, capture_output=True)
