"""HRM2 on a torch device: results equal the CPU index's at the same n_probe (CPU torch here;
the CUDA run is marked gpu)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from m2m.errors import DimensionMismatchError, InvalidArgumentError  # noqa: E402
from m2m.index import HRM2Index, HRM2Params  # noqa: E402
from m2m.index.gpu_search import GPUSearch  # noqa: E402

K = 10


def data(metric, n=5000, d=32, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((40, d)).astype(np.float32) * 2
    x = (c[rng.integers(0, 40, n)] + 0.6 * rng.standard_normal((n, d))).astype(np.float32)
    q = (x[rng.choice(n, 80, replace=False)] + 0.3 * rng.standard_normal((80, d))).astype(np.float32)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    return x, q


def check(ix, g, q, lod, n_probe, **kw):
    a = ix.search(q, K, n_probe=n_probe, lod=lod, **kw)
    b = g.search(q, K, n_probe=n_probe, lod=lod, **kw)
    np.testing.assert_array_equal(a[1], b[1])
    # float32 rounding relative to the summed terms (||q||², ||x||² for l2; 1 otherwise)
    scale = 1.0 + float((np.atleast_2d(q) ** 2).sum(1).max()) if ix.metric.value == "l2" else 1.0
    fin = np.isfinite(a[0])
    np.testing.assert_array_equal(fin, np.isfinite(b[0]))
    np.testing.assert_allclose(a[0][fin], b[0][fin], rtol=0, atol=1e-4 * scale)


@pytest.fixture(scope="module", params=["cosine", "l2", "ip"])
def built(request):
    x, q = data(request.param)
    ix = HRM2Index.build(
        x, np.arange(x.shape[0]) * 2 + 5, request.param, HRM2Params(calib_queries=0, seed=3, kmeans_iters=8)
    )
    return ix, q


@pytest.mark.parametrize("bucketed", [True, False])
def test_matches_cpu_index_exact_rerank(built, bucketed):
    ix, q = built
    for block_rows in (16, 128):
        g = GPUSearch(ix, device="cpu", block_rows=block_rows, bucketed=bucketed)
        for n_probe in (1, 4, 16):
            check(ix, g, q, 2, n_probe)
        check(ix, g, q[0], 2, 4)  # one query


def test_lod1_and_sq8_and_chunks():
    x, q = data("cosine", seed=1)
    for codec in ("pca", "sq8"):
        ix = HRM2Index.build(x, np.arange(x.shape[0]), "cosine", HRM2Params(calib_queries=0, codec=codec))
        g = GPUSearch(ix, device="cpu", block_rows=32)
        check(ix, g, q, 1, 6)
        a = g.search(q, K, n_probe=6)
        b = g.search(q, K, n_probe=6, chunk=7)  # chunking does not change anything
        np.testing.assert_array_equal(a[1], b[1])


def test_coarse_routing_path_matches():
    """Large-index routing (only the nearest coarse clusters' fine lists compete)."""
    x, q = data("cosine", n=6000, seed=2)
    ix = HRM2Index.build(x, np.arange(x.shape[0]), "cosine", HRM2Params(calib_queries=0, coarse_probe=2))
    g = GPUSearch(ix, device="cpu")
    for n_probe in (2, 8):
        check(ix, g, q, 2, n_probe)


def test_filter_inside_probed_lists_matches_bruteforce_over_candidates():
    x, q = data("ip", seed=4)
    ix = HRM2Index.build(x, np.arange(x.shape[0]), "ip", HRM2Params(calib_queries=0))
    g = GPUSearch(ix, device="cpu")
    allowed = np.zeros(x.shape[0], dtype=bool)
    allowed[::2] = True
    _, s = g.search(q, K, n_probe=ix.n_lists, allowed=allowed)
    assert np.all(s % 2 == 0)
    # probing every list with rerank covering them all = exact search over the allowed rows
    exact = -(q @ x[::2].T)
    ref = np.argsort(exact, axis=1)[:, :K] * 2
    assert (s == ref).mean() > 0.99


def test_bad_input():
    x, q = data("cosine")
    ix = HRM2Index.build(x, np.arange(x.shape[0]), "cosine", HRM2Params(calib_queries=0))
    g = GPUSearch(ix, device="cpu")
    with pytest.raises(DimensionMismatchError):
        g.search(q[:, :5], K, n_probe=2)
    with pytest.raises(InvalidArgumentError):
        g.search(q, 0, n_probe=2)
    with pytest.raises(InvalidArgumentError):
        g.search(q, K, n_probe=2, lod=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_index():
    x, q = data("cosine")
    ix = HRM2Index.build(x, np.arange(x.shape[0]), "cosine", HRM2Params(calib_queries=0))
    g = GPUSearch(ix, device="cuda")
    for n_probe in (1, 8):
        check(ix, g, q, 2, n_probe)


def test_exact_scan_equals_bruteforce_over_probed_lists(built):
    ix, q = built
    g = GPUSearch(ix, device="cpu", block_rows=32, scan="exact")
    d, s = g.search(q, K, n_probe=ix.n_lists)  # every list probed: exact search
    a = ix.search(q, K, n_probe=ix.n_lists)  # the CPU index's exhaustive path
    np.testing.assert_array_equal(s, a[1])
    scale = 1.0 + float((q * q).sum(1).max()) if ix.metric.value == "l2" else 1.0
    np.testing.assert_allclose(d, a[0], rtol=0, atol=1e-4 * scale)
    # with few probes: exact over the probed lists, so never worse than the codes + re-rank
    codes = GPUSearch(ix, device="cpu", block_rows=32)
    dc, _ = codes.search(q, K, n_probe=3)
    de, _ = g.search(q, K, n_probe=3)
    assert np.all(de[:, 0] <= dc[:, 0] + 1e-4 * scale)
