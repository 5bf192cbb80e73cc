"""One behaviour suite, run unchanged against the embedded Client, HttpClient and GrpcClient.

Oracles: brute-force NumPy distances for search, the values written for reads, and
the embedded API's error classes for bad input. The remote servers run in-process
on free loopback ports; every test uses its own collection name.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import m2m
from _servers import running_server
from m2m import errors
from m2m.clients import GrpcClient, HttpClient

_names = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("shared-server")) as srv:
        yield srv


@pytest.fixture(scope="module", params=["embedded", "http", "grpc"])
def client(request, tmp_path_factory):
    if request.param == "embedded":
        c = m2m.Client(tmp_path_factory.mktemp("shared-embedded"))
    else:
        srv = request.getfixturevalue("server")
        c = HttpClient(srv.url) if request.param == "http" else GrpcClient(srv.grpc_target)
    yield c
    c.close()


def fresh(prefix: str = "c") -> str:
    return f"{prefix}{next(_names)}"


def brute_force(metric: str, base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (indices, distances) with the documented distance of each metric, in float64."""
    b, q = base.astype(np.float64), queries.astype(np.float64)
    if metric == "cosine":
        bn = b / np.linalg.norm(b, axis=1, keepdims=True)
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        d = 1.0 - qn @ bn.T
    elif metric == "ip":
        d = -(q @ b.T)
    else:
        d = ((q[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, axis=1)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_query_matches_brute_force(client, metric):
    rng = np.random.default_rng(7)
    base = rng.standard_normal((300, 16)).astype(np.float32)
    queries = rng.standard_normal((5, 16)).astype(np.float32)
    ids = [f"id{i}" for i in range(len(base))]
    col = client.create_collection(fresh(metric), 16, metric)
    col.add(ids, base)
    res = col.query(queries, n_results=7)
    order, dist = brute_force(metric, base, queries, 7)
    assert res["ids"] == [[ids[j] for j in row] for row in order]
    np.testing.assert_allclose(np.array(res["distances"]), dist, rtol=1e-4, atol=1e-4)
    # One query vector given flat answers like a batch of one.
    single = col.query(queries[0], n_results=3)
    assert single["ids"] == [res["ids"][0][:3]]


def test_search_options_pass_through(client):
    rng = np.random.default_rng(11)
    base = rng.standard_normal((40, 4)).astype(np.float32)
    col = client.create_collection(fresh("opt"), 4, "l2")
    col.add([f"o{i}" for i in range(40)], base)
    exact = col.query(base[:2], n_results=5)
    # Below the index threshold the search is exact whatever the options say.
    assert col.query(base[:2], n_results=5, n_probe=3, lod=2, target_recall=0.9)["ids"] == exact["ids"]
    for bad in ({"lod": 7}, {"n_probe": 0}, {"target_recall": 1.5}):
        with pytest.raises(errors.InvalidArgumentError):
            col.query(base[:1], n_results=5, **bad)


def test_round_trip_is_exact(client):
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((20, 8)).astype(np.float32)
    metas = [{"i": i, "f": i / 3, "b": i % 2 == 0, "s": f"x{i}", "tags": ["a", f"t{i}"]} for i in range(20)]
    docs = [f"document number {i}" if i % 3 else None for i in range(20)]
    col = client.create_collection(fresh(), 8, "l2", metadata={"owner": "tests", "v": 2})
    col.add([f"k{i}" for i in range(20)], vectors, metadatas=metas, documents=docs)
    got = col.get(include=["embeddings", "metadatas", "documents"])
    assert got["ids"] == [f"k{i}" for i in range(20)]
    assert np.array_equal(np.stack(got["embeddings"]), vectors)  # bit-exact float32
    assert all(e.dtype == np.float32 for e in got["embeddings"])
    assert got["metadatas"] == metas
    assert [type(v) for v in got["metadatas"][1].values()] == [int, float, bool, str, list]
    assert got["documents"] == docs
    assert client.get_collection(col.name).metadata == {"owner": "tests", "v": 2}
    # ids order, limit/offset, default include.
    sub = col.get(ids=["k5", "k2", "missing"])
    assert (
        sub["ids"] == ["k5", "k2"] and sub["embeddings"] is None and sub["metadatas"] == [metas[5], metas[2]]
    )
    page = col.get(limit=3, offset=4, include=[])
    assert page["ids"] == ["k4", "k5", "k6"] and page["metadatas"] is None and page["documents"] is None
    assert col.peek(2)["ids"] == ["k0", "k1"]
    assert col.count() == 20
    # Query include: embeddings and no distances.
    q = col.query(vectors[3], n_results=2, include=["embeddings", "metadatas"])
    assert q["ids"][0][0] == "k3" and q["distances"] is None
    assert np.array_equal(q["embeddings"][0][0], vectors[3]) and q["metadatas"][0][0] == metas[3]


def test_filters(client):
    vectors = np.eye(6, dtype=np.float32)
    col = client.create_collection(fresh(), 6, "ip")
    col.add(
        [f"d{i}" for i in range(6)],
        vectors,
        metadatas=[
            {"n": i, "lang": "en" if i < 3 else "fr", "tags": ["even" if i % 2 == 0 else "odd"]}
            for i in range(6)
        ],
        documents=["the quick fox", "lazy dog", "quick brown", "chien", "renard rapide", "quick"],
    )
    got = col.get(where={"$and": [{"n": {"$gte": 1}}, {"lang": "en"}]})
    assert got["ids"] == ["d1", "d2"]
    assert col.get(where={"tags": "even"})["ids"] == ["d0", "d2", "d4"]
    assert col.get(where_document={"$contains": "quick"})["ids"] == ["d0", "d2", "d5"]
    res = col.query(
        np.ones(6, dtype=np.float32),
        n_results=10,
        where={"lang": {"$in": ["fr"]}},
        where_document={"$not_contains": "chien"},
    )
    assert sorted(res["ids"][0]) == ["d4", "d5"]
    text = col.search_text("quick", n_results=5, where={"lang": "en"})
    assert sorted(text["ids"][0]) == ["d0", "d2"]


def test_write_semantics(client):
    col = client.create_collection(fresh(), 2, "l2")
    col.add(["a", "b"], [[0, 0], [1, 1]], metadatas=[{"v": 1}, {"v": 2}], documents=["A", "B"])
    col.upsert(["b", "c"], [[2, 2], [3, 3]])  # b keeps metadata and document
    got = col.get(include=["embeddings", "metadatas", "documents"])
    assert got["ids"] == ["a", "b", "c"]
    assert got["metadatas"] == [{"v": 1}, {"v": 2}, None] and got["documents"] == ["A", "B", None]
    assert np.array_equal(got["embeddings"][1], np.array([2, 2], dtype=np.float32))
    col.update(["a"], metadatas=[{"v": 10}])
    assert col.get(ids=["a"], include=["embeddings", "metadatas"])["metadatas"] == [{"v": 10}]
    assert col.delete(ids=["a", "zzz"]) == 1
    assert col.delete(where={"v": 2}) == 1
    assert col.get()["ids"] == ["c"]
    assert col.delete(where={}) == 1 and col.count() == 0


def test_collections_lifecycle(client):
    name = fresh("life")
    created = client.create_collection(name, 4, "ip", metadata={"a": 1})
    assert (created.name, created.dim, created.metric) == (name, 4, m2m.Metric.IP)
    assert name in client.list_collections()
    again = client.get_collection(name)
    assert again.id == created.id and again.metric == m2m.Metric.IP
    assert client.get_or_create_collection(name, 4).id == created.id
    made = client.get_or_create_collection(fresh("goc"), 3)
    assert made.dim == 3 and made.metric == m2m.Metric.COSINE and made.count() == 0
    created.modify(metadata={"b": 2})
    assert client.get_collection(name).metadata == {"b": 2}
    client.delete_collection(name)
    assert name not in client.list_collections()
    with pytest.raises(errors.CollectionNotFoundError):
        client.get_collection(name)


BAD_WRITES = [
    (errors.DimensionMismatchError, dict(ids=["x"], embeddings=[[1.0, 2.0, 3.0]])),
    (errors.InvalidVectorError, dict(ids=["x"], embeddings=[[1.0, float("nan")]])),
    (errors.InvalidVectorError, dict(ids=["x"], embeddings=[["a", "b"]])),
    (errors.DuplicateIdError, dict(ids=["x", "x"], embeddings=[[1, 2], [3, 4]])),
    (errors.InvalidIdError, dict(ids=[""], embeddings=[[1, 2]])),
    (errors.InvalidMetadataError, dict(ids=["x"], embeddings=[[1, 2]], metadatas=[{"k": {"nested": 1}}])),
    (errors.InvalidArgumentError, dict(ids=["x", "y"], embeddings=[[1, 2]])),
    (errors.IdAlreadyExistsError, dict(ids=["a"], embeddings=[[1, 2]])),
]


@pytest.mark.parametrize(("error", "kwargs"), BAD_WRITES, ids=[e.__name__ for e, _ in BAD_WRITES])
def test_bad_writes_raise_the_same_error_and_change_nothing(client, error, kwargs):
    col = client.create_collection(fresh(), 2, "l2")
    col.add(["a"], [[0.5, 0.25]], metadatas=[{"k": 1}])
    with pytest.raises(error) as info:
        col.add(**kwargs)
    assert type(info.value) is error
    got = col.get(include=["embeddings", "metadatas"])
    assert got["ids"] == ["a"] and got["metadatas"] == [{"k": 1}]
    assert np.array_equal(got["embeddings"][0], np.array([0.5, 0.25], dtype=np.float32))


def test_other_errors(client):
    col = client.create_collection(fresh(), 2, "l2")
    col.add(["a"], [[0, 1]])
    cases = [
        (errors.ItemNotFoundError, lambda: col.update(["nope"], metadatas=[{"a": 1}])),
        (errors.CollectionExistsError, lambda: client.create_collection(col.name, 2)),
        (errors.CollectionNotFoundError, lambda: client.get_collection("does-not-exist")),
        (errors.CollectionNotFoundError, lambda: client.delete_collection("does-not-exist")),
        (errors.InvalidCollectionNameError, lambda: client.create_collection("../escape", 2)),
        (errors.InvalidArgumentError, lambda: client.create_collection(fresh(), 2, "hamming")),
        (errors.InvalidArgumentError, lambda: client.get_or_create_collection(col.name, 3)),
        (errors.InvalidArgumentError, lambda: client.get_or_create_collection(fresh("none"))),
        (errors.InvalidArgumentError, lambda: col.query([[0, 1]], n_results=0)),
        (errors.DimensionMismatchError, lambda: col.query([[0, 1, 2]])),
        (errors.InvalidFilterError, lambda: col.get(where={"$bogus": 1})),
        (errors.InvalidFilterError, lambda: col.query([[0, 1]], where={"k": {"$gt": "x", "$zz": 1}})),
        (errors.InvalidArgumentError, lambda: col.get(include=["distances"])),
        (errors.InvalidArgumentError, lambda: col.query([[0, 1]], include=["bogus"])),
        (errors.InvalidArgumentError, lambda: col.delete()),
        (errors.InvalidArgumentError, lambda: col.add(["z"])),  # no embeddings, no embedding function
    ]
    for error, call in cases:
        with pytest.raises(error) as info:
            call()
        assert type(info.value) is error, (error, info.value)
    assert col.count() == 1


def test_concurrent_writers_lose_nothing(client):
    """Eight threads writing disjoint ids at once: every acknowledged id is stored with its vector."""
    from concurrent.futures import ThreadPoolExecutor

    col = client.create_collection(fresh(), 4, "l2")

    def write(t: int) -> list[str]:
        ids = [f"t{t}-{i}" for i in range(10)]
        for i, item in enumerate(ids):
            col.add([item], [[t, i, 0, 1]])
        return ids

    with ThreadPoolExecutor(8) as pool:
        written = [i for ids in pool.map(write, range(8)) for i in ids]
    got = col.get(ids=written, include=["embeddings"])
    assert got["ids"] == written
    for item, vec in zip(got["ids"], got["embeddings"], strict=True):
        t, i = item[1:].split("-")
        assert vec.tolist() == [float(t), float(i), 0.0, 1.0]
