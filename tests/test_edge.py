"""Edge snapshots and EdgeRouter against their oracles.

- float32 snapshots: the source collection's own HRM2 results (same ids, distances within
  1e-5) at several n_probe values, single and batched queries, after post-build writes;
- exhaustive search: brute force over the vectors (tests/conftest.brute_force_distances);
- int8 snapshots: brute force over the decoded int8 vectors (the exact quantity they rank
  by), the quantisation error bound, and recall@10 against the true neighbours;
- corruption: flipped bytes, truncation, missing files and bad configs raise
  SnapshotCorruptError (an IndexCorruptError) naming the file;
- isolation: the router runs in a subprocess where torch, the servers, wgpu, the
  integrations (and, with the m2m package stubbed, sqlite3 and the store) cannot be imported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import m2m
from conftest import brute_force_distances, clustered_vectors
from m2m.edge import EdgeRouter, SnapshotCorruptError, export_edge
from m2m.edge.export import add_export_edge_command, dequantize_int8
from m2m.errors import (
    DimensionMismatchError,
    IndexCorruptError,
    InvalidArgumentError,
    InvalidVectorError,
    NotFoundError,
)
from m2m.index_manager import IndexSettings

N, DIM, K = 2000, 32, 10
SRC = Path(__file__).resolve().parents[1] / "src"
METRICS = ("cosine", "ip", "l2")
CODEC_OF = {"cosine": "auto", "ip": "pca", "l2": "sq8"}


def _ids(n: int, start: int = 0) -> list[str]:
    # mixed lengths and non-ASCII ids exercise both id encodings
    return [f"doc-{i}" if i % 7 else f"é-{i}-漢字" for i in range(start, start + n)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One client, three indexed collections (one per metric) with post-build adds and deletes.

    Each uses another LOD 1 codec, so every codec's snapshot path is checked: float32 PCA codes
    (quantised by the int8 export), int8 SQ8 codes, and auto (PCA8 when numba is there)."""
    path = tmp_path_factory.mktemp("edge_store")
    client = m2m.Client(path, index_settings=IndexSettings(threshold=1 << 62, background=False))
    cols = {}
    for j, metric in enumerate(METRICS):
        x = clustered_vectors(N, DIM, n_clusters=24, spread=0.35, seed=10 + j)
        col = client.create_collection(f"c_{metric}", DIM, metric)
        col.add(_ids(N), x, metadatas=[{"i": i, "tag": f"t{i % 5}"} for i in range(N)])
        col.create_index(calib_queries=32, seed=j, codec=CODEC_OF[metric])
        extra = clustered_vectors(60, DIM, n_clusters=24, spread=0.35, seed=20 + j)
        col.add(_ids(60, start=N), extra)  # overflow rows of the index
        col.delete(ids=_ids(40, start=100))  # tombstones
        cols[metric] = col
    yield path, client, cols
    client.close()


@pytest.fixture(scope="module")
def snapshots(store, tmp_path_factory):
    _, _, cols = store
    out = {}
    root = tmp_path_factory.mktemp("edge_snaps")
    for metric, col in cols.items():
        for quant in (None, "int8"):
            name = f"{metric}_{quant or 'float32'}"
            out[metric, quant] = export_edge(col, root / name, quantization=quant, include_metadata=True)
    return out


def _queries(metric: str, m: int = 24, seed: int = 99) -> np.ndarray:
    return clustered_vectors(m, DIM, n_clusters=24, spread=0.5, seed=seed)


def _live(col) -> tuple[list[str], np.ndarray]:
    got = col.get(include=["embeddings"])
    return got["ids"], np.asarray(got["embeddings"], dtype=np.float32)


