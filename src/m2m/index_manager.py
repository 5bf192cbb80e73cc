"""A collection's HRM2 index: when to build it, how it follows writes, where it lives.

- **Handles.** The index stores SQLite rowids, which are stable across processes and
  reopen, so saved index files stay meaningful.
- **Lifecycle.** Below ``IndexSettings.threshold`` items a collection is searched
  exactly. Passing the threshold starts a build in a background thread (queries stay
  exact until it is ready); ``Collection.create_index`` builds at once.
- **Following writes.** Every write is applied to the live index at once (new items
  go to their nearest list, deletes are tombstoned). When the index reports drift
  (``HRM2Index.needs_retrain``: churn over 25% of the build size or a list over 8x the
  mean), a new index is trained in the background from a snapshot; writes made
  meanwhile are replayed onto it before it replaces the old one, so queries are never
  blocked for the whole rebuild.
- **Files.** ``<data>/indexes/<collection uuid>/hrm2`` holds the index, written
  atomically, with ``state.json`` naming the collection version and change-log
  position it covers. On open, a stale index catches up from the change log, and a
  missing, corrupt or too-old one is rebuilt.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from m2m._rwlock import RWLock
from m2m.errors import IndexCorruptError
from m2m.index.hrm2 import HRM2Index, HRM2Params
from m2m.memory import TierConfig, TieredHRM2, write_tier_directory
from m2m.storage.mirror import CollectionMirror, SlotChanges
from m2m.storage.sqlite_store import OP_DELETE, SQLiteStore

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"


@dataclass(frozen=True)
class IndexSettings:
    """When and how collections build their HRM2 index."""

    threshold: int = 20_000  # build automatically once a collection holds this many items
    params: HRM2Params = field(default_factory=HRM2Params)
    background: bool = True  # build and retrain in a background thread
    tiers: TierConfig | None = None  # serve the saved index from disk through RAM/GPU tiers
    # keep the mirror's vectors in a memory-mapped file (docs/memory.md); None: when tiers is set
    mirror_on_disk: bool | None = None

    @property
    def disk_mirror(self) -> bool:
        """Whether collections keep their mirror's vectors on disk."""
        return self.tiers is not None if self.mirror_on_disk is None else bool(self.mirror_on_disk)


