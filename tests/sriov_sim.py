"""A simulated SR-IOV PF for tests: these machines have no SR-IOV NIC and no VFIO.

* ``build_sysfs`` makes the sysfs entries the kernel has for a PF and its VFs;
  ``SimulatedSysfs`` answers writes as the kernel does (``sriov_numvfs``, ``unbind``, ``drivers_probe``).
* ``NetlinkStandIn`` answers ``RTM_SETLINK``/``RTM_GETLINK`` on the PF as the kernel does for a PF
  driver with VF support. It parses and builds messages with ``struct`` from the kernel's uapi layouts
  (``linux/if_link.h``), not with pyroute2, and refuses any attribute whose length is not the kernel
  struct's size; ``StandInServer`` serves it on a unix socket for a ``pyvswitch run`` process.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import struct
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from backends.sriov import Sysfs
from tests.switchutil import Switch

# linux/rtnetlink.h, linux/if_link.h, linux/netlink.h
RTM_NEWLINK, RTM_GETLINK, RTM_SETLINK = 16, 18, 19
NLMSG_ERROR, NLMSG_DONE = 2, 3
IFLA_NUM_VF, IFLA_VFINFO_LIST, IFLA_EXT_MASK = 21, 22, 29
IFLA_VF_INFO = 1
IFLA_VF_MAC, IFLA_VF_VLAN, IFLA_VF_TX_RATE, IFLA_VF_SPOOFCHK, IFLA_VF_LINK_STATE, IFLA_VF_RATE = 1, 2, 3, 4, 5, 6
IFLA_VF_STATS, IFLA_VF_TRUST, IFLA_VF_VLAN_LIST = 8, 9, 12
IFLA_VF_VLAN_INFO = 1
STATS_NAMES = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "broadcast", "multicast", None,
               "rx_dropped", "tx_dropped")     # IFLA_VF_STATS_* by number (6 is _PAD)
#: struct layouts: struct ifla_vf_mac {u32 vf; u8 mac[32]}, ifla_vf_vlan {u32 vf, vlan, qos},
#: ifla_vf_rate {u32 vf, min_tx_rate, max_tx_rate}, ifla_vf_spoofchk / _trust / _link_state {u32 vf, setting},
#: ifla_vf_vlan_info {u32 vf, vlan, qos; be16 vlan_proto} (sizeof 16: two bytes of tail padding)
LAYOUTS = {
    IFLA_VF_MAC: ("mac", struct.Struct("=I32s")),
    IFLA_VF_VLAN: ("vlan", struct.Struct("=III")),
    IFLA_VF_RATE: ("rate", struct.Struct("=III")),
    IFLA_VF_SPOOFCHK: ("spoofchk", struct.Struct("=II")),
    IFLA_VF_TRUST: ("trust", struct.Struct("=II")),
    IFLA_VF_LINK_STATE: ("link_state", struct.Struct("=II")),
}
VLAN_INFO = struct.Struct("=III2s2x")
HDR = struct.Struct("=IHHII")
IFINFO = struct.Struct("=BxHiII")


def kernel_header_enum(first: str) -> dict[str, int]:
    """The enum in ``/usr/include/linux/if_link.h`` that starts with ``first``, as {name: value}."""
    text = Path("/usr/include/linux/if_link.h").read_text()
    body = re.search(r"enum\s*{\s*(" + re.escape(first) + r".*?)}", text, re.S).group(1)
    out, value = {}, 0
    body = re.sub(r"^\s*#.*$", "", re.sub(r"/\*.*?\*/", "", body, flags=re.S), flags=re.M)
    for item in body.split(","):
        name, _, explicit = item.strip().partition("=")
        if name.strip():
            explicit = explicit.strip()
            value = (out[explicit] if explicit in out else int(explicit, 0)) if explicit else value
            out[name.strip()] = value
            value += 1
    return out


def build_sysfs(root: Path, pf: str, vfs: dict[int, tuple[str, str, str]], *, ifindex: int = 7, total: int = 8,
                pf_pci: str = "0000:01:00.0") -> None:
    """The sysfs entries the kernel has for PF netdev ``pf`` with VFs ``{index: (PCI address, driver, netdev)}``:
    ``class/net/PF/device`` -> the PF's PCI function (``sriov_totalvfs``, ``sriov_numvfs``, ``virtfnN``),
    ``bus/pci/devices/ADDR`` -> each VF, whose ``driver`` links to ``bus/pci/drivers/NAME`` ("" : none) and
    whose ``net/NETDEV`` names its netdev ("" : none); every VF has an IOMMU group."""
    pci_root = root / "devices/pci0000:00"
    pf_dev = pci_root / pf_pci
    pf_dev.mkdir(parents=True)
    (root / "class/net" / pf).mkdir(parents=True)
    (root / "class/net" / pf / "ifindex").write_text(f"{ifindex}\n")
    os.symlink(pf_dev, root / "class/net" / pf / "device")
    (root / "bus/pci/devices").mkdir(parents=True, exist_ok=True)
    (root / "bus/pci/drivers_probe").write_text("")
    (pf_dev / "sriov_totalvfs").write_text(f"{total}\n")
    (pf_dev / "sriov_numvfs").write_text(f"{len(vfs)}\n")
    for drv in ("vfio-pci", "iavf"):
        (root / "bus/pci/drivers" / drv).mkdir(parents=True, exist_ok=True)
    for index, (pci, driver, netdev) in vfs.items():
        add_vf(root, pf_dev, index, pci, driver, netdev)


def add_vf(root: Path, pf_dev: Path, index: int, pci: str, driver: str, netdev: str) -> None:
    """One VF's entries (see ``build_sysfs``)."""
    vf_dev = pf_dev.parent / pci
    vf_dev.mkdir()
    os.symlink(vf_dev, pf_dev / f"virtfn{index}")
    os.symlink(vf_dev, root / "bus/pci/devices" / pci)
    (vf_dev / "driver_override").write_text("(null)\n")
    group = root / "kernel/iommu_groups" / str(40 + index)
    group.mkdir(parents=True, exist_ok=True)
    os.symlink(group, vf_dev / "iommu_group")
    if driver:
        (root / "bus/pci/drivers" / driver).mkdir(parents=True, exist_ok=True)
        os.symlink(root / "bus/pci/drivers" / driver, vf_dev / "driver")
    if netdev:
        (vf_dev / "net" / netdev).mkdir(parents=True)


