"""SR-IOV virtual functions (VT-c VMDc): the NIC sorts frames into per-VF queues by MAC and VLAN.

```
                      sysfs (Sysfs)                               netlink (VfNetlink, RTM_SETLINK on the PF)
 PF netdev ── class/net/PF/device ── sriov_totalvfs            IFLA_VFINFO_LIST ─ IFLA_VF_INFO ─ IFLA_VF_MAC
   │                                 sriov_numvfs  (num-vfs)                                  ├ IFLA_VF_VLAN (_LIST)
   │                                 virtfnN ──► VF PCI function                              ├ IFLA_VF_RATE
   │                                               ├ driver ──► iavf / vfio-pci               ├ IFLA_VF_SPOOFCHK
   │                                               ├ driver_override, drivers_probe           ├ IFLA_VF_TRUST
   │                                               └ net/<VF netdev>                          └ IFLA_VF_LINK_STATE
   │                                                                                  RTM_GETLINK + RTEXT_FILTER_VF:
   ▼                                                                                    per-VF config and IFLA_VF_STATS
 NIC's L2 sorter ──► VF queue ──► guest (vfio-pci passthrough)  or  VF netdev (a system port of the bridge)
```

* ``Sysfs(root)`` reads and writes the kernel's sysfs (``/sys``); tests give a tree of their own.
* ``physical_function`` / ``virtual_function`` discover a PF and its VFs; ``set_num_vfs`` writes
  ``sriov_numvfs`` (0 first, as the kernel requires); ``bind_driver`` moves a VF to another driver
  (``driver_override``, ``unbind``, ``drivers_probe``) and checks that it arrived.
* ``VfNetlink(transport)`` configures a VF through its PF (one ``RTM_SETLINK`` per setting, so a
  refused setting is known by name and the ones before it are put back) and reads every VF's
  configuration and counters. The transport is the kernel's ``NETLINK_ROUTE`` socket, or, for
  simulations, a unix socket to a stand-in (``unix:PATH``).
* ``SriovVfPort`` is the ``sriov-vf`` switch port: a VF bound to a host driver is driven as a
  system port on its netdev; a VF bound to ``vfio-pci`` (or to no driver) belongs to a guest and the
  switch reaches it through the PF's port, so the port itself moves no frames.

Messages are built with pyroute2's ``ifinfmsg``, except ``struct ifla_vf_vlan_info``: pyroute2 packs
it in 14 bytes, the kernel wants ``sizeof`` = 16 and refuses shorter attributes with EINVAL.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST, nla
from pyroute2.netlink.rtnl import RTM_GETLINK, RTM_NEWLINK, RTM_SETLINK
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from backends.pool import PacketPool
from backends.port import TX_DROPPED, TX_VF_PASSTHROUGH, Port, PortError
from backends.system import SystemPort

log = logging.getLogger(__name__)

SYSFS_ROOT = "/sys"
VFIO_DRIVER = "vfio-pci"
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
VLAN_PROTOS = {"802.1q": ETH_P_8021Q, "802.1ad": ETH_P_8021AD}
LINK_STATES = {"auto": 0, "enable": 1, "disable": 2}
RTEXT_FILTER_VF = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NETLINK_HEADER = struct.Struct("=IHHII")
MAX_RATE_MBPS = 1_000_000


class SriovError(PortError):
    """An SR-IOV operation that cannot be done; the message says why and what to do."""


# ------------------------------------------------------------------------------------------- sysfs


class Sysfs:
    """The kernel's sysfs under ``root`` (``/sys``); every path is relative to it."""

    def __init__(self, root: str = SYSFS_ROOT) -> None:
        self.root = root

    def path(self, rel: str) -> str:
        """The absolute path of ``rel``."""
        return os.path.join(self.root, rel)

    def exists(self, rel: str) -> bool:
        """Whether ``rel`` exists (a dangling link does not)."""
        return os.path.exists(self.path(rel))

    def read(self, rel: str) -> str:
        """The stripped contents of ``rel``; "" when it cannot be read."""
        try:
            with open(self.path(rel)) as f:
                return f.read().strip()
        except OSError:
            return ""

    def write(self, rel: str, value: str) -> None:
        """Write ``value`` to the attribute ``rel`` as ``echo`` does (OSError as the kernel answers)."""
        with open(self.path(rel), "w") as f:
            f.write(value + "\n")

    def link_name(self, rel: str) -> str:
        """The last component of the symlink ``rel`` points to; "" when it is not a link."""
        try:
            return os.path.basename(os.readlink(self.path(rel)))
        except OSError:
            return ""

    def listdir(self, rel: str) -> list[str]:
        """The sorted entries of directory ``rel``; [] when it does not exist."""
        try:
            return sorted(os.listdir(self.path(rel)))
        except OSError:
            return []


