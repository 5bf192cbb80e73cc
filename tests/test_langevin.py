"""Langevin samplers checked against the exact vMF law: E[μᵀx] = A_d(κ) and mixture means."""

from __future__ import annotations

import math

import numpy as np
import pytest

from m2m.errors import InvalidArgumentError
from m2m.splats.energy import SplatMixture, sample_mixture
from m2m.splats.langevin import langevin_sample
from m2m.splats.vmf import estimate_kappa, mean_resultant_length, sample_vmf

# (d, target A_d(κ), chains, steps): sized so each run is a few seconds on 2 cores
CASES = [(64, 0.5, 1000, 200), (64, 0.9, 1000, 200), (384, 0.5, 400, 200), (384, 0.9, 400, 200)]


def _single_splat(d: int, a: float, seed: int) -> tuple[SplatMixture, np.ndarray, float]:
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal(d)
    mu /= np.linalg.norm(mu)
    kappa = float(estimate_kappa(d, a))
    return SplatMixture(mu[None, :], [kappa], [1.0]), mu, kappa


@pytest.mark.parametrize(("d", "a", "n", "steps"), CASES)
def test_mala_relaxes_to_the_vmf_law(d: int, a: float, n: int, steps: int) -> None:
    mix, mu, _ = _single_splat(d, a, seed=d)
    rng = np.random.default_rng(1)
    # start off-law: a third too spread (A − 0.15), a third too tight (A + 0.08), a third
    # uniform (μᵀx ≈ 0, where the gradient is steepest and an uncapped drift overshoots)
    m = n // 3
    lo = sample_vmf(mu, float(estimate_kappa(d, a - 0.15)), m, rng)
    hi = sample_vmf(mu, float(estimate_kappa(d, min(a + 0.08, 0.97))), m, rng)
    x0 = np.vstack([lo, hi, rng.standard_normal((n - 2 * m, d))])
    assert abs((x0 @ mu).mean() / a - 1) > 0.2
    x, info = langevin_sample(mix, n, init=x0, steps=steps, rng=2, return_info=True)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-12)
    assert abs((x @ mu).mean() / a - 1) < 0.02
    assert 0.5 < info["acceptance_rate"] < 0.65  # tuned towards 0.574


@pytest.mark.parametrize(("d", "a", "n", "steps"), CASES)
def test_underdamped_ghmc_from_uniform_start(d: int, a: float, n: int, steps: int) -> None:
    mix, mu, _ = _single_splat(d, a, seed=d + 1)
    x0 = np.random.default_rng(3).standard_normal((n, d))  # uniform: μᵀx ≈ 0
    x, info = langevin_sample(mix, n, init=x0, steps=steps, rng=4, underdamped=True, return_info=True)
    assert abs((x @ mu).mean() / a - 1) < 0.02
    assert 0.65 < info["acceptance_rate"] < 0.85  # tuned towards 0.75


@pytest.mark.parametrize("underdamped", [False, True])
def test_temperature_targets_the_tempered_law(underdamped: bool) -> None:
    # exp(−E/T) of one splat is vMF(μ, κ/T): start at the T = 1 law and let it heat up
    d = 64
    mix, mu, kappa = _single_splat(d, 0.9, seed=5)
    rng = np.random.default_rng(6)
    x0 = sample_vmf(mu, kappa, 1000, rng)
    x = langevin_sample(mix, 1000, init=x0, steps=200, temperature=2.0, rng=7, underdamped=underdamped)
    target = mean_resultant_length(d, kappa / 2)
    assert abs((x0 @ mu).mean() / target - 1) > 0.1
    assert abs((x @ mu).mean() / target - 1) < 0.02


@pytest.mark.parametrize("underdamped", [False, True])
def test_mixture_mean_on_s2(underdamped: bool) -> None:
    # overlapping splats on S²: E[x] = Σ α_c A_3(κ_c) μ_c exactly
    rng = np.random.default_rng(8)
    mix = SplatMixture(rng.standard_normal((3, 3)), [2.0, 5.0, 3.0], [0.2, 0.5, 0.3])
    n = 3000
    x = langevin_sample(mix, n, init=rng.standard_normal((n, 3)), steps=200, rng=9, underdamped=underdamped)
    se = x.std(axis=0) / math.sqrt(n)
    assert np.all(np.abs(x.mean(axis=0) - mix.mean_direction()) < 4 * se)


def test_default_init_and_chain_mapping() -> None:
    mix, mu, _ = _single_splat(16, 0.7, seed=10)
    x = langevin_sample(mix, 500, steps=60, rng=11)
    assert x.shape == (500, 16)
    t = x @ mu
    assert abs(t.mean() - 0.7) < 4 * t.std() / math.sqrt(500)
    # one starting row feeds every chain; same seed, same result
    start = np.ones((1, 16))
    a = langevin_sample(mix, 5, init=start, steps=3, rng=12)
    b = langevin_sample(mix, 5, init=start, steps=3, rng=12)
    np.testing.assert_array_equal(a, b)


def test_sample_mixture_tempered_single_splat_is_exact() -> None:
    mix, mu, kappa = _single_splat(32, 0.8, seed=13)
    x = sample_mixture(mix, 20000, 14, temperature=2.0)
    t = x @ mu
    assert abs(t.mean() - mean_resultant_length(32, kappa / 2)) < 4 * t.std() / math.sqrt(t.size)


class LinearEnergy:
    """A model that is not a SplatMixture: E(x) = −κ μᵀx, i.e. vMF(μ, κ) up to a constant."""

    def __init__(self, mu: np.ndarray, kappa: float) -> None:
        self.mu = mu / np.linalg.norm(mu)
        self.k = kappa

    @property
    def dim(self) -> int:
        return self.mu.size

    def energy_and_grad(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = -self.k * np.broadcast_to(self.mu, x.shape)
        return -self.k * (x @ self.mu), g - np.sum(g * x, axis=1, keepdims=True) * x


@pytest.mark.parametrize("underdamped", [False, True])
def test_any_energy_model_works(underdamped: bool) -> None:
    d, kappa = 16, 20.0
    model = LinearEnergy(np.random.default_rng(16).standard_normal(d), kappa)
    x = langevin_sample(model, 2000, steps=200, rng=17, underdamped=underdamped)  # uniform starts
    t = x @ model.mu
    assert abs(t.mean() - mean_resultant_length(d, kappa)) < 4 * t.std() / math.sqrt(t.size) + 0.005


def test_bad_arguments() -> None:
    mix, _, _ = _single_splat(8, 0.5, seed=15)
    with pytest.raises(InvalidArgumentError):
        langevin_sample(mix, 0)
    with pytest.raises(InvalidArgumentError):
        langevin_sample(mix, 3, temperature=0.0)
    with pytest.raises(InvalidArgumentError):
        langevin_sample(mix, 3, step_size=-1.0)
