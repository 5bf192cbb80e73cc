"""The wgpu backend: WGSL compute kernels on Vulkan, Metal or DX12 through wgpu-py.

Two passes per query batch (shaders/score_topk.wgsl, shaders/select.wgsl):

1. fused scoring and top-k: each workgroup scores a 128-query tile against a run of
   128-vector tiles (register-blocked, operands staged in workgroup memory) and keeps, per
   query, the best ``k`` of that run in a small device-memory list, offering only the keys
   that beat the running threshold;
2. a per-query bitonic merge of those lists.

Only ``n_queries x k`` pairs come back to the host; the score matrix is never materialised.
Vector blocks are split into chunks that fit the adapter's storage-binding limit and kept
resident (``upload`` returns a handle; read-only arrays are also cached implicitly, as in the
torch backend). Storage is float32, or float16 (``storage="float16"``: half the memory and
bandwidth, unpacked with the core ``unpack2x16float``, so the ``shader-f16`` feature is not
needed; arithmetic stays float32). wgpu is imported only when this module is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

from m2m._optional import require
from m2m.compute import check_topk_args
from m2m.compute.upload_cache import UploadCache
from m2m.errors import InvalidArgumentError, InvalidVectorError
from m2m.types import Metric

wgpu = require("wgpu", "wgpu")

logger = logging.getLogger(__name__)

TQ = 128  # queries per workgroup tile
TV = 128  # vectors per workgroup tile
BK = 16  # dimension slice; rows are zero-padded to a multiple of it
NB_CHOICES = (16, 8)  # candidate slots per query in workgroup memory: the most that fits
SELECT_T = 1024  # pairs per merge round in select.wgsl
MAX_K = 512  # largest k the kernels take (select needs kp <= SELECT_T / 2)
_BUF = wgpu.BufferUsage
_INF_BITS = 0x7F800000


def _wg_memory(nb: int) -> int:
    """Bytes of workgroup memory score_topk.wgsl uses with ``nb`` candidate slots per query."""
    return (512 + 512) * 16 + TQ * 8 + TQ * nb * 8 + 16


def find_adapter(*, backend_type: str | None = None, hardware_only: bool = False) -> tuple[Any, str]:
    """Best wgpu adapter (discrete > integrated > other), or ``(None, reason)``.

    ``backend_type`` is "vulkan", "metal" or "d3d12"; ``hardware_only`` skips CPU adapters
    such as lavapipe/llvmpipe. OpenGL adapters are never used (weak compute support).
    """
    try:
        adapters = wgpu.gpu.enumerate_adapters_sync()
    except Exception as exc:  # no loader / driver at all
        return None, f"wgpu found no adapters ({exc})"
    rank = {"DiscreteGPU": 0, "IntegratedGPU": 1, "VirtualGPU": 2, "Unknown": 3, "CPU": 4}
    found = []
    for adapter in adapters:
        info = adapter.info
        btype = str(info.get("backend_type", "")).lower()
        atype = str(info.get("adapter_type", "Unknown"))
        if btype in ("opengl", "gl", "empty", "browserwebgpu"):
            continue
        if backend_type is not None and btype != backend_type:
            continue
        if hardware_only and atype == "CPU":
            continue
        found.append((rank.get(atype, 3), adapter))
    if not found:
        what = f"{backend_type} " if backend_type else ""
        kind = "hardware " if hardware_only else ""
        seen = ", ".join(f"{a.info.get('device')} ({a.info.get('backend_type')})" for a in adapters) or "none"
        return None, f"no {kind}{what}wgpu adapter (adapters seen: {seen})"
    found.sort(key=lambda t: t[0])
    return found[0][1], ""


def _shader(name: str) -> str:
    return resources.files("m2m.compute").joinpath("shaders", name).read_text(encoding="utf-8")


def _score_source(storage: str, kp: int, nb: int) -> str:
    """Fill score_topk.wgsl's template with the unrolled register-blocked code."""
    comps = "xyzw"
    acc = "\n".join(f"var c{r}{c} = vec4<f32>(0.0);" for r in range(8) for c in range(2))
    store = []
    for half, (qv, xv) in enumerate((("pqa", "pxa"), ("pqb", "pxb"))):
        for e in range(4):
            off = e * 32 + 16 * half
            store.append(f"Qs[sidx + {off}u][scomp] = {qv}.{comps[e]};")
            store.append(f"Xs[sidx + {off}u][scomp] = {xv}.{comps[e]};")
    fma = []
    for kk in range(BK):
        fma.append("{")
        fma.append(f"let a0 = Qs[{kk * 32}u + ty]; let a1 = Qs[{kk * 32 + 16}u + ty];")
        fma.append(f"let b0 = Xs[{kk * 32}u + tx]; let b1 = Xs[{kk * 32 + 16}u + tx];")
        for r in range(8):
            a = f"vec4<f32>(a{r // 4}.{comps[r % 4]})"
            for c in range(2):
                fma.append(f"c{r}{c} = fma({a}, b{c}, c{r}{c});")
        fma.append("}")
    keys = ["var pa = 0u;", "var pb = 0u;"]
    for c in range(2):
        keys.append(f"let vb{c} = v0 + {c * 64}u + tx * 4u;")
        keys.append(f"var bias{c} = vec4<f32>(0.0);")
        keys.append(
            f"if (P.use_norms != 0u) {{ bias{c} = vec4<f32>(XN[vb{c}], XN[vb{c} + 1u], XN[vb{c} + 2u], XN[vb{c} + 3u]); }}"
        )
        keys.append(
            f"let ok{c} = vec4<bool>(row_ok(vb{c}), row_ok(vb{c} + 1u), row_ok(vb{c} + 2u), row_ok(vb{c} + 3u));"
        )
    push = []
    for r in range(8):
        ql = f"ty * 4u + {r}u" if r < 4 else f"64u + ty * 4u + {r - 4}u"
        keys.append(f"let ql{r} = {ql};")
        keys.append(f"let th{r} = thr_s[ql{r}];")
        pv = "pa" if r < 4 else "pb"
        for c in range(2):
            keys.append(f"c{r}{c} = select(vec4<f32>(inf), bias{c} - P.coef * c{r}{c}, ok{c});")
            for e in range(4):
                bit = 1 << ((r % 4) * 8 + c * 4 + e)
                keys.append(f"{pv} |= select(0u, {bit}u, c{r}{c}.{comps[e]} < th{r});")
                push.append(
                    f"if (({pv} & {bit}u) != 0u) {{ let kv = c{r}{c}.{comps[e]};"
                    f" if (kv < thr_s[ql{r}]) {{ let slot = atomicAdd(&cnt[ql{r}], 1u);"
                    f" if (slot < NB) {{ bk[ql{r} * NB + slot] = kv;"
                    f" bi[ql{r} * NB + slot] = P.row_offset + vb{c} + {e}u; {pv} &= ~{bit}u; }} }}"
                    f" else {{ {pv} &= ~{bit}u; }} }}"
                )
    if storage == "float16":
        xelem = "vec2<u32>"
        loadx = (
            "let w = X[(row * P.d_pad + col) / 4u];\n"
            "  return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));"
        )
    else:
        xelem, loadx = "vec4<f32>", "return X[(row * P.d_pad + col) / 4u];"
    src = _shader("score_topk.wgsl")
    for name, text in {
        "XELEM": xelem,
        "LOADX": loadx,
        "NB": str(nb),
        "NBTQ": str(nb * TQ),
        "KP": str(kp),
        "ACC_DECL": "\n    ".join(acc.splitlines()),
        "STORE_TILES": "\n      ".join(store),
        "FMA": "\n      ".join(fma),
        "ACC_SUM": " + ".join(f"dot(c{r}{c}, vec4<f32>(1.0))" for r in range(8) for c in range(2)),
        "KEYS": "\n    ".join(keys),
        "PUSH": "\n      ".join(push),
    }.items():
        src = src.replace("{{" + name + "}}", text)
    return src


