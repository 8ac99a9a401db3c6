"""How SwinV2's work reaches the CPU: the kernel of each linear layer, chosen per call from the device, the dtype and
the mode, and the memory-saving forms of the MLP and the cosine attention. The modeling file says what is computed
(the paper's formulas); this file says with which kernels.

Linear layers are plain `nn.Linear` modules. `linear(layer, x, implementation)` runs one with:
- `"onednn"`: oneDNN's GEMM (`torch.ops.mkldnn._linear_pointwise`) through the custom op `swinv2_hf::onednn_linear`,
  which fuses the bias and the exact GELU, has a backward, and stays one kernel under `torch.compile`;
- `"float32"`: for bfloat16/float16 tensors on a CPU without a native half-precision GEMM: the product in float32,
  rounded back to the input's dtype (more exact than the emulated half-precision GEMM, and 10-30x faster);
- `"torch"`: the layer's own forward (`F.linear`), the standard op.

`config.linear_implementation` switches it: `"auto"` (default) applies the rule below, `"onednn"` takes oneDNN
wherever it can compute the call, `"torch"` stays with standard PyTorch and standard autograd. The rule, from the
measurements in benchmarks/NOTES.md (SwinV2-T 256 px, 2 threads):
- float32 on an x86 CPU: oneDNN with AVX-512 (whole model 1.6x faster than with `F.linear` on an AMD EPYC Zen 4);
  MKL (`F.linear`) with AVX2 only (AMD EPYC Zen 3: MKL 1.1-1.25x oneDNN's speed on each of SwinV2-T's 14 product
  shapes, the whole model 1.15x faster at batch 8 and a training step as fast), and so inductor's own GEMMs under
  `torch.compile` there.
- bfloat16/float16 weights: oneDNN where the CPU computes that dtype natively (AVX512-BF16, AMX, AVX512-FP16:
  `torch.ops.mkldnn._is_mkldnn_bf16_supported()`); elsewhere oneDNN cannot create the primitive and `F.linear`
  emulates the type at 6-18 GFLOP/s against 100-140 in float32 (Zen 3), so the product runs in float32.
- under autocast: the same half-precision rule on the autocast dtype (native: autocast's own GEMM; otherwise float32
  with the output in the autocast dtype, as autocast promises).
- standard ops while tracing or exporting (TorchScript, `torch.export`, both ONNX exporters, FX), for a layer that is
  not a plain floating-point `nn.Linear` (a quantized one), on other devices, other CPU architectures, in float64.

This file imports only torch, transformers and the configuration so that it ships as Hub remote code next to the
modeling file. Nothing fails at import: a private op that is missing or has another signature disables oneDNN with
one log line.
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
# Rows a CPU forward without gradients gives the linear layers at once where it may choose (`window_chunk`).
CHUNK_ROWS = 4096
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
    attribute, algorithm = ("gelu", "none") if gelu else ("none", "")
    return torch.ops.mkldnn._linear_pointwise(input, weight, bias, attribute, [], algorithm)


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
        logger.warning(
            f"oneDNN's linear op is unusable in torch {torch.__version__} ({error}); SwinV2's linear "
            "layers use F.linear."
        )
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
    if dtype != torch.float32 or autocast:
        return "torch"
    return float32_kernel(implementation)


def float32_kernel(implementation: str = "auto") -> Kernel:
    """The GEMM of a float32 product on this CPU: oneDNN with AVX-512 (or when forced), MKL through `F.linear` with
    AVX2 only, where it measured the faster one."""
    onednn = onednn_computes(torch.float32) and (implementation == "onednn" or CPU_CAPABILITY == "AVX512")
    return "onednn" if onednn else "torch"


def window_chunk(hidden_states: torch.Tensor, rows_per_item: int, configured: int | None = None) -> int | None:
    """How many items (windows, tokens) along dimension 1 a call processes at once, each spanning `rows_per_item` rows
    of the linear layers; None for all of them in one pass.

    `configured` (`config.attention_chunk_size`, sequential attention for high resolutions) applies wherever sizes are
    concrete. Otherwise a CPU forward without gradients takes `CHUNK_ROWS` rows at a time, which keeps a block's wide
    intermediates (qkv: 3C per row, the MLP's hidden layer: 4C) in the CPU's caches and under glibc's 32 MiB mmap
    threshold, whose page faults cost about 0.5 ms per MiB on the measured machines; SwinV2-T's first stage at batch 8
    otherwise makes 38-50 MiB of them per block (benchmarks/NOTES.md). One pass while tracing or exporting, where the
    number of chunks would fix the input size in the graph, and under torch.compile, where inductor plans its buffers.
    """
    if standard_ops_only():
        return None
    items = hidden_states.shape[1]
    if configured:
        return configured if configured < items else None
    if hidden_states.device.type != "cpu" or torch.is_grad_enabled() or torch.compiler.is_compiling():
        return None
    chunk = CHUNK_ROWS // max(rows_per_item, 1)
    return max(1, chunk) if chunk < items else None


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
    return _product(kernel, hidden_states, layer.weight, bias, gelu)


def gelu_mlp(fc1: nn.Module, fc2: nn.Module, hidden_states: torch.Tensor, implementation: str = "auto") -> torch.Tensor:
    """`fc2(GELU(fc1(hidden_states)))` with the exact GELU, the MLP of every block.

    Without gradients the GELU is fused into fc1's GEMM. With gradients the 4C-wide activation between the two layers
    is recomputed from fc1's output in backward instead of being stored: one GELU more per block, and 4C values per
    token less to keep, 290 of SwinV2-T's 1280 MiB of saved activations at batch 8 (benchmarks/NOTES.md). Standard
    autograd (`implementation="torch"`, tracing, exporting, autocast, a quantized fc2) stores it as usual.
    """
    parameters = (*fc1.parameters(), *fc2.parameters())
    needs_grad = torch.is_grad_enabled() and (hidden_states.requires_grad or any(p.requires_grad for p in parameters))
    standard = implementation == "torch" or type(fc2) is not nn.Linear or standard_ops_only()
    if not needs_grad or standard or torch.is_autocast_enabled("cpu"):

        def mlp(inputs: torch.Tensor) -> torch.Tensor:
            return linear(fc2, linear(fc1, inputs, implementation, gelu=True), implementation)

        rows = hidden_states.reshape(1, -1, hidden_states.shape[-1])
        chunk = window_chunk(rows, rows_per_item=1)
        if chunk is None:
            return mlp(hidden_states)
        outputs = [mlp(rows[:, start : start + chunk]) for start in range(0, rows.shape[1], chunk)]
        return torch.cat(outputs, dim=1).view(*hidden_states.shape[:-1], -1)
    hidden_states = linear(fc1, hidden_states, implementation)
    kernel = linear_kernel(fc2, hidden_states, implementation)
    return _GeluThenLinear.apply(hidden_states, fc2.weight, fc2.bias, kernel)


class _GeluThenLinear(torch.autograd.Function):
    """`linear(GELU(x))` that keeps x, not GELU(x), for backward, and recomputes GELU(x) there."""

    @staticmethod
    def forward(ctx, hidden_states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, kernel: Kernel):
        ctx.save_for_backward(hidden_states, weight)
        ctx.kernel, ctx.has_bias = kernel, bias is not None
        return _product(kernel, F.gelu(hidden_states), weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple:
        hidden_states, weight = ctx.saved_tensors
        activated = F.gelu(hidden_states)
        grad_activated = _product(ctx.kernel, grad, weight.t().contiguous(), None)
        flat_grad, flat_activated = grad.reshape(-1, grad.shape[-1]), activated.reshape(-1, activated.shape[-1])
        if ctx.kernel == "float32":  # half precision without a native GEMM: the products in float32
            grad_weight = (flat_grad.t().float() @ flat_activated.float()).to(weight.dtype)
        else:
            grad_weight = flat_grad.t() @ flat_activated
        grad_bias = flat_grad.sum(0) if ctx.has_bias else None
        return torch.ops.aten.gelu_backward(grad_activated, hidden_states), grad_weight, grad_bias, None


def _product(
    kernel: Kernel, hidden_states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool = False
) -> torch.Tensor:
    """The linear product (then GELU) with a kernel `linear_kernel` chose for a plain floating-point layer."""
    if kernel == "onednn":
        return _linear_through_onednn(hidden_states, weight, bias, gelu)
    if kernel == "float32":
        output_dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else hidden_states.dtype
        with torch.autocast("cpu", enabled=False):
            operands = [tensor if tensor is None else tensor.float() for tensor in (hidden_states, weight, bias)]
            output = _product(float32_kernel(), *operands, gelu)
        return output.to(output_dtype)
    output = F.linear(hidden_states, weight, bias)
    return F.gelu(output) if gelu else output


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


# The smallest norm a query or key is divided by (`F.normalize`'s eps, as the original uses).
NORMALIZE_EPS = 1e-12


def cosine_query_key(query_key: torch.Tensor, logit_scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Unit-length queries times each head's logit scale, and unit-length keys, written head-major: their products
    are the scaled cosine logits of paper eq. 2, `(s q / |q|) . (k / |k|) = s cos(q, k)`.

    Args:
        query_key: (B, nW, N, 2, heads, head_dim), the query and key parts of the fused qkv projection (a view).
        logit_scale: (heads,), the clamped and exponentiated logit scale of each head.
        dtype: The attention core's dtype; the norms are computed in at least float32.

    Returns:
        (2, B, nW, heads, N, head_dim), contiguous, so that the attention kernels take queries and keys without a copy
        of their own. One norm and one product over both halves, written straight into that layout: measured 4x
        faster than normalising queries and keys apart and scaling the queries after; and the N x N logits need no
        pass of their own for the scale (SDPA takes a single scale for all heads anyway). With gradients, backward
        works from this output and the norms, so the qkv projection's output need not be kept (3C per token per
        block); the gradient is that of `F.normalize`.
    """
    if torch.is_grad_enabled() and (query_key.requires_grad or logit_scale.requires_grad) and not standard_ops_only():
        return _CosineQueryKey.apply(query_key, logit_scale, dtype)
    return _scaled_unit_vectors(query_key, logit_scale, dtype)[0]


def _half_scales(logit_scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(2, 1, 1, heads, 1, 1): the logit scale for the query half, ones for the key half."""
    logit_scale = logit_scale.to(dtype).flatten()
    return torch.stack((logit_scale, torch.ones_like(logit_scale))).view(2, 1, 1, -1, 1, 1)


def _scaled_unit_vectors(
    query_key: torch.Tensor, logit_scale: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(query_key / norm * scale in the (2, B, nW, heads, N, head_dim) layout, the clamped norms in that layout)."""
    compute_dtype = torch.promote_types(query_key.dtype, torch.float32)
    query_key = query_key.to(compute_dtype)
    # The norms in the input's own layout (a strided reduction over the head-major view measured 4x slower).
    norms = torch.linalg.vector_norm(query_key, dim=-1, keepdim=True).clamp_min(NORMALIZE_EPS)
    head_major, norms = query_key.permute(3, 0, 1, 4, 2, 5), norms.permute(3, 0, 1, 4, 2, 5)
    factors = _half_scales(logit_scale, compute_dtype) / norms
    if standard_ops_only():  # a traced graph holds no out= ops
        return (head_major * factors).to(dtype).contiguous(), norms
    output = torch.empty(head_major.shape, dtype=compute_dtype, device=head_major.device)
    torch.mul(head_major, factors, out=output)
    return output.to(dtype), norms


class _CosineQueryKey(torch.autograd.Function):
    """`cosine_query_key` with a backward from its output and norms."""

    @staticmethod
    def forward(ctx, query_key: torch.Tensor, logit_scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        output, norms = _scaled_unit_vectors(query_key, logit_scale, dtype)
        ctx.save_for_backward(output, norms, logit_scale)
        ctx.input_dtype = query_key.dtype
        return output

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple:
        output, norms, logit_scale = ctx.saved_tensors
        grad, output = grad.to(norms.dtype), output.to(norms.dtype)
        per_head = _half_scales(logit_scale, norms.dtype)
        # With y = s x / |x| (s the head's scale, 1 for keys): dL/dx = (s / |x|) g - y (y . g) / (s |x|), and for the
        # queries dL/ds = (y . g) / s. Only the last factor spans the vectors, so the full-size work is two products
        # and one fused update. Where the norm was clamped to eps, y = s x / eps and the radial term vanishes.
        dot = (output * grad).sum(-1, keepdim=True)
        radial = torch.where(norms > NORMALIZE_EPS, dot / (per_head * norms), 0.0)
        grad_input = (grad * (per_head / norms)).addcmul_(output, radial, value=-1.0)
        grad_scale = (dot[0] / per_head[0]).sum(dim=(0, 1, 3)).view_as(logit_scale).to(logit_scale.dtype)
        return grad_input.permute(1, 2, 4, 0, 3, 5).to(ctx.input_dtype), grad_scale, None
