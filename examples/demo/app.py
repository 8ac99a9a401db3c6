"""A Gradio demo for any swinv2_hf model: classify, detect, reconstruct (SimMIM), and look inside SwinV2.

    python examples/demo/app.py                                    # the README main job's digits model
    python examples/demo/app.py outputs/photos-detector            # any swinv2_hf folder
    python examples/demo/app.py swinv2-hf/swinv2_tiny_patch4_window8_256 --port 7861   # or Hub repository

Without a model it takes the main job's `outputs/digits/model` when that has run, and otherwise trains the same
digits model for 5 epochs into `outputs/demo/digits` first (26 s and 94% test top-1 on a 2-core AMD EPYC Zen 3; the
main job's 12 epochs reach 99%).

The tabs follow what the model is: Classify for a classifier (a converted checkpoint, the digits model), Detect for a
detector written by `run_detection.py`, Reconstruct for a SimMIM model, and Inside SwinV2 for all of them, with what
the paper introduces: the continuous position bias of every head, at the trained window and stretched to a larger one
as at transfer (`pretrained_window_sizes`), the attention inside the window under a clicked pixel, the stages'
feature maps and the learned logit scale of every head.

The file needs gradio, transformers, torch, matplotlib and the sample packages (scikit-image, scikit-learn), not
swinv2_hf: a model repository brings its own code (`trust_remote_code`), so the file runs as a Hub Space as it is
(`swinv2-hf space`). Where swinv2_hf is installed, it is imported so that folders without their code load too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import gradio as gr
import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, UnidentifiedImageError
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForMaskedImageModeling,
    AutoModelForObjectDetection,
    pipeline,
)
from transformers.image_processing_utils import BaseImageProcessor

# Registers swinv2_hf with the Auto classes where it is installed; a Space loads the repository's own code.
with contextlib.suppress(ImportError):
    import swinv2_hf  # noqa: F401

MODEL_TYPE = "swinv2_hf"
SPACE_SETTINGS = Path(__file__).with_name("space.json")  # {"model": repo id}: written by `swinv2-hf space`
REPOSITORY = Path(__file__).resolve().parents[2]
MAIN_JOB_MODEL = REPOSITORY / "outputs" / "digits" / "model"
QUICK_OUTPUT = REPOSITORY / "outputs" / "demo" / "digits"
RUN_CLASSIFICATION = REPOSITORY / "examples" / "image_classification" / "run_classification.py"
QUICK_EPOCHS = 5
TOP_K = 5
DISPLAY_SIDE = 320  # pixels: small model inputs are shown enlarged
DIGITS_SIDE = 32  # the main job's digits: scikit-learn's 8x8 upscaled, as the classification example renders them
PAPER_MASK_SHARE = 32 / 192  # SimMIM's mask patch: 32 px of a 192 px image
MASK_GREY = 0.5
HEATMAP_COLOURS = "viridis"
TASKS = {
    "SwinV2ForImageClassification": ("classify", AutoModelForImageClassification),
    "SwinV2ForMaskedImageModeling": ("reconstruct", AutoModelForMaskedImageModeling),
}


class DemoError(ValueError):
    """Input the demo cannot use: the message says what is wrong and what to do, shown in the page."""


# ----------------------------------------------------------------------------------------------------------------------
# The model: any swinv2_hf folder or repository, and the SwinV2 inside it
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class DemoModel:
    """A loaded model, what it is for, and its SwinV2 trunk (the bare model or the detector's backbone)."""

    name: str
    model: torch.nn.Module
    processor: BaseImageProcessor
    task: str  # "classify", "detect", "reconstruct" or "features" (a bare model or backbone)
    trunk: torch.nn.Module

    @property
    def config(self) -> Any:
        return self.trunk.config

    @property
    def modeling(self) -> ModuleType:
        """The module the trunk's code comes from (this package's, or the repository's remote code): its own geometry
        and constants, so that the pictures follow the code that runs."""
        return sys.modules[type(self.trunk).__module__]


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def model_kind(name: str, config: Any) -> tuple[str, type]:
    """The demo task and Auto class of a config, or a DemoError for a model that is not a swinv2_hf one."""
    backbone = getattr(config, "backbone_config", None)
    if config.model_type == MODEL_TYPE:
        architecture = (getattr(config, "architectures", None) or ["SwinV2Model"])[0]
        return TASKS.get(architecture, ("features", AutoModel))
    if getattr(backbone, "model_type", None) == MODEL_TYPE:
        return "detect", AutoModelForObjectDetection
    hint = " Convert it first: swinv2-hf convert --source transformers." if config.model_type == "swinv2" else ""
    raise DemoError(
        f"{name} holds a {config.model_type!r} model, not a swinv2_hf one. Give a folder written by swinv2_hf "
        f"(swinv2-hf convert, run_classification.py, run_detection.py, run_simmim.py) or its Hub repository.{hint}"
    )


def reading(load: Callable[[], Any], problem: str, advice: str) -> Any:
    """What `load` returns, or a DemoError: the problem, the first line of what went wrong, and what to do."""
    try:
        return load()
    except (OSError, ValueError) as error:
        raise DemoError(f"{problem}: {first_line(error)} {advice}") from error


def load_demo_model(name: str) -> DemoModel:
    """The model of a folder or Hub repository, in eval mode, with its image processor.

    Raises:
        DemoError: nothing at `name`, a model of another type, or a folder without an image processor.
    """
    config = reading(
        lambda: AutoConfig.from_pretrained(name, trust_remote_code=True),
        f"Cannot read a model config at {name!r}",
        "Give a folder with a config.json or a Hub repository id.",
    )
    task, auto_class = model_kind(name, config)
    processor = reading(
        lambda: AutoImageProcessor.from_pretrained(name, trust_remote_code=True),
        f"{name} has no image processor (preprocessor_config.json)",
        "Folders written by swinv2_hf have one; save the processor the model was trained with beside it.",
    )
    model = auto_class.from_pretrained(name, trust_remote_code=True).eval()
    trunk = next(module for module in model.modules() if type(module).__name__ in ("SwinV2Model", "SwinV2Backbone"))
    return DemoModel(name, model, processor, task, trunk)


def default_model_name() -> str:
    """The Space's model, else the main job's digits model, else the digits model trained now for a few epochs."""
    if SPACE_SETTINGS.is_file():
        return json.loads(SPACE_SETTINGS.read_text(encoding="utf-8"))["model"]
    if MAIN_JOB_MODEL.is_dir():
        return str(MAIN_JOB_MODEL)
    if not (QUICK_OUTPUT / "model").is_dir():
        print(f"No model given and no main-job output: the digits model, {QUICK_EPOCHS} epochs -> {QUICK_OUTPUT}")
        arguments = ["--num_train_epochs", str(QUICK_EPOCHS), "--output_dir", str(QUICK_OUTPUT)]
        subprocess.run([sys.executable, str(RUN_CLASSIFICATION), *arguments], check=True)
    return str(QUICK_OUTPUT / "model")


# ----------------------------------------------------------------------------------------------------------------------
# Images: uploads and samples
# ----------------------------------------------------------------------------------------------------------------------


def open_image(path: str | None, demo: DemoModel) -> Image.Image:
    """The RGB image at an uploaded path; a DemoError for a missing, unreadable or too small one."""
    if not path:
        raise DemoError("Upload an image or pick one of the samples first.")
    try:
        with Image.open(path) as image:
            image.load()
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise DemoError(
            f"{Path(path).name} is not an image this demo can read ({first_line(error)}). Upload a PNG, JPEG, WebP, "
            "BMP or GIF file."
        ) from error
    patch = demo.config.patch_size
    if min(image.size) < patch:
        raise DemoError(
            f"The image is {image.width}x{image.height} px, smaller than one {patch}x{patch} patch of the model: it "
            f"holds less than one token. Upload an image of at least {patch}x{patch} px."
        )
    return image.convert("RGB") if image.mode != "RGB" else image


def pixel_values_of(demo: DemoModel, image: Image.Image) -> torch.Tensor:
    """(1, 3, H, W) pixels as the model's own processor prepares them, in the model's dtype."""
    pixels = demo.processor(images=image, return_tensors="pt")["pixel_values"]
    return pixels.to(demo.model.dtype)


def write_samples(folder: Path) -> list[str]:
    """Sample images as PNG files in `folder`: scikit-image's photographs and scikit-learn's digits as the main job
    renders them (32x32 RGB, white ink on black). Both ship inside their packages: nothing is downloaded."""
    from skimage import data
    from sklearn.datasets import load_digits

    images = {name: Image.fromarray(getattr(data, name)()) for name in ("chelsea", "coffee", "astronaut", "rocket")}
    digits = load_digits()
    for index in (0, 13, 27):  # one 0, one 3 and one 7
        ink = np.round(digits.images[index] * (255 / 16)).astype(np.uint8)
        digit = Image.fromarray(ink).resize((DIGITS_SIDE, DIGITS_SIDE), Image.Resampling.BICUBIC).convert("RGB")
        images[f"digit_{digits.target[index]}"] = digit
    paths = []
    for name, image in images.items():
        path = folder / f"{name}.png"
        image.save(path)
        paths.append(str(path))
    return paths


# ----------------------------------------------------------------------------------------------------------------------
# Classify, detect, reconstruct
# ----------------------------------------------------------------------------------------------------------------------


def classify(demo: DemoModel, image: Image.Image) -> tuple[dict[str, float], float]:
    """The top-5 classes with their probabilities, and the model's forward time in milliseconds."""
    pixel_values = pixel_values_of(demo, image)
    start = time.perf_counter()
    with torch.inference_mode():
        logits = demo.model(pixel_values).logits[0]
    milliseconds = (time.perf_counter() - start) * 1000
    probabilities = logits.float().softmax(-1)
    top = probabilities.topk(min(TOP_K, len(probabilities)))
    labels = demo.model.config.id2label
    return {labels[int(i)]: float(p) for p, i in zip(top.values, top.indices)}, milliseconds


def detect(demo: DemoModel, image: Image.Image) -> list[dict]:
    """Every detection transformers' pipeline keeps at score 0: the slider filters them without running again."""
    detector = pipeline("object-detection", model=demo.model, image_processor=demo.processor)
    return detector(image, threshold=0.0)


def annotations(detections: list[dict], threshold: float) -> list[tuple[tuple[int, int, int, int], str]]:
    """Boxes at or above `threshold`, labelled with class and score, for gradio's AnnotatedImage."""
    kept = sorted((d for d in detections if d["score"] >= threshold), key=lambda d: -d["score"])
    return [
        ((d["box"]["xmin"], d["box"]["ymin"], d["box"]["xmax"], d["box"]["ymax"]), f"{d['label']} {d['score']:.2f}")
        for d in kept
    ]


def mask_patch_size(image_size: int, patch_size: int) -> int:
    """SimMIM's mask patch at this image size: the paper's share (32 of 192 px), as a multiple of the model's patch
    that divides the image."""
    choices = [size for size in range(patch_size, image_size + 1, patch_size) if image_size % size == 0]
    return min(reversed(choices), key=lambda size: abs(size - PAPER_MASK_SHARE * image_size))


def random_patch_mask(config: Any, ratio: float, seed: int) -> torch.Tensor:
    """(1, H/patch, W/patch) bool: a `ratio` of the mask patches (rounded up) masked, SimMIM's layout."""
    height, width = config.image_height_width
    cell = mask_patch_size(min(height, width), config.patch_size)
    rows, columns = height // cell, width // cell
    order = torch.randperm(rows * columns, generator=torch.Generator().manual_seed(seed))
    cells = torch.zeros(rows * columns, dtype=torch.bool)
    cells[order[: math.ceil(ratio * rows * columns)]] = True
    scale = cell // config.patch_size
    return cells.view(1, rows, columns).repeat_interleave(scale, 1).repeat_interleave(scale, 2)


@dataclass
class Reconstruction:
    masked: np.ndarray  # (H, W, 3) in [0, 1]: the input, masked patches grey
    reconstruction: np.ndarray  # (H, W, 3) in [0, 1]: the prediction, in the target's scale
    target: np.ndarray  # (H, W, 3) in [0, 1]: what the loss compares with (normalised per neighbourhood if so trained)
    loss: float


def to_unit_range(pixels: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> np.ndarray:
    """(3, H, W) -> (H, W, 3) in [0, 1], each channel mapped by the same range (so prediction and target compare)."""
    return ((pixels - low) / (high - low).clamp_min(1e-6)).clamp(0, 1).permute(1, 2, 0).float().numpy()


def reconstruct(demo: DemoModel, image: Image.Image, ratio: float, seed: int) -> Reconstruction:
    """SimMIM on one image: the masked input, the model's reconstruction and its target, in one colour scale."""
    pixel_values = pixel_values_of(demo, image)
    mask = random_patch_mask(demo.config, ratio, seed)
    with torch.inference_mode():
        outputs = demo.model(pixel_values, bool_masked_pos=mask)
    norm = demo.config.mim_norm_target_patch_size
    target = demo.modeling.normalize_targets(pixel_values, norm)[0] if norm else pixel_values[0]
    low, high = target.amin(dim=(1, 2), keepdim=True), target.amax(dim=(1, 2), keepdim=True)
    patch = demo.config.patch_size
    pixel_mask = mask[0].repeat_interleave(patch, 0).repeat_interleave(patch, 1)
    inputs = to_unit_range(pixel_values[0], *(pixel_values[0].amin((1, 2), True), pixel_values[0].amax((1, 2), True)))
    inputs[pixel_mask.numpy()] = MASK_GREY
    return Reconstruction(
        masked=inputs,
        reconstruction=to_unit_range(outputs.reconstruction[0], low, high),
        target=to_unit_range(target, low, high),
        loss=float(outputs.loss),
    )


# ----------------------------------------------------------------------------------------------------------------------
# Inside SwinV2: what each picture shows, computed from the model's own modules
# ----------------------------------------------------------------------------------------------------------------------


def attention_modules(demo: DemoModel) -> list[list[torch.nn.Module]]:
    """Every block's window attention, stage by stage."""
    return [[block.attention for block in stage.blocks] for stage in demo.trunk.encoder.stages]


def trained_window(attention: torch.nn.Module) -> int:
    """The window the weights were trained with: the pretraining window after a transfer, else the block's own."""
    return attention.pretrained_window or attention.window


def position_bias_table(demo: DemoModel, attention: torch.nn.Module, window: int) -> torch.Tensor:
    """16 * sigmoid(CPB) over every relative offset of a `window` x `window` window: (heads, 2w-1, 2w-1).

    The coordinates are normalised by the trained window, as a model transferred to `window` sets
    `pretrained_window_sizes`: a larger window reaches offsets beyond the trained ones (log-spaced coordinates past
    +-8), which the MLP extrapolates.
    """
    coordinates, _ = demo.modeling.relative_position_tables(window, trained_window(attention))
    first, _, last = attention.continuous_position_bias_mlp
    with torch.inference_mode():
        table = last(torch.relu(first(coordinates.to(first.weight.dtype))))  # (2w-1, 2w-1, heads)
    return demo.modeling.POSITION_BIAS_SCALE * torch.sigmoid(table.permute(2, 0, 1).float())


def logit_scales(demo: DemoModel) -> list[torch.Tensor]:
    """Each stage's learned temperature per block and head, min(exp(logit_scale), 100): (blocks, heads)."""
    maximum = demo.modeling.LOGIT_SCALE_MAX
    return [
        torch.stack([a.logit_scale.detach().clamp(max=maximum).exp().flatten().float() for a in stage])
        for stage in attention_modules(demo)
    ]


@dataclass
class Inside:
    """One forward pass, seen from the stages: each stage's map before patch merging and its blocks' attentions."""

    stage_maps: list[torch.Tensor]  # (C, H, W) per stage
    attentions: list[tuple[torch.Tensor, ...]]  # per stage, per block: (num_windows, heads, N, N) of the image


def look_inside(demo: DemoModel, pixel_values: torch.Tensor) -> Inside:
    """Run the trunk on one image with `output_attentions`, keeping what every stage returns."""
    stage_maps, attentions = [], []

    def keep(stage: torch.nn.Module, inputs: tuple, outputs: tuple) -> None:
        _, height, width = inputs[:3]
        _, before_merging, stage_attentions = outputs
        stage_maps.append(before_merging[0].transpose(0, 1).reshape(-1, height, width))
        attentions.append(stage_attentions)

    hooks = [stage.register_forward_hook(keep) for stage in demo.trunk.encoder.stages]
    try:
        with torch.inference_mode():
            demo.trunk(pixel_values, output_attentions=True)
    finally:
        for hook in hooks:
            hook.remove()
    return Inside(stage_maps, attentions)


@dataclass
class WindowAttention:
    weights: torch.Tensor  # (H, W) over the stage's map: the clicked token's attention, 0 outside its window
    cells: list[tuple[int, int]]  # (row, column) of every token of the window, on the map


def window_attention(
    demo: DemoModel, inside: Inside, stage: int, block: int, head: int, row: int, column: int
) -> WindowAttention:
    """Where the token at (`row`, `column`) of a stage's map looks: its row of the attention probabilities, put back
    on the map through the block's shift and padding."""
    height, width = inside.stage_maps[stage].shape[1:]
    window, shift = demo.modeling.window_and_shift(height, width, demo.config.window_size)
    shift = shift if demo.trunk.encoder.stages[stage].blocks[block].shifted else 0
    padded_height, padded_width = math.ceil(height / window) * window, math.ceil(width / window) * window
    # The block rolls the map by -shift: the token at (r, c) sits at (r - shift, c - shift) of the rolled map.
    rolled_row, rolled_column = (row - shift) % padded_height, (column - shift) % padded_width
    window_index = (rolled_row // window) * (padded_width // window) + rolled_column // window
    token = (rolled_row % window) * window + rolled_column % window
    probabilities = inside.attentions[stage][block][window_index, head, token].float()
    weights = torch.zeros(height, width)
    cells = []
    top, left = rolled_row // window * window, rolled_column // window * window
    for index, probability in enumerate(probabilities.tolist()):
        map_row = (top + index // window + shift) % padded_height
        map_column = (left + index % window + shift) % padded_width
        if map_row < height and map_column < width:  # padding tokens are not on the map
            weights[map_row, map_column] = probability
            cells.append((map_row, map_column))
    return WindowAttention(weights, cells)


def feature_norms(inside: Inside) -> list[torch.Tensor]:
    """The L2 norm over channels of each stage's map: (H, W) per stage."""
    return [stage_map.float().norm(dim=0) for stage_map in inside.stage_maps]


# ----------------------------------------------------------------------------------------------------------------------
# Pictures
# ----------------------------------------------------------------------------------------------------------------------


def figure_image(figure: Figure) -> Image.Image:
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())


def heatmap_grid(
    maps: list[torch.Tensor], titles: list[str], title: str, low: float | None, high: float | None
) -> Image.Image:
    """Heatmaps side by side, up to 8 per row, with one colour bar (a shared scale when `low`/`high` are given)."""
    columns = min(len(maps), 8)
    rows = math.ceil(len(maps) / columns)
    figure = Figure(figsize=(1.8 * columns + 1.2, 1.9 * rows + 0.5), dpi=90, layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    shown = None
    for axis, values, name in zip(axes.flat, maps, titles):
        shown = axis.imshow(values.numpy(), cmap=HEATMAP_COLOURS, vmin=low, vmax=high, interpolation="nearest")
        axis.set_title(name, fontsize=9)
    for axis in axes.flat:
        axis.set_axis_off()
    figure.colorbar(shown, ax=axes, shrink=0.8)
    figure.suptitle(title, fontsize=10)
    return figure_image(figure)


def bias_picture(demo: DemoModel, stage: int, block: int, window: int) -> Image.Image:
    attention = attention_modules(demo)[stage][block]
    tables = position_bias_table(demo, attention, window)
    trained = trained_window(attention)
    how = "trained window" if window == trained else f"stretched from the trained {trained}x{trained}"
    title = f"Position bias 16*sigmoid(CPB)\nstage {stage + 1}, block {block + 1}, window {window}x{window} ({how})"
    titles = [f"head {head + 1}" for head in range(len(tables))]
    return heatmap_grid(list(tables), titles, title, float(tables.min()), float(tables.max()))


def enlarged(image: np.ndarray, side: int = DISPLAY_SIDE) -> np.ndarray:
    """`image` repeated to at least `side` pixels on its shorter side (a 32 px digit is unreadable at its own size)."""
    factor = max(1, math.ceil(side / min(image.shape[:2])))
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def attention_picture(image: np.ndarray, seen: WindowAttention, clicked: tuple[int, int]) -> Image.Image:
    """`image` (the model input, any scale) with the window's attention over it, brighter where the clicked token
    (circled) looks more, the rest of the image dimmed."""
    height, width = seen.weights.shape
    rows = np.arange(image.shape[0]) * height // image.shape[0]  # the map cell under every pixel
    columns = np.arange(image.shape[1]) * width // image.shape[1]
    weights = (seen.weights / seen.weights.max().clamp_min(1e-12)).numpy()[rows][:, columns]
    in_window = np.zeros((height, width), dtype=bool)
    in_window[tuple(zip(*seen.cells))] = True
    overlay = colormaps[HEATMAP_COLOURS](weights)[..., :3]
    blended = np.where(in_window[rows][:, columns, None], 0.35 * image + 0.65 * overlay, 0.25 * image)
    picture = Image.fromarray((blended * 255).round().astype(np.uint8))
    cell_height, cell_width = image.shape[0] / height, image.shape[1] / width
    row, column = clicked
    centre_x, centre_y = (column + 0.5) * cell_width, (row + 0.5) * cell_height
    radius = max(3.0, 0.5 * min(cell_width, cell_height))
    box = [centre_x - radius, centre_y - radius, centre_x + radius, centre_y + radius]
    ImageDraw.Draw(picture).ellipse(box, outline="red", width=2)
    return picture


def logit_scale_picture(scales: list[torch.Tensor]) -> Image.Image:
    """Per stage, blocks x heads with the learned temperature written in each cell."""
    figure = Figure(figsize=(3.2 * len(scales), 2.8), dpi=90, layout="constrained")
    axes = figure.subplots(1, len(scales), squeeze=False)[0]
    high = max(float(s.max()) for s in scales)
    for stage, (axis, values) in enumerate(zip(axes, scales)):
        shown = axis.imshow(values.numpy(), cmap=HEATMAP_COLOURS, vmin=0, vmax=high, aspect="auto")
        axis.set_title(f"stage {stage + 1}", fontsize=9)
        axis.set_xlabel("head", fontsize=8)
        axis.set_ylabel("block", fontsize=8)
        axis.set_xticks(range(values.shape[1]), [str(h + 1) for h in range(values.shape[1])], fontsize=7)
        axis.set_yticks(range(values.shape[0]), [str(b + 1) for b in range(values.shape[0])], fontsize=7)
        if values.numel() <= 64:
            for (block, head), value in np.ndenumerate(values.numpy()):
                axis.text(head, block, f"{value:.1f}", ha="center", va="center", fontsize=6, color="black")
    figure.colorbar(shown, ax=axes, shrink=0.8)
    figure.suptitle("logit scale min(exp(s), 100): the temperature of each head's cosine attention", fontsize=10)
    return figure_image(figure)


# ----------------------------------------------------------------------------------------------------------------------
# The app
# ----------------------------------------------------------------------------------------------------------------------


def shown_errors(function: Callable) -> Callable:
    """Turn a DemoError into gradio's error message in the page (a toast), keeping the traceback out of it."""

    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except DemoError as error:
            raise gr.Error(str(error), print_exception=False) from error

    run.__name__ = function.__name__
    return run


def passing_unreadable_files(preprocess: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """gr.Image's preprocessing, handing over the uploaded file's path where PIL cannot open it, so that `open_image`
    says what is wrong in the page (gr.Image would raise from PIL, which the page shows as a bare "Error")."""

    def tolerant(payload: Any) -> Any:
        try:
            return preprocess(payload)
        except (UnidentifiedImageError, OSError, ValueError):
            return payload.path if payload is not None else None

    return tolerant


def image_input(label: str, samples: list[str]) -> gr.Image:
    image = gr.Image(type="filepath", label=label, sources=["upload", "clipboard"], height=300)
    image.preprocess = passing_unreadable_files(image.preprocess)  # not a subclass: gradio writes .pyi files for those
    gr.Examples(samples, inputs=image, label="Samples (scikit-image, scikit-learn digits)")
    return image


def classify_tab(demo: DemoModel, samples: list[str]) -> None:
    with gr.Row():
        with gr.Column():
            image = image_input("Image to classify", samples)
            button = gr.Button("Classify", variant="primary")
        with gr.Column():
            top5 = gr.Label(num_top_classes=TOP_K, label="Top-5", elem_id="top5")
            latency = gr.Markdown(elem_id="latency")

    @shown_errors
    def run(path: str | None) -> tuple[dict[str, float], str]:
        scores, milliseconds = classify(demo, open_image(path, demo))
        threads = torch.get_num_threads()
        return scores, f"Forward pass: **{milliseconds:.1f} ms** (batch 1, {threads} CPU threads, after preprocessing)"

    button.click(run, image, [top5, latency])
    image.upload(run, image, [top5, latency])


def detect_tab(demo: DemoModel, samples: list[str]) -> None:
    with gr.Row():
        with gr.Column():
            image = image_input("Image to detect objects in", samples)
            threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="Score threshold")
            button = gr.Button("Detect", variant="primary")
        boxes = gr.AnnotatedImage(label="Detections", elem_id="detections")
    detections = gr.State([])

    @shown_errors
    def run(path: str | None, threshold: float) -> tuple[tuple, list[dict]]:
        found = detect(demo, open_image(path, demo))
        return (path, annotations(found, threshold)), found

    def refilter(path: str | None, threshold: float, found: list[dict]) -> tuple:
        return (path, annotations(found, threshold)) if path else None

    button.click(run, [image, threshold], [boxes, detections])
    threshold.release(refilter, [image, threshold, detections], boxes)


def reconstruct_tab(demo: DemoModel, samples: list[str]) -> None:
    with gr.Row():
        with gr.Column():
            image = image_input("Image to mask and reconstruct", samples)
            ratio = gr.Slider(0.1, 0.9, value=0.6, step=0.05, label="Masked share of the image (SimMIM: 0.6)")
            seed = gr.Number(0, precision=0, label="Mask seed")
            button = gr.Button("Reconstruct", variant="primary")
        with gr.Column():
            with gr.Row():
                masked = gr.Image(label="Masked input")
                prediction = gr.Image(label="Reconstruction")
                target = gr.Image(label="Target")
            loss = gr.Markdown()

    @shown_errors
    def run(path: str | None, ratio: float, seed: float) -> tuple:
        result = reconstruct(demo, open_image(path, demo), ratio, int(seed))
        return result.masked, result.reconstruction, result.target, f"L1 loss on the masked pixels: {result.loss:.4f}"

    button.click(run, [image, ratio, seed], [masked, prediction, target, loss])


def choice_slider(count: int, label: str) -> gr.Slider:
    """A slider over 1..`count`, fixed at 1 when there is only one (gradio needs two ends)."""
    return gr.Slider(1, max(count, 2), value=1, step=1, label=label, interactive=count > 1)


def inside_tab(demo: DemoModel, samples: list[str]) -> None:
    depths = [len(stage) for stage in attention_modules(demo)]
    windows = [trained_window(stage[0]) for stage in attention_modules(demo)]

    def sliders(stage: int) -> tuple[gr.Slider, gr.Slider, gr.Slider]:
        """Block, head and larger-window sliders over what `stage` has."""
        return (
            choice_slider(depths[stage], "Block"),
            choice_slider(demo.config.num_heads[stage], "Head"),
            gr.Slider(2, 4 * max(windows), value=2 * windows[stage], step=1, label="Larger window (transfer)"),
        )

    def biases(stage: int, block: float, larger: float) -> tuple[Image.Image, Image.Image]:
        block = min(int(block), depths[stage]) - 1
        return bias_picture(demo, stage, block, windows[stage]), bias_picture(demo, stage, block, int(larger))

    gr.Markdown(
        "SwinV2's own parts: the continuous position bias (a small MLP over log-spaced offsets, eq. 4), stretched to a "
        "larger window as a transferred model does; the attention in the window under a pixel you click; the norm of "
        "each stage's feature map; and each head's learned logit scale (the temperature of cosine attention, eq. 2)."
    )
    with gr.Row():
        stage = gr.Dropdown([(f"stage {s + 1}", s) for s in range(len(depths))], value=0, label="Stage")
        block, head, larger = sliders(0)
    initial = biases(0, 1, 2 * windows[0])
    with gr.Row():
        # The pictures carry their titles: gradio's label would cover them.
        trained_bias = gr.Image(
            initial[0], label="Position bias, trained window", show_label=False, elem_id="bias-trained"
        )
        larger_bias = gr.Image(
            initial[1], label="Position bias, larger window", show_label=False, elem_id="bias-larger"
        )
    with gr.Row():
        with gr.Column():
            image = image_input("Image", samples)
            button = gr.Button("Look inside", variant="primary")
        with gr.Column():
            clickable = gr.Image(label="Model input: click a pixel", interactive=False, elem_id="model-input")
            attention = gr.Image(
                label="Attention in the clicked pixel's window (stage, block, head above)", elem_id="attention"
            )
    norms = gr.Image(label="Feature-map norms", show_label=False, elem_id="feature-norms")
    gr.Image(logit_scale_picture(logit_scales(demo)), label="Logit scales", show_label=False, elem_id="logit-scales")
    seen = gr.State(None)  # (Inside, the model input as shown) of the last image looked at

    def choose_stage(stage: int) -> tuple:
        return (*sliders(stage), *biases(stage, 1, 2 * windows[stage]))

    @shown_errors
    def run(path: str | None) -> tuple:
        pixel_values = pixel_values_of(demo, open_image(path, demo))
        inside = look_inside(demo, pixel_values)
        titles = [f"stage {s + 1}" for s in range(len(depths))]
        picture = heatmap_grid(feature_norms(inside), titles, "Feature maps: L2 norm over channels", None, None)
        low, high = pixel_values[0].amin((1, 2), True), pixel_values[0].amax((1, 2), True)
        shown = enlarged(to_unit_range(pixel_values[0], low, high))
        return shown, picture, (inside, shown)

    def click(stage: int, block: float, head: float, seen: tuple | None, event: gr.SelectData) -> Image.Image:
        if seen is None:
            raise gr.Error("Press 'Look inside' first, then click a pixel of the model input.", print_exception=False)
        inside, shown = seen
        height, width = inside.stage_maps[stage].shape[1:]
        x, y = event.index
        row, column = int(y * height / shown.shape[0]), int(x * width / shown.shape[1])
        block = min(int(block), depths[stage]) - 1
        result = window_attention(demo, inside, stage, block, int(head) - 1, row, column)
        return attention_picture(shown, result, (row, column))

    stage.change(choose_stage, stage, [block, head, larger, trained_bias, larger_bias])
    for control in (block, larger):
        control.release(biases, [stage, block, larger], [trained_bias, larger_bias])
    button.click(run, image, [clickable, norms, seen])
    clickable.select(click, [stage, block, head, seen], attention)


TABS = {
    "classify": ("Classify", classify_tab),
    "detect": ("Detect", detect_tab),
    "reconstruct": ("Reconstruct (SimMIM)", reconstruct_tab),
}


def shown_name(name: str) -> str:
    """A folder of this repository by its path in it (the page should not show the machine's paths), anything else as
    given."""
    path = Path(name).resolve()
    return str(path.relative_to(REPOSITORY)) if path.exists() and path.is_relative_to(REPOSITORY) else name


def build_app(demo: DemoModel, samples: list[str]) -> gr.Blocks:
    """The page: the tab of the model's task (none for a bare model or backbone), then Inside SwinV2."""
    config = demo.config
    with gr.Blocks(title=f"SwinV2: {demo.name}") as app:
        gr.Markdown(
            f"## SwinV2 ({config.embed_dim}-wide, depths {list(config.depths)}, window {config.window_size}, "
            f"{config.image_size} px) — `{shown_name(demo.name)}`"
        )
        with gr.Tabs():
            if demo.task in TABS:
                label, build = TABS[demo.task]
                with gr.Tab(label):
                    build(demo, samples)
            with gr.Tab("Inside SwinV2"):
                inside_tab(demo, samples)
    return app


def warm_up(demo: DemoModel) -> None:
    """One forward pass before serving, so that the first latency shown is not the one-time setup's."""
    with torch.inference_mode():
        demo.trunk(torch.zeros(1, demo.config.num_channels, *demo.config.image_height_width, dtype=demo.model.dtype))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="a swinv2_hf folder or Hub repository id (default: see above)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0 for other machines)")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args()
    try:
        demo = load_demo_model(args.model or default_model_name())
    except DemoError as error:
        parser.exit(2, f"error: {error}\n")
    warm_up(demo)
    with tempfile.TemporaryDirectory(prefix="swinv2-demo-samples-") as folder:
        samples = write_samples(Path(folder))
        build_app(demo, samples).launch(server_name=args.host, server_port=args.port, allowed_paths=[folder])


if __name__ == "__main__":
    main()
