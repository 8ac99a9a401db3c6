"""Peak memory of one training step of a SwinV2-T backbone at high resolution: swinv2_hf with activation checkpointing
and chunked (sequential) window attention against transformers' Swinv2Backbone, same config and weights.

Each contender runs alone in a fresh process (the CPU measure is the resident high-water mark); the step is forward,
a loss on every feature map, backward and an SGD update, with the backbone transferred from 256 px / window 8 to the
benchmark's resolution with window 16 and pretrained windows [8, 8, 8, 8].

    python benchmarks/backbone_memory.py [--resolution 1024] [--batch 2] [--chunk 16] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
from timing import peak_memory_mib
from transformers import Swinv2Backbone, Swinv2Config

from swinv2_hf import SwinV2Backbone, SwinV2Config
from swinv2_hf.conversion import export_state_dict, with_base_model_prefix
from swinv2_hf.transfer import transfer_config

OUT_FEATURES = ["stage1", "stage2", "stage3", "stage4"]
CONTENDERS = {
    "transformers": "transformers' Swinv2Backbone",
    "transformers_checkpointed": "transformers' Swinv2Backbone, gradient checkpointing",
    "swinv2_hf": "swinv2_hf, checkpointing + chunked attention",
    "swinv2_hf_plain": "swinv2_hf, neither",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=16, help="windows per attention chunk (attention_chunk_size)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", type=Path, help="write the figures as JSON here")
    parser.add_argument("--probe", choices=sorted(CONTENDERS), help=argparse.SUPPRESS)  # the per-model subprocess
    return parser.parse_args(argv)


def ours_config(args: argparse.Namespace, chunked: bool) -> SwinV2Config:
    pretrained = SwinV2Config.from_preset("swinv2_tiny_window8_256")
    return transfer_config(
        pretrained,
        image_size=args.resolution,
        window_size=16,
        out_features=OUT_FEATURES,
        attention_chunk_size=args.chunk if chunked else 0,
        drop_path_rate=0.0,
    )


def build(args: argparse.Namespace, contender: str) -> torch.nn.Module:
    """The contender with the weights of one seeded swinv2_hf backbone (mapped into transformers' layout)."""
    torch.manual_seed(0)
    ours = SwinV2Backbone(ours_config(args, chunked=contender == "swinv2_hf"))
    if contender.startswith("swinv2_hf"):
        model = ours
    else:
        config = ours.config
        model = Swinv2Backbone(
            Swinv2Config(
                image_size=args.resolution,
                embed_dim=config.embed_dim,
                depths=list(config.depths),
                num_heads=list(config.num_heads),
                window_size=config.window_size,
                pretrained_window_sizes=list(config.pretrained_window_sizes),
                out_features=OUT_FEATURES,
            )
        )
        encoder = {key: value for key, value in ours.state_dict().items() if "hidden_states_norms" not in key}
        model.load_state_dict(export_state_dict(with_base_model_prefix(encoder), "transformers", config), strict=True)
    if contender in ("swinv2_hf", "transformers_checkpointed"):
        model.gradient_checkpointing_enable()
    return model.to(args.device).train()


def probe(args: argparse.Namespace) -> None:
    """Runs in the subprocess: set up, then the peak of one training step above that."""
    model = build(args, args.probe)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    pixels = torch.randn(args.batch, 3, args.resolution, args.resolution, device=args.device)

    def step() -> None:
        loss = sum(feature_map.float().pow(2).mean() for feature_map in model(pixels).feature_maps)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    print(peak_memory_mib(step, torch.device(args.device)))


def check_same_outputs(args: argparse.Namespace) -> float:
    """The contenders compute the same maps (at a small size, to keep this cheap). transformers' backbone returns
    the stage maps without the per-stage LayerNorm ours applies, so ours' norms are applied to its maps."""
    small = argparse.Namespace(**{**vars(args), "resolution": 256})
    pixels = torch.randn(1, 3, 256, 256)
    theirs, ours = build(small, "transformers").eval(), build(small, "swinv2_hf").eval()
    with torch.no_grad():
        their_maps = [
            ours.hidden_states_norms[name](m.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            for name, m in zip(OUT_FEATURES, theirs(pixels).feature_maps)
        ]
        return max((a - b).abs().max().item() for a, b in zip(their_maps, ours(pixels).feature_maps))


def main() -> None:
    args = parse_args()
    if args.probe:
        probe(args)
        return
    difference = check_same_outputs(args)
    results = {
        "resolution": args.resolution,
        "batch": args.batch,
        "chunk": args.chunk,
        "max_map_difference": difference,
        "peak_mib": {},
    }
    for contender in CONTENDERS:
        command = [
            sys.executable,
            __file__,
            "--probe",
            contender,
            "--resolution",
            str(args.resolution),
            "--batch",
            str(args.batch),
            "--chunk",
            str(args.chunk),
            "--device",
            args.device,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results["peak_mib"][contender] = round(float(done.stdout.strip().splitlines()[-1]), 1)
        print(f"{CONTENDERS[contender]:55s} {results['peak_mib'][contender]:9.1f} MiB", flush=True)
    ratio = results["peak_mib"]["swinv2_hf"] / results["peak_mib"]["transformers"]
    results["ratio_to_transformers"] = round(ratio, 3)
    print(
        f"swinv2_hf (checkpointing + chunks) / transformers: {ratio:.3f}; same weights, maps agree to {difference:.1e}"
    )
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
