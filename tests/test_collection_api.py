"""Chroma-like collection API, checked against NumPy brute force."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import m2m
from conftest import WORDNET_DIR, brute_force_distances, clustered_vectors
from m2m.errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    IdAlreadyExistsError,
    InvalidArgumentError,
    ItemNotFoundError,
)

METRICS = ["cosine", "ip", "l2"]


def _check_query_against_oracle(result, queries, vectors, ids, metric, k, *, atol=1e-4):
    """Every row: distances equal the oracle's k smallest, ids where distances are distinct, best first."""
    oracle = brute_force_distances(queries, vectors, metric)
    id_index = {item_id: i for i, item_id in enumerate(ids)}
    assert len(result["ids"]) == len(queries)
    for qi in range(len(queries)):
        got_ids = result["ids"][qi]
        got_d = np.asarray(result["distances"][qi], dtype=np.float64)
        kk = min(k, len(ids))
        assert len(got_ids) == kk
        assert len(set(got_ids)) == kk
        assert np.all(np.diff(got_d) >= -atol), "not best first"
        true_sorted = np.sort(oracle[qi])[:kk]
        scale = max(1.0, float(np.abs(true_sorted).max()))
        np.testing.assert_allclose(got_d, true_sorted, atol=atol * scale, rtol=0)
        # each returned distance is the true distance of that id
        own = oracle[qi, [id_index[i] for i in got_ids]]
        np.testing.assert_allclose(got_d, own, atol=atol * scale, rtol=0)
        # ids whose distance is clearly inside the top k must all be returned
        if kk < len(ids):
            cut = true_sorted[-1]
            must = {ids[j] for j in np.flatnonzero(oracle[qi] < cut - 2 * atol * scale)}
            assert must <= set(got_ids)


# -- collections ---------------------------------------------------------------------------------


def test_collection_lifecycle(client):
    a = client.create_collection("alpha", dim=4, metric="cosine", metadata={"owner": "me"})
    b = client.create_collection("beta", dim=8, metric="ip")
    c = client.create_collection("gamma", dim=2, metric="l2")
    assert (a.name, a.dim, a.metric.value, a.metadata) == ("alpha", 4, "cosine", {"owner": "me"})
    assert (b.dim, b.metric) == (8, m2m.Metric.IP)
    assert c.metric is m2m.Metric.L2
    assert client.list_collections() == ["alpha", "beta", "gamma"]
    assert len({a.id, b.id, c.id}) == 3

    with pytest.raises(CollectionExistsError, match="alpha"):
        client.create_collection("alpha", dim=4)
    with pytest.raises(CollectionNotFoundError, match="nope"):
        client.get_collection("nope")
    with pytest.raises(InvalidArgumentError, match="metric"):
        client.create_collection("delta", dim=4, metric="hamming")

    got = client.get_collection("beta")
    assert (got.name, got.dim, got.metric) == ("beta", 8, m2m.Metric.IP)

    same = client.get_or_create_collection("alpha", dim=4, metric="cosine")
    assert same.id == a.id
    with pytest.raises(InvalidArgumentError, match="dimension"):
        client.get_or_create_collection("alpha", dim=5)
    with pytest.raises(InvalidArgumentError, match="metric"):
        client.get_or_create_collection("alpha", metric="l2")
    with pytest.raises(InvalidArgumentError, match="dim"):
        client.get_or_create_collection("epsilon")
    new = client.get_or_create_collection("epsilon", dim=3, metric="l2")
    assert (new.dim, new.metric) == (3, m2m.Metric.L2)
    assert new.count() == 0

    a.add(["x"], [[1, 0, 0, 0]])
    client.delete_collection("alpha")
    assert client.list_collections() == ["beta", "epsilon", "gamma"]
    with pytest.raises(CollectionNotFoundError):
        client.get_collection("alpha")
    with pytest.raises(CollectionNotFoundError):
        client.delete_collection("alpha")
    # a new collection of the old name starts empty
    again = client.create_collection("alpha", dim=4)
    assert again.count() == 0 and again.id != a.id

    a2 = client.get_collection("alpha")
    a2.modify(metadata={"v": 2})
    assert client.get_collection("alpha").metadata == {"v": 2}


