"""The data lake's generated rows: Langevin samples from a collection's splat energy.

``generate_from_items`` (the default, ``generation_source="items"``) is the sampler behind
``Collection.generate``'s default: ``m2m.splats.generate.sample_item_splats``, MALA chains on
the item-splat energy ``−log Σ_i w_i vMF(x; μ_i, κ_s)``, each started at an exact draw of
that mixture (a parent ∝ w_i, then ``vMF(μ_parent, κ_s)``). Its samples' energies follow
the stored items' (two-sample KS on real data) and they are not copies.

``generate_from_clusters`` (``generation_source="clusters"``) runs short MALA chains on the
cluster mixture from stored items; cheaper, but isotropic cluster splats are too narrow in
energy for real embeddings (docs/splats.md, "Generation").
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["generate_from_clusters", "generate_from_items"]


def generate_from_items(
    unit: np.ndarray,
    weights: np.ndarray,
    n: int,
    *,
    rng: np.random.Generator,
    steps: int,
    item_similarity: float,
    lengths: np.ndarray | None = None,
) -> np.ndarray:
    """n float32 samples of the item-splat mixture of ``unit`` (unit rows) with weights w_i.

    ``lengths``: the stored (non-unit) vectors of an ip/l2 collection; each sample then takes
    the length of its parent item (a sample lies at cosine about ``item_similarity`` to it),
    else it is unit.
    """
    from m2m.splats.generate import sample_item_splats

    out, parents = sample_item_splats(
        unit, weights, n, item_similarity=item_similarity, steps=steps, rng=rng, return_parents=True
    )
    if lengths is not None:
        out *= np.linalg.norm(lengths[parents], axis=1)[:, None]
    return out


class _LocalSplats:
    """The splat energy restricted, per chain, to a few candidate splats (an EnergyModel)."""

    def __init__(self, mixture: Any, candidates: np.ndarray) -> None:
        self._mixture = mixture
        self._candidates = candidates
        self.kappa = mixture.kappa[np.unique(candidates)]  # sets langevin's starting step size

    @property
    def dim(self) -> int:
        return self._mixture.dim

    def energy_and_grad(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._mixture.energy_and_grad(x, candidates=self._candidates)


def generate_from_clusters(
    mixture: Any,
    vectors: np.ndarray,
    n: int,
    *,
    rng: np.random.Generator,
    probs: np.ndarray | None,
    steps: int,
    candidates: int,
    keep_length: bool,
) -> np.ndarray:
    """n MALA samples on the cluster ``mixture``, each chain started at a stored row of
    ``vectors`` drawn with ``probs`` (uniform if None) and seeing its ``candidates`` nearest
    splats; with ``keep_length`` a sample keeps its start item's length, else it is unit."""
    from m2m.splats.langevin import langevin_sample

    count = vectors.shape[0]
    starts = rng.choice(count, size=n, p=probs) if probs is not None else rng.integers(0, count, n)
    raw = vectors[starts].astype(np.float64)
    norms = np.linalg.norm(raw, axis=1)
    x0 = raw / np.where(norms > 0, norms, 1.0)[:, None]
    zero = norms == 0
    if np.any(zero):  # a zero vector has no direction: start at a splat mean instead
        x0[zero] = mixture.mu[rng.choice(mixture.n_components, size=int(zero.sum()), p=mixture.alpha)]
    m = min(candidates, mixture.n_components)
    cos = x0 @ mixture.mu.T
    near = (
        np.argpartition(-cos, m - 1, axis=1)[:, :m]
        if m < mixture.n_components
        else np.broadcast_to(np.arange(m), (n, m)).copy()
    )
    samples = langevin_sample(_LocalSplats(mixture, near), n, init=x0, steps=steps, rng=rng)
    out = samples / np.linalg.norm(samples, axis=1, keepdims=True)
    if keep_length:
        out *= np.where(zero, 1.0, norms)[:, None]
    return out.astype(np.float32)
