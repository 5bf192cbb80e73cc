"""Consolidated near-duplicate groups as a non-destructive layer: lookups and their uses.

``consolidate()`` (without ``dedupe``) keeps every item and records groups of
near-duplicates. This module turns that record into what LOD 0 and sampling use:

- :class:`GroupIndex`: the group of any item by rowid (members deleted since are simply
  absent from the live counts; a rowid is never reused, so a new item is never taken for
  an old member);
- :func:`collapse_groups`: a ranked result with at most one row per group (the
  best-ranked member stands for its group), for LOD 0;
- the live size g_i of each item's group, from which a group's sampling weight is
  counted once: every member's weight is divided by g_i, so the members together weigh
  what one item (their mean) weighs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["GroupIndex", "collapse_groups"]


class GroupIndex:
    """Group number of items by rowid, from a consolidation record (``members``, ``offsets``)."""

    def __init__(self, consolidated: dict[str, Any] | None) -> None:
        if consolidated is None or len(consolidated["offsets"]) < 2:
            self._rowids = np.zeros(0, dtype=np.int64)
            self._groups = np.zeros(0, dtype=np.int64)
            self.n_groups = 0
            return
        members = np.asarray(consolidated["members"], dtype=np.int64)
        offsets = np.asarray(consolidated["offsets"], dtype=np.int64)
        groups = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        order = np.argsort(members, kind="stable")
        self._rowids, self._groups = members[order], groups[order]
        self.n_groups = len(offsets) - 1

    def __bool__(self) -> bool:
        return self.n_groups > 0

    def of_rowids(self, rowids: np.ndarray) -> np.ndarray:
        """Group of each rowid, −1 for items in no group (any shape)."""
        r = np.asarray(rowids, dtype=np.int64)
        if not self:
            return np.full(r.shape, -1, dtype=np.int64)
        pos = np.clip(np.searchsorted(self._rowids, r), 0, len(self._rowids) - 1)
        return np.where(self._rowids[pos] == r, self._groups[pos], -1)

    def live_sizes(self, live_rowids: np.ndarray) -> np.ndarray:
        """g_i for each live item: its group's number of live members (1 outside groups)."""
        groups = self.of_rowids(live_rowids)
        if not self:
            return np.ones(groups.shape, dtype=np.int64)
        counts = np.bincount(groups[groups >= 0], minlength=self.n_groups)
        return np.where(groups >= 0, counts[np.maximum(groups, 0)], 1)


def collapse_groups(
    distances: np.ndarray, slots: np.ndarray, groups: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep the first (best-ranked) row of each group per query, then the best k.

    ``slots`` < 0 are padding; ``groups`` < 0 are items in no group. Returns the
    collapsed ``(distances, slots)`` padded with ``inf`` / −1, and per query whether it
    ran short (fewer than k rows left while every candidate was a real row: fetch more).
    """
    m = slots.shape[0]
    out_d = np.full((m, k), np.inf, dtype=distances.dtype)
    out_s = np.full((m, k), -1, dtype=slots.dtype)
    short = np.zeros(m, dtype=bool)
    for q in range(m):
        seen: set[int] = set()
        j = 0
        for d, s, g in zip(distances[q].tolist(), slots[q].tolist(), groups[q].tolist(), strict=True):
            if s < 0:
                continue
            if g >= 0:
                if g in seen:
                    continue
                seen.add(g)
            out_d[q, j], out_s[q, j] = d, s
            j += 1
            if j == k:
                break
        short[q] = j < k and bool(np.all(slots[q] >= 0))
    return out_d, out_s, short
