"""The warm + cold store behind ``TieredHRM2``: list parts by key, and lazy row views.

``TierStore.part(j, part)`` returns list ``j``'s codes or vectors from the warm cache, waiting
for the prefetcher when it is loading them, or reads them from the cold file on a miss.
``_TierRows`` / ``_ListBlocks`` / ``_ListRanges`` stand in for an ``HRM2Index``'s ``_codes``,
``_vecs``, ``_code_blocks`` and ``_row_blocks`` so HRM2's own search code reads through the tiers.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from m2m.memory.cold_store import CODES, VECTORS, ColdStore
from m2m.memory.prefetch import Plan, Prefetcher
from m2m.memory.warm_cache import WarmCache


class TierStore:
    """List parts by key ``(list, part)``: warm cache first, then the cold file."""

    def __init__(self, cold: ColdStore, config) -> None:
        self.cold = cold
        self.config = config
        self.offsets = cold.offsets
        self.warm = WarmCache(config.warm_bytes, window_fraction=config.window_fraction)
        self._local = threading.local()
        self._lock = threading.Lock()
        self.counters = {
            "warm_hits": 0,
            "warm_misses": 0,
            "prefetch_hits": 0,
            "prefetch_wait_s": 0.0,
            "miss_read_s": 0.0,
            "cold_reads": 0,
            "cold_bytes": 0,
            "cold_row_reads": 0,
            "cold_row_bytes": 0,
            "cold_s": 0.0,
            "warm_bytes_in": 0,
        }
        pin_budget = int(config.warm_bytes * config.prefetch_fraction)
        self.prefetcher = (
            Prefetcher(self.warm, self._load, self._size_of, pin_budget)
            if config.prefetch and pin_budget > 0
            else None
        )

    def _size_of(self, key: tuple[int, int]) -> int:
        return self.cold.nbytes(key[0], key[1])

    def _load(self, key: tuple[int, int]) -> tuple[np.ndarray, int]:
        t0 = time.perf_counter()
        arr = self.cold.read(key[0], key[1])
        dt = time.perf_counter() - t0
        with self._lock:
            self.counters["cold_reads"] += 1
            self.counters["cold_bytes"] += arr.nbytes
            self.counters["cold_s"] += dt
        return arr, arr.nbytes

    def _count(self, name: str, value: float = 1) -> None:
        with self._lock:
            self.counters[name] += value

    # ---- plans --------------------------------------------------------------------------
    def begin(self, keys: list[tuple[int, int]]) -> Plan | None:
        if self.prefetcher is None or not keys:
            self._local.plan = None
            return None
        plan = self.prefetcher.open(keys)
        self._local.plan = plan
        return plan

    def end(self, plan: Plan | None) -> None:
        self._local.plan = None
        if plan is not None and self.prefetcher is not None:
            self.prefetcher.close(plan)

    # ---- reads --------------------------------------------------------------------------
    def part(self, j: int, part: int, *, touch: bool = True) -> np.ndarray:
        """List ``j``'s part through the tiers (read-only array; do not modify)."""
        key = (int(j), int(part))
        if touch:
            self.warm.touch(key)
        plan = getattr(self._local, "plan", None)
        if self.prefetcher is not None:
            value, prefetched, waited = self.prefetcher.claim(key, plan)
            if waited:
                self._count("prefetch_wait_s", waited)
        else:
            value, prefetched = self.warm.get(key), False
        if value is not None:
            self._count("warm_hits")
            if prefetched:
                self._count("prefetch_hits")
            return value
        self._count("warm_misses")
        t0 = time.perf_counter()
        value, nbytes = self._load(key)
        value.flags.writeable = False
        if self.warm.put(key, value, nbytes):
            self._count("warm_bytes_in", nbytes)
        self._count("miss_read_s", time.perf_counter() - t0)
        return value

    def gather(self, part: int, rows: np.ndarray) -> np.ndarray:
        """Rows (global row numbers, any order, repeats allowed) of codes or vectors."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        width = self.cold.code_dim if part == CODES else self.cold.dim
        dtype = self.cold.code_dtype if part == CODES else np.dtype(np.float32)
        if rows.size == 0:
            return np.empty((0, width), dtype=dtype)
        lists = np.searchsorted(self.offsets, rows, side="right") - 1
        uniq, inv = np.unique(lists, return_inverse=True)
        if part == CODES:
            blocks = [self.part(int(j), CODES) for j in uniq]
            sizes = np.array([b.shape[0] for b in blocks], dtype=np.int64)
            base = np.concatenate(([0], np.cumsum(sizes)[:-1]))
            cat = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
            return cat[base[inv] + rows - self.offsets[lists]]
        out = np.empty((rows.size, width), dtype=np.float32)
        order = np.argsort(inv, kind="stable")
        bounds = np.searchsorted(inv[order], np.arange(uniq.size + 1))
        for i, j in enumerate(uniq.tolist()):
            sel = order[bounds[i] : bounds[i + 1]]
            local = rows[sel] - self.offsets[j]
            key = (j, VECTORS)
            block = self.warm.get(key)
            if block is None and self.warm.touch(key) >= self.config.vector_admit:
                block = self.part(j, VECTORS, touch=False)
            elif block is not None:
                self.warm.touch(key)
                self._count("warm_hits")
            if block is not None:
                out[sel] = block[local]
            else:
                self._count("warm_misses")
                out[sel] = self._read_rows(j, local)
        return out

    def _read_rows(self, j: int, local: np.ndarray) -> np.ndarray:
        """Single rows of list ``j``'s vectors straight from the cold file (runs coalesced)."""
        uniq, inv = np.unique(local, return_inverse=True)
        t0 = time.perf_counter()
        got = self.cold.read_rows(j, uniq)
        dt = time.perf_counter() - t0
        with self._lock:
            self.counters["cold_row_reads"] += int(uniq.size)
            self.counters["cold_row_bytes"] += got.nbytes
            self.counters["cold_s"] += dt
            self.counters["miss_read_s"] += dt
        return got[inv]

    def close(self) -> None:
        if self.prefetcher is not None:
            self.prefetcher.stop()
        self.warm.clear()
        self.cold.close()


