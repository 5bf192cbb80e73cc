"""The REST server over raw HTTP: spec, endpoints, error bodies, limits, metrics, concurrency."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

import m2m
from _servers import running_server

SPEC = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"
MAX_BODY = 256 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("rest"), max_body_bytes=MAX_BODY) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}
    return response.status_code, body["error"]["type"], body["error"]["message"]


def test_checked_in_openapi_equals_served_spec(http):
    served = http.get("/openapi.json").json()
    assert json.loads(SPEC.read_text()) == served, (
        "regenerate with: python -m m2m openapi > docs/openapi.json"
    )
    assert not any("422" in op["responses"] for path in served["paths"].values() for op in path.values())


def test_endpoints_against_brute_force(http):
    rng = np.random.default_rng(3)
    base = rng.standard_normal((50, 8)).astype(np.float32)
    r = http.post("/v1/collections", json={"name": "books", "dim": 8, "metric": "l2", "metadata": {"x": 1}})
    assert r.status_code == 201 and r.json()["count"] == 0 and r.json()["metric"] == "l2"
    ids = [f"b{i}" for i in range(50)]
    metas = [{"year": 1900 + i} for i in range(50)]
    r = http.post(
        "/v1/collections/books/add", json={"ids": ids, "embeddings": base.tolist(), "metadatas": metas}
    )
    assert r.status_code == 200 and r.json() == {"count": 50}
    assert http.get("/v1/collections/books/count").json() == {"count": 50}
    q = rng.standard_normal((3, 8)).astype(np.float32)
    r = http.post(
        "/v1/collections/books/query",
        json={"query_embeddings": q.tolist(), "n_results": 5, "where": {"year": {"$gte": 1920}}},
    )
    body = r.json()
    d = ((q[:, None, :].astype(np.float64) - base[None, 20:, :]) ** 2).sum(-1)
    order = np.argsort(d, axis=1)[:, :5] + 20
    assert body["ids"] == [[ids[j] for j in row] for row in order]
    np.testing.assert_allclose(body["distances"], np.sort(d, axis=1)[:, :5], rtol=1e-4)
    assert body["metadatas"][0][0] == metas[order[0][0]] and body["embeddings"] is None
    r = http.post("/v1/collections/books/get", json={"ids": ["b3"], "include": ["embeddings"]})
    assert r.json()["embeddings"] == [base[3].tolist()]  # exact float32 values through JSON
    assert http.post("/v1/collections/books/delete", json={"where": {"year": {"$lt": 1910}}}).json() == {
        "deleted": 10
    }
    listed = http.get("/v1/collections").json()["collections"]
    assert {"name": "books", "count": 40, "dim": 8, "metric": "l2"}.items() <= next(
        c for c in listed if c["name"] == "books"
    ).items()
    stats = http.get("/v1/stats").json()
    assert next(c for c in stats["collections"] if c["name"] == "books")["count"] == 40
    assert stats["requests"]["rest"] > 0
    assert http.get("/health").json()["status"] == "ok"
    assert http.delete("/v1/collections/books").json() == {"deleted": "books"}
    assert http.get("/v1/collections/books").status_code == 404


def test_bad_input_is_4xx_with_error_body_and_changes_nothing(http, server):
    http.post("/v1/collections", json={"name": "strict", "dim": 3})
    http.post("/v1/collections/strict/add", json={"ids": ["keep"], "embeddings": [[1, 2, 3]]})
    raw = {"content-type": "application/json"}
    cases = [
        (
            http.post("/v1/collections/strict/add", json={"ids": ["x"], "embeddings": [[1, 2]]}),
            400,
            "DimensionMismatchError",
            "dimension 2",
        ),
        (
            http.post("/v1/collections/strict/add", json={"ids": ["keep"], "embeddings": [[1, 2, 3]]}),
            409,
            "IdAlreadyExistsError",
            "keep",
        ),
        (
            http.post("/v1/collections/nope/add", json={"ids": ["x"], "embeddings": [[1, 2, 3]]}),
            404,
            "CollectionNotFoundError",
            "nope",
        ),
        (
            http.post(
                "/v1/collections/strict/add", content=b'{"ids": ["x"], "embeddings": [[1,2,', headers=raw
            ),
            400,
            "InvalidArgumentError",
            "malformed JSON",
        ),
        (
            http.post(
                "/v1/collections/strict/add", json={"ids": ["x"], "embeddings": [[1, 2, 3]], "bogus": 1}
            ),
            400,
            "InvalidArgumentError",
            "bogus",
        ),
        (
            http.post("/v1/collections/strict/add", json={"ids": "x", "embeddings": [["1", 2, 3]]}),
            400,
            "InvalidArgumentError",
            "embeddings",
        ),
        (
            http.post(
                "/v1/collections/strict/add", content=b'{"ids":["x"],"embeddings":[[1,2,NaN]]}', headers=raw
            ),
            400,
            "InvalidVectorError",
            "NaN",
        ),
        (
            http.post("/v1/collections/strict/update", json={"ids": ["ghost"], "metadatas": [{"a": 1}]}),
            404,
            "ItemNotFoundError",
            "ghost",
        ),
        (
            http.post("/v1/collections/strict/query", json={"query_embeddings": [[1, 2, 3]], "n_results": 0}),
            400,
            "InvalidArgumentError",
            "n_results",
        ),
        (
            http.post(
                "/v1/collections/strict/query", json={"query_embeddings": [[1, 2, 3]], "n_results": 10**12}
            ),
            400,
            "InvalidArgumentError",
            "at most",
        ),
        (
            http.post("/v1/collections/strict/get", json={"where": {"a": {"$regex": "x"}}}),
            400,
            "InvalidFilterError",
            "$regex",
        ),
        (
            http.post("/v1/collections", json={"name": "../etc", "dim": 3}),
            400,
            "InvalidCollectionNameError",
            "..",
        ),
        (
            http.post("/v1/collections", json={"name": "strict", "dim": 3}),
            409,
            "CollectionExistsError",
            "strict",
        ),
        (http.post("/v1/collections", json={"name": "n", "dim": "3"}), 400, "InvalidArgumentError", "dim"),
        (
            http.post("/v1/collections/strict/add", content=b"[1, 2]", headers=raw),
            400,
            "InvalidArgumentError",
            "",
        ),
        (http.put("/v1/collections/strict/add", json={}), 405, "InvalidArgumentError", "Method Not Allowed"),
        (http.get("/v2/whatever"), 404, "NotFoundError", "Not Found"),
    ]
    for response, status, kind, text in cases:
        got = error_of(response)
        assert got[:2] == (status, kind), (got, kind)
        assert text in got[2], got
    # Oversize bodies: by Content-Length and by streamed (chunked) body.
    big = json.dumps({"ids": ["big"], "embeddings": [[0.5] * 3], "documents": ["x" * MAX_BODY]}).encode()
    assert error_of(http.post("/v1/collections/strict/add", content=big, headers=raw))[:2] == (
        413,
        "PayloadTooLargeError",
    )
    assert error_of(
        http.post("/v1/collections/strict/add", content=iter([big[:1000], big[1000:]]), headers=raw)
    )[:2] == (413, "PayloadTooLargeError")
    got = http.post("/v1/collections/strict/get", json={"include": ["embeddings"]}).json()
    assert got["ids"] == ["keep"] and got["embeddings"] == [[1.0, 2.0, 3.0]]


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', line))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not in metrics")


def test_metrics_count_requests_and_sizes(http):
    http.post("/v1/collections", json={"name": "metered", "dim": 2})
    http.post(
        "/v1/collections/metered/add", json={"ids": ["a", "b", "c"], "embeddings": [[0, 1], [1, 0], [1, 1]]}
    )
    before = http.get("/metrics").text
    for _ in range(3):
        http.get("/v1/collections/metered/count")
    http.get("/v1/collections/unknown-one/count")
    response = http.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = response.text
    route = "/v1/collections/{name}/count"
    ok = dict(transport="rest", method="GET", route=route, status="200")
    try:
        previous = _metric(before, "m2m_requests_total", **ok)
    except AssertionError:
        previous = 0
    assert _metric(after, "m2m_requests_total", **ok) == previous + 3
    assert (
        _metric(after, "m2m_requests_total", transport="rest", method="GET", route=route, status="404") >= 1
    )
    assert _metric(after, "m2m_collection_items", collection="metered") == 3
    count = _metric(after, "m2m_request_duration_seconds_count", transport="rest", route=route)
    assert (
        _metric(after, "m2m_request_duration_seconds_bucket", transport="rest", route=route, le="+Inf")
        == count
    )
    assert _metric(after, "m2m_request_duration_seconds_sum", transport="rest", route=route) > 0
    assert "# TYPE m2m_request_duration_seconds histogram" in after


def test_slow_request_does_not_stall_others(tmp_path):
    """While a large query is answered, requests that do not need its collection are answered at once.

    (Requests on the *same* collection may wait for the core's per-collection
    readers-writer lock, which is the core's concurrency design, not the server's.)
    """
    with (
        running_server(tmp_path, grpc_port=None) as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        _slow_and_small(server, http)


def _slow_and_small(server, http) -> None:
    rng = np.random.default_rng(5)
    with m2m.clients.HttpClient(server.url) as client:
        col = client.create_collection("heavy", 32, "l2")
        base = rng.standard_normal((16000, 32)).astype(np.float32)  # below the index build threshold
        for i in range(0, len(base), 2000):
            col.add([f"h{j}" for j in range(i, i + 2000)], base[i : i + 2000])
        client.create_collection("light", 2, "l2").add(["x"], [[1, 0]])
    queries = rng.standard_normal((400, 32)).astype(np.float32).tolist()
    done = threading.Event()
    heavy_time = []

    def heavy() -> None:
        start = time.perf_counter()
        with httpx.Client(base_url=server.url, timeout=120) as c:
            r = c.post(
                "/v1/collections/heavy/query",
                json={"query_embeddings": queries, "n_results": 1000, "include": ["distances", "metadatas"]},
            )
        assert r.status_code == 200 and len(r.json()["ids"]) == 400
        heavy_time.append(time.perf_counter() - start)
        done.set()

    thread = threading.Thread(target=heavy)
    thread.start()
    metrics = server.app.state.metrics
    deadline = time.monotonic() + 30
    while metrics.in_flight("rest") < 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    small = []
    while not done.is_set() and len(small) < 30:
        start = time.perf_counter()
        assert http.get("/health").status_code == 200  # event loop only
        assert http.post(
            "/v1/collections/light/query", json={"query_embeddings": [[1, 0]], "n_results": 1}
        ).json()["ids"] == [["x"]]  # thread pool + core
        small.append((time.perf_counter() - start, done.is_set()))
    thread.join()
    answered_during = [t for t, finished in small if not finished]
    assert len(answered_during) >= 3, (small, heavy_time)
    assert max(answered_during) < heavy_time[0] / 3, (small, heavy_time)


def test_server_limits_blas_threads_while_running(tmp_path):
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads() -> list[int]:
        return [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]

    before = blas_threads()
    if not before:
        pytest.skip("no BLAS library loaded")
    with running_server(tmp_path, grpc_port=None, blas_threads=1):
        assert blas_threads() == [1] * len(before)
    assert blas_threads() == before
