"""The seed-compatible engine: ``create_m2m(M2MConfig(...))`` and ``M2MEngine``.

``M2MEngine`` is a thin facade over one :class:`~m2m.collection.Collection` (the same one
the servers and integrations use), keeping the original M2M's calls working::

    config = M2MConfig(device="cuda", latent_dim=640, max_splats=100000, enable_vulkan=True)
    m2m = create_m2m(config)
    n_added = m2m.add_splats(embeddings)           # torch or NumPy (n, 640)
    results = m2m.search(query, k=10)              # SearchResult(ids, scores, vectors)
    loader = m2m.export_to_dataloader(batch_size=32, importance_sampling=True)

Behaviour worth knowing:

- **Device.** ``cuda`` or ``vulkan`` that is not available (no CUDA device; no hardware
  Vulkan adapter; Vulkan is tried for ``cuda`` when ``enable_vulkan``) falls back to the
  CPU with exactly one ``RuntimeWarning`` per engine saying what was missing. ``auto``
  takes the best available without warning. Collections search with NumPy today; the
  resolved device is reported by ``get_statistics`` and pins data lake batches for CUDA.
- **Capacity.** A batch that would take the collection past ``max_splats`` is refused
  whole with :class:`~m2m.errors.CapacityError`; nothing is written. The check and the
  write hold the engine's lock, so threads sharing an engine cannot overshoot; writers
  in other processes or through other handles are not counted until they commit.
- **Ids.** Without ``ids``, items get decimal strings ``"0"``, ``"1"``, ... continuing after
  the largest decimal id already stored, so ids of one engine grow monotonically.
- **Scores.** ``search`` returns similarities, higher is better: ``1 − distance`` for cosine
  (the cosine similarity), ``−distance`` for ip (the inner product) and l2 (minus the
  squared distance).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import warnings
from typing import Any, NamedTuple

import numpy as np

from m2m.client import Client
from m2m.config import M2MConfig
from m2m.errors import CapacityError, IdAlreadyExistsError, InvalidArgumentError
from m2m.index_manager import IndexSettings
from m2m.types import Metric

__all__ = ["M2MEngine", "SearchResult", "create_m2m", "resolve_device"]

logger = logging.getLogger(__name__)

_PROBES: dict[str, tuple[bool, str]] = {}
_PROBE_LOCK = threading.Lock()
_MAX_AUTO_ID_DIGITS = 18


class SearchResult(NamedTuple):
    """Neighbours of one query (1-D query) or of each query (2-D), best first.

    ``ids``: list of ids (``list[list[str]]`` for a batch); ``scores``: similarities,
    higher is better, shape ``(k,)`` or ``(n_queries, k)``; ``vectors``: the stored
    vectors, ``(k, d)`` or ``(n_queries, k, d)``. Torch queries give torch tensors on the
    query's device, anything else NumPy arrays. Rows shorter than k (a filter matched
    fewer items) are padded with id ``None``, score ``-inf`` and a zero vector.
    """

    ids: list
    scores: Any
    vectors: Any


# -- devices ------------------------------------------------------------------------------------------


def _probe(kind: str) -> tuple[bool, str]:
    """Whether a hardware ``cuda`` / ``vulkan`` device is usable, and why not (cached per process)."""
    with _PROBE_LOCK:
        if kind in _PROBES:
            return _PROBES[kind]
        if kind == "cuda":
            if importlib.util.find_spec("torch") is None:
                found = (False, "the 'torch' package is not installed")
            else:
                import torch

                found = (True, "") if torch.cuda.is_available() else (False, "torch reports no CUDA device")
        elif importlib.util.find_spec("wgpu") is None:
            found = (False, "the 'wgpu' package is not installed")
        else:
            from m2m.compute.wgpu_backend import find_adapter

            try:
                adapter, why = find_adapter(backend_type="vulkan", hardware_only=True)
            except Exception as exc:  # a broken driver: report it, fall back
                adapter, why = None, f"wgpu failed to list adapters: {exc}"
            found = (adapter is not None, why)
        _PROBES[kind] = found
        return found


def _backend(name: str) -> Any:
    from m2m.compute import get_backend

    with warnings.catch_warnings():  # the probe decided; its warning is ours to give
        warnings.simplefilter("ignore", RuntimeWarning)
        return get_backend(name)


def resolve_device(device: str, enable_vulkan: bool) -> tuple[str, Any, str | None]:
    """``(resolved device, compute backend, fallback reason or None)`` for a config's device.

    Warns once (``RuntimeWarning``) when an explicitly requested accelerator is missing.
    """
    if device == "cpu":
        return "cpu", _backend("cpu"), None
    tried: list[str] = []
    kinds = ["cuda", "vulkan"] if device in ("cuda", "auto") else ["vulkan"]
    if not enable_vulkan:
        kinds = [k for k in kinds if k != "vulkan"]
    for kind in kinds:
        ok, why = _probe(kind)
        if ok:
            return kind, _backend(kind), None
        tried.append(f"{kind}: {why}")
    reason = "; ".join(tried) or "no accelerator enabled"
    if device != "auto":
        warnings.warn(
            f"M2MConfig.device={device!r} is not available ({reason}); falling back to the CPU (NumPy backend)",
            RuntimeWarning,
            stacklevel=4,  # the caller of create_m2m / M2MEngine
        )
    else:
        logger.info("device 'auto' resolved to the CPU (%s)", reason)
    return "cpu", _backend("cpu"), reason


# -- conversions --------------------------------------------------------------------------------------


def _is_torch(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def _to_numpy(value: Any, name: str) -> np.ndarray:
    if _is_torch(value):
        value = value.detach().to("cpu").float().numpy()
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"{name} must be a numeric array or tensor") from exc
    return arr


def _rss_bytes() -> dict[str, int]:
    """Resident and peak memory of this process (``/proc/self/status``, else ``getrusage``)."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out["rss_bytes" if key == "VmRSS" else "peak_rss_bytes"] = int(value.split()[0]) * 1024
    except OSError:
        pass
    if "peak_rss_bytes" not in out:
        try:
            import resource  # Unix only; ru_maxrss is in KiB on Linux
        except ImportError:
            return out
        out["peak_rss_bytes"] = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    return out


