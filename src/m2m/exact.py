"""Exact (brute-force) search over a collection mirror, with filters.

When a filter keeps few items, the matching rows are gathered and scanned alone,
so a query that matches 1 item in 1,000 costs a thousandth of a full scan and still
returns the true top k among the matches.
"""

from __future__ import annotations

import numpy as np

from m2m.compute.base import ComputeBackend
from m2m.compute.numpy_backend import NumpyBackend
from m2m.storage.mirror import CollectionMirror

GATHER_BELOW = 0.3  # scan only the matching rows when fewer than this share match
QUERY_BLOCK_BYTES = 64 << 20  # cap on one block's distance matrix

_NUMPY = NumpyBackend()


def exact_search(
    mirror: CollectionMirror,
    queries: np.ndarray,
    k: int,
    valid: np.ndarray | None,
    backend: ComputeBackend = _NUMPY,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` ``(distances, slots)`` of search-form ``queries`` among valid live slots.

    ``valid`` is a mask over slots (already combined with liveness) or ``None`` for
    every live slot. Rows are best first, padded with ``(inf, -1)``. They are
    ``min(k, candidates)`` wide (at least 1), so a huge ``k`` never allocates more
    than the collection holds.
    """
    n = mirror.n_slots
    n_queries = len(queries)
    vectors = mirror.vectors[:n]
    norms = mirror.sq_norms[:n]
    if valid is None and mirror.count < n:
        valid = mirror.alive[:n]
    rows: np.ndarray | None = None
    n_valid = n if valid is None else int(np.count_nonzero(valid))
    k = max(1, min(k, n_valid))
    if valid is not None:
        if n_valid == 0:
            return (np.full((n_queries, k), np.inf, np.float32), np.full((n_queries, k), -1, np.int64))
        if n_valid < GATHER_BELOW * n:
            rows = np.flatnonzero(valid)
            vectors, norms, valid = vectors[rows], norms[rows], None
    block = max(1, QUERY_BLOCK_BYTES // (4 * max(len(vectors), 1)))
    out_d = np.empty((n_queries, k), dtype=np.float32)
    out_i = np.empty((n_queries, k), dtype=np.int64)
    for start in range(0, n_queries, block):
        stop = start + block
        d, i = backend.topk(
            queries[start:stop], vectors, k, mirror.metric, vector_sq_norms=norms, valid=valid
        )
        out_d[start:stop], out_i[start:stop] = d, i
    if rows is not None:
        out_i = np.where(out_i >= 0, rows[np.maximum(out_i, 0)], -1)
    return out_d, out_i
