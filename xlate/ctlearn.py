"""What the translator does with ``ct``, ``ct_clear`` and ``learn`` (until a connection tracker exists).

* ``ct`` (with or without ``nat``): the walk stops there, in every bridge and resubmit it is nested in
  (``CtReached``); what the actions did before stays (outputs made go out), nothing after it runs (nor the
  action set), and the frame is dropped with reason ``conntrack_unavailable`` (``dpif.actions.DROP_REASONS``:
  per ingress port in the datapath's flow drops, ``flow_conntrack_unavailable`` in ``coverage/show``;
  ``ofproto/trace`` names it).
* ``ct_clear``: the frame's ct_* fields (state, zone, mark, label, the ct tuple) become 0 for the rest of
  the walk (translator state: no header carries them).
* ``learn``: the flow it describes is built from the frame as the walk has it (the source bits it copies
  are un-wildcarded, as OVS does) and returned in ``XlateResult.learned`` (``Learned``); whoever runs the
  translation adds it to the bridge's tables (``FlowTables.learn``: add, or replace the flow with the same
  match and priority, timers restarted). A translation that learned is never cached as a megaflow, so every
  later frame learns again (``xlate.upcall``: counted as ``learn_not_cached``).
* ``fin_timeout``: a TCP frame with FIN or RST (those flag bits un-wildcarded) asks, through the same list
  (``FinHit``), that the flow's idle / hard timeouts be cut down (``FlowTables.fin_timeout``); caching such a
  walk is fine (cutting again changes nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dpif import actions as A
from dpif import key as K
from ofproto import fields as F
from ofproto.actions import FieldValue, FinTimeout, Learn, Load
from ofproto.rules import ALL_MATCH_FIELDS, OFPFF_SEND_FLOW_REM, Action, Flow, FlowError, Instructions, Match, Output

if TYPE_CHECKING:
    from xlate.translate import _Walk

#: the key words ``ct_clear`` zeroes: state and zone, mark, label (2 words), the ct tuple (3 words)
CT_WORDS = (K.W_CT_STATE, K.W_CT_MARK, K.W_CT_LABEL, K.W_CT_LABEL + 1, K.W_CT_TUPLE, K.W_CT_TUPLE + 1,
            K.W_CT_TUPLE + 2)
CONNTRACK_UNAVAILABLE = "conntrack_unavailable"


class CtReached(Exception):
    """The walk reached ``ct``: it ends here."""


@dataclass(frozen=True)
class Learned:
    """A flow ``learn`` made: for the tables of ``bridge``; ``owner``: the uid of the learning flow (0: a
    packet-out's action); ``delete_learned``: it goes when its owner goes."""

    bridge: int
    flow: Flow
    owner: int
    delete_learned: bool


@dataclass(frozen=True)
class FinHit:
    """A TCP FIN or RST went through ``fin_timeout`` of the flow with uid ``uid`` in ``bridge``."""

    bridge: int
    uid: int
    idle_timeout: int
    hard_timeout: int


#: what a walk asks of the tables (``XlateResult.learned``)
TableChange = Learned | FinHit
TCP_FIN_RST = 0x005


def fin_timeout(walk: _Walk, a: FinTimeout, owner: Flow | None) -> None:
    """``fin_timeout``: a FinHit for ``owner`` when the frame is TCP with FIN or RST."""
    if owner is None or not walk.prereqs_ok("tcp_flags"):
        return
    fv = FieldValue.of("tcp_flags")
    walk.unwildcard(fv, TCP_FIN_RST)
    if fv.read(walk.flow) & TCP_FIN_RST:
        walk.r.learned.append(FinHit(walk.bridge, owner.uid, a.idle_timeout, a.hard_timeout))
        if walk.rec:
            walk.rec.note("     -> FIN or RST: the flow's timeouts are cut down")


def ct_clear(walk: _Walk) -> None:
    """``ct_clear``: every ct_* field of the walk's flow state back to 0."""
    for w in CT_WORDS:
        walk.flow[w] = 0


def match_name(name: str) -> str:
    """The ``Match`` field (OXM name) of registry field ``name`` (``ip_src`` -> ``ipv4_src``)."""
    f = F.by_name(name) or F.by_oxm_name(name)
    for cand in ((f.oxm_name, f.name) if f is not None else (name,)):
        if cand in ALL_MATCH_FIELDS:
            return cand
    raise FlowError("bad_field", f"learn cannot match on {name}")


def build(walk: _Walk, a: Learn, owner: Flow | None) -> Learned:
    """The flow ``a`` learns from the walk's frame (``FlowError`` when its match cannot be a flow's)."""
    fields: dict[str, tuple[int, int]] = {}
    actions: list[Action] = []
    if a.fin_idle_timeout or a.fin_hard_timeout:      # first, as OVS puts it
        actions.append(FinTimeout(a.fin_idle_timeout, a.fin_hard_timeout))
    for sp in a.specs:
        n = sp.n_bits
        value = sp.value if sp.src is None else walk.read(FieldValue.of(sp.src), sp.src_ofs, n)
        if sp.dst_type == "output":      # a 16-bit field's reserved ports are OpenFlow 1.0's (0xfff8..)
            actions.append(Output(value | 0xFFFF0000 if n <= 16 and 0xFF00 <= value <= 0xFFFF else value))
            continue
        assert sp.dst is not None
        mask = ((1 << n) - 1) << sp.dst_ofs
        if sp.dst_type == "load":
            actions.append(Load(sp.dst, (value << sp.dst_ofs) & mask, mask))
            continue
        name = match_name(sp.dst)
        v, m = fields.get(name, (0, 0))
        fields[name] = ((v & ~mask) | ((value << sp.dst_ofs) & mask), m | mask)
    match = Match(**fields)
    flow = Flow(a.table, a.priority, match, Instructions(tuple(actions)), a.cookie, a.idle_timeout, a.hard_timeout,
                OFPFF_SEND_FLOW_REM if a.send_flow_rem else 0)
    return Learned(walk.bridge, flow, owner.uid if owner is not None else 0, a.delete_learned)


def reached(walk: _Walk) -> None:
    """``ct``: traced, then the walk ends (``CtReached``)."""
    if walk.rec:
        walk.rec.note(f"     -> no connection tracker yet: the packet is dropped ({CONNTRACK_UNAVAILABLE})")
    raise CtReached


def dropped(walk: _Walk) -> None:
    """The end of a walk that reached ``ct``: the drop, counted by reason."""
    walk.r.drop_reason = f"{CONNTRACK_UNAVAILABLE} (the actions reached ct; there is no connection tracker yet)"
    walk.r.actions += A.drop(A.DR_CONNTRACK)


def learn(walk: _Walk, a: Learn, owner: Flow | None) -> None:
    """``learn``: the flow goes into ``XlateResult.learned`` (traced)."""
    try:
        got = build(walk, a, owner)
    except FlowError as e:
        if walk.rec:
            walk.rec.note(f"     -> learn: no flow ({e})")
        return
    walk.r.learned.append(got)
    if walk.rec:
        walk.rec.note(f"     -> learned a flow in table {a.table} (priority {a.priority})")
