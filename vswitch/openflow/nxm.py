"""NXM / OXM match fields on the wire, every class: the TLV stream of an ``nx_match`` (Nicira's
``NXT_FLOW_MOD``, NXST flow stats) and of an OpenFlow 1.2+ ``ofp_match``.

```
 header (4 bytes): class (16) | field (7) | hasmask (1) | length (8)
   class 0x0000 / 0x0001  NXM_OF_* / NXM_NX_*          value [mask]
   class 0x8000 / 0x8001  OpenFlow basic / packet regs value [mask]
   class 0xffff           experimenter: experimenter id (4 bytes), then value [mask]; length counts the id
```

Fields are ``ofproto.fields.Field`` rows of the registry, which gives every field its wire identities
and width (a field whose width differs by class, such as NXM's 16-bit ``in_port`` and OXM's 32-bit
one, is two rows). ``tun_metadata0..63`` take any length from 1 to 124 bytes: the option length the
TLV map gives them. Errors are ``OfpError`` with OVS's codes: an unknown field ``OFPBMC_BAD_FIELD``, a
length that does not fit the field or the buffer ``OFPBMC_BAD_LEN``, a mask on a field OVS does not
let be masked ``OFPBMC_BAD_MASK``, value bits outside the mask ``OFPBMC_BAD_WILDCARDS``, the same
field twice ``OFPBMC_DUP_FIELD``. Tests: ``tests/test_nxm.py`` (byte for byte against os-ken).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from ofproto import fields as F
from ofproto import tlvmap
from vswitch.openflow.codec import OFPBMC_BAD_FIELD, OFPBMC_BAD_LEN, OFPBMC_DUP_FIELD, OFPET_BAD_MATCH, OfpError

OFPBMC_BAD_WILDCARDS = 5
OFPBMC_BAD_MASK = 8

#: dialects: which wire identity ``encode`` prefers for a field that has several
NXM = "nxm"      # Nicira's format (OpenFlow 1.0 with NXM): NXM classes first
OXM = "oxm"      # OpenFlow 1.2+: the OpenFlow basic class first

_TLV_LEN = 124   # the longest tun_metadata option

# (class, field) -> Field; experimenter OXMs: (0xffff, experimenter id, field) -> Field
_BY_ID: dict[tuple[int, ...], F.Field] = {}
for _f in F.FIELDS:
    if _f.oxm is not None:
        _BY_ID.setdefault(_f.oxm, _f)
    if _f.nxm is not None:
        _BY_ID.setdefault(_f.nxm, _f)
    for _exp, _num in _f.exp:
        _BY_ID.setdefault((F.OFPXMC_EXPERIMENTER, _exp, _num), _f)


def field_by_id(ident: tuple[int, ...]) -> F.Field | None:
    """The field of wire identity ``(class, field)`` or ``(0xffff, experimenter, field)``, or None."""
    return _BY_ID.get(ident)


def _variable(f: F.Field) -> bool:
    return f.where == F.TLV


def wire_id(f: F.Field, dialect: str = OXM) -> tuple[int, ...]:
    """The header identity ``encode`` writes for ``f``: ``(class, field)`` or ``(0xffff, experimenter,
    field)``; ``KeyError`` when the field has no wire identity."""
    order = (f.nxm, f.oxm) if dialect == NXM else (f.oxm, f.nxm)
    for ident in order:
        if ident is not None:
            return ident
    if f.exp:
        return (F.OFPXMC_EXPERIMENTER, *f.exp[0])
    raise KeyError(f"field {f.name} has no NXM or OXM identity")


def encode(fields: Iterable[tuple[F.Field, int, int | None]], dialect: str = OXM,
           lengths: dict[str, int] | None = None) -> bytes:
    """The TLVs of ``(field, value, mask or None)``; a full mask is written as no mask. ``lengths``
    gives a ``tun_metadata`` field its option length in bytes (default 124)."""
    out = []
    for f, value, mask in fields:
        size = (lengths or {}).get(f.name) or tlvmap.length(f.name) or _TLV_LEN if _variable(f) else f.nbytes
        full = (1 << (8 * size)) - 1
        if mask is not None and mask & full == full:
            mask = None
        ident = wire_id(f, dialect)
        body = (value & (full if mask is None else mask)).to_bytes(size, "big")
        if mask is not None:
            body += mask.to_bytes(size, "big")
        if ident[0] == F.OFPXMC_EXPERIMENTER:
            body = struct.pack("!I", ident[1]) + body
        out.append(struct.pack("!HBB", ident[0], ident[-1] << 1 | (mask is not None), len(body)) + body)
    return b"".join(out)


def decode(buf: bytes) -> list[tuple[F.Field, int, int | None]]:
    """Every TLV of ``buf`` (which holds nothing else) as ``(field, value, mask or None)``."""
    got: list[tuple[F.Field, int, int | None]] = []
    seen: set[str] = set()
    off = 0
    while off < len(buf):
        if len(buf) - off < 4:
            raise OfpError(OFPET_BAD_MATCH, OFPBMC_BAD_LEN, f"{len(buf) - off} bytes left: a truncated header")
        cls, fh, length = struct.unpack_from("!HBB", buf, off)
        num, hasmask = fh >> 1, fh & 1
        body = buf[off + 4:off + 4 + length]
        if len(body) < length:
            raise OfpError(OFPET_BAD_MATCH, OFPBMC_BAD_LEN, f"class 0x{cls:04x} field {num}: truncated")
        ident: tuple[int, ...] = (cls, num)
        if cls == F.OFPXMC_EXPERIMENTER:
            if length < 4:
                raise OfpError(OFPET_BAD_MATCH, OFPBMC_BAD_LEN, f"experimenter field {num}: no experimenter id")
            ident = (cls, struct.unpack_from("!I", body)[0], num)
            body = body[4:]
        f = _BY_ID.get(ident)
        if f is None:
            raise OfpError(OFPET_BAD_MATCH, OFPBMC_BAD_FIELD, f"unknown field {'/'.join(f'0x{x:x}' for x in ident)}")
        size = len(body) // 2 if hasmask else len(body)
        if (len(body) % 2 if hasmask else 0) or not (0 < size <= _TLV_LEN if _variable(f) else size == f.nbytes):
            raise OfpError(OFPET_BAD_MATCH, OFPBMC_BAD_LEN, f"{f.name}: {len(body)} bytes{' with mask' * hasmask}")
        value = int.from_bytes(body[:size], "big")
        mask = int.from_bytes(body[size:], "big") if hasmask else None
        if mask is not None:
            if not f.maskable:
                raise OfpError(OFPET_BAD_MATCH, OFPBMC_BAD_MASK, f"{f.name} cannot be masked")
            if value & ~mask:
                raise OfpError(OFPET_BAD_MATCH, OFPBMC_BAD_WILDCARDS, f"{f.name}: value bits outside the mask")
        if f.name in seen:
            raise OfpError(OFPET_BAD_MATCH, OFPBMC_DUP_FIELD, f"{f.name} twice")
        seen.add(f.name)
        got.append((f, value, mask))
        off += 4 + length
    return got
