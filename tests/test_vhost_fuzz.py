"""Fuzzing the vhost-user port with hypothesis: protocol sessions and guest rings (issue 15).

* **Protocol**: random sessions of vhost-user messages (known and unknown requests, random flags,
  structured, truncated and oversized payloads, 0..9 fds of every kind: eventfds, pipes, files,
  sockets, directories, memfds of any size up to 2**62, sealed memfds, the session's own socket),
  with or without a valid handshake first. After every message a probe (GET_QUEUE_NUM) must be
  answered or the connection closed: the port never hangs. A closed session leaves a reason in
  ``error``; a request the port does not implement is never acknowledged as done. Afterwards the
  port's thread lives, every fd, mapping and memory guard the session cost is released, and a
  well-behaved guest on the same port exchanges frames with another port.
* **Rings**: after a valid handshake, random descriptor tables, avail rings and indirect tables
  (addresses inside, at the edge of, straddling and outside the memory, wrapping 2**64; lengths,
  flags, ``next`` indices and avail index jumps) are written into the guest's memfd, which has
  canary-filled guard zones before and after the region the memory table announces. A model of
  the virtio rules predicts each case: the frames forwarded (byte for byte) or the named counter
  of the reset, and every byte the switch may write. Checked: the counters, the frames the other
  guests receive, the guest memory byte for byte, the canaries, the pool (no canary bytes) and
  ``memguard`` (no bus error).
* **Through the daemon**: the same generators against ``pyvswitch run``, with a canary ping between
  two veth hosts on the same bridge, and a guest that makes its call eventfd blocking: the
  daemon's pid and fd count stay the same and the canary is answered throughout.
* **Regressions** of what the fuzzing found: a memory table whose spans wrap mmap's size_t
  (SIGSEGV), a refused memory table that left one ring running on the old offsets, eventfds a
  guest makes blocking again (every port stopped), and a guest flooding the switch's log.

The generators take their choices from a ``Chooser``: hypothesis here (shrinkable, derandomized
for CI), a seeded ``random.Random`` in the daemon test and in ``python -m bench soak-vhost``,
which runs the same cases for a long time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import random
import select
import socket
import struct
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends import memguard
from backends.port import (
    GUEST_BAD_ADDRESS,
    GUEST_BAD_CHAIN,
    GUEST_BAD_DESCRIPTOR,
    GUEST_BAD_INDEX,
    GUEST_FD_BLOCKED,
    PORT_RESETS,
    RX_OVERSIZE,
    RX_PACKETS,
    TX_ERROR,
    TX_PACKETS,
    TX_QUEUE_FULL,
)
from backends.vhost_user import MAX_PAYLOAD, OFFERED_FEATURES, OFFERED_PROTOCOL_FEATURES, VhostUserPort
from backends.virtq import F_ADDRESS, F_CHAIN, F_DESCRIPTOR, F_INDEX, FAULT_COUNTER, MAX_CHAIN_BYTES, MAX_QUEUE_SIZE
from tests.netutil import Canary, unique
from tests.switchutil import Switch
from tests.test_vhost import VBridge, exchange, wait_for
from tests.vhost_frontend import (
    DESC_DTYPE,
    INDIRECT_MAX,
    USERSPACE_ADDR,
    VHOST_USER_F_PROTOCOL_FEATURES,
    VHOST_USER_GET_QUEUE_NUM,
    VHOST_USER_NEED_REPLY_MASK,
    VHOST_USER_SET_MEM_TABLE,
    VHOST_USER_VERSION,
    VIRTIO_F_ANY_LAYOUT,
    VIRTIO_F_VERSION_1,
    VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
    VRING_DESC_F_INDIRECT,
    VRING_DESC_F_NEXT,
    VRING_DESC_F_WRITE,
    VhostUserFrontend,
)
from vswitch.hostnet import HostNet
from vswitch.vlan import VlanConfig

T = TypeVar("T")
TX, RX = 1, 0
FUZZ_MEM = 4 << 20          # the fuzzed guest's memory (the region in the memory table)
GUARD = 64 << 10            # canary zones before and after it in the memory file
CANARY = b"!OUTSIDE"        # their filling; guest data never contains it (its bytes are all >= 0x80)
SLOT = 2048                 # pool slot size of the bridges under test
VLAN = 200                  # the vhost ports' access VLAN (canary hosts of the daemon tests use another)
COUNTER_NAMES = {GUEST_BAD_ADDRESS: "guest_bad_address", GUEST_BAD_CHAIN: "guest_bad_chain",
                 GUEST_BAD_INDEX: "guest_bad_index", GUEST_BAD_DESCRIPTOR: "guest_bad_descriptor"}
FAULT_NAME = {code: COUNTER_NAMES[counter] for code, counter in FAULT_COUNTER.items() if counter in COUNTER_NAMES}
FAULT_NAME[-1] = "reset_not_predicted"        # UNPREDICTABLE (below)


# ---------------------------------------------------------------- where choices come from


class Chooser:
    """The source of every choice a generator makes; subclasses draw from hypothesis or ``random``."""

    def integer(self, lo: int, hi: int) -> int:
        """An integer in ``lo..hi`` (hypothesis shrinks it towards ``lo``)."""
        raise NotImplementedError

    def blob(self, size: int) -> bytes:
        """``size`` arbitrary bytes."""
        raise NotImplementedError

    def pick(self, options: Sequence[T]) -> T:
        """One of ``options`` (shrinks towards the first)."""
        return options[self.integer(0, len(options) - 1)]

    def chance(self, percent: int) -> bool:
        """True ``percent`` % of the time (shrinks towards False)."""
        return self.integer(0, 99) >= 100 - percent


class DrawChooser(Chooser):
    """Choices drawn by hypothesis (``st.data()``)."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def integer(self, lo: int, hi: int) -> int:
        """See ``Chooser``."""
        return self.data.draw(st.integers(lo, hi))

    def blob(self, size: int) -> bytes:
        """See ``Chooser``."""
        return self.data.draw(st.binary(min_size=size, max_size=size))


class RandomChooser(Chooser):
    """Choices from a seeded ``random.Random`` (the daemon test and the soak)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def integer(self, lo: int, hi: int) -> int:
        """See ``Chooser``."""
        return self.rng.randint(lo, hi)

    def blob(self, size: int) -> bytes:
        """See ``Chooser``."""
        return self.rng.randbytes(size)


# ---------------------------------------------------------------- file descriptors of every kind

FD_KINDS = ("eventfd", "memfd", "eventfd-blocking", "pipe-read", "pipe-write", "file", "socket", "memfd-sealed",
            "directory", "devnull", "own-socket")
MEMFD_SIZES = (FUZZ_MEM, 0, 4096, 1 << 20, (2 << 20) + 4096, 1 << 40, 1 << 62)
F_ADD_SEALS, F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE = 1033, 1, 2, 4, 8


class FdKit:
    """File descriptors of many kinds for one hostile session; ``close()`` closes every one it made."""

    def __init__(self) -> None:
        self._fds: list[int] = []

    def _keep(self, *fds: int) -> int:
        self._fds.extend(fds)
        return fds[0]

    def make(self, kind: str, size: int, own: int) -> int:
        """A new fd of ``kind`` (a memfd of ``size`` bytes; ``own-socket`` is ``own``, not made here)."""
        if kind == "own-socket":
            return own
        if kind == "eventfd":
            return self._keep(os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC))
        if kind == "eventfd-blocking":
            return self._keep(os.eventfd(0, os.EFD_CLOEXEC))
        if kind in ("pipe-read", "pipe-write"):
            r, w = os.pipe2(os.O_CLOEXEC)
            return self._keep(r, w) if kind == "pipe-read" else self._keep(w, r)
        if kind == "file":
            fd = self._keep(os.open(tempfile.gettempdir(), os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600))
            os.ftruncate(fd, size % (1 << 30))
            return fd
        if kind == "socket":
            a, b = socket.socketpair()
            return self._keep(a.detach(), b.detach())
        if kind == "memfd":
            fd = self._keep(os.memfd_create("fuzz-mem", os.MFD_CLOEXEC))
            os.ftruncate(fd, size)
            return fd
        if kind == "memfd-sealed":
            fd = self._keep(os.memfd_create("fuzz-sealed", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING))
            os.ftruncate(fd, FUZZ_MEM)
            fcntl.fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)
            return fd
        if kind == "directory":
            return self._keep(os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        if kind == "devnull":
            return self._keep(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
        raise ValueError(kind)

    def close(self) -> None:
        """Close every fd made."""
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []

    def __enter__(self) -> FdKit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- protocol sessions

GET_FEATURES, SET_FEATURES, SET_OWNER, RESET_OWNER, SET_MEM_TABLE = 1, 2, 3, 4, 5
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, GET_VRING_BASE = 8, 9, 10, 11
SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR = 12, 13, 14
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, SET_VRING_ENABLE, SEND_RARP, NET_SET_MTU = 15, 16, 18, 19, 20
KNOWN_REQUESTS = [r for r in range(1, 21) if r != VHOST_USER_GET_QUEUE_NUM]      # 17 is the probe
IMPLEMENTED = {1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 20}
TRAFFIC = -1          # a pseudo-request: the front-end sends a few frames on its TX ring
U64 = (0, 1, 1 << 63, (1 << 64) - 1, 1 << 62, 1 << 32)
RING_INDEXES = (0, 1, 2, 255, 256, (1 << 32) - 1)
ENDINGS = ("close", "truncated-header", "truncated-payload", "oversized", "bad-version")
ENDING_ERRORS = {"truncated-header": "truncated message header", "truncated-payload": "truncated message payload",
                 "oversized": f"(at most {MAX_PAYLOAD})", "bad-version": "unsupported protocol version"}


@dataclasses.dataclass
class Msg:
    """One fuzzed message: ``fds`` are ``(kind, memfd size)`` pairs, made when it is sent."""

    request: int
    flags: int
    payload: bytes
    fds: list[tuple[str, int]]


@dataclasses.dataclass
class Session:
    """A hostile front-end's session: a handshake first or not, messages, and how it ends."""

    handshake: bool
    messages: list[Msg]
    end: str = "close"
    end_arg: int = 0


