"""Plain-Python reference model of the OpenFlow pipeline the datapath runs: ``ofproto`` tables,
``xlate`` translation, ``dpif`` megaflows and flat actions, seen from outside.

Written from the rules (OpenFlow 1.3.5 sections 5 and 7, Open vSwitch's behaviour where OpenFlow
leaves a choice, and the conventions below), not from the translator: flows sit in a list and every
lookup scans it; a frame is a list of headers edited action by action, and every output is the
bytes that leave the port. There is no megaflow, no mask and no cache here: the tests run the same
flow-mods and frames through the datapath (``tests/test_xlate.py``) and this model and compare
outputs, the NORMAL list, packet-ins, drop counts, flow and table counters. Nothing here is fast.

Rules the two share (choices, not OpenFlow's):

* keys: a frame's fields are read with ``dpif.extract_ref`` (the datapath key, ``dpif.key``); an OXM
  field is compared against the key through ``FIELD_BITS`` below, this model's own table of where each
  field sits. ``in_port`` matches the OpenFlow number of the ingress port (``port_map``: OpenFlow
  number -> datapath port; ``None``: the same numbers). ``arp_op`` is kept in 8 bits, as OVS keeps it
  in ``nw_proto``: the high byte of an ``arp_op`` value or mask is ignored;
* ties between matching flows of equal priority: the flow added first (lowest serial) wins;
* conjunctive flows (``conjunction(id,k/n)`` actions) are never selected themselves: a lookup finds the
  best ordinary flow, unless a conjunction of a higher priority has a matching flow in every clause and
  the lookup again with ``conj_id`` = its id finds a flow (that one, then); a conjunction of n clauses
  needs n matching clause flows of its priority (OVS counts flows); two conjunctions satisfied at one
  priority are tried in id order (OVS leaves it unpredictable);
* a frame is ``dst, src, up to two known VLAN tags (TPID 0x8100 or 0x88a8), rest``, as OVS parses
  it: a third tag is part of the rest and stays there whatever the actions do. ``pop_vlan`` and
  ``set_field vlan_vid / vlan_pcp`` on a frame without a known tag do nothing; ``push_vlan`` on a frame
  with two known tags does nothing; a pushed tag copies the VID and PCP of the outer tag (VID 0,
  PCP 0 on a frame without a tag); OpenFlow 1.0's ``mod_vlan_vid`` gives a frame without a tag an
  802.1Q tag with that VID and PCP 0;
* VLAN changes reach the bytes as OVS commits them: when the frame is output (to a port, NORMAL or
  the controllers), its tags, compared without the DEI bit (the key has none), are matched up from
  the innermost with the tags the bytes carry: the unchanged innermost ones keep their bytes (DEI
  included), every other tag is written anew with DEI 0;
* later tables match the headers as modified by apply-actions (MACs, VLAN tags);
* OUTPUT to the ingress port (other than through OFPP_IN_PORT, LOCAL included), to a down or
  unknown port does nothing; FLOOD skips the ingress, down and no-flood ports, ALL the ingress and
  down ones; LOCAL is the first port with ``PF_LOCAL``; output:TABLE in a flow does nothing;
* a table miss ends the pipeline (the action set is not run): a ``table_miss`` drop, or, compiled with
  ``miss_max_len`` > 0 (an OpenFlow 1.0 controller), a packet-in (``OFPR_NO_MATCH``, no flow, that
  table, ``miss_max_len`` bytes) of the frame as the actions left it;
* a packet-in's reason is ``OFPR_NO_MATCH`` when the flow that sent it is a table-miss flow (priority
  0, empty match), else ``OFPR_ACTION``; its table is that flow's;
* drops, named by ``dpif.actions.DROP_REASONS``, are events by ingress port (frames of no port, a
  packet-out from the controller, count in the row after the last port): ``rx_invalid`` (runt or
  truncated tag: not looked up, no counter moves), ``table_miss`` and ``no_output`` (the pipeline
  ended without a single output that took: to a port, NORMAL or the controllers) once per frame;
  ``queue_full`` once per port output or NORMAL that did not fit (a port queue holds ``qcap`` frames
  a burst, the NORMAL list ``cap``), ``controller_queue_full`` once per packet-in that did not fit
  (``cap``);
* counters: every lookup counts in its table, every match in its table and its flow (packets, the
  frame's length as received, last used = now); a packet-out's walk through the tables (output:TABLE)
  counts nothing (the datapath runs it without a megaflow, so nothing is credited);
* ``ct``, ``ct_clear``, ``learn``: as ``xlate.reference_ct`` says (a ``conntrack_unavailable`` drop ends the
  walk; learned flows go in after the frame);
* a packet-out runs its actions on the frame as if received on its in_port (None: the controller, no
  port, so no output is "to the input port"); output:TABLE walks the tables from table 0.
"""

