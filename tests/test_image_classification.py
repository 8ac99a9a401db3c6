"""examples/image_classification: the digits runs of both scripts (learning, agreement, the written folder, the push),
exact resume after a killed run, the optimiser's parameter groups, the top-k metric module, and every bad input
stopping with its message before anything is written."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import evaluate
import numpy as np
import onnxruntime
import pytest
import torch
from conftest import randomize_weights, reset_accelerate, tiny_config
from fake_hub import FakeHub, client_environ
from PIL import Image
from sklearn.metrics import top_k_accuracy_score
from transformers import AutoImageProcessor, AutoModelForImageClassification, TrainingArguments, pipeline

from swinv2_hf import SwinV2Config, SwinV2ForImageClassification
from swinv2_hf.atomic import MARKER
from swinv2_hf.deployment import export
from swinv2_hf.hub_folder import image_processor_for
from swinv2_hf.optim import parameter_groups
from swinv2_hf_examples import classification as common
from swinv2_hf_examples.runtime import RUN_STATE, InputError, complete_checkpoints, default_checkpoint_dir

SCRIPTS = Path(__file__).resolve().parents[1] / "examples" / "image_classification"
sys.path.insert(0, str(SCRIPTS))
import run_classification  # noqa: E402
import run_classification_trainer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "deployment"))
import run_onnx_int8  # noqa: E402

REPO_ID = "user/swinv2-digits"
# A short digits run, the same for both scripts: 640 training images, 8 epochs (160 optimiser steps).
QUICK = ["--max_train_samples", "640", "--max_eval_samples", "100", "--num_train_epochs", "8", "--seed", "0"]
# Measured on these runs (2-core AMD EPYC Zen 3, float32): test top-1 0.91 with Accelerate, 0.94 with
# Trainer; chance is 0.1. The bounds leave room for other machines' kernels (bf16 autocast where it is native).
MIN_QUICK_ACCURACY = 0.8
MAX_SCRIPT_DIFFERENCE = 0.1
EXPECTED_FILES = [
    "README.md",
    "config.json",
    "configuration_swinv2_hf.py",
    "kernels.py",
    "model.safetensors",
    "modeling_swinv2_hf.py",
    "preprocessor_config.json",
]
WRITTEN_FILES = sorted([*EXPECTED_FILES, MARKER])  # what a run writes; its marker is not pushed


def run_script(script: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True, env=env, timeout=1800
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` with the hash of its content: what a failed run must leave as it was."""
    if not folder.exists():
        return {}
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """Scripts run in-process create Accelerators; each test starts from a clean accelerate state."""
    yield
    reset_accelerate()


def in_process(main, args: list[str]) -> dict:
    """A script's `main` in this process (no interpreter start-up), returning its results."""
    try:
        return main(args)
    finally:
        reset_accelerate()


@pytest.fixture(scope="module")
def accelerate_run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The quick digits run of run_classification.py, pushed to a Hub on loopback."""
    root = tmp_path_factory.mktemp("accelerate")
    with FakeHub(root / "hub") as hub:
        done = run_script(
            "run_classification.py",
            [*QUICK, "--output_dir", str(root / "run"), "--plot", "--push_to_hub", "--hub_model_id", REPO_ID],
            env=client_environ(hub, root / "home"),
        )
        pushed = sorted(hub.store.resolve(REPO_ID, "main").files)
    results = json.loads((root / "run" / common.RESULTS_FILE).read_text())
    return SimpleNamespace(output_dir=root / "run", stdout=done.stdout, results=results, pushed=pushed)


@pytest.fixture(scope="module")
def trainer_run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The same run through run_classification_trainer.py."""
    output_dir = tmp_path_factory.mktemp("trainer") / "run"
    done = run_script(
        "run_classification_trainer.py",
        [*QUICK, "--output_dir", str(output_dir)],
        env={**os.environ, "HF_HOME": str(output_dir.parent / "home")},
    )
    results = json.loads((output_dir / common.RESULTS_FILE).read_text())
    return SimpleNamespace(output_dir=output_dir, stdout=done.stdout, results=results)


