"""``pyvswitch vm check``: can this host run guests, and with which accelerator (like kvm-ok).

```
/dev/kvm ──open──► KVM_GET_API_VERSION (must be 12) ──► KVM_CREATE_VM (must give a VM fd)
/proc/cpuinfo ──► vmx (VT-x) / svm (AMD-V) ──┐
                                              ├──► accelerator: kvm when all of it holds, else tcg (and why)
qemu-system-x86_64 --version ─────────────────┘   hugepages, memfd: what guest RAM can be backed by
```

A ``/dev/kvm`` that answers but sits on a CPU without vmx/svm (a paravirtual KVM, as on these
build machines) cannot boot unmodified guests: the launcher then picks TCG and says so.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

KVM_GET_API_VERSION = 0xAE00      # _IO(KVMIO, 0x00)
KVM_CREATE_VM = 0xAE01            # _IO(KVMIO, 0x01)
KVM_API_VERSION = 12
QEMU = "qemu-system-x86_64"


@dataclass
class HostCheck:
    """What ``vm check`` found; ``accel`` is what ``vm start`` will use and ``reason`` says why."""

    kvm_device: bool = False
    kvm_api_version: int | None = None
    kvm_create_vm: bool = False
    kvm_error: str = ""
    cpu_virt: str = ""              # "vmx", "svm" or "" (none)
    hugepages_total: int = 0
    hugepages_free: int = 0         # HugePages_Free minus HugePages_Rsvd: what a new guest can still get
    hugepage_kb: int = 0
    memfd: bool = False
    qemu: str = ""                  # path, "" when missing
    qemu_version: str = ""
    accel: str = "tcg"
    reason: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def kvm_usable(self) -> bool:
        """/dev/kvm works and the CPU has hardware virtualisation."""
        return self.kvm_create_vm and self.kvm_api_version == KVM_API_VERSION and bool(self.cpu_virt)

    def report(self) -> str:
        """The human-readable answer, one finding per line, the verdict last."""
        yes = {True: "yes", False: "no"}
        lines = [
            f"/dev/kvm:             {'present' if self.kvm_device else 'missing'}"
            + (f" (API version {self.kvm_api_version})" if self.kvm_api_version is not None else "")
            + (f": {self.kvm_error}" if self.kvm_error else ""),
            f"KVM_CREATE_VM:        {yes[self.kvm_create_vm]}",
            f"CPU virtualisation:   {self.cpu_virt or 'none (no vmx or svm flag in /proc/cpuinfo)'}",
            f"hugepages:            {self.hugepages_free} of {self.hugepages_total} free"
            + (f" ({self.hugepage_kb} kB)" if self.hugepage_kb else ""),
            f"memfd:                {yes[self.memfd]}",
            f"QEMU:                 {self.qemu or f'{QEMU} not found (apt-get install qemu-system-x86)'}"
            + (f" ({self.qemu_version})" if self.qemu_version else ""),
        ]
        lines += [f"note: {n}" for n in self.notes]
        lines.append(f"accelerator:          {self.accel} ({self.reason})")
        return "\n".join(lines) + "\n"


def _cpu_virt(cpuinfo: str) -> str:
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    return "vmx" if "vmx" in flags else "svm" if "svm" in flags else ""


def _meminfo(text: str, key: str) -> int:
    m = re.search(rf"^{key}:\s+(\d+)", text, re.M)
    return int(m.group(1)) if m else 0


def check_host(accel: str | None = None, dev: str = "/dev/kvm", cpuinfo: str = "/proc/cpuinfo",
               meminfo: str = "/proc/meminfo") -> HostCheck:
    """Probe the host; ``accel`` (``kvm`` / ``tcg``) overrides the choice (the reason says so)."""
    hc = HostCheck()
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        hc.kvm_error = e.strerror or str(e)
    else:
        hc.kvm_device = True
        try:
            hc.kvm_api_version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
            vm = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
            os.close(vm)
            hc.kvm_create_vm = True
        except OSError as e:
            hc.kvm_error = e.strerror or str(e)
        finally:
            os.close(fd)
    try:
        hc.cpu_virt = _cpu_virt(open(cpuinfo).read())
    except OSError:
        hc.cpu_virt = ""
    try:
        mi = open(meminfo).read()
        hc.hugepages_total = _meminfo(mi, "HugePages_Total")
        hc.hugepages_free = _meminfo(mi, "HugePages_Free") - _meminfo(mi, "HugePages_Rsvd")
        hc.hugepage_kb = _meminfo(mi, "Hugepagesize")
    except OSError:
        pass
    try:
        os.close(os.memfd_create("pyvswitch-check", os.MFD_CLOEXEC))
        hc.memfd = True
    except OSError:
        hc.memfd = False
    hc.qemu = shutil.which(QEMU) or ""
    if hc.qemu:
        try:
            out = subprocess.run([hc.qemu, "--version"], capture_output=True, text=True, timeout=20).stdout
            m = re.search(r"version (\S+)", out)
            hc.qemu_version = m.group(1) if m else out.strip().splitlines()[0] if out.strip() else ""
        except (OSError, subprocess.SubprocessError) as e:
            hc.notes.append(f"{QEMU} --version failed: {e}")
    if hc.kvm_device and hc.kvm_create_vm and not hc.cpu_virt:
        hc.notes.append("/dev/kvm answers but the CPU has no vmx/svm: a paravirtual KVM, on which unmodified "
                        "guests do not boot")
    if not hc.memfd:
        hc.notes.append("no memfd: vhost-user NICs need guest RAM in a shared memfd")
    if accel in ("kvm", "tcg"):
        hc.accel = accel
        hc.reason = f"--accel {accel} given" + (
            "; KVM is not usable here, the guest may not boot" if accel == "kvm" and not hc.kvm_usable else "")
    elif hc.kvm_usable:
        hc.accel, hc.reason = "kvm", f"/dev/kvm works and the CPU has {hc.cpu_virt}"
    else:
        why = ("no /dev/kvm" if not hc.kvm_device else "KVM_CREATE_VM failed" if not hc.kvm_create_vm
               else f"KVM API version {hc.kvm_api_version}, not {KVM_API_VERSION}"
               if hc.kvm_api_version != KVM_API_VERSION else "the CPU has no vmx/svm")
        hc.accel, hc.reason = "tcg", f"{why}: guests run under TCG (emulation, several times slower)"
    return hc
