"""Weights of the other SwinV2 implementations in this package's layout and back: the one place that knows their key
names.

Layouts:
- `original`: microsoft/Swin-Transformer `.pth` files (`SwinTransformerV2`, `SimMIM`), bare or `{'model': ...}`. They
  store buffers (`relative_coords_table`, `relative_position_index`, `attn_mask`) that follow from the config: on the
  way in they are checked against the config and dropped, on the way out they are rebuilt exactly as the original
  builds them, so a file written here loads into the original with `strict=True`.
- `timm`: `timm.models.swin_transformer_v2` state dicts, patch merging at the start of a stage (timm >= 0.9) or at the
  end (older releases); written in the current layout.
- `transformers`: transformers' `Swinv2*` models (split query/key/value without a key bias, an extra class position).

Every key goes through one table of key templates per layout, read in both directions; this package's side uses the
task models' layout (the encoder under `base_model_prefix`, then `classifier`, `decoder`), which `from_pretrained` also
maps onto the bare model and the backbone; `with_base_model_prefix` and `without_base_model_prefix` move a state dict
between the two.

In a conversion (`hub_folder.convert_checkpoint`: read → derive the config → map the keys → verify → write) this is
the third step: the original's stored buffers are checked against the derived config, the rest is renamed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch

from .configuration_swinv2_hf import SwinV2Config
from .modeling_swinv2_hf import (
    COORDINATE_RANGE,
    SwinV2PreTrainedModel,
    build_window_layout,
    relative_position_tables,
    window_and_shift,
)

SOURCES = ("original", "timm", "transformers")

# Buffers the original stores in its checkpoints; they follow from the config and are rebuilt by the model.
ORIGINAL_BUFFERS = re.compile(r"(relative_coords_table|relative_position_index|attn_mask)$")

_BLOCK = "layers.{stage}.blocks.{block}."
_OURS_BLOCK = "swinv2.encoder.stages.{stage}.blocks.{block}."
_HF_BLOCK = "encoder.layers.{stage}.blocks.{block}."
# (their key prefix, our key prefix): the rest of the key is carried over. A more specific prefix comes before a more
# general one on both sides, since both directions take the first match.
# fmt: off
_ORIGINAL_KEYS: tuple[tuple[str, str], ...] = (
    ("patch_embed.proj.",              "swinv2.embeddings.projection."),
    ("patch_embed.norm.",              "swinv2.embeddings.norm."),
    ("absolute_pos_embed",             "swinv2.embeddings.position_embeddings"),
    ("mask_token",                     "swinv2.embeddings.mask_token"),
    (f"{_BLOCK}norm1.",                f"{_OURS_BLOCK}attention_norm."),
    (f"{_BLOCK}norm2.",                f"{_OURS_BLOCK}mlp_norm."),
    (f"{_BLOCK}norm3.",                f"{_OURS_BLOCK}main_branch_norm."),
    (f"{_BLOCK}attn.cpb_mlp.",         f"{_OURS_BLOCK}attention.continuous_position_bias_mlp."),
    (f"{_BLOCK}attn.proj.",            f"{_OURS_BLOCK}attention.projection."),
    (f"{_BLOCK}attn.",                 f"{_OURS_BLOCK}attention."),
    (f"{_BLOCK}mlp.",                  f"{_OURS_BLOCK}mlp."),
    ("layers.{stage}.downsample.",     "swinv2.encoder.stages.{stage}.downsample."),
    ("norm.",                          "swinv2.layernorm."),
    ("head.",                          "classifier."),
    ("decoder.",                       "decoder."),
)
_TIMM_KEYS = tuple(("head.fc.", ours) if theirs == "head." else (theirs, ours) for theirs, ours in _ORIGINAL_KEYS)
_TRANSFORMERS_KEYS: tuple[tuple[str, str], ...] = (
    ("swinv2.embeddings.patch_embeddings.projection.",     "swinv2.embeddings.projection."),
    ("swinv2.embeddings.",                                 "swinv2.embeddings."),
    (f"swinv2.{_HF_BLOCK}layernorm_before.",               f"{_OURS_BLOCK}attention_norm."),
    (f"swinv2.{_HF_BLOCK}layernorm_after.",                f"{_OURS_BLOCK}mlp_norm."),
    (f"swinv2.{_HF_BLOCK}attention.self.query.bias",       f"{_OURS_BLOCK}attention.q_bias"),
    (f"swinv2.{_HF_BLOCK}attention.self.value.bias",       f"{_OURS_BLOCK}attention.v_bias"),
    (f"swinv2.{_HF_BLOCK}attention.output.dense.",         f"{_OURS_BLOCK}attention.projection."),
    (f"swinv2.{_HF_BLOCK}attention.self.continuous_position_bias_mlp.",
     f"{_OURS_BLOCK}attention.continuous_position_bias_mlp."),
    (f"swinv2.{_HF_BLOCK}attention.self.",                 f"{_OURS_BLOCK}attention."),
    (f"swinv2.{_HF_BLOCK}intermediate.dense.",             f"{_OURS_BLOCK}mlp.fc1."),
    (f"swinv2.{_HF_BLOCK}output.dense.",                   f"{_OURS_BLOCK}mlp.fc2."),
    ("swinv2.encoder.layers.{stage}.downsample.",          "swinv2.encoder.stages.{stage}.downsample."),
    ("swinv2.layernorm.",                                  "swinv2.layernorm."),
    ("classifier.",                                        "classifier."),
    ("decoder.",                                           "decoder."),
)
# fmt: on
_KEY_TABLES = {"original": _ORIGINAL_KEYS, "timm": _TIMM_KEYS, "transformers": _TRANSFORMERS_KEYS}
_SPLIT_PROJECTION = re.compile(r"^(.*attention\.self\.)(query|key|value)\.weight$")
_FUSED_PROJECTION = re.compile(r"^(.*attention\.self\.)qkv\.weight$")
_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.")
_SIMMIM_ENCODER = "encoder."
# The task models keep the encoder under `base_model_prefix`, as transformers' Swinv2 classes keep theirs (the same
# prefix); the bare models hold it at the top.
_BASE_MODEL = SwinV2PreTrainedModel.base_model_prefix + "."
_POSITION_EMBEDDINGS = _BASE_MODEL + "embeddings.position_embeddings"
_HEAD_WEIGHT = "classifier.weight"


class CheckpointError(ValueError):
    """A checkpoint that cannot become (or come from) the model the config describes; the message says why."""


def check_layout(layout: str, role: str) -> None:
    """Refuse a layout other than SOURCES, naming the `role` it was given for and the choices."""
    if layout not in SOURCES:
        raise CheckpointError(f"Unknown {role} {layout!r}; choose one of {', '.join(SOURCES)}.")


def with_base_model_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A bare model's weights in the task models' layout, the encoder under `base_model_prefix`; the weights of a task
    model as they are."""
    if any(key.startswith(_BASE_MODEL) for key in state_dict):
        return dict(state_dict)
    return {_BASE_MODEL + key: value for key, value in state_dict.items()}