# -- writes and reads ----------------------------------------------------------------------------


def test_add_get_count_and_fields(client):
    col = client.create_collection("c", dim=3, metric="l2")
    vecs = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9.5]], dtype=np.float32)
    col.add(
        ids=["a", "b", "c"],
        embeddings=vecs,
        metadatas=[{"k": 1}, {"k": "two", "tags": ["x", "y"]}, None],
        documents=["doc a", None, "doc c"],
    )
    assert col.count() == 3
    got = col.get(include=["embeddings", "metadatas", "documents"])
    assert got["ids"] == ["a", "b", "c"]
    np.testing.assert_array_equal(np.asarray(got["embeddings"]), vecs)
    assert got["metadatas"] == [{"k": 1}, {"k": "two", "tags": ["x", "y"]}, None]
    assert got["documents"] == ["doc a", None, "doc c"]
    # include fields: what was not asked for is None
    only = col.get(ids=["c", "a"], include=["documents"])
    assert only["ids"] == ["c", "a"]  # order of the ids given
    assert only["documents"] == ["doc c", "doc a"]
    assert only["metadatas"] is None and only["embeddings"] is None
    default = col.get(ids="b")
    assert default["ids"] == ["b"] and default["embeddings"] is None
    assert default["metadatas"] == [{"k": "two", "tags": ["x", "y"]}]
    # missing ids are skipped
    assert col.get(ids=["zz", "a"])["ids"] == ["a"]
    # attributes and rows
    assert got.ids == got["ids"]
    assert len(got) == 3
    row = got[1]
    assert isinstance(row, m2m.Hit)
    assert (row.id, row.metadata, row.document) == ("b", {"k": "two", "tags": ["x", "y"]}, None)
    np.testing.assert_array_equal(row.embedding, vecs[1])
    # integer and float metadata keep their kinds
    col.add(["d"], [[0, 0, 0]], metadatas=[{"i": 3, "f": 3.0, "b": True, "s": "3"}])
    meta = col.get(ids=["d"])["metadatas"][0]
    assert meta == {"i": 3, "f": 3.0, "b": True, "s": "3"}
    assert type(meta["i"]) is int and type(meta["f"]) is float and type(meta["b"]) is bool

    with pytest.raises(IdAlreadyExistsError, match="a"):
        col.add(["a"], [[0, 0, 0]])
    assert col.count() == 4


