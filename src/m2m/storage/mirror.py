"""The in-memory mirror of one collection: search vectors, ids and metadata by slot.

SQLite is the truth; the mirror is what queries scan. Each live item holds a *slot*,
a small integer stable for the item's life (freed slots are reused), which is also the
handle the HRM2 index stores. The mirror follows SQLite through the change log, so
writes from other processes become visible at the next read.

With a ``disk_directory`` the vectors live in a memory-mapped file instead of anonymous
RAM (``m2m.storage.disk_vectors``): a clean, current file is adopted on open (only ids,
metadata and rowids are read from SQLite), anything else is rebuilt from SQLite; writes
patch the file in place and ``close`` commits it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from m2m.storage.disk_vectors import DiskVectors, RebuildWriter, SavedState
from m2m.storage.metadata_index import MetadataIndex
from m2m.storage.sqlite_store import (
    OP_DELETE,
    SQLiteStore,
    decode_vector,
)
from m2m.types import Metric

logger = logging.getLogger(__name__)


def search_form(vectors: np.ndarray, metric: Metric) -> np.ndarray:
    """Vectors as search scans them: unit length for cosine, unchanged otherwise.

    A zero vector stays zero under cosine (it is at distance 1 from everything).
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if metric is not Metric.COSINE:
        return vectors
    norms = np.sqrt(np.einsum("...i,...i->...", vectors, vectors))[..., None]
    return vectors / np.where(norms > 0, norms, 1.0)


@dataclass
class SlotChanges:
    """Slots whose vectors were written or freed by one mirror update."""

    written: list[int] = field(default_factory=list)
    freed: list[int] = field(default_factory=list)
    freed_rowids: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.written or self.freed)


@contextlib.contextmanager
def _snapshot(store: SQLiteStore, conn: sqlite3.Connection | None) -> Iterator[sqlite3.Connection]:
    """A consistent read view: the caller's transaction, or a read transaction of our own."""
    if conn is not None:
        yield conn
        return
    conn = store.reader
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


