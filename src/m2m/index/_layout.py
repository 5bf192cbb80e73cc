"""Small vectorised helpers shared by the HRM2 build, search and persistence code."""

from __future__ import annotations

import math

import numpy as np


def ranges_to_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(s, s + n)`` for every ``(s, n)`` pair with a handful of NumPy calls."""
    ends = np.cumsum(lengths)
    total = int(ends[-1]) if ends.size else 0
    if total == 0:
        return np.empty(0, dtype=np.int64)
    shift = np.repeat(starts - (ends - lengths), lengths)
    shift += np.arange(total, dtype=np.int64)
    return shift


def topk_rows(dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best-first column indices and values of the ``k`` smallest entries of each row (k <= cols)."""
    n = dist.shape[1]
    if k < n:
        part = np.argpartition(dist, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(dist, part, axis=1)
    else:
        part = np.broadcast_to(np.arange(n), dist.shape)
        vals = dist
    order = np.argsort(vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


def pad_results(dist: np.ndarray, slots: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad ``(q, m)`` results to ``(q, k)`` with ``inf`` / ``-1``; non-finite entries become padding."""
    q, m = dist.shape
    out_d = np.full((q, k), np.inf, dtype=np.float32)
    out_s = np.full((q, k), -1, dtype=np.int64)
    m = min(m, k)
    finite = np.isfinite(dist[:, :m])
    out_d[:, :m] = np.where(finite, dist[:, :m], np.inf)
    out_s[:, :m] = np.where(finite, slots[:, :m], -1)
    return out_d, out_s


ROUTE_FLAT_CELLS = 1 << 20  # route over every fine centroid while n_lists * route dim <= this
# single-query flat routing reads int8 centroids (compiled scan) from this many cells on: a
# 1,298 x 640 float32 routing matrix is 3.3 MB per query; int8 took its routing from 0.38 to
# 0.15 ms (0.48 to 0.30 ms with cold caches), with 99.1% of the probed lists the same
ROUTE_INT8_CELLS = 1 << 19


def coarse_probe(ix, n_probe: int) -> int:
    """Coarse clusters whose fine lists compete for the ``n_probe`` probes.

    All of them (flat routing, exact nearest lists) while scoring every fine centroid is cheap;
    beyond that the ``3 * n_probe / mean_fine`` (at least 8) nearest coarse clusters.
    """
    nc = ix._coarse.shape[0]
    if ix.params.coarse_probe is not None:
        cp = ix.params.coarse_probe
    elif ix._route.size <= ROUTE_FLAT_CELLS:
        return nc
    else:
        per = ix.n_lists / nc
        cp = max(8, math.ceil(3.0 * n_probe / per))
    cp = max(cp, math.ceil(n_probe / ix._fine_table.shape[1]))
    return int(min(nc, cp))
