"""How many threads numpy's OpenBLAS uses, set from Python for one call at a time.

numpy has no API for this, and OPENBLAS_NUM_THREADS is read once, when numpy loads. OpenBLAS
itself exports `openblas_set_num_threads` (numpy's wheels ship a build whose symbols carry a
`scipy_` prefix and a `64_` suffix), so we find the loaded library and call it through ctypes,
as threadpoolctl does, without adding that dependency for two functions. A call costs ~0.3 µs.
Where numpy's BLAS is not OpenBLAS (Accelerate on macOS, MKL) `blas_threads()` is None and
callers leave threading as it is.
"""

from __future__ import annotations

import ctypes
import glob
import os
from functools import lru_cache


class BlasThreads:
    """get()/set(n) for one loaded OpenBLAS library."""

    def __init__(self, lib: ctypes.CDLL, prefix: str, suffix: str, path: str):
        self.path = path
        self._set = getattr(lib, f"{prefix}_set_num_threads{suffix}")
        self._get = getattr(lib, f"{prefix}_get_num_threads{suffix}")
        self._set.argtypes, self._set.restype = [ctypes.c_int], None
        self._get.argtypes, self._get.restype = [], ctypes.c_int

    def get(self) -> int:
        return int(self._get())

    def set(self, threads: int) -> None:
        self._set(int(threads))


def _candidate_paths() -> list[str]:
    import numpy as np

    # numpy's own copy first (wheels keep it beside the package), then any OpenBLAS this process
    # has loaded (a distribution's numpy links the system one).
    here = os.path.dirname(np.__file__)
    paths = sorted(glob.glob(os.path.join(here, os.pardir, "numpy.libs", "*openblas*")))
    paths += sorted(glob.glob(os.path.join(here, ".dylibs", "*openblas*")))
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths += [line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line]
    except OSError:
        pass
    return list(dict.fromkeys(os.path.realpath(p) for p in paths))


@lru_cache(maxsize=1)
def blas_threads() -> BlasThreads | None:
    """numpy's OpenBLAS thread control, or None where there is none to be found."""
    for path in _candidate_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                if hasattr(lib, f"{prefix}_set_num_threads{suffix}") and hasattr(lib, f"{prefix}_get_num_threads{suffix}"):
                    return BlasThreads(lib, prefix, suffix, path)
    return None
