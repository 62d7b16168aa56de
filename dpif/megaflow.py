"""The megaflow cache: the datapath's flow table. A control-side ``MegaflowCache`` installs, removes
and expires megaflows; the ``mf_lookup`` kernel finds the megaflow of every frame of a burst.

```
keys[slot] ──► EMC: hash of the used words ──► 2-way set ──► row = used words? ──► same incarnation? ─hit─┐
                  │ miss                                                                                  │
                  ▼                                                                            ▼
      subtables in hit order: hash(key & mask over the subtable's words) ──► bucket ──► entry   out_entry[i]
      (first hit wins: megaflows do not overlap) ──hit──► EMC row written (1 in emc_insert_inv_prob)  + stats
                  │ miss: out_entry[i] = -1 (an upcall)
```

The kernel works in passes over the burst, each fetching (prefetching) what the next one reads:
EMC hashes (fetch the sets) and row compares (fetch the entries' first lines), the incarnation
checks and counters; the frames the
EMC does not answer then search the subtables ``CHUNK`` at a time, one subtable after the other
(hashes, fetch the buckets; first buckets, fetch their entry rows; the probes).

Megaflow
    ``(key & mask, mask, actions)``: ``key`` and ``mask`` are ``dpif.key`` rows; the actions are an
    int64 program (``dpif.actions``, to come) stored in one flat array. The cache stores the masked
    key. Megaflows must not overlap (no frame matches two): the translator's masks make them
    disjoint, and ``MegaflowCache(check_overlap=True)`` verifies it on every install (O(flows), for
    tests). Installing the same mask and masked key again replaces the actions in place and keeps
    the entry, its id and its counters (OVS's modify); ``install(..., exclusive=True)`` refuses it
    with ``MegaflowExists`` instead.

Subtables
    One per distinct mask, holding only the mask's non-zero words as ``(word, mask)`` pairs (a
    miniflow); an entry stores its masked values in that order. All subtables share one
    open-addressing table (linear probing, at least twice ``max_flows`` buckets, so the load stays
    under 1/2 without ever rehashing) keyed by a hash of the subtable id and the masked words.
    Subtables are searched in the order of ``st[H_ORDER:]``, which ``resort()`` rewrites by the hits
    since the previous resort. A subtable goes away with its last entry.

Exact-match cache (EMC)
    ``emc_size`` rows (a power of two, 0: none) of ``EMC_W`` words, in sets of two rows (OVS's EMC is
    2-way too), chosen by a hash of the key words some installed mask uses (``st[H_UW:]``, kept by the
    control side: a word no mask looks at cannot tell megaflows apart). A row holds those words of a
    key, exactly, and names an entry with its incarnation (``E_GEN``, bumped by every install into a
    free id and every remove). A frame hits a row when its used words equal the row's and the entry
    is still that incarnation, so the EMC can never return a wrong megaflow: keys equal on every word
    a mask looks at have the same megaflow. When the used-word set changes, the EMC is cleared (its
    rows hold the old words); with more than ``EMC_MAX_WORDS`` used words it is not used. A
    subtable hit writes a row of its set (one that names no live entry, else either, drawn) with
    probability ``1 / emc_insert_inv_prob`` (OVS's default 100: a frame of a short flow seldom evicts
    a long one; 1: always; 0: never), drawn from a generator kept in ``st``. Up to 7 used words (one
    cache line a row) the hash and compare are unrolled and branch-free, and a frame's set is fetched
    ``EMC_AHEAD`` frames before it is read.

Arrays (all int64; fixed size from construction, except ``actions``)
    * ``st``: header (``H_*``: counts, counters, the EMC draw state, the used words), the subtable
      order, one ``S_W``-word row per subtable (``S_*``), then the kernel's scratch (``2 * CHUNK``);
    * ``ent``: ``[max_flows, E_W]``, one row per entry id (``E_*``): subtable (-1: free), action
      offset and length, packets, bytes, used, incarnation, the masked values, then (control side)
      hash and created;
    * ``buckets``: ``tag | (entry + 1)`` per bucket (``TAG_MASK`` bits of the hash; 0: empty);
    * ``emc``: ``[emc_size, EMC_W]``: ``incarnation << ENTRY_BITS | entry + 1`` (0: empty), then the
      used words;
    * ``actions``: the flat programs; entry ``e``'s is ``actions[ent[e, E_ACT]:][:ent[e, E_ACT_LEN]]``.

Update rule
    Every method that changes the cache (``install``, ``remove``, ``expire``, ``resort``) runs on
    the datapath thread between two ``mf_lookup`` calls: the control side queues it
    (``Datapath.call``), as it does for flow sets. ``st``, ``ent``, ``buckets`` and ``emc`` are never
    replaced; ``actions`` may be (it grows by doubling and is compacted when full), so the executor
    takes ``cache.actions`` again after any such call. Read-only methods (``get``, ``dump``,
    ``stats``) may run on any thread; their counters may then be a burst old.

Kernel: ``mf_lookup(keys, burst, n, meta, st, ent, buckets, emc, out_entry, now) -> misses``.
Tests: ``tests/test_megaflow.py`` (against ``dpif.megaflow_ref``); benchmark: ``python -m bench megaflow``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from classifier.parse import META_LEN
from dpif.key import KEY_WORDS

# st header
H_NSUB = 0            # subtables in use (the length of the order)
H_MAX_SUB = 1         # rows of the subtable section
H_SUB0 = 2            # offset of subtable row 0
H_BMASK = 3           # buckets - 1
H_EMC_INV = 4         # EMC insertion: 1 in this many subtable hits (0: never)
H_RNG = 5             # state of the EMC insertion draw
H_EMC_HITS = 6        # counters: frames found through the EMC
H_MF_HITS = 7         # ... through the subtables
H_MISSES = 8          # ... not found (upcalls)
H_SUB_LOOKUPS = 9     # subtables probed by frames the EMC did not answer
H_NUW = 10            # key words some installed mask uses (what the EMC hashes)
H_SCR = 11            # offset of the kernel's scratch: 2 * CHUNK words at the end of st
H_UW = 16             # ... those words, ascending, H_NUW of them
H_SIZE = H_UW + KEY_WORDS
H_ORDER = H_SIZE      # subtable ids in lookup order

# subtable rows
S_NW = 0              # non-zero mask words
S_HITS = 1            # frames that hit this subtable since the last resort()
S_COUNT = 2           # entries
S_F = 4               # (word, mask) pairs, S_NW of them
S_W = S_F + 2 * KEY_WORDS

# entry rows: what a hit reads and writes first, so a mask of up to two words is one cache line
E_SUB = 0             # subtable id; -1: a free id
E_ACT = 1             # offset of the actions in the flat array
E_ACT_LEN = 2         # their length
E_PACKETS = 3
E_BYTES = 4
E_USED = 5            # last ``now`` a frame hit (install time at first)
E_GEN = 6             # the id's incarnation: bumped by every install into a free id and every remove
E_VAL = 7             # the masked key words, in the subtable's pair order
E_HASH = E_VAL + KEY_WORDS    # the subtable hash of the masked values (control side)
E_CREATED = E_HASH + 1
E_W = (E_CREATED + 8) // 8 * 8   # whole cache lines
GEN_MASK = (1 << 39) - 1

# EMC rows: ``incarnation << ENTRY_BITS | entry + 1`` (0: empty), then the key's used words
EMC_W = 16
EMC_MAX_WORDS = EMC_W - 1     # more used words than this: the EMC is not used

CHUNK = 64            # frames that search the subtables together (one pass per subtable)
EMC_AHEAD = 8         # frames between an EMC set's fetch and its read

ENTRY_BITS = 24
ENTRY_MASK = (1 << ENTRY_BITS) - 1
TAG_MASK = ~np.int64(ENTRY_MASK)     # a bucket / EMC row: hash & TAG_MASK | entry + 1
MAX_FLOWS_LIMIT = ENTRY_MASK - 1

DEFAULT_MAX_FLOWS = 65536            # OVS dpif-netdev's flow limit per PMD
DEFAULT_EMC_SIZE = 8192              # OVS's EMC size
DEFAULT_EMC_INSERT_INV_PROB = 100    # OVS's other_config:emc-insert-inv-prob
DEFAULT_MAX_SUBTABLES = 1024

_K2 = np.int64(-4658895280553007687)    # 0xBF58476D1CE4E5B9
_K3 = np.int64(-7723592293110705685)    # 0x94D049BB133111EB
_LCG_A = np.int64(6364136223846793005)
_LCG_C = np.int64(1442695040888963407)
# one odd multiplier per key word: the EMC and subtable hashes are sums of word * multiplier, then mixed
_KEY_MULT = (np.random.default_rng(0x6D65676166).integers(0, 1 << 62, KEY_WORDS, dtype=np.int64) * 2 + 1)


class MegaflowError(ValueError):
    """An install the cache refuses."""


class MegaflowExists(MegaflowError):
    """``install(exclusive=True)`` of a megaflow whose mask and masked key are already installed."""


class MegaflowOverlap(MegaflowError):
    """An install that would overlap an installed megaflow (``check_overlap=True``)."""


@dataclass
class Megaflow:
    """One installed megaflow as ``dump()`` and ``get()`` list it."""

    id: int
    key: np.ndarray       # uint64[KEY_WORDS], already masked
    mask: np.ndarray      # uint64[KEY_WORDS]
    actions: np.ndarray   # int64 program (a copy)
    packets: int
    bytes: int
    used: int
    created: int


# ---------------------------------------------------------------------------------------------
# kernels


@intrinsic
def _prefetch(typingctx, arr, i):
    """Prefetch ``arr.flat[i]`` (a C-contiguous array) into the cache, for reading."""
    sig = types.void(arr, i)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        array = context.make_array(aryty)(context, builder, args[0])
        ptr = builder.gep(array.data, [args[1]])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])  # read, keep in all levels, data
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _fin(h: np.int64) -> np.int64:
    h = (h ^ (h >> 29)) * _K2
    h = (h ^ (h >> 32)) * _K3
    return h ^ (h >> 29)


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _key_hash(keys: np.ndarray, s: int, st: np.ndarray, nuw: int) -> np.int64:
    """The EMC hash of key row ``keys[s]``: of the words some installed mask uses (``st[H_UW:]``)."""
    acc = np.int64(0)
    for q in range(nuw):
        w = st[H_UW + q]
        acc += np.int64(keys[s, w]) * _KEY_MULT[w]
    return _fin(acc)


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _uw(st: np.ndarray, nuw: int, q: int, mult: bool) -> int:
    """Used word ``q`` (or, with ``mult``, its hash multiplier); past the last one, word 0 and multiplier 0
    (a padded term adds nothing to the hash)."""
    if q >= nuw:
        return 0
    w = st[H_UW + q]
    return _KEY_MULT[w] if mult else w


@numba.njit(nogil=True, cache=True, _nrt=False)
def key_hash(keys: np.ndarray, s: int, st: np.ndarray) -> np.int64:
    """The EMC hash of ``keys[s]`` under cache state ``st`` (for tests and tools)."""
    return _key_hash(keys, s, st, st[H_NUW])


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _emc_live(emc: np.ndarray, r: int, ent: np.ndarray) -> bool:
    """True when EMC row ``r`` names an entry in the incarnation it was written for."""
    v = emc[r, 0]
    if v == 0:
        return False
    c = (v & ENTRY_MASK) - 1
    return ent[c, E_SUB] >= 0 and ent[c, E_GEN] == (v >> ENTRY_BITS)


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _emc_way(emc: np.ndarray, r0: int, r1: int, ent: np.ndarray, rng: np.int64) -> int:
    """The EMC row of set ``(r0, r1)`` a new row replaces: one that names no live entry, else one drawn
    by ``rng``."""
    if not _emc_live(emc, r0, ent):
        return r0
    if not _emc_live(emc, r1, ent):
        return r1
    return r1 if (rng >> 40) & 1 else r0


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _emc_same(emc: np.ndarray, r: int, keys: np.ndarray, s: int, st: np.ndarray, nuw: int) -> bool:
    """True when EMC row ``r`` holds ``keys[s]``'s used words."""
    for q in range(nuw):
        if emc[r, 1 + q] != np.int64(keys[s, st[H_UW + q]]):
            return False
    return True


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _emc_write(emc: np.ndarray, r: int, keys: np.ndarray, s: int, st: np.ndarray, nuw: int, ent: np.ndarray,
               e: int) -> None:
    """EMC row ``r`` := ``keys[s]``'s used words -> entry ``e`` (its current incarnation)."""
    for q in range(nuw):
        emc[r, 1 + q] = np.int64(keys[s, st[H_UW + q]])
    emc[r, 0] = (ent[e, E_GEN] << ENTRY_BITS) | (e + 1)


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _sub_hash(keys: np.ndarray, s: int, st: np.ndarray, so: int, sid: int) -> np.int64:
    """The hash of ``keys[s]`` under subtable ``sid`` (row at ``st[so]``): of its masked words."""
    h = np.int64(sid) * _K3 + 1
    for q in range(st[so + S_NW]):
        w = st[so + S_F + 2 * q]
        h += (np.int64(keys[s, w]) & st[so + S_F + 2 * q + 1]) * _KEY_MULT[w]
    return _fin(h)


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _probe(keys: np.ndarray, s: int, st: np.ndarray, so: int, sid: int, ent: np.ndarray,
           buckets: np.ndarray, bmask: int, h: np.int64) -> int:
    """The entry of subtable ``sid`` (row at ``st[so]``) that ``keys[s]`` (subtable hash ``h``) matches, or -1."""
    nw = st[so + S_NW]
    b = (h >> ENTRY_BITS) & bmask
    while True:
        v = buckets[b]
        if v == 0:
            return -1
        if ((v ^ h) & TAG_MASK) == 0:
            c = (v & ENTRY_MASK) - 1
            if ent[c, E_SUB] == sid:
                same = True
                for q in range(nw):
                    if (np.int64(keys[s, st[so + S_F + 2 * q]]) & st[so + S_F + 2 * q + 1]) != ent[c, E_VAL + q]:
                        same = False
                        break
                if same:
                    return c
        b = (b + 1) & bmask


