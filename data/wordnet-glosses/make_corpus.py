"""Rebuild glosses.txt: a deterministic 3,000-line subset of the wordnet-minilm texts.

Run from the repository root (needs /work/shared/datasets/wordnet-minilm and the
offline all-MiniLM-L6-v2 of the ``embeddings`` extra):

    .venv/bin/python data/wordnet-glosses/make_corpus.py

Selection, in this order (see README.md):
1. candidates: lines of ``base.txt.gz`` that start with a lower-case letter or "(" (WordNet
   glosses and most usage examples; capitalised full sentences are left out), with 3 to 25
   words, de-duplicated, and not equal to one of the demo queries;
2. for each demo query (the list in examples/demo.py), its 10 nearest candidates by the
   dataset's precomputed vectors, so the demo's questions have answers in the corpus;
3. the rest filled with a seeded random sample (numpy default_rng(2024)) of the candidates.
Lines are written in dataset order.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np

DATASET = Path("/work/shared/datasets/wordnet-minilm")
OUT = Path(__file__).resolve().parent / "glosses.txt"
SIZE = 3000
PER_QUERY = 10
SEED = 2024


def main() -> None:
    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root / "examples"))
    sys.path.insert(0, str(root / "src"))
    from demo import DEMO_QUERIES  # the same questions the demo asks

    from m2m.embeddings import default_embedding_function

    with gzip.open(DATASET / "base.txt.gz", "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    queries = set(DEMO_QUERIES)
    seen: set[str] = set()
    candidates = []
    for i, line in enumerate(lines):
        words = len(line.split())
        if (
            (line[:1].islower() or line[:1] == "(")
            and 3 <= words <= 25
            and line not in seen
            and line not in queries
        ):
            seen.add(line)
            candidates.append(i)
    candidates_arr = np.asarray(candidates, dtype=np.int64)
    base = np.load(DATASET / "base.f16.npy", allow_pickle=False)[candidates_arr].astype(np.float32)
    query_vectors = default_embedding_function()(list(DEMO_QUERIES))
    chosen: list[int] = []
    for q in query_vectors:
        top = np.argsort(-(base @ q), kind="stable")[:PER_QUERY]
        chosen.extend(int(candidates_arr[j]) for j in top if int(candidates_arr[j]) not in chosen)
    rng = np.random.default_rng(SEED)
    picked = set(chosen)
    for i in rng.permutation(candidates_arr).tolist():
        if len(picked) >= SIZE:
            break
        picked.add(int(i))
    out = [lines[i] for i in sorted(picked)]
    OUT.write_text("\n".join(out) + "\n", encoding="utf-8")
    print(f"{len(candidates)} candidates; wrote {len(out)} lines ({OUT.stat().st_size} bytes) to {OUT}")


if __name__ == "__main__":
    main()
