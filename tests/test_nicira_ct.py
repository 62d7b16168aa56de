"""``ct``, ``nat``, ``ct_clear`` and ``learn``: the Nicira codec (``vswitch.openflow.nicira``), the conversion
to the action model (``vswitch.openflow.nx_ct``), the model's rules (``ofproto.actions.check_action``) and
OVS's text (``ofproto.nxtext``), each against a real oracle:

* every ct / learn / ct_clear OVN programmed (``tests/fixtures/ovn-23.03-flows``): the real ``ovs-ofctl``
  encodes the fixture's text, we decode, convert and format it back to the same text, and encode it back to
  ``ovs-ofctl``'s bytes;
* os-ken's NXActionCT / NXActionNAT / NXActionLearn / NXActionCTClear: the same bytes as ours;
* a real ovs-vswitchd 3.1: malformed ct / nat / learn actions get the same OpenFlow error from it as from
  our decoder and rules, and its connection lives.
"""

from __future__ import annotations

import ipaddress
import re
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from os_ken.ofproto import nicira_ext
from os_ken.ofproto import ofproto_v1_3_parser as p

from ofproto.actions import Ct, CtClear, FlowError, Learn, LearnSpec, Load, Move, Nat, SetField, check_action
from ofproto.nxtext import format_ct_family, subfield
from ofproto.rules import Instructions, Match
from ofproto.tables import check_consistency
from tests.ofctl_bytes import ofctl_actions
from tests.switchutil import private_switch
from tests.test_bridge_identity import RealOvs
from vswitch.openflow import nicira, nxm
from vswitch.openflow.actionwire import action_from_wire
from vswitch.openflow.codec import OFP15, OFP_NO_BUFFER, Msg, OfpError, actions_decode, encode
from vswitch.openflow.flows import FLOW_ERRORS
from vswitch.openflow.nx_ct import FROM_NX, TO_NX

FIXTURES = Path(__file__).parent / "fixtures" / "ovn-23.03-flows"
OFPAT_SET_FIELD, OFPAT_COPY_FIELD, OFPAT_EXPERIMENTER = 25, 28, 0xFFFF


# ---------------------------------------------------------------- a whole OpenFlow 1.5 action list
def decode_all(raw: bytes) -> list[dict[str, Any]]:
    """Every action of ``raw``: Nicira ones by our codec, set_field / copy_field with any field class."""
    out, off = [], 0
    while off < len(raw):
        kind, n = struct.unpack_from("!HH", raw, off)
        one = raw[off:off + n]
        if kind == OFPAT_EXPERIMENTER:
            out.append(nicira.decode_action(one, decode_all))
        elif kind == OFPAT_SET_FIELD:
            ((f, value, mask),) = nxm.decode(one[4:8 + one[7]])
            out.append({"type": "set_field", "field": f.name, "value": value, "mask": mask})
        elif kind == OFPAT_COPY_FIELD:
            nbits, sofs, dofs = struct.unpack_from("!HHH", one, 4)
            src, _ = nicira._header_field(one, 12)
            dst, _ = nicira._header_field(one, 16)
            out.append({"type": "copy_field", "n_bits": nbits, "src_ofs": sofs, "dst_ofs": dofs, "src": src,
                        "dst": dst})
        else:
            out += actions_decode(OFP15, one)
        off += n
    return out


def encode_all(actions: list[dict[str, Any]]) -> bytes:
    out = b""
    for a in actions:
        if a["type"] == "set_field":
            tlv = nxm.encode([(nicira._field(a["field"]), a["value"], a["mask"])], nxm.OXM)
            n = (4 + len(tlv) + 7) // 8 * 8
            out += struct.pack("!HH", OFPAT_SET_FIELD, n) + tlv + bytes(n - 4 - len(tlv))
        elif a["type"] == "copy_field":
            out += struct.pack("!HHHHH2x", OFPAT_COPY_FIELD, 24, a["n_bits"], a["src_ofs"], a["dst_ofs"])
            out += nicira.field_header(a["src"]) + nicira.field_header(a["dst"])
        else:
            out += nicira.encode_action(a, encode_all)
    return out


