"""The embedded client: a data folder holding named collections, like SQLite."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m2m.collection import Collection
from m2m.errors import CollectionNotFoundError, InvalidArgumentError
from m2m.index_manager import IndexSettings
from m2m.storage import validation as check
from m2m.storage.sqlite_store import SQLiteStore
from m2m.types import Metric

if TYPE_CHECKING:
    from m2m.embeddings import EmbeddingFunction

logger = logging.getLogger(__name__)

DEFAULT_PATH = "./m2m_data"


class Client:
    """Collections stored under ``path``; safe to share between threads and processes.

    ``write_timeout`` bounds how long a write waits for another process's write lock
    before raising :class:`~m2m.errors.StoreBusyError`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = DEFAULT_PATH,
        *,
        write_timeout: float = 30.0,
        index_settings: IndexSettings | None = None,
    ) -> None:
        self.path = Path(path)
        self.index_settings = index_settings or IndexSettings()
        self._store = SQLiteStore(self.path, write_timeout=write_timeout)
        self._collections: dict[str, Collection] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Client(path={str(self.path)!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database; later calls raise :class:`~m2m.errors.StorageError`."""
        with self._lock:
            for collection in self._collections.values():
                collection._close()
            self._collections.clear()
        self._store.close()

    def create_collection(
        self,
        name: str,
        dim: int,
        metric: str | Metric = "cosine",
        metadata: dict[str, Any] | None = None,
        *,
        embedding_function: EmbeddingFunction | None = None,
    ) -> Collection:
        """A new, empty collection; :class:`~m2m.errors.CollectionExistsError` if the name is taken."""
        name = check.collection_name(name)
        dim = check.positive_int(dim, "dim")
        metric = Metric.parse(metric)
        metadata = check.metadata(metadata)
        record = self._store.create_collection(name, dim, metric, metadata)
        with self._lock:
            collection = self._collections[name] = Collection(
                self._store, record, embedding_function, self.index_settings
            )
        return collection

    def get_collection(self, name: str, *, embedding_function: EmbeddingFunction | None = None) -> Collection:
        """An existing collection; :class:`~m2m.errors.CollectionNotFoundError` if there is none."""
        name = check.collection_name(name)
        record = self._store.get_collection(name)
        with self._lock:
            collection = self._collections.get(name)
            if collection is None or collection._record.uuid != record.uuid:
                collection = self._collections[name] = Collection(
                    self._store, record, embedding_function, self.index_settings
                )
            elif embedding_function is not None:
                collection.embedding_function = embedding_function
        return collection

    def get_or_create_collection(
        self,
        name: str,
        dim: int | None = None,
        metric: str | Metric | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        embedding_function: EmbeddingFunction | None = None,
    ) -> Collection:
        """The named collection, created with ``dim`` and ``metric`` if it does not exist.

        An existing collection must match ``dim`` and ``metric`` when they are given.
        """
        try:
            collection = self.get_collection(name, embedding_function=embedding_function)
        except CollectionNotFoundError:
            if dim is None:
                raise InvalidArgumentError(
                    f"collection {name!r} does not exist; give dim to create it"
                ) from None
            return self.create_collection(
                name, dim, metric or "cosine", metadata, embedding_function=embedding_function
            )
        if dim is not None and collection.dim != dim:
            raise InvalidArgumentError(f"collection {name!r} has dimension {collection.dim}, not {dim}")
        if metric is not None and Metric.parse(metric) is not collection.metric:
            raise InvalidArgumentError(f"collection {name!r} uses metric {collection.metric.value!r}")
        return collection

    def list_collections(self) -> list[str]:
        """Names of all collections, sorted."""
        return [record.name for record in self._store.list_collections()]

    def delete_collection(self, name: str) -> None:
        """Delete a collection and everything in it."""
        name = check.collection_name(name)
        record = self._store.delete_collection(name)
        with self._lock:
            collection = self._collections.pop(name, None)
        if collection is not None:
            collection._drop()
        else:
            shutil.rmtree(self.path / "indexes" / record.uuid, ignore_errors=True)
            shutil.rmtree(self.path / "mirrors" / record.uuid, ignore_errors=True)
