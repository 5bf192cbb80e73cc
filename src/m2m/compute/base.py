"""The compute backend interface: score blocks of vectors against queries, keep the top k.

Every backend returns *distances* in the collection's metric (smaller is closer):

- cosine: ``1 - q·x`` (queries and vectors are already unit length),
- ip: ``-(q·x)``,
- l2: ``||q||² - 2 q·x + ||x||²`` (``vector_sq_norms`` supplies ``||x||²``).

Results are ``(distances, indices)`` of shape ``(n_queries, k)``, best first,
``float32`` and ``int64``; rows with fewer than ``k`` candidates are padded with
``+inf`` and ``-1``. NumPy is the reference; other backends must return the same
neighbours (ties aside).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from m2m.types import Metric


@runtime_checkable
class ComputeBackend(Protocol):
    """A device that scores vectors against queries and keeps the k best."""

    name: str

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
        """Return the ``k`` nearest rows of ``vectors`` for every query.

        ``valid`` is an optional boolean mask over the rows of ``vectors``; rows where it is
        False are never returned.
        """
        ...