from __future__ import annotations

import copy
import struct
from dataclasses import dataclass, field

from dpif import actions_ref as AR
from dpif import key as K
from dpif.actions import DROP_REASONS
from dpif.extract_ref import extract
from ofproto import rules as R
from ofproto.actionset import ACTION_SET_ORDER
from xlate import reference_ct as RC
from xlate.reference_fields import (  # noqa: F401 - importable from here, as before the split
    ACTION_FIELDS,
    FIELD_BITS,
    HEADER_PREREQS,
    IP_TYPES,
    MAX_DEPTH,
    MAX_RESUBMITS,
    ND_TYPES,
    OXM_BITS,
    PF_DOWN,
    PF_LOCAL,
    PF_NO_FLOOD,
    STACK_DEPTH,
    TPIDS,
    WIDE_FIELDS,
    Pipe,
    covers,
    field_value,
    is_pipeline,
    matches,
    overlap,
)


def conjunctions(f: RefFlow) -> list[R.Conjunction]:
    """The flow's top-level ``conjunction`` actions: it is a clause of each of those conjunctions."""
    return [a for a in f.instructions.apply if isinstance(a, R.Conjunction)]


def action_kind(a: R.Action) -> str:
    """The action-set slot a write-action takes."""
    if isinstance(a, R.PopVlan):
        return "pop"
    if isinstance(a, R.PushVlan):
        return "push"
    if isinstance(a, R.SetField):
        return a.field
    if isinstance(a, R.ModVlanVid):
        return "vlan_vid"
    return "output"


@dataclass(eq=False)
class RefFlow:
    """A flow entry of the reference, with its counters."""

    table_id: int
    priority: int
    match: R.Match
    instructions: R.Instructions
    cookie: int
    idle_timeout: int
    hard_timeout: int
    flags: int
    serial: int
    installed: int
    packets: int = 0
    bytes: int = 0
    last_used: int = -1

    def ident(self) -> tuple[int, int, R.Match]:
        """(table, priority, match): unique among installed flows."""
        return self.table_id, self.priority, self.match

    @property
    def is_table_miss(self) -> bool:
        return self.priority == 0 and not self.match.fields


@dataclass
class Tag:
    """A VLAN tag as the key sees it (no DEI bit)."""

    tpid: int
    vid: int
    pcp: int

    def key_word(self) -> int:
        return self.vid | K.VLAN_CFI | self.pcp << 13 | self.tpid << 16


@dataclass
class Packet:
    """A frame as the actions see it: the headers they change, and the tags its bytes carry."""

    dst: int
    src: int
    tags: list[Tag]                     # what the actions made of the known tags, outermost first
    wire: list[tuple[int, int]]         # (TPID, TCI) the bytes carry, outermost first (DEI included)
    rest: bytes                         # ethertype and payload after the known tags

    def commit(self) -> None:
        """Bring the bytes' tags in line with ``tags`` the way OVS does (see the module docstring)."""
        have, want = self.wire, self.tags
        common = 0
        while common < min(len(have), len(want)):
            tpid, tci = have[len(have) - 1 - common]
            if Tag(tpid, tci & 0xFFF, tci >> 13) != want[len(want) - 1 - common]:
                break
            common += 1
        fresh = [(t.tpid, t.vid | t.pcp << 13) for t in want[: len(want) - common]]
        self.wire = fresh + have[len(have) - common :]

    def to_bytes(self) -> bytes:
        self.commit()
        tags = b"".join(struct.pack("!HH", tpid, tci) for tpid, tci in self.wire)
        return self.dst.to_bytes(6, "big") + self.src.to_bytes(6, "big") + tags + self.rest


