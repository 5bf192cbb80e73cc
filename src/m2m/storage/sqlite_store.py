"""SQLite, the source of truth: collections, items, full-text indexes and a change log.

Durability: the database runs in WAL mode with ``synchronous=FULL``, so a write call
returns only after its transaction is committed and fsync'd; a batch is one
transaction, so it lands whole or not at all, also when the process is killed.

Concurrency: any number of threads and processes may open one path. Writers take
SQLite's write lock with ``BEGIN IMMEDIATE`` and wait for it at most
``write_timeout`` seconds, then raise :class:`~m2m.errors.StoreBusyError`. Readers
never block writers and see only committed data (WAL snapshots).

Every write appends ``(collection, rowid, op)`` rows to ``changes`` and bumps the
collection's ``version``, which lets other processes bring their in-memory mirrors
up to date incrementally, and lets derived index files say which state they cover.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from m2m.errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    StorageError,
    StoreBusyError,
)
from m2m.types import Metric

logger = logging.getLogger(__name__)

DB_FILENAME = "m2m.sqlite3"
SCHEMA_VERSION = 1
CHANGE_LOG_KEEP = 200_000
_SQL_CHUNK = 10_000  # well under SQLite's 32,766 host-parameter limit

OP_PUT = 1
OP_DELETE = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS collections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    uuid TEXT NOT NULL,
    dim INTEGER NOT NULL,
    metric TEXT NOT NULL,
    metadata TEXT,
    created_at REAL NOT NULL,
    version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS items (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    vector BLOB NOT NULL,
    metadata TEXT,
    document TEXT,
    UNIQUE (collection_id, id)
);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    collection_id INTEGER NOT NULL,
    item_rowid INTEGER NOT NULL,
    rowid_end INTEGER NOT NULL,
    op INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_by_collection ON changes (collection_id, seq);
CREATE VIRTUAL TABLE IF NOT EXISTS items_trigram USING fts5(
    document, content='items', content_rowid='rowid', tokenize='trigram case_sensitive 1', detail=none
);
CREATE VIRTUAL TABLE IF NOT EXISTS items_words USING fts5(
    document, content='items', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2'
);
"""


@dataclass(frozen=True)
class CollectionRecord:
    """A collection's row: its settings and the state version of its items."""

    id: int
    name: str
    uuid: str
    dim: int
    metric: Metric
    metadata: dict[str, Any] | None
    created_at: float


@dataclass(frozen=True)
class ItemRow:
    """One stored item as read back from SQLite."""

    rowid: int
    id: str
    vector: np.ndarray
    metadata: dict[str, Any] | None
    document: str | None


