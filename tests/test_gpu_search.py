"""HRM2 on a torch device: results equal the CPU index's at the same n_probe (CPU torch here;
the CUDA run is marked gpu)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from m2m.errors import DimensionMismatchError, InvalidArgumentError, InvalidVectorError  # noqa: E402
from m2m.index import HRM2Index, HRM2Params  # noqa: E402
from m2m.index.gpu_search import GPUSearch  # noqa: E402
from m2m.memory.snapshot import snapshot_arrays  # noqa: E402

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


@pytest.mark.parametrize("strategy", ["dense", "gather"])
def test_matches_cpu_index_exact_rerank(built, strategy):
    ix, q = built
    for block_rows in (16, 128):
        g = GPUSearch(ix, device="cpu", block_rows=block_rows, strategy=strategy)
        for n_probe in (1, 4, 16):
            check(ix, g, q, 2, n_probe)
        check(ix, g, q[0], 2, 4)  # one query


def test_lod1_every_codec_and_chunks():
    x, q = data("cosine", seed=1)
    for codec in ("pca", "pca8", "sq8"):
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
    bad = q.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InvalidVectorError):
        g.search(bad, K, n_probe=2)
    with pytest.raises(InvalidVectorError):
        g.search(torch.from_numpy(bad), K, n_probe=2, numpy=False)
    for kw in ({"scan": "lists"}, {"dtype": "int8"}, {"strategy": "fast"}, {"refine": 0}, {"block_rows": 0}):
        with pytest.raises(InvalidArgumentError):
            GPUSearch(ix, device="cpu", **kw)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_index():
    """Both strategies, CUDA graphs on (replayed with new queries each call) and off."""
    x, q = data("cosine")
    ix = HRM2Index.build(x, np.arange(x.shape[0]), "cosine", HRM2Params(calib_queries=0))
    for strategy in ("dense", "gather"):
        for graphs in (True, False):
            g = GPUSearch(ix, device="cuda", strategy=strategy, graphs=graphs)
            for n_probe in (1, 8, 8):
                check(ix, g, q, 2, n_probe)
                check(ix, g, q[::-1].copy(), 2, n_probe)  # same shapes, other data: graph replay
            check(ix, g, q[:7], 1, 3)
        g = GPUSearch(ix, device="cuda", strategy=strategy, scan="exact", dtype="float16")
        check_exact_f16(ix, g, q)
        g = GPUSearch(ix, device="cuda", strategy=strategy, scan="exact")
        a = g.search(q, K, n_probe=ix.n_lists)
        b = ix.search(q, K, n_probe=ix.n_lists)
        np.testing.assert_array_equal(a[1], b[1])


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


def check_exact_f16(ix, g, q):
    """float16 scan + float32 re-rank of refine*k: ids equal the float32 exact scan's except
    where float16 rounding (about 1e-3 of a score) swaps candidates at the refine*k cut-off."""
    ref = GPUSearch(ix, device="cpu", block_rows=g.block_rows, scan="exact")
    for n_probe in (2, 8):
        a = ref.search(q, K, n_probe=n_probe)
        b = g.search(q, K, n_probe=n_probe)
        assert (a[1] == b[1]).mean() >= 0.99
        same = (a[1] == b[1]).all(1)
        np.testing.assert_allclose(a[0][same], b[0][same], rtol=0, atol=1e-4)


@pytest.mark.parametrize("strategy", ["dense", "gather"])
def test_exact_float16_scan_with_rerank(built, strategy):
    ix, q = built
    g = GPUSearch(ix, device="cpu", block_rows=32, scan="exact", dtype="float16", strategy=strategy)
    check_exact_f16(ix, g, q)
    # float16 storage, float32 re-rank: the distances returned are float32-exact
    ref = GPUSearch(ix, device="cpu", block_rows=32, scan="exact")
    a, b = ref.search(q, K, n_probe=ix.n_lists), g.search(q, K, n_probe=ix.n_lists)
    assert (a[1] == b[1]).mean() >= 0.99


def test_strategies_agree_on_odd_batches(built):
    """dense (grouped by block) and gather (per query) compute the same scores: same ids."""
    ix, q = built
    dense = GPUSearch(ix, device="cpu", block_rows=16, strategy="dense")
    gather = GPUSearch(ix, device="cpu", block_rows=16, strategy="gather")
    for m in (1, 2, 33):
        for n_probe in (1, 5):
            a = dense.search(q[:m], K, n_probe=n_probe)
            b = gather.search(q[:m], K, n_probe=n_probe)
            np.testing.assert_array_equal(a[1], b[1])
            np.testing.assert_allclose(a[0], b[0], rtol=0, atol=1e-5)


def _wgpu_adapter(hardware_only=False):
    pytest.importorskip("wgpu")
    from m2m.compute.wgpu_backend import find_adapter

    adapter = find_adapter(hardware_only=hardware_only)[0]
    if adapter is None:
        pytest.skip("no wgpu adapter" if not hardware_only else "needs a hardware wgpu adapter")
    return adapter


def test_wgpu_hrm2_matches_exact_scan(built):
    """WGSL routing + list scan + merge: the exact top-k over the probed lists, as torch's
    scan="exact" (routing in the original space: near-ties could differ, none here)."""
    from m2m.compute.wgpu_backend import WgpuBackend
    from m2m.index.wgpu_search import WgpuGPUSearch

    ix, q = built
    w = WgpuGPUSearch(ix, WgpuBackend(_wgpu_adapter()))
    ref = GPUSearch(ix, device="cpu", scan="exact")
    scale = 1.0 + float((q * q).sum(1).max()) if ix.metric.value == "l2" else 1.0
    for n_probe in (1, 4, ix.n_lists):
        a, b = ref.search(q[:40], K, n_probe=n_probe), w.search(q[:40], K, n_probe=n_probe)
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_allclose(a[0], b[0], rtol=0, atol=1e-4 * scale)
    _, s1 = w.search(q[5], K, n_probe=4)  # one query
    np.testing.assert_array_equal(s1, ref.search(q[5], K, n_probe=4)[1])
    with pytest.raises(InvalidArgumentError):
        w.search(q, 65, n_probe=2)  # k over the register lists' limit
    with pytest.raises(DimensionMismatchError):
        w.search(q[:, :3], K, n_probe=2)


def test_wgpu_hrm2_chunks_and_short_lists():
    """Vector buffers split into chunks (tiny binding limit) give the same results; k above a
    list's size tops up with more probes, as the CPU index."""
    from m2m.compute.wgpu_backend import WgpuBackend
    from m2m.index.wgpu_search import WgpuGPUSearch

    x, q = data("ip", n=600, d=20, seed=6)
    ix = HRM2Index.build(x, np.arange(x.shape[0]), "ip", HRM2Params(calib_queries=0, n_coarse=6, n_fine=10))
    adapter = _wgpu_adapter()
    whole = WgpuGPUSearch(ix, WgpuBackend(adapter))
    split = WgpuGPUSearch(ix, WgpuBackend(adapter, max_chunk_bytes=20 * 128 * 4 * 7))
    assert len(split.ivf.chunks) > 1
    sizes = np.diff(snapshot_arrays(ix)["offsets"])
    k = int(sizes.max()) + 1  # more than any list holds: every query must top up
    assert k <= 64
    for n_probe in (1, 3):
        a, b = whole.search(q[:12], k, n_probe=n_probe), split.search(q[:12], k, n_probe=n_probe)
        np.testing.assert_array_equal(a[1], b[1])
        assert np.all(a[1] >= 0)  # topped up to k results
        ref = GPUSearch(ix, device="cpu", scan="exact").search(q[:12], k, n_probe=n_probe)
        np.testing.assert_array_equal(a[1], ref[1])


@pytest.mark.gpu
def test_wgpu_hrm2_hardware_matches_torch_exact():
    from m2m.compute.wgpu_backend import WgpuBackend
    from m2m.index.wgpu_search import WgpuGPUSearch

    adapter = _wgpu_adapter(hardware_only=True)
    rng = np.random.default_rng(9)
    c = rng.standard_normal((200, 384)).astype(np.float32)
    x = c[rng.integers(0, 200, 60_000)] + 0.5 * rng.standard_normal((60_000, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.choice(60_000, 500, replace=False)] + 0.05 * rng.standard_normal((500, 384)).astype(np.float32)
    ix = HRM2Index.build(x, np.arange(60_000), "ip", HRM2Params(calib_queries=0))
    w = WgpuGPUSearch(ix, WgpuBackend(adapter))
    ref = GPUSearch(ix, device="cpu", scan="exact")
    for n_probe in (2, 16):
        a, b = ref.search(q, K, n_probe=n_probe), w.search(q, K, n_probe=n_probe)
        assert (a[1] == b[1]).mean() > 0.999  # float32 summation order may swap exact near-ties
        np.testing.assert_allclose(a[0], b[0], rtol=0, atol=1e-4)
