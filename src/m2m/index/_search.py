"""HRM2 search paths: one query (a short run of NumPy calls) and batches (grouped by list).

Single query: route (coarse scores -> fine centroids of the nearest coarse clusters -> the
``n_probe`` nearest fine lists), gather the probed lists' rows with one concatenated index,
score their codes with one matrix-vector product (LOD 1), keep ``rerank * k`` candidates and
re-rank them with exact float32 vectors (LOD 2).

Batch: the same routing as matrix products, then the (query, list) pairs are grouped by list
so every probed list is scored against all its queries with one matrix product.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from m2m.errors import DimensionMismatchError, InvalidArgumentError, InvalidVectorError
from m2m.index import _kernels
from m2m.index._batch import _const_batch, _finish, route_batch, search_batch
from m2m.index._layout import ROUTE_FLAT_CELLS, coarse_probe, pad_results

__all__ = ["ROUTE_FLAT_CELLS", "coarse_probe", "route_batch", "search", "search_batch", "search_one"]
from m2m.types import Metric

BATCH_MIN = 8  # batches smaller than this run query by query
BRUTE_FACTOR = 2.0  # exact search over the allowed rows when it costs <= this x the index scan


# ---- argument handling ------------------------------------------------------------------
def _queries(ix, queries: np.ndarray) -> tuple[np.ndarray, bool]:
    q = np.asarray(queries)
    if q.dtype.kind not in "fiu":
        raise InvalidVectorError(f"queries must be numeric, got dtype {q.dtype}")
    single = q.ndim == 1
    q = np.ascontiguousarray(q[None, :] if single else q, dtype=np.float32)
    if q.ndim != 2:
        raise InvalidVectorError(f"queries must be 1-D or 2-D, got shape {q.shape}")
    if q.shape[1] != ix._dim:
        raise DimensionMismatchError(f"queries have dimension {q.shape[1]}, the index has {ix._dim}")
    if not np.isfinite(q).all():
        raise InvalidVectorError("queries contain NaN or inf")
    return q, single


def _n_probe(ix, n_probe: int | None, target_recall: float | None) -> int:
    if n_probe is not None:
        if isinstance(n_probe, bool) or not isinstance(n_probe, (int, np.integer)) or n_probe < 1:
            raise InvalidArgumentError(f"n_probe must be a positive int, got {n_probe!r}")
        return int(min(n_probe, ix.n_lists))
    if target_recall is not None:
        return ix.n_probe_for(float(target_recall))
    return ix.n_probe_for(ix.params.default_recall)


def _allowed(ix, allowed: np.ndarray | None) -> np.ndarray | None:
    if allowed is None:
        return None
    a = np.asarray(allowed)
    if a.dtype != np.bool_ or a.ndim != 1:
        raise InvalidArgumentError(
            f"allowed must be a 1-D bool mask indexed by slot, got {a.dtype} {a.shape}"
        )
    need = ix._row_of_slot.shape[0]
    if a.shape[0] < need:  # slots past the end of the mask are not allowed
        a = np.concatenate([a, np.zeros(need - a.shape[0], dtype=bool)])
    return a


# ---- single query -----------------------------------------------------------------------
# The single-query path ranks by *similarity* (larger is better) to save NumPy calls:
# sim = q·x - bias/alpha, so distance = const - alpha * sim for every metric.


def route_one(ix, q: np.ndarray, qv: np.ndarray, n_probe: int) -> np.ndarray:
    """The ``n_probe`` nearest fine lists (unordered)."""
    nc = ix._coarse.shape[0]
    cp = coarse_probe(ix, n_probe)
    rq = qv if ix._route_qv else q
    if cp < nc:
        cs = ix._coarse @ q
        cs -= ix._coarse_hbias
        top = np.argpartition(cs, nc - cp)[nc - cp :]
        fids = ix._fine_table[top].ravel()
        g = ix._route_ext[fids] @ rq
        g -= ix._fine_hbias_ext[fids]
        n = g.shape[0]
        if n_probe < n:
            sel = np.argpartition(g, n - n_probe)[n - n_probe :]
            lists, g = fids[sel], g[sel]
        else:
            lists = fids
        return lists[g > -np.inf]  # drop the padding (dummy list)
    n = ix._route.shape[0]
    if n_probe >= n:
        return np.arange(n)
    # int8 centroids when the matrix is large (the codes' shift adds the same to every list)
    r8 = ix._route8
    g = ix._route @ rq if r8 is None else _kernels.scan_block(r8, rq * ix._route8_scale)
    g -= ix._fine_hbias
    return np.argpartition(g, n - n_probe)[n - n_probe :]


def _rows_only(ix, lists: np.ndarray) -> np.ndarray:
    """Row numbers of the probed lists (their blocks, then any overflow rows of theirs)."""
    ids = lists.tolist()
    rb = ix._row_blocks
    rows = np.concatenate([rb[j] for j in ids]) if ids else np.empty(0, np.int64)
    if ix._n_rows > ix._n_main:
        rows = np.concatenate([rows, _overflow_rows(ix, lists)])
    return rows


def _overflow_rows(ix, lists: np.ndarray) -> np.ndarray:
    flag = np.zeros(ix.n_lists + 1, dtype=bool)
    flag[lists] = True
    return ix._n_main + np.flatnonzero(flag[ix._list[ix._n_main : ix._n_rows]])


def _ranges(ix, lists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, ends)`` of the probed lists' blocks, then one range per overflow row."""
    starts, ends = ix._offsets[lists], ix._offsets[lists + 1]
    if ix._n_rows > ix._n_main:
        extra = _overflow_rows(ix, lists)
        if extra.shape[0]:
            starts, ends = np.concatenate([starts, extra]), np.concatenate([ends, extra + 1])
    return starts, ends


