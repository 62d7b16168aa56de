"""Port backends on real devices: veth pairs in network namespaces, tap devices.

Every device and namespace is created with a unique ``pvt-<hex>`` name and removed in a
fixture finaliser, also when a test fails. Receive and transmit run with pools of headroom 0
and ``DEFAULT_HEADROOM`` whose bytes outside the frames are a filler, so a port that reads or
writes a frame anywhere but at its ``META_HEAD`` is caught.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import select
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from backends import InternalPort, PacketPool, Port, PortError, SystemPort, TapPort, open_port
from backends.offload import complete_partial_csum, csum_sum, fix_segment
from backends.pool import DEFAULT_HEADROOM, META_HEAD, META_IN_PORT, META_LEN
from backends.port import (
    NO_FREE_SLOT,
    RX_CSUM_FIXED,
    RX_DROPPED,
    RX_GSO_SPLIT,
    RX_OVERSIZE,
    RX_PACKETS,
    TX_BYTES,
    TX_DROPPED,
    TX_ERROR,
    TX_PACKETS,
)
from backends.vlan_edit import copy_edit, push_in_place, undo_push, vlan_iov

SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_IGNORE_OUTGOING = 23
ETH_P_ALL = 3
CLONE_NEWNET = 0x40000000
TX_MODES = ["sendmmsg", "ring"]
HEADROOMS = [0, DEFAULT_HEADROOM]
FILL = 0xEE                 # every pool byte outside a frame

_libc = ctypes.CDLL(None, use_errno=True)


# ------------------------------------------------------------------ helpers


def sh(cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True)


def uniq() -> str:
    return f"pvt-{uuid.uuid4().hex[:6]}"


def ns_socket(ns: str, *args: int) -> socket.socket:
    """A socket created inside network namespace ``ns`` (usable from any thread)."""
    out: dict[str, object] = {}

    def run() -> None:
        me = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            try:
                out["sock"] = socket.socket(*args)
            except OSError as e:
                out["err"] = e
        finally:
            if _libc.setns(me, CLONE_NEWNET) != 0:
                out["err"] = OSError(ctypes.get_errno(), "setns back")
            os.close(me)
            os.close(target)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "err" in out:
        raise out["err"]  # type: ignore[misc]
    return out["sock"]  # type: ignore[return-value]


def packet_socket(dev: str, ns: str | None = None) -> socket.socket:
    """An ETH_P_ALL packet socket on ``dev`` that reports stripped VLAN tags and ignores its own sends."""
    args = (socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s = ns_socket(ns, *args) if ns else socket.socket(*args)
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    s.bind((dev, ETH_P_ALL))
    return s


def recv_frames(s: socket.socket, n: int, timeout: float = 2.0) -> list[bytes]:
    """Receive ``n`` frames as they were on the wire (a VLAN tag the kernel stripped is put back)."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([s], [], [], left)[0]:
            break
        data, anc, _, _ = s.recvmsg(65536, 1024)
        for level, kind, cdata in anc:
            if level == SOL_PACKET and kind == PACKET_AUXDATA:
                status, _ln, _snap, _mac, _net, tci, tpid = struct.unpack("IIIHHHH", cdata[:20])
                if status & 0x10:
                    tpid = tpid if status & 0x40 else 0x8100
                    data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
        out.append(data)
    return out


def assert_quiet(s: socket.socket, wait: float = 0.1) -> None:
    extra = recv_frames(s, 1, wait)
    assert extra == [], f"unexpected extra frame {extra[0].hex()}"


def rx_until(port: Port, pool: PacketPool, n: int, timeout: float = 2.0) -> list[int]:
    """Call ``rx_burst`` until ``n`` slots arrived (or timeout); return the slots."""
    burst = np.zeros(256, dtype=np.int32)
    got: list[int] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        select.select(port.wakeup_fds(), [], [], 0.02)
        k = port.rx_burst(pool, burst, 0, 256)
        got.extend(int(x) for x in burst[:k])
    return got


def make_pool(n_slots: int, slot_size: int, headroom: int) -> PacketPool:
    """A pool whose bytes are all ``FILL`` (a frame read from anywhere but its head shows it)."""
    pool = PacketPool(n_slots, slot_size, headroom=headroom)
    pool.data[:] = FILL
    return pool


def place(pool: PacketPool, slot: int, frame: bytes, head: int) -> None:
    """Put ``frame`` into ``slot`` at ``head`` (as a kernel that moved ``META_HEAD`` leaves it)."""
    pool.data[slot, head : head + len(frame)] = np.frombuffer(frame, dtype=np.uint8)
    pool.meta[slot, META_HEAD] = head
    pool.meta[slot, META_LEN] = len(frame)


def assert_received_at_headroom(pool: PacketPool, slots: list[int]) -> None:
    """Receive wrote each frame at the pool's headroom, set ``META_HEAD`` and left the headroom alone."""
    for s in slots:
        assert pool.meta[s, META_HEAD] == pool.headroom
        assert (pool.data[s, : pool.headroom] == FILL).all()


def eth(dst: str, src: str, payload: bytes, *tags: tuple[int, int]) -> bytes:
    """An Ethernet frame; ``tags`` are (tpid, tci) pairs, outermost first."""
    hdr = bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", ""))
    for tpid, tci in tags:
        hdr += struct.pack("!HH", tpid, tci)
    return hdr + payload