# -- float32: identical to the collection ------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
def test_float32_snapshot_reproduces_collection_results(store, snapshots, metric):
    col = store[2][metric]
    router = EdgeRouter(snapshots[metric, None])
    assert len(router) == N + 60 - 40 and router.quantization == "float32"
    qs = _queries(metric)
    for n_probe in (1, 3, 8, None, router.n_lists):
        for q in qs:
            ref = col.query(q, n_results=K, n_probe=n_probe, include=["distances"])
            res = router.search(q, k=K, n_probe=n_probe)
            keep = res.ids != ""
            assert res.ids.shape == (K,) and res.distances.shape == (K,)
            assert list(res.ids[keep]) == ref["ids"][0], (metric, n_probe)
            np.testing.assert_allclose(res.distances[keep], ref["distances"][0], atol=1e-5, rtol=0)
            assert np.all(np.isinf(res.distances[~keep]))
        # a batch (>= 8 queries takes the index's batched path) answers the same
        ref = col.query(qs, n_results=K, n_probe=n_probe, include=["distances"])
        res = router.search(qs, k=K, n_probe=n_probe)
        assert res.ids.shape == (len(qs), K)
        for i in range(len(qs)):
            keep = res.ids[i] != ""
            assert list(res.ids[i][keep]) == ref["ids"][i]
            np.testing.assert_allclose(res.distances[i][keep], ref["distances"][i], atol=1e-5, rtol=0)


@pytest.mark.parametrize("metric", METRICS)
def test_exhaustive_search_is_brute_force(store, snapshots, metric):
    ids, x = _live(store[2][metric])
    router = EdgeRouter(snapshots[metric, None])
    qs = _queries(metric, seed=5)
    truth = brute_force_distances(qs, x, metric)
    res = router.search(qs, k=K, n_probe=10**6)
    order = np.argsort(truth, axis=1)[:, :K]
    np.testing.assert_allclose(res.distances, np.take_along_axis(truth, order, axis=1), atol=1e-4)
    assert [list(r) for r in res.ids] == [[ids[j] for j in row] for row in order]


def test_target_recall_uses_the_calibration(store, snapshots):
    col = store[2]["cosine"]
    router = EdgeRouter(snapshots["cosine", None])
    calib = yaml.safe_load(snapshots["cosine", None].read_text())["search"]["calibration"]
    assert calib is not None
    q = _queries("cosine")[0]
    for target in (0.5, 0.9, 1.0):
        ref = col.query(q, n_results=K, target_recall=target, include=["distances"])
        res = router.search(q, k=K, target_recall=target)
        assert list(res.ids[res.ids != ""]) == ref["ids"][0]


# -- int8 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
def test_int8_snapshot_ranks_by_decoded_vectors(store, snapshots, metric):
    """Exhaustive int8 search = brute force over the decoded int8 vectors (the oracle)."""
    snap = snapshots[metric, "int8"]
    d = snap.parent
    codes = np.load(d / "vectors.npy", allow_pickle=False)
    decoded = dequantize_int8(
        codes, np.load(d / "vec_lo.npy", allow_pickle=False), np.load(d / "vec_scale.npy", allow_pickle=False)
    )
    router = EdgeRouter(snap)
    row_ids = router._ids_of(np.arange(len(router)))
    qs = _queries(metric, seed=7)
    if metric == "cosine":  # the query is normalised; the decoded vectors are used as they are
        qn = qs / np.linalg.norm(qs, axis=1, keepdims=True)
        truth = 1.0 + brute_force_distances(qn, decoded, "ip")
    else:
        truth = brute_force_distances(qs, decoded, metric)
    res = router.search(qs, k=K, n_probe=router.n_lists)
    np.testing.assert_allclose(res.distances, np.sort(truth, axis=1)[:, :K], atol=1e-4)
    # the ids are those of the true decoded distances
    pos = {s: i for i, s in enumerate(row_ids)}
    got = np.array([[truth[qi, pos[s]] for s in row] for qi, row in enumerate(res.ids)])
    np.testing.assert_allclose(got, res.distances, atol=1e-4)
    # probing fewer lists (int8 LOD 1 codes, then decoded re-rank): every distance is still
    # the decoded vector's, sorted, and the ids are distinct
    res = router.search(qs, k=K, n_probe=3)
    got = np.array([[truth[qi, pos[s]] for s in row] for qi, row in enumerate(res.ids)])
    np.testing.assert_allclose(got, res.distances, atol=1e-4)
    assert np.all(np.diff(res.distances, axis=1) >= 0)
    assert all(len(set(row)) == K for row in res.ids.tolist())


