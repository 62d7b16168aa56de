"""The datapath kernels (numba over numpy arrays): flow key extraction, the megaflow cache, the flat
action executor and the one-call hit path. See README.md."""

import numba_cache  # noqa: F401 - kernels of this package are cached by the hash of the kernel sources