BCAST = "ff:ff:ff:ff:ff:ff"
SRC = "02:00:00:00:00:01"


def ref_edit(frame: bytes, vlan: int) -> bytes:
    """The egress VLAN edit as the Port interface documents it."""
    tagged = len(frame) >= 18 and frame[12:14] == b"\x81\x00"
    if vlan < 0:
        return frame
    if vlan == 0:
        return frame[:12] + frame[16:] if tagged else frame
    if tagged:
        tci = (int.from_bytes(frame[14:16], "big") & 0xF000) | vlan
        return frame[:14] + tci.to_bytes(2, "big") + frame[16:]
    return frame[:12] + b"\x81\x00" + vlan.to_bytes(2, "big") + frame[12:]


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def make_ns() -> Iterator[Callable[[], str]]:
    created: list[str] = []

    def make() -> str:
        name = uniq()
        sh(f"ip netns add {name}")
        created.append(name)
        sh(f"ip netns exec {name} sysctl -qw net.ipv6.conf.all.disable_ipv6=1")
        sh(f"ip netns exec {name} sysctl -qw net.ipv6.conf.default.disable_ipv6=1")
        sh(f"ip -n {name} link set lo up")
        return name

    yield make
    for name in created:
        sh(f"ip netns del {name}", check=False)


@pytest.fixture
def make_veth(make_ns: Callable[[], str]) -> Iterator[Callable[[], tuple[str, str, str]]]:
    """Factory: a veth pair with one end (root ns) up and the other end up inside a fresh netns."""
    created: list[str] = []

    def make() -> tuple[str, str, str]:
        ns = make_ns()
        root_end, ns_end = f"{ns}-a", f"{ns}-b"
        sh(f"ip link add {root_end} type veth peer {ns_end} netns {ns}")
        created.append(root_end)
        sh(f"sysctl -qw net.ipv6.conf.{root_end}.disable_ipv6=1")
        sh(f"sysctl -qw net.ipv4.conf.{root_end}.arp_ignore=8")     # the host stack never answers here
        sh(f"ip link set {root_end} up")
        sh(f"ip -n {ns} link set {ns_end} up")
        return ns, root_end, ns_end

    yield make
    for dev in created:
        sh(f"ip link del {dev}", check=False)


@pytest.fixture
def veth(make_veth: Callable[[], tuple[str, str, str]]) -> tuple[str, str, str]:
    return make_veth()


@pytest.fixture
def ports() -> Iterator[list[Port]]:
    """Ports appended here are closed after the test."""
    opened: list[Port] = []
    yield opened
    for p in opened:
        p.close()


@pytest.fixture
def tap_name() -> Iterator[str]:
    name = uniq()
    yield name
    sh(f"ip link del {name}", check=False)


# ------------------------------------------------------------------ unit: VLAN edit, checksums


def test_copy_edit_and_iov_match_reference() -> None:
    rng = random.Random(7)
    frames = [
        eth(BCAST, SRC, b"\x08\x00" + bytes(46)),
        eth(BCAST, SRC, b"\x08\x00" + bytes(rng.randrange(256) for _ in range(100)), (0x8100, 0xA00A)),
        eth(BCAST, SRC, b"\x86\xdd" + bytes(60), (0x88A8, 0x0010), (0x8100, 0x0020)),
    ]
    data = np.zeros((4, 256), dtype=np.uint8)
    scratch = np.zeros(8, dtype=np.int64)
    for i, f in enumerate(frames):
        data[i, : len(f)] = np.frombuffer(f, dtype=np.uint8)
        for vlan in (-1, 0, 1, 100, 4095):
            dst = np.zeros(300, dtype=np.uint8)
            n = copy_edit(data[i], len(f), vlan, dst, 3)
            assert bytes(dst[3 : 3 + n]) == ref_edit(f, vlan)
            niov, out_len = vlan_iov(data.ctypes.data + i * 256, data[i], len(f), vlan, scratch, 0, 6)
            pieces = [ctypes.string_at(int(scratch[2 * k]), int(scratch[2 * k + 1])) for k in range(niov)]
            assert b"".join(pieces) == ref_edit(f, vlan) and out_len == len(ref_edit(f, vlan))


@pytest.mark.parametrize("head", [0, 3, 4, 60, DEFAULT_HEADROOM])
def test_push_in_place_moves_only_the_macs(head: int) -> None:
    """A push with >= 4 bytes of headroom moves the MACs into it and writes nothing after them; undone, the
    frame is as before. Without headroom, or for any other edit, nothing is written."""
    rng = random.Random(head)
    frames = [
        eth(BCAST, SRC, b"\x08\x00" + rng.randbytes(46)),
        eth(BCAST, SRC, b"\x08\x00" + rng.randbytes(80), (0x8100, 0xA00A)),
        eth(BCAST, SRC, b"\x86\xdd" + rng.randbytes(60), (0x88A8, 0x0010), (0x8100, 0x0020)),
    ]
    for f in frames:
        for vlan in (-1, 0, 1, 100, 4095):
            data = np.frombuffer(rng.randbytes(2 * DEFAULT_HEADROOM + 256), dtype=np.uint8).reshape(1, -1).copy()
            data[0, head : head + len(f)] = np.frombuffer(f, dtype=np.uint8)
            before = data.copy()
            h = push_in_place(data, 0, head, len(f), vlan)
            if vlan > 0 and f[12:14] != b"\x81\x00" and head >= 4:
                assert h == head - 4
                assert bytes(data[0, h : h + len(f) + 4]) == ref_edit(f, vlan)
                assert (data[0, head + 12 :] == before[0, head + 12 :]).all()     # nothing after the MACs moved
                assert (data[0, : head - 4] == before[0, : head - 4]).all()
                undo_push(data, 0, head)
                assert (data[0, head:] == before[0, head:]).all()
            else:
                assert h == -1 and (data == before).all()


