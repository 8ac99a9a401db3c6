"""What the example scripts share around their training loops: errors of bad input, logging, mixed precision, and
checkpoints that are written whole, execute nothing when loaded, prove their files intact, and resume only into the
run that wrote them. Model knowledge (parameter groups, atomic outputs, image processors) is the package's public API.

A checkpoint is `<directory>/step_N`: the weights and the optimiser state in safetensors, the schedule, the progress
and every process's random states in JSON (Accelerate's `save_state` would pickle the last three, and its
`load_state` unpickles them), and `run_state.json`: the settings that fix the run's trajectory (architecture, data,
batching, seed) and each file's size and SHA-256. It is written with `swinv2_hf.atomic_directory` by the main process
once every process has handed over its random states, so a run killed while saving keeps its previous
checkpoints. Resuming checks every file against its hash before loading anything; `latest` takes the newest intact
checkpoint and says what was wrong with any newer one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
import shutil
import sys
from collections.abc import Callable, Sequence, Sized
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import torch
import transformers
from accelerate.utils import DistributedType, gather_object
from safetensors import safe_open
from safetensors.torch import load_model, save_file, save_model

from swinv2_hf import MARKER, atomic_directory, clear_leftovers

if TYPE_CHECKING:
    from accelerate import Accelerator

logger = logging.getLogger(__name__)

RUN_STATE = "run_state.json"
CHECKPOINT_FORMAT = "swinv2_hf-checkpoint-2"
CHECKPOINT_PREFIX = "step_"
_CHECKPOINT_NAME = re.compile(rf"{CHECKPOINT_PREFIX}(\d+)")
MODEL_FILE, OPTIMIZER_FILE, TRAINING_STATE_FILE = "model.safetensors", "optimizer.safetensors", "training_state.json"
# Engines whose optimiser state only exists in their own pickled checkpoint format.
_ENGINES_WITH_PICKLED_STATES = (DistributedType.DEEPSPEED, DistributedType.FSDP, DistributedType.MEGATRON_LM)
MIXED_PRECISION_CHOICES = ("auto", "no", "fp16", "bf16")


class InputError(ValueError):
    """Input the user can fix (data, paths, flags, a checkpoint of another run): the message names the problem and
    the fix. Scripts print it as one line and exit with status 2 (`run_script`), before writing anything."""


def run_script(main: Callable[[Sequence[str]], Any], argv: Sequence[str]) -> None:
    """Run a script's `main`; bad input ends with its one-line message and exit status 2 (no traceback)."""
    try:
        main(argv)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


# ----------------------------------------------------------------------------------------------------------------------
# Flags every script reads the same way
# ----------------------------------------------------------------------------------------------------------------------


def warmup_steps(value: float, total_steps: int) -> int:
    """`--num_warmup_steps` (TrainingArguments' `warmup_steps` reading): below 1 a fraction of the total steps,
    otherwise a step count."""
    return math.ceil(value * total_steps) if value < 1 else int(value)


def training_steps(prepared_loader: Sized, accumulation: int, epochs: int, max_train_steps: int | None) -> int:
    """Optimiser steps of a run: `max_train_steps`, or `epochs` over the loader that `accelerator.prepare` returned,
    whose length is this process's share of the batches, so that an epoch is one pass over the data with any number
    of processes. The schedules count these steps and the loops step them once per optimiser step."""
    return max_train_steps or epochs * math.ceil(len(prepared_loader) / accumulation)


def default_checkpoint_dir(output_dir: str | Path) -> Path:
    """Where `--checkpoint_dir` defaults to: beside the output folder, which is written (and replaced) whole."""
    output_dir = Path(output_dir)
    return output_dir.with_name(f"{output_dir.name}_checkpoints")


# ----------------------------------------------------------------------------------------------------------------------
# Logging and precision
# ----------------------------------------------------------------------------------------------------------------------


