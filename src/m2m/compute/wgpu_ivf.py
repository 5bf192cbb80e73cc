"""Inverted lists on a wgpu device: route a query batch to its nearest lists and scan only
those, with WGSL kernels (Vulkan, Metal, DX12).

``WgpuIVF(backend, centroids, centroid_bias, vectors, offsets, row_bias)`` keeps, on the
device of a ``WgpuBackend``: the centroids (an uploaded block of the brute-force kernel), the
rows of every list cut into blocks of 128 rows stored dimension-major (the last block of a
list padded; padding rows have an infinite bias) and the per-row biases. ``search`` answers a
batch in two submissions:

1. route: the backend's fused scoring + top-k kernel over the centroids (key
   ``centroid_bias - q·c``), ``n_probe`` lists per query read back (small);
2. scan + merge: ``ivf_scan.wgsl`` (one workgroup per query, one thread per block row, each
   thread keeping its best ``k`` in registers) and ``select.wgsl`` (the same per-query
   bitonic merge as the brute-force path); only ``n_queries x k`` pairs come back.

Keys are ``row_bias - q·x`` (smaller is better): the caller turns them into distances. A
caller with its own routing passes ``lists``. Float32 storage; buffers over the adapter's
binding limit are split into chunks of blocks (one dispatch each, merged by select).
"""

from __future__ import annotations

import numpy as np

from m2m.compute.wgpu_backend import _BUF, _INF_BITS, MAX_K, WgpuBackend, _shader
from m2m.errors import InvalidArgumentError
from m2m.types import Metric

S = 128  # rows per block = threads per workgroup in ivf_scan.wgsl
MAX_SCAN_K = 64  # per-thread candidate lists live in registers


