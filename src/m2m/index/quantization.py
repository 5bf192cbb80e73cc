"""Compressed codes scanned at LOD 1.

Both codecs approximate an inner product as ``q·x ≈ const(q) + qv(q)·code(x)`` so a scan is
one float32 matrix product over the probed rows plus a per-query constant:

- ``SQ8`` (int8 scalar quantisation, per dimension): ``x ≈ lo + scale * (c + 128)``, with
  ``c`` int8; ``qv = q * scale`` and ``const = q·(lo + 128 scale)``. 4x smaller than float32,
  but NumPy has no int8 BLAS, so scanning converts each block to float32 first.
- ``PCA`` (a rotation onto the top principal axes, truncated): ``x ≈ mu + V V^T (x - mu)``,
  code = ``V^T (x - mu)`` (float32, ``code_dim`` numbers), ``qv = V^T q``, ``const = q·mu``.
  With ``code_dim = d/3`` it is 3x smaller and scans with BLAS directly.
- ``PCA8`` (PCA, then int8 scalar quantisation of the PCA coordinates): 12x smaller than
  float32 at d/3 axes. Scanned by the compiled kernel (``m2m.index._kernels``), it is the
  fastest codec where PCA keeps the candidates (see docs/hrm2.md); without numba the
  ``auto`` choice stays with float32 PCA, which NumPy scans fastest.

Routing runs in the codec space when the codec is a projection (PCA, PCA8): ``route_form``
maps centroids so that ``route_form(c) · qv`` ranks them as ``q · c`` does.
"""

from __future__ import annotations

import numpy as np

from m2m.errors import IndexCorruptError, InvalidArgumentError

CODECS = ("auto", "pca", "pca8", "sq8")


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
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> SQ8Codec:
        return cls(arrays["codec_a"], arrays["codec_b"])


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

    def route_form(self, x: np.ndarray) -> np.ndarray:
        return self.encode(x)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"codec_a": self.mean, "codec_b": self.axes}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> PCACodec:
        return cls(arrays["codec_a"], arrays["codec_b"])


class PCA8Codec:
    """PCA coordinates quantised to int8 per axis: ``code = SQ8(V^T (x - mu))``.

    ``q·x ≈ q·mu + p·(lo + scale (c + 128))`` with ``p = V^T q``, so ``qv = p * scale`` and
    ``const = q·mu + p·(lo + 128 scale)``. Routing uses ``qv`` too: ``route_form`` divides the
    centroids' PCA coordinates by ``scale``.
    """

    name = "pca8"

    def __init__(self, mean: np.ndarray, axes: np.ndarray, lo: np.ndarray, scale: np.ndarray) -> None:
        self.pca = PCACodec(mean, axes)
        self.sq8 = SQ8Codec(lo, scale)
        if self.sq8.code_dim != self.pca.code_dim:
            raise InvalidArgumentError("PCA8 quantiser and PCA axes disagree on the code dimension")
        self.mean, self.axes = self.pca.mean, self.pca.axes
        self.lo, self.scale = self.sq8.lo, self.sq8.scale
        self.code_dim = self.pca.code_dim
        self.code_dtype = np.dtype(np.int8)

    @classmethod
    def fit(cls, sample: np.ndarray, code_dim: int | None = None) -> PCA8Codec:
        pca = PCACodec.fit(sample, code_dim)
        sq8 = SQ8Codec.fit(pca.encode(sample))
        return cls(pca.mean, pca.axes, sq8.lo, sq8.scale)

    def encode(self, x: np.ndarray) -> np.ndarray:
        return self.sq8.encode(self.pca.encode(x))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return self.pca.decode(self.sq8.decode(codes))

    def route_form(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.pca.encode(x) / self.scale)

    def prepare(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p, c = self.pca.prepare(queries)
        return p * self.scale, c + p @ self.sq8._shift

    def prepare_one(self, q: np.ndarray) -> tuple[np.ndarray, float]:
        p, c = self.pca.prepare_one(q)
        return p * self.scale, c + float(p @ self.sq8._shift)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"codec_a": self.mean, "codec_b": self.axes, "codec_c": self.lo, "codec_d": self.scale}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> PCA8Codec:
        return cls(arrays["codec_a"], arrays["codec_b"], arrays["codec_c"], arrays["codec_d"])


