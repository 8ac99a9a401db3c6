"""Eager and SDPA attention give the same outputs and gradients; attention probabilities; the default kernel."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from swinv2_hf import SwinV2ForImageClassification

from conftest import randomize_weights, tiny_config

# (rtol, atol). float64 shows that both kernels compute the same function; in float32 their different summation orders
# are amplified by sharp attention (logit scales up to 100), hence a relative term as well.
TOLERANCE = {torch.float32: (1e-5, 1e-5), torch.float64: (0.0, 1e-10)}
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


def assert_outputs_close(eager: Any, sdpa: Any, rtol: float, atol: float) -> None:
    """Logits and every hidden state (token and map layouts) agree."""
    torch.testing.assert_close(sdpa.logits, eager.logits, rtol=rtol, atol=atol)
    pairs = [
        *zip(eager.hidden_states, sdpa.hidden_states),
        *zip(eager.reshaped_hidden_states, sdpa.reshaped_hidden_states),
    ]
    assert len(pairs) == 2 * 4  # the embeddings and three stages, as tokens and as maps
    for index, (from_eager, from_sdpa) in enumerate(pairs):
        torch.testing.assert_close(from_sdpa, from_eager, rtol=rtol, atol=atol, msg=lambda text: f"{index}: {text}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_sdpa_matches_eager(checkpoint: Path, scenario: str, dtype: torch.dtype) -> None:
    overrides = SCENARIOS[scenario][0]
    inputs = make_inputs(scenario, dtype)
    with torch.no_grad():
        eager, eager_calls = run(load(checkpoint, "eager", dtype, **overrides), inputs)
        sdpa, sdpa_calls = run(load(checkpoint, "sdpa", dtype, **overrides), inputs)
    assert eager_calls == 0
    # One call per block, or per chunk of windows: the 16x16 map of stage 1 has 64 windows, chunks of 2 give 32.
    assert sdpa_calls == (32 + 2 * 8 + 2 if overrides else 4)
    assert_outputs_close(eager, sdpa, *TOLERANCE[dtype])


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_sdpa_gradients_match_eager(checkpoint: Path, scenario: str) -> None:
    """Training mode (all dropouts are zero in the tiny config): the same loss and parameter gradients."""
    overrides = SCENARIOS[scenario][0]
    inputs = make_inputs(scenario)
    labels = torch.tensor([1, 3])
    gradients, calls = {}, {}
    for implementation in ("eager", "sdpa"):
        model = load(checkpoint, implementation, **overrides).train()
        output, calls[implementation] = run(model, {**inputs, "labels": labels})
        output.loss.backward()
        gradients[implementation] = {name: parameter.grad for name, parameter in model.named_parameters()}
    assert calls["eager"] == 0 and calls["sdpa"] > 0
    assert gradients["eager"].keys() == gradients["sdpa"].keys()
    for name, gradient in gradients["eager"].items():
        assert gradient is not None and gradient.abs().sum() > 0, name
        torch.testing.assert_close(
            gradients["sdpa"][name], gradient, rtol=1e-5, atol=1e-5, msg=lambda text: f"{name}: {text}"
        )


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
