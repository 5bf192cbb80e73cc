"""A collection mirror's search vectors on disk: a memory-mapped ``.npy`` next to the database.

Used when a collection is served through the memory tiers (``IndexSettings.mirror_on_disk``),
so that its vectors are not all held in anonymous RAM. SQLite stays the source of truth;
this directory is derived from it and rebuilt whenever it cannot be trusted.

``<data>/mirrors/<collection uuid>/`` holds:

- ``vectors.npy``: a valid ``.npy`` file (float32, shape ``(capacity, dim)``) whose header is
  padded to 4 KiB so the data starts page-aligned; row ``s`` is the search-form vector of
  slot ``s``. Writes patch rows in place through the map; growth extends the file and
  rewrites the header's shape.
- ``state.<gen>.npz`` (no pickle): per-slot rowids (-1 for a free slot) and squared norms,
  and a CRC-32 of every 1 MiB block of the used rows.
- ``mirror.json``: the commit point (written to a temporary name, fsync'd, renamed): the
  collection version the files match, ``n_slots``, ``capacity`` and ``clean``.

Crash safety: before the first change after a commit, ``mirror.json`` is rewritten with
``clean: false`` (fsync'd) and only then is the data file touched; ``commit`` (on close)
msyncs the map, writes new CRCs and state, and marks it clean again. On open, a manifest
that is missing, dirty, for another version, dimension or metric, a data file of the wrong
size or header, or a block whose CRC-32 differs means the files are rebuilt from SQLite.

One process owns the directory (an ``flock`` on ``lock``); another process opening the same
collection keeps its vectors in a private temporary directory instead (deleted on close).
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from m2m.types import Metric

logger = logging.getLogger(__name__)

FORMAT = "m2m-mirror-vectors"
MANIFEST = "mirror.json"
DATA = "vectors.npy"
HEADER_BYTES = 4096  # .npy header padded to a page: rows start page-aligned
BLOCK_BYTES = 1 << 20  # CRC-32 granularity
MIN_CAPACITY = 1024


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _npy_header(capacity: int, dim: int) -> bytes:
    """A version 1.0 ``.npy`` header for ``float32 (capacity, dim)``, padded to HEADER_BYTES."""
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({capacity}, {dim}), }}"
    text = text.ljust(HEADER_BYTES - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode("latin1")


def _read_npy_shape(fd: int) -> tuple[int, int] | None:
    """The ``(capacity, dim)`` of our data file's header, or None if it is not ours."""
    head = os.pread(fd, HEADER_BYTES, 0)
    if len(head) != HEADER_BYTES or head[:8] != b"\x93NUMPY\x01\x00":
        return None
    if int.from_bytes(head[8:10], "little") != HEADER_BYTES - 10:
        return None
    try:
        meta = ast.literal_eval(head[10:].decode("latin1").strip())
    except (ValueError, SyntaxError):
        return None
    if not isinstance(meta, dict) or meta.get("descr") != "<f4" or meta.get("fortran_order") is not False:
        return None
    shape = meta.get("shape")
    if not (isinstance(shape, tuple) and len(shape) == 2 and all(isinstance(v, int) for v in shape)):
        return None
    return shape