def ref_csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def test_checksum_sum_matches_reference() -> None:
    rng = random.Random(1)
    buf = np.zeros(2048, dtype=np.uint8)
    for _ in range(200):
        n = rng.randrange(0, 2000)
        start = rng.randrange(0, 2048 - n)
        payload = bytes(rng.randrange(256) for _ in range(n))
        buf[start : start + n] = np.frombuffer(payload, dtype=np.uint8)
        assert csum_sum(buf, start, start + n) == ref_csum(payload)


def _ipv4_udp(payload: bytes, partial: bool) -> bytearray:
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + len(payload), 1, 0, 64, 17, 0,
                               bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])))
    udp = bytearray(struct.pack("!HHHH", 1000, 2000, 8 + len(payload), 0))
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, 8 + len(payload))
    if partial:
        udp[6:8] = struct.pack("!H", ref_csum(pseudo))
    else:
        udp[6:8] = struct.pack("!H", (~ref_csum(pseudo + udp + payload)) & 0xFFFF or 0xFFFF)
    return bytearray(eth(BCAST, SRC, b"\x08\x00")) + ip + udp + payload


def test_partial_checksum_completion() -> None:
    payload = bytes(range(77))
    done = _ipv4_udp(payload, partial=False)
    part = _ipv4_udp(payload, partial=True)
    buf = np.zeros(256, dtype=np.uint8)
    buf[: len(part)] = np.frombuffer(bytes(part), dtype=np.uint8)
    assert complete_partial_csum(buf, len(part), 34, 6)
    assert bytes(buf[: len(part)]) == bytes(done)
    assert not complete_partial_csum(buf, len(part), 34, 200)


def test_tcp_segment_fixup() -> None:
    """A copied header plus the 2nd payload chunk becomes a valid TCP/IPv4 segment."""
    tcp = struct.pack("!HHIIBBHHH", 1, 2, 1000, 0, 5 << 4, 0x19, 100, 0, 0)  # FIN|PSH|ACK
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 7, 0x4000, 64, 6, 0, b"\xc0\x00\x02\x01", b"\xc0\x00\x02\x02")
    frame = eth(BCAST, SRC, b"\x08\x00") + ip + tcp + bytes(range(100))
    buf = np.zeros(256, dtype=np.uint8)
    buf[: len(frame)] = np.frombuffer(frame, dtype=np.uint8)
    fix_segment(buf, len(frame), 14, 34, 6, 1, False, 500)
    out = bytes(buf[: len(frame)])
    assert struct.unpack("!H", out[16:18])[0] == len(frame) - 14     # IPv4 total length
    assert struct.unpack("!H", out[18:20])[0] == 8                    # IPv4 ID + index
    assert ref_csum(out[14:34]) == 0xFFFF                             # header checksum valid
    assert struct.unpack("!I", out[38:42])[0] == 1500                 # seq + payload offset
    assert out[47] == 0x10                                            # FIN/PSH only on the last
    pseudo = out[26:34] + struct.pack("!BBH", 0, 6, len(frame) - 34)
    assert ref_csum(pseudo + out[34:]) == 0xFFFF                      # TCP checksum valid


def _v3_block(frames: list[tuple[bytes, int, int, bytes, int]], size: int = 1 << 16) -> np.ndarray:
    """A TPACKET_V3 ring of one user-owned block holding ``frames``: (data, status, tci, vnet, wire_len)."""
    ring = np.zeros(size, dtype=np.uint8)
    buf = memoryview(ring)
    off, mac = 48, 96
    for i, (data, status, tci, vnet, wire_len) in enumerate(frames):
        rec = (mac + len(data) + 15) // 16 * 16
        nxt = rec if i + 1 < len(frames) else 0
        struct.pack_into("IIIIIIHHIIHH", buf, off, nxt, 0, 0, len(data), wire_len, status | 1, mac, mac + 14,
                         0, tci, 0x8100, 0)
        buf[off + mac - 10 : off + mac] = vnet
        buf[off + mac : off + mac + len(data)] = data
        off += rec
    struct.pack_into("III", buf, 8, 1, len(frames), 48)     # block_status USER, num_pkts, first
    return ring


def _tcp4(payload: bytes, seq: int, flags: int, partial: bool = True) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 100, 0x4000, 64, 6, 0,
                     b"\xc6\x12\x00\x01", b"\xc6\x12\x00\x02")
    ip = ip[:10] + struct.pack("!H", ~ref_csum(ip) & 0xFFFF) + ip[12:]
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, 20 + len(payload))
    tcp = struct.pack("!HHIIBBHHH", 40000, 5001, seq, 1, 5 << 4, flags, 500, 0, 0)
    c = ref_csum(pseudo) if partial else ~ref_csum(pseudo + tcp + payload) & 0xFFFF
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    return eth("02:00:00:00:00:02", SRC, b"\x08\x00") + ip + tcp + payload


