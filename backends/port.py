"""The ``Port`` interface every backend implements, and the per-port counter layout.

A port moves whole bursts between a device and the packet pool:

```
device ──rx_burst──► pool slots (burst)          queue of (slot, egress_vlan) ──tx_burst──► device
```

* ``rx_burst(pool, burst, start, max_n)`` pops free slots, copies up to ``max_n`` frames
  into them at ``pool.headroom``, writes ``burst[start:start+n]``, ``pool.meta[slot, META_LEN]``,
  ``pool.meta[slot, META_HEAD] = pool.headroom`` and ``pool.meta[slot, META_IN_PORT] = port_no``;
  returns ``n``. A frame longer than ``pool.slot_size`` is dropped (``RX_OVERSIZE``), whatever the
  headroom. It never blocks.
* ``tx_burst(pool, slots, vlans, start, count)`` sends the frames in
  ``slots[start:start+count]``, each read at its ``META_HEAD`` (which a datapath kernel may have
  moved; a slot whose head and length reach outside its row is a ``TX_ERROR``, never read);
  ``vlans[i]`` is the egress VLAN edit for entry ``i``:
  ``VLAN_KEEP`` (-1) sends the frame as it is, ``0`` sends it untagged (an 802.1Q tag
  is removed), ``1..4095`` sends it tagged with that VID (tag inserted, or its VID
  replaced; the PCP of an existing tag is kept, 0 otherwise). A push on a frame with 4 bytes
  of headroom or more may be done in the slot (``vlan_edit.push_in_place``) and is undone before
  the next entry: after ``tx_burst`` every frame is as it was (4 headroom bytes in front of it
  may have changed). It never frees slots: a
  flooded slot appears in several ports' queues. Returns how many frames were sent;
  the rest are counted in ``TX_DROPPED`` and a reason counter.
* ``wakeup_fds()`` lists file descriptors that become readable when ``rx_burst`` has work.
* ``counters`` is an ``int64[PORT_COUNTERS]`` array indexed by the constants below.
* ``status()``, ``error`` and ``on_change`` report state that changes on its own (a guest
  connecting, a port reset): ``on_change`` is called (from any thread) when they change.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import numpy as np

from backends.pool import PacketPool

VLAN_KEEP = -1

# Per-port counter layout (``Port.counters``).
RX_PACKETS = 0
RX_BYTES = 1
RX_DROPPED = 2
RX_ERRORS = 3
TX_PACKETS = 4
TX_BYTES = 5
TX_DROPPED = 6
TX_ERRORS = 7
# Named drop reasons counted by the port itself (each also adds to RX_/TX_DROPPED).
NO_FREE_SLOT = 8     # rx: the pool had no free slot
RX_OVERSIZE = 9      # rx: frame longer than a pool slot
TX_QUEUE_FULL = 10   # tx: the device queue / ring was full (EAGAIN, ENOBUFS, ring slot busy)
TX_ERROR = 11        # tx: the device refused the frame (other errno), or its slot metadata was outside the slot
RX_CSUM_FIXED = 12   # rx: L4 checksum completed in software (not a drop)
RX_GSO_SPLIT = 13    # rx: a GSO super-frame was cut into MSS-sized frames in software (not a drop)
RX_RING_FULL = 14    # rx: the kernel dropped frames because the port's receive ring was full
# A guest (vhost-user front-end) broke the virtio rules; the port was reset (each also adds to RX_/TX_ERRORS).
GUEST_BAD_ADDRESS = 15     # a buffer or table address outside the guest's memory
GUEST_BAD_CHAIN = 16       # a descriptor chain that loops or is too long
GUEST_BAD_INDEX = 17       # an avail index, head or next index outside the ring
GUEST_BAD_DESCRIPTOR = 18  # descriptor flags that make no sense (write-only buffer to send, nested indirect)
PORT_RESETS = 19           # the port's connection was reset because of one of the above
TX_VF_PASSTHROUGH = 20     # tx: sent to a passed-through VF's own port (the NIC reaches it through its PF's port)
GUEST_MEMORY_SHRUNK = 21   # the file behind the guest's memory shrank while mapped (a bus error survived)
GUEST_FD_BLOCKED = 22      # the guest made its kick/call eventfd blocking and a write to it blocked (watchdog)
PORT_COUNTERS = 24

PORT_COUNTER_NAMES = {
    "rx_packets": RX_PACKETS,
    "rx_bytes": RX_BYTES,
    "rx_dropped": RX_DROPPED,
    "rx_errors": RX_ERRORS,
    "tx_packets": TX_PACKETS,
    "tx_bytes": TX_BYTES,
    "tx_dropped": TX_DROPPED,
    "tx_errors": TX_ERRORS,
}

PORT_DROP_REASONS = {
    "no_free_slot": NO_FREE_SLOT,
    "rx_oversize": RX_OVERSIZE,
    "tx_queue_full": TX_QUEUE_FULL,
    "tx_error": TX_ERROR,
    "rx_ring_full": RX_RING_FULL,
    "guest_bad_address": GUEST_BAD_ADDRESS,
    "guest_bad_chain": GUEST_BAD_CHAIN,
    "guest_bad_index": GUEST_BAD_INDEX,
    "guest_bad_descriptor": GUEST_BAD_DESCRIPTOR,
    "guest_memory_shrunk": GUEST_MEMORY_SHRUNK,
    "guest_fd_blocked": GUEST_FD_BLOCKED,
    "port_resets": PORT_RESETS,
    "tx_vf_passthrough": TX_VF_PASSTHROUGH,
}


class PortError(Exception):
    """A port could not be opened or configured; the message says why and what to do."""


class Port(abc.ABC):
    """A switch port: a device that frames arrive from and leave through, in bursts."""

    #: OVSDB ``Interface.type`` this class implements ("system", "tap", "internal", ...).
    type: str = ""
    #: No device: the datapath hands its frames over itself (``DevicelessPort``).
    deviceless: bool = False

    def __init__(self, name: str) -> None:
        self.name = name
        #: Dense datapath port number, assigned by the bridge when the port is attached.
        self.port_no = -1
        self.counters = np.zeros(PORT_COUNTERS, dtype=np.int64)
        #: Called, from any thread, when ``status()``, ``error`` or ``link_up`` change by themselves.
        self.on_change: Callable[[], None] | None = None

    @abc.abstractmethod
    def rx_burst(self, pool: PacketPool, burst: np.ndarray, start: int, max_n: int) -> int:
        """Receive up to ``max_n`` frames into fresh pool slots; never blocks."""

    @abc.abstractmethod
    def tx_burst(
        self, pool: PacketPool, slots: np.ndarray, vlans: np.ndarray, start: int, count: int
    ) -> int:
        """Send ``slots[start:start+count]`` with per-frame egress VLAN edits; never blocks."""

    @abc.abstractmethod
    def wakeup_fds(self) -> list[int]:
        """File descriptors that are readable when ``rx_burst`` would return frames."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device and every resource the port holds; idempotent."""

    def set_busy_frames(self, n: int) -> None:
        """The datapath busy-polls every port after an iteration that moved ``n`` frames or more (a port that
        stops its wake-ups while busy, as vhost-user stops guest kicks, does so only from ``n`` frames)."""
        return None

    @property
    def ifindex(self) -> int:
        """Kernel interface index of the port's netdev, 0 when there is none."""
        return 0

    @property
    def mac(self) -> str:
        """MAC address of the port's netdev as ``aa:bb:cc:dd:ee:ff``, "" when unknown."""
        return ""

    @property
    def link_up(self) -> bool:
        """Whether the device's carrier is up."""
        return True

    @property
    def error(self) -> str:
        """What went wrong with the port at run time (``Interface.error``), "" when nothing did."""
        return ""

    def status(self) -> dict[str, str] | None:
        """``Interface.status`` for port types that fill it themselves, None for netdev-backed ports."""
        return None

    def changed(self) -> None:
        """Tell whoever watches the port (``on_change``) that its status changed."""
        cb = self.on_change
        if cb is not None:
            cb()

    def stats(self) -> dict[str, int]:
        """Counters by OVS statistics name plus the port's named drop reasons."""
        out = {name: int(self.counters[i]) for name, i in PORT_COUNTER_NAMES.items()}
        out.update({name: int(self.counters[i]) for name, i in PORT_DROP_REASONS.items()})
        return out

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} port_no={self.port_no}>"


