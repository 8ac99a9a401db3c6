"""Swin Transformer V2 for Hugging Face Transformers.

Liu et al., "Swin Transformer V2: Scaling Up Capacity and Resolution", arXiv 2111.09883
(https://arxiv.org/abs/2111.09883); original code: https://github.com/microsoft/Swin-Transformer
(`models/swin_transformer_v2.py`, `models/simmim.py`, MIT).

The computation follows the original exactly (res-post-norm, scaled cosine attention with the logit scale clamped at
the float32 value of log(100), the log-spaced continuous position bias, the shift mask, patch merging with the V2
norm placement, the original initialisation). The module layout follows transformers' `Swinv2` (Apache-2.0) with
these deliberate differences, where the original wins over transformers:
- windows and shifts follow the feature map of the actual input, not `config.image_size`; a window is clipped to the
  smaller side of the map (the original's `min(H, W)`), transformers uses the height only;
- the clamp bound is the original's float32 log(100), not `math.log(100)`; the shift mask is added once (transformers
  adds it twice);
- tokens that exist only as padding (to fill windows or from a `pixel_mask`) are masked out of attention and pooling;
- the res-post-norm LayerNorms start at zero as in the original (transformers starts them at one);
- absolute position embeddings have one position per patch, as the original's `ape` (transformers adds one).
Beyond both: fused qkv projection, an SDPA path, a cached position bias in inference, chunked window attention and
the extra main-branch LayerNorm of SwinV2-H/G.

This file imports only torch, transformers, its configuration and `kernels.py` (which kernel computes each step on
the machine at hand) so that they ship together as Hub remote code.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BackboneOutput
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, ModelOutput, cached_file, logging

from .configuration_swinv2_hf import SwinV2Config
from .kernels import cosine_query_key, gelu_mlp, linear, standard_ops_only, window_chunk

logger = logging.get_logger(__name__)

# The original clamps with `torch.log(torch.tensor(1 / 0.01))`, a float32 value; float64 parity needs exactly it.
LOGIT_SCALE_MAX = torch.tensor(1.0 / 0.01, dtype=torch.float32).log().item()
LOGIT_SCALE_INIT = math.log(10.0)
# Relative coordinates are scaled to [-8, 8] before the log spacing (paper eq. 4).
COORDINATE_RANGE = 8.0
# The position bias is 16 * sigmoid(MLP output) (original code; keeps the bias in (0, 16)).
POSITION_BIAS_SCALE = 16.0
# Fill of the shift mask between tokens of different regions, as the original (not -inf).
SHIFT_MASK_FILL = -100.0
# Fill for keys that exist only as padding: far below any cosine logit (at most 100) plus bias (at most 16), and
# finite so that windows made only of padding stay NaN-free.
PADDING_MASK_FILL = -1.0e4


# ----------------------------------------------------------------------------------------------------------------------
# Geometry: pure functions of shapes
# ----------------------------------------------------------------------------------------------------------------------


def window_and_shift(height: int, width: int, window_size: int) -> tuple[int, int]:
    """The window and shift a stage uses on a `height` x `width` map.

    A map not larger than the window becomes a single window of its smaller side, without shift (the original's rule;
    equality included). Otherwise the configured window, shifted by half of it in every other block.
    """
    if min(height, width) <= window_size:
        return min(height, width), 0
    return window_size, window_size // 2


def relative_position_tables(window: int, pretrained_window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-spaced relative coordinates and the index that spreads them over a window's token pairs.

    Computed in float32 like the original, whose buffers are float32 even in a float64 model: exact parity needs the
    same rounding.

    Returns:
        coordinates: (2*window-1, 2*window-1, 2) float32, `sign(x) * log2(1 + |x|) / log2(8)` with x in [-8, 8].
        index: (window**2, window**2) int64 into the flattened coordinate table.
    """
    offsets = torch.arange(-(window - 1), window, dtype=torch.float32)
    coordinates = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), dim=-1)  # (2w-1, 2w-1, 2)
    # Normalise by the pretraining window when set, so a transferred model sees the coordinates it was trained on.
    # A 1x1 window has only the offset 0, which the original turns into 0/0; keep it 0.
    normaliser = pretrained_window - 1 if pretrained_window > 0 else window - 1
    if normaliser > 0:
        coordinates = coordinates / normaliser
    coordinates = coordinates * COORDINATE_RANGE
    coordinates = torch.sign(coordinates) * torch.log2(coordinates.abs() + 1.0) / math.log2(COORDINATE_RANGE)

    positions = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    relative = (positions[:, :, None] - positions[:, None, :]).permute(1, 2, 0) + (window - 1)  # (w*w, w*w, 2)
    index = relative[..., 0] * (2 * window - 1) + relative[..., 1]
    return coordinates, index


def padding_to_multiple(length: int, multiple: int) -> int:
    """What pads `length` up to a multiple of `multiple`, written as the rounded-up length minus `length`, so that with
    symbolic sizes (export) the padded length is visibly a multiple and reshapes into windows need no guard."""
    return (length + multiple - 1) // multiple * multiple - length


def needs_padding(*amounts: int) -> bool:
    """Whether to pad (and later crop) by `amounts`: when any is non-zero, and always while tracing or exporting, where
    sizes are symbolic and one graph must serve every input size (a zero pad is exact)."""
    return standard_ops_only() or any(amount != 0 for amount in amounts)


def window_partition(hidden_states: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, num_windows, window*window, C), windows in row-major order."""
    batch, height, width, channels = hidden_states.shape
    rows, columns = height // window, width // window
    hidden_states = hidden_states.view(batch, rows, window, columns, window, channels)
    return hidden_states.permute(0, 1, 3, 2, 4, 5).reshape(batch, rows * columns, window * window, channels)


def window_reverse(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """(B, num_windows, window*window, C) -> (B, H, W, C), the inverse of `window_partition`."""
    batch, _, _, channels = windows.shape
    windows = windows.view(batch, height // window, width // window, window, window, channels)
    return windows.permute(0, 1, 3, 2, 4, 5).reshape(batch, height, width, channels)


def shift_region_ids(length: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """Region of every position along one axis of a cyclically shifted map: the original's three slices."""
    position = torch.arange(length, device=device)
    return (position >= length - window).long() + (position >= length - shift).long()


@dataclass
class WindowLayout:
    """How one stage splits its (height, width) map into windows, shared by all its blocks.

    `masks[shifted]` is None or an additive mask (B or 1, num_windows, N, N) for the blocks with that shift; `padded`
    whether the blocks pad the map (and crop it back), decided once per stage (`needs_padding`).
    """

    window: int
    shift: int
    pad_bottom: int
    pad_right: int
    padded: bool
    masks: dict[bool, torch.Tensor | None]


