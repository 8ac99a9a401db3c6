"""SwinV2Backbone: feature-map geometry, Auto registration, loading classification checkpoints, output norms, masks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import randomize_weights, tiny_config
from transformers import AutoBackbone

from swinv2_hf import SwinV2Backbone, SwinV2ForImageClassification

ALL_STAGES = ["stem", "stage1", "stage2", "stage3"]
# Tiny config: embed 16, patch 2, three stages; the stem has the first stage's width and stride.
CHANNELS = [16, 16, 32, 64]
STRIDES = [2, 2, 4, 8]


def random_backbone(seed: int = 0) -> SwinV2Backbone:
    """A tiny backbone returning every stage, every weight (output norms included) re-drawn, in eval mode."""
    return randomize_weights(SwinV2Backbone(tiny_config(out_features=ALL_STAGES)), seed=seed).eval()


def normalised(feature_map: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    """LayerNorm over the channels of a (B, C, H, W) map, written out with the norm's parameters."""
    channels_last = feature_map.permute(0, 2, 3, 1)
    mean = channels_last.mean(dim=-1, keepdim=True)
    variance = channels_last.var(dim=-1, unbiased=False, keepdim=True)
    scaled = (channels_last - mean) / torch.sqrt(variance + norm.eps) * norm.weight + norm.bias
    return scaled.permute(0, 3, 1, 2)


@pytest.mark.parametrize(
    "selection", [{"out_features": ALL_STAGES}, {"out_indices": [0, 1, 2, 3]}], ids=["out_features", "out_indices"]
)
def test_feature_map_shapes_and_channels(selection: dict, pixel_values: torch.Tensor) -> None:
    backbone = randomize_weights(SwinV2Backbone(tiny_config(**selection))).eval()
    assert backbone.out_features == ALL_STAGES
    with torch.no_grad():
        maps = backbone(pixel_values).feature_maps
    batch, _, height, width = pixel_values.shape
    assert [tuple(m.shape) for m in maps] == [(batch, c, height // s, width // s) for c, s in zip(CHANNELS, STRIDES)]
    assert backbone.channels == CHANNELS


def test_default_output_is_last_stage(pixel_values: torch.Tensor) -> None:
    backbone = randomize_weights(SwinV2Backbone(tiny_config())).eval()
    assert backbone.out_features == ["stage3"]
    with torch.no_grad():
        maps = backbone(pixel_values).feature_maps
    assert [tuple(m.shape) for m in maps] == [(2, 64, 4, 4)]
    assert backbone.channels == [64]


def test_auto_backbone_from_config() -> None:
    backbone = AutoBackbone.from_config(tiny_config(out_features=["stage1", "stage3"]))
    assert type(backbone) is SwinV2Backbone
    assert backbone.out_features == ["stage1", "stage3"]


@pytest.fixture
def classifier_and_backbone(tmp_path: Path) -> tuple[SwinV2ForImageClassification, SwinV2Backbone]:
    """A randomised classifier saved to disk and a backbone loaded from that classification checkpoint."""
    classifier = randomize_weights(SwinV2ForImageClassification(tiny_config()), seed=3).eval()
    classifier.save_pretrained(tmp_path)
    backbone = SwinV2Backbone.from_pretrained(tmp_path, out_features=ALL_STAGES)
    return classifier, backbone.eval()


def test_backbone_loads_classification_checkpoint(
    classifier_and_backbone: tuple[SwinV2ForImageClassification, SwinV2Backbone],
) -> None:
    classifier, backbone = classifier_and_backbone
    assert backbone.out_features == ALL_STAGES
    source = classifier.state_dict()
    encoder_keys = [key for key in backbone.state_dict() if key.startswith(("embeddings.", "encoder."))]
    assert any(".attention.qkv.weight" in key for key in encoder_keys)
    for key in encoder_keys:
        assert torch.equal(backbone.state_dict()[key], source[f"swinv2.{key}"]), key


def test_feature_maps_are_normalised_stage_maps(pixel_values: torch.Tensor) -> None:
    backbone = random_backbone()
    with torch.no_grad():
        stage_maps = backbone.encoder(*backbone.embeddings(pixel_values), output_stage_maps=True).stage_maps
        feature_maps = backbone(pixel_values).feature_maps
    assert len(feature_maps) == len(stage_maps)
    for stage, feature_map, stage_map in zip(ALL_STAGES, feature_maps, stage_maps):
        expected = normalised(stage_map, backbone.hidden_states_norms[stage])
        torch.testing.assert_close(feature_map, expected, rtol=1e-5, atol=1e-5)


def test_hidden_states_and_tuple_output(pixel_values: torch.Tensor) -> None:
    backbone = random_backbone()
    with torch.no_grad():
        output = backbone(pixel_values, output_hidden_states=True)
        as_tuple = backbone(pixel_values, return_dict=False)
    assert output.hidden_states is not None and len(output.hidden_states) == len(ALL_STAGES)
    assert isinstance(as_tuple, tuple)
    assert len(as_tuple[0]) == len(output.feature_maps)
    for from_tuple, from_dict in zip(as_tuple[0], output.feature_maps):
        torch.testing.assert_close(from_tuple, from_dict, rtol=0, atol=0)


def test_pixel_mask_padded_image_matches_image_alone() -> None:
    """A 24x24 image padded into a 32x32 canvas gives its own features where it lies.

    With patch 2 and window 2 every stage keeps window 2 (maps 12/6/3 alone, 16/8/4 in the canvas; the 3x3 map is
    padded to 4x4), so the windows over the real tokens are the same at every stage. Stage 1 has a single unshifted
    block whose windows never cross the image border, so the mask is exercised by the shifted block of stage 2 and
    the padded windows of stage 3.
    """
    backbone = random_backbone(seed=5)
    generator = torch.Generator().manual_seed(7)
    large = torch.randn(1, 3, 32, 32, generator=generator)
    small = torch.randn(1, 3, 24, 24, generator=generator)
    canvas = torch.zeros(2, 3, 32, 32)
    canvas[0] = large[0]
    canvas[1, :, :24, :24] = small[0]
    pixel_mask = torch.zeros(2, 32, 32, dtype=torch.long)
    pixel_mask[0] = 1
    pixel_mask[1, :24, :24] = 1
    with torch.no_grad():
        batched = backbone(canvas, pixel_mask=pixel_mask).feature_maps
        alone = backbone(small).feature_maps
    for stage, stride, batched_map, alone_map in zip(ALL_STAGES, STRIDES, batched, alone):
        side = 24 // stride
        assert alone_map.shape[-2:] == (side, side), stage
        torch.testing.assert_close(
            batched_map[1:, :, :side, :side],
            alone_map,
            rtol=0,
            atol=1e-5,
            msg=lambda text, stage=stage: f"{stage}: {text}",
        )
    # The full image in the same batch is unaffected by the mask of its neighbour.
    with torch.no_grad():
        large_alone = backbone(large).feature_maps
    for batched_map, alone_map in zip(batched, large_alone):
        torch.testing.assert_close(batched_map[:1], alone_map, rtol=0, atol=1e-5)