def to_action(d: dict[str, Any]) -> Any:
    """One decoded action as the model's (what ``flows.action_from_wire`` does once wired)."""
    t = d["type"]
    if t in FROM_NX:
        return FROM_NX[t](d, to_action)
    if t == "set_field":
        return SetField(d["field"], d["value"], d["mask"])
    if t == "copy_field":
        return Move(d["src"], d["dst"], d["n_bits"], d["src_ofs"], d["dst_ofs"])
    if t == "nx_reg_load":
        return Load.bits(d["dst"], d["value"], d["ofs"], d["nbits"])
    raise AssertionError(f"no conversion for {t}")


def to_dict(a: Any) -> dict[str, Any]:
    if type(a) in TO_NX:
        return TO_NX[type(a)](a, to_dict)
    if isinstance(a, Move):
        return {"type": "copy_field", "n_bits": a.nbits, "src_ofs": a.src_ofs, "dst_ofs": a.dst_ofs, "src": a.src,
                "dst": a.dst}
    if isinstance(a, SetField):
        return {"type": "set_field", "field": a.field, "value": a.value, "mask": a.mask}
    raise AssertionError(f"no conversion for {a!r}")


# ---------------------------------------------------------------- the OVN fixture
def split_actions(text: str) -> list[str]:
    """Top-level actions of an ``actions=`` text (commas inside parentheses kept)."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        depth += (ch == "(") - (ch == ")")
        cur += ch
    return [*out, cur] if cur else out


def fixture_actions() -> list[str]:
    """Every distinct ct(...), learn(...) and ct_clear the OVN fixture holds (flows, and group buckets)."""
    found: set[str] = set()
    for path in sorted(FIXTURES.glob("*.txt")):
        for line in path.read_text().splitlines():
            for acts in re.findall(r"actions=(.*?)(?=,bucket=|$)", line):
                for a in split_actions(acts.strip()):
                    if a.startswith(("ct(", "learn(")) or a == "ct_clear":
                        found.add(a)
    return sorted(found)


FIXTURE_ACTIONS = fixture_actions()


def test_the_fixture_has_what_ovn_uses() -> None:
    """The fixture cases below are not vacuous: ct with nat / exec / zone from a register, and learn."""
    kinds = {a.split("(")[0] for a in FIXTURE_ACTIONS}
    assert kinds == {"ct", "learn", "ct_clear"}, kinds
    assert any("nat(dst=" in a for a in FIXTURE_ACTIONS) and any("exec(" in a for a in FIXTURE_ACTIONS)
    assert len(FIXTURE_ACTIONS) >= 15, FIXTURE_ACTIONS


@pytest.mark.parametrize("text", FIXTURE_ACTIONS)
def test_fixture_actions_decode_to_ovs_text_and_encode_to_ovs_bytes(text: str) -> None:
    """``ovs-ofctl`` encodes the fixture's action; decoded and converted it prints as the fixture's text (OVS's
    dump-flows), and our encoding of the model is ``ovs-ofctl``'s bytes."""
    raw = ofctl_actions(f"tcp,actions={text}")
    decoded = decode_all(raw)
    assert len(decoded) == 1, decoded
    action = to_action(decoded[0])
    check_action(action)
    assert format_ct_family(action) == text
    assert encode_all([to_dict(action)]) == raw


