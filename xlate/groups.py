"""Groups in the translator: the ``group`` action of a walk (``xlate.translate._Walk``).

* all: every bucket; indirect: its one bucket; fast_failover: the first live bucket (its watched port up, as
  the datapath's port flags say, and its watched group with a live bucket); select: one bucket by a hash of
  the flow over the buckets' weights (``selection_method=hash``: of the group's fields; otherwise of the
  Ethernet addresses and type, IP addresses and protocol and L4 ports), every hashed field un-wildcarded so
  the megaflow covers only flows that hash alike.
* a bucket's actions are an action set (``bucket_actions``: OVS keeps the set-fields and one output, group,
  resubmit or ``ct``, and runs them in the action set's order);
* each bucket runs on a copy of the pipeline state, as ``clone`` does; a chain of groups counts against the
  walk's resubmit depth and total (OVS 3.1 accepts loops and bounds them when translating).
* every use is recorded in ``XlateResult.groups`` (the group, then each bucket run) for the statistics the
  upcall layer credits from the megaflow's counters.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from dpif import key as K
from ofproto.actions import (
    OFPP_ANY,
    Action,
    Ct,
    DecTtl,
    FieldValue,
    Load,
    ModVlanVid,
    Move,
    Output,
    PopVlan,
    PushVlan,
    Resubmit,
    SetField,
)
from ofproto.actions import Group as GroupAction
from ofproto.groups import OFPG_ANY, OFPGT_ALL, OFPGT_FF, OFPGT_INDIRECT, Bucket, Group
from xlate.bridges import PF_DOWN, PF_LINK_DOWN

MAX_DEPTH = 64     # watch_group chains followed (as the walk's depth)


def run_group(self: Any, group_id: int) -> None:
    """The ``group`` action: the buckets the group's type chooses, each on a copy of the pipeline state
    (as ``clone``); a group chain counts against the resubmit depth and total."""
    ts, rec = self.ts, self.rec
    g = ts.groups.get(group_id) if ts is not None else None
    if g is None:
        if rec:
            rec.note(f"     -> no group {group_id}")
        return
    if self.limited():
        return
    if g.type == OFPGT_ALL:
        chosen = list(range(len(g.buckets)))
    elif g.type == OFPGT_INDIRECT:
        chosen = [0] if g.buckets else []
    elif g.type == OFPGT_FF:
        chosen = next(([i] for i, b in enumerate(g.buckets) if bucket_live(self, b, 0, rec)), [])
        if rec and chosen:
            rec.note(f"     -> using bucket {g.buckets[chosen[0]].bucket_id}")
    else:
        chosen = select(self, g)
        if rec and chosen:
            rec.note(f"     -> using bucket {g.buckets[chosen[0]].bucket_id}")
    self.r.groups.append((g, -1))
    if rec and not chosen:
        rec.note("     -> no live bucket")
    self.nest += 1
    self.crossings += 1
    for i in chosen:
        self.r.groups.append((g, i))
        if rec:
            rec.bucket(g.buckets[i].bucket_id)
        saved = (list(self.flow), list(self.stack), self.exiting, self.written)
        self.written = [0] * K.KEY_WORDS
        self.resubmit_nest += 1
        self.run_list(bucket_actions(g.buckets[i].actions), None, self.table_id)
        self.resubmit_nest -= 1
        if rec:
            rec.leave()
        wrote = self.written
        flow, self.stack, self.exiting, self.written = saved
        self.restore(flow, wrote)
    self.nest -= 1

def bucket_actions(acts: tuple[Action, ...]) -> tuple[Action, ...]:
    """What a bucket runs: its actions as an action set, as OVS runs them (ovs-actions(7)): VLAN pops, then
    pushes, ``dec_ttl``, every set-field / load / move in their order, then one of the last group, else the last
    output, else the last resubmit, else the last ``ct``; the other actions are not action-set actions and do
    nothing."""
    try:
        return _action_set(acts)
    except TypeError:      # an action that does not hash
        return _action_set.__wrapped__(acts)


@functools.lru_cache(maxsize=4096)
def _action_set(acts: tuple[Action, ...]) -> tuple[Action, ...]:
    def last(kind: type | tuple[type, ...]) -> list[Action]:
        found = [a for a in acts if isinstance(a, kind)]
        return found[-1:]
    end = last(GroupAction) or last(Output) or last(Resubmit) or last(Ct)
    return (*last(PopVlan), *last(PushVlan), *last(DecTtl),
            *(a for a in acts if isinstance(a, (SetField, Load, Move, ModVlanVid))), *end)


def port_live(self: Any, of_port: int) -> bool:
    """OpenFlow port ``of_port`` of this bridge is live: it exists, is not ``mod-port ... down`` and its link is up
    (``Bridge.sync_link_state``), as OVS's liveness."""
    q = self.dense(of_port)
    return 0 <= q < len(self.port_flags) and not self.port_flags[q] & (PF_DOWN | PF_LINK_DOWN)

