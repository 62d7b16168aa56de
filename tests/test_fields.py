"""The field registry agrees with the codec, the 1.0/1.3 translation, the datapath key and OVN's flows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dpif import key as K
from ofproto import fields as F
from vswitch.openflow import codec, translate

FIXTURE = Path("/work/shared/fixtures/ovn-23.03-flows")
# flow properties, not match fields
FLOW_KEYWORDS = {"cookie", "table", "priority", "idle_timeout", "hard_timeout", "importance", "reset_counts",
                 "send_flow_rem", "check_overlap", "out_port", "out_group", "duration", "n_packets", "n_bytes",
                 "idle_age", "hard_age"}


def test_codec_oxm_fields() -> None:
    for name, (num, size) in codec.OXM_FIELDS.items():
        f = F.by_oxm_name(name)
        assert f is not None, name
        assert f.oxm == (F.OFPXMC_OPENFLOW_BASIC, num), name
        assert f.nbytes == size, name
        assert F.by_oxm(F.OFPXMC_OPENFLOW_BASIC, num) is f


def test_translate_reads_the_registry() -> None:
    """The 1.3 translation takes widths and prerequisites from the registry: matches that break a
    prerequisite are refused with OFPBMC_BAD_PREREQ, as OVS refuses them, and the same matches with it pass."""
    for name, width in translate.MATCHABLE.items():
        f = F.by_oxm_name(name) or F.by_name(name)
        assert f is not None and f.bits == width and f.where in (F.KEY, F.PIPELINE), name
    assert {"reg0", "xxreg3", "metadata", "ct_state", "tun_metadata0"} - set(translate.MATCHABLE) == {"tun_metadata0"}
    good = [{"eth_type": 0x0800, "ip_proto": 6, "tcp_dst": 80}, {"vlan_vid": 0x100A, "vlan_pcp": 3},
            {"eth_type": 0x86DD, "ip_proto": 58, "icmpv6_type": 135, "icmpv6_code": 0, "ipv6_nd_target": 1},
            {"eth_type": 0x0806, "arp_op": 1}, {"tunnel_id": 5}, {"reg0": 1, "metadata": (2, 3)},
            {"eth_type": 0x0800, "nw_ttl": 3}, {"eth_type": 0x0800, "ct_state": (0x20, 0x30), "ct_nw_src": 1},
            {"vlan_tci": (0x1000, 0x1000), "vlan_pcp": 1}]
    bad = [{"tcp_dst": 80}, {"eth_type": 0x0800, "tcp_dst": 80}, {"eth_type": 0x0800, "ip_proto": 17, "tcp_dst": 80},
           {"vlan_pcp": 3}, {"vlan_vid": 0, "vlan_pcp": 3}, {"eth_type": 0x0800, "arp_op": 1},
           {"eth_type": 0x86DD, "ip_proto": 58, "icmpv6_type": 128, "ipv6_nd_target": 1}, {"nw_ttl": 3},
           {"ct_nw_src": 1}, {"eth_type": 0x0800, "ct_nw_src": 1}]
    for m in good:
        assert set(translate.match_from(codec.OFP13, m)) == set(m), m
    for m in bad:
        with pytest.raises(codec.OfpError) as e:
            translate.match_from(codec.OFP13, m)
        assert (e.value.err_type, e.value.code) == (codec.OFPET_BAD_MATCH, translate.OFPBMC_BAD_PREREQ), m


def test_of10_identities() -> None:
    for name, bit in codec.OFPFW10.items():
        f = F.by_of10(name)
        assert f is not None and f.of10 == (name, bit), name
    src, dst = F.by_of10("nw_src"), F.by_of10("nw_dst")
    assert src is not None and dst is not None and src.of10_cidr and dst.of10_cidr
    assert src.of10 == ("nw_src", 0x3F << codec.OFPFW10_NW_SRC_SHIFT)
    assert dst.of10 == ("nw_dst", 0x3F << codec.OFPFW10_NW_DST_SHIFT)


def test_names_unique_and_shapes() -> None:
    seen: set[str] = set()
    for f in F.FIELDS:
        for n in (f.name, *f.aliases):
            assert n not in seen, n
            seen.add(n)
        assert f.where in (F.KEY, F.PIPELINE, F.TLV, F.ABSENT)
        assert (f.key is not None) == (f.where == F.KEY), f.name
        assert f.bits <= f.nbytes * 8, f.name
        for cname, _, _ in f.prereqs:
            assert F.by_name(cname) is not None, (f.name, cname)
        if f.shares is not None:
            assert F.by_name(f.shares) is not None, f.name
    assert not seen & set(F.PROTOCOLS)


def test_lookups() -> None:
    reg3 = F.by_name("reg3")
    assert reg3 is not None and F.by_nxm_header(0x00010604) is reg3 and F.nxm_header(reg3) == 0x00010604
    assert F.by_nxm_header(0x00000004) is F.by_name("in_port")
    assert F.by_oxm(F.OFPXMC_PACKET_REGS, 2) is F.by_name("xreg2")
    assert F.by_oxm(F.OFPXMC_EXPERIMENTER, 42, F.ONF_EXPERIMENTER) is F.by_name("tcp_flags")
    assert F.by_name("icmp_type", eth_type=0x86DD) is F.by_name("icmpv6_type")
    assert F.key_slice("nw_src") == (K.W_NW_SRC, 0, 32)
    assert F.key_slice("reg0") is None and F.key_slice("tun_metadata0") is None
    with pytest.raises(KeyError):
        F.key_slice("no_such_field")


def _root(f: F.Field) -> str:
    while f.shares is not None:
        nxt = F.by_name(f.shares)
        assert nxt is not None
        f = nxt
    return f.name


def _bits(f: F.Field) -> set[tuple[int, int]]:
    assert f.key is not None
    word, shift, bits = f.key
    if bits <= 64:
        return {(word, shift + i) for i in range(bits)}
    return {(word + i // 64, i % 64) for i in range(bits)}


def test_key_slices_fit_and_do_not_overlap() -> None:
    keyed = [f for f in F.FIELDS if f.key is not None]
    for f in keyed:
        word, shift, bits = f.key  # type: ignore[misc]
        if bits > 64:
            assert shift == 0 and bits % 64 == 0 and word + bits // 64 <= K.KEY_WORDS, f.name
        else:
            assert shift + bits <= 64 and word < K.KEY_WORDS, f.name
        assert not {word} & set(K.RESERVED_WORDS), f.name
    for i, a in enumerate(keyed):
        for b in keyed[i + 1:]:
            if _bits(a) & _bits(b):
                assert _root(a) == _root(b), f"{a.name} overlaps {b.name}"


def test_agrees_with_dpif_key_fields() -> None:
    for name, slot in K.FIELDS.items():
        if name == "tun_metadata":  # Geneve options: placed per tun_metadataN by the TLV map
            continue
        f = F.by_name(name)
        if f is None and name in K.DATAPATH_ONLY:  # no OpenFlow identity (TPIDs, the inner tag)
            continue
        assert f is not None, name
        assert F.key_slice(f) == slot, name


def _fixture_match_names() -> set[str]:
    names: set[str] = set()
    for path in sorted(FIXTURE.glob("flows-ch*.txt")):
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith(("NXST", "OFPST")):
                continue
            match = re.split(r"\s+actions=", line, maxsplit=1)[0]
            for part in match.split(","):
                part = part.strip()
                if part:
                    names.add(part.split("=", 1)[0])
    return names - FLOW_KEYWORDS


@pytest.mark.skipif(not FIXTURE.exists(), reason="OVN fixture not present")
def test_every_ovn_match_field_known() -> None:
    names = _fixture_match_names()
    assert {"metadata", "reg0", "ct_state", "nw_frag", "conj_id"} <= names
    unknown = sorted(n for n in names if F.by_name(n) is None and n not in F.PROTOCOLS)
    assert not unknown
