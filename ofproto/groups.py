"""The group table of one bridge (OpenFlow 1.1+ groups): types all / select / indirect / fast_failover,
buckets with weight, watch_port, watch_group and actions, and their statistics.

```
 group-mod ──► GroupTable.add / modify / delete / insert_buckets / remove_buckets  (agent thread)
                  │ snapshot(): group_id -> Group, given to the compiled flow tables (``TableSet.groups``)
                  ▼
               translator (``xlate.translate``): the ``Group`` action runs the chosen buckets
               upcall crediting (``xlate.upcall``): megaflow packets/bytes -> Group.packets / bytes / bucket
```

Errors are ``GroupError`` with OVS's OpenFlow error name (``group_exists``, ``unknown_group``, ``bad_type``,
``invalid_group``, ``bad_bucket``, ``bad_watch``, ``unknown_bucket``, ``bucket_exists``, ``bad_command``);
the wire side maps them to OFPET_GROUP_MOD_FAILED codes. Like OVS 3.1, a bucket may name a group that does
not exist (yet), or the group itself: the translator bounds the chain (``xlate.translate.MAX_DEPTH``).
A group that a mod refuses is left as it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ofproto.actions import OFPG_MAX, OFPP_ANY, Action, Clone, FlowError, check_action
from ofproto.actions import Group as GroupAction

OFPGT_ALL, OFPGT_SELECT, OFPGT_INDIRECT, OFPGT_FF = 0, 1, 2, 3
TYPE_NAMES = {OFPGT_ALL: "all", OFPGT_SELECT: "select", OFPGT_INDIRECT: "indirect", OFPGT_FF: "ff"}
OFPG_ALL = 0xFFFFFFFC
OFPG_ANY = 0xFFFFFFFF
#: OpenFlow 1.5 command_bucket_id values
OFPG_BUCKET_MAX = 0xFFFFFF00
OFPG_BUCKET_FIRST = 0xFFFFFFFD
OFPG_BUCKET_LAST = 0xFFFFFFFE
OFPG_BUCKET_ALL = 0xFFFFFFFF
#: the selection methods OVS knows (its NTR group property)
SELECTION_METHODS = ("", "dp_hash", "hash")


class GroupError(ValueError):
    """A group-mod the table refuses; ``code`` names the OpenFlow error (``group_exists``, ...)."""

    def __init__(self, code: str, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code


@dataclass(frozen=True)
class Bucket:
    """One bucket: its actions, ``weight`` (select), ``watch_port`` / ``watch_group`` (fast failover, select) and
    ``bucket_id`` (OpenFlow 1.5's; 1.3 buckets are numbered in order)."""

    actions: tuple[Action, ...] = ()
    weight: int = 0
    watch_port: int = OFPP_ANY
    watch_group: int = OFPG_ANY
    bucket_id: int = 0


@dataclass(eq=False)
class Group:
    """A group entry and its counters (``packets``, ``bytes``; ``bucket_counts[i]`` = [packets, bytes]),
    credited from the megaflows that ran it."""

    group_id: int
    type: int
    buckets: tuple[Bucket, ...] = ()
    selection_method: str = ""
    fields: tuple[str, ...] = ()
    method_param: int = 0
    created: float = field(default_factory=time.monotonic)
    packets: int = 0
    bytes: int = 0
    bucket_counts: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.bucket_counts) != len(self.buckets):
            self.bucket_counts = [[0, 0] for _ in self.buckets]

    def credit(self, bucket: int, packets: int, nbytes: int) -> None:
        """Count ``packets`` / ``nbytes`` for the group (``bucket`` -1) or for one of its buckets."""
        if bucket < 0:
            self.packets += packets
            self.bytes += nbytes
        elif bucket < len(self.bucket_counts):
            self.bucket_counts[bucket][0] += packets
            self.bucket_counts[bucket][1] += nbytes


def check_group(g: Group) -> None:
    """Raise ``GroupError`` when ``g`` cannot be installed (what OVS refuses for any command)."""
    if not 0 <= g.group_id <= OFPG_MAX:
        raise GroupError("invalid_group", f"group_id {g.group_id:#x}")
    if g.type not in TYPE_NAMES:
        raise GroupError("bad_type", f"group type {g.type}")
    if g.selection_method not in SELECTION_METHODS:
        raise GroupError("bad_type", f"selection_method {g.selection_method!r}")
    if g.selection_method and g.type != OFPGT_SELECT:
        raise GroupError("bad_type", "selection_method is for select groups")
    ids = [b.bucket_id for b in g.buckets]
    if len(set(ids)) != len(ids):
        raise GroupError("bad_bucket", f"bucket ids {ids}")
    for b in g.buckets:
        if b.bucket_id > OFPG_BUCKET_MAX:
            raise GroupError("bad_bucket", f"bucket_id {b.bucket_id:#x}")
        watches = b.watch_port != OFPP_ANY or b.watch_group != OFPG_ANY
        if g.type == OFPGT_FF and not watches:
            raise GroupError("invalid_group", "a fast failover bucket watches a port or a group")
        if g.type not in (OFPGT_FF, OFPGT_SELECT) and watches:   # select: liveness, as OVS
            raise GroupError("watch_unsupported", "only fast failover and select buckets watch ports and groups")
        if not 0 <= b.weight <= 0xFFFF:
            raise GroupError("bad_bucket", f"weight {b.weight}")
        if b.weight and g.type != OFPGT_SELECT:
            raise GroupError("invalid_group", "only select buckets have a weight")
        for a in b.actions:
            try:
                check_action(a)
            except FlowError as e:
                raise GroupError("bad_action:" + e.code, str(e)) from None


