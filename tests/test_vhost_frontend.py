"""The test vhost-user frontend (tests/vhost_frontend.py) against a real vhost-user back-end: DPDK ``dpdk-testpmd``
with ``--vdev net_vhost0`` in macswap forwarding mode (one port, so frames go back out of the port they came in
with source and destination MAC swapped).

Every testpmd gets its own ``--file-prefix`` and socket under a fresh tmp dir, and is killed in the fixture's
finaliser (its ``/var/run/dpdk/<prefix>`` directory is removed too), also when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import struct
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.vhost_frontend import (
    INDIRECT_MAX,
    USERSPACE_ADDR,
    VHOST_USER_F_PROTOCOL_FEATURES,
    VHOST_USER_GET_FEATURES,
    VHOST_USER_GET_QUEUE_NUM,
    VHOST_USER_PROTOCOL_F_MQ,
    VHOST_USER_PROTOCOL_F_REPLY_ACK,
    VIRTIO_F_ANY_LAYOUT,
    VIRTIO_F_VERSION_1,
    VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
    VRING_DESC_F_INDIRECT,
    VRING_DESC_F_NEXT,
    VRING_USED_F_NO_NOTIFY,
    VhostUserFrontend,
    vring_need_event,
)

TESTPMD = shutil.which("dpdk-testpmd")
DST = bytes.fromhex("020000000001")
SRC = bytes.fromhex("020000000002")

needs_testpmd = pytest.mark.skipif(TESTPMD is None, reason="dpdk-testpmd not installed (apt-get install dpdk)")


def make_frames(n: int, size: int = 74, tag: int = 0) -> list[bytes]:
    """``n`` distinct Ethernet frames DST <- SRC (ethertype 0x88b5, local experimental) of ``size`` bytes."""
    frames = []
    for i in range(n):
        body = struct.pack("!HI", tag, i) + bytes((i + k) & 0xFF for k in range(size - 20))
        frames.append(DST + SRC + b"\x88\xb5" + body)
    return frames


def swapped(frame: bytes) -> bytes:
    """What macswap makes of ``frame``."""
    return frame[6:12] + frame[0:6] + frame[12:]


class PmdProcess:
    """One dpdk-testpmd with a net_vhost0 port (vhost-user server, or client with ``client=True``)."""

    def __init__(self, tmp: str, client: bool = False, extra: list[str] | None = None) -> None:
        self.prefix = "pvtvf" + uuid.uuid4().hex[:10]
        self.sock = os.path.join(tmp, "vhost.sock")
        self.log_path = os.path.join(tmp, "testpmd.log")
        vdev = f"net_vhost0,iface={self.sock},queues=1" + (",client=1" if client else "")
        cmd = [TESTPMD, "--no-pci", "--no-huge", "-m", "256", f"--file-prefix={self.prefix}", "--vdev", vdev,
               "--", "--total-num-mbufs=16384", "--forward-mode=macswap", "--auto-start", *(extra or [])]
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        # non-interactive testpmd runs until a line arrives on stdin: keep the pipe open
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_socket(self, timeout: float = 10.0) -> None:
        """Wait until testpmd (server mode) has created its socket."""
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None:
                raise RuntimeError(f"testpmd exited ({self.proc.returncode}):\n{self.output()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"testpmd did not create {self.sock}:\n{self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        """testpmd's log so far."""
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self) -> None:
        """Kill testpmd (SIGTERM, then SIGKILL) and remove its runtime directory and socket."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        self.log.close()
        shutil.rmtree(os.path.join("/var/run/dpdk", self.prefix), ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.sock)


@pytest.fixture
def tmpdir_vf() -> Iterator[str]:
    """A fresh directory for sockets and logs, removed afterwards."""
    d = tempfile.mkdtemp(prefix="pvt-vf-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def testpmd(tmpdir_vf: str) -> Iterator[Callable[..., PmdProcess]]:
    """Factory: ``testpmd(client=False, extra=None)`` starts one; all are killed at teardown."""
    started: list[PmdProcess] = []

    def launch(client: bool = False, extra: list[str] | None = None) -> PmdProcess:
        t = PmdProcess(tmpdir_vf, client=client, extra=extra)
        started.append(t)
        if not client:
            t.wait_socket()
        return t

    try:
        yield launch
    finally:
        for t in started:
            t.stop()


def roundtrip(fe: VhostUserFrontend, frames: list[bytes], timeout: float = 5.0) -> list[bytes]:
    """Send all ``frames`` (retrying while the TX ring is full) and receive as many back."""
    got: list[bytes] = []
    sent = 0
    deadline = time.monotonic() + timeout
    while sent < len(frames):
        sent += fe.send(frames[sent:])
        got += fe.recv(timeout=0.01) if sent < len(frames) else []
        assert time.monotonic() < deadline, f"only {sent} of {len(frames)} frames queued"
    got += fe.recv(len(frames) - len(got), timeout=max(0.1, deadline - time.monotonic()))
    return got


def wait_forwarding(fe: VhostUserFrontend, timeout: float = 10.0) -> tuple[int, int]:
    """Send probe frames until one comes back: testpmd flushes (drops) what it received before its forwarding
    started (in client mode that is after our handshake; in server mode it can be too, on a loaded machine).
    Late extra probes are drained. Returns (probes sent, probes received)."""
    deadline = time.monotonic() + timeout
    probe = make_frames(1, tag=0xFFFF)
    sent = got = 0
    while True:
        back = len(fe.recv(1, timeout=0.2))
        got += back
        if back:
            break
        assert time.monotonic() < deadline, "testpmd never started forwarding"
        sent += fe.send(probe)
    got += len(fe.recv(timeout=0.3))
    return sent, got


# --- without a back-end ----------------------------------------------------------------------------------------------


def test_layout_and_views(tmpdir_vf: str) -> None:
    """Rings at the start (desc 16-, used 4-aligned), buffers after them, views sized by queue_size."""
    with VhostUserFrontend(os.path.join(tmpdir_vf, "x.sock"), queue_size=64, mem_size=1 << 20) as fe:
        assert fe.mem.dtype.name == "uint8" and fe.mem.size == 1 << 20
        ends = []
        for q in (0, 1):
            o = fe.ring_offsets(q)
            assert o["desc"] % 16 == 0 and o["used"] % 4 == 0 and o["avail"] == o["desc"] + 16 * 64
            assert o["tables"] % 16 == 0 and o["bufs"] % 4096 == 0
            assert fe.desc(q).shape == (64,) and fe.avail(q)["ring"].shape == (64,)
            assert fe.used(q)["ring"].shape == (64,)
            ends.append((o["desc"], o["used"] + 6 + 8 * 64))
            assert fe.buf_addr(q, 63) + fe.buf_size <= fe.mem.size
        assert ends[0][1] <= ends[1][0] < fe.ring_offsets(0)["tables"]
        assert fe.ring_offsets(1)["tables"] + 64 * 16 * INDIRECT_MAX <= fe.ring_offsets(0)["bufs"]
        # the views alias the shared memory
        fe.avail(1)["idx"] = 0x1234
        o = fe.ring_offsets(1)["avail"]
        assert fe.mem[o + 2] == 0x34 and fe.mem[o + 3] == 0x12
        fe.desc(0)[3] = (0xABC, 7, VRING_DESC_F_NEXT, 4)
        assert fe.mem[fe.ring_offsets(0)["desc"] + 3 * 16] == 0xBC
        assert USERSPACE_ADDR != 0
    fe.close()  # idempotent
    with pytest.raises(ValueError):
        VhostUserFrontend("/nonexistent", queue_size=256, mem_size=1 << 16)
    with pytest.raises(ValueError):
        VhostUserFrontend("/nonexistent", queue_size=100)


def test_need_event() -> None:
    """vring_need_event follows the spec formula, including wrap-around."""
    assert vring_need_event(0, 1, 0)
    assert not vring_need_event(5, 3, 0)
    assert vring_need_event(5, 6, 0)
    assert vring_need_event(0xFFFF, 2, 0xFFFE)
    assert not vring_need_event(0xFFFF, 0xFFFF, 0xFFFE)


def test_timeouts(tmpdir_vf: str) -> None:
    """start() gives up promptly when no back-end is there, in both directions."""
    with VhostUserFrontend(os.path.join(tmpdir_vf, "none.sock")) as fe:
        t = time.monotonic()
        with pytest.raises(TimeoutError):
            fe.start(timeout=0.3)
        assert time.monotonic() - t < 2
    path = os.path.join(tmpdir_vf, "listen.sock")
    with VhostUserFrontend(path, listen=True) as fe:
        assert os.path.exists(path)
        with pytest.raises(TimeoutError):
            fe.start(timeout=0.3)
    assert not os.path.exists(path)


# --- against dpdk-testpmd ------------------------------------------------------------------------------------------


@needs_testpmd
@pytest.mark.integration
def test_handshake(testpmd: Callable[..., PmdProcess]) -> None:
    """The full handshake completes and negotiates what testpmd offers and we want; stop() returns ring bases."""
    pmd = testpmd()
    with VhostUserFrontend(pmd.sock) as fe:
        fe.start()
        assert fe.offered_features >> VHOST_USER_F_PROTOCOL_FEATURES & 1
        for bit in (VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_RING_F_EVENT_IDX,
                    VHOST_USER_F_PROTOCOL_FEATURES):
            assert fe.has(bit), bit
        assert not fe.has(VIRTIO_RING_F_INDIRECT_DESC)  # not asked for
        assert fe.features & ~fe.offered_features == 0
        assert fe.has_protocol(VHOST_USER_PROTOCOL_F_REPLY_ACK) and fe.has_protocol(VHOST_USER_PROTOCOL_F_MQ)
        assert fe.queue_num is not None and fe.queue_num >= 1
        assert fe.hdr_len == 12
        # raw messages after the handshake
        body = fe.message(VHOST_USER_GET_FEATURES)
        assert body is not None and struct.unpack("<Q", body)[0] == fe.offered_features
        body = fe.message(VHOST_USER_GET_QUEUE_NUM)
        assert body is not None and struct.unpack("<Q", body)[0] == fe.queue_num
        # the RX buffers were all posted before the kick
        assert int(fe.avail(0)["idx"]) == fe.queue_size
        probes_sent, probes_back = wait_forwarding(fe)
        got = roundtrip(fe, make_frames(8))
        assert len(got) == 8
        bases = fe.stop()
        assert bases == {0: 8 + probes_back, 1: 8 + probes_sent}
    assert pmd.proc.poll() is None, "testpmd died"
    log = pmd.output()
    assert "virtio is now ready for processing" in log
    assert "guest virtual  addr: 0x7f0000000000" in log


@needs_testpmd
@pytest.mark.integration
@pytest.mark.parametrize("mrg_rxbuf", [True, False], ids=["mrg", "nomrg"])
@pytest.mark.parametrize("event_idx", [True, False], ids=["eventidx", "noeventidx"])
def test_macswap_roundtrip(testpmd: Callable[..., PmdProcess], mrg_rxbuf: bool, event_idx: bool) -> None:
    """Frames sent come back, in order, with the MACs swapped; more than a ring's worth, so indexes wrap."""
    pmd = testpmd()
    with VhostUserFrontend(pmd.sock, queue_size=128, mrg_rxbuf=mrg_rxbuf, event_idx=event_idx) as fe:
        fe.start()
        assert fe.has(VIRTIO_NET_F_MRG_RXBUF) == mrg_rxbuf
        assert fe.has(VIRTIO_RING_F_EVENT_IDX) == event_idx
        probes_sent, probes_back = wait_forwarding(fe)   # a CI run lost the first frames to testpmd's start
        for rnd in range(3):
            frames = make_frames(300, size=60 + 17 * rnd, tag=rnd)
            got = roundtrip(fe, frames)
            assert len(got) == len(frames)
            assert got == [swapped(f) for f in frames]
        bases = fe.stop()
        assert bases == {0: 900 + probes_back, 1: 900 + probes_sent}


