"""The numba classifier kernels against the plain-Python reference model (classifier.reference).

Hypothesis generates bursts: random MACs (unicast, multicast, broadcast, IEEE reserved),
VLAN tags, IPv4/IPv6/ARP/TCP/UDP/ICMP headers, truncated and runt frames, and random port
VLAN configurations; kernel and reference must agree on every key, every queue entry and
every counter. Frames sit at random heads in their slots (``META_HEAD``, the pool's
headroom), as the ports leave them.
"""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends import pool as P
from classifier import drops as D
from classifier import keys as K
from classifier import parse as parse_mod
from classifier.l2switch import switch_burst
from classifier.l2table import (
    I_LEARNED_COUNT,
    INFO_NAMES,
    l2_add_static,
    l2_age,
    l2_entries,
    l2_flush,
    l2_learn,
    l2_lookup,
    make_l2table,
)
from classifier.parse import parse_burst
from classifier.reference import PortVlanConfig, ReferenceSwitch, parse_reference
from vswitch.vlan import VlanConfig, fill_vlan_map

SLOT = 256
MAX_HEAD = 160
heads = st.one_of(st.sampled_from([0, P.DEFAULT_HEADROOM]), st.integers(0, MAX_HEAD))

# ---------------------------------------------------------------- frame strategies

MAC_POOL = [
    0x020000000001,
    0x020000000002,
    0x020000000003,
    0x525400ABCDEF,
    0xFFFFFFFFFFFF,  # broadcast
    0x01005E000001,  # IPv4 multicast
    0x0180C2000000,  # STP (reserved)
    0x0180C200000E,  # LLDP (reserved)
]
macs = st.one_of(st.sampled_from(MAC_POOL), st.integers(0, 2**48 - 1))


@st.composite
def l4_header(draw, proto: int) -> bytes:
    if proto == 6:
        return struct.pack("!HHIIBBHHH", draw(st.integers(0, 65535)), draw(st.integers(0, 65535)),
                           0, 0, 0x50, 0x02, 1024, 0, 0)
    if proto == 17:
        return struct.pack("!HHHH", draw(st.integers(0, 65535)), draw(st.integers(0, 65535)), 8, 0)
    if proto in (1, 58):
        return struct.pack("!BBH", draw(st.integers(0, 255)), draw(st.integers(0, 255)), 0) + b"\0" * 4
    return draw(st.binary(max_size=8))


@st.composite
def frames(draw) -> bytes:
    """A frame that is well formed up to a random point, then possibly cut short."""
    dst, src = draw(macs), draw(macs)
    out = dst.to_bytes(6, "big") + src.to_bytes(6, "big")
    if draw(st.booleans()):
        tci = (draw(st.integers(0, 7)) << 13) | draw(st.sampled_from([0, 1, 10, 20, 100, 4095]))
        out += struct.pack("!HH", 0x8100, tci)
    kind = draw(st.sampled_from(["ipv4", "ipv6", "arp", "other", "len"]))
    if kind == "ipv4":
        proto = draw(st.sampled_from([1, 6, 17, 47]))
        ihl = draw(st.sampled_from([5, 5, 6, 4, 15]))
        frag = draw(st.sampled_from([0, 0, 0x2000, 0x0001, 0x4000]))
        hdr = struct.pack("!BBHHHBBH4s4s", (4 << 4) | ihl, draw(st.integers(0, 255)), 0, 0, frag, 64,
                          proto, 0, draw(st.binary(min_size=4, max_size=4)),
                          draw(st.binary(min_size=4, max_size=4)))
        hdr += b"\x01" * max(0, ihl * 4 - 20)
        out += b"\x08\x00" + hdr + draw(l4_header(proto))
    elif kind == "ipv6":
        nh = draw(st.sampled_from([6, 17, 58, 0, 44, 60]))
        hdr = struct.pack("!IHBB", 0x60000000 | draw(st.integers(0, 0xFFFFF)), 0, nh, 64)
        hdr += draw(st.binary(min_size=32, max_size=32))
        ext = b""
        final = draw(st.sampled_from([6, 17, 58]))
        if nh in (0, 60):
            ext = struct.pack("!BB", final, 0) + b"\0" * 6
        elif nh == 44:
            ext = struct.pack("!BBHI", final, 0, draw(st.sampled_from([0, 8, 1])), 7)
        out += b"\x86\xdd" + hdr + ext + draw(l4_header(final if nh in (0, 44, 60) else nh))
    elif kind == "arp":
        out += b"\x08\x06" + struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, draw(st.integers(1, 2)),
                                         src.to_bytes(6, "big"), b"\x0a\0\0\1", b"\0" * 6, b"\x0a\0\0\2")
    elif kind == "other":
        out += b"\x88\xb5" + draw(st.binary(max_size=20))
    else:
        out += struct.pack("!H", 46) + draw(st.binary(max_size=20))
    if draw(st.integers(0, 3)) == 0:
        out = out[: draw(st.integers(0, len(out)))]
    return out[:SLOT]


