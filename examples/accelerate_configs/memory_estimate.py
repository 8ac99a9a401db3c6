"""GPU memory of SimMIM pretraining of a SwinV2 under ZeRO-3 / FSDP full shard, counted on the meta device.

Prints the figures behind the SwinV2-G recipe of README.md (default: `swinv2_giant_window12_192` on 8 GPUs, bf16
mixed precision, AdamW, activation checkpointing per SwinV2Block). Nothing is allocated: the model is built on the
meta device and one forward pass there records the bytes autograd would keep, block by block.

    python examples/accelerate_configs/memory_estimate.py [--preset NAME] [--gpus 8] [--micro_batch 32]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from swinv2_hf import PRESETS, SwinV2Block, SwinV2Config, SwinV2ForMaskedImageModeling

GIB = 2**30
# Bytes per parameter under bf16 mixed precision with AdamW, all sharded over the GPUs. DeepSpeed ZeRO-3: bf16
# weights 2 + bf16 gradients 2 + fp32 master weights 4 + Adam moments 4 + 4. FSDP2 (fp32 sharded weights, bf16
# gathered for compute): fp32 weights 4 + fp32 gradients 4 + Adam moments 4 + 4. 16 either way.
STATE_BYTES_PER_PARAMETER = 16
GATHERED_BYTES_PER_PARAMETER = 2  # a gathered unit's bf16 weights, and its bf16 gradients before reduce-scatter
# Gathered units alive at once at worst: the current block's weights and gradients in backward, plus the next
# block's weights prefetched.
GATHERED_UNITS = 3
ACTIVATION_BYTES = 2  # bf16


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="swinv2_giant_window12_192", choices=sorted(PRESETS), help="Model size.")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs the states are sharded over.")
    parser.add_argument("--micro_batch", type=int, default=32, help="Images per GPU and forward pass.")
    return parser.parse_args(argv)


@dataclass
class Activations:
    """Bytes autograd keeps for one image: outside the blocks, per block, and at each block's input."""

    outside_blocks: int
    per_block: list[int]
    block_inputs: list[int]

    def checkpointed(self) -> int:
        """With every block recomputed in backward: the block inputs, what lies outside the blocks, and one block's
        full activations at a time (the largest)."""
        return sum(self.block_inputs) + self.outside_blocks + max(self.per_block)


def count_activations(model: SwinV2ForMaskedImageModeling, image_size: int) -> Activations:
    """One meta forward of a bf16 model with a mask, recording what autograd saves. SDPA on the meta device saves
    what the math kernel saves (the attention probabilities); GPU kernels keep less, so this is an upper bound."""
    saved = [0]
    per_block, block_inputs = [], []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        weight = isinstance(tensor, torch.nn.Parameter) or isinstance(tensor._base, torch.nn.Parameter)
        if not weight:  # autograd keeps the weights of a linear layer too, but they are not extra memory
            saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    def before(module: torch.nn.Module, args: tuple) -> None:
        module.saved_before = saved[0]
        block_inputs.append(args[0].numel() * ACTIVATION_BYTES)

    def after(module: torch.nn.Module, args: tuple, output: tuple) -> None:
        per_block.append(saved[0] - module.saved_before)

    for block in (module for module in model.modules() if isinstance(module, SwinV2Block)):
        block.register_forward_pre_hook(before)
        block.register_forward_hook(after)
    patches = (image_size // model.config.patch_size) ** 2
    pixels = torch.empty(1, model.config.num_channels, image_size, image_size, device="meta", dtype=torch.bfloat16)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(pixels, bool_masked_pos=torch.zeros(1, patches, dtype=torch.bool, device="meta"))
    return Activations(saved[0] - sum(per_block), per_block, block_inputs)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    config = SwinV2Config.from_preset(args.preset)
    with torch.device("meta"):
        model = SwinV2ForMaskedImageModeling(config).to(torch.bfloat16).train()
    parameters = sum(parameter.numel() for parameter in model.parameters())
    largest_block = max(
        sum(parameter.numel() for parameter in module.parameters())
        for module in model.modules()
        if isinstance(module, SwinV2Block)
    )
    states = parameters * STATE_BYTES_PER_PARAMETER / args.gpus
    gathered = GATHERED_UNITS * largest_block * GATHERED_BYTES_PER_PARAMETER
    activations = count_activations(model, config.image_size)
    checkpointed = activations.checkpointed() * args.micro_batch
    print(f"{args.preset}: {parameters:,} parameters (SimMIM model), largest SwinV2Block {largest_block:,}")
    print(f"states      {parameters:,} x {STATE_BYTES_PER_PARAMETER} B / {args.gpus} GPUs = {states / GIB:.2f} GiB")
    print(
        f"gathered    {GATHERED_UNITS} x {largest_block:,} x {GATHERED_BYTES_PER_PARAMETER} B = "
        f"{gathered / GIB:.2f} GiB"
    )
    print(
        f"activations per image: block inputs {sum(activations.block_inputs) / 2**20:.1f} MiB, outside the blocks "
        f"{activations.outside_blocks / 2**20:.1f} MiB, largest block {max(activations.per_block) / 2**20:.1f} MiB "
        f"(all blocks without checkpointing {sum(activations.per_block) / 2**20:.1f} MiB)"
    )
    print(f"activations x {args.micro_batch} images = {checkpointed / GIB:.2f} GiB")
    total = states + gathered + checkpointed
    print(f"total per GPU (before the CUDA context and allocator slack) = {total / GIB:.2f} GiB")
    print(
        f"for comparison, unsharded (DDP): states {parameters * STATE_BYTES_PER_PARAMETER / GIB:.2f} GiB per GPU; "
        f"without checkpointing: activations {sum(activations.per_block) * args.micro_batch / GIB:.2f} GiB"
    )


if __name__ == "__main__":
    main()
