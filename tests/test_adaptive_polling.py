"""The datapath thread's adaptive polling: when it busy-polls every port and when it waits in epoll.

Bursts that arrive whole and then stop (a paced sender, a ping train) must wake the thread once each: a busy poll
after each of them finds nothing and only costs CPU. A busy poll that finds nothing doubles the frames an iteration
must move to start the next one (``Datapath.busy_frames``, told to every port: vhost-user stops guest kicks only
from there); one that finds frames halves it again, down to 32. Under a flood every poll finds frames, so the thread
stays a PMD.

The ports here are scripted (each readable poll returns the next burst size of a script): how many frames a real
device hands over per wake-up depends on the scheduler, and these properties are about the loop's decisions. The
same loop over real veths is covered by ``tests/test_switching.py`` (idle sleep) and the forwarding tests.
"""

from __future__ import annotations

import collections
import os
import time

import numpy as np
import pytest

from backends.port import Port
from vswitch.datapath import BUSY_FRAMES, Datapath
from vswitch.vlan import VlanConfig, fill_vlan_map

FRAME = bytes.fromhex("020000000002" "020000000001") + b"\x08\x00" + bytes(46)


class ScriptedPort(Port):
    """Readable while its script has bursts; each poll hands over the next burst's frames (0: a poll that finds
    nothing, as a busy poll after the end of a burst)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.script: collections.deque[int] = collections.deque()
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.polls = 0
        self.told: list[int] = []

    def feed(self, *sizes: int) -> None:
        self.script.extend(sizes)
        os.eventfd_write(self.fd, 1)

    def rx_burst(self, pool, burst, start, max_n):  # noqa: ANN001, ANN201 - the Port interface
        self.polls += 1
        want = self.script.popleft() if self.script else 0
        if not self.script:
            try:
                os.eventfd_read(self.fd)
            except BlockingIOError:
                pass
        k = pool.alloc(burst, start, min(want, max_n))
        for i in range(k):
            pool.put(int(burst[start + i]), FRAME, self.port_no)
        return k

    def tx_burst(self, pool, slots, vlans, start, count):  # noqa: ANN001, ANN201
        return count

    def wakeup_fds(self) -> list[int]:
        return [self.fd]

    def set_busy_frames(self, n: int) -> None:
        self.told.append(n)

    def close(self) -> None:
        os.close(self.fd)


class SinkPort(ScriptedPort):
    """Counts what it is asked to send."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.sent = 0

    def tx_burst(self, pool, slots, vlans, start, count):  # noqa: ANN001, ANN201
        self.sent += count
        return count


@pytest.fixture
def switch() -> tuple[Datapath, ScriptedPort, SinkPort]:
    dp = Datapath("adaptive", n_slots=4096)
    br = dp.add_bridge("br0")
    src, sink = ScriptedPort("src"), SinkPort("sink")
    for port in (src, sink):
        br.attach(port)
        fill_vlan_map(br.vlan_map, port.port_no, VlanConfig(), True)
    dp.start()
    yield dp, src, sink
    dp.close()
    src.close()
    sink.close()


def _settle(dp: Datapath, src: ScriptedPort, timeout: float = 5.0) -> None:
    """Until the script is used up and the thread waits again."""
    deadline = time.monotonic() + timeout
    while (src.script or dp.call(lambda: None) is not None) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)


def test_whole_bursts_wake_the_thread_once_each_and_a_flood_makes_it_a_pmd_again(switch) -> None:  # noqa: ANN001
    dp, src, sink = switch
    assert dp.busy_frames == BUSY_FRAMES and src.told[-1] == BUSY_FRAMES

    # The first burst of 32 is followed by a busy poll that finds nothing: the threshold doubles, ports are told.
    src.feed(32)
    _settle(dp, src)
    assert sink.sent == 32
    assert dp.busy_frames == 2 * BUSY_FRAMES and src.told[-1] == 2 * BUSY_FRAMES
    polls, idle = src.polls, dp.pmd.idle_polls

    # Twenty more whole bursts of 32: each one poll, no busy poll after it (the thread waits in epoll at once).
    for _ in range(20):
        src.feed(32)
        _settle(dp, src)
    assert sink.sent == 32 * 21
    assert src.polls - polls == 20, "a busy poll followed a burst smaller than the threshold"
    assert dp.pmd.idle_polls == idle

    # A flood (full bursts, back to back): busy polls find frames, the threshold comes back to 32 while it lasts.
    told = len(src.told)
    src.feed(*([256] * 12))
    _settle(dp, src)
    assert sink.sent == 32 * 21 + 256 * 12
    assert BUSY_FRAMES in src.told[told:], f"the threshold never came back down: {src.told[told:]}"
    assert src.polls - polls - 20 >= 12


def test_the_threshold_is_bounded_by_a_port_burst(switch) -> None:  # noqa: ANN001
    dp, src, sink = switch
    for _ in range(8):        # each: a busy poll after a burst of 256 that finds nothing
        src.feed(256)
        _settle(dp, src)
    assert sink.sent == 256 * 8
    assert dp.busy_frames == 256 and max(src.told) == 256
    # ... so a full burst from one port still makes the next iteration a busy poll
    idle = dp.pmd.idle_polls
    src.feed(256)
    _settle(dp, src)
    assert dp.pmd.idle_polls == idle + 1
    assert np.all(np.array(src.told) >= BUSY_FRAMES)
