"""Which kernel computes SwinV2's linear layers, chosen per call from the device, the dtype and the mode.

The model's linear layers are plain `nn.Linear` modules. `linear(layer, x, implementation)` runs one of them with:
- `"onednn"`: oneDNN's GEMM (`torch.ops.mkldnn._linear_pointwise`) through the custom op `swinv2_hf::onednn_linear`,
  which fuses the bias and the exact GELU, has a backward, and stays one kernel under `torch.compile`;
- `"float32"`: for bfloat16/float16 tensors on a CPU that has no native half-precision GEMM: the product in float32,
  rounded back to the input's dtype (more exact than the emulated half-precision GEMM, and 10-30x faster);
- `"torch"`: the layer's own forward (`F.linear`), the standard op.

`config.linear_implementation` switches it: `"auto"` (default) applies the rule below, `"onednn"` takes oneDNN
wherever it can compute the call, `"torch"` never leaves standard PyTorch. The rule, from the measurements in
benchmarks/NOTES.md (SwinV2-T 256 px, batch 8, 2 threads):
- float32 on CPU: oneDNN with AVX-512 (whole model 1.6x faster than with `F.linear` on an AMD EPYC Zen 4). With
  AVX2 only (Zen 3) oneDNN is 1.0-1.5x MKL's speed on products above 1 GFLOP but 0.55-0.9x below 0.1 GFLOP, so there
  it takes the products of at least `AVX2_ONEDNN_MIN_FLOPS` and MKL (`F.linear`) the smaller ones.
- bfloat16/float16 weights on CPU: oneDNN where the CPU computes that dtype natively (AVX512-BF16, AMX, AVX512-FP16:
  `torch.ops.mkldnn._is_mkldnn_bf16_supported()`); elsewhere oneDNN cannot even create the primitive and `F.linear`
  emulates the type at 6-18 GFLOP/s against 100-140 in float32 (Zen 3), so the product runs in float32.
- under autocast: the same half-precision rule on the autocast dtype (native: autocast's own bf16 GEMM; otherwise
  float32 with the output in the autocast dtype, as autocast promises).
- standard ops only while tracing or exporting (TorchScript, `torch.export`, both ONNX exporters, FX), for a layer that
  is not a plain floating-point `nn.Linear` (a quantized one), on other devices and in float64.

This file imports only torch, transformers and the configuration so that it ships as Hub remote code next to the modeling file. Nothing
here fails at import: a private op that is missing or has another signature disables oneDNN with one log line.
"""

from __future__ import annotations

import functools
import platform
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import logging

from .configuration_swinv2_hf import LINEAR_IMPLEMENTATIONS

logger = logging.get_logger(__name__)

Kernel = Literal["onednn", "float32", "torch"]
HALF_DTYPES = (torch.bfloat16, torch.float16)
# "auto" takes oneDNN only on the CPUs it was measured on (benchmarks/NOTES.md): x86-64 (AMD EPYC Zen 3 and Zen 4).
MEASURED_MACHINES = ("x86_64", "amd64")
MACHINE = platform.machine().lower()
# Below this many FLOPs (2*M*K*N) a float32 product runs faster through MKL than through oneDNN without AVX-512:
# 0.55-0.9x at 3-75 MFLOP, 0.9-1.15x around 0.1-1 GFLOP, 1.0-1.5x above (AMD EPYC Zen 3, benchmarks/NOTES.md). With
# AVX-512 oneDNN measured faster at every SwinV2 shape (Zen 4), so it has no threshold.
AVX2_ONEDNN_MIN_FLOPS = 2**28
CPU_CAPABILITY = torch.backends.cpu.get_cpu_capability()


def standard_ops_only() -> bool:
    """Whether the model is being traced or exported, where a graph must hold only standard PyTorch ops so that it
    runs without this package (TorchScript, `torch.export`, the ONNX exporters, FX)."""
    fx_tracing = getattr(torch.fx._symbolic_trace, "is_fx_symbolic_tracing", torch.fx._symbolic_trace.is_fx_tracing)
    return (
        torch.jit.is_scripting()
        or torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
        or torch.compiler.is_exporting()
        or fx_tracing()
    )


def _native_half_support(dtype: torch.dtype) -> bool:
    """Whether oneDNN computes `dtype` natively on this CPU (private checks; absent ones count as no)."""
    check = {torch.bfloat16: "_is_mkldnn_bf16_supported", torch.float16: "_is_mkldnn_fp16_supported"}[dtype]
    try:
        return bool(getattr(torch.ops.mkldnn, check)())
    except (AttributeError, RuntimeError):
        return False


