"""Turn user input into checked, canonical form before anything is written.

Every check raises a typed error from :mod:`m2m.errors` naming the problem, so a
bad batch is refused whole and the store is left unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from m2m.errors import (
    DimensionMismatchError,
    DuplicateIdError,
    InvalidArgumentError,
    InvalidCollectionNameError,
    InvalidIdError,
    InvalidMetadataError,
    InvalidVectorError,
)

MAX_ID_LENGTH = 1024
_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

Scalar = str | int | float | bool
MetadataValue = Scalar | list[Scalar]
Metadata = dict[str, MetadataValue]


def collection_name(name: Any) -> str:
    """A collection name: 1–63 characters of letters, digits, ``_ . -``, starting alphanumeric.

    Names never become file paths on their own, but the rule also rules out ``..``,
    slashes, NUL bytes and other ways to escape the data folder.
    """
    if not isinstance(name, str) or not _COLLECTION_NAME.fullmatch(name) or ".." in name:
        raise InvalidCollectionNameError(
            f"invalid collection name {name!r}: use 1-63 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit, and no '..'"
        )
    return name


def ids(values: Any, *, allow_empty: bool = False) -> list[str]:
    """A list of distinct, non-empty string ids."""
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, Sequence) and not isinstance(values, np.ndarray):
        raise InvalidIdError(f"ids must be a list of strings, got {type(values).__name__}")
    out = list(values)
    if not out and not allow_empty:
        raise InvalidArgumentError("empty batch: ids is empty")
    for value in out:
        if not isinstance(value, str) or not value:
            raise InvalidIdError(f"every id must be a non-empty string, got {value!r}")
        if len(value) > MAX_ID_LENGTH:
            raise InvalidIdError(f"id longer than {MAX_ID_LENGTH} characters: {value[:40]!r}...")
    if len(set(out)) != len(out):
        seen: set[str] = set()
        dupes = sorted({v for v in out if v in seen or seen.add(v)})
        raise DuplicateIdError(f"duplicate ids in one batch: {dupes[:5]}")
    return out


def _to_numpy(embeddings: Any) -> np.ndarray:
    """NumPy from an array, a list of lists, or a torch tensor (torch is never imported here)."""
    if type(embeddings).__module__.startswith("torch"):
        embeddings = embeddings.detach().cpu().float().numpy()
    try:
        # Values beyond float32's range become inf here (and are refused by the finite
        # check) instead of raising a RuntimeWarning from the cast.
        with np.errstate(over="ignore", invalid="ignore"):
            return np.asarray(embeddings, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidVectorError(f"embeddings must be numeric and rectangular: {exc}") from None


def embeddings(
    values: Any, dim: int, *, n_expected: int | None = None, name: str = "embeddings"
) -> np.ndarray:
    """A C-contiguous ``(n, dim)`` float32 array with only finite values."""
    if values is None:
        raise InvalidArgumentError(f"{name} is required")
    array = _to_numpy(values)
    if array.ndim == 1 and n_expected in (None, 1) and array.size == dim:
        array = array[None, :]
    if array.ndim != 2:
        raise InvalidVectorError(f"{name} must be a 2-D array (n, {dim}), got shape {array.shape}")
    if array.shape[0] == 0:
        raise InvalidArgumentError(f"empty batch: {name} is empty")
    if array.shape[1] != dim:
        raise DimensionMismatchError(f"{name} have dimension {array.shape[1]}, the collection expects {dim}")
    if n_expected is not None and array.shape[0] != n_expected:
        raise InvalidArgumentError(f"{name} has {array.shape[0]} rows but there are {n_expected} ids")
    if not np.isfinite(array).all():
        bad = int(np.argwhere(~np.isfinite(array))[0][0])
        raise InvalidVectorError(f"{name}[{bad}] contains NaN or inf")
    return np.ascontiguousarray(array)


def _metadata_value(key: str, value: Any) -> MetadataValue:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        value = int(value)
        if not -(2**63) <= value < 2**63:
            raise InvalidMetadataError(f"metadata {key!r}: integer {value} is out of the 64-bit range")
        return value
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            raise InvalidMetadataError(f"metadata {key!r}: {value} is not a finite number")
        return float(value)
    if isinstance(value, list | tuple):
        items = [_metadata_value(key, v) for v in value]
        if any(isinstance(v, list) for v in items):
            raise InvalidMetadataError(f"metadata {key!r}: lists may not be nested")
        return items
    raise InvalidMetadataError(
        f"metadata {key!r}: {type(value).__name__} is not allowed; use str, int, float, bool or a list of them"
    )


def metadata(value: Any) -> Metadata | None:
    """A metadata dict with string keys and JSON scalar (or list of scalar) values."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidMetadataError(f"metadata must be a dict, got {type(value).__name__}")
    out: Metadata = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key or key.startswith("$"):
            raise InvalidMetadataError(
                f"metadata keys must be non-empty strings not starting with '$': {key!r}"
            )
        out[key] = _metadata_value(key, item)
    return out


def metadatas(values: Any, n: int) -> list[Metadata | None] | None:
    if values is None:
        return None
    if isinstance(values, dict):
        values = [values]
    if not isinstance(values, Sequence) or len(values) != n:
        raise InvalidArgumentError(f"metadatas must be a list of {n} dicts (one per id)")
    return [metadata(v) for v in values]


def documents(values: Any, n: int) -> list[str | None] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, Sequence) or len(values) != n:
        raise InvalidArgumentError(f"documents must be a list of {n} strings (one per id)")
    for value in values:
        if value is not None and not isinstance(value, str):
            raise InvalidArgumentError(f"every document must be a string or None, got {type(value).__name__}")
    return list(values)


def positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidArgumentError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def non_negative_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise InvalidArgumentError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)
