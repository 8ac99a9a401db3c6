"""The conversion command: every reference checkpoint becomes a folder that reproduces the original's outputs,
transformers' folders convert and match, exports round-trip bit-exactly, and bad input fails cleanly with exit 2."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import FIXTURES, load_case, randomize_weights, tiny_config
from safetensors.torch import load_file
from test_original_parity import (
    FLOAT64_ATOL,
    NOT_COMPARED,
    assert_tensors_close,
    classifier_tensors,
    constructor_kwargs,
    references,
    timm_as_original,
)
from transformers import (
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForMaskedImageModeling,
    Swinv2Config,
    Swinv2ForImageClassification,
    Swinv2ForMaskedImageModeling,
    Swinv2Model,
)

import swinv2_hf.hub_folder as hub_folder
import swinv2_hf.modeling_swinv2_hf as modeling
from swinv2_hf import SwinV2Config
from swinv2_hf.cli import BAD_INPUT, main
from swinv2_hf.configuration_swinv2_hf import RELEASES, VARIANTS
from swinv2_hf.sources import read_checkpoint

REPOSITORY = Path(__file__).resolve().parents[1]
TIMM_LOGIT_SCALE_MAX = math.log(1.0 / 0.01)  # timm's clamp (the D references were computed with it)


def convert(tmp_path: Path, *arguments: str, name: str = "converted") -> Path:
    """Run `swinv2-hf convert` in this process; returns the output folder, which must exist."""
    output = tmp_path / name
    assert main(["convert", *arguments, "--output-dir", str(output)]) == 0
    assert output.is_dir()
    return output


def original_case(tmp_path: Path, case: str) -> Path:
    return convert(
        tmp_path,
        "--source",
        "original",
        "--checkpoint",
        str(FIXTURES / f"case_{case}_ms.pth"),
        "--config",
        str(FIXTURES / f"case_{case}_config.json"),
    )


def float64_tensors(folder: Path, case: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Our tensors from the converted folder and the case's float64 references, under the original's names."""
    model = AutoModelForImageClassification.from_pretrained(folder).double().eval()
    expected = references(case, torch.float64)
    with torch.no_grad():
        actual = classifier_tensors(model, expected["input"])
    return actual, {name: tensor for name, tensor in expected.items() if name not in NOT_COMPARED}


@pytest.mark.parametrize("case", ["A", "B", "C"])
def test_original_checkpoint_converts_to_the_reference(tmp_path: Path, case: str) -> None:
    """Embeddings, every stage, final norm, pooled features and logits of the converted folder, float64, 1e-8."""
    actual, expected = float64_tensors(original_case(tmp_path, case), case)
    assert_tensors_close(actual, expected, lambda name: FLOAT64_ATOL)


def test_original_yaml_config(tmp_path: Path) -> None:
    """Case B's architecture given as an original-repository YAML (with a BASE file) instead of JSON."""
    overrides = load_case("B")["yacs_overrides"]
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"DATA": {"IMG_SIZE": overrides["DATA.IMG_SIZE"]}}))
    model = {
        "TYPE": "swinv2",
        "NAME": "case_b",
        "NUM_CLASSES": overrides["MODEL.NUM_CLASSES"],
        "SWINV2": overrides["MODEL.SWINV2"],
    }
    (tmp_path / "case_b.yaml").write_text(yaml.safe_dump({"BASE": ["base.yaml"], "MODEL": model}))
    folder = convert(
        tmp_path,
        "--source",
        "original",
        "--checkpoint",
        str(FIXTURES / "case_B_ms.pth"),
        "--config",
        str(tmp_path / "case_b.yaml"),
    )
    actual, expected = float64_tensors(folder, "B")
    assert_tensors_close(actual, expected, lambda name: FLOAT64_ATOL)


def test_simmim_checkpoint_converts_to_the_reference(tmp_path: Path) -> None:
    """Case E (the original SimMIM wrapper): reconstruction and loss of the converted folder, float64."""
    folder = original_case(tmp_path, "E")
    model = AutoModelForMaskedImageModeling.from_pretrained(folder).double().eval()
    expected = references("E", torch.float64)
    with torch.no_grad():
        outputs = model(expected["input"], bool_masked_pos=expected["mask"].bool())
    torch.testing.assert_close(outputs.reconstruction, expected["x_rec"], rtol=0, atol=FLOAT64_ATOL)
    # The original sums the mask in float32 (`mask.sum() + 1e-5`), so its float64 loss carries float32 rounding.
    torch.testing.assert_close(outputs.loss, expected["loss"], rtol=0, atol=1e-8)