@numba.njit(nogil=True, cache=True, _nrt=False)
def _search(keys: np.ndarray, burst: np.ndarray, st: np.ndarray, m: int, ent: np.ndarray, buckets: np.ndarray,
            emc: np.ndarray, out_entry: np.ndarray, rng: np.int64, meta: np.ndarray,
            now: int, prog_index: np.ndarray, progs: bool) -> tuple[int, int, np.int64]:
    """Search the subtables, in order, for the ``m`` frames whose burst positions are in the scratch; a hit
    sets ``out_entry``, counts the frame on its entry (and maybe writes an EMC row). Returns ``(hits,
    subtables probed, rng)``."""
    scr = st[H_SCR]
    hs = scr + CHUNK          # subtable hashes
    bmask = st[H_BMASK]
    sub0 = st[H_SUB0]
    inv = st[H_EMC_INV]
    nuw = st[H_NUW]
    emask = emc.shape[0] - 1 if nuw <= EMC_MAX_WORDS else -1
    found = 0
    probes = 0
    for j in range(st[H_NSUB]):
        if m == 0:
            break
        sid = st[H_ORDER + j]
        so = sub0 + sid * S_W
        probes += m
        for p in range(m):
            h = _sub_hash(keys, burst[st[scr + p]], st, so, sid)
            st[hs + p] = h
            _prefetch(buckets, (h >> ENTRY_BITS) & bmask)
        for p in range(m):
            v = buckets[(st[hs + p] >> ENTRY_BITS) & bmask]
            if v != 0 and ((v ^ st[hs + p]) & TAG_MASK) == 0:
                c = (v & ENTRY_MASK) - 1
                _prefetch(ent, c * E_W)
                _prefetch(ent, c * E_W + 8)
        k = 0
        for p in range(m):
            i = st[scr + p]
            s = burst[i]
            e = _probe(keys, s, st, so, sid, ent, buckets, bmask, st[hs + p])
            if e < 0:
                st[scr + k] = i
                k += 1
                continue
            out_entry[i] = e
            if progs:
                prog_index[i, 0] = ent[e, E_ACT]
                prog_index[i, 1] = ent[e, E_ACT_LEN]
            ent[e, E_PACKETS] += 1
            ent[e, E_BYTES] += meta[s, META_LEN]
            ent[e, E_USED] = now
            st[so + S_HITS] += 1
            found += 1
            if emask >= 0 and inv > 0:
                rng = rng * _LCG_A + _LCG_C
                if inv == 1 or ((rng >> 33) & 0x7FFFFFFF) % inv == 0:
                    h = _key_hash(keys, s, st, nuw)
                    r0 = (h >> ENTRY_BITS) & emask & ~1
                    _emc_write(emc, _emc_way(emc, r0, (r0 | 1) & emask, ent, rng), keys, s, st, nuw, ent, e)
        m = k
    return found, probes, rng


