"""Self-organised criticality over splats: near-duplicate avalanches and their statistics.

The threshold graph G_t joins items i, j when their similarity (as the caller's index
reports it, e.g. cosine) is ≥ t. An *avalanche* starts at an unvisited item with at
least one such neighbour: it topples, its above-threshold neighbours are examined and
topple in turn (breadth first) until no new item is reached. Avalanches are the
connected components of G_t with ≥ 2 items, found in index order; union–find over the
same pairs gives the groups. Statistics (see docs/splats.md):

- avalanche sizes and a discrete power-law fit ``P(s) ∝ s^{−τ}`` (Clauset, Shalizi &
  Newman 2009: MLE of τ for s ≥ s_min, s_min chosen by the KS distance);
- ``branching_ratio`` σ = ⟨k(k−1)⟩/⟨k⟩ over all items (k = above-threshold degree):
  the mean number of further items an item reached along an edge would topple if G_t
  were tree-like. σ < 1 subcritical (small groups), σ > 1 a giant cluster can form,
  σ ≈ 1 critical. Tight duplicate cliques of size g give k = g−1 and inflate σ to g−2;
  read it with ``largest_fraction`` and ``susceptibility``;
- ``offspring_ratio`` = mean number of new items toppled per toppled item = 1 − A/T
  (A avalanches, T toppled items), the Beggs–Plenz estimator on finite avalanches;
- ``largest_fraction`` (giant cluster share) and ``susceptibility`` χ = Σ s²/n over the
  groups other than the largest (mean finite-cluster size, peaks at the percolation point).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from m2m.errors import InvalidArgumentError, InvalidVectorError
from m2m.splats.vmf import DEFAULT_MAX_KAPPA, fit_vmf_groups

__all__ = [
    "AvalancheResult",
    "ConsolidatedSplats",
    "CriticalityStats",
    "NeighborFn",
    "PowerLawFit",
    "avalanche_scan",
    "avalanche_scan_pairs",
    "consolidate",
    "criticality_sweep",
    "find_near_duplicate_groups",
    "fit_power_law",
    "hurwitz_zeta",
    "threshold_pairs",
]

logger = logging.getLogger(__name__)

NeighborFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
"""``neighbor_fn(batch (b, d), k) -> (similarities (b, k), indices (b, k))``, larger = closer,
indices < 0 for padding. The item itself may be among its neighbours (it is ignored)."""


# --------------------------------------------------------------------------- power law
def _zeta_terms(tau: float, s_min: int, n_direct: int = 2000) -> tuple[float, float, float]:
    """``(ζ, −∂ζ/∂τ, ∂²ζ/∂τ²)`` of the Hurwitz zeta ``Σ_{s≥s_min} s^{−τ}`` (τ > 1).

    Direct sum of ``n_direct`` terms plus the Euler–Maclaurin tail (integral, ½f(N), −f'(N)/12);
    relative error < 1e-12 for τ ≥ 1.05.
    """
    s = np.arange(s_min, s_min + n_direct, dtype=np.float64)
    ls = np.log(s)
    p = np.exp(-tau * ls)
    z0, z1, z2 = p.sum(), (ls * p).sum(), (ls * ls * p).sum()
    big_n = float(s_min + n_direct)
    ln = math.log(big_n)
    a = tau - 1.0
    fn = big_n**-tau
    # tails of f0 = s^-τ, f1 = log s · s^-τ, f2 = log² s · s^-τ from N on
    i0 = big_n ** (1 - tau) / a
    i1 = big_n ** (1 - tau) * (ln / a + 1 / a**2)
    i2 = big_n ** (1 - tau) * (ln * ln / a + 2 * ln / a**2 + 2 / a**3)
    d0 = -tau * fn / big_n
    d1 = fn / big_n * (1 - tau * ln)
    d2 = fn / big_n * (2 * ln - tau * ln * ln)
    z0 += i0 + 0.5 * fn - d0 / 12
    z1 += i1 + 0.5 * ln * fn - d1 / 12
    z2 += i2 + 0.5 * ln * ln * fn - d2 / 12
    return z0, z1, z2


def hurwitz_zeta(tau: float, s_min: int) -> float:
    """``ζ(τ, s_min) = Σ_{s ≥ s_min} s^{−τ}`` for τ > 1 and integer s_min ≥ 1."""
    if not tau > 1 or s_min < 1:
        raise InvalidArgumentError("hurwitz_zeta needs tau > 1 and s_min >= 1")
    return _zeta_terms(float(tau), int(s_min))[0]


@dataclass(frozen=True)
class PowerLawFit:
    """Discrete power law ``P(s) = s^{−τ}/ζ(τ, s_min)`` for s ≥ s_min, fitted by MLE."""

    tau: float
    stderr: float  # 1/√(Fisher information)
    s_min: int
    n_tail: int  # number of sizes ≥ s_min used
    ks_distance: float  # sup |F_emp − F_fit| over the tail


def _mle_tau(sum_log: float, n: int, s_min: int) -> tuple[float, float]:
    """Solve ``ζ'(τ)/ζ(τ) = −mean(log s)`` by bisection (the log-likelihood is concave)."""
    target = sum_log / n
    lo, hi = 1.0001, 20.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        z0, z1, _ = _zeta_terms(mid, s_min)
        # E_τ[log s] = z1/z0 decreases with τ; find where it equals the sample mean
        if z1 / z0 > target:
            lo = mid
        else:
            hi = mid
    tau = 0.5 * (lo + hi)
    z0, z1, z2 = _zeta_terms(tau, s_min)
    var_log = z2 / z0 - (z1 / z0) ** 2
    return tau, 1.0 / math.sqrt(max(n * var_log, 1e-300))


def _ks_distance(sizes: np.ndarray, tau: float, s_min: int) -> float:
    s_max = int(sizes.max())
    grid = np.arange(s_min, s_max + 1, dtype=np.float64)
    pmf = grid**-tau / _zeta_terms(tau, s_min)[0]
    cdf_fit = np.cumsum(pmf)
    counts = np.bincount(sizes.astype(np.int64) - s_min, minlength=grid.size)
    cdf_emp = np.cumsum(counts) / sizes.size
    cdf_emp_before = np.r_[0.0, cdf_emp[:-1]]
    cdf_fit_before = np.r_[0.0, cdf_fit[:-1]]
    return float(max(np.max(np.abs(cdf_emp - cdf_fit)), np.max(np.abs(cdf_emp_before - cdf_fit_before))))


def fit_power_law(sizes: object, s_min: int | None = None, *, min_tail: int = 10) -> PowerLawFit:
    """Discrete power-law MLE (Clauset et al. 2009, eq. 3.5) of integer sizes ≥ 1.

    ``s_min=None`` tries every distinct size that leaves ≥ ``min_tail`` points in the tail
    and keeps the one with the smallest KS distance (their section 3.3).
    """
    s = np.asarray(sizes)
    if s.ndim != 1 or s.size == 0 or np.any(s < 1) or np.any(s != np.round(s)):
        raise InvalidArgumentError("sizes must be a non-empty 1-D array of integers >= 1")
    s = s.astype(np.int64)
    if s_min is not None:
        tail = s[s >= s_min]
        if tail.size < 2:
            raise InvalidArgumentError(f"fewer than 2 sizes >= s_min={s_min}")
        tau, se = _mle_tau(float(np.log(tail).sum()), tail.size, int(s_min))
        return PowerLawFit(tau, se, int(s_min), int(tail.size), _ks_distance(tail, tau, int(s_min)))
    best: PowerLawFit | None = None
    cands = np.unique(s)
    if cands.size > 50:  # bound the work: 50 candidates spread over the quantiles
        cands = np.unique(np.quantile(s, np.linspace(0, 1, 50), method="lower"))
    for cand in cands:
        tail = s[s >= cand]
        if tail.size < min_tail or np.unique(tail).size < 2:
            break
        fit = fit_power_law(tail, int(cand))
        if best is None or fit.ks_distance < best.ks_distance:
            best = fit
    if best is None:
        raise InvalidArgumentError(f"need at least {min_tail} sizes with two distinct values")
    return best


# --------------------------------------------------------------------------- graph
@dataclass(frozen=True)
class CriticalityStats:
    """What one threshold's avalanches look like (definitions in the module docstring)."""

    threshold: float
    n_items: int
    n_edges: int  # undirected pairs with similarity ≥ threshold
    n_toppled: int  # items in some avalanche (degree ≥ 1)
    n_avalanches: int
    mean_avalanche_size: float
    offspring_ratio: float  # 1 − A/T
    branching_ratio: float  # ⟨k(k−1)⟩/⟨k⟩ (nan without edges)
    mean_degree: float  # ⟨k⟩ over all items
    largest_fraction: float  # largest group / n_items
    susceptibility: float  # Σ_{groups except the largest} s² / n_items
    power_law: PowerLawFit | None  # None with < 10 avalanches or one distinct size


@dataclass(frozen=True)
class AvalancheResult:
    """Groups, per-item labels and avalanche statistics of one threshold."""

    groups: list[np.ndarray]  # member indices (sorted), groups of ≥ 2, largest first
    labels: np.ndarray  # (n,) group number in ``groups`` or −1
    avalanche_sizes: np.ndarray  # items toppled per avalanche, in the order they ran
    degrees: np.ndarray  # (n,) above-threshold neighbours per item (symmetrised)
    n_truncated: int  # items whose neighbour list was still all above threshold at max_k
    stats: CriticalityStats = field(repr=False)


def _collect_edges(
    vectors: np.ndarray,
    threshold: float,
    neighbor_fn: NeighborFn,
    k: int,
    max_k: int,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Directed above-threshold pairs ``(src, dst, sim)``, re-querying saturated rows with 2k."""
    n = vectors.shape[0]
    srcs: list[np.ndarray] = []
    dsts: list[np.ndarray] = []
    sims_out: list[np.ndarray] = []
    pending = np.arange(n)
    k_cur = min(k, n)
    n_truncated = 0
    while pending.size:
        saturated: list[np.ndarray] = []
        for lo in range(0, pending.size, batch_size):
            rows = pending[lo : lo + batch_size]
            sims, idx = neighbor_fn(vectors[rows], k_cur)
            sims = np.asarray(sims, dtype=np.float64)
            idx = np.asarray(idx)
            if sims.shape != idx.shape or sims.ndim != 2 or sims.shape[0] != rows.size:
                raise InvalidArgumentError(
                    f"neighbor_fn must return two ({rows.size}, k) arrays, got {sims.shape} and {idx.shape}"
                )
            valid = (idx >= 0) & (idx < n) & (idx != rows[:, None])
            above = valid & (sims >= threshold)
            # a row is saturated when every neighbour it could return was above threshold
            full = (idx.shape[1] >= k_cur) & np.all(above | (idx == rows[:, None]), axis=1)
            full &= above.sum(axis=1) > 0
            if k_cur < min(max_k, n):
                saturated.append(rows[full])
                keep = ~full
            else:
                n_truncated += int(full.sum())
                keep = np.ones(rows.size, bool)
            r, c = np.nonzero(above & keep[:, None])
            srcs.append(rows[r])
            dsts.append(idx[r, c].astype(np.int64))
            sims_out.append(sims[r, c])
        pending = np.concatenate(saturated) if saturated else np.zeros(0, np.int64)
        k_cur = min(2 * k_cur, max_k, n)
    cat = lambda a, dt: np.concatenate(a).astype(dt) if a else np.zeros(0, dt)  # noqa: E731
    return cat(srcs, np.int64), cat(dsts, np.int64), cat(sims_out, np.float64), n_truncated


def _union_find_labels(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component root of every item under the union of pairs (a_i, b_i) (path halving)."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(a.tolist(), b.tolist(), strict=True):
        ri, rj = find(i), find(j)
        if ri != rj:
            if ri < rj:
                parent[rj] = ri
            else:
                parent[ri] = rj
    return np.array([find(i) for i in range(n)], dtype=np.int64)


def _analyse(n: int, src: np.ndarray, dst: np.ndarray, threshold: float, n_truncated: int) -> AvalancheResult:
    """Symmetrise the pairs, run the avalanches (BFS), union–find the groups, and measure."""
    a, b = np.minimum(src, dst), np.maximum(src, dst)
    pairs = np.unique(np.stack([a, b], axis=1), axis=0) if a.size else np.zeros((0, 2), np.int64)
    both = np.concatenate([pairs, pairs[:, ::-1]]) if pairs.size else pairs
    degrees = np.bincount(both[:, 0], minlength=n) if both.size else np.zeros(n, np.int64)
    order = np.argsort(both[:, 0], kind="stable") if both.size else np.zeros(0, np.int64)
    nbrs = both[order, 1] if both.size else np.zeros(0, np.int64)
    offsets = np.r_[0, np.cumsum(degrees)]
    # avalanches: breadth-first toppling from each unvisited item that has a neighbour
    visited = np.zeros(n, dtype=bool)
    sizes: list[int] = []
    nbr_list = nbrs.tolist()
    off = offsets.tolist()
    for seed in np.flatnonzero(degrees > 0).tolist():
        if visited[seed]:
            continue
        visited[seed] = True
        frontier = [seed]
        size = 0
        while frontier:
            size += len(frontier)
            nxt = []
            for i in frontier:
                for j in nbr_list[off[i] : off[i + 1]]:
                    if not visited[j]:
                        visited[j] = True
                        nxt.append(j)
            frontier = nxt
        sizes.append(size)
    roots = _union_find_labels(n, pairs[:, 0], pairs[:, 1]) if pairs.size else np.arange(n)
    uniq, inverse, counts = np.unique(roots, return_inverse=True, return_counts=True)
    multi = np.flatnonzero(counts >= 2)
    multi = multi[np.argsort(-counts[multi], kind="stable")]
    group_of_root = np.full(uniq.size, -1, dtype=np.int64)
    group_of_root[multi] = np.arange(multi.size)
    labels = group_of_root[inverse]
    members = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[members], np.arange(multi.size + 1))
    groups = [np.sort(members[bounds[g] : bounds[g + 1]]) for g in range(multi.size)]
    size_arr = np.array(sizes, dtype=np.int64)
    if sorted(sizes) != sorted(int(c) for c in counts[multi]):  # pragma: no cover - invariant
        raise AssertionError("avalanches and union-find disagree")
    stats = _stats(n, threshold, pairs.shape[0], degrees, size_arr, counts[multi])
    return AvalancheResult(groups, labels, size_arr, degrees, n_truncated, stats)


def _stats(
    n: int, threshold: float, n_edges: int, degrees: np.ndarray, sizes: np.ndarray, group_sizes: np.ndarray
) -> CriticalityStats:
    toppled = int(sizes.sum())
    n_aval = int(sizes.size)
    k = degrees.astype(np.float64)
    mean_k = float(k.mean()) if n else 0.0
    sigma = float((k * (k - 1)).sum() / k.sum()) if k.sum() > 0 else math.nan
    largest = int(group_sizes.max()) if group_sizes.size else 1
    rest = np.sort(group_sizes)[:-1] if group_sizes.size else group_sizes
    chi = float((rest.astype(np.float64) ** 2).sum() / n) if n else 0.0
    fit = None
    if n_aval >= 10 and np.unique(sizes).size >= 2:
        try:
            fit = fit_power_law(sizes)
        except InvalidArgumentError:
            fit = None
    return CriticalityStats(
        threshold=float(threshold),
        n_items=n,
        n_edges=int(n_edges),
        n_toppled=toppled,
        n_avalanches=n_aval,
        mean_avalanche_size=toppled / n_aval if n_aval else 0.0,
        offspring_ratio=1.0 - n_aval / toppled if toppled else 0.0,
        branching_ratio=sigma,
        mean_degree=mean_k,
        largest_fraction=largest / n if n else 0.0,
        susceptibility=chi,
        power_law=fit,
    )


def _check_inputs(vectors: object, threshold: float, k: int, max_k: int, batch_size: int) -> np.ndarray:
    try:
        x = np.asarray(vectors)
    except (TypeError, ValueError) as exc:
        raise InvalidVectorError("vectors must be numeric") from exc
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise InvalidVectorError("vectors must be a finite numeric (n, d) array")
    if not math.isfinite(threshold):
        raise InvalidArgumentError("threshold must be finite")
    if k < 2 or max_k < k or batch_size < 1:
        raise InvalidArgumentError("need k >= 2, max_k >= k and batch_size >= 1")
    return x


def avalanche_scan(
    vectors: object,
    threshold: float,
    neighbor_fn: NeighborFn,
    *,
    k: int = 16,
    max_k: int = 1024,
    batch_size: int = 1024,
) -> AvalancheResult:
    """Near-duplicate groups of ``vectors`` at ``threshold`` plus their avalanche statistics.

    Every item is queried for its k neighbours (rows whose k neighbours are all above the
    threshold are re-queried with 2k, up to ``max_k``). Pairs are symmetrised, so an
    approximate index that finds i → j but not j → i still links them.
    """
    x = _check_inputs(vectors, threshold, k, max_k, batch_size)
    src, dst, _, trunc = _collect_edges(x, float(threshold), neighbor_fn, k, max_k, batch_size)
    result = _analyse(x.shape[0], src, dst, float(threshold), trunc)
    logger.debug("avalanche_scan: %s", result.stats)
    return result


def threshold_pairs(
    vectors: np.ndarray,
    threshold: float,
    *,
    labels: np.ndarray | None = None,
    centres: np.ndarray | None = None,
    probes: int = 8,
    block: int = 2048,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``(i, j, sim)`` of unit rows with ``x_iᵀx_j ≥ threshold`` (each pair at least once).

    Without ``labels``: exact, every pair (blocked upper triangle, n²d/2 multiply-adds).
    With a partition (``labels`` (n,) into the rows of ``centres`` (C, d), e.g. the HRM2
    fine lists): every item is compared with the members of its own cluster and of the
    ``probes`` clusters whose centres are most similar to it (an inverted-file join,
    ~n·probes·(n/C)·d multiply-adds, plus n·C·d to choose the probes). A pair is found when
    either item probes the other's cluster; pairs whose clusters neither item probes are
    missed (measured edge recall in docs/splats.md). Every pair returned is a true pair.
    """
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = x.shape[0]
    t = np.float32(threshold)
    src: list[np.ndarray] = []
    dst: list[np.ndarray] = []
    sim: list[np.ndarray] = []

    def keep(rows: np.ndarray, cols: np.ndarray, s: np.ndarray) -> None:
        r, c = np.nonzero(s >= t)
        ok = rows[r] != cols[c]
        src.append(rows[r[ok]])
        dst.append(cols[c[ok]])
        sim.append(s[r[ok], c[ok]].astype(np.float64))

    if labels is None or centres is None or len(centres) <= probes + 1:
        for lo in range(0, n, block):
            hi = min(n, lo + block)
            keep(np.arange(lo, hi), np.arange(lo, n), x[lo:hi] @ x[lo:].T)
    else:
        lab = np.asarray(labels, dtype=np.int64)
        cen = np.ascontiguousarray(centres, dtype=np.float32)
        n_c = cen.shape[0]
        p = min(probes, n_c)
        probe = np.empty((n, p + 1), dtype=np.int64)
        for lo in range(0, n, block):
            hi = min(n, lo + block)
            probe[lo:hi, :p] = np.argpartition(-(x[lo:hi] @ cen.T), p - 1, axis=1)[:, :p]
        probe[:, p] = lab
        probe.sort(axis=1)
        dup = np.zeros(probe.shape, dtype=bool)
        dup[:, 1:] = probe[:, 1:] == probe[:, :-1]
        q_item = np.broadcast_to(np.arange(n)[:, None], probe.shape)[~dup]
        q_clus = probe[~dup]
        order = np.argsort(q_clus, kind="stable")
        q_item, q_clus = q_item[order], q_clus[order]
        q_off = np.searchsorted(q_clus, np.arange(n_c + 1))
        members = np.argsort(lab, kind="stable")
        m_off = np.searchsorted(lab[members], np.arange(n_c + 1))
        for c in range(n_c):
            rows = q_item[q_off[c] : q_off[c + 1]]
            cols = members[m_off[c] : m_off[c + 1]]
            if rows.size and cols.size:
                keep(rows, cols, x[rows] @ x[cols].T)
    cat = lambda a, dt: np.concatenate(a).astype(dt) if a else np.zeros(0, dt)  # noqa: E731
    return cat(src, np.int64), cat(dst, np.int64), cat(sim, np.float64)


def avalanche_scan_pairs(
    n: int, threshold: float, src: np.ndarray, dst: np.ndarray, sims: np.ndarray | None = None
) -> AvalancheResult:
    """:func:`avalanche_scan` from given pairs (e.g. :func:`threshold_pairs`), pairs with a
    similarity below ``threshold`` dropped when ``sims`` is given."""
    if sims is not None:
        ok = np.asarray(sims) >= threshold
        src, dst = np.asarray(src)[ok], np.asarray(dst)[ok]
    return _analyse(int(n), np.asarray(src, np.int64), np.asarray(dst, np.int64), float(threshold), 0)


def find_near_duplicate_groups(
    vectors: object,
    threshold: float,
    neighbor_fn: NeighborFn,
    *,
    k: int = 16,
    max_k: int = 1024,
    batch_size: int = 1024,
) -> list[np.ndarray]:
    """Groups (≥ 2 items, largest first) linked by chains of similarity ≥ threshold."""
    return avalanche_scan(vectors, threshold, neighbor_fn, k=k, max_k=max_k, batch_size=batch_size).groups


def criticality_sweep(
    vectors: object,
    thresholds: Sequence[float],
    neighbor_fn: NeighborFn,
    *,
    k: int = 16,
    max_k: int = 1024,
    batch_size: int = 1024,
) -> list[CriticalityStats]:
    """Statistics at each threshold (in the order given) from one neighbour pass at the lowest.

    Lowering the threshold adds edges; the critical threshold t_c is where σ crosses 1,
    the largest group starts to grow with n and χ peaks. A near-duplicate threshold should
    sit well above t_c so that groups stay small.
    """
    ts = [float(t) for t in thresholds]
    if not ts:
        raise InvalidArgumentError("thresholds must not be empty")
    x = _check_inputs(vectors, min(ts), k, max_k, batch_size)
    src, dst, sim, trunc = _collect_edges(x, min(ts), neighbor_fn, k, max_k, batch_size)
    out = []
    for t in ts:
        keep = sim >= t
        out.append(_analyse(x.shape[0], src[keep], dst[keep], t, trunc).stats)
    return out


# --------------------------------------------------------------------------- consolidation
@dataclass(frozen=True)
class ConsolidatedSplats:
    """One vMF splat per group: ``mu`` (G, d), ``kappa`` (G,), ``alpha`` (G,), ``members``."""

    mu: np.ndarray
    kappa: np.ndarray
    alpha: np.ndarray  # group weight / total weight of all vectors
    members: list[np.ndarray]


def consolidate(
    groups: Sequence[np.ndarray],
    vectors: object,
    weights: object = None,
    *,
    max_kappa: float = DEFAULT_MAX_KAPPA,
) -> ConsolidatedSplats:
    """Summarise each group as a splat: weighted mean direction, κ from R̄ (Banerjee +
    Newton), and α = the group's share of the weight of *all* vectors (so consolidated
    splats and the untouched items together still sum to 1).

    κ of a small tight group is large and biased upwards (R̄ of g points overestimates A);
    a group of identical vectors gets ``max_kappa``.
    """
    x = np.asarray(vectors)
    if x.ndim != 2:
        raise InvalidVectorError("vectors must be an (n, d) array")
    n = x.shape[0]
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise InvalidArgumentError(f"weights must be ({n},), finite, >= 0, not all zero")
    members = [np.asarray(g, dtype=np.int64) for g in groups]
    if not members:
        d = x.shape[1]
        return ConsolidatedSplats(np.zeros((0, d)), np.zeros(0), np.zeros(0), [])
    idx = np.concatenate(members)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise InvalidArgumentError("group members must index into vectors")
    if np.unique(idx).size != idx.size:
        raise InvalidArgumentError("an item belongs to more than one group")
    if any(m.size == 0 for m in members):
        raise InvalidArgumentError("groups must not be empty")
    labels = np.repeat(np.arange(len(members)), [m.size for m in members])
    mu, kappa, _, _ = fit_vmf_groups(
        x[idx], labels, n_groups=len(members), weights=w[idx], max_kappa=max_kappa
    )
    alpha = np.array([w[m].sum() for m in members]) / w.sum()
    return ConsolidatedSplats(mu, kappa, alpha, members)
