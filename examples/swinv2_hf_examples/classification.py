"""What `run_classification.py` (Accelerate) and `run_classification_trainer.py` (Trainer) share, so that both scripts
train the same model on the same data with the same recipe: arguments, data, transforms, the loss, the metric, and
the Hub-ready output folder. `examples/simmim/run_simmim.py` takes its data, image checks and random crop from here
too, so that it pretrains on the images (and the split) the classifier is then fine-tuned on.

Data: a local image folder (`datasets`' imagefolder: one sub-folder per class), a dataset already in the local Hugging
Face cache (by name), or the embedded default `digits`: scikit-learn's 1,797 handwritten digits (8x8, 10 classes),
upscaled to 32x32 RGB, with a fixed stratified train/validation/test split. Nothing is downloaded.

The recipe follows the Swin fine-tuning code of microsoft/Swin-Transformer and SimMIM (MIT): AdamW with
`swinv2_hf.parameter_groups` (layer-wise learning-rate decay; no weight decay on biases, norms, `logit_scale`, the
continuous-position-bias MLP and the absolute position embeddings); warmup + cosine schedule; label smoothing;
optional mixup/cutmix (as timm's `Mixup`).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import evaluate
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from transformers import AutoImageProcessor, pipeline
from transformers.image_processing_utils import BaseImageProcessor

from swinv2_hf import (
    PRESETS,
    CardFacts,
    Preprocessing,
    SwinV2Config,
    SwinV2ForImageClassification,
    atomic_directory,
    atomic_file,
    describe_preprocessing,
    prepare_output,
    pretraining_windows,
    push_folder,
    write_model_folder,
)
from swinv2_hf_examples.runtime import InputError, as_json

EXAMPLES = Path(__file__).resolve().parents[1]
METRIC_PATH = EXAMPLES / "metrics" / "top_k_accuracy"  # evaluate.load() of a local module: no download
DEFAULT_MODEL = EXAMPLES / "image_classification" / "configs" / "swinv2_digits.json"
DIGITS = "digits"
DIGITS_SIDE = 32  # the 8x8 digits upscaled 4x: with the default model's 4 px patches, one patch per digit pixel
SPLIT_SEED = 0  # the fixed train/validation/test split (the run's --seed only shuffles and augments)
IMAGE_COLUMNS = ("image", "img")
LABEL_COLUMNS = ("label", "labels")
MODEL_FOLDER = "model"  # the Hub-ready folder inside --output_dir
RESULTS_FILE = "results.json"
CURVES_FILE = "curves.png"

# One recipe for both scripts (the Trainer script sets these as its TrainingArguments defaults): the digits main job
# trains a small SwinV2 from scratch in 1-2 minutes on two CPU cores of either kind measured (README, Fine-tune).
TRAINING_DEFAULTS: dict[str, Any] = {
    "output_dir": "outputs/digits",
    "learning_rate": 2e-3,
    "num_train_epochs": 12,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 128,
    "gradient_accumulation_steps": 1,
    "weight_decay": 0.05,
    "warmup_steps": 0.1,  # below 1: a fraction of the optimiser steps, as TrainingArguments reads it
    "max_grad_norm": 5.0,  # the Swin recipe's TRAIN.CLIP_GRAD
    "label_smoothing_factor": 0.1,
    "seed": 42,
    "dataloader_num_workers": 0,
}
# The flip and crop defaults of the original recipe, and the gentler ones digits need: a flipped digit is another
# symbol, and a crop of less than half of an 8x8 digit no longer shows which one.
AUGMENTATION_DEFAULTS = {"crop_scale_min": 0.08, "hflip_probability": 0.5}
DIGITS_AUGMENTATION = {"crop_scale_min": 0.5, "hflip_probability": 0.0}
CROP_RATIO = (3 / 4, 4 / 3)  # torchvision's RandomResizedCrop aspect-ratio range
# Layer-wise decay when fine-tuning pretrained weights (SimMIM's fine-tuning configs for SwinV2 use 0.9 down to 0.75
# with depth); from scratch every layer learns at the full rate.
PRETRAINED_LAYER_DECAY = 0.9


# ----------------------------------------------------------------------------------------------------------------------
# Arguments shared by both scripts (the Trainer's own TrainingArguments cover the loop of the Trainer script)
# ----------------------------------------------------------------------------------------------------------------------


def argument(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field that HfArgumentParser turns into a flag with this default and help."""
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class DataArguments:
    """Where the images come from and how they are augmented."""

    dataset_name: str = argument(
        DIGITS,
        "'digits' (embedded: scikit-learn's handwritten digits, nothing to download) or the name of a dataset already "
        "in the local Hugging Face cache. Ignored with --train_dir.",
    )
    train_dir: str | None = argument(None, "A folder of training images, one sub-folder per class (imagefolder).")
    validation_dir: str | None = argument(None, "Validation images like --train_dir; default: cut from train.")
    test_dir: str | None = argument(None, "Test images like --train_dir; default: cut from train.")
    image_column_name: str | None = argument(None, "The image column; default: 'image' or 'img'.")
    label_column_name: str | None = argument(None, "The label column; default: 'label' or 'labels'.")
    validation_split_fraction: float = argument(0.1, "Fraction of train cut off (stratified) if no validation.")
    test_split_fraction: float = argument(0.2, "Fraction of train cut off (stratified) if there is no test split.")
    max_train_samples: int | None = argument(None, "Train on this many examples (a fixed random subset).")
    max_eval_samples: int | None = argument(None, "Validate and test on at most this many examples each.")
    crop_scale_min: float | None = argument(
        None, "Smallest area fraction of the random resized crop; default 0.08 (the Swin recipe), 0.5 for digits."
    )
    hflip_probability: float | None = argument(None, "Probability of a horizontal flip; default 0.5, 0 for digits.")
    mixup_alpha: float = argument(0.0, "Mixup's Beta(alpha, alpha); 0 disables it.")
    cutmix_alpha: float = argument(0.0, "CutMix's Beta(alpha, alpha); 0 disables it. With mixup: either, at even odds.")
    dataset_cache_dir: str | None = argument(None, "The datasets cache (cached datasets, image folders' arrow files).")

    def __post_init__(self) -> None:
        for name in ("train_dir", "validation_dir", "test_dir"):
            folder = getattr(self, name)
            if folder is not None and not Path(folder).is_dir():
                raise InputError(f"--{name} {folder} is not a folder. Give a folder with one sub-folder per class.")
        if (self.validation_dir or self.test_dir) and not self.train_dir:
            raise InputError("--validation_dir/--test_dir need --train_dir (the classes come from the train folder).")
        for name in ("validation_split_fraction", "test_split_fraction"):
            if not 0 < getattr(self, name) < 0.5:
                raise InputError(f"--{name} must be in (0, 0.5), got {getattr(self, name)}.")
        for name in ("max_train_samples", "max_eval_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InputError(f"--{name} must be a positive number of examples, got {getattr(self, name)}.")
        defaults = DIGITS_AUGMENTATION if self.is_digits else AUGMENTATION_DEFAULTS
        for name, default in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, default)
        if not 0 < self.crop_scale_min <= 1:
            raise InputError(f"--crop_scale_min is an area fraction in (0, 1], got {self.crop_scale_min}.")
        if not 0 <= self.hflip_probability <= 1:
            raise InputError(f"--hflip_probability must be in [0, 1], got {self.hflip_probability}.")
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise InputError("--mixup_alpha and --cutmix_alpha must be >= 0 (0 disables them).")

    @property
    def is_digits(self) -> bool:
        return self.train_dir is None and self.dataset_name == DIGITS

    @property
    def dataset_label(self) -> str:
        """The dataset's name in the results and the model card."""
        return Path(self.train_dir).name if self.train_dir else self.dataset_name


