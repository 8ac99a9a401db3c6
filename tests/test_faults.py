"""Faults while writing outputs: a process killed at any moment (SIGKILL: no cleanup code runs) leaves the previous
output or the new one, complete, never none and never a mix, and the next call for the same path clears what it left;
an output that is or holds an input, or a folder that swinv2_hf did not write, is never replaced.

Sections, each with its fixtures and helpers under its own header: conversion (`swinv2-hf convert` of a SwinV2-B-size
model with random weights, killed from outside before it writes and while it writes, and from inside at the swap);
training (the digits classification example, killed before its first checkpoint, in the middle of writing one and
right after one was swapped into place, then resumed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES
from safetensors.torch import load_file

from swinv2_hf import SwinV2Config, SwinV2ForImageClassification, atomic
from swinv2_hf.atomic import MARKER, prepare_output
from swinv2_hf.cli import BAD_INPUT, main
from swinv2_hf.conversion import export_state_dict
from swinv2_hf_examples.runtime import default_checkpoint_dir

# ----------------------------------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------------------------------

MODEL_NAME = "swinv2_base_patch4_window8_256"  # 88M parameters: a 350 MB model.safetensors, seconds to write
PREVIOUS_LABEL, NEW_LABEL = "previous_{}", "LABEL_{}"  # class names given to the previous output; transformers' own
KILL_TIMEOUT_S = 120
# argv: the swap to die at ("outside": none, the test kills), then `swinv2-hf` arguments. "renameat2": die right
# after the exchange (the old folder at the temporary name, not yet deleted); "fallback": exchange unavailable, die
# between the two renames (the old folder at `.old`, no output). Both die before a rename that has no old folder.
KILLABLE_CLI = """
import os
import signal
import sys

from swinv2_hf import atomic
from swinv2_hf.cli import main

swap = sys.argv.pop(1)
exchange, replace = atomic._exchange, os.replace


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def exchange_then_die(first, second):
    if swap == "fallback":
        return False
    assert exchange(first, second), "RENAME_EXCHANGE is unsupported here"
    die()


def die_before_moving_in(source, destination):
    if str(source).endswith(atomic.PARTIAL):
        die()
    replace(source, destination)


if swap != "outside":
    atomic._exchange, os.replace = exchange_then_die, die_before_moving_in
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SwinV2-B checkpoint of the original layout with random weights (no initialisation: drawn directly)."""
    config = SwinV2Config.from_preset(MODEL_NAME)
    with torch.device("meta"):
        shapes = SwinV2ForImageClassification(config).state_dict()
    generator = torch.Generator().manual_seed(0)
    state_dict = {name: 0.02 * torch.randn(tensor.shape, generator=generator) for name, tensor in shapes.items()}
    path = tmp_path_factory.mktemp("source") / "model.pth"
    torch.save({"model": export_state_dict(state_dict, "original", config)}, path)
    return path


def convert_arguments(source: Path, output: Path, *extra: str) -> list[str]:
    return [
        "convert",
        "--source",
        "original",
        "--checkpoint",
        str(source),
        "--model-name",
        MODEL_NAME,
        "--output-dir",
        str(output),
        "--no-verify",
        *extra,
    ]


@pytest.fixture(scope="module")
def previous(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished conversion of `source`, told from a new one by its class names."""
    folder = tmp_path_factory.mktemp("previous")
    labels = folder / "labels.txt"
    labels.write_text("".join(PREVIOUS_LABEL.format(index) + "\n" for index in range(1000)))
    assert main(convert_arguments(source, folder / "converted", "--id2label", str(labels))) == 0
    return folder / "converted"


@pytest.fixture(scope="module")
def weights(previous: Path) -> dict[str, torch.Tensor]:
    """The converted weights, the same in the previous and in any new conversion of `source`."""
    return load_file(previous / "model.safetensors")


def leftovers(output: Path) -> list[str]:
    """Names beside `output` that a write of it made (temporary folders and files, moved-aside old folders)."""
    return sorted(path.name for path in output.parent.iterdir() if path.name.startswith(f".{output.name}."))


