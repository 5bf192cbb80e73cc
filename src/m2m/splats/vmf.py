"""von Mises–Fisher mathematics on the unit sphere S^{d-1}, in pure NumPy.

A splat is a vMF density ``f(x) = C_d(κ) exp(κ μᵀx)`` with
``C_d(κ) = κ^ν / ((2π)^{d/2} I_ν(κ))`` and ``ν = d/2 - 1``. Embedding
dimensions put ν in the hundreds, where ``I_ν`` overflows and underflows float64
for every κ of interest, so everything here works in logarithms:

- ``ν ≥ 40``: the uniform asymptotic (Debye) expansion of ``I_ν(νz)`` with
  12 terms, accurate to ~1e-15 relative for all ``z ∈ [0, ∞)``.
- ``ν < 40`` and ``κ ≤ 10``: the power series (positive terms, 80 of them).
- ``ν < 40`` and ``κ > 10``: Debye at ``M = ν + N ≥ 40`` and the backward recurrence of the
  ratio ``q_μ = I_{μ+1} / (κ I_μ)``, ``q_{μ-1} = 1 / (2μ + κ² q_μ)``, which is
  stable (errors shrink by ``r_{μ-1} r_μ < 1`` per step) and exact at κ = 0.

See docs/splats.md for the formulas and the measured accuracy.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from m2m.errors import DimensionMismatchError, InvalidArgumentError, InvalidVectorError

__all__ = [
    "as_rng",
    "as_unit_rows",
    "bessel_ratio",
    "estimate_kappa",
    "fit_vmf",
    "fit_vmf_groups",
    "log_bessel_iv",
    "log_sphere_area",
    "log_vmf_normalizer",
    "mean_resultant_length",
    "sample_vmf",
]

DEBYE_MIN_NU = 40.0
DEBYE_TERMS = 12
SERIES_MAX_KAPPA = 10.0
DEFAULT_MAX_KAPPA = 1e6
_LOG_2PI = math.log(2.0 * math.pi)


def _debye_polynomials(n_terms: int) -> list[np.ndarray]:
    """Coefficients (lowest power first) of the Debye polynomials U_0..U_{n-1}.

    ``U_{k+1}(p) = ½ p²(1−p²) U_k'(p) + ⅛ ∫_0^p (1−5t²) U_k(t) dt`` (DLMF 10.41.9),
    computed in exact rationals once at import.
    """
    polys = [[Fraction(1)]]
    for _ in range(n_terms - 1):
        u = polys[-1]
        new = [Fraction(0)] * (len(u) + 3)
        for j in range(1, len(u)):  # ½ p²(1−p²) · j c_j p^{j-1}
            c = u[j] * j / 2
            new[j + 1] += c
            new[j + 3] -= c
        for j, c in enumerate(u):  # ⅛ ∫ (1 − 5t²) c t^j
            new[j + 1] += c / 8 / (j + 1)
            new[j + 3] -= 5 * c / 8 / (j + 3)
        polys.append(new)
    return [np.array([float(c) for c in p]) for p in polys]


_U = _debye_polynomials(DEBYE_TERMS)


def _debye_series(nu: float, p: np.ndarray) -> np.ndarray:
    """``Σ_k U_k(p) / ν^k`` (always in [0.9, 1.1] for ν ≥ 40)."""
    total = np.ones_like(p)
    inv = 1.0
    for coeffs in _U[1:]:
        inv /= nu
        acc = np.zeros_like(p)
        for c in coeffs[::-1]:
            acc = acc * p + c
        total += acc * inv
    return total


def _debye_log_scaled(nu: float, kappa: np.ndarray) -> np.ndarray:
    """``log I_ν(κ) − ν log κ`` by the Debye expansion (ν ≥ DEBYE_MIN_NU, κ ≥ 0)."""
    s = np.hypot(nu, kappa)
    return -0.5 * np.log(2.0 * math.pi * s) + s - nu * np.log(nu + s) + np.log(_debye_series(nu, nu / s))


def _debye_log_q(nu: float, kappa: np.ndarray) -> np.ndarray:
    """``log q_ν`` with ``q_ν = I_{ν+1}(κ) / (κ I_ν(κ))``, by a cancellation-free Debye difference."""
    s0 = np.hypot(nu, kappa)
    s1 = np.hypot(nu + 1.0, kappa)
    ds = (2.0 * nu + 1.0) / (s0 + s1)  # s1 - s0 without cancellation
    return (
        -0.5 * np.log1p(ds / s0)
        + ds
        - np.log(nu + 1.0 + s1)
        - nu * np.log1p((1.0 + ds) / (nu + s0))
        + np.log(_debye_series(nu + 1.0, (nu + 1.0) / s1))
        - np.log(_debye_series(nu, nu / s0))
    )


def _series_scaled_and_q(nu: float, kappa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Power series ``I_ν(κ) = (κ/2)^ν Σ_k (κ²/4)^k / (k! Γ(ν+k+1))`` for κ ≤ SERIES_MAX_KAPPA.

    All terms are positive, so the sum is exact to rounding; 80 terms suffice for κ ≤ 10.
    """
    x = 0.25 * kappa * kappa
    s0 = np.ones_like(kappa)  # Σ x^k / (k! (ν+1)_k)
    s1 = np.ones_like(kappa)  # the same for ν + 1
    t0 = np.ones_like(kappa)
    t1 = np.ones_like(kappa)
    for k in range(1, 80):
        t0 = t0 * x / (k * (nu + k))
        t1 = t1 * x / (k * (nu + 1 + k))
        s0 += t0
        s1 += t1
    scaled = -nu * math.log(2.0) - math.lgamma(nu + 1.0) + np.log(s0)
    return scaled, 0.5 * s1 / ((nu + 1.0) * s0)


