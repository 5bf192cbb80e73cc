"""The HRM2 index inside a collection: when it is built, how it follows writes, its files.

Oracles: brute force over what the collection stores, and the exact search a collection
does without an index.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import m2m
from conftest import clustered_vectors
from m2m.index.hrm2 import HRM2Params
from m2m.index_manager import IndexSettings

SMALL = HRM2Params(n_coarse=4, n_fine=4, calib_queries=32)


def _client(path: Path, threshold: int = 10**9, background: bool = False) -> m2m.Client:
    return m2m.Client(
        path, index_settings=IndexSettings(threshold=threshold, params=SMALL, background=background)
    )


def _brute(collection: m2m.Collection, queries: np.ndarray, k: int) -> list[list[str]]:
    got = collection.get(include=["embeddings"])
    ids = np.asarray(got["ids"])
    x = np.asarray(got["embeddings"], dtype=np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    d = 1 - q @ x.T
    return [list(ids[np.argsort(row, kind="stable")[:k]]) for row in d]


def _all_lists(collection: m2m.Collection) -> int:
    return collection.index_stats()["n_fine_total"]


def test_full_probe_equals_brute_force_after_deletes_and_upserts(tmp_path: Path) -> None:
    client = _client(tmp_path)
    col = client.create_collection("c", dim=16)
    x = clustered_vectors(2000, 16, seed=1)
    col.add([f"i{i}" for i in range(2000)], x)
    col.create_index()
    assert col.index_stats() is not None
    rng = np.random.default_rng(2)
    # Deletes and upserts are honoured at once, without a rebuild.
    col.delete([f"i{i}" for i in range(0, 2000, 7)])
    moved = [f"i{i}" for i in range(1, 2000, 11)]
    col.upsert(moved, rng.standard_normal((len(moved), 16)).astype(np.float32))
    col.add([f"n{i}" for i in range(300)], clustered_vectors(300, 16, seed=3))
    queries = clustered_vectors(40, 16, seed=4)
    res = col.query(queries, n_results=10, n_probe=_all_lists(col), include=[])
    assert res["ids"] == _brute(col, queries, 10)
    deleted = {f"i{i}" for i in range(0, 2000, 7)} - set(moved)  # upsert re-creates
    assert not deleted & {i for row in res["ids"] for i in row}


def test_index_builds_automatically_past_the_threshold(tmp_path: Path) -> None:
    client = _client(tmp_path, threshold=1500, background=True)
    col = client.create_collection("c", dim=16)
    col.add([f"i{i}" for i in range(1000)], clustered_vectors(1000, 16, seed=1))
    assert col.index_stats() is None  # below the threshold: exact search
    col.add([f"j{i}" for i in range(1000)], clustered_vectors(1000, 16, seed=2))
    col.wait_for_index()
    stats = col.index_stats()
    assert stats is not None and stats["n"] == 2000
    client.close()


def test_saved_index_is_reused_and_caught_up_after_reopen(tmp_path: Path) -> None:
    client = _client(tmp_path)
    col = client.create_collection("c", dim=16)
    col.add([f"i{i}" for i in range(1500)], clustered_vectors(1500, 16, seed=1))
    col.create_index()
    client.close()
    files = list((tmp_path / "indexes").rglob("state.json"))
    assert len(files) == 1
    # Another process writes while no index is open: the saved index becomes stale.
    script = textwrap.dedent(
        f"""
        import numpy as np, m2m
        from m2m.index_manager import IndexSettings
        c = m2m.Client({str(tmp_path)!r}, index_settings=IndexSettings(threshold=10**9))
        col = c.get_collection("c")
        col.delete(["i0", "i1", "i2"])
        col.add(["x0"], np.full((1, 16), 0.25, dtype=np.float32))
        os._exit(0)  # no close: the writes are durable, the saved index is now stale
        """
    )
    subprocess.run([sys.executable, "-c", "import os\n" + script], check=True, timeout=120)
    client = _client(tmp_path)
    col = client.get_collection("c")
    assert col.index_stats()["n"] == 1498
    queries = np.vstack([np.full((1, 16), 0.25, dtype=np.float32), clustered_vectors(10, 16, seed=9)])
    res = col.query(queries, n_results=5, n_probe=_all_lists(col), include=[])
    assert res["ids"] == _brute(col, queries, 5)
    assert res["ids"][0][0] == "x0"


def test_corrupt_index_files_are_rebuilt(tmp_path: Path) -> None:
    client = _client(tmp_path)
    col = client.create_collection("c", dim=16)
    col.add([f"i{i}" for i in range(1500)], clustered_vectors(1500, 16, seed=1))
    col.create_index()
    client.close()
    for npy in (tmp_path / "indexes").rglob("*.npy"):
        data = npy.read_bytes()
        npy.write_bytes(data[: len(data) // 2])
    client = _client(tmp_path)
    col = client.get_collection("c")
    queries = clustered_vectors(10, 16, seed=5)
    res = col.query(queries, n_results=5, n_probe=64, include=[])
    assert res["ids"] == _brute(col, queries, 5)


def test_crash_during_rebuild_leaves_a_usable_store(tmp_path: Path) -> None:
    client = _client(tmp_path)
    col = client.create_collection("c", dim=32)
    col.add([f"i{i}" for i in range(6000)], clustered_vectors(6000, 32, seed=1))
    col.create_index()
    client.close()
    script = textwrap.dedent(
        f"""
        import sys, m2m
        from m2m.index.hrm2 import HRM2Params
        from m2m.index_manager import IndexSettings
        c = m2m.Client({str(tmp_path)!r}, index_settings=IndexSettings(threshold=10**9))
        col = c.get_collection("c")
        print("rebuilding", flush=True)
        while True:
            col.create_index(HRM2Params(n_coarse=8, n_fine=8, kmeans_iters=50))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "rebuilding"
    time.sleep(1.5)  # let it get into training and file writing before the kill
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    client = _client(tmp_path)
    col = client.get_collection("c")
    assert col.count() == 6000
    queries = clustered_vectors(20, 32, seed=6)
    stats = col.index_stats()
    assert stats is not None
    res = col.query(queries, n_results=10, n_probe=stats["n_fine_total"], include=[])
    assert res["ids"] == _brute(col, queries, 10)


