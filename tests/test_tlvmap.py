"""``ofproto.tlvmap``: where mapped Geneve options sit in the flow key (``W_TUN_METADATA``), and that a place,
once given, never moves while its field stays mapped (flows compiled against it keep matching)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dpif import key as K
from ofproto import tlvmap
from ofproto.rules import ALL_MATCH_FIELDS, Match


@pytest.fixture(autouse=True)
def empty_map() -> Iterator[None]:
    tlvmap.place({})
    yield
    tlvmap.place({})


def test_four_byte_options_share_a_word_and_long_ones_take_whole_words() -> None:
    tlvmap.place({0: (0x102, 0x80, 4), 1: (0x102, 0x81, 8), 2: (0x102, 0x82, 4), 3: (0x102, 0x83, 16)})
    w = K.W_TUN_METADATA
    assert tlvmap.flow_slice("tun_metadata3") == (w, 0, 128)          # the longest first
    assert tlvmap.flow_slice("tun_metadata1") == (w + 2, 0, 64)
    assert tlvmap.flow_slice("tun_metadata0") == (w + 3, 32, 32)      # high half of the next word
    assert tlvmap.flow_slice("tun_metadata2") == (w + 3, 0, 32)
    m = Match(tun_metadata0=(0x1234, 0xFFFF), tun_metadata3=1)
    assert (w + 3, 0x1234 << 32, 0xFFFF << 32) in m.words()
    assert ALL_MATCH_FIELDS["tun_metadata1"][0] == 64


def test_places_do_not_move_when_options_are_added_or_removed() -> None:
    tlvmap.place({0: (0x102, 0x80, 4)})
    before = tlvmap.flow_slice("tun_metadata0")
    tlvmap.place({0: (0x102, 0x80, 4), 7: (0x102, 0x87, 32)})
    assert tlvmap.flow_slice("tun_metadata0") == before
    tlvmap.place({7: (0x102, 0x87, 32)})
    assert tlvmap.flow_slice("tun_metadata0") is None and "tun_metadata0" not in ALL_MATCH_FIELDS


def test_what_the_key_cannot_hold_stays_mapped_without_a_place() -> None:
    tlvmap.place({5: (0x103, 1, 124), 6: (0x103, 2, 12), **{i: (0x104, i, 8) for i in range(8, 17)}})
    assert tlvmap.length("tun_metadata5") == 124 and tlvmap.flow_slice("tun_metadata5") is None
    assert "not 124" in tlvmap.why_unplaced("tun_metadata5") and "not 12" in tlvmap.why_unplaced("tun_metadata6")
    placed = [i for i in range(8, 17) if tlvmap.flow_slice(f"tun_metadata{i}") is not None]
    assert len(placed) == 8                                           # 8 x 8 bytes fill the 64
    assert "taken" in tlvmap.why_unplaced("tun_metadata16")
    with pytest.raises(ValueError, match="not 124"):
        Match(tun_metadata5=1)
