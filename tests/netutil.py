"""Helpers for the integration tests: unique names, raw frame injection and sniffing inside namespaces."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time

from vswitch.hostnet import HostNet


def unique(prefix: str = "pv") -> str:
    """A short unique name stem (interface names must stay within 15 characters)."""
    return f"{prefix}{secrets.token_hex(2)}"


SEND_SCRIPT = r"""
import socket, sys, json
frames = [bytes.fromhex(h) for h in json.loads(sys.argv[2])]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
sent = 0
for f in frames:
    try:
        s.send(f)
        sent += 1
    except OSError as e:
        print("send failed:", len(f), e, file=sys.stderr)
print(sent)
"""

FLOOD_SCRIPT = r"""
import socket, sys, os
n = int(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
payload = b"\x88\xb5" + b"flood-test".ljust(46, b"\0")
sent = 0
for i in range(n):
    src = bytearray(os.urandom(6))
    src[0] = (src[0] & 0xFE) | 0x02   # unicast, locally administered
    while True:
        try:
            s.send(b"\xff" * 6 + bytes(src) + payload)
            break
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno == 105:  # ENOBUFS: let the queue drain
                import time; time.sleep(0.001)
                continue
            raise
    sent += 1
print(sent)
"""


def send_frames(net: HostNet, ns: str, ifname: str, frames: list[bytes]) -> int:
    """Send raw frames out of ``ifname`` inside ``ns``; returns how many the kernel accepted."""
    proc = net.exec(ns, [sys.executable, "-c", SEND_SCRIPT, ifname, json.dumps([f.hex() for f in frames])])
    return int(proc.stdout.strip())


def flood_random_sources(net: HostNet, ns: str, ifname: str, count: int) -> int:
    """Send ``count`` broadcast frames with random unicast source MACs from ``ns``."""
    proc = net.exec(ns, [sys.executable, "-c", FLOOD_SCRIPT, ifname, str(count)], timeout=120)
    return int(proc.stdout.strip())


class Sniffer:
    """tcpdump inside a namespace, started before traffic and read after it."""

    def __init__(self, ns: str, ifname: str, bpf: str = "") -> None:
        cmd = ["ip", "netns", "exec", ns, "tcpdump", "-i", ifname, "-nn", "-e", "-l", "-U"]
        if bpf:
            cmd += bpf.split()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # tcpdump says "listening on ..." on stderr once the capture is open.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if "listening on" in line or not line:
                break
        time.sleep(0.2)

    def stop(self) -> list[str]:
        """Stop capturing and return one summary line per captured frame."""
        time.sleep(0.3)
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return [line for line in out.splitlines() if line.strip() and not line[0].isspace()]


def mac_of(net: HostNet, ns: str, ifname: str = "eth0") -> str:
    """MAC address of ``ifname`` in ``ns``."""
    return net.exec(ns, ["cat", f"/sys/class/net/{ifname}/address"]).stdout.strip()



class Canary:
    """A steady ping between two namespace hosts, in the background while something hostile happens elsewhere."""

    def __init__(self, ns: str, ip: str, interval: float = 0.1) -> None:
        self.interval = interval
        self.started = time.monotonic()
        import tempfile

        self.out = tempfile.TemporaryFile("w+")   # not a pipe: ping would block once it filled
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "ping", "-D", "-n", "-i", str(interval), "-W", "1",
                                      ip], stdout=self.out, stderr=subprocess.STDOUT, text=True)

    def stop(self) -> tuple[int, int, float]:
        """Stop pinging: (requests sent, replies received, longest time between two replies in seconds)."""
        import re
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=10)
        self.out.seek(0)
        out = self.out.read()
        self.out.close()
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        assert m, out
        stamps = [float(t) for t in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", out, re.M)]
        gap = max((b - a for a, b in zip(stamps, stamps[1:], strict=False)), default=float("inf"))
        return int(m.group(1)), int(m.group(2)), gap

    def check(self, what: str, min_sent: int = 10, max_lost: int = 1, max_gap: float = 1.0) -> None:
        """Stop (after ``min_sent`` requests at least) and assert that the canary was answered throughout."""
        time.sleep(max(0.0, self.started + (min_sent + 1) * self.interval - time.monotonic()))
        sent, received, gap = self.stop()
        assert sent >= min_sent and received >= sent - max_lost and gap < max_gap, \
            f"the canary ping failed during {what}: {received}/{sent} answered, longest gap {gap:.2f} s"

    def __enter__(self) -> Canary:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.out.close()
