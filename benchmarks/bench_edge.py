"""Edge snapshots on wordnet-minilm (100K x 384): size, load time, latency, recall@10.

Builds (or reuses) a store holding the 100K base vectors with an HRM2 index, exports a
float32 and an int8 edge snapshot, then measures each snapshot in fresh subprocesses: once
with the machine's default BLAS threads and once with one thread (OMP/OpenBLAS/MKL thread
variables set before NumPy is imported) standing in for a small device. The collection's
own HRM2 search is measured in-process at the same n_probe values for reference.

    .venv/bin/python benchmarks/bench_edge.py                  # JSON -> benchmarks/results/edge.json
    .venv/bin/python benchmarks/bench_edge.py --queries 300    # quicker

The store is kept at ``--store`` (default /tmp/m2m_bench_edge) so later runs skip the
ingest and the index build (their times are recorded when they happen).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(
    os.environ.get(
        "M2M_WORDNET", Path(__file__).resolve().parents[1].parent / "shared/datasets/wordnet-minilm"
    )
)
N_PROBES = (16, 32, 64, None, 256)  # None = the snapshot's calibrated default
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def _percentiles(samples: list[float]) -> dict[str, float]:
    import numpy as np

    a = np.asarray(samples) * 1e3
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 4),
        "p99_ms": round(float(np.percentile(a, 99)), 4),
        "mean_ms": round(float(a.mean()), 4),
    }


def _recall(found_rows, gt) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found_rows, gt, strict=True))
    return round(hits / (10 * len(gt)), 4)


def _rows_of(ids) -> list[int]:
    return [int(i[1:]) for i in ids if i]


# -- worker: one snapshot, one thread setting, in a fresh process --------------------------------


def worker(snapshot: str, n_queries: int) -> dict:
    t0 = time.perf_counter()
    import numpy as np

    from m2m.edge import EdgeRouter

    import_s = time.perf_counter() - t0
    queries = np.load(DATA / "queries.f16.npy", allow_pickle=False).astype(np.float32)[:n_queries]
    gt = np.load(DATA / "gt.i32.npy", allow_pickle=False)[:n_queries, :10]
    t = time.perf_counter()
    router = EdgeRouter(snapshot)  # verify=True: every file hashed
    load_verified = time.perf_counter() - t
    t = time.perf_counter()
    router = EdgeRouter(snapshot, verify=False)
    load_unverified = time.perf_counter() - t
    t = time.perf_counter()
    router.verify()
    hash_s = time.perf_counter() - t
    out = {
        "import_m2m_edge_s": round(import_s, 4),
        "load_verify_s": round(load_verified, 4),
        "load_no_verify_s": round(load_unverified, 5),
        "sha256_all_files_s": round(hash_s, 4),
        "default_n_probe": router.default_n_probe,
        "runs": [],
    }
    for q in queries[:20]:  # warm-up: page in the maps, settle caches
        router.search(q, k=10)
    for n_probe in N_PROBES:
        lat, rows = [], []
        for q in queries:
            s = time.perf_counter()
            res = router.search(q, k=10, n_probe=n_probe)
            lat.append(time.perf_counter() - s)
            rows.append(_rows_of(res.ids))
        t = time.perf_counter()
        router.search(queries, k=10, n_probe=n_probe)
        batch_qps = len(queries) / (time.perf_counter() - t)
        out["runs"].append(
            {
                "n_probe": n_probe or router.default_n_probe,
                **_percentiles(lat),
                "recall_at_10": _recall(rows, gt),
                "batch_qps": round(batch_qps, 1),
            }
        )
    return out


def run_worker(snapshot: Path, n_queries: int, threads: int | None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    if threads is not None:
        env.update({v: str(threads) for v in THREAD_VARS})
    cmd = [sys.executable, __file__, "--worker", str(snapshot), "--queries", str(n_queries)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- driver ---------------------------------------------------------------------------------------


def open_collection(store: Path, metric: str, log: dict):
    import numpy as np

    import m2m
    from m2m.index_manager import IndexSettings

    client = m2m.Client(store, index_settings=IndexSettings(threshold=1 << 62, background=False))
    name = f"wordnet_{metric}"
    base = np.load(DATA / "base.f16.npy", allow_pickle=False).astype(np.float32)
    col = client.get_or_create_collection(name, dim=base.shape[1], metric=metric)
    if col.count() != base.shape[0]:
        client.delete_collection(name)
        col = client.create_collection(name, base.shape[1], metric)
        t = time.perf_counter()
        for s in range(0, base.shape[0], 10000):
            col.add([f"w{i}" for i in range(s, min(base.shape[0], s + 10000))], base[s : s + 10000])
        log["ingest_s"] = round(time.perf_counter() - t, 2)
    if col.index_stats() is None:
        t = time.perf_counter()
        col.create_index()
        log["index_build_s"] = round(time.perf_counter() - t, 2)
    if not log:
        log["reused_store"] = str(store)  # ingest and build happened in an earlier run
    return client, col


def collection_reference(col, n_queries: int) -> list[dict]:
    """The source collection's own HRM2 search (in-process, default threads)."""
    import numpy as np

    queries = np.load(DATA / "queries.f16.npy", allow_pickle=False).astype(np.float32)[:n_queries]
    gt = np.load(DATA / "gt.i32.npy", allow_pickle=False)[:n_queries, :10]
    out = []
    for n_probe in N_PROBES:
        lat, rows = [], []
        for q in queries:
            s = time.perf_counter()
            res = col.query(q, n_results=10, n_probe=n_probe, include=[])
            lat.append(time.perf_counter() - s)
            rows.append(_rows_of(res["ids"][0]))
        out.append({"n_probe": n_probe or "default", **_percentiles(lat), "recall_at_10": _recall(rows, gt)})
    return out


