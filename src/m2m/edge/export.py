"""Writing an edge snapshot from a collection's HRM2 index (``m2m export-edge``).

The snapshot copies what the index searches with: centroids, routing matrix, LOD 1 codes
and vectors in cluster-contiguous order, list offsets, and the string ids of the rows (the
index itself stores SQLite rowids). A float32 snapshot reproduces the index's LOD 2 results
exactly; an int8 snapshot keeps the same routing but stores the vectors as per-dimension
int8 codes (4x smaller) and ranks the probed lists by their decoded distances.
See ``m2m.edge.snapshot`` for the file list and docs/edge.md for the rationale.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from m2m.edge.snapshot import (
    CONFIG_NAME,
    FORMAT,
    FORMAT_VERSION,
    ID_FORMATS,
    METADATA_FILE,
    file_entry,
)
from m2m.errors import InvalidArgumentError

if TYPE_CHECKING:
    from m2m.collection import Collection

log = logging.getLogger(__name__)

_CHUNK = 65536  # rows quantised per step (bounds the float32 temporaries)
_ALL_FILES = (
    "coarse",
    "coarse_bias",
    "fine",
    "fine_table",
    "route",
    "route_bias",
    "codec_a",
    "codec_b",
    "codec_c",
    "codec_d",
    "offsets",
    "codes",
    "code_lo",
    "code_scale",
    "vectors",
    "vec_lo",
    "vec_scale",
    "bias",
    "ids",
    "ids_utf8",
    "ids_offsets",
    "metadata_offsets",
)


def _quantization(value: str | None) -> str:
    if value is None or value == "float32":
        return "float32"
    if value == "int8":
        return "int8"
    raise InvalidArgumentError(f"quantization must be 'int8', 'float32' or None, got {value!r}")


def _index_snapshot(collection: Collection, with_metadata: bool) -> dict[str, Any]:
    """Copy the index's searchable state (live rows only, in list order) under the read lock."""
    indexer = collection._indexer
    with collection._lock.read():
        ix = indexer.index
        n = ix._n_rows
        live = np.flatnonzero(ix._slots[:n] >= 0)
        order = live[np.argsort(ix._list[live], kind="stable")]  # what HRM2Index.compact() does
        rowids = ix._slots[order]
        lists = ix._list[order]
        slots = indexer.to_slots(rowids)
        if (slots < 0).any():
            raise InvalidArgumentError("the index holds rows the collection no longer has; retry the export")
        mirror = collection._mirror
        ids = [mirror.ids[int(s)] for s in slots]
        metadata = None
        if with_metadata:
            rows = collection._store.fetch_fields(rowids, vectors=False, metadatas=True, documents=False)
            metadata = [rows.get(int(r), (None, None, None))[1] for r in rowids]
        codec = ix._codec
        calib = ix.calibration
        from m2m.index import _search

        return {
            "metric": ix.metric.value,
            "dim": ix.dim,
            "n_lists": ix.n_lists,
            "n_coarse": ix.n_coarse,
            "params": ix.params,
            "default_n_probe": int(ix.n_probe_for(ix.params.default_recall)),
            "calibration": None
            if calib is None
            else {"n_probe": calib.grid.tolist(), "recall_at_10": calib.recall.tolist()},
            "route_flat_cells": int(_search.ROUTE_FLAT_CELLS),
            "route_in_code_space": bool(ix._route_qv),
            "codec": codec.name,
            "code_dim": int(codec.code_dim),
            "codec_arrays": {k: np.array(v) for k, v in codec.arrays().items()},
            "coarse": ix._coarse.copy(),
            "coarse_bias": np.asarray(ix._coarse_bias, dtype=np.float32).copy(),
            "fine": ix._fine.copy(),
            "fine_table": ix._fine_table.copy(),
            "route": np.ascontiguousarray(ix._route_ext, dtype=np.float32).copy(),
            "route_bias": np.asarray(ix._fine_bias_ext, dtype=np.float32).copy(),
            "lists": lists,
            "vectors": ix._vecs[order],
            "codes": ix._codes[order],
            "bias": ix._bias[order],
            "ids": ids,
            "metadata": metadata,
        }


