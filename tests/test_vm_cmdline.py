"""``vswitch.vm`` without starting anything: NIC specs, stable MACs, the QEMU command line.

The ``vf`` tests run against a *simulated* sysfs tree the test builds (these machines have no
SR-IOV NIC and no VFIO); the vfio-pci command line they check is what a real host would get.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import sriov_sim
from vswitch.vm import (
    Nic,
    VmConfig,
    VmError,
    VmManager,
    default_port_name,
    parse_disk,
    parse_memory,
    parse_nic,
    qemu_command,
    resolve_nics,
    stable_mac,
    vf_for_passthrough,
)


def device_args(cmd: list[str]) -> list[str]:
    return [cmd[i + 1] for i, a in enumerate(cmd) if a == "-device"]


def opt(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def resolved(cfg: VmConfig, vmdir: Path, interfaces: dict | None = None) -> VmConfig:
    resolve_nics(cfg, vmdir, interfaces or {})
    return cfg


def test_parse_nic_specs_and_their_errors() -> None:
    nic = parse_nic("vhost-user,bridge=br0,tag=10,mac=52:54:00:AA:bb:01,ip=10.0.0.5/24,port=web-a")
    assert (nic.kind, nic.bridge, nic.tag, nic.mac, nic.ip, nic.port) == (
        "vhost-user", "br0", 10, "52:54:00:aa:bb:01", "10.0.0.5/24", "web-a")
    assert nic.iface_type == "dpdkvhostuserclient"
    assert parse_nic("tap,bridge=br1").iface_type == ""          # a system port on the tap netdev
    vf = parse_nic("vf,pf=enp1s0f0,vf=3")
    assert (vf.pf, vf.vf, vf.bridge) == ("enp1s0f0", 3, "")
    for spec, message in [
        ("virtio,bridge=br0", "the kind is one of vhost-user, tap, vf"),
        ("tap", "which bridge? add bridge=NAME"),
        ("tap,bridge=br0,tag=5000", "tag is a VLAN, 0 to 4095"),
        ("tap,bridge=br0,tag=x", "tag takes a number"),
        ("tap,bridge=br0,mac=01:00:5e:00:00:01", "mac must be a unicast MAC"),
        ("tap,bridge=br0,port=a-name-that-is-too-long", "port names are 1 to 15 characters"),
        ("tap,bridge=br0,port=a b", "port names are 1 to 15 characters without"),
        ("tap,bridge=br0,speed=10", "'speed=10' is not one of bridge=, mac=, ip=, tag=, port="),
        ("vf,pf=enp1s0f0", "a VF NIC needs pf=NETDEV and vf=INDEX"),
        ("tap,bridge=br0,bridge=br1", "bridge= is given twice"),
        ("tap,bridge=br0,ip=10.0.0.300/24", "is not an address with a prefix length"),
        ("tap,bridge=br0,ip=10.0.0.3", "needs a prefix length, e.g. 10.0.0.3/24"),
    ]:
        with pytest.raises(VmError, match=message.replace("?", r"\?")):
            parse_nic(spec)


def test_memory_sizes() -> None:
    assert parse_memory("256M") == 256
    assert parse_memory("2G") == 2048
    assert parse_memory("512") == 512
    assert parse_memory("1GiB") == 1024
    for bad in ("lots", "16M", "1T"):
        with pytest.raises(VmError):
            parse_memory(bad)


def test_macs_are_stable_per_vm_and_nic() -> None:
    assert stable_mac("web1", 0) == stable_mac("web1", 0)
    macs = {stable_mac(vm, i) for vm in ("web1", "web2", "db") for i in range(4)}
    assert len(macs) == 12
    assert all(m.startswith("52:54:00:") and len(m) == 17 for m in macs)
    assert default_port_name("web1", 2) == "web1-2"
    long_name = default_port_name("a-very-long-vm-name", 0)
    assert len(long_name) <= 15 and long_name.endswith("-0")
    assert long_name == default_port_name("a-very-long-vm-name", 0)


def test_tcg_command_line_shared_memfd_and_the_vectors_workaround(tmp_path: Path) -> None:
    cfg = resolved(VmConfig("web1", memory_mb=256, cpus=2, kernel="/k", initrd="/i", append="quiet2",
                            nics=[parse_nic("vhost-user,bridge=br0,ip=10.0.0.11/24"),
                                  parse_nic("tap,bridge=br0,ip=10.0.1.11/24")]), tmp_path)
    cmd = qemu_command(cfg, tmp_path, "tcg", "/usr/bin/qemu-system-x86_64")
    assert opt(cmd, "-accel") == "tcg" and opt(cmd, "-smp") == "2" and "-no-reboot" in cmd
    assert opt(cmd, "-object") == "memory-backend-memfd,id=mem0,size=256M,share=on"   # vhost-user needs share=on
    assert opt(cmd, "-numa") == "node,memdev=mem0"
    assert opt(cmd, "-qmp") == f"unix:{tmp_path / 'qmp.sock'},server=on,wait=off"
    assert f"logfile={tmp_path / 'console.log'}" in cmd[cmd.index("-serial") - 1]
    assert f"socket,id=nic0,path={tmp_path / 'web1-0.sock'},server=on" in cmd   # QEMU is the socket server
    devices = device_args(cmd)
    assert devices[0] == f"virtio-net-pci,netdev=net0,mac={stable_mac('web1', 0)},vectors=0"   # TCG + vhost-user
    assert devices[1] == f"virtio-net-pci,netdev=net1,mac={stable_mac('web1', 1)}"             # tap: no workaround
    assert "tap,id=net1,ifname=web1-1,script=no,downscript=no" in cmd
    append = opt(cmd, "-append")
    assert "ip=10.0.0.11/24" in append and "ip1=10.0.1.11/24" in append and append.endswith("quiet2")
    assert opt(cmd, "-kernel") == "/k" and opt(cmd, "-initrd") == "/i"


def test_kvm_command_line_has_no_workaround_and_hugepages(tmp_path: Path) -> None:
    (tmp_path / "disk.img").write_bytes(bytes(4096))
    cfg = resolved(VmConfig("db", memory_mb=1024, hugepages=True, disks=[parse_disk(str(tmp_path / "disk.img"))],
                            nics=[parse_nic("vhost-user,bridge=br0")]), tmp_path)
    cmd = qemu_command(cfg, tmp_path, "kvm", "qemu-system-x86_64")
    assert opt(cmd, "-accel") == "kvm" and opt(cmd, "-cpu") == "host"
    assert opt(cmd, "-object") == "memory-backend-memfd,id=mem0,size=1024M,share=on,hugetlb=on"
    assert device_args(cmd) == [f"virtio-net-pci,netdev=net0,mac={stable_mac('db', 0)}"]
    assert f"file={tmp_path / 'disk.img'},if=virtio,format=raw,index=0" in cmd
    assert "-kernel" not in cmd and "-append" not in cmd


def test_vf_for_passthrough_on_a_simulated_pf(tmp_path: Path) -> None:
    """Simulation: a sysfs tree built here stands in for an SR-IOV NIC (none on these machines)."""
    sysfs = tmp_path / "sys"
    sriov_sim.build_sysfs(sysfs, "enp1s0f0", {0: ("0000:01:10.0", "vfio-pci", ""),
                                              1: ("0000:01:10.1", "iavf", "enp1s0f0v1"),
                                              2: ("0000:01:10.2", "iavf", "enp1s0f0v2")})
    (sysfs / "class/net/enp1s0f0v2").mkdir()
    (sysfs / "class/net/enp1s0f0v2/flags").write_text("0x1003\n")      # IFF_UP
    assert vf_for_passthrough("enp1s0f0", 1, str(sysfs)).pci == "0000:01:10.1"
    with pytest.raises(VmError, match=r"VF 0 of enp1s0f0 \(0000:01:10.0\) is already bound to vfio-pci"):
        vf_for_passthrough("enp1s0f0", 0, str(sysfs))
    with pytest.raises(VmError, match=r"VF 2 of enp1s0f0 \(0000:01:10.2\) is in use by the host: its netdev "
                                      r"enp1s0f0v2 is up"):
        vf_for_passthrough("enp1s0f0", 2, str(sysfs))
    port = {"vfp": {"type": "sriov-vf", "options": {"pf": "enp1s0f0", "vf": "1"}, "external_ids": {}}}
    with pytest.raises(VmError, match="VF 1 of enp1s0f0 .* is in use: it is switch port vfp"):
        vf_for_passthrough("enp1s0f0", 1, str(sysfs), port)
    with pytest.raises(VmError, match="its netdev enp1s0f0v1 is a switch port"):
        vf_for_passthrough("enp1s0f0", 1, str(sysfs), {"enp1s0f0v1": {"type": "", "options": {}}})
    with pytest.raises(VmError, match=r"enp1s0f0 has no VF 5 \(3 of 8 VFs are enabled"):
        vf_for_passthrough("enp1s0f0", 5, str(sysfs))
    with pytest.raises(VmError, match="no network device eth9"):
        vf_for_passthrough("eth9", 0, str(sysfs))
    (sysfs / "class/net/lo/device").mkdir(parents=True)
    with pytest.raises(VmError, match="lo has no SR-IOV capability"):
        vf_for_passthrough("lo", 0, str(sysfs))
    with pytest.raises(VmError, match="port= needs bridge="):
        parse_nic("vf,pf=enp1s0f0,vf=1,port=p")
    with pytest.raises(VmError, match="vf= is the VF's index, 0 or more"):
        parse_nic("vf,pf=enp1s0f0,vf=-1")
    assert parse_nic("vf,pf=enp1s0f0,vf=1,tag=10").tag == 10     # set through the PF by the launcher
    with pytest.raises(VmError, match="two NICs of VM web1 use VF 1 of enp1s0f0"):
        resolve_nics(VmConfig("web1", nics=[parse_nic("vf,pf=enp1s0f0,vf=1")] * 2), tmp_path, {}, str(sysfs))
    nic = Nic("vf", pf="enp1s0f0", vf=1, mac=stable_mac("web1", 0), pci="0000:01:10.1")
    cmd = qemu_command(VmConfig("web1", kernel="/k", nics=[nic]), tmp_path, "kvm", "qemu")
    assert device_args(cmd) == ["vfio-pci,host=0000:01:10.1,id=vf0"]


def test_ports_of_someone_else_are_refused(tmp_path: Path) -> None:
    nics = [parse_nic("vhost-user,bridge=br0"), parse_nic("tap,bridge=br0")]
    mine = {"web1-0": {"external_ids": {"vm-id": "web1"}}}
    cfg = resolved(VmConfig("web1", nics=nics), tmp_path, mine)   # a stale port of this VM is fine
    assert [n.port for n in cfg.nics] == ["web1-0", "web1-1"]
    assert cfg.nics[0].socket == str(tmp_path / "web1-0.sock")
    for interfaces, whose in [({"web1-1": {"external_ids": {"vm-id": "db"}}}, "VM db's"),
                              ({"web1-1": {"external_ids": {}}}, "not a port of this VM")]:
        with pytest.raises(VmError, match=f"port web1-1 already exists in the switch \\({whose}\\)"):
            resolve_nics(VmConfig("web1", nics=[parse_nic("tap,bridge=br0"), parse_nic("tap,bridge=br0")]),
                         tmp_path, interfaces)
    twice = [parse_nic("tap,bridge=br0,port=p"), parse_nic("vhost-user,bridge=br0,port=p")]
    with pytest.raises(VmError, match="two NICs of VM web1 use port name p"):
        resolve_nics(VmConfig("web1", nics=twice), tmp_path, {})


def test_commas_in_paths_are_doubled_in_qemu_options(tmp_path: Path) -> None:
    vmdir = tmp_path / "run,x" / "vms" / "web1"
    disk = tmp_path / "a,snapshot=on.img"
    disk.write_bytes(b"QFI\xfb" + bytes(508))
    cfg = resolved(VmConfig("web1", disks=[parse_disk(str(disk))], nics=[parse_nic("vhost-user,bridge=br0")]),
                   vmdir)
    cmd = qemu_command(cfg, vmdir, "tcg", "qemu")
    assert opt(cmd, "-qmp") == f"unix:{tmp_path}/run,,x/vms/web1/qmp.sock,server=on,wait=off"
    assert f"socket,id=nic0,path={tmp_path}/run,,x/vms/web1/web1-0.sock,server=on" in cmd
    assert f"file={tmp_path}/a,,snapshot=on.img,if=virtio,format=qcow2,index=0" in cmd   # the header, once


def test_disk_format_is_decided_once(tmp_path: Path) -> None:
    raw = tmp_path / "raw.img"
    raw.write_bytes(bytes(512))
    assert parse_disk(str(raw)) == {"file": str(raw), "format": "raw"}
    saved = VmConfig("web1", disks=[parse_disk(str(raw))]).to_json()
    raw.write_bytes(b"QFI\xfb" + bytes(508))      # the guest writes a qcow2 header onto its raw disk
    assert VmConfig.from_json(saved).disks == [{"file": str(raw), "format": "raw"}]
    assert parse_disk(f"{raw},format=raw")["format"] == "raw"
    with pytest.raises(VmError, match="format is raw or qcow2"):
        parse_disk(f"{raw},format=vmdk")
    with pytest.raises(VmError, match="no such file"):
        parse_disk(str(tmp_path / "missing.img"))


def test_vm_names_are_checked_everywhere(tmp_path: Path) -> None:
    mgr = VmManager(str(tmp_path))
    assert mgr.vmdir("web-1.a_b") == tmp_path / "vms" / "web-1.a_b"
    for bad in ("../etc", "/etc", "web1\n", "", "-x", "a" * 33):
        with pytest.raises(VmError, match="VM name"):
            mgr.vmdir(bad)
    with pytest.raises(VmError, match="VM name"):
        mgr.delete("../../etc")
    (tmp_path / "vms" / "broken").mkdir(parents=True)
    (tmp_path / "vms" / "broken" / "vm.json").write_text("[1, 2]")   # damaged state: "no such VM", no traceback
    with pytest.raises(VmError, match="no VM named broken"):
        mgr.status("broken")
