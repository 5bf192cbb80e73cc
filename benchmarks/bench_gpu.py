"""GPU brute-force top-k: plain torch vs M2M's torch backend vs M2M's wgpu (WGSL) backend.

Synthetic clustered unit vectors (seeded, generated on the device), query batches of
``--nq``; for each method: median seconds per batch over ``--batches`` timed batches (after a
warm-up batch that also compiles the kernels), queries/s, and recall@k against an exact
float64 ground truth. Writes JSON to ``benchmarks/results/gpu_<device>.json``.

    python benchmarks/bench_gpu.py                       # 1M x 384, 1024-query batches, k=10
    python benchmarks/bench_gpu.py --n 20000 --nq 256    # a quick run on a CPU / lavapipe

Methods: ``baseline`` = ``torch.topk(Q @ X.T, k)`` in float32 with the data already on the
device; ``m2m-torch`` / ``m2m-torch-f16`` = ``TorchBackend.topk`` on an uploaded block (NumPy
queries in, NumPy results out); ``wgpu`` / ``wgpu-f16`` = ``WgpuBackend.topk`` on an
uploaded block, same interface. ``hrm2`` is a hook for the HRM2 index (see ``bench_hrm2``).
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
    """Warm up on batch 0, then time every batch; returns the per-batch seconds and recall."""
    run(0)
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


def bench_hrm2(x_np, query_batches_np, gt_batches, k, args):
    """Hook for the HRM2 index on the GPU; returns a result dict, or None when it cannot run.

    To be filled once ``m2m.index.hrm2`` exposes a GPU search path: build the index on
    ``x_np`` (timed separately), then time ``search(query_batch, k)`` per batch exactly as
    ``time_method`` does and report recall against ``gt_batches``. No numbers are made up here.
    """
    return None


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
    ap.add_argument("--methods", default="baseline,m2m-torch,m2m-torch-f16,wgpu,wgpu-f16,hrm2")
    ap.add_argument(
        "--target-workgroups", default="1024", help="wgpu: workgroups per query batch (a comma list sweeps)"
    )
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
            elif name.startswith("wgpu"):
                run_wgpu(name, x_np, q_np, gt_batches, query_batches, device, args, record)
            elif name == "hrm2":
                hres = bench_hrm2(x_np, q_np, gt_batches, args.k, args)
                if hres is None:
                    print(
                        "hrm2            not run: the GPU search hook in bench_hrm2 is not wired yet",
                        flush=True,
                    )
                    results[name] = {
                        "status": "not run",
                        "reason": "bench_hrm2 hook not wired to m2m.index.hrm2 yet",
                    }
                else:
                    results[name] = hres
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