class SimulatedSysfs(Sysfs):
    """A ``build_sysfs`` tree whose writes have the kernel's effects; ``writes`` records them in order.

    ``sriov_numvfs``: a change between two non-zero counts is EBUSY; N creates VFs 0..N-1 on ``host_driver``
    (with netdevs ``<pf>v<i>``), 0 removes them. ``driver/unbind`` unbinds; ``drivers_probe`` binds the
    ``driver_override`` driver when loaded, else the host driver.
    """

    def __init__(self, root: Path, pf: str, host_driver: str = "iavf") -> None:
        super().__init__(str(root))
        self.tree = root
        self.pf = pf
        self.host_driver = host_driver
        self.writes: list[tuple[str, str]] = []
        self.refuse_probe: set[str] = set()   # drivers whose probe fails (the VF stays without a driver)

    def write(self, rel: str, value: str) -> None:
        self.writes.append((rel, value))
        path = self.tree / rel
        if rel.endswith("sriov_numvfs"):
            current = int(path.read_text())
            count = int(value)
            if current and count and current != count:
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
            pf_dev = path.resolve().parent
            for link in pf_dev.glob("virtfn*"):
                vf_dev = link.resolve()
                os.unlink(self.tree / "bus/pci/devices" / vf_dev.name)
                shutil.rmtree(vf_dev)
                link.unlink()
            for i in range(count):
                add_vf(self.tree, pf_dev, i, f"0000:01:10.{i}", self.host_driver, f"{self.pf}v{i}")
            path.write_text(f"{count}\n")
        elif rel.endswith("/driver/unbind"):
            dev = self.tree / rel.rsplit("/driver/unbind", 1)[0]
            os.unlink(dev / "driver")
            for net in (dev / "net").glob("*") if (dev / "net").exists() else []:
                net.rmdir()
        elif rel == "bus/pci/drivers_probe":
            dev = self.tree / "bus/pci/devices" / value
            override = (dev / "driver_override").read_text().strip()
            driver = override if override and override != "(null)" else self.host_driver
            if not (self.tree / "bus/pci/drivers" / driver).exists() or (dev / "driver").is_symlink() \
                    or driver in self.refuse_probe:
                return
            os.symlink(self.tree / "bus/pci/drivers" / driver, dev / "driver")
            if driver != "vfio-pci":
                index = next(int(p.name[6:]) for p in (self.tree / "class/net" / self.pf / "device").glob("virtfn*")
                             if p.resolve() == dev.resolve())
                (dev / "net" / f"{self.pf}v{index}").mkdir(parents=True)
        elif rel.endswith("driver_override"):
            path.write_text((value or "(null)") + "\n")
        else:
            path.write_text(value + "\n")


