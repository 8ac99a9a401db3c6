"""A synthetic COCO-format detection set: coloured rectangles and ellipses on textured backgrounds, with exact boxes.

Small enough to learn in minutes on a CPU, hard enough that a detector must localise (textures, several objects of
different sizes and colours per image, two shapes told apart only by their outline), and deterministic: the same
seed writes byte-identical images and annotations. The convergence test of `run_detection.py` trains on it.

    python examples/object_detection/make_shapes.py --output_dir outputs/shapes
    # -> outputs/shapes/{train,validation}/*.png and outputs/shapes/{train,validation}.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CATEGORIES = ({"id": 1, "name": "rectangle"}, {"id": 2, "name": "ellipse"})
SPLITS = ("train", "validation")
PLACEMENT_ATTEMPTS = 50  # tries to place a shape without overlapping the others before giving up on it
MIN_COLOUR_DISTANCE = 120  # L1 distance in RGB between a shape and the mean of its background, so shapes stay visible


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, required=True, help="folder to write the dataset into")
    parser.add_argument("--num_train", type=int, default=256, help="number of training images")
    parser.add_argument("--num_validation", type=int, default=64, help="number of validation images")
    parser.add_argument("--image_size", type=int, default=128, help="side of the square images in pixels")
    parser.add_argument("--max_objects", type=int, default=3, help="at most this many shapes per image (at least 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of everything drawn")
    args = parser.parse_args()
    if min(args.num_train, args.num_validation) < 1 or args.max_objects < 1:
        parser.error("--num_train, --num_validation and --max_objects must be at least 1")
    if args.image_size < 32:
        parser.error(f"--image_size {args.image_size} is too small for shapes of at least 12 px; use 32 or more")
    return args


def textured_background(size: int, rng: np.random.Generator) -> Image.Image:
    """One of three textures (blurred colour noise, stripes, a checkerboard), each over a random colour gradient."""
    base, target = rng.integers(0, 256, size=(2, 3))
    ramp = (
        np.linspace(0.0, 1.0, size)[None, :, None] if rng.random() < 0.5 else np.linspace(0.0, 1.0, size)[:, None, None]
    )
    gradient = base + (target - base) * ramp * np.ones((size, size, 1))
    kind = rng.integers(3)
    if kind == 0:
        noise = rng.normal(0, 40, size=(size // 8, size // 8, 3))
        texture = np.asarray(
            Image.fromarray(np.uint8(np.clip(noise + 128, 0, 255))).resize((size, size), Image.BICUBIC)
        )
        texture = texture.astype(np.float64) - 128
    else:
        period = int(rng.integers(6, 16))
        rows, columns = np.mgrid[0:size, 0:size]
        pattern = (columns // period) % 2 if kind == 1 else ((rows // period) + (columns // period)) % 2
        texture = (pattern[..., None] - 0.5) * rng.integers(20, 60)
    pixels = np.clip(gradient + texture + rng.normal(0, 6, size=(size, size, 3)), 0, 255)
    return Image.fromarray(pixels.astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))


def contrasting_colour(background: Image.Image, rng: np.random.Generator) -> tuple[int, int, int]:
    """A colour at least MIN_COLOUR_DISTANCE from the background's mean (the shape must be findable)."""
    mean = np.asarray(background, dtype=np.float64).reshape(-1, 3).mean(axis=0)
    while True:
        colour = rng.integers(0, 256, size=3)
        if np.abs(colour - mean).sum() >= MIN_COLOUR_DISTANCE:
            return tuple(int(c) for c in colour)


def overlaps(box: list[int], others: list[list[int]], gap: int = 2) -> bool:
    x, y, w, h = box
    return any(
        x < ox + ow + gap and ox < x + w + gap and y < oy + oh + gap and oy < y + h + gap for ox, oy, ow, oh in others
    )


def draw_shapes(image: Image.Image, max_objects: int, rng: np.random.Generator) -> list[tuple[int, list[int]]]:
    """Draw 1..max_objects non-overlapping shapes; returns (category id, [x, y, w, h]) of each, the exact extent of
    its pixels (PIL's rectangle and ellipse include both end coordinates, hence the -1)."""
    size = image.width
    drawn: list[tuple[int, list[int]]] = []
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _ in range(PLACEMENT_ATTEMPTS):
            w, h = (int(v) for v in rng.integers(size // 8, size // 2, size=2))
            x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            if not overlaps([x, y, w, h], [box for _, box in drawn]):
                break
        else:
            continue
        category = int(rng.integers(1, len(CATEGORIES) + 1))
        shape = draw.rectangle if category == 1 else draw.ellipse
        shape([x, y, x + w - 1, y + h - 1], fill=contrasting_colour(image, rng))
        drawn.append((category, [x, y, w, h]))
    return drawn


def write_split(output_dir: Path, split: str, count: int, image_size: int, max_objects: int, seed: int) -> Path:
    """`count` images in output_dir/split/ and their COCO instances file output_dir/split.json."""
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    (output_dir / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, count + 1):
        image = textured_background(image_size, rng)
        for category, box in draw_shapes(image, max_objects, rng):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
        file_name = f"{split}/{image_id:05d}.png"
        image.save(output_dir / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": image_size, "height": image_size})
    annotation_file = output_dir / f"{split}.json"
    coco = {"images": images, "annotations": annotations, "categories": list(CATEGORIES)}
    annotation_file.write_text(json.dumps(coco, indent=1) + "\n")
    return annotation_file


def make_shapes(
    output_dir: Path,
    num_train: int = 256,
    num_validation: int = 64,
    image_size: int = 128,
    max_objects: int = 3,
    seed: int = 0,
) -> dict[str, Path]:
    """Write both splits; returns the annotation file of each (image paths in it are relative to `output_dir`)."""
    counts = {"train": num_train, "validation": num_validation}
    return {split: write_split(output_dir, split, counts[split], image_size, max_objects, seed) for split in SPLITS}


def main() -> None:
    args = parse_args()
    files = make_shapes(
        args.output_dir, args.num_train, args.num_validation, args.image_size, args.max_objects, args.seed
    )
    for split, path in files.items():
        coco = json.loads(path.read_text())
        print(f"{split}: {len(coco['images'])} images, {len(coco['annotations'])} boxes -> {path}")


if __name__ == "__main__":
    main()
