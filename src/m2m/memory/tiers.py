"""Tiered HRM2: the index's lists served from disk (cold), a RAM cache (warm) and the GPU (hot).

``TieredHRM2.create(index, directory, config)`` writes a built ``HRM2Index`` as a *tier
directory*: the small routing arrays (centroids, codec, calibration, per-row slots and
biases) in ``meta.<gen>.npz``, the lists (codes and vectors, cluster-contiguous) in one cold
file ``lists.<gen>.cold`` (``m2m.memory.cold_store``), and ``tiers.json`` (the commit point,
replaced atomically). ``TieredHRM2.open(directory, config)`` reads only the small arrays:
RAM holds the routing data plus 12 bytes per row (slot and bias) and 8 per slot; list data
lives in the tiers.

Search runs HRM2's own search code (``m2m.index._search``) over a *routing-only* copy of the
index whose ``_codes`` and ``_vecs`` are lazy row views (``_TierRows``): each time the
search reads rows, the view fetches the lists that hold them from the warm cache, or from
disk on a miss. The arithmetic is therefore the in-RAM index's, on the same values in the
same order: results are identical to ``HRM2Index.search`` with the same parameters. Before
running, a search routes its queries (centroids are in RAM) and hands the probed lists to the
prefetcher, so the lists it will read next load while the current ones are scored.

Vectors (LOD 2 re-ranking reads ``rerank * k`` rows per query) are read as single rows
straight from the cold file the first time a list is re-ranked from; a list whose vectors
are asked for again is loaded whole into the warm cache (frequency-gated admission).

Exact search (``n_probe >= n_lists`` at LOD 2) streams the lists instead of gathering them.
The hot tier (lists on the GPU, ``hot_gpu.py``) serves ``TieredGPUSearch`` (same module).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from m2m.errors import IndexCorruptError, InvalidArgumentError
from m2m.memory.cold_store import CODES, VECTORS, ColdStore
from m2m.memory.snapshot import FORMAT, MANIFEST, routing_index, write_tier_directory
from m2m.memory.store import TierStore, _attach
from m2m.types import Metric

log = logging.getLogger(__name__)

__all__ = ["TierConfig", "TieredHRM2", "write_tier_directory"]


@dataclass(frozen=True)
class TierConfig:
    """Tier budgets. ``warm_bytes``: RAM cache of lists; ``hot_bytes``: lists kept on the GPU
    (0 disables the hot tier); ``device``: "auto" (CUDA if torch sees one, else none), "cuda",
    "cpu" (torch on the CPU: tests) or "none"."""

    warm_bytes: int
    hot_bytes: int = 0
    prefetch: bool = True
    device: str = "auto"
    prefetch_fraction: float = 0.25  # at most this share of warm_bytes is pinned ahead of use
    window_fraction: float = 0.1  # W-TinyLFU admission window
    vector_admit: int = 2  # load a list's vectors whole once they are asked for this often
    read_mode: str = "pread"  # cold reads: "pread" or "mmap"
    verify: bool = True  # CRC-32 check of every list read from disk

    def validate(self) -> None:
        if self.warm_bytes < 0 or self.hot_bytes < 0:
            raise InvalidArgumentError("TierConfig budgets must be >= 0 bytes")
        if not 0.0 <= self.prefetch_fraction <= 1.0 or not 0.0 <= self.window_fraction <= 1.0:
            raise InvalidArgumentError("TierConfig fractions must be in [0, 1]")
        if self.device not in ("auto", "cuda", "cpu", "none") and not self.device.startswith("cuda:"):
            raise InvalidArgumentError(
                f"TierConfig.device must be auto, cuda, cpu or none, got {self.device!r}"
            )
        if self.read_mode not in ("pread", "mmap"):
            raise InvalidArgumentError(f"TierConfig.read_mode must be pread or mmap, got {self.read_mode!r}")


class TieredHRM2:
    """A read-only HRM2 index served from cold/warm/hot tiers; see the module docstring."""

    def __init__(self, directory: Path, config: TierConfig) -> None:
        config.validate()
        self.directory = Path(directory)
        self.config = config
        try:
            manifest = json.loads((self.directory / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise IndexCorruptError(f"no tier directory at {directory}: {MANIFEST} is missing") from None
        except (OSError, ValueError) as exc:
            raise IndexCorruptError(f"tier manifest in {directory} is unreadable: {exc}") from None
        if manifest.get("format") != FORMAT:
            raise IndexCorruptError(f"{directory / MANIFEST} is not a tier manifest")
        self.manifest = manifest
        try:
            with np.load(self.directory / manifest["meta"], allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError) as exc:
            raise IndexCorruptError(f"tier meta file in {directory} is unreadable: {exc}") from None
        self.index = routing_index(manifest, arrays)
        cold = ColdStore(self.directory / manifest["cold"], self.index._offsets, mode=config.read_mode,
                         verify=config.verify)  # fmt: skip
        self.store = TierStore(cold, config)
        _attach(self.index, self.store)
        self.hot = None
        if config.hot_bytes > 0:
            from m2m.memory.hot_gpu import HotTier, resolve_device

            dev = resolve_device(config.device)
            if dev is not None:
                self.hot = HotTier(self.store, dev, config.hot_bytes)

    @classmethod
    def create(
        cls, index, directory: Path, config: TierConfig, state_version: int | None = None
    ) -> TieredHRM2:
        """Write a built ``HRM2Index`` to ``directory`` as tiers and open it."""
        write_tier_directory(index, directory, state_version)
        return cls(directory, config)

    @classmethod
    def from_saved(cls, hrm2_directory: Path, directory: Path, config: TierConfig) -> TieredHRM2:
        """Tiers from an index directory written by ``HRM2Index.save`` (loads it once)."""
        from m2m.index.hrm2 import HRM2Index

        index, _ = HRM2Index.load(Path(hrm2_directory))
        return cls.create(index, directory, config)

    @classmethod
    def open(cls, directory: Path, config: TierConfig) -> TieredHRM2:
        """Open an existing tier directory (reads only the small routing arrays)."""
        return cls(directory, config)

    # ---- properties ---------------------------------------------------------------------
    @property
    def n_vectors(self) -> int:
        return self.index.n_vectors

    @property
    def n_lists(self) -> int:
        return self.index.n_lists

    @property
    def dim(self) -> int:
        return self.index.dim

    @property
    def metric(self) -> Metric:
        return self.index.metric

    @property
    def state_version(self) -> int | None:
        """The ``state_version`` the snapshot was written with (None if none was given)."""
        return self.manifest.get("state_version")

    def list_bytes(self) -> int:
        """Bytes of list data (codes + vectors) in the cold file."""
        return int(self.store.cold.header["crc_at"] - self.store.cold.header["codes_at"])

    def ram_overhead_bytes(self) -> int:
        """Bytes of the routing arrays held in RAM whatever the budgets."""
        ix = self.index
        arrays = [ix._coarse, ix._fine_ext, ix._route_ext, ix._fine_table, ix._slots, ix._bias, ix._row_of_slot,
                  ix._offsets, ix._rep_slot, ix._rep_vec, self.store.cold.crc]  # fmt: skip
        arrays += list(ix._codec.arrays().values())
        return int(sum(a.nbytes for a in arrays))

    # ---- search -------------------------------------------------------------------------
    def _plan(self, queries: np.ndarray, n_probe: int | None, lod: int, target_recall: float | None):
        """Keys the search will read, in order (chunk by chunk), from routing the queries."""
        from m2m.index import _search

        if lod not in (1, 2):
            return []
        q = np.asarray(queries, dtype=np.float32)
        q = q[None, :] if q.ndim == 1 else q
        if q.ndim != 2 or q.shape[1] != self.dim or not np.isfinite(q).all():
            return []  # the search itself raises the right error
        npb = _search._n_probe(self.index, n_probe, target_recall)
        if npb >= self.n_lists:
            return []
        keys: list[tuple[int, int]] = []
        step = 64
        for s in range(0, q.shape[0], step):
            lists = _search.route_batch(self.index, q[s : s + step], npb)
            if q.shape[0] < _search.BATCH_MIN:
                for row in lists:  # query by query, in the order each is scanned
                    keys.extend((int(j), CODES) for j in np.unique(row) if j < self.n_lists)
            else:
                keys.extend((int(j), CODES) for j in np.unique(lists) if j < self.n_lists)
        return keys

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        n_probe: int | None = None,
        lod: int = 2,
        allowed: np.ndarray | None = None,
        target_recall: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Same contract and results as ``HRM2Index.search``, reading lists through the tiers."""
        from m2m.index import _search

        if lod == 2 and isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k > 0:
            npb = _search._n_probe(self.index, n_probe, target_recall)
            if npb >= self.n_lists:
                return self._exhaustive(queries, int(k), allowed)
            if allowed is not None:
                mask = _search._allowed(self.index, allowed)
                brute, npf = _search.filtered_plan(self.index, npb, int(k), mask)
                if not brute and npf >= self.n_lists:
                    return self._exhaustive(queries, int(k), allowed)
        plan = self.store.begin(self._plan(queries, n_probe, lod, target_recall) if allowed is None else [])
        try:
            return _search.search(self.index, queries, k, n_probe, lod, allowed, target_recall)
        finally:
            self.store.end(plan)

    def search_progressive(
        self,
        query: np.ndarray,
        k: int,
        *,
        n_probe: int | None = None,
        allowed: np.ndarray | None = None,
        target_recall: float | None = None,
    ):
        """Yield ``(lod, distances (k,), slots (k,))`` for LOD 0, 1 and 2, as ``HRM2Index``."""
        from m2m.index import _search

        yield from _search.progressive(self.index, query, k, n_probe, allowed, target_recall)

    def _exhaustive(self, queries: np.ndarray, k: int, allowed: np.ndarray | None):
        """Exact search streaming every list's vectors (the in-RAM index scans all rows)."""
        from m2m.index import _search
        from m2m.index._layout import pad_results, topk_rows

        ix = self.index
        qs, single = _search._queries(ix, queries)
        mask = _search._allowed(ix, allowed)
        const = _search._const_batch(ix, qs, 2).astype(np.float32)
        m = qs.shape[0]
        best_d = np.full((m, k), np.inf, np.float32)
        best_s = np.full((m, k), -1, np.int64)
        plan = self.store.begin([(j, VECTORS) for j in range(self.n_lists)])
        try:
            for j in range(self.n_lists):
                lo, hi = int(ix._offsets[j]), int(ix._offsets[j + 1])
                if hi <= lo:
                    continue
                blk = self.store.part(j, VECTORS)
                d = qs @ blk.T
                d *= -ix._alpha
                d += ix._bias[lo:hi]
                d += const[:, None]
                slots = ix._slots[lo:hi]
                if mask is not None:
                    d[:, ~mask[slots]] = np.inf
                if ix._metric is Metric.L2:
                    np.maximum(d, 0.0, out=d)
                cat_d = np.concatenate([best_d, d], axis=1)
                cat_s = np.concatenate([best_s, np.broadcast_to(slots, d.shape)], axis=1)
                cols, best_d = topk_rows(cat_d, min(k, cat_d.shape[1]))
                best_s = np.take_along_axis(cat_s, cols, axis=1)
        finally:
            self.store.end(plan)
        d, s = pad_results(best_d, best_s, k)
        return (d[0], s[0]) if single else (d, s)

    # ---- stats & lifecycle --------------------------------------------------------------
    def stats(self) -> dict:
        """Per tier: hits, misses, bytes moved, time spent (``get_statistics()["tiers"]``)."""
        c = dict(self.store.counters)
        pf = self.store.prefetcher
        warm = self.store.warm
        out = {
            "cold": {
                "file_bytes": int(self.store.cold.header["total_bytes"]),
                "list_reads": c["cold_reads"],
                "row_reads": c["cold_row_reads"],
                "bytes_moved": c["cold_bytes"] + c["cold_row_bytes"],
                "time_s": c["cold_s"],
                "read_mode": self.config.read_mode,
            },
            "warm": {
                "budget_bytes": warm.budget,
                "resident_bytes": warm.nbytes,
                "peak_bytes": warm.peak_bytes,
                "entries": len(warm),
                "hits": c["warm_hits"],
                "misses": c["warm_misses"],
                "prefetch_hits": c["prefetch_hits"],
                "evictions": warm.evictions,
                "bytes_moved": c["warm_bytes_in"] + (pf.bytes_loaded if pf else 0),
                "time_s": c["miss_read_s"] + c["prefetch_wait_s"],
                "prefetch": None
                if pf is None
                else {
                    "loads": pf.loads,
                    "wasted": pf.wasted,
                    "bytes": pf.bytes_loaded,
                    "load_s": pf.load_seconds,
                    "wait_s": c["prefetch_wait_s"],
                    "pin_budget_bytes": pf.pin_budget,
                },
            },
            "hot": None if self.hot is None else self.hot.stats(),
            "ram_overhead_bytes": self.ram_overhead_bytes(),
        }
        return out

    def close(self) -> None:
        if self.hot is not None:
            self.hot.clear()
        self.store.close()

    def __enter__(self) -> TieredHRM2:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
