"""Reading an n_probe off a calibrated recall curve (shared by HRM2 and the edge router,
which must not import the index package)."""

from __future__ import annotations

import math

import numpy as np


def n_probe_from_curve(grid: np.ndarray, recall: np.ndarray, target: float, n_lists: int) -> int:
    """Smallest n_probe whose calibrated recall reaches ``target``: between two grid points it
    is read off the chord in log(n_probe). Recall is concave in log(n_probe), so the chord
    lies below the curve and the value read is on the safe side. (The edge router uses this
    too, so both pick the same n_probe.)"""
    hit = np.flatnonzero(recall >= target - 1e-9)
    if not hit.size:
        return int(n_lists)
    i = int(hit[0])
    n = float(grid[i])
    if i > 0 and recall[i] > recall[i - 1]:
        lo, hi = math.log(grid[i - 1]), math.log(grid[i])
        w = (target - recall[i - 1]) / (recall[i] - recall[i - 1])
        n = math.ceil(math.exp(lo + w * (hi - lo)) - 1e-9)
    return int(min(max(1, n), n_lists))