def default_code_dim(d: int) -> int:
    """``d/3`` rounded up to a multiple of 8, at least 64, at most ``d`` (384 -> 128, 640 -> 216,
    128 -> 64, 32 -> 32): low-dimensional data keeps every axis (a pure rotation)."""
    return int(min(d, max(64, -(-d // 24) * 8)))


def candidate_recall(codec, base: np.ndarray, queries: np.ndarray, depth: int, k: int = 10) -> float:
    """Fraction of the exact top-``k`` (by inner product) that the codec's top-``depth`` holds:
    how much the LOD 2 re-rank can recover from this codec's LOD 1 candidates."""
    return candidate_recalls(codec, base, queries, [depth], k)[0]


def candidate_recalls(codec, base: np.ndarray, queries: np.ndarray, depths, k: int = 10) -> list[float]:
    """:func:`candidate_recall` at several depths, from one exact and one coded product."""
    k = min(k, base.shape[0])
    exact = queries @ base.T
    approx = codec.prepare(queries)[0] @ codec.encode(base).astype(np.float32).T
    top = np.argpartition(-exact, k - 1, axis=1)[:, :k]
    out = []
    for depth in depths:
        depth = min(max(depth, k), base.shape[0])
        cand = np.argpartition(-approx, depth - 1, axis=1)[:, :depth]
        out.append(float((top[:, :, None] == cand[:, None, :]).any(axis=2).mean()))
    return out


def _check_sample(sample: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to 20,000 sample rows and 128 perturbed ones among them as queries."""
    n = sample.shape[0]
    base = sample[rng.choice(n, min(n, 20000), replace=False)]
    q = base[rng.choice(base.shape[0], min(128, base.shape[0]), replace=False)]
    q = q + rng.standard_normal(q.shape).astype(np.float32) * (0.5 * float(np.std(base)))
    return base, q


def choose_codec(
    sample: np.ndarray, code_dim: int | None, depth: int, rng: np.random.Generator, compiled: bool = False
):
    """``auto``: PCA (fastest scan) unless its candidates lose recall that SQ8 keeps.

    Measured on up to 20,000 sample rows with 128 perturbed sample rows as queries: PCA is kept
    when its candidate recall (top-``depth`` holding the exact top-10) is >= 0.98 or within
    0.005 of SQ8's. Data whose variance is spread evenly over many dimensions (isotropic
    clusters) fails the check: truncating to d/3 axes then drops most within-cluster detail.
    ``compiled`` (the int8 scan kernel is there): the PCA candidate is PCA8, its int8 form.
    """
    base, q = _check_sample(sample, rng)
    depth = min(depth, base.shape[0])
    pca = (PCA8Codec if compiled else PCACodec).fit(sample, code_dim)
    r_pca = candidate_recall(pca, base, q, depth)
    if r_pca >= 0.98:
        return pca, {pca.name: round(r_pca, 4)}
    sq8 = SQ8Codec.fit(sample)
    r_sq8 = candidate_recall(sq8, base, q, depth)
    report = {pca.name: round(r_pca, 4), "sq8": round(r_sq8, 4)}
    return (pca if r_pca >= r_sq8 - 0.005 else sq8), report


RERANK_CHOICES = (4, 8, 16)


def choose_rerank(codec, sample: np.ndarray, rng: np.random.Generator, k: int = 10) -> tuple[int, dict]:
    """``rerank=None``: the smallest of 4, 8, 16 whose candidate list (top ``rerank * k`` by the
    codec) holds the exact top-k as well as 16 does (within 0.001), on the codec check's
    sample. Codes that rank almost exactly (SQ8 on synthetic-640: 1.0 at 4) re-rank 40 rows
    instead of 160; PCA8 on wordnet-minilm keeps 16. Returns ``(rerank, {depth: recall})``."""
    base, q = _check_sample(sample, rng)
    depths = [r * k for r in RERANK_CHOICES]
    recalls = dict(zip(RERANK_CHOICES, candidate_recalls(codec, base, q, depths, k), strict=True))
    best = recalls[RERANK_CHOICES[-1]]
    chosen = min(r for r in RERANK_CHOICES if recalls[r] >= best - 0.001)
    return chosen, {str(r): round(v, 4) for r, v in recalls.items()}


_CODEC_CLASSES = {"pca": PCACodec, "pca8": PCA8Codec, "sq8": SQ8Codec}


def make_codec(name: str, sample: np.ndarray, code_dim: int | None):
    if name not in _CODEC_CLASSES:
        raise InvalidArgumentError(f"unknown codec {name!r}; choose one of {', '.join(CODECS)}")
    return _CODEC_CLASSES[name].fit(sample, code_dim)


def codec_from_arrays(name: str, arrays: dict[str, np.ndarray]):
    """The codec a manifest names, from its saved arrays (``codec_a``, ``codec_b``, ...)."""
    if name not in _CODEC_CLASSES:
        raise IndexCorruptError(f"index manifest names unknown codec {name!r}")
    try:
        return _CODEC_CLASSES[name].from_arrays(arrays)
    except KeyError as exc:
        raise IndexCorruptError(f"index files lack the {name} codec array {exc}") from exc


def codec_input_dim(codec) -> int:
    """The vector dimension a codec expects (what a loaded index checks against)."""
    return int(codec.axes.shape[0] if hasattr(codec, "axes") else codec.lo.shape[0])
