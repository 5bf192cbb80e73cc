"""The training data lake: coverage, sharding, shuffling, importance weights, generation, Parquet."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import clustered_vectors, snapshot_collection  # noqa: E402
from m2m.datalake import (  # noqa: E402
    SplatLakeDataset,
    export_parquet,
    export_vectors,
    import_parquet,
    importance_probabilities,
    make_loader,
    mixture_energy,
    mixture_from_collection,
    to_arrow,
)
from m2m.errors import InvalidArgumentError  # noqa: E402
from test_splat_layer import _ks, wordnet_collection  # noqa: E402, F401 (KS helper, wordnet fixture)

N, DIM = 1000, 16


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def collection(client):
    data = clustered_vectors(N, DIM, seed=11)
    col = client.create_collection("lake", DIM)
    col.add(
        [f"id{i:04d}" for i in range(N)],
        data,
        metadatas=[{"i": i} for i in range(N)],
        documents=[f"doc {i}" if i % 3 else None for i in range(N)],
    )
    return col


def _epoch(loader) -> list[dict]:
    return list(loader)


def test_export_vectors_mirror_and_store_agree(collection):
    mirror = export_vectors(collection)
    store = export_vectors(collection, source="store", include_metadata=True)
    assert mirror.ids == store.ids == collection.get(include=[])["ids"]
    raw = np.stack(collection.get(include=["embeddings"])["embeddings"])
    np.testing.assert_array_equal(store.vectors, raw)
    np.testing.assert_allclose(mirror.vectors, _unit(raw), atol=1e-6)  # cosine: search form
    assert store.metadatas[5] == '{"i":5}'


def test_collection_export_vectors_is_the_public_snapshot(collection):
    """``Collection.export_vectors``: every live item once, in insertion order, vectors equal
    to what ``get`` returns (search form from the mirror, raw from the store), one version."""
    got = collection.get(include=["embeddings", "metadatas", "documents"])
    raw = np.stack(got["embeddings"])
    v0 = collection.version
    mirror = collection.export_vectors()
    store = collection.export_vectors("store", include_metadata=True, include_documents=True)
    both = collection.export_vectors("mirror", include_documents=True)
    assert mirror.ids == store.ids == both.ids == got["ids"]
    assert mirror.version == store.version == both.version == v0
    np.testing.assert_array_equal(store.vectors, raw)
    np.testing.assert_allclose(mirror.vectors, _unit(raw), atol=1e-6)
    np.testing.assert_allclose(both.vectors, mirror.vectors, atol=1e-7)
    assert [None if m is None else json.loads(m) for m in store.metadatas] == got["metadatas"]
    assert store.documents == both.documents == got["documents"] and mirror.metadatas is None
    assert np.all(np.diff(store.rowids) > 0) and np.array_equal(store.rowids, mirror.rowids)
    collection.delete(ids=["id0003"])
    after = collection.export_vectors()
    assert collection.version != v0 and after.version == collection.version
    assert after.ids == [i for i in got["ids"] if i != "id0003"]
    with pytest.raises(InvalidArgumentError):
        collection.export_vectors("disk")


def test_importance_sampling_counts_a_consolidated_group_once(client):
    rng = np.random.default_rng(4)
    base = _unit(rng.standard_normal((200, DIM)))
    dups = _unit(base[:10] + 0.01 * rng.standard_normal((10, DIM)))  # items 0..9 get a twin each
    col = client.create_collection("dup", DIM)
    col.add([str(i) for i in range(210)], np.vstack([base, dups]).astype(np.float32))
    col.consolidate(threshold=0.99)
    dataset = SplatLakeDataset(col, 64, importance_sampling=True, seed=0)
    snap = dataset.snapshot
    energy = mixture_energy(dataset.splats.mixture, _unit(snap.vectors))
    g = np.where(np.isin(np.arange(210), list(range(10)) + list(range(200, 210))), 2.0, 1.0)
    expect = importance_probabilities(energy, 1.0 / g, dataset.importance_floor)
    np.testing.assert_allclose(dataset.probabilities, expect, rtol=1e-12)
    assert dataset.probabilities.min() > 0  # members stay drawable: weights 1/(N p) stay unbiased


def test_plain_epoch_streams_every_item_once_in_order(collection):
    loader = make_loader(SplatLakeDataset(collection, 64, include_ids=True, include_metadata=True))
    batches = _epoch(loader)
    assert len(batches) == len(loader) == 16
    index = torch.cat([b["index"] for b in batches]).numpy()
    np.testing.assert_array_equal(index, np.arange(N))
    vectors = torch.cat([b["vectors"] for b in batches]).numpy()
    np.testing.assert_allclose(vectors, _unit(clustered_vectors(N, DIM, seed=11)), atol=1e-6)
    assert [i for b in batches for i in b["ids"]] == [f"id{i:04d}" for i in range(N)]
    assert batches[0]["metadatas"][3] == {"i": 3}
    assert all(bool((b["weights"] == 1).all()) and not bool(b["generated"].any()) for b in batches)


def test_two_workers_cover_every_item_exactly_once(collection):
    dataset = SplatLakeDataset(collection, 50, shuffle=True, seed=3, include_ids=True)
    batches = _epoch(make_loader(dataset, num_workers=2))
    index = torch.cat([b["index"] for b in batches]).numpy()
    assert len(index) == N and len(np.unique(index)) == N  # no duplicates, no gaps
    ids = [i for b in batches for i in b["ids"]]
    assert sorted(ids) == [f"id{i:04d}" for i in range(N)]
    # the same epoch without workers has the same batches (as a set of index blocks)
    dataset.set_epoch(0)
    local = {tuple(b["index"].tolist()) for b in _epoch(make_loader(dataset))}
    assert {tuple(b["index"].tolist()) for b in batches} == local


def test_shuffle_is_reproducible_per_epoch_and_differs_across_epochs(collection):
    def orders(seed: int, epochs: int) -> list[np.ndarray]:
        loader = make_loader(SplatLakeDataset(collection, 128, shuffle=True, seed=seed))
        return [torch.cat([b["index"] for b in loader]).numpy() for _ in range(epochs)]

    first, second = orders(7, 2), orders(7, 2)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])
    assert not np.array_equal(first[0], np.arange(N))
    assert all(sorted(o.tolist()) == list(range(N)) for o in first)
    assert not np.array_equal(orders(8, 1)[0], first[0])
    dataset = SplatLakeDataset(collection, 128, shuffle=True, seed=7)
    dataset.set_epoch(1)
    np.testing.assert_array_equal(torch.cat([b["index"] for b in make_loader(dataset)]).numpy(), first[1])


def _sparse_and_dense(client, name="mixed"):
    """800 points in one tight cluster, 200 scattered uniformly: sparse items are known."""
    rng = np.random.default_rng(5)
    centre = _unit(rng.standard_normal((1, DIM)))
    dense = centre + 0.05 * rng.standard_normal((800, DIM))
    sparse = rng.standard_normal((200, DIM))
    data = np.vstack([dense, sparse]).astype(np.float32)
    col = client.create_collection(name, DIM)
    col.add([str(i) for i in range(len(data))], data)
    return col, _unit(data.astype(np.float64))


def test_importance_weights_are_unbiased_and_favour_sparse_regions(client):
    col, x = _sparse_and_dense(client)
    n = len(x)
    dataset = SplatLakeDataset(col, 4096, importance_sampling=True, seed=1, num_samples=200_000)
    p = dataset.probabilities
    assert p[800:].min() > p[:800].max()  # every scattered item has a higher energy rank
    assert p[800:].mean() > 1.8 * p[:800].mean()  # and is drawn about twice as often
    f = x[:, 0] ** 2 + 2.0 * x[:, 1] + np.cos(3 * x[:, 2])  # any function of the items
    idx, w = [], []
    for batch in make_loader(dataset):
        idx.append(batch["index"].numpy())
        w.append(batch["weights"].numpy())
    idx, w = np.concatenate(idx), np.concatenate(w).astype(np.float64)
    assert len(idx) == 200_000
    np.testing.assert_allclose(w, 1.0 / (n * p[idx]), rtol=1e-6)
    terms = w * f[idx]
    estimate, stderr = terms.mean(), terms.std() / np.sqrt(len(terms))
    assert abs(estimate - f.mean()) < 4 * stderr
    plain = f[idx].mean()  # without the weights the estimate is biased towards sparse items
    assert abs(plain - f.mean()) > 10 * stderr


def test_importance_probabilities_bound_the_weight_ratio():
    energy = np.array([5.0, -3.0, 10.0, 0.0])
    p = importance_probabilities(energy, np.ones(4), floor=0.1)
    np.testing.assert_allclose(p.sum(), 1.0)
    assert list(np.argsort(p)) == [1, 3, 0, 2]  # rank order of energy
    assert p.max() / p.min() <= (0.1 + 1.0) / 0.1
    with pytest.raises(InvalidArgumentError):
        importance_probabilities(energy, np.zeros(4), floor=0.1)


def test_fitted_kappa_matches_known_vmf_clusters(client):
    from m2m.splats.vmf import sample_vmf

    rng = np.random.default_rng(2)
    kappa = 60.0
    mus = np.eye(DIM)[:2]
    data = np.vstack([sample_vmf(mu, kappa, 1500, rng) for mu in mus]).astype(np.float32)
    col = client.create_collection("vmf", DIM)
    col.add([str(i) for i in range(len(data))], data)
    fitted = mixture_from_collection(col, max_components=2)
    assert fitted.source == "kmeans" and fitted.mixture.n_components == 2
    np.testing.assert_allclose(np.sort(fitted.mixture.kappa), [kappa, kappa], rtol=0.1)
    np.testing.assert_allclose(fitted.mixture.alpha, [0.5, 0.5])
    got = np.abs(fitted.mixture.mu @ mus.T).max(axis=1)
    assert np.all(got > 0.999)


def test_fast_energy_matches_the_splat_mixture(collection):
    fitted = mixture_from_collection(collection)
    x = export_vectors(collection).vectors
    np.testing.assert_allclose(
        mixture_energy(fitted.mixture, x), fitted.mixture.energy(x), rtol=1e-4, atol=1e-3
    )


@pytest.mark.parametrize("generation_source", ["items", "clusters"])
def test_generated_samples_are_flagged_unit_and_at_the_stated_fraction(collection, generation_source):
    dataset = SplatLakeDataset(
        collection,
        100,
        generate_samples=True,
        generated_fraction=0.2,
        seed=4,
        generation_source=generation_source,
    )
    batches = _epoch(make_loader(dataset))
    full = [b for b in batches if len(b["vectors"]) == 100]
    assert len(full) >= 12
    assert all(int(b["generated"].sum()) == 20 for b in full)
    real = torch.cat([b["index"][~b["generated"]] for b in batches]).numpy()
    np.testing.assert_array_equal(real, np.arange(N))  # real rows still cover the epoch once
    assert all(bool((b["index"][b["generated"]] == -1).all()) for b in batches)
    assert all(bool((b["weights"][b["generated"]] == 1).all()) for b in batches)
    gen = torch.cat([b["vectors"][b["generated"]] for b in batches]).numpy().astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(gen, axis=1), 1.0, atol=1e-5)
    stored = _unit(clustered_vectors(N, DIM, seed=11).astype(np.float64))
    nearest = (gen @ stored.T).max(axis=1)
    assert np.all(nearest < 1 - 1e-6)  # new points, not copies
    noise = _unit(np.random.default_rng(0).standard_normal((len(gen), DIM)))
    assert nearest.mean() > (noise @ stored.T).max(axis=1).mean() + 0.2  # on the data, not noise
    # the default needs no cluster fit (item splats); the cluster source fits the mixture
    assert (dataset.splats is None) == (generation_source == "items")


def _generated(dataset, epoch: int, num_workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(real row indices, generated rows) of one epoch."""
    dataset.set_epoch(epoch)
    batches = _epoch(make_loader(dataset, num_workers=num_workers))
    real = torch.cat([b["index"][~b["generated"]] for b in batches]).numpy()
    gen = torch.cat([b["vectors"][b["generated"]] for b in batches]).numpy()
    return real, gen


