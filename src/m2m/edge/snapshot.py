"""The edge snapshot format: constants, checksums and reading (NumPy + PyYAML only).

A snapshot is a folder holding ``m2m_config.yaml`` and plain ``.npy`` files (no pickle).
The YAML names the format and its version, the collection's dimension and metric, the
sizes, the search parameters that reproduce the source HRM2 index's results, and for
every file its dtype, shape, byte size and SHA-256. Arrays are opened with
``np.load(mmap_mode="r")``: start-up maps the files instead of reading them and every
process on the machine shares the same page-cache pages.

Files (``quantization`` float32 | int8; see docs/edge.md):

==================  =====================================================================
``coarse``          (n_coarse, d) float32 coarse centroids; ``coarse_bias`` (n_coarse,)
``fine``            (n_lists, d) float32 fine centroids (one per inverted list)
``fine_table``      (n_coarse, w) int64 fine lists of each coarse cluster, padded with n_lists
``route``           (n_lists + 1, r) float32 routing matrix (fine centroids, in the LOD 1
                    code space when the codec is a projection; the last row is a dummy)
``route_bias``      (n_lists + 1,) float32 (``||c||²`` for l2/cosine, 0 for ip; inf dummy)
``codec_a/_b``      the LOD 1 codec's arrays (PCA: mean, axes; SQ8: lo, scale; PCA8: mean,
``codec_c/_d``      axes, then lo, scale of the int8 PCA coordinates)
``offsets``         (n_lists + 1,) int64: rows of list j are ``offsets[j]:offsets[j+1]``
``codes``           (n, code_dim) LOD 1 codes, cluster-contiguous: the index's own (float32
                    snapshots); int8 snapshots quantise PCA codes per dimension
                    (``code_lo``/``code_scale``; the index's sq8 codes are int8 already)
``vectors``         float32: (n, d) float32; int8: (n, d) int8 with ``vec_lo``/``vec_scale``
                    (d,) float32, ``x ≈ vec_lo + vec_scale * (c + 128)``
``bias``            l2 only: (n,) float32 squared norms of the stored (decoded) vectors
``ids``             (n,) fixed-width unicode, or ``ids_utf8`` uint8 + ``ids_offsets`` int64
``metadata``        optional: ``metadata.jsonl`` (one JSON object a row) + ``metadata_offsets``
==================  =====================================================================
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from m2m.errors import IndexCorruptError

FORMAT = "m2m-edge"
FORMAT_VERSION = 1
CONFIG_NAME = "m2m_config.yaml"
QUANTIZATIONS = ("float32", "int8")
ID_FORMATS = ("unicode", "utf8")
METADATA_FILE = "metadata.jsonl"
_HASH_BLOCK = 1 << 22


class SnapshotCorruptError(IndexCorruptError):
    """An edge snapshot file is missing, truncated, altered or of an unknown format."""


def sha256_file(path: Path) -> str:
    """SHA-256 hex digest of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    """Config entry of one written file: name, size, sha256 (+ dtype and shape for .npy)."""
    entry: dict[str, Any] = {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
    if path.suffix == ".npy":
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        entry["dtype"] = arr.dtype.str
        entry["shape"] = list(arr.shape)
    return entry


def read_config(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """``(snapshot folder, config)`` from a config file or the folder holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_NAME
    if not path.is_file():
        raise SnapshotCorruptError(f"no edge snapshot config at {path}")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SnapshotCorruptError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise SnapshotCorruptError(f"{path} is not an m2m edge snapshot config (format != {FORMAT!r})")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise SnapshotCorruptError(
            f"{path} has snapshot format version {version!r}; this m2m reads version {FORMAT_VERSION}"
        )
    for key in ("dim", "metric", "n_vectors", "n_lists", "quantization", "search", "files"):
        if key not in config:
            raise SnapshotCorruptError(f"{path} lacks the key {key!r}")
    if config["quantization"] not in QUANTIZATIONS:
        raise SnapshotCorruptError(f"{path} names unknown quantization {config['quantization']!r}")
    return path.parent, config


def verify_files(directory: Path, files: dict[str, dict[str, Any]], hashes: bool = True) -> None:
    """Check every file's size (and SHA-256 when ``hashes``) against the config; raise naming
    the first bad file. Sizes cost one ``stat`` each, so they are always checked."""
    for name, entry in files.items():
        path = directory / entry["file"]
        if not path.is_file():
            raise SnapshotCorruptError(f"snapshot file {path} ({name}) is missing")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise SnapshotCorruptError(
                f"snapshot file {path} ({name}) has {size} bytes, the config says {entry['bytes']} (truncated?)"
            )
        if hashes and sha256_file(path) != entry["sha256"]:
            raise SnapshotCorruptError(f"snapshot file {path} ({name}) fails its SHA-256 check (corrupted)")


def load_array(directory: Path, name: str, entry: dict[str, Any]) -> np.ndarray:
    """Memory-map one ``.npy`` file and check its dtype and shape against the config."""
    path = directory / entry["file"]
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise SnapshotCorruptError(f"snapshot file {path} ({name}) is missing") from None
    except (ValueError, OSError, EOFError) as exc:
        raise SnapshotCorruptError(
            f"snapshot file {path} ({name}) is unreadable or truncated: {exc}"
        ) from None
    if arr.dtype.str != entry.get("dtype") or list(arr.shape) != list(entry.get("shape", [])):
        raise SnapshotCorruptError(
            f"snapshot file {path} ({name}) holds {arr.dtype.str} {list(arr.shape)}, "
            f"the config says {entry.get('dtype')} {entry.get('shape')}"
        )
    return arr


def load_arrays(directory: Path, config: dict[str, Any], verify: bool = True) -> dict[str, np.ndarray]:
    """Every ``.npy`` file of the snapshot, memory-mapped (checksums first when ``verify``)."""
    files = config["files"]
    if not isinstance(files, dict):
        raise SnapshotCorruptError(f"{directory / CONFIG_NAME}: 'files' must be a mapping")
    verify_files(directory, files, hashes=verify)
    return {
        name: load_array(directory, name, entry)
        for name, entry in files.items()
        if str(entry.get("file", "")).endswith(".npy")
    }
