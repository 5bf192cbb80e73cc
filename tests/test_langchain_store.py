"""M2M's LangChain vector store against brute-force NumPy and LangChain's own reference code."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("langchain_core")

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores.utils import maximal_marginal_relevance

import m2m
from m2m.errors import CapacityError, InvalidArgumentError, InvalidMetadataError
from m2m.integrations._mmr import mmr_select
from m2m.integrations.langchain import JSON_KEY, M2MVectorStore

DIM = 16


class HashEmbeddings(Embeddings):
    """Deterministic unit vectors from a hash of the text (so tests know every vector)."""

    def __init__(self, dim: int = DIM, unit: bool = True) -> None:
        self.dim, self.unit = dim, unit

    def vector(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(self.dim)
        return v / np.linalg.norm(v) if self.unit else v

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.vector(t).tolist() for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.vector(text).tolist()


TEXTS = [f"passage {i} about {['cats', 'dogs', 'birds', 'fish'][i % 4]}" for i in range(60)]
METAS = [{"i": i, "animal": ["cats", "dogs", "birds", "fish"][i % 4], "even": i % 2 == 0} for i in range(60)]


def _f32(texts: list[str], emb: HashEmbeddings) -> np.ndarray:
    return np.asarray(emb.embed_documents(texts), dtype=np.float32).astype(np.float64)


def brute_force(query: str, k: int, metric: str, keep=lambda i: True, emb: HashEmbeddings | None = None):
    """Exact (index, distance) top-k with M2M's distance definitions, in float64 over float32 inputs."""
    emb = emb or HashEmbeddings()
    x = _f32(TEXTS, emb)
    q = np.asarray(emb.embed_query(query), dtype=np.float32).astype(np.float64)
    if metric == "cosine":
        d = 1 - (x @ q) / (np.linalg.norm(x, axis=1) * np.linalg.norm(q))
    elif metric == "ip":
        d = -(x @ q)
    else:
        d = ((x - q) ** 2).sum(axis=1)
    idx = [i for i in np.argsort(d, kind="stable") if keep(i)][:k]
    return idx, d[idx]


@pytest.fixture
def store(tmp_path: Path):
    s = M2MVectorStore(embedding=HashEmbeddings(), path=tmp_path / "db")
    s.add_texts(TEXTS, METAS, ids=[f"id{i}" for i in range(len(TEXTS))])
    yield s
    s.close()


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_scores_and_relevance_match_brute_force(tmp_path: Path, metric: str) -> None:
    s = M2MVectorStore(embedding=HashEmbeddings(), path=tmp_path / "db", metric=metric)
    s.add_texts(TEXTS, METAS, ids=[f"id{i}" for i in range(len(TEXTS))])
    for query in ("cats", "a question about fish", "zzz"):
        idx, dist = brute_force(query, 7, metric)
        got = s.similarity_search_with_score(query, k=7)
        assert [d.id for d, _ in got] == [f"id{i}" for i in idx]
        np.testing.assert_allclose([score for _, score in got], dist, atol=1e-5)
        # Relevance: the cosine similarity clamped at 0, whatever the metric (unit vectors).
        x = _f32(TEXTS, HashEmbeddings())
        q = np.asarray(HashEmbeddings().embed_query(query), dtype=np.float32).astype(np.float64)
        cos = np.clip(x[idx] @ q, 0.0, 1.0)
        rel = s.similarity_search_with_relevance_scores(query, k=7)
        assert [d.id for d, _ in rel] == [f"id{i}" for i in idx]
        np.testing.assert_allclose([r for _, r in rel], cos, atol=1e-5)
        assert all(0.0 <= r <= 1.0 for _, r in rel)
    s.close()


def test_documents_round_trip_and_filters(store: M2MVectorStore) -> None:
    docs = store.similarity_search("dogs", k=60)
    assert len(docs) == 60
    by_id = {d.id: d for d in docs}
    for i in range(60):
        assert by_id[f"id{i}"] == Document(id=f"id{i}", page_content=TEXTS[i], metadata=METAS[i])
    where = {"$and": [{"animal": {"$in": ["cats", "fish"]}}, {"i": {"$gte": 20}}]}
    got = store.similarity_search("birds", k=10, filter=where)
    idx, _ = brute_force(
        "birds", 10, "cosine", keep=lambda i: METAS[i]["animal"] in ("cats", "fish") and i >= 20
    )
    assert [d.id for d in got] == [f"id{i}" for i in idx]
    by_vec = store.similarity_search_by_vector(HashEmbeddings().embed_query("birds"), k=10, filter=where)
    assert by_vec == got
    assert store.similarity_search("x", k=5, filter={"animal": "unicorn"}) == []


