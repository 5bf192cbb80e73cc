"""Bad input: each raises its typed error naming the problem, and the store is left unchanged."""

from __future__ import annotations

import math

import numpy as np
import pytest

import m2m
from conftest import snapshot_collection
from m2m import errors as E

DIM = 4
OK = [[0.1, 0.2, 0.3, 0.4]]


@pytest.fixture
def populated(client):
    col = client.create_collection("base", dim=DIM, metric="cosine")
    col.add(
        ["a", "b", "c"],
        np.eye(3, DIM, dtype=np.float32) + 0.5,
        metadatas=[{"k": 1, "tags": ["x"]}, {"k": 2}, None],
        documents=["alpha", None, "gamma"],
    )
    return client, col


def _state(client, col):
    return client.list_collections(), snapshot_collection(col), col.count()


# (case id, call(client, col), error class, regex the message must match)
CASES = [
    # vectors
    (
        "dim-add",
        lambda c, col: col.add(["x"], [[1.0, 2.0, 3.0]]),
        E.DimensionMismatchError,
        r"dimension 3.*expects 4",
    ),
    ("dim-upsert", lambda c, col: col.upsert(["a"], [[1.0] * 5]), E.DimensionMismatchError, r"dimension 5"),
    ("dim-update", lambda c, col: col.update(["a"], [[1.0] * 3]), E.DimensionMismatchError, r"dimension 3"),
    (
        "dim-query",
        lambda c, col: col.query([[1.0] * 3]),
        E.DimensionMismatchError,
        r"query_embeddings.*dimension 3",
    ),
    ("nan-add", lambda c, col: col.add(["x"], [[math.nan, 0, 0, 0]]), E.InvalidVectorError, r"NaN or inf"),
    (
        "inf-upsert",
        lambda c, col: col.upsert(["a", "x"], [OK[0], [0, math.inf, 0, 0]]),
        E.InvalidVectorError,
        r"embeddings\[1\] contains NaN or inf",
    ),
    (
        "ninf-update",
        lambda c, col: col.update(["a"], [[0, 0, -math.inf, 0]]),
        E.InvalidVectorError,
        r"NaN or inf",
    ),
    (
        "overflow-add",
        lambda c, col: col.add(["x"], np.array([[1e39, 0, 0, 0]])),
        E.InvalidVectorError,
        r"NaN or inf",
    ),
    ("nan-query", lambda c, col: col.query([[math.nan, 0, 0, 0]]), E.InvalidVectorError, r"NaN or inf"),
    (
        "strings-as-vector",
        lambda c, col: col.add(["x"], [["a", "b", "c", "d"]]),
        E.InvalidVectorError,
        r"numeric",
    ),
    (
        "ragged",
        lambda c, col: col.add(["x", "y"], [[1, 2, 3, 4], [1, 2]]),
        E.InvalidVectorError,
        r"rectangular",
    ),
    ("3d", lambda c, col: col.add(["x"], np.zeros((1, 2, DIM))), E.InvalidVectorError, r"2-D"),
    ("no-embeddings", lambda c, col: col.add(["x"]), E.InvalidArgumentError, r"embeddings are required"),
    # batches
    ("empty-ids", lambda c, col: col.add([], []), E.InvalidArgumentError, r"empty batch"),
    (
        "empty-upsert",
        lambda c, col: col.upsert([], np.zeros((0, DIM))),
        E.InvalidArgumentError,
        r"empty batch",
    ),
    ("empty-embeddings", lambda c, col: col.add(["x"], np.zeros((0, DIM))), E.InvalidArgumentError, r"empty"),
    ("dup-in-batch", lambda c, col: col.add(["x", "y", "x"], OK * 3), E.DuplicateIdError, r"duplicate.*'x'"),
    ("dup-upsert", lambda c, col: col.upsert(["a", "a"], OK * 2), E.DuplicateIdError, r"duplicate.*'a'"),
    (
        "add-existing",
        lambda c, col: col.add(["new", "b"], OK * 2),
        E.IdAlreadyExistsError,
        r"already exist.*'b'",
    ),
    (
        "update-missing",
        lambda c, col: col.update(["a", "zz"], OK * 2),
        E.ItemNotFoundError,
        r"not found.*'zz'",
    ),
    ("rows-vs-ids", lambda c, col: col.add(["x", "y"], OK * 3), E.InvalidArgumentError, r"3 rows.*2 ids"),
    (
        "metadatas-length",
        lambda c, col: col.add(["x", "y"], OK * 2, metadatas=[{"k": 1}]),
        E.InvalidArgumentError,
        r"metadatas must be a list of 2",
    ),
    (
        "documents-length",
        lambda c, col: col.add(["x"], OK, documents=["a", "b"]),
        E.InvalidArgumentError,
        r"documents must be a list of 1",
    ),
    (
        "document-not-str",
        lambda c, col: col.add(["x"], OK, documents=[3]),
        E.InvalidArgumentError,
        r"document",
    ),
    # ids
    ("int-id", lambda c, col: col.add([1], OK), E.InvalidIdError, r"non-empty string.*1"),
    ("none-id", lambda c, col: col.add([None], OK), E.InvalidIdError, r"non-empty string.*None"),
    ("empty-id", lambda c, col: col.add([""], OK), E.InvalidIdError, r"non-empty string"),
    ("bytes-id", lambda c, col: col.add(["ok", b"x"], OK * 2), E.InvalidIdError, r"non-empty string"),
    ("ids-not-list", lambda c, col: col.add(5, OK), E.InvalidIdError, r"ids must be a list"),
    ("huge-id", lambda c, col: col.add(["x" * 5000], OK), E.InvalidIdError, r"longer than"),
    ("int-id-delete", lambda c, col: col.delete(ids=[1]), E.InvalidIdError, r"non-empty string"),
    ("int-id-get", lambda c, col: col.get(ids=[1]), E.InvalidIdError, r"non-empty string"),
    # metadata
    (
        "meta-dict",
        lambda c, col: col.add(["x"], OK, metadatas=[{"k": {"a": 1}}]),
        E.InvalidMetadataError,
        r"'k'.*dict",
    ),
    (
        "meta-none-in-list",
        lambda c, col: col.add(["x"], OK, metadatas=[{"k": [1, None]}]),
        E.InvalidMetadataError,
        r"'k'.*NoneType",
    ),
    (
        "meta-nested-list",
        lambda c, col: col.add(["x"], OK, metadatas=[{"k": [1, [2]]}]),
        E.InvalidMetadataError,
        r"'k'.*nested",
    ),
    (
        "meta-nan",
        lambda c, col: col.add(["x"], OK, metadatas=[{"k": math.nan}]),
        E.InvalidMetadataError,
        r"'k'.*finite",
    ),
    (
        "meta-inf-in-list",
        lambda c, col: col.upsert(["a"], OK, metadatas=[{"k": [1.0, math.inf]}]),
        E.InvalidMetadataError,
        r"'k'.*finite",
    ),
    ("meta-none", lambda c, col: col.update(["a"], metadatas=[{"k": None}]), E.InvalidMetadataError, r"'k'"),
    (
        "meta-set",
        lambda c, col: col.add(["x"], OK, metadatas=[{"k": {1, 2}}]),
        E.InvalidMetadataError,
        r"'k'.*set",
    ),
    (
        "meta-bytes",
        lambda c, col: col.add(["x"], OK, metadatas=[{"k": b"x"}]),
        E.InvalidMetadataError,
        r"'k'",
    ),
    (
        "meta-key-int",
        lambda c, col: col.add(["x"], OK, metadatas=[{1: "v"}]),
        E.InvalidMetadataError,
        r"keys",
    ),
    (
        "meta-key-dollar",
        lambda c, col: col.add(["x"], OK, metadatas=[{"$k": 1}]),
        E.InvalidMetadataError,
        r"\$k",
    ),
    ("meta-not-dict", lambda c, col: col.add(["x"], OK, metadatas=["k"]), E.InvalidMetadataError, r"dict"),
    (
        "meta-huge-int",
        lambda c, col: col.add(["x"], OK, metadatas=[{"k": 2**70}]),
        E.InvalidMetadataError,
        r"64-bit",
    ),
    (
        "meta-second-item",
        lambda c, col: col.add(["x", "y"], OK * 2, metadatas=[{"k": 1}, {"k": {}}]),
        E.InvalidMetadataError,
        r"'k'",
    ),
    # filters
    ("unknown-op", lambda c, col: col.get(where={"k": {"$foo": 1}}), E.InvalidFilterError, r"\$foo"),
    ("unknown-top-op", lambda c, col: col.get(where={"$not": [{"k": 1}]}), E.InvalidFilterError, r"\$not"),
    (
        "in-not-list",
        lambda c, col: col.query(OK, where={"k": {"$in": 1}}),
        E.InvalidFilterError,
        r"\$in.*list",
    ),
    ("nin-empty", lambda c, col: col.get(where={"k": {"$nin": []}}), E.InvalidFilterError, r"\$nin"),
    ("in-dict-item", lambda c, col: col.get(where={"k": {"$in": [{"a": 1}]}}), E.InvalidFilterError, r"\$in"),
    (
        "gt-string",
        lambda c, col: col.query(OK, where={"k": {"$gt": "a"}}),
        E.InvalidFilterError,
        r"\$gt.*number",
    ),
    ("lte-bool", lambda c, col: col.get(where={"k": {"$lte": True}}), E.InvalidFilterError, r"\$lte.*number"),
    ("gt-nan", lambda c, col: col.get(where={"k": {"$gt": math.nan}}), E.InvalidFilterError, r"\$gt"),
    ("and-not-list", lambda c, col: col.get(where={"$and": {"k": 1}}), E.InvalidFilterError, r"\$and.*list"),
    ("or-empty", lambda c, col: col.get(where={"$or": []}), E.InvalidFilterError, r"\$or.*non-empty"),
    ("and-of-str", lambda c, col: col.get(where={"$and": ["k"]}), E.InvalidFilterError, r"\$and.*dict"),
    ("eq-list", lambda c, col: col.get(where={"k": [1, 2]}), E.InvalidFilterError, r"'k'"),
    ("eq-none", lambda c, col: col.get(where={"k": None}), E.InvalidFilterError, r"'k'"),
    ("empty-op-dict", lambda c, col: col.get(where={"k": {}}), E.InvalidFilterError, r"'k'"),
    ("where-not-dict", lambda c, col: col.get(where="k=1"), E.InvalidFilterError, r"dict"),
    (
        "nested-bad",
        lambda c, col: col.get(where={"$or": [{"k": 1}, {"$and": [{"k": {"$bad": 1}}]}]}),
        E.InvalidFilterError,
        r"\$bad",
    ),
    (
        "doc-not-str",
        lambda c, col: col.get(where_document={"$contains": 1}),
        E.InvalidFilterError,
        r"\$contains",
    ),
    (
        "doc-empty-str",
        lambda c, col: col.get(where_document={"$contains": ""}),
        E.InvalidFilterError,
        r"\$contains",
    ),
    (
        "doc-unknown-op",
        lambda c, col: col.get(where_document={"$regex": "a"}),
        E.InvalidFilterError,
        r"\$regex",
    ),
    (
        "doc-two-ops",
        lambda c, col: col.get(where_document={"$contains": "a", "$not_contains": "b"}),
        E.InvalidFilterError,
        r"exactly one",
    ),
    (
        "doc-and-not-list",
        lambda c, col: col.query(OK, where_document={"$and": {"$contains": "a"}}),
        E.InvalidFilterError,
        r"\$and",
    ),
    ("delete-bad-where", lambda c, col: col.delete(where={"k": {"$gt": "x"}}), E.InvalidFilterError, r"\$gt"),
    (
        "delete-bad-doc",
        lambda c, col: col.delete(ids=["a"], where_document={"$has": "a"}),
        E.InvalidFilterError,
        r"\$has",
    ),
    ("delete-nothing", lambda c, col: col.delete(), E.InvalidArgumentError, r"needs ids, where"),
    # query and get arguments
    ("n-results-0", lambda c, col: col.query(OK, n_results=0), E.InvalidArgumentError, r"n_results.*>= 1"),
    ("n-results-neg", lambda c, col: col.query(OK, n_results=-3), E.InvalidArgumentError, r"n_results"),
    ("n-results-float", lambda c, col: col.query(OK, n_results=2.0), E.InvalidArgumentError, r"n_results"),
    ("n-results-bool", lambda c, col: col.query(OK, n_results=True), E.InvalidArgumentError, r"n_results"),
    ("no-query", lambda c, col: col.query(), E.InvalidArgumentError, r"query_embeddings"),
    ("include-unknown", lambda c, col: col.get(include=["vectors"]), E.InvalidArgumentError, r"'vectors'"),
    (
        "include-distances-in-get",
        lambda c, col: col.get(include=["distances"]),
        E.InvalidArgumentError,
        r"'distances'",
    ),
    ("limit-negative", lambda c, col: col.get(limit=-1), E.InvalidArgumentError, r"limit"),
    ("offset-negative", lambda c, col: col.get(offset=-1), E.InvalidArgumentError, r"offset"),
    # collections
    ("unknown-collection", lambda c, col: c.get_collection("nope"), E.CollectionNotFoundError, r"'nope'"),
    (
        "delete-unknown-collection",
        lambda c, col: c.delete_collection("nope"),
        E.CollectionNotFoundError,
        r"'nope'",
    ),
    (
        "get-or-create-no-dim",
        lambda c, col: c.get_or_create_collection("nope"),
        E.InvalidArgumentError,
        r"dim",
    ),
    (
        "create-existing",
        lambda c, col: c.create_collection("base", dim=DIM),
        E.CollectionExistsError,
        r"'base'",
    ),
    ("dim-zero", lambda c, col: c.create_collection("z", dim=0), E.InvalidArgumentError, r"dim"),
    ("dim-str", lambda c, col: c.create_collection("z", dim="4"), E.InvalidArgumentError, r"dim"),
    (
        "metric-unknown",
        lambda c, col: c.create_collection("z", dim=4, metric="dot"),
        E.InvalidArgumentError,
        r"metric 'dot'",
    ),
    (
        "collection-meta",
        lambda c, col: c.create_collection("z", dim=4, metadata={"k": [None]}),
        E.InvalidMetadataError,
        r"'k'",
    ),
    ("modify-meta", lambda c, col: col.modify(metadata={"k": {"x": 1}}), E.InvalidMetadataError, r"'k'"),
]

