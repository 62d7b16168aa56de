"""Translate one packet's whole OpenFlow pipeline into flat datapath actions and a megaflow mask.

```
 key (dpif.key words of the frame) ──► table 0 lookup (TableIndex, widens the mask) ──► flow
       ▲                                   │ apply-actions: change the flow state, or output:
       │ goto                              │   commit the changed headers (SET_MASKED, PUSH/POP_VLAN),
       └───────────────────────────────────┤   then OUTPUT / NORMAL / USERSPACE
                                           │ write-actions: the action set, run when the walk ends
                                           ▼
 XlateResult: actions (int64 program, dpif.actions), mask, ranks of the flows hit, the table that missed
```

The result holds for every packet that agrees with the key on the mask: each lookup widens it by
the bits its answer depends on (``ofproto.lookup``), every header the actions set is in it (the
commit compares against the packet), tagged-or-not is in it whenever a VLAN action's effect depends
on it, and ``in_port`` always is. So the datapath can cache ``(key & mask, mask) -> actions`` as a
megaflow and run the actions on every frame that matches, without walking the tables again.

The flow state is the key's words (headers as the actions changed them) followed by pipeline words
(``ofproto.fields.FLOW_WORDS``: metadata, the registers reg0-15 / xreg0-7 / xxreg0-3, all 0 when a
frame enters), so lookups on registers work like lookups on headers and may widen the mask of pipeline
words; only the key words' mask becomes the megaflow's. A pipeline word's value is a function of the
path taken (decided by masked key bits) and of the key bits actions copied into it, and every action that
copies key bits anywhere (``move``, ``push``, ``output:reg``) un-wildcards them, as OVS does; so the
megaflow stays correct. ``pkt_mark`` and ``in_port`` writes are flow state only (no header carries them).

Nicira actions: ``resubmit`` is a recursive walk from a table (its first lookup with another in_port if
asked), bounded as OVS bounds it: depth ``MAX_DEPTH`` (a resubmit to an earlier or the same table, and a
patch crossing, nest one deeper) and ``MAX_CROSSINGS`` resubmits and crossings per translation; one
beyond is not done, and is counted in ``XlateResult.cut`` and traced (OVS drops the whole packet
instead). ``clone`` runs its actions, then takes back the headers (set back at the next commit, as after
a patch port), registers and stack. ``exit`` ends every action list of the bridge's walk (the action set
still runs); ``dec_ttl`` at TTL 0 or 1 is a packet-in (reason ``invalid_ttl``) and ends its list. A table
with conjunctive flows (``conjunction(id,k/n)``) answers its lookup as ``ofproto.conjunction`` says: the
``conj_id`` flow of a satisfied conjunction is the flow found (traced and counted as such).
A recorder (``ofproto/trace``) is told every step; a resubmitted flow's actions are indented once more.

One datapath serves every bridge (``Bridges``): the frame's ``in_port`` (a datapath port) names the
bridge whose tables the walk starts in. An output to a patch port continues the walk in the peer's
bridge, from its table 0, with ``in_port`` the peer (OVS's ``patch_port_output``): the headers it
changes there are put back for the rest of the first bridge's actions, its action set is its own, and
one megaflow covers both bridges. Patch crossings count against a depth of ``MAX_DEPTH`` and a total
of ``MAX_CROSSINGS`` per translation, as OVS bounds resubmits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dpif import actions as A
from dpif import key as K
from ofproto import fields as F
from ofproto.actions import (
    STACK_DEPTH,
    Clone,
    Conjunction,
    Controller,
    Ct,
    CtClear,
    DecTtl,
    Exit,
    FieldValue,
    FinTimeout,
    Learn,
    Load,
    Meter,
    Move,
    Note,
    OutputReg,
    Resubmit,
    StackPop,
    StackPush,
)
from ofproto.actions import Group as GroupAction
from ofproto.actionset import action_set_order, action_set_slot
from ofproto.groups import Group
from ofproto.rules import (
    NO_PORT,
    OFPCML_NO_BUFFER,
    OFPP_IN_PORT,
    OFPP_TABLE,
    OFPR_NO_MATCH,
    Action,
    Flow,
    Instructions,
    ModVlanVid,
    Output,
    PopVlan,
    PushVlan,
    SetField,
)
from ofproto.tables import TableSet
from xlate import ctlearn, pause
from xlate.bridges import (  # noqa: F401 - importable from here, as before the split
    MODE_DROP,
    MODE_NORMAL,
    MODE_TABLES,
    PF_DOWN,
    PF_LOCAL,
    PF_NO_FLOOD,
    PF_PATCH,
    Bridges,
)
from xlate.cookies import MAX_PIN_CONTEXTS, Upcall, UpcallCookies  # noqa: F401 - importable from here
from xlate.groups import run_group
from xlate.output import PortOutput
from xlate.recorder import BaseRecorder, Recorder, set_action_formatter  # noqa: F401 - importable from here
from xlate.recorder import fmt_action as _fmt

W_VLAN_TCI2 = getattr(K, "W_VLAN_TCI2", 21)
CFI = 0x1000
TCI_BITS = 0xFFFF
VLAN_WORD_BITS = 0xFFFF_FFFF      # TCI | TPID << 16
ETH_VLAN = 0x8100


MAX_DEPTH = 64         # resubmits and patch crossings nested in one translation (OVS's MAX_DEPTH)
MAX_CROSSINGS = 4096   # resubmits and patch crossings in one translation (OVS's MAX_RESUBMITS)
MAX_RESUBMITS = MAX_CROSSINGS
OFPR_INVALID_TTL = 2   # packet-in reason of dec_ttl at a TTL of 0 or 1
#: names of the limits a translation can hit (``XlateResult.cut``)
CUT_DEPTH = "recursion_too_deep"
CUT_RESUBMITS = "too_many_resubmits"

_SET_WORD = {"eth_dst": K.W_ETH_DST, "eth_src": K.W_ETH_SRC}
_COMMIT_WORDS = (K.W_ETH_DST, K.W_ETH_SRC, K.W_NW, K.W_NW_SRC, K.W_NW_DST, K.W_IPV6_SRC, K.W_IPV6_SRC + 1,
                 K.W_IPV6_DST, K.W_IPV6_DST + 1, K.W_TP, K.W_ARP_SHA, K.W_ARP_THA, K.W_ND_TARGET, K.W_ND_TARGET + 1)


@dataclass
class XlateResult:
    """One translation: the datapath program, the megaflow mask, the flows hit (by rank in the
    ``TableSet`` of ``rank_bridges``), the table whose lookup missed (-1), the headers the frame leaves with,
    and the bridges the walk entered."""

    actions: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=lambda: [0] * K.KEY_WORDS)
    ranks: list[int] = field(default_factory=list)
    rank_bridges: list[int] = field(default_factory=list)    # the bridge of each of ``ranks``
    miss_table: int = -1                                     # in the first bridge
    misses: list[tuple[int, int]] = field(default_factory=list)   # (bridge, table) of every lookup that missed
    bridges: set[int] = field(default_factory=set)           # the bridges the walk entered
    final: list[int] = field(default_factory=list)
    outputs: int = 0
    drop_reason: str = ""
    cut: dict[str, int] = field(default_factory=dict)        # resubmits / crossings not done: limit -> count
    groups: list[tuple[Group, int]] = field(default_factory=list)   # (group, bucket or -1: the group) per use
    learned: list[ctlearn.TableChange] = field(default_factory=list)   # learn / fin_timeout (``xlate.ctlearn``)
    no_cache: str = ""      # why the translation must not become a megaflow (a tunnel's neighbour unresolved, ...)

    def program(self) -> np.ndarray:
        """The actions as the datapath's int64 program."""
        return np.array(self.actions, dtype=np.int64)

    def mask_row(self) -> np.ndarray:
        """The mask as a key row."""
        return np.array(self.mask, dtype=np.uint64)


