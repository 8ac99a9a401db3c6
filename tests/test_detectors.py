"""SwinV2Backbone inside transformers' own detection and segmentation models (through `backbone_config`): forward,
loss, backward, save and reload; pretrained weights put in with `load_backbone_weights`; high-resolution transfer."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import assert_within_bound, randomize_weights
from transformers import (
    ConditionalDetrConfig,
    ConditionalDetrForObjectDetection,
    DeformableDetrConfig,
    DeformableDetrForObjectDetection,
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    RTDetrConfig,
    RTDetrForObjectDetection,
    UperNetConfig,
    UperNetForSemanticSegmentation,
)

from swinv2_hf import SwinV2Backbone, SwinV2Config, SwinV2ForImageClassification
from swinv2_hf.transfer import load_backbone_weights, pretraining_windows, transfer_config

IMAGE = 64
# Tiny heads: transformers 5 needs at least 2 decoder layers in the DETR family.
DETR_HEAD = {
    "d_model": 32,
    "encoder_layers": 1,
    "decoder_layers": 2,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_ffn_dim": 32,
    "decoder_ffn_dim": 32,
    "num_queries": 10,
    "num_labels": 3,
}


def backbone_config(out_features: list[str]) -> SwinV2Config:
    return SwinV2Config(
        image_size=IMAGE,
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 2, 2, 4],
        window_size=4,
        out_features=out_features,
    )


def boxes() -> list[dict[str, torch.Tensor]]:
    return [
        {"class_labels": torch.tensor([1, 2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.6, 0.1, 0.1]])}
        for _ in range(2)
    ]


DETECTORS: dict[str, tuple[Callable[[], torch.nn.Module], Callable[[], dict]]] = {
    "deformable_detr": (
        lambda: DeformableDetrForObjectDetection(
            DeformableDetrConfig(
                backbone_config=backbone_config(["stage2", "stage3", "stage4"]), num_feature_levels=3, **DETR_HEAD
            )
        ),
        lambda: {"labels": boxes()},
    ),
    "conditional_detr": (
        lambda: ConditionalDetrForObjectDetection(
            ConditionalDetrConfig(backbone_config=backbone_config(["stage4"]), **DETR_HEAD)
        ),
        lambda: {"labels": boxes()},
    ),
    "rt_detr": (
        lambda: RTDetrForObjectDetection(
            RTDetrConfig(
                backbone_config=backbone_config(["stage2", "stage3", "stage4"]),
                d_model=32,
                encoder_hidden_dim=32,
                encoder_in_channels=[32, 64, 128],
                feat_strides=[8, 16, 32],
                decoder_in_channels=[32, 32, 32],
                decoder_layers=2,
                num_queries=10,
                num_labels=3,
            )
        ),
        lambda: {"labels": boxes()},
    ),
    "mask2former": (
        lambda: Mask2FormerForUniversalSegmentation(
            Mask2FormerConfig(
                backbone_config=backbone_config(["stage1", "stage2", "stage3", "stage4"]),
                hidden_dim=32,
                mask_feature_size=32,
                feature_size=32,
                num_queries=10,
                encoder_layers=1,
                decoder_layers=2,
                encoder_feedforward_dim=32,
                dim_feedforward=32,
                num_attention_heads=2,
                num_labels=3,
            )
        ),
        lambda: {
            "mask_labels": [(torch.rand(2, IMAGE, IMAGE) > 0.5).float() for _ in range(2)],
            "class_labels": [torch.tensor([0, 2]) for _ in range(2)],
        },
    ),
    "upernet": (
        lambda: UperNetForSemanticSegmentation(
            UperNetConfig(
                backbone_config=backbone_config(["stage1", "stage2", "stage3", "stage4"]),
                hidden_size=32,
                auxiliary_in_channels=64,
                num_labels=3,
            )
        ),
        lambda: {"labels": torch.randint(0, 3, (2, IMAGE, IMAGE), generator=torch.Generator().manual_seed(0))},
    ),
}

RELOAD_SCRIPT = r"""
import sys
import torch
import swinv2_hf  # the detector's backbone_config names model_type swinv2_hf: registered on import
from transformers import AutoConfig

folder, pixels, output = sys.argv[1], torch.load(sys.argv[2]), sys.argv[3]
model_class = getattr(__import__("transformers"), AutoConfig.from_pretrained(folder).architectures[0])
model = model_class.from_pretrained(folder).eval()
with torch.no_grad():
    outputs = model(pixels)