def _rows_at(starts: np.ndarray, ends: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Rows at positions ``pos`` of the ranges ``[starts, ends)`` laid end to end."""
    lens = ends - starts
    cum = np.cumsum(lens)
    part = np.searchsorted(cum, pos, side="right")
    return starts[part] + pos - (cum[part] - lens[part])


def _score(block: np.ndarray, qv: np.ndarray) -> np.ndarray:
    """``block @ qv``; int8 blocks through the compiled kernel when it is there (the same
    arithmetic as the fused in-memory scan, so tiered and in-memory scores agree bit for bit),
    else converted to float32 one list at a time (a converted list stays in cache)."""
    if block.dtype == np.int8 and _kernels.available():
        return _kernels.scan_block(block, qv)
    return block.astype(np.float32, copy=False) @ qv


def scan_one(ix, qv: np.ndarray, lists: np.ndarray, allowed, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """LOD 1: ``(rows, approximate similarities)`` of the ``depth`` best probed rows (unordered).

    similarity = qv·code - bias/alpha (the per-query constant is left to the callers); the
    bias (``||x||²`` for l2, ``inf`` for removed rows) is skipped when it is all zero.
    int8 codes in memory are scored by the compiled kernel over the probed ranges (filter and
    bias fused; with a filter only the allowed rows come back). Otherwise list by list:
    unfiltered, each probed list's block is scored where it lies (one product per list:
    copying the probed codes cost more than scoring them, measured); filtered, only the
    allowed rows are gathered and scored.
    """
    codes = ix._codes
    if codes.dtype == np.int8 and type(codes) is np.ndarray and _kernels.available():
        starts, ends = _ranges(ix, lists)
        s, rows = _kernels.scan_ranges(
            codes,
            starts,
            ends,
            qv,
            ix._hbias if ix._bias_needed else None,
            ix._slots if allowed is not None else None,
            None if allowed is None else np.ascontiguousarray(allowed),
        )
    elif allowed is None:
        cb = ix._code_blocks
        parts = [_score(cb[j], qv) for j in lists.tolist()]
        starts, ends = _ranges(ix, lists)
        extra = starts[lists.shape[0] :]
        if extra.shape[0]:
            parts.append(_score(codes[extra], qv))
        s = np.concatenate(parts) if parts else np.empty(0, np.float32)
        rows = None
        if ix._bias_needed:
            rows = _rows_at(starts, ends, np.arange(s.shape[0]))
            s -= ix._hbias[rows]
    else:
        rows = _rows_only(ix, lists)
        rows = rows[allowed[ix._slots[rows]]]
        s = _score(codes[rows], qv)
        if ix._bias_needed:
            s -= ix._hbias[rows]
    n = s.shape[0]
    if depth < n:
        part = np.argpartition(s, n - depth)[n - depth :]
        s = s[part]
        rows = rows[part] if rows is not None else _rows_at(starts, ends, part)
    elif rows is None:
        rows = _rows_at(starts, ends, np.arange(n))
    return rows, s


def _lod1_const(ix, q: np.ndarray, qc) -> float:
    qc = float(qc)
    if ix._metric is Metric.L2:
        return float(q @ q) - 2.0 * qc
    if ix._metric is Metric.COSINE:
        return 1.0 - qc
    return -qc


def _exact_const(ix, q: np.ndarray) -> float:
    if ix._metric is Metric.L2:
        return float(q @ q)
    return 1.0 if ix._metric is Metric.COSINE else 0.0


def _top_sim(ix, sim: np.ndarray, slots_of, const: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` of similarities as ``(distances, slots)``; ``slots_of(idx)`` maps positions."""
    n = sim.shape[0]
    idx = np.argpartition(sim, n - k)[n - k :] if k < n else np.arange(n)
    top = sim[idx]
    order = np.argsort(top)[::-1]
    d = top[order]
    d *= np.float32(-ix._alpha)
    d += np.float32(const)
    if ix._metric is Metric.L2:
        np.maximum(d, 0.0, out=d)
    slots = slots_of(idx[order])
    if d.shape[0] == k and d[-1] < np.inf:  # the common case: k finite results
        return d, slots
    out_d, out_s = pad_results(d[None, :], slots[None, :], k)
    return out_d[0], out_s[0]


