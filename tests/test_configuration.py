"""SwinV2Config: serialisation round trips, validation, presets against the released configs, paper model sizes."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import FIXTURES, tiny_config
from transformers import AutoConfig

from swinv2_hf import PRESETS, SwinV2Config, SwinV2ForImageClassification

RELEASE_CONFIGS: dict[str, dict] = json.loads((FIXTURES / "ms_release_configs.json").read_text())["configs"]
# The released classification configs (the SimMIM recipes are not presets).
RELEASED = sorted(name for name in RELEASE_CONFIGS if name.startswith("swinv2_"))
# Constructor argument of the original -> SwinV2Config field.
ORIGINAL_TO_CONFIG = {
    "img_size": "image_size",
    "patch_size": "patch_size",
    "in_chans": "num_channels",
    "embed_dim": "embed_dim",
    "depths": "depths",
    "num_heads": "num_heads",
    "window_size": "window_size",
    "pretrained_window_sizes": "pretrained_window_sizes",
    "mlp_ratio": "mlp_ratio",
    "qkv_bias": "qkv_bias",
    "drop_path_rate": "drop_path_rate",
    "ape": "use_absolute_embeddings",
    "patch_norm": "patch_norm",
}


def non_default_config() -> SwinV2Config:
    """A config that differs from the defaults in many fields, backbone outputs included."""
    return tiny_config(
        image_size=(32, 48),
        pretrained_window_sizes=(2, 2, 0),
        extra_norm_period=1,
        attention_chunk_size=3,
        mim_norm_target_patch_size=5,
        out_features=["stem", "stage2"],
    )


def preset_name(release_yaml: str) -> str:
    """`swinv2_base_patch4_window12to16_192to256_22kto1k_ft.yaml` -> `swinv2_base_window12to16_192to256`."""
    name = release_yaml.removesuffix(".yaml").replace("_patch4", "")
    return re.sub(r"_(22kto1k_ft|22k)$", "", name)


def parameter_count(preset: str) -> int:
    """Parameters of the ImageNet-1K classifier of a preset, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        model = SwinV2ForImageClassification(SwinV2Config.from_preset(preset, num_labels=1000))
    return sum(parameter.numel() for parameter in model.parameters())


# ----------------------------------------------------------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------------------------------------------------------


def test_dict_round_trip() -> None:
    config = non_default_config()
    assert SwinV2Config.from_dict(config.to_dict()).to_dict() == config.to_dict()


def test_save_load_round_trip(tmp_path: Path) -> None:
    config = non_default_config()
    config.save_pretrained(tmp_path)
    loaded = SwinV2Config.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.image_size == [32, 48] and loaded.pretrained_window_sizes == [2, 2, 0]


def test_auto_config_finds_the_registered_type(tmp_path: Path) -> None:
    tiny_config().save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "swinv2_hf"
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is SwinV2Config
    assert AutoConfig.for_model("swinv2_hf").__class__ is SwinV2Config


def test_derived_fields_are_recomputed_on_load(tmp_path: Path) -> None:
    """A config.json edited to four stages keeps its stale derived fields on disk; loading recomputes them."""
    tiny_config().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    assert (saved["num_layers"], saved["hidden_size"]) == (3, 64)
    saved.update(depths=[1, 1, 2, 1], num_heads=[2, 2, 4, 8], pretrained_window_sizes=[0, 0, 0, 0])
    path.write_text(json.dumps(saved))

    loaded = SwinV2Config.from_pretrained(tmp_path)
    assert loaded.num_layers == 4
    assert loaded.hidden_size == 16 * 2**3
    assert loaded.stage_names == ["stem", "stage1", "stage2", "stage3", "stage4"]
    assert loaded.num_hidden_layers == 4


@pytest.mark.parametrize(
    ("arguments", "features", "indices"),
    [
        ({"out_features": ["stem", "stage2"]}, ["stem", "stage2"], [0, 2]),
        ({"out_indices": [1, 3]}, ["stage1", "stage3"], [1, 3]),
        ({}, ["stage3"], [3]),
    ],
    ids=["features", "indices", "default"],
)
def test_backbone_outputs_survive_round_trip(
    tmp_path: Path, arguments: dict[str, Any], features: list[str], indices: list[int]
) -> None:
    tiny_config(**arguments).save_pretrained(tmp_path)
    loaded = SwinV2Config.from_pretrained(tmp_path)
    assert (loaded.out_features, loaded.out_indices) == (features, indices)


def test_attribute_map() -> None:
    config = tiny_config(depths=(1, 1, 2, 1), num_heads=(2, 2, 4, 8), pretrained_window_sizes=(0, 0, 0, 0))
    assert config.num_hidden_layers == 4
    assert config.num_attention_heads == [2, 2, 4, 8]