class _Walk(PortOutput):
    """The state of one translation."""

    def __init__(self, bridges: Bridges, bridge: int, port_flags: np.ndarray, cookies: UpcallCookies,
                 key: list[int], rec: Recorder | None) -> None:
        self.bridges = bridges
        self.bridge = bridge
        self.ts = bridges.tables[bridge] if 0 <= bridge < len(bridges.tables) else None
        self.port_flags = port_flags
        self.cookies = cookies
        self.flow = list(key[:K.KEY_WORDS]) + [0] * (F.FLOW_WORDS - K.KEY_WORDS)   # headers, then pipeline state
        self.base = list(key)           # headers as the emitted datapath actions leave the frame
        self.dirty = [0] * K.KEY_WORDS  # bits the actions wrote since the last commit
        self.written = [0] * K.KEY_WORDS  # bits the emitted SET_MASKED actions wrote
        self.rec = rec
        self.r = XlateResult()
        self.r.mask = [0] * F.FLOW_WORDS  # the key's part becomes the megaflow mask (``finish``)
        self.in_port = key[K.W_IN_PORT]
        self.rx_port = key[K.W_IN_PORT]
        self.r.mask[K.W_IN_PORT] = 0xFFFF_FFFF
        self.r.bridges.add(bridge)
        self.action_set: dict[str, Action] = {}
        self.depth = 0                  # patch crossings nested now
        self.nest = 0                   # resubmits and patch crossings nested now (<= MAX_DEPTH)
        self.crossings = 0              # resubmits and patch crossings so far (<= MAX_CROSSINGS)
        self.stack: list[int] = []      # the register stack (push / pop)
        self.exiting = False            # ``exit`` ran: every action list of this bridge's walk stops
        self.table_id = 0               # the table whose flow runs now (``resubmit``'s default)
        self.resubmit_nest = 0          # resubmits nested now (trace indentation)
        self.frames: list[list] = []    # [flow, index] of every action list running now, outermost first
        self.action_src: dict[str, tuple[int, int]] = {}   # action set slot -> (flow uid, write-actions index)
        self.paused = False             # controller(pause) froze the walk: nothing more runs
        self.can_freeze = True          # False while a packet-out's own actions run (no flow holds them)
        self.meter_marks = False        # the program charges meters (``translate`` only: not packet-outs)
        self.in_tunnel = False          # walking a tunnel's underlay bridge (``xlate.tunnel``)

    # ---------------------------------------------------------------- headers
    def tagged(self) -> bool:
        self.r.mask[K.W_VLAN_TCI] |= CFI
        return bool(self.flow[K.W_VLAN_TCI] & CFI)

    def set_word(self, w: int, value: int, bits: int) -> None:
        self.flow[w] = (self.flow[w] & ~bits) | (value & bits)
        self.dirty[w] |= bits

    def commit(self) -> None:
        """Emit the datapath actions that make the frame's headers what the flow state says."""
        r, flow, base, dirty = self.r, self.flow, self.base, self.dirty
        if dirty[K.W_VLAN_TCI] or dirty[W_VLAN_TCI2]:
            r.mask[K.W_VLAN_TCI] |= VLAN_WORD_BITS
            r.mask[W_VLAN_TCI2] |= VLAN_WORD_BITS
            self._commit_vlan()
            base[K.W_VLAN_TCI], base[W_VLAN_TCI2] = flow[K.W_VLAN_TCI], flow[W_VLAN_TCI2]
            dirty[K.W_VLAN_TCI] = dirty[W_VLAN_TCI2] = 0
        full = 0xFFFF_FFFF_FFFF
        if (dirty[K.W_ETH_DST] == full and dirty[K.W_ETH_SRC] == full and flow[K.W_ETH_DST] != base[K.W_ETH_DST]
                and flow[K.W_ETH_SRC] != base[K.W_ETH_SRC]):   # both MACs change: one action
            r.mask[K.W_ETH_DST] |= full
            r.mask[K.W_ETH_SRC] |= full
            r.actions += A.set_eth(flow[K.W_ETH_DST], flow[K.W_ETH_SRC])
            self.written[K.W_ETH_DST] |= full
            self.written[K.W_ETH_SRC] |= full
            base[K.W_ETH_DST], base[K.W_ETH_SRC] = flow[K.W_ETH_DST], flow[K.W_ETH_SRC]
            dirty[K.W_ETH_DST] = dirty[K.W_ETH_SRC] = 0
        for w in _COMMIT_WORDS:
            d = dirty[w]
            if d:
                r.mask[w] |= d
                if (flow[w] ^ base[w]) & d:
                    r.actions += A.set_masked(w, flow[w] & d, d)
                    self.written[w] |= d
                base[w] = (base[w] & ~d) | (flow[w] & d)
                dirty[w] = 0

    def _commit_vlan(self) -> None:
        tags_now = [t for t in (self.base[K.W_VLAN_TCI], self.base[W_VLAN_TCI2]) if t & CFI]
        tags_want = [t for t in (self.flow[K.W_VLAN_TCI], self.flow[W_VLAN_TCI2]) if t & CFI]
        if tags_now == tags_want:
            return
        # a changed tag is popped and pushed again, as OVS commits it (the new tag has DEI 0)
        acts = self.r.actions
        common = 0
        while (common < min(len(tags_now), len(tags_want))
               and tags_now[len(tags_now) - 1 - common] == tags_want[len(tags_want) - 1 - common]):
            common += 1
        for _ in range(len(tags_now) - common):
            acts += A.pop_vlan()
        for t in reversed(tags_want[:len(tags_want) - common]):
            acts += [A.OP_PUSH_VLAN, 2, (t >> 16) or ETH_VLAN, t & TCI_BITS]

    # ---------------------------------------------------------------- fields
    def unwildcard(self, fv: FieldValue, mask: int) -> None:
        """The answer depends on bits ``mask`` of field ``fv``: they go into the mask (key words only
        reach the megaflow)."""
        for w, m in fv.masks(mask):
            self.r.mask[w] |= m

    def read(self, fv: FieldValue, ofs: int, nbits: int) -> int:
        """Bits ``ofs .. ofs + nbits - 1`` of a field, un-wildcarded: whatever they are copied into
        (pipeline state, a header, the stack, an output port) depends on them."""
        mask = ((1 << nbits) - 1) << ofs
        self.unwildcard(fv, mask)
        if fv.word == K.W_IN_PORT:    # the OpenFlow number, not the datapath's
            return (self.of_port(self.flow[K.W_IN_PORT]) & mask) >> ofs
        return (fv.read(self.flow) & mask) >> ofs

    def traced(self, fv: FieldValue, ofs: int, nbits: int) -> int:
        """Bits ``ofs .. ofs + nbits - 1`` of a field as a trace shows them (nothing un-wildcarded)."""
        v = self.of_port(self.flow[K.W_IN_PORT]) if fv.word == K.W_IN_PORT else fv.read(self.flow)
        return v >> ofs & ((1 << nbits) - 1)

    def write(self, fv: FieldValue, value: int, mask: int) -> None:
        """``field = (field & ~mask) | value``: header words are committed as datapath actions, pipeline
        words and ``pkt_mark`` are translator state only."""
        if fv.bits <= 64:    # one word (most fields), written here without ``values``'s list
            m = mask & fv.field_mask
            w = fv.word
            if m and w >= K.KEY_WORDS:     # pipeline state (registers, metadata)
                m <<= fv.shift
                self.flow[w] = (self.flow[w] & ~m) | ((value << fv.shift) & m)
                return
        for w, v, m in fv.values(value, mask):
            if w == K.W_IN_PORT:      # an OpenFlow port number: the frame now comes from there
                cur = self.of_port(self.flow[w])
                port = ((0 if cur == NO_PORT else cur) & ~m) | v    # a port the bridge lacks reads as 0
                if m == 0xFFFF and port >= 0xFF00:                  # OpenFlow 1.0's reserved ports (16 bits)
                    port |= 0xFFFF0000
                self.flow[w] = self.in_port = self.dense(port)
            elif w < K.KEY_WORDS and w != K.W_PKT_MARK:
                self.set_word(w, v, m)
            else:
                self.flow[w] = (self.flow[w] & ~m) | v

    def prereqs_ok(self, name: str) -> bool:
        """Whether the frame, as the actions left it, has the header field ``name`` (its prerequisites,
        un-wildcarded as far as they were read)."""
        for fv, values, m in _prereq_checks(name):
            self.unwildcard(fv, m)
            if fv.read(self.flow) & m not in values:
                return False
        return True

    def set_field(self, name: str, value: int, mask: int | None) -> None:
        fv = FieldValue.of(name)
        if not self.prereqs_ok(name):
            if self.rec:
                self.rec.note(f"     -> {name}: the frame has no such header, skipped")
            return
        self.write(fv, value, (1 << fv.bits) - 1 if mask is None else mask)

    # ---------------------------------------------------------------- actions
    def do(self, a: Action) -> None:
        if isinstance(a, Output):
            self.output(a)
        elif isinstance(a, SetField):
            if a.field in _SET_WORD and a.mask is None:
                self.set_word(_SET_WORD[a.field], a.value, 0xFFFF_FFFF_FFFF)
            elif a.field not in ("vlan_vid", "vlan_pcp"):
                self.set_field(a.field, a.value, a.mask)
            elif self.tagged():
                if a.field == "vlan_vid":
                    self.set_word(K.W_VLAN_TCI, a.value, 0xFFF)
                else:   # vlan_pcp
                    self.set_word(K.W_VLAN_TCI, a.value << 13, 0xE000)
        elif isinstance(a, ModVlanVid):
            if self.tagged():
                self.set_word(K.W_VLAN_TCI, a.vid, 0xFFF)
            else:
                self.set_word(K.W_VLAN_TCI, CFI | a.vid | ETH_VLAN << 16, VLAN_WORD_BITS)
        elif isinstance(a, PushVlan):
            self.r.mask[W_VLAN_TCI2] |= CFI
            if self.flow[W_VLAN_TCI2] & CFI:
                if self.rec:
                    self.rec.note("     -> the frame has two VLAN tags already: push_vlan ignored")
                return
            outer = self.flow[K.W_VLAN_TCI]
            self.r.mask[K.W_VLAN_TCI] |= VLAN_WORD_BITS   # the new tag copies VID and PCP of the outer one
            self.set_word(W_VLAN_TCI2, outer, VLAN_WORD_BITS)
            self.set_word(K.W_VLAN_TCI, (outer & 0xEFFF) | CFI | a.ethertype << 16, VLAN_WORD_BITS)
        elif isinstance(a, PopVlan):
            if self.tagged():
                self.r.mask[W_VLAN_TCI2] |= VLAN_WORD_BITS
                self.set_word(K.W_VLAN_TCI, self.flow[W_VLAN_TCI2], VLAN_WORD_BITS)
                self.set_word(W_VLAN_TCI2, 0, VLAN_WORD_BITS)

    def act(self, a: Action, flow: Flow | None, table_id: int) -> bool:
        """Run one apply-action of ``flow`` (None: a packet-out's); False: the rest of its list is skipped."""
        t = type(a)   # the commonest first, by exact type (OVN's pipelines: resubmit and set_field / load)
        if t is Resubmit:
            self.resubmit(a)   # type: ignore[arg-type]
            return True
        if t is SetField or t is Load:
            self.do(a)
            return True
        rec = self.rec
        if isinstance(a, Output):
            self.output(a, flow, table_id)
        elif isinstance(a, Resubmit):
            self.resubmit(a)
        elif isinstance(a, Move):
            src, dst = FieldValue.of(a.src), FieldValue.of(a.dst)
            v = self.read(src, a.src_ofs, a.nbits)
            if not self.prereqs_ok(a.dst):
                if rec:
                    rec.note(f"     -> {a.dst}: the frame has no such header, skipped")
                return True
            self.write(dst, v << a.dst_ofs, ((1 << a.nbits) - 1) << a.dst_ofs)
            if rec:
                rec.subfield(a.dst, a.dst_ofs, a.nbits, self.traced(dst, a.dst_ofs, a.nbits))
        elif isinstance(a, StackPush):
            fv = FieldValue.of(a.field)
            n = fv.bits - a.ofs if a.nbits is None else a.nbits
            v = self.read(fv, a.ofs, n)
            if len(self.stack) >= STACK_DEPTH:
                if rec:
                    rec.note(f"     -> the stack holds {STACK_DEPTH} values: push ignored")
            else:
                self.stack.append(v)
        elif isinstance(a, StackPop):
            fv = FieldValue.of(a.field)
            n = fv.bits - a.ofs if a.nbits is None else a.nbits
            if not self.stack:
                if rec:
                    rec.note("     -> pop from an empty stack: nothing")
                return True
            v = self.stack.pop()
            m = (1 << n) - 1
            if not self.prereqs_ok(a.field):
                if rec:
                    rec.note(f"     -> {a.field}: the frame has no such header, skipped")
                return True
            self.write(fv, (v & m) << a.ofs, m << a.ofs)
            if rec:
                rec.subfield(a.field, a.ofs, n, self.traced(fv, a.ofs, n))
        elif isinstance(a, OutputReg):
            fv = FieldValue.of(a.field)
            n = fv.bits - a.ofs if a.nbits is None else a.nbits
            port = self.read(fv, a.ofs, n)
            if rec:
                rec.note(f"-> output port is {port}")
            if 0xFF00 <= port <= 0xFFFF:   # OpenFlow 1.0's reserved ports, as a 16-bit field holds them
                port += 0xFFFF0000
            self.output(Output(port, a.max_len), flow, table_id)
        elif isinstance(a, DecTtl):
            return self.dec_ttl(a, flow, table_id)
        elif isinstance(a, Clone):
            self.clone(a)
        elif isinstance(a, GroupAction):
            self.group(a.group_id)
        elif isinstance(a, Meter):
            self.meter(a.meter_id)
        elif isinstance(a, Exit):
            self.exiting = True
            return False
        elif isinstance(a, Controller):
            return pause.controller(self, a, flow, table_id)
        elif isinstance(a, (Note, Conjunction)):   # a conjunction runs only from a packet-out or a clone: nothing
            pass
        elif isinstance(a, Ct):
            ctlearn.reached(self)
        elif isinstance(a, CtClear):
            ctlearn.ct_clear(self)
        elif isinstance(a, Learn):
            ctlearn.learn(self, a, flow)
        elif isinstance(a, FinTimeout):
            ctlearn.fin_timeout(self, a, flow)
        else:
            self.do(a)
        return True

    def run_list(self, acts: tuple[Action, ...], flow: Flow | None, table_id: int, start: int = 0) -> bool:
        """Run an action list from index ``start``; False when it stopped early (``exit``, ``dec_ttl`` at TTL 1,
        a pause)."""
        rec = self.rec
        frame = [flow, start]
        frames = self.frames
        frames.append(frame)     # popped on every return (an exception abandons the whole walk)
        mark = rec.mark() if rec else None
        try:
            for i in range(start, len(acts)):
                a = acts[i]
                if self.exiting:
                    frames.pop()
                    return False
                frame[1] = i
                if rec:
                    rec.action(a, self.resubmit_nest)
                if not self.act(a, flow, table_id):
                    frames.pop()
                    return False
        except ctlearn.CtReached:
            if rec and frame[1] < len(acts) - 1:   # OVS's ct forks: the rest of this list would run after it
                rec.more(mark)
            raise
        frames.pop()
        return not self.exiting

    def dec_ttl(self, a: DecTtl, flow: Flow | None, table_id: int) -> bool:
        """OVS's ``dec_ttl``: a header write, or at TTL 0 / 1 a packet-in (invalid_ttl) and the rest of the
        list skipped."""
        r = self.r
        r.mask[K.W_ETH_TYPE] |= 0xFFFF
        if self.flow[K.W_ETH_TYPE] & 0xFFFF not in (0x0800, 0x86DD):
            return True
        r.mask[K.W_NW] |= 0xFF << 16
        ttl = self.flow[K.W_NW] >> 16 & 0xFF
        if ttl > 1:
            self.set_word(K.W_NW, (ttl - 1) << 16, 0xFF << 16)
            return True
        if self.rec:
            self.rec.note(f">> IPv{4 if self.flow[K.W_ETH_TYPE] & 0xFFFF == 0x0800 else 6} decrement TTL exception")
        self.upcall(flow, OFPR_INVALID_TTL, flow.table_id if flow is not None else table_id, OFPCML_NO_BUFFER)
        return False

    def restore(self, flow: list[int], wrote: list[int]) -> None:
        """Take back the flow state ``flow`` after a nested walk whose emitted header writes are ``wrote``:
        what that walk changed is set back at the next commit."""
        cur, kw = self.flow, K.KEY_WORDS
        if any(wrote) or flow[:kw] != cur[:kw]:
            written, dirty, base = self.written, self.dirty, self.base
            for w in [w for w in range(kw) if wrote[w] or flow[w] != cur[w]]:
                written[w] |= wrote[w]
                dirty[w] |= (flow[w] ^ base[w]) | wrote[w]
        self.flow = flow

    def clone(self, a: Clone) -> None:
        """Run ``a.actions`` on a copy: headers, pipeline state, the stack and ``exit`` come back as they were."""
        saved = (list(self.flow), list(self.stack), self.exiting, self.written)
        self.written = [0] * K.KEY_WORDS
        self.run_list(a.actions, None, self.table_id)
        wrote = self.written
        flow, self.stack, self.exiting, self.written = saved
        self.restore(flow, wrote)

    def meter(self, meter_id: int, skip: int = 0) -> None:
        """Meter ``meter_id`` of the bridge: ``METER(slot, gen, skip)``, the datapath charges each frame (over the
        rate: dropped, or with ``skip`` the next ``skip`` words skipped); a trace or a packet-out passes it."""
        m = self.ts.meters.get(meter_id) if self.ts is not None else None
        if m is None or m.slot < 0:
            return
        if self.rec is not None or not self.meter_marks:
            if self.rec is not None and not skip:    # a packet-in's meter: OVS's trace says nothing of it
                self.rec.note(f"     -> meter {meter_id}: each frame pays its token buckets (not traced)")
            return
        self.commit()
        self.r.actions += A.meter(m.slot, m.gen, skip)

    def group(self, group_id: int) -> None:
        """The ``group`` action (``xlate.groups``)."""
        run_group(self, group_id)

    def limited(self) -> bool:
        """True (and counted, and traced) when one more resubmit or patch crossing would pass OVS's limits."""
        cut = CUT_DEPTH if self.nest >= MAX_DEPTH else CUT_RESUBMITS if self.crossings >= MAX_CROSSINGS else ""
        if not cut:
            return False
        self.r.cut[cut] = self.r.cut.get(cut, 0) + 1
        if self.rec:
            self.rec.note(f"     -> over max translation depth {MAX_DEPTH}" if cut == CUT_DEPTH
                          else f"     -> over {MAX_CROSSINGS} resubmit actions and patch port crossings")
        return True


    def resubmit(self, a: Resubmit) -> None:
        """``resubmit(port,table)``: the tables from ``table`` (a goto chain), as if from ``port``; then back."""
        ts = self.ts
        if ts is None or ((self.nest >= MAX_DEPTH or self.crossings >= MAX_CROSSINGS) and self.limited()):
            return
        saved = self.table_id
        table = saved if a.table is None else a.table
        if table >= ts.n_tables:
            if self.rec:
                self.rec.note(f"     -> no table {table}")
            return
        port = a.port
        if port is not None:
            port = None if port == OFPP_IN_PORT else self.dense(port)
        deepens = table <= saved    # OVS counts depth only for a resubmit that goes back (or stays)
        self.nest += deepens
        self.crossings += 1
        self.resubmit_nest += 1
        if self.rec:
            self.rec.enter()
        self.tables(table, False, port)
        if self.rec:
            self.rec.leave()
        self.resubmit_nest -= 1
        self.nest -= deepens
        self.table_id = saved

    def enter(self) -> None:
        """Handle the frame in the current bridge as its mode says."""
        b = self.bridge
        mode = self.bridges.modes[b]
        if mode == MODE_TABLES and self.ts is not None:
            self.pipeline(0)
        elif mode == MODE_NORMAL:
            rank = self.bridges.normal_rank[b]
            if rank >= 0:
                self.r.ranks.append(rank)
                if self.rec and self.ts is not None:
                    self.rec.table(0, self.ts.flows[rank])
            if self.rec:
                self.rec.note("    NORMAL")
            self.normal()
        elif self.rec:
            self.rec.note("     -> the bridge is fail_mode=secure and has no flows: dropped")

    # ---------------------------------------------------------------- the walk
    def run_instructions(self, flow: Flow, start: int = 0) -> int | None:
        """Run ``flow``'s instructions (its apply-actions from index ``start``); the table its goto names (None:
        none, or the actions stopped)."""
        ins: Instructions = flow.instructions
        rec = self.rec
        if ins.apply:
            if not self.run_list(ins.apply, flow, flow.table_id, start):
                return None
        elif self.exiting:
            return None
        if not rec and not ins.write and ins.metadata is None and not ins.clear:   # apply (and goto) only
            return ins.goto
        if ins.clear:
            if rec:
                rec.note("clear_actions")
                if not self.action_set:
                    rec.note("-> action set was empty")
            self.action_set.clear()
        for j, a in enumerate(ins.write):
            slot = action_set_slot(a)
            self.action_set[slot] = a
            self.action_src[slot] = (flow.uid, j)
        if ins.write and rec:
            rec.note(f"write_actions({','.join(_fmt(a) for a in ins.write)})")
            rec.note("-> action set is: " + ",".join(_fmt(a) for a in action_set_order(self.action_set)))
        if ins.metadata is not None:
            value, mask = ins.metadata
            if rec:
                rec.note(f"write_metadata:{value:#x}/{mask:#x}")
            self.flow[F.W_METADATA] = (self.flow[F.W_METADATA] & ~mask) | value
        if ins.goto is not None and rec:
            rec.note(f"goto_table:{ins.goto}")
        return ins.goto

    def tables(self, table: int, top: bool, lookup_port: int | None = None) -> tuple[Flow | None, int] | None:
        """Look the frame up in ``table`` and the tables its flows go to; ``(the last flow, its table)``,
        or None when a lookup missed. ``top``: the bridge's pipeline (a miss ends it: a drop, or an
        OpenFlow 1.0 packet-in); else a resubmit's (a miss does nothing, or the 1.0 packet-in).
        ``lookup_port``: the first lookup's in_port (a datapath port; its flow's actions see the real one)."""
        ts, rec, r = self.ts, self.rec, self.r
        assert ts is not None
        last: Flow | None = None
        while True:
            self.table_id = table
            if lookup_port is not None:
                real, self.flow[K.W_IN_PORT] = self.flow[K.W_IN_PORT], lookup_port
                rank = ts.index[table].lookup(self.flow, r.mask)
                self.flow[K.W_IN_PORT], lookup_port = real, None
            else:
                rank = ts.index[table].lookup(self.flow, r.mask)
            if rank < 0:
                r.misses.append((self.bridge, table))
                if self.depth == 0 and top:
                    r.miss_table = table
                if rec:
                    rec.table(table, None)
                if ts.miss_max_len > 0:
                    if rec:
                        rec.note("     -> packet-in to the OpenFlow 1.0 controllers (table miss)")
                    self.upcall(None, OFPR_NO_MATCH, table, ts.miss_max_len)
                    if top:
                        self.action_set.clear()
                        return last, table
                elif rec:
                    rec.note("    drop")   # OVS's words for a miss, in a resubmit too
                if top and self.depth == 0:   # after a patch port, the first bridge's actions go on
                    r.drop_reason = f"flow_table_miss (no flow in table {table} matches)"
                    r.actions += A.drop(DR_TABLE_MISS)
                return None
            last = ts.flows[rank]
            r.ranks.append(rank)
            if rec:
                rec.table(table, last)
            nxt = self.run_instructions(last)
            if nxt is None or self.exiting:
                return last, table
            table = nxt

    def pipeline(self, table: int = 0) -> None:
        got = self.tables(table, top=True)
        if got is not None:
            self.run_action_set(*got)

    def run_action_set(self, last: Flow | None, table: int) -> None:
        """The action set, when the pipeline ends after ``last`` in ``table`` (not after a pause)."""
        rec = self.rec
        if self.action_set and not self.paused:
            if rec:
                rec.note("--. Executing action set:")
            for a in action_set_order(self.action_set):
                if rec:
                    rec.action(a, self.resubmit_nest)
                if isinstance(a, Output):
                    self.output(a, last, table)
                elif isinstance(a, GroupAction):
                    self.group(a.group_id)
                else:
                    self.do(a)

    def finish(self) -> XlateResult:
        r = self.r
        self.sync_rank_bridges()
        r.final = list(self.flow[:K.KEY_WORDS])
        r.mask = r.mask[:K.KEY_WORDS]    # pipeline words never reach the megaflow
        if not r.outputs and not r.drop_reason:
            r.drop_reason = "flow_no_output (the actions send the packet nowhere)"
        return r


