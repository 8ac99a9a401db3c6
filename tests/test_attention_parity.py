"""Eager and SDPA attention give the same outputs and gradients; attention probabilities; the default kernel."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_within_bound, randomize_weights, tiny_config

from swinv2_hf import SwinV2ForImageClassification

# float64 shows that both kernels compute the same function. In float32 their different summation orders are
# amplified by sharp attention (logit scales up to 100), so SDPA is held to float64 within the bound that the eager
# kernel's own float32 error sets (conftest.error_bound), which holds on any CPU and thread count.
FLOAT64_ATOL = 1e-10
# name -> (config overrides, input size, whether the second image only fills part of a canvas with a pixel_mask)
SCENARIOS: dict[str, tuple[dict[str, Any], int, bool]] = {
    "tiny": ({}, 32, False),
    "padding": ({}, 36, False),  # maps 18/9/5: stages 2 and 3 pad to the window
    "pixel_mask": ({}, 32, True),
    "chunked": ({"attention_chunk_size": 2}, 32, False),
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomised tiny classifier saved to disk."""
    directory = tmp_path_factory.mktemp("classifier")
    randomize_weights(SwinV2ForImageClassification(tiny_config()), seed=11).save_pretrained(directory)
    return directory


def load(
    directory: Path, implementation: str, dtype: torch.dtype = torch.float32, **overrides: Any
) -> SwinV2ForImageClassification:
    """The saved classifier with the given attention kernel, in eval mode."""
    model = SwinV2ForImageClassification.from_pretrained(directory, attn_implementation=implementation, **overrides)
    assert model.config._attn_implementation == implementation
    return model.to(dtype).eval()