def without_base_model_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder's weights as the bare model (ours or transformers') holds them: the inverse of
    `with_base_model_prefix`."""
    return {key.removeprefix(_BASE_MODEL): value for key, value in state_dict.items()}


def head_classes(state_dict: Mapping[str, torch.Tensor], layout: str) -> int | None:
    """The classes of the classifier head of a state dict in `layout` (None without a head), before its keys are
    mapped: the config is derived first, and the released 22K YAMLs say 1000 for their 21841-way heads."""
    head = state_dict.get(_rename(_HEAD_WEIGHT, _KEY_TABLES[layout], to_ours=False))
    return None if head is None else head.shape[0]


# ----------------------------------------------------------------------------------------------------------------------
# Renaming
# ----------------------------------------------------------------------------------------------------------------------


def _template_pattern(template: str) -> re.Pattern:
    """`layers.{stage}.blocks.{block}.` -> a regex matching it at the start of a key, capturing the numbers."""
    return re.compile(
        "^" + re.escape(template).replace(r"\{stage\}", r"(?P<stage>\d+)").replace(r"\{block\}", r"(?P<block>\d+)")
    )


def _rename(key: str, table: tuple[tuple[str, str], ...], to_ours: bool) -> str | None:
    for theirs, ours in table:
        source, target = (theirs, ours) if to_ours else (ours, theirs)
        match = _template_pattern(source).match(key)
        if match:
            return target.format(**match.groupdict()) + key[match.end() :]
    return None


def _rename_all(state_dict: Mapping[str, torch.Tensor], layout: str, to_ours: bool) -> dict[str, torch.Tensor]:
    renamed, unknown = {}, []
    for key, value in state_dict.items():
        new_key = _rename(key, _KEY_TABLES[layout], to_ours)
        if new_key is None:
            unknown.append(f"{key} {tuple(value.shape)}")
        else:
            renamed[new_key] = value
    if unknown:
        side = f"the {layout} checkpoint" if to_ours else "this package's state dict"
        raise CheckpointError(
            f"{len(unknown)} keys of {side} are not SwinV2 weights, e.g. {', '.join(unknown[:5])}. "
            f"Is it a SwinV2 checkpoint, and is the source ({layout}) right?"
        )
    return renamed


def _move_downsample(state_dict: Mapping[str, torch.Tensor], offset: int) -> dict[str, torch.Tensor]:
    """Move patch merging between the end of stage i (original) and the start of stage i+1 (timm >= 0.9)."""
    return {
        _DOWNSAMPLE.sub(lambda m: f"layers.{int(m[1]) + offset}.downsample.", key): value
        for key, value in state_dict.items()
    }


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Rename (and fuse where layouts differ) a `source` state dict into this package's layout. Stored original
    buffers are dropped: check them first with `check_original_buffers`.

    Raises:
        CheckpointError: an unknown source, or keys the table does not know (named, with shapes: usually another
            architecture).
    """
    check_layout(source, "checkpoint source")
    state_dict = {key: value for key, value in state_dict.items() if not ORIGINAL_BUFFERS.search(key)}
    if source == "original":
        if any(key.startswith(_SIMMIM_ENCODER) for key in state_dict):  # the SimMIM wrapper
            state_dict = {key.removeprefix(_SIMMIM_ENCODER): value for key, value in state_dict.items()}
        state_dict = {key.replace(".attn.rpe_mlp.", ".attn.cpb_mlp."): v for key, v in state_dict.items()}  # old SimMIM
    if source == "timm":
        state_dict = {key: value for key, value in state_dict.items() if not key.endswith("attn.k_bias")}
        if not any(key.startswith("layers.0.downsample.") for key in state_dict):
            state_dict = _move_downsample(state_dict, -1)
    if source == "transformers":
        state_dict = _fuse_query_key_value(with_base_model_prefix(state_dict))
    converted = _rename_all(state_dict, source, to_ours=True)
    if source == "transformers" and _POSITION_EMBEDDINGS in converted:
        # transformers keeps one extra (class) position in front; the original and this package do not.
        converted[_POSITION_EMBEDDINGS] = converted[_POSITION_EMBEDDINGS][:, 1:]
    return converted


