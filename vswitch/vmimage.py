"""A small test guest: the Debian cloud kernel plus a busybox initramfs, built locally and cached.

``build_image(out_dir)`` writes ``vmlinuz``, ``initrd.img`` and ``image.json`` into ``out_dir``:

- the kernel is ``/boot/vmlinuz-*`` of the concrete package behind Debian's ``linux-image-cloud-amd64``
  metapackage, fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x`` (nothing is installed);
- the initramfs (newc cpio, gzip, written here) holds the host's static ``/bin/busybox`` (Debian
  ``busybox-static``) with its applet links, the modular drivers the guest needs (virtio-pci,
  virtio-net and their dependencies, the ACPI power button and evdev for ``acpid``) and ``/init``.

``/init`` reads its network settings from the kernel command line (see ``kernel_cmdline``):

- ``ip=ADDR/PREFIX`` configures ``eth0``, ``ip1=``, ``ip2=``, ... configure ``eth1``, ``eth2``, ...;
- ``gw=ADDR`` adds a default route; ``ipv6=on`` keeps IPv6 (off by default so the guest sends no
  unsolicited router/neighbour solicitations or MLD reports);
- every ``eth*`` is brought up, with or without an address.

Then it starts busybox ``acpid`` (an ACPI power-button press, QEMU's QMP ``system_powerdown``, runs
``poweroff -f``), prints one line on the serial console::

    pyvswitch-guest ready eth0=52:54:00:12:34:56,10.0.0.2/24 eth1=52:54:00:12:34:57

(``parse_ready_line`` reads it back) and keeps a shell running on the console.

A second call with the same inputs (kernel package version, busybox binary, this recipe) returns the
cached image at once; the kernel package is only looked up again after the apt package lists change.
"""

from __future__ import annotations

import dataclasses
import fcntl
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
BUSYBOX = "/bin/busybox"
APT_LISTS = "/var/lib/apt/lists"
READY_MARKER = "pyvswitch-guest ready"
# Drivers the guest needs; each is loaded (with its dependencies) unless the kernel has it built in.
GUEST_MODULES = ("virtio_pci", "virtio_net", "button", "evdev")
CACHE_ENV = "PYVSWITCH_GUEST_CACHE"
# Bump when the image layout changes in a way the recipe hash below would not notice.
RECIPE_VERSION = 1

INIT_SCRIPT = r"""#!/bin/sh
# pyvswitch test guest: PID 1 of a busybox initramfs (written by vswitch/vmimage.py).
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
hostname pyvswitch-guest
cmdline=$(cat /proc/cmdline)
case " $cmdline " in
    *" ipv6=on "*) ;;
    *) echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6
       echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 ;;
esac
for m in $(cat /etc/modules); do
    insmod "/lib/modules/$m.ko" || echo "pyvswitch-guest: insmod $m failed"
done
ip link set lo up
for d in /sys/class/net/eth*; do
    [ -e "$d" ] && ip link set "${d##*/}" up
done
gw=
for arg in $cmdline; do
    case "$arg" in
        ip=*) dev=eth0 ;;
        ip[0-9]=* | ip[0-9][0-9]=*) n=${arg%%=*}; dev=eth${n#ip} ;;
        gw=*) gw=${arg#gw=}; continue ;;
        *) continue ;;
    esac
    ip addr add "${arg#*=}" dev "$dev" || echo "pyvswitch-guest: cannot set $arg"
done
[ -n "$gw" ] && { ip route add default via "$gw" || echo "pyvswitch-guest: cannot add route via $gw"; }
acpid -c /etc/acpi -l /var/log/acpid.log -p /run/acpid.pid || echo "pyvswitch-guest: acpid failed"
line="pyvswitch-guest ready"
for d in /sys/class/net/eth*; do
    [ -e "$d" ] || continue
    dev=${d##*/}
    item="$dev=$(cat "$d/address")"
    for a in $(ip -4 addr show dev "$dev" | awk '$1 == "inet" {print $2}'); do
        item="$item,$a"
    done
    line="$line $item"
done
echo "$line"
while :; do
    setsid cttyhack sh
    sleep 1
done
"""

POWER_BUTTON_SCRIPT = """#!/bin/sh
# Run by busybox acpid on an ACPI power-button press (QMP system_powerdown).
echo "pyvswitch-guest: power button pressed, powering off" > /dev/console
sync
poweroff -f
"""


class VmImageError(RuntimeError):
    """The guest image could not be built; the message says which step failed and why."""


