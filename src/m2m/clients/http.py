"""``HttpClient``: the :class:`m2m.Client` interface over the REST API (httpx).

Vectors are sent as JSON numbers; float32 values survive the trip exactly (each is
written as the shortest decimal of its float64 widening). Non-finite values are
sent as ``NaN``/``Infinity`` literals so the server rejects them with the same
:class:`~m2m.errors.InvalidVectorError` as the embedded API.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import numpy as np

from m2m._optional import require
from m2m.clients._remote import RemoteClient
from m2m.clients._wire import get_result_from_json, query_result_from_json, remote_error
from m2m.errors import M2MError
from m2m.results import GetResult, QueryResult


def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dropnone(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if v is not None}


class HttpTransport:
    """JSON over HTTP/1.1 with one pooled httpx client (thread-safe)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 120.0) -> None:
        httpx = require("httpx", "client")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout, limits=limits)

    def __repr__(self) -> str:  # never show the key
        return f"HttpTransport({str(self._http.base_url)!r})"

    def _call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        content = None
        headers = None
        if payload is not None:
            content = json.dumps(payload, default=_default, separators=(",", ":")).encode()
            headers = {"Content-Type": "application/json"}
        response = self._http.request(method, path, content=content, headers=headers)
        if response.status_code >= 400:
            type_name, message = None, response.text[:500] or response.reason_phrase
            try:
                error = response.json()["error"]
                type_name, message = error["type"], error["message"]
            except (ValueError, KeyError, TypeError):
                pass
            raise remote_error(type_name, message, http_status=response.status_code) or M2MError(
                f"HTTP {response.status_code}: {message}"
            )
        return response.json()

    @staticmethod
    def _c(name: str) -> str:
        return "/v1/collections/" + quote(name, safe="")

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/v1/stats")

    def list_collections(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/collections")["collections"]

    def create_collection(
        self, name: str, dim: int, metric: str | None, metadata: Any, get_or_create: bool
    ) -> dict[str, Any]:
        return self._call(
            "POST",
            "/v1/collections",
            {
                "name": name,
                "dim": dim,
                "metric": metric,
                "metadata": metadata,
                "get_or_create": get_or_create,
            },
        )

    def get_collection(self, name: str) -> dict[str, Any]:
        return self._call("GET", self._c(name))

    def modify_collection(self, name: str, metadata: Any) -> dict[str, Any]:
        return self._call("PATCH", self._c(name), {"metadata": metadata})

    def delete_collection(self, name: str) -> None:
        self._call("DELETE", self._c(name))

    def write(
        self,
        mode: str,
        name: str,
        ids: list[str],
        embeddings: np.ndarray | None,
        metadatas: Any,
        documents: Any,
    ) -> int:
        payload = _dropnone(
            {"ids": ids, "embeddings": embeddings, "metadatas": metadatas, "documents": documents}
        )
        return self._call("POST", f"{self._c(name)}/{mode}", payload)["count"]

    def delete(self, name: str, ids: list[str] | None, where: Any, where_document: Any) -> int:
        payload = _dropnone({"ids": ids, "where": where, "where_document": where_document})
        return self._call("POST", f"{self._c(name)}/delete", payload)["deleted"]

    def get(
        self,
        name: str,
        ids: list[str] | None,
        where: Any,
        limit: int | None,
        offset: int,
        where_document: Any,
        include: list[str] | None,
    ) -> GetResult:
        payload = _dropnone(
            {
                "ids": ids,
                "where": where,
                "limit": limit,
                "offset": offset,
                "where_document": where_document,
                "include": include,
            }
        )
        return get_result_from_json(self._call("POST", f"{self._c(name)}/get", payload))

    def count(self, name: str) -> int:
        return self._call("GET", f"{self._c(name)}/count")["count"]

    def query(
        self,
        name: str,
        queries: np.ndarray | None,
        n_results: int,
        where: Any,
        where_document: Any,
        include: list[str] | None,
        query_texts: list[str] | None,
        options: dict[str, Any],
    ) -> QueryResult:
        payload = _dropnone(
            {
                "query_embeddings": queries,
                "query_texts": query_texts,
                "n_results": n_results,
                "where": where,
                "where_document": where_document,
                "include": include,
                **options,
            }
        )
        return query_result_from_json(self._call("POST", f"{self._c(name)}/query", payload))

    def search_text(
        self, name: str, text: str, n_results: int, where: Any, include: list[str] | None
    ) -> QueryResult:
        payload = _dropnone({"text": text, "n_results": n_results, "where": where, "include": include})
        return query_result_from_json(self._call("POST", f"{self._c(name)}/search_text", payload))

    def close(self) -> None:
        self._http.close()


class HttpClient(RemoteClient):
    """An M2M server's collections over REST: ``HttpClient("http://127.0.0.1:8080", api_key=None)``."""

    def __init__(
        self, url: str = "http://127.0.0.1:8080", api_key: str | None = None, *, timeout: float = 120.0
    ) -> None:
        super().__init__(HttpTransport(url, api_key, timeout))
        self.url = url

    def __repr__(self) -> str:
        return f"HttpClient({self.url!r})"
