"""Hot tier: the most frequently probed lists resident on the GPU, under a byte budget.

A list part is promoted when its access frequency (the warm cache's aged counter) reaches
``promote_after`` and it beats the least frequent resident part (evicted to make room);
the promotion copies the warm tier's array once (``torch.from_numpy(...).to(device)``).
``get`` returns the device tensor or None; ``TieredGPUSearch`` (below) scores a batch against
hot lists in place and uploads the others from the warm/cold tiers for the batch only
(counted as hot misses and bytes moved). torch is imported lazily.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from m2m.errors import InvalidArgumentError


def resolve_device(name: str) -> Any | None:
    """torch device for a ``TierConfig.device`` ("auto": CUDA when present, else None)."""
    if name == "none":
        return None
    try:
        import torch
    except ImportError:
        if name == "auto":
            return None
        raise
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else None
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidArgumentError(f"TierConfig.device={name!r} but torch sees no CUDA device")
    return torch.device(name)


class HotTier:
    """Frequency-promoted, byte-budgeted device copies of list parts (keys ``(list, part)``)."""

    def __init__(self, store, device, budget_bytes: int, *, promote_after: int = 2) -> None:
        self.store = store
        self.device = device
        self.budget = int(budget_bytes)
        self.promote_after = int(promote_after)
        self._resident: dict[tuple[int, int], tuple[Any, int]] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.promotions = 0
        self.evictions = 0
        self.bytes_moved = 0
        self.time_s = 0.0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: tuple[int, int]) -> Any | None:
        with self._lock:
            hit = self._resident.get(key)
            if hit is None:
                self.misses += 1
                return None
            self.hits += 1
            return hit[0]

    def offer(self, key: tuple[int, int], array) -> Any:
        """Device tensor for ``array`` (list part ``key``): promoted and kept when frequent
        enough and it fits, else a transient upload. Either way the bytes moved are counted."""
        import torch

        t0 = time.perf_counter()
        tensor = torch.tensor(array, device=self.device)  # a copy: warm arrays are read-only
        n = int(array.nbytes)
        freq = self.store.warm.frequency(key)
        with self._lock:
            self.bytes_moved += n
            if n <= self.budget and freq >= self.promote_after and key not in self._resident:
                while self._bytes + n > self.budget:
                    victim = min(self._resident, key=lambda k: self.store.warm.frequency(k), default=None)
                    if victim is None or self.store.warm.frequency(victim) >= freq:
                        break
                    self._bytes -= self._resident.pop(victim)[1]
                    self.evictions += 1
                if self._bytes + n <= self.budget:
                    self._resident[key] = (tensor, n)
                    self._bytes += n
                    self.promotions += 1
            self.time_s += time.perf_counter() - t0
        return tensor

    def clear(self) -> None:
        with self._lock:
            self._resident.clear()
            self._bytes = 0

    def stats(self) -> dict:
        return {
            "device": str(self.device),
            "budget_bytes": self.budget,
            "resident_bytes": self._bytes,
            "entries": len(self._resident),
            "hits": self.hits,
            "misses": self.misses,
            "promotions": self.promotions,
            "evictions": self.evictions,
            "bytes_moved": self.bytes_moved,
            "time_s": self.time_s,
        }


class TieredGPUSearch:
    """Exact scan of the probed lists on the torch device, list vectors from the tiers.

    Routing runs on the CPU (centroids are in RAM); each probed list's vectors come from the
    hot tier when resident, else from the warm/cold tiers, uploaded for this batch (and
    promoted when frequent: ``HotTier.offer``). Every list is scored against all the queries
    probing it with one matrix product; the result is the exact top-k over the probed lists,
    the same as ``GPUSearch(index, scan="exact")``. Meant for indexes larger than the GPU:
    the device holds ``hot_bytes`` of lists plus one batch's transient uploads.
    """

    def __init__(self, tiered) -> None:
        if tiered.hot is None:
            raise InvalidArgumentError(
                "TieredGPUSearch needs a hot tier: TierConfig(hot_bytes > 0) and a device"
            )
        import torch

        self.torch = torch
        self.tiered = tiered
        self.hot = tiered.hot
        self.device = tiered.hot.device

    def search(self, queries, k: int, *, n_probe: int | None = None, target_recall: float | None = None):
        """``(distances (m, k), slots (m, k))`` NumPy arrays, best first, padded inf / -1."""
        from m2m.index import _search
        from m2m.memory.cold_store import VECTORS
        from m2m.types import Metric

        torch = self.torch
        ix = self.tiered.index
        store = self.tiered.store
        qs, single = _search._queries(ix, queries)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidArgumentError(f"k must be a positive int, got {k!r}")
        k = int(k)
        npb = _search._n_probe(ix, n_probe, target_recall)
        m = qs.shape[0]
        lists = _search.route_batch(ix, qs, npb).ravel()
        pair_q = np.repeat(np.arange(m), npb)
        keep = lists < ix.n_lists
        lists, pair_q = lists[keep], pair_q[keep]
        order = np.argsort(lists, kind="stable")
        lists, pair_q = lists[order], pair_q[order]
        bounds = np.flatnonzero(np.diff(lists)) + 1
        starts = np.concatenate(([0], bounds)).tolist()
        ends = np.concatenate((bounds, [lists.size])).tolist()
        q = torch.from_numpy(qs).to(self.device)
        l2 = ix.metric is Metric.L2
        const = (
            (q * q).sum(1)
            if l2
            else torch.full((m,), 1.0 if ix.metric is Metric.COSINE else 0.0, device=self.device)
        )
        alpha = 2.0 if l2 else 1.0
        cd, cq, cs = [], [], []
        for a, b in zip(starts, ends, strict=True):
            j = int(lists[a])
            lo, hi = int(ix._offsets[j]), int(ix._offsets[j + 1])
            if hi <= lo:
                continue
            key = (j, VECTORS)
            store.warm.touch(key)
            x = self.hot.get(key)
            if x is None:
                x = self.hot.offer(key, store.part(j, VECTORS, touch=False))
            qi = torch.from_numpy(pair_q[a:b]).to(self.device)
            d = -alpha * (q[qi] @ x.T) + torch.from_numpy(ix._bias[lo:hi]).to(self.device) + const[qi, None]
            if l2:
                d = d.clamp_min(0.0)
            kk = min(k, hi - lo)
            vals, pos = torch.topk(d, kk, dim=1, largest=False)
            cd.append(vals.reshape(-1).cpu().numpy())
            cq.append(np.repeat(pair_q[a:b], kk))
            cs.append(ix._slots[lo:hi][pos.cpu().numpy()].reshape(-1))
        out_d = np.full((m, k), np.inf, dtype=np.float32)
        out_s = np.full((m, k), -1, dtype=np.int64)
        if cd:
            d_all, q_all, s_all = np.concatenate(cd), np.concatenate(cq), np.concatenate(cs)
            o = np.lexsort((d_all, q_all))
            d_all, q_all, s_all = d_all[o], q_all[o], s_all[o]
            first = np.searchsorted(q_all, np.arange(m))
            rank = np.arange(q_all.size) - first[q_all]
            ok = rank < k
            out_d[q_all[ok], rank[ok]] = d_all[ok]
            out_s[q_all[ok], rank[ok]] = s_all[ok]
        return (out_d[0], out_s[0]) if single else (out_d, out_s)