@pytest.mark.parametrize("headroom", HEADROOMS)
def test_rx_ring_kernel_finishes_offloads_and_resumes_mid_frame(headroom: int) -> None:
    """A TCP GSO super-frame (tag in the ring header) is cut into valid segments across rx calls;
    a partial-checksum frame is completed; a truncated frame is counted oversize. Every frame is at
    the pool's headroom."""
    from backends import system as S

    payload = random.Random(5).randbytes(4500)
    gso = _tcp4(payload, 1000, 0x19)                                      # FIN|PSH|ACK
    gso_vnet = struct.pack("<BBHHHH", 1, 1, 54, 1000, 34, 16)             # NEEDS_CSUM, TCPV4, mss 1000
    ack = _tcp4(b"", 7, 0x10)
    ack_vnet = struct.pack("<BBHHHH", 1, 0, 0, 0, 34, 16)
    ring = _v3_block([
        (gso, 0x10, 0x2064, gso_vnet, len(gso)),                          # VLAN_VALID: PCP 1, VID 100
        (ack, 0, 0, ack_vnet, len(ack)),
        (bytes(100), 0, 0, bytes(10), 3000),                              # truncated by the "kernel"
    ])
    st = np.zeros(S.STATE_WORDS, dtype=np.int64)
    st[S.S_RX_BSIZE], st[S.S_RX_BNR], st[S.S_PORT_NO] = len(ring), 1, 4
    st[S.S_HEADROOM] = headroom
    pool = make_pool(16, 2048, headroom)
    burst = np.zeros(16, dtype=np.int32)
    got: list[bytes] = []
    calls = []
    for _ in range(5):
        st[S.S_RX_START], st[S.S_RX_MAX] = 0, 2
        n = S.system_rx(ring, st, pool.data, pool.meta, pool.free_stack, pool.free_top, burst)
        calls.append(n)
        got += [pool.frame(int(s)) for s in burst[:n]]
        assert_received_at_headroom(pool, [int(s) for s in burst[:n]])
    assert calls == [2, 2, 2, 0, 0]
    assert ring[8] == 0                                                   # block handed back
    segs, fixed_ack = got[:5], got[5]
    expect_ack = _tcp4(b"", 7, 0x10, partial=False)
    assert fixed_ack == expect_ack
    for i, seg in enumerate(segs):
        chunk = payload[i * 1000 : (i + 1) * 1000]
        assert seg[12:16] == bytes.fromhex("81002064")                     # tag put back
        untagged = seg[:12] + seg[16:]
        ip = untagged[14:34]
        assert ref_csum(ip) == 0xFFFF and struct.unpack("!H", ip[2:4])[0] == 40 + len(chunk)
        assert struct.unpack("!H", ip[4:6])[0] == 100 + i
        tcp = untagged[34:54]
        assert struct.unpack("!I", tcp[4:8])[0] == 1000 + i * 1000
        assert tcp[13] == (0x19 if i == 4 else 0x10)
        assert untagged[54:] == chunk
        pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, 20 + len(chunk))
        assert ref_csum(pseudo + untagged[34:]) == 0xFFFF
    assert st[RX_GSO_SPLIT] == 1 and st[RX_CSUM_FIXED] == 1 and st[RX_OVERSIZE] == 1
    assert st[RX_PACKETS] == 6 and all(pool.meta[int(s), META_IN_PORT] == 4 for s in burst[:1])


# ------------------------------------------------------------------ system ports


@pytest.mark.integration
def test_system_port_errors_and_properties(veth: tuple[str, str, str], ports: list[Port]) -> None:
    with pytest.raises(PortError, match="no such network device"):
        SystemPort(uniq())
    with pytest.raises(PortError, match="tx_mode"):
        SystemPort(veth[1], tx_mode="carrier-pigeon")
    with pytest.raises(PortError, match="unsupported type"):
        open_port("lisp", veth[1])
    p = open_port("", veth[1])
    ports.append(p)
    assert isinstance(p, SystemPort) and p.type == "system"
    assert p.ifindex == int(open(f"/sys/class/net/{veth[1]}/ifindex").read())
    assert p.mac == open(f"/sys/class/net/{veth[1]}/address").read().strip()
    assert p.link_up
    sh(f"ip -n {veth[0]} link set {veth[2]} down")   # peer down: no carrier
    assert not p.link_up
    assert len(p.wakeup_fds()) == 1
    # promiscuous membership is active while the port is open
    assert int(open(f"/sys/class/net/{veth[1]}/flags").read(), 16) & 0x100
    p.close()
    p.close()
    assert p.wakeup_fds() == []


