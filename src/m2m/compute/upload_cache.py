"""A byte-budgeted LRU of device copies of read-only host arrays, shared by the GPU backends.

A writable NumPy array may change between calls, so it is uploaded every time; a
read-only one is uploaded once and kept until the budget pushes it out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import numpy as np


class _Sized(Protocol):
    nbytes: int


Block = TypeVar("Block", bound=_Sized)


class UploadCache(Generic[Block]):
    """Device blocks keyed by the host array's address, shape, strides and dtype."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = int(budget_bytes)
        self._entries: OrderedDict[tuple, tuple[np.ndarray, Block]] = OrderedDict()
        self._bytes = 0

    def get(
        self,
        arr: np.ndarray,
        sq_norms: np.ndarray | None,
        upload: Callable[[np.ndarray, np.ndarray | None], Block],
    ) -> Block:
        """The cached block for ``arr``, uploading it (and evicting the oldest) on a miss."""
        if arr.flags.writeable or self.budget_bytes <= 0:
            return upload(arr, sq_norms)
        key = (arr.__array_interface__["data"][0], arr.shape, arr.strides, arr.dtype.str, sq_norms is None)
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
            return hit[1]
        block = upload(arr, sq_norms)
        self._entries[key] = (arr, block)  # holding arr keeps its address from being reused
        self._bytes += block.nbytes
        while self._bytes > self.budget_bytes and len(self._entries) > 1:
            _, (_, old) = self._entries.popitem(last=False)
            self._bytes -= old.nbytes
        return block

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
