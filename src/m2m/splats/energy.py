"""Energy of a vMF splat mixture on the unit sphere, novelty calibration and gap finding.

The density of a point x on S^{d-1} is ``p(x) = Σ_c α_c C_d(κ_c) exp(κ_c μ_cᵀx)`` and its
energy ``E(x) = −log p(x)``. Low energy = well covered by stored items, high energy = novel.
All sums are log-sum-exp in float64, batched over rows to bound memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from m2m.errors import DimensionMismatchError, InvalidArgumentError
from m2m.splats.vmf import (
    DEFAULT_MAX_KAPPA,
    as_rng,
    as_unit_rows,
    fit_vmf_groups,
    log_vmf_normalizer,
    mean_resultant_length,
    sample_vmf,
)

__all__ = ["Gaps", "NoveltyCalibrator", "SplatMixture", "find_gaps", "sample_mixture"]

logger = logging.getLogger(__name__)

_ROWS_PER_BATCH = 2048


def _logsumexp_rows(z: np.ndarray) -> np.ndarray:
    """Row-wise ``log Σ exp``; rows that are all −inf give −inf."""
    m = np.max(z, axis=1)
    safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return safe + np.log(np.sum(np.exp(z - safe[:, None]), axis=1))


class SplatMixture:
    """A mixture of C vMF splats ``(μ_c, κ_c, α_c)`` on S^{d-1}.

    ``mu`` rows are re-normalised; ``alpha`` must be ≥ 0 and is normalised to sum 1.
    Components with α = 0 are kept (they contribute nothing).
    """

    def __init__(self, mu: object, kappa: object, alpha: object) -> None:
        self.mu = as_unit_rows(mu, "mu")
        c, d = self.mu.shape
        self.kappa = np.asarray(kappa, dtype=np.float64).reshape(-1)
        self.alpha = np.asarray(alpha, dtype=np.float64).reshape(-1)
        if self.kappa.shape != (c,) or self.alpha.shape != (c,):
            raise InvalidArgumentError(
                f"kappa and alpha need shape ({c},), got {self.kappa.shape}, {self.alpha.shape}"
            )
        if not np.all(np.isfinite(self.kappa)) or np.any(self.kappa < 0):
            raise InvalidArgumentError("kappa must be finite and >= 0")
        if not np.all(np.isfinite(self.alpha)) or np.any(self.alpha < 0) or self.alpha.sum() <= 0:
            raise InvalidArgumentError("alpha must be finite, >= 0 and not all zero")
        self.alpha = self.alpha / self.alpha.sum()
        with np.errstate(divide="ignore"):
            self.log_weight = np.log(self.alpha) + log_vmf_normalizer(d, self.kappa)

    @classmethod
    def from_groups(
        cls,
        vectors: object,
        labels: object,
        *,
        weights: object = None,
        max_kappa: float = DEFAULT_MAX_KAPPA,
    ) -> SplatMixture:
        """One splat per non-empty label (e.g. HRM2 fine clusters), fitted by ``fit_vmf_groups``.

        κ of a cluster of a few points is biased high, and a singleton gets ``max_kappa``
        (a spike on one item); pass a ``max_kappa`` near the typical κ of well-populated
        clusters (a few times the median) when clusters can be tiny.
        """
        mu, kappa, alpha, counts = fit_vmf_groups(vectors, labels, weights=weights, max_kappa=max_kappa)
        keep = counts > 0
        return cls(mu[keep], kappa[keep], alpha[keep])

    @property
    def dim(self) -> int:
        return int(self.mu.shape[1])

    @property
    def n_components(self) -> int:
        return int(self.mu.shape[0])

    # ------------------------------------------------------------------ core
    def _prepare(self, x: object) -> tuple[np.ndarray, bool]:
        arr = np.asarray(x)
        single = arr.ndim == 1
        if arr.ndim in (1, 2) and arr.shape[-1] != self.dim:
            raise DimensionMismatchError(f"x has dimension {arr.shape[-1]}, the mixture has {self.dim}")
        return as_unit_rows(arr, "x", self.dim), single

    def _check_candidates(self, candidates: object, n: int) -> np.ndarray:
        cand = np.asarray(candidates)
        if cand.ndim != 2 or cand.shape[0] != n or not np.issubdtype(cand.dtype, np.integer):
            raise InvalidArgumentError(f"candidates must be an integer array of shape ({n}, m)")
        if np.any(cand >= self.n_components) or np.any(cand < -1):
            raise InvalidArgumentError("candidates hold component indices out of range")
        return cand

    def _logits(
        self, x: np.ndarray, top_m: int | None, candidates: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-component log terms ``log α_c + log C_d(κ_c) + κ_c μ_cᵀx`` (n, C) or (n, m)."""
        if candidates is not None:
            idx = candidates
            safe = np.where(idx >= 0, idx, 0)
            cos = np.einsum("nd,nmd->nm", x, self.mu[safe])
            z = self.log_weight[safe] + self.kappa[safe] * cos
            return np.where(idx >= 0, z, -np.inf), safe
        cos = x @ self.mu.T
        if top_m is None or top_m >= self.n_components:
            return self.log_weight[None, :] + self.kappa[None, :] * cos, None
        if top_m < 1:
            raise InvalidArgumentError("top_m must be >= 1")
        idx = np.argpartition(-cos, top_m - 1, axis=1)[:, :top_m]
        cos_m = np.take_along_axis(cos, idx, axis=1)
        return self.log_weight[idx] + self.kappa[idx] * cos_m, idx

    def _batched(
        self, x: object, top_m: int | None, candidates: object, grad: bool, *, checked: bool = False
    ):
        if checked:
            xs, single = x, False
        else:
            xs, single = self._prepare(x)
        cand = None if candidates is None else self._check_candidates(candidates, xs.shape[0])
        n = xs.shape[0]
        logp = np.empty(n)
        g = np.empty_like(xs) if grad else None
        for lo in range(0, n, _ROWS_PER_BATCH):
            hi = min(n, lo + _ROWS_PER_BATCH)
            z, idx = self._logits(xs[lo:hi], top_m, None if cand is None else cand[lo:hi])
            lse = _logsumexp_rows(z)
            logp[lo:hi] = lse
            if grad:
                # ∇_x E = −Σ_c π_c κ_c μ_c with responsibilities π = softmax(z)
                with np.errstate(invalid="ignore"):
                    resp = np.exp(z - lse[:, None])
                resp = np.nan_to_num(resp)
                if idx is None:
                    eg = -(resp * self.kappa[None, :]) @ self.mu
                else:
                    eg = -np.einsum("nm,nmd->nd", resp * self.kappa[idx], self.mu[idx])
                xb = xs[lo:hi]
                g[lo:hi] = eg - np.sum(eg * xb, axis=1, keepdims=True) * xb
        return xs, single, logp, g

    # ------------------------------------------------------------------ public
    def log_density(
        self, x: object, *, top_m: int | None = None, candidates: object = None
    ) -> np.ndarray | float:
        """``log p(x)`` for rows of x (re-normalised onto the sphere); exact by default.

        ``top_m`` sums only the m components with the largest ``μ_cᵀx``; ``candidates``
        (n, m) sums the given component indices (−1 = padding), e.g. from an index
        search over the centroids. Both drop positive terms, so they return a lower
        bound ``log p̃ ≤ log p`` (energy upper bound) with error ``log(1 + Σ_dropped/Σ_kept)``,
        negligible when the dropped components are many ``1/κ`` away.
        """
        _, single, logp, _ = self._batched(x, top_m, candidates, grad=False)
        return float(logp[0]) if single else logp

    def energy(self, x: object, *, top_m: int | None = None, candidates: object = None) -> np.ndarray | float:
        """``E(x) = −log p(x)`` (see ``log_density`` for ``top_m`` / ``candidates``)."""
        _, single, logp, _ = self._batched(x, top_m, candidates, grad=False)
        return float(-logp[0]) if single else -logp

    def energy_and_grad(
        self, x: object, *, top_m: int | None = None, candidates: object = None
    ) -> tuple[np.ndarray | float, np.ndarray]:
        """``(E(x) (n,), Riemannian gradient (n, d))`` for rows x on the sphere.

        The Riemannian gradient is the Euclidean one projected on the tangent space,
        ``g − (gᵀx) x``, so it is orthogonal to x. One vector in gives ``(float, (d,))``.
        """
        _, single, logp, g = self._batched(x, top_m, candidates, grad=True)
        if single:
            return float(-logp[0]), g[0]
        return -logp, g

    def energy_and_grad_unit(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``energy_and_grad`` without validation, for samplers: x must be (n, d) float64 unit rows."""
        _, _, logp, g = self._batched(x, None, None, grad=True, checked=True)
        return -logp, g

    def grad_energy(self, x: object, *, top_m: int | None = None, candidates: object = None) -> np.ndarray:
        """Riemannian gradient of E at rows of x, shape (n, d) (or (d,) for one vector)."""
        _, single, _, g = self._batched(x, top_m, candidates, grad=True)
        return g[0] if single else g

    def responsibilities(self, x: object) -> np.ndarray:
        """Posterior component probabilities ``π_c(x)`` (n, C) (exact, all components)."""
        xs, _ = self._prepare(x)
        z, _ = self._logits(xs, None, None)
        return np.exp(z - _logsumexp_rows(z)[:, None])

    def mean_direction(self) -> np.ndarray:
        """``E[x] = Σ_c α_c A_d(κ_c) μ_c`` under the mixture (a closed form used in tests)."""
        return (self.alpha * np.asarray(mean_resultant_length(self.dim, self.kappa))) @ self.mu


class NoveltyCalibrator:
    """Turns an energy into a percentile among the stored items' energies (0 = most typical).

    ``novelty(x) = (#{E_i < E(x)} + ½ #{E_i = E(x)}) / N``: for a point drawn from the same
    distribution as the stored items this is Uniform(0, 1); a point more isolated than every
    stored item scores 1.
    """

    def __init__(self, mixture: SplatMixture, items: object, *, top_m: int | None = None) -> None:
        self.mixture = mixture
        self.top_m = top_m
        energies = np.asarray(mixture.energy(items, top_m=top_m)).reshape(-1)
        if energies.size == 0:
            raise InvalidArgumentError("NoveltyCalibrator needs at least one stored item")
        self.sorted_energies = np.sort(energies)

    def novelty_of_energy(self, energy: object) -> np.ndarray:
        """Percentile of given energies among the stored ones, in [0, 1]."""
        e = np.asarray(energy, dtype=np.float64)
        lo = np.searchsorted(self.sorted_energies, e, side="left")
        hi = np.searchsorted(self.sorted_energies, e, side="right")
        return (lo + 0.5 * (hi - lo)) / self.sorted_energies.size

    def novelty(self, x: object) -> np.ndarray | float:
        """Percentile of ``E(x)`` among the stored items (0..1), rows of x or one vector."""
        e = self.mixture.energy(x, top_m=self.top_m)
        out = self.novelty_of_energy(e)
        return float(out) if np.ndim(out) == 0 else out


@dataclass(frozen=True)
class Gaps:
    """Low-density points between dense splats, best (highest barrier) first."""

    points: np.ndarray  # (g, d) unit vectors: the energy maximum on geodesics between two splats' items
    energies: np.ndarray  # (g,) E at those points
    barriers: np.ndarray  # (g,) E(point) − max(E(a), E(b), Ē_i, Ē_j) > 0 (see find_gaps)
    pairs: np.ndarray  # (g, 2) the component indices (i, j) between which the gap lies
    nearest_items: np.ndarray  # (g, k) indices into ``items``, most similar first
    nearest_sims: np.ndarray  # (g, k) cosine similarities of those items


def _slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Points on the shorter great circle from rows of a to rows of b: (P, T, d)."""
    cos = np.clip(np.sum(a * b, axis=1), -1.0, 1.0)
    omega = np.arccos(cos)[:, None]
    s = np.sin(omega)
    wa = np.sin((1.0 - t[None, :]) * omega) / s
    wb = np.sin(t[None, :] * omega) / s
    return wa[:, :, None] * a[:, None, :] + wb[:, :, None] * b[:, None, :]


def _reference(
    mixture: SplatMixture, items: np.ndarray, max_items: int, gen: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Subsampled items, their owning splat (largest responsibility), and per-splat typical energy.

    The typical energy Ē_c is the median energy of the items splat c owns; a splat that owns
    none gets E at a point at its typical angle ``arccos A_d(κ_c)`` from μ_c.
    """
    if items.shape[0] > max_items:
        items = items[np.sort(gen.choice(items.shape[0], max_items, replace=False))]
    energies = np.empty(items.shape[0])
    owner = np.empty(items.shape[0], dtype=np.int64)
    for lo in range(0, items.shape[0], _ROWS_PER_BATCH):
        z, _ = mixture._logits(items[lo : lo + _ROWS_PER_BATCH], None, None)
        energies[lo : lo + z.shape[0]] = -_logsumexp_rows(z)
        owner[lo : lo + z.shape[0]] = np.argmax(z, axis=1)
    ref = np.full(mixture.n_components, np.nan)
    order = np.lexsort((energies, owner))
    comps, starts, counts = np.unique(owner[order], return_index=True, return_counts=True)
    sorted_e = energies[order]
    for c, st, cnt in zip(comps.tolist(), starts.tolist(), counts.tolist(), strict=True):
        ref[c] = np.median(sorted_e[st : st + cnt])
    missing = np.flatnonzero(np.isnan(ref))
    if missing.size:
        a = np.asarray(mean_resultant_length(mixture.dim, mixture.kappa[missing])).reshape(-1)
        u = gen.standard_normal((missing.size, mixture.dim))
        mu = mixture.mu[missing]
        u -= np.sum(u * mu, axis=1, keepdims=True) * mu
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        ref[missing] = mixture.energy(a[:, None] * mu + np.sqrt(1.0 - a * a)[:, None] * u)
    return items, owner, ref


def find_gaps(
    mixture: SplatMixture,
    items: object,
    n: int,
    rng: np.random.Generator | int | None = None,
    *,
    n_anchors: int | None = None,
    n_neighbors: int = 5,
    samples_per_splat: int = 4,
    path_points: int = 15,
    k_items: int = 5,
    max_pairs: int = 20000,
    dedupe_cos: float = 0.99,
    max_reference_items: int = 20000,
) -> Gaps:
    """Find up to n low-density points lying between dense splats.

    Anchors are the ``n_anchors`` heaviest splats (default ``max(64, 4n)``), each paired
    with its ``n_neighbors`` nearest anchors by ``μᵀμ``. Every item (at most
    ``max_reference_items``, subsampled with ``rng``) is owned by the splat with the largest
    responsibility for it, and each splat's typical energy Ē_c is the median energy of its
    items. For a pair (i, j), ``samples_per_splat`` items of each (drawn with ``rng``; the
    centre μ if a splat owns none) give s² geodesics from an item of i to an item of j;
    E is evaluated at ``path_points`` interior points of each; the highest point of a path
    from item a to item b has ``barrier = E(point) − max(E(a), E(b), Ē_i, Ē_j)``, and the
    path with the largest barrier gives the pair's gap. Barrier > 0 means a ridge: the point
    is less dense than both items it lies between and than a typical member of either splat. Geodesics between *centres* are not used: for κ ~ d the centres and their
    midpoints are far denser than any item (items sit near angle ``arccos A_d(κ)``).
    Pairs with barrier ≤ 0 are dropped, the rest ranked by barrier, near-identical gap
    points (cosine > ``dedupe_cos``) merged, and each gap gets its ``k_items`` most similar
    items (over all items). ``rng`` also subsamples pairs beyond ``max_pairs``.
    Fewer than n gaps come back when fewer barriers exist.
    """
    if n < 0 or path_points < 1 or n_neighbors < 1 or k_items < 0 or samples_per_splat < 1:
        raise InvalidArgumentError("n, k_items >= 0; path_points, n_neighbors, samples_per_splat >= 1")
    x_items = as_unit_rows(items, "items", mixture.dim)
    gen = as_rng(rng)
    c = mixture.n_components
    n_anc = min(c, n_anchors if n_anchors is not None else max(64, 4 * n))
    anchors = np.argsort(-mixture.alpha, kind="stable")[:n_anc]
    mu_a = mixture.mu[anchors]
    sims = mu_a @ mu_a.T
    np.fill_diagonal(sims, -np.inf)
    k = min(n_neighbors, n_anc - 1)
    empty = Gaps(
        np.zeros((0, mixture.dim)), np.zeros(0), np.zeros(0), np.zeros((0, 2), int),
        np.zeros((0, k_items), int), np.zeros((0, k_items)),
    )  # fmt: skip
    if k < 1 or n == 0:
        return empty
    nbr = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    a_idx = np.repeat(np.arange(n_anc), k)
    b_idx = nbr.reshape(-1)
    pairs = np.unique(np.stack([np.minimum(a_idx, b_idx), np.maximum(a_idx, b_idx)], axis=1), axis=0)
    cos_pair = np.sum(mu_a[pairs[:, 0]] * mu_a[pairs[:, 1]], axis=1)
    pairs = anchors[pairs[cos_pair < 1.0 - 1e-9]]  # component ids from here on
    if pairs.shape[0] > max_pairs:
        pairs = pairs[gen.choice(pairs.shape[0], max_pairs, replace=False)]
    if pairs.shape[0] == 0:
        return empty
    ref_items, owner, ref = _reference(mixture, x_items, max_reference_items, gen)
    order = np.argsort(owner, kind="stable")
    starts = np.searchsorted(owner[order], np.arange(c + 1))
    s = samples_per_splat
    reps = np.empty((c, s, mixture.dim))
    for comp in np.unique(pairs):
        own = order[starts[comp] : starts[comp + 1]]
        reps[comp] = ref_items[gen.choice(own, s)] if own.size else mixture.mu[comp]
    t = np.arange(1, path_points + 1) / (path_points + 1)
    ia, ib = np.repeat(np.arange(s), s), np.tile(np.arange(s), s)
    gap_pts = np.empty((pairs.shape[0], mixture.dim))
    barrier = np.empty(pairs.shape[0])
    e_gap = np.empty(pairs.shape[0])
    step = max(1, 4096 // (path_points * s * s))  # pairs per chunk: bounds the path array
    for lo in range(0, pairs.shape[0], step):
        pr = pairs[lo : lo + step]
        a = reps[pr[:, 0]][:, ia].reshape(-1, mixture.dim)
        b = reps[pr[:, 1]][:, ib].reshape(-1, mixture.dim)
        path = _slerp(a, b, t)  # (p·s², T, d)
        e_path = np.asarray(mixture.energy(path.reshape(-1, mixture.dim))).reshape(-1, t.size)
        e_ends = np.maximum(np.asarray(mixture.energy(a)), np.asarray(mixture.energy(b)))
        # a ridge: the path's highest point against both its endpoint items and both splats' Ē
        floor = np.maximum(e_ends, np.repeat(np.maximum(ref[pr[:, 0]], ref[pr[:, 1]]), s * s))
        best_t = np.argmax(e_path, axis=1)
        e_best = e_path[np.arange(e_path.shape[0]), best_t]
        bar = (e_best - floor).reshape(pr.shape[0], s * s)
        best = np.argmax(bar, axis=1)
        rows = np.arange(pr.shape[0])
        flat = rows * s * s + best
        e_gap[lo : lo + step] = e_best[flat]
        gap_pts[lo : lo + step] = path[flat, best_t[flat]]
        barrier[lo : lo + step] = bar[rows, best]
    gap_pts /= np.linalg.norm(gap_pts, axis=1, keepdims=True)
    chosen: list[int] = []
    for p in np.argsort(-barrier, kind="stable"):
        if barrier[p] <= 0 or len(chosen) >= n:
            break
        if chosen and np.max(gap_pts[chosen] @ gap_pts[p]) > dedupe_cos:
            continue
        chosen.append(int(p))
    if not chosen:
        return empty
    ch = np.array(chosen)
    points = gap_pts[ch]
    kk = min(k_items, x_items.shape[0])
    near = np.zeros((len(ch), 0), int)
    near_s = np.zeros((len(ch), 0))
    if kk > 0:
        item_sims = points @ x_items.T
        near = np.argpartition(-item_sims, kk - 1, axis=1)[:, :kk]
        near_s = np.take_along_axis(item_sims, near, axis=1)
        o = np.argsort(-near_s, axis=1, kind="stable")
        near, near_s = np.take_along_axis(near, o, axis=1), np.take_along_axis(near_s, o, axis=1)
    logger.debug("find_gaps: %d anchors, %d pairs, %d gaps", n_anc, len(pairs), len(ch))
    return Gaps(points, e_gap[ch], barrier[ch], pairs[ch], near, near_s)


def sample_mixture(
    mixture: SplatMixture,
    n: int,
    rng: np.random.Generator | int | None = None,
    *,
    temperature: float = 1.0,
) -> np.ndarray:
    """Draw n points: a component c, then Wood's exact vMF(μ_c, κ_c/T) sampler; (n, d) float64.

    At T = 1 this is an exact sample of the mixture. At T ≠ 1 the component c is picked with
    probability ∝ ``α_c^{1/T} C_d(κ_c)^{1/T} / C_d(κ_c/T)`` (each splat's mass under
    ``p^{1/T}`` when splats do not overlap), an approximation of ``p^{1/T}`` that Langevin
    sampling then corrects.
    """
    if n < 0 or not (temperature > 0 and np.isfinite(temperature)):
        raise InvalidArgumentError("n must be >= 0 and temperature positive and finite")
    gen = as_rng(rng)
    if temperature == 1.0:
        p = mixture.alpha
    else:
        logw = mixture.log_weight / temperature - log_vmf_normalizer(mixture.dim, mixture.kappa / temperature)
        logw = np.where(mixture.alpha > 0, logw, -np.inf)
        p = np.exp(logw - logw.max())
        p /= p.sum()
    comp = gen.choice(mixture.n_components, size=n, p=p)
    out = np.empty((n, mixture.dim))
    for c in np.unique(comp):
        sel = comp == c
        out[sel] = sample_vmf(mixture.mu[c], mixture.kappa[c] / temperature, int(sel.sum()), gen)
    return out