def make_inputs(scenario: str, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Seeded pixel values (and pixel_mask) for a scenario."""
    _, size, masked = SCENARIOS[scenario]
    pixel_values = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    inputs = {"pixel_values": pixel_values.to(dtype)}
    if masked:
        pixel_mask = torch.ones(2, size, size, dtype=torch.long)
        pixel_mask[1, 20:, :] = 0
        pixel_mask[1, :, 26:] = 0
        inputs["pixel_values"][1] *= pixel_mask[1]
        inputs["pixel_mask"] = pixel_mask
    return inputs


def run(model: SwinV2ForImageClassification, inputs: dict[str, torch.Tensor], **kwargs: Any) -> tuple[Any, int]:
    """The model's output on `inputs` and how many times it called `F.scaled_dot_product_attention`."""
    with mock.patch.object(F, "scaled_dot_product_attention", wraps=F.scaled_dot_product_attention) as sdpa:
        output = model(**inputs, output_hidden_states=True, **kwargs)
    return output, sdpa.call_count


def output_tensors(output: Any) -> list[torch.Tensor]:
    """Logits and every hidden state, in token and map layouts."""
    tensors = [output.logits, *output.hidden_states, *output.reshaped_hidden_states]
    assert len(tensors) == 1 + 2 * 4  # the embeddings and three stages, as tokens and as maps
    return tensors


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_sdpa_matches_eager(checkpoint: Path, scenario: str, dtype: torch.dtype) -> None:
    overrides = SCENARIOS[scenario][0]
    with torch.no_grad():
        eager = {
            precision: output_tensors(
                run(load(checkpoint, "eager", precision, **overrides), make_inputs(scenario, precision))[0]
            )
            for precision in (torch.float32, torch.float64)
        }
        _, eager_calls = run(load(checkpoint, "eager", dtype, **overrides), make_inputs(scenario, dtype))
        sdpa, sdpa_calls = run(load(checkpoint, "sdpa", dtype, **overrides), make_inputs(scenario, dtype))
    assert eager_calls == 0
    # One call per block, or per chunk of windows: the 16x16 map of stage 1 has 64 windows, chunks of 2 give 32.
    assert sdpa_calls == (32 + 2 * 8 + 2 if overrides else 4)
    for index, (actual, exact) in enumerate(zip(output_tensors(sdpa), eager[torch.float64])):
        if dtype == torch.float64:
            torch.testing.assert_close(
                actual, exact, rtol=0, atol=FLOAT64_ATOL, msg=lambda text, index=index: f"{index}: {text}"
            )
        else:
            assert_within_bound(actual, eager[torch.float32][index], exact, name=str(index))


def loss_gradients(
    checkpoint: Path, scenario: str, implementation: str, dtype: torch.dtype, train_position_bias: bool = True
) -> tuple[dict, int]:
    """Parameter gradients of the loss in training mode (all dropouts are zero in the tiny config) and the number of
    SDPA calls."""
    model = load(checkpoint, implementation, dtype, **SCENARIOS[scenario][0]).train()
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(train_position_bias or "continuous_position_bias_mlp" not in name)
    output, calls = run(model, {**make_inputs(scenario, dtype), "labels": torch.tensor([1, 3])})
    output.loss.backward()
    return {name: parameter.grad for name, parameter in model.named_parameters() if parameter.requires_grad}, calls


@pytest.mark.parametrize("train_position_bias", [False, True], ids=["frozen_position_bias", "trained_position_bias"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_sdpa_gradients_match_eager(checkpoint: Path, scenario: str, train_position_bias: bool) -> None:
    """The same parameter gradients: float32 SDPA against float64 eager, within the bound of float32 eager. A
    trainable position bias is a mask with a gradient, which SDPA's fused CPU kernel does not give: the model then
    takes the explicit path (faster than SDPA's own fallback)."""
    eager = {
        dtype: loss_gradients(checkpoint, scenario, "eager", dtype, train_position_bias)[0]
        for dtype in (torch.float32, torch.float64)
    }
    sdpa, calls = loss_gradients(checkpoint, scenario, "sdpa", torch.float32, train_position_bias)
    assert (calls == 0) == train_position_bias
    assert eager[torch.float64].keys() == sdpa.keys()
    for name, exact in eager[torch.float64].items():
        assert exact is not None and exact.abs().sum() > 0, name
        assert_within_bound(sdpa[name], eager[torch.float32][name], exact, name=name)


def test_output_attentions_with_sdpa_falls_back_to_eager(checkpoint: Path) -> None:
    inputs = make_inputs("pixel_mask")
    with torch.no_grad():
        sdpa_model = load(checkpoint, "sdpa")
        with_attentions, calls = run(sdpa_model, inputs, output_attentions=True)
        without_attentions, _ = run(sdpa_model, inputs)
        eager, _ = run(load(checkpoint, "eager"), inputs, output_attentions=True)
    assert calls == 0
    assert sdpa_model.config._attn_implementation == "sdpa"
    # Blocks: stage 1 (16x16, 64 windows), two in stage 2 (8x8, 16 windows), stage 3 (4x4, 4 windows); window 2.
    expected_shapes = [(2 * 64, 2, 4, 4), (2 * 16, 2, 4, 4), (2 * 16, 2, 4, 4), (2 * 4, 4, 4, 4)]
    assert [tuple(a.shape) for a in with_attentions.attentions] == expected_shapes
    for probabilities, from_eager in zip(with_attentions.attentions, eager.attentions):
        assert (probabilities >= 0).all()
        torch.testing.assert_close(probabilities.sum(dim=-1), torch.ones(probabilities.shape[:-1]), rtol=0, atol=1e-5)
        torch.testing.assert_close(probabilities, from_eager, rtol=0, atol=1e-6)
    torch.testing.assert_close(with_attentions.logits, without_attentions.logits, rtol=0, atol=1e-5)


def test_set_attn_implementation_switches_kernel(checkpoint: Path) -> None:
    """transformers' public switch works: the attention layers read the config at every call."""
    inputs = make_inputs("tiny")
    model = load(checkpoint, "eager")
    model.set_attn_implementation("sdpa")
    assert model.config._attn_implementation == "sdpa"
    with torch.no_grad():
        _, calls = run(model, inputs)
    assert calls == 4


def test_default_implementation_is_sdpa(checkpoint: Path) -> None:
    """SDPA measured faster than the explicit path on CPU too (benchmarks/NOTES.md), so no override of transformers'
    default; a model built or loaded without `attn_implementation` uses it."""
    assert SwinV2ForImageClassification(tiny_config()).config._attn_implementation == "sdpa"
    assert SwinV2ForImageClassification.from_pretrained(checkpoint).config._attn_implementation == "sdpa"