def test_upsert_update_delete_semantics(client):
    col = client.create_collection("c", dim=2, metric="l2")
    col.add(
        ["a", "b", "c"],
        [[1, 0], [0, 1], [1, 1]],
        metadatas=[{"m": 1}, {"m": 2}, {"m": 3}],
        documents=["da", "db", "dc"],
    )
    # upsert: existing keeps metadata and document when not passed, new ones are added
    col.upsert(["b", "d"], [[5, 5], [6, 6]])
    got = col.get(include=["embeddings", "metadatas", "documents"])
    assert got["ids"] == ["a", "b", "c", "d"]  # b keeps its insertion position
    np.testing.assert_array_equal(got["embeddings"][1], [5, 5])
    assert got["metadatas"][1] == {"m": 2} and got["documents"][1] == "db"
    assert got["metadatas"][3] is None and got["documents"][3] is None
    col.upsert(["a"], [[9, 9]], metadatas=[{"m": 10}], documents=["new a"])
    got = col.get(ids=["a"], include=["embeddings", "metadatas", "documents"])
    assert got["metadatas"] == [{"m": 10}] and got["documents"] == ["new a"]
    np.testing.assert_array_equal(got["embeddings"][0], [9, 9])

    # update: only the passed fields change; metadata is replaced, not merged
    col.update(["c"], metadatas=[{"z": 1}])
    got = col.get(ids=["c"], include=["embeddings", "metadatas", "documents"])
    assert got["metadatas"] == [{"z": 1}] and got["documents"] == ["dc"]
    np.testing.assert_array_equal(got["embeddings"][0], [1, 1])
    col.update(["c"], embeddings=[[2, 2]], documents=["dc2"])
    got = col.get(ids=["c"], include=["embeddings", "metadatas", "documents"])
    assert got["metadatas"] == [{"z": 1}] and got["documents"] == ["dc2"]
    np.testing.assert_array_equal(got["embeddings"][0], [2, 2])
    assert col.get(where_document={"$contains": "dc2"})["ids"] == ["c"]
    assert col.get(where_document={"$contains": "dc"})["ids"] == ["c"]  # "dc" is gone
    with pytest.raises(ItemNotFoundError, match="nope"):
        col.update(["c", "nope"], metadatas=[{"z": 2}, {"z": 3}])
    assert col.get(ids=["c"])["metadatas"] == [{"z": 1}]  # refused whole

    # the search follows writes
    res = col.query([[2, 2]], n_results=1)
    assert res["ids"] == [["c"]] and res["distances"][0][0] == pytest.approx(0.0)

    # delete by ids (missing ids ignored), by where, by where_document
    assert col.delete(ids=["a", "missing"]) == 1
    assert col.delete(where={"m": 2}) == 1
    assert col.delete(where_document={"$contains": "dc2"}) == 1
    assert col.get()["ids"] == ["d"]
    assert col.delete(where={"m": 99}) == 0
    with pytest.raises(InvalidArgumentError):
        col.delete()
    assert col.delete(where={}) == 1
    assert col.count() == 0
    assert col.query([[0, 0]], n_results=3)["ids"] == [[]]
    # ids and where together: both must match
    col.add(["p", "q"], [[0, 0], [1, 1]], metadatas=[{"g": 1}, {"g": 2}])
    assert col.delete(ids=["p", "q"], where={"g": 2}) == 1
    assert col.get()["ids"] == ["p"]


def test_get_limit_offset_insertion_order(client):
    col = client.create_collection("c", dim=2)
    ids = [f"id{i:03d}" for i in range(50)]
    rng = np.random.default_rng(1)
    col.add(ids[:30], rng.standard_normal((30, 2)))
    col.add(ids[30:], rng.standard_normal((20, 2)))
    col.delete(ids=["id005", "id040"])
    col.upsert(["id010"], [[1, 1]])  # overwriting keeps the position
    live = [i for i in ids if i not in ("id005", "id040")]
    assert col.get()["ids"] == live
    for offset, limit in [(0, 10), (10, 10), (45, 10), (0, 0), (100, 5), (3, None)]:
        stop = None if limit is None else offset + limit
        assert col.get(limit=limit, offset=offset)["ids"] == live[offset:stop]
    assert col.peek(3)["ids"] == live[:3]
    # a slot freed by a delete and reused by a new item: the new item comes last
    col.add(["new"], [[0, 0]])
    assert col.get()["ids"][-1] == "new"
    assert col.get(where={}, limit=2, offset=1)["ids"] == live[1:3]


