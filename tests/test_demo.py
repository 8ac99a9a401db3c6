"""The Gradio demo (examples/demo/app.py): each picture against the model's own computation, the tasks against
transformers' pipelines, bad input as a message, the Space folder on a Hub on loopback (where the app runs without
swinv2_hf, from the repository's remote code), and the page itself in Debian's Chromium driven by Playwright."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import BLOCK_SWINV2, randomize_weights, tiny_config
from fake_hub import FakeHub, client_environ, run_client
from PIL import Image
from swinv2_hf_demo import app
from swinv2_hf_demo.space import write_space
from test_detector_remote_code import PROCESSORS
from test_detectors import DETECTORS
from transformers import pipeline

from swinv2_hf import (
    Preprocessing,
    SwinV2ForImageClassification,
    SwinV2ForMaskedImageModeling,
    SwinV2Model,
    image_processor_for,
    save_detector,
    transfer_config,
)

APP = Path(app.__file__)
CHROMIUM = "/usr/bin/chromium"
LABELS = ["cat", "coffee", "astronaut", "rocket", "digit"]


def save_model(model: torch.nn.Module, folder: Path) -> Path:
    """`model` with random weights and the processor the package writes for it: a folder the demo takes."""
    randomize_weights(model)
    model.save_pretrained(folder)
    image_processor_for(model.config, Preprocessing(crop_fraction=1.0)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def classifier_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = tiny_config(id2label=dict(enumerate(LABELS)), label2id={name: i for i, name in enumerate(LABELS)})
    return save_model(SwinV2ForImageClassification(config), tmp_path_factory.mktemp("demo") / "classifier")


@pytest.fixture(scope="module")
def classifier(classifier_folder: Path) -> app.DemoModel:
    return app.load_demo_model(str(classifier_folder))


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {Path(path).stem: Path(path) for path in app.write_samples(tmp_path_factory.mktemp("samples"))}


def block_attentions(demo: app.DemoModel, pixel_values: torch.Tensor) -> list[list[torch.Tensor]]:
    """The model's `output_attentions`, regrouped by stage."""
    with torch.no_grad():
        flat = list(demo.trunk(pixel_values, output_attentions=True).attentions)
    return [[flat.pop(0) for _ in stage.blocks] for stage in demo.trunk.encoder.stages]


def expected_window_attention(
    attention: torch.Tensor, grid: tuple[int, int], window: int, shift: int, head: int, row: int, column: int
) -> tuple[torch.Tensor, set[tuple[int, int]]]:
    """Where a token looks, and its window's tokens on the map, found by moving token numbers as the block moves
    tokens (pad, roll, cut into windows)."""
    height, width = grid
    numbers = torch.arange(height * width).view(height, width)
    numbers = F.pad(numbers, (0, -width % window, 0, -height % window), value=-1)
    numbers = torch.roll(numbers, (-shift, -shift), (0, 1))
    rows, columns = numbers.shape[0] // window, numbers.shape[1] // window
    windows = numbers.view(rows, window, columns, window).permute(0, 2, 1, 3).reshape(rows * columns, -1)
    window_index, position = (windows == row * width + column).nonzero()[0].tolist()
    members = windows[window_index]
    expected = torch.zeros(height * width)
    expected[members[members >= 0]] = attention[window_index, head, position][members >= 0].float()
    cells = {divmod(int(number), width) for number in members[members >= 0]}
    return expected.view(height, width), cells


def test_the_page_names_this_repositorys_folders_by_their_path_in_it() -> None:
    assert app.shown_name(str(app.REPOSITORY / "examples" / "demo")) == "examples/demo"
    assert app.shown_name("user/swinv2-digits") == "user/swinv2-digits"


def test_without_a_model_the_main_jobs_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, classifier_folder: Path
) -> None:
    monkeypatch.setattr(app, "SPACE_SETTINGS", tmp_path / "space.json")  # not a Space
    monkeypatch.setattr(app, "MAIN_JOB_MODEL", classifier_folder)
    assert app.default_model_name() == str(classifier_folder)


# ----------------------------------------------------------------------------------------------------------------------
# Pictures
# ----------------------------------------------------------------------------------------------------------------------


