"""Upcall contexts: what a datapath USERSPACE action hands the controllers (``Upcall``), and the small
integers naming them inside datapath programs (``UpcallCookies``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ofproto.rules import Flow

MAX_PIN_CONTEXTS = 16384   # controller(...) upcall contexts (each holds registers) before a flush


@dataclass(frozen=True)
class Upcall:
    """What a USERSPACE action hands the controllers: the flow that sent it (None: a table miss),
    the packet-in reason, the table, the bridge whose controllers get it and the frame's ingress port
    for that bridge (-1: the port that received it; after a patch port, the peer)."""

    flow: Flow | None
    reason: int
    table_id: int
    bridge: int = 0
    in_port: int = -1
    pin: object = None          # ``xlate.pause.PinInfo``: a controller() action's userdata, id, pipeline, pause


class UpcallCookies:
    """Small integers naming ``Upcall`` contexts inside datapath programs (stable per context; the ids
    of flows that are gone are reused once no megaflow can name them, see ``prune``). Contexts of
    ``controller(...)`` actions carry pipeline state, so there may be one per register value: past
    ``MAX_PIN_CONTEXTS`` of them, ``pins_over`` tells the owner to flush the megaflows and ``forget_pins``."""

    def __init__(self) -> None:
        self._ids: dict[tuple[int, int, int, int, int, object], int] = {}
        self.by_id: dict[int, Upcall] = {}
        self._free: list[int] = []
        self.pins = 0                   # contexts of controller(...) actions (``pin`` set)
        self.bridge_of = np.full(64, -1, dtype=np.int64)   # id -> bridge, for the datapath's per-bridge packet-ins

    def id_for(self, up: Upcall) -> int:
        """The id of ``up`` (a new one the first time)."""
        k = (up.flow.uid if up.flow is not None else 0, up.reason, up.table_id, up.bridge, up.in_port, up.pin)
        i = self._ids.get(k)
        if i is None or self.by_id[i].flow is not up.flow:
            i = self._free.pop() if self._free else len(self.by_id)
            self.by_id[i] = up
            self._ids[k] = i
            if i >= len(self.bridge_of):
                self.bridge_of = np.concatenate([self.bridge_of, np.full(len(self.bridge_of), -1, dtype=np.int64)])
            self.bridge_of[i] = up.bridge
            if up.pin is not None:
                self.pins += 1
        return i

    @property
    def pins_over(self) -> bool:
        """More ``controller(...)`` contexts than ``MAX_PIN_CONTEXTS``."""
        return self.pins > MAX_PIN_CONTEXTS

    def forget_pins(self) -> None:
        """Forget every ``controller(...)`` context (call when no megaflow names them: after a flush)."""
        for k, i in list(self._ids.items()):
            if self.by_id[i].pin is not None:
                del self._ids[k]
                del self.by_id[i]
                self._free.append(i)
        self.pins = 0

    def prune(self, bridge: int, live_uids: set[int]) -> None:
        """Forget the contexts of ``bridge``'s flows not in ``live_uids`` (call when no megaflow names them)."""
        for k, i in list(self._ids.items()):
            up = self.by_id[i]
            if up.bridge == bridge and up.flow is not None and up.flow.uid not in live_uids:
                del self._ids[k]
                del self.by_id[i]
                self._free.append(i)
                self.pins -= up.pin is not None

    def __len__(self) -> int:
        return len(self.by_id)
