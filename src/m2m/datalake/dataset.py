"""The training data lake: a PyTorch ``IterableDataset`` streaming a collection's vectors.

Each item the dataset yields is a ready batch, a dict of

- ``"vectors"``: float32 ``(B, d)``;
- ``"weights"``: float32 ``(B,)``, 1 except under importance sampling (below);
- ``"generated"``: bool ``(B,)``, True for rows made by Langevin sampling;
- ``"index"``: int64 ``(B,)``, the row's position in the epoch's snapshot (−1 if generated);
- ``"ids"`` (``include_ids``): list of ids, ``None`` for generated rows;
- ``"metadatas"`` (``include_metadata``): list of metadata dicts, ``None`` for generated rows.

How an epoch is laid out:

- **Snapshot.** The live vectors are copied out once per epoch (``export_vectors``, one
  gather from the RAM mirror), and only when the collection changed since the last one.
  Vectors are the search form: unit rows for cosine collections.
- **Order.** Plain: insertion order. ``shuffle``: a permutation drawn from
  ``(seed, epoch)``, so the same seed and epoch give the same order and epochs differ;
  the epoch advances by one each time a loader is iterated, or is set by ``set_epoch``.
- **Importance sampling.** ``num_samples`` (default N) i.i.d. draws with probability
  ``p_i ∝ α_i (floor + u_i)``, where ``u_i ∈ (0, 1]`` is the rank of item i's energy
  ``E(x_i) = −log p(x_i)`` under the splat mixture (high energy = sparse region) and α_i
  the item's splat amplitude (1 until the splat layer records usage). Each row carries
  ``w_i = 1 / (N p_i)``, so ``mean(w f(x))`` over the draws is an unbiased estimate of the
  plain mean of f over the collection. ``floor`` bounds the ratio of the largest to the
  smallest probability by ``(floor + 1) / floor``, which bounds the estimator's variance.
- **Generation.** A fixed fraction of every batch (``round(B · fraction)`` rows) is made by
  the sampler behind ``Collection.generate``'s default (``source="items"``):
  ``m2m.splats.generate.sample_item_splats``, Metropolis-adjusted Langevin chains on the
  item-splat energy ``−log Σ_i w_i vMF(x; μ_i, κ_s)`` of the snapshot, ``w_i`` the items'
  sampling weights (α_i / group size, as for ``generate``), each chain started at an exact
  draw of that mixture and seeing the 32 items nearest its parent. Their energies follow the
  stored items' and they are not copies (cosine ≈ ``item_similarity`` to their parent).
  They follow that law in every mode (also under importance sampling) and have weight 1.
  ``generation_source="clusters"`` keeps the older, cheaper chains on the cluster mixture
  (started at stored items drawn like the batch's real rows, ``langevin_candidates``
  splats per chain), whose samples are too narrow in energy (docs/splats.md).
- **Workers.** With ``num_workers = W`` every process computes the same epoch plan and
  worker w makes batches w, w + W, ...: together they cover each planned row once, no
  duplicates, no gaps.
- **Prefetch.** A background thread in each process builds up to ``prefetch`` batches
  ahead of the consumer (0 builds them on demand).
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from m2m.datalake.export import (
    FittedSplats,
    VectorSnapshot,
    collection_version,
    export_vectors,
    item_alpha,
    mixture_energy,
    mixture_from_collection,
)
from m2m.datalake.generation import generate_from_clusters, generate_from_items
from m2m.errors import InvalidArgumentError
from m2m.types import Metric

__all__ = ["SplatLakeDataset", "SplatLakeLoader", "importance_probabilities"]

logger = logging.getLogger(__name__)

_DONE = object()
_GENERATION_SOURCES = ("items", "clusters")


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def importance_probabilities(energy: np.ndarray, alpha: np.ndarray, floor: float) -> np.ndarray:
    """``p_i ∝ α_i (floor + u_i)`` with ``u_i = rank(E_i) / N`` in (0, 1] (highest energy → 1)."""
    n = energy.shape[0]
    rank = np.empty(n, dtype=np.float64)
    rank[np.argsort(energy, kind="stable")] = np.arange(1, n + 1, dtype=np.float64)
    q = alpha * (floor + rank / n)
    total = q.sum()
    if not total > 0:
        raise InvalidArgumentError("importance sampling needs at least one item with α > 0")
    return q / total


@dataclass
class _Plan:
    """Everything one epoch needs; identical in every worker process."""

    snapshot: VectorSnapshot
    order: np.ndarray | None  # None = insertion order
    total: int
    n_real: int
    n_gen: int
    n_batches: int
    weights: np.ndarray | None  # 1 / (N p_i) per snapshot item, importance sampling only
    probs: np.ndarray | None
    splats: FittedSplats | None
    unit: np.ndarray | None  # unit rows of the snapshot (item-splat generation)
    parent_weights: np.ndarray | None  # w_i of the item-splat mixture (0 for zero vectors)
    epoch: int


class SplatLakeDataset(IterableDataset):
    """Batches of a collection's vectors for training; see the module docstring."""

    def __init__(
        self,
        collection: Any,
        batch_size: int = 1024,
        *,
        shuffle: bool = False,
        seed: int | None = None,
        importance_sampling: bool = False,
        generate_samples: bool = False,
        generated_fraction: float = 0.1,
        num_samples: int | None = None,
        importance_floor: float = 0.1,
        include_ids: bool = False,
        include_metadata: bool = False,
        drop_last: bool = False,
        prefetch: int = 4,
        langevin_steps: int = 20,
        generation_source: str = "items",
        item_similarity: float = 0.98,
        langevin_candidates: int = 8,
        generation_chunk: int = 512,
        source: str = "mirror",
    ) -> None:
        super().__init__()
        self.batch_size = _positive_int(batch_size, "batch_size")
        if not isinstance(generated_fraction, int | float) or not 0.0 < generated_fraction < 1.0:
            raise InvalidArgumentError(f"generated_fraction must be in (0, 1), got {generated_fraction!r}")
        if not isinstance(importance_floor, int | float) or not importance_floor > 0:
            raise InvalidArgumentError(f"importance_floor must be > 0, got {importance_floor!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise InvalidArgumentError(f"seed must be a non-negative integer or None, got {seed!r}")
        self.num_samples = None if num_samples is None else _positive_int(num_samples, "num_samples")
        self.prefetch = _non_negative_int(prefetch, "prefetch")
        self.langevin_steps = _positive_int(langevin_steps, "langevin_steps")
        self.langevin_candidates = _positive_int(langevin_candidates, "langevin_candidates")
        if generation_source not in _GENERATION_SOURCES:
            raise InvalidArgumentError(
                f"generation_source must be one of {_GENERATION_SOURCES}, got {generation_source!r}"
            )
        if (
            isinstance(item_similarity, bool)
            or not isinstance(item_similarity, int | float)
            or not 0.0 < item_similarity < 1.0
        ):
            raise InvalidArgumentError(f"item_similarity must be in (0, 1), got {item_similarity!r}")
        self.generation_source = generation_source
        self.item_similarity = float(item_similarity)
        self.generation_chunk = _positive_int(generation_chunk, "generation_chunk")
        self.shuffle = bool(shuffle)
        self.importance_sampling = bool(importance_sampling)
        self.generate_samples = bool(generate_samples)
        self.generated_fraction = float(generated_fraction)
        self.importance_floor = float(importance_floor)
        self.include_ids = bool(include_ids)
        self.include_metadata = bool(include_metadata)
        self.drop_last = bool(drop_last)
        self.source = source
        n_gen = round(self.batch_size * self.generated_fraction) if self.generate_samples else 0
        if n_gen >= self.batch_size:
            raise InvalidArgumentError("generated_fraction leaves no room for stored items in a batch")
        self._n_gen = n_gen
        # one seed for every worker, also when the caller gave none
        self.seed = int(np.random.SeedSequence().entropy % (1 << 63)) if seed is None else seed
        self._collection = collection
        self._lock = threading.Lock()
        self._snapshot: VectorSnapshot | None = None
        self._splats: FittedSplats | None = None
        self._probs: np.ndarray | None = None
        self._weights: np.ndarray | None = None
        self._unit: np.ndarray | None = None
        self._parent_weights: np.ndarray | None = None
        self._next_epoch = 0
        self._epoch = 0
        self._prepared = False
        self.refresh()

    # -- state ---------------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The epoch of the current (or last) iteration."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration use ``epoch`` (its shuffle order and draws); later ones count on."""
        self._next_epoch = _non_negative_int(epoch, "epoch")

    @property
    def snapshot(self) -> VectorSnapshot:
        assert self._snapshot is not None
        return self._snapshot

    @property
    def splats(self) -> FittedSplats | None:
        """The cluster mixture behind importance weights and ``generation_source="clusters"``
        (None when neither is on: the default generation uses item splats)."""
        return self._splats

    @property
    def probabilities(self) -> np.ndarray | None:
        """Sampling probability of each snapshot item under importance sampling."""
        return self._probs

    def refresh(self) -> bool:
        """Re-read the collection if it changed since the last snapshot; True if it did."""
        collection = self._collection
        if collection is None:
            return False
        with self._lock:
            version = collection_version(collection)
            if self._snapshot is not None and self._snapshot.version == version:
                return False
            snap = export_vectors(collection, source=self.source, include_metadata=self.include_metadata)
            items = self.generate_samples and self.generation_source == "items"
            clusters = self.generate_samples and self.generation_source == "clusters"
            splats = probs = weights = unit = parent_weights = alpha = None
            if len(snap) and (self.importance_sampling or items):
                cosine = snap.metric is Metric.COSINE and snap.source == "mirror"
                unit = snap.vectors if cosine else _unit_rows(snap.vectors)  # the mirror's are unit
                alpha = item_alpha(collection, snap.ids)
            if len(snap) and (self.importance_sampling or clusters):
                splats = mixture_from_collection(collection, snapshot=snap, seed=self.seed % (1 << 32))
            if len(snap) and self.importance_sampling:
                energy = mixture_energy(splats.mixture, unit)
                probs = importance_probabilities(energy, alpha, self.importance_floor)
                with np.errstate(divide="ignore"):
                    weights = (1.0 / (len(snap) * probs)).astype(np.float32)
            if items and alpha is not None:  # a zero vector has no direction: never a parent
                parent_weights = np.where(np.any(unit != 0, axis=1), alpha, 0.0)
            self._snapshot, self._splats, self._probs, self._weights = snap, splats, probs, weights
            self._unit, self._parent_weights = (unit, parent_weights) if items else (None, None)
            logger.debug("data lake snapshot: %d items at version %d", len(snap), version)
            return True

    def _prepare_epoch(self) -> None:
        """Called in the parent process before workers start (or before a local iteration)."""
        self.refresh()
        self._epoch = self._next_epoch
        self._next_epoch += 1
        self._prepared = True

    def _plan(self) -> _Plan:
        snap = self.snapshot
        n = len(snap)
        epoch = self._epoch
        rng = np.random.default_rng([self.seed, epoch, 0])
        order: np.ndarray | None = None
        total = n
        if n and self.importance_sampling:
            total = self.num_samples or n
            order = rng.choice(n, size=total, p=self._probs)
        elif self.shuffle:
            order = rng.permutation(n)
        n_real = self.batch_size - self._n_gen
        n_batches = total // n_real if self.drop_last else math.ceil(total / n_real)
        return _Plan(
            snap,
            order,
            total,
            n_real,
            self._n_gen,
            n_batches,
            self._weights,
            self._probs,
            self._splats,
            self._unit,
            self._parent_weights,
            epoch,
        )

    def __len__(self) -> int:
        """Batches in the next epoch (all workers together)."""
        n_real = self.batch_size - self._n_gen
        total = (self.num_samples or len(self.snapshot)) if self.importance_sampling else len(self.snapshot)
        return total // n_real if self.drop_last else math.ceil(total / n_real)

    def __getstate__(self) -> dict[str, Any]:  # spawn-started workers: no collection handle
        state = self.__dict__.copy()
        state["_collection"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- iteration -------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        if info is None:
            if not self._prepared:
                self._prepare_epoch()
            self._prepared = False
            worker, n_workers = 0, 1
        else:
            worker, n_workers = info.id, info.num_workers
        plan = self._plan()
        stream = self._stream(plan, range(worker, plan.n_batches, n_workers))
        return stream if self.prefetch == 0 else self._prefetched(stream)

    def _n_gen_of(self, plan: _Plan, b: int) -> int:
        k = min(plan.total, (b + 1) * plan.n_real) - b * plan.n_real
        return plan.n_gen if k == plan.n_real else round(k * plan.n_gen / plan.n_real)

    def _stream(self, plan: _Plan, batches: range) -> Iterator[dict[str, Any]]:
        """This process's batches in order; generated rows are made for groups of batches at
        once (about ``generation_chunk`` chains per Langevin run) to amortise its overhead."""
        if plan.n_gen == 0:
            for b in batches:
                yield self._make_batch(plan, b, None)
            return
        order = list(batches)
        group = max(1, self.generation_chunk // plan.n_gen)
        for g0 in range(0, len(order), group):
            part = order[g0 : g0 + group]
            sizes = [self._n_gen_of(plan, b) for b in part]
            rng = np.random.default_rng([self.seed, plan.epoch, part[0] + 1, 1])
            made = self._generate(plan, sum(sizes), rng) if sum(sizes) else None
            offset = 0
            for b, size in zip(part, sizes, strict=True):
                yield self._make_batch(plan, b, None if made is None else made[offset : offset + size])
                offset += size

    def _prefetched(self, stream: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for batch in stream:
                    if stop.is_set() or not put(batch):
                        return
                put(_DONE)
            except BaseException as exc:  # handed to the consumer, re-raised there
                put(_Failure(exc))

        thread = threading.Thread(target=produce, name="m2m-datalake-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                item = ready.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield item
        finally:
            stop.set()
            thread.join()

    def _make_batch(self, plan: _Plan, b: int, made: np.ndarray | None) -> dict[str, Any]:
        snap = plan.snapshot
        lo = b * plan.n_real
        hi = min(plan.total, lo + plan.n_real)
        k = hi - lo
        n_gen = 0 if made is None else made.shape[0]
        if plan.order is None:
            index = np.arange(lo, hi, dtype=np.int64)
            real = snap.vectors[lo:hi]
        else:
            index = plan.order[lo:hi].astype(np.int64, copy=False)
            real = None
        if n_gen == 0:  # one copy (a gather when shuffled), nothing else
            vectors = real.copy() if real is not None else snap.vectors[index]
        else:
            vectors = np.empty((k + n_gen, snap.vectors.shape[1]), dtype=np.float32)
            vectors[:k] = real if real is not None else snap.vectors[index]
            vectors[k:] = made
        weights = np.ones(k + n_gen, dtype=np.float32)
        if plan.weights is not None:
            weights[:k] = plan.weights[index]
        generated = np.zeros(k + n_gen, dtype=bool)
        generated[k:] = True
        batch: dict[str, Any] = {
            "vectors": torch.from_numpy(vectors),
            "weights": torch.from_numpy(weights),
            "generated": torch.from_numpy(generated),
            "index": torch.from_numpy(np.concatenate([index, np.full(n_gen, -1, dtype=np.int64)])),
        }
        if self.include_ids:
            batch["ids"] = [snap.ids[i] for i in index.tolist()] + [None] * n_gen
        if self.include_metadata and snap.metadatas is not None:
            metas = snap.metadatas
            batch["metadatas"] = [
                None if metas[i] is None else json.loads(metas[i]) for i in index.tolist()
            ] + [None] * n_gen
        return batch

    def _generate(self, plan: _Plan, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` generated rows from the ``generation_source`` sampler (module docstring)."""
        snap = plan.snapshot
        if self.generation_source == "clusters":
            assert plan.splats is not None
            return generate_from_clusters(
                plan.splats.mixture,
                snap.vectors,
                n,
                rng=rng,
                probs=plan.probs,
                steps=self.langevin_steps,
                candidates=self.langevin_candidates,
                keep_length=snap.metric is not Metric.COSINE,
            )
        assert plan.unit is not None and plan.parent_weights is not None
        return generate_from_items(
            plan.unit,
            plan.parent_weights,
            n,
            rng=rng,
            steps=self.langevin_steps,
            item_similarity=self.item_similarity,
            lengths=None if snap.metric is Metric.COSINE else snap.vectors,
        )


class SplatLakeLoader(DataLoader):
    """A ``DataLoader`` over a :class:`SplatLakeDataset` that advances its epoch.

    Each ``iter(loader)`` refreshes the snapshot (if the collection changed) and moves to
    the next epoch in this process before any worker starts, so workers agree on it.
    """

    def __iter__(self):  # type: ignore[override]
        self.dataset._prepare_epoch()
        try:
            return super().__iter__()  # workers fork (or the local iterator starts) in here
        finally:
            self.dataset._prepared = False

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)


def make_loader(
    dataset: SplatLakeDataset, *, num_workers: int = 0, pin_memory: bool = False, **kwargs: Any
) -> SplatLakeLoader:
    """A loader yielding the dataset's batches as they are (``batch_size=None``)."""
    num_workers = _non_negative_int(num_workers, "num_workers")
    return SplatLakeLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory, **kwargs)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _non_negative_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise InvalidArgumentError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)
