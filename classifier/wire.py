"""Big-endian reads of frame bytes for numba kernels: ``be16`` / ``be32`` / ``be48`` / ``be64`` and
``u8`` of ``d[s, o:]`` in a ``uint8[slots, row]`` buffer, as one unaligned load and a byte swap.

Callers check bounds (``o + width <= end <= row``) before reading: nothing here does. Used by the
L2 parser (``classifier.parse``) and the datapath's key extraction (``dpif.extract``);
``tests/test_wire.py`` holds them to ``int.from_bytes``.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic


def _be_loader(bits: int):  # noqa: ANN202 - a numba intrinsic
    """An intrinsic ``(d, s, o) -> int64``: the ``bits // 8`` bytes at ``d[s, o]``, big-endian."""

    @intrinsic
    def load(typingctx, arr, s, o):  # noqa: ANN001, ANN202
        sig = types.int64(arr, s, o)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            aryty = signature.args[0]
            array = context.make_array(aryty)(context, builder, args[0])
            stride0 = cgutils.unpack_tuple(builder, array.strides, aryty.ndim)[0]
            row = context.cast(builder, args[1], signature.args[1], types.intp)
            col = context.cast(builder, args[2], signature.args[2], types.intp)
            ptr = builder.gep(array.data, [builder.add(builder.mul(row, stride0), col)])
            ity = ir.IntType(bits)
            v = builder.load(builder.bitcast(ptr, ity.as_pointer()), align=1)
            if bits > 8:
                swap = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ity, [ity]),
                                                      f"llvm.bswap.i{bits}")
                v = builder.call(swap, [v])
            return builder.zext(v, ir.IntType(64)) if bits < 64 else v

        return sig, codegen

    return load


_ld8 = _be_loader(8)
_ld16 = _be_loader(16)
_ld32 = _be_loader(32)
_ld64 = _be_loader(64)


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def u8(d: np.ndarray, s: int, o: int) -> int:
    """Byte ``o`` of row ``s``."""
    return _ld8(d, s, o)


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def be16(d: np.ndarray, s: int, o: int) -> int:
    """Bytes ``o, o+1`` of row ``s``, big-endian."""
    return _ld16(d, s, o)


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def be32(d: np.ndarray, s: int, o: int) -> int:
    """Bytes ``o .. o+3`` of row ``s``, big-endian."""
    return _ld32(d, s, o)


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def be48(d: np.ndarray, s: int, o: int) -> int:
    """Bytes ``o .. o+5`` of row ``s`` (a MAC), big-endian."""
    return (_ld16(d, s, o) << 32) | _ld32(d, s, o + 2)


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def be64(d: np.ndarray, s: int, o: int) -> np.uint64:
    """Bytes ``o .. o+7`` of row ``s``, big-endian, unsigned."""
    return np.uint64(_ld64(d, s, o))
