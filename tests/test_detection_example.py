"""examples/object_detection: a tiny SwinV2 + Deformable DETR learns the synthetic shapes; the real-photo set runs end
to end (train, evaluate, push with a model card, pipeline, boxes drawn); a resumed run continues exactly; every kind of
bad input is reported with its file and index; the pieces (augmentations, evaluation, data) are right on their own."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from conftest import randomize_weights
from fake_hub import FakeHub, client_environ
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoImageProcessor

from swinv2_hf import SwinV2Backbone, SwinV2Config, SwinV2ForImageClassification
from swinv2_hf.atomic import MARKER
from swinv2_hf_examples.runtime import InputError

SCRIPTS = Path(__file__).resolve().parents[1] / "examples" / "object_detection"
sys.path.insert(0, str(SCRIPTS))

import coco_data  # noqa: E402
import make_photos  # noqa: E402
import make_shapes  # noqa: E402
import run_detection  # noqa: E402

_spec = importlib.util.spec_from_file_location("detection_predict", SCRIPTS / "predict.py")
predict = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(predict)

REPO_ID = "user/swinv2-photos-detector"
# README.md's convergence recipe, 400 steps from scratch at 64 px, measured mAP@0.5 0.167 on the 64 validation images
# (untrained: 0.0001). The test asks for half, for other CPUs and library versions.
MIN_SHAPES_MAP_50 = 0.08
CONVERGENCE_HEAD = {
    "d_model": 64,
    "encoder_layers": 2,
    "decoder_layers": 4,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 128,
    "decoder_ffn_dim": 128,
    "num_queries": 40,
    "dropout": 0.0,
}
CONVERGENCE_FLAGS = {
    "detector_config": json.dumps(CONVERGENCE_HEAD),
    "image_size": 64,
    "max_size": 64,
    "out_features": ["stage1", "stage2", "stage3"],
    "max_train_steps": 400,
    "per_device_train_batch_size": 8,
    "learning_rate": 2e-3,
    "backbone_learning_rate": 2e-3,
    "max_grad_norm": 1.0,
    "flip_probability": 0,
    "scale_range": [1, 1],
    "photometric_strength": 0,
}
TINY_BACKBONE = SCRIPTS / "data" / "tiny_backbone.json"  # embedding 32, depths 1-1-2-1, heads 1-2-4-8, window 4
TINY_HEAD = {
    "d_model": 64,
    "encoder_layers": 1,
    "decoder_layers": 2,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 128,
    "decoder_ffn_dim": 128,
    "num_queries": 10,
    "two_stage_num_proposals": 10,
}


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """run_detection.main creates an Accelerator; each test starts from a clean accelerate state."""
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def flag_arguments(flags: dict[str, Any]) -> list[str]:
    """{"name": value} -> ["--name", "value"]; True is a bare switch, a list gives several values."""
    arguments = []
    for name, value in flags.items():
        arguments += [f"--{name}"] + ([] if value is True else [str(v) for v in np.atleast_1d(value)])
    return arguments


def run_arguments(train: Path, validation: Path, backbone: Path, output_dir: Path, **flags: Any) -> list[str]:
    """Command-line arguments of run_detection.py: the tiny model, no workers, `flags` added."""
    arguments = [
        "--train_annotations",
        str(train),
        "--validation_annotations",
        str(validation),
        "--backbone",
        str(backbone),
        "--detector_config",
        json.dumps(TINY_HEAD),
        "--output_dir",
        str(output_dir),
        "--dataloader_num_workers",
        "0",
    ]
    return arguments + flag_arguments(flags)


def run_script(arguments: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "run_detection.py"), *arguments],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done


# ----------------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------------


def test_shapes_are_drawn_exactly_inside_their_boxes(tmp_path: Path) -> None:
    """Rectangles fill their box with one colour; ellipses touch the middle of each side of theirs and leave its
    corners. The same seed writes the same files."""
    files = make_shapes.make_shapes(tmp_path / "a", num_train=6, num_validation=2, image_size=64, seed=3)
    make_shapes.make_shapes(tmp_path / "b", num_train=6, num_validation=2, image_size=64, seed=3)
    coco = json.loads(files["train"].read_text())
    assert len(coco["annotations"]) >= len(coco["images"])
    for annotation in coco["annotations"]:
        record = next(image for image in coco["images"] if image["id"] == annotation["image_id"])
        pixels = np.asarray(Image.open(tmp_path / "a" / record["file_name"]))
        x, y, w, h = annotation["bbox"]
        box = pixels[y : y + h, x : x + w]
        colour = box[h // 2, w // 2]
        inside = (box == colour).all(axis=-1)
        if annotation["category_id"] == 1:
            assert inside.all()
        else:
            assert inside[0, w // 2] and inside[h - 1, w // 2] and inside[h // 2, 0] and inside[h // 2, w - 1]
            assert not inside[0, 0] and not inside[h - 1, w - 1]
    for path in sorted((tmp_path / "a").rglob("*.*")):
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()


def test_photos_materialise_with_boxes_inside_every_image(tmp_path: Path) -> None:
    annotation_file = make_photos.make_photos(tmp_path)
    split = coco_data.read_coco(annotation_file, bad_input="error")
    assert len(split.dataset) == 7 and not split.problems
    assert sum(len(row["bbox"]) for row in split.dataset["objects"]) == 34
    used = {label for row in split.dataset["objects"] for label in row["label"]}
    assert used == set(range(len(split.categories)))


def write_dataset(folder: Path, annotations: list[dict], images: int = 3, width: int = 64, height: int = 48) -> Path:
    """`images` random PNGs and an instances file with these annotations (categories 1 'a' and 2 'b')."""
    rng = np.random.default_rng(0)
    records = []
    for image_id in range(1, images + 1):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / f"{image_id}.png")
        records.append({"id": image_id, "file_name": f"{image_id}.png", "width": width, "height": height})
    annotation_file = folder / "instances.json"
    coco = {
        "images": records,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    annotation_file.write_text(json.dumps(coco))
    return annotation_file


def box(index: int, image_id: int, bbox: list[float], category_id: int = 1) -> dict:
    return {"id": 100 + index, "image_id": image_id, "category_id": category_id, "bbox": bbox}


GOOD = [box(0, 1, [4, 4, 20, 10]), box(1, 2, [10, 5, 30, 40], 2), box(2, 3, [0, 0, 64, 48])]
INDEX_3 = "annotations[3] (id 103)"
BAD_INPUTS = {  # name -> (annotations, damage to image 2 or None, the record reported, words of the message)
    "box outside the image": ([*GOOD, box(3, 2, [50, 10, 20, 10])], None, INDEX_3, "outside the 64x48 image"),
    "zero-area box": ([*GOOD, box(3, 1, [5, 5, 0, 8])], None, INDEX_3, "zero area"),
    "unknown category": ([*GOOD, box(3, 3, [5, 5, 8, 8], category_id=7)], None, INDEX_3, "category_id 7"),
    "unknown image": ([box(0, 9, [5, 5, 8, 8]), *GOOD], None, "annotations[0] (id 100)", "image_id 9"),
    "undecodable image": (GOOD, b"\x89PNG\r\n\x1a\n not really", "images[1] (id 2)", "cannot be decoded"),
    "truncated image": (GOOD, "truncate", "images[1] (id 2)", "cannot be decoded"),
}


def damage(path: Path, how: bytes | str) -> None:
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2] if how == "truncate" else how)


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_each_bad_input_is_reported_with_its_file_and_index(kind: str, tmp_path: Path) -> None:
    annotations, damaged, where, words = BAD_INPUTS[kind]
    annotation_file = write_dataset(tmp_path, annotations)
    if damaged is not None:
        damage(tmp_path / "2.png", damaged)
    expected_file = tmp_path / "2.png" if damaged is not None else annotation_file

    logged: list[str] = []
    split = coco_data.read_coco(annotation_file, bad_input="skip", log=logged.append)
    assert [(p.file, p.where) for p in split.problems] == [(expected_file, where)]
    assert words in split.problems[0].message
    assert logged == [f"skipped: {split.problems[0]}"]
    kept_ids = [i for row in split.dataset["objects"] for i in row["id"]]
    expected_ids = [100, 101, 102] if damaged is None else [100, 102]  # an undecodable image takes its box with it
    assert kept_ids == expected_ids

    with pytest.raises(coco_data.DatasetError) as refused:
        coco_data.read_coco(annotation_file, bad_input="error")
    assert f"{expected_file}: {where}: " in str(refused.value) and words in str(refused.value)


def test_an_empty_annotation_list_is_refused_with_its_file(tmp_path: Path) -> None:
    annotation_file = write_dataset(tmp_path, [])
    with pytest.raises(coco_data.DatasetError, match="'annotations' is empty") as refused:
        coco_data.read_coco(annotation_file, bad_input="skip")
    assert str(annotation_file) in str(refused.value)


def test_validation_split_with_other_categories_is_refused(tmp_path: Path) -> None:
    annotation_file = write_dataset(tmp_path, GOOD)
    train = coco_data.read_coco(annotation_file)
    with pytest.raises(coco_data.DatasetError, match="differ from the training split's"):
        coco_data.read_coco(annotation_file, categories=train.categories[:1])


def test_the_script_refuses_bad_input_before_building_a_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    annotation_file = write_dataset(tmp_path, BAD_INPUTS["zero-area box"][0])
    arguments = run_arguments(
        annotation_file, annotation_file, tmp_path / "unused.json", tmp_path / "out", bad_input="error"
    )
    with pytest.raises(SystemExit, match=r"annotations\[3\] \(id 103\): bbox \[5, 5, 0, 8\] has zero area"):
        run_detection.main(arguments)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------------------------
# Augmentation, order and evaluation
# ----------------------------------------------------------------------------------------------------------------------


def white_box_image(
    width: int = 120, height: int = 80, bbox: tuple[int, int, int, int] = (10, 20, 30, 40)
) -> Image.Image:
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    x, y, w, h = bbox
    pixels[y : y + h, x : x + w] = 255
    return Image.fromarray(pixels)


def bright_extent(image: Image.Image) -> list[float]:
    """[x, y, w, h] of the pixels brighter than mid-grey: where the white box really is after a transform."""
    rows, columns = np.nonzero(np.asarray(image.convert("L")) > 127)
    return [columns.min(), rows.min(), columns.max() - columns.min() + 1, rows.max() - rows.min() + 1]


def test_flip_moves_the_box_with_the_object() -> None:
    image, boxes = coco_data.horizontal_flip(white_box_image(), np.array([[10, 20, 30, 40]], dtype=np.float32))
    assert boxes.tolist() == [[80, 20, 30, 40]]  # 120 - 10 - 30
    assert bright_extent(image) == [80, 20, 30, 40]


@pytest.mark.parametrize("seed", range(8))
def test_random_augmentation_keeps_each_box_on_its_object(seed: int) -> None:
    """Flip, scale jitter and colour jitter together: the returned box is where the white pixels are (within the
    resampling's pixel)."""
    augmentation = coco_data.Augmentation(flip_probability=0.5, scale_range=(0.5, 1.5), photometric_strength=0.3)
    size = {"shortest_edge": 64, "longest_edge": 100}
    image, boxes = coco_data.augment(
        white_box_image(),
        np.array([[10, 20, 30, 40]], dtype=np.float32),
        size,
        augmentation,
        np.random.default_rng(seed),
    )
    assert min(image.size) <= 64 * 1.5 and max(image.size) <= 100 * 1.5
    np.testing.assert_allclose(boxes[0], bright_extent(image), atol=1.0)


def test_jittered_shapes_follow_each_detectors_rule() -> None:
    detr, square = {"shortest_edge": 800, "longest_edge": 1333}, {"height": 64, "width": 64}
    assert coco_data.jittered_shape(480, 640, detr, 1.0) == (800, 1067)  # shorter side to 800
    assert coco_data.jittered_shape(300, 1200, detr, 1.0) == (333, 1333)  # longer side capped at 1333
    assert coco_data.jittered_shape(480, 640, detr, 0.5) == (400, 533)
    assert coco_data.jittered_shape(480, 640, square, 1.3) == (96, 96)  # 83.2 to the nearest multiple of 32
    assert coco_data.jittered_shape(480, 640, square, 0.2) == (32, 32)  # never below one stride


def test_training_order_and_augmentations_depend_only_on_seed_epoch_and_index(tmp_path: Path) -> None:
    files = make_shapes.make_shapes(tmp_path, num_train=8, num_validation=1, image_size=32, seed=0)
    dataset = coco_data.read_coco(files["train"]).dataset
    size, augmentation = {"shortest_edge": 32, "longest_edge": 48}, coco_data.Augmentation()
    first, second = (coco_data.TrainingImages(dataset, size, augmentation, seed=1) for _ in range(2))
    first.set_epoch(3)
    second.set_epoch(0)
    second.set_epoch(3)
    for position in range(len(dataset)):
        (image_a, target_a), (image_b, target_b) = first[position], second[position]
        assert target_a == target_b and np.array_equal(np.asarray(image_a), np.asarray(image_b))
    orders = []
    for epoch in range(3):
        first.set_epoch(epoch)
        orders.append([first[p][1]["image_id"] for p in range(len(dataset))])
    assert all(sorted(order) == sorted(orders[0]) for order in orders) and orders[0] != orders[1] != orders[2]


def test_canvas_sizes_place_boxes_of_images_padded_in_a_batch() -> None:
    """A 100x200 image resized to 50x100 and padded into an 80x100 batch: the model's [0, 1] coordinates span the
    80x100 canvas, which is 160x200 pixels of the original image; the unpadded image maps to itself."""
    pixel_mask = torch.zeros(2, 80, 100, dtype=torch.long)
    pixel_mask[0, :50, :100] = 1
    pixel_mask[1] = 1
    original = torch.tensor([[100, 200], [40, 50]])
    assert canvas(pixel_mask, original) == [[160.0, 200.0], [40.0, 50.0]]


def canvas(pixel_mask: torch.Tensor, original: torch.Tensor) -> list[list[float]]:
    return coco_data.canvas_sizes(pixel_mask, original).tolist()


def default_head_arguments(folder: Path, detector: str, **flags: Any) -> argparse.Namespace:
    """Parsed arguments for `detector` with its default head on 64 px images of a small dataset, `flags` added."""
    annotation_file = write_dataset(folder, GOOD)
    return run_detection.parse_args(
        run_arguments(
            annotation_file,
            annotation_file,
            TINY_BACKBONE,
            folder / "out",
            detector=detector,
            detector_config="{}",
            image_size=64,
            max_size=96,
            **flags,
        )
    )


@pytest.mark.parametrize("detector", sorted(run_detection.DETECTORS))
def test_the_saved_processor_takes_images_of_any_mode(detector: str, tmp_path: Path) -> None:
    """The folder's processor converts to RGB (issue 11): greyscale, palette, CMYK, 16-bit and alpha-channel images
    give three channels, and an opaque RGBA image the pixels of its RGB."""
    args = default_head_arguments(tmp_path, detector)
    run_detection.build_processor(args).save_pretrained(tmp_path / "processor")
    processor = AutoImageProcessor.from_pretrained(tmp_path / "processor")
    image = white_box_image()
    pixels = {
        mode: processor(image.convert(mode), return_tensors="np")["pixel_values"]
        for mode in ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16")
    }
    assert {values.shape[:2] for values in pixels.values()} == {(1, 3)}
    np.testing.assert_array_equal(pixels["RGBA"], pixels["RGB"])


def test_coco_metrics_of_perfect_shifted_and_missing_detections(tmp_path: Path) -> None:
    annotation_file = write_dataset(tmp_path, GOOD)
    ground_truth = coco_data.read_coco(annotation_file).ground_truth()
    perfect = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9} for a in GOOD
    ]
    metrics = coco_data.coco_metrics(ground_truth, perfect)
    for name in ("map", "map_50", "map_75", "map_a", "map_b"):
        assert metrics[name] == pytest.approx(1.0), name
    # Each box shifted right by a quarter of its width: IoU 0.75 / 1.25 = 0.6, a hit at 0.5 but not at 0.75.
    shifted = [{**d, "bbox": [d["bbox"][0] + d["bbox"][2] / 4, *d["bbox"][1:]]} for d in perfect]
    metrics = coco_data.coco_metrics(ground_truth, shifted)
    assert metrics["map_50"] == pytest.approx(1.0) and metrics["map_75"] == 0.0
    assert coco_data.coco_metrics(ground_truth, [])["map"] == 0.0


