"""Group-mod, meter-mod and their multipart replies for one bridge's OpenFlow agent (``OfAgent``).

```
 group_mod (1.3/1.4: add / modify / delete; 1.5: + add_or_mod, insert_bucket, remove_bucket, properties)
     ──► ofproto.groups.GroupTable ──► FlowTables.set_groups (the translator's snapshot; megaflows revalidated)
         deleting a group deletes the flows that send to it (flow-removed reason OFPRR_GROUP_DELETE)
 meter_mod (add / modify / delete) ──► ofproto.meters.MeterTable; deleting a meter deletes the flows that use it
 flow_mod: a group or meter that does not exist is OFPBAC_BAD_OUT_GROUP / OFPMMFC_INVALID_METER (check_refs)
 multipart: group stats, group desc, group features, meter stats, meter config, meter features
```

Wire <-> model: 1.3/1.4 buckets carry weight and watch fields, numbered 0, 1, ... in order; 1.5 buckets (and
OpenFlow 1.0's, which OVS carries in Nicira messages, ``vswitch.openflow.nxt``, with 1.0 actions) carry a
``bucket_id`` and properties (weight 0, watch_port 1, watch_group 2), and the group OVS's selection-method
property (Netronome experimenter 0x154d: ``dp_hash`` / ``hash``, a parameter and the fields hashed, as OXM
TLVs whose value is the mask: all ones here). Errors are the ones OVS sends: OFPET_GROUP_MOD_FAILED /
OFPET_METER_MOD_FAILED codes by name (1.0, which has neither type, gets them in OVS's NXET_VENDOR wrapping).
"""

from __future__ import annotations

import struct
import time
from typing import Any

from ofproto import fields as F
from ofproto.actions import OFPP_ANY, Action, Clone, Meter, check_action
from ofproto.actions import Group as GroupAction
from ofproto.groups import (
    OFPG_ALL,
    OFPG_ANY,
    OFPGT_INDIRECT,
    OFPGT_SELECT,
    SELECTION_METHODS,
    Bucket,
    Group,
    GroupError,
    GroupTable,
    check_group,
)
from ofproto.meters import (
    BAND_TYPES,
    CAPABILITIES,
    MAX_BANDS,
    MAX_COLOR,
    MAX_METERS,
    OFPM_ALL,
    OFPMF_BURST,
    Band,
    MeterError,
    MeterTable,
)
from ofproto.meters import Meter as MeterEntry
from ofproto.rules import Flow
from vswitch.openflow.actionwire import action_from_wire, action_to_wire, instructions_from_wire
from vswitch.openflow.channel import NXET_VENDOR
from vswitch.openflow.codec import (
    MP_GROUP,
    MP_GROUP_DESC,
    MP_GROUP_FEATURES,
    MP_METER,
    MP_METER_CONFIG,
    OFP10,
    OFP15,
    OFPET_BAD_ACTION,
    OFPET_BAD_REQUEST,
    Msg,
    OfpError,
)
from vswitch.openflow.flows import FLOW_ERRORS
from vswitch.openflow.translate import actions_from10, actions_to10

OFPET_GROUP_MOD_FAILED = 6
OFPET_BAD_PROPERTY = 14
OFPBPC_BAD_TYPE, OFPBPC_BAD_VALUE, OFPBPC_BAD_EXPERIMENTER = 0, 2, 5
OFPET_METER_MOD_FAILED = 12
OFPBAC_BAD_OUT_GROUP = 9
OFPBRC_IS_SLAVE = 10
ROLE_SLAVE = 3
OFPGC_ADD, OFPGC_MODIFY, OFPGC_DELETE, OFPGC_INSERT_BUCKET, OFPGC_REMOVE_BUCKET = 0, 1, 2, 3, 5
OFPGC_ADD_OR_MOD = 0x8000
OFPMC_ADD, OFPMC_MODIFY, OFPMC_DELETE = 0, 1, 2
OFPRR_GROUP_DELETE, OFPRR_METER_DELETE = 3, 4
OFPGBPT_WEIGHT, OFPGBPT_WATCH_PORT, OFPGBPT_WATCH_GROUP = 0, 1, 2
NTR_VENDOR_ID, NTRT_SELECTION_METHOD = 0x0000154D, 1
_NTR_HEAD = struct.Struct("!II4x16sQ")     # experimenter, exp_type, pad, selection_method, param
MP_KINDS = (MP_GROUP, MP_GROUP_DESC, MP_GROUP_FEATURES, MP_METER, MP_METER_CONFIG)