# ----------------------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"num_heads": (2, 2)}, "num_heads"),
        ({"pretrained_window_sizes": (0, 0)}, "pretrained_window_sizes"),
        ({"num_heads": (3, 2, 4)}, "num_heads"),
        ({"window_size": 0}, "window_size"),
        ({"window_size": -1}, "window_size"),
        ({"mlp_ratio": math.nan}, "mlp_ratio"),
        ({"layer_norm_eps": math.nan}, "layer_norm_eps"),
        ({"drop_path_rate": math.inf}, "drop_path_rate"),
        ({"drop_path_rate": 1.5}, "drop_path_rate"),
        ({"out_features": ["stage9"]}, "out_features"),
        ({"pretrained_window_sizes": (1, 0, 0)}, "pretrained_window_sizes"),
        ({"mim_norm_target_patch_size": 46}, "mim_norm_target_patch_size"),
        ({"attention_chunk_size": -1}, "attention_chunk_size"),
        ({"image_size": 0}, "image_size"),
        ({"num_labels": -1}, "num_labels"),
        ({"num_labels": 2.5}, "num_labels"),
    ],
    ids=[
        "heads-length",
        "pretrained-windows-length",
        "width-not-divisible",
        "window-0",
        "window-negative",
        "mlp-ratio-nan",
        "eps-nan",
        "drop-path-inf",
        "drop-path-1.5",
        "unknown-stage",
        "pretrained-window-1",
        "even-mim-patch",
        "negative-chunk",
        "image-size-0",
        "negative-labels",
        "fractional-labels",
    ],
)
def test_invalid_config_names_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=re.escape(field)):
        tiny_config(**overrides)


def test_zero_labels_still_means_no_head() -> None:
    """0 stays allowed, unlike a negative count: the classifier then returns the pooled features (as timm's)."""
    assert tiny_config(num_labels=0).num_labels == 0
    assert isinstance(SwinV2ForImageClassification(tiny_config(num_labels=0)).classifier, torch.nn.Identity)


# ----------------------------------------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------------------------------------


# Width C and blocks per stage of each size of the paper (arXiv 2111.09883: T, S, B and L as Swin V1's, H with C=352,
# G with C=512 and 42 blocks in stage 3), by the size word of timm's names; every head has 32 channels.
PAPER_SIZES = {
    "tiny": (96, [2, 2, 6, 2]),
    "small": (96, [2, 2, 18, 2]),
    "base": (128, [2, 2, 18, 2]),
    "large": (192, [2, 2, 18, 2]),
    "huge": (352, [2, 2, 18, 2]),
    "giant": (512, [2, 2, 42, 4]),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_has_its_paper_size(name: str) -> None:
    config = SwinV2Config.from_preset(name)
    embed_dim, depths = PAPER_SIZES[name.split("_")[1]]
    assert (config.embed_dim, config.depths) == (embed_dim, depths)
    channels = [config.embed_dim * 2**stage for stage in range(len(config.depths))]
    assert [width // heads for width, heads in zip(channels, config.num_heads)] == [32] * 4


def test_preset_ignores_timm_tag() -> None:
    tagged = SwinV2Config.from_preset("swinv2_tiny_window8_256.ms_in1k")
    assert tagged.to_dict() == SwinV2Config.from_preset("swinv2_tiny_window8_256").to_dict()


def test_preset_overrides_apply() -> None:
    config = SwinV2Config.from_preset("swinv2_tiny_window8_256", num_labels=10, image_size=512, window_size=16)
    assert (config.num_labels, config.image_size, config.window_size) == (10, 512, 16)
    assert (config.embed_dim, config.depths) == (96, [2, 2, 6, 2])


def test_unknown_preset_lists_known_names() -> None:
    with pytest.raises(ValueError, match="swinv2_medium_window8_256") as error:
        SwinV2Config.from_preset("swinv2_medium_window8_256")
    assert all(name in str(error.value) for name in PRESETS)


def test_release_fixture_has_twelve_configs() -> None:
    assert len(RELEASED) == 12


@pytest.mark.parametrize("release_yaml", RELEASED)
def test_released_config_has_equal_preset(release_yaml: str) -> None:
    name = preset_name(release_yaml)
    assert name in PRESETS, f"{release_yaml} has no preset {name}"
    original = RELEASE_CONFIGS[release_yaml]["build_model_kwargs"]
    config = SwinV2Config.from_preset(name)
    for original_name, field in ORIGINAL_TO_CONFIG.items():
        value = original[original_name]
        assert getattr(config, field) == value, f"{name}.{field}: preset {getattr(config, field)!r}, release {value!r}"


# ----------------------------------------------------------------------------------------------------------------------
# The paper's sizes (table 1), on the meta device
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "paper_parameters"), [("swinv2_giant_window12_192", 3.0e9), ("swinv2_huge_window12_192", 658e6)]
)
def test_paper_parameter_count(preset: str, paper_parameters: float) -> None:
    assert parameter_count(preset) == pytest.approx(paper_parameters, rel=0.02)


def test_giant_architecture() -> None:
    config = SwinV2Config.from_preset("swinv2_giant_window12_192")
    assert (config.depths, config.embed_dim, config.extra_norm_period) == ([2, 2, 42, 4], 512, 6)
    channels = [config.embed_dim * 2**stage for stage in range(len(config.depths))]
    assert [width // heads for width, heads in zip(channels, config.num_heads)] == [32] * 4