@pytest.mark.integration
@pytest.mark.parametrize("headroom", HEADROOMS)
def test_system_rx_exact_frames_with_vlan_tags(veth: tuple[str, str, str], ports: list[Port], headroom: int) -> None:
    ns, root_end, ns_end = veth
    port = SystemPort(root_end)
    ports.append(port)
    port.port_no = 3
    pool = make_pool(64, 2048, headroom)
    inj = packet_socket(ns_end, ns)
    frames = [
        eth(BCAST, SRC, b"\x08\x00" + bytes(range(46))),
        eth("02:00:00:00:00:02", SRC, b"\x08\x00" + bytes(range(50)), (0x8100, 0x6064)),    # PCP 3, VID 100
        eth(BCAST, SRC, b"\x86\xdd" + bytes(70), (0x88A8, 0x0123), (0x8100, 0x0005)),     # QinQ
        eth(BCAST, SRC, b"\x88\xb5" + bytes(range(200)) * 7),                              # 1414 bytes
    ]
    with inj:
        assert select.select(port.wakeup_fds(), [], [], 0.1)[0] == []      # idle: nothing to wake for
        for f in frames:
            inj.send(f)
        assert select.select(port.wakeup_fds(), [], [], 2.0)[0] == port.wakeup_fds()
        slots = rx_until(port, pool, len(frames))
        assert [pool.frame(s) for s in slots] == frames
        assert all(pool.meta[s, META_IN_PORT] == 3 and pool.meta[s, META_LEN] == len(f)
                   for s, f in zip(slots, frames, strict=True))
        assert_received_at_headroom(pool, slots)
        assert rx_until(port, pool, 1, timeout=0.1) == []
    assert port.stats()["rx_packets"] == len(frames)
    assert port.stats()["rx_bytes"] == sum(map(len, frames))


@pytest.mark.integration
@pytest.mark.parametrize("headroom", HEADROOMS)
def test_system_rx_oversize_and_pool_exhaustion(veth: tuple[str, str, str], ports: list[Port], headroom: int) -> None:
    ns, root_end, ns_end = veth
    port = SystemPort(root_end)
    ports.append(port)
    pool = make_pool(3, 256, headroom)
    small = eth(BCAST, SRC, b"\x88\xb5" + bytes(100))
    big = eth(BCAST, SRC, b"\x88\xb5" + bytes(600))
    fits = eth(BCAST, SRC, b"\x88\xb5" + bytes(256 - 14))            # exactly a slot: accepted
    over = eth(BCAST, SRC, b"\x88\xb5" + bytes(256 - 13))            # one byte more: oversize, headroom or not
    with packet_socket(ns_end, ns) as inj:
        inj.send(big)
        inj.send(over)
        inj.send(fits)
        slots = rx_until(port, pool, 1)
        assert [pool.frame(s) for s in slots] == [fits]
        assert_received_at_headroom(pool, slots)
        assert port.counters[RX_OVERSIZE] == 2 and port.counters[RX_DROPPED] == 2
        pool.free(np.array(slots, dtype=np.int32), 1)
        inj.send(small)
        slots = rx_until(port, pool, 1)
        assert [pool.frame(s) for s in slots] == [small]
        assert pool.free_count == 2          # the oversize frame did not leak a slot
        for _ in range(4):
            inj.send(small)
        more = rx_until(port, pool, 2)
        time.sleep(0.05)
        more += rx_until(port, pool, 1, timeout=0.1)
        assert len(more) == 2 and pool.free_count == 0
        assert port.counters[NO_FREE_SLOT] == 2
        assert port.stats()["rx_dropped"] == 4


@pytest.mark.integration
@pytest.mark.parametrize("headroom", HEADROOMS)
@pytest.mark.parametrize("tx_mode", TX_MODES)
def test_system_tx_vlan_edits_arrive_exact(
    veth: tuple[str, str, str], ports: list[Port], tx_mode: str, headroom: int
) -> None:
    ns, root_end, ns_end = veth
    port = SystemPort(root_end, tx_mode=tx_mode)
    ports.append(port)
    pool = make_pool(8, 2048, headroom)
    plain = eth(BCAST, SRC, b"\x08\x00" + bytes(range(46)))
    tagged = eth(BCAST, SRC, b"\x08\x00" + bytes(range(46, 96)), (0x8100, 0xA005))   # PCP 5, VID 5
    pool.put(0, plain)
    pool.put(1, tagged)
    cases = [(0, -1), (0, 0), (0, 10), (0, 4095), (1, -1), (1, 0), (1, 10), (1, 4095)]
    slots = np.array([s for s, _ in cases], dtype=np.int32)
    vlans = np.array([v for _, v in cases], dtype=np.int16)
    expect = [ref_edit(pool.frame(s), v) for s, v in cases]
    assert expect[2][12:16] == bytes.fromhex("8100000a") and expect[6][12:16] == bytes.fromhex("8100a00a")
    with packet_socket(ns_end, ns) as rcv:
        assert port.tx_burst(pool, slots, vlans, 0, len(cases)) == len(cases)
        assert recv_frames(rcv, len(cases)) == expect
        assert_quiet(rcv)
        # start/count select a sub-range of the queue
        assert port.tx_burst(pool, slots, vlans, 5, 2) == 2
        assert recv_frames(rcv, 2) == expect[5:7]
    assert port.counters[TX_PACKETS] == 10
    assert port.counters[TX_BYTES] == sum(map(len, expect)) + len(expect[5]) + len(expect[6])
    assert pool.free_count == 8              # tx never frees slots
    assert (pool.frame(0), pool.frame(1)) == (plain, tagged)      # nor changes them
    # the port does not receive its own transmissions
    assert rx_until(port, pool, 1, timeout=0.1) == []


