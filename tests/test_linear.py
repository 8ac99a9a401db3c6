"""The linear layers' oneDNN path computes what `F.linear` computes, with the same gradients, and steps aside where it
does not apply (float64, autocast, other devices, the switch off)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import randomize_weights, tiny_config

import swinv2_hf.modeling_swinv2_hf as modeling
from swinv2_hf import SwinV2ForImageClassification

FLOAT32_ATOL = 1e-5


def operands(dtype: torch.dtype = torch.float32, requires_grad: bool = False) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    tensors = (torch.randn(2, 5, 7, 24, generator=generator), torch.randn(40, 24, generator=generator) / 5,
               torch.randn(40, generator=generator))  # fmt: skip
    return tuple(tensor.to(dtype).requires_grad_(requires_grad) for tensor in tensors)


def test_onednn_is_used_on_this_machine() -> None:
    """CI runs on x86 CPUs with oneDNN; the speed of the models depends on it."""
    assert modeling.USE_ONEDNN_LINEAR


@pytest.mark.parametrize("gelu", [False, True], ids=["linear", "linear_gelu"])
def test_forward_matches_f_linear(gelu: bool) -> None:
    hidden, weight, bias = operands()
    expected = F.linear(hidden, weight, bias)
    expected = F.gelu(expected) if gelu else expected
    torch.testing.assert_close(modeling.linear(hidden, weight, bias, gelu=gelu), expected, rtol=0, atol=FLOAT32_ATOL)
    torch.testing.assert_close(modeling.linear(hidden, weight), F.linear(hidden, weight), rtol=0, atol=FLOAT32_ATOL)


@pytest.mark.parametrize("gelu", [False, True], ids=["linear", "linear_gelu"])
def test_gradients_match_f_linear(gelu: bool) -> None:
    ours, theirs = operands(requires_grad=True), operands(requires_grad=True)
    upstream = torch.randn(2, 5, 7, 40, generator=torch.Generator().manual_seed(1))
    (modeling.linear(*ours, gelu=gelu) * upstream).sum().backward()
    expected = F.linear(*theirs)
    ((F.gelu(expected) if gelu else expected) * upstream).sum().backward()
    for mine, reference in zip(ours, theirs):
        torch.testing.assert_close(mine.grad, reference.grad, rtol=1e-5, atol=1e-5)


def test_custom_op_registration() -> None:
    """Fake (meta) implementation, autograd and schema agree with the real kernel (torch.library.opcheck)."""
    hidden, weight, bias = operands(requires_grad=True)
    torch.library.opcheck(torch.ops.swinv2_hf.onednn_linear.default, (hidden, weight, bias, False))


def test_float64_takes_f_linear_exactly() -> None:
    hidden, weight, bias = operands(torch.float64)
    assert torch.equal(modeling.linear(hidden, weight, bias, gelu=True), F.gelu(F.linear(hidden, weight, bias)))


def test_autocast_keeps_its_precision() -> None:
    hidden, weight, bias = operands()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert modeling.linear(hidden, weight, bias).dtype == torch.bfloat16


def test_model_with_and_without_onednn(monkeypatch: pytest.MonkeyPatch, pixel_values: torch.Tensor) -> None:
    """The switch changes the kernel, not the result."""
    model = randomize_weights(SwinV2ForImageClassification(tiny_config())).eval()
    with torch.no_grad():
        fast = model(pixel_values).logits
        monkeypatch.setattr(modeling, "USE_ONEDNN_LINEAR", False)
        plain = model(pixel_values).logits
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-5)