@dataclass(frozen=True)
class PhysicalFunction:
    """A PF: its netdev, PCI address, driver and VF counts."""

    netdev: str
    pci: str
    driver: str
    ifindex: int
    total_vfs: int
    num_vfs: int


@dataclass(frozen=True)
class VirtualFunction:
    """VF ``index`` of PF ``pf``: PCI address, driver ("" when none), netdev ("" when none), IOMMU group."""

    pf: str
    index: int
    pci: str
    driver: str
    netdev: str
    iommu_group: str
    representor: str = ""   # the VF's switchdev representor netdev, when the PF's eswitch is in switchdev mode

    @property
    def mode(self) -> str:
        """``representor`` when the PF is in switchdev mode (the VF's frames reach the host through its
        representor), else ``host`` when a host driver gives the VF a netdev, else ``passthrough``."""
        if self.representor:
            return "representor"
        return "passthrough" if self.driver in ("", VFIO_DRIVER) else "host"

    def describe(self) -> str:
        """``VF 1 of enp1s0f0 (0000:01:10.1)``."""
        return f"VF {self.index} of {self.pf} ({self.pci})"


def physical_function(pf: str, sysfs: Sysfs) -> PhysicalFunction:
    """The PF netdev ``pf``; SriovError when it does not exist or has no SR-IOV capability."""
    device = f"class/net/{pf}/device"
    if not sysfs.exists(f"class/net/{pf}"):
        raise SriovError(f"no network device {pf} (the PF): {sysfs.path('class/net/' + pf)} is missing")
    if not sysfs.exists(f"{device}/sriov_totalvfs"):
        raise SriovError(f"{pf} has no SR-IOV capability (no {sysfs.path(device)}/sriov_totalvfs): it is not a PF, "
                         "or its driver does not enable SR-IOV")
    try:
        total = int(sysfs.read(f"{device}/sriov_totalvfs"))
        num = int(sysfs.read(f"{device}/sriov_numvfs") or "0")
        ifindex = int(sysfs.read(f"class/net/{pf}/ifindex") or "0")
    except ValueError as exc:
        raise SriovError(f"{pf}: unreadable SR-IOV attributes in sysfs ({exc})") from None
    return PhysicalFunction(pf, sysfs.link_name(device), sysfs.link_name(f"{device}/driver"), ifindex, total, num)


def virtual_function(pf: str, index: int, sysfs: Sysfs) -> VirtualFunction:
    """VF ``index`` of ``pf``; SriovError for a missing PF, no SR-IOV, or an index out of range."""
    info = physical_function(pf, sysfs)
    if not 0 <= index < info.num_vfs or not sysfs.exists(f"class/net/{pf}/device/virtfn{index}"):
        hint = (f"{info.num_vfs} of {info.total_vfs} VFs are enabled; enable more with "
                f"ovs-vsctl set Interface {pf} options:num-vfs=N")
        raise SriovError(f"{pf} has no VF {index} ({hint})")
    pci = sysfs.link_name(f"class/net/{pf}/device/virtfn{index}")
    dev = f"bus/pci/devices/{pci}"
    nets = sysfs.listdir(f"{dev}/net")
    return VirtualFunction(pf, index, pci, sysfs.link_name(f"{dev}/driver"), nets[0] if nets else "",
                           sysfs.link_name(f"{dev}/iommu_group"), representor(pf, index, sysfs))


def representor(pf: str, index: int, sysfs: Sysfs) -> str:
    """The switchdev representor of VF ``index`` of ``pf``: the netdev with the PF's ``phys_switch_id`` whose
    ``phys_port_name`` is ``pf<N>vf<index>`` (or ``vf<index>``); "" when the PF is not in switchdev mode."""
    switch_id = sysfs.read(f"class/net/{pf}/phys_switch_id")
    if not switch_id:
        return ""
    for netdev in sysfs.listdir("class/net"):
        if netdev != pf and sysfs.read(f"class/net/{netdev}/phys_switch_id") == switch_id:
            if re.fullmatch(rf"(pf\d+)?vf{index}", sysfs.read(f"class/net/{netdev}/phys_port_name")):
                return netdev
    return ""


