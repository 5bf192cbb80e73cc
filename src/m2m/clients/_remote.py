"""The ``Client``/``Collection`` interface over a transport (HTTP or gRPC).

Arguments are checked here with the core's own validators before anything is sent,
so a remote call fails with the same error class and message as the embedded one;
the server checks everything again. Documents are embedded here, on the caller's
side, when the collection was given an ``embedding_function``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from m2m.errors import CollectionNotFoundError, InvalidArgumentError, InvalidVectorError
from m2m.results import GetResult, QueryResult
from m2m.storage import validation as check
from m2m.storage.filters import validate_where, validate_where_document
from m2m.types import GET_INCLUDE_DEFAULT, QUERY_INCLUDE_DEFAULT, Metric

if TYPE_CHECKING:
    from m2m.embeddings import EmbeddingFunction


class Transport(Protocol):
    """What a remote client needs from its wire protocol."""

    def health(self) -> dict[str, Any]: ...
    def stats(self) -> dict[str, Any]: ...
    def list_collections(self) -> list[dict[str, Any]]: ...
    def create_collection(
        self, name: str, dim: int, metric: str | None, metadata: Any, get_or_create: bool
    ) -> dict[str, Any]: ...
    def get_collection(self, name: str) -> dict[str, Any]: ...
    def modify_collection(self, name: str, metadata: Any) -> dict[str, Any]: ...
    def delete_collection(self, name: str) -> None: ...
    def write(
        self,
        mode: str,
        name: str,
        ids: list[str],
        embeddings: np.ndarray | None,
        metadatas: Any,
        documents: Any,
    ) -> int: ...
    def delete(self, name: str, ids: list[str] | None, where: Any, where_document: Any) -> int: ...
    def get(
        self,
        name: str,
        ids: list[str] | None,
        where: Any,
        limit: int | None,
        offset: int,
        where_document: Any,
        include: list[str] | None,
    ) -> GetResult: ...
    def count(self, name: str) -> int: ...
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
    ) -> QueryResult: ...
    def search_text(
        self, name: str, text: str, n_results: int, where: Any, include: list[str] | None
    ) -> QueryResult: ...
    def close(self) -> None: ...


def as_float32(values: Any, name: str = "embeddings") -> np.ndarray:
    """NumPy float32 from an array, nested lists or a torch tensor (as the core converts them)."""
    if type(values).__module__.startswith("torch"):
        values = values.detach().cpu().float().numpy()
    try:
        return np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidVectorError(f"{name} must be numeric and rectangular: {exc}") from None


def _include(include: Any) -> list[str] | None:
    if include is None:
        return None
    if isinstance(include, str):
        return [include]
    return [str(getattr(i, "value", i)) for i in include]


class RemoteCollection:
    """A collection on a server; same methods and results as :class:`m2m.Collection`."""

    def __init__(
        self, client: RemoteClient, info: dict[str, Any], embedding_function: EmbeddingFunction | None = None
    ) -> None:
        self._client = client
        self._info = info
        self.embedding_function = embedding_function

    @property
    def _t(self) -> Transport:
        return self._client._transport

    @property
    def name(self) -> str:
        return self._info["name"]

    @property
    def dim(self) -> int:
        return int(self._info["dim"])

    @property
    def metric(self) -> Metric:
        return Metric(self._info["metric"])

    @property
    def metadata(self) -> dict[str, Any] | None:
        return self._info["metadata"]

    @property
    def id(self) -> str:
        return self._info["id"]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, metric={self.metric.value!r})"

    def count(self) -> int:
        """Number of items."""
        return self._t.count(self.name)

    def _write(self, mode: str, ids: Any, embeddings: Any, metadatas: Any, documents: Any) -> None:
        ids = check.ids(ids)
        metas = check.metadatas(metadatas, len(ids))
        docs = check.documents(documents, len(ids))
        if (
            embeddings is None
            and self.embedding_function is not None
            and docs is not None
            and all(d is not None for d in docs)
        ):
            embeddings = self.embedding_function(docs)
        vectors = None if embeddings is None else as_float32(embeddings)
        self._t.write(mode, self.name, ids, vectors, metas, docs)

    def add(
        self, ids: str | Sequence[str], embeddings: Any = None, metadatas: Any = None, documents: Any = None
    ) -> None:
        """Add new items; fails whole with :class:`~m2m.errors.IdAlreadyExistsError` if any id exists."""
        self._write("add", ids, embeddings, metadatas, documents)

    def upsert(
        self, ids: str | Sequence[str], embeddings: Any = None, metadatas: Any = None, documents: Any = None
    ) -> None:
        """Add new items and overwrite existing ones."""
        self._write("upsert", ids, embeddings, metadatas, documents)

    def update(
        self, ids: str | Sequence[str], embeddings: Any = None, metadatas: Any = None, documents: Any = None
    ) -> None:
        """Change fields of existing items; :class:`~m2m.errors.ItemNotFoundError` if an id is missing."""
        self._write("update", ids, embeddings, metadatas, documents)

    def delete(
        self,
        ids: str | Sequence[str] | None = None,
        where: dict | None = None,
        where_document: dict | None = None,
    ) -> int:
        """Delete items by id and/or filter; returns how many."""
        if ids is None and where is None and where_document is None:
            raise InvalidArgumentError(
                "delete needs ids, where or where_document (where={} deletes everything)"
            )
        id_list = check.ids(ids, allow_empty=True) if ids is not None else None
        return self._t.delete(
            self.name, id_list, validate_where(where), validate_where_document(where_document)
        )

    def get(
        self,
        ids: str | Sequence[str] | None = None,
        where: dict | None = None,
        limit: int | None = None,
        offset: int = 0,
        where_document: dict | None = None,
        include: Sequence[str] = tuple(GET_INCLUDE_DEFAULT),
    ) -> GetResult:
        """Items by id and/or filter, in insertion order (or in the order of ``ids``)."""
        id_list = check.ids(ids, allow_empty=True) if ids is not None else None
        if limit is not None:
            limit = check.non_negative_int(limit, "limit")
        offset = check.non_negative_int(offset, "offset")
        return self._t.get(
            self.name,
            id_list,
            validate_where(where),
            limit,
            offset,
            validate_where_document(where_document),
            _include(include),
        )

    def peek(self, limit: int = 10) -> GetResult:
        """The first ``limit`` items."""
        return self.get(limit=limit)

    def query(
        self,
        query_embeddings: Any = None,
        n_results: int = 10,
        where: dict | None = None,
        where_document: dict | None = None,
        include: Sequence[str] = tuple(QUERY_INCLUDE_DEFAULT),
        *,
        query_texts: Sequence[str] | str | None = None,
        **options: Any,
    ) -> QueryResult:
        """The ``n_results`` nearest items to each query, best first.

        ``options`` are index search options (``n_probe``, ``lod``, ``target_recall``)
        passed to the server's ``Collection.query``.
        """
        n_results = check.positive_int(n_results, "n_results")
        texts = None
        if query_embeddings is None and query_texts is not None:
            texts = [query_texts] if isinstance(query_texts, str) else list(query_texts)
            if self.embedding_function is not None:
                query_embeddings, texts = self.embedding_function(texts), None
        queries = None if query_embeddings is None else as_float32(query_embeddings, "query_embeddings")
        return self._t.query(
            self.name,
            queries,
            n_results,
            validate_where(where),
            validate_where_document(where_document),
            _include(include),
            texts,
            options,
        )

    def search_text(
        self,
        text: str,
        n_results: int = 10,
        where: dict | None = None,
        include: Sequence[str] = tuple(QUERY_INCLUDE_DEFAULT),
    ) -> QueryResult:
        """Full-text (BM25) search over documents; one result row, best first."""
        if not isinstance(text, str):
            raise InvalidArgumentError("text must be a string")
        n_results = check.positive_int(n_results, "n_results")
        return self._t.search_text(self.name, text, n_results, validate_where(where), _include(include))

    def modify(self, metadata: dict[str, Any] | None = None) -> None:
        """Replace the collection's own metadata."""
        self._info = self._t.modify_collection(self.name, check.metadata(metadata))


