"""Graphs that run without this package (swinv2_hf/deployment.py): ONNX through both of torch's exporters,
torch.export programs and TorchScript, with a dynamic batch and dynamic sizes that need padding at some stage and are
not square; each compared with the PyTorch model, loaded in a process where swinv2_hf cannot be imported, and refusing
sizes outside its range; int8 through onnxruntime and torch.ao; the `swinv2-hf export` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BLOCK_SWINV2, randomize_weights
from torch import nn

from swinv2_hf import SwinV2Backbone, SwinV2Config, SwinV2ForImageClassification, SwinV2Model
from swinv2_hf.cli import main as cli
from swinv2_hf.deployment import (
    TOLERANCE,
    ExportError,
    SizeRange,
    check_size,
    export,
    quantize_int8,
    read_size_range,
    size_range,
    stage_geometry,
)

# Three stages with 4x4 windows and 4 px patches: at 72x88 px the maps are 18x22, 9x11 and 5x6, so every stage pads.
EXPORT_CONFIG = {
    "image_size": 64,
    "patch_size": 4,
    "embed_dim": 16,
    "depths": (2, 2, 2),
    "num_heads": (1, 2, 4),
    "window_size": 4,
    "num_labels": 5,
    "drop_path_rate": 0.1,
}
EXAMPLE = (72, 88)
# Sizes the checks in `export` do not use: non-square, padded at every stage, batch 3.
FRESH_SHAPES = [(3, 100, 76), (1, 65, 130)]
SUFFIX = {"onnx": ".onnx", "onnx-torchscript": ".onnx", "torch-export": ".pt2", "torchscript": ".pt"}


def build(model_class: type = SwinV2ForImageClassification, **overrides) -> nn.Module:
    config = SwinV2Config(**{**EXPORT_CONFIG, **overrides})
    return randomize_weights(model_class(config)).eval()


def pixels(batch: int, height: int, width: int, seed: int = 7) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def expected_outputs(model: nn.Module, pixel_values: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        output = model(pixel_values=pixel_values, return_dict=True)
    if isinstance(model, SwinV2Backbone):
        return [tensor.numpy() for tensor in output.feature_maps]
    names = {SwinV2ForImageClassification: ["logits"], SwinV2Model: ["last_hidden_state", "pooler_output"]}
    return [getattr(output, name).numpy() for name in names[type(model)]]


def export_as(kind: str, model: nn.Module, path: Path, **options):
    exporter = "torchscript" if kind == "onnx-torchscript" else "dynamo"
    return export(
        model,
        path,
        to=kind.removesuffix("-torchscript"),
        height=EXAMPLE[0],
        width=EXAMPLE[1],
        dynamic=True,
        exporter=exporter,
        **options,
    )


RUN_WITHOUT_SWINV2 = (
    BLOCK_SWINV2
    + """
import json
import numpy as np
import torch

graph, inputs, output = sys.argv[1], np.load(sys.argv[2]), sys.argv[3]
if graph.endswith(".onnx"):
    import onnxruntime
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    run = lambda array: session.run(None, {"pixel_values": array})
elif graph.endswith(".pt2"):
    module = torch.export.load(graph).module()
    run = lambda array: [tensor.detach().numpy() for tensor in module(torch.from_numpy(array))]
else:
    module = torch.jit.load(graph)
    run = lambda array: [tensor.detach().numpy() for tensor in module(torch.from_numpy(array))]
