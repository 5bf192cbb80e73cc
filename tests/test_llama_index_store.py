"""M2M's LlamaIndex vector store against brute force and LlamaIndex's own reference filter code."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import Document, NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from llama_index.core.vector_stores.utils import build_metadata_filter_fn

from m2m.errors import InvalidArgumentError, InvalidFilterError
from m2m.integrations.llama_index import M2MEmbedding, M2MVectorStore, plan_filters

F, OP, COND = MetadataFilter, FilterOperator, FilterCondition
N, DIM = 300, 8
WORDS = ["alpha", "beta", "gamma", "delta", "Omega", "sigma", "kappa", "zeta"]


def make_nodes(seed: int = 0) -> list[TextNode]:
    rng = np.random.default_rng(seed)
    nodes = []
    for i in range(N):
        meta = {
            "genre": ["a", "b", "c", "d"][int(rng.integers(4))],
            "year": int(rng.integers(1990, 2021)),
            "score": float(rng.uniform()),
            "tags": sorted({f"t{int(t)}" for t in rng.integers(1, 6, size=int(rng.integers(0, 4)))}),
            "title": " ".join(rng.choice(WORDS, size=2)),
        }
        note = int(rng.integers(4))
        if note == 1:
            meta["note"] = None
        elif note == 2:
            meta["note"] = ""
        elif note == 3:
            meta["note"] = f"note {i}"
        if i % 7 == 0:
            meta["flag"] = bool(i % 2)
        node = TextNode(
            id_=f"n{i}",
            text=f"text of node {i} {meta['title']}",
            metadata=meta,
            embedding=rng.standard_normal(DIM).tolist(),
        )
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=f"doc{i % 10}")
        nodes.append(node)
    return nodes


NODES = make_nodes()
EMB = np.asarray([n.embedding for n in NODES], dtype=np.float32).astype(np.float64)


def reference_match(filters, meta: dict) -> bool:
    """LlamaIndex's own filter function for single filters, combined by AND / OR / NOT for nesting."""
    if isinstance(filters, MetadataFilter):
        return build_metadata_filter_fn(lambda _: meta, MetadataFilters(filters=[filters]))("x")
    hits = [reference_match(sub, meta) for sub in filters.filters]
    if filters.condition == COND.OR:
        return any(hits)
    if filters.condition == COND.NOT:
        return not any(hits)
    return all(hits)


def brute_top_k(query: np.ndarray, k: int, keep: np.ndarray) -> tuple[list[str], np.ndarray]:
    q = query.astype(np.float32).astype(np.float64)
    cos = EMB @ q / (np.linalg.norm(EMB, axis=1) * np.linalg.norm(q))
    order = [i for i in np.argsort(-cos, kind="stable") if keep[i]][:k]
    return [f"n{i}" for i in order], cos[order]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = M2MVectorStore(path=tmp_path_factory.mktemp("li") / "db")
    s.add(NODES)
    yield s
    s.close()


CASES = {
    "eq_str": F(key="genre", value="b"),
    "eq_int": F(key="year", value=2000),
    "ne": F(key="genre", value="a", operator=OP.NE),
    "gt": F(key="year", value=2005, operator=OP.GT),
    "gte_float": F(key="score", value=0.5, operator=OP.GTE),
    "lt": F(key="year", value=1995, operator=OP.LT),
    "lte_float": F(key="score", value=0.25, operator=OP.LTE),
    "gt_string": F(key="title", value="kappa", operator=OP.GT),
    "in": F(key="genre", value=["a", "c"], operator=OP.IN),
    "in_int": F(key="year", value=[1990, 1991, 2020], operator=OP.IN),
    "nin": F(key="genre", value=["a", "c"], operator=OP.NIN),
    "any": F(key="tags", value=["t1", "t2"], operator=OP.ANY),
    "all": F(key="tags", value=["t1", "t2"], operator=OP.ALL),
    "contains": F(key="tags", value="t3", operator=OP.CONTAINS),
    "text_match": F(key="title", value="ga", operator=OP.TEXT_MATCH),
    "text_match_case": F(key="title", value="Om", operator=OP.TEXT_MATCH),
    "text_match_insensitive": F(key="title", value="OMEGA", operator=OP.TEXT_MATCH_INSENSITIVE),
    "is_empty": F(key="note", value=None, operator=OP.IS_EMPTY),
    "is_empty_list": F(key="tags", value=None, operator=OP.IS_EMPTY),
    "and": MetadataFilters(filters=[F(key="genre", value="b"), F(key="year", value=2000, operator=OP.GTE)]),
    "or_pushdown": MetadataFilters(
        filters=[F(key="genre", value="a"), F(key="tags", value="t5", operator=OP.CONTAINS)],
        condition=COND.OR,
    ),
    "or_python": MetadataFilters(
        filters=[F(key="genre", value="a"), F(key="title", value="zeta", operator=OP.TEXT_MATCH)],
        condition=COND.OR,
    ),
    "not": MetadataFilters(filters=[F(key="genre", value=["a", "b"], operator=OP.IN)], condition=COND.NOT),
    "nested": MetadataFilters(
        filters=[
            F(key="year", value=2000, operator=OP.GT),
            MetadataFilters(
                filters=[
                    F(key="tags", value="t1", operator=OP.CONTAINS),
                    F(key="note", value=None, operator=OP.IS_EMPTY),
                ],
                condition=COND.OR,
            ),
            MetadataFilters(filters=[F(key="genre", value="d")], condition=COND.NOT),
        ]
    ),
    "rare_python": F(key="note", value="note 13", operator=OP.TEXT_MATCH),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_filters_match_reference_and_true_top_k(store: M2MVectorStore, name: str) -> None:
    f = CASES[name]
    filters = f if isinstance(f, MetadataFilters) else MetadataFilters(filters=[f])
    keep = np.asarray([reference_match(filters, n.metadata) for n in NODES])
    assert 0 < keep.sum() < N or name == "rare_python"
    got_ids = {n.node_id for n in store.get_nodes(filters=filters)}
    assert got_ids == {f"n{i}" for i in np.flatnonzero(keep)}
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    for _ in range(3):
        q = rng.standard_normal(DIM)
        want_ids, want_sim = brute_top_k(q, 10, keep)
        res = store.query(VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=10, filters=filters))
        assert res.ids == want_ids
        np.testing.assert_allclose(res.similarities, want_sim, atol=1e-5)
        assert [n.node_id for n in res.nodes] == want_ids


