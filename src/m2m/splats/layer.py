"""A collection's splat layer: per-item splat state, the fitted cluster mixture, persistence.

Every live item is a splat ``(μ_i, κ_i, α_i)``: μ_i its unit vector (the mirror's search
form, re-normalised), and

* ``α_i = (1 + h_i) · exp(a_i)``: ``h_i`` is a decaying hit count (each query that returns
  the item adds 1; it halves every ``half_life`` queries, updated lazily: the stored value
  and the query clock at which it was stored give ``h(t) = h(t_i) · 2^{−(t − t_i)/H}``),
  ``a_i`` the Hebbian feedback term: ``relevant=True`` adds η, ``False`` subtracts η,
  clipped to ``[−alpha_clip, alpha_clip]`` (so α ← α·e^{±η}).
* ``κ_i = κ_{c(i)} · exp(b_i)``: κ of the item's cluster splat c(i), scaled by the feedback
  term ``b_i`` (±η/2 per feedback, clipped to ``[−kappa_clip, kappa_clip]``): an item marked
  relevant becomes a sharper, more confident splat.

Cluster splats (one per HRM2 fine list, or per spherical k-means cluster when the
collection has no index) form the mixture used for energy, novelty, gaps and sampling;
see :func:`fit_cluster_mixture`.

Files (``<data>/indexes/<collection uuid>/splats``): each save writes a fresh folder
``gen-<n>`` (``items.npy``: rowid, h, t, a, b per item; ``cluster_*.npy``: the fitted
mixture; ``consolidated_*.npy`` and ``state.json``), fsyncs it, then atomically replaces
``CURRENT`` (JSON naming the generation) and removes older generations. A crash leaves
either the old or the new generation. State is keyed by rowid, so it survives reopen;
usage counts recorded since the last save (hits are saved at most every
``autosave_seconds``, at explicit operations and on ``save``) are lost on a crash.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from m2m.errors import InvalidArgumentError
from m2m.splats.energy import NoveltyCalibrator, SplatMixture
from m2m.splats.vmf import estimate_kappa

logger = logging.getLogger(__name__)

CURRENT_FILE = "CURRENT"


# -- fitting cluster splats (moved here from m2m.datalake.export) -----------------------------------


@dataclass
class FittedSplats:
    """A vMF mixture fitted to a snapshot: ``labels[i]`` is item i's splat, ``counts[c]`` its size."""

    mixture: Any  # m2m.splats.energy.SplatMixture
    labels: np.ndarray
    counts: np.ndarray
    source: str  # "hrm2" (the index's fine lists) or "kmeans"
    version: int
    extra: dict[str, Any] = field(default_factory=dict)

    def kappa_of_items(self) -> np.ndarray:
        """κ of the splat each snapshot item belongs to."""
        return self.mixture.kappa[self.labels]


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def group_sums(x: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-label row sums ``(k, d)`` (float64) and counts ``(k,)``; one sort, one reduceat."""
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros((k, x.shape[1]), dtype=np.float64)
    present = np.flatnonzero(counts)
    if present.size:
        order = np.argsort(labels, kind="stable")
        offsets = np.concatenate(([0], np.cumsum(counts[present])[:-1]))
        sums[present] = np.add.reduceat(x[order], offsets, axis=0, dtype=np.float64)
    return sums, counts


def kmeans_labels(
    x: np.ndarray, seed: int, max_components: int | None, iters: int = 10
) -> tuple[np.ndarray, int]:
    """Spherical k-means (cosine) of unit rows with ``round(sqrt(N))`` clusters (capped by ``max_components``).

    Trained on a sample of 40 rows per cluster: seeds are distinct random rows; each
    Lloyd step assigns by the largest ``x·c`` and re-centres on the normalised mean; an
    empty cluster is re-seeded with the row worst served by its centroid. Then every row
    is assigned once.
    """
    n = x.shape[0]
    k = max(1, round(math.sqrt(n)))
    if max_components is not None:
        k = min(k, max_components)
    k = min(k, n)
    if k == 1:
        return np.zeros(n, dtype=np.int64), 1
    rng = np.random.default_rng(seed)
    centroids = x[rng.choice(n, size=k, replace=False)].copy()
    full = x
    if n > 40 * k:  # train on 40 rows per cluster, then assign everything once
        x = x[rng.choice(n, size=40 * k, replace=False)]
        n = x.shape[0]
    labels = np.zeros(n, dtype=np.int64)
    for it in range(iters + 1):
        if it == iters:  # the last pass labels every row
            x, n = full, full.shape[0]
            labels = np.zeros(n, dtype=np.int64)
        sims = np.empty(n, dtype=np.float32)
        for lo in range(0, n, 8192):
            block = x[lo : lo + 8192] @ centroids.T
            labels[lo : lo + 8192] = np.argmax(block, axis=1)
            sims[lo : lo + 8192] = block[np.arange(block.shape[0]), labels[lo : lo + 8192]]
        if it == iters:
            break
        sums, counts = group_sums(x, labels, k)
        norms = np.linalg.norm(sums, axis=1)
        ok = norms > 0
        centroids[ok] = (sums[ok] / norms[ok, None]).astype(np.float32)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            worst = np.argsort(sims)[: empty.size]
            centroids[empty] = x[worst]
    return labels, k


def index_labels(index: Any, rowids: np.ndarray, unit: np.ndarray) -> tuple[np.ndarray, int]:
    """Fine list of each item (by rowid) from an HRM2 index; items the index lacks go to the
    nearest fine centroid. Reads the index's private arrays: call under the collection lock."""
    from m2m.index.kmeans import assign

    n_rows = index._n_rows
    index_rowids = index._slots[:n_rows]
    lists = index._list[:n_rows]
    fine = index._fine
    live = index_rowids >= 0
    index_rowids, lists = index_rowids[live], lists[live]
    order = np.argsort(index_rowids)
    index_rowids, lists = index_rowids[order], lists[order]
    labels = np.full(len(rowids), -1, dtype=np.int64)
    found = np.zeros(len(rowids), dtype=bool)
    if len(index_rowids):
        pos = np.minimum(np.searchsorted(index_rowids, rowids), len(index_rowids) - 1)
        found = index_rowids[pos] == rowids
        labels[found] = lists[pos[found]]
    missing = np.flatnonzero(~found)
    if missing.size:
        labels[missing] = assign(np.ascontiguousarray(unit[missing], dtype=np.float32), fine)
    return labels, int(fine.shape[0])


def fit_cluster_mixture(
    x: np.ndarray, labels: np.ndarray, n_groups: int, *, max_kappa_factor: float | None = None
) -> tuple[SplatMixture, np.ndarray, np.ndarray]:
    """One vMF splat per non-empty group of unit rows: ``(mixture, labels remapped, counts)``.

    μ = mean direction, α = share of items, κ from the mean resultant length R̄ corrected
    for its small-sample bias (``E[R̄²] = A² + (1 − A²)/n``, so ``A² ≈ (n R̄² − 1)/(n − 1)``);
    a single-item group, whose R̄ = 1 carries no spread information, gets the median κ of the
    others. ``max_kappa_factor`` clips κ at that many times the median (docs/splats.md's
    advice for tiny clusters).
    """
    sums_all, counts = group_sums(x, labels, n_groups)
    starts = np.flatnonzero(counts)
    sums = sums_all[starts]
    n = counts[starts].astype(np.float64)
    norms = np.linalg.norm(sums, axis=1)
    rbar = np.clip(norms / n, 0.0, 1.0)
    mu = sums / np.where(norms > 0, norms, 1.0)[:, None]
    d = x.shape[1]
    multi = n >= 2
    kappa = np.empty(len(n))
    if np.any(multi):
        a2 = np.clip((n[multi] * rbar[multi] ** 2 - 1.0) / (n[multi] - 1.0), 0.0, 1.0 - 1e-12)
        kappa[multi] = np.asarray(estimate_kappa(d, np.sqrt(a2)), dtype=np.float64).reshape(-1)
        kappa[~multi] = float(np.median(kappa[multi]))
    else:  # every cluster holds one item: no spread information at all
        kappa[:] = 0.0
    if max_kappa_factor is not None and len(kappa):
        kappa = np.minimum(kappa, max_kappa_factor * float(np.median(kappa)))
    zero = norms == 0  # a group whose vectors cancel: no direction; give it a random one, κ = 0
    if np.any(zero):
        mu[zero] = np.eye(d)[0]
        kappa[zero] = 0.0
    remap = np.full(n_groups, -1, dtype=np.int64)
    remap[starts] = np.arange(len(starts))
    return SplatMixture(mu, kappa, n / n.sum()), remap[labels], counts[starts]


def mixture_from_collection(
    collection: Any,
    *,
    snapshot: Any = None,
    seed: int = 0,
    max_components: int | None = None,
) -> FittedSplats:
    """One vMF splat per cluster of the stored vectors' directions (for the data lake).

    Clusters are the HRM2 index's fine lists when the collection has an index, else a
    k-means with ``round(sqrt(N))`` clusters (``max_components`` caps it and skips the
    index). Per cluster see :func:`fit_cluster_mixture`.
    """
    if snapshot is None:
        from m2m.datalake.export import export_vectors

        snapshot = export_vectors(collection)
    snap = snapshot
    if len(snap) == 0:
        raise InvalidArgumentError(
            f"collection {collection.name!r} is empty; add items before fitting splats"
        )
    x = unit_rows(snap.vectors)
    found = None
    if max_components is None and collection._indexer.index is not None:
        with collection._lock.read():
            index = collection._indexer.index
            if index is not None:
                found = index_labels(index, np.asarray(snap.rowids, dtype=np.int64), x)
    source = "hrm2"
    if found is None:
        found = kmeans_labels(x, seed, max_components)
        source = "kmeans"
    labels, n_groups = found
    mixture, labels, counts = fit_cluster_mixture(x, labels, n_groups)
    return FittedSplats(mixture, labels, counts, source, snap.version)


# -- the per-collection layer -----------------------------------------------------------------------


@dataclass(frozen=True)
class SplatSettings:
    """Tunable constants of the splat layer (documented in docs/splats.md, "Collections")."""

    half_life: float = 10_000.0  # queries after which a hit counts half
    eta: float = 0.5  # feedback step on log α (κ moves by η/2)
    alpha_clip: float = 4.0  # |a_i| ≤ this: feedback scales α by at most e^4 ≈ 55
    kappa_clip: float = 2.0  # |b_i| ≤ this
    refit_fraction: float = 0.1  # refit once items written + deleted since the fit exceed this share
    max_kappa_factor: float = 50.0  # cluster κ ≤ this × median κ (exact duplicates have R̄ = 1)
    calibration_sample: int = 20_000  # stored items whose energies calibrate novelty
    autosave_seconds: float = 30.0  # recorded hits are saved at most this often
    exact_pairs_max: int = 8192  # SOC: up to this many items every pair is compared, else cluster join
    seed: int = 0


_ITEM_FIELDS = ("hits", "hit_t", "log_a", "log_k")


class SplatLayer:
    """Splat state of one collection, by mirror slot; persisted by rowid. Thread-safe (own mutex).

    Methods taking ``mirror`` expect the caller to hold the collection's lock (read for
    reads, write for ``on_changes``).
    """

    def __init__(self, directory: Path, dim: int, settings: SplatSettings | None = None) -> None:
        self.directory = Path(directory)
        self.dim = dim
        self.settings = settings or SplatSettings()
        self.mutex = threading.RLock()
        self.rowid = np.full(0, -1, dtype=np.int64)
        self.hits = np.zeros(0)
        self.hit_t = np.zeros(0, dtype=np.int64)
        self.log_a = np.zeros(0)
        self.log_k = np.zeros(0)
        self.label = np.full(0, -1, dtype=np.int64)
        self.clock = 0
        # cluster mixture
        self.mixture: SplatMixture | None = None
        self.fit_version = -1
        self.fit_count = 0
        self.fit_source = ""
        self.fit_clusters: int | None = None  # requested number of clusters (None: automatic)
        self.changes_since_fit = 0
        self.calibrator: NoveltyCalibrator | None = None
        # SOC
        self.consolidated: dict[str, Any] | None = None
        self.merged: dict[str, list[str]] = {}
        self.criticality: dict[str, Any] | None = None
        self.criticality_key: tuple[int, float] | None = None
        self.dirty = False
        self.last_save = time.monotonic()
        self.generation = 0

    # -- slots ------------------------------------------------------------------------------

    def _reserve(self, n: int) -> None:
        have = len(self.rowid)
        if n <= have:
            return
        cap = max(n, int(have * 1.5), 1024)

        def grow(a: np.ndarray, fill: Any) -> np.ndarray:
            out = np.full(cap, fill, dtype=a.dtype)
            out[:have] = a
            return out

        self.rowid = grow(self.rowid, -1)
        self.hits = grow(self.hits, 0.0)
        self.hit_t = grow(self.hit_t, 0)
        self.log_a = grow(self.log_a, 0.0)
        self.log_k = grow(self.log_k, 0.0)
        self.label = grow(self.label, -1)

    def _reset(self, slots: np.ndarray) -> None:
        self.hits[slots] = 0.0
        self.hit_t[slots] = self.clock
        self.log_a[slots] = 0.0
        self.log_k[slots] = 0.0
        self.label[slots] = -1

    def attach(self, mirror: Any) -> None:
        """Load saved state (by rowid) and align it with the mirror's slots. Under the collection lock."""
        with self.mutex:
            n = mirror.n_slots
            self._reserve(n)
            live = np.flatnonzero(mirror.alive[:n])
            self.rowid[:] = -1
            self.rowid[live] = mirror.rowids[live]
            self._reset(np.arange(len(self.rowid)))
            self._load(mirror)

    def on_changes(self, changes: Any, mirror: Any) -> None:
        """Follow written and freed slots: new items start at α = 1 (h = 0, a = b = 0), freed
        ones are dropped, overwritten items keep their usage but get their cluster re-assigned."""
        with self.mutex:
            self._reserve(mirror.n_slots)
            freed = np.asarray(changes.freed, dtype=np.int64)
            if freed.size:
                self._reset(freed)
                self.rowid[freed] = -1
            written = np.asarray(changes.written, dtype=np.int64)
            if written.size:
                written = written[mirror.alive[written]]
                current = mirror.rowids[written]
                new = written[self.rowid[written] != current]
                self._reset(new)
                self.rowid[written] = current
                self.label[written] = -1
            self.changes_since_fit += int(freed.size + written.size)
            if freed.size or written.size:
                self.dirty = True

    # -- α and κ ----------------------------------------------------------------------------

    def hits_now(self, slots: np.ndarray) -> np.ndarray:
        """Decayed hit counts at the current query clock."""
        age = (self.clock - self.hit_t[slots]).astype(np.float64)
        return self.hits[slots] * np.exp2(-age / self.settings.half_life)

    def alpha(self, slots: np.ndarray) -> np.ndarray:
        """α_i = (1 + h_i)·exp(a_i)."""
        with self.mutex:
            return (1.0 + self.hits_now(slots)) * np.exp(self.log_a[slots])

    def record_hits(self, slots: np.ndarray, n_queries: int) -> None:
        """Advance the query clock by ``n_queries`` and add one hit per returned slot."""
        slots = np.asarray(slots, dtype=np.int64).reshape(-1)
        slots = slots[slots >= 0]
        with self.mutex:
            self.clock += int(n_queries)
            if slots.size:
                uniq, counts = np.unique(slots, return_counts=True)
                uniq_ok = uniq < len(self.hits)
                uniq, counts = uniq[uniq_ok], counts[uniq_ok]
                self.hits[uniq] = self.hits_now(uniq) + counts
                self.hit_t[uniq] = self.clock
                self.dirty = True

    def feedback(self, slots: np.ndarray, relevant: bool, eta: float | None = None) -> None:
        """Hebbian update: ``a ← clip(a ± η)``, ``b ← clip(b ± η/2)``."""
        step = self.settings.eta if eta is None else float(eta)
        sign = 1.0 if relevant else -1.0
        s = self.settings
        with self.mutex:
            for slot in np.asarray(slots, dtype=np.int64).reshape(-1):  # repeated ids count twice
                self.log_a[slot] = np.clip(self.log_a[slot] + sign * step, -s.alpha_clip, s.alpha_clip)
                self.log_k[slot] = np.clip(self.log_k[slot] + sign * step / 2, -s.kappa_clip, s.kappa_clip)
            self.dirty = True

    def labels_of(self, slots: np.ndarray, mirror: Any) -> np.ndarray:
        """Cluster splat of each slot (assigned to the nearest μ_c when not known yet)."""
        assert self.mixture is not None
        with self.mutex:
            lab = self.label[slots]
            todo = np.flatnonzero(lab < 0)
            if todo.size:
                x = unit_rows(mirror.vectors[slots[todo]].astype(np.float64))
                lab[todo] = np.argmax(x @ self.mixture.mu.T, axis=1)
                self.label[slots[todo]] = lab[todo]
            return lab

    def kappa(self, slots: np.ndarray, mirror: Any) -> np.ndarray:
        """κ_i = κ_{c(i)}·exp(b_i)."""
        lab = self.labels_of(slots, mirror)
        assert self.mixture is not None
        return self.mixture.kappa[lab] * np.exp(self.log_k[slots])

    # -- the cluster mixture -------------------------------------------------------------------

    def needs_fit(self, count: int) -> bool:
        if self.mixture is None:
            return True
        return self.changes_since_fit > self.settings.refit_fraction * max(self.fit_count, 1) and count > 0

    def set_fit(
        self, mixture: SplatMixture, slots: np.ndarray, labels: np.ndarray, version: int, source: str
    ) -> None:
        with self.mutex:
            self.mixture = mixture
            self.label[:] = -1
            self.label[slots] = labels
            self.fit_version = int(version)
            self.fit_count = len(slots)
            self.fit_source = source
            self.changes_since_fit = 0
            self.calibrator = None
            self.dirty = True

    # -- persistence ---------------------------------------------------------------------------

    def _live(self, mirror: Any) -> np.ndarray:
        n = mirror.n_slots
        return np.flatnonzero(mirror.alive[:n] & (self.rowid[:n] >= 0))

    def save(self, mirror: Any) -> None:
        """Write a new generation and switch ``CURRENT`` to it (atomic). Under the collection lock."""
        with self.mutex:
            live = self._live(mirror)
            self.generation += 1
            gen_dir = self.directory / f"gen-{self.generation}"
            if gen_dir.exists():
                shutil.rmtree(gen_dir)
            gen_dir.mkdir(parents=True)
            items = np.stack(
                [
                    self.rowid[live].astype(np.float64),
                    self.hits[live],
                    self.hit_t[live].astype(np.float64),
                    self.log_a[live],
                    self.log_k[live],
                ],
                axis=1,
            )  # rowids and clocks < 2^53 are exact in float64
            arrays: dict[str, np.ndarray] = {"items": items}
            if self.mixture is not None:
                arrays["cluster_mu"] = self.mixture.mu
                arrays["cluster_kappa"] = self.mixture.kappa
                arrays["cluster_alpha"] = self.mixture.alpha
            cons = self.consolidated
            if cons is not None:
                arrays["consolidated_mu"] = cons["mu"]
                arrays["consolidated_kappa"] = cons["kappa"]
                arrays["consolidated_alpha"] = cons["alpha"]
                arrays["consolidated_members"] = cons["members"]  # rowids, groups concatenated
                arrays["consolidated_offsets"] = cons["offsets"]
                arrays["consolidated_representatives"] = cons["representatives"]
                arrays["avalanche_sizes"] = cons["avalanche_sizes"]
            for name, arr in arrays.items():
                with open(gen_dir / f"{name}.npy", "wb") as fh:
                    np.save(fh, np.ascontiguousarray(arr), allow_pickle=False)
                    fh.flush()
                    os.fsync(fh.fileno())
            state = {
                "format": 1,
                "clock": self.clock,
                "version": int(mirror.version),
                "fit_version": self.fit_version,
                "fit_count": self.fit_count,
                "fit_source": self.fit_source,
                "fit_clusters": self.fit_clusters,
                "changes_since_fit": self.changes_since_fit,
                "settings": {"half_life": self.settings.half_life, "eta": self.settings.eta},
                "consolidated": None
                if cons is None
                else {"threshold": cons["threshold"], "version": cons["version"]},
                "merged": self.merged,
                "criticality": self.criticality,
            }
            _write_json(gen_dir / "state.json", state)
            _fsync_dir(gen_dir)
            _write_json(self.directory / CURRENT_FILE, {"generation": self.generation})
            _fsync_dir(self.directory)
            for old in self.directory.glob("gen-*"):
                if old.name != gen_dir.name:
                    shutil.rmtree(old, ignore_errors=True)
            self.dirty = False
            self.last_save = time.monotonic()

    def maybe_autosave(self, mirror: Any) -> None:
        """Save if there are unsaved changes and ``autosave_seconds`` have passed."""
        if self.dirty and time.monotonic() - self.last_save >= self.settings.autosave_seconds:
            try:
                self.save(mirror)
            except OSError:
                logger.exception("could not save the splat layer; will retry")

    def _load(self, mirror: Any) -> None:
        current = self.directory / CURRENT_FILE
        if not current.exists():
            return
        try:
            self.generation = int(json.loads(current.read_text())["generation"])
            gen_dir = self.directory / f"gen-{self.generation}"
            state = json.loads((gen_dir / "state.json").read_text())

            def arr(name: str) -> np.ndarray | None:
                path = gen_dir / f"{name}.npy"
                return np.load(path, allow_pickle=False) if path.exists() else None

            items = arr("items")
            cmu, ckappa, calpha = arr("cluster_mu"), arr("cluster_kappa"), arr("cluster_alpha")
            cons_mu = arr("consolidated_mu")
            cons = None
            if cons_mu is not None:
                cons = {
                    "mu": cons_mu,
                    "kappa": arr("consolidated_kappa"),
                    "alpha": arr("consolidated_alpha"),
                    "members": arr("consolidated_members"),
                    "offsets": arr("consolidated_offsets"),
                    "representatives": arr("consolidated_representatives"),
                    "avalanche_sizes": arr("avalanche_sizes"),
                    **state["consolidated"],
                }
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning(
                "splat layer files in %s are unreadable (%s); starting from defaults", self.directory, exc
            )
            return
        self.clock = int(state["clock"])
        self.hit_t[:] = self.clock
        if items is not None and items.ndim == 2 and items.shape[1] == 5:
            lookup = mirror.slot_of_rowid.get
            slots = np.fromiter((lookup(int(r), -1) for r in items[:, 0]), dtype=np.int64, count=len(items))
            ok = slots >= 0
            slots, rows = slots[ok], items[ok]
            self.hits[slots], self.hit_t[slots] = rows[:, 1], rows[:, 2].astype(np.int64)
            self.log_a[slots], self.log_k[slots] = rows[:, 3], rows[:, 4]
        if cmu is not None and cmu.ndim == 2 and cmu.shape[1] == self.dim:
            self.mixture = SplatMixture(cmu, ckappa, calpha)
            self.fit_version = int(state["fit_version"])
            self.fit_count = int(state["fit_count"])
            self.fit_source = str(state["fit_source"])
            # writes made while the layer was not open count as changes since the fit
            self.changes_since_fit = int(state["changes_since_fit"]) + abs(mirror.count - self.fit_count)
            if int(state["version"]) != mirror.version:
                self.changes_since_fit += 1
        self.fit_clusters = state.get("fit_clusters")
        self.consolidated = cons
        self.merged = dict(state.get("merged") or {})
        self.criticality = state.get("criticality")
        self.dirty = False

    def drop(self) -> None:
        """Delete the files (the collection was deleted)."""
        shutil.rmtree(self.directory, ignore_errors=True)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