any_frame = st.one_of(frames(), st.binary(max_size=64))


def load(frames_: list[bytes], in_ports: list[int], heads_: list[int] | None = None):
    """A pool of ``MAX_HEAD + SLOT``-byte rows with frame ``i`` in slot ``i`` at ``heads_[i]`` (0 by default);
    the bytes around each frame are garbage, so a kernel that reads outside it disagrees with the reference."""
    n = len(frames_)
    heads_ = heads_ or [0] * n
    data = np.random.default_rng(n).integers(0, 256, (n + 1, MAX_HEAD + SLOT), dtype=np.uint8)
    meta = np.zeros((n + 1, P.META_FIELDS), dtype=np.int32)
    for i, (f, p, h) in enumerate(zip(frames_, in_ports, heads_, strict=True)):
        data[i, h : h + len(f)] = np.frombuffer(f, dtype=np.uint8)
        meta[i, P.META_LEN] = len(f)
        meta[i, P.META_IN_PORT] = p
        meta[i, P.META_HEAD] = h
    # Burst in reverse slot order, so slot numbers and burst positions differ.
    burst = np.arange(n - 1, -1, -1, dtype=np.int32)
    return data, meta, burst


# ---------------------------------------------------------------- parse

def test_meta_layout_matches_the_pool() -> None:
    assert (parse_mod.META_LEN, parse_mod.META_IN_PORT, parse_mod.META_HEAD) == (P.META_LEN, P.META_IN_PORT,
                                                                                 P.META_HEAD)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(any_frame, heads), min_size=1, max_size=40))
def test_parse_matches_reference(burst: list[tuple[bytes, int]]) -> None:
    burst_frames = [f for f, _ in burst]
    data, meta, burst = load(burst_frames, [3] * len(burst_frames), [h for _, h in burst])
    keys = np.full((len(burst_frames) + 1, K.NKEYS), 0xDEAD, dtype=np.uint64)
    parse_burst(data, meta, burst, len(burst), keys)
    for slot, frame in enumerate(burst_frames):
        want = parse_reference(frame)
        got = {c: int(keys[slot, c]) for c in K.HEADER_FIELDS if keys[slot, c]}
        assert got == {c: v for c, v in want.items() if v}, frame.hex()
        assert keys[slot, K.K_IN_PORT] == 3


def test_parse_known_frames() -> None:
    tcp = bytes.fromhex(
        "020000000002" "020000000001" "8100" "a00a" "0800"
        "45000028000040004006" "0000" "0a000001" "0a000002" "3039" "0050" + "00" * 16
    )
    data, meta, burst = load([tcp, b"\x01" * 13, tcp[:16]], [0, 1, 2])
    keys = np.zeros((4, K.NKEYS), dtype=np.uint64)
    parse_burst(data, meta, burst, 3, keys)
    assert keys[0, K.K_VLAN_VID] == 10 | K.VID_PRESENT and keys[0, K.K_VLAN_PCP] == 5
    assert keys[0, K.K_ETH_TYPE] == 0x0800 and keys[0, K.K_IP_PROTO] == 6
    assert keys[0, K.K_NW_SRC] == 0x0A000001 and keys[0, K.K_NW_DST] == 0x0A000002
    assert (keys[0, K.K_TP_SRC], keys[0, K.K_TP_DST]) == (12345, 80)
    assert keys[1, K.K_DROP] == D.DROP_RX_RUNT
    assert keys[2, K.K_DROP] == D.DROP_RX_VLAN_TRUNCATED


