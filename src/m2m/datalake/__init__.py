"""The training data lake: stream a collection's vectors into PyTorch, export to Arrow/Parquet.

``pip install 'm2m-vector-search[datalake]'`` (torch, pyarrow). Names are imported
lazily, so ``import m2m.datalake`` needs neither until they are used:

- :class:`SplatLakeDataset`, :class:`SplatLakeLoader`, :func:`make_loader` (torch);
- :func:`export_vectors`, :func:`mixture_from_collection`, :func:`mixture_energy` (NumPy);
- :func:`to_arrow`, :func:`export_parquet`, :func:`import_parquet` (pyarrow).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SplatLakeDataset": "m2m.datalake.dataset",
    "SplatLakeLoader": "m2m.datalake.dataset",
    "make_loader": "m2m.datalake.dataset",
    "importance_probabilities": "m2m.datalake.dataset",
    "FittedSplats": "m2m.datalake.export",
    "VectorSnapshot": "m2m.datalake.export",
    "export_vectors": "m2m.datalake.export",
    "export_parquet": "m2m.datalake.export",
    "import_parquet": "m2m.datalake.export",
    "item_alpha": "m2m.datalake.export",
    "mixture_energy": "m2m.datalake.export",
    "mixture_from_collection": "m2m.datalake.export",
    "to_arrow": "m2m.datalake.export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'm2m.datalake' has no attribute {name!r}")
    if module.endswith(".dataset"):
        from m2m._optional import require

        require("torch", "datalake")
    return getattr(importlib.import_module(module), name)
