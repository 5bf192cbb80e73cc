"""M2M demo: embed a small WordNet corpus offline, store it, and search it by meaning.

    python examples/demo.py [--path ./m2m_data] [--limit N]

The first run embeds the corpus (data/wordnet-glosses) with the offline all-MiniLM-L6-v2
model batch by batch and stores each batch durably; a second run finds the items already
stored and only runs the queries. Every time printed is measured in this run.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS_DIR = ROOT / "data" / "wordnet-glosses"
COLLECTION = "wordnet-glosses"

# The demo's questions (data/wordnet-glosses/make_corpus.py reads this list too).
DEMO_QUERIES = (
    "a large body of water",
    "a feeling of great happiness",
    "a tool for cutting wood",
    "a small domesticated animal that purrs",
    "the study of stars",
)


def load_corpus(limit: int | None) -> list[str]:
    """The corpus lines, in file order, at most ``limit`` of them."""
    plain, packed = CORPUS_DIR / "glosses.txt", CORPUS_DIR / "glosses.txt.gz"
    if plain.exists():
        text = plain.read_text(encoding="utf-8")
    else:
        with gzip.open(packed, "rt", encoding="utf-8") as f:
            text = f.read()
    lines = [line for line in text.split("\n") if line]
    return lines if limit is None else lines[:limit]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--path", default="./m2m_data", help="data folder (created if missing)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N corpus lines")
    parser.add_argument("--batch-size", type=int, default=256, help="texts embedded and stored per batch")
    parser.add_argument("--top", type=int, default=5, help="hits shown per query")
    parser.add_argument("--query", action="append", help="a query text (repeatable); default: five examples")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.batch_size < 1 or args.top < 1:
        parser.error("--batch-size and --top must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # keep only the demo's own progress bar
    sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing
    from tqdm import tqdm

    import m2m
    from m2m.embeddings import default_embedding_function

    texts = load_corpus(args.limit)
    print(f"corpus: {len(texts)} lines from {CORPUS_DIR.relative_to(ROOT)} (WordNet 3.0)")

    started = time.perf_counter()
    embed = default_embedding_function()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(f"model: {embed.name} ({embed.dim} dimensions), loaded in {time.perf_counter() - started:.1f} s")

    client = m2m.Client(args.path)
    collection = client.get_or_create_collection(
        COLLECTION,
        dim=embed.dim,
        metric="cosine",
        metadata={"embedding_model": embed.name},
        embedding_function=embed,
    )
    print(f"collection {COLLECTION!r} at {Path(args.path).resolve()}: {collection.count()} items stored")

    ids = [f"gloss-{i:05d}" for i in range(len(texts))]
    embed_s = store_s = 0.0
    added = skipped = 0
    ingest_started = time.perf_counter()
    with tqdm(total=len(texts), desc="embed + store", unit="text", file=sys.stdout) as bar:
        for start in range(0, len(texts), args.batch_size):
            batch_ids = ids[start : start + args.batch_size]
            present = set(collection.get(ids=batch_ids, include=[])["ids"])
            todo = [i for i, item_id in enumerate(batch_ids, start) if item_id not in present]
            skipped += len(batch_ids) - len(todo)
            if todo:
                t0 = time.perf_counter()
                vectors = embed([texts[i] for i in todo])
                t1 = time.perf_counter()
                collection.add(
                    ids=[ids[i] for i in todo],
                    embeddings=vectors,
                    documents=[texts[i] for i in todo],
                    metadatas=[{"line": i} for i in todo],
                )
                embed_s += t1 - t0
                store_s += time.perf_counter() - t1
                added += len(todo)
            bar.update(len(batch_ids))
    ingest_s = time.perf_counter() - ingest_started
    rate = f", {added / embed_s:.0f} texts/s" if added and embed_s > 0 else ""
    print(
        f"ingest: {added} new, {skipped} already stored, in {ingest_s:.2f} s "
        f"(embedding {embed_s:.2f} s{rate}; storing {store_s:.2f} s); collection now holds {collection.count()}"
    )

    for query in args.query or DEMO_QUERIES:
        t0 = time.perf_counter()
        vector = embed([query])
        t1 = time.perf_counter()
        result = collection.query(
            query_embeddings=vector, n_results=args.top, include=["documents", "distances"]
        )
        t2 = time.perf_counter()
        print(f"\nquery: {query!r}  (embedding {1e3 * (t1 - t0):.1f} ms, search {1e3 * (t2 - t1):.2f} ms)")
        hits = zip(result["ids"][0], result["distances"][0], result["documents"][0], strict=True)
        for rank, (item_id, distance, document) in enumerate(hits, 1):
            print(f"  {rank}. [{distance:.3f}] {document}  ({item_id})")
    print("\ndistance = 1 - cosine similarity (0 is identical meaning)")
    client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
