"""Shared test helpers: the tiny tester config, reference fixtures and weight randomisation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fake_hub import FakeHub

import swinv2_hf  # noqa: F401  (registers the Auto classes)
from swinv2_hf import SwinV2Config

FIXTURES = Path(__file__).parent / "fixtures"
# A result in float32 (or half precision) is compared with a float64 reference, within a small multiple of the error
# that a reference computation makes in the same precision (tests/fixtures/README.md, "Tolerances"), floored where
# that error is tiny. Bounds made this way hold on any CPU: each machine's kernels set both errors.
ERROR_MULTIPLE = 4.0
FLOAT32_ERROR_FLOOR = 1e-5
# The head of a script for a fresh interpreter that must not import the installed swinv2_hf (remote-code checks).
BLOCK_SWINV2 = '''
import sys


class BlockSwinV2:
    """Meta path finder that makes the installed swinv2_hf unimportable."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] == "swinv2_hf":
            raise ImportError(f"{name} is blocked in this process")
        return None


sys.meta_path.insert(0, BlockSwinV2)
'''


def tiny_config(**overrides) -> SwinV2Config:
    """The tiny tester: image 32, patch 2, embed 16, depths (1, 2, 1), heads (2, 2, 4), window 2."""
    arguments = {
        "image_size": 32,
        "patch_size": 2,
        "embed_dim": 16,
        "depths": (1, 2, 1),
        "num_heads": (2, 2, 4),
        "window_size": 2,
        "num_labels": 5,
        "drop_path_rate": 0.0,
        "encoder_stride": 8,
    }
    return SwinV2Config(**{**arguments, **overrides})


def randomize_weights(model: torch.nn.Module, seed: int = 0, scale: float = 1.0) -> torch.nn.Module:
    """Re-draw every parameter (zero-initialised post-norms and biases included) so that no check passes by
    accident: linears ~ N(0, scale/fan_in), norms ~ 1 + N(0, 0.2), biases ~ N(0, 0.05), logit scales near log(10)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64).to(parameter.dtype)
            if name.endswith("logit_scale"):
                parameter.copy_(2.3 + 0.5 * noise)
            elif parameter.ndim >= 2:
                fan_in = parameter[0].numel()
                parameter.copy_(noise * (scale / fan_in) ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                parameter.copy_(1.0 + 0.2 * noise)
            else:
                parameter.copy_(0.05 * noise)
    return model


def error_bound(reference_error: float, floor: float = FLOAT32_ERROR_FLOOR, multiple: float = ERROR_MULTIPLE) -> float:
    """The largest error allowed to a result whose reference computation errs by `reference_error` (both measured
    against float64)."""
    return max(multiple * reference_error, floor)


def assert_within_bound(
    actual: torch.Tensor,
    reference: torch.Tensor,
    float64: torch.Tensor,
    floor: float = FLOAT32_ERROR_FLOOR,
    name: str = "",
) -> None:
    """`actual` is as close to the float64 result as `reference` (the same in the same precision by another path),
    up to `error_bound`."""
    error = (actual.double() - float64.double()).abs().max().item()
    allowed = error_bound((reference.double() - float64.double()).abs().max().item(), floor)
    assert error <= allowed, f"{name}: {error:.3g} from float64, allowed {allowed:.3g}"


def load_case(case: str) -> dict:
    """The constructor arguments and metadata of a reference case (see tests/fixtures/README.md)."""
    return json.loads((FIXTURES / f"case_{case}_config.json").read_text())


@pytest.fixture
def pixel_values() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[FakeHub]:
    """A Hub-compatible server on loopback for the duration of a test (tests/fake_hub.py)."""
    with FakeHub(tmp_path / "hub") as running:
        yield running


def reset_accelerate() -> None:
    """Forget the Accelerator a script made in this process, so that the next one starts afresh."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
