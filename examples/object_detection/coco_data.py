"""COCO-format detection data for `run_detection.py`: reading and checking an instances file, the images and boxes as a
`datasets.Dataset`, augmentations that need no torchvision, batching through a transformers image processor, and
COCO box mAP with pycocotools.

Every defect of the input is found here, before training, and reported with the file and the index of the record
(`train.json: annotations[12] (id 40): box [..] extends outside the 640x480 image`), so that nothing reaches the
loss that would crash it or silently teach the wrong thing.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image, ImageEnhance
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from transformers.image_processing_utils import BaseImageProcessor

# A box may overhang the image by this many pixels (rounding in labelling tools) and is then clipped; beyond, it is bad.
BOX_TOLERANCE = 1.0
BAD_INPUT_POLICIES = ("skip", "error")
FPN_STRIDE = 32  # RT-DETR concatenates upsampled and backbone maps: its inputs' sides must be multiples of this
MAX_PROBLEMS_SHOWN = 20
# COCOeval.stats positions (pycocotools' summarize order) -> the names in results.json and the model card.
COCO_STATS = {
    "map": 0,
    "map_50": 1,
    "map_75": 2,
    "map_small": 3,
    "map_medium": 4,
    "map_large": 5,
    "mar_1": 6,
    "mar_10": 7,
    "mar_100": 8,
}
FEATURES = datasets.Features(
    {
        "image_id": datasets.Value("int64"),
        "image": datasets.Image(),
        "width": datasets.Value("int32"),
        "height": datasets.Value("int32"),
        "objects": {
            "id": datasets.List(datasets.Value("int64")),
            "bbox": datasets.List(datasets.List(datasets.Value("float32"), length=4)),
            "label": datasets.List(datasets.Value("int64")),
            "area": datasets.List(datasets.Value("float32")),
            "iscrowd": datasets.List(datasets.Value("int8")),
        },
    }
)


class DatasetError(ValueError):
    """The input cannot be used (or, with `bad_input="error"`, has defects); the message lists each one."""


@dataclass(frozen=True)
class Problem:
    """One defect of the input: the file it is in, the list and index of the record, and what is wrong."""

    file: Path
    where: str  # "images[3]" or "annotations[12] (id 40)"
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.message}"


@dataclass
class CocoSplit:
    """A checked COCO split: one row per usable image with its usable boxes, and what was left out and why.

    Labels are contiguous (0..K-1, in the order of the file's categories) because the detectors' heads index classes
    by position; `categories[label]["id"]` maps a label back to the file's category id.
    """

    annotation_file: Path
    dataset: datasets.Dataset
    categories: list[dict[str, Any]]
    problems: list[Problem] = field(default_factory=list)

    @property
    def id2label(self) -> dict[int, str]:
        return {label: category["name"] for label, category in enumerate(self.categories)}

    def ground_truth(self) -> COCO:
        """The kept images and boxes as a pycocotools COCO object (the file's own category ids)."""
        images, annotations = [], []
        for row in self.dataset.select_columns(["image_id", "width", "height", "objects"]):
            images.append({"id": row["image_id"], "width": row["width"], "height": row["height"]})
            objects = row["objects"]
            for index, box in enumerate(objects["bbox"]):
                annotations.append(
                    {
                        "id": objects["id"][index],
                        "image_id": row["image_id"],
                        "bbox": box,
                        "category_id": self.categories[objects["label"][index]]["id"],
                        "area": objects["area"][index],
                        "iscrowd": objects["iscrowd"][index],
                    }
                )
        coco = COCO()
        coco.dataset = {"images": images, "annotations": annotations, "categories": self.categories}
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco.createIndex()
        return coco


# ----------------------------------------------------------------------------------------------------------------------
# Reading and checking
# ----------------------------------------------------------------------------------------------------------------------


def _load_instances(annotation_file: Path) -> dict[str, list]:
    """The parsed file, refused when it is not an instances file with boxes."""
    try:
        coco = json.loads(annotation_file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(f"{annotation_file}: cannot be read as JSON: {error}") from error
    missing = [key for key in ("images", "annotations", "categories") if not isinstance(coco.get(key), list)]
    if missing:
        raise DatasetError(f"{annotation_file}: not a COCO instances file: no list {missing} at the top level.")
    if not coco["annotations"]:
        raise DatasetError(
            f"{annotation_file}: 'annotations' is empty: there are no boxes to train on or evaluate against "
            f"({len(coco['images'])} images). Label some objects, or point to the right instances file."
        )
    if not coco["categories"]:
        raise DatasetError(f"{annotation_file}: 'categories' is empty: every box needs a category to be learnt.")
    return coco


def _check_categories(annotation_file: Path, categories: list[dict], expected: list[dict] | None) -> list[dict]:
    """The categories as {id, name}, sorted by id; a validation split must name the training split's."""
    try:
        found = sorted(({"id": int(c["id"]), "name": str(c["name"])} for c in categories), key=lambda c: c["id"])
    except (KeyError, TypeError, ValueError) as error:
        raise DatasetError(
            f"{annotation_file}: every category needs an integer 'id' and a 'name' ({error})."
        ) from error
    if len({c["id"] for c in found}) != len(found):
        raise DatasetError(f"{annotation_file}: category ids repeat: {[c['id'] for c in found]}.")
    if expected is not None and found != expected:
        raise DatasetError(
            f"{annotation_file}: its categories {[(c['id'], c['name']) for c in found]} differ from the training "
            f"split's {[(c['id'], c['name']) for c in expected]}; a model is evaluated on the classes it learnt."
        )
    return found


def _decode(example: dict) -> dict:
    """datasets.map function: the image's real size, or why it cannot be decoded (decoding it fully, not only its
    header: a truncated file opens but fails here)."""
    try:
        with Image.open(example["path"]) as image:
            image.load()
            return {"decoded_width": image.width, "decoded_height": image.height, "error": ""}
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        return {"decoded_width": -1, "decoded_height": -1, "error": f"{type(error).__name__}: {error}"}


def _check_images(annotation_file: Path, image_dir: Path, images: list, num_proc: int | None) -> tuple[dict, list, set]:
    """image id -> record (path, width, height) for the images that decode at the size the file states; the
    problems of the others, and their ids (their boxes go with them, unreported)."""
    problems, records = [], []
    for index, image in enumerate(images):
        where = f"images[{index}]"
        if not isinstance(image, dict) or not isinstance(image.get("id"), int) or not image.get("file_name"):
            problems.append(Problem(annotation_file, where, "needs an integer 'id' and a 'file_name'"))
            continue
        records.append(
            {
                "index": index,
                "id": image["id"],
                "path": str(image_dir / image["file_name"]),
                "width": image.get("width", -1),
                "height": image.get("height", -1),
            }
        )
    decoded = (
        datasets.Dataset.from_list(records).map(
            _decode, num_proc=num_proc, desc=f"decoding {annotation_file.name}'s images"
        )
        if records
        else []
    )
    usable: dict[int, dict] = {}
    rejected: set[int] = set()
    for record in decoded:
        where = f"images[{record['index']}] (id {record['id']})"
        size = (record["decoded_width"], record["decoded_height"])
        if record["error"]:
            problems.append(Problem(Path(record["path"]), where, f"cannot be decoded: {record['error']}"))
        elif record["id"] in usable:
            problems.append(Problem(annotation_file, where, f"repeats image id {record['id']}"))
        elif (record["width"], record["height"]) not in (size, (-1, -1)):
            stated = f"{record['width']}x{record['height']}"
            message = f"is {size[0]}x{size[1]} but {annotation_file.name} says {stated}; its boxes may not fit it"
            problems.append(Problem(Path(record["path"]), where, message))
        else:
            usable[record["id"]] = {"path": record["path"], "width": size[0], "height": size[1]}
            continue
        rejected.add(record["id"])
    return usable, problems, rejected - set(usable)


def _box_problem(bbox: Any, width: int, height: int) -> str | None:
    """Why a COCO [x, y, w, h] box cannot be used on a width x height image, or None."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
        return f"bbox {bbox!r} is not four numbers [x, y, width, height]"
    x, y, w, h = bbox
    if not all(math.isfinite(v) for v in bbox):
        return f"bbox {bbox} is not finite"
    if w <= 0 or h <= 0:
        return f"bbox {bbox} has zero area (width and height must be positive)"
    if x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + w > width + BOX_TOLERANCE or y + h > height + BOX_TOLERANCE:
        return f"bbox {bbox} extends outside the {width}x{height} image"
    return None


def _clip(bbox: list[float], width: int, height: int) -> list[float]:
    """A box within BOX_TOLERANCE of the image, clipped to it."""
    x0, y0 = max(bbox[0], 0.0), max(bbox[1], 0.0)
    x1, y1 = min(bbox[0] + bbox[2], float(width)), min(bbox[1] + bbox[3], float(height))
    return [x0, y0, x1 - x0, y1 - y0]


def _check_annotations(
    annotation_file: Path, annotations: list, images: dict, rejected: set, label_of: dict
) -> tuple[dict, list]:
    """image id -> its usable objects (clipped boxes, labels), and the problems of the others (the boxes of rejected
    images are left out with them)."""
    problems, objects = [], {image_id: [] for image_id in images}
    valid_categories = ", ".join(f"{category_id}" for category_id in label_of)
    for index, annotation in enumerate(annotations):
        if not isinstance(annotation, dict):
            problems.append(Problem(annotation_file, f"annotations[{index}]", "is not an object"))
            continue
        where = f"annotations[{index}] (id {annotation.get('id')})"
        image_id, category_id = annotation.get("image_id"), annotation.get("category_id")
        if image_id in rejected:
            continue
        if image_id not in images:
            message = f"image_id {image_id!r} is not in 'images'"
        elif category_id not in label_of:
            message = f"category_id {category_id!r} is not in 'categories' (valid: {valid_categories})"
        else:
            image = images[image_id]
            message = _box_problem(annotation.get("bbox"), image["width"], image["height"])
        if message is not None:
            problems.append(Problem(annotation_file, where, message))
            continue
        box = _clip(annotation["bbox"], images[image_id]["width"], images[image_id]["height"])
        objects[image_id].append(
            {
                "id": annotation.get("id", index),
                "bbox": box,
                "label": label_of[category_id],
                "area": float(annotation.get("area", box[2] * box[3])),
                "iscrowd": int(annotation.get("iscrowd", 0)),
            }
        )
    return objects, problems


def _refuse_or_report(problems: list[Problem], bad_input: str, log) -> None:
    if not problems:
        return
    if bad_input == "error":
        shown = "\n  ".join(str(problem) for problem in problems[:MAX_PROBLEMS_SHOWN])
        more = f"\n  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more" if len(problems) > MAX_PROBLEMS_SHOWN else ""
        raise DatasetError(
            f"{len(problems)} defects in the input (refused: --bad_input error); fix them or pass --bad_input skip "
            f"to leave those records out:\n  {shown}{more}"
        )
    for problem in problems:
        log(f"skipped: {problem}")


def read_coco(
    annotation_file: str | Path,
    image_dir: str | Path | None = None,
    bad_input: str = "skip",
    categories: list[dict] | None = None,
    num_proc: int | None = None,
    log=print,
) -> CocoSplit:
    """Read a COCO instances file and its images into a `CocoSplit`, checking every record.

    Args:
        annotation_file: the instances JSON (`images`, `annotations`, `categories`).
        image_dir: where `file_name`s are relative to; the annotation file's folder by default.
        bad_input: "skip" leaves out (and logs) each defective image or box; "error" refuses the file, listing them.
            Defects: boxes outside the image (beyond BOX_TOLERANCE px), boxes of zero area or malformed, unknown
            category or image ids, images that fail to decode or whose size differs from the file's.
        categories: the training split's categories, which a validation split must repeat.
        num_proc: processes for decoding the images once to check them.

    Raises:
        DatasetError: an unreadable or empty file, defects under bad_input="error", or no box left.
    """
    if bad_input not in BAD_INPUT_POLICIES:
        raise ValueError(f"bad_input={bad_input!r}; choose one of {BAD_INPUT_POLICIES}")
    annotation_file = Path(annotation_file)
    image_dir = Path(image_dir) if image_dir is not None else annotation_file.parent
    coco = _load_instances(annotation_file)
    found_categories = _check_categories(annotation_file, coco["categories"], categories)
    label_of = {category["id"]: label for label, category in enumerate(found_categories)}
    images, image_problems, rejected = _check_images(annotation_file, image_dir, coco["images"], num_proc)
    objects, box_problems = _check_annotations(annotation_file, coco["annotations"], images, rejected, label_of)
    problems = image_problems + box_problems
    _refuse_or_report(problems, bad_input, log)
    rows = [
        {
            "image_id": image_id,
            "image": record["path"],
            "width": record["width"],
            "height": record["height"],
            "objects": {key: [o[key] for o in objects[image_id]] for key in FEATURES["objects"]},
        }
        for image_id, record in images.items()
    ]
    if not any(row["objects"]["bbox"] for row in rows):
        raise DatasetError(f"{annotation_file}: no usable box is left after leaving out {len(problems)} defects.")
    return CocoSplit(annotation_file, datasets.Dataset.from_list(rows, features=FEATURES), found_categories, problems)


# ----------------------------------------------------------------------------------------------------------------------
# Augmentation (numpy and PIL; boxes are COCO [x, y, w, h] in pixels, an (N, 4) float array)
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Augmentation:
    """The training augmentations and their strengths; all off gives the evaluation pipeline.

    Args:
        flip_probability: chance of a horizontal flip.
        scale_range: the processing size (shortest and longest edge) is multiplied by a factor drawn uniformly from
            this range (multi-scale training); (1, 1) keeps the processor's size.
        photometric_strength: brightness, contrast and saturation are each multiplied by a factor in
            [1 - s, 1 + s]; 0 turns this off.
    """

    flip_probability: float = 0.5
    scale_range: tuple[float, float] = (0.75, 1.25)
    photometric_strength: float = 0.2


def horizontal_flip(image: Image.Image, boxes: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    flipped = boxes.copy()
    flipped[:, 0] = image.width - boxes[:, 0] - boxes[:, 2]
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), flipped


def resized_shape(height: int, width: int, shortest_edge: float, longest_edge: float) -> tuple[int, int]:
    """The shortest side to `shortest_edge` unless that takes the longest side beyond `longest_edge` (the DETR rule)."""
    scale = min(shortest_edge / min(height, width), longest_edge / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def jittered_shape(height: int, width: int, size: dict[str, int], factor: float) -> tuple[int, int]:
    """The processing shape of a height x width image with the processor's `size` scaled by `factor`: the DETR rule for
    shortest_edge/longest_edge, or a fixed height x width (RT-DETR) rounded to the stride RT-DETR's FPN needs."""
    if "shortest_edge" in size:
        return resized_shape(height, width, size["shortest_edge"] * factor, size["longest_edge"] * factor)
    return tuple(max(FPN_STRIDE, round(size[side] * factor / FPN_STRIDE) * FPN_STRIDE) for side in ("height", "width"))


def resize(image: Image.Image, boxes: np.ndarray, height: int, width: int) -> tuple[Image.Image, np.ndarray]:
    factors = np.array([width / image.width, height / image.height] * 2, dtype=boxes.dtype)
    return image.resize((width, height), Image.Resampling.BILINEAR), boxes * factors


def photometric_jitter(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    """Brightness, contrast and saturation in a random order, each by a random factor in [1 - s, 1 + s]."""
    enhancers = [ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color]
    for position in rng.permutation(len(enhancers)):
        image = enhancers[position](image).enhance(rng.uniform(1 - strength, 1 + strength))
    return image


def augment(
    image: Image.Image, boxes: np.ndarray, size: dict[str, int], augmentation: Augmentation, rng: np.random.Generator
) -> tuple[Image.Image, np.ndarray]:
    """Flip, rescale to a jittered processing size (`size`: the processor's, see `jittered_shape`), jitter the
    colours; the boxes follow every geometric step."""
    if rng.random() < augmentation.flip_probability:
        image, boxes = horizontal_flip(image, boxes)
    height, width = jittered_shape(image.height, image.width, size, rng.uniform(*augmentation.scale_range))
    image, boxes = resize(image, boxes, height, width)
    if augmentation.photometric_strength > 0:
        image = photometric_jitter(image, augmentation.photometric_strength, rng)
    return image, boxes


# ----------------------------------------------------------------------------------------------------------------------
# Torch datasets and batching
# ----------------------------------------------------------------------------------------------------------------------


def coco_target(row: dict, boxes: np.ndarray) -> dict[str, Any]:
    """The annotation of one image as the DETR image processors take it (category_id carries the contiguous label)."""
    objects = row["objects"]
    return {
        "image_id": row["image_id"],
        "annotations": [
            {"bbox": box.tolist(), "category_id": label, "area": float(box[2] * box[3]), "iscrowd": crowd}
            for box, label, crowd in zip(boxes, objects["label"], objects["iscrowd"])
        ],
    }


class EvaluationImages(torch.utils.data.Dataset):
    """A split as (RGB image, target) pairs in file order, unchanged (the processor resizes them)."""

    def __init__(self, split: datasets.Dataset) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[Image.Image, dict]:
        row = self.split[index]
        return row["image"].convert("RGB"), coco_target(
            row, np.asarray(row["objects"]["bbox"], dtype=np.float32).reshape(-1, 4)
        )


class TrainingImages(EvaluationImages):
    """The training split, in a new order with new augmentations each epoch.

    Order and augmentations are drawn from generators seeded by (seed, epoch) and (seed, epoch, image), never from a
    global random state: a run resumed from a checkpoint sees exactly the batches the interrupted one would have, with
    any number of data-loading workers.
    """

    def __init__(self, split: datasets.Dataset, size: dict[str, int], augmentation: Augmentation, seed: int) -> None:
        super().__init__(split)
        self.size, self.augmentation, self.seed = size, augmentation, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.order = np.random.default_rng([self.seed, epoch]).permutation(len(self.split))

    def __getitem__(self, position: int) -> tuple[Image.Image, dict]:
        index = int(self.order[position])
        image, target = super().__getitem__(index)
        boxes = np.asarray([a["bbox"] for a in target["annotations"]], dtype=np.float32).reshape(-1, 4)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image, boxes = augment(image, boxes, self.size, self.augmentation, rng)
        return image, coco_target(self.split[index], boxes)


@dataclass
class Collator:
    """Batches (image, target) pairs through the detector's image processor: normalise, pad to the largest image of
    the batch (with `pixel_mask`), boxes to normalised (cx, cy, w, h). Training images come already resized by
    `augment`, so the processor does not resize them again."""

    processor: BaseImageProcessor
    resize: bool

    def __call__(self, batch: Sequence[tuple[Image.Image, dict]]) -> dict[str, Any]:
        images, targets = zip(*batch)
        encoded = self.processor(
            images=list(images), annotations=list(targets), do_resize=self.resize, return_tensors="pt"
        )
        return {
            "pixel_values": encoded["pixel_values"],
            "pixel_mask": encoded["pixel_mask"],
            "labels": encoded["labels"],
        }


# ----------------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------------


def canvas_sizes(pixel_mask: torch.Tensor, original_sizes: torch.Tensor) -> torch.Tensor:
    """(B, 2) height and width of each padded canvas, in the pixels of its original image.

    The processor normalises the training boxes by the padded canvas, not by the image, so the model predicts in
    canvas coordinates: scaling predictions by the original size (what post-processing does with `target_sizes`)
    shrinks the boxes of every image smaller than the largest in its batch. Scaling by the canvas measured in
    original pixels places them right; single images (the pipeline) have no padding and both agree.
    """
    resized = torch.stack([pixel_mask.any(dim=2).sum(dim=1), pixel_mask.any(dim=1).sum(dim=1)], dim=1)  # (B, 2)
    canvas = torch.tensor(pixel_mask.shape[1:], device=pixel_mask.device)
    return canvas * original_sizes / resized


def detections_to_coco(
    predictions: list[dict[str, torch.Tensor]], image_ids: Sequence[int], categories: list[dict]
) -> list[dict]:
    """post_process_object_detection results (xyxy pixels, contiguous labels) -> COCO result records."""
    records = []
    for image_id, prediction in zip(image_ids, predictions):
        for score, label, (x0, y0, x1, y1) in zip(
            prediction["scores"].tolist(), prediction["labels"].tolist(), prediction["boxes"].tolist()
        ):
            records.append(
                {
                    "image_id": int(image_id),
                    "category_id": categories[label]["id"],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": score,
                }
            )
    return records


def coco_metrics(ground_truth: COCO, detections: list[dict]) -> dict[str, float]:
    """Box mAP (IoU 0.50:0.95), mAP@0.5, mAP@0.75, by size, recalls, and the mAP of each category (`map_<name>`).

    pycocotools' own numbers (`COCOeval.summarize`); -1 where the split has no box of that kind. No detection at
    all scores 0 rather than failing in `loadRes`.
    """
    if not detections:
        return dict.fromkeys(COCO_STATS, 0.0) | {f"map_{c['name']}": 0.0 for c in ground_truth.dataset["categories"]}
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(detections), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    metrics = {name: float(evaluator.stats[position]) for name, position in COCO_STATS.items()}
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # (IoU, recall, category); all areas, 100 detections
    for position, category_id in enumerate(evaluator.params.catIds):
        values = precision[:, :, position]
        name = ground_truth.cats[category_id]["name"]
        metrics[f"map_{name}"] = float(values[values > -1].mean()) if (values > -1).any() else -1.0
    return metrics