# ----------------------------------------------------------------------------------------------------------------------
# Digits runs
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_accelerate_run_learns_digits_and_publishes_a_complete_folder(accelerate_run: SimpleNamespace) -> None:
    results = accelerate_run.results
    assert results["test_top1_accuracy"] > MIN_QUICK_ACCURACY
    assert results["split_sizes"] == {"train": 640, "validation": 100, "test": 100}
    assert [e["epoch"] for e in results["evaluations"]] == list(range(1, 9))
    assert len(results["train_losses"]) == 8 * 20  # 640 images in batches of 32
    assert accelerate_run.pushed == EXPECTED_FILES
    model_dir = accelerate_run.output_dir / common.MODEL_FOLDER
    assert sorted(path.name for path in model_dir.iterdir()) == WRITTEN_FILES
    card = (model_dir / "README.md").read_text()
    assert f"value: {round(100 * results['test_top1_accuracy'], 2)}" in card  # the model-index holds the measurement
    assert "## Training and results" in card and "digits" in card
    assert (accelerate_run.output_dir / common.CURVES_FILE).read_bytes().startswith(b"\x89PNG")
    assert "true label" in accelerate_run.stdout


@pytest.mark.slow
def test_written_folder_serves_a_pipeline_with_the_measured_accuracy(accelerate_run: SimpleNamespace) -> None:
    model_dir = accelerate_run.output_dir / common.MODEL_FOLDER
    model = AutoModelForImageClassification.from_pretrained(model_dir)
    assert isinstance(model, SwinV2ForImageClassification) and model.config.id2label[7] == "7"
    data = common.load_data(common.DataArguments(max_eval_samples=100))
    classifier = pipeline("image-classification", model=str(model_dir))
    images = [common.open_image(value) for value in data.splits["test"][data.image_column]]
    predictions = [best[0]["label"] for best in classifier(images, top_k=1)]
    truth = [data.labels[label] for label in data.splits["test"][data.label_column]]
    accuracy = np.mean([p == t for p, t in zip(predictions, truth)])
    # The script evaluated with the same image processor under bf16 autocast, the pipeline runs float32.
    assert abs(accuracy - accelerate_run.results["test_top1_accuracy"]) <= 2 / len(truth)


@pytest.mark.slow
def test_int8_graphs_keep_the_digits_accuracy(accelerate_run: SimpleNamespace, tmp_path: Path) -> None:
    """Dynamic int8 through onnxruntime (ONNX) and through torch.ao (TorchScript): test top-1 on every held-out digit
    (360) within 0.5 points of the float32 model's."""
    model_dir = accelerate_run.output_dir / common.MODEL_FOLDER
    model = SwinV2ForImageClassification.from_pretrained(model_dir).eval()
    data = common.load_data(common.DataArguments())
    processor = AutoImageProcessor.from_pretrained(model_dir)
    images = [common.open_image(value) for value in data.splits["test"][data.image_column]]
    pixel_values = processor(images, return_tensors="pt").pixel_values
    labels = np.array(data.splits["test"][data.label_column])
    with torch.no_grad():
        float32_accuracy = np.mean(model(pixel_values).logits.argmax(-1).numpy() == labels)
    onnx_path, script_path = tmp_path / "int8.onnx", tmp_path / "int8.pt"
    export(model, onnx_path, to="onnx", exporter="torchscript", quantize="int8")
    export(model, script_path, to="torchscript", quantize="int8")
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(None, {"pixel_values": pixel_values.numpy()})[0]
    with torch.no_grad():
        script_logits = torch.jit.load(str(script_path))(pixel_values)[0].numpy()
    assert len(labels) == 360
    for logits in (onnx_logits, script_logits):
        assert abs(np.mean(logits.argmax(-1) == labels) - float32_accuracy) <= 0.005


