"""Larger than memory: an HRM2 index served from disk through a warm cache 10% of its size.

    python benchmarks/bench_tiers.py                  # 500K x 384 float32 (768 MB of vectors)
    python benchmarks/bench_tiers.py --n 1000000      # 1M x 384 (1.5 GB), slower to build
    python benchmarks/bench_tiers.py --collection     # a Collection end to end (bench_tiers_collection.py)

Steps (the parent process):

1. synthetic clustered unit vectors (1000 Gaussian clusters, seeded), ``HRM2Index.build``
   with k-means trained on a ``--train`` sample, written as a tier directory (cold file of
   codes + vectors, ``m2m.memory``);
2. the in-RAM index answers the query set (single queries, then batches): reference results
   and in-RAM latency;
3. for each serving scenario a *fresh subprocess* opens only the tier directory with
   ``TierConfig(warm_bytes = --warm-frac x vector bytes)``, answers the same queries, checks
   the results are identical to the reference, and reports its latency and tier stats; the
   parent samples the child's RSS (``/proc/<pid>/status``: VmRSS, RssAnon, RssFile) every 5 ms.

Scenarios: ``cold`` (the cold file's pages dropped from the page cache before the run:
``echo 3 > /proc/sys/vm/drop_caches`` is tried and then ``posix_fadvise(DONTNEED)``; residency
is measured with ``fincore`` before and after), ``warm-pagecache`` (the same run again, file in
the page cache), ``no-prefetch`` (warm page cache, prefetcher off), ``mmap-warm-pagecache``
(cold reads copied out of an ``np.memmap`` instead of ``os.preadv``: touched pages of the map
count as file-backed RSS, RssFile). JSON goes to
``benchmarks/results/tiers.json`` with the machine's details.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

# one BLAS thread: this machine is shared and multi-threaded BLAS spinning on busy cores makes
# every timing erratic; the in-RAM reference and the tiered runs get the same setting
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


# ---- data -------------------------------------------------------------------------------------
def clustered(n: int, d: int, clusters: int, seed: int, chunk: int = 1 << 16) -> np.ndarray:
    """Unit vectors around ``clusters`` random centres (the bench_gpu mixture, in NumPy)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        x = centres[rng.integers(0, clusters, m)]
        x += (0.35 * 4 / np.sqrt(d)) * rng.standard_normal((m, d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s : s + m] = x
    return out


# ---- RSS sampling -----------------------------------------------------------------------------
def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM")):
                    key, val = line.split(":")
                    out[key] = int(val.split()[0]) * 1024
    except OSError:
        pass
    return out


def run_child(args_list: list[str], script: str = __file__) -> dict:
    """Run the serving child, sampling its RSS every 5 ms; returns its JSON plus the samples."""
    proc = subprocess.Popen([sys.executable, script, *args_list], stdout=subprocess.PIPE, text=True)
    peak: dict[str, int] = {}
    samples = 0

    def sample():
        nonlocal samples
        while proc.poll() is None:
            st = _status(proc.pid)
            for k, v in st.items():
                peak[k] = max(peak.get(k, 0), v)
            samples += 1
            time.sleep(0.005)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, _ = proc.communicate()
    t.join()
    if proc.returncode != 0:
        raise RuntimeError(f"serving child failed with {proc.returncode}")
    res = json.loads(out.strip().splitlines()[-1])
    res["rss_sampled_peak"] = peak
    res["rss_samples"] = samples
    return res


def fincore(path: Path) -> int | None:
    """Bytes of ``path`` resident in the page cache (util-linux fincore), or None."""
    exe = shutil.which("fincore")
    if exe is None:
        return None
    r = subprocess.run([exe, "-b", "-n", "-o", "RES", str(path)], capture_output=True, text=True)
    try:
        return int(r.stdout.split()[0])
    except (ValueError, IndexError):
        return None


def drop_file_cache(path: Path) -> dict:
    """Try to empty the page cache of ``path``; report what each method achieved."""
    rep = {"before_bytes": fincore(path)}
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        rep["drop_caches"] = "written"
    except OSError as exc:
        rep["drop_caches"] = f"refused: {exc}"
    rep["after_drop_caches_bytes"] = fincore(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(3):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    rep["after_fadvise_bytes"] = fincore(path)
    return rep


# ---- the serving child ------------------------------------------------------------------------
def serve(work: Path, warm_bytes: int, prefetch: bool, k: int, n_probe: int, batch: int, mode: str) -> None:
    a = np.ones((256, 384), np.float32)  # warm BLAS up first: its buffers are runtime, not tier, memory
    (a @ a.T).sum()
    a @ a[0]
    del a
    from m2m.index import _search  # noqa: F401  (imports are runtime, not tier, memory)
    from m2m.memory import TierConfig, TieredHRM2

    base = _status(os.getpid())

    t0 = time.perf_counter()
    tiered = TieredHRM2.open(
        work / "tiers", TierConfig(warm_bytes=warm_bytes, prefetch=prefetch, read_mode=mode)
    )
    open_s = time.perf_counter() - t0
    after_open = _status(os.getpid())
    queries = np.load(work / "queries.npy")
    n_single = int(np.load(work / "n_single.npy"))
    ref_d, ref_s = np.load(work / "ref_d.npy"), np.load(work / "ref_s.npy")
    lat = []
    got_s = np.empty_like(ref_s)
    got_d = np.empty_like(ref_d)
    for i in range(n_single):
        t = time.perf_counter()
        got_d[i], got_s[i] = tiered.search(queries[i], k, n_probe=n_probe)
        lat.append(time.perf_counter() - t)
    t = time.perf_counter()
    for s in range(n_single, queries.shape[0], batch):
        got_d[s : s + batch], got_s[s : s + batch] = tiered.search(queries[s : s + batch], k, n_probe=n_probe)
    batch_s = time.perf_counter() - t
    n_batch = queries.shape[0] - n_single
    stats = tiered.stats()
    end = _status(os.getpid())
    out = {
        "identical": bool(np.array_equal(got_s, ref_s) and np.array_equal(got_d, ref_d)),
        "open_s": open_s,
        "single_ms_p50": 1e3 * float(np.percentile(lat, 50)),
        "single_ms_p99": 1e3 * float(np.percentile(lat, 99)),
        "single_ms_mean": 1e3 * float(np.mean(lat)),
        "batch_qps": n_batch / batch_s,
        "rss_before_open": base,
        "rss_after_open": after_open,
        "rss_end": end,
        "tiers": stats,
        "list_bytes": tiered.list_bytes(),
    }
    tiered.close()
    print(json.dumps(out))


# ---- main -------------------------------------------------------------------------------------
def add_shared_args(ap: argparse.ArgumentParser) -> None:
    """Data, index and query options shared with bench_tiers_collection.py."""
    ap.add_argument("--n", type=int, default=500_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--train", type=int, default=20_000, help="k-means training sample")
    ap.add_argument("--iters", type=int, default=8, help="k-means iterations")
    ap.add_argument("--warm-frac", type=float, default=0.10, help="warm budget / vector bytes")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--n-probe", type=int, default=16)
    ap.add_argument("--single", type=int, default=300, help="queries answered one at a time")
    ap.add_argument("--batched", type=int, default=1024, help="queries answered in batches")
    ap.add_argument("--batch", type=int, default=64)


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--collection" in argv:  # end to end through the Collection API: bench_tiers_collection.py
        from bench_tiers_collection import main as collection_main

        return collection_main([a for a in argv if a != "--collection"])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shared_args(ap)
    ap.add_argument("--work", default="/tmp/m2m_bench_tiers")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tiers.json"))
    ap.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--warm-bytes", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--no-prefetch", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--read-mode", default="pread", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(
            Path(args.serve),
            args.warm_bytes,
            not args.no_prefetch,
            args.k,
            args.n_probe,
            args.batch,
            args.read_mode,
        )
        return {}

    from m2m.index import HRM2Index, HRM2Params
    from m2m.memory import write_tier_directory

    work = Path(args.work)
    t_all = time.perf_counter()
    report: dict = {
        "benchmark": "bench_tiers: HRM2 larger than its RAM budget",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(),
            "mem_total_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "numpy": np.__version__,
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        },
        "config": {k: v for k, v in vars(args).items() if k not in ("serve", "warm_bytes", "no_prefetch")},
    }
    t0 = time.perf_counter()
    x = clustered(args.n, args.dim, args.clusters, seed=0)
    rng = np.random.default_rng(1)
    nq = args.single + args.batched
    queries = x[rng.choice(args.n, nq, replace=False)] + 0.05 * rng.standard_normal((nq, args.dim)).astype(
        np.float32
    )
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    report["data_s"] = time.perf_counter() - t0
    print(
        f"data {args.n} x {args.dim}: {report['data_s']:.1f}s ({x.nbytes / 1e6:.0f} MB of vectors)",
        flush=True,
    )

    t0 = time.perf_counter()
    params = HRM2Params(train_sample=min(args.train, args.n), kmeans_iters=args.iters, calib_queries=0)
    ix = HRM2Index.build(x, np.arange(args.n), "cosine", params)
    report["build_s"] = time.perf_counter() - t0
    report["index"] = {"n_lists": ix.n_lists, "codec": ix._codec.name, "code_dim": ix._codec.code_dim}
    print(f"build: {report['build_s']:.1f}s, {ix.n_lists} lists", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    write_tier_directory(ix, work / "tiers")
    report["write_tiers_s"] = time.perf_counter() - t0
    cold_file = next((work / "tiers").glob("*.cold"))
    report["cold_file_bytes"] = cold_file.stat().st_size

    # reference: the in-RAM index, same queries, same calls
    np.save(work / "queries.npy", queries)
    np.save(work / "n_single.npy", np.array(args.single))
    ref_d = np.empty((nq, args.k), np.float32)
    ref_s = np.empty((nq, args.k), np.int64)
    lat = []
    for i in range(args.single):
        t = time.perf_counter()
        ref_d[i], ref_s[i] = ix.search(queries[i], args.k, n_probe=args.n_probe)
        lat.append(time.perf_counter() - t)
    t = time.perf_counter()
    for s in range(args.single, nq, args.batch):
        ref_d[s : s + args.batch], ref_s[s : s + args.batch] = ix.search(
            queries[s : s + args.batch], args.k, n_probe=args.n_probe
        )
    batch_s = time.perf_counter() - t
    np.save(work / "ref_d.npy", ref_d)
    np.save(work / "ref_s.npy", ref_s)
    report["in_ram"] = {
        "single_ms_p50": 1e3 * float(np.percentile(lat, 50)),
        "single_ms_p99": 1e3 * float(np.percentile(lat, 99)),
        "single_ms_mean": 1e3 * float(np.mean(lat)),
        "batch_qps": args.batched / batch_s,
        "index_bytes": ix.stats()["bytes"],
    }
    print(f"in RAM: single p50 {report['in_ram']['single_ms_p50']:.2f} ms, batches {report['in_ram']['batch_qps']:.0f} q/s",
          flush=True)  # fmt: skip
    vector_bytes = int(x.nbytes)
    del ix, x
    warm_bytes = int(args.warm_frac * vector_bytes)
    report["vector_bytes"] = vector_bytes
    report["warm_bytes"] = warm_bytes

    base = ["--serve", str(work), "--warm-bytes", str(warm_bytes), "--k", str(args.k),
            "--n-probe", str(args.n_probe), "--batch", str(args.batch)]  # fmt: skip
    scenarios = {}
    report["page_cache_drop"] = drop_file_cache(cold_file)
    scenarios["cold"] = run_child(base)
    report["page_cache_after_cold_run_bytes"] = fincore(cold_file)
    scenarios["warm-pagecache"] = run_child(base)
    scenarios["no-prefetch"] = run_child([*base, "--no-prefetch"])
    scenarios["mmap-warm-pagecache"] = run_child([*base, "--read-mode", "mmap"])
    for name, res in scenarios.items():
        peak = res["rss_sampled_peak"]
        anon0 = res["rss_before_open"].get("RssAnon", 0)
        res["rss_peak_minus_python_bytes"] = peak.get("VmRSS", 0) - res["rss_before_open"].get("VmRSS", 0)
        res["anon_peak_minus_python_bytes"] = peak.get("RssAnon", 0) - anon0
        res["overhead_over_budget_bytes"] = res["anon_peak_minus_python_bytes"] - warm_bytes
        res["latency_cost_single_p50_x"] = res["single_ms_p50"] / report["in_ram"]["single_ms_p50"]
        res["latency_cost_batch_x"] = report["in_ram"]["batch_qps"] / res["batch_qps"]
        print(f"{name:15s} identical={res['identical']} single p50 {res['single_ms_p50']:.2f} ms "
              f"(x{res['latency_cost_single_p50_x']:.2f}), p99 {res['single_ms_p99']:.2f} ms, batches "
              f"{res['batch_qps']:.0f} q/s (x{res['latency_cost_batch_x']:.2f} slower); peak RSS "
              f"{peak.get('VmRSS', 0) / 1e6:.0f} MB (python+numpy {res['rss_before_open'].get('VmRSS', 0) / 1e6:.0f} MB, "
              f"anon growth {res['anon_peak_minus_python_bytes'] / 1e6:.0f} MB vs warm budget {warm_bytes / 1e6:.0f} MB)",
              flush=True)  # fmt: skip
    report["scenarios"] = scenarios
    report["total_s"] = time.perf_counter() - t_all
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out} ({report['total_s']:.0f}s)")
    return report


if __name__ == "__main__":
    main()
