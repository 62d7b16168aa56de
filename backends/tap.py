"""Tap ports: a ``/dev/net/tun`` IFF_TAP device whose frames the switch reads and writes.

The kernel side of the tap is an ordinary netdev (a guest's NIC in QEMU's ``-netdev
tap``, or the host's view of a bridge's internal port); every frame the kernel sends
out of it is one ``read`` on the tap fd, every ``write`` is one frame received by it.
Bursts are moved by one numba kernel per call: one ``readv``/``writev`` per frame, no
Python per frame. Frames are received at the pool's headroom and sent from their
``META_HEAD``; a VLAN push with headroom is one contiguous iovec (``push_in_place``).
"""

from __future__ import annotations

import contextlib
import errno as _errno
import fcntl
import os
import struct

import numba
import numpy as np

from backends.libc import EAGAIN, ENOBUFS, EWOULDBLOCK, c_read, c_readv, c_writev, errno
from backends.pool import META_HEAD, META_IN_PORT, META_LEN, PacketPool, slot_alloc, slot_free
from backends.port import (
    NO_FREE_SLOT,
    PORT_COUNTERS,
    RX_BYTES,
    RX_DROPPED,
    RX_ERRORS,
    RX_OVERSIZE,
    RX_PACKETS,
    TX_BYTES,
    TX_DROPPED,
    TX_ERROR,
    TX_PACKETS,
    TX_QUEUE_FULL,
    PortError,
    StatePort,
)
from backends.vlan_edit import push_in_place, undo_push, vlan_iov

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFNAMSIZ = 16

#: Bytes read past a pool slot to detect (and drop) an oversize frame.
OVERFLOW_BYTES = 65536 + 64

# Port state array: counters first (``Port.counters`` is a view of them), then kernel state.
S_FD = PORT_COUNTERS
S_PORT_NO = S_FD + 1
S_RX_START = S_FD + 2
S_RX_MAX = S_FD + 3
S_TX_START = S_FD + 4
S_TX_COUNT = S_FD + 5
S_OVF_ADDR = S_FD + 6
S_OVF_LEN = S_FD + 7
S_RX_IOV = S_FD + 8          # two struct iovec (4 words)
S_HEADROOM = S_RX_IOV + 4    # where received frames start in a slot (the pool's headroom)
STATE_WORDS = S_HEADROOM + 1


@numba.njit(nogil=True, cache=True)
def tap_rx(
    st: np.ndarray, data: np.ndarray, meta: np.ndarray, free_stack: np.ndarray, free_top: np.ndarray,
    burst: np.ndarray,
) -> int:
    """Read up to ``st[S_RX_MAX]`` frames from the tap fd into fresh slots at ``burst[st[S_RX_START]:]``, each
    frame at ``st[S_HEADROOM]`` in its slot."""
    fd = st[S_FD]
    start = st[S_RX_START]
    max_n = st[S_RX_MAX]
    port_no = st[S_PORT_NO]
    head = st[S_HEADROOM]
    slot_size = data.shape[1] - head
    base = np.int64(data.ctypes.data) + head
    stride = np.int64(data.strides[0])
    iov_addr = np.int64(st.ctypes.data) + S_RX_IOV * 8
    st[S_RX_IOV + 1] = slot_size
    st[S_RX_IOV + 2] = st[S_OVF_ADDR]
    st[S_RX_IOV + 3] = st[S_OVF_LEN]
    n = 0
    for _ in range(max_n):
        s = slot_alloc(free_stack, free_top)
        if s < 0:
            # Pool exhausted: take the frame off the device anyway and count the drop.
            r = c_read(fd, st[S_OVF_ADDR], st[S_OVF_LEN])
            if r < 0:
                e = errno()
                if e != EAGAIN and e != EWOULDBLOCK:
                    st[RX_ERRORS] += 1
                break
            st[NO_FREE_SLOT] += 1
            st[RX_DROPPED] += 1
            continue
        st[S_RX_IOV] = base + s * stride
        r = c_readv(fd, iov_addr, 2)
        if r <= 0:
            slot_free(free_stack, free_top, s)
            if r < 0:
                e = errno()
                if e != EAGAIN and e != EWOULDBLOCK:
                    st[RX_ERRORS] += 1
            break
        if r > slot_size:
            slot_free(free_stack, free_top, s)
            st[RX_OVERSIZE] += 1
            st[RX_DROPPED] += 1
            continue
        meta[s, META_LEN] = r
        meta[s, META_IN_PORT] = port_no
        meta[s, META_HEAD] = head
        burst[start + n] = s
        n += 1
        st[RX_PACKETS] += 1
        st[RX_BYTES] += r
    return n


