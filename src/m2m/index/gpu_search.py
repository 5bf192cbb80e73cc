"""HRM2 search on a torch device (CUDA; CPU torch for tests): batches of queries as a few
batched matrix products over device-resident lists, with no host synchronisation but one.

``GPUSearch(index)`` copies a built ``HRM2Index``'s arrays to the device once: coarse and
fine centroids (the routing matrices), the scanned rows cut into fixed-size *blocks* of
``block_rows`` rows (each list is a run of blocks; the last block of a list is padded and its
padding rows score ``-inf``; one all-padding *dummy block* closes the tensor), per-row biases,
slots and, where a re-rank needs them, the float32 vectors.

A batch of ``m`` queries is answered with the same three steps as ``HRM2Index.search``:

1. route: fine (and, for large indexes, coarse) centroid scores as one matrix product, the
   ``n_probe`` nearest lists per query with ``torch.topk``;
2. scan: every query gets a fixed grid of ``n_probe * max_blocks`` block slots (the blocks
   of its probed lists, the rest pointing at the dummy block), so every shape is known
   before any data is seen. ``strategy="dense"`` (large batches) groups the (query, block)
   pairs *by block* with a stable sort and scores them with one ``torch.bmm`` of (blocks,
   cap, dim) by (blocks, dim, block_rows) over the resident block tensor in place, ``cap``
   being the most queries any block has (the one value read back to the host);
   ``strategy="gather"`` (small batches) gathers each query's blocks and needs no sync at
   all. ``"auto"`` picks gather while the gathered blocks stay under 256 MiB;
3. ``torch.topk`` keeps the candidates; ``scan="codes"`` re-ranks ``rerank * k`` LOD 1
   candidates with the float32 vectors (LOD 2), ``scan="exact"`` scans the vectors
   themselves: in float32 that is the exact top-k over the probed lists; with
   ``dtype="float16"`` storage (half the bytes, tensor cores on CUDA, float32 accumulation)
   the ``refine * k`` best are re-ranked exactly in float32.

Distances follow the index (cosine ``1 - q·x``, ip ``-q·x``, l2 ``||q - x||²``). The results
equal ``HRM2Index.search`` at the same ``n_probe`` (same ids; distances to float32 rounding),
except where float rounding reorders near-ties at the routing or candidate cut-offs.
Invalid queries (NaN/inf) raise once the results are read back, so the check costs no extra
synchronisation; queries left with fewer than k results are searched again with twice the
probes, as on the CPU. ``allowed`` filters rows inside the probed lists (no adaptive n_probe
as the CPU path has). torch is imported lazily (``m2m._optional.require``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from m2m._optional import require
from m2m.errors import DimensionMismatchError, InvalidArgumentError, InvalidVectorError
from m2m.types import Metric

GATHER_BYTES = 256 << 20  # "auto": gather the probed blocks per query below this many bytes


class GPUSearch:
    """Device-resident HRM2 search for query batches; see the module docstring."""

    def __init__(
        self,
        index,
        *,
        device: str | None = None,
        block_rows: int = 128,
        scan: str = "codes",
        dtype: str = "float32",
        refine: int = 4,
        strategy: str = "auto",
        graphs: bool = True,
    ) -> None:
        torch = require("torch", "torch")
        from m2m.memory.snapshot import snapshot_arrays

        self.torch = torch
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if scan not in ("codes", "exact"):
            raise InvalidArgumentError(f"scan must be 'codes' or 'exact', got {scan!r}")
        if dtype not in ("float32", "float16"):
            raise InvalidArgumentError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
        if strategy not in ("auto", "dense", "gather"):
            raise InvalidArgumentError(f"strategy must be 'auto', 'dense' or 'gather', got {strategy!r}")
        if isinstance(refine, bool) or not isinstance(refine, int) or refine < 1:
            raise InvalidArgumentError(f"refine must be a positive int, got {refine!r}")
        if isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1:
            raise InvalidArgumentError(f"block_rows must be a positive int, got {block_rows!r}")
        self.index = index
        self.metric = index.metric
        self.dim = index.dim
        self.n_lists = index.n_lists
        self.rerank = int(index.params.rerank)
        self.block_rows = S = int(block_rows)
        self.scan, self.strategy, self.refine = scan, strategy, int(refine)
        self.dtype = torch.float16 if dtype == "float16" else torch.float32
        self.alpha = 2.0 if self.metric is Metric.L2 else 1.0
        self.route_alpha = float(index._route_alpha)
        t0 = time.perf_counter()
        a = snapshot_arrays(index)
        dev = self.device

        def put(x, dtype=None):
            t = torch.from_numpy(np.ascontiguousarray(x))
            return t.to(dev, dtype=dtype) if dtype is not None else t.to(dev)

        # the codec's query preparation is linear: qv = q @ c_mv, const = q @ c_mc, read off
        # by preparing the identity (works for every codec without knowing its internals)
        codec = index._codec
        self.codec = codec.name
        eye = np.eye(self.dim, dtype=np.float32)
        mv, mc = codec.prepare(eye)
        mv = np.asarray(mv, dtype=np.float32).reshape(self.dim, -1)
        mc = np.asarray(mc, dtype=np.float32).reshape(self.dim)
        probe = np.random.default_rng(0).standard_normal((4, self.dim)).astype(np.float32)
        pv, pc = codec.prepare(probe)
        if not (np.allclose(pv, probe @ mv, atol=1e-3) and np.allclose(pc, probe @ mc, atol=1e-3)):
            raise InvalidArgumentError(f"codec {codec.name!r} does not prepare queries linearly")
        self.c_mv, self.c_mc = put(mv), put(mc)
        self.route_qv = bool(index._route_qv)
        self.route_mat = put(index._route)
        self.fine_bias = put(index._fine_bias_ext[:-1])
        self.coarse = put(index._coarse)
        self.coarse_bias = put(index._coarse_bias)
        self.coarse_of_fine = put(index._coarse_of_fine)

        offsets = a["offsets"].astype(np.int64)
        nblk = -(-np.diff(offsets) // S)  # blocks per list
        blk_start = np.concatenate(([0], np.cumsum(nblk))).astype(np.int64)
        n_blocks = int(blk_start[-1])
        block_list = np.repeat(np.arange(self.n_lists), nblk)
        first = offsets[block_list] + S * (np.arange(n_blocks) - blk_start[block_list])
        rows = np.vstack([first[:, None] + np.arange(S)[None, :], np.zeros((1, S), np.int64)])
        valid = np.vstack([rows[:-1] < offsets[block_list + 1][:, None], np.zeros((1, S), bool)])
        rows = np.where(valid, rows, 0)  # block n_blocks: the dummy, all padding
        scanned = a["codes"].astype(np.float32, copy=False) if scan == "codes" else a["vectors"]
        hbias = (a["bias"] / np.float32(self.alpha)).astype(np.float32)
        self.codes_blk = put(scanned[rows], self.dtype)  # (n_blocks + 1, S, scan dim)
        self.hbias_blk = put(np.where(valid, hbias[rows], np.float32(np.inf)).astype(np.float32))
        self.rows_blk = put(rows)
        self.valid_blk = put(valid)
        self.nblk = put(np.append(nblk, 0))  # the dummy list n_lists has no blocks
        self.blk_start = put(np.append(blk_start[:-1], 0))
        self.n_blocks = n_blocks
        self.max_nblk = max(1, int(nblk.max()) if nblk.size else 1)
        self._ar_blk = torch.arange(self.max_nblk, device=dev)
        self.exact_f32 = scan == "exact" and self.dtype == torch.float32
        self.vecs = None if self.exact_f32 else put(a["vectors"])  # exact f32: the blocks hold them
        self.bias = put(a["bias"])
        self.slots = put(a["slots"].astype(np.int64))
        self.slots_np = a["slots"].astype(np.int64)
        self._bmm_f32 = False  # float16 product straight to float32 output (CUDA)
        if self.dtype != torch.float32 and dev.type == "cuda":
            try:
                one = torch.ones(1, 2, 2, dtype=self.dtype, device=dev)
                self._bmm_f32 = torch.bmm(one, one, out_dtype=torch.float32).dtype == torch.float32
            except (TypeError, RuntimeError, NotImplementedError):
                self._bmm_f32 = False
        self.graphs = bool(graphs)  # CUDA only
        self._graphs: dict[tuple, Any] = {}
        self._pool = None
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
        return q @ self.c_mv, q @ self.c_mc

    def _queries(self, queries) -> tuple[Any, bool]:
        torch = self.torch
        if isinstance(queries, torch.Tensor):
            if queries.is_complex() or queries.dtype == torch.bool:
                raise InvalidVectorError(f"queries must be real numbers, got {queries.dtype}")
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
        return q.contiguous(), single

    def route(self, q, n_probe: int):
        """``(m, n_probe)`` probed lists per query; ``n_lists`` (the dummy) marks none."""
        from m2m.index._layout import coarse_probe

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
        with torch.no_grad():
            finite = torch.isfinite(q).all()  # checked with the results: no extra sync
            outs = [
                self._search_chunk(q[s : s + chunk], k, npb, lod, pen) for s in range(0, q.shape[0], chunk)
            ]
            if outs:
                d, sl = torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
            else:
                d = torch.empty(0, k, device=self.device)
                sl = torch.empty(0, k, dtype=torch.int64, device=self.device)
            if numpy:
                d, sl, fin = d.cpu().numpy(), sl.cpu().numpy(), bool(finite.cpu())
            else:
                fin = bool(finite)
            if not fin:
                raise InvalidVectorError("queries contain NaN or inf")
            if pen is None:
                d, sl = self._top_up(q, k, npb, lod, d, sl, numpy)
        return (d[0], sl[0]) if single else (d, sl)

    def _top_up(self, q, k, npb, lod, d, sl, numpy):
        """As ``HRM2Index.search``: queries short of ``min(k, n)`` results are searched again
        with twice the probes, at last exhaustively (checked on the results already read back)."""
        torch = self.torch
        need = min(k, int(self.slots.shape[0]))
        if numpy:
            short_np = np.flatnonzero((sl >= 0).sum(1) < need)
            if short_np.size == 0:
                return d, sl
            short = torch.from_numpy(short_np).to(self.device)
        else:
            short = torch.nonzero((sl >= 0).sum(1) < need, as_tuple=True)[0]
        while short.numel() and npb < self.n_lists:
            npb = min(self.n_lists, npb * 2)
            if lod == 2 and npb >= self.n_lists:
                d2, s2 = self._exhaustive(q[short], k)
            else:
                d2, s2 = self._search_chunk(q[short], k, npb, lod, None)
            if numpy:
                idx = short.cpu().numpy()
                d[idx], sl[idx] = d2.cpu().numpy(), s2.cpu().numpy()
            else:
                d[short], sl[short] = d2, s2
            short = short[(s2 >= 0).sum(1) < need]
        return d, sl

    def _exhaustive(self, q, k):
        """Exact top-k over every row (what probing every list at LOD 2 amounts to)."""
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
        return self._finish(q.shape[0], k, d, slots[None, :].expand(q.shape[0], -1))

    def _finish(self, m, k, d, slots_of):
        """Top ``k`` of the distances ``d`` (m, c); ``slots_of`` (m, c) names each column's slot."""
        torch = self.torch
        kk = min(k, d.shape[1])
        vals, pos = torch.topk(d, kk, dim=1, largest=False)
        slots = torch.gather(slots_of, 1, pos).masked_fill(~torch.isfinite(vals), -1)
        if kk < k:
            vals = torch.cat([vals, torch.full((m, k - kk), float("inf"), device=self.device)], 1)
            slots = torch.cat([slots, torch.full((m, k - kk), -1, dtype=torch.int64, device=self.device)], 1)
        return vals, slots

    def _grid(self, lists):
        """``(m, n_probe * max_blocks)`` block of every slot of a query's scan grid; slots past
        a list's blocks (and the dummy list's) point at the dummy block ``n_blocks``."""
        torch = self.torch
        nb = self.nblk[lists]  # (m, p)
        blk = self.blk_start[lists][:, :, None] + self._ar_blk
        blk = torch.where(self._ar_blk < nb[:, :, None], blk, self.n_blocks)
        return blk.reshape(lists.shape[0], -1)

    def _bmm(self, a, b):
        """``a @ b`` batched, float32 out; float16 storage multiplies in float16 on CUDA."""
        torch = self.torch
        if self.dtype == torch.float32 or self.device.type != "cuda":
            return torch.bmm(a.float(), b.float())  # CPU: half matmul is slow or missing there
        a, b = a.to(self.dtype), b.to(self.dtype)
        if self._bmm_f32:
            return torch.bmm(a, b, out_dtype=torch.float32)
        return torch.bmm(a, b).float()

    def _dense(self, m, W) -> bool:
        if self.strategy != "auto":
            return self.strategy == "dense"
        elem = self.codes_blk.element_size() * self.codes_blk.shape[2]
        return m * W * self.block_rows * elem > GATHER_BYTES

    def _stage_a(self, q, npb):
        """Route and lay out the scan grid; for the dense scan also group the pairs by block.
        No host synchronisation: ``st["cap"]`` (the most queries on one block) stays on the device."""
        torch = self.torch
        qv, qc = self._prepare(q)
        if self.dtype != torch.float32 and self.device.type == "cuda":
            qv = qv.to(self.dtype)  # gathered and multiplied in float16
        grid = self._grid(self.route(q, npb))
        st = {"q": q, "qv": qv, "qc": qc, "grid": grid}
        m, W = grid.shape
        if self._dense(m, W):
            flat = grid.reshape(-1)
            order = torch.argsort(flat, stable=True)
            sb = flat[order]
            counts = torch.zeros(self.n_blocks + 1, dtype=torch.int64, device=self.device)
            counts.scatter_add_(0, flat, torch.ones_like(flat))
            rank = torch.arange(flat.shape[0], device=self.device) - (torch.cumsum(counts, 0) - counts)[sb]
            real = sb < self.n_blocks
            st.update(order=order, sb=sb, real=real, rank=torch.where(real, rank, 0))
            st["cap"] = counts[: self.n_blocks].max()  # dummy pairs all land on (dummy block, 0)
        return st

    def _scan(self, st, cap, pen):
        """Similarities ``qv·x - bias/alpha`` of every row of every grid slot: ``(m, W * S)``."""
        torch = self.torch
        qv, grid = st["qv"], st["grid"]
        m, W = grid.shape
        S = self.block_rows
        hb = self.hbias_blk if pen is None else self.hbias_blk + pen
        if "cap" not in st:  # gather: per query its blocks, one bmm of (m, W*S, d) by (m, d, 1)
            x = self.codes_blk[grid].reshape(m, W * S, -1)
            return self._bmm(x, qv[:, :, None])[:, :, 0] - hb[grid].reshape(m, W * S)
        # dense: pairs grouped by block, one bmm of (blocks, cap, d) by the resident blocks
        order, sb, rank = st["order"], st["sb"], st["rank"]
        qidx = torch.full((self.n_blocks + 1, cap), m, dtype=torch.int64, device=self.device)
        qidx[sb, rank] = torch.where(st["real"], order // W, m)
        qv_pad = torch.cat([qv, torch.zeros(1, qv.shape[1], device=self.device, dtype=qv.dtype)])
        scores = self._bmm(qv_pad[qidx], self.codes_blk.transpose(1, 2))  # (blocks + 1, cap, S)
        out = torch.empty(order.shape[0], S, device=self.device)
        out[order] = scores[sb, rank] - hb[sb]
        return out.reshape(m, W * S)

    def _stage_b(self, st, cap, k, lod, pen):
        """Scan, keep the candidates, re-rank where needed: ``(distances, slots)`` (m, k)."""
        torch = self.torch
        q, qc, grid = st["q"], st["qc"], st["grid"]
        m = q.shape[0]
        S = self.block_rows
        flat = self._scan(st, cap, pen)
        exact = self.scan == "exact"
        depth = k if lod == 1 or self.exact_f32 else (self.refine if exact else self.rerank) * k
        sim, idx = torch.topk(flat, min(depth, flat.shape[1]), dim=1)
        rows = self.rows_blk[torch.gather(grid, 1, idx // S), idx % S]
        ok = torch.isfinite(sim)
        l2 = self.metric is Metric.L2
        sq = (q * q).sum(1) if l2 else None
        if exact and (lod == 1 or self.exact_f32):  # distance = const - alpha * (q·x - bias/alpha)
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
        else:  # LOD 2: exact float32 re-rank of the candidates
            e = torch.einsum("md,mrd->mr", q, self.vecs[rows])
            d = -self.alpha * e + self.bias[rows]
            if l2:
                d += sq[:, None]
            elif self.metric is Metric.COSINE:
                d += 1.0
        d = d.masked_fill(~ok, float("inf"))
        if l2:
            d = d.clamp_min(0.0)
        return self._finish(m, k, d, self.slots[rows])

    def _search_chunk(self, q, k, npb, lod, pen):
        if self.graphs and self.device.type == "cuda" and pen is None:
            return self._graphed(q, k, npb, lod)
        st = self._stage_a(q, npb)
        cap = max(1, int(st["cap"])) if "cap" in st else 0  # the dense scan's one sync
        return self._stage_b(st, cap, k, lod, pen)

    # ---- CUDA graphs --------------------------------------------------------------------
    def _capture(self, fn):
        """Record ``fn()`` (after a warm-up on a side stream) as a CUDA graph; returns
        ``(graph, outputs)``: replaying the graph rewrites ``outputs`` in place."""
        torch = self.torch
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = fn()
        return graph, out

    def _graphed(self, q, k, npb, lod):
        """``_stage_a`` and ``_stage_b`` replayed from CUDA graphs captured per (batch size,
        n_probe) and (k, lod, cap rounded up to a power of two): a batch costs two graph
        launches and the one read of ``cap``, not tens of kernel launches from Python."""
        torch = self.torch
        m = q.shape[0]
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        key_a = (m, npb)
        if key_a not in self._graphs:
            static_q = q.clone()
            self._graphs[key_a] = (static_q, *self._capture(lambda: self._stage_a(static_q, npb)))
        static_q, graph_a, st = self._graphs[key_a]
        static_q.copy_(q)
        graph_a.replay()
        cap = 0
        if "cap" in st:
            cap = 1 << (max(1, int(st["cap"])) - 1).bit_length()  # next power of two: few graphs
        key_b = (m, npb, k, lod, cap)
        if key_b not in self._graphs:
            self._graphs[key_b] = self._capture(lambda: self._stage_b(st, cap, k, lod, None))
        graph_b, out = self._graphs[key_b]
        graph_b.replay()
        return out[0].clone(), out[1].clone()
