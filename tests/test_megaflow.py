"""The megaflow cache (dpif.megaflow) against the reference model (dpif.megaflow_ref), and the key layout.

Hypothesis generates sequences of installs (new, same mask and masked key again, overlapping,
beyond the entry and subtable bounds), removes, bursts of lookups, expiry, resorts and clock ticks
over small pools of values and masks in four key words, so megaflows share masks, collide in the
hash tables and get refused for overlap. Caches are small (3 to 64 entries, EMCs of 0, 1 and 16
rows with every subtable hit inserted, or one in two) so entry ids are reused while stale EMC rows
still point at them. After every step the lookup results, the per-entry counters, the dump and the
cache counters must equal the model's.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpif import key as K
from dpif.megaflow import MegaflowCache, MegaflowExists, MegaflowOverlap, key_hash
from dpif.megaflow_ref import RefMegaflow, RefMegaflows, masked

WORDS = (K.W_IN_PORT, K.W_ETH_DST, K.W_NW_DST, K.W_TP)
VALUES = (0, 1, 2, 3, 0x10, 0x11, 0xFFFF_FFFF_FFFF_FFFF)
MASKS = (0, 0, 0xFFFF_FFFF_FFFF_FFFF, 0x0F, 0x10, 0xFFFF_0000_0000_0001)
ONES = (1 << 64) - 1


def row(words: dict[int, int]) -> np.ndarray:
    """A key row with ``words`` set (other words 0)."""
    r = np.zeros(K.KEY_WORDS, dtype=np.uint64)
    for w, v in words.items():
        r[w] = v
    return r


def as_tuple(r: np.ndarray) -> tuple[int, ...]:
    return tuple(int(x) for x in r)


# W_IN_PORT (the first of WORDS) is nearly always matched exactly and takes 16 values, so most megaflows of
# different in_ports are disjoint and caches fill up; the other words make them overlap within one.
IN_PORT_MASKS = (ONES, ONES, ONES, ONES, ONES, ONES, 0x0F, 0)
keys_st = st.builds(lambda p, vs, noise: row({**dict(zip(WORDS, (p, *vs), strict=True)), K.W_ETH_SRC: noise}),
                    st.integers(0, 15), st.tuples(*[st.sampled_from(VALUES) for _ in WORDS[1:]]), st.integers(0, 3))
masks_st = st.builds(lambda pm, ms: row(dict(zip(WORDS, (pm, *ms), strict=True))), st.sampled_from(IN_PORT_MASKS),
                     st.tuples(*[st.sampled_from(MASKS) for _ in WORDS[1:]]))
actions_st = st.lists(st.integers(-(1 << 63), (1 << 63) - 1), max_size=5)

ops_st = st.lists(st.one_of(
    st.tuples(st.just("install"), st.lists(st.tuples(keys_st, masks_st, actions_st), min_size=1, max_size=8)),
    st.tuples(st.just("install"), st.lists(st.tuples(keys_st, masks_st, actions_st), min_size=1, max_size=8)),
    st.tuples(st.just("install"), st.lists(st.tuples(keys_st, masks_st, actions_st), min_size=1, max_size=8)),
    st.tuples(st.just("reinstall"), st.integers(0, 100), actions_st),
    st.tuples(st.just("remove"), st.integers(0, 100)),
    st.tuples(st.just("lookup"), st.lists(keys_st, min_size=1, max_size=12), st.integers(0, 3)),
    st.tuples(st.just("lookup"), st.lists(keys_st, min_size=1, max_size=12), st.integers(0, 3)),
    st.tuples(st.just("probe"), st.lists(st.tuples(st.integers(0, 100), keys_st), min_size=1, max_size=12),
              st.integers(0, 3)),
    st.tuples(st.just("probe"), st.lists(st.tuples(st.integers(0, 100), keys_st), min_size=1, max_size=12),
              st.integers(0, 3)),
    st.tuples(st.just("replay"), st.integers(0, 3)),
    st.tuples(st.just("replay"), st.integers(0, 3)),
    st.tuples(st.just("expire"), st.integers(1, 6)),
    st.tuples(st.just("tick"), st.integers(1, 3)),
    st.tuples(st.just("resort")),
), min_size=8, max_size=60)


def check_same(cache: MegaflowCache, ref: RefMegaflows) -> None:
    """Dump and counters equal the model's."""
    dumped = {m.id: m for m in cache.dump()}
    assert set(dumped) == set(ref.flows)
    for i, f in ref.flows.items():
        m = dumped[i]
        assert as_tuple(m.key) == f.key and as_tuple(m.mask) == f.mask
        assert tuple(int(a) for a in m.actions) == f.actions
        assert (m.packets, m.bytes, m.used, m.created) == (f.packets, f.bytes, f.used, f.created)
    assert len(cache) == len(ref.flows)
    assert cache.stats()["subtables"] == len({f.mask for f in ref.flows.values()})
    assert cache.stats()["megaflow_table_full"] == ref.table_full


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops_st, max_flows=st.sampled_from([3, 8, 64]), emc_size=st.sampled_from([0, 1, 16]),
       inv=st.sampled_from([1, 2]), max_sub=st.sampled_from([2, 64]), action_words=st.sampled_from([16, 64]))
