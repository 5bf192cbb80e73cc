"""Draw the benchmark charts (PNG) from benchmarks/results/*.json.

    python scripts/generate_charts.py                       # every results file
    python scripts/generate_charts.py benchmarks/results/wordnet-minilm.json --out docs/img

Per results file ``<stem>.json``: ``<stem>-recall-qps.png`` (recall@10 vs single-query QPS, one curve per system,
log QPS), ``<stem>-lod.png`` (HRM2 recall and p50 latency per level of detail) and, when the
run measured it, ``<stem>-scaling.png`` (HRM2 build time and latency vs collection size).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]


def recall_qps(result: dict, out: Path, stem: str) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for s in result["systems"]:
        rows = sorted(s["sweep"], key=lambda r: r["recall_at_10"])
        if not rows:
            continue
        style = "-o" if s["name"].startswith("m2m") else "--s"
        ax.plot(
            [r["recall_at_10"] for r in rows], [r["qps_single"] for r in rows], style, ms=3, label=s["name"]
        )
    for th in (0.90, 0.95, 0.99):
        ax.axvline(th, color="grey", lw=0.6, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("recall@10")
    ax.set_ylabel("queries per second (one thread, one query at a time)")
    ax.set_title(f"{result['dataset']['name']}: recall vs speed")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    path = out / f"{stem}-recall-qps.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def lod_chart(result: dict, out: Path, stem: str) -> Path | None:
    ex = result.get("hrm2")
    if not ex:
        return None
    lods = ex["lod"]
    fig, ax1 = plt.subplots(figsize=(6, 4))
    x = [f"LOD {r['lod']}" for r in lods]
    ax1.bar(x, [r["p50_ms"] for r in lods], color="#4c72b0", alpha=0.8, label="p50 latency (ms)")
    ax1.set_ylabel("p50 latency (ms)")
    ax2 = ax1.twinx()
    ax2.plot(x, [r["recall_at_10"] for r in lods], "o-", color="#dd8452", label="recall@10")
    ax2.set_ylim(0, 1.02)
    ax2.set_ylabel("recall@10")
    ax1.set_title(f"{result['dataset']['name']}: HRM2 levels of detail (n_probe {lods[0]['n_probe']})")
    fig.tight_layout()
    path = out / f"{stem}-lod.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def scaling_chart(result: dict, out: Path, stem: str) -> Path | None:
    rows = result.get("scaling")
    if not rows:
        return None
    n = [r["n"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(n, [r["build_s"] for r in rows], "o-")
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xlabel("vectors")
    a.set_ylabel("build seconds (incl. calibration)")
    a.grid(True, which="both", alpha=0.3)
    b.plot(n, [r["lod0_p50_ms"] for r in rows], "o-", label="LOD 0 p50")
    b.plot(n, [r["lod2_p50_ms"] for r in rows], "s-", label="LOD 2 p50 (target 0.95)")
    b.set_xscale("log")
    b.set_xlabel("vectors")
    b.set_ylabel("ms")
    b.grid(True, which="both", alpha=0.3)
    b.legend()
    fig.suptitle(f"{result['dataset']['name']}: HRM2 scaling")
    fig.tight_layout()
    path = out / f"{stem}-scaling.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    files = args.files or sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    if not files:
        raise SystemExit("no results JSON found; run benchmarks/benchmark_m2m.py first")
    args.out.mkdir(parents=True, exist_ok=True)
    for f in files:
        result = json.loads(f.read_text())
        if not isinstance(result, dict) or "systems" not in result or "dataset" not in result:
            continue  # another benchmark's results file
        for draw in (recall_qps, lod_chart, scaling_chart):
            path = draw(result, args.out, f.stem)
            if path:
                print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