@dataclasses.dataclass
class SessionResult:
    """What a session did: fuzzed messages sent, whether the port closed it, requests it refused."""

    sent: int = 0
    reset: bool = False
    refused: int = 0
    error_must_say: str = ""


def _ring_addr(c: Chooser) -> int:
    """A ring address for SET_VRING_ADDR: in the handshake's layout, at its edges, or anything."""
    fe_offsets = (0, 4096, 16 * 256, 6000, FUZZ_MEM - 16, FUZZ_MEM, FUZZ_MEM + 4096, 1, 2, 3)
    if c.chance(85):
        return USERSPACE_ADDR + c.pick(fe_offsets)
    return c.pick((0, c.integer(0, (1 << 64) - 1), (1 << 64) - 8, USERSPACE_ADDR - 16))


def _region(c: Chooser) -> bytes:
    size = c.pick((FUZZ_MEM, 4096, 1 << 20, 0, 1 << 40, 1 << 62, (1 << 64) - 1))
    gpa = c.pick((0, 4096, FUZZ_MEM, 1 << 30, (1 << 62) - 4096, 1 << 63, (1 << 64) - 4096, c.integer(0, (1 << 64) - 1)))
    uva = c.pick((USERSPACE_ADDR, 0, 1 << 63, c.integer(0, (1 << 64) - 1)))
    off = c.pick((0, 16, 4096, 8, (1 << 62) - (128 << 20) - 4096, 1 << 63))
    return struct.pack("<QQQQ", gpa, size, uva, off)


def _payload(c: Chooser, request: int) -> bytes:
    """A payload with the request's layout and chosen (often wrong) values."""
    if request in (SET_FEATURES, SET_PROTOCOL_FEATURES):
        offered = OFFERED_FEATURES if request == SET_FEATURES else OFFERED_PROTOCOL_FEATURES
        return struct.pack("<Q", c.pick((offered, 0, offered & ~(1 << VHOST_USER_F_PROTOCOL_FEATURES), 1 << 34,
                                         *U64, c.integer(0, (1 << 64) - 1))))
    if request == SET_MEM_TABLE:
        n = c.pick((1, 1, 2, 8, 0, 9, (1 << 32) - 1))
        return struct.pack("<II", n, 0) + b"".join(_region(c) for _ in range(min(n, c.integer(0, 9))))
    if request == SET_VRING_NUM:
        return struct.pack("<II", c.pick(RING_INDEXES), c.pick((256, 1, 2, MAX_QUEUE_SIZE, 0, 3, 65536,
                                                                 (1 << 32) - 1)))
    if request == SET_VRING_ADDR:
        return struct.pack("<IIQQQQ", c.pick(RING_INDEXES), c.pick((0, 1)), _ring_addr(c), _ring_addr(c),
                           _ring_addr(c), 0)
    if request in (SET_VRING_BASE, GET_VRING_BASE, SET_VRING_ENABLE):
        return struct.pack("<II", c.pick(RING_INDEXES), c.pick((0, 1, 2, 65535, 65536, (1 << 32) - 1)))
    if request in (SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR):
        return struct.pack("<Q", c.pick((0, 1, 2, 255)) | c.pick((0, 0x100, 0x200, 1 << 63)))
    if request == NET_SET_MTU:
        return struct.pack("<Q", c.pick((1500, 68, 67, 65535, 65536, 0, (1 << 64) - 1)))
    if request == SEND_RARP:
        return bytes(6) + bytes(2)
    return b""


def _msg(c: Chooser, handshake: bool) -> Msg:
    kind = c.pick(("known", "known", "known", "unknown", "random", "traffic"))
    if kind == "traffic" and handshake:
        return Msg(TRAFFIC, 0, b"", [])
    if kind == "unknown":
        request = c.integer(21, 40)
    elif kind == "random":
        request = c.integer(0, (1 << 32) - 1)
        request += request == VHOST_USER_GET_QUEUE_NUM
    else:
        request = c.pick(KNOWN_REQUESTS)
    flags = c.pick((VHOST_USER_VERSION, VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK, VHOST_USER_VERSION | 0x4,
                    VHOST_USER_VERSION | c.integer(0, (1 << 32) - 1) & ~3))
    payload = _payload(c, request) if c.chance(75) else c.blob(c.pick((0, 1, 7, 8, 12, 40, 200, 1000)))
    if c.chance(15):
        payload = payload[:c.integer(0, len(payload))]                  # truncated layout, complete message
    if c.chance(5):
        payload += bytes(MAX_PAYLOAD - len(payload))                    # the largest payload allowed
    if request == SET_MEM_TABLE and c.chance(70):
        n = struct.unpack_from("<I", payload)[0] if len(payload) >= 4 else 1
        fds = [("memfd", c.pick(MEMFD_SIZES)) for _ in range(min(n, 9))]
    else:
        fds = [(c.pick(FD_KINDS), c.pick(MEMFD_SIZES)) for _ in range(c.pick((0, 0, 1, 1, 2, 8, 9)))]
    return Msg(request, flags, payload, fds)


def gen_session(c: Chooser, max_messages: int = 10) -> Session:
    """A hostile session: a valid handshake or not, up to ``max_messages`` fuzzed messages, an ending."""
    handshake = c.chance(50)
    messages = [_msg(c, handshake) for _ in range(c.integer(1, max_messages))]
    end = c.pick(ENDINGS)
    end_arg = {"truncated-header": c.integer(1, 11), "truncated-payload": c.integer(0, 7),
               "oversized": c.pick((MAX_PAYLOAD + 1, 1 << 20, (1 << 32) - 1)), "bad-version": c.pick((0, 2, 3))}
    return Session(handshake, messages, end, end_arg.get(end, 0))


def _frames(n: int, src: int, dst: int, size: int = 60, seed: int = 0) -> list[bytes]:
    """``n`` untagged frames whose payload bytes are all >= 0x80 (never a canary)."""
    body = bytes(0x80 | ((seed + k * 7) & 0x7F) for k in range(size - 14))
    return [bytes([2, 0, 0, 0, 0, dst, 2, 0, 0, 0, 0, src]) + b"\x88\xb5" + bytes([0x80 | i & 0x7F]) + body[1:]
            for i in range(n)]


def _probe(fe: VhostUserFrontend, what: str) -> list[tuple[int, int, bytes]] | None:
    """GET_QUEUE_NUM, then the replies up to its answer; None when the port closed the connection."""
    try:
        fe.send_bytes(struct.pack("<III", VHOST_USER_GET_QUEUE_NUM, VHOST_USER_VERSION, 0))
    except OSError:
        return None
    replies = []
    while True:
        try:
            req, flags, body = fe.read_message()
        except TimeoutError:
            raise AssertionError(f"the port stopped answering (no reply to a probe in {fe.timeout} s) "
                                 f"after {what}") from None
        except OSError:
            return None
        if req == VHOST_USER_GET_QUEUE_NUM:
            assert body == struct.pack("<Q", 1), body
            return replies
        replies.append((req, flags, body))


def _closed_by_peer(fe: VhostUserFrontend, timeout: float) -> bool:
    """Whether the back-end closes the connection within ``timeout`` (replies before that are read)."""
    fd = fe.socket_fd()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return False
        try:
            fe.read_message()
        except TimeoutError:
            return False
        except OSError:
            return True


