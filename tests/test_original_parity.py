"""Parity with the original Microsoft implementation and timm, through the reference fixtures.

The fixtures (tests/fixtures/README.md) hold the outputs of the unmodified original code (cases A, B, C: classifiers;
E: SimMIM) and of timm (case D: case A's network in timm's layout) on random weights. Each case's checkpoint is read,
converted and loaded strictly into our model, which must then reproduce every intermediate tensor of the float64
references: within 1e-8 in float64, and in float32 within a small multiple of the error the original itself makes in
float32 on that tensor (`original_fp32_error.json`; conftest.error_bound).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pytest
import torch
from conftest import FIXTURES, error_bound, load_case

import swinv2_hf.modeling_swinv2_hf as modeling
from swinv2_hf import SwinV2ForImageClassification, SwinV2ForMaskedImageModeling
from swinv2_hf.conversion import convert_state_dict
from swinv2_hf.sources import config_from_original, read_checkpoint

FLOAT64_ATOL = 1e-8
# Per case and tensor, max |float32 - float64| of the original's (or timm's) own outputs, measured once on the machine
# that made the fixtures: one sample of float32 noise. On an AMD EPYC Zen 3 (AVX2) case A's stages come out 3.3-4.5x
# that error from the float64 reference, with either linear kernel, either attention kernel, and also with the
# original's order of operations in the attention; B, C and E stay within 2x. Hence 8x, not the README's "say 4x".
ORIGINAL_FLOAT32_ERROR = json.loads((FIXTURES / "original_fp32_error.json").read_text())
ORIGINAL_ERROR_MULTIPLE = 8.0
# The inputs stored in the io files next to the reference outputs.
NOT_COMPARED = ("input", "mask")


@dataclass(frozen=True)
class Checkpoint:
    """A fixture checkpoint: its case (the io and config files) and the layout it is written in."""

    case: str
    file: str
    source: str
    # The clamp bound of the code that wrote the references where it is not the original's float32 log(100): timm
    # clamps at `math.log(1. / 0.01)`, so its float64 references differ from the original's by up to 3e-6.
    logit_scale_max: float | None = None

    def __str__(self) -> str:
        return self.file


CLASSIFIER_CHECKPOINTS = [
    Checkpoint("A", "case_A_ms.pth", "original"),
    Checkpoint("B", "case_B_ms.pth", "original"),
    Checkpoint("C", "case_C_ms.pth", "original"),
    Checkpoint("D", "case_D_timm.pth", "timm", logit_scale_max=math.log(1.0 / 0.01)),
    Checkpoint("D", "case_D_timm.safetensors", "timm", logit_scale_max=math.log(1.0 / 0.01)),
]
SIMMIM = Checkpoint("E", "case_E_ms.pth", "original")
DTYPES = [pytest.param(torch.float32, id="float32"), pytest.param(torch.float64, id="float64")]


def tolerance(case: str, dtype: torch.dtype) -> Callable[[str], float]:
    """Absolute tolerance per reference name: 1e-8 in float64; in float32 the bound that the original's own float32
    error on that tensor sets."""
    if dtype == torch.float64:
        return lambda name: FLOAT64_ATOL
    errors = ORIGINAL_FLOAT32_ERROR[f"case_{case}"]
    if case == "D":  # timm's names
        errors = {TIMM_NAMES[name]: error for name, error in errors.items()}
    return lambda name: error_bound(errors[name], multiple=ORIGINAL_ERROR_MULTIPLE)


def assert_tensors_close(
    actual: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], atol: Callable[[str], float]
) -> None:
    """Every expected tensor against ours of the same name (no name left unchecked), naming the one that is off."""
    assert sorted(actual) == sorted(expected)
    for name, reference in expected.items():
        torch.testing.assert_close(
            actual[name].to(reference.dtype),
            reference,
            rtol=0,
            atol=atol(name),
            msg=lambda message, name=name: f"{name}: {message}",
        )


def references(case: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """A case's float64 reference tensors, with the input in `dtype` (the float32 file has the same input)."""
    tensors = torch.load(FIXTURES / f"case_{case}_io_f64.pt", weights_only=True)
    return {name: tensor.to(dtype) if name == "input" else tensor for name, tensor in tensors.items()}


