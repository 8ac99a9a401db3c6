"""Checkpoints of other implementations -> verified, Hub-ready folders (and back), written atomically.

`convert_checkpoint` is what `swinv2-hf convert` and `conversion/convert.py` run, a pipeline whose steps each live in
one place: read the source and derive its config (`sources.py`), map the keys (`conversion.py`), verify and write
(here). `export_folder` is the way back to the original and timm layouts (and transformers'), so nobody is locked in.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import HfApi
from safetensors.torch import save_file
from transformers import PreTrainedModel
from transformers import Swinv2Config as TransformersSwinv2Config
from transformers import Swinv2ForImageClassification as TransformersForImageClassification
from transformers import Swinv2ForMaskedImageModeling as TransformersForMaskedImageModeling
from transformers import Swinv2Model as TransformersModel
from transformers.dynamic_module_utils import custom_object_save
from transformers.image_processing_utils import BaseImageProcessor
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling
from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

from .atomic import MARKER, atomic_directory, atomic_file, prepare_output
from .configuration_swinv2_hf import RELEASES, SwinV2Config, size_of, size_variant
from .conversion import (
    CheckpointError,
    check_original_buffers,
    check_state_dict,
    convert_state_dict,
    export_state_dict,
    with_base_model_prefix,
    without_base_model_prefix,
)
from .detection_swinv2_hf import OBJECT_DETECTORS
from .model_card import CardFacts, render_model_card
from .modeling_swinv2_hf import (
    SwinV2ForImageClassification,
    SwinV2ForMaskedImageModeling,
    SwinV2Model,
    SwinV2PreTrainedModel,
)
from .sources import Preprocessing, SourceCheckpoint, derive_config, folder_weights, read_source

# Largest absolute difference of the main output (logits, reconstruction or features) accepted in float32.
MAX_DIFFERENCE = 1e-4
DEFAULT_MAX_SHARD_SIZE = "5GB"
VERIFICATION_BATCH = 2
_TRANSFORMERS_CLASSES = {
    SwinV2ForImageClassification: TransformersForImageClassification,
    SwinV2ForMaskedImageModeling: TransformersForMaskedImageModeling,
    SwinV2Model: TransformersModel,
}
# The fields that transformers' Swinv2Config shares with this package's.
# fmt: off
_TRANSFORMERS_CONFIG_FIELDS = (
    "image_size", "patch_size", "num_channels", "embed_dim", "depths", "num_heads", "window_size",
    "pretrained_window_sizes", "mlp_ratio", "qkv_bias", "hidden_act", "use_absolute_embeddings", "layer_norm_eps",
    "encoder_stride", "initializer_range", "id2label", "label2id",
)
# fmt: on
_RESAMPLING = {
    "bicubic": PILImageResampling.BICUBIC,
    "bilinear": PILImageResampling.BILINEAR,
    "nearest": PILImageResampling.NEAREST,
}


@dataclass
class ConversionReport:
    """What a conversion did, printed by the command and kept in the model card."""

    source: str
    model_class: str
    parameters: int
    keys_mapped: int
    buffers_checked: int
    difference: float | None = None
    reference: str = ""
    output_dir: Path | None = None
    repo_url: str | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the model card."""
        if self.difference is None:
            return f"from the {self.source} checkpoint; not verified ({self.reference})"
        return (
            f"from the {self.source} checkpoint; largest absolute output difference to {self.reference}: "
            f"{self.difference:.1e} (float32)"
        )

    def __str__(self) -> str:
        lines = [
            f"model:            {self.model_class}, {self.parameters:,} parameters",
            f"keys mapped:      {self.keys_mapped} (from the {self.source} layout)",
            f"buffers checked:  {self.buffers_checked} stored original buffers agree with the config",
        ]
        if self.difference is None:
            lines.append(f"verification:     skipped ({self.reference})")
        else:
            lines.append(
                f"verification:     max |difference| {self.difference:.2e} vs {self.reference} "
                f"(limit {MAX_DIFFERENCE:g})"
            )
        lines += [f"note:             {note}" for note in self.notes]
        if self.output_dir is not None:
            lines.append(f"written:          {self.output_dir}")
        if self.repo_url is not None:
            lines.append(f"pushed:           {self.repo_url}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# Building and checking the model
# ----------------------------------------------------------------------------------------------------------------------


def model_class_for(state_dict: dict[str, torch.Tensor]) -> type[SwinV2PreTrainedModel]:
    """The task model a checkpoint holds weights for: a classifier head, a SimMIM decoder, or neither."""
    if any(key.startswith("decoder.") for key in state_dict):
        return SwinV2ForMaskedImageModeling
    if any(key.startswith("classifier.") for key in state_dict):
        return SwinV2ForImageClassification
    return SwinV2Model


def build_model(config: SwinV2Config, state_dict: dict[str, torch.Tensor]) -> SwinV2PreTrainedModel:
    """The model for `state_dict`, loaded strictly after a readable shape check."""
    model_class = model_class_for(state_dict)
    model = model_class(config).eval()
    if model_class is SwinV2Model:
        state_dict = without_base_model_prefix(state_dict)
    check_state_dict(model, state_dict)
    model.load_state_dict(state_dict, strict=True)
    return model


def transformers_config(config: SwinV2Config) -> TransformersSwinv2Config:
    """transformers' Swinv2Config for the same architecture."""
    return TransformersSwinv2Config(**{name: getattr(config, name) for name in _TRANSFORMERS_CONFIG_FIELDS})


def _why_transformers_cannot_run(config: SwinV2Config) -> str | None:
    if config.extra_norm_period:
        return "transformers' Swinv2 has no main-branch LayerNorm (SwinV2-H/G)"
    height, width = config.image_height_width
    if height != width:
        return "transformers clips windows per side on non-square maps, the original by the smaller side"
    return None


def _reference_model(model: SwinV2PreTrainedModel, checkpoint: SourceCheckpoint) -> torch.nn.Module:
    """transformers' Swinv2 with the source weights: loaded from the source folder itself when the source is a
    transformers folder, otherwise built from the same weights put in its layout (an independent implementation)."""
    transformers_class = _TRANSFORMERS_CLASSES[type(model)]
    if checkpoint.transformers_folder is not None:
        return transformers_class.from_pretrained(checkpoint.transformers_folder).eval()
    reference = transformers_class(transformers_config(model.config)).eval()
    state_dict = with_base_model_prefix(model.state_dict())  # the layout the key tables read
    reference.load_state_dict(export_state_dict(state_dict, "transformers", model.config), strict=True)
    return reference


def main_output(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Logits, reconstruction (with a fixed mask) or the final features: what a model of each task is for.

    `model` is ours or transformers' Swinv2 (the reference), so only what both configs have is read.
    """
    with torch.no_grad():
        if "MaskedImageModeling" in type(model).__name__:
            height, width = pixel_values.shape[2:]
            patches = (height // model.config.patch_size) * (width // model.config.patch_size)
            mask = torch.rand(1, patches, generator=torch.Generator().manual_seed(0)) < 0.6
            return model(pixel_values, bool_masked_pos=mask.expand(len(pixel_values), -1)).reconstruction
        outputs = model(pixel_values)
        return outputs.logits if hasattr(outputs, "logits") else outputs.last_hidden_state


def verify(model: SwinV2PreTrainedModel, checkpoint: SourceCheckpoint) -> tuple[float | None, str]:
    """Largest absolute difference between the converted model and transformers' Swinv2 on the source weights, or
    None with the reason when transformers cannot express the model."""
    reason = _why_transformers_cannot_run(model.config)
    if reason is not None:
        return None, reason
    reference = _reference_model(model, checkpoint)
    height, width = model.config.image_height_width
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(VERIFICATION_BATCH, model.config.num_channels, height, width, generator=generator)
    difference = (main_output(model, pixel_values) - main_output(reference, pixel_values)).abs().max().item()
    source = "its source folder" if checkpoint.transformers_folder is not None else "the same weights"
    return difference, f"transformers' Swinv2 on {source}"


# ----------------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------------


def image_processor_for(config: SwinV2Config, preprocessing: Preprocessing) -> BaseImageProcessor:
    """The evaluation preprocessing as a transformers image processor that needs no torchvision.

    Square inputs: ConvNext's processor, which is the original's rule (resize the shorter side to size / crop
    fraction, centre crop; from 384 px on, resize straight to the size). Non-square: a plain resize.

    `do_convert_rgb` makes the saved processor turn every PIL mode into the three channels the statistics are for
    (without it an L, RGBA, P or CMYK image stops it with "mean must have 1 elements"): transparency is composited
    onto white, palettes are looked up, CMYK is converted, grey is repeated. 16-bit and 32-bit integer and float
    images go through PIL's `convert("RGB")`, which clips values to 0-255 rather than rescaling them; scale such
    images to 8 bits first.
    """
    height, width = config.image_height_width
    common = {
        "resample": _RESAMPLING[preprocessing.resample],
        "image_mean": list(preprocessing.mean),
        "image_std": list(preprocessing.std),
        "do_convert_rgb": True,
    }
    if height != width:
        return ViTImageProcessorPil(size={"height": height, "width": width}, **common)
    return ConvNextImageProcessorPil(size={"shortest_edge": height}, crop_pct=preprocessing.crop_fraction, **common)


def describe_preprocessing(config: SwinV2Config, preprocessing: Preprocessing) -> str:
    height, width = config.image_height_width
    if height == width and height < 384 and preprocessing.crop_fraction < 1:
        resize = f"resize the shorter side to {int(height / preprocessing.crop_fraction)}, centre crop {height}"
    else:
        resize = f"resize to {height}x{width}"
    statistics = f"mean {list(preprocessing.mean)}, std {list(preprocessing.std)}"
    return f"{resize} ({preprocessing.resample}), normalise with {statistics}"


def write_model_folder(
    folder: Path,
    model: SwinV2PreTrainedModel,
    processor: BaseImageProcessor,
    card_facts: CardFacts,
    max_shard_size: str = DEFAULT_MAX_SHARD_SIZE,
) -> None:
    """config.json with the complete auto_map, the code files, safetensors (sharded above `max_shard_size`), the
    image processor and the model card."""
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    processor.save_pretrained(folder)
    render_model_card(model.config, card_facts).save(folder / "README.md")


def save_detector(model: PreTrainedModel, save_directory: str | os.PathLike, **save_pretrained_kwargs: Any) -> None:
    """`model.save_pretrained(save_directory, **save_pretrained_kwargs)` for a transformers object detector with a
    SwinV2 backbone, as Hub remote code: detection_swinv2_hf.py and the SwinV2 files it imports go with the weights,
    and config.json's `auto_map` names its config and detector classes. transformers builds the detector's backbone
    config by model type and does not know `swinv2_hf`; through that module, `trust_remote_code=True` registers it
    first, so the folder loads (by path or repo id, with AutoModelForObjectDetection or the object-detection pipeline)
    where swinv2_hf is not installed. With swinv2_hf imported, it loads as before without remote code. Push the folder
    afterwards (`push_folder`): `push_to_hub=True` would upload it before the code is in it.

    Raises:
        ValueError: a model that is none of the detectors detection_swinv2_hf.py covers (nothing is written).
    """
    detector_class = next((remote for remote in OBJECT_DETECTORS if isinstance(model, remote.__base__)), None)
    if detector_class is None:
        covered = ", ".join(remote.__name__ for remote in OBJECT_DETECTORS)
        raise ValueError(f"{type(model).__name__} is not a detector that loads as remote code; these are: {covered}.")
    module = detector_class.__module__.rsplit(".", 1)[-1]
    model.config.auto_map = {
        "AutoConfig": f"{module}.{detector_class.config_class.__name__}",
        "AutoModelForObjectDetection": f"{module}.{detector_class.__name__}",
    }
    model.save_pretrained(save_directory, **save_pretrained_kwargs)
    custom_object_save(detector_class, save_directory)  # the module and, recursively, the files it imports


def push_folder(
    folder: Path,
    repo_id: str,
    private: bool = False,
    commit_message: str | None = None,
    repo_type: str = "model",
    space_sdk: str | None = None,
) -> str:
    """Upload a folder to a Hub repository (a model's unless `repo_type` says otherwise; created when missing, a Space
    with `space_sdk`); returns the repository URL."""
    api = HfApi()
    url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type, space_sdk=space_sdk)
    api.upload_folder(
        folder_path=folder,
        repo_id=repo_id,
        repo_type=repo_type,
        commit_message=commit_message or "Upload SwinV2 model",
        ignore_patterns=[MARKER],
    )
    return str(url)


def convert_checkpoint(
    source: str,
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    model_name: str | None = None,
    config_path: str | os.PathLike | None = None,
    id2label_path: str | os.PathLike | None = None,
    push_to_hub: str | None = None,
    overwrite: bool = False,
    check: bool = True,
    max_shard_size: str = DEFAULT_MAX_SHARD_SIZE,
    log: Callable[[str], None] = print,
) -> ConversionReport:
    """Convert a checkpoint into a Hub-ready folder, verified against transformers' Swinv2 unless `check` is off.

    Raises:
        CheckpointError: the checkpoint, its architecture or its outputs disagree (nothing is written).
        FileExistsError: `output_dir` exists and `overwrite` is off, is a folder swinv2_hf did not write, or is or
            holds one of the input files (`prepare_output`).
    """
    output_dir = Path(output_dir)
    inputs = [path for path in (checkpoint, config_path, id2label_path) if path is not None]
    prepare_output(output_dir, overwrite, inputs)  # before any work, not only before writing
    # 1. Read the source; 2. derive the config.
    read = read_source(source, checkpoint)
    config, notes = derive_config(read, model_name, config_path, id2label_path)
    # 3. Map the keys (the original's stored buffers are checked against the config, not copied).
    buffers_checked = check_original_buffers(read.weights, config) if source == "original" else 0
    state_dict = convert_state_dict(read.weights, source)
    # 4. Verify: a strict load, then the outputs against transformers' Swinv2.
    model = build_model(config, state_dict)
    report = ConversionReport(
        source=source,
        model_class=type(model).__name__,
        parameters=sum(p.numel() for p in model.parameters()),
        keys_mapped=len(state_dict),
        buffers_checked=buffers_checked,
        notes=notes,
    )
    if check:
        report.difference, report.reference = verify(model, read)
        if report.difference is not None and report.difference > MAX_DIFFERENCE:
            raise CheckpointError(
                f"The converted model differs from {report.reference} by {report.difference:.2e} (limit "
                f"{MAX_DIFFERENCE:g}); nothing written. Pass --no-verify to write it anyway."
            )
    else:
        report.reference = "--no-verify"
    # 5. Write (and push).
    model_name = model_name or read.model_name
    facts = CardFacts(
        repo_id=push_to_hub or output_dir.name,
        architecture=report.model_class,
        model_name=model_name,
        variant=RELEASES.get(model_name) if model_name else None,  # a release's name: the zoo's figures apply
        preprocessing=describe_preprocessing(config, read.preprocessing),
        conversion=report.summary(),
    )
    with atomic_directory(output_dir, overwrite, inputs) as folder:
        write_model_folder(folder, model, image_processor_for(config, read.preprocessing), facts, max_shard_size)
    report.output_dir = output_dir
    if push_to_hub:
        report.repo_url = push_folder(output_dir, push_to_hub, commit_message=f"Convert {Path(checkpoint).name}")
    log(str(report))
    return report


# ----------------------------------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------------------------------


def _export_config(config: SwinV2Config, target: str, processor: dict, transformers_class: type) -> dict:
    """config.json of the exported folder: timm's Hub format, or transformers' Swinv2Config."""
    height, width = config.image_height_width
    if target == "transformers":
        return {**transformers_config(config).to_dict(), "architectures": [transformers_class.__name__]}
    return {
        # A timm variant of the same size, tiny for sizes of their own (timm builds from it; model_args carry the rest).
        "architecture": size_variant(size_of(config) or "tiny").name,
        "num_classes": config.num_labels,
        "num_features": config.hidden_size,
        "global_pool": "avg",
        "model_args": {
            "img_size": [height, width],
            "patch_size": config.patch_size,
            "in_chans": config.num_channels,
            "embed_dim": config.embed_dim,
            "depths": list(config.depths),
            "num_heads": list(config.num_heads),
            "window_size": config.window_size,
            "pretrained_window_sizes": list(config.pretrained_window_sizes),
            "mlp_ratio": config.mlp_ratio,
            "qkv_bias": config.qkv_bias,
        },
        "pretrained_cfg": {
            "input_size": [config.num_channels, height, width],
            "crop_pct": processor.get("crop_pct") or 1.0,
            "interpolation": {0: "nearest", 2: "bilinear", 3: "bicubic"}.get(processor.get("resample", 3), "bicubic"),
            "mean": processor.get("image_mean", IMAGENET_DEFAULT_MEAN),
            "std": processor.get("image_std", IMAGENET_DEFAULT_STD),
            "num_classes": config.num_labels,
            "classifier": "head.fc",
        },
    }


def check_model_folder(folder: str | os.PathLike) -> dict[str, Any]:
    """The config.json of a local swinv2_hf model folder, refused in one line when there is none to read.

    transformers' loaders fill a missing config.json with defaults (a different model, written without complaint),
    load another model type's config with a warning only, and take a missing path for a Hub repository id (a network
    error offline); the exports read local folders only, so each of these is a mistake to stop before any work.

    Raises:
        CheckpointError: a path that does not exist or is not a folder, no config.json, or another model type.
    """
    folder = Path(folder)
    written_by = "Pass the folder that save_pretrained or swinv2-hf convert wrote."
    if not folder.exists():
        raise CheckpointError(f"{folder} does not exist. {written_by}")
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder. {written_by}")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{folder} has no config.json: without it the architecture is unknown. {written_by}")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{config_file} is not valid JSON ({error}). {written_by}") from error
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != SwinV2Config.model_type:
        raise CheckpointError(
            f"{folder} holds a {model_type!r} model, not {SwinV2Config.model_type}; convert it "
            "first with swinv2-hf convert."
        )
    return config


def export_folder(folder: str | os.PathLike, target: str, output: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a swinv2_hf folder's weights in the `target` layout; returns the written path.

    original: a `.pth` file holding `{'model': state_dict}` as the releases do, buffers included (it loads into the
    original with `strict=True`). timm: a timm Hub folder (config.json with architecture, num_classes, model_args and
    pretrained_cfg; model.safetensors). transformers: a folder of transformers' Swinv2 (config, safetensors, the image
    processor).

    Raises:
        CheckpointError: a target that cannot express the model, or a folder that is not a swinv2_hf model.
        FileExistsError: `output` exists and `overwrite` is off, is a folder swinv2_hf did not write, or is or holds
            `folder` (`prepare_output`).
    """
    folder, output = Path(folder), Path(output)
    check_model_folder(folder)
    prepare_output(output, overwrite, [folder])
    config = SwinV2Config.from_pretrained(folder)
    state_dict = with_base_model_prefix(folder_weights(folder))  # a bare model saves without the prefix
    transformers_class = _TRANSFORMERS_CLASSES[model_class_for(state_dict)]
    exported = export_state_dict(state_dict, target, config)
    if target == "original":
        with atomic_file(output, overwrite, [folder]) as temporary:
            torch.save({"model": exported}, temporary)
        return output
    processor_file = folder / "preprocessor_config.json"
    processor = json.loads(processor_file.read_text()) if processor_file.is_file() else {}
    with atomic_directory(output, overwrite, [folder]) as temporary:
        save_file({key: value.contiguous() for key, value in exported.items()}, temporary / "model.safetensors")
        (temporary / "config.json").write_text(
            json.dumps(_export_config(config, target, processor, transformers_class), indent=2) + "\n"
        )
        if target == "transformers" and processor_file.is_file():
            shutil.copy(processor_file, temporary / processor_file.name)
    return output
