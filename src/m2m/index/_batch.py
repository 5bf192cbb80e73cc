"""HRM2 batch search: the (query, list) pairs are grouped by list, so every probed list is
scored against all of its queries with one matrix product (see ``_search`` for one query)."""

from __future__ import annotations

import numpy as np

from m2m.index._layout import coarse_probe, pad_results, topk_rows
from m2m.types import Metric

_BATCH_CELLS = 1 << 24  # per-chunk budget of (query, candidate) cells
_BIG = np.float32(1e30)  # distances at or above this are treated as missing (see _scan_batch)


# ---- batches ----------------------------------------------------------------------------
def route_batch(ix, qs: np.ndarray, n_probe: int) -> np.ndarray:
    """``(m, n_probe)`` nearest fine lists per query (the dummy list ``n_lists`` pads)."""
    nc = ix._coarse.shape[0]
    cp = coarse_probe(ix, n_probe)
    ra = ix._route_alpha
    fd = (ix._codec.prepare(qs)[0] if ix._route_qv else qs) @ ix._route.T
    fd *= -ra
    fd += ix._fine_bias_ext[:-1]
    if cp < nc:
        cd = qs @ ix._coarse.T
        cd *= -ra
        cd += ix._coarse_bias
        top = np.argpartition(cd, cp - 1, axis=1)[:, :cp]
        chosen = np.zeros((qs.shape[0], nc), dtype=bool)
        chosen[np.arange(qs.shape[0])[:, None], top] = True
        fd[~chosen[:, ix._coarse_of_fine]] = np.inf
    if n_probe < fd.shape[1]:
        lists = np.argpartition(fd, n_probe - 1, axis=1)[:, :n_probe]
        ld = np.take_along_axis(fd, lists, axis=1)
    else:
        lists = np.broadcast_to(np.arange(fd.shape[1]), fd.shape).copy()
        ld = fd
    lists[~np.isfinite(ld)] = ix.n_lists
    return lists


def _scan_batch(ix, qs: np.ndarray, lists: np.ndarray, allowed, depth: int):
    """LOD 1 for a chunk: ``(rows (m, depth), partial distances (m, depth))`` per query.

    (query, list) pairs are grouped by list; each probed list is scored against all of its
    queries with one matrix product and written into a per-query row of a dense buffer.
    """
    m, n_probe = lists.shape
    n_lists = ix.n_lists
    sizes = np.append(ix._sizes, 0)[lists]  # the dummy list n_lists has no rows
    starts = np.append(ix._offsets[:-1], 0)[lists]
    local = np.cumsum(sizes, axis=1) - sizes
    width = max(1, int((local[:, -1] + sizes[:, -1]).max()))
    n_extra = ix._n_rows - ix._n_main
    total = width + n_extra
    qv, _ = ix._codec.prepare(qs)
    qv *= np.float32(-ix._alpha)  # the loop then writes distances directly
    # padding gets distinct huge values: argpartition slows down badly on runs of equal values
    pad_row = _BIG * (1.0 + np.arange(total, dtype=np.float32) * 1e-6)
    dots = np.empty((m, total), dtype=np.float32)
    dots[:] = pad_row
    flat_pos = (np.arange(m)[:, None] * total + local).ravel()
    pair_q = np.repeat(np.arange(m), n_probe)
    lst = lists.ravel()
    order = np.argsort(lst, kind="stable")
    lst_sorted = lst[order]
    bounds = np.flatnonzero(np.diff(lst_sorted)) + 1
    group_starts = np.concatenate(([0], bounds)).tolist()
    group_ends = np.concatenate((bounds, [lst_sorted.shape[0]])).tolist()
    dflat = dots.ravel()
    ar = np.arange(int(ix._sizes.max()) if ix._sizes.size else 0)
    codes, offsets, bias, slots = ix._codes, ix._offsets, ix._bias, ix._slots
    f32 = codes.dtype == np.float32
    use_bias = ix._bias_needed
    for g0, g1, j in zip(group_starts, group_ends, lst_sorted[group_starts].tolist(), strict=False):
        if j >= n_lists:
            continue
        lo, hi = int(offsets[j]), int(offsets[j + 1])
        if hi <= lo:
            continue
        pairs = order[g0:g1]
        blk = codes[lo:hi] if f32 else codes[lo:hi].astype(np.float32)
        sc = qv[pair_q[pairs]] @ blk.T
        if use_bias:
            sc += bias[lo:hi]
        if allowed is not None:
            sc[:, ~allowed[slots[lo:hi]]] = np.inf
        dflat[flat_pos[pairs][:, None] + ar[: hi - lo]] = sc
    if n_extra:
        ex = slice(ix._n_main, ix._n_rows)
        sc = qv @ codes[ex].astype(np.float32, copy=False).T
        sc += bias[ex]
        member = np.zeros((m, n_lists + 1), dtype=bool)
        member[np.arange(m)[:, None], lists] = True
        sc[~member[:, ix._list[ex]]] = np.inf
        if allowed is not None:
            sc[:, ~allowed[slots[ex]]] = np.inf
        dots[:, width:] = sc
    if allowed is not None or ix._n_dead or n_extra:  # filtered-out / removed rows hold inf
        bad = ~(dots < _BIG)
        if bad.any():
            dots[bad] = np.broadcast_to(pad_row, dots.shape)[bad]
    depth = min(depth, total)
    if depth < total:
        cols, best = topk_rows(dots, depth)
    else:
        cols, best = np.broadcast_to(np.arange(total), dots.shape), dots
    best[best >= _BIG] = np.inf
    # column -> row: find the (query, list) pair whose span holds the column
    flat = (np.arange(m)[:, None] * total + cols).ravel()
    pair = np.searchsorted(flat_pos, flat, side="right") - 1
    rows = starts.ravel()[pair] + (flat - flat_pos[pair])
    in_extra = (cols >= width).ravel()
    if n_extra and in_extra.any():
        rows[in_extra] = ix._n_main + cols.ravel()[in_extra] - width
    rows = rows.reshape(m, depth)
    rows[~np.isfinite(best)] = 0  # padding: any valid row, its distance stays inf
    return rows, best


