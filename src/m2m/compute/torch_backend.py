"""The torch backend: one matrix product per vector chunk and ``torch.topk``, on CUDA, MPS or CPU.

Vector blocks can be made resident on the device with ``upload`` (the memory tier keeps its
hot lists there); ``topk`` takes either a NumPy array or such a handle. Read-only NumPy arrays
are also cached implicitly (by buffer address, shape and dtype, keeping a reference so the
address cannot be reused); writable arrays are copied for each call, since they may change.

Storage is float32 by default; float16/bfloat16 storage halves device memory and, on CUDA,
runs the product on the tensor cores with the queries rounded to the storage type and float32
accumulation and output (``torch.mm(..., out_dtype=float32)``; where that is missing the block
is widened to float32 chunk by chunk). torch is imported only when this module is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from m2m._optional import require
from m2m.compute import check_topk_args
from m2m.compute.upload_cache import UploadCache
from m2m.errors import InvalidArgumentError, InvalidVectorError
from m2m.types import Metric

torch = require("torch", "torch")

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def torch_device_available(kind: str) -> bool:
    """True when torch can use device ``kind`` ("cuda", "mps" or "cpu")."""
    if kind == "cuda":
        return bool(torch.cuda.is_available())
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        return bool(mps is not None and mps.is_available())
    return kind == "cpu"


@dataclass
class TorchBlock:
    """A block of vectors resident on the torch device (returned by ``TorchBackend.upload``)."""

    vectors: Any  # torch.Tensor (n, d) in the storage dtype
    sq_norms: Any  # torch.Tensor (n,) float32: ||x||², for l2
    n: int
    dim: int

    @property
    def nbytes(self) -> int:
        return int(self.vectors.element_size() * self.vectors.nelement() + 4 * self.n)


class TorchBackend:
    """Brute-force top-k with torch; ``device`` None picks CUDA, then MPS, then CPU."""

    name = "torch"

    def __init__(
        self,
        device: str | None = None,
        *,
        dtype: str = "float32",
        max_score_elements: int = 1 << 28,
        cache_bytes: int = 4 << 30,
    ) -> None:
        if device is None:
            device = next(d for d in ("cuda", "mps", "cpu") if torch_device_available(d))
        if not torch_device_available(device.split(":")[0]):
            raise InvalidArgumentError(f"torch device {device!r} is not available")
        if dtype not in _DTYPES:
            raise InvalidArgumentError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        self.device = torch.device(device)
        self.dtype = _DTYPES[dtype]
        self.max_score_elements = int(max_score_elements)
        self.cache_bytes = int(cache_bytes)
        self._cache: UploadCache[TorchBlock] = UploadCache(self.cache_bytes)
        self.name = f"torch-{self.device.type}"
        self._mm_out_f32 = False  # half inputs, float32 output, in one product
        if self.dtype != torch.float32 and self.device.type != "cpu":
            try:
                a = torch.ones(2, 2, dtype=self.dtype, device=self.device)
                self._mm_out_f32 = torch.mm(a, a, out_dtype=torch.float32).dtype == torch.float32
            except (TypeError, RuntimeError, NotImplementedError):
                self._mm_out_f32 = False

    # ------------------------------------------------------------------ residency
    def upload(self, vectors: np.ndarray, *, sq_norms: np.ndarray | None = None) -> TorchBlock:
        """Copy ``vectors`` (n, d) to the device once; pass the handle to ``topk`` instead of the array."""
        arr = np.asarray(vectors)
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
            raise InvalidVectorError(f"vectors must be a numeric 2-D array, got {arr.dtype} {arr.shape}")
        x32 = torch.from_numpy(np.array(arr, dtype=np.float32, order="C", copy=True))
        if sq_norms is None:
            norms = (x32 * x32).sum(dim=1)
        else:
            norms = torch.from_numpy(np.array(sq_norms, dtype=np.float32, copy=True))
        x = x32.to(self.device, non_blocking=False).to(self.dtype)
        return TorchBlock(x, norms.to(self.device), int(arr.shape[0]), int(arr.shape[1]))

    def _block_for(self, vectors: np.ndarray | TorchBlock, sq_norms: np.ndarray | None) -> TorchBlock:
        if isinstance(vectors, TorchBlock):
            return vectors
        return self._cache.get(np.asarray(vectors), sq_norms, lambda a, n: self.upload(a, sq_norms=n))

    def clear_cache(self) -> None:
        """Drop implicitly cached device copies."""
        self._cache.clear()

    # ------------------------------------------------------------------ search
    def topk(
        self,
        queries: np.ndarray,
        vectors: np.ndarray | TorchBlock,
        k: int,
        metric: Metric,
        *,
        vector_sq_norms: np.ndarray | None = None,
        valid: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k (see ``ComputeBackend.topk``); ``vectors`` may be an uploaded ``TorchBlock``."""
        if isinstance(vectors, TorchBlock):
            n, dim = vectors.n, vectors.dim
        else:
            vectors = np.asarray(vectors)
            if vectors.ndim != 2:
                raise InvalidVectorError(f"vectors must be 2-D, got shape {vectors.shape}")
            n, dim = vectors.shape
        q, k, metric, valid = check_topk_args(queries, n, dim, k, metric, valid)
        nq = q.shape[0]
        out_d = np.full((nq, k), np.inf, dtype=np.float32)
        out_i = np.full((nq, k), -1, dtype=np.int64)
        if n == 0 or nq == 0:
            return out_d, out_i
        block = self._block_for(vectors, vector_sq_norms if metric is Metric.L2 else None)
        vals, idx = self.topk_device(torch.from_numpy(q).to(self.device), block, min(k, n), metric, valid)
        vals = vals.cpu().numpy()
        idx = idx.cpu().numpy()
        finite = np.isfinite(vals)
        out_d[:, : vals.shape[1]] = np.where(finite, vals, np.inf)
        out_i[:, : vals.shape[1]] = np.where(finite, idx, -1)
        return out_d, out_i

    @torch.no_grad()
    def topk_device(self, q: Any, block: TorchBlock, k: int, metric: Metric, valid: np.ndarray | None):
        """Top-k on device tensors: ``q`` (nq, d) float32 on ``self.device``; returns (distances, indices)."""
        n = block.n
        nq = q.shape[0]
        compute_dtype = self.dtype if self._mm_out_f32 else torch.float32
        qc = q.to(compute_dtype)
        mask = None
        if valid is not None:
            mask = torch.from_numpy(~valid).to(self.device)
        chunk = max(k, min(n, self.max_score_elements // max(nq, 1)))
        cand_v, cand_i = [], []
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            x = block.vectors[start:stop]
            if x.dtype != compute_dtype:
                x = x.to(compute_dtype)
            if compute_dtype == torch.float32:
                if metric is Metric.L2:
                    # keys = ||x||² - 2 q·x, smallest first (||q||² is added after the selection)
                    scores = torch.addmm(block.sq_norms[start:stop][None, :], qc, x.T, alpha=-2.0)
                else:
                    scores = qc @ x.T  # largest dot first
            else:
                scores = torch.mm(qc, x.T, out_dtype=torch.float32)
                if metric is Metric.L2:
                    scores.mul_(-2.0).add_(block.sq_norms[start:stop][None, :])
            fill, largest = (float("inf"), False) if metric is Metric.L2 else (float("-inf"), True)
            if mask is not None:
                scores.masked_fill_(mask[start:stop][None, :], fill)
            kk = min(k, stop - start)
            v, i = torch.topk(scores, kk, dim=1, largest=largest, sorted=True)
            cand_v.append(v)
            cand_i.append(i + start)
            del scores
        if len(cand_v) == 1:
            vals, idx = cand_v[0], cand_i[0]
        else:
            allv, alli = torch.cat(cand_v, dim=1), torch.cat(cand_i, dim=1)
            vals, pos = torch.topk(allv, k, dim=1, largest=largest, sorted=True)
            idx = torch.gather(alli, 1, pos)
        if metric is Metric.COSINE:
            dist = 1.0 - vals
        elif metric is Metric.IP:
            dist = -vals
        else:
            dist = torch.clamp(vals + (q * q).sum(dim=1, keepdim=True), min=0.0)
        return dist[:nq], idx[:nq]