@numba.njit(nogil=True, cache=True)
def tap_tx(
    st: np.ndarray, data: np.ndarray, meta: np.ndarray, slots: np.ndarray, vlans: np.ndarray,
    scratch: np.ndarray,
) -> int:
    """Write ``slots[st[S_TX_START]:][:st[S_TX_COUNT]]`` to the tap fd with their VLAN edits."""
    fd = st[S_FD]
    i = st[S_TX_START]
    end = i + st[S_TX_COUNT]
    width = data.shape[1]
    base = np.int64(data.ctypes.data)
    stride = np.int64(data.strides[0])
    iov_addr = np.int64(scratch.ctypes.data)
    sent = 0
    while i < end:
        s = slots[i]
        head = meta[s, META_HEAD]
        length = meta[s, META_LEN]
        if head < 0 or length < 0 or head + length > width:
            st[TX_ERROR] += 1          # slot metadata outside the slot: never read past it
            st[TX_DROPPED] += 1
            i += 1
            continue
        pushed = push_in_place(data, s, head, length, vlans[i])
        if pushed >= 0:
            scratch[0] = base + s * stride + pushed
            scratch[1] = length + 4
            out_len = length + 4
            r = c_writev(fd, iov_addr, 1)
            undo_push(data, s, head)
        else:
            niov, out_len = vlan_iov(base + s * stride + head, data[s, head:], length, vlans[i], scratch, 0, 6)
            r = c_writev(fd, iov_addr, niov)
        if r < 0:
            e = errno()
            if e == EAGAIN or e == EWOULDBLOCK or e == ENOBUFS:
                st[TX_QUEUE_FULL] += end - i
                st[TX_DROPPED] += end - i
                break
            st[TX_ERROR] += 1
            st[TX_DROPPED] += 1
        else:
            sent += 1
            st[TX_PACKETS] += 1
            st[TX_BYTES] += out_len
        i += 1
    return sent


def check_ifname(name: str) -> None:
    """Raise ``PortError`` unless ``name`` is a valid Linux interface name."""
    bad = not name or len(name.encode()) >= IFNAMSIZ or name in (".", "..")
    if bad or "/" in name or any(c.isspace() for c in name):
        raise PortError(f"invalid interface name {name!r}: use 1-15 characters without '/' or spaces")


def sys_read(name: str, attr: str) -> str | None:
    """Contents of ``/sys/class/net/<name>/<attr>`` (stripped), None if unreadable."""
    try:
        with open(f"/sys/class/net/{name}/{attr}") as f:
            return f.read().strip()
    except OSError:
        return None