class StatePort(Port):
    """A port whose counters and kernel state share one ``int64`` array ``_st``.

    ``Port.counters`` is ``_st[:PORT_COUNTERS]``; ``port_no`` lives in ``_st[PORT_NO_WORD]``, where
    the receive kernel reads it for every slot's metadata.
    """

    #: Index of the port number in ``_st`` (set by each subclass from its own layout).
    PORT_NO_WORD: int = -1
    _st: np.ndarray

    @property
    def port_no(self) -> int:
        """Dense datapath port number (written into every received slot's metadata)."""
        return int(self._st[self.PORT_NO_WORD])

    @port_no.setter
    def port_no(self, value: int) -> None:
        self._st[self.PORT_NO_WORD] = value


class DevicelessPort(Port):
    """A port with no device behind it (patch, tunnel): nothing is received or sent by the port itself, the
    datapath hands its frames over (to a patch peer, or encapsulated into the underlay)."""

    deviceless = True

    def rx_burst(self, pool: PacketPool, burst: np.ndarray, start: int, max_n: int) -> int:
        return 0

    def tx_burst(self, pool: PacketPool, slots: np.ndarray, vlans: np.ndarray, start: int, count: int) -> int:
        return 0

    def wakeup_fds(self) -> list[int]:
        return []

    def close(self) -> None:
        pass