@pytest.mark.slow
def test_deployment_example_classifies_a_held_out_digit_as_pytorch_does(
    accelerate_run: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """examples/deployment/run_onnx_int8.py: exports the int8 graph once, then ranks like the PyTorch model."""
    model_dir = accelerate_run.output_dir / common.MODEL_FOLDER
    graph = tmp_path / "model-int8.onnx"
    top = run_onnx_int8.main(["--model-dir", str(model_dir), "--output", str(graph), "--index", "3"])
    assert graph.is_file() and "wrote" in capsys.readouterr().out
    data = common.load_data(common.DataArguments())
    image = common.open_image(data.splits["test"][3][data.image_column])
    expected = pipeline("image-classification", model=str(model_dir))(image, top_k=1)[0]["label"]
    assert top[0][0] == expected and 0 < top[0][1] <= 1
    run_onnx_int8.main(["--model-dir", str(model_dir), "--output", str(graph)])  # reuses the graph
    assert "wrote" not in capsys.readouterr().out


@pytest.mark.slow
def test_trainer_script_reaches_the_accuracy_of_the_accelerate_script(
    trainer_run: SimpleNamespace, accelerate_run: SimpleNamespace
) -> None:
    trainer, accelerate = trainer_run.results["test_top1_accuracy"], accelerate_run.results["test_top1_accuracy"]
    assert trainer > MIN_QUICK_ACCURACY
    assert abs(trainer - accelerate) <= MAX_SCRIPT_DIFFERENCE
    assert [step for step, _ in trainer_run.results["train_losses"]] == list(range(10, 161, 10))  # logged every 10
    assert sorted(p.name for p in (trainer_run.output_dir / common.MODEL_FOLDER).iterdir()) == WRITTEN_FILES


@pytest.mark.slow
def test_fine_tunes_the_written_folder_at_a_larger_resolution_and_window(
    accelerate_run: SimpleNamespace, tmp_path: Path
) -> None:
    model_dir = accelerate_run.output_dir / common.MODEL_FOLDER
    results = in_process(
        run_classification.main,
        [
            "--model_name_or_path",
            str(model_dir),
            "--image_size",
            "64",
            "--window_size",
            "8",
            "--max_train_steps",
            "2",
            "--max_train_samples",
            "64",
            "--max_eval_samples",
            "20",
            "--output_dir",
            str(tmp_path / "transfer"),
        ],
    )
    assert results["hyperparameters"]["layer decay"] == common.PRETRAINED_LAYER_DECAY
    config = SwinV2Config.from_pretrained(tmp_path / "transfer" / common.MODEL_FOLDER)
    # 32 px, patch 4, window 4: maps of 8, 4 and 2, attended in 4x4, 4x4 and (clipped) 2x2 windows; at 64 px, window 8.
    assert (config.image_size, config.window_size, config.pretrained_window_sizes) == (64, 8, [4, 4, 2])


# ----------------------------------------------------------------------------------------------------------------------
# Bad input: a clear message, nothing written and nothing lost
# ----------------------------------------------------------------------------------------------------------------------


def image_folder(root: Path, classes: dict[str, int]) -> Path:
    """A folder of random PNGs, `count` per class sub-folder."""
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for index in range(count):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / name / f"{index}.png")
    return root


def fails_cleanly(main, args: list[str], output_dir: Path, *fragments: str) -> None:
    """`main(args)` stops with an InputError holding every fragment, and `output_dir` is as it was."""
    before = tree(output_dir)
    with pytest.raises(InputError) as raised:
        main([*args, "--output_dir", str(output_dir)])
    for fragment in fragments:
        assert fragment in str(raised.value)
    assert tree(output_dir) == before


SCRIPT_MAINS = {"accelerate": run_classification.main, "trainer": run_classification_trainer.main}


@pytest.mark.parametrize("main", SCRIPT_MAINS.values(), ids=SCRIPT_MAINS.keys())
def test_image_folder_with_one_class_is_refused(main, tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "images", {"cats": 4})
    fails_cleanly(main, ["--train_dir", str(folder)], tmp_path / "out", "1 class folder(s) ['cats']", "own sub-folder")


