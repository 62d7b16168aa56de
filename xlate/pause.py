"""``controller(...)`` in the translator, and ``controller(pause)``: the walk frozen into a continuation and
resumed (NXT_RESUME) where it stopped.

```
 walk ─► controller(pause) ─► USERSPACE (cookie: PinInfo with Frozen) ─► packet-in2 + continuation (sealed)
                                  the megaflow ends there: nothing after the pause runs in the datapath
 NXT_RESUME(packet, metadata, continuation) ─► unseal ─► resume(): the flows named by uid, from the action after
     the pause; the lists that resubmitted to it, their gotos, the action set; OUTPUT/NORMAL as any walk
```

A pause freezes what OVS freezes: the registers and metadata (the packet-in's metadata), the stack, the action
lists still to run (as ``(flow uid, action index)`` per nesting level: the flow's apply-actions after that index,
then the rest of its instructions and its gotos) and the action set (``(slot, flow uid, write index)``). The
continuation is that state in bytes, authenticated with a key of this process (HMAC-SHA256), so the switch
keeps nothing per continuation; a forged one, one of another bridge or process, or one naming a flow that is
gone or changed is stale (``StaleContinuation``; a restart makes every continuation stale). Every packet a
megaflow covers pauses in the same state (the registers and stack depend only on what the megaflow matches), so
the state rides in the upcall cookie (``xlate.cookies.MAX_PIN_CONTEXTS`` bounds those contexts). The
packet-in carries the whole frame whatever ``max_len`` says, as OVS 3.1 (which buffers nothing) sends it.

Not frozen (the controller action then sends a packet-in without a continuation and the walk goes on, as
without ``pause``): a pause inside ``clone``, after a patch port, or in a packet-out's own action list and
the tables it resubmits to (a packet-out's ``output:TABLE`` walk pauses as a received frame's).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from typing import Any

from dpif import actions as A
from dpif import key as K
from ofproto import fields as F
from ofproto.actions import OFPCML_NO_BUFFER, Controller
from ofproto.rules import Flow

_KEY = os.urandom(32)            # this process's continuation key
_MAGIC = b"PVSC"
_MAC_LEN = 16


class StaleContinuation(ValueError):
    """A continuation this switch cannot resume (forged, another bridge's or process's, its flows gone)."""


@dataclass(frozen=True)
class Frozen:
    """A paused walk: the action lists still to run and the pipeline state besides registers."""

    frames: tuple[tuple[int, int, int], ...]         # (flow uid, index of the action that ran, table), outer first
    stack: tuple[int, ...] = ()
    action_set: tuple[tuple[str, int, int], ...] = ()   # (slot, flow uid, write-actions index)


@dataclass(frozen=True)
class PinInfo:
    """What a ``controller(...)`` packet-in carries besides the frame: the action's arguments, the pipeline
    words (registers, metadata) and, for a pause, the frozen walk (another packet-in with registers set has one
    too, ``action`` False, for the pipeline words)."""

    controller_id: int = 0
    userdata: bytes = b""
    meter_id: int = 0
    pipeline: tuple[int, ...] = ()
    frozen: Frozen | None = None
    action: bool = True         # False: an output to CONTROLLER (or a miss, dec_ttl) that carries registers only


def pipeline_words(flow: list[int]) -> tuple[int, ...]:
    """The pipeline words (registers, metadata) of a walk's flow state."""
    return tuple(flow[K.KEY_WORDS:F.FLOW_WORDS])


def controller(w: Any, a: Controller, flow: Flow | None, table_id: int) -> bool:
    """Run ``a`` in walk ``w`` (an ``xlate.translate._Walk``): a packet-in, frozen when ``a.pause`` can be;
    False: the walk stops here (paused)."""
    from xlate.translate import OFPR_NO_MATCH, Upcall  # the walk's own module (which imports this one)

    frozen = freeze(w) if a.pause else None
    pin = PinInfo(a.controller_id, a.userdata, a.meter_id, pipeline_words(w.flow), frozen)
    reason = OFPR_NO_MATCH if flow is not None and flow.is_table_miss and a.reason == 1 else a.reason
    w.commit()
    if a.meter_id:    # the packet-in alone pays the meter (OVS's clone(meter, userspace))
        w.meter(a.meter_id, skip=4)
    up = Upcall(flow, reason, flow.table_id if flow is not None else table_id, w.bridge,
                -1 if w.in_port == w.rx_port else w.in_port, pin)
    # the whole frame, whatever max_len says: OVS 3.1 buffers nothing and cuts no controller() packet-in
    w.r.actions += [A.OP_USERSPACE, 2, w.cookies.id_for(up), OFPCML_NO_BUFFER]
    w.r.outputs += 1
    if w.rec and frozen:      # OVS's trace says nothing of a plain packet-in
        w.rec.note("     -> packet-in to the controllers, the pipeline paused")
    if frozen is None:
        return True
    w.paused = w.exiting = True
    return False


def freeze(w: Any) -> Frozen | None:
    """The walk's state at the action running now, or None when it cannot be frozen (clone, patch port,
    packet-out actions)."""
    frames = w.frames
    if not w.can_freeze or w.depth or not frames or any(f is None for f, _i in frames):
        return None
    out = tuple((f.uid, i, f.table_id) for f, i in frames)
    sets = tuple((slot, *w.action_src[slot]) for slot in w.action_set)
    return Frozen(out, tuple(w.stack), sets)