@needs_testpmd
@pytest.mark.integration
@pytest.mark.parametrize("event_idx", [True, False], ids=["eventidx", "noeventidx"])
def test_rx_interrupts(testpmd: Callable[..., PmdProcess], event_idx: bool) -> None:
    """After recv() the frontend asks for an interrupt on the next used RX entry (used_event with EVENT_IDX,
    avail flags 0 without), and testpmd writes the call eventfd for each single frame."""
    pmd = testpmd()
    with VhostUserFrontend(pmd.sock, event_idx=event_idx) as fe:
        fe.start()
        _, probes_back = wait_forwarding(fe)
        for i in range(20):
            assert fe.send(make_frames(1, tag=i)) == 1
            readable, _, _ = select.select([fe.call_fd(0)], [], [], 2.0)
            assert readable, f"no RX interrupt for frame {i}"
            assert fe.recv(1) == [swapped(make_frames(1, tag=i)[0])]
        if event_idx:
            assert int(fe.avail(0)["used_event"]) == int(fe.used(0)["idx"]) == 20 + probes_back
        else:
            assert int(fe.avail(0)["flags"]) == 0
            assert int(fe.used(1)["flags"]) & VRING_USED_F_NO_NOTIFY  # testpmd polls: no TX kicks wanted


@needs_testpmd
@pytest.mark.integration
def test_indirect_descriptors(testpmd: Callable[..., PmdProcess]) -> None:
    """testpmd's vhost offers INDIRECT_DESC; TX and RX then go through 2-entry indirect tables."""
    pmd = testpmd()
    with VhostUserFrontend(pmd.sock, indirect=True) as fe:
        fe.start()
        wait_forwarding(fe)
        assert fe.offered_features >> VIRTIO_RING_F_INDIRECT_DESC & 1
        assert fe.has(VIRTIO_RING_F_INDIRECT_DESC)
        assert int(fe.desc(0)[0]["flags"]) == VRING_DESC_F_INDIRECT
        frames = make_frames(600, size=1514)
        got = roundtrip(fe, frames)
        assert got == [swapped(f) for f in frames]
        assert int(fe.desc(1)[fe.used(1)["ring"][0]["id"]]["flags"]) == VRING_DESC_F_INDIRECT


