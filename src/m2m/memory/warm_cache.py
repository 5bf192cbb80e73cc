"""Warm tier: a RAM cache of list parts under a byte budget, W-TinyLFU-lite eviction.

Policy (a small version of Caffeine's W-TinyLFU, see docs/memory.md):

- every access (hit or miss) counts one in a frequency table that also remembers keys that
  are not resident; every ``age_every`` accesses all counts are halved (aging), so old
  popularity fades and the table stays small;
- a new entry enters a small LRU *window* (``window_fraction`` of the budget, 10%): bursts
  and one-off scans stay there and leave without disturbing the main segment;
- an entry pushed out of the window asks to enter the LRU *main* segment; when main is full
  the candidate duels with main's least recently used entry and only the more frequent one
  stays (ties keep the incumbent), so a scan of rarely used lists cannot flush popular ones.

Entries may be *pinned* (the prefetcher pins what it loaded until the query consumes it);
pinned entries are never evicted. Resident bytes never exceed the budget except by pinned
entries, whose total the prefetcher bounds. All methods are thread-safe.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


class WarmCache:
    """Byte-budgeted cache with frequency-aware admission and eviction."""

    def __init__(
        self, budget_bytes: int, *, window_fraction: float = 0.1, age_every: int | None = None
    ) -> None:
        self.budget = max(0, int(budget_bytes))
        self.window_budget = int(self.budget * window_fraction)
        self._age_every = age_every
        self._window: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._main: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._pins: dict[Hashable, int] = {}
        self._freq: dict[Hashable, int] = {}
        self._accesses = 0
        self._wbytes = 0
        self._mbytes = 0
        self.lock = threading.RLock()
        self.evictions = 0
        self.rejections = 0
        self.peak_bytes = 0
        self.peak_unpinned_bytes = 0

    # ---- frequency ----------------------------------------------------------------------
    def touch(self, key: Hashable) -> int:
        """Count one access to ``key``; returns its (aged) frequency."""
        with self.lock:
            f = self._freq.get(key, 0) + 1
            self._freq[key] = f
            self._accesses += 1
            every = self._age_every or max(256, 10 * (len(self._window) + len(self._main)))
            if self._accesses >= every:
                self._accesses = 0
                self._freq = {k: v >> 1 for k, v in self._freq.items() if v > 1}
            return f

    def frequency(self, key: Hashable) -> int:
        return self._freq.get(key, 0)

    # ---- lookup / insert ----------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        return self._wbytes + self._mbytes

    def __contains__(self, key: Hashable) -> bool:
        return key in self._window or key in self._main

    def __len__(self) -> int:
        return len(self._window) + len(self._main)

    def get(self, key: Hashable) -> Any | None:
        """The cached value (refreshing its recency) or None; does not count frequency."""
        with self.lock:
            for seg in (self._window, self._main):
                hit = seg.get(key)
                if hit is not None:
                    seg.move_to_end(key)
                    return hit[0]
            return None

    def put(self, key: Hashable, value: Any, nbytes: int, *, pin: bool = False) -> bool:
        """Insert ``value`` (``nbytes`` large); returns False when it is not kept (too large)."""
        with self.lock:
            if key in self:
                if pin:
                    self._pins[key] = self._pins.get(key, 0) + 1
                return True
            if nbytes > self.budget or (not pin and self.budget == 0):
                self.rejections += 1
                return False
            self._window[key] = (value, int(nbytes))
            self._wbytes += int(nbytes)
            if pin:
                self._pins[key] = self._pins.get(key, 0) + 1
            self._balance()
            if key not in self:
                return False
            self.peak_bytes = max(self.peak_bytes, self.nbytes)
            self.peak_unpinned_bytes = max(self.peak_unpinned_bytes, self.nbytes - self.pinned_bytes())
            return True

    def unpin(self, key: Hashable) -> None:
        with self.lock:
            n = self._pins.get(key, 0)
            if n <= 1:
                self._pins.pop(key, None)
            else:
                self._pins[key] = n - 1
            if n:
                self._balance()

    def pinned_bytes(self) -> int:
        with self.lock:
            total = 0
            for key in self._pins:
                hit = self._window.get(key) or self._main.get(key)
                if hit is not None:
                    total += hit[1]
            return total

    def clear(self) -> None:
        with self.lock:
            self._window.clear()
            self._main.clear()
            self._pins.clear()
            self._wbytes = self._mbytes = 0

    # ---- eviction -----------------------------------------------------------------------
    def _oldest_unpinned(self, seg: OrderedDict) -> Hashable | None:
        for key in seg:
            if key not in self._pins:
                return key
        return None

    def _evict(self, seg: OrderedDict, key: Hashable) -> None:
        _, n = seg.pop(key)
        if seg is self._window:
            self._wbytes -= n
        else:
            self._mbytes -= n
        self.evictions += 1

    def _balance(self) -> None:
        # window overflow: its oldest unpinned entries ask to enter main
        while self._wbytes > self.window_budget:
            cand = self._oldest_unpinned(self._window)
            if cand is None:
                break
            value, n = self._window.pop(cand)
            self._wbytes -= n
            self._offer_main(cand, value, n)
        # whole budget: evict least recent unpinned entries, main first
        while self.nbytes > self.budget:
            victim = self._oldest_unpinned(self._main)
            seg = self._main
            if victim is None:
                victim, seg = self._oldest_unpinned(self._window), self._window
            if victim is None:
                break  # only pinned entries left (bounded by the prefetcher)
            self._evict(seg, victim)

    def _offer_main(self, cand: Hashable, value: Any, n: int) -> None:
        room = self.budget - self._wbytes
        f = self._freq.get(cand, 0)
        while self._mbytes + n > room:
            victim = self._oldest_unpinned(self._main)
            if victim is None or self._freq.get(victim, 0) >= f:
                self.evictions += 1  # the candidate loses the duel
                return
            self._evict(self._main, victim)
        self._main[cand] = (value, n)
        self._mbytes += n
