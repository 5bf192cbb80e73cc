"""Near-duplicate avalanches on planted data, power-law MLE and criticality statistics."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest

from m2m.errors import InvalidArgumentError
from m2m.splats.soc import (
    avalanche_scan,
    avalanche_scan_pairs,
    consolidate,
    criticality_sweep,
    find_near_duplicate_groups,
    fit_power_law,
    hurwitz_zeta,
    threshold_pairs,
)
from m2m.splats.vmf import fit_vmf

THRESHOLD = 0.9


class BruteForce:
    """Exact top-k by inner product over unit rows; counts the k values asked for."""

    def __init__(self, x: np.ndarray, one_way: bool = False) -> None:
        self.x = x / np.linalg.norm(x, axis=1, keepdims=True)
        self.one_way = one_way
        self.ks: list[int] = []

    def __call__(self, batch: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self.ks.append(k)
        q = batch / np.linalg.norm(batch, axis=1, keepdims=True)
        sims = q @ self.x.T
        k = min(k, sims.shape[1])
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        idx = np.take_along_axis(idx, np.argsort(-np.take_along_axis(sims, idx, axis=1), axis=1), axis=1)
        out = np.take_along_axis(sims, idx, axis=1)
        if self.one_way:  # an index that only ever reports neighbours with a larger id
            self_id = np.argmax(sims, axis=1)[:, None]
            idx = np.where(idx >= self_id, idx, -1)
        return out, idx


def planted(seed: int = 0, d: int = 64) -> tuple[np.ndarray, list[np.ndarray]]:
    """60 groups of 2–10 near-duplicates (pairwise cos ≥ 0.9), 60 near misses, 2000 others."""
    rng = np.random.default_rng(seed)
    rows: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    start = 0
    for g in range(60):
        base = rng.standard_normal(d)
        base /= np.linalg.norm(base)
        size = 2 + g % 9
        noise = rng.uniform(0.05, 0.25)
        m = base + noise * rng.standard_normal((size, d)) / math.sqrt(d)
        m /= np.linalg.norm(m, axis=1, keepdims=True)
        rows.append(m)
        groups.append(np.arange(start, start + size))
        start += size
        u = rng.standard_normal(d)
        u -= (u @ base) * base
        u /= np.linalg.norm(u)
        rows.append((0.6 * base + 0.8 * u)[None, :])  # a near miss: cos 0.6 to the base
        start += 1
    others = rng.standard_normal((2000, d))
    rows.append(others / np.linalg.norm(others, axis=1, keepdims=True))
    x = np.vstack(rows)
    order = rng.permutation(x.shape[0])  # shuffle so groups are not contiguous ids
    inv = np.argsort(order)
    return x[order], [np.sort(inv[g]) for g in groups]


def co_membership(groups: list[np.ndarray]) -> set[tuple[int, int]]:
    return {pair for g in groups for pair in combinations(sorted(g.tolist()), 2)}


def test_planted_data_is_as_described() -> None:
    x, groups = planted()
    for g in groups:
        sims = x[g] @ x[g].T
        assert sims.min() >= THRESHOLD  # every planted pair is a duplicate
    members = np.concatenate(groups)
    mask = np.ones(x.shape[0], bool)
    mask[members] = False
    rest = x[mask]
    assert np.max(x[members] @ rest.T) < THRESHOLD - 0.1  # nothing else comes close


@pytest.mark.parametrize("k", [4, 16])
def test_planted_groups_are_found_with_precision_and_recall(k: int) -> None:
    x, truth = planted()
    nn = BruteForce(x)
    result = avalanche_scan(x.astype(np.float32), THRESHOLD, nn, k=k, batch_size=500)
    found = co_membership(result.groups)
    true = co_membership(truth)
    precision = len(found & true) / len(found)
    recall = len(found & true) / len(true)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)
    assert precision == 1.0 and recall == 1.0  # measured: exact on this data
    assert sorted(result.avalanche_sizes.tolist()) == sorted(len(g) for g in truth)
    assert result.n_truncated == 0
    if k == 4:
        assert max(nn.ks) == 16  # groups of up to 10 needed two doublings of k
    # labels agree with the groups; non-members are −1
    for gi, g in enumerate(result.groups):
        assert np.all(result.labels[g] == gi)
    assert np.sum(result.labels >= 0) == sum(len(g) for g in truth)
    s = result.stats
    assert s.n_avalanches == 60 and s.n_toppled == sum(len(g) for g in truth)
    assert s.n_edges == sum(len(g) * (len(g) - 1) // 2 for g in truth)
    # cliques of size g: k = g − 1 for members, so σ = Σ g(g−1)(g−2) / Σ g(g−1)
    gs = np.array([len(g) for g in truth], dtype=float)
    assert s.branching_ratio == pytest.approx((gs * (gs - 1) * (gs - 2)).sum() / (gs * (gs - 1)).sum())
    assert s.offspring_ratio == pytest.approx(1 - 60 / gs.sum())
    assert find_near_duplicate_groups(x, THRESHOLD, nn, k=k)[0].tolist() == result.groups[0].tolist()


def _pair_set(src: np.ndarray, dst: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(np.minimum(src, dst).tolist(), np.maximum(src, dst).tolist(), strict=True))


def test_threshold_pairs_exact_and_cluster_join_match_brute_force() -> None:
    x, truth = planted(seed=2)
    x32 = x.astype(np.float32)
    sims = x32 @ x32.T
    i, j = np.nonzero(np.triu(sims >= THRESHOLD, 1))
    brute = set(zip(i.tolist(), j.tolist(), strict=True))
    src, dst, sim = threshold_pairs(x32, THRESHOLD, block=300)
    assert _pair_set(src, dst) == brute and np.all(sim >= THRESHOLD)
    # a partition: spherical k-means-like labels from random centres; probing every list is exact
    rng = np.random.default_rng(0)
    centres = x[rng.choice(len(x), 40, replace=False)]
    labels = np.argmax(x @ centres.T, axis=1)
    src, dst, _ = threshold_pairs(x32, THRESHOLD, labels=labels, centres=centres, probes=40)
    assert _pair_set(src, dst) == brute
    # few probes: every pair found is a true pair, and the groups found have the issue's
    # precision and recall (pairs missed inside a group are mostly bridged by the others)
    src, dst, _ = threshold_pairs(x32, THRESHOLD, labels=labels, centres=centres, probes=2)
    found = _pair_set(src, dst)
    assert found <= brute and len(found) >= 0.95 * len(brute)
    got = co_membership(avalanche_scan_pairs(len(x), THRESHOLD, src, dst).groups)
    true = co_membership(truth)
    assert len(got & true) / len(got) >= 0.95 and len(got & true) / len(true) >= 0.95
    oracle = avalanche_scan(x32, THRESHOLD, BruteForce(x), k=16).stats
    exact = avalanche_scan_pairs(len(x), THRESHOLD, *threshold_pairs(x32, THRESHOLD)[:2]).stats
    assert exact == oracle


def test_one_way_index_still_links_groups() -> None:
    x, truth = planted(seed=1)
    groups = find_near_duplicate_groups(x, THRESHOLD, BruteForce(x, one_way=True), k=4)
    assert co_membership(groups) == co_membership(truth)


def test_consolidate_summarises_groups_as_splats() -> None:
    x, truth = planted(seed=2)
    w = np.random.default_rng(3).random(x.shape[0]) + 0.5
    splats = consolidate(truth, x, w)
    assert splats.mu.shape == (60, 64) and len(splats.members) == 60
    for g, mu, kappa, alpha in zip(truth, splats.mu, splats.kappa, splats.alpha, strict=True):
        mu_ref, k_ref = fit_vmf(x[g], w[g])
        np.testing.assert_allclose(mu, mu_ref, atol=1e-12)
        assert kappa == pytest.approx(k_ref, rel=1e-10)
        assert alpha == pytest.approx(w[g].sum() / w.sum())
        assert np.min(x[g] @ mu) > 0.9
    with pytest.raises(InvalidArgumentError):
        consolidate([np.array([0, 1]), np.array([1, 2])], x)
    with pytest.raises(InvalidArgumentError):
        consolidate([np.array([0, x.shape[0]])], x)


@pytest.mark.parametrize("tau", [1.1, 1.5, 2.5, 3.7])
@pytest.mark.parametrize("s_min", [1, 3, 50])
def test_hurwitz_zeta_matches_mpmath(tau: float, s_min: int) -> None:
    mp = pytest.importorskip("mpmath")
    assert hurwitz_zeta(tau, s_min) == pytest.approx(float(mp.zeta(tau, s_min)), rel=1e-12)


def _sample_power_law(rng: np.random.Generator, tau: float, s_min: int, n: int) -> np.ndarray:
    s = np.arange(s_min, 2_000_000, dtype=np.float64)
    cdf = np.cumsum(s**-tau)
    cdf /= cdf[-1]  # the truncated tail mass is < 1e-7 for τ ≥ 2
    return s_min + np.searchsorted(cdf, rng.random(n))


def test_power_law_mle_recovers_tau() -> None:
    rng = np.random.default_rng(4)
    sizes = _sample_power_law(rng, 2.5, 1, 4000)
    fit = fit_power_law(sizes, s_min=1)
    assert fit.stderr == pytest.approx(1.5 / math.sqrt(4000), rel=0.2)  # ≈ (τ−1)/√n
    assert abs(fit.tau - 2.5) < 3 * fit.stderr
    assert fit.ks_distance < 1.63 / math.sqrt(4000)
    # a body of small non-power-law sizes below the tail: s_min is found by the KS rule
    body = rng.integers(1, 5, size=2000)
    mixed = np.concatenate([body, _sample_power_law(rng, 2.2, 5, 3000)])
    auto = fit_power_law(mixed)
    assert 5 <= auto.s_min <= 8
    assert abs(auto.tau - 2.2) < 4 * auto.stderr


def test_chain_is_critical_and_sweep_tracks_thresholds() -> None:
    # 200 points 0.02 rad apart on a great circle: at a threshold between cos(0.04) and
    # cos(0.02) only consecutive points link, a chain with σ = (n−2)/(n−1) ≈ 1.
    n, delta = 200, 0.02
    ang = np.arange(n) * delta
    x = np.zeros((n, 8))
    x[:, 0], x[:, 1] = np.cos(ang), np.sin(ang)
    t_chain = 0.5 * (math.cos(delta) + math.cos(2 * delta))
    t_none = math.cos(delta) + 1e-9
    t_two = 0.5 * (math.cos(2 * delta) + math.cos(3 * delta))
    none, chain, two = criticality_sweep(x, [t_none, t_chain, t_two], BruteForce(x), k=4)
    assert none.threshold == t_none and none.n_edges == 0 and math.isnan(none.branching_ratio)
    assert none.n_avalanches == 0 and none.largest_fraction == 1 / n
    assert chain.n_edges == n - 1 and chain.n_avalanches == 1
    assert chain.branching_ratio == pytest.approx((n - 2) / (n - 1))
    assert chain.largest_fraction == 1.0 and chain.susceptibility == 0.0
    assert chain.offspring_ratio == pytest.approx(1 - 1 / n)
    assert two.n_edges == 2 * n - 3
    assert two.branching_ratio > 2.5  # interior degree 4: σ = 3 in the bulk
    direct = avalanche_scan(x, t_chain, BruteForce(x), k=4).stats
    assert direct == chain


def test_susceptibility_counts_finite_groups() -> None:
    # groups of sizes 2, 3 and 5 (the largest is excluded): χ = (2² + 3²)/n
    x, truth = planted(seed=5)
    keep = [truth[0], truth[1], truth[3]]  # sizes 2, 3, 5
    loners = np.setdiff1d(np.arange(x.shape[0]), np.concatenate(truth))[:50]
    idx = np.concatenate([*keep, loners])
    sub = x[idx]
    stats = avalanche_scan(sub, THRESHOLD, BruteForce(sub), k=8).stats
    assert stats.susceptibility == pytest.approx((4 + 9) / sub.shape[0])
    assert stats.largest_fraction == pytest.approx(5 / sub.shape[0])
    assert stats.power_law is None  # three avalanches are too few to fit


def test_bad_neighbor_output_and_arguments() -> None:
    x = np.random.default_rng(0).standard_normal((10, 4))
    with pytest.raises(InvalidArgumentError):
        avalanche_scan(x, 0.9, lambda b, k: (np.zeros((len(b), k)), np.zeros((len(b), k + 1), int)))
    with pytest.raises(InvalidArgumentError):
        avalanche_scan(x, float("nan"), BruteForce(x))
    with pytest.raises(InvalidArgumentError):
        avalanche_scan(x, 0.9, BruteForce(x), k=1)
    with pytest.raises(InvalidArgumentError):
        fit_power_law([0, 1, 2])
