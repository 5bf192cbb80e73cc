"""A collection: ids, vectors, metadata and documents, with filters and search.

Writes go to SQLite first (one transaction per call, durable on return) and then to
the in-memory mirror that searches scan. Reads first catch up with writes that other
processes committed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from m2m._rwlock import RWLock
from m2m.edge.export import export_edge
from m2m.errors import IdAlreadyExistsError, InvalidArgumentError, ItemNotFoundError
from m2m.exact import exact_search
from m2m.index.hrm2 import HRM2Params
from m2m.index_manager import IndexManager, IndexSettings
from m2m.results import GetResult, QueryResult
from m2m.splats.collection_api import SplatCollectionMixin
from m2m.storage import validation as check
from m2m.storage.filters import (
    evaluate_where,
    evaluate_where_document,
    validate_where,
    validate_where_document,
)
from m2m.storage.mirror import CollectionMirror, SlotChanges, search_form
from m2m.storage.sqlite_store import (
    OP_DELETE,
    OP_PUT,
    CollectionRecord,
    SQLiteStore,
    decode_vector,
    encode_metadata,
    translate_sqlite_errors,
    vector_blobs,
)
from m2m.types import (
    GET_INCLUDE_ALLOWED,
    GET_INCLUDE_DEFAULT,
    QUERY_INCLUDE_ALLOWED,
    QUERY_INCLUDE_DEFAULT,
    Include,
    Metric,
)

if TYPE_CHECKING:
    from m2m.embeddings import EmbeddingFunction

logger = logging.getLogger(__name__)

_UNSET: Any = object()
_ROW_FIELDS = frozenset({Include.EMBEDDINGS, Include.METADATAS, Include.DOCUMENTS})


@dataclasses.dataclass(frozen=True)
class _SearchOptions:
    """Validated index parameters of one query."""

    n_probe: int | None
    lod: int
    target_recall: float | None
    exact: bool = False

    @classmethod
    def parse(cls, n_probe: Any, lod: Any, target_recall: Any) -> _SearchOptions:
        if n_probe is not None:
            n_probe = check.positive_int(n_probe, "n_probe")
        if lod not in (0, 1, 2) or isinstance(lod, bool):
            raise InvalidArgumentError(f"lod must be 0, 1 or 2, got {lod!r}")
        if target_recall is not None and (
            isinstance(target_recall, bool)
            or not isinstance(target_recall, int | float)
            or not 0.0 < target_recall <= 1.0
        ):
            raise InvalidArgumentError(f"target_recall must be a number in (0, 1], got {target_recall!r}")
        return cls(n_probe, int(lod), None if target_recall is None else float(target_recall))


@dataclasses.dataclass(frozen=True)
class ProgressiveResult:
    """One level of a progressive query: its LOD, seconds since the query began, and the result."""

    lod: int
    elapsed: float
    result: QueryResult


@dataclasses.dataclass
class VectorExport:
    """Every live item of a collection at one version, in insertion (rowid) order."""

    ids: list[str]
    vectors: np.ndarray  # float32 (n, dim), C-contiguous
    rowids: np.ndarray  # int64 (n,): the items' internal row numbers (never reused)
    version: int  # the collection's state version the export reflects
    metadatas: list[str | None] | None = None  # JSON text as stored (json.loads gives the dict)
    documents: list[str | None] | None = None


class Collection(SplatCollectionMixin):
    """A named set of items of one dimension and metric. Thread-safe."""

    def __init__(
        self,
        store: SQLiteStore,
        record: CollectionRecord,
        embedding_function: EmbeddingFunction | None = None,
        index_settings: IndexSettings | None = None,
    ) -> None:
        self._store = store
        self._record = record
        self.embedding_function = embedding_function
        self._lock = RWLock()
        settings = index_settings or IndexSettings()
        disk = store.path / "mirrors" / record.uuid if settings.disk_mirror else None
        self._mirror = CollectionMirror(record.dim, record.metric, disk_directory=disk)
        self._seen_data_version = threading.local()
        self._indexer = IndexManager(
            store.path / "indexes" / record.uuid,
            store,
            record.id,
            self._mirror,
            self._lock,
            settings,
        )
        with self._lock.write():
            self._mirror.load(store, record.id)
            self._indexer.open()

    # -- properties ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._record.name

    @property
    def dim(self) -> int:
        return self._record.dim

    @property
    def metric(self) -> Metric:
        return self._record.metric

    @property
    def metadata(self) -> dict[str, Any] | None:
        return self._record.metadata

    @property
    def id(self) -> str:
        """A stable unique id (a UUID), distinct from the name."""
        return self._record.uuid

    def __repr__(self) -> str:
        return f"Collection(name={self.name!r}, dim={self.dim}, metric={self.metric.value!r})"

    def count(self) -> int:
        """Number of items."""
        self._catch_up()
        with self._lock.read():
            return self._mirror.count

    @property
    def version(self) -> int:
        """The collection's state version: it changes with every committed write (any process)."""
        self._catch_up()
        with self._lock.read():
            return int(self._mirror.version)

    def export_vectors(
        self, source: str = "mirror", *, include_metadata: bool = False, include_documents: bool = False
    ) -> VectorExport:
        """Every live item in one pass, for bulk readers (the data lake, Parquet export).

        ``source="mirror"``: the search vectors (unit rows for cosine) in one gather from RAM;
        ``"store"``: the vectors as stored, in one SQLite read transaction. Metadata and
        documents come from the store, in the same transaction as the vectors (which keep
        the form ``source`` names).
        """
        if source not in ("mirror", "store"):
            raise InvalidArgumentError(f"source must be 'mirror' or 'store', got {source!r}")
        if source == "mirror" and not (include_metadata or include_documents):
            self._catch_up()
            with self._lock.read():
                mirror = self._mirror
                slots = mirror.live_slots()
                vectors = np.ascontiguousarray(mirror.vectors[slots], dtype=np.float32)
                return VectorExport(
                    [mirror.ids[s] for s in slots], vectors, mirror.rowids[slots].copy(), int(mirror.version)
                )
        columns = f"rowid, id, vector, {'metadata' if include_metadata else 'NULL'}, " + (
            "document" if include_documents else "NULL"
        )
        with translate_sqlite_errors("exporting vectors"):
            conn = self._store.reader
            conn.execute("BEGIN")
            try:
                version = int(self._store.state(self._record.id, conn)[0])
                rows = conn.execute(
                    f"SELECT {columns} FROM items WHERE collection_id = ? ORDER BY rowid", (self._record.id,)
                ).fetchall()
            finally:
                conn.execute("COMMIT")
        n = len(rows)
        vectors = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(n, self.dim)
        if source == "mirror":
            vectors = search_form(vectors, self.metric)
        return VectorExport(
            ids=[r[1] for r in rows],
            vectors=np.array(vectors, dtype=np.float32, order="C"),
            rowids=np.fromiter((r[0] for r in rows), dtype=np.int64, count=n),
            version=version,
            metadatas=[r[3] for r in rows] if include_metadata else None,
            documents=[r[4] for r in rows] if include_documents else None,
        )

    # -- writes --------------------------------------------------------------------------------

    def add(
        self,
        ids: str | Sequence[str],
        embeddings: Any = None,
        metadatas: Any = None,
        documents: Any = None,
    ) -> None:
        """Add new items; fails whole with :class:`IdAlreadyExistsError` if any id exists."""
        self._write(ids, embeddings, metadatas, documents, mode="add")

    def upsert(
        self,
        ids: str | Sequence[str],
        embeddings: Any = None,
        metadatas: Any = None,
        documents: Any = None,
    ) -> None:
        """Add new items and overwrite existing ones.

        For existing items, ``metadatas`` and ``documents`` replace the stored values
        when they are passed and are kept when they are not.
        """
        self._write(ids, embeddings, metadatas, documents, mode="upsert")

    def update(
        self,
        ids: str | Sequence[str],
        embeddings: Any = None,
        metadatas: Any = None,
        documents: Any = None,
    ) -> None:
        """Change fields of existing items; fails whole with :class:`ItemNotFoundError` if any id is missing."""
        self._write(ids, embeddings, metadatas, documents, mode="update")

    def _embed_documents(self, documents: list[str | None] | None, n: int) -> Any:
        if self.embedding_function is None or documents is None or any(d is None for d in documents):
            raise InvalidArgumentError(
                "embeddings are required (or give every item a document and the collection an embedding_function)"
            )
        return self.embedding_function(documents)

    def _write(self, ids: Any, embeddings: Any, metadatas: Any, documents: Any, *, mode: str) -> None:
        ids = check.ids(ids)
        n = len(ids)
        metas = check.metadatas(metadatas, n)
        docs = check.documents(documents, n)
        if embeddings is None and mode != "update":
            embeddings = self._embed_documents(docs, n)
        vectors = None if embeddings is None else check.embeddings(embeddings, self.dim, n_expected=n)
        if mode == "update" and vectors is None and docs is not None and self.embedding_function is not None:
            vectors = check.embeddings(self._embed_documents(docs, n), self.dim, n_expected=n)
        with self._lock.write():
            with self._store.transaction(f"{mode} into {self.name!r}") as conn:
                self._sync_in_transaction(conn)
                changes = SlotChanges()
                slots = self._mirror.slots_of(ids)
                existing = [i for i, slot in enumerate(slots) if slot is not None]
                new = [i for i, slot in enumerate(slots) if slot is None]
                if mode == "add" and existing:
                    raise IdAlreadyExistsError(
                        f"ids already exist in {self.name!r}: {[ids[i] for i in existing[:5]]}; use upsert to overwrite"
                    )
                if mode == "update" and new:
                    raise ItemNotFoundError(f"ids not found in {self.name!r}: {[ids[i] for i in new[:5]]}")
                inserted_rowids = np.empty(0, dtype=np.int64)
                if new:
                    first = self._store.next_rowid(conn)
                    inserted_rowids = np.arange(first, first + len(new), dtype=np.int64)
                    blobs = vector_blobs(vectors)
                    self._store.insert_items(
                        conn,
                        self._record.id,
                        (
                            (
                                int(inserted_rowids[j]),
                                ids[i],
                                blobs[i],
                                encode_metadata(metas[i]) if metas is not None else None,
                                docs[i] if docs is not None else None,
                            )
                            for j, i in enumerate(new)
                        ),
                    )
                    if docs is not None:
                        self._store.index_documents(conn, inserted_rowids)
                existing_rowids = np.asarray(
                    [self._mirror.rowids[slots[i]] for i in existing], dtype=np.int64
                )
                if existing:
                    columns, getters = [], []
                    if vectors is not None:
                        columns.append("vector")
                        blobs = vector_blobs(vectors)
                        getters.append(lambda i: blobs[i])
                    if metas is not None:
                        columns.append("metadata")
                        getters.append(lambda i: encode_metadata(metas[i]))
                    if docs is not None:
                        columns.append("document")
                        getters.append(lambda i: docs[i])
                    if docs is not None:
                        self._store.unindex_documents(conn, existing_rowids)
                    if columns:
                        self._store.update_items(
                            conn,
                            columns,
                            (
                                (*(get(i) for get in getters), int(existing_rowids[j]))
                                for j, i in enumerate(existing)
                            ),
                        )
                    if docs is not None:
                        self._store.index_documents(conn, existing_rowids)
                self._store.log_changes(
                    conn, self._record.id, np.concatenate([inserted_rowids, existing_rowids]), OP_PUT
                )
                self._store.trim_change_log(conn)
                version = self._store.bump_version(conn, self._record.id)
                seq = self._store.state(self._record.id, conn)[1]
                pending = (new, existing, inserted_rowids, slots)
            # Committed: apply to the mirror while still holding the lock.
            self._apply_write(ids, vectors, metas, docs, pending, changes, version, seq)

    def _apply_write(self, ids, vectors, metas, docs, pending, changes, version, seq) -> None:
        new, existing, inserted_rowids, slots = pending
        mirror = self._mirror
        if new:
            mirror.put_many(
                inserted_rowids,
                [ids[i] for i in new],
                vectors[new],
                [metas[i] for i in new] if metas is not None else None,
                np.asarray([docs is not None and docs[i] is not None for i in new], dtype=bool),
                changes,
            )
        if existing:
            existing_slots = np.asarray([slots[i] for i in existing], dtype=np.int64)
            mirror.set_fields(
                existing_slots,
                vectors[existing] if vectors is not None else None,
                [metas[i] for i in existing] if metas is not None else None,
                np.asarray([docs[i] is not None for i in existing], dtype=bool) if docs is not None else None,
                changes,
            )
        mirror.version, mirror.last_seq = version, seq
        self._on_changes(changes)

    def delete(
        self,
        ids: str | Sequence[str] | None = None,
        where: dict | None = None,
        where_document: dict | None = None,
    ) -> int:
        """Delete items by id and/or filter (both must match when both are given); returns how many."""
        if ids is None and where is None and where_document is None:
            raise InvalidArgumentError(
                "delete needs ids, where or where_document (where={} deletes everything)"
            )
        id_list = check.ids(ids, allow_empty=True) if ids is not None else None
        where = validate_where(where)
        where_document = validate_where_document(where_document)
        with self._lock.write():
            with self._store.transaction(f"delete from {self.name!r}") as conn:
                self._sync_in_transaction(conn)
                changes = SlotChanges()
                mask = self._filter_mask(where, where_document)
                if id_list is not None:
                    found = [s for s in self._mirror.slots_of(id_list) if s is not None]
                    slots = np.asarray(found, dtype=np.int64)
                    if mask is not None:
                        slots = slots[mask[slots]]
                else:
                    slots = np.flatnonzero(
                        mask if mask is not None else self._mirror.alive[: self._mirror.n_slots]
                    )
                if len(slots) == 0:
                    return 0
                rowids = self._mirror.rowids[slots].copy()
                self._store.delete_items(conn, rowids)
                self._store.log_changes(conn, self._record.id, rowids, OP_DELETE)
                self._store.trim_change_log(conn)
                version = self._store.bump_version(conn, self._record.id)
                seq = self._store.state(self._record.id, conn)[1]
            self._mirror.remove_slots(slots, changes)
            self._mirror.version, self._mirror.last_seq = version, seq
            self._on_changes(changes)
        return len(slots)

    def _sync_in_transaction(self, conn) -> None:
        """Catch up with other writers' commits once this writer holds the lock."""
        changes = self._mirror.sync(self._store, self._record.id, conn)
        if changes is not None:
            self._on_changes(changes)

    def _on_changes(self, changes: SlotChanges) -> None:
        """Derived structures (the index) follow written and freed items; under the write lock."""
        if changes:
            self._indexer.on_changes(changes)
            self._splats_on_changes(changes)

    # -- reads -----------------------------------------------------------------------------------

    def _catch_up(self) -> None:
        """Bring the mirror up to date with commits from other connections, cheaply.

        ``PRAGMA data_version`` tells whether anything was committed since this thread
        last looked; the collection's version tells whether it concerns this collection
        and is not yet in the mirror. Only then is the write lock taken, so reads do not
        queue behind a slow query after every write.
        """
        data_version = self._store.data_version()
        if getattr(self._seen_data_version, "value", None) == data_version:
            return
        if self._store.state(self._record.id)[0] != self._mirror.version:
            with self._lock.write():
                changes = self._mirror.sync(self._store, self._record.id)
                if changes is not None:
                    self._on_changes(changes)
        self._seen_data_version.value = data_version

    def _filter_mask(self, where: dict | None, where_document: dict | None) -> np.ndarray | None:
        """Mask over slots of live items matching both filters; ``None`` means every live item."""
        mirror = self._mirror
        n = mirror.n_slots
        if not where and where_document is None:
            return None
        mask = mirror.alive[:n].copy()
        if where:
            mask &= evaluate_where(where, mirror.metadata, n)
        if where_document is not None:

            def contains(text: str) -> np.ndarray:
                return np.isin(mirror.rowids[:n], self._store.rowids_containing(text))

            mask &= evaluate_where_document(where_document, contains, mirror.has_document[:n])
        return mask

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
        where = validate_where(where)
        where_document = validate_where_document(where_document)
        fields = Include.parse_many(include, allowed=GET_INCLUDE_ALLOWED)
        if limit is not None:
            limit = check.non_negative_int(limit, "limit")
        offset = check.non_negative_int(offset, "offset")
        self._catch_up()
        with self._lock.read():
            mirror = self._mirror
            mask = self._filter_mask(where, where_document)
            if id_list is not None:
                slots = np.asarray([s for s in mirror.slots_of(id_list) if s is not None], dtype=np.int64)
                if mask is not None:
                    slots = slots[mask[slots]]
            else:
                slots = mirror.live_slots()
                if mask is not None:
                    slots = slots[mask[slots]]
            stop = None if limit is None else offset + limit
            slots = slots[offset:stop]
            return self._assemble_get(slots, fields)

    def _assemble_get(self, slots: np.ndarray, fields: frozenset[Include]) -> GetResult:
        mirror = self._mirror
        rowids = mirror.rowids[slots]
        rows = self._fetch(rowids, fields)
        if len(rows) < len(rowids) and fields & _ROW_FIELDS:  # deleted by another process since catch-up
            present = np.fromiter((int(r) in rows for r in rowids), dtype=bool, count=len(rowids))
            slots, rowids = slots[present], rowids[present]
        result = GetResult(ids=[mirror.ids[s] for s in slots])
        result["embeddings"] = (
            [decode_vector(rows[r][0]).copy() for r in rowids] if Include.EMBEDDINGS in fields else None
        )
        result["metadatas"] = [rows[r][1] for r in rowids] if Include.METADATAS in fields else None
        result["documents"] = [rows[r][2] for r in rowids] if Include.DOCUMENTS in fields else None
        return result

    def _fetch(self, rowids: np.ndarray, fields: frozenset[Include]) -> dict[int, tuple]:
        wanted = fields & {Include.EMBEDDINGS, Include.METADATAS, Include.DOCUMENTS}
        if not wanted or len(rowids) == 0:
            return {}
        rows = self._store.fetch_fields(
            rowids,
            vectors=Include.EMBEDDINGS in fields,
            metadatas=Include.METADATAS in fields,
            documents=Include.DOCUMENTS in fields,
        )
        return rows  # rows deleted since the mirror caught up are absent

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
        n_probe: int | None = None,
        lod: int = 2,
        target_recall: float | None = None,
        splat_lambda: float = 0.0,
    ) -> QueryResult:
        """The ``n_results`` nearest items to each query, best first.

        ``query_embeddings`` is one vector or a batch ``(n, dim)``; or pass ``query_texts``
        when the collection has an embedding function. Distances follow the metric:
        cosine ``1 - cos``, ip ``-dot``, l2 squared Euclidean.

        With an HRM2 index: ``n_probe`` fine lists are scanned (or the fewest that reach
        ``target_recall`` by the build-time calibration); ``lod`` 0 answers from cluster
        summaries, 1 from compressed codes, 2 (default) re-ranks exactly. Without an
        index the search is exact and these are ignored.

        ``include=["energy"]`` adds each hit's splat energy. ``splat_lambda`` λ ≠ 0 re-ranks
        4·n_results candidates by ``similarity + λ·log α`` (docs/splats.md, "Collections").
        After ``consolidate()``, ``lod=0`` returns at most one member of each near-duplicate group.
        """
        queries = self._queries(query_embeddings, query_texts)
        k = check.positive_int(n_results, "n_results")
        where = validate_where(where)
        where_document = validate_where_document(where_document)
        fields = Include.parse_many(include, allowed=QUERY_INCLUDE_ALLOWED)
        search = _SearchOptions.parse(n_probe, lod, target_recall)
        splat_lambda = self._splat_check_lambda(splat_lambda)
        self._catch_up()
        with self._lock.read():
            mask = self._filter_mask(where, where_document)
            distances, slots = self._splat_search(queries, k, mask, search, splat_lambda)
            self._splats_record_hits(slots)
            result = self._assemble_query(distances, slots, fields)
            if Include.ENERGY in fields:
                self._splat_query_energies(result)
            return result

    def query_progressive(
        self,
        query_embeddings: Any = None,
        n_results: int = 10,
        where: dict | None = None,
        where_document: dict | None = None,
        include: Sequence[str] = tuple(QUERY_INCLUDE_DEFAULT),
        *,
        query_texts: Sequence[str] | str | None = None,
        n_probe: int | None = None,
        target_recall: float | None = None,
    ) -> Iterator[ProgressiveResult]:
        """Yield results of one query level by level (LOD 0, 1, 2) with the time each took.

        A UI shows LOD 0 at once and refines. Without an index there is one exact level.
        """
        queries = self._queries(query_embeddings, query_texts)
        if len(queries) != 1:
            raise InvalidArgumentError("query_progressive takes one query")
        k = check.positive_int(n_results, "n_results")
        where = validate_where(where)
        where_document = validate_where_document(where_document)
        fields = Include.parse_many(include, allowed=QUERY_INCLUDE_ALLOWED)
        search = _SearchOptions.parse(n_probe, 2, target_recall)
        self._catch_up()
        started = time.perf_counter()
        with self._lock.read():
            mask = self._filter_mask(where, where_document)
            index = self._indexer.searcher
            if index is None:
                distances, slots = exact_search(self._mirror, queries, k, mask)
                yield ProgressiveResult(
                    2, time.perf_counter() - started, self._assemble_query(distances, slots, fields)
                )
                return
            levels = index.search_progressive(
                queries[0],
                k,
                n_probe=search.n_probe,
                allowed=self._indexer.rowid_mask(mask),
                target_recall=search.target_recall,
            )
            for lod, distances, rowids in levels:
                elapsed = time.perf_counter() - started
                distances, slots = distances[None, :], self._indexer.to_slots(rowids[None, :])
                if lod == 0:  # one row per consolidated near-duplicate group (docs/splats.md)
                    distances, slots = self._splat_lod0_level(queries, k, mask, search, distances, slots)
                yield ProgressiveResult(lod, elapsed, self._assemble_query(distances, slots, fields))

    def create_index(self, params: HRM2Params | None = None, **overrides: Any) -> dict[str, Any]:
        """Build (or rebuild) the HRM2 index now and return its statistics.

        ``params`` or keyword overrides of :class:`~m2m.index.hrm2.HRM2Params`
        (``n_coarse``, ``n_fine``, ``train_sample``, ``seed``...) set its shape.
        """
        if overrides:
            params = dataclasses.replace(params or self._indexer.settings.params, **overrides)
        self._catch_up()
        with self._lock.write():
            if self._mirror.count == 0:
                raise InvalidArgumentError(f"collection {self.name!r} is empty; add items before indexing")
            index = self._indexer.build_now(params)
            return index.stats()

    def index_stats(self) -> dict[str, Any] | None:
        """Statistics of the HRM2 index, or ``None`` while the collection is searched exactly."""
        self._catch_up()
        with self._lock.read():
            return self._indexer.stats()

    def export_edge(
        self,
        directory: str | os.PathLike[str],
        quantization: str | None = "int8",
        include_metadata: bool = False,
    ) -> Path:
        """Write a read-only snapshot that :class:`m2m.edge.EdgeRouter` serves with NumPy alone."""
        return export_edge(self, directory, quantization, include_metadata)

    def wait_for_index(self, timeout: float | None = None) -> None:
        """Block until a background index build or retrain has finished."""
        self._indexer.wait(timeout)

    def _queries(self, query_embeddings: Any, query_texts: Any) -> np.ndarray:
        if query_embeddings is None:
            if query_texts is None:
                raise InvalidArgumentError("query needs query_embeddings or query_texts")
            if self.embedding_function is None:
                raise InvalidArgumentError("query_texts needs a collection with an embedding_function")
            texts = [query_texts] if isinstance(query_texts, str) else list(query_texts)
            query_embeddings = self.embedding_function(texts)
        queries = check.embeddings(query_embeddings, self.dim, name="query_embeddings")
        return search_form(queries, self.metric)

    def _search(
        self, queries: np.ndarray, k: int, mask: np.ndarray | None, options: _SearchOptions
    ) -> tuple[np.ndarray, np.ndarray]:
        index = self._indexer.searcher
        if index is None or options.exact:
            return exact_search(self._mirror, queries, k, mask)
        k = max(1, min(k, self._mirror.count))  # a huge n_results never allocates beyond the data
        distances, rowids = index.search(
            queries,
            k,
            n_probe=options.n_probe,
            lod=options.lod,
            allowed=self._indexer.rowid_mask(mask),
            target_recall=options.target_recall,
        )
        return distances, self._indexer.to_slots(rowids)

    def _assemble_query(
        self, distances: np.ndarray, slots: np.ndarray, fields: frozenset[Include]
    ) -> QueryResult:
        mirror = self._mirror
        keep = slots >= 0
        flat_rowids = mirror.rowids[slots[keep]]
        rows = self._fetch(flat_rowids, fields)
        if len(rows) < len(flat_rowids) and fields & _ROW_FIELDS:  # deleted by another process since catch-up
            keep[keep] = np.fromiter(
                (int(r) in rows for r in flat_rowids), dtype=bool, count=len(flat_rowids)
            )
        result = QueryResult(ids=[], distances=None, metadatas=None, documents=None, embeddings=None)
        columns: dict[str, list] = {"ids": []}
        for name, field in (
            ("distances", Include.DISTANCES),
            ("metadatas", Include.METADATAS),
            ("documents", Include.DOCUMENTS),
            ("embeddings", Include.EMBEDDINGS),
        ):
            if field in fields:
                columns[name] = []
        for qi in range(len(slots)):
            row_slots = slots[qi][keep[qi]]
            row_rowids = mirror.rowids[row_slots]
            columns["ids"].append([mirror.ids[s] for s in row_slots])
            if "distances" in columns:
                columns["distances"].append(distances[qi][keep[qi]].astype(float).tolist())
            if "metadatas" in columns:
                columns["metadatas"].append([rows[r][1] for r in row_rowids])
            if "documents" in columns:
                columns["documents"].append([rows[r][2] for r in row_rowids])
            if "embeddings" in columns:
                columns["embeddings"].append([decode_vector(rows[r][0]).copy() for r in row_rowids])
        result.update(columns)
        return result

    def search_text(
        self,
        text: str,
        n_results: int = 10,
        where: dict | None = None,
        include: Sequence[str] = tuple(QUERY_INCLUDE_DEFAULT),
    ) -> QueryResult:
        """Full-text search over documents, ranked by BM25 (SQLite FTS5, words, case-folded).

        Returns one result row, best first; ``distances`` are negated BM25 scores, so
        smaller is better as everywhere else.
        """
        if not isinstance(text, str):
            raise InvalidArgumentError("text must be a string")
        k = check.positive_int(n_results, "n_results")
        where = validate_where(where)
        fields = Include.parse_many(include, allowed=QUERY_INCLUDE_ALLOWED - {Include.ENERGY})
        self._catch_up()
        with self._lock.read():
            mirror = self._mirror
            mask = self._filter_mask(where, None)
            ranked = self._store.text_search(self._record.id, text, limit=-1)
            slots, scores = [], []
            for rowid, score in ranked:
                slot = mirror.slot_of_rowid.get(rowid)
                if slot is None or (mask is not None and not mask[slot]):
                    continue
                slots.append(slot)
                scores.append(-score)
                if len(slots) == k:
                    break
            width = max(1, len(slots))  # never allocate n_results columns up front
            distances = np.full((1, width), np.inf, dtype=np.float32)
            out = np.full((1, width), -1, dtype=np.int64)
            distances[0, : len(slots)] = scores
            out[0, : len(slots)] = slots
            return self._assemble_query(distances, out, fields)

    def _close(self) -> None:
        """Finish background work and save the index; the client closes the database."""
        self._indexer.stop()  # joins a background build, which needs the lock: not held here
        with self._lock.write():
            self._splats_close()
            self._indexer.close()
            self._mirror.close()

    def _drop(self) -> None:
        """The collection was deleted: remove its derived files."""
        self._indexer.stop()
        with self._lock.write():
            self._indexer.drop()
            self._mirror.drop()

    def modify(self, metadata: dict[str, Any] | None = _UNSET) -> None:
        """Replace the collection's own metadata."""
        if metadata is not _UNSET:
            metadata = check.metadata(metadata)
            self._store.set_collection_metadata(self._record.id, metadata)
            self._record = self._store.get_collection(self.name)
