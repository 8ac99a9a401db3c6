"""Checkpoints of other implementations -> verified, Hub-ready folders (and back), written atomically.

`convert_checkpoint` is what `swinv2-hf convert` and `conversion/convert.py` run; `export_folder` is the way back to
the original and timm layouts (and transformers'), so nobody is locked in.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
from transformers.image_utils import PILImageResampling
from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

from .configuration_swinv2_hf import SwinV2Config, to_pair
from .conversion import CheckpointError, check_state_dict, export_state_dict
from .detection_swinv2_hf import OBJECT_DETECTORS
from .model_card import CardFacts, render_model_card, size_name
from .modeling_swinv2_hf import (
    SwinV2ForImageClassification,
    SwinV2ForMaskedImageModeling,
    SwinV2Model,
    SwinV2PreTrainedModel,
)
from .releases import release_of
from .sources import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, SourceCheckpoint, folder_weights, read_source

# Largest absolute difference of the main output (logits, reconstruction or features) accepted in float32.
MAX_DIFFERENCE = 1e-4
DEFAULT_MAX_SHARD_SIZE = "5GB"
VERIFICATION_BATCH = 2
_TRANSFORMERS_CLASSES = {
    SwinV2ForImageClassification: TransformersForImageClassification,
    SwinV2ForMaskedImageModeling: TransformersForMaskedImageModeling,
    SwinV2Model: TransformersModel,
}
_RESAMPLING = {"bicubic": PILImageResampling.BICUBIC, "bilinear": PILImageResampling.BILINEAR,
               "nearest": PILImageResampling.NEAREST}  # fmt: skip


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
            lines.append(f"verification:     max |difference| {self.difference:.2e} vs {self.reference} "
                         f"(limit {MAX_DIFFERENCE:g})")
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
        state_dict = {key.removeprefix("swinv2."): value for key, value in state_dict.items()}
    check_state_dict(model, state_dict)
    model.load_state_dict(state_dict, strict=True)
    return model


def transformers_config(config: SwinV2Config) -> TransformersSwinv2Config:
    """transformers' Swinv2Config for the same architecture."""
    fields = ("image_size", "patch_size", "num_channels", "embed_dim", "depths", "num_heads", "window_size",
              "pretrained_window_sizes", "mlp_ratio", "qkv_bias", "hidden_act", "use_absolute_embeddings",
              "layer_norm_eps", "encoder_stride", "initializer_range", "id2label", "label2id")  # fmt: skip
    return TransformersSwinv2Config(**{name: getattr(config, name) for name in fields})


def _why_transformers_cannot_run(config: SwinV2Config) -> str | None:
    if config.extra_norm_period:
        return "transformers' Swinv2 has no main-branch LayerNorm (SwinV2-H/G)"
    height, width = to_pair(config.image_size, "image_size")
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
    reference.load_state_dict(_transformers_state_dict(_task_layout(model), model.config), strict=True)
    return reference


def _transformers_state_dict(state_dict: dict[str, torch.Tensor], config: SwinV2Config) -> dict[str, torch.Tensor]:
    """Weights for the transformers class of the same task (its bare model has no `swinv2.` prefix)."""
    exported = export_state_dict(state_dict, "transformers", config)
    if _TRANSFORMERS_CLASSES[model_class_for(state_dict)] is TransformersModel:
        return {key.removeprefix("swinv2."): value for key, value in exported.items()}
    return exported


def _task_layout(model: SwinV2PreTrainedModel) -> dict[str, torch.Tensor]:
    """The model's weights with the `swinv2.` prefix the layouts expect, whatever the model class."""
    state_dict = model.state_dict()
    if isinstance(model, SwinV2Model):
        return {f"swinv2.{key}": value for key, value in state_dict.items()}
    return state_dict


