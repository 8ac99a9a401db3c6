"""Saved folders are self-contained Hub remote code: they load with `trust_remote_code=True` in a process that cannot
import `swinv2_hf`, give the same outputs and save again with a complete `auto_map`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import BLOCK_SWINV2, randomize_weights, tiny_config

import swinv2_hf
from swinv2_hf import SwinV2Backbone, SwinV2ForImageClassification, SwinV2ForMaskedImageModeling, SwinV2Model

PACKAGE = Path(swinv2_hf.__file__).parent
CODE_FILES = ["configuration_swinv2_hf.py", "kernels.py", "modeling_swinv2_hf.py"]
EXPECTED_AUTO_MAP = {
    "AutoConfig": "configuration_swinv2_hf.SwinV2Config",
    "AutoModel": "modeling_swinv2_hf.SwinV2Model",
    "AutoModelForImageClassification": "modeling_swinv2_hf.SwinV2ForImageClassification",
    "AutoModelForMaskedImageModeling": "modeling_swinv2_hf.SwinV2ForMaskedImageModeling",
    "AutoBackbone": "modeling_swinv2_hf.SwinV2Backbone",
}
# Outputs compared between the saving process and the remote-code process, and the Auto classes that load there.
OUTPUTS = ["logits", "last_hidden_state", "pooler_output", "reconstruction", "loss"]
REMOTE_CLASSES = ["AutoConfig", "AutoModel", "AutoModelForImageClassification", "AutoModelForMaskedImageModeling"]

# Runs in a fresh interpreter with argv[1] the work folder. It blocks `swinv2_hf` before anything else, loads the
# saved folders through the Auto classes, compares with the saved outputs, re-saves and writes report.json; it exits
# non-zero when the package was importable or any output differs by more than 1e-6.
REMOTE_SCRIPT = (
    BLOCK_SWINV2
    + r"""
import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, AutoModelForMaskedImageModeling

work = Path(sys.argv[1])
inputs = torch.load(work / "inputs.pt", weights_only=True)
expected = torch.load(work / "expected.pt", weights_only=True)
report = {"modules": {}, "max_diff": {}}
try:
    import swinv2_hf  # noqa: F401
    report["import_blocked"] = False
except ImportError:
    report["import_blocked"] = True

config = AutoConfig.from_pretrained(work / "classifier", trust_remote_code=True)
report["config_type"] = type(config).__name__
report["modules"]["AutoConfig"] = type(config).__module__


def load(auto_class, folder):
    model = auto_class.from_pretrained(work / folder, trust_remote_code=True).eval()
    report["modules"][auto_class.__name__] = type(model).__module__
    return model


with torch.no_grad():
    classifier = load(AutoModelForImageClassification, "classifier")
    actual = {"logits": classifier(inputs["pixel_values"]).logits}
    bare = load(AutoModel, "classifier")(inputs["pixel_values"])
    actual.update(last_hidden_state=bare.last_hidden_state, pooler_output=bare.pooler_output)
    simmim = load(AutoModelForMaskedImageModeling, "simmim")(**inputs)
    actual.update(reconstruction=simmim.reconstruction, loss=simmim.loss)
for name, tensor in expected.items():
    same_shape = actual[name].shape == tensor.shape
    report["max_diff"][name] = (actual[name] - tensor).abs().max().item() if same_shape else float("inf")

