"""The linear layers' kernel choice (swinv2_hf/kernels.py): each kernel computes what the standard op computes, with
the same gradients, on any CPU; half precision runs everywhere; traced, exported and quantized models hold only
standard ops; a torch whose private oneDNN op is unusable falls back with one log line."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_within_bound, randomize_weights, tiny_config
from torch import nn

from swinv2_hf import SwinV2Config, SwinV2ForImageClassification
from swinv2_hf.kernels import cosine_query_key, linear, linear_kernel, onednn_computes

IMPLEMENTATIONS = ["auto", "onednn", "torch"]
# Half precision: a floor of two units of bfloat16 rounding (2**-8) on outputs of order one.
HALF_FLOOR = 2 * 2.0**-8


def layer_and_input(dtype: torch.dtype = torch.float32, requires_grad: bool = False) -> tuple[nn.Linear, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    layer = nn.Linear(24, 40)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(40, 24, generator=generator) / 5)
        layer.bias.copy_(torch.randn(40, generator=generator))
    hidden = torch.randn(2, 5, 7, 24, generator=generator)
    return layer.to(dtype).requires_grad_(requires_grad), hidden.to(dtype).requires_grad_(requires_grad)


def forward_and_gradients(
    dtype: torch.dtype, implementation: str, gelu: bool, extra_bias: bool
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    layer, hidden = layer_and_input(dtype, requires_grad=True)
    bias = torch.linspace(-1, 1, 40, dtype=dtype, requires_grad=True) if extra_bias else None
    output = linear(layer, hidden, implementation, extra_bias=bias, gelu=gelu)
    upstream = torch.randn(output.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (output.double() * upstream).sum().backward()
    leaves = [hidden, layer.weight, layer.bias] + ([bias] if extra_bias else [])
    return output.detach(), [leaf.grad for leaf in leaves]


def test_float32_takes_onednn_only_with_avx512_or_when_forced() -> None:
    """oneDNN measured faster than MKL on every SwinV2 product with AVX-512 and slower with AVX2 only (kernels.py);
    forced, it runs on any x86 CPU (CI's)."""
    assert onednn_computes(torch.float32)
    layer, hidden = nn.Linear(384, 1536), torch.zeros(4096, 384)
    avx512 = torch.backends.cpu.get_cpu_capability() == "AVX512"
    assert linear_kernel(layer, hidden) == ("onednn" if avx512 else "torch")
    assert linear_kernel(layer, hidden, "onednn") == "onednn"
    assert linear_kernel(layer, hidden, "torch") == "torch"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_half_precision_takes_onednn_only_where_the_cpu_computes_it(dtype: torch.dtype) -> None:
    native = {
        torch.bfloat16: torch.ops.mkldnn._is_mkldnn_bf16_supported,
        torch.float16: torch.ops.mkldnn._is_mkldnn_fp16_supported,
    }[dtype]()
    layer, hidden = layer_and_input(dtype)
    assert linear_kernel(layer, hidden) == ("onednn" if native else "float32")
    assert linear_kernel(layer, hidden, "onednn") == ("onednn" if native else "float32")
    assert linear_kernel(layer, hidden, "torch") == "torch"


@pytest.mark.parametrize("extra_bias", [False, True], ids=["bias", "extra_bias"])
@pytest.mark.parametrize("gelu", [False, True], ids=["linear", "linear_gelu"])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_each_kernel_matches_float64_with_its_gradients(implementation: str, gelu: bool, extra_bias: bool) -> None:
    """Outputs and every gradient within the bound that the standard op's own float32 error sets."""
    expected, expected_grads = forward_and_gradients(torch.float64, "torch", gelu, extra_bias)
    standard, standard_grads = forward_and_gradients(torch.float32, "torch", gelu, extra_bias)
    actual, actual_grads = forward_and_gradients(torch.float32, implementation, gelu, extra_bias)
    assert_within_bound(actual, standard, expected, name="output")
    for index, (mine, reference, exact) in enumerate(zip(actual_grads, standard_grads, expected_grads)):
        assert_within_bound(mine, reference, exact, name=f"gradient {index}")


def test_fused_gelu_without_gradient_matches_f_gelu() -> None:
    layer, hidden = layer_and_input()
    with torch.no_grad():
        torch.testing.assert_close(linear(layer, hidden, gelu=True), F.gelu(layer(hidden)), rtol=0, atol=1e-5)


def test_custom_op_registration() -> None:
    """Fake (meta) implementation, autograd and schema agree with the real kernel (torch.library.opcheck)."""
    layer, hidden = layer_and_input(requires_grad=True)
    torch.library.opcheck(torch.ops.swinv2_hf.onednn_linear.default, (hidden, layer.weight, layer.bias, False))


def test_float64_takes_f_linear_exactly() -> None:
    layer, hidden = layer_and_input(torch.float64)
    assert linear_kernel(layer, hidden) == "torch"
    assert torch.equal(linear(layer, hidden, gelu=True), F.gelu(layer(hidden)))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_autocast_output_keeps_the_autocast_dtype(dtype: torch.dtype) -> None:
    layer, hidden = layer_and_input()
    with torch.autocast("cpu", dtype=dtype):
        output = linear(layer, hidden)
    assert output.dtype == dtype
    assert_within_bound(output, layer.to(dtype)(hidden.to(dtype)), layer.double()(hidden.double()), HALF_FLOOR)


def test_a_quantized_layer_runs_its_own_forward() -> None:
    """Dynamic int8 quantization swaps the model's nn.Linear modules; `linear` then calls the swapped module (an
    extra bias is added after it)."""
    layer, hidden = layer_and_input()
    quantized = torch.ao.quantization.quantize_dynamic(nn.Sequential(layer), {nn.Linear}, torch.qint8)[0]
    assert type(quantized) is not nn.Linear
    assert linear_kernel(quantized, hidden) == "torch"
    bias = torch.ones(40)
    torch.testing.assert_close(linear(quantized, hidden, extra_bias=bias), quantized(hidden) + bias)


def tiny_model(**overrides) -> SwinV2ForImageClassification:
    return randomize_weights(SwinV2ForImageClassification(tiny_config(**overrides)), seed=1).eval()


def test_traced_and_exported_models_hold_only_standard_ops(pixel_values: torch.Tensor) -> None:
    model = tiny_model()
    traced = torch.jit.trace(model, (pixel_values,), strict=False)
    assert "swinv2_hf::" not in str(traced.inlined_graph)
    exported = torch.export.export(model, (pixel_values,), strict=False)
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert not any("swinv2_hf" in target for target in targets) and "aten.linear.default" in targets
    with torch.no_grad():
        expected = model(pixel_values).logits
        torch.testing.assert_close(exported.module()(pixel_values).logits, expected, rtol=0, atol=1e-5)


# name -> (weight dtype, autocast dtype or None)
PRECISIONS = {
    "float32": (torch.float32, None),
    "bfloat16": (torch.bfloat16, None),
    "float16": (torch.float16, None),
    "bfloat16_autocast": (torch.float32, torch.bfloat16),
}


def model_outputs(
    model: SwinV2ForImageClassification, precision: str, implementation: str, pixel_values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and all parameter gradients (flattened, float64) of one training step in `precision`."""
    dtype, autocast = PRECISIONS.get(precision, (torch.float64, None))
    model = copy.deepcopy(model).to(dtype).train()
    model.config.linear_implementation = implementation
    with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        output = model(pixel_values.to(dtype), labels=torch.tensor([1, 3]))
    output.loss.backward()
    gradients = torch.cat([parameter.grad.double().flatten() for parameter in model.parameters()])
    return output.logits.detach().double(), gradients


@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_model_step_matches_float64_with_each_kernel(
    implementation: str, precision: str, pixel_values: torch.Tensor
) -> None:
    """A forward and backward of the whole model with float32, bfloat16 or float16 weights or under bfloat16
    autocast, with the kernel chosen automatically, forced to oneDNN and forced off: logits and gradients against
    float64, within the bound that standard PyTorch in the same precision sets."""
    model = tiny_model()
    expected_logits, expected_gradients = model_outputs(model, "float64", "torch", pixel_values)
    standard_logits, standard_gradients = model_outputs(model, precision, "torch", pixel_values)
    logits, gradients = model_outputs(model, precision, implementation, pixel_values)
    floor = 1e-5 if precision == "float32" else HALF_FLOOR
    assert_within_bound(logits, standard_logits, expected_logits, floor, name="logits")
    assert_within_bound(gradients, standard_gradients, expected_gradients, floor, name="gradients")


def test_the_switch_is_a_validated_config_field(pixel_values: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="linear_implementation must be one of"):
        SwinV2Config(linear_implementation="mkl")
    model = tiny_model(linear_implementation="torch")
    with torch.no_grad(), torch.autograd.profiler.profile() as profile:
        model(pixel_values)
    assert not any("onednn_linear" in event.name for event in profile.function_events)


UNUSABLE_PRIVATE_OP = r"""
import logging
import torch

def changed_signature(input, weight):
    raise TypeError("_linear_pointwise() takes 2 positional arguments")

torch.ops.mkldnn._linear_pointwise = changed_signature
from transformers.utils import logging as hf_logging
hf_logging.set_verbosity_warning()
from swinv2_hf import SwinV2Config, SwinV2ForImageClassification

model = SwinV2ForImageClassification(SwinV2Config(image_size=32, patch_size=2, embed_dim=16, depths=(1, 1),
                                                  num_heads=(2, 2), window_size=2, num_labels=3)).eval()
with torch.no_grad():
    for _ in range(2):
        assert torch.isfinite(model(torch.randn(1, 3, 32, 32)).logits).all()
print("ok")
"""


def test_an_unusable_private_op_falls_back_with_one_log_line() -> None:
    done = subprocess.run([sys.executable, "-c", UNUSABLE_PRIVATE_OP], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
    assert done.stderr.count("oneDNN's linear op is unusable") == 1, done.stderr[-2000:]


def test_cosine_query_key_gradient_is_that_of_f_normalize() -> None:
    """The backward from the output and norms against autograd through `F.normalize` (the queries times the logit
    scale), in float64, a zero vector (clamped norm) included."""
    generator = torch.Generator().manual_seed(4)
    query_key = torch.randn(2, 3, 5, 2, 4, 6, generator=generator, dtype=torch.float64)
    query_key[0, 1, 2, 1, 3] = 0.0
    logit_scale = torch.rand(4, generator=generator, dtype=torch.float64) * 50
    upstream = torch.randn(2, 2, 3, 4, 5, 6, generator=generator, dtype=torch.float64)
    leaves = [query_key.clone().requires_grad_(), logit_scale.clone().requires_grad_()]
    (cosine_query_key(*leaves, torch.float64) * upstream).sum().backward()
    reference = [query_key.clone().requires_grad_(), logit_scale.clone().requires_grad_()]
    query, key = F.normalize(reference[0].permute(3, 0, 1, 4, 2, 5), dim=-1, eps=1e-12).unbind(0)
    (torch.stack((query * reference[1].view(4, 1, 1), key)) * upstream).sum().backward()
    for ours, theirs in zip(leaves, reference):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=0, atol=1e-12)
    small = [query_key[1:, :2, :3].clone().requires_grad_(), logit_scale.clone().requires_grad_()]  # no zero vector
    assert torch.autograd.gradcheck(lambda q, s: cosine_query_key(q, s, torch.float64), small)


def test_compiled_graph_takes_onednn_only_with_avx512() -> None:
    """A compiled graph holds the kernel eager takes: oneDNN, as one extern kernel, with AVX-512; inductor's own GEMMs
    with AVX2 only."""
    layer, hidden = nn.Linear(384, 1536), torch.zeros(4096, 384)
    graphs = []

    def record(graph_module: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(str(graph_module.graph))
        return graph_module.forward

    with torch.no_grad():
        torch.compile(lambda tensor: linear(layer, tensor), backend=record, fullgraph=True)(hidden)
    avx512 = torch.backends.cpu.get_cpu_capability() == "AVX512"
    assert ("onednn_linear" in graphs[0]) == avx512, graphs[0]
