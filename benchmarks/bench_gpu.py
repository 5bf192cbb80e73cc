"""GPU top-k: plain torch vs M2M's torch and wgpu (WGSL) backends, brute force and HRM2.

Synthetic clustered unit vectors (seeded, generated on the device), query batches of
``--nq``; for each method: median seconds per batch over ``--batches`` timed batches (after a
warm-up pass over the batches that also compiles the kernels and captures CUDA graphs),
queries/s, and recall@k against an exact float64 ground truth. Writes JSON to ``benchmarks/results/gpu_<device>.json``.

    python benchmarks/bench_gpu.py                       # 1M x 384, 1024-query batches, k=10
    python benchmarks/bench_gpu.py --n 20000 --nq 256    # a quick run on a CPU / lavapipe

HRM2 on the GPU (issue 7), every method in one run:

    python benchmarks/bench_gpu.py --methods baseline,m2m-torch,hrm2,wgpu,wgpu-hrm2 \
        --out benchmarks/results/gpu_hrm2_<device>.json

Methods: ``baseline`` = ``torch.topk(Q @ X.T, k)`` in float32 with the data already on the
device; ``m2m-torch`` / ``m2m-torch-f16`` = ``TorchBackend.topk`` on an uploaded block (NumPy
queries in, NumPy results out); ``wgpu`` / ``wgpu-f16`` = ``WgpuBackend.topk`` on an
uploaded block, same interface. ``hrm2`` = ``m2m.index.gpu_search.GPUSearch`` (torch) and
``wgpu-hrm2`` = ``m2m.index.wgpu_search.WgpuGPUSearch`` (WGSL) over one HRM2 index built on the
CPU (see ``bench_hrm2``, ``bench_wgpu_hrm2``); each reports its fastest n_probe at recall@k >=
``--hrm2-recall`` and the whole sweep.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402  (the benchmark needs torch for data and the baseline)

from m2m.types import Metric  # noqa: E402


def make_data(n, dim, n_queries_total, clusters, seed, device):
    """Clustered unit vectors: cluster centres plus noise, normalised; queries from the same mixture."""
    gen = torch.Generator(device=device).manual_seed(seed)
    centers = torch.randn(clusters, dim, generator=gen, device=device)
    centers /= centers.norm(dim=1, keepdim=True)

    def draw(count):
        out = torch.empty(count, dim, device=device)
        for s in range(0, count, 1 << 18):
            m = min(1 << 18, count - s)
            lab = torch.randint(0, clusters, (m,), generator=gen, device=device)
            x = centers[lab] + 0.35 * torch.randn(m, dim, generator=gen, device=device) / dim**0.5 * 4
            out[s : s + m] = x / x.norm(dim=1, keepdim=True)
        return out

    return draw(n), draw(n_queries_total)


def exact_topk(x, q, k, chunk=1 << 17):
    """Exact top-k by inner product in float64 (the ground truth)."""
    q64 = q.double()
    best_v = best_i = None
    for s in range(0, x.shape[0], chunk):
        scores = q64 @ x[s : s + chunk].double().T
        v, i = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        i += s
        if best_v is not None:
            v, pos = torch.topk(torch.cat([best_v, v], 1), k, dim=1)
            i = torch.gather(torch.cat([best_i, i], 1), 1, pos)
        best_v, best_i = v, i
    return best_i.cpu().numpy()


def recall(ids, gt):
    k = gt.shape[1]
    return float(
        np.mean([len(set(a[:k].tolist()) & set(b.tolist())) / k for a, b in zip(ids, gt, strict=True)])
    )


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_method(run, query_batches, gt_batches, device):
    """Warm up on every batch (kernel compilation, CUDA graph capture per shape), then time
    every batch; returns the per-batch seconds and recall."""
    for b in range(len(query_batches)):
        run(b)
    sync(device)
    times, recalls = [], []
    for b in range(len(query_batches)):
        sync(device)
        t0 = time.perf_counter()
        ids = run(b)
        sync(device)
        times.append(time.perf_counter() - t0)
        recalls.append(recall(ids, gt_batches[b]))
    return times, float(np.mean(recalls))


_INDEX: dict = {}


def build_hrm2(x_np, args):
    """``HRM2Index.build`` on the CPU (k-means on a ``--hrm2-train`` sample), once per run:
    the torch and wgpu HRM2 methods search the same index."""
    if "index" not in _INDEX:
        from m2m.index import HRM2Index, HRM2Params

        t0 = time.perf_counter()
        params = HRM2Params(
            train_sample=min(args.hrm2_train, x_np.shape[0]), kmeans_iters=args.hrm2_iters, calib_queries=0
        )
        index = HRM2Index.build(x_np, np.arange(x_np.shape[0]), Metric.IP, params)
        _INDEX.update(index=index, params=params, build_s=time.perf_counter() - t0)
        print(f"hrm2 build      {_INDEX['build_s']:.1f}s on the CPU ({index.n_lists} lists, "
              f"train_sample {params.train_sample})", flush=True)  # fmt: skip
    return _INDEX["index"]


def sweep_probes(name, search, queries, query_batches_np, gt_batches, k, args, device, **extra):
    """Time ``search(batch, n_probe)`` over ``--hrm2-probes`` (stopping once recall passes the
    target by 0.03); returns the sweep rows and the fastest row at recall >= ``--hrm2-recall``."""
    rows, best = [], None
    for n_probe in [int(p) for p in str(args.hrm2_probes).split(",")]:

        def run(b, n_probe=n_probe):
            return search(queries[b], n_probe)

        times, rec = time_method(run, query_batches_np, gt_batches, device)
        med = statistics.median(times)
        row = {**extra, "n_probe": n_probe, "median_s": med, "batch_s": times,
               "qps": len(query_batches_np[0]) / med, "recall_at_k": rec}  # fmt: skip
        rows.append(row)
        print(f"{name:9s} {' '.join(f'{a}={b}' for a, b in extra.items()):34s} n_probe={n_probe:3d} "
              f"{med * 1e3:8.2f} ms/batch {row['qps']:10.0f} q/s recall@{k} {rec:.4f}", flush=True)  # fmt: skip
        if rec >= args.hrm2_recall and (best is None or row["qps"] > best["qps"]):
            best = row
        if rec >= args.hrm2_recall + 0.03:
            break  # larger n_probe only costs more
    return rows, best


def hrm2_report(best, sweep, info, args, note):
    index, params = _INDEX["index"], _INDEX["params"]
    if best is None:
        best = {**max(sweep, key=lambda r: r["recall_at_k"]), "below_target": True}
    return {
        **best,
        "target_recall": args.hrm2_recall,
        "build_s": _INDEX["build_s"],
        "build": "HRM2Index.build on the CPU, k-means on a sample",
        "params": {"train_sample": params.train_sample, "kmeans_iters": params.kmeans_iters,
                   "n_lists": index.n_lists, "n_coarse": index.n_coarse, "codec": index._codec.name,
                   "rerank": params.rerank, "block_rows": args.hrm2_block},
        "upload": info,
        "sweep": sweep,
        "note": note,
    }  # fmt: skip


def bench_hrm2(x_np, query_batches_np, gt_batches, k, args):
    """HRM2 on the GPU through torch (``m2m.index.gpu_search.GPUSearch``): for every
    ``--hrm2-scans`` variant (``exact``: float32 vectors; ``exact-f16``: float16 vectors and a
    float32 re-rank of ``refine * k``; ``codes``: LOD 1 codes + LOD 2 re-rank; ``-nograph``:
    without CUDA graphs), sweep n_probe and
    time every batch as ``time_method`` does (device-resident queries in, NumPy ids out). The
    reported point is the fastest (variant, n_probe) whose recall@k reaches ``--hrm2-recall``."""
    from m2m.index.gpu_search import GPUSearch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    index = build_hrm2(x_np, args)
    qdev = [torch.from_numpy(q).to(device) for q in query_batches_np]
    sweep, best, info = [], None, {}
    for variant in [v.strip() for v in args.hrm2_scans.split(",") if v.strip()]:
        scan = "codes" if variant.startswith("codes") else "exact"
        dtype = "float16" if "f16" in variant else "float32"
        graphs = "nograph" not in variant
        g = GPUSearch(
            index, device=device.type, block_rows=args.hrm2_block, scan=scan, dtype=dtype, graphs=graphs
        )
        info[variant] = {"upload_s": g.upload_seconds, "gpu_bytes": g.nbytes}

        def search(q, n_probe, g=g):
            return g.search(q, k, n_probe=n_probe)[1]

        rows, vbest = sweep_probes("hrm2", search, qdev, query_batches_np, gt_batches, k, args, device,
                                   scan=scan, dtype=dtype, graphs=graphs)  # fmt: skip
        sweep += rows
        if vbest is not None and (best is None or vbest["qps"] > best["qps"]):
            best = vbest
        if args.hrm2_profile and device.type == "cuda" and vbest is not None:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                for q in qdev:
                    g.search(q, k, n_probe=vbest["n_probe"])
                torch.cuda.synchronize()
            info[variant]["profile"] = prof.key_averages().table(sort_by="cuda_time_total", row_limit=12)
            print(info[variant]["profile"], flush=True)
        del g
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return hrm2_report(best, sweep, info, args,
                       "m2m.index.gpu_search.GPUSearch: route + scan of the probed lists on the device "
                       "(fixed grid of block slots per query; dense = pairs grouped by block, one bmm); "
                       "device-resident queries in, NumPy ids out")  # fmt: skip


def bench_wgpu_hrm2(x_np, query_batches_np, gt_batches, k, args, device):
    """HRM2 on wgpu (``m2m.index.wgpu_search.WgpuGPUSearch``): the same index, routing with the
    fused brute-force kernel over the centroids, ``ivf_scan.wgsl`` over the probed lists'
    float32 vectors, the per-query merge; NumPy queries in, NumPy ids out."""
    from m2m.compute.wgpu_backend import WgpuBackend, find_adapter
    from m2m.index.wgpu_search import WgpuGPUSearch

    adapter, why = find_adapter()
    if adapter is None:
        raise RuntimeError(why)
    index = build_hrm2(x_np, args)
    w = WgpuGPUSearch(index, WgpuBackend(adapter))
    info = {"upload_s": w.upload_seconds, "gpu_bytes": w.nbytes, "chunks": len(w.ivf.chunks),
            "adapter": {key: str(w.ivf.backend.adapter_info.get(key)) for key in ("device", "backend_type")}}  # fmt: skip

    def search(q, n_probe):
        return w.search(q, k, n_probe=n_probe)[1]

    sweep, best = sweep_probes("wgpu-hrm2", search, query_batches_np, query_batches_np, gt_batches, k,
                               args, device, scan="exact", dtype="float32")  # fmt: skip
    return hrm2_report(best, sweep, info, args,
                       "m2m.index.wgpu_search.WgpuGPUSearch: WGSL routing (fused top-k over the "
                       "centroids) + ivf_scan.wgsl over the probed lists + select.wgsl merge")  # fmt: skip


def run_wgpu(name, x_np, q_np, gt_batches, query_batches, device, args, record):
    """Time ``WgpuBackend.topk``: ``wgpu``, ``wgpu-f16``; variants for diagnosis: ``wgpu-scoreonly``
    (the product alone, ids void), ``wgpu-nobound`` (no threshold sharing between workgroups),
    ``wgpu-slots8`` (8 candidate slots per query instead of 16)."""
    from m2m.compute.wgpu_backend import WgpuBackend, find_adapter

    adapter, why = find_adapter()
    if adapter is None:
        raise RuntimeError(why)
    storage = "float16" if name.endswith("f16") else "float32"
    options = {"share_bounds": "nobound" not in name, "slots": 8 if "slots8" in name else None}
    targets = [int(t) for t in str(args.target_workgroups).split(",")]
    t_setup = time.perf_counter()
    backend = WgpuBackend(adapter, storage=storage, target_workgroups=targets[0], **options)
    block = backend.upload(x_np)
    setup = time.perf_counter() - t_setup
    info = backend.adapter_info
    adapter_info = {
        key: str(info.get(key)) for key in ("device", "vendor", "backend_type", "adapter_type", "description")
    }
    for target in targets:
        backend.target_workgroups = target
        if name == "wgpu-scoreonly":

            def run(b):
                q = np.ascontiguousarray(q_np[b], dtype=np.float32)
                return backend._search(q, block, args.k, Metric.IP, None, skip_topk=True)[1]
        else:

            def run(b):
                return backend.topk(q_np[b], block, args.k, Metric.IP)[1]

        times, rec = time_method(run, query_batches, gt_batches, device)
        label = name if len(targets) == 1 else f"{name}@{target}"
        extra = {"note": "diagnostic: matrix product only, ids void"} if name == "wgpu-scoreonly" else {}
        record(label, times, rec, storage=storage, upload_s=setup, chunks=len(block.chunks),
               target_workgroups=target, adapter=adapter_info, **extra)  # fmt: skip
    block.chunks.clear()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--nq", type=int, default=1024, help="queries per batch")
    ap.add_argument("--batches", type=int, default=5, help="timed batches (each a fresh query set)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="baseline,m2m-torch,m2m-torch-f16,wgpu,wgpu-f16,hrm2,wgpu-hrm2")
    ap.add_argument(
        "--target-workgroups", default="1024", help="wgpu: workgroups per query batch (a comma list sweeps)"
    )
    ap.add_argument("--hrm2-probes", default="2,3,4,5,6,8,12,16", help="n_probe sweep")
    ap.add_argument(
        "--hrm2-scans", default="exact,exact-f16", help="GPUSearch variants: exact, exact-f16, codes"
    )
    ap.add_argument(
        "--hrm2-recall", type=float, default=0.95, help="recall@k the reported n_probe must reach"
    )
    ap.add_argument("--hrm2-train", type=int, default=60000, help="k-means training sample")
    ap.add_argument("--hrm2-iters", type=int, default=10, help="k-means iterations")
    ap.add_argument("--hrm2-block", type=int, default=128, help="rows per scan block on the device")
    ap.add_argument("--hrm2-profile", action="store_true", help="torch.profiler table at the reported point")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/gpu_<device>.json)")
    args = ap.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device_name = torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device: {device_name} ({device.type}); torch {torch.__version__}", flush=True)

    t0 = time.perf_counter()
    x, q_all = make_data(args.n, args.dim, args.nq * args.batches, args.clusters, args.seed, device)
    query_batches = [q_all[b * args.nq : (b + 1) * args.nq] for b in range(args.batches)]
    gt_batches = [exact_topk(x, qb, args.k) for qb in query_batches]
    x_np = x.cpu().numpy()
    q_np = [qb.cpu().numpy() for qb in query_batches]
    print(f"data + ground truth: {time.perf_counter() - t0:.1f}s", flush=True)

    flops = 2.0 * args.nq * args.n * args.dim
    results = {}

    def record(name, times, rec, **extra):
        med = statistics.median(times)
        results[name] = {
            "median_s": med,
            "batch_s": times,
            "qps": args.nq / med,
            "recall_at_k": rec,
            "score_tflops": flops / med / 1e12,
            **extra,
        }
        print(
            f"{name:15s} {med * 1e3:9.2f} ms/batch {args.nq / med:11.0f} q/s  recall@{args.k} {rec:.4f}",
            flush=True,
        )

    try:
        import wgpu

        wgpu_version = wgpu.__version__
    except ImportError:
        wgpu_version = None
    report = {
        "benchmark": "bench_gpu brute-force top-k",
        "device": device_name,
        "torch": torch.__version__,
        "wgpu": wgpu_version,
        "python": platform.python_version(),
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "metric": "ip (unit vectors, so the same ranking as cosine)",
        "time_per_batch": "median wall time: NumPy queries in (torch-resident for the baseline), ids out",
        "results": results,
    }

    slug = re.sub(r"[^a-z0-9]+", "_", device_name.lower()).strip("_")
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"gpu_{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        out.write_text(json.dumps(report, indent=2))

    for name in methods:
        t_setup = time.perf_counter()
        try:
            if name == "baseline":
                tf32 = torch.backends.cuda.matmul.allow_tf32

                def run(b):
                    return torch.topk(query_batches[b] @ x.T, args.k, dim=1).indices.cpu().numpy()

                times, rec = time_method(run, query_batches, gt_batches, device)
                record(name, times, rec, note=f"torch.topk(Q @ X.T) float32, allow_tf32={tf32}")
            elif name.startswith("m2m-torch"):
                from m2m.compute.torch_backend import TorchBackend

                dtype = "float16" if name.endswith("f16") else "float32"
                backend = TorchBackend(device=device.type, dtype=dtype, max_score_elements=1 << 30)
                block = backend.upload(x_np)
                setup = time.perf_counter() - t_setup

                def run(b, backend=backend, block=block):
                    return backend.topk(q_np[b], block, args.k, Metric.IP)[1]

                times, rec = time_method(run, query_batches, gt_batches, device)
                record(name, times, rec, storage=dtype, upload_s=setup)
                del block, backend
            elif name == "wgpu-hrm2":
                results[name] = bench_wgpu_hrm2(x_np, q_np, gt_batches, args.k, args, device)
            elif name.startswith("wgpu"):
                run_wgpu(name, x_np, q_np, gt_batches, query_batches, device, args, record)
            elif name == "hrm2":
                results[name] = bench_hrm2(x_np, q_np, gt_batches, args.k, args)
            else:
                raise ValueError(f"unknown method {name!r}")
        except Exception as exc:  # keep the other methods' numbers
            print(f"{name:15s} FAILED: {type(exc).__name__}: {exc}", flush=True)
            results[name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        if device.type == "cuda":
            torch.cuda.empty_cache()
        save()  # after every method, so a run cut short keeps what it measured

    if "baseline" in results and "qps" in results["baseline"]:
        base = results["baseline"]["qps"]
        for res in results.values():
            if "qps" in res:
                res["vs_baseline"] = res["qps"] / base
        print(
            "throughput vs baseline: "
            + ", ".join(f"{m} {r['vs_baseline']:.2f}" for m, r in results.items() if "vs_baseline" in r)
        )

    save()
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