@dataclasses.dataclass(frozen=True)
class GuestImage:
    """A built guest: kernel and initramfs paths, and the kernel release (``uname -r`` in the guest)."""

    kernel: Path
    initrd: Path
    version: str


def default_cache_dir() -> Path:
    """Where tests and demos keep the image: ``$PYVSWITCH_GUEST_CACHE``, else ``<repo>/.cache/guest``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / ".cache" / "guest"


def kernel_cmdline(ip: str | None, extra: str = "") -> str:
    """The kernel command line for the guest: serial console, quiet fast boot, ``ip=`` for eth0, ``extra``.

    ``panic=-1`` reboots at once on a panic; start QEMU with ``-no-reboot`` so that ends QEMU
    instead of hanging. ``extra`` may add ``ip1=...``, ``gw=...``, ``ipv6=on`` or kernel options.
    """
    # mitigations=off, i8042.noaux and a single UART take ~0.5 s off a ~4 s TCG boot.
    parts = ["console=ttyS0", "quiet", "panic=-1", "mitigations=off", "i8042.noaux", "8250.nr_uarts=1"]
    if ip:
        parts.append(f"ip={ip}")
    if extra:
        parts.append(extra)
    return " ".join(parts)


def parse_ready_line(line: str) -> dict[str, tuple[str, list[str]]] | None:
    """``{ifname: (mac, [addr/prefix, ...])}`` from the guest's ready line, or None if it is not one."""
    idx = line.find(READY_MARKER)
    if idx < 0:
        return None
    result: dict[str, tuple[str, list[str]]] = {}
    for item in line[idx + len(READY_MARKER):].split():
        name, _, rest = item.partition("=")
        mac, *addrs = rest.split(",")
        result[name] = (mac, addrs)
    return result


def build_image(out_dir: str | os.PathLike) -> GuestImage:
    """Build the guest kernel + initramfs into ``out_dir``, or return the cached one built from the same inputs.

    Safe to call from several processes at once (a lock file serialises builds). Needs ``apt-get``,
    ``dpkg-deb`` and a static ``/bin/busybox``; runs ``apt-get update`` once if the package lists are missing.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recipe = _recipe_hash()
    lists = _apt_lists_fingerprint()
    manifest = _read_manifest(out)
    if manifest and manifest.get("recipe") == recipe and manifest.get("apt_lists") == lists:
        image = _image_from(out, manifest)
        if image:
            return image
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = _read_manifest(out)
        try:
            package, version = _resolve_kernel_package()
        except VmImageError:
            # Offline, or apt cannot answer: an image built by this recipe is still good enough.
            image = _image_from(out, manifest) if manifest and manifest.get("recipe") == recipe else None
            if image:
                return image
            raise
        lists = _apt_lists_fingerprint()
        if (manifest and manifest.get("recipe") == recipe and manifest.get("package") == package
                and manifest.get("package_version") == version):
            image = _image_from(out, manifest)
            if image:
                manifest["apt_lists"] = lists
                _write_manifest(out, manifest)
                return image
        for stale in out.glob(".build-*"):  # left by a build that was killed; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=out, prefix=".build-") as tmp:
            manifest = _build(Path(tmp), out, package, version)
        manifest.update(recipe=recipe, apt_lists=lists)
        _write_manifest(out, manifest)
        image = _image_from(out, manifest)
        assert image is not None
        return image


# --- cache bookkeeping -------------------------------------------------------------------------------------


def _recipe_hash() -> str:
    h = hashlib.sha256()
    h.update(f"{RECIPE_VERSION}\n{INIT_SCRIPT}\n{POWER_BUTTON_SCRIPT}\n{GUEST_MODULES}\n".encode())
    try:
        with open(BUSYBOX, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    except OSError as e:
        raise VmImageError(f"{BUSYBOX} is missing ({e}): install the Debian package busybox-static") from e
    return h.hexdigest()


def _apt_lists_fingerprint() -> str:
    """Changes whenever ``apt-get update`` changes the package lists (so a new kernel may be available)."""
    h = hashlib.sha256()
    try:
        names = sorted(os.listdir(APT_LISTS))
    except OSError:
        return ""
    for name in names:
        if "_Packages" in name:
            st = os.stat(os.path.join(APT_LISTS, name))
            h.update(f"{name} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _read_manifest(out: Path) -> dict | None:
    try:
        return json.loads((out / "image.json").read_text())
    except (OSError, ValueError):
        return None


def _write_manifest(out: Path, manifest: dict) -> None:
    tmp = out / f".image.json.{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, out / "image.json")


def _image_from(out: Path, manifest: dict) -> GuestImage | None:
    """The image the manifest describes, if both files are there with the recorded sizes."""
    kernel, initrd = out / "vmlinuz", out / "initrd.img"
    try:
        if kernel.stat().st_size != manifest["kernel_size"] or initrd.stat().st_size != manifest["initrd_size"]:
            return None
        return GuestImage(kernel=kernel, initrd=initrd, version=manifest["release"])
    except (OSError, KeyError):
        return None


# --- fetching the kernel -----------------------------------------------------------------------------------


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise VmImageError(f"{' '.join(cmd)}: {e}") from e
    if proc.returncode != 0:
        raise VmImageError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout}")
    return proc


def _resolve_kernel_package() -> tuple[str, str]:
    """The concrete ``linux-image-*-cloud-amd64`` package and version the metapackage's candidate depends on."""
    cmd = ["apt-cache", "show", "--no-all-versions", KERNEL_METAPACKAGE]
    try:
        text = _run(cmd).stdout
    except VmImageError:
        text = ""
    if "Depends:" not in text:  # no package lists yet (fresh machine): fetch them once
        _run(["apt-get", "update", "-qq"])
        text = _run(cmd).stdout
    m = re.search(r"^Depends:.*?\b(linux-image-[0-9][^\s,(]*-cloud-amd64)\s*\(=\s*([^)\s]+)\)", text, re.M)
    if not m:
        raise VmImageError(f"cannot find the kernel package {KERNEL_METAPACKAGE} depends on:\n{text}")
    return m.group(1), m.group(2)


