"""Reading a checkpoint of another implementation together with the architecture and preprocessing it implies.

A source is read into a `SourceCheckpoint`: this package's config, the state dict in this package's layout (original
buffers checked against the config, then dropped), the evaluation preprocessing and what was done on the way.
The architecture comes from, in this order: `--config` (the original repository's YAML, or JSON: this package's
config, transformers' Swinv2 config or the original constructor arguments), `--model-name` (a release or preset
name), the folder's own config.json (timm, transformers).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from .configuration_swinv2_hf import SwinV2Config
from .conversion import CheckpointError, check_original_buffers, config_from_original, convert_state_dict, read_checkpoint
from .releases import config_from_model_name

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The original evaluates with a resize to 256/224 of the crop and a centre crop (`TEST.CROP`); timm's crop_pct.
ORIGINAL_CROP_FRACTION = 224 / 256
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")

# The original repository's config defaults (config.py `_C`) for the keys a SwinV2 YAML may leave out.
_ORIGINAL_DEFAULTS: dict[str, Any] = {
    "DATA.IMG_SIZE": 224, "MODEL.NUM_CLASSES": 1000, "MODEL.DROP_RATE": 0.0, "MODEL.DROP_PATH_RATE": 0.1,
    "MODEL.SWINV2.PATCH_SIZE": 4, "MODEL.SWINV2.IN_CHANS": 3, "MODEL.SWINV2.MLP_RATIO": 4.0,
    "MODEL.SWINV2.QKV_BIAS": True, "MODEL.SWINV2.APE": False, "MODEL.SWINV2.PATCH_NORM": True,
    "MODEL.SWINV2.PRETRAINED_WINDOW_SIZES": [0, 0, 0, 0],
}  # fmt: skip
_ORIGINAL_REQUIRED = ("MODEL.SWINV2.EMBED_DIM", "MODEL.SWINV2.DEPTHS", "MODEL.SWINV2.NUM_HEADS", "MODEL.SWINV2.WINDOW_SIZE")


@dataclass
class Preprocessing:
    """How the source evaluates images: crop fraction (1.0: resize to the input size), resampling and statistics."""

    crop_fraction: float = ORIGINAL_CROP_FRACTION
    resample: str = "bicubic"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD


@dataclass
class SourceCheckpoint:
    """A checkpoint read from `source`, in this package's layout, with everything a converted folder needs."""

    source: str
    config: SwinV2Config
    state_dict: dict[str, torch.Tensor]
    preprocessing: Preprocessing
    model_name: str | None
    source_keys: int
    buffers_checked: int = 0
    transformers_folder: Path | None = None  # where transformers' own model can be run for verification
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------------------------------


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _read_original_yaml(path: Path) -> dict[str, Any]:
    """The YAML's keys, flattened (`MODEL.SWINV2.EMBED_DIM`), its `BASE` files merged under it as the original does."""
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise CheckpointError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(tree, Mapping):
        raise CheckpointError(f"{path} is not a config of the original repository (a YAML mapping).")
    merged: dict[str, Any] = {}
    for base in tree.get("BASE", []) or []:
        if base:
            merged.update(_read_original_yaml(path.parent / base))
    merged.update(_flatten({key: value for key, value in tree.items() if key != "BASE"}))
    return merged


def config_from_original_yaml(path: Path) -> SwinV2Config:
    """The config of an original repository YAML (`configs/swinv2/*.yaml`, or a SimMIM one).

    Raises:
        CheckpointError: another model type, or a required key missing (named).
    """
    values = {**_ORIGINAL_DEFAULTS, **_read_original_yaml(path)}
    model_type = values.get("MODEL.TYPE", "swinv2")
    if model_type != "swinv2":
        raise CheckpointError(f"{path} describes MODEL.TYPE {model_type!r}, not a SwinV2 (swinv2) model.")
    missing = [key for key in _ORIGINAL_REQUIRED if key not in values]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}; a SwinV2 config of the original repository sets them.")
    swinv2 = {key.removeprefix("MODEL.SWINV2."): value for key, value in values.items() if key.startswith("MODEL.SWINV2.")}
    overrides: dict[str, Any] = {}
    if values.get("MODEL.SIMMIM.NORM_TARGET.ENABLE") is False:
        overrides["mim_norm_target_patch_size"] = 0
    elif "MODEL.SIMMIM.NORM_TARGET.PATCH_SIZE" in values:
        overrides["mim_norm_target_patch_size"] = values["MODEL.SIMMIM.NORM_TARGET.PATCH_SIZE"]
    return config_from_original(
        {
            "img_size": values["DATA.IMG_SIZE"], "patch_size": swinv2["PATCH_SIZE"], "in_chans": swinv2["IN_CHANS"],
            "embed_dim": swinv2["EMBED_DIM"], "depths": swinv2["DEPTHS"], "num_heads": swinv2["NUM_HEADS"],
            "window_size": swinv2["WINDOW_SIZE"], "pretrained_window_sizes": swinv2["PRETRAINED_WINDOW_SIZES"],
            "mlp_ratio": swinv2["MLP_RATIO"], "qkv_bias": swinv2["QKV_BIAS"], "ape": swinv2["APE"],
            "patch_norm": swinv2["PATCH_NORM"], "num_classes": values["MODEL.NUM_CLASSES"],
            "drop_rate": values["MODEL.DROP_RATE"], "drop_path_rate": values["MODEL.DROP_PATH_RATE"],
        },
        **overrides,
    )  # fmt: skip


