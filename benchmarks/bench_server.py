"""Load test of the M2M servers on loopback: 32 concurrent clients mixing queries and writes.

For each transport (REST, gRPC) a fresh ``python -m m2m serve`` subprocess serves a
store preloaded with WordNet MiniLM vectors; 4 worker processes x 8 threads (32
clients) run for ``--duration`` seconds, each operation a query (top-10 of a real
query vector) or, with probability ``--write-fraction``, an upsert of one item. Each
client upserts only its own ids (a pool of ``--pool`` ids), so the last write it saw
acknowledged for an id is the value that must be stored. After the phase the server
gets SIGTERM (it must exit 0), the store is reopened with the embedded API and every
acknowledged id is read back: its vector must equal the last acknowledged one
bit-for-bit and its metadata the last sequence number, otherwise it counts as a lost
write. The same mix runs in-process against the embedded API (32 threads) for the
cost of the calls without a network, plus single-thread embedded latencies.

    python benchmarks/bench_server.py --duration 60       # writes benchmarks/results/server.json

Only loopback addresses are ever used.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"  # loopback only, ever
DATA = Path(
    os.environ.get(
        "M2M_WORDNET", Path(__file__).resolve().parents[1].parent / "shared/datasets/wordnet-minilm"
    )
)
ROOT = Path(__file__).resolve().parents[1]
COLLECTION = "bench"


def load_vectors(n_base: int) -> tuple[np.ndarray, np.ndarray]:
    base = np.load(DATA / "base.f16.npy", allow_pickle=False, mmap_mode="r")[:n_base].astype(np.float32)
    queries = np.load(DATA / "queries.f16.npy", allow_pickle=False).astype(np.float32)
    return base, queries


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "mean_ms": None}
    a = np.asarray(values) * 1000
    return {
        "n": len(values),
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "mean_ms": round(float(a.mean()), 3),
    }


# -- the client loop (used by worker processes and by the embedded phase) -------------------------


def client_loop(
    collection, client_id: int, deadline: float, args, base: np.ndarray, queries: np.ndarray, out: dict
) -> None:
    """Run the op mix until ``deadline``; record latencies, errors and the last acknowledged write per id."""
    rng = random.Random(args.seed * 1000 + client_id)
    seq = 0
    while time.perf_counter() < deadline:
        write = rng.random() < args.write_fraction
        start = time.perf_counter()
        try:
            if write:
                seq += 1
                item = f"c{client_id}-{rng.randrange(args.pool)}"
                row = rng.randrange(args.preload, len(base))
                collection.upsert([item], base[row : row + 1], metadatas=[{"client": client_id, "seq": seq}])
                out["acked"][item] = [row, seq]
                out["write_lat"].append(time.perf_counter() - start)
            else:
                q = queries[rng.randrange(len(queries))]
                res = collection.query(q, n_results=10)
                if len(res["ids"][0]) != 10:
                    raise RuntimeError(f"query returned {len(res['ids'][0])} ids")
                out["query_lat"].append(time.perf_counter() - start)
        except Exception as exc:  # counted; the benchmark requires zero
            out["errors"] += 1
            if len(out["error_messages"]) < 10:
                out["error_messages"].append(f"{type(exc).__name__}: {exc}")


def run_threads(
    make_collection, first_client: int, n_threads: int, duration: float, args, base, queries
) -> list[dict]:
    outs = [
        {"query_lat": [], "write_lat": [], "errors": 0, "error_messages": [], "acked": {}}
        for _ in range(n_threads)
    ]
    collections = [make_collection() for _ in range(n_threads)]
    deadline = time.perf_counter() + duration
    threads = [
        threading.Thread(
            target=client_loop,
            args=(collections[i], first_client + i, deadline, args, base, queries, outs[i]),
        )
        for i in range(n_threads)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outs


def worker_main(args) -> None:
    """One worker process: ``--threads`` clients of one transport; results as JSON on stdout."""
    base, queries = load_vectors(args.n_base)
    if args.transport == "rest":
        from m2m.clients import HttpClient

        client = HttpClient(f"http://{HOST}:{args.port}")
    else:
        from m2m.clients import GrpcClient

        client = GrpcClient(f"{HOST}:{args.port}")
    # Wait for the parent's go signal on stdin so that every process starts at once.
    sys.stdin.readline()
    outs = run_threads(
        lambda: client.get_collection(COLLECTION),
        args.first_client,
        args.threads,
        args.duration,
        args,
        base,
        queries,
    )
    client.close()
    json.dump(outs, sys.stdout)


# -- phases ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def preload(path: Path, base: np.ndarray, n: int) -> None:
    import m2m

    with m2m.Client(path) as client:
        col = client.create_collection(COLLECTION, base.shape[1], "cosine")
        for i in range(0, n, 2000):
            j = min(n, i + 2000)
            col.add([f"p{k}" for k in range(i, j)], base[i:j], metadatas=[{"seq": 0}] * (j - i))


def verify(path: Path, outs: list[dict], base: np.ndarray, preloaded: int) -> dict:
    """Read back every acknowledged id from the reopened store; count the ones not as last acknowledged."""
    import m2m

    acked: dict[str, list[int]] = {}
    for out in outs:
        acked.update(out["acked"])  # ids are disjoint between clients
    ids = sorted(acked)
    lost = 0
    with m2m.Client(path) as client:
        col = client.get_collection(COLLECTION)
        count = col.count()
        got = col.get(ids=ids, include=["embeddings", "metadatas"]) if ids else {"ids": []}
        stored = {
            i: (e, m)
            for i, e, m in zip(
                got["ids"], got.get("embeddings") or [], got.get("metadatas") or [], strict=False
            )
        }
        for item in ids:
            row, seq = acked[item]
            if item not in stored:
                lost += 1
                continue
            vector, meta = stored[item]
            if not np.array_equal(vector, base[row]) or meta.get("seq") != seq:
                lost += 1
    return {
        "acknowledged_ids": len(ids),
        "lost_writes": lost,
        "final_count": count,
        "expected_count": preloaded + len(ids),
    }


def summarize(outs: list[dict], seconds: float) -> dict:
    q = [x for o in outs for x in o["query_lat"]]
    w = [x for o in outs for x in o["write_lat"]]
    return {
        "seconds": round(seconds, 2),
        "ops": len(q) + len(w),
        "throughput_ops_s": round((len(q) + len(w)) / seconds, 1),
        "errors": sum(o["errors"] for o in outs),
        "error_messages": [m for o in outs for m in o["error_messages"]][:10],
        "query": percentiles(q),
        "write": percentiles(w),
        "all": percentiles(q + w),
    }


def server_phase(transport: str, args, base: np.ndarray) -> dict:
    with tempfile.TemporaryDirectory(prefix="m2m-bench-server-") as tmp:
        path = Path(tmp) / "store"
        preload(path, base, args.preload)
        port, grpc_port = free_port(), free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "m2m",
                "--log-level",
                "WARNING",
                "serve",
                "--path",
                str(path),
                "--host",
                HOST,
                "--port",
                str(port),
                "--grpc-port",
                str(grpc_port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            from m2m.clients import HttpClient

            deadline = time.monotonic() + 60
            while True:
                try:
                    with HttpClient(f"http://{HOST}:{port}", timeout=2) as c:
                        c.heartbeat()
                    break
                except Exception:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"server did not start: {server.stderr.read()}") from None
                    time.sleep(0.1)
            target_port = port if transport == "rest" else grpc_port
            per = args.clients // args.procs
            workers = [
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        "--transport",
                        transport,
                        "--port",
                        str(target_port),
                        "--threads",
                        str(per),
                        "--first-client",
                        str(k * per),
                        "--duration",
                        str(args.duration),
                        "--seed",
                        str(args.seed),
                        "--pool",
                        str(args.pool),
                        "--preload",
                        str(args.preload),
                        "--n-base",
                        str(args.n_base),
                        "--write-fraction",
                        str(args.write_fraction),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    cwd=ROOT,
                )
                for k in range(args.procs)
            ]
            time.sleep(3.0)  # let every worker import and load its vectors before the clock starts
            start = time.perf_counter()
            for w in workers:
                w.stdin.write("go\n")
                w.stdin.flush()
            outs = []
            for w in workers:
                stdout, _ = w.communicate(timeout=args.duration + 300)
                outs.extend(json.loads(stdout))
            seconds = time.perf_counter() - start
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=120)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        result = summarize(outs, args.duration)
        result["wall_seconds_incl_startup"] = round(seconds, 2)
        result["server_exit_code"] = server.returncode
        result.update(verify(path, outs, base, args.preload))
        return result


def embedded_phase(args, base: np.ndarray, queries: np.ndarray) -> dict:
    import m2m

    with tempfile.TemporaryDirectory(prefix="m2m-bench-embedded-") as tmp:
        path = Path(tmp) / "store"
        preload(path, base, args.preload)
        # The same BLAS setting as the server (m2m serve --blas-threads 1), for a like-for-like cost.
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=1, user_api="blas")
        client = m2m.Client(path)
        col = client.get_collection(COLLECTION)
        # Single-thread call cost first (no contention): the floor a server adds to.
        single = {"query_lat": [], "write_lat": [], "errors": 0, "error_messages": [], "acked": {}}
        client_loop(
            col, 10_000, time.perf_counter() + min(10.0, args.duration / 3), args, base, queries, single
        )
        outs = run_threads(lambda: col, 0, args.clients, args.duration, args, base, queries)
        client.close()
        limiter.restore_original_limits()
        result = summarize(outs, args.duration)
        result["single_thread"] = {
            "query": percentiles(single["query_lat"]),
            "write": percentiles(single["write_lat"]),
        }
        outs.append(single)
        result.update(verify(path, outs, base, args.preload))
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=float, default=60.0, help="seconds of load per transport (default 60)"
    )
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--procs", type=int, default=4, help="client processes the clients are spread over")
    parser.add_argument(
        "--write-fraction", type=float, default=0.2, help="share of operations that are writes"
    )
    parser.add_argument("--pool", type=int, default=200, help="ids each client upserts into")
    parser.add_argument("--preload", type=int, default=5000, help="items stored before the load starts")
    parser.add_argument(
        "--n-base", type=int, default=20000, help="dataset rows used (preload + write vectors)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--transports", default="embedded,rest,grpc", help="phases to run, comma-separated")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "server.json"))
    # worker-process arguments
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--transport", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--first-client", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
        return
    if args.clients % args.procs:
        parser.error("--clients must be a multiple of --procs")
    base, queries = load_vectors(args.n_base)
    report = {
        "benchmark": "bench_server",
        "command": " ".join(["python", "benchmarks/bench_server.py", *sys.argv[1:]]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "config": {
            "duration_s": args.duration,
            "clients": args.clients,
            "client_processes": args.procs,
            "write_fraction": args.write_fraction,
            "ids_per_client": args.pool,
            "preloaded": args.preload,
            "dim": int(base.shape[1]),
            "metric": "cosine",
            "n_results": 10,
            "host": HOST,
            "dataset": "wordnet-minilm",
        },
        "results": {},
    }
    for phase in args.transports.split(","):
        print(f"phase {phase}: {args.clients} clients for {args.duration:.0f} s ...", flush=True)
        if phase == "embedded":
            result = embedded_phase(args, base, queries)
        else:
            result = server_phase(phase, args, base)
        report["results"][phase] = result
        print(
            f"  {result['throughput_ops_s']} ops/s, errors {result['errors']}, lost writes "
            f"{result['lost_writes']}/{result['acknowledged_ids']}, query p50 {result['query']['p50_ms']} ms "
            f"p99 {result['query']['p99_ms']} ms, write p50 {result['write']['p50_ms']} ms "
            f"p99 {result['write']['p99_ms']} ms",
            flush=True,
        )
    emb = report["results"].get("embedded")
    if emb:
        for phase in ("rest", "grpc"):
            r = report["results"].get(phase)
            if r and r["query"]["p50_ms"] and emb["single_thread"]["query"]["p50_ms"]:
                r["query_p50_over_embedded_single_thread"] = round(
                    r["query"]["p50_ms"] / emb["single_thread"]["query"]["p50_ms"], 2
                )
                r["throughput_vs_embedded_32_threads"] = round(
                    r["throughput_ops_s"] / emb["throughput_ops_s"], 3
                )
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    bad = [
        p
        for p, r in report["results"].items()
        if r["errors"]
        or r["lost_writes"]
        or r.get("server_exit_code", 0) != 0
        or r["final_count"] != r["expected_count"]
    ]
    if bad:
        print(f"FAILED: errors, lost writes or unclean exit in {bad}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