def virtual_functions(pf: str, sysfs: Sysfs) -> list[VirtualFunction]:
    """Every enabled VF of ``pf``, by index."""
    return [virtual_function(pf, i, sysfs) for i in range(physical_function(pf, sysfs).num_vfs)]


def set_num_vfs(pf: str, count: int, sysfs: Sysfs, busy: dict[int, str] | None = None) -> bool:
    """Enable ``count`` VFs on ``pf`` (``sriov_numvfs``, written 0 first); False when already so.

    ``busy`` maps VF indexes to who uses them: changing the count removes every VF, so it is refused.
    """
    info = physical_function(pf, sysfs)
    if not 0 <= count <= info.total_vfs:
        raise SriovError(f"{pf} supports 0 to {info.total_vfs} VFs (sriov_totalvfs), not {count}")
    if count == info.num_vfs:
        return False
    users = dict(busy or {})
    for vf in range(info.num_vfs):
        if vf in users:
            continue
        try:
            current = virtual_function(pf, vf, sysfs)
        except SriovError:
            continue
        if current.driver == VFIO_DRIVER:
            users[vf] = "bound to vfio-pci (passed through to a guest)"
    if users:
        used = "; ".join(f"VF {vf}: {who}" for vf, who in sorted(users.items()))
        raise SriovError(f"cannot change the number of VFs of {pf} from {info.num_vfs} to {count}: the change "
                         f"removes every VF and some are in use ({used})")
    path = f"class/net/{pf}/device/sriov_numvfs"
    try:
        if info.num_vfs:
            sysfs.write(path, "0")
        if count:
            sysfs.write(path, str(count))
    except OSError as exc:
        raise SriovError(f"{pf}: writing {count} to sriov_numvfs failed: {exc.strerror or exc}") from None
    return True


def bind_driver(vf: VirtualFunction, driver: str, sysfs: Sysfs) -> VirtualFunction:
    """Move ``vf`` to ``driver`` ("" : its default host driver) and return it as it now is.

    ``driver_override`` names the driver, the current one is unbound and ``drivers_probe`` binds it.
    """
    if driver and not sysfs.exists(f"bus/pci/drivers/{driver}"):
        hint = "modprobe vfio-pci (and boot with the IOMMU on: intel_iommu=on or amd_iommu=on)" \
            if driver == VFIO_DRIVER else f"modprobe {driver}"
        raise SriovError(f"{vf.describe()}: the {driver} driver is not loaded ({hint})")
    if driver == VFIO_DRIVER and not vf.iommu_group:
        raise SriovError(f"{vf.describe()} has no IOMMU group, so vfio-pci cannot take it: boot with the IOMMU "
                         "on (intel_iommu=on iommu=pt, or amd_iommu=on)")
    if (vf.driver == driver) if driver else (vf.driver and vf.driver != VFIO_DRIVER):
        return vf    # already there
    dev = f"bus/pci/devices/{vf.pci}"
    failure = ""
    try:
        sysfs.write(f"{dev}/driver_override", driver)
        if vf.driver:
            sysfs.write(f"{dev}/driver/unbind", vf.pci)
        sysfs.write("bus/pci/drivers_probe", vf.pci)
    except OSError as exc:
        failure = f"binding to {driver or 'its host driver'} failed: {exc.strerror or exc}"
    now = virtual_function(vf.pf, vf.index, sysfs)
    if not failure and driver and now.driver != driver:
        failure = f"{driver} did not take it (it is bound to {now.driver or 'no driver'}); see dmesg"
    if failure:
        if driver and now.driver != vf.driver:   # not left without a driver: back to where it was
            with contextlib.suppress(OSError):
                sysfs.write(f"{dev}/driver_override", "")
                if now.driver:
                    sysfs.write(f"{dev}/driver/unbind", vf.pci)
                if vf.driver:
                    sysfs.write("bus/pci/drivers_probe", vf.pci)
        raise SriovError(f"{vf.describe()}: {failure}")
    return now