@dataclass
class ModelArguments:
    """Which model to train, at which resolution and window."""

    model_name_or_path: str = argument(
        str(DEFAULT_MODEL),
        "A swinv2_hf model folder (save_pretrained or `swinv2-hf convert`: fine-tuned from its weights), a preset name "
        "(swinv2_hf.PRESETS) or a SwinV2Config JSON file (both trained from scratch). Default: configs/ digits config.",
    )
    image_size: int | None = argument(None, "Train at this resolution (transfer to another); default: the config's.")
    window_size: int | None = argument(
        None, "Attention window; a pretrained position bias transfers from the windows it was trained with (eq. 4)."
    )
    drop_path_rate: float | None = argument(None, "Stochastic depth; default: the config's.")
    layer_decay: float | None = argument(
        None,
        f"Layer-wise learning-rate decay: a block d blocks below the head learns at layer_decay**d of the rate. "
        f"Default: {PRETRAINED_LAYER_DECAY} when fine-tuning pretrained weights, 1 (none) from scratch.",
    )

    def __post_init__(self) -> None:
        for name in ("image_size", "window_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InputError(f"--{name} must be a positive integer, got {getattr(self, name)}.")
        if self.drop_path_rate is not None and not 0 <= self.drop_path_rate < 1:
            raise InputError(f"--drop_path_rate is a probability in [0, 1), got {self.drop_path_rate}.")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise InputError(f"--layer_decay must be in (0, 1], got {self.layer_decay}.")

    @property
    def is_pretrained(self) -> bool:
        return Path(self.model_name_or_path).is_dir()

    @property
    def resolved_layer_decay(self) -> float:
        if self.layer_decay is not None:
            return self.layer_decay
        return PRETRAINED_LAYER_DECAY if self.is_pretrained else 1.0


@dataclass
class OutputArguments:
    """What happens to an existing output and which extras are written."""

    overwrite_output_dir: bool = argument(False, "Replace an earlier run's model folder and checkpoints.")
    plot: bool = argument(False, "Also write curves.png: loss and accuracy curves.")


# ----------------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class ImageData:
    """The splits, with images left encoded (decoded by `ImageExamples`, which names a file it cannot read)."""

    splits: datasets.DatasetDict  # train, validation, test
    image_column: str
    label_column: str
    labels: list[str]

    def sizes(self) -> dict[str, int]:
        return {name: len(split) for name, split in self.splits.items()}


def digits_dataset() -> datasets.Dataset:
    """scikit-learn's digits (ink 0..16 on 8x8) as 32x32 RGB images, white ink on black."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)  # (N, 8, 8)
    images = [
        Image.fromarray(image).resize((DIGITS_SIDE, DIGITS_SIDE), Image.Resampling.BICUBIC).convert("RGB")
        for image in pixels
    ]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(d) for d in range(10)])}
    )
    return datasets.Dataset.from_dict({"image": images, "label": digits.target.tolist()}, features=features)


def class_folders(folder: str) -> list[str]:
    return sorted(path.name for path in Path(folder).iterdir() if path.is_dir())


def load_image_folders(args: DataArguments) -> datasets.DatasetDict:
    """imagefolder over --train_dir (and --validation_dir/--test_dir): labels are the sub-folder names."""
    classes = class_folders(args.train_dir)
    if len(classes) < 2:
        raise InputError(
            f"--train_dir {args.train_dir} holds {len(classes)} class folder(s) {classes}: imagefolder takes each "
            f"sub-folder as one class and classification needs at least 2. Put each class's images in its own "
            f"sub-folder: {args.train_dir}/<class name>/<image>."
        )
    for name in ("validation_dir", "test_dir"):
        folder = getattr(args, name)
        if folder is not None and not set(class_folders(folder)) <= set(classes):
            extra = sorted(set(class_folders(folder)) - set(classes))
            raise InputError(
                f"--{name} {folder} has classes {extra} that --train_dir lacks: the head could not predict them. "
                "Remove them or add training images of those classes."
            )
    data_files = {"train": f"{args.train_dir}/**"}
    for split, folder in (("validation", args.validation_dir), ("test", args.test_dir)):
        if folder is not None:
            data_files[split] = f"{folder}/**"
    splits = datasets.load_dataset("imagefolder", data_files=data_files, cache_dir=args.dataset_cache_dir)
    # imagefolder numbers the classes of each split's own folders; renumber by the train folder's classes.
    return datasets.DatasetDict(
        {
            name: split.cast_column("label", datasets.ClassLabel(names=classes)) if name != "train" else split
            for name, split in splits.items()
        }
    )


def load_cached_dataset(args: DataArguments) -> datasets.DatasetDict:
    try:
        return datasets.load_dataset(args.dataset_name, cache_dir=args.dataset_cache_dir)
    except (FileNotFoundError, ConnectionError) as error:
        raise InputError(
            f"Dataset {args.dataset_name!r} is not in the local Hugging Face cache and cannot be downloaded here "
            f"({type(error).__name__}). Use --dataset_name digits (embedded), --train_dir with an image folder, or "
            "load the dataset once where the Hub is reachable (then HF_HUB_OFFLINE=1 reads it from the cache)."
        ) from error


def find_column(split: datasets.Dataset, requested: str | None, candidates: Sequence[str], what: str) -> str:
    if requested is not None:
        if requested not in split.column_names:
            raise InputError(f"--{what}_column_name {requested!r} is not a column; columns: {split.column_names}.")
        return requested
    for name in candidates:
        if name in split.column_names:
            return name
    raise InputError(
        f"Found no {what} column among {split.column_names} (looked for {list(candidates)}); name it with "
        f"--{what}_column_name."
    )


def class_names(split: datasets.Dataset, label_column: str) -> list[str]:
    """Names from a ClassLabel feature, or "0".."K-1" for integer labels."""
    feature = split.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    values = split.unique(label_column)
    if not all(isinstance(value, int) for value in values):
        raise InputError(f"Label column {label_column!r} holds {feature}; it must hold class indices (ClassLabel).")
    return [str(index) for index in range(max(values) + 1)]


def stratified_split(split: datasets.Dataset, fraction: float, label_column: str, what: str) -> datasets.DatasetDict:
    """Cut `fraction` of `split` off with every class in the same proportion; fails clearly on too few images."""
    counts = np.bincount(split[label_column])
    size = math.ceil(fraction * len(split))
    if counts.min() < 2 or size < len(counts) or len(split) - size < len(counts):
        sparse = {index: int(count) for index, count in enumerate(counts) if count < 2}
        raise InputError(
            f"Cannot cut a stratified {what} split ({fraction:.0%}) from {len(split)} training images of "
            f"{len(counts)} classes (classes with fewer than 2 images: {sparse or 'none'}). Add images, raise "
            f"--{what}_split_fraction, or give the split as a folder (--{what}_dir)."
        )
    return split.train_test_split(test_size=size, stratify_by_column=label_column, seed=SPLIT_SEED)


def complete_splits(splits: datasets.DatasetDict, args: DataArguments, label_column: str) -> datasets.DatasetDict:
    """train/validation/test, cutting the missing ones off train (test first, so it never depends on validation)."""
    if "train" not in splits:
        raise InputError(f"The dataset has no 'train' split (splits: {list(splits)}).")
    train = splits["train"]
    validation = splits.get("validation", splits.get("valid", splits.get("val")))
    test = splits.get("test")
    if test is None:
        cut = stratified_split(train, args.test_split_fraction, label_column, "test")
        train, test = cut["train"], cut["test"]
    if validation is None:
        fraction = args.validation_split_fraction / (1 - args.test_split_fraction if "test" not in splits else 1)
        cut = stratified_split(train, fraction, label_column, "validation")
        train, validation = cut["train"], cut["test"]
    return datasets.DatasetDict({"train": train, "validation": validation, "test": test})


def subset(split: datasets.Dataset, count: int | None) -> datasets.Dataset:
    """A fixed random subset (image folders are sorted by class, so the first rows would be one class)."""
    if count is None or count >= len(split):
        return split
    return split.shuffle(seed=SPLIT_SEED).select(range(count))


def check_labels(splits: datasets.DatasetDict, label_column: str, labels: list[str]) -> None:
    if len(labels) < 2:
        raise InputError(f"The dataset has {len(labels)} class ({labels}); classification needs at least 2.")
    for name, split in splits.items():
        values = np.asarray(split[label_column])
        outside = sorted(set(values[(values < 0) | (values >= len(labels))].tolist()))
        if outside:
            unlabelled = " (-1 marks unlabelled examples in Hugging Face datasets)" if -1 in outside else ""
            raise InputError(
                f"The {name} split has labels {outside} outside the head's range [0, {len(labels) - 1}] "
                f"({len(labels)} classes: {labels[:5]}{'...' if len(labels) > 5 else ''}){unlabelled}. Give that "
                f"split labelled images of the training classes, or leave it out so that it is cut from train."
            )


def describe_image(value: dict[str, Any]) -> str:
    return value.get("path") or "an embedded image"


def open_image(value: dict[str, Any]) -> Image.Image:
    """An undecoded `datasets.Image` value as an RGB image; a file that is no image is an InputError naming it."""
    try:
        with Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise InputError(
            f"{describe_image(value)} cannot be read as an image ({error}). Remove or replace the file."
        ) from error


def check_images(values: Iterable[dict[str, Any]]) -> None:
    """Read every file's structure once (PIL's verify: headers and checksums, no decoding), so that a corrupt image
    stops the run before it writes anything rather than in the middle of an epoch. `values` are undecoded
    `datasets.Image` values."""
    for value in values:
        try:
            with Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]) as image:
                image.verify()
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise InputError(
                f"{describe_image(value)} is not a readable image ({error}). Remove or replace the file, then run "
                "again."
            ) from error


def load_data(args: DataArguments) -> ImageData:
    """The train/validation/test splits of the requested source, checked: classes, labels and every image."""
    if args.train_dir:
        splits = load_image_folders(args)
    elif args.is_digits:
        splits = datasets.DatasetDict({"train": digits_dataset()})
    else:
        splits = load_cached_dataset(args)
    train = splits.get("train")
    if train is None:
        raise InputError(f"The dataset has no 'train' split (splits: {list(splits)}).")
    image_column = find_column(train, args.image_column_name, IMAGE_COLUMNS, "image")
    if args.train_dir and "label" not in train.column_names:
        raise InputError(f"imagefolder found no classes under {args.train_dir}: put each class in its own sub-folder.")
    label_column = find_column(train, args.label_column_name, LABEL_COLUMNS, "label")
    labels = class_names(train, label_column)
    splits = datasets.DatasetDict(
        {name: split.cast_column(image_column, datasets.Image(decode=False)) for name, split in splits.items()}
    )
    check_labels(splits, label_column, labels)
    splits = complete_splits(splits, args, label_column)
    splits = datasets.DatasetDict(
        {
            "train": subset(splits["train"], args.max_train_samples),
            "validation": subset(splits["validation"], args.max_eval_samples),
            "test": subset(splits["test"], args.max_eval_samples),
        }
    )
    for split in splits.values():
        check_images(split[image_column])
    return ImageData(splits, image_column, label_column, labels)


# ----------------------------------------------------------------------------------------------------------------------
# Transforms (no torchvision): random resized crop + flip for training, the image processor for evaluation
# ----------------------------------------------------------------------------------------------------------------------


def random_resized_crop_box(
    width: int, height: int, scale: tuple[float, float], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a crop covering `scale` of the area with an aspect ratio in `CROP_RATIO`,
    sampled as torchvision's RandomResizedCrop (10 tries, then the largest centred crop within the ratio range)."""
    area = width * height
    log_ratio = np.log(CROP_RATIO)
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        ratio = math.exp(rng.uniform(*log_ratio))
        crop_width = round(math.sqrt(target_area * ratio))
        crop_height = round(math.sqrt(target_area / ratio))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            left = int(rng.integers(0, width - crop_width + 1))
            top = int(rng.integers(0, height - crop_height + 1))
            return left, top, left + crop_width, top + crop_height
    ratio = min(max(width / height, CROP_RATIO[0]), CROP_RATIO[1])
    if width / height < ratio:
        crop_width, crop_height = width, round(width / ratio)
    else:
        crop_width, crop_height = round(height * ratio), height
    left, top = (width - crop_width) // 2, (height - crop_height) // 2
    return left, top, left + crop_width, top + crop_height


