"""Write the real-photo detection set: seven photographs that ship in scikit-image's wheel, next to their hand-labelled
COCO instances file (`data/photos.json`, committed), so the repository carries boxes but no image binaries.

    python examples/object_detection/make_photos.py --output_dir outputs/photos
    # -> outputs/photos/{astronaut,camera,chelsea,coffee,coins,rocket,motorcycle}.png and outputs/photos/photos.json

Sources and licences (from scikit-image's docstrings): astronaut (NASA, public domain), camera (Lav Varshney, CC0),
chelsea (Stefan van der Walt, CC0), coffee (Rachel Michetti, CC0), coins (Brooklyn Museum, no known copyright
restrictions), rocket (SpaceX, public domain), motorcycle (left view of the Middlebury 2014 stereo benchmark's
"Motorcycle" scene, Scharstein et al.; cite them if you publish with it).
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ANNOTATIONS = Path(__file__).with_name("data") / "photos.json"


def loaders() -> dict[str, Callable[[], np.ndarray]]:
    """file name in photos.json -> the skimage.data function that returns its pixels (all read from the wheel;
    scikit-image is imported here so that the rest of the example does not need it)."""
    from skimage import data

    return {
        "astronaut.png": data.astronaut,
        "camera.png": data.camera,
        "chelsea.png": data.chelsea,
        "coffee.png": data.coffee,
        "coins.png": data.coins,
        "rocket.png": data.rocket,
        "motorcycle.png": lambda: data.stereo_motorcycle()[0],  # the left view of the stereo pair
    }


def make_photos(output_dir: Path) -> Path:
    """Write every image of photos.json into `output_dir` with a copy of the annotations; returns the annotation file.

    Raises:
        ValueError: an image's size is not the one its boxes were labelled on (another scikit-image version).
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    coco = json.loads(ANNOTATIONS.read_text())
    sources = loaders()
    for record in coco["images"]:
        image = Image.fromarray(sources[record["file_name"]]())
        if image.size != (record["width"], record["height"]):
            raise ValueError(
                f"{record['file_name']} is {image.size[0]}x{image.size[1]} in this scikit-image, but its boxes in "
                f"{ANNOTATIONS} were labelled on {record['width']}x{record['height']}; install scikit-image>=0.19."
            )
        image.save(output_dir / record["file_name"])
    return Path(shutil.copy(ANNOTATIONS, output_dir / ANNOTATIONS.name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--output_dir", type=Path, required=True, help="folder to write the images and annotations into"
    )
    annotation_file = make_photos(parser.parse_args().output_dir)
    coco = json.loads(annotation_file.read_text())
    print(f"{len(coco['images'])} images, {len(coco['annotations'])} boxes -> {annotation_file}")


if __name__ == "__main__":
    main()