@pytest.mark.integration
@pytest.mark.parametrize("tx_mode", TX_MODES)
def test_system_tx_too_long_and_burst_larger_than_batch(
    veth: tuple[str, str, str], ports: list[Port], tx_mode: str
) -> None:
    ns, root_end, ns_end = veth
    port = SystemPort(root_end, tx_mode=tx_mode, mmsg_batch=8, tx_ring_frames=64)
    ports.append(port)
    pool = make_pool(200, 2048, DEFAULT_HEADROOM)
    for i in range(200):
        pool.put(i, eth(BCAST, SRC, b"\x88\xb5" + i.to_bytes(2, "big") + bytes(50)))
    pool.put(7, eth(BCAST, SRC, b"\x88\xb5" + bytes(1600)))      # longer than MTU 1500 + 14
    slots = np.arange(50, dtype=np.int32)
    vlans = np.full(50, -1, dtype=np.int16)
    with packet_socket(ns_end, ns) as rcv:
        assert port.tx_burst(pool, slots, vlans, 0, 50) == 49
        got = recv_frames(rcv, 49)
        assert got == [pool.frame(i) for i in range(50) if i != 7]
    assert port.counters[TX_ERROR] == 1 and port.counters[TX_DROPPED] == 1


def _forward(a: Port, b: Port, pool: PacketPool, stop: threading.Event) -> None:
    burst = np.zeros(64, dtype=np.int32)
    keep = np.full(64, -1, dtype=np.int16)
    fds = a.wakeup_fds() + b.wakeup_fds()
    while not stop.is_set():
        moved = 0
        for src, dst in ((a, b), (b, a)):
            n = src.rx_burst(pool, burst, 0, 64)
            if n:
                dst.tx_burst(pool, burst, keep, 0, n)
                pool.free(burst, n)
                moved += n
        if not moved:
            select.select(fds, [], [], 0.01)


@pytest.mark.integration
@pytest.mark.parametrize(("tx_mode", "headroom"), [("sendmmsg", DEFAULT_HEADROOM), ("ring", DEFAULT_HEADROOM),
                                                   ("sendmmsg", 0)])
def test_system_forwarded_tcp_and_udp(
    make_veth: Callable[[], tuple[str, str, str]], ports: list[Port], tx_mode: str, headroom: int
) -> None:
    """TCP and UDP between two namespaces through two system ports: checksums and GSO get finished."""
    ns1, a1, b1 = make_veth()
    ns2, a2, b2 = make_veth()
    net = f"198.18.{random.randrange(256)}"      # benchmark range; exists only inside the two netns
    ip1, ip2 = f"{net}.1", f"{net}.2"
    sh(f"ip -n {ns1} addr add {ip1}/24 dev {b1}")
    sh(f"ip -n {ns2} addr add {ip2}/24 dev {b2}")
    p1 = SystemPort(a1, tx_mode=tx_mode)
    p2 = SystemPort(a2, tx_mode=tx_mode)
    ports.extend([p1, p2])
    pool = PacketPool(4096, 2048, headroom=headroom)
    stop = threading.Event()
    fwd = threading.Thread(target=_forward, args=(p1, p2, pool, stop), daemon=True)
    fwd.start()
    try:
        payload = random.Random(3).randbytes(3 << 20)
        srv = ns_socket(ns2, socket.AF_INET, socket.SOCK_STREAM)
        srv.bind((ip2, 5001))
        srv.listen(1)
        received = bytearray()

        def serve() -> None:
            srv.settimeout(10)
            conn, _ = srv.accept()
            conn.settimeout(10)
            with conn:
                while chunk := conn.recv(1 << 16):
                    received.extend(chunk)

        t = threading.Thread(target=serve)
        t.start()
        cli = ns_socket(ns1, socket.AF_INET, socket.SOCK_STREAM)
        cli.settimeout(10)
        cli.connect((ip2, 5001))
        cli.sendall(payload)
        cli.close()
        t.join(20)
        srv.close()
        assert bytes(received) == payload

        # UDP: one plain datagram and one 8-segment UDP GSO send (UDP_SEGMENT)
        usrv = ns_socket(ns2, socket.AF_INET, socket.SOCK_DGRAM)
        usrv.bind((ip2, 5002))
        usrv.settimeout(3)
        ucli = ns_socket(ns1, socket.AF_INET, socket.SOCK_DGRAM)
        ucli.sendto(b"u" * 300, (ip2, 5002))
        ucli.setsockopt(socket.IPPROTO_UDP, 103, 1000)    # UDP_SEGMENT
        seg_payload = bytes(range(250)) * 32
        ucli.sendto(seg_payload, (ip2, 5002))
        got = [usrv.recv(65536) for _ in range(9)]
        ucli.close()
        usrv.close()
        assert got[0] == b"u" * 300
        assert got[1:] == [seg_payload[i : i + 1000] for i in range(0, 8000, 1000)]
    finally:
        stop.set()
        fwd.join(5)
    assert p1.counters[RX_CSUM_FIXED] > 0
    assert p1.counters[RX_GSO_SPLIT] > 0
    assert p1.counters[RX_PACKETS] > (3 << 20) // 1500


TX_KINDS = [*TX_MODES, "tap"]


