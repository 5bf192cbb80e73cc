"""Compute backends: score vector blocks against queries and keep the top k.

``get_backend(device)`` returns a cached backend that follows the ``ComputeBackend``
protocol (``m2m.compute.base``). NumPy is always there; the torch (CUDA/MPS/CPU) and wgpu
(Vulkan/Metal/DX12, WGSL kernels) backends are optional and imported only when asked for,
so ``import m2m.compute`` never imports torch or wgpu.

Device names:

- ``"numpy"``, ``"cpu"``: the NumPy reference.
- ``"torch"`` (best torch device: CUDA > MPS > CPU), ``"cuda"``, ``"mps"``.
- ``"wgpu"`` (any adapter, software ones included), ``"vulkan"``, ``"metal"``, ``"dx12"``.
- ``"auto"``: torch on CUDA, else a hardware wgpu adapter, else NumPy.

An explicit device that is not available falls back to NumPy with one warning naming what
is missing.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import warnings

import numpy as np

from m2m.compute.base import ComputeBackend
from m2m.compute.numpy_backend import NumpyBackend
from m2m.errors import DimensionMismatchError, InvalidArgumentError, InvalidVectorError
from m2m.types import Metric

__all__ = [
    "ComputeBackend",
    "NumpyBackend",
    "available_devices",
    "check_topk_args",
    "clear_backend_cache",
    "get_backend",
]

logger = logging.getLogger(__name__)

_ALIASES: dict[str, tuple[str, str | None]] = {
    "numpy": ("numpy", None),
    "cpu": ("numpy", None),
    "torch": ("torch", None),
    "cuda": ("torch", "cuda"),
    "mps": ("torch", "mps"),
    "wgpu": ("wgpu", None),
    "vulkan": ("wgpu", "vulkan"),
    "metal": ("wgpu", "metal"),
    "dx12": ("wgpu", "d3d12"),
    "auto": ("auto", None),
}

_cache: dict[str, ComputeBackend] = {}
_lock = threading.Lock()


def check_topk_args(
    queries: np.ndarray,
    n_vectors: int,
    dim: int,
    k: int,
    metric: Metric | str,
    valid: np.ndarray | None,
) -> tuple[np.ndarray, int, Metric, np.ndarray | None]:
    """Validate a ``topk`` call; return ``(queries as 2-D float32, k, Metric, valid as bool)``.

    Shared by the GPU backends so that they reject bad input with the same typed errors.
    """
    metric = Metric.parse(metric)
    q = np.asarray(queries)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2:
        raise InvalidVectorError(f"queries must be 1-D or 2-D, got shape {q.shape}")
    if q.shape[1] != dim:
        raise DimensionMismatchError(f"queries have dimension {q.shape[1]}, vectors have {dim}")
    if not np.issubdtype(q.dtype, np.number):
        raise InvalidVectorError(f"queries must be numeric, got dtype {q.dtype}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidArgumentError(f"k must be a positive integer, got {k!r}")
    if valid is not None:
        valid = np.asarray(valid)
        if valid.dtype != np.bool_ or valid.shape != (n_vectors,):
            raise InvalidArgumentError(
                f"valid must be a boolean mask of shape ({n_vectors},), got {valid.dtype} {valid.shape}"
            )
    return np.ascontiguousarray(q, dtype=np.float32), int(k), metric, valid


def _torch_backend(kind: str | None) -> tuple[ComputeBackend | None, str]:
    if importlib.util.find_spec("torch") is None:
        return None, "the 'torch' package is not installed (pip install 'm2m-vector-search[torch]')"
    from m2m.compute.torch_backend import TorchBackend, torch_device_available

    if kind is not None and not torch_device_available(kind):
        return None, f"torch is installed but reports no {kind.upper()} device"
    try:
        return TorchBackend(device=kind), ""
    except Exception as exc:  # a broken driver install: report, fall back
        return None, f"torch backend failed to start: {exc}"


def _wgpu_backend(kind: str | None, *, hardware_only: bool) -> tuple[ComputeBackend | None, str]:
    if importlib.util.find_spec("wgpu") is None:
        return None, "the 'wgpu' package is not installed (pip install 'm2m-vector-search[wgpu]')"
    from m2m.compute.wgpu_backend import WgpuBackend, find_adapter

    adapter, why = find_adapter(backend_type=kind, hardware_only=hardware_only)
    if adapter is None:
        return None, why
    try:
        return WgpuBackend(adapter=adapter), ""
    except Exception as exc:
        return None, f"wgpu backend failed to start on {adapter.info.get('device')!r}: {exc}"


def _make(device: str) -> ComputeBackend:
    family, kind = _ALIASES[device]
    if family == "numpy":
        return NumpyBackend()
    if family == "auto":
        if importlib.util.find_spec("torch") is not None:
            backend, _ = _torch_backend("cuda")
            if backend is not None:
                return backend
        backend, _ = _wgpu_backend(None, hardware_only=True)
        if backend is not None:
            return backend
        return NumpyBackend()
    if family == "torch":
        backend, why = _torch_backend(kind)
    else:
        backend, why = _wgpu_backend(kind, hardware_only=False)
    if backend is None:
        warnings.warn(
            f"compute device {device!r} is not available ({why}); falling back to the NumPy backend",
            RuntimeWarning,
            stacklevel=3,
        )
        return NumpyBackend()
    return backend


def get_backend(device: str = "auto") -> ComputeBackend:
    """Return the (cached) compute backend for ``device``; see the module docstring for names."""
    if not isinstance(device, str) or device.lower() not in _ALIASES:
        names = ", ".join(sorted(_ALIASES))
        raise InvalidArgumentError(f"unknown compute device {device!r}; choose one of {names}")
    device = device.lower()
    with _lock:
        backend = _cache.get(device)
        if backend is None:
            backend = _make(device)
            _cache[device] = backend
            logger.info("compute device %r -> backend %s", device, backend.name)
        return backend


def clear_backend_cache() -> None:
    """Forget cached backends (their device memory is freed when nothing else holds them)."""
    with _lock:
        _cache.clear()


def available_devices() -> list[str]:
    """Names of the backends that can start here (imports torch/wgpu to check)."""
    out = ["numpy"]
    if _torch_backend(None)[0] is not None:
        out.append("torch")
    if _wgpu_backend(None, hardware_only=False)[0] is not None:
        out.append("wgpu")
    return out
