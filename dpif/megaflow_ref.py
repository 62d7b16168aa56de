"""Plain-Python model of the megaflow cache (``dpif.megaflow``), the oracle of its tests.

Megaflows are ``(key & mask, mask, actions)`` with counters; a frame's megaflow is the one whose
masked key equals the frame's key under its mask (at most one: installs that would overlap are
refused). No EMC, no subtables, no hashing: what the cache must compute, not how.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RefMegaflow:
    """One megaflow of the model; keys and masks are tuples of ints, one per key word."""

    key: tuple[int, ...]
    mask: tuple[int, ...]
    actions: tuple[int, ...]
    packets: int = 0
    bytes: int = 0
    used: int = 0
    created: int = 0


def masked(key: tuple[int, ...], mask: tuple[int, ...]) -> tuple[int, ...]:
    """``key & mask`` word by word."""
    return tuple(k & m for k, m in zip(key, mask, strict=True))


def overlaps(a_key: tuple[int, ...], a_mask: tuple[int, ...], b_key: tuple[int, ...],
             b_mask: tuple[int, ...]) -> bool:
    """True when some key matches both megaflows."""
    return all((x ^ y) & m & n == 0 for x, y, m, n in zip(a_key, b_key, a_mask, b_mask, strict=True))


class RefMegaflows:
    """The model: megaflows by the id the real cache gave them."""

    def __init__(self, max_flows: int) -> None:
        self.max_flows = max_flows
        self.flows: dict[int, RefMegaflow] = {}
        self.table_full = 0

    def find_same(self, key: tuple[int, ...], mask: tuple[int, ...]) -> int | None:
        """The id of the megaflow with this mask and masked key."""
        mk = masked(key, mask)
        for i, f in self.flows.items():
            if f.mask == mask and f.key == mk:
                return i
        return None

    def overlapping(self, key: tuple[int, ...], mask: tuple[int, ...]) -> list[int]:
        """Ids of the megaflows that overlap ``(key, mask)``."""
        return [i for i, f in self.flows.items() if overlaps(f.key, f.mask, masked(key, mask), mask)]

    def lookup(self, key: tuple[int, ...]) -> int:
        """The id of the megaflow ``key`` matches, or -1."""
        hits = [i for i, f in self.flows.items() if masked(key, f.mask) == f.key]
        assert len(hits) <= 1, "megaflows overlap"
        return hits[0] if hits else -1

    def hit(self, i: int, length: int, now: int) -> None:
        """Count one frame of ``length`` bytes on megaflow ``i``."""
        f = self.flows[i]
        f.packets += 1
        f.bytes += length
        f.used = now

    def expire(self, now: int, idle: int) -> set[int]:
        """Remove and return the ids idle for ``idle`` or more."""
        gone = {i for i, f in self.flows.items() if now - f.used >= idle}
        for i in gone:
            del self.flows[i]
        return gone
