"""One OpenFlow table's lookup for the translator: subtables by mask, searched in stages.

```
 key words ──► subtable (flows sharing one mask, best rank first) ──► stage 1 (metadata) prefix known?
                                                         no: un-wildcard stage 1, next subtable
                                          ──► stage 2 (+ L2) ... stage 4 (+ L4): full masked key ──► best rank
```

A rank is a flow's position in its compiled table set (lower wins: priority, then the flow added
first). The lookup returns the best rank whose match the key satisfies and widens the megaflow
mask ``wc`` by every bit the answer depends on, as Open vSwitch's staged lookup does: a subtable
whose flows cannot beat the answer is not looked at; one that is, and fails at stage *k*, adds only
the bits of stages 1..*k* (any packet that agrees on those bits fails it too); one that is searched
to the end adds its whole mask. The answer thus holds for every packet that agrees with the key on
``wc``, which is what makes the megaflow ``(key & wc, wc)`` correct.

The key and ``wc`` are the translator's flow state (``fields.FLOW_WORDS``): the key's words, then
pipeline words (registers, metadata). Bits of pipeline words in ``wc`` never reach a megaflow; the
translator keeps them correct by un-wildcarding the key bits it copies into pipeline state.

A table's conjunctive flows (``conjunction(id,k/n)`` actions) are not among its subtables: its
``ClauseIndex`` (``ofproto.conjunction``) takes the ordinary flows' answer and may replace it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dpif import key as K
from ofproto.fields import FLOW_WORDS

if TYPE_CHECKING:
    from ofproto.conjunction import ClauseIndex

#: lookup stage of each flow-state word: 0 metadata (port, tunnel, ct, and the pipeline words after the
#: key's: registers, metadata), 1 L2, 2 L3, 3 L4
STAGE_OF_WORD = [0] * FLOW_WORDS
for _w in (K.W_ETH_DST, K.W_ETH_SRC, K.W_VLAN_TCI, K.W_ETH_TYPE, 21):
    STAGE_OF_WORD[_w] = 1
for _w in range(K.W_NW, K.W_TP):
    STAGE_OF_WORD[_w] = 2
for _w in (K.W_ARP_SHA, K.W_ARP_THA):
    STAGE_OF_WORD[_w] = 2
for _w in (K.W_TP, K.W_ND_TARGET, K.W_ND_TARGET + 1):
    STAGE_OF_WORD[_w] = 3
N_STAGES = 4


class Subtable:
    """The flows of one table that share one mask: ``(word, mask)`` pairs in stage order, the prefixes
    of each stage but the last, and the full masked key -> best rank."""

    __slots__ = ("pairs", "cuts", "prefixes", "ranks", "best")

    def __init__(self, pairs: tuple[tuple[int, int], ...]) -> None:
        self.pairs = pairs
        # cuts[k]: how many pairs stages 0..k take; only stages that add pairs, the last one excluded
        ends = []
        for stage in range(N_STAGES):
            n = sum(1 for w, _m in pairs if STAGE_OF_WORD[w] <= stage)
            if n and (not ends or n > ends[-1]):
                ends.append(n)
        self.cuts = tuple(ends[:-1])
        self.prefixes: list[dict[tuple[int, ...], int]] = [{} for _ in self.cuts]  # prefix -> flows using it
        self.ranks: dict[tuple[int, ...], list[int]] = {}    # masked key -> ranks (sorted)
        self.best = 1 << 62

    def add(self, values: tuple[int, ...], rank: int) -> None:
        """Add a flow of rank ``rank`` whose masked values (one per pair) are ``values``."""
        for k, cut in enumerate(self.cuts):
            p = values[:cut]
            self.prefixes[k][p] = self.prefixes[k].get(p, 0) + 1
        self.ranks.setdefault(values, []).append(rank)
        self.ranks[values].sort()
        self.best = min(self.best, rank)

    def probe(self, key: list[int], wc: list[int]) -> tuple[int, ...] | None:
        """The key's masked values when some flow here may match them (the whole mask then in ``wc``), or
        None when a stage's prefix rules every flow out (the bits of the stages up to it in ``wc``)."""
        pairs = self.pairs
        vals = tuple([key[w] & m for w, m in pairs])
        for k, cut in enumerate(self.cuts):
            if vals[:cut] not in self.prefixes[k]:
                for w, m in pairs[:cut]:
                    wc[w] |= m
                return None
        for w, m in pairs:
            wc[w] |= m
        return vals


