"""Benchmark datasets: the shared wordnet-minilm embeddings and synthetic clustered data.

Every loader returns a ``Dataset`` with float32 base vectors, held-out queries, the metric and
the exact top-100 neighbours of every query (row numbers of ``base``). Synthetic ground truth
is brute force, cached under ``$M2M_BENCH_CACHE`` (default ``~/.cache/m2m-bench``) so repeated
runs skip it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# $M2M_WORDNET, else the shared/ folder beside the repository (where CI puts it).
WORDNET = Path(
    os.environ.get(
        "M2M_WORDNET", Path(__file__).resolve().parents[1].parent / "shared/datasets/wordnet-minilm"
    )
)
CACHE = Path(os.environ.get("M2M_BENCH_CACHE", Path.home() / ".cache" / "m2m-bench"))


@dataclass
class Dataset:
    name: str
    base: np.ndarray  # (n, d) float32
    queries: np.ndarray  # (q, d) float32
    gt: np.ndarray  # (q, >=10) int64 exact neighbours, best first
    metric: str  # "cosine" | "ip" | "l2"
    description: str


def load_wordnet_minilm(n_queries: int | None = None) -> Dataset:
    """100,000 x 384 all-MiniLM-L6-v2 sentence embeddings (unit length) and 5,000 queries."""
    base = np.load(WORDNET / "base.f16.npy", allow_pickle=False).astype(np.float32)
    queries = np.load(WORDNET / "queries.f16.npy", allow_pickle=False).astype(np.float32)
    gt = np.load(WORDNET / "gt.i32.npy", allow_pickle=False).astype(np.int64)
    if n_queries is not None:
        queries, gt = queries[:n_queries], gt[:n_queries]
    return Dataset(
        "wordnet-minilm", base, queries, gt, "cosine", "WordNet glosses, all-MiniLM-L6-v2, 100K x 384, cosine"
    )


def clustered_vectors(n: int, dim: int, n_clusters: int, seed: int) -> np.ndarray:
    """Unit vectors from a Gaussian mixture: cluster sizes ~ Zipf(1.1), per-cluster spread
    uniform in [0.5, 1.0] x (1/sqrt(dim)) around unit-norm centres, then L2-normalised."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = 1.0 / np.arange(1, n_clusters + 1) ** 1.1
    weights /= weights.sum()
    spread = rng.uniform(0.5, 1.0, n_clusters).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    step = 65536
    for s in range(0, n, step):
        m = min(step, n - s)
        lab = rng.choice(n_clusters, m, p=weights)
        noise = rng.standard_normal((m, dim)).astype(np.float32) * (spread[lab, None] / np.sqrt(dim))
        out[s : s + m] = centres[lab] + noise
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def exact_gt(base: np.ndarray, queries: np.ndarray, k: int = 100, metric: str = "cosine") -> np.ndarray:
    """Brute-force top-k row numbers (chunked over base)."""
    best_d = np.full((queries.shape[0], 0), np.inf, np.float32)
    best_i = np.zeros((queries.shape[0], 0), np.int64)
    q_sq = (queries * queries).sum(1)
    for s in range(0, base.shape[0], 50000):
        blk = base[s : s + 50000]
        dots = queries @ blk.T
        d = q_sq[:, None] - 2 * dots + (blk * blk).sum(1)[None, :] if metric == "l2" else -dots
        cat_d = np.concatenate([best_d, d], 1)
        cat_i = np.concatenate([best_i, np.broadcast_to(np.arange(s, s + blk.shape[0]), d.shape)], 1)
        part = np.argpartition(cat_d, min(k, cat_d.shape[1]) - 1, axis=1)[:, :k]
        best_d = np.take_along_axis(cat_d, part, 1)
        best_i = np.take_along_axis(cat_i, part, 1)
    order = np.argsort(best_d, axis=1, kind="stable")
    return np.take_along_axis(best_i, order, 1)


def load_synthetic(
    n: int, dim: int, n_queries: int = 1000, seed: int = 0, name: str | None = None
) -> Dataset:
    """Clustered synthetic unit vectors (n / 100 clusters), held-out queries from the same mixture."""
    n_clusters = max(10, n // 100)
    data = clustered_vectors(n + n_queries, dim, n_clusters, seed)
    base, queries = data[:n], data[n:]
    key = CACHE / f"synthetic-{n}-{dim}-{n_queries}-{seed}.gt.npy"
    if key.exists():
        gt = np.load(key, allow_pickle=False)
    else:
        gt = exact_gt(base, queries, 100, "cosine")
        key.parent.mkdir(parents=True, exist_ok=True)
        np.save(key, gt, allow_pickle=False)
    name = name or f"synthetic-{n // 1000}k-{dim}"
    desc = f"clustered synthetic, {n:,} x {dim}, {n_clusters} Gaussian clusters (Zipf sizes), cosine"
    return Dataset(name, base, queries, gt, "cosine", desc)


def load(name: str, n: int | None = None, dim: int | None = None, n_queries: int | None = None) -> Dataset:
    """A dataset by name; ``n_queries=None`` means all (wordnet) or 1,000 (synthetic)."""
    if name == "wordnet-minilm":
        return load_wordnet_minilm(n_queries)
    n_queries = n_queries or 1000
    if name == "synthetic-640":
        return load_synthetic(n or 100_000, dim or 640, n_queries, name=name)
    if name == "synthetic-1m-128":
        return load_synthetic(n or 1_000_000, dim or 128, n_queries, name=name)
    if name == "synthetic":
        return load_synthetic(n or 100_000, dim or 640, n_queries)
    raise SystemExit(f"unknown dataset {name!r}")