def _onednn_forward(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(input, weight, bias, "gelu" if gelu else "none", [], "none" if gelu else "")


def _onednn_fake(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool) -> torch.Tensor:
    return input.new_empty((*input.shape[:-1], weight.shape[0]))


def _onednn_setup_context(ctx, inputs: tuple, output: torch.Tensor) -> None:
    input, weight, bias, _ = inputs
    ctx.save_for_backward(input, weight)
    ctx.has_bias = bias is not None


def _onednn_backward(ctx, grad: torch.Tensor) -> tuple:
    """Input gradient through oneDNN (2.2x faster on Zen 4), weight gradient through `mm` (faster than oneDNN with the
    transposed copies it would need)."""
    input, weight = ctx.saved_tensors
    grad_input = torch.ops.swinv2_hf.onednn_linear(grad, weight.t().contiguous(), None, False)
    flat_grad = grad.reshape(-1, grad.shape[-1])
    grad_weight = flat_grad.t() @ input.reshape(-1, input.shape[-1])
    grad_bias = flat_grad.sum(0) if ctx.has_bias else None
    return grad_input, grad_weight, grad_bias, None


@functools.cache
def _onednn_op():
    """`swinv2_hf::onednn_linear`, registered once per process (the package and a remote-code copy of this file share
    it), or None where this torch has no usable oneDNN linear: probed once on a tiny product, so a missing or changed
    private op costs one log line, never an error."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        logger.info("oneDNN's linear op is not in this torch build: SwinV2's linear layers use F.linear.")
        return None
    try:
        if not hasattr(torch.ops.swinv2_hf, "onednn_linear"):
            op = torch.library.custom_op("swinv2_hf::onednn_linear", _onednn_forward, mutates_args=())
            op.register_fake(_onednn_fake)
            op.register_autograd(_onednn_backward, setup_context=_onednn_setup_context)
        op = torch.ops.swinv2_hf.onednn_linear
        probe = torch.tensor([[1.0, 2.0]])
        if not torch.equal(op(probe, torch.eye(2), torch.ones(2), False), probe + 1):
            raise RuntimeError("wrong result on a 1x2 probe")
    except Exception as error:  # any failure of a private API means: use the standard op
        logger.warning(f"oneDNN's linear op is unusable in torch {torch.__version__} ({error}); SwinV2's linear "
                       "layers use F.linear.")
        return None
    return op


@torch.compiler.assume_constant_result
def onednn_computes(dtype: torch.dtype) -> bool:
    """Whether oneDNN's GEMM runs `dtype` on this CPU: float32 wherever the op works, half precision only where the
    CPU computes it natively. A fact of the machine, so `torch.compile` takes it as a constant."""
    if dtype not in (torch.float32, *HALF_DTYPES) or _onednn_op() is None:
        return False
    return dtype == torch.float32 or _native_half_support(dtype)


def linear_kernel(layer: nn.Module, hidden_states: torch.Tensor, implementation: str = "auto") -> Kernel:
    """The kernel `linear` uses for this call (the rule is in the module docstring)."""
    if implementation not in LINEAR_IMPLEMENTATIONS:
        raise ValueError(f"linear_implementation must be one of {LINEAR_IMPLEMENTATIONS}, got {implementation!r}.")
    weight = getattr(layer, "weight", None)
    plain = type(layer) is nn.Linear and isinstance(weight, torch.Tensor) and weight.is_floating_point()
    if implementation == "torch" or not plain or hidden_states.device.type != "cpu" or standard_ops_only():
        return "torch"
    if implementation == "auto" and MACHINE not in MEASURED_MACHINES:
        return "torch"
    autocast = torch.is_autocast_enabled("cpu")
    dtype = torch.get_autocast_dtype("cpu") if autocast else hidden_states.dtype
    if not autocast and weight.dtype != dtype:
        return "torch"  # F.linear names the mismatch
    if dtype in HALF_DTYPES:
        if not onednn_computes(dtype):
            return "float32"
        return "torch" if autocast else "onednn"  # autocast's own half-precision GEMM is oneDNN's
    if dtype != torch.float32 or autocast or not onednn_computes(dtype):
        return "torch"
    large = 2 * hidden_states.numel() * weight.shape[0] >= AVX2_ONEDNN_MIN_FLOPS
    return "onednn" if implementation == "onednn" or CPU_CAPABILITY == "AVX512" or large else "torch"


def linear(
    layer: nn.Module,
    hidden_states: torch.Tensor,
    implementation: str = "auto",
    extra_bias: torch.Tensor | None = None,
    gelu: bool = False,
) -> torch.Tensor:
    """`layer(hidden_states)`, plus `extra_bias`, then the exact GELU when `gelu`, with the kernel of `linear_kernel`.

    Args:
        layer: An `nn.Linear`, or any module that replaced one (a quantized linear runs its own forward).
        implementation: `config.linear_implementation`.
        extra_bias: Added to the output; for a layer built without bias (the fused qkv projection with its q and v
            biases), so that oneDNN fuses it.
        gelu: Apply the exact (erf) GELU; fused into oneDNN's GEMM when no gradient is needed.
    """
    kernel = linear_kernel(layer, hidden_states, implementation)
    if kernel == "torch":
        output = layer(hidden_states)
        output = output if extra_bias is None else output + extra_bias
        return F.gelu(output) if gelu else output
    bias = layer.bias if extra_bias is None else extra_bias if layer.bias is None else layer.bias + extra_bias
    if kernel == "onednn":
        return _linear_through_onednn(hidden_states, layer.weight, bias, gelu)
    output_dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else hidden_states.dtype
    with torch.autocast("cpu", enabled=False):
        operands = [tensor if tensor is None else tensor.float() for tensor in (hidden_states, layer.weight, bias)]
        if onednn_computes(torch.float32):
            output = _linear_through_onednn(*operands, gelu)
        else:
            output = F.linear(*operands)
            output = F.gelu(output) if gelu else output
    return output.to(output_dtype)


def _linear_through_onednn(
    hidden_states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool
) -> torch.Tensor:
    """oneDNN's GEMM; the GELU is fused only when no gradient is needed (training applies `F.gelu` after it)."""
    needs_grad = torch.is_grad_enabled() and any(
        tensor is not None and tensor.requires_grad for tensor in (hidden_states, weight, bias)
    )
    op = torch.ops.swinv2_hf.onednn_linear  # registered by `onednn_computes`, which chose this path
    if gelu and needs_grad:
        return F.gelu(op(hidden_states, weight, bias, False))
    return op(hidden_states, weight, bias, gelu)