def constructor_kwargs(case: str) -> dict:
    """The original (or timm) constructor arguments of a case; timm's are its overrides on top of its defaults."""
    config = load_case(case)
    if "constructor_kwargs" in config:
        return config["constructor_kwargs"]
    return {**config["constructor"]["defaults_in_effect"], **config["constructor"]["overrides"]}


def load_weights(model: torch.nn.Module, checkpoint: Checkpoint, dtype: torch.dtype) -> torch.nn.Module:
    """Read, convert and load a fixture checkpoint strictly (every key mapped, nothing left over), in eval mode."""
    state_dict = convert_state_dict(read_checkpoint(FIXTURES / checkpoint.file), checkpoint.source)
    model.load_state_dict(state_dict, strict=True)
    return model.to(dtype).eval()


def classifier(checkpoint: Checkpoint, dtype: torch.dtype) -> SwinV2ForImageClassification:
    """Our classifier with a fixture checkpoint's weights, configured from the case's constructor arguments."""
    return load_weights(
        SwinV2ForImageClassification(config_from_original(constructor_kwargs(checkpoint.case))), checkpoint, dtype
    )


def stage_tensors(
    model: torch.nn.Module,
    pixels: torch.Tensor,
    hidden_states: tuple[torch.Tensor, ...],
    bool_masked_pos: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Each stage's output in the original's names and (B, L, C) layout: `hidden_states[i+1]` after patch merging,
    the encoder's `stage_maps[i+1]` (the backbone's maps) before it."""
    embeddings, grid, token_mask = model.swinv2.embeddings(pixels, bool_masked_pos=bool_masked_pos)
    stage_maps = model.swinv2.encoder(embeddings, grid, token_mask, output_stage_maps=True).stage_maps
    tensors = {}
    for stage, (after_merging, before_merging) in enumerate(zip(hidden_states[1:], stage_maps[1:])):
        tensors[f"stage{stage}_blocks_out"] = before_merging.flatten(2).transpose(1, 2)
        tensors[f"stage{stage}_layer_out"] = after_merging
    return tensors


def classifier_tensors(model: SwinV2ForImageClassification, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Our classifier's tensors under the original's names (README "Conventions")."""
    outputs = model(pixels, output_hidden_states=True)
    base = model.swinv2(pixels)
    return {
        "embeddings": outputs.hidden_states[0],
        **stage_tensors(model, pixels, outputs.hidden_states),
        "final_norm": base.last_hidden_state,
        "pooled": base.pooler_output,
        "logits": outputs.logits,
    }


# timm's reference names -> the original's; its `stage{i}_out` is the original's `stage{i}_blocks_out` (timm merges
# patches at the start of the next stage).
TIMM_NAMES = {
    "embeddings": "embeddings",
    "forward_features": "final_norm",
    "pre_logits": "pooled",
    "logits": "logits",
    **{f"stage{stage}_out": f"stage{stage}_blocks_out" for stage in range(4)},
}


