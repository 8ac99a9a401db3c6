"""The first two steps of a conversion (`hub_folder.convert_checkpoint`: read the source → derive the config → map
the keys → verify → write): reading a checkpoint of another SwinV2 implementation, and the config it implies.

`read_source` reads the weights as they are stored (the source's own key layout), with what a timm or transformers
folder says beside them: its config.json and its evaluation preprocessing. `derive_config` takes the architecture from,
in this order: `--config` (the original repository's YAML, or JSON: this package's config, transformers' Swinv2 config
or the original constructor arguments), `--model-name` (a name of `VARIANTS`), the folder's own config.json; the
number of classes from the checkpoint's head, their names from `--id2label`.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .configuration_swinv2_hf import SwinV2Config
from .conversion import CheckpointError, check_layout, head_classes

# The original evaluates with a resize to 256/224 of the crop and a centre crop (`TEST.CROP`); timm's crop_pct.
ORIGINAL_CROP_FRACTION = 224 / 256
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")

# fmt: off
# The original repository's config defaults (config.py `_C`) for the keys a SwinV2 YAML may leave out.
_YAML_DEFAULTS: dict[str, Any] = {
    "DATA.IMG_SIZE": 224, "MODEL.NUM_CLASSES": 1000, "MODEL.DROP_RATE": 0.0, "MODEL.DROP_PATH_RATE": 0.1,
    "MODEL.SWINV2.PATCH_SIZE": 4, "MODEL.SWINV2.IN_CHANS": 3, "MODEL.SWINV2.MLP_RATIO": 4.0,
    "MODEL.SWINV2.QKV_BIAS": True, "MODEL.SWINV2.APE": False, "MODEL.SWINV2.PATCH_NORM": True,
    "MODEL.SWINV2.PRETRAINED_WINDOW_SIZES": [0, 0, 0, 0],
}
_YAML_REQUIRED = ("MODEL.SWINV2.EMBED_DIM", "MODEL.SWINV2.DEPTHS", "MODEL.SWINV2.NUM_HEADS",
                  "MODEL.SWINV2.WINDOW_SIZE")
# The YAML keys -> the keyword arguments the original's `build_model` gives `SwinTransformerV2`.
_YAML_ARGUMENTS = {
    "DATA.IMG_SIZE": "img_size",                 "MODEL.NUM_CLASSES": "num_classes",
    "MODEL.DROP_RATE": "drop_rate",              "MODEL.DROP_PATH_RATE": "drop_path_rate",
    "MODEL.SWINV2.PATCH_SIZE": "patch_size",     "MODEL.SWINV2.IN_CHANS": "in_chans",
    "MODEL.SWINV2.EMBED_DIM": "embed_dim",       "MODEL.SWINV2.DEPTHS": "depths",
    "MODEL.SWINV2.NUM_HEADS": "num_heads",       "MODEL.SWINV2.WINDOW_SIZE": "window_size",
    "MODEL.SWINV2.MLP_RATIO": "mlp_ratio",       "MODEL.SWINV2.PRETRAINED_WINDOW_SIZES": "pretrained_window_sizes",
    "MODEL.SWINV2.QKV_BIAS": "qkv_bias",         "MODEL.SWINV2.APE": "ape",
    "MODEL.SWINV2.PATCH_NORM": "patch_norm",
}
# Those keyword arguments (timm's constructor takes the same names) -> this package's config fields.
_ORIGINAL_ARGUMENTS = {
    "img_size": "image_size",                    "patch_size": "patch_size",
    "in_chans": "num_channels",                  "embed_dim": "embed_dim",
    "depths": "depths",                          "num_heads": "num_heads",
    "window_size": "window_size",                "pretrained_window_sizes": "pretrained_window_sizes",
    "mlp_ratio": "mlp_ratio",                    "qkv_bias": "qkv_bias",
    "drop_rate": "hidden_dropout_prob",          "attn_drop_rate": "attention_probs_dropout_prob",
    "drop_path_rate": "drop_path_rate",          "ape": "use_absolute_embeddings",
    "patch_norm": "patch_norm",                  "num_classes": "num_labels",
}
# fmt: on
# The constructor's defaults where they differ from this package's.
_ORIGINAL_DEFAULTS = {"img_size": 224, "window_size": 7, "num_classes": 1000}


@dataclass
class Preprocessing:
    """How the source evaluates images: crop fraction (1.0: resize to the input size), resampling and statistics
    (the ImageNet ones, as transformers names them, unless the source says otherwise)."""

    crop_fraction: float = ORIGINAL_CROP_FRACTION
    resample: str = "bicubic"
    mean: tuple[float, ...] = tuple(IMAGENET_DEFAULT_MEAN)
    std: tuple[float, ...] = tuple(IMAGENET_DEFAULT_STD)


@dataclass
class SourceCheckpoint:
    """A checkpoint as `source` stores it, with what its folder says beside it."""

    source: str
    path: Path
    weights: dict[str, torch.Tensor]  # in the source's own key layout
    folder_config: dict[str, Any] | None = None  # a timm or transformers folder's config.json
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    model_name: str | None = None  # the variant a timm folder names (its `architecture`)
    transformers_folder: Path | None = None  # where transformers' own model can be run for verification


# ----------------------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------------------


def read_source(source: str, checkpoint: str | os.PathLike) -> SourceCheckpoint:
    """Read `checkpoint` (a file, or a timm/transformers folder) of `source` as it is stored.

    Raises:
        CheckpointError: an unknown source, a missing or unreadable checkpoint, a folder without weights or
            config.json, or a folder of another model.
    """
    check_layout(source, "checkpoint source")
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise CheckpointError(f"Checkpoint {checkpoint} does not exist.")
    if not checkpoint.is_dir():
        return SourceCheckpoint(source, checkpoint, read_checkpoint(checkpoint))
    folder_config = _read_folder_config(checkpoint)
    weights = folder_weights(checkpoint)
    if source == "timm":
        architecture = folder_config.get("architecture", "")
        if not architecture.startswith("swinv2_") or architecture.startswith("swinv2_cr"):
            raise CheckpointError(f"timm architecture {architecture!r} is not a SwinV2 of the original design.")
        return SourceCheckpoint(
            source, checkpoint, weights, folder_config, _timm_preprocessing(folder_config), architecture
        )
    if source == "transformers":
        if folder_config.get("model_type") != "swinv2":
            raise CheckpointError(
                f"{checkpoint} holds a {folder_config.get('model_type')!r} model, not transformers' swinv2."
            )
        preprocessing = _transformers_preprocessing(checkpoint)
        return SourceCheckpoint(
            source, checkpoint, weights, folder_config, preprocessing, transformers_folder=checkpoint
        )
    raise CheckpointError(f"An original checkpoint is a .pth file, not a folder ({checkpoint}).")


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file, or of a `.pth`/`.bin` read with `weights_only=True` (bare, `{'model': ...}`
    or `{'state_dict': ...}`).

    Raises:
        CheckpointError: a missing, truncated or non-checkpoint file, or one that holds no state dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"Checkpoint file {path} does not exist.")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): a download or copy that was cut short. Fetch it again.")
    try:
        if path.endswith(".safetensors"):
            return load_file(path)
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, EOFError, IndexError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        # A pickle cut short raises a bare EOFError (no message) or, after its first byte, an IndexError.
        lines = str(error).splitlines()
        reason = f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({reason}). "
            "Is the file complete (a download cut short is truncated) and a PyTorch or safetensors file?"
        ) from error
    for container in ("model", "state_dict"):
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(container), Mapping):
            checkpoint = checkpoint[container]
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise CheckpointError(f"{path} holds no state dict (a mapping of names to tensors); is it a model checkpoint?")
    return dict(checkpoint)


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
    """A timm or transformers folder's config.json, which says what the weights are."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{folder} has no config.json; pass --model-name or --config with a bare checkpoint.")
    return json.loads(config_file.read_text())


