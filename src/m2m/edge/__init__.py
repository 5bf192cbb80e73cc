"""Edge deployment: self-contained, memory-mapped snapshots of a collection's index.

``export_edge(collection, folder)`` writes a snapshot (``m2m_config.yaml`` + ``.npy`` files);
``EdgeRouter(config_path=...)`` serves k-NN queries from it with NumPy and PyYAML only, so
a small device needs neither SQLite nor the server stack. See docs/edge.md.
"""

from __future__ import annotations

from typing import Any

from m2m.edge.router import EdgeRouter, SearchResult
from m2m.edge.snapshot import CONFIG_NAME, FORMAT_VERSION, SnapshotCorruptError

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "EdgeRouter",
    "SearchResult",
    "SnapshotCorruptError",
    "export_edge",
]


def __getattr__(name: str) -> Any:
    # export_edge needs the collection machinery; import it only when asked for
    if name == "export_edge":
        from m2m.edge.export import export_edge

        return export_edge
    raise AttributeError(f"module 'm2m.edge' has no attribute {name!r}")
