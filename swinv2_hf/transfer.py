"""Taking SwinV2 weights to larger images and windows, and into the backbones of transformers' detectors.

The paper's point (section 3.3): a model pretrained at 192-256 px with small windows is fine-tuned at high resolution
with large windows, reusing its continuous-position-bias MLPs on coordinates normalised by the pretraining window.
`transfer_config` writes that down as a config; `load_backbone_weights` puts a pretrained SwinV2 into the
`SwinV2Backbone` of any transformers model built with `backbone_config=SwinV2Config(...)` (transformers 5 ignores
`use_pretrained_backbone`, so detectors start from random backbones otherwise).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from torch import nn

from .configuration_swinv2_hf import SwinV2Config
from .modeling_swinv2_hf import SwinV2Backbone, window_and_shift


def pretraining_windows(config: SwinV2Config) -> tuple[int, ...]:
    """The window each stage of `config` was trained with: its own pretrained windows when it is itself a transfer,
    otherwise the windows its stages use at its image size (a map smaller than the window clips it, as the last
    stage of 192 px models: window 12 -> 6)."""
    if any(config.pretrained_window_sizes):
        return tuple(config.pretrained_window_sizes)
    height, width = (side // config.patch_size for side in config.image_height_width)
    windows = []
    for _ in config.depths:
        windows.append(window_and_shift(height, width, config.window_size)[0])
        height, width = (height + 1) // 2, (width + 1) // 2
    return tuple(windows)


def transfer_config(
    config: SwinV2Config, image_size: int | tuple[int, int], window_size: int, **overrides
) -> SwinV2Config:
    """`config` at a new image size and window, with `pretrained_window_sizes` set to the windows the weights were
    trained with, so the position-bias MLPs see the coordinates they learned (any other field via `overrides`, e.g.
    `out_features` for a backbone)."""
    values = {
        **config.to_dict(),
        "image_size": image_size,
        "window_size": window_size,
        "pretrained_window_sizes": pretraining_windows(config),
        **overrides,
    }
    for derived in ("num_layers", "hidden_size", "stage_names", "model_type", "transformers_version"):
        values.pop(derived, None)
    # The backbone selection is one choice made two ways: overriding one side drops the other.
    for given, implied in (("out_features", "out_indices"), ("out_indices", "out_features")):
        if given in overrides and implied not in overrides:
            values.pop(implied, None)
    return SwinV2Config(**values)


@dataclass
class BackboneLoadReport:
    """What `load_backbone_weights` did, per backbone found: the keys it left at their initialisation."""

    backbones: list[str] = field(default_factory=list)
    newly_initialised: dict[str, list[str]] = field(default_factory=dict)


def load_backbone_weights(
    model: nn.Module, pretrained_model_name_or_path: str | os.PathLike, **from_pretrained_kwargs
) -> BackboneLoadReport:
    """Load a swinv2_hf checkpoint (a folder or Hub repo of any task: classification, SimMIM, bare, backbone) into every
    `SwinV2Backbone` inside `model`, keeping that backbone's own config (windows, image size, out_features).

    The per-stage output LayerNorms of the backbone exist only in backbone checkpoints; loaded from another task they
    keep their initialisation and are listed in the report.

    Raises:
        ValueError: `model` holds no SwinV2Backbone, or the checkpoint does not fit its config (named tensors).
    """
    backbones = [(name, module) for name, module in model.named_modules() if isinstance(module, SwinV2Backbone)]
    if not backbones:
        raise ValueError(
            f"{type(model).__name__} has no SwinV2Backbone. Build it with "
            "backbone_config=SwinV2Config(out_features=...) after `import swinv2_hf`."
        )
    report = BackboneLoadReport()
    for name, backbone in backbones:
        pretrained, info = SwinV2Backbone.from_pretrained(
            pretrained_model_name_or_path, config=backbone.config, output_loading_info=True, **from_pretrained_kwargs
        )
        backbone.load_state_dict(pretrained.state_dict())
        report.backbones.append(name or type(model).__name__)
        report.newly_initialised[name] = sorted(info["missing_keys"])
    return report