@needs_testpmd
@pytest.mark.integration
def test_legacy_header(testpmd: Callable[..., PmdProcess]) -> None:
    """Without VERSION_1, ANY_LAYOUT and MRG_RXBUF the header is 10 bytes and sits in its own TX descriptor."""
    pmd = testpmd()
    features = (1 << VIRTIO_RING_F_EVENT_IDX) | (1 << VHOST_USER_F_PROTOCOL_FEATURES)
    with VhostUserFrontend(pmd.sock, features=features) as fe:
        fe.start()
        assert not fe.has(VIRTIO_F_VERSION_1) and not fe.has(VIRTIO_F_ANY_LAYOUT)
        assert fe.hdr_len == 10
        wait_forwarding(fe)
        frames = make_frames(50, size=100)
        assert roundtrip(fe, frames) == [swapped(f) for f in frames]


@needs_testpmd
@pytest.mark.integration
def test_no_protocol_features(testpmd: Callable[..., PmdProcess]) -> None:
    """Without VHOST_USER_F_PROTOCOL_FEATURES the rings start enabled on kick (no SET_VRING_ENABLE)."""
    pmd = testpmd()
    with VhostUserFrontend(pmd.sock, protocol_features=False) as fe:
        fe.start()
        assert not fe.has(VHOST_USER_F_PROTOCOL_FEATURES) and fe.protocol_features == 0 and fe.queue_num is None
        wait_forwarding(fe)   # a CI run got nothing back: without SET_VRING_ENABLE testpmd may start a little later
        frames = make_frames(40)
        assert roundtrip(fe, frames) == [swapped(f) for f in frames]
    assert "VHOST_USER_SET_VRING_ENABLE" not in pmd.output()


