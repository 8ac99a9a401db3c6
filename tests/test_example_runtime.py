"""The examples' runtime (swinv2_hf_examples.runtime): checkpoints that are written whole, restore every state without
unpickling anything, prove their files against recorded hashes, fall back to the newest intact one, and are refused
when another run wrote them; engines that pickle their optimiser state are refused."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from conftest import reset_accelerate, tiny_config
from safetensors.torch import load_file

from swinv2_hf import SwinV2ForImageClassification
from swinv2_hf.atomic import MARKER
from swinv2_hf.optim import parameter_groups
from swinv2_hf_examples.runtime import (
    RUN_STATE,
    CheckpointedProgress,
    InputError,
    TrainingState,
    check_checkpointable,
    check_run_state,
    checkpoint_to_resume,
    complete_checkpoints,
    load_checkpoint,
    prepare_checkpoint_directory,
    save_checkpoint,
)


@pytest.fixture
def accelerator() -> Accelerator:
    accelerator = Accelerator(cpu=True)
    yield accelerator
    reset_accelerate()


@dataclass
class Progress(CheckpointedProgress):
    step: int = 0
    losses: list[float] = field(default_factory=list)


def make_training(accelerator: Accelerator, seed: int = 0) -> TrainingState:
    """A small model, AdamW in two groups and a warmup schedule, prepared, with a few steps taken."""
    torch.manual_seed(seed)
    model = SwinV2ForImageClassification(tiny_config(num_labels=3))
    optimizer = torch.optim.AdamW(parameter_groups(model, 1e-3, 0.05, layer_decay=0.9))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 4))
    model, optimizer, schedule = accelerator.prepare(model, optimizer, schedule)
    training = TrainingState(model, optimizer, schedule, Progress())
    for _ in range(seed + 2):
        model(torch.randn(2, 3, 32, 32)).logits.square().mean().backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        training.progress.step += 1
        training.progress.losses.append(training.progress.step / 3)
    return training


def saved_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(checkpoint / "model.safetensors")


def save(accelerator: Accelerator, directory: Path, step: int, training: TrainingState, **kwargs: Any) -> Path:
    return save_checkpoint(accelerator, directory, step, {"seed": 0}, training, **kwargs)


def test_checkpoints_are_renamed_into_place_whole_and_pruned(accelerator: Accelerator, tmp_path: Path) -> None:
    training = make_training(accelerator)
    directory = tmp_path / "checkpoints"
    for step in (9, 10, 11):
        saved = save_checkpoint(accelerator, directory, step, {"seed": 0, "path": tmp_path}, training, keep=2)
        assert saved == directory / f"step_{step}"
    assert [path.name for path in complete_checkpoints(directory)] == ["step_10", "step_11"]  # by number, not name
    run_state = json.loads((directory / "step_11" / RUN_STATE).read_text())
    assert run_state["settings"] == {"seed": 0, "path": str(tmp_path)} and run_state["processes"] == 1
    assert sorted(run_state["files"]) == [
        "model.safetensors",
        "optimizer.safetensors",
        "random_states_0.json",
        "training_state.json",
    ]
    assert sorted(path.name for path in directory.iterdir()) == ["step_10", "step_11"]  # nothing partial is left
    with torch.no_grad():
        training.model.classifier.weight.fill_(-1)
    save(accelerator, directory, 10, training, keep=2)  # a resumed run passing step 10 again
    assert torch.equal(saved_weights(directory / "step_10")["classifier.weight"], torch.full((3, 64), -1.0))
    assert checkpoint_to_resume("latest", directory, overwrite=False) == directory / "step_11"


def test_a_checkpoint_restores_model_optimiser_schedule_progress_and_random_states(
    accelerator: Accelerator, tmp_path: Path
) -> None:
    """Saved, then loaded into a run that took other steps: every state equals the saved one, and the generators
    draw what they would have drawn after the save."""
    original = make_training(accelerator)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    checkpoint = save(accelerator, tmp_path, 2, original)
    expected_draws = (random.random(), np.random.rand(), torch.rand(3))
    expected = (
        original.model.state_dict(),
        original.optimizer.state_dict(),
        original.lr_scheduler.state_dict(),
        original.progress.state_dict(),
    )
    reset_accelerate()
    other_accelerator = Accelerator(cpu=True)
    other = make_training(other_accelerator, seed=1)
    load_checkpoint(other_accelerator, checkpoint, other)

    assert (random.random(), np.random.rand()) == expected_draws[:2] and torch.equal(torch.rand(3), expected_draws[2])
    assert other.progress.state_dict() == expected[3] == {"step": 2, "losses": [1 / 3, 2 / 3]}
    assert other.lr_scheduler.state_dict() == expected[2]
    for name, tensor in expected[0].items():
        assert torch.equal(other.model.state_dict()[name], tensor), name
    optimizer = other.optimizer.state_dict()
    assert optimizer["param_groups"] == json.loads(json.dumps(expected[1]["param_groups"]))  # tuples come back lists
    for index, state in expected[1]["state"].items():
        for name, value in state.items():
            assert torch.equal(optimizer["state"][index][name], value), (index, name)


class Payload:
    """Unpickling this object creates `marker`: proof that a loader ran code from a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def rehash(checkpoint: Path) -> None:
    """What an attacker who rewrites files also does: record the new sizes and hashes."""
    run_state = json.loads((checkpoint / RUN_STATE).read_text())
    for name in run_state["files"]:
        content = (checkpoint / name).read_bytes()
        run_state["files"][name] = {"bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    (checkpoint / RUN_STATE).write_text(json.dumps(run_state))


@pytest.mark.parametrize("hashes", ["recorded", "forged"])
def test_pickles_planted_in_a_checkpoint_never_run(accelerator: Accelerator, tmp_path: Path, hashes: str) -> None:
    """Every file of a checkpoint replaced by a pickle whose loading would create a marker; Accelerate's file names
    added as well. Resume refuses with a message naming the file (its hash, or its content), and no payload runs."""
    training = make_training(accelerator)
    marker = tmp_path / "payload-ran"
    checkpoint = save(accelerator, tmp_path / "checkpoints", 1, training)
    accelerate_names = ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "scheduler.bin")
    for extra in accelerate_names:
        torch.save(Payload(marker), checkpoint / extra)  # never listed, never read
    load_checkpoint(accelerator, checkpoint, training)
    names = sorted(json.loads((checkpoint / RUN_STATE).read_text())["files"])
    for name in names:
        original = (checkpoint / name).read_bytes()
        torch.save(Payload(marker), checkpoint / name)
        if hashes == "forged":
            rehash(checkpoint)
            refusal = rf"{re.escape(str(checkpoint / name))} cannot be loaded into this run"
            with pytest.raises(InputError, match=refusal):
                load_checkpoint(accelerator, checkpoint_to_resume(checkpoint, tmp_path, overwrite=False), training)
        else:
            with pytest.raises(InputError, match=rf"is damaged: {re.escape(name)} has \d+ bytes where \d+ were saved"):
                checkpoint_to_resume(checkpoint, tmp_path, overwrite=False)
        (checkpoint / name).write_bytes(original)
        rehash(checkpoint)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "deleted", "altered"])