class _TierRows:
    """A lazy ``(n_rows, width)`` array: indexing fetches the rows through a ``TierStore``."""

    ndim = 2

    def __init__(self, store: TierStore, part: int) -> None:
        self._store = store
        self._part = part
        width = store.cold.code_dim if part == CODES else store.cold.dim
        self.dtype = store.cold.code_dtype if part == CODES else np.dtype(np.float32)
        self.shape = (store.cold.n_rows, width)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx: Any) -> np.ndarray:
        if isinstance(idx, slice):
            lo, hi, step = idx.indices(self.shape[0])
            off = self._store.offsets
            j = int(np.searchsorted(off, lo, side="right") - 1)
            if step == 1 and 0 <= j < off.shape[0] - 1 and off[j] == lo and off[j + 1] == hi:
                return self._store.part(j, self._part)  # one whole list: the common case
            rows = np.arange(lo, hi, step)
            return self._store.gather(self._part, rows)
        if isinstance(idx, tuple) or np.ndim(idx) == 0:
            raise TypeError("tiered rows support slices and integer arrays of row numbers")
        rows = np.asarray(idx)
        if rows.dtype == np.bool_:
            rows = np.flatnonzero(rows)
        return self._store.gather(self._part, rows).reshape(*rows.shape, self.shape[1])

    def __array__(self, *args, **kwargs):  # pragma: no cover - guard against silent materialising
        raise TypeError("tiered rows are not materialised as one array; index them")


class _ListRanges:
    """``_row_blocks[j]``: the row numbers of list ``j`` (computed on demand)."""

    def __init__(self, offsets: np.ndarray) -> None:
        self._off = offsets

    def __len__(self) -> int:
        return self._off.shape[0] - 1

    def __getitem__(self, j: int) -> np.ndarray:
        return np.arange(self._off[j], self._off[j + 1])


class _ListBlocks:
    """``_code_blocks[j]``: list ``j``'s codes, fetched through the tiers."""

    def __init__(self, store: TierStore, part: int) -> None:
        self._store = store
        self._part = part

    def __len__(self) -> int:
        return self._store.offsets.shape[0] - 1

    def __getitem__(self, j: int) -> np.ndarray:
        return self._store.part(int(j), self._part)


def _attach(ix, store: TierStore) -> None:
    """Point the routing-only index's row data at the tiers (lazy views, nothing loaded)."""
    ix._codes = _TierRows(store, CODES)
    ix._vecs = _TierRows(store, VECTORS)
    # per-list views the in-RAM index keeps for its single-query scan (HRM2Index._refresh_blocks)
    ix._hbias_cache = None
    ix._row_blocks = _ListRanges(ix._offsets)
    ix._code_blocks = _ListBlocks(store, CODES)