def quantize_int8(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-dimension min/max int8 codes: ``x ≈ lo + scale * (c + 128)`` (error <= scale / 2)."""
    lo = vectors.min(axis=0).astype(np.float32)
    hi = vectors.max(axis=0).astype(np.float32)
    scale = np.maximum((hi - lo) / np.float32(255.0), np.float32(1e-12)).astype(np.float32)
    codes = np.empty(vectors.shape, dtype=np.int8)
    for s in range(0, vectors.shape[0], _CHUNK):
        q = np.rint((vectors[s : s + _CHUNK] - lo) / scale)
        codes[s : s + _CHUNK] = (np.clip(q, 0, 255) - 128).astype(np.int8)
    return codes, lo, scale


def dequantize_int8(codes: np.ndarray, lo: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return codes.astype(np.float32) * scale + (lo + np.float32(128.0) * scale)


def _id_arrays(ids: list[str], id_format: str) -> tuple[str, dict[str, np.ndarray]]:
    encoded = [i.encode("utf-8") for i in ids]
    total = sum(len(b) for b in encoded)
    max_len = max((len(i) for i in ids), default=1)
    if id_format == "auto":
        # numpy's fixed-width unicode drops trailing NULs and costs 4 bytes a character
        has_nul = any(i.endswith("\x00") for i in ids)
        small = 4 * max(1, max_len) * len(ids) <= 2 * (total + 8 * (len(ids) + 1))
        id_format = "unicode" if small and not has_nul else "utf8"
    if id_format not in ID_FORMATS:
        raise InvalidArgumentError(f"id_format must be 'auto' or one of {ID_FORMATS}, got {id_format!r}")
    if id_format == "unicode":
        if any(i.endswith("\x00") for i in ids):
            raise InvalidArgumentError("ids ending in NUL need id_format='utf8'")
        return id_format, {"ids": np.array(ids, dtype=f"<U{max(1, max_len)}")}
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return id_format, {"ids_utf8": np.frombuffer(b"".join(encoded), dtype=np.uint8), "ids_offsets": offsets}


def _write_npy(directory: Path, name: str, arr: np.ndarray) -> Path:
    path = directory / f"{name}.npy"
    tmp = directory / f"{name}.npy.tmp"
    with open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(arr), allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def _write_metadata(directory: Path, metadata: list[Any]) -> tuple[Path, np.ndarray]:
    offsets = np.zeros(len(metadata) + 1, dtype=np.int64)
    path = directory / METADATA_FILE
    tmp = directory / (METADATA_FILE + ".tmp")
    with open(tmp, "wb") as fh:
        pos = 0
        for i, meta in enumerate(metadata):
            line = json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
            fh.write(line)
            pos += len(line)
            offsets[i + 1] = pos
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path, offsets


def export_edge(
    collection: Collection,
    directory: str | os.PathLike[str],
    quantization: str | None = "int8",
    include_metadata: bool = False,
    *,
    id_format: str = "auto",
) -> Path:
    """Write a self-contained edge snapshot of ``collection`` into ``directory``; returns the
    path of its ``m2m_config.yaml`` (what :class:`m2m.edge.EdgeRouter` opens).

    ``quantization``: ``"int8"`` (vectors as per-dimension int8 codes, 4x smaller) or
    ``None``/``"float32"`` (exact vectors and LOD 1 codes: results equal the collection's).
    Builds the index first if the collection has none. Files are written to temporary
    names and renamed; the config is written last, so a reader never sees a partial set.
    """
    quant = _quantization(quantization)
    if id_format != "auto" and id_format not in ID_FORMATS:
        raise InvalidArgumentError(f"id_format must be 'auto' or one of {ID_FORMATS}, got {id_format!r}")
    collection.wait_for_index()
    collection._catch_up()
    if collection._indexer.index is None:
        log.info("collection %r has no index; building one for the edge snapshot", collection.name)
        collection.create_index()
    snap = _index_snapshot(collection, include_metadata)

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "coarse": snap["coarse"],
        "coarse_bias": snap["coarse_bias"],
        "fine": snap["fine"],
        "fine_table": snap["fine_table"],
        "route": snap["route"],
        "route_bias": snap["route_bias"],
        **snap["codec_arrays"],
        "offsets": np.concatenate(
            ([0], np.cumsum(np.bincount(snap["lists"], minlength=snap["n_lists"])))
        ).astype(np.int64),
    }
    metric = snap["metric"]
    if quant == "float32":
        arrays["codes"] = snap["codes"]
        arrays["vectors"] = np.asarray(snap["vectors"], dtype=np.float32)
        if metric == "l2":
            arrays["bias"] = np.asarray(snap["bias"], dtype=np.float32)
    else:
        codes, lo, scale = quantize_int8(snap["vectors"])
        arrays["vectors"], arrays["vec_lo"], arrays["vec_scale"] = codes, lo, scale
        if snap["codes"].dtype == np.int8:  # the index's own int8 (sq8) codes
            arrays["codes"] = snap["codes"]
        else:  # float32 LOD 1 codes (PCA) -> int8 per code dimension
            arrays["codes"], arrays["code_lo"], arrays["code_scale"] = quantize_int8(snap["codes"])
        if metric == "l2":
            bias = np.empty(codes.shape[0], dtype=np.float32)
            for s in range(0, codes.shape[0], _CHUNK):
                dec = dequantize_int8(codes[s : s + _CHUNK], lo, scale)
                bias[s : s + _CHUNK] = np.einsum("ij,ij->i", dec, dec)
            arrays["bias"] = bias
    fmt, id_arrays = _id_arrays(snap["ids"], id_format)
    arrays.update(id_arrays)

    # drop a previous snapshot's config first: until the new one lands the folder is not a snapshot
    (directory / CONFIG_NAME).unlink(missing_ok=True)
    files: dict[str, dict[str, Any]] = {}
    for name, arr in arrays.items():
        files[name] = file_entry(_write_npy(directory, name, arr))
    if snap["metadata"] is not None:
        meta_path, meta_offsets = _write_metadata(directory, snap["metadata"])
        files["metadata"] = file_entry(meta_path)
        files["metadata_offsets"] = file_entry(_write_npy(directory, "metadata_offsets", meta_offsets))
    for stale in _ALL_FILES:  # files of an earlier snapshot of another shape
        if stale not in files:
            (directory / f"{stale}.npy").unlink(missing_ok=True)
    if snap["metadata"] is None:
        (directory / METADATA_FILE).unlink(missing_ok=True)

    from m2m import __version__

    params = snap["params"]
    n = int(arrays["offsets"][-1])
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_by": f"m2m {__version__}",
        "collection": collection.name,
        "dim": int(snap["dim"]),
        "metric": metric,
        "n_vectors": n,
        "n_lists": int(snap["n_lists"]),
        "n_coarse": int(snap["n_coarse"]),
        "quantization": quant,
        "ids_format": fmt,
        "metadata": snap["metadata"] is not None,
        "search": {
            "default_n_probe": snap["default_n_probe"],
            "rerank": int(params.rerank),
            "codec": snap["codec"],
            "code_dim": snap["code_dim"],
            "route_in_code_space": snap["route_in_code_space"],
            "coarse_probe": None if params.coarse_probe is None else int(params.coarse_probe),
            "route_flat_cells": snap["route_flat_cells"],
            "default_recall": float(params.default_recall),
            "calibration": snap["calibration"],
        },
        "files": files,
    }
    tmp = directory / (CONFIG_NAME + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        yaml.safe_dump(config, fh, sort_keys=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, directory / CONFIG_NAME)
    total = sum(e["bytes"] for e in files.values())
    log.info(
        "edge snapshot of %r (%s, %d vectors, %d bytes) written to %s",
        collection.name,
        quant,
        n,
        total,
        directory,
    )
    return directory / CONFIG_NAME


# -- command line ----------------------------------------------------------------------------


def _cmd_export_edge(args: argparse.Namespace) -> int:
    from m2m.client import Client

    client = Client(args.path)
    try:
        collection = client.get_collection(args.collection)
        quant = None if args.quantization == "float32" else args.quantization
        config = export_edge(collection, args.out, quantization=quant, include_metadata=args.metadata)
    finally:
        client.close()
    cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    summary = {
        "config": str(config),
        "quantization": cfg["quantization"],
        "n_vectors": cfg["n_vectors"],
        "bytes": sum(e["bytes"] for e in cfg["files"].values()),
    }
    print(json.dumps(summary))
    return 0


def add_export_edge_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``m2m export-edge`` on an ``argparse`` subparsers object (``set_defaults(handler=)``)."""
    help_text = "write a self-contained edge snapshot of a collection (served by m2m.edge.EdgeRouter)"
    parser = subparsers.add_parser("export-edge", help=help_text, description=help_text)
    parser.add_argument("--path", default="./m2m_data", help="data folder of the store (default: ./m2m_data)")
    parser.add_argument("--collection", required=True, help="name of the collection to export")
    parser.add_argument("--out", required=True, help="folder to write the snapshot into (created if missing)")
    parser.add_argument(
        "--quantization",
        choices=["int8", "float32"],
        default="int8",
        help="int8: 4x smaller vectors, approximate ranking; float32: exact copy (default: int8)",
    )
    parser.add_argument(
        "--metadata", action="store_true", help="include item metadata (EdgeRouter.get_metadata)"
    )
    parser.set_defaults(handler=_cmd_export_edge)
    return parser