def encode_vector(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def vector_blobs(vectors: np.ndarray) -> list[bytes]:
    """Little-endian float32 bytes of each row, encoded in one pass."""
    data = np.ascontiguousarray(vectors, dtype="<f4").tobytes()
    step = vectors.shape[1] * 4
    return [data[i : i + step] for i in range(0, len(data), step)]


def decode_vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode_metadata(metadata: dict[str, Any] | None) -> str | None:
    return None if metadata is None else _JSON.encode(metadata)


def decode_metadata(text: str | None) -> dict[str, Any] | None:
    return None if text is None else json.loads(text)


def fts_ready(conn: sqlite3.Connection) -> bool:
    """Whether the full-text indexes have been built (they are kept current from then on)."""
    return conn.execute("SELECT 1 FROM meta WHERE key = 'fts_ready'").fetchone() is not None


def _chunks(values: Sequence[Any], size: int = _SQL_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


@contextlib.contextmanager
def translate_sqlite_errors(action: str) -> Iterator[None]:
    """Map ``sqlite3`` errors to M2M's tree at this one boundary."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc).lower()
        if "locked" in text or "busy" in text:
            raise StoreBusyError(f"{action}: the database is locked by another writer ({exc})") from exc
        raise StorageError(f"{action}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"{action}: {exc}") from exc


class SQLiteStore:
    """One SQLite database holding every collection under a data folder."""

    def __init__(self, path: str | Path, *, write_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.db_path = self.path / DB_FILENAME
        self.write_timeout = write_timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._closed = False
        self._fts_ready = False
        self._in_write = threading.local()  # .active: this thread is inside transaction()
        with translate_sqlite_errors("opening the store"):
            self._writer = self._connect()
            self._writer.executescript(_SCHEMA)
            self._writer.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )

    # -- connections -------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.db_path, timeout=self.write_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={int(self.write_timeout * 1000)}")
        conn.execute("PRAGMA cache_size=-65536")  # 64 MiB: bulk inserts build their b-trees in memory
        with self._connections_lock:
            self._connections.append(conn)
        return conn

    @property
    def reader(self) -> sqlite3.Connection:
        """A connection owned by the calling thread, for reads."""
        if self._closed:
            raise StorageError("the store is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def data_version(self) -> int:
        """Changes whenever another connection commits (SQLite's ``PRAGMA data_version``)."""
        return self.reader.execute("PRAGMA data_version").fetchone()[0]

    def close(self) -> None:
        """Close every connection; a checkpoint folds the WAL back into the database."""
        if self._closed:
            return
        with self._write_lock:
            self._closed = True
            with contextlib.suppress(sqlite3.Error):
                self._writer.execute("PRAGMA wal_checkpoint(PASSIVE)")
            with self._connections_lock:
                for conn in self._connections:
                    with contextlib.suppress(sqlite3.Error):
                        conn.close()
                self._connections.clear()

    # -- transactions ------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, action: str) -> Iterator[sqlite3.Connection]:
        """One write transaction: the writer lock, ``BEGIN IMMEDIATE``, commit or roll back."""
        if self._closed:
            raise StorageError("the store is closed")
        with self._write_lock:
            conn = self._writer
            deadline = time.monotonic() + self.write_timeout
            with translate_sqlite_errors(action):
                while True:
                    try:
                        conn.execute("BEGIN IMMEDIATE")
                        break
                    except sqlite3.OperationalError as exc:
                        if "locked" not in str(exc) and "busy" not in str(exc):
                            raise
                        if time.monotonic() >= deadline:
                            raise StoreBusyError(
                                f"{action}: another process held the write lock for over "
                                f"{self.write_timeout:g} s"
                            ) from exc
            self._in_write.active = True
            try:
                with translate_sqlite_errors(action):
                    yield conn
                    conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            finally:
                self._in_write.active = False

    def _read_connection(self) -> sqlite3.Connection:
        """The reader; or, inside this thread's write transaction, the writer (it sees its own writes)."""
        return self._writer if getattr(self._in_write, "active", False) else self.reader

    # -- collections -------------------------------------------------------------------

    def _record(self, row: tuple) -> CollectionRecord:
        cid, name, cuuid, dim, metric, metadata, created = row
        return CollectionRecord(cid, name, cuuid, dim, Metric(metric), decode_metadata(metadata), created)

    _COLLECTION_COLUMNS = "id, name, uuid, dim, metric, metadata, created_at"

    def create_collection(
        self, name: str, dim: int, metric: Metric, metadata: dict[str, Any] | None
    ) -> CollectionRecord:
        with self.transaction(f"creating collection {name!r}") as conn:
            if conn.execute("SELECT 1 FROM collections WHERE name = ?", (name,)).fetchone():
                raise CollectionExistsError(f"collection {name!r} already exists")
            conn.execute(
                "INSERT INTO collections (name, uuid, dim, metric, metadata, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (name, uuid.uuid4().hex, dim, metric.value, encode_metadata(metadata), time.time()),
            )
            row = conn.execute(
                f"SELECT {self._COLLECTION_COLUMNS} FROM collections WHERE name = ?", (name,)
            ).fetchone()
        return self._record(row)

    def get_collection(self, name: str) -> CollectionRecord:
        with translate_sqlite_errors(f"reading collection {name!r}"):
            row = self.reader.execute(
                f"SELECT {self._COLLECTION_COLUMNS} FROM collections WHERE name = ?", (name,)
            ).fetchone()
        if row is None:
            raise CollectionNotFoundError(f"collection {name!r} does not exist")
        return self._record(row)

    def list_collections(self) -> list[CollectionRecord]:
        with translate_sqlite_errors("listing collections"):
            rows = self.reader.execute(
                f"SELECT {self._COLLECTION_COLUMNS} FROM collections ORDER BY name"
            ).fetchall()
        return [self._record(row) for row in rows]

    def delete_collection(self, name: str) -> CollectionRecord:
        with self.transaction(f"deleting collection {name!r}") as conn:
            row = conn.execute(
                f"SELECT {self._COLLECTION_COLUMNS} FROM collections WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                raise CollectionNotFoundError(f"collection {name!r} does not exist")
            record = self._record(row)
            for table in self._FTS_TABLES if fts_ready(conn) else ():
                conn.execute(
                    f"INSERT INTO {table} ({table}, rowid, document) SELECT 'delete', rowid, document "
                    "FROM items WHERE collection_id = ? AND document IS NOT NULL",
                    (record.id,),
                )
            conn.execute("DELETE FROM items WHERE collection_id = ?", (record.id,))
            conn.execute("DELETE FROM changes WHERE collection_id = ?", (record.id,))
            conn.execute("DELETE FROM collections WHERE id = ?", (record.id,))
        return record

    def set_collection_metadata(self, collection_id: int, metadata: dict[str, Any] | None) -> None:
        with self.transaction("updating collection metadata") as conn:
            conn.execute(
                "UPDATE collections SET metadata = ? WHERE id = ?", (encode_metadata(metadata), collection_id)
            )

    # -- item writes (inside a transaction) -----------------------------------------------

    @staticmethod
    def next_rowid(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone()
        top = conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM items").fetchone()[0]
        return max(row[0] if row else 0, top) + 1

    @staticmethod
    def insert_items(conn: sqlite3.Connection, collection_id: int, rows: Iterable[tuple]) -> None:
        """``rows``: ``(rowid, id, vector_blob, metadata_json, document)``."""
        conn.executemany(
            "INSERT INTO items (rowid, collection_id, id, vector, metadata, document) VALUES (?, ?, ?, ?, ?, ?)",
            ((r[0], collection_id, r[1], r[2], r[3], r[4]) for r in rows),
        )

    @staticmethod
    def update_items(conn: sqlite3.Connection, columns: Sequence[str], rows: Iterable[tuple]) -> None:
        """``rows``: values for ``columns`` followed by the rowid."""
        assignments = ", ".join(f"{column} = ?" for column in columns)
        conn.executemany(f"UPDATE items SET {assignments} WHERE rowid = ?", rows)

    @staticmethod
    def delete_items(conn: sqlite3.Connection, rowids: Sequence[int]) -> None:
        SQLiteStore.unindex_documents(conn, rowids)
        conn.executemany("DELETE FROM items WHERE rowid = ?", ((int(r),) for r in rowids))

    # The full-text tables are derived: built on the first full-text query (like
    # LanceDB's create_fts_index, but automatic), then maintained in bulk with every
    # write (one INSERT ... SELECT per batch; per-row triggers made ingest 5x slower).
    _FTS_TABLES = ("items_trigram", "items_words")

    def ensure_full_text(self) -> None:
        """Build both full-text indexes over every stored document, once per database.

        Called inside this thread's write transaction (``delete(where_document=...)``), the
        build joins that transaction (a nested ``BEGIN`` would fail) and commits with it.
        """
        if self._fts_ready:
            return
        if getattr(self._in_write, "active", False):
            if not fts_ready(self._writer):
                self._build_full_text(self._writer)
            return  # ready once that transaction commits; a later call sees it
        with self.transaction("building the full-text indexes") as conn:
            if not fts_ready(conn):
                self._build_full_text(conn)
        self._fts_ready = True

    def _build_full_text(self, conn: sqlite3.Connection) -> None:
        started = time.perf_counter()
        for table in self._FTS_TABLES:
            conn.execute(
                f"INSERT INTO {table} (rowid, document) SELECT rowid, document FROM items "
                "WHERE document IS NOT NULL"
            )
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('fts_ready', '1')")
        logger.info("built the full-text indexes in %.2f s", time.perf_counter() - started)

    @staticmethod
    def index_documents(conn: sqlite3.Connection, rowids: Sequence[int]) -> None:
        """Add the documents of these rows to both full-text indexes."""
        rowids = [int(r) for r in rowids]
        if not rowids or not fts_ready(conn):
            return
        contiguous = rowids[-1] - rowids[0] + 1 == len(rowids) and rowids == sorted(rowids)
        for table in SQLiteStore._FTS_TABLES:
            if contiguous:
                conn.execute(
                    f"INSERT INTO {table} (rowid, document) SELECT rowid, document FROM items "
                    "WHERE rowid BETWEEN ? AND ? AND document IS NOT NULL",
                    (rowids[0], rowids[-1]),
                )
                continue
            for chunk in _chunks(rowids):
                marks = ",".join("?" * len(chunk))
                conn.execute(
                    f"INSERT INTO {table} (rowid, document) SELECT rowid, document FROM items "
                    f"WHERE rowid IN ({marks}) AND document IS NOT NULL",
                    chunk,
                )

    @staticmethod
    def unindex_documents(conn: sqlite3.Connection, rowids: Sequence[int]) -> None:
        """Remove the current documents of these rows from both full-text indexes."""
        rowids = [int(r) for r in rowids]
        if not rowids or not fts_ready(conn):
            return
        for table in SQLiteStore._FTS_TABLES:
            for chunk in _chunks(rowids):
                marks = ",".join("?" * len(chunk))
                conn.execute(
                    f"INSERT INTO {table} ({table}, rowid, document) SELECT 'delete', rowid, document "
                    f"FROM items WHERE rowid IN ({marks}) AND document IS NOT NULL",
                    chunk,
                )

    @staticmethod
    def log_changes(conn: sqlite3.Connection, collection_id: int, rowids: Sequence[int], op: int) -> None:
        """Append one change row per run of consecutive rowids (a bulk add is one row)."""
        ordered = np.unique(np.asarray(rowids, dtype=np.int64))
        if ordered.size == 0:
            return
        breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
        starts = ordered[np.concatenate(([0], breaks))]
        ends = ordered[np.concatenate((breaks - 1, [ordered.size - 1]))]
        conn.executemany(
            "INSERT INTO changes (collection_id, item_rowid, rowid_end, op) VALUES (?, ?, ?, ?)",
            ((collection_id, int(a), int(b), op) for a, b in zip(starts, ends, strict=True)),
        )

    @staticmethod
    def bump_version(conn: sqlite3.Connection, collection_id: int) -> int:
        conn.execute("UPDATE collections SET version = version + 1 WHERE id = ?", (collection_id,))
        return conn.execute("SELECT version FROM collections WHERE id = ?", (collection_id,)).fetchone()[0]

    @staticmethod
    def trim_change_log(conn: sqlite3.Connection) -> None:
        """Keep the change log bounded; mirrors older than its floor reload in full."""
        top = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
        if top % 10_000 == 0 or top > CHANGE_LOG_KEEP * 2:
            floor = top - CHANGE_LOG_KEEP
            if floor > 0:
                conn.execute("DELETE FROM changes WHERE seq <= ?", (floor,))
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('changes_floor', ?)", (str(floor),)
                )

    # -- reads ---------------------------------------------------------------------------

    def state(self, collection_id: int, conn: sqlite3.Connection | None = None) -> tuple[int, int]:
        """``(version, last change seq)`` of a collection."""
        conn = conn or self.reader
        row = conn.execute("SELECT version FROM collections WHERE id = ?", (collection_id,)).fetchone()
        if row is None:
            raise CollectionNotFoundError(f"collection #{collection_id} was deleted")
        seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
        return row[0], seq

    def changes_floor(self, conn: sqlite3.Connection | None = None) -> int:
        conn = conn or self.reader
        row = conn.execute("SELECT value FROM meta WHERE key = 'changes_floor'").fetchone()
        return int(row[0]) if row else 0

    def changes_since(
        self, collection_id: int, seq: int, conn: sqlite3.Connection | None = None
    ) -> list[tuple[int, int, int]]:
        """``(seq, rowid, op)`` changes of one collection after ``seq``, in order."""
        conn = conn or self.reader
        rows = conn.execute(
            "SELECT seq, item_rowid, rowid_end, op FROM changes WHERE collection_id = ? AND seq > ? "
            "ORDER BY seq",
            (collection_id, seq),
        ).fetchall()
        return [(seq_, rowid, op) for seq_, first, last, op in rows for rowid in range(first, last + 1)]

    def count_items(self, collection_id: int, conn: sqlite3.Connection | None = None) -> int:
        conn = conn or self.reader
        return conn.execute(
            "SELECT COUNT(*) FROM items WHERE collection_id = ?", (collection_id,)
        ).fetchone()[0]

    def scan_items(
        self,
        collection_id: int,
        conn: sqlite3.Connection | None = None,
        batch: int = 20_000,
        *,
        vectors: bool = True,
    ) -> Iterator[list[tuple[int, str, bytes | None, str | None, int]]]:
        """Every item of a collection as ``(rowid, id, vector, metadata, has_document)``, by rowid
        (``vector`` is None with ``vectors=False``)."""
        conn = conn or self.reader
        column = "vector" if vectors else "NULL"
        cursor = conn.execute(
            # NOT INDEXED: walk the table in rowid order instead of the (collection, id)
            # index plus a sort of every row (3x faster on reopen).
            f"SELECT rowid, id, {column}, metadata, document IS NOT NULL FROM items NOT INDEXED "
            "WHERE collection_id = ? ORDER BY rowid",
            (collection_id,),
        )
        while rows := cursor.fetchmany(batch):
            yield rows

    def items_by_rowid(
        self, rowids: Sequence[int], conn: sqlite3.Connection | None = None
    ) -> list[tuple[int, str, bytes, str | None, int]]:
        conn = conn or self.reader
        out = []
        for chunk in _chunks([int(r) for r in rowids]):
            marks = ",".join("?" * len(chunk))
            out += conn.execute(
                f"SELECT rowid, id, vector, metadata, document IS NOT NULL FROM items WHERE rowid IN ({marks})",
                chunk,
            ).fetchall()
        return out

    def fetch_fields(
        self, rowids: Sequence[int], *, vectors: bool, metadatas: bool, documents: bool
    ) -> dict[int, tuple]:
        """``rowid -> (vector bytes, metadata dict, document)`` for the fields asked for."""
        columns = [
            "rowid",
            "vector" if vectors else "NULL",
            "metadata" if metadatas else "NULL",
            "document" if documents else "NULL",
        ]
        out: dict[int, tuple] = {}
        conn = self.reader
        own_transaction = not conn.in_transaction  # one snapshot for every chunk
        with translate_sqlite_errors("reading items"):
            if own_transaction:
                conn.execute("BEGIN")
            try:
                for chunk in _chunks([int(r) for r in rowids]):
                    marks = ",".join("?" * len(chunk))
                    for rowid, vec, meta, doc in conn.execute(
                        f"SELECT {', '.join(columns)} FROM items WHERE rowid IN ({marks})", chunk
                    ):
                        out[rowid] = (vec, decode_metadata(meta) if meta is not None else None, doc)
            finally:
                if own_transaction:
                    conn.execute("COMMIT")
        return out

    def rowids_containing(self, text: str) -> np.ndarray:
        """Rowids whose document contains ``text`` (case-sensitive substring)."""
        self.ensure_full_text()
        conn = self._read_connection()
        with translate_sqlite_errors("full-text search"):
            if len(text) >= 3:
                # GLOB is case-sensitive and, on a trigram table, answered from the index;
                # detail=none keeps that index 40% cheaper to build than a phrase index.
                pattern = "*" + "".join(f"[{c}]" if c in "*?[" else c for c in text) + "*"
                rows = conn.execute(
                    "SELECT rowid FROM items_trigram WHERE document GLOB ?", (pattern,)
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT rowid FROM items WHERE document IS NOT NULL AND instr(document, ?) > 0", (text,)
                ).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def text_search(self, collection_id: int, query: str, limit: int) -> list[tuple[int, float]]:
        """Rowids ranked by BM25 over words (best first) with their scores (higher is better)."""
        self.ensure_full_text()
        terms = [t for t in "".join(c if c.isalnum() else " " for c in query).split() if t]
        if not terms:
            return []
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        with translate_sqlite_errors("full-text search"):
            rows = self.reader.execute(
                "SELECT f.rowid, -bm25(items_words) AS score FROM items_words AS f "
                "JOIN items AS i ON i.rowid = f.rowid "
                "WHERE items_words MATCH ? AND i.collection_id = ? ORDER BY score DESC LIMIT ?",
                (match, collection_id, limit),
            ).fetchall()
        return [(int(r), float(s)) for r, s in rows]
