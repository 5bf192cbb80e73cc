"""Data lake throughput: vectors per second delivered as torch batches.

Modes: plain (insertion order), shuffled, importance-sampled, with generation (10% Langevin
rows from the default item-splat sampler, the one behind ``Collection.generate``), and the
baseline ``generation[clusters]`` (the older Langevin chains on the cluster mixture, same run),
for batch sizes 1024 and 4096, over the 100,000 x 384 wordnet-minilm base (or a synthetic
clustered set of the same shape with --synthetic). The consumer takes each batch and does
nothing else, so the figure is the lake's delivery rate. Setup (snapshot, splat fit,
importance weights) is timed apart from streaming.

    .venv/bin/python benchmarks/bench_datalake.py            # writes benchmarks/results/datalake.json
    .venv/bin/python benchmarks/bench_datalake.py --quick    # 20,000 vectors, one repeat
    .venv/bin/python benchmarks/bench_datalake.py --modes generation 'generation[clusters]' --out /tmp/g.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import m2m  # noqa: E402
from m2m.index_manager import IndexSettings  # noqa: E402

WORDNET = (
    Path(
        os.environ.get(
            "M2M_WORDNET", Path(__file__).resolve().parents[1].parent / "shared/datasets/wordnet-minilm"
        )
    )
    / "base.f16.npy"
)

MODES = {
    "plain": {},
    "shuffled": {"shuffle": True},
    "importance": {"importance_sampling": True},
    "generation": {"generate_samples": True, "shuffle": True},
    "generation[clusters]": {"generate_samples": True, "shuffle": True, "generation_source": "clusters"},
    "importance+generation": {"importance_sampling": True, "generate_samples": True},
}


def machine_info() -> dict:
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "m2m": m2m.__version__,
    }


def load_vectors(n: int, synthetic: bool) -> tuple[np.ndarray, str]:
    if not synthetic and WORDNET.exists():
        x = np.load(WORDNET, allow_pickle=False)[:n].astype(np.float32)
        return x, f"wordnet-minilm base ({WORDNET})"
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((256, 384)).astype(np.float32)
    x = centres[rng.integers(0, 256, n)] + 0.3 * rng.standard_normal((n, 384)).astype(np.float32)
    return x, "synthetic: 256 gaussian clusters in 384-d"


def run_mode(collection, mode: str, batch_size: int, repeats: int, workers: int) -> dict:
    from m2m.datalake import SplatLakeDataset, make_loader

    options = MODES[mode]
    started = time.perf_counter()
    dataset = SplatLakeDataset(collection, batch_size, seed=0, **options)
    setup = time.perf_counter() - started
    loader = make_loader(dataset, num_workers=workers)
    rates, real_rates, rows, generated = [], [], 0, 0
    for _ in range(repeats):
        rows = generated = 0
        t0 = time.perf_counter()
        for batch in loader:
            rows += batch["vectors"].shape[0]
            generated += int(batch["generated"].sum())
        elapsed = time.perf_counter() - t0
        rates.append(rows / elapsed)
        real_rates.append((rows - generated) / elapsed)
    result = {
        "mode": mode,
        "batch_size": batch_size,
        "num_workers": workers,
        "setup_seconds": round(setup, 3),
        "rows_per_epoch": rows,
        "generated_per_epoch": generated,
        "vectors_per_s_median": round(statistics.median(rates)),
        "vectors_per_s_best": round(max(rates)),
        "stored_vectors_per_s_median": round(statistics.median(real_rates)),
        "repeats": repeats,
    }
    if dataset.splats is not None:
        result["splats"] = {
            "source": dataset.splats.source,
            "components": dataset.splats.mixture.n_components,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5, help="epochs per non-generating mode")
    parser.add_argument("--gen-repeats", type=int, default=2, help="epochs per generating mode")
    parser.add_argument("--quick", action="store_true", help="20,000 vectors, one repeat")
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument(
        "--workers", type=int, default=0, help="also run plain/shuffled with this many workers"
    )
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES), help="modes to run")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1024, 4096])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "datalake.json"))
    args = parser.parse_args()
    if args.quick:
        args.n, args.repeats, args.gen_repeats = 20_000, 1, 1

    x, source = load_vectors(args.n, args.synthetic)
    load_start = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        client = m2m.Client(folder, index_settings=IndexSettings(threshold=10**9))
        collection = client.create_collection("lake", x.shape[1])
        t0 = time.perf_counter()
        for lo in range(0, len(x), 20_000):
            collection.add([str(i) for i in range(lo, min(lo + 20_000, len(x)))], x[lo : lo + 20_000])
        ingest = time.perf_counter() - t0
        print(f"ingested {len(x)} x {x.shape[1]} in {ingest:.1f} s ({source})")
        for mode in args.modes:
            for batch_size in args.batch_sizes:
                repeats = args.gen_repeats if "generation" in mode else args.repeats
                res = run_mode(collection, mode, batch_size, repeats, 0)
                results.append(res)
                print(
                    f"{mode:>22} bs={batch_size:5d}: {res['vectors_per_s_median']:>12,} vectors/s "
                    f"(best {res['vectors_per_s_best']:,}; setup {res['setup_seconds']} s)"
                )
        if args.workers:
            for mode in [m for m in ("plain", "generation") if m in args.modes]:
                repeats = args.gen_repeats if "generation" in mode else args.repeats
                res = run_mode(collection, mode, 4096, repeats, args.workers)
                results.append(res)
                print(
                    f"{mode:>22} bs=4096 workers={args.workers}: {res['vectors_per_s_median']:>12,} vectors/s"
                )
        client.close()
    report = {
        "benchmark": "datalake",
        "command": "python benchmarks/bench_datalake.py " + " ".join(sys.argv[1:]),
        "data": {"source": source, "n": len(x), "dim": int(x.shape[1])},
        "ingest_seconds": round(ingest, 2),
        "machine": machine_info(),
        "load_average_start": [round(v, 2) for v in load_start],
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "target": "plain streaming >= 1,000,000 vectors/s (384-d)",
        "results": results,
        "notes": (
            "Delivered rate: the consumer only receives each batch dict of torch tensors. "
            "Generation modes count generated rows too (stored_vectors_per_s_median excludes them); "
            "they are bound by the Langevin sampler (20 MALA steps per generated row, float64 NumPy). "
            "'generation' uses the default item-splat sampler (m2m.splats.generate.sample_item_splats, "
            "as Collection.generate: each chain's 32 nearest items found by an exact scan of the N "
            "items, then MALA on their local energy); 'generation[clusters]' is the earlier sampler "
            "(MALA on the cluster mixture, 8 nearest splats per chain), measured in the same run "
            "as the baseline. Only the item sampler's samples pass the two-sample KS energy test "
            "(tests/test_datalake.py::test_generated_rows_follow_stored_energies_ks). "
            "The machine is shared with other jobs: see the load averages (2 cores). "
            "The collection has no HRM2 index (threshold above N), so the cluster mixture (importance "
            "sampling, generation[clusters]) is a spherical k-means with round(sqrt(N)) clusters."
        ),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