BAD_NAMES = [
    "../x",
    "a/b",
    "",
    ".",
    "..",
    "a\x00b",
    "x" * 200,
    "a\\b",
    "/abs",
    "a\n",
    " a",
    "a..b",
    "-a",
    None,
    3,
]


@pytest.mark.parametrize(("call", "error", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_and_changes_nothing(populated, call, error, pattern):
    client, col = populated
    before = _state(client, col)
    with pytest.raises(error, match=pattern) as info:
        call(client, col)
    assert isinstance(info.value, E.M2MError)
    assert _state(client, col) == before
    # the collection still works
    assert col.query([[0.5, 1.5, 0.5, 0.5]], n_results=1)["ids"] == [["b"]]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n) for n in BAD_NAMES])
def test_bad_collection_names(populated, store_path, name):
    client, col = populated
    before = _state(client, col)
    files_before = sorted(p.relative_to(store_path.parent) for p in store_path.parent.rglob("*"))
    for call in (
        lambda: client.create_collection(name, dim=DIM),
        lambda: client.get_collection(name),
        lambda: client.get_or_create_collection(name, dim=DIM),
        lambda: client.delete_collection(name),
    ):
        with pytest.raises(E.InvalidCollectionNameError, match="invalid collection name"):
            call()
    assert _state(client, col) == before
    files_after = sorted(p.relative_to(store_path.parent) for p in store_path.parent.rglob("*"))
    assert [f for f in files_after if not f.name.startswith("m2m.sqlite3")] == [
        f for f in files_before if not f.name.startswith("m2m.sqlite3")
    ]


