"""One burst through the datapath (``BurstPath``, a part of ``vswitch.datapath.Datapath``): each frame by its
bridge, into the port queues, transmitted; what went to patch ports handed to their peers, round after round.

```
 burst ─► group_burst: by the group of the ingress port's bridge (skipped when every port is in one group)
   ├─► G_TABLES, every OpenFlow bridge at once: hit_burst (extract, EMC, megaflows, execute)
   │      ├─ a miss: Upcalls.handle_misses (translate, install) ─► execute_burst
   │      ├─► NORMAL list ─► group_normal ─► switch_list per bridge (its L2 table, VLAN map)
   │      └─► USERSPACE ─► packet-ins per bridge (DpBridge.take_packet_ins)
   ├─► G_DROP, a secure bridge without flows: table misses, by ingress port
   └─► G_NORMAL + b, a NORMAL-only bridge b: switch_burst(b)
 port queues (slot, VLAN edit) ─► tx_burst per port
   └─ queued for a patch port ─► patch_handover (copy, VLAN edit), ingress = the peer ─► a further round
```

``group_burst`` sorts a burst by the group of each frame's ingress port (every megaflow bridge shares one
group, the cache's keys carry the ``in_port``; a NORMAL-only bridge has its own; a secure bridge without
flows drops), so each bridge's work is one slice and no Python runs per frame. When every port is in one
group the burst is used as it is. Misses are translated on this thread, within the burst they arrived in
(as OVS's userspace datapath runs upcalls on its PMD threads): no frame waits or is re-ordered.

Patch ports (``backends.patch``) join two bridges: an OpenFlow output to one continues the translation in
the peer's bridge (one megaflow for both); a frame NORMAL queues for one is handed to the peer's bridge in
a further round of the same iteration (``dpif.patch.patch_handover``), at most ``MAX_DEPTH`` rounds.

A packet-out is a burst of one frame with the actions the controller gave (``BurstPath.packet_out``).
Everything here runs on the datapath thread and owns its scratch arrays (keys, queues, side lists); the
ports, bridges and port arrays it reads are the datapath's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from backends.pool import META_IN_PORT as POOL_META_IN_PORT
from backends.pool import META_LEN as POOL_META_LEN
from backends.pool import PacketPool
from backends.port import RX_BYTES, RX_PACKETS, TX_BYTES, TX_PACKETS, Port
from classifier import parse as _parse
from classifier.keys import NKEYS
from classifier.l2switch import switch_burst, switch_list
from dpif.actions import (
    DR_RX_INVALID,
    DR_TABLE_MISS,
    META_HEAD,
    N_NORMAL,
    N_USERSPACE,
    SIDE_ROWS,
    SIDE_UP_COOKIE,
    SIDE_UP_MAX_LEN,
    SIDE_UP_SLOT,
    append_queues,
    count_rule,
    execute_burst,
)
from dpif.extract import extract_burst
from dpif.fastpath import hit_burst, hit_keys
from dpif.key import KEY_WORDS
from dpif.meters import BANK as METERS
from dpif.partition import group_burst, group_normal
from dpif.patch import PC_NO_PEER, PC_NO_SLOT, PC_OVERFLOW, PC_TX_BYTES, PC_TX_PACKETS, patch_handover
from dpif.tunnel import tunnel_handover
from dpif.tunnel_pop import fill_tun_words
from ofproto.rules import Action
from ofproto.tables import TableSet
from vswitch.dpbridge import LEARN_QUEUE, DpBridge, PacketIn
from xlate.ctlearn import TableChange
from xlate.translate import MAX_DEPTH, Bridges, UpcallCookies, translate_actions
from xlate.upcall import Upcalls

if (POOL_META_LEN, POOL_META_IN_PORT) != (_parse.META_LEN, _parse.META_IN_PORT):
    raise ImportError("backends.pool and classifier.parse disagree on the slot metadata layout")

BURST = 256              # frames taken from one port per poll
MAX_BURST = 1024         # frames switched per iteration, over all ports

# burst groups (``group_burst``): every megaflow bridge, drops, then one group per NORMAL-only bridge
G_TABLES = 0
G_DROP = 1
G_NORMAL = 2


class BurstPath:
    """What the datapath does with one burst: each frame by its bridge into the port queues, transmit, patch
    rounds; and a packet-out, a burst of one frame (datapath thread)."""

    # what the datapath keeps and the burst path reads (``vswitch.datapath.Datapath``)
    pool: PacketPool
    ports: list[Port | None]
    bridges: list[DpBridge | None]
    port_bridge: np.ndarray
    port_group: np.ndarray
    single_group: int
    peer: np.ndarray
    patch_ports: np.ndarray
    patch_counts: np.ndarray
    drops: np.ndarray
    fdrops: np.ndarray
    port_flags: np.ndarray
    cookies: UpcallCookies
    upcalls: Upcalls | None
    xbridges: Bridges
    tnl_port_list: np.ndarray          # the tunnel ports (``vswitch.dptunnels``)
    round_ports: np.ndarray            # the patch and tunnel ports
    tunnel_ports: Any                  # their headers, states and counts (``dpif.tunnel.TunnelPorts``)

    now: Callable[[], int]    # seconds since the datapath started

    # ------------------------------------------------------------ scratch arrays (datapath thread)
    def _init_burst_path(self, n_slots: int) -> None:
        """The scratch arrays of a burst (keys, groups, side lists, port queues) for a pool of ``n_slots``."""
        self.keys = np.zeros((n_slots, NKEYS), dtype=np.uint64)
        self.burst = np.zeros(MAX_BURST, dtype=np.int32)
        self.rounds = (np.zeros(MAX_BURST, dtype=np.int32), np.zeros(MAX_BURST, dtype=np.int32))
        self.dkeys = np.zeros((n_slots, KEY_WORDS), dtype=np.uint64)
        self.reasons = np.zeros(MAX_BURST, dtype=np.int32)
        self.good = np.zeros(MAX_BURST, dtype=np.int32)
        self.gsorted = np.zeros(MAX_BURST, dtype=np.int32)
        self.gstart = np.zeros(G_NORMAL + 1, dtype=np.int64)
        self.gused = np.zeros(G_NORMAL + 1, dtype=np.int64)
        self.out_entry = np.zeros(MAX_BURST, dtype=np.int64)
        self.prog_index = np.zeros((MAX_BURST, 2), dtype=np.int64)
        self.xside = np.zeros((SIDE_ROWS, 2 * MAX_BURST), dtype=np.int32)
        self.xside_n = np.zeros(3, dtype=np.int64)   # NORMAL, USERSPACE, fresh slots (hit_burst)
        self.nslots = np.zeros(2 * MAX_BURST, dtype=np.int32)    # the NORMAL list by bridge (group_normal)
        self.nin = np.zeros(2 * MAX_BURST, dtype=np.int32)
        self.nstart = np.zeros(1, dtype=np.int64)
        self.extra = np.zeros(4 * MAX_BURST, dtype=np.int32)
        self._alloc_queues(0)
        self._n_extra = 0

    def _size_for_bridges(self, n_bridges: int) -> None:
        """Room in the group and NORMAL-list starts for ``n_bridges`` bridges."""
        self.gstart = np.zeros(G_NORMAL + n_bridges + 1, dtype=np.int64)
        self.gused = np.zeros(G_NORMAL + n_bridges + 1, dtype=np.int64)
        self.nstart = np.zeros(n_bridges + 1, dtype=np.int64)

    def _alloc_queues(self, n_ports: int) -> None:
        """The port queues for ``n_ports`` ports (each a region of ``MAX_BURST`` entries)."""
        self.out = np.zeros((2, MAX_BURST * max(1, n_ports)), dtype=np.int32)
        self.out_slots = self.out[0]
        self.out_vlans = self.out[1]
        self.out_start = np.zeros((2, n_ports + 1), dtype=np.int32)
        # switch_burst's queues for NORMAL work after the first (merged into ``out`` afterwards)
        self.out2 = np.zeros((2, 2 * MAX_BURST * max(1, n_ports)), dtype=np.int32)
        self.out_start2 = np.zeros((2, n_ports + 1), dtype=np.int32)

    # ------------------------------------------------------------ one burst, by group
    def _process(self, burst: np.ndarray, n: int, now: int, tunneled: bool = False, group: int = -1) -> None:
        """Switch ``burst[:n]`` into the port queues, each frame by its bridge; the burst stays allocated
        (``_n_extra``: the fresh slots the actions took, to free after transmit). ``tunneled``: the frames were
        decapsulated (their keys take the tunnel words the pool keeps per slot). ``group`` >= 0: every frame is in
        that group (the ports they came from share it)."""
        g = self.single_group if self.single_group >= 0 else group
        if g >= 0:
            self._group(g, burst, n, now, True, tunneled)
            return
        k = group_burst(self.pool.meta, burst, n, self.port_group, self.gsorted, self.gstart, self.gused)
        if k == 1:      # every frame in one group: the burst as it came
            self._group(int(self.gused[0]), burst, n, now, True, tunneled)
            return
        start = self.gstart.tolist()
        first = True
        for g in self.gused[:k].tolist():
            a, z = start[g], start[g + 1]
            if self._group(g, self.gsorted[a:z], z - a, now, first, tunneled):
                first = False
        if first:
            self.out_start[1] = 0

    def _group(self, g: int, burst: np.ndarray, n: int, now: int, first: bool, tunneled: bool = False) -> bool:
        """The frames of one group (``G_*``); ``first``: nothing is queued yet this iteration. Whether it
        queued (the port queues now hold this iteration's work)."""
        if g == G_TABLES:
            self._of_burst(burst, n, now, tunneled)
            return True
        if g == G_DROP:
            # a secure bridge with no flows made for a secure bridge (yet): table misses, by ingress port
            np.add.at(self.fdrops[:, DR_TABLE_MISS], self.pool.meta[burst[:n], POOL_META_IN_PORT], 1)
            if first:
                self.out_start[1] = 0
            return False
        br = self.bridges[g - G_NORMAL]
        assert br is not None
        pool = self.pool
        if first:
            switch_burst(pool.data, pool.meta, burst, n, self.keys, br.l2, br.l2_info, br.vlan_map, now, self.drops,
                         self.out, self.out_start)
        else:
            switch_burst(pool.data, pool.meta, burst, n, self.keys, br.l2, br.l2_info, br.vlan_map, now, self.drops,
                         self.out2, self.out_start2)
            lost = append_queues(self.out, self.out_start, self.out2, self.out_start2)
            if lost:
                br.dp_drops["normal_queue_full"] += lost
        flows = br.flows
        if flows is not None and not br.bypass:
            count_rule(pool.meta, burst, n, flows.counters, flows.table_counters, br.normal_flow, now)
        return True

    # ------------------------------------------------------------ the OpenFlow path (megaflows, upcalls)
    def _upcalls(self) -> Upcalls:
        if self.upcalls is None:
            self.upcalls = Upcalls(cookies=self.cookies)
        return self.upcalls

    def _of_burst(self, burst: np.ndarray, n: int, now: int, tunneled: bool = False) -> None:
        """The OpenFlow pipeline over ``burst[:n]``: keys, megaflows (upcalls for misses), their actions,
        NORMAL and packet-ins; the port queues are rewritten. The burst stays allocated. ``tunneled``: the keys
        take the tunnel words the pool keeps per slot (decapsulated frames)."""
        pool = self.pool
        meta = pool.meta
        up = self._upcalls()
        cache = up.cache
        meters, now_ns = METERS.arr, time.monotonic_ns()    # the meters' clock: one read per burst
        if tunneled:
            if extract_burst(pool.data, meta, burst, n, self.dkeys, self.reasons):
                burst, n = self._drop_invalid(burst, n)
            fill_tun_words(self.dkeys, burst, n, pool.tun)
            r = hit_keys(pool.data, meta, burst, n, self.dkeys, cache.st, cache.ent, cache.buckets, cache.emc,
                         self.out_entry, now, self.prog_index, cache.actions, self.out, self.out_start, self.fdrops,
                         pool.free_stack, pool.free_top, self.extra, self.xside, self.xside_n, meters, now_ns)
        else:
            r = hit_burst(pool.data, meta, burst, n, self.dkeys, self.reasons, cache.st, cache.ent, cache.buckets,
                          cache.emc, self.out_entry, now, self.prog_index, cache.actions, self.out, self.out_start,
                          self.fdrops, pool.free_stack, pool.free_top, self.extra, self.xside, self.xside_n,
                          meters, now_ns)
        if r == 0:
            self._n_extra = int(self.xside_n[2])
        else:
            if r < 0:
                burst, n = self._drop_invalid(burst, n)
                cache.lookup(self.dkeys, burst, n, meta, self.out_entry, now)
            up.handle_misses(self.xbridges, self.port_flags, self.dkeys, burst, n, meta, self.out_entry, now)
            if up.learned:
                self._hand_learned(up.take_learned())
            up.programs(self.out_entry, n, self.prog_index)
            self._n_extra = execute_burst(pool.data, meta, burst, n, self.prog_index, cache.actions, self.out,
                                          self.out_start, self.fdrops, pool.free_stack, pool.free_top, self.extra,
                                          self.xside, self.xside_n, meters, now_ns)
        self._side_lists(now, None)

    def _drop_invalid(self, burst: np.ndarray, n: int) -> tuple[np.ndarray, int]:
        """Count the frames key extraction refused (runts, truncated tags) and return the others."""
        bad = self.reasons[:n] != 0
        np.add.at(self.fdrops[:, DR_RX_INVALID], self.pool.meta[burst[:n][bad], POOL_META_IN_PORT], 1)
        keep = burst[:n][~bad]
        self.good[:len(keep)] = keep
        return self.good, len(keep)

    def _side_lists(self, now: int, packet_out: DpBridge | None) -> None:
        """What the actions handed to NORMAL (each bridge's L2 switch, from the ingress port the action named)
        and to the controllers. ``packet_out``: the bridge of a packet-out, whose NORMAL without an ingress
        port is refused and counted there."""
        n_normal, n_up = self.xside_n[N_NORMAL], self.xside_n[N_USERSPACE]
        if n_normal:
            pool = self.pool
            lost = group_normal(self.xside, n_normal, len(self.ports), self.nslots, self.nin, self.nstart)
            if lost and packet_out is not None:
                packet_out.dp_drops["packet_out_normal_without_in_port"] += lost
            start = self.nstart.tolist()
            for b in range(len(start) - 1):
                a, z = start[b], start[b + 1]
                br = self.bridges[b] if z > a else None
                if br is None:
                    continue
                switch_list(pool.data, pool.meta, self.nslots[a:z], self.nin[a:z], z - a, self.keys, br.l2,
                            br.l2_info, br.vlan_map, now, self.drops, self.out2, self.out_start2)
                queue_lost = append_queues(self.out, self.out_start, self.out2, self.out_start2)
                if queue_lost:
                    br.dp_drops["normal_queue_full"] += queue_lost
        if n_up:
            self._packet_ins(int(n_up))

    def _packet_ins(self, n: int) -> None:
        """Copy up to each bridge's rate limit of packet-ins for its agent; count the rest by reason."""
        by_id = self.cookies.by_id
        side, data, meta = self.xside, self.pool.data, self.pool.meta
        bridge_of = self.cookies.bridge_of[side[SIDE_UP_COOKIE, :n]]
        for b in np.unique(bridge_of).tolist():
            br = self.bridges[b] if 0 <= b < len(self.bridges) else None
            if br is None:
                continue
            rows = np.flatnonzero(bridge_of == b)
            take = br.take_packet_ins(len(rows))
            for i in rows[:take].tolist():   # a packet-in is a slow-path message: per-frame Python, bounded by the rate
                slot = int(side[SIDE_UP_SLOT, i])
                head = int(meta[slot, META_HEAD])
                length = int(meta[slot, POOL_META_LEN])
                keep = min(length, int(side[SIDE_UP_MAX_LEN, i]))
                up = by_id[int(side[SIDE_UP_COOKIE, i])]
                in_port = up.in_port if up.in_port >= 0 else int(meta[slot, POOL_META_IN_PORT])
                br.packet_ins.append(PacketIn(bytes(data[slot, head:head + keep]), length, in_port, up.flow,
                                              up.reason, up.table_id, up.pin))
            if take:
                br.on_packet_in()

    # ------------------------------------------------------------ packet-out: a burst of one frame
    def _hand_learned(self, learned: list[TableChange]) -> None:
        """Flows ``learn`` made, ``fin_timeout`` hits: to their bridges' agents (``DpBridge.learned``)."""
        woken = set()
        for got in learned:
            br = self.bridges[got.bridge] if 0 <= got.bridge < len(self.bridges) else None
            if br is None:
                continue
            if len(br.learned) >= LEARN_QUEUE:
                br.dp_drops["learn_queue_full"] += 1
                continue
            br.learned.append(got)
            woken.add(br)
        for br in woken:
            br.on_packet_in()

    def packet_out(self, br: DpBridge, frame: bytes, port_no: int, actions: tuple[Action, ...],
                   ts: TableSet, xlate: Callable[..., Any] | None = None) -> None:
        """Run ``actions`` on ``frame`` in bridge ``br`` (``output:TABLE``: the tables of ``ts``) as if received
        on ``port_no`` (-1: from the controller, on no port); or the translation ``xlate(bridges, key, port_flags,
        cookies, bridge)`` makes (a resumed walk). Datapath thread."""
        pool = self.pool
        one = np.zeros(1, dtype=np.int32)
        if pool.alloc(one, 0, 1) != 1:
            br.dp_drops["packet_out_no_free_slot"] += 1
            return
        try:
            in_port = port_no if port_no >= 0 else len(self.port_flags)
            pool.put(int(one[0]), frame[: pool.slot_size], in_port)
            extract_burst(pool.data, pool.meta, one, 1, self.dkeys, self.reasons)
            key = [int(w) for w in self.dkeys[int(one[0])]]
            if xlate is not None:
                res = xlate(br.xlate_bridges(ts), key, self.port_flags, self.cookies, br.index)
            else:
                res = translate_actions(br.xlate_bridges(ts), key, actions, self.port_flags, self.cookies,
                                        bridge=br.index)
            program = res.program()
            if res.learned:
                self._hand_learned(res.learned)
            self.prog_index[0, 0] = 0
            self.prog_index[0, 1] = len(program)
            self._n_extra = execute_burst(pool.data, pool.meta, one, 1, self.prog_index, program, self.out,
                                          self.out_start, self.fdrops, pool.free_stack, pool.free_top, self.extra,
                                          self.xside, self.xside_n, METERS.arr, time.monotonic_ns())
            now = self.now()
            self._side_lists(now, br)
            self._send(now)
        finally:
            pool.free(one, 1)

    # ------------------------------------------------------------ transmit, patch rounds
    def _send(self, now: int) -> None:
        """Transmit the queues, hand what went to patch ports to their peers, free the copies the actions made."""
        if self._transmit():          # something is queued for a patch or tunnel port
            self._patch_rounds(now)
        if self._n_extra:
            self.pool.free(self.extra, self._n_extra)
            self._n_extra = 0

    def _transmit(self) -> bool:
        """Send each port's queue; whether a patch or tunnel port has one (their frames go in the rounds)."""
        pool = self.pool
        starts = self.out_start[0]
        counts = self.out_start[1].tolist()
        out_slots, out_vlans = self.out_slots, self.out_vlans
        ports = self.ports
        rounds = False
        for port_no, count in enumerate(counts):
            if count:
                port = ports[port_no] if port_no < len(ports) else None
                if port is None:
                    continue
                if port.deviceless:
                    rounds = True
                else:
                    port.tx_burst(pool, out_slots, out_vlans, int(starts[port_no]), count)
        return rounds

    def _patch_rounds(self, now: int) -> None:
        """Hand what was queued for patch ports to their peers' bridges, and what was queued for tunnel ports
        encapsulated to their underlay bridges, round after round until nothing is (at most ``MAX_DEPTH`` rounds:
        a loop of patch ports). Frees the fresh slots of every round."""
        pool = self.pool
        counts = self.patch_counts
        done: tuple[np.ndarray, int] | None = None
        for depth in range(MAX_DEPTH + 1):
            nxt = self.rounds[depth % 2]
            n = patch_handover(pool.data, pool.meta, self.out, self.out_start, self.patch_ports, self.peer,
                               pool.headroom, pool.free_stack, pool.free_top, nxt, counts)
            self._count_patch()
            if len(self.tnl_port_list):     # what NORMAL queued for tunnel ports: encapsulated, into the underlay
                tp = self.tunnel_ports
                n += tunnel_handover(pool.data, pool.meta, self.out, self.out_start, self.tnl_port_list, tp.hdrs,
                                     tp.state, tp.underlay, pool.headroom, pool.free_stack, pool.free_top, nxt[n:],
                                     tp.counts)
                self._count_tunnels()
            if self._n_extra:            # the round's copies are made: its fresh slots and frames can go
                pool.free(self.extra, self._n_extra)
                self._n_extra = 0
            if done is not None:
                pool.free(*done)
            if n == 0:
                return
            if depth == MAX_DEPTH:
                ports, lost = np.unique(pool.meta[nxt[:n], POOL_META_IN_PORT], return_counts=True)
                for p, k in zip(ports.tolist(), lost.tolist(), strict=True):
                    self._bridge_of(p, "patch_too_deep", k)
                pool.free(nxt, n)
                return
            self._process(nxt, n, now)
            self._transmit()
            done = (nxt, n)

    def _count_patch(self) -> None:
        """Move the patch counts of a round to the ports' counters and the bridges' drop counters."""
        counts = self.patch_counts
        for p in self.patch_ports.tolist():
            row = counts[p]
            if not row.any():
                continue
            port = self.ports[p]
            q = int(self.peer[p])
            if port is not None:
                port.counters[TX_PACKETS] += row[PC_TX_PACKETS]
                port.counters[TX_BYTES] += row[PC_TX_BYTES]
            other = self.ports[q] if q >= 0 else None
            if other is not None:
                other.counters[RX_PACKETS] += row[PC_TX_PACKETS]
                other.counters[RX_BYTES] += row[PC_TX_BYTES]
            for counter, i in (("patch_no_peer", PC_NO_PEER), ("patch_no_free_slot", PC_NO_SLOT),
                               ("patch_overflow", PC_OVERFLOW)):
                if row[i]:
                    self._bridge_of(p, counter, int(row[i]))
            row[:] = 0

    def _bridge_of(self, port_no: int, counter: str, n: int) -> None:
        """Add ``n`` to the drop counter ``counter`` of the bridge of ``port_no``."""
        b = int(self.port_bridge[port_no]) if 0 <= port_no < len(self.port_bridge) else -1
        br = self.bridges[b] if 0 <= b < len(self.bridges) else None
        if br is not None:
            br.dp_drops[counter] += n
