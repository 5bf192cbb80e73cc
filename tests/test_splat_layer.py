"""The splat layer of collections: α/κ from usage and feedback, energy, novelty, gaps,
splat-aware ranking, SOC consolidation, generation, persistence. Oracles: the formulas in
docs/splats.md ("Collections"), brute force, and m2m.splats.* mathematics."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import m2m
from m2m.errors import InvalidArgumentError, ItemNotFoundError
from m2m.index_manager import IndexSettings
from m2m.splats.layer import SplatSettings
from m2m.splats.soc import avalanche_scan
from m2m.splats.vmf import estimate_kappa, log_vmf_normalizer, mean_resultant_length, sample_vmf
from test_soc import co_membership, planted

WORDNET = Path("/work/shared/datasets/wordnet-minilm")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _client(path: Path, threshold: int = 10**9) -> m2m.Client:
    return m2m.Client(path, index_settings=IndexSettings(threshold=threshold, background=False))


def _ids(n: int, start: int = 0) -> list[str]:
    return [f"i{j}" for j in range(start, start + n)]


@pytest.fixture
def vmf_collection(tmp_path):
    """2000 items drawn from one vMF (d = 32, κ = 40), fitted as one splat."""
    rng = np.random.default_rng(0)
    mu = _unit(rng.standard_normal((1, 32)))[0]
    x = sample_vmf(mu, 40.0, 2000, rng).astype(np.float32)
    client = _client(tmp_path / "db")
    col = client.create_collection("v", dim=32)
    col.add(_ids(2000), x)
    col.refit_splats(clusters=1)
    yield col, x.astype(np.float64), mu
    client.close()


# -- α from hits, feedback, κ -------------------------------------------------------------------


def test_alpha_counts_decaying_hits(tmp_path):
    client = _client(tmp_path / "db")
    col = client.create_collection("c", dim=8)
    col.splat_settings = SplatSettings(half_life=4.0)
    x = np.eye(8, dtype=np.float32)
    col.add(_ids(8), x)
    np.testing.assert_array_equal(col.splat_alpha(_ids(8)), np.ones(8))
    col.query(x[0], n_results=1)  # clock 1: i0 hit once
    col.query(x[0], n_results=1)  # clock 2: i0 = 2^{-1/4}·1 + 1
    col.query(x[[1, 2]], n_results=1)  # clock 4: i1, i2 hit once
    h0 = (2 ** (-1 / 4) + 1) * 2 ** (-2 / 4)
    alpha = col.splat_alpha(["i0", "i1", "i2", "i3"])
    np.testing.assert_allclose(alpha, [1 + h0, 2.0, 2.0, 1.0], rtol=1e-12)
    for _ in range(8):  # 8 more queries on other items: i1's hit halves twice
        col.query(x[7], n_results=1)
    np.testing.assert_allclose(col.splat_alpha("i1"), [1 + 0.25], rtol=1e-12)
    client.close()


def test_feedback_rule_clips_and_survives_reopen(tmp_path):
    client = _client(tmp_path / "db")
    col = client.create_collection("c", dim=16)
    x = np.random.default_rng(1).standard_normal((200, 16)).astype(np.float32)
    col.add(_ids(200), x)
    a0, k0 = col.splat_params(["i3", "i4"])
    col.feedback(["i3"], relevant=True)
    col.feedback(["i4"], relevant=False)
    a1, k1 = col.splat_params(["i3", "i4"])
    eta = col.splat_settings.eta
    np.testing.assert_allclose(a1 / a0, [np.exp(eta), np.exp(-eta)], rtol=1e-12)
    np.testing.assert_allclose(k1 / k0, [np.exp(eta / 2), np.exp(-eta / 2)], rtol=1e-12)
    for _ in range(20):  # clipped at e^{±alpha_clip}, e^{±kappa_clip}
        col.feedback(["i3"], relevant=True)
    a2, k2 = col.splat_params("i3")
    s = col.splat_settings
    np.testing.assert_allclose(
        [a2[0], k2[0] / k0[0]], [np.exp(s.alpha_clip), np.exp(s.kappa_clip)], rtol=1e-12
    )
    with pytest.raises(ItemNotFoundError):
        col.feedback(["nope"])
    with pytest.raises(InvalidArgumentError):
        col.feedback(["i3"], relevant="yes")
    client.close()

    client = _client(tmp_path / "db")
    col = client.get_collection("c")
    a3, k3 = col.splat_params(["i3", "i4", "i5"])
    np.testing.assert_allclose(a3, [np.exp(s.alpha_clip), np.exp(-eta), 1.0], rtol=1e-12)
    np.testing.assert_allclose(k3[:2] / k0, [np.exp(s.kappa_clip), np.exp(-eta / 2)], rtol=1e-9)
    client.close()


def test_items_arrive_at_alpha_one_and_leave(tmp_path):
    client = _client(tmp_path / "db")
    col = client.create_collection("c", dim=8)
    x = np.random.default_rng(2).standard_normal((50, 8)).astype(np.float32)
    col.add(_ids(40), x[:40])
    col.feedback(_ids(40), relevant=True)
    col.delete(["i0", "i1"])
    col.add(_ids(10, 40), x[40:])  # reuse freed slots
    np.testing.assert_allclose(col.splat_alpha(_ids(10, 40)), np.ones(10))
    np.testing.assert_allclose(col.splat_alpha(["i2"]), [np.exp(col.splat_settings.eta)])
    with pytest.raises(ItemNotFoundError):
        col.splat_alpha(["i0"])
    col.upsert(["i2"], x[:1])  # overwriting a vector keeps usage
    np.testing.assert_allclose(col.splat_alpha(["i2"]), [np.exp(col.splat_settings.eta)])
    col.save_splats()
    client.close()
    client = _client(tmp_path / "db")
    col = client.get_collection("c")
    np.testing.assert_allclose(col.splat_alpha(["i2", "i45"]), [np.exp(col.splat_settings.eta), 1.0])
    client.close()


# -- energy, novelty, gaps ----------------------------------------------------------------------


def test_energy_is_the_fitted_single_vmf(vmf_collection):
    col, x, _ = vmf_collection
    n, d = x.shape
    m = x.sum(axis=0)
    rbar = np.linalg.norm(m) / n
    mu_hat = m / np.linalg.norm(m)
    kappa_hat = float(estimate_kappa(d, np.sqrt((n * rbar**2 - 1) / (n - 1))))  # bias-corrected R̄
    probe = _unit(np.random.default_rng(5).standard_normal((7, d)))
    expected = -(log_vmf_normalizer(d, kappa_hat) + kappa_hat * probe @ mu_hat)
    # the collection stores float32 vectors: agreement to float32 resolution, κ·1e-7
    np.testing.assert_allclose(col.energy(probe), expected, rtol=1e-7, atol=1e-5)
    assert col.energy(probe[0]) == pytest.approx(expected[0], rel=1e-7, abs=1e-5)
    res = col.query(x[:3].astype(np.float32), n_results=4, include=["energy", "embeddings"])
    for row_ids, row_e in zip(res["ids"], res["energies"], strict=True):
        emb = _unit(np.asarray(col.get(ids=row_ids, include=["embeddings"])["embeddings"], dtype=np.float64))
        want = -(log_vmf_normalizer(d, kappa_hat) + kappa_hat * emb @ mu_hat)
        np.testing.assert_allclose(row_e, want, rtol=1e-7, atol=1e-5)
    assert res[0][0].energy == res["energies"][0][0]
    with pytest.raises(InvalidArgumentError):
        col.energy(np.zeros(d))


def test_novelty_is_a_percentile_among_stored_items(vmf_collection):
    col, x, mu = vmf_collection
    nov = col.novelty(x)
    assert abs(np.mean(nov) - 0.5) < 0.01 and np.quantile(nov, 0.9) == pytest.approx(0.9, abs=0.01)
    assert col.novelty(-mu) == 1.0  # the antipode is more isolated than every item
    rng = np.random.default_rng(9)
    fresh = sample_vmf(mu, 40.0, 2000, rng)  # same law: novelty ~ Uniform(0, 1)
    q = np.quantile(col.novelty(fresh), [0.1, 0.5, 0.9])
    np.testing.assert_allclose(q, [0.1, 0.5, 0.9], atol=0.05)


def test_refit_follows_the_documented_fraction(vmf_collection):
    col, _x, mu = vmf_collection
    stats = col.splat_statistics()
    assert stats["n_clusters"] == 1 and stats["changes_since_fit"] == 0
    e0 = col.energy(mu)
    far = _unit(-mu[None] + 0.05 * np.random.default_rng(3).standard_normal((400, 32))).astype(np.float32)
    col.add(_ids(150, 5000), far[:150])  # 150 changes ≤ 10% of 2000: no refit yet
    assert col.energy(mu) == e0
    col.add(_ids(100, 6000), far[150:250])  # 250 > 200: the mixture is refitted (k-means, 1 cluster kept)
    assert col.energy(mu) != e0
    assert col.splat_statistics()["changes_since_fit"] == 0


def test_find_gaps_between_two_splats(tmp_path):
    rng = np.random.default_rng(4)
    d = 48
    a = _unit(rng.standard_normal((1, d)))[0]
    u = _unit((rng.standard_normal(d) - (rng.standard_normal(d) @ a) * a)[None])[0]
    b = np.cos(np.deg2rad(120)) * a + np.sin(np.deg2rad(120)) * u
    x = np.vstack([sample_vmf(a, 300.0, 600, rng), sample_vmf(b, 300.0, 600, rng)]).astype(np.float32)
    client = _client(tmp_path / "db")
    col = client.create_collection("g", dim=d)
    col.add(_ids(1200), x)
    col.refit_splats(clusters=2)
    gaps = col.find_gaps(3, k=4)
    assert len(gaps.energies) >= 1
    p = gaps.points[0].astype(np.float64)
    assert p @ a > 0.1 and p @ b > 0.1  # between the two splats
    assert np.all(gaps.novelty > 0.98) and np.all(gaps.barriers > 0)
    np.testing.assert_allclose(gaps.energies, col.energy(gaps.points), rtol=1e-5)
    near = np.asarray(col.get(ids=gaps.nearest_ids[0], include=["embeddings"])["embeddings"])
    np.testing.assert_allclose(_unit(near) @ p, gaps.nearest_similarities[0], atol=1e-5)
    client.close()


# -- splat-aware ranking ------------------------------------------------------------------------


def test_lambda_zero_is_plain_and_lambda_reranks_by_the_documented_score(tmp_path):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3000, 24)).astype(np.float32)
    q = rng.standard_normal((5, 24)).astype(np.float32)
    client = _client(tmp_path / "db")
    col = client.create_collection("r", dim=24)
    col.add(_ids(3000), x)
    plain = col.query(q, n_results=10)
    col.feedback(_ids(300), relevant=True)
    col.feedback(_ids(300, 300), relevant=False)
    same = col.query(q, n_results=10, splat_lambda=0.0)
    assert same["ids"] == plain["ids"]
    lam = 0.2
    alpha_all = col.splat_alpha(_ids(3000))  # before the query, which then counts its hits
    res = col.query(q, n_results=10, splat_lambda=lam)
    # oracle: among the exact 40 nearest, order by cos + λ·log α
    xu, qu = _unit(x.astype(np.float64)), _unit(q.astype(np.float64))
    for i in range(len(q)):
        sims = xu @ qu[i]
        cand = np.argsort(-sims)[:40]
        score = sims[cand] + lam * np.log(alpha_all[cand])
        expect = [f"i{j}" for j in cand[np.argsort(-score, kind="stable")][:10]]
        assert res["ids"][i] == expect
        np.testing.assert_allclose(res["distances"][i], 1 - sims[[int(s[1:]) for s in expect]], atol=1e-5)
    assert res["ids"] != plain["ids"]
    with pytest.raises(InvalidArgumentError):
        col.query(q, splat_lambda=float("nan"))
    client.close()


# -- SOC ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("indexed", [False, True])
def test_consolidate_finds_planted_duplicates(tmp_path, indexed):
    x, truth = planted()
    client = _client(tmp_path / "db")
    col = client.create_collection("p", dim=x.shape[1])
    col.add(_ids(len(x)), x.astype(np.float32))
    if indexed:  # pairs from the join over the index's fine lists instead of all pairs
        col.splat_settings = dataclasses.replace(col.splat_settings, exact_pairs_max=0)
        col.create_index(n_coarse=4, n_fine=8)
    report = col.consolidate(threshold=0.9)
    found = [np.asarray(sorted(int(i[1:]) for i in g)) for g in report.groups]
    f, t = co_membership(found), co_membership(truth)
    assert len(f & t) / len(f) >= 0.95 and len(f & t) / len(t) >= 0.95
    assert sorted(report.avalanche_sizes.tolist()) == sorted(len(g) for g in truth) or indexed
    assert report.criticality["regime"] == "subcritical"
    oracle = avalanche_scan(x, 0.9, lambda b, k: _brute(x, b, k)).stats
    if not indexed:
        assert report.criticality["n_edges"] == oracle.n_edges
        assert report.criticality["branching_ratio"] == pytest.approx(oracle.branching_ratio)
    cons = col.consolidated_splats()
    assert len(cons["representatives"]) == len(report.groups) and cons["threshold"] == 0.9
    np.testing.assert_allclose(cons["alpha"] * len(x), [len(g) for g in report.groups], rtol=1e-12)
    crit = col.criticality(0.9)
    assert crit["n_avalanches"] == report.criticality["n_avalanches"]
    client.close()


def _brute(x: np.ndarray, batch: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = batch @ x.T
    idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return np.take_along_axis(sims, idx, axis=1), idx


def test_dedupe_keeps_one_representative_and_records_merged_ids(tmp_path):
    x, truth = planted()
    client = _client(tmp_path / "db")
    col = client.create_collection("p", dim=x.shape[1])
    col.add(_ids(len(x)), x.astype(np.float32))
    col.feedback([f"i{truth[0][-1]}"], relevant=True)  # the highest α wins
    report = col.consolidate(threshold=0.9, dedupe=True)
    n_dup = sum(len(g) - 1 for g in truth)
    assert report.n_deleted == n_dup and col.count() == len(x) - n_dup
    group0 = next(g for g in report.groups if f"i{truth[0][0]}" in g)
    rep = report.representatives[report.groups.index(group0)]
    assert rep == f"i{truth[0][-1]}"
    assert sorted(col.merged_ids(rep)) == sorted(i for i in group0 if i != rep)
    client.close()
    client = _client(tmp_path / "db")
    col = client.get_collection("p")
    assert sorted(col.merged_ids(rep)) == sorted(i for i in group0 if i != rep)
    assert col.consolidate(threshold=0.9).groups == []
    client.close()


# -- generation -------------------------------------------------------------------------------------


def test_generate_matches_the_mean_resultant_length_of_one_vmf(vmf_collection):
    col, _x, _mu = vmf_collection
    s = col.generate(1000, steps=200, seed=3, source="clusters")  # Langevin on the cluster energy
    assert s.shape == (1000, 32)
    np.testing.assert_allclose(np.linalg.norm(s, axis=1), 1.0, atol=1e-5)
    a = float(mean_resultant_length(32, 40.0))
    rbar = np.linalg.norm(s.astype(np.float64).mean(axis=0))
    assert abs(rbar / a - 1) < 0.02
    # chains started at one item relax to the law
    near = col.generate(200, near="i0", steps=200, seed=4, source="clusters")
    assert abs(np.linalg.norm(near.astype(np.float64).mean(axis=0)) / a - 1) < 0.05
    with pytest.raises(ItemNotFoundError):
        col.generate(2, near="nope")


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov statistic sup |F_a − F_b|."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


@pytest.fixture(scope="module")
def wordnet_collection(tmp_path_factory):
    if not (WORDNET / "base.f16.npy").exists():
        pytest.skip("wordnet-minilm not available")
    x = np.load(WORDNET / "base.f16.npy", allow_pickle=False)[:10000].astype(np.float32)
    client = _client(tmp_path_factory.mktemp("wn") / "db")
    col = client.create_collection("wn", dim=384)
    col.add(_ids(len(x)), x)
    col.refit_splats(clusters=100)
    yield col, _unit(x.astype(np.float64))
    client.close()


@pytest.mark.slow
def test_cluster_source_samples_are_new_and_typical_in_mean(wordnet_collection):
    col, x = wordnet_collection
    s = col.generate(300, steps=200, seed=1, source="clusters")
    nearest = np.max(s.astype(np.float64) @ x.T, axis=1)
    assert nearest.max() < 0.999  # not copies of stored items
    e_items, e_s = col.energy(x), col.energy(s)
    assert abs(np.mean(e_s) - np.mean(e_items)) < 0.25 * np.std(e_items)


@pytest.mark.slow
def test_generated_energies_follow_stored_energies_ks(wordnet_collection):
    """The issue's check on real data, for what ``generate`` does by default (Langevin on the
    item-splat energy): samples' energies follow the stored items' (two-sample KS at the 1%
    level) and no sample is a copy of a stored item."""
    col, x = wordnet_collection
    s = col.generate(300, seed=1)
    nearest = np.max(s.astype(np.float64) @ x.T, axis=1)
    assert nearest.max() < 0.99  # floor: every sample is ≥ 0.01 in cosine distance from every item
    assert abs(np.median(nearest) - 0.98) < 0.005  # its parent sits at cos A_d(κ_s) = item_similarity
    e_items, e_s = col.energy(x), col.energy(s)
    critical = 1.63 * np.sqrt((len(e_s) + len(e_items)) / (len(e_s) * len(e_items)))  # KS, 1% level
    assert _ks(e_s, e_items) < critical


def test_item_splat_samples_are_weighted_by_alpha(tmp_path):
    rng = np.random.default_rng(8)
    x = _unit(rng.standard_normal((200, 32))).astype(np.float32)
    client = _client(tmp_path / "db")
    col = client.create_collection("c", dim=32)
    col.add(_ids(200), x)
    col.feedback(["i0"] * 8, relevant=True)  # α = e^4 (clipped)
    s = col.generate(4000, source="items", seed=2)
    sims = s.astype(np.float64) @ x.T.astype(np.float64)
    share = np.mean(np.argmax(sims, axis=1) == 0)
    p = np.exp(4.0) / (np.exp(4.0) + 199)
    assert abs(share - p) < 4 * np.sqrt(p * (1 - p) / 4000)
    assert abs(np.mean(np.max(sims, axis=1)) - 0.98) < 0.003  # cos to the parent: A_d(κ_s) = 0.98
    near = col.generate(500, near="i5", source="items", seed=3)
    parents = set(np.argsort(-(x @ x[5]))[:32].tolist())  # near: the 32 items nearest to i5
    assert set(np.argmax(near.astype(np.float64) @ x.T, axis=1).tolist()) <= parents
    client.close()


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="source='clusters': isotropic vMF clusters are too narrow in energy: sample energies have "
    "half the spread of the stored items' (docs/splats.md, Collections); KS rejects",
)
def test_cluster_source_energies_follow_stored_energies_ks(wordnet_collection):
    col, x = wordnet_collection
    s = col.generate(300, steps=200, seed=1, source="clusters")
    e_items, e_s = col.energy(x), col.energy(s)
    d = _ks(e_s, e_items)
    critical = 1.63 * np.sqrt((len(e_s) + len(e_items)) / (len(e_s) * len(e_items)))  # 1% level
    assert d < critical


def test_repeated_ids_count_twice_and_concurrent_queries_all_count(tmp_path):
    import threading

    client = _client(tmp_path / "db")
    col = client.create_collection("c", dim=8)
    x = np.random.default_rng(3).standard_normal((100, 8)).astype(np.float32)
    col.add(_ids(100), x)
    col.feedback(["i1", "i1", "i2"], relevant=True)
    eta = col.splat_settings.eta
    np.testing.assert_allclose(col.splat_alpha(["i1", "i2"]), [np.exp(2 * eta), np.exp(eta)], rtol=1e-12)

    def worker() -> None:
        for _ in range(50):
            col.query(x[0], n_results=3)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = col.splat_statistics()
    assert stats["query_clock"] == 200
    top = col.query(x[0], n_results=3, include=[])["ids"][0]
    # 200 hits each, decayed by at most 200 queries of a 10,000-query half-life
    alpha = col.splat_alpha(top)
    hits = alpha[[i for i, t in enumerate(top) if t not in ("i1", "i2")]] - 1
    assert np.all((hits > 200 * 2 ** (-200 / 10_000) - 1e-9) & (hits <= 200))
    client.close()


# -- the consolidation layer: LOD 0 and sampling ------------------------------------------------------


def _collapsed(ranked: list[int], group_of: dict[int, int], k: int) -> list[int]:
    """Oracle: walk a ranking, keep the first member of each group, stop at k."""
    seen: set[int] = set()
    out = []
    for i in ranked:
        g = group_of.get(i)
        if g is not None:
            if g in seen:
                continue
            seen.add(g)
        out.append(i)
        if len(out) == k:
            break
    return out


def test_lod0_returns_one_member_per_consolidated_group(tmp_path):
    x, truth = planted()
    client = _client(tmp_path / "db")
    col = client.create_collection("p", dim=x.shape[1])
    col.add(_ids(len(x)), x.astype(np.float32))
    bases = np.stack([x[g].mean(axis=0) for g in truth[:20]]).astype(np.float32)
    before = col.query(bases, n_results=10, lod=0, include=[])["ids"]
    truth_of = {int(i): gi for gi, g in enumerate(truth) for i in g}
    in_groups = [[truth_of[int(i[1:])] for i in row if int(i[1:]) in truth_of] for row in before]
    assert all(len(r) > len(set(r)) for r in in_groups)  # before: near-duplicates side by side
    report = col.consolidate(threshold=0.9)
    group_of = {int(i[1:]): gi for gi, g in enumerate(report.groups) for i in g}
    res = col.query(bases, n_results=10, lod=0)
    sims = _unit(bases.astype(np.float64)) @ _unit(x).T
    for qi, row in enumerate(res["ids"]):
        ranked = np.argsort(-sims[qi], kind="stable").tolist()
        got = [int(i[1:]) for i in row]
        canon = lambda items: [("g", group_of[i]) if i in group_of else i for i in items]  # noqa: E731
        assert canon(got) == canon(_collapsed(ranked, group_of, 10))  # exact search, collapsed
        for i in got:  # the member standing for its group is its best-ranked one (ties: float32)
            if i in group_of:
                best = max(sims[qi][j] for j, gj in group_of.items() if gj == group_of[i])
                assert sims[qi][i] > best - 1e-6
        np.testing.assert_allclose(res["distances"][qi], 1 - sims[qi][[int(i[1:]) for i in row]], atol=1e-5)
    assert col.query(bases, n_results=10, lod=2, include=[])["ids"] == before  # other LODs untouched
    # with an HRM2 index: query(lod=0) and the LOD 0 step of a progressive query agree, and
    # never hold two members of one group
    col.create_index(n_coarse=4, n_fine=16)
    for qi in range(len(bases)):
        row = col.query(bases[qi], n_results=10, lod=0, include=[])["ids"][0]
        groups = [group_of[int(i[1:])] for i in row if int(i[1:]) in group_of]
        assert len(groups) == len(set(groups)) and len(row) == 10
        level0 = next(iter(col.query_progressive(bases[qi], n_results=10, include=[])))
        assert level0.lod == 0 and level0.result["ids"][0] == row
    client.close()


def test_sampling_counts_a_consolidated_group_once(tmp_path):
    x, _ = planted()
    client = _client(tmp_path / "db")
    col = client.create_collection("p", dim=x.shape[1])
    col.add(_ids(len(x)), x.astype(np.float32))
    report = col.consolidate(threshold=0.9)
    sizes = {i: len(g) for g in report.groups for i in g}
    ids = _ids(len(x))
    g = np.array([sizes.get(i, 1) for i in ids], dtype=np.float64)
    col.feedback(["i0", "i0"], relevant=True)
    np.testing.assert_allclose(col.splat_sampling_alpha(ids), col.splat_alpha(ids) / g, rtol=1e-12)
    for grp in report.groups:  # all α = 1 in these groups: the group weighs one item
        if "i0" not in grp:
            assert col.splat_sampling_alpha(grp).sum() == pytest.approx(1.0)
    # generation: the share of samples born in some group is (groups) / (items after dedupe)
    col.feedback(["i0", "i0"], relevant=False)  # back to α = 1 everywhere
    n_members = sum(len(gr) for gr in report.groups)
    p = len(report.groups) / (len(x) - n_members + len(report.groups))
    s = col.generate(4000, seed=5, steps=20)
    nearest = np.argmax(s.astype(np.float64) @ x.T, axis=1)
    share = np.mean([f"i{j}" in sizes for j in nearest.tolist()])
    assert abs(share - p) < 4 * np.sqrt(p * (1 - p) / 4000)
    # the cluster source samples the cluster mixture with α_c ∝ Σ_{i ∈ c} 1/g_i
    mix = col._splat_mixture()
    dedup = col._splat_sampling_mixture()
    labels = col.splat_clusters(ids)
    expect = np.bincount(labels, weights=1.0 / g, minlength=mix.n_components)
    np.testing.assert_allclose(dedup.alpha, expect / expect.sum(), rtol=1e-12)
    np.testing.assert_allclose(dedup.kappa, mix.kappa)
    client.close()