GROUP_MOD_ERRORS = {name: code for code, name in enumerate((
    "group_exists", "invalid_group", "weight_unsupported", "out_of_groups", "out_of_buckets", "chaining_unsupported",
    "watch_unsupported", "loop", "unknown_group", "chained_group", "bad_type", "bad_command", "bad_bucket",
    "bad_watch", "eperm", "unknown_bucket", "bucket_exists"))}
METER_MOD_ERRORS = {name: code for code, name in enumerate((
    "unknown", "meter_exists", "invalid_meter", "unknown_meter", "bad_command", "bad_flags", "bad_rate", "bad_burst",
    "bad_band", "bad_band_value", "out_of_meters", "out_of_bands"))}
#: group features: the 4 types, select weight / liveness / chaining, and the actions a bucket may hold (OVS's set)
GROUP_CAPABILITIES = 0x7
GROUP_ACTIONS = sum(1 << t for t in (0, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25))
GROUP_ACTIONS10 = 0xFFF   # OpenFlow 1.0's: output, the 10 header settings, enqueue
OFPG_MAX_GROUPS = 0xFFFFFF00


def _group_error(e: GroupError) -> OfpError:
    if e.code.startswith("bad_action:"):
        err_type, code = FLOW_ERRORS.get(e.code[11:], (OFPET_BAD_ACTION, 0))
        return OfpError(err_type, code, str(e))
    return OfpError(OFPET_GROUP_MOD_FAILED, GROUP_MOD_ERRORS.get(e.code, 0), str(e))


def _meter_error(e: MeterError) -> OfpError:
    return OfpError(OFPET_METER_MOD_FAILED, METER_MOD_ERRORS.get(e.code, 0), str(e))


def error10(e: OfpError) -> OfpError:
    """An error as OVS sends it in OpenFlow 1.0: one 1.0 has no number for (a group-mod, meter-mod or property
    error, a bad out group) goes inside an NXET_VENDOR error, with its 1.3 type and code."""
    if e.err_type in (OFPET_GROUP_MOD_FAILED, OFPET_METER_MOD_FAILED, OFPET_BAD_PROPERTY) or (
            e.err_type == OFPET_BAD_ACTION and e.code == OFPBAC_BAD_OUT_GROUP):
        return OfpError(NXET_VENDOR, e.err_type << 16 | e.code, str(e))
    return e


# ---------------------------------------------------------------- wire <-> model
def _v15(version: int) -> bool:
    """Whether ``version``'s groups have 1.5's form (bucket ids, properties): 1.5, and 1.0's Nicira messages."""
    return version >= OFP15 or version == OFP10


def _actions(version: int, wire: list[dict[str, Any]]) -> tuple[Action, ...]:
    if version == OFP10:
        wire = actions_from10(wire)
    return tuple(action_from_wire(version, a) for a in wire)


