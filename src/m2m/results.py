"""Results of ``get`` and ``query``: Chroma's column lists, plus readable rows.

``QueryResult`` is a dict of columns, one list per query, best first::

    res["ids"][0][0], res["distances"][0][0]      # as Chroma returns them
    res.ids[0][0]                                 # the same, as attributes
    for hit in res[0]: hit.id, hit.distance       # rows of the first query
    ids, distances = res.to_numpy()               # (n_queries, k) arrays, padded

Fields that were not asked for with ``include`` are ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Hit:
    """One returned item."""

    id: str
    distance: float | None = None
    metadata: dict[str, Any] | None = None
    document: str | None = None
    embedding: np.ndarray | None = None
    energy: float | None = None


class _Columns(dict):
    """A dict whose keys are also attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class GetResult(_Columns):
    """Items from ``get``: flat lists ``ids``, ``embeddings``, ``metadatas``, ``documents``."""

    def __getitem__(self, key: str | int) -> Any:
        if isinstance(key, int):
            return self.rows()[key]
        return super().__getitem__(key)

    def rows(self) -> list[Hit]:
        n = len(self["ids"])
        cols = {name: self.get(name) for name in ("embeddings", "metadatas", "documents")}
        return [
            Hit(
                id=self["ids"][i],
                metadata=cols["metadatas"][i] if cols["metadatas"] is not None else None,
                document=cols["documents"][i] if cols["documents"] is not None else None,
                embedding=cols["embeddings"][i] if cols["embeddings"] is not None else None,
            )
            for i in range(n)
        ]

    def __len__(self) -> int:  # number of items, not of keys
        return len(super().__getitem__("ids"))


class QueryResult(_Columns):
    """Neighbours from ``query``: each column holds one list per query, best first."""

    def __getitem__(self, key: str | int) -> Any:
        if isinstance(key, int):
            return self.hits(key)
        return super().__getitem__(key)

    def hits(self, query: int) -> list[Hit]:
        ids = super().__getitem__("ids")[query]
        cols = {
            name: (self.get(name)[query] if self.get(name) is not None else None)
            for name in ("distances", "metadatas", "documents", "embeddings", "energies")
        }
        return [
            Hit(
                id=ids[j],
                distance=cols["distances"][j] if cols["distances"] is not None else None,
                metadata=cols["metadatas"][j] if cols["metadatas"] is not None else None,
                document=cols["documents"][j] if cols["documents"] is not None else None,
                embedding=cols["embeddings"][j] if cols["embeddings"] is not None else None,
                energy=cols["energies"][j] if cols["energies"] is not None else None,
            )
            for j in range(len(ids))
        ]

    def __len__(self) -> int:  # number of queries
        return len(super().__getitem__("ids"))

    def __iter__(self):  # iterate over keys like a dict
        return super().__iter__()

    def to_numpy(self, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, distances)`` as ``(n_queries, k)`` arrays; short rows padded with ``""`` and ``inf``."""
        ids = super().__getitem__("ids")
        distances = self.get("distances")
        k = k if k is not None else max((len(row) for row in ids), default=0)
        out_ids = np.full((len(ids), k), "", dtype=object)
        out_d = np.full((len(ids), k), np.inf, dtype=np.float32)
        for i, row in enumerate(ids):
            out_ids[i, : len(row)] = row[:k]
            if distances is not None:
                out_d[i, : len(row)] = distances[i][:k]
        return out_ids, out_d