def build_window_layout(
    height: int,
    width: int,
    window_size: int,
    token_mask: torch.Tensor | None,
    has_shifted_blocks: bool,
    dtype: torch.dtype,
    device: torch.device,
) -> WindowLayout:
    """Window, shift, padding and attention masks of a stage.

    Args:
        token_mask: (B, H, W) bool, True for real tokens, or None when every token is real.
        has_shifted_blocks: Whether the stage has a second block, so the shifted mask is needed at all.
    """
    window, shift = window_and_shift(height, width, window_size)
    pad_bottom, pad_right = padding_to_multiple(height, window), padding_to_multiple(width, window)
    padded_height, padded_width = height + pad_bottom, width + pad_right
    padded = needs_padding(pad_bottom, pad_right)

    key_mask = None
    if token_mask is not None or padded:
        valid = torch.ones(1, height, width, dtype=torch.bool, device=device) if token_mask is None else token_mask
        valid = F.pad(valid, (0, pad_right, 0, pad_bottom), value=False)  # (B, Hp, Wp)

        def padding_mask(roll: int) -> torch.Tensor:
            rolled = torch.roll(valid, shifts=(-roll, -roll), dims=(1, 2)) if roll else valid
            windows = window_partition(rolled.unsqueeze(-1), window).squeeze(-1)  # (B, nW, N)
            mask = torch.zeros(windows.shape, dtype=dtype, device=device).masked_fill(~windows, PADDING_MASK_FILL)
            return mask.unsqueeze(2)  # (B, nW, 1, N): masks keys only

        key_mask = padding_mask

    masks: dict[bool, torch.Tensor | None] = {False: key_mask(0) if key_mask else None, True: None}
    if has_shifted_blocks and shift:
        rows = shift_region_ids(padded_height, window, shift, device)
        columns = shift_region_ids(padded_width, window, shift, device)
        regions = (rows[:, None] * 3 + columns[None, :]).view(1, padded_height, padded_width, 1)
        regions = window_partition(regions, window).squeeze(-1)  # (1, nW, N)
        different = regions.unsqueeze(-1) != regions.unsqueeze(-2)  # (1, nW, N, N)
        region_mask = torch.zeros(different.shape, dtype=dtype, device=device).masked_fill(different, SHIFT_MASK_FILL)
        masks[True] = region_mask + key_mask(shift) if key_mask else region_mask
    return WindowLayout(window, shift, pad_bottom, pad_right, padded, masks)


def autocast_disabled(device: torch.device) -> contextlib.AbstractContextManager:
    """A region that keeps its own precision under autocast; the meta device (shape and FLOP counting) has no autocast
    state to switch off."""
    if device.type == "meta":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, enabled=False)


def merge_token_mask(token_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Token mask after 2x2 patch merging: a merged token is real when any of its four is."""
    if token_mask is None:
        return None
    merged = F.max_pool2d(token_mask.unsqueeze(1).float(), kernel_size=2, stride=2, ceil_mode=True)
    return merged.squeeze(1).bool()


# ----------------------------------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------------------------------


class SwinV2DropPath(nn.Module):
    """Stochastic depth per sample on the residual branch; identity when not training."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep_prob = 1.0 - self.drop_prob
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
        keep = hidden_states.new_empty(shape).bernoulli_(keep_prob)
        return hidden_states * keep / keep_prob

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class SwinV2Embeddings(nn.Module):
    """Patch embedding (conv with stride = patch), optional LayerNorm, SimMIM mask token and absolute positions.

    Args:
        config: The model configuration.
        use_mask_token: Create the learnable token that replaces masked patches (SimMIM).
    """

    def __init__(self, config: SwinV2Config, use_mask_token: bool = False) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.projection = nn.Conv2d(config.num_channels, config.embed_dim, config.patch_size, config.patch_size)
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps) if config.patch_norm else None
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.embed_dim)) if use_mask_token else None
        image_height, image_width = config.image_height_width
        self.patch_grid = (image_height // config.patch_size, image_width // config.patch_size)
        self.position_embeddings = (
            nn.Parameter(torch.zeros(1, self.patch_grid[0] * self.patch_grid[1], config.embed_dim))
            if config.use_absolute_embeddings
            else None
        )
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def absolute_positions(self, height: int, width: int) -> torch.Tensor:
        """Position embeddings for a height x width patch grid, bicubic-resized from the configured grid."""
        if (height, width) == self.patch_grid:
            return self.position_embeddings
        grid = self.position_embeddings.view(1, *self.patch_grid, -1).permute(0, 3, 1, 2)  # (1, C, h, w)
        grid = F.interpolate(grid.float(), size=(height, width), mode="bicubic", align_corners=False)
        return grid.to(self.position_embeddings.dtype).flatten(2).transpose(1, 2)  # (1, H*W, C)

    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor | None]:
        """Returns the tokens (B, H*W, C), the patch grid (H, W) and the token mask (B, H, W) or None."""
        pad_bottom = padding_to_multiple(pixel_values.shape[2], self.patch_size)
        pad_right = padding_to_multiple(pixel_values.shape[3], self.patch_size)
        if needs_padding(pad_bottom, pad_right):
            pixel_values = F.pad(pixel_values, (0, pad_right, 0, pad_bottom))
        embeddings = self.projection(pixel_values)  # (B, C, H, W)
        batch, _, height, width = embeddings.shape
        embeddings = embeddings.flatten(2).transpose(1, 2)  # (B, H*W, C)
        if self.norm is not None:
            embeddings = self.norm(embeddings)

        token_mask = None
        if pixel_mask is not None:
            pixel_mask = F.pad(pixel_mask.to(embeddings.dtype), (0, pad_right, 0, pad_bottom)).unsqueeze(1)
            token_mask = F.max_pool2d(pixel_mask, self.patch_size).squeeze(1).bool()  # (B, H, W): any real pixel

        if bool_masked_pos is not None:
            weight = bool_masked_pos.reshape(batch, -1, 1).to(embeddings.dtype)
            embeddings = embeddings * (1.0 - weight) + self.mask_token.to(embeddings.dtype) * weight
        if self.position_embeddings is not None:
            embeddings = embeddings + self.absolute_positions(height, width)
        return self.dropout(embeddings), (height, width), token_mask


class SwinV2PatchMerging(nn.Module):
    """Concatenate each 2x2 neighbourhood (4C), reduce to 2C without bias, then LayerNorm (the V2 norm placement)."""

    def __init__(self, config: SwinV2Config, dim: int) -> None:
        super().__init__()
        self.config = config
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(2 * dim, eps=config.layer_norm_eps)

    def forward(
        self, hidden_states: torch.Tensor, height: int, width: int, token_mask: torch.Tensor | None
    ) -> torch.Tensor:
        batch, _, channels = hidden_states.shape
        hidden_states = hidden_states.view(batch, height, width, channels)
        if token_mask is not None:
            # Padding tokens count as the zeros that pad an image of odd size, whatever they computed.
            hidden_states = hidden_states * token_mask.unsqueeze(-1).to(hidden_states.dtype)
        pad_bottom, pad_right = padding_to_multiple(height, 2), padding_to_multiple(width, 2)
        if needs_padding(pad_bottom, pad_right):
            hidden_states = F.pad(hidden_states, (0, 0, 0, pad_right, 0, pad_bottom))
        # The 2x2 neighbours (row, column) in the original's order, concatenated on channels.
        offsets = ((0, 0), (1, 0), (0, 1), (1, 1))
        hidden_states = torch.cat([hidden_states[:, row::2, column::2] for row, column in offsets], dim=-1)
        hidden_states = hidden_states.view(batch, -1, 4 * channels)  # (B, H/2*W/2, 4C)
        return self.norm(linear(self.reduction, hidden_states, self.config.linear_implementation))


