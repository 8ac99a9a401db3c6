"""The released SwinV2 checkpoints of the original model zoo (microsoft/Swin-Transformer, README "Main Results on
ImageNet with Pretrained Models", SwinV2 rows) and how their names read.

Accuracy (ImageNet-1K val, top-1/top-5 %), parameters and FLOPs (multiply-adds, as the zoo counts them) are the
published figures; the 22K pretrained models have no ImageNet-1K figures of their own. `config_from_release_name`
turns any name of the release pattern into a config, released or not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .configuration_swinv2_hf import PRESETS, SwinV2Config

RELEASE_URL = "https://github.com/SwinTransformer/storage/releases/download/v2.0.0/{name}.pth"
ZOO_URL = "https://github.com/microsoft/Swin-Transformer#main-results-on-imagenet-with-pretrained-models"
IMAGENET_1K_CLASSES = 1000
IMAGENET_22K_CLASSES = 21841  # the released 22K heads (their YAMLs say 1000; fixtures README, fact 9)

RELEASE_NAME = re.compile(
    r"^swinv2_(?P<size>tiny|small|base|large)_patch4"
    r"_window(?P<window>\d+)(?:to(?P<fine_tune_window>\d+))?"
    r"_(?P<resolution>\d+)(?:to(?P<fine_tune_resolution>\d+))?"
    r"(?P<dataset>_22k|_22kto1k_ft)?$"
)
_SIZE_PRESETS = {"tiny": "swinv2_tiny_window8_256", "small": "swinv2_small_window8_256",
                 "base": "swinv2_base_window8_256", "large": "swinv2_large_window12_192"}


@dataclass(frozen=True)
class Release:
    """One released checkpoint: what the zoo publishes about it."""

    name: str
    top1: float | None
    top5: float | None
    params_millions: int | None  # the zoo lists the 22K pretrained models only through their fine-tunes
    gflops: float | None
    pretrained_on: str  # "imagenet-1k" or "imagenet-21k" (the Hub's name for ImageNet-22K)
    base_release: str | None = None  # the 22K checkpoint a fine-tune starts from

    @property
    def url(self) -> str:
        return RELEASE_URL.format(name=self.name)

    @property
    def transformers_repo_id(self) -> str:
        """The repository of the same weights converted by transformers (microsoft/ on the Hub)."""
        return "microsoft/" + self.name.replace("_", "-")


# fmt: off
RELEASES: dict[str, Release] = {release.name: release for release in (
    Release("swinv2_tiny_patch4_window8_256",                      81.8, 95.9, 28,  5.9,   "imagenet-1k"),
    Release("swinv2_small_patch4_window8_256",                     83.7, 96.6, 50,  11.5,  "imagenet-1k"),
    Release("swinv2_base_patch4_window8_256",                      84.2, 96.9, 88,  20.3,  "imagenet-1k"),
    Release("swinv2_tiny_patch4_window16_256",                     82.8, 96.2, 28,  6.6,   "imagenet-1k"),
    Release("swinv2_small_patch4_window16_256",                    84.1, 96.8, 50,  12.6,  "imagenet-1k"),
    Release("swinv2_base_patch4_window16_256",                     84.6, 97.0, 88,  21.8,  "imagenet-1k"),
    Release("swinv2_base_patch4_window12_192_22k",                 None, None, None, None, "imagenet-21k"),
    Release("swinv2_large_patch4_window12_192_22k",                None, None, None, None, "imagenet-21k"),
    Release("swinv2_base_patch4_window12to16_192to256_22kto1k_ft", 86.2, 97.9, 88,  21.8,  "imagenet-21k",
            "swinv2_base_patch4_window12_192_22k"),
    Release("swinv2_base_patch4_window12to24_192to384_22kto1k_ft", 87.1, 98.2, 88,  54.7,  "imagenet-21k",
            "swinv2_base_patch4_window12_192_22k"),
    Release("swinv2_large_patch4_window12to16_192to256_22kto1k_ft", 86.9, 98.0, 197, 47.5, "imagenet-21k",
            "swinv2_large_patch4_window12_192_22k"),
    Release("swinv2_large_patch4_window12to24_192to384_22kto1k_ft", 87.6, 98.3, 197, 115.4, "imagenet-21k",
            "swinv2_large_patch4_window12_192_22k"),
)}
# fmt: on


def known_model_names() -> list[str]:
    """Every name `config_from_model_name` takes: the releases and the presets (timm's variant names)."""
    return sorted(RELEASES) + sorted(PRESETS)


def config_from_release_name(name: str) -> SwinV2Config | None:
    """The config a release-pattern name describes (`swinv2_base_patch4_window12to24_192to384_22kto1k_ft`: base, window
    24 at 384 px, transferred from window 12 with the last stage at 6, 1000 classes), or None for another name."""
    match = RELEASE_NAME.match(name)
    if match is None:
        return None
    window = int(match["fine_tune_window"] or match["window"])
    resolution = int(match["fine_tune_resolution"] or match["resolution"])
    pretrained = 0
    if match["fine_tune_window"]:
        pretrained = int(match["window"])
    # Pretraining at `window` ran with the last stage clipped to half of it (192 px: 6x6 maps with window 12).
    pretrained_windows = (pretrained, pretrained, pretrained, pretrained // 2)
    classes = IMAGENET_22K_CLASSES if match["dataset"] == "_22k" else IMAGENET_1K_CLASSES
    return SwinV2Config.from_preset(
        _SIZE_PRESETS[match["size"]],
        image_size=resolution,
        window_size=window,
        pretrained_window_sizes=pretrained_windows,
        num_labels=classes,
        drop_path_rate=_drop_path_rate(match["size"], match["dataset"]),
    )


def _drop_path_rate(size: str, dataset: str | None) -> float:
    """The released configs' stochastic depth (it matters only when training on from the checkpoint)."""
    if dataset:
        return 0.2
    return {"tiny": 0.2, "small": 0.3, "base": 0.5, "large": 0.2}[size]


def config_from_model_name(name: str) -> SwinV2Config:
    """A config from a release name or a preset name (timm's variant names, a `.tag` ignored).

    Raises:
        ValueError: an unknown name; the message lists the known ones.
    """
    config = config_from_release_name(name)
    if config is not None:
        return config
    if name.split(".", 1)[0] in PRESETS:
        return SwinV2Config.from_preset(name)
    raise ValueError(
        f"Unknown SwinV2 model name {name!r}. Known names: {', '.join(known_model_names())} (or any name of the "
        "release pattern swinv2_{tiny,small,base,large}_patch4_window{W}[to{W2}]_{R}[to{R2}][_22k|_22kto1k_ft])."
    )


def release_of(name: str | None) -> Release | None:
    return RELEASES.get(name) if name else None