def main_output(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Logits, reconstruction (with a fixed mask) or the final features: what a model of each task is for."""
    config = model.config
    with torch.no_grad():
        if "MaskedImageModeling" in type(model).__name__:
            height, width = to_pair(config.image_size, "image_size")
            patch = to_pair(config.patch_size, "patch_size")
            patches = (height // patch[0]) * (width // patch[1])
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
    height, width = to_pair(model.config.image_size, "image_size")
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(VERIFICATION_BATCH, model.config.num_channels, height, width, generator=generator)
    difference = (main_output(model, pixel_values) - main_output(reference, pixel_values)).abs().max().item()
    source = "its source folder" if checkpoint.transformers_folder is not None else "the same weights"
    return difference, f"transformers' Swinv2 on {source}"


# ----------------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _give_default_mode(path: Path) -> None:
    """tempfile makes private (0700/0600) paths; the output gets the mode a plain mkdir or open would give it."""
    path.chmod((0o777 if path.is_dir() else 0o666) & ~_umask())


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it, or choose another output path.")


@contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool) -> Iterator[Path]:
    """A temporary sibling of `path` to write into, renamed to `path` only when the block completes: nothing is left
    behind on failure, and an existing `path` is replaced only with `overwrite`."""
    path = Path(path)
    _refuse_existing(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    _give_default_mode(temporary)
    try:
        yield temporary
        if path.exists():
            retired = temporary.with_suffix(".old")
            os.replace(path, retired)
            os.replace(temporary, path)
            shutil.rmtree(retired) if retired.is_dir() else retired.unlink()
        else:
            os.replace(temporary, path)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)


@contextmanager
def atomic_file(path: str | os.PathLike, overwrite: bool) -> Iterator[Path]:
    """`atomic_directory` for a single file."""
    path = Path(path)
    _refuse_existing(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    _give_default_mode(temporary)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


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
    height, width = to_pair(config.image_size, "image_size")
    common = dict(resample=_RESAMPLING[preprocessing.resample], image_mean=list(preprocessing.mean),
                  image_std=list(preprocessing.std), do_convert_rgb=True)  # fmt: skip
    if height != width:
        return ViTImageProcessorPil(size={"height": height, "width": width}, **common)
    return ConvNextImageProcessorPil(size={"shortest_edge": height}, crop_pct=preprocessing.crop_fraction, **common)


def describe_preprocessing(config: SwinV2Config, preprocessing: Preprocessing) -> str:
    height, width = to_pair(config.image_size, "image_size")
    if height == width and height < 384 and preprocessing.crop_fraction < 1:
        resize = f"resize the shorter side to {int(height / preprocessing.crop_fraction)}, centre crop {height}"
    else:
        resize = f"resize to {height}x{width}"
    return f"{resize} ({preprocessing.resample}), normalise with mean {list(preprocessing.mean)}, std {list(preprocessing.std)}"


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


def push_folder(folder: Path, repo_id: str, private: bool = False, commit_message: str | None = None) -> str:
    """Upload a folder to a Hub model repository (created when missing); returns the repository URL."""
    api = HfApi()
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message=commit_message or "Upload SwinV2 model")
    return str(url)


def read_id2label(path: str | os.PathLike) -> dict[int, str]:
    """Class names from a JSON mapping (`{"0": "tench", ...}`) or a text file with one name per line."""
    text = Path(path).read_text()
    if Path(path).suffix == ".json":
        return {int(index): str(name) for index, name in json.loads(text).items()}
    return dict(enumerate(line.strip() for line in text.splitlines() if line.strip()))


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
        FileExistsError: `output_dir` exists and `overwrite` is off.
    """
    output_dir = Path(output_dir)
    _refuse_existing(output_dir, overwrite)  # before any work, not only before writing
    loaded = read_source(source, checkpoint, model_name, config_path)
    if id2label_path is not None:
        loaded.config.id2label = read_id2label(id2label_path)
        if len(loaded.config.id2label) != loaded.config.num_labels:
            raise CheckpointError(
                f"{id2label_path} names {len(loaded.config.id2label)} classes, the head has {loaded.config.num_labels}."
            )
    model = build_model(loaded.config, loaded.state_dict)
    report = ConversionReport(
        source=source,
        model_class=type(model).__name__,
        parameters=sum(p.numel() for p in model.parameters()),
        keys_mapped=len(loaded.state_dict),
        buffers_checked=loaded.buffers_checked,
        notes=loaded.notes,
    )
    if check:
        report.difference, report.reference = verify(model, loaded)
        if report.difference is not None and report.difference > MAX_DIFFERENCE:
            raise CheckpointError(
                f"The converted model differs from {report.reference} by {report.difference:.2e} (limit "
                f"{MAX_DIFFERENCE:g}); nothing written. Pass --no-verify to write it anyway."
            )
    else:
        report.reference = "--no-verify"
    facts = CardFacts(
        repo_id=push_to_hub or output_dir.name,
        architecture=report.model_class,
        model_name=loaded.model_name,
        release=release_of(loaded.model_name),
        preprocessing=describe_preprocessing(loaded.config, loaded.preprocessing),
        conversion=report.summary(),
    )
    with atomic_directory(output_dir, overwrite) as folder:
        write_model_folder(folder, model, image_processor_for(loaded.config, loaded.preprocessing), facts, max_shard_size)
    report.output_dir = output_dir
    if push_to_hub:
        report.repo_url = push_folder(output_dir, push_to_hub, commit_message=f"Convert {Path(checkpoint).name}")
    log(str(report))
    return report


# ----------------------------------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------------------------------


def _saved_task_layout(folder: Path) -> dict[str, torch.Tensor]:
    """A saved folder's weights with the `swinv2.` prefix of the task layout (a bare model saves without it)."""
    state_dict = folder_weights(folder)
    if any(key.startswith(("swinv2.", "classifier.", "decoder.")) for key in state_dict):
        return state_dict
    return {f"swinv2.{key}": value for key, value in state_dict.items()}


def _timm_architecture(config: SwinV2Config) -> str:
    """A timm variant of the same size (timm builds from it; `model_args` carry the rest)."""
    size = {"T": "tiny", "S": "small", "B": "base", "L": "large"}.get(size_name(config), "tiny")
    return f"swinv2_{size}_window8_256" if size != "large" else "swinv2_large_window12_192"


def _export_config(config: SwinV2Config, target: str, processor: dict, transformers_class: type) -> dict:
    """config.json of the exported folder: timm's Hub format, or transformers' Swinv2Config."""
    height, width = to_pair(config.image_size, "image_size")
    if target == "transformers":
        return {**transformers_config(config).to_dict(), "architectures": [transformers_class.__name__]}
    return {
        "architecture": _timm_architecture(config),
        "num_classes": config.num_labels,
        "num_features": config.hidden_size,
        "global_pool": "avg",
        "model_args": {
            "img_size": [height, width], "patch_size": to_pair(config.patch_size, "patch_size")[0],
            "in_chans": config.num_channels, "embed_dim": config.embed_dim, "depths": list(config.depths),
            "num_heads": list(config.num_heads), "window_size": config.window_size,
            "pretrained_window_sizes": list(config.pretrained_window_sizes), "mlp_ratio": config.mlp_ratio,
            "qkv_bias": config.qkv_bias,
        },
        "pretrained_cfg": {
            "input_size": [config.num_channels, height, width],
            "crop_pct": processor.get("crop_pct") or 1.0,
            "interpolation": {0: "nearest", 2: "bilinear", 3: "bicubic"}.get(processor.get("resample", 3), "bicubic"),
            "mean": processor.get("image_mean", list(IMAGENET_MEAN)),
            "std": processor.get("image_std", list(IMAGENET_STD)),
            "num_classes": config.num_labels,
            "classifier": "head.fc",
        },
    }  # fmt: skip


def export_folder(folder: str | os.PathLike, target: str, output: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a swinv2_hf folder's weights in the `target` layout; returns the written path.

    original: a `.pth` file holding `{'model': state_dict}` as the releases do, buffers included (it loads into the
    original with `strict=True`). timm: a timm Hub folder (config.json with architecture, num_classes, model_args and
    pretrained_cfg; model.safetensors). transformers: a folder of transformers' Swinv2 (config, safetensors, the image
    processor).

    Raises:
        CheckpointError: a target that cannot express the model, or a folder that is not a swinv2_hf model.
    """
    folder, output = Path(folder), Path(output)
    _refuse_existing(output, overwrite)
    config = SwinV2Config.from_pretrained(folder)
    state_dict = _saved_task_layout(folder)
    transformers_class = _TRANSFORMERS_CLASSES[model_class_for(state_dict)]
    if target == "transformers":
        exported = _transformers_state_dict(state_dict, config)
    else:
        exported = export_state_dict(state_dict, target, config)
    if target == "original":
        with atomic_file(output, overwrite) as temporary:
            torch.save({"model": exported}, temporary)
        return output
    processor_file = folder / "preprocessor_config.json"
    processor = json.loads(processor_file.read_text()) if processor_file.is_file() else {}
    with atomic_directory(output, overwrite) as temporary:
        save_file({key: value.contiguous() for key, value in exported.items()}, temporary / "model.safetensors")
        (temporary / "config.json").write_text(json.dumps(_export_config(config, target, processor, transformers_class), indent=2) + "\n")
        if target == "transformers" and processor_file.is_file():
            shutil.copy(processor_file, temporary / processor_file.name)
    return output
