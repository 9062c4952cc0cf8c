"""How many threads numpy's BLAS uses, set from Python for one call at a time.

numpy has no API for this, and OPENBLAS_NUM_THREADS is read once, when the library loads.
`threadpoolctl` finds the BLAS libraries this process has loaded, on Linux, macOS and Windows,
and tells which one and which threading layer each has; we ask it once. We do not set threads
through it: its `threadpool_limits()` and `limit()` contexts cost tens of microseconds to
milliseconds around a step of ~150-300 µs, and (since 3.8) its library object's `set_num_threads` silently
does nothing from any thread but the first one that called it (a Generator may be stepped from
several). So from the library it found we take OpenBLAS's own `openblas_set_num_threads` and
`openblas_get_num_threads` and call them through ctypes (benchmarks/blas_control.py compares the
ways; figures in docs/platforms.md).

Only OpenBLAS with its own (pthreads) threading layer is controlled: numpy's wheels on Linux,
Windows and macOS before 14, and the case measured and tested here. Anything else (Apple Accelerate,
MKL, BLIS, an OpenMP OpenBLAS, nothing found) gives None, and callers run on one core, which gives
the same text (see `chargen.cores`).
"""

from __future__ import annotations

import ctypes
import itertools
import os
from functools import lru_cache
from typing import Any


class BlasThreads:
    """get()/set(n) for one loaded OpenBLAS library, through its own C functions."""

    def __init__(self, lib: ctypes.CDLL, prefix: str, suffix: str, path: str):
        self.path = path
        self._set = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}")
        self._get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}")
        self._set.argtypes, self._set.restype = [ctypes.c_int], None
        self._get.argtypes, self._get.restype = [], ctypes.c_int

    def get(self) -> int:
        return int(self._get())

    def set(self, threads: int) -> None:
        self._set(int(threads))


def _loaded_blas() -> list[Any]:
    """threadpoolctl's controllers for the BLAS libraries loaded in this process (numpy's among them)."""
    import numpy  # noqa: F401  (loads numpy's BLAS, so that there is one to find)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas").lib_controllers


def _openblas_functions(lib: ctypes.CDLL) -> tuple[str, str] | None:
    """The symbol prefix and suffix of this OpenBLAS build (numpy's wheels: scipy_ ... 64_), if it has them."""
    for prefix, suffix in itertools.product(("", "scipy_"), ("", "64_", "_64")):
        if all(hasattr(lib, f"{prefix}openblas_{what}_num_threads{suffix}") for what in ("set", "get")):
            return prefix, suffix
    return None


@lru_cache(maxsize=1)
def blas_threads() -> BlasThreads | None:
    """numpy's OpenBLAS thread control, or None where there is none we can set cheaply (one core then)."""
    try:
        found = _loaded_blas()
    except Exception:  # threadpoolctl could not inspect this process: run as if there were no BLAS to control
        return None
    import numpy as np

    # numpy's own copy first (its wheels keep it in numpy.libs/ or numpy/.dylibs/), then any other.
    numpy_dir = os.path.dirname(os.path.dirname(os.path.realpath(np.__file__)))
    found = sorted(found, key=lambda c: not os.path.realpath(c.filepath).startswith(numpy_dir))
    for controller in found:
        if controller.internal_api != "openblas" or getattr(controller, "threading_layer", None) != "pthreads":
            continue
        try:
            lib = ctypes.CDLL(controller.filepath)  # already loaded: the same handle
        except OSError:
            continue
        affixes = _openblas_functions(lib)
        if affixes is not None:
            return BlasThreads(lib, *affixes, path=controller.filepath)
    return None
