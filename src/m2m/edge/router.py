"""EdgeRouter: serve an edge snapshot with NumPy alone (no SQLite, torch or server stack).

The router memory-maps the snapshot's arrays (start-up reads the small centroid files and
maps the rest; processes on one machine share the page cache) and answers k-NN queries with
the HRM2 search path:

1. route: score the fine centroids (all of them while that is cheap, else those of the
   nearest coarse clusters) and keep the ``n_probe`` nearest lists;
2. score the probed rows' LOD 1 codes and keep ``rerank * k`` candidates;
3. re-rank them with the stored vectors: exact float32 (the index's LOD 2, same results), or
   for int8 snapshots the decoded int8 vectors (whose LOD 1 codes are int8 too).

Distances follow the collection's metric (smaller is closer): cosine ``1 - cos``, ip
``-q·x``, l2 ``||q - x||²``. ``n_probe >= n_lists`` scans every row exactly.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from typing import Any, NamedTuple

import numpy as np

from m2m.edge.snapshot import (
    SnapshotCorruptError,
    load_arrays,
    read_config,
    verify_files,
)
from m2m.errors import (
    DimensionMismatchError,
    InvalidArgumentError,
    InvalidVectorError,
    NotFoundError,
)
from m2m.recall_curve import n_probe_from_curve

log = logging.getLogger(__name__)

_EXHAUSTIVE_CELLS = 1 << 23  # (query, row) scores per block of an exhaustive scan


class SearchResult(NamedTuple):
    """``ids`` (str array) and ``distances`` (float32, smaller is closer), best first.

    One query gives 1-D arrays of length k, a batch ``(m, k)``; missing results are padded
    with id ``""`` and distance ``inf``. ``scores`` is the same array as ``distances``.
    """

    ids: np.ndarray
    distances: np.ndarray

    @property
    def scores(self) -> np.ndarray:
        return self.distances


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(s, s + n)`` for every ``(s, n)`` pair."""
    ends = np.cumsum(lengths)
    total = int(ends[-1]) if ends.size else 0
    if total == 0:
        return np.empty(0, dtype=np.int64)
    shift = np.repeat(starts - (ends - lengths), lengths)
    shift += np.arange(total, dtype=np.int64)
    return shift