def bucket_live(self: Any, b: Bucket, depth: int, rec: Any = None) -> bool:
    """A bucket is live when the port and the group it watches are (a group: one of its buckets is); ``rec`` (a
    trace's recorder) hears of each bucket found dead, the watched group's first, in OVS's words (which call a
    watched group a port)."""
    if b.watch_port != OFPP_ANY and not port_live(self, b.watch_port):
        if rec:
            rec.note(f"     -> bucket {b.bucket_id}: not live due to port {b.watch_port}")
        return False
    if b.watch_group != OFPG_ANY:
        g = self.ts.groups.get(b.watch_group) if self.ts is not None else None
        if g is None or depth >= MAX_DEPTH or not any(bucket_live(self, x, depth + 1, rec) for x in g.buckets):
            if rec:
                rec.note(f"     -> bucket {b.bucket_id}: not live due to port {b.watch_group}")
            return False
    return True

def select(self: Any, g: Group) -> list[int]:
    """The bucket a select group gives this flow: a hash of the fields (``selection_method=hash``: the
    group's; else the 5-tuple and Ethernet addresses), un-wildcarded, over the live buckets' weights (a bucket
    watching a port or group that is down is left out, as OVS's select liveness does)."""
    values: list[int] = [g.method_param]
    if g.selection_method == "hash" and g.fields:
        for name in g.fields:
            fv = FieldValue.of(name)
            values.append(self.read(fv, 0, fv.bits) if self.prereqs_ok(name) else -1)
    else:
        values += five_tuple(self)
    weights = [b.weight if bucket_live(self, b, 0) else 0 for b in g.buckets]   # dead buckets never chosen
    total = sum(weights)
    if not total:
        return []
    h = int.from_bytes(hashlib.blake2b(repr(values).encode(), digest_size=8).digest(), "big") % total
    for i, w in enumerate(weights):
        if h < w:
            return [i]
        h -= w
    return []

def five_tuple(self: Any) -> list[int]:
    """Ethernet addresses and type, IP addresses and protocol, L4 ports, as far as the frame has them
    (each read un-wildcarded)."""
    flow, mask = self.flow, self.r.mask
    words = [(K.W_ETH_DST, 0xFFFF_FFFF_FFFF), (K.W_ETH_SRC, 0xFFFF_FFFF_FFFF), (K.W_ETH_TYPE, 0xFFFF)]
    eth_type = flow[K.W_ETH_TYPE] & 0xFFFF
    proto = -1
    if eth_type == 0x0800:
        words += [(K.W_NW_SRC, 0xFFFF_FFFF), (K.W_NW_DST, 0xFFFF_FFFF), (K.W_NW, 0xFF)]
    elif eth_type == 0x86DD:
        words += [(K.W_IPV6_SRC + i, (1 << 64) - 1) for i in range(4)] + [(K.W_NW, 0xFF)]
    if eth_type in (0x0800, 0x86DD):
        mask[K.W_NW] |= 0xFF
        proto = flow[K.W_NW] & 0xFF
    if proto in (6, 17, 132):
        words.append((K.W_TP, 0xFFFF_FFFF))
    out = []
    for w, m in words:
        mask[w] |= m
        out.append(flow[w] & m)
    return out

