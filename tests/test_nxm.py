"""``vswitch.openflow.nxm``: NXM / OXM match TLVs of every class, byte for byte against os-ken's OpenFlow
1.3 match serializer, and OVS's errors for malformed ones."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from os_ken.ofproto import ofproto_v1_3_parser as p13

from ofproto import fields as F
from vswitch.openflow import nxm
from vswitch.openflow.codec import OfpError

#: registry name -> os-ken's OXM name, for the fields both know under another name
OSKEN_NAME = {"tun_id": "tunnel_id", "in_port_oxm": "in_port", "ip_src": "ipv4_src", "ip_dst": "ipv4_dst"}
FIELDS = {f.name: f for f in F.FIELDS}
SAMPLE = ("reg0", "reg15", "xreg3", "xxreg0", "tun_id", "ct_state", "ct_mark", "ct_label", "pkt_mark", "eth_dst",
          "in_port_oxm", "ip_src", "metadata", "tun_flags")


def osken_bytes(items: list[tuple[str, int, int | None]]) -> bytes:
    """os-ken's OXM TLVs for ``(registry name, value, mask)`` (without ofp_match's header and padding)."""
    kw = {OSKEN_NAME.get(n, n): (v if m is None else (v, m)) for n, v, m in items}
    buf = bytearray()
    length = p13.OFPMatch(**kw).serialize(buf, 0)
    raw = bytes(buf)
    (mlen,) = struct.unpack_from("!H", raw, 2)
    assert length >= mlen
    return raw[4:mlen]


def tlvs(raw: bytes) -> set[bytes]:
    out, off = set(), 0
    while off < len(raw):
        n = raw[off + 3]
        out.add(raw[off:off + 4 + n])
        off += 4 + n
    return out


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_encode_is_what_os_ken_writes_and_decode_reads_it_back(data: st.DataObject) -> None:
    names = data.draw(st.lists(st.sampled_from(SAMPLE), min_size=1, max_size=6, unique=True))
    items = []
    for n in names:
        f = FIELDS[n]
        full = (1 << (8 * f.nbytes)) - 1
        mask = data.draw(st.none() | st.integers(1, full - 1)) if f.maskable else None
        value = data.draw(st.integers(0, full)) & (full if mask is None else mask)
        items.append((f, value, mask))
    mine = nxm.encode(items)
    theirs = osken_bytes([(f.name, v, m) for f, v, m in items])
    assert tlvs(mine) == tlvs(theirs)          # the same TLVs (os-ken orders them its own way)
    assert nxm.decode(theirs) and {(f.name, v, m) for f, v, m in nxm.decode(theirs)} == \
        {(f.name, v, m) for f, v, m in items}


def test_nxm_dialect_prefers_nicira_classes_and_experimenter_fields_round_trip() -> None:
    f = FIELDS["eth_dst"]
    assert nxm.encode([(f, 0x020000000001, None)], nxm.NXM)[:4] == bytes.fromhex("00000206")   # NXM_OF_ETH_DST
    assert nxm.encode([(f, 0x020000000001, None)], nxm.OXM)[:4] == bytes.fromhex("80000606")   # OXM eth_dst
    meta = FIELDS["tun_metadata0"]
    raw = nxm.encode([(meta, 0xAB, 0xFF)], lengths={"tun_metadata0": 4})
    assert raw == bytes.fromhex("0001510800 0000ab000000ff".replace(" ", ""))
    assert nxm.decode(raw) == [(meta, 0xAB, 0xFF)]
    exp = [f for f in F.FIELDS if f.exp]
    assert exp, "the registry has experimenter OXMs"
    for f in exp:          # each experimenter identity decodes to its field
        (eid, num), = f.exp[:1]
        raw = struct.pack("!HBBI", F.OFPXMC_EXPERIMENTER, num << 1, 4 + f.nbytes, eid) + (1).to_bytes(f.nbytes, "big")
        assert nxm.decode(raw) == [(f, 1, None)]


@pytest.mark.parametrize(("raw", "code", "why"), [
    ("0001", nxm.OFPBMC_BAD_LEN, "truncated header"),
    ("00010004000000", nxm.OFPBMC_BAD_LEN, "truncated body"),
    ("0001000300000005", nxm.OFPBMC_BAD_LEN, "reg0 is 4 bytes"),
    ("007f000400000005", 6, "unknown class"),
    ("00007e0400000005", 6, "unknown NXM_OF field 63"),
    ("000001040005" + "ffff", nxm.OFPBMC_BAD_MASK, "in_port (NXM) cannot be masked"),
    ("00010108000000ff0000000f", nxm.OFPBMC_BAD_WILDCARDS, "value outside mask"),
    ("000100040000000100010004 00000002".replace(" ", ""), nxm.OFPBMC_DUP_FIELD, "reg0 twice"),
])
def test_malformed_tlvs_get_ovs_errors(raw: str, code: int, why: str) -> None:
    with pytest.raises(OfpError) as e:
        nxm.decode(bytes.fromhex(raw))
    assert e.value.code == code, (why, str(e.value))
    # the positive twin: a well-formed reg0 decodes
    assert nxm.decode(bytes.fromhex("0001000400000005")) == [(FIELDS["reg0"], 5, None)]
