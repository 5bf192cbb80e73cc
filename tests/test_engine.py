"""The seed-compatible engine: README snippets, search against brute force, capacity, devices."""

from __future__ import annotations

import textwrap
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import brute_force_distances, clustered_vectors, snapshot_collection  # noqa: E402
from m2m import engine as engine_module  # noqa: E402
from m2m.config import M2MConfig  # noqa: E402
from m2m.engine import M2MEngine, SearchResult, create_m2m  # noqa: E402
from m2m.errors import CapacityError, DimensionMismatchError, InvalidArgumentError  # noqa: E402

QUICK_START = textwrap.dedent(
    """
    import torch
    from m2m import M2MConfig, create_m2m
    config = M2MConfig(device='cuda', latent_dim=640, max_splats=100000, enable_vulkan=True)
    m2m = create_m2m(config)
    embeddings = torch.randn(10000, 640)
    embeddings = embeddings / embeddings.norm(dim=1, keepdim=True)
    n_added = m2m.add_splats(embeddings)
    print(f"Added {n_added} splats")
    query = torch.randn(1, 640)
    query = query / query.norm(dim=1, keepdim=True)
    results = m2m.search(query, k=10)
    """
)

DATA_LAKE = textwrap.dedent(
    """
    dataloader = m2m.export_to_dataloader(batch_size=32, generate_samples=True, importance_sampling=True)
    for batch in dataloader:
        pass
    """
)


@pytest.fixture
def make_engine(tmp_path):
    engines = []

    def make(**overrides) -> M2MEngine:
        settings = {"device": "cpu", "latent_dim": 16, "storage_path": str(tmp_path / "data")}
        settings.update(overrides)
        eng = create_m2m(M2MConfig(**settings))
        engines.append(eng)
        return eng

    yield make
    for eng in engines:
        eng.close()


