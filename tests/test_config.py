"""M2MConfig: defaults of the original M2M, validation naming the field, dict/YAML round trips."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from m2m.config import M2MConfig
from m2m.errors import InvalidArgumentError


def test_defaults_keep_the_original_m2m_values():
    config = M2MConfig()
    assert (config.latent_dim, config.max_splats, config.knn_k, config.n_probe) == (640, 100_000, 64, 5)
    assert config.enable_3_tier_memory is True and config.enable_vulkan is True
    assert config.soc_threshold == 0.8
    assert (config.storage_path, config.collection, config.metric) == ("./m2m_data", "splats", "cosine")


def test_yaml_round_trip_preserves_every_field(tmp_path):
    config = M2MConfig(
        device="cpu",
        latent_dim=384,
        max_splats=1234,
        knn_k=7,
        enable_3_tier_memory=False,
        enable_vulkan=False,
        n_probe=None,
        soc_threshold=0.5,
        storage_path=str(tmp_path / "data"),
        collection="docs.v2",
        metric="ip",
        index_threshold=99,
    )
    path = tmp_path / "m2m.yaml"
    config.to_yaml(path)
    assert yaml.safe_load(path.read_text()) == config.to_dict()  # plain YAML, no python tags
    assert M2MConfig.from_yaml(path) == config
    assert M2MConfig.from_dict(config.to_dict()) == config


def test_empty_yaml_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert M2MConfig.from_yaml(path) == M2MConfig()


def test_unknown_yaml_keys_are_rejected_by_name(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("latent_dim: 128\nlatnet_dim: 256\nmax_splat: 3\n")
    with pytest.raises(InvalidArgumentError, match="latnet_dim") as info:
        M2MConfig.from_yaml(path)
    assert "max_splat" in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("device", "tpu"),
        ("latent_dim", 0),
        ("latent_dim", 3.5),
        ("latent_dim", True),
        ("max_splats", -1),
        ("knn_k", "64"),
        ("n_probe", 0),
        ("soc_threshold", 0.0),
        ("soc_threshold", 1.5),
        ("soc_threshold", float("nan")),
        ("enable_vulkan", "yes"),
        ("enable_3_tier_memory", 1),
        ("storage_path", ""),
        ("collection", "../escape"),
        ("metric", "hamming"),
        ("index_threshold", 0),
    ],
)
def test_invalid_values_raise_naming_the_field(field, value):
    with pytest.raises(InvalidArgumentError, match=field):
        M2MConfig(**{field: value})


def test_invalid_value_in_yaml_is_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("soc_threshold: 2.0\n")
    with pytest.raises(InvalidArgumentError, match="soc_threshold"):
        M2MConfig.from_yaml(path)


def test_non_mapping_and_broken_yaml_are_rejected(tmp_path):
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(InvalidArgumentError, match="mapping"):
        M2MConfig.from_yaml(listing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("latent_dim: [1, 2\n")
    with pytest.raises(InvalidArgumentError, match="YAML"):
        M2MConfig.from_yaml(broken)


def test_vulkan_device_with_vulkan_disabled_is_a_contradiction():
    with pytest.raises(InvalidArgumentError, match="enable_vulkan"):
        M2MConfig(device="vulkan", enable_vulkan=False)


def test_config_is_frozen_and_normalised():
    config = M2MConfig(device="CPU", metric="cosine")
    assert config.device == "cpu"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.latent_dim = 3  # type: ignore[misc]
    assert config.replace(latent_dim=3).latent_dim == 3
    with pytest.raises(InvalidArgumentError, match="nope"):
        config.replace(nope=1)