def test_position_bias_tables_spread_to_the_models_own_bias(classifier: app.DemoModel) -> None:
    for stage in app.attention_modules(classifier):
        for attention in stage:
            table = app.position_bias_table(classifier, attention, attention.window)  # (heads, 2w-1, 2w-1)
            assert table.shape == (attention.num_heads, 2 * attention.window - 1, 2 * attention.window - 1)
            spread = table.flatten(1)[:, attention.relative_position_index.flatten()].view_as(
                attention.position_bias(attention.window)
            )
            torch.testing.assert_close(spread, attention.position_bias(attention.window), rtol=0, atol=1e-6)


def test_the_larger_window_table_is_the_bias_of_the_transferred_model(classifier: app.DemoModel) -> None:
    transferred_config = transfer_config(classifier.config, 32, window_size=4)
    transferred = SwinV2ForImageClassification(transferred_config).eval()
    transferred.load_state_dict(classifier.model.state_dict())
    pairs = zip(
        app.attention_modules(classifier), [[b.attention for b in s.blocks] for s in transferred.swinv2.encoder.stages]
    )
    for stage, transferred_stage in pairs:
        for attention, moved in zip(stage, transferred_stage):
            assert (moved.window, moved.pretrained_window) == (4, attention.window)  # a real stretch: 2 -> 4
            table = app.position_bias_table(classifier, attention, 4)
            spread = table.flatten(1)[:, moved.relative_position_index.flatten()].view(attention.num_heads, 16, 16)
            torch.testing.assert_close(spread, moved.position_bias(4), rtol=0, atol=1e-6)