def attention_precision(qkv: torch.Tensor) -> tuple[torch.dtype, contextlib.AbstractContextManager]:
    """The dtype of the attention core, and the context to compute it in: the one place that decides its precision.

    On CPU at least float32 with autocast off (which would cast the core back): half-precision attention measured
    slower there than float32 (bf16 SDPA 37 ms vs float32 19 ms per SwinV2-T stage-1 layer, batch 8) and is less exact.
    Elsewhere the projection's dtype under the caller's autocast, where half-precision kernels are the fast ones. The
    cosine normalisation and the position bias are computed in at least float32 either way.
    """
    if qkv.device.type == "cpu":
        return torch.promote_types(qkv.dtype, torch.float32), autocast_disabled(qkv.device)
    return qkv.dtype, contextlib.nullcontext()


def window_groups(
    hidden_states: torch.Tensor, mask: torch.Tensor | None, chunk_size: int | None
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """The windows (B, nW, N, C) with their mask (B or 1, nW, N, N), in the groups that attention processes one after
    the other: `config.attention_chunk_size` windows at a time (the paper's sequential attention, which bounds its
    memory), cache-sized groups in a CPU forward without gradients (`kernels.window_chunk`), otherwise all at once."""
    batch, num_windows, tokens, _ = hidden_states.shape
    chunk = window_chunk(hidden_states, rows_per_item=batch * tokens, configured=chunk_size)
    if chunk is None:
        return [(hidden_states, mask)]
    parts = [slice(start, start + chunk) for start in range(0, num_windows, chunk)]
    return [(hidden_states[:, part], None if mask is None else mask[:, part]) for part in parts]


def concat_windows(groups: list[torch.Tensor]) -> torch.Tensor:
    """Per-group results of `window_groups` joined along the windows (dimension 1) again; a single group as it is."""
    return groups[0] if len(groups) == 1 else torch.cat(groups, dim=1)


class SwinV2WindowAttention(nn.Module):
    """Scaled cosine window attention with a continuous position bias (paper section 3.2, eq. 2-4).

    Args:
        config: The model configuration (dropouts, biases, MLP width, chunking, attention implementation).
        dim: Channels of the block.
        num_heads: Attention heads.
        window: The window at the configured image size; its tables are cached as buffers, other windows (other
            input sizes) are computed on the fly.
        pretrained_window: The window the weights were pretrained with (0: none).
    """

    def __init__(self, config: SwinV2Config, dim: int, num_heads: int, window: int, pretrained_window: int) -> None:
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.window = window
        self.pretrained_window = pretrained_window
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        # The original keeps separate query and value biases and no key bias.
        self.q_bias = nn.Parameter(torch.zeros(dim)) if config.qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if config.qkv_bias else None
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), LOGIT_SCALE_INIT))
        self.continuous_position_bias_mlp = nn.Sequential(
            nn.Linear(2, config.cpb_mlp_hidden_size),
            nn.ReLU(inplace=True),
            nn.Linear(config.cpb_mlp_hidden_size, num_heads, bias=False),
        )
        coordinates, index = relative_position_tables(window, pretrained_window)
        self.register_buffer("relative_coords_table", coordinates, persistent=False)
        self.register_buffer("relative_position_index", index, persistent=False)
        self.attention_dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self.projection = nn.Linear(dim, dim)
        self.projection_dropout = nn.Dropout(config.hidden_dropout_prob)
        self._bias_cache: tuple[tuple, torch.Tensor] | None = None

    def reset_tables(self) -> None:
        """Rebuild the coordinate buffers from the config (they are never loaded from checkpoints)."""
        coordinates, index = relative_position_tables(self.window, self.pretrained_window)
        device = self.relative_position_index.device
        self.relative_coords_table = coordinates.to(device=device, dtype=self.relative_coords_table.dtype)
        self.relative_position_index = index.to(device)
        self._bias_cache = None

    def forward(
        self,
        hidden_states: torch.Tensor,
        window: int,
        mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """softmax(cos(q, k) * min(exp(logit_scale), 100) + 16 * sigmoid(CPB) + mask) V inside each window (paper eq.
        2), then the output projection.

        Args:
            hidden_states: (B, num_windows, N, C) with N = window**2.
            window: The window side of this call.
            mask: None or additive (B or 1, num_windows, N, N): shift regions and padding keys.
            output_attentions: Also return the probabilities (B*num_windows, heads, N, N); uses the eager kernel.
        """
        batch, _, tokens, channels = hidden_states.shape
        head_dim = channels // self.num_heads
        implementation = self.config.linear_implementation
        qkv_bias = None if self.q_bias is None else torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        logit_scale = torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp().flatten()  # (heads,)
        position_bias = self.cached_position_bias(window)  # (heads, N, N): 16 * sigmoid(CPB)
        # SDPA's fused CPU kernel gives an additive mask no gradient: training the position bias would take SDPA's
        # math path, slower and larger than the explicit one (training step 4.30 s / 1017 MiB against 3.94 s / 909 MiB).
        trains_bias = self.training and position_bias.requires_grad and position_bias.device.type == "cpu"
        fused_attn = self.config._attn_implementation == "sdpa" and not output_attentions and not trains_bias

        outputs, attentions = [], []
        for windows, windows_mask in window_groups(hidden_states, mask, self.config.attention_chunk_size):
            qkv = linear(self.qkv, windows, implementation, extra_bias=qkv_bias)
            qkv = qkv.view(batch, -1, tokens, 3, self.num_heads, head_dim)  # (B, nW, N, 3, heads, hd)
            dtype, precision = attention_precision(qkv)
            query, key = cosine_query_key(qkv[..., :2, :, :], logit_scale, dtype).unbind(0)  # (B, nW, heads, N, hd)
            # A copy of its own, so that nothing keeps the whole qkv output alive for backward.
            value = qkv[..., 2, :, :].transpose(2, 3).to(dtype, memory_format=torch.contiguous_format)
            with precision:
                if fused_attn:
                    # Unmasked windows join the batch and share the bias. Masked ones (the mask differs per window)
                    # join the heads, so that a mask common to the batch broadcasts over it instead of being copied
                    # for every image (25 MB per shifted SwinV2-T stage-1 block at batch 8).
                    if windows_mask is None:
                        groups, attn_mask = (-1, self.num_heads), position_bias.unsqueeze(0)
                    else:
                        groups, attn_mask = (batch, -1), (position_bias + windows_mask.unsqueeze(2)).flatten(1, 2)
                    query, key, value = (part.reshape(*groups, tokens, head_dim) for part in (query, key, value))
                    dropout_p = self.attention_dropout.p if self.training else 0.0
                    context = F.scaled_dot_product_attention(
                        query, key, value, attn_mask=attn_mask.to(dtype), dropout_p=dropout_p, scale=1.0
                    )  # scale 1: the logit scale is in the queries
                else:
                    attn = query @ key.transpose(-2, -1)  # (B, nW, heads, N, N); in-place adds spare two N*N buffers
                    attn += position_bias
                    if windows_mask is not None:
                        attn += windows_mask.unsqueeze(2)
                    attn = attn.softmax(dim=-1).to(dtype)
                    if output_attentions:
                        attentions.append(attn)
                    context = self.attention_dropout(attn) @ value
            context = context.view(batch, -1, self.num_heads, tokens, head_dim).transpose(2, 3)  # (B, nW, N, heads, hd)
            context = context.reshape(batch, -1, tokens, channels).to(hidden_states.dtype)
            outputs.append(self.projection_dropout(linear(self.projection, context, implementation)))
        return concat_windows(outputs), concat_windows(attentions).flatten(0, 1) if output_attentions else None

    def cached_position_bias(self, window: int) -> torch.Tensor:
        """`position_bias(window)`, computed once where it needs no gradient (inference).

        The cache is keyed on each MLP weight's identity, storage and in-place version, so a loaded checkpoint,
        `.to()`, an optimiser step or any in-place edit is seen. A call that needs the gradient computes the bias anew
        and drops the cache, which training would only keep stale; compiled, traced and exported graphs compute it.
        """
        if torch.compiler.is_compiling() or standard_ops_only():
            return self.position_bias(window)
        weights = tuple(self.continuous_position_bias_mlp.parameters())
        if torch.is_grad_enabled() and any(weight.requires_grad for weight in weights):
            self._bias_cache = None
            return self.position_bias(window)
        key = (window, *((id(w), w._version, w.data_ptr(), w.dtype, w.device) for w in weights))
        if self._bias_cache is None or self._bias_cache[0] != key:
            self._bias_cache = (key, self.position_bias(window))
        return self._bias_cache[1]

    def position_bias(self, window: int) -> torch.Tensor:
        """16 * sigmoid(MLP(log-spaced coordinates)) spread over a window's token pairs: (heads, N, N).

        In at least float32 whatever the weights' precision: half precision would blur a bias that decides where sharp
        (logit scale up to 100) attention goes.
        """
        if window == self.window:
            coordinates, index = self.relative_coords_table, self.relative_position_index
        else:
            coordinates, index = relative_position_tables(window, self.pretrained_window)
            index = index.to(self.relative_position_index.device)
        first, _, last = self.continuous_position_bias_mlp
        with autocast_disabled(index.device):
            if isinstance(first.weight, torch.Tensor):
                dtype = torch.promote_types(first.weight.dtype, torch.float32)
                coordinates = coordinates.to(device=first.weight.device, dtype=dtype)
                hidden = F.relu(F.linear(coordinates, first.weight.to(dtype), first.bias.to(dtype)))
                table = F.linear(hidden, last.weight.to(dtype))
            else:  # torch.ao dynamic quantization: layers without a float weight, which take float32 input
                table = self.continuous_position_bias_mlp(coordinates.float())
            bias = table.view(-1, self.num_heads)[index.view(-1)].view(window * window, window * window, -1)
            return POSITION_BIAS_SCALE * torch.sigmoid(bias.permute(2, 0, 1).contiguous())


class SwinV2ResPostNorm(nn.LayerNorm):
    """The LayerNorm at the end of a residual branch (res-post-norm, paper section 3.1). Its own class because it
    starts at weight 0 and bias 0, so that every block starts as the identity (the original's `_init_respostnorm`)."""


class SwinV2Mlp(nn.Module):
    """Two linear layers with the configured activation between them."""

    def __init__(self, config: SwinV2Config, dim: int) -> None:
        super().__init__()
        hidden = int(dim * config.mlp_ratio)
        self.config = config
        self.fc1 = nn.Linear(dim, hidden)
        self.activation = ACT2FN[config.hidden_act]
        # The exact (erf) GELU fuses into the first GEMM and is recomputed in backward (kernels.gelu_mlp).
        self.exact_gelu = config.hidden_act == "gelu"
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        implementation = self.config.linear_implementation
        if self.exact_gelu and not (self.training and self.dropout.p > 0):
            return gelu_mlp(self.fc1, self.fc2, hidden_states, implementation)
        hidden_states = self.activation(linear(self.fc1, hidden_states, implementation))
        return self.dropout(linear(self.fc2, self.dropout(hidden_states), implementation))


class SwinV2Block(GradientCheckpointingLayer):
    """One Swin V2 block with res-post-norm: x + norm(attention(x)), then x + norm(mlp(x)) (paper eq. 1).

    Args:
        config: The model configuration.
        dim: Channels.
        num_heads: Attention heads.
        window: Window at the configured image size (for the cached tables).
        pretrained_window: Pretraining window of the stage (0: none).
        shifted: Whether this block shifts its windows (every second block of a stage).
        drop_path: Stochastic depth rate of this block.
        extra_norm: Add the main-branch LayerNorm after the block (SwinV2-H/G).
    """

    def __init__(
        self,
        config: SwinV2Config,
        dim: int,
        num_heads: int,
        window: int,
        pretrained_window: int,
        shifted: bool,
        drop_path: float,
        extra_norm: bool,
    ) -> None:
        super().__init__()
        self.shifted = shifted
        self.attention = SwinV2WindowAttention(config, dim, num_heads, window, pretrained_window)
        self.attention_norm = SwinV2ResPostNorm(dim, eps=config.layer_norm_eps)
        self.drop_path = SwinV2DropPath(drop_path)
        self.mlp = SwinV2Mlp(config, dim)
        self.mlp_norm = SwinV2ResPostNorm(dim, eps=config.layer_norm_eps)
        self.main_branch_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps) if extra_norm else None

    def forward(
        self,
        hidden_states: torch.Tensor,
        height: int,
        width: int,
        layout: WindowLayout,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states: (B, H*W, C) -> (B, H*W, C), plus the attention probabilities when asked."""
        batch, _, channels = hidden_states.shape
        window, shift = layout.window, (layout.shift if self.shifted else 0)
        shortcut = hidden_states
        hidden_states = hidden_states.view(batch, height, width, channels)
        if layout.padded:
            hidden_states = F.pad(hidden_states, (0, 0, 0, layout.pad_right, 0, layout.pad_bottom))
        if shift:
            hidden_states = torch.roll(hidden_states, shifts=(-shift, -shift), dims=(1, 2))
        padded_height, padded_width = hidden_states.shape[1:3]

        windows = window_partition(hidden_states, window)  # (B, nW, N, C)
        windows, attentions = self.attention(windows, window, layout.masks[bool(shift)], output_attentions)
        hidden_states = window_reverse(windows, window, padded_height, padded_width)  # (B, Hp, Wp, C)

        if shift:
            hidden_states = torch.roll(hidden_states, shifts=(shift, shift), dims=(1, 2))
        if layout.padded:  # a copy: whether the crop is a no-op must not decide the layout of a traced graph
            hidden_states = hidden_states[:, :height, :width].clone(memory_format=torch.contiguous_format)
        hidden_states = hidden_states.view(batch, height * width, channels)

        # In place on the branch's fresh output (neither LayerNorm nor drop path keeps its output for backward): one
        # allocation less per residual.
        hidden_states = self.drop_path(self.attention_norm(hidden_states)).add_(shortcut)
        hidden_states = self.drop_path(self.mlp_norm(self.mlp(hidden_states))).add_(hidden_states)
        if self.main_branch_norm is not None:
            hidden_states = self.main_branch_norm(hidden_states)
        return hidden_states, attentions


class SwinV2Stage(nn.Module):
    """The blocks of one resolution, then patch merging (except after the last stage)."""

    def __init__(
        self,
        config: SwinV2Config,
        stage: int,
        resolution: tuple[int, int],
        drop_paths: list[float],
        downsample: bool,
    ) -> None:
        super().__init__()
        dim = config.embed_dim * 2**stage
        self.window_size = config.window_size
        window, _ = window_and_shift(*resolution, config.window_size)
        period = config.extra_norm_period
        self.blocks = nn.ModuleList(
            SwinV2Block(
                config,
                dim,
                config.num_heads[stage],
                window,
                config.pretrained_window_sizes[stage],
                shifted=index % 2 == 1,
                drop_path=drop_paths[index],
                extra_norm=period > 0 and (index + 1) % period == 0,
            )
            for index in range(config.depths[stage])
        )
        self.downsample = SwinV2PatchMerging(config, dim) if downsample else None

    def forward(
        self,
        hidden_states: torch.Tensor,
        height: int,
        width: int,
        token_mask: torch.Tensor | None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor | None, ...]]:
        """Returns the output after merging, the output before merging (B, H*W, C) and the blocks' attentions."""
        layout = build_window_layout(
            height, width, self.window_size, token_mask, len(self.blocks) > 1, hidden_states.dtype, hidden_states.device
        )
        configured_window = self.blocks[0].attention.window
        if layout.window != configured_window:
            logger.warning_once(
                f"A stage uses {configured_window}x{configured_window} windows at config.image_size but "
                f"{layout.window}x{layout.window} on this input's {height}x{width} map (window_size="
                f"{self.window_size}, clipped to a map's smaller side when the map is not larger, as the original)."
            )
        attentions = []
        for block in self.blocks:
            hidden_states, block_attentions = block(hidden_states, height, width, layout, output_attentions)
            attentions.append(block_attentions)
        before_downsampling = hidden_states
        if self.downsample is not None:
            hidden_states = self.downsample(hidden_states, height, width, token_mask)
        return hidden_states, before_downsampling, tuple(attentions)


@dataclass
class SwinV2EncoderOutput(ModelOutput):
    """Outputs of [`SwinV2Encoder`].

    Args:
        last_hidden_state: (B, H*W, C) after the last stage.
        hidden_states: The embeddings and each stage's output after patch merging, (B, H*W, C) each.
        reshaped_hidden_states: The same as (B, C, H, W).
        attentions: Every block's attention probabilities, (B*num_windows, heads, N, N) each.
        stage_maps: The embeddings and each stage's output before patch merging, (B, C, H, W): the backbone's maps.
        token_mask: (B, H, W) bool of the last stage's real tokens, or None when all are real.
    """

    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    reshaped_hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    stage_maps: tuple[torch.Tensor, ...] | None = None
    token_mask: torch.Tensor | None = None


def tokens_to_map(hidden_states: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H*W, C) -> (B, C, H, W)."""
    return hidden_states.transpose(1, 2).reshape(hidden_states.shape[0], -1, height, width)


class SwinV2Encoder(nn.Module):
    """All stages, with stochastic depth rising linearly over the blocks."""

    def __init__(self, config: SwinV2Config, patch_grid: tuple[int, int]) -> None:
        super().__init__()
        drop_paths = torch.linspace(0, config.drop_path_rate, sum(config.depths), device="cpu").tolist()
        self.stages = nn.ModuleList()
        for stage, depth in enumerate(config.depths):
            first = sum(config.depths[:stage])
            resolution = (max(patch_grid[0] // 2**stage, 1), max(patch_grid[1] // 2**stage, 1))
            self.stages.append(
                SwinV2Stage(config, stage, resolution, drop_paths[first : first + depth], stage < config.num_layers - 1)
            )

    def forward(
        self,
        hidden_states: torch.Tensor,
        grid: tuple[int, int],
        token_mask: torch.Tensor | None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        output_stage_maps: bool = False,
    ) -> SwinV2EncoderOutput:
        height, width = grid
        all_hidden = [hidden_states] if output_hidden_states else None
        all_reshaped = [tokens_to_map(hidden_states, height, width)] if output_hidden_states else None
        stage_maps = [tokens_to_map(hidden_states, height, width)] if output_stage_maps else None
        attentions: list[torch.Tensor] = []
        for stage in self.stages:
            hidden_states, before_downsampling, stage_attentions = stage(
                hidden_states, height, width, token_mask, output_attentions
            )
            if output_stage_maps:
                stage_maps.append(tokens_to_map(before_downsampling, height, width))
            if stage.downsample is not None:
                height, width = (height + 1) // 2, (width + 1) // 2
                token_mask = merge_token_mask(token_mask)
            if output_hidden_states:
                all_hidden.append(hidden_states)
                all_reshaped.append(tokens_to_map(hidden_states, height, width))
            attentions.extend(stage_attentions)
        return SwinV2EncoderOutput(
            last_hidden_state=hidden_states,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            reshaped_hidden_states=tuple(all_reshaped) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
            stage_maps=tuple(stage_maps) if output_stage_maps else None,
            token_mask=token_mask,
        )


# ----------------------------------------------------------------------------------------------------------------------
# Pretrained models
# ----------------------------------------------------------------------------------------------------------------------


_MODULE = __name__.rsplit(".", 1)[-1]
AUTO_MAP = {
    "AutoConfig": f"{SwinV2Config.__module__.rsplit('.', 1)[-1]}.SwinV2Config",
    "AutoModel": f"{_MODULE}.SwinV2Model",
    "AutoModelForImageClassification": f"{_MODULE}.SwinV2ForImageClassification",
    "AutoModelForMaskedImageModeling": f"{_MODULE}.SwinV2ForMaskedImageModeling",
    "AutoBackbone": f"{_MODULE}.SwinV2Backbone",
}


class SwinV2PreTrainedModel(PreTrainedModel):
    """Weights initialisation as the original, input checks and the library hooks shared by the SwinV2 models."""

    config_class = SwinV2Config
    config: SwinV2Config
    base_model_prefix = "swinv2"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["SwinV2Block"]

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *args, **kwargs
    ) -> SwinV2PreTrainedModel | tuple[SwinV2PreTrainedModel, dict]:
        """transformers' `from_pretrained` with this model's checkpoint rules (`load_fitting_checkpoint`, at the end of
        this file): a checkpoint whose shapes do not fit the config is a ValueError naming the tensors.

        Config fields can be overridden as keyword arguments, e.g. `image_size=384, window_size=24,
        pretrained_window_sizes=[12, 12, 12, 6]` to transfer to a larger resolution and window: the position-bias
        MLPs are reused and the coordinate tables, built from the config, are never loaded.
        """
        return load_fitting_checkpoint(super().from_pretrained, pretrained_model_name_or_path, *args, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """Save weights, config and this code, with an `auto_map` naming every Auto class (transformers writes only
        the saved class's), so that any Auto class loads the folder with `trust_remote_code=True`."""
        self.config.auto_map = dict(AUTO_MAP)
        super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        """The attention layers read `config._attn_implementation` at every call, so `set_attn_implementation`
        may switch kernels at run time (transformers guesses otherwise from the module source)."""
        return True

    def _init_weights(self, module: nn.Module) -> None:
        """As the original: truncated normal linears, unit LayerNorms, zero res-post-norms, logit scale log(10)."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            # The original leaves the patch embedding (and the SimMIM decoder) at PyTorch's default initialisation.
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.weight[0].numel())
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, SwinV2ResPostNorm):
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, SwinV2Embeddings):
            if module.mask_token is not None:
                init.trunc_normal_(module.mask_token, std=std)
            if module.position_embeddings is not None:
                init.trunc_normal_(module.position_embeddings, std=std)
        elif isinstance(module, SwinV2WindowAttention):
            init.constant_(module.logit_scale, LOGIT_SCALE_INIT)
            if module.q_bias is not None:
                init.zeros_(module.q_bias)
                init.zeros_(module.v_bias)
            module.reset_tables()

    def output_switches(
        self, output_attentions: bool | None, output_hidden_states: bool | None, return_dict: bool | None
    ) -> tuple[bool, bool, bool]:
        """The call's output switches, the config's where the call leaves one at None."""
        config = self.config
        return (
            config.output_attentions if output_attentions is None else output_attentions,
            config.output_hidden_states if output_hidden_states is None else output_hidden_states,
            config.return_dict if return_dict is None else return_dict,
        )

    def check_pixel_values(self, pixel_values: torch.Tensor | None, pixel_mask: torch.Tensor | None = None) -> None:
        """Reject inputs the model cannot take, naming the problem and the fix, before any computation."""
        if pixel_values is None:
            raise ValueError("pixel_values is required: a (batch, channels, height, width) float tensor.")
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
            raise ValueError(
                f"pixel_values must be a 4D tensor (batch, channels, height, width), got {shape}. "
                "Add a batch dimension with pixel_values.unsqueeze(0) for a single image."
            )
        if pixel_values.shape[0] == 0:
            raise ValueError(
                f"pixel_values holds no image (batch size 0, shape {tuple(pixel_values.shape)}). Pass at least one "
                "image; an empty batch usually comes from an empty dataset split or a batch_size of 0."
            )
        channels = self.config.num_channels
        if pixel_values.shape[1] != channels:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels but the model expects {channels} "
                f"(config.num_channels). Convert the images (e.g. to RGB) or use the image processor, which does."
            )
        if not pixel_values.is_floating_point():
            raise ValueError(
                f"pixel_values has dtype {pixel_values.dtype}; the model takes normalised float pixels. "
                "Use the image processor, or convert with pixel_values.float() and normalise."
            )
        weight_dtype = self.dtype
        if pixel_values.dtype != weight_dtype and not torch.is_autocast_enabled(pixel_values.device.type):
            raise ValueError(
                f"pixel_values has dtype {pixel_values.dtype} but the model's weights are {weight_dtype}. "
                f"Cast the input with pixel_values.to({weight_dtype}) or the model with model.to({pixel_values.dtype})."
            )
        patch = self.config.patch_size
        if pixel_values.shape[2] < patch or pixel_values.shape[3] < patch:
            raise ValueError(
                f"The image is {pixel_values.shape[2]}x{pixel_values.shape[3]} pixels, smaller than one "
                f"{patch}x{patch} patch. Resize it to at least {patch}x{patch} (the image processor resizes to "
                f"{self.config.image_size})."
            )
        if pixel_mask is not None:
            expected = (pixel_values.shape[0], *pixel_values.shape[2:])
            if tuple(pixel_mask.shape) != expected:
                raise ValueError(
                    f"pixel_mask must have shape (batch, height, width) = {expected}, got {tuple(pixel_mask.shape)}; "
                    "1 marks real pixels and 0 padding, as the DETR image processors return it."
                )


@dataclass
class SwinV2ModelOutput(ModelOutput):
    """Outputs of [`SwinV2Model`].

    Args:
        last_hidden_state: (B, H*W, C) after the last stage and the final LayerNorm.
        pooler_output: (B, C) mean of `last_hidden_state` over the real tokens; None without a pooling layer.
        hidden_states: With `output_hidden_states`: the embeddings and each stage's output (B, H*W, C).
        attentions: With `output_attentions`: each block's probabilities (B*num_windows, heads, N, N).
        reshaped_hidden_states: With `output_hidden_states`: `hidden_states` as (B, C, H, W).
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    reshaped_hidden_states: tuple[torch.Tensor, ...] | None = None


class SwinV2Model(SwinV2PreTrainedModel):
    """The bare SwinV2 encoder: patch embedding, stages, final LayerNorm and average pooling.

    Args:
        config: The model configuration.
        add_pooling_layer: Return `pooler_output`, the mean over real tokens.
        use_mask_token: Create the SimMIM mask token (for `bool_masked_pos`).
    """

    _auto_class = "AutoModel"  # save_pretrained ships this code (remote code)

    def __init__(self, config: SwinV2Config, add_pooling_layer: bool = True, use_mask_token: bool = False) -> None:
        super().__init__(config)
        self.num_features = config.hidden_size
        self.add_pooling_layer = add_pooling_layer
        self.embeddings = SwinV2Embeddings(config, use_mask_token=use_mask_token)
        self.encoder = SwinV2Encoder(config, self.embeddings.patch_grid)
        self.layernorm = nn.LayerNorm(self.num_features, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.projection

    def check_bool_masked_pos(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor) -> None:
        """Reject a SimMIM mask the model cannot apply: one of another layout (a transposed (num_patches, B) mask
        reshapes without error onto the wrong patches) or without a mask token to put in place of the patches."""
        if self.embeddings.mask_token is None:
            raise ValueError(
                "bool_masked_pos needs a mask token: build the model with use_mask_token=True "
                "or use SwinV2ForMaskedImageModeling."
            )
        patch = self.config.patch_size
        rows, columns = -(-pixel_values.shape[2] // patch), -(-pixel_values.shape[3] // patch)  # whole patches, padded
        flat, grid = (pixel_values.shape[0], rows * columns), (pixel_values.shape[0], rows, columns)
        if tuple(bool_masked_pos.shape) not in (flat, grid):
            raise ValueError(
                f"bool_masked_pos has shape {tuple(bool_masked_pos.shape)}; for these pixel_values it must be "
                f"(batch, num_patches) = {flat} or (batch, H/patch, W/patch) = {grid}, True where a patch is masked."
            )

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | SwinV2ModelOutput:
        r"""
        Args:
            pixel_values: (B, C, H, W) normalised pixels, any size of at least one patch.
            bool_masked_pos: (B, num_patches) or (B, H/patch, W/patch), True where SimMIM replaces the patch by the
                mask token (needs `use_mask_token=True`).
            pixel_mask: (B, H, W), 1 for real pixels and 0 for padding (the DETR processors' output). Patches with no
                real pixel are left out of attention, patch merging and pooling, so an image padded into a larger
                canvas gives the features it gives alone (where both have the same windows).
        """
        self.check_pixel_values(pixel_values, pixel_mask)
        if bool_masked_pos is not None:
            self.check_bool_masked_pos(pixel_values, bool_masked_pos)
        output_attentions, output_hidden_states, return_dict = self.output_switches(
            output_attentions, output_hidden_states, return_dict
        )

        embeddings, grid, token_mask = self.embeddings(pixel_values, pixel_mask, bool_masked_pos)
        encoded = self.encoder(embeddings, grid, token_mask, output_attentions, output_hidden_states)
        sequence_output = self.layernorm(encoded.last_hidden_state)
        pooled_output = None
        if self.add_pooling_layer:
            pooled_output = masked_mean(sequence_output, encoded.token_mask)
        output = SwinV2ModelOutput(
            last_hidden_state=sequence_output,
            pooler_output=pooled_output,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
            reshaped_hidden_states=encoded.reshaped_hidden_states,
        )
        return output if return_dict else output.to_tuple()


def masked_mean(hidden_states: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over tokens (B, L, C) -> (B, C), over the real ones when a (B, H, W) mask is given."""
    if token_mask is None:
        return hidden_states.mean(dim=1)
    weights = token_mask.reshape(token_mask.shape[0], -1, 1).to(hidden_states.dtype)
    return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


@dataclass
class SwinV2ImageClassifierOutput(ModelOutput):
    """Outputs of [`SwinV2ForImageClassification`].

    Args:
        loss: With `labels`: cross-entropy (single label), BCE-with-logits (multi-label) or MSE (regression).
        logits: (B, num_labels) before softmax.
        hidden_states, attentions, reshaped_hidden_states: As in [`SwinV2ModelOutput`].
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    reshaped_hidden_states: tuple[torch.Tensor, ...] | None = None


class SwinV2ForImageClassification(SwinV2PreTrainedModel):
    """SwinV2 with a linear head on the pooled features (the original's `head`)."""

    _auto_class = "AutoModelForImageClassification"  # save_pretrained ships this code (remote code)

    def __init__(self, config: SwinV2Config) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.swinv2 = SwinV2Model(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | SwinV2ImageClassifierOutput:
        r"""
        Args:
            labels: (B,) class indices for single-label classification, (B, num_labels) floats for multi-label, or
                (B,) floats for regression with `num_labels == 1`; `config.problem_type` decides when set.
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = self.swinv2(
            pixel_values,
            pixel_mask=pixel_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(outputs.pooler_output)
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        output = SwinV2ImageClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            reshaped_hidden_states=outputs.reshaped_hidden_states,
        )
        return output if return_dict else output.to_tuple()


@dataclass
class SwinV2MaskedImageModelingOutput(ModelOutput):
    """Outputs of [`SwinV2ForMaskedImageModeling`].

    Args:
        loss: With `bool_masked_pos`: L1 between the (normalised, see `config.mim_norm_target_patch_size`) pixels and
            the reconstruction, averaged over the masked pixels and the channels, as SimMIM.
        reconstruction: (B, num_channels, H, W) predicted pixels.
        hidden_states, attentions, reshaped_hidden_states: As in [`SwinV2ModelOutput`].
    """

    loss: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    reshaped_hidden_states: tuple[torch.Tensor, ...] | None = None


def normalize_targets(pixels: torch.Tensor, patch_size: int) -> torch.Tensor:
    """SimMIM's target normalisation: each pixel by the mean and unbiased variance of the patch around it."""
    pad = patch_size // 2
    mean = F.avg_pool2d(pixels, patch_size, stride=1, padding=pad, count_include_pad=False)
    mean_of_squares = F.avg_pool2d(pixels**2, patch_size, stride=1, padding=pad, count_include_pad=False)
    covered = F.avg_pool2d(torch.ones_like(pixels), patch_size, stride=1, padding=pad, count_include_pad=True)
    count = covered * patch_size**2
    variance = ((mean_of_squares - mean**2) * (count / (count - 1))).clamp_min(0.0)
    return (pixels - mean) / (variance + 1.0e-6) ** 0.5


class SwinV2ForMaskedImageModeling(SwinV2PreTrainedModel):
    """SimMIM (arXiv 2111.09886): masked patches replaced by a learned token, a 1x1 conv + pixel-shuffle decoder and
    an L1 loss on the masked pixels; the self-supervised pretraining of SwinV2."""

    _auto_class = "AutoModelForMaskedImageModeling"  # save_pretrained ships this code (remote code)

    def __init__(self, config: SwinV2Config) -> None:
        total_stride = config.patch_size * 2 ** (config.num_layers - 1)
        if config.encoder_stride != total_stride:
            raise ValueError(
                f"config.encoder_stride is {config.encoder_stride} but the encoder's stride is {total_stride} "
                f"(patch_size * 2**(stages - 1)); set encoder_stride={total_stride} so the decoder restores the image "
                "size."
            )
        super().__init__(config)
        self.swinv2 = SwinV2Model(config, add_pooling_layer=False, use_mask_token=True)
        self.decoder = nn.Sequential(
            nn.Conv2d(config.hidden_size, config.encoder_stride**2 * config.num_channels, kernel_size=1),
            nn.PixelShuffle(config.encoder_stride),
        )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | SwinV2MaskedImageModelingOutput:
        r"""
        Args:
            pixel_values: (B, C, H, W) with H and W multiples of `config.encoder_stride`.
            bool_masked_pos: (B, num_patches) or (B, H/patch, W/patch), True for masked patches.
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        self.check_pixel_values(pixel_values)
        stride = self.config.encoder_stride
        height, width = pixel_values.shape[2:]
        if height % stride or width % stride:
            raise ValueError(
                f"Masked image modeling reconstructs the image at the encoder's stride ({stride}), so its sides must "
                f"be multiples of it; got {height}x{width}. Resize or crop to e.g. "
                f"{max(stride, height // stride * stride)}x{max(stride, width // stride * stride)}."
            )
        outputs = self.swinv2(
            pixel_values,
            bool_masked_pos=bool_masked_pos,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        features = tokens_to_map(outputs.last_hidden_state, height // stride, width // stride)  # (B, C, H/32, W/32)
        reconstruction = self.decoder(features)  # (B, num_channels, H, W)

        loss = None
        if bool_masked_pos is not None:
            patch = self.config.patch_size
            mask = bool_masked_pos.reshape(-1, height // patch, width // patch)
            mask = mask.repeat_interleave(patch, 1).repeat_interleave(patch, 2).unsqueeze(1).to(reconstruction.dtype)
            targets = pixel_values
            if self.config.mim_norm_target_patch_size:
                targets = normalize_targets(pixel_values, self.config.mim_norm_target_patch_size)
            per_pixel = F.l1_loss(targets, reconstruction, reduction="none")
            loss = (per_pixel * mask).sum() / (mask.sum() + 1e-5) / self.config.num_channels
        output = SwinV2MaskedImageModelingOutput(
            loss=loss,
            reconstruction=reconstruction,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            reshaped_hidden_states=outputs.reshaped_hidden_states,
        )
        return output if return_dict else output.to_tuple()


class SwinV2Backbone(BackboneMixin, SwinV2PreTrainedModel):
    """SwinV2 as a backbone for detectors and segmenters (`AutoBackbone`, `backbone_config=SwinV2Config(...)`).

    Returns the maps of `config.out_features` as (B, C, H, W), each stage's before patch merging, through a LayerNorm
    per output (as the original detection code does). Loads from classification or bare-model checkpoints: the
    encoder keys match, and the output norms start at identity-like unit scale.
    """

    _auto_class = "AutoBackbone"  # save_pretrained ships this code (remote code)

    def __init__(self, config: SwinV2Config) -> None:
        super().__init__(config)
        self.num_features = config.stage_channels
        self.embeddings = SwinV2Embeddings(config)
        self.encoder = SwinV2Encoder(config, self.embeddings.patch_grid)
        self.hidden_states_norms = nn.ModuleDict(
            {
                stage: nn.LayerNorm(channels, eps=config.layer_norm_eps)
                for stage, channels in zip(self.stage_names, self.num_features)
                if stage in self.out_features
            }
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.projection

    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | BackboneOutput:
        """Feature maps (B, C_i, H_i, W_i) for each of `out_features`; see [`SwinV2Model.forward`] for the inputs."""
        self.check_pixel_values(pixel_values, pixel_mask)
        output_attentions, output_hidden_states, return_dict = self.output_switches(
            output_attentions, output_hidden_states, return_dict
        )

        embeddings, grid, token_mask = self.embeddings(pixel_values, pixel_mask)
        encoded = self.encoder(
            embeddings, grid, token_mask, output_attentions, output_hidden_states, output_stage_maps=True
        )
        feature_maps = tuple(
            self.hidden_states_norms[stage](feature_map.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            for stage, feature_map in zip(self.stage_names, encoded.stage_maps)
            if stage in self.out_features
        )
        output = BackboneOutput(
            feature_maps=feature_maps,
            hidden_states=encoded.hidden_states if output_hidden_states else None,
            attentions=encoded.attentions,
        )
        return output if return_dict else output.to_tuple()


# ----------------------------------------------------------------------------------------------------------------------
# Loading: checkpoints that do not fit the config
# ----------------------------------------------------------------------------------------------------------------------


def load_fitting_checkpoint(
    load: Callable[..., Any], name_or_path: str | os.PathLike, *args, **kwargs
) -> SwinV2PreTrainedModel | tuple[SwinV2PreTrainedModel, dict]:
    """`load(name_or_path, ...)`, transformers' `from_pretrained`, with the rules a SwinV2 checkpoint is loaded by.

    - A tensor whose shape differs from the config's is a ValueError naming it (transformers raises a RuntimeError
      pointing at a logged table); `ignore_mismatched_sizes=True` re-initialises such tensors on purpose.
    - Absolute position embeddings saved for another patch grid are resized (`resize_absolute_positions`).

    The rules live in this file, not in a module of their own, because remote code ships exactly the configuration,
    kernels and modeling files: a model loaded with `trust_remote_code=True` follows the same rules.
    """
    if kwargs.pop("ignore_mismatched_sizes", False):
        return load(name_or_path, *args, ignore_mismatched_sizes=True, **kwargs)
    wants_info = kwargs.pop("output_loading_info", False)
    model, info = load(name_or_path, *args, ignore_mismatched_sizes=True, output_loading_info=True, **kwargs)
    mismatched = sorted(info["mismatched_keys"])
    positions = [item for item in mismatched if item[0].endswith("embeddings.position_embeddings")]
    for item in positions:
        resize_absolute_positions(model, read_checkpoint_tensor(name_or_path, item[0], **kwargs))
        mismatched.remove(item)
    if mismatched:
        shown = ", ".join(
            f"{key} (checkpoint {tuple(saved)}, config {tuple(expected)})" for key, saved, expected in mismatched[:4]
        )
        raise ValueError(
            f"The checkpoint at {name_or_path} does not fit this config: {len(mismatched)} tensors differ in shape, "
            f"e.g. {shown}. Load it with the config saved beside it (drop the overriding keyword arguments), or pass "
            "ignore_mismatched_sizes=True to re-initialise those tensors on purpose (e.g. a new classification head)."
        )
    return (model, info) if wants_info else model


def resize_absolute_positions(model: SwinV2PreTrainedModel, saved: torch.Tensor) -> None:
    """Load absolute position embeddings saved for another patch grid, bicubic-resized to the model's grid."""
    embeddings = next(module for module in model.modules() if isinstance(module, SwinV2Embeddings))
    side = math.isqrt(saved.shape[1])
    if side * side != saved.shape[1]:
        raise ValueError(f"Cannot resize position embeddings: {saved.shape[1]} saved positions are not a square grid.")
    grid = saved.view(1, side, side, -1).permute(0, 3, 1, 2).float()  # (1, C, h, w)
    grid = F.interpolate(grid, size=embeddings.patch_grid, mode="bicubic", align_corners=False)
    with torch.no_grad():
        embeddings.position_embeddings.copy_(grid.flatten(2).transpose(1, 2))  # (1, H*W, C)
    logger.warning_once(f"Resized the absolute position embeddings from {side}x{side} to {embeddings.patch_grid}.")


def read_checkpoint_tensor(name_or_path: str | os.PathLike, key: str, **hub_kwargs) -> torch.Tensor:
    """One tensor of a saved model (local folder or Hub repo, single file or sharded safetensors), found under its
    name in the loading model or in the task-model layout (`swinv2.` prefix)."""
    hub_options = ("cache_dir", "revision", "token", "local_files_only")
    options = {name: hub_kwargs[name] for name in hub_options if name in hub_kwargs}
    index = cached_file(name_or_path, SAFE_WEIGHTS_INDEX_NAME, _raise_exceptions_for_missing_entries=False, **options)
    weight_map = json.loads(Path(index).read_text())["weight_map"] if index else None
    for candidate in (key, f"{SwinV2PreTrainedModel.base_model_prefix}.{key}"):
        filename = weight_map.get(candidate) if weight_map else SAFE_WEIGHTS_NAME
        if filename is None:
            continue
        with safe_open(cached_file(name_or_path, filename, **options), framework="pt") as weights:
            if candidate in weights.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                return weights.get_tensor(candidate)
    raise ValueError(f"{name_or_path} has no tensor {key}.")


__all__ = [
    "SwinV2PreTrainedModel",
    "SwinV2Model",
    "SwinV2ForImageClassification",
    "SwinV2ForMaskedImageModeling",
    "SwinV2Backbone",
    "SwinV2ModelOutput",
    "SwinV2ImageClassifierOutput",
    "SwinV2MaskedImageModelingOutput",
]