def _fetch_kernel_package(package: str, version: str, tmp: Path) -> Path:
    """Download the kernel .deb and unpack it (not install it) under ``tmp/root``; returns that directory."""
    dl = tmp / "deb"
    dl.mkdir()
    _run(["apt-get", "download", "-q", f"{package}={version}"], cwd=dl)
    debs = list(dl.glob("*.deb"))
    if len(debs) != 1:
        raise VmImageError(f"apt-get download {package}={version} left {debs}")
    root = tmp / "root"
    _run(["dpkg-deb", "-x", str(debs[0]), str(root)])
    debs[0].unlink()
    return root


# --- kernel modules ----------------------------------------------------------------------------------------


def _modinfo(data: bytes) -> dict[str, str]:
    """The ``.modinfo`` section (``key=value`` strings) of an ELF64 little-endian kernel module."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise VmImageError("not an ELF64 little-endian kernel module")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        return name, offset, size

    _, stroff, _ = section(shstrndx)
    info: dict[str, str] = {}
    for i in range(shnum):
        name, offset, size = section(i)
        if data[stroff + name:data.index(b"\0", stroff + name)] == b".modinfo":
            for entry in data[offset:offset + size].split(b"\0"):
                key, sep, value = entry.decode(errors="replace").partition("=")
                if sep:
                    info.setdefault(key, value)
    return info


def _read_module(path: Path) -> bytes:
    """A module file's ELF bytes, decompressing ``.ko.xz`` / ``.ko.gz`` (stdlib) or ``.ko.zst`` (``zstd``)."""
    name = path.name
    if name.endswith(".ko"):
        return path.read_bytes()
    if name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes())
    if name.endswith(".ko.gz"):
        return gzip.decompress(path.read_bytes())
    if name.endswith(".ko.zst"):
        try:
            return subprocess.run(["zstd", "-dcq", str(path)], capture_output=True, check=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError) as e:
            raise VmImageError(f"cannot decompress {path} (needs the zstd command): {e}") from e
    raise VmImageError(f"unknown module file type: {path}")


def _module_name(filename: str) -> str:
    return filename.split(".ko", 1)[0].replace("-", "_")


def _select_modules(moddir: Path, wanted: Iterable[str]) -> tuple[list[tuple[str, bytes]], list[str]]:
    """Modules to load, dependencies first, as (name, ELF bytes); and the wanted ones that are built in."""
    builtin_file = moddir / "modules.builtin"
    builtin = {_module_name(os.path.basename(line)) for line in builtin_file.read_text().split()}
    files = {_module_name(p.name): p for p in (moddir / "kernel").rglob("*.ko*")}
    order: list[tuple[str, bytes]] = []
    done: set[str] = set()
    built_in: list[str] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in chain:
            raise VmImageError(f"module dependency loop: {' -> '.join((*chain, name))}")
        if name not in files:
            if name in builtin:
                built_in.append(name)
                done.add(name)
                return
            raise VmImageError(f"module {name} is neither in {moddir} nor built in")
        data = _read_module(files[name])
        for dep in filter(None, _modinfo(data).get("depends", "").split(",")):
            visit(dep.replace("-", "_"), (*chain, name))
        done.add(name)
        order.append((name, data))

    for name in wanted:
        visit(name, ())
    return order, built_in


