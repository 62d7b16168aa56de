"""libc entry points and raw-memory helpers for numba kernels.

The functions below are ``numba.types.ExternalFunction`` declarations: numba resolves
them to the libc symbols already loaded in the process, and kernels that call them can
still be compiled with ``cache=True`` (ctypes function pointers cannot). Every pointer
argument is a plain ``uintp`` address, e.g. ``arr.ctypes.data`` (computed inside the
kernel or once in Python for buffers that live as long as the port).

Errors follow the C convention: a negative return value, with the reason in
``errno()``.

The ``ld*``/``st*`` helpers read and write little/big-endian integers at byte offsets
of a ``uint8`` array (kernel structures are little-endian, packet headers big-endian).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types

_ssize = types.intp
_ptr = types.uintp
_int = types.intc
_uint = types.uintc

#: ``ssize_t read(int fd, void *buf, size_t count)``
c_read = types.ExternalFunction("read", _ssize(_int, _ptr, _ptr))
#: ``ssize_t write(int fd, const void *buf, size_t count)``
c_write = types.ExternalFunction("write", _ssize(_int, _ptr, _ptr))
#: ``ssize_t readv(int fd, const struct iovec *iov, int iovcnt)``
c_readv = types.ExternalFunction("readv", _ssize(_int, _ptr, _int))
#: ``ssize_t writev(int fd, const struct iovec *iov, int iovcnt)``
c_writev = types.ExternalFunction("writev", _ssize(_int, _ptr, _int))
#: ``ssize_t send(int fd, const void *buf, size_t len, int flags)``
c_send = types.ExternalFunction("send", _ssize(_int, _ptr, _ptr, _int))
#: ``ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *, socklen_t)``
c_sendto = types.ExternalFunction("sendto", _ssize(_int, _ptr, _ptr, _int, _ptr, types.uint32))
#: ``int sendmmsg(int fd, struct mmsghdr *msgvec, unsigned int vlen, int flags)``
c_sendmmsg = types.ExternalFunction("sendmmsg", _int(_int, _ptr, _uint, _int))
#: ``int recvmmsg(int fd, struct mmsghdr *msgvec, unsigned int vlen, int flags, struct timespec *timeout)``
c_recvmmsg = types.ExternalFunction("recvmmsg", _int(_int, _ptr, _uint, _int, _ptr))
#: ``void *memcpy(void *dst, const void *src, size_t n)`` (faster than a byte loop numba cannot vectorise)
c_memcpy = types.ExternalFunction("memcpy", _ptr(_ptr, _ptr, _ptr))
#: ``int poll(struct pollfd *fds, nfds_t nfds, int timeout)``
c_poll = types.ExternalFunction("poll", _int(_ptr, types.uint64, _int))
_errno_location = types.ExternalFunction("__errno_location", types.CPointer(_int)())

# errno values and flags (Linux, x86_64 / aarch64).
EINTR = 4
EINVAL = 22
EAGAIN = 11
EWOULDBLOCK = EAGAIN
ENOBUFS = 105
EMSGSIZE = 90
MSG_DONTWAIT = 0x40

# struct layouts (64-bit Linux), in 8-byte words.
IOVEC_WORDS = 2          # struct iovec { void *iov_base; size_t iov_len; }
MMSGHDR_WORDS = 8        # struct mmsghdr { struct msghdr (56 bytes); unsigned msg_len; pad }
MSG_IOV = 2              # msghdr.msg_iov
MSG_IOVLEN = 3           # msghdr.msg_iovlen
MMSG_LEN = 7             # low 32 bits: mmsghdr.msg_len (bytes sent/received)


@numba.njit(nogil=True, cache=True, inline="always")
def errno() -> int:
    """The calling thread's ``errno``."""
    return numba.carray(_errno_location(), (1,))[0]


@numba.njit(nogil=True, cache=True, inline="always")
def copy_bytes(dst: np.ndarray, dst_off: int, src: np.ndarray, src_off: int, n: int) -> None:
    """``dst[dst_off:dst_off+n] = src[src_off:src_off+n]`` for 1-D contiguous uint8 arrays (no bounds check)."""
    if n > 0:
        c_memcpy(dst.ctypes.data + dst_off, src.ctypes.data + src_off, n)


@numba.njit(nogil=True, cache=True, inline="always")
def ld16be(buf: np.ndarray, off: int) -> int:
    """Big-endian u16 at ``buf[off]``."""
    return (np.int64(buf[off]) << 8) | np.int64(buf[off + 1])


@numba.njit(nogil=True, cache=True, inline="always")
def st16be(buf: np.ndarray, off: int, val: int) -> None:
    """Store ``val`` as a big-endian u16 at ``buf[off]``."""
    buf[off] = (val >> 8) & 0xFF
    buf[off + 1] = val & 0xFF


@numba.njit(nogil=True, cache=True, inline="always")
def ld32be(buf: np.ndarray, off: int) -> int:
    """Big-endian u32 at ``buf[off]``."""
    return (
        (np.int64(buf[off]) << 24)
        | (np.int64(buf[off + 1]) << 16)
        | (np.int64(buf[off + 2]) << 8)
        | np.int64(buf[off + 3])
    )


@numba.njit(nogil=True, cache=True, inline="always")
def st32be(buf: np.ndarray, off: int, val: int) -> None:
    """Store ``val`` as a big-endian u32 at ``buf[off]``."""
    buf[off] = (val >> 24) & 0xFF
    buf[off + 1] = (val >> 16) & 0xFF
    buf[off + 2] = (val >> 8) & 0xFF
    buf[off + 3] = val & 0xFF


@numba.njit(nogil=True, cache=True, inline="always")
def ld16le(buf: np.ndarray, off: int) -> int:
    """Little-endian u16 at ``buf[off]``."""
    return np.int64(buf[off]) | (np.int64(buf[off + 1]) << 8)


@numba.njit(nogil=True, cache=True, inline="always")
def ld32le(buf: np.ndarray, off: int) -> int:
    """Little-endian u32 at ``buf[off]``."""
    return (
        np.int64(buf[off])
        | (np.int64(buf[off + 1]) << 8)
        | (np.int64(buf[off + 2]) << 16)
        | (np.int64(buf[off + 3]) << 24)
    )


@numba.njit(nogil=True, cache=True, inline="always")
def st32le(buf: np.ndarray, off: int, val: int) -> None:
    """Store ``val`` as a little-endian u32 at ``buf[off]``."""
    buf[off] = val & 0xFF
    buf[off + 1] = (val >> 8) & 0xFF
    buf[off + 2] = (val >> 16) & 0xFF
    buf[off + 3] = (val >> 24) & 0xFF