class IndexManager:
    """Builds, persists and updates one collection's index; thread-safe with the collection's lock."""

    def __init__(
        self,
        directory: Path,
        store: SQLiteStore,
        collection_id: int,
        mirror: CollectionMirror,
        lock: RWLock,
        settings: IndexSettings,
    ) -> None:
        self.directory = directory
        self._store = store
        self._collection_id = collection_id
        self._mirror = mirror
        self._lock = lock
        self.settings = settings
        self.index: HRM2Index | None = None
        self.tiered: TieredHRM2 | None = None  # read-only serving from disk until the first write
        self._building: threading.Thread | None = None
        self._pending: list[tuple[np.ndarray, np.ndarray | None]] | None = None
        self._closed = False
        self._stopping = False
        self._build_error: BaseException | None = None
        self.last_build_seconds: float | None = None

    # -- opening -----------------------------------------------------------------------------

    def open(self) -> None:
        """Load the saved index and bring it up to date, or plan a build. Call under the write lock."""
        index_dir = self.directory / "hrm2"
        state_path = self.directory / STATE_FILE
        if not index_dir.exists() or not state_path.exists():
            self._maybe_build()
            return
        try:
            state = json.loads(state_path.read_text())
            if self._open_tiered(state):
                return
            index, version = HRM2Index.load(index_dir)
            if version != state["version"] or index.dim != self._mirror.dim:
                raise IndexCorruptError("index files and state.json disagree")
        except (IndexCorruptError, OSError, ValueError, KeyError) as exc:
            logger.warning(
                "index for collection #%d is unreadable (%s); rebuilding", self._collection_id, exc
            )
            self._maybe_build(force=self._mirror.count > 0)
            return
        if version != self._mirror.version:
            if state["seq"] < self._store.changes_floor():
                logger.info("saved index is older than the change log; rebuilding")
                self._maybe_build(force=True)
                return
            self._catch_up(index, state["seq"])
        self.index = index
        if self.settings.tiers is not None:  # tier files missing or stale: write them, then serve from them
            self._save()
            if self._open_tiered({"version": self._mirror.version}):
                self.index = None

    def _open_tiered(self, state: dict) -> bool:
        """Serve an up-to-date saved index through the tiers instead of loading it into RAM."""
        if self.settings.tiers is None or state.get("version") != self._mirror.version:
            return False
        try:
            tiered = TieredHRM2.open(self.directory / "tiers", self.settings.tiers)
        except (IndexCorruptError, OSError) as exc:
            logger.warning("tier files unusable (%s); loading the index into RAM", exc)
            return False
        if tiered.state_version != state["version"]:
            tiered.close()
            return False
        self.tiered = tiered
        return True

    def _leave_tiered(self) -> None:
        """The first write after opening loads the index into RAM (the tiers are read-only)."""
        if self.tiered is None:
            return
        self.index, _ = HRM2Index.load(self.directory / "hrm2")
        self.tiered.close()
        self.tiered = None

    @property
    def searcher(self) -> HRM2Index | TieredHRM2 | None:
        """What queries search: the tiered view while read-only, else the in-RAM index."""
        return self.tiered if self.tiered is not None else self.index

    def stats(self) -> dict | None:
        """Index statistics (``None`` without an index); ``tiers`` while served from disk."""
        if self.tiered is not None:
            routing = self.tiered.index
            return {
                "n_coarse": routing.n_coarse,
                "n_fine_total": routing.n_lists,
                "tiers": self.tiered.stats(),
            }
        if self.index is None:
            return None
        return {**self.index.stats(), "tiers": None}

    def _catch_up(self, index: HRM2Index, seq: int) -> None:
        final: dict[int, int] = {}
        for _, rowid, op in self._store.changes_since(self._collection_id, seq):
            final[rowid] = op
        removed = np.fromiter((r for r, op in final.items() if op == OP_DELETE), dtype=np.int64)
        written = [r for r, op in final.items() if op != OP_DELETE]
        index.remove(removed)
        slots = [self._mirror.slot_of_rowid.get(r) for r in written]
        present = [(r, s) for r, s in zip(written, slots, strict=True) if s is not None]
        gone = np.asarray([r for r, s in zip(written, slots, strict=True) if s is None], dtype=np.int64)
        index.remove(gone)
        if present:
            rowids = np.asarray([r for r, _ in present], dtype=np.int64)
            vectors = self._mirror.vectors[[s for _, s in present]]
            index.add(rowids, vectors)
        logger.info("index caught up with %d changes", len(final))

    # -- building ----------------------------------------------------------------------------

    def _snapshot(self) -> tuple[np.ndarray, np.ndarray, int]:
        slots = np.flatnonzero(self._mirror.alive[: self._mirror.n_slots])
        return self._mirror.rowids[slots].copy(), self._mirror.vectors[slots].copy(), self._mirror.version

    def _maybe_build(self, force: bool = False) -> None:
        if self._building is not None or self._closed or self._stopping:
            return
        if not force and (self.index is not None or self._mirror.count < self.settings.threshold):
            return
        if self.settings.background:
            self._start_background_build()
        else:
            rowids, vectors, version = self._snapshot()
            self._install(self._train(rowids, vectors), version, replay=False)

    def _train(self, rowids: np.ndarray, vectors: np.ndarray, params: HRM2Params | None = None) -> HRM2Index:
        started = time.perf_counter()
        index = HRM2Index.build(vectors, rowids, self._mirror.metric, params or self.settings.params)
        self.last_build_seconds = time.perf_counter() - started
        logger.info("built HRM2 over %d vectors in %.2f s", len(rowids), self.last_build_seconds)
        return index

    def build_now(self, params: HRM2Params | None = None) -> HRM2Index:
        """Train a new index from the current items and install it. Call under the write lock."""
        self.wait()
        self._leave_tiered()
        rowids, vectors, version = self._snapshot()
        index = self._train(rowids, vectors, params)
        self._install(index, version, replay=False)
        return index

    def _start_background_build(self) -> None:
        rowids, vectors, version = self._snapshot()
        self._pending = []

        def run() -> None:
            try:
                index = self._train(rowids, vectors)
                with self._lock.write():
                    if self._closed:
                        return
                    self._install(index, version, replay=True)
            except BaseException as exc:  # surfaced by wait(); queries stay exact/old meanwhile
                logger.exception("background index build failed")
                self._build_error = exc
            finally:
                with self._lock.write():
                    self._pending = None
                    self._building = None

        self._building = threading.Thread(target=run, name="m2m-index-build", daemon=True)
        self._building.start()

    def _install(self, index: HRM2Index, version: int, *, replay: bool) -> None:
        if replay and self._pending:
            for removed, written in self._pending:
                index.remove(removed)
                if written is not None and len(written):
                    slots = [self._mirror.slot_of_rowid.get(int(r)) for r in written]
                    keep = [i for i, s in enumerate(slots) if s is not None]
                    index.add(written[keep], self._mirror.vectors[[slots[i] for i in keep]])
        self.index = index
        self._save()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a background build to finish (re-raising its error)."""
        thread = self._building
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if self._build_error is not None:
            error, self._build_error = self._build_error, None
            raise error

    @property
    def building(self) -> bool:
        return self._building is not None

    # -- following writes ---------------------------------------------------------------------

    def on_changes(self, changes: SlotChanges) -> None:
        """Apply written and freed items to the index. Call under the write lock."""
        self._leave_tiered()
        removed = np.asarray(changes.freed_rowids, dtype=np.int64)
        written_slots = [s for s in changes.written if self._mirror.alive[s]]
        written = self._mirror.rowids[written_slots] if written_slots else np.empty(0, np.int64)
        if self.index is not None:
            self.index.remove(removed)
            if len(written):
                self.index.add(written, self._mirror.vectors[written_slots])
        if self._pending is not None:
            self._pending.append((removed, written.copy()))
        if self.index is not None and self.index.needs_retrain and self._building is None:
            logger.info("index drifted (needs_retrain); retraining in the background")
            self._maybe_build(force=True)
        elif self.index is None:
            self._maybe_build()

    # -- persistence ---------------------------------------------------------------------------

    def _save(self) -> None:
        if self.index is None or self._closed:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        version, seq = self._mirror.version, self._mirror.last_seq
        self.index.save(self.directory / "hrm2", version)
        if self.settings.tiers is not None:
            write_tier_directory(self.index, self.directory / "tiers", state_version=version)
        tmp = self.directory / (STATE_FILE + ".tmp")
        with open(tmp, "w") as fh:
            json.dump({"version": version, "seq": seq}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.directory / STATE_FILE)

    def save(self) -> None:
        """Write the index if it holds changes not yet on disk. Call under the write lock."""
        state_path = self.directory / STATE_FILE
        if self.index is None:
            return
        with contextlib.suppress(OSError, ValueError):
            if json.loads(state_path.read_text())["version"] == self._mirror.version:
                return
        self._save()

    def stop(self) -> None:
        """Start no new builds and wait for a running one. Call WITHOUT the collection's lock."""
        self._stopping = True
        try:
            self.wait()
        except Exception:  # already logged by the build thread; closing goes on
            logger.warning("the background index build had failed; closing without it")

    def close(self) -> None:
        """Save the index and stop following writes. Call under the write lock, after stop()."""
        self._save_quietly()
        if self.tiered is not None:
            self.tiered.close()
            self.tiered = None
        self._closed = True

    def _save_quietly(self) -> None:
        try:
            self.save()
        except OSError:
            logger.exception("could not save the index on close; it will be rebuilt or caught up")

    def drop(self) -> None:
        """Forget the index and delete its files (the collection was deleted)."""
        self._closed = True
        self.index = None
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- searching -------------------------------------------------------------------------------

    def rowid_mask(self, slot_mask: np.ndarray | None) -> np.ndarray | None:
        """Turn a mask over slots into the index's mask over rowids."""
        if slot_mask is None:
            return None
        rowids = self._mirror.rowids[: self._mirror.n_slots]
        top = int(rowids.max()) + 1 if len(rowids) else 1
        allowed = np.zeros(top, dtype=bool)
        allowed[rowids[slot_mask]] = True
        return allowed

    def to_slots(self, rowids: np.ndarray) -> np.ndarray:
        lookup = self._mirror.slot_of_rowid.get
        flat = [lookup(int(r), -1) if r >= 0 else -1 for r in rowids.ravel()]
        return np.asarray(flat, dtype=np.int64).reshape(rowids.shape)
