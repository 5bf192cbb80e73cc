"""An in-memory, columnar mirror of item metadata for fast ``where`` filters.

SQLite stores the metadata JSON; this index answers filters with NumPy in
microseconds instead of a table scan per query. Each metadata key keeps typed
columns of ``(slot, generation, value)`` entries; a list value becomes one entry per
element. Rewriting a slot bumps its generation, which makes its old entries stale
without touching them; stale entries are dropped when they outnumber live ones.
"""

from __future__ import annotations

import enum
import math
import threading
from typing import Any

import numpy as np


class Kind(enum.IntEnum):
    """Value kinds kept apart so that ``True`` never equals ``1`` in a filter."""

    INT = 0
    FLOAT = 1
    STR = 2
    BOOL = 3


def kind_of(value: Any) -> Kind:
    if isinstance(value, bool):
        return Kind.BOOL
    if isinstance(value, int):
        return Kind.INT
    if isinstance(value, float):
        return Kind.FLOAT
    return Kind.STR


_KIND_BY_TYPE = {bool: Kind.BOOL, int: Kind.INT, float: Kind.FLOAT, str: Kind.STR}


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_ORDER_OPS = {"gt": np.greater, "gte": np.greater_equal, "lt": np.less, "lte": np.less_equal}


def _exact_ints(values: list[Any]) -> list[int]:
    """The numbers among ``values`` that equal some int64 exactly (Python's int/float equality)."""
    out = []
    for v in values:
        if isinstance(v, float):
            if not v.is_integer():  # also false for inf
                continue
            v = int(v)
        if _INT64_MIN <= v <= _INT64_MAX:
            out.append(v)
    return out


def _exact_floats(values: list[Any]) -> list[float]:
    """The numbers among ``values`` that equal some float64 exactly (``2**53 + 1`` equals none)."""
    out = []
    for v in values:
        if isinstance(v, int):
            try:
                f = float(v)
            except OverflowError:
                continue
            if f != v:  # Python compares int and float exactly
                continue
            v = f
        out.append(v)
    return out


def _ordered(column: np.ndarray, kind: Kind, op: str, value: int | float) -> np.ndarray:
    """``column <op> value`` with Python's exact int/float ordering, without casting the column."""
    if kind is Kind.INT and isinstance(value, float) and math.isfinite(value):
        # for an integer x: x > v  <=> x > floor(v),  x <= v <=> x <= floor(v),
        #                   x >= v <=> x >= ceil(v),  x < v  <=> x < ceil(v)
        value = math.floor(value) if op in ("gt", "lte") else math.ceil(value)
    elif kind is Kind.FLOAT and isinstance(value, int):
        try:
            f = float(value)
        except OverflowError:
            f = math.inf if value > 0 else -math.inf
        if math.isfinite(f) and f != value:
            # value lies strictly between two adjacent floats lo < value < hi
            lo, hi = (math.nextafter(f, -math.inf), f) if f > value else (f, math.nextafter(f, math.inf))
            op, f = ("gte", hi) if op in ("gt", "gte") else ("lte", lo)
        value = f
    return _ORDER_OPS[op](column, value)


class _Column:
    """Append-friendly ``(slot, generation, value)`` triples with a lazily built NumPy view.

    Appends happen under the collection's write lock, but ``arrays()`` folds the pending
    entries in lazily from concurrent *readers*, so that step takes the column's own lock
    and publishes the three arrays together (two readers folding at once used to
    concatenate the same entries twice and leave arrays of different lengths).
    """

    __slots__ = ("_arrays", "_lock", "_pending", "dtype")

    def __init__(self, dtype: type) -> None:
        self.dtype = dtype
        self._arrays = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0, dtype=dtype))
        self._pending: list[tuple[int, int, Any]] = []
        self._lock = threading.Lock()

    def append(self, slot: int, gen: int, value: Any) -> None:
        self._pending.append((slot, gen, value))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with self._lock:
            if self._pending:
                slots, gens, values = zip(*self._pending, strict=True)
                old_slots, old_gens, old_values = self._arrays
                self._arrays = (
                    np.concatenate([old_slots, np.fromiter(slots, np.int64, len(slots))]),
                    np.concatenate([old_gens, np.fromiter(gens, np.int64, len(gens))]),
                    np.concatenate([old_values, np.asarray(values, dtype=self.dtype)]),
                )
                self._pending = []
            return self._arrays

    def __len__(self) -> int:
        return len(self._arrays[0]) + len(self._pending)

    def keep(self, live: np.ndarray) -> None:
        slots, gens, values = self.arrays()
        with self._lock:
            self._arrays = (slots[live], gens[live], values[live])