EXTRA = [
    "ct(commit,force,zone=5,alg=ftp)",
    "ct(table=7,zone=NXM_NX_REG0[16..31],alg=tftp)",
    "ct(commit,nat(src=10.0.0.1-10.0.0.9:100-200,persistent,random))",
    "ct(commit,nat(dst=[fe80::1]-[fe80::9]:80,hash))",
    "ct(commit,nat(dst=fe80::1))",
    "ct(commit,exec(set_field:0x5->ct_mark,set_field:0xff/0xff->ct_label))",
    "learn(table=3,idle_timeout=10,hard_timeout=20,fin_idle_timeout=5,fin_hard_timeout=6,priority=7,"
    "send_flow_rem,cookie=0x9,NXM_OF_VLAN_TCI[0..11],NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],"
    "load:NXM_OF_IN_PORT[]->NXM_NX_REG0[0..15],output:NXM_OF_IN_PORT[])",
    "learn(table=1,NXM_NX_REG1[3..7]=0x1f,eth_src=00:11:22:33:44:55,load:0xab->NXM_NX_XXREG3[8..15])",
    "fin_timeout(idle_timeout=5,hard_timeout=10)",
    "fin_timeout(hard_timeout=3)",
]


@pytest.mark.parametrize("text", EXTRA)
def test_other_arguments_print_as_ovs_prints_them(text: str) -> None:
    """force, an immediate zone, alg, nat ranges (IPv4, bracketed IPv6), exec with ct_label, learn's timeouts,
    priority, send_flow_rem, field copies, partial immediates and output: the same round trip."""
    match = "udp" if "tftp" in text else "tcp6" if "fe80" in text else "tcp"
    raw = ofctl_actions(f"{match},actions={text}")
    action = to_action(decode_all(raw)[0])
    check_action(action)
    assert format_ct_family(action) == text
    assert encode_all([to_dict(action)]) == raw


@pytest.mark.parametrize("name", ["reg13", "xxreg0", "ct_label", "metadata", "ip_src", "tcp_dst", "eth_src",
                                  "in_port", "tun_id", "xreg3", "pkt_mark", "nw_proto", "vlan_tci", "ct_mark"])
def test_subfield_names_are_the_ones_ovs_prints(name: str) -> None:
    """``ovs-ofctl`` prints a learned field copy of ``name`` with the same NXM / OXM name as ours."""
    spec = subfield(name, 0, __import__("ofproto.actions", fromlist=["field_bits"]).field_bits(name))
    learn = f"learn(table=1,eth_type=0x800,nw_proto=6,{spec})"    # the learned flow has ip_src's prerequisites
    raw = ofctl_actions(f"tcp,actions={learn}")
    action = to_action(decode_all(raw)[0])
    assert action.specs[2].dst == nicira._field(name).name
    assert format_ct_family(action) == learn


# ---------------------------------------------------------------- os-ken
def osken(action: Any) -> bytes:
    """os-ken's bytes, filled to the length its header declares (it leaves nat's padding out)."""
    buf = bytearray()
    action.serialize(buf, 0)
    return bytes(buf) + bytes(struct.unpack_from("!H", buf, 2)[0] - len(buf))