#: how ``TableIndex.lookup`` probes a subtable: no field (every packet matches), one word and no stages,
#: or masked values checked stage by stage
_ANY, _ONE_WORD, _STAGED = 0, 1, 2


def _flat(sub: Subtable) -> tuple[int, int, object, tuple, dict]:
    """What ``TableIndex.lookup`` reads of a subtable, as a plain tuple: ``(best rank, kind, pairs (one pair for
    _ONE_WORD), stages ((pairs taken, prefixes, those pairs), ...), masked values -> best rank)``."""
    top = {vals: ranks[0] for vals, ranks in sub.ranks.items()}
    if not sub.pairs:
        return sub.best, _ANY, (), (), top
    if len(sub.pairs) == 1 and not sub.cuts:
        return sub.best, _ONE_WORD, sub.pairs[0], (), {vals[0]: r for vals, r in top.items()}
    stages = tuple((cut, sub.prefixes[k], sub.pairs[:cut]) for k, cut in enumerate(sub.cuts))
    return sub.best, _STAGED, sub.pairs, stages, top


def subtables_of(flows: list[tuple[int, tuple[tuple[int, int, int], ...]]]) -> list[Subtable]:
    """``flows`` (``(rank, ((word, value, mask), ...))``) grouped by mask, the subtable of the best rank first."""
    by_mask: dict[tuple[tuple[int, int], ...], Subtable] = {}
    for rank, words in flows:
        ordered = sorted(words, key=lambda t: (STAGE_OF_WORD[t[0]], t[0]))
        pairs = tuple((w, m) for w, _v, m in ordered)
        sub = by_mask.get(pairs)
        if sub is None:
            sub = by_mask[pairs] = Subtable(pairs)
        sub.add(tuple(v for _w, v, _m in ordered), rank)
    return sorted(by_mask.values(), key=lambda s: s.best)


class TableIndex:
    """The lookup structure of one table (built once per compile; read-only afterwards)."""

    __slots__ = ("subtables", "clauses", "flat")

    def __init__(self, flows: list[tuple[int, tuple[tuple[int, int, int], ...]]],
                 clauses: ClauseIndex | None = None) -> None:
        """``flows``: ``(rank, ((word, value, mask), ...))`` of the table's ordinary flows, with ``in_port``
        already a datapath port; ``clauses``: its conjunctive flows (None: it has none)."""
        self.subtables = subtables_of(flows)
        self.clauses = clauses
        self.flat = tuple(_flat(sub) for sub in self.subtables)

    def lookup(self, key: list[int], wc: list[int]) -> int:
        """The rank of the flow ``key`` selects (-1: none); ORs the bits the answer depends on into ``wc``.
        With conjunctive flows (``clauses``), a satisfied conjunction may select its ``conj_id`` flow."""
        if self.clauses is not None:
            return self.clauses.resolve(self.best, key, wc, self.best(key, wc))
        found = 1 << 62    # ``best`` without ``hidden``, its probes inlined: the translator's commonest call
        for best, kind, pairs, stages, top in self.flat:
            if best >= found:
                break
            if kind == _ANY:           # no field matched: its best flow matches every packet
                return best
            if kind == _ONE_WORD:
                w, m = pairs
                wc[w] |= m
                rank = top.get(key[w] & m)
            else:
                vals = tuple([key[w] & m for w, m in pairs])
                rank = None
                for cut, prefixes, cut_pairs in stages:
                    if vals[:cut] not in prefixes:
                        for w, m in cut_pairs:
                            wc[w] |= m
                        break
                else:
                    for w, m in pairs:
                        wc[w] |= m
                    rank = top.get(vals)
            if rank is not None and rank < found:
                found = rank
        return found if found < 1 << 62 else -1

    def best(self, key: list[int], wc: list[int], hidden: frozenset[int] = frozenset()) -> int:
        """The best rank among the ordinary flows (no conjunction action) matching ``key``, those in
        ``hidden`` left out (-1: none); ORs the bits the answer depends on into ``wc``."""
        found = 1 << 62
        for sub in self.subtables:
            if sub.best >= found:
                break
            vals = sub.probe(key, wc)
            if vals is None:
                continue
            ranks = sub.ranks.get(vals)
            if ranks is not None:
                rank = ranks[0] if not hidden else next((r for r in ranks if r not in hidden), found)
                if rank < found:
                    found = rank
        return found if found < 1 << 62 else -1
