"""Threads and processes on one store: no errors, serialised writes, committed reads, busy timeouts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import traceback

import numpy as np
import pytest

import m2m
from conftest import snapshot_collection
from m2m.errors import StoreBusyError

DIM = 8


def _traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def _vec(owner: int, step: int, j: int) -> list[float]:
    """A vector that encodes who wrote it, so torn items are detectable."""
    rng = np.random.default_rng([owner, step, j])
    v = rng.standard_normal(DIM).astype(np.float32)
    v[0] = owner * 64 + step  # exactly representable; small, so L2 stays well conditioned
    return v.tolist()


# -- threads -------------------------------------------------------------------------------------


def test_threads_write_and_query_at_once(client):
    col = client.create_collection("t", dim=DIM, metric="l2")
    stable_ids = [f"stable{j}" for j in range(20)]
    stable_vecs = np.random.default_rng(99).standard_normal((20, DIM)).astype(np.float32)
    col.add(stable_ids, stable_vecs, metadatas=[{"stable": True}] * 20)

    n_writers, steps = 4, 40
    models: list[dict] = [{} for _ in range(n_writers)]
    errors: list[BaseException] = []
    done = threading.Event()

    def writer(w: int) -> None:
        rng = np.random.default_rng(w)
        model = models[w]
        try:
            for step in range(steps):
                op = step % 4
                ids = [f"w{w}-{k}" for k in rng.choice(30, size=5, replace=False)]
                if op in (0, 1):  # upsert
                    vecs = [_vec(w, step, j) for j in range(5)]
                    metas = [{"owner": w, "step": step}] * 5
                    col.upsert(ids, vecs, metadatas=metas, documents=[f"w{w} s{step}"] * 5)
                    for j, i in enumerate(ids):
                        model[i] = (vecs[j], {"owner": w, "step": step}, f"w{w} s{step}")
                elif op == 2:  # update the ones that exist
                    have = [i for i in ids if i in model]
                    if have:
                        vecs = [_vec(w, step, j) for j in range(len(have))]
                        col.update(have, vecs, metadatas=[{"owner": w, "step": step}] * len(have))
                        for j, i in enumerate(have):
                            model[i] = (vecs[j], {"owner": w, "step": step}, model[i][2])
                else:
                    assert col.delete(ids=ids) == sum(i in model for i in ids)
                    for i in ids:
                        model.pop(i, None)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    def reader(r: int) -> None:
        rng = np.random.default_rng(100 + r)
        try:
            while not done.is_set():
                j = int(rng.integers(20))
                res = col.query(stable_vecs[j], n_results=3, include=["distances", "metadatas", "embeddings"])
                assert res["ids"][0][0] == stable_ids[j] and res["distances"][0][0] == pytest.approx(0.0)
                assert len(set(res["ids"][0])) == len(res["ids"][0])
                for emb, meta in zip(res["embeddings"][0], res["metadatas"][0], strict=True):
                    if meta and "owner" in meta:  # vector and metadata come from the same write
                        assert emb[0] == meta["owner"] * 64 + meta["step"]
                filtered = col.query(stable_vecs[j], n_results=5, where={"stable": True})
                assert filtered["ids"][0][0] == stable_ids[j]
                assert all(i.startswith("stable") for i in filtered["ids"][0])
                got = col.get(where={"owner": {"$in": [0, 1, 2, 3]}}, include=["embeddings", "metadatas"])
                for emb, meta in zip(got["embeddings"], got["metadatas"], strict=True):
                    assert emb[0] == meta["owner"] * 64 + meta["step"]
                assert 20 <= col.count() <= 20 + 30 * n_writers
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(n_writers)]
    readers = [threading.Thread(target=reader, args=(r,)) for r in range(2)]
    for t in threads + readers:
        t.start()
    for t in threads:
        t.join(timeout=120)
    done.set()
    for t in readers:
        t.join(timeout=120)
    assert not errors, _traceback(errors[0])

    expected = {
        i: (np.asarray(stable_vecs[j]).tobytes(), {"stable": True}, None) for j, i in enumerate(stable_ids)
    }
    for model in models:
        for i, (vec, meta, doc) in model.items():
            expected[i] = (np.asarray(vec, dtype=np.float32).tobytes(), meta, doc)
    assert snapshot_collection(col) == expected
    assert col.count() == len(expected)


# -- processes -----------------------------------------------------------------------------------

_PROCESS_WRITER = textwrap.dedent(
    """
    import sys, numpy as np, m2m
    path, owner, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    client = m2m.Client(path)
    col = client.get_collection("p")
    for step in range(steps):
        own = [f"p{owner}-{step}-{j}" for j in range(5)]
        shared = [f"shared{j}" for j in range(3)]
        vecs = np.random.default_rng([owner, step]).standard_normal((8, 8)).astype(np.float32)
        vecs[:, 0] = owner * 1000 + step
        metas = [{"owner": owner, "step": step}] * 8
        col.upsert(own + shared, vecs, metadatas=metas)
        # a write of another process is visible to this one's next read
        assert col.count() >= 3 + 5 * (step + 1)
    client.close()
    print("done", flush=True)
    """
)


def test_processes_serialise_writes(store_path):
    with m2m.Client(store_path) as c:
        c.create_collection("p", dim=8, metric="l2")
    n_procs, steps = 3, 15
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROCESS_WRITER, str(store_path), str(w), str(steps)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(n_procs)
    ]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert out.strip() == "done"
    with m2m.Client(store_path) as c:
        col = c.get_collection("p")
        assert col.count() == n_procs * steps * 5 + 3
        got = col.get(include=["embeddings", "metadatas"])
        for item_id, emb, meta in zip(got["ids"], got["embeddings"], got["metadatas"], strict=True):
            assert emb[0] == meta["owner"] * 1000 + meta["step"], item_id  # no torn rows
            if not item_id.startswith("shared"):
                assert item_id.startswith(f"p{meta['owner']}-{meta['step']}-")
        # the shared ids hold the last write of some process: its final step
        shared = col.get(ids=["shared0", "shared1", "shared2"])["metadatas"]
        assert all(m["step"] == steps - 1 for m in shared)


_PEER = textwrap.dedent(
    """
    import sys, json, m2m
    client = m2m.Client(sys.argv[1])
    col = client.get_collection("peer")
    print(json.dumps({"ready": col.count()}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "read":
            got = col.get(include=["metadatas"])
            res = col.query([cmd["q"]], n_results=1)
            print(json.dumps({"count": col.count(), "ids": got["ids"], "metas": got["metadatas"],
                              "nearest": res["ids"][0]}), flush=True)
        elif cmd["op"] == "write":
            col.upsert(cmd["ids"], cmd["vectors"], metadatas=cmd["metas"])
            print(json.dumps({"written": True}), flush=True)
        else:
            break
    client.close()
    """
)


def test_second_process_sees_commits_on_next_read(store_path):
    client = m2m.Client(store_path)
    col = client.create_collection("peer", dim=3, metric="l2")
    col.add(["a"], [[1, 0, 0]], metadatas=[{"v": 1}])
    peer = subprocess.Popen(
        [sys.executable, "-c", _PEER, str(store_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def ask(cmd: dict) -> dict:
        peer.stdin.write(json.dumps(cmd) + "\n")
        peer.stdin.flush()
        line = peer.stdout.readline()
        assert line, peer.stderr.read()
        return json.loads(line)

    try:
        assert json.loads(peer.stdout.readline()) == {"ready": 1}
        # our write -> the peer's next read, without reopening
        col.add(["b"], [[0, 5, 0]], metadatas=[{"v": 2}])
        col.update(["a"], metadatas=[{"v": 10}])
        seen = ask({"op": "read", "q": [0, 5, 0]})
        assert seen["count"] == 2 and seen["ids"] == ["a", "b"]
        assert seen["metas"] == [{"v": 10}, {"v": 2}] and seen["nearest"] == ["b"]
        col.delete(ids=["b"])
        seen = ask({"op": "read", "q": [0, 5, 0]})
        assert seen["ids"] == ["a"] and seen["nearest"] == ["a"]
        # the peer's write -> our next read
        assert ask(
            {
                "op": "write",
                "ids": ["c", "a"],
                "vectors": [[0, 0, 7], [2, 0, 0]],
                "metas": [{"v": 3}, {"v": 11}],
            }
        )["written"]
        assert col.count() == 2
        assert col.get(include=["metadatas"])["metadatas"] == [{"v": 11}, {"v": 3}]
        res = col.query([[0, 0, 7]], n_results=2, include=["distances", "embeddings"])
        assert res["ids"] == [["c", "a"]] and res["distances"][0][0] == pytest.approx(0.0)
        np.testing.assert_array_equal(res["embeddings"][0][1], [2, 0, 0])
        assert col.get(where={"v": 11})["ids"] == ["a"]
        # and our write after theirs goes on top of it
        col.upsert(["c"], [[0, 0, 8]], metadatas=[{"v": 4}])
        seen = ask({"op": "read", "q": [0, 0, 8]})
        assert seen["metas"] == [{"v": 11}, {"v": 4}] and seen["nearest"] == ["c"]
    finally:
        peer.stdin.write(json.dumps({"op": "stop"}) + "\n")
        peer.stdin.close()
        peer.wait(timeout=60)
        peer.stdout.close()
        peer.stderr.close()
        client.close()
    assert peer.returncode == 0


_LOCK_HOLDER = textwrap.dedent(
    """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    sys.stdin.readline()  # hold the write lock until told to let go
    conn.execute("ROLLBACK")
    conn.close()
    """
)


def test_blocked_writer_gets_store_busy(store_path):
    client = m2m.Client(store_path, write_timeout=0.5)
    col = client.create_collection("busy", dim=2)
    col.add(["a"], [[1, 0]], metadatas=[{"k": 1}])
    before = snapshot_collection(col)
    holder = subprocess.Popen(
        [sys.executable, "-c", _LOCK_HOLDER, str(store_path / "m2m.sqlite3")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
        for write in (
            lambda: col.add(["b"], [[0, 1]]),
            lambda: col.upsert(["a"], [[0, 1]]),
            lambda: col.update(["a"], metadatas=[{"k": 2}]),
            lambda: col.delete(ids=["a"]),
            lambda: client.create_collection("other", dim=2),
        ):
            started = time.monotonic()
            with pytest.raises(StoreBusyError, match="lock"):
                write()
            waited = time.monotonic() - started
            assert 0.4 <= waited < 10, waited
        # readers are not blocked by the writer
        assert col.count() == 1
        assert col.query([[1, 0]], n_results=1)["ids"] == [["a"]]
    finally:
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=60)
        holder.stdout.close()
        holder.stderr.close()
    assert snapshot_collection(col) == before
    col.add(["b"], [[0, 1]])  # the lock is free again
    assert col.count() == 2
    client.close()


def test_reads_racing_another_clients_deletes(store_path):
    """A reader whose mirror is a moment behind never returns a deleted row half-filled (or crashes)."""
    with m2m.Client(store_path) as one, m2m.Client(store_path) as two:
        a = one.create_collection("race", dim=4)
        ids = [f"i{k}" for k in range(200)]
        a.add(ids, np.full((200, 4), -1, np.float32), metadatas=[{"k": -1}] * 200, documents=["d-1"] * 200)
        b = two.get_collection("race")
        done = threading.Event()
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                for k in range(60):
                    a.delete(ids=ids[:100])
                    a.add(
                        ids[:100],
                        np.full((100, 4), k, np.float32),
                        metadatas=[{"k": k}] * 100,
                        documents=[f"d{k}"] * 100,
                    )
            except BaseException as exc:
                errors.append(exc)
            finally:
                done.set()

        def check(item_ids, embs, metas, docs) -> None:
            assert len(set(item_ids)) == len(item_ids)
            for emb, meta, doc in zip(embs, metas, docs, strict=True):
                assert meta is not None and doc is not None
                assert emb[0] == meta["k"] and doc == f"d{meta['k']}"  # one item, one write

        thread = threading.Thread(target=writer)
        thread.start()
        reads = 0
        try:
            while not done.is_set() or reads < 5:
                got = b.get(include=["embeddings", "metadatas", "documents"])
                check(got["ids"], got["embeddings"], got["metadatas"], got["documents"])
                res = b.query(np.ones(4), n_results=150, include=["embeddings", "metadatas", "documents"])
                check(res["ids"][0], res["embeddings"][0], res["metadatas"][0], res["documents"][0])
                reads += 1
        finally:
            thread.join(timeout=120)
        assert not errors, _traceback(errors[0])
        assert b.count() == 200
