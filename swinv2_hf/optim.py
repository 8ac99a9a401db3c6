"""The optimiser's parameter groups of the Swin recipe, for any SwinV2 model (classifier, SimMIM, backbone).

They follow microsoft/Swin-Transformer and SimMIM (MIT): layer-wise learning-rate decay as SimMIM's `get_swin_layer`,
and no weight decay on biases, norms, `logit_scale`, the continuous-position-bias MLP, absolute position embeddings
and SimMIM's mask token (the original's `no_weight_decay(_keywords)`). transformers' Trainer decays every weight
matrix, the position-bias MLP included, unless it is given these groups; a detector built on `SwinV2Backbone` gets
them for its backbone through `parameter_groups(backbone, ...)`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch

# Parameters that never get weight decay, by name; every 1-D parameter (biases, norms) is exempt too.
NO_WEIGHT_DECAY_KEYWORDS = ("logit_scale", "continuous_position_bias_mlp", "position_embeddings", "mask_token")
_BLOCK = re.compile(r"encoder\.stages\.(\d+)\.(?:blocks\.(\d+)|downsample)\.")


def layer_id(name: str, depths: Sequence[int]) -> int:
    """The layer of a parameter for layer-wise decay, as SimMIM's `get_swin_layer`: 0 for the embeddings, 1 + the
    block's index over all stages for a block, a stage's patch merging with that stage's last block, and
    `sum(depths) + 1` (undecayed) for the final norm and the heads. `name` is relative to the base model."""
    if name.startswith("embeddings."):
        return 0
    match = _BLOCK.match(name)
    if match is None:
        return sum(depths) + 1
    stage = int(match[1])
    if match[2] is None:
        return sum(depths[: stage + 1])
    return sum(depths[:stage]) + int(match[2]) + 1


def decays(name: str, parameter: torch.nn.Parameter) -> bool:
    """Weight decay applies to weight matrices only: not to biases, norms, logit scales, the position-bias MLP,
    position embeddings or the mask token."""
    exempt = name.endswith(".bias") or any(key in name for key in NO_WEIGHT_DECAY_KEYWORDS)
    return parameter.ndim > 1 and not exempt


def parameter_groups(
    model: torch.nn.Module, learning_rate: float, weight_decay: float, layer_decay: float = 1.0
) -> list[dict[str, Any]]:
    """AdamW groups of any SwinV2 model (classifier, SimMIM, backbone): one per (layer, decays or not), each with
    the learning rate `learning_rate * layer_decay ** (top - layer)` and its weight decay; `names` and `layer` stay
    in the groups for inspection."""
    depths = model.config.depths
    top = sum(depths) + 1
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    prefix = f"{model.base_model_prefix}."
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        layer, decayed = layer_id(name.removeprefix(prefix), depths), decays(name, parameter)
        group = groups.setdefault(
            (layer, decayed),
            {
                "params": [],
                "names": [],
                "layer": layer,
                "weight_decay": weight_decay if decayed else 0.0,
                "lr": learning_rate * layer_decay ** (top - layer),
            },
        )
        group["params"].append(parameter)
        group["names"].append(name)
    return [groups[key] for key in sorted(groups)]