results = {name: run(inputs[name]) for name in inputs.files}
np.savez(output, **{f"{name}/{index}": array for name, arrays in results.items() for index, array in enumerate(arrays)})
"""
)


def run_without_swinv2_hf(graph: Path, inputs: dict[str, torch.Tensor], tmp_path: Path) -> dict[str, list[np.ndarray]]:
    """Run a graph file in a fresh interpreter where `import swinv2_hf` fails."""
    np.savez(tmp_path / "inputs.npz", **{name: tensor.numpy() for name, tensor in inputs.items()})
    output = tmp_path / "outputs.npz"
    done = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_SWINV2, str(graph), str(tmp_path / "inputs.npz"), str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    arrays = np.load(output)
    return {
        name: [arrays[f"{name}/{index}"] for index in range(sum(key.startswith(f"{name}/") for key in arrays.files))]
        for name in inputs
    }


def assert_matches(actual: list[np.ndarray], expected: list[np.ndarray], bound: float = TOLERANCE) -> None:
    assert len(actual) == len(expected)
    for mine, reference in zip(actual, expected):
        assert mine.shape == reference.shape
        assert np.abs(mine - reference).max() <= bound * max(1.0, np.abs(reference).max())


# ----------------------------------------------------------------------------------------------------------------------
# What one graph covers
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "height", "width"), [("tiny", 72, 88), ("tiny", 64, 64), ("swinv2_tiny_window8_256", 256, 256)]
)
def test_size_range_keeps_every_stage_geometry(preset: str, height: int, width: int) -> None:
    """Every size in the range has the example's windows and shifts, and the range is not empty around it."""
    config = SwinV2Config(**EXPORT_CONFIG) if preset == "tiny" else SwinV2Config.from_preset(preset)
    box = size_range(config, height, width, max_side=600)
    assert box.contains(height, width)
    target = stage_geometry(config, height, width)
    for rows in range(box.min_height, box.max_height + 1, 3):
        for columns in range(box.min_width, box.max_width + 1, 3):
            assert stage_geometry(config, rows, columns) == target, (rows, columns)
    # One pixel below the range on either side changes the geometry (or reaches the smallest image, one patch).
    assert box.min_height == config.patch_size or stage_geometry(config, box.min_height - 1, width) != target
    assert box.min_width == config.patch_size or stage_geometry(config, height, box.min_width - 1) != target


def test_swinv2_t_at_256_serves_225_to_256_pixels() -> None:
    """SwinV2-T at 256 px has a single 8x8 window in stage 4 (map 8x8): a graph serves the sizes whose stage-4 map
    stays one 8x8 window. 224 px (a 7x7 window), 288 px (windows with shift) and 256x288 px (two windows side by
    side, which an exporter would reshape into one) are other graphs."""
    config = SwinV2Config.from_preset("swinv2_tiny_window8_256")
    box = size_range(config, 256, 256, max_side=600)
    assert box == SizeRange(225, 256, 225, 256)
    with pytest.raises(ExportError, match=r"got 224x224.*export\s+again"):
        check_size(box, 224, 224)
    for height, width in ((288, 288), (256, 288)):
        with pytest.raises(ExportError, match=f"got {height}x{width}"):
            check_size(box, height, width)


# ----------------------------------------------------------------------------------------------------------------------
# Each exporter
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["onnx", "onnx-torchscript", "torch-export", "torchscript"])
def test_classifier_graph_matches_pytorch_without_swinv2_hf(kind: str, tmp_path: Path) -> None:
    """Dynamic batch and sizes: the example, fresh non-square sizes that pad at every stage, batch 1 and 3; the graph
    file runs in a process that cannot import swinv2_hf."""
    model = build()
    path = tmp_path / f"model{SUFFIX[kind]}"
    report = export_as(kind, model, path)
    assert path.is_file() and report.max_difference <= TOLERANCE
    assert len(report.checked_sizes) >= 3 and len({batch for batch, _, _ in report.checked_sizes}) == 2
    assert read_size_range(path) == report.size_range
    inputs = {f"shape{index}": pixels(*shape, seed=index) for index, shape in enumerate(FRESH_SHAPES)}
    for shape in FRESH_SHAPES:
        assert report.size_range.contains(*shape[1:])
    outputs = run_without_swinv2_hf(path, inputs, tmp_path)
    for name, pixel_values in inputs.items():
        assert_matches(outputs[name], expected_outputs(model, pixel_values))
    if kind == "torch-export":
        assert_refuses_a_size_outside_its_range(path, report.size_range)


def assert_refuses_a_size_outside_its_range(path: Path, graph_sizes: SizeRange) -> None:
    """At 64 px the third stage's map (4x4) is a single window: a program exported at 72x88 px (windows of 4 with
    padding there) must not run it, and says which bound the input breaks."""
    assert not graph_sizes.contains(64, 64)
    program = torch.export.load(path).module()
    with pytest.raises(Exception, match=r"size\(\)\[2\]|shape\[2\]"):
        program(pixels(1, 64, 64))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model_class", "kind"),
    [(SwinV2Backbone, "onnx-torchscript"), (SwinV2Backbone, "torchscript"), (SwinV2Model, "onnx-torchscript")],
)
def test_backbone_and_bare_model_export(model_class: type, kind: str, tmp_path: Path) -> None:
    """The backbone's feature maps (under their stage names) and the bare model's two outputs."""
    overrides = {"out_features": ["stage1", "stage2", "stage3"]} if model_class is SwinV2Backbone else {}
    model = build(model_class, **overrides)
    path = tmp_path / f"model{SUFFIX[kind]}"
    report = export_as(kind, model, path)
    expected_names = (
        ("stage1", "stage2", "stage3") if model_class is SwinV2Backbone else ("last_hidden_state", "pooler_output")
    )
    assert report.outputs == expected_names
    inputs = {"fresh": pixels(*FRESH_SHAPES[0])}
    assert_matches(run_without_swinv2_hf(path, inputs, tmp_path)["fresh"], expected_outputs(model, inputs["fresh"]))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["onnx-torchscript", "torchscript"])
