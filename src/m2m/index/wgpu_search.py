"""HRM2 on a wgpu device (Vulkan, Metal, DX12): ``WgpuGPUSearch(index)`` puts a built index's
lists on the device through ``m2m.compute.wgpu_ivf.WgpuIVF`` and answers query batches with
WGSL kernels (routing with the fused brute-force top-k over the centroids, a scan of the
probed lists' float32 vectors, a per-query merge). wgpu is imported lazily.
"""

from __future__ import annotations

import time

import numpy as np

from m2m.errors import DimensionMismatchError, InvalidVectorError
from m2m.types import Metric


class WgpuGPUSearch:
    """HRM2 on a wgpu device (Vulkan, Metal, DX12) through ``m2m.compute.wgpu_ivf.WgpuIVF``:
    the probed lists' float32 vectors are scanned exactly, so the results equal
    ``GPUSearch(index, scan="exact")``'s (ties and routing near-ties aside). Routing scores
    ``q·(M_v r)`` with the codec's projection folded into the centroids (the same value as
    ``(q M_v)·r``); indexes that gate routing by coarse clusters route on the host instead."""

    def __init__(self, index, backend=None) -> None:
        from m2m.compute.wgpu_backend import WgpuBackend
        from m2m.compute.wgpu_ivf import WgpuIVF
        from m2m.memory.snapshot import snapshot_arrays

        t0 = time.perf_counter()
        self.index = index
        self.metric = index.metric
        self.alpha = 2.0 if self.metric is Metric.L2 else 1.0
        backend = backend if backend is not None else WgpuBackend()
        a = snapshot_arrays(index)
        route = np.asarray(index._route, dtype=np.float32)
        if index._route_qv:  # fold the codec's (linear) query projection into the centroids
            mv = np.asarray(index._codec.prepare(np.eye(index.dim, dtype=np.float32))[0], dtype=np.float32)
            route = route @ mv.reshape(index.dim, -1).T
        cbias = np.asarray(index._fine_bias_ext[:-1], dtype=np.float32) / np.float32(index._route_alpha)
        hbias = (a["bias"] / np.float32(self.alpha)).astype(np.float32)
        self.ivf = WgpuIVF(backend, route, cbias, a["vectors"], a["offsets"], hbias)
        self.slots = a["slots"].astype(np.int64)
        self.nbytes = self.ivf.nbytes
        self.upload_seconds = time.perf_counter() - t0

    def search(self, queries, k: int, *, n_probe: int | None = None, target_recall: float | None = None):
        """``(distances (m, k), slots (m, k))`` best first, padded ``inf`` / ``-1`` (NumPy)."""
        from m2m.index._search import _n_probe

        q = np.asarray(queries)
        if q.dtype.kind not in "fiu":
            raise InvalidVectorError(f"queries must be numeric, got dtype {q.dtype}")
        single = q.ndim == 1
        q = np.ascontiguousarray(np.atleast_2d(q), dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.index.dim:
            raise DimensionMismatchError(
                f"queries have shape {q.shape}, the index has dimension {self.index.dim}"
            )
        if not np.isfinite(q).all():
            raise InvalidVectorError("queries contain NaN or inf")
        npb = _n_probe(self.index, n_probe, target_recall)
        d, sl = self._run(q, k, npb)
        need = min(int(k), self.slots.shape[0])  # as the CPU index: short queries probe twice as many
        short = np.flatnonzero((sl >= 0).sum(1) < need)
        while short.size and npb < self.index.n_lists:
            npb = min(self.index.n_lists, 2 * npb)
            d[short], sl[short] = self._run(q[short], k, npb)
            short = short[(sl[short] >= 0).sum(1) < need]
        return (d[0], sl[0]) if single else (d, sl)

    def _run(self, q, k, npb):
        from m2m.index._layout import coarse_probe
        from m2m.index._search import route_batch

        lists = None
        if coarse_probe(self.index, npb) < self.index._coarse.shape[0]:
            lists = route_batch(self.index, q, npb)
        keys, rows = self.ivf.search(q, k, npb, lists=lists)
        d = self.alpha * keys
        if self.metric is Metric.L2:
            d = np.maximum(d + np.einsum("ij,ij->i", q, q)[:, None], 0.0)
        elif self.metric is Metric.COSINE:
            d = d + 1.0
        ok = rows >= 0
        return np.where(ok, d, np.inf).astype(np.float32), np.where(ok, self.slots[np.where(ok, rows, 0)], -1)
