"""M2M HRM2 benchmark: recall@10 vs speed against NumPy brute force, FAISS and hnswlib.

Everything runs on ONE thread (BLAS/OpenMP env vars are set before NumPy is imported,
faiss.omp_set_num_threads(1), hnswlib set_num_threads(1)). Single-query QPS = queries issued
one at a time from Python; batch QPS = all queries in one call. Each system is a small class
with ``build(base)`` and ``search(queries, k)``; a sweep of one search parameter traces the
recall/QPS curve, and the report gives each system's best QPS at recall@10 >= 0.90/0.95/0.99.

    python benchmarks/benchmark_m2m.py --dataset wordnet-minilm
    python benchmarks/benchmark_m2m.py --n-splats 100000            # synthetic clustered, --dim 640
    python benchmarks/benchmark_m2m.py --dataset synthetic-1m-128 --small-sweep
    python benchmarks/benchmark_m2m.py --dataset wordnet-minilm --quick   # CI sanity (seconds)

Writes benchmarks/results/<dataset>.json and .md.
"""

from __future__ import annotations

import os

for _var in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import ClassVar  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _datasets  # noqa: E402

from m2m.index import HRM2Index, HRM2Params  # noqa: E402

try:
    import psutil
except ImportError:  # pragma: no cover
    psutil = None

K = 10
THRESHOLDS = (0.90, 0.95, 0.99)
# probes per query for both IVF indexes (HRM2 and FAISS IVF): dense enough near the recall floors
IVF_SWEEP = [1, 2, 4, 8, 12, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128]


def rss() -> int:
    return psutil.Process().memory_info().rss if psutil else 0


def recall_at_k(found: np.ndarray, gt: np.ndarray, k: int = K) -> float:
    truth = gt[:, :k]
    hits = (found[:, :k, None] == truth[:, None, :]).any(axis=2).sum()
    return float(hits) / (found.shape[0] * k)


# ---- systems ----------------------------------------------------------------------------
class System:
    """A benchmarked index: build once, then search at each sweep value."""

    name = "?"
    sweep_name = ""
    sweep: ClassVar[list] = [None]
    max_single_queries: int | None = None

    def build(self, base: np.ndarray, metric: str) -> None:
        raise NotImplementedError

    def set(self, value) -> None:
        pass

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        return self.search_batch(q[None, :], k)[0]

    def index_bytes(self) -> int | None:
        return None

    def search_batch(self, qs: np.ndarray, k: int) -> np.ndarray:
        raise NotImplementedError


class BruteForce(System):
    name = "numpy-brute-force"
    max_single_queries = 100

    def build(self, base, metric):
        self.base = base

    def index_bytes(self):
        return int(self.base.nbytes)

    def search_batch(self, qs, k):
        out = []
        for s in range(0, qs.shape[0], 256):
            sims = qs[s : s + 256] @ self.base.T
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(sims, part, 1), axis=1)
            out.append(np.take_along_axis(part, order, 1))
        return np.vstack(out)

    def search_one(self, q, k):
        sims = self.base @ q
        part = np.argpartition(-sims, k - 1)[:k]
        return part[np.argsort(-sims[part])]


class HRM2(System):
    sweep_name = "n_probe"

    def __init__(self, lod: int = 2, params: HRM2Params | None = None, sweep=None, label: str | None = None):
        self.lod = lod
        self.params = params or HRM2Params()
        self.name = label or f"m2m-hrm2-lod{lod}"
        self.sweep = sweep or [*IVF_SWEEP, 192]
        self.n_probe = 8
        self.index: HRM2Index | None = None

    def build(self, base, metric):
        self.index = HRM2Index.build(base, np.arange(base.shape[0]), metric, self.params)

    def set(self, value):
        self.n_probe = value

    def index_bytes(self):
        return int(self.index.stats()["bytes"])

    def search_one(self, q, k):
        return self.index.search(q, k, n_probe=self.n_probe, lod=self.lod)[1]

    def search_batch(self, qs, k):
        return self.index.search(qs, k, n_probe=self.n_probe, lod=self.lod)[1]


