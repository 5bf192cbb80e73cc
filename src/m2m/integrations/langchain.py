"""LangChain vector store backed by an M2M collection.

``M2MVectorStore`` implements ``langchain_core.vectorstores.VectorStore`` and passes
``langchain-tests``' ``VectorStoreIntegrationTests`` (sync and async). How things map:

- A ``Document``'s ``page_content`` is the M2M document, its ``id`` the M2M id, its
  ``metadata`` the M2M metadata. Writes are upserts: adding an existing id replaces it.
- Metadata values M2M stores natively (str, int, float, bool, flat lists of those) stay
  filterable with ``filter=`` (M2M's ``where`` syntax). Anything else (None, nested
  dicts, nested lists, keys starting with ``$``) is JSON-encoded under the reserved key
  ``_lc_json`` and decoded on read, so metadata round-trips; those keys are not filterable.
- ``similarity_search_with_score`` returns M2M distances (smaller is closer: cosine
  ``1 - cos``, ip ``-dot``, l2 squared). Relevance scores (``[0, 1]``, larger is closer) are
  the cosine similarity clamped at 0 for every metric, computed from the distance:
  cosine ``1 - d``, ip ``-d`` (the dot product), l2 ``1 - d / 2``; the three agree for unit
  vectors. Pass ``relevance_score_fn`` to use another mapping.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from m2m._optional import require

require("langchain_core", "langchain")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.vectorstores import VectorStore  # noqa: E402

from m2m.client import Client  # noqa: E402
from m2m.collection import Collection  # noqa: E402
from m2m.errors import (  # noqa: E402
    CapacityError,
    CollectionNotFoundError,
    InvalidArgumentError,
    InvalidMetadataError,
)
from m2m.integrations._mmr import mmr_select  # noqa: E402
from m2m.types import Metric  # noqa: E402

logger = logging.getLogger(__name__)

__all__ = ["JSON_KEY", "M2MVectorStore", "decode_metadata", "encode_metadata"]

JSON_KEY = "_lc_json"
"""Reserved metadata key holding the JSON of values M2M cannot store natively."""

_CAPACITY_KEY = "splat_capacity"
_INT64 = (-(2**63), 2**63)


def _native_scalar(value: Any) -> bool:
    if isinstance(value, bool | str):
        return True
    if isinstance(value, int | np.integer):
        return _INT64[0] <= int(value) < _INT64[1]
    if isinstance(value, float | np.floating):
        return bool(np.isfinite(value))
    return False


def _native(value: Any) -> bool:
    """Whether M2M stores ``value`` as it is (so it stays filterable)."""
    if isinstance(value, list):
        return all(_native_scalar(v) for v in value)
    return _native_scalar(value)


def encode_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """LangChain metadata as M2M metadata: native values as they are, the rest as JSON under ``_lc_json``."""
    metadata = metadata or {}
    if not isinstance(metadata, dict):
        raise InvalidMetadataError(f"metadata must be a dict, got {type(metadata).__name__}")
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise InvalidMetadataError(f"metadata keys must be strings, got {key!r}")
        if key == JSON_KEY:
            raise InvalidMetadataError(f"metadata key {JSON_KEY!r} is reserved by the M2M LangChain adapter")
        if key and not key.startswith("$") and _native(value):
            out[key] = value
        else:
            extra[key] = value
    if extra:
        try:
            out[JSON_KEY] = json.dumps(extra, sort_keys=True, default=_json_default)
        except (TypeError, ValueError) as exc:
            raise InvalidMetadataError(f"metadata values must be JSON-serialisable: {exc}") from None
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def decode_metadata(stored: dict[str, Any] | None) -> dict[str, Any]:
    """The inverse of :func:`encode_metadata`."""
    if not stored:
        return {}
    out = {k: v for k, v in stored.items() if k != JSON_KEY}
    if JSON_KEY in stored:
        out.update(json.loads(stored[JSON_KEY]))
    return out


def _clamp01(x: float) -> float:
    return min(1.0, max(0.0, x))


def _cosine_relevance(distance: float) -> float:
    return _clamp01(1.0 - distance)


def _ip_relevance(distance: float) -> float:
    return _clamp01(-distance)


def _l2_relevance(distance: float) -> float:
    return _clamp01(1.0 - distance / 2.0)


_RELEVANCE = {Metric.COSINE: _cosine_relevance, Metric.IP: _ip_relevance, Metric.L2: _l2_relevance}


class M2MVectorStore(VectorStore):
    """A LangChain ``VectorStore`` over one M2M collection.

    Give ``collection`` (an open :class:`m2m.Collection`), or ``path`` / ``client`` and
    ``collection_name``; the collection is opened if it exists, else created on the first
    add with the embedding's dimension and ``metric`` (default cosine). With neither
    ``path`` nor ``client`` nor ``collection`` the store lives in a temporary folder that is
    removed when the store is closed or garbage-collected.

    The original README's form ``M2MVectorStore(embedding_function=..., splat_capacity=...,
    enable_vulkan=...)`` is accepted: ``embedding_function`` is the ``Embeddings``;
    ``splat_capacity`` is a hard limit on the number of items (adds that would exceed it
    raise :class:`~m2m.errors.CapacityError`; it is saved in the collection's metadata and
    applies again when the collection is reopened); ``enable_vulkan=True`` records the
    device preference ``"vulkan"`` in ``device_hint``. The embedded collection searches with
    its exact NumPy scan, so the hint does not change results or speed today.
    """

    def __init__(
        self,
        embedding: Embeddings | None = None,
        collection: Collection | None = None,
        path: str | Path | None = None,
        collection_name: str = "langchain",
        metric: str | Metric | None = None,
        *,
        client: Client | None = None,
        embedding_function: Embeddings | None = None,
        splat_capacity: int | None = None,
        enable_vulkan: bool = False,
        relevance_score_fn: Callable[[float], float] | None = None,
    ) -> None:
        if embedding is None:
            embedding = embedding_function
        elif embedding_function is not None and embedding_function is not embedding:
            raise InvalidArgumentError("give embedding or embedding_function, not both")
        if embedding is None:
            raise InvalidArgumentError("M2MVectorStore needs an Embeddings object (embedding=...)")
        if splat_capacity is not None and (
            isinstance(splat_capacity, bool) or not isinstance(splat_capacity, int) or splat_capacity < 1
        ):
            raise InvalidArgumentError(f"splat_capacity must be an integer >= 1, got {splat_capacity!r}")
        self._embedding = embedding
        self._metric = Metric.parse(metric) if metric is not None else None
        self._relevance_override = relevance_score_fn
        self.device_hint: str | None = "vulkan" if enable_vulkan else None
        self._tmpdir: str | None = None
        self._owns_client = False
        if collection is not None:
            if client is not None or path is not None:
                raise InvalidArgumentError("give collection, or path/client, not both")
            self._client: Client | None = None
            self._collection: Collection | None = collection
            self.collection_name = collection.name
            if self._metric is not None and self._metric is not collection.metric:
                raise InvalidArgumentError(
                    f"collection {collection.name!r} uses metric {collection.metric.value!r}, not {self._metric.value!r}"
                )
        else:
            if client is None:
                if path is None:
                    self._tmpdir = tempfile.mkdtemp(prefix="m2m-langchain-")
                    path = self._tmpdir
                client = Client(path)
                self._owns_client = True
            self._client = client
            self.collection_name = collection_name
            try:
                self._collection = client.get_collection(collection_name)
            except CollectionNotFoundError:
                self._collection = None
            if (
                self._collection is not None
                and self._metric is not None
                and self._metric is not self._collection.metric
            ):
                raise InvalidArgumentError(
                    f"collection {collection_name!r} uses metric {self._collection.metric.value!r}, "
                    f"not {self._metric.value!r}"
                )
        stored = (
            (self._collection.metadata or {}).get(_CAPACITY_KEY) if self._collection is not None else None
        )
        self.splat_capacity: int | None = splat_capacity if splat_capacity is not None else stored
        self._finalizer = weakref.finalize(
            self, _cleanup, self._client if self._owns_client else None, self._tmpdir
        )

    # -- plumbing --------------------------------------------------------------------------------

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    @property
    def collection(self) -> Collection | None:
        """The M2M collection (``None`` until the first add when it did not exist)."""
        return self._collection

    @property
    def metric(self) -> Metric:
        if self._collection is not None:
            return self._collection.metric
        return self._metric or Metric.COSINE

    def close(self) -> None:
        """Close the client this store opened (and remove its temporary folder, if any)."""
        self._finalizer()

    def _ensure_collection(self, dim: int) -> Collection:
        if self._collection is None:
            assert self._client is not None
            metadata = {_CAPACITY_KEY: self.splat_capacity} if self.splat_capacity is not None else None
            self._collection = self._client.get_or_create_collection(
                self.collection_name, dim, self._metric or Metric.COSINE, metadata
            )
        return self._collection

    def _check_capacity(self, ids: list[str]) -> None:
        """Refuse (before embedding anything) a write that would take the store past ``splat_capacity``."""
        if self.splat_capacity is None:
            return
        collection = self._collection
        existing = len(collection.get(ids=ids, include=[])["ids"]) if collection is not None else 0
        total = (collection.count() if collection is not None else 0) + len(ids) - existing
        if total > self.splat_capacity:
            raise CapacityError(
                f"adding {len(ids) - existing} new items would make {total}, over splat_capacity={self.splat_capacity}"
            )

    # -- writes ----------------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed ``texts`` and upsert them; ids that are missing or ``None`` get a new UUID.

        An id repeated within one call raises :class:`~m2m.errors.DuplicateIdError`.
        """
        texts = list(texts)
        n = len(texts)
        if metadatas is not None and len(metadatas) != n:
            raise InvalidArgumentError(f"got {len(metadatas)} metadatas for {n} texts")
        if ids is not None and len(ids) != n:
            raise InvalidArgumentError(f"got {len(ids)} ids for {n} texts")
        if n == 0:
            return []
        for text in texts:
            if not isinstance(text, str):
                raise InvalidArgumentError(f"texts must be strings, got {type(text).__name__}")
        out_ids = [i if i else str(uuid.uuid4()) for i in (ids or [None] * n)]
        metas = [encode_metadata(m) for m in (metadatas or [None] * n)]
        self._check_capacity(out_ids)
        vectors = np.asarray(self._embedding.embed_documents(texts), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != n:
            raise InvalidArgumentError(f"the embedding returned shape {vectors.shape} for {n} texts")
        collection = self._ensure_collection(vectors.shape[1])
        collection.upsert(ids=out_ids, embeddings=vectors, metadatas=metas, documents=texts)
        return out_ids

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete by ids; with ``filter=`` (a where dict) delete what matches; with neither, everything.

        Ids that do not exist are ignored.
        """
        where = kwargs.pop("filter", None) or kwargs.pop("where", None)
        if kwargs:
            raise InvalidArgumentError(f"unexpected arguments to delete: {sorted(kwargs)}")
        if self._collection is None:
            return True
        if ids is not None:
            ids = list(ids)
            if not ids:
                return True
            self._collection.delete(ids=ids, where=where)
        else:
            self._collection.delete(where=where if where is not None else {})
        return True

    # -- reads -----------------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Documents for the ids that exist, in the order given; missing ids are skipped."""
        if self._collection is None or not ids:
            return []
        res = self._collection.get(ids=list(dict.fromkeys(ids)), include=["metadatas", "documents"])
        return [
            Document(id=i, page_content=doc or "", metadata=decode_metadata(meta))
            for i, doc, meta in zip(res["ids"], res["documents"], res["metadatas"], strict=True)
        ]

    def _query(
        self,
        embedding: Sequence[float],
        k: int,
        filter: dict[str, Any] | None,
        where_document: dict[str, Any] | None,
        with_embeddings: bool = False,
    ) -> tuple[list[Document], list[float], list[np.ndarray]]:
        if self._collection is None:
            return [], [], []
        include = ["metadatas", "documents", "distances"] + (["embeddings"] if with_embeddings else [])
        res = self._collection.query(
            query_embeddings=np.asarray(embedding, dtype=np.float32),
            n_results=k,
            where=filter,
            where_document=where_document,
            include=include,
        )
        docs = [
            Document(id=i, page_content=doc or "", metadata=decode_metadata(meta))
            for i, doc, meta in zip(res["ids"][0], res["documents"][0], res["metadatas"][0], strict=True)
        ]
        vectors = res["embeddings"][0] if with_embeddings else []
        return docs, list(res["distances"][0]), vectors

    def similarity_search_by_vector_with_score(
        self,
        embedding: list[float],
        k: int = 4,
        filter: dict[str, Any] | None = None,
        where_document: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """``k`` nearest documents with their M2M distance (smaller is closer)."""
        docs, distances, _ = self._query(embedding, k, filter, where_document)
        return list(zip(docs, distances, strict=True))

    def similarity_search_with_score(
        self,
        query: str,
        k: int = 4,
        filter: dict[str, Any] | None = None,
        where_document: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """``k`` nearest documents to ``query`` with their M2M distance (smaller is closer)."""
        if self._collection is None:
            return []
        return self.similarity_search_by_vector_with_score(
            self._embedding.embed_query(query), k, filter, where_document
        )

    def similarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_by_vector_with_score(embedding, k, filter, **kwargs)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        if self._relevance_override is not None:
            return self._relevance_override
        return _RELEVANCE[self.metric]

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        where_document: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Fetch the ``fetch_k`` nearest, then pick ``k`` of them by maximal marginal relevance."""
        docs, _, vectors = self._query(
            embedding, max(fetch_k, k), filter, where_document, with_embeddings=True
        )
        if not docs:
            return []
        chosen = mmr_select(np.asarray(embedding, dtype=np.float32), np.stack(vectors), k, lambda_mult)
        return [docs[i] for i in chosen]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        if self._collection is None:
            return []
        return self.max_marginal_relevance_search_by_vector(
            self._embedding.embed_query(query), k, fetch_k, lambda_mult, filter, **kwargs
        )

    # -- constructors ----------------------------------------------------------------------------

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> M2MVectorStore:
        """A new store (constructor arguments in ``kwargs``) holding ``texts``."""
        store = cls(embedding=embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store


def _cleanup(client: Client | None, tmpdir: str | None) -> None:
    if client is not None:
        client.close()
    if tmpdir is not None:
        shutil.rmtree(tmpdir, ignore_errors=True)
