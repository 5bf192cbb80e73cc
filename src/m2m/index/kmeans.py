"""Lloyd's k-means with k-means++ seeding, in NumPy float32.

Used twice by HRM2: once for the coarse level and once per coarse cluster for the fine
level. Distances are squared L2 computed as ``||c||² - 2 x·c`` (the ``||x||²`` term does not
change the argmin), one matrix product per chunk of rows so memory stays bounded.
"""

from __future__ import annotations

import numpy as np

from m2m.errors import InvalidArgumentError

_CHUNK_BYTES = 64 << 20  # scores matrix budget per assignment chunk


def assign(x: np.ndarray, centroids: np.ndarray, *, return_dist: bool = False):
    """Index of the nearest centroid (squared L2) for every row of ``x``.

    With ``return_dist`` also returns the squared distances (float32, clamped at 0).
    """
    x = np.asarray(x, dtype=np.float32)
    c = np.asarray(centroids, dtype=np.float32)
    n, k = x.shape[0], c.shape[0]
    labels = np.empty(n, dtype=np.int64)
    dists = np.empty(n, dtype=np.float32) if return_dist else None
    c_sq = np.einsum("ij,ij->i", c, c)
    step = max(1, _CHUNK_BYTES // (4 * max(k, 1)))
    for s in range(0, n, step):
        xs = x[s : s + step]
        scores = xs @ c.T
        scores *= -2.0
        scores += c_sq
        lab = np.argmin(scores, axis=1)
        labels[s : s + step] = lab
        if dists is not None:
            best = np.take_along_axis(scores, lab[:, None], axis=1)[:, 0]
            best += np.einsum("ij,ij->i", xs, xs)
            dists[s : s + step] = np.maximum(best, 0.0)
    if return_dist:
        return labels, dists
    return labels


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each new centre is drawn with
    probability proportional to the squared distance to the nearest centre chosen so far."""
    n = x.shape[0]
    centres = np.empty((k, x.shape[1]), dtype=np.float32)
    first = int(rng.integers(n))
    centres[0] = x[first]
    x_sq = np.einsum("ij,ij->i", x, x)
    diff = x_sq - 2.0 * (x @ centres[0]) + float(centres[0] @ centres[0])
    closest = np.maximum(diff, 0.0).astype(np.float64)
    for i in range(1, k):
        total = closest.sum()
        if total <= 0.0:  # every point coincides with a centre: pick uniformly
            idx = int(rng.integers(n))
        else:
            idx = int(np.searchsorted(np.cumsum(closest), rng.random() * total))
            idx = min(idx, n - 1)
        centres[i] = x[idx]
        d_new = x_sq - 2.0 * (x @ centres[i]) + float(centres[i] @ centres[i])
        np.minimum(closest, np.maximum(d_new, 0.0), out=closest)
    return centres


def _update(x: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of each cluster and cluster sizes.

    Sums are one float32 matrix product with a one-hot matrix (chunked over clusters), which
    is far faster in NumPy than scatter-adds or sorting the rows.
    """
    n = x.shape[0]
    counts = np.bincount(labels, minlength=k)
    sums = np.empty((k, x.shape[1]), dtype=np.float32)
    step = max(1, (32 << 20) // (4 * n))
    for c0 in range(0, k, step):
        c1 = min(k, c0 + step)
        onehot = np.zeros((c1 - c0, n), dtype=np.float32)
        inside = (labels >= c0) & (labels < c1)
        onehot[labels[inside] - c0, np.flatnonzero(inside)] = 1.0
        sums[c0:c1] = onehot @ x
    means = np.zeros_like(sums)
    nonempty = counts > 0
    means[nonempty] = sums[nonempty] / counts[nonempty, None]
    return means, counts


def kmeans(
    x: np.ndarray,
    k: int,
    *,
    iters: int = 20,
    seed: int | np.random.Generator = 0,
    tol: float = 1e-4,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ``x`` (n, d) into ``k`` groups; returns ``(centroids (k, d), labels (n,))``.

    k-means++ seeding, then Lloyd iterations until fewer than ``tol * n`` points change
    cluster or ``iters`` is reached. An empty cluster is re-seeded with the point farthest
    from its centroid inside the largest cluster, so exactly ``k`` non-empty clusters come
    back whenever ``n >= k`` distinct points exist.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise InvalidArgumentError(f"kmeans needs a non-empty 2-D array, got shape {x.shape}")
    n = x.shape[0]
    if not 1 <= k <= n:
        raise InvalidArgumentError(f"kmeans needs 1 <= k <= n, got k={k}, n={n}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    centroids = kmeans_plus_plus(x, k, rng)
    labels = assign(x, centroids)
    for _ in range(max(0, iters)):
        centroids, counts = _update(x, labels, k)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            _, dist = assign(x, centroids, return_dist=True)
            for e in empty:
                big = int(np.argmax(counts))
                members = np.flatnonzero(labels == big)
                far = members[int(np.argmax(dist[members]))]
                centroids[e] = x[far]
                labels[far] = e
                dist[far] = 0.0
                counts[big] -= 1
                counts[e] = 1
        new_labels = assign(x, centroids)
        changed = int(np.count_nonzero(new_labels != labels))
        labels = new_labels
        if changed <= tol * n:
            break
    centroids, _ = _update(x, labels, k)
    return centroids, labels