def _timm_preprocessing(values: Mapping[str, Any]) -> Preprocessing:
    """The `pretrained_cfg` of a timm Hub folder's config.json."""
    pretrained = values.get("pretrained_cfg", {})
    return Preprocessing(
        crop_fraction=pretrained.get("crop_pct", 0.9),
        resample=pretrained.get("interpolation", "bicubic"),
        mean=tuple(pretrained.get("mean", IMAGENET_DEFAULT_MEAN)),
        std=tuple(pretrained.get("std", IMAGENET_DEFAULT_STD)),
    )


def _transformers_preprocessing(folder: Path) -> Preprocessing:
    """transformers' SwinV2 repos resize straight to the input size (no crop) with their saved statistics."""
    processor_file = folder / "preprocessor_config.json"
    values = json.loads(processor_file.read_text()) if processor_file.is_file() else {}
    resample = {0: "nearest", 2: "bilinear", 3: "bicubic"}.get(values.get("resample", 3), "bicubic")
    return Preprocessing(
        crop_fraction=values.get("crop_pct") or 1.0,
        resample=resample,
        mean=tuple(values.get("image_mean", IMAGENET_DEFAULT_MEAN)),
        std=tuple(values.get("image_std", IMAGENET_DEFAULT_STD)),
    )


# ----------------------------------------------------------------------------------------------------------------------
# The config
# ----------------------------------------------------------------------------------------------------------------------


