"""Cold tier: an HRM2 index's lists in one file on disk, read list by list.

File layout (little-endian, every section 4 KiB aligned)::

    [0, 4096)         header: b"M2MCOLD1", u32 JSON length, JSON (sizes, dtypes, section offsets)
    codes section     n_rows x code_dim codes (float32 or int8), cluster-contiguous
    vectors section   n_rows x dim float32 vectors, cluster-contiguous
    crc section       n_lists x 2 uint32: CRC-32 of each list's codes and vectors bytes
    trailer           b"M2MCEND1" + u64 total file size

Rows are ordered by fine list exactly like the index's arrays (``offsets`` marks the lists),
so one list part is one positioned read. The file is written to ``<name>.tmp``, fsynced and
``os.replace``d into place (then the directory is fsynced): readers see a whole file or none.
``open`` checks the header, the trailer and the file size, so a truncated file raises
``IndexCorruptError``; with ``verify`` on, the first read of each list part in a process is
checked against its CRC-32 (later reads of the same bytes are not re-hashed: the check costs
about as much as the read itself).

Reads use ``os.preadv`` into a fresh NumPy buffer (``mode="pread"``, the default) or copy out
of an ``np.memmap`` (``mode="mmap"``). pread was chosen by measurement (see docs/memory.md):
it is as fast for list-sized reads and the page cache it fills is not counted in the
process's RSS, whereas touched memmap pages are (file-backed RSS), which blurs the warm
tier's byte budget.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from m2m.errors import IndexCorruptError, InvalidArgumentError

MAGIC = b"M2MCOLD1"
TRAILER = b"M2MCEND1"
HEADER_BYTES = 4096
ALIGN = 4096
CODES, VECTORS = 0, 1  # list parts


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _bytes(a: np.ndarray) -> np.ndarray:
    """A C-contiguous array's bytes as a flat uint8 view (works for empty arrays too)."""
    return a.reshape(-1).view(np.uint8)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_cold_file(
    path: Path, vectors: np.ndarray, codes: np.ndarray, offsets: np.ndarray, *, chunk_rows: int = 65536
) -> dict:
    """Atomically write the cold file for cluster-contiguous ``vectors``/``codes``; returns the header."""
    path = Path(path)
    vectors = np.asarray(vectors)
    codes = np.asarray(codes)
    offsets = np.asarray(offsets, dtype=np.int64)
    n, dim = vectors.shape
    if vectors.dtype != np.float32:
        raise InvalidArgumentError(f"cold vectors must be float32, got {vectors.dtype}")
    if codes.ndim != 2 or codes.shape[0] != n:
        raise InvalidArgumentError(f"codes shape {codes.shape} does not match {n} vectors")
    if offsets.ndim != 1 or offsets[0] != 0 or offsets[-1] != n or np.any(np.diff(offsets) < 0):
        raise InvalidArgumentError("offsets must be monotone from 0 to n_rows")
    n_lists = offsets.shape[0] - 1
    code_row = codes.shape[1] * codes.dtype.itemsize
    vec_row = dim * 4
    codes_at = HEADER_BYTES
    vectors_at = _align(codes_at + n * code_row)
    crc_at = _align(vectors_at + n * vec_row)
    total = crc_at + n_lists * 8 + len(TRAILER) + 8
    header = {
        "version": 1,
        "n_rows": int(n),
        "n_lists": int(n_lists),
        "dim": int(dim),
        "code_dim": int(codes.shape[1]),
        "code_dtype": str(codes.dtype),
        "codes_at": codes_at,
        "vectors_at": vectors_at,
        "crc_at": crc_at,
        "total_bytes": total,
    }
    blob = json.dumps(header, sort_keys=True).encode()
    if len(MAGIC) + 4 + len(blob) > HEADER_BYTES:
        raise InvalidArgumentError("cold file header too large")
    crc = np.zeros((n_lists, 2), dtype=np.uint32)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write((MAGIC + struct.pack("<I", len(blob)) + blob).ljust(HEADER_BYTES, b"\0"))
        for part, arr, start in ((CODES, codes, codes_at), (VECTORS, vectors, vectors_at)):
            f.seek(start)
            for j in range(n_lists):  # list by list: CRCs per list, bounded memory
                lo, hi = int(offsets[j]), int(offsets[j + 1])
                for s in range(lo, hi, chunk_rows):
                    block = np.ascontiguousarray(arr[s : min(hi, s + chunk_rows)])
                    crc[j, part] = zlib.crc32(_bytes(block), int(crc[j, part]))
                    f.write(_bytes(block))
        f.seek(crc_at)
        f.write(crc.astype("<u4").tobytes())
        f.write(TRAILER + struct.pack("<Q", total))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return header


