"""``classifier.wire``: the big-endian frame readers every parser uses, against ``int.from_bytes``."""

from __future__ import annotations

import numba
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from classifier.wire import be16, be32, be48, be64, u8


@numba.njit(cache=True)
def _read_all(d: np.ndarray, s: int, o: int) -> tuple[int, int, int, int, np.uint64]:
    return u8(d, s, o), be16(d, s, o), be32(d, s, o), be48(d, s, o), be64(d, s, o)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=3 * 40, max_size=3 * 40), st.integers(0, 2), st.integers(0, 32))
def test_readers_match_int_from_bytes(raw: bytes, row: int, o: int) -> None:
    """Every width at every offset of every row reads the bytes there, big-endian, unsigned (also the
    top bit of a 64-bit read), and nothing of the next row."""
    d = np.frombuffer(raw, dtype=np.uint8).reshape(3, 40).copy()
    got = _read_all(d, np.int32(row), o)
    b = raw[row * 40 + o:]
    assert got[0] == b[0]
    assert got[1] == int.from_bytes(b[:2], "big")
    assert got[2] == int.from_bytes(b[:4], "big")
    assert got[3] == int.from_bytes(b[:6], "big")
    assert int(got[4]) == int.from_bytes(b[:8], "big")