def test_parse_reads_frames_at_their_head_in_a_pool() -> None:
    """Frames put into a pool with headroom, one moved down into the headroom (a push), one with a head
    outside its row (never read: a runt)."""
    tcp = bytes.fromhex(
        "020000000002" "020000000001" "0800"
        "45000028000040004006" "0000" "0a000001" "0a000002" "3039" "0050" + "00" * 16
    )
    for headroom in (0, P.DEFAULT_HEADROOM):
        pool = P.PacketPool(4, 128, headroom=headroom)
        pool.data[:] = 0xEE
        for s in range(3):
            pool.put(s, tcp, in_port=s)
        if headroom:
            pool.data[2, 60 : 60 + len(tcp)] = np.frombuffer(tcp, dtype=np.uint8)
            pool.meta[2, P.META_HEAD] = 60
        pool.meta[1, P.META_HEAD] = -5 if headroom else pool.data.shape[1] + 1
        keys = np.zeros((4, K.NKEYS), dtype=np.uint64)
        burst = np.arange(3, dtype=np.int32)
        parse_burst(pool.data, pool.meta, burst, 3, keys)
        for s in (0, 2):
            assert keys[s, K.K_DROP] == 0 and keys[s, K.K_ETH_SRC] == 0x020000000001
            assert keys[s, K.K_L3_OFS] == 14 and (keys[s, K.K_TP_SRC], keys[s, K.K_TP_DST]) == (12345, 80)
            assert keys[s, K.K_IN_PORT] == s
        assert keys[1, K.K_DROP] == D.DROP_RX_RUNT


# ---------------------------------------------------------------- L2 switching

vlan_configs = st.one_of(
    st.builds(VlanConfig, tag=st.sampled_from([1, 10, 20]), vlan_mode=st.just("access")),
    st.builds(VlanConfig, trunks=st.sampled_from([(), (10,), (10, 20), (0, 1, 10)]),
              vlan_mode=st.sampled_from([None, "trunk"])),
    st.builds(VlanConfig, tag=st.sampled_from([1, 10, 20]), trunks=st.sampled_from([(), (20,), (10, 100)]),
              vlan_mode=st.sampled_from(["native-tagged", "native-untagged"])),
)


class KernelSwitch:
    """The numba kernels wired the way the datapath wires them."""

    def __init__(self, configs: list[VlanConfig], ups: list[bool], limit: int, aging: int) -> None:
        self.n_ports = len(configs)
        self.vlan_map = np.zeros((self.n_ports, 2, 4096), dtype=np.int16)
        for p, (cfg, up) in enumerate(zip(configs, ups, strict=True)):
            fill_vlan_map(self.vlan_map, p, cfg, up)
        self.l2, self.info = make_l2table(limit, aging)
        self.drops = np.zeros((self.n_ports, D.N_DROPS), dtype=np.int64)

    def process(self, burst_frames: list[tuple[bytes, int]], now: int,
                heads_: list[int] | None = None) -> dict[int, list[tuple[int, int]]]:
        frames_ = [f for f, _ in burst_frames]
        data, meta, burst = load(frames_, [p for _, p in burst_frames], heads_)
        n = len(frames_)
        keys = np.zeros((n + 1, K.NKEYS), dtype=np.uint64)
        out = np.zeros((2, max(1, n * self.n_ports)), dtype=np.int32)
        out_start = np.zeros((2, self.n_ports + 1), dtype=np.int32)
        total = switch_burst(data, meta, burst, n, keys, self.l2, self.info, self.vlan_map, now,
                             self.drops, out, out_start)
        assert total == out_start[1, : self.n_ports].sum()
        # The kernel sees the burst in reverse slot order: map slots back to frame indices
        # and check each queue is in burst order.
        queues = {}
        for p in range(self.n_ports):
            first = out_start[0, p]
            entries = [(int(out[0, i]), int(out[1, i])) for i in range(first, first + out_start[1, p])]
            assert [s for s, _ in entries] == sorted((s for s, _ in entries), reverse=True)
            queues[p] = sorted(entries)
        return queues


def ref_for(configs: list[VlanConfig], ups: list[bool], limit: int, aging: int) -> ReferenceSwitch:
    return ReferenceSwitch(
        [PortVlanConfig(c.tag, c.trunks, c.vlan_mode, up) for c, up in zip(configs, ups, strict=True)],
        limit=limit, aging=aging,
    )