@pytest.mark.parametrize("metric", METRICS)
def test_query_distances_match_numpy(client, metric):
    dim, n = 24, 600
    vecs = clustered_vectors(n, dim, seed=3) * 1.7  # not unit length: ip and l2 see the norms
    ids = [f"v{i}" for i in range(n)]
    col = client.create_collection(f"q-{metric}", dim=dim, metric=metric)
    col.add(ids[:250], vecs[:250])
    col.add(ids[250:], vecs[250:].tolist())
    queries = clustered_vectors(7, dim, seed=4) * 0.8
    for k in (1, 10, 37):
        res = col.query(queries, n_results=k)
        _check_query_against_oracle(res, queries, vecs, ids, metric, k)
    # one vector (1-D) is one query
    one = col.query(queries[0], n_results=5)
    assert len(one["ids"]) == 1
    _check_query_against_oracle(one, queries[:1], vecs, ids, metric, 5)
    # n_results beyond the count returns everything, best first
    small = client.create_collection(f"small-{metric}", dim=dim, metric=metric)
    small.add(ids[:5], vecs[:5])
    res = small.query(queries, n_results=50)
    _check_query_against_oracle(res, queries, vecs[:5], ids[:5], metric, 50)


def test_query_result_forms(client):
    col = client.create_collection("c", dim=3, metric="l2")
    col.add(
        ["a", "b", "c"],
        [[0, 0, 0], [1, 0, 0], [0, 3, 0]],
        metadatas=[{"n": 0}, {"n": 1}, {"n": 2}],
        documents=["A", "B", "C"],
    )
    res = col.query(
        [[0.1, 0, 0], [0, 2.9, 0]], n_results=2, include=["distances", "metadatas", "documents", "embeddings"]
    )
    assert res["ids"] == [["a", "b"], ["c", "a"]]
    assert res.ids == res["ids"]
    np.testing.assert_allclose(res["distances"][0], [0.01, 0.81], atol=1e-6)
    np.testing.assert_allclose(res["distances"][1], [0.01, 2.9**2], atol=1e-5)
    assert res["metadatas"] == [[{"n": 0}, {"n": 1}], [{"n": 2}, {"n": 0}]]
    assert res["documents"] == [["A", "B"], ["C", "A"]]
    np.testing.assert_array_equal(res["embeddings"][1][0], [0, 3, 0])
    assert len(res) == 2
    hits = res[1]
    assert [h.id for h in hits] == ["c", "a"]
    assert hits[0].document == "C" and hits[0].metadata == {"n": 2}
    assert hits[0].distance == pytest.approx(0.01, abs=1e-6)
    ids, dists = res.to_numpy(k=3)
    assert ids.shape == (2, 3) and ids[0, 2] == "" and np.isinf(dists[0, 2])
    bare = col.query([[0, 0, 0]], n_results=1, include=[])
    assert bare["ids"] == [["a"]]
    assert bare["distances"] is None and bare["documents"] is None and bare["metadatas"] is None
    assert bare[0][0].distance is None


def test_cosine_normalises_but_returns_raw_vectors(client):
    col = client.create_collection("c", dim=2, metric="cosine")
    col.add(["long", "short", "zero"], [[10, 0], [0, 0.1], [0, 0]])
    res = col.query([[3, 3]], n_results=3, include=["distances", "embeddings"])
    assert res["ids"][0][2] == "zero"
    np.testing.assert_allclose(res["distances"][0][:2], [1 - np.sqrt(0.5)] * 2, atol=1e-6)
    assert res["distances"][0][2] == pytest.approx(1.0)
    emb = dict(zip(res["ids"][0], res["embeddings"][0], strict=True))
    np.testing.assert_array_equal(emb["long"], [10, 0])


def test_embedding_input_forms(client):
    torch = pytest.importorskip("torch")
    col = client.create_collection("c", dim=4, metric="ip")
    base = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    col.add(["n0", "n1", "n2"], base)
    col.add(["l0", "l1", "l2"], base.tolist())
    col.add(["t0", "t1", "t2"], torch.tensor(base, dtype=torch.float64))
    col.add(["f64"], base[:1].astype(np.float64))
    got = col.get(include=["embeddings"])
    emb = dict(zip(got["ids"], got["embeddings"], strict=True))
    for prefix in "nlt":
        for i in range(3):
            np.testing.assert_array_equal(emb[f"{prefix}{i}"], base[i])
            assert emb[f"{prefix}{i}"].dtype == np.float32
    np.testing.assert_array_equal(emb["f64"], base[0])
    for q in (base[1], base[1].tolist(), torch.tensor(base[1]), [base[1]]):
        res = col.query(q, n_results=3)
        assert set(res["ids"][0]) == {"n2", "l2", "t2"}


