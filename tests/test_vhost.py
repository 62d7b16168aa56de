"""vhost-user ports (backends/vhost_user.py, backends/virtq.py) against real front-ends.

* in-process bridges with the test front-end (tests/vhost_frontend.py, itself checked against DPDK's vhost
  back-end in test_vhost_frontend.py): frames both ways, mergeable buffers, VLAN edits, notifications,
  polling mode, and a hostile front-end for every kind of violation;
* a port's bursts on pools with and without headroom: frames read and written at ``META_HEAD`` only;
* the daemon driven by ovs-vsctl with two ``dpdk-testpmd`` virtio_user front-ends: exact packet counts,
  ``Interface.status``/``link_state``/``error``, and a ``dpdkvhostuserclient`` port that survives a restart
  of pyvswitch.
"""

from __future__ import annotations

import os
import socket
import struct
import tempfile
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from backends.pool import DEFAULT_HEADROOM, META_HEAD, META_LEN, PacketPool
from backends.port import (
    GUEST_BAD_ADDRESS,
    GUEST_BAD_CHAIN,
    GUEST_BAD_DESCRIPTOR,
    GUEST_BAD_INDEX,
    PORT_RESETS,
    RX_PACKETS,
    TX_ERROR,
    TX_PACKETS,
)
from backends.vhost_user import VhostUserPort
from tests.testpmd import Testpmd, needs_testpmd
from tests.vhost_frontend import (
    VHOST_USER_GET_FEATURES,
    VHOST_USER_SET_MEM_TABLE,
    VHOST_USER_SET_VRING_KICK,
    VRING_DESC_F_INDIRECT,
    VRING_DESC_F_NEXT,
    VRING_DESC_F_WRITE,
    VhostUserError,
    VhostUserFrontend,
)
from vswitch.bridge import Bridge
from vswitch.vlan import VlanConfig

TX, RX = 1, 0
MEM = 16 << 20


def frames(n: int, src: int, dst: int, size: int = 74, tag: int = 0) -> list[bytes]:
    """``n`` distinct frames from MAC 02:..:src to 02:..:dst (ethertype 0x88b5) of ``size`` bytes."""
    out = []
    for i in range(n):
        body = struct.pack("!HI", tag, i) + bytes((i * 7 + k) & 0xFF for k in range(size - 20))
        out.append(bytes([2, 0, 0, 0, 0, dst]) + bytes([2, 0, 0, 0, 0, src]) + b"\x88\xb5" + body)
    return out


class VBridge:
    """An in-process bridge of dpdkvhostuser ports listening in a temporary directory."""

    def __init__(self, tmp: str) -> None:
        self.tmp = tmp
        self.br = Bridge(f"vt{os.getpid() % 100000}")
        self.fronts: list[VhostUserFrontend] = []

    def add(self, name: str, vlan: VlanConfig | None = None) -> VhostUserPort:
        bp = self.br.add_port(name, "dpdkvhostuser", vlan, socket_path=os.path.join(self.tmp, name))
        return bp.port  # type: ignore[return-value]

    def port(self, name: str) -> VhostUserPort:
        return self.br.ports[name].port  # type: ignore[return-value]

    def connect(self, name: str, **kw: object) -> VhostUserFrontend:
        fe = VhostUserFrontend(os.path.join(self.tmp, name), mem_size=MEM, **kw)  # type: ignore[arg-type]
        self.fronts.append(fe)
        fe.start()
        wait_for(f"{name} link up", lambda: self.port(name).link_up)
        return fe

    def close(self) -> None:
        for fe in self.fronts:
            fe.close()
        self.br.close()


