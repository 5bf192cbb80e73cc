"""The collection mirror with its vectors on disk (memory-mapped ``.npy``, docs/memory.md).

Oracles: the same collection opened with the in-RAM mirror (results must be identical:
same ids, same float32 distances) and brute force over what SQLite stores.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import m2m
from conftest import clustered_vectors
from m2m.index.hrm2 import HRM2Params
from m2m.index_manager import IndexSettings
from m2m.memory import TierConfig
from m2m.storage.disk_vectors import DATA, MANIFEST

SMALL = HRM2Params(n_coarse=4, n_fine=4, calib_queries=32)
N, DIM = 2500, 16


def _settings(disk: bool, tiers: TierConfig | None = None) -> IndexSettings:
    return IndexSettings(threshold=10**9, params=SMALL, background=False, tiers=tiers, mirror_on_disk=disk)


def _fill(path: Path, disk: bool = True) -> np.ndarray:
    x = clustered_vectors(N, DIM, seed=3)
    with m2m.Client(path, index_settings=_settings(disk)) as client:
        col = client.create_collection("c", dim=DIM)
        for s in range(0, N, 1000):  # several writes: the file grows in place
            col.add([f"i{i}" for i in range(s, min(N, s + 1000))], x[s : s + 1000],
                    metadatas=[{"g": i % 10} for i in range(s, min(N, s + 1000))])  # fmt: skip
    return x


def _queries(n: int = 12) -> np.ndarray:
    return clustered_vectors(n, DIM, seed=4)


def _answers(path: Path, disk: bool, tiers: TierConfig | None = None, **query) -> list:
    """Unfiltered, broadly filtered (mask path) and narrowly filtered (gather path) results."""
    q = _queries()
    with m2m.Client(path, index_settings=_settings(disk, tiers)) as client:
        col = client.get_collection("c")
        assert col._mirror.on_disk is disk
        out = []
        for where in (None, {"g": {"$ne": 3}}, {"g": 3}):
            r = col.query(q, n_results=10, where=where, include=["distances"], **query)
            out.append((r["ids"], r["distances"]))
        return out


def _disk_dir(path: Path) -> Path:
    (directory,) = (path / "mirrors").iterdir()
    return directory


def _rebuilds(path: Path) -> tuple[int, str | None]:
    with m2m.Client(path, index_settings=_settings(True)) as client:
        disk = client.get_collection("c")._mirror.disk
        return disk.rebuilds, disk.reason


def _brute(x: np.ndarray, ids: list[str], q: np.ndarray, k: int) -> list[list[str]]:
    xs = x / np.linalg.norm(x, axis=1, keepdims=True)
    qs = q / np.linalg.norm(q, axis=1, keepdims=True)
    d = 1 - qs.astype(np.float64) @ xs.astype(np.float64).T
    return [[ids[j] for j in np.argsort(row, kind="stable")[:k]] for row in d]


def test_exact_search_identical_to_the_in_ram_mirror(tmp_path: Path) -> None:
    x = _fill(tmp_path)
    on_disk = _answers(tmp_path, disk=True)
    in_ram = _answers(tmp_path, disk=False)
    assert on_disk == in_ram  # ids and float distances, exactly
    ids = [f"i{i}" for i in range(N)]
    assert on_disk[0][0] == _brute(x, ids, _queries(), 10)
    keep = [i for i in range(N) if i % 10 == 3]
    assert on_disk[2][0] == _brute(x[keep], [ids[i] for i in keep], _queries(), 10)


def test_tiered_index_with_disk_mirror_identical_and_within_budget(tmp_path: Path) -> None:
    x = _fill(tmp_path, disk=False)
    with m2m.Client(tmp_path, index_settings=_settings(False)) as client:
        client.get_collection("c").create_index()
    in_ram = _answers(tmp_path, disk=False, n_probe=3)
    warm = int(x.nbytes * 0.1)
    tiers = TierConfig(warm_bytes=warm)
    with m2m.Client(tmp_path, index_settings=_settings(None, tiers)) as client:  # None: on with tiers
        col = client.get_collection("c")
        assert col._mirror.on_disk and col.index_stats()["tiers"] is not None
    served = _answers(tmp_path, disk=True, tiers=tiers, n_probe=3)
    assert served == in_ram
    with m2m.Client(tmp_path, index_settings=_settings(True, tiers)) as client:
        col = client.get_collection("c")
        col.query(_queries(64), n_results=10, n_probe=3)
        warm_stats = col.index_stats()["tiers"]["warm"]
        assert 0 < warm_stats["peak_bytes"] <= warm
        mirror = col._mirror
        assert isinstance(mirror.vectors, np.memmap)
        # what the mirror keeps in anonymous RAM: per-slot arrays (about 14 B a slot), no vectors
        arrays = [a for a in vars(mirror).values() if isinstance(a, np.ndarray)]
        assert [a.shape for a in arrays if a.ndim > 1 and a.size] == []
        assert sum(a.nbytes for a in arrays) < x.nbytes / 2


def _write_batch(col: m2m.Collection, x: np.ndarray) -> dict[str, np.ndarray]:
    """Deletes, adds (reusing freed slots, then growing), upserts, updates; returns the model."""
    rng = np.random.default_rng(5)
    new = rng.standard_normal((300, DIM)).astype(np.float32)
    moved = rng.standard_normal((50, DIM)).astype(np.float32)
    col.delete(ids=[f"i{i}" for i in range(0, 400, 2)])
    col.add([f"n{i}" for i in range(300)], new)
    col.upsert([f"i{i}" for i in range(1, 101, 2)], moved)
    col.update([f"n{i}" for i in range(5)], embeddings=moved[:5])
    col.delete(where={"g": 7})
    model = {f"i{i}": x[i] for i in range(N) if i % 10 != 7 and not (i < 400 and i % 2 == 0)}
    model.update({f"n{i}": new[i] for i in range(300)})
    model.update({f"i{i}": moved[j] for j, i in enumerate(range(1, 101, 2)) if i % 10 != 7})
    model.update({f"n{i}": moved[i] for i in range(5)})
    return model


def test_writes_on_disk_are_visible_and_survive_reopen(tmp_path: Path) -> None:
    q = _queries()
    results = {}
    for disk in (True, False):  # the same writes with each mirror
        path = tmp_path / ("disk" if disk else "ram")
        x = _fill(path, disk)
        with m2m.Client(path, index_settings=_settings(disk)) as client:
            col = client.get_collection("c")
            model = _write_batch(col, x)
            ids = list(model)
            expected = _brute(np.stack([model[i] for i in ids]), ids, q, 10)
            got = col.query(q, n_results=10, include=["distances"])
            assert got["ids"] == expected
            assert col.count() == len(model)
            results[disk] = (got["ids"], got["distances"])
    assert results[True] == results[False]  # same slot layout: bitwise the same
    path = tmp_path / "disk"
    assert _rebuilds(path) == (0, None)  # the committed file is adopted, not rebuilt
    on_disk = _answers(path, disk=True)
    assert (on_disk[0][0], on_disk[0][1]) == results[True]  # adopted layout: bitwise the same
    # reopened in RAM, slots are renumbered in rowid order: same ids, distances to rounding
    in_ram = _answers(path, disk=False)
    for (ids_a, d_a), (ids_b, d_b) in zip(on_disk, in_ram, strict=True):
        assert ids_a == ids_b
        np.testing.assert_allclose(d_a, d_b, rtol=0, atol=1e-6)
    saved = np.load(_disk_dir(path) / DATA, mmap_mode="r")  # still a valid .npy
    assert saved.shape[1] == DIM and saved.dtype == np.float32


@pytest.mark.parametrize("damage", ["truncate", "flip", "stale", "dirty", "missing"])
def test_damaged_or_stale_file_is_rebuilt(tmp_path: Path, damage: str) -> None:
    _fill(tmp_path)
    expected = _answers(tmp_path, disk=False)
    directory = _disk_dir(tmp_path)
    data = directory / DATA
    if damage == "truncate":  # a torn write: the file is shorter than its header says
        with open(data, "r+b") as fh:
            fh.truncate(data.stat().st_size - 1000)
    elif damage == "flip":  # same size, one row's bytes changed: the block CRC catches it
        with open(data, "r+b") as fh:
            fh.seek(4096 + 1536 * 4 + 7)
            byte = fh.read(1)
            fh.seek(-1, 1)
            fh.write(bytes([byte[0] ^ 0x40]))
    elif damage == "stale":  # another process without the disk mirror wrote to SQLite
        with m2m.Client(tmp_path, index_settings=_settings(False)) as client:
            client.get_collection("c").upsert(["i0"], _queries(1))
        expected = _answers(tmp_path, disk=False)
    elif damage == "dirty":  # manifest says a write was under way when the process died
        manifest = json.loads((directory / MANIFEST).read_text())
        (directory / MANIFEST).write_text(json.dumps({**manifest, "clean": False}))
    else:
        data.unlink()
    rebuilds, reason = _rebuilds(tmp_path)
    assert rebuilds == 1 and reason
    assert _answers(tmp_path, disk=True) == expected
    assert _rebuilds(tmp_path) == (0, None)  # rebuilt and committed: adopted next time


def test_crash_after_disk_writes_is_rebuilt_from_sqlite(tmp_path: Path) -> None:
    _fill(tmp_path)
    script = textwrap.dedent(
        f"""
        import os, numpy as np, m2m
        from m2m.index_manager import IndexSettings
        client = m2m.Client({str(tmp_path)!r}, index_settings=IndexSettings(threshold=10**9, mirror_on_disk=True))
        col = client.get_collection("c")
        col.upsert(["i1", "i2", "x"], np.full((3, {DIM}), 0.5, np.float32))
        col.delete(ids=["i3"])
        os._exit(0)  # no close: the file is left patched and marked dirty
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    manifest = json.loads((_disk_dir(tmp_path) / MANIFEST).read_text())
    assert manifest["clean"] is False
    rebuilds, reason = _rebuilds(tmp_path)
    assert rebuilds == 1 and "clean" in reason
    on_disk = _answers(tmp_path, disk=True)
    assert on_disk == _answers(tmp_path, disk=False)
    assert all("i3" not in row for row in on_disk[0][0])