def export_state_dict(
    state_dict: Mapping[str, torch.Tensor], target: str, config: SwinV2Config
) -> dict[str, torch.Tensor]:
    """This package's state dict (task-model layout) in the `target` layout, loadable by that implementation (for
    transformers: by its class of the same task, whose bare model holds the encoder at the top).

    Raises:
        CheckpointError: an unknown target, or a model the target cannot express (the main-branch norm of
            SwinV2-H/G exists in no other implementation).
    """
    check_layout(target, "export target")
    if config.extra_norm_period and target != "original":
        raise CheckpointError(
            f"{target} has no main-branch LayerNorm (extra_norm_period={config.extra_norm_period}, SwinV2-H/G); "
            "export this model to the original layout instead."
        )
    exported = _rename_all(state_dict, target, to_ours=False)
    if target == "original":
        exported.update(original_buffers(config))
        if any(key.startswith("decoder.") for key in exported):  # SimMIM: the encoder sits under `encoder.`
            exported = {(k if k.startswith("decoder.") else _SIMMIM_ENCODER + k): v for k, v in exported.items()}
    if target == "timm":
        exported = _move_downsample(exported, +1)
    if target == "transformers":
        exported = _split_query_key_value(exported)
        if _POSITION_EMBEDDINGS in exported:
            positions = exported[_POSITION_EMBEDDINGS]
            exported[_POSITION_EMBEDDINGS] = torch.cat([positions[:, :1] * 0, positions], dim=1)
        if all(key.startswith(_BASE_MODEL) for key in exported):  # no head: transformers' bare Swinv2Model
            exported = without_base_model_prefix(exported)
    return exported


def _fuse_query_key_value(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' separate query/key/value weights -> one `qkv.weight` with rows q; k; v (the original's)."""
    fused: dict[str, torch.Tensor] = {}
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        match = _SPLIT_PROJECTION.match(key)
        if match:
            parts.setdefault(match[1], {})[match[2]] = value
        elif not key.endswith("attention.self.key.bias"):
            fused[key] = value
    for prefix, projections in parts.items():
        fused[f"{prefix}qkv.weight"] = torch.cat([projections["query"], projections["key"], projections["value"]])
    return fused


def _split_query_key_value(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `_fuse_query_key_value`."""
    split: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        match = _FUSED_PROJECTION.match(key)
        if not match:
            split[key] = value
            continue
        for name, part in zip(("query", "key", "value"), value.chunk(3)):
            split[f"{match[1]}{name}.weight"] = part.clone()
    return split


# ----------------------------------------------------------------------------------------------------------------------
# The original's stored buffers
# ----------------------------------------------------------------------------------------------------------------------


