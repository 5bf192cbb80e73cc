"""``where`` and ``where_document`` filters against a brute-force Python evaluation.

The oracle below is written from the documented semantics (storage/filters.py):
an item matches a comparison when any of its values for the field does; ``$ne`` and
``$nin`` match items that have the field and none of whose values is excluded;
numbers compare across int and float; booleans and strings equal only themselves;
``$contains`` is a case-sensitive substring test, ``$not_contains`` needs a document.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from conftest import brute_force_distances

# -- the oracle ----------------------------------------------------------------------------------


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _equal(v, operand) -> bool:
    if isinstance(v, bool) or isinstance(operand, bool):
        return isinstance(v, bool) and isinstance(operand, bool) and v == operand
    if isinstance(v, str) or isinstance(operand, str):
        return isinstance(v, str) and isinstance(operand, str) and v == operand
    return v == operand


def _values(meta, field):
    if not meta or field not in meta:
        return False, []
    value = meta[field]
    return True, (value if isinstance(value, list) else [value])


def _comparison(meta, field, op, operand) -> bool:
    present, values = _values(meta, field)
    if op == "$eq":
        return any(_equal(v, operand) for v in values)
    if op == "$ne":
        return present and not any(_equal(v, operand) for v in values)
    if op == "$in":
        return any(_equal(v, o) for v in values for o in operand)
    if op == "$nin":
        return present and not any(_equal(v, o) for v in values for o in operand)
    compare = {
        "$gt": lambda a, b: a > b,
        "$gte": lambda a, b: a >= b,
        "$lt": lambda a, b: a < b,
        "$lte": lambda a, b: a <= b,
    }[op]
    return any(_is_number(v) and compare(v, operand) for v in values)


def oracle_where(meta, where) -> bool:
    for key, value in where.items():
        if key == "$and":
            ok = all(oracle_where(meta, sub) for sub in value)
        elif key == "$or":
            ok = any(oracle_where(meta, sub) for sub in value)
        else:
            ops = value if isinstance(value, dict) else {"$eq": value}
            ok = all(_comparison(meta, key, op, operand) for op, operand in ops.items())
        if not ok:
            return False
    return True


def oracle_document(doc, where_document) -> bool:
    ((op, value),) = where_document.items()
    if op == "$contains":
        return doc is not None and value in doc
    if op == "$not_contains":
        return doc is not None and value not in doc
    results = [oracle_document(doc, sub) for sub in value]
    return all(results) if op == "$and" else any(results)


# -- data ----------------------------------------------------------------------------------------

WORDS = ["red", "Red", "blue", "x", "xy", 'a"b', "it's", "naïve", "ab", "AB", "", "1", "true"]
DOC_PIECES = [
    "the",
    "The",
    "cat",
    "CAT",
    " ",
    '"',
    "'",
    "ab",
    "a",
    "b",
    "xyz",
    "naïve",
    "*",
    "-",
    "AND",
    "NEAR(",
    ":",
    "%",
    "_",
    "é",
    "[",
    "]",
    "?",
    "[ab]",
    "\\",
    "^",
    "日本語",
]


def _random_scalar(rng: random.Random):
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randint(-3, 3)
    if kind == 1:
        return rng.choice([-2.5, -1.0, 0.0, 0.5, 1.0, 2.0, 2.5, 3.0])
    if kind == 2:
        return rng.choice([True, False])
    return rng.choice(WORDS)


def _random_metadata(rng: random.Random):
    if rng.random() < 0.08:
        return None
    meta = {}
    if rng.random() < 0.8:
        meta["i"] = rng.randint(-5, 5)
    if rng.random() < 0.8:
        meta["f"] = rng.choice([-1.5, 0.0, 0.25, 1.0, 2.0, 3.75, 1e10])
    if rng.random() < 0.7:
        meta["b"] = rng.random() < 0.5
    if rng.random() < 0.8:
        meta["s"] = rng.choice(WORDS)
    if rng.random() < 0.7:
        meta["mixed"] = _random_scalar(rng)
    if rng.random() < 0.6:
        meta["tags"] = [rng.choice(WORDS) for _ in range(rng.randrange(0, 4))]
    if rng.random() < 0.6:
        meta["nums"] = [_random_scalar(rng) for _ in range(rng.randrange(0, 4))]
    return meta


def _random_document(rng: random.Random):
    if rng.random() < 0.1:
        return None
    return "".join(rng.choice(DOC_PIECES) for _ in range(rng.randrange(0, 12)))


FIELDS = ["i", "f", "b", "s", "mixed", "tags", "nums", "absent"]


def _random_operand(rng: random.Random, op: str):
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return rng.choice([-3, -1, 0, 1, 2, 0.5, 2.5, -1.5, 3.75, 1e10])
    if op in ("$in", "$nin"):
        return [_random_scalar(rng) for _ in range(rng.randrange(1, 4))]
    return _random_scalar(rng)


def _random_where(rng: random.Random, depth: int = 0):
    roll = rng.random()
    if depth < 2 and roll < 0.25:
        return {
            rng.choice(["$and", "$or"]): [_random_where(rng, depth + 1) for _ in range(rng.randrange(1, 4))]
        }
    where = {}
    for _ in range(rng.randrange(1, 3)):
        field = rng.choice(FIELDS)
        if rng.random() < 0.25:
            where[field] = _random_scalar(rng)  # bare equality
        else:
            ops = rng.sample(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"], rng.randrange(1, 3))
            where[field] = {op: _random_operand(rng, op) for op in ops}
    return where


def _random_needle(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(DOC_PIECES)
    return "".join(rng.choice(DOC_PIECES) for _ in range(rng.randrange(1, 4)))


def _random_where_document(rng: random.Random, depth: int = 0):
    if depth < 2 and rng.random() < 0.25:
        op = rng.choice(["$and", "$or"])
        return {op: [_random_where_document(rng, depth + 1) for _ in range(rng.randrange(1, 3))]}
    return {rng.choice(["$contains", "$not_contains"]): _random_needle(rng)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    import m2m

    rng = random.Random(1234)
    n, dim = 400, 8
    ids = [f"item{i}" for i in range(n)]
    metas = [_random_metadata(rng) for _ in range(n)]
    docs = [_random_document(rng) for _ in range(n)]
    vecs = np.random.default_rng(5).standard_normal((n, dim)).astype(np.float32)
    client = m2m.Client(tmp_path_factory.mktemp("filters"))
    col = client.create_collection("f", dim=dim, metric="l2")
    col.add(ids[:200], vecs[:200], metadatas=metas[:200], documents=docs[:200])
    col.add(ids[200:], vecs[200:], metadatas=metas[200:], documents=docs[200:])
    # overwrite some items so that the index holds stale entries too
    rewrite = list(range(0, n, 7))
    for i in rewrite:
        metas[i] = _random_metadata(rng)
        docs[i] = _random_document(rng)
    col.upsert(
        [ids[i] for i in rewrite],
        vecs[rewrite],
        metadatas=[metas[i] for i in rewrite],
        documents=[docs[i] for i in rewrite],
    )
    # the stored metadata is what we wrote, exactly
    got = col.get(include=["metadatas", "documents"])
    assert got["metadatas"] == metas and got["documents"] == docs
    yield col, ids, vecs, metas, docs
    client.close()


def _expected(ids, metas, docs, where=None, where_document=None):
    return [
        ids[i]
        for i in range(len(ids))
        if (where is None or oracle_where(metas[i], where))
        and (where_document is None or oracle_document(docs[i], where_document))
    ]


# -- explicit cases --------------------------------------------------------------------------------


EXPLICIT_WHERE = [
    {"i": 3},
    {"i": {"$eq": 3}},
    {"i": {"$eq": 3.0}},  # int field, float operand
    {"f": {"$eq": 1}},  # float field, int operand
    {"f": 1e10},
    {"i": {"$ne": 0}},
    {"i": {"$gt": 2}},
    {"i": {"$gte": 2}},
    {"i": {"$lt": -2}},
    {"i": {"$lte": -2}},
    {"i": {"$gt": 1.5}},
    {"f": {"$gt": 1}},
    {"f": {"$lte": 0.25}},
    {"i": {"$gt": -1, "$lt": 2}},
    {"i": {"$in": [1, 2, 2.0, 4]}},
    {"i": {"$nin": [0, 1]}},
    {"b": True},
    {"b": False},
    {"b": {"$ne": True}},
    {"b": {"$in": [True]}},
    {"mixed": 1},
    {"mixed": True},  # True never equals 1
    {"mixed": {"$in": [1, True]}},
    {"mixed": {"$gt": 0}},  # booleans and strings never satisfy an order comparison
    {"s": "red"},
    {"s": "Red"},  # case-sensitive
    {"s": ""},
    {"s": 'a"b'},
    {"s": {"$in": ["red", "blue"]}},
    {"s": {"$nin": ["red", "blue"]}},
    {"s": {"$ne": "red"}},
    {"s": "1"},  # the string "1" is not the number 1
    {"s": "true"},
    {"tags": "red"},  # list-valued: contains
    {"tags": {"$ne": "red"}},  # has tags and none is "red"
    {"tags": {"$in": ["x", "xy"]}},
    {"tags": {"$nin": ["x", "xy"]}},
    {"nums": {"$gt": 2}},
    {"nums": {"$lt": -2, "$gt": -3}},  # both on the same field, possibly different elements
    {"absent": 1},
    {"absent": {"$ne": 1}},  # missing key never matches $ne
    {"absent": {"$nin": [1]}},
    {"i": 1, "s": "red"},
    {"$and": [{"i": {"$gte": 0}}, {"b": True}]},
    {"$or": [{"i": 5}, {"s": "blue"}, {"tags": "x"}]},
    {"$and": [{"$or": [{"i": 1}, {"i": 2}]}, {"$or": [{"b": True}, {"absent": 3}]}]},
    {"$or": [{"$and": [{"i": 1}, {"f": 0.0}]}, {"mixed": "red"}]},
    {"$or": [{"i": 1}], "b": True},
    {},
]


@pytest.mark.parametrize("where", EXPLICIT_WHERE, ids=[str(w) for w in EXPLICIT_WHERE])
def test_where_operators(dataset, where):
    col, ids, _, metas, docs = dataset
    expected = _expected(ids, metas, docs, where=where)
    assert col.get(where=where)["ids"] == expected
    assert col.get(where=where, include=[])["ids"] == expected


EXPLICIT_DOCUMENT = [
    {"$contains": "cat"},
    {"$contains": "CAT"},
    {"$contains": "Cat"},
    {"$contains": "a"},  # shorter than 3 characters: scan
    {"$contains": "ab"},
    {"$contains": '"'},
    {"$contains": "'"},
    {"$contains": 'a"b'},
    {"$contains": '""'},
    {"$contains": "it's"},
    {"$contains": "naïve"},
    {"$contains": "ïv"},
    {"$contains": "é"},
    {"$contains": "*"},
    {"$contains": "AND"},
    {"$contains": "NEAR("},
    {"$contains": "%"},
    {"$contains": "_"},
    {"$contains": "a b"},
    {"$contains": "["},
    {"$contains": "]"},
    {"$contains": "?"},
    {"$contains": "[ab]"},
    {"$contains": "b]"},
    {"$contains": "a?b"},
    {"$contains": "*[?"},
    {"$contains": "**"},
    {"$contains": "\\"},
    {"$contains": "^["},
    {"$contains": "日本語"},
    {"$contains": "本"},
    {"$not_contains": "[ab]"},
    {"$contains": " "},
    {"$contains": "thecat"},
    {"$contains": "the cat"},
    {"$not_contains": "the"},
    {"$not_contains": "a"},
    {"$not_contains": '"'},
    {"$and": [{"$contains": "the"}, {"$not_contains": "cat"}]},
    {"$or": [{"$contains": "xyz"}, {"$contains": "NEAR("}]},
    {"$or": [{"$and": [{"$contains": "a"}, {"$contains": "b"}]}, {"$not_contains": "e"}]},
]


@pytest.mark.parametrize("where_document", EXPLICIT_DOCUMENT, ids=[str(w) for w in EXPLICIT_DOCUMENT])
def test_where_document_operators(dataset, where_document):
    col, ids, _, metas, docs = dataset
    expected = _expected(ids, metas, docs, where_document=where_document)
    assert col.get(where_document=where_document)["ids"] == expected


def test_random_filter_combinations(dataset):
    col, ids, vecs, metas, docs = dataset
    rng = random.Random(99)
    nonempty = 0
    for trial in range(300):
        where = _random_where(rng) if rng.random() < 0.8 else None
        where_document = _random_where_document(rng) if rng.random() < 0.4 else None
        expected = _expected(ids, metas, docs, where=where, where_document=where_document)
        assert col.get(where=where, where_document=where_document)["ids"] == expected, (where, where_document)
        nonempty += bool(expected)
        if trial % 10 == 0:
            _assert_filtered_topk(col, ids, vecs, expected, where, where_document, k=5)
    assert nonempty > 100  # the generator exercises matching filters, not only empty ones


def _assert_filtered_topk(col, ids, vecs, expected, where, where_document, k):
    query = np.linspace(-1, 1, vecs.shape[1], dtype=np.float32)[None, :]
    res = col.query(query, n_results=k, where=where, where_document=where_document)
    index = {item_id: i for i, item_id in enumerate(ids)}
    rows = [index[i] for i in expected]
    if not rows:
        assert res["ids"] == [[]]
        return
    d = brute_force_distances(query, vecs[rows], "l2")[0]
    order = np.argsort(d, kind="stable")[:k]
    assert set(res["ids"][0]) <= set(expected)
    np.testing.assert_allclose(res["distances"][0], d[order], rtol=1e-5, atol=1e-5)
    assert res["ids"][0] == [expected[j] for j in order]  # random normal data: no ties


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("n_match", [1, 3, 20, 600])
def test_filtered_query_is_true_topk_among_matches(client, metric, n_match):
    """Also when only 1 item in 1,000 matches (the gathered path) and when most do (masked path)."""
    n, dim, k = 1000, 16, 10
    rng = np.random.default_rng(n_match)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    match = set(rng.choice(n, size=n_match, replace=False).tolist())
    ids = [f"p{i}" for i in range(n)]
    col = client.create_collection("needle", dim=dim, metric=metric)
    col.add(
        ids,
        vecs,
        metadatas=[{"hit": i in match, "g": i % 10} for i in range(n)],
        documents=[("needle " if i in match else "hay ") + str(i) for i in range(n)],
    )
    queries = rng.standard_normal((4, dim)).astype(np.float32)
    rows = sorted(match)
    oracle = brute_force_distances(queries, vecs[rows], metric)
    for kwargs in (
        {"where": {"hit": True}},
        {"where_document": {"$contains": "needle"}},
        {"where": {"hit": {"$ne": False}}, "where_document": {"$not_contains": "hay"}},
    ):
        res = col.query(queries, n_results=k, **kwargs)
        for qi in range(len(queries)):
            order = np.argsort(oracle[qi], kind="stable")[:k]
            assert res["ids"][qi] == [ids[rows[j]] for j in order]
            np.testing.assert_allclose(res["distances"][qi], oracle[qi][order], rtol=1e-4, atol=1e-4)
    # a filter that matches nothing returns empty rows
    assert col.query(queries, n_results=k, where={"g": 11})["ids"] == [[]] * 4


def test_filters_follow_writes(client):
    col = client.create_collection("w", dim=2)
    col.add(
        ["a", "b", "c"],
        [[1, 0], [0, 1], [1, 1]],
        metadatas=[{"t": 1}, {"t": 2}, {"t": [1, 2]}],
        documents=["apple pie", "banana", "cherry apple"],
    )
    assert col.get(where={"t": 1})["ids"] == ["a", "c"]
    col.update(["a"], metadatas=[{"t": 3}], documents=["plum"])
    assert col.get(where={"t": 1})["ids"] == ["c"]
    assert col.get(where={"t": 3})["ids"] == ["a"]
    assert col.get(where_document={"$contains": "apple"})["ids"] == ["c"]
    assert col.get(where_document={"$contains": "pl"})["ids"] == ["a", "c"]
    col.delete(ids=["c"])
    assert col.get(where={"t": {"$in": [1, 2]}})["ids"] == ["b"]
    assert col.get(where_document={"$contains": "apple"})["ids"] == []
    col.add(["c"], [[2, 2]], metadatas=[{"t": 1}], documents=["apple again"])
    assert col.get(where={"t": 1})["ids"] == ["c"]
    assert col.get(where_document={"$contains": "apple"})["ids"] == ["c"]


def test_document_filter_is_per_collection(client):
    a = client.create_collection("a", dim=2)
    b = client.create_collection("b", dim=2)
    a.add(["x"], [[1, 0]], documents=["shared words"])
    b.add(["x", "y"], [[1, 0], [0, 1]], documents=["shared words", "other"])
    assert a.get(where_document={"$contains": "shared"})["ids"] == ["x"]
    assert b.get(where_document={"$contains": "sh"})["ids"] == ["x"]
    assert a.get(where_document={"$not_contains": "zzz"})["ids"] == ["x"]
    client.delete_collection("b")
    assert a.get(where_document={"$contains": "shared"})["ids"] == ["x"]


def test_filters_after_many_rewrites():
    """Enough metadata rewrites that the columnar index compacts its stale entries (every 50,000)."""
    from m2m.storage.filters import evaluate_where
    from m2m.storage.metadata_index import MetadataIndex

    n, rounds = 2000, 30  # 60,000 writes
    index = MetadataIndex()
    metas: list = [None] * n
    checks = (
        {"r": rounds - 1},
        {"r": 0},
        {"mod": 3},
        {"mod": {"$ne": 3}},
        {"tags": "t2"},
        {"f": {"$gt": 1.5}},
        {"$or": [{"mod": {"$lt": 2}}, {"tags": {"$nin": ["t0", "t1"]}}]},
    )
    for r in range(rounds):
        for i in range(n):
            meta = {"r": r, "mod": (i + r) % 7, "f": ((i * r) % 4) / 2, "tags": [f"t{(i * r) % 5}"]}
            metas[i] = meta if (i + r) % 11 else None
            index.set(i, metas[i])
        if r in (0, 24, 25, rounds - 1):  # before and after the compaction at write 50,000
            for where in checks:
                got = np.flatnonzero(evaluate_where(where, index, n)).tolist()
                assert got == [i for i in range(n) if oracle_where(metas[i], where)], (r, where)


def test_number_comparisons_are_exact_across_int_and_float(client):
    """Python's exact int/float comparison: 2**53 + 1 != 2.0**53, and huge operands never overflow."""
    values = [2**53, 2**53 + 1, float(2**53), -(2**63), 2**63 - 1, 1e300, -0.0, 0.5, 5, -7, [2**53 + 1, 0.25]]
    col = client.create_collection("exact", dim=2)
    ids = [f"n{i}" for i in range(len(values))]
    metas = [{"v": v} for v in values]
    col.add(ids, np.ones((len(ids), 2), np.float32), metadatas=metas)
    operands = [
        2**53 + 1,
        float(2**53),
        2**53 - 1,
        10**30,
        -(10**30),
        2**63,
        2**63 - 1,
        -(2**63),
        1e300,
        10**400,
        float("inf"),
        float("-inf"),
        0,
        -0.0,
        0.5,
        4.5,
        -7.0,
        0.25,
    ]
    for operand in operands:
        for op in ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"):
            where = {"v": {op: [operand, 5] if op in ("$in", "$nin") else operand}}
            expected = [ids[i] for i in range(len(ids)) if oracle_where(metas[i], where)]
            assert col.get(where=where)["ids"] == expected, where