OSKEN = [
    (p.NXActionCT(flags=1, zone_src="reg13", zone_ofs_nbits=nicira_ext.ofs_nbits(0, 15), recirc_table=16, alg=0,
                  actions=[p.NXActionNAT(flags=1)]),
     Ct(commit=True, zone=("reg13", 0, 16), table=16, actions=(Nat("src"),))),
    (p.NXActionCT(flags=0, zone_src="", zone_ofs_nbits=7, recirc_table=255, alg=21, actions=[]),
     Ct(zone=7, alg=21)),
    (p.NXActionNAT(flags=2, range_ipv4_min="10.77.0.2", range_ipv4_max="10.77.0.9", range_proto_min=22,
                   range_proto_max=80),
     Nat("dst", ipaddress.IPv4Address("10.77.0.2"), ipaddress.IPv4Address("10.77.0.9"), 22, 80)),
    (p.NXActionCTClear(), CtClear()),
    (p.NXActionLearn(table_id=69, priority=0x8000, cookie=0x5E8907A2, flags=2, specs=[
        p.NXFlowSpecMatch(src=("metadata", 0), dst=("metadata", 0), n_bits=64),
        p.NXFlowSpecMatch(src=0x800, dst=("eth_type_nxm", 0), n_bits=16),
        p.NXFlowSpecMatch(src=("tcp_dst_nxm", 0), dst=("tcp_src_nxm", 0), n_bits=16),
        p.NXFlowSpecLoad(src=1, dst=("reg10", 7), n_bits=1),
        p.NXFlowSpecOutput(src=("in_port_nxm", 0), n_bits=16)]),
     Learn(69, (LearnSpec("match", 64, "metadata", 0, 0, "metadata", 0),
                LearnSpec("match", 16, None, 0, 0x800, "eth_type", 0),
                LearnSpec("match", 16, "tcp_dst", 0, 0, "tcp_src", 0),
                LearnSpec("load", 1, None, 0, 1, "reg10", 7),
                LearnSpec("output", 16, "in_port")), cookie=0x5E8907A2, delete_learned=True)),
]


@pytest.mark.parametrize(("theirs", "mine"), OSKEN, ids=[type(m).__name__ for _, m in OSKEN])
def test_encodings_are_byte_for_byte_what_os_ken_sends(theirs: Any, mine: Any) -> None:
    raw = osken(theirs)
    assert encode_all([to_dict(mine)]) == raw
    assert to_action(decode_all(raw)[0]) == mine


# ---------------------------------------------------------------- the model's rules
@pytest.mark.parametrize(("action", "code"), [
    (Nat("src"), "bad_set_value"),                                             # nat outside ct
    (Ct(actions=(SetField("reg0", 1),)), "bad_argument"),                      # exec sets a register
    (Ct(actions=(Move("reg0", "ip_dst", 32),)), "bad_argument"),               # exec moves into a header
    (Ct(zone=("reg0", 0, 8)), "bad_argument"),                                 # a zone is 16 bits
    (Ct(table=255), "bad_table_id"),
    (Ct(force=True), "bad_argument"),                                          # force without commit
    (Ct(actions=(Nat("dst"),)), "bad_argument"),                               # nat(dst) without commit
    (Learn(specs=(LearnSpec("load", 8, None, 0, 0x1FF, "reg0", 0),)), "bad_argument"),   # value too wide
    (Learn(specs=(LearnSpec("load", 8, "reg1", 0, 0, "ct_state", 0),)), "bad_set_field"),  # read-only
    (Learn(specs=(LearnSpec("match", 8, "reg1", 30, 0, "reg2", 0),)), "bad_argument"),   # past reg1's 32 bits
])
def test_check_refuses_what_ovs_refuses(action: Any, code: str) -> None:
    with pytest.raises(FlowError) as e:
        check_action(action)
    assert e.value.code == code
    check_action(Ct(commit=True, zone=("reg13", 0, 16), actions=(Nat("src"), SetField("ct_mark", 0, 1))))


# ---------------------------------------------------------------- malformed on the wire, against real OVS
@pytest.fixture(scope="module")
def real_ovs() -> Iterator[RealOvs]:
    with tempfile.TemporaryDirectory(prefix="realovsct-") as rundir:
        ovs = RealOvs(rundir)
        try:
            ovs.start()
            ovs.add_bridge("brct")
            yield ovs
        finally:
            ovs.stop()


def _nx(sub: int, body: bytes) -> bytes:
    n = (10 + len(body) + 7) // 8 * 8
    return struct.pack("!HHIH", 0xFFFF, n, 0x2320, sub) + body + bytes(n - 10 - len(body))


def _ct(flags: int = 1, zone_src: bytes = bytes(4), zone: int = 0, table: int = 255, alg: int = 0,
        inner: bytes = b"") -> bytes:
    body = struct.pack("!H4sHB3xH", flags, zone_src, zone, table, alg) + inner
    return struct.pack("!HHIH", 0xFFFF, 10 + len(body), 0x2320, 35) + body