class GroupTable:
    """The groups of one bridge, by id (insertion order). Used from the agent's thread."""

    def __init__(self) -> None:
        self.groups: dict[int, Group] = {}

    def __len__(self) -> int:
        return len(self.groups)

    def snapshot(self) -> dict[int, Group]:
        """The groups as the translator sees them (a copy of the mapping; the ``Group`` objects are shared so
        their counters keep counting)."""
        return dict(self.groups)

    def add(self, g: Group) -> None:
        """OFPGC_ADD: a new group (``group_exists`` if the id is taken)."""
        check_group(g)
        if g.group_id in self.groups:
            raise GroupError("group_exists", f"group {g.group_id} exists")
        self.groups[g.group_id] = g

    def modify(self, g: Group) -> None:
        """OFPGC_MODIFY: replace a group's type and buckets (``unknown_group`` if it does not exist); its
        counters start again."""
        check_group(g)
        if g.group_id not in self.groups:
            raise GroupError("unknown_group", f"no group {g.group_id}")
        self.groups[g.group_id] = g

    def add_or_modify(self, g: Group) -> None:
        """OFPGC_ADD_OR_MOD (OpenFlow 1.5; OVS takes it in every version)."""
        check_group(g)
        self.groups[g.group_id] = g

    def delete(self, group_id: int) -> list[int]:
        """OFPGC_DELETE of one group or ``OFPG_ALL``; the ids removed (none: no error, as OpenFlow says)."""
        if group_id == OFPG_ALL:
            gone = list(self.groups)
            self.groups.clear()
            return gone
        return [group_id] if self.groups.pop(group_id, None) is not None else []

    def insert_buckets(self, group_id: int, command_bucket_id: int, buckets: tuple[Bucket, ...]) -> None:
        """OpenFlow 1.5 OFPGC_INSERT_BUCKET: ``buckets`` go first, last, or before bucket ``command_bucket_id``."""
        old = self._get(group_id)
        have = [b.bucket_id for b in old.buckets]
        if any(b.bucket_id in have for b in buckets if b.bucket_id <= OFPG_BUCKET_MAX):
            raise GroupError("bucket_exists", f"group {group_id} has a bucket of that id")
        if command_bucket_id == OFPG_BUCKET_FIRST:
            at = 0
        elif command_bucket_id == OFPG_BUCKET_LAST:
            at = len(have)
        elif command_bucket_id in have:
            at = have.index(command_bucket_id)
        else:
            raise GroupError("unknown_bucket", f"no bucket {command_bucket_id} in group {group_id}")
        new = _replace(old, old.buckets[:at] + buckets + old.buckets[at:])
        check_group(new)
        self.groups[group_id] = new

    def remove_buckets(self, group_id: int, command_bucket_id: int) -> None:
        """OpenFlow 1.5 OFPGC_REMOVE_BUCKET: the first, last, all, or the named bucket goes."""
        old = self._get(group_id)
        bs = list(old.buckets)
        if command_bucket_id == OFPG_BUCKET_ALL:
            bs = []
        elif command_bucket_id == OFPG_BUCKET_FIRST:
            bs = bs[1:]
        elif command_bucket_id == OFPG_BUCKET_LAST:
            bs = bs[:-1]
        else:
            ids = [b.bucket_id for b in bs]
            if command_bucket_id not in ids:
                raise GroupError("unknown_bucket", f"no bucket {command_bucket_id} in group {group_id}")
            del bs[ids.index(command_bucket_id)]
        self.groups[group_id] = _replace(old, tuple(bs))

    def _get(self, group_id: int) -> Group:
        g = self.groups.get(group_id)
        if g is None:
            raise GroupError("unknown_group", f"no group {group_id}")
        return g


def _replace(old: Group, buckets: tuple[Bucket, ...]) -> Group:
    """``old`` with other buckets; the counters of the buckets it keeps (by bucket_id) stay."""
    counts = {b.bucket_id: c for b, c in zip(old.buckets, old.bucket_counts, strict=True)}
    g = Group(old.group_id, old.type, buckets, old.selection_method, old.fields, old.method_param, old.created,
              old.packets, old.bytes, [list(counts.get(b.bucket_id, [0, 0])) for b in buckets])
    return g


def next_bucket_id(buckets: tuple[Bucket, ...]) -> int:
    """The id a new bucket gets when none is given: one past the highest (0 for the first)."""
    return max((b.bucket_id for b in buckets), default=-1) + 1


def referenced_groups(actions: tuple[Action, ...]) -> set[int]:
    """Group ids named by ``actions`` (inside ``clone`` too)."""
    out: set[int] = set()
    for a in actions:
        if isinstance(a, GroupAction):
            out.add(a.group_id)
        elif isinstance(a, Clone):
            out |= referenced_groups(a.actions)
    return out
