"""Background prefetcher: loads the list parts a query will read next while it scans.

A query opens a *plan* (the keys it will read, in order: for a batch, every chunk's probed
lists in turn, so the next queries' lists load while the current ones are scored). One
daemon thread walks the open plans in arrival order, reads each key that is neither
resident nor already consumed from the cold store (``os.preadv`` releases the GIL, so the
read overlaps NumPy's scoring), and inserts it into the warm cache *pinned*. The query
unpins a key when it consumes it; closing the plan unpins whatever it did not use. Pinned
bytes are bounded by ``pin_budget``, so the prefetcher can never run further ahead than
that, nor push the warm tier past its budget by more than that.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from m2m.memory.warm_cache import WarmCache

log = logging.getLogger(__name__)


class Plan:
    """The ordered keys one query (or batch) will read; see the module docstring."""

    __slots__ = ("closed", "consumed", "keys", "pinned", "pos")

    def __init__(self, keys: Sequence[Hashable]) -> None:
        self.keys = list(keys)
        self.pos = 0
        self.closed = False
        self.pinned: set[Hashable] = set()
        self.consumed: set[Hashable] = set()


class Prefetcher:
    """One background thread that fills the warm cache ahead of the plans' consumers."""

    def __init__(
        self,
        cache: WarmCache,
        load: Callable[[Hashable], tuple[Any, int]],
        size_of: Callable[[Hashable], int],
        pin_budget: int,
    ) -> None:
        self.cache = cache
        self.load = load
        self.size_of = size_of
        self.pin_budget = int(pin_budget)
        self.cv = threading.Condition()
        self.inflight: set[Hashable] = set()
        self._plans: list[Plan] = []
        self._pinned_bytes = 0
        self._stop = False
        self.loads = 0
        self.bytes_loaded = 0
        self.wasted = 0  # loaded but never consumed by its plan
        self.load_seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="m2m-prefetch", daemon=True)
        self._thread.start()

    # ---- consumer side ------------------------------------------------------------------
    def open(self, keys: Sequence[Hashable]) -> Plan:
        plan = Plan(keys)
        with self.cv:
            self._plans.append(plan)
            self.cv.notify_all()
        return plan

    def close(self, plan: Plan) -> None:
        with self.cv:
            plan.closed = True
            for key in plan.pinned:
                self._unpin(key)
                self.wasted += 1
            plan.pinned.clear()
            if plan in self._plans:
                self._plans.remove(plan)
            self.cv.notify_all()

    def claim(self, key: Hashable, plan: Plan | None) -> tuple[Any | None, bool, float]:
        """Wait for an in-flight load of ``key``; return ``(value or None, was_prefetched, waited_s)``."""
        waited = 0.0
        with self.cv:
            if key in self.inflight:
                t0 = time.perf_counter()
                while key in self.inflight:
                    self.cv.wait()
                waited = time.perf_counter() - t0
            value = self.cache.get(key)
            prefetched = False
            if plan is not None:
                plan.consumed.add(key)
                if key in plan.pinned:
                    plan.pinned.discard(key)
                    self._unpin(key)
                    prefetched = True
                    self.cv.notify_all()
            return value, prefetched, waited

    def _unpin(self, key: Hashable) -> None:
        self._pinned_bytes -= self.size_of(key)
        self.cache.unpin(key)

    # ---- the thread ---------------------------------------------------------------------
    def _next(self) -> tuple[Plan, Hashable] | None:
        for plan in self._plans:
            while plan.pos < len(plan.keys):
                key = plan.keys[plan.pos]
                if key in plan.consumed or key in plan.pinned or key in self.inflight or key in self.cache:
                    plan.pos += 1
                    continue
                if self._pinned_bytes + self.size_of(key) > self.pin_budget:
                    return None  # wait for the consumer to catch up
                plan.pos += 1
                return plan, key
        return None

    def _run(self) -> None:
        while True:
            with self.cv:
                job = self._next()
                while job is None and not self._stop:
                    self.cv.wait()
                    job = self._next()
                if self._stop:
                    return
                plan, key = job
                self.inflight.add(key)
            try:
                t0 = time.perf_counter()
                value, nbytes = self.load(key)
                dt = time.perf_counter() - t0
            except Exception:  # the consumer reads it again and sees the error itself
                log.exception("prefetch of %r failed", key)
                value, nbytes, dt = None, 0, 0.0
            with self.cv:
                self.inflight.discard(key)
                self.load_seconds += dt
                if value is not None:
                    self.loads += 1
                    self.bytes_loaded += nbytes
                    if (
                        not plan.closed
                        and key not in plan.consumed
                        and self.cache.put(key, value, nbytes, pin=True)
                    ):
                        plan.pinned.add(key)
                        self._pinned_bytes += nbytes
                    else:
                        self.wasted += 1
                self.cv.notify_all()

    def stop(self) -> None:
        with self.cv:
            self._stop = True
            self.cv.notify_all()
        self._thread.join(timeout=5)
