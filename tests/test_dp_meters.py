"""Meters in the datapath (dpif.meters, the executor's METER): the token buckets' rates over simulated time
(pktps, kbps with a burst), bands, counters and generations; METER in ``execute_burst`` (a drop, the skip of a
metered packet-in) and the executor against its plain-Python model (dpif.actions_ref) on random bursts with
meters; ofproto.meters.MeterTable's rows; the METER the translator emits."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpif import actions as A
from dpif import actions_ref as R
from dpif import meters as DM
from dpif.extract_ref import extract
from ofproto.actions import Meter as MeterAction
from ofproto.meters import OFPMBT_DROP, OFPMF_BURST, OFPMF_KBPS, OFPMF_PKTPS, Band, Meter, MeterTable
from ofproto.rules import Controller, Flow, Instructions, Match, Output
from ofproto.tables import FlowTables
from tests.test_dp_actions import SLOT, _tcp_frame, actions, frames, run_kernel
from tests.test_xlate_nicira import tcp
from xlate.translate import UpcallCookies, translate, translate_actions

MS = 1_000_000


def _meter(bank: DM.MeterBank, flags: int, bands: list[tuple[int, int]]) -> tuple[int, int]:
    """A meter in ``bank`` whose clock starts at 0."""
    slot, gen = bank.alloc()
    bank.configure(slot, flags, bands)
    bank.arr[slot, DM.M_LAST] = 0
    return slot, gen


def _offer(bank: DM.MeterBank, slot: int, gen: int, size: int, per_burst: int, every_ns: int, until_ns: int,
           start_ns: int = 0) -> int:
    """Bursts of ``per_burst`` frames of ``size`` bytes every ``every_ns`` from ``start_ns`` to ``until_ns``:
    the frames passed."""
    sizes = np.full(per_burst, size, dtype=np.int64)
    passed = np.zeros(per_burst, dtype=np.int64)
    return sum(DM.meter_burst(bank.arr, slot, gen, sizes, per_burst, t, passed)
               for t in range(start_ns, until_ns, every_ns))


def test_pktps_meter_passes_its_bucket_then_its_rate() -> None:
    """100 pktps (a bucket of 100 packets), offered 1000 packets/s for 10 s: the bucket, then 100 a second."""
    bank = DM.MeterBank(4)
    slot, gen = _meter(bank, DM.F_PKTPS, [(100, 100)])
    passed = _offer(bank, slot, gen, 64, 32, 32 * MS, 10_000 * MS)
    assert passed == 100 + 998, passed     # the bucket, then 9.984 s at 100 a second (the last burst at 9.984 s)
    row = bank.arr[slot]
    assert row[DM.M_PACKETS] == 32 * 313 and row[DM.M_BYTES] == 64 * 32 * 313
    assert row[DM.M_HDR + DM.B_PACKETS] == row[DM.M_PACKETS] - passed


def test_kbps_meter_with_burst_counts_bits() -> None:
    """800 kb/s with an 80 kbit burst: ten 1000-byte frames at once, then 100 a second; a 100-byte frame costs a
    tenth as much."""
    bank = DM.MeterBank(4)
    slot, gen = _meter(bank, DM.F_KBPS | OFPMF_BURST, [(800, 80)])
    assert _offer(bank, slot, gen, 1000, 50, MS, MS) == 10
    passed = _offer(bank, slot, gen, 1000, 10, 10 * MS, 5_000 * MS, start_ns=10 * MS)    # 1000 frames/s offered
    assert passed == 499, passed       # 8 kbit every 10 ms
    small = _offer(bank, slot, gen, 100, 200, MS, 5_101 * MS, start_ns=5_100 * MS)    # 100 ms: 80 kbit back
    assert small == 100, small


def test_highest_rate_band_exceeded_takes_the_drop() -> None:
    """Bands of 5 and 20 pktps: 30 frames at once pass 5; the next 15 exceed only the 5-pktps band (counted
    there), the last 10 exceed both (counted by the 20-pktps band); every frame counts in."""
    bank = DM.MeterBank(4)
    slot, gen = _meter(bank, DM.F_PKTPS, [(5, 5), (20, 20)])
    sizes = np.full(30, 64, dtype=np.int64)
    passed = np.zeros(30, dtype=np.int64)
    assert DM.meter_burst(bank.arr, slot, gen, sizes, 30, 0, passed) == 5
    assert passed.tolist() == [1] * 5 + [0] * 25
    assert bank.counters(slot, gen, 2) == (30, 30 * 64, [[15, 960], [10, 640]])


def test_a_freed_slot_neither_charges_nor_passes_for_its_next_meter() -> None:
    """After ``free``, a program naming the old generation passes every frame uncounted; the slot's next meter
    (a new generation) is charged only by its own programs."""
    bank = DM.MeterBank(1)
    slot, gen = _meter(bank, DM.F_PKTPS, [(1, 1)])
    bank.free(slot)
    slot2, gen2 = _meter(bank, DM.F_PKTPS, [(1, 1)])
    assert slot2 == slot and gen2 == gen + 1
    assert _offer(bank, slot, gen, 64, 10, MS, MS) == 10
    assert bank.counters(slot2, gen2, 1) == (0, 0, [[0, 0]]) and bank.counters(slot, gen, 1)[0] == 0
    assert _offer(bank, slot2, gen2, 64, 10, MS, MS) == 1
    s3, _ = bank.alloc()        # full: the bank grows, the rows kept
    assert s3 == 1 and bank.arr.shape[0] == 2 and bank.counters(slot2, gen2, 1)[0] == 10


def test_execute_burst_meter_drops_or_skips_the_metered_packet_in() -> None:
    """``METER(slot, gen, 0)`` before an output: 3 of 8 frames leave, 5 are ``meter_drop``; ``METER(.., 4)``
    before a USERSPACE: 3 packet-ins, every frame still output, no ``no_output``. A skip past the end or into an
    action is a malformed program."""
    bank = DM.MeterBank(4)
    a = _meter(bank, DM.F_PKTPS, [(3, 3)])
    b = _meter(bank, DM.F_PKTPS, [(3, 3)])
    f = _tcp_frame()
    items = [(128, f, A.meter(*a) + A.output(1)) for _ in range(8)]
    q, drops, _ = run_kernel(items, 0, meters=bank.arr, now_ns=0)
    assert len(q[1]) == 3 and drops[A.DR_METER] == 5 and sum(drops) == 5
    items = [(128, f, A.meter(*b, skip=4) + A.userspace(9, 0) + A.output(2)) for _ in range(8)]
    sides: list = [[], []]
    q, drops, _ = run_kernel(items, 0, sides=sides, meters=bank.arr, now_ns=0)
    assert len(q[2]) == 8 and len(sides[1]) == 3 and drops[A.DR_METER] == 5 and sum(drops) == 5
    assert A.format_actions(A.meter(4, 0, 4) + A.userspace(9, 0) + A.output(2)) == \
        "sample(sample=100.0%,actions(meter(4),userspace(controller(cookie=9,max_len=0)))),2"
    assert A.format_actions(A.meter(1) + A.output(2)) == "meter(1),2"
    for bad in (A.meter(1, 0, 3) + A.userspace(9, 0), A.meter(1, 0, 5) + A.output(2)):
        with pytest.raises(ValueError, match="METER at word 0 skips"):
            A.encode([bad])


# ---------------------------------------------------------------- the executor against the model
METER_CONFIGS = [(DM.F_PKTPS, [(2, 2)]), (DM.F_KBPS, [(8, 2)]), (DM.F_PKTPS, [(1, 1), (3, 2)])]


def _bank() -> tuple[np.ndarray, list[tuple[int, int]]]:
    bank = DM.MeterBank(8)
    ids = [_meter(bank, f, b) for f, b in METER_CONFIGS]
    stale = _meter(bank, DM.F_PKTPS, [(1, 1)])
    bank.free(stale[0])
    return bank.arr.copy(), [*ids, stale]


@st.composite
def metered_bursts(draw: st.DrawFn) -> list[tuple[int, list[tuple[int, bytes, list[int] | None]]]]:
    """2-4 bursts, each at a later time (0-300 ms on), of 1-8 frames whose programs mix random actions with
    meters (one that stops the program, one that skips a packet-in)."""
    _, ids = _bank()
    meter = st.sampled_from(ids)
    metered = st.one_of(meter.map(lambda m: A.meter(*m)),
                        st.builds(lambda m, c: A.meter(*m, skip=4) + A.userspace(c, 0), meter, st.integers(0, 9)))
    prog = st.lists(st.one_of(metered, metered, actions()), min_size=1, max_size=5)
    out, t = [], 0
    for _ in range(draw(st.integers(2, 4))):
        t += draw(st.integers(0, 300)) * MS
        items = []
        for _ in range(draw(st.integers(1, 8))):
            f = draw(frames())
            head = min(draw(st.sampled_from([0, 4, 64, 128])), SLOT - len(f))
            items.append((head, f, [w for a in draw(prog) for w in a]))
        out.append((t, items))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(metered_bursts(), st.integers(0, 4))
def test_against_model_with_meters(bursts: list, free: int) -> None:
    """Queues, packet-ins, drops, copies and every meter row (buckets, counters) equal the model's after each
    burst."""
    kernel_arr, _ = _bank()
    model_arr = kernel_arr.copy()
    for now_ns, items in bursts:
        sides: list = [[], []]
        q, drops, k = run_kernel(items, free, sides=sides, meters=kernel_arr, now_ns=now_ns)
        ref = R.run_burst(items, SLOT, 4, 64, free, side_cap=64, meters=model_arr, now_ns=now_ns)
        assert q == {p: v for p, v in ref.queues.items() if v}
        assert sides == [ref.normal, ref.userspace]
        assert drops == ref.drops
        assert k == ref.copies
        assert kernel_arr.tolist() == model_arr.tolist()


# ---------------------------------------------------------------- the meter table's rows
def test_meter_table_places_keeps_and_frees_rows() -> None:
    """``add`` gives a meter a row (its buckets from the bands: the burst flag's size, else a second at the
    rate), ``modify`` keeps the row (the megaflows through it stay right) with fresh buckets and counters,
    ``delete`` frees it; meter-stats' counters are the row's."""
    bank = DM.MeterBank(2)
    table = MeterTable(bank)
    table.add(Meter(1, OFPMF_PKTPS, (Band(OFPMBT_DROP, 10),)))
    table.add(Meter(2, OFPMF_KBPS | OFPMF_BURST, (Band(OFPMBT_DROP, 8, burst_size=16),)))
    m1, m2 = table.meters[1], table.meters[2]
    assert bank.arr[m1.slot, DM.M_HDR + DM.B_CAP] == 10 * DM.TOKEN_SCALE
    assert bank.arr[m2.slot, DM.M_HDR + DM.B_CAP] == 16 * DM.TOKEN_SCALE
    bank.arr[m1.slot, DM.M_LAST] = 0
    assert _offer(bank, m1.slot, m1.gen, 100, 50, MS, MS) == 10
    assert (m1.packets, m1.bytes, m1.band_counts) == (50, 5000, [[40, 4000]])
    table.modify(Meter(1, OFPMF_PKTPS, (Band(OFPMBT_DROP, 100),)))
    new = table.meters[1]
    assert (new.slot, new.gen) == (m1.slot, m1.gen) and (new.packets, new.band_counts) == (0, [[0, 0]])
    assert table.delete(1) == [1]
    assert bank.arr[m1.slot, DM.M_GEN] == m1.gen + 1 and new.packets == 0
    table.add(Meter(3, OFPMF_PKTPS, (Band(OFPMBT_DROP, 5),)))
    assert table.meters[3].slot == m1.slot and table.meters[3].gen == m1.gen + 1
    assert sorted(table.delete(0xFFFFFFFF)) == [2, 3] and not table.meters
    table.add(Meter(4, OFPMF_PKTPS, (Band(OFPMBT_DROP, 5),)))
    m4 = table.meters[4]
    del table, m1, m2, new, m4
    gc.collect()          # a bridge gone: its meters' rows go back to the bank
    assert len(bank._free) == bank.arr.shape[0]


# ---------------------------------------------------------------- what the translator emits
def test_translator_emits_the_meters_row_and_a_packet_out_passes() -> None:
    """``meter:1`` becomes ``METER(slot, gen, 0)`` before the output; ``controller(meter_id=1)`` wraps only the
    USERSPACE (``skip`` 4: the output after it runs either way); a meter the table lacks, a packet-out and a
    trace emit none."""
    bank = DM.MeterBank(2)
    meters = MeterTable(bank)
    meters.add(Meter(1, OFPMF_PKTPS, (Band(OFPMBT_DROP, 10),)))
    m = meters.meters[1]
    t = FlowTables(2)
    t.add(Flow(0, 1, Match(), Instructions(apply=(MeterAction(1), Output(2)))))
    t.add(Flow(1, 1, Match(), Instructions(apply=(Controller(meter_id=1), Output(3), MeterAction(7)))))
    t.set_meters(dict(meters.meters))
    ts = t.compile()
    key = [int(w) for w in extract(tcp(), 0)[0]]
    flags = np.zeros(4, dtype=np.int64)
    res = translate(ts, key, flags, UpcallCookies())
    assert res.actions == A.meter(m.slot, m.gen) + A.output(2)
    t.add(Flow(0, 2, Match(), Instructions(goto=1)))
    ts = t.compile()
    res = translate(ts, key, flags, UpcallCookies())
    acts = A.decode(res.actions)
    assert acts[0] == (A.OP_METER, [m.slot, m.gen, 4]) and acts[1][0] == A.OP_USERSPACE
    assert acts[2:] == [(A.OP_OUTPUT, [3])]
    out = translate_actions(ts, key, (MeterAction(1), Output(2)), flags, UpcallCookies())
    assert out.actions == A.output(2)
