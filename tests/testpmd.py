"""``Testpmd``: a ``dpdk-testpmd`` whose ports are virtio_user front-ends of vhost-user sockets, driven over stdin.

testpmd runs under ``stdbuf -o0`` so its log is current: ``cmd`` waits until testpmd has printed its
prompt again after each command (it has acted on it). ``port_stats`` quits, then adds up the statistics
each ``stop`` printed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest

TESTPMD = shutil.which("dpdk-testpmd")
needs_testpmd = pytest.mark.skipif(TESTPMD is None, reason="dpdk-testpmd not installed (Debian package dpdk-dev)")

_STATS = re.compile(r"Forward statistics for port (\d+)\s+-+\s+RX-packets:\s+(\d+).*?TX-packets:\s+(\d+)", re.S)


class Testpmd:
    """testpmd with one virtio_user port per socket (``server=True``: testpmd listens, the switch connects)."""

    __test__ = False   # not a test class, despite the name

    def __init__(self, sockets: list[str], *, server: bool = False, mbufs: int = 16384,
                 extra_eal: list[str] | None = None) -> None:
        assert TESTPMD is not None
        self.prefix = "pvt" + uuid.uuid4().hex[:10]
        self.log_file = tempfile.NamedTemporaryFile(prefix="testpmd-", suffix=".log", delete=False)  # noqa: SIM115
        vdevs = []
        for i, sock in enumerate(sockets):
            vdevs += ["--vdev", f"net_virtio_user{i},path={sock},queue_size=256" + (",server=1" if server else "")]
        cmd = ["stdbuf", "-o0", TESTPMD, "--no-pci", "--no-huge", "-m", "256", f"--file-prefix={self.prefix}",
               *(extra_eal or []), *vdevs, "--", "-i", f"--total-num-mbufs={mbufs}"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     text=True)
        self.output = ""
        self.prompts = 1   # the prompt after start-up

    def log(self) -> str:
        """Everything testpmd printed so far."""
        with open(self.log_file.name, errors="replace") as f:
            return f.read()

    def cmd(self, *lines: str, timeout: float = 30.0) -> None:
        """Run interactive commands, one after the other, each to completion (testpmd prompts again)."""
        assert self.proc.stdin is not None
        for line in lines:
            self.proc.stdin.write(f"{line}\n")
            self.proc.stdin.flush()
            self.prompts += 1
            deadline = time.monotonic() + timeout
            while self.log().count("testpmd> ") < self.prompts:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"testpmd did not finish {line!r}:\n{self.log()[-3000:]}")
                time.sleep(0.02)

    def port_stats(self) -> list[tuple[int, int]]:
        """``(rx_packets, tx_packets)`` per port over every forwarding run (start .. stop); testpmd quits."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        self.proc.wait(30)
        with open(self.log_file.name) as f:
            self.output = f.read()
        stats: dict[int, tuple[int, int]] = {}
        for port, rx, tx in _STATS.findall(self.output):
            old = stats.get(int(port), (0, 0))
            stats[int(port)] = (old[0] + int(rx), old[1] + int(tx))
        assert stats, self.output[-3000:]
        return [stats[p] for p in sorted(stats)]

    def close(self) -> None:
        """Stop testpmd (quit, then SIGTERM/SIGKILL) and remove its runtime files."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.proc.stdin.write("quit\n")  # type: ignore[union-attr]
                self.proc.stdin.flush()  # type: ignore[union-attr]
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        self.log_file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.log_file.name)
        shutil.rmtree(os.path.join("/var/run/dpdk", self.prefix), ignore_errors=True)

    def __enter__(self) -> Testpmd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