def _nat(flags: int, present: int = 0, rest: bytes = b"") -> bytes:
    return _nx(36, struct.pack("!2xHH", flags, present) + rest)


def _learn(flags: int = 0, specs: bytes = b"") -> bytes:
    return _nx(16, struct.pack("!HHHQHBxHH", 0, 0, 0x8000, 0, flags, 1, 0, 0) + specs)


_SET_REG0 = struct.pack("!HH", 25, 16) + nxm.encode([(nicira._field("reg0"), 1, None)], nxm.OXM) + bytes(4)
_SET_MARK = struct.pack("!HH", 25, 16) + nxm.encode([(nicira._field("ct_mark"), 1, None)], nxm.OXM) + bytes(4)
_REG13 = nicira.field_header("reg13")

MALFORMED = [
    ("ct exec setting a register", _ct(inner=_SET_REG0)),
    ("ct zone from an unknown field", _ct(zone_src=struct.pack("!HBB", 0x0000, 0xA0, 4), zone=15)),
    ("nat outside ct", _nat(1)),
    ("nat with src and dst", _ct(inner=_nat(3))),
    ("ct exec without commit", _ct(flags=0, inner=_SET_MARK)),
    ("ct force without commit", _ct(flags=2)),
    ("ct zone from 8 bits", _ct(zone_src=_REG13, zone=7)),
    ("ct nat(src) without commit", _ct(flags=0, inner=_nat(1))),
    ("learn with an unknown flag", _learn(flags=0x40)),
    ("learn spec of the reserved destination", _learn(specs=struct.pack("!HH", 3 << 11 | 1 << 13 | 16, 5))),
    ("learn with bytes after its last spec", _learn(specs=struct.pack("!HH", 0, 5))),
    ("learn immediate cut short", _nx(16, struct.pack("!HHHQHBxHH", 0, 0, 0x8000, 0, 0, 1, 0, 0)
                                      + struct.pack("!H", 1 << 13 | 64) + bytes(4))),
    ("nat whose range is cut short", _ct(inner=struct.pack("!HHIH2xHH", 0xFFFF, 16, 0x2320, 36, 1, 0x3))),
    ("ct with a nested action of a bad length", _ct(inner=struct.pack("!HH4x", 0, 12) + bytes(8))),
    ("learn spec from an unknown field", _learn(specs=struct.pack("!HHBBH", 16, 0x0000, 0xA0, 4, 0)
                                                + _REG13 + bytes(2))),
]
GOOD = [("ct(commit) setting ct_mark", _ct(inner=_SET_MARK)),
        ("ct with a flag OVS does not define (ignored)", _ct(flags=0x11)),
        ("ct with a plain nat and no commit", _ct(flags=0, inner=_nat(0))),
        ("nat with a range bit OVS does not define (ignored)", _ct(inner=_nat(1, 0x40))),
        ("learn matching reg13", _learn(specs=struct.pack("!H", 16) + _REG13 + bytes(2) + _REG13 + bytes(2)))]


def _flow_mod(actions: bytes, xid: int, match: dict[str, int] | None = None) -> bytes:
    base = encode(Msg(OFP15, "flow_mod", xid, {"table_id": 0, "command": 0, "priority": 5, "buffer_id": OFP_NO_BUFFER,
                                              "out_port": 0xFFFFFFFF, "out_group": 0xFFFFFFFF, "flags": 0,
                                              "match": {"eth_type": 0x0800} if match is None else match,
                                              "instructions": []}))
    out = bytearray(base + struct.pack("!HH4x", 4, 8 + len(actions)) + actions)
    struct.pack_into("!H", out, 2, len(out))
    return bytes(out)