def derive_config(
    checkpoint: SourceCheckpoint,
    model_name: str | None = None,
    config_path: str | os.PathLike | None = None,
    id2label_path: str | os.PathLike | None = None,
) -> tuple[SwinV2Config, list[str]]:
    """The config of `checkpoint` and what was adjusted on the way: the architecture from `config_path`, else
    `model_name`, else the folder's config.json; the classes from the checkpoint's head, named by `id2label_path`.

    Raises:
        CheckpointError: no architecture, an unknown name, a config file that is not one, or class names that do not
            fit the head.
    """
    classes = head_classes(checkpoint.weights, checkpoint.source)
    config = _described_config(checkpoint, model_name, config_path)
    notes: list[str] = []
    if classes is not None and classes != config.num_labels:
        notes.append(f"head has {classes} classes, the config {config.num_labels}: using {classes}")
        config.num_labels = classes
    if id2label_path is not None:
        id2label = read_id2label(id2label_path)
        if len(id2label) != config.num_labels:  # before assigning: id2label sets num_labels
            raise CheckpointError(
                f"--id2label {id2label_path} names {len(id2label)} classes, but the model has "
                f"{config.num_labels} (the checkpoint's classifier head). Give one name per class."
            )
        config.id2label = id2label
        config.label2id = {name: index for index, name in id2label.items()}  # not updated by the line above
    return config, notes


def _described_config(
    checkpoint: SourceCheckpoint, model_name: str | None, config_path: str | os.PathLike | None
) -> SwinV2Config:
    """The architecture that is named first: by the user's config file, by the user's model name, by the folder."""
    if config_path is not None:
        return config_from_file(config_path)
    if model_name is not None:
        return _named_config(model_name)
    if checkpoint.source == "timm" and checkpoint.folder_config is not None:
        arguments = dict(checkpoint.folder_config.get("model_args", {}))
        if "num_classes" in checkpoint.folder_config:
            arguments["num_classes"] = checkpoint.folder_config["num_classes"]
        return _named_config(checkpoint.model_name, **_config_fields(arguments))
    if checkpoint.source == "transformers" and checkpoint.folder_config is not None:
        return config_from_transformers(checkpoint.folder_config)
    raise CheckpointError(
        f"{checkpoint.source} checkpoint {checkpoint.path} does not say its architecture: pass --model-name (e.g. "
        "swinv2_tiny_patch4_window8_256) or --config (the original YAML)."
    )


def _named_config(name: str, **overrides: Any) -> SwinV2Config:
    """`SwinV2Config.from_preset`, its unknown names refused as a CheckpointError."""
    try:
        return SwinV2Config.from_preset(name, **overrides)
    except ValueError as error:
        raise CheckpointError(str(error)) from error