def test_int8_error_bound_and_recall(store, snapshots):
    """ip: |q·x - q·x̂| <= sum_j |q_j| scale_j / 2; recall@10 vs exact stays near float32's."""
    metric = "ip"
    col = store[2][metric]
    ids, x = _live(col)
    snap = snapshots[metric, "int8"]
    scale = np.load(snap.parent / "vec_scale.npy", allow_pickle=False)
    r8, r32 = EdgeRouter(snap), EdgeRouter(snapshots[metric, None])
    qs = _queries(metric, m=50, seed=3)
    truth = brute_force_distances(qs, x, metric)
    pos = {s: i for i, s in enumerate(ids)}
    res = r8.search(qs, k=K, n_probe=r8.n_lists)
    bound = (np.abs(qs) @ scale) / 2 + 1e-5
    exact = np.array([[truth[qi, pos[s]] for s in row] for qi, row in enumerate(res.ids)])
    assert np.all(np.abs(exact - res.distances) <= bound[:, None])
    true_top = [set(np.array(ids)[np.argsort(t)[:K]]) for t in truth]

    def recall(r):
        return np.mean([len(set(row) & t) / K for row, t in zip(r.ids, true_top, strict=True)])

    for n_probe in (4, r8.n_lists):
        rec8, rec32 = (
            recall(r8.search(qs, k=K, n_probe=n_probe)),
            recall(r32.search(qs, k=K, n_probe=n_probe)),
        )
        assert rec8 >= rec32 - 0.05, (n_probe, rec8, rec32)
    assert recall(r8.search(qs, k=K, n_probe=r8.n_lists)) >= 0.9


def test_int8_is_smaller(snapshots):
    def size(p):
        return sum(e["bytes"] for e in yaml.safe_load(p.read_text())["files"].values())

    for metric in METRICS:
        assert size(snapshots[metric, "int8"]) < 0.6 * size(snapshots[metric, None])


# -- metadata, ids, arguments ---------------------------------------------------------------------


def test_metadata_round_trip(store, snapshots):
    col = store[2]["cosine"]
    router = EdgeRouter(snapshots["cosine", "int8"])
    got = col.get(ids=[_ids(1, 7)[0], "doc-5", _ids(1, N + 3)[0]], include=["metadatas"])
    for item_id, meta in zip(got["ids"], got["metadatas"], strict=True):
        assert router.get_metadata(item_id) == meta
    with pytest.raises(NotFoundError, match="doc-101"):
        router.get_metadata("doc-101")  # deleted before the export
    path = export_edge(col, snapshots["cosine", "int8"].parent.parent / "nometa", quantization="int8")
    with pytest.raises(InvalidArgumentError, match="without metadata"):
        EdgeRouter(path).get_metadata("doc-5")


def test_utf8_and_unicode_id_formats_agree(store, tmp_path):
    col = store[2]["l2"]
    a = EdgeRouter(export_edge(col, tmp_path / "u", quantization=None, id_format="unicode"))
    b = EdgeRouter(export_edge(col, tmp_path / "b", quantization=None, id_format="utf8"))
    assert a.config["ids_format"] == "unicode" and b.config["ids_format"] == "utf8"
    qs = _queries("l2")
    ra, rb = a.search(qs, k=K, n_probe=4), b.search(qs, k=K, n_probe=4)
    assert ra.ids.tolist() == rb.ids.tolist()
    np.testing.assert_array_equal(ra.distances, rb.distances)
    all_ids = a._ids_of(np.arange(len(a))).tolist()
    assert all_ids == b._ids_of(np.arange(len(b))).tolist()
    assert sorted(all_ids) == sorted(col.get()["ids"]) and "é-7-漢字" in all_ids


