"""Flow key extraction (dpif.extract) against the plain-Python model (dpif.extract_ref).

Hypothesis builds frames (Ethernet, 0-3 tags of either TPID, IPv4 with options and fragments,
IPv6 with extension headers and fragments, ARP / RARP, LLC/SNAP, 802.3, other ethertypes; TCP, UDP,
SCTP, ICMP, ICMPv6 and neighbour discovery with options; lying length fields, random trailing bytes,
truncation at any length, a few flipped bytes) and fully random byte strings, and puts them in
bursts at heads 0 and 128 of a pool whose other bytes, other slots and other key rows are garbage:
every key word and every drop reason must equal the model's, and nothing else may change. Explicit
frames check the keys a user would recognise, and frames with at most one tag are checked against
the older parser, classifier/parse.py, on the fields both have.
"""

from __future__ import annotations

import random

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.pool import META_IN_PORT, META_LEN
from classifier import keys as CK
from classifier.drops import DROP_RX_RUNT, DROP_RX_VLAN_TRUNCATED
from classifier.parse import parse_burst
from dpif import extract_ref as R
from dpif import key as K
from dpif.extract import META_HEAD, extract_burst

HEADS = (0, 128)
ROW = 128 + 768
SETTINGS = settings(derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MAC_A = 0x02_00_00_00_00_0A
MAC_B = 0x02_00_00_00_00_0B


# ----------------------------------------------------------------------------------------------
# frame builders


def b16(v: int) -> bytes:
    return (v & 0xFFFF).to_bytes(2, "big")


class Gen:
    """Draws for one frame: structure (kinds, lengths, chosen values) from hypothesis, filler bytes from a
    PRNG seeded by hypothesis (hypothesis's own bytes are mostly zeros, which would hide misread offsets)."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.rng = random.Random(draw(st.integers(0, 2**64 - 1)))

    def int(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def bytes(self, lo: int, hi: int | None = None) -> bytes:
        return self.rng.randbytes(self.int(lo, hi) if hi is not None else lo)

    def pick(self, common: list, lo: int = 0, hi: int = 255, rare: int = 8) -> int:
        """One of ``common``, or (one time in ``rare``) any value in ``[lo, hi]``."""
        if self.int(0, rare - 1) == 0:
            return self.int(lo, hi)
        return self.draw(st.sampled_from(common))

    def chance(self, one_in: int) -> bool:
        return self.int(0, one_in - 1) == 0


PROTOS = [6, 6, 17, 17, 132, 1, 1, 58, 58, 58, 2, 47]


def nd_options(g: Gen) -> bytes:
    out = b""
    for _ in range(g.int(0, 3)):
        kind = g.draw(st.sampled_from(["sll", "tll", "sll", "tll", "wide", "other", "other", "zero", "long"]))
        if kind in ("sll", "tll"):
            out += bytes([1 if kind == "sll" else 2, 1]) + g.bytes(6)
        elif kind == "wide":                   # a link-layer address option that is not 6 bytes
            out += bytes([g.int(1, 2), 2]) + g.bytes(14)
        elif kind == "other":
            n = g.int(1, 2)
            out += bytes([g.int(0, 255), n]) + g.bytes(8 * n - 2)
        elif kind == "zero":
            out += bytes([g.int(0, 255), 0]) + g.bytes(6)
        else:
            out += bytes([g.int(0, 255), g.int(2, 255)]) + g.bytes(6)
    return out


def l4(g: Gen, proto: int) -> bytes:
    """An L4 header (and a little payload) for ``proto``."""
    payload = g.bytes(0, 12)
    if proto == 6:
        return g.bytes(20) + payload
    if proto == 17:
        return g.bytes(8) + payload
    if proto == 132:
        return g.bytes(12) + payload
    if proto in (1, 58):
        t = g.pick([135, 136, 135, 136, 135, 136, 128, 129, 0, 8])
        code = g.pick([0], rare=6)
        if t in (135, 136):
            return bytes([t, code]) + g.bytes(6) + g.bytes(16) + nd_options(g) + (g.bytes(1, 7) if g.chance(4) else b"")
        return bytes([t, code]) + g.bytes(6) + payload
    return payload


def length(g: Gen, true: int) -> int:
    """A length field: mostly the truth, sometimes a little short (cutting the last header), sometimes anything."""
    if g.chance(5):
        return max(0, true - g.int(1, 12)) if g.chance(2) else g.int(0, true + 16)
    return true


def ipv4(g: Gen) -> bytes:
    opts = g.bytes(4 * g.int(0, 10))
    ihl = g.int(0, 15) if g.chance(10) else 5 + len(opts) // 4
    proto = g.pick(PROTOS)
    body = l4(g, proto)
    frag = g.pick([0, 0, 0, 0x4000, 0x4000, 0x2000, 0x2000 | 7, 12, 0x1000, 0x1FFF, 0x8000], 0, 0xFFFF, rare=4)
    version = g.int(0, 15) if g.chance(10) else 4
    header = (bytes([version << 4 | ihl, g.int(0, 255)]) + b16(length(g, 20 + len(opts) + len(body))) + g.bytes(2)
              + b16(frag) + bytes([g.int(0, 255), proto]) + g.bytes(10) + opts)
    return header + body


def ipv6(g: Gen) -> bytes:
    chain = g.draw(st.lists(st.sampled_from([0, 43, 60, 44]), max_size=3))
    proto = g.pick(PROTOS)
    exts = b""
    for h, nxt in zip(chain, [*chain[1:], proto], strict=False):
        if h == 44:
            offset = g.pick([0, 0, 1, 0x1FFF], 0, 0x1FFF, rare=3)
            exts += bytes([nxt, 0]) + b16(offset << 3 | g.int(0, 7)) + g.bytes(4)
        else:
            n = g.int(0, 2)
            exts += bytes([nxt, n]) + g.bytes(6 + 8 * n)
    payload = exts + l4(g, proto)
    first = 6 << 28 | g.int(0, 255) << 20 | g.rng.getrandbits(20)
    return (first.to_bytes(4, "big") + b16(length(g, len(payload))) + bytes([chain[0] if chain else proto])
            + bytes([g.int(0, 255)]) + g.bytes(32) + payload)


def arp(g: Gen) -> bytes:
    fixed = g.bytes(6) if g.chance(6) else b"\x00\x01\x08\x00\x06\x04"
    return fixed + b16(g.pick([1, 2, 3, 4, 0x100, 0x1FF], 0, 0xFFFF)) + g.bytes(20)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """One structured frame, possibly lying, padded, truncated or damaged."""
    g = Gen(draw)
    macs = MAC_A.to_bytes(6, "big") + MAC_B.to_bytes(6, "big") if g.chance(4) else g.bytes(12)
    n_tags = g.draw(st.sampled_from([0, 0, 0, 1, 1, 1, 2, 2, 3]))
    tags = b"".join(b16(g.draw(st.sampled_from([0x8100, 0x88A8]))) + g.bytes(2) for _ in range(n_tags))
    kind = g.draw(st.sampled_from(["ipv4", "ipv4", "ipv6", "ipv6", "ipv6", "arp", "rarp", "snap", "802.3", "other"]))
    if kind == "ipv4":
        body = b"\x08\x00" + ipv4(g)
    elif kind == "ipv6":
        body = b"\x86\xdd" + ipv6(g)
    elif kind in ("arp", "rarp"):
        body = (b"\x08\x06" if kind == "arp" else b"\x80\x35") + arp(g)
    elif kind == "snap":
        inner = g.draw(st.sampled_from([0x0800, 0x0806, 0x86DD, 0x0100, 0x05FF]))
        payload = ipv4(g) if inner == 0x0800 else ipv6(g) if inner == 0x86DD else arp(g)
        oui = g.bytes(3) if g.chance(5) else b"\0\0\0"
        llc = g.bytes(3) if g.chance(5) else b"\xaa\xaa\x03"
        body = b16(g.int(0, 0x5FF)) + llc + oui + b16(inner) + payload
    elif kind == "802.3":
        body = b16(g.int(0, 0x5FF)) + g.bytes(0, 40)
    else:
        body = b16(g.int(0x600, 0xFFFF)) + g.bytes(0, 40)
    f = bytearray(macs + tags + body + g.bytes(0, 24))
    if g.chance(6):
        for _ in range(g.int(1, 3)):
            f[g.int(0, len(f) - 1)] = g.int(0, 255)
    if g.chance(4):
        f = f[: g.int(0, len(f)) if g.chance(4) else g.int(14, len(f))]
    return bytes(f)


# ----------------------------------------------------------------------------------------------
# running the kernel on a pool


def run_burst(items: list[tuple[bytes, int, int]], seed: int) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Put ``(frame, in_port, head)`` items in random slots of a garbage-filled pool and extract them.

    Returns the key array, the reasons, the kernel's count and the slot of every item; checks that no
    other key row and no pool byte changed.
    """
    rng = np.random.default_rng(seed)
    n_slots = 2 * len(items) + 3
    data = rng.integers(0, 256, (n_slots, ROW), dtype=np.uint8)
    meta = rng.integers(-5, 5000, (n_slots, 4), dtype=np.int32)
    slots = rng.permutation(n_slots)[: len(items)].astype(np.int32)
    for (frame, port, head), s in zip(items, slots, strict=True):
        data[s, head : head + len(frame)] = np.frombuffer(frame, dtype=np.uint8)
        meta[s, META_LEN], meta[s, META_IN_PORT], meta[s, META_HEAD] = len(frame), port, head
    keys = rng.integers(0, 2**63, (n_slots, K.KEY_WORDS), dtype=np.uint64)
    reasons = np.full(len(items) + 2, 77, dtype=np.int64)
    before = keys.copy(), data.copy(), meta.copy()
    count = extract_burst(data, meta, slots, len(items), keys, reasons)
    others = np.setdiff1d(np.arange(n_slots), slots)
    assert (keys[others] == before[0][others]).all(), "a key row outside the burst changed"
    assert (data == before[1]).all() and (meta == before[2]).all(), "the pool changed"
    assert (reasons[len(items):] == 77).all(), "reasons written past n"
    return keys, reasons, count, slots


def check_against_model(items: list[tuple[bytes, int, int]], seed: int) -> None:
    keys, reasons, count, slots = run_burst(items, seed)
    expected_count = 0
    for i, ((frame, port, _), s) in enumerate(zip(items, slots, strict=True)):
        row, reason = R.extract(frame, port)
        if not (keys[s] == row).all() or reasons[i] != reason:
            diff = {w: (hex(int(keys[s, w])), hex(int(row[w]))) for w in range(K.KEY_WORDS) if keys[s, w] != row[w]}
            raise AssertionError(f"frame {frame.hex()}: reason {reasons[i]} vs {reason}; words (kernel, model) {diff}")
        expected_count += reason != 0
    assert count == expected_count


item = st.tuples(frames(), st.integers(0, 2**31 - 1), st.sampled_from(HEADS))
random_item = st.tuples(st.binary(max_size=160), st.integers(0, 2**31 - 1), st.sampled_from(HEADS))


@SETTINGS
@given(st.lists(item, min_size=1, max_size=12), st.integers(0, 2**32 - 1))
def test_structured_frames_match_model(items: list[tuple[bytes, int, int]], seed: int) -> None:
    check_against_model(items, seed)


@settings(SETTINGS, max_examples=2000)
@given(item, st.integers(0, 2**32 - 1))
def test_single_structured_frame_matches_model(one: tuple[bytes, int, int], seed: int) -> None:
    check_against_model([one], seed)


@SETTINGS
@given(st.lists(random_item, min_size=1, max_size=12), st.integers(0, 2**32 - 1))
def test_random_bytes_match_model(items: list[tuple[bytes, int, int]], seed: int) -> None:
    check_against_model(items, seed)


@settings(SETTINGS, max_examples=50)
@given(frames(), st.integers(0, 2**32 - 1))
def test_every_truncation_matches_model(frame: bytes, seed: int) -> None:
    """Every prefix of a frame, in one burst."""
    check_against_model([(frame[:n], 3, HEADS[n % 2]) for n in range(len(frame) + 1)], seed)


# ----------------------------------------------------------------------------------------------
# frames a user would recognise


def extract_one(frame: bytes, in_port: int = 5, head: int = 128) -> tuple[np.ndarray, int]:
    """The kernel's key row and reason for one frame (and the model must agree)."""
    keys, reasons, count, slots = run_burst([(frame, in_port, head)], 1)
    row, reason = R.extract(frame, in_port)
    assert (keys[slots[0]] == row).all() and reasons[0] == reason and count == (reason != 0)
    return keys[slots[0]], int(reasons[0])


def eth(dst: int, src: int, ethertype: int, tags: tuple[tuple[int, int], ...] = ()) -> bytes:
    return (dst.to_bytes(6, "big") + src.to_bytes(6, "big") + b"".join(b16(t) + b16(c) for t, c in tags)
            + b16(ethertype))


def ip4(proto: int, src: int, dst: int, body: bytes, tos: int = 0, ttl: int = 64, frag: int = 0x4000) -> bytes:
    return (bytes([0x45, tos]) + b16(20 + len(body)) + b"\x12\x34" + b16(frag) + bytes([ttl, proto]) + b"\0\0"
            + src.to_bytes(4, "big") + dst.to_bytes(4, "big") + body)


def ip6(nh: int, src: int, dst: int, payload: bytes, tc: int = 0, label: int = 0, hlim: int = 64) -> bytes:
    return ((6 << 28 | tc << 20 | label).to_bytes(4, "big") + b16(len(payload)) + bytes([nh, hlim])
            + src.to_bytes(16, "big") + dst.to_bytes(16, "big") + payload)


def assert_key(row: np.ndarray, **fields: int) -> None:
    expected = K.key_fields(K.key_from_fields(**fields))
    assert K.key_fields(row) == expected, (K.key_fields(row), expected)


def test_ping() -> None:
    echo = bytes([8, 0]) + b"\0\0" + b"\x00\x01\x00\x07" + b"x" * 56
    row, reason = extract_one(eth(MAC_B, MAC_A, 0x0800) + ip4(1, 0x0A000001, 0x0A000002, echo), in_port=3)
    assert reason == 0
    assert_key(row, in_port=3, eth_dst=MAC_B, eth_src=MAC_A, eth_type=0x0800, nw_proto=1, nw_ttl=64,
               nw_src=0x0A000001, nw_dst=0x0A000002, icmp_type=8, icmp_code=0)


def test_arp_request() -> None:
    body = b"\x00\x01\x08\x00\x06\x04\x00\x01" + MAC_A.to_bytes(6, "big") + bytes([10, 0, 0, 1]) + b"\0" * 6 + bytes(
        [10, 0, 0, 2])
    row, reason = extract_one(eth(0xFFFFFFFFFFFF, MAC_A, 0x0806) + body + b"\0" * 18)
    assert reason == 0
    assert_key(row, in_port=5, eth_dst=0xFFFFFFFFFFFF, eth_src=MAC_A, eth_type=0x0806, arp_op=1,
               arp_spa=0x0A000001, arp_tpa=0x0A000002, arp_sha=MAC_A)
    # opcodes above 255 are 0 (ovs-fields(7)); RARP has the same fields
    big = body[:6] + b16(0x101) + body[8:]
    assert extract_one(eth(0xFFFFFFFFFFFF, MAC_A, 0x0806) + big)[0][K.W_NW] == 0
    assert extract_one(eth(0xFFFFFFFFFFFF, MAC_A, 0x8035) + body)[0][K.W_NW_SRC] == 0x0A000001


def test_double_tagged_udp() -> None:
    udp = b16(1234) + b16(53) + b16(12) + b"\0\0" + b"abcd"
    tags = ((0x88A8, 3 << 13 | 100), (0x8100, 5 << 13 | 0x1000 | 200))   # the inner tag has DEI set
    row, reason = extract_one(eth(MAC_B, MAC_A, 0x0800, tags) + ip4(17, 0xC0A80001, 0xC0A80002, udp, tos=0xB8))
    assert reason == 0
    assert row[K.W_VLAN_TCI] == 0x88A8 << 16 | 0x1000 | 3 << 13 | 100
    assert row[K.W_VLAN_TCI2] == 0x8100 << 16 | 0x1000 | 5 << 13 | 200
    assert_key(row, in_port=5, eth_dst=MAC_B, eth_src=MAC_A, vlan_tci=0x7064, vlan_tpid=0x88A8,
               vlan_tci2=0xB0C8, vlan_tpid2=0x8100, eth_type=0x0800, nw_proto=17, nw_tos=0xB8, nw_ttl=64,
               nw_src=0xC0A80001, nw_dst=0xC0A80002, tp_src=1234, tp_dst=53)


def test_single_tag_ignores_dei_and_third_tag_stops() -> None:
    tagged = extract_one(eth(MAC_B, MAC_A, 0x0806, ((0x8100, 10),)) + b"\0" * 28)[0]
    dei = extract_one(eth(MAC_B, MAC_A, 0x0806, ((0x8100, 0x1000 | 10),)) + b"\0" * 28)[0]
    assert tagged[K.W_VLAN_TCI] == dei[K.W_VLAN_TCI] == 0x8100 << 16 | 0x1000 | 10 and tagged[K.W_VLAN_TCI2] == 0
    three = eth(MAC_B, MAC_A, 0x0800, ((0x8100, 1), (0x8100, 2), (0x8100, 3))) + ip4(6, 1, 2, b"\0" * 20)
    row, reason = extract_one(three)
    assert reason == 0 and row[K.W_ETH_TYPE] == 0x8100 and row[K.W_NW_SRC] == 0


def test_runt_and_truncated_tags() -> None:
    row, reason = extract_one(bytes(range(13)), in_port=9)
    assert reason == DROP_RX_RUNT
    assert_key(row, in_port=9)
    row, reason = extract_one(eth(MAC_B, MAC_A, 0x8100)[:-2] + b"\x81\x00\x00\x0a")   # tag without ethertype
    assert reason == DROP_RX_VLAN_TRUNCATED
    assert_key(row, in_port=5, eth_dst=MAC_B, eth_src=MAC_A, eth_type=0x8100)
    inner_cut = eth(MAC_B, MAC_A, 0x88A8, ((0x8100, 7),)) + b"\x00"
    row, reason = extract_one(inner_cut)
    assert reason == DROP_RX_VLAN_TRUNCATED
    assert_key(row, in_port=5, eth_dst=MAC_B, eth_src=MAC_A, vlan_tci=0x1007, vlan_tpid=0x8100, eth_type=0x88A8)
    keys, reasons, count, _ = run_burst([(b"", 1, 0), (eth(1, 2, 0x0800), 1, 128), (b"\0" * 15, 1, 0)], 2)
    assert list(reasons[:3]) == [DROP_RX_RUNT, 0, 0] and count == 1


def test_ipv6_tcp_syn_after_hop_by_hop() -> None:
    tcp = b16(40000) + b16(443) + b"\0" * 8 + b"\x50\x02" + b"\xff\xff" + b"\0" * 4
    hbh = bytes([6, 0]) + b"\x01\x04\0\0\0\0"
    src, dst = 0xFE80 << 112 | 1, 0x20010DB8 << 96 | 2
    row, _ = extract_one(eth(MAC_B, MAC_A, 0x86DD) + ip6(0, src, dst, hbh + tcp, tc=0x28, label=0xABCDE, hlim=255))
    assert_key(row, in_port=5, eth_dst=MAC_B, eth_src=MAC_A, eth_type=0x86DD, nw_proto=6, nw_tos=0x28,
               nw_ttl=255, ipv6_src=src, ipv6_dst=dst, ipv6_label=0xABCDE, tp_src=40000, tp_dst=443,
               tcp_flags=0x002)


def test_neighbour_discovery() -> None:
    target = 0x20010DB8 << 96 | 0x99
    ns = bytes([135, 0]) + b"\0" * 6 + target.to_bytes(16, "big") + b"\x01\x01" + MAC_A.to_bytes(6, "big")
    row, _ = extract_one(eth(0x3333FF000099, MAC_A, 0x86DD) + ip6(58, 1, 0xFF02 << 112 | 0x1FF000099, ns, hlim=255))
    assert_key(row, in_port=5, eth_dst=0x3333FF000099, eth_src=MAC_A, eth_type=0x86DD, nw_proto=58, nw_ttl=255,
               ipv6_src=1, ipv6_dst=0xFF02 << 112 | 0x1FF000099, icmp_type=135, nd_target=target, nd_sll=MAC_A)
    na = bytes([136, 0, 0, 0]) + b"\x60\0\0\0" + target.to_bytes(16, "big") + b"\x02\x01" + MAC_B.to_bytes(6, "big")
    row, _ = extract_one(eth(MAC_A, MAC_B, 0x86DD) + ip6(58, 2, 1, na, hlim=255))
    assert row[K.W_ARP_THA] == MAC_B and row[K.W_ARP_SHA] == 0 and row[K.W_ND_TARGET + 1] == 0x99
    # a zero-length option makes the message malformed: no ND field, type and code kept
    bad = ns + b"\x0e\x00" + b"\0" * 6
    row, _ = extract_one(eth(MAC_B, MAC_A, 0x86DD) + ip6(58, 1, 2, bad, hlim=255))
    assert row[K.W_TP] == 135 and row[K.W_ND_TARGET] == row[K.W_ND_TARGET + 1] == row[K.W_ARP_SHA] == 0
    # so does a second source link-layer address option
    two = ns + b"\x01\x01" + MAC_B.to_bytes(6, "big")
    row, _ = extract_one(eth(MAC_B, MAC_A, 0x86DD) + ip6(58, 1, 2, two, hlim=255))
    assert row[K.W_TP] == 135 and row[K.W_ND_TARGET + 1] == row[K.W_ARP_SHA] == 0


def test_fragments() -> None:
    udp = b16(1) + b16(2) + b16(8) + b"\0\0"
    first = extract_one(eth(MAC_B, MAC_A, 0x0800) + ip4(17, 1, 2, udp, frag=0x2000))[0]
    later = extract_one(eth(MAC_B, MAC_A, 0x0800) + ip4(17, 1, 2, udp, frag=185))[0]
    dont = extract_one(eth(MAC_B, MAC_A, 0x0800) + ip4(17, 1, 2, udp, frag=0x4000))[0]
    assert first[K.W_NW] == 17 | 64 << 16 | K.FRAG_ANY << 24 and first[K.W_TP] == 1 | 2 << 16
    assert later[K.W_NW] == 17 | 64 << 16 | (K.FRAG_ANY | K.FRAG_LATER) << 24 and later[K.W_TP] == 0
    assert dont[K.W_NW] == 17 | 64 << 16 and dont[K.W_TP] == 1 | 2 << 16
    frag6 = bytes([17, 0]) + b16(100 << 3 | 1) + b"\0\0\0\1"
    later6 = extract_one(eth(MAC_B, MAC_A, 0x86DD) + ip6(44, 1, 2, frag6 + udp))[0]
    assert later6[K.W_NW] == 44 | 64 << 16 | (K.FRAG_ANY | K.FRAG_LATER) << 24 and later6[K.W_TP] == 0
    first6 = extract_one(eth(MAC_B, MAC_A, 0x86DD) + ip6(44, 1, 2, frag6[:2] + b16(1) + frag6[4:] + udp))[0]
    assert first6[K.W_NW] == 17 | 64 << 16 | K.FRAG_ANY << 24 and first6[K.W_TP] == 1 | 2 << 16


def test_lengths_padding_and_802_3() -> None:
    udp = b16(7) + b16(9) + b16(8) + b"\0\0"
    plain = eth(MAC_B, MAC_A, 0x0800) + ip4(17, 1, 2, udp)
    padded = extract_one(plain + b"\xee" * 18)[0]
    assert (padded == extract_one(plain)[0]).all()
    # a packet that ends at its IP header: the padding is not read as ports
    no_l4 = bytearray(plain)
    no_l4[16:18] = b16(20)
    assert extract_one(bytes(no_l4))[0][K.W_TP] == 0
    # an IP packet longer than the frame: only the Ethernet words
    cut = extract_one(plain[:-1])[0]
    assert_key(cut, in_port=5, eth_dst=MAC_B, eth_src=MAC_A, eth_type=0x0800)
    # 802.3 with LLC (STP) and with LLC/SNAP carrying IPv4
    stp = extract_one(eth(0x0180C2000000, MAC_A, 38) + b"\x42\x42\x03" + b"\0" * 35)[0]
    assert stp[K.W_ETH_TYPE] == K.ETH_TYPE_NONE == 0x05FF
    snap = extract_one(eth(MAC_B, MAC_A, 60) + b"\xaa\xaa\x03\0\0\0\x08\x00" + ip4(17, 1, 2, udp))[0]
    assert snap[K.W_ETH_TYPE] == 0x0800 and snap[K.W_TP] == 7 | 9 << 16
    other_oui = extract_one(eth(MAC_B, MAC_A, 60) + b"\xaa\xaa\x03\0\0\x0c\x08\x00" + ip4(17, 1, 2, udp))[0]
    assert other_oui[K.W_ETH_TYPE] == 0x05FF and other_oui[K.W_NW] == 0
    small_type = extract_one(eth(MAC_B, MAC_A, 60) + b"\xaa\xaa\x03\0\0\0\x05\xff" + ip4(17, 1, 2, udp))[0]
    assert small_type[K.W_ETH_TYPE] == 0x05FF


def test_every_ip_length_matches_model() -> None:
    """Each L4 header cut at every length by an honest IP length field, padded to 80 bytes: W_TP appears
    exactly when the fixed header is whole (TCP 20, UDP 8, SCTP 12, ICMP 8 bytes)."""
    rng = random.Random(7)
    target = 0x20010DB8 << 96 | 0x99
    nd_opts = b"\x0e\x01" + rng.randbytes(6) + b"\x01\x01" + MAC_A.to_bytes(6, "big") + b"\x02\x02" + rng.randbytes(14)
    cases = [(4, 6, rng.randbytes(24), 20), (4, 17, rng.randbytes(10), 8), (4, 132, rng.randbytes(14), 12),
             (4, 1, b"\x08\x00" + rng.randbytes(10), 8), (4, 58, b"\x87\x00" + rng.randbytes(30), None),
             (6, 6, rng.randbytes(24), 20), (6, 17, rng.randbytes(10), 8), (6, 132, rng.randbytes(14), 12),
             (6, 58, b"\x80\x00" + rng.randbytes(10), 8), (6, 1, b"\x08\x00" + rng.randbytes(10), None),
             (6, 58, b"\x87\x00\0\0\0\0\0\0" + target.to_bytes(16, "big") + nd_opts + b"\x05", 8),
             (6, 58, b"\x88\x00\0\0\0\0\0\0" + target.to_bytes(16, "big") + nd_opts[8:], 8)]
    items = []
    for version, proto, l4_, need in cases:
        for n in range(len(l4_) + 1):
            packet = ip4(proto, 1, 2, l4_[:n]) if version == 4 else ip6(proto, 1, 2, l4_[:n])
            frame = eth(MAC_B, MAC_A, 0x0800 if version == 4 else 0x86DD) + packet
            frame += rng.randbytes(max(0, 80 - len(frame)))
            items.append((frame, 1, 128))
            row, _ = R.extract(frame, 1)
            assert (row[K.W_TP] != 0) == (need is not None and n >= need), (version, proto, n)
    check_against_model(items, 3)
    ns = eth(MAC_B, MAC_A, 0x86DD) + ip6(58, 1, 2, cases[-2][2])
    row, _ = R.extract(ns, 1)
    assert row[K.W_ND_TARGET + 1] == 0x99 and row[K.W_ARP_SHA] == MAC_A     # the 16-byte option is skipped


def test_head_and_length_clamped_to_the_row() -> None:
    frame = eth(MAC_B, MAC_A, 0x0800) + ip4(6, 1, 2, b"\0" * 20)
    data = np.zeros((1, 64), dtype=np.uint8)
    data[0, 40:64] = np.frombuffer(frame[:24], dtype=np.uint8)
    meta = np.array([[len(frame), 1, 40, 0]], dtype=np.int32)
    keys = np.zeros((1, K.KEY_WORDS), dtype=np.uint64)
    reasons = np.zeros(1, dtype=np.int64)
    extract_burst(data, meta, np.zeros(1, dtype=np.int32), 1, keys, reasons)
    assert (keys[0] == R.extract(frame[:24], 1)[0]).all()
    meta[0, 2] = 1000
    extract_burst(data, meta, np.zeros(1, dtype=np.int32), 1, keys, reasons)
    assert reasons[0] == DROP_RX_RUNT


# ----------------------------------------------------------------------------------------------
# agreement with classifier/parse.py (frames with at most one 802.1Q tag, lengths that tell the truth)


@st.composite
def honest_frames(draw: st.DrawFn) -> bytes:
    g = Gen(draw)
    tag = b"\x81\x00" + g.bytes(2) if g.chance(2) else b""
    kind = g.draw(st.sampled_from(["ipv4", "ipv6", "arp", "other"]))
    if kind == "ipv4":
        opts = g.bytes(4 * g.int(0, 10))
        proto = g.pick(PROTOS)
        body = l4(g, proto)
        frag = g.draw(st.sampled_from([0, 0x4000, 0x2000, 12]))
        payload = b"\x08\x00" + (bytes([0x45 + len(opts) // 4, g.int(0, 255)]) + b16(20 + len(opts) + len(body))
                                 + g.bytes(2) + b16(frag) + bytes([g.int(0, 255), proto]) + g.bytes(10) + opts + body)
    elif kind == "ipv6":
        chain = g.draw(st.lists(st.sampled_from([0, 43, 60, 44]), max_size=3))
        proto = g.pick(PROTOS)
        exts = b""
        for h, nxt in zip(chain, [*chain[1:], proto], strict=False):
            if h == 44:
                exts += bytes([nxt, 0]) + b16(g.draw(st.sampled_from([0, 1, 8, 0x100]))) + g.bytes(4)
            else:
                exts += bytes([nxt, 0]) + g.bytes(6)
        body = exts + l4(g, proto)
        payload = (b"\x86\xdd\x60\0\0\0" + b16(len(body)) + bytes([chain[0] if chain else proto, 64]) + g.bytes(32)
                   + body)
    elif kind == "arp":
        payload = b"\x08\x06\x00\x01\x08\x00\x06\x04" + g.bytes(22)
    else:
        payload = b16(g.draw(st.sampled_from([0x88CC, 0x8847, 0x0100, 0x05DC]))) + g.bytes(0, 30)
    return g.bytes(12) + tag + payload + g.bytes(0, 20)


@settings(SETTINGS, max_examples=400)
@given(st.lists(honest_frames(), min_size=1, max_size=8))
def test_agrees_with_classifier_parse(frames_: list[bytes]) -> None:
    n = len(frames_)
    data = np.zeros((n, ROW), dtype=np.uint8)
    meta = np.zeros((n, 4), dtype=np.int32)
    for s, f in enumerate(frames_):
        data[s, : len(f)] = np.frombuffer(f, dtype=np.uint8)
        meta[s, META_LEN], meta[s, META_IN_PORT] = len(f), s
    burst = np.arange(n, dtype=np.int32)
    old = np.zeros((n, CK.NKEYS), dtype=np.uint64)
    parse_burst(data, meta, burst, n, old)
    new = np.zeros((n, K.KEY_WORDS), dtype=np.uint64)
    extract_burst(data, meta, burst, n, new, np.zeros(n, dtype=np.int64))
    for s, f in enumerate(frames_):
        o, k = old[s], new[s]
        assert o[CK.K_ETH_DST] == k[K.W_ETH_DST] and o[CK.K_ETH_SRC] == k[K.W_ETH_SRC], f.hex()
        tci = int(k[K.W_VLAN_TCI])
        assert o[CK.K_VLAN_VID] == (tci & 0xFFF | CK.VID_PRESENT if tci else 0), f.hex()
        assert o[CK.K_VLAN_PCP] == (tci >> 13 & 7), f.hex()
        assert o[CK.K_ETH_TYPE] == k[K.W_ETH_TYPE], f.hex()
        et = int(k[K.W_ETH_TYPE])
        if et == 0x0800:
            assert o[CK.K_NW_SRC] == k[K.W_NW_SRC] and o[CK.K_NW_DST] == k[K.W_NW_DST], f.hex()
        if et == 0x86DD:
            assert (o[CK.K_IPV6_SRC_HI], o[CK.K_IPV6_SRC_LO], o[CK.K_IPV6_DST_HI], o[CK.K_IPV6_DST_LO]) == (
                k[K.W_IPV6_SRC], k[K.W_IPV6_SRC + 1], k[K.W_IPV6_DST], k[K.W_IPV6_DST + 1]), f.hex()
        if et == 0x0806:
            assert (o[CK.K_ARP_SPA], o[CK.K_ARP_TPA], o[CK.K_ARP_SHA], o[CK.K_ARP_THA]) == (
                k[K.W_NW_SRC], k[K.W_NW_DST], k[K.W_ARP_SHA], k[K.W_ARP_THA]), f.hex()
        proto = int(k[K.W_NW]) & 0xFF
        both_parse = proto in (6, 17) or (et, proto) in ((0x0800, 1), (0x86DD, 58))
        if et in (0x0800, 0x86DD) and both_parse:
            tp = int(k[K.W_TP])
            assert (o[CK.K_TP_SRC], o[CK.K_TP_DST]) == (tp & 0xFFFF, tp >> 16 & 0xFFFF), f.hex()