def setup_logging(accelerator: Accelerator, level: int = logging.INFO) -> None:
    """One log format for every script; processes other than the local main one report errors only."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level)
    verbosity = "warning" if accelerator.is_local_main_process else "error"
    getattr(datasets.utils.logging, f"set_verbosity_{verbosity}")()
    getattr(transformers.utils.logging, f"set_verbosity_{verbosity}")()


def native_bf16() -> bool:
    """Whether the device computes bfloat16 natively (CUDA with bf16, or a CPU with AVX512-BF16/AMX through oneDNN);
    elsewhere bf16 autocast is emulated and slower than float32."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def resolve_mixed_precision(choice: str | None) -> str | None:
    """`--mixed_precision auto`: bf16 where the device computes it natively, fp16 on GPUs without bf16, float32
    ("no") on other CPUs, where autocast would be emulated and slower. None leaves the choice to `accelerate launch`'s
    configuration."""
    if choice != "auto":
        return choice
    if native_bf16():
        return "bf16"
    return "fp16" if torch.cuda.is_available() else "no"


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------------


class CheckpointedProgress:
    """For a dataclass of where training stands: saved in every checkpoint as JSON, restored on resume."""

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)


@dataclass
class TrainingState:
    """What a checkpoint saves and a resume restores, besides the random states: the prepared model, optimiser and
    learning-rate schedule, and the loop's progress."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: Any
    progress: CheckpointedProgress


def checkpoint_step(path: Path) -> int | None:
    """The step of a `step_N` folder; None for anything else (`step_20_backup`, files, hidden folders)."""
    match = _CHECKPOINT_NAME.fullmatch(path.name)
    return int(match[1]) if match and path.is_dir() else None


def complete_checkpoints(directory: Path) -> list[Path]:
    """The checkpoints in `directory` that were written to the end (they have a run state), oldest first. Whether
    their files are intact is `checkpoint_damage`'s question."""
    found = [
        path
        for path in directory.glob(f"{CHECKPOINT_PREFIX}*")
        if checkpoint_step(path) is not None and (path / RUN_STATE).is_file()
    ]
    return sorted(found, key=checkpoint_step)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_run_state(checkpoint: Path) -> dict[str, Any]:
    """The run state of a checkpoint; ValueError saying why it cannot be one of ours."""
    try:
        saved = json.loads((checkpoint / RUN_STATE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{RUN_STATE} is unreadable ({error})") from error
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{RUN_STATE} is not of this checkpoint format ({CHECKPOINT_FORMAT}); checkpoints of "
            "earlier versions held pickles, which are not loaded"
        )
    return saved


def checkpoint_damage(checkpoint: Path) -> str | None:
    """What is wrong with a checkpoint's files, checked against the sizes and SHA-256 hashes its run state recorded
    when it was saved; None when every file is intact. Nothing is loaded."""
    try:
        saved = _read_run_state(checkpoint)
    except ValueError as error:
        return str(error)
    files = saved["files"]
    expected = {MODEL_FILE, OPTIMIZER_FILE, TRAINING_STATE_FILE, *map(_random_states_file, range(saved["processes"]))}
    if expected - set(files):
        return f"{RUN_STATE} lists no {', '.join(sorted(expected - set(files)))}"
    for name, recorded in files.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != recorded["bytes"]:
            return f"{name} has {path.stat().st_size} bytes where {recorded['bytes']} were saved"
        if _sha256(path) != recorded["sha256"]:
            return f"{name} differs from its SHA-256 recorded at saving"
    return None


def _newest_intact(directory: Path) -> Path:
    """The newest checkpoint in `directory` whose files are intact; one warning names the damaged newer ones."""
    damaged = []
    for checkpoint in reversed(complete_checkpoints(directory)):
        damage = checkpoint_damage(checkpoint)
        if damage is None:
            if damaged:
                logger.warning(f"Resuming from {checkpoint.name}, not from the newer {'; '.join(damaged)}.")
            return checkpoint
        damaged.append(f"{checkpoint.name} ({damage})")
    found = f": {'; '.join(damaged)}" if damaged else ""
    raise InputError(
        f"--resume_from_checkpoint latest: no intact {CHECKPOINT_PREFIX}N checkpoint in {directory}"
        f"{found}. Start a new run with --overwrite_output_dir."
    )


def checkpoint_to_resume(requested: str | Path | None, directory: Path, overwrite: bool) -> Path | None:
    """The checkpoint `--resume_from_checkpoint` names, its files checked ('latest': the newest intact one in
    `directory`), or None for a new run, which must not bury the checkpoints of an earlier one unless `overwrite`
    says so."""
    if requested is None:
        if complete_checkpoints(directory) and not overwrite:
            raise InputError(
                f"{directory} holds checkpoints of an earlier run. Continue it with --resume_from_checkpoint latest, "
                "or start over with --overwrite_output_dir (which deletes them)."
            )
        return None
    if str(requested) == "latest":
        return _newest_intact(directory)
    path = Path(requested)
    if not (path / RUN_STATE).is_file():
        raise InputError(
            f"--resume_from_checkpoint {path} is not a checkpoint of this script (no {RUN_STATE}); give a "
            f"{CHECKPOINT_PREFIX}N folder of {directory} or 'latest'."
        )
    damage = checkpoint_damage(path)
    if damage is not None:
        raise InputError(
            f"--resume_from_checkpoint {path} is damaged: {damage}. Resume from another checkpoint or "
            "'latest' (the newest intact one)."
        )
    return path


def as_json(value: Any) -> Any:
    """`value` as JSON gives it back (paths become strings, tuples lists): what a saved run state compares with."""
    return json.loads(json.dumps(value, default=str))


def check_same_run(checkpoint: Path, saved: dict[str, Any], expected: dict[str, Any]) -> None:
    """Refuse a checkpoint that another model or run wrote, naming what differs: loading it would fail deep inside
    with a shape error, or silently continue something else."""
    expected = as_json(expected)
    differences = [
        f"{name}: checkpoint {saved.get(name)!r}, this run {value!r}"
        for name, value in expected.items()
        if saved.get(name) != value
    ]
    if differences:
        raise InputError(
            f"{checkpoint} was written by another model or run and cannot continue this one "
            f"({'; '.join(differences[:4])}). Resume with the arguments of that run, or start a new run elsewhere."
        )


def check_run_state(checkpoint: Path, expected: dict[str, Any]) -> None:
    """`check_same_run` against the settings saved in one of our checkpoints."""
    check_same_run(checkpoint, _read_run_state(checkpoint)["settings"], expected)


def prepare_checkpoint_directory(accelerator: Accelerator, directory: Path, resuming: bool) -> None:
    """Clear what a killed save left (`atomic.clear_leftovers`) and, for a new run, drop the checkpoints of the old
    one; nothing else in `directory` is touched."""
    if accelerator.is_main_process and directory.is_dir():
        clear_leftovers(directory)
        for checkpoint in [] if resuming else complete_checkpoints(directory):
            shutil.rmtree(checkpoint)
    accelerator.wait_for_everyone()


def check_checkpointable(accelerator: Accelerator) -> None:
    """Refuse checkpoints where the engine keeps the optimiser's state in its own pickled format."""
    if accelerator.distributed_type in _ENGINES_WITH_PICKLED_STATES:
        raise InputError(
            f"Checkpoints under {accelerator.distributed_type.value} would hold the engine's pickled optimiser state, "
            "which a resume would have to unpickle. Train without --checkpointing_steps/--resume_from_checkpoint, "
            "or checkpoint with one process or DDP."
        )


def _random_states_file(process: int) -> str:
    return f"random_states_{process}.json"


def _random_states() -> dict[str, Any]:
    """This process's generators as plain data (Python's and numpy's states are integer tuples and arrays)."""
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "torch": torch.get_rng_state().tolist(),
        "cuda": [state.tolist() for state in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }


def _set_random_states(states: dict[str, Any]) -> None:
    version, python_state, gauss = states["python"]
    random.setstate((version, tuple(python_state), gauss))
    kind, keys, *rest = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(torch.tensor(states["torch"], dtype=torch.uint8))
    if states["cuda"]:
        torch.cuda.set_rng_state_all([torch.tensor(state, dtype=torch.uint8) for state in states["cuda"]])


def _save_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    """The optimiser's state tensors in safetensors, its groups and scalar state as JSON in the header."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    metadata = {"param_groups": json.dumps(state["param_groups"]), "scalars": json.dumps(scalars)}
    save_file(tensors, path, metadata=metadata)


def _load_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    with safe_open(path, framework="pt") as file:
        metadata = file.metadata()
        state: dict[int, dict[str, Any]] = {
            int(index): dict(values) for index, values in json.loads(metadata["scalars"]).items()
        }
        for key in file.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = file.get_tensor(key)
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(metadata["param_groups"])})


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


def save_checkpoint(
    accelerator: Accelerator,
    directory: Path,
    step: int,
    run_state: dict[str, Any],
    training: TrainingState,
    keep: int | None = None,
) -> Path:
    """Write `step_N` with nothing that needs a pickle to be read: the weights and the optimiser state in
    safetensors, schedule, progress and every process's random states in JSON, then `run_state.json` (the run's
    settings and each file's size and SHA-256). The main process writes it as an atomic output (whole or absent; a
    step saved before, by the run a resumed one continues, is replaced). Then only the newest `keep` checkpoints stay
    (None: all)."""
    final = directory / f"{CHECKPOINT_PREFIX}{step}"
    random_states = gather_object([_random_states()])  # every process's, in process order
    if accelerator.is_main_process:
        with atomic_directory(final, overwrite=True) as folder:
            save_model(accelerator.unwrap_model(training.model), folder / MODEL_FILE)
            _save_optimizer(training.optimizer, folder / OPTIMIZER_FILE)
            scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
            _write_json(
                folder / TRAINING_STATE_FILE,
                {
                    "progress": training.progress.state_dict(),
                    "lr_scheduler": training.lr_scheduler.state_dict(),
                    "accelerator_step": accelerator.step,
                    "grad_scaler": scaler,
                },
            )
            for process, states in enumerate(random_states):
                _write_json(folder / _random_states_file(process), states)
            files = {
                path.name: {"bytes": path.stat().st_size, "sha256": _sha256(path)}
                for path in folder.iterdir()
                if path.name != MARKER
            }
            _write_json(
                folder / RUN_STATE,
                {
                    "format": CHECKPOINT_FORMAT,
                    "settings": as_json(run_state),
                    "processes": accelerator.num_processes,
                    "files": files,
                },
            )
        for old in complete_checkpoints(directory)[:-keep] if keep else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def _loaded(path: Path, load: Callable[[], Any]) -> Any:
    """`load()`, with any failure reported as one line naming the file."""
    try:
        return load()
    except Exception as error:  # a file that passed its hash yet does not fit: another model, or planted content
        raise InputError(
            f"{path} cannot be loaded into this run ({type(error).__name__}: "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else 'no detail'})."
        ) from error


def load_checkpoint(accelerator: Accelerator, checkpoint: Path, training: TrainingState) -> None:
    """Restore what `save_checkpoint` wrote, from safetensors and JSON only (nothing is unpickled); the files were
    checked against their recorded hashes when the checkpoint was chosen."""
    processes = _read_run_state(checkpoint)["processes"]
    if processes != accelerator.num_processes:
        raise InputError(
            f"{checkpoint} was saved by {processes} processes and holds their random states; resume "
            f"it with {processes} processes, not {accelerator.num_processes}."
        )
    model = accelerator.unwrap_model(training.model)
    _loaded(checkpoint / MODEL_FILE, lambda: load_model(model, checkpoint / MODEL_FILE, strict=True))
    _loaded(checkpoint / OPTIMIZER_FILE, lambda: _load_optimizer(training.optimizer, checkpoint / OPTIMIZER_FILE))
    path = checkpoint / TRAINING_STATE_FILE
    state = _loaded(path, lambda: json.loads(path.read_text()))
    _loaded(path, lambda: training.lr_scheduler.load_state_dict(state["lr_scheduler"]))
    _loaded(path, lambda: training.progress.load_state_dict(state["progress"]))
    accelerator.step = state["accelerator_step"]
    if accelerator.scaler is not None and state["grad_scaler"] is not None:
        accelerator.scaler.load_state_dict(state["grad_scaler"])
    path = checkpoint / _random_states_file(accelerator.process_index)
    _loaded(path, lambda: _set_random_states(json.loads(path.read_text())))
