"""``vswitch.openflow.nicira``: Nicira actions byte for byte against os-ken's NXAction classes (what
``ovs-ofctl`` and os-ken controllers send), decoded back to the same dicts, and OVS's errors for bad ones."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from os_ken.ofproto import ofproto_v1_3_parser as p

from vswitch.openflow import nicira
from vswitch.openflow.codec import OfpError


def osken(action: Any) -> bytes:
    """os-ken's bytes for ``action``, filled to the length its header declares (os-ken writes its stack
    actions 2 bytes short of their 24)."""
    buf = bytearray()
    action.serialize(buf, 0)
    declared = struct.unpack_from("!H", buf, 2)[0]
    return bytes(buf) + bytes(declared - len(buf))


def encode(a: dict[str, Any]) -> bytes:
    return nicira.encode_action(a, lambda acts: b"".join(encode(x) for x in acts))


def decode(raw: bytes) -> dict[str, Any]:
    return nicira.decode_action(raw, decode_all)


def decode_all(raw: bytes) -> list[dict[str, Any]]:
    out, off = [], 0
    while off < len(raw):
        n = struct.unpack_from("!H", raw, off + 2)[0]
        out.append(decode(raw[off:off + n]))
        off += n
    return out


CASES = [
    (p.NXActionResubmitTable(in_port=0xFFF8, table_id=4), {"type": "nx_resubmit_table", "in_port": 0xFFF8, "table": 4}),
    (p.NXActionResubmit(in_port=3), {"type": "nx_resubmit", "in_port": 3}),
    (p.NXActionRegLoad(ofs_nbits=(4 << 6) | 11, dst="reg13", value=5),
     {"type": "nx_reg_load", "ofs": 4, "nbits": 12, "dst": "reg13", "value": 5}),
    (p.NXActionRegMove(src_field="reg1", dst_field="xxreg0", n_bits=16, src_ofs=0, dst_ofs=8),
     {"type": "nx_reg_move", "n_bits": 16, "src_ofs": 0, "dst_ofs": 8, "src": "reg1", "dst": "xxreg0"}),
    (p.NXActionNote(note=[1, 2, 3]), {"type": "nx_note", "note": b"\x01\x02\x03"}),
    (p.NXActionStackPush(field="reg0", start=0, end=32),
     {"type": "nx_stack_push", "ofs": 0, "field": "reg0", "n_bits": 32}),
    (p.NXActionStackPop(field="reg14", start=0, end=16),
     {"type": "nx_stack_pop", "ofs": 0, "field": "reg14", "n_bits": 16}),
    (p.NXActionConjunction(clause=1, n_clauses=2, id_=7),
     {"type": "nx_conjunction", "clause": 1, "n_clauses": 2, "id": 7}),
    (p.NXActionDecTtl(), {"type": "nx_dec_ttl"}),
    (p.NXActionExit(), {"type": "nx_exit"}),
    (p.NXActionOutputReg(ofs_nbits=15, src="reg0", max_len=128),
     {"type": "nx_output_reg", "ofs": 0, "nbits": 16, "src": "reg0", "max_len": 128}),
    (p.NXActionController(max_len=128, controller_id=0, reason=1),
     {"type": "nx_controller", "max_len": 128, "controller_id": 0, "reason": 1}),
    (p.NXActionCTClear(), {"type": "nx_ct_clear"}),
    (p.NXActionSetTunnel(tun_id=9), {"type": "nx_set_tunnel", "tun_id": 9}),
    (p.NXActionSetTunnel64(tun_id=1 << 40), {"type": "nx_set_tunnel64", "tun_id": 1 << 40}),
]


@pytest.mark.parametrize(("theirs", "mine"), CASES, ids=[c[1]["type"] for c in CASES])
def test_actions_are_byte_for_byte_what_os_ken_sends(theirs: Any, mine: dict[str, Any]) -> None:
    raw = osken(theirs)
    assert decode(raw) == mine
    assert encode(mine) == raw


def test_reg_load2_clone_and_dec_ttl_ids_round_trip() -> None:
    """The actions os-ken cannot write (or writes without their arguments) decode to what was encoded."""
    ids = {"type": "nx_dec_ttl_cnt_ids", "ids": [1, 2, 3]}
    raw = encode(ids)
    assert len(raw) == 24 and decode(raw) == ids
    load2 = {"type": "nx_reg_load2", "field": "reg0", "value": 5, "mask": 0xFF}
    raw = encode(load2)
    assert len(raw) % 8 == 0 and decode(raw) == load2
    clone = {"type": "nx_clone", "actions": [{"type": "nx_resubmit_table", "in_port": 0xFFF8, "table": 8}, load2]}
    assert decode(encode(clone)) == clone


@pytest.mark.parametrize(("raw", "code"), [
    (struct.pack("!HHIH6x", 0xFFFF, 16, 0x2320, 999), nicira.OFPBAC_BAD_EXPERIMENTER_TYPE),
    (struct.pack("!HHIH6x", 0xFFFF, 16, 0x1234, 1), nicira.OFPBAC_BAD_EXPERIMENTER),
    (struct.pack("!HHIH4x", 0xFFFF, 14, 0x2320, 17), 1),                     # not a multiple of 8
    (struct.pack("!HHIHHHHII", 0xFFFF, 24, 0x2320, 6, 16, 0, 0, 0x007F0004, 0x00010004), nicira.OFPBAC_BAD_ARGUMENT),
])
def test_bad_nicira_actions_get_ovs_errors(raw: bytes, code: int) -> None:
    with pytest.raises(OfpError) as e:
        decode(raw)
    assert e.value.code == code, str(e.value)
    assert decode(osken(p.NXActionExit())) == {"type": "nx_exit"}      # the positive twin
