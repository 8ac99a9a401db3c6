"""Quickstart: turn an original Microsoft SwinV2 checkpoint into a Hugging Face model, prove it exact, use it.

Runs offline on the reference checkpoint embedded in the repository (a small randomly initialised SwinV2 saved by
the original code, with the original's own outputs), so every number it prints is checked against the original:

    python examples/quickstart.py [--output-dir DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForImageClassification, pipeline

from swinv2_hf import SwinV2Backbone, SwinV2ForImageClassification, convert_checkpoint

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
CASE = "C"  # saved as the releases are: {'model': state_dict} with the original's buffers


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/quickstart"), help="where to save the model")
    return parser.parse_args()


def convert_reference(output_dir: Path, work_dir: Path) -> None:
    """The embedded original checkpoint -> a verified, Hub-ready folder (what `swinv2-hf convert` does)."""
    class_names = work_dir / "classes.txt"
    class_names.write_text("".join(f"class_{i}\n" for i in range(10)))
    convert_checkpoint(
        "original",
        FIXTURES / f"case_{CASE}_ms.pth",
        output_dir,
        config_path=FIXTURES / f"case_{CASE}_config.json",
        id2label_path=class_names,
        overwrite=True,
    )


def largest_difference(model: SwinV2ForImageClassification, reference_file: str, dtype: torch.dtype) -> float:
    """Largest absolute logit difference to the original implementation's stored outputs."""
    reference = torch.load(FIXTURES / reference_file, weights_only=True)
    with torch.no_grad():
        logits = model.to(dtype)(reference["input"]).logits
    model.float()
    return (logits - reference["logits"]).abs().max().item()


def main() -> None:
    args = parse_args()
    args.output_dir.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"Converting {FIXTURES / f'case_{CASE}_ms.pth'} (the original's {{'model': ...}} format) to {args.output_dir}"
    )
    convert_reference(args.output_dir, args.output_dir.parent)
    model = AutoModelForImageClassification.from_pretrained(args.output_dir).eval()
    for dtype, reference_file, tolerance in (
        (torch.float64, f"case_{CASE}_io_f64.pt", 1e-8),
        (torch.float32, f"case_{CASE}_io.pt", 1e-4),
    ):
        difference = largest_difference(model, reference_file, dtype)
        print(f"  {dtype!s:14s} largest logit difference to the original: {difference:.2e} (bound {tolerance:g})")
        if difference > tolerance:
            raise SystemExit(f"Parity check failed in {dtype}.")
    print(f"The folder holds: {', '.join(sorted(p.name for p in args.output_dir.iterdir()))}")

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (160, 120, 3), dtype=np.uint8))
    classifier = pipeline("image-classification", model=str(args.output_dir))
    print("pipeline('image-classification') on a 160x120 image:", classifier(image, top_k=3))

    backbone = SwinV2Backbone.from_pretrained(args.output_dir, out_features=["stage1", "stage2", "stage3", "stage4"])
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, 200, 300)).feature_maps
    print("Backbone feature maps for a 200x300 input:", [tuple(m.shape) for m in maps])


if __name__ == "__main__":
    main()
