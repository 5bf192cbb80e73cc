"""Every available compute backend against the NumPy reference (the oracle).

Tie-aware: the true distances of the returned indices (recomputed here in float64) must
equal the reference's k best distances, the returned distances must match them, and every
reference neighbour that is strictly better than the k-th distance must be returned.
wgpu runs on any adapter (lavapipe, the software Vulkan driver, on CI), so sizes stay small.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import warnings

import numpy as np
import pytest

from m2m.compute import NumpyBackend, clear_backend_cache, get_backend
from m2m.errors import DimensionMismatchError, InvalidArgumentError
from m2m.types import Metric

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_WGPU = importlib.util.find_spec("wgpu") is not None


def _wgpu_adapter(hardware_only: bool = False):
    if not HAVE_WGPU:
        return None
    from m2m.compute.wgpu_backend import find_adapter

    return find_adapter(hardware_only=hardware_only)[0]


def _cuda() -> bool:
    if not HAVE_TORCH:
        return False
    import torch

    return bool(torch.cuda.is_available())


_BACKENDS: dict[str, object] = {}


def _backend(name: str):
    """Build (once) the backend called ``name`` or skip the test."""
    if name in _BACKENDS:
        return _BACKENDS[name]
    if name.startswith("torch"):
        pytest.importorskip("torch")
        from m2m.compute.torch_backend import TorchBackend

        dtype = "float16" if name.endswith("f16") else "float32"
        backend = TorchBackend(dtype=dtype, max_score_elements=50_000)  # small: exercises chunking
    else:
        pytest.importorskip("wgpu")
        adapter = _wgpu_adapter()
        if adapter is None:
            pytest.skip("no wgpu adapter")
        from m2m.compute.wgpu_backend import WgpuBackend

        storage = "float16" if name.endswith("f16") else "float32"
        backend = WgpuBackend(adapter, storage=storage, target_workgroups=8)
    _BACKENDS[name] = backend
    return backend


def clustered(rng, n: int, d: int, n_clusters: int = 12, unit: bool = False) -> np.ndarray:
    centers = rng.standard_normal((n_clusters, d)).astype(np.float32) * 3.0
    x = centers[rng.integers(0, n_clusters, n)] + rng.standard_normal((n, d)).astype(np.float32)
    if unit:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def true_distances(q: np.ndarray, x: np.ndarray, idx: np.ndarray, metric: Metric) -> np.ndarray:
    """Float64 distances of rows ``idx`` (-1 -> inf) for every query."""
    q64, x64 = q.astype(np.float64), x.astype(np.float64)
    safe = np.where(idx >= 0, idx, 0)
    picked = x64[safe]  # (nq, k, d)
    dots = np.einsum("qd,qkd->qk", q64, picked)
    if metric is Metric.COSINE:
        d = 1.0 - dots
    elif metric is Metric.IP:
        d = -dots
    else:
        d = np.maximum((q64 * q64).sum(1)[:, None] - 2 * dots + (picked * picked).sum(2), 0.0)
    return np.where(idx >= 0, d, np.inf)


def assert_same_neighbours(got, ref, q, x, metric, valid=None):
    gd, gi = got
    rd, ri = ref
    assert gd.shape == rd.shape and gi.shape == ri.shape
    assert gd.dtype == np.float32 and gi.dtype == np.int64
    scale = 1.0 + float(np.abs(rd[np.isfinite(rd)]).max(initial=1.0))
    tol = 2e-5 * scale
    # padding in the same places
    np.testing.assert_array_equal(np.isinf(gd), np.isinf(rd))
    np.testing.assert_array_equal(gi == -1, ri == -1)
    np.testing.assert_array_equal(gi == -1, np.isinf(gd))
    # the distances themselves
    fin = np.isfinite(rd)
    np.testing.assert_allclose(gd[fin], rd[fin], rtol=0, atol=tol)
    # the returned rows really are that close, distinct, and allowed by the mask
    td = true_distances(q, x, gi, metric)
    np.testing.assert_allclose(td[fin], rd[fin], rtol=0, atol=tol)
    for row in gi:
        kept = row[row >= 0]
        assert len(set(kept.tolist())) == len(kept)
        if valid is not None:
            assert valid[kept].all()
    # every reference neighbour clearly inside the k-th distance is found
    for qi in range(rd.shape[0]):
        row_fin = rd[qi][np.isfinite(rd[qi])]
        if len(row_fin) == 0:
            continue
        boundary = row_fin[-1]
        must = set(ri[qi][(rd[qi] < boundary - 2 * tol)].tolist())
        assert must <= set(gi[qi].tolist())


BACKEND_NAMES = ["torch", "torch-f16", "wgpu", "wgpu-f16"]
SHAPES = [(1001, 17, 9), (300, 384, 5), (7, 17, 3)]  # odd sizes; the last has n < k


@pytest.mark.parametrize("name", BACKEND_NAMES)
@pytest.mark.parametrize("metric", list(Metric))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"n{s[0]}d{s[1]}")
def test_matches_numpy(name, metric, shape):
    backend = _backend(name)
    n, d, nq = shape
    rng = np.random.default_rng(n * 31 + d)
    unit = metric is Metric.COSINE
    x = clustered(rng, n, d, unit=unit)
    q = clustered(rng, nq, d, unit=unit)
    if name.endswith("f16"):
        # float16 storage (and, for torch on CUDA, float16 query operands): with inputs that
        # float16 holds exactly, the results must equal the float32 reference's
        x = x.astype(np.float16).astype(np.float32)
        q = q.astype(np.float16).astype(np.float32)
    valid = rng.random(n) < 0.6
    ref = NumpyBackend()
    for k in (1, 10, 100):
        for mask in (None, valid):
            got = backend.topk(q, x, k, metric, valid=mask)
            want = ref.topk(q, x, k, metric, valid=mask)
            assert_same_neighbours(got, want, q, x, metric, mask)


@pytest.mark.parametrize("name", ["torch", "wgpu"])
def test_resident_handle_and_implicit_cache(name):
    backend = _backend(name)
    rng = np.random.default_rng(5)
    x = clustered(rng, 513, 33)
    q = clustered(rng, 4, 33)
    want = NumpyBackend().topk(q, x, 10, Metric.L2)
    handle = backend.upload(x)
    assert_same_neighbours(backend.topk(q, handle, 10, Metric.L2), want, q, x, Metric.L2)
    frozen = x.copy()
    frozen.flags.writeable = False
    first = backend._block_for(frozen, None)
    assert backend._block_for(frozen, None) is first  # read-only arrays stay resident
    assert backend._block_for(x, None) is not backend._block_for(x, None)  # writable ones are re-sent
    assert_same_neighbours(backend.topk(q, frozen, 10, Metric.L2), want, q, x, Metric.L2)
    backend.clear_cache()


def test_wgpu_chunks_and_splits():
    pytest.importorskip("wgpu")
    adapter = _wgpu_adapter()
    if adapter is None:
        pytest.skip("no wgpu adapter")
    from m2m.compute.wgpu_backend import WgpuBackend

    # 24 KiB chunks of 40-dim (48 padded) float32 rows: 128 rows a chunk -> 12 chunks, several splits each
    backend = WgpuBackend(adapter, max_chunk_bytes=24 * 1024, target_workgroups=40)
    rng = np.random.default_rng(9)
    x = clustered(rng, 1500, 40)
    q = clustered(rng, 130, 40)  # two query tiles
    block = backend.upload(x)
    assert len(block.chunks) == 12
    valid = rng.random(1500) < 0.5
    for metric in Metric:
        got = backend.topk(q, block, 25, metric, valid=valid)
        want = NumpyBackend().topk(q, x, 25, metric, valid=valid)
        assert_same_neighbours(got, want, q, x, metric, valid)


@pytest.mark.parametrize("name", ["torch", "wgpu"])
def test_bad_input_raises_typed_errors(name):
    backend = _backend(name)
    x = np.ones((10, 4), dtype=np.float32)
    with pytest.raises(DimensionMismatchError):
        backend.topk(np.ones((2, 5), dtype=np.float32), x, 3, Metric.IP)
    with pytest.raises(InvalidArgumentError):
        backend.topk(np.ones((2, 4), dtype=np.float32), x, 0, Metric.IP)
    with pytest.raises(InvalidArgumentError):
        backend.topk(np.ones((2, 4), dtype=np.float32), x, 3, Metric.IP, valid=np.ones(9, dtype=bool))
    with pytest.raises(InvalidArgumentError):
        backend.topk(np.ones((2, 4), dtype=np.float32), x, 3, "hamming")


def test_all_masked_gives_padding():
    for name in ["torch", "wgpu"]:
        try:
            backend = _backend(name)
        except pytest.skip.Exception:
            continue
        x = np.random.default_rng(1).standard_normal((200, 8)).astype(np.float32)
        d, i = backend.topk(x[:3], x, 5, Metric.L2, valid=np.zeros(200, dtype=bool))
        assert np.isinf(d).all() and (i == -1).all()


# ---------------------------------------------------------------- the registry
@pytest.fixture
def fresh_registry():
    clear_backend_cache()
    yield
    clear_backend_cache()


def test_numpy_names_and_auto(fresh_registry):
    assert get_backend("numpy").name == "numpy"
    assert get_backend("cpu").name == "numpy"
    assert get_backend("numpy") is get_backend("numpy")  # cached
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto never warns
        backend = get_backend("auto")
    rng = np.random.default_rng(3)
    x = clustered(rng, 200, 16)
    assert_same_neighbours(
        backend.topk(x[:3], x, 5, Metric.IP), NumpyBackend().topk(x[:3], x, 5, Metric.IP), x[:3], x, Metric.IP
    )
    with pytest.raises(InvalidArgumentError):
        get_backend("tpu")


def test_missing_device_warns_once_and_falls_back(fresh_registry):
    # Metal is never present on Linux; DX12 never outside Windows.
    missing = "metal" if sys.platform != "darwin" else "dx12"
    with pytest.warns(RuntimeWarning, match=missing) as record:
        backend = get_backend(missing)
    assert len(record) == 1
    assert backend.name == "numpy"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert get_backend(missing) is backend  # cached: no second warning


def test_missing_torch_package_warns(fresh_registry, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    with pytest.warns(RuntimeWarning, match="'torch' package is not installed") as record:
        backend = get_backend("cuda")
    assert len(record) == 1 and backend.name == "numpy"


def test_missing_cuda_warns(fresh_registry):
    if not HAVE_TORCH or _cuda():
        pytest.skip("needs torch without CUDA")
    with pytest.warns(RuntimeWarning, match="CUDA") as record:
        assert get_backend("cuda").name == "numpy"
    assert len(record) == 1


def test_import_does_not_load_torch_or_wgpu():
    code = "import sys, m2m.compute; print('torch' in sys.modules, 'wgpu' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------- real GPUs
@pytest.mark.gpu
def test_torch_cuda_large():
    if not _cuda():
        pytest.skip("needs CUDA")
    from m2m.compute.torch_backend import TorchBackend

    backend = get_backend("cuda")
    assert isinstance(backend, TorchBackend) and backend.device.type == "cuda"
    rng = np.random.default_rng(11)
    x = clustered(rng, 50_000, 384, n_clusters=100, unit=True)
    q = clustered(rng, 64, 384, n_clusters=100, unit=True)
    valid = rng.random(50_000) < 0.7
    for metric in Metric:
        want = NumpyBackend().topk(q, x, 100, metric, valid=valid)
        assert_same_neighbours(backend.topk(q, x, 100, metric, valid=valid), want, q, x, metric, valid)


@pytest.mark.gpu
def test_wgpu_hardware_large():
    if _wgpu_adapter(hardware_only=True) is None:
        pytest.skip("needs a hardware wgpu adapter")
    from m2m.compute.wgpu_backend import WgpuBackend

    backend = WgpuBackend(_wgpu_adapter(hardware_only=True))
    rng = np.random.default_rng(12)
    x = clustered(rng, 50_000, 384, n_clusters=100, unit=True)
    q = clustered(rng, 300, 384, n_clusters=100, unit=True)
    valid = rng.random(50_000) < 0.7
    block = backend.upload(x)
    for metric in Metric:
        for k in (1, 10, 100):
            want = NumpyBackend().topk(q, x, k, metric, valid=valid)
            assert_same_neighbours(backend.topk(q, block, k, metric, valid=valid), want, q, x, metric, valid)