@numba.njit(nogil=True, cache=True, _nrt=False)
def mf_lookup_programs(keys: np.ndarray, burst: np.ndarray, n: int, meta: np.ndarray, st: np.ndarray,
                       ent: np.ndarray, buckets: np.ndarray, emc: np.ndarray, out_entry: np.ndarray, now: int,
                       prog_index: np.ndarray) -> int:
    """``mf_lookup``, also filling ``prog_index[i]`` (as ``mf_programs``) for every frame that hit when
    ``prog_index`` has rows: the hit path's one pass instead of two (the frames that missed get theirs
    from ``mf_programs`` after the upcalls)."""
    progs = prog_index.shape[0] > 0
    nuw = st[H_NUW]
    n_emc = emc.shape[0] if nuw <= EMC_MAX_WORDS else 0
    emask = n_emc - 1
    rng = st[H_RNG]
    emc_hits = 0
    mf_hits = 0
    misses = 0
    probes = 0
    if n_emc > 0 and nuw <= 7:
        # passes 1 and 2 in one loop, unrolled and branch-free over 7 used words (the padding has
        # multiplier 0 and is masked off): frame i's hash (its set fetched) while frame i - EMC_AHEAD
        # finds the row of its set holding its words (that entry's first line fetched)
        w0, w1, w2, w3 = _uw(st, nuw, 0, False), _uw(st, nuw, 1, False), _uw(st, nuw, 2, False), _uw(st, nuw, 3, False)
        w4, w5, w6 = _uw(st, nuw, 4, False), _uw(st, nuw, 5, False), _uw(st, nuw, 6, False)
        m0, m1, m2, m3 = _uw(st, nuw, 0, True), _uw(st, nuw, 1, True), _uw(st, nuw, 2, True), _uw(st, nuw, 3, True)
        m4, m5, m6 = _uw(st, nuw, 4, True), _uw(st, nuw, 5, True), _uw(st, nuw, 6, True)
        l0, l1, l2, l3, l4, l5, l6 = (-np.int64(nuw > 0), -np.int64(nuw > 1), -np.int64(nuw > 2),
                                      -np.int64(nuw > 3), -np.int64(nuw > 4), -np.int64(nuw > 5),
                                      -np.int64(nuw > 6))
        for i in range(n + EMC_AHEAD):
            if i < n:
                s = burst[i]
                h = _fin(np.int64(keys[s, w0]) * m0 + np.int64(keys[s, w1]) * m1 + np.int64(keys[s, w2]) * m2
                         + np.int64(keys[s, w3]) * m3 + np.int64(keys[s, w4]) * m4 + np.int64(keys[s, w5]) * m5
                         + np.int64(keys[s, w6]) * m6)
                out_entry[i] = h
                r = (h >> ENTRY_BITS) & emask & ~1
                _prefetch(emc, r * EMC_W)
                _prefetch(emc, ((r | 1) & emask) * EMC_W)
            j = i - EMC_AHEAD
            if j >= 0:
                s = burst[j]
                k0 = np.int64(keys[s, w0])
                k1 = np.int64(keys[s, w1])
                k2 = np.int64(keys[s, w2])
                k3 = np.int64(keys[s, w3])
                k4 = np.int64(keys[s, w4])
                k5 = np.int64(keys[s, w5])
                k6 = np.int64(keys[s, w6])
                r = (out_entry[j] >> ENTRY_BITS) & emask & ~1
                v = np.int64(0)
                for _way in range(2):
                    d = (((emc[r, 1] ^ k0) & l0) | ((emc[r, 2] ^ k1) & l1) | ((emc[r, 3] ^ k2) & l2)
                         | ((emc[r, 4] ^ k3) & l3) | ((emc[r, 5] ^ k4) & l4) | ((emc[r, 6] ^ k5) & l5)
                         | ((emc[r, 7] ^ k6) & l6))
                    if d == 0 and emc[r, 0] != 0:
                        v = emc[r, 0]
                        break
                    r = (r | 1) & emask
                if v != 0:
                    _prefetch(ent, ((v & ENTRY_MASK) - 1) * E_W)
                out_entry[j] = v
    elif n_emc > 0:
        # pass 1: EMC hashes; fetch their sets
        for i in range(n):
            h = _key_hash(keys, burst[i], st, nuw)
            out_entry[i] = h
            r = (h >> ENTRY_BITS) & emask & ~1
            _prefetch(emc, r * EMC_W)
            _prefetch(emc, r * EMC_W + 8)
            _prefetch(emc, ((r | 1) & emask) * EMC_W)
            _prefetch(emc, ((r | 1) & emask) * EMC_W + 8)
        # pass 2: the row of the set holding the key's used words; fetch its entry's first line
        for i in range(n):
            s = burst[i]
            r = (out_entry[i] >> ENTRY_BITS) & emask & ~1
            v = np.int64(0)
            r1 = (r | 1) & emask
            if _emc_same(emc, r, keys, s, st, nuw):
                v = emc[r, 0]
            elif _emc_same(emc, r1, keys, s, st, nuw):
                v = emc[r1, 0]
            if v != 0:
                _prefetch(ent, ((v & ENTRY_MASK) - 1) * E_W)
            out_entry[i] = v
    # pass 3: validate the candidates; the frames they do not answer search the subtables, CHUNK at a time
    scr = st[H_SCR]
    m = 0
    for i in range(n):
        e = -1
        s = burst[i]
        if n_emc > 0:
            v = out_entry[i]
            if v != 0:
                c = (v & ENTRY_MASK) - 1
                if ent[c, E_SUB] >= 0 and ent[c, E_GEN] == (v >> ENTRY_BITS):   # not removed since
                    e = c
        out_entry[i] = e
        if e >= 0:
            if progs:
                prog_index[i, 0] = ent[e, E_ACT]
                prog_index[i, 1] = ent[e, E_ACT_LEN]
            emc_hits += 1
            ent[e, E_PACKETS] += 1
            ent[e, E_BYTES] += meta[s, META_LEN]
            ent[e, E_USED] = now
        else:
            st[scr + m] = i
            m += 1
            if m == CHUNK:
                found, pr, rng = _search(keys, burst, st, m, ent, buckets, emc, out_entry, rng, meta, now,
                                         prog_index, progs)
                mf_hits += found
                probes += pr
                m = 0
    if m > 0:
        found, pr, rng = _search(keys, burst, st, m, ent, buckets, emc, out_entry, rng, meta, now, prog_index, progs)
        mf_hits += found
        probes += pr
    misses = n - emc_hits - mf_hits      # every hit was counted on its entry where it was found
    st[H_RNG] = rng
    st[H_EMC_HITS] += emc_hits
    st[H_MF_HITS] += mf_hits
    st[H_MISSES] += misses
    st[H_SUB_LOOKUPS] += probes
    return misses