def test_metadata_m2m_cannot_store_round_trips_exactly(tmp_path: Path) -> None:
    s = M2MVectorStore(embedding=HashEmbeddings(), path=tmp_path / "db")
    meta = {
        "none": None,
        "nested": {"a": [1, {"b": None}], "c": "x"},
        "lists": [[1, 2], [3]],
        "mixed": [1, None],
        "$dollar": 1,
        "plain": "kept",
        "n": np.int64(7),
        "empty": {},
    }
    original = dict(meta)
    (doc_id,) = s.add_documents([Document(page_content="hello", metadata=meta)])
    assert meta == original  # input not mutated
    (got,) = s.get_by_ids([doc_id])
    assert got.metadata == {**original, "n": 7}
    stored = s.collection.get(ids=[doc_id], include=["metadatas"])["metadatas"][0]
    assert stored["plain"] == "kept" and stored["n"] == 7 and JSON_KEY in stored
    # Natively stored keys stay filterable.
    assert [d.id for d in s.similarity_search("hello", k=1, filter={"plain": "kept"})] == [doc_id]
    with pytest.raises(InvalidMetadataError):
        s.add_texts(["x"], [{JSON_KEY: "mine"}])
    s.close()


def test_upsert_overwrites_and_delete(store: M2MVectorStore) -> None:
    store.add_texts(["replaced text"], [{"i": -1}], ids=["id3"])
    assert store.collection.count() == 60
    (doc,) = store.get_by_ids(["id3"])
    assert doc == Document(id="id3", page_content="replaced text", metadata={"i": -1})
    assert store.get_by_ids(["nope", "id5", "id5"]) == [
        Document(id="id5", page_content=TEXTS[5], metadata=METAS[5])
    ]
    store.delete(["id0", "id1", "missing"])
    assert store.collection.count() == 58
    store.delete(filter={"animal": "birds"})
    assert store.collection.count() == 58 - 15 + (1 if METAS[1]["animal"] == "birds" else 0)
    assert all(d.metadata.get("animal") != "birds" for d in store.similarity_search("birds", k=60))
    store.delete()
    assert store.collection.count() == 0
    assert store.similarity_search("x", k=3) == []


def test_generated_ids_and_document_ids(tmp_path: Path) -> None:
    s = M2MVectorStore(embedding=HashEmbeddings(), path=tmp_path / "db")
    ids = s.add_documents([Document(page_content="a", id="mine"), Document(page_content="b")])
    assert ids[0] == "mine" and len(ids[1]) == 36 and ids[1] != "mine"
    # ids= given explicitly wins over Document.id
    assert s.add_documents([Document(page_content="c", id="ignored")], ids=["explicit"]) == ["explicit"]
    assert {d.id for d in s.get_by_ids(["mine", ids[1], "explicit", "ignored"])} == {
        "mine",
        ids[1],
        "explicit",
    }
    s.close()


def test_mmr_matches_langchain_reference(store: M2MVectorStore) -> None:
    emb = HashEmbeddings()
    x = _f32(TEXTS, emb)
    for query, k, fetch_k, lam in (
        ("cats", 5, 20, 0.5),
        ("dogs and birds", 8, 30, 0.2),
        ("fish", 4, 10, 1.0),
    ):
        idx, _ = brute_force(query, fetch_k, "cosine")
        q = np.asarray(emb.embed_query(query), dtype=np.float32).astype(np.float64)
        ref = maximal_marginal_relevance(q, x[idx].tolist(), lambda_mult=lam, k=k)
        want = [f"id{idx[j]}" for j in ref]
        got = store.max_marginal_relevance_search(query, k=k, fetch_k=fetch_k, lambda_mult=lam)
        assert [d.id for d in got] == want
        retr = store.as_retriever(
            search_type="mmr", search_kwargs={"k": k, "fetch_k": fetch_k, "lambda_mult": lam}
        )
        assert [d.id for d in retr.invoke(query)] == want
    # lambda 1 is plain relevance order
    assert [d.id for d in store.max_marginal_relevance_search("cats", k=6, lambda_mult=1.0)] == [
        d.id for d in store.similarity_search("cats", k=6)
    ]


def test_mmr_select_against_reference_random() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        cands = rng.standard_normal((25, 6))
        q = rng.standard_normal(6)
        lam = float(rng.uniform())
        assert mmr_select(q, cands, 7, lam) == maximal_marginal_relevance(
            q, cands.tolist(), lambda_mult=lam, k=7
        )


