"""The datapath of issue 17 (numba kernels over numpy arrays): the flow key (``dpif.key``) and the
megaflow cache (``dpif.megaflow``); the action executor and the PMD loop come next. See README.md."""
