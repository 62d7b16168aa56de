"""Conjunctive matches (OVS's ``conjunction(id,k/n)`` action and ``conj_id`` field) in one table's lookup.

A flow whose actions are ``conjunction(id,k/n)`` is clause ``k`` of conjunction ``id`` (ovs-fields(7),
"Conjunctive Match Fields"); such flows are kept apart from the table's ordinary flows, here:

```
 key ──► ordinary flows: best match "hard" (priority P, or none)
     ──► clause flows of priority > P that match (every subtable that could hold one is probed)
           │ per priority, highest first: the conjunctions (priority, id) with a matching flow in every clause
           ▼ in id order: the ordinary flows again with conj_id = id; the first that finds a flow decides
     ──► else "hard": a conjunction partly matched, or one whose conj_id lookup finds nothing, is not there
```

As in OVS, a conjunction is one priority's (the same id at two priorities is two conjunctions), an
ordinary flow of the clauses' priority or above wins over them, the ``conj_id`` lookup ignores the
clause flows and may find an ordinary flow that beats the ``conj_id`` flow, and ``conj_id`` is back to 0
for the actions and later lookups. A conjunction of n clauses needs n matching clause flows of its
priority (OVS counts flows, not clauses: one flow that holds two clauses of a conjunction is not enough
alone). OVS's classifier keeps the flows of one match in a list under the one of the highest priority,
and its ``conj_id`` lookup passes over a list headed by a conjunctive flow: so here too, an ordinary flow
with the match of a conjunctive flow of a higher priority is not seen by the ``conj_id`` lookups (the
first lookup sees it). Two conjunctions satisfied at one priority are tried in id order (OVS:
unpredictable). Every bit a probe or lookup looks at goes into the megaflow mask ``wc``, so the answer
holds for every packet that agrees with the key there. Clause flows are never selected, so their
counters never move (ovs-fields(7) says so of OVS's too).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ofproto.fields import W_CONJ_ID
from ofproto.lookup import subtables_of

#: a lookup among a table's ordinary flows: ``(key, wc, ranks left out) -> rank`` (-1: none)
Lookup = Callable[[list[int], list[int], frozenset[int]], int]


class ClauseIndex:
    """The conjunctive flows of one table: subtables by mask (as ``ofproto.lookup``), each flow's
    ``(id, clause, n_clauses)`` triples, every rank's priority (``prio``, the table set's), and the ordinary
    flows the ``conj_id`` lookups do not see (``hidden``)."""

    __slots__ = ("subtables", "conjs", "prio", "hidden")

    def __init__(self, clauses: list[tuple[int, tuple[tuple[int, int, int], ...], tuple[tuple[int, int, int], ...]]],
                 prio: Sequence[int], hidden: frozenset[int] = frozenset()) -> None:
        """``clauses``: ``(rank, ((word, value, mask), ...), ((id, clause, n_clauses), ...))``; ``hidden``: the
        ranks of ordinary flows with the match of a conjunctive flow of a higher priority."""
        self.subtables = subtables_of([(rank, words) for rank, words, _c in clauses])
        self.conjs = {rank: conjs for rank, _w, conjs in clauses}
        self.prio = prio
        self.hidden = hidden

    def resolve(self, best: Lookup, key: list[int], wc: list[int], hard: int) -> int:
        """The rank the table's lookup answers, given ``hard``, the best ordinary flow for ``key`` found by
        ``best`` (which it calls again with ``conj_id`` set); ORs what it looks at into ``wc``."""
        prio = self.prio
        floor = prio[hard] if hard >= 0 else -1
        # (priority, id) -> {n_clauses: clauses seen, as bits}; priority -> clause flows that match
        seen: dict[tuple[int, int], dict[int, int]] = {}
        count: dict[int, int] = {}
        for sub in self.subtables:
            if prio[sub.best] <= floor:
                break        # no flow here or in any later subtable beats the ordinary match
            vals = sub.probe(key, wc)
            if vals is None:
                continue
            for rank in sub.ranks.get(vals, ()):
                p = prio[rank]
                if p <= floor:
                    break
                count[p] = count.get(p, 0) + 1
                for cid, k, n in self.conjs[rank]:
                    bits = seen.setdefault((p, cid), {})
                    bits[n] = bits.get(n, 0) | 1 << (k - 1)
        if not seen:
            return hard
        done = sorted((-p, cid) for (p, cid), bits in seen.items()
                      if any(b == (1 << n) - 1 and count[p] >= n for n, b in bits.items()))
        saved = key[W_CONJ_ID]
        try:
            for _p, cid in done:
                key[W_CONJ_ID] = cid
                rank = best(key, wc, self.hidden)
                if rank >= 0:
                    return rank
        finally:
            key[W_CONJ_ID] = saved
        return hard