def test_readme_snippets_run_as_written(tmp_path, monkeypatch):
    """The original README's Quick Start and Data Lake code, verbatim, in a fresh working folder."""
    monkeypatch.chdir(tmp_path)  # the default storage_path is ./m2m_data
    accelerator = engine_module._probe("cuda")[0] or engine_module._probe("vulkan")[0]
    scope: dict = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(QUICK_START, scope)
    fallbacks = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(fallbacks) == (0 if accelerator else 1)
    m2m, embeddings, query, results = scope["m2m"], scope["embeddings"], scope["query"], scope["results"]
    try:
        assert scope["n_added"] == 10000 and m2m.count() == 10000
        assert (tmp_path / "m2m_data").is_dir()
        # the result is the exact top 10 by cosine (ids are insertion positions)
        sims = (embeddings @ query[0]).numpy()
        expected = np.argsort(-sims, kind="stable")[:10]
        assert [int(i) for i in results.ids[0]] == expected.tolist()
        assert isinstance(results.scores, torch.Tensor) and results.scores.shape == (1, 10)
        np.testing.assert_allclose(results.scores[0].numpy(), sims[expected], atol=1e-5)
        np.testing.assert_allclose(results.vectors[0].numpy(), embeddings[expected].numpy(), atol=1e-6)
        exec(DATA_LAKE, scope)
        batch = scope["batch"]
        assert set(batch) >= {"vectors", "weights", "generated"}
        assert batch["vectors"].shape[1] == 640
    finally:
        m2m.close()


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_search_equals_brute_force(make_engine, metric):
    data = clustered_vectors(400, 16, seed=3)
    queries = clustered_vectors(6, 16, seed=4)
    eng = make_engine(metric=metric)
    assert eng.add_splats(data) == 400
    result = eng.search(queries, k=12)
    dist = brute_force_distances(queries, data, metric)
    for qi in range(len(queries)):
        order = np.argsort(dist[qi], kind="stable")[:12]
        assert [int(i) for i in result.ids[qi]] == order.tolist()
        expected = (1.0 - dist[qi][order]) if metric == "cosine" else -dist[qi][order]
        np.testing.assert_allclose(result.scores[qi], expected, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(result.vectors[qi], data[order], atol=1e-6)
    assert np.all(np.diff(result.scores, axis=1) <= 1e-6)  # best first


def test_numpy_in_numpy_out_and_torch_in_torch_out(make_engine):
    data = clustered_vectors(200, 16, seed=5)
    eng = make_engine()
    eng.add_splats(torch.from_numpy(data))
    q = clustered_vectors(3, 16, seed=6)
    as_numpy = eng.search(q, k=5)
    as_torch = eng.search(torch.from_numpy(q), k=5)
    assert isinstance(as_numpy, SearchResult)
    assert isinstance(as_numpy.scores, np.ndarray) and isinstance(as_numpy.vectors, np.ndarray)
    assert isinstance(as_torch.scores, torch.Tensor) and isinstance(as_torch.vectors, torch.Tensor)
    assert as_torch.ids == as_numpy.ids
    np.testing.assert_array_equal(as_torch.scores.numpy(), as_numpy.scores)
    one = eng.search(q[0], k=5)  # a 1-D query gives 1-D results
    assert one.ids == as_numpy.ids[0] and one.scores.shape == (5,) and one.vectors.shape == (5, 16)


def test_search_with_index_scanning_every_list_is_exact(make_engine):
    data = clustered_vectors(1500, 16, seed=7)
    eng = make_engine(index_threshold=10**6)
    eng.add_splats(data)
    stats = eng.collection.create_index(n_coarse=4, n_fine=4, calib_queries=0)
    assert eng.get_statistics()["search"] == "hrm2"
    queries = clustered_vectors(5, 16, seed=8)
    result = eng.search(queries, k=10, n_probe=stats["n_fine_total"])
    dist = brute_force_distances(queries, data, "cosine")
    for qi in range(5):
        assert [int(i) for i in result.ids[qi]] == np.argsort(dist[qi], kind="stable")[:10].tolist()


def test_k_larger_than_collection_and_empty_collection(make_engine):
    eng = make_engine()
    empty = eng.search(np.ones(16, np.float32), k=5)
    assert empty.ids == [] and empty.scores.shape == (0,)
    with pytest.raises(DimensionMismatchError):
        eng.search(np.ones(15, np.float32))
    eng.add_splats(clustered_vectors(3, 16))
    assert len(eng.search(np.ones(16, np.float32), k=50).ids) == 3
    with pytest.raises(InvalidArgumentError, match="k must be"):
        eng.search(np.ones(16, np.float32), k=0)


def test_auto_ids_are_monotonic_and_survive_reopen(make_engine, tmp_path):
    eng = make_engine()
    eng.add_splats(clustered_vectors(3, 16, seed=1))
    eng.add_splats(clustered_vectors(2, 16, seed=2))
    assert eng.collection.get(include=[])["ids"] == ["0", "1", "2", "3", "4"]
    eng.add_splats(clustered_vectors(1, 16, seed=3), ids=["100"], metadatas=[{"k": 1}], documents=["doc"])
    eng.add_splats(clustered_vectors(1, 16, seed=4))
    assert eng.collection.get(include=[])["ids"][-1] == "101"
    eng.close()
    again = make_engine()
    again.add_splats(clustered_vectors(1, 16, seed=5))
    assert again.collection.get(include=[])["ids"][-1] == "102"
    assert again.collection.get(ids=["100"], include=["metadatas", "documents"])["documents"] == ["doc"]


def test_capacity_refuses_the_whole_batch_and_leaves_the_store_unchanged(make_engine):
    eng = make_engine(max_splats=10)
    eng.add_splats(clustered_vectors(8, 16, seed=1))
    before = snapshot_collection(eng.collection)
    with pytest.raises(CapacityError, match="max_splats=10"):
        eng.add_splats(clustered_vectors(3, 16, seed=2))
    assert snapshot_collection(eng.collection) == before
    assert eng.add_splats(clustered_vectors(2, 16, seed=3)) == 2
    with pytest.raises(CapacityError):
        eng.add_splats(clustered_vectors(1, 16, seed=4))
    assert eng.count() == 10
    assert CapacityError.http_status == 507


def test_unavailable_accelerator_falls_back_to_cpu_with_one_warning(make_engine, monkeypatch):
    monkeypatch.setattr(
        engine_module, "_PROBES", {"cuda": (False, "no CUDA here"), "vulkan": (False, "no Vulkan here")}
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        eng = make_engine(device="cuda", enable_vulkan=True)
    assert len(caught) == 1 and issubclass(caught[0].category, RuntimeWarning)
    text = str(caught[0].message)
    assert "no CUDA here" in text and "no Vulkan here" in text and "CPU" in text
    assert eng.device == "cpu" and eng.get_statistics()["device"]["resolved"] == "cpu"
    for device, vulkan in (("vulkan", True), ("cuda", False)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            make_engine(device=device, enable_vulkan=vulkan, collection=f"c{device}{vulkan}")
        assert len(caught) == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_engine(device="cpu", collection="quiet")
        make_engine(device="auto", collection="quiet2")
    assert caught == []


def test_statistics_report_counts_memory_and_splats(make_engine):
    eng = make_engine()
    eng.add_splats(clustered_vectors(300, 16))
    stats = eng.get_statistics()
    assert stats["n_splats"] == 300 and stats["max_splats"] == 100_000
    assert stats["search"] == "exact" and stats["index"] is None
    assert stats["memory"]["mirror_vector_bytes_live"] == 300 * 16 * 4
    assert (
        stats["memory"]["rss_bytes"] > 0 and stats["memory"]["peak_rss_bytes"] >= stats["memory"]["rss_bytes"]
    )
    assert stats["splats"]["n_items"] == 300 and stats["splats"]["n_clusters"] >= 1
    assert stats["criticality"]["threshold"] == eng.config.soc_threshold
    assert stats["config"] == eng.config.to_dict()


def test_splat_params_kappa_orders_tight_and_loose_clusters(make_engine):
    rng = np.random.default_rng(0)
    centre_a, centre_b = np.eye(16, dtype=np.float32)[0], np.eye(16, dtype=np.float32)[1]
    tight = centre_a + 0.03 * rng.standard_normal((300, 16)).astype(np.float32)
    loose = centre_b + 0.2 * rng.standard_normal((300, 16)).astype(np.float32)
    eng = make_engine()
    eng.add_splats(np.vstack([tight, loose]))
    params = eng.splat_params([str(i) for i in range(600)])
    np.testing.assert_array_equal(params["alpha"], np.ones(600))
    assert np.min(params["kappa"][:300]) > 5 * np.max(params["kappa"][300:])
    with pytest.raises(KeyError):
        eng.splat_params(["nope"])


def test_engine_dataloader_covers_every_item_once(make_engine):
    eng = make_engine()
    eng.add_splats(clustered_vectors(250, 16))
    seen = [b["index"] for b in eng.export_to_dataloader(batch_size=64, shuffle=True, seed=1)]
    assert sorted(torch.cat(seen).tolist()) == list(range(250))


def test_generate_draws_new_vectors_near_the_stored_ones(make_engine):
    eng = make_engine()
    data = clustered_vectors(400, 16)
    eng.add_splats(data)
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    s = eng.generate(500, seed=1)
    assert isinstance(s, np.ndarray) and s.shape == (500, 16)
    np.testing.assert_allclose(np.linalg.norm(s, axis=1), 1.0, atol=1e-5)
    nearest = np.max(s @ unit.T, axis=1)
    assert nearest.max() < 0.999 and abs(np.mean(nearest) - 0.98) < 0.01  # not copies: cos ≈ 0.98
    near = torch.from_numpy(unit[7])
    t = eng.generate(50, near=near, seed=2)
    assert isinstance(t, torch.Tensor) and t.shape == (50, 16)
    parents = set(np.argsort(-(unit @ unit[7]))[:32].tolist())  # near: parents among its 32 nearest
    assert set(np.argmax(t.numpy() @ unit.T, axis=1).tolist()) <= parents
    np.testing.assert_array_equal(eng.generate(5, seed=3), eng.generate(5, seed=3))