def _bucket_props(props: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in props:
        t, body = p["prop_type"], p["body"]
        if t == OFPGBPT_WEIGHT and len(body) >= 2:
            out["weight"] = struct.unpack_from("!H", body)[0]
        elif t in (OFPGBPT_WATCH_PORT, OFPGBPT_WATCH_GROUP) and len(body) >= 4:
            out["watch_port" if t == OFPGBPT_WATCH_PORT else "watch_group"] = struct.unpack_from("!I", body)[0]
        else:
            raise OfpError(OFPET_BAD_PROPERTY, OFPBPC_BAD_TYPE, f"bucket property {t}")
    return out


def buckets_from_wire(version: int, gtype: int, wire: list[dict[str, Any]]) -> tuple[Bucket, ...]:
    """A group-mod's (or group description's) buckets."""
    out = []
    for i, b in enumerate(wire):
        acts = _actions(version, b["actions"])
        if _v15(version):
            p = _bucket_props(b.get("properties", []))
            out.append(Bucket(acts, p.get("weight", 0), p.get("watch_port", OFPP_ANY), p.get("watch_group", OFPG_ANY),
                              b["bucket_id"]))
        else:
            out.append(Bucket(acts, b["weight"], b["watch_port"], b["watch_group"], i))
    return tuple(out)


def _group_props(gtype: int, props: list[dict[str, Any]]) -> tuple[str, tuple[str, ...], int]:
    """OVS's selection-method property: (method, fields, param)."""
    method, fields, param = "", (), 0
    for p in props:
        body = p["body"]
        if p["prop_type"] != 0xFFFF or len(body) < _NTR_HEAD.size:
            raise OfpError(OFPET_BAD_PROPERTY, OFPBPC_BAD_TYPE, f"group property {p['prop_type']}")
        exp, exp_type, raw, param = _NTR_HEAD.unpack_from(body)
        if exp != NTR_VENDOR_ID or exp_type != NTRT_SELECTION_METHOD:
            raise OfpError(OFPET_BAD_PROPERTY, OFPBPC_BAD_EXPERIMENTER, f"experimenter property {exp:#x}")
        method = raw.split(b"\0", 1)[0].decode(errors="replace")
        if method not in SELECTION_METHODS or gtype != OFPGT_SELECT:
            raise OfpError(OFPET_BAD_PROPERTY, OFPBPC_BAD_VALUE, f"selection_method {method!r}")
        names = []
        rest = body[_NTR_HEAD.size:]
        off = 0
        while len(rest) - off >= 4:
            header = struct.unpack_from("!I", rest, off)[0]
            f = F.by_nxm_header(header)
            if f is None or off + 4 + (header & 0xFF) > len(rest):
                raise OfpError(OFPET_GROUP_MOD_FAILED, GROUP_MOD_ERRORS["bad_type"], f"hash field {header:#x}")
            names.append(f.name)
            off += 4 + (header & 0xFF)
        fields = tuple(names)
    return method, fields, param


def _ntr_prop(version: int, g: Group) -> dict[str, Any]:
    """The selection-method property; its fields by OXM header (1.0: NXM's, as OVS writes them there)."""
    body = _NTR_HEAD.pack(NTR_VENDOR_ID, NTRT_SELECTION_METHOD, g.selection_method.encode(), g.method_param)
    for name in g.fields:
        f = F.by_name(name)
        assert f is not None
        ident = f.nxm if version == OFP10 and f.nxm is not None else f.oxm if f.oxm is not None else f.nxm
        cls, num = ident   # type: ignore[misc]
        body += struct.pack("!I", cls << 16 | num << 9 | f.nbytes) + b"\xff" * f.nbytes   # an all-ones value
    return {"prop_type": 0xFFFF, "body": body}


def bucket_to_wire(version: int, g: Group, b: Bucket) -> dict[str, Any]:
    """One bucket in the wire form of ``version``."""
    acts = [action_to_wire(version, a) for a in b.actions]
    if version == OFP10:
        acts = actions_to10(acts)
    if not _v15(version):
        return {"weight": b.weight if g.type == OFPGT_SELECT else 0, "watch_port": b.watch_port,
                "watch_group": b.watch_group, "actions": acts}
    props = []
    if g.type == OFPGT_SELECT:
        props.append({"prop_type": OFPGBPT_WEIGHT, "body": struct.pack("!H2x", b.weight)})
    if b.watch_port != OFPP_ANY:
        props.append({"prop_type": OFPGBPT_WATCH_PORT, "body": struct.pack("!I", b.watch_port)})
    if b.watch_group != OFPG_ANY:
        props.append({"prop_type": OFPGBPT_WATCH_GROUP, "body": struct.pack("!I", b.watch_group)})
    return {"bucket_id": b.bucket_id, "actions": acts, "properties": props}


def group_desc(version: int, g: Group) -> dict[str, Any]:
    """A group description entry."""
    out: dict[str, Any] = {"type": g.type, "group_id": g.group_id,
                           "buckets": [bucket_to_wire(version, g, b) for b in g.buckets]}
    if _v15(version):
        out["properties"] = [_ntr_prop(version, g)] if g.selection_method else []
    return out


def _uses(acts: tuple[Action, ...], kind: type, ident: int) -> bool:
    for a in acts:
        if isinstance(a, Clone) and _uses(a.actions, kind, ident):
            return True
        if isinstance(a, kind) and (a.group_id if kind is GroupAction else a.meter_id) == ident:  # type: ignore[attr-defined]
            return True
    return False


def flows_using(flows: list[Flow], kind: type, ident: int) -> list[Flow]:
    """The flows whose instructions name group (``kind`` = ``Group``) or meter (``Meter``) ``ident``."""
    return [f for f in flows if _uses((*f.instructions.apply, *f.instructions.write), kind, ident)]


# ---------------------------------------------------------------- the agent's side
def _tables(agent: Any) -> tuple[GroupTable, MeterTable]:
    groups = agent.__dict__.get("groups")
    if groups is None:
        groups = agent.groups = GroupTable()
        agent.meters = MeterTable()
    return groups, agent.meters


def _publish(agent: Any) -> None:
    groups, _ = _tables(agent)
    agent.flows.tables.set_groups(groups.snapshot())
    agent.flows.changed()


def check_group_mod(version: int, msg: Msg) -> None:
    """What a group-mod gets checked for when it is added to a bundle (its decoding, as OVS: type, buckets,
    properties, actions); whether its group exists is the commit's business."""
    command, gid, gtype = msg.command, msg.group_id, msg.fields["type"]
    if command == OFPGC_DELETE:
        return
    try:
        if gid > OFPG_MAX_GROUPS:
            raise GroupError("invalid_group", f"group_id {gid:#x}")
        buckets = buckets_from_wire(version, gtype, msg.buckets)
        if gtype == OFPGT_INDIRECT and len(buckets) != 1:
            raise GroupError("invalid_group", "an indirect group has exactly one bucket")
        method, fields, param = _group_props(gtype, msg.get("properties", [])) if _v15(version) else ("", (), 0)
        check_group(Group(gid, gtype, buckets, method, fields, param))
    except GroupError as e:
        raise _group_error(e) from None


def snapshot(agent: Any) -> dict[int, Group]:
    """The group table as it is (for a bundle that may have to be undone)."""
    return dict(_tables(agent)[0].groups)


def restore(agent: Any, groups: dict[int, Group]) -> None:
    """Put the group table back as ``snapshot`` found it."""
    table = _tables(agent)[0]
    if table.groups != groups:
        table.groups = dict(groups)
        _publish(agent)


def flush(agent: Any) -> None:
    """Delete every group and meter (OVS flushes them with the flows)."""
    groups, meters = _tables(agent)
    if groups.groups or meters.meters:
        groups.delete(OFPG_ALL)
        meters.delete(OFPM_ALL)
        agent.flows.tables.set_groups({})
        agent.flows.tables.set_meters({})
        agent.flows.changed()


def _delete_flows(agent: Any, kind: type, ident: int, reason: int) -> None:
    """Delete the flows that name group / meter ``ident``; tell the controllers that asked."""
    tables = agent.flows.tables
    chosen = flows_using(list(tables.flows()), kind, ident)
    if not chosen:
        return
    agent.bridge.dp.sync_stats()
    now = agent.flows.now()
    for f in chosen:
        for stats in tables.delete(f.table_id, f.match, f.priority, True, now=now):
            if stats.flow.flags & 1:    # OFPFF_SEND_FLOW_REM
                agent._flow_removed(stats, reason)


def group_mod(agent: Any, conn: Any, msg: Msg) -> None:
    """Apply a group-mod, or raise the OpenFlow error OVS sends (nothing changes then)."""
    if conn.role == ROLE_SLAVE:
        raise OfpError(OFPET_BAD_REQUEST, OFPBRC_IS_SLAVE, "a slave controller cannot modify groups")
    groups, _ = _tables(agent)
    v = conn.version
    command, gid, gtype = msg.command, msg.group_id, msg.fields["type"]
    try:
        if command == OFPGC_DELETE:
            gone = groups.delete(gid)
            for g in gone:
                _delete_flows(agent, GroupAction, g, OFPRR_GROUP_DELETE)
            if gone:   # (nothing deleted: the megaflows stand)
                _publish(agent)
            return
        if gid > OFPG_MAX_GROUPS and gid != OFPG_ALL:
            raise GroupError("invalid_group", f"group_id {gid:#x}")
        buckets = buckets_from_wire(v, gtype, msg.buckets)
        if gtype == OFPGT_INDIRECT and len(buckets) != 1:     # the message's buckets, whatever the command
            raise GroupError("invalid_group", "an indirect group has exactly one bucket")
        if command in (OFPGC_INSERT_BUCKET, OFPGC_REMOVE_BUCKET) and _v15(v):
            if command == OFPGC_REMOVE_BUCKET:
                groups.remove_buckets(gid, msg.command_bucket_id)
            else:
                old = groups.groups.get(gid)
                if old is None:
                    raise GroupError("unknown_group", f"no group {gid}")
                groups.insert_buckets(gid, msg.command_bucket_id, buckets)
            _publish(agent)
            return
        method, fields, param = _group_props(gtype, msg.get("properties", [])) if _v15(v) else ("", (), 0)
        g = Group(gid, gtype, buckets, method, fields, param)
        if command == OFPGC_ADD:
            groups.add(g)
        elif command == OFPGC_MODIFY:
            groups.modify(g)
        elif command == OFPGC_ADD_OR_MOD:   # OVS takes it (its extension before 1.5) in every version
            groups.add_or_modify(g)
        else:
            raise GroupError("bad_command", f"group_mod command {command}")
    except GroupError as e:
        raise _group_error(e) from None
    _publish(agent)


def meter_mod(agent: Any, conn: Any, msg: Msg) -> None:
    """Apply a meter-mod, or raise the OpenFlow error OVS sends (nothing changes then)."""
    if conn.role == ROLE_SLAVE:
        raise OfpError(OFPET_BAD_REQUEST, OFPBRC_IS_SLAVE, "a slave controller cannot modify meters")
    _, meters = _tables(agent)
    try:
        if msg.command == OFPMC_DELETE:
            gone = meters.delete(msg.meter_id)
            for m in gone:
                _delete_flows(agent, Meter, m, OFPRR_METER_DELETE)
            if gone:
                agent.flows.tables.set_meters(dict(meters.meters))
                agent.flows.changed()
            return
        burst = msg.flags & OFPMF_BURST   # as OVS: no burst flag, no burst size; the flag without one: the rate
        bands = tuple(Band(b["type"], b["rate"], (b["burst_size"] or b["rate"]) if burst else 0,
                           b["prec_level"] if b["type"] == 2 else 0) for b in msg.bands)
        m = MeterEntry(msg.meter_id, msg.flags, bands)
        if msg.command == OFPMC_ADD:
            meters.add(m)
        elif msg.command == OFPMC_MODIFY:
            meters.modify(m)
        else:
            raise MeterError("bad_command", f"meter_mod command {msg.command}")
    except MeterError as e:
        raise _meter_error(e) from None
    agent.flows.tables.set_meters(dict(meters.meters))
    agent.flows.changed()


def check_refs(agent: Any, version: int, msg: Msg) -> None:
    """A flow-mod that adds or modifies flows names only groups and meters that exist (else OVS's error)."""
    # 1.0: the command's high byte may be the table (NXT_FLOW_MOD_TABLE_ID)
    if (msg.command & 0xFF if version == OFP10 else msg.command) not in (0, 1, 2):
        return
    groups, meters = _tables(agent)
    ins = instructions_from_wire(version, msg.fields)

    def walk(acts: tuple[Action, ...]) -> None:
        for a in acts:
            if isinstance(a, GroupAction) and a.group_id not in groups.groups:
                check_action(a)
                raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_OUT_GROUP, f"no group {a.group_id}")
            if isinstance(a, Meter) and a.meter_id not in meters.meters:
                raise OfpError(OFPET_METER_MOD_FAILED, METER_MOD_ERRORS["invalid_meter"], f"no meter {a.meter_id}")
            if isinstance(a, Clone):
                walk(a.actions)
    try:
        walk((*ins.apply, *ins.write))
    except OfpError as e:
        raise error10(e) if version == OFP10 else e from None