# ------------------------------------------------------------------------------------------- netlink


class _Own:
    """pyroute2 compiles a class's attribute table once and marks the class; a subclass inherits the mark
    (and would use its parent's table): these attributes give each subclass a table of its own."""

    _nlmsg_base__compiled_nla = False
    _nlmsg_base__t_nla_map = None
    _nlmsg_base__r_nla_map = None


class _VfLinkMsg(_Own, ifinfmsg):
    """pyroute2's ``ifinfmsg`` with ``struct ifla_vf_vlan_info`` at the kernel's 16 bytes."""

    class vflist(_Own, ifinfmsg.vflist):
        class vfinfo(_Own, ifinfmsg.vflist.vfinfo):
            class vf_vlist(_Own, ifinfmsg.vflist.vfinfo.vf_vlist):
                class ivvi(nla):
                    fields = (("vf", "I"), ("vlan", "I"), ("qos", "I"), ("proto", ">H"), ("pad", "H"))


@dataclass(frozen=True)
class VfConfig:
    """What a VF should be; None leaves a setting as it is."""

    mac: str | None = None
    vlan: int | None = 0      # None: not set in the hardware (a representor's VLAN is the bridge's)
    qos: int = 0
    vlan_proto: int = ETH_P_8021Q
    spoofchk: bool | None = None
    trust: bool | None = None
    link_state: str | None = None
    min_tx_rate: int = 0     # Mbit/s, 0: no minimum
    max_tx_rate: int = 0     # Mbit/s, 0: no limit

    def check(self) -> None:
        """SriovError for values no PF would take."""
        if self.vlan is not None and not 0 <= self.vlan <= 4094:
            raise SriovError(f"VF VLAN {self.vlan} is outside 0..4094")
        if not 0 <= self.qos <= 7:
            raise SriovError(f"VF VLAN priority (qos) {self.qos} is outside 0..7")
        if self.link_state is not None and self.link_state not in LINK_STATES:
            raise SriovError(f"link-state {self.link_state!r} is not one of {', '.join(LINK_STATES)}")
        if not (0 <= self.min_tx_rate <= MAX_RATE_MBPS and 0 <= self.max_tx_rate <= MAX_RATE_MBPS):
            raise SriovError("tx rates are Mbit/s between 0 and 1000000")
        if self.max_tx_rate and self.min_tx_rate > self.max_tx_rate:
            raise SriovError(f"min-tx-rate {self.min_tx_rate} is above max-tx-rate {self.max_tx_rate}")

    def settings(self, vf: int, before: dict[str, Any] | None = None) -> list[tuple[str, tuple[str, dict]]]:
        """``(setting name, IFLA_VF_* attribute)`` in the order they are applied. No rate is sent when none is
        asked for and none is set (``before``): drivers without rate limits, or with the link down, refuse it."""
        out: list[tuple[str, tuple[str, dict]]] = []
        if self.mac is not None:
            out.append(("mac", ("IFLA_VF_MAC", {"vf": vf, "mac": self.mac})))
        if self.vlan is None:
            pass
        elif self.vlan_proto == ETH_P_8021Q:
            out.append(("vlan", ("IFLA_VF_VLAN", {"vf": vf, "vlan": self.vlan, "qos": self.qos})))
        else:
            out.append(("vlan", ("IFLA_VF_VLAN_LIST", {"attrs": [("IFLA_VF_VLAN_INFO", {
                "vf": vf, "vlan": self.vlan, "qos": self.qos, "proto": self.vlan_proto, "pad": 0})]})))
        rate_set = before is not None and (before.get("min_tx_rate") or before.get("max_tx_rate"))
        if self.min_tx_rate or self.max_tx_rate or rate_set:
            out.append(("rate", ("IFLA_VF_RATE", {"vf": vf, "min_tx_rate": self.min_tx_rate,
                                                   "max_tx_rate": self.max_tx_rate})))
        if self.spoofchk is not None:
            out.append(("spoofchk", ("IFLA_VF_SPOOFCHK", {"vf": vf, "spoofchk": int(self.spoofchk)})))
        if self.trust is not None:
            out.append(("trust", ("IFLA_VF_TRUST", {"vf": vf, "trust": int(self.trust)})))
        if self.link_state is not None:
            out.append(("link_state", ("IFLA_VF_LINK_STATE", {"vf": vf, "link_state": LINK_STATES[self.link_state]})))
        return out


