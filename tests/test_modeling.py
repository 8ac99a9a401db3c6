"""Behaviour of the SwinV2 models: shapes, presets, losses, SimMIM, input checks, the position-bias cache, activation
checkpointing, chunked attention, arbitrary input sizes, padded canvases, half precision, torch.compile, saving,
loading at another resolution, initialisation and the extra main-branch norm.

Every check compares two computations that must agree, or a property; no expected number comes from our own outputs.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import randomize_weights, tiny_config
from torch import nn

from swinv2_hf import (
    PRESETS,
    SwinV2Backbone,
    SwinV2Config,
    SwinV2ForImageClassification,
    SwinV2ForMaskedImageModeling,
    SwinV2Model,
    SwinV2PreTrainedModel,
)
from swinv2_hf.modeling_swinv2_hf import SwinV2Block, SwinV2WindowAttention, relative_position_tables

MODEL_CLASSES = (SwinV2Model, SwinV2ForImageClassification, SwinV2ForMaskedImageModeling)
# Comparisons of two computations that agree only up to rounding run in float64: with the randomised weights, logit
# scales near the clamp (100) make attention sharp, and float32 rounding alone reaches 2e-5 on features of size 5.
EXACT = torch.float64


# ----------------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------------


def make_model(
    model_class: type[SwinV2PreTrainedModel] = SwinV2ForImageClassification, seed: int = 0, **overrides
) -> SwinV2PreTrainedModel:
    """A tiny model (conftest's `tiny_config` plus `overrides`) with every weight re-drawn from `seed`, in eval mode."""
    torch.manual_seed(seed)
    return randomize_weights(model_class(tiny_config(**overrides)), seed=seed).eval()


def images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Seeded standard-normal pixels (B, 3, H, W), standing in for normalised images."""
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def random_patch_mask(batch: int, grid: int, seed: int = 3) -> torch.Tensor:
    """A SimMIM mask (B, grid*grid), True for about half of the patches."""
    return torch.rand(batch, grid * grid, generator=torch.Generator().manual_seed(seed)) < 0.5


def attention_modules(model: nn.Module) -> list[SwinV2WindowAttention]:
    """Every window-attention module of `model`, in order."""
    return [module for module in model.modules() if isinstance(module, SwinV2WindowAttention)]


def gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    """Name -> gradient of every parameter; fails if a parameter that needs one got none."""
    grads = {name: parameter.grad for name, parameter in model.named_parameters() if parameter.requires_grad}
    missing = [name for name, grad in grads.items() if grad is None]
    assert not missing, f"no gradient for {missing}"
    return grads


def rebuild(model: SwinV2PreTrainedModel, **overrides) -> SwinV2PreTrainedModel:
    """A model of the same class from `tiny_config(**overrides)`, holding `model`'s weights, in `model`'s mode."""
    twin = type(model)(tiny_config(**overrides))
    twin.load_state_dict(model.state_dict())
    return twin.train(model.training)


def expected_stages(config: SwinV2Config, height: int, width: int) -> list[tuple[int, int, int, int]]:
    """(channels, map height, map width, window) of every stage, from the paper's rules and the config alone:
    a patch grid (padded up), halved (rounded up) by each merge, windows clipped to maps not larger than them."""
    map_height, map_width = math.ceil(height / config.patch_size), math.ceil(width / config.patch_size)
    stages = []
    for stage in range(len(config.depths)):
        smaller = min(map_height, map_width)
        window = smaller if smaller <= config.window_size else config.window_size
        stages.append((config.embed_dim * 2**stage, map_height, map_width, window))
        if stage < len(config.depths) - 1:
            map_height, map_width = math.ceil(map_height / 2), math.ceil(map_width / 2)
    return stages


def assert_nested_equal(actual, expected) -> None:
    """Tensors, or (nested) tuples of them, bit-identical."""
    if isinstance(expected, torch.Tensor):
        assert torch.equal(actual, expected)
        return
    assert isinstance(actual, tuple) and len(actual) == len(expected)
    for actual_item, expected_item in zip(actual, expected):
        assert_nested_equal(actual_item, expected_item)


# ----------------------------------------------------------------------------------------------------------------------
# 1. Output shapes and return_dict=False
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
@pytest.mark.parametrize("height,width", [(32, 32), (40, 24)])
def test_output_shapes(model_class: type[SwinV2PreTrainedModel], height: int, width: int) -> None:
    model = make_model(model_class)
    config = model.config
    batch = 2
    with torch.no_grad():
        outputs = model(images(batch, height, width), output_hidden_states=True, output_attentions=True)

    stages = expected_stages(config, height, width)
    # Embeddings, then every stage's output after patch merging (the last stage has none).
    maps = [stages[0][:3]] + [stages[min(index + 1, len(stages) - 1)][:3] for index in range(len(stages))]
    assert len(outputs.hidden_states) == len(outputs.reshaped_hidden_states) == len(config.depths) + 1
    for hidden, reshaped, (channels, map_height, map_width) in zip(
        outputs.hidden_states, outputs.reshaped_hidden_states, maps
    ):
        assert hidden.shape == (batch, map_height * map_width, channels)
        assert reshaped.shape == (batch, channels, map_height, map_width)
        assert torch.equal(reshaped.flatten(2).transpose(1, 2), hidden)

    expected_attentions = []
    for stage, (_, map_height, map_width, window) in enumerate(stages):
        num_windows = math.ceil(map_height / window) * math.ceil(map_width / window)
        shape = (batch * num_windows, config.num_heads[stage], window**2, window**2)
        expected_attentions += [shape] * config.depths[stage]
    assert [tuple(attention.shape) for attention in outputs.attentions] == expected_attentions
    for attention in outputs.attentions:
        torch.testing.assert_close(attention.sum(-1), torch.ones(attention.shape[:-1]), rtol=0, atol=1e-5)

    last_channels, last_height, last_width, _ = stages[-1]
    if model_class is SwinV2Model:
        assert outputs.last_hidden_state.shape == (batch, last_height * last_width, last_channels)
        assert outputs.pooler_output.shape == (batch, last_channels)
    elif model_class is SwinV2ForImageClassification:
        assert outputs.logits.shape == (batch, config.num_labels)
    else:
        assert outputs.reconstruction.shape == (batch, config.num_channels, height, width)


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_return_dict_false_gives_the_fields_as_a_tuple(model_class: type[SwinV2PreTrainedModel]) -> None:
    model = make_model(model_class)
    pixel_values = images(2, 32, 32)
    kwargs = {"output_hidden_states": True, "output_attentions": True}
    if model_class is SwinV2ForMaskedImageModeling:
        kwargs["bool_masked_pos"] = random_patch_mask(2, 16)
    with torch.no_grad():
        as_dict = model(pixel_values, **kwargs)
        as_tuple = model(pixel_values, return_dict=False, **kwargs)
    first = {
        SwinV2Model: ["last_hidden_state", "pooler_output"],
        SwinV2ForImageClassification: ["logits"],
        SwinV2ForMaskedImageModeling: ["loss", "reconstruction"],
    }[model_class]
    fields = [*first, "hidden_states", "attentions", "reshaped_hidden_states"]
    assert isinstance(as_tuple, tuple)
    assert_nested_equal(as_tuple, tuple(getattr(as_dict, name) for name in fields))


# ----------------------------------------------------------------------------------------------------------------------
# 2. Presets and a real-size model
# ----------------------------------------------------------------------------------------------------------------------

# Parameters with an ImageNet-1K head: microsoft/Swin-Transformer README (T, S, B, L) and the paper, table 1 (H, G).
PUBLISHED_PARAMETERS = {"tiny": 28e6, "small": 50e6, "base": 88e6, "large": 197e6, "huge": 658e6, "giant": 3.0e9}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_builds_on_meta_with_the_published_size(name: str) -> None:
    config = SwinV2Config.from_preset(name)
    with torch.device("meta"):
        model = SwinV2ForImageClassification(config)
    parameters = list(model.parameters())
    assert all(parameter.is_meta for parameter in parameters)
    count = sum(parameter.numel() for parameter in parameters)
    # The published figures count a 1000-class head; adjust for the preset's head (22k: 21841 classes).
    expected = PUBLISHED_PARAMETERS[name.split("_")[1]] + (config.num_labels - 1000) * (config.hidden_size + 1)
    assert abs(count - expected) <= 0.03 * expected, f"{name}: {count / 1e6:.2f}M, expected ~{expected / 1e6:.2f}M"


def test_real_tiny_preset_forward_backward_is_finite() -> None:
    torch.manual_seed(0)
    model = SwinV2ForImageClassification(SwinV2Config.from_preset("swinv2_tiny_window8_256")).train()
    outputs = model(images(1, 64, 64), labels=torch.tensor([1]))
    assert torch.isfinite(outputs.logits).all() and torch.isfinite(outputs.loss)
    outputs.loss.backward()
    for name, grad in gradients(model).items():
        assert torch.isfinite(grad).all(), name


# ----------------------------------------------------------------------------------------------------------------------
# 3. Classification losses
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("problem", ["single_label", "multi_label", "regression"])
def test_classification_loss_matches_torch(problem: str) -> None:
    num_labels = 1 if problem == "regression" else 5
    model = make_model(num_labels=num_labels)
    generator = torch.Generator().manual_seed(2)
    if problem == "single_label":
        labels = torch.randint(0, num_labels, (3,), generator=generator)
    elif problem == "multi_label":
        labels = (torch.rand(3, num_labels, generator=generator) < 0.5).float()
    else:
        labels = torch.randn(3, generator=generator)
    with torch.no_grad():
        outputs = model(images(3, 32, 32), labels=labels)
    logits = outputs.logits
    expected = {
        "single_label": lambda: F.cross_entropy(logits, labels),
        "multi_label": lambda: F.binary_cross_entropy_with_logits(logits, labels),
        "regression": lambda: F.mse_loss(logits[:, 0], labels),
    }[problem]()
    torch.testing.assert_close(outputs.loss, expected, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# 4. SimMIM
# ----------------------------------------------------------------------------------------------------------------------


def test_simmim_mask_layouts_agree_and_loss_is_masked_l1() -> None:
    model = make_model(SwinV2ForMaskedImageModeling, mim_norm_target_patch_size=0)
    pixel_values = images(2, 32, 32)
    grid = 32 // model.config.patch_size
    flat = random_patch_mask(2, grid)
    with torch.no_grad():
        from_flat = model(pixel_values, bool_masked_pos=flat)
        from_grid = model(pixel_values, bool_masked_pos=flat.view(2, grid, grid))
    assert torch.equal(from_flat.reconstruction, from_grid.reconstruction)
    assert torch.equal(from_flat.loss, from_grid.loss)

    # L1 over the masked pixels of every channel, averaged: sum / (masked pixels) / channels.
    patch = model.config.patch_size
    pixel_mask = flat.view(2, grid, grid).repeat_interleave(patch, 1).repeat_interleave(patch, 2)  # (B, H, W)
    errors = (pixel_values - from_flat.reconstruction).abs().permute(0, 2, 3, 1)[pixel_mask]  # (masked pixels, C)
    torch.testing.assert_close(from_flat.loss, errors.mean(), rtol=0, atol=1e-6)


def test_simmim_masking_changes_the_reconstruction() -> None:
    model = make_model(SwinV2ForMaskedImageModeling)
    pixel_values = images(2, 32, 32)
    with torch.no_grad():
        masked = model(pixel_values, bool_masked_pos=random_patch_mask(2, 16)).reconstruction
        unmasked = model(pixel_values).reconstruction
    assert (masked - unmasked).abs().max() > 1e-3


def test_simmim_rejects_sides_not_multiple_of_encoder_stride() -> None:
    model = make_model(SwinV2ForMaskedImageModeling)
    with pytest.raises(ValueError, match="stride"):
        model(images(1, 36, 32))


@pytest.mark.parametrize("layout", ["transposed", "too_few_patches", "other_grid"])
def test_simmim_mask_of_another_shape_is_rejected(layout: str) -> None:
    """A transposed (num_patches, B) mask has the right size, so a reshape alone would take it (another loss)."""
    flat = random_patch_mask(2, 16)
    mask = {"transposed": flat.T, "too_few_patches": flat[:, :100], "other_grid": flat.view(2, 32, 8)}[layout]
    with pytest.raises(ValueError, match="bool_masked_pos") as error:
        make_model(SwinV2ForMaskedImageModeling)(images(2, 32, 32), bool_masked_pos=mask)
    assert all(shape in str(error.value) for shape in (str(tuple(mask.shape)), "(2, 256)", "(2, 16, 16)"))


def test_bool_masked_pos_without_mask_token_is_rejected() -> None:
    model = make_model(SwinV2Model)
    with pytest.raises(ValueError, match="mask token"):
        model(images(1, 32, 32), bool_masked_pos=random_patch_mask(1, 16))


# ----------------------------------------------------------------------------------------------------------------------
# 5. Bad inputs and checkpoints
# ----------------------------------------------------------------------------------------------------------------------

BAD_INPUTS = {
    "channels": (lambda: images(2, 32, 32)[:, :1], None, "channels"),
    "smaller_than_patch": (lambda: images(2, 1, 1), None, "patch"),
    "three_dimensional": (lambda: images(1, 32, 32)[0], None, "4D"),
    "float64": (lambda: images(2, 32, 32).double(), None, "float64"),
    "uint8": (lambda: images(2, 32, 32).clamp(0, 1).mul(255).to(torch.uint8), None, "uint8"),
    "pixel_mask_shape": (lambda: images(2, 32, 32), lambda: torch.ones(2, 16, 16), "pixel_mask"),
    "empty_batch": (lambda: images(0, 32, 32), None, "batch size 0"),
}


BAD_INPUT_CASES = [
    (model_class, case)
    for model_class in MODEL_CLASSES
    for case in sorted(BAD_INPUTS)
    # masked image modeling takes no pixel_mask
    if not (BAD_INPUTS[case][1] is not None and model_class is SwinV2ForMaskedImageModeling)
]


@pytest.mark.parametrize(("model_class", "case"), BAD_INPUT_CASES)
def test_bad_input_raises_before_any_computation(model_class: type[SwinV2PreTrainedModel], case: str) -> None:
    make_pixels, make_mask, message = BAD_INPUTS[case]
    model = make_model(model_class)
    calls = []
    model.base_model.embeddings.register_forward_pre_hook(lambda module, args: calls.append(module))
    kwargs = {} if make_mask is None else {"pixel_mask": make_mask()}
    with pytest.raises(ValueError, match=message):
        model(make_pixels(), **kwargs)
    assert not calls, "the model computed before rejecting the input"


@pytest.mark.parametrize("override", ["keyword_arguments", "config"])
def test_checkpoint_that_does_not_fit_the_config_is_a_value_error(tmp_path, override: str) -> None:
    make_model().save_pretrained(tmp_path)
    kwargs = (
        {"embed_dim": 32, "num_heads": (2, 2, 4)}
        if override == "keyword_arguments"
        else {"config": tiny_config(embed_dim=24, num_heads=(2, 4, 4))}
    )
    with pytest.raises(ValueError, match=r"swinv2\.(embeddings|encoder)\.\S+"):
        SwinV2ForImageClassification.from_pretrained(tmp_path, **kwargs)


def test_ignore_mismatched_sizes_given_either_way(tmp_path) -> None:
    """False behaves as leaving it out (a readable error), True re-initialises the mismatched head."""
    make_model().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"classifier\.weight"):
        SwinV2ForImageClassification.from_pretrained(tmp_path, num_labels=3, ignore_mismatched_sizes=False)
    model = SwinV2ForImageClassification.from_pretrained(tmp_path, num_labels=3, ignore_mismatched_sizes=True)
    assert model.classifier.weight.shape == (3, 16 * 4)


# ----------------------------------------------------------------------------------------------------------------------
# 6. Position-bias cache
# ----------------------------------------------------------------------------------------------------------------------


def test_position_bias_cache_hits_and_sees_in_place_edits() -> None:
    model = make_model()
    attention = attention_modules(model)[0]
    window = attention.window
    with torch.no_grad():
        first = attention.cached_position_bias(window)
        assert attention.cached_position_bias(window) is first
        assert torch.equal(first, attention.position_bias(window))

        attention.continuous_position_bias_mlp[0].weight.add_(0.1)
        edited = attention.cached_position_bias(window)
        assert torch.equal(edited, attention.position_bias(window))
        assert not torch.equal(edited, first)

        model(images(1, 32, 32))
    assert all(module._bias_cache is not None for module in attention_modules(model))
    model.train()(images(1, 32, 32)).logits.sum().backward()  # training keeps no stale bias
    assert all(module._bias_cache is None for module in attention_modules(model))


@pytest.mark.parametrize("assign", [False, True])
def test_loading_other_weights_bypasses_the_cache(assign: bool) -> None:
    model, other = make_model(seed=0), make_model(seed=1)
    pixel_values = images(2, 32, 32)
    with torch.no_grad():
        model(pixel_values)  # fills the caches with the seed-0 biases
        model.load_state_dict(other.state_dict(), assign=assign)
        fresh = SwinV2ForImageClassification(tiny_config()).eval()
        fresh.load_state_dict(other.state_dict())
        assert torch.equal(model(pixel_values).logits, fresh(pixel_values).logits)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_position_bias_carries_gradient_when_needed(mode: str) -> None:
    model = make_model().train(mode == "train")
    with torch.no_grad():
        model(images(1, 32, 32))  # fills the cache, which must not be returned when a gradient is needed
    attention = attention_modules(model)[0]
    assert attention.cached_position_bias(attention.window).requires_grad
    model(images(1, 32, 32)).logits.sum().backward()
    for module in attention_modules(model):
        assert module.continuous_position_bias_mlp[0].weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------------------------
# 7. Activation checkpointing
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("enable", ["gradient_checkpointing_enable", "activation_checkpointing_enable"])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(enable: str) -> None:
    plain = make_model().train()
    checkpointed = rebuild(plain)
    getattr(checkpointed, enable)()
    # transformers checkpoints the blocks' `forward`, so a hook on a block's child sees the recomputation.
    mlp_calls = []
    for module in checkpointed.modules():
        if isinstance(module, SwinV2Block):
            module.mlp.register_forward_hook(lambda module, args, output: mlp_calls.append(module))

    pixel_values, labels = images(2, 40, 40), torch.tensor([1, 3])
    plain_loss = plain(pixel_values, labels=labels).loss
    checkpointed_loss = checkpointed(pixel_values, labels=labels).loss
    plain_loss.backward()
    checkpointed_loss.backward()

    num_blocks = sum(plain.config.depths)
    assert len(mlp_calls) == 2 * num_blocks, "every block should be recomputed once in the backward pass"
    torch.testing.assert_close(checkpointed_loss, plain_loss, rtol=0, atol=1e-6)
    torch.testing.assert_close(gradients(checkpointed), gradients(plain), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# 8. Chunked window attention
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("chunk", [1, 3])
def test_chunked_attention_matches_unchunked(chunk: int, implementation: str) -> None:
    # 40x40: maps 20/10/5, so the last stage pads its windows; shifted blocks in the first two.
    whole = make_model(attn_implementation=implementation).to(EXACT)
    chunked = rebuild(whole, attention_chunk_size=chunk, attn_implementation=implementation).to(EXACT)
    assert chunked.config._attn_implementation == implementation
    pixel_values = images(2, 40, 40).to(EXACT)

    with torch.no_grad():
        whole_attentions = whole(pixel_values, output_attentions=True).attentions
        chunked_attentions = chunked(pixel_values, output_attentions=True).attentions
    torch.testing.assert_close(chunked_attentions, whole_attentions, rtol=0, atol=1e-6)

    whole_logits, chunked_logits = whole(pixel_values).logits, chunked(pixel_values).logits
    torch.testing.assert_close(chunked_logits, whole_logits, rtol=0, atol=1e-6)
    whole_logits.square().sum().backward()
    chunked_logits.square().sum().backward()
    torch.testing.assert_close(gradients(chunked), gradients(whole), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# 9-10. Input sizes
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("height,width", [(32, 48), (36, 44), (30, 30), (33, 47)])
def test_any_input_size_is_finite_and_batch_independent(height: int, width: int) -> None:
    model = make_model(SwinV2Model)
    pixel_values = images(3, height, width)
    with torch.no_grad():
        for batch in (pixel_values, pixel_values[:1]):
            outputs = model(batch)
            assert torch.isfinite(outputs.last_hidden_state).all() and torch.isfinite(outputs.pooler_output).all()
        model, pixel_values = model.to(EXACT), pixel_values.to(EXACT)
        batched = model(pixel_values)
        alone = [model(pixel_values[index : index + 1]) for index in range(3)]
    for name in ("last_hidden_state", "pooler_output"):
        single = torch.cat([getattr(output, name) for output in alone])
        torch.testing.assert_close(getattr(batched, name), single, rtol=0, atol=1e-5)


@pytest.mark.parametrize("image_size", [8, 32])
def test_outputs_do_not_depend_on_config_image_size(image_size: int) -> None:
    # image_size 8 gives a 1x1 last map at build time (window 1 tables); a 64x64 input needs window 2 there.
    reference = make_model(image_size=64)
    other = rebuild(reference, image_size=image_size)
    pixel_values = images(2, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(other(pixel_values).logits, reference(pixel_values).logits, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# 11. Padded canvas with pixel_mask
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sizes",
    [[(32, 32)], [(28, 28)], [(32, 32), (28, 20)]],
    ids=["32_in_48", "28_in_48_padded_windows", "batch_of_two_sizes"],
)
def test_image_in_a_padded_canvas_equals_the_image_alone(sizes: list[tuple[int, int]]) -> None:
    # The tiny config (patch 2, window 2) on a 48x48 canvas: maps 24/12/6, window 2 and shift 1 in every stage, as
    # for the images alone (32: maps 16/8/4; 28: 14/7/4 with padded windows in stage 2; 28x20: 14x10/7x5/4x3).
    model = make_model(SwinV2Model).to(EXACT)
    canvas = torch.zeros(len(sizes), 3, 48, 48, dtype=EXACT)
    pixel_mask = torch.zeros(len(sizes), 48, 48, dtype=torch.long)
    pictures = [images(1, height, width, seed=index).to(EXACT) for index, (height, width) in enumerate(sizes)]
    for index, picture in enumerate(pictures):
        height, width = picture.shape[2:]
        canvas[index, :, :height, :width] = picture[0]
        pixel_mask[index, :height, :width] = 1

    with torch.no_grad():
        padded = model(canvas, pixel_mask=pixel_mask, output_hidden_states=True)
        unmasked = model(canvas)
        for index, picture in enumerate(pictures):
            alone = model(picture, output_hidden_states=True)
            torch.testing.assert_close(padded.pooler_output[index], alone.pooler_output[0], rtol=0, atol=1e-5)
            for stage, (expected, canvas_map) in enumerate(
                zip(alone.reshaped_hidden_states, padded.reshaped_hidden_states)
            ):
                height, width = expected.shape[2:]
                torch.testing.assert_close(
                    canvas_map[index, :, :height, :width], expected[0], rtol=0, atol=1e-5, msg=f"map {stage}"
                )
            # Without the mask the zero padding takes part in attention and pooling.
            assert (unmasked.pooler_output[index] - alone.pooler_output[0]).abs().max() > 1e-3


# ----------------------------------------------------------------------------------------------------------------------
# 12. Half precision
# ----------------------------------------------------------------------------------------------------------------------


def deep_model_with_large_weights() -> SwinV2ForImageClassification:
    """One stage of 24 blocks, weights drawn 4x larger than usual and every logit scale above the clamp."""
    config = tiny_config(embed_dim=32, depths=(24,), num_heads=(2,), window_size=4)
    model = randomize_weights(SwinV2ForImageClassification(config), seed=5, scale=4.0).eval()
    with torch.no_grad():
        for attention in attention_modules(model):
            attention.logit_scale.fill_(math.log(100.0) + 1.0)
    return model


@pytest.mark.parametrize(
    "mode,dtype",
    [
        ("float32", torch.float32),
        ("autocast", torch.bfloat16),
        ("autocast", torch.float16),
        ("cast", torch.bfloat16),
        ("cast", torch.float16),
    ],
)
def test_deep_model_with_large_weights_stays_finite(mode: str, dtype: torch.dtype) -> None:
    """An overflow check, not an accuracy one: with every logit scale above the clamp and weights 4x too large, 24
    blocks are chaotic (float32 is already 3e-3 from float64 after them). Accuracy against float64 in half precision
    is tested on a well-conditioned model in test_kernels.py."""
    model = deep_model_with_large_weights()
    pixel_values = images(2, 32, 32)
    with torch.no_grad():
        if mode == "float32":
            outputs = model(pixel_values, output_hidden_states=True)
        elif mode == "autocast":
            with torch.autocast("cpu", dtype=dtype):
                outputs = model(pixel_values, output_hidden_states=True)
        else:
            outputs = model.to(dtype)(pixel_values.to(dtype), output_hidden_states=True)
    for hidden in (*outputs.hidden_states, outputs.logits):
        assert torch.isfinite(hidden).all()


# ----------------------------------------------------------------------------------------------------------------------
# 13. torch.compile
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_torch_compile_fullgraph_matches_eager() -> None:
    model = make_model()
    pixel_values = images(2, 32, 32)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(pixel_values).logits, model(pixel_values).logits, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# 14-16. Saving, loading and initialisation
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_save_and_load_round_trip_is_bit_exact(tmp_path, model_class: type[SwinV2PreTrainedModel]) -> None:
    model = make_model(model_class)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = model_class.from_pretrained(tmp_path).eval()

    saved_state, loaded_state = model.state_dict(), loaded.state_dict()
    assert saved_state.keys() == loaded_state.keys()
    for key, value in saved_state.items():
        assert torch.equal(loaded_state[key], value), key
    pixel_values = images(2, 32, 32)
    with torch.no_grad():
        assert_nested_equal(loaded(pixel_values, return_dict=False), model(pixel_values, return_dict=False))


def test_loading_at_a_larger_window_reuses_the_position_bias_mlp(tmp_path) -> None:
    saved = make_model()
    saved.save_pretrained(tmp_path)
    model = SwinV2ForImageClassification.from_pretrained(
        tmp_path, image_size=64, window_size=4, pretrained_window_sizes=[2, 2, 2]
    ).eval()

    saved_state = saved.state_dict()
    mlp_keys = [key for key in saved_state if "continuous_position_bias_mlp" in key]
    assert mlp_keys
    for key in mlp_keys:
        assert torch.equal(model.state_dict()[key], saved_state[key]), key
    coordinates, index = relative_position_tables(4, 2)
    for attention in attention_modules(model):
        assert attention.window == 4 and attention.pretrained_window == 2
        assert torch.equal(attention.relative_coords_table, coordinates)
        assert torch.equal(attention.relative_position_index, index)

    pixel_values = images(2, 64, 64)
    with torch.no_grad():
        first, second = model(pixel_values).logits, model(pixel_values).logits
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)


@pytest.mark.parametrize("model_class", [SwinV2ForImageClassification, SwinV2Backbone])
def test_loading_at_a_larger_resolution_resizes_absolute_positions(tmp_path, model_class: type) -> None:
    saved = make_model(use_absolute_embeddings=True)
    saved.save_pretrained(tmp_path)
    model = model_class.from_pretrained(tmp_path, image_size=64)

    grid = saved.swinv2.embeddings.position_embeddings.view(1, 16, 16, -1).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(32, 32), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(model.base_model.embeddings.position_embeddings, expected, rtol=0, atol=1e-6)


def special_parameters(model: nn.Module) -> dict[str, tuple[torch.Tensor, float]]:
    """Name -> (parameter, value the original initialises it to) for LayerNorms, logit scales and q/v biases."""
    post_norms = {
        id(norm)
        for block in model.modules()
        if isinstance(block, SwinV2Block)
        for norm in (block.attention_norm, block.mlp_norm)
    }
    special = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.LayerNorm):
            special[f"{name}.weight"] = (module.weight, 0.0 if id(module) in post_norms else 1.0)
            special[f"{name}.bias"] = (module.bias, 0.0)
        elif isinstance(module, SwinV2WindowAttention):
            special[f"{name}.logit_scale"] = (module.logit_scale, math.log(10.0))
            special[f"{name}.q_bias"] = (module.q_bias, 0.0)
            special[f"{name}.v_bias"] = (module.v_bias, 0.0)
    return special


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_initialisation_as_the_original(model_class: type[SwinV2PreTrainedModel]) -> None:
    special = special_parameters(model_class(tiny_config()))
    assert any(value == 0.0 and "attention_norm" in name for name, (_, value) in special.items())
    wrong = [
        name
        for name, (parameter, value) in special.items()
        if not torch.equal(parameter, torch.full_like(parameter, value))
    ]
    assert not wrong, f"not initialised as the original: {wrong}"


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_loading_keeps_the_specially_initialised_parameters(tmp_path, model_class: type[SwinV2PreTrainedModel]) -> None:
    randomized = make_model(model_class)
    randomized.save_pretrained(tmp_path)
    loaded = model_class.from_pretrained(tmp_path)
    saved_special = special_parameters(randomized)
    for name, (parameter, _) in special_parameters(loaded).items():
        assert torch.equal(parameter, saved_special[name][0]), f"{name} re-initialised instead of loaded"


# ----------------------------------------------------------------------------------------------------------------------
# 17. extra_norm_period
# ----------------------------------------------------------------------------------------------------------------------


def test_extra_norm_period_adds_a_main_branch_norm_every_period_blocks() -> None:
    model = make_model(depths=(6,), num_heads=(2,), extra_norm_period=3)
    blocks = model.swinv2.encoder.stages[0].blocks
    assert [index for index, block in enumerate(blocks) if block.main_branch_norm is not None] == [2, 5]
    calls = []
    for index in (2, 5):
        blocks[index].main_branch_norm.register_forward_hook(lambda module, args, output: calls.append(module))
    with torch.no_grad():
        logits = model(images(2, 32, 32)).logits
    assert len(calls) == 2
    assert torch.isfinite(logits).all()


# ----------------------------------------------------------------------------------------------------------------------
# 18. Eager and SDPA kernels
# ----------------------------------------------------------------------------------------------------------------------


def test_eager_and_sdpa_agree(tmp_path) -> None:
    make_model().save_pretrained(tmp_path)
    pixel_values = images(2, 40, 40)
    logits = {}
    for implementation in ("eager", "sdpa"):
        model = SwinV2ForImageClassification.from_pretrained(tmp_path, attn_implementation=implementation).eval()
        assert model.config._attn_implementation == implementation
        with torch.no_grad():
            logits[implementation] = model(pixel_values).logits
    torch.testing.assert_close(logits["sdpa"], logits["eager"], rtol=0, atol=1e-5)