class FaissIVF(System):
    sweep_name = "nprobe"

    def __init__(self, kind: str = "Flat", nlist: int = 1024, sweep=None, train_max: int = 256 * 1024):
        self.kind, self.nlist, self.train_max = kind, nlist, train_max
        self.name = f"faiss-ivf{nlist}-{kind.lower()}"
        self.sweep = sweep or IVF_SWEEP

    def build(self, base, metric):
        import faiss

        faiss.omp_set_num_threads(1)
        d = base.shape[1]
        mt = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        quant = faiss.IndexFlatL2(d) if mt == faiss.METRIC_L2 else faiss.IndexFlatIP(d)
        if self.kind == "Flat":
            self.index = faiss.IndexIVFFlat(quant, d, self.nlist, mt)
        else:
            self.index = faiss.IndexIVFScalarQuantizer(
                quant, d, self.nlist, faiss.ScalarQuantizer.QT_8bit, mt
            )
        train = base
        if base.shape[0] > self.train_max:  # FAISS would sample anyway; k-means on 1M is slow
            train = base[np.random.default_rng(0).choice(base.shape[0], self.train_max, replace=False)]
        self.index.train(train)
        self.index.add(base)
        self._quant = quant

    def set(self, value):
        self.index.nprobe = value

    def index_bytes(self):
        import faiss

        return int(faiss.serialize_index(self.index).size)

    def search_batch(self, qs, k):
        return self.index.search(qs, k)[1]


class FaissHNSW(System):
    sweep_name = "efSearch"

    def __init__(self, m: int = 32, sweep=None):
        self.m = m
        self.name = f"faiss-hnsw{m}"
        self.sweep = sweep or [16, 24, 32, 48, 64, 96, 128, 192, 256, 384]

    def build(self, base, metric):
        import faiss

        faiss.omp_set_num_threads(1)
        mt = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        self.index = faiss.IndexHNSWFlat(base.shape[1], self.m, mt)
        self.index.hnsw.efConstruction = 100
        self.index.add(base)

    def set(self, value):
        self.index.hnsw.efSearch = value

    def index_bytes(self):
        import faiss

        return int(faiss.serialize_index(self.index).size)

    def search_batch(self, qs, k):
        return self.index.search(qs, k)[1]


class Hnswlib(System):
    sweep_name = "ef"

    def __init__(self, m: int = 16, sweep=None):
        self.m = m
        self.name = f"hnswlib-m{m}"
        self.sweep = sweep or [10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384]

    def build(self, base, metric):
        import hnswlib

        space = {"cosine": "ip", "ip": "ip", "l2": "l2"}[metric]
        self.index = hnswlib.Index(space=space, dim=base.shape[1])
        self.index.init_index(max_elements=base.shape[0], ef_construction=200, M=self.m)
        self.index.set_num_threads(1)
        self.index.add_items(base, np.arange(base.shape[0]), num_threads=1)

    def set(self, value):
        self.index.set_ef(max(value, K))

    def index_bytes(self):
        return int(self.index.index_file_size())

    def search_batch(self, qs, k):
        return self.index.knn_query(qs, k=k, num_threads=1)[0].astype(np.int64)