classifier.save_pretrained(work / "resaved")
report["resaved_files"] = sorted(path.name for path in (work / "resaved").iterdir())
report["resaved_auto_map"] = json.loads((work / "resaved" / "config.json").read_text()).get("auto_map")
report["swinv2_hf_modules"] = sorted(name for name in sys.modules if name.split(".")[0] == "swinv2_hf")
(work / "report.json").write_text(json.dumps(report))
matches = all(difference <= 1e-6 for difference in report["max_diff"].values())
sys.exit(0 if report["import_blocked"] and not report["swinv2_hf_modules"] and matches else 1)
"""
)


def assert_complete_folder(directory: Path) -> None:
    """The folder holds weights, config and code, and its auto_map names all five Auto classes."""
    assert {*CODE_FILES, "model.safetensors", "config.json"} <= {path.name for path in directory.iterdir()}
    assert json.loads((directory / "config.json").read_text())["auto_map"] == EXPECTED_AUTO_MAP


@pytest.mark.parametrize(
    "model_class", [SwinV2Model, SwinV2ForImageClassification, SwinV2ForMaskedImageModeling, SwinV2Backbone]
)
def test_save_pretrained_writes_remote_code(tmp_path: Path, model_class: type) -> None:
    model_class(tiny_config()).save_pretrained(tmp_path)
    assert_complete_folder(tmp_path)
    for name in CODE_FILES:
        assert (tmp_path / name).read_text() == (PACKAGE / name).read_text(), name


@pytest.fixture(scope="module")
def remote_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, dict, Path]:
    """Save a classifier, a SimMIM model, inputs and their outputs; run REMOTE_SCRIPT on them in a fresh process."""
    work = tmp_path_factory.mktemp("remote")
    generator = torch.Generator().manual_seed(4)
    inputs = {
        "pixel_values": torch.randn(2, 3, 32, 32, generator=generator),
        "bool_masked_pos": torch.rand(2, 16 * 16, generator=generator) < 0.5,
    }
    classifier = randomize_weights(SwinV2ForImageClassification(tiny_config()), seed=21).eval()
    simmim = randomize_weights(SwinV2ForMaskedImageModeling(tiny_config(mim_norm_target_patch_size=5)), seed=22).eval()
    with torch.no_grad():
        bare = classifier.swinv2(inputs["pixel_values"])
        reconstructed = simmim(**inputs)
        expected = {
            "logits": classifier(inputs["pixel_values"]).logits,
            "last_hidden_state": bare.last_hidden_state,
            "pooler_output": bare.pooler_output,
            "reconstruction": reconstructed.reconstruction,
            "loss": reconstructed.loss,
        }
    assert sorted(expected) == sorted(OUTPUTS)
    classifier.save_pretrained(work / "classifier")
    simmim.save_pretrained(work / "simmim")
    torch.save(inputs, work / "inputs.pt")
    torch.save(expected, work / "expected.pt")

    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_MODULES_CACHE": str(work / "modules"),
    }
    environment.pop("PYTHONPATH", None)
    process = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(work)],
        cwd=work,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report_path = work / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return process, report, work


@pytest.mark.slow
def test_remote_process_succeeds(remote_run: tuple[subprocess.CompletedProcess, dict, Path]) -> None:
    process, report, _ = remote_run
    assert process.returncode == 0, f"report: {report}\nstderr:\n{process.stderr[-4000:]}"


@pytest.mark.slow
def test_remote_process_could_not_import_package(remote_run: tuple[subprocess.CompletedProcess, dict, Path]) -> None:
    _, report, _ = remote_run
    assert report["import_blocked"] is True
    assert report["swinv2_hf_modules"] == []


@pytest.mark.slow
@pytest.mark.parametrize("auto_class", REMOTE_CLASSES)
def test_remote_classes_come_from_saved_code(
    remote_run: tuple[subprocess.CompletedProcess, dict, Path], auto_class: str
) -> None:
    module = remote_run[1]["modules"][auto_class]
    assert module.startswith("transformers_modules.") and not module.startswith("swinv2_hf"), module
    expected_file = EXPECTED_AUTO_MAP[auto_class].split(".")[0]
    assert module.endswith(expected_file), module


@pytest.mark.slow
def test_remote_config_type(remote_run: tuple[subprocess.CompletedProcess, dict, Path]) -> None:
    assert remote_run[1]["config_type"] == "SwinV2Config"


@pytest.mark.slow
@pytest.mark.parametrize("output", OUTPUTS)
def test_remote_outputs_equal_saved(remote_run: tuple[subprocess.CompletedProcess, dict, Path], output: str) -> None:
    assert remote_run[1]["max_diff"][output] <= 1e-6


@pytest.mark.slow
def test_resaving_remote_model_keeps_complete_auto_map(
    remote_run: tuple[subprocess.CompletedProcess, dict, Path],
) -> None:
    _, report, work = remote_run
    assert report["resaved_auto_map"] == EXPECTED_AUTO_MAP
    assert_complete_folder(work / "resaved")
