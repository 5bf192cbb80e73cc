"""Remote clients with the same interface as :class:`m2m.Client`.

    from m2m.clients import HttpClient, GrpcClient
    client = HttpClient("http://127.0.0.1:8080", api_key="...")
    col = client.get_or_create_collection("docs", dim=384)
    col.add(ids, embeddings, metadatas, documents)
    col.query(query_embeddings, n_results=10, where={"lang": "en"})

Results are :class:`m2m.results.QueryResult` / :class:`~m2m.results.GetResult` and
errors are the server's :mod:`m2m.errors` class. httpx and grpcio are imported only
when the class is first used (``pip install 'm2m-vector-search[client]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from m2m.clients.grpc import GrpcClient
    from m2m.clients.http import HttpClient

__all__ = ["GrpcClient", "HttpClient"]


def __getattr__(name: str) -> Any:
    if name == "HttpClient":
        from m2m.clients.http import HttpClient

        return HttpClient
    if name == "GrpcClient":
        from m2m.clients.grpc import GrpcClient

        return GrpcClient
    raise AttributeError(f"module 'm2m.clients' has no attribute {name!r}")