def timm_hub_folder(tmp_path: Path) -> Path:
    """Case D as timm publishes models on the Hub: config.json (architecture, num_classes, model_args) + weights."""
    folder = tmp_path / "timm_case_d"
    folder.mkdir()
    shutil.copy(FIXTURES / "case_D_timm.safetensors", folder / "model.safetensors")
    overrides = dict(load_case("D")["constructor"]["overrides"])
    config = {
        "architecture": "swinv2_tiny_window8_256",
        "num_classes": overrides.pop("num_classes"),
        "model_args": overrides,
        "pretrained_cfg": {"crop_pct": 0.9, "interpolation": "bicubic"},
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("layout", ["pth", "safetensors", "hub_folder"])
def test_timm_checkpoint_converts_to_the_reference(
    tmp_path: Path, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Case D: a bare timm state dict (with case A's constructor JSON) or a timm Hub folder (config from its own
    config.json), against timm's float64 references."""
    if layout == "hub_folder":
        arguments = ["--checkpoint", str(timm_hub_folder(tmp_path))]
    else:
        arguments = [
            "--checkpoint",
            str(FIXTURES / f"case_D_timm.{layout}"),
            "--config",
            str(FIXTURES / "case_A_config.json"),
        ]
    folder = convert(tmp_path, "--source", "timm", *arguments)
    monkeypatch.setattr(modeling, "LOGIT_SCALE_MAX", TIMM_LOGIT_SCALE_MAX)
    model = AutoModelForImageClassification.from_pretrained(folder).double().eval()
    expected = timm_as_original(references("D", torch.float64))
    inputs = references("D", torch.float64)["input"]
    with torch.no_grad():
        actual = classifier_tensors(model, inputs)
    assert_tensors_close({name: actual[name] for name in expected}, expected, lambda name: FLOAT64_ATOL)


def test_timm_folder_preprocessing_is_kept(tmp_path: Path) -> None:
    folder = convert(tmp_path, "--source", "timm", "--checkpoint", str(timm_hub_folder(tmp_path)))
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor["crop_pct"] == 0.9 and processor["size"] == {"shortest_edge": 64}


# ----------------------------------------------------------------------------------------------------------------------
# transformers' folders
# ----------------------------------------------------------------------------------------------------------------------

TRANSFORMERS_CONFIGS = {
    "classifier": (
        Swinv2ForImageClassification,
        {
            "image_size": 64,
            "embed_dim": 16,
            "depths": [2, 2, 2, 1],
            "num_heads": [2, 2, 4, 8],
            "window_size": 4,
            "num_labels": 7,
        },
    ),
    "pretrained_windows": (
        Swinv2ForImageClassification,
        {
            "image_size": 64,
            "embed_dim": 12,
            "depths": [1, 2, 1],
            "num_heads": [1, 2, 4],
            "window_size": 8,
            "pretrained_window_sizes": [4, 4, 2],
            "num_labels": 3,
        },
    ),
    "simmim": (
        Swinv2ForMaskedImageModeling,
        {
            "image_size": 64,
            "embed_dim": 8,
            "depths": [2, 2, 2, 1],
            "num_heads": [1, 2, 2, 4],
            "window_size": 4,
            "encoder_stride": 32,
        },
    ),
    "bare": (
        Swinv2Model,
        {
            "image_size": (64, 64),
            "patch_size": 2,
            "embed_dim": 8,
            "depths": [2, 2],
            "num_heads": [2, 4],
            "window_size": 4,
        },
    ),
}


def transformers_folder(tmp_path: Path, name: str) -> tuple[Path, torch.nn.Module]:
    model_class, arguments = TRANSFORMERS_CONFIGS[name]
    model = randomize_weights(model_class(Swinv2Config(**arguments)), seed=len(name)).eval()
    folder = tmp_path / f"transformers_{name}"
    model.save_pretrained(folder)
    return folder, model


@pytest.mark.parametrize("name", sorted(TRANSFORMERS_CONFIGS))
def test_transformers_folder_converts_and_matches(tmp_path: Path, name: str) -> None:
    """Random transformers' Swinv2 folders convert; the converted folder matches transformers' model in float64."""
    source, theirs = transformers_folder(tmp_path, name)
    folder = convert(tmp_path, "--source", "transformers", "--checkpoint", str(source))
    auto_class = {
        Swinv2ForImageClassification: AutoModelForImageClassification,
        Swinv2ForMaskedImageModeling: AutoModelForMaskedImageModeling,
        Swinv2Model: AutoModel,
    }[type(theirs)]
    ours = auto_class.from_pretrained(folder).double().eval()
    pixels = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        hub_folder.main_output(ours, pixels), hub_folder.main_output(theirs.double(), pixels), rtol=0, atol=FLOAT64_ATOL
    )


# ----------------------------------------------------------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------------------------------------------------------


def assert_same_tensors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(actual) == sorted(expected)
    for key, tensor in expected.items():
        assert actual[key].dtype == tensor.dtype and torch.equal(actual[key], tensor), key


@pytest.mark.parametrize("case", ["A", "C", "E"])
def test_original_round_trip_is_bit_exact(tmp_path: Path, case: str) -> None:
    """original -> swinv2_hf -> original gives back every tensor of the file, buffers included."""
    folder = original_case(tmp_path, case)
    exported = tmp_path / "exported.pth"
    assert main(["export", "--model-dir", str(folder), "--to", "original", "--output", str(exported)]) == 0
    assert list(torch.load(exported, weights_only=True)) == ["model"]  # the releases' container
    assert_same_tensors(read_checkpoint(exported), read_checkpoint(FIXTURES / f"case_{case}_ms.pth"))


def test_timm_round_trip_is_bit_exact(tmp_path: Path) -> None:
    """timm -> swinv2_hf -> timm gives back case D's tensors, and the exported timm folder converts again."""
    folder = convert(tmp_path, "--source", "timm", "--checkpoint", str(timm_hub_folder(tmp_path)))
    exported = tmp_path / "timm_export"
    assert main(["export", "--model-dir", str(folder), "--to", "timm", "--output", str(exported)]) == 0
    assert_same_tensors(load_file(exported / "model.safetensors"), load_file(FIXTURES / "case_D_timm.safetensors"))
    again = convert(tmp_path, "--source", "timm", "--checkpoint", str(exported), name="again")
    assert_same_tensors(load_file(again / "model.safetensors"), load_file(folder / "model.safetensors"))


@pytest.mark.parametrize("name", ["classifier", "bare"])
def test_transformers_round_trip_is_bit_exact(tmp_path: Path, name: str) -> None:
    source, theirs = transformers_folder(tmp_path, name)
    folder = convert(tmp_path, "--source", "transformers", "--checkpoint", str(source))
    exported = tmp_path / "transformers_export"
    assert main(["export", "--model-dir", str(folder), "--to", "transformers", "--output", str(exported)]) == 0
    assert_same_tensors(load_file(exported / "model.safetensors"), load_file(source / "model.safetensors"))
    reloaded = type(theirs).from_pretrained(exported).eval()
    pixels = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(hub_folder.main_output(reloaded, pixels), hub_folder.main_output(theirs, pixels))


# ----------------------------------------------------------------------------------------------------------------------
# Names, folder contents
# ----------------------------------------------------------------------------------------------------------------------


def test_every_release_name_gives_the_original_constructor_arguments() -> None:
    """All 12 released configs of the original repository, read from its own YAMLs (ms_release_configs.json)."""
    releases = json.loads((FIXTURES / "ms_release_configs.json").read_text())["configs"]
    checked = 0
    for file, values in releases.items():
        if file.startswith("simmim"):
            continue
        name = file.removesuffix(".yaml")
        expected = SwinV2Config(
            **{
                "image_size": values["build_model_kwargs"]["img_size"],
                **{
                    key: values["build_model_kwargs"][source]
                    for key, source in (
                        ("embed_dim", "embed_dim"),
                        ("depths", "depths"),
                        ("num_heads", "num_heads"),
                        ("window_size", "window_size"),
                        ("pretrained_window_sizes", "pretrained_window_sizes"),
                        ("drop_path_rate", "drop_path_rate"),
                    )
                },
            }
        )
        config = SwinV2Config.from_preset(name)
        for field in (
            "image_size",
            "embed_dim",
            "depths",
            "num_heads",
            "window_size",
            "pretrained_window_sizes",
            "drop_path_rate",
        ):
            assert getattr(config, field) == getattr(expected, field), (name, field)
        assert config.num_labels == (21841 if name.endswith("_22k") else 1000), name
        assert name in RELEASES
        checked += 1
    assert checked == len(RELEASES) == 12


def test_unknown_model_name_lists_the_known_ones(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    code = main(
        [
            "convert",
            "--source",
            "original",
            "--checkpoint",
            str(FIXTURES / "case_A_ms.pth"),
            "--model-name",
            "swinv2_mega_window7_224",
            "--output-dir",
            str(tmp_path / "out"),
        ]
    )
    error = capsys.readouterr().err
    assert code == BAD_INPUT and "swinv2_mega_window7_224" in error
    assert all(name in error for name in [*VARIANTS, *RELEASES])
    assert not (tmp_path / "out").exists()


def test_release_conversion_writes_a_complete_card(tmp_path: Path) -> None:
    """A release-named checkpoint (random weights in the original layout): the card carries the published results,
    the parameters and FLOPs, and the processor does the original's resize-and-crop at 256 px."""
    name = "swinv2_tiny_patch4_window8_256"
    model = modeling.SwinV2ForImageClassification(SwinV2Config.from_preset(name))
    (tmp_path / "ours").mkdir()
    model.save_pretrained(tmp_path / "ours")
    assert (
        main(
            [
                "export",
                "--model-dir",
                str(tmp_path / "ours"),
                "--to",
                "original",
                "--output",
                str(tmp_path / f"{name}.pth"),
            ]
        )
        == 0
    )
    folder = convert(
        tmp_path,
        "--source",
        "original",
        "--checkpoint",
        str(tmp_path / f"{name}.pth"),
        "--model-name",
        name,
        name="release",
    )
    card = (folder / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["license"] == "mit" and metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "image-classification" and metadata["datasets"] == ["imagenet-1k"]
    metrics = metadata["model-index"][0]["results"][0]["metrics"]
    assert [metric["value"] for metric in metrics] == [RELEASES[name].release.top1, RELEASES[name].release.top5]
    assert "28.3M (published 28M)" in card and "5.94G at 256x256; published 5.9G" in card
    assert "@inproceedings{liu2022swinv2" in card
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor["size"] == {"shortest_edge": 256} and processor["crop_pct"] == 224 / 256
    assert processor["image_processor_type"] == "ConvNextImageProcessor"


def test_processor_is_the_original_evaluation_transform(tmp_path: Path) -> None:
    """The saved processor resizes the shorter side to int(256/224 * size) with bicubic, centre-crops and normalises
    like the original's evaluation transform (written here with PIL and numpy)."""
    import numpy as np
    from PIL import Image

    folder = original_case(tmp_path, "C")
    processor = AutoImageProcessor.from_pretrained(folder)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8))
    size = 96
    short = int(256 / 224 * size)
    resized = image.resize((round(200 * short / 150), short), Image.BICUBIC)
    left, top = round((resized.width - size) / 2), round((resized.height - size) / 2)
    cropped = np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.float32) / 255
    expected = (cropped - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    actual = processor(image, return_tensors="pt")["pixel_values"][0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_large_models_are_sharded(tmp_path: Path) -> None:
    folder = convert(
        tmp_path,
        "--source",
        "original",
        "--checkpoint",
        str(FIXTURES / "case_A_ms.pth"),
        "--config",
        str(FIXTURES / "case_A_config.json"),
        "--max-shard-size",
        "500KB",
    )
    assert (folder / "model.safetensors.index.json").is_file() and not (folder / "model.safetensors").exists()
    actual, expected = float64_tensors(folder, "A")
    assert_tensors_close(actual, expected, lambda name: FLOAT64_ATOL)


# ----------------------------------------------------------------------------------------------------------------------
# Bad input: exit 2, a message naming the problem, nothing written
# ----------------------------------------------------------------------------------------------------------------------


def fails_cleanly(capsys: pytest.CaptureFixture, tmp_path: Path, *arguments: str) -> str:
    output = tmp_path / "never"
    assert main(["convert", *arguments, "--output-dir", str(output)]) == BAD_INPUT
    assert not output.exists()
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".never")]  # no partial folder either
    return capsys.readouterr().err