def test_generated_rows_are_reproducible_per_epoch_and_sharded_by_workers(collection):
    def lake(seed: int) -> SplatLakeDataset:
        return SplatLakeDataset(collection, 100, shuffle=True, generate_samples=True, seed=seed)

    real0, gen0 = _generated(lake(5), 0)
    real0b, gen0b = _generated(lake(5), 0)
    np.testing.assert_array_equal(real0, real0b)
    np.testing.assert_array_equal(gen0, gen0b)  # same seed and epoch: the same rows
    _, gen1 = _generated(lake(5), 1)
    _, other = _generated(lake(6), 0)
    assert not np.array_equal(gen0, gen1) and not np.array_equal(gen0, other)
    real_w, gen_w = _generated(lake(5), 0, num_workers=2)
    assert sorted(real_w.tolist()) == list(range(N))  # two workers: every stored row once
    assert len(gen_w) == len(gen0) == 11 * 10 + 1  # 11 full batches of 90 + 10, the last 10 real + 1
    _, gen_w2 = _generated(lake(5), 0, num_workers=2)
    np.testing.assert_array_equal(np.sort(gen_w, axis=0), np.sort(gen_w2, axis=0))


def test_generated_rows_are_born_at_items_by_their_sampling_weight(client):
    """The collection's generation law: a parent is drawn ∝ α_i (``splat_sampling_alpha``),
    and a sample sits at cosine A_d(κ_s) = item_similarity from it (as ``collection.generate``)."""
    rng = np.random.default_rng(8)
    x = _unit(rng.standard_normal((200, 32))).astype(np.float32)
    col = client.create_collection("alpha", 32)
    col.add([f"i{j}" for j in range(200)], x)
    col.feedback(["i0"] * 8, relevant=True)  # α = e^4 (clipped)
    dataset = SplatLakeDataset(col, 100, generate_samples=True, generated_fraction=0.9, seed=2)
    gen = np.concatenate([_generated(dataset, e)[1] for e in range(3)]).astype(np.float64)
    assert len(gen) == 3 * 20 * 90
    sims = gen @ x.T.astype(np.float64)
    share = np.mean(np.argmax(sims, axis=1) == 0)
    p = np.exp(4.0) / (np.exp(4.0) + 199)
    assert abs(share - p) < 4 * np.sqrt(p * (1 - p) / len(gen))
    assert abs(np.mean(np.max(sims, axis=1)) - 0.98) < 0.003