@pytest.mark.parametrize("first", ["delete", "get", "query"])
def test_first_document_filter_of_a_store(store_path, first):
    """The full-text index is built on first use; that first use may be inside a delete's transaction."""
    import m2m

    docs = ["hello world", "bye", "say hello", None, "HELLO"]
    with m2m.Client(store_path) as c:
        col = c.create_collection("fresh", dim=2)
        col.add([f"d{i}" for i in range(5)], np.eye(5, 2, dtype=np.float32) + 1, documents=docs)
        flt = {"$contains": "hello"}
        if first == "delete":
            assert col.delete(where_document=flt) == 2
            assert col.get()["ids"] == ["d1", "d3", "d4"]
        elif first == "get":
            assert col.get(where_document=flt)["ids"] == ["d0", "d2"]
        else:
            assert sorted(col.query([[1, 1]], n_results=5, where_document=flt)["ids"][0]) == ["d0", "d2"]
        col.add(["new"], [[0, 0]], documents=["hello again"])
        col.update(["d4"], documents=["hello lower"])
    with m2m.Client(store_path) as c:
        col = c.get_collection("fresh")
        expected = ["d4", "new"] if first == "delete" else ["d0", "d2", "d4", "new"]
        assert col.get(where_document={"$contains": "hello"})["ids"] == expected
        assert col.get(where_document={"$not_contains": "hello"})["ids"] == ["d1"]
