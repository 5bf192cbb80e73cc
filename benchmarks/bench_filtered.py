"""Filtered vs unfiltered HRM2 queries, interleaved, on wordnet-minilm.

Each query runs unfiltered and at every selectivity in turn (query i in every setting before
query i+1), one thread, with the default n_probe (calibrated for recall 0.95); the filter is a
planted integer attribute 0..999 (allowed = attribute < s * 1000), as in benchmark_m2m.py.
Reports recall@10 against the exact filtered answer, p50/p99 and the p50 ratio to the
unfiltered query.

    python benchmarks/bench_filtered.py            # JSON -> benchmarks/results/filtered.json
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _datasets  # noqa: E402
from benchmark_m2m import K, machine, recall_at_k  # noqa: E402

from m2m.index import HRM2Index  # noqa: E402

SELECTIVITIES = (1.0, 0.5, 0.1, 0.01, 0.001)


def exact_filtered(ds, queries: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    sub = np.flatnonzero(allowed)
    sims = queries @ ds.base[sub].T
    part = np.argpartition(-sims, K - 1, axis=1)[:, :K]
    order = np.argsort(-np.take_along_axis(sims, part, 1), axis=1)
    return sub[np.take_along_axis(part, order, 1)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "filtered.json")
    args = ap.parse_args(argv)

    ds = _datasets.load("wordnet-minilm", n_queries=None)
    q = np.ascontiguousarray(ds.queries[: args.queries], dtype=np.float32)
    t = time.perf_counter()
    ix = HRM2Index.build(ds.base, np.arange(ds.base.shape[0]), ds.metric)
    build_s = time.perf_counter() - t
    attr = np.random.default_rng(123).integers(0, 1000, ds.base.shape[0])
    masks = [None if s == 1.0 else attr < round(s * 1000) for s in SELECTIVITIES]
    truths = [ds.gt[: q.shape[0], :K] if m is None else exact_filtered(ds, q, m) for m in masks]
    for m in masks:  # warm-up (first-call costs: kernel load, calibration memo)
        ix.search(q[0], K, allowed=m)
    lat = np.zeros((len(masks), q.shape[0]))
    found = np.zeros((len(masks), q.shape[0], K), np.int64)
    for i in range(q.shape[0]):
        for j, m in enumerate(masks):
            t = time.perf_counter()
            found[j, i] = ix.search(q[i], K, allowed=m)[1]
            lat[j, i] = time.perf_counter() - t
    base_p50 = float(np.median(lat[0]))
    rows = []
    for j, (sel, m) in enumerate(zip(SELECTIVITIES, masks, strict=True)):
        p50 = float(np.median(lat[j]))
        rows.append(
            {
                "selectivity": sel,
                "n_allowed": int(ds.base.shape[0] if m is None else m.sum()),
                "recall_at_10": round(recall_at_k(found[j], truths[j]), 4),
                "min_results": int((found[j] >= 0).sum(1).min()),
                "disallowed_returned": 0 if m is None else int((~m[found[j][found[j] >= 0]]).sum()),
                "p50_ms": round(p50 * 1e3, 4),
                "p99_ms": round(float(np.percentile(lat[j], 99)) * 1e3, 4),
                "p50_vs_unfiltered": round(p50 / base_p50, 2),
            }
        )
        print(rows[-1], flush=True)
    result = {
        "benchmark": "bench_filtered: filtered vs unfiltered HRM2 queries, interleaved",
        "command": "python benchmarks/bench_filtered.py",
        "machine": {**machine(), "loadavg_at_start": list(os.getloadavg())},
        "dataset": "wordnet-minilm",
        "queries": int(q.shape[0]),
        "build_s": round(build_s, 2),
        "codec": ix.stats()["codec"],
        "default_n_probe": int(ix.n_probe_for(ix.params.default_recall)),
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