def ours(raw: bytes, match: Match | None = None) -> tuple[int, int] | None:
    """What our decoder, conversion and rules answer: (error type, code), or None (taken)."""
    try:
        acts = tuple(to_action(d) for d in decode_all(raw))
        for a in acts:
            check_action(a)
        check_consistency(Match(eth_type=0x0800) if match is None else match, Instructions(apply=acts))
    except OfpError as e:
        return e.err_type, e.code
    except FlowError as e:
        return FLOW_ERRORS[e.code]
    return None


@pytest.fixture(scope="module")
def sw() -> Iterator[Any]:
    with private_switch(prefix="pvct-") as s:
        s.vsctl("add-br", "brct")
        yield s


@pytest.mark.integration
def test_malformed_actions_get_the_error_real_ovs_sends(real_ovs: RealOvs, sw: Any) -> None:
    """Each malformed action: the same (type, code) from OVS 3.1, from pyvswitch and from our decoder and rules
    alone; both connections live (the echo after comes back) and nothing is added; the well-formed twins are
    taken by both."""
    from tests.test_openflow15 import ofctl, run_script
    for what, raw in MALFORMED + GOOD:
        expect = ours(raw)
        for target in (real_ovs, sw):
            answers = run_script(f"{target.rundir}/brct.mgmt", OFP15, [_flow_mod(raw, 9)])
            got = [(t, c) for kind, _x, t, c in answers if kind == "error"]
            assert got == ([expect] if expect else []), (what, type(target).__name__, got, expect)
            flows = ofctl(target, "-O", "OpenFlow15", "dump-flows", "brct", "table=0,ip").stdout
            assert ("priority=5,ip" in flows) == (expect is None), (what, flows)
            ofctl(target, "-O", "OpenFlow15", "del-flows", "brct", "table=0,ip")
        if (what, raw) in GOOD:
            assert expect is None, what
        else:
            assert expect is not None, what


@pytest.mark.integration
def test_ct_and_learn_need_the_match_ovs_needs(real_ovs: RealOvs, sw: Any) -> None:
    """ct in a flow that does not match IP, ct(alg=ftp) without TCP, learn copying a TCP port in a flow that does
    not match TCP: OFPBAC_MATCH_INCONSISTENT from OVS and from pyvswitch alike; with the match, taken."""
    from tests.test_openflow15 import ofctl, run_script
    def learned_tcp(before: bytes) -> bytes:
        """learn(..., [before,] NXM_OF_TCP_DST[]=NXM_OF_TCP_SRC[]): the learned match needs TCP's prerequisites."""
        return _learn(specs=before + struct.pack("!H", 16) + nicira.field_header("tcp_src") + bytes(2)
                      + nicira.field_header("tcp_dst") + bytes(2))

    tcp_src = _learn(specs=struct.pack("!H", 16) + nicira.field_header("tcp_src") + bytes(2)
                     + nicira.field_header("reg1") + bytes(2))
    cases = [("ct without ip", _ct(), {}, None),
             ("ct with ip", _ct(), {"eth_type": 0x0800}, Match(eth_type=0x0800)),
             ("ct alg=ftp without tcp", _ct(alg=21), {"eth_type": 0x0800}, Match(eth_type=0x0800)),
             ("ct alg=ftp with tcp", _ct(alg=21), {"eth_type": 0x0800, "ip_proto": 6},
              Match(eth_type=0x0800, ip_proto=6)),
             ("learn of tcp_src without tcp", tcp_src, {"eth_type": 0x0800}, Match(eth_type=0x0800)),
             ("learn of tcp_src with tcp", tcp_src, {"eth_type": 0x0800, "ip_proto": 6},
              Match(eth_type=0x0800, ip_proto=6)),
             ("learned tcp_dst without ip", learned_tcp(b""), {"eth_type": 0x0800, "ip_proto": 6},
              Match(eth_type=0x0800, ip_proto=6)),
             ("learned tcp_dst with tcp", learned_tcp(
                 struct.pack("!H", 1 << 13 | 16) + struct.pack("!H", 0x800) + nicira.field_header("eth_type")
                 + bytes(2) + struct.pack("!H", 1 << 13 | 8) + struct.pack("!H", 6)
                 + nicira.field_header("nw_proto") + bytes(2)), {"eth_type": 0x0800, "ip_proto": 6},
              Match(eth_type=0x0800, ip_proto=6))]
    for what, raw, wire_match, match in cases:
        expect = ours(raw, match if match is not None else Match())
        assert (expect is None) == what.endswith(("with ip", "with tcp")), (what, expect)
        for target in (real_ovs, sw):
            answers = run_script(f"{target.rundir}/brct.mgmt", OFP15, [_flow_mod(raw, 9, wire_match)])
            got = [(t, c) for kind, _x, t, c in answers if kind == "error"]
            assert got == ([expect] if expect else []), (what, type(target).__name__, got, expect)
            ofctl(target, "-O", "OpenFlow15", "del-flows", "brct")