class RemoteClient:
    """Collections on a server; same methods as :class:`m2m.Client`."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def __enter__(self) -> RemoteClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self._transport.close()

    def heartbeat(self) -> dict[str, Any]:
        """The server's health answer (``{"status": "ok", "version": ...}``)."""
        return self._transport.health()

    def stats(self) -> dict[str, Any]:
        """Collections with their sizes, and request counts (GET /v1/stats)."""
        return self._transport.stats()

    def create_collection(
        self,
        name: str,
        dim: int,
        metric: str | Metric = "cosine",
        metadata: dict[str, Any] | None = None,
        *,
        embedding_function: EmbeddingFunction | None = None,
    ) -> RemoteCollection:
        """A new, empty collection; :class:`~m2m.errors.CollectionExistsError` if the name is taken."""
        name = check.collection_name(name)
        dim = check.positive_int(dim, "dim")
        metric = Metric.parse(metric).value
        info = self._transport.create_collection(name, dim, metric, check.metadata(metadata), False)
        return RemoteCollection(self, info, embedding_function)

    def get_collection(
        self, name: str, *, embedding_function: EmbeddingFunction | None = None
    ) -> RemoteCollection:
        """An existing collection; :class:`~m2m.errors.CollectionNotFoundError` if there is none."""
        name = check.collection_name(name)
        return RemoteCollection(self, self._transport.get_collection(name), embedding_function)

    def get_or_create_collection(
        self,
        name: str,
        dim: int | None = None,
        metric: str | Metric | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        embedding_function: EmbeddingFunction | None = None,
    ) -> RemoteCollection:
        """The named collection, created with ``dim`` and ``metric`` if it does not exist."""
        if dim is None:
            try:
                return self.get_collection(name, embedding_function=embedding_function)
            except CollectionNotFoundError:
                raise InvalidArgumentError(
                    f"collection {name!r} does not exist; give dim to create it"
                ) from None
        name = check.collection_name(name)
        dim = check.positive_int(dim, "dim")
        metric_value = Metric.parse(metric).value if metric is not None else None
        info = self._transport.create_collection(name, dim, metric_value, check.metadata(metadata), True)
        return RemoteCollection(self, info, embedding_function)

    def list_collections(self) -> list[str]:
        """Names of all collections, sorted."""
        return sorted(info["name"] for info in self._transport.list_collections())

    def delete_collection(self, name: str) -> None:
        """Delete a collection and everything in it."""
        self._transport.delete_collection(check.collection_name(name))