def test_generated_rows_of_an_l2_collection_keep_their_items_length(client):
    rng = np.random.default_rng(3)
    x = (_unit(rng.standard_normal((300, DIM))) * rng.uniform(0.5, 4.0, (300, 1))).astype(np.float32)
    col = client.create_collection("l2", DIM, metric="l2")
    col.add([str(i) for i in range(300)], x)
    gen = _generated(SplatLakeDataset(col, 60, generate_samples=True, seed=1), 0)[1].astype(np.float64)
    u = _unit(x.astype(np.float64))
    nearest = np.argmax(_unit(gen) @ u.T, axis=1)
    np.testing.assert_allclose(np.linalg.norm(gen, axis=1), np.linalg.norm(x, axis=1)[nearest], rtol=1e-5)
    assert np.all(np.max(_unit(gen) @ u.T, axis=1) < 1 - 1e-6)


@pytest.mark.parametrize(
    "generation_source",
    [
        "items",
        pytest.param(
            "clusters",
            marks=pytest.mark.xfail(
                strict=True,
                reason="the cluster sampler's rows are too narrow in energy: KS rejects (docs/splats.md)",
            ),
        ),
    ],
)
def test_generated_rows_follow_stored_energies_ks(wordnet_collection, generation_source):  # noqa: F811
    """The issue's check on real data, for the data lake's generated rows, with the thresholds of
    ``test_generated_energies_follow_stored_energies_ks`` (10,000 wordnet items, 100 clusters,
    about 300 samples): energies follow the stored items' (two-sample KS at the 1% level) and
    no generated row is a copy of a stored item. The default (item-splat) sampler passes; the
    ``"clusters"`` one is a strict xfail recording why it is no longer the default."""
    col, x = wordnet_collection
    dataset = SplatLakeDataset(
        col,
        1000,
        shuffle=True,
        generate_samples=True,
        generated_fraction=0.03,
        seed=1,
        generation_source=generation_source,
    )
    real, s = _generated(dataset, 0)
    assert len(s) == 309 and sorted(real.tolist()) == list(range(len(x)))
    s = s.astype(np.float64)
    e_items, e_s = col.energy(x), col.energy(s)
    critical = 1.63 * np.sqrt((len(e_s) + len(e_items)) / (len(e_s) * len(e_items)))  # KS, 1% level
    assert _ks(e_s, e_items) < critical
    nearest = np.max(s @ x.T, axis=1)
    assert nearest.max() < 0.99  # every row ≥ 0.01 in cosine distance from every stored item
    assert abs(np.median(nearest) - 0.98) < 0.005  # its parent sits at cos A_d(κ_s) = item_similarity