class _Key:
    """All entries of one metadata key: presence plus one column per value kind."""

    __slots__ = ("codes", "columns", "presence")

    def __init__(self) -> None:
        self.presence = _Column(np.int8)
        self.columns = {
            Kind.INT: _Column(np.int64),
            Kind.FLOAT: _Column(np.float64),
            Kind.STR: _Column(np.int64),
            Kind.BOOL: _Column(np.int64),
        }
        self.codes: dict[str, int] = {}

    def code(self, text: str) -> int:
        code = self.codes.get(text)
        if code is None:
            code = self.codes[text] = len(self.codes)
        return code


class MetadataIndex:
    """Columnar metadata over integer slots; evaluates comparisons to slot masks."""

    def __init__(self) -> None:
        self._keys: dict[str, _Key] = {}
        self._gen = np.zeros(0, dtype=np.int64)
        self._writes = 0
        self._compacted_at = 0

    def _ensure(self, n_slots: int) -> None:
        if n_slots > len(self._gen):
            grown = np.zeros(max(n_slots, 2 * len(self._gen), 1024), dtype=np.int64)
            grown[: len(self._gen)] = self._gen
            self._gen = grown

    def set(self, slot: int, metadata: dict[str, Any] | None) -> None:
        """Replace the metadata of ``slot`` (``None`` clears it)."""
        self.set_many(np.asarray([slot], dtype=np.int64), [metadata])

    def set_many(self, slots: np.ndarray, metadatas: list[dict[str, Any] | None]) -> None:
        """Replace the metadata of many distinct slots in one pass."""
        if len(slots) == 0:
            return
        slots = np.asarray(slots, dtype=np.int64)
        self._ensure(int(slots.max()) + 1)
        self._gen[slots] += 1
        gens = self._gen[slots].tolist()
        kinds = _KIND_BY_TYPE
        for slot, gen, metadata in zip(slots.tolist(), gens, metadatas, strict=True):
            if not metadata:
                continue
            for key, value in metadata.items():
                entry = self._keys.get(key)
                if entry is None:
                    entry = self._keys[key] = _Key()
                entry.presence._pending.append((slot, gen, 1))
                for item in value if type(value) is list else (value,):
                    kind = kinds.get(type(item))
                    if kind is None:
                        kind = kind_of(item)
                    if kind is Kind.STR:
                        item = entry.code(item)
                    elif kind is Kind.BOOL:
                        item = int(item)
                    entry.columns[kind]._pending.append((slot, gen, item))
        self._writes += len(slots)
        if self._writes > 50_000 + 2 * self._compacted_at:
            self.compact()
            self._compacted_at = self._writes

    def clear(self, slot: int) -> None:
        self.set(slot, None)

    def _live(self, column: _Column) -> tuple[np.ndarray, np.ndarray]:
        slots, gens, values = column.arrays()
        live = self._gen[slots] == gens
        return slots[live], values[live]

    def present(self, key: str, n_slots: int) -> np.ndarray:
        mask = np.zeros(n_slots, dtype=bool)
        entry = self._keys.get(key)
        if entry is not None:
            slots, _ = self._live(entry.presence)
            mask[slots] = True
        return mask

    def compare(self, key: str, op: str, operand: Any, n_slots: int) -> np.ndarray:
        """Slots where any value of ``key`` satisfies ``value <op> operand``.

        ``op`` is one of ``eq gt gte lt lte in``; for ``in`` the operand is a list.
        Numbers compare across int and float; strings and booleans only equal themselves.
        """
        mask = np.zeros(n_slots, dtype=bool)
        entry = self._keys.get(key)
        if entry is None:
            return mask
        operands = operand if op == "in" else [operand]
        by_kind: dict[Kind, list[Any]] = {}
        for value in operands:
            kind = kind_of(value)
            if kind is Kind.STR:
                code = entry.codes.get(value)
                if code is not None:
                    by_kind.setdefault(Kind.STR, []).append(code)
            elif kind is Kind.BOOL:
                by_kind.setdefault(Kind.BOOL, []).append(int(value))
            else:
                by_kind.setdefault(Kind.INT, []).append(value)
                by_kind.setdefault(Kind.FLOAT, []).append(value)
        for kind, values in by_kind.items():
            slots, column = self._live(entry.columns[kind])
            if len(slots) == 0:
                continue
            if op in ("eq", "in"):
                if kind is Kind.INT:
                    values = _exact_ints(values)
                elif kind is Kind.FLOAT:
                    values = _exact_floats(values)
                if not values:
                    continue
                hit = np.isin(column, np.asarray(values, dtype=column.dtype))
            else:
                (value,) = values
                hit = _ordered(column, kind, op, value)
            mask[slots[hit]] = True
        return mask

    def compact(self) -> None:
        """Drop stale entries once they outnumber live ones."""
        for entry in self._keys.values():
            for column in (entry.presence, *entry.columns.values()):
                slots, gens, _ = column.arrays()
                live = self._gen[slots] == gens
                if live.sum() * 2 < len(live):
                    column.keep(live)
