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

CODECS = ("pca", "sq8")


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

    @classmethod
    def fit(cls, sample: np.ndarray, code_dim: int | None = None) -> PCACodec:
        d = sample.shape[1]
        code_dim = default_code_dim(d) if code_dim is None else int(code_dim)
        if not 1 <= code_dim <= d:
            raise InvalidArgumentError(f"code_dim must be in [1, {d}], got {code_dim}")
        mean = sample.mean(axis=0, dtype=np.float64)
        centred = sample.astype(np.float64) - mean
        cov = centred.T @ centred / max(1, sample.shape[0] - 1)
        w, v = np.linalg.eigh(cov)
        axes = v[:, ::-1][:, :code_dim]
        return cls(mean.astype(np.float32), axes.astype(np.float32))

    def encode(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((np.asarray(x, dtype=np.float32) - self.mean) @ self.axes)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return codes @ self.axes.T + self.mean

    def prepare(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return queries @ self.axes, queries @ self.mean

    def arrays(self) -> dict[str, np.ndarray]:
        return {"codec_a": self.mean, "codec_b": self.axes}

    @classmethod
    def from_arrays(cls, a: np.ndarray, b: np.ndarray) -> PCACodec:
        return cls(a, b)


def default_code_dim(d: int) -> int:
    """``d/3`` rounded up to a multiple of 8 (384 -> 128, 640 -> 216, 128 -> 48), at most ``d``."""
    return int(min(d, max(8, -(-d // 24) * 8)))


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
