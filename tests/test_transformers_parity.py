"""Parity with transformers' own Swinv2 on the same random weights.

transformers' model is re-drawn with `randomize_weights`, its state dict converted with `convert_state_dict(...,
"transformers")` and loaded strictly into ours; every output must then agree within 1e-8 in float64, and in float32
ours must be as close to transformers' float64 outputs as transformers' own float32 ones (conftest.error_bound).
Known differences that stay inside these bounds or are avoided on purpose:
- transformers clamps the logit scale at `math.log(100)`, ours at the original's float32 value: `randomize_weights`
  keeps every logit scale far below both (asserted), so the clamp never acts;
- transformers adds the shift mask twice (-200 where the original and ours add -100): a masked score lies at least
  84 - 2 exp(max logit scale) below the best of its row (about 26 with the logit scales here, at most 3.4), so it
  weighs under exp(-26) either way, far inside the float64 tolerance;
- transformers clips a window by the feature map's height only and decides windows from `config.image_size`; the
  geometries here are those where both rules give the same windows and nothing is padded.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_within_bound, randomize_weights
from test_original_parity import DTYPES, assert_tensors_close
from transformers import (
    Swinv2Backbone,
    Swinv2Config,
    Swinv2ForImageClassification,
    Swinv2ForMaskedImageModeling,
)

from swinv2_hf import SwinV2Backbone, SwinV2Config, SwinV2ForImageClassification, SwinV2ForMaskedImageModeling
from swinv2_hf.conversion import convert_state_dict

FLOAT64_ATOL = 1e-8
NUM_LABELS = 10
# Far below both clamp bounds (log(100) = 4.605): the clamp must not act for the float64 comparison to be exact.
LOGIT_SCALE_CEILING = 4.5

# Fields both configs share; the seed picks the random weights.
GEOMETRIES = {
    # Stage maps 16, 8, 4, 2 with window 4: shifted windows, then a map equal to the window, then one clipped to 2.
    "plain": {
        "image_size": 64,
        "patch_size": 4,
        "embed_dim": 16,
        "depths": [2, 2, 2, 1],
        "num_heads": [2, 2, 4, 8],
        "window_size": 4,
    },
    # Transfer-style continuous position bias: window 8 normalised by pretrained windows 4 (2 in the clipped stage).
    "pretrained_windows": {
        "image_size": 128,
        "patch_size": 4,
        "embed_dim": 12,
        "depths": [2, 2, 2, 1],
        "num_heads": [2, 2, 4, 8],
        "window_size": 8,
        "pretrained_window_sizes": [4, 4, 4, 2],
    },
    # Window 6 with shift 3; the last stage's 3x3 map clips the window to 3.
    "clipped_last_stage": {
        "image_size": 96,
        "patch_size": 4,
        "embed_dim": 12,
        "depths": [2, 2, 2, 2],
        "num_heads": [1, 2, 4, 4],
        "window_size": 6,
    },
    # Maps (16, 32), (8, 16), (4, 8), (2, 4): the height is the smaller side, so transformers' height-only clipping
    # and the original's min(H, W) agree, and every side divides its window.
    "non_square": {
        "image_size": (64, 128),
        "patch_size": 4,
        "embed_dim": 16,
        "depths": [2, 2, 2, 1],
        "num_heads": [2, 2, 4, 8],
        "window_size": 4,
    },
}
GEOMETRY_PARAMS = [pytest.param(fields, seed, id=name) for seed, (name, fields) in enumerate(GEOMETRIES.items())]


def image_shape(fields: Mapping) -> tuple[int, int]:
    """(height, width) of `fields["image_size"]`."""
    size = fields["image_size"]
    return (size, size) if isinstance(size, int) else tuple(size)


def pixels(fields: Mapping, dtype: torch.dtype) -> torch.Tensor:
    """A seeded batch of two already-normalised images of the configured size (drawn in float64, then cast, so that
    both precisions see the same images)."""
    generator = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, *image_shape(fields), generator=generator, dtype=torch.float64).to(dtype)


def random_transformers_model(
    model_class: type, config: Swinv2Config, seed: int, dtype: torch.dtype
) -> torch.nn.Module:
    """A transformers model with every parameter re-drawn, its logit scales checked to stay below the clamps."""
    model = randomize_weights(model_class(config), seed)
    logit_scales = [p for name, p in model.named_parameters() if name.endswith("logit_scale")]
    assert logit_scales and max(p.max().item() for p in logit_scales) < LOGIT_SCALE_CEILING
    return model.to(dtype).eval()


def ours_from(model_class: type, config: SwinV2Config, transformers_model: torch.nn.Module) -> torch.nn.Module:
    """Our model with the transformers model's weights, converted and loaded strictly (nothing missing or left)."""
    model = model_class(config)
    model.load_state_dict(convert_state_dict(transformers_model.state_dict(), "transformers"), strict=True)
    return model.to(transformers_model.dtype).eval()