class EdgeRouter:
    """Read-only k-NN search over an edge snapshot (see ``m2m.edge.snapshot``).

    ``config_path``: the snapshot's ``m2m_config.yaml`` or its folder. ``verify`` (default)
    checks every file's SHA-256 at load; sizes, dtypes and shapes are checked always.
    Thread-safe: searches only read.
    """

    def __init__(self, config_path: str | os.PathLike[str], *, verify: bool = True) -> None:
        started = time.perf_counter()
        self.directory, cfg = read_config(config_path)
        self.config = cfg
        arrays = load_arrays(self.directory, cfg, verify=verify)
        try:
            self._setup(cfg, arrays)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise SnapshotCorruptError(f"edge snapshot {self.directory} is inconsistent: {exc!r}") from None
        self._id_lookup: dict[str, int] | None = None
        self._lookup_lock = threading.Lock()
        self.load_seconds = time.perf_counter() - started
        log.info(
            "edge snapshot %s (%s, %d vectors) loaded in %.3fs",
            self.directory,
            self.quantization,
            self._n,
            self.load_seconds,
        )

    # ---- loading -------------------------------------------------------------------------
    def _setup(self, cfg: dict[str, Any], a: dict[str, np.ndarray]) -> None:
        def need(cond: bool, what: str) -> None:
            if not cond:
                raise SnapshotCorruptError(f"edge snapshot {self.directory}: {what}")

        self._dim = int(cfg["dim"])
        self._metric = str(cfg["metric"])
        need(self._metric in ("cosine", "ip", "l2"), f"unknown metric {self._metric!r}")
        self.quantization = str(cfg["quantization"])
        self._n = int(cfg["n_vectors"])
        self._n_lists = int(cfg["n_lists"])
        s = cfg["search"]
        self._default_n_probe = max(1, int(s["default_n_probe"]))
        self._rerank = int(s["rerank"])
        self._codec = str(s["codec"])
        self._route_qv = bool(s["route_in_code_space"])
        self._coarse_probe_param = s.get("coarse_probe")
        self._route_flat_cells = int(s["route_flat_cells"])
        calib = s.get("calibration")
        self._calib = None if not calib else (np.asarray(calib["n_probe"]), np.asarray(calib["recall_at_10"]))
        l2 = self._metric == "l2"
        self._alpha = np.float32(2.0 if l2 else 1.0)  # distance = bias - alpha * q·x + const
        self._route_alpha = np.float32(1.0 if self._metric == "ip" else 2.0)
        n, d, nl = self._n, self._dim, self._n_lists

        # small arrays live in memory; the per-row ones stay memory-mapped
        small = lambda name: np.array(a[name])  # noqa: E731
        self._coarse = small("coarse")
        self._coarse_bias = small("coarse_bias")
        self._fine_table = small("fine_table")
        self._route_ext = small("route")
        self._route = self._route_ext[:-1]
        self._route_bias_ext = small("route_bias")
        self._route_bias = self._route_bias_ext[:-1]
        self._offsets = small("offsets")
        self._sizes = np.diff(self._offsets)
        codec_a, codec_b = small("codec_a"), small("codec_b")
        need(self._coarse.ndim == 2 and self._coarse.shape[1] == d, "coarse centroids have the wrong shape")
        need(self._route_ext.shape[0] == nl + 1 and self._route_bias_ext.shape == (nl + 1,), "route size")
        need(self._offsets.shape == (nl + 1,) and self._offsets[0] == 0 and self._offsets[-1] == n, "offsets")
        need(bool((self._sizes >= 0).all()), "offsets decrease")
        need(self._fine_table.shape[0] == self._coarse.shape[0], "fine table rows")
        need(bool(((self._fine_table >= 0) & (self._fine_table <= nl)).all()), "fine table entries")
        if self._codec in ("pca", "pca8"):
            self._cmean, self._caxes = codec_a, codec_b
            need(self._caxes.shape[0] == d, "PCA axes")
            if self._codec == "pca8":  # int8 PCA coordinates: x ≈ mu + V (lo + scale (c + 128))
                self._cscale = small("codec_d")
                self._cshift = small("codec_c") + np.float32(128.0) * self._cscale
                need(self._cscale.shape == (self._caxes.shape[1],), "PCA8 scale")
        elif self._codec == "sq8":
            self._clo, self._cscale = codec_a, codec_b
            self._cshift = self._clo + np.float32(128.0) * self._cscale
        else:
            need(False, f"unknown LOD 1 codec {self._codec!r}")
        rdim = self._caxes.shape[1] if (self._route_qv and self._codec != "sq8") else d
        need(self._route_ext.shape[1] == rdim, "routing matrix width")

        self._vecs = np.asarray(a["vectors"])
        need(self._vecs.shape == (n, d), "vectors shape")
        self._bias = np.asarray(a["bias"]) if l2 else None
        need(self._bias is None or self._bias.shape == (n,), "bias shape")
        self._codes = np.asarray(a["codes"])
        need(self._codes.shape[0] == n, "codes rows")
        # int8 snapshots of a PCA index: codes quantised per dimension (an offset does not
        # change a query's ranking, so only the scale is needed at search time)
        self._code_scale = small("code_scale") if "code_scale" in a else None
        if self.quantization == "float32":
            need(self._vecs.dtype == np.float32, "float32 snapshot with non-float32 vectors")
        else:
            need(self._vecs.dtype == np.int8, "int8 snapshot with non-int8 vectors")
            self._vlo, self._vscale = small("vec_lo"), small("vec_scale")
            self._vshift = self._vlo + np.float32(128.0) * self._vscale
        if cfg["ids_format"] == "unicode":
            self._ids = np.asarray(a["ids"])
            need(self._ids.shape == (n,), "ids length")
            self._ids_utf8 = None
        else:
            self._ids = None
            self._ids_utf8 = np.asarray(a["ids_utf8"])
            self._ids_off = np.asarray(a["ids_offsets"])
            need(self._ids_off.shape == (n + 1,), "id offsets length")
        self._has_metadata = bool(cfg.get("metadata"))
        if self._has_metadata:
            self._meta_off = np.asarray(a["metadata_offsets"])
            need(self._meta_off.shape == (n + 1,), "metadata offsets length")
            path = self.directory / cfg["files"]["metadata"]["file"]
            self._meta = (
                np.memmap(path, dtype=np.uint8, mode="r") if self._meta_off[-1] else np.zeros(0, np.uint8)
            )
            need(self._meta.shape[0] == int(self._meta_off[-1]), "metadata file length")

    def verify(self) -> None:
        """Re-hash every file of the snapshot; raises SnapshotCorruptError naming a bad file."""
        verify_files(self.directory, self.config["files"], hashes=True)

    # ---- properties ----------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def metric(self) -> str:
        return self._metric

    @property
    def n_lists(self) -> int:
        return self._n_lists

    @property
    def default_n_probe(self) -> int:
        return self._default_n_probe

    @property
    def has_metadata(self) -> bool:
        return self._has_metadata

    # ---- ids & metadata --------------------------------------------------------------------
    def _ids_of(self, rows: np.ndarray) -> np.ndarray:
        """String ids of rows (``-1`` -> ``""``), same shape as ``rows``."""
        flat = rows.ravel()
        ok = flat >= 0
        if self._ids is not None:
            out = np.full(flat.shape, "", dtype=self._ids.dtype)
            out[ok] = self._ids[flat[ok]]
            return out.reshape(rows.shape)
        buf, off = self._ids_utf8, self._ids_off
        strs = [bytes(buf[off[r] : off[r + 1]]).decode("utf-8") if r >= 0 else "" for r in flat.tolist()]
        return np.array(strs, dtype=str).reshape(rows.shape) if strs else np.zeros(rows.shape, dtype="<U1")

    def _all_ids(self) -> list[str]:
        if self._ids is not None:
            return self._ids.tolist()
        data, off = bytes(self._ids_utf8), self._ids_off.tolist()
        return [data[off[i] : off[i + 1]].decode("utf-8") for i in range(self._n)]

    def row_of(self, id: str) -> int:
        """Row of an id (a dict built on first use); NotFoundError if absent."""
        if self._id_lookup is None:
            with self._lookup_lock:
                if self._id_lookup is None:
                    self._id_lookup = {s: i for i, s in enumerate(self._all_ids())}
        row = self._id_lookup.get(id)
        if row is None:
            raise NotFoundError(f"id {id!r} is not in the edge snapshot")
        return row

    def get_metadata(self, id: str) -> Any:
        """Metadata of one id as exported (``None`` where the item had none)."""
        if not self._has_metadata:
            raise InvalidArgumentError(
                "this edge snapshot was exported without metadata (include_metadata=True)"
            )
        if not isinstance(id, str):
            raise InvalidArgumentError(f"id must be a string, got {type(id).__name__}")
        row = self.row_of(id)
        line = bytes(self._meta[self._meta_off[row] : self._meta_off[row + 1]])
        try:
            return json.loads(line)
        except ValueError:
            raise SnapshotCorruptError(f"metadata of {id!r} in {self.directory} is not valid JSON") from None

    # ---- search ----------------------------------------------------------------------------
    def search(
        self,
        query: Any,
        k: int = 10,
        n_probe: int | None = None,
        *,
        target_recall: float | None = None,
    ) -> SearchResult:
        """The ``k`` nearest items to one query ``(d,)`` or a batch ``(m, d)``.

        ``n_probe`` lists are scanned; by default the snapshot's calibrated default (or the
        fewest that reached ``target_recall`` when the index was built).
        """
        q = np.asarray(query)
        if q.dtype.kind not in "fiu":
            raise InvalidVectorError(f"query must be numeric, got dtype {q.dtype}")
        single = q.ndim == 1
        q = np.ascontiguousarray(q[None, :] if single else q, dtype=np.float32)
        if q.ndim != 2:
            raise InvalidVectorError(f"query must be 1-D or 2-D, got shape {q.shape}")
        if q.shape[1] != self._dim:
            raise DimensionMismatchError(f"query has dimension {q.shape[1]}, the snapshot has {self._dim}")
        if not np.isfinite(q).all():
            raise InvalidVectorError("query contains NaN or inf")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidArgumentError(f"k must be a positive int, got {k!r}")
        k = int(k)
        npb = self._n_probe(n_probe, target_recall)
        if self._metric == "cosine":
            norms = np.sqrt(np.einsum("ij,ij->i", q, q))[:, None]
            q = q / np.where(norms > 0, norms, np.float32(1.0))
        if npb >= self._n_lists:
            dist, rows = self._exhaustive(q, k)
        else:
            dist = np.empty((q.shape[0], k), dtype=np.float32)
            rows = np.empty((q.shape[0], k), dtype=np.int64)
            for i in range(q.shape[0]):
                dist[i], rows[i] = self._search_one(q[i], k, npb)
            self._top_up(q, k, npb, dist, rows)
        ids = self._ids_of(rows)
        return SearchResult(ids[0], dist[0]) if single else SearchResult(ids, dist)

    def _top_up(self, q: np.ndarray, k: int, n_probe: int, dist: np.ndarray, rows: np.ndarray) -> None:
        """Never fewer than ``min(k, n)`` results (as the index does): queries whose probed
        lists held too few rows are searched again with twice the probes, at last exhaustively."""
        need = min(k, self._n)
        short = np.flatnonzero((rows >= 0).sum(axis=1) < need)
        while short.size and n_probe < self._n_lists:
            n_probe = min(self._n_lists, 2 * n_probe)
            if n_probe >= self._n_lists:
                dist[short], rows[short] = self._exhaustive(q[short], k)
                return
            for i in short:
                dist[i], rows[i] = self._search_one(q[i], k, n_probe)
            short = short[(rows[short] >= 0).sum(axis=1) < need]

    def _n_probe(self, n_probe: int | None, target_recall: float | None) -> int:
        if n_probe is not None:
            if isinstance(n_probe, bool) or not isinstance(n_probe, (int, np.integer)) or n_probe < 1:
                raise InvalidArgumentError(f"n_probe must be a positive int, got {n_probe!r}")
            return int(min(n_probe, self._n_lists))
        if target_recall is None:
            return min(self._default_n_probe, self._n_lists)
        if isinstance(target_recall, bool) or not 0.0 < float(target_recall) <= 1.0:
            raise InvalidArgumentError(f"target_recall must be in (0, 1], got {target_recall!r}")
        if self._calib is None:
            return self._n_lists
        grid, recall = self._calib
        return n_probe_from_curve(grid, recall, float(target_recall), self._n_lists)

    def _coarse_probe(self, n_probe: int) -> int:
        nc = self._coarse.shape[0]
        if self._coarse_probe_param is not None:
            cp = int(self._coarse_probe_param)
        elif self._route.size <= self._route_flat_cells:
            return nc
        else:
            cp = max(8, math.ceil(3.0 * n_probe / (self._n_lists / nc)))
        cp = max(cp, math.ceil(n_probe / self._fine_table.shape[1]))
        return int(min(nc, cp))

    def _prepare(self, q: np.ndarray) -> tuple[np.ndarray, float]:
        """LOD 1 query form: ``q·x ≈ const + qv·code``."""
        if self._codec == "pca":
            return q @ self._caxes, float(q @ self._cmean)
        if self._codec == "pca8":
            p = q @ self._caxes
            return p * self._cscale, float(q @ self._cmean) + float(p @ self._cshift)
        return q * self._cscale, float(q @ self._cshift)

    def _route_lists(self, q: np.ndarray, rq: np.ndarray, n_probe: int) -> np.ndarray:
        """The ``n_probe`` nearest fine lists of one query (unordered)."""
        nc = self._coarse.shape[0]
        cp = self._coarse_probe(n_probe)
        ra = self._route_alpha
        if cp < nc:
            cd = self._coarse @ q
            cd *= -ra
            cd += self._coarse_bias
            top = np.argpartition(cd, cp - 1)[:cp]
            fids = self._fine_table[top].ravel()
            fd = self._route_ext[fids] @ rq
            fd *= -ra
            fd += self._route_bias_ext[fids]
        else:
            fids = None
            fd = self._route @ rq
            fd *= -ra
            fd += self._route_bias
        if n_probe < fd.shape[0]:
            sel = np.argpartition(fd, n_probe - 1)[:n_probe]
            lists, ld = (sel if fids is None else fids[sel]), fd[sel]
        else:
            lists, ld = (np.arange(fd.shape[0]) if fids is None else fids), fd
        if fids is not None:
            lists = lists[np.isfinite(ld)]  # padding entries of the fine table
        return lists

    def _exact_const(self, q: np.ndarray) -> float:
        if self._metric == "l2":
            return float(q @ q)
        return 1.0 if self._metric == "cosine" else 0.0

    def _search_one(self, q: np.ndarray, k: int, n_probe: int) -> tuple[np.ndarray, np.ndarray]:
        qv, _ = self._prepare(q)
        lists = self._route_lists(q, qv if self._route_qv else q, n_probe)
        rows = _ranges(self._offsets[lists], self._sizes[lists])
        codes = self._codes[rows]
        if codes.dtype != np.float32:
            codes = codes.astype(np.float32)
        if self._code_scale is not None:
            qv = qv * self._code_scale
        s = codes @ (qv * -self._alpha)
        if self._bias is not None:
            s += self._bias[rows]
        depth = self._rerank * k
        if depth < s.shape[0]:
            rows = rows[np.argpartition(s, depth - 1)[:depth]]
        if self.quantization == "float32":
            d = self._vecs[rows] @ (q * -self._alpha)
            if self._bias is not None:
                d += self._bias[rows]
        else:
            d = self._int8_scores(q, rows)
        d += self._exact_const(q)
        if self._metric == "l2":
            np.maximum(d, 0.0, out=d)
        return _best(d, rows, k)

    def _int8_scores(self, q: np.ndarray, rows: np.ndarray | slice) -> np.ndarray:
        """``bias - alpha * q·x̂`` of the decoded int8 rows (without the query constant)."""
        codes = self._vecs[rows].astype(np.float32)
        d = codes @ (q * self._vscale * -self._alpha)
        d += np.float32(-self._alpha * float(q @ self._vshift))
        if self._bias is not None:
            d += self._bias[rows]
        return d

    def _exhaustive(self, qs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Score every row (exactly for float32 snapshots)."""
        m, n = qs.shape[0], self._n
        out_d = np.full((m, k), np.inf, dtype=np.float32)
        out_r = np.full((m, k), -1, dtype=np.int64)
        step = max(1, _EXHAUSTIVE_CELLS // max(1, m))
        for i in range(m):
            q = qs[i]
            best_d, best_r = out_d[i], out_r[i]
            for s in range(0, n, step):
                blk = slice(s, min(n, s + step))
                if self.quantization == "float32":
                    d = self._vecs[blk] @ (q * -self._alpha)
                    if self._bias is not None:
                        d += self._bias[blk]
                else:
                    d = self._int8_scores(q, blk)
                d += self._exact_const(q)
                if self._metric == "l2":
                    np.maximum(d, 0.0, out=d)
                cd = np.concatenate([best_d, d])
                cr = np.concatenate([best_r, np.arange(blk.start, blk.stop, dtype=np.int64)])
                best_d, best_r = _best(cd, cr, k)
            out_d[i], out_r[i] = best_d, best_r
        return out_d, out_r


def _best(d: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` (distance, row) pairs, sorted; padded with ``inf`` / ``-1``."""
    if k < d.shape[0]:
        part = np.argpartition(d, k - 1)[:k]
        d, rows = d[part], rows[part]
    order = np.argsort(d)
    d, rows = d[order].astype(np.float32, copy=False), rows[order]
    if d.shape[0] == k and np.isfinite(d[-1]):
        return d, rows
    out_d = np.full(k, np.inf, dtype=np.float32)
    out_r = np.full(k, -1, dtype=np.int64)
    fin = np.isfinite(d)
    m = int(fin.sum())
    out_d[:m], out_r[:m] = d[fin], rows[fin]
    return out_d, out_r
