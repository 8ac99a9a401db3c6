"""Detector folders written by `save_detector` (what examples/object_detection saves) are Hub remote code: in a process
that cannot import swinv2_hf they load with `trust_remote_code=True`, by path and by repo id from a Hub on loopback,
through AutoModelForObjectDetection and the object-detection pipeline, give the saving process's outputs and save
again with their code."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import BLOCK_SWINV2, FLOAT32_ERROR_FLOOR, assert_within_bound, randomize_weights
from fake_hub import FakeHub, client_environ, run_client
from PIL import Image
from test_detectors import DETECTORS, IMAGE
from transformers import AutoModelForObjectDetection, pipeline
from transformers.image_processing_utils import BaseImageProcessor
from transformers.models.conditional_detr.image_processing_pil_conditional_detr import ConditionalDetrImageProcessorPil
from transformers.models.deformable_detr.image_processing_pil_deformable_detr import DeformableDetrImageProcessorPil
from transformers.models.rt_detr.image_processing_pil_rt_detr import RTDetrImageProcessorPil

import swinv2_hf
from swinv2_hf import SwinV2Backbone
from swinv2_hf.hub_folder import save_detector

PACKAGE = Path(swinv2_hf.__file__).parent
CODE_FILES = ["configuration_swinv2_hf.py", "detection_swinv2_hf.py", "kernels.py", "modeling_swinv2_hf.py"]
DETR_SIZE = {"shortest_edge": IMAGE, "longest_edge": 96}
PROCESSORS = {  # the example's processors, at the tiny detectors' size
    "conditional_detr": lambda: ConditionalDetrImageProcessorPil(size=DETR_SIZE),
    "deformable_detr": lambda: DeformableDetrImageProcessorPil(size=DETR_SIZE),
    "rt_detr": lambda: RTDetrImageProcessorPil(size={"height": IMAGE, "width": IMAGE}),
}
SOURCES = ["path", "repo_id"]
OUTPUTS = ["logits", "pred_boxes"]

# Runs in a fresh interpreter with argv[1] the work folder and argv[2:] the detector folders in it. It blocks
# swinv2_hf before anything else, pushes each folder to the Hub of HF_ENDPOINT, then loads it by path and by repo id
# with AutoModelForObjectDetection (outputs on pixels.pt to remote_outputs.pt, then saved again under resaved/) and
# with the object-detection pipeline (detections on image.png), and prints what it saw as JSON.
REMOTE_SCRIPT = (
    BLOCK_SWINV2
    + r"""
import json
from pathlib import Path

import torch
from huggingface_hub import HfApi
from PIL import Image
from transformers import AutoModelForObjectDetection, pipeline

work, names = Path(sys.argv[1]), sys.argv[2:]
pixels = torch.load(work / "pixels.pt", weights_only=True)
image = Image.open(work / "image.png")
try:
    import swinv2_hf  # noqa: F401
    report = {"import_blocked": False}
except ImportError:
    report = {"import_blocked": True}
report.update(classes={}, detections={}, resaved={})
outputs = {}
api = HfApi()
for name in names:
    api.create_repo(f"user/{name}")
    api.upload_folder(repo_id=f"user/{name}", folder_path=work / name)
    for source, model_id in (("path", str(work / name)), ("repo_id", f"user/{name}")):
        key = f"{name}/{source}"
        model = AutoModelForObjectDetection.from_pretrained(model_id, trust_remote_code=True).eval()
        with torch.no_grad():
            output = model(pixels)
        outputs[key] = {"logits": output.logits, "pred_boxes": output.pred_boxes}
        detector = pipeline("object-detection", model=model_id, trust_remote_code=True)
        report["detections"][key] = detector(image, threshold=0.0)
        backbone = next(module for module in model.modules() if type(module).__name__ == "SwinV2Backbone")
        report["classes"][key] = [f"{type(m).__module__}.{type(m).__name__}" for m in (model, detector.model, backbone)]
        model.save_pretrained(work / "resaved" / key)
        report["resaved"][key] = {
            "files": sorted(path.name for path in (work / "resaved" / key).iterdir()),
            "auto_map": json.loads((work / "resaved" / key / "config.json").read_text())["auto_map"],
        }
torch.save(outputs, work / "remote_outputs.pt")
report["swinv2_hf_modules"] = sorted(name for name in sys.modules if name.split(".")[0] == "swinv2_hf")
print(json.dumps(report))
"""
)


def build_detector(name: str) -> torch.nn.Module:
    """The tiny detector of test_detectors.py with every weight drawn (SwinV2's res-post-norms start at zero, which
    would leave its attention out of the comparison)."""
    return randomize_weights(DETECTORS[name][0](), seed=11).eval()


def saving_process_outputs(
    model: torch.nn.Module, processor: BaseImageProcessor, pixels: torch.Tensor, image: Image.Image
) -> dict:
    """The pipeline's detections, and the outputs in float32 and (for the bound) float64; leaves `model` in float64."""
    detections = pipeline("object-detection", model=model, image_processor=processor)(image, threshold=0.0)
    with torch.no_grad():
        float32 = model(pixels)
        float64 = model.double()(pixels.double())
    return {
        "detections": detections,
        "float32": {output: getattr(float32, output) for output in OUTPUTS},
        "float64": {output: getattr(float64, output) for output in OUTPUTS},
    }