def test_numpy_input_does_not_import_torch(tmp_path):
    code = (
        "import sys, m2m, numpy as np\n"
        f"c = m2m.Client({str(tmp_path / 's')!r})\n"
        "col = c.create_collection('x', dim=3)\n"
        "col.add(['a', 'b'], np.eye(3, dtype=np.float32)[:2])\n"
        "col.upsert(['c'], [[1.0, 2.0, 3.0]])\n"
        "res = col.query(np.ones(3, dtype=np.float32), n_results=2)\n"
        "assert res['ids'] == [['c', 'a']] or res['ids'][0][0] == 'c', res\n"
        "col.get(include=['embeddings'])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_persistence_across_reopen(store_path):
    rng = np.random.default_rng(7)
    vecs = rng.standard_normal((40, 5)).astype(np.float32)
    with m2m.Client(store_path) as c:
        col = c.create_collection("keep", dim=5, metric="l2", metadata={"about": "test"})
        col.add(
            [f"i{i}" for i in range(40)],
            vecs,
            metadatas=[{"i": i} for i in range(40)],
            documents=[f"text {i}" for i in range(40)],
        )
        col.delete(ids=["i3"])
        col.update(["i4"], metadatas=[{"i": -4}])
        c.create_collection("other", dim=2)
    with m2m.Client(store_path) as c:
        assert c.list_collections() == ["keep", "other"]
        col = c.get_collection("keep")
        assert (col.dim, col.metric.value, col.metadata) == (5, "l2", {"about": "test"})
        assert col.count() == 39
        got = col.get(include=["embeddings", "metadatas", "documents"])
        keep = [i for i in range(40) if i != 3]
        assert got["ids"] == [f"i{i}" for i in keep]
        np.testing.assert_array_equal(np.asarray(got["embeddings"]), vecs[keep])
        assert got["metadatas"] == [{"i": -4 if i == 4 else i} for i in keep]
        assert got["documents"] == [f"text {i}" for i in keep]
        res = col.query(vecs[10], n_results=1)
        assert res["ids"] == [["i10"]]
        assert col.get(where_document={"$contains": "text 39"})["ids"] == ["i39"]


@pytest.fixture(scope="module")
def wordnet():
    if not (WORDNET_DIR / "base.f16.npy").exists():
        pytest.skip("wordnet-minilm dataset not available")
    base = np.load(WORDNET_DIR / "base.f16.npy", allow_pickle=False).astype(np.float32)
    queries = np.load(WORDNET_DIR / "queries.f16.npy", allow_pickle=False).astype(np.float32)
    gt = np.load(WORDNET_DIR / "gt.i32.npy", allow_pickle=False)
    return base, queries[:WORDNET_QUERIES], gt[:WORDNET_QUERIES]


WORDNET_QUERIES = 500


def _wordnet_recall_at_10(store_path, wordnet, metric: str) -> float:
    """Recall@10 of an exact-search collection over all 100K base rows (ground truth is by inner product)."""
    from m2m.index_manager import IndexSettings

    base, queries, gt = wordnet
    # stay below the index threshold: this checks the exact search
    client = m2m.Client(store_path, index_settings=IndexSettings(threshold=10**9))
    try:
        col = client.create_collection(f"wordnet-{metric}", dim=base.shape[1], metric=metric)
        col.add([str(i) for i in range(len(base))], base)
        assert col.count() == len(base)
        res = col.query(queries, n_results=10, include=[])
        assert col.index_stats() is None  # still exact
    finally:
        client.close()
    got = np.asarray([[int(i) for i in row] for row in res["ids"]])
    return float(np.mean([len(set(got[q]) & set(gt[q, :10])) / 10 for q in range(len(queries))]))


def test_exact_search_recall_on_wordnet_ip(store_path, wordnet):
    assert _wordnet_recall_at_10(store_path, wordnet, "ip") == 1.0


def test_exact_search_recall_on_wordnet_cosine(store_path, wordnet):
    # cosine renormalises the float16-rounded vectors, so exact near-ties may flip
    assert _wordnet_recall_at_10(store_path, wordnet, "cosine") >= 0.999


def test_huge_n_results_returns_everything_without_allocating_k(client):
    col = client.create_collection("c", dim=2, metric="l2")
    col.add(["a", "b", "c"], [[0, 0], [1, 0], [3, 0]])
    res = col.query([[0, 0], [3, 0]], n_results=10**12)  # a k-wide buffer would need terabytes
    assert res["ids"] == [["a", "b", "c"], ["c", "b", "a"]]
    np.testing.assert_allclose(res["distances"][1], [0, 4, 9])
    assert col.query([[0, 0]], n_results=10**12, where={"missing": 1})["ids"] == [[]]


def test_two_clients_in_one_process_follow_each_other(store_path):
    with m2m.Client(store_path) as one, m2m.Client(store_path) as two:
        a = one.create_collection("shared", dim=2, metric="l2")
        b = two.get_collection("shared")
        a.add(["x"], [[1, 1]], metadatas=[{"v": 1}], documents=["first"])
        assert b.get(include=["metadatas", "documents"])["metadatas"] == [{"v": 1}]
        b.upsert(["x", "y"], [[2, 2], [5, 5]], metadatas=[{"v": 2}, {"v": 3}])
        assert a.get(where={"v": {"$gte": 2}})["ids"] == ["x", "y"]
        assert a.query([[5, 5]], n_results=1)["ids"] == [["y"]]
        assert a.get(where_document={"$contains": "first"})["ids"] == ["x"]  # upsert kept the document
        a.delete(ids=["x"])
        assert b.count() == 1 and b.get()["ids"] == ["y"]
        one.delete_collection("shared")
        assert two.list_collections() == []


def test_reader_reloads_when_change_log_was_trimmed(store_path, monkeypatch):
    """A mirror older than the change log's floor reloads in full and still matches."""
    from m2m.storage import sqlite_store
    from m2m.storage.mirror import CollectionMirror

    loads = []
    real_load = CollectionMirror.load

    def counting_load(self, *args, **kwargs):
        loads.append(1)
        return real_load(self, *args, **kwargs)

    monkeypatch.setattr(CollectionMirror, "load", counting_load)
    with m2m.Client(store_path) as one, m2m.Client(store_path) as two:
        a = one.create_collection("log", dim=2, metric="l2")
        a.add(["keep"], [[0, 0]])
        b = two.get_collection("log")
        assert b.count() == 1
        monkeypatch.setattr(sqlite_store, "CHANGE_LOG_KEEP", 3)
        for i in range(12):
            a.upsert([f"i{i}", "keep"], [[i, i], [0, i]], metadatas=[{"i": i}, {"i": -i}])
        a.delete(ids=["i0", "i5"])
        loads.clear()
        assert b.count() == 11
        assert loads, "the reader should have reloaded in full"
        got_a = a.get(include=["embeddings", "metadatas"])
        got_b = b.get(include=["embeddings", "metadatas"])
        assert got_b["ids"] == got_a["ids"]
        assert got_b["metadatas"] == got_a["metadatas"]
        np.testing.assert_array_equal(np.asarray(got_b["embeddings"]), np.asarray(got_a["embeddings"]))
        assert b.get(where={"i": -11})["ids"] == ["keep"]
        assert b.query([[7, 7]], n_results=1)["ids"] == [["i7"]]