def _duration(created: float) -> tuple[int, int]:
    ms = int((time.monotonic() - created) * 1000)    # OVS keeps group and meter ages in milliseconds
    return ms // 1000, ms % 1000 * 1_000_000


def multipart(agent: Any, version: int, kind: int, body: Any) -> Any:
    """The reply body of a group or meter multipart request."""
    if kind == MP_GROUP_FEATURES:
        acts = GROUP_ACTIONS10 if version == OFP10 else GROUP_ACTIONS
        return {"types": 0xF, "capabilities": GROUP_CAPABILITIES,
                **{f"max_groups_{t}": OFPG_MAX_GROUPS for t in range(4)},
                **{f"actions_{t}": acts for t in range(4)}}
    groups, meters = _tables(agent)
    if kind in (MP_GROUP, MP_GROUP_DESC):
        want = body.get("group_id", OFPG_ALL) if isinstance(body, dict) else OFPG_ALL
        chosen = [g for g in groups.groups.values() if want in (OFPG_ALL, OFPG_ANY) or g.group_id == want]
        if kind == MP_GROUP_DESC:
            return [group_desc(version, g) for g in chosen]
        agent.bridge.dp.sync_stats()
        flows = list(agent.flows.tables.flows())
        out = []
        for g in chosen:
            sec, nsec = _duration(g.created)
            out.append({"group_id": g.group_id, "ref_count": len(flows_using(flows, GroupAction, g.group_id)),
                        "packet_count": g.packets, "byte_count": g.bytes, "duration_sec": sec,
                        "duration_nsec": nsec, "bucket_stats": [{"packet_count": p, "byte_count": b}
                                                                 for p, b in g.bucket_counts]})
        return out
    want = body.get("meter_id", OFPM_ALL)
    chosen_m = [m for m in meters.meters.values() if want == OFPM_ALL or m.meter_id == want]
    if kind == MP_METER_CONFIG:
        return [{"flags": m.flags, "meter_id": m.meter_id,
                 "bands": [{"type": b.type, "rate": b.rate, "burst_size": b.burst_size, "prec_level": b.prec_level}
                           for b in m.bands]} for m in chosen_m]
    flows = list(agent.flows.tables.flows())
    out = []
    for m in chosen_m:
        sec, nsec = _duration(m.created)
        out.append({"meter_id": m.meter_id, "flow_count": len(flows_using(flows, Meter, m.meter_id)),
                    "packet_in_count": m.packets, "byte_in_count": m.bytes, "duration_sec": sec,
                    "duration_nsec": nsec, "band_stats": [{"packet_count": p, "byte_count": b}
                                                           for p, b in m.band_counts]})
    return out


def meter_features() -> dict[str, int]:
    """The meter features reply body (OVS 3.1's userspace datapath's)."""
    return {"max_meter": MAX_METERS, "band_types": BAND_TYPES, "capabilities": CAPABILITIES, "max_bands": MAX_BANDS,
            "max_color": MAX_COLOR}
