"""L2 kernels (numba over numpy arrays): the L2 parser, the MAC table and the NORMAL action."""

import numba_cache  # noqa: F401 - kernels of this package are cached by the hash of the kernel sources
