"""Splat methods of a collection that work on groups and samples: SOC criticality and
consolidation, the consolidated-group layer (LOD 0, sampling weights), and generation.

``SplatGroupsMixin`` is a base of :class:`~m2m.splats.collection_api.SplatCollectionMixin`
and uses the same private collection plumbing (``_mirror``, ``_lock``, ``_search``,
``_splat_layer``, ``_splat_mixture``...; see that module and docs/splats.md, "Collections").
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from m2m.errors import InvalidArgumentError
from m2m.splats import energy as _energy
from m2m.splats.generate import NEIGHBOURS, dedup_cluster_mixture, sample_item_splats
from m2m.splats.groups import GroupIndex, collapse_groups
from m2m.splats.layer import unit_rows
from m2m.splats.soc import avalanche_scan_pairs, threshold_pairs
from m2m.splats.soc import consolidate as _consolidate
from m2m.storage import validation as check

DEFAULT_SOC_THRESHOLD = 0.8


@dataclass(frozen=True)
class ConsolidationReport:
    """What ``consolidate`` found (and removed with ``dedupe=True``)."""

    threshold: float
    groups: list[list[str]]  # ids of each near-duplicate group (≥ 2 items), largest first
    representatives: list[str]  # the item kept for each group
    avalanche_sizes: np.ndarray  # items toppled per avalanche, in scan order
    criticality: dict[str, Any]
    n_deleted: int  # items removed (dedupe=True), 0 otherwise


def _regime(largest_fraction: float, susceptibility: float) -> str:
    if largest_fraction >= 0.1:
        return "supercritical"
    if largest_fraction >= 0.01 or susceptibility >= 1.0:
        return "near-critical"
    return "subcritical"


def _stats_dict(stats: Any, version: int, probes: int) -> dict[str, Any]:
    pl = stats.power_law
    return {
        "threshold": stats.threshold,
        "n_items": stats.n_items,
        "n_edges": stats.n_edges,
        "n_toppled": stats.n_toppled,
        "n_avalanches": stats.n_avalanches,
        "mean_avalanche_size": stats.mean_avalanche_size,
        "branching_ratio": None if math.isnan(stats.branching_ratio) else stats.branching_ratio,
        "offspring_ratio": stats.offspring_ratio,
        "mean_degree": stats.mean_degree,
        "largest_fraction": stats.largest_fraction,
        "susceptibility": stats.susceptibility,
        "power_law": None
        if pl is None
        else {
            "tau": pl.tau,
            "stderr": pl.stderr,
            "s_min": pl.s_min,
            "ks_distance": pl.ks_distance,
            "n_tail": pl.n_tail,
        },
        "regime": _regime(stats.largest_fraction, stats.susceptibility),
        "version": int(version),
        "probes": int(probes),
    }


class SplatGroupsMixin:
    """SOC, consolidated groups and generation for collections (see the module docstring)."""

    # -- SOC ------------------------------------------------------------------------------------------

    def _splat_pairs(self, t: float, probes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Live slots, their unit rows and the pairs with cosine ≥ t (collection lock held).

        Up to ``splat_settings.exact_pairs_max`` items: every pair. Beyond: a join over the
        cluster splats' partition (the HRM2 fine lists when the collection has an index),
        each item against its own cluster and the ``probes`` clusters nearest to it.
        """
        slots, x = self._splat_live()
        if len(slots) <= self._splat_layer.settings.exact_pairs_max:
            src, dst, _ = threshold_pairs(x, t)
        else:
            mixture = self._splat_mixture()
            labels = self._splat_layer.labels_of(slots, self._mirror)
            src, dst, _ = threshold_pairs(x, t, labels=labels, centres=mixture.mu, probes=probes)
        return slots, x, src, dst

    def criticality(
        self, threshold: float | None = None, *, probes: int = 8, refresh: bool = False
    ) -> dict[str, Any]:
        """Avalanche statistics of the near-duplicate graph at ``threshold`` (default 0.8).

        Items are linked when their cosine similarity is ≥ threshold (all pairs up to
        ``splat_settings.exact_pairs_max`` items, else a join over the cluster splats' lists
        probing ``probes`` lists per item); connected groups are avalanches. Returned:
        branching ratio σ, offspring ratio, largest group fraction, susceptibility χ,
        the power-law fit of avalanche sizes, and ``regime``: ``subcritical`` (largest
        group < 1% of items and χ < 1: near-duplicates form small, isolated groups, safe to
        consolidate), ``near-critical`` (χ ≥ 1 or largest ≥ 1%: chains of similarity start
        to join topics, a dedup threshold here would merge distinct items),
        ``supercritical`` (a group holds ≥ 10%). Cached until the collection changes.
        """
        t = DEFAULT_SOC_THRESHOLD if threshold is None else float(threshold)
        if not 0.0 < t <= 1.0:
            raise InvalidArgumentError(f"threshold must be in (0, 1], got {threshold!r}")
        probes = check.positive_int(probes, "probes")
        self._catch_up()
        with self._lock.read():
            layer = self._splat_layer
            cached = layer.criticality
            if (
                not refresh
                and cached is not None
                and cached["threshold"] == t
                and cached["version"] == self._mirror.version
                and cached.get("probes") == probes
            ):
                return cached
            if self._mirror.count < 2:  # no pairs: nothing can topple
                return {
                    "threshold": t, "n_items": self._mirror.count, "n_edges": 0, "n_toppled": 0,
                    "n_avalanches": 0, "mean_avalanche_size": 0.0, "branching_ratio": None,
                    "offspring_ratio": 0.0, "mean_degree": 0.0, "largest_fraction": 0.0,
                    "susceptibility": 0.0, "power_law": None, "regime": "subcritical",
                    "version": int(self._mirror.version), "probes": int(probes),
                }  # fmt: skip
            slots, _, src, dst = self._splat_pairs(t, probes)
            result = avalanche_scan_pairs(len(slots), t, src, dst)
            stats = _stats_dict(result.stats, self._mirror.version, probes)
            layer.criticality = stats
            layer.dirty = True
            return stats

    def consolidate(
        self, threshold: float = DEFAULT_SOC_THRESHOLD, dedupe: bool = False, *, probes: int = 8
    ) -> ConsolidationReport:
        """Find near-duplicate groups (cosine ≥ threshold, chained) and summarise each as a
        consolidated splat (α-weighted mean direction, κ from R̄, α = the group's share of all
        items' α); persisted with the splat layer. The representative of a group is its
        member with the largest α (ties: the one nearest the group's mean direction).

        ``dedupe=True`` also deletes the other members (one ``delete`` transaction) and
        records their ids under the representative (``merged_ids(rep)``), in the splat
        files (``state.json``, map ``merged``: representative id → merged ids), not in metadata.
        """
        t = float(threshold)
        if not 0.0 < t <= 1.0:
            raise InvalidArgumentError(f"threshold must be in (0, 1], got {threshold!r}")
        if not isinstance(dedupe, bool):
            raise InvalidArgumentError("dedupe must be True or False")
        probes = check.positive_int(probes, "probes")
        self._catch_up()
        with self._lock.read():
            layer = self._splat_layer
            if self._mirror.count < 2:
                raise InvalidArgumentError("consolidate needs at least 2 items")
            slots, x, src, dst = self._splat_pairs(t, probes)
            ids = [self._mirror.ids[s] for s in slots]
            rowids = self._mirror.rowids[slots]
            alpha = layer.alpha(slots)
            result = avalanche_scan_pairs(len(slots), t, src, dst)
            cons = _consolidate(result.groups, x, weights=alpha)
            reps = []
            for g, mu in zip(result.groups, cons.mu, strict=True):
                order = np.lexsort((-(x[g] @ mu), -alpha[g]))  # α first, then nearness to μ
                reps.append(int(g[order[0]]))
            members = np.concatenate(result.groups) if result.groups else np.zeros(0, np.int64)
            offsets = np.cumsum([0] + [len(g) for g in result.groups]).astype(np.int64)
            stats = _stats_dict(result.stats, self._mirror.version, probes)
            layer.consolidated = {
                "mu": cons.mu,
                "kappa": cons.kappa,
                "alpha": cons.alpha,
                "members": rowids[members],
                "offsets": offsets,
                "representatives": rowids[np.asarray(reps, dtype=np.int64)],
                "avalanche_sizes": np.asarray(result.avalanche_sizes, dtype=np.int64),
                "threshold": t,
                "version": int(self._mirror.version),
            }
            layer.criticality = stats
            self._splat_save(layer)
        groups = [[ids[i] for i in g] for g in result.groups]
        rep_ids = [ids[r] for r in reps]
        n_deleted = 0
        if dedupe and groups:
            redundant = {rep: [i for i in g if i != rep] for rep, g in zip(rep_ids, groups, strict=True)}
            n_deleted = self.delete(ids=[i for rest in redundant.values() for i in rest])
            with self._lock.read():
                for rep, rest in redundant.items():
                    merged = layer.merged.setdefault(rep, [])
                    for item in rest:
                        merged.append(item)
                        merged.extend(layer.merged.pop(item, []))  # transitively
                self._splat_save(layer)
        return ConsolidationReport(t, groups, rep_ids, np.asarray(result.avalanche_sizes), stats, n_deleted)

    def consolidated_splats(self) -> dict[str, Any] | None:
        """The last consolidation's splats: ``mu``, ``kappa``, ``alpha``, member ids per group
        (items deleted since are left out), representative ids, threshold; None if never run."""
        with self._lock.read():
            cons = self._splat_layer.consolidated
            if cons is None:
                return None
            lookup = self._mirror.slot_of_rowid.get
            mirror_ids = self._mirror.ids

            def id_of(rowid: int) -> str | None:
                slot = lookup(int(rowid))
                return None if slot is None else mirror_ids[slot]

            off = cons["offsets"]
            members = [
                [i for i in (id_of(r) for r in cons["members"][off[j] : off[j + 1]]) if i is not None]
                for j in range(len(off) - 1)
            ]
            return {
                "mu": cons["mu"],
                "kappa": cons["kappa"],
                "alpha": cons["alpha"],
                "members": members,
                "representatives": [id_of(r) for r in cons["representatives"]],
                "avalanche_sizes": cons["avalanche_sizes"],
                "threshold": cons["threshold"],
            }

    def merged_ids(self, item_id: str) -> list[str]:
        """Ids that ``consolidate(dedupe=True)`` merged into ``item_id`` (its representative)."""
        with self._lock.read():
            return list(self._splat_layer.merged.get(item_id, []))

    # -- consolidated groups: LOD 0 and sampling --------------------------------------------------

    def _splat_groups(self) -> GroupIndex:
        """Group lookup of the last consolidation (empty without one; collection lock held)."""
        cons = self._splat_layer.consolidated
        cached = self.__dict__.get("_splat_group_index")
        if cached is None or cached[0] is not cons:
            cached = (cons, GroupIndex(cons))
            self.__dict__["_splat_group_index"] = cached
        return cached[1]

    def _splat_search(
        self, queries: np.ndarray, k: int, mask: Any, search: Any, splat_lambda: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """The collection's search plus splat-aware ranking and, at LOD 0 with a consolidation
        layer, at most one member per consolidated group (fetching more while rows run short)."""
        groups = self._splat_groups() if search.lod == 0 else None
        if not groups:
            distances, slots = self._search(queries, self._splat_fetch_k(k, splat_lambda), mask, search)
            if splat_lambda:
                distances, slots = self._splat_rerank(distances, slots, k, splat_lambda)
            return distances, slots
        total = self._mirror.count
        fetch = min(2 * self._splat_fetch_k(k, splat_lambda), max(total, 1))
        while True:
            distances, slots = self._search(queries, fetch, mask, search)
            if splat_lambda:
                distances, slots = self._splat_rerank(distances, slots, slots.shape[1], splat_lambda)
            grp = groups.of_rowids(self._mirror.rowids[np.maximum(slots, 0)])
            out_d, out_s, short = collapse_groups(distances, slots, grp, k)
            if not short.any() or fetch >= total:
                return out_d, out_s
            fetch = min(2 * fetch, total)

    def _splat_lod0_level(
        self, queries: np.ndarray, k: int, mask: Any, search: Any, distances: np.ndarray, slots: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The LOD 0 step of a progressive query, collapsed to one row per consolidated group."""
        if not self._splat_groups():
            return distances, slots
        return self._splat_search(queries, k, mask, dataclasses.replace(search, lod=0), 0.0)

    def _splat_group_sizes(self, slots: np.ndarray) -> np.ndarray:
        """g_i: live size of each slot's consolidated group, 1 outside groups (lock held)."""
        groups = self._splat_groups()
        if not groups:
            return np.ones(len(slots), dtype=np.int64)
        live = self._mirror.live_slots()
        sizes = np.ones(self._mirror.vectors.shape[0], dtype=np.int64)
        sizes[live] = groups.live_sizes(self._mirror.rowids[live])
        return sizes[slots]

    def splat_sampling_alpha(self, ids: str | Sequence[str]) -> np.ndarray:
        """Sampling weight of items: α_i / g_i, with g_i the live size of the item's consolidated
        group (1 outside groups), so that a group of near-duplicates counts once."""
        self._catch_up()
        with self._lock.read():
            _, slots = self._splat_slots(ids)
            return self._splat_layer.alpha(slots) / self._splat_group_sizes(slots)

    def _splat_sampling_mixture(self) -> _energy.SplatMixture:
        """The cluster mixture, its weights recounted with each consolidated group once."""
        mixture = self._splat_mixture()
        if not self._splat_groups():
            return mixture
        live = self._mirror.live_slots()
        labels = self._splat_layer.labels_of(live, self._mirror)
        return dedup_cluster_mixture(mixture, labels, 1.0 / self._splat_group_sizes(live))

    # -- generation ---------------------------------------------------------------------------------

    def generate(
        self,
        n: int,
        near: Any = None,
        *,
        steps: int = 200,
        step_size: float | None = None,
        temperature: float = 1.0,
        seed: int | None = None,
        source: str = "items",
        item_similarity: float = 0.98,
    ) -> np.ndarray:
        """n new unit vectors by Langevin (MALA) chains on a splat energy (docs/splats.md).

        ``source="items"`` (default): the item-splat energy ``−log Σ_i w_i vMF(x; μ_i, κ_s)``
        (``m2m.splats.generate``), w_i = α_i / (size of i's consolidated group), κ_s set so that
        a sample's expected cosine to its parent item is ``item_similarity``; chains start at
        exact draws and each sees the 32 items nearest its parent. With ``near`` (a vector or
        an id) the parents are the 32 items nearest to it. Samples follow the stored items'
        energy distribution on real data and are not copies (cosine to the parent ≈ 0.98).
        ``source="clusters"``: chains on ``exp(−E/T)`` of the cluster mixture (weights with
        each consolidated group counted once), started in its typical set or all at
        ``near``. Isotropic cluster splats are too narrow in energy for real data: use it for
        the shape of the cluster model, not as data.
        """
        from m2m.splats.langevin import langevin_sample

        n = check.positive_int(n, "n")
        steps = check.positive_int(steps, "steps")
        if source not in ("clusters", "items"):
            raise InvalidArgumentError(f"source must be 'clusters' or 'items', got {source!r}")
        if not (isinstance(temperature, int | float) and 0 < temperature < math.inf):
            raise InvalidArgumentError(f"temperature must be a positive finite number, got {temperature!r}")
        if not (isinstance(item_similarity, int | float) and 0 < item_similarity < 1):
            raise InvalidArgumentError(f"item_similarity must be in (0, 1), got {item_similarity!r}")
        if step_size is not None and not (isinstance(step_size, int | float) and 0 < step_size < math.inf):
            raise InvalidArgumentError(f"step_size must be a positive finite number, got {step_size!r}")
        init = None
        self._catch_up()
        with self._lock.read():
            if isinstance(near, str):
                _, slot = self._splat_slots([near])
                init = unit_rows(self._mirror.vectors[slot].astype(np.float64))
            elif near is not None:
                init, _ = self._splat_unit(near, "near")
                if len(init) != 1:
                    raise InvalidArgumentError("near must be one vector or one id")
            if source == "items":
                if self._mirror.count == 0:
                    raise InvalidArgumentError(f"collection {self.name!r} is empty")
                slots, x = self._splat_live()
                weights = self._splat_layer.alpha(slots) / self._splat_group_sizes(slots)
            else:
                mixture = self._splat_sampling_mixture()
        if source == "clusters":
            out = langevin_sample(
                mixture, n, init=init, steps=steps, step_size=step_size, temperature=temperature, rng=seed
            )
            return np.asarray(out, dtype=np.float32)
        pool = None
        if init is not None:
            sims = x @ init[0].astype(np.float32)
            m = min(NEIGHBOURS, len(sims))
            pool = np.argpartition(-sims, m - 1)[:m]
        return sample_item_splats(
            x,
            weights,
            n,
            item_similarity=float(item_similarity),
            steps=steps,
            step_size=step_size,
            temperature=float(temperature),
            rng=np.random.default_rng(seed),
            parents_from=pool,
        )