def test_cache_matches_model(ops: list, max_flows: int, emc_size: int, inv: int, max_sub: int,
                             action_words: int) -> None:
    cache = MegaflowCache(max_flows=max_flows, emc_size=emc_size, emc_insert_inv_prob=inv, max_subtables=max_sub,
                          check_overlap=True, action_words=action_words)
    ref = RefMegaflows(max_flows)
    sub_full = 0
    now = 0
    slots = 16
    keys = np.zeros((slots, K.KEY_WORDS), dtype=np.uint64)
    meta = np.zeros((slots, 4), dtype=np.int32)
    out = np.full(slots, -7, dtype=np.int64)
    burst = np.arange(slots - 1, -1, -1, dtype=np.int32)    # slots in reverse order
    totals = [0, 0]   # frames found, missed
    last: list[np.ndarray] = []

    def run_burst(ks: list[np.ndarray], extra: int) -> None:
        """Look ``ks`` up twice (the second round finds what the first put in the EMC), as the model does."""
        n = len(ks)
        for j, k in enumerate(ks):
            s = int(burst[j])
            keys[s] = k
            meta[s, 0] = 60 + j + extra
        for _round in range(2):
            misses = cache.lookup(keys, burst, n, meta, out, now)
            want = [ref.lookup(as_tuple(k)) for k in ks]
            assert out[:n].tolist() == want
            assert misses == want.count(-1)
            totals[0] += n - misses
            totals[1] += misses
            for j, i in enumerate(want):
                if i >= 0:
                    ref.hit(i, 60 + j + extra, now)

    for op in ops:
        kind = op[0]
        if kind == "reinstall" and ref.flows:
            i = sorted(ref.flows)[op[1] % len(ref.flows)]
            f = ref.flows[i]
            assert cache.install(np.array(f.key, dtype=np.uint64), np.array(f.mask, dtype=np.uint64),
                                 np.array(op[2], dtype=np.int64), now) == i
            f.actions = tuple(op[2])
        elif kind == "install":
            for key, mask, acts in op[1]:
                kt, mt = as_tuple(key), as_tuple(mask)
                same = ref.find_same(kt, mt)
                if same is None and ref.overlapping(kt, mt):
                    with pytest.raises(MegaflowOverlap):
                        cache.install(key, mask, np.array(acts, dtype=np.int64), now)
                    continue
                e = cache.install(key, mask, np.array(acts, dtype=np.int64), now)
                if same is not None:
                    assert e == same
                    ref.flows[e].actions = tuple(acts)
                elif len(ref.flows) >= max_flows:
                    assert e == -1
                    ref.table_full += 1
                elif mt not in (masks := {f.mask for f in ref.flows.values()}) and len(masks) >= max_sub:
                    assert e == -1
                    sub_full += 1
                else:
                    assert 0 <= e < max_flows and e not in ref.flows
                    ref.flows[e] = RefMegaflow(masked(kt, mt), mt, tuple(acts), used=now, created=now)
            if last:   # the previous burst again: EMC rows may name ids just reused
                run_burst(last, 0)
        elif kind == "remove" and ref.flows:
            i = sorted(ref.flows)[op[1] % len(ref.flows)]
            gone = cache.remove(i)
            f = ref.flows.pop(i)
            assert (gone.packets, gone.bytes) == (f.packets, f.bytes)
            with pytest.raises(KeyError):
                cache.get(i)
            if last:
                run_burst(last, 1)
        elif kind in ("lookup", "probe", "replay"):
            if kind == "replay":
                ks, extra = last, op[1]
            else:
                _, ks, extra = op
            if kind == "probe":   # keys of installed megaflows, other bits from a random key
                if not ref.flows:
                    continue
                ids = sorted(ref.flows)
                flows = [ref.flows[ids[i % len(ids)]] for i, _k in ks]
                ks = [row({w: f.key[w] | int(k[w]) & ~f.mask[w] for w in (*WORDS, K.W_ETH_SRC)})
                      for f, (_i, k) in zip(flows, ks, strict=True)]
            last = ks
            if ks:
                run_burst(ks, extra)
        elif kind == "expire":
            gone = cache.expire(now, op[1])
            assert {m.id for m in gone} == ref.expire(now, op[1])
        elif kind == "tick":
            now += op[1]
        elif kind == "resort":
            cache.resort()
        check_same(cache, ref)
    assert cache.stats()["megaflow_subtables_full"] == sub_full
    s = cache.stats()
    assert [s["emc_hits"] + s["megaflow_hits"], s["misses"]] == totals