def test_documented_differences_from_reference(store: M2MVectorStore) -> None:
    """Where M2M's where semantics differ from SimpleVectorStore's, the documented behaviour holds."""
    # NE / NIN need the field to be present (SimpleVectorStore also matches missing fields).
    ne = MetadataFilters(filters=[F(key="note", value="note 3", operator=OP.NE)])
    want = {n.node_id for n in NODES if n.metadata.get("note") is not None and n.metadata["note"] != "note 3"}
    assert {n.node_id for n in store.get_nodes(filters=ne)} == want
    # EQ on a list-valued field matches when the list holds the value.
    eq = MetadataFilters(filters=[F(key="tags", value="t2")])
    assert {n.node_id for n in store.get_nodes(filters=eq)} == {
        n.node_id for n in NODES if "t2" in n.metadata["tags"]
    }
    # Booleans equal only booleans: 1 does not match True.
    one = MetadataFilters(filters=[F(key="flag", value=1)])
    assert store.get_nodes(filters=one) == []


def test_plan_splits_pushdown_from_python() -> None:
    where, pred = plan_filters(CASES["and"])
    assert pred is None and where == {"$and": [{"genre": {"$eq": "b"}}, {"year": {"$gte": 2000}}]}
    where, pred = plan_filters(
        MetadataFilters(
            filters=[F(key="genre", value="b"), F(key="title", value="x", operator=OP.TEXT_MATCH)]
        )
    )
    assert where == {"genre": {"$eq": "b"}} and pred is not None
    where, pred = plan_filters(CASES["not"])
    assert where is None and pred is not None
    with pytest.raises(InvalidFilterError):
        plan_filters(MetadataFilters(filters=[F(key="genre", value="a", operator=OP.IN)]))
    with pytest.raises(InvalidFilterError):
        plan_filters(MetadataFilters(filters=[F(key="genre", value=None)]))


def test_ids_doc_ids_and_combined(store: M2MVectorStore) -> None:
    q = np.random.default_rng(5).standard_normal(DIM)
    node_ids = [f"n{i}" for i in range(0, N, 3)]
    keep = np.zeros(N, bool)
    keep[::3] = True
    res = store.query(VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=5, node_ids=node_ids))
    assert res.ids == brute_top_k(q, 5, keep)[0]
    keep = np.asarray([n.ref_doc_id in ("doc2", "doc7") and n.metadata["genre"] != "a" for n in NODES])
    res = store.query(
        VectorStoreQuery(
            query_embedding=q.tolist(),
            similarity_top_k=8,
            doc_ids=["doc2", "doc7"],
            filters=MetadataFilters(filters=[F(key="genre", value="a", operator=OP.NE)]),
        )
    )
    assert res.ids == brute_top_k(q, 8, keep)[0]