def wait_for(what: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def vb() -> Iterator[VBridge]:
    with tempfile.TemporaryDirectory(prefix="pvt-vhost-") as tmp:
        b = VBridge(tmp)
        try:
            yield b
        finally:
            b.close()
        assert os.listdir(tmp) == []   # listening sockets removed with their ports


def exchange(a: VhostUserFrontend, b: VhostUserFrontend, n: int, size: int = 74, macs: tuple[int, int] = (0xA, 0xB)
             ) -> None:
    """Frames a->b then b->a (from and to MACs 02:..:``macs``) arrive complete and in order."""
    fa, fb = frames(n, macs[0], macs[1], size), frames(n, macs[1], macs[0], size)
    sent = 0
    got: list[bytes] = []
    while sent < n:   # the ring holds fewer than n when n is large: send as the switch drains
        sent += a.send(fa[sent:sent + 64])
        got += b.recv(timeout=0.2)
    got += b.recv(n - len(got), timeout=5) if len(got) < n else []
    assert got == fa
    assert b.send(fb[:64]) == min(n, 64)
    assert a.recv(min(n, 64), timeout=5) == fb[:64]


@pytest.mark.parametrize("features", [
    dict(),
    dict(mrg_rxbuf=False),
    dict(event_idx=False),
    dict(indirect=True),
    dict(protocol_features=False, event_idx=False, mrg_rxbuf=False),
], ids=["mrg+event_idx", "no-mrg", "no-event_idx", "indirect", "legacy-minimal"])
def test_frames_cross_between_two_guests(vb: VBridge, features: dict) -> None:
    vb.add("va")
    vb.add("vb")
    a = vb.connect("va", **features)
    b = vb.connect("vb", **features)
    exchange(a, b, 600)
    pa, pb = vb.port("va"), vb.port("vb")
    assert pa.counters[RX_PACKETS] == 600 and pb.counters[TX_PACKETS] == 600
    assert pb.counters[RX_PACKETS] == 64 and pa.counters[TX_PACKETS] == 64
    st = pa.status()
    assert st["status"] == "connected" and st["mode"] == "server" and st["num_of_vrings"] == "2"
    assert st["vring_0_size"] == "256" and int(st["features"], 16) == a.features


def test_large_frames_span_mergeable_buffers(vb: VBridge) -> None:
    vb.add("va")
    vb.add("vb")
    a = vb.connect("va")
    b = vb.connect("vb", buf_size=512)       # 1500-byte frames need 3 buffers: num_buffers = 3
    fa = frames(50, 0xA, 0xB, size=1500)
    assert a.send(fa) == 50
    assert b.recv(50, timeout=5) == fa


def test_frame_too_big_for_a_buffer_without_mrg_is_counted(vb: VBridge) -> None:
    vb.add("va")
    vb.add("vb")
    a = vb.connect("va")
    b = vb.connect("vb", mrg_rxbuf=False, buf_size=256)
    big, small = frames(3, 0xA, 0xB, size=1000), frames(3, 0xA, 0xB, size=100, tag=1)
    a.send(big + small)
    assert b.recv(3, timeout=5) == small
    assert vb.port("vb").counters[TX_ERROR] == 3


def test_access_port_frames_reach_a_trunk_guest_tagged(vb: VBridge) -> None:
    vb.add("va", VlanConfig(tag=10))
    vb.add("vb", VlanConfig(trunks=(10,)))
    a = vb.connect("va")
    b = vb.connect("vb")
    fa = frames(5, 0xA, 0xB)
    a.send(fa)
    got = b.recv(5, timeout=5)
    assert got == [f[:12] + b"\x81\x00\x00\x0a" + f[12:] for f in fa]
    b.send([g for g in got])      # tagged frames back: the tag is stripped for the access port
    assert a.recv(5, timeout=5) == fa


def _edit(frame: bytes, vlan: int) -> bytes:
    """The egress VLAN edit as the Port interface documents it."""
    tagged = len(frame) >= 18 and frame[12:14] == b"\x81\x00"
    if vlan < 0 or (vlan == 0 and not tagged):
        return frame
    if vlan == 0:
        return frame[:12] + frame[16:]
    if tagged:
        return frame[:14] + ((int.from_bytes(frame[14:16], "big") & 0xF000) | vlan).to_bytes(2, "big") + frame[16:]
    return frame[:12] + b"\x81\x00" + vlan.to_bytes(2, "big") + frame[12:]


@pytest.mark.parametrize("headroom", [0, DEFAULT_HEADROOM])
@pytest.mark.parametrize("features", [dict(), dict(buf_size=256), dict(mrg_rxbuf=False, indirect=True)],
                         ids=["one-buffer", "merged-buffers", "indirect-no-mrg"])
def test_bursts_read_and_write_frames_at_meta_head(headroom: int, features: dict) -> None:
    """Dequeued frames land at the pool's headroom with META_HEAD set; enqueue sends exactly the frame at
    META_HEAD (moved down into the headroom, or up) with every edit; a push with headroom moves the MACs into
    it and leaves the frame and everything after it as it was."""
    fill = 0xEE
    with tempfile.TemporaryDirectory(prefix="pvt-vhost-") as tmp:
        path = os.path.join(tmp, "vh0")
        port = VhostUserPort("vh0", socket_path=path)
        fe = VhostUserFrontend(path, mem_size=MEM, **features)
        try:
            fe.start()
            wait_for("link up", lambda: port.link_up)
            pool = PacketPool(64, 2048, headroom=headroom)
            pool.data[:] = fill
            sent = frames(6, 0xA, 0xB, size=600) + frames(2, 0xA, 0xB, size=60, tag=1)
            assert fe.send(sent) == len(sent)
            burst = np.zeros(64, dtype=np.int32)
            got: list[int] = []
            deadline = time.monotonic() + 5
            while len(got) < len(sent) and time.monotonic() < deadline:
                n = port.rx_burst(pool, burst, 0, 64)
                got += [int(x) for x in burst[:n]]
            assert [pool.frame(s) for s in got] == sent
            for s in got:
                assert pool.meta[s, META_HEAD] == headroom and (pool.data[s, :headroom] == fill).all()

            plain = frames(1, 0xB, 0xA, size=600, tag=2)[0]
            tagged = plain[:12] + b"\x81\x00\x20\x05" + plain[12:]
            heads = {0: (plain, 60), 1: (tagged, 200), 2: (plain, 2), 3: (pool.frame(got[6]), headroom)}
            slots = [got[0], got[1], got[2], got[6]]
            for s, (f, h) in zip(slots, heads.values(), strict=True):
                pool.data[s, h : h + len(f)] = np.frombuffer(f, dtype=np.uint8)
                pool.meta[s, META_HEAD] = h
                pool.meta[s, META_LEN] = len(f)
            rows = pool.data.copy()
            cases = [(k, v) for k in heads for v in (-1, 0, 10, 4095)]
            q = np.array([slots[k] for k, _ in cases], dtype=np.int32)
            vlans = np.array([v for _, v in cases], dtype=np.int16)
            assert port.tx_burst(pool, q, vlans, 0, len(cases)) == len(cases)
            assert fe.recv(len(cases), timeout=5) == [_edit(heads[k][0], v) for k, v in cases]
            for s, (f, h) in zip(slots, heads.values(), strict=True):
                assert (pool.data[s, h:] == rows[s, h:]).all()                  # the frame and all after it
                lo = max(h - 4, 0)
                assert (pool.data[s, :lo] == rows[s, :lo]).all()
                in_place = h >= 4 and f[12:14] != b"\x81\x00"
                assert bytes(pool.data[s, lo:h]) == (f[:4] if in_place else bytes(rows[s, lo:h]))
            assert port.counters[TX_PACKETS] == len(cases) and port.counters[TX_ERROR] == 0
            pool.meta[got[7], META_HEAD] = pool.data.shape[1] - 10               # reaches past its row
            assert port.tx_burst(pool, np.array([got[7]], np.int32), np.array([-1], np.int16), 0, 1) == 0
            assert port.counters[TX_ERROR] == 1 and port.error == ""
        finally:
            fe.close()
            port.close()


def test_guest_is_notified_and_polling_mode_works(vb: VBridge) -> None:
    vb.add("va")
    vb.add("vb")
    a = vb.connect("va")
    b = vb.connect("vb", event_idx=False)
    exchange(a, b, 10)
    assert vb.port("vb").stats()["guest_notifications"] > 0
    # The front-end asks to be polled (SET_VRING_KICK with the no-fd flag): frames still flow, unkicked.
    a.message(VHOST_USER_SET_VRING_KICK, struct.pack("<Q", TX | 0x100), need_reply=True)
    fa = frames(20, 0xA, 0xB, tag=2)
    a.send(fa)
    assert b.recv(20, timeout=5) == fa


def test_disconnect_unmaps_and_a_new_guest_starts_clean(vb: VBridge) -> None:
    pa = vb.add("va")
    vb.add("vb")
    a = vb.connect("va")
    b = vb.connect("vb")
    exchange(a, b, 10)
    a.close()
    wait_for("va disconnected", lambda: pa.status()["status"] == "disconnected")
    assert not pa.link_up and pa._mem is None
    # frames towards a port without a guest are dropped and counted, not queued
    b.send(frames(5, 0xB, 0xA))
    wait_for("drops counted", lambda: pa.stats()["tx_queue_full"] >= 5)
    a2 = vb.connect("va", mrg_rxbuf=False)
    exchange(a2, b, 10)


def _bad_addr(fe: VhostUserFrontend) -> None:
    fe.post_raw(TX, 0, [(MEM + 4096, 100, 0, 0)])


def _wrapping_addr(fe: VhostUserFrontend) -> None:
    fe.post_raw(TX, 0, [(0xFFFF_FFFF_FFFF_FF00, 0x200, 0, 0)])


def _straddling_end(fe: VhostUserFrontend) -> None:
    fe.post_raw(TX, 0, [(MEM - 50, 100, 0, 0)])


def _loop(fe: VhostUserFrontend) -> None:
    buf = fe.buf_addr(TX, 0)
    fe.post_raw(TX, 0, [(buf, 8, VRING_DESC_F_NEXT, 1), (buf, 8, VRING_DESC_F_NEXT, 0)])


def _huge_chain(fe: VhostUserFrontend) -> None:
    fe.post_raw(TX, 0, [(0, MEM - 4096, 0, 0)])


def _wild_avail_idx(fe: VhostUserFrontend) -> None:
    fe.set_avail_idx(TX, 5000)


def _head_out_of_range(fe: VhostUserFrontend) -> None:
    fe.post_raw(TX, 1000, [])


def _next_out_of_range(fe: VhostUserFrontend) -> None:
    fe.post_raw(TX, 0, [(fe.buf_addr(TX, 0), 100, VRING_DESC_F_NEXT, 999)])


def _write_only_tx(fe: VhostUserFrontend) -> None:
    fe.post_raw(TX, 0, [(fe.buf_addr(TX, 0), 100, VRING_DESC_F_WRITE, 0)])


def _indirect_not_negotiated(fe: VhostUserFrontend) -> None:
    fe.post_raw(TX, 0, [(fe.buf_addr(TX, 0), 32, VRING_DESC_F_INDIRECT, 0)])


def _rx_buffers_outside(fe: VhostUserFrontend) -> None:
    fe.desc(RX)["addr"][:] = MEM + (1 << 20)     # every posted receive buffer now points outside


HOSTILE = {
    "address-outside-memory": (_bad_addr, GUEST_BAD_ADDRESS, "guest address outside its memory", TX),
    "address-wrapping-2**64": (_wrapping_addr, GUEST_BAD_ADDRESS, "guest address outside its memory", TX),
    "buffer-straddling-the-end": (_straddling_end, GUEST_BAD_ADDRESS, "guest address outside its memory", TX),
    "looping-chain": (_loop, GUEST_BAD_CHAIN, "loops", TX),
    "huge-chain": (_huge_chain, GUEST_BAD_CHAIN, "too long", TX),
    "wild-avail-index": (_wild_avail_idx, GUEST_BAD_INDEX, "index out of range", TX),
    "head-out-of-range": (_head_out_of_range, GUEST_BAD_INDEX, "index out of range", TX),
    "next-out-of-range": (_next_out_of_range, GUEST_BAD_INDEX, "index out of range", TX),
    "write-only-buffer-sent": (_write_only_tx, GUEST_BAD_DESCRIPTOR, "invalid descriptor", TX),
    "indirect-not-negotiated": (_indirect_not_negotiated, GUEST_BAD_DESCRIPTOR, "invalid descriptor", TX),
    "rx-buffers-outside-memory": (_rx_buffers_outside, GUEST_BAD_ADDRESS, "guest address outside its memory", RX),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_guest_gets_its_port_reset_and_nothing_else_happens(vb: VBridge, kind: str) -> None:
    make_bad, counter, words, vring = HOSTILE[kind]
    vb.add("va")
    vb.add("vb")
    evil_port = vb.add("vx")
    a = vb.connect("va")
    b = vb.connect("vb")
    evil = vb.connect("vx")
    exchange(a, evil, 5, macs=(0xA, 0xE))     # it behaves at first
    assert len(b.recv(5, timeout=5)) == 5     # (b saw the first frames flooded, before 0xE was learned)
    make_bad(evil)
    if vring == TX:
        evil.kick(TX)
    else:
        a.send(frames(1, 0xA, 0xE))           # into the evil guest's bad receive buffers
    wait_for("the port reset", lambda: evil_port.counters[PORT_RESETS] == 1)
    assert evil_port.counters[counter] == 1
    assert words in evil_port.error and f"vring {vring}" in evil_port.error and "port reset" in evil_port.error
    wait_for("disconnected", lambda: evil_port.status()["status"] == "disconnected")
    assert not evil_port.link_up
    with pytest.raises((VhostUserError, OSError)):   # we closed its connection
        evil.message(VHOST_USER_GET_FEATURES)
    exchange(a, b, 100)                       # the other guests are untouched
    again = vb.connect("vx")                  # a reconnect starts clean
    exchange(a, again, 5, macs=(0xA, 0xE))
    assert evil_port.error == ""


def test_memory_table_larger_than_its_file_is_refused(vb: VBridge) -> None:
    port = vb.add("va")
    fe = VhostUserFrontend(os.path.join(vb.tmp, "va"), mem_size=MEM)
    vb.fronts.append(fe)
    fe.start()
    fd = os.memfd_create("small")
    os.ftruncate(fd, 4096)
    try:
        with pytest.raises((VhostUserError, OSError)):
            fe.message(VHOST_USER_SET_MEM_TABLE, struct.pack("<IIQQQQ", 1, 0, 0, 1 << 20, 0x7F0000000000, 0),
                       fds=[fd], need_reply=True)
            fe.message(VHOST_USER_GET_FEATURES)
    finally:
        os.close(fd)
    assert "the file holds 4096 bytes" in port.error
    wait_for("disconnected", lambda: port.status()["status"] == "disconnected")


def test_unknown_request_is_refused_and_the_connection_lives(vb: VBridge) -> None:
    vb.add("va")
    vb.add("vb")
    a = vb.connect("va")
    b = vb.connect("vb")
    with pytest.raises(VhostUserError):
        a.message(99, b"", need_reply=True)   # not a request we know: nack
    exchange(a, b, 10)


def test_garbage_on_the_socket_closes_only_that_connection(vb: VBridge) -> None:
    port = vb.add("va")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.path.join(vb.tmp, "va"))
    s.sendall(struct.pack("<III", 1, 0x1, 1 << 20))       # a 1 MiB payload is not allowed
    s.settimeout(5)
    assert s.recv(16) == b""
    s.close()
    assert "payload" in port.error
    vb.add("vb")
    exchange(vb.connect("va"), vb.connect("vb"), 10)


# ---------------------------------------------------------------- through OVSDB, with dpdk-testpmd


@needs_testpmd
@pytest.mark.integration
def test_two_testpmd_guests_exact_counts_and_ovsdb_status(switch) -> None:  # noqa: ANN001 - fixture
    switch.vsctl("add-br", "vbr0")
    for name in ("vhu0", "vhu1"):
        switch.vsctl("add-port", "vbr0", name, "--", "set", "Interface", name, "type=dpdkvhostuser")
    assert switch.get("Interface", "vhu0", "status:status") == "disconnected"
    assert switch.get("Interface", "vhu0", "link_state") == "down"
    socks = [os.path.join(switch.rundir, n) for n in ("vhu0", "vhu1")]
    with Testpmd([socks[0]]) as a, Testpmd([socks[1]]) as b:
        for name in ("vhu0", "vhu1"):
            switch.wait_for(f"{name} up", lambda n=name: switch.get("Interface", n, "link_state") == "up")
        status = switch.get("Interface", "vhu0", "status")
        assert 'mode=server' in status and 'status=connected' in status and 'num_of_vrings="2"' in status
        assert f'socket="{socks[0]}"' in status and 'vring_0_size="256"' in status and "features=" in status
        b.cmd("set fwd rxonly", "start")
        a.cmd("set fwd io", "start tx_first 4")       # 4 bursts of 32 from a to b
        time.sleep(1)
        a.cmd("stop", "set fwd rxonly", "start")
        b.cmd("stop", "set fwd io", "start tx_first 2")   # 64 back
        time.sleep(1)
        a.cmd("stop")
        b.cmd("stop")
        sa, sb = a.port_stats(), b.port_stats()
    assert sa == [(64, 128)] and sb == [(128, 64)], (sa, sb)
    switch.wait_for("statistics", lambda: switch.get("Interface", "vhu1", "statistics:tx_packets") == "128",
                    timeout=15)
    assert switch.get("Interface", "vhu0", "statistics:rx_packets") == "128"
    assert switch.get("Interface", "vhu0", "statistics:tx_packets") == "64"
    switch.wait_for("vhu0 down", lambda: switch.get("Interface", "vhu0", "link_state") == "down")
    assert switch.get("Interface", "vhu0", "status:status") == "disconnected"


@needs_testpmd
@pytest.mark.integration
def test_client_port_survives_a_restart_of_pyvswitch(switch) -> None:  # noqa: ANN001 - fixture
    socks = [os.path.join(switch.rundir, f"pmd{i}.sock") for i in range(2)]
    with Testpmd([socks[0]], server=True) as a, Testpmd([socks[1]], server=True) as b:
        switch.vsctl("add-br", "vbr1")
        for i in range(2):
            switch.vsctl("add-port", "vbr1", f"vhc{i}", "--", "set", "Interface", f"vhc{i}",
                         "type=dpdkvhostuserclient", f"options:vhost-server-path={socks[i]}")
        for i in range(2):
            switch.wait_for(f"vhc{i} up", lambda i=i: switch.get("Interface", f"vhc{i}", "link_state") == "up")
        assert switch.get("Interface", "vhc0", "status:mode") == "client"
        b.cmd("set fwd rxonly", "start")
        a.cmd("set fwd io", "start tx_first 1")
        time.sleep(1)
        a.cmd("stop")
        code, err = switch.stop()
        assert code == 0, err
        switch.start()                                      # same database: the ports come back as clients
        for i in range(2):
            switch.wait_for(f"vhc{i} up again", lambda i=i: switch.get("Interface", f"vhc{i}", "link_state") == "up")
        a.cmd("start tx_first 1")
        time.sleep(1)
        a.cmd("stop")
        b.cmd("stop")
        sa, sb = a.port_stats(), b.port_stats()
    assert sa[0][1] == 64 and sb[0][0] == 64, (sa, sb)


def test_missing_server_path_is_an_interface_error(switch) -> None:  # noqa: ANN001 - fixture
    switch.vsctl("add-br", "vbr2")
    switch.vsctl("add-port", "vbr2", "vhc9", "--", "set", "Interface", "vhc9", "type=dpdkvhostuserclient")
    switch.wait_for("error", lambda: "vhost-server-path" in switch.get("Interface", "vhc9", "error"))
    switch.vsctl("set", "Interface", "vhc9", f"options:vhost-server-path={switch.rundir}/nothing-there")
    switch.wait_for("error cleared", lambda: switch.get("Interface", "vhc9", "error") == "[]")
    assert switch.get("Interface", "vhc9", "status:status") == "disconnected"


@pytest.mark.integration
def test_hostile_guest_through_the_daemon_sets_interface_error(switch) -> None:  # noqa: ANN001 - fixture
    switch.vsctl("add-br", "vbr3")
    for name in ("vhg0", "vhg1", "vhx0"):
        switch.vsctl("add-port", "vbr3", name, "--", "set", "Interface", name, "type=dpdkvhostuser")
    fronts = []
    try:
        for name in ("vhg0", "vhg1", "vhx0"):
            fe = VhostUserFrontend(os.path.join(switch.rundir, name), mem_size=MEM)
            fronts.append(fe)
            fe.start()
            switch.wait_for(f"{name} up", lambda n=name: switch.get("Interface", n, "link_state") == "up")
        a, b, evil = fronts
        _loop(evil)
        evil.kick(TX)
        switch.wait_for("Interface.error", lambda: "loops" in switch.get("Interface", "vhx0", "error"))
        assert switch.get("Interface", "vhx0", "link_state") == "down"
        assert switch.get("Interface", "vhx0", "status:status") == "disconnected"
        exchange(a, b, 50)                                   # the daemon and the other ports carry on
        switch.wait_for("statistics", lambda: switch.get("Interface", "vhx0", "statistics:guest_bad_chain") == "1",
                        timeout=15)
        assert switch.get("Interface", "vhx0", "statistics:port_resets") == "1"
        assert switch.appctl("version").returncode == 0
    finally:
        for fe in fronts:
            fe.close()
