"""HRM2 persistence: ``.npy`` arrays (no pickle) plus a JSON manifest, written atomically.

A save writes every array as ``<name>.<generation>.npy`` (a fresh random generation), fsyncs
them, then writes ``manifest.json.tmp``, fsyncs it and ``os.replace``s it over
``manifest.json`` (the commit point), fsyncs the directory and finally deletes files of older
generations. A reader therefore sees either the old or the new index, never a mix. The
manifest records the format version, ``state_version``, params, metric, dimension and each
file's shape, dtype, size and SHA-256; ``load`` checks all of them and raises
``IndexCorruptError`` on any mismatch.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import asdict
from pathlib import Path

import numpy as np

from m2m.errors import IndexCorruptError
from m2m.index.calibration import Calibration
from m2m.index.quantization import codec_from_arrays, codec_input_dim
from m2m.types import Metric

FORMAT = "m2m-hrm2"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _arrays(ix) -> dict[str, np.ndarray]:
    n = ix._n_rows
    out = {
        "vectors": ix._vecs[:n],
        "codes": ix._codes[:n],
        "slots": ix._slots[:n],
        "offsets": ix._offsets,
        "coarse": ix._coarse,
        "fine": ix._fine,
        "coarse_of_fine": ix._coarse_of_fine,
        "rep_slot": ix._rep_slot,
    }
    out.update(ix._codec.arrays())
    if ix.calibration is not None:
        c = ix.calibration
        out.update(
            {
                "calib_grid": c.grid,
                "calib_recall": c.recall,
                "calib_depths": c.depths,
                "calib_coverage": c.coverage,
            }
        )
    return out


def save_index(ix, directory: Path, state_version: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    gen = secrets.token_hex(6)
    files = {}
    for name, arr in _arrays(ix).items():
        fname = f"{name}.{gen}.npy"
        path = directory / fname
        with open(path, "wb") as f:
            np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        files[name] = {
            "file": fname,
            "shape": list(arr.shape),
            "dtype": str(arr.dtype),
            "bytes": path.stat().st_size,
            "sha256": _sha256(path),
        }
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "state_version": state_version,
        "generation": gen,
        "metric": ix.metric.value,
        "dim": ix.dim,
        "codec": ix._codec.name,
        "params": asdict(ix.params),
        "counters": {"n_at_build": ix._n_at_build, "n_added": ix._n_added, "n_removed": ix._n_removed},
        "build_seconds": ix.build_seconds,
        "calib_queries": None if ix.calibration is None else ix.calibration.n_queries,
        "files": files,
    }
    tmp = directory / (MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / MANIFEST)
    _fsync_dir(directory)
    keep = {meta["file"] for meta in files.values()} | {MANIFEST}
    for old in directory.glob("*.npy"):
        if old.name not in keep:
            old.unlink(missing_ok=True)


def _read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexCorruptError(f"no HRM2 index at {directory}: {MANIFEST} is missing") from None
    except (OSError, ValueError) as exc:
        raise IndexCorruptError(f"HRM2 manifest {path} is unreadable: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexCorruptError(f"{path} is not an HRM2 manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexCorruptError(
            f"{path} has format version {manifest.get('format_version')}, this build reads {FORMAT_VERSION}"
        )
    return manifest


def _load_array(directory: Path, name: str, meta: dict) -> np.ndarray:
    path = directory / meta["file"]
    if not path.is_file():
        raise IndexCorruptError(f"HRM2 file {path} is missing")
    if path.stat().st_size != meta["bytes"]:
        raise IndexCorruptError(
            f"HRM2 file {path} has {path.stat().st_size} bytes, manifest says {meta['bytes']}"
        )
    if _sha256(path) != meta["sha256"]:
        raise IndexCorruptError(f"HRM2 file {path} fails its SHA-256 check")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IndexCorruptError(f"HRM2 file {path} is unreadable: {exc}") from None
    if list(arr.shape) != meta["shape"] or str(arr.dtype) != meta["dtype"]:
        raise IndexCorruptError(f"HRM2 file {path} has shape/dtype {arr.shape}/{arr.dtype}, manifest differs")
    return arr


def load_index(cls, directory: Path):
    from m2m.index.hrm2 import HRM2Params

    manifest = _read_manifest(directory)
    try:
        files = manifest["files"]
        arrays = {name: _load_array(directory, name, meta) for name, meta in files.items()}
        params = HRM2Params(**manifest["params"])
        ix = cls(Metric(manifest["metric"]), int(manifest["dim"]), params)
        ix._codec = codec_from_arrays(manifest["codec"], arrays)
        _check(codec_input_dim(ix._codec) == ix.dim, "codec")
        ix._set_centroids(arrays["coarse"], arrays["fine"], arrays["coarse_of_fine"])
        vecs, slots, offsets = arrays["vectors"], arrays["slots"], arrays["offsets"]
        n = vecs.shape[0]
        _check(vecs.ndim == 2 and vecs.shape[1] == ix.dim, "vectors do not match the dimension")
        _check(slots.shape == (n,) and arrays["codes"].shape[0] == n, "row counts disagree")
        _check(
            offsets.shape == (ix.n_lists + 1,) and offsets[0] == 0 and offsets[-1] == n,
            "offsets are inconsistent",
        )
        _check(bool(np.all(np.diff(offsets) >= 0)), "offsets are not monotone")
        _check(n == 0 or (slots.min() >= 0 and np.unique(slots).size == n), "slots are invalid")
        lists = np.repeat(np.arange(ix.n_lists), np.diff(offsets))
        ix._init_storage(vecs, slots, lists, arrays["codes"])
        ix._rep_slot = arrays["rep_slot"]
        _check(ix._rep_slot.shape == (ix.n_lists,), "representatives are inconsistent")
        rep_rows = ix._lookup(ix._rep_slot)
        _check(bool(np.all((rep_rows >= 0) | (ix._rep_slot < 0))), "a representative is not stored")
        ix._rep_vec = np.where((rep_rows >= 0)[:, None], vecs[np.maximum(rep_rows, 0)], 0.0).astype(
            np.float32
        )
        if "calib_grid" in arrays:
            ix.calibration = Calibration(
                grid=arrays["calib_grid"],
                recall=arrays["calib_recall"],
                depths=arrays["calib_depths"],
                coverage=arrays["calib_coverage"],
                n_queries=int(manifest.get("calib_queries") or 0),
            )
        counters = manifest["counters"]
        ix._n_at_build, ix._n_added, ix._n_removed = (
            int(counters["n_at_build"]),
            int(counters["n_added"]),
            int(counters["n_removed"]),
        )
        ix.build_seconds = float(manifest.get("build_seconds", 0.0))
        return ix, int(manifest["state_version"])
    except IndexCorruptError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise IndexCorruptError(f"HRM2 index at {directory} is inconsistent: {exc!r}") from None


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise IndexCorruptError(f"HRM2 index is inconsistent: {what}")