@numba.njit(nogil=True, cache=True, _nrt=False)
def mf_lookup(keys: np.ndarray, burst: np.ndarray, n: int, meta: np.ndarray, st: np.ndarray, ent: np.ndarray,
              buckets: np.ndarray, emc: np.ndarray, out_entry: np.ndarray, now: int) -> int:
    """Find the megaflow of every frame of ``burst[:n]``; returns the number of misses.

    * ``keys``: ``uint64[slots, KEY_WORDS]`` (``dpif.key``); ``meta[slot, META_LEN]``: frame lengths.
    * ``st``, ``ent``, ``buckets``: ``MegaflowCache.arrays()``; ``emc``: its EMC, or an int64
      ``[0, EMC_W]`` array to look up without one.
    * ``out_entry[i]``: the entry id for ``burst[i]``, -1 on a miss (``out_entry[:n]`` is also the
      kernel's scratch between its passes).
    * Per entry: packets, bytes, ``used = now``; per subtable: hits; in ``st``: the ``H_*`` counters.
    """
    none = out_entry[:0].reshape((0, 2))      # no program indexes (a view: the same signature as the hit path's)
    return mf_lookup_programs(keys, burst, n, meta, st, ent, buckets, emc, out_entry, now, none)


# control-side helpers (called from MegaflowCache on the datapath thread)