@st.composite
def scenarios(draw):
    n_ports = draw(st.integers(1, 5))
    configs = draw(st.lists(vlan_configs, min_size=n_ports, max_size=n_ports))
    ups = draw(st.lists(st.booleans(), min_size=n_ports, max_size=n_ports).map(
        lambda u: [x or i % 2 == 0 for i, x in enumerate(u)]))
    limit = draw(st.sampled_from([1, 3, 8192]))
    bursts = draw(st.lists(
        st.lists(st.tuples(any_frame, st.integers(0, n_ports - 1), heads), min_size=1, max_size=30),
        min_size=1, max_size=4))
    statics = draw(st.lists(st.tuples(st.sampled_from([0, 1, 10, 20]), st.sampled_from(MAC_POOL[:4]),
                                      st.integers(0, n_ports - 1)), max_size=2))
    return configs, ups, limit, bursts, statics


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_switch_matches_reference(scenario) -> None:
    configs, ups, limit, bursts, statics = scenario
    aging = 5
    kern = KernelSwitch(configs, ups, limit, aging)
    ref = ref_for(configs, ups, limit, aging)
    for vlan, mac, port in statics:
        assert l2_add_static(kern.l2, kern.info, vlan, np.uint64(mac), port)
        ref.add_static(vlan, mac, port)
    now = 100
    for burst in bursts:
        burst_frames = [(f, p) for f, p, _ in burst]
        got = kern.process(burst_frames, now, [h for _, _, h in burst])
        # The kernel sees frame i in slot i, in burst order n-1 .. 0: give the reference that order.
        n = len(burst_frames)
        want = ref.process(burst_frames[::-1], now)
        assert got == {p: sorted((n - 1 - j, edit) for j, edit in q) for p, q in want.items()}
        now += 3
        assert l2_age(kern.l2, kern.info, now) == ref.age(now)
    got_drops = {(p, r): int(kern.drops[p, r]) for p in range(kern.n_ports) for r in range(D.N_DROPS)
                 if kern.drops[p, r]}
    assert got_drops == ref.drops
    assert {name: int(kern.info[i]) for name, i in INFO_NAMES.items()} == ref.events
    got_table = {(vlan, mac): (port, static) for port, vlan, mac, _age, static in l2_entries(kern.l2, now)}
    assert got_table == {key: (e.port, e.static) for key, e in ref.table.items()}


# ---------------------------------------------------------------- L2 table

def test_table_limit_counts_misses_and_keeps_static() -> None:
    l2, info = make_l2table(limit=100, aging=300)
    assert l2_add_static(l2, info, 0, np.uint64(0x525400000001), 7)
    rng = np.random.default_rng(7)
    for mac in rng.integers(0, 2**47, 20000):
        l2_learn(l2, info, 0, np.uint64(mac), 1, 0)
    assert info[I_LEARNED_COUNT] == 100
    assert info[INFO_NAMES["table_full"]] == 19900
    assert l2_lookup(l2, info, 0, np.uint64(0x525400000001)) == 7
    # A learned frame from the static MAC on another port does not move it.
    l2_learn(l2, info, 0, np.uint64(0x525400000001), 2, 0)
    assert l2_lookup(l2, info, 0, np.uint64(0x525400000001)) == 7


def test_aging_and_flush_keep_every_remaining_entry_reachable() -> None:
    l2, info = make_l2table(limit=5000, aging=10)
    rng = np.random.default_rng(3)
    macs_ = [int(m) for m in rng.integers(0, 2**47, 5000)]
    for i, mac in enumerate(macs_):
        l2_learn(l2, info, i % 3, np.uint64(mac), i % 4, i % 20)
    # Entries last seen at t <= 10 are 10 s old or more at t = 20 and age out; the rest must still be found.
    removed = l2_age(l2, info, 20)
    assert removed == sum(1 for i in range(5000) if i % 20 <= 10)
    for i, mac in enumerate(macs_):
        want = i % 4 if i % 20 > 10 else -1
        assert l2_lookup(l2, info, i % 3, np.uint64(mac)) == want
    l2_flush(l2, info, 2, False)
    for i, mac in enumerate(macs_):
        want = i % 4 if (i % 20 > 10 and i % 4 != 2) else -1
        assert l2_lookup(l2, info, i % 3, np.uint64(mac)) == want
