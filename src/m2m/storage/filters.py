"""``where`` and ``where_document`` filters: validation and evaluation to slot masks.

Metadata filters (``where``)::

    {"field": value}                         equality (shorthand for $eq)
    {"field": {"$eq" | "$ne": value}}
    {"field": {"$gt" | "$gte" | "$lt" | "$lte": number}}
    {"field": {"$in" | "$nin": [value, ...]}}
    {"$and": [filter, ...]}, {"$or": [filter, ...]}
    {"a": 1, "b": {"$gt": 2}}                several keys: all must hold
    {}                                       matches every item

Semantics: an item matches a comparison when any of its values for the field does
(a list-valued field matches ``{"tags": "x"}`` when it contains ``"x"``). ``$ne`` and
``$nin`` match items that *have* the field and none of whose values is excluded.
Numbers compare across int and float; booleans and strings equal only themselves.

Document filters (``where_document``)::

    {"$contains": "text"}, {"$not_contains": "text"}, with $and / $or

``$contains`` is a case-sensitive substring match, answered by SQLite's FTS5
trigram index (strings shorter than 3 characters fall back to a scan).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from m2m.errors import InvalidFilterError
from m2m.storage.metadata_index import MetadataIndex

_COMPARISONS = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"}
_ORDERED = {"$gt", "$gte", "$lt", "$lte"}


def _scalar(value: Any) -> bool:
    return isinstance(value, str | bool | int | float) and not (
        isinstance(value, float) and value != value  # NaN never compares
    )


def validate_where(where: Any) -> dict[str, Any] | None:
    """Check a ``where`` filter's shape; raise :class:`InvalidFilterError` naming the fault."""
    if where is None:
        return None
    if not isinstance(where, dict):
        raise InvalidFilterError(f"where must be a dict, got {type(where).__name__}")
    for key, value in where.items():
        if not isinstance(key, str):
            raise InvalidFilterError(f"where keys must be strings, got {key!r}")
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise InvalidFilterError(f"{key} takes a non-empty list of filters")
            for sub in value:
                if not isinstance(sub, dict):
                    raise InvalidFilterError(f"{key} takes a list of dicts, got {type(sub).__name__}")
                validate_where(sub)
        elif key.startswith("$"):
            raise InvalidFilterError(f"unknown operator {key!r} at the top of a where filter")
        elif isinstance(value, dict):
            if not value:
                raise InvalidFilterError(f"empty operator dict for field {key!r}")
            for op, operand in value.items():
                _validate_comparison(key, op, operand)
        else:
            _validate_comparison(key, "$eq", value)
    return where


def _validate_comparison(field: str, op: Any, operand: Any) -> None:
    if op not in _COMPARISONS:
        raise InvalidFilterError(
            f"unknown operator {op!r} for field {field!r}; use one of {sorted(_COMPARISONS)}"
        )
    if op in ("$in", "$nin"):
        if not isinstance(operand, list) or not operand:
            raise InvalidFilterError(f"{op} on {field!r} takes a non-empty list")
        for item in operand:
            if not _scalar(item):
                raise InvalidFilterError(f"{op} on {field!r}: {item!r} is not a str, int, float or bool")
    elif op in _ORDERED:
        if isinstance(operand, bool) or not isinstance(operand, int | float) or operand != operand:
            raise InvalidFilterError(f"{op} on {field!r} needs a number, got {operand!r}")
    elif not _scalar(operand):
        raise InvalidFilterError(f"{op} on {field!r}: {operand!r} is not a str, int, float or bool")


def evaluate_where(where: dict[str, Any], index: MetadataIndex, n_slots: int) -> np.ndarray:
    """Boolean mask over slots of the items matching a validated ``where`` filter."""
    mask = np.ones(n_slots, dtype=bool)
    for key, value in where.items():
        if key == "$and":
            for sub in value:
                mask &= evaluate_where(sub, index, n_slots)
        elif key == "$or":
            either = np.zeros(n_slots, dtype=bool)
            for sub in value:
                either |= evaluate_where(sub, index, n_slots)
            mask &= either
        else:
            ops = value if isinstance(value, dict) else {"$eq": value}
            for op, operand in ops.items():
                mask &= _evaluate_comparison(key, op, operand, index, n_slots)
    return mask


def _evaluate_comparison(field: str, op: str, operand: Any, index: MetadataIndex, n: int) -> np.ndarray:
    if op == "$ne":
        return index.present(field, n) & ~index.compare(field, "eq", operand, n)
    if op == "$nin":
        return index.present(field, n) & ~index.compare(field, "in", operand, n)
    return index.compare(field, op[1:], operand, n)


def validate_where_document(where_document: Any) -> dict[str, Any] | None:
    """Check a ``where_document`` filter's shape."""
    if where_document is None:
        return None
    if not isinstance(where_document, dict) or len(where_document) != 1:
        raise InvalidFilterError(
            "where_document must be a dict with exactly one of $contains, $not_contains, $and, $or"
        )
    ((op, value),) = where_document.items()
    if op in ("$contains", "$not_contains"):
        if not isinstance(value, str) or not value:
            raise InvalidFilterError(f"{op} takes a non-empty string")
    elif op in ("$and", "$or"):
        if not isinstance(value, list) or not value:
            raise InvalidFilterError(f"{op} in where_document takes a non-empty list")
        for sub in value:
            validate_where_document(sub)
    else:
        raise InvalidFilterError(
            f"unknown where_document operator {op!r}; use $contains, $not_contains, $and, $or"
        )
    return where_document


def evaluate_where_document(
    where_document: dict[str, Any], contains: Callable[[str], np.ndarray], has_document: np.ndarray
) -> np.ndarray:
    """Mask of items matching a validated ``where_document``.

    ``contains(text)`` returns the mask of items whose document contains ``text``;
    ``$not_contains`` matches items that have a document without it.
    """
    ((op, value),) = where_document.items()
    if op == "$contains":
        return contains(value)
    if op == "$not_contains":
        return has_document & ~contains(value)
    masks = [evaluate_where_document(sub, contains, has_document) for sub in value]
    combine = np.logical_and if op == "$and" else np.logical_or
    return combine.reduce(masks)
