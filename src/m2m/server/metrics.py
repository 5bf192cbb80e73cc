"""Prometheus metrics in the text exposition format (version 0.0.4), written by hand.

Hand-written rather than ``prometheus_client`` on purpose: that library keeps one
process-wide registry, so two servers in one process (tests, or REST and gRPC over
one store) would collide or double-count; here each server owns a :class:`Metrics`
object. It is thread-safe: the REST thread pool and the gRPC workers update it at once.

Exposed series::

    m2m_requests_total{transport,method,route,status}        counter
    m2m_request_duration_seconds{transport,route}            histogram
    m2m_requests_in_flight{transport}                         gauge
    m2m_collections                                           gauge
    m2m_collection_items{collection}                          gauge
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if isinstance(value, float) else str(value)


class Metrics:
    """Request counters, latency histograms and in-flight gauges for one server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.time()
        self._counts: dict[tuple[str, str, str, str], int] = defaultdict(int)
        self._hist: dict[tuple[str, str], list[float]] = {}
        self._in_flight: dict[str, int] = defaultdict(int)

    def begin(self, transport: str) -> None:
        with self._lock:
            self._in_flight[transport] += 1

    def end(self, transport: str, method: str, route: str, status: str | int, seconds: float) -> None:
        """Count one finished request and record its latency."""
        with self._lock:
            self._in_flight[transport] -= 1
            self._counts[(transport, method, route, str(status))] += 1
            hist = self._hist.get((transport, route))
            if hist is None:
                hist = self._hist[(transport, route)] = [0.0] * (len(BUCKETS) + 2)
            # Per-bucket (not cumulative) counts, then sum and count at the end.
            hist[bisect.bisect_left(BUCKETS, seconds)] += 1
            hist[-2] += seconds
            hist[-1] += 1

    def in_flight(self, transport: str) -> int:
        with self._lock:
            return self._in_flight[transport]

    def total_requests(self) -> dict[str, int]:
        """Finished requests per transport."""
        out: dict[str, int] = defaultdict(int)
        with self._lock:
            for (transport, *_), n in self._counts.items():
                out[transport] += n
        return dict(out)

    def render(self, collection_items: dict[str, int]) -> str:
        """The exposition text; ``collection_items`` maps collection names to item counts."""
        with self._lock:
            counts = sorted(self._counts.items())
            hists = sorted((k, list(v)) for k, v in self._hist.items())
            in_flight = sorted(self._in_flight.items())
        lines = [
            "# HELP m2m_requests_total Requests answered, by transport, method, route and status.",
            "# TYPE m2m_requests_total counter",
        ]
        for (transport, method, route, status), n in counts:
            lines.append(
                f"m2m_requests_total{_labels(transport=transport, method=method, route=route, status=status)} {n}"
            )
        lines += [
            "# HELP m2m_request_duration_seconds Request latency in seconds, by transport and route.",
            "# TYPE m2m_request_duration_seconds histogram",
        ]
        for (transport, route), hist in hists:
            cumulative = 0.0
            for bound, n in zip((*BUCKETS, float("inf")), hist[: len(BUCKETS) + 1], strict=True):
                cumulative += n
                labels = _labels(transport=transport, route=route, le=_number(float(bound)))
                lines.append(f"m2m_request_duration_seconds_bucket{labels} {int(cumulative)}")
            base = _labels(transport=transport, route=route)
            lines.append(f"m2m_request_duration_seconds_sum{base} {hist[-2]!r}")
            lines.append(f"m2m_request_duration_seconds_count{base} {int(hist[-1])}")
        lines += [
            "# HELP m2m_requests_in_flight Requests being processed now.",
            "# TYPE m2m_requests_in_flight gauge",
        ]
        lines += [f"m2m_requests_in_flight{_labels(transport=t)} {n}" for t, n in in_flight]
        lines += [
            "# HELP m2m_collections Number of collections.",
            "# TYPE m2m_collections gauge",
            f"m2m_collections {len(collection_items)}",
            "# HELP m2m_collection_items Items stored per collection.",
            "# TYPE m2m_collection_items gauge",
        ]
        lines += [
            f"m2m_collection_items{_labels(collection=name)} {n}"
            for name, n in sorted(collection_items.items())
        ]
        lines.append(
            f"# HELP m2m_uptime_seconds Seconds since the server started.\n# TYPE m2m_uptime_seconds gauge\n"
            f"m2m_uptime_seconds {time.time() - self.started!r}"
        )
        return "\n".join(lines) + "\n"