@needs_testpmd
@pytest.mark.integration
@pytest.mark.parametrize("mrg_rxbuf", [True, False], ids=["mrg", "nomrg"])
def test_large_frames(testpmd: Callable[..., PmdProcess], mrg_rxbuf: bool) -> None:
    """Frames larger than one buffer: TX uses descriptor chains; with MRG_RXBUF, RX joins num_buffers > 1
    (without it, a frame larger than an RX buffer cannot be delivered and testpmd drops it)."""
    pmd = testpmd()
    with VhostUserFrontend(pmd.sock, mrg_rxbuf=mrg_rxbuf) as fe:
        fe.start()
        wait_forwarding(fe)   # a CI run once got nothing back from frames sent right after the handshake
        frames = make_frames(20, size=5000)
        if mrg_rxbuf:
            used_before = int(fe.used(0)["idx"])
            got = roundtrip(fe, frames)
            assert got == [swapped(f) for f in frames]
            # 12 + 5000 bytes in 2048-byte buffers: num_buffers == 3
            assert int(fe.used(0)["idx"]) - used_before == 20 * 3
        else:
            assert fe.send(frames) == 20
            assert fe.recv(timeout=0.5) == []
        small = make_frames(5, size=64, tag=9)
        assert roundtrip(fe, small) == [swapped(f) for f in small]


