"""vMF maths checked against mpmath (40 digits) and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from m2m.errors import InvalidArgumentError, InvalidVectorError
from m2m.splats.vmf import (
    bessel_ratio,
    estimate_kappa,
    fit_vmf,
    fit_vmf_groups,
    log_bessel_iv,
    log_sphere_area,
    log_vmf_normalizer,
    mean_resultant_length,
    sample_vmf,
)

mp = pytest.importorskip("mpmath")
mp.mp.dps = 40

NUS = [0.0, 0.5, 1.0, 2.5, 39.5, 40.0, 60.0, 190.5, 191.0, 319.0, 1000.0]
KAPPAS = np.logspace(-6, 5, 23)  # 1e-6 .. 1e5, half-decade steps


def _mp_iv(nu: float, k: float):
    return mp.besseli(nu, mp.mpf(k), maxterms=10**6)


def _unit(rng: np.random.Generator, d: int) -> np.ndarray:
    v = rng.standard_normal(d)
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("nu", NUS)
def test_log_bessel_iv_matches_mpmath(nu: float) -> None:
    got = log_bessel_iv(nu, KAPPAS)
    ref = np.array([float(mp.log(_mp_iv(nu, k))) for k in KAPPAS])
    # |Δ log I| ≤ 1e-13 · max(1, |log I|): I_ν itself to 1e-13 relative where log I is small,
    # log I to 1e-13 relative where it is large (the measured worst case is 8.7e-15).
    err = np.abs(got - ref) / np.maximum(1.0, np.abs(ref))
    assert err.max() < 1e-13, (nu, KAPPAS[err.argmax()], err.max())


@pytest.mark.parametrize("d", [2, 3, 64, 383, 384, 640, 2002])
def test_mean_resultant_length_matches_mpmath(d: int) -> None:
    nu = d / 2 - 1
    got = mean_resultant_length(d, KAPPAS)
    ref = np.array([float(_mp_iv(nu + 1, k) / _mp_iv(nu, k)) for k in KAPPAS])
    rel = np.abs(got - ref) / ref
    assert rel.max() < 1e-12, (d, KAPPAS[rel.argmax()], rel.max())
    assert np.all(np.diff(got) > 0) and np.all((got > 0) & (got < 1))


def test_bessel_ratio_scalar_and_zero() -> None:
    assert bessel_ratio(3.0, 0.0) == 0.0
    assert log_bessel_iv(0.0, 0.0) == 0.0
    assert log_bessel_iv(2.0, 0.0) == -math.inf
    assert isinstance(log_bessel_iv(191.0, 10.0), float)
    # small-κ series: A_d(κ) = κ/d − κ³/(d²(d+2)) + O(κ⁵)
    d, k = 384, 1e-3
    assert mean_resultant_length(d, k) == pytest.approx(k / d - k**3 / (d * d * (d + 2)), rel=1e-14)


@pytest.mark.parametrize("d", [3, 64, 384, 640])
def test_log_vmf_normalizer_matches_mpmath_and_limits(d: int) -> None:
    ks = np.array([1e-3, 0.7, 10.0, 300.0, 5e3, 1e5])
    got = log_vmf_normalizer(d, ks)
    nu = d / 2 - 1
    ref = np.array([float(nu * mp.log(k) - (d / 2) * mp.log(2 * mp.pi) - mp.log(_mp_iv(nu, k))) for k in ks])
    assert np.abs(got - ref).max() <= 1e-12 * np.abs(ref).max()
    # κ → 0 is the uniform density 1/|S^{d-1}|, continuously
    area = float(mp.log(2 * mp.pi ** (mp.mpf(d) / 2) / mp.gamma(mp.mpf(d) / 2)))
    assert log_sphere_area(d) == pytest.approx(area, rel=1e-14)
    assert log_vmf_normalizer(d, 0.0) == pytest.approx(-area, rel=1e-14)
    assert log_vmf_normalizer(d, 1e-9) == pytest.approx(-area, abs=1e-12)


def test_log_vmf_normalizer_closed_form_d3() -> None:
    ks = np.array([1e-4, 0.5, 3.0, 40.0, 600.0])
    ref = np.log(ks) - np.log(4 * np.pi) - (ks + np.log1p(-np.exp(-2 * ks)) - np.log(2.0))
    np.testing.assert_allclose(log_vmf_normalizer(3, ks), ref, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("d", [2, 3, 64, 384, 640])
def test_estimate_kappa_inverts_mean_resultant_length(d: int) -> None:
    ks = np.logspace(-3, 5, 33)
    back = estimate_kappa(d, mean_resultant_length(d, ks))
    # the inversion is limited by float64 resolution of A near 0 and near 1
    assert np.max(np.abs(back - ks) / ks) < 1e-8
    # two Newton steps already give ~1e-13 from Banerjee's start for d ≥ 64
    if d >= 64:
        two = estimate_kappa(d, mean_resultant_length(d, ks), newton_steps=2)
        assert np.max(np.abs(two - ks) / ks) < 1e-9
    assert estimate_kappa(d, 0.0) == 0.0
    assert estimate_kappa(d, 1.0) == 1e6


def test_sample_vmf_d3_matches_exact_cdf() -> None:
    # On S², w = μᵀx has density ∝ exp(κw) on [-1, 1]: F(w) = (e^{κ(w+1)} − 1)/(e^{2κ} − 1).
    rng = np.random.default_rng(1)
    mu = _unit(rng, 3)
    for kappa in (0.3, 4.0, 50.0):
        w = np.sort(sample_vmf(mu, kappa, 20000, rng) @ mu)
        cdf = np.expm1(kappa * (w + 1)) / np.expm1(2 * kappa)
        ecdf = np.arange(1, w.size + 1) / w.size
        ks_stat = np.max(np.maximum(ecdf - cdf, cdf - (ecdf - 1 / w.size)))
        assert ks_stat < 1.63 / math.sqrt(w.size)  # KS 1% critical value


@pytest.mark.parametrize(("d", "kappa"), [(64, 50.0), (384, 400.0), (384, 2000.0), (640, 1e5)])
def test_sample_vmf_mean_and_isotropy(d: int, kappa: float) -> None:
    rng = np.random.default_rng(d)
    mu = _unit(rng, d)
    x = sample_vmf(mu, kappa, 10000, rng)
    assert x.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-12)
    t = x @ mu
    se = t.std() / math.sqrt(t.size)
    assert abs(t.mean() - mean_resultant_length(d, kappa)) < 4 * se
    # the tangent part is isotropic: its mean vanishes to sampling precision
    perp = (x - np.outer(t, mu)).mean(axis=0)
    assert np.linalg.norm(perp) < 4 * math.sqrt((1 - (t**2).mean()) / t.size)


@pytest.mark.parametrize(("d", "kappa"), [(64, 50.0), (384, 400.0), (384, 2000.0)])
def test_fit_vmf_recovers_parameters(d: int, kappa: float) -> None:
    rng = np.random.default_rng(7)
    mu = _unit(rng, d)
    x = sample_vmf(mu.astype(np.float32), kappa, 20000, rng)
    assert x.dtype == np.float32
    mu_hat, k_hat = fit_vmf(x)
    assert float(mu_hat @ mu) > 0.999
    assert abs(k_hat / kappa - 1) < 0.03


def test_fit_vmf_weights_equal_repetition() -> None:
    rng = np.random.default_rng(3)
    x = sample_vmf(_unit(rng, 16), 20.0, 50, rng)
    w = rng.integers(1, 4, size=50)
    mu_w, k_w = fit_vmf(x, w.astype(float))
    mu_r, k_r = fit_vmf(np.repeat(x, w, axis=0))
    np.testing.assert_allclose(mu_w, mu_r, atol=1e-12)
    assert k_w == pytest.approx(k_r, rel=1e-10)


def test_fit_vmf_groups_equals_per_group_fit() -> None:
    rng = np.random.default_rng(5)
    d = 32
    x = np.vstack([sample_vmf(_unit(rng, d), k, 40, rng) for k in (5.0, 30.0, 200.0)])
    labels = np.repeat([0, 2, 3], 40)  # group 1 and 4 empty
    w = rng.random(120)
    mu, kappa, alpha, counts = fit_vmf_groups(x, labels, n_groups=5, weights=w)
    for g, lo in ((0, 0), (2, 40), (3, 80)):
        m1, k1 = fit_vmf(x[lo : lo + 40], w[lo : lo + 40])
        np.testing.assert_allclose(mu[g], m1, atol=1e-12)
        assert kappa[g] == pytest.approx(k1, rel=1e-10)
        assert alpha[g] == pytest.approx(w[lo : lo + 40].sum() / w.sum())
    assert counts.tolist() == [40, 0, 40, 40, 0]
    assert alpha[1] == 0 and kappa[4] == 0
    assert alpha.sum() == pytest.approx(1.0)


def test_bad_inputs_raise_typed_errors() -> None:
    with pytest.raises(InvalidArgumentError):
        log_bessel_iv(-1.0, 1.0)
    with pytest.raises(InvalidArgumentError):
        log_bessel_iv(1.0, [-1.0])
    with pytest.raises(InvalidArgumentError):
        mean_resultant_length(1, 1.0)
    with pytest.raises(InvalidArgumentError):
        estimate_kappa(3, 1.5)
    with pytest.raises(InvalidVectorError):
        fit_vmf(np.zeros((3, 4)))
    with pytest.raises(InvalidVectorError):
        sample_vmf([np.nan, 1.0, 0.0], 1.0, 3)
    with pytest.raises(InvalidArgumentError):
        fit_vmf(np.eye(3), weights=[1.0, -1.0, 1.0])


def test_array_orders_broadcast() -> None:
    nus = np.array([[0.5], [191.0]])
    ks = np.array([0.1, 10.0, 1e3])
    got = log_bessel_iv(nus, ks)
    assert got.shape == (2, 3)
    np.testing.assert_array_equal(got[1], log_bessel_iv(191.0, ks))
    np.testing.assert_array_equal(bessel_ratio(nus, ks)[0], bessel_ratio(0.5, ks))
    with pytest.raises(InvalidArgumentError):
        log_bessel_iv(np.array([1.0, 2.0]), np.array([1.0, 2.0, 3.0]))
