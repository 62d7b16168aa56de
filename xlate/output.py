"""Where a translated packet goes: outputs to ports (``output``, ``FLOOD``, ``ALL``, ``IN_PORT``, ``LOCAL``),
``NORMAL``, packet-ins to the controllers, and patch ports, whose output continues the walk in the peer's
bridge and comes back (OVS's ``patch_port_output``). A part of the translator's walk (``xlate.translate``)."""

from __future__ import annotations

from dpif import actions as A
from dpif import key as K
from ofproto import fields as F
from ofproto.rules import (
    NO_PORT,
    OFPP_ALL,
    OFPP_CONTROLLER,
    OFPP_FLOOD,
    OFPP_IN_PORT,
    OFPP_LOCAL,
    OFPP_MAX,
    OFPP_NORMAL,
    OFPP_TABLE,
    OFPR_ACTION,
    OFPR_NO_MATCH,
    Flow,
    Output,
)
from xlate import pause
from xlate.bridges import PF_DOWN, PF_LOCAL, PF_NO_FLOOD, PF_PATCH, PF_TUNNEL
from xlate.cookies import Upcall
from xlate.tunnel import tunnel_output


class PortOutput:
    """The walk's actions that send the packet somewhere (mixed into ``xlate.translate._Walk``, whose
    state they use: the flow words, the bridge, ports, the result being built)."""

    def dense(self, of_port: int) -> int:
        """The datapath port of OpenFlow port ``of_port`` in this bridge (``NO_PORT``: none)."""
        pm = self.ts.port_map if self.ts is not None else None
        return of_port if pm is None else pm.get(of_port, NO_PORT)

    def of_port(self, dense: int) -> int:
        """The OpenFlow number of datapath port ``dense`` in this bridge (``NO_PORT`` when it has none)."""
        pm = self.ts.port_map if self.ts is not None else None
        if pm is None:
            return dense
        return next((o for o, d in pm.items() if d == dense), NO_PORT)

    def in_bridge(self, q: int) -> bool:
        """Datapath port ``q`` is a port of the current bridge."""
        return self.bridges.bridge_of(q) == self.bridge

    def normal(self) -> None:
        """NORMAL of the current bridge, for the frame as received on ``in_port``."""
        if self.in_port != self.rx_port and not 0 <= self.in_port < len(self.port_flags):
            if self.rec:
                self.rec.note("     -> NORMAL: no input port (in_port was set to a port the bridge lacks), dropped")
            return
        self.commit()
        in_port = -1 if self.in_port == self.rx_port else self.in_port   # -1: the port that received it
        self.r.actions += [A.OP_NORMAL, 2, self.bridge, in_port]
        self.r.outputs += 1
        if self.rec:
            self.rec.normal(self.flow, self.in_port)

    def upcall(self, flow: Flow | None, reason: int, table_id: int, max_len: int) -> None:
        """A packet-in to the current bridge's controllers (with the registers and metadata when they are set:
        a packet-in2 carries them)."""
        self.commit()
        pin = pause.PinInfo(pipeline=pause.pipeline_words(self.flow), action=False) if any(
            self.flow[K.KEY_WORDS:]) else None
        up = Upcall(flow, reason, table_id, self.bridge, -1 if self.in_port == self.rx_port else self.in_port, pin)
        self.r.actions += [A.OP_USERSPACE, 2, self.cookies.id_for(up), max_len]
        self.r.outputs += 1

    def output(self, a: Output, flow: Flow | None = None, table_id: int = 0) -> None:
        p = a.port
        rec = self.rec
        if p == OFPP_NORMAL:
            self.normal()
            return
        if p == OFPP_CONTROLLER:
            reason = OFPR_NO_MATCH if flow is not None and flow.is_table_miss else OFPR_ACTION
            self.upcall(flow, reason, flow.table_id if flow is not None else table_id, a.max_len)
            return
        if p in (OFPP_FLOOD, OFPP_ALL):
            flags = self.port_flags
            skip = PF_DOWN | (PF_NO_FLOOD if p == OFPP_FLOOD else 0)
            for q in range(len(flags)):
                if q != self.in_port and not flags[q] & skip and self.in_bridge(q):
                    self.to_port(q)
            return
        if p == OFPP_IN_PORT:
            dense = self.in_port
        elif p == OFPP_LOCAL:
            dense = next((q for q in range(len(self.port_flags))
                          if self.port_flags[q] & PF_LOCAL and self.in_bridge(q)), -1)
            if dense == self.in_port:
                if rec:
                    rec.note(">> skipping output to input port")
                return
        elif p == OFPP_TABLE:
            if rec:
                rec.note("     -> output:TABLE is for packet-out only")
            return
        elif 0 <= p < OFPP_MAX:
            pm = self.ts.port_map if self.ts is not None else None
            dense = p if pm is None else pm.get(p, -1)
            if dense == self.in_port:
                if rec:
                    rec.note(">> skipping output to input port")
                return
        else:
            return
        if not 0 <= dense < len(self.port_flags):
            if rec:
                rec.note(">> Nonexistent output port")
            return
        if self.port_flags[dense] & PF_DOWN:
            if rec:
                rec.note(f"-> output to down port {p}: dropped")
            return
        self.to_port(dense)

    def to_port(self, q: int) -> None:
        """Output to datapath port ``q``: the frame leaves there, or a patch port takes it to its peer."""
        flags = self.port_flags[q]
        if flags & (PF_PATCH | PF_TUNNEL):
            if flags & PF_PATCH:
                self.cross(q)
            else:
                tunnel_output(self, q)   # type: ignore[arg-type]
            return
        self.commit()
        self.r.actions += A.output(q)
        self.r.outputs += 1

    # ---------------------------------------------------------------- patch ports
    def cross(self, q: int) -> None:
        """Continue the walk in the bridge of patch port ``q``'s peer, then come back (OVS's
        ``patch_port_output``)."""
        rec = self.rec
        peer = int(self.bridges.peer[q]) if q < len(self.bridges.peer) else -1
        nb = self.bridges.bridge_of(peer) if peer >= 0 else -1
        if nb < 0:
            if rec:
                rec.note("     -> patch port without a peer: dropped")
            return
        if self.port_flags[peer] & PF_DOWN:
            if rec:
                rec.note("     -> the patch port's peer is down: dropped")
            return
        if self.limited():
            return
        self.sync_rank_bridges()
        saved = (self.bridge, self.ts, self.in_port, list(self.flow), self.action_set, self.written, self.stack,
                 self.exiting, self.table_id)
        self.written = [0] * K.KEY_WORDS
        self.crossings += 1
        self.depth += 1
        self.nest += 1
        self.bridge, self.ts, self.in_port = nb, self.bridges.tables[nb], peer
        self.flow[K.W_IN_PORT] = peer
        self.flow[K.KEY_WORDS:] = [0] * (F.FLOW_WORDS - K.KEY_WORDS)   # registers and metadata start at 0
        self.action_set = {}
        self.stack = []
        self.exiting = False
        self.r.bridges.add(nb)
        if rec:
            rec.bridge(nb, peer)
        self.enter()
        self.depth -= 1
        self.nest -= 1
        self.sync_rank_bridges()
        wrote = self.written
        (self.bridge, self.ts, self.in_port, flow, self.action_set, self.written, self.stack, self.exiting,
         self.table_id) = saved
        # the peer bridge's changes are not the first bridge's: what it set is set back at the next commit
        self.restore(flow, wrote)
        if rec:
            rec.resume(self.bridge)

    def sync_rank_bridges(self) -> None:
        """``rank_bridges`` as long as ``ranks``: the rules hit since the last call are the current bridge's."""
        r = self.r
        missing = len(r.ranks) - len(r.rank_bridges)
        if missing:
            r.rank_bridges += [self.bridge] * missing