def test_nodes_round_trip(store: M2MVectorStore) -> None:
    got = store.get_nodes(node_ids=["n42", "n7"])
    assert [n.node_id for n in got] == ["n42", "n7"]
    for node in got:
        original = NODES[int(node.node_id[1:])]
        expected = original.model_dump()
        expected["embedding"] = np.asarray(original.embedding, dtype=np.float32).tolist()
        assert node.model_dump() == expected
        assert node.metadata == original.metadata  # None values and all
        assert node.ref_doc_id == original.ref_doc_id


def _mmr_reference(q: np.ndarray, cands: np.ndarray, k: int, lam: float) -> list[int]:
    """Textbook MMR: lam * cos(q, d) - (1 - lam) * max over selected cos(d, s)."""
    unit = cands / np.linalg.norm(cands, axis=1, keepdims=True)
    rel = unit @ (q / np.linalg.norm(q))
    chosen: list[int] = []
    while len(chosen) < min(k, len(cands)):
        best, best_score = -1, -np.inf
        for i in range(len(cands)):
            if i in chosen:
                continue
            penalty = max((float(unit[i] @ unit[j]) for j in chosen), default=0.0)
            score = rel[i] if not chosen else lam * rel[i] - (1 - lam) * penalty
            if score > best_score:
                best, best_score = i, score
        chosen.append(best)
    return chosen


def test_mmr_mode(store: M2MVectorStore) -> None:
    q = np.random.default_rng(11).standard_normal(DIM)
    keep = np.ones(N, bool)
    for lam in (0.0, 0.3, 0.7):
        cand_ids, _ = brute_top_k(q, 20, keep)
        cands = EMB[[int(i[1:]) for i in cand_ids]]
        want = [cand_ids[j] for j in _mmr_reference(q, cands, 5, lam)]
        res = store.query(
            VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=5, mode=VectorStoreQueryMode.MMR),
            mmr_threshold=lam,
            mmr_prefetch_k=20,
        )
        assert res.ids == want
    res = store.query(
        VectorStoreQuery(
            query_embedding=q.tolist(), similarity_top_k=5, mode=VectorStoreQueryMode.MMR, mmr_threshold=1.0
        )
    )
    assert res.ids == brute_top_k(q, 5, keep)[0]


def test_text_and_hybrid_modes(store: M2MVectorStore) -> None:
    q = np.random.default_rng(12).standard_normal(DIM)
    text = store.query(
        VectorStoreQuery(query_str="zeta", similarity_top_k=400, mode=VectorStoreQueryMode.TEXT_SEARCH)
    )
    assert set(text.ids) == {n.node_id for n in NODES if "zeta" in n.metadata["title"].split()}
    assert text.similarities == sorted(text.similarities, reverse=True)
    k = 10
    vec = store.query(VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=k))
    txt = store.query(
        VectorStoreQuery(query_str="zeta", similarity_top_k=k, mode=VectorStoreQueryMode.TEXT_SEARCH)
    )
    for alpha in (0.0, 0.25, 0.5, 1.0):
        scores: dict[str, float] = {}
        for weight, ids in ((alpha, vec.ids), (1 - alpha, txt.ids)):
            for rank, i in enumerate(ids, start=1):
                scores[i] = scores.get(i, 0.0) + weight / (60 + rank)
        res = store.query(
            VectorStoreQuery(
                query_embedding=q.tolist(),
                query_str="zeta",
                similarity_top_k=k,
                mode=VectorStoreQueryMode.HYBRID,
                alpha=alpha,
            )
        )
        np.testing.assert_allclose(res.similarities, sorted(scores.values(), reverse=True)[:k])
        assert all(abs(scores[i] - s) < 1e-12 for i, s in zip(res.ids, res.similarities, strict=True))
    res1 = store.query(
        VectorStoreQuery(
            query_embedding=q.tolist(),
            query_str="zeta",
            similarity_top_k=k,
            mode=VectorStoreQueryMode.HYBRID,
            alpha=1.0,
        )
    )
    assert res1.ids == vec.ids
    with pytest.raises(InvalidArgumentError):
        store.query(VectorStoreQuery(query_embedding=q.tolist(), mode=VectorStoreQueryMode.SVM))