def test_retrievers_all_search_types(store: M2MVectorStore) -> None:
    sim = store.as_retriever(search_kwargs={"k": 3}).invoke("cats")
    assert [d.id for d in sim] == [d.id for d in store.similarity_search("cats", k=3)]
    filtered = store.as_retriever(search_kwargs={"k": 3, "filter": {"even": True}}).invoke("cats")
    assert all(d.metadata["even"] for d in filtered) and len(filtered) == 3
    emb = HashEmbeddings()
    x = _f32(TEXTS, emb)
    q = np.asarray(emb.embed_query("cats"), dtype=np.float32).astype(np.float64)
    cos = x @ q
    threshold = float(np.sort(cos)[-5]) - 1e-6  # exactly 5 documents pass
    retr = store.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"k": 20, "score_threshold": threshold}
    )
    got = retr.invoke("cats")
    want = [f"id{i}" for i in np.argsort(-cos, kind="stable")[:5]]
    assert [d.id for d in got] == want


def test_async_variants_agree_with_sync(store: M2MVectorStore) -> None:
    async def run():
        a = await store.asimilarity_search_with_relevance_scores("birds", k=4)
        b = await store.amax_marginal_relevance_search("birds", k=4, fetch_k=12)
        ids = await store.aadd_texts(["async text"], [{"i": 100}])
        c = await store.aget_by_ids(ids)
        await store.adelete(ids)
        return a, b, c, ids

    a, b, c, ids = asyncio.run(run())
    assert a == store.similarity_search_with_relevance_scores("birds", k=4)
    assert b == store.max_marginal_relevance_search("birds", k=4, fetch_k=12)
    assert c == [Document(id=ids[0], page_content="async text", metadata={"i": 100})]
    assert store.get_by_ids(ids) == []


def test_from_texts_persists_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "db"
    s = M2MVectorStore.from_texts(TEXTS[:10], HashEmbeddings(), METAS[:10], path=path, collection_name="kb")
    before = s.similarity_search_with_score("cats", k=4)
    s.close()
    reopened = M2MVectorStore(embedding=HashEmbeddings(), path=path, collection_name="kb")
    assert reopened.similarity_search_with_score("cats", k=4) == before
    with pytest.raises(InvalidArgumentError):
        M2MVectorStore(embedding=HashEmbeddings(), path=path, collection_name="kb", metric="l2")
    reopened.close()
    docs = [
        Document(page_content=t, metadata=m, id=f"d{i}")
        for i, (t, m) in enumerate(zip(TEXTS[:5], METAS[:5], strict=True))
    ]
    s2 = M2MVectorStore.from_documents(docs, HashEmbeddings(), path=tmp_path / "db2")
    assert sorted(d.id for d in s2.get_by_ids([f"d{i}" for i in range(5)])) == [f"d{i}" for i in range(5)]
    s2.close()


def test_existing_collection_and_ephemeral_store(tmp_path: Path) -> None:
    client = m2m.Client(tmp_path / "db")
    col = client.create_collection("c", DIM, "ip")
    s = M2MVectorStore(embedding=HashEmbeddings(), collection=col)
    s.add_texts(TEXTS[:5])
    assert col.count() == 5 and s.metric is m2m.Metric.IP
    client.close()
    eph = M2MVectorStore(embedding=HashEmbeddings())
    folder = Path(eph._tmpdir)
    eph.add_texts(["x"])
    assert folder.exists()
    eph.close()
    assert not folder.exists()


def test_readme_constructor_form(tmp_path: Path) -> None:
    s = M2MVectorStore(
        embedding_function=HashEmbeddings(), splat_capacity=3, enable_vulkan=True, path=tmp_path / "db"
    )
    assert s.device_hint == "vulkan"
    s.add_texts(["a", "b"], ids=["a", "b"])
    with pytest.raises(CapacityError):
        s.add_texts(["c", "d"], ids=["c", "d"])
    assert s.collection.count() == 2  # refused whole
    s.add_texts(["c", "a2"], ids=["c", "a"])  # one new, one overwrite: exactly at capacity
    assert s.collection.count() == 3
    with pytest.raises(CapacityError):
        s.add_texts(["e"])
    s.close()
    again = M2MVectorStore(embedding=HashEmbeddings(), path=tmp_path / "db")
    assert again.splat_capacity == 3  # kept in the collection's metadata
    with pytest.raises(CapacityError):
        again.add_texts(["e"])
    again.close()
    with pytest.raises(InvalidArgumentError):
        M2MVectorStore()
    with pytest.raises(InvalidArgumentError):
        M2MVectorStore(embedding_function=HashEmbeddings(), splat_capacity=0)


def test_importing_m2m_does_not_import_frameworks() -> None:
    code = (
        "import sys, m2m, m2m.integrations, m2m.integrations._mmr; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('langchain_core', 'langchain', 'llama_index')]; "
        "assert not bad, bad; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