# --- initramfs -----------------------------------------------------------------------------------------------


class _Cpio:
    """A newc ("070701") cpio archive written in memory, with fixed owners and times (reproducible)."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 0x1000
        self.dirs: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0), nlink: int = 1) -> None:
        self.ino += 1
        encoded = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self.buf.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        self.buf.write(b"\0" * (-self.buf.tell() % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-self.buf.tell() % 4))

    def dir(self, name: str) -> None:
        """Add directory ``name`` and its missing parents."""
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            path = "/".join(parts[:i])
            if path not in self.dirs:
                self.dirs.add(path)
                self._entry(path, stat.S_IFDIR | 0o755, nlink=2)

    def _parent(self, name: str) -> None:
        if "/" in name:
            self.dir(os.path.dirname(name))

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        name = name.strip("/")
        self._parent(name)
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        name = name.strip("/")
        self._parent(name)
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        name = name.strip("/")
        self._parent(name)
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        """The archive with its trailer, gzip-compressed (mtime 0)."""
        self._entry("TRAILER!!!", 0, nlink=1)
        self.buf.write(b"\0" * (-self.buf.tell() % 512))
        return gzip.compress(self.buf.getvalue(), compresslevel=6, mtime=0)


def _busybox_applets() -> list[str]:
    """Paths (``bin/sh``, ``usr/sbin/acpid``, ...) where busybox wants its applet links."""
    text = _run([BUSYBOX, "--list-full"]).stdout
    return [line.strip().strip("/") for line in text.splitlines() if line.strip()]


def _initramfs(modules: list[tuple[str, bytes]]) -> bytes:
    with open(BUSYBOX, "rb") as f:
        busybox = f.read()
    if b"\x7fELF" != busybox[:4] or _elf_has_interp(busybox):
        raise VmImageError(f"{BUSYBOX} is not a static binary: install the Debian package busybox-static")
    cpio = _Cpio()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "run", "root",
              "var/log", "lib/modules", "etc/acpi/PWRF"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3, 0o666)
    cpio.file("bin/busybox", busybox, 0o755)
    for applet in _busybox_applets():
        if applet not in ("bin/busybox", "linuxrc"):
            cpio.symlink(applet, "/bin/busybox")
    for name, data in modules:
        cpio.file(f"lib/modules/{name}.ko", data)
    cpio.file("etc/modules", "".join(f"{name}\n" for name, _ in modules).encode())
    cpio.file("etc/acpi/PWRF/00000080", POWER_BUTTON_SCRIPT.encode(), 0o755)
    cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    cpio.file("etc/group", b"root:x:0:\n")
    cpio.file("init", INIT_SCRIPT.encode(), 0o755)
    return cpio.finish()


def _elf_has_interp(data: bytes) -> bool:
    """True for a dynamically linked ELF64 executable (it has a PT_INTERP program header)."""
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return any(struct.unpack_from("<I", data, phoff + i * phentsize)[0] == 3 for i in range(phnum))


# --- the build -----------------------------------------------------------------------------------------------


def _build(tmp: Path, out: Path, package: str, version: str) -> dict:
    root = _fetch_kernel_package(package, version, tmp)
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise VmImageError(f"{package}: expected one /boot/vmlinuz-*, found {kernels}")
    release = kernels[0].name[len("vmlinuz-"):]
    moddir = root / "lib" / "modules" / release
    modules, built_in = _select_modules(moddir, GUEST_MODULES)
    initrd = _initramfs(modules)
    for name, data in (("vmlinuz", kernels[0].read_bytes()), ("initrd.img", initrd)):
        part = tmp / name
        part.write_bytes(data)
        os.replace(part, out / name)
    return {
        "package": package,
        "package_version": version,
        "release": release,
        "modules": [name for name, _ in modules],
        "built_in": built_in,
        "kernel_size": (out / "vmlinuz").stat().st_size,
        "initrd_size": (out / "initrd.img").stat().st_size,
    }
