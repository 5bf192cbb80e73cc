"""Build-time calibration of HRM2: measured recall@10 and list coverage against n_probe.

Queries are a held-out-style sample of the data, *perturbed*: each sampled vector ``x`` gets
Gaussian noise of norm ``calib_noise * r1(x)`` where ``r1(x)`` is the distance from ``x`` to
its nearest other vector (cosine indexes re-normalise the result). A perturbed sample sits
about as far from the data as the data's own nearest neighbours, which is closer to real
queries than an unperturbed member (whose first neighbour, itself, is trivially found).
Exact answers come from a brute-force pass over every vector.

Two curves are stored for a grid of n_probe values: ``recall`` (LOD 2 recall@10 of the real
search path) and ``coverage[:, j]`` (fraction of the true top-``depths[j]`` neighbours lying
in probed lists). ``target_recall`` reads the first; filtered search reads the second to
find the n_probe at which the deeper neighbourhood a filter needs (depth ``k / selectivity``)
is covered as well as the top-k is unfiltered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from m2m.index._layout import topk_rows
from m2m.recall_curve import n_probe_from_curve
from m2m.types import Metric

DEPTHS = (10, 32, 100, 316, 1000)
_CHUNK = 32768


@dataclass
class Calibration:
    grid: np.ndarray  # n_probe values, increasing
    recall: np.ndarray  # LOD 2 recall@10 at each grid value
    depths: np.ndarray  # neighbourhood depths of the coverage columns
    coverage: np.ndarray  # (len(grid), len(depths))
    n_queries: int

    def n_probe_for(self, target: float, n_lists: int) -> int:
        return n_probe_from_curve(self.grid, self.recall, target, n_lists)

    def _coverage_column(self, depth: float) -> np.ndarray:
        """Coverage at ``depth`` for every grid n_probe (interpolated in log depth)."""
        logd = np.log(self.depths.astype(np.float64))
        x = float(np.clip(np.log(max(depth, 1.0)), logd[0], logd[-1]))
        j = int(min(len(logd) - 2, max(0, np.searchsorted(logd, x) - 1))) if len(logd) > 1 else 0
        if len(logd) == 1:
            return self.coverage[:, 0]
        w = (x - logd[j]) / max(logd[j + 1] - logd[j], 1e-12)
        return self.coverage[:, j] * (1.0 - w) + self.coverage[:, j + 1] * w

    def coverage_at(self, n_probe: int, depth: float) -> float:
        """Coverage interpolated in log(n_probe) and log(depth)."""
        col = self._coverage_column(depth)
        return float(np.interp(np.log(max(1, n_probe)), np.log(self.grid), col))

    def filtered_n_probe(self, base_n_probe: int, k: int, selectivity: float, n_lists: int) -> int:
        """n_probe at which depth ``k / selectivity`` is covered as well as depth ``k`` at base."""
        key = (base_n_probe, k, round(selectivity, 4), n_lists)
        hit = self._memo.get(key) if hasattr(self, "_memo") else None
        if hit is not None:
            return hit
        want = self.coverage_at(base_n_probe, max(1.0, k))
        cols = self._coverage_column(max(1.0, k / max(selectivity, 1e-12)))
        ok = np.flatnonzero(cols >= want - 1e-9)
        n = int(self.grid[ok[0]]) if ok.size else n_lists
        n = int(min(n_lists, max(n, base_n_probe)))
        if not hasattr(self, "_memo"):
            self._memo = {}
        if len(self._memo) < 4096:
            self._memo[key] = n
        return n

    def to_dict(self) -> dict:
        return {
            "n_queries": self.n_queries,
            "n_probe": self.grid.tolist(),
            "recall_at_10": [round(float(r), 4) for r in self.recall],
            "depths": self.depths.tolist(),
            "coverage": [[round(float(c), 4) for c in row] for row in self.coverage],
        }


def exact_topk(index, queries: np.ndarray, vectors: np.ndarray, k: int, exclude: np.ndarray | None = None):
    """Exact top-k row numbers of ``vectors`` (chunked brute force in the index metric)."""
    m = queries.shape[0]
    best_d = np.full((m, 0), np.inf, dtype=np.float32)
    best_i = np.zeros((m, 0), dtype=np.int64)
    q_sq = np.einsum("ij,ij->i", queries, queries)
    for s in range(0, vectors.shape[0], _CHUNK):
        blk = vectors[s : s + _CHUNK]
        dots = queries @ blk.T
        if index.metric is Metric.L2:
            d = q_sq[:, None] - 2.0 * dots + np.einsum("ij,ij->i", blk, blk)[None, :]
        elif index.metric is Metric.COSINE:
            d = 1.0 - dots
        else:
            d = -dots
        if exclude is not None:
            hit = (exclude >= s) & (exclude < s + blk.shape[0])
            d[np.flatnonzero(hit), exclude[hit] - s] = np.inf
        cat_d = np.concatenate([best_d, d], axis=1)
        cat_i = np.concatenate([best_i, np.broadcast_to(np.arange(s, s + blk.shape[0]), d.shape)], axis=1)
        cols, best_d = topk_rows(cat_d, min(k, cat_d.shape[1]))
        best_i = np.take_along_axis(cat_i, cols, axis=1)
    return best_d, best_i


def grid_for(n_lists: int) -> np.ndarray:
    vals, v = [], 1
    while v < n_lists:
        vals.append(v)
        v = v + 1 if v < 4 else round(v * 1.5)
    vals.append(n_lists)
    return np.unique(np.array(vals, dtype=np.int64))


def calibrate(index, x: np.ndarray, slots_by_row: np.ndarray, rng: np.random.Generator) -> Calibration:
    """Measure recall@10 and coverage against n_probe on perturbed samples of ``x``."""
    from m2m.index import _search

    n, d = x.shape
    m = min(index.params.calib_queries, n)
    pick = rng.choice(n, m, replace=False)
    base = x[pick]
    if n > 1:
        nn_d, _ = exact_topk(_L2, base, x, 1, exclude=pick)
        r1 = np.sqrt(np.maximum(nn_d[:, 0], 0.0))
        r1[~np.isfinite(r1)] = 0.0
    else:
        r1 = np.zeros(m, dtype=np.float32)
    noise = rng.standard_normal((m, d)).astype(np.float32)
    noise *= (index.params.calib_noise * r1 / np.maximum(np.linalg.norm(noise, axis=1), 1e-12))[:, None]
    queries = base + noise
    if index.metric is Metric.COSINE:
        queries /= np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    depth_max = min(n, DEPTHS[-1])
    _, gt_rows = exact_topk(index, queries, x, depth_max)
    gt_slots = slots_by_row[gt_rows]
    gt_lists = index._list[index._row_of_slot[gt_slots]]
    depths = np.array([min(t, depth_max) for t in DEPTHS], dtype=np.int64)
    grid = grid_for(index.n_lists)
    k = min(10, n)
    recall = np.ones(len(grid))
    coverage = np.ones((len(grid), len(depths)))
    done = False
    qi = np.arange(m)[:, None]
    for g, n_probe in enumerate(grid):
        probes = _search.route_batch(index, queries, int(n_probe))
        mask = np.zeros((m, index.n_lists + 1), dtype=bool)
        mask[qi, probes] = True
        for j, t in enumerate(depths):
            coverage[g, j] = mask[qi, gt_lists[:, :t]].mean()
        if not done:
            _, found = _search.search_batch(index, queries, k, int(n_probe), 2, None)
            hits = (found[:, :, None] == gt_slots[:, None, :k]) & (found[:, :, None] >= 0)
            recall[g] = hits.any(axis=2).sum() / (m * k)
            done = recall[g] >= 0.9995
    return Calibration(grid=grid, recall=recall, depths=depths, coverage=coverage, n_queries=m)


class _L2Metric:
    metric = Metric.L2


_L2 = _L2Metric()