# ----------------------------------------------------------------------------------------------------------------------
# Model set-up and arguments
# ----------------------------------------------------------------------------------------------------------------------


def test_pretrained_backbone_arrives_with_enlarged_windows(tmp_path: Path) -> None:
    """A 64 px / window 4 classifier as the backbone at 128 px with window 8: every weight it has a place for is in the
    detector, and the position-bias MLPs see the coordinates they were trained with (pretrained windows 4)."""
    source = randomize_weights(SwinV2ForImageClassification(SwinV2Config.from_json_file(TINY_BACKBONE)), seed=4)
    source.save_pretrained(tmp_path / "pretrained")
    annotation_file = write_dataset(tmp_path, GOOD)
    arguments = run_arguments(
        annotation_file, annotation_file, tmp_path / "pretrained", tmp_path / "out", image_size=128, window_size=8
    )
    model, backbone = run_detection.build_detector(run_detection.parse_args(arguments), {0: "a", 1: "b"})
    assert backbone.pretrained and backbone.config.window_size == 8
    assert list(backbone.config.pretrained_window_sizes) == [4, 4, 4, 2]  # 64 px: the last stage's 2x2 map clips 4 to 2
    loaded = next(module for module in model.modules() if isinstance(module, SwinV2Backbone)).state_dict()
    expected = source.state_dict()
    shared = [key for key in loaded if f"swinv2.{key}" in expected]
    assert any("continuous_position_bias_mlp" in key for key in shared) and len(shared) > 40
    assert all(torch.equal(loaded[key], expected[f"swinv2.{key}"]) for key in shared)