def test_eager_attention_exports_too(kind: str, tmp_path: Path) -> None:
    """The explicit attention core (attn_implementation="eager") traces to the same graph family as SDPA's."""
    model = build(attn_implementation="eager")
    assert model.config._attn_implementation == "eager"
    path = tmp_path / f"model{SUFFIX[kind]}"
    export_as(kind, model, path)
    inputs = {"fresh": pixels(*FRESH_SHAPES[1])}
    assert_matches(run_without_swinv2_hf(path, inputs, tmp_path)["fresh"], expected_outputs(model, inputs["fresh"]))


# ----------------------------------------------------------------------------------------------------------------------
# int8
# ----------------------------------------------------------------------------------------------------------------------


def test_torch_ao_dynamic_quantization_swaps_every_linear_layer() -> None:
    """All linear layers, the position-bias MLPs included, become dynamic int8 modules and the model runs."""
    model = build()
    linear_count = sum(type(module) is nn.Linear for module in model.modules())
    quantized = quantize_int8(model)
    assert sum(type(module) is nn.Linear for module in quantized.modules()) == 0
    swapped = sum(type(module).__name__ == "Linear" and type(module) is not nn.Linear for module in quantized.modules())
    assert swapped == linear_count
    with torch.no_grad():
        reference, approximate = model(pixels(2, 64, 64)).logits, quantized(pixels(2, 64, 64)).logits
    assert torch.isfinite(approximate).all()
    assert (approximate - reference).abs().max() <= 0.15 * max(1.0, reference.abs().max().item())


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_int8_graphs_stay_within_their_bound(kind: str, tmp_path: Path) -> None:
    model = build(drop_path_rate=0.0)
    report = export(model, tmp_path / f"model{SUFFIX[kind]}", to=kind, exporter="torchscript", quantize="int8")
    assert report.quantization == "int8" and 0 < report.max_difference <= report.tolerance


def test_a_graph_over_its_bound_is_refused_and_not_written(tmp_path: Path) -> None:
    """int8 cannot meet the float32 bound: with it, the export refuses and leaves nothing behind."""
    with pytest.raises(ExportError, match="differs from the PyTorch model"):
        export(build(), tmp_path / "model.onnx", exporter="torchscript", quantize="int8", tolerance=TOLERANCE)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"to": "torch-export", "quantize": "int8"}, "available for onnx"),
        ({"to": "tflite"}, "Unknown format"),
        ({"exporter": "tracer"}, "Unknown ONNX exporter"),
    ],
)
def test_an_unsupported_combination_is_named_before_anything_is_written(
    options: dict, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match=message):
        export(build(), tmp_path / "model.out", **options)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_command_writes_a_checked_onnx_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    build().save_pretrained(tmp_path / "model")
    code = cli(
        [
            "export",
            "--to",
            "onnx",
            "--model-dir",
            str(tmp_path / "model"),
            "--output",
            str(tmp_path / "m.onnx"),
            "--exporter",
            "torchscript",
            "--dynamic-axes",
            "--height",
            "72",
            "--width",
            "88",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "height" in printed and "largest difference" in printed
    assert read_size_range(tmp_path / "m.onnx") == size_range(SwinV2Config(**EXPORT_CONFIG), 72, 88)
    assert (
        cli(["export", "--to", "onnx", "--model-dir", str(tmp_path / "model"), "--output", str(tmp_path / "m.onnx")])
        == 2
    )
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("prepare", "message"),
    [("missing", "does not exist"), ("no_config", "has no config.json"), ("other_model", "convert it first")],
)
def test_command_names_a_folder_it_cannot_export(prepare: str, message: str, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "model"
    if prepare != "missing":
        folder.mkdir()
    if prepare == "other_model":
        (folder / "config.json").write_text(json.dumps({"model_type": "swinv2"}))
    code = cli(["export", "--to", "torch-export", "--model-dir", str(folder), "--output", str(tmp_path / "m.pt2")])
    error = capsys.readouterr().err
    assert code == 2 and message in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "m.pt2").exists()
