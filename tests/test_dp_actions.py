"""The flat action executor (dpif.actions) against the plain-Python model (dpif.actions_ref).

Hypothesis builds bursts of IPv4 TCP/UDP/ICMP frames (0-2 tags, IP options, whole / first / later
fragments, UDP checksum 0), IPv6 TCP/UDP/ICMPv6 frames (extension headers, fragments, echo, neighbour
discovery with and without options), ARP / RARP, other and truncated frames at random heads in 256-byte
slots, with random programs (every SET_MASKED word); the per-port queues (frame bytes and head), drop
counts and fresh-slot counts must equal the model's, whose checksums are recomputed from scratch.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.pool import META_IN_PORT, META_LEN
from dpif import actions as A
from dpif import actions_ref as R
from dpif import key as K
from dpif.meters import NO_METERS

SLOT = 256
N_PORTS = 4


def _icmp4_fix(f: bytearray, l3: int) -> None:
    """A valid ICMP checksum over the whole datagram (as if unfragmented), identifier never 0 (an all-zero
    message has two checksums)."""
    l4 = l3 + (f[l3] & 15) * 4
    tot = int.from_bytes(f[l3 + 2 : l3 + 4], "big")
    f[l4 + 4] |= 1
    f[l4 + 2 : l4 + 4] = b"\0\0"
    f[l4 + 2 : l4 + 4] = R.csum(bytes(f[l4 : l3 + tot])).to_bytes(2, "big")


@st.composite
def ipv4(draw: st.DrawFn, prefix: bytes) -> bytes:
    """IPv4 TCP/UDP/ICMP (options, whole / first / later fragments, UDP checksum 0) with correct checksums."""
    proto = draw(st.sampled_from([A.PROTO_TCP, A.PROTO_UDP, 1]))
    opts = draw(st.binary(min_size=0, max_size=40))
    opts = opts[: len(opts) // 4 * 4]
    payload = draw(st.binary(min_size=0, max_size=30))
    frag = draw(st.sampled_from([0, 0, 0x2000, 0x2000 | 7, 12]))
    if proto == A.PROTO_TCP:
        l4 = bytearray(draw(st.binary(min_size=20, max_size=20))) + payload
    elif proto == A.PROTO_UDP:
        l4 = bytearray(draw(st.binary(min_size=8, max_size=8))) + payload
        l4[4:6] = len(l4).to_bytes(2, "big")
    else:
        l4 = bytearray(draw(st.binary(min_size=8, max_size=8))) + payload
    ihl = 5 + len(opts) // 4
    ip = bytearray([0x40 | ihl, draw(st.integers(0, 255))]) + (ihl * 4 + len(l4)).to_bytes(2, "big")
    ip += draw(st.binary(min_size=2, max_size=2)) + frag.to_bytes(2, "big")
    ip += bytes([draw(st.integers(0, 255)), proto, 0, 0]) + draw(st.binary(min_size=8, max_size=8)) + opts
    ip[10:12] = R.csum(bytes(ip)).to_bytes(2, "big")
    f = bytearray(prefix + b"\x08\x00" + ip + l4)
    l3 = len(prefix) + 2
    if proto == 1:
        _icmp4_fix(f, l3)
        return bytes(f)
    _, l4c, _ = R.l4_info(f, l3)
    if l4c >= 0:
        if proto == A.PROTO_UDP and draw(st.booleans()):
            f[l4c : l4c + 2] = b"\0\0"
        else:
            f[l4c : l4c + 2] = R.l4_full(f, l3).to_bytes(2, "big")    # as if whole (first fragments too)
    return bytes(f)


@st.composite
def nd(draw: st.DrawFn) -> bytes:
    """A neighbour solicitation / advertisement (the ICMPv6 message, checksum 0): target, then 0-3 options
    of which some are link-layer addresses (8 bytes), some longer, some malformed (length 0)."""
    t = draw(st.sampled_from([135, 136]))
    msg = bytes([t, draw(st.sampled_from([0, 0, 0, 1])), 0, 0]) + draw(st.binary(min_size=20, max_size=20))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from([1, 2, 1, 2, 5, 0]))
        if kind == 5:
            msg += bytes([5, 2]) + draw(st.binary(min_size=14, max_size=14))
        elif kind == 0:
            msg += bytes([1, 0]) + draw(st.binary(min_size=6, max_size=6))
        else:
            msg += bytes([kind, 1]) + draw(st.binary(min_size=6, max_size=6))
    return msg


@st.composite
def ipv6(draw: st.DrawFn, prefix: bytes) -> bytes:
    """IPv6 TCP/UDP/ICMPv6 (echo, ND with and without options) behind 0-2 extension headers (hop-by-hop,
    routing with or without segments left, fragment: first or later) with correct checksums."""
    nh = draw(st.sampled_from([A.PROTO_TCP, A.PROTO_UDP, A.PROTO_ICMPV6, A.PROTO_ICMPV6]))
    payload = draw(st.binary(min_size=0, max_size=24))
    if nh == A.PROTO_TCP:
        l4 = bytearray(draw(st.binary(min_size=20, max_size=20))) + payload
    elif nh == A.PROTO_UDP:
        l4 = bytearray(draw(st.binary(min_size=8, max_size=8))) + payload
        l4[4:6] = len(l4).to_bytes(2, "big")
    elif draw(st.booleans()):
        l4 = bytearray(draw(nd()))
    else:
        l4 = bytearray([draw(st.sampled_from([128, 129])), 0]) + draw(st.binary(min_size=6, max_size=6)) + payload
    exts = b""
    first = nh
    for kind in reversed(draw(st.lists(st.sampled_from([0, 43, 44]), max_size=2, unique=True))):
        if kind == 44:
            off = draw(st.sampled_from([0, 0, 1]))
            exts = bytes([first, 0]) + (off << 3 | 1).to_bytes(2, "big") + bytes(4) + exts
        else:
            segs = draw(st.sampled_from([0, 1])) if kind == 43 else 0
            exts = bytes([first, 0, 0, segs]) + bytes(4) + exts
        first = kind
    hdr = bytearray(b"\x60" + draw(st.binary(min_size=3, max_size=3)))
    hdr += (len(exts) + len(l4)).to_bytes(2, "big") + bytes([first, draw(st.integers(0, 255))])
    hdr += draw(st.binary(min_size=32, max_size=32))
    f = bytearray(prefix + b"\x86\xdd" + hdr + exts + l4)
    l3 = len(prefix) + 2
    l4o = l3 + 40 + len(exts)
    if nh == A.PROTO_UDP and draw(st.integers(0, 3)) == 0:
        f[l4o + 6 : l4o + 8] = b"\0\0"                   # no UDP checksum
        return bytes(f)
    at = {A.PROTO_TCP: 16, A.PROTO_UDP: 6, A.PROTO_ICMPV6: 2}[nh]
    f[l4o + at : l4o + at + 2] = R.v6_l4_full(f, l3, l4o, nh).to_bytes(2, "big")
    return bytes(f)


@st.composite
def arp(draw: st.DrawFn, prefix: bytes) -> bytes:
    """An ARP or RARP frame (sometimes with another hardware type)."""
    et = draw(st.sampled_from([b"\x08\x06", b"\x08\x06", b"\x80\x35"]))
    hw = b"\x00\x01\x08\x00\x06\x04" if draw(st.integers(0, 5)) else b"\x00\x06\x08\x00\x06\x04"
    return prefix + et + hw + draw(st.binary(min_size=22, max_size=22))


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """A random Ethernet frame with correct checksums: IPv4, IPv6, ARP, other; sometimes cut short."""
    macs = draw(st.binary(min_size=12, max_size=12))
    tags = b"".join(draw(st.sampled_from([b"\x81\x00", b"\x88\xa8"])) + draw(st.binary(min_size=2, max_size=2))
                    for _ in range(draw(st.integers(0, 2))))
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return macs + tags + draw(st.sampled_from([b"\x86\xdd", b"\x08\x06"])) + draw(st.binary(max_size=40))
    f = draw((ipv4 if kind < 5 else ipv6 if kind < 9 else arp)(macs + tags))
    if draw(st.integers(0, 7)) == 0:                   # cut short anywhere
        f = f[: draw(st.integers(14, len(f)))]
    return f


def actions() -> st.SearchStrategy[list[int]]:
    """One random action: mostly outputs and sets, drops and reserved ops rarely."""
    out = st.builds(A.output, st.integers(0, N_PORTS - 1))
    sets = st.sampled_from(list(A.SET_FIELDS)).flatmap(
        lambda n: st.builds(A.set_field, st.just(n), st.integers(0, (1 << A.SET_FIELDS[n][2]) - 1),
                            st.one_of(st.none(), st.integers(0, (1 << 48) - 1),
                                      st.integers(0, (1 << 128) - 1))))
    raw = st.sampled_from(sorted(A.SET_BITS)).flatmap(      # any bits of a word, at once
        lambda w: st.builds(A.set_masked, st.just(w), st.integers(0, A.SET_BITS[w]),
                            st.integers(0, A.SET_BITS[w]).map(lambda m, w=w: m & A.SET_BITS[w])))
    rare = st.one_of(st.builds(A.drop, st.sampled_from([A.DR_EXPLICIT, A.DR_NO_OUTPUT, A.DR_TABLE_MISS])),
                     st.builds(A.normal), st.builds(A.userspace, st.integers(0, 9), st.integers(0, 2000)),
                     st.builds(A.reserved, st.sampled_from(list(A.RESERVED_OPS)), st.integers(0, 9)))
    eth = st.builds(A.set_eth, st.integers(0, (1 << 48) - 1), st.integers(0, (1 << 48) - 1))
    return st.one_of(
        out, out, out, sets, sets, sets, raw, eth,
        st.builds(A.push_vlan, st.integers(0, 4095), st.integers(0, 7), st.sampled_from([A.ETH_VLAN, A.ETH_QINQ])),
        st.just(A.pop_vlan()),
        rare,
    )


programs = st.lists(actions(), min_size=0, max_size=7)


def run_kernel(items: list[tuple[int, bytes, list[int] | None]], free: int, qcap: int = 64, side_cap: int = 64,
               sides: list | None = None, meters: np.ndarray = NO_METERS,
               now_ns: int = 0) -> tuple[dict[int, list[tuple[int, bytes]]], list[int], int]:
    """Run ``items`` through ``execute_burst`` (charging the meter rows ``meters`` at ``now_ns``): (queues as
    port -> (head, frame), drops, fresh slots)."""
    n = len(items)
    n_slots = n + free
    data = np.zeros((n_slots, SLOT), dtype=np.uint8)
    meta = np.zeros((n_slots, 4), dtype=np.int32)
    progs_l: list[int] = []
    index = np.full((n, 2), -1, dtype=np.int64)
    for i, (head, f, prog) in enumerate(items):
        data[i, head : head + len(f)] = np.frombuffer(f, dtype=np.uint8)
        meta[i, META_LEN] = len(f)
        meta[i, META_IN_PORT] = 0
        meta[i, A.META_HEAD] = head
        if prog is not None:
            index[i] = (len(progs_l), len(prog))
            progs_l += prog
    progs = np.array(progs_l + [0], dtype=np.int64)
    burst = np.arange(n, dtype=np.int32)
    free_stack = np.arange(n_slots - 1, n - 1, -1, dtype=np.int32)
    free_top = np.array([free], dtype=np.int64)
    out = np.zeros((2, N_PORTS * qcap), dtype=np.int32)
    out_start = np.zeros((2, N_PORTS + 1), dtype=np.int32)
    drops = np.zeros((N_PORTS + 1, A.N_DROP_REASONS), dtype=np.int64)
    extra = np.zeros(max(free, 1), dtype=np.int32)
    side = np.zeros((A.SIDE_ROWS, side_cap), dtype=np.int32)
    side_n = np.zeros(2, dtype=np.int64)
    k = A.execute_burst(data, meta, burst, n, index, progs, out, out_start, drops, free_stack, free_top, extra,
                        side, side_n, meters, now_ns)
    assert drops[1:].sum() == 0      # every frame came in on port 0
    if sides is not None:
        for j in range(side_n[A.N_NORMAL]):
            s = side[A.SIDE_NORMAL, j]
            h, ln = int(meta[s, A.META_HEAD]), int(meta[s, META_LEN])
            sides[0].append((h, bytes(data[s, h:h + ln])))
        for j in range(side_n[A.N_USERSPACE]):
            s = side[A.SIDE_UP_SLOT, j]
            h, ln = int(meta[s, A.META_HEAD]), int(meta[s, META_LEN])
            sides[1].append((int(side[A.SIDE_UP_COOKIE, j]), int(side[A.SIDE_UP_MAX_LEN, j]), h,
                             bytes(data[s, h:h + ln])))
    drops = drops[0]
    queues: dict[int, list[tuple[int, bytes]]] = {}
    for p in range(N_PORTS):
        for j in range(out_start[1, p]):
            s = out[0, out_start[0, p] + j]
            assert out[1, out_start[0, p] + j] == -1
            h, ln = int(meta[s, A.META_HEAD]), int(meta[s, META_LEN])
            queues.setdefault(p, []).append((h, bytes(data[s, h : h + ln])))
    assert sorted(extra[:k].tolist()) == sorted(range(n, n + k))
    assert free_top[0] == free - k
    return queues, drops.tolist(), k


@st.composite
def bursts(draw: st.DrawFn) -> list[tuple[int, bytes, list[int] | None]]:
    """1-6 frames at random heads, each with a random program or none (a miss)."""
    items = []
    for _ in range(draw(st.integers(1, 6))):
        f = draw(frames())
        head = min(draw(st.sampled_from([0, 1, 2, 3, 4, 7, 8, 64, 128])), SLOT - len(f))
        if draw(st.integers(0, 4)) == 0:                       # Ethernet padding up to (nearly) the slot end
            head = draw(st.integers(0, 3))
            f += bytes(SLOT - head - len(f) - draw(st.integers(0, 6)))
        prog = None if draw(st.integers(0, 7)) == 0 else draw(programs)     # None: a miss, skipped
        items.append((head, f, None if prog is None else [w for a in prog for w in a]))
    return items


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bursts(), st.integers(0, 6))
def test_against_model(items: list[tuple[int, bytes, list[int] | None]], free: int) -> None:
    sides: list = [[], []]
    q, drops, k = run_kernel(items, free, sides=sides)
    ref = R.run_burst(items, SLOT, N_PORTS, 64, free, side_cap=64)
    assert q == {p: v for p, v in ref.queues.items() if v}
    assert sides == [ref.normal, ref.userspace]
    assert drops == ref.drops
    assert k == ref.copies


def _tcp_frame() -> bytes:
    ip = bytearray(b"\x45\x00\x00\x28\x00\x01\x00\x00\x40\x06\x00\x00\x0a\x00\x00\x01\x0a\x00\x00\x02")
    ip[10:12] = R.csum(bytes(ip)).to_bytes(2, "big")
    f = bytearray(b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00" + ip + bytes(20))
    f[34:36] = (1234).to_bytes(2, "big")
    f[36:38] = (80).to_bytes(2, "big")
    f[50:52] = R.l4_full(f, 14).to_bytes(2, "big")
    return bytes(f)


def test_checksums_from_scratch() -> None:
    f = _tcp_frame()
    prog = A.encode([A.set_field("nw_src", 0xC0A80001), A.set_field("tp_dst", 8080), A.set_field("nw_ttl", 7),
                     A.output(1)])
    q, _, _ = run_kernel([(8, f, prog.tolist())], 0)
    g = q[1][0][1]
    assert g[26:30] == bytes([192, 168, 0, 1]) and g[22] == 7
    assert R.csum(g[14:34]) == 0
    assert int.from_bytes(g[50:52], "big") == R.l4_full(g, 14)


def test_push_pop_headroom() -> None:
    f = _tcp_frame()
    push = A.encode([A.push_vlan(10, 3), A.output(0)]).tolist()
    pop = A.encode([A.pop_vlan(), A.output(1)]).tolist()
    tagged = f[:12] + b"\x81\x00\x60\x0a" + f[12:]
    q, drops, _ = run_kernel([(8, f, push), (0, f, push), (2, f + bytes(SLOT - 2 - len(f)), push), (4, tagged, pop)], 0)
    assert q[0] == [(4, tagged), (0, tagged)]
    assert q[1] == [(8, f)]
    assert drops[A.DR_NO_ROOM] == 1


def test_copy_on_second_output() -> None:
    f = _tcp_frame()
    prog = A.encode([A.output(0), A.set_field("eth_dst", 0x0A0B0C0D0E0F), A.output(1), A.output(2),
                     A.pop_vlan(), A.output(3)]).tolist()
    q, _, k = run_kernel([(2, f, prog)], 4)
    assert k == 2
    assert q[0][0][1] == f
    assert q[1][0][1][:6] == bytes.fromhex("0a0b0c0d0e0f") == q[2][0][1][:6]
    _, drops, k = run_kernel([(2, f, prog)], 0)
    assert k == 0 and drops[A.DR_POOL_EMPTY] == 1


def test_format_and_encode() -> None:
    prog = A.encode([A.set_field("eth_dst", 0x020000000001), A.push_vlan(10), A.output(2)])
    assert A.format_actions(prog) == "set(eth(dst=02:00:00:00:00:01)),push_vlan(vid=10,pcp=0),2"
    assert A.format_actions(A.encode([])) == "drop"
    assert A.format_actions(A.encode([A.set_field("nw_dst", 0x0A000000, 0xFF000000), A.pop_vlan(),
                                      A.reserved(A.OP_RECIRC, 1), A.drop()])) == \
        "set(ipv4(dst=10.0.0.0/255.0.0.0)),pop_vlan,recirc(0x1),drop"
    for bad in ([A.OP_OUTPUT, 2, 1], [A.OP_SET_MASKED, 3, K.W_NW, 1 << 24, 1 << 24], [99, 0], [A.OP_OUTPUT],
                [A.OP_SET_MASKED, 3, K.W_IPV6_LABEL, 1, 1]):
        try:
            A.decode(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_malformed_programs_and_full_queues() -> None:
    f = _tcp_frame()
    bad = [[A.OP_OUTPUT, 5, 1], [A.OP_OUTPUT], [99, 0, A.OP_OUTPUT, 1, 0], [A.OP_OUTPUT, 1, N_PORTS],
           [A.OP_SET_MASKED, 1, K.W_ETH_DST]]
    _, drops, _ = run_kernel([(2, f, b) for b in bad], 0)
    assert drops[A.DR_BAD_PROGRAM] == 5 and drops[A.DR_NO_OUTPUT] == 1   # the port out of range: no output
    q, drops, _ = run_kernel([(2, f, A.encode([A.output(1)]).tolist())] * 3, 0, qcap=2)
    assert len(q[1]) == 2 and drops[A.DR_QUEUE_FULL] == 1
    _, drops, _ = run_kernel([(2, f[:13], A.encode([A.output(1)]).tolist())], 0)
    assert drops[A.DR_BAD_FRAME] == 1
