"""Detect objects with a folder (or Hub repository) written by `run_detection.py`, through transformers' pipeline, and
save the image with the boxes drawn on it.

    python examples/object_detection/predict.py --model outputs/photos-detector \
        --image outputs/photos/coffee.png --output outputs/coffee-detections.png --threshold 0.3

The detector's config names its backbone type `swinv2_hf`, so `import swinv2_hf` (which registers it with
transformers' Auto classes) must come before the pipeline is built; nothing else is needed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw
from transformers import pipeline

import swinv2_hf  # noqa: F401  (registers SwinV2: the saved detector's backbone config names it)

PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
)


def detect(model: str, image: Image.Image, threshold: float) -> list[dict]:
    """The pipeline's detections: [{"score", "label", "box": {"xmin", "ymin", "xmax", "ymax"}}], best first."""
    detector = pipeline("object-detection", model=model)
    return sorted(detector(image, threshold=threshold), key=lambda d: -d["score"])


def draw_detections(image: Image.Image, detections: list[dict]) -> Image.Image:
    """A copy of `image` with each box outlined and labelled with its class and score, one colour per class."""
    drawn = image.convert("RGB")
    draw = ImageDraw.Draw(drawn)
    width = max(2, round(max(drawn.size) / 300))
    labels = sorted({d["label"] for d in detections})
    for detection in detections:
        box = detection["box"]
        colour = PALETTE[labels.index(detection["label"]) % len(PALETTE)]
        draw.rectangle([box["xmin"], box["ymin"], box["xmax"], box["ymax"]], outline=colour, width=width)
        text = f"{detection['label']} {detection['score']:.2f}"
        left, top, right, bottom = draw.textbbox((box["xmin"], box["ymin"]), text)
        draw.rectangle([left, top, right + 2, bottom + 2], fill=colour)
        draw.text((box["xmin"] + 1, box["ymin"] + 1), text, fill=(255, 255, 255))
    return drawn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="folder written by run_detection.py, or a Hub repository id")
    parser.add_argument("--image", type=Path, required=True, help="image to detect objects in")
    parser.add_argument("--output", type=Path, required=True, help="where to save the image with boxes (PNG)")
    parser.add_argument("--threshold", type=float, default=0.5, help="lowest score of a detection that is kept")
    args = parser.parse_args()
    if not args.image.is_file():
        parser.error(f"--image {args.image} is not a file")
    if args.output.suffix.lower() != ".png":
        parser.error(f"--output {args.output} should end in .png")
    image = Image.open(args.image).convert("RGB")
    detections = detect(args.model, image, args.threshold)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    draw_detections(image, detections).save(args.output)
    for detection in detections:
        print(f"{detection['label']:>12} {detection['score']:.3f} {detection['box']}")
    print(f"{len(detections)} detections at threshold {args.threshold} -> {args.output}")


if __name__ == "__main__":
    main()
