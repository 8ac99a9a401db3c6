"""Quickstart: turn an original Microsoft SwinV2 checkpoint into a Hugging Face model, prove it exact, use it.

Runs offline on the reference checkpoint embedded in the repository (a small randomly initialised SwinV2 saved by
the original code, with the original's own outputs), so every number it prints is checked against the original:

    python examples/quickstart.py [--output-dir DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForImageClassification, ViTImageProcessorPil, pipeline

from swinv2_hf import SwinV2Backbone, SwinV2ForImageClassification
from swinv2_hf.conversion import config_from_original, convert_state_dict, read_checkpoint

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
CASE = "C"  # saved as the releases are: {'model': state_dict} with the original's buffers


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/quickstart"), help="where to save the model")
    return parser.parse_args()


def convert_reference() -> SwinV2ForImageClassification:
    """The embedded original checkpoint in this package's layout."""
    case = json.loads((FIXTURES / f"case_{CASE}_config.json").read_text())
    config = config_from_original(case["constructor_kwargs"], id2label={i: f"class_{i}" for i in range(10)})
    model = SwinV2ForImageClassification(config).eval()
    model.load_state_dict(convert_state_dict(read_checkpoint(FIXTURES / case["checkpoint_file"]), "original"))
    return model


def largest_difference(model: SwinV2ForImageClassification, reference_file: str, dtype: torch.dtype) -> float:
    """Largest absolute logit difference to the original implementation's stored outputs."""
    reference = torch.load(FIXTURES / reference_file, weights_only=True)
    with torch.no_grad():
        logits = model.to(dtype)(reference["input"]).logits
    model.float()
    return (logits - reference["logits"]).abs().max().item()


def main() -> None:
    args = parse_args()
    model = convert_reference()
    print(f"Converted {FIXTURES / f'case_{CASE}_ms.pth'}: {sum(p.numel() for p in model.parameters()):,} parameters")
    for dtype, reference_file, tolerance in ((torch.float64, f"case_{CASE}_io_f64.pt", 1e-8),
                                             (torch.float32, f"case_{CASE}_io.pt", 1e-4)):
        difference = largest_difference(model, reference_file, dtype)
        print(f"  {str(dtype):14s} largest logit difference to the original: {difference:.2e} (bound {tolerance:g})")
        if difference > tolerance:
            raise SystemExit(f"Parity check failed in {dtype}.")

    size = model.config.image_size
    processor = ViTImageProcessorPil(size={"height": size, "width": size})
    model.save_pretrained(args.output_dir)
    processor.save_pretrained(args.output_dir)
    print(f"Saved a Hub-ready folder to {args.output_dir}: {', '.join(sorted(p.name for p in args.output_dir.iterdir()))}")

    reloaded = AutoModelForImageClassification.from_pretrained(args.output_dir)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (160, 120, 3), dtype=np.uint8))
    classifier = pipeline("image-classification", model=reloaded, image_processor=processor)
    print("pipeline('image-classification') on a 160x120 image:", classifier(image, top_k=3))

    backbone = SwinV2Backbone.from_pretrained(args.output_dir, out_features=["stage1", "stage2", "stage3", "stage4"])
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, 200, 300)).feature_maps
    print("Backbone feature maps for a 200x300 input:", [tuple(m.shape) for m in maps])


if __name__ == "__main__":
    main()