def test_latest_falls_back_to_the_newest_intact_checkpoint(
    accelerator: Accelerator, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each file of the newest checkpoint damaged in turn: 'latest' takes the one before with one warning naming the
    file, and the damaged folder named explicitly is refused in one line."""
    training = make_training(accelerator)
    directory = tmp_path / "checkpoints"
    save(accelerator, directory, 10, training)
    newest = save(accelerator, directory, 20, training)
    (directory / "step_30_backup").mkdir()  # not checkpoints: ignored
    (directory / "step_40").write_text("a file")
    (directory / "notes.txt").write_text("mine")
    for name in sorted(json.loads((newest / RUN_STATE).read_text())["files"]):
        original = (newest / name).read_bytes()
        if damage == "truncated":
            (newest / name).write_bytes(original[: len(original) // 2])
        elif damage == "deleted":
            (newest / name).unlink()
        else:
            (newest / name).write_bytes(bytes([original[0] ^ 1]) + original[1:])
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert checkpoint_to_resume("latest", directory, overwrite=False) == directory / "step_10"
        why = {
            "truncated": "has \\d+ bytes where \\d+ were saved",
            "deleted": "is missing",
            "altered": "differs from its SHA-256 recorded at saving",
        }[damage]
        (warning,) = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
        newer = rf"not from the newer step_20 \({re.escape(name)} {why}\)"
        assert re.fullmatch(rf"Resuming from step_10, {newer}\.", warning)
        with pytest.raises(InputError, match=rf"step_20 is damaged: {re.escape(name)} {why}\. Resume from another"):
            checkpoint_to_resume(newest, directory, overwrite=False)
        (newest / name).write_bytes(original)
    assert checkpoint_to_resume("latest", directory, overwrite=False) == newest


def test_a_checkpoint_without_its_random_states_cannot_continue_exactly(
    accelerator: Accelerator, tmp_path: Path
) -> None:
    checkpoint = save(accelerator, tmp_path, 3, make_training(accelerator))
    run_state = json.loads((checkpoint / RUN_STATE).read_text())
    del run_state["files"]["random_states_0.json"]
    (checkpoint / "random_states_0.json").unlink()
    (checkpoint / RUN_STATE).write_text(json.dumps(run_state))
    with pytest.raises(InputError, match=r"is damaged: run_state.json lists no random_states_0.json"):
        checkpoint_to_resume(checkpoint, tmp_path, overwrite=False)
    run_state["processes"] = 2  # a checkpoint of two processes, resumed by one
    run_state["files"] = json.loads(json.dumps(run_state["files"]))
    (checkpoint / RUN_STATE).write_text(json.dumps(run_state))
    with pytest.raises(InputError, match=r"lists no random_states_0.json, random_states_1.json"):
        checkpoint_to_resume(checkpoint, tmp_path, overwrite=False)


def test_a_checkpoint_of_an_earlier_version_is_refused(tmp_path: Path) -> None:
    """Accelerate's pickled state with the run state of earlier versions (settings at the top level, no hashes)."""
    (tmp_path / "step_3").mkdir()
    (tmp_path / "step_3" / RUN_STATE).write_text(json.dumps({"seed": 0}))
    with pytest.raises(InputError, match=r"step_3 is damaged: run_state.json is not of this checkpoint format"):
        checkpoint_to_resume(tmp_path / "step_3", tmp_path, overwrite=False)
    with pytest.raises(InputError, match=r"latest: no intact step_N checkpoint in .*: step_3 \(run_state.json is not"):
        checkpoint_to_resume("latest", tmp_path, overwrite=False)


def test_a_half_written_checkpoint_is_never_resumed_and_is_cleared(accelerator: Accelerator, tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    leftover = directory / ".step_5.k3j4h5g6.partial"  # what a save killed mid-write leaves
    leftover.mkdir(parents=True)
    (leftover / MARKER).write_text("{}")
    (leftover / "model.safetensors").write_bytes(b"half")
    (directory / "step_6").mkdir()  # not written by save_checkpoint (it renames only complete folders)
    (directory / "notes.txt").write_text("mine")
    assert complete_checkpoints(directory) == []
    with pytest.raises(InputError, match=r"latest: no intact step_N checkpoint in"):
        checkpoint_to_resume("latest", directory, overwrite=False)
    with pytest.raises(InputError, match=r"step_6 is not a checkpoint of this script \(no run_state.json\)"):
        checkpoint_to_resume(directory / "step_6", directory, overwrite=False)
    prepare_checkpoint_directory(accelerator, directory, resuming=True)
    assert sorted(path.name for path in directory.iterdir()) == ["notes.txt", "step_6"]
    save(accelerator, directory, 7, make_training(accelerator))
    prepare_checkpoint_directory(accelerator, directory, resuming=False)  # a new run: only our checkpoints go
    assert sorted(path.name for path in directory.iterdir()) == ["notes.txt", "step_6"]


def test_engines_that_pickle_their_optimiser_state_are_refused() -> None:
    for engine in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        with pytest.raises(InputError, match=rf"Checkpoints under {engine.value} would hold the engine's pickled"):
            check_checkpointable(SimpleNamespace(distributed_type=engine))
    check_checkpointable(SimpleNamespace(distributed_type=DistributedType.MULTI_CPU))


def test_a_new_run_does_not_bury_an_earlier_runs_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "step_3").mkdir()
    (tmp_path / "step_3" / RUN_STATE).write_text("{}")
    with pytest.raises(InputError, match=r"holds checkpoints of an earlier run.*--resume_from_checkpoint latest"):
        checkpoint_to_resume(None, tmp_path, overwrite=False)
    assert checkpoint_to_resume(None, tmp_path, overwrite=True) is None
    assert checkpoint_to_resume(None, tmp_path / "empty", overwrite=False) is None


def test_a_checkpoint_of_another_run_is_refused_naming_what_differs(accelerator: Accelerator, tmp_path: Path) -> None:
    checkpoint = save_checkpoint(
        accelerator, tmp_path, 1, {"depths": [1, 2, 1], "seed": 0, "data": "/a"}, make_training(accelerator)
    )
    check_run_state(checkpoint, {"depths": (1, 2, 1), "seed": 0, "data": Path("/a")})  # as JSON stores them
    with pytest.raises(
        InputError,
        match=r"depths: checkpoint \[1, 2, 1\], this run \[2, 2, 2\]; seed: checkpoint 0, "
        r"this run 1\)\. Resume with the arguments of that run",
    ):
        check_run_state(checkpoint, {"depths": (2, 2, 2), "seed": 1, "data": Path("/a")})
