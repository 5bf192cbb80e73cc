"""Compressed codes scanned at LOD 1.

Both codecs approximate an inner product as ``q·x ≈ const(q) + qv(q)·code(x)`` so a scan is
one float32 matrix product over the probed rows plus a per-query constant:

- ``SQ8`` (int8 scalar quantisation, per dimension): ``x ≈ lo + scale * (c + 128)``, with
  ``c`` int8; ``qv = q * scale`` and ``const = q·(lo + 128 scale)``. 4x smaller than float32,
  but NumPy has no int8 BLAS, so scanning converts each block to float32 first.
- ``PCA`` (a rotation onto the top principal axes, truncated): ``x ≈ mu + V V^T (x - mu)``,
  code = ``V^T (x - mu)`` (float32, ``code_dim`` numbers), ``qv = V^T q``, ``const = q·mu``.
  With ``code_dim = d/3`` it is 3x smaller and scans with BLAS directly; it measured faster
  than SQ8 at equal recall (see docs/hrm2.md), so HRM2 uses it by default.
"""

from __future__ import annotations

import numpy as np

from m2m.errors import IndexCorruptError, InvalidArgumentError

CODECS = ("auto", "pca", "sq8")


class SQ8Codec:
    """Per-dimension int8 scalar quantiser fitted on min/max of a training sample."""

    name = "sq8"

    def __init__(self, lo: np.ndarray, scale: np.ndarray) -> None:
        self.lo = np.ascontiguousarray(lo, dtype=np.float32)
        self.scale = np.ascontiguousarray(scale, dtype=np.float32)
        self.code_dim = int(self.lo.shape[0])
        self.code_dtype = np.dtype(np.int8)
        self._shift = self.lo + 128.0 * self.scale

    @classmethod
    def fit(cls, sample: np.ndarray, code_dim: int | None = None) -> SQ8Codec:
        lo = sample.min(axis=0).astype(np.float32)
        hi = sample.max(axis=0).astype(np.float32)
        scale = np.maximum((hi - lo) / 255.0, 1e-12).astype(np.float32)
        return cls(lo, scale)

    def encode(self, x: np.ndarray) -> np.ndarray:
        q = np.rint((np.asarray(x, dtype=np.float32) - self.lo) / self.scale)
        return (np.clip(q, 0, 255) - 128).astype(np.int8)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return codes.astype(np.float32) * self.scale + self._shift

    def prepare(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-query ``(qv (m, code_dim), const (m,))`` for ``q·x ≈ const + qv·code``."""
        return queries * self.scale, queries @ self._shift

    def prepare_one(self, q: np.ndarray) -> tuple[np.ndarray, float]:
        return q * self.scale, float(q @ self._shift)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"codec_a": self.lo, "codec_b": self.scale}

    @classmethod
    def from_arrays(cls, a: np.ndarray, b: np.ndarray) -> SQ8Codec:
        return cls(a, b)


class PCACodec:
    """Truncated PCA rotation; codes are float32 coordinates on the top ``code_dim`` axes."""

    name = "pca"

    def __init__(self, mean: np.ndarray, axes: np.ndarray) -> None:
        self.mean = np.ascontiguousarray(mean, dtype=np.float32)
        self.axes = np.ascontiguousarray(axes, dtype=np.float32)  # (d, code_dim)
        self.code_dim = int(self.axes.shape[1])
        self.code_dtype = np.dtype(np.float32)
        # one product gives both qv and q·mean for a single query
        self._axes_mean = np.ascontiguousarray(np.hstack([self.axes, self.mean[:, None]]))

    @classmethod
    def fit(cls, sample: np.ndarray, code_dim: int | None = None) -> PCACodec:
        d = sample.shape[1]
        code_dim = default_code_dim(d) if code_dim is None else int(code_dim)
        if not 1 <= code_dim <= d:
            raise InvalidArgumentError(f"code_dim must be in [1, {d}], got {code_dim}")
        if sample.shape[0] > 20000:  # the covariance converges long before this
            sample = sample[np.random.default_rng(0).choice(sample.shape[0], 20000, replace=False)]
        mean = sample.mean(axis=0, dtype=np.float64).astype(np.float32)
        centred = sample - mean
        cov = (centred.T @ centred).astype(np.float64) / max(1, sample.shape[0] - 1)
        _w, v = np.linalg.eigh(cov)
        axes = v[:, ::-1][:, :code_dim]
        return cls(mean.astype(np.float32), axes.astype(np.float32))

    def encode(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((np.asarray(x, dtype=np.float32) - self.mean) @ self.axes)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return codes @ self.axes.T + self.mean

    def prepare(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return queries @ self.axes, queries @ self.mean

    def prepare_one(self, q: np.ndarray) -> tuple[np.ndarray, float]:
        r = q @ self._axes_mean
        return r[:-1], float(r[-1])

    def arrays(self) -> dict[str, np.ndarray]:
        return {"codec_a": self.mean, "codec_b": self.axes}

    @classmethod
    def from_arrays(cls, a: np.ndarray, b: np.ndarray) -> PCACodec:
        return cls(a, b)


def default_code_dim(d: int) -> int:
    """``d/3`` rounded up to a multiple of 8, at least 64, at most ``d`` (384 -> 128, 640 -> 216,
    128 -> 64, 32 -> 32): low-dimensional data keeps every axis (a pure rotation)."""
    return int(min(d, max(64, -(-d // 24) * 8)))


def candidate_recall(codec, base: np.ndarray, queries: np.ndarray, depth: int, k: int = 10) -> float:
    """Fraction of the exact top-``k`` (by inner product) that the codec's top-``depth`` holds:
    how much the LOD 2 re-rank can recover from this codec's LOD 1 candidates."""
    k = min(k, base.shape[0])
    depth = min(max(depth, k), base.shape[0])
    exact = queries @ base.T
    approx = codec.prepare(queries)[0] @ codec.encode(base).astype(np.float32).T
    top = np.argpartition(-exact, k - 1, axis=1)[:, :k]
    cand = np.argpartition(-approx, depth - 1, axis=1)[:, :depth]
    hits = (top[:, :, None] == cand[:, None, :]).any(axis=2)
    return float(hits.mean())


def choose_codec(sample: np.ndarray, code_dim: int | None, depth: int, rng: np.random.Generator):
    """``auto``: PCA (fastest scan) unless its candidates lose recall that SQ8 keeps.

    Measured on up to 20,000 sample rows with 128 perturbed sample rows as queries: PCA is kept
    when its candidate recall (top-``depth`` holding the exact top-10) is >= 0.98 or within
    0.005 of SQ8's. Data whose variance is spread evenly over many dimensions (isotropic
    clusters) fails the check: truncating to d/3 axes then drops most within-cluster detail.
    """
    n = sample.shape[0]
    base = sample[rng.choice(n, min(n, 20000), replace=False)]
    q = base[rng.choice(base.shape[0], min(128, base.shape[0]), replace=False)]
    q = q + rng.standard_normal(q.shape).astype(np.float32) * (0.5 * float(np.std(base)))
    depth = min(depth, base.shape[0])
    pca = PCACodec.fit(sample, code_dim)
    r_pca = candidate_recall(pca, base, q, depth)
    if r_pca >= 0.98:
        return pca, {"pca": round(r_pca, 4)}
    sq8 = SQ8Codec.fit(sample)
    r_sq8 = candidate_recall(sq8, base, q, depth)
    report = {"pca": round(r_pca, 4), "sq8": round(r_sq8, 4)}
    return (pca if r_pca >= r_sq8 - 0.005 else sq8), report


def make_codec(name: str, sample: np.ndarray, code_dim: int | None):
    if name == "pca":
        return PCACodec.fit(sample, code_dim)
    if name == "sq8":
        return SQ8Codec.fit(sample, code_dim)
    raise InvalidArgumentError(f"unknown codec {name!r}; choose one of {', '.join(CODECS)}")


def codec_from_arrays(name: str, a: np.ndarray, b: np.ndarray):
    if name == "pca":
        return PCACodec.from_arrays(a, b)
    if name == "sq8":
        return SQ8Codec.from_arrays(a, b)
    raise IndexCorruptError(f"index manifest names unknown codec {name!r}")