def test_second_process_uses_a_private_copy(tmp_path: Path) -> None:
    _fill(tmp_path)
    expected = _answers(tmp_path, disk=False)
    owner = m2m.Client(tmp_path, index_settings=_settings(True))
    try:
        owner.get_collection("c")
        with m2m.Client(tmp_path, index_settings=_settings(True)) as other:  # own flock: a second owner
            col = other.get_collection("c")
            disk = col._mirror.disk
            assert disk.stats()["private"]
            private = disk.directory
            q = _queries()
            got = col.query(q, n_results=10, include=["distances"])
            assert (got["ids"], got["distances"]) == expected[0]
            col.upsert(["i5"], q[:1])  # writes patch the private copy; the owner syncs its own
        assert not private.exists()
        synced = owner.get_collection("c").query(q[:1], n_results=1, include=[])
        assert synced["ids"] == [["i5"]]
    finally:
        owner.close()
    assert _rebuilds(tmp_path) == (0, None)


def test_delete_collection_removes_the_disk_mirror(tmp_path: Path) -> None:
    _fill(tmp_path)
    with m2m.Client(tmp_path, index_settings=_settings(True)) as client:
        client.get_collection("c")
        assert any((tmp_path / "mirrors").iterdir())
        client.delete_collection("c")
    assert not any((tmp_path / "mirrors").iterdir())
