"""M2M: a local-first vector search engine, embedded like SQLite."""

from m2m import errors
from m2m.client import Client
from m2m.collection import Collection
from m2m.results import GetResult, Hit, QueryResult
from m2m.types import Include, Metric

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Collection",
    "GetResult",
    "Hit",
    "Include",
    "Metric",
    "QueryResult",
    "__version__",
    "errors",
]
