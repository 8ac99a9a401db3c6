"""transformers' object detectors with a SwinV2 backbone, as Hub remote code.

A detector's config builds its `backbone_config` through transformers' registry of model types, which knows
`swinv2_hf` only once something registers it: in a process without `swinv2_hf`, loading a saved detector fails with
`KeyError: 'swinv2_hf'`. `swinv2_hf.hub_folder.save_detector` ships this file, and the SwinV2 files it imports, in the
detector's folder, with an `auto_map` naming the classes below: with `trust_remote_code=True`, transformers imports
this module, which registers SwinV2, before it builds the detector's config and model.

The classes are transformers' own detectors under their own names. Subclasses, because loading remote code marks the
class it loads (`register_for_auto_class`) and transformers' classes must stay unmarked; the same names, because the
object-detection pipeline checks its model by class name (it logs any other name as "not supported").

This file imports only transformers and SwinV2's configuration and modeling files, so that it ships with them.
"""

from __future__ import annotations

from transformers import CONFIG_MAPPING, AutoBackbone, AutoConfig
from transformers.models import conditional_detr, deformable_detr, rt_detr

from .configuration_swinv2_hf import SwinV2Config
from .modeling_swinv2_hf import SwinV2Backbone


def register_swinv2() -> None:
    """Register SwinV2 with AutoConfig and AutoBackbone, unless its model type is registered already: a process that
    imported swinv2_hf, or loaded another SwinV2 detector first, keeps the classes it has (as transformers prefers
    registered local code to remote code)."""
    if SwinV2Config.model_type not in CONFIG_MAPPING:
        AutoConfig.register(SwinV2Config.model_type, SwinV2Config)
        AutoBackbone.register(SwinV2Config, SwinV2Backbone)


register_swinv2()


class ConditionalDetrConfig(conditional_detr.ConditionalDetrConfig):
    """Conditional DETR's config, built once SwinV2 is registered."""


class ConditionalDetrForObjectDetection(conditional_detr.ConditionalDetrForObjectDetection):
    """Conditional DETR, loaded with its config above."""

    config_class = ConditionalDetrConfig


class DeformableDetrConfig(deformable_detr.DeformableDetrConfig):
    """Deformable DETR's config, built once SwinV2 is registered."""


class DeformableDetrForObjectDetection(deformable_detr.DeformableDetrForObjectDetection):
    """Deformable DETR, loaded with its config above."""

    config_class = DeformableDetrConfig


class RTDetrConfig(rt_detr.RTDetrConfig):
    """RT-DETR's config, built once SwinV2 is registered."""


class RTDetrForObjectDetection(rt_detr.RTDetrForObjectDetection):
    """RT-DETR, loaded with its config above."""

    config_class = RTDetrConfig


# The detectors a folder can ship: `save_detector` picks the one whose transformers class (its base) the model is.
OBJECT_DETECTORS = (ConditionalDetrForObjectDetection, DeformableDetrForObjectDetection, RTDetrForObjectDetection)