def block_crcs(fd: int, n_bytes: int, blocks: range | list[int] | None = None) -> np.ndarray:
    """CRC-32 of each BLOCK_BYTES block of the first ``n_bytes`` of data (read with pread,
    so the pages are not mapped into this process); only ``blocks`` when given."""
    n_blocks = -(-n_bytes // BLOCK_BYTES)
    out = np.zeros(n_blocks, dtype=np.uint32)
    for b in range(n_blocks) if blocks is None else blocks:
        lo = b * BLOCK_BYTES
        size = min(BLOCK_BYTES, n_bytes - lo)
        out[b] = zlib.crc32(os.pread(fd, size, HEADER_BYTES + lo))
    return out


@dataclass
class SavedState:
    """What a clean, current directory holds: the per-slot arrays (the vectors stay mapped)."""

    rowids: np.ndarray
    sq_norms: np.ndarray


class DiskVectors:
    """Owns a mirror's vector directory: open or rebuild, patch, grow, commit."""

    def __init__(self, directory: Path, dim: int, metric: Metric) -> None:
        self.dim = dim
        self.metric = metric
        self.row_bytes = 4 * dim
        self._lock_fd: int | None = None
        self._private = False
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._lock_fd = fd
        except OSError:
            os.close(fd)
            logger.warning(
                "mirror vectors in %s are used by another process; using a private copy", directory
            )
            directory = Path(tempfile.mkdtemp(prefix="m2m-mirror-", dir=directory))
            self._private = True
        self.directory = directory
        self.vectors = np.zeros((0, dim), dtype=np.float32)
        self.capacity = 0
        self._fd: int | None = None
        self._crc = np.zeros(0, dtype=np.uint32)
        self._crc_rows = 0  # rows covered by self._crc
        self._dirty_blocks: set[int] = set()
        self._clean = True  # what mirror.json on disk may say: the first change rewrites it as dirty
        self._manifest: dict = {}
        self.rebuilds = 0
        self.reason: str | None = None  # why the last open rebuilt

    # -- opening ----------------------------------------------------------------------------

    def open_saved(self, version: int) -> SavedState | None:
        """Map the saved vectors if they are clean and match ``version``; else None (reason kept)."""
        self.reason = None
        try:
            manifest = json.loads((self.directory / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            self.reason = "missing"
            return None
        except (OSError, ValueError) as exc:
            self.reason = f"unreadable manifest: {exc}"
            return None
        expect = {
            "format": FORMAT,
            "dim": self.dim,
            "metric": self.metric.value,
            "clean": True,
            "version": version,
        }
        for key, value in expect.items():
            if manifest.get(key) != value:
                self.reason = f"{key} is {manifest.get(key)!r}, expected {value!r}"
                return None
        n_slots, capacity = int(manifest["n_slots"]), int(manifest["capacity"])
        try:
            fd = os.open(self.directory / DATA, os.O_RDWR)
        except OSError as exc:
            self.reason = f"data file: {exc}"
            return None
        try:
            reason = self._check_data(fd, n_slots, capacity, manifest)
            if reason is None:
                state = self._read_state(manifest, n_slots)
                if isinstance(state, str):
                    reason = state
        except OSError as exc:
            reason = f"read failed: {exc}"
        if reason is not None:
            os.close(fd)
            self.reason = reason
            return None
        self._attach(fd, capacity)
        self._manifest, self._clean = manifest, True
        self._crc, self._crc_rows = state[2], n_slots
        return SavedState(rowids=state[0], sq_norms=state[1])

    def _check_data(self, fd: int, n_slots: int, capacity: int, manifest: dict) -> str | None:
        if _read_npy_shape(fd) != (capacity, self.dim):
            return "data file header does not match the manifest"
        if os.fstat(fd).st_size != HEADER_BYTES + capacity * self.row_bytes or n_slots > capacity:
            return "data file has the wrong size (torn or truncated)"
        return None

    def _read_state(self, manifest: dict, n_slots: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | str:
        try:
            with np.load(self.directory / manifest["state"], allow_pickle=False) as z:
                rowids, sq_norms, crc = z["rowids"], z["sq_norms"], z["crc"]
        except (OSError, ValueError, KeyError) as exc:
            return f"state file unreadable: {exc}"
        if rowids.shape != (n_slots,) or sq_norms.shape != (n_slots,):
            return "state arrays do not match n_slots"
        with open(self.directory / DATA, "rb") as fh:
            actual = block_crcs(fh.fileno(), n_slots * self.row_bytes)
        if actual.shape != crc.shape or not np.array_equal(actual, crc):
            bad = np.flatnonzero(actual != crc) if actual.shape == crc.shape else []
            return f"CRC-32 mismatch in {len(bad) or 'all'} block(s) (torn or corrupted data file)"
        return rowids.astype(np.int64), sq_norms.astype(np.float32), crc.astype(np.uint32)

    def _attach(self, fd: int, capacity: int) -> None:
        if self._fd is not None and self._fd != fd:
            os.close(self._fd)
        self._fd, self.capacity = fd, capacity
        self.vectors = np.memmap(
            self.directory / DATA, dtype="<f4", mode="r+", offset=HEADER_BYTES, shape=(capacity, self.dim)
        )

    # -- rebuilding ----------------------------------------------------------------------------

    def start_rebuild(self, capacity: int) -> RebuildWriter:
        """A writer that appends rows to a fresh data file; ``finish`` installs it."""
        self.rebuilds += 1
        self._mark_dirty()
        return RebuildWriter(self, max(int(capacity), MIN_CAPACITY))

    def _install_rebuilt(self, tmp: Path, capacity: int, crc: np.ndarray, n_rows: int) -> None:
        os.replace(tmp, self.directory / DATA)
        _fsync_dir(self.directory)
        self._attach(os.open(self.directory / DATA, os.O_RDWR), capacity)
        self._crc, self._crc_rows = crc, n_rows
        self._dirty_blocks.clear()

    # -- writes ----------------------------------------------------------------------------------

    def _write_manifest(self, manifest: dict) -> None:
        tmp = self.directory / (MANIFEST + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.directory / MANIFEST)
        _fsync_dir(self.directory)
        self._manifest = manifest

    def _mark_dirty(self) -> None:
        """Before the first change after a commit: the files on disk stop being trusted."""
        if self._clean:
            self._write_manifest({**self._manifest, "format": FORMAT, "clean": False})
            self._clean = False

    def write_rows(self, slots: np.ndarray, rows: np.ndarray) -> None:
        """Patch the rows of ``slots`` (all ``< capacity``) in place."""
        self._mark_dirty()
        self.vectors[slots] = rows
        starts = np.asarray(slots, dtype=np.int64) * self.row_bytes
        self._dirty_blocks.update((starts // BLOCK_BYTES).tolist())
        self._dirty_blocks.update(((starts + self.row_bytes - 1) // BLOCK_BYTES).tolist())

    def note_change(self) -> None:
        """Per-slot state changed (a slot freed): the saved state is no longer current."""
        self._mark_dirty()

    def grow(self, capacity: int) -> None:
        """Extend the data file to ``capacity`` rows (sparse) and remap it."""
        self._mark_dirty()
        assert self._fd is not None
        self.vectors.flush()
        os.ftruncate(self._fd, HEADER_BYTES + capacity * self.row_bytes)
        os.pwrite(self._fd, _npy_header(capacity, self.dim), 0)
        self._attach(self._fd, capacity)

    def commit(self, version: int, n_slots: int, rowids: np.ndarray, sq_norms: np.ndarray) -> None:
        """Make the files match ``version`` and mark them clean (msync, CRCs, state, manifest)."""
        if self._fd is None:
            return
        if self._clean:
            if self._manifest.get("version") != version:  # only non-vector fields changed
                self._write_manifest({**self._manifest, "version": version})
            return
        self.vectors.flush()
        os.fsync(self._fd)
        n_bytes = n_slots * self.row_bytes
        n_blocks = -(-n_bytes // BLOCK_BYTES)
        crc = np.zeros(n_blocks, dtype=np.uint32)
        keep = min(len(self._crc), n_blocks)
        crc[:keep] = self._crc[:keep]
        first_changed = (min(self._crc_rows, n_slots) * self.row_bytes) // BLOCK_BYTES
        todo = sorted({b for b in self._dirty_blocks if b < n_blocks} | set(range(first_changed, n_blocks)))
        crc[todo] = block_crcs(self._fd, n_bytes, todo)[todo]
        state = f"state.{secrets.token_hex(6)}.npz"
        tmp = self.directory / (state + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                rowids=np.ascontiguousarray(rowids[:n_slots]),
                sq_norms=np.ascontiguousarray(sq_norms[:n_slots]),
                crc=crc,
            )
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.directory / state)
        self._write_manifest({"format": FORMAT, "dim": self.dim, "metric": self.metric.value, "version": version,
                              "n_slots": n_slots, "capacity": self.capacity, "state": state, "clean": True})  # fmt: skip
        self._clean = True
        self._crc, self._crc_rows = crc, n_slots
        self._dirty_blocks.clear()
        for old in self.directory.glob("state.*.npz"):
            if old.name != state:
                old.unlink(missing_ok=True)

    def close(self) -> None:
        """Unmap, release the lock; a private copy is deleted."""
        self.vectors = np.zeros((0, self.dim), dtype=np.float32)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._private:
            shutil.rmtree(self.directory, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def drop(self) -> None:
        """Close and delete the directory (the collection was deleted)."""
        directory, private = self.directory, self._private
        self.close()
        if not private:
            shutil.rmtree(directory, ignore_errors=True)

    def stats(self) -> dict:
        return {
            "directory": str(self.directory),
            "private": self._private,
            "capacity": self.capacity,
            "file_bytes": HEADER_BYTES + self.capacity * self.row_bytes if self._fd is not None else 0,
            "rebuilds": self.rebuilds,
            "last_rebuild_reason": self.reason,
        }


class RebuildWriter:
    """Appends search-form rows to ``vectors.npy.tmp`` with ordinary writes (no map, so a
    rebuild does not fill this process's RSS), CRC-ing each block on the way."""

    def __init__(self, owner: DiskVectors, capacity: int) -> None:
        self.owner = owner
        self.capacity = capacity
        self.n_rows = 0
        self.tmp = owner.directory / (DATA + ".tmp")
        self.fh = open(self.tmp, "wb")  # noqa: SIM115 - closed by finish/abort
        self.fh.write(_npy_header(capacity, owner.dim))
        self._crcs: list[int] = []
        self._pending = b""

    def append(self, rows: np.ndarray) -> None:
        data = np.ascontiguousarray(rows, dtype="<f4").tobytes()
        self.fh.write(data)
        self.n_rows += len(rows)
        buf = self._pending + data
        whole = len(buf) // BLOCK_BYTES * BLOCK_BYTES
        self._crcs += [zlib.crc32(buf[o : o + BLOCK_BYTES]) for o in range(0, whole, BLOCK_BYTES)]
        self._pending = buf[whole:]

    def finish(self) -> None:
        if self._pending:
            self._crcs.append(zlib.crc32(self._pending))
        capacity = max(self.capacity, self.n_rows)
        if capacity != self.capacity:
            self.fh.seek(0)
            self.fh.write(_npy_header(capacity, self.owner.dim))
        self.fh.truncate(HEADER_BYTES + capacity * self.owner.row_bytes)
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        crc = np.asarray(self._crcs, dtype=np.uint32)
        self.owner._install_rebuilt(self.tmp, capacity, crc, self.n_rows)

    def abort(self) -> None:
        self.fh.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()