def partial_weights(output: Path) -> Path | None:
    """model.safetensors in the temporary folder of a running conversion to `output`, once it holds bytes."""
    for folder in output.parent.glob(f".{output.name}.*{atomic.PARTIAL}"):
        written = folder / "model.safetensors"
        if written.is_file() and written.stat().st_size > 0:
            return written
    return None


def kill_conversion(source: Path, output: Path, kill: str) -> None:
    """Run `swinv2-hf convert --overwrite` in a subprocess and SIGKILL it at `kill`; "early": before it writes,
    "mid-write": once the temporary folder's weights hold bytes (the page cache takes the 350 MB within milliseconds,
    so the kill lands in or just after them, before the model card that ends the folder), "renameat2"/"fallback": at
    the swap (`KILLABLE_CLI`)."""
    swap = kill if kill in ("renameat2", "fallback") else "outside"
    command = [sys.executable, "-c", KILLABLE_CLI, swap, *convert_arguments(source, output, "--overwrite")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + KILL_TIMEOUT_S
    if kill == "early":
        time.sleep(1.0)  # importing torch, far from writing
        assert not leftovers(output), "the conversion wrote within a second"
        process.kill()
    elif kill == "mid-write":
        while (weights := partial_weights(output)) is None:
            assert process.poll() is None and time.monotonic() < deadline, "the conversion ended before writing"
            time.sleep(0.005)
        process.kill()
    _, stderr = process.communicate(timeout=KILL_TIMEOUT_S)
    assert process.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    if kill == "mid-write":
        assert not (weights.parent / "README.md").exists(), "the kill came after the folder was complete"


def assert_complete(output: Path, weights: dict[str, torch.Tensor], label: str) -> None:
    """`output` is a whole conversion: its config loads with class names `label`, its weights are `weights`."""
    assert (output / MARKER).is_file()
    config = SwinV2Config.from_pretrained(output)
    assert config.id2label[0] == label.format(0) and config.id2label[999] == label.format(999)
    written = load_file(output / "model.safetensors")
    assert written.keys() == weights.keys()
    assert all(torch.equal(written[name], tensor) for name, tensor in weights.items())


def exchange_works(folder: Path) -> bool:
    """Whether this system and the file system of `folder` exchange two folders in one step."""
    pair = [folder / "exchange_a", folder / "exchange_b"]
    for path in pair:
        path.mkdir()
    works = atomic._exchange(*pair)
    for path in pair:
        path.rmdir()
    return works


# (where it is killed, whether a previous output exists, what the next call finds at the output)
KILLS = [
    ("early", False, None),
    ("early", True, PREVIOUS_LABEL),
    ("mid-write", False, None),
    ("mid-write", True, PREVIOUS_LABEL),
    ("renameat2", False, None),  # dies before its one rename
    ("renameat2", True, NEW_LABEL),  # the new folder is in place; the old one waits at the temporary name
    ("fallback", True, PREVIOUS_LABEL),  # the old folder waits at `.old` with no output: it is moved back
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kill", "existing", "expected"),
    KILLS,
    ids=[f"{kill}-{'over-previous' if existing else 'new'}" for kill, existing, _ in KILLS],
)
def test_a_killed_conversion_leaves_the_previous_or_the_new_folder(
    source: Path,
    previous: Path,
    weights: dict[str, torch.Tensor],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    kill: str,
    existing: bool,
    expected: str | None,
) -> None:
    if kill == "renameat2" and not exchange_works(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is unavailable on this system or file system")
    output = tmp_path / "converted"
    if existing:
        shutil.copytree(previous, output, copy_function=os.link)  # hard links: the previous output stays intact
    kill_conversion(source, output, kill)
    assert bool(leftovers(output)) == (kill != "early")

    prepare_output(output, overwrite=True)  # what the next atomic_directory call for `output` does first
    assert leftovers(output) == []
    assert ("interrupted" in caplog.text) == (kill != "early")  # each leftover removed or moved back with a note
    if expected is None:
        assert not os.path.lexists(output)
    else:
        assert_complete(output, weights, expected)


@pytest.mark.slow
def test_the_next_conversion_clears_what_a_killed_one_left(
    source: Path, previous: Path, weights: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    output = tmp_path / "converted"
    shutil.copytree(previous, output, copy_function=os.link)
    kill_conversion(source, output, "mid-write")
    assert leftovers(output), "the killed conversion left no temporary folder"
    assert main(convert_arguments(source, output, "--overwrite")) == 0
    assert leftovers(output) == []
    assert_complete(output, weights, NEW_LABEL)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def case_a_arguments(checkpoint: Path, output: Path) -> list[str]:
    """A small conversion (the reference case A) refused before it reads its checkpoint."""
    return [
        "convert",
        "--source",
        "original",
        "--checkpoint",
        str(checkpoint),
        "--config",
        str(FIXTURES / "case_A_config.json"),
        "--output-dir",
        str(output),
        "--overwrite",
    ]


def test_overwrite_never_replaces_a_folder_holding_the_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The reported loss: the output folder was the checkpoint's own folder. Refused even when that folder carries the
    marker of an earlier output."""
    folder = tmp_path / "release"
    folder.mkdir()
    shutil.copy(FIXTURES / "case_A_ms.pth", folder / "model.pth")
    (folder / "notes.txt").write_text("mine")
    (folder / MARKER).write_text("{}")
    before = snapshot(folder)
    assert main(case_a_arguments(folder / "model.pth", folder)) == BAD_INPUT
    error = capsys.readouterr().err
    assert f"{folder} is or contains {folder / 'model.pth'}, an input" in error and len(error.splitlines()) == 1
    assert snapshot(folder) == before


def test_overwrite_never_replaces_a_folder_swinv2_hf_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    assert main(case_a_arguments(FIXTURES / "case_A_ms.pth", folder)) == BAD_INPUT
    error = capsys.readouterr().err
    assert f"{folder} was not written by swinv2_hf" in error and "move or delete it yourself" in error
    assert snapshot(folder) == {"notes.txt": b"mine"}


def test_only_our_leftovers_are_cleared(tmp_path: Path) -> None:
    """Names of another pattern, and folders of our pattern without the marker, stay; so does a moved-aside folder
    without the marker, even with the output missing."""
    output = tmp_path / "converted"
    kept = [".converted.abcd1234.partial", ".converted.abcd1234.old", ".converted.backup", ".converted.ab.partial"]
    for name in kept[:2]:
        (tmp_path / name).mkdir()
    for name in kept[2:]:
        (tmp_path / name).write_text("mine")
    prepare_output(output, overwrite=True)
    assert leftovers(output) == sorted(kept) and not output.exists()


# ----------------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------------

CLASSIFICATION = Path(__file__).resolve().parents[1] / "examples" / "image_classification" / "run_classification.py"
# 192 digits in batches of 16, 2 per optimiser step: 6 steps an epoch, 12 in all; checkpoints after steps 2, 4, 6
# (epoch end), 8, 10, 12. Dropout, mixup and cutmix make every step depend on the restored random states.
TRAINING = [
    "--max_train_samples",
    "192",
    "--max_eval_samples",
    "40",
    "--num_train_epochs",
    "2",
    "--per_device_train_batch_size",
    "16",
    "--gradient_accumulation_steps",
    "2",
    "--checkpointing_steps",
    "2",
    "--mixup_alpha",
    "0.2",
    "--cutmix_alpha",
    "1.0",
    "--seed",
    "3",
]
# argv: where to die ("mid-write": the third checkpoint has its weights but not its optimiser state; "swapped": the
# third checkpoint was just moved into place, before the older ones are pruned; "early": at once), then the script's.
KILLABLE_TRAINING = """
import os
import runpy
import signal
import sys

from swinv2_hf import atomic
from swinv2_hf_examples import runtime

point, script = sys.argv[1], sys.argv[2]
sys.argv = sys.argv[2:]
sys.path.insert(0, os.path.dirname(script))  # as `python script.py` puts the script's folder first
calls = {"count": 0}


def die_on_third(function, after):
    def wrapper(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 3 and not after:
            os.kill(os.getpid(), signal.SIGKILL)
        result = function(*args, **kwargs)
        if calls["count"] == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    return wrapper


if point == "early":
    os.kill(os.getpid(), signal.SIGKILL)
if point == "mid-write":
    runtime._save_optimizer = die_on_third(runtime._save_optimizer, after=False)
if point == "swapped":
    atomic._replace_directory = die_on_third(atomic._replace_directory, after=True)
runpy.run_path(script, run_name="__main__")
"""


def train(output: Path, *extra: str, kill: str | None = None) -> subprocess.CompletedProcess:
    """The classification example in a fresh process; with `kill`, one that SIGKILLs itself at that point."""
    command = [sys.executable, str(CLASSIFICATION), *TRAINING, "--output_dir", str(output), *extra]
    if kill is not None:
        command = [sys.executable, "-c", KILLABLE_TRAINING, kill, *command[1:]]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("training") / "uninterrupted"
    assert train(output).returncode == 0
    return output


def training_results(output: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    results = json.loads((output / "results.json").read_text())
    return results, load_file(output / "model" / "model.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("kill", ["mid-write", "swapped"])
def test_a_killed_training_run_resumes_to_the_uninterrupted_result(
    uninterrupted: Path, tmp_path: Path, kill: str
) -> None:
    """Killed while writing its third checkpoint, or right after swapping it in: the checkpoints on disk are whole,
    no model folder exists, and `latest` continues to the very losses and weights of the uninterrupted run. After
    the mid-write kill the newest whole checkpoint is also damaged (a truncated optimiser state), so the resume
    falls back to the one before it, with one warning."""
    output = tmp_path / "run"
    assert train(output, kill=kill).returncode == -signal.SIGKILL
    checkpoints = default_checkpoint_dir(output)
    names = sorted(path.name for path in checkpoints.iterdir())
    assert not (output / "model").exists()
    if kill == "mid-write":
        assert names[1:] == ["step_2", "step_4"] and re.fullmatch(r"\.step_6\.\w{8}\.partial", names[0])
        optimizer = checkpoints / "step_4" / "optimizer.safetensors"
        optimizer.write_bytes(optimizer.read_bytes()[:100])
    else:
        assert names == ["step_2", "step_4", "step_6"]  # killed before pruning to the newest two

    resumed = train(output, "--resume_from_checkpoint", "latest")
    assert resumed.returncode == 0, resumed.stderr
    if kill == "mid-write":
        assert "Resuming from step_2, not from the newer step_4 (optimizer.safetensors has 100 bytes" in resumed.stderr
        assert "left by an interrupted write" in resumed.stderr
    expected_results, expected_weights = training_results(uninterrupted)
    results, weights = training_results(output)
    assert results["train_losses"] == expected_results["train_losses"]
    assert results["evaluations"] == expected_results["evaluations"]
    assert weights.keys() == expected_weights.keys()
    assert all(torch.equal(weights[name], expected_weights[name]) for name in weights)
    assert sorted(path.name for path in checkpoints.iterdir()) == ["step_10", "step_12"]  # no debris


def test_a_run_killed_before_its_first_checkpoint_leaves_nothing_to_resume(tmp_path: Path) -> None:
    output = tmp_path / "run"
    assert train(output, kill="early").returncode == -signal.SIGKILL
    assert not (output / "model").exists() and not default_checkpoint_dir(output).exists()
    refused = train(output, "--resume_from_checkpoint", "latest")
    assert refused.returncode == BAD_INPUT
    assert refused.stderr.strip().splitlines()[-1].startswith("error: --resume_from_checkpoint latest: no intact")