def parse_packet(frame: bytes) -> Packet:
    """The headers of a frame extraction accepted: MACs, up to two known tags, the rest."""
    wire = []
    o = 12
    while len(wire) < 2 and int.from_bytes(frame[o : o + 2], "big") in TPIDS:
        wire.append((int.from_bytes(frame[o : o + 2], "big"), int.from_bytes(frame[o + 2 : o + 4], "big")))
        o += 4
    return Packet(int.from_bytes(frame[0:6], "big"), int.from_bytes(frame[6:12], "big"),
                  [Tag(tpid, tci & 0xFFF, tci >> 13) for tpid, tci in wire], wire, frame[o:])


@dataclass
class PacketIn:
    """A packet-in: the frame as the actions left it (the controllers get ``max_len`` bytes of it)."""

    frame: bytes
    in_port: int
    reason: int
    table_id: int
    flow: RefFlow | None      # None: a table miss sent to OpenFlow 1.0 controllers
    max_len: int

    def cookie(self) -> int | None:
        return self.flow.cookie if self.flow is not None else None


@dataclass
class RefResult:
    """What one burst produced: frames per port, the NORMAL list ``(frame, in_port)``, packet-ins."""

    outputs: dict[int, list[bytes]]
    normal: list[tuple[bytes, int]] = field(default_factory=list)
    packet_in: list[PacketIn] = field(default_factory=list)