def classifier_pair(fields: Mapping, seed: int, dtype: torch.dtype) -> tuple[torch.nn.Module, torch.nn.Module]:
    """transformers' classifier and ours with the same random weights."""
    theirs = random_transformers_model(
        Swinv2ForImageClassification, Swinv2Config(**fields, num_labels=NUM_LABELS), seed, dtype
    )
    return theirs, ours_from(SwinV2ForImageClassification, SwinV2Config(**fields, num_labels=NUM_LABELS), theirs)


def classifier_outputs(model: torch.nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Logits, every hidden state in both layouts, and the base model's final norm and pooled features."""
    outputs = model(images, output_hidden_states=True)
    base = model.swinv2(images)
    return {
        "logits": outputs.logits,
        **{f"hidden_states[{i}]": hidden for i, hidden in enumerate(outputs.hidden_states)},
        **{f"reshaped_hidden_states[{i}]": hidden for i, hidden in enumerate(outputs.reshaped_hidden_states)},
        "last_hidden_state": base.last_hidden_state,
        "pooler_output": base.pooler_output,
    }


def assert_outputs_match(
    ours: torch.nn.Module,
    theirs: torch.nn.Module,
    images: torch.Tensor,
    outputs: Callable[[torch.nn.Module, torch.Tensor], dict[str, torch.Tensor]],
) -> None:
    """`outputs` of ours against transformers': within 1e-8 in float64; in float32 against transformers in float64,
    within the bound that transformers' own float32 error sets."""
    with torch.no_grad():
        actual, expected = outputs(ours, images), outputs(theirs, images)
        if images.dtype == torch.float64:
            assert_tensors_close(actual, expected, lambda name: FLOAT64_ATOL)
            return
        exact = outputs(copy.deepcopy(theirs).double(), images.double())
    assert sorted(actual) == sorted(expected)
    for name, reference in expected.items():
        assert_within_bound(actual[name], reference, exact[name], name=name)


def test_conversion_fuses_query_key_value() -> None:
    """transformers splits the attention's input projection into query, key and value; ours keeps the original's
    single `qkv.weight` with rows q; k; v. Checked block by block, so that a fault here is named as such."""
    config = Swinv2Config(**GEOMETRIES["plain"], num_labels=NUM_LABELS)
    state_dict = randomize_weights(Swinv2ForImageClassification(config), 0).state_dict()
    converted = convert_state_dict(state_dict, "transformers")
    blocks = [name.removesuffix("query.weight") for name in state_dict if name.endswith("attention.self.query.weight")]
    assert len(blocks) == sum(config.depths)
    for block in blocks:
        ours = re.sub(
            r"^swinv2\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.self\.$",
            r"swinv2.encoder.stages.\1.blocks.\2.attention.qkv.weight",
            block,
        )
        expected = torch.cat([state_dict[f"{block}{part}.weight"] for part in ("query", "key", "value")])
        if ours not in converted:
            pytest.fail(
                f"{block}query/key/value.weight not fused into {ours}; converted keys of that block: "
                f"{[name for name in converted if name.startswith(ours.removesuffix('attention.qkv.weight'))]}"
            )
        assert torch.equal(converted[ours], expected), ours


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("fields", "seed"), GEOMETRY_PARAMS)
def test_classifier_matches_transformers(fields: dict, seed: int, dtype: torch.dtype) -> None:
    """Logits, every hidden state (flat and reshaped), final norm and pooled features."""
    theirs, ours = classifier_pair(fields, seed, dtype)
    assert_outputs_match(ours, theirs, pixels(fields, dtype), classifier_outputs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("fields", "seed"), GEOMETRY_PARAMS)
