"""Stateful property test: M2M against a plain dict model, under random write sequences."""

from __future__ import annotations

import shutil
import tempfile

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import m2m
from conftest import brute_force_distances
from m2m.errors import IdAlreadyExistsError, ItemNotFoundError
from test_filters import oracle_where

DIM = 4
ID_POOL = [f"id{i}" for i in range(14)]

# Few distinct coordinates, so that exact ties and duplicate vectors happen.
coordinate = st.sampled_from([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 3.0])
vector = st.lists(coordinate, min_size=DIM, max_size=DIM)
scalar = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([-1.5, 0.0, 1.0, 2.5]),
    st.booleans(),
    st.sampled_from(["a", "b", "A", ""]),
)
metadata = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "g": st.integers(0, 3),
            "x": scalar,
            "tags": st.lists(st.sampled_from(["a", "b", "c"]), max_size=3),
        },
    ),
)
document = st.one_of(st.none(), st.text(alphabet="abAB \"'", max_size=8))
id_batch = st.lists(st.sampled_from(ID_POOL), min_size=1, max_size=5, unique=True)
where = st.one_of(
    st.builds(lambda v: {"g": v}, st.integers(0, 3)),
    st.builds(lambda v: {"g": {"$ne": v}}, st.integers(0, 3)),
    st.builds(lambda v: {"g": {"$in": v}}, st.lists(st.integers(0, 3), min_size=1, max_size=3)),
    st.builds(lambda v: {"x": {"$gte": v}}, st.sampled_from([-1, 0, 0.5, 2])),
    st.builds(lambda v: {"x": {"$nin": [v]}}, scalar),
    st.builds(lambda v: {"tags": v}, st.sampled_from(["a", "b", "c"])),
    st.builds(lambda a, b: {"$or": [{"g": a}, {"x": b}]}, st.integers(0, 3), scalar),
    st.builds(
        lambda a, b: {"$and": [{"g": {"$lte": a}}, {"tags": {"$ne": b}}]},
        st.integers(0, 3),
        st.sampled_from(["a", "b"]),
    ),
)


