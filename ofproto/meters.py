"""The meter table of one bridge (OpenFlow 1.3+ meters): flags kbps / pktps / burst / stats, drop bands,
and their statistics.

```
 meter-mod ──► MeterTable.add / modify / delete   (agent thread)   ──► meter config / stats / features replies
 flows name meters: the 1.3 / 1.4 ``meter`` instruction and the 1.5 ``meter`` action (``ofproto.actions.Meter``)
```

Rates are enforced in the datapath: each meter has a row of ``dpif.meters.BANK`` (its slot, allocated by
``MeterTable.add``, kept by ``modify``, freed by ``delete`` or with the table); the translator emits
``METER(slot, gen)`` where a flow passes it and the megaflow is cached like any other; the executor refills the
buckets from one clock read per burst and drops what a band exceeds (``meter_drop`` of the ingress port,
``flow_meter_drop`` in ``coverage/show``). The counters meter-stats reports are the row's (``Meter.packets``,
``bytes``, ``band_counts``). Packet-outs and ``ofproto/trace`` pass meters without paying.

What OVS's userspace datapath accepts is what this accepts: drop bands only (a DSCP-remark band is
``bad_band``), at most ``MAX_BANDS`` bands, exactly one of kbps / pktps, a rate above 0. Errors are
``MeterError`` with OVS's error name; the wire side maps them to OFPET_METER_MOD_FAILED codes.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field

from dpif.meters import BANK, MeterBank
from dpif.meters import MAX_BANDS as DP_MAX_BANDS
from ofproto.actions import OFPM_MAX

OFPMF_KBPS, OFPMF_PKTPS, OFPMF_BURST, OFPMF_STATS = 1, 2, 4, 8
OFPMBT_DROP, OFPMBT_DSCP_REMARK, OFPMBT_EXPERIMENTER = 1, 2, 0xFFFF
OFPM_ALL = 0xFFFFFFFF
#: what the switch reports in meter features (OVS 3.1's userspace datapath)
MAX_METERS = 262144
MAX_BANDS = DP_MAX_BANDS
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
    """A meter: its configuration, and (once in a table) its datapath row ``slot`` of generation ``gen`` in
    ``bank``, which holds its buckets and counters (``packets`` / ``bytes`` in, per band what it dropped)."""

    meter_id: int
    flags: int
    bands: tuple[Band, ...] = ()
    created: float = field(default_factory=time.monotonic)
    slot: int = -1
    gen: int = 0
    bank: MeterBank | None = field(default=None, repr=False)

    def capacity(self, band: Band) -> int:
        """A band's bucket: its burst size with the burst flag, else one second at its rate."""
        return band.burst_size if self.flags & OFPMF_BURST and band.burst_size else band.rate

    def _counters(self) -> tuple[int, int, list[list[int]]]:
        if self.bank is None or self.slot < 0:
            return 0, 0, [[0, 0] for _ in self.bands]
        return self.bank.counters(self.slot, self.gen, len(self.bands))

    @property
    def packets(self) -> int:
        """Frames that reached the meter."""
        return self._counters()[0]

    @property
    def bytes(self) -> int:
        """Their bytes."""
        return self._counters()[1]

    @property
    def band_counts(self) -> list[list[int]]:
        """Per band, [packets, bytes] it dropped."""
        return self._counters()[2]

    def place(self, bank: MeterBank, slot: int, gen: int) -> None:
        """Put the meter in ``bank``'s row ``slot`` (generation ``gen``): buckets full, counters at 0."""
        self.bank, self.slot, self.gen = bank, slot, gen
        bank.configure(slot, self.flags, [(b.rate, self.capacity(b)) for b in self.bands])


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


def _free_rows(bank: MeterBank, meters: dict[int, Meter]) -> None:
    for m in meters.values():
        if m.slot >= 0:
            bank.free(m.slot)


class MeterTable:
    """The meters of one bridge, by id (insertion order), each in a row of ``bank`` (the datapath's,
    ``dpif.meters.BANK``, unless given). Used from the agent's thread."""

    def __init__(self, bank: MeterBank | None = None) -> None:
        self.meters: dict[int, Meter] = {}
        self.bank = bank if bank is not None else BANK
        weakref.finalize(self, _free_rows, self.bank, self.meters)    # a bridge that goes frees its rows

    def __len__(self) -> int:
        return len(self.meters)

    def add(self, m: Meter) -> None:
        """OFPMC_ADD (``meter_exists`` if the id is taken)."""
        check_meter(m)
        if m.meter_id in self.meters:
            raise MeterError("meter_exists", f"meter {m.meter_id} exists")
        m.place(self.bank, *self.bank.alloc())
        self.meters[m.meter_id] = m

    def modify(self, m: Meter) -> None:
        """OFPMC_MODIFY (``unknown_meter`` if it does not exist): the same datapath row, so the megaflows
        through it keep it; its buckets fill and its counters start again."""
        check_meter(m)
        old = self.meters.get(m.meter_id)
        if old is None:
            raise MeterError("unknown_meter", f"no meter {m.meter_id}")
        m.place(self.bank, old.slot, old.gen)
        self.meters[m.meter_id] = m

    def delete(self, meter_id: int) -> list[int]:
        """OFPMC_DELETE of one meter or ``OFPM_ALL``; the ids removed (an unknown one is no error). Their rows
        are freed (``MeterBank.free``)."""
        if meter_id == OFPM_ALL:
            gone = list(self.meters.values())
            self.meters.clear()
        else:
            m = self.meters.pop(meter_id, None)
            gone = [m] if m is not None else []
        for m in gone:
            if m.slot >= 0:
                self.bank.free(m.slot)
        return [m.meter_id for m in gone]
