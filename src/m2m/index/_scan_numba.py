"""The numba loops behind ``m2m.index._kernels`` (imported only when numba is installed).

Module-level functions, so numba's on-disk cache (``__pycache__`` next to this file) finds
them again in the next process: a closure compiled inside a function missed the cache every
time (1.3 s per process). A read-only install compiles without the cache.
"""

from __future__ import annotations

import numba
import numpy as np

_OPTS = {"fastmath": True, "nogil": True, "boundscheck": False}


def _jit(**extra):
    def decorate(func):
        try:
            return numba.njit(cache=True, **_OPTS, **extra)(func)
        except RuntimeError:  # no writable cache location
            return numba.njit(**_OPTS, **extra)(func)

    return decorate


@_jit(inline="always")
def _dot(codes, i, w):  # pragma: no cover - compiled
    acc = np.float32(0.0)
    for j in range(codes.shape[1]):
        acc += w[j] * np.float32(codes[i, j])
    return acc


@_jit()
def scan(codes, starts, ends, w, hbias, slots, allowed, out, out_rows):  # pragma: no cover - compiled
    """See ``m2m.index._kernels.scan_ranges``; returns the number of scores written."""
    use_bias = hbias.shape[0] > 0
    p = 0
    if allowed.shape[0] > 0:  # filtered: only allowed rows are scored and written, packed
        for r in range(starts.shape[0]):
            for i in range(starts[r], ends[r]):
                if allowed[slots[i]]:
                    v = _dot(codes, i, w)
                    out[p] = v - hbias[i] if use_bias else v
                    out_rows[p] = i
                    p += 1
        return p
    # unfiltered: a branch-free loop (20% faster than a branch per row), then the bias
    for r in range(starts.shape[0]):
        for i in range(starts[r], ends[r]):
            out[p] = _dot(codes, i, w)
            p += 1
    if use_bias:
        p = 0
        for r in range(starts.shape[0]):
            for i in range(starts[r], ends[r]):
                out[p] -= hbias[i]
                p += 1
    return p
