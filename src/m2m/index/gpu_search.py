"""HRM2 search on a torch device (CUDA; CPU torch for tests): batches of queries as a few
batched matrix products over device-resident lists.

``GPUSearch(index)`` copies a built ``HRM2Index``'s arrays to the device once: coarse and
fine centroids (the routing matrices), the LOD 1 codes cut into fixed-size *blocks* of
``block_rows`` rows (each list is a run of blocks; the last block of a list is padded and
its padding rows score ``-inf``), the float32 vectors, per-row biases and slots.

A batch of ``m`` queries is answered with the same three steps as ``HRM2Index.search``:

1. route: fine (and, for large indexes, coarse) centroid scores as one matrix product, the
   ``n_probe`` nearest lists per query with ``torch.topk``;
2. LOD 1: the (query, block) pairs are grouped *by block* (inverted: for each block, the
   queries that probe it); blocks are bucketed by how many queries probe them (powers of
   two) and every bucket is one ``torch.bmm`` of (blocks, queries, code_dim) by (blocks,
   code_dim, block_rows). Scores land in a per-query (m, blocks probed, block_rows) buffer
   and ``torch.topk`` keeps ``rerank * k`` candidates;
3. LOD 2: the candidates' float32 vectors are gathered and re-ranked exactly; ``topk`` k.

Distances follow the index (cosine ``1 - q·x``, ip ``-q·x``, l2 ``||q - x||²``). The results
equal ``HRM2Index.search`` at the same ``n_probe`` (same ids; distances to float32 rounding),
except where float rounding reorders near-ties at the routing or LOD 1 cut-offs.

``scan="exact"`` scans the float32 vectors instead of the codes (3x the bytes at the default
``code_dim = d/3``) and needs no re-rank: the result is the exact top-k over the probed lists,
which is what LOD 2 converges to as ``rerank`` grows. It is the mode to use when the codes'
approximation, not n_probe, limits recall (e.g. near-isotropic data, where a PCA truncation
keeps little of each vector).
``allowed`` filters rows inside the probed lists (no adaptive n_probe as the CPU path has).
torch is imported lazily (``m2m._optional.require``).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from m2m._optional import require
from m2m.errors import DimensionMismatchError, InvalidArgumentError, InvalidVectorError
from m2m.types import Metric


class GPUSearch:
    """Device-resident HRM2 search for query batches; see the module docstring."""

    def __init__(
        self,
        index,
        *,
        device: str | None = None,
        block_rows: int = 128,
        bucketed: bool = True,
        scan: str = "codes",
    ) -> None:
        torch = require("torch", "torch")
        from m2m.memory.snapshot import snapshot_arrays

        self.torch = torch
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.index = index
        self.metric = index.metric
        self.dim = index.dim
        self.n_lists = index.n_lists
        self.rerank = int(index.params.rerank)
        self.block_rows = int(block_rows)
        self.bucketed = bool(bucketed)
        if scan not in ("codes", "exact"):
            raise InvalidArgumentError(f"scan must be 'codes' or 'exact', got {scan!r}")
        self.scan = scan
        self.alpha = 2.0 if self.metric is Metric.L2 else 1.0
        self.route_alpha = float(index._route_alpha)
        t0 = time.perf_counter()
        a = snapshot_arrays(index)
        dev = self.device

        def put(x, dtype=None):
            t = torch.from_numpy(np.ascontiguousarray(x))
            return t.to(dev, dtype=dtype) if dtype is not None else t.to(dev)

        codec = index._codec
        self.codec = codec.name
        if codec.name == "pca":
            self.c_axes = put(codec.axes)  # qv = q @ axes, qc = q @ mean
            self.c_mean = put(codec.mean)
        else:  # sq8: qv = q * scale, qc = q @ (lo + 128 scale)
            self.c_scale = put(codec.scale)
            self.c_shift = put(codec.lo + 128.0 * codec.scale)
        self.route_qv = bool(index._route_qv)
        self.route_mat = put(index._route)
        self.fine_bias = put(index._fine_bias_ext[:-1])
        self.coarse = put(index._coarse)
        self.coarse_bias = put(index._coarse_bias)
        self.coarse_of_fine = put(index._coarse_of_fine)

        offsets = a["offsets"].astype(np.int64)
        sizes = np.diff(offsets)
        S = self.block_rows
        nblk = -(-sizes // S)  # blocks per list
        blk_start = np.concatenate(([0], np.cumsum(nblk))).astype(np.int64)
        n_blocks = int(blk_start[-1])
        block_list = np.repeat(np.arange(self.n_lists), nblk)
        first = offsets[block_list] + S * (np.arange(n_blocks) - blk_start[block_list])
        rows = first[:, None] + np.arange(S)[None, :]
        valid = rows < offsets[block_list + 1][:, None]
        rows = np.where(valid, rows, 0)
        codes = a["codes"].astype(np.float32, copy=False) if scan == "codes" else a["vectors"]
        hbias = (a["bias"] / np.float32(self.alpha)).astype(np.float32)
        self.codes_blk = put(codes[rows])  # (n_blocks, S, code_dim)
        self.hbias_blk = put(np.where(valid, hbias[rows], np.float32(np.inf)).astype(np.float32))
        self.rows_blk = put(rows)
        self.valid_blk = put(valid)
        self.nblk = put(np.append(nblk, 0))  # the dummy list n_lists has no blocks
        self.blk_start = put(np.append(blk_start[:-1], 0))
        self.n_blocks = n_blocks
        self.vecs = put(a["vectors"]) if scan == "codes" else None  # exact: the blocks hold them
        self.bias = put(a["bias"])
        self.slots = put(a["slots"].astype(np.int64))
        self.slots_np = a["slots"].astype(np.int64)
        self.max_slot = int(self.slots_np.max()) if self.slots_np.size else 0
        self.upload_seconds = time.perf_counter() - t0

    # ---- helpers ------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        ts = [self.codes_blk, self.hbias_blk, self.rows_blk, self.valid_blk, self.bias, self.slots,
              self.route_mat, self.coarse] + ([self.vecs] if self.vecs is not None else [])  # fmt: skip
        return int(sum(t.element_size() * t.nelement() for t in ts))

    def _prepare(self, q):
        if self.scan == "exact":  # scanned "codes" are the vectors themselves
            return q, None
        return self._prepare_codec(q)

    def _prepare_codec(self, q):
        if self.codec == "pca":
            return q @ self.c_axes, q @ self.c_mean
        return q * self.c_scale, q @ self.c_shift

    def _queries(self, queries) -> tuple[Any, bool]:
        torch = self.torch
        if isinstance(queries, torch.Tensor):
            q = queries.to(self.device, torch.float32)
        else:
            arr = np.asarray(queries)
            if arr.dtype.kind not in "fiu":
                raise InvalidVectorError(f"queries must be numeric, got dtype {arr.dtype}")
            q = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).to(self.device)
        single = q.ndim == 1
        if single:
            q = q[None, :]
        if q.ndim != 2:
            raise InvalidVectorError(f"queries must be 1-D or 2-D, got shape {tuple(q.shape)}")
        if q.shape[1] != self.dim:
            raise DimensionMismatchError(f"queries have dimension {q.shape[1]}, the index has {self.dim}")
        if not bool(torch.isfinite(q).all()):
            raise InvalidVectorError("queries contain NaN or inf")
        return q.contiguous(), single

    def route(self, q, n_probe: int):
        """``(m, n_probe)`` probed lists per query; ``n_lists`` (the dummy) marks none."""
        from m2m.index._search import coarse_probe

        torch = self.torch
        rq = self._prepare_codec(q)[0] if self.route_qv else q
        fd = rq @ self.route_mat.T
        fd.mul_(-self.route_alpha).add_(self.fine_bias)
        nc = self.coarse.shape[0]
        cp = coarse_probe(self.index, n_probe)
        if cp < nc:
            cd = q @ self.coarse.T
            cd.mul_(-self.route_alpha).add_(self.coarse_bias)
            top = torch.topk(cd, cp, dim=1, largest=False).indices
            chosen = torch.zeros(q.shape[0], nc, dtype=torch.bool, device=self.device)
            chosen.scatter_(1, top, True)
            fd.masked_fill_(~chosen[:, self.coarse_of_fine], float("inf"))
        vals, lists = torch.topk(fd, n_probe, dim=1, largest=False)
        return lists.masked_fill_(~torch.isfinite(vals), self.n_lists)

    # ---- search -------------------------------------------------------------------------
    def search(
        self,
        queries,
        k: int,
        *,
        n_probe: int | None = None,
        lod: int = 2,
        allowed: np.ndarray | None = None,
        target_recall: float | None = None,
        chunk: int = 1024,
        numpy: bool = True,
    ):
        """``(distances (m, k), slots (m, k))`` best first, padded ``inf`` / ``-1``; NumPy
        arrays (``numpy=False``: device tensors)."""
        from m2m.index._search import _n_probe

        torch = self.torch
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidArgumentError(f"k must be a positive int, got {k!r}")
        if lod not in (1, 2):
            raise InvalidArgumentError(f"the GPU path serves lod 1 and 2, got {lod!r}")
        k = int(k)
        npb = _n_probe(self.index, n_probe, target_recall)
        q, single = self._queries(queries)
        pen = None
        if allowed is not None:
            a = np.asarray(allowed)
            if a.dtype != np.bool_ or a.ndim != 1:
                raise InvalidArgumentError("allowed must be a 1-D bool mask indexed by slot")
            ok = np.zeros(self.slots_np.shape[0], dtype=bool)
            inside = self.slots_np < a.shape[0]
            ok[inside] = a[self.slots_np[inside]]
            okt = torch.from_numpy(ok).to(self.device)
            pen = torch.where(okt[self.rows_blk] & self.valid_blk, 0.0, float("inf")).to(torch.float32)
        outs_d, outs_s = [], []
        with torch.no_grad():
            for s in range(0, q.shape[0], chunk):
                d, sl = self._search_chunk(q[s : s + chunk], k, npb, lod, pen)
                outs_d.append(d)
                outs_s.append(sl)
            d = torch.cat(outs_d) if outs_d else torch.empty(0, k, device=self.device)
            sl = torch.cat(outs_s) if outs_s else torch.empty(0, k, dtype=torch.int64, device=self.device)
            if pen is None:
                d, sl = self._top_up(q, k, npb, lod, d, sl)
        if numpy:
            d, sl = d.cpu().numpy(), sl.cpu().numpy()
        return (d[0], sl[0]) if single else (d, sl)

    def _top_up(self, q, k, npb, lod, d, sl):
        """As ``HRM2Index.search``: queries short of ``min(k, n)`` results are searched again
        with twice the probes, at last exhaustively."""
        torch = self.torch
        need = min(k, int(self.slots.shape[0]))
        short = torch.nonzero((sl >= 0).sum(1) < need, as_tuple=True)[0]
        while short.numel() and npb < self.n_lists:
            npb = min(self.n_lists, npb * 2)
            if lod == 2 and npb >= self.n_lists:
                d2, s2 = self._exhaustive(q[short], k)
            else:
                d2, s2 = self._search_chunk(q[short], k, npb, lod, None)
            d[short], sl[short] = d2, s2
            short = short[(s2 >= 0).sum(1) < need]
        return d, sl

    def _exhaustive(self, q, k):
        """Exact top-k over every row (what probing every list at LOD 2 amounts to)."""
        torch = self.torch
        if self.vecs is not None:
            x, bias, slots = self.vecs, self.bias, self.slots
        else:  # exact mode: the blocks hold the vectors; padding rows have an inf bias
            x = self.codes_blk.reshape(-1, self.dim)
            bias = (self.hbias_blk * self.alpha).reshape(-1)
            slots = self.slots[self.rows_blk.reshape(-1)]
        d = -self.alpha * (q @ x.T) + bias
        if self.metric is Metric.L2:
            d = (d + (q * q).sum(1, keepdim=True)).clamp_min(0.0)
        elif self.metric is Metric.COSINE:
            d += 1.0
        kk = min(k, d.shape[1])
        vals, pos = torch.topk(d, kk, dim=1, largest=False)
        out = slots[pos].masked_fill(~torch.isfinite(vals), -1)
        if kk < k:
            m = q.shape[0]
            vals = torch.cat([vals, torch.full((m, k - kk), float("inf"), device=self.device)], 1)
            out = torch.cat([out, torch.full((m, k - kk), -1, dtype=torch.int64, device=self.device)], 1)
        return vals, out

    def _scan(self, qv, lists, pen):
        """LOD 1 similarities ``qv·code - bias/alpha`` of every probed row: ``(buf (m, W, S),
        blkmap (m, W))`` where ``blkmap`` names the block behind each of a query's W slots."""
        torch = self.torch
        dev = self.device
        m = qv.shape[0]
        S = self.block_rows
        nb = self.nblk[lists]  # (m, n_probe)
        per_q = nb.sum(1)
        W = max(1, int(per_q.max()))
        flat_nb = nb.reshape(-1)
        P = int(flat_nb.sum())
        buf = torch.full((m, W, S), float("-inf"), device=dev)
        blkmap = torch.zeros((m, W), dtype=torch.int64, device=dev)
        if P == 0:
            return buf, blkmap
        ar = torch.arange(P, device=dev)
        pair_first = torch.cumsum(flat_nb, 0) - flat_nb
        pair_blk = torch.repeat_interleave(self.blk_start[lists].reshape(-1), flat_nb, output_size=P)
        pair_blk += ar - torch.repeat_interleave(pair_first, flat_nb, output_size=P)
        pair_q = torch.repeat_interleave(torch.arange(m, device=dev), per_q, output_size=P)
        q_first = torch.cumsum(per_q, 0) - per_q
        pair_pos = ar - q_first[pair_q]
        blkmap[pair_q, pair_pos] = pair_blk
        # invert: group pairs by block; rank = a pair's index among its block's queries
        order = torch.argsort(pair_blk, stable=True)
        sb = pair_blk[order]
        counts = torch.bincount(sb, minlength=self.n_blocks)
        blk_first = torch.cumsum(counts, 0) - counts
        rank = torch.arange(P, device=dev) - blk_first[sb]
        sq, spos = pair_q[order], pair_pos[order]
        qv_pad = torch.cat([qv, torch.zeros(1, qv.shape[1], device=dev, dtype=qv.dtype)])
        # levels of ranks: level (lo, cap) scores, for every block probed by more than lo
        # queries, its queries of rank lo .. lo + cap - 1 with one bmm; cap ~ twice the mean
        # remaining count, so little padding; a level touching most blocks reads the resident
        # block tensor in place instead of gathering it
        counts_max = int(counts.max())
        levels = []
        if self.bucketed:
            lo, remaining = 0, P
            while lo < counts_max:
                n_act = int((counts > lo).sum())
                cap = 1 << max(0, math.ceil(math.log2(max(1.0, 2.0 * remaining / n_act))))
                cap = min(cap, counts_max - lo)
                levels.append((lo, cap))
                lo += cap
                remaining = int((rank >= lo).sum()) if lo < counts_max else 0
        else:
            levels.append((0, counts_max))
        slot_of = torch.zeros(self.n_blocks, dtype=torch.int64, device=dev)
        hb_all = self.hbias_blk if pen is None else self.hbias_blk + pen
        for lo, cap in levels:
            sel = torch.nonzero((rank >= lo) & (rank < lo + cap), as_tuple=True)[0]
            bsel = sb[sel]
            live = counts > lo
            n_act = int(live.sum())
            if 2 * n_act >= self.n_blocks:  # dense: all blocks, no gather
                slot, x, nrow = bsel, self.codes_blk, self.n_blocks
            else:
                blocks = torch.nonzero(live, as_tuple=True)[0]
                slot_of[blocks] = torch.arange(n_act, device=dev)
                slot, x, nrow = slot_of[bsel], self.codes_blk[blocks], n_act
            r = rank[sel] - lo
            qidx = torch.full((nrow, cap), m, dtype=torch.int64, device=dev)
            qidx[slot, r] = sq[sel]
            scores = torch.bmm(qv_pad[qidx], x.transpose(1, 2))  # (blocks, cap, S)
            buf[sq[sel], spos[sel]] = scores[slot, r] - hb_all[bsel]
        return buf, blkmap
        ar = torch.arange(P, device=dev)
        pair_first = torch.cumsum(flat_nb, 0) - flat_nb
        pair_blk = torch.repeat_interleave(self.blk_start[lists].reshape(-1), flat_nb, output_size=P)
        pair_blk += ar - torch.repeat_interleave(pair_first, flat_nb, output_size=P)
        pair_q = torch.repeat_interleave(torch.arange(m, device=dev), per_q, output_size=P)
        q_first = torch.cumsum(per_q, 0) - per_q
        pair_pos = ar - q_first[pair_q]
        blkmap[pair_q, pair_pos] = pair_blk
        # invert: group pairs by block; rank = a pair's index among its block's queries
        order = torch.argsort(pair_blk, stable=True)
        sb = pair_blk[order]
        counts = torch.bincount(sb, minlength=self.n_blocks)
        blk_first = torch.cumsum(counts, 0) - counts
        rank = torch.arange(P, device=dev) - blk_first[sb]
        sq, spos = pair_q[order], pair_pos[order]
        qv_pad = torch.cat([qv, torch.zeros(1, qv.shape[1], device=dev, dtype=qv.dtype)])
        active = torch.nonzero(counts, as_tuple=True)[0]
        if self.bucketed:
            caps = torch.pow(2, torch.ceil(torch.log2(counts[active].float()))).long()
            groups = [(int(c), active[caps == c]) for c in torch.unique(caps).tolist()]
        else:
            groups = [(int(counts.max()), active)]
        group_of = torch.zeros(self.n_blocks, dtype=torch.int64, device=dev)
        slot_of = torch.zeros(self.n_blocks, dtype=torch.int64, device=dev)
        for gi, (_, blocks) in enumerate(groups):
            group_of[blocks] = gi
            slot_of[blocks] = torch.arange(blocks.shape[0], device=dev)
        pair_group = group_of[sb]
        for gi, (cap, blocks) in enumerate(groups):
            sel = torch.nonzero(pair_group == gi, as_tuple=True)[0]
            qidx = torch.full((blocks.shape[0], cap), m, dtype=torch.int64, device=dev)
            qidx[slot_of[sb[sel]], rank[sel]] = sq[sel]
            scores = torch.bmm(qv_pad[qidx], self.codes_blk[blocks].transpose(1, 2))  # (nb, cap, S)
            bias = self.hbias_blk[blocks] if pen is None else self.hbias_blk[blocks] + pen[blocks]
            scores -= bias[:, None, :]
            buf[sq[sel], spos[sel]] = scores[slot_of[sb[sel]], rank[sel]]
        return buf, blkmap

    def _search_chunk(self, q, k, npb, lod, pen):
        torch = self.torch
        m = q.shape[0]
        qv, qc = self._prepare(q)
        lists = self.route(q, npb)
        buf, blkmap = self._scan(qv, lists, pen)
        S = self.block_rows
        flat = buf.reshape(m, -1)
        exact = self.scan == "exact"
        depth = min(k if (lod == 1 or exact) else self.rerank * k, flat.shape[1])
        sim, idx = torch.topk(flat, depth, dim=1)
        blk = torch.gather(blkmap, 1, idx // S)
        rows = self.rows_blk[blk, idx % S]
        ok = torch.isfinite(sim)
        l2 = self.metric is Metric.L2
        sq = (q * q).sum(1) if l2 else None
        if exact:  # the scan was exact: distance = const - alpha * (q·x - bias/alpha)
            d = -self.alpha * sim
            if l2:
                d += sq[:, None]
            elif self.metric is Metric.COSINE:
                d += 1.0
        elif lod == 1:
            if l2:
                const = sq - 2.0 * qc
            elif self.metric is Metric.COSINE:
                const = 1.0 - qc
            else:
                const = -qc
            d = const[:, None] - self.alpha * sim
        else:
            e = torch.einsum("md,mrd->mr", q, self.vecs[rows])
            d = -self.alpha * e + self.bias[rows]
            if l2:
                d += sq[:, None]
            elif self.metric is Metric.COSINE:
                d += 1.0
        d = d.masked_fill(~ok, float("inf"))
        if l2:
            d = d.clamp_min(0.0)
        kk = min(k, d.shape[1])
        vals, pos = torch.topk(d, kk, dim=1, largest=False)
        slots = self.slots[torch.gather(rows, 1, pos)]
        slots = slots.masked_fill(~torch.isfinite(vals), -1)
        if kk < k:
            vals = torch.cat([vals, torch.full((m, k - kk), float("inf"), device=self.device)], 1)
            slots = torch.cat([slots, torch.full((m, k - kk), -1, dtype=torch.int64, device=self.device)], 1)
        return vals, slots
