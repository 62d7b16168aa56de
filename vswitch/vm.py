"""``pyvswitch vm``: a minimal launcher for QEMU guests whose NICs are switch ports (no libvirt).

```
pyvswitch vm start web1 --nic vhost-user,bridge=br0 --nic tap,bridge=br0 --ip 10.0.0.11/24
        │
        ├─ checks: name free, QEMU, kernel/initrd, bridges exist, the switch daemon runs, port names free
        ├─ tap NICs: a persistent tap netdev <port> (up, no IPv6), later a system port of the bridge
        ├─ qemu-system-x86_64 (own session, detached)      <rundir>/vms/web1/
        │     RAM: memfd, share=on (hugetlb with --hugepages)   vm.json       config + state
        │     -chardev socket,server=on ◄── vhost-user ──┐      qemu.pid      QEMU's pidfile
        │     -netdev tap,ifname=<port>                  │      qmp.sock      QMP (status, powerdown)
        │     -serial ► console.sock + console.log       │      console.sock  vm console attaches here
        ├─ one ovs-vsctl transaction: dpdkvhostuserclient│      console.log   everything the guest printed
        │     ports (options:vhost-server-path) ─────────┘      qemu.log      QEMU's own messages
        │     and tap system ports; Interface.error checked     <port>.sock   vhost-user sockets
        └─ waits for QMP "running" and the guest's ready line (last console lines shown if it fails)
```

QEMU is the vhost-user socket server and pyvswitch the client (``dpdkvhostuserclient``): the
switch can restart under a running guest and reconnect. Every port the launcher creates carries
``external_ids:vm-id=<name>`` and ``external_ids:attached-mac=<mac>`` (as libvirt sets them for OVS),
so a port is never taken from another VM or from the administrator.

MACs are stable per VM name and NIC index (``52:54:00`` + a hash). ``vm stop`` presses the ACPI
power button (QMP ``system_powerdown``), then ``quit`` after ``--timeout``, then SIGKILL; it
removes the VM's ports and taps and keeps the directory (config and logs) for ``vm start NAME``
and post-mortems. QEMU runs with ``-no-reboot``: a reboot inside the guest (or a kernel panic
with ``panic=-1``) ends the VM instead of looping.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path

from backends.sriov import (
    VFIO_DRIVER,
    SriovError,
    Sysfs,
    VfConfig,
    VfNetlink,
    VirtualFunction,
    bind_driver,
    physical_function,
    virtual_function,
)
from vswitch.kvm import QEMU, check_host
from vswitch.vmimage import READY_MARKER, kernel_cmdline, parse_ready_line

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
IFNAME_MAX = 15
UNIX_PATH_MAX = 107
NIC_KINDS = ("vhost-user", "tap", "vf")
NIC_KEYS = {"vhost-user": ("bridge", "mac", "ip", "tag", "port"),
            "tap": ("bridge", "mac", "ip", "tag", "port"),
            "vf": ("pf", "vf", "mac", "ip", "bridge", "tag", "port")}
MAC_PREFIX = "52:54:00"        # QEMU's OUI, as libvirt and QEMU use for guests
BOOT_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000


class VmError(RuntimeError):
    """A VM could not be started, stopped or found; the message says why and what to do."""


# --- configuration -----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Nic:
    """One guest NIC: ``kind`` vhost-user / tap / vf, the bridge and port it becomes, its MAC and guest IP."""

    kind: str
    bridge: str = ""
    mac: str = ""
    ip: str = ""
    tag: int | None = None
    port: str = ""          # OVSDB Port/Interface name; for tap also the netdev's name
    pf: str = ""            # vf: the physical function's netdev
    vf: int | None = None   # vf: the VF index on the PF
    pci: str = ""           # vf: the VF's PCI address, resolved at start
    host_driver: str = ""   # vf: the driver the VF had before it was bound to vfio-pci (given back at stop)
    socket: str = ""        # vhost-user: QEMU's socket (the port's options:vhost-server-path)

    @property
    def iface_type(self) -> str:
        """The OVSDB ``Interface.type`` of this NIC's port (``""`` is a system port: the tap netdev)."""
        return {"vhost-user": "dpdkvhostuserclient", "tap": ""}.get(self.kind, "sriov-vf")