class WgpuIVF:
    """Probed-list search on a wgpu device; see the module docstring."""

    def __init__(
        self,
        backend: WgpuBackend,
        centroids: np.ndarray,
        centroid_bias: np.ndarray,
        vectors: np.ndarray,
        offsets: np.ndarray,
        row_bias: np.ndarray,
    ) -> None:
        if backend.storage != "float32":
            raise InvalidArgumentError("WgpuIVF needs a float32 WgpuBackend for its routing block")
        self.backend = backend
        c = np.ascontiguousarray(centroids, dtype=np.float32)
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        offsets = np.asarray(offsets, dtype=np.int64)
        self.n_lists, self.dim = c.shape
        if x.ndim != 2 or x.shape[1] != self.dim or offsets.shape != (self.n_lists + 1,):
            raise InvalidArgumentError(
                "vectors (n, d), centroids (n_lists, d) and offsets (n_lists + 1) disagree"
            )
        # the brute-force kernel's l2 keys are norms - 2 q·c: norms = 2 * bias gives 2 * (bias - q·c)
        self.route_block = backend.upload(c, sq_norms=2.0 * np.asarray(centroid_bias, dtype=np.float32))
        nblk = -(-np.diff(offsets) // S)
        blk_start = np.concatenate(([0], np.cumsum(nblk))).astype(np.int64)
        self.n_blocks = int(blk_start[-1])
        block_list = np.repeat(np.arange(self.n_lists), nblk)
        first = offsets[block_list] + S * (np.arange(self.n_blocks) - blk_start[block_list])
        rows = first[:, None] + np.arange(S)[None, :]
        valid = rows < offsets[block_list + 1][:, None]
        self.rows = np.where(valid, rows, -1).reshape(-1)  # kernel row id (block * S + t) -> input row
        hb = np.where(valid, np.asarray(row_bias, dtype=np.float32)[np.where(valid, rows, 0)], np.inf)
        self.hb_buf = backend._buffer(hb.astype(np.float32).reshape(-1), _BUF.STORAGE)
        # the dummy list n_lists (and n_lists + 1) has no blocks
        bstart = np.concatenate([blk_start, [self.n_blocks]]).astype(np.uint32)
        self.bstart_buf = backend._buffer(bstart, _BUF.STORAGE)
        per_block = self.dim * S * 4
        blocks_per_chunk = max(1, backend.max_binding // per_block)
        self.chunks = []  # (block_lo, block_hi, buffer)
        for lo in range(0, max(self.n_blocks, 1), blocks_per_chunk):
            hi = min(self.n_blocks, lo + blocks_per_chunk)
            xt = np.zeros((max(hi - lo, 1), self.dim, S), dtype=np.float32)
            r = np.where(valid[lo:hi], rows[lo:hi], 0)
            xt[: hi - lo] = np.where(valid[lo:hi, :, None], x[r], 0.0).transpose(0, 2, 1)
            self.chunks.append((lo, hi, backend._buffer(xt.reshape(-1), _BUF.STORAGE)))
        self.nbytes = self.n_blocks * per_block + hb.size * 4 + self.route_block.nbytes
        self._pipes: dict[int, object] = {}

    def _scan_pipe(self, kp: int):
        pipe = self._pipes.get(kp)
        if pipe is None:
            d_pad = max(4, -(-self.dim // 4) * 4)
            src = _shader("ivf_scan.wgsl").replace("{{D}}", str(d_pad)).replace("{{KP}}", str(kp))
            module = self.backend.device.create_shader_module(code=src)
            pipe = self.backend.device.create_compute_pipeline(
                layout="auto", compute={"module": module, "entry_point": "main"}
            )
            self._pipes[kp] = pipe
        return pipe

    def route(self, q: np.ndarray, n_probe: int) -> np.ndarray:
        """``(m, n_probe)`` nearest lists (smallest ``centroid_bias - q·c``) as uint32."""
        n_probe = min(int(n_probe), self.n_lists)
        if n_probe > MAX_K:
            raise InvalidArgumentError(f"n_probe={n_probe} is over the wgpu routing limit {MAX_K}")
        _, idx = self.backend._search(q, self.route_block, n_probe, Metric.L2, None)
        return idx.astype(np.uint32)

    def search(
        self, queries: np.ndarray, k: int, n_probe: int, *, lists: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(keys (m, k), rows (m, k))`` best first; ``rows`` index ``vectors``, -1 past the end.

        ``lists`` (m, p) replaces the routing (ids >= n_lists probe nothing)."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_SCAN_K:
            raise InvalidArgumentError(
                f"k must be an int in [1, {MAX_SCAN_K}] on the wgpu IVF path, got {k!r}"
            )
        m = q.shape[0]
        if lists is None:
            lists = self.route(q, n_probe)
        lists = np.ascontiguousarray(np.minimum(lists, self.n_lists), dtype=np.uint32)
        kp = -(-int(k) // 4) * 4
        be = self.backend
        dev = be.device
        pipe = self._scan_pipe(kp)
        select = be._pipeline("select")
        n_chunks = len(self.chunks)
        per_query = n_chunks * S * kp * 4
        batch = max(1, min(65535 * 64, be.max_binding // per_query))
        out_k, out_i = [], []
        for s in range(0, m, batch):
            qb, lb = q[s : s + batch], lists[s : s + batch]
            nq = qb.shape[0]
            q_buf = be._buffer(qb.reshape(-1), _BUF.STORAGE)
            l_buf = be._buffer(lb.reshape(-1), _BUF.STORAGE)
            ck = dev.create_buffer(size=nq * per_query, usage=_BUF.STORAGE)
            ci = dev.create_buffer(size=nq * per_query, usage=_BUF.STORAGE)
            ok = dev.create_buffer(size=4 * nq * kp, usage=_BUF.STORAGE | _BUF.COPY_SRC)
            oi = dev.create_buffer(size=4 * nq * kp, usage=_BUF.STORAGE | _BUF.COPY_SRC)
            enc = dev.create_command_encoder()
            cpass = enc.begin_compute_pass()
            cpass.set_pipeline(pipe)
            gx, gy = min(nq, 65535), -(-nq // 65535)
            for ci_, (lo, hi, xbuf) in enumerate(self.chunks):
                params = np.array(
                    [nq, self.dim, lb.shape[1], lo, hi, n_chunks, ci_, _INF_BITS], dtype=np.uint32
                )
                bufs = [
                    be._buffer(params, _BUF.UNIFORM),
                    q_buf,
                    xbuf,
                    self.hb_buf,
                    l_buf,
                    self.bstart_buf,
                    ck,
                    ci,
                ]
                cpass.set_bind_group(0, be._bind(pipe, bufs))
                cpass.dispatch_workgroups(gx, gy, 1)
            sp = be._buffer(np.array([nq, n_chunks * S, kp, _INF_BITS], dtype=np.uint32), _BUF.UNIFORM)
            cpass.set_pipeline(select)
            cpass.set_bind_group(0, be._bind(select, [sp, ck, ci, ok, oi]))
            cpass.dispatch_workgroups(gx, gy, 1)
            cpass.end()
            dev.queue.submit([enc.finish()])
            keys = np.frombuffer(dev.queue.read_buffer(ok), dtype=np.float32).reshape(nq, kp)[:, :k]
            ids = np.frombuffer(dev.queue.read_buffer(oi), dtype=np.uint32).reshape(nq, kp)[:, :k]
            out_k.append(keys)
            out_i.append(ids)
            for buf in (q_buf, l_buf, ck, ci, ok, oi):
                buf.destroy()
        keys = np.concatenate(out_k) if out_k else np.empty((0, k), np.float32)
        ids = np.concatenate(out_i) if out_i else np.empty((0, k), np.uint32)
        fin = np.isfinite(keys)
        rows = np.where(fin, self.rows[np.where(fin, ids, 0).astype(np.int64)], -1)
        return np.where(fin, keys, np.inf).astype(np.float32), rows.astype(np.int64)