# ---------------------------------------------------------------- the continuation's bytes
def seal(frozen: Frozen, dpid: int, fingerprints: dict[int, int]) -> bytes:
    """``frozen`` as authenticated bytes for bridge ``dpid``; ``fingerprints`` (flow uid -> a digest of its
    instructions) lets ``unseal`` see a flow that changed."""
    out = bytearray(_MAGIC + struct.pack("!QHHH", dpid, len(frozen.frames), len(frozen.stack),
                                         len(frozen.action_set)))
    for uid, idx, table in frozen.frames:
        out += struct.pack("!QQHB", uid, fingerprints.get(uid, 0), idx, table)
    for v in frozen.stack:
        out += v.to_bytes(16, "big")
    for slot, uid, idx in frozen.action_set:
        name = slot.encode()
        out += struct.pack("!B", len(name)) + name + struct.pack("!QQH", uid, fingerprints.get(uid, 0), idx)
    return bytes(out) + hmac.new(_KEY, bytes(out), hashlib.sha256).digest()[:_MAC_LEN]


def unseal(blob: bytes, dpid: int) -> tuple[Frozen, dict[int, int]]:
    """The state ``seal`` wrote, and the fingerprints it expects; ``StaleContinuation`` unless it is genuine and
    for bridge ``dpid``."""
    body, mac = blob[:-_MAC_LEN], blob[-_MAC_LEN:]
    if len(blob) < len(_MAGIC) + 10 + _MAC_LEN or not hmac.compare_digest(
            mac, hmac.new(_KEY, body, hashlib.sha256).digest()[:_MAC_LEN]):
        raise StaleContinuation("not a continuation of this switch")
    their_dpid, n_frames, n_stack, n_set = struct.unpack_from("!QHHH", body, 4)
    if their_dpid != dpid:
        raise StaleContinuation("a continuation of another bridge")
    off = 4 + 14
    prints: dict[int, int] = {}
    frames = []
    for _ in range(n_frames):
        uid, fp, idx, table = struct.unpack_from("!QQHB", body, off)
        off += 19
        frames.append((uid, idx, table))
        prints[uid] = fp
    stack = []
    for _ in range(n_stack):
        stack.append(int.from_bytes(body[off:off + 16], "big"))
        off += 16
    sets = []
    for _ in range(n_set):
        n = body[off]
        slot = body[off + 1:off + 1 + n].decode()
        off += 1 + n
        uid, fp, idx = struct.unpack_from("!QQH", body, off)
        off += 18
        sets.append((slot, uid, idx))
        prints[uid] = fp
    return Frozen(tuple(frames), tuple(stack), tuple(sets)), prints


def fingerprint(flow: Flow) -> int:
    """A digest of ``flow``'s instructions (stable within this process)."""
    return hash(flow.instructions) & 0xFFFF_FFFF_FFFF_FFFF


# ---------------------------------------------------------------- resume
def resume(w: Any, frozen: Frozen, flows: dict[int, Flow]) -> None:
    """Continue walk ``w`` (its flow state: the resumed frame, registers and metadata set) where ``frozen``
    stopped; ``flows`` by uid holds every flow it names."""
    w.stack = list(frozen.stack)
    for slot, uid, idx in frozen.action_set:
        w.action_set[slot] = flows[uid].instructions.write[idx]
        w.action_src[slot] = (uid, idx)
    got = _level(w, frozen.frames, 0, flows)
    if got is not None and not w.paused:
        w.run_action_set(*got)


def _level(w: Any, frames: tuple[tuple[int, int, int], ...], k: int, flows: dict[int, Flow]
           ) -> tuple[Flow | None, int] | None:
    """Finish nesting level ``k`` (the inner ones first): the rest of its flow's instructions, then its gotos;
    the last flow and table of that chain (None: it stopped)."""
    uid, idx, table = frames[k]
    flow = flows[uid]
    if k + 1 < len(frames):
        w.resubmit_nest += 1
        _level(w, frames, k + 1, flows)
        w.resubmit_nest -= 1
        if w.paused:
            return None
    w.table_id = table
    nxt = w.run_instructions(flow, idx + 1)
    if nxt is None or w.exiting:
        return flow, table
    return w.tables(nxt, top=k == 0)


def translate_resume(bridges: Any, key: list[int], port_flags: Any, cookies: Any, bridge: int, frozen: Frozen,
                     flows: dict[int, Flow], pipeline: dict[int, int]) -> Any:
    """The translation of a resumed frame with key words ``key`` (``in_port``: the datapath port it came in on)
    in bridge ``bridge``: ``pipeline`` (flow word -> value: registers, metadata) set, then ``resume``. An
    ``XlateResult``, run once (never a megaflow)."""
    from xlate.translate import _bridges, _Walk

    w = _Walk(_bridges(bridges, port_flags), bridge, port_flags, cookies, key, None)
    for word, value in pipeline.items():
        w.flow[word] = value
    resume(w, frozen, flows)
    return w.finish()