torch.save(next(value for value in outputs.values() if isinstance(value, torch.Tensor)), output)
print("ok")
"""


def first_output(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        outputs = model.eval()(pixels)
    return next(value for value in outputs.values() if isinstance(value, torch.Tensor))


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_detector_trains_saves_and_reloads(name: str, tmp_path: Path) -> None:
    build, targets = DETECTORS[name]
    torch.manual_seed(0)
    model = build().train()
    pixels = torch.randn(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(1))
    loss = model(pixels, **targets()).loss
    loss.backward()
    backbone = next(module for module in model.modules() if isinstance(module, SwinV2Backbone))
    assert torch.isfinite(loss) and backbone.embeddings.projection.weight.grad.abs().sum() > 0

    model.save_pretrained(tmp_path / name)
    reloaded = type(model).from_pretrained(tmp_path / name)
    saved = model.state_dict()
    assert all(torch.equal(tensor, saved[key]) for key, tensor in reloaded.state_dict().items())
    # Equal weights; the outputs still need not be bit-equal: MKL's and oneDNN's kernels may round differently with
    # the alignment of their buffers (seen at one thread on Zen 3), so within the float32 bound of float64.
    assert_within_bound(
        first_output(reloaded, pixels), first_output(model, pixels), first_output(model.double(), pixels.double())
    )


@pytest.mark.slow
def test_saved_detector_loads_in_a_new_process_once_swinv2_hf_is_imported(tmp_path: Path) -> None:
    """The other process computes in another order (its own thread scheduling), so its float32 output is held to the
    float64 one within the bound that this process's float32 error sets."""
    model = DETECTORS["deformable_detr"][0]()
    pixels = torch.randn(1, 3, IMAGE, IMAGE)
    model.save_pretrained(tmp_path / "detector")
    torch.save(pixels, tmp_path / "pixels.pt")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            RELOAD_SCRIPT,
            str(tmp_path / "detector"),
            str(tmp_path / "pixels.pt"),
            str(tmp_path / "reloaded.pt"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
    reloaded = torch.load(tmp_path / "reloaded.pt", weights_only=True)
    assert_within_bound(reloaded, first_output(model, pixels), first_output(model.double(), pixels.double()))


def test_load_backbone_weights_puts_pretrained_weights_in(tmp_path: Path) -> None:
    """A classification checkpoint goes into a detector's backbone (and survives save/reload); only the backbone's
    per-stage output norms, which classification checkpoints lack, keep their initialisation."""
    pretrained = randomize_weights(SwinV2ForImageClassification(backbone_config(["stage4"])), seed=3)
    pretrained.save_pretrained(tmp_path / "pretrained")
    detector = DETECTORS["deformable_detr"][0]()
    report = load_backbone_weights(detector, tmp_path / "pretrained")

    backbone = next(module for module in detector.modules() if isinstance(module, SwinV2Backbone))
    source = {f"swinv2.{key}": value for key, value in backbone.state_dict().items()}
    expected = pretrained.state_dict()
    loaded = [key for key in source if key in expected]
    assert sorted(set(expected) - set(loaded)) == [  # what a backbone has no place for
        "classifier.bias",
        "classifier.weight",
        "swinv2.layernorm.bias",
        "swinv2.layernorm.weight",
    ]
    assert all(torch.equal(source[key], expected[key]) for key in loaded)
    assert report.newly_initialised[report.backbones[0]] == sorted(
        f"hidden_states_norms.{stage}.{p}" for stage in ("stage2", "stage3", "stage4") for p in ("bias", "weight")
    )
    detector.save_pretrained(tmp_path / "detector")
    reloaded = DeformableDetrForObjectDetection.from_pretrained(tmp_path / "detector")
    reloaded_backbone = next(module for module in reloaded.modules() if isinstance(module, SwinV2Backbone))
    assert all(
        torch.equal(a, b) for a, b in zip(reloaded_backbone.state_dict().values(), backbone.state_dict().values())
    )


def test_load_backbone_weights_needs_a_swinv2_backbone() -> None:
    with pytest.raises(ValueError, match="has no SwinV2Backbone"):
        load_backbone_weights(torch.nn.Linear(2, 2), "anything")


def test_high_resolution_transfer_in_one_call(tmp_path: Path) -> None:
    """A 256 px / window 8 classifier becomes a 1024x1024 backbone with window 16 and pretrained windows [8, 8, 8, 8]
    (the last stage of 256 px maps is 8x8, so nothing clips), reusing the position-bias MLPs; and 800x1333."""
    source_config = SwinV2Config(
        image_size=256, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=8
    )
    classifier = randomize_weights(SwinV2ForImageClassification(source_config), seed=5)
    classifier.save_pretrained(tmp_path / "classifier")
    assert pretraining_windows(source_config) == (8, 8, 8, 8)

    config = transfer_config(
        source_config, image_size=1024, window_size=16, out_features=["stage2", "stage3", "stage4"]
    )
    assert tuple(config.pretrained_window_sizes) == (8, 8, 8, 8) and config.window_size == 16
    backbone = SwinV2Backbone.from_pretrained(tmp_path / "classifier", config=config).eval()
    for name, tensor in backbone.state_dict().items():
        if "continuous_position_bias_mlp" in name:
            assert torch.equal(tensor, classifier.state_dict()[f"swinv2.{name}"]), name
    for size in ((1024, 1024), (800, 1333)):
        pixels = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            first, second = backbone(pixels).feature_maps, backbone(pixels).feature_maps
        assert [tuple(m.shape[-2:]) for m in first] == [(-(-size[0] // s), -(-size[1] // s)) for s in (8, 16, 32)]
        assert all(torch.isfinite(m).all() and torch.equal(m, n) for m, n in zip(first, second))
