"""Splat methods of a collection: energy, novelty, gaps, feedback, ranking (SOC,
consolidated groups and generation are in its base, ``groups_api.SplatGroupsMixin``).

``SplatCollectionMixin`` is inherited by :class:`m2m.collection.Collection`. It uses the
collection's private ``_mirror``, ``_lock``, ``_indexer``, ``_search``, ``_catch_up`` and
``delete``, and keeps its state in a :class:`~m2m.splats.layer.SplatLayer` created on first
use. The collection calls ``_splats_on_changes(changes)`` after every write (write lock
held), ``_splats_record_hits(slots, n_queries)`` for the slots a query returns,
``_splat_search`` (search + splat-aware ranking + the LOD 0 group collapse) and
``_splat_query_energies`` in ``query``, and ``_splat_lod0_level`` for the LOD 0 step of
``query_progressive`` (see docs/splats.md, "Collections").
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from m2m.errors import InvalidArgumentError, ItemNotFoundError
from m2m.splats import energy as _energy
from m2m.splats.groups_api import SplatGroupsMixin
from m2m.splats.layer import (
    SplatLayer,
    SplatSettings,
    fit_cluster_mixture,
    index_labels,
    kmeans_labels,
    unit_rows,
)
from m2m.storage import validation as check
from m2m.storage.mirror import search_form
from m2m.types import Metric

_CREATE_LOCK = threading.Lock()
RERANK_FACTOR = 4  # splat-aware ranking re-ranks this many times n_results candidates


@dataclass(frozen=True)
class CollectionGaps:
    """Low-density points between dense regions of a collection, best (highest barrier) first."""

    points: np.ndarray  # (g, d) unit vectors
    energies: np.ndarray  # (g,) E at the points
    barriers: np.ndarray  # (g,) energy above the items/splats the ridge separates (> 0)
    novelty: np.ndarray  # (g,) percentile of E among stored items
    nearest_ids: list[list[str]]  # per gap, the most similar stored items
    nearest_similarities: np.ndarray  # (g, k) their cosine similarities


class SplatCollectionMixin(SplatGroupsMixin):
    """Splat-layer methods for :class:`~m2m.collection.Collection` (see the module docstring)."""

    splat_settings: SplatSettings = SplatSettings()

    # -- plumbing (callers hold the collection lock) -------------------------------------------

    @property
    def _splat_layer(self) -> SplatLayer:
        layer = self.__dict__.get("_splats")
        if layer is None:
            with _CREATE_LOCK:
                layer = self.__dict__.get("_splats")
                if layer is None:
                    layer = SplatLayer(self._indexer.directory / "splats", self.dim, self.splat_settings)
                    layer.attach(self._mirror)
                    self.__dict__["_splats"] = layer
        return layer

    def _splats_on_changes(self, changes: Any) -> None:
        """Follow a write (collection write lock held)."""
        layer = self.__dict__.get("_splats")
        if layer is not None and changes:
            layer.on_changes(changes, self._mirror)

    def _splats_record_hits(self, slots: np.ndarray, n_queries: int | None = None) -> None:
        """Count returned items as hits (collection lock held)."""
        slots = np.asarray(slots)
        layer = self._splat_layer
        layer.record_hits(
            slots, n_queries if n_queries is not None else (slots.shape[0] if slots.ndim == 2 else 1)
        )
        layer.maybe_autosave(self._mirror)

    def _splats_close(self) -> None:
        """Save unsaved splat state (call from ``Collection._close``)."""
        layer = self.__dict__.get("_splats")
        if layer is not None and layer.dirty:
            with self._lock.read():
                self._splat_save(layer)

    def _splat_save(self, layer: SplatLayer) -> None:
        if layer.merged:
            alive = self._mirror.slot_of
            layer.merged = {rep: ids for rep, ids in layer.merged.items() if rep in alive}
        layer.save(self._mirror)

    def _splat_slots(self, ids: Any) -> tuple[list[str], np.ndarray]:
        """Slots of ids (repeats allowed: feedback on an id twice counts twice)."""
        if isinstance(ids, str) or not isinstance(ids, Sequence | np.ndarray):
            id_list = check.ids(ids)
        else:
            id_list = list(ids)
            check.ids(list(dict.fromkeys(id_list)))  # type, emptiness and length checks
        found = self._mirror.slots_of(id_list)
        missing = [i for i, s in zip(id_list, found, strict=True) if s is None]
        if missing:
            raise ItemNotFoundError(f"ids not found in {self.name!r}: {missing[:5]}")
        return id_list, np.asarray(found, dtype=np.int64)

    def _splat_unit(self, x: Any, name: str) -> tuple[np.ndarray, bool]:
        single = np.ndim(x) == 1
        arr = check.embeddings(x, self.dim, name=name)
        unit = unit_rows(search_form(arr, self.metric).astype(np.float64))
        if np.any(np.linalg.norm(unit, axis=1) == 0):
            raise InvalidArgumentError(f"{name} contains a zero vector, which has no direction")
        return unit, single

    def _splat_live(self) -> tuple[np.ndarray, np.ndarray]:
        mirror = self._mirror
        slots = mirror.live_slots()
        return slots, unit_rows(mirror.vectors[slots]).astype(np.float32)

    def _splat_mixture(self, *, refit: bool = False, clusters: int | None = None) -> _energy.SplatMixture:
        """The cluster mixture, fitted now if missing or stale (collection lock held)."""
        layer = self._splat_layer
        with layer.mutex:
            if clusters is not None:
                layer.fit_clusters = clusters
            if refit or layer.needs_fit(self._mirror.count):
                self._splat_fit(layer)
            assert layer.mixture is not None
            return layer.mixture

    def _splat_fit(self, layer: SplatLayer) -> None:
        mirror = self._mirror
        if mirror.count == 0:
            raise InvalidArgumentError(f"collection {self.name!r} is empty; add items before fitting splats")
        slots, x = self._splat_live()
        index = self._indexer.index
        clusters = layer.fit_clusters
        if clusters is None and index is not None:
            labels, n_groups = index_labels(index, mirror.rowids[slots], x)
            source = "hrm2"
        else:
            cap = clusters if clusters is not None else max(1, len(slots) // 32)
            labels, n_groups = kmeans_labels(x, layer.settings.seed, cap)
            source = "kmeans"
        mixture, labels, _ = fit_cluster_mixture(
            x, labels, n_groups, max_kappa_factor=layer.settings.max_kappa_factor
        )
        layer.set_fit(mixture, slots, labels, mirror.version, source)
        self._splat_save(layer)

    def _splat_calibrator(self) -> _energy.NoveltyCalibrator:
        layer = self._splat_layer
        mixture = self._splat_mixture()
        with layer.mutex:
            if layer.calibrator is None or layer.calibrator.mixture is not mixture:
                slots = self._mirror.live_slots()
                m = layer.settings.calibration_sample
                if len(slots) > m:
                    slots = np.sort(
                        np.random.default_rng(layer.settings.seed).choice(slots, m, replace=False)
                    )
                layer.calibrator = _energy.NoveltyCalibrator(mixture, unit_rows(self._mirror.vectors[slots]))
            return layer.calibrator

    # -- query integration -----------------------------------------------------------------------

    @staticmethod
    def _splat_check_lambda(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidArgumentError(f"splat_lambda must be a finite number, got {value!r}")
        return float(value)

    @staticmethod
    def _splat_fetch_k(k: int, splat_lambda: float) -> int:
        """Candidates to fetch: ``RERANK_FACTOR × k`` when splat-aware ranking is on."""
        return k * RERANK_FACTOR if splat_lambda else k

    def _splat_similarity(self, distances: np.ndarray) -> np.ndarray:
        """Similarity from the metric's distance: cosine ``1 − d``, ip and l2 ``−d``."""
        return 1.0 - distances if self.metric == Metric.COSINE else -distances

    def _splat_rerank(
        self, distances: np.ndarray, slots: np.ndarray, k: int, splat_lambda: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Re-rank candidates by ``similarity + λ·log α`` and keep the best k (collection lock held)."""
        layer = self._splat_layer
        valid = slots >= 0
        log_alpha = np.zeros(slots.shape)
        log_alpha[valid] = np.log(layer.alpha(slots[valid]))
        score = np.where(
            valid, self._splat_similarity(distances.astype(np.float64)) + splat_lambda * log_alpha, -np.inf
        )
        order = np.argsort(-score, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(distances, order, axis=1), np.take_along_axis(slots, order, axis=1)

    def _splat_query_energies(self, result: Any) -> None:
        """Add an ``energies`` column (E of each returned item's vector) to a query result."""
        mixture = self._splat_mixture()
        out = []
        for row in result["ids"]:
            if not row:
                out.append([])
                continue
            slots = np.asarray([self._mirror.slot_of[i] for i in row], dtype=np.int64)
            out.append(
                np.asarray(mixture.energy(unit_rows(self._mirror.vectors[slots]))).astype(float).tolist()
            )
        result["energies"] = out

    # -- energy, novelty, gaps -----------------------------------------------------------------

    def energy(self, x: Any) -> np.ndarray | float:
        """``E(x) = −log p(x)`` under the cluster splat mixture (one vector → float, rows → array).

        The mixture is fitted on first use and refitted when more than
        ``splat_settings.refit_fraction`` of the items changed since (``refit_splats`` forces it).
        """
        unit, single = self._splat_unit(x, "x")
        self._catch_up()
        with self._lock.read():
            mixture = self._splat_mixture()
        e = np.asarray(mixture.energy(unit))
        return float(e[0]) if single else e

    def novelty(self, x: Any) -> np.ndarray | float:
        """Percentile of ``E(x)`` among stored items' energies (0 typical … 1 more isolated than all)."""
        unit, single = self._splat_unit(x, "x")
        self._catch_up()
        with self._lock.read():
            calibrator = self._splat_calibrator()
        out = np.asarray(calibrator.novelty(unit))
        return float(out[0]) if single else out

    def find_gaps(self, n: int = 5, *, k: int = 5, seed: int = 0) -> CollectionGaps:
        """Up to n ridges of low density between dense regions (``m2m.splats.energy.find_gaps``,
        item-to-item geodesics), with their energies, novelty and k nearest stored items."""
        n = check.non_negative_int(n, "n")
        k = check.positive_int(k, "k")
        self._catch_up()
        with self._lock.read():
            mixture = self._splat_mixture()
            calibrator = self._splat_calibrator()
            slots, x = self._splat_live()
            ids = [self._mirror.ids[s] for s in slots]
        gaps = _energy.find_gaps(mixture, x, n, seed, k_items=k)
        return CollectionGaps(
            points=gaps.points.astype(np.float32),
            energies=gaps.energies,
            barriers=gaps.barriers,
            novelty=np.asarray(calibrator.novelty_of_energy(gaps.energies)),
            nearest_ids=[[ids[i] for i in row] for row in gaps.nearest_items],
            nearest_similarities=gaps.nearest_sims,
        )

    def refit_splats(self, clusters: int | None = None) -> dict[str, Any]:
        """Fit the cluster mixture now; ``clusters`` = k-means with that many clusters (kept for
        later refits; ``0`` returns to automatic: the index's fine lists, else k-means)."""
        if clusters is not None:
            clusters = check.non_negative_int(clusters, "clusters")
        self._catch_up()
        with self._lock.read():
            layer = self._splat_layer
            with layer.mutex:
                if clusters is not None:
                    layer.fit_clusters = clusters or None
                self._splat_fit(layer)
        return self.splat_statistics()

    # -- per-item parameters and feedback --------------------------------------------------------

    def splat_alpha(self, ids: str | Sequence[str]) -> np.ndarray:
        """α of items by id: ``(1 + h)·exp(a)`` (decayed hits, feedback)."""
        self._catch_up()
        with self._lock.read():
            _, slots = self._splat_slots(ids)
            return self._splat_layer.alpha(slots)

    def splat_params(self, ids: str | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(alpha, kappa)`` of items by id; κ = the item's cluster κ · exp(b)."""
        self._catch_up()
        with self._lock.read():
            _, slots = self._splat_slots(ids)
            self._splat_mixture()
            layer = self._splat_layer
            return layer.alpha(slots), layer.kappa(slots, self._mirror)

    def splat_clusters(self, ids: str | Sequence[str]) -> np.ndarray:
        """Index of each item's cluster splat in the current mixture."""
        self._catch_up()
        with self._lock.read():
            _, slots = self._splat_slots(ids)
            self._splat_mixture()
            return self._splat_layer.labels_of(slots, self._mirror)

    def feedback(self, ids: str | Sequence[str], relevant: bool = True, *, eta: float | None = None) -> None:
        """Hebbian feedback: relevant items get ``α·e^{η}`` and ``κ·e^{η/2}``, irrelevant ones
        ``α·e^{−η}``, ``κ·e^{−η/2}`` (clipped; see ``splat_settings``). Saved at once."""
        if not isinstance(relevant, bool):
            raise InvalidArgumentError(f"relevant must be True or False, got {relevant!r}")
        if eta is not None and (
            isinstance(eta, bool) or not isinstance(eta, int | float) or not 0 < eta < 10
        ):
            raise InvalidArgumentError(f"eta must be a number in (0, 10), got {eta!r}")
        self._catch_up()
        with self._lock.read():
            _, slots = self._splat_slots(ids)
            layer = self._splat_layer
            layer.feedback(slots, relevant, eta)
            self._splat_save(layer)

    def save_splats(self) -> None:
        """Write the splat layer's state now."""
        self._catch_up()
        with self._lock.read():
            self._splat_save(self._splat_layer)

    def splat_statistics(self) -> dict[str, Any]:
        """Cluster count, κ and α quantiles, query clock, consolidation and the last criticality."""
        self._catch_up()
        with self._lock.read():
            layer = self._splat_layer
            qs = [0.0, 0.1, 0.5, 0.9, 1.0]
            if self._mirror.count == 0:
                return {"n_items": 0, "n_clusters": 0, "criticality": layer.criticality}
            mixture = self._splat_mixture()
            slots = self._mirror.live_slots()
            alpha = layer.alpha(slots)
            cons = layer.consolidated
            return {
                "n_items": len(slots),
                "n_clusters": mixture.n_components,
                "fit_source": layer.fit_source,
                "fit_version": layer.fit_version,
                "changes_since_fit": layer.changes_since_fit,
                "quantiles": qs,
                "cluster_kappa_quantiles": np.quantile(mixture.kappa, qs).tolist(),
                "item_alpha_quantiles": np.quantile(alpha, qs).tolist(),
                "items_with_feedback": int(np.count_nonzero(layer.log_a[slots])),
                "query_clock": layer.clock,
                "half_life_queries": layer.settings.half_life,
                "consolidated_groups": 0 if cons is None else len(cons["representatives"]),
                "merged_items": int(sum(len(v) for v in layer.merged.values())),
                "criticality": layer.criticality,
            }