def _const_batch(ix, qs: np.ndarray, lod: int) -> np.ndarray:
    sq = np.einsum("ij,ij->i", qs, qs) if ix._metric is Metric.L2 else None
    if lod == 1:
        _, qc = ix._codec.prepare(qs)
        if ix._metric is Metric.L2:
            return sq - 2.0 * qc
        return (1.0 - qc) if ix._metric is Metric.COSINE else -qc
    if ix._metric is Metric.L2:
        return sq
    return np.full(qs.shape[0], 1.0 if ix._metric is Metric.COSINE else 0.0, dtype=np.float32)


def _finish(d: np.ndarray, slots: np.ndarray, k: int, l2: bool):
    if l2:
        np.maximum(d, 0.0, out=d)
    kk = min(k, d.shape[1])
    cols, vals = topk_rows(d, kk)
    return pad_results(vals, np.take_along_axis(slots, cols, axis=1), k)


def search_batch(ix, qs: np.ndarray, k: int, n_probe: int, lod: int, allowed):
    """Batch search (any size); chunks queries so the candidate buffers stay bounded."""
    m = qs.shape[0]
    out_d = np.full((m, k), np.inf, dtype=np.float32)
    out_s = np.full((m, k), -1, dtype=np.int64)
    if m == 0:
        return out_d, out_s
    n_route = max(n_probe, k) if lod == 0 else n_probe
    per_query = max(1, n_route * int(ix._sizes.max()) + (ix._n_rows - ix._n_main))
    step = int(max(1, min(512, _BATCH_CELLS // per_query)))
    l2 = ix._metric is Metric.L2
    for s in range(0, m, step):
        q = qs[s : s + step]
        lists = route_batch(ix, q, n_route)
        if lod == 0:
            reps = np.append(ix._rep_slot, -1)[lists]
            vec = np.vstack([ix._rep_vec, np.zeros((1, ix._dim), np.float32)])[lists]
            d = -ix._alpha * np.einsum("md,mpd->mp", q, vec)
            if l2:
                d += np.einsum("mpd,mpd->mp", vec, vec)
            d += _const_batch(ix, q, 2)[:, None]
            bad = reps < 0
            if allowed is not None:
                bad |= ~allowed[np.maximum(reps, 0)]
            d[bad] = np.inf
            out_d[s : s + step], out_s[s : s + step] = _finish(d.astype(np.float32), reps, k, l2)
            continue
        depth = k if lod == 1 else ix.params.rerank * k
        cand, cand_d = _scan_batch(ix, q, lists, allowed, depth)
        if lod == 1:
            d = cand_d + _const_batch(ix, q, 1)[:, None].astype(np.float32)
        else:
            # one gather + product per query: the gathered block stays in cache
            # (a single (m, r, d) gather + einsum measured several times slower)
            d = np.empty(cand.shape, dtype=np.float32)
            vecs = ix._vecs
            for i in range(cand.shape[0]):
                np.matmul(vecs[cand[i]], q[i], out=d[i])
            d *= -ix._alpha
            d += ix._bias[cand]
            d += _const_batch(ix, q, 2)[:, None].astype(np.float32)
            d[~np.isfinite(cand_d)] = np.inf
        out_d[s : s + step], out_s[s : s + step] = _finish(d, ix._slots[cand], k, l2)
    return out_d, out_s