def test_emc_row_of_a_removed_entry_is_not_used() -> None:
    """One EMC row for every key: after a remove, and after the id is reused by a megaflow the key does
    not match, the stale row must not answer; a reused id the key does match is the right answer."""
    cache = MegaflowCache(max_flows=4, emc_size=1, emc_insert_inv_prob=1)
    ones32 = 0xFFFF_FFFF
    keys = np.stack([K.key_from_fields(in_port=1, eth_dst=5)])
    meta = np.zeros((1, 4), dtype=np.int32)
    out = np.zeros(1, dtype=np.int64)
    b = np.zeros(1, dtype=np.int32)
    a = cache.install(K.key_from_fields(in_port=1), K.key_from_fields(in_port=ones32), np.array([1]))
    assert cache.lookup(keys, b, 1, meta, out) == 0 and out[0] == a
    assert cache.lookup(keys, b, 1, meta, out) == 0 and out[0] == a and cache.stats()["emc_hits"] == 1
    cache.remove(a)
    assert cache.lookup(keys, b, 1, meta, out) == 1 and out[0] == -1
    c = cache.install(K.key_from_fields(in_port=2), K.key_from_fields(in_port=ones32), np.array([2]))
    assert c == a   # the id is reused; the EMC row still names it
    assert cache.lookup(keys, b, 1, meta, out) == 1 and out[0] == -1
    cache.remove(c)
    d = cache.install(K.key_from_fields(eth_dst=5), K.key_from_fields(eth_dst=(1 << 48) - 1), np.array([3]))
    assert d == a
    assert cache.lookup(keys, b, 1, meta, out) == 0 and out[0] == d
    assert cache.get(d).packets == 1


def test_replace_exclusive_bound_and_expiry() -> None:
    cache = MegaflowCache(max_flows=2, emc_size=0)
    m = K.key_from_fields(in_port=0xFFFF_FFFF)
    a = cache.install(K.key_from_fields(in_port=1, tp_src=9), m, np.array([1, 2, 3]), now=1)
    assert cache.install(K.key_from_fields(in_port=1), m, np.array([4]), now=2) == a   # same masked key
    assert cache.get(a).actions.tolist() == [4] and cache.get(a).created == 1
    with pytest.raises(MegaflowExists):
        cache.install(K.key_from_fields(in_port=1), m, np.array([5]), exclusive=True)
    b = cache.install(K.key_from_fields(in_port=2), m, np.array([5]), now=3)
    assert cache.install(K.key_from_fields(in_port=3), m, np.array([6])) == -1
    assert cache.stats()["megaflow_table_full"] == 1
    assert [x.id for x in cache.expire(now=4, idle=3)] == [a]
    assert [x.id for x in cache.dump()] == [b]