def case_a_arguments(checkpoint: Path) -> list[str]:
    return ["--source", "original", "--checkpoint", str(checkpoint), "--config", str(FIXTURES / "case_A_config.json")]


def test_yaml_missing_a_key(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"MODEL": {"TYPE": "swinv2", "SWINV2": {"EMBED_DIM": 16}}}))
    error = fails_cleanly(
        capsys,
        tmp_path,
        "--source",
        "original",
        "--checkpoint",
        str(FIXTURES / "case_A_ms.pth"),
        "--config",
        str(tmp_path / "bad.yaml"),
    )
    assert "MODEL.SWINV2.DEPTHS" in error and "MODEL.SWINV2.WINDOW_SIZE" in error


def test_checkpoint_of_another_architecture(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 2048)}, tmp_path / "r.pth")
    error = fails_cleanly(capsys, tmp_path, *case_a_arguments(tmp_path / "r.pth"))
    assert "not SwinV2 weights" in error and "conv1.weight (64, 3, 7, 7)" in error


@pytest.mark.parametrize("change", ["missing", "unexpected", "shape"])
def test_keys_that_do_not_fit_the_config(capsys: pytest.CaptureFixture, tmp_path: Path, change: str) -> None:
    state_dict = read_checkpoint(FIXTURES / "case_A_ms.pth")
    if change == "missing":
        del state_dict["layers.1.blocks.0.mlp.fc1.weight"]
        expected = ["1 missing keys", "swinv2.encoder.stages.1.blocks.0.mlp.fc1.weight (128, 32)"]
    elif change == "unexpected":
        state_dict["layers.1.blocks.2.mlp.fc1.weight"] = torch.zeros(128, 32)
        expected = ["1 unexpected keys", "swinv2.encoder.stages.1.blocks.2.mlp.fc1.weight (128, 32)"]
    else:
        state_dict["head.weight"] = state_dict["head.weight"][:, :8]
        expected = ["of another shape", "classifier.weight: checkpoint (10, 8), model (10, 128)"]
    torch.save(state_dict, tmp_path / "changed.pth")
    error = fails_cleanly(capsys, tmp_path, *case_a_arguments(tmp_path / "changed.pth"))
    assert all(part in error for part in expected), error


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("truncated", "is not a readable checkpoint"),
        ("text", "is not a readable checkpoint"),
        ("empty", "is empty (0 bytes)"),
        ("pickle_cut_short", "is not a readable checkpoint (EOFError)"),
    ],
)
def test_unreadable_checkpoint(capsys: pytest.CaptureFixture, tmp_path: Path, content: str, message: str) -> None:
    """An empty file and a pickle cut after its protocol header raise errors without a message; each still gets one."""
    data = (FIXTURES / "case_A_ms.pth").read_bytes()
    contents = {
        "truncated": data[: len(data) // 2],
        "text": b"not a checkpoint\n",
        "empty": b"",
        "pickle_cut_short": b"\x80\x02",
    }
    (tmp_path / "bad.pth").write_bytes(contents[content])
    error = fails_cleanly(capsys, tmp_path, *case_a_arguments(tmp_path / "bad.pth"))
    assert message in error and len(error.strip().splitlines()) == 1, error


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a\nb\nc\n", "labels.txt names 3 classes, but the model has 10"),
        ('["a", "b"]', "labels.json is not a JSON mapping of class indices to names"),
        ('{"1": "a", "2": "b"}', "labels.json names no class 0"),
    ],
    ids=["wrong-count", "json-list", "json-indices-from-1"],
)
def test_id2label_file_that_does_not_fit(
    capsys: pytest.CaptureFixture, tmp_path: Path, content: str, message: str
) -> None:
    """The class-names file is blamed, with its count and the head's, not the checkpoint."""
    labels = tmp_path / ("labels.txt" if content.endswith("\n") else "labels.json")
    labels.write_text(content)
    error = fails_cleanly(capsys, tmp_path, *case_a_arguments(FIXTURES / "case_A_ms.pth"), "--id2label", str(labels))
    assert message in error and len(error.strip().splitlines()) == 1, error