def test_bad_queries_raise_typed_errors(snapshots):
    router = EdgeRouter(snapshots["cosine", None])
    with pytest.raises(DimensionMismatchError):
        router.search(np.zeros(DIM + 1))
    with pytest.raises(InvalidVectorError):
        router.search(np.full(DIM, np.nan))
    with pytest.raises(InvalidArgumentError):
        router.search(np.ones(DIM), k=0)
    with pytest.raises(InvalidArgumentError):
        router.search(np.ones(DIM), n_probe=0)
    with pytest.raises(InvalidArgumentError):
        export_edge(None, "unused", quantization="int4")  # type: ignore[arg-type]


def test_export_builds_missing_index_and_rejects_empty(tmp_path):
    client = m2m.Client(tmp_path / "s", index_settings=IndexSettings(threshold=1 << 62, background=False))
    try:
        col = client.create_collection("small", DIM, "cosine")
        with pytest.raises(InvalidArgumentError, match="empty"):
            export_edge(col, tmp_path / "e0")
        x = clustered_vectors(300, DIM, seed=4)
        col.add([f"s{i}" for i in range(300)], x)
        assert col.index_stats() is None
        router = EdgeRouter(export_edge(col, tmp_path / "e1", quantization=None))
        assert col.index_stats() is not None
        ref = col.query(x[0], n_results=K, n_probe=2, include=["distances"])
        res = router.search(x[0], k=K, n_probe=2)
        assert list(res.ids) == ref["ids"][0]
        # re-exporting another shape into the same folder leaves no stale files behind
        export_edge(col, tmp_path / "e1", quantization="int8")
        assert (tmp_path / "e1" / "vec_scale.npy").exists()
        export_edge(col, tmp_path / "e1", quantization=None)
        assert not (tmp_path / "e1" / "vec_scale.npy").exists()
        assert EdgeRouter(tmp_path / "e1").quantization == "float32"
        export_edge(col, tmp_path / "e1", quantization="int8")
        assert EdgeRouter(tmp_path / "e1").quantization == "int8"
    finally:
        client.close()


def test_cli_command(store, tmp_path):
    path, _, _ = store
    parser = argparse.ArgumentParser()
    add_export_edge_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "export-edge",
            "--path",
            str(path),
            "--collection",
            "c_ip",
            "--out",
            str(tmp_path / "cli"),
            "--quantization",
            "float32",
        ]
    )
    assert args.handler(args) == 0
    router = EdgeRouter(tmp_path / "cli" / "m2m_config.yaml")
    assert router.quantization == "float32" and len(router) == N + 20
    assert all(np.load(p, allow_pickle=False).dtype != object for p in (tmp_path / "cli").glob("*.npy"))


# -- checksums and corruption ---------------------------------------------------------------------