class ColdStore:
    """Positioned reads of list parts from a cold file (thread-safe: pread has no file cursor)."""

    def __init__(self, path: Path, offsets: np.ndarray, *, mode: str = "pread", verify: bool = True) -> None:
        if mode not in ("pread", "mmap"):
            raise InvalidArgumentError(f"cold read mode must be 'pread' or 'mmap', got {mode!r}")
        self.path = Path(path)
        self.mode = mode
        self.verify = verify
        self.offsets = np.asarray(offsets, dtype=np.int64)
        try:
            size = self.path.stat().st_size
            self._fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise IndexCorruptError(f"cold file {self.path} cannot be opened: {exc}") from None
        try:
            self.header = self._check(size)
        except Exception:
            os.close(self._fd)
            raise
        h = self.header
        self.dim = h["dim"]
        self.code_dim = h["code_dim"]
        self.code_dtype = np.dtype(h["code_dtype"])
        self.n_rows = h["n_rows"]
        self._row_bytes = (self.code_dim * self.code_dtype.itemsize, self.dim * 4)
        self._at = (h["codes_at"], h["vectors_at"])
        raw = os.pread(self._fd, h["n_lists"] * 8, h["crc_at"])
        self.crc = np.frombuffer(raw, dtype="<u4").reshape(h["n_lists"], 2).astype(np.uint32)
        self._verified = np.zeros((h["n_lists"], 2), dtype=bool)  # each list part is checked once
        self._mm = None
        if mode == "mmap":
            self._mm = (
                np.memmap(self.path, self.code_dtype, "r", h["codes_at"], (self.n_rows, self.code_dim)),
                np.memmap(self.path, np.float32, "r", h["vectors_at"], (self.n_rows, self.dim)),
            )

    def _check(self, size: int) -> dict:
        head = os.pread(self._fd, HEADER_BYTES, 0)
        if len(head) < len(MAGIC) + 4 or head[: len(MAGIC)] != MAGIC:
            raise IndexCorruptError(f"{self.path} is not an M2M cold file (bad magic)")
        (length,) = struct.unpack("<I", head[len(MAGIC) : len(MAGIC) + 4])
        try:
            h = json.loads(head[len(MAGIC) + 4 : len(MAGIC) + 4 + length])
        except ValueError:
            raise IndexCorruptError(f"{self.path}: unreadable cold file header") from None
        if size != h.get("total_bytes"):
            raise IndexCorruptError(
                f"cold file {self.path} has {size} bytes, its header says {h.get('total_bytes')} (truncated?)"
            )
        tail = os.pread(self._fd, len(TRAILER) + 8, size - len(TRAILER) - 8)
        if tail[: len(TRAILER)] != TRAILER or struct.unpack("<Q", tail[len(TRAILER) :])[0] != size:
            raise IndexCorruptError(f"cold file {self.path} has no valid trailer (truncated or torn write)")
        if h["n_rows"] != int(self.offsets[-1]) or h["n_lists"] != self.offsets.shape[0] - 1:
            raise IndexCorruptError(f"cold file {self.path} does not match the index's list offsets")
        return h

    def nbytes(self, j: int, part: int) -> int:
        return int(self.offsets[j + 1] - self.offsets[j]) * self._row_bytes[part]

    def read(self, j: int, part: int) -> np.ndarray:
        """List ``j``'s codes (``part=CODES``) or vectors (``VECTORS``) as a fresh array."""
        lo, hi = int(self.offsets[j]), int(self.offsets[j + 1])
        width, dtype = (self.code_dim, self.code_dtype) if part == CODES else (self.dim, np.dtype(np.float32))
        if self._mm is not None:
            out = np.array(self._mm[part][lo:hi], copy=True)
        else:
            out = np.empty((hi - lo, width), dtype=dtype)
            want = out.nbytes
            if want:
                got = os.preadv(self._fd, [_bytes(out)], self._at[part] + lo * self._row_bytes[part])
                if got != want:
                    raise IndexCorruptError(f"short read of list {j} from {self.path}: {got} of {want} bytes")
        if self.verify and not self._verified[j, part]:
            if zlib.crc32(_bytes(out)) != int(self.crc[j, part]):
                raise IndexCorruptError(f"list {j} of {self.path} fails its CRC-32 check")
            self._verified[j, part] = True
        return out

    def read_rows(self, j: int, local: np.ndarray) -> np.ndarray:
        """Vectors of rows ``local`` (sorted, unique, relative to list ``j``): one pread per run
        of consecutive rows. Partial reads are not CRC-checked (the file checks still hold)."""
        local = np.asarray(local, dtype=np.int64)
        rows = int(self.offsets[j]) + local
        out = np.empty((rows.size, self.dim), dtype=np.float32)
        if rows.size == 0:
            return out
        if self._mm is not None:
            out[:] = self._mm[VECTORS][rows]
            return out
        cut = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = np.concatenate(([0], cut)).tolist()
        ends = np.concatenate((cut, [rows.size])).tolist()
        row_bytes = self._row_bytes[VECTORS]
        for a, b in zip(starts, ends, strict=True):
            want = (b - a) * row_bytes
            got = os.preadv(self._fd, [_bytes(out[a:b])], self._at[VECTORS] + int(rows[a]) * row_bytes)
            if got != want:
                raise IndexCorruptError(
                    f"short read of list {j} rows from {self.path}: {got} of {want} bytes"
                )
        return out

    def close(self) -> None:
        self._mm = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:  # best effort
        with contextlib.suppress(Exception):
            self.close()