@numba.njit(nogil=True, cache=True, _nrt=False)
def _bucket_insert(buckets: np.ndarray, bmask: int, h: np.int64, e: int) -> None:
    b = (h >> ENTRY_BITS) & bmask
    while buckets[b] != 0:
        b = (b + 1) & bmask
    buckets[b] = (h & TAG_MASK) | (e + 1)


@numba.njit(nogil=True, cache=True, _nrt=False)
def _bucket_remove(buckets: np.ndarray, bmask: int, h: np.int64, e: int) -> bool:
    """Remove entry ``e`` (hash ``h``); backward-shift deletion keeps every probe chain unbroken."""
    want = (h & TAG_MASK) | (e + 1)
    i = (h >> ENTRY_BITS) & bmask
    while buckets[i] != want:
        if buckets[i] == 0:
            return False
        i = (i + 1) & bmask
    j = i
    while True:
        j = (j + 1) & bmask
        v = buckets[j]
        if v == 0:
            break
        k = (v >> ENTRY_BITS) & bmask     # home bucket of v
        # v stays when its home lies cyclically in (i, j]
        if (i <= j and i < k <= j) or (i > j and (k > i or k <= j)):
            continue
        buckets[i] = v
        i = j
    buckets[i] = 0
    return True


@numba.njit(nogil=True, cache=True, _nrt=False)
def _install_find(keys: np.ndarray, st: np.ndarray, so: int, sid: int, ent: np.ndarray, buckets: np.ndarray,
                  bmask: int) -> tuple[np.int64, int]:
    """``(hash, entry or -1)`` of key row ``keys[0]`` in subtable ``sid`` (row at ``st[so]``): the lookup's own
    hash and probe for one key."""
    h = _sub_hash(keys, 0, st, so, sid)
    return h, _probe(keys, 0, st, so, sid, ent, buckets, bmask, h)


@numba.njit(nogil=True, cache=True, _nrt=False)
def _install_fill(keys: np.ndarray, st: np.ndarray, so: int, sid: int, ent: np.ndarray, buckets: np.ndarray,
                  bmask: int, h: np.int64, e: int, now: int, act: int, act_len: int) -> None:
    """Fill free entry ``e`` for key row ``keys[0]`` in subtable ``sid`` (its masked values, hash ``h``, times,
    actions at ``act``), live only once complete; then its bucket and the subtable's count."""
    gen = (ent[e, E_GEN] + 1) & GEN_MASK
    for c in range(ent.shape[1]):
        ent[e, c] = 0
    ent[e, E_GEN] = gen
    ent[e, E_SUB] = -1                 # not live (nor compacted) until the row is complete
    for q in range(st[so + S_NW]):
        ent[e, E_VAL + q] = np.int64(keys[0, st[so + S_F + 2 * q]]) & st[so + S_F + 2 * q + 1]
    ent[e, E_HASH] = h
    ent[e, E_USED] = now
    ent[e, E_CREATED] = now
    ent[e, E_ACT] = act
    ent[e, E_ACT_LEN] = act_len
    ent[e, E_SUB] = sid
    _bucket_insert(buckets, bmask, h, e)
    st[so + S_COUNT] += 1