def run_session(path: str, s: Session, kit: FdKit, timeout: float = 5.0) -> SessionResult:
    """Play ``s`` against the port listening at ``path``; raises AssertionError when the port misbehaves."""
    res = SessionResult()
    fe = VhostUserFrontend(path, mem_size=FUZZ_MEM)
    try:
        if s.handshake:
            fe.start(timeout)
        else:
            fe.connect(timeout)
        for m in s.messages:
            if m.request == TRAFFIC:
                fe.send(_frames(8, 0xE, 0xFF))
                fe.kick(TX)
                continue
            fds = [kit.make(kind, size, fe.socket_fd()) for kind, size in m.fds]
            what = f"request {m.request} (flags {m.flags:#x}, {len(m.payload)} bytes, fds {[k for k, _ in m.fds]})"
            try:
                fe.send_bytes(struct.pack("<III", m.request, m.flags, len(m.payload)) + m.payload, fds)
            except OSError:
                res.reset = True
                break
            res.sent += 1
            replies = _probe(fe, what)
            if replies is None:
                res.reset = True
                break
            for req, flags, body in replies:
                assert flags & 0x4 and req == m.request, (what, req, flags, body)
                nack = len(body) == 8 and req not in (1, 11, 15) and struct.unpack("<Q", body)[0] != 0
                res.refused += nack
                if m.request not in IMPLEMENTED:
                    assert nack, f"{what}: the port acknowledged a request it does not implement ({body!r})"
        if not res.reset and s.end != "close":
            header = struct.pack("<III", SET_FEATURES, VHOST_USER_VERSION, 8)
            if s.end == "truncated-header":
                raw = header[:s.end_arg]
            elif s.end == "truncated-payload":
                raw = header + bytes(s.end_arg)
            elif s.end == "oversized":
                raw = struct.pack("<III", SET_FEATURES, VHOST_USER_VERSION, s.end_arg) + bytes(8)
            else:
                raw = struct.pack("<III", GET_FEATURES, s.end_arg, 0)
            with contextlib.suppress(OSError):
                fe.send_bytes(raw)
                if s.end.startswith("truncated"):
                    fe.shutdown_write()
            assert _closed_by_peer(fe, timeout), f"the port kept a session open after a {s.end} message"
            res.reset = True
            res.error_must_say = ENDING_ERRORS[s.end]
    finally:
        fe.close()
    return res


# ---------------------------------------------------------------- guest rings: layout, cases, model


@dataclasses.dataclass
class Layout:
    """The fuzzed guest's negotiated features and where its rings are (GPAs == offsets in ``mem``)."""

    size: int
    hdr_len: int
    mrg: bool
    indirect: bool
    event_idx: bool
    off: list[dict[str, int]]
    mem: int = FUZZ_MEM
    slot: int = SLOT

    @property
    def data_lo(self) -> int:
        """Start of the buffer areas: nothing the switch reads as a ring lies above."""
        return self.off[RX]["bufs"]

    def used_range(self, q: int) -> tuple[int, int]:
        """Bytes of queue ``q``'s used ring (the switch writes there)."""
        u = self.off[q]["used"]
        return u, u + 6 + 8 * self.size


def gen_features(c: Chooser) -> dict[str, object]:
    """Features and queue size of a fuzzed guest (front-end keyword arguments)."""
    features = (1 << VIRTIO_F_ANY_LAYOUT) | (1 << VHOST_USER_F_PROTOCOL_FEATURES)
    features |= (1 << VIRTIO_F_VERSION_1) if c.chance(80) else 0
    features |= (1 << VIRTIO_NET_F_MRG_RXBUF) if c.chance(60) else 0
    features |= (1 << VIRTIO_RING_F_EVENT_IDX) if c.chance(60) else 0
    features |= (1 << VIRTIO_RING_F_INDIRECT_DESC) if c.chance(60) else 0
    return {"features": features, "queue_size": c.pick((256, 16, 4, 64, 2, 1))}


PATTERN_BASE = (np.arange(FUZZ_MEM, dtype=np.int64) * 7 % 128).astype(np.uint8)


