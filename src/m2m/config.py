"""``M2MConfig``: the settings of the seed-compatible engine (``m2m.create_m2m``).

A frozen dataclass, validated on construction: a bad value raises
:class:`~m2m.errors.InvalidArgumentError` naming the field. It round-trips through
plain dicts and YAML (``safe_dump`` / ``safe_load``); unknown keys are rejected, so a
typo in a config file fails loudly instead of being ignored.

Fields kept from the original M2M (``latent_dim``, ``max_splats``, ``knn_k``,
``enable_3_tier_memory``, ``enable_vulkan``, ``n_probe``, ``soc_threshold``) keep
their names and defaults, so configs written for it load here.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

from m2m.errors import InvalidArgumentError
from m2m.types import Metric

__all__ = ["DEVICES", "M2MConfig"]

DEVICES = ("auto", "cpu", "cuda", "vulkan")


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"M2MConfig.{name} must be a positive integer, got {value!r}")
    return int(value)


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"M2MConfig.{name} must be true or false, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class M2MConfig:
    """Settings of one :class:`~m2m.engine.M2MEngine`.

    - ``device``: ``"auto"`` (best available), ``"cpu"``, ``"cuda"`` or ``"vulkan"``. An
      accelerator that is not available falls back to the CPU with one warning.
    - ``latent_dim``: dimension of the stored vectors.
    - ``max_splats``: the most items the engine's collection may hold; a batch that would
      pass it is refused whole with :class:`~m2m.errors.CapacityError`.
    - ``knn_k``: default ``k`` of :meth:`~m2m.engine.M2MEngine.search`.
    - ``enable_3_tier_memory``: accepted for compatibility and reported by
      ``get_statistics``; the store's tiers are fixed (SQLite on disk, the RAM mirror,
      the index), this flag does not change them.
    - ``enable_vulkan``: allow a Vulkan (wgpu) backend when CUDA is asked for but missing.
    - ``n_probe``: fine lists scanned per query once the HRM2 index exists; ``None``
      uses the index's calibrated default (its ``default_recall``).
    - ``soc_threshold``: criticality threshold in (0, 1] for the splat layer's SOC
      consolidation; stored and reported, used when the splat layer is wired in.
    - ``storage_path``: data folder (an ``m2m.Client`` path).
    - ``collection``: name of the collection the engine reads and writes.
    - ``metric``: ``"cosine"``, ``"ip"`` or ``"l2"`` (used when the collection is created).
    - ``index_threshold``: items at which the HRM2 index is built in the background.
    """

    device: str = "auto"
    latent_dim: int = 640
    max_splats: int = 100_000
    knn_k: int = 64
    enable_3_tier_memory: bool = True
    enable_vulkan: bool = True
    n_probe: int | None = 5
    soc_threshold: float = 0.8
    storage_path: str = "./m2m_data"
    collection: str = "splats"
    metric: str = "cosine"
    index_threshold: int = 20_000

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise in place once
        device = self.device.lower() if isinstance(self.device, str) else self.device
        if device not in DEVICES:
            raise InvalidArgumentError(
                f"M2MConfig.device must be one of {', '.join(DEVICES)}, got {self.device!r}"
            )
        set_(self, "device", device)
        if device == "vulkan" and self.enable_vulkan is False:
            raise InvalidArgumentError("M2MConfig.device='vulkan' contradicts M2MConfig.enable_vulkan=False")
        for name in ("latent_dim", "max_splats", "knn_k", "index_threshold"):
            _positive_int(name, getattr(self, name))
        if self.n_probe is not None:
            _positive_int("n_probe", self.n_probe)
        _boolean("enable_3_tier_memory", self.enable_3_tier_memory)
        _boolean("enable_vulkan", self.enable_vulkan)
        soc = self.soc_threshold
        if (
            isinstance(soc, bool)
            or not isinstance(soc, int | float)
            or not (math.isfinite(soc) and 0.0 < soc <= 1.0)
        ):
            raise InvalidArgumentError(f"M2MConfig.soc_threshold must be a number in (0, 1], got {soc!r}")
        set_(self, "soc_threshold", float(soc))
        if not isinstance(self.storage_path, str | os.PathLike) or not str(self.storage_path):
            raise InvalidArgumentError(
                f"M2MConfig.storage_path must be a non-empty path, got {self.storage_path!r}"
            )
        set_(self, "storage_path", os.fspath(self.storage_path))
        from m2m.storage.validation import collection_name

        try:
            collection_name(self.collection)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"M2MConfig.collection: {exc}") from None
        try:
            set_(self, "metric", Metric.parse(self.metric).value)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"M2MConfig.metric: {exc}") from None

    # -- dicts and YAML ----------------------------------------------------------------------------

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_dict(self) -> dict[str, Any]:
        """Plain ``{field: value}`` (str, int, float, bool, None only)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> M2MConfig:
        """A config from a mapping; unknown keys raise :class:`InvalidArgumentError` listing them."""
        if not isinstance(data, dict):
            raise InvalidArgumentError(f"M2MConfig needs a mapping of settings, got {type(data).__name__}")
        known = set(cls.field_names())
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise InvalidArgumentError(
                f"unknown M2MConfig keys: {', '.join(unknown)}; valid keys are {', '.join(cls.field_names())}"
            )
        return cls(**data)

    def replace(self, **changes: Any) -> M2MConfig:
        """A copy with some fields changed (validated again)."""
        unknown = sorted(set(changes) - set(self.field_names()))
        if unknown:
            raise InvalidArgumentError(f"unknown M2MConfig keys: {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_yaml(self, path: str | os.PathLike[str]) -> None:
        """Write the config as YAML (``yaml.safe_dump``, keys in field order)."""
        import yaml

        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> M2MConfig:
        """Read a YAML file written by ``to_yaml`` (or by hand); an empty file gives the defaults."""
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise InvalidArgumentError(
                f"M2MConfig file {os.fspath(path)!r} is not valid YAML: {exc}"
            ) from None
        return cls.from_dict({} if data is None else data)