def rerank_one(ix, q: np.ndarray, cand: np.ndarray, cand_s: np.ndarray, k: int, masked: bool):
    """LOD 2: exact distances of the candidates; best ``k`` as ``(dist, slots)`` 1-D arrays.

    ``masked``: some candidates may be filtered out (their LOD 1 similarity is -inf)."""
    e = ix._vecs[cand] @ q
    if ix._bias_needed:
        e -= ix._hbias[cand]
    if masked:
        e[cand_s == -np.inf] = -np.inf
    return _top_sim(ix, e, lambda i: ix._slots[cand[i]], _exact_const(ix, q), k)


def lod0_one(ix, q: np.ndarray, lists: np.ndarray, k: int, allowed) -> tuple[np.ndarray, np.ndarray]:
    """LOD 0: representatives of the routed fine lists, ranked by their exact distance."""
    reps = ix._rep_slot[lists]
    vec = ix._rep_vec[lists]
    e = vec @ q
    if ix._metric is Metric.L2:
        e -= 0.5 * np.einsum("ij,ij->i", vec, vec)
    bad = reps < 0
    if allowed is not None:
        bad |= ~allowed[np.maximum(reps, 0)]
    e[bad] = -np.inf
    return _top_sim(ix, e, lambda i: reps[i], _exact_const(ix, q), k)


def search_one(ix, q: np.ndarray, k: int, n_probe: int, lod: int, allowed) -> tuple[np.ndarray, np.ndarray]:
    qv, qc = ix._codec.prepare_one(q)
    lists = route_one(ix, q, qv, max(n_probe, k) if lod == 0 else n_probe)
    if lod == 0:
        return lod0_one(ix, q, lists, k, allowed)
    depth = k if lod == 1 else ix.params.rerank * k
    cand, cand_s = scan_one(ix, qv, lists, allowed, depth)
    if lod == 1:
        return _top_sim(ix, cand_s, lambda i: ix._slots[cand[i]], _lod1_const(ix, q, qc), k)
    return rerank_one(ix, q, cand, cand_s, k, allowed is not None or ix._n_dead > 0)


