"""Larger than memory end to end: a Collection served from disk with a warm budget of 10%.

    python benchmarks/bench_tiers.py --collection               # 500K x 384 float32
    python benchmarks/bench_tiers_collection.py --n 200000      # the same, directly

Steps (the parent process):

1. synthetic clustered unit vectors (``bench_tiers.clustered``, seeded), added to a
   ``m2m.Client`` collection (cosine, metadata ``{"g": i % 10}``) in batches of 10,000 with
   ``IndexSettings(tiers=TierConfig(warm_bytes), mirror_on_disk=True)``: the mirror's vectors
   go to ``<db>/mirrors/<uuid>/vectors.npy`` as they are written; ``create_index`` builds
   HRM2 and writes the index and its tier directory; ``close`` commits the mirror file.
2. Each scenario is a *fresh subprocess* that opens the database through the Collection API,
   answers the same queries (``--single`` one at a time, ``--batched`` in batches of
   ``--batch``, ``--filtered`` single queries with ``where={"g": 3}``; k=10, n_probe=16) and
   writes its results; the parent samples its ``/proc/<pid>/status`` (VmRSS, RssAnon,
   RssFile) every 5 ms:
   - ``in-ram``: ``IndexSettings()`` without tiers: the mirror loads every vector from SQLite
     and the HRM2 index is loaded into RAM (the reference: results and latency);
   - ``disk-rebuild``: tiers + disk mirror after ``vectors.npy`` was deleted: the mirror file
     is rebuilt from SQLite on open (then committed);
   - ``disk``: tiers + disk mirror, the committed file adopted on open.
   Results of the disk scenarios are compared with ``in-ram`` (ids and float32 distances).

JSON goes to ``benchmarks/results/tiers_collection.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_tiers import _status, add_shared_args, clustered, run_child  # noqa: E402

NAME = "c"


def _settings(args: argparse.Namespace, mode: str, warm_bytes: int):
    from m2m.index.hrm2 import HRM2Params
    from m2m.index_manager import IndexSettings
    from m2m.memory import TierConfig

    params = HRM2Params(train_sample=min(args.train, args.n), kmeans_iters=args.iters, calib_queries=0)
    if mode == "in-ram":
        return IndexSettings(threshold=10**12, params=params, background=False)
    return IndexSettings(threshold=10**12, params=params, background=False,
                         tiers=TierConfig(warm_bytes=warm_bytes), mirror_on_disk=True)  # fmt: skip


def serve(args: argparse.Namespace) -> None:
    """The serving child: open through the Collection API, answer the queries, save results."""
    a = np.ones((256, 384), np.float32)  # BLAS buffers are runtime, not tier, memory
    (a @ a.T).sum()
    a @ a[0]
    del a
    import m2m
    from m2m.index import _search  # noqa: F401

    with contextlib.suppress(Exception):  # a JIT kernel of the index, if present: runtime memory too
        from m2m.index import _kernels

        _kernels.available()

    work = Path(args.work)
    base = _status(os.getpid())
    t0 = time.perf_counter()
    client = m2m.Client(work / "db", index_settings=_settings(args, args.serve, args.warm_bytes))
    col = client.get_collection(NAME)
    open_s = time.perf_counter() - t0
    after_open = _status(os.getpid())
    queries = np.load(work / "queries.npy")
    n_single, n_filtered = args.single, args.filtered
    nq = queries.shape[0]
    ids = np.full((nq, args.k), -1, np.int64)
    dist = np.full((nq, args.k), np.inf, np.float32)

    def put(rows: slice | int, res) -> None:
        for r, (row_ids, row_d) in zip(range(nq)[rows] if isinstance(rows, slice) else [rows],
                                       zip(res["ids"], res["distances"], strict=True), strict=True):  # fmt: skip
            ids[r, : len(row_ids)] = [int(i[1:]) for i in row_ids]
            dist[r, : len(row_d)] = row_d

    opts = {"n_results": args.k, "n_probe": args.n_probe, "include": ["distances"]}
    lat = []
    for i in range(n_single):
        t = time.perf_counter()
        res = col.query(queries[i], **opts)
        lat.append(time.perf_counter() - t)
        put(i, res)
    t = time.perf_counter()
    stop = nq - n_filtered
    for s in range(n_single, stop, args.batch):
        e = min(stop, s + args.batch)
        put(slice(s, e), col.query(queries[s:e], **opts))
    batch_s = time.perf_counter() - t
    flat = []
    for i in range(stop, nq):
        t = time.perf_counter()
        res = col.query(queries[i], where={"g": 3}, **opts)
        flat.append(time.perf_counter() - t)
        put(i, res)
    stats = col.index_stats()
    mirror = col._mirror
    size = sys.getsizeof
    bookkeeping = {  # Python objects per item kept by the mirror (sys.getsizeof; small ints are shared)
        "ids": size(mirror.ids) + sum(size(i) for i in mirror.ids if i is not None),
        "slot_of": size(mirror.slot_of) + sum(size(v) for v in mirror.slot_of.values() if v > 256),
        "slot_of_rowid": size(mirror.slot_of_rowid)
        + sum(size(r) + (size(v) if v > 256 else 0) for r, v in mirror.slot_of_rowid.items()),
    }
    end = _status(os.getpid())
    np.save(work / f"ids.{args.serve}.npy", ids)
    np.save(work / f"dist.{args.serve}.npy", dist)
    out = {
        "open_s": open_s,
        "single_ms_p50": 1e3 * float(np.percentile(lat, 50)),
        "single_ms_p99": 1e3 * float(np.percentile(lat, 99)),
        "batch_qps": (stop - n_single) / batch_s,
        "filtered_ms_p50": 1e3 * float(np.percentile(flat, 50)),
        "filtered_ms_p99": 1e3 * float(np.percentile(flat, 99)),
        "rss_before_open": base,
        "rss_after_open": after_open,
        "rss_end": end,
        "tiers": stats.get("tiers"),
        "mirror_on_disk": mirror.on_disk,
        "mirror_disk": mirror.disk.stats() if mirror.disk is not None else None,
        "mirror_python_bytes": bookkeeping,
        "mirror_slot_arrays_bytes": int(
            sum(
                v.nbytes
                for v in vars(mirror).values()
                if isinstance(v, np.ndarray) and not isinstance(v, np.memmap)
            )
        ),
    }
    t = time.perf_counter()
    client.close()
    out["close_s"] = time.perf_counter() - t
    print(json.dumps(out))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shared_args(ap)
    ap.add_argument("--filtered", type=int, default=100, help="single queries with where={'g': 3}")
    ap.add_argument("--work", default="/tmp/m2m_bench_tiers_collection")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tiers_collection.json"))
    ap.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--warm-bytes", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(args)
        return {}

    import m2m

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t_all = time.perf_counter()
    report: dict = {
        "benchmark": "bench_tiers --collection: a Collection larger than its RAM budget, end to end",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(),
            "mem_total_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "numpy": np.__version__,
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        },
        "config": {k: v for k, v in vars(args).items() if k not in ("serve", "warm_bytes")},
    }
    t0 = time.perf_counter()
    x = clustered(args.n, args.dim, args.clusters, seed=0)
    rng = np.random.default_rng(1)
    nq = args.single + args.batched + args.filtered
    queries = x[rng.choice(args.n, nq, replace=False)] + 0.05 * rng.standard_normal((nq, args.dim)).astype(
        np.float32
    )
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    np.save(work / "queries.npy", queries)
    vector_bytes = int(x.nbytes)
    warm_bytes = int(args.warm_frac * vector_bytes)
    report.update(vector_bytes=vector_bytes, warm_bytes=warm_bytes, data_s=time.perf_counter() - t0)
    print(f"data {args.n} x {args.dim}: {vector_bytes / 1e6:.0f} MB of vectors, warm budget "
          f"{warm_bytes / 1e6:.1f} MB", flush=True)  # fmt: skip

    t0 = time.perf_counter()
    client = m2m.Client(work / "db", index_settings=_settings(args, "disk", warm_bytes))
    col = client.create_collection(NAME, dim=args.dim, metric="cosine")
    step = 10_000
    for s in range(0, args.n, step):
        e = min(args.n, s + step)
        col.add([f"i{i}" for i in range(s, e)], x[s:e], metadatas=[{"g": i % 10} for i in range(s, e)])
    report["ingest_s"] = time.perf_counter() - t0
    del x
    t0 = time.perf_counter()
    stats = col.create_index()
    report["build_s"] = time.perf_counter() - t0
    report["index"] = {"n_lists": stats["n_fine_total"]}
    t0 = time.perf_counter()
    client.close()
    report["close_s"] = time.perf_counter() - t0
    print(f"ingest {report['ingest_s']:.0f}s, build {report['build_s']:.0f}s, close {report['close_s']:.0f}s",
          flush=True)  # fmt: skip
    files = {
        str(p.relative_to(work / "db")): p.stat().st_size for p in (work / "db").rglob("*") if p.is_file()
    }
    report["files_bytes"] = files

    base = ["--serve", "", "--work", str(work), "--warm-bytes", str(warm_bytes)]
    base += [f"--{k}={getattr(args, k.replace('-', '_'))}" for k in
             ("n", "train", "iters", "k", "n-probe", "single", "batched", "batch", "filtered")]  # fmt: skip
    scenarios = {}
    for name in ("in-ram", "disk-rebuild", "disk"):
        if name == "disk-rebuild":
            for data in (work / "db" / "mirrors").rglob("vectors.npy"):
                data.unlink()
        base[1] = name
        scenarios[name] = run_child(base, __file__)
    ref_ids, ref_d = np.load(work / "ids.in-ram.npy"), np.load(work / "dist.in-ram.npy")
    ram = scenarios["in-ram"]
    for name, res in scenarios.items():
        peak, before = res["rss_sampled_peak"], res["rss_before_open"]
        res["identical_to_in_ram"] = bool(
            np.array_equal(np.load(work / f"ids.{name}.npy"), ref_ids)
            and np.array_equal(np.load(work / f"dist.{name}.npy"), ref_d)
        )
        res["rss_peak_minus_python_bytes"] = peak.get("VmRSS", 0) - before.get("VmRSS", 0)
        res["anon_peak_minus_python_bytes"] = peak.get("RssAnon", 0) - before.get("RssAnon", 0)
        res["anon_open_minus_python_bytes"] = res["rss_after_open"]["RssAnon"] - before.get("RssAnon", 0)
        res["file_peak_minus_python_bytes"] = peak.get("RssFile", 0) - before.get("RssFile", 0)
        res["overhead_over_budget_bytes"] = res["anon_peak_minus_python_bytes"] - warm_bytes
        res["latency_single_p50_x"] = res["single_ms_p50"] / ram["single_ms_p50"]
        res["latency_filtered_p50_x"] = res["filtered_ms_p50"] / ram["filtered_ms_p50"]
        res["latency_batch_x"] = ram["batch_qps"] / res["batch_qps"]
        print(f"{name:13s} identical={res['identical_to_in_ram']} open {res['open_s']:.1f}s; single p50 "
              f"{res['single_ms_p50']:.2f} ms (x{res['latency_single_p50_x']:.2f}), batches {res['batch_qps']:.0f} "
              f"q/s (x{res['latency_batch_x']:.2f} slower), filtered p50 {res['filtered_ms_p50']:.2f} ms "
              f"(x{res['latency_filtered_p50_x']:.2f}); peak RSS {peak.get('VmRSS', 0) / 1e6:.0f} MB = anon "
              f"{peak.get('RssAnon', 0) / 1e6:.0f} + file {peak.get('RssFile', 0) / 1e6:.0f} (runtime "
              f"{before.get('VmRSS', 0) / 1e6:.0f} MB); anon growth {res['anon_peak_minus_python_bytes'] / 1e6:.0f} "
              f"MB = budget {warm_bytes / 1e6:.0f} + {res['overhead_over_budget_bytes'] / 1e6:.0f} MB", flush=True)  # fmt: skip
    report["scenarios"] = scenarios
    report["total_s"] = time.perf_counter() - t_all
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out} ({report['total_s']:.0f}s)")
    return report


if __name__ == "__main__":
    main()
