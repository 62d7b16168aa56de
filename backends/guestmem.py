"""A guest's memory, from a vhost-user memory table, mapped into one flat numpy array.

```
 reserved address range (PROT_NONE)                                  mem: uint8[total]
 ├─ region 0: mmap(fd0, MAP_SHARED|MAP_FIXED) ─┤ guard ├─ region 1 ─┤ guard ├ ...
 regions[r] = (guest-physical start, size, front-end virtual start, flat offset of the start)
```

One reservation keeps every region inside a single array, so the virtqueue kernels take one
``mem`` (plus ``uint16/32/64`` views of it) and a small region table, translate a guest address
with a few compares, and can never reach outside the reservation. ``close()`` unmaps it all at
once. Regions are checked before anything is mapped: sizes and ends that fit, an fd whose file
really holds ``mmap_offset + size`` bytes (touching a page past the end of a file would raise
SIGBUS), 16-byte-compatible alignment (ring fields are read through the wide views), and a total
that the address space can hold (``MAX_RESERVATION``).

A front-end may still shrink its file afterwards. Files that allow it are sealed against that
(``F_SEAL_SHRINK``); every region is also guarded by ``memguard``, so a touch past a new end reads
zeros instead of killing the switch, and ``faulted()`` tells the port to reset that guest.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
from dataclasses import dataclass

import numpy as np

from backends import memguard
from backends.virtq import MAX_REGIONS, R_FLAT, R_GPA, R_SIZE, R_UVA

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.restype = ctypes.c_int
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]

PROT_NONE, PROT_READ, PROT_WRITE = 0, 1, 2
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS, MAP_NORESERVE = 0x01, 0x02, 0x10, 0x20, 0x4000
MAP_FAILED = ctypes.c_void_p(-1).value
F_ADD_SEALS = 1033
F_SEAL_SHRINK = 0x0002
ALIGN = 2 << 20            # region alignment inside the reservation (2 MiB hugepages; more if the fd says so)
MAX_ADDR = 1 << 62
#: Most address space one guest's reservation may take (x86-64 user space is 128 TiB): larger tables are refused
#: before any size reaches mmap (whose ``size_t`` would otherwise silently wrap a sum of huge spans).
MAX_RESERVATION = 1 << 45


class GuestMemoryError(Exception):
    """The memory table cannot be mapped; the message says why."""


@dataclass(frozen=True)
class Region:
    """One entry of VHOST_USER_SET_MEM_TABLE."""

    guest_phys_addr: int
    size: int
    userspace_addr: int
    mmap_offset: int


def _align_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


class GuestMemory:
    """The mapped regions of one guest: ``mem`` (with ``m16``/``m32``/``m64`` views) and ``table``."""

    def __init__(self, regions: list[Region], fds: list[int]) -> None:
        if not 1 <= len(regions) <= MAX_REGIONS:
            raise GuestMemoryError(f"memory table has {len(regions)} regions (1..{MAX_REGIONS} supported)")
        if len(fds) != len(regions):
            raise GuestMemoryError(f"memory table has {len(regions)} regions but came with {len(fds)} fds")
        aligns = []
        for i, (r, fd) in enumerate(zip(regions, fds, strict=True)):
            if r.size <= 0 or r.guest_phys_addr < 0 or r.userspace_addr < 0 or r.mmap_offset < 0:
                raise GuestMemoryError(f"region {i}: empty or negative ({r})")
            if max(r.guest_phys_addr, r.userspace_addr, r.mmap_offset) + r.size > MAX_ADDR:
                raise GuestMemoryError(f"region {i}: address range overflows ({r})")
            if (r.guest_phys_addr - r.mmap_offset) % 16 or (r.userspace_addr - r.mmap_offset) % 16:
                raise GuestMemoryError(f"region {i}: addresses and mmap offset are not 16-byte compatible ({r})")
            try:
                st = os.fstat(fd)
            except OSError as e:
                raise GuestMemoryError(f"region {i}: bad fd: {e.strerror}") from e
            if st.st_size < r.mmap_offset + r.size:
                raise GuestMemoryError(f"region {i}: the file holds {st.st_size} bytes, the table claims "
                                       f"{r.mmap_offset + r.size}")
            aligns.append(max(ALIGN, st.st_blksize))
        for i, a in enumerate(regions):
            for b in regions[i + 1:]:
                if a.guest_phys_addr < b.guest_phys_addr + b.size and b.guest_phys_addr < a.guest_phys_addr + a.size:
                    raise GuestMemoryError(f"regions overlap in guest-physical space ({a}, {b})")
        align = max(aligns)
        spans = [_align_up(r.mmap_offset + r.size, align) for r in regions]
        total = sum(spans) + align * (len(regions) + 1)   # a guard gap after each region, and slack to align
        if total > MAX_RESERVATION:
            raise GuestMemoryError(f"memory table needs {total} bytes of address space (mmap offsets plus sizes, "
                                   f"at most {MAX_RESERVATION})")
        base = _libc.mmap(None, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        if base in (None, MAP_FAILED):
            raise GuestMemoryError(f"cannot reserve {total} bytes of address space: {os.strerror(ctypes.get_errno())}")
        self._base, self._total = base, total
        self._guards: list[tuple[int, int]] = []     # (memguard row, absolute start) per region
        try:
            start = _align_up(base, align) - base
            size = total - start
            self.table = np.zeros((MAX_REGIONS, 4), dtype=np.int64)
            cur = start
            for i, (r, fd, span) in enumerate(zip(regions, fds, spans, strict=True)):
                # A front-end must not shrink the file under us (SIGBUS); seal it where the fd allows.
                try:
                    fcntl.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK)
                except OSError:
                    pass
                got = _libc.mmap(base + cur, span, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0)
                if got != base + cur:
                    raise GuestMemoryError(f"region {i}: mmap of {span} bytes failed: "
                                           f"{os.strerror(ctypes.get_errno())}")
                self._guards.append((memguard.guard(base + cur, base + cur + span), base + cur))
                self.table[i] = (r.guest_phys_addr, r.size, r.userspace_addr, cur - start + r.mmap_offset)
                cur += span + align
            self.n = len(regions)
            self.regions = list(regions)
            buf = (ctypes.c_uint8 * size).from_address(base + start)
            self.mem = np.ctypeslib.as_array(buf)
            self.m16 = self.mem.view(np.uint16)
            self.m32 = self.mem.view(np.uint32)
            self.m64 = self.mem.view(np.uint64)
        except BaseException:
            self.close()
            raise

    @property
    def size(self) -> int:
        """Total bytes of guest memory (sum of the region sizes)."""
        return sum(r.size for r in self.regions)

    def uva_to_flat(self, addr: int, length: int) -> int:
        """Flat offset of front-end virtual range ``[addr, addr+length)`` if one region holds it all, else -1."""
        for i in range(self.n):
            start, size, uva, flat = (int(v) for v in self.table[i, [R_GPA, R_SIZE, R_UVA, R_FLAT]])
            del start
            if uva <= addr and addr - uva + length <= size:
                return flat + addr - uva
        return -1

    def faulted(self) -> str:
        """Why this memory is no longer the guest's (a region shrank under us), or ``""``."""
        for i, (row, start) in enumerate(self._guards):
            count, addr = memguard.faults(row)
            if count:
                r = self.regions[i]
                return (f"the file behind guest memory region {i} shrank while mapped (bus error at "
                        f"guest-physical 0x{r.guest_phys_addr + addr - start - r.mmap_offset:x})")
        return ""

    def close(self) -> None:
        """Unmap every region; the arrays must not be used afterwards. Idempotent."""
        base, self._base = self._base, None
        guards, self._guards = getattr(self, "_guards", []), []
        for row, _start in guards:
            memguard.unguard(row)
        if base is not None:
            self.mem = self.m16 = self.m32 = self.m64 = None  # type: ignore[assignment]
            _libc.munmap(base, self._total)