@needs_testpmd
@pytest.mark.integration
def test_ring_full(testpmd: Callable[..., PmdProcess]) -> None:
    """One send() of more frames than descriptors queues exactly queue_size; all come back."""
    pmd = testpmd()
    with VhostUserFrontend(pmd.sock, queue_size=64) as fe:
        fe.start()
        wait_forwarding(fe)
        frames = make_frames(80)
        assert fe.send(frames) == 64
        got = fe.recv(64, timeout=5)
        assert got == [swapped(f) for f in frames[:64]]
        assert roundtrip(fe, frames[64:]) == [swapped(f) for f in frames[64:]]


@needs_testpmd
@pytest.mark.integration
def test_listen_mode(testpmd: Callable[..., PmdProcess], tmpdir_vf: str) -> None:
    """listen=True: testpmd as vhost-user client (client=1) connects to our socket; traffic flows."""
    path = os.path.join(tmpdir_vf, "vhost.sock")
    with VhostUserFrontend(path, listen=True) as fe:
        pmd = testpmd(client=True)
        fe.start(timeout=10)
        wait_forwarding(fe)
        frames = make_frames(100)
        got = roundtrip(fe, frames)
        assert got == [swapped(f) for f in frames], pmd.output()
    assert not os.path.exists(path)


@needs_testpmd
@pytest.mark.integration
def test_hostile_descriptors_do_not_crash_us(testpmd: Callable[..., PmdProcess]) -> None:
    """post_raw with addresses outside the region, absurd lengths, loops and bad indirect tables: the test
    process survives (what testpmd does with them is not asserted)."""
    pmd = testpmd()
    with VhostUserFrontend(pmd.sock, queue_size=64) as fe:
        fe.start()
        wait_forwarding(fe)
        assert roundtrip(fe, make_frames(4)) == [swapped(f) for f in make_frames(4)]
        fe.post_raw(1, 10, [(0xDEAD_0000_0000, 100, 0, 0)])
        fe.post_raw(1, 11, [(fe.mem.size - 8, 4096, 0, 0)])  # runs off the end of the region
        fe.post_raw(1, 12, [(fe.buf_addr(1, 12), 0xFFFF_FFFF, 0, 0)])
        fe.post_raw(1, 13, [(fe.buf_addr(1, 13), 64, VRING_DESC_F_NEXT, 13)])  # chain loops on itself
        fe.post_raw(1, 14, [(0xFFFF_FFFF_FFFF_F000, 32, VRING_DESC_F_INDIRECT, 0)])  # indirect table outside
        fe.kick(1)
        time.sleep(0.3)
        fe.post_raw(0, 3, [(0x1_0000_0000_0000, 2048, 2, 0)])  # RX buffer outside the region
        fe.set_avail_idx(1, int(fe.avail(1)["idx"]) + 40)  # publishes stale ring entries
        fe.kick(0)
        fe.kick(1)
        time.sleep(0.3)
        fe.mem[-1] = 0x5A  # our mapping is still fine
        assert int(fe.mem[-1]) == 0x5A
    # testpmd's fate is not asserted (DPDK 22.11 stalls the TX queue at an untranslatable descriptor)