def test_actions_compaction() -> None:
    """Replacing and removing programs reuses the flat array; every entry keeps its own program."""
    cache = MegaflowCache(max_flows=16, emc_size=0, action_words=16)
    m = K.key_from_fields(in_port=0xFFFF_FFFF)
    progs = {}
    rng = np.random.default_rng(1)
    for step in range(400):
        p = int(rng.integers(8))
        acts = rng.integers(-1000, 1000, int(rng.integers(0, 6)))
        if step % 7 == 3 and p in progs:
            cache.remove(progs.pop(p)[0])
            continue
        e = cache.install(K.key_from_fields(in_port=p), m, acts)
        progs[p] = (e, acts.tolist())
        for e, want in progs.values():
            assert cache.get(e).actions.tolist() == want
    assert len(cache.actions) <= 64


def test_resort_orders_by_hits() -> None:
    cache = MegaflowCache(max_flows=8, emc_size=0)
    a = cache.install(K.key_from_fields(in_port=1), K.key_from_fields(in_port=0xFFFF_FFFF), np.array([1]))
    b = cache.install(K.key_from_fields(eth_dst=7), K.key_from_fields(eth_dst=(1 << 48) - 1), np.array([2]))
    keys = np.stack([K.key_from_fields(eth_dst=7)] * 4)
    meta = np.zeros((4, 4), dtype=np.int32)
    out = np.zeros(4, dtype=np.int64)
    cache.lookup(keys, np.arange(4, dtype=np.int32), 4, meta, out)
    assert out.tolist() == [b] * 4 and cache.stats()["subtable_lookups"] == 8
    cache.resort()
    assert cache.subtables()[0][1:] == (1, 0)
    cache.lookup(keys, np.arange(4, dtype=np.int32), 4, meta, out)
    assert cache.stats()["subtable_lookups"] == 12 and cache.get(a).packets == 0


def test_key_layout() -> None:
    r = K.key_from_fields(recirc_id=1, in_port=2, eth_dst=0x020000000001, vlan_tci=0x1000 | 10 | 3 << 13,
                          nw_proto=6, nw_tos=0xB8, nw_ttl=64, nw_src=0x0A000001, tp_src=80, tp_dst=443,
                          tcp_flags=0x12, ipv6_dst=1 << 127 | 5, ct_state=0x21, ct_zone=7, tun_id=1 << 63,
                          tun_ttl=9, tun_metadata=1)
    assert r.shape == (K.KEY_WORDS,) and r.dtype == np.uint64
    assert r[K.W_RECIRC_ID] == 1 and r[K.W_IN_PORT] == 2 and r[K.W_ETH_DST] == 0x020000000001
    assert r[K.W_VLAN_TCI] == 0x700A
    assert r[K.W_NW] == 6 | 0xB8 << 8 | 64 << 16
    assert r[K.W_TP] == 80 | 443 << 16 | 0x12 << 32
    assert r[K.W_IPV6_DST] == 1 << 63 and r[K.W_IPV6_DST + 1] == 5
    assert r[K.W_CT_STATE] == 0x21 | 7 << 32 and r[K.W_TUN_ID] == 1 << 63 and r[K.W_TUN_MISC] == 9 << 24
    assert r[K.W_TUN_METADATA + K.TUN_METADATA_WORDS - 1] == 1
    assert K.key_fields(r)["ipv6_dst"] == 1 << 127 | 5
    named = {getattr(K, n) for n in dir(K) if n.startswith("W_")}
    assert max(named) + K.TUN_METADATA_WORDS <= K.KEY_WORDS and not named & set(K.RESERVED_WORDS)
    with pytest.raises(ValueError):
        K.key_from_fields(tp_src=1 << 16)
    with pytest.raises(ValueError):
        K.key_from_fields(reg0=1)


