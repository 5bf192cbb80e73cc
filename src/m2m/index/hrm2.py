"""HRM2: a two-level (hierarchical) IVF index with progressive levels of detail.

Layout (see docs/hrm2.md): k-means splits the data into ``n_coarse`` coarse clusters, then
each coarse cluster into fine clusters (about ``n_fine`` each, allotted in proportion to the
coarse cluster's size). Every fine cluster is one inverted list. Vectors, their compressed
codes and their slots are stored in one array ordered by fine list (``offsets`` marks the
lists), so a probe reads one contiguous block. Rows appended after the build go to an
overflow region at the end (each row remembers its list) and are merged back into the sorted
region when the overflow grows, at ``save`` or on ``compact()``.

Search levels of detail: LOD 0 returns each nearest fine cluster's representative (the
member nearest its centroid) from the cluster summaries alone; LOD 1 scans the compressed
codes of the probed lists; LOD 2 re-ranks ``rerank * k`` LOD 1 candidates with exact
float32 distances. Distances follow ``m2m.compute.numpy_backend``: cosine ``1 - q·x``,
ip ``-q·x``, l2 ``||q - x||²``.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from m2m.errors import DimensionMismatchError, InvalidArgumentError, InvalidVectorError
from m2m.index import _kernels, _search
from m2m.index._layout import ROUTE_INT8_CELLS
from m2m.index.calibration import Calibration, calibrate
from m2m.index.kmeans import _update, assign, kmeans
from m2m.index.quantization import CODECS, RERANK_CHOICES, SQ8Codec, choose_codec, choose_rerank, make_codec
from m2m.types import Metric

log = logging.getLogger(__name__)

MAX_SLOT = 1 << 40  # slots index a dense mask; keep them below this


@dataclass(frozen=True)
class HRM2Params:
    """Build and search settings; ``None`` sizes are derived from N (see ``resolve``)."""

    n_coarse: int | None = None  # None -> round(sqrt(L)), L = total lists (below)
    n_fine: int | None = None  # fine lists per coarse cluster on average; None -> ceil(L / n_coarse)
    train_sample: int | None = (
        None  # None -> min(N, max(50000, 40 * L)); coarse level uses <= 256 per centroid
    )
    kmeans_iters: int = 20
    refine_iters: int = 2  # flat Lloyd passes over all fine centroids after the hierarchical training
    seed: int = 0
    codec: str = "auto"  # LOD 1 codes: "pca" (float32), "pca8" (int8 PCA), "sq8" (int8), "auto" (measured)
    code_dim: int | None = None  # pca only; None -> d/3 rounded up to a multiple of 8
    rerank: int | None = None  # LOD 2 re-ranks rerank * k LOD 1 candidates; None -> measured (4, 8 or 16)
    coarse_probe: int | None = None  # coarse clusters routed through; None -> all while cheap (see docs)
    calib_queries: int = 256  # held-out perturbed samples used to calibrate recall vs n_probe
    calib_noise: float = 1.0  # perturbation norm, in units of the sample's nearest-neighbour distance
    default_recall: float = 0.95  # n_probe used when a search names neither n_probe nor target_recall

    def resolve(self, n: int) -> dict[str, int]:
        """Concrete sizes for ``n`` vectors.

        L = clamp(round(4 sqrt(N)), 1, max(1, N // 32)) total lists (4 sqrt(N) is FAISS's usual
        lower bound for nlist; N // 32 keeps lists from getting tiny on small collections);
        n_coarse = round(sqrt(L)); n_fine = ceil(L / n_coarse).
        """
        total = max(1, min(round(4.0 * math.sqrt(n)), max(1, n // 32)))
        n_coarse = self.n_coarse or max(1, round(math.sqrt(total)))
        n_coarse = max(1, min(n_coarse, n))
        n_fine = self.n_fine or max(1, math.ceil(total / n_coarse))
        n_fine = max(1, min(n_fine, max(1, n // n_coarse)))
        train = self.train_sample or min(n, max(50000, 40 * n_coarse * n_fine))
        return {"n_coarse": n_coarse, "n_fine": n_fine, "train_sample": min(n, max(train, n_coarse))}

    def validate(self) -> None:
        for name in ("n_coarse", "n_fine", "train_sample", "code_dim", "coarse_probe"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, np.integer)) or v < 1):
                raise InvalidArgumentError(f"HRM2Params.{name} must be a positive int or None, got {v!r}")
        if self.codec not in CODECS:
            raise InvalidArgumentError(f"HRM2Params.codec must be one of {CODECS}, got {self.codec!r}")
        if self.rerank is not None and (not isinstance(self.rerank, (int, np.integer)) or self.rerank < 1):
            raise InvalidArgumentError(
                f"HRM2Params.rerank must be a positive int or None, got {self.rerank!r}"
            )
        if self.kmeans_iters < 0 or self.calib_queries < 0:
            raise InvalidArgumentError("HRM2Params.kmeans_iters and calib_queries must be >= 0")
        if not 0.0 < self.default_recall <= 1.0:
            raise InvalidArgumentError("HRM2Params.default_recall must be in (0, 1]")


def _as_vectors(vectors: np.ndarray, dim: int | None, what: str = "vectors") -> np.ndarray:
    arr = np.asarray(vectors)
    if arr.dtype.kind not in "fiu":
        raise InvalidVectorError(f"{what} must be numeric, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.ndim != 2:
        raise InvalidVectorError(f"{what} must be a 2-D array (n, d), got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise DimensionMismatchError(f"{what} have dimension {arr.shape[1]}, the index has {dim}")
    if not np.isfinite(arr).all():
        raise InvalidVectorError(f"{what} contain NaN or inf")
    return arr


def _as_slots(slots: np.ndarray, n: int) -> np.ndarray:
    arr = np.asarray(slots)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise InvalidArgumentError(f"slots must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    arr = arr.astype(np.int64, copy=False)
    if arr.shape[0] != n:
        raise InvalidArgumentError(f"got {arr.shape[0]} slots for {n} vectors")
    if arr.size and (arr.min() < 0 or arr.max() >= MAX_SLOT):
        raise InvalidArgumentError(f"slots must be in [0, 2**40), got range [{arr.min()}, {arr.max()}]")
    return arr


class HRM2Index:
    """Hierarchical IVF over float32 "search vectors"; see the module docstring."""

    # ---- construction -------------------------------------------------------------------
    def __init__(self, metric: Metric, dim: int, params: HRM2Params) -> None:
        self._metric = Metric.parse(metric)
        self._dim = int(dim)
        self.params = params
        self._alpha = 2.0 if self._metric is Metric.L2 else 1.0  # distance = bias - alpha * dot + beta
        self._route_alpha = 1.0 if self._metric is Metric.IP else 2.0
        self.calibration: Calibration | None = None
        self.codec_check: dict | None = None  # candidate recall per codec measured by "auto"
        self.build_seconds = 0.0
        self._n_at_build = 0
        self._n_added = 0
        self._n_removed = 0

    @classmethod
    def build(
        cls, vectors: np.ndarray, slots: np.ndarray, metric: Metric | str, params: HRM2Params | None = None
    ) -> HRM2Index:
        """Train the two k-means levels on a sample, assign every vector, lay out the lists,
        fit the LOD 1 codec and calibrate recall against n_probe."""
        t0 = time.perf_counter()
        params = params or HRM2Params()
        params.validate()
        x = _as_vectors(vectors, None)
        n, d = x.shape
        if n == 0:
            raise InvalidArgumentError("cannot build an HRM2 index over zero vectors")
        slots = _as_slots(slots, n)
        if np.unique(slots).size != n:
            raise InvalidArgumentError("slots passed to build must be unique")
        self = cls(Metric.parse(metric), d, params)
        sizes = params.resolve(n)
        rng = np.random.default_rng(params.seed)
        train_idx = rng.choice(n, sizes["train_sample"], replace=False)  # random order
        train = x[train_idx]

        # coarse level on the training sample, then fine levels inside each coarse cluster
        n_cs = min(train.shape[0], max(10000, 256 * sizes["n_coarse"]))
        coarse, _ = kmeans(train[:n_cs], sizes["n_coarse"], iters=params.kmeans_iters, seed=rng)
        coarse_lab = assign(train, coarse)
        counts = np.bincount(coarse_lab, minlength=sizes["n_coarse"])
        total_lists = sizes["n_coarse"] * sizes["n_fine"]
        fine_blocks, fine_owner = [], []
        for c in range(sizes["n_coarse"]):
            members = train[coarse_lab == c]
            if members.shape[0] == 0:
                continue
            k_c = round(total_lists * members.shape[0] / train.shape[0])
            k_c = max(1, min(k_c, members.shape[0]))
            cent, _ = kmeans(members, k_c, iters=params.kmeans_iters, seed=rng)
            fine_blocks.append(cent)
            fine_owner.append(np.full(k_c, c, dtype=np.int64))
        keep = np.flatnonzero(counts > 0)  # drop empty coarse clusters, renumber owners
        renum = np.full(sizes["n_coarse"], -1, dtype=np.int64)
        renum[keep] = np.arange(keep.size)
        fine = np.concatenate(fine_blocks)
        for _ in range(params.refine_iters):  # flat Lloyd passes over all fine centroids
            means, cnt = _update(train, assign(train, fine), fine.shape[0])
            fine[cnt > 0] = means[cnt > 0]
        coarse = coarse[keep]
        owner = assign(fine, coarse) if params.refine_iters else renum[np.concatenate(fine_owner)]
        self._set_centroids(coarse, fine, owner)

        # every vector goes to its nearest fine centroid (over all of them)
        lists = self._assign_lists(x)
        if params.codec == "auto":
            self._codec, self.codec_check = choose_codec(
                train,
                params.code_dim,
                (params.rerank or RERANK_CHOICES[-1]) * 10,
                rng,
                compiled=_kernels.available(),
            )
        else:
            self._codec = make_codec(params.codec, train, params.code_dim)
        if params.rerank is None:  # its own generator: the calibration's draws stay as they were
            rerank, check = choose_rerank(self._codec, train, np.random.default_rng([params.seed, 1]))
            self.params = params = dataclasses.replace(params, rerank=rerank)
            self.codec_check = {**(self.codec_check or {}), "rerank": check}
        self._set_route()
        self._init_storage(x, slots, lists)
        self._n_at_build = n
        self._refresh_representatives(np.arange(self.n_lists))
        if params.calib_queries > 0:
            self.calibration = calibrate(self, x, slots, rng)
        self.build_seconds = time.perf_counter() - t0
        log.info("built HRM2 over %d x %d in %.2fs (%d lists)", n, d, self.build_seconds, self.n_lists)
        return self

    def _set_centroids(self, coarse: np.ndarray, fine: np.ndarray, owner: np.ndarray) -> None:
        """Install centroids; fine lists are renumbered so each coarse cluster's lists are adjacent."""
        order = np.argsort(owner, kind="stable")
        fine, owner = fine[order], owner[order]
        n_lists = fine.shape[0]
        self._coarse = np.ascontiguousarray(coarse, dtype=np.float32)
        self._fine = np.ascontiguousarray(fine, dtype=np.float32)
        self._coarse_of_fine = owner.astype(np.int64)
        fine_counts = np.bincount(owner, minlength=coarse.shape[0])
        self._fine_start = np.concatenate(([0], np.cumsum(fine_counts))).astype(np.int64)
        width = int(fine_counts.max())
        table = np.full((coarse.shape[0], width), n_lists, dtype=np.int64)  # n_lists = dummy list
        for c in range(coarse.shape[0]):
            table[c, : fine_counts[c]] = np.arange(self._fine_start[c], self._fine_start[c + 1])
        self._fine_table = table
        if self._metric is Metric.IP:
            self._coarse_bias = np.zeros(coarse.shape[0], dtype=np.float32)
            fine_bias = np.zeros(n_lists, dtype=np.float32)
        else:
            self._coarse_bias = np.einsum("ij,ij->i", self._coarse, self._coarse)
            fine_bias = np.einsum("ij,ij->i", self._fine, self._fine)
        # one dummy fine centroid (index n_lists) that is never the nearest: pads the table
        self._fine_ext = np.vstack([self._fine, np.zeros((1, self._dim), np.float32)])
        self._fine_bias_ext = np.append(fine_bias, np.float32(np.inf)).astype(np.float32)
        # the same biases divided by the routing alpha, for similarity ranking (single query)
        self._coarse_hbias = (self._coarse_bias / self._route_alpha).astype(np.float32)
        self._fine_hbias_ext = (self._fine_bias_ext / self._route_alpha).astype(np.float32)
        self._fine_hbias = self._fine_hbias_ext[:-1]
        self._set_route()

    def _set_route(self) -> None:
        """Routing matrix: fine centroids in the codec's space when it is a projection (PCA),
        so a query is routed with the same short vector ``qv`` it scans with."""
        if not hasattr(self, "_codec"):
            return
        if hasattr(self._codec, "route_form"):
            self._route_ext = np.ascontiguousarray(self._codec.route_form(self._fine_ext))
            self._route_qv = True
        else:
            self._route_ext = self._fine_ext
            self._route_qv = False
        self._route = self._route_ext[:-1]
        # large routing matrices: an int8 copy for the single-query path (docs/hrm2.md)
        self._route8 = self._route8_scale = None
        if self._route.size >= ROUTE_INT8_CELLS and self._route.shape[0] and _kernels.available():
            quantiser = SQ8Codec.fit(self._route)
            self._route8, self._route8_scale = quantiser.encode(self._route), quantiser.scale

    def _assign_lists(self, x: np.ndarray) -> np.ndarray:
        """Fine list of every row: its nearest fine centroid (what flat routing assumes)."""
        return assign(x, self._fine)

    def _assign_lists_hierarchical(self, x: np.ndarray) -> np.ndarray:
        """Nearest coarse centroid, then nearest fine centroid inside it (cheaper, less exact)."""
        coarse_lab = assign(x, self._coarse)
        out = np.empty(x.shape[0], dtype=np.int64)
        order = np.argsort(coarse_lab, kind="stable")
        bounds = np.searchsorted(coarse_lab[order], np.arange(self._coarse.shape[0] + 1))
        for c in range(self._coarse.shape[0]):
            rows = order[bounds[c] : bounds[c + 1]]
            if rows.size:
                lo, hi = self._fine_start[c], self._fine_start[c + 1]
                out[rows] = lo + assign(x[rows], self._fine[lo:hi])
        return out

    def _init_storage(
        self, x: np.ndarray, slots: np.ndarray, lists: np.ndarray, codes: np.ndarray | None = None
    ) -> None:
        order = np.argsort(lists, kind="stable")
        n = x.shape[0]
        self._cap = n
        self._vecs = x[order]
        self._codes = self._codec.encode(self._vecs) if codes is None else codes[order]
        self._slots = slots[order].copy()
        self._list = lists[order].copy()
        self._bias = self._row_bias(self._vecs)
        self._n_rows = n
        self._n_main = n
        self._n_dead = 0
        self._sizes = np.bincount(lists, minlength=self.n_lists).astype(np.int64)
        self._offsets = np.concatenate(([0], np.cumsum(self._sizes))).astype(np.int64)
        self._row_of_slot = np.full(int(slots.max()) + 1 if n else 1, -1, dtype=np.int64)
        self._row_of_slot[self._slots] = np.arange(n)
        self._refresh_blocks()

    def _row_bias(self, v: np.ndarray) -> np.ndarray:
        if self._metric is Metric.L2:
            return np.einsum("ij,ij->i", v, v).astype(np.float32)
        return np.zeros(v.shape[0], dtype=np.float32)

    def _refresh_representatives(self, lists: np.ndarray) -> None:
        """Representative of each given list = its live member nearest the fine centroid."""
        if not hasattr(self, "_rep_slot"):
            self._rep_slot = np.full(self.n_lists, -1, dtype=np.int64)
            self._rep_vec = np.zeros((self.n_lists, self._dim), dtype=np.float32)
        for j in np.asarray(lists, dtype=np.int64):
            rows = self._rows_of_list(int(j))
            rows = rows[self._slots[rows] >= 0]
            if rows.size == 0:
                self._rep_slot[j] = -1
                self._rep_vec[j] = 0.0
                continue
            diff = self._vecs[rows] - self._fine[j]
            best = rows[int(np.argmin(np.einsum("ij,ij->i", diff, diff)))]
            self._rep_slot[j] = self._slots[best]
            self._rep_vec[j] = self._vecs[best]

    def _rows_of_list(self, j: int) -> np.ndarray:
        main = np.arange(self._offsets[j], self._offsets[j + 1])
        if self._n_rows > self._n_main:
            extra = self._n_main + np.flatnonzero(self._list[self._n_main : self._n_rows] == j)
            main = np.concatenate([main, extra])
        return main

    # ---- properties ----------------------------------------------------------------------
    @property
    def _hbias(self) -> np.ndarray:
        """Row bias divided by alpha (l2: ||x||²/2; removed rows: inf), cached until a mutation."""
        if self._hbias_cache is None:
            self._hbias_cache = self._bias / np.float32(self._alpha)
        return self._hbias_cache

    def _refresh_blocks(self) -> None:
        """Per-list views of the sorted region (rows and codes) used by the single-query scan."""
        self._hbias_cache = None
        spans = list(itertools.pairwise(self._offsets.tolist()))
        self._row_blocks = [np.arange(a, b) for a, b in spans]
        self._code_blocks = [self._codes[a:b] for a, b in spans]

    @property
    def _bias_needed(self) -> bool:
        """Row biases matter: l2 (they hold ||x||²) or removed rows (they hold inf)."""
        return self._metric is Metric.L2 or self._n_dead > 0

    @property
    def n_vectors(self) -> int:
        """Live (searchable) vectors."""
        return self._n_rows - self._n_dead

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def metric(self) -> Metric:
        return self._metric

    @property
    def n_lists(self) -> int:
        return int(self._fine.shape[0])

    @property
    def n_coarse(self) -> int:
        return int(self._coarse.shape[0])

    @property
    def needs_retrain(self) -> bool:
        """True once the data drifted from what the centroids were trained on: vectors added
        plus removed since the build exceed 25% of the build size, or the largest list holds
        more than 8x the mean list size (and over 64 vectors)."""
        churn = (self._n_added + self._n_removed) > 0.25 * max(1, self._n_at_build)
        sizes = self._live_list_sizes()
        mean = sizes.mean() if sizes.size else 0.0
        imbalance = bool(sizes.size and sizes.max() > max(64, 8 * mean))
        return bool(churn or imbalance)

    def _live_list_sizes(self) -> np.ndarray:
        live = self._slots[: self._n_rows] >= 0
        return np.bincount(self._list[: self._n_rows][live], minlength=self.n_lists)

    # ---- mutation ------------------------------------------------------------------------
    def add(self, slots: np.ndarray, vectors: np.ndarray) -> None:
        """Insert vectors into their nearest fine list (no retraining); an existing slot is
        replaced (upsert). Within one call a repeated slot keeps its last vector."""
        x = _as_vectors(vectors, self._dim)
        slots = _as_slots(slots, x.shape[0])
        if slots.size == 0:
            return
        _rev_unique, rev_idx = np.unique(slots[::-1], return_index=True)
        keep = np.sort(slots.size - 1 - rev_idx)
        slots, x = slots[keep], x[keep]
        self.remove(slots[self._lookup(slots) >= 0], _count=False)
        lists = self._assign_lists(x)
        need = self._n_rows + x.shape[0]
        if need > self._cap:
            self._grow(max(need, int(self._cap * 1.5) + 16))
        r0, r1 = self._n_rows, need
        self._vecs[r0:r1] = x
        self._codes[r0:r1] = self._codec.encode(x)
        self._slots[r0:r1] = slots
        self._list[r0:r1] = lists
        self._bias[r0:r1] = self._row_bias(x)
        top = int(slots.max())
        if top >= self._row_of_slot.shape[0]:
            grown = np.full(max(top + 1, int(self._row_of_slot.shape[0] * 1.5)), -1, dtype=np.int64)
            grown[: self._row_of_slot.shape[0]] = self._row_of_slot
            self._row_of_slot = grown
        self._row_of_slot[slots] = np.arange(r0, r1)
        self._n_rows = r1
        self._hbias_cache = None
        self._n_added += int(slots.size)
        empty_reps = np.unique(lists[self._rep_slot[lists] < 0])
        if empty_reps.size:
            self._refresh_representatives(empty_reps)
        if self._n_rows - self._n_main > max(2048, self._n_main // 20):
            self.compact()

    def remove(self, slots: np.ndarray, _count: bool = True) -> None:
        """Delete slots at once (tombstones, dropped at the next compaction); unknown slots are ignored."""
        slots = np.asarray(slots)
        if slots.ndim != 1 or (slots.size and slots.dtype.kind not in "iu"):
            raise InvalidArgumentError(f"slots must be a 1-D integer array, got {slots.dtype} {slots.shape}")
        rows = self._lookup(slots.astype(np.int64, copy=False))
        rows = np.unique(rows[rows >= 0])
        if rows.size == 0:
            return
        removed_slots = self._slots[rows].copy()
        self._row_of_slot[removed_slots] = -1
        self._slots[rows] = -1
        self._bias[rows] = np.inf
        self._hbias_cache = None
        self._n_dead += int(rows.size)
        if _count:
            self._n_removed += int(rows.size)
        hit = np.flatnonzero(np.isin(self._rep_slot, removed_slots))
        if hit.size:
            self._refresh_representatives(hit)

    def _lookup(self, slots: np.ndarray) -> np.ndarray:
        out = np.full(slots.shape[0], -1, dtype=np.int64)
        ok = (slots >= 0) & (slots < self._row_of_slot.shape[0])
        out[ok] = self._row_of_slot[slots[ok]]
        return out

    def _grow(self, cap: int) -> None:
        def grow(a: np.ndarray, fill) -> np.ndarray:
            out = np.full((cap, *a.shape[1:]), fill, dtype=a.dtype)
            out[: self._n_rows] = a[: self._n_rows]
            return out

        self._vecs = grow(self._vecs, 0)
        self._codes = grow(self._codes, 0)
        self._slots = grow(self._slots, -1)
        self._list = grow(self._list, 0)
        self._bias = grow(self._bias, np.inf)
        self._cap = cap
        self._refresh_blocks()

    def compact(self) -> None:
        """Merge the overflow region into the sorted layout and drop removed rows."""
        live = np.flatnonzero(self._slots[: self._n_rows] >= 0)
        order = live[np.argsort(self._list[live], kind="stable")]
        self._vecs = self._vecs[order]
        self._codes = self._codes[order]
        self._slots = self._slots[order]
        self._list = self._list[order]
        self._bias = self._bias[order]
        n = order.size
        self._cap = self._n_rows = self._n_main = n
        self._n_dead = 0
        self._sizes = np.bincount(self._list, minlength=self.n_lists).astype(np.int64)
        self._offsets = np.concatenate(([0], np.cumsum(self._sizes))).astype(np.int64)
        self._row_of_slot.fill(-1)
        self._row_of_slot[self._slots] = np.arange(n)
        self._refresh_blocks()

    # ---- search --------------------------------------------------------------------------
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
        """k nearest live slots per query: ``(distances float32 (q, k), slots int64 (q, k))``,
        best first, padded with ``inf`` / ``-1``. ``allowed`` is a bool mask indexed by slot."""
        return _search.search(self, queries, k, n_probe, lod, allowed, target_recall)

    def search_progressive(
        self,
        query: np.ndarray,
        k: int,
        *,
        n_probe: int | None = None,
        allowed: np.ndarray | None = None,
        target_recall: float | None = None,
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield ``(lod, distances (k,), slots (k,))`` for LOD 0, 1 and 2 of one query."""
        return _search.progressive(self, query, k, n_probe, allowed, target_recall)

    def n_probe_for(self, target_recall: float) -> int:
        """Smallest calibrated n_probe whose measured recall@10 reaches ``target_recall``."""
        if not 0.0 < target_recall <= 1.0:
            raise InvalidArgumentError(f"target_recall must be in (0, 1], got {target_recall}")
        if self.calibration is None:
            return self.n_lists
        return self.calibration.n_probe_for(target_recall, self.n_lists)

    # ---- persistence & stats -------------------------------------------------------------
    def save(self, directory: Path, state_version: int) -> None:
        """Atomically write the index (compacted) to ``directory``; see ``m2m.index.files``."""
        from m2m.index.files import save_index

        self.compact()
        save_index(self, Path(directory), int(state_version))

    @classmethod
    def load(cls, directory: Path) -> tuple[HRM2Index, int]:
        """Read an index written by ``save``; raises IndexCorruptError on any mismatch."""
        from m2m.index.files import load_index

        return load_index(cls, Path(directory))

    def stats(self) -> dict:
        sizes = self._live_list_sizes()
        arrays = (self._vecs, self._codes, self._slots, self._list, self._bias, self._row_of_slot)
        arrays += (self._coarse, self._fine_ext, self._rep_vec, self._fine_table)
        return {
            "n": self.n_vectors,
            "dim": self._dim,
            "metric": self._metric.value,
            "n_coarse": self.n_coarse,
            "n_fine_total": self.n_lists,
            "list_size_min": int(sizes.min()),
            "list_size_mean": float(sizes.mean()),
            "list_size_max": int(sizes.max()),
            "overflow_rows": int(self._n_rows - self._n_main),
            "tombstones": int(self._n_dead),
            "codec": self._codec.name,
            "code_dim": self._codec.code_dim,
            "codec_check": self.codec_check,
            "bytes": int(sum(a.nbytes for a in arrays)),
            "build_seconds": self.build_seconds,
            "needs_retrain": self.needs_retrain,
            "params": asdict(self.params),
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
        }
