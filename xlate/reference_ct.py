"""The reference model's ``ct``, ``ct_clear`` and ``learn`` (``xlate.reference``), written from the rules
``xlate.ctlearn`` states, not from it: ``ct`` ends the frame's walk (what was output stays) and counts a
``conntrack_unavailable`` drop; ``ct_clear`` zeroes the key's ct words; ``learn`` builds its flow from the
frame's fields as the walk has them, and the model adds it (or restarts the timers of the same flow) once
the frame's walk is over; a learning flow with ``delete_learned`` takes its learned flows with it when it
goes (deleted or expired); ``fin_timeout`` cuts its flow's timeouts when a TCP FIN or RST goes through it.
"""

from __future__ import annotations

from typing import Any

from dpif import key as K
from ofproto import rules as R

#: key words of the ct fields: state and zone, mark, label (2), tuple (3)
CT_KEY_WORDS = (K.W_CT_STATE, K.W_CT_MARK, K.W_CT_LABEL, K.W_CT_LABEL + 1, K.W_CT_TUPLE, K.W_CT_TUPLE + 1,
                K.W_CT_TUPLE + 2)
#: registry name -> the Match (OXM) field a learned flow matches it with, where they differ
MATCH_NAMES = {"ip_src": "ipv4_src", "ip_dst": "ipv4_dst", "nw_proto": "ip_proto", "nw_ecn": "ip_ecn",
               "tun_id": "tunnel_id", "icmp_type": "icmpv4_type", "icmp_code": "icmpv4_code"}


class CtReached(Exception):
    """A frame's walk reached ``ct``."""


def learned_flow(walk: Any, a: R.Learn) -> R.Flow:
    """The flow ``a`` makes from the frame ``walk`` holds (``walk.get(name)``: a field's value)."""
    fields: dict[str, tuple[int, int]] = {}
    acts: list[R.Action] = []
    if a.fin_idle_timeout or a.fin_hard_timeout:
        acts.append(R.FinTimeout(a.fin_idle_timeout, a.fin_hard_timeout))
    for sp in a.specs:
        ones = (1 << sp.n_bits) - 1
        v = sp.value if sp.src is None else walk.get(sp.src) >> sp.src_ofs & ones
        if sp.dst_type == "output":
            acts.append(R.Output(v + 0xFFFF0000 if sp.n_bits == 16 and v >= 0xFF00 else v))
        elif sp.dst_type == "load":
            acts.append(R.Load(sp.dst, v << sp.dst_ofs, ones << sp.dst_ofs))
        else:
            name = MATCH_NAMES.get(sp.dst, sp.dst)
            old_v, old_m = fields.get(name, (0, 0))
            m = ones << sp.dst_ofs
            fields[name] = ((old_v & ~m) | (v << sp.dst_ofs), old_m | m)
    return R.Flow(a.table, a.priority, R.Match(**fields), R.Instructions(apply=tuple(acts)), a.cookie, a.idle_timeout,
                  a.hard_timeout, R.OFPFF_SEND_FLOW_REM if a.send_flow_rem else 0)


def fin_timeout(key: list[int], a: R.FinTimeout, flow: Any) -> None:
    """A TCP frame with FIN or RST through ``fin_timeout``: ``flow``'s timeouts cut down to ``a``'s."""
    tcp = key[K.W_ETH_TYPE] in (0x0800, 0x86DD) and key[K.W_NW] & 0xFF == 6
    if flow is None or not tcp or not key[K.W_TP] >> 32 & 0x005:
        return
    for name, new in (("idle_timeout", a.idle_timeout), ("hard_timeout", a.hard_timeout)):
        if new and (not getattr(flow, name) or getattr(flow, name) > new):
            setattr(flow, name, new)


def learn(ref: Any, flow: R.Flow, owner: Any, delete_learned: bool, now: int) -> None:
    """Into ``ref`` (a ``RefTables``): added, or the same flow's timers restarted; remembered for its owner."""
    if owner is not None and delete_learned:
        ref.learned_by.setdefault(id(owner), set()).add((flow.table_id, flow.priority, flow.match))
    for f in ref.flows:
        if f.ident() == (flow.table_id, flow.priority, flow.match) and (
                f.instructions, f.cookie, f.idle_timeout, f.hard_timeout, f.flags) == (
                flow.instructions, flow.cookie, flow.idle_timeout, flow.hard_timeout, flow.flags):
            f.installed = now
            return
    ref.add(flow, now)


def gone_learners(ref: Any, gone: list[Any]) -> list[Any]:
    """Remove (and return) what the flows ``gone`` learned with ``delete_learned``."""
    out = []
    for g in gone:
        for ident in ref.learned_by.pop(id(g), ()):
            out += [f for f in ref.flows if f.ident() == ident]
            ref.flows = [f for f in ref.flows if f.ident() != ident]
    return out
