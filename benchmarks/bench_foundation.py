"""Foundation benchmark on wordnet-minilm (100,000 x 384 real MiniLM vectors with their texts).

    python benchmarks/bench_foundation.py [--batch-size 10000] [--repeats 3] [--profile]

Measures, on the embedded store with exact search (the HRM2 index is switched off):
(a) durable ingest of 100K vectors + texts + one metadata field into a fresh collection;
(b) single-query exact search latency against a bare ``X @ q`` + ``np.argpartition`` measured
    in the same process, interleaved query by query, with default BLAS threads and with 1;
(c) recall@10 of exact search against the data set's ground truth;
(d) the time to reopen the stored collection in a fresh process.
Timings are repeated and their spread reported: other jobs may share the machine, so the
load average before and after is recorded too. Writes a table to stdout and JSON to
benchmarks/results/foundation.json. ``--profile`` adds a stage breakdown, a cProfile of one
ingest, and marginal-cost experiments (ingest without documents, metadata, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime
import gzip
import io
import json
import os
import platform
import pstats
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import m2m  # noqa: E402

DATA = Path(
    os.environ.get(
        "M2M_WORDNET", Path(__file__).resolve().parents[1].parent / "shared/datasets/wordnet-minilm"
    )
)
RESULTS = ROOT / "benchmarks" / "results"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
K = 10


# -- data and machine ------------------------------------------------------------------------------


def load_base(n: int | None = None, *, texts: bool = True) -> tuple[np.ndarray, list[str]]:
    vectors = np.load(DATA / "base.f16.npy", allow_pickle=False).astype(np.float32)
    lines: list[str] = []
    if texts:
        with gzip.open(DATA / "base.txt.gz", "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")[: len(vectors)]
    if n is not None:
        vectors, lines = vectors[:n], lines[:n]
    return vectors, lines


def machine() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    blas = None
    with contextlib.suppress(Exception):
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{blas.get('name')} {blas.get('version')}"
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": mem_gib,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas,
        "sqlite": sqlite3.sqlite_version,
        "m2m": m2m.__version__,
        "platform": platform.platform(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def spread(values: list[float]) -> dict:
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "runs": [round(v, 4) for v in values],
    }


def exact_client(path: Path) -> m2m.Client:
    """A client whose collections never build an HRM2 index: the foundation is exact search."""
    try:
        from m2m.index_manager import IndexSettings
    except ImportError:
        return m2m.Client(path)
    return m2m.Client(path, index_settings=IndexSettings(threshold=1 << 62))


# -- (a) ingest ------------------------------------------------------------------------------------


def ingest(
    path: Path,
    vectors: np.ndarray,
    texts: list[str] | None,
    metadatas: list[dict] | None,
    metric: str,
    batch_size: int,
    name: str = "wordnet",
    before_add=None,
) -> dict:
    """Add everything batch by batch into a fresh collection; each add is durable on return."""
    ids = [f"w{i}" for i in range(len(vectors))]
    t0 = time.perf_counter()
    client = exact_client(path)
    collection = client.create_collection(name, dim=vectors.shape[1], metric=metric)
    if before_add is not None:
        before_add(client)
    t1 = time.perf_counter()
    c1 = time.process_time()
    batch_s = []
    for start in range(0, len(vectors), batch_size):
        stop = start + batch_size
        b0 = time.perf_counter()
        collection.add(
            ids=ids[start:stop],
            embeddings=vectors[start:stop],
            metadatas=metadatas[start:stop] if metadatas is not None else None,
            documents=texts[start:stop] if texts is not None else None,
        )
        batch_s.append(time.perf_counter() - b0)
    t2 = time.perf_counter()
    c2 = time.process_time()
    assert collection.count() == len(vectors)
    sizes = {p.name: p.stat().st_size for p in path.glob("m2m.sqlite3*")}
    t3 = time.perf_counter()
    client.close()
    t4 = time.perf_counter()
    return {
        "metric": metric,
        "batch_size": batch_size,
        "open_and_create_s": t1 - t0,
        "add_s": t2 - t1,
        "add_cpu_s": c2 - c1,
        "close_s": t4 - t3,
        "slowest_batch_s": max(batch_s),
        "file_bytes": sizes,
    }


def run_ingests(args, vectors, texts, metadatas, workdir: Path) -> tuple[list[dict], dict[str, Path]]:
    runs, kept = [], {}
    for r in range(args.repeats):
        for metric in ("ip", "cosine") if r == 0 else ("ip",):
            path = workdir / f"ingest-{metric}-{r}"
            result = ingest(path, vectors, texts, metadatas, metric, args.batch_size)
            result["load_after"] = loadavg()
            runs.append(result)
            print(
                f"  ingest run {len(runs)} ({metric}): add {result['add_s']:.2f} s "
                f"(process CPU {result['add_cpu_s']:.2f} s), close {result['close_s']:.2f} s"
            )
            if metric not in kept:
                kept[metric] = path
            else:
                shutil.rmtree(path)
    return runs, kept


def batch_sweep(args, vectors, texts, metadatas, workdir: Path) -> list[dict]:
    out = []
    for size in args.sweep:
        path = workdir / f"sweep-{size}"
        result = ingest(path, vectors, texts, metadatas, "ip", size)
        out.append(
            {
                "batch_size": size,
                "add_s": result["add_s"],
                "add_cpu_s": result["add_cpu_s"],
                "load_after": loadavg(),
            }
        )
        print(
            f"  batch size {size:>6}: add {result['add_s']:.2f} s (process CPU {result['add_cpu_s']:.2f} s)"
        )
        shutil.rmtree(path)
    return out


# -- (a') where ingest time goes ---------------------------------------------------------------------


class StageTimer:
    """Wraps the store and mirror steps of a write with timers (this process only; no file changes).

    Records wall seconds and CPU seconds of the calling thread (SQLite runs in that thread), so
    the breakdown stays meaningful when other jobs compete for the cores.
    """

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self._undo: list = []

    def _patch(self, owner, attr: str, label: str, *, static: bool = False) -> None:
        if not hasattr(owner, attr):  # the code under test changed; time what exists
            return
        original = owner.__dict__[attr] if static else getattr(owner, attr)
        func = original.__func__ if static else original
        wall, cpu = self.wall, self.cpu

        def timed(*a, **kw):
            t, c = time.perf_counter(), time.thread_time()
            try:
                return func(*a, **kw)
            finally:
                wall[label] += time.perf_counter() - t
                cpu[label] += time.thread_time() - c

        setattr(owner, attr, staticmethod(timed) if static else timed)
        self._undo.append((owner, attr, original))

    def __enter__(self) -> StageTimer:
        from m2m import collection as coll_mod
        from m2m.storage import metadata_index, mirror, sqlite_store, validation

        store = sqlite_store.SQLiteStore
        for attr in ("ids", "metadatas", "documents", "embeddings"):
            self._patch(validation, attr, f"validate {attr}")
        self._patch(coll_mod, "encode_metadata", "json encode metadata (inside executemany)")
        self._patch(coll_mod, "vector_blobs", "vector blobs")
        self._patch(store, "insert_items", "sqlite insert items (executemany)", static=True)
        self._patch(store, "index_documents", "fts index documents (2 tables)", static=True)
        for attr in ("next_rowid", "log_changes", "trim_change_log", "bump_version"):
            self._patch(store, attr, f"sqlite {attr}", static=True)
        self._patch(mirror.CollectionMirror, "put_many", "mirror put_many")
        self._patch(mirror.CollectionMirror, "_reserve", "mirror grow arrays (_reserve)")
        self._patch(metadata_index.MetadataIndex, "set_many", "metadata index set_many")
        self._patch(coll_mod.Collection, "_on_changes", "index hook (_on_changes)")
        original_tx = store.transaction
        wall, cpu = self.wall, self.cpu

        @contextlib.contextmanager
        def transaction(self_, action):
            t, c = time.perf_counter(), time.thread_time()
            with original_tx(self_, action) as conn:
                wall["sqlite begin immediate"] += time.perf_counter() - t
                cpu["sqlite begin immediate"] += time.thread_time() - c
                yield conn
                t, c = time.perf_counter(), time.thread_time()
            wall["sqlite commit (WAL write + fsync)"] += time.perf_counter() - t
            cpu["sqlite commit (WAL write + fsync)"] += time.thread_time() - c

        store.transaction = transaction
        self._undo.append((store, "transaction", original_tx))
        return self

    def __exit__(self, *exc) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)

    def exclusive(self, kind: str) -> dict[str, float]:
        """Times with nested timers subtracted from their parents, so the rows add up."""
        t = defaultdict(float, self.wall if kind == "wall" else self.cpu)
        t["sqlite insert items (executemany)"] -= t["json encode metadata (inside executemany)"]
        t["mirror put_many"] -= t["mirror grow arrays (_reserve)"] + t["metadata index set_many"]
        return {k: v for k, v in t.items() if k in self.wall}


FTS_VARIANTS = {
    "trigram case_sensitive 1 (current)": "tokenize='trigram case_sensitive 1'",
    "trigram case_sensitive 1, detail=none": "tokenize='trigram case_sensitive 1', detail=none",
    "unicode61 remove_diacritics 2 (current)": "tokenize='unicode61 remove_diacritics 2'",
    "unicode61 remove_diacritics 2, detail=column": "tokenize='unicode61 remove_diacritics 2', detail=column",
}


def fts_variants(texts: list[str], workdir: Path, batch: int) -> dict:
    """Bulk-index the texts into one external-content FTS5 table per variant, as the store does.

    For trigram tables, also checks that substring matches equal ``instr()`` (the oracle):
    a phrase MATCH with full detail, a GLOB (which the trigram index serves) with detail=none.
    """
    out = {}
    needles = ["body of water", "tool", "ing the", "(botany)"]
    for label, options in FTS_VARIANTS.items():
        path = workdir / "fts.sqlite3"
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("CREATE TABLE items (rowid INTEGER PRIMARY KEY, document TEXT)")
        conn.execute(
            f"CREATE VIRTUAL TABLE f USING fts5(document, content='items', content_rowid='rowid', {options})"
        )
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO items VALUES (?, ?)", enumerate(texts, 1))
        conn.execute("COMMIT")
        t, c = time.perf_counter(), time.thread_time()
        for start in range(1, len(texts) + 1, batch):
            conn.execute("BEGIN")
            conn.execute(
                "INSERT INTO f (rowid, document) SELECT rowid, document FROM items WHERE rowid BETWEEN ? AND ?",
                (start, start + batch - 1),
            )
            conn.execute("COMMIT")
        result = {"wall_s": time.perf_counter() - t, "cpu_s": time.thread_time() - c}
        if "trigram" in label:
            checks = {}
            for needle in needles:
                t = time.perf_counter()
                if "detail=none" in label:
                    pattern = "*" + "".join(f"[{ch}]" if ch in "*?[]" else ch for ch in needle) + "*"
                    rows = conn.execute("SELECT rowid FROM f WHERE document GLOB ?", (pattern,)).fetchall()
                else:
                    phrase = '"' + needle.replace('"', '""') + '"'
                    rows = conn.execute("SELECT rowid FROM f WHERE f MATCH ?", (phrase,)).fetchall()
                ms = 1e3 * (time.perf_counter() - t)
                oracle = conn.execute(
                    "SELECT rowid FROM items WHERE instr(document, ?) > 0", (needle,)
                ).fetchall()
                checks[needle] = {
                    "matches": len(rows),
                    "equals_instr": sorted(rows) == sorted(oracle),
                    "ms": ms,
                }
            result["substring_checks"] = checks
        conn.close()
        result["db_and_wal_bytes"] = sum(p.stat().st_size for p in workdir.glob("fts.sqlite3*"))
        for p in workdir.glob("fts.sqlite3*"):
            p.unlink()
        out[label] = result
        print(f"    {result['wall_s']:7.2f} s wall {result['cpu_s']:6.2f} s CPU  FTS5 {label}")
    return out


BULK_SCHEMA = """
CREATE TABLE items (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT, collection_id INTEGER NOT NULL, id TEXT NOT NULL,
    vector BLOB NOT NULL, metadata TEXT, document TEXT, UNIQUE (collection_id, id)
);
"""


def bulk_insert_variants(
    vectors: np.ndarray, texts: list[str], metadatas: list[dict], workdir: Path, batch: int
) -> dict:
    """The items insert alone, two ways, in standalone SQLite with the store's schema and pragmas.

    ``executemany``: one Python tuple and one JSON encode per row (what the store does).
    ``json_each``: one statement per batch; ids, metadata and documents travel as one JSON array
    (encoded in one C call) and vectors as one blob cut with ``substr``. Both are read back and
    compared with the input (the oracle).
    """
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    ids = [f"w{i}" for i in range(len(vectors))]
    step = vectors.shape[1] * 4
    insert = (
        "INSERT INTO items (rowid, collection_id, id, vector, metadata, document) VALUES (?, ?, ?, ?, ?, ?)"
    )

    def executemany(conn, start, stop):
        data = np.ascontiguousarray(vectors[start:stop], dtype="<f4").tobytes()
        rows = (
            (
                i + 1,
                1,
                ids[i],
                data[(i - start) * step : (i - start + 1) * step],
                encoder.encode(metadatas[i]),
                texts[i],
            )
            for i in range(start, stop)
        )
        conn.executemany(insert, rows)

    def json_each(conn, start, stop):
        data = np.ascontiguousarray(vectors[start:stop], dtype="<f4").tobytes()
        payload = encoder.encode([[ids[i], metadatas[i], texts[i]] for i in range(start, stop)])
        conn.execute(
            "INSERT INTO items (rowid, collection_id, id, vector, metadata, document) "
            f"SELECT ?1 + key, 1, value ->> 0, substr(?2, key * {step} + 1, {step}), value -> '$[1]', value ->> 2 "
            "FROM json_each(?3)",
            (start + 1, data, payload),
        )

    out = {}
    for label, fill in (
        ("executemany, JSON per row (as the store)", executemany),
        ("json_each + substr", json_each),
    ):
        path = workdir / "bulk.sqlite3"
        conn = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "cache_size=-65536"):
            conn.execute(f"PRAGMA {pragma}")
        conn.executescript(BULK_SCHEMA)
        t, c = time.perf_counter(), time.thread_time()
        for start in range(0, len(vectors), batch):
            conn.execute("BEGIN IMMEDIATE")
            fill(conn, start, min(start + batch, len(vectors)))
            conn.execute("COMMIT")
        result = {"wall_s": time.perf_counter() - t, "cpu_s": time.thread_time() - c}
        rows = conn.execute("SELECT id, vector, metadata, document FROM items ORDER BY rowid").fetchall()
        stored = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1)
        result["identical_to_input"] = bool(
            len(rows) == len(vectors)
            and np.array_equal(stored, vectors)
            and all(
                r[0] == ids[i] and r[3] == texts[i] and json.loads(r[2]) == metadatas[i]
                for i, r in enumerate(rows)
            )
        )
        conn.close()
        for p in workdir.glob("bulk.sqlite3*"):
            p.unlink()
        out[label] = result
        print(
            f"    {result['wall_s']:7.2f} s wall {result['cpu_s']:6.2f} s CPU  {label} (identical: {result['identical_to_input']})"
        )
    return out


def reopen_variants(db_path: Path, workdir: Path) -> dict:
    """Where reopen time goes: the item scan as the store runs it and alternatives, on a copy.

    The store's ``scan_items`` filters on ``collection_id`` and orders by rowid; SQLite serves
    the filter from the ``UNIQUE (collection_id, id)`` index and then sorts every row, vectors
    included, in a temporary b-tree. The alternatives avoid that sort. Also compares decoding
    the metadata JSON row by row (as the mirror does) with one ``json.loads`` per batch.
    """
    copy = workdir / "reopen-copy.sqlite3"
    shutil.copyfile(db_path, copy)
    wal = db_path.with_name(db_path.name + "-wal")
    if wal.exists():
        shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
    conn = sqlite3.connect(copy, isolation_level=None)
    columns = "rowid, id, vector, metadata, document IS NOT NULL"
    query = f"SELECT {columns} FROM items {{}} WHERE collection_id = ? ORDER BY rowid"
    out: dict = {}

    def scan(label: str, sql: str) -> None:
        runs = []
        for _ in range(3):
            t, c = time.perf_counter(), time.thread_time()
            cursor = conn.execute(sql, (1,))
            n = 0
            while rows := cursor.fetchmany(20_000):
                n += len(rows)
            runs.append((time.perf_counter() - t, time.thread_time() - c))
        plan = "; ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, (1,)))
        out[label] = {
            "wall_s": min(r[0] for r in runs),
            "cpu_s": min(r[1] for r in runs),
            "rows": n,
            "plan": plan,
        }
        print(
            f"    {out[label]['wall_s']:7.2f} s wall {out[label]['cpu_s']:6.2f} s CPU  scan: {label} [{plan}]"
        )

    scan("as the store (ORDER BY rowid)", query.format(""))
    scan("NOT INDEXED (rowid order, no sort)", query.format("NOT INDEXED"))
    conn.execute("CREATE INDEX items_by_collection ON items (collection_id)")
    scan("with an index on (collection_id)", query.format(""))
    texts = [r[0] for r in conn.execute("SELECT metadata FROM items ORDER BY rowid")]
    conn.close()
    for p in workdir.glob("reopen-copy.sqlite3*"):
        p.unlink()
    t = time.thread_time()
    one_by_one = [None if s is None else json.loads(s) for s in texts]
    per_row = time.thread_time() - t
    t = time.thread_time()
    batched = json.loads("[" + ",".join("null" if s is None else s for s in texts) + "]")
    batch = time.thread_time() - t
    out["metadata json.loads per row, cpu_s"] = per_row
    out["metadata json.loads one batch, cpu_s"] = batch
    out["metadata batch decode equal"] = one_by_one == batched
    print(
        f"    {per_row:7.2f} s CPU per-row json.loads vs {batch:.2f} s one batch (equal: {one_by_one == batched})"
    )
    return out


def profile_reopen(path: Path) -> dict:
    """cProfile of Client + get_collection + count on the stored 100K collection (this process)."""
    profiler = cProfile.Profile()
    t, c = time.perf_counter(), time.process_time()
    profiler.enable()
    client = exact_client(path)
    client.get_collection("wordnet").count()
    profiler.disable()
    result = {"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c}
    client.close()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
    (RESULTS / "foundation_reopen_profile.txt").write_text(text.getvalue())
    print(f"  reopen under cProfile: {result['wall_s']:.2f} s wall, {result['cpu_s']:.2f} s CPU")
    return result


def profile_ingest(args, vectors, texts, metadatas, workdir: Path) -> dict:
    """Stage timings, a cProfile listing, and marginal costs measured by leaving parts out."""
    out: dict = {}
    with StageTimer() as timer:
        result = ingest(workdir / "stages", vectors, texts, metadatas, "ip", args.batch_size)
    shutil.rmtree(workdir / "stages")
    wall, cpu = timer.exclusive("wall"), timer.exclusive("cpu")
    wall["other (python glue, untimed)"] = result["add_s"] - sum(wall.values())
    cpu["other (python glue, untimed)"] = result["add_cpu_s"] - sum(cpu.values())
    order = sorted(wall, key=lambda k: -cpu.get(k, 0.0))
    out["stages"] = {
        "add_s": result["add_s"],
        "add_cpu_s": result["add_cpu_s"],
        "wall_s": {k: wall[k] for k in order},
        "cpu_s": {k: cpu[k] for k in order},
    }
    print(
        f"  stage breakdown of one ingest (add {result['add_s']:.2f} s wall, {result['add_cpu_s']:.2f} s CPU):"
    )
    for label in order:
        share = 100 * cpu[label] / result["add_cpu_s"]
        print(f"    {wall[label]:7.2f} s wall {cpu[label]:6.2f} s CPU {share:5.1f}%  {label}")

    profiler = cProfile.Profile()
    profiler.enable()
    ingest(workdir / "cprofile", vectors, texts, metadatas, "ip", args.batch_size)
    profiler.disable()
    shutil.rmtree(workdir / "cprofile")
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(30)
    (RESULTS / "foundation_ingest_profile.txt").write_text(text.getvalue())

    from m2m.storage import sqlite_store

    def normal_sync(client) -> None:
        client._store._writer.execute("PRAGMA synchronous=NORMAL")

    experiments = {
        "as benchmarked (vectors + documents + metadata)": dict(texts=texts, metadatas=metadatas),
        "without documents (no FTS, no text)": dict(texts=None, metadatas=metadatas),
        "without metadata": dict(texts=texts, metadatas=None),
        "vectors only": dict(texts=None, metadatas=None),
        "synchronous=NORMAL (WAL), everything else as benchmarked": dict(
            texts=texts, metadatas=metadatas, before_add=normal_sync
        ),
    }
    out["leave_one_out"] = {}
    print("  leave-one-out ingests:")
    for label, kw in experiments.items():
        path = workdir / "experiment"
        r = ingest(
            path,
            vectors,
            kw["texts"],
            kw["metadatas"],
            "ip",
            args.batch_size,
            before_add=kw.get("before_add"),
        )
        shutil.rmtree(path)
        out["leave_one_out"][label] = {"add_s": r["add_s"], "add_cpu_s": r["add_cpu_s"]}
        print(f"    {r['add_s']:7.2f} s wall {r['add_cpu_s']:6.2f} s CPU  {label}")
    for keep in (("items_words",), ("items_trigram",)):
        original = sqlite_store.SQLiteStore._FTS_TABLES
        sqlite_store.SQLiteStore._FTS_TABLES = keep
        try:
            path = workdir / "experiment"
            r = ingest(path, vectors, texts, metadatas, "ip", args.batch_size)
            shutil.rmtree(path)
        finally:
            sqlite_store.SQLiteStore._FTS_TABLES = original
        label = f"only the {keep[0]} FTS table filled"
        out["leave_one_out"][label] = {"add_s": r["add_s"], "add_cpu_s": r["add_cpu_s"]}
        print(f"    {r['add_s']:7.2f} s wall {r['add_cpu_s']:6.2f} s CPU  {label}")
    print("  FTS5 variants, standalone SQLite, bulk INSERT ... SELECT per batch:")
    out["fts_variants"] = fts_variants(texts, workdir, args.batch_size)
    print("  items insert alone, standalone SQLite:")
    out["bulk_insert_variants"] = bulk_insert_variants(vectors, texts, metadatas, workdir, args.batch_size)
    return out


# -- (b, c, d) run in fresh processes: reopen, latency, recall --------------------------------------------


def percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q))


def latency(collection, bare_vectors: np.ndarray, queries: np.ndarray, metric: str, repeats: int) -> dict:
    """Interleaved per-query timings of M2M and of the bare NumPy scan, best first top-10 both."""
    if metric == "cosine":
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)

    def bare(q: np.ndarray) -> np.ndarray:
        scores = bare_vectors @ q
        part = np.argpartition(-scores, K)[:K]
        return part[np.argsort(-scores[part])]

    for q in queries[:20]:  # warm-up
        bare(q)
        collection.query(query_embeddings=q, n_results=K, include=[])
    blocks = []
    mismatched = 0
    clock, cpu_clock = time.perf_counter_ns, time.process_time_ns
    for _ in range(repeats):
        wall = {"bare": [], "ids": [], "distances": []}
        cpu = {"bare": [], "ids": [], "distances": []}
        for q in queries:
            t0, c0 = clock(), cpu_clock()
            expected = bare(q)
            t1, c1 = clock(), cpu_clock()
            got = collection.query(query_embeddings=q, n_results=K, include=[])
            t2, c2 = clock(), cpu_clock()
            collection.query(query_embeddings=q, n_results=K, include=["distances"])
            t3, c3 = clock(), cpu_clock()
            for key, t, c in (
                ("bare", t1 - t0, c1 - c0),
                ("ids", t2 - t1, c2 - c1),
                ("distances", t3 - t2, c3 - c2),
            ):
                wall[key].append(t)
                cpu[key].append(c)
            mismatched += [int(i[1:]) for i in got["ids"][0]] != expected.tolist()
        w = {k: np.asarray(v, dtype=np.float64) / 1e3 for k, v in wall.items()}
        c = {k: np.asarray(v, dtype=np.float64) / 1e3 for k, v in cpu.items()}
        blocks.append(
            {
                "bare_us": {"median": percentile(w["bare"], 50), "p99": percentile(w["bare"], 99)},
                "m2m_ids_us": {"median": percentile(w["ids"], 50), "p99": percentile(w["ids"], 99)},
                "m2m_distances_us": {
                    "median": percentile(w["distances"], 50),
                    "p99": percentile(w["distances"], 99),
                },
                "ratio_median_ids": percentile(w["ids"], 50) / percentile(w["bare"], 50),
                "ratio_p99_ids": percentile(w["ids"], 99) / percentile(w["bare"], 99),
                "ratio_median_distances": percentile(w["distances"], 50) / percentile(w["bare"], 50),
                "ratio_p99_distances": percentile(w["distances"], 99) / percentile(w["bare"], 99),
                "process_cpu_us_median": {k: percentile(v, 50) for k, v in c.items()},
                "ratio_median_cpu_ids": percentile(c["ids"], 50) / max(percentile(c["bare"], 50), 1e-9),
            }
        )
    return {
        "queries_per_block": len(queries),
        "blocks": blocks,
        "ratio_median_ids": spread([blk["ratio_median_ids"] for blk in blocks]),
        "ratio_median_distances": spread([blk["ratio_median_distances"] for blk in blocks]),
        "ratio_p99_ids": spread([blk["ratio_p99_ids"] for blk in blocks]),
        "ratio_p99_distances": spread([blk["ratio_p99_distances"] for blk in blocks]),
        "ratio_median_cpu_ids": spread([blk["ratio_median_cpu_ids"] for blk in blocks]),
        "id_lists_differing_from_bare": mismatched,
    }


def recall(collection, queries: np.ndarray, gt: np.ndarray, base: np.ndarray) -> dict:
    t0 = time.perf_counter()
    result = collection.query(query_embeddings=queries, n_results=K, include=[])
    seconds = time.perf_counter() - t0
    got = np.asarray([[int(i[1:]) for i in row] for row in result["ids"]])
    hits = np.asarray([len(set(g) & set(t)) for g, t in zip(got, gt[:, :K], strict=True)])
    # A miss is a tie when the swapped items score equally in float32 (rounding order differs).
    missed = np.flatnonzero(hits < K)
    tie_gaps = [float(queries[q] @ base[gt[q, K - 1]] - queries[q] @ base[got[q, K - 1]]) for q in missed]
    return {
        "queries": len(queries),
        "recall_at_10": float(hits.mean() / K),
        "queries_with_a_miss": len(missed),
        "max_score_gap_of_misses": max(map(abs, tie_gaps), default=0.0),
        "batch_query_s": seconds,
    }


def child(args) -> None:
    """One fresh process: reopen the stored collections, then latency and recall; JSON to stdout."""
    out: dict = {"threads": {v: os.environ.get(v) for v in THREAD_VARS}}
    t0 = time.perf_counter()
    client = exact_client(Path(args.path_ip))
    collection = client.get_collection("wordnet")
    n = collection.count()
    out["reopen_s"] = time.perf_counter() - t0
    assert n == args.n, (n, args.n)
    base = load_base(args.n, texts=False)[0]
    queries = np.load(DATA / "queries.f16.npy", allow_pickle=False).astype(np.float32)
    gt = np.load(DATA / "gt.i32.npy", allow_pickle=False)
    rng = np.random.default_rng(7)
    sample = queries[np.sort(rng.choice(len(queries), args.queries, replace=False))]
    out["latency_ip"] = latency(collection, base, sample, "ip", args.repeats)
    full = args.n > int(gt.max())  # the ground truth indexes the full base
    if args.recall_queries and full:
        out["recall_ip"] = recall(collection, queries[: args.recall_queries], gt[: args.recall_queries], base)
    client.close()
    client = exact_client(Path(args.path_cosine))
    collection = client.get_collection("wordnet")
    normalized = base / np.linalg.norm(base, axis=1, keepdims=True)
    out["latency_cosine"] = latency(collection, normalized, sample, "cosine", args.repeats)
    if args.recall_queries and full:
        m = min(args.recall_queries, 1000)
        out["recall_cosine"] = recall(collection, queries[:m], gt[:m], base)
    client.close()
    print("RESULT " + json.dumps(out))


def run_child(args, paths: dict[str, Path], threads: str | None) -> dict:
    env = dict(os.environ)
    for var in THREAD_VARS:
        env.pop(var, None)
        if threads is not None:
            env[var] = threads
    cmd = [
        sys.executable, __file__, "--child",
        "--path-ip", str(paths["ip"]), "--path-cosine", str(paths["cosine"]),
        "--n", str(args.n), "--queries", str(args.queries), "--repeats", str(args.repeats),
        "--recall-queries", str(args.recall_queries if threads is None else 0),
    ]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child failed:\n{out.stderr[-4000:]}")
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def reopen_times(paths: dict[str, Path], repeats: int) -> dict:
    """Import + Client + get_collection + count in a fresh interpreter, ``repeats`` times."""
    code = (
        "import sys, time; t0 = time.perf_counter(); sys.path.insert(0, sys.argv[2]); "
        "import m2m; from m2m.index_manager import IndexSettings; t1 = time.perf_counter(); "
        "c = m2m.Client(sys.argv[1], index_settings=IndexSettings(threshold=1 << 62)); "
        "n = c.get_collection('wordnet').count(); t2 = time.perf_counter(); "
        "print(t1 - t0, t2 - t1, n)"
    )
    imports, opens = [], []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", code, str(paths["ip"]), str(ROOT / "src")],
            capture_output=True,
            text=True,
            check=True,
        )
        a, b, _n = out.stdout.split()
        imports.append(float(a))
        opens.append(float(b))
    return {"import_m2m_s": spread(imports), "open_to_first_count_s": spread(opens)}


# -- main --------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=10_000, help="items per add call (default 10,000)")
    p.add_argument("--repeats", type=int, default=3, help="ingest runs and latency blocks (default 3)")
    p.add_argument("--queries", type=int, default=300, help="queries per latency block (default 300)")
    p.add_argument(
        "--recall-queries", type=int, default=5000, help="queries for recall@10 (default all 5,000)"
    )
    p.add_argument("--n", type=int, default=100_000, help="base vectors to use (default all 100,000)")
    p.add_argument("--sweep", type=lambda s: [int(x) for x in s.split(",") if x], default=[],
                   help="also time these batch sizes once each, e.g. 2000,10000,50000")  # fmt: skip
    p.add_argument(
        "--profile", action="store_true", help="stage breakdown, cProfile and leave-one-out ingests"
    )
    p.add_argument("--workdir", default=None, help="where stores are written (default: a temp folder)")
    p.add_argument("--out", default=str(RESULTS / "foundation.json"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--path-ip", help=argparse.SUPPRESS)
    p.add_argument("--path-cosine", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    report: dict = {"machine": machine(), "load_before": loadavg(), "settings": {
        "n": args.n, "batch_size": args.batch_size, "repeats": args.repeats, "queries": args.queries,
        "recall_queries": args.recall_queries, "k": K, "index": "off (exact search)",
        "metadata": "one int field per item: {'words': number of words of its text}",
    }}  # fmt: skip
    print(f"machine: {report['machine']['cpu']}, {report['machine']['usable_cores']} cores, "
          f"{report['machine']['ram_gib']} GiB; load {report['load_before']}")  # fmt: skip
    vectors, texts = load_base(args.n)
    metadatas = [{"words": len(t.split())} for t in texts]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="m2m-bench-", dir=args.workdir))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        print(
            f"(a) ingest {len(vectors)} vectors + texts + metadata, batch {args.batch_size}, into {workdir}"
        )
        runs, paths = run_ingests(args, vectors, texts, metadatas, workdir)
        report["ingest"] = {
            "runs": runs,
            "add_s": spread([r["add_s"] for r in runs]),
            "add_cpu_s": spread([r["add_cpu_s"] for r in runs]),
        }
        if args.sweep:
            report["ingest"]["batch_sweep"] = batch_sweep(args, vectors, texts, metadatas, workdir)
        if args.profile:
            report["ingest"]["profile"] = profile_ingest(args, vectors, texts, metadatas, workdir)
        del vectors, texts, metadatas
        print("(b, c) latency and recall in fresh processes: default threads, then 1 thread")
        report["default_threads"] = run_child(args, paths, None)
        report["one_thread"] = run_child(args, paths, "1")
        print("(d) reopen in fresh processes")
        report["reopen"] = reopen_times(paths, args.repeats)
        if args.profile:
            report["reopen"]["profile"] = profile_reopen(paths["ip"])
            report["reopen"]["scan_variants"] = reopen_variants(paths["ip"] / "m2m.sqlite3", workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    report["load_after"] = loadavg()
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"\nwrote {args.out}")
    return 0


def print_table(r: dict) -> None:
    a = r["ingest"]["add_s"]
    ac = r["ingest"]["add_cpu_s"]
    print(f"\n{'measure':58} {'median':>10} {'min':>9} {'max':>9}")
    n = r["settings"]["n"]
    print(
        f"{f'(a) ingest {n} (add calls, durable), s':58} {a['median']:10.2f} {a['min']:9.2f} {a['max']:9.2f}"
    )
    print(
        f"{f'(a) ingest {n}: process CPU seconds':58} {ac['median']:10.2f} {ac['min']:9.2f} {ac['max']:9.2f}"
    )
    for key, label in (("default_threads", "default threads"), ("one_thread", "1 thread")):
        for metric in ("ip", "cosine"):
            lat = r[key][f"latency_{metric}"]
            b = statistics.median(blk["bare_us"]["median"] for blk in lat["blocks"])
            m = statistics.median(blk["m2m_ids_us"]["median"] for blk in lat["blocks"])
            print(f"{f'(b) {metric}, {label}: bare X@q+argpartition, us':58} {b:10.0f}")
            print(f"{f'(b) {metric}, {label}: m2m query include=[], us':58} {m:10.0f}")
            for name in (
                "ratio_median_ids",
                "ratio_median_distances",
                "ratio_p99_ids",
                "ratio_p99_distances",
                "ratio_median_cpu_ids",
            ):
                s = lat[name]
                print(
                    f"{f'(b) {metric}, {label}: {name}':58} {s['median']:10.2f} {s['min']:9.2f} {s['max']:9.2f}"
                )
    for metric in ("ip", "cosine"):
        rec = r["default_threads"].get(f"recall_{metric}")
        if rec:
            label = f"(c) recall@10 {metric} ({rec['queries']} queries)"
            print(f"{label:58} {rec['recall_at_10']:10.4f}")
    o = r["reopen"]["open_to_first_count_s"]
    print(
        f"{f'(d) reopen {n}: Client + get_collection + count, s':58} {o['median']:10.2f} {o['min']:9.2f} {o['max']:9.2f}"
    )
    print(
        f"{'(d) reopen in the child process, default threads, s':58} {r['default_threads']['reopen_s']:10.2f}"
    )
    print(f"load average before {r['load_before']}, after {r['load_after']}")


if __name__ == "__main__":
    raise SystemExit(main())
