"""The action set (OpenFlow's write-actions instruction): one action per kind (``action_set_slot``), run
when the pipeline ends in OpenFlow's order (``ACTION_SET_ORDER``: pop, push, set-field, output)."""

from __future__ import annotations

from ofproto.actions import Group
from ofproto.rules import Action, ModVlanVid, PopVlan, PushVlan, SetField

#: the kinds, in the order they run (OpenFlow's: pop, push, set-field, output)
ACTION_SET_ORDER = ("pop", "push", "eth_dst", "eth_src", "vlan_vid", "vlan_pcp", "output")


def action_set_order(action_set: dict[str, Action]) -> list[Action]:
    """The action set in execution order: ``ACTION_SET_ORDER``, set-fields of other fields (in the order
    they were first written) just before the output."""
    known = [action_set[k] for k in ACTION_SET_ORDER[:-1] if k in action_set]
    other = [a for k, a in action_set.items() if k not in (*ACTION_SET_ORDER, "group")]
    last = action_set.get("group", action_set.get("output"))   # a group takes the place of the output
    return known + other + ([last] if last is not None else [])


#: the kind of each action type with a fixed one (a set-field's is its field; any other write-action's, "output")
_SLOT_OF_TYPE: dict[type, str] = {PopVlan: "pop", PushVlan: "push", ModVlanVid: "vlan_vid", Group: "group"}


def action_set_slot(a: Action) -> str:
    """The action-set kind of a write-action (one of ``ACTION_SET_ORDER``, or the field of a set-field)."""
    slot = _SLOT_OF_TYPE.get(type(a))
    if slot is not None:
        return slot
    if isinstance(a, SetField):
        return a.field
    return "output"
