"""The meter table of one bridge (OpenFlow 1.3+ meters): flags kbps / pktps / burst / stats, drop bands,
and their statistics.

```
 meter-mod ──► MeterTable.add / modify / delete   (agent thread)   ──► meter config / stats / features replies
 flows name meters: the 1.3 / 1.4 ``meter`` instruction and the 1.5 ``meter`` action (``ofproto.actions.Meter``)
```

Rates are enforced on the upcall path: a flow that passes a meter is never cached as a megaflow, so every
frame of it is translated (once per burst and flow) and admitted or dropped frame by frame by the meter's
token buckets (``Meter.admit``; a drop counts as ``meter_drop`` of the ingress port, ``flow_meter_drop``
in ``coverage/show``). Packet-outs and ``ofproto/trace`` pass meters without paying.

What OVS's userspace datapath accepts is what this accepts: drop bands only (a DSCP-remark band is
``bad_band``), at most ``MAX_BANDS`` bands, exactly one of kbps / pktps, a rate above 0. Errors are
``MeterError`` with OVS's error name; the wire side maps them to OFPET_METER_MOD_FAILED codes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ofproto.actions import OFPM_MAX

OFPMF_KBPS, OFPMF_PKTPS, OFPMF_BURST, OFPMF_STATS = 1, 2, 4, 8
OFPMBT_DROP, OFPMBT_DSCP_REMARK, OFPMBT_EXPERIMENTER = 1, 2, 0xFFFF
OFPM_ALL = 0xFFFFFFFF
#: what the switch reports in meter features (OVS 3.1's userspace datapath)
MAX_METERS = 262144
MAX_BANDS = 8
MAX_COLOR = 0
BAND_TYPES = 1 << OFPMBT_DROP
CAPABILITIES = OFPMF_KBPS | OFPMF_PKTPS | OFPMF_BURST | OFPMF_STATS


class MeterError(ValueError):
    """A meter-mod the table refuses; ``code`` names the OpenFlow error (``meter_exists``, ...)."""

    def __init__(self, code: str, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code


@dataclass(frozen=True)
class Band:
    """One band: ``type`` (``OFPMBT_*``), ``rate`` (kb/s or packets/s), ``burst_size``, ``prec_level``
    (DSCP remark)."""

    type: int
    rate: int
    burst_size: int = 0
    prec_level: int = 0


@dataclass(eq=False)
class Meter:
    """A meter and its counters (``packets`` / ``bytes`` in, and per band what it dropped)."""

    meter_id: int
    flags: int
    bands: tuple[Band, ...] = ()
    created: float = field(default_factory=time.monotonic)
    packets: int = 0
    bytes: int = 0
    band_counts: list[list[int]] = field(default_factory=list)

    tokens: list[float] = field(default_factory=list)   # per band, in its units (packets or kilobits)
    last: float = -1.0                                    # when the buckets were last filled (seconds)

    def __post_init__(self) -> None:
        if len(self.band_counts) != len(self.bands):
            self.band_counts = [[0, 0] for _ in self.bands]
        self.tokens = [float(self.capacity(b)) for b in self.bands]

    def capacity(self, band: Band) -> int:
        """A band's bucket: its burst size with the burst flag, else one second at its rate."""
        return band.burst_size if self.flags & OFPMF_BURST and band.burst_size else band.rate

    def admit(self, nbytes: int, now: float) -> bool:
        """One frame of ``nbytes`` at time ``now`` (seconds): counted in, then each band's token bucket
        (refilled at its rate) pays for it; when a band cannot, the highest-rate band exceeded applies and,
        a drop band, drops the frame (False; counted for that band)."""
        self.packets += 1
        self.bytes += nbytes
        elapsed = 0.0 if self.last < 0 else max(0.0, now - self.last)
        self.last = now
        cost = 1.0 if self.flags & OFPMF_PKTPS else nbytes * 8 / 1000.0
        hit = -1
        for i, b in enumerate(self.bands):
            t = min(float(self.capacity(b)), self.tokens[i] + elapsed * b.rate)
            if t >= cost:
                self.tokens[i] = t - cost
            else:
                self.tokens[i] = t
                if hit < 0 or b.rate > self.bands[hit].rate:
                    hit = i
        if hit < 0:
            return True
        self.band_counts[hit][0] += 1
        self.band_counts[hit][1] += nbytes
        return self.bands[hit].type != OFPMBT_DROP


def check_meter(m: Meter) -> None:
    """Raise ``MeterError`` when ``m`` cannot be installed (what OVS's userspace datapath refuses)."""
    if not 1 <= m.meter_id <= OFPM_MAX:
        raise MeterError("invalid_meter", f"meter {m.meter_id:#x}")
    if m.flags & ~CAPABILITIES or bool(m.flags & OFPMF_KBPS) == bool(m.flags & OFPMF_PKTPS):
        raise MeterError("bad_flags", f"flags {m.flags:#x}")
    if not m.bands or len(m.bands) > MAX_BANDS:
        raise MeterError("out_of_bands", f"{len(m.bands)} bands")
    for b in m.bands:
        if b.type != OFPMBT_DROP:
            raise MeterError("bad_band", f"band type {b.type} (the userspace datapath has drop bands only)")
        if b.rate == 0:
            raise MeterError("bad_rate", "rate 0")


class MeterTable:
    """The meters of one bridge, by id (insertion order). Used from the agent's thread."""

    def __init__(self) -> None:
        self.meters: dict[int, Meter] = {}

    def __len__(self) -> int:
        return len(self.meters)

    def add(self, m: Meter) -> None:
        """OFPMC_ADD (``meter_exists`` if the id is taken)."""
        check_meter(m)
        if m.meter_id in self.meters:
            raise MeterError("meter_exists", f"meter {m.meter_id} exists")
        self.meters[m.meter_id] = m

    def modify(self, m: Meter) -> None:
        """OFPMC_MODIFY (``unknown_meter`` if it does not exist); its counters start again."""
        check_meter(m)
        if m.meter_id not in self.meters:
            raise MeterError("unknown_meter", f"no meter {m.meter_id}")
        self.meters[m.meter_id] = m

    def delete(self, meter_id: int) -> list[int]:
        """OFPMC_DELETE of one meter or ``OFPM_ALL``; the ids removed (an unknown one is no error)."""
        if meter_id == OFPM_ALL:
            gone = list(self.meters)
            self.meters.clear()
            return gone
        return [meter_id] if self.meters.pop(meter_id, None) is not None else []