def test_emc_hash_covers_the_used_words() -> None:
    """The EMC hashes exactly the key words some installed mask uses: installing a mask on a new word
    brings it in, removing the last such mask takes it out, and lookups stay right across both."""
    cache = MegaflowCache(max_flows=8, emc_size=16, emc_insert_inv_prob=1)
    st_ = cache.arrays()[0]
    keys = np.zeros((K.KEY_WORDS + 1, K.KEY_WORDS), dtype=np.uint64)
    for w in range(K.KEY_WORDS):
        keys[w + 1, w] = 1
    every = np.ones(K.KEY_WORDS, dtype=np.uint64)
    a = cache.install(np.zeros(K.KEY_WORDS, dtype=np.uint64), every, np.array([1]))   # every word
    assert len({int(key_hash(keys, s, st_)) for s in range(K.KEY_WORDS + 1)}) == K.KEY_WORDS + 1
    cache.remove(a)
    assert len({int(key_hash(keys, s, st_)) for s in range(K.KEY_WORDS + 1)}) == 1   # no word used

    ones32 = 0xFFFF_FFFF
    pair = np.stack([K.key_from_fields(in_port=1, tp_src=5), K.key_from_fields(in_port=1, tp_src=6)])
    meta = np.zeros((2, 4), dtype=np.int32)
    out = np.zeros(2, dtype=np.int64)
    b = np.arange(2, dtype=np.int32)
    p = cache.install(K.key_from_fields(in_port=1), K.key_from_fields(in_port=ones32), np.array([2]))
    assert key_hash(pair, 0, st_) == key_hash(pair, 1, st_)        # tp is not hashed yet
    for _ in range(2):
        assert cache.lookup(pair, b, 2, meta, out) == 0 and out.tolist() == [p, p]
    assert cache.stats()["emc_hits"] == 2     # the EMC is read for a whole burst before it is written
    t = cache.install(K.key_from_fields(in_port=2, tp_src=5), K.key_from_fields(in_port=ones32, tp_src=0xFFFF),
                      np.array([3]))
    assert key_hash(pair, 0, st_) != key_hash(pair, 1, st_)        # now it is
    assert not cache.emc.any()                                     # rows placed by the old hash are gone
    pair[1] = K.key_from_fields(in_port=2, tp_src=5)
    for _ in range(2):
        assert cache.lookup(pair, b, 2, meta, out) == 0 and out.tolist() == [p, t]
    assert cache.stats()["emc_hits"] == 4
    cache.remove(t)
    assert cache.lookup(pair, b, 2, meta, out) == 1 and out.tolist() == [p, -1]
    pair[1] = K.key_from_fields(in_port=1, tp_src=6)
    assert key_hash(pair, 0, st_) == key_hash(pair, 1, st_)


def test_emc_two_way_replacement() -> None:
    """One EMC set (two rows): two keys of different megaflows both stay; a third replaces one of them;
    a row naming a removed megaflow (or an earlier incarnation of its id) is replaced first; every answer
    is right."""
    cache = MegaflowCache(max_flows=8, emc_size=2, emc_insert_inv_prob=1)
    ones32 = 0xFFFF_FFFF
    ids = [cache.install(K.key_from_fields(in_port=p), K.key_from_fields(in_port=ones32), np.array([p]))
           for p in range(3)]
    keys = np.stack([K.key_from_fields(in_port=p, eth_src=9) for p in range(3)])
    meta = np.zeros((3, 4), dtype=np.int32)
    out = np.zeros(3, dtype=np.int64)

    def look(*slots: int) -> int:
        """Look ``slots`` up; returns the EMC hits it took."""
        before = cache.stats()["emc_hits"]
        b = np.array(slots, dtype=np.int32)
        assert cache.lookup(keys, b, len(b), meta, out) == 0 and out[:len(b)].tolist() == [ids[s] for s in slots]
        return cache.stats()["emc_hits"] - before

    assert look(0, 1) == 0
    assert look(0, 1) == 2          # both in the set
    assert look(2) == 0             # replaces one of them
    assert look(2) == 1
    assert look(0) + look(1) == 1   # the other one stayed
    cache.emc[:] = 0
    assert look(0, 1) == 0 and look(0, 1) == 2
    cache.remove(ids[1])
    ids[1] = cache.install(K.key_from_fields(in_port=1), K.key_from_fields(in_port=ones32), np.array([7]))
    assert look(1) == 0             # the id was reused, but a row names an incarnation: this one is stale
    assert look(1) == 1             # ... and rewritten
    cache.remove(ids[0])
    b = np.zeros(1, dtype=np.int32)
    assert cache.lookup(keys, b, 1, meta, out) == 1 and out[0] == -1
    assert look(2) == 0             # replaces the row naming the removed megaflow ...
    assert look(1, 2) == 2          # ... not the live one
