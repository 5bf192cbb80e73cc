"""HRM2 index behaviour against brute force (the oracle is m2m.compute.numpy_backend)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from m2m.compute.numpy_backend import NumpyBackend
from m2m.errors import DimensionMismatchError, IndexCorruptError, InvalidArgumentError, InvalidVectorError
from m2m.index import HRM2Index, HRM2Params, _kernels, _search
from m2m.types import Metric

BF = NumpyBackend()
K = 10


def clustered(n=4000, d=32, n_clusters=40, seed=0, spread=0.6):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d)).astype(np.float32) * 2.0
    lab = rng.integers(0, n_clusters, n)
    return (centres[lab] + spread * rng.standard_normal((n, d))).astype(np.float32), centres


def prep(x, metric):
    if metric is Metric.COSINE:
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    return x


def queries_near(x, m, seed, metric, noise=0.5):
    rng = np.random.default_rng(seed)
    q = x[rng.choice(x.shape[0], m, replace=False)] + noise * rng.standard_normal((m, x.shape[1])).astype(
        np.float32
    )
    return prep(q.astype(np.float32), metric)


def recall(found, truth):
    """recall@k against the true answers (rows with fewer than k true answers count those)."""
    return np.mean(
        [
            len(set(f[f >= 0]) & set(t[t >= 0])) / max(1, (t >= 0).sum())
            for f, t in zip(found, truth, strict=False)
        ]
    )


@pytest.fixture(scope="module", params=list(Metric), ids=lambda m: m.value)
def built(request):
    metric = request.param
    x, _ = clustered()
    x = prep(x, metric)
    slots = np.arange(x.shape[0], dtype=np.int64) * 3 + 7  # handles are not row numbers
    ix = HRM2Index.build(x, slots, metric, HRM2Params(seed=1))
    return metric, x, slots, ix


def bf(x, slots, q, metric, k=K, valid=None):
    d, i = BF.topk(q, x, k, metric, valid=valid)
    return d, np.where(i >= 0, slots[np.maximum(i, 0)], -1)


# ---- exactness & recall ---------------------------------------------------------------
def test_full_probe_equals_brute_force(built):
    metric, x, slots, ix = built
    q = queries_near(x, 40, 2, metric)
    td, ts = bf(x, slots, q, metric)
    d, s = ix.search(q, K, n_probe=ix.n_lists)  # batch path
    np.testing.assert_array_equal(s, ts)
    np.testing.assert_allclose(d, td, rtol=1e-4, atol=1e-4)
    for i in range(5):  # single-query path
        d1, s1 = ix.search(q[i], K, n_probe=ix.n_lists)
        np.testing.assert_array_equal(s1, ts[i])
        np.testing.assert_allclose(d1, td[i], rtol=1e-4, atol=1e-4)


def test_scan_pipeline_is_exact_over_probed_lists(built):
    """With a rerank deep enough to keep every scanned row, LOD 2 is brute force over exactly
    the rows of the probed lists: checks routing, list gather, code scan and re-rank."""
    metric, x, _slots, ix = built
    deep = HRM2Index.__new__(HRM2Index)
    deep.__dict__.update(ix.__dict__)
    deep.params = HRM2Params(seed=1, rerank=10_000)
    q = queries_near(x, 8, 3, metric)
    n_probe = max(2, ix.n_lists // 4)
    _bd, bs = ix.search(q, K, n_probe=n_probe)  # default rerank: approximate
    d, s = deep.search(q, K, n_probe=n_probe)  # batch path, deep rerank
    for i in range(q.shape[0]):
        qv, _ = ix._codec.prepare_one(q[i])
        lists = _search.route_one(ix, q[i], qv, n_probe)
        rows = np.flatnonzero(np.isin(ix._list[: ix._n_rows], lists))
        td, ts = BF.topk(q[i], ix._vecs[rows], K, metric)
        np.testing.assert_array_equal(s[i], ix._slots[rows][ts[0]])
        np.testing.assert_allclose(d[i], td[0], rtol=1e-4, atol=1e-4)
        _d1, s1 = deep.search(q[i], K, n_probe=n_probe)  # single-query path agrees
        np.testing.assert_array_equal(s1, s[i])
    assert recall(bs, s) >= 0.9  # the default rerank depth loses little


def test_recall_floor_on_clustered_data(built):
    metric, x, slots, ix = built
    q = queries_near(x, 200, 4, metric)
    _, ts = bf(x, slots, q, metric)
    _, s = ix.search(q, K, n_probe=max(1, ix.n_lists // 8))
    assert recall(s, ts) >= 0.90


def test_target_recall_tracks_measured_recall():
    """Held-out queries from the data's distribution (what calibration models) get about the
    recall they ask for."""
    data, _ = clustered(n=6300, seed=9)
    data = prep(data, Metric.COSINE)
    x, q = data[:6000], data[6000:]
    slots = np.arange(x.shape[0])
    ix = HRM2Index.build(x, slots, Metric.COSINE, HRM2Params(seed=2))
    _, ts = bf(x, slots, q, Metric.COSINE)
    for target in (0.8, 0.9, 0.95):
        _, s = ix.search(q, K, target_recall=target)
        assert recall(s, ts) >= target - 0.07, target
    curve = ix.stats()["calibration"]["recall_at_10"]
    assert all(b >= a - 0.02 for a, b in itertools.pairwise(curve))  # monotone up to noise
    assert curve[-1] == 1.0  # every list probed = exhaustive


# ---- levels of detail -------------------------------------------------------------------
def test_lod0_returns_representatives(built):
    metric, x, _slots, ix = built
    q = queries_near(x, 5, 5, metric)
    reps = set(ix._rep_slot[ix._rep_slot >= 0].tolist())
    for i in range(q.shape[0]):
        _, s = ix.search(q[i], K, lod=0)
        assert set(s[s >= 0].tolist()) <= reps and (s >= 0).sum() == K
    # a representative is the live member nearest its fine centroid
    for j in range(0, ix.n_lists, 7):
        rows = np.flatnonzero(ix._list[: ix._n_rows] == j)
        if rows.size:
            dist = ((ix._vecs[rows] - ix._fine[j]) ** 2).sum(1)
            assert ix._rep_slot[j] == ix._slots[rows[np.argmin(dist)]]


def test_progressive_yields_three_lods_with_rising_recall(built):
    metric, x, slots, ix = built
    q = queries_near(x, 60, 6, metric)
    _, ts = bf(x, slots, q, metric)
    per_lod = {0: [], 1: [], 2: []}
    for i in range(q.shape[0]):
        steps = list(ix.search_progressive(q[i], K, n_probe=max(2, ix.n_lists // 6)))
        assert [lod for lod, _, _ in steps] == [0, 1, 2]
        for lod, d, s in steps:
            assert d.shape == (K,) and s.dtype == np.int64
            per_lod[lod].append(s)
        np.testing.assert_array_equal(steps[2][2], ix.search(q[i], K, n_probe=max(2, ix.n_lists // 6))[1])
    r = [recall(np.array(per_lod[lod]), ts) for lod in (0, 1, 2)]
    assert r[0] < r[1] <= r[2] and r[2] >= 0.9


def test_lod1_distances_approximate_exact(built):
    metric, x, _slots, ix = built
    q = queries_near(x, 20, 7, metric)
    d1, s1 = ix.search(q, K, lod=1, n_probe=ix.n_lists - 1)
    rows = ix._row_of_slot[s1]
    exact = BF.topk(q, x, x.shape[0], metric)[0]  # scale reference
    true = np.array(
        [
            [BF.topk(q[i : i + 1], ix._vecs[r : r + 1], 1, metric)[0][0, 0] for r in rr]
            for i, rr in enumerate(rows)
        ]
    )
    scale = np.median(np.abs(exact[:, :50])) + 1e-6
    assert np.median(np.abs(d1 - true)) < 0.1 * scale


# ---- filters ----------------------------------------------------------------------------
@pytest.mark.parametrize("selectivity", [0.5, 0.1, 0.01, 0.002])
def test_filtered_results_obey_mask_and_match_brute_force(built, selectivity):
    metric, x, slots, ix = built
    rng = np.random.default_rng(int(selectivity * 1000))
    allowed = np.zeros(slots.max() + 1, dtype=bool)
    chosen = slots[rng.random(slots.size) < selectivity]
    allowed[chosen] = True
    valid = allowed[slots]
    q = queries_near(x, 30, 8, metric)
    _td, ts = bf(x, slots, q, metric, valid=valid)
    # same n_probe and floor as the unfiltered recall test: the filter must not cost recall
    _d, s = ix.search(q, K, allowed=allowed, n_probe=max(1, ix.n_lists // 8))
    assert np.all(allowed[s[s >= 0]])
    assert np.all((s >= 0).sum(1) == min(K, valid.sum()))
    assert recall(s, ts) >= 0.9
    _, s = ix.search(q, K, allowed=allowed)  # default n_probe
    assert np.all(allowed[s[s >= 0]]) and np.all((s >= 0).sum(1) == min(K, valid.sum()))
    _d, s = ix.search(q, K, allowed=allowed, n_probe=ix.n_lists)  # full probe = exact over the subset
    np.testing.assert_array_equal(s, ts)
    for i in range(3):
        _, s1 = ix.search(q[i], K, allowed=allowed)
        assert np.all(allowed[s1[s1 >= 0]]) and (s1 >= 0).sum() == min(K, valid.sum())


def test_filter_with_fewer_allowed_than_k(built):
    metric, x, slots, ix = built
    allowed = np.zeros(slots.max() + 1, dtype=bool)
    allowed[slots[[5, 900, 3000]]] = True
    d, s = ix.search(queries_near(x, 4, 9, metric), K, allowed=allowed, n_probe=1)
    assert np.all(np.sort(s[:, :3], axis=1) == np.sort(slots[[5, 900, 3000]]))
    assert np.all(s[:, 3:] == -1) and np.all(np.isinf(d[:, 3:]))


def test_in_index_filter_never_returns_fewer_than_k():
    """Filters too wide for brute force still return k results (probes grow until found)."""
    x, _ = clustered(n=5000, seed=3)
    slots = np.arange(5000)
    ix = HRM2Index.build(x, slots, Metric.L2, HRM2Params(seed=0, calib_queries=0))
    allowed = np.zeros(5000, dtype=bool)
    allowed[np.random.default_rng(0).choice(5000, 2500, replace=False)] = True
    brute, _ = _search.filtered_plan(ix, 1, K, allowed)
    assert not brute
    q = queries_near(x, 50, 1, Metric.L2)
    _, s = ix.search(q, K, n_probe=1, allowed=allowed)
    assert np.all((s >= 0).sum(1) == K) and np.all(allowed[s])


# ---- mutation ---------------------------------------------------------------------------
def test_add_remove_upsert_are_honoured():
    metric = Metric.L2
    x, _ = clustered(n=3000, seed=4)
    slots = np.arange(3000, dtype=np.int64)
    ix = HRM2Index.build(x, slots, metric, HRM2Params(seed=0, calib_queries=32))
    q = queries_near(x, 20, 12, metric)
    _, s = ix.search(q, K, n_probe=ix.n_lists)
    gone = np.unique(s[:, :3])
    ix.remove(gone)
    assert ix.n_vectors == 3000 - gone.size
    for path_q in (q, q[0]):
        _, s2 = ix.search(path_q, K, n_probe=ix.n_lists // 2)
        assert not np.isin(s2, gone).any()
    # add: new slots go in and are found (exact copies of queries -> distance 0)
    new = np.arange(5000, 5020)
    ix.add(new, q)
    d, s3 = ix.search(q, 1, n_probe=2)
    np.testing.assert_array_equal(s3[:, 0], new)
    np.testing.assert_allclose(d[:, 0], 0.0, atol=1e-3)
    # upsert: re-adding a slot moves it
    ix.add(new[:1], x[100:101] + 0.001)
    _, s4 = ix.search(q[0], 1, n_probe=ix.n_lists)
    assert s4[0] != new[0]
    _, s5 = ix.search(x[100] + 0.001, 2, n_probe=ix.n_lists)
    assert new[0] in s5
    assert ix.n_vectors == 3000 - gone.size + 20
    # the whole state still equals brute force over the live set
    live = ix._slots[: ix._n_rows] >= 0
    lv, ls = ix._vecs[: ix._n_rows][live], ix._slots[: ix._n_rows][live]
    qq = queries_near(x, 10, 13, metric)
    _, ts = bf(lv, ls, qq, metric)
    np.testing.assert_array_equal(ix.search(qq, K, n_probe=ix.n_lists)[1], ts)
    ix.compact()  # overflow merged, tombstones dropped: same answers
    assert ix.stats()["overflow_rows"] == 0 and ix.stats()["tombstones"] == 0
    np.testing.assert_array_equal(ix.search(qq, K, n_probe=ix.n_lists)[1], ts)
    _, s6 = ix.search(qq, K, n_probe=ix.n_lists // 2)
    assert recall(s6, ts) >= 0.9


def test_removing_a_representative_elects_another():
    x, _ = clustered(n=2000, seed=6)
    ix = HRM2Index.build(x, np.arange(2000), Metric.L2, HRM2Params(calib_queries=0))
    j = int(np.argmax(ix._sizes))
    old = ix._rep_slot[j]
    ix.remove(np.array([old]))
    assert ix._rep_slot[j] not in (old, -1)
    _, s = ix.search(ix._fine[j], 5, lod=0)
    assert old not in s


def test_needs_retrain_after_heavy_churn():
    x, _ = clustered(n=2000, seed=7)
    ix = HRM2Index.build(x, np.arange(2000), Metric.L2, HRM2Params(calib_queries=0))
    assert not ix.needs_retrain
    ix.remove(np.arange(300))
    assert not ix.needs_retrain
    ix.add(np.arange(3000, 3300), x[:300] + 0.01)
    assert ix.needs_retrain  # 600 changes > 25% of 2000


# ---- persistence ------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path: Path, built):
    metric, x, _slots, ix = built
    ix.save(tmp_path / "ix", state_version=42)
    ix2, version = HRM2Index.load(tmp_path / "ix")
    assert version == 42 and ix2.metric is metric and ix2.dim == ix.dim and ix2.n_vectors == ix.n_vectors
    q = queries_near(x, 20, 14, metric)
    for kw in ({}, {"lod": 0}, {"lod": 1}, {"target_recall": 0.9}):
        a, b = ix.search(q, K, **kw), ix2.search(q, K, **kw)
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_allclose(a[0], b[0])
    assert ix2.stats()["calibration"] == ix.stats()["calibration"]
    ix.save(tmp_path / "ix", state_version=43)  # overwrite: old generation files are gone
    assert HRM2Index.load(tmp_path / "ix")[1] == 43
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert {p.name for p in (tmp_path / "ix").glob("*.npy")} == {
        m["file"] for m in manifest["files"].values()
    }


def test_corrupt_or_missing_files_raise(tmp_path: Path):
    x, _ = clustered(n=1500, seed=8)
    ix = HRM2Index.build(x, np.arange(1500), Metric.L2, HRM2Params(calib_queries=16))
    d = tmp_path / "ix"
    ix.save(d, 1)
    manifest = json.loads((d / "manifest.json").read_text())
    vec_file = d / manifest["files"]["vectors"]["file"]
    raw = vec_file.read_bytes()

    vec_file.write_bytes(raw[:-100])  # truncated
    with pytest.raises(IndexCorruptError):
        HRM2Index.load(d)
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0xFF  # same size, one byte changed
    vec_file.write_bytes(bytes(flipped))
    with pytest.raises(IndexCorruptError):
        HRM2Index.load(d)
    vec_file.unlink()  # missing
    with pytest.raises(IndexCorruptError):
        HRM2Index.load(d)
    vec_file.write_bytes(raw)
    HRM2Index.load(d)  # restored: loads again
    bad = dict(manifest, format_version=99)
    (d / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(IndexCorruptError):
        HRM2Index.load(d)
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(IndexCorruptError):
        HRM2Index.load(d)
    with pytest.raises(IndexCorruptError):
        HRM2Index.load(tmp_path / "nowhere")


# ---- arguments --------------------------------------------------------------------------
def test_bad_arguments_raise_typed_errors(built):
    metric, x, _slots, ix = built
    with pytest.raises(DimensionMismatchError):
        ix.search(np.zeros(x.shape[1] + 1, np.float32), K)
    with pytest.raises(InvalidVectorError):
        ix.search(np.full(x.shape[1], np.nan, np.float32), K)
    with pytest.raises(InvalidArgumentError):
        ix.search(x[0], 0)
    with pytest.raises(InvalidArgumentError):
        ix.search(x[0], K, lod=3)
    with pytest.raises(InvalidArgumentError):
        ix.search(x[0], K, n_probe=0)
    with pytest.raises(InvalidArgumentError):
        ix.search(x[0], K, target_recall=1.5)
    with pytest.raises(InvalidArgumentError):
        ix.search(x[0], K, allowed=np.ones(5, dtype=np.int64))
    with pytest.raises(InvalidArgumentError):
        HRM2Index.build(x[:10], np.arange(9), metric)
    with pytest.raises(InvalidArgumentError):
        HRM2Index.build(x[:10], np.zeros(10, np.int64), metric)  # duplicate slots
    with pytest.raises(InvalidArgumentError):
        HRM2Index.build(x[:0], np.arange(0), metric)
    with pytest.raises(DimensionMismatchError):
        ix.add(np.array([99999]), np.zeros((1, x.shape[1] + 2), np.float32))


def test_tiny_collections():
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    ix = HRM2Index.build(x, np.arange(5), Metric.L2)
    d, s = ix.search(x[2], 10)
    assert s[0] == 2 and (s >= 0).sum() == 5 and np.all(np.isinf(d[5:]))


@pytest.mark.parametrize("lod", [0, 1, 2])
def test_single_and_batch_paths_agree(built, lod):
    metric, x, _slots, ix = built
    q = queries_near(x, 12, 15, metric)
    n_probe = max(2, ix.n_lists // 10)
    d_b, s_b = ix.search(q, K, n_probe=n_probe, lod=lod)  # grouped-by-list batch path
    for i in range(q.shape[0]):
        d_1, s_1 = ix.search(q[i], K, n_probe=n_probe, lod=lod)
        np.testing.assert_allclose(d_1, d_b[i], rtol=1e-4, atol=1e-4)
        assert (s_1 == s_b[i]).mean() >= 0.8  # equal up to near-ties in float rounding


def test_coarse_routing_restricts_probes_to_nearest_coarse_clusters():
    x, _ = clustered(n=5000, seed=12)
    ix = HRM2Index.build(x, np.arange(5000), Metric.L2, HRM2Params(coarse_probe=2, calib_queries=32))
    assert _search.coarse_probe(ix, 3) == 2
    q = queries_near(x, 20, 16, Metric.L2)
    _, ts = bf(x, np.arange(5000), q, Metric.L2)
    _, s_b = ix.search(q, K, n_probe=3)
    for i in range(q.shape[0]):
        qv, _ = ix._codec.prepare_one(q[i])
        lists = _search.route_one(ix, q[i], qv, 3)
        near = np.argsort(((ix._coarse - q[i]) ** 2).sum(1))[:2]
        assert set(ix._coarse_of_fine[lists].tolist()) <= set(near.tolist())
        np.testing.assert_array_equal(ix.search(q[i], K, n_probe=3)[1], s_b[i])
    assert recall(s_b, ts) >= 0.8


def test_empty_after_removal_and_k_larger_than_n():
    x, _ = clustered(n=300, seed=13)
    ix = HRM2Index.build(x, np.arange(300), Metric.COSINE, HRM2Params(calib_queries=16))
    d, s = ix.search(x[:3], 400)  # k > n: every live item once, then padding
    assert np.all((s >= 0).sum(1) == 300) and np.all(s[:, 300:] == -1) and np.all(np.isinf(d[:, 300:]))
    assert all(len(set(row[row >= 0])) == 300 for row in s)
    ix.remove(np.arange(300))
    assert ix.n_vectors == 0
    for lod in (0, 1, 2):
        d, s = ix.search(x[0], 5, lod=lod)
        assert np.all(s == -1) and np.all(np.isinf(d))
        d, s = ix.search(x[:10], 5, lod=lod)
        assert np.all(s == -1)
    ix.add(np.array([7]), x[:1])
    assert ix.search(x[0], 3)[1].tolist() == [7, -1, -1]


def test_unfiltered_search_never_returns_fewer_than_k():
    x, _ = clustered(n=3000, seed=14)
    ix = HRM2Index.build(x, np.arange(3000), Metric.L2, HRM2Params(calib_queries=16))
    q = queries_near(x, 10, 17, Metric.L2)
    big = int(ix._sizes.max()) * 3  # more than one probed list can hold
    for lod in (1, 2):
        _, s = ix.search(q, big, n_probe=1, lod=lod)
        assert np.all((s >= 0).sum(1) == big)
        _, s1 = ix.search(q[0], big, n_probe=1, lod=lod)
        assert (s1 >= 0).sum() == big and len(set(s1.tolist())) == big


@pytest.mark.parametrize("codec", ["sq8", "pca8", "pca"])
@pytest.mark.parametrize("metric", list(Metric), ids=lambda m: m.value)
def test_codec_paths(tmp_path: Path, metric, codec):
    """Each codec: exact at full probe, recall floor, LOD 1 close to exact, save/load round trip."""
    x, _ = clustered(n=3000, seed=21)
    x = prep(x, metric)
    slots = np.arange(3000) + 5
    ix = HRM2Index.build(x, slots, metric, HRM2Params(codec=codec, calib_queries=32))
    assert ix.stats()["codec"] == codec
    q = queries_near(x, 20, 22, metric)
    _td, ts = bf(x, slots, q, metric)
    np.testing.assert_array_equal(ix.search(q, K, n_probe=ix.n_lists)[1], ts)
    _, s = ix.search(q, K, n_probe=max(1, ix.n_lists // 8))
    assert recall(s, ts) >= 0.9
    _, s1 = ix.search(q, K, n_probe=max(1, ix.n_lists // 8), lod=1)
    assert recall(s1, s) >= 0.8  # int8 codes rank almost like the exact vectors
    ix.save(tmp_path / codec, 3)
    ix2, v = HRM2Index.load(tmp_path / codec)
    assert v == 3
    np.testing.assert_array_equal(ix2.search(q, K)[1], ix.search(q, K)[1])


@pytest.mark.parametrize("compiled", [True, False], ids=["kernel", "numpy"])
def test_auto_codec_picks_sq8_for_isotropic_data(monkeypatch, compiled):
    """Unit vectors with no dominant directions: d/3 PCA axes keep too little, auto picks SQ8."""
    if compiled and not _kernels.available():
        pytest.skip("numba (the 'fast' extra) is not installed")
    if not compiled:
        monkeypatch.setattr(_kernels, "available", lambda: False)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4000, 96)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ix = HRM2Index.build(x, np.arange(4000), Metric.COSINE, HRM2Params(calib_queries=16))
    st = ix.stats()
    pca = "pca8" if compiled else "pca"  # the int8 form when the kernel can scan it
    assert st["codec"] == "sq8" and st["codec_check"]["sq8"] > st["codec_check"][pca]
    # a decaying spectrum: the top d/3 axes hold nearly everything, so the PCA codec is kept
    x = rng.standard_normal((4000, 96)).astype(np.float32) * np.exp(-np.arange(96) / 10).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ix2 = HRM2Index.build(x, np.arange(4000), Metric.COSINE, HRM2Params(calib_queries=16))
    assert ix2.stats()["codec"] == pca and ix2.stats()["codec_check"][pca] >= 0.98
    # well-separated low-rank clusters: float PCA keeps the candidates, but int8 steps over a
    # range spanning all clusters are too coarse inside one, so with the kernel auto takes SQ8
    data, _ = clustered(n=3000, d=96, n_clusters=10, seed=4, spread=0.05)
    data = prep(data, Metric.COSINE)
    ix3 = HRM2Index.build(data, np.arange(3000), Metric.COSINE, HRM2Params(calib_queries=16))
    st3 = ix3.stats()
    if pca == "pca":
        assert st3["codec"] == "pca" and st3["codec_check"]["pca"] >= 0.98
    else:
        assert st3["codec"] == "sq8" and st3["codec_check"]["sq8"] > st3["codec_check"]["pca8"] + 0.005


@pytest.mark.skipif(not _kernels.available(), reason="numba (the 'fast' extra) is not installed")
@pytest.mark.parametrize("codec", ["sq8", "pca8"])
@pytest.mark.parametrize("metric", list(Metric), ids=lambda m: m.value)
def test_compiled_scan_equals_numpy_scan(monkeypatch, metric, codec):
    """The compiled int8 scan returns what the NumPy scan of the same codes returns: plain,
    after removals (inf biases), with overflow rows from adds, and with a filter mask."""
    x, _ = clustered(n=4000, seed=31)
    x = prep(x, metric)
    slots = np.arange(4000)
    ix = HRM2Index.build(x[:3500], slots[:3500], metric, HRM2Params(codec=codec, calib_queries=16))
    ix.remove(slots[:200:3])
    ix.add(slots[3500:], x[3500:])  # overflow rows, scanned with their lists
    assert ix._n_rows > ix._n_main
    q = queries_near(x, 12, 32, metric)
    allowed = np.zeros(4000, dtype=bool)
    allowed[::3] = True
    runs = []
    for use_kernel in (True, False):
        if not use_kernel:
            monkeypatch.setattr(_kernels, "available", lambda: False)
        out = []
        for i in range(q.shape[0]):
            for lod in (1, 2):
                out.append(ix.search(q[i], K, n_probe=6, lod=lod))
                out.append(ix.search(q[i], K, n_probe=6, lod=lod, allowed=allowed))
        runs.append(out)
    for (d_c, s_c), (d_n, s_n) in zip(*runs, strict=True):
        np.testing.assert_allclose(d_c, d_n, rtol=1e-4, atol=1e-4)
        assert (s_c == s_n).mean() >= 0.9  # equal up to near-ties in float rounding
        assert not np.isin(s_c, slots[:200:3]).any()


@pytest.mark.skipif(not _kernels.available(), reason="numba (the 'fast' extra) is not installed")
def test_int8_routing_probes_nearly_the_same_lists(monkeypatch, tmp_path: Path):
    """Large routing matrices are read as int8 by the single-query path: the probed lists are
    those of float routing but for near-ties, and recall holds; save/load rebuilds the copy."""
    import m2m.index.hrm2 as hrm2_module

    monkeypatch.setattr(hrm2_module, "ROUTE_INT8_CELLS", 0)
    x, _ = clustered(n=4000, d=64, seed=41)
    x = prep(x, Metric.COSINE)
    ix = HRM2Index.build(x, np.arange(4000), Metric.COSINE, HRM2Params(codec="sq8", calib_queries=16))
    assert ix._route8 is not None and ix._route8.dtype == np.int8
    q = queries_near(x, 100, 42, Metric.COSINE)
    n_probe = max(2, ix.n_lists // 8)
    float_route = HRM2Index.__new__(HRM2Index)
    float_route.__dict__.update(ix.__dict__)
    float_route._route8 = None
    overlap = []
    for i in range(q.shape[0]):
        qv, _ = ix._codec.prepare_one(q[i])
        a = _search.route_one(ix, q[i], qv, n_probe)
        b = _search.route_one(float_route, q[i], qv, n_probe)
        overlap.append(len(set(a.tolist()) & set(b.tolist())) / n_probe)
    assert np.mean(overlap) >= 0.97
    _, ts = bf(x, np.arange(4000), q, Metric.COSINE)
    s = np.vstack([ix.search(q[i], K, n_probe=n_probe)[1] for i in range(q.shape[0])])
    s_float = np.vstack([float_route.search(q[i], K, n_probe=n_probe)[1] for i in range(q.shape[0])])
    assert recall(s, ts) >= recall(s_float, ts) - 0.01
    np.testing.assert_array_equal(ix.search(q[0], K, n_probe=ix.n_lists)[1], ts[0])  # every list: exact
    ix.save(tmp_path / "r8", 1)
    loaded, _ = HRM2Index.load(tmp_path / "r8")
    np.testing.assert_array_equal(loaded._route8, ix._route8)


def test_rerank_depth_is_measured_unless_given():
    """rerank=None: the smallest depth (4, 8, 16) whose candidates hold the exact top-10 as
    well as 16 does on the build's check; an explicit rerank is kept as given."""
    x, _ = clustered(n=3000, d=48, seed=51)
    x = prep(x, Metric.COSINE)
    ix = HRM2Index.build(x, np.arange(3000), Metric.COSINE, HRM2Params(codec="sq8", calib_queries=16))
    check = ix.stats()["codec_check"]["rerank"]
    r = ix.params.rerank
    assert r in (4, 8, 16) and check[str(r)] >= check["16"] - 0.001
    assert all(check[str(s)] < check["16"] - 0.001 for s in (4, 8) if s < r)  # smallest such depth
    fixed = HRM2Index.build(
        x, np.arange(3000), Metric.COSINE, HRM2Params(codec="sq8", rerank=12, calib_queries=16)
    )
    assert fixed.params.rerank == 12 and "rerank" not in (fixed.stats()["codec_check"] or {})
    with pytest.raises(InvalidArgumentError):
        HRM2Params(rerank=0).validate()