@pytest.mark.parametrize("detector", sorted(run_detection.DETECTORS))
def test_the_backbone_trains_in_the_swin_recipes_groups(detector: str, tmp_path: Path) -> None:
    """No weight decay on the backbone's norms, biases, logit scales and position-bias MLP; its weight matrices at
    the backbone's learning rate with weight decay (times the layer decay); the head in its own groups. Every
    trainable parameter in exactly one group."""
    args = default_head_arguments(
        tmp_path, detector, backbone_learning_rate=1e-5, learning_rate=1e-3, weight_decay=0.1, layer_decay=0.5
    )
    model, _ = run_detection.build_detector(args, {0: "a", 1: "b"})
    backbone = next(module for module in model.modules() if isinstance(module, SwinV2Backbone))
    depth = sum(backbone.config.depths)
    settings = {}
    for group in run_detection.make_optimizer(model, args).param_groups:
        for parameter in group["params"]:
            assert id(parameter) not in settings
            settings[id(parameter)] = (group["lr"], group["weight_decay"])
    assert set(settings) == {id(parameter) for parameter in model.parameters() if parameter.requires_grad}
    exempt = ("norm", "bias", "logit_scale", "continuous_position_bias_mlp")
    for name, parameter in backbone.named_parameters():
        lr, weight_decay = settings[id(parameter)]
        assert weight_decay == (0.0 if any(part in name for part in exempt) else 0.1), name
        assert 1e-5 * 0.5 ** (depth + 1) <= lr <= 1e-5, name
    assert settings[id(backbone.embeddings.projection.weight)] == (1e-5 * 0.5 ** (depth + 1), 0.1)
    head = [
        settings[id(parameter)]
        for name, parameter in model.named_parameters()
        if parameter.requires_grad and not any(parameter is p for p in backbone.parameters())
    ]
    assert head and {weight_decay for _, weight_decay in head} == {0.1}
    assert {lr for lr, _ in head} <= {1e-3, 1e-4}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"push_to_hub": True}, "--push_to_hub needs --hub_model_id"),
        ({"scale_range": [1.2, 0.8]}, "--scale_range"),
        ({"max_size": 10, "image_size": 20}, "--max_size 10 is smaller than --image_size 20"),
        ({"detector_config": '{"not_a_field": 1}'}, "not_a_field"),
        ({"resume_from_checkpoint": "latest"}, "no intact step_N checkpoint"),
    ],
)
def test_arguments_that_would_fail_later_are_refused(
    flags: dict, message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    annotation_file = write_dataset(tmp_path, GOOD)
    arguments = run_arguments(annotation_file, annotation_file, tmp_path / "b.json", tmp_path / "out")
    if "detector_config" in flags:
        arguments = arguments[: arguments.index("--detector_config")] + arguments[arguments.index("--output_dir") :]
    with pytest.raises(SystemExit):
        run_detection.parse_args(arguments + flag_arguments(flags))
    assert message in capsys.readouterr().err


def test_an_existing_output_is_not_replaced_without_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    annotation_file = write_dataset(tmp_path, GOOD)
    (tmp_path / "out").mkdir()
    with pytest.raises(SystemExit):
        run_detection.parse_args(run_arguments(annotation_file, annotation_file, tmp_path / "b.json", tmp_path / "out"))
    assert "exists; pass --overwrite_output_dir" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------------------------------


def add_bad_records(annotation_file: Path) -> list[str]:
    """Four defective records added to a copy of the photos' instances file; returns where each is reported."""
    coco = json.loads(annotation_file.read_text())
    (annotation_file.parent / "broken.png").write_bytes(b"not an image")
    coco["images"].append({"id": 99, "file_name": "broken.png", "width": 10, "height": 10})
    coco["annotations"] += [box(0, 1, [500, 10, 40, 40]), box(1, 2, [10, 10, 20, 0]), box(2, 3, [5, 5, 9, 9], 42)]
    annotation_file.write_text(json.dumps(coco))
    first = len(coco["annotations"]) - 3
    return [
        f"{annotation_file.parent / 'broken.png'}: images[{len(coco['images']) - 1}] (id 99)",
        *(f"{annotation_file}: annotations[{first + i}] (id {100 + i})" for i in range(3)),
    ]


def held_out_photos(annotation_file: Path) -> Path:
    """A validation file beside the training one: its last two photographs with their boxes, moved out of training."""
    data = json.loads(annotation_file.read_text())
    held = {image["id"] for image in data["images"][-2:]}
    validation = {
        **data,
        "images": [image for image in data["images"] if image["id"] in held],
        "annotations": [box for box in data["annotations"] if box["image_id"] in held],
    }
    data["images"] = [image for image in data["images"] if image["id"] not in held]
    data["annotations"] = [box for box in data["annotations"] if box["image_id"] not in held]
    annotation_file.write_text(json.dumps(data))
    path = annotation_file.with_name("validation.json")
    path.write_text(json.dumps(validation))
    return path


@pytest.mark.slow
def test_photos_train_evaluate_push_and_serve_a_pipeline(tmp_path: Path) -> None:
    """The real photographs with four defective records added: a few steps, COCO evaluation, the folder pushed with a
    card that records the results, then the pipeline on the saved folder and the boxes drawn into a PNG."""
    annotation_file = make_photos.make_photos(tmp_path / "photos")
    validation_file = held_out_photos(annotation_file)
    expected_skips = add_bad_records(annotation_file)
    output_dir = tmp_path / "detector"
    arguments = run_arguments(
        annotation_file,
        validation_file,
        TINY_BACKBONE,
        output_dir,
        image_size=128,
        max_size=192,
        max_train_steps=3,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        push_to_hub=True,
        hub_model_id=REPO_ID,
    )
    with FakeHub(tmp_path / "hub") as hub:
        done = run_script(arguments, env=client_environ(hub, tmp_path / "home"))
        pushed = hub.store.resolve(REPO_ID, "main").files
        pushed_card = hub.store.object_path(pushed["README.md"].sha256).read_text()

    results = json.loads((output_dir / "results.json").read_text())
    assert results["steps"] == 3 and len(results["history"]) == 1
    assert [": ".join(skip.split(": ")[:2]) for skip in results["skipped"]["train"]] == expected_skips
    metrics = results["metrics"]
    assert {"map", "map_50", "map_75", "map_coin", "map_cat"} <= set(metrics)
    # COCO's definitions order them: AP over IoU 0.5:0.95 <= AP@0.75 <= AP@0.5, each in [0, 1].
    assert 0 <= metrics["map"] <= metrics["map_75"] <= metrics["map_50"] <= 1
    assert "| mAP@0.5 |" in done.stdout and "| AP coin |" in done.stdout

    assert sorted(pushed) == sorted(path.name for path in output_dir.iterdir() if path.name != MARKER)
    card = ModelCard((output_dir / "README.md").read_text())
    assert pushed_card == (output_dir / "README.md").read_text()
    assert card.data.pipeline_tag == "object-detection"
    recorded = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert recorded == {name: round(metrics[name], 4) for name in ("map", "map_50", "map_75")}
    assert "Deformable DETR" in card.text
    assert f'pipeline("object-detection", model="{REPO_ID}", trust_remote_code=True)' in card.text
    assert {"detection_swinv2_hf.py", "modeling_swinv2_hf.py"} <= set(pushed)  # the code that snippet runs

    image = Image.open(tmp_path / "photos" / "coffee.png")
    detections = predict.detect(str(output_dir), image, threshold=0.0)
    assert detections and all(
        d["label"] in {c["name"] for c in json.loads(annotation_file.read_text())["categories"]} for d in detections
    )
    predict.draw_detections(image, detections).save(tmp_path / "drawn.png")
    drawn = Image.open(tmp_path / "drawn.png")
    assert drawn.format == "PNG" and drawn.size == image.size
    assert not np.array_equal(np.asarray(drawn), np.asarray(image.convert("RGB")))


@pytest.mark.slow
def test_a_resumed_run_continues_exactly(tmp_path: Path) -> None:
    """Dropout, augmentations, accumulation and evaluations on the way: a run resumed in a new process from the
    checkpoint at step 3 (mid-epoch) ends with the weights and the log of the run that was never interrupted."""
    files = make_shapes.make_shapes(tmp_path / "shapes", num_train=16, num_validation=4, image_size=64, seed=1)
    backbone = TINY_BACKBONE
    flags = {
        "image_size": 64,
        "max_size": 96,
        "max_train_steps": 6,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "checkpointing_steps": 3,
        "eval_steps": 2,
        "learning_rate": 1e-3,
    }
    whole = run_detection.main(
        run_arguments(files["train"], files["validation"], backbone, tmp_path / "whole", **flags)
    )
    checkpoint = tmp_path / "whole_checkpoints" / "step_3"
    resumed_dir = tmp_path / "resumed"
    done = run_script(
        run_arguments(
            files["train"], files["validation"], backbone, resumed_dir, **flags, resume_from_checkpoint=checkpoint
        )
    )
    assert f"resumed from {checkpoint} at step 3" in done.stderr
    resumed = json.loads((resumed_dir / "results.json").read_text())
    assert [entry["step"] for entry in whole["history"]] == [2, 4, 6]
    assert resumed["history"] == whole["history"] and resumed["metrics"] == whole["metrics"]
    expected = load_file(tmp_path / "whole" / "model.safetensors")
    at_checkpoint = load_file(checkpoint / "model.safetensors")
    weights = load_file(resumed_dir / "model.safetensors")
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[name], expected[name]) for name in expected)
    shared = at_checkpoint.keys() & expected.keys()  # the checkpoint stores a tied tensor once (safetensors)
    assert shared and not all(torch.equal(at_checkpoint[name], expected[name]) for name in shared)

    with pytest.raises(InputError, match=r"another model or run .*\(seed: checkpoint 0, this run 5\)"):
        run_detection.main(
            run_arguments(
                files["train"],
                files["validation"],
                backbone,
                tmp_path / "other",
                **{**flags, "seed": 5},
                resume_from_checkpoint=checkpoint,
            )
        )


@pytest.fixture
def one_thread():
    """The tiny model's operations are too small to gain from a second thread, and on a busy CPU a waiting OpenMP
    thread costs more than it gives: the convergence run uses one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_a_tiny_swinv2_deformable_detr_learns_the_shapes(tmp_path: Path) -> None:
    """From scratch, on the CPU, in about two minutes: the validation mAP@0.5 that README.md's recipe measured, with
    margin (the later --detector_config replaces the tiny test head)."""
    files = make_shapes.make_shapes(tmp_path / "shapes", num_train=1024, num_validation=64, image_size=64, seed=0)
    results = run_detection.main(
        run_arguments(files["train"], files["validation"], TINY_BACKBONE, tmp_path / "detector", **CONVERGENCE_FLAGS)
    )
    assert results["metrics"]["map_50"] >= MIN_SHAPES_MAP_50, results["metrics"]
