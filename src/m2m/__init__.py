"""M2M: a local-first vector search engine, embedded like SQLite."""

from m2m import errors
from m2m.client import Client
from m2m.collection import Collection
from m2m.config import M2MConfig
from m2m.engine import M2MEngine, SearchResult, create_m2m
from m2m.results import GetResult, Hit, QueryResult
from m2m.types import Include, Metric

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Collection",
    "GetResult",
    "Hit",
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