def _copy(src_config: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src_config.parent.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst / src_config.name


def test_flipped_byte_is_detected_naming_the_file(snapshots, tmp_path):
    config = _copy(snapshots["l2", None], tmp_path / "snap")
    path = config.parent / "vectors.npy"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(SnapshotCorruptError, match=r"vectors\.npy.*SHA-256") as info:
        EdgeRouter(config)
    assert isinstance(info.value, IndexCorruptError)
    EdgeRouter(config, verify=False)  # same size and header: only the hash can tell
    with pytest.raises(SnapshotCorruptError, match=r"vectors\.npy"):
        EdgeRouter(config, verify=False).verify()


@pytest.mark.parametrize("key", ["codes", "ids", "metadata", "offsets"])
def test_truncated_or_missing_file_is_detected(snapshots, tmp_path, key):
    config = _copy(snapshots["cosine", None], tmp_path / "snap")
    files = yaml.safe_load(config.read_text())["files"]
    name = files[key if key in files else "ids_utf8"]["file"]
    path = config.parent / name
    path.write_bytes(path.read_bytes()[:-9])
    for verify in (True, False):
        with pytest.raises(SnapshotCorruptError, match=rf"{name.replace('.', '[.]')}.*truncated"):
            EdgeRouter(config, verify=verify)
    path.unlink()
    with pytest.raises(SnapshotCorruptError, match=rf"{name.replace('.', '[.]')}.*missing"):
        EdgeRouter(config, verify=False)


def test_bad_config_is_detected(snapshots, tmp_path):
    config = _copy(snapshots["ip", "int8"], tmp_path / "snap")
    text = config.read_text()
    config.write_text(text.replace("format_version: 1", "format_version: 99"))
    with pytest.raises(SnapshotCorruptError, match="version 99"):
        EdgeRouter(config)
    config.write_text("format: [unclosed")
    with pytest.raises(SnapshotCorruptError, match="YAML"):
        EdgeRouter(config)
    with pytest.raises(SnapshotCorruptError, match="no edge snapshot config"):
        EdgeRouter(tmp_path / "nowhere")
    # checksums of two same-size files swapped: sizes pass, hashes do not
    cfg = yaml.safe_load(text)
    lo, sc = cfg["files"]["vec_lo"], cfg["files"]["vec_scale"]
    assert lo["bytes"] == sc["bytes"]
    lo["sha256"], sc["sha256"] = sc["sha256"], lo["sha256"]
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(SnapshotCorruptError, match=r"vec_(lo|scale)"):
        EdgeRouter(config)


# -- isolation: NumPy + PyYAML only ---------------------------------------------------------------

_BLOCKER = """
import sys, json, importlib.abc
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError("blocked for this test: " + name)
        return None
sys.meta_path.insert(0, Block())
for b in BLOCKED:
    assert b not in sys.modules, b
{prelude}
import numpy as np
from m2m.edge import EdgeRouter
r = EdgeRouter(sys.argv[1])
q = np.load(sys.argv[2], allow_pickle=False)
res = r.search(q, k=10, n_probe=4)
loaded = sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED))
print(json.dumps({{"ids": res.ids.tolist(), "d": res.distances.tolist(), "loaded": loaded}}))
"""

HEAVY = [
    "torch",
    "fastapi",
    "grpc",
    "wgpu",
    "sentence_transformers",
    "langchain_core",
    "llama_index",
    "starlette",
    "uvicorn",
    "faiss",
    "hnswlib",
]
# with the m2m package stubbed (its __init__ not run): the store and the index code too
STORE = [
    "sqlite3",
    "_sqlite3",
    "m2m.client",
    "m2m.collection",
    "m2m.storage",
    "m2m.index",
    "m2m.index_manager",
    "m2m.exact",
    "m2m.compute",
    "m2m.edge.export",
]
_STUB = f"""
import types
pkg = types.ModuleType("m2m")
pkg.__path__ = [{str(SRC / "m2m")!r}]
sys.modules["m2m"] = pkg
"""


@pytest.mark.parametrize("stub_package", [False, True], ids=["import_m2m", "stubbed_m2m"])
def test_router_runs_without_optional_dependencies(snapshots, tmp_path, stub_package):
    config = snapshots["cosine", None]
    qs = _queries("cosine", m=3)
    np.save(tmp_path / "q.npy", qs)
    blocked = HEAVY + (STORE if stub_package else [])
    script = _BLOCKER.format(blocked=blocked, prelude=_STUB if stub_package else "")
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.run(
        [sys.executable, "-c", script, str(config), str(tmp_path / "q.npy")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []
    expected = EdgeRouter(config).search(qs, k=10, n_probe=4)
    assert out["ids"] == expected.ids.tolist()
    np.testing.assert_allclose(np.array(out["d"]), expected.distances, atol=1e-6)