# ---------------------------------------------------------------- properties
_FIELDS16 = ["reg0", "reg13", "tcp_src", "in_port", "eth_type"]


@st.composite
def learns(draw: st.DrawFn) -> Learn:
    specs = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["match", "load", "output"]))
        n = draw(st.integers(1, 16))
        src = None if kind != "output" and draw(st.booleans()) else draw(st.sampled_from(_FIELDS16))
        value = draw(st.integers(0, (1 << n) - 1)) if src is None else 0
        dst = None if kind == "output" else draw(st.sampled_from(["reg1", "reg2", "metadata"]))
        specs.append(LearnSpec(kind, n, src, draw(st.integers(0, 16 - n)) if src else 0, value, dst,
                               draw(st.integers(0, 16)) if dst else 0))
    return Learn(draw(st.integers(0, 254)), tuple(specs), draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF)),
                 draw(st.integers(0, 0xFFFF)), draw(st.integers(0, (1 << 64) - 1)), draw(st.booleans()),
                 draw(st.booleans()), draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF)))


@st.composite
def cts(draw: st.DrawFn) -> Ct:
    nat = draw(st.sampled_from([None, Nat(), Nat("src"), Nat("dst", ipaddress.IPv4Address("10.0.0.1"),
                                                             ipaddress.IPv4Address("10.0.0.9"), 1, 99, True),
                                Nat("src", ipaddress.IPv6Address("fe80::1"), None, 80, None, False, True, True)]))
    zone = draw(st.one_of(st.integers(0, 0xFFFF), st.tuples(st.sampled_from(["reg13", "reg11"]),
                                                            st.sampled_from([0, 16]), st.just(16))))
    return Ct(draw(st.booleans()), False, zone, draw(st.one_of(st.none(), st.integers(0, 254))),
              draw(st.sampled_from([0, 21, 69])), () if nat is None else (nat,))


@settings(max_examples=200, deadline=None)
@given(st.one_of(learns(), cts()))
def test_model_to_wire_and_back_is_the_same_action(action: Any) -> None:
    raw = encode_all([to_dict(action)])
    assert len(raw) % 8 == 0
    assert to_action(decode_all(raw)[0]) == action


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([16, 35, 36]), st.binary(max_size=80))
def test_random_bodies_decode_or_get_an_openflow_error(subtype: int, body: bytes) -> None:
    """Whatever follows a ct / nat / learn header: an action, or an ``OfpError`` / ``FlowError`` (an OpenFlow
    error for the sender), never another exception."""
    raw = _nx(subtype, body)
    for decode, convert in ((decode_all, to_action),                                 # this file's decoder
                            (lambda b: actions_decode(OFP15, b), lambda d: action_from_wire(OFP15, d))):  # the switch's
        try:
            for d in decode(raw):
                check_action(convert(d))
        except (OfpError, FlowError):
            pass