def _config_fields(constructor_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Config fields of the original's (or timm's) constructor arguments; the others are left out."""
    return {
        field: constructor_kwargs[name] for name, field in _ORIGINAL_ARGUMENTS.items() if name in constructor_kwargs
    }


def config_from_original(constructor_kwargs: Mapping[str, Any], **overrides: Any) -> SwinV2Config:
    """SwinV2Config from the keyword arguments of the original `SwinTransformerV2` (or timm's) constructor."""
    return SwinV2Config(**{**_config_fields({**_ORIGINAL_DEFAULTS, **constructor_kwargs}), **overrides})


def config_from_file(path: str | os.PathLike) -> SwinV2Config:
    """The config of `--config`: the original repository's YAML, or a JSON (`config_from_json`)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Config file {path} does not exist.")
    return config_from_original_yaml(path) if path.suffix in (".yaml", ".yml") else config_from_json(path)


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
    values = {**_YAML_DEFAULTS, **_read_original_yaml(path)}
    model_type = values.get("MODEL.TYPE", "swinv2")
    if model_type != "swinv2":
        raise CheckpointError(f"{path} describes MODEL.TYPE {model_type!r}, not a SwinV2 (swinv2) model.")
    missing = [key for key in _YAML_REQUIRED if key not in values]
    if missing:
        raise CheckpointError(
            f"{path} lacks {', '.join(missing)}; a SwinV2 config of the original repository sets them."
        )
    overrides: dict[str, Any] = {}
    if values.get("MODEL.SIMMIM.NORM_TARGET.ENABLE") is False:
        overrides["mim_norm_target_patch_size"] = 0
    elif "MODEL.SIMMIM.NORM_TARGET.PATCH_SIZE" in values:
        overrides["mim_norm_target_patch_size"] = values["MODEL.SIMMIM.NORM_TARGET.PATCH_SIZE"]
    return config_from_original({argument: values[key] for key, argument in _YAML_ARGUMENTS.items()}, **overrides)


def config_from_transformers(values: Mapping[str, Any]) -> SwinV2Config:
    """This package's config from transformers' Swinv2Config values (the same field names, but its own type)."""
    values = {key: value for key, value in values.items() if not key.startswith("_")}
    for key in (
        "model_type",
        "architectures",
        "transformers_version",
        "num_layers",
        "hidden_size",
        "stage_names",
        "torch_dtype",
        "dtype",
        "auto_map",
    ):
        values.pop(key, None)
    pretrained = values.get("pretrained_window_sizes")
    if pretrained is not None and not any(pretrained):
        # transformers' default is four zeros whatever the number of stages.
        values["pretrained_window_sizes"] = [0] * len(values.get("depths", pretrained))
    return SwinV2Config(**values)


def read_id2label(path: str | os.PathLike) -> dict[int, str]:
    """Class names from a JSON mapping (`{"0": "tench", ...}`) or a text file with one name per line.

    Raises:
        CheckpointError: a JSON file that is not a mapping of the indices 0..N-1 to names (the labels would shift).
    """
    path = Path(path)
    text = path.read_text()
    if path.suffix != ".json":
        return dict(enumerate(line.strip() for line in text.splitlines() if line.strip()))
    fix = 'Write it as {"0": "tench", "1": ...} or as a text file with one name per line.'
    try:
        id2label = {int(index): str(name) for index, name in json.loads(text).items()}
    except (ValueError, AttributeError) as error:  # not JSON, a key that is not an integer, or not a mapping
        raise CheckpointError(f"{path} is not a JSON mapping of class indices to names ({error}). {fix}") from error
    missing = sorted(set(range(len(id2label))) - set(id2label))
    if missing:
        raise CheckpointError(
            f"{path} names no class {missing[0]}: its {len(id2label)} indices must be 0 to {len(id2label) - 1}. {fix}"
        )
    return id2label
