"""swinv2_hf models as graphs that run without this package: ONNX (torch's dynamo exporter or its TorchScript-based
one; optionally int8 through onnxruntime), `torch.export` programs (`.pt2`) and TorchScript (optionally int8 through
torch.ao dynamic quantization). Each graph is run against the PyTorch model before it is written, and written
atomically.

What one graph covers. Dynamic batch, and with `dynamic=True` dynamic height and width: sizes that need padding at any
stage, non-square sizes, any size that is not a multiple of the patch. SwinV2's window geometry is not a function a
graph can switch: a stage map not larger than the window becomes one window of the map's smaller side (the original's
rule), with other position-bias tables. So a graph serves the box of sizes around the example size in which every
stage keeps its window and shift (`size_range`), and says so: the range is printed, stored in the file (ONNX metadata,
the `.pt2`'s and TorchScript file's `swinv2_hf.json`), a `torch.export` program refuses other sizes with a message
naming the bound, and `check_size` names it for the others.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_file
from .configuration_swinv2_hf import SwinV2Config
from .hub_folder import check_model_folder
from .modeling_swinv2_hf import (
    SwinV2Backbone,
    SwinV2ForImageClassification,
    SwinV2ForMaskedImageModeling,
    SwinV2Model,
    SwinV2PreTrainedModel,
    window_and_shift,
)

FORMATS = ("onnx", "torch-export", "torchscript")
ONNX_EXPORTERS = ("dynamo", "torchscript")
# Largest difference to the PyTorch float32 outputs, relative to their largest magnitude (at least 1).
TOLERANCE = 1e-4
# int8 graphs: the largest difference relative to the float32 outputs' largest magnitude. Dynamic int8 quantization
# of SwinV2's linear layers measured 0.6-4% on trained and random models (README, Deploy); this refuses a broken graph.
INT8_TOLERANCE = 0.15
# Upper bound of a dynamic side when the geometry does not bound it (every stage windowed stays windowed above).
MAX_SIDE = 4096
MAX_BATCH = 1024
METADATA_KEY = "swinv2_hf.json"
_OUTPUTS = {
    SwinV2ForImageClassification: ("logits",),
    SwinV2Model: ("last_hidden_state", "pooler_output"),
    SwinV2ForMaskedImageModeling: ("reconstruction",),
}


class ExportError(ValueError):
    """An export that cannot be written as asked (a failed check, an unsupported combination); the message says why."""


@dataclass(frozen=True)
class SizeRange:
    """Image sizes in pixels, bounds included, that one graph serves."""

    min_height: int
    max_height: int
    min_width: int
    max_width: int

    def contains(self, height: int, width: int) -> bool:
        return self.min_height <= height <= self.max_height and self.min_width <= width <= self.max_width

    def __str__(self) -> str:
        return f"height {self.min_height}-{self.max_height} px, width {self.min_width}-{self.max_width} px"


def stage_geometry(config: SwinV2Config, height: int, width: int) -> tuple[tuple[int, int, bool, bool], ...]:
    """(window, shift, one window row, one window column) of each stage for an image of `height` x `width` pixels.

    A single row or column of windows is part of the geometry: an exporter specialises a dimension that is 1 in the
    example (a graph traced with one window per stage-4 row would reshape two into one)."""
    rows, columns = -(-height // config.patch_size), -(-width // config.patch_size)
    geometry = []
    for _ in range(config.num_layers):
        window, shift = window_and_shift(rows, columns, config.window_size)
        geometry.append((window, shift, rows <= window, columns <= window))
        rows, columns = (rows + 1) // 2, (columns + 1) // 2
    return tuple(geometry)


def size_range(config: SwinV2Config, height: int, width: int, max_side: int = MAX_SIDE) -> SizeRange:
    """The largest box of sizes around `height` x `width` in which every stage keeps the geometry it has there.

    A stage's window and shift depend on its map's smaller side, and its counts of window rows and columns on each
    side, all of which grow with the image, so a box keeps one geometry exactly when its two extreme corners do.
    Each side is first extended as far as it keeps the geometry with the other side fixed; then the upper (and
    lower) corner is pulled in until it agrees, from the side with more room.
    """
    target = stage_geometry(config, height, width)

    def same(rows: int, columns: int) -> bool:
        return stage_geometry(config, rows, columns) == target

    def extent(size: int, fits) -> tuple[int, int]:
        low, high = size, size
        while low > config.patch_size and fits(low - 1):
            low -= 1
        while high < max_side and fits(high + 1):
            high += 1
        return low, high

    low_height, high_height = extent(height, lambda rows: same(rows, width))
    low_width, high_width = extent(width, lambda columns: same(height, columns))
    while not same(high_height, high_width):
        if high_height - height >= high_width - width:
            high_height -= 1
        else:
            high_width -= 1
    while not same(low_height, low_width):
        if height - low_height >= width - low_width:
            low_height += 1
        else:
            low_width += 1
    return SizeRange(low_height, high_height, low_width, high_width)


def check_size(size_range: SizeRange, height: int, width: int) -> None:
    """Refuse an image a graph was not exported for, naming the range and the fix."""
    if not size_range.contains(height, width):
        raise ExportError(
            f"This graph takes images of {size_range}; got {height}x{width}. SwinV2's windows change outside that "
            "range (a stage map no larger than the window becomes a single window): resize the image, or export "
            "again with an example size in the range you need (swinv2-hf export --height H --width W)."
        )


def output_names(model: SwinV2PreTrainedModel) -> tuple[str, ...]:
    """The graph's outputs: the model's main tensors (a backbone's feature maps under their stage names)."""
    if isinstance(model, SwinV2Backbone):
        return tuple(model.out_features)
    names = _OUTPUTS[type(model)]
    if isinstance(model, SwinV2Model) and not model.add_pooling_layer:
        return names[:1]
    return names


class GraphModule(nn.Module):
    """The model as a function of `pixel_values` alone, returning a tuple of tensors: what every exporter takes, and
    what a graph returns without any class of this package."""

    def __init__(self, model: SwinV2PreTrainedModel) -> None:
        super().__init__()
        self.model = model
        self.names = output_names(model)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output = self.model(pixel_values=pixel_values, return_dict=True)
        if isinstance(self.model, SwinV2Backbone):
            return tuple(output.feature_maps)
        return tuple(getattr(output, name) for name in self.names)


def load_model_folder(model_dir: str | os.PathLike) -> SwinV2PreTrainedModel:
    """The swinv2_hf model a saved folder holds, in eval mode, as the class its config names.

    Raises:
        ValueError: a folder that is missing or holds no swinv2_hf model (`check_model_folder`), or an unknown class.
    """
    folder = Path(model_dir)
    config = check_model_folder(folder)
    classes = {model_class.__name__: model_class for model_class in (*_OUTPUTS, SwinV2Backbone)}
    architecture = (config.get("architectures") or ["SwinV2Model"])[0]
    if architecture not in classes:
        raise ExportError(f"{folder}: unknown architecture {architecture!r}; expected one of {sorted(classes)}.")
    return classes[architecture].from_pretrained(folder).eval()


@dataclass
class ExportReport:
    """What was written and how it compared with the PyTorch model."""

    path: str
    format: str
    outputs: tuple[str, ...]
    size_range: SizeRange
    checked_sizes: list[tuple[int, int, int]]
    max_difference: float
    tolerance: float
    quantization: str | None = None

    def summary(self) -> str:
        inputs = ", ".join(f"{batch}x{height}x{width}" for batch, height, width in self.checked_sizes)
        kind = f"{self.format}{' int8' if self.quantization else ''}"
        return (
            f"{self.path}: {kind}, outputs {', '.join(self.outputs)}; any batch, {self.size_range}; largest "
            f"difference to PyTorch float32 {self.max_difference:.2e} (bound {self.tolerance:g}) on inputs "
            f"(batch x height x width) {inputs}"
        )

    def metadata(self) -> str:
        return json.dumps({**asdict(self), "path": Path(self.path).name}, default=str)


def example_input(config: SwinV2Config, batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Normalised-looking pixels (the same for every call with the same arguments)."""
    generator = torch.Generator().manual_seed(seed + 1000 * batch + height + width)
    return torch.randn(batch, config.num_channels, height, width, generator=generator)


def checked_sizes(size_range: SizeRange, height: int, width: int, batch: int) -> list[tuple[int, int, int]]:
    """(batch, height, width) of the inputs a graph is run on before it is written: the example, the range's corners
    (capped at twice the example, to keep the check short) and a non-square size, alternating two batch sizes."""
    high_height, high_width = min(size_range.max_height, 2 * height), min(size_range.max_width, 2 * width)
    sizes = [
        (height, width),
        (size_range.min_height, size_range.min_width),
        (high_height, high_width),
        (size_range.min_height, high_width),
    ]
    batches = (batch, 1 if batch != 1 else 2)
    return [(batches[index % 2], rows, columns) for index, (rows, columns) in enumerate(dict.fromkeys(sizes))]


def _difference(actual: tuple[torch.Tensor, ...], expected: tuple[torch.Tensor, ...]) -> float:
    """The largest difference over all outputs, relative to the largest magnitude of each (at least 1)."""
    return max(
        ((mine.float() - reference.float()).abs().max() / max(1.0, reference.abs().max().item())).item()
        for mine, reference in zip(actual, expected)
    )


def _size_oblivious() -> contextlib.AbstractContextManager:
    """torch.export reasoning that keeps size-1 dimensions (batch 1, a single window row) in a dynamic graph; a torch
    without the switch exports as it does by default."""
    try:
        import torch.fx.experimental._config as fx_config

        return fx_config.patch(backed_size_oblivious=True)
    except (ImportError, AttributeError):
        return contextlib.nullcontext()


def _dynamic_shapes(size_range: SizeRange) -> dict:
    """torch.export's dynamic dimensions: the batch, and height and width where the range spans more than one size."""
    dim = torch.export.Dim
    shapes = {0: dim("batch", min=1, max=MAX_BATCH)}
    if size_range.min_height < size_range.max_height:
        shapes[2] = dim("height", min=size_range.min_height, max=size_range.max_height)
    if size_range.min_width < size_range.max_width:
        shapes[3] = dim("width", min=size_range.min_width, max=size_range.max_width)
    return {"pixel_values": shapes}


def _export_onnx(
    graph: GraphModule, example: torch.Tensor, path: Path, size_range: SizeRange, opset: int | None, exporter: str
) -> None:
    options = {"input_names": ["pixel_values"], "output_names": list(graph.names), "external_data": False}
    if opset is not None:
        options["opset_version"] = opset
    if exporter == "dynamo":
        with _size_oblivious():
            torch.onnx.export(
                graph, (example,), str(path), dynamo=True, dynamic_shapes=_dynamic_shapes(size_range), **options
            )
        return
    axes = {0: "batch"}
    if size_range.min_height < size_range.max_height:
        axes[2] = "height"
    if size_range.min_width < size_range.max_width:
        axes[3] = "width"
    options.pop("external_data")
    torch.onnx.export(graph, (example,), str(path), dynamo=False, dynamic_axes={"pixel_values": axes}, **options)


def _run_onnx(path: Path) -> Callable[[torch.Tensor], tuple[torch.Tensor, ...]]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda pixels: tuple(
        torch.from_numpy(array) for array in session.run(None, {"pixel_values": pixels.numpy()})
    )


def _write_onnx_metadata(path: Path, report: ExportReport) -> None:
    import onnx

    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, report.metadata()
    onnx.save(model, str(path))


def _quantize_onnx(source: Path, target: Path) -> None:
    """onnxruntime's dynamic int8 quantization of the graph's matrix products. Its quantizer logs a warning for every
    integer shape tensor it leaves alone (hundreds in SwinV2's window arithmetic); those are silenced."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def quantize_int8(model: SwinV2PreTrainedModel) -> nn.Module:
    """torch.ao dynamic int8 quantization of every linear layer (weights int8, activations quantized per call)."""
    return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def export(
    model: SwinV2PreTrainedModel,
    output: str | os.PathLike,
    to: str = "onnx",
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 2,
    dynamic: bool = True,
    opset: int | None = None,
    exporter: str = "dynamo",
    quantize: str | None = None,
    overwrite: bool = False,
    tolerance: float | None = None,
    inputs: Sequence[str | os.PathLike] = (),
) -> ExportReport:
    """Write `model` as a graph in format `to` and return what was checked.

    Args:
        height, width: The example size (default: config.image_size); with `dynamic`, the graph serves
            `size_range(config, height, width)`, otherwise that size only. The batch is always dynamic.
        exporter: For ONNX: "dynamo" (torch.export based, the default) or "torchscript" (torch's tracing exporter).
        quantize: "int8": ONNX through onnxruntime's dynamic quantization, TorchScript through torch.ao's.
        tolerance: The bound on the relative difference (default `TOLERANCE`, `INT8_TOLERANCE` with `quantize`).
        inputs: The local paths `model` was read from (its folder), which `output` may never be or contain.

    Raises:
        ExportError: an unsupported combination, or a graph whose outputs differ from PyTorch's by more than the
            bound (nothing is written then).
        FileExistsError: `output` exists and `overwrite` is not set, or is or holds one of `inputs`.
    """
    if to not in FORMATS:
        raise ExportError(f"Unknown format {to!r}; choose one of {FORMATS}.")
    if exporter not in ONNX_EXPORTERS:
        raise ExportError(f"Unknown ONNX exporter {exporter!r}; choose one of {ONNX_EXPORTERS}.")
    if quantize not in (None, "int8") or (quantize and to == "torch-export"):
        raise ExportError(
            f"--quantize {quantize} is available for onnx (onnxruntime) and torchscript (torch.ao); not for {to}."
        )
    config = model.config
    image_height, image_width = config.image_height_width
    height, width = height or image_height, width or image_width
    model = model.eval()
    reference = GraphModule(model).eval()
    graph = GraphModule(quantize_int8(model) if quantize and to == "torchscript" else model).eval()
    sizes = size_range(config, height, width) if dynamic else SizeRange(height, height, width, width)
    example = example_input(config, batch_size, height, width)
    output = Path(output)
    with atomic_file(output, overwrite, inputs) as temporary:
        run = _write(graph, example, temporary, to, sizes, opset, exporter, quantize)
        shapes = checked_sizes(sizes, height, width, batch_size)
        with torch.no_grad():
            difference = max(
                _difference(run(pixels), reference(pixels))
                for pixels in (example_input(config, *shape) for shape in shapes)
            )
        tolerance = tolerance if tolerance is not None else INT8_TOLERANCE if quantize else TOLERANCE
        report = ExportReport(str(output), to, graph.names, sizes, shapes, difference, tolerance, quantize)
        if not difference <= tolerance:
            raise ExportError(
                f"The {to} graph differs from the PyTorch model by {difference:.2e} (bound {tolerance:g}) "
                "on the checked inputs; nothing written."
            )
        if to == "onnx":
            _write_onnx_metadata(temporary, report)
    return report


def _write(
    graph: GraphModule,
    example: torch.Tensor,
    path: Path,
    to: str,
    sizes: SizeRange,
    opset: int | None,
    exporter: str,
    quantize: str | None,
) -> Callable[[torch.Tensor], tuple[torch.Tensor, ...]]:
    """Write the graph to `path`; return a function that runs the written file."""
    if to == "onnx":
        if quantize:
            float_path = path.with_name(path.name + ".float32")
            try:
                _export_onnx(graph, example, float_path, sizes, opset, exporter)
                _quantize_onnx(float_path, path)
            finally:
                float_path.unlink(missing_ok=True)
        else:
            _export_onnx(graph, example, path, sizes, opset, exporter)
        return _run_onnx(path)
    extra = {METADATA_KEY: json.dumps({"outputs": graph.names, "size_range": asdict(sizes)})}
    if to == "torch-export":
        with _size_oblivious():
            program = torch.export.export(graph, (example,), dynamic_shapes=_dynamic_shapes(sizes))
        torch.export.save(program, path, extra_files=extra)
        module = torch.export.load(path).module()
        return lambda pixels: tuple(module(pixels))
    traced = torch.jit.trace(graph, (example,), check_trace=False)
    torch.jit.save(traced, str(path), _extra_files=extra)
    loaded = torch.jit.load(str(path))
    return lambda pixels: tuple(loaded(pixels))


def read_size_range(path: str | os.PathLike) -> SizeRange:
    """The size range a graph written by `export` records (ONNX metadata or the `.pt2` / TorchScript extra file)."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        properties = {entry.key: entry.value for entry in onnx.load(str(path), load_external_data=False).metadata_props}
        return SizeRange(**json.loads(properties[METADATA_KEY])["size_range"])
    extra = {METADATA_KEY: ""}
    if path.suffix == ".pt2":
        torch.export.load(path, extra_files=extra)
    else:
        torch.jit.load(str(path), _extra_files=extra)
    return SizeRange(**json.loads(extra[METADATA_KEY])["size_range"])