def test_backbone_matches_transformers_with_output_norms(fields: dict, seed: int, dtype: torch.dtype) -> None:
    """Our backbone puts a LayerNorm over channels on each output map, transformers' has none: its maps must equal
    transformers' maps passed through our (randomised) norms."""
    stages = ["stem", "stage1", "stage2", "stage3", "stage4"]
    theirs = random_transformers_model(Swinv2Backbone, Swinv2Config(**fields, out_features=stages), seed, dtype)
    ours = randomize_weights(SwinV2Backbone(SwinV2Config(**fields, out_features=stages)), seed + 100)
    converted = convert_state_dict(theirs.state_dict(), "transformers")
    loaded = ours.load_state_dict(
        {name.removeprefix("swinv2."): value for name, value in converted.items()}, strict=False
    )
    assert not loaded.unexpected_keys
    assert loaded.missing_keys and all(name.startswith("hidden_states_norms.") for name in loaded.missing_keys)
    ours = ours.to(dtype).eval()

    def normalised_maps(model: torch.nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = model(images).feature_maps
        assert len(maps) == len(stages)
        if isinstance(model, SwinV2Backbone):
            return dict(zip(stages, maps))
        normalised = {}
        for stage, feature_map in zip(stages, maps):
            norm = ours.hidden_states_norms[stage]
            weight, bias = norm.weight.to(feature_map.dtype), norm.bias.to(feature_map.dtype)
            channels_last = F.layer_norm(feature_map.permute(0, 2, 3, 1), norm.normalized_shape, weight, bias, norm.eps)
            normalised[stage] = channels_last.permute(0, 3, 1, 2)
        return normalised

    assert_outputs_match(ours, theirs, pixels(fields, dtype), normalised_maps)


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_image_modeling_matches_transformers(dtype: torch.dtype) -> None:
    """SimMIM without target normalisation (transformers has none): same reconstruction and masked L1 loss."""
    fields = GEOMETRIES["plain"]
    theirs = random_transformers_model(
        Swinv2ForMaskedImageModeling, Swinv2Config(**fields, encoder_stride=32), 7, dtype
    )
    ours = ours_from(
        SwinV2ForMaskedImageModeling, SwinV2Config(**fields, encoder_stride=32, mim_norm_target_patch_size=0), theirs
    )
    num_patches = math.prod(side // fields["patch_size"] for side in image_shape(fields))
    bool_masked_pos = torch.rand(2, num_patches, generator=torch.Generator().manual_seed(3)) < 0.6

    def reconstruction_and_loss(model: torch.nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
        output = model(images, bool_masked_pos=bool_masked_pos)
        return {"reconstruction": output.reconstruction, "loss": output.loss}

    assert_outputs_match(ours, theirs, pixels(fields, dtype), reconstruction_and_loss)


def test_windows_follow_the_input_not_the_configured_image_size() -> None:
    """A deliberate difference: on a 128x128 input, transformers built for 64 keeps the windows of a 64x64 image
    (no shift in stage 3, window 2 in stage 4) while ours takes them from the input's maps, so our configured
    image size does not matter and ours built for 64 behaves as transformers built for 128."""
    fields_64 = GEOMETRIES["plain"]
    fields_128 = {**fields_64, "image_size": 128}
    their_64, our_64 = classifier_pair(fields_64, 0, torch.float32)
    their_128 = Swinv2ForImageClassification(Swinv2Config(**fields_128, num_labels=NUM_LABELS)).eval()
    their_128.load_state_dict(their_64.state_dict())
    our_128 = ours_from(SwinV2ForImageClassification, SwinV2Config(**fields_128, num_labels=NUM_LABELS), their_64)
    models = {"their_64": their_64, "their_128": their_128, "our_64": our_64, "our_128": our_128}
    images = pixels(fields_128, torch.float32)
    with torch.no_grad():
        logits = {name: model(images).logits for name, model in models.items()}
    torch.testing.assert_close(logits["our_64"], logits["our_128"], rtol=0, atol=1e-6)
    torch.testing.assert_close(logits["our_64"], logits["their_128"], rtol=0, atol=1e-4)
    assert (logits["their_64"] - logits["their_128"]).abs().max().item() > 1e-4