# ---- measurement ------------------------------------------------------------------------
def time_single(system: System, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    found = np.empty((queries.shape[0], k), dtype=np.int64)
    lat = np.empty(queries.shape[0])
    for i in range(min(20, queries.shape[0])):  # warm caches / lazy allocations
        system.search_one(queries[i], k)
    for i in range(queries.shape[0]):
        t = time.perf_counter()
        found[i] = system.search_one(queries[i], k)
        lat[i] = time.perf_counter() - t
    return found, lat


def run_system(system: System, ds: _datasets.Dataset, n_single: int, quick: bool) -> dict:
    gc.collect()
    before = rss()
    t0 = time.perf_counter()
    system.build(ds.base, ds.metric)
    build_s = time.perf_counter() - t0
    mem = rss() - before
    rows = []
    nq = n_single if system.max_single_queries is None else min(n_single, system.max_single_queries)
    sweep = system.sweep[:4] if quick else system.sweep
    for value in sweep:
        system.set(value)
        found, lat = time_single(system, ds.queries[:nq], K)
        t = time.perf_counter()
        found_b = system.search_batch(ds.queries, K)
        batch_s = time.perf_counter() - t
        row = {
            system.sweep_name or "param": value,
            "recall_at_10": round(recall_at_k(found, ds.gt[:nq]), 4),
            "recall_at_10_batch": round(recall_at_k(found_b, ds.gt), 4),
            "qps_single": round(nq / lat.sum(), 1),
            "qps_p50": round(1.0 / float(np.percentile(lat, 50)), 1),  # robust to load spikes
            "qps_batch": round(ds.queries.shape[0] / batch_s, 1),
            "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 4),
            "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 4),
        }
        rows.append(row)
        print(
            f"  {system.name:24s} {system.sweep_name or '':8s}={value!s:5s} recall={row['recall_at_10']:.4f} "
            f"qps={row['qps_single']:8.0f} batch_qps={row['qps_batch']:8.0f} p50={row['p50_ms']:.3f}ms",
            flush=True,
        )
        if row["recall_at_10"] >= 0.999 and not quick:
            break
    best = {}
    for th in THRESHOLDS:
        ok = [r for r in rows if r["recall_at_10"] >= th]
        best[f"{th:.2f}"] = max(ok, key=lambda r: r["qps_single"]) if ok else None
    return {
        "name": system.name,
        "build_s": round(build_s, 3),
        "memory_bytes": int(mem),
        "index_bytes": system.index_bytes(),
        "sweep": rows,
        "best": best,
    }


def hrm2_extras(system: HRM2, ds: _datasets.Dataset, n_single: int, quick: bool) -> dict:
    """target_recall tracking, LOD table, filtered search."""
    ix = system.index
    out: dict = {"stats": {k: v for k, v in ix.stats().items() if k != "params"}}
    q = ds.queries[:n_single]
    gt = ds.gt[:n_single]
    # target_recall tracking
    tr = []
    for target in (0.8, 0.9, 0.95, 0.99):
        found = np.vstack([ix.search(q[i], K, target_recall=target)[1] for i in range(q.shape[0])])
        tr.append(
            {
                "target": target,
                "n_probe": ix.n_probe_for(target),
                "achieved": round(recall_at_k(found, gt), 4),
            }
        )
        print(f"  target_recall={target}: n_probe={tr[-1]['n_probe']} achieved={tr[-1]['achieved']}")
    out["target_recall"] = tr
    # LOD table at the n_probe calibrated for 0.95
    n_probe = ix.n_probe_for(0.95)
    lods = []
    for lod in (0, 1, 2):
        lat = np.empty(q.shape[0])
        found = np.empty((q.shape[0], K), np.int64)
        for i in range(q.shape[0]):
            t = time.perf_counter()
            found[i] = ix.search(q[i], K, n_probe=n_probe, lod=lod)[1]
            lat[i] = time.perf_counter() - t
        lods.append(
            {
                "lod": lod,
                "n_probe": n_probe,
                "recall_at_10": round(recall_at_k(found, gt), 4),
                "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 4),
                "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 4),
                "qps_single": round(q.shape[0] / lat.sum(), 1),
            }
        )
        print(f"  LOD{lod}: recall={lods[-1]['recall_at_10']} p50={lods[-1]['p50_ms']}ms")
    out["lod"] = lods
    # filtered search: a planted integer attribute 0..999, allowed = attribute < s * 1000
    rng = np.random.default_rng(123)
    attr = rng.integers(0, 1000, ds.base.shape[0])
    filt = []
    nf = min(q.shape[0], 200 if quick else 500)
    for sel in (0.5, 0.1, 0.01, 0.001):
        allowed = attr < round(sel * 1000)
        sub = np.flatnonzero(allowed)
        sims = ds.queries[:nf] @ ds.base[sub].T if ds.metric != "l2" else None
        part = np.argpartition(-sims, min(K, sub.size) - 1, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(sims, part, 1), axis=1)
        truth = sub[np.take_along_axis(part, order, 1)]
        lat = np.empty(nf)
        found = np.empty((nf, K), np.int64)
        for i in range(nf):
            t = time.perf_counter()
            found[i] = ix.search(ds.queries[i], K, allowed=allowed)[1]
            lat[i] = time.perf_counter() - t
        bad = int((~allowed[found[found >= 0]]).sum())
        filt.append(
            {
                "selectivity": sel,
                "n_allowed": int(sub.size),
                "recall_at_10": round(recall_at_k(found, truth), 4),
                "min_results": int((found >= 0).sum(1).min()),
                "disallowed_returned": bad,
                "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 4),
                "qps_single": round(nf / lat.sum(), 1),
            }
        )
        print(
            f"  filter {sel:>6}: recall={filt[-1]['recall_at_10']} qps={filt[-1]['qps_single']:.0f} "
            f"min_results={filt[-1]['min_results']} disallowed={bad}"
        )
    out["filtered"] = filt
    return out


def scaling(ds: _datasets.Dataset, n_single: int, full: HRM2, full_build_s: float) -> list[dict]:
    """HRM2 build time, LOD 0 latency and single-query QPS at target 0.95 on growing prefixes
    (the full-size point reuses the index measured above)."""
    rows = []
    n = ds.base.shape[0]
    for frac in (0.1, 0.3, 1.0):
        m = int(n * frac)
        base = ds.base[:m]
        if frac == 1.0:
            ix, build_s = full.index, full_build_s
            gt = ds.gt[:n_single, :K]
        else:
            t = time.perf_counter()
            ix = HRM2Index.build(base, np.arange(m), ds.metric, HRM2Params())
            build_s = time.perf_counter() - t
            gt = _datasets.exact_gt(base, ds.queries[:n_single], K, ds.metric)
        res = {"n": m, "build_s": round(build_s, 2), "n_lists": ix.n_lists}
        for lod in (0, 2):
            lat = np.empty(n_single)
            found = np.empty((n_single, K), np.int64)
            for i in range(n_single):
                t = time.perf_counter()
                found[i] = ix.search(ds.queries[i], K, target_recall=0.95, lod=lod)[1]
                lat[i] = time.perf_counter() - t
            res[f"lod{lod}_p50_ms"] = round(float(np.percentile(lat, 50)) * 1e3, 4)
            res[f"lod{lod}_recall"] = round(recall_at_k(found, gt), 4)
            res[f"lod{lod}_qps"] = round(n_single / lat.sum(), 1)
        rows.append(res)
        print(f"  scaling n={m}: {res}")
    return rows


def interleaved(
    systems: list[System], results: list[dict], ds: _datasets.Dataset, n_single: int
) -> list[dict]:
    """Each system at its fastest sweep point with recall@10 >= 0.95, timed query by query in
    turn (query i on every system before query i+1), so that all of them see the same load
    from other processes on a shared machine."""
    by_name = {r["name"]: r for r in results}
    chosen = []
    for system in systems:
        res = by_name.get(system.name)
        if res is None or isinstance(system, BruteForce):
            continue
        ok = [r for r in res["sweep"] if r["recall_at_10"] >= 0.95]
        if not ok:
            continue
        point = max(ok, key=lambda r: r["qps_p50"])
        value = point[system.sweep_name] if system.sweep_name else None
        system.set(value)
        chosen.append((system, value))
    q = ds.queries[:n_single]
    lat = np.zeros((len(chosen), q.shape[0]))
    found = np.zeros((len(chosen), q.shape[0], K), np.int64)
    for i in range(q.shape[0]):
        for j, (system, _) in enumerate(chosen):
            t = time.perf_counter()
            found[j, i] = system.search_one(q[i], K)
            lat[j, i] = time.perf_counter() - t
    rows = []
    for j, (system, value) in enumerate(chosen):
        rows.append(
            {
                "name": system.name,
                "param": system.sweep_name,
                "value": value,
                "recall_at_10": round(recall_at_k(found[j], ds.gt[: q.shape[0]]), 4),
                "qps_single": round(q.shape[0] / lat[j].sum(), 1),
                "qps_p50": round(1.0 / float(np.median(lat[j])), 1),
                "p50_ms": round(float(np.median(lat[j])) * 1e3, 4),
                "p99_ms": round(float(np.percentile(lat[j], 99)) * 1e3, 4),
            }
        )
        print(f"  interleaved {rows[-1]}")
    return rows


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "threads": 1,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        info["cpu"] = platform.processor()
    if psutil:
        info["ram_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    try:
        os.getloadavg()
        info["load_avg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    for mod in ("faiss", "hnswlib"):
        try:
            info[mod] = getattr(__import__(mod), "__version__", "installed")
        except ImportError:
            info[mod] = None
    return info


def markdown(result: dict) -> str:
    ds = result["dataset"]
    lines = [
        f"# M2M benchmark: {ds['name']}",
        "",
        f"{ds['description']}; {ds['n_queries']} queries, recall@10, one thread.",
        "",
    ]
    m = result["machine"]
    lines += [
        f"Machine: {m.get('cpu')} ({m.get('cpu_count')} cores, {m.get('ram_gib')} GiB), Python {m['python']}, "
        f"NumPy {m['numpy']}, faiss {m.get('faiss')}, hnswlib {m.get('hnswlib')}, {m['date_utc']}, "
        f"load average at start {m.get('load_avg_at_start')}.",
        "",
    ]
    lines += [
        "## Best single-query QPS at a recall floor",
        "",
        "QPS = queries / total time of 1,000 one-at-a-time queries; 1/p50 = the rate implied by the "
        "median latency (robust to load spikes from other processes on a shared machine).",
        "",
        "| system | build s | index MiB | RSS growth MiB | QPS @0.90 | QPS @0.95 | QPS @0.99 | 1/p50 @0.95 "
        "| p50 ms @0.95 | batch QPS @0.95 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in result["systems"]:
        cells = []
        for th in ("0.90", "0.95", "0.99"):
            b = s["best"][th]
            cells.append(f"{b['qps_single']:.0f}" if b else "—")
        b95 = s["best"]["0.95"]
        ib = f"{s['index_bytes'] / 2**20:.0f}" if s.get("index_bytes") else "—"
        ok95 = [r for r in s["sweep"] if r["recall_at_10"] >= 0.95]
        p50q = f"{max(r['qps_p50'] for r in ok95):.0f}" if ok95 else "—"
        lines.append(
            f"| {s['name']} | {s['build_s']:.2f} | {ib} | {s['memory_bytes'] / 2**20:.0f} | {' | '.join(cells)} | "
            f"{p50q} | {b95['p50_ms'] if b95 else '—'} | {b95['qps_batch'] if b95 else '—'} |"
        )
    lines += ["", "## Sweeps", ""]
    for s in result["systems"]:
        key = (
            next(
                (
                    k
                    for k in s["sweep"][0]
                    if k
                    not in (
                        "recall_at_10",
                        "recall_at_10_batch",
                        "qps_single",
                        "qps_p50",
                        "qps_batch",
                        "p50_ms",
                        "p99_ms",
                    )
                ),
                "param",
            )
            if s["sweep"]
            else "param"
        )
        lines.append(
            f"**{s['name']}** ({key}): "
            + ", ".join(f"{r[key]}: {r['recall_at_10']:.3f} / {r['qps_single']:.0f} qps" for r in s["sweep"])
        )
        lines.append("")
    ex = result.get("hrm2")
    if ex:
        lines += [
            "## HRM2 levels of detail (n_probe calibrated for 0.95)",
            "",
            "| LOD | recall@10 | p50 ms | p99 ms | QPS |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['lod']} | {r['recall_at_10']} | {r['p50_ms']} | {r['p99_ms']} | {r['qps_single']:.0f} |"
            for r in ex["lod"]
        ]
        lines += [
            "",
            "## target_recall tracking",
            "",
            "| target | n_probe | achieved recall@10 |",
            "|---:|---:|---:|",
        ]
        lines += [f"| {r['target']} | {r['n_probe']} | {r['achieved']} |" for r in ex["target_recall"]]
        lines += [
            "",
            "## Filtered search (planted attribute, bool mask)",
            "",
            "| selectivity | allowed | recall@10 | min results | disallowed returned | p50 ms | QPS |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['selectivity']} | {r['n_allowed']} | {r['recall_at_10']} | {r['min_results']} | {r['disallowed_returned']} | {r['p50_ms']} | {r['qps_single']:.0f} |"
            for r in ex["filtered"]
        ]
        st = ex["stats"]
        lines += [
            "",
            f"HRM2: {st['n_coarse']} coarse x {st['n_fine_total']} fine lists (sizes {st['list_size_min']}/{st['list_size_mean']:.0f}/{st['list_size_max']}), "
            f"codec {st['codec']} ({st['code_dim']} dims), {st['bytes'] / 2**20:.0f} MiB of arrays.",
        ]
    if result.get("interleaved"):
        lines += [
            "",
            "## Head to head at recall@10 >= 0.95 (interleaved: query i on every system before query i+1)",
            "",
            "| system | setting | recall@10 | QPS | 1/p50 | p50 ms | p99 ms |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['name']} | {r['param']}={r['value']} | {r['recall_at_10']} | {r['qps_single']:.0f} | "
            f"{r['qps_p50']:.0f} | {r['p50_ms']} | {r['p99_ms']} |"
            for r in result["interleaved"]
        ]
    if result.get("scaling"):
        lines += [
            "",
            "## HRM2 scaling (prefixes of the base set, target_recall=0.95)",
            "",
            "| n | lists | build s | LOD0 p50 ms | LOD2 p50 ms | LOD2 recall | LOD2 QPS |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['n']} | {r['n_lists']} | {r['build_s']} | {r['lod0_p50_ms']} | {r['lod2_p50_ms']} | {r['lod2_recall']} | {r['lod2_qps']:.0f} |"
            for r in result["scaling"]
        ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=None, help="wordnet-minilm | synthetic-640 | synthetic-1m-128")
    ap.add_argument("--n-splats", type=int, default=None, help="synthetic clustered collection of this size")
    ap.add_argument("--dim", type=int, default=640)
    ap.add_argument(
        "--queries", type=int, default=1000, help="single-query measurements use this many queries"
    )
    ap.add_argument("--quick", action="store_true", help="tiny sweep, few queries: a CI sanity check")
    ap.add_argument("--small-sweep", action="store_true", help="fewer sweep points (large datasets)")
    ap.add_argument(
        "--systems", default="all", help="comma list: brute,hrm2,faiss-ivf,faiss-sq8,faiss-hnsw,hnswlib"
    )
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--faiss-nlist", type=int, default=None, help="default 2**round(log2(4 sqrt(N)))")
    ap.add_argument("--faiss-train-max", type=int, default=256 * 1024, help="FAISS IVF training sample cap")
    ap.add_argument("--no-interleave", action="store_true", help="skip the interleaved head-to-head timing")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--tag", default="", help="suffix for the result file names (e.g. -hrm2-only)")
    args = ap.parse_args(argv)

    if args.n_splats and not args.dataset:
        ds = _datasets.load("synthetic", n=args.n_splats, dim=args.dim, n_queries=args.queries)
    else:
        ds = _datasets.load(args.dataset or "wordnet-minilm", n_queries=None)
    if args.quick:
        n = min(ds.base.shape[0], 20000)
        ds.base = ds.base[:n]
        ds.queries = ds.queries[:100]
        ds.gt = _datasets.exact_gt(ds.base, ds.queries, 100, ds.metric)
        ds.name += "-quick"
    n_single = min(args.queries, ds.queries.shape[0])
    print(
        f"dataset {ds.name}: base {ds.base.shape}, queries {ds.queries.shape}, single-query runs on {n_single}"
    )

    n = ds.base.shape[0]
    nlist = args.faiss_nlist or int(2 ** round(np.log2(4 * np.sqrt(n))))  # FAISS guidance: 4*sqrt(N) lists
    wanted = set(args.systems.split(",")) if args.systems != "all" else None

    def want(key):
        return wanted is None or key in wanted

    small = args.small_sweep or args.quick
    systems: list[System] = []
    if want("brute"):
        systems.append(BruteForce())
    hrm2 = HRM2(2, sweep=[2, 4, 8, 16, 32, 64, 128] if small else None)
    if want("hrm2"):
        systems.append(hrm2)
    if want("faiss-ivf"):
        systems.append(
            FaissIVF(
                "Flat",
                nlist,
                sweep=[2, 4, 8, 16, 32, 64, 128] if small else None,
                train_max=args.faiss_train_max,
            )
        )
    if want("faiss-sq8"):
        systems.append(
            FaissIVF(
                "SQ8",
                nlist,
                sweep=[2, 4, 8, 16, 32, 64, 128] if small else None,
                train_max=args.faiss_train_max,
            )
        )
    if want("faiss-hnsw"):
        systems.append(FaissHNSW(32, sweep=[16, 32, 64, 128, 256] if small else None))
    if want("hnswlib"):
        systems.append(Hnswlib(16, sweep=[16, 32, 64, 128, 256] if small else None))

    result = {
        "dataset": {
            "name": ds.name,
            "description": ds.description,
            "n": n,
            "dim": ds.base.shape[1],
            "n_queries": int(ds.queries.shape[0]),
            "n_single_queries": n_single,
            "metric": ds.metric,
        },
        "machine": machine(),
        "k": K,
        "systems": [],
    }
    hrm2_build_s = 0.0
    for system in systems:
        print(f"{system.name}: building")
        res = run_system(system, ds, n_single, args.quick)
        if system is hrm2:
            hrm2_build_s = res["build_s"]
        print(f"  built in {res['build_s']:.2f}s, +{res['memory_bytes'] / 2**20:.0f} MiB")
        result["systems"].append(res)
        if system is hrm2:
            # LOD 0 and LOD 1 of the same index
            for lod in (1, 0):
                view = HRM2(lod, sweep=[4, 16, 64] if small else [4, 8, 16, 32, 64, 128])
                view.index = hrm2.index
                view.build = lambda base, metric: None
                r = run_system(view, ds, n_single, args.quick)
                r["build_s"], r["memory_bytes"] = res["build_s"], res["memory_bytes"]
                result["systems"].append(r)
            result["hrm2"] = hrm2_extras(hrm2, ds, n_single, args.quick)
            if not args.no_scaling and not args.quick:
                result["scaling"] = scaling(ds, min(n_single, 300), hrm2, hrm2_build_s)
        gc.collect()
    if not args.quick and not args.no_interleave:
        result["interleaved"] = interleaved(systems, result["systems"], ds, n_single)
    for system in systems:
        system.index = None

    args.out.mkdir(parents=True, exist_ok=True)
    stem = ds.name + args.tag
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (args.out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {args.out / (stem + '.json')} and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
