"""Test and demo hosts: network namespaces joined to the switch by veth pairs, removed when done.

``HostNet`` records everything it creates and ``cleanup()`` removes it in reverse order,
even after a partial failure, so demos and tests leave nothing behind.
"""

from __future__ import annotations

import subprocess


class HostNetError(RuntimeError):
    """An ``ip`` command failed; the message has the command and its output."""


def run(cmd: list[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a command, capturing its output; raise HostNetError with the output on failure."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise HostNetError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout}")
    return proc


class HostNet:
    """Namespaces and veth pairs created for a demo or a test."""

    def __init__(self) -> None:
        self._undo: list[list[str]] = []

    def add_netns(self, ns: str) -> str:
        """Create namespace ``ns`` with its loopback up."""
        run(["ip", "netns", "add", ns])
        self._undo.append(["ip", "netns", "del", ns])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        return ns

    def add_host(self, ns: str, switch_end: str, ip: str | None = None, mac: str | None = None) -> str:
        """A namespace ``ns`` with interface ``eth0`` whose veth peer ``switch_end`` stays in the root ns.

        ``ip`` (CIDR) is put on ``eth0``.
        """
        self.add_netns(ns)
        run(["ip", "link", "add", switch_end, "type", "veth", "peer", "name", "eth0", "netns", ns])
        self._undo.append(["ip", "link", "del", switch_end])
        run(["sysctl", "-qw", f"net.ipv6.conf.{switch_end}.disable_ipv6=1"], check=False)
        run(["ip", "link", "set", switch_end, "up"])
        if mac:
            run(["ip", "-n", ns, "link", "set", "eth0", "address", mac])
        run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], check=False)
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        if ip:
            run(["ip", "-n", ns, "addr", "add", ip, "dev", "eth0"])
        return ns

    def move_to_netns(self, ifname: str, ns: str, ip: str | None = None) -> None:
        """Move an existing interface (e.g. a tap port's netdev) into ``ns`` and configure it."""
        run(["ip", "link", "set", ifname, "netns", ns])
        run(["ip", "-n", ns, "link", "set", ifname, "up"])
        if ip:
            run(["ip", "-n", ns, "addr", "add", ip, "dev", ifname])

    def exec(self, ns: str, cmd: list[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run ``cmd`` inside namespace ``ns``."""
        return run(["ip", "netns", "exec", ns, *cmd], check=check, timeout=timeout)

    def ping(self, ns: str, ip: str, count: int = 3, interval: float = 0.2, deadline: int = 10) -> bool:
        """True when ``ip`` answers at least one ping from ``ns``."""
        proc = self.exec(ns, ["ping", "-c", str(count), "-i", str(interval), "-W", "1", "-w", str(deadline), ip],
                         check=False, timeout=deadline + 5)
        return proc.returncode == 0

    def cleanup(self) -> None:
        """Remove everything created, newest first; errors are ignored (things may be gone already)."""
        while self._undo:
            cmd = self._undo.pop()
            subprocess.run(cmd, capture_output=True, timeout=30)

    def __enter__(self) -> HostNet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