class RefTables:
    """Flow tables and the pipeline, the slow and obvious way.

    ``port_map``: OpenFlow port number -> datapath port (None: the same numbers); ``miss_max_len`` > 0:
    table misses go to the controllers. Both as ``FlowTables.compile`` takes them.
    """

    def __init__(self, n_tables: int, port_map: dict[int, int] | None = None, miss_max_len: int = 0) -> None:
        self.n_tables = n_tables
        self.port_map = port_map
        self.miss_max_len = miss_max_len
        self.flows: list[RefFlow] = []
        self.serial = 0
        self.lookups = [0] * n_tables
        self.matched = [0] * n_tables
        self.drops: dict[tuple[int, str], int] = {}
        self.learned_by: dict[int, set[tuple[int, int, R.Match]]] = {}   # id(owner) -> flows it learned

    # ------------------------------------------------------------ flow-mods
    def add(self, flow: R.Flow, now: int = 0) -> RefFlow:
        """ADD: replace the flow with the same table, priority and match (counters kept unless RESET_COUNTS)."""
        if flow.flags & R.OFPFF_CHECK_OVERLAP:
            for f in self.flows:
                if (f.table_id == flow.table_id and f.priority == flow.priority and f.match != flow.match
                        and overlap(f.match, flow.match)):
                    raise R.FlowError("overlap", "overlapping flow")
        old = [f for f in self.flows if f.ident() == (flow.table_id, flow.priority, flow.match)]
        self.serial += 1
        new = RefFlow(flow.table_id, flow.priority, flow.match, flow.instructions, flow.cookie, flow.idle_timeout,
                      flow.hard_timeout, flow.flags, self.serial, now, last_used=now)
        for f in old:
            self.flows.remove(f)
            if not flow.flags & R.OFPFF_RESET_COUNTS:
                new.packets, new.bytes, new.last_used = f.packets, f.bytes, max(f.last_used, now)
        self.flows.append(new)
        return new

    def select(self, table_id: int, match: R.Match, priority: int, strict: bool, out_port: int = R.OFPP_ANY,
               cookie: int = 0, cookie_mask: int = 0) -> list[RefFlow]:
        """The flows a modify/delete/stats request names."""
        out = []
        for f in self.flows:
            if table_id != R.OFPTT_ALL and f.table_id != table_id:
                continue
            if strict:
                if f.priority != priority or f.match != match:
                    continue
            elif not covers(match, f.match):
                continue
            if f.cookie & cookie_mask != cookie & cookie_mask:
                continue
            if out_port != R.OFPP_ANY:
                ports = [a.port for a in f.instructions.apply + f.instructions.write if isinstance(a, R.Output)]
                if out_port not in ports:
                    continue
            out.append(f)
        return out

    def modify(self, table_id: int, match: R.Match, priority: int, strict: bool, cookie: int, cookie_mask: int,
               instructions: R.Instructions, reset_counts: bool = False) -> list[RefFlow]:
        """MODIFY(_STRICT): new instructions for the selected flows."""
        chosen = self.select(table_id, match, priority, strict, R.OFPP_ANY, cookie, cookie_mask)
        for f in chosen:
            f.instructions = instructions
            if reset_counts:
                f.packets = f.bytes = 0
        return chosen

    def delete(self, table_id: int, match: R.Match, priority: int, strict: bool, out_port: int, cookie: int,
               cookie_mask: int) -> list[RefFlow]:
        """DELETE(_STRICT): remove and return the selected flows (and what they learned with delete_learned)."""
        chosen = self.select(table_id, match, priority, strict, out_port, cookie, cookie_mask)
        self.flows = [f for f in self.flows if f not in chosen]
        return chosen + self._gone_learners(chosen)

    def learn(self, flow: R.Flow, owner: RefFlow | None, delete_learned: bool, now: int) -> None:
        """A flow ``learn`` made (``reference_ct.learn``)."""
        RC.learn(self, flow, owner, delete_learned, now)

    def _gone_learners(self, gone: list[RefFlow]) -> list[RefFlow]:
        return RC.gone_learners(self, gone)

    def expire(self, now: int) -> list[tuple[RefFlow, int]]:
        """Remove flows past their hard or idle timeout."""
        gone = []
        for f in list(self.flows):
            if f.hard_timeout and now - f.installed >= f.hard_timeout:
                gone.append((f, R.OFPRR_HARD_TIMEOUT))
            elif f.idle_timeout and now - max(f.last_used, f.installed) >= f.idle_timeout:
                gone.append((f, R.OFPRR_IDLE_TIMEOUT))
            else:
                continue
            self.flows.remove(f)
        return gone + [(f, R.OFPRR_DELETE) for f in self._gone_learners([f for f, _r in gone])]

    # ------------------------------------------------------------ the pipeline
    def lookup(self, table_id: int, key: list[int], pipe: Pipe | None = None) -> RefFlow | None:
        """The flow a table's lookup selects (ovs-fields(7), "Conjunctive Match Fields"): the best ordinary
        flow that matches, unless a conjunction of a higher priority is satisfied (a matching flow in each of
        its clauses) and the table, looked up again with ``conj_id`` = its id, has a flow for it. Higher
        priorities first; at one priority, conjunctions in id order."""
        pipe = pipe or Pipe()
        best = self.best(table_id, key, pipe)
        floor = best.priority if best is not None else -1
        clauses = [f for f in self.flows if f.table_id == table_id and conjunctions(f) and f.priority > floor
                   and matches(f.match, key, pipe)]
        for priority in sorted({f.priority for f in clauses}, reverse=True):
            here = [c for f in clauses if f.priority == priority for c in conjunctions(f)]
            for cid in sorted({c.id for c in here}):
                n_clauses = {c.n_clauses for c in here if c.id == cid}
                n_flows = len([f for f in clauses if f.priority == priority])   # OVS needs a flow per clause
                if any({c.clause for c in here if c.id == cid and c.n_clauses == n} == set(range(1, n + 1))
                       and n_flows >= n for n in n_clauses):
                    found = self.best(table_id, key, Pipe(pipe.regs, pipe.metadata, cid), hide_shadowed=True)
                    if found is not None:
                        return found
        return best

    def best(self, table_id: int, key: list[int], pipe: Pipe, hide_shadowed: bool = False) -> RefFlow | None:
        """The highest-priority matching flow of a table that is not a conjunction's clause; the earliest
        added among equals. ``hide_shadowed`` (the conj_id lookup): not a flow with the match of a
        conjunctive flow of a higher priority (OVS's classifier does not see those there)."""
        best = None
        for f in self.flows:
            if hide_shadowed and any(g.table_id == table_id and conjunctions(g) and g.match == f.match
                                     and g.priority > f.priority for g in self.flows):
                continue
            if f.table_id == table_id and not conjunctions(f) and matches(f.match, key, pipe):
                if best is None or (f.priority, -f.serial) > (best.priority, -best.serial):
                    best = f
        return best

    def of_port(self, dense: int) -> int:
        """The OpenFlow number of datapath port ``dense`` (a number no flow matches when it has none)."""
        if self.port_map is None:
            return dense
        for of, d in self.port_map.items():
            if d == dense:
                return of
        return R.NO_PORT

    def _dense(self, of: int) -> int | None:
        if self.port_map is None:
            return of
        return self.port_map.get(of)

    def _drop(self, port: int, reason: str) -> None:
        assert reason in DROP_REASONS, reason
        self.drops[(port, reason)] = self.drops.get((port, reason), 0) + 1

    def process(self, frames: list[tuple[bytes, int]], port_flags: list[int], now: int, qcap: int,
                cap: int) -> RefResult:
        """Run a burst of (frame, datapath in_port) through the tables: port queues hold ``qcap`` frames,
        the NORMAL and packet-in lists ``cap``."""
        res = RefResult({p: [] for p in range(len(port_flags))})
        for frame, in_port in frames:
            key, reason = extract(frame, in_port)
            if reason:
                self._drop(in_port, "rx_invalid")
                continue
            w = _Walk(self, res, frame, in_port, [int(w) for w in key], port_flags, now, qcap, cap)
            w.pipeline(0)
            for flow, owner, delete_learned in w.learned:
                self.learn(flow, owner, delete_learned, now)
        return res

    def packet_out(self, frame: bytes, in_port: int | None, actions: tuple[R.Action, ...], port_flags: list[int],
                   now: int, qcap: int, cap: int) -> RefResult:
        """A packet-out of ``frame`` as if received on datapath port ``in_port`` (None: from the controller,
        on no port: it counts drops in the row after the last port); ``output:TABLE`` runs the tables."""
        port = len(port_flags) if in_port is None else in_port
        res = RefResult({p: [] for p in range(len(port_flags))})
        key, reason = extract(frame, port)
        if reason:
            self._drop(port, "rx_invalid")
            return res
        w = _Walk(self, res, frame, port, [int(x) for x in key], port_flags, now, qcap, cap, count=False)
        try:
            for a in actions:
                if isinstance(a, R.Output) and a.port == R.OFPP_TABLE:
                    w.tables(0)
                elif not w.do(a, None, 0):
                    break
        except RC.CtReached:
            w.ct_reached = True
        w.finish()
        for flow, owner, delete_learned in w.learned:
            self.learn(flow, owner, delete_learned, now)
        return res


