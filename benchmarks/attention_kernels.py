"""Which attention kernel is faster on this device: eager (explicit matmul + softmax) or SDPA.

Times `SwinV2WindowAttention` on the windows of SwinV2-T's first stage (256 px, window 8: 64 windows of 64 tokens per
image, 3 heads of 32 channels), both kernels interleaved, and prints medians with their spread. The model's default
(`SwinV2PreTrainedModel.get_correct_attn_implementation`) follows this measurement.

    python benchmarks/attention_kernels.py [--batch 8] [--repeats 30] [--device cpu]
"""

from __future__ import annotations

import argparse

import torch
from timing import interleaved

from swinv2_hf import SwinV2Config
from swinv2_hf.modeling_swinv2_hf import SwinV2WindowAttention, build_window_layout


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8, help="images per call (64 windows each)")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per kernel, interleaved")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shifted", action="store_true", help="time the shifted block (with the shift mask)")
    parser.add_argument("--bfloat16", action="store_true", help="under bfloat16 autocast")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    config = SwinV2Config.from_preset("swinv2_tiny_window8_256")
    attention = SwinV2WindowAttention(config, dim=96, num_heads=3, window=8, pretrained_window=0).to(args.device).eval()
    windows = torch.randn(args.batch, 64, 64, 96, device=args.device)
    layout = build_window_layout(64, 64, 8, None, True, windows.dtype, windows.device)
    mask = layout.masks[args.shifted]

    def run(kernel: str):
        def call() -> None:
            config._attn_implementation = kernel
            attention(windows, 8, mask)

        return call

    autocast = torch.autocast(windows.device.type, dtype=torch.bfloat16, enabled=args.bfloat16)
    with torch.no_grad(), autocast:
        timings = interleaved({kernel: run(kernel) for kernel in ("eager", "sdpa")}, args.repeats, 3, windows.device)
    for kernel, timing in timings.items():
        print(
            f"{kernel:6s} {timing}  {args.batch * 64} windows, device {args.device}, threads {torch.get_num_threads()}"
        )


if __name__ == "__main__":
    main()
