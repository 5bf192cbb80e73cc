"""Maximal marginal relevance (Carbonell & Goldstein, 1998) in NumPy, shared by the adapters.

Greedy selection: each step takes the candidate maximising
``lambda_mult * sim(query, d) - (1 - lambda_mult) * max_{s in selected} sim(d, s)``,
with cosine similarity. ``lambda_mult = 1`` is plain relevance order, ``0`` maximal diversity.
"""

from __future__ import annotations

import numpy as np

from m2m.errors import InvalidArgumentError


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def mmr_select(query: np.ndarray, candidates: np.ndarray, k: int, lambda_mult: float = 0.5) -> list[int]:
    """Indices into ``candidates`` (``(n, dim)``) of up to ``k`` items chosen by MMR, in selection order.

    Ties are broken by the lower index, so with candidates given best first the result
    is deterministic. Zero vectors have similarity 0 to everything.
    """
    if not 0.0 <= float(lambda_mult) <= 1.0:
        raise InvalidArgumentError(f"lambda_mult must be in [0, 1], got {lambda_mult!r}")
    candidates = np.asarray(candidates, dtype=np.float64)
    if candidates.ndim != 2:
        raise InvalidArgumentError(f"candidates must be a 2-D array, got shape {candidates.shape}")
    n = candidates.shape[0]
    k = min(int(k), n)
    if k <= 0:
        return []
    q = np.asarray(query, dtype=np.float64).reshape(1, -1)
    if q.shape[1] != candidates.shape[1]:
        raise InvalidArgumentError(f"query has dimension {q.shape[1]}, candidates {candidates.shape[1]}")
    unit = _unit_rows(candidates)
    relevance = (unit @ _unit_rows(q)[0]).ravel()
    selected: list[int] = []
    max_sim_to_selected = np.full(n, -np.inf)
    available = np.ones(n, dtype=bool)
    for step in range(k):
        if step == 0:
            score = relevance.copy()
        else:
            score = lambda_mult * relevance - (1.0 - lambda_mult) * max_sim_to_selected
        score[~available] = -np.inf
        best = int(np.argmax(score))  # first index among ties
        selected.append(best)
        available[best] = False
        max_sim_to_selected = np.maximum(max_sim_to_selected, unit @ unit[best])
    return selected
