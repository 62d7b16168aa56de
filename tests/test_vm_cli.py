"""``pyvswitch vm check`` and ``pyvswitch vm image build`` on this host's real /dev/kvm, QEMU and apt."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vswitch.kvm import check_host
from vswitch.vmimage import default_cache_dir

pytestmark = pytest.mark.integration


def pyvswitch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vswitch.cli", *args], capture_output=True, text=True, timeout=600)


def cpu_virt() -> str:
    flags = {f for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
             for f in line.split(":", 1)[1].split()}
    return "vmx" if "vmx" in flags else "svm" if "svm" in flags else ""


def test_vm_check_reports_kvm_and_picks_the_accelerator() -> None:
    proc = pyvswitch("vm", "check")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "/dev/kvm:             present (API version 12)" in out, out
    assert "KVM_CREATE_VM:        yes" in out
    assert "QEMU:                 /usr/bin/qemu-system-x86_64 (" in out
    assert "memfd:                yes" in out
    if cpu_virt():
        assert f"accelerator:          kvm (/dev/kvm works and the CPU has {cpu_virt()})" in out, out
    else:   # these build machines: a paravirtual KVM, so TCG, and the report says why
        assert "accelerator:          tcg (the CPU has no vmx/svm" in out, out
        assert "paravirtual KVM" in out
    forced = pyvswitch("vm", "check", "--accel", "tcg").stdout
    assert "accelerator:          tcg (--accel tcg given)" in forced


def test_vm_check_without_kvm_device(tmp_path: Path) -> None:
    hc = check_host(dev=str(tmp_path / "kvm"))
    assert not hc.kvm_device and hc.accel == "tcg"
    assert hc.reason.startswith("no /dev/kvm")
    assert "/dev/kvm:             missing: No such file or directory" in hc.report()


def test_vm_image_build_cli() -> None:
    out = default_cache_dir()
    proc = pyvswitch("vm", "image", "build", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert Path(lines["kernel"]).stat().st_size > 1_000_000
    assert Path(lines["initrd"]).stat().st_size > 100_000
    assert lines["release"].endswith("-cloud-amd64")
    assert "ip=10.0.0.11/24" in lines["cmdline"]
    missing = pyvswitch("vm", "image", "build")
    assert missing.returncode == 2 and "--out" in missing.stderr
