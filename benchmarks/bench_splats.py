"""The splat layer on wordnet-minilm: feedback-trained ranking, energy, SOC, generation.

1. **Ranking.** A simulated user prefers a hidden random subset P of the items (20%). For
   each of the training queries the user sees the top 10 (at the λ under test) and marks
   returned items in P relevant, the others not relevant (``collection.feedback``).
   Reported: precision@10 of preferred items (share of the top 10 in P) before and after
   training, on the training queries (repeated searches) and on held-out queries, at
   several λ; and recall@10 against the exact ground truth at λ = 0 before and after
   training (it must not move: λ = 0 is plain search, which is also checked id for id).
   Each λ is trained on a fresh copy of the usage state (feedback and hits are reset).
2. **Energy etc.** Time to fit the mixture, energy of 5000 queries, novelty, find_gaps.
3. **SOC.** ``criticality(0.8)`` (pairs from the join over the index's fine lists) against
   the exact all-pairs baseline in the same run (edge recall, statistics, time), and
   ``consolidate(0.9)``.
4. **Generation** on a 10–20K subset, both sources (MALA on the item-splat energy, the
   default; MALA on the cluster mixture): KS statistic between generated samples' energies
   and the stored items' energies (under the cluster mixture), and each sample's nearest
   stored item.

    .venv/bin/python benchmarks/bench_splats.py            # 100K items; writes benchmarks/results/splats.json
    .venv/bin/python benchmarks/bench_splats.py --quick    # 20K items, fewer queries
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _datasets import load_wordnet_minilm  # noqa: E402

import m2m  # noqa: E402
from m2m.index_manager import IndexSettings  # noqa: E402
from m2m.splats.soc import avalanche_scan_pairs, threshold_pairs  # noqa: E402


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov statistic sup |F_a − F_b|."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


def ks_critical(n: int, m: int, c_alpha: float = 1.628) -> float:
    """Asymptotic critical value at the 1% level (c = 1.628)."""
    return c_alpha * float(np.sqrt((n + m) / (n * m)))


def reset_usage(col: m2m.Collection) -> None:
    """Forget hits and feedback (bench only: between λ runs)."""
    layer = col._splat_layer
    with layer.mutex:
        layer._reset(np.arange(len(layer.rowid)))
        layer.clock = 0


def precision_at_10(
    col: m2m.Collection, queries: np.ndarray, preferred: np.ndarray, lam: float
) -> tuple[float, list]:
    res = col.query(queries, n_results=10, splat_lambda=lam, include=[])
    rows = [[int(i) for i in r] for r in res["ids"]]
    return float(np.mean([preferred[r].mean() for r in rows])), rows


def recall_at_10(rows: list, gt: np.ndarray) -> float:
    return float(np.mean([len(set(r) & set(g[:10].tolist())) / 10 for r, g in zip(rows, gt, strict=True)]))


def bench_ranking(col, data, args, out) -> None:
    rng = np.random.default_rng(0)
    n = col.count()
    preferred = rng.random(n) < 0.2
    q_train = data.queries[: args.train_queries]
    q_test = data.queries[args.train_queries : args.train_queries + args.test_queries]
    gt_train = data.gt[: args.train_queries]
    rows = {}
    reset_usage(col)
    p0_train, plain_train = precision_at_10(col, q_train, preferred, 0.0)
    p0_test, _ = precision_at_10(col, q_test, preferred, 0.0)
    recall_before = recall_at_10(plain_train, gt_train)
    print(
        f"before feedback: precision@10 of preferred train {p0_train:.3f} test {p0_test:.3f}; recall@10 {recall_before:.4f}"
    )
    for lam in args.lambdas:
        reset_usage(col)
        t0 = time.perf_counter()
        n_feedback = 0
        for _rnd in range(args.rounds):
            for lo in range(0, len(q_train), 100):
                res = col.query(q_train[lo : lo + 100], n_results=10, splat_lambda=lam, include=[])
                ids = [i for r in res["ids"] for i in r]
                good = [i for i in ids if preferred[int(i)]]
                bad = [i for i in ids if not preferred[int(i)]]
                if good:
                    col.feedback(good, relevant=True)
                if bad:
                    col.feedback(bad, relevant=False)
                n_feedback += len(ids)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        p_train, _ = precision_at_10(col, q_train, preferred, lam)
        query_s = time.perf_counter() - t0
        p_test, _ = precision_at_10(col, q_test, preferred, lam)
        _, rows_plain_after = precision_at_10(col, q_train, preferred, 0.0)
        recall_after = recall_at_10(rows_plain_after, gt_train)
        identical = rows_plain_after == plain_train
        rows[str(lam)] = {
            "precision_at_10_train_before": p0_train,
            "precision_at_10_train_after": p_train,
            "precision_at_10_heldout_before": p0_test,
            "precision_at_10_heldout_after": p_test,
            "recall_at_10_lambda0_before": recall_before,
            "recall_at_10_lambda0_after": recall_after,
            "lambda0_results_identical_after_feedback": identical,
            "feedback_events": n_feedback,
            "train_seconds": train_s,
            "query_seconds_per_query": query_s / len(q_train),
        }
        print(
            f"λ={lam}: precision@10 train {p0_train:.3f} -> {p_train:.3f}, held-out {p0_test:.3f} -> {p_test:.3f}; "
            f"λ=0 recall@10 {recall_before:.4f} -> {recall_after:.4f} (ids identical: {identical}); "
            f"{query_s / len(q_train) * 1e3:.2f} ms/query"
        )
    out["ranking"] = {
        "preferred_fraction": float(preferred.mean()),
        "train_queries": len(q_train),
        "heldout_queries": len(q_test),
        "rounds": args.rounds,
        "eta": col.splat_settings.eta,
        "by_lambda": rows,
    }
    reset_usage(col)


def bench_energy(col, data, out) -> None:
    t0 = time.perf_counter()
    stats = col.refit_splats()
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    e = col.energy(data.queries)
    energy_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    nov = col.novelty(data.queries)
    novelty_s = time.perf_counter() - t0
    rand = np.random.default_rng(1).standard_normal((1000, data.base.shape[1]))
    nov_rand = col.novelty(rand)
    t0 = time.perf_counter()
    gaps = col.find_gaps(5)
    gaps_s = time.perf_counter() - t0
    print(
        f"fit {stats['n_clusters']} clusters ({stats['fit_source']}) in {fit_s:.1f}s; energy of {len(e)} queries "
        f"{energy_s:.2f}s; novelty of held-out queries 10/50/90% {np.round(np.quantile(nov, [0.1, 0.5, 0.9]), 3)}, "
        f"random directions min {nov_rand.min():.4f}; {len(gaps.energies)} gaps in {gaps_s:.1f}s, "
        f"novelty {np.round(gaps.novelty, 3)}"
    )
    out["energy"] = {
        "n_clusters": stats["n_clusters"],
        "fit_source": stats["fit_source"],
        "fit_seconds": fit_s,
        "cluster_kappa_quantiles": stats["cluster_kappa_quantiles"],
        "energy_seconds_5000_queries": energy_s,
        "novelty_seconds_5000_queries": novelty_s,
        "heldout_query_novelty_q10_50_90": np.quantile(nov, [0.1, 0.5, 0.9]).tolist(),
        "random_direction_novelty_min": float(nov_rand.min()),
        "gaps": len(gaps.energies),
        "gaps_seconds": gaps_s,
        "gap_novelty": gaps.novelty.tolist(),
        "gap_barriers": gaps.barriers.tolist(),
        "gap_nearest_similarity": gaps.nearest_similarities[:, 0].tolist() if len(gaps.energies) else [],
    }


def bench_soc(col, data, args, out) -> None:
    t0 = time.perf_counter()
    col.splat_statistics()  # the cluster mixture the join partitions by (fitted once, then cached)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    crit = col.criticality(0.8)
    crit_s = time.perf_counter() - t0
    exact = None
    if not args.no_exact_soc:  # baseline: every pair, the statistic's definition
        unit = np.ascontiguousarray(data.base / np.linalg.norm(data.base, axis=1, keepdims=True), np.float32)
        t0 = time.perf_counter()
        src, dst, _ = threshold_pairs(unit, 0.8)
        exact_s = time.perf_counter() - t0
        st = avalanche_scan_pairs(len(unit), 0.8, src, dst).stats
        exact = {
            "seconds": exact_s,
            "n_edges": st.n_edges,
            "n_avalanches": st.n_avalanches,
            "branching_ratio": st.branching_ratio,
            "largest_fraction": st.largest_fraction,
            "susceptibility": st.susceptibility,
            "tau": None if st.power_law is None else st.power_law.tau,
            # the join's pairs are computed exactly, so they are a subset of these
            "edge_recall_of_join": crit["n_edges"] / st.n_edges if st.n_edges else 1.0,
            "speedup_of_join": exact_s / crit_s,
        }
        print(
            f"exact all pairs in {exact_s:.1f}s: {st.n_edges} edges, σ={st.branching_ratio:.3f}, "
            f"largest={st.largest_fraction:.5f}, χ={st.susceptibility:.3f}; join edge recall "
            f"{exact['edge_recall_of_join']:.4f}, {exact['speedup_of_join']:.1f}x faster"
        )
    t0 = time.perf_counter()
    rep = col.consolidate(threshold=0.9)
    cons_s = time.perf_counter() - t0
    sizes = np.bincount(rep.avalanche_sizes) if len(rep.avalanche_sizes) else np.zeros(0)
    print(
        f"splat fit {fit_s:.1f}s; criticality(0.8) in {crit_s:.1f}s: {crit['n_edges']} edges, "
        f"σ={crit['branching_ratio']}, largest={crit['largest_fraction']:.4f}, χ={crit['susceptibility']:.2f}, "
        f"regime {crit['regime']}; consolidate(0.9) in {cons_s:.1f}s: {len(rep.groups)} groups, "
        f"sizes {dict(enumerate(sizes.tolist()))}"
    )
    out["soc"] = {
        "splat_fit_seconds_before_criticality": fit_s,
        "criticality_0.8": crit,
        "criticality_seconds": crit_s,
        "criticality_exact_all_pairs": exact,
        "consolidate_0.9_groups": len(rep.groups),
        "consolidate_0.9_items": int(sum(len(g) for g in rep.groups)),
        "consolidate_seconds": cons_s,
        "criticality_0.9": rep.criticality,
    }


def bench_generation(data, args, out) -> None:
    x = data.base[: args.gen_items]
    with tempfile.TemporaryDirectory() as tmp:
        client = m2m.Client(tmp, index_settings=IndexSettings(threshold=10**9, background=False))
        col = client.create_collection("gen", dim=x.shape[1])
        col.add([str(i) for i in range(len(x))], x)
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        results = []
        runs = [(c, "clusters") for c in args.gen_clusters] + [(c, "items") for c in args.gen_clusters]
        for clusters, source in runs:
            col.refit_splats(clusters=clusters)
            t0 = time.perf_counter()
            s = col.generate(args.gen_samples, steps=200, seed=1, source=source)
            gen_s = time.perf_counter() - t0
            e_items, e_s = col.energy(unit), col.energy(s)
            d = ks_statistic(e_s, e_items)
            crit = ks_critical(len(e_s), len(e_items))
            nearest = np.max(s @ unit.T, axis=1)
            row = {
                "source": source,
                "clusters": clusters,
                "samples": len(s),
                "seconds": gen_s,
                "ks_statistic": d,
                "ks_critical_1pct": crit,
                "ks_passes_1pct": d < crit,
                "energy_mean_items": float(e_items.mean()),
                "energy_mean_samples": float(e_s.mean()),
                "energy_std_items": float(e_items.std()),
                "energy_std_samples": float(e_s.std()),
                "nearest_stored_cos_max": float(nearest.max()),
                "nearest_stored_cos_median": float(np.median(nearest)),
            }
            results.append(row)
            print(
                f"generate {len(s)} ({source}) from {len(x)} items, {clusters} clusters, {gen_s:.1f}s: KS D={d:.3f} "
                f"(1% critical {crit:.3f}); energy mean {e_s.mean():.1f} vs {e_items.mean():.1f}, "
                f"std {e_s.std():.1f} vs {e_items.std():.1f}; nearest stored cos max {nearest.max():.3f}, "
                f"median {np.median(nearest):.3f}"
            )
        client.close()
    out["generation"] = {"items": len(x), "by_clusters": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="20,000 items, 500 train / 500 held-out queries")
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.02, 0.05, 0.1, 0.2])
    ap.add_argument("--rounds", type=int, default=1, help="passes over the training queries")
    ap.add_argument("--skip", nargs="*", default=[], choices=["ranking", "energy", "soc", "generation"])
    ap.add_argument("--no-exact-soc", action="store_true", help="skip the all-pairs criticality baseline")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "splats.json")
    args = ap.parse_args()
    n_items = 20_000 if args.quick else 100_000
    args.train_queries = 500 if args.quick else 2000
    args.test_queries = 500 if args.quick else 2000
    args.gen_items = 10_000 if args.quick else 20_000
    args.gen_samples = 300 if args.quick else 1000
    args.gen_clusters = [1, 100] if args.quick else [1, 100, 400]

    data = load_wordnet_minilm()
    if n_items < len(data.base):  # ground truth of a prefix: brute force
        data.base = data.base[:n_items]
        sims = data.queries @ data.base.T
        data.gt = np.argsort(-sims, axis=1)[:, :10]
    out: dict = {
        "dataset": f"wordnet-minilm, first {len(data.base)} items",
        "machine": f"{platform.machine()}, {platform.processor() or '?'}, python {platform.python_version()}",
        "command": " ".join(sys.argv),
    }
    needs_collection = {"ranking", "energy", "soc"} - set(args.skip)
    if needs_collection:
        _run_collection_parts(data, args, out)
    if "generation" not in args.skip:
        bench_generation(data, args, out)
    _write(args, out)


def _run_collection_parts(data, args, out) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        client = m2m.Client(tmp, index_settings=IndexSettings(threshold=10**9, background=False))
        col = client.create_collection("wn", dim=data.base.shape[1])
        t0 = time.perf_counter()
        for lo in range(0, len(data.base), 10_000):
            col.add(
                [str(i) for i in range(lo, min(lo + 10_000, len(data.base)))], data.base[lo : lo + 10_000]
            )
        t1 = time.perf_counter()
        col.create_index()
        t2 = time.perf_counter()
        print(f"{col.count()} items added in {t1 - t0:.1f}s, index built in {t2 - t1:.1f}s")
        out["setup"] = {"add_seconds": t1 - t0, "index_seconds": t2 - t1, "index": col.index_stats()}
        if "ranking" not in args.skip:
            bench_ranking(col, data, args, out)
        if "energy" not in args.skip:
            bench_energy(col, data, out)
        if "soc" not in args.skip:
            bench_soc(col, data, args, out)
        client.close()


def _write(args, out) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.skip and args.out.exists():  # a partial run updates the sections it ran
        previous = json.loads(args.out.read_text())
        previous.update({k: v for k, v in out.items() if k not in ("command",)})
        previous.setdefault("partial_commands", []).append(out["command"])
        out = previous
    args.out.write_text(json.dumps(out, indent=2, default=float))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
