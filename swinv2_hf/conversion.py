"""Weights of the other SwinV2 implementations in this package's layout: the one place that knows their key names.

Sources:
- `original`: microsoft/Swin-Transformer `.pth` files (`SwinTransformerV2`, `SimMIM`), bare or `{'model': ...}`;
  its stored buffers (`relative_coords_table`, `relative_position_index`, `attn_mask`) are rebuilt, never copied.
- `timm`: `timm.models.swin_transformer_v2` state dicts, patch merging at the start of a stage (timm >= 0.9) or at the
  end (older releases).
- `transformers`: transformers' `Swinv2*` models (split query/key/value, an extra class position).

Every key is renamed through a regex table; the result uses the task models' layout (`swinv2.` prefix, `classifier`,
`decoder`), which `from_pretrained` also maps onto the bare model and the backbone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch
from safetensors.torch import load_file

from .configuration_swinv2_hf import SwinV2Config

SOURCES = ("original", "timm", "transformers")

# Buffers the original stores in its checkpoints; they follow from the config and are rebuilt by the model.
ORIGINAL_BUFFERS = re.compile(r"(relative_coords_table|relative_position_index|attn_mask)$")

_BLOCK = r"layers\.(\d+)\.blocks\.(\d+)\."
_OURS_BLOCK = r"swinv2.encoder.stages.\1.blocks.\2."
# fmt: off
_ORIGINAL_AND_TIMM_KEYS: list[tuple[str, str]] = [
    (r"^patch_embed\.proj\.",                       "swinv2.embeddings.projection."),
    (r"^patch_embed\.norm\.",                       "swinv2.embeddings.norm."),
    (r"^absolute_pos_embed$",                       "swinv2.embeddings.position_embeddings"),
    (r"^mask_token$",                               "swinv2.embeddings.mask_token"),
    (rf"^{_BLOCK}norm1\.",                          rf"{_OURS_BLOCK}attention_norm."),
    (rf"^{_BLOCK}norm2\.",                          rf"{_OURS_BLOCK}mlp_norm."),
    (rf"^{_BLOCK}attn\.(?:cpb_mlp|rpe_mlp)\.",      rf"{_OURS_BLOCK}attention.continuous_position_bias_mlp."),
    (rf"^{_BLOCK}attn\.proj\.",                     rf"{_OURS_BLOCK}attention.projection."),
    (rf"^{_BLOCK}attn\.",                           rf"{_OURS_BLOCK}attention."),
    (rf"^{_BLOCK}mlp\.",                            rf"{_OURS_BLOCK}mlp."),
    (rf"^{_BLOCK}norm3\.",                          rf"{_OURS_BLOCK}main_branch_norm."),
    (r"^layers\.(\d+)\.downsample\.",               r"swinv2.encoder.stages.\1.downsample."),
    (r"^norm\.",                                    "swinv2.layernorm."),
    (r"^head\.(?:fc\.)?",                           "classifier."),
    (r"^decoder\.",                                 "decoder."),
]
_TRANSFORMERS_BLOCK = r"encoder\.layers\.(\d+)\.blocks\.(\d+)\."
_TRANSFORMERS_KEYS: list[tuple[str, str]] = [
    (r"^embeddings\.patch_embeddings\.projection\.", "swinv2.embeddings.projection."),
    (r"^embeddings\.",                               "swinv2.embeddings."),
    (rf"^{_TRANSFORMERS_BLOCK}layernorm_before\.",   rf"{_OURS_BLOCK}attention_norm."),
    (rf"^{_TRANSFORMERS_BLOCK}layernorm_after\.",    rf"{_OURS_BLOCK}mlp_norm."),
    (rf"^{_TRANSFORMERS_BLOCK}attention\.self\.query\.bias$", rf"{_OURS_BLOCK}attention.q_bias"),
    (rf"^{_TRANSFORMERS_BLOCK}attention\.self\.value\.bias$", rf"{_OURS_BLOCK}attention.v_bias"),
    (rf"^{_TRANSFORMERS_BLOCK}attention\.self\.",    rf"{_OURS_BLOCK}attention."),
    (rf"^{_TRANSFORMERS_BLOCK}attention\.output\.dense\.", rf"{_OURS_BLOCK}attention.projection."),
    (rf"^{_TRANSFORMERS_BLOCK}intermediate\.dense\.", rf"{_OURS_BLOCK}mlp.fc1."),
    (rf"^{_TRANSFORMERS_BLOCK}output\.dense\.",      rf"{_OURS_BLOCK}mlp.fc2."),
    (r"^encoder\.layers\.(\d+)\.downsample\.",       r"swinv2.encoder.stages.\1.downsample."),
    (r"^layernorm\.",                                "swinv2.layernorm."),
    (r"^classifier\.",                               "classifier."),
    (r"^decoder\.",                                  "decoder."),
]
# fmt: on
_SPLIT_PROJECTION = re.compile(r"^(.*attention\.self\.)(query|key|value)\.weight$")


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file, or of a `.pth`/`.bin` read with `weights_only=True` (bare, `{'model': ...}`
    or `{'state_dict': ...}`)."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        return load_file(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for container in ("model", "state_dict"):
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(container), Mapping):
            checkpoint = checkpoint[container]
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f"{path} holds no state dict (a mapping of names to tensors); is it a model checkpoint?")
    return dict(checkpoint)


def _rename(key: str, table: list[tuple[str, str]]) -> str | None:
    for pattern, replacement in table:
        renamed, count = re.subn(pattern, replacement, key)
        if count:
            return renamed
    return None


def _timm_downsample_at_stage_start(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """timm >= 0.9 merges patches at the start of stage i+1, older timm (and the original) at the end of stage i."""
    return not any(key.startswith("layers.0.downsample.") for key in state_dict)


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Rename (and fuse or split where layouts differ) a `source` state dict into this package's layout.

    Raises:
        ValueError: unknown source, or keys the table does not know (named, with shapes: usually another
            architecture).
    """
    if source not in SOURCES:
        raise ValueError(f"Unknown checkpoint source {source!r}; choose one of {', '.join(SOURCES)}.")
    state_dict = dict(state_dict)
    if source == "original" and any(key.startswith("encoder.") for key in state_dict):
        state_dict = {key.removeprefix("encoder."): value for key, value in state_dict.items()}  # SimMIM wrapper
    if source == "timm" and _timm_downsample_at_stage_start(state_dict):
        state_dict = {
            re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m[1]) - 1}.downsample.", key): value
            for key, value in state_dict.items()
        }
    if source == "transformers":
        state_dict = _fuse_query_key_value({key.removeprefix("swinv2."): value for key, value in state_dict.items()})
    table = _TRANSFORMERS_KEYS if source == "transformers" else _ORIGINAL_AND_TIMM_KEYS

    converted, unknown = {}, []
    for key, value in state_dict.items():
        if ORIGINAL_BUFFERS.search(key) or key.endswith("k_bias"):  # rebuilt buffers; timm's zero key bias
            continue
        new_key = _rename(key, table)
        if new_key is None:
            unknown.append(f"{key} {tuple(value.shape)}")
            continue
        converted[new_key] = value
    if unknown:
        raise ValueError(
            f"{len(unknown)} keys of the {source} checkpoint are not SwinV2 weights, e.g. {', '.join(unknown[:5])}. "
            f"Is it a SwinV2 checkpoint, and is --source {source} right?"
        )
    if source == "transformers" and "swinv2.embeddings.position_embeddings" in converted:
        # transformers keeps one extra (class) position in front; the original and this package do not.
        converted["swinv2.embeddings.position_embeddings"] = converted["swinv2.embeddings.position_embeddings"][:, 1:]
    return converted


