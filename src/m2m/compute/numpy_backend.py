"""The NumPy reference backend: one matrix product and ``argpartition``."""

from __future__ import annotations

import numpy as np

from m2m.types import Metric


def scores_to_distances(
    dots: np.ndarray, metric: Metric, query_sq_norms: np.ndarray | None, vector_sq_norms: np.ndarray | None
) -> np.ndarray:
    """Turn inner products ``q·x`` into the metric's distance, in place where possible.

    cosine ``1 - q·x``; ip ``-q·x``; l2 ``||q||² - 2 q·x + ||x||²`` (clamped at 0).
    """
    if metric is Metric.COSINE:
        np.subtract(1.0, dots, out=dots)
    elif metric is Metric.IP:
        np.negative(dots, out=dots)
    else:
        dots *= -2.0
        if vector_sq_norms is not None:
            dots += vector_sq_norms[None, :]
        if query_sq_norms is not None:
            dots += query_sq_norms[:, None]
        np.maximum(dots, 0.0, out=dots)
    return dots


def topk_from_distances(distances: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best-first ``k`` smallest entries of each row, padded with ``(inf, -1)``."""
    n_queries, n = distances.shape
    out_d = np.full((n_queries, k), np.inf, dtype=np.float32)
    out_i = np.full((n_queries, k), -1, dtype=np.int64)
    if n == 0:
        return out_d, out_i
    kk = min(k, n)
    if n_queries == 1:  # the common single-query path, without the 2-D index plumbing
        row = distances[0]
        part = np.argpartition(row, kk - 1)[:kk] if kk < n else np.arange(n)
        best_i = part[np.argsort(row[part], kind="stable")]
        best_d = row[best_i]
        finite = np.isfinite(best_d)
        out_d[0, :kk] = np.where(finite, best_d, np.inf)
        out_i[0, :kk] = np.where(finite, best_i, -1)
        return out_d, out_i
    if kk < n:
        part = np.argpartition(distances, kk - 1, axis=1)[:, :kk]
    else:
        part = np.broadcast_to(np.arange(n), (n_queries, n))
    part_d = np.take_along_axis(distances, part, axis=1)
    order = np.argsort(part_d, axis=1, kind="stable")
    best_i = np.take_along_axis(part, order, axis=1)
    best_d = np.take_along_axis(part_d, order, axis=1)
    finite = np.isfinite(best_d)
    out_d[:, :kk] = np.where(finite, best_d, np.inf)
    out_i[:, :kk] = np.where(finite, best_i, -1)
    return out_d, out_i


class NumpyBackend:
    """Reference backend on the CPU; always available."""

    name = "numpy"

    def topk(
        self,
        queries: np.ndarray,
        vectors: np.ndarray,
        k: int,
        metric: Metric,
        *,
        vector_sq_norms: np.ndarray | None = None,
        valid: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        dots = queries @ np.asarray(vectors, dtype=np.float32).T
        q_norms = np.einsum("ij,ij->i", queries, queries) if metric is Metric.L2 else None
        if metric is Metric.L2 and vector_sq_norms is None:
            vectors32 = np.asarray(vectors, dtype=np.float32)
            vector_sq_norms = np.einsum("ij,ij->i", vectors32, vectors32)
        distances = scores_to_distances(dots, metric, q_norms, vector_sq_norms)
        if valid is not None:
            distances[:, ~valid] = np.inf
        return topk_from_distances(distances, k)