def config_from_transformers(values: Mapping[str, Any]) -> SwinV2Config:
    """This package's config from transformers' Swinv2Config values (the same field names, but its own type)."""
    values = {key: value for key, value in values.items() if not key.startswith("_")}
    for key in ("model_type", "architectures", "transformers_version", "num_layers", "hidden_size", "stage_names",
                "torch_dtype", "dtype", "auto_map"):
        values.pop(key, None)
    pretrained = values.get("pretrained_window_sizes")
    if pretrained is not None and not any(pretrained):
        # transformers' default is four zeros whatever the number of stages.
        values["pretrained_window_sizes"] = [0] * len(values.get("depths", pretrained))
    return SwinV2Config(**values)


def config_from_json(path: Path) -> SwinV2Config:
    """This package's config.json, transformers' Swinv2 config.json, or the original constructor arguments (bare, or
    under `constructor_kwargs` / `build_model_kwargs` as the reference fixtures keep them)."""
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}") from error
    model_type = values.get("model_type")
    if model_type == SwinV2Config.model_type:
        return SwinV2Config.from_dict(values)
    if model_type == "swinv2":
        return config_from_transformers(values)
    if model_type is not None:
        raise CheckpointError(f"{path} is the config of a {model_type!r} model, not of SwinV2.")
    for container in ("constructor_kwargs", "build_model_kwargs", "model_args"):
        if isinstance(values.get(container), Mapping):
            values = values[container]
    if "embed_dim" not in values or "depths" not in values:
        raise CheckpointError(f"{path} names no SwinV2 architecture (embed_dim, depths, num_heads, window_size, ...).")
    return config_from_original(values)


def config_from_file(path: str | os.PathLike) -> SwinV2Config:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Config file {path} does not exist.")
    return config_from_original_yaml(path) if path.suffix in (".yaml", ".yml") else config_from_json(path)


def _named_config(model_name: str | None, config_path: str | os.PathLike | None) -> SwinV2Config | None:
    if config_path is not None:
        return config_from_file(config_path)
    if model_name is not None:
        try:
            return config_from_model_name(model_name)
        except ValueError as error:
            raise CheckpointError(str(error)) from error
    return None


# ----------------------------------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------------------------------


def folder_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The weights of a saved folder: single file or shards listed by an index."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index_file = folder / index_name
        if index_file.is_file():
            shards = sorted(set(json.loads(index_file.read_text())["weight_map"].values()))
            return {key: value for shard in shards for key, value in read_checkpoint(folder / shard).items()}
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return read_checkpoint(folder / name)
    raise CheckpointError(f"{folder} holds no weights ({', '.join(WEIGHT_FILES)} or a sharded index).")


def _read_folder_config(folder: Path) -> dict[str, Any]:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{folder} has no config.json; pass --model-name or --config with a bare checkpoint.")
    return json.loads(config_file.read_text())