@pytest.fixture(scope="module")
def remote_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, dict, Path]:
    """Save the three detectors with their processors and outputs, run REMOTE_SCRIPT on them against a Hub on
    loopback; returns its report, its outputs, this process's outputs and the work folder."""
    work = tmp_path_factory.mktemp("detectors")
    pixels = torch.randn(1, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(2))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    torch.save(pixels, work / "pixels.pt")
    image.save(work / "image.png")
    expected = {}
    for name, make_processor in PROCESSORS.items():
        model, processor = build_detector(name), make_processor()
        save_detector(model, work / name)
        processor.save_pretrained(work / name)
        expected[name] = saving_process_outputs(model, processor, pixels, image)
    with FakeHub(work / "hub") as hub:
        report = run_client(REMOTE_SCRIPT, client_environ(hub, work / "home"), work, str(work), *PROCESSORS)
    return report, torch.load(work / "remote_outputs.pt", weights_only=True), expected, work


def test_saved_folder_ships_the_code_and_loads_locally_where_swinv2_hf_is_imported(tmp_path: Path) -> None:
    """The code files are the package's own and auto_map names the remote classes; here, where swinv2_hf is imported,
    the folder loads without remote code into transformers' class."""
    model = build_detector("deformable_detr")
    save_detector(model, tmp_path)
    assert set(CODE_FILES) <= {path.name for path in tmp_path.iterdir()}
    for name in CODE_FILES:
        assert (tmp_path / name).read_text() == (PACKAGE / name).read_text(), name
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "detection_swinv2_hf.DeformableDetrConfig",
        "AutoModelForObjectDetection": "detection_swinv2_hf.DeformableDetrForObjectDetection",
    }
    reloaded = AutoModelForObjectDetection.from_pretrained(tmp_path)
    assert type(reloaded) is type(model) and any(isinstance(m, SwinV2Backbone) for m in reloaded.modules())


def test_save_detector_refuses_a_model_it_has_no_loader_for(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="UperNetForSemanticSegmentation is not a detector that loads as remote code"):
        save_detector(DETECTORS["upernet"][0](), tmp_path / "upernet")
    assert not (tmp_path / "upernet").exists()


@pytest.mark.slow
def test_remote_process_could_not_import_swinv2_hf(remote_run: tuple[dict, dict, dict, Path]) -> None:
    report = remote_run[0]
    assert report["import_blocked"] is True and report["swinv2_hf_modules"] == []


@pytest.fixture(params=[(name, source) for name in sorted(PROCESSORS) for source in SOURCES], ids="/".join)
def load(request: pytest.FixtureRequest, remote_run: tuple[dict, dict, dict, Path]) -> SimpleNamespace:
    """One folder loaded one way (by path or by repo id) in the remote process: what it reported and output, this
    process's outputs of the same folder, and the folder's auto_map."""
    name, source = request.param
    report, remote, expected, work = remote_run
    key = f"{name}/{source}"
    return SimpleNamespace(
        classes=report["classes"][key],
        outputs=remote[key],
        detections=report["detections"][key],
        resaved=report["resaved"][key],
        expected=expected[name],
        auto_map=json.loads((work / name / "config.json").read_text())["auto_map"],
    )


@pytest.mark.slow
def test_detector_and_backbone_are_the_shipped_classes(load: SimpleNamespace) -> None:
    """The model, the pipeline's model and the backbone in it come from the folders' code (the backbone from the first
    folder loaded: the process registers SwinV2 once)."""
    model, pipeline_model, backbone = load.classes
    assert model == pipeline_model and model.startswith("transformers_modules."), model
    assert model.endswith(load.auto_map["AutoModelForObjectDetection"]), model
    assert backbone.startswith("transformers_modules.") and backbone.endswith("modeling_swinv2_hf.SwinV2Backbone")


@pytest.mark.slow
def test_remote_outputs_equal_the_saving_process(load: SimpleNamespace) -> None:
    """Within the float32 bound: the other process may compute in another order (its own threads)."""
    for output in OUTPUTS:
        assert_within_bound(
            load.outputs[output], load.expected["float32"][output], load.expected["float64"][output], name=output
        )


@pytest.mark.slow
def test_remote_pipeline_detects_as_the_saving_process(load: SimpleNamespace) -> None:
    """The same classes and scores; compared sorted, since scores equal within rounding may come in either order."""
    actual, saved = load.detections, load.expected["detections"]
    assert Counter(d["label"] for d in actual) == Counter(d["label"] for d in saved)
    np.testing.assert_allclose(
        sorted(d["score"] for d in actual), sorted(d["score"] for d in saved), rtol=0, atol=FLOAT32_ERROR_FLOOR
    )


@pytest.mark.slow
def test_a_remote_detector_saves_again_with_its_code(load: SimpleNamespace) -> None:
    assert set(CODE_FILES) <= set(load.resaved["files"])
    assert load.resaved["auto_map"] == load.auto_map