def timm_as_original(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's references under the original's names, its NHWC maps flattened to (B, L, C)."""
    return {
        TIMM_NAMES[name]: tensor.flatten(1, 2) if tensor.ndim == 4 else tensor
        for name, tensor in tensors.items()
        if name not in NOT_COMPARED
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("checkpoint", CLASSIFIER_CHECKPOINTS, ids=str)
def test_classifier_matches_reference(
    checkpoint: Checkpoint, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Embeddings, every stage before and after merging, final norm, pooled features and logits of A-D."""
    if checkpoint.logit_scale_max is not None:
        monkeypatch.setattr(modeling, "LOGIT_SCALE_MAX", checkpoint.logit_scale_max)
    model = classifier(checkpoint, dtype)
    expected = references(checkpoint.case, dtype)
    with torch.no_grad():
        actual = classifier_tensors(model, expected["input"])
    if checkpoint.source == "timm":
        expected = timm_as_original(expected)
        actual = {name: actual[name] for name in expected}  # timm has no "after merging" tensors
    else:
        expected = {name: tensor for name, tensor in expected.items() if name not in NOT_COMPARED}
    assert_tensors_close(actual, expected, tolerance(checkpoint.case, dtype))


def simmim(mim_norm_target_patch_size: int, dtype: torch.dtype) -> SwinV2ForMaskedImageModeling:
    """Case E's SimMIM with or without the per-47x47-patch target normalisation of the SwinV2 SimMIM recipe."""
    config = config_from_original(
        constructor_kwargs(SIMMIM.case), encoder_stride=32, mim_norm_target_patch_size=mim_norm_target_patch_size
    )
    return load_weights(SwinV2ForMaskedImageModeling(config), SIMMIM, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_simmim_matches_reference(dtype: torch.dtype) -> None:
    """Case E: embeddings before and after masking, stages, final norm, reconstruction and both losses."""
    model, model_without_target_norm = simmim(47, dtype), simmim(0, dtype)
    expected = references(SIMMIM.case, dtype)
    pixels, mask = expected["input"], expected["mask"].bool()
    with torch.no_grad():
        outputs = model(pixels, bool_masked_pos=mask, output_hidden_states=True)
        final_norm = model.swinv2(pixels, bool_masked_pos=mask).last_hidden_state
        actual = {
            "embeddings": model.swinv2.embeddings(pixels)[0],
            "embeddings_masked": outputs.hidden_states[0],
            **stage_tensors(model, pixels, outputs.hidden_states, bool_masked_pos=mask),
            "final_norm": final_norm,
            "encoder_out": final_norm.transpose(1, 2).reshape(outputs.reshaped_hidden_states[-1].shape),
            "x_rec": outputs.reconstruction,
            "loss": outputs.loss,
            "loss_no_norm_target": model_without_target_norm(pixels, bool_masked_pos=mask).loss,
        }
    expected = {name: tensor for name, tensor in expected.items() if name not in NOT_COMPARED}
    assert_tensors_close(actual, expected, tolerance(SIMMIM.case, dtype))


def test_timm_checkpoints_convert_to_case_a() -> None:
    """Case D is case A's network saved by timm: both of its files must convert to exactly A's weights."""
    case_a = convert_state_dict(read_checkpoint(FIXTURES / "case_A_ms.pth"), "original")
    for file in ("case_D_timm.pth", "case_D_timm.safetensors"):
        case_d = convert_state_dict(read_checkpoint(FIXTURES / file), "timm")
        assert sorted(case_d) == sorted(case_a), file
        for name, tensor in case_a.items():
            assert torch.equal(case_d[name], tensor), f"{file}: {name}"


def test_logit_scale_max_is_the_float32_log_of_100() -> None:
    """The original clamps at `torch.log(torch.tensor(1 / 0.01))`, a float32 value, not the float64 log(100)."""
    assert torch.log(torch.tensor(1 / 0.01)).item() == modeling.LOGIT_SCALE_MAX
    assert math.log(100) != modeling.LOGIT_SCALE_MAX


def test_float64_parity_needs_the_float32_clamp(monkeypatch: pytest.MonkeyPatch) -> None:
    """Case A has heads above the clamp: with the float64 log(100) its float64 logits leave the 1e-8 band, so the
    float64 parity tests can tell the two bounds apart."""
    monkeypatch.setattr(modeling, "LOGIT_SCALE_MAX", math.log(100))
    checkpoint = CLASSIFIER_CHECKPOINTS[0]
    model = classifier(checkpoint, torch.float64)
    expected = references(checkpoint.case, torch.float64)
    with torch.no_grad():
        logits = model(expected["input"]).logits
    assert (logits - expected["logits"]).abs().max().item() > FLOAT64_ATOL