def _attrs(data: bytes) -> list[tuple[int, bytes]]:
    """``(type, payload)`` of each netlink attribute; payload length as ``nla_len`` says."""
    out, off = [], 0
    while off + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, off)
        if length < 4 or off + length > len(data):
            raise ValueError(f"attribute at {off} has length {length}")
        out.append((kind & 0x3FFF, data[off + 4:off + length]))
        off += (length + 3) & ~3
    return out


def _attr(kind: int, payload: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(payload), kind) + payload + bytes(-len(payload) % 4)


class NetlinkStandIn:
    """The kernel's rtnetlink for one PF (ifindex ``pf_ifindex``) with ``num_vfs`` VFs.

    ``log`` records ``(vf, setting, values)`` for each applied setting; ``refuse[setting] = errno`` makes
    the PF driver refuse one; ``stats[vf]`` are the counters GETLINK reports; ``bad`` collects messages
    the kernel would refuse for their layout (a test asserts it stays empty).
    """

    def __init__(self, pf_ifindex: int, num_vfs: int) -> None:
        self.pf_ifindex = pf_ifindex
        self.vfs = {i: {"mac": "00:00:00:00:00:00", "vlan": 0, "qos": 0, "proto": 0x8100, "spoofchk": 1,
                        "trust": 0, "link_state": 0, "min_tx_rate": 0, "max_tx_rate": 0} for i in range(num_vfs)}
        self.stats = {i: dict.fromkeys(n for n in STATS_NAMES if n) for i in range(num_vfs)}
        for i in range(num_vfs):
            self.stats[i] = dict.fromkeys(self.stats[i], 0)
        self.log: list[tuple[int, str, tuple]] = []
        self.refuse: dict[str, int] = {}
        self.unreported: set[str] = set()   # flags the PF driver does not report: the kernel sends -1
        self.bad: list[str] = []
        self.lock = threading.Lock()

    def request(self, data: bytes) -> bytes:
        """Answer one request as the kernel would: replies, then the ack (or the error)."""
        with self.lock:
            length, kind, _flags, seq, _pid = HDR.unpack_from(data)
            if length != len(data):
                self.bad.append(f"nlmsg_len {length} != {len(data)}")
                return self._ack(data, errno.EINVAL)
            _family, _type, index, _flags2, _change = IFINFO.unpack_from(data, HDR.size)
            if index != self.pf_ifindex:
                return self._ack(data, errno.ENODEV)
            attrs = _attrs(data[HDR.size + IFINFO.size:])
            if kind == RTM_GETLINK:
                mask = [struct.unpack("=I", p)[0] for t, p in attrs if t == IFLA_EXT_MASK]
                return self._link(seq, bool(mask and mask[0] & 1)) + self._ack(data, 0)
            if kind != RTM_SETLINK:
                return self._ack(data, errno.EOPNOTSUPP)
            return self._ack(data, self._setlink(attrs))

    def _setlink(self, attrs: list[tuple[int, bytes]]) -> int:
        for kind, payload in attrs:
            if kind != IFLA_VFINFO_LIST:
                continue
            for info_kind, info in _attrs(payload):
                if info_kind != IFLA_VF_INFO:
                    self.bad.append(f"IFLA_VFINFO_LIST holds type {info_kind}")
                    return errno.EINVAL
                for vf_kind, body in _attrs(info):
                    code = self._set_one(vf_kind, body)
                    if code:
                        return code
        return 0

    def _set_one(self, kind: int, body: bytes) -> int:
        if kind == IFLA_VF_VLAN_LIST:
            (inner_kind, inner), = _attrs(body)
            if inner_kind != IFLA_VF_VLAN_INFO or len(inner) != VLAN_INFO.size:
                self.bad.append(f"IFLA_VF_VLAN_INFO of {len(inner)} bytes (struct ifla_vf_vlan_info: 16)")
                return errno.EINVAL
            vf, vlan, qos, proto = VLAN_INFO.unpack(inner)
            name, values = "vlan", (vf, vlan, qos, int.from_bytes(proto, "big"))
        elif kind in LAYOUTS:
            name, layout = LAYOUTS[kind]
            if len(body) != layout.size:
                self.bad.append(f"{name}: {len(body)} bytes, the kernel's struct has {layout.size}")
                return errno.EINVAL
            values = layout.unpack(body)
            vf = values[0]
            if kind == IFLA_VF_MAC:
                values = (vf, ":".join(f"{b:02x}" for b in values[1][:6]))
            elif kind == IFLA_VF_VLAN:
                values = (*values, 0x8100)
        else:
            self.bad.append(f"unexpected IFLA_VF_* type {kind}")
            return errno.EINVAL
        if vf not in self.vfs:
            return errno.EINVAL
        if name in self.refuse:
            return self.refuse[name]
        state = self.vfs[vf]
        if name == "mac":
            if int(values[1][:2], 16) & 1:
                return errno.EINVAL
            state["mac"] = values[1]
        elif name == "vlan":
            if values[1] > 4095 or values[2] > 7:
                return errno.EINVAL
            if values[3] not in (0x8100, 0x88A8):
                return errno.EPROTONOSUPPORT
            state.update(vlan=values[1], qos=values[2], proto=values[3])
        elif name == "rate":
            if values[2] and values[1] > values[2]:
                return errno.EINVAL
            state.update(min_tx_rate=values[1], max_tx_rate=values[2])
        else:
            state[name] = values[1]
        self.log.append((vf, name, values[1:]))
        return 0

    def _link(self, seq: int, with_vfs: bool) -> bytes:
        attrs = _attr(3, b"pf0\0")   # IFLA_IFNAME
        if with_vfs:
            attrs += _attr(IFLA_NUM_VF, struct.pack("=I", len(self.vfs)))
            infos = b""
            for vf, st in sorted(self.vfs.items()):
                mac = bytes(int(x, 16) for x in st["mac"].split(":")) + bytes(26)
                body = (_attr(IFLA_VF_MAC, struct.pack("=I32s", vf, mac))
                        + _attr(IFLA_VF_VLAN, struct.pack("=III", vf, st["vlan"], st["qos"]))
                        + _attr(IFLA_VF_TX_RATE, struct.pack("=II", vf, st["max_tx_rate"]))
                        + _attr(IFLA_VF_RATE, struct.pack("=III", vf, st["min_tx_rate"], st["max_tx_rate"]))
                        + _attr(IFLA_VF_SPOOFCHK, struct.pack("=II", vf, self._flag(st, "spoofchk")))
                        + _attr(IFLA_VF_LINK_STATE, struct.pack("=II", vf, st["link_state"]))
                        + _attr(IFLA_VF_TRUST, struct.pack("=II", vf, self._flag(st, "trust"))))
                stats = b"".join(_attr(i, struct.pack("=Q", self.stats[vf][n]))
                                 for i, n in enumerate(STATS_NAMES) if n)
                body += _attr(IFLA_VF_STATS, stats)
                infos += _attr(IFLA_VF_INFO, body)
            attrs += _attr(IFLA_VFINFO_LIST, infos)
        payload = IFINFO.pack(0, 1, self.pf_ifindex, 0x1003, 0) + attrs
        return HDR.pack(HDR.size + len(payload), RTM_NEWLINK, 0, seq, 0) + payload

    def _flag(self, state: dict, name: str) -> int:
        return 0xFFFFFFFF if name in self.unreported else state[name]

    @staticmethod
    def _ack(request: bytes, code: int) -> bytes:
        seq = HDR.unpack_from(request)[3]
        body = struct.pack("=i", -code) + request[:HDR.size]
        return HDR.pack(HDR.size + len(body), NLMSG_ERROR, 0, seq, 0) + body