def _tx_port(kind: str, request: pytest.FixtureRequest, ports: list[Port]) -> tuple[Port, socket.socket]:
    """A port of ``kind`` (a system port's tx mode, or "tap") and a socket that captures what it sends."""
    if kind == "tap":
        name = request.getfixturevalue("tap_name")
        port: Port = TapPort(name)
        ports.append(port)
        return port, packet_socket(name)
    ns, root_end, ns_end = request.getfixturevalue("veth")
    port = SystemPort(root_end, tx_mode=kind)
    ports.append(port)
    return port, packet_socket(ns_end, ns)


@pytest.mark.integration
@pytest.mark.parametrize("kind", TX_KINDS)
def test_tx_sends_the_frame_at_meta_head(kind: str, request: pytest.FixtureRequest, ports: list[Port]) -> None:
    """Frames whose META_HEAD was moved (down into the headroom, or up) go out exactly, with every edit.

    A VLAN push on a frame with headroom (tap, TX ring) moves the MACs into the headroom: after the burst the
    4 bytes before the frame hold the first MAC bytes, and the frame and every byte after it are as before.
    ``sendmmsg`` (iovecs) and a frame with less than 4 bytes of headroom write nothing. A slot whose head and
    length reach past its row is a ``tx_error``, never read.
    """
    port, cap = _tx_port(kind, request, ports)
    pool = make_pool(8, 256, DEFAULT_HEADROOM)
    plain = eth("02:00:00:00:00:09", SRC, b"\x08\x00" + bytes(range(60)))
    tagged = eth("02:00:00:00:00:09", SRC, b"\x08\x00" + bytes(range(100, 160)), (0x8100, 0x2005))
    heads = {0: (plain, 60), 1: (tagged, 200), 2: (plain, 2), 3: (plain, DEFAULT_HEADROOM)}
    for s, (f, h) in heads.items():
        place(pool, s, f, h)
    rows = pool.data.copy()
    cases = [(s, v) for s in heads for v in (-1, 0, 10, 4095)]
    slots = np.array([s for s, _ in cases], dtype=np.int32)
    vlans = np.array([v for _, v in cases], dtype=np.int16)
    with cap:
        assert port.tx_burst(pool, slots, vlans, 0, len(cases)) == len(cases)
        assert recv_frames(cap, len(cases)) == [ref_edit(heads[s][0], v) for s, v in cases]
        assert_quiet(cap)
        for s, (f, h) in heads.items():
            assert (pool.data[s, h:] == rows[s, h:]).all(), s                 # the frame and all after it
            assert (pool.data[s, : max(h - 4, 0)] == rows[s, : max(h - 4, 0)]).all(), s
            in_place = kind != "sendmmsg" and h >= 4 and f is plain
            assert bytes(pool.data[s, max(h - 4, 0) : h]) == (f[:4] if in_place else bytes([FILL]) * min(h, 4)), s
        pool.meta[4, META_HEAD] = pool.data.shape[1] - 20
        pool.meta[4, META_LEN] = len(plain)
        assert port.tx_burst(pool, np.array([4, 3], np.int32), np.array([-1, -1], np.int16), 0, 2) == 1
        assert recv_frames(cap, 1) == [plain]
        assert_quiet(cap)
    assert port.counters[TX_ERROR] == 1 and port.counters[TX_PACKETS] == len(cases) + 1


# ------------------------------------------------------------------ tap / internal ports


@pytest.mark.integration
def test_tap_created_up_ipv6_off_and_removed_on_close(tap_name: str) -> None:
    port = TapPort(tap_name, mac="02:11:22:33:44:55", mtu=1400)
    try:
        assert port.created and port.type == "tap"
        assert port.mac == "02:11:22:33:44:55"
        assert open(f"/sys/class/net/{tap_name}/mtu").read().strip() == "1400"
        assert int(open(f"/sys/class/net/{tap_name}/flags").read(), 16) & 1     # IFF_UP
        assert port.link_up
        assert open(f"/proc/sys/net/ipv6/conf/{tap_name}/disable_ipv6").read().strip() == "1"
        assert port.ifindex == int(open(f"/sys/class/net/{tap_name}/ifindex").read())
        assert port.wakeup_fds() == [port.fd]
    finally:
        port.close()
    assert not os.path.exists(f"/sys/class/net/{tap_name}")
    with pytest.raises(PortError, match="invalid interface name"):
        TapPort("x" * 16)


@pytest.mark.integration
@pytest.mark.parametrize("headroom", HEADROOMS)
def test_tap_rx_tx_exact(tap_name: str, ports: list[Port], headroom: int) -> None:
    port = TapPort(tap_name)
    ports.append(port)
    port.port_no = 9
    pool = make_pool(32, 2048, headroom)
    frames = [
        eth(BCAST, SRC, b"\x08\x00" + bytes(range(46))),
        eth(BCAST, SRC, b"\x08\x00" + bytes(range(60)), (0x8100, 0x2064)),
        eth(BCAST, SRC, b"\x88\xb5" + bytes(1500)),
    ]
    with packet_socket(tap_name) as host:
        assert select.select(port.wakeup_fds(), [], [], 0.1)[0] == []
        for f in frames:
            host.send(f)                       # host -> tap netdev -> tap fd -> rx_burst
        assert select.select(port.wakeup_fds(), [], [], 2.0)[0] == port.wakeup_fds()
        slots = rx_until(port, pool, 3)
        assert [pool.frame(s) for s in slots] == frames
        assert all(pool.meta[s, META_IN_PORT] == 9 for s in slots)
        assert_received_at_headroom(pool, slots)
        cases = [(slots[0], -1), (slots[0], 42), (slots[1], 0), (slots[1], 7), (slots[2], -1)]
        q = np.array([s for s, _ in cases], dtype=np.int32)
        v = np.array([x for _, x in cases], dtype=np.int32)
        assert port.tx_burst(pool, q, v, 0, len(cases)) == len(cases)     # tx_burst -> tap netdev
        assert recv_frames(host, len(cases)) == [ref_edit(pool.frame(s), x) for s, x in cases]
        assert_quiet(host)
    assert port.counters[RX_PACKETS] == 3 and port.counters[TX_PACKETS] == 5
    assert pool.free_count == 29
    assert [pool.frame(s) for s in slots] == frames


