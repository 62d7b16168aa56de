"""Guest memory that the guest can shrink, made safe to touch: a SIGBUS handler that survives the fault.

A vhost-user front-end hands the switch its RAM as file descriptors (memfd, hugetlbfs or plain
files) that the switch maps ``MAP_SHARED``. A file can be truncated after it was mapped; touching a
page past its new end raises SIGBUS, which would kill the whole switch. Where the fd allows it,
``guestmem`` seals the file against shrinking (``F_SEAL_SHRINK``, as QEMU's memfd backend does);
every other mapping is *guarded* here:

```
 guarded ranges (one row per mapped region)        SIGBUS in any thread (numba kernel, numpy, memcpy)
 ┌───────┬─────┬────────┬───────────┐                 │ si_code > 0 and si_addr inside a guarded range?
 │ start │ end │ faults │ last addr │ ◄───────────────┤ yes: mmap anonymous zero pages over that range
 └───────┴─────┴────────┴───────────┘                 │      (MAP_FIXED), count it; the access resumes
 TOTAL (row 0) ── polled once per burst ──►           │ no:  put back the previous action (Python's
 the port resets with "guest memory shrank"           │      faulthandler or the default) and re-fault
```

The handler is a numba ``cfunc``: no Python, no allocation, only ``mmap``/``sigaction``/``raise``
in signal context. The faulting access reads zeros from then on; the port that owns the memory
sees ``TOTAL`` move after its burst, marks the fault and resets the guest's connection, so
only that guest loses its port. Nothing is cached to disk: the table's address is compiled into
the handler, so it is compiled once per process, on the first ``guard()``.
"""

from __future__ import annotations

import ctypes
import signal
import threading

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

#: Guarded ranges at most (8 regions for each of 128 guests); row 0 holds the totals.
MAX_GUARDS = 1024
G_START = 0
G_END = 1
G_FAULTS = 2
G_ADDR = 3

_table = np.zeros((MAX_GUARDS + 1, 4), dtype=np.int64)
#: ``TOTAL[0]``: bus errors survived in all guarded memory since start (a port compares it after each burst).
TOTAL = _table[0, :1]
_old_action = np.zeros(32, dtype=np.int64)        # struct sigaction (152 bytes) of the handler we replaced
_lock = threading.Lock()
_installed = False
_handler = None     # keeps the compiled cfunc alive

_c_mmap = types.ExternalFunction("mmap", types.uintp(types.uintp, types.uintp, types.intc, types.intc, types.intc,
                                                     types.int64))
_c_sigaction = types.ExternalFunction("sigaction", types.intc(types.intc, types.uintp, types.uintp))
_c_raise = types.ExternalFunction("raise", types.intc(types.intc))

_PROT_RW = 0x1 | 0x2
_MAP_ZERO = 0x02 | 0x10 | 0x20 | 0x4000     # MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS | MAP_NORESERVE
_SA_SIGINFO = 4
_SIGACTION_SIZE = 152                        # struct sigaction on 64-bit Linux (glibc)
_SA_FLAGS_OFFSET = 136


@intrinsic
def _addr(typingctx, ptr):  # noqa: ANN001, ANN201 - numba intrinsic
    """A ``void *`` as an integer address."""
    sig = types.int64(ptr)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        return builder.ptrtoint(args[0], context.get_value_type(types.int64))

    return sig, codegen


@intrinsic
def _load(typingctx, addr):  # noqa: ANN001, ANN201 - numba intrinsic
    """The ``int64`` at an integer address."""
    sig = types.int64(addr)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        ptr_t = context.get_value_type(types.int64).as_pointer()
        return builder.load(builder.inttoptr(args[0], ptr_t))

    return sig, codegen


@intrinsic
def _store(typingctx, addr, value):  # noqa: ANN001, ANN201 - numba intrinsic
    """Store an ``int64`` at an integer address."""
    sig = types.void(addr, value)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        ptr_t = context.get_value_type(types.int64).as_pointer()
        val = context.cast(builder, args[1], signature.args[1], types.int64)
        builder.store(val, builder.inttoptr(args[0], ptr_t))
        return context.get_dummy_value()

    return sig, codegen


def _compile_handler(table_addr: int, old_addr: int):  # noqa: ANN202
    rows = MAX_GUARDS + 1

    @numba.cfunc(types.void(types.intc, types.voidptr, types.voidptr), nopython=True, _nrt=False)
    def on_sigbus(signo, info, _ctx):  # noqa: ANN001, ANN202
        code = np.int32(_load(_addr(info) + 8) & 0xFFFFFFFF)   # si_code: > 0 for a fault the kernel raised
        addr = _load(_addr(info) + 16)                         # si_addr
        if code > 0:
            for i in range(1, rows):
                row = np.int64(table_addr) + 32 * i
                start = _load(row + 8 * G_START)
                end = _load(row + 8 * G_END)
                if start <= addr < end:
                    if _c_mmap(start, end - start, _PROT_RW, _MAP_ZERO, -1, 0) == start:
                        _store(row + 8 * G_FAULTS, _load(row + 8 * G_FAULTS) + 1)
                        _store(row + 8 * G_ADDR, addr)
                        _store(np.int64(table_addr), _load(np.int64(table_addr)) + 1)
                        return
                    break
        # Not guest memory (or the remap failed): the previous action takes over.
        _c_sigaction(signo, np.uint64(old_addr), 0)
        if code <= 0:
            _c_raise(signo)

    return on_sigbus


def _install() -> None:
    global _installed, _handler
    if _installed:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.sigaction.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    handler = _compile_handler(_table.ctypes.data, _old_action.ctypes.data)
    action = (ctypes.c_uint8 * _SIGACTION_SIZE)()
    ctypes.c_uint64.from_buffer(action, 0).value = handler.address
    ctypes.c_int.from_buffer(action, _SA_FLAGS_OFFSET).value = _SA_SIGINFO
    if libc.sigaction(signal.SIGBUS, ctypes.addressof(action), _old_action.ctypes.data) != 0:
        raise OSError(ctypes.get_errno(), "sigaction(SIGBUS) failed")
    _handler = handler
    _installed = True


def warm_up() -> None:
    """Compile and install the handler now (the daemon does this at start-up, not on a guest's first message)."""
    with _lock:
        _install()


def guard(start: int, end: int) -> int:
    """Guard the mapped address range ``[start, end)``; returns its row for ``faults``/``unguard``."""
    with _lock:
        _install()
        free = np.flatnonzero(_table[1:, G_END] == 0)
        if not len(free):
            raise OSError(f"more than {MAX_GUARDS} guest memory regions are mapped")
        row = int(free[0]) + 1
        _table[row, G_FAULTS] = 0
        _table[row, G_ADDR] = 0
        _table[row, G_START] = start
        _table[row, G_END] = end
        return row


def unguard(row: int) -> None:
    """Stop guarding a row's range (before it is unmapped)."""
    with _lock:
        _table[row, G_END] = 0
        _table[row, G_START] = 0


def faults(row: int) -> tuple[int, int]:
    """``(bus errors survived, last faulting address)`` in one guarded range."""
    return int(_table[row, G_FAULTS]), int(_table[row, G_ADDR])