def test_good_edge_names_are_accepted(client):
    for name in ["a", "A.b-c_d", "x" * 63, "0start"]:
        client.create_collection(name, dim=2)
    assert client.list_collections() == sorted(["a", "A.b-c_d", "x" * 63, "0start"])
    with pytest.raises(E.InvalidCollectionNameError):
        client.create_collection("x" * 64, dim=2)


def test_error_classes_and_statuses():
    assert issubclass(E.InvalidArgumentError, ValueError)
    assert issubclass(E.NotFoundError, KeyError)
    for cls in E.ERROR_TYPES.values():
        assert issubclass(cls, E.M2MError)
        assert E.ERROR_TYPES[cls.__name__] is cls
    assert str(E.CollectionNotFoundError("collection 'x' does not exist")) == "collection 'x' does not exist"
    assert (
        E.InvalidFilterError.http_status,
        E.StoreBusyError.http_status,
        E.IdAlreadyExistsError.http_status,
    ) == (400, 503, 409)


def test_failed_batch_is_refused_whole(populated):
    """A write that fails validation halfway through the batch stores none of it."""
    client, col = populated
    before = _state(client, col)
    vecs = np.ones((50, DIM), dtype=np.float32)
    metas = [{"i": i} for i in range(49)] + [{"i": [[1]]}]
    with pytest.raises(E.InvalidMetadataError):
        col.add([f"n{i}" for i in range(50)], vecs, metadatas=metas)
    with pytest.raises(E.IdAlreadyExistsError):
        col.add([f"n{i}" for i in range(49)] + ["c"], vecs)
    with pytest.raises(E.ItemNotFoundError):
        col.update(["a", "b", "nope"], vecs[:3])
    assert _state(client, col) == before
    assert col.get(where={"i": {"$gte": 0}})["ids"] == []


def test_closed_client_raises_storage_error(store_path):
    c = m2m.Client(store_path)
    col = c.create_collection("x", dim=2)
    c.close()
    with pytest.raises(E.StorageError, match="closed"):
        col.add(["a"], [[1, 2]])
    with pytest.raises(E.StorageError, match="closed"):
        c.list_collections()
