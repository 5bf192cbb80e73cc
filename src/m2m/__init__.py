"""M2M: a local-first vector search engine, embedded like SQLite."""

from m2m import errors
from m2m.client import Client
from m2m.collection import Collection
from m2m.config import M2MConfig
from m2m.engine import M2MEngine, SearchResult, create_m2m
from m2m.results import GetResult, Hit, QueryResult
from m2m.types import Include, Metric

__version__ = "0.1.0"


def __getattr__(name: str):
    """Remote clients load httpx / grpcio only when first asked for."""
    if name in ("HttpClient", "GrpcClient"):
        from m2m import clients

        return getattr(clients, name)
    raise AttributeError(f"module 'm2m' has no attribute {name!r}")


__all__ = [
    "Client",
    "Collection",
    "GetResult",
    "GrpcClient",
    "Hit",
    "HttpClient",
    "Include",
    "M2MConfig",
    "M2MEngine",
    "Metric",
    "QueryResult",
    "SearchResult",
    "__version__",
    "create_m2m",
    "errors",
]