@pytest.mark.integration
@pytest.mark.parametrize("headroom", HEADROOMS)
def test_tap_oversize_and_pool_exhaustion(tap_name: str, ports: list[Port], headroom: int) -> None:
    port = TapPort(tap_name, mtu=4000)
    ports.append(port)
    pool = make_pool(2, 1024, headroom)
    small = eth(BCAST, SRC, b"\x88\xb5" + bytes(range(100)))
    with packet_socket(tap_name) as host:
        host.send(eth(BCAST, SRC, b"\x88\xb5" + bytes(3000)))
        host.send(eth(BCAST, SRC, b"\x88\xb5" + bytes(1024 - 13)))     # one byte over the slot, headroom or not
        host.send(small)
        slots = rx_until(port, pool, 1)
        assert [pool.frame(s) for s in slots] == [small]
        assert_received_at_headroom(pool, slots)
        assert port.counters[RX_OVERSIZE] == 2
        for _ in range(3):
            host.send(small)
        time.sleep(0.05)
        burst = np.zeros(8, dtype=np.int32)
        assert port.rx_burst(pool, burst, 0, 8) == 1
        assert port.counters[NO_FREE_SLOT] == 2
        assert port.stats()["rx_dropped"] == 4


@pytest.mark.integration
def test_tap_moved_into_netns_keeps_working(tap_name: str, make_ns: Callable[[], str]) -> None:
    ns = make_ns()
    port = TapPort(tap_name)
    try:
        mac, ifindex = port.mac, port.ifindex
        sh(f"ip link set {tap_name} netns {ns}")
        sh(f"ip -n {ns} link set {tap_name} up")
        assert port.mac == mac and port.ifindex == ifindex and port.link_up
        pool = PacketPool(8, 2048)
        pool.put(0, eth(BCAST, SRC, b"\x88\xb5" + bytes(range(80))))
        with packet_socket(tap_name, ns) as inside:
            q = np.array([0], dtype=np.int32)
            assert port.tx_burst(pool, q, np.array([12], dtype=np.int16), 0, 1) == 1
            assert recv_frames(inside, 1) == [ref_edit(pool.frame(0), 12)]
            frame = eth(BCAST, SRC, b"\x88\xb5" + bytes(range(90)))
            inside.send(frame)
            slots = rx_until(port, pool, 1)
            assert [pool.frame(s) for s in slots] == [frame]
    finally:
        port.close()
    assert sh(f"ip -n {ns} link show {tap_name}", check=False).returncode != 0


@pytest.mark.integration
def test_tap_attaches_to_existing_persistent_tap(tap_name: str) -> None:
    sh(f"ip tuntap add dev {tap_name} mode tap")
    port = TapPort(tap_name)
    try:
        assert not port.created
        with pytest.raises(PortError, match="already open"):
            TapPort(tap_name)
    finally:
        port.close()
    assert os.path.exists(f"/sys/class/net/{tap_name}")      # not ours: left in place
    with pytest.raises(PortError, match="not a tap"):
        TapPort("lo")


@pytest.mark.integration
def test_internal_port_is_a_host_interface(tap_name: str, ports: list[Port]) -> None:
    port = open_port("internal", tap_name)
    ports.append(port)
    assert isinstance(port, InternalPort) and port.type == "internal"
    assert os.path.exists(f"/sys/class/net/{tap_name}/tun_flags")
    pool = PacketPool(4, 2048)
    pool.put(1, eth(BCAST, SRC, b"\x88\xb5" + bytes(64), (0x8100, 0x0033)))
    with packet_socket(tap_name) as host:
        assert port.tx_burst(pool, np.array([1], np.int32), np.array([0], np.int16), 0, 1) == 1
        assert recv_frames(host, 1) == [ref_edit(pool.frame(1), 0)]
    port.close()
    assert not os.path.exists(f"/sys/class/net/{tap_name}")
    assert port.tx_burst(pool, np.array([1], np.int32), np.array([0], np.int16), 0, 1) == 0
    assert port.counters[TX_DROPPED] == 1
    with contextlib.suppress(PortError):
        port.close()


def test_pool_refuses_to_free_more_slots_than_it_lent() -> None:
    pool = PacketPool(8, 64)
    burst = np.zeros(8, dtype=np.int32)
    assert pool.alloc(burst, 0, 3) == 3 and pool.free_count == 5
    with pytest.raises(ValueError, match="overflow the pool"):
        pool.free(burst, 4)
    pool.free(burst, 3)
    assert pool.free_count == 8 and sorted(pool.free_stack.tolist()) == list(range(8))
