"""Generation from a collection's splats: Langevin chains on the item-splat energy.

The *item-splat mixture* of a collection is ``p(x) ∝ Σ_i w_i vMF(x; μ_i, κ_s)``: one splat
per stored item (μ_i its unit vector), weight ``w_i`` (the item's α, divided by the size of
its consolidated group when it has one, so a group counts once), and one concentration
κ_s chosen so that ``A_d(κ_s) = item_similarity`` (a sample's expected cosine to its
parent). Its energy is ``E(x) = −log Σ_i w_i C_d(κ_s) exp(κ_s μ_iᵀx)``.

:func:`sample_item_splats` draws from ``exp(−E/T)``: every chain starts at an exact draw of
the mixture at T (a parent item with probability ∝ ``w_i^{1/T}``, then Wood's sampler for
``vMF(μ_parent, κ_s/T)``: exact at T = 1, and the exact mass of each splat under
``p^{1/T}`` when splats do not overlap), then runs MALA (``langevin_sample``) on the energy
restricted to the ``m`` items nearest its parent. Each dropped term is smaller than the
parent's by ``exp(−κ_s Δ)``, Δ the gap in cosine to the sample (κ_s ≈ 9480 at d = 384 and
0.98: e^{−9.5} for Δ = 0.001, e^{−95} for Δ = 0.01), so the restriction changes the energy
only where more than ``m`` items crowd within about cos 0.92 of the parent (two points at
cos 0.98 from one parent can be cos 0.92 apart). The MH test is exact for the restricted
energy.
"""

from __future__ import annotations

import math

import numpy as np

from m2m.errors import InvalidArgumentError
from m2m.splats.energy import SplatMixture
from m2m.splats.vmf import estimate_kappa, log_vmf_normalizer, sample_vmf

__all__ = ["ItemSplatEnergy", "dedup_cluster_mixture", "item_kappa", "sample_item_splats"]

NEIGHBOURS = 32  # items per chain's local energy (the parent and its nearest items)
_CHAINS_PER_BLOCK = 256  # chains run together (bounds the (n, m, d) local splat block)


def item_kappa(dim: int, item_similarity: float) -> float:
    """κ_s with ``A_d(κ_s) = item_similarity``: a sample's expected cosine to its parent."""
    if not 0.0 < item_similarity < 1.0:
        raise InvalidArgumentError(f"item_similarity must be in (0, 1), got {item_similarity!r}")
    return float(estimate_kappa(dim, float(item_similarity)))


class ItemSplatEnergy:
    """``E_i(x) = −log Σ_{j ∈ N(i)} w_j C_d(κ) exp(κ μ_jᵀx)`` for chain i (an EnergyModel).

    ``mu`` (n, m, d): each chain's local splat directions; ``log_w`` (n, m): their log
    weights (−inf pads). Energies are of one chain per row of the points passed.
    """

    def __init__(self, mu: np.ndarray, log_w: np.ndarray, kappa: float) -> None:
        self._mu = mu
        self._log_w = log_w + log_vmf_normalizer(mu.shape[2], kappa)
        self.kappa = np.array([kappa])  # langevin's starting step size reads κ_max

    @property
    def dim(self) -> int:
        return int(self._mu.shape[2])

    def energy_and_grad(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        kappa = float(self.kappa[0])
        z = self._log_w + kappa * np.einsum("nd,nmd->nm", x, self._mu)
        top = np.max(z, axis=1, keepdims=True)
        p = np.exp(z - top)
        total = p.sum(axis=1, keepdims=True)
        energy = -(top[:, 0] + np.log(total[:, 0]))
        g = -kappa * np.einsum("nm,nmd->nd", p / total, self._mu)
        g -= np.sum(g * x, axis=1, keepdims=True) * x
        return energy, g


def _nearest_items(x: np.ndarray, rows: np.ndarray, m: int) -> np.ndarray:
    """Indices (len(rows), m) of the m items of ``x`` most similar to ``x[rows]`` (exact)."""
    m = min(m, x.shape[0])
    out = np.empty((rows.size, m), dtype=np.int64)
    step = max(1, (1 << 23) // max(1, x.shape[0]))
    for lo in range(0, rows.size, step):
        sims = x[rows[lo : lo + step]] @ x.T
        out[lo : lo + step] = np.argpartition(-sims, m - 1, axis=1)[:, :m]
    return out


def sample_item_splats(
    x: np.ndarray,
    weights: np.ndarray,
    n: int,
    *,
    item_similarity: float = 0.98,
    steps: int = 200,
    step_size: float | None = None,
    temperature: float = 1.0,
    rng: np.random.Generator,
    parents_from: np.ndarray | None = None,
    neighbours: int = NEIGHBOURS,
    return_parents: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """n samples of ``exp(−E/T)`` of the item-splat mixture (module docstring), float32.

    ``x``: unit rows of the stored items (float32); ``weights``: their w_i ≥ 0;
    ``parents_from``: restrict the parents to these rows (``near``); ``return_parents``: also
    return each sample's parent row.
    """
    from m2m.splats.langevin import langevin_sample

    d = x.shape[1]
    kappa = item_kappa(d, item_similarity)
    pool = np.arange(x.shape[0]) if parents_from is None else np.asarray(parents_from, dtype=np.int64)
    w = np.asarray(weights, dtype=np.float64)[pool]
    with np.errstate(divide="ignore"):
        logp = np.log(w) / float(temperature)
    if not np.any(np.isfinite(logp)):
        raise InvalidArgumentError("generation needs at least one item with weight > 0")
    p = np.exp(logp - np.max(logp))
    parents = pool[rng.choice(pool.size, size=n, p=p / p.sum())]
    order = np.argsort(parents, kind="stable")  # chains of one parent share its neighbours
    uniq, first = np.unique(parents[order], return_index=True)
    cand_of_parent = _nearest_items(x, uniq, neighbours)
    cand = np.empty((n, cand_of_parent.shape[1]), dtype=np.int64)
    cand[order] = np.repeat(cand_of_parent, np.diff(np.r_[first, n]), axis=0)
    with np.errstate(divide="ignore"):
        log_w_all = np.log(np.asarray(weights, dtype=np.float64))
    out = np.empty((n, d), dtype=np.float32)
    for lo in range(0, n, _CHAINS_PER_BLOCK):
        hi = min(n, lo + _CHAINS_PER_BLOCK)
        start = np.stack(
            [sample_vmf(x[q].astype(np.float64), kappa / temperature, 1, rng)[0] for q in parents[lo:hi]]
        )
        model = ItemSplatEnergy(x[cand[lo:hi]].astype(np.float64), log_w_all[cand[lo:hi]], kappa)
        out[lo:hi] = langevin_sample(
            model, hi - lo, init=start, steps=steps, step_size=step_size, temperature=temperature, rng=rng
        )
    return (out, parents) if return_parents else out


def dedup_cluster_mixture(mixture: SplatMixture, labels: np.ndarray, inv_group: np.ndarray) -> SplatMixture:
    """The cluster mixture with ``α_c ∝ Σ_{i∈c} 1/g_i`` (g_i = size of item i's consolidated
    group, 1 outside groups): what the mixture's weights would be after ``dedupe=True``."""
    alpha = np.bincount(labels, weights=inv_group, minlength=mixture.n_components)
    if not math.isfinite(float(alpha.sum())) or alpha.sum() <= 0:
        return mixture
    return SplatMixture(mixture.mu, mixture.kappa, alpha)