@pytest.mark.parametrize("side", [32, 34])  # 34: a 17x17 map, padded to whole windows
def test_window_attention_is_the_row_of_output_attentions(classifier: app.DemoModel, side: int) -> None:
    pixel_values = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(side))
    inside = app.look_inside(classifier, pixel_values)
    attentions = block_attentions(classifier, pixel_values)
    config = classifier.config
    for stage, stage_attentions in enumerate(attentions):
        grid = tuple(inside.stage_maps[stage].shape[1:])
        for block, attention in enumerate(stage_attentions):
            window = math.isqrt(attention.shape[-1])
            shift = window // 2 if block % 2 == 1 and min(grid) > config.window_size else 0
            for head in range(attention.shape[1]):
                for row, column in ((0, 0), (grid[0] - 1, grid[1] - 1), (grid[0] // 2, 1)):
                    seen = app.window_attention(classifier, inside, stage, block, head, row, column)
                    expected, cells = expected_window_attention(attention, grid, window, shift, head, row, column)
                    torch.testing.assert_close(seen.weights, expected, rtol=0, atol=0)
                    assert sorted(seen.cells) == sorted(cells) and (row, column) in cells
                    assert seen.weights.sum().item() == pytest.approx(1.0, abs=1e-5)  # no key of the map is lost


def test_feature_norms_are_the_norms_of_each_stages_map(classifier: app.DemoModel) -> None:
    """The last stage's map is the model's last hidden state before the final norm; each earlier one, merged by the
    next stage's patch merging, is the model's hidden state after that stage."""
    pixel_values = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    inside = app.look_inside(classifier, pixel_values)
    with torch.no_grad():
        hidden = classifier.trunk(pixel_values, output_hidden_states=True).reshaped_hidden_states
    norms = app.feature_norms(inside)
    torch.testing.assert_close(norms[-1], hidden[-1][0].norm(dim=0), rtol=1e-5, atol=1e-5)
    for stage, stage_map in enumerate(inside.stage_maps[:-1]):
        _, height, width = stage_map.shape
        torch.testing.assert_close(norms[stage], stage_map.norm(dim=0))
        with torch.no_grad():
            tokens = stage_map.flatten(1).T.unsqueeze(0)
            merged = classifier.trunk.encoder.stages[stage].downsample(tokens, height, width, None)
        torch.testing.assert_close(merged[0].T.reshape_as(hidden[stage + 1][0]), hidden[stage + 1][0])


def test_logit_scales_are_the_clamped_temperatures(classifier_folder: Path) -> None:
    demo = app.load_demo_model(str(classifier_folder))
    first = app.attention_modules(demo)[0][0]
    with torch.no_grad():
        first.logit_scale[:, 0, 0] = torch.tensor([math.log(200.0), math.log(3.0)])
    scales = app.logit_scales(demo)
    assert [tuple(s.shape) for s in scales] == [(1, 2), (2, 2), (1, 4)]  # blocks x heads of the tiny tester
    torch.testing.assert_close(scales[0][0], torch.tensor([100.0, 3.0]))  # min(exp(s), 100), as the model uses it


def test_pictures_render(classifier: app.DemoModel, samples: dict[str, Path]) -> None:
    pixel_values = app.pixel_values_of(classifier, app.open_image(str(samples["chelsea"]), classifier))
    inside = app.look_inside(classifier, pixel_values)
    shown = app.enlarged(app.to_unit_range(pixel_values[0], pixel_values[0].min(), pixel_values[0].max()))
    assert min(shown.shape[:2]) >= app.DISPLAY_SIDE
    seen = app.window_attention(classifier, inside, 1, 1, 0, 3, 3)
    pictures = [
        app.bias_picture(classifier, 0, 0, 2),
        app.bias_picture(classifier, 2, 0, 8),
        app.attention_picture(shown, seen, (3, 3)),
        app.heatmap_grid(app.feature_norms(inside), ["1", "2", "3"], "norms", None, None),
        app.logit_scale_picture(app.logit_scales(classifier)),
    ]
    for picture in pictures:
        assert picture.width > 100 and picture.height > 100
        assert np.asarray(picture).std() > 0  # not blank


# ----------------------------------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------------------------------


def test_classify_gives_the_pipelines_top5(classifier: app.DemoModel, classifier_folder: Path, samples: dict) -> None:
    image = app.open_image(str(samples["coffee"]), classifier)
    scores, milliseconds = app.classify(classifier, image)
    expected = pipeline("image-classification", model=str(classifier_folder))(image, top_k=5)
    assert list(scores) == [p["label"] for p in expected]
    assert list(scores.values()) == pytest.approx([p["score"] for p in expected], abs=1e-6)
    assert milliseconds > 0


def test_reconstruct_masks_the_papers_share(tmp_path: Path, samples: dict) -> None:
    demo = app.load_demo_model(str(save_model(SwinV2ForMaskedImageModeling(tiny_config()), tmp_path / "simmim")))
    assert demo.task == "reconstruct"
    assert app.mask_patch_size(192, 4) == 32  # the paper's mask patch at its image size
    result = app.reconstruct(demo, app.open_image(str(samples["astronaut"]), demo), ratio=0.6, seed=1)
    cells = (32 // app.mask_patch_size(32, 2)) ** 2
    grey = (result.masked == app.MASK_GREY).all(axis=-1)
    assert grey.mean() == pytest.approx(math.ceil(0.6 * cells) / cells)
    for picture in (result.masked, result.reconstruction, result.target):
        assert picture.shape == (32, 32, 3) and picture.min() >= 0 and picture.max() <= 1
    assert result.loss > 0


def test_a_detector_loads_detects_and_shows_its_backbone(tmp_path: Path, samples: dict) -> None:
    folder = tmp_path / "detector"
    save_detector(randomize_weights(DETECTORS["conditional_detr"][0]()), folder)
    PROCESSORS["conditional_detr"]().save_pretrained(folder)
    demo = app.load_demo_model(str(folder))
    assert (demo.task, type(demo.trunk).__name__) == ("detect", "SwinV2Backbone")
    image = app.open_image(str(samples["coffee"]), demo)
    detections = app.detect(demo, image)
    expected = pipeline("object-detection", model=str(folder))(image, threshold=0.0)
    assert [d["label"] for d in detections] == [d["label"] for d in expected] and detections
    kept = app.annotations(detections, threshold=float(np.median([d["score"] for d in detections])))
    assert 0 < len(kept) < len(detections)
    scores = [float(label.split()[-1]) for _, label in kept]
    assert scores == sorted(scores, reverse=True)
    inside = app.look_inside(demo, app.pixel_values_of(demo, image))
    assert len(inside.stage_maps) == len(demo.config.depths)


# ----------------------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------------------


def test_models_of_another_kind_or_nowhere_are_refused(tmp_path: Path) -> None:
    from transformers import Swinv2Config, Swinv2ForImageClassification

    Swinv2ForImageClassification(Swinv2Config(embed_dim=16, depths=[1, 1], num_heads=[1, 1])).save_pretrained(
        tmp_path / "transformers"
    )
    with pytest.raises(app.DemoError, match=r"'swinv2' model, not a swinv2_hf one.*swinv2-hf convert"):
        app.load_demo_model(str(tmp_path / "transformers"))
    with pytest.raises(app.DemoError, match="Cannot read a model config"):
        app.load_demo_model(str(tmp_path / "missing"))
    bare = tmp_path / "bare"
    SwinV2Model(tiny_config()).save_pretrained(bare)
    with pytest.raises(app.DemoError, match="no image processor"):
        app.load_demo_model(str(bare))


def test_the_command_refuses_a_model_of_another_kind_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from transformers import Swinv2Config, Swinv2ForImageClassification

    folder = tmp_path / "transformers"
    Swinv2ForImageClassification(Swinv2Config(embed_dim=16, depths=[1, 1], num_heads=[1, 1])).save_pretrained(folder)
    monkeypatch.setattr(sys, "argv", ["app.py", str(folder)])
    capsys.readouterr()  # what saving the folder printed
    with pytest.raises(SystemExit) as exit_status:
        app.main()
    assert exit_status.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {folder} holds a 'swinv2' model, not a swinv2_hf one. Give a folder written by swinv2_hf (swinv2-hf "
        "convert, run_classification.py, run_detection.py, run_simmim.py) or its Hub repository. Convert it first: "
        "swinv2-hf convert --source transformers."
    ]


def test_unreadable_and_too_small_images_are_refused(classifier: app.DemoModel, tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(app.DemoError, match=r"notes\.png is not an image"):
        app.open_image(str(text), classifier)
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 5)).save(tiny)
    with pytest.raises(app.DemoError, match=r"1x5 px, smaller than one 2x2 patch"):
        app.open_image(str(tiny), classifier)
    with pytest.raises(app.DemoError, match="Upload an image"):
        app.open_image(None, classifier)


# ----------------------------------------------------------------------------------------------------------------------
# The Space
# ----------------------------------------------------------------------------------------------------------------------

# Runs in a fresh interpreter with argv[1] a model folder and argv[2] where to write the Space: pushes the model as
# user/tiny, then runs `swinv2-hf space` for it with --push user/tiny-demo, and downloads the Space back.
PUBLISH_SCRIPT = """
import json
import sys
from pathlib import Path

from huggingface_hub import snapshot_download, space_info

from swinv2_hf import push_folder
from swinv2_hf.cli import main

push_folder(Path(sys.argv[1]), "user/tiny")
status = main(["space", "--model", "user/tiny", "--output", sys.argv[2], "--push", "user/tiny-demo"])
folder = snapshot_download("user/tiny-demo", repo_type="space")
print(json.dumps({"status": status, "folder": folder, "sdk": space_info("user/tiny-demo").sdk}))
"""

# Runs in a fresh interpreter that cannot import swinv2_hf, in the downloaded Space folder: the app as the Space runs
# it, with the model of its space.json from the Hub of HF_ENDPOINT.
SPACE_SCRIPT = (
    BLOCK_SWINV2
    + r"""
import json
import app

demo = app.load_demo_model(app.default_model_name())
image = app.open_image(sys.argv[1], demo)
scores, _ = app.classify(demo, image)
print(json.dumps({"task": demo.task, "module": type(demo.trunk).__module__, "scores": scores}))
"""
)


@pytest.mark.slow
def test_space_folder_runs_the_app_from_the_hub_without_swinv2_hf(
    hub: FakeHub, classifier: app.DemoModel, classifier_folder: Path, samples: dict, tmp_path: Path
) -> None:
    env = client_environ(hub, tmp_path / "home")
    published = run_client(PUBLISH_SCRIPT, env, tmp_path, str(classifier_folder), str(tmp_path / "space"))
    assert published["status"] == 0 and published["sdk"] == "gradio"
    downloaded = Path(published["folder"])
    assert sorted(p.name for p in downloaded.iterdir()) == ["README.md", "app.py", "requirements.txt", "space.json"]
    assert (downloaded / "app.py").read_bytes() == APP.read_bytes()
    readme = (downloaded / "README.md").read_text()
    assert "sdk: gradio" in readme and "app_file: app.py" in readme and "  - user/tiny" in readme
    requirements = (downloaded / "requirements.txt").read_text().split()
    assert [r.split("<")[0].split(">")[0] for r in requirements] == [
        "torch",
        "transformers",
        "matplotlib",
        "scikit-image",
        "scikit-learn",
    ]

    ran = run_client(SPACE_SCRIPT, env, downloaded, str(samples["rocket"]))
    assert ran["task"] == "classify" and not ran["module"].startswith("swinv2_hf.")  # the repository's code
    expected, _ = app.classify(classifier, app.open_image(str(samples["rocket"]), classifier))
    assert list(ran["scores"]) == list(expected)
    assert list(ran["scores"].values()) == pytest.approx(list(expected.values()), abs=1e-5)


def test_space_refuses_to_overwrite(tmp_path: Path) -> None:
    output = tmp_path / "space"
    output.mkdir()
    (output / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError):
        write_space("user/tiny", output)
    assert (output / "mine.txt").read_text() == "keep"


# ----------------------------------------------------------------------------------------------------------------------
# The page, in a real browser
# ----------------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_page(url: str, server: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the app exited with {server.returncode}: {server.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"the app did not answer at {url} within {seconds} s")


@pytest.mark.slow
def test_the_page_classifies_an_upload_and_shows_inside_swinv2(
    classifier: app.DemoModel, classifier_folder: Path, samples: dict, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    image = samples["digit_3"]
    expected, _ = app.classify(classifier, app.open_image(str(image), classifier))
    top_label = next(iter(expected))
    too_small = tmp_path / "too_small.png"
    Image.new("RGB", (1, 1)).save(too_small)
    unreadable = tmp_path / "notes.png"
    unreadable.write_text("not an image")

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(APP), str(classifier_folder), "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_page(url, server)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 2200})
            page.goto(url)
            classify_tab = page.locator(".tabitem:visible")
            classify_tab.locator("input[type=file]").first.set_input_files(str(image))
            expect(page.locator("#top5 [data-testid=label-output-value]")).to_have_text(top_label, timeout=60_000)
            expect(page.locator("#latency")).to_contain_text(" ms", timeout=10_000)

            classify_tab.locator("input[type=file]").first.set_input_files(str(too_small))
            expect(page.get_by_text("smaller than one 2x2 patch")).to_be_visible(timeout=60_000)
            classify_tab.locator("input[type=file]").first.set_input_files(str(unreadable))
            expect(page.get_by_text("notes.png is not an image")).to_be_visible(timeout=60_000)

            page.get_by_role("tab", name="Inside SwinV2").click()
            for picture in ("#bias-trained img", "#bias-larger img", "#logit-scales img"):
                expect(page.locator(picture)).to_be_visible(timeout=30_000)
                assert page.locator(picture).evaluate("img => img.naturalWidth") > 0
            inside_tab = page.locator(".tabitem:visible")
            inside_tab.locator("input[type=file]").first.set_input_files(str(samples["chelsea"]))
            inside_tab.get_by_role("button", name="Look inside").click()
            expect(page.locator("#feature-norms img")).to_be_visible(timeout=60_000)
            page.locator("#model-input img").click(position={"x": 20, "y": 20})
            expect(page.locator("#attention img")).to_be_visible(timeout=60_000)
            assert page.locator("#attention img").evaluate("img => img.naturalWidth") > 0

            screenshot = tmp_path / "screenshots" / "inside.png"
            screenshot.parent.mkdir()
            page.screenshot(path=str(screenshot), full_page=True)
            assert Image.open(screenshot).size[0] >= 1000
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "Traceback" not in server.stdout.read()  # bad input was a message, not a crash