class NetlinkTransport(Protocol):
    """Sends one netlink request and returns the reply messages' bytes (up to the ack or NLMSG_DONE)."""

    def request(self, data: bytes) -> bytes: ...

    def close(self) -> None: ...


class KernelNetlink:
    """The kernel's ``NETLINK_ROUTE`` socket."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.sock.settimeout(5.0)

    def request(self, data: bytes) -> bytes:
        """Send ``data`` (with NLM_F_ACK); gather this request's replies up to its ack or NLMSG_DONE."""
        self.sock.send(data)
        seq = NETLINK_HEADER.unpack_from(data)[3]
        out = bytearray()
        while True:
            for msg_type, _flags, msg_seq, body in _messages(self.sock.recv(1 << 20)):
                if msg_seq != seq:
                    continue   # a late answer to an earlier request that timed out
                out += body + bytes(-len(body) % 4)
                if msg_type in (NLMSG_ERROR, NLMSG_DONE):
                    return bytes(out)

    def close(self) -> None:
        self.sock.close()


class UnixNetlink:
    """A ``SOCK_SEQPACKET`` unix socket to a netlink stand-in (simulations): one request, one reply packet."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        self.sock.settimeout(5.0)
        try:
            self.sock.connect(path)
        except OSError as exc:
            self.sock.close()
            raise SriovError(f"cannot reach the netlink stand-in at {path}: {exc.strerror or exc}") from None

    def request(self, data: bytes) -> bytes:
        """Send ``data``, return the stand-in's reply."""
        self.sock.send(data)
        return self.sock.recv(1 << 20)

    def close(self) -> None:
        self.sock.close()


def _reported(attr: Any, key: str) -> bool | None:
    """A VF flag as the PF reports it; None when absent or -1 (the kernel's "the driver did not say")."""
    if attr is None or attr[key] == 0xFFFFFFFF:
        return None
    return bool(attr[key])


def _errno_name(code: int | None) -> str:
    """``EOPNOTSUPP`` (the name the kernel's headers and ``ip`` use), ``EINVAL``, ..."""
    return "EOPNOTSUPP" if code == errno.EOPNOTSUPP else errno.errorcode.get(code or 0, str(code))