def parse_nic(spec: str) -> Nic:
    """``KIND,key=value,...`` (``vhost-user,bridge=br0``, ``tap,bridge=br0,tag=10``, ``vf,pf=enp1s0f0,vf=0``)."""
    kind, _, rest = spec.partition(",")
    if kind not in NIC_KINDS:
        raise VmError(f"--nic {spec!r}: the kind is one of {', '.join(NIC_KINDS)}, e.g. vhost-user,bridge=br0")
    nic = Nic(kind)
    seen: set[str] = set()
    for token in filter(None, rest.split(",")):
        key, sep, value = token.partition("=")
        if not sep or key not in NIC_KEYS[kind]:
            raise VmError(f"--nic {spec!r}: {token!r} is not one of {', '.join(k + '=' for k in NIC_KEYS[kind])}")
        if key in seen:
            raise VmError(f"--nic {spec!r}: {key}= is given twice")
        seen.add(key)
        if key in ("tag", "vf"):
            try:
                number = int(value)
            except ValueError:
                raise VmError(f"--nic {spec!r}: {key} takes a number") from None
            if key == "tag" and not 0 <= number <= 4095:
                raise VmError(f"--nic {spec!r}: tag is a VLAN, 0 to 4095")
            setattr(nic, key, number)
        elif key == "mac":
            if not re.fullmatch(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", value) or int(value[:2], 16) & 1:
                raise VmError(f"--nic {spec!r}: mac must be a unicast MAC like 52:54:00:12:34:56")
            nic.mac = value.lower()
        elif key == "port":
            if not re.fullmatch(rf"[^/\s,:]{{1,{IFNAME_MAX}}}", value):
                raise VmError(f"--nic {spec!r}: port names are 1 to {IFNAME_MAX} characters without '/', ':', "
                              "',' or spaces")
            nic.port = value
        elif key == "ip":
            nic.ip = check_ip(value, f"--nic {spec!r}: ip")
        else:
            setattr(nic, key, value)
    if kind == "vf":
        if not nic.pf or nic.vf is None:
            raise VmError(f"--nic {spec!r}: a VF NIC needs pf=NETDEV and vf=INDEX")
        if nic.vf < 0:
            raise VmError(f"--nic {spec!r}: vf= is the VF's index, 0 or more")
        if nic.port and not nic.bridge:
            raise VmError(f"--nic {spec!r}: port= needs bridge= (the bridge whose PF port reaches the VF); "
                          "without a bridge the launcher sets the VF's mac= and tag= through its PF")
    elif not nic.bridge:
        raise VmError(f"--nic {spec!r}: which bridge? add bridge=NAME")
    return nic


def check_ip(text: str, what: str = "--ip") -> str:
    """``ADDR/PREFIX`` (IPv4 or IPv6) as given; VmError for anything else."""
    try:
        ipaddress.ip_interface(text)
    except ValueError:
        raise VmError(f"{what} {text!r} is not an address with a prefix length, e.g. 10.0.0.11/24") from None
    if "/" not in text:
        raise VmError(f"{what} {text!r} needs a prefix length, e.g. {text}/24")
    return text


def parse_memory(text: str) -> int:
    """``256M``, ``1G``, ``512`` (MiB) as MiB."""
    m = re.fullmatch(r"\s*(\d+)\s*([MmGg]i?[Bb]?)?\s*", text)
    if not m:
        raise VmError(f"--memory {text!r}: expected a size like 256M or 2G")
    mib = int(m.group(1)) * (1024 if m.group(2) and m.group(2)[0] in "Gg" else 1)
    if mib < 32:
        raise VmError(f"--memory {text!r}: a guest needs at least 32 MiB")
    return mib


def stable_mac(vm: str, index: int) -> str:
    """The MAC of NIC ``index`` of VM ``vm``: the same on every start, distinct across names and NICs."""
    digest = hashlib.sha256(f"pyvswitch-vm:{vm}:{index}".encode()).digest()
    return MAC_PREFIX + "".join(f":{b:02x}" for b in digest[:3])


def default_port_name(vm: str, index: int) -> str:
    """``<vm>-<index>``, or ``vm<hash>-<index>`` when that exceeds the 15 characters of a netdev name."""
    name = f"{vm}-{index}"
    if len(name) <= IFNAME_MAX:
        return name
    return f"vm{hashlib.sha256(vm.encode()).hexdigest()[:8]}-{index}"


@dataclasses.dataclass
class VmConfig:
    """What ``vm start`` was asked for; saved in ``vm.json`` so ``vm start NAME`` can start it again."""

    name: str
    memory_mb: int = 256
    cpus: int = 1
    kernel: str = ""
    initrd: str = ""
    append: str = ""
    disks: list[dict] = dataclasses.field(default_factory=list)   # {"file": path, "format": raw|qcow2}
    nics: list[Nic] = dataclasses.field(default_factory=list)
    accel: str | None = None     # None: what ``vm check`` picks
    hugepages: bool = False
    qemu: str = ""               # "" : qemu-system-x86_64 on PATH

    def to_json(self) -> dict:
        """The config as JSON-ready data."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> VmConfig:
        """The config saved by ``to_json``."""
        fields = {f.name for f in dataclasses.fields(cls)}
        cfg = cls(**{k: v for k, v in data.items() if k in fields and k != "nics"})
        nic_fields = {f.name for f in dataclasses.fields(Nic)}
        cfg.nics = [Nic(**{k: v for k, v in n.items() if k in nic_fields}) for n in data.get("nics", [])]
        return cfg


def resolve_nics(cfg: VmConfig, vmdir: Path, interfaces: dict[str, dict], sysfs: str = "/sys") -> None:
    """Fill in each NIC's MAC, port name, socket and PCI address; VmError if a port or netdev of that name
    belongs to someone else (``interfaces``: OVSDB's, as ``VmManager._interfaces`` returns them)."""
    seen: set[str] = set()
    seen_vfs: set[tuple[str, int | None]] = set()
    for i, nic in enumerate(cfg.nics):
        nic.mac = nic.mac or stable_mac(cfg.name, i)
        if nic.kind == "vf":
            if (nic.pf, nic.vf) in seen_vfs:
                raise VmError(f"two NICs of VM {cfg.name} use VF {nic.vf} of {nic.pf}")
            seen_vfs.add((nic.pf, nic.vf))
            vf = vf_for_passthrough(nic.pf, nic.vf if nic.vf is not None else -1, sysfs, interfaces)
            nic.pci = vf.pci
            if not nic.bridge:
                continue
        nic.port = nic.port or default_port_name(cfg.name, i)
        if nic.port in seen:
            raise VmError(f"two NICs of VM {cfg.name} use port name {nic.port}")
        seen.add(nic.port)
        owner = interfaces.get(nic.port, {}).get("external_ids", {}).get("vm-id")
        if nic.port in interfaces and owner != cfg.name:
            whose = f"VM {owner}'s" if owner else "not a port of this VM"
            raise VmError(f"port {nic.port} already exists in the switch ({whose}); "
                          "choose another with --nic ...,port=NAME")
        if nic.kind == "tap" and nic.port not in interfaces and os.path.exists(f"/sys/class/net/{nic.port}"):
            raise VmError(f"a network device named {nic.port} already exists; choose another port=NAME")
        if nic.kind == "vhost-user":
            nic.socket = str(vmdir / f"{nic.port}.sock")
            if len(nic.socket) > UNIX_PATH_MAX:
                raise VmError(f"vhost-user socket path {nic.socket} is longer than {UNIX_PATH_MAX} bytes: "
                              "use a shorter --rundir or VM name")


def vf_for_passthrough(pf: str, index: int, sysfs: str = "/sys",
                       interfaces: dict[str, dict] | None = None) -> VirtualFunction:
    """VF ``index`` of PF netdev ``pf``, checked to be free for a guest: not a switch port, its netdev (if
    it has one) down, and not already on vfio-pci (another guest's); VmError says what holds it."""
    fs = Sysfs(sysfs)
    try:
        vf = virtual_function(pf, index, fs)
    except SriovError as e:
        raise VmError(f"--nic vf: {e}") from None
    owner = {i["options"].get("pf"): name for name, i in (interfaces or {}).items()
             if i.get("type") == "sriov-vf" and i["options"].get("vf") == str(index)}.get(pf)
    if owner:
        raise VmError(f"--nic vf: {vf.describe()} is in use: it is switch port {owner}")
    if vf.netdev and vf.netdev in (interfaces or {}):
        raise VmError(f"--nic vf: {vf.describe()} is in use: its netdev {vf.netdev} is a switch port")
    if vf.netdev and int(fs.read(f"class/net/{vf.netdev}/flags") or "0", 16) & 1:
        raise VmError(f"--nic vf: {vf.describe()} is in use by the host: its netdev {vf.netdev} is up "
                      f"(ip link set {vf.netdev} down, if nothing needs it)")
    if vf.driver == VFIO_DRIVER:
        raise VmError(f"--nic vf: {vf.describe()} is already bound to vfio-pci: another guest (or another "
                      "tool) holds it")
    return vf


def qemu_command(cfg: VmConfig, vmdir: Path, accel: str, qemu: str) -> list[str]:
    """The QEMU command line for ``cfg`` with its state files in ``vmdir`` (NICs must be resolved)."""
    mem = f"memory-backend-memfd,id=mem0,size={cfg.memory_mb}M,share=on"
    if cfg.hugepages:
        mem += ",hugetlb=on"
    cmd = [qemu, "-name", f"guest={cfg.name}", "-accel", accel, "-m", f"{cfg.memory_mb}M",
           "-smp", str(cfg.cpus), "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
           "-object", mem, "-numa", "node,memdev=mem0",
           "-pidfile", str(vmdir / "qemu.pid"),
           "-qmp", f"unix:{_q(str(vmdir / 'qmp.sock'))},server=on,wait=off",
           "-chardev", f"socket,id=console,path={_q(str(vmdir / 'console.sock'))},server=on,wait=off,"
                       f"logfile={_q(str(vmdir / 'console.log'))},logappend=on",
           "-serial", "chardev:console"]
    if accel == "kvm":
        cmd += ["-cpu", "host"]
    for i, nic in enumerate(cfg.nics):
        if nic.kind == "vhost-user":
            cmd += ["-chardev", f"socket,id=nic{i},path={_q(nic.socket)},server=on",
                    "-netdev", f"vhost-user,id=net{i},chardev=nic{i}"]
            device = f"virtio-net-pci,netdev=net{i},mac={nic.mac}"
            if accel == "tcg":
                # QEMU 7.2 under TCG segfaults as soon as the guest enables MSI-X on a vhost-user
                # virtio-net device (seen on these machines); with vectors=0 the device uses INTx.
                device += ",vectors=0"
            cmd += ["-device", device]
        elif nic.kind == "tap":
            cmd += ["-netdev", f"tap,id=net{i},ifname={nic.port},script=no,downscript=no",
                    "-device", f"virtio-net-pci,netdev=net{i},mac={nic.mac}"]
        else:
            cmd += ["-device", f"vfio-pci,host={nic.pci},id=vf{i}"]
    for i, disk in enumerate(cfg.disks):
        cmd += ["-drive", f"file={_q(disk['file'])},if=virtio,format={disk['format']},index={i}"]
    if cfg.kernel:
        # the test image's /init puts ip= on eth0 and ipN= on ethN (NICs appear in command-line order)
        first = cfg.nics[0].ip if cfg.nics and cfg.nics[0].ip else None
        extra = [f"ip{i}={nic.ip}" for i, nic in enumerate(cfg.nics) if i and nic.ip]
        cmd += ["-kernel", cfg.kernel, "-append", kernel_cmdline(first, " ".join([*extra, cfg.append]).strip())]
        if cfg.initrd:
            cmd += ["-initrd", cfg.initrd]
    return cmd


def parse_disk(spec: str) -> dict:
    """``FILE[,format=raw|qcow2]``; without a format the file's header decides, once: the format is saved
    with the VM's config, so a guest that writes a qcow2 header onto its raw disk cannot change it later."""
    path, _, rest = spec.partition(",format=")
    path = os.path.abspath(path)
    if rest and rest not in ("raw", "qcow2"):
        raise VmError(f"--disk {spec!r}: format is raw or qcow2")
    if not os.path.isfile(path):
        raise VmError(f"--disk {path}: no such file")
    if not rest:
        with open(path, "rb") as f:
            rest = "qcow2" if f.read(4) == b"QFI\xfb" else "raw"
    return {"file": path, "format": rest}


def _q(value: str) -> str:
    """``value`` inside a QEMU option string: a comma is written twice."""
    return value.replace(",", ",,")


# --- QMP -----------------------------------------------------------------------------------------------------


class Qmp:
    """A minimal QMP client on QEMU's unix socket (one command at a time; events are skipped)."""

    def __init__(self, path: str | os.PathLike, timeout: float = 10) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.file = self.sock.makefile("rw")
        try:
            self.sock.connect(str(path))
            greeting = json.loads(self.file.readline() or "{}")
            if "QMP" not in greeting:
                raise OSError(f"no QMP greeting on {path}: {greeting}")
            self.execute("qmp_capabilities")
        except BaseException:
            self.close()
            raise

    def execute(self, command: str, **arguments: object) -> dict:
        """Run ``command``; returns its ``return`` value, raises OSError with QEMU's error."""
        msg: dict = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.file.write(json.dumps(msg) + "\n")
        self.file.flush()
        while True:
            line = self.file.readline()
            if not line:
                if command == "quit":
                    return {}
                raise OSError(f"QMP connection closed during {command}")
            reply = json.loads(line)
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise OSError(f"QMP {command}: {reply['error'].get('desc', reply['error'])}")

    def close(self) -> None:
        """Close the connection."""
        with contextlib.suppress(OSError):
            self.file.close()
        self.sock.close()

    def __enter__(self) -> Qmp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the manager ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class VmStatus:
    """A VM as ``vm list`` / ``vm status`` show it."""

    name: str
    state: str               # running, paused, starting, stopped, failed, exited (QEMU died on its own)
    pid: int | None
    config: VmConfig
    vmdir: Path
    accel: str = ""
    accel_reason: str = ""
    started_at: float | None = None
    detail: str = ""         # why it stopped or failed
    guest: dict = dataclasses.field(default_factory=dict)   # the ready line: {ifname: [mac, [addrs]]}
    ports: dict = dataclasses.field(default_factory=dict)   # port -> {ofport, link_state, error} from OVSDB
    switch_error: str = ""   # why ``ports`` could not be read

    def to_json(self) -> dict:
        """The status as JSON-ready data (``vm status --json``)."""
        out = dataclasses.asdict(self)
        out["vmdir"] = str(self.vmdir)
        return out


class VmManager:
    """Starts, stops and finds the VMs whose state lives under ``<rundir>/vms``."""

    def __init__(self, rundir: str, db: str | None = None, sysfs: str | Sysfs = "/sys",
                 log: Callable[[str], None] | None = None, warn: Callable[[str], None] | None = None,
                 netlink: str = "") -> None:
        self.rundir = os.path.abspath(rundir)
        self.netlink = netlink   # "" : the kernel; unix:PATH : a netlink stand-in (simulations)
        self.db = db or f"unix:{os.path.join(self.rundir, 'db.sock')}"
        self.fs = sysfs if isinstance(sysfs, Sysfs) else Sysfs(sysfs)   # SR-IOV: PFs, VFs, driver binding
        self.sysfs = self.fs.root
        self.log = log or (lambda _msg: None)
        self.warn = warn or (lambda _msg: None)
        self.vms_dir = Path(self.rundir, "vms")

    # -- ovs-vsctl --

    def vsctl(self, *args: str, timeout: float = 30) -> str:
        """Run ``ovs-vsctl`` against the switch's database; VmError with its message on failure."""
        exe = shutil.which("ovs-vsctl")
        if not exe:
            raise VmError("ovs-vsctl not found: apt-get install openvswitch-switch")
        try:
            proc = subprocess.run([exe, f"--db={self.db}", f"--timeout={int(timeout)}", *args],
                                  capture_output=True, text=True, timeout=timeout + 10)
        except subprocess.TimeoutExpired:
            raise VmError(f"ovs-vsctl {' '.join(args)}: no answer within {timeout:.0f} s") from None
        if proc.returncode != 0:
            raise VmError(f"ovs-vsctl {' '.join(args)}: {proc.stderr.strip() or f'exit {proc.returncode}'}")
        return proc.stdout

    def _interfaces(self, timeout: float = 30) -> dict[str, dict]:
        """Every OVSDB Interface: name -> {type, external_ids, options, ofport, link_state, error}."""
        out = self.vsctl("--format=json", "--columns=name,type,external_ids,options,ofport,link_state,error",
                         "list", "Interface", timeout=timeout)
        try:
            table = json.loads(out)
            result = {}
            for row in table["data"]:
                rec = dict(zip(table["headings"], (_ovsdb_value(v) for v in row), strict=True))
                result[rec.pop("name")] = rec
        except (ValueError, KeyError, TypeError) as e:
            raise VmError(f"cannot read ovs-vsctl's list of interfaces: {e}") from None
        return result

    def switch_pid(self) -> int | None:
        """The pid of the running switch daemon (``<rundir>/ovs-vswitchd.pid``), or None."""
        return _live_pid(Path(self.rundir, "ovs-vswitchd.pid"))

    # -- state files --

    def vmdir(self, name: str) -> Path:
        """``<rundir>/vms/<name>``; VmError for a name that is not a VM name."""
        if not NAME_RE.fullmatch(name):
            raise VmError(f"VM name {name!r}: 1 to 32 letters, digits, '_', '.', '-', starting with a letter "
                          "or digit")
        return self.vms_dir / name

    def _read_state(self, name: str) -> dict | None:
        try:
            state = json.loads((self.vmdir(name) / "vm.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(state, dict) or not isinstance(state.get("config", {}), dict):
            return None
        return state

    def _write_state(self, name: str, state: dict) -> None:
        path = self.vmdir(name) / "vm.json"
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, indent=1) + "\n")
        os.replace(tmp, path)

    def _update_state(self, name: str, **changes: object) -> None:
        state = self._read_state(name) or {}
        state.update(changes)
        self._write_state(name, state)

    def qemu_pid(self, name: str) -> int | None:
        """The pid of VM ``name``'s QEMU while it runs (checked against its command line), else None."""
        vmdir = self.vmdir(name)
        pid = _live_pid(vmdir / "qemu.pid")
        if pid is None:
            state = self._read_state(name) or {}
            pid = state.get("pid") if isinstance(state.get("pid"), int) else None
            if pid is None or not _pid_alive(pid):
                return None
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        pidfile = str(vmdir / "qemu.pid").encode()
        return pid if any(a == b"-pidfile" and b == pidfile for a, b in zip(args, args[1:], strict=False)) else None

    def _existing_state(self, name: str) -> dict:
        """VM ``name``'s ``vm.json``; VmError when there is no such VM."""
        state = self._read_state(name)
        if state is None:
            raise VmError(f"no VM named {name} in {self.vms_dir} (pyvswitch vm list)")
        return state

    def saved_config(self, name: str) -> VmConfig | None:
        """The config VM ``name`` was last started with, if any."""
        state = self._read_state(name)
        return _config(state, name) if state and "config" in state else None

    # -- start --

    def start(self, cfg: VmConfig, wait_ready: bool = True, ready_text: str = READY_MARKER,
              boot_timeout: float = BOOT_TIMEOUT) -> VmStatus:
        """Start ``cfg``: create its ports and taps, start QEMU, wait until it runs (and its ready line)."""
        vmdir = self.vmdir(cfg.name)
        qemu = cfg.qemu or shutil.which(QEMU) or ""
        if not qemu or not os.access(qemu, os.X_OK):
            raise VmError(f"QEMU not found ({cfg.qemu or QEMU}): apt-get install qemu-system-x86")
        host = check_host(cfg.accel)
        self._check_config(cfg, host.hugepages_free, host.hugepage_kb)
        for sock in ("qmp.sock", "console.sock"):
            if len(str(vmdir / sock)) > UNIX_PATH_MAX:
                raise VmError(f"socket path {vmdir / sock} is longer than {UNIX_PATH_MAX} bytes: "
                              "use a shorter --rundir or VM name")
        new_dir = not vmdir.exists()
        try:
            vmdir.mkdir(parents=True, exist_ok=True)
            with self._locked(cfg.name):
                pid = self.qemu_pid(cfg.name)
                if pid:
                    raise VmError(f"VM {cfg.name} is already running (QEMU pid {pid}); "
                                  f"stop it first: pyvswitch vm stop {cfg.name}")
                self._cleanup(cfg.name, (self._read_state(cfg.name) or {}).get("config"))
                vf_nics = any(n.kind == "vf" for n in cfg.nics) and self.switch_pid() is not None
                interfaces = self._interfaces() if any(n.bridge for n in cfg.nics) or vf_nics else {}
                resolve_nics(cfg, vmdir, interfaces, self.sysfs)
                self._check_macs(cfg)
                new_dir = False   # from here on the directory keeps the state and logs of this attempt
                self._launch(cfg, vmdir, host.accel, host.reason, qemu, wait_ready, ready_text, boot_timeout)
        except OSError as e:
            raise VmError(f"VM {cfg.name}: {e}") from None
        finally:
            if new_dir:
                shutil.rmtree(vmdir, ignore_errors=True)
        return self.status(cfg.name)

    @contextlib.contextmanager
    def _locked(self, name: str, lockfile: str = ".lock", busy: str = "") -> Iterator[None]:
        """Hold one of VM ``name``'s locks: ``.lock`` for start, stop and delete, ``.console.lock`` for the
        console. A second holder fails at once with ``busy``."""
        with open(self.vmdir(name) / lockfile, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise VmError(busy or f"VM {name} is being started, stopped or deleted by another command") from None
            yield

    def _launch(self, cfg: VmConfig, vmdir: Path, accel: str, accel_reason: str, qemu: str, wait_ready: bool,
                ready_text: str, boot_timeout: float) -> None:
        """Taps, QEMU, ports, then wait; on any failure everything but the logs is removed again."""
        cmd = qemu_command(cfg, vmdir, accel, qemu)
        self._write_state(cfg.name, {"config": cfg.to_json(), "state": "starting", "accel": accel,
                                     "accel_reason": accel_reason, "command": cmd, "pid": None,
                                     "started_at": time.time()})
        with contextlib.suppress(FileNotFoundError):   # the previous run's console, kept for post-mortems
            os.replace(vmdir / "console.log", vmdir / "console.log.1")
        proc = None
        try:
            for nic in cfg.nics:
                if nic.kind == "tap":
                    _create_tap(nic.port)
            self._take_vfs(cfg)
            self._add_ports(cfg, vfs=True)   # the VF's MAC and VLAN are set before its guest driver looks
            with open(vmdir / "qemu.log", "w") as qlog:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qlog, stderr=subprocess.STDOUT,
                                        start_new_session=True, close_fds=True)
            self._update_state(cfg.name, pid=proc.pid)
            self.log(f"QEMU started (pid {proc.pid}, {accel})")
            self._add_ports(cfg, vfs=False)
            self._wait_running(cfg.name, proc, min(60.0, boot_timeout))
            if wait_ready:
                ready = self._wait_ready(cfg.name, proc, ready_text, boot_timeout)
                self._update_state(cfg.name, ready_line=ready)
        except BaseException as e:
            detail = (str(e) if isinstance(e, VmError) else "interrupted" if isinstance(e, KeyboardInterrupt)
                      else f"{type(e).__name__}: {e}")
            if proc is not None and proc.poll() is None:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
            self._cleanup(cfg.name, cfg.to_json())
            self._update_state(cfg.name, state="failed", detail=detail, pid=None, stopped_at=time.time())
            raise
        self._update_state(cfg.name, state="running")

    def _check_config(self, cfg: VmConfig, hugepages_free: int, hugepage_kb: int) -> None:
        if cfg.cpus < 1:
            raise VmError("--cpus must be at least 1")
        host_cpus = os.cpu_count() or 1
        if cfg.cpus > host_cpus:
            self.warn(f"{cfg.cpus} virtual CPUs on a host with {host_cpus}: the guest will be slow "
                      "and slow down the others")
        try:
            total_mb = int(re.search(r"^MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M)[1]) // 1024
        except (OSError, TypeError):
            total_mb = 0
        if total_mb and cfg.memory_mb > total_mb:
            raise VmError(f"--memory {cfg.memory_mb}M is more than the host's {total_mb} MiB")
        if not cfg.nics:
            self.warn(f"VM {cfg.name} has no --nic: it starts without a network")
        if not cfg.kernel and not cfg.disks:
            raise VmError("nothing to boot: give --kernel (and --initrd) or --disk")
        disks = (("--disk", d["file"]) for d in cfg.disks)
        for what, path in (("--kernel", cfg.kernel), ("--initrd", cfg.initrd), *disks):
            if path and not os.path.isfile(path):
                raise VmError(f"{what} {path}: no such file")
        if cfg.initrd and not cfg.kernel:
            raise VmError("--initrd needs --kernel")
        if cfg.hugepages:
            need = -(-cfg.memory_mb * 1024 // max(hugepage_kb, 1))
            if not hugepage_kb or hugepages_free < need:
                raise VmError(f"--hugepages: {cfg.memory_mb} MiB needs {need} free hugepages of {hugepage_kb} kB, "
                              f"{hugepages_free} are free (raise /proc/sys/vm/nr_hugepages)")
        bridges = sorted({nic.bridge for nic in cfg.nics if nic.bridge})
        if not bridges:
            return
        if self.switch_pid() is None:
            raise VmError(f"no switch daemon runs in {self.rundir} (no live ovs-vswitchd.pid): "
                          f"start it first: pyvswitch run --rundir {self.rundir} --detach")
        existing = self.vsctl("list-br").split()
        for br in bridges:
            if br not in existing:
                raise VmError(f"bridge {br} does not exist (create it: ovs-vsctl add-br {br}); "
                              f"bridges: {', '.join(existing) or 'none'}")

    def _check_macs(self, cfg: VmConfig) -> None:
        """VmError if a NIC's MAC is already a NIC of another running VM."""
        mine = {nic.mac: i for i, nic in enumerate(cfg.nics)}
        if len(mine) != len(cfg.nics):
            raise VmError(f"VM {cfg.name}: two NICs have the same MAC")
        for other in self.names():
            if other == cfg.name or self.qemu_pid(other) is None:
                continue
            for j, nic in enumerate((self.saved_config(other) or VmConfig(other)).nics):
                if nic.mac in mine:
                    raise VmError(f"NIC {mine[nic.mac]}: MAC {nic.mac} is already NIC {j} of running VM {other}")

    def _take_vfs(self, cfg: VmConfig) -> None:
        """Bind each VF NIC to vfio-pci (its host driver is saved in the state, to give it back); a VF
        without a bridge gets its MAC and VLAN from its PF here (with a bridge, the switch sets them)."""
        fs = self.fs
        for nic in cfg.nics:
            if nic.kind != "vf":
                continue
            try:
                vf = virtual_function(nic.pf, nic.vf if nic.vf is not None else -1, fs)
                nic.host_driver = vf.driver
                self._update_state(cfg.name, config=cfg.to_json())
                bind_driver(vf, VFIO_DRIVER, fs)
                self.log(f"{vf.describe()} bound to vfio-pci (was {vf.driver or 'no driver'})")
                if not nic.bridge:
                    netlink = VfNetlink.open(self.netlink)
                    try:
                        netlink.configure(physical_function(nic.pf, fs), vf.index,
                                          VfConfig(mac=nic.mac, vlan=nic.tag or 0, spoofchk=True, trust=False))
                    finally:
                        netlink.close()
            except SriovError as e:
                raise VmError(f"--nic vf: {e}") from None

    def _give_back_vfs(self, config: dict | None) -> None:
        """Return each VF of a config that is on vfio-pci to the driver it had before (``host_driver``)."""
        fs = self.fs
        name = (config or {}).get("name")
        held = {(n.pf, n.vf) for other in self.names() if other != name and self.qemu_pid(other)
                for n in (self.saved_config(other) or VmConfig(other)).nics if n.kind == "vf"}
        for n in (config or {}).get("nics", []):
            if not isinstance(n, dict) or n.get("kind") != "vf" or n.get("vf") is None:
                continue
            if (n.get("pf"), n.get("vf")) in held:   # another running VM has it now: not ours to give back
                continue
            try:
                vf = virtual_function(str(n.get("pf")), int(n["vf"]), fs)
                host = n.get("host_driver") or ""
                if vf.driver == VFIO_DRIVER and host != VFIO_DRIVER:
                    now = bind_driver(vf, "", fs)     # driver_override cleared: the kernel's own match
                    if host and now.driver != host:
                        bind_driver(now, host, fs)
                    self.log(f"{vf.describe()} given back to {host or 'its host driver'}")
            except (SriovError, ValueError) as e:
                self.warn(f"VF {n.get('vf')} of {n.get('pf')} stays on vfio-pci: {e}")

    def _add_ports(self, cfg: VmConfig, vfs: bool) -> None:
        """One ovs-vsctl transaction adding the switch ports of ``cfg``'s VF NICs (``vfs``) or of the others;
        Interface.error is checked after."""
        args: list[str] = []
        for nic in cfg.nics:
            if not nic.bridge or (nic.kind == "vf") != vfs:
                continue
            args += ["--", "add-port", nic.bridge, nic.port]
            if nic.tag is not None:
                args.append(f"tag={nic.tag}")
            args += ["--", "set", "Interface", nic.port, f"external_ids:vm-id={cfg.name}",
                     f"external_ids:attached-mac={nic.mac}"]
            if nic.iface_type:
                args.append(f"type={nic.iface_type}")
            if nic.kind == "vhost-user":
                args.append(f"options:vhost-server-path={nic.socket}")
            if nic.kind == "vf":
                args += [f"options:pf={nic.pf}", f"options:vf={nic.vf}", f'mac="{nic.mac}"']
        if not args:
            return
        self.vsctl(*args)
        interfaces = self._interfaces()
        for nic in cfg.nics:
            error = interfaces.get(nic.port, {}).get("error") if nic.bridge and (nic.kind == "vf") == vfs else None
            if error:
                raise VmError(f"port {nic.port} on {nic.bridge}: {error}")

    def _wait_running(self, name: str, proc: subprocess.Popen, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        qmp_path = self.vmdir(name) / "qmp.sock"
        last = ""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise VmError(self._failure(name, f"QEMU exited with status {proc.returncode}"))
            try:
                with Qmp(qmp_path, timeout=max(1.0, deadline - time.monotonic())) as qmp:
                    status = qmp.execute("query-status")["status"]
                if status == "running":
                    return
                last = status
            except (OSError, ValueError) as e:
                last = str(e)
            time.sleep(0.1)
        raise VmError(self._failure(name, f"QEMU did not reach 'running' within {timeout:.0f} s ({last}); "
                                          "is the switch connecting to the vhost-user sockets?"))

    def _wait_ready(self, name: str, proc: subprocess.Popen, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        log = self.vmdir(name) / "console.log"
        while time.monotonic() < deadline:
            line = _find_line(log, text)
            if line is not None:
                return line
            if proc.poll() is not None:
                raise VmError(self._failure(name, f"the guest failed to boot: QEMU exited with status "
                                                  f"{proc.returncode}"))
            time.sleep(0.05)
        raise VmError(self._failure(name, f"the guest failed to boot: no console line containing {text!r} "
                                          f"within {timeout:.0f} s (other guests: --ready TEXT or --no-wait)"))

    def _failure(self, name: str, what: str, lines: int = 15) -> str:
        """``what`` plus the last console lines and QEMU's own messages."""
        vmdir = self.vmdir(name)
        msg = f"VM {name}: {what}"
        reason = (self._read_state(name) or {}).get("accel_reason", "")
        if "not usable" in reason:
            msg += f"\naccelerator: {reason}"
        console = _tail(vmdir / "console.log", lines, keep="Kernel panic")
        msg += "\nlast console lines:\n" + (console or "  (nothing on the console)")
        qlog = _tail(vmdir / "qemu.log", 5, skip=": info: ")
        if qlog:
            msg += "\nQEMU said:\n" + qlog
        return msg

    # -- stop --

    def stop(self, name: str, timeout: float = STOP_TIMEOUT) -> str:
        """Power VM ``name`` off (ACPI, then QMP quit, then SIGKILL); remove its ports. Returns how it ended."""
        state = self._existing_state(name)
        with self._locked(name):
            pid = self.qemu_pid(name)
            if pid is None:
                how = "was not running"
            else:
                how = self._power_off(name, pid, timeout)
            left = self._cleanup(name, state.get("config"))
            if left:
                how += (f"; the switch's database is not reachable, so port(s) {', '.join(left)} stay in it "
                        "until this VM starts again (or ovs-vsctl del-port)")
            if pid is not None or state.get("state") in ("running", "starting"):
                self._update_state(name, state="stopped", detail=how, pid=None, stopped_at=time.time())
        return how

    def _power_off(self, name: str, pid: int, timeout: float) -> str:
        qmp_path = self.vmdir(name) / "qmp.sock"
        start = time.monotonic()
        try:
            with Qmp(qmp_path) as qmp:
                qmp.execute("system_powerdown")
            if _wait_exit(pid, timeout):
                return f"powered off (ACPI power button) in {time.monotonic() - start:.1f} s"
            with Qmp(qmp_path) as qmp:
                qmp.execute("quit")
            if _wait_exit(pid, 10):
                return f"did not power off within {timeout:g} s after the ACPI power button: QEMU was told to quit"
        except (OSError, ValueError) as e:
            self.log(f"QMP: {e}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_exit(pid, 10)
        return "killed (QMP did not answer or QEMU did not quit)"

    def _cleanup(self, name: str, config: dict | None) -> list[str]:
        """Remove everything a run of VM ``name`` created outside its logs: ports, taps, sockets, pidfile.

        Returns the ports left in OVSDB because the database could not be reached.
        """
        vmdir = self.vmdir(name)
        nics = [n for n in (config or {}).get("nics", []) if isinstance(n, dict) and n.get("port")]
        taps = [n["port"] for n in nics if n.get("kind") == "tap"]
        left = [n["port"] for n in nics if n.get("bridge")]
        switch_up = self.switch_pid() is not None
        with contextlib.suppress(VmError):
            if switch_up or os.path.exists(self.db.removeprefix("unix:")):
                interfaces = self._interfaces(timeout=10)
                # only ports marked as this VM's: a name in an old config may belong to someone else by now
                owned = sorted(p for p, rec in interfaces.items() if rec["external_ids"].get("vm-id") == name)
                taps = [t for t in taps if t not in interfaces or t in owned]
                args = [a for p in owned for a in ("--", "--if-exists", "del-port", p)]
                if args:   # with the switch down nobody would confirm the change: do not wait for it
                    self.vsctl(*([] if switch_up else ["--no-wait"]), *args, timeout=10)
                left = []
        for tap in taps:
            _delete_tap(tap)
        self._give_back_vfs(config)
        for f in vmdir.glob("*.sock"):
            f.unlink(missing_ok=True)
        (vmdir / "qemu.pid").unlink(missing_ok=True)
        return left

    def delete(self, name: str) -> None:
        """Forget a stopped VM: remove what is left of its last run (ports, taps) and its directory."""
        state = self._existing_state(name)
        with self._locked(name):
            if self.qemu_pid(name):
                raise VmError(f"VM {name} is running: pyvswitch vm stop {name} first")
            left = self._cleanup(name, state.get("config"))
            if left:
                raise VmError(f"the switch's database is not reachable to remove port(s) {', '.join(left)}: "
                              "start the switch first")
            shutil.rmtree(self.vmdir(name))

    # -- status --

    def names(self) -> list[str]:
        """Names of every VM with a state directory."""
        if not self.vms_dir.is_dir():
            return []
        return sorted(d.name for d in self.vms_dir.iterdir() if (d / "vm.json").exists())

    def status(self, name: str, with_ports: bool = True) -> VmStatus:
        """VM ``name`` now: state from its QEMU (QMP) and pid, ports from OVSDB, addresses from the ready line."""
        state = self._existing_state(name)
        cfg = _config(state, name)
        pid = self.qemu_pid(name)
        saved = state.get("state", "stopped")
        detail = state.get("detail", "")
        if pid is not None:
            current = "running" if saved == "running" else saved
            with contextlib.suppress(OSError, ValueError, KeyError):
                with Qmp(self.vmdir(name) / "qmp.sock", timeout=2) as qmp:
                    qstatus = qmp.execute("query-status")["status"]
                current = "running" if qstatus == "running" else qstatus
        elif saved in ("running", "starting"):
            current, detail = "exited", "QEMU exited on its own (see console.log and qemu.log); vm stop cleans up"
        else:
            current = saved
        st = VmStatus(name=name, state=current, pid=pid, config=cfg, vmdir=self.vmdir(name),
                      accel=state.get("accel", ""), accel_reason=state.get("accel_reason", ""),
                      started_at=state.get("started_at"), detail=detail)
        ready = state.get("ready_line")
        if ready:
            st.guest = {k: [mac, addrs] for k, (mac, addrs) in (parse_ready_line(ready) or {}).items()}
        if with_ports and pid is not None and any(n.bridge for n in cfg.nics):
            if self.switch_pid() is None:
                st.switch_error = f"no switch daemon runs in {self.rundir}"
                return st
            try:
                interfaces = self._interfaces(timeout=5)
            except VmError as e:
                st.switch_error = str(e)
            else:
                for nic in cfg.nics:
                    if nic.port in interfaces:
                        rec = interfaces[nic.port]
                        st.ports[nic.port] = {k: rec.get(k) for k in ("ofport", "link_state", "error")}
        return st

    # -- console --

    def console_log(self, name: str) -> Path:
        """Where VM ``name``'s serial output is logged; VmError when there is no such VM."""
        self._existing_state(name)
        return self.vmdir(name) / "console.log"

    def console(self, name: str, stdin_fd: int = 0, stdout_fd: int = 1, idle: float = 2.0) -> int:
        """Attach to VM ``name``'s serial console (Ctrl-] detaches); see ``attach_console``."""
        self._existing_state(name)
        if self.qemu_pid(name) is None:
            raise VmError(f"VM {name} is not running; its console output is in {self.vmdir(name) / 'console.log'}")
        with self._locked(name, ".console.lock", f"the console of VM {name} is in use by another 'vm console'"):
            return attach_console(str(self.vmdir(name) / "console.sock"), stdin_fd, stdout_fd, idle, name)


def attach_console(path: str, stdin_fd: int, stdout_fd: int, idle: float, name: str = "") -> int:
    """Relay a terminal to the console socket at ``path``.

    On a terminal: raw mode, Ctrl-] detaches. Otherwise stdin is sent as it comes and, after it ends,
    output is relayed until the console has been quiet for ``idle`` seconds (for scripts).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as e:
        raise VmError(f"cannot attach to the console {path}: {e.strerror or e}") from None
    interactive = os.isatty(stdin_fd)
    saved = None
    if interactive:
        os.write(stdout_fd, f"Connected to the console of {name}; Ctrl-] detaches.\r\n".encode())
        saved = termios.tcgetattr(stdin_fd)
        tty.setraw(stdin_fd)
    reading_stdin = True
    last_output = time.monotonic()
    try:
        while True:
            fds = [sock, stdin_fd] if reading_stdin else [sock]
            wait = None if reading_stdin else max(0.0, idle - (time.monotonic() - last_output))
            ready, _, _ = select.select(fds, [], [], wait)
            if not ready:
                return 0
            if sock in ready:
                data = sock.recv(65536)
                if not data:
                    os.write(stdout_fd, b"\r\n[the VM's console closed: QEMU exited]\r\n")
                    return 0
                os.write(stdout_fd, data)
                last_output = time.monotonic()
            if stdin_fd in ready:
                data = os.read(stdin_fd, 4096)
                if interactive and b"\x1d" in data:
                    data = data[:data.index(b"\x1d")]
                    if data:
                        sock.sendall(data)
                    return 0
                if not data:
                    reading_stdin = False
                    last_output = time.monotonic()
                    continue
                sock.sendall(data)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
            os.write(stdout_fd, b"\r\n")
        sock.close()


# --- helpers -------------------------------------------------------------------------------------------------


def _config(state: dict, name: str) -> VmConfig:
    """The VmConfig saved in a ``vm.json``; a damaged one becomes a bare config of that name."""
    try:
        cfg = VmConfig.from_json(state.get("config") or {"name": name})
        cfg.name = name
        return cfg
    except (TypeError, ValueError, AttributeError):
        return VmConfig(name)


def _ovsdb_value(v: object) -> object:
    """An ovs-vsctl JSON cell as Python: maps as dicts, sets as lists, atoms as themselves."""
    if isinstance(v, list) and len(v) == 2 and v[0] in ("map", "set", "uuid"):
        if v[0] == "map":
            return {k: _ovsdb_value(x) for k, x in v[1]}
        if v[0] == "set":
            items = [_ovsdb_value(x) for x in v[1]]
            return items[0] if len(items) == 1 else (None if not items else items)
        return v[1]
    return v


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:   # a zombie (our own child not reaped yet) is not running
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _live_pid(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and _pid_alive(pid) else None


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    return True


def _find_line(path: Path, text: str) -> str | None:
    """The first complete line (one QEMU has finished writing) of ``path`` that contains ``text``."""
    try:
        data = path.read_text(errors="replace")
    except OSError:
        return None
    for line in data.split("\n")[:-1]:
        if text in line:
            return line.strip()
    return None


def _tail(path: Path, lines: int, keep: str = "", skip: str = "") -> str:
    """The last ``lines`` non-empty lines, indented; the last line containing ``keep`` is always among them."""
    try:
        data = path.read_text(errors="replace")
    except OSError:
        return ""
    clean = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", ln).rstrip() for ln in data.splitlines()]
    clean = [ln for ln in clean if ln and not (skip and skip in ln)]
    tail = clean[-lines:]
    kept = [ln for ln in clean if keep and keep in ln]
    if kept and kept[-1] not in tail:
        tail = [kept[-1], "...", *tail[1:]]
    return "\n".join(f"  {ln}" for ln in tail)


def _create_tap(name: str) -> None:
    """A persistent tap netdev ``name`` for QEMU to open (``-netdev tap,ifname=``): up, no IPv6."""
    from backends.tap import disable_ipv6, set_link

    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise VmError(f"cannot create tap device {name}: /dev/net/tun: {e.strerror or e}") from None
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    except OSError as e:
        raise VmError(f"cannot create tap device {name}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    try:
        disable_ipv6(name)
        set_link(name, up=True)
    except Exception as e:  # noqa: BLE001 - pyroute2's NetlinkError and OSError alike
        _delete_tap(name)
        raise VmError(f"cannot bring tap device {name} up: {e}") from None


def _delete_tap(name: str) -> None:
    """Delete the persistent tap ``name`` if it exists (and is a tap)."""
    if not os.path.exists(f"/sys/class/net/{name}/tun_flags"):
        return
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return
    try:   # fails (EBUSY) while a process has the tap open: then it is not ours to remove
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
        fcntl.ioctl(fd, TUNSETPERSIST, 0)
    except OSError:
        pass
    finally:
        os.close(fd)


def print_status(st: VmStatus, out: object = sys.stdout) -> None:
    """``vm status``'s human-readable form."""
    cfg = st.config
    lines = [f"name:        {st.name}",
             f"state:       {st.state}" + (f" ({st.detail})" if st.detail and st.state != "running" else ""),
             f"pid:         {st.pid or '-'}",
             f"accelerator: {st.accel or '-'}" + (f" ({st.accel_reason})" if st.accel_reason else ""),
             f"memory:      {cfg.memory_mb} MiB" + (" (hugepages)" if cfg.hugepages else ""),
             f"cpus:        {cfg.cpus}"]
    if st.started_at and st.pid:
        lines.append(f"uptime:      {time.time() - st.started_at:.0f} s")
    if cfg.kernel:
        lines.append(f"kernel:      {cfg.kernel}" + (f" initrd {cfg.initrd}" if cfg.initrd else ""))
    lines += [f"disk:        {d['file']} ({d['format']})" for d in cfg.disks]
    if st.switch_error:
        lines.append(f"switch:      {st.switch_error}: ports not shown")
    for i, nic in enumerate(cfg.nics):
        where = f"port {nic.port} on {nic.bridge}" if nic.bridge else f"VF {nic.vf} of {nic.pf} ({nic.pci})"
        text = f"nic {i}:       {nic.kind:<10} {nic.mac}  {where}"
        if nic.tag is not None:
            text += f" tag {nic.tag}"
        port = st.ports.get(nic.port)
        if port:
            text += f"  ofport {port['ofport']} link {port['link_state']}"
            if port.get("error"):
                text += f"  error: {port['error']}"
        guest = st.guest.get(f"eth{i}")
        if guest and guest[1]:
            text += f"  guest eth{i} {','.join(guest[1])}"
        elif nic.ip:
            text += f"  ip {nic.ip}"
        lines.append(text)
    lines += [f"console:     pyvswitch vm console {st.name}  (log: {st.vmdir / 'console.log'})",
              f"qmp:         {st.vmdir / 'qmp.sock'}"]
    print("\n".join(lines), file=out)  # type: ignore[arg-type]
