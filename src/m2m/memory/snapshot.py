"""Tier directories: a snapshot of a built HRM2 index as a cold file plus small routing arrays.

``write_tier_directory(index, dir)`` writes ``lists.<gen>.cold`` (codes and vectors,
``m2m.memory.cold_store``), ``meta.<gen>.npz`` (centroids, codec, calibration, representatives,
per-row slots and biases, offsets; no pickle) and ``tiers.json`` (the commit point, replaced
atomically; older generations are then deleted). ``routing_index`` rebuilds, from the manifest
and the small arrays, an ``HRM2Index`` that can route but holds no list data.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict
from pathlib import Path

import numpy as np

from m2m.errors import IndexCorruptError
from m2m.memory.cold_store import write_cold_file
from m2m.types import Metric

MANIFEST = "tiers.json"
FORMAT = "m2m-tiers"


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def snapshot_arrays(ix) -> dict[str, np.ndarray]:
    """The index's rows in compacted list order (what ``compact`` would produce), without
    mutating it, plus the small routing arrays."""
    n = ix._n_rows
    if n == ix._n_main and ix._n_dead == 0:
        vecs, codes, slots, bias, offsets = (
            ix._vecs[:n],
            ix._codes[:n],
            ix._slots[:n],
            ix._bias[:n],
            ix._offsets,
        )
    else:
        live = np.flatnonzero(ix._slots[:n] >= 0)
        order = live[np.argsort(ix._list[live], kind="stable")]
        vecs, codes, slots, bias = ix._vecs[order], ix._codes[order], ix._slots[order], ix._bias[order]
        sizes = np.bincount(ix._list[order], minlength=ix.n_lists)
        offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    out = {
        "vectors": vecs,
        "codes": codes,
        "slots": slots,
        "bias": bias,
        "offsets": offsets,
        "coarse": ix._coarse,
        "fine": ix._fine,
        "coarse_of_fine": ix._coarse_of_fine,
        "rep_slot": ix._rep_slot,
        "rep_vec": ix._rep_vec,
    }
    out.update(ix._codec.arrays())
    if ix.calibration is not None:
        c = ix.calibration
        out.update(calib_grid=c.grid, calib_recall=c.recall, calib_depths=c.depths, calib_coverage=c.coverage)
    return out


def write_tier_directory(ix, directory: Path, state_version: int | None = None) -> Path:
    """Write ``ix`` as a tier directory (atomically: ``tiers.json`` is the commit point);
    ``state_version`` is recorded for callers that pair the snapshot with their data version."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = snapshot_arrays(ix)
    gen = secrets.token_hex(6)
    cold_name, meta_name = f"lists.{gen}.cold", f"meta.{gen}.npz"
    header = write_cold_file(
        directory / cold_name, arrays.pop("vectors"), arrays.pop("codes"), arrays["offsets"]
    )
    tmp = directory / (meta_name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / meta_name)
    manifest = {
        "format": FORMAT,
        "format_version": 1,
        "generation": gen,
        "cold": cold_name,
        "meta": meta_name,
        "metric": ix.metric.value,
        "dim": ix.dim,
        "codec": ix._codec.name,
        "params": asdict(ix.params),
        "n_rows": header["n_rows"],
        "n_lists": header["n_lists"],
        "counters": {"n_at_build": ix._n_at_build, "n_added": ix._n_added, "n_removed": ix._n_removed},
        "calib_queries": None if ix.calibration is None else ix.calibration.n_queries,
        "build_seconds": ix.build_seconds,
        "state_version": state_version,
    }
    mtmp = directory / (MANIFEST + ".tmp")
    mtmp.write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    with open(mtmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(mtmp, directory / MANIFEST)
    _fsync_dir(directory)
    for old in directory.iterdir():
        if old.name not in (cold_name, meta_name, MANIFEST) and (old.suffix in (".cold", ".npz")):
            old.unlink(missing_ok=True)
    return directory


def routing_index(manifest: dict, a: dict[str, np.ndarray]):
    """An ``HRM2Index`` holding the routing arrays only (``_codes``/``_vecs`` are set later)."""
    from m2m.index.calibration import Calibration
    from m2m.index.hrm2 import HRM2Index, HRM2Params
    from m2m.index.quantization import codec_from_arrays

    ix = HRM2Index(Metric(manifest["metric"]), int(manifest["dim"]), HRM2Params(**manifest["params"]))
    ix._codec = codec_from_arrays(manifest["codec"], a)
    ix._set_centroids(a["coarse"], a["fine"], a["coarse_of_fine"])
    offsets, slots = a["offsets"].astype(np.int64), a["slots"].astype(np.int64)
    n = int(offsets[-1])
    if offsets.shape != (ix.n_lists + 1,) or slots.shape != (n,) or a["bias"].shape != (n,):
        raise IndexCorruptError("tier meta arrays are inconsistent")
    ix._offsets = offsets
    ix._sizes = np.diff(offsets)
    ix._slots = slots
    ix._bias = a["bias"].astype(np.float32)
    ix._list = None  # only read for overflow rows, which a tier snapshot never has
    ix._n_rows = ix._n_main = ix._cap = n
    ix._n_dead = 0
    ix._row_of_slot = np.full(int(slots.max()) + 1 if n else 1, -1, dtype=np.int64)
    ix._row_of_slot[slots] = np.arange(n)
    ix._rep_slot = a["rep_slot"]
    ix._rep_vec = a["rep_vec"]
    if "calib_grid" in a:
        ix.calibration = Calibration(
            grid=a["calib_grid"],
            recall=a["calib_recall"],
            depths=a["calib_depths"],
            coverage=a["calib_coverage"],
            n_queries=int(manifest.get("calib_queries") or 0),
        )
    c = manifest["counters"]
    ix._n_at_build, ix._n_added, ix._n_removed = int(c["n_at_build"]), int(c["n_added"]), int(c["n_removed"])
    ix.build_seconds = float(manifest.get("build_seconds", 0.0))
    return ix