def _scaled_and_q(nu: float, kappa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(log I_ν(κ) − ν log κ, q_ν(κ))`` for scalar ν ≥ 0 and κ ≥ 0 (array)."""
    if nu >= DEBYE_MIN_NU:
        return _debye_log_scaled(nu, kappa), np.exp(_debye_log_q(nu, kappa))
    small = kappa <= SERIES_MAX_KAPPA
    if np.any(small):
        scaled = np.empty_like(kappa)
        q = np.empty_like(kappa)
        scaled[small], q[small] = _series_scaled_and_q(nu, kappa[small])
        if not np.all(small):
            scaled[~small], q[~small] = _scaled_and_q_recurrence(nu, kappa[~small])
        return scaled, q
    return _scaled_and_q_recurrence(nu, kappa)


def _scaled_and_q_recurrence(nu: float, kappa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Debye at order ``ν + N ≥ DEBYE_MIN_NU``, then N backward ratio-recurrence steps."""
    n_steps = math.ceil(DEBYE_MIN_NU - nu)
    top = nu + n_steps
    scaled = _debye_log_scaled(top, kappa)
    q = np.exp(_debye_log_q(top, kappa))
    k2 = kappa * kappa
    for j in range(n_steps):  # q_{μ-1} = 1 / (2μ + κ² q_μ), μ = top .. nu+1
        q = 1.0 / (2.0 * (top - j) + k2 * q)
        scaled = scaled - np.log(q)
    return scaled, q


def _check_nu(nu: float) -> float:
    nu = float(nu)
    if not math.isfinite(nu) or nu < 0:
        raise InvalidArgumentError(f"Bessel order nu must be finite and >= 0, got {nu}")
    return nu


def _check_kappa(kappa: object) -> np.ndarray:
    k = np.asarray(kappa, dtype=np.float64)
    if not np.all(np.isfinite(k)) or np.any(k < 0):
        raise InvalidArgumentError("kappa must be finite and >= 0")
    return k


def _check_dim(d: int) -> int:
    if isinstance(d, bool) or int(d) != d or int(d) < 2:
        raise InvalidArgumentError(f"dimension d must be an integer >= 2, got {d!r}")
    return int(d)


def _per_order(fn, nu: object, kappa: object) -> np.ndarray:
    """Apply a scalar-order function over broadcast (ν, κ) arrays, one call per distinct ν."""
    try:
        nus, ks = np.broadcast_arrays(np.asarray(nu, dtype=np.float64), np.asarray(kappa, dtype=np.float64))
    except ValueError as exc:
        raise InvalidArgumentError("nu and kappa do not broadcast together") from exc
    out = np.empty(nus.shape)
    for v in np.unique(nus):
        sel = nus == v
        out[sel] = fn(float(v), ks[sel])
    return out


def log_bessel_iv(nu: float, kappa: object) -> np.ndarray | float:
    """``log I_ν(κ)`` of the modified Bessel function of the first kind, vectorised over κ.

    Stable for ν in [0, ~1e4] and κ in [0, ~1e300]; ``log I_ν(0) = -inf`` for ν > 0.
    An array ν is broadcast against κ (one pass per distinct ν).
    """
    if np.ndim(nu) > 0:
        return _per_order(log_bessel_iv, nu, kappa)
    nu = _check_nu(nu)
    k = _check_kappa(kappa)
    scaled, _ = _scaled_and_q(nu, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = scaled + np.where(k > 0, nu * np.log(np.where(k > 0, k, 1.0)), 0.0)
    if nu > 0:
        out = np.where(k == 0, -np.inf, out)
    return out if out.ndim else float(out)


def bessel_ratio(nu: float, kappa: object) -> np.ndarray | float:
    """``I_{ν+1}(κ) / I_ν(κ)`` in (0, 1), computed without forming either Bessel value."""
    if np.ndim(nu) > 0:
        return _per_order(bessel_ratio, nu, kappa)
    nu = _check_nu(nu)
    k = _check_kappa(kappa)
    _, q = _scaled_and_q(nu, k)
    out = k * q
    return out if out.ndim else float(out)


def mean_resultant_length(d: int, kappa: object) -> np.ndarray | float:
    """``A_d(κ) = I_{d/2}(κ) / I_{d/2-1}(κ) = E[μᵀx]`` for x ~ vMF(μ, κ) on S^{d-1}."""
    d = _check_dim(d)
    return bessel_ratio(d / 2.0 - 1.0, kappa)


def log_sphere_area(d: int) -> float:
    """``log |S^{d-1}| = log(2 π^{d/2} / Γ(d/2))``."""
    d = _check_dim(d)
    return math.log(2.0) + 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d)


def log_vmf_normalizer(d: int, kappa: object) -> np.ndarray | float:
    """``log C_d(κ) = ν log κ − (d/2) log 2π − log I_ν(κ)``; equals ``−log |S^{d-1}|`` at κ = 0."""
    d = _check_dim(d)
    k = _check_kappa(kappa)
    nu = d / 2.0 - 1.0
    scaled, _ = _scaled_and_q(nu, k)
    out = -0.5 * d * _LOG_2PI - scaled
    out = np.where(k == 0, -log_sphere_area(d), out)
    return out if out.ndim else float(out)


def estimate_kappa(
    d: int,
    rbar: object,
    *,
    newton_steps: int | None = None,
    max_kappa: float = DEFAULT_MAX_KAPPA,
) -> np.ndarray | float:
    """Solve ``A_d(κ) = R̄`` for κ: Banerjee et al. (2005) start, then Newton.

    ``newton_steps=None`` iterates to convergence (|Δκ| ≤ 1e-12 κ, at most 50 steps;
    typically 2–4); an integer runs exactly that many steps (0 = Banerjee only).
    Newton uses ``A'(κ) = 1 − A² − (d−1) A / κ``; A is increasing and concave, so
    iterates land on the left of the root and then climb to it monotonically.
    R̄ = 1 (one point, or identical points) gives ``max_kappa``.
    """
    d = _check_dim(d)
    r_in = np.asarray(rbar, dtype=np.float64)
    r = np.atleast_1d(r_in).ravel()
    if not np.all(np.isfinite(r)) or np.any(r < 0) or np.any(r > 1.0 + 1e-6):
        raise InvalidArgumentError("mean resultant length rbar must lie in [0, 1]")
    r = np.clip(r, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.where(r < 1.0, r * (d - r * r) / (1.0 - r * r), np.inf)
    kappa = np.minimum(kappa, max_kappa)
    active = (r > 0) & (kappa < max_kappa)
    max_iter = 50 if newton_steps is None else int(newton_steps)
    for _ in range(max_iter):
        if not np.any(active):
            break
        k = kappa[active]
        a = np.asarray(mean_resultant_length(d, k))
        deriv = 1.0 - a * a - (d - 1.0) * a / k
        deriv = np.maximum(deriv, 1e-300)
        new = k - (a - r[active]) / deriv
        new = np.clip(new, 0.1 * k, max_kappa)
        kappa[active] = new
        if newton_steps is None:
            done = np.abs(new - k) <= 1e-12 * new
            idx = np.flatnonzero(active)
            active[idx[done]] = False
    return kappa.reshape(r_in.shape) if r_in.ndim else float(kappa[0])


def as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """A NumPy Generator from a Generator, a seed, or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def as_unit_rows(x: object, name: str = "vectors", d: int | None = None) -> np.ndarray:
    """Validate a (n, d) or (d,) array of finite, non-zero vectors and L2-normalise it (float64)."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidVectorError(f"{name} must be numeric") from exc
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise InvalidVectorError(f"{name} must have shape (n, d) with d >= 2, got {arr.shape}")
    if d is not None and arr.shape[1] != d:
        raise DimensionMismatchError(f"{name} have dimension {arr.shape[1]}, expected {d}")
    if not np.all(np.isfinite(arr)):
        raise InvalidVectorError(f"{name} contain NaN or inf")
    norms = np.linalg.norm(arr, axis=1)
    if np.any(norms == 0):
        raise InvalidVectorError(f"{name} contain a zero vector (no direction on the sphere)")
    return arr / norms[:, None]


def _check_weights(weights: object, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise InvalidArgumentError(f"weights must have shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise InvalidArgumentError("weights must be finite, >= 0 and not all zero")
    return w


def fit_vmf(
    unit_vectors: object,
    weights: object = None,
    *,
    max_kappa: float = DEFAULT_MAX_KAPPA,
) -> tuple[np.ndarray, float]:
    """Maximum-likelihood direction and (Banerjee + Newton) concentration of weighted unit vectors.

    Rows are re-normalised first. Returns ``(mu, kappa)`` with mu float64 of shape (d,).
    Note R̄ of n samples is biased upwards by about ``(1 − A²)/(2 n A)``, so κ of a
    handful of points is overestimated (a single point gives ``max_kappa``).
    """
    x = as_unit_rows(unit_vectors, "unit_vectors")
    w = _check_weights(weights, x.shape[0])
    m = (w[:, None] * x).sum(axis=0) / w.sum()
    rbar = float(np.linalg.norm(m))
    d = x.shape[1]
    if rbar <= 1e-15:
        mu = np.zeros(d)
        mu[0] = 1.0
        return mu, 0.0
    return m / rbar, float(estimate_kappa(d, min(rbar, 1.0), max_kappa=max_kappa))


def fit_vmf_groups(
    vectors: object,
    labels: object,
    *,
    n_groups: int | None = None,
    weights: object = None,
    max_kappa: float = DEFAULT_MAX_KAPPA,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fit one vMF splat per label (e.g. per HRM2 fine cluster) in one pass.

    Returns ``(mu (G, d), kappa (G,), alpha (G,), counts (G,))`` where ``alpha`` is each
    group's share of the total weight. Empty groups get mu = e_0, kappa = 0, alpha = 0.
    """
    x = as_unit_rows(vectors, "vectors")
    lab = np.asarray(labels)
    if lab.shape != (x.shape[0],) or not np.issubdtype(lab.dtype, np.integer) or np.any(lab < 0):
        raise InvalidArgumentError("labels must be non-negative integers, one per vector")
    g = int(lab.max()) + 1 if n_groups is None else int(n_groups)
    if lab.size and lab.max() >= g:
        raise InvalidArgumentError(f"label {int(lab.max())} >= n_groups {g}")
    w = _check_weights(weights, x.shape[0])
    order = np.argsort(lab, kind="stable")
    sl = lab[order]
    starts = np.flatnonzero(np.r_[True, sl[1:] != sl[:-1]]) if sl.size else np.array([], int)
    present = sl[starts]
    sums = np.zeros((g, x.shape[1]))
    sums[present] = np.add.reduceat(w[order, None] * x[order], starts, axis=0)
    wsum = np.bincount(lab, weights=w, minlength=g)
    counts = np.bincount(lab, minlength=g)
    mu = np.zeros_like(sums)
    mu[:, 0] = 1.0
    kappa = np.zeros(g)
    nz = wsum > 0
    mean = sums[nz] / wsum[nz, None]
    rbar = np.linalg.norm(mean, axis=1)
    ok = rbar > 1e-15
    idx = np.flatnonzero(nz)[ok]
    mu[idx] = mean[ok] / rbar[ok, None]
    kappa[idx] = estimate_kappa(x.shape[1], np.minimum(rbar[ok], 1.0), max_kappa=max_kappa)
    return mu, kappa, wsum / w.sum(), counts


def sample_vmf(
    mu: object,
    kappa: float,
    n: int,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Exact draws from vMF(μ, κ) by Wood's (1994) rejection sampler; returns (n, d).

    The output is float32 when ``mu`` is float32/float16, else float64 (sampling is
    always done in float64). ``1 − W`` is formed without cancellation so κ up to 1e8 works.
    """
    mu_arr = np.asarray(mu)
    out_dtype = np.float32 if mu_arr.dtype in (np.float32, np.float16) else np.float64
    m = as_unit_rows(mu_arr, "mu")
    if m.shape[0] != 1:
        raise InvalidVectorError("mu must be a single direction of shape (d,)")
    m = m[0]
    d = m.shape[0]
    kappa = float(_check_kappa(kappa))
    n = int(n)
    if n < 0:
        raise InvalidArgumentError("n must be >= 0")
    gen = as_rng(rng)
    if kappa == 0.0:
        return as_unit_rows(gen.standard_normal((max(n, 1), d)))[:n].astype(out_dtype)
    dm1 = d - 1.0
    b = dm1 / (2.0 * kappa + math.sqrt(4.0 * kappa * kappa + dm1 * dm1))
    x0 = (1.0 - b) / (1.0 + b)
    one_minus_x0 = 2.0 * b / (1.0 + b)
    c = kappa * x0 + dm1 * math.log(4.0 * b / (1.0 + b) ** 2)
    ws: list[np.ndarray] = []
    oms: list[np.ndarray] = []
    have = 0
    while have < n:
        m_try = int(1.3 * (n - have)) + 16
        z = gen.beta(dm1 / 2.0, dm1 / 2.0, size=m_try)
        denom = 1.0 - (1.0 - b) * z
        one_minus_w = 2.0 * b * z / denom
        w = 1.0 - one_minus_w
        log_u = np.log(gen.random(m_try))
        accept = kappa * w + dm1 * np.log(one_minus_x0 + x0 * one_minus_w) - c >= log_u
        ws.append(w[accept])
        oms.append(one_minus_w[accept])
        have += int(accept.sum())
    w = np.concatenate(ws)[:n]
    one_minus_w = np.concatenate(oms)[:n]
    v = gen.standard_normal((n, d))
    v -= np.outer(v @ m, m)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    x = w[:, None] * m[None, :] + np.sqrt(one_minus_w * (1.0 + w))[:, None] * v
    return x.astype(out_dtype)