def _fuse_query_key_value(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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


def config_from_original(constructor_kwargs: Mapping, **overrides) -> SwinV2Config:
    """SwinV2Config from the keyword arguments of the original `SwinTransformerV2` (or timm's) constructor."""
    kwargs = dict(constructor_kwargs)
    config = {
        "image_size": kwargs.get("img_size", 224),
        "patch_size": kwargs.get("patch_size", 4),
        "num_channels": kwargs.get("in_chans", 3),
        "embed_dim": kwargs.get("embed_dim", 96),
        "depths": kwargs.get("depths", (2, 2, 6, 2)),
        "num_heads": kwargs.get("num_heads", (3, 6, 12, 24)),
        "window_size": kwargs.get("window_size", 7),
        "pretrained_window_sizes": kwargs.get("pretrained_window_sizes"),
        "mlp_ratio": kwargs.get("mlp_ratio", 4.0),
        "qkv_bias": kwargs.get("qkv_bias", True),
        "hidden_dropout_prob": kwargs.get("drop_rate", 0.0),
        "attention_probs_dropout_prob": kwargs.get("attn_drop_rate", 0.0),
        "drop_path_rate": kwargs.get("drop_path_rate", 0.1),
        "use_absolute_embeddings": kwargs.get("ape", False),
        "patch_norm": kwargs.get("patch_norm", True),
        "num_labels": kwargs.get("num_classes", 1000),
    }
    return SwinV2Config(**{**config, **overrides})
