"""Splat-mixture energy checked against mpmath, quadrature, finite differences and ranks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from m2m.errors import DimensionMismatchError, InvalidArgumentError
from m2m.splats.energy import NoveltyCalibrator, SplatMixture, find_gaps, sample_mixture
from m2m.splats.vmf import sample_vmf

mp = pytest.importorskip("mpmath")
mp.mp.dps = 40


def _random_mixture(rng: np.random.Generator, c: int, d: int, kappas: list[float]) -> SplatMixture:
    mu = rng.standard_normal((c, d))
    alpha = rng.random(c) + 0.2
    return SplatMixture(mu, np.array(kappas, dtype=float), alpha)


def _mp_log_density(mix: SplatMixture, x: np.ndarray) -> float:
    d = mix.dim
    nu = mp.mpf(d) / 2 - 1
    total = mp.mpf(0)
    for mu, k, a in zip(mix.mu, mix.kappa, mix.alpha, strict=True):
        k = mp.mpf(float(k))
        cos = mp.fsum(mp.mpf(float(u)) * mp.mpf(float(v)) for u, v in zip(mu, x, strict=True))
        log_c = (
            nu * mp.log(k) - (mp.mpf(d) / 2) * mp.log(2 * mp.pi) - mp.log(mp.besseli(nu, k, maxterms=10**6))
        )
        total += mp.mpf(float(a)) * mp.exp(log_c + k * cos)
    return float(mp.log(total))


@pytest.mark.parametrize(("d", "kappas"), [(5, [0.3, 4.0, 60.0, 1e3]), (384, [50.0, 400.0, 2e3])])
def test_log_density_matches_mpmath(d: int, kappas: list[float]) -> None:
    rng = np.random.default_rng(d)
    mix = _random_mixture(rng, len(kappas), d, kappas)
    # points near each component and random ones: terms span hundreds of orders of magnitude
    x = np.vstack([sample_vmf(mix.mu[c], mix.kappa[c], 2, rng) for c in range(mix.n_components)])
    x = np.vstack([x, rng.standard_normal((3, d))])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    got = mix.log_density(x)
    ref = np.array([_mp_log_density(mix, xi) for xi in x])
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-11)
    np.testing.assert_allclose(mix.energy(x), -ref, rtol=1e-12, atol=1e-11)
    assert mix.energy(x[0]) == pytest.approx(-ref[0], rel=1e-12)


@pytest.mark.parametrize("kappas", [[0.0, 0.5], [5.0, 30.0, 1.0], [80.0, 12.0]])
def test_density_integrates_to_one_on_s2(kappas: list[float]) -> None:
    rng = np.random.default_rng(len(kappas))
    mix = _random_mixture(rng, len(kappas), 3, kappas)
    # Gauss–Legendre in u = cos θ, trapezoid (spectral for periodic) in φ; dA = du dφ
    u, wu = np.polynomial.legendre.leggauss(160)
    phi = np.linspace(0, 2 * np.pi, 240, endpoint=False)
    uu, pp = np.meshgrid(u, phi, indexing="ij")
    s = np.sqrt(1 - uu**2)
    pts = np.stack([s * np.cos(pp), s * np.sin(pp), uu], axis=-1).reshape(-1, 3)
    dens = np.exp(mix.log_density(pts)).reshape(uu.shape)
    total = np.sum(wu[:, None] * dens) * (2 * np.pi / phi.size)
    assert total == pytest.approx(1.0, abs=1e-10)


def test_density_integrates_to_one_on_circle() -> None:
    mix = SplatMixture(np.array([[1.0, 0.0], [0.3, -1.0]]), [3.0, 40.0], [0.3, 0.7])
    phi = np.linspace(0, 2 * np.pi, 4000, endpoint=False)
    pts = np.stack([np.cos(phi), np.sin(phi)], axis=1)
    total = np.exp(mix.log_density(pts)).sum() * (2 * np.pi / phi.size)
    assert total == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    ("d", "kappas"), [(3, [2.0, 9.0]), (16, [10.0, 30.0, 50.0, 5.0]), (384, [300.0, 900.0])]
)
def test_gradient_matches_finite_differences(d: int, kappas: list[float]) -> None:
    rng = np.random.default_rng(11 + d)
    mix = _random_mixture(rng, len(kappas), d, kappas)
    # points between the components so that the responsibilities are mixed
    x = mix.mu[0] + mix.mu[1] + 0.3 * rng.standard_normal((6, d)) / math.sqrt(d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    e, g = mix.energy_and_grad(x)
    np.testing.assert_allclose(np.sum(g * x, axis=1), 0.0, atol=1e-10)  # tangent
    np.testing.assert_allclose(g, mix.grad_energy(x), rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(e, mix.energy(x), rtol=1e-14)
    h = 1e-5
    for _ in range(4):
        u = rng.standard_normal((6, d))
        u -= np.sum(u * x, axis=1, keepdims=True) * x
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        # derivative along the geodesic γ(t) = x cos t + u sin t at t = 0 is gᵀu
        fd = (
            mix.energy(x * math.cos(h) + u * math.sin(h)) - mix.energy(x * math.cos(h) - u * math.sin(h))
        ) / (2 * h)
        np.testing.assert_allclose(fd, np.sum(g * u, axis=1), rtol=1e-6, atol=1e-6 * max(kappas))


def test_top_m_and_candidates_are_lower_bounds() -> None:
    rng = np.random.default_rng(2)
    d, c = 64, 12
    mix = _random_mixture(rng, c, d, [200.0] * c)
    x = np.vstack([sample_vmf(mix.mu[i], 200.0, 5, rng) for i in range(c)] + [rng.standard_normal((10, d))])
    exact = mix.log_density(x)
    np.testing.assert_allclose(mix.log_density(x, top_m=c), exact, rtol=1e-14)
    for m in (1, 3):
        approx = mix.log_density(x, top_m=m)
        assert np.all(approx <= exact + 1e-12)
    # random directions are ~equidistant from all splats: dropping terms costs log(c/m) at most
    assert np.all(exact - mix.log_density(x, top_m=1) <= math.log(c) + 1e-9)
    # points drawn from a component: the other splats are negligible (exp(-200·0.6) ≈ 1e-52)
    np.testing.assert_allclose(mix.log_density(x[: 5 * c], top_m=1), exact[: 5 * c], rtol=1e-14)
    cos = x @ mix.mu.T
    cand = np.argsort(-cos, axis=1)[:, :3]
    cand[:, 2] = -1  # padding is ignored
    np.testing.assert_allclose(mix.log_density(x, candidates=cand), mix.log_density(x, top_m=2), rtol=1e-14)
    _, g = mix.energy_and_grad(x[:5], top_m=1)
    np.testing.assert_allclose(g, mix.grad_energy(x[:5]), rtol=1e-9, atol=1e-9)


def test_novelty_is_uniform_for_fresh_samples_and_one_far_away() -> None:
    rng = np.random.default_rng(4)
    d = 64
    mix = _random_mixture(rng, 8, d, [60.0, 80.0, 100.0, 150.0, 60.0, 90.0, 120.0, 200.0])
    stored = sample_mixture(mix, 4000, rng)
    cal = NoveltyCalibrator(mix, stored)
    nov_stored = cal.novelty(stored)
    assert nov_stored.min() > 0 and nov_stored.max() < 1
    assert abs(nov_stored.mean() - 0.5) < 1e-9  # exact ranks (i + ½)/N
    fresh = np.sort(cal.novelty(sample_mixture(mix, 2000, rng)))
    ecdf = np.arange(1, fresh.size + 1) / fresh.size
    ks_stat = np.max(np.maximum(np.abs(ecdf - fresh), np.abs(ecdf - 1 / fresh.size - fresh)))
    assert ks_stat < 1.63 * math.sqrt((4000 + 2000) / (4000 * 2000))  # two-sample KS, 1%
    far = rng.standard_normal((500, d))
    assert np.all(cal.novelty(far) > 0.99)
    assert cal.novelty(-mix.mu[0]) == 1.0


def test_find_gaps_between_three_splats_on_s2() -> None:
    mu = np.eye(3)
    mix = SplatMixture(mu, [20.0, 20.0, 20.0], [1.0, 1.0, 1.0])
    rng = np.random.default_rng(0)
    items = np.vstack([sample_vmf(m, 20.0, 200, rng) for m in mu])
    gaps = find_gaps(mix, items, 5, rng, path_points=15, k_items=4)
    assert gaps.points.shape == (3, 3)
    assert {tuple(sorted(p)) for p in gaps.pairs.tolist()} == {(0, 1), (0, 2), (1, 2)}
    np.testing.assert_allclose(gaps.energies, mix.energy(gaps.points), rtol=1e-12)
    assert np.all(gaps.barriers > 0)
    # each gap lies between its pair: those two centres are its nearest, about equally
    for p, pt in zip(gaps.pairs, gaps.points, strict=True):
        cos = mu @ pt
        other = 3 - p[0] - p[1]
        assert min(cos[p[0]], cos[p[1]]) > cos[other]
        assert abs(cos[p[0]] - cos[p[1]]) < 0.3
    # barrier = E − max(E(a), E(b), Ē_i, Ē_j) ≤ E − max(Ē_i, Ē_j), Ē = median owned-item energy
    owner = np.argmax(items @ mu.T, axis=1)  # equal α and κ: responsibility = nearest centre
    e_items = mix.energy(items)
    ref = np.array([np.median(e_items[owner == c]) for c in range(3)])
    assert np.all(
        gaps.barriers <= gaps.energies - np.maximum(ref[gaps.pairs[:, 0]], ref[gaps.pairs[:, 1]]) + 1e-12
    )
    # less dense than nearly every stored item
    assert np.all(NoveltyCalibrator(mix, items).novelty(gaps.points) > 0.98)
    sims = gaps.points @ (items / np.linalg.norm(items, axis=1, keepdims=True)).T
    brute = np.argsort(-sims, axis=1)[:, :4]
    np.testing.assert_array_equal(gaps.nearest_items, brute)


def test_find_gaps_in_high_dimension() -> None:
    # d = 384, κ = 300: items sit near arccos A ≈ 57° from their centre. Centres 140° apart
    # leave a ridge between their items that is emptier than almost every stored item.
    rng = np.random.default_rng(9)
    d = 384
    a = rng.standard_normal(d)
    a /= np.linalg.norm(a)
    u = rng.standard_normal(d)
    u -= (u @ a) * a
    u /= np.linalg.norm(u)
    far = math.cos(2.44) * a + math.sin(2.44) * u
    mix = SplatMixture(np.vstack([a, far]), [300.0, 300.0], [0.5, 0.5])
    items = sample_mixture(mix, 2000, rng)
    gaps = find_gaps(mix, items, 2, rng)
    assert gaps.points.shape == (1, d) and gaps.pairs.tolist() == [[0, 1]]
    assert NoveltyCalibrator(mix, items).novelty(gaps.points[0]) > 0.99


def test_find_gaps_none_in_a_unimodal_blob() -> None:
    # two tight splats 3° apart on S² make one log-concave blob: E along any geodesic between
    # two items peaks at an endpoint, so there is no ridge anywhere
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([math.cos(0.05), math.sin(0.05), 0.0])
    mix = SplatMixture(np.vstack([a, b]), [200.0, 200.0], [0.5, 0.5])
    items = sample_mixture(mix, 400, 1)
    gaps = find_gaps(mix, items, 3, 2, samples_per_splat=8)
    assert gaps.points.shape == (0, 3)


def test_find_gaps_returns_none_inside_one_basin() -> None:
    # two broad overlapping splats 20° apart: E decreases monotonically into one basin
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([math.cos(0.35), math.sin(0.35), 0.0])
    mix = SplatMixture(np.vstack([a, b]), [3.0, 3.0], [0.5, 0.5])
    gaps = find_gaps(mix, np.vstack([a, b]), 3, 0)
    assert gaps.points.shape == (0, 3) and gaps.nearest_items.shape == (0, 5)


def test_mixture_validation() -> None:
    with pytest.raises(InvalidArgumentError):
        SplatMixture(np.eye(3), [1.0, 1.0], [1, 1, 1])
    with pytest.raises(InvalidArgumentError):
        SplatMixture(np.eye(3), [1.0, -1.0, 1.0], [1, 1, 1])
    with pytest.raises(InvalidArgumentError):
        SplatMixture(np.eye(3), [1.0, 1.0, 1.0], [0, 0, 0])
    mix = SplatMixture(np.eye(3), [1.0, 1.0, 1.0], [1, 1, 2])
    assert mix.alpha.tolist() == [0.25, 0.25, 0.5]
    with pytest.raises(DimensionMismatchError):
        mix.energy(np.ones(4))
    with pytest.raises(InvalidArgumentError):
        mix.energy(np.ones((2, 3)), candidates=np.array([[0], [3]]))