@pytest.mark.parametrize("main", SCRIPT_MAINS.values(), ids=SCRIPT_MAINS.keys())
@pytest.mark.parametrize("flag", ["--per_device_train_batch_size", "--per_device_eval_batch_size"])
def test_a_batch_of_zero_is_refused(main, flag: str, tmp_path: Path) -> None:
    fails_cleanly(main, [flag, "0"], tmp_path / "out", f"{flag} must be positive, got 0.")


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "images", {"cats": 6, "dogs": 6})
    (folder / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    fails_cleanly(
        run_classification.main,
        ["--train_dir", str(folder), "--dataset_cache_dir", str(tmp_path / "cache")],
        tmp_path / "out",
        "broken.png",
        "Remove or replace the file",
    )


def test_labels_outside_the_head_are_refused(tmp_path: Path) -> None:
    train = image_folder(tmp_path / "train", {"cats": 4, "dogs": 4})
    test = image_folder(tmp_path / "test", {"cats": 2, "birds": 2})
    fails_cleanly(
        run_classification.main,
        ["--train_dir", str(train), "--test_dir", str(test)],
        tmp_path / "out",
        "['birds']",
        "the head could not predict them",
    )
    # A dataset whose test split marks examples unlabelled (-1, as many Hub datasets do) or numbers another class.
    datasets = common.datasets
    splits = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"label": [0, 1]}, features=datasets.Features({"label": datasets.ClassLabel(names=["a", "b"])})
            ),
            "test": datasets.Dataset.from_dict({"label": [-1, 1, 5]}),
        }
    )
    with pytest.raises(InputError, match=r"test split has labels \[-1, 5\] outside the head's range \[0, 1\]"):
        common.check_labels(splits, "label", ["a", "b"])


def test_resolution_off_the_grid_is_refused(tmp_path: Path) -> None:
    fails_cleanly(
        run_classification.main,
        ["--image_size", "36"],
        tmp_path / "out",
        "image_size 36 does not fit",
        "not a multiple of patch_size x 2**(stages - 1) = 16",
        "--image_size 32 or 64",
    )
    with pytest.raises(InputError, match="stage 1's 12x12 map is not a whole number of 8-windows"):
        common.check_resolution(
            SwinV2Config(image_size=48, patch_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2), window_size=8)
        )


@pytest.mark.slow
def test_resuming_another_models_checkpoint_is_refused(
    accelerate_run: SimpleNamespace, trainer_run: SimpleNamespace, tmp_path: Path
) -> None:
    """Both scripts compare the checkpoint with the model before loading it, and change nothing on the way out."""
    checkpoint = complete_checkpoints(default_checkpoint_dir(accelerate_run.output_dir))[-1]
    output_dir = tmp_path / "accelerate"
    shutil.copytree(checkpoint, default_checkpoint_dir(output_dir) / checkpoint.name)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**json.loads(common.DEFAULT_MODEL.read_text()), "embed_dim": 24}))
    args = [*QUICK, "--model_name_or_path", str(other), "--resume_from_checkpoint"]
    fails_cleanly(
        run_classification.main,
        [*args, "latest"],
        output_dir,
        "embed_dim: checkpoint 48, this run 24",
        "written by another model or run",
    )
    trainer_checkpoint = sorted(trainer_run.output_dir.glob("checkpoint-*"))[-1]
    before = tree(trainer_checkpoint)
    fails_cleanly(
        run_classification_trainer.main,
        [*args, str(trainer_checkpoint)],
        tmp_path / "trainer",
        "embed_dim: checkpoint 48, this run 24",
    )
    assert tree(trainer_checkpoint) == before