def _timm_config(values: Mapping[str, Any]) -> tuple[SwinV2Config, Preprocessing, str]:
    """Config, preprocessing and architecture of a timm Hub folder's config.json."""
    architecture = values.get("architecture", "")
    if not architecture.startswith("swinv2_") or architecture.startswith("swinv2_cr"):
        raise CheckpointError(f"timm architecture {architecture!r} is not a SwinV2 of the original design.")
    try:
        base = config_from_model_name(architecture)
    except ValueError as error:
        raise CheckpointError(str(error)) from error
    timm_arguments = {"img_size": base.image_size, "embed_dim": base.embed_dim, "depths": base.depths,
                      "num_heads": base.num_heads, "window_size": base.window_size,
                      "pretrained_window_sizes": base.pretrained_window_sizes,
                      "drop_path_rate": base.drop_path_rate, "num_classes": base.num_labels}  # fmt: skip
    timm_arguments.update(values.get("model_args", {}))
    if "num_classes" in values:
        timm_arguments["num_classes"] = values["num_classes"]
    config = config_from_original(timm_arguments)
    pretrained = values.get("pretrained_cfg", {})
    preprocessing = Preprocessing(
        crop_fraction=pretrained.get("crop_pct", 0.9),
        resample=pretrained.get("interpolation", "bicubic"),
        mean=tuple(pretrained.get("mean", IMAGENET_MEAN)),
        std=tuple(pretrained.get("std", IMAGENET_STD)),
    )
    return config, preprocessing, architecture


def _with_head_size(config: SwinV2Config, state_dict: Mapping[str, torch.Tensor], notes: list[str]) -> SwinV2Config:
    """Take the number of classes from the checkpoint's head: the released 22K YAMLs say 1000 for 21841-way heads."""
    head = state_dict.get("classifier.weight")
    if head is not None and head.shape[0] != config.num_labels:
        notes.append(f"head has {head.shape[0]} classes, the config {config.num_labels}: using {head.shape[0]}")
        config.num_labels = head.shape[0]
    return config


def read_source(
    source: str,
    checkpoint: str | os.PathLike,
    model_name: str | None = None,
    config_path: str | os.PathLike | None = None,
) -> SourceCheckpoint:
    """Read `checkpoint` (a file, or a timm/transformers folder) of `source` with the architecture it implies.

    Raises:
        CheckpointError: anything that makes the checkpoint and the architecture disagree, with the fix.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise CheckpointError(f"Checkpoint {checkpoint} does not exist.")
    config = _named_config(model_name, config_path)
    preprocessing = Preprocessing()
    transformers_folder = None
    if checkpoint.is_dir():
        folder_config = _read_folder_config(checkpoint)
        weights = folder_weights(checkpoint)
        if source == "timm":
            timm_config, preprocessing, architecture = _timm_config(folder_config)
            config = config or timm_config
            model_name = model_name or architecture
        elif source == "transformers":
            if folder_config.get("model_type") != "swinv2":
                raise CheckpointError(f"{checkpoint} holds a {folder_config.get('model_type')!r} model, not transformers' swinv2.")
            config = config or config_from_transformers(folder_config)
            preprocessing = _transformers_preprocessing(checkpoint, config)
            transformers_folder = checkpoint
        else:
            raise CheckpointError(f"An original checkpoint is a .pth file, not a folder ({checkpoint}).")
    else:
        weights = read_checkpoint(checkpoint)
    if config is None:
        raise CheckpointError(
            f"{source} checkpoint {checkpoint} does not say its architecture: pass --model-name (e.g. "
            "swinv2_tiny_patch4_window8_256) or --config (the original YAML)."
        )
    buffers_checked = check_original_buffers(weights, config) if source == "original" else 0
    converted = convert_state_dict(weights, source)
    notes: list[str] = []
    config = _with_head_size(config, converted, notes)
    return SourceCheckpoint(
        source=source,
        config=config,
        state_dict=converted,
        preprocessing=preprocessing,
        model_name=model_name,
        source_keys=len(weights),
        buffers_checked=buffers_checked,
        transformers_folder=transformers_folder,
        notes=notes,
    )


def _transformers_preprocessing(folder: Path, config: SwinV2Config) -> Preprocessing:
    """transformers' SwinV2 repos resize straight to the input size (no crop) with their saved statistics."""
    processor_file = folder / "preprocessor_config.json"
    values = json.loads(processor_file.read_text()) if processor_file.is_file() else {}
    resample = {0: "nearest", 2: "bilinear", 3: "bicubic"}.get(values.get("resample", 3), "bicubic")
    return Preprocessing(
        crop_fraction=values.get("crop_pct") or 1.0,
        resample=resample,
        mean=tuple(values.get("image_mean", IMAGENET_MEAN)),
        std=tuple(values.get("image_std", IMAGENET_STD)),
    )