def test_id2label_file_names_the_classes(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"digit {index}\n" for index in range(10)))
    config = json.loads(
        (
            convert(tmp_path, *case_a_arguments(FIXTURES / "case_A_ms.pth"), "--id2label", str(labels)) / "config.json"
        ).read_text()
    )
    assert config["id2label"]["3"] == "digit 3" and config["label2id"]["digit 3"] == 3


def test_wrong_pretrained_window_names_the_implied_one(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """Case B was made with pretrained windows [4, 4, 4, 2]; a config without them is refused with the value."""
    arguments = dict(constructor_kwargs("B"), pretrained_window_sizes=[0, 0, 0, 0])
    (tmp_path / "wrong.json").write_text(json.dumps(arguments))
    error = fails_cleanly(
        capsys,
        tmp_path,
        "--source",
        "original",
        "--checkpoint",
        str(FIXTURES / "case_B_ms.pth"),
        "--config",
        str(tmp_path / "wrong.json"),
    )
    assert "implies window 8 with pretrained window 4" in error and "pretrained window 0" in error


def test_existing_output_needs_overwrite(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """An earlier conversion is replaced only with --overwrite (folders swinv2_hf did not write never: test_faults)."""
    output = convert(tmp_path, *case_a_arguments(FIXTURES / "case_A_ms.pth"), name="existing")
    (output / "keep.txt").write_text("mine")
    arguments = ["convert", *case_a_arguments(FIXTURES / "case_A_ms.pth"), "--output-dir", str(output)]
    assert main(arguments) == BAD_INPUT and "--overwrite" in capsys.readouterr().err
    assert (output / "keep.txt").read_text() == "mine"
    assert main([*arguments, "--overwrite"]) == 0
    assert not (output / "keep.txt").exists() and (output / "model.safetensors").is_file()


@pytest.mark.parametrize("target", ["original", "timm"])
@pytest.mark.parametrize(
    ("prepare", "message"),
    [("missing", "does not exist"), ("no_config", "has no config.json"), ("other_model", "convert it first")],
)
def test_export_refuses_a_folder_without_a_swinv2_hf_model(
    capsys: pytest.CaptureFixture, tmp_path: Path, target: str, prepare: str, message: str
) -> None:
    """Weights without their config.json (which transformers would fill with defaults) or under another model type
    are refused in one line; a missing folder is reported as missing, not as a Hub repository id out of reach."""
    folder = tmp_path / "model"
    if prepare != "missing":
        modeling.SwinV2ForImageClassification(tiny_config()).save_pretrained(folder)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").unlink()
        if prepare == "other_model":
            (folder / "config.json").write_text(json.dumps({**config, "model_type": "swinv2"}))
    output = tmp_path / ("exported.pth" if target == "original" else "exported")
    capsys.readouterr()  # save_pretrained's progress bar
    assert main(["export", "--model-dir", str(folder), "--to", target, "--output", str(output)]) == BAD_INPUT
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1, error
    assert not output.exists()


def test_failed_verification_writes_nothing(
    capsys: pytest.CaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outputs further from transformers' than the limit are refused; --no-verify writes anyway."""
    monkeypatch.setattr(hub_folder, "MAX_DIFFERENCE", 1e-12)
    error = fails_cleanly(capsys, tmp_path, *case_a_arguments(FIXTURES / "case_A_ms.pth"))
    assert "differs from transformers' Swinv2" in error and "--no-verify" in error
    convert(tmp_path, *case_a_arguments(FIXTURES / "case_A_ms.pth"), "--no-verify")


def test_command_line_scripts(tmp_path: Path) -> None:
    """`conversion/convert.py` and the `swinv2-hf` console script are thin doors to the same command."""
    script = subprocess.run(
        [
            sys.executable,
            str(REPOSITORY / "conversion" / "convert.py"),
            *case_a_arguments(FIXTURES / "case_A_ms.pth"),
            "--model-name",
            "swinv2_tiny_patch4_window99_256",
            "--output-dir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
    )  # --config wins over --model-name, so this converts
    assert script.returncode == 0, script.stderr
    assert "buffers checked:  16" in script.stdout and "max |difference|" in script.stdout
    console = subprocess.run(
        [
            shutil.which("swinv2-hf") or "swinv2-hf",
            "convert",
            *case_a_arguments(FIXTURES / "case_A_ms.pth"),
            "--output-dir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
    )
    assert console.returncode == BAD_INPUT and "exists; pass --overwrite" in console.stderr


def test_committed_model_cards_are_current() -> None:
    """model_cards/ holds exactly what the generator writes for the 12 releases."""
    result = subprocess.run(
        [sys.executable, str(REPOSITORY / "model_cards" / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert len(list((REPOSITORY / "model_cards").glob("swinv2_*.md"))) == len(RELEASES)
