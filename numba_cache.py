"""numba's on-disk kernel cache, invalidated by a change to any kernel source of pyvswitch.

numba keys a cached kernel on its own source file only. A kernel that calls kernels of other files
(``dpif.fastpath.hit_burst`` calls extraction, lookup and the executor) would otherwise keep running
the callees' old code from the cache after they change — silently wrong after an upgrade. This
module registers cache locators, ahead of numba's own, that add a hash of every ``.py`` file of the
kernel packages (``backends``, ``classifier``, ``dpif``) to each kernel's source stamp: any change
there recompiles them all (``make`` does that at install; see ``vswitch/warmup.py``).
``NUMBA_CACHE_DIR`` keeps its meaning. Imported by those packages before they define a kernel.
"""

from __future__ import annotations

import hashlib
import os

from numba.core import caching

_ROOT = os.path.dirname(os.path.abspath(__file__))
KERNEL_PACKAGES = ("backends", "classifier", "dpif")
_DIRS = tuple(os.path.join(_ROOT, p) + os.sep for p in KERNEL_PACKAGES)


def _sources_hash() -> str:
    h = hashlib.sha256()
    for d in _DIRS:
        for name in sorted(os.listdir(d)):
            if name.endswith(".py"):
                h.update(name.encode())
                with open(os.path.join(d, name), "rb") as f:
                    h.update(f.read())
    return h.hexdigest()


SOURCES_HASH = _sources_hash()


class _Stamped:
    """Mixin: a locator for the kernel packages' files whose source stamp includes ``SOURCES_HASH``."""

    @classmethod
    def from_function(cls, py_func, py_file):  # noqa: ANN001, ANN206 - numba's signature
        if not os.path.abspath(py_file).startswith(_DIRS):
            return None
        return super().from_function(py_func, py_file)  # type: ignore[misc]

    def get_source_stamp(self):  # noqa: ANN201 - numba's signature
        return (super().get_source_stamp(), SOURCES_HASH)  # type: ignore[misc]


class StampedUserProvidedLocator(_Stamped, caching.UserProvidedCacheLocator):
    """``NUMBA_CACHE_DIR`` set: numba's user-provided location, stamped."""


class StampedInTreeLocator(_Stamped, caching.InTreeCacheLocator):
    """Next to the sources (``__pycache__``), stamped."""


_classes = caching.CacheImpl._locator_classes
for _cls in (StampedInTreeLocator, StampedUserProvidedLocator):
    if _cls not in _classes:
        _classes.insert(0, _cls)
