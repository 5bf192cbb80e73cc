"""SIGTERM while requests are in flight: they finish, the process exits 0, the data is intact.

Runs the real command line (``python -m m2m serve``) in a subprocess. The test waits
until the server itself reports both large writes (REST and gRPC) in flight on its
``m2m_requests_in_flight`` gauge before sending SIGTERM, so the order of events is
observed, not guessed with a sleep.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

import m2m
from _servers import running_server  # noqa: F401  (skips the module without the server extra)
from m2m.clients import GrpcClient, HttpClient

KEY = "shutdown-test-key-77"
N, DIM = 8000, 64
NG = 11000  # the gRPC write is larger (it is much faster to decode); N + NG stays below the index threshold


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_flight(text: str, transport: str) -> int:
    match = re.search(rf'^m2m_requests_in_flight{{transport="{transport}"}} (\d+)$', text, re.M)
    return int(match.group(1)) if match else 0


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_finishes_in_flight_requests_and_closes_cleanly(tmp_path):
    path = tmp_path / "store"
    port, grpc_port = free_port(), free_port()
    env = {**os.environ, "M2M_API_KEYS": f"{KEY}:admin"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "m2m",
            "serve",
            "--path",
            str(path),
            "--port",
            str(port),
            "--grpc-port",
            str(grpc_port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)

        rng = np.random.default_rng(0)
        rest_vectors = rng.standard_normal((N, DIM)).astype(np.float32)
        grpc_vectors = rng.standard_normal((NG, DIM)).astype(np.float32)
        grpc_client = GrpcClient(f"127.0.0.1:{grpc_port}", api_key=KEY)
        # Prepare both writes completely first, so each thread sends exactly one request.
        rest_body = json.dumps(
            {
                "ids": [f"r{i}" for i in range(N)],
                "embeddings": rest_vectors.tolist(),
                "metadatas": [{"i": i} for i in range(N)],
                "documents": [f"rest document {i} " + "lorem ipsum " * 20 for i in range(N)],
            }
        )
        # Both writes must be seen in flight before SIGTERM. On a busy machine one of them can
        # finish before the other is seen; then nothing can be checked, so the writes are
        # repeated into a fresh collection (at most 5 attempts). The assertion is unchanged.
        for attempt in range(5):
            name = f"big{attempt}"
            results, seen, threads = _start_writes(url, headers, grpc_client, name, rest_body, grpc_vectors)
            if all(seen.values()) and not results:
                break
            for t in threads:
                t.join(120)
        assert all(seen.values()) and not results, (
            f"could not observe both writes in flight in 5 attempts: {seen} {results}"
        )
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(120)
        output, _ = proc.communicate(timeout=120)
        grpc_client.close()
        assert results == {"rest": "ok", "grpc": "ok"}, results
        assert proc.returncode == 0, output
        assert "received SIGTERM" in output and "closed" in output
        assert KEY not in output
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/health", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    with m2m.Client(path) as reopened:
        col = reopened.get_collection(name)
        assert col.count() == N + NG
        for prefix, vectors in (("r", rest_vectors), ("g", grpc_vectors)):
            ids = [f"{prefix}{i}" for i in range(len(vectors))]
            got = col.get(ids=ids, include=["embeddings", "metadatas", "documents"])
            assert got["ids"] == ids
            assert np.array_equal(np.stack(got["embeddings"]), vectors)
            assert got["metadatas"][-1] == {"i": len(vectors) - 1}
            assert got["documents"][7].startswith(("rest document 7 ", "grpc document 7 "))


def _start_writes(url, headers, grpc_client, name, rest_body, grpc_vectors):
    """Start one large REST add and one large gRPC add into a new collection ``name``; return
    ``(results, seen, threads)`` once the server reports both in flight (or one has finished)."""
    with HttpClient(url, api_key=KEY) as client:
        client.create_collection(name, DIM, "l2")
    grpc_col = grpc_client.get_collection(name)
    results: dict[str, object] = {}

    def rest_write() -> None:
        try:
            r = httpx.post(
                url + f"/v1/collections/{name}/add",
                content=rest_body,
                timeout=120,
                headers={**headers, "Content-Type": "application/json"},
            )
            results["rest"] = "ok" if r.status_code == 200 and r.json() == {"count": N} else r.text
        except Exception as exc:  # reported by the caller's assertion
            results["rest"] = exc

    def grpc_write() -> None:
        try:
            grpc_col.add(
                [f"g{i}" for i in range(NG)],
                grpc_vectors,
                metadatas=[{"i": i} for i in range(NG)],
                documents=[f"grpc document {i} " + "lorem ipsum dolor " * 40 for i in range(NG)],
            )
            results["grpc"] = "ok"
        except Exception as exc:
            results["grpc"] = exc

    threads = [threading.Thread(target=rest_write), threading.Thread(target=grpc_write)]
    for t in threads:
        t.start()
    # Seen in flight on the server's own gauges (asked over gRPC, whose worker threads answer
    # while the event loop parses the large JSON body; the Stats call itself counts as one
    # gRPC request), while neither write has been answered yet.
    seen = {"rest": False, "grpc": False}
    deadline = time.monotonic() + 60
    while not all(seen.values()) and not results and time.monotonic() < deadline:
        now = grpc_client.stats()["in_flight"]
        seen["rest"] |= now["rest"] >= 1
        seen["grpc"] |= now["grpc"] >= 2
    return results, seen, threads