def _messages(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """``(type, flags, seq, whole message)`` for each netlink message in ``data``."""
    out, off = [], 0
    while off + NETLINK_HEADER.size <= len(data):
        length, msg_type, flags, seq, _pid = NETLINK_HEADER.unpack_from(data, off)
        if length < NETLINK_HEADER.size:
            break
        out.append((msg_type, flags, seq, data[off:off + length]))
        off += (length + 3) & ~3
    return out


class VfNetlink:
    """VF configuration and counters through the PF's rtnetlink (``ip link set PF vf N ...``)."""

    def __init__(self, transport: NetlinkTransport | None = None) -> None:
        self.transport = transport
        self.lock = threading.Lock()
        self.seq = 0

    @classmethod
    def open(cls, spec: str = "") -> VfNetlink:
        """``""``: the kernel; ``unix:PATH``: a stand-in for simulations."""
        if spec.startswith("unix:"):
            return cls(UnixNetlink(spec[5:]))
        if spec:
            raise SriovError(f"netlink {spec!r}: expected unix:PATH (a stand-in) or nothing (the kernel)")
        return cls()

    def _request(self, msg: ifinfmsg, msg_type: int) -> list[bytes]:
        with self.lock:
            if self.transport is None:
                self.transport = KernelNetlink()
            self.seq += 1
            msg["header"]["type"] = msg_type
            msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
            msg["header"]["sequence_number"] = self.seq
            try:
                msg.encode()
            except (ValueError, TypeError, struct.error) as exc:
                raise SriovError(f"cannot build the netlink message: {exc}") from None
            try:
                reply = self.transport.request(bytes(msg.data))
            except OSError as exc:
                raise SriovError(f"netlink request failed: {exc.strerror or exc}") from None
        out = []
        for reply_type, _flags, _seq, body in _messages(reply):
            if reply_type == NLMSG_ERROR:
                code = struct.unpack_from("=i", body, NETLINK_HEADER.size)[0]
                if code:
                    raise OSError(-code, os.strerror(-code))
            elif reply_type != NLMSG_DONE:
                out.append(body)
        return out

    def set_attr(self, pf_ifindex: int, attr: tuple[str, dict]) -> None:
        """One ``RTM_SETLINK`` on the PF carrying one ``IFLA_VF_*`` attribute; OSError as the kernel answers."""
        msg = _VfLinkMsg()
        msg["index"] = pf_ifindex
        msg["attrs"] = [("IFLA_VFINFO_LIST", {"attrs": [("IFLA_VF_INFO", {"attrs": [attr]})]})]
        self._request(msg, RTM_SETLINK)

    def configure(self, pf: PhysicalFunction, vf: int, cfg: VfConfig) -> dict[str, Any] | None:
        """Apply ``cfg`` to VF ``vf`` and return what it was before (None if the PF did not say); if the PF
        refuses a setting, the ones applied before it are put back."""
        cfg.check()
        before = self.vfs(pf.ifindex).get(vf)
        done: list[str] = []
        for name, attr in cfg.settings(vf, before):
            try:
                self.set_attr(pf.ifindex, attr)
            except OSError as exc:
                if before is not None and done:
                    self._restore(pf.ifindex, vf, before, done)
                why = {errno.EOPNOTSUPP: f"the {pf.driver or 'PF'} driver does not support it",
                       errno.EINVAL: "the PF driver refused the value",
                       errno.ENODEV: "the PF is gone"}.get(exc.errno, exc.strerror or str(exc))
                undone = f"; {', '.join(done)} put back as before" if done and before is not None else ""
                raise SriovError(f"{pf.netdev} VF {vf}: setting {name} failed: {why} "
                                 f"({_errno_name(exc.errno)}){undone}") from None
            done.append(name)
        return before

    def restore(self, pf: PhysicalFunction, vf: int, before: dict[str, Any], cfg: VfConfig) -> None:
        """Put back the settings of ``cfg`` as they were in ``before`` (best effort)."""
        self._restore(pf.ifindex, vf, before, [name for name, _ in cfg.settings(vf)])

    def _restore(self, pf_ifindex: int, vf: int, before: dict[str, Any], names: list[str]) -> None:
        old = VfConfig(mac=before["mac"], vlan=before["vlan"], qos=before["qos"], spoofchk=before["spoofchk"],
                       trust=before["trust"], link_state=before["link_state"],
                       min_tx_rate=before["min_tx_rate"], max_tx_rate=before["max_tx_rate"])
        for name, attr in old.settings(vf, {"max_tx_rate": 1} if "rate" in names else None):
            if name in names:
                try:
                    self.set_attr(pf_ifindex, attr)
                except OSError:
                    pass

    def vfs(self, pf_ifindex: int) -> dict[int, dict[str, Any]]:
        """Every VF's configuration and counters as the PF reports them (``ip link show PF``)."""
        msg = _VfLinkMsg()
        msg["index"] = pf_ifindex
        msg["attrs"] = [("IFLA_EXT_MASK", RTEXT_FILTER_VF)]
        out: dict[int, dict[str, Any]] = {}
        try:
            replies = self._request(msg, RTM_GETLINK)
        except OSError as exc:
            raise SriovError(f"reading the VFs of ifindex {pf_ifindex} failed: {exc.strerror}") from None
        for body in replies:
            link = _VfLinkMsg(body)
            link.decode()
            if link["header"]["type"] != RTM_NEWLINK:
                continue
            vflist = link.get_attr("IFLA_VFINFO_LIST")
            for info in vflist.get_attrs("IFLA_VF_INFO") if vflist else []:
                mac = info.get_attr("IFLA_VF_MAC")
                vlan = info.get_attr("IFLA_VF_VLAN") or {}
                rate = info.get_attr("IFLA_VF_RATE") or {}
                link_state = (info.get_attr("IFLA_VF_LINK_STATE") or {}).get("link_state", 0)
                stats = info.get_attr("IFLA_VF_STATS")
                counters = {name[len("IFLA_VF_STATS_"):].lower(): value for name, value in stats["attrs"]
                            if name != "IFLA_VF_STATS_PAD"} if stats else {}
                spoofchk = info.get_attr("IFLA_VF_SPOOFCHK")
                trust = info.get_attr("IFLA_VF_TRUST")
                out[mac["vf"]] = {
                    "mac": mac["mac"], "vlan": vlan.get("vlan", 0), "qos": vlan.get("qos", 0),
                    "spoofchk": _reported(spoofchk, "spoofchk"), "trust": _reported(trust, "trust"),
                    "link_state": {v: k for k, v in LINK_STATES.items()}.get(link_state, "auto"),
                    "min_tx_rate": rate.get("min_tx_rate", 0), "max_tx_rate": rate.get("max_tx_rate", 0),
                    "stats": counters,
                }
        return out

    def close(self) -> None:
        """Close the transport."""
        if self.transport is not None:
            self.transport.close()
            self.transport = None


# ------------------------------------------------------------------------------------------- the port

#: VF counters (``IFLA_VF_STATS``, the VF's own view) -> the switch's view, as for vhost-user and tap ports:
#: what the guest sends is what the switch receives.
PASSTHROUGH_STATS = {"rx_packets": "tx_packets", "rx_bytes": "tx_bytes", "tx_packets": "rx_packets",
                     "tx_bytes": "rx_bytes", "rx_dropped": "tx_dropped", "tx_dropped": "rx_dropped"}


def _flag(value: object, what: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise SriovError(f"options:{what} is true or false, not {value!r}")


class SriovVfPort(Port):
    """``Interface.type=sriov-vf``: VF ``vf`` of PF netdev ``pf``, configured through the PF.

    ``SriovVfPort(name, *, pf, vf, mac=None, tag=0, qos=0, vlan_proto="802.1q", spoofchk=None, trust=None,
    link_state=None, min_tx_rate=0, max_tx_rate=0, policing_kbps=0, sysfs=None, netlink=None)``. Rates are
    Mbit/s; ``policing_kbps`` (OVS's ``ingress_policing_rate``) limits a passed-through VF's transmit.
    A VF with a host netdev (``mode`` ``host``) is switched as a system port on that netdev, with spoof
    checking off and trust on by default (the bridge sends frames of many MACs through it); a VF bound to
    vfio-pci or to no driver (``passthrough``) moves no frames here: the NIC delivers to it.
    """

    type = "sriov-vf"

    def __init__(
        self,
        name: str,
        *,
        pf: str = "",
        vf: int | str = -1,
        mac: str | None = None,
        tag: int = 0,
        qos: int = 0,
        vlan_proto: str = "802.1q",
        spoofchk: bool | None = None,
        trust: bool | None = None,
        link_state: str | None = None,
        min_tx_rate: int = 0,
        max_tx_rate: int = 0,
        policing_kbps: int = 0,
        sysfs: Sysfs | None = None,
        netlink: VfNetlink | None = None,
    ) -> None:
        super().__init__(name)
        if not pf:
            raise SriovError("a sriov-vf interface needs options:pf (the PF's netdev) and options:vf (the VF index)")
        if not isinstance(vf, int) or vf < 0:
            raise SriovError(f"options:vf is the VF's index, a number from 0, not {vf!r}")
        if vlan_proto not in VLAN_PROTOS:
            raise SriovError(f"options:vlan-proto is 802.1q or 802.1ad, not {vlan_proto!r}")
        self.sysfs = sysfs or Sysfs()
        self.netlink = netlink or VfNetlink()
        self.pf = physical_function(pf, self.sysfs)
        self.vf = virtual_function(pf, vf, self.sysfs)
        host = self.vf.mode == "host"
        if policing_kbps and not max_tx_rate:
            if host:   # the VF's transmit is what the switch sends out of its netdev: not ingress
                log.warning("%s: ingress_policing_rate is not applied to a host-use VF (its transmit rate would "
                            "limit what the switch sends); use options:max-tx-rate for that", name)
            else:      # a guest's (or representor's) VF: its transmit is the switch's ingress; kbit/s -> Mbit/s
                max_tx_rate = max(1, (policing_kbps + 999) // 1000)
        self.config = VfConfig(
            mac=mac or None, vlan=None if self.vf.representor else tag, qos=qos, vlan_proto=VLAN_PROTOS[vlan_proto],
            spoofchk=not host if _flag(spoofchk, "spoofchk") is None else spoofchk,
            trust=host if _flag(trust, "trust") is None else trust,
            link_state=link_state, min_tx_rate=min_tx_rate, max_tx_rate=max_tx_rate)
        self.config.check()
        if host and not self.vf.netdev:   # iavf registers its netdev a moment after it binds: retried
            raise SriovError(f"{self.vf.describe()} is bound to {self.vf.driver} but has no netdev (yet); "
                             "a passed-through VF is bound to vfio-pci")
        device = self.vf.representor or (self.vf.netdev if host else "")
        self.system: SystemPort | None = SystemPort(device) if device else None
        if self.system is not None:
            self.counters = self.system.counters
        try:
            self.before = self.netlink.configure(self.pf, self.vf.index, self.config)
        except BaseException:
            self.close()
            raise
        self._hw: dict[str, Any] = {}

    def release(self) -> None:
        """Give the VF back its settings from before the port was opened (the port was deleted); closing
        alone keeps them, so a guest keeps its VLAN while the switch restarts."""
        if self.before is not None:
            try:
                self.netlink.restore(self.pf, self.vf.index, self.before, self.config)
            except SriovError:
                pass

    @property
    def mode(self) -> str:
        """``host`` (switched through the VF netdev), ``representor`` (switched through the VF's switchdev
        representor) or ``passthrough`` (a guest's VF, reached through the PF's port)."""
        return self.vf.mode

    @property
    def port_no(self) -> int:
        return self.system.port_no if self.system is not None else self._port_no

    @port_no.setter
    def port_no(self, value: int) -> None:
        if getattr(self, "system", None) is not None:
            self.system.port_no = value
        self._port_no = value

    def rx_burst(self, pool: PacketPool, burst: np.ndarray, start: int, max_n: int) -> int:
        return self.system.rx_burst(pool, burst, start, max_n) if self.system is not None else 0

    def tx_burst(self, pool: PacketPool, slots: np.ndarray, vlans: np.ndarray, start: int, count: int) -> int:
        if self.system is not None:
            return self.system.tx_burst(pool, slots, vlans, start, count)
        self.counters[TX_DROPPED] += count
        self.counters[TX_VF_PASSTHROUGH] += count
        return 0

    def wakeup_fds(self) -> list[int]:
        return self.system.wakeup_fds() if self.system is not None else []

    def close(self) -> None:
        if getattr(self, "system", None) is not None:
            self.system.close()

    @property
    def ifindex(self) -> int:
        return self.system.ifindex if self.system is not None else 0

    @property
    def mac(self) -> str:
        if self.system is not None:
            return self.system.mac
        return self.config.mac or str(self._hw.get("mac", ""))

    @property
    def link_up(self) -> bool:
        if self.system is not None:
            return self.system.link_up
        return self.config.link_state != "disable"

    def status(self) -> dict[str, str]:
        out = {"pf": self.pf.netdev, "vf": str(self.vf.index), "pci": self.vf.pci, "mode": self.mode,
               "driver_name": self.vf.driver or "none",
               "spoofchk": str(self.config.spoofchk).lower(), "trust": str(self.config.trust).lower()}
        if self.config.vlan is not None:
            out["vlan"] = str(self.config.vlan)
        if self.vf.netdev:
            out["netdev"] = self.vf.netdev
        if self.vf.representor:
            out["representor"] = self.vf.representor
        return out

    def hardware(self) -> dict[str, Any]:
        """The VF as the PF reports it now (config and ``IFLA_VF_STATS``); {} when it cannot be read."""
        try:
            self._hw = self.netlink.vfs(self.pf.ifindex).get(self.vf.index, {})
        except Exception:  # noqa: BLE001 - counters are best effort; a bad answer must not stop the switch
            self._hw = {}
        return self._hw

    def stats(self) -> dict[str, int]:
        """The port's counters plus the VF's hardware counters (``vf_*``); a passthrough VF's hardware
        counters, turned to the switch's view, are its ``rx_*``/``tx_*``."""
        out = super().stats()
        hw = self.hardware().get("stats", {})
        out.update({f"vf_{k}": int(v) for k, v in hw.items()})
        if self.system is None and hw:
            for ours, theirs in PASSTHROUGH_STATS.items():
                out[ours] = int(hw.get(theirs, 0)) + (int(self.counters[TX_DROPPED]) if ours == "tx_dropped" else 0)
        return out