def _aligned(rows: int, cols: int) -> np.ndarray:
    """A zeroed ``int64[rows, cols]`` starting on a cache line."""
    buf = np.zeros(rows * cols + 8, dtype=np.int64)
    ofs = (-(buf.ctypes.data // 8)) % 8
    return buf[ofs:ofs + rows * cols].reshape(rows, cols)


# ---------------------------------------------------------------------------------------------
# control side


class MegaflowCache:
    """Megaflows by entry id, their subtables, the EMC and the flat action array (see the module
    docstring for the layout and the update rule)."""

    def __init__(self, max_flows: int = DEFAULT_MAX_FLOWS, emc_size: int = DEFAULT_EMC_SIZE,
                 emc_insert_inv_prob: int = DEFAULT_EMC_INSERT_INV_PROB,
                 max_subtables: int = DEFAULT_MAX_SUBTABLES, check_overlap: bool = False,
                 action_words: int = 1024) -> None:
        if not 1 <= max_flows <= MAX_FLOWS_LIMIT:
            raise ValueError(f"max_flows {max_flows}: 1 .. {MAX_FLOWS_LIMIT}")
        if emc_size < 0 or emc_size & (emc_size - 1):
            raise ValueError(f"emc_size {emc_size}: 0 or a power of two")
        if max_subtables < 1 or emc_insert_inv_prob < 0:
            raise ValueError("max_subtables >= 1, emc_insert_inv_prob >= 0")
        self.max_flows = max_flows
        self.max_subtables = max_subtables
        nb = 2
        while nb < 2 * max_flows:
            nb *= 2
        self.st = np.zeros(H_ORDER + max_subtables + max_subtables * S_W + 2 * CHUNK, dtype=np.int64)
        self.st[H_SCR] = H_ORDER + max_subtables + max_subtables * S_W
        self.st[H_MAX_SUB] = max_subtables
        self.st[H_SUB0] = H_ORDER + max_subtables
        self.st[H_BMASK] = nb - 1
        self.st[H_EMC_INV] = emc_insert_inv_prob
        self.st[H_RNG] = 0x2545F4914F6CDD1D
        self.ent = _aligned(max_flows, E_W)
        self.ent[:, E_SUB] = -1
        self._is_live = np.zeros(max_flows, dtype=np.uint8)   # 1: an installed entry (``live``, without a column scan)
        self.buckets = np.zeros(nb, dtype=np.int64)
        self.emc = np.zeros((emc_size, EMC_W), dtype=np.int64)
        self.actions = np.zeros(max(action_words, 16), dtype=np.int64)
        self.action_top = 0            # words used at the end of ``actions``
        self.action_free = 0           # words below action_top that no entry uses
        self.counters = {"megaflow_table_full": 0, "megaflow_subtables_full": 0}
        self._free = list(range(max_flows - 1, -1, -1))   # entry ids, lowest on top
        self._sub_free = list(range(max_subtables - 1, -1, -1))
        self._subs: dict[bytes, int] = {}                 # mask row bytes -> subtable id
        self._sub_mask: dict[int, np.ndarray] = {}
        self._word_use = np.zeros(KEY_WORDS, dtype=np.int64)   # subtables using each key word
        self._check_overlap = check_overlap
        if check_overlap:
            self._dkey = np.zeros((max_flows, KEY_WORDS), dtype=np.uint64)
            self._dmask = np.zeros((max_flows, KEY_WORDS), dtype=np.uint64)

    # -------------------------------------------------------------- datapath
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(st, ent, buckets, emc)``, the arguments ``mf_lookup`` takes after ``meta``."""
        return self.st, self.ent, self.buckets, self.emc

    def lookup(self, keys: np.ndarray, burst: np.ndarray, n: int, meta: np.ndarray, out_entry: np.ndarray,
               now: int = 0) -> int:
        """``mf_lookup`` with this cache's arrays (the datapath thread; returns the misses)."""
        return mf_lookup(keys, burst, n, meta, self.st, self.ent, self.buckets, self.emc, out_entry, now)

    # -------------------------------------------------------------- changes (datapath thread, between bursts)
    def install(self, key_row: np.ndarray, mask_row: np.ndarray, actions: np.ndarray, now: int = 0,
                exclusive: bool = False) -> int:
        """Install megaflow ``(key & mask, mask, actions)``; returns its entry id, or -1 when the cache
        is full (counted as ``megaflow_table_full``, or ``megaflow_subtables_full`` for a new mask).

        The same mask and masked key again: the actions are replaced, the id and counters kept
        (``exclusive=True``: ``MegaflowExists`` instead). With ``check_overlap``, a megaflow another
        one overlaps raises ``MegaflowOverlap``."""
        key = np.ascontiguousarray(key_row, dtype=np.uint64).reshape(1, -1)
        mask = np.ascontiguousarray(mask_row, dtype=np.uint64).reshape(-1)
        if key.shape[1] != KEY_WORDS or mask.shape[0] != KEY_WORDS:
            raise MegaflowError(f"key and mask rows must have {KEY_WORDS} words")
        acts = np.ascontiguousarray(actions, dtype=np.int64).reshape(-1)
        bmask = int(self.st[H_BMASK])
        sig = mask.tobytes()
        sid = self._subs.get(sig)
        if sid is not None:
            h, e = _install_find(key, self.st, self._sub_row(sid), sid, self.ent, self.buckets, bmask)
            if e >= 0:
                if exclusive:
                    raise MegaflowExists(f"megaflow {e} has this mask and masked key")
                self._set_actions(e, acts)
                return e
        masked = key[0] & mask
        if self._check_overlap:
            live = self.live()
            clash = ~(((self._dkey[live] ^ masked) & self._dmask[live] & mask) != 0).any(axis=1)
            if clash.any():
                raise MegaflowOverlap(f"overlaps megaflow {int(live[np.argmax(clash)])}")
        if not self._free:
            self.counters["megaflow_table_full"] += 1
            return -1
        if sid is None:
            if not self._sub_free:
                self.counters["megaflow_subtables_full"] += 1
                return -1
            sid = self._new_subtable(sig, mask, np.flatnonzero(mask))
            h, _e = _install_find(key, self.st, self._sub_row(sid), sid, self.ent, self.buckets, bmask)
        e = self._free.pop()
        a = self._alloc(len(acts))
        self.actions[a:a + len(acts)] = acts
        _install_fill(key, self.st, self._sub_row(sid), sid, self.ent, self.buckets, bmask, h, e, now, a, len(acts))
        self._is_live[e] = 1
        if self._check_overlap:
            self._dkey[e] = masked
            self._dmask[e] = mask
        return e

    def remove(self, entry: int) -> Megaflow:
        """Remove megaflow ``entry``; returns it with its final counters (KeyError if not installed)."""
        mf = self.get(entry)
        row = self.ent[entry]
        sid = int(row[E_SUB])
        _bucket_remove(self.buckets, int(self.st[H_BMASK]), row[E_HASH], entry)
        self.action_free += int(row[E_ACT_LEN])
        row[E_SUB] = -1
        row[E_GEN] = (int(row[E_GEN]) + 1) & GEN_MASK     # the EMC rows naming it are stale
        self._is_live[entry] = 0
        self._free.append(entry)
        so = self._sub_row(sid)
        self.st[so + S_COUNT] -= 1
        if self.st[so + S_COUNT] == 0:
            self._drop_subtable(sid)
        return mf

    def scratch_program(self, actions: np.ndarray) -> int:
        """Offset of a copy of ``actions`` in the action array, valid until the next ``install`` (for a
        frame whose megaflow could not be installed: it runs this burst, then the words are free)."""
        acts = np.ascontiguousarray(actions, dtype=np.int64).reshape(-1)
        a = self._alloc(len(acts))
        self.actions[a:a + len(acts)] = acts
        self.action_free += len(acts)
        return a

    def clear(self) -> None:
        """Remove every megaflow (the counters in ``st`` stay)."""
        for sid in [int(s) for s in self.st[H_ORDER:H_ORDER + int(self.st[H_NSUB])]]:
            so = self._sub_row(sid)
            self.st[so + S_COUNT] = 0
            self._drop_subtable(sid)
        self.ent[:, E_SUB] = -1
        self._is_live[:] = 0
        self.buckets[:] = 0
        self.emc[:] = 0
        self._free = list(range(self.max_flows - 1, -1, -1))
        self.action_top = 0
        self.action_free = 0

    def expire(self, now: int, idle: int) -> list[Megaflow]:
        """Remove the megaflows no frame hit for ``idle`` or more (``now - used >= idle``); returns them."""
        live = self.live()
        gone = live[now - self.ent[live, E_USED] >= idle]
        return [self.remove(int(e)) for e in gone.tolist()]

    def live(self) -> np.ndarray:
        """The installed entry ids, ascending."""
        if len(self._free) == self.max_flows:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(self._is_live)

    def resort(self) -> None:
        """Order the subtables by their hits since the previous resort (most first), then clear those."""
        n = int(self.st[H_NSUB])
        order = self.st[H_ORDER:H_ORDER + n].copy()
        hits = np.array([self.st[self._sub_row(int(s)) + S_HITS] for s in order], dtype=np.int64)
        self.st[H_ORDER:H_ORDER + n] = order[np.argsort(-hits, kind="stable")]
        for s in order:
            self.st[self._sub_row(int(s)) + S_HITS] = 0

    # -------------------------------------------------------------- listing (any thread)
    def get(self, entry: int) -> Megaflow:
        """Megaflow ``entry`` with its counters (KeyError if not installed)."""
        if not 0 <= entry < self.max_flows or self.ent[entry, E_SUB] < 0:
            raise KeyError(entry)
        row = self.ent[entry].copy()
        sid = int(row[E_SUB])
        so = self._sub_row(sid)
        nw = int(self.st[so + S_NW])
        key = np.zeros(KEY_WORDS, dtype=np.uint64)
        words = self.st[so + S_F:so + S_F + 2 * nw:2]
        key[words] = row[E_VAL:E_VAL + nw].view(np.uint64)
        a = int(row[E_ACT])
        return Megaflow(entry, key, self._sub_mask[sid].copy(), self.actions[a:a + int(row[E_ACT_LEN])].copy(),
                        int(row[E_PACKETS]), int(row[E_BYTES]), int(row[E_USED]), int(row[E_CREATED]))

    def dump(self) -> list[Megaflow]:
        """Every installed megaflow, by entry id (``dpctl/dump-flows``)."""
        return [self.get(int(e)) for e in self.live().tolist()]

    def __len__(self) -> int:
        return self.max_flows - len(self._free)

    def __iter__(self) -> Iterator[Megaflow]:
        return iter(self.dump())

    def stats(self) -> dict[str, int]:
        """Datapath counters (``dpif-netdev/pmd-stats-show``) and the cache's own."""
        st = self.st
        return {"flows": len(self), "subtables": int(st[H_NSUB]), "emc_hits": int(st[H_EMC_HITS]),
                "megaflow_hits": int(st[H_MF_HITS]), "misses": int(st[H_MISSES]),
                "subtable_lookups": int(st[H_SUB_LOOKUPS]), **self.counters}

    def subtables(self) -> list[tuple[np.ndarray, int, int]]:
        """``(mask, entries, hits since resort)`` per subtable, in lookup order."""
        out = []
        for s in self.st[H_ORDER:H_ORDER + int(self.st[H_NSUB])]:
            so = self._sub_row(int(s))
            out.append((self._sub_mask[int(s)].copy(), int(self.st[so + S_COUNT]), int(self.st[so + S_HITS])))
        return out

    # -------------------------------------------------------------- internals
    def _sub_row(self, sid: int) -> int:
        return int(self.st[H_SUB0]) + sid * S_W

    def _new_subtable(self, sig: bytes, mask: np.ndarray, words: np.ndarray) -> int:
        sid = self._sub_free.pop()
        so = self._sub_row(sid)
        self.st[so:so + S_W] = 0
        self.st[so + S_NW] = len(words)
        self.st[so + S_F:so + S_F + 2 * len(words):2] = words
        self.st[so + S_F + 1:so + S_F + 2 * len(words):2] = mask[words].view(np.int64)
        n = int(self.st[H_NSUB])
        self.st[H_ORDER + n] = sid      # new masks are searched last until the next resort
        self.st[H_NSUB] = n + 1
        self._subs[sig] = sid
        self._sub_mask[sid] = mask.copy()
        self._use_words(words, 1)
        return sid

    def _drop_subtable(self, sid: int) -> None:
        n = int(self.st[H_NSUB])
        order = [int(s) for s in self.st[H_ORDER:H_ORDER + n] if s != sid]
        self.st[H_ORDER:H_ORDER + n - 1] = order
        self.st[H_ORDER + n - 1] = 0
        self.st[H_NSUB] = n - 1
        mask = self._sub_mask.pop(sid)
        del self._subs[mask.tobytes()]
        self._sub_free.append(sid)
        self._use_words(np.flatnonzero(mask), -1)

    def _use_words(self, words: np.ndarray, delta: int) -> None:
        """Count a subtable's mask words in or out of the EMC's hashed words; when that set changes, the
        EMC is cleared (its rows were placed by the old hash: still never wrong, but lost)."""
        before = self._word_use > 0
        self._word_use[words] += delta
        used = self._word_use > 0
        if (used != before).any():
            uw = np.flatnonzero(used)
            self.st[H_UW:H_UW + KEY_WORDS] = 0
            self.st[H_UW:H_UW + len(uw)] = uw
            self.st[H_NUW] = len(uw)
            self.emc[:] = 0

    def _set_actions(self, e: int, acts: np.ndarray) -> None:
        row = self.ent[e]
        old = int(row[E_ACT_LEN])
        if len(acts) <= old:
            a = int(row[E_ACT])
            self.actions[a:a + len(acts)] = acts
            self.action_free += old - len(acts)
        else:
            self.action_free += old
            row[E_ACT_LEN] = 0          # not moved by a compaction _alloc may run
            a = self._alloc(len(acts))
            self.actions[a:a + len(acts)] = acts
            row[E_ACT] = a
        row[E_ACT_LEN] = len(acts)

    def _alloc(self, n: int) -> int:
        """Offset of ``n`` free words at the end of ``actions``: appends; when full, compacts (if half of
        it is free) or doubles the array."""
        cap = len(self.actions)
        if self.action_top + n > cap:
            if self.action_free >= cap // 2:
                self._compact()
            while self.action_top + n > len(self.actions):
                grown = np.zeros(2 * len(self.actions), dtype=np.int64)
                grown[:self.action_top] = self.actions[:self.action_top]
                self.actions = grown
        a = self.action_top
        self.action_top += n
        return a

    def _compact(self) -> None:
        """Move every live program to the front of a fresh array, in offset order."""
        live = self.live()
        live = live[self.ent[live, E_ACT_LEN] > 0]
        live = live[np.argsort(self.ent[live, E_ACT], kind="stable")]
        fresh = np.zeros(len(self.actions), dtype=np.int64)
        top = 0
        for e in live:
            a, n = int(self.ent[e, E_ACT]), int(self.ent[e, E_ACT_LEN])
            fresh[top:top + n] = self.actions[a:a + n]
            self.ent[e, E_ACT] = top
            top += n
        self.actions = fresh
        self.action_top = top
        self.action_free = 0


@numba.njit(nogil=True, cache=True, _nrt=False)
def mf_programs(ent: np.ndarray, out_entry: np.ndarray, n: int, prog_index: np.ndarray) -> None:
    """``prog_index[i] = (action offset, length)`` of the megaflow ``out_entry[i]`` ((-1, 0) for none):
    the program index ``dpif.actions.execute_burst`` takes."""
    for i in range(n):
        e = out_entry[i]
        if e < 0:
            prog_index[i, 0] = -1
            prog_index[i, 1] = 0
        else:
            prog_index[i, 0] = ent[e, E_ACT]
            prog_index[i, 1] = ent[e, E_ACT_LEN]


@numba.njit(nogil=True, cache=True, _nrt=False)
def mf_covered(keys: np.ndarray, burst: np.ndarray, miss: np.ndarray, m: int, key: np.ndarray, mask: np.ndarray,
               covered: np.ndarray) -> int:
    """``covered[j]`` = 1 when frame ``burst[miss[j]]`` (``j < m``) has ``key``'s values under ``mask``; returns
    how many do (the frames of a burst a megaflow just installed for ``key`` also takes)."""
    nw = 0
    for w in range(KEY_WORDS):
        if mask[w]:
            nw += 1
    count = 0
    for j in range(m):
        s = burst[miss[j]]
        same = 1
        for w in range(KEY_WORDS):
            mw = mask[w]
            if mw and (keys[s, w] & mw) != (key[w] & mw):
                same = 0
                break
        covered[j] = same
        count += same
    return count


@numba.njit(nogil=True, cache=True, _nrt=False)
def mf_take(keys: np.ndarray, burst: np.ndarray, miss: np.ndarray, m: int, key: np.ndarray, mask: np.ndarray,
            meta: np.ndarray, took: np.ndarray, out_entry: np.ndarray, ent: np.ndarray, e: int,
            now: int) -> tuple[int, int, int]:
    """The frames ``burst[miss[j]]`` (``j < m``) with ``key``'s values under ``mask`` take entry ``e``: their
    ``out_entry`` is ``e`` and ``e`` counts their packets and bytes (``e < 0``: not installed, only listed);
    their burst indexes go to ``took``, the others stay at the front of ``miss``. Returns ``(taken, their
    bytes, misses left)``."""
    nt = 0
    left = 0
    nbytes = 0
    for j in range(m):
        i = miss[j]
        s = burst[i]
        same = True
        for w in range(KEY_WORDS):
            mw = mask[w]
            if mw and (keys[s, w] & mw) != (key[w] & mw):
                same = False
                break
        if same:
            took[nt] = i
            nt += 1
            nbytes += meta[s, META_LEN]
            if e >= 0:
                out_entry[i] = e
        else:
            miss[left] = i
            left += 1
    if e >= 0 and nt:
        ent[e, E_PACKETS] += nt
        ent[e, E_BYTES] += nbytes
        ent[e, E_USED] = now
    return nt, nbytes, left