@dataclass
class WgpuChunk:
    vectors: Any  # GPUBuffer, rows padded to a multiple of TV, dims to d_pad
    norms: Any  # GPUBuffer of ||x||² (float32), same padded rows
    rows: int
    row_offset: int


@dataclass
class WgpuBlock:
    """A block of vectors resident on the wgpu device (returned by ``WgpuBackend.upload``)."""

    n: int
    dim: int
    d_pad: int
    storage: str
    chunks: list[WgpuChunk] = field(default_factory=list)
    nbytes: int = 0


class WgpuBackend:
    """Brute-force top-k with WGSL kernels (fused scoring + selection).

    ``adapter``: a wgpu adapter (default: ``find_adapter()``); ``storage``: "float32" or
    "float16" for resident blocks; ``max_chunk_bytes``: cap on one vector buffer (default: the
    adapter's binding limit); ``target_workgroups``: how many workgroups one query batch is
    spread over (more splits fill a large GPU, at the cost of more lists to merge);
    ``share_bounds``/``slots``: kernel options kept for benchmarking (thresholds shared between
    workgroups; candidate slots per query, 16 where workgroup memory allows, else 8).
    """

    def __init__(
        self,
        adapter: Any = None,
        *,
        storage: str = "float32",
        max_chunk_bytes: int | None = None,
        target_workgroups: int = 1024,
        cache_bytes: int = 4 << 30,
        share_bounds: bool = True,
        slots: int | None = None,
    ) -> None:
        if storage not in ("float32", "float16"):
            raise InvalidArgumentError(f"storage must be 'float32' or 'float16', got {storage!r}")
        if adapter is None:
            adapter, why = find_adapter()
            if adapter is None:
                raise RuntimeError(why)
        limits = adapter.limits
        wg_limit = limits["max-compute-workgroup-storage-size"]
        fitting = [nb for nb in NB_CHOICES if _wg_memory(nb) <= wg_limit]
        if not fitting:
            raise RuntimeError(
                f"adapter allows {wg_limit} bytes of workgroup memory, the kernels need {_wg_memory(NB_CHOICES[-1])}"
            )
        if slots is not None and slots not in fitting:
            raise InvalidArgumentError(f"slots must be one of {fitting} on this adapter, got {slots!r}")
        self.nb = slots if slots is not None else fitting[0]
        self.share_bounds = bool(share_bounds)
        wanted = ("max-storage-buffer-binding-size", "max-buffer-size", "max-compute-workgroup-storage-size")
        self.device = adapter.request_device_sync(required_limits={name: limits[name] for name in wanted})
        self.adapter_info = dict(adapter.info)
        self.storage = storage
        self.max_binding = int(min(limits["max-storage-buffer-binding-size"], limits["max-buffer-size"]))
        if max_chunk_bytes is not None:
            self.max_binding = min(self.max_binding, int(max_chunk_bytes))
        self.target_workgroups = int(target_workgroups)
        self.cache_bytes = int(cache_bytes)
        self._cache: UploadCache[WgpuBlock] = UploadCache(self.cache_bytes)
        self._pipelines: dict[str, Any] = {}
        self._dummy = self._buffer(np.zeros(4, dtype=np.uint32), _BUF.STORAGE)
        self.name = f"wgpu-{self.adapter_info.get('backend_type', '?')}".lower()

    # ------------------------------------------------------------------ helpers
    def _buffer(self, data: np.ndarray, usage: int) -> Any:
        return self.device.create_buffer_with_data(data=np.ascontiguousarray(data), usage=usage)

    def _pipeline(self, name: str, kp: int = 0) -> Any:
        key = f"{name}-{kp}"
        pipe = self._pipelines.get(key)
        if pipe is None:
            src = _shader("select.wgsl") if name == "select" else _score_source(name, kp, self.nb)
            module = self.device.create_shader_module(code=src)
            pipe = self.device.create_compute_pipeline(
                layout="auto", compute={"module": module, "entry_point": "main"}
            )
            self._pipelines[key] = pipe
        return pipe

    def _bind(self, pipe: Any, buffers: list[Any]) -> Any:
        entries = [
            {"binding": i, "resource": {"buffer": b, "offset": 0, "size": b.size}}
            for i, b in enumerate(buffers)
        ]
        return self.device.create_bind_group(layout=pipe.get_bind_group_layout(0), entries=entries)

    # ------------------------------------------------------------------ residency
    def upload(self, vectors: np.ndarray, *, sq_norms: np.ndarray | None = None) -> WgpuBlock:
        """Copy ``vectors`` (n, d) to the device once, in chunks under the binding limit."""
        arr = np.asarray(vectors)
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
            raise InvalidVectorError(f"vectors must be a numeric 2-D array, got {arr.dtype} {arr.shape}")
        n, dim = arr.shape
        d_pad = max(BK, -(-dim // BK) * BK)
        elem = 2 if self.storage == "float16" else 4
        rows_per_chunk = (self.max_binding // (d_pad * elem)) // TV * TV
        if rows_per_chunk < TV:
            raise InvalidArgumentError(f"dimension {dim} is too large for this adapter's buffer limit")
        block = WgpuBlock(n=n, dim=dim, d_pad=d_pad, storage=self.storage)
        for start in range(0, max(n, 1), rows_per_chunk):
            rows = min(rows_per_chunk, n - start)
            padded = max(TV, -(-rows // TV) * TV)
            x = np.zeros((padded, d_pad), dtype=np.float16 if elem == 2 else np.float32)
            x[:rows, :dim] = arr[start : start + rows]
            x32 = x[:rows].astype(np.float32)
            norms = np.zeros(padded, dtype=np.float32)
            if sq_norms is not None:
                norms[:rows] = np.asarray(sq_norms, dtype=np.float32)[start : start + rows]
            else:
                norms[:rows] = np.einsum("ij,ij->i", x32, x32)
            chunk = WgpuChunk(
                vectors=self._buffer(x.view(np.uint32), _BUF.STORAGE),
                norms=self._buffer(norms, _BUF.STORAGE),
                rows=rows,
                row_offset=start,
            )
            block.chunks.append(chunk)
            block.nbytes += x.nbytes + norms.nbytes
        return block

    def _block_for(self, vectors: np.ndarray | WgpuBlock, sq_norms: np.ndarray | None) -> WgpuBlock:
        if isinstance(vectors, WgpuBlock):
            return vectors
        return self._cache.get(np.asarray(vectors), sq_norms, lambda a, n: self.upload(a, sq_norms=n))

    def clear_cache(self) -> None:
        """Drop implicitly cached device copies."""
        self._cache.clear()

    # ------------------------------------------------------------------ search
    def topk(
        self,
        queries: np.ndarray,
        vectors: np.ndarray | WgpuBlock,
        k: int,
        metric: Metric,
        *,
        vector_sq_norms: np.ndarray | None = None,
        valid: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k (see ``ComputeBackend.topk``); ``vectors`` may be an uploaded ``WgpuBlock``."""
        if isinstance(vectors, WgpuBlock):
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
        kk = min(k, n)
        if kk > MAX_K:
            from m2m.compute.numpy_backend import NumpyBackend

            logger.info("k=%d is over the wgpu kernels' limit %d: using NumPy", k, MAX_K)
            if isinstance(vectors, WgpuBlock):
                raise InvalidArgumentError(
                    f"k={k} is over the wgpu backend's limit {MAX_K} for uploaded blocks"
                )
            return NumpyBackend().topk(q, vectors, k, metric, vector_sq_norms=vector_sq_norms, valid=valid)
        block = self._block_for(vectors, vector_sq_norms if metric is Metric.L2 else None)
        keys, idx = self._search(q, block, kk, metric, valid)
        finite = np.isfinite(keys)
        if metric is Metric.COSINE:
            dist = 1.0 + keys
        elif metric is Metric.IP:
            dist = keys
        else:
            dist = np.maximum(keys + np.einsum("ij,ij->i", q, q)[:, None], 0.0)
        out_d[:, :kk] = np.where(finite, dist, np.inf)
        out_i[:, :kk] = np.where(finite, idx.astype(np.int64), -1)
        return out_d, out_i

    def _search(
        self,
        q: np.ndarray,
        block: WgpuBlock,
        k: int,
        metric: Metric,
        valid: np.ndarray | None,
        *,
        skip_topk: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run both passes; return keys (nq, k) float32 sorted ascending and row indices (uint32).

        ``skip_topk`` (a diagnostic for benchmarks) runs the matrix product alone: results are void.
        """
        nq = q.shape[0]
        kp = -(-k // 4) * 4
        n_qt = -(-nq // TQ)
        tiles = [-(-c.rows // TV) for c in block.chunks]
        s_wanted = max(1, self.target_workgroups // n_qt)
        tps = max(1, -(-sum(tiles) // s_wanted))
        splits = [max(1, -(-t // tps)) for t in tiles]
        s_total = sum(splits)
        # queries per batch: the candidate lists must fit one binding, the dispatch one dimension
        per_query = s_total * kp * 4
        qt_batch = max(1, min(65535, self.max_binding // (per_query * TQ)))
        if valid is not None:
            bits = np.packbits(valid, bitorder="little")
            bits = np.concatenate([bits, np.zeros(-len(bits) % 4 + 4, dtype=np.uint8)])
            mask_buf = self._buffer(bits.view(np.uint32), _BUF.STORAGE)
        else:
            mask_buf = self._dummy
        score_pipe = self._pipeline(block.storage, kp)
        select_pipe = self._pipeline("select")
        out_keys, out_idx = [], []
        for qt0 in range(0, n_qt, qt_batch):
            nqt = min(qt_batch, n_qt - qt0)
            qb = np.zeros((nqt * TQ, block.d_pad), dtype=np.float32)
            sub = q[qt0 * TQ : (qt0 + nqt) * TQ]
            qb[: sub.shape[0], : block.dim] = sub
            q_buf = self._buffer(qb, _BUF.STORAGE)
            n_cand = nqt * TQ * s_total * kp
            ck = self.device.create_buffer(size=4 * n_cand, usage=_BUF.STORAGE)
            ci = self.device.create_buffer(size=4 * n_cand, usage=_BUF.STORAGE)
            ok = self.device.create_buffer(size=4 * sub.shape[0] * kp, usage=_BUF.STORAGE | _BUF.COPY_SRC)
            oi = self.device.create_buffer(size=4 * sub.shape[0] * kp, usage=_BUF.STORAGE | _BUF.COPY_SRC)
            bound = self.device.create_buffer(size=4 * nqt * TQ, usage=_BUF.STORAGE)  # zero-filled: no bound
            encoder = self.device.create_command_encoder()
            cpass = encoder.begin_compute_pass()
            cpass.set_pipeline(score_pipe)
            split0 = 0
            for chunk, n_split in zip(block.chunks, splits, strict=True):
                params = np.array(
                    [chunk.rows, block.d_pad, kp, s_total, split0, tps, chunk.row_offset, int(valid is not None),
                     0, int(metric is Metric.L2), _INF_BITS, int(skip_topk),
                     int(self.share_bounds), 0, 0, 0],
                    dtype=np.uint32,
                )  # fmt: skip
                params[8] = np.float32(2.0 if metric is Metric.L2 else 1.0).view(np.uint32)
                p_buf = self._buffer(params, _BUF.UNIFORM)
                bg = self._bind(
                    score_pipe, [p_buf, q_buf, chunk.vectors, chunk.norms, mask_buf, ck, ci, bound]
                )
                cpass.set_bind_group(0, bg)
                cpass.dispatch_workgroups(nqt, n_split, 1)
                split0 += n_split
            nsub = sub.shape[0]
            sp = self._buffer(np.array([nsub, s_total, kp, _INF_BITS], dtype=np.uint32), _BUF.UNIFORM)
            cpass.set_pipeline(select_pipe)
            cpass.set_bind_group(0, self._bind(select_pipe, [sp, ck, ci, ok, oi]))
            cpass.dispatch_workgroups(min(nsub, 65535), -(-nsub // 65535), 1)
            cpass.end()
            self.device.queue.submit([encoder.finish()])
            keys = np.frombuffer(self.device.queue.read_buffer(ok), dtype=np.float32).reshape(nsub, kp)
            idx = np.frombuffer(self.device.queue.read_buffer(oi), dtype=np.uint32).reshape(nsub, kp)
            out_keys.append(keys[:, :k])
            out_idx.append(idx[:, :k])
            for buf in (q_buf, ck, ci, ok, oi, bound):
                buf.destroy()
        keys = np.concatenate(out_keys)
        idx = np.concatenate(out_idx)
        return keys, idx