def normalize(image: Image.Image, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(3, H, W) float pixels, (x / 255 - mean) / std per channel."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)  # (3, H, W)
    return (pixels - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)


@dataclass
class TrainTransform:
    """Random resized crop to the processor's size (its resampling and statistics), then an optional flip."""

    size: tuple[int, int]  # (height, width)
    crop_scale_min: float
    hflip_probability: float
    resample: Image.Resampling
    mean: Sequence[float]
    std: Sequence[float]

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        box = random_resized_crop_box(*image.size, (self.crop_scale_min, 1.0), rng)
        image = image.resize(self.size[::-1], self.resample, box=box)
        if rng.random() < self.hflip_probability:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return normalize(image, self.mean, self.std)


@dataclass
class EvalTransform:
    """The saved image processor itself, so that evaluation sees what `pipeline(...)` will see."""

    processor: BaseImageProcessor

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        return self.processor(image, return_tensors="pt").pixel_values[0]


def train_transform(processor: BaseImageProcessor, config: SwinV2Config, args: DataArguments) -> TrainTransform:
    return TrainTransform(
        size=config.image_height_width,
        crop_scale_min=args.crop_scale_min,
        hflip_probability=args.hflip_probability,
        resample=Image.Resampling(processor.resample),
        mean=processor.image_mean,
        std=processor.image_std,
    )


class ImageExamples(torch.utils.data.Dataset):
    """`{"pixel_values", "labels"}` examples of one split.

    The random transform of example i in epoch e draws from a generator seeded with (seed, e, i) and nothing else,
    so a run resumed mid-epoch, or one with any number of data-loader workers, sees exactly the augmentations of an
    uninterrupted run. The training loop calls `set_epoch` before each epoch.
    """

    def __init__(self, data: ImageData, split: str, transform: Callable, seed: int) -> None:
        self.split = data.splits[split]
        self.image_column, self.label_column = data.image_column, data.label_column
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.split[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return {
            "pixel_values": self.transform(open_image(example[self.image_column]), rng),
            "labels": example[self.label_column],
        }


def collate(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "labels": torch.tensor([example["labels"] for example in examples], dtype=torch.long),
    }


# ----------------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------------


def check_resolution(config: SwinV2Config) -> None:
    """The original's grid rule: every patch merging halves an even map, and each stage's map is either a whole
    number of windows or at most one window. The model would pad other sizes; for training that only wastes compute
    and differs from the released models, so it is refused with the nearest sizes that fit."""

    def problem(side: int) -> str | None:
        stride = config.patch_size * 2 ** (config.num_layers - 1)
        if side % stride:
            return f"{side} is not a multiple of patch_size x 2**(stages - 1) = {stride}"
        for stage in range(config.num_layers):
            grid = side // config.patch_size // 2**stage
            if grid > config.window_size and grid % config.window_size:
                return f"stage {stage + 1}'s {grid}x{grid} map is not a whole number of {config.window_size}-windows"
        return None

    for side in set(config.image_height_width):
        why = problem(side)
        if why is not None:
            fitting = [s for s in range(config.patch_size, 4 * side + 1, config.patch_size) if problem(s) is None]
            nearest = [max((s for s in fitting if s < side), default=None), min(s for s in fitting if s > side)]
            raise InputError(
                f"image_size {side} does not fit this model's patch/window grid: {why}. Choose --image_size "
                f"{' or '.join(str(s) for s in nearest if s)} (or another --window_size)."
            )


def transfer_overrides(saved: SwinV2Config, args: ModelArguments) -> dict[str, Any]:
    """Config overrides for training a saved model at another resolution or window: the position-bias MLPs are
    reused, with coordinates normalised by the windows the weights were trained with (paper eq. 4;
    `swinv2_hf.pretraining_windows`)."""
    overrides: dict[str, Any] = {}
    if args.image_size is not None:
        overrides["image_size"] = args.image_size
    if args.window_size is not None and args.window_size != saved.window_size:
        overrides["window_size"] = args.window_size
        overrides["pretrained_window_sizes"] = list(pretraining_windows(saved))
    return overrides


def saved_preprocessing(folder: str) -> Preprocessing:
    """Statistics, resampling and crop of a model folder's saved image processor (ImageNet's when it has none)."""
    if not (Path(folder) / "preprocessor_config.json").is_file():
        return Preprocessing()
    processor = AutoImageProcessor.from_pretrained(folder)
    return Preprocessing(
        crop_fraction=getattr(processor, "crop_pct", None) or 1.0,
        resample=Image.Resampling(processor.resample).name.lower(),
        mean=tuple(processor.image_mean),
        std=tuple(processor.image_std),
    )


def read_saved_config(folder: str) -> SwinV2Config:
    config_file = Path(folder) / "config.json"
    model_type = json.loads(config_file.read_text()).get("model_type") if config_file.is_file() else None
    if model_type != SwinV2Config.model_type:
        raise InputError(
            f"{folder} is not a swinv2_hf model folder (config.json model_type: {model_type!r}). Convert original, "
            f"timm or transformers checkpoints first: swinv2-hf convert --source ... --output-dir DIR."
        )
    return SwinV2Config.from_pretrained(folder)


def load_model(
    args: ModelArguments, labels: list[str], data: DataArguments
) -> tuple[SwinV2ForImageClassification, Preprocessing]:
    """The model to train with a head for `labels`, and the evaluation preprocessing to save beside it."""
    # num_labels follows from id2label (passing both makes transformers warn that they disagree with the saved map).
    head = {"id2label": dict(enumerate(labels)), "label2id": {name: index for index, name in enumerate(labels)}}
    if args.drop_path_rate is not None:
        head["drop_path_rate"] = args.drop_path_rate
    source = args.model_name_or_path
    if args.is_pretrained:
        saved = read_saved_config(source)
        config = SwinV2Config.from_pretrained(source, **transfer_overrides(saved, args), **head)
        check_resolution(config)
        preprocessing = saved_preprocessing(source)
        # A new head when the classes differ; the flag only when needed, since swinv2_hf's from_pretrained passes
        # ignore_mismatched_sizes itself otherwise (and then raises on any other mismatch, naming the tensors).
        new_head = {"ignore_mismatched_sizes": True} if saved.num_labels != len(labels) else {}
        model, info = SwinV2ForImageClassification.from_pretrained(
            source, config=config, output_loading_info=True, **new_head
        )
        unexpected = [key for key, *_ in info["mismatched_keys"] if not key.startswith("classifier.")]
        if unexpected:
            raise InputError(
                f"{source} does not fit the requested config beyond the head: {unexpected[:4]}. Drop "
                "--image_size/--window_size or convert the checkpoint at the wanted size."
            )
        return model, preprocessing
    if source in PRESETS or source.split(".", 1)[0] in PRESETS:
        config = SwinV2Config.from_preset(source, **head)
    elif source.endswith(".json") and Path(source).is_file():
        config = SwinV2Config.from_dict({**SwinV2Config.from_json_file(source).to_dict(), **head})
    else:
        raise InputError(
            f"--model_name_or_path {source!r} is neither a model folder, a preset ({', '.join(sorted(PRESETS))}) "
            "nor a SwinV2Config JSON file."
        )
    for name in ("image_size", "window_size"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    check_resolution(config)
    # A digit fills its image: nothing to crop away. Other images get the original's evaluation crop.
    return SwinV2ForImageClassification(config), Preprocessing(crop_fraction=1.0) if data.is_digits else Preprocessing()


# ----------------------------------------------------------------------------------------------------------------------
# Optimisation: layer-wise decay groups, loss, mixup/cutmix, warmup
# ----------------------------------------------------------------------------------------------------------------------


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Cross-entropy on class indices (with label smoothing) or on mixed soft targets (smoothed when mixed)."""
    if targets.ndim == 2:
        return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)


@dataclass
class BatchMixer:
    """Mixup or CutMix of a batch with its reverse, with smoothed soft targets (timm's `Mixup`, mode "batch").

    Each call draws from a generator seeded with (seed, key), so a resumed run mixes the same way."""

    mixup_alpha: float
    cutmix_alpha: float
    label_smoothing: float
    num_labels: int
    seed: int

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def __call__(self, pixel_values: torch.Tensor, labels: torch.Tensor, key: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, key])
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or rng.random() < 0.5)
        lam = float(rng.beta(*(2 * [self.cutmix_alpha if use_cutmix else self.mixup_alpha])))
        flipped = pixel_values.flip(0)
        if use_cutmix:
            height, width = pixel_values.shape[-2:]
            cut_h, cut_w = int(height * math.sqrt(1 - lam)), int(width * math.sqrt(1 - lam))
            top, left = int(rng.integers(0, height - cut_h + 1)), int(rng.integers(0, width - cut_w + 1))
            box = (..., slice(top, top + cut_h), slice(left, left + cut_w))
            pixel_values = pixel_values.clone()
            pixel_values[box] = flipped[box]
            lam = 1 - cut_h * cut_w / (height * width)  # the area actually pasted
        else:
            pixel_values = lam * pixel_values + (1 - lam) * flipped
        off_value = self.label_smoothing / self.num_labels
        targets = F.one_hot(labels, self.num_labels).float() * (1 - self.label_smoothing) + off_value
        return pixel_values, lam * targets + (1 - lam) * targets.flip(0)


def mixer_for(args: DataArguments, label_smoothing: float, num_labels: int, seed: int) -> BatchMixer:
    return BatchMixer(args.mixup_alpha, args.cutmix_alpha, label_smoothing, num_labels, seed)


# ----------------------------------------------------------------------------------------------------------------------
# Metric, outputs
# ----------------------------------------------------------------------------------------------------------------------


def top_k_for(num_labels: int) -> list[int]:
    """Top-1, and top-5 when there are more than 5 classes (otherwise it is 1 by definition)."""
    return [1, 5] if num_labels > 5 else [1]


def load_metric() -> evaluate.EvaluationModule:
    """The repository's top-k accuracy module, in memory (processes of a distributed run share no cache files)."""
    return evaluate.load(str(METRIC_PATH), keep_in_memory=True)


# The config fields that fix the weights' shapes and meaning, and the resolution trained at.
ARCHITECTURE_FIELDS = (
    "image_size",
    "patch_size",
    "num_channels",
    "embed_dim",
    "depths",
    "num_heads",
    "window_size",
    "pretrained_window_sizes",
    "mlp_ratio",
    "qkv_bias",
    "use_absolute_embeddings",
    "extra_norm_period",
    "cpb_mlp_hidden_size",
    "encoder_stride",
    "num_labels",
    "id2label",
)


def architecture(config: SwinV2Config) -> dict[str, Any]:
    """The config fields a checkpoint's weights must match (JSON-like: what config.json stores)."""
    return as_json({name: getattr(config, name) for name in ARCHITECTURE_FIELDS})


def push_target(push_to_hub: bool, hub_model_id: str | None) -> str | None:
    if push_to_hub and not hub_model_id:
        raise InputError("--push_to_hub needs --hub_model_id user/name (the repository to create or update).")
    return hub_model_id if push_to_hub else None


def run_inputs(data: DataArguments, model: ModelArguments, resume_from_checkpoint: str | None) -> list[str]:
    """The local paths a run reads, which its outputs may never replace: the model folder or config file, the image
    folders, the datasets cache and the checkpoint to resume (presets, cached dataset names and 'latest' are not
    paths; 'latest' lies in the run's checkpoints, beside the model folder)."""
    named = (
        model.model_name_or_path,
        data.train_dir,
        data.validation_dir,
        data.test_dir,
        data.dataset_cache_dir,
        resume_from_checkpoint,
    )
    return [path for path in named if path is not None and Path(path).exists()]


# Arguments that only make sense above zero, in both scripts (a batch of 0 fails deep inside a data loader).
POSITIVE_ARGUMENTS = (
    "learning_rate",
    "num_train_epochs",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "gradient_accumulation_steps",
)


def require_positive(arguments: Any) -> None:
    """Refuse a non-positive value of any of `POSITIVE_ARGUMENTS` in one line."""
    for name in POSITIVE_ARGUMENTS:
        if getattr(arguments, name) <= 0:
            raise InputError(f"--{name} must be positive, got {getattr(arguments, name)}.")


def refuse_existing_output(output_dir: Path, overwrite: bool, inputs: Sequence[str]) -> None:
    """Refuse, before any work, a model folder that `write_outputs` would refuse at the end (`prepare_output`): a
    finished run's without --overwrite_output_dir, one that swinv2_hf did not write, or one holding an input."""
    try:
        prepare_output(output_dir / MODEL_FOLDER, overwrite, inputs, overwrite_flag="--overwrite_output_dir")
    except FileExistsError as error:
        raise InputError(str(error)) from None


@dataclass
class RunSummary:
    """What a finished run reports: the results JSON, the curves and the model card are made from it."""

    script: str
    dataset: str
    split_sizes: dict[str, int]
    test_metrics: dict[str, float]  # e.g. {"top1_accuracy": 0.97, "top5_accuracy": 1.0, "loss": 0.2}
    train_losses: list[tuple[int, float]]  # (optimiser step, loss)
    evaluations: list[dict[str, float]]  # per epoch: epoch, step, loss, top1_accuracy, ...
    train_seconds: float
    hyperparameters: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "script": self.script,
            "dataset": self.dataset,
            "split_sizes": self.split_sizes,
            **{f"test_{name}": value for name, value in self.test_metrics.items()},
            "train_seconds": round(self.train_seconds, 1),
            "evaluations": self.evaluations,
            "train_losses": [list(item) for item in self.train_losses],
            "hyperparameters": self.hyperparameters,
        }


def card_facts(summary: RunSummary, repo_id: str, preprocessing: str) -> CardFacts:
    results = {
        f"top-{k} accuracy": round(100 * summary.test_metrics[f"top{k}_accuracy"], 2)
        for k in (1, 5)
        if f"top{k}_accuracy" in summary.test_metrics
    }
    return CardFacts(
        repo_id=repo_id,
        model_name=repo_id.rsplit("/", 1)[-1],
        preprocessing=preprocessing,
        results=results,
        dataset=summary.dataset,
        extra_tags=[Path(summary.script).stem],
    )


def training_section(summary: RunSummary) -> str:
    """The card's account of how the weights were trained and what they measured."""
    reported = [k for k in (1, 5) if f"top{k}_accuracy" in summary.test_metrics]
    sizes = ", ".join(f"{name} {size:,}" for name, size in summary.split_sizes.items())
    settings = ", ".join(f"{name} {value}" for name, value in summary.hyperparameters.items())
    header = " | ".join(f"top-{k}" for k in reported)
    values = " | ".join(f"{100 * summary.test_metrics[f'top{k}_accuracy']:.2f}%" for k in reported)
    return (
        f"## Training and results\n\nTrained with `{summary.script}` (swinv2_hf examples) on {summary.dataset} "
        f"({sizes} images) in {summary.train_seconds / 60:.1f} min. Settings: {settings}.\n\n"
        f"Test split, measured at the end of training:\n\n| {header} |\n|{'---|' * len(reported)}\n| {values} |\n\n"
    )


def write_outputs(
    output_dir: Path,
    model: SwinV2ForImageClassification,
    processor: BaseImageProcessor,
    summary: RunSummary,
    preprocessing: Preprocessing,
    repo_id: str | None,
    output_args: OutputArguments,
    inputs: Sequence[str],
) -> Path:
    """The Hub-ready model folder (weights, config with the complete auto_map, code, image processor, a model card
    with the measured results), the results JSON and optionally the curves, each written whole or not at all and
    none over one of the run's `inputs`."""
    model_dir = output_dir / MODEL_FOLDER
    preprocessing_text = describe_preprocessing(model.config, preprocessing)
    facts = card_facts(summary, repo_id or f"{output_dir.name}-swinv2", preprocessing_text)
    with atomic_directory(model_dir, output_args.overwrite_output_dir, inputs, "--overwrite_output_dir") as folder:
        write_model_folder(folder, model, processor, facts)
        before, citation, after = (folder / "README.md").read_text().partition("## Citation")
        (folder / "README.md").write_text(before + training_section(summary) + citation + after)
    with atomic_file(output_dir / RESULTS_FILE, overwrite=True, inputs=inputs) as temporary:
        temporary.write_text(json.dumps(summary.as_json(), indent=2) + "\n")
    if output_args.plot:
        with atomic_file(output_dir / CURVES_FILE, overwrite=True, inputs=inputs) as temporary:
            plot_curves(summary, temporary)
    return model_dir


def finish(summary: RunSummary, model_dir: Path, data: ImageData, push_to: str | None) -> None:
    """Report the results, push the folder if asked, and classify a held-out test image through a pipeline built
    from the written folder (what a user of the published model runs)."""
    metrics = ", ".join(f"{name} {value:.4f}" for name, value in summary.test_metrics.items())
    print(f"test: {metrics} ({summary.split_sizes['test']} images); training took {summary.train_seconds:.0f} s")
    print(f"wrote {model_dir} (Hub-ready), {model_dir.parent / RESULTS_FILE}")
    if push_to is not None:
        print(f"pushed to {push_folder(model_dir, push_to, commit_message=f'Train with {summary.script}')}")
    example = data.splits["test"][0]
    classifier = pipeline("image-classification", model=str(model_dir))
    best = classifier(open_image(example[data.image_column]), top_k=1)[0]
    true_label = data.labels[example[data.label_column]]
    print(
        f"pipeline('image-classification') on held-out test image 0: predicted {best['label']!r} "
        f"(score {best['score']:.3f}), true label {true_label!r}"
    )


def plot_curves(summary: RunSummary, path: Path) -> None:
    """Training loss per step and validation accuracy per epoch, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    steps, losses = zip(*summary.train_losses) if summary.train_losses else ((), ())
    loss_axes.plot(steps, losses, label="train", linewidth=0.8)
    loss_axes.plot(
        [e["step"] for e in summary.evaluations], [e["loss"] for e in summary.evaluations], "o-", label="validation"
    )
    loss_axes.set(xlabel="optimiser step", ylabel="loss", title="loss")
    loss_axes.legend()
    for k in (1, 5):
        values = [e[f"top{k}_accuracy"] for e in summary.evaluations if f"top{k}_accuracy" in e]
        if values:
            accuracy_axes.plot([e["epoch"] for e in summary.evaluations][: len(values)], values, "o-", label=f"top-{k}")
    accuracy_axes.set(xlabel="epoch", ylabel="validation accuracy", title="accuracy", ylim=(0, 1.01))
    accuracy_axes.legend()
    figure.suptitle(f"{summary.script} on {summary.dataset}")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)


def hyperparameters(model: SwinV2ForImageClassification, values: dict[str, Any]) -> dict[str, Any]:
    """The settings a card and the results JSON state: the architecture and the recipe's values."""
    config = model.config
    height, width = config.image_height_width
    architecture = {
        "image_size": f"{height}x{width}",
        "patch_size": config.patch_size,
        "embed_dim": config.embed_dim,
        "depths": list(config.depths),
        "window_size": config.window_size,
    }
    return {**architecture, **values}