def test_new_items_appear_in_the_next_epoch(collection):
    loader = make_loader(SplatLakeDataset(collection, 256))
    assert sum(len(b["vectors"]) for b in loader) == N
    collection.add(["extra"], np.ones((1, DIM), np.float32))
    assert sum(len(b["vectors"]) for b in loader) == N + 1


def test_breaking_out_early_stops_the_prefetch_thread(collection):
    before = threading.active_count()
    for _batch in SplatLakeDataset(collection, 10, prefetch=2):
        break
    import gc

    gc.collect()
    assert threading.active_count() == before


def test_invalid_options_are_rejected(collection):
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        SplatLakeDataset(collection, 0)
    with pytest.raises(InvalidArgumentError, match="generated_fraction"):
        SplatLakeDataset(collection, 8, generate_samples=True, generated_fraction=1.0)
    with pytest.raises(InvalidArgumentError, match="seed"):
        SplatLakeDataset(collection, 8, seed=-1)
    with pytest.raises(InvalidArgumentError, match="generation_source"):
        SplatLakeDataset(collection, 8, generate_samples=True, generation_source="noise")
    with pytest.raises(InvalidArgumentError, match="item_similarity"):
        SplatLakeDataset(collection, 8, generate_samples=True, item_similarity=1.0)


def test_parquet_round_trip(collection, client, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "lake.parquet"
    assert export_parquet(collection, path) == N
    table = pq.read_table(path)
    assert table.schema.metadata[b"m2m.dim"] == str(DIM).encode()
    got = collection.get(include=["embeddings", "metadatas", "documents"])
    assert table.column("id").to_pylist() == got["ids"]
    emb = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
    np.testing.assert_array_equal(emb, np.stack(got["embeddings"]))
    assert table.column("document").to_pylist() == got["documents"]
    assert to_arrow(collection).equals(table)
    copy = client.create_collection("copy", DIM)
    assert import_parquet(copy, path) == N
    assert snapshot_collection(copy) == snapshot_collection(collection)


def test_mixture_uses_the_hrm2_fine_lists_when_indexed(client):
    col = client.create_collection("indexed", DIM)
    data = clustered_vectors(1500, DIM, seed=9)
    col.add([str(i) for i in range(1500)], data)
    stats = col.create_index(n_coarse=4, n_fine=4, calib_queries=0)
    fitted = mixture_from_collection(col)
    assert fitted.source == "hrm2"
    non_empty = stats["n_fine_total"] if stats["list_size_min"] > 0 else None
    if non_empty is not None:
        assert fitted.mixture.n_components == non_empty
    np.testing.assert_allclose(np.bincount(fitted.labels) / 1500, fitted.mixture.alpha)
    # every splat's mean direction is its members' normalised mean
    x = _unit(data.astype(np.float64))
    for c in range(fitted.mixture.n_components):
        mean = x[fitted.labels == c].sum(axis=0)
        np.testing.assert_allclose(fitted.mixture.mu[c], mean / np.linalg.norm(mean), atol=1e-5)


def test_store_source_streams_raw_vectors(collection):
    dataset = SplatLakeDataset(collection, 300, source="store")
    vectors = torch.cat([b["vectors"] for b in make_loader(dataset)]).numpy()
    np.testing.assert_array_equal(vectors, clustered_vectors(N, DIM, seed=11))
    with pytest.raises(InvalidArgumentError, match="source"):
        SplatLakeDataset(collection, 8, source="disk")
