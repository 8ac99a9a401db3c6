"""Issue 11, "Any image mode": the image processor the package writes (`image_processor_for`, saved and loaded back the
way a converted or trained folder is used) takes an image of every PIL mode and gives three channels, and a pipeline
built on it classifies greyscale and RGBA images.

Every mode in MODES is one PIL can create, so none is left out. Each test image re-encodes known 8-bit RGB content
exactly (opaque alpha, an adaptive palette compared with its own colours, CMYK's lossless round trip, grey values in
16-bit, 32-bit and float pixels, black and white in '1'), so its pixel values must equal those of that content. What
the conversion does beyond exact re-encodings is pinned separately: transparency is composited onto white, and values
of 16-bit images above 255 are clipped (PIL's `convert("RGB")`), not rescaled.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config
from PIL import Image
from transformers import AutoImageProcessor, pipeline
from transformers.image_processing_utils import BaseImageProcessor

from swinv2_hf import SwinV2ForImageClassification
from swinv2_hf.configuration_swinv2_hf import to_pair
from swinv2_hf.hub_folder import image_processor_for
from swinv2_hf.sources import Preprocessing

MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]
WIDTH, HEIGHT = 40, 30
# Square: ConvNext's processor (shorter side, centre crop); non-square: ViT's plain resize.
IMAGE_SIZES = [32, (32, 48)]


def gradient() -> np.ndarray:
    """40x30 uint8 RGB with a different ramp per channel, so that a swapped, dropped or shifted channel shows."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    return np.stack(
        [x * 255 // (WIDTH - 1), y * 255 // (HEIGHT - 1), (x + y) * 255 // (WIDTH + HEIGHT - 2)], axis=-1
    ).astype(np.uint8)


def grey_gradient() -> np.ndarray:
    return gradient().mean(axis=-1).astype(np.uint8)


def as_rgb(grey: np.ndarray) -> Image.Image:
    """The RGB image a single-channel one stands for: its value in all three channels."""
    return Image.fromarray(np.repeat(grey[..., None], 3, axis=-1))


def with_opaque_alpha(channels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.dstack([channels, np.full(channels.shape[:2], 255, np.uint8)]))


def adaptive_palette() -> tuple[Image.Image, Image.Image]:
    image = Image.fromarray(gradient()).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette = np.asarray(image.getpalette(), dtype=np.uint8).reshape(-1, 3)
    return image, Image.fromarray(palette[np.asarray(image)])


def black_and_white() -> tuple[Image.Image, Image.Image]:
    white = grey_gradient() > 127
    return Image.fromarray(white), as_rgb(np.where(white, 255, 0).astype(np.uint8))


def cmyk() -> tuple[Image.Image, Image.Image]:
    """C, M, Y = 255 - R, G, B with no black: the CMYK PIL itself makes, which converts back without loss."""
    inks = np.dstack([255 - gradient(), np.zeros((HEIGHT, WIDTH), np.uint8)])
    return Image.fromarray(inks, mode="CMYK"), Image.fromarray(gradient())


def grey_as(dtype: type) -> tuple[Image.Image, Image.Image]:
    """The 8-bit grey values stored in a wider pixel type (I;16, I or F)."""
    return Image.fromarray(grey_gradient().astype(dtype)), as_rgb(grey_gradient())


# mode -> (an image in that mode, the RGB image whose content it re-encodes exactly); the expected image is built
# from the arrays, not with PIL's conversion of the image under test.
CASES: dict[str, Callable[[], tuple[Image.Image, Image.Image]]] = {
    "1": black_and_white,
    "L": lambda: (Image.fromarray(grey_gradient()), as_rgb(grey_gradient())),
    "LA": lambda: (with_opaque_alpha(grey_gradient()), as_rgb(grey_gradient())),
    "P": adaptive_palette,
    "RGB": lambda: (Image.fromarray(gradient()), Image.fromarray(gradient())),
    "RGBA": lambda: (with_opaque_alpha(gradient()), Image.fromarray(gradient())),
    "CMYK": cmyk,
    "I;16": lambda: grey_as(np.uint16),
    "I": lambda: grey_as(np.int32),
    "F": lambda: grey_as(np.float32),
}


@pytest.fixture(params=IMAGE_SIZES, ids=["square", "non_square"])
def image_size(request: pytest.FixtureRequest) -> int | tuple[int, int]:
    return request.param


@pytest.fixture
def processor(image_size: int | tuple[int, int], tmp_path: Path) -> BaseImageProcessor:
    """The package's processor as users get it: written by `image_processor_for`, read back with the Auto class."""
    image_processor_for(tiny_config(image_size=image_size), Preprocessing()).save_pretrained(tmp_path)
    return AutoImageProcessor.from_pretrained(tmp_path)


def pixel_values(processor: BaseImageProcessor, image: Image.Image) -> np.ndarray:
    return processor(image, return_tensors="np")["pixel_values"]


def test_the_written_config_converts_to_rgb(tmp_path: Path) -> None:
    """The setting must reach preprocessor_config.json: the folder, not this process, is what users load."""
    image_processor_for(tiny_config(), Preprocessing()).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["do_convert_rgb"] is True


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_gives_the_pixels_of_the_rgb_content_it_encodes(
    mode: str, image_size: int | tuple[int, int], processor: BaseImageProcessor
) -> None:
    image, content = CASES[mode]()
    assert image.mode == mode
    actual = pixel_values(processor, image)
    assert actual.shape == (1, 3, *to_pair(image_size, "image_size"))
    np.testing.assert_array_equal(actual, pixel_values(processor, content))


def test_transparency_is_composited_onto_white(processor: BaseImageProcessor) -> None:
    """transformers' conversion, not PIL's (which would drop the alpha and keep the hidden colour)."""
    hidden = np.dstack([gradient(), np.zeros((HEIGHT, WIDTH), np.uint8)])
    white = Image.new("RGB", (WIDTH, HEIGHT), (255, 255, 255))
    np.testing.assert_array_equal(pixel_values(processor, Image.fromarray(hidden)), pixel_values(processor, white))


def test_sixteen_bit_values_are_clipped_at_255_not_rescaled(processor: BaseImageProcessor) -> None:
    """A full-range 16-bit image is processed without error, as three channels, but PIL clips it: everything from 255
    up is white. Scale such images to 8 bits before processing to keep their contrast."""
    deep = grey_gradient().astype(np.uint16) * 257
    image = Image.fromarray(deep)
    assert image.mode == "I;16"
    clipped = as_rgb(np.minimum(deep, 255).astype(np.uint8))
    np.testing.assert_array_equal(pixel_values(processor, image), pixel_values(processor, clipped))


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_a_pipeline_classifies_greyscale_and_rgba_images(
    mode: str, image_size: int | tuple[int, int], processor: BaseImageProcessor
) -> None:
    """The pipeline itself turns a PIL image into RGB (transformers' `load_image`, a plain `convert`) before the
    processor sees it; this checks the package's model and written processor serve such images end to end."""
    config = tiny_config(image_size=image_size)
    classifier = pipeline(
        "image-classification",
        model=SwinV2ForImageClassification(config).eval(),
        image_processor=processor,
        device="cpu",
    )
    image, _ = CASES[mode]()
    predictions = classifier(image, top_k=3)
    assert len(predictions) == 3 and all(p["label"] in config.id2label.values() for p in predictions)
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True) and all(0 <= score <= 1 for score in scores)
