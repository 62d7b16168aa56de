"""Test guests: the cached guest image and the serial-console ready line (tests/test_vmimage.py,
tests/test_vhost_qemu.py); the QMP client is ``vswitch.vm.Qmp``."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from vswitch.vmimage import READY_MARKER, GuestImage, build_image, default_cache_dir

QEMU = "qemu-system-x86_64"


def guest_image() -> GuestImage:
    """The cached guest image (built on first use); skips (a failure in CI) without root or QEMU."""
    if os.geteuid() != 0:
        pytest.skip("needs root (apt-get download, network namespaces, tap devices)")
    if not shutil.which(QEMU):
        pytest.skip(f"{QEMU} missing: install the Debian package qemu-system-x86")
    return build_image(default_cache_dir())


def wait_for_ready(proc: subprocess.Popen, serial: Path, timeout: float) -> str:
    """The guest's ready line from the serial log; fails if QEMU exits or the guest is too slow."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = serial.read_text(errors="replace") if serial.exists() else ""
        for line in text.splitlines():
            if READY_MARKER in line:
                return line
        assert proc.poll() is None, f"QEMU exited ({proc.returncode}); serial console:\n{text}"
        time.sleep(0.05)
    pytest.fail(f"no ready line within {timeout} s; serial console:\n{text}")