def fuzz_guest(path: str, kw: dict[str, object], seed: int, timeout: float = 5.0) -> tuple[VhostUserFrontend, Layout]:
    """A guest with canary zones around its memory and patterned buffers, handshake done."""
    fe = VhostUserFrontend(path, mem_size=FUZZ_MEM, guard_bytes=GUARD, **kw)  # type: ignore[arg-type]
    try:
        canary = np.frombuffer(CANARY * (GUARD // len(CANARY)), np.uint8)
        fe.file_mem[:GUARD] = canary
        fe.file_mem[GUARD + FUZZ_MEM:] = canary
        lo = fe.ring_offsets(RX)["bufs"]
        fe.mem[lo:] = (PATTERN_BASE[lo:] + seed) & 0x7F | 0x80
        fe.start(timeout)
    except BaseException:
        fe.close()
        raise
    lay = Layout(size=fe.queue_size, hdr_len=fe.hdr_len, mrg=fe.has(VIRTIO_NET_F_MRG_RXBUF),
                 indirect=fe.has(VIRTIO_RING_F_INDIRECT_DESC), event_idx=fe.has(VIRTIO_RING_F_EVENT_IDX),
                 off=[fe.ring_offsets(q) for q in (RX, TX)])
    return fe, lay


def guards_intact(fe: VhostUserFrontend) -> bool:
    """Whether the canary zones around the guest's region are untouched."""
    canary = np.frombuffer(CANARY * (GUARD // len(CANARY)), np.uint8)
    return bool(np.array_equal(fe.file_mem[:GUARD], canary)
                and np.array_equal(fe.file_mem[GUARD + FUZZ_MEM:], canary))


@dataclasses.dataclass
class RingCase:
    """A fuzzed ring: descriptor slots, indirect tables, avail entries from position ``base`` and the new index."""

    q: int
    base: int
    descs: dict[int, tuple[int, int, int, int]]
    tables: list[tuple[int, list[tuple[int, int, int, int]]]]
    heads: list[int]
    avail_idx: int


TX_TOTALS = (60, 64, 14, 100, 1514, 0, 1, 13, 1000, 2036, 2048, 2049, 4000, 9000)     # frame bytes after the header
RX_TOTALS = (2048, 1526, 60, 12, 10, 100, 1514, 4096, 0)                               # receive buffer bytes
HOSTILE_LENGTHS = (MAX_CHAIN_BYTES, MAX_CHAIN_BYTES + 1, MAX_CHAIN_BYTES + 12, (1 << 32) - 1, FUZZ_MEM, 0, 1)
ADDRESS_KINDS = ("inside", "edge", "straddle", "outside", "high", "wrap", "ring")
FLAG_MUTATIONS = (VRING_DESC_F_WRITE, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, 0xFFFF, 0x8, 0x8000)


def _address(c: Chooser, lay: Layout, length: int, lo: int, kind: str) -> int:
    """A buffer address of ``kind`` for ``length`` bytes; "inside" ones lie in ``lo..mem``."""
    mem = lay.mem
    if kind == "inside":
        return lo + c.integer(0, max(0, mem - lo - length)) if length <= mem - lo else lo
    if kind == "edge":
        return c.pick((mem - length, mem, mem - 1, lo)) if length <= mem else mem
    if kind == "straddle":
        return mem - c.integer(1, max(1, min(length, mem) - 1)) if length > 1 else mem
    if kind == "outside":
        return mem + c.pick((0, 1, 4096, GUARD, 1 << 20, 1 << 40))
    if kind == "high":
        return c.pick((1 << 63, (1 << 63) - 1, (1 << 63) - 4096, (1 << 62)))
    if kind == "wrap":
        return (1 << 64) - c.pick((1, 16, 4096, 8192))
    # "ring": a ring structure of the guest (TX cases only: the switch reads it, or writes its TX used ring)
    return c.pick((lay.off[TX]["desc"], lay.off[TX]["avail"], lay.off[TX]["used"], lay.off[RX]["desc"], 0))


def _split(c: Chooser, total: int, parts: int) -> list[int]:
    """``total`` bytes cut into ``parts`` lengths (some may be 0)."""
    cuts = sorted(c.integer(0, total) for _ in range(parts - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]


def gen_ring_case(c: Chooser, lay: Layout, q: int, base: int = 0, max_chains: int = 16, max_descs: int = 4,
                  hostile: int = 60) -> RingCase:
    """Descriptor chains for queue ``q`` (TX: read-only buffers; RX: write-only) from avail position ``base``.

    ``hostile`` % of the rings get one hostile change (two thirds of them) or several.
    """
    size = lay.size
    mode = c.pick(("one-bad", "one-bad", "wild")) if c.chance(hostile) else "clean"
    write = VRING_DESC_F_WRITE if q == RX else 0
    lo = lay.data_lo if q == RX else lay.off[RX]["tables"]
    n_chains = c.integer(1, min(size, max_chains))
    start, stride = c.integer(0, size - 1), c.integer(0, size) | 1
    order = [(start + i * stride) % size for i in range(size)]      # a permutation of the slots
    spare = size - n_chains                                           # slots beyond one per chain
    descs: dict[int, tuple[int, int, int, int]] = {}
    tables: list[tuple[int, list[tuple[int, int, int, int]]]] = []
    heads: list[int] = []
    used = 0
    for _ in range(n_chains):
        indirect = lay.indirect and c.chance(30)
        n = c.integer(1, max_descs) if indirect else 1 + c.integer(0, min(max_descs - 1, spare))
        total = c.pick(RX_TOTALS if q == RX else TX_TOTALS) + (lay.hdr_len if q == TX else 0)
        bufs = [[_address(c, lay, ln, lo, "inside"), ln, write, 0] for ln in _split(c, total, n)]
        slots = [order[used]] if indirect else order[used:used + n]
        used += len(slots)
        spare -= len(slots) - 1
        links = list(range(1, n)) if indirect else slots[1:]
        for b, nxt in zip(bufs, links, strict=False):
            b[2] |= VRING_DESC_F_NEXT
            b[3] = nxt
        if indirect:
            table = lay.off[q]["tables"] + slots[0] * 16 * INDIRECT_MAX
            tables.append((table, [tuple(b) for b in bufs]))  # type: ignore[misc]
            descs[slots[0]] = (table, 16 * n, VRING_DESC_F_INDIRECT, 0)
        else:
            for slot, b in zip(slots, bufs, strict=True):
                descs[slot] = tuple(b)  # type: ignore[assignment]
        heads.append(slots[0])
    case = RingCase(q, base, descs, tables, heads, (base + n_chains) & 0xFFFF)
    for _ in range({"clean": 0, "one-bad": 1, "wild": c.integer(2, 6)}[mode]):
        _mutate(c, lay, case, ADDRESS_KINDS[:-1] if q == RX else ADDRESS_KINDS, lo)
    return case


def _mutate(c: Chooser, lay: Layout, case: RingCase, kinds: Sequence[str], lo: int) -> None:
    """One hostile change: an address, length, flag, ``next``, head, avail index or indirect table."""
    what = c.pick(("address", "length", "flags", "next", "head", "avail-idx", "indirect"))
    entries: list[tuple[dict | list, int]] = [(case.descs, s) for s in sorted(case.descs)]
    entries += [(t, k) for _, t in case.tables for k in range(len(t))]
    holder, key = c.pick(entries)
    addr, length, flags, nxt = holder[key]
    if what == "address":
        addr = _address(c, lay, length, lo, c.pick(kinds))
    elif what == "length":
        length = c.pick(HOSTILE_LENGTHS)
    elif what == "flags":
        flags ^= c.pick(FLAG_MUTATIONS)
    elif what == "next":
        flags |= VRING_DESC_F_NEXT
        nxt = c.pick((key, 0, lay.size - 1, lay.size, 0xFFFF, c.integer(0, 0xFFFF)))
    elif what == "head":
        case.heads[c.integer(0, len(case.heads) - 1)] = c.pick((lay.size, 0xFFFF, c.integer(0, 0xFFFF)))
        return
    elif what == "avail-idx":
        jump = c.pick((lay.size + 1, 0xFFFF, len(case.heads) + lay.size, lay.size, c.integer(0, 0xFFFF)))
        case.avail_idx = (case.base + jump) & 0xFFFF
        return
    else:
        flags = VRING_DESC_F_INDIRECT | c.pick((0, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE))
        table = lay.off[case.q]["tables"]
        addr = c.pick((table, table + 8, table + 4, lay.mem - 16, lay.mem - 8, lay.mem, 1 << 63))
        length = c.pick((16, 32, 0, 8, 24, 16 * MAX_QUEUE_SIZE + 16, 16 * INDIRECT_MAX))
    holder[key] = (addr & ((1 << 64) - 1), length & 0xFFFFFFFF, flags & 0xFFFF, nxt & 0xFFFF)


def write_case(fe: VhostUserFrontend, case: RingCase) -> None:
    """Put the case into guest memory (descriptors, tables, avail entries; the avail index last)."""
    desc = fe.desc(case.q)
    for slot, d in case.descs.items():
        desc[slot] = d
    for gpa, entries in case.tables:
        view = fe.mem[gpa:gpa + 16 * len(entries)].view(DESC_DTYPE)
        for k, d in enumerate(entries):
            view[k] = d
    ring = fe.avail(case.q)["ring"]
    for i, h in enumerate(case.heads[:fe.queue_size]):
        ring[(case.base + i) % fe.queue_size] = h
    fe.set_avail_idx(case.q, case.avail_idx)


def _u16(snap: bytes | bytearray, off: int) -> int:
    return struct.unpack_from("<H", snap, off)[0]


def _desc_at(snap: bytes | bytearray, off: int) -> tuple[int, int, int, int]:
    return struct.unpack_from("<QIHH", snap, off)


def _bad_indirect(lay: Layout, indirect: bool, addr: int, length: int, flags: int) -> int:
    """The fault an INDIRECT descriptor earns (0 when the table is usable)."""
    if indirect or not lay.indirect or flags & VRING_DESC_F_NEXT or length == 0 or length % 16 \
            or length > 16 * MAX_QUEUE_SIZE or addr & 7:
        return F_DESCRIPTOR
    if addr >= 1 << 63 or addr >= lay.mem or addr + length > lay.mem:
        return F_ADDRESS
    return 0


#: A frame the model cannot predict byte for byte: its chain reads the TX used ring, which the switch writes meanwhile.
ANY_FRAME = b"<any frame>"
#: The model's "fault" when a chain's descriptors themselves lie in the TX used ring (see ``TxExpect``).
UNPREDICTABLE = -1


@dataclasses.dataclass
class TxExpect:
    """The model's verdict on a TX case: frames in order (None: oversize, dropped), then the fault (0: none).

    ``UNPREDICTABLE`` as the fault: the next chain's indirect table lies in the TX used ring, which the
    switch writes while it walks the ring; from there on anything the rules allow may happen.
    """

    frames: list[bytes | None]
    fault: int

    @property
    def processed(self) -> int:
        """Chains returned to the guest (forwarded or oversize)."""
        return len(self.frames)


def model_tx(snap: bytes, lay: Layout, last: int = 0) -> TxExpect:
    """What the switch must make of the guest's TX ring from avail position ``last``, per the virtio rules."""
    o = lay.off[TX]
    pending = (_u16(snap, o["avail"] + 2) - last) & 0xFFFF
    out: list[bytes | None] = []
    if pending > lay.size:
        return TxExpect(out, F_INDEX)
    for k in range(pending):
        head = _u16(snap, o["avail"] + 4 + 2 * ((last + k) & (lay.size - 1)))
        if head >= lay.size:
            return TxExpect(out, F_INDEX)
        r = _walk_tx(snap, lay, o["desc"], head)
        if isinstance(r, int):
            return TxExpect(out, r)
        out.append(r)
    return TxExpect(out, 0)


def _walk_tx(snap: bytes, lay: Layout, desc: int, head: int) -> bytes | None | int:
    """One TX chain: the frame (None when longer than a slot, ANY_FRAME when unpredictable) or a fault code."""
    table, table_n, seen, indirect = desc, lay.size, 1, False
    addr, length, flags, nxt = _desc_at(snap, table + 16 * head)
    skip, total, parts, volatile = lay.hdr_len, 0, [], False
    used_lo, used_hi = lay.used_range(TX)
    while True:
        if flags & VRING_DESC_F_INDIRECT:
            bad = _bad_indirect(lay, indirect, addr, length, flags)
            if bad:
                return bad
            if addr < used_hi and used_lo < addr + length:
                return UNPREDICTABLE
            table, table_n, seen, indirect = addr, length >> 4, 1, True
            addr, length, flags, nxt = _desc_at(snap, table)
            continue
        if flags & VRING_DESC_F_WRITE:
            return F_DESCRIPTOR
        if addr >= 1 << 63:
            return F_ADDRESS
        if total + length > MAX_CHAIN_BYTES + lay.hdr_len:
            return F_CHAIN
        if length:
            if addr >= lay.mem or addr + length > lay.mem:
                return F_ADDRESS
            chunk = snap[addr:addr + length]
            if skip >= length:
                skip -= length
            else:
                volatile |= addr + skip < used_hi and used_lo < addr + length
                chunk, skip = chunk[skip:], 0
                total += len(chunk)
                parts.append(chunk)
        if not flags & VRING_DESC_F_NEXT:
            break
        seen += 1
        if nxt >= table_n:
            return F_INDEX
        if seen > table_n:
            return F_CHAIN
        addr, length, flags, nxt = _desc_at(snap, table + 16 * nxt)
    if total > lay.slot:
        return None
    return ANY_FRAME if volatile else b"".join(parts)


DELIVERED, DROP_FULL, DROP_TOO_BIG = "delivered", "queue-full", "too-big"


class RxModel:
    """The switch's receive path into the guest's RX ring, one frame per burst, on a copy of guest memory."""

    def __init__(self, lay: Layout) -> None:
        self.mem = bytearray()
        self.lay = lay
        self.last = 0
        self.used = 0

    def load(self, snap: bytes) -> None:
        """Guest memory as the guest left it before the next frames (the positions carry on)."""
        self.mem = bytearray(snap)

    def frame(self, frame: bytes) -> str | int:
        """Deliver one frame: DELIVERED, DROP_FULL, DROP_TOO_BIG or a fault code (guest memory updated)."""
        lay, mem = self.lay, self.mem
        o = lay.off[RX]
        size, mask = lay.size, lay.size - 1
        avail_idx = _u16(mem, o["avail"] + 2)
        if (avail_idx - self.last) & 0xFFFF > size:
            return F_INDEX
        data = bytes(lay.hdr_len) + frame
        remaining, pos, n_bufs = len(data), 0, 0
        pkt_last, pkt_used = self.last, self.used
        nb_at: list[tuple[int, int]] = []       # (guest address, header byte 10 or 11)
        while remaining > 0:
            if (avail_idx - self.last) & 0xFFFF == 0:
                break
            head = _u16(mem, o["avail"] + 4 + 2 * (self.last & mask))
            if head >= size:
                return F_INDEX
            self.last += 1
            n_bufs += 1
            table, table_n, seen, indirect, written = o["desc"], size, 1, False, 0
            addr, length, flags, nxt = _desc_at(mem, table + 16 * head)
            while True:
                if flags & VRING_DESC_F_INDIRECT:
                    bad = _bad_indirect(lay, indirect, addr, length, flags)
                    if bad:
                        return bad
                    table, table_n, seen, indirect = addr, length >> 4, 1, True
                    addr, length, flags, nxt = _desc_at(mem, table)
                    continue
                if not flags & VRING_DESC_F_WRITE:
                    return F_DESCRIPTOR
                if addr >= 1 << 63:
                    return F_ADDRESS
                if written + length > MAX_CHAIN_BYTES + lay.hdr_len:
                    return F_CHAIN
                while length > 0 and remaining > 0:
                    if addr >= lay.mem:
                        return F_ADDRESS
                    nb = min(lay.mem - addr, length, remaining)
                    mem[addr:addr + nb] = data[pos:pos + nb]
                    nb_at += [(addr + i - pos, i) for i in (10, 11) if pos <= i < pos + nb and lay.hdr_len == 12]
                    addr, length, remaining, written, pos = addr + nb, length - nb, remaining - nb, written + nb, \
                        pos + nb
                if remaining == 0 or not flags & VRING_DESC_F_NEXT:
                    break
                seen += 1
                if nxt >= table_n:
                    return F_INDEX
                if seen > table_n:
                    return F_CHAIN
                addr, length, flags, nxt = _desc_at(mem, table + 16 * nxt)
            self.used += 1
            if not lay.mrg and remaining > 0:
                break
        if remaining > 0:
            self.last, self.used = pkt_last, pkt_used
            return DROP_FULL if lay.mrg or n_bufs == 0 else DROP_TOO_BIG
        for at, i in nb_at:
            mem[at] = (n_bufs >> (8 * (i - 10))) & 0xFF
        return DELIVERED


def gen_rx_frames(c: Chooser, max_frames: int = 6) -> list[bytes]:
    """Broadcast frames another guest sends into the fuzzed guest's RX ring (payload bytes >= 0x80)."""
    out = []
    for i in range(c.integer(1, max_frames)):
        size = c.pick((60, 14, 64, 100, 1000, 1500, 1514))
        out.append(b"\xff" * 6 + bytes([2, 0, 0, 0, 0, 0xA]) + b"\x88\xb5"
                   + bytes(0x80 | ((i * 31 + k) & 0x7F) for k in range(size - 14)))
    return out


def _untag(frame: bytes) -> bytes:
    """A frame without its 802.1Q tag (the switch may strip or keep one)."""
    return frame[:12] + frame[16:] if frame[12:14] == b"\x81\x00" and len(frame) >= 18 else frame


def is_subsequence(got: Sequence[bytes], expected: Sequence[bytes | None]) -> bool:
    """Whether ``got`` are some of ``expected``, in order (tags aside; ANY_FRAME matches any frame)."""
    want = iter(e if e is ANY_FRAME else _untag(e) for e in expected if e is not None)
    return all(any(w is ANY_FRAME or _untag(g) == w for w in want) for g in got)


def drain(fe: VhostUserFrontend) -> list[bytes]:
    """Every frame waiting in a well-behaved guest's RX ring."""
    out: list[bytes] = []
    while True:
        got = fe.recv(timeout=0)
        if not got:
            return out
        out += got


def changed_outside(mem: np.ndarray, expected: bytes | bytearray, allowed: Sequence[tuple[int, int]]) -> list[int]:
    """Offsets where guest memory differs from ``expected`` outside the ``allowed`` ranges (first 10)."""
    diff = np.flatnonzero(mem != np.frombuffer(expected, np.uint8))
    for lo, hi in allowed:
        diff = diff[(diff < lo) | (diff >= hi)]
    return diff[:10].tolist()


def pool_has_canary(data: np.ndarray) -> bool:
    """Whether any pool slot holds 8 canary bytes in a row (in any rotation)."""
    raw = data.tobytes()
    return any(raw.find((CANARY * 2)[i:i + len(CANARY)]) >= 0 for i in range(len(CANARY)))


# ---------------------------------------------------------------- running ring cases against a port


@dataclasses.dataclass
class CaseResult:
    """What one ring case did, and what went wrong (``problems`` empty when all held)."""

    chains: int = 0                # chains the switch had to look at (processed + the faulting one)
    fault: int = 0                 # the model's fault (F_*, or UNPREDICTABLE: reset, cause not predicted), 0: none
    exact: bool = True             # the model predicted every chain (counters must match exactly)
    outcomes: dict[str, int] = dataclasses.field(default_factory=dict)
    problems: list[str] = dataclasses.field(default_factory=list)

    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to outcome ``key``."""
        self.outcomes[key] = self.outcomes.get(key, 0) + n


class RingFuzzer:
    """Runs ring cases on one port with two well-behaved guests (``a``, ``b``) on the same bridge.

    A case is one fuzzed guest: a handshake, up to ``rounds`` fuzzed TX rings, then as many RX
    rings fed by ``a``, until the port resets it. ``counters`` (in-process ports) gives the port's
    counter array and ``barrier`` waits for the datapath's current iteration, for exact checks;
    without them (the daemon) the guest's used rings and the connection tell what happened, and a
    frame from ``a`` to ``b`` (whose MACs the bridge knows) marks that earlier iterations are over.
    """

    def __init__(self, path: str, a: VhostUserFrontend, b: VhostUserFrontend,
                 counters: Callable[[], np.ndarray] | None = None, barrier: Callable[[], None] | None = None,
                 disconnected: Callable[[], bool] | None = None, timeout: float = 10.0) -> None:
        self.path, self.a, self.b = path, a, b
        self.counters, self.barrier, self.disconnected = counters, barrier, disconnected
        self.timeout = timeout
        self.hostile = 60
        self._marks = 0

    def teach(self) -> None:
        """Let the bridge learn ``a``'s and ``b``'s MACs (02:..:0a, 02:..:0b): markers then reach only ``b``."""
        self.b.send(_frames(1, 0xB, 0xA, seed=1))
        self.a.recv(1, timeout=2)
        self.a.send(_frames(1, 0xA, 0xB, seed=2))
        self.b.recv(1, timeout=2)

    def sync(self) -> list[bytes]:
        """Wait until the datapath finished what it was doing; returns the frames ``b`` got meanwhile."""
        if self.barrier is not None:
            self.barrier()
            return drain(self.b)
        got: list[bytes] = []
        for _ in range(3):
            self._marks += 1
            mark = bytes([2, 0, 0, 0, 0, 0xB, 2, 0, 0, 0, 0, 0xA]) + b"\x88\xb5mark" + struct.pack("<Q", self._marks)
            self.a.send([mark.ljust(60, b"\0")])
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                for f in self.b.recv(timeout=0.05):
                    if f == mark.ljust(60, b"\0"):
                        return got
                    got.append(f)
            self.teach()        # a fuzzed frame taught the bridge that b is elsewhere
        raise AssertionError("the marker from a never reached b")

    def _wait(self, what: str, check: Callable[[], bool], res: CaseResult) -> bool:
        deadline = time.monotonic() + self.timeout
        while not check():
            if time.monotonic() > deadline:
                res.problems.append(f"timed out waiting for {what}")
                return False
            time.sleep(0.0005)
        return True

    def run(self, c: Chooser, rounds: int = 2, max_chains: int = 16, max_descs: int = 4, max_frames: int = 6,
            hostile: int = 60) -> CaseResult:
        """A fresh fuzzed guest through TX rounds, then RX rounds, until it is reset; every check."""
        self.hostile = hostile
        kw = gen_features(c)
        seed = c.integer(0, 127)
        res = CaseResult()
        self.sync()                   # frames of whatever ran before (a protocol session's traffic) are through
        drain(self.a)
        drain(self.b)
        fe, lay = fuzz_guest(self.path, kw, seed)
        try:
            before = self.counters().copy() if self.counters else None
            last = 0
            for _ in range(c.integer(1, rounds)):
                last = self._tx(c, fe, lay, res, last, max_chains, max_descs)
                if res.fault or res.problems:
                    break
            rx = RxModel(lay)
            for _ in range(c.integer(1, rounds) if not (res.fault or res.problems) else 0):
                self._rx(c, fe, lay, res, rx, max_chains, max_descs, max_frames)
                if res.fault or res.problems:
                    break
            if not res.fault and _closed_by_peer(fe, 0.002):
                res.problems.append("the port reset a guest that kept the rules")
            if not guards_intact(fe):
                res.problems.append("the canary zones around the guest's memory were written")
            if before is not None and self.barrier is not None:
                self.barrier()
                self._check_counters(before, self.counters(), res)
        finally:
            fe.close()
        if self.disconnected is not None:
            self._wait("the port to drop the guest", self.disconnected, res)
        return res

    def _tx(self, c: Chooser, fe: VhostUserFrontend, lay: Layout, res: CaseResult, last: int, max_chains: int,
            max_descs: int) -> int:
        """One fuzzed TX ring from avail position ``last``; returns the next position."""
        case = gen_ring_case(c, lay, TX, last, max_chains, max_descs, self.hostile)
        write_case(fe, case)
        snap = fe.mem.tobytes()
        exp = model_tx(snap, lay, last)
        res.chains += exp.processed + (exp.fault != 0)
        res.count("tx_frames", sum(f is not None for f in exp.frames))
        res.count("tx_oversize", sum(f is None for f in exp.frames))
        used = fe.used(TX)
        done = (last + exp.processed) & 0xFFFF
        fe.kick(TX)
        if exp.fault == UNPREDICTABLE:
            return self._tx_unpredictable(fe, lay, res, snap, exp, last)
        self._wait(f"{exp.processed} TX chains used", lambda: int(used["idx"]) == done, res)
        if exp.fault:
            res.fault = exp.fault
            res.count(FAULT_NAME[exp.fault])
            if not self._wait("the port to reset the guest", lambda: _closed_by_peer(fe, 0.05), res):
                res.problems.append(f"the model expected {FAULT_NAME[exp.fault]}")
        got_b = self.sync()
        for who, got in (("a", drain(self.a)), ("b", got_b + drain(self.b))):
            if not is_subsequence(got, exp.frames):
                res.problems.append(f"guest {who} received frames that are not the fuzzed guest's TX buffers")
        stray = changed_outside(fe.mem, snap, [lay.used_range(TX)])
        if stray:
            res.problems.append(f"TX: guest memory changed outside the used ring at {stray}")
        if int(used["idx"]) != done:
            res.problems.append(f"TX used index {int(used['idx'])}, model {done}")
        return done

    def _tx_unpredictable(self, fe: VhostUserFrontend, lay: Layout, res: CaseResult, snap: bytes, exp: TxExpect,
                          last: int) -> int:
        """The model's prefix, then whatever the rules allow: wait until the ring is still, check what is certain."""
        res.exact = False
        res.count("tx_unpredictable")
        used = fe.used(TX)
        self._wait(f"{exp.processed} TX chains used", lambda: (int(used["idx"]) - last) & 0xFFFF >= exp.processed,
                   res)
        got_b: list[bytes] = []
        state: tuple[int, bool] | None = None
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            got_b += self.sync()
            now = (int(used["idx"]), _closed_by_peer(fe, 0.01))
            if now == state:
                break
            state = now
        assert state is not None
        n = (state[0] - last) & 0xFFFF
        res.chains += n - exp.processed
        if state[1]:
            res.fault = UNPREDICTABLE
            res.count(FAULT_NAME[UNPREDICTABLE])
        else:
            res.chains -= 1         # counted as the faulting chain; the switch took it
        for who, got in (("a", drain(self.a)), ("b", got_b + drain(self.b))):
            if not is_subsequence(got, exp.frames + [ANY_FRAME] * (lay.size + 1)):
                res.problems.append(f"guest {who} received frames that are not the fuzzed guest's TX buffers")
        stray = changed_outside(fe.mem, snap, [lay.used_range(TX)])
        if stray:
            res.problems.append(f"TX: guest memory changed outside the used ring at {stray}")
        return state[0]

    def _rx(self, c: Chooser, fe: VhostUserFrontend, lay: Layout, res: CaseResult, model: RxModel,
            max_chains: int, max_descs: int, max_frames: int) -> None:
        """One fuzzed RX ring, filled by frames from ``a`` one at a time."""
        write_case(fe, gen_ring_case(c, lay, RX, model.last & 0xFFFF, max_chains, max_descs, self.hostile))
        model.load(fe.mem.tobytes())
        used = fe.used(RX)
        for f in gen_rx_frames(c, max_frames):
            out = model.frame(f)
            res.chains += 1
            res.count(FAULT_NAME[out] if isinstance(out, int) else f"rx_{out}")
            drain(self.b)
            if not self.a.send([f]):
                res.problems.append("the well-behaved guest could not send")
                return
            if not self._wait("the other guest to see the frame", lambda: len(drain(self.b)) > 0, res):
                return
            if isinstance(out, int):
                res.fault = out
                if not self._wait(f"the reset ({FAULT_NAME[out]})", lambda: _closed_by_peer(fe, 0.05), res):
                    res.problems.append(f"the model expected {FAULT_NAME[out]}")
                break
            if out == DELIVERED:
                self._wait("the used index", lambda: int(used["idx"]) == model.used & 0xFFFF, res)
        self.sync()                   # the last burst into this guest is over
        stray = changed_outside(fe.mem, model.mem, [lay.used_range(RX)])
        if stray:
            res.problems.append(f"RX: guest memory differs from the model at {stray}")

    def _check_counters(self, before: np.ndarray, after: np.ndarray, res: CaseResult) -> None:
        d = after - before
        o = res.outcomes
        if not res.exact:           # a reset, if any, has exactly one named reason; the predicted frames went out
            resets = int(res.fault != 0)
            if d[PORT_RESETS] != resets or sum(int(d[c]) for c in COUNTER_NAMES) != resets:
                res.problems.append(f"resets {d[PORT_RESETS]}, named {[int(d[c]) for c in COUNTER_NAMES]}, "
                                    f"expected {resets}")
            if d[RX_PACKETS] < o.get("tx_frames", 0):
                res.problems.append(f"rx_packets {d[RX_PACKETS]} < {o}")
            return
        want = {RX_PACKETS: o.get("tx_frames", 0), RX_OVERSIZE: o.get("tx_oversize", 0),
                TX_PACKETS: o.get(f"rx_{DELIVERED}", 0), TX_ERROR: o.get(f"rx_{DROP_TOO_BIG}", 0),
                PORT_RESETS: int(res.fault != 0)}
        for counter in COUNTER_NAMES:
            want[counter] = int(res.fault != 0 and FAULT_COUNTER[res.fault] == counter)
        for counter, n in want.items():
            if d[counter] != n:
                res.problems.append(f"counter {counter}: {d[counter]}, model {n} ({o}, fault {res.fault})")
        if d[TX_QUEUE_FULL] < o.get(f"rx_{DROP_FULL}", 0):
            res.problems.append(f"tx_queue_full {d[TX_QUEUE_FULL]} < {o}")


# ---------------------------------------------------------------- resources a session may leak


def fd_count(pid: int | str = "self") -> int:
    """Open fds of a process."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def session_fd_count() -> int:
    """This process's open fds of the kinds a vhost-user session holds: sockets, eventfds and memfds (other
    fds of the test process, e.g. a file another thread opens for a moment, are not the session's)."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        n += target.startswith(("socket:", "anon_inode:[eventfd]", "/memfd:"))
    return n


def resources() -> tuple[int, int, int]:
    """This process's session fds (sockets, eventfds, memfds), mappings of fuzz memfds (only the switch maps
    them) and memory guards in use."""
    with open("/proc/self/maps") as f:
        maps = sum("memfd:fuzz" in line for line in f)
    return session_fd_count(), maps, int(np.count_nonzero(memguard._table[1:, memguard.G_END]))


# ---------------------------------------------------------------- in-process tests


class InprocLab:
    """A bridge of three dpdkvhostuser ports (VLAN 200): ``vz`` for the fuzzed guests, ``va``/``vb`` well-behaved."""

    def __init__(self, tmp: str) -> None:
        self.vb = VBridge(tmp)
        vlan = VlanConfig(tag=VLAN)
        self.port: VhostUserPort = self.vb.add("vz", vlan)
        self.vb.add("va", vlan)
        self.vb.add("vb", vlan)
        self.path = os.path.join(tmp, "vz")
        self.a = self.vb.connect("va")
        self.b = self.vb.connect("vb")
        self.good_session()
        self.fuzzer = RingFuzzer(self.path, self.a, self.b, counters=lambda: self.port.counters,
                                 barrier=lambda: self.vb.br.dp.call(lambda: None), disconnected=self.idle)
        self.base = resources()

    def idle(self) -> bool:
        """No front-end on the fuzzed port."""
        return self.port.status()["status"] == "disconnected"

    def good_session(self) -> None:
        """A well-behaved guest on ``vz`` exchanges frames with ``va``; then it leaves."""
        self.vb.br.fdb_flush()
        drain(self.a)
        fe = VhostUserFrontend(self.path, mem_size=FUZZ_MEM)
        try:
            fe.start()
            wait_for("vz link up", lambda: self.port.link_up)
            exchange(fe, self.a, 5, macs=(0xC, 0xA))
            drain(self.b)
        finally:
            fe.close()
        wait_for("vz idle", self.idle)

    def close(self) -> None:
        self.vb.close()


@pytest.fixture(scope="module")
def lab() -> Iterator[InprocLab]:
    with tempfile.TemporaryDirectory(prefix="pvt-vfuzz-") as tmp:
        before = fd_count()
        lab = InprocLab(tmp)
        try:
            yield lab
        finally:
            lab.close()
        wait_for("every fd closed with the bridge", lambda: fd_count() <= before)


#: Reproducible in CI (derandomized, no example database); VHOST_FUZZ_EXAMPLES scales both tests for longer runs.
EXAMPLES = int(os.environ.get("VHOST_FUZZ_EXAMPLES", "100"))
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=True,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                HealthCheck.filter_too_much])


@settings(FUZZ_SETTINGS, max_examples=2 * EXAMPLES)     # a session takes a few ms: twice as many
@given(data=st.data())
def test_protocol_fuzz_never_breaks_the_port(lab: InprocLab, data: st.DataObject) -> None:
    session = gen_session(DrawChooser(data))
    with FdKit() as kit:
        res = run_session(lab.path, session, kit)
    assert lab.port._thread.is_alive(), "the protocol thread died"
    wait_for("the session to end", lab.idle)
    if res.reset:
        assert lab.port.error, "the port closed a session without saying why"
        assert res.error_must_say in lab.port.error, lab.port.error
    wait_for(f"the session's fds, mappings and guards released ({lab.base})", lambda: resources() == lab.base)
    lab.good_session()                       # a well-behaved guest on the same port, frames to another port
    # and its session's fds too are released (polled: the port's thread closes them as the session ends)
    wait_for(f"the good session's fds, mappings and guards released ({lab.base})", lambda: resources() == lab.base)


@FUZZ_SETTINGS
@given(data=st.data())
def test_ring_fuzz_forwards_exactly_or_resets_with_a_named_counter(lab: InprocLab, data: st.DataObject) -> None:
    lab.vb.br.fdb_flush()
    faults = int(memguard.TOTAL[0])
    res = lab.fuzzer.run(DrawChooser(data))
    assert res.problems == [], res
    assert int(memguard.TOTAL[0]) == faults, "a bus error in guest memory"
    assert not pool_has_canary(lab.vb.br.dp.pool.data), "canary bytes from outside guest memory in the pool"
    wait_for("resources released", lambda: resources() == lab.base)
    lab.vb.br.fdb_flush()
    exchange(lab.a, lab.b, 10)                # the other guests are untouched


# ---------------------------------------------------------------- through the daemon (also the soak's lab)


class DaemonLab:
    """A bridge of a running ``pyvswitch run``: two veth hosts (VLAN 100) for a canary ping, and dpdkvhostuser
    ports ``vz`` (the fuzzed guests), ``va`` and ``vb`` (well-behaved guests) on VLAN 200."""

    PORTS = ("vz", "va", "vb")

    def __init__(self, switch: Switch, net: HostNet, stem: str, subnet: str = "10.78.0") -> None:
        self.switch, self.net = switch, net
        self.br = f"{stem}br"
        switch.vsctl("add-br", self.br)
        for i in (1, 2):
            net.add_host(f"{stem}h{i}", f"{stem}{i}", ip=f"{subnet}.{i}/24")
            switch.vsctl("add-port", self.br, f"{stem}{i}", "tag=100")
        for name in self.PORTS:
            switch.vsctl("add-port", self.br, name, "tag=200", "--", "set", "Interface", name, "type=dpdkvhostuser")
        # vx: guests that make their eventfds blocking (VLAN 300: their frames reach nobody)
        switch.vsctl("add-port", self.br, "vx", "tag=300", "--", "set", "Interface", "vx", "type=dpdkvhostuser")
        self.attack_path = os.path.join(switch.rundir, "vx")
        self.ns1, self.peer = f"{stem}h1", f"{subnet}.2"
        assert net.ping(self.ns1, self.peer, count=2, deadline=15), "the canary hosts do not reach each other"
        assert switch.proc is not None
        self.pid = switch.proc.pid
        self.path = os.path.join(switch.rundir, "vz")
        self.a, self.b = self.guest("va"), self.guest("vb")
        self.fuzzer = RingFuzzer(self.path, self.a, self.b)
        self.fuzzer.teach()
        self.good_session()
        self.fds = self.settle()

    def guest(self, name: str) -> VhostUserFrontend:
        """A well-behaved guest on port ``name``, link up."""
        fe = VhostUserFrontend(os.path.join(self.switch.rundir, name), mem_size=FUZZ_MEM)
        fe.start(10)
        self.switch.wait_for(f"{name} up", lambda: self.switch.get("Interface", name, "link_state") == "up")
        return fe

    def fdb_flush(self) -> None:
        """Forget the MACs the fuzzed guests' frames taught the bridge."""
        self.switch.appctl("fdb/flush", self.br)

    def good_session(self) -> None:
        """A well-behaved guest on ``vz`` exchanges frames with ``va``, then leaves."""
        self.fdb_flush()
        drain(self.a)
        fe = self.guest("vz")
        try:
            exchange(fe, self.a, 5, macs=(0xC, 0xA))
        finally:
            fe.close()
        drain(self.b)
        self.fuzzer.teach()

    def settle(self, timeout: float = 10.0) -> int:
        """The daemon's fd count once ``vz`` has no guest."""
        self.switch.wait_for("vz disconnected", lambda: self.switch.get("Interface", "vz", "status:status")
                             == "disconnected", timeout=timeout)
        return fd_count(self.pid)

    def statistics(self, port: str = "vz") -> dict[str, int]:
        """``Interface.statistics`` of ``port``."""
        text = self.switch.get("Interface", port, "statistics")
        return {k.strip(): int(v) for k, v in (kv.split("=") for kv in text.strip("{}").split(", ") if "=" in kv)}

    def alive(self) -> str:
        """"" when the daemon runs with its first pid and answers ovs-vsctl within seconds, else what is wrong."""
        proc = self.switch.proc
        if proc is None or proc.poll() is not None:
            return f"the daemon exited ({None if proc is None else proc.returncode})"
        if proc.pid != self.pid:
            return f"the daemon's pid changed ({self.pid} -> {proc.pid})"
        t = time.monotonic()
        if self.switch.vsctl("list-br", check=False).returncode != 0 or time.monotonic() - t > 5:
            return "ovs-vsctl got no answer within 5 s"
        return ""

    def close(self) -> None:
        """Close the well-behaved guests."""
        self.a.close()
        self.b.close()


def fd_attack(path: str, timeout: float = 120.0) -> str:
    """A guest that makes its TX call eventfd blocking and full, then asks for an interrupt.

    Returns "" when the port reset it within seconds (the switch did not wait for it), else what
    happened. ``timeout`` covers the back-off the port imposes after such a guest.
    """
    fe = VhostUserFrontend(path, mem_size=FUZZ_MEM)
    try:
        fe.start(timeout)
        fe.timeout = 5.0
        call = fe.call_fd(TX)
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(call)
        os.eventfd_write(call, 0xFFFF_FFFF_FFFF_FFFE)
        os.set_blocking(call, True)                       # the switch's copy of the fd blocks too: same file
        frame = bytes(fe.hdr_len) + _frames(1, 0xD, 0xFF)[0]
        buf = fe.buf_addr(TX, 0)
        fe.mem[buf:buf + len(frame)] = np.frombuffer(frame, np.uint8)
        fe.avail(TX)["used_event"] = fe.used(TX)["idx"]   # an interrupt for the next TX completion, please
        fe.post_raw(TX, 0, [(buf, len(frame), 0, 0)])
        fe.kick(TX)
        if not _closed_by_peer(fe, 5):
            return "the port did not reset a guest whose call eventfd blocked the switch"
        return ""
    finally:
        fe.close()


def guest_resets(stats: dict[str, int]) -> dict[str, int]:
    """The reset counters in ``Interface.statistics``."""
    return {k: v for k, v in stats.items() if k.startswith(("guest_bad_", "guest_memory")) or k == "port_resets"}


@pytest.mark.integration
def test_fuzz_through_the_daemon_leaves_it_running_and_forwarding(switch: Switch, net: HostNet) -> None:
    lab = DaemonLab(switch, net, unique("fz"))
    try:
        base = guest_resets(lab.statistics())
        expected: dict[str, int] = {}
        chains = 0
        with Canary(lab.ns1, lab.peer) as canary:
            for i in range(int(os.environ.get("VHOST_FUZZ_DAEMON_CASES", "25"))):
                res = lab.fuzzer.run(RandomChooser(1000 + i))
                assert res.problems == [], (i, res)
                chains += res.chains
                if res.fault:
                    for name in (FAULT_NAME[res.fault], "port_resets"):
                        expected[name] = expected.get(name, 0) + 1
            for i in range(int(os.environ.get("VHOST_FUZZ_DAEMON_SESSIONS", "15"))):
                with FdKit() as kit:
                    res_s = run_session(lab.path, gen_session(RandomChooser(2000 + i)), kit)
                want = res_s.error_must_say if res_s.reset else ""
                if want:
                    switch.wait_for(f"Interface.error with {want!r}",
                                    lambda want=want: want in switch.get("Interface", "vz", "error"), timeout=10)
            assert fd_attack(lab.attack_path) == ""
            canary.check("the fuzzing")
        assert lab.alive() == ""
        assert "made blocking" in switch.get("Interface", "vx", "error")
        lab.good_session()
        assert chains > 100
        # exactly the fds it had: polled, since the daemon may hold an fd for a moment (a client's connection)
        switch.wait_for(f"the daemon's fds back to {lab.fds}", lambda: fd_count(lab.pid) == lab.fds, timeout=15)
        expected.pop(FAULT_NAME[UNPREDICTABLE], None)
        for name, n in expected.items():                 # the ring cases' resets, each by its counter (the sessions
            switch.wait_for(f"statistics {name} >= {n}",  # may add resets of their own)
                            lambda name=name, n=n: lab.statistics().get(name, 0) - base.get(name, 0) >= n, timeout=20)
    finally:
        lab.close()


# ---------------------------------------------------------------- regressions of what the fuzzing found


def test_memory_table_whose_spans_overflow_the_address_space_is_refused(lab: InprocLab) -> None:
    """Regions whose mmap offsets plus sizes add up past 2**64 once wrapped mmap's size_t and mapped one region
    over the switch's own memory (MAP_FIXED beyond the reservation): the switch died with SIGSEGV."""
    mib = 1 << 20
    far = (1 << 62) - 128 * mib - 4096
    regions = [(0, 1 << 30, 0x10000000000, 0)] + [((1 << 30) + i * 2 * mib, 4096, far, far) for i in range(1, 5)]
    payload = struct.pack("<II", len(regions), 0) + b"".join(struct.pack("<QQQQ", *r) for r in regions)
    with FdKit() as kit:
        fd = kit.make("memfd", 1 << 62, -1)
        fe = VhostUserFrontend(lab.path, mem_size=FUZZ_MEM)
        try:
            fe.connect()
            fe.send_bytes(struct.pack("<III", VHOST_USER_SET_MEM_TABLE, VHOST_USER_VERSION, len(payload)) + payload,
                          [fd] * len(regions))
            assert _closed_by_peer(fe, 5)
        finally:
            fe.close()
    wait_for("the session to end", lab.idle)
    assert "bytes of address space" in lab.port.error, lab.port.error
    wait_for("resources released", lambda: resources() == lab.base)
    lab.good_session()


def test_memory_table_the_rings_do_not_fit_leaves_no_ring_running(lab: InprocLab, monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    """A new memory table that the first ring does not fit in was refused, but the second ring stayed ready with
    offsets into the old mapping until the session ended: a burst in that window read and wrote outside the new one."""
    from backends.virtq import Q_READY

    seen: list[list[int]] = []
    end_session = lab.port._end_session

    def spy(conn: socket.socket, reason: str) -> None:
        seen.append(lab.port._vq[:, Q_READY].tolist())
        end_session(conn, reason)

    monkeypatch.setattr(lab.port, "_end_session", spy)
    with FdKit() as kit:
        fe = VhostUserFrontend(lab.path, mem_size=FUZZ_MEM)
        try:
            fe.start()
            wait_for("link up", lambda: lab.port.link_up)
            fd = kit.make("memfd", 1 << 20, -1)
            region = struct.pack("<QQQQ", 0, 1 << 20, USERSPACE_ADDR + (1 << 30), 0)
            with contextlib.suppress(OSError):
                fe.message(VHOST_USER_SET_MEM_TABLE, struct.pack("<II", 1, 0) + region, [fd], need_reply=True)
            assert _closed_by_peer(fe, 5)
        finally:
            fe.close()
    wait_for("the session to end", lab.idle)
    assert "ring addresses outside the memory table" in lab.port.error, lab.port.error
    assert seen and seen[0] == [0, 0], f"rings still ready when the session was torn down: {seen}"
    monkeypatch.undo()
    wait_for("resources released", lambda: resources() == lab.base)
    lab.good_session()


@pytest.mark.parametrize("fd", ["call", "kick"])
def test_guest_that_makes_its_eventfds_blocking_cannot_stop_the_switch(fd: str) -> None:
    """The switch makes kick and call eventfds non-blocking when it gets them, but the guest shares their file
    status flags and cleared O_NONBLOCK again: a full call eventfd blocked the datapath's write, an empty kick
    eventfd its read, and every port stopped. Kicks are now read with RWF_NOWAIT; a blocked call write is broken
    into by the watchdog and resets only that guest, whose next session waits a back-off."""
    with tempfile.TemporaryDirectory(prefix="pvt-vfuzz-") as tmp:
        vb = VBridge(tmp)
        try:
            for name in ("va", "vb", "ve"):
                vb.add(name)
            a, b, evil = vb.connect("va"), vb.connect("vb"), vb.connect("ve")
            exchange(a, b, 10)
            drain(evil)
            if fd == "call":
                call = evil.call_fd(RX)
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(call)
                os.set_blocking(call, False)
                os.eventfd_write(call, 0xFFFF_FFFF_FFFF_FFFE)        # full: one more would wait for the guest
                os.set_blocking(call, True)                           # ... and the switch's copy now waits too
                evil.avail(RX)["used_event"] = evil.used(RX)["idx"]   # "interrupt me on the next frame"
                a.send(_frames(1, 0xA, 0xEE))                         # unknown destination: flooded to the guest
                t = time.monotonic()
                wait_for("the watchdog to break in", lambda: vb.port("ve").counters[PORT_RESETS] == 1, timeout=2)
                assert time.monotonic() - t < 1
            else:
                os.set_blocking(evil.kick_fd(TX), True)               # empty: a read would wait for the guest
                for i in range(20):                                   # busy traffic: every port is polled
                    a.send(_frames(200, 0xA, 0xB, seed=i))
                    b.recv(timeout=0.05)
            t = time.monotonic()
            drain(a)
            drain(b)
            fa = _frames(20, 0xA, 0xB, seed=99)
            assert a.send(fa) == 20
            assert b.recv(20, timeout=5) == fa, "forwarding stopped"
            assert time.monotonic() - t < 2
            port = vb.port("ve")
            if fd == "call":
                assert "made blocking" in port.error and "next session in 1 s" in port.error, port.error
                assert port.counters[GUEST_FD_BLOCKED] == 1 and port.counters[PORT_RESETS] == 1
                evil.close()
                t = time.monotonic()
                again = vb.connect("ve")                              # after the back-off
                assert time.monotonic() - t > 0.5
                exchange(a, again, 5, macs=(0xA, 0xE))
            else:
                assert port.counters[PORT_RESETS] == 0                # nothing waits on that fd any more
                exchange(a, evil, 5, macs=(0xA, 0xE))
        finally:
            vb.close()


def test_a_guest_cannot_flood_the_switch_log(lab: InprocLab, caplog: pytest.LogCaptureFixture) -> None:
    """Every refused or unknown request, reset and reconnection logged a line: a guest could fill the disk (and a
    daemon whose stderr nobody read stopped in write(): the fuzzing through the daemon found it). Rate-limited now."""
    from backends.vhost_user import LOG_RATE

    caplog.set_level(logging.INFO, logger="backends.vhost_user")
    t = time.monotonic()
    for _ in range(20):
        fe = VhostUserFrontend(lab.path, mem_size=FUZZ_MEM)
        try:
            fe.connect()
            for _ in range(50):
                fe.send_bytes(struct.pack("<III", 99, VHOST_USER_VERSION, 0))      # unknown: "ignoring ..."
            assert _probe(fe, "50 unknown requests") is not None
            fe.send_bytes(struct.pack("<III", SET_VRING_NUM, VHOST_USER_VERSION, 8) + struct.pack("<II", 0, 3))
            assert _closed_by_peer(fe, 5)                                          # a protocol error: reset
        finally:
            fe.close()
        wait_for("the session to end", lab.idle)
    lines = [r for r in caplog.records if "port vz" in r.getMessage()]
    assert len(lines) <= LOG_RATE[1] + LOG_RATE[0] * (time.monotonic() - t) + 2, len(lines)
    time.sleep(1.5 / LOG_RATE[0])
    lab.good_session()                # its first line says how many were left out
    assert any("suppressed (rate limit)" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("vlan", [None, 10], ids=["fast-path", "vlan-edit"])
def test_receive_buffer_over_the_chain_limit_is_refused_on_every_path(vlan: int | None) -> None:
    """A single receive buffer longer than the 128 KiB chain limit was used by the enqueue fast path but reset
    the guest (guest_bad_chain) on the slow path (a VLAN edit, an unaligned buffer): the same guest behaviour
    must get the same answer. The soak found it."""
    with tempfile.TemporaryDirectory(prefix="pvt-vfuzz-") as tmp:
        vb = VBridge(tmp)
        try:
            vb.add("va", VlanConfig(tag=vlan) if vlan else None)
            vb.add("ve", VlanConfig(trunks=(vlan,)) if vlan else None)
            a, evil = vb.connect("va"), vb.connect("ve")
            evil.desc(RX)["len"][:] = MAX_CHAIN_BYTES + 4096      # inside its 16 MiB, over the limit
            a.send(_frames(1, 0xA, 0xEE))
            port = vb.port("ve")
            wait_for("the port reset", lambda: port.counters[PORT_RESETS] == 1)
            assert port.counters[GUEST_BAD_CHAIN] == 1 and port.counters[TX_PACKETS] == 0
            assert "too long" in port.error
        finally:
            vb.close()