class StandInServer:
    """Serves a ``NetlinkStandIn`` on a ``SOCK_SEQPACKET`` unix socket (``pyvswitch run --netlink unix:PATH``)."""

    def __init__(self, standin: NetlinkStandIn, path: str) -> None:
        self.standin = standin
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.bind(path)
        self.sock.listen(4)
        self.stopped = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv(1 << 16)
                except OSError:
                    return
                if not data:
                    return
                conn.send(self.standin.request(data))

    def close(self) -> None:
        self.stopped = True
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


@contextlib.contextmanager
def switch_on_simulated_pf(root: Path, pf: str, num_vfs: int) -> Iterator[tuple[Switch, NetlinkStandIn, str]]:
    """A ``pyvswitch run`` whose sysfs is the tree at ``root`` and whose netlink is a stand-in for PF netdev ``pf``
    (a real netdev, for its ifindex); yields the switch, the stand-in and its ``unix:PATH``."""
    standin = NetlinkStandIn(socket.if_nametoindex(pf), num_vfs)
    with tempfile.TemporaryDirectory(prefix="pvrun-") as rundir:
        server = StandInServer(standin, os.path.join(rundir, "netlink.sock"))
        sw = Switch(rundir, extra_args=("--sysfs", str(root), "--netlink", f"unix:{server.path}"))
        sw.start()
        try:
            yield sw, standin, f"unix:{server.path}"
        finally:
            code, err = sw.stop()
            server.close()
            assert code == 0, err
