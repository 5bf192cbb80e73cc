"""k-means used by HRM2: checked against brute force and planted clusters."""

from __future__ import annotations

import numpy as np
import pytest

from m2m.errors import InvalidArgumentError
from m2m.index.kmeans import assign, kmeans, kmeans_plus_plus


def _blobs(n_per=200, k=8, d=16, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)).astype(np.float32) * 5
    labels = np.repeat(np.arange(k), n_per)
    x = centres[labels] + spread * rng.standard_normal((labels.size, d)).astype(np.float32)
    return x, labels, centres


def test_assign_matches_brute_force_argmin():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 12)).astype(np.float32)
    c = rng.standard_normal((17, 12)).astype(np.float32)
    lab, dist = assign(x, c, return_dist=True)
    full = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(lab, full.argmin(1))
    np.testing.assert_allclose(dist, full.min(1), rtol=1e-4, atol=1e-4)


def test_kmeans_recovers_planted_clusters():
    x, truth, centres = _blobs()
    cent, lab = kmeans(x, 8, iters=20, seed=3)
    # every found cluster is exactly one planted cluster (a bijection)
    pairs = {(int(a), int(b)) for a, b in zip(lab, truth, strict=False)}
    assert len(pairs) == 8
    assert len({a for a, _ in pairs}) == 8 and len({b for _, b in pairs}) == 8
    # and centroids sit on the planted centres
    nearest = assign(centres, cent)
    assert np.abs(cent[nearest] - centres).max() < 0.05


def test_kmeans_plus_plus_picks_distinct_data_points():
    x, _, _ = _blobs(n_per=50)
    seeds = kmeans_plus_plus(x, 8, np.random.default_rng(0))
    assert {tuple(s) for s in seeds} <= {tuple(r) for r in x}
    # with well separated blobs, D² seeding lands one seed in every blob
    assert np.unique(assign(seeds, _blobs(n_per=1)[2])).size == 8


def test_kmeans_lowers_inertia_and_fills_every_cluster():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2000, 8)).astype(np.float32)
    cent0 = kmeans_plus_plus(x, 32, np.random.default_rng(0))
    _, d0 = assign(x, cent0, return_dist=True)
    cent, lab = kmeans(x, 32, iters=15, seed=0)
    _, d1 = assign(x, cent, return_dist=True)
    assert d1.sum() < d0.sum()
    assert np.bincount(lab, minlength=32).min() >= 1


def test_kmeans_k_equals_n_and_duplicates():
    x = np.repeat(np.eye(4, dtype=np.float32), 3, axis=0)  # 4 distinct points, 3 copies each
    cent, lab = kmeans(x, 4, seed=0)
    assert np.unique(lab).size == 4
    np.testing.assert_allclose(np.sort(cent, axis=0), np.sort(np.eye(4, dtype=np.float32), axis=0))


@pytest.mark.parametrize("k", [0, 11])
def test_kmeans_rejects_bad_k(k):
    with pytest.raises(InvalidArgumentError):
        kmeans(np.zeros((10, 3), np.float32), k)