class StoreVersusModel(RuleBasedStateMachine):
    """Applies the same writes to M2M and to ``self.model``: id -> (vector, metadata, document)."""

    def __init__(self) -> None:
        super().__init__()
        self.path = tempfile.mkdtemp(prefix="m2m-model-")
        self.client: m2m.Client | None = None
        self.model: dict[str, tuple[np.ndarray, dict | None, str | None]] = {}

    @initialize(metric=st.sampled_from(["cosine", "ip", "l2"]))
    def open_store(self, metric: str) -> None:
        self.metric = metric
        self.client = m2m.Client(self.path)
        self.col = self.client.create_collection("model", dim=DIM, metric=metric)

    def teardown(self) -> None:
        if self.client is not None:
            self.client.close()
        shutil.rmtree(self.path, ignore_errors=True)

    # -- writes --------------------------------------------------------------------------------

    @rule(ids=id_batch, data=st.data(), with_meta=st.booleans(), with_docs=st.booleans())
    def add(self, ids, data, with_meta, with_docs) -> None:
        vecs = [data.draw(vector) for _ in ids]
        metas = [data.draw(metadata) for _ in ids] if with_meta else None
        docs = [data.draw(document) for _ in ids] if with_docs else None
        if any(i in self.model for i in ids):
            try:
                self.col.add(ids, vecs, metadatas=metas, documents=docs)
            except IdAlreadyExistsError:
                return
            raise AssertionError("add of an existing id did not raise")
        self.col.add(ids, vecs, metadatas=metas, documents=docs)
        for j, item_id in enumerate(ids):
            self.model[item_id] = (
                np.asarray(vecs[j], dtype=np.float32),
                metas[j] if metas is not None else None,
                docs[j] if docs is not None else None,
            )

    @rule(ids=id_batch, data=st.data(), with_meta=st.booleans(), with_docs=st.booleans())
    def upsert(self, ids, data, with_meta, with_docs) -> None:
        vecs = [data.draw(vector) for _ in ids]
        metas = [data.draw(metadata) for _ in ids] if with_meta else None
        docs = [data.draw(document) for _ in ids] if with_docs else None
        self.col.upsert(ids, vecs, metadatas=metas, documents=docs)
        for j, item_id in enumerate(ids):
            _, old_meta, old_doc = self.model.get(item_id, (None, None, None))
            self.model[item_id] = (
                np.asarray(vecs[j], dtype=np.float32),
                metas[j] if metas is not None else old_meta,
                docs[j] if docs is not None else old_doc,
            )

    @rule(ids=id_batch, data=st.data(), fields=st.sets(st.sampled_from(["vec", "meta", "doc"]), min_size=1))
    def update(self, ids, data, fields) -> None:
        vecs = [data.draw(vector) for _ in ids] if "vec" in fields else None
        metas = [data.draw(metadata) for _ in ids] if "meta" in fields else None
        docs = [data.draw(document) for _ in ids] if "doc" in fields else None
        if any(i not in self.model for i in ids):
            try:
                self.col.update(ids, embeddings=vecs, metadatas=metas, documents=docs)
            except ItemNotFoundError:
                return
            raise AssertionError("update of a missing id did not raise")
        self.col.update(ids, embeddings=vecs, metadatas=metas, documents=docs)
        for j, item_id in enumerate(ids):
            vec, meta, doc = self.model[item_id]
            self.model[item_id] = (
                np.asarray(vecs[j], dtype=np.float32) if vecs is not None else vec,
                metas[j] if metas is not None else meta,
                docs[j] if docs is not None else doc,
            )

    @rule(ids=id_batch)
    def delete_ids(self, ids) -> None:
        n = self.col.delete(ids=ids)
        assert n == sum(i in self.model for i in ids)
        for item_id in ids:
            self.model.pop(item_id, None)

    @rule(where=where)
    def delete_where(self, where) -> None:
        doomed = [i for i, (_, meta, _) in self.model.items() if oracle_where(meta, where)]
        assert self.col.delete(where=where) == len(doomed)
        for item_id in doomed:
            del self.model[item_id]

    @precondition(lambda self: self.client is not None)
    @rule()
    def reopen(self) -> None:
        """Close and reopen the folder: everything must come back from SQLite."""
        self.client.close()
        self.client = m2m.Client(self.path)
        self.col = self.client.get_collection("model")

    # -- reads ---------------------------------------------------------------------------------

    @rule(q=vector, k=st.integers(1, 8), flt=st.one_of(st.none(), where))
    def query(self, q, k, flt) -> None:
        items = [(i, v) for i, (v, meta, _) in self.model.items() if flt is None or oracle_where(meta, flt)]
        res = self.col.query([q], n_results=k, where=flt)
        got_ids, got_d = res["ids"][0], np.asarray(res["distances"][0], dtype=np.float64)
        assert len(got_ids) == min(k, len(items))
        assert len(set(got_ids)) == len(got_ids)
        if not items:
            return
        ids = [i for i, _ in items]
        d = brute_force_distances(
            np.asarray([q], dtype=np.float32), np.stack([v for _, v in items]), self.metric
        )[0]
        tol = 1e-4 * max(1.0, float(np.abs(d).max()))
        truth = np.sort(d)[: len(got_ids)]
        np.testing.assert_allclose(got_d, truth, atol=tol, rtol=0)
        own = {i: d[j] for j, i in enumerate(ids)}
        for item_id, dist in zip(got_ids, got_d, strict=True):
            assert abs(own[item_id] - dist) <= tol, (item_id, own[item_id], dist)
        # ids strictly better than the k-th distance must be there (ties may go either way)
        kth = truth[-1]
        assert {i for i in ids if own[i] < kth - tol} <= set(got_ids)

    @rule(
        op=st.sampled_from(["$contains", "$not_contains"]),
        needle=st.sampled_from(
            ["a", "B", "ab", "aB", '"', "'", " a", "aaa", 'b"'],
        ),
        flt=st.one_of(st.none(), where),
    )
    def get_where_document(self, op, needle, flt) -> None:
        def doc_ok(doc):
            return doc is not None and ((needle in doc) == (op == "$contains"))

        want = {
            i
            for i, (_, meta, doc) in self.model.items()
            if doc_ok(doc) and (flt is None or oracle_where(meta, flt))
        }
        got = self.col.get(where=flt, where_document={op: needle}, include=["documents"])
        assert set(got["ids"]) == want
        assert all(doc_ok(doc) for doc in got["documents"])

    @invariant()
    def same_contents(self) -> None:
        if self.client is None:
            return
        assert self.col.count() == len(self.model)
        got = self.col.get(include=["embeddings", "metadatas", "documents"])
        assert len(set(got["ids"])) == len(got["ids"])
        assert set(got["ids"]) == set(self.model)
        for item_id, emb, meta, doc in zip(
            got["ids"], got["embeddings"], got["metadatas"], got["documents"], strict=True
        ):
            vec, model_meta, model_doc = self.model[item_id]
            np.testing.assert_array_equal(emb, vec)
            assert meta == model_meta
            assert doc == model_doc


StoreVersusModel.TestCase.settings = settings(
    max_examples=80,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_store_matches_model = StoreVersusModel.TestCase