class CollectionMirror:
    """Search vectors, ids, rowids and metadata of one collection, by slot."""

    def __init__(self, dim: int, metric: Metric, disk_directory: Path | None = None) -> None:
        self.dim = dim
        self.metric = metric
        self.disk = DiskVectors(disk_directory, dim, metric) if disk_directory is not None else None
        self._rebuild: RebuildWriter | None = None
        self._reset()

    def _reset(self) -> None:
        """Empty every in-RAM structure (the disk file, if any, is left to ``load``)."""
        dim = self.dim
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self.sq_norms = np.zeros(0, dtype=np.float32)
        self.rowids = np.zeros(0, dtype=np.int64)
        self.alive = np.zeros(0, dtype=bool)
        self.has_document = np.zeros(0, dtype=bool)
        self.ids: list[str | None] = []
        self.slot_of: dict[str, int] = {}
        self.slot_of_rowid: dict[int, int] = {}
        self.metadata = MetadataIndex()
        self.n_slots = 0
        self._free: list[int] = []
        self.version = -1
        self.last_seq = 0

    @property
    def vectors(self) -> np.ndarray:
        """Search-form vectors by slot: an array in RAM, or a map of the disk file."""
        return self._vectors if self.disk is None else self.disk.vectors

    @property
    def on_disk(self) -> bool:
        return self.disk is not None

    # -- size -----------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return len(self.slot_of)

    def _reserve(self, n_more: int) -> None:
        need = self.n_slots + n_more
        capacity = len(self.rowids)
        if self.disk is not None and self._rebuild is None and need > self.disk.capacity:
            self.disk.grow(max(need, 2 * self.disk.capacity, 1024))
        if need <= capacity:
            return
        new_capacity = max(need, 2 * capacity, 1024)
        if self.disk is None:
            vectors = np.empty((new_capacity, self.dim), dtype=np.float32)
            vectors[: self.n_slots] = self._vectors[: self.n_slots]
            self._vectors = vectors
        for name, dtype, fill in (
            ("sq_norms", np.float32, 0),
            ("rowids", np.int64, -1),
            ("alive", bool, False),
            ("has_document", bool, False),
        ):
            grown = np.full(new_capacity, fill, dtype=dtype)
            grown[: self.n_slots] = getattr(self, name)[: self.n_slots]
            setattr(self, name, grown)

    # -- updates --------------------------------------------------------------------------

    def put_many(
        self,
        rowids: np.ndarray,
        ids: list[str],
        vectors: np.ndarray,
        metadatas: list[dict[str, Any] | None] | None,
        has_document: np.ndarray,
        changes: SlotChanges,
        *,
        metadata_given: bool = True,
    ) -> np.ndarray:
        """Insert or overwrite items; returns their slots.

        ``vectors`` are raw (as stored); the mirror keeps their search form.
        ``metadata_given=False`` keeps existing metadata of overwritten items.
        """
        n = len(ids)
        self._reserve(n)
        slot_of = self.slot_of
        slot_list = [slot_of.get(item_id, -1) for item_id in ids]
        fresh = [i for i, slot in enumerate(slot_list) if slot < 0]
        if fresh:
            reused = [self._free.pop() for _ in range(min(len(fresh), len(self._free)))]
            n_new = len(fresh) - len(reused)
            taken = reused + list(range(self.n_slots, self.n_slots + n_new))
            self.n_slots += n_new
            self.ids.extend([None] * n_new)
            for i, slot in zip(fresh, taken, strict=True):
                slot_list[i] = slot
                slot_of[ids[i]] = slot
                self.ids[slot] = ids[i]
        slots = np.asarray(slot_list, dtype=np.int64)
        old_rowids = self.rowids[slots].tolist()
        by_rowid = self.slot_of_rowid
        for slot, old, rowid in zip(slot_list, old_rowids, rowids.tolist(), strict=True):
            if old != rowid:
                by_rowid.pop(old, None)
                by_rowid[rowid] = slot
        self._set_rows(slots, search_form(vectors, self.metric))
        self.rowids[slots] = rowids
        self.alive[slots] = True
        self.has_document[slots] = has_document
        if metadata_given:
            self.metadata.set_many(slots, metadatas if metadatas is not None else [None] * n)
        changes.written.extend(int(s) for s in slots)
        return slots

    def set_fields(
        self,
        slots: np.ndarray,
        vectors: np.ndarray | None,
        metadatas: list[dict[str, Any] | None] | None,
        has_document: np.ndarray | None,
        changes: SlotChanges,
    ) -> None:
        """Overwrite some fields of existing items."""
        if vectors is not None:
            self._set_rows(slots, search_form(vectors, self.metric))
            changes.written.extend(int(s) for s in slots)
        if metadatas is not None:
            self.metadata.set_many(slots, metadatas)
        if has_document is not None:
            self.has_document[slots] = has_document

    def _set_rows(self, slots: np.ndarray, searchable: np.ndarray) -> None:
        """Store search-form rows: in RAM, appended to a rebuild, or patched into the file."""
        self.sq_norms[slots] = np.einsum("ij,ij->i", searchable, searchable)
        if self.disk is None:
            self._vectors[slots] = searchable
        elif self._rebuild is not None:  # a fresh load assigns consecutive slots
            first = self._rebuild.n_rows
            if not np.array_equal(slots, np.arange(first, first + len(slots))):
                raise RuntimeError("mirror rebuild expects consecutive slots")
            self._rebuild.append(searchable)
        else:
            self.disk.write_rows(slots, searchable)

    def remove_slots(self, slots: np.ndarray, changes: SlotChanges) -> None:
        if self.disk is not None and len(slots):
            self.disk.note_change()
        for slot in slots:
            slot = int(slot)
            item_id = self.ids[slot]
            if item_id is None:
                continue
            del self.slot_of[item_id]
            self.ids[slot] = None
            self.alive[slot] = False
            changes.freed_rowids.append(int(self.rowids[slot]))
            self.slot_of_rowid.pop(int(self.rowids[slot]), None)
            self.rowids[slot] = -1
            self.metadata.clear(slot)
            self._free.append(slot)
            changes.freed.append(slot)

    # -- following SQLite -------------------------------------------------------------------

    def load(
        self, store: SQLiteStore, collection_id: int, conn: sqlite3.Connection | None = None
    ) -> SlotChanges:
        """Reload everything from SQLite (first open, or the change log was trimmed)."""
        with _snapshot(store, conn) as conn:
            changes = SlotChanges()
            self.remove_slots(np.flatnonzero(self.alive[: self.n_slots]), changes)
            version, seq = store.state(collection_id, conn)
            if self.disk is not None:
                self._load_disk(store, collection_id, conn, version, changes)
            else:
                self._reserve(store.count_items(collection_id, conn))
                for rows in store.scan_items(collection_id, conn):
                    self._apply_rows(rows, changes)
            self.version, self.last_seq = version, seq
            return changes

    def _load_disk(
        self,
        store: SQLiteStore,
        collection_id: int,
        conn: sqlite3.Connection,
        version: int,
        changes: SlotChanges,
    ) -> None:
        """Adopt the saved vector file if it is clean and current, else rebuild it from SQLite."""
        assert self.disk is not None
        # the load scans the whole table once: keep that scan from filling the connection's
        # page cache (64 MiB of anonymous memory) with pages no query will read again
        cache_size = conn.execute("PRAGMA cache_size").fetchone()[0]
        conn.execute("PRAGMA cache_size=-2048")
        try:
            self._load_disk_scans(store, collection_id, conn, version, changes)
        finally:
            conn.execute(f"PRAGMA cache_size={int(cache_size)}")

    def _load_disk_scans(
        self,
        store: SQLiteStore,
        collection_id: int,
        conn: sqlite3.Connection,
        version: int,
        changes: SlotChanges,
    ) -> None:
        assert self.disk is not None
        self._reset()
        saved = self.disk.open_saved(version)
        if saved is not None:
            adopted = self._adopt(saved, store, collection_id, conn)
            if adopted is not None:
                changes.written.extend(adopted)
                return
            self._reset()
        logger.info("rebuilding the mirror's vector file in %s (%s)", self.disk.directory, self.disk.reason)
        count = store.count_items(collection_id, conn)
        self._rebuild = self.disk.start_rebuild(count)
        try:
            self._reserve(count)
            for rows in store.scan_items(collection_id, conn):
                self._apply_rows(rows, changes)
            self._rebuild.finish()
        except BaseException:
            self._rebuild.abort()
            raise
        finally:
            self._rebuild = None
        self.disk.commit(version, self.n_slots, self.rowids, self.sq_norms)

    def _adopt(
        self, saved: SavedState, store: SQLiteStore, collection_id: int, conn: sqlite3.Connection
    ) -> list[int] | None:
        """Take the saved slots and vectors; ids and metadata come from SQLite (no vectors read).

        Returns the live slots, or None if SQLite's rows do not match the saved slots.
        """
        n = len(saved.rowids)
        self._reserve(n)
        self.n_slots = n
        self.rowids[:n] = saved.rowids
        self.sq_norms[:n] = saved.sq_norms
        alive = saved.rowids >= 0
        self.alive[:n] = alive
        live = np.flatnonzero(alive)
        self.slot_of_rowid = dict(zip(saved.rowids[live].tolist(), live.tolist(), strict=True))
        self.ids = [None] * n
        seen = 0
        for rows in store.scan_items(collection_id, conn, vectors=False):
            slots = [self.slot_of_rowid.get(r[0]) for r in rows]
            if None in slots:
                self.disk.reason = "SQLite holds rows the saved slots do not"
                return None
            for slot, row in zip(slots, rows, strict=True):
                self.ids[slot] = row[1]
                self.slot_of[row[1]] = slot
            slot_array = np.asarray(slots, dtype=np.int64)
            self.metadata.set_many(slot_array, json.loads("[" + ",".join(r[3] or "null" for r in rows) + "]"))
            self.has_document[slot_array] = [bool(r[4]) for r in rows]
            seen += len(rows)
        if seen != len(live):
            self.disk.reason = "the saved slots hold rows SQLite does not"
            return None
        self._free = np.flatnonzero(~alive)[::-1].tolist()
        return live.tolist()

    def checkpoint(self) -> None:
        """Make the disk file match the mirror and mark it clean (no-op in RAM)."""
        if self.disk is not None:
            self.disk.commit(self.version, self.n_slots, self.rowids, self.sq_norms)

    def close(self) -> None:
        """Commit and unmap the disk file (no-op in RAM)."""
        if self.disk is not None:
            self.checkpoint()
            self.disk.close()

    def drop(self) -> None:
        """Delete the disk file (the collection was deleted)."""
        if self.disk is not None:
            self.disk.drop()

    def sync(
        self, store: SQLiteStore, collection_id: int, conn: sqlite3.Connection | None = None
    ) -> SlotChanges | None:
        """Apply other writers' committed changes; ``None`` when nothing changed.

        ``conn`` may be a connection inside a write transaction, so that a writer
        first catches up with everything committed before it took the lock.
        """
        with _snapshot(store, conn) as conn:
            version, seq = store.state(collection_id, conn)
            if version == self.version:
                return None
            if self.last_seq < store.changes_floor(conn):
                return self.load(store, collection_id, conn)
            changes = SlotChanges()
            final_op: dict[int, int] = {}
            for _, rowid, op in store.changes_since(collection_id, self.last_seq, conn):
                final_op[rowid] = op
            deleted = [
                self.slot_of_rowid[r]
                for r, op in final_op.items()
                if op == OP_DELETE and r in self.slot_of_rowid
            ]
            self.remove_slots(np.asarray(deleted, dtype=np.int64), changes)
            put = [r for r, op in final_op.items() if op != OP_DELETE]
            self._apply_rows(store.items_by_rowid(put, conn), changes)
            self.version, self.last_seq = version, seq
            return changes

    def _apply_rows(self, rows: list[tuple[int, str, bytes, str | None, int]], changes: SlotChanges) -> None:
        if not rows:
            return
        rowids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        ids = [r[1] for r in rows]
        vectors = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(len(rows), self.dim)
        metadatas = json.loads("[" + ",".join(r[3] or "null" for r in rows) + "]")
        has_document = np.fromiter((bool(r[4]) for r in rows), dtype=bool, count=len(rows))
        self.put_many(rowids, ids, vectors, metadatas, has_document, changes)

    # -- reads --------------------------------------------------------------------------------

    def live_slots(self) -> np.ndarray:
        """Live slots in insertion order (by rowid)."""
        slots = np.flatnonzero(self.alive[: self.n_slots])
        return slots[np.argsort(self.rowids[slots], kind="stable")]

    def slots_of(self, ids: list[str]) -> list[int | None]:
        return [self.slot_of.get(i) for i in ids]

    def vector_of(self, slot: int) -> np.ndarray:
        """The search-form vector of a slot (a view; of the map in disk mode)."""
        return self.vectors[slot]


__all__ = ["CollectionMirror", "SlotChanges", "decode_vector", "search_form"]