def test_new_run_does_not_bury_an_earlier_one(tmp_path: Path) -> None:
    output_dir = tmp_path / "out"
    (output_dir / common.MODEL_FOLDER).mkdir(parents=True)
    (output_dir / common.MODEL_FOLDER / "config.json").write_text("{}")
    fails_cleanly(run_classification.main, [], output_dir, "--overwrite_output_dir")
    (output_dir / common.MODEL_FOLDER / "config.json").unlink()
    (output_dir / common.MODEL_FOLDER).rmdir()
    step = default_checkpoint_dir(output_dir) / "step_4"
    step.mkdir(parents=True)
    (step / RUN_STATE).write_text("{}")
    fails_cleanly(run_classification.main, [], output_dir, "--resume_from_checkpoint latest")


# ----------------------------------------------------------------------------------------------------------------------
# Recipe: parameter groups, transforms, metric
# ----------------------------------------------------------------------------------------------------------------------


def test_a_saved_folder_loads_with_its_preprocessing_and_a_new_head_when_the_classes_differ(tmp_path: Path) -> None:
    saved = randomize_weights(SwinV2ForImageClassification(tiny_config(num_labels=5)))
    saved.save_pretrained(tmp_path / "saved")
    statistics = common.Preprocessing(crop_fraction=0.9, resample="bilinear", mean=(0.5,) * 3, std=(0.25,) * 3)
    image_processor_for(saved.config, statistics).save_pretrained(tmp_path / "saved")
    arguments = common.ModelArguments(model_name_or_path=str(tmp_path / "saved"))
    assert arguments.resolved_layer_decay == common.PRETRAINED_LAYER_DECAY
    expected = saved.state_dict()
    for labels in (["a", "b", "c"], list("vwxyz")):
        model, preprocessing = common.load_model(arguments, labels, common.DataArguments())
        assert preprocessing == statistics
        assert model.classifier.out_features == len(labels) and model.config.id2label[2] == labels[2]
        for name, tensor in model.state_dict().items():
            if not name.startswith("classifier.") or len(labels) == 5:
                assert torch.equal(tensor, expected[name]), name
        assert torch.equal(model.classifier.weight, expected["classifier.weight"]) == (len(labels) == 5)


def test_model_sources_other_than_swinv2_hf_folders_presets_and_configs_are_refused(tmp_path: Path) -> None:
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "config.json").write_text(json.dumps({"model_type": "swinv2"}))
    for source, message in ((tmp_path / "theirs", "swinv2-hf convert"), ("swinv2_tiniest", "swinv2_tiny_window8_256")):
        with pytest.raises(InputError, match=message):
            common.load_model(common.ModelArguments(model_name_or_path=str(source)), ["a", "b"], common.DataArguments())


def test_trainer_optimises_with_the_parameter_groups(tmp_path: Path) -> None:
    model = SwinV2ForImageClassification(tiny_config())
    args = TrainingArguments(
        output_dir=str(tmp_path), learning_rate=0.1, weight_decay=0.05, report_to="none", use_cpu=True
    )
    mixer = common.BatchMixer(0.0, 0.0, 0.0, 5, 0)
    trainer = run_classification_trainer.SwinV2Trainer(model=model, args=args, layer_decay=0.5, mixer=mixer)
    optimizer = trainer.create_optimizer()
    expected = parameter_groups(model, 0.1, 0.05, 0.5)
    assert [(g["lr"], g["weight_decay"], g["names"]) for g in optimizer.param_groups] == [
        (g["lr"], g["weight_decay"], g["names"]) for g in expected
    ]