def original_buffers(config: SwinV2Config) -> dict[str, torch.Tensor]:
    """The buffers the original stores for `config` at its image size, built as the original builds them.

    Raises:
        CheckpointError: an image size the original cannot build (maps not divisible by their windows).
    """
    height, width = (side // config.patch_size for side in config.image_height_width)
    buffers: dict[str, torch.Tensor] = {}
    for stage, depth in enumerate(config.depths):
        window, shift = window_and_shift(height, width, config.window_size)
        if height % window or width % window:
            raise CheckpointError(
                f"Stage {stage} has a {height}x{width} map that {window}x{window} windows do not tile; the original "
                "cannot build this image size. Choose an image size whose maps divide by the window."
            )
        coordinates, index = relative_position_tables(window, config.pretrained_window_sizes[stage])
        shifted_mask = build_window_layout(height, width, config.window_size, None, True, torch.float32, "cpu").masks
        for block in range(depth):
            prefix = f"layers.{stage}.blocks.{block}."
            buffers[f"{prefix}attn.relative_coords_table"] = coordinates.unsqueeze(0)
            buffers[f"{prefix}attn.relative_position_index"] = index
            if block % 2 == 1 and shift:
                buffers[f"{prefix}attn_mask"] = shifted_mask[True].squeeze(0)
        height, width = (height + 1) // 2, (width + 1) // 2
    return buffers


def _implied_pretrained_window(table: torch.Tensor) -> int:
    """The pretrained window a stored coordinate table was built with (0 when it is the window itself)."""
    window = (table.shape[1] + 1) // 2
    if window < 2:
        return 0
    # The last entry is sign(x) log2(1 + x) / log2(8) at x = 8 (window - 1) / (pretrained - 1).
    largest = table[0, -1, -1, 0].double().item()
    pretrained = round(COORDINATE_RANGE * (window - 1) / (2 ** (math.log2(COORDINATE_RANGE) * largest) - 1)) + 1
    return 0 if pretrained == window else pretrained


def check_original_buffers(state_dict: Mapping[str, torch.Tensor], config: SwinV2Config) -> int:
    """Compare the buffers stored in an original checkpoint with those `config` implies; returns how many matched.

    Raises:
        CheckpointError: the first disagreement, saying which window, pretrained window or image size the checkpoint
            implies, so the fix (another model name, `PRETRAINED_WINDOW_SIZES`, `IMG_SIZE`) is plain.
    """
    stored = {key.removeprefix(_SIMMIM_ENCODER): v for key, v in state_dict.items() if ORIGINAL_BUFFERS.search(key)}
    if not stored:
        return 0
    expected = original_buffers(config)
    for key, value in stored.items():
        stage = int(key.split(".")[1])
        if key.endswith("relative_coords_table"):
            implied = ((value.shape[1] + 1) // 2, _implied_pretrained_window(value))
            configured = expected.get(key)
            if (
                configured is None
                or configured.shape != value.shape
                or not torch.allclose(configured, value, atol=1e-6)
            ):
                window = (configured.shape[1] + 1) // 2 if configured is not None else None
                raise CheckpointError(
                    f"{key} implies window {implied[0]} with pretrained window {implied[1]} (0: none) in stage "
                    f"{stage}, but the config gives window {window} with pretrained window "
                    f"{config.pretrained_window_sizes[stage]}. Use the model name or config this checkpoint was made "
                    f"with (window_size / PRETRAINED_WINDOW_SIZES)."
                )
        elif key.endswith("attn_mask"):
            configured = expected.get(key)
            if configured is None or configured.shape != value.shape or not torch.equal(configured, value):
                tokens = value.shape[0] * value.shape[1]
                side = math.isqrt(tokens) * config.patch_size * 2**stage
                raise CheckpointError(
                    f"{key} is the shift mask of a {value.shape[0]}-window map ({tokens} tokens in stage {stage}, "
                    f"an image of about {side} px), which the config (image size {config.image_size}, window "
                    f"{config.window_size}) does not give. Use the image size and window the checkpoint was made with."
                )
        elif key not in expected or not torch.equal(expected[key], value):
            raise CheckpointError(f"{key} does not match the window the config gives in stage {stage}.")
    return len(stored)


def check_state_dict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise a CheckpointError naming the first missing, unexpected and mis-shaped keys (with shapes) before loading,
    instead of the long list `load_state_dict` prints after a partial load."""
    own = model.state_dict()
    problems = []
    missing = [f"{key} {tuple(own[key].shape)}" for key in own if key not in state_dict]
    unexpected = [f"{key} {tuple(value.shape)}" for key, value in state_dict.items() if key not in own]
    mismatched = [
        f"{key}: checkpoint {tuple(value.shape)}, model {tuple(own[key].shape)}"
        for key, value in state_dict.items()
        if key in own and own[key].shape != value.shape
    ]
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", mismatched)):
        if keys:
            problems.append(f"{len(keys)} {label} keys, e.g. {'; '.join(keys[:4])}")
    if problems:
        raise CheckpointError(
            "The checkpoint does not match the config: " + ". ".join(problems) + ". Check the model name or config "
            "(size, window, image size, classes) against the checkpoint."
        )