def test_deletes_clear_and_async(tmp_path: Path) -> None:
    s = M2MVectorStore(path=tmp_path / "db")
    s.add(NODES[:50])
    s.delete("doc3")
    left = {n.node_id for n in s.get_nodes()}
    assert left == {f"n{i}" for i in range(50) if i % 10 != 3}
    s.delete_nodes(
        node_ids=["n0", "n1"],
        filters=MetadataFilters(filters=[F(key="genre", value=NODES[0].metadata["genre"])]),
    )
    assert "n0" not in {n.node_id for n in s.get_nodes()}
    assert ("n1" in {n.node_id for n in s.get_nodes()}) == (
        NODES[1].metadata["genre"] != NODES[0].metadata["genre"]
    )
    text_filter = MetadataFilters(filters=[F(key="title", value="alpha", operator=OP.TEXT_MATCH)])
    s.delete_nodes(filters=text_filter)
    assert all("alpha" not in n.metadata["title"] for n in s.get_nodes())
    expected = {n.node_id for n in s.get_nodes()} | {f"n{i}" for i in range(50, 60)}
    expected = {i for i in expected if int(i[1:]) % 10 != 5} - {"n52"}  # adelete("doc5"), then n52
    q = VectorStoreQuery(query_embedding=NODES[5].embedding, similarity_top_k=3)

    async def run():
        await s.async_add(NODES[50:60])
        r = await s.aquery(q)
        sync = s.query(q)
        got = await s.aget_nodes(node_ids=["n55"])
        await s.adelete("doc5")
        await s.adelete_nodes(node_ids=["n52"])
        after = {n.node_id for n in await s.aget_nodes()}
        await s.aclear()
        return r, sync, got, after

    r, sync, got, after = asyncio.run(run())
    assert r.ids == sync.ids and len(r.ids) == 3
    assert [n.node_id for n in got] == ["n55"]
    assert after == expected
    assert s.get_nodes() == [] and s.collection.count() == 0
    s.close()


def test_persistence_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "db"
    s = M2MVectorStore(path=path, collection_name="kb", metric="cosine")
    s.add(NODES[:100])
    q = VectorStoreQuery(query_embedding=NODES[3].embedding, similarity_top_k=5, filters=CASES["nested"])
    before = s.query(q)
    s.close()
    again = M2MVectorStore(path=path, collection_name="kb")
    after = again.query(q)
    assert after.ids == before.ids and after.similarities == before.similarities
    assert [n.model_dump() for n in after.nodes] == [n.model_dump() for n in before.nodes]
    with pytest.raises(InvalidArgumentError):
        M2MVectorStore(path=path, collection_name="kb", metric="l2")
    again.close()


class BagOfWords(BaseEmbedding):
    """Deterministic hashed bag-of-words vectors: texts sharing words are close."""

    dim: int = 64

    @classmethod
    def class_name(cls) -> str:
        return "BagOfWords"

    def _vec(self, text: str) -> list[float]:
        v = np.zeros(self.dim)
        for word in "".join(c.lower() if c.isalnum() else " " for c in text).split():
            h = hashlib.sha256(word.encode()).digest()
            v[int.from_bytes(h[:4], "little") % self.dim] += 1.0
        n = np.linalg.norm(v)
        return (v / n if n else v).tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vec(text)

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vec(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vec(query)


def test_vector_store_index_end_to_end(tmp_path: Path) -> None:
    docs = [
        Document(text="The banana is a long yellow fruit.", id_="fruit", metadata={"topic": "food"}),
        Document(
            text="Penguins are flightless birds of the south.", id_="birds", metadata={"topic": "animals"}
        ),
        Document(text="Rust is a systems programming language.", id_="code", metadata={"topic": "tech"}),
    ]
    store = M2MVectorStore(path=tmp_path / "db")
    index = VectorStoreIndex.from_documents(
        docs,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=BagOfWords(),
        transformations=[SentenceSplitter(chunk_size=64, chunk_overlap=0, tokenizer=str.split)],
    )
    retriever = index.as_retriever(similarity_top_k=1)
    (hit,) = retriever.retrieve("which fruit is yellow")
    assert hit.node.ref_doc_id == "fruit" and "banana" in hit.node.get_content()
    (hit,) = retriever.retrieve("flightless birds")
    assert hit.node.ref_doc_id == "birds" and hit.node.metadata == {"topic": "animals"}
    filtered = index.as_retriever(
        similarity_top_k=3, filters=MetadataFilters(filters=[F(key="topic", value="tech")])
    ).retrieve("yellow fruit")
    assert [h.node.ref_doc_id for h in filtered] == ["code"]
    text = index.as_retriever(similarity_top_k=1, vector_store_query_mode="text_search").retrieve(
        "programming"
    )
    assert text[0].node.ref_doc_id == "code"
    index.delete_ref_doc("fruit")
    assert all(h.node.ref_doc_id != "fruit" for h in retriever.retrieve("which fruit is yellow"))
    store.close()


def test_m2m_embedding_adapter() -> None:
    def fn(texts: list[str]) -> np.ndarray:
        return np.asarray([[len(t), 1.0] for t in texts], dtype=np.float32)

    emb = M2MEmbedding(fn)
    assert emb.get_text_embedding("abc") == [3.0, 1.0]
    assert emb.get_query_embedding("hello") == [5.0, 1.0]
    assert emb.get_text_embedding_batch(["a", "bb"]) == [[1.0, 1.0], [2.0, 1.0]]