# -- the engine ------------------------------------------------------------------------------------------


class M2MEngine:
    """One collection behind the original M2M calls; see the module docstring."""

    def __init__(self, config: M2MConfig | None = None) -> None:
        config = config if config is not None else M2MConfig()
        if not isinstance(config, M2MConfig):
            raise InvalidArgumentError(f"config must be an M2MConfig, got {type(config).__name__}")
        self.config = config
        self.device, self.backend, self.device_fallback = resolve_device(config.device, config.enable_vulkan)
        self.client = Client(
            config.storage_path, index_settings=IndexSettings(threshold=config.index_threshold)
        )
        try:
            self.collection = self.client.get_or_create_collection(
                config.collection, dim=config.latent_dim, metric=config.metric
            )
        except BaseException:
            self.client.close()
            raise
        self._lock = threading.Lock()  # capacity check + write
        self._splat_lock = threading.Lock()  # the fitted mixture cache
        self._splats: Any = None
        self._next_id = self._scan_next_id()

    def __repr__(self) -> str:
        return f"M2MEngine(collection={self.collection.name!r}, n={self.collection.count()}, device={self.device!r})"

    def __enter__(self) -> M2MEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Save the index and close the store."""
        self.client.close()

    # -- writes ----------------------------------------------------------------------------------------

    def _scan_next_id(self) -> int:
        ids = self.collection.get(include=[])["ids"]
        return 1 + max((_decimal(i) for i in ids), default=-1)

    def add_splats(
        self,
        embeddings: Any,
        ids: list[str] | None = None,
        metadatas: list[dict[str, Any] | None] | None = None,
        documents: list[str | None] | None = None,
    ) -> int:
        """Store new items (a torch tensor or array ``(n, latent_dim)``); returns how many were added.

        Raises :class:`~m2m.errors.CapacityError` (nothing written) when the batch would pass
        ``max_splats``, and the collection's typed errors for bad vectors or existing ids.
        """
        vectors = _to_numpy(embeddings, "embeddings")
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        n = int(vectors.shape[0]) if vectors.ndim == 2 else 0
        limit = self.config.max_splats
        with self._lock:
            count = self.collection.count()
            if count + n > limit:
                raise CapacityError(
                    f"max_splats={limit} would be exceeded: the collection holds {count} items and this "
                    f"batch adds {n}; nothing was written"
                )
            auto = ids is None
            for attempt in (0, 1):
                batch_ids = [str(self._next_id + i) for i in range(n)] if auto else ids
                try:
                    self.collection.add(batch_ids, vectors, metadatas, documents)
                    break
                except IdAlreadyExistsError:
                    if not auto or attempt:
                        raise
                    self._next_id = self._scan_next_id()  # another writer used these numbers
            top = max((_decimal(i) for i in batch_ids), default=-1) if not auto else self._next_id + n - 1
            self._next_id = max(self._next_id, top + 1)
        return n

    # -- reads -----------------------------------------------------------------------------------------

    def search(
        self,
        query: Any,
        k: int | None = None,
        *,
        where: dict | None = None,
        n_probe: int | None = None,
        target_recall: float | None = None,
        include_vectors: bool = True,
    ) -> SearchResult:
        """The ``k`` (default ``knn_k``) most similar stored items to each query; see :class:`SearchResult`.

        With an HRM2 index, ``n_probe`` (default ``config.n_probe``) lists are scanned, or
        the fewest that reach ``target_recall``; below ``index_threshold`` items the search
        is exact.
        """
        from m2m.storage import validation as check

        torch_in = _is_torch(query)
        q = _to_numpy(query, "query")
        single = q.ndim == 1
        dim = self.config.latent_dim
        queries = check.embeddings(q[None, :] if single else q, dim, name="query")
        k = self.config.knn_k if k is None else k
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InvalidArgumentError(f"k must be a positive integer, got {k!r}")
        kk = min(int(k), self.collection.count())
        n_q = queries.shape[0]
        ids: list[list[Any]] = [[] for _ in range(n_q)]
        scores = np.full((n_q, kk), -np.inf, dtype=np.float32)
        vectors = np.zeros((n_q, kk, dim), dtype=np.float32)
        if kk > 0:
            include = ["distances", "embeddings"] if include_vectors else ["distances"]
            if target_recall is None:
                n_probe = self.config.n_probe if n_probe is None else n_probe
            res = self.collection.query(
                queries,
                n_results=kk,
                where=where,
                include=include,
                n_probe=n_probe,
                target_recall=target_recall,
            )
            cosine = self.collection.metric is Metric.COSINE
            for qi in range(n_q):
                row_ids = res["ids"][qi]
                m = len(row_ids)
                ids[qi] = list(row_ids) + [None] * (kk - m)
                d = np.asarray(res["distances"][qi], dtype=np.float32)
                scores[qi, :m] = (1.0 - d) if cosine else -d
                if include_vectors and m:
                    vectors[qi, :m] = np.stack(res["embeddings"][qi])
        out_ids: list = ids[0] if single else ids
        out_scores: Any = scores[0] if single else scores
        out_vectors: Any = vectors[0] if single else vectors
        if torch_in:
            import torch

            device = query.device
            out_scores = torch.from_numpy(np.ascontiguousarray(out_scores)).to(device)
            out_vectors = torch.from_numpy(np.ascontiguousarray(out_vectors)).to(device)
        return SearchResult(out_ids, out_scores, out_vectors)

    def count(self) -> int:
        return self.collection.count()

    # -- splats ----------------------------------------------------------------------------------------

    def fitted_splats(self) -> Any:
        """The vMF mixture fitted to the collection (``m2m.datalake.mixture_from_collection``),
        cached until the collection changes."""
        from m2m.datalake.export import collection_version, mixture_from_collection

        with self._splat_lock:
            version = collection_version(self.collection)
            if self._splats is None or self._splats.version != version:
                self._splats = mixture_from_collection(self.collection)
            return self._splats

    def splat_params(self, ids: list[str]) -> dict[str, np.ndarray]:
        """α and κ of items by id: ``{"alpha", "kappa", "splat"}`` arrays aligned with ``ids``.

        From the collection's splat layer (``Collection.splat_params``): α from usage and
        feedback (1 for an item never returned or rated), κ the item's cluster κ scaled by
        feedback, ``splat`` the cluster's index. Without a splat layer: α = 1 and κ of the
        item's cluster in ``fitted_splats``.
        Unknown ids raise :class:`~m2m.errors.ItemNotFoundError`.
        """
        own = getattr(self.collection, "splat_params", None)
        if own is not None:  # the collection's splat layer: α from usage, κ per item
            id_list = [ids] if isinstance(ids, str) else list(ids)
            alpha, kappa = own(id_list)
            return {"alpha": alpha, "kappa": kappa, "splat": self.collection.splat_clusters(id_list)}
        from m2m.datalake.export import item_alpha
        from m2m.errors import ItemNotFoundError

        fitted = self.fitted_splats()
        id_list = [ids] if isinstance(ids, str) else list(ids)
        snapshot_ids = self.collection.get(include=[])["ids"]
        position = {item: i for i, item in enumerate(snapshot_ids)}
        missing = [i for i in id_list if i not in position]
        if missing:
            raise ItemNotFoundError(f"ids not found in {self.collection.name!r}: {missing[:5]}")
        rows = np.asarray([position[i] for i in id_list], dtype=np.int64)
        labels = fitted.labels[rows]
        return {
            "alpha": item_alpha(self.collection, id_list),
            "kappa": fitted.mixture.kappa[labels],
            "splat": labels,
        }

    def generate(
        self,
        n: int,
        near: Any = None,
        *,
        steps: int = 200,
        step_size: float | None = None,
        temperature: float = 1.0,
        seed: int | None = None,
        source: str = "items",
    ) -> Any:
        """n synthetic unit vectors by Langevin sampling on the splat energy
        (``Collection.generate``; docs/splats.md). ``near``: an id, or a vector (NumPy or
        torch). A torch ``near`` gives a torch tensor on its device, otherwise NumPy."""
        near_np = _to_numpy(near, "near") if _is_torch(near) else near
        out = self.collection.generate(
            n,
            near_np,
            steps=steps,
            step_size=step_size,
            temperature=temperature,
            seed=seed,
            source=source,
        )
        if _is_torch(near):
            import torch

            return torch.from_numpy(out).to(near.device)
        return out

    # -- data lake -------------------------------------------------------------------------------------

    def export_to_dataloader(
        self,
        batch_size: int = 32,
        generate_samples: bool = False,
        importance_sampling: bool = False,
        shuffle: bool = False,
        seed: int | None = None,
        num_workers: int = 0,
        **options: Any,
    ) -> Any:
        """A torch ``DataLoader`` over the collection (:class:`m2m.datalake.SplatLakeDataset`).

        Each batch is a dict (``"vectors"``, ``"weights"``, ``"generated"``, ``"index"``,
        optionally ``"ids"``, ``"metadatas"``); ``options`` go to the dataset
        (``generated_fraction``, ``num_samples``, ``include_ids``, ``prefetch``, ...).
        """
        from m2m.datalake.dataset import SplatLakeDataset, make_loader

        dataset = SplatLakeDataset(
            self.collection,
            batch_size,
            shuffle=shuffle,
            seed=seed,
            importance_sampling=importance_sampling,
            generate_samples=generate_samples,
            **options,
        )
        return make_loader(dataset, num_workers=num_workers, pin_memory=self.device == "cuda")

    # -- statistics ------------------------------------------------------------------------------------

    def get_statistics(self) -> dict[str, Any]:
        """Counts, index shape, memory and device; splat statistics when the splat layer has them."""
        collection = self.collection
        count = collection.count()
        index = collection.index_stats()
        mirror = collection._mirror  # private: proposed public Collection.memory_stats()
        memory = _rss_bytes()
        memory["mirror_vector_bytes_live"] = int(count * collection.dim * 4)
        memory["mirror_vector_bytes_allocated"] = int(mirror.vectors.nbytes)
        memory["index_bytes"] = None if index is None else index.get("bytes")
        splats = collection.splat_statistics()
        # The near-duplicate join costs seconds on 100K items: computed here only for small
        # collections, otherwise the last one computed (collection.criticality()) is reported.
        criticality = (
            collection.criticality(self.config.soc_threshold)
            if count <= CRITICALITY_INLINE_MAX
            else splats.get("criticality")
        )
        return {
            "n_splats": count,
            "max_splats": self.config.max_splats,
            "capacity_used": count / self.config.max_splats,
            "latent_dim": collection.dim,
            "metric": collection.metric.value,
            "collection": collection.name,
            "storage_path": os.fspath(self.client.path),
            "device": {
                "requested": self.config.device,
                "resolved": self.device,
                "backend": getattr(self.backend, "name", type(self.backend).__name__),
                "fallback_reason": self.device_fallback,
            },
            "search": "hrm2" if index is not None else "exact",
            "index": index,
            "memory": memory,
            "enable_3_tier_memory": self.config.enable_3_tier_memory,
            "splats": splats,
            "criticality": criticality,
            "tiers": None if index is None else index.get("tiers"),
            "config": self.config.to_dict(),
        }


CRITICALITY_INLINE_MAX = 20_000


def _decimal(item_id: Any) -> int:
    """The value of an id written in ASCII decimal digits, else -1."""
    if (
        isinstance(item_id, str)
        and item_id.isascii()
        and item_id.isdigit()
        and len(item_id) <= _MAX_AUTO_ID_DIGITS
    ):
        return int(item_id)
    return -1


def create_m2m(config: M2MConfig | None = None) -> M2MEngine:
    """Open (or create) the engine's collection under ``config.storage_path``."""
    return M2MEngine(config)