def set_link(name: str, *, up: bool | None = None, mac: str | None = None, mtu: int | None = None) -> None:
    """Apply admin state / MAC / MTU to netdev ``name`` through rtnetlink."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    kw: dict[str, object] = {}
    if mac is not None:
        kw["address"] = mac
    if mtu is not None:
        kw["mtu"] = int(mtu)
    if up is not None:
        kw["state"] = "up" if up else "down"
    if not kw:
        return
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            raise PortError(f"{name}: device disappeared while configuring it")
        try:
            ipr.link("set", index=idx[0], **kw)
        except NetlinkError as e:
            raise PortError(f"{name}: cannot set {sorted(kw)}: {os.strerror(e.code)}") from e


def disable_ipv6(name: str) -> None:
    """Turn IPv6 off on ``name`` so the kernel sends no router solicitations or MLD reports."""
    with contextlib.suppress(FileNotFoundError):
        with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w") as f:
            f.write("1")


def warm_up() -> None:
    """Load (or compile) the kernels with the argument types a port passes them, moving nothing."""
    st = np.zeros(STATE_WORDS, dtype=np.int64)
    st[S_FD] = -1
    pool = PacketPool(1, 64)
    one = np.zeros(1, dtype=np.int32)
    tap_rx(st, pool.data, pool.meta, pool.free_stack, pool.free_top, one)
    tap_tx(st, pool.data, pool.meta, one, one, np.zeros(8, dtype=np.int64))


class TapPort(StatePort):
    """A tap device (created, or an existing one attached to) read and written through its fd.

    ``TapPort(name, up=True, ipv6=False, mac=None, mtu=None)``: ``name`` is the netdev
    name; ``up`` brings the device administratively up; ``ipv6=False`` disables IPv6 on
    it so the host does not chatter on the port; ``mac``/``mtu`` set those attributes.
    A device created here is removed by ``close()``; an existing persistent tap is left.
    """

    type = "tap"
    PORT_NO_WORD = S_PORT_NO

    def __init__(
        self,
        name: str,
        *,
        up: bool = True,
        ipv6: bool = False,
        mac: str | None = None,
        mtu: int | None = None,
    ) -> None:
        self._st = np.zeros(STATE_WORDS, dtype=np.int64)
        self._st[S_FD] = -1
        super().__init__(name)
        self.counters = self._st[:PORT_COUNTERS]
        check_ifname(name)
        self._fd = -1
        self._tx_scratch = np.zeros(8, dtype=np.int64)
        self._overflow = np.zeros(OVERFLOW_BYTES, dtype=np.uint8)
        self._st[S_OVF_ADDR] = self._overflow.ctypes.data
        self._st[S_OVF_LEN] = OVERFLOW_BYTES
        existed = os.path.exists(f"/sys/class/net/{name}")
        if existed and not os.path.exists(f"/sys/class/net/{name}/tun_flags"):
            raise PortError(f"{self.type} port {name}: a network device of that name exists and is not a tap")
        self.created = not existed
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise PortError(f"{self.type} port {name}: cannot open /dev/net/tun: {e.strerror}") from e
        self._fd = fd
        try:
            ifr = struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI)
            try:
                fcntl.ioctl(fd, TUNSETIFF, ifr)
            except OSError as e:
                why = {
                    _errno.EBUSY: "the tap is already open in another process",
                    _errno.EINVAL: "a tun/tap of that name exists with other flags (tun mode or multiqueue?)",
                    _errno.EPERM: "permission denied (needs CAP_NET_ADMIN)",
                }.get(e.errno, e.strerror)
                raise PortError(f"{self.type} port {name}: cannot attach tap: {why}") from e
            if not ipv6:
                disable_ipv6(name)
            set_link(name, mac=mac, mtu=mtu, up=True if up else None)
            self._ifindex = int(sys_read(name, "ifindex") or 0)
            self._mac = sys_read(name, "address") or ""
        except BaseException:
            self.close()
            raise
        self._st[S_FD] = fd
        warm_up()


    def rx_burst(self, pool: PacketPool, burst: np.ndarray, start: int, max_n: int) -> int:
        """Receive up to ``max_n`` frames into fresh pool slots; never blocks."""
        if self._fd < 0:
            return 0
        st = self._st
        st[S_RX_START] = start
        st[S_RX_MAX] = max_n
        st[S_HEADROOM] = pool.headroom
        return tap_rx(st, pool.data, pool.meta, pool.free_stack, pool.free_top, burst)

    def tx_burst(
        self, pool: PacketPool, slots: np.ndarray, vlans: np.ndarray, start: int, count: int
    ) -> int:
        """Send ``slots[start:start+count]`` with per-frame egress VLAN edits; never blocks."""
        st = self._st
        if self._fd < 0:
            st[TX_DROPPED] += count
            st[TX_ERROR] += count
            return 0
        st[S_TX_START] = start
        st[S_TX_COUNT] = count
        return tap_tx(st, pool.data, pool.meta, slots, vlans, self._tx_scratch)

    def wakeup_fds(self) -> list[int]:
        """The tap fd (readable when the kernel has sent a frame out of the tap)."""
        return [self._fd] if self._fd >= 0 else []

    def close(self) -> None:
        """Close the tap fd; a tap this port created disappears with it. Idempotent."""
        fd, self._fd = self._fd, -1
        self._st[S_FD] = -1
        if fd >= 0:
            os.close(fd)

    @property
    def fd(self) -> int:
        """The tap file descriptor, -1 once closed."""
        return self._fd

    @property
    def ifindex(self) -> int:
        """Interface index (the one seen when the tap was opened if it moved to another netns)."""
        v = sys_read(self.name, "ifindex")
        if v is not None and self._visible():
            self._ifindex = int(v)
        return self._ifindex

    @property
    def mac(self) -> str:
        """MAC address of the tap netdev (the last one seen if it moved to another netns)."""
        if self._visible():
            v = sys_read(self.name, "address")
            if v:
                self._mac = v
        return self._mac

    @property
    def link_up(self) -> bool:
        """Admin up with carrier; a tap moved to another netns counts as up while it is open."""
        if self._fd < 0:
            return False
        if not self._visible():
            return True
        return sys_read(self.name, "carrier") == "1"

    def _visible(self) -> bool:
        """Whether the netdev under this name in our netns is still this tap."""
        return os.path.exists(f"/sys/class/net/{self.name}/tun_flags")