class _Walk:
    """One frame's way through the tables (or a packet-out's actions)."""

    def __init__(self, ref: RefTables, res: RefResult, frame: bytes, in_port: int, key: list[int],
                 port_flags: list[int], now: int, qcap: int, cap: int, count: bool = True) -> None:
        self.ref, self.res, self.in_port, self.key = ref, res, in_port, key
        self.length = len(frame)
        self.pkt = parse_packet(frame)
        self.port_flags, self.now, self.qcap, self.cap = port_flags, now, qcap, cap
        self.count = count        # a packet-out's walk through the tables moves no counter
        key[K.W_IN_PORT] = ref.of_port(in_port)
        self.action_set: dict[str, R.Action] = {}
        self.sent = 0
        self.missed = False
        self.pipe = Pipe()
        self.rx_port = in_port
        self.stack: list[int] = []
        self.exiting = False
        self.depth = 0            # nested resubmits that went back to (or stayed in) a table
        self.resubmits = 0
        self.table = 0            # the table whose flow runs now
        self.cut: dict[str, int] = {}
        self.ct_reached = False
        self.learned: list[tuple[R.Flow, RefFlow | None, bool]] = []

    def sync_vlan(self) -> None:
        tags = self.pkt.tags
        self.key[K.W_VLAN_TCI] = tags[0].key_word() if tags else 0
        self.key[K.W_VLAN_TCI2] = tags[1].key_word() if len(tags) > 1 else 0

    # ------------------------------------------------------------ fields
    def get(self, name: str) -> int:
        if is_pipeline(name):
            return self.pipe.get(name)
        word, low, bits = ACTION_FIELDS[name]
        if bits == 128:
            return self.key[word] << 64 | self.key[word + 1]
        return self.key[word] >> low & ((1 << bits) - 1)

    def bits(self, name: str) -> int:
        if is_pipeline(name):
            return OXM_BITS[name]
        return ACTION_FIELDS[name][2]

    def has_header(self, name: str) -> bool:
        if name not in HEADER_PREREQS:
            return True
        types, proto = HEADER_PREREQS[name]
        if name in ND_TYPES and (self.key[K.W_TP] & 0xFF not in ND_TYPES[name] or self.key[K.W_TP] >> 16 & 0xFF):
            return False
        return self.key[K.W_ETH_TYPE] in types and (proto is None or self.key[K.W_NW] & 0xFF == proto)

    def set(self, name: str, value: int, mask: int) -> None:
        """``name = (name & ~mask) | (value & mask)``: pipeline state, the key, and the frame's bytes."""
        if not self.has_header(name):
            return
        if is_pipeline(name):
            self.pipe.set(name, value, mask)
            return
        word, low, bits = ACTION_FIELDS[name]
        if bits == 128:               # two words, high first
            for j, sh in ((0, 64), (1, 0)):
                m64 = mask >> sh & (1 << 64) - 1
                if m64:
                    self.set_word(word + j, value >> sh & m64, m64)
            return
        mask &= (1 << bits) - 1        # arp_op: 16 bits written, the low 8 kept
        self.set_word(word, (value & mask) << low, mask << low, name)

    def set_word(self, word: int, v: int, m: int, name: str = "") -> None:
        """Key word ``word`` = (old & ~m) | v, in the frame's bytes too."""
        if name == "in_port":
            of = (self.key[word] & ~m) | v
            self.key[word] = of
            dense = self.ref._dense(of)
            self.in_port = -1 if dense is None else dense
            return
        self.key[word] = (self.key[word] & ~m) | v
        pkt = self.pkt
        if word == K.W_ETH_DST:
            pkt.dst = self.key[word]
        elif word == K.W_ETH_SRC:
            pkt.src = self.key[word]
        elif word != K.W_PKT_MARK:
            f = bytearray(pkt.dst.to_bytes(6, "big") + pkt.src.to_bytes(6, "big") + pkt.rest)
            AR.set_masked(f, word, v, m)
            pkt.rest = bytes(f[12:])

    # ------------------------------------------------------------ actions
    def do(self, a: R.Action, flow: RefFlow | None, table: int) -> bool:
        """One action; False: the rest of the list is skipped."""
        if isinstance(a, R.Resubmit):
            self.resubmit(a)
        elif isinstance(a, R.Move):
            v = self.get(a.src) >> a.src_ofs & ((1 << a.nbits) - 1)
            self.set(a.dst, v << a.dst_ofs, ((1 << a.nbits) - 1) << a.dst_ofs)
        elif isinstance(a, R.StackPush):
            n = self.bits(a.field) - a.ofs if a.nbits is None else a.nbits
            if len(self.stack) < STACK_DEPTH:
                self.stack.append(self.get(a.field) >> a.ofs & ((1 << n) - 1))
        elif isinstance(a, R.StackPop):
            n = self.bits(a.field) - a.ofs if a.nbits is None else a.nbits
            if self.stack:
                v = self.stack.pop() & ((1 << n) - 1)
                self.set(a.field, v << a.ofs, ((1 << n) - 1) << a.ofs)
        elif isinstance(a, R.OutputReg):
            n = self.bits(a.field) - a.ofs if a.nbits is None else a.nbits
            port = self.get(a.field) >> a.ofs & ((1 << n) - 1)
            self.output(port + 0xFFFF0000 if 0xFF00 <= port <= 0xFFFF else port, a.max_len, flow, table)
        elif isinstance(a, R.DecTtl):
            if self.key[K.W_ETH_TYPE] in IP_TYPES:
                ttl = self.key[K.W_NW] >> 16 & 0xFF
                if ttl <= 1:
                    self.packet_in(2, flow.table_id if flow is not None else table, flow, 0xFFFF)
                    return False
                self.set("nw_ttl", ttl - 1, 0xFF)
        elif isinstance(a, R.Clone):
            saved = (copy.deepcopy(self.pkt), list(self.key), copy.deepcopy(self.pipe), list(self.stack),
                     self.in_port)
            self.run(a.actions, None, self.table)
            self.pkt, self.key, self.pipe, self.stack, self.in_port = saved
            self.exiting = False
        elif isinstance(a, R.Exit):
            self.exiting = True
            return False
        elif isinstance(a, (R.Note, R.Conjunction)):   # run only from a packet-out or a clone: nothing
            pass
        elif isinstance(a, R.Ct):
            raise RC.CtReached
        elif isinstance(a, R.FinTimeout):
            RC.fin_timeout(self.key, a, flow)
        elif isinstance(a, R.CtClear):
            for w in RC.CT_KEY_WORDS:
                self.key[w] = 0
        elif isinstance(a, R.Learn):
            try:
                self.learned.append((RC.learned_flow(self, a), flow, a.delete_learned))
            except R.FlowError:
                pass          # a match no flow can have: nothing learned
        elif isinstance(a, R.SetField) and a.field not in ("eth_dst", "eth_src", "vlan_vid", "vlan_pcp"):
            self.set(a.field, a.value, (1 << self.bits(a.field)) - 1 if a.mask is None else a.mask)
        elif isinstance(a, R.SetField) and a.mask is not None:
            self.set(a.field, a.value, a.mask)
        else:
            self.do_openflow(a, flow, table)
        return True

    def run(self, acts: tuple[R.Action, ...], flow: RefFlow | None, table: int) -> bool:
        """An action list; False when it stopped early."""
        for a in acts:
            if self.exiting or not self.do(a, flow, table):
                return False
        return not self.exiting

    def resubmit(self, a: R.Resubmit) -> None:
        table = self.table if a.table is None else a.table
        deepens = table <= self.table
        if self.depth >= MAX_DEPTH:
            self.cut["recursion_too_deep"] = self.cut.get("recursion_too_deep", 0) + 1
            return
        if self.resubmits >= MAX_RESUBMITS:
            self.cut["too_many_resubmits"] = self.cut.get("too_many_resubmits", 0) + 1
            return
        if table >= self.ref.n_tables:
            return
        saved = self.table
        self.resubmits += 1
        self.depth += deepens
        port = None if a.port is None or a.port == R.OFPP_IN_PORT else a.port
        self.chain(table, top=False, lookup_port=port)
        self.depth -= deepens
        self.table = saved

    def do_openflow(self, a: R.Action, flow: RefFlow | None, table: int) -> None:
        pkt = self.pkt
        if isinstance(a, R.Output):
            self.output(a.port, a.max_len, flow, table)
        elif isinstance(a, R.PushVlan):
            if len(pkt.tags) < 2:
                outer = pkt.tags[0] if pkt.tags else Tag(0, 0, 0)
                pkt.tags.insert(0, Tag(a.ethertype, outer.vid, outer.pcp))
                self.sync_vlan()
        elif isinstance(a, R.PopVlan):
            if pkt.tags:
                pkt.tags.pop(0)
                self.sync_vlan()
        elif isinstance(a, R.ModVlanVid):
            if pkt.tags:
                pkt.tags[0].vid = a.vid
            else:
                pkt.tags.insert(0, Tag(0x8100, a.vid, 0))
            self.sync_vlan()
        elif isinstance(a, R.SetField):
            if a.field == "eth_dst":
                pkt.dst = self.key[K.W_ETH_DST] = a.value
            elif a.field == "eth_src":
                pkt.src = self.key[K.W_ETH_SRC] = a.value
            elif pkt.tags:
                if a.field == "vlan_vid":
                    pkt.tags[0].vid = a.value & 0xFFF
                else:
                    pkt.tags[0].pcp = a.value
                self.sync_vlan()

    def output(self, port: int, max_len: int, flow: RefFlow | None, table: int) -> None:
        ref, res, in_port, flags = self.ref, self.res, self.in_port, self.port_flags
        if port == R.OFPP_NORMAL:
            if in_port != self.rx_port and not 0 <= in_port < len(flags):
                return    # in_port was set to a port the bridge lacks: NORMAL has no input port
            if len(res.normal) < self.cap:
                res.normal.append((self.pkt.to_bytes(), in_port))
                self.sent += 1
            else:
                ref._drop(in_port, "queue_full")
            return
        if port == R.OFPP_CONTROLLER:
            reason = R.OFPR_NO_MATCH if flow is not None and flow.is_table_miss else R.OFPR_ACTION
            self.packet_in(reason, flow.table_id if flow is not None else table, flow, max_len)
            return
        if port in (R.OFPP_FLOOD, R.OFPP_ALL):
            skip = PF_DOWN | (PF_NO_FLOOD if port == R.OFPP_FLOOD else 0)
            targets = [q for q in range(len(flags)) if q != in_port and not flags[q] & skip]
        elif port == R.OFPP_IN_PORT:
            targets = [in_port]
        elif port == R.OFPP_TABLE:
            targets = []
        else:
            if port == R.OFPP_LOCAL:
                q = next((p for p, fl in enumerate(flags) if fl & PF_LOCAL), None)
            else:
                q = self.ref._dense(port)
            targets = [] if q is None or q == in_port else [q]
        for q in targets:
            if not 0 <= q < len(flags) or flags[q] & PF_DOWN:
                continue
            if len(res.outputs[q]) < self.qcap:
                res.outputs[q].append(self.pkt.to_bytes())
                self.sent += 1
            else:
                ref._drop(in_port, "queue_full")

    def packet_in(self, reason: int, table: int, flow: RefFlow | None, max_len: int) -> None:
        if len(self.res.packet_in) < self.cap:
            self.res.packet_in.append(PacketIn(self.pkt.to_bytes(), self.in_port, reason, table, flow, max_len))
            self.sent += 1
        else:
            self.ref._drop(self.in_port, "controller_queue_full")

    def tables(self, table: int) -> None:
        """The tables from ``table`` on, then the action set."""
        got = self.chain(table, top=True)
        if got is None:
            return
        last, table = got
        kinds = [k for k in ACTION_SET_ORDER[:-1] if k in self.action_set]
        kinds += [k for k in self.action_set if k not in ACTION_SET_ORDER]
        kinds += ["output"] if "output" in self.action_set else []
        for kind in kinds:
            self.do(self.action_set[kind], last, table)

    def chain(self, table: int, top: bool, lookup_port: int | None = None) -> tuple[RefFlow | None, int] | None:
        """Lookups from ``table`` along goto; (last flow, its table), None after a miss. A miss ends the
        pipeline (``top``) or just the resubmit; ``lookup_port``: the first lookup's in_port (OpenFlow number)."""
        ref = self.ref
        last: RefFlow | None = None
        while True:
            self.table = table
            if lookup_port is not None:
                real, self.key[K.W_IN_PORT] = self.key[K.W_IN_PORT], lookup_port
                flow = ref.lookup(table, self.key, self.pipe)
                self.key[K.W_IN_PORT], lookup_port = real, None
            else:
                flow = ref.lookup(table, self.key, self.pipe)
            if self.count:
                ref.lookups[table] += 1
            if flow is None:
                if ref.miss_max_len > 0:
                    self.packet_in(R.OFPR_NO_MATCH, table, None, ref.miss_max_len)
                    return None
                if top:
                    self.missed = True
                return None
            last = flow
            if self.count:
                ref.matched[table] += 1
                flow.packets += 1
                flow.bytes += self.length
                flow.last_used = self.now
            ins = flow.instructions
            if not self.run(ins.apply, flow, table):
                return last, table
            if ins.clear:
                self.action_set.clear()
            for a in ins.write:
                self.action_set[action_kind(a)] = a
            if ins.metadata is not None:
                self.pipe.set("metadata", *ins.metadata)
            if ins.goto is None:
                return last, table
            table = ins.goto

    def pipeline(self, table: int) -> None:
        try:
            self.tables(table)
        except RC.CtReached:
            self.ct_reached = True
        self.finish()

    def finish(self) -> None:
        if self.ct_reached:
            self.ref._drop(self.in_port, "conntrack_unavailable")
        elif self.missed:
            self.ref._drop(self.in_port, "table_miss")
        elif self.sent == 0:
            self.ref._drop(self.in_port, "no_output")
