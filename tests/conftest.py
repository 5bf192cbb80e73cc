"""Shared fixtures. Each helper has a clearly named function; add yours below, keep it small."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import m2m


def _find_wordnet() -> Path:
    """The shared dataset: $M2M_WORDNET, else ``shared/`` beside the repository (as in CI)."""
    if "M2M_WORDNET" in os.environ:
        return Path(os.environ["M2M_WORDNET"])
    return Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "wordnet-minilm"


WORDNET_DIR = _find_wordnet()


# -- store fixtures (foundation tests) -----------------------------------------------------------


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """A fresh, empty data folder for one test."""
    path = tmp_path / "store"
    path.mkdir()
    return path


@pytest.fixture
def client(store_path: Path):
    """An embedded ``m2m.Client`` on a fresh folder, closed after the test."""
    c = m2m.Client(store_path)
    yield c
    c.close()


def clustered_vectors(
    n: int, dim: int, *, n_clusters: int = 8, spread: float = 0.15, seed: int = 0
) -> np.ndarray:
    """``(n, dim)`` float32 points around ``n_clusters`` random unit centres (deterministic)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, n_clusters, size=n)
    points = centres[labels] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    return np.ascontiguousarray(points, dtype=np.float32)


@pytest.fixture
def clustered_data():
    """Factory: ``clustered_data(n, dim, seed=...)`` -> clustered float32 vectors."""
    return clustered_vectors


def brute_force_distances(queries: np.ndarray, vectors: np.ndarray, metric: str) -> np.ndarray:
    """The metric's distance matrix in float64, straight from its definition (the oracle)."""
    q = np.asarray(queries, dtype=np.float64)
    x = np.asarray(vectors, dtype=np.float64)
    if metric == "cosine":
        qn = q / np.where((n := np.linalg.norm(q, axis=1, keepdims=True)) > 0, n, 1)
        xn = x / np.where((n := np.linalg.norm(x, axis=1, keepdims=True)) > 0, n, 1)
        return 1.0 - qn @ xn.T
    if metric == "ip":
        return -(q @ x.T)
    if metric == "l2":
        return ((q[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
    raise ValueError(metric)


def snapshot_collection(collection) -> dict:
    """Every stored field of every item, in a comparable form (for 'store unchanged' checks)."""
    got = collection.get(include=["embeddings", "metadatas", "documents"])
    return {
        item_id: (np.asarray(emb, dtype=np.float32).tobytes(), meta, doc)
        for item_id, emb, meta, doc in zip(
            got["ids"], got["embeddings"], got["metadatas"], got["documents"], strict=True
        )
    }