def test_transfer_keeps_the_windows_the_weights_were_trained_with() -> None:
    three_stages = {"patch_size": 2, "embed_dim": 16, "depths": (1, 1, 1), "num_heads": (1, 2, 4), "window_size": 4}
    saved = SwinV2Config(image_size=32, **three_stages)
    # Maps 16, 8, 4 at window 4: every stage used 4x4 windows (the last one its whole map).
    assert common.transfer_overrides(saved, common.ModelArguments(image_size=64, window_size=8)) == {
        "image_size": 64,
        "window_size": 8,
        "pretrained_window_sizes": [4, 4, 4],
    }
    small = SwinV2Config(image_size=16, **three_stages)
    window_8 = common.ModelArguments(window_size=8)
    # Maps 8, 4, 2: the last stage used one 2x2 window; a model that is itself a transfer keeps its stored windows.
    assert common.transfer_overrides(small, window_8)["pretrained_window_sizes"] == [4, 4, 2]
    small.pretrained_window_sizes = [6, 6, 3]
    assert common.transfer_overrides(small, window_8)["pretrained_window_sizes"] == [6, 6, 3]
    assert common.transfer_overrides(small, common.ModelArguments(image_size=32)) == {"image_size": 32}


def test_augmentation_depends_only_on_seed_epoch_and_index() -> None:
    data = common.load_data(common.DataArguments(max_train_samples=8, max_eval_samples=20))
    config = SwinV2Config.from_json_file(common.DEFAULT_MODEL)
    processor = image_processor_for(config, common.Preprocessing(crop_fraction=1.0))
    augmentation = common.DataArguments(crop_scale_min=0.2, hflip_probability=0.5)
    transform = common.train_transform(processor, config, augmentation)
    examples = common.ImageExamples(data, "train", transform, seed=3)
    first = [examples[index]["pixel_values"] for index in range(8)]
    assert all(torch.equal(examples[index]["pixel_values"], first[index]) for index in reversed(range(8)))
    examples.set_epoch(1)
    assert not any(torch.equal(examples[index]["pixel_values"], first[index]) for index in range(8))
    assert first[0].shape == (3, 32, 32)


def test_random_resized_crop_box_stays_inside_and_covers_the_scale() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, right, bottom = common.random_resized_crop_box(40, 30, (0.25, 1.0), rng)
        assert 0 <= left < right <= 40 and 0 <= top < bottom <= 30
        assert 0.2 <= (right - left) * (bottom - top) / 1200 <= 1.0


def test_mixed_targets_are_distributions_drawn_from_the_key() -> None:
    mixer = common.BatchMixer(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_labels=4, seed=0)
    pixels, labels = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    mixed, targets = mixer(pixels, labels, key=5)
    again, same_targets = mixer(pixels, labels, key=5)
    assert torch.equal(mixed, again) and torch.equal(targets, same_targets)
    torch.testing.assert_close(targets.sum(-1), torch.ones(6))
    assert not torch.equal(mixer(pixels, labels, key=6)[1], targets)
    # Soft-target cross-entropy equals the smoothed hard-label loss when nothing is mixed.
    logits = torch.randn(6, 4)
    smoothed = torch.nn.functional.one_hot(labels, 4) * 0.9 + 0.1 / 4
    torch.testing.assert_close(
        common.classification_loss(logits, smoothed, 0.0), common.classification_loss(logits, labels, 0.1)
    )


def test_top_k_metric_module() -> None:
    metric = evaluate.load(str(common.METRIC_PATH), keep_in_memory=True)
    scores = [[0.1, 0.5, 0.4], [0.3, 0.3, 0.4], [0.2, 0.2, 0.6], [0.7, 0.2, 0.1]]
    # Classes ranked ahead of the true one: two; two (class 2, and class 0 tied with the lower index); one (class 2;
    # the tied class 1 has the higher index); none.
    assert metric.compute(predictions=scores, references=[0, 1, 0, 0], top_k=[1, 2, 3]) == {
        "top1_accuracy": 0.25,
        "top2_accuracy": 0.5,
        "top3_accuracy": 1.0,
    }
    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=(50, 10)), rng.integers(0, 10, 50)
    result = metric.compute(predictions=scores, references=labels, top_k=[1, 5])
    for k in (1, 5):
        assert result[f"top{k}_accuracy"] == pytest.approx(top_k_accuracy_score(labels, scores, k=k, labels=range(10)))
    with pytest.raises(ValueError, match=r"references \[10\] are outside the 10 scored classes"):
        metric.compute(predictions=scores[:2], references=[1, 10])
