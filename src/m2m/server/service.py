"""The operations both servers expose, over one embedded :class:`m2m.Client`.

REST and gRPC translate their wire formats to these calls and nothing else, so the
two transports cannot drift apart. All methods are synchronous and thread-safe (the
core is); the servers call them from worker threads, never on an event loop.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import Any

from m2m import __version__
from m2m.client import Client
from m2m.collection import Collection
from m2m.errors import InvalidArgumentError
from m2m.results import GetResult, QueryResult
from m2m.server.metrics import Metrics

logger = logging.getLogger(__name__)

# Search options the lead's index adds to Collection.query; forwarded only when the core accepts them.
QUERY_OPTIONS = ("n_probe", "lod", "target_recall")
WRITE_MODES = ("add", "upsert", "update")


def _accepted_query_options() -> frozenset[str] | None:
    """Names of keyword options ``Collection.query`` takes; ``None`` if it takes ``**kwargs``."""
    params = inspect.signature(Collection.query).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return frozenset(params)


class Service:
    """One store, shared by every transport of one server process."""

    def __init__(
        self, client: Client, metrics: Metrics | None = None, *, max_n_results: int = 100_000
    ) -> None:
        self.client = client
        self.max_n_results = max_n_results
        self.metrics = metrics or Metrics()
        self.started = time.time()
        self._query_options = _accepted_query_options()

    # -- collections ---------------------------------------------------------------------------

    def collection(self, name: str) -> Collection:
        return self.client.get_collection(name)

    @staticmethod
    def describe(collection: Collection) -> dict[str, Any]:
        return {
            "name": collection.name,
            "id": collection.id,
            "dim": collection.dim,
            "metric": collection.metric.value,
            "metadata": collection.metadata,
            "count": collection.count(),
        }

    def list_collections(self) -> list[dict[str, Any]]:
        out = []
        for name in self.client.list_collections():
            try:
                out.append(self.describe(self.client.get_collection(name)))
            except KeyError:  # deleted between the listing and the lookup
                continue
        return out

    def exists(self, name: str) -> bool:
        return name in self.client.list_collections()

    def create_collection(
        self,
        name: str,
        dim: int,
        metric: str | None = None,
        metadata: dict[str, Any] | None = None,
        get_or_create: bool = False,
    ) -> dict[str, Any]:
        if get_or_create:
            collection = self.client.get_or_create_collection(name, dim, metric, metadata)
        else:
            collection = self.client.create_collection(name, dim, metric or "cosine", metadata)
        return self.describe(collection)

    def get_collection(self, name: str) -> dict[str, Any]:
        return self.describe(self.collection(name))

    def modify_collection(self, name: str, metadata: dict[str, Any] | None) -> dict[str, Any]:
        collection = self.collection(name)
        collection.modify(metadata=metadata)
        return self.describe(collection)

    def delete_collection(self, name: str) -> None:
        self.client.delete_collection(name)

    # -- items ---------------------------------------------------------------------------------

    def write(
        self,
        name: str,
        mode: str,
        ids: Any,
        embeddings: Any = None,
        metadatas: Any = None,
        documents: Any = None,
    ) -> int:
        """``add``, ``upsert`` or ``update``; returns how many items the call named."""
        if mode not in WRITE_MODES:
            raise InvalidArgumentError(f"unknown write mode {mode!r}")
        collection = self.collection(name)
        getattr(collection, mode)(ids, embeddings, metadatas, documents)
        return 1 if isinstance(ids, str) else len(ids)

    def delete(self, name: str, ids: Any = None, where: Any = None, where_document: Any = None) -> int:
        return self.collection(name).delete(ids=ids, where=where, where_document=where_document)

    def get(
        self,
        name: str,
        ids: Any = None,
        where: Any = None,
        limit: Any = None,
        offset: Any = 0,
        where_document: Any = None,
        include: Any = None,
    ) -> GetResult:
        kwargs = {} if include is None else {"include": include}
        return self.collection(name).get(
            ids=ids, where=where, limit=limit, offset=offset, where_document=where_document, **kwargs
        )

    def count(self, name: str) -> int:
        return self.collection(name).count()

    def query(
        self,
        name: str,
        query_embeddings: Any = None,
        n_results: Any = 10,
        where: Any = None,
        where_document: Any = None,
        include: Any = None,
        query_texts: Any = None,
        options: dict[str, Any] | None = None,
    ) -> QueryResult:
        kwargs: dict[str, Any] = {} if include is None else {"include": include}
        if query_texts is not None:
            kwargs["query_texts"] = query_texts
        for key, value in (options or {}).items():
            if value is None:
                continue
            if key not in QUERY_OPTIONS or (
                self._query_options is not None and key not in self._query_options
            ):
                raise InvalidArgumentError(f"query option {key!r} is not supported by this server")
            kwargs[key] = value
        collection = self.collection(name)
        return collection.query(
            query_embeddings, self._k(collection, n_results), where, where_document, **kwargs
        )

    def search_text(
        self, name: str, text: Any, n_results: Any = 10, where: Any = None, include: Any = None
    ) -> QueryResult:
        kwargs = {} if include is None else {"include": include}
        collection = self.collection(name)
        return collection.search_text(text, self._k(collection, n_results), where, **kwargs)

    def _k(self, collection: Collection, n_results: Any) -> Any:
        """``n_results``, refused over the server's limit and clamped to the collection's size.

        Clamping gives the same answer (there are never more hits than items) without
        the core allocating ``n_results`` slots per query for an absurd value.
        """
        if isinstance(n_results, int) and not isinstance(n_results, bool) and n_results > 1:
            if n_results > self.max_n_results:
                raise InvalidArgumentError(
                    f"n_results must be at most {self.max_n_results} on this server, got {n_results}"
                )
            return max(1, min(n_results, collection.count()))
        return n_results

    # -- server --------------------------------------------------------------------------------

    def collection_items(self) -> dict[str, int]:
        out = {}
        for name in self.client.list_collections():
            try:
                out[name] = self.client.get_collection(name).count()
            except KeyError:
                continue
        return out

    def stats(self) -> dict[str, Any]:
        # Read the in-flight gauges first: counting items may wait behind a running write.
        in_flight = {t: self.metrics.in_flight(t) for t in ("rest", "grpc")}
        return {
            "version": __version__,
            "uptime_seconds": time.time() - self.started,
            "collections": [
                {"name": c["name"], "dim": c["dim"], "metric": c["metric"], "count": c["count"]}
                for c in self.list_collections()
            ],
            "requests": self.metrics.total_requests(),
            "in_flight": in_flight,
        }