def machine_info() -> dict:
    import numpy as np

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="/tmp/m2m_bench_edge", help="store folder, reused between runs")
    ap.add_argument("--metric", default="cosine", choices=["cosine", "ip"])
    ap.add_argument("--queries", type=int, default=500, help="queries timed per setting (max 5000)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "edge.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.queries)))
        return

    started = time.perf_counter()
    result: dict = {
        "dataset": "wordnet-minilm 100000 x 384",
        "metric": args.metric,
        "queries": args.queries,
        "machine": machine_info(),
        "build": {},
    }
    client, col = open_collection(Path(args.store), args.metric, result["build"])
    from m2m.edge import export_edge

    stats = col.index_stats()
    result["index"] = {k: stats[k] for k in ("n", "n_coarse", "n_fine_total", "codec", "code_dim")}
    snapshots = {}
    for quant in ("float32", "int8"):
        t = time.perf_counter()
        config = export_edge(col, Path(args.store) / f"edge_{args.metric}_{quant}", quantization=quant)
        export_s = time.perf_counter() - t
        import yaml

        files = yaml.safe_load(config.read_text())["files"]
        snapshots[quant] = config
        result[quant] = {
            "export_s": round(export_s, 2),
            "snapshot_bytes": sum(e["bytes"] for e in files.values()),
            "bytes_by_file": {k: e["bytes"] for k, e in files.items()},
        }
        print(
            f"exported {quant}: {result[quant]['snapshot_bytes'] / 1e6:.1f} MB in {export_s:.1f}s", flush=True
        )
    result["collection_hrm2"] = collection_reference(col, args.queries)
    print("collection:", json.dumps(result["collection_hrm2"]), flush=True)
    client.close()
    for quant, config in snapshots.items():
        for label, threads in (("default_threads", None), ("one_thread", 1)):
            result[quant][label] = run_worker(config, args.queries, threads)
            print(quant, label, json.dumps(result[quant][label]), flush=True)
    result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["total_s"] = round(time.perf_counter() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} in {result['total_s']}s")


if __name__ == "__main__":
    main()