DR_TABLE_MISS = A.DROP_REASONS.index("table_miss") if "table_miss" in A.DROP_REASONS else A.DR_EXPLICIT

_PREREQ_CHECKS: dict[str, tuple[tuple[FieldValue, tuple[int, ...], int], ...]] = {}


def _prereq_checks(name: str) -> tuple[tuple[FieldValue, tuple[int, ...], int], ...]:
    """Field ``name``'s prerequisites as ``(place, allowed values, mask)`` (cached per name)."""
    got = _PREREQ_CHECKS.get(name)
    if got is None:
        f = F.by_name(name) or F.by_oxm_name(name)
        got = tuple((fv, values, (1 << fv.bits) - 1 if cmask is None else cmask)
                    for cname, values, cmask in (f.prereqs if f is not None else ())
                    for fv in (FieldValue.of(cname),))
        _PREREQ_CHECKS[name] = got
    return got


def _bridges(ts: TableSet | Bridges, port_flags: np.ndarray) -> Bridges:
    return ts if isinstance(ts, Bridges) else Bridges.single(ts, len(port_flags))


def translate(ts: TableSet | Bridges, key: list[int], port_flags: np.ndarray, cookies: UpcallCookies,
              rec: Recorder | None = None) -> XlateResult:
    """Walk the tables for a frame with key words ``key`` (``in_port`` a datapath port): those of its
    bridge in ``Bridges``, or of the one ``TableSet`` given."""
    bridges = _bridges(ts, port_flags)
    w = _Walk(bridges, max(0, bridges.bridge_of(key[K.W_IN_PORT])), port_flags, cookies, key, rec)
    w.meter_marks = True
    try:
        w.enter()
    except ctlearn.CtReached:
        ctlearn.dropped(w)
    return w.finish()


def translate_actions(ts: TableSet | Bridges, key: list[int], actions: tuple[Action, ...], port_flags: np.ndarray,
                      cookies: UpcallCookies, rec: Recorder | None = None, bridge: int = 0) -> XlateResult:
    """A packet-out to bridge ``bridge``: run ``actions`` on a frame with key ``key``; ``output:TABLE``
    walks its tables from table 0."""
    w = _Walk(_bridges(ts, port_flags), bridge, port_flags, cookies, key, rec)
    w.can_freeze = False
    try:
        for a in actions:
            if isinstance(a, Output) and a.port == OFPP_TABLE:   # the only action: a pause in the tables can freeze
                w.commit()
                if w.ts is not None:
                    w.can_freeze = True
                    w.pipeline(0)
            elif not w.act(a, None, 0):
                break
    except ctlearn.CtReached:
        ctlearn.dropped(w)
    return w.finish()