# ---- filters ----------------------------------------------------------------------------
def _brute(ix, qs: np.ndarray, k: int, allowed: np.ndarray):
    """Exact search over the allowed live rows only."""
    slots = np.flatnonzero(allowed[: ix._row_of_slot.shape[0]])
    rows = ix._row_of_slot[slots]
    rows = rows[rows >= 0]
    if rows.size == 0:
        m = qs.shape[0]
        return np.full((m, k), np.inf, np.float32), np.full((m, k), -1, np.int64)
    d = qs @ ix._vecs[rows].T
    d *= -ix._alpha
    d += ix._bias[rows]
    d += _const_batch(ix, qs, 2)[:, None].astype(np.float32)
    return _finish(d, np.broadcast_to(ix._slots[rows], d.shape), k, ix._metric is Metric.L2)


def _exhaustive(ix, qs: np.ndarray, k: int, allowed: np.ndarray | None):
    """Exact scan of every live (and allowed) row: what probing every list amounts to."""
    if allowed is not None:
        return _brute(ix, qs, k, allowed)
    n = ix._n_rows
    out_d = np.empty((qs.shape[0], k), np.float32)
    out_s = np.empty((qs.shape[0], k), np.int64)
    const = _const_batch(ix, qs, 2).astype(np.float32)
    bad = None if allowed is None else ~allowed[ix._slots[:n]]
    step = max(1, (1 << 24) // max(1, n))
    for s in range(0, qs.shape[0], step):
        d = qs[s : s + step] @ ix._vecs[:n].T
        d *= -ix._alpha
        d += ix._bias[:n]
        d += const[s : s + step, None]
        if bad is not None:
            d[:, bad] = np.inf
        out_d[s : s + step], out_s[s : s + step] = _finish(
            d, np.broadcast_to(ix._slots[:n], d.shape), k, ix._metric is Metric.L2
        )
    return out_d, out_s


def filtered_plan(ix, n_probe: int, k: int, allowed: np.ndarray) -> tuple[bool, int]:
    """``(use_brute_force, n_probe)`` for a mask: exact over the allowed rows when cheaper than
    the index scan the selectivity needs, else an n_probe raised to cover depth k/selectivity."""
    n_allowed = int(np.count_nonzero(allowed))
    live = max(1, ix.n_vectors)
    sel = min(1.0, n_allowed / live)
    if sel <= 0.0:
        return True, n_probe
    if ix.calibration is not None:
        npf = ix.calibration.filtered_n_probe(n_probe, k, sel, ix.n_lists)
    else:
        npf = int(min(ix.n_lists, math.ceil(n_probe / math.sqrt(sel))))
    # the in-index scan looks up every probed row's slot (~4 units) and reads the codes of the
    # allowed ones; brute force reads every allowed vector. Exact wins ties up to BRUTE_FACTOR.
    rows = npf * (ix._n_main / max(1, ix.n_lists))
    scan_cost = rows * (sel * ix._codec.code_dim + 4.0) + ix.params.rerank * k * ix._dim
    brute_cost = n_allowed * ix._dim
    return brute_cost <= BRUTE_FACTOR * scan_cost, npf


def _filtered(ix, qs: np.ndarray, k: int, n_probe: int, lod: int, allowed: np.ndarray, one: bool):
    brute, npf = filtered_plan(ix, n_probe, k, allowed)
    if brute:
        return _brute(ix, qs, k, allowed)
    if lod == 2 and npf >= ix.n_lists:
        return _exhaustive(ix, qs, k, allowed)
    if one:
        d, s = search_one(ix, qs[0], k, npf, lod, allowed)
        d, s = d[None, :], s[None, :]
    else:
        d, s = search_batch(ix, qs, k, npf, lod, allowed)
    return _top_up(ix, qs, k, npf, lod, allowed, d, s, k)


def _top_up(ix, qs, k, n_probe, lod, allowed, d, s, need):
    """Never fewer than ``need`` results while unseen items remain: queries short of them
    are searched again with twice the probes (at last exhaustively)."""
    short = np.flatnonzero((s >= 0).sum(axis=1) < need)
    while short.size and n_probe < ix.n_lists and lod != 0:
        n_probe = min(ix.n_lists, n_probe * 2)
        if lod == 2 and n_probe >= ix.n_lists:
            d2, s2 = _exhaustive(ix, qs[short], k, allowed)
        else:
            d2, s2 = search_batch(ix, qs[short], k, n_probe, lod, allowed)
        d[short], s[short] = d2, s2
        short = short[(s2 >= 0).sum(axis=1) < need]
    return d, s


# ---- entry points -----------------------------------------------------------------------
def search(ix, queries, k, n_probe, lod, allowed, target_recall):
    if (
        allowed is None
        and type(queries) is np.ndarray
        and queries.ndim == 1
        and queries.dtype == np.float32
        and type(k) is int
        and k > 0
        and lod in (1, 2)
        and queries.shape[0] == ix._dim
    ):  # hot path: one float32 query, no filter (checks kept, conversions skipped)
        if not np.isfinite(queries.sum()) and not np.isfinite(queries).all():
            raise InvalidVectorError("queries contain NaN or inf")
        npb = _n_probe(ix, n_probe, target_recall)
        if not (lod == 2 and npb >= ix.n_lists):
            d, s = search_one(ix, queries, k, npb, lod, None)
            if s[-1] >= 0 or (s >= 0).sum() >= ix.n_vectors:
                return d, s
            d, s = _top_up(
                ix, queries[None, :], k, npb, lod, None, d[None, :], s[None, :], min(k, ix.n_vectors)
            )
            return d[0], s[0]
    qs, single = _queries(ix, queries)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidArgumentError(f"k must be a positive int, got {k!r}")
    if lod not in (0, 1, 2):
        raise InvalidArgumentError(f"lod must be 0, 1 or 2, got {lod!r}")
    k = int(k)
    npb = _n_probe(ix, n_probe, target_recall)
    mask = _allowed(ix, allowed)
    one = qs.shape[0] < BATCH_MIN
    if lod == 2 and npb >= ix.n_lists:
        d, s = _exhaustive(ix, qs, k, mask)
    elif mask is not None:
        if one and qs.shape[0] > 1:
            parts = [_filtered(ix, qs[i : i + 1], k, npb, lod, mask, True) for i in range(qs.shape[0])]
            d, s = np.vstack([p[0] for p in parts]), np.vstack([p[1] for p in parts])
        else:
            d, s = _filtered(ix, qs, k, npb, lod, mask, one)
    elif one:
        res = [search_one(ix, qs[i], k, npb, lod, None) for i in range(qs.shape[0])]
        d, s = np.vstack([r[0] for r in res]), np.vstack([r[1] for r in res])
    else:
        d, s = search_batch(ix, qs, k, npb, lod, None)
    if mask is None and lod != 0 and npb < ix.n_lists:
        d, s = _top_up(ix, qs, k, npb, lod, None, d, s, min(k, ix.n_vectors))
    return (d[0], s[0]) if single else (d, s)


def progressive(
    ix, query, k, n_probe, allowed, target_recall
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    qs, _ = _queries(ix, query)
    if qs.shape[0] != 1:
        raise InvalidArgumentError("search_progressive takes one query")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidArgumentError(f"k must be a positive int, got {k!r}")
    q, k = qs[0], int(k)
    npb = _n_probe(ix, n_probe, target_recall)
    mask = _allowed(ix, allowed)
    if mask is not None:
        brute, npb = filtered_plan(ix, npb, k, mask)
        if brute:
            d, s = _brute(ix, qs, k, mask)
            for lod in (0, 1, 2):
                yield lod, d[0], s[0]
            return
    qv, qc = ix._codec.prepare_one(q)
    lists = route_one(ix, q, qv, max(npb, k))
    yield (0, *lod0_one(ix, q, lists, k, mask))
    if lists.shape[0] > npb:
        lists = route_one(ix, q, qv, npb)
    cand, cand_s = scan_one(ix, qv, lists, mask, ix.params.rerank * k)
    lod1 = _top_sim(ix, cand_s, lambda i: ix._slots[cand[i]], _lod1_const(ix, q, qc), k)
    yield (1, *lod1)
    yield (2, *rerank_one(ix, q, cand, cand_s, k, mask is not None or ix._n_dead > 0))
