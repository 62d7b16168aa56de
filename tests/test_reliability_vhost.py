"""A hostile vhost-user guest can lose its own port, never the switch (issue 15: defects 1, 2, 6, 7).

Each test runs the real daemon with a canary ping between two namespace hosts on veth ports of the
same bridge, drives a hostile guest with the test front-end, and checks what a user would notice:
the daemon's pid unchanged, the canary answered throughout, the offending port reset with its
reason in ``Interface.error``, ``ovs-vsctl`` answering within seconds, and a well-behaved guest
able to use the same port afterwards.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netutil import Canary, unique
from tests.test_vhost import MEM, TX, exchange
from tests.vhost_frontend import OWN_SOCKET, VHOST_USER_SET_VRING_ENABLE, VhostUserFrontend

pytestmark = pytest.mark.integration

F_GET_SEALS, F_SEAL_SHRINK = 1034, 0x0002


class Lab:
    """A bridge with two veth hosts (the canary) and vhost-user ports for guests."""

    def __init__(self, switch, net) -> None:  # noqa: ANN001 - fixtures
        self.switch, self.net = switch, net
        stem = unique("rv")
        self.br = f"{stem}br"
        switch.vsctl("add-br", self.br)
        for i in (1, 2):
            net.add_host(f"{stem}h{i}", f"{stem}{i}", ip=f"10.77.0.{i}/24")
            switch.vsctl("add-port", self.br, f"{stem}{i}")
        self.ns1 = f"{stem}h1"
        assert net.ping(self.ns1, "10.77.0.2", count=2, deadline=15), "the canary hosts do not reach each other"
        self.pid = switch.proc.pid

    def add_vhost(self, name: str) -> str:
        """A dpdkvhostuser port; returns its socket path."""
        self.switch.vsctl("add-port", self.br, name, "--", "set", "Interface", name, "type=dpdkvhostuser")
        return os.path.join(self.switch.rundir, name)

    def guest(self, name: str, **kw: object) -> VhostUserFrontend:
        """A well-behaved guest on port ``name``, link up."""
        fe = VhostUserFrontend(os.path.join(self.switch.rundir, name), mem_size=MEM, **kw)
        fe.start()
        self.switch.wait_for(f"{name} up", lambda: self.switch.get("Interface", name, "link_state") == "up")
        return fe

    def canary(self) -> Canary:
        return Canary(self.ns1, "10.77.0.2")

    def assert_alive(self) -> None:
        """Same daemon process, and it answers the database within seconds."""
        assert self.switch.proc.poll() is None, self.switch.stderr()
        assert self.switch.proc.pid == self.pid
        t = time.monotonic()
        self.switch.vsctl("list-br")
        assert time.monotonic() - t < 5


@pytest.fixture
def lab(switch, net) -> Iterator[Lab]:  # noqa: ANN001 - fixtures
    yield Lab(switch, net)


def _wait_error(lab: Lab, port: str, text: str) -> str:
    lab.switch.wait_for(f"{port}: Interface.error with {text!r}",
                        lambda: text in lab.switch.get("Interface", port, "error"), timeout=15)
    return lab.switch.get("Interface", port, "error")


@contextlib.contextmanager
def _hugepages(n: int) -> Iterator[None]:
    """``n`` more 2 MiB hugepages reserved while the block runs."""
    path = Path("/proc/sys/vm/nr_hugepages")
    saved = int(path.read_text())
    path.write_text(str(saved + n))
    try:
        free = int(Path("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages").read_text())
        assert free >= n, f"could not reserve {n} hugepages ({free} free)"
        yield
    finally:
        path.write_text(str(saved))


def _seals(fd: int) -> int:
    """The seals of the file behind ``fd`` (0 for a file that cannot have any)."""
    try:
        return fcntl.fcntl(fd, F_GET_SEALS)
    except OSError:          # EINVAL: not a memfd (a tmpfs or hugetlbfs file)
        return 0


@pytest.mark.parametrize("memory", ["memfd", "tmpfs-file", "memfd-hugetlb", "memfd-sealable"])
def test_guest_that_shrinks_its_memory_loses_only_its_port(lab: Lab, memory: str) -> None:
    """Guest memory that allows seals (QEMU's memfds) is sealed against shrinking at the handshake: the guest's
    ftruncate fails and its port goes on. Memory that cannot be sealed (DPDK's memfds, plain and hugetlbfs files)
    shrinks under the switch: only that port is reset, with its reason."""
    path = lab.add_vhost("vshr")
    lab.add_vhost("vgood0")
    lab.add_vhost("vgood1")
    with contextlib.ExitStack() as stack:
        if memory == "memfd-hugetlb":
            stack.enter_context(_hugepages(MEM >> 21))
        backing = {"tmpfs-file": os.path.join(stack.enter_context(tempfile.TemporaryDirectory(dir="/dev/shm")),
                                              "guest-ram")}.get(memory, memory)
        evil = stack.enter_context(VhostUserFrontend(path, mem_size=MEM, memory=backing))
        assert not _seals(evil.memory_fd) & F_SEAL_SHRINK
        evil.start()
        lab.switch.wait_for("vshr up", lambda: lab.switch.get("Interface", "vshr", "link_state") == "up")
        good = [stack.enter_context(lab.guest(f"vgood{i}")) for i in (0, 1)]
        sealed = memory == "memfd-sealable"
        # The switch sealed what could be sealed when it mapped it (the front-end owns the same file).
        assert bool(_seals(evil.memory_fd) & F_SEAL_SHRINK) == sealed, (memory, _seals(evil.memory_fd))
        with lab.canary() as canary:
            time.sleep(0.5)
            if sealed:
                with pytest.raises(PermissionError):
                    os.ftruncate(evil.memory_fd, 4096)
                evil.kick(TX)
                exchange(evil, good[0], 20, macs=(0xC, 0xA))        # its port goes on
                assert lab.switch.get("Interface", "vshr", "link_state") == "up"
                assert lab.switch.get("Interface", "vshr", "statistics:guest_memory_shrunk") in ("", "0")
                canary.check("a guest trying to shrink its sealed memory")
            else:
                # The guest cuts its RAM file to one page (hugetlbfs: to nothing) and kicks: the switch reads its
                # rings.
                os.ftruncate(evil.memory_fd, 0 if memory == "memfd-hugetlb" else 4096)
                evil.kick(TX)
                error = _wait_error(lab, "vshr", "shrank while mapped")
                assert "port reset" in error
                lab.switch.wait_for("counted", lambda: lab.switch.get("Interface", "vshr",
                                                                      "statistics:guest_memory_shrunk") == "1")
                assert lab.switch.get("Interface", "vshr", "link_state") == "down"
                exchange(good[0], good[1], 50)     # other guests keep forwarding
                canary.check("a guest's memory shrinking under the switch")
        lab.assert_alive()
        evil.close()          # never touches the truncated pages (the front-end would get SIGBUS itself)
        lab.switch.wait_for("vshr free", lambda: lab.switch.get("Interface", "vshr", "status:status")
                            == "disconnected", timeout=5)
        again = stack.enter_context(lab.guest("vshr"))          # a new session on the same port works
        exchange(again, good[0], 20, macs=(0xC, 0xA))
        assert lab.switch.get("Interface", "vshr", "error") == "[]"      # cleared


def _refused(lab: Lab, port: str, vring_fds: dict[tuple[str, int], int]) -> VhostUserFrontend:
    """A guest that sends ``vring_fds`` instead of eventfds: the switch drops it; returns the front-end."""
    fe = VhostUserFrontend(os.path.join(lab.switch.rundir, port), mem_size=MEM)
    try:
        fe.start(vring_fds=vring_fds, timeout=3)
    except (OSError, TimeoutError, RuntimeError):
        pass          # the switch closed the connection in the middle of the handshake
    return fe


def test_full_pipe_as_call_fd_is_refused_and_forwarding_goes_on(lab: Lab) -> None:
    lab.add_vhost("vpipe")
    r, w = os.pipe2(os.O_NONBLOCK)
    try:
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(w, b"x" * 65536)   # full: a blocking write to it never returns
        os.set_blocking(w, True)
        with lab.canary() as canary:
            evil = _refused(lab, "vpipe", {("call", 0): w, ("call", 1): w})
            try:
                error = _wait_error(lab, "vpipe", "not an eventfd")
                assert "SET_VRING_CALL" in error and "pipe:" in error, error
                assert lab.switch.get("Interface", "vpipe", "status:status") == "disconnected"
                canary.check("a guest's blocking call fd")
            finally:
                evil.close()      # the pipe stays open on our side: nothing may depend on the guest closing it
        lab.assert_alive()
        t = time.monotonic()
        lab.switch.vsctl("del-port", "vpipe")
        assert time.monotonic() - t < 5
        lab.add_vhost("vpipe")
        with lab.guest("vpipe"):                    # the positive twin: eventfds are taken
            pass
    finally:
        os.close(r)
        os.close(w)


def test_guest_socket_as_kick_fd_does_not_wedge_the_port(lab: Lab) -> None:
    lab.add_vhost("vsock")
    with lab.canary() as canary:
        evil = _refused(lab, "vsock", {("kick", 0): OWN_SOCKET, ("kick", 1): OWN_SOCKET})
        try:
            error = _wait_error(lab, "vsock", "not an eventfd")
            assert "SET_VRING_KICK" in error and "socket:" in error, error
        finally:
            evil.close()
        lab.switch.wait_for("disconnected", lambda: lab.switch.get("Interface", "vsock", "status:status")
                            == "disconnected", timeout=5)
        with lab.guest("vsock") as fe:         # the positive twin: the port takes the next guest
            assert lab.switch.get("Interface", "vsock", "status:status") == "connected"
            assert fe.started
        canary.check("a guest passing its own vhost-user socket as kick fd")
    lab.assert_alive()


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_refused_kick_fds_leak_nothing(lab: Lab) -> None:
    lab.add_vhost("vleak")
    with lab.guest("vleak"):        # every fd a session needs exists before counting
        pass
    lab.switch.wait_for("disconnected", lambda: lab.switch.get("Interface", "vleak", "status:status")
                        == "disconnected", timeout=5)
    before = _fd_count(lab.pid)
    with tempfile.TemporaryFile() as f, lab.canary() as canary:
        for _ in range(20):
            _refused(lab, "vleak", {("kick", 1): f.fileno()}).close()
            lab.switch.wait_for("session over", lambda: lab.switch.get("Interface", "vleak", "status:status")
                                == "disconnected", timeout=5)
        canary.check("20 guests passing a regular file as kick fd")
    assert "not an eventfd" in lab.switch.get("Interface", "vleak", "error")
    lab.switch.wait_for(f"fds back to {before}", lambda: _fd_count(lab.pid) <= before, timeout=5)
    lab.assert_alive()


def test_vhost_server_path_that_is_no_socket_is_an_interface_error(lab: Lab) -> None:
    with tempfile.TemporaryDirectory() as d, lab.canary() as canary:
        lab.switch.vsctl("add-port", lab.br, "vcli", "--", "set", "Interface", "vcli", "type=dpdkvhostuserclient",
                         f"options:vhost-server-path={d}")
        assert "is a directory" in _wait_error(lab, "vcli", "vhost-server-path")
        regular = os.path.join(d, "file")
        Path(regular).write_text("")
        lab.switch.vsctl("set", "Interface", "vcli", f"options:vhost-server-path={regular}")
        _wait_error(lab, "vcli", "not a socket")
        sock = os.path.join(d, "fe.sock")
        with VhostUserFrontend(sock, mem_size=MEM, listen=True) as fe:      # the positive twin
            lab.switch.vsctl("set", "Interface", "vcli", f"options:vhost-server-path={sock}")
            fe.start(timeout=10)
            lab.switch.wait_for("vcli up", lambda: lab.switch.get("Interface", "vcli", "link_state") == "up")
            assert lab.switch.get("Interface", "vcli", "error") == "[]"
        canary.check("vhost-server-path set to a directory, then a file")
    lab.assert_alive()


def test_truncated_vlan_tags_from_a_guest_are_counted_by_name(lab: Lab) -> None:
    """What a veth never delivers (the kernel frees a cut-short 802.1Q tag before any packet socket sees it)
    a guest can send: the switch drops it as ``rx_vlan_truncated``."""
    for name in ("vtr0", "vtr1"):
        lab.add_vhost(name)
    with lab.guest("vtr0") as a, lab.guest("vtr1") as b, lab.canary() as canary:
        src = bytes.fromhex("02000000000a")
        cut = [b"\xff" * 6 + src + b"\x81\x00" + tail for tail in (b"", b"\x00", b"\x00\x05", b"\x00\x05\x08")]
        good = b"\xff" * 6 + src + b"\x88\xb5" + b"\0" * 46
        assert a.send(cut + [good]) == 5
        assert b.recv(1, timeout=5) == [good]          # the positive twin: the well-formed frame crosses
        lab.switch.wait_for("rx_vlan_truncated", lambda: lab.switch.get("Interface", "vtr0",
                                                                        "statistics:rx_vlan_truncated") == "4")
        assert b.recv(timeout=0.5) == []
        canary.check("a guest sending cut-short 802.1Q tags")
    lab.assert_alive()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_kicks_on_a_disabled_ring_do_not_spin_the_datapath(lab: Lab) -> None:
    for name in ("vds0", "vds1"):
        lab.add_vhost(name)
    with lab.guest("vds0") as evil, lab.guest("vds1") as other, lab.canary() as canary:
        evil.message(VHOST_USER_SET_VRING_ENABLE, struct.pack("<II", TX, 0), need_reply=True)
        evil.kick(TX)                                  # the kick eventfd stays readable: nobody reads a stopped ring
        time.sleep(0.5)
        cpu, t = _cpu_seconds(lab.pid), time.monotonic()
        time.sleep(2)
        busy = (_cpu_seconds(lab.pid) - cpu) / (time.monotonic() - t)
        assert busy < 0.3, f"the daemon used {busy:.0%} of a core while a guest kicked its disabled ring"
        evil.message(VHOST_USER_SET_VRING_ENABLE, struct.pack("<II", TX, 1), need_reply=True)
        exchange(evil, other, 20, macs=(0xD, 0xE))     # the positive twin: enabled again, its frames go out
        canary.check("a guest kicking its disabled ring")
    lab.assert_alive()