def test_queries_during_concurrent_writes_see_consistent_results(tmp_path: Path) -> None:
    client = _client(tmp_path)
    col = client.create_collection("c", dim=16)
    base = clustered_vectors(3000, 16, seed=1)
    col.add([f"i{i}" for i in range(3000)], base)
    col.create_index()
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer() -> None:
        try:
            for r in range(30):
                col.add([f"w{r}_{j}" for j in range(20)], clustered_vectors(20, 16, seed=100 + r))
                col.delete([f"i{r * 10 + j}" for j in range(10)])
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    def reader() -> None:
        q = clustered_vectors(5, 16, seed=7)
        try:
            while not stop.is_set():
                res = col.query(q, n_results=10, include=["distances"])
                for ids, d in zip(res["ids"], res["distances"], strict=True):
                    assert len(ids) == 10 and len(set(ids)) == 10
                    assert d == sorted(d)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    queries = clustered_vectors(20, 16, seed=8)
    res = col.query(queries, n_results=10, n_probe=_all_lists(col), include=[])
    assert res["ids"] == _brute(col, queries, 10)
    assert not {f"i{i}" for i in range(300)} & {i for row in res["ids"] for i in row}


def test_progressive_query_refines_to_the_exact_answer(tmp_path: Path) -> None:
    client = _client(tmp_path)
    col = client.create_collection("c", dim=16)
    col.add([f"i{i}" for i in range(2000)], clustered_vectors(2000, 16, seed=1))
    col.create_index()
    q = clustered_vectors(1, 16, seed=3)
    levels = list(col.query_progressive(q, n_results=5, n_probe=_all_lists(col), include=["distances"]))
    assert [level.lod for level in levels] == [0, 1, 2]
    assert all(a.elapsed <= b.elapsed for a, b in itertools.pairwise(levels))
    assert levels[-1].result["ids"][0] == _brute(col, q, 5)[0]


@pytest.mark.parametrize("bad", [{"lod": 3}, {"n_probe": 0}, {"target_recall": 1.5}, {"target_recall": 0}])
def test_bad_index_parameters_are_rejected(tmp_path: Path, bad: dict) -> None:
    col = _client(tmp_path).create_collection("c", dim=4)
    col.add(["a"], [[1, 0, 0, 0]])
    with pytest.raises(m2m.errors.InvalidArgumentError):
        col.query([1, 0, 0, 0], n_results=1, **bad)


def test_delete_collection_removes_index_files(tmp_path: Path) -> None:
    client = _client(tmp_path)
    col = client.create_collection("c", dim=16)
    col.add([f"i{i}" for i in range(1500)], clustered_vectors(1500, 16, seed=1))
    col.create_index()
    assert any((tmp_path / "indexes").iterdir())
    client.delete_collection("c")
    assert not any((tmp_path / "indexes").iterdir())


def test_tiered_serving_after_reopen_matches_the_in_ram_index(tmp_path: Path) -> None:
    from m2m.memory import TierConfig

    x = clustered_vectors(3000, 16, seed=1)
    queries = clustered_vectors(20, 16, seed=2)
    client = _client(tmp_path)
    col = client.create_collection("c", dim=16)
    col.add([f"i{i}" for i in range(3000)], x)
    col.create_index()
    expected = col.query(queries, n_results=10, n_probe=4, include=["distances"])
    client.close()
    warm = int(x.nbytes * 0.1)  # a warm budget of 10% of the vector bytes
    settings = IndexSettings(
        threshold=10**9, params=SMALL, background=False, tiers=TierConfig(warm_bytes=warm)
    )
    client = m2m.Client(tmp_path, index_settings=settings)
    col = client.get_collection("c")
    stats = col.index_stats()
    assert stats["tiers"] is not None  # served from disk
    got = col.query(queries, n_results=10, n_probe=4, include=["distances"])
    assert got["ids"] == expected["ids"]
    np.testing.assert_allclose(got["distances"], expected["distances"], rtol=1e-6, atol=1e-6)
    tiers = col.index_stats()["tiers"]
    assert tiers["warm"]["peak_bytes"] <= warm
    assert tiers["warm"]["hits"] + tiers["warm"]["misses"] > 0
    col.add(["new"], queries[:1])  # the first write loads the index into RAM and goes on
    assert col.index_stats()["tiers"] is None
    assert col.query(queries[:1], n_results=1, n_probe=4, include=[])["ids"] == [["new"]]
    client.close()
    client = m2m.Client(tmp_path, index_settings=settings)
    assert client.get_collection("c").index_stats()["tiers"] is not None  # saved again on close
    client.close()
