"""What a training loop around SwinV2 needs beyond the model: the optimiser's parameter groups of the Swin recipe, and
checkpoints of Accelerate's state that are written whole or not at all and resume only into the run that wrote them.

The example scripts (image classification with Accelerate and with Trainer, SimMIM, object detection) all use this
module, so that a parameter is decayed, and a checkpoint saved, found and checked, in one way.

Parameter groups follow microsoft/Swin-Transformer and SimMIM (MIT): layer-wise learning-rate decay as SimMIM's
`get_swin_layer`, and no weight decay on biases, norms, `logit_scale`, the continuous-position-bias MLP, absolute
position embeddings and SimMIM's mask token (the original's `no_weight_decay(_keywords)`). transformers' Trainer
decays every weight matrix, the position-bias MLP included, unless it is given these groups.

A checkpoint is `<directory>/step_N`: `accelerator.save_state` plus `run_state.json`, the settings that fix the run's
trajectory (architecture, data, batching, seed). It is written as `.step_N.partial` and renamed into place once every
process has written its part, so a run killed while saving keeps its previous checkpoints, and `latest` never picks
a half-written one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from accelerate import Accelerator

RUN_STATE = "run_state.json"
CHECKPOINT_PREFIX = "step_"
# Parameters that never get weight decay, by name; every 1-D parameter (biases, norms) is exempt too.
NO_WEIGHT_DECAY_KEYWORDS = ("logit_scale", "continuous_position_bias_mlp", "position_embeddings", "mask_token")
_BLOCK = re.compile(r"encoder\.stages\.(\d+)\.(?:blocks\.(\d+)|downsample)\.")


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
# Parameter groups
# ----------------------------------------------------------------------------------------------------------------------


def layer_id(name: str, depths: Sequence[int]) -> int:
    """The layer of a parameter for layer-wise decay, as SimMIM's `get_swin_layer`: 0 for the embeddings, 1 + the
    block's index over all stages for a block, a stage's patch merging with that stage's last block, and
    `sum(depths) + 1` (undecayed) for the final norm and the heads. `name` is relative to the base model."""
    if name.startswith("embeddings."):
        return 0
    match = _BLOCK.match(name)
    if match is None:
        return sum(depths) + 1
    stage = int(match[1])
    if match[2] is None:
        return sum(depths[: stage + 1])
    return sum(depths[:stage]) + int(match[2]) + 1


def decays(name: str, parameter: torch.nn.Parameter) -> bool:
    """Weight decay applies to weight matrices only: not to biases, norms, logit scales, the position-bias MLP,
    position embeddings or the mask token."""
    exempt = name.endswith(".bias") or any(key in name for key in NO_WEIGHT_DECAY_KEYWORDS)
    return parameter.ndim > 1 and not exempt


def parameter_groups(
    model: torch.nn.Module, learning_rate: float, weight_decay: float, layer_decay: float = 1.0
) -> list[dict[str, Any]]:
    """AdamW groups of any SwinV2 model (classifier, SimMIM, backbone): one per (layer, decays or not), each with
    the learning rate `learning_rate * layer_decay ** (top - layer)` and its weight decay; `names` and `layer` stay
    in the groups for inspection."""
    depths = model.config.depths
    top = sum(depths) + 1
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    prefix = f"{model.base_model_prefix}."
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        layer, decayed = layer_id(name.removeprefix(prefix), depths), decays(name, parameter)
        group = groups.setdefault((layer, decayed), {
            "params": [], "names": [], "layer": layer, "weight_decay": weight_decay if decayed else 0.0,
            "lr": learning_rate * layer_decay ** (top - layer),
        })  # fmt: skip
        group["params"].append(parameter)
        group["names"].append(name)
    return [groups[key] for key in sorted(groups)]


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------------


class CheckpointedProgress:
    """For a dataclass of where training stands, registered with `accelerator.register_for_checkpointing`: it is
    saved with the model and optimiser and restored by `accelerator.load_state`."""

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)


def complete_checkpoints(directory: Path) -> list[Path]:
    """The complete checkpoints in `directory`, oldest first."""
    found = [path for path in directory.glob(f"{CHECKPOINT_PREFIX}*") if (path / RUN_STATE).is_file()]
    return sorted(found, key=lambda path: int(path.name.removeprefix(CHECKPOINT_PREFIX)))


def checkpoint_to_resume(requested: str | Path | None, directory: Path, overwrite: bool) -> Path | None:
    """The checkpoint `--resume_from_checkpoint` names ('latest': the newest complete one in `directory`), or None
    for a new run, which must not bury the checkpoints of an earlier one unless `overwrite` says so."""
    if requested is None:
        if complete_checkpoints(directory) and not overwrite:
            raise InputError(
                f"{directory} holds checkpoints of an earlier run. Continue it with --resume_from_checkpoint latest, "
                "or start over with --overwrite_output_dir (which deletes them)."
            )
        return None
    if str(requested) == "latest":
        found = complete_checkpoints(directory)
        if not found:
            raise InputError(f"--resume_from_checkpoint latest: no complete {CHECKPOINT_PREFIX}N checkpoint in "
                             f"{directory}.")  # fmt: skip
        return found[-1]
    path = Path(requested)
    if not (path / RUN_STATE).is_file():
        raise InputError(
            f"--resume_from_checkpoint {path} is not a checkpoint of this script (no {RUN_STATE}); give a "
            f"{CHECKPOINT_PREFIX}N folder of {directory} or 'latest'."
        )
    return path


def as_json(value: Any) -> Any:
    """`value` as JSON gives it back (paths become strings, tuples lists): what a saved run state compares with."""
    return json.loads(json.dumps(value, default=str))


def check_same_run(checkpoint: Path, saved: dict[str, Any], expected: dict[str, Any]) -> None:
    """Refuse a checkpoint that another model or run wrote, naming what differs: loading it would fail deep inside
    with a shape error, or silently continue something else."""
    expected = as_json(expected)
    differences = [f"{name}: checkpoint {saved.get(name)!r}, this run {value!r}"
                   for name, value in expected.items() if saved.get(name) != value]  # fmt: skip
    if differences:
        raise InputError(
            f"{checkpoint} was written by another model or run and cannot continue this one "
            f"({'; '.join(differences[:4])}). Resume with the arguments of that run, or start a new run elsewhere."
        )


def check_run_state(checkpoint: Path, expected: dict[str, Any]) -> None:
    """`check_same_run` against the run state saved in one of our checkpoints."""
    check_same_run(checkpoint, json.loads((checkpoint / RUN_STATE).read_text()), expected)


def prepare_checkpoint_directory(accelerator: Accelerator, directory: Path, resuming: bool) -> None:
    """Drop what a killed run left half-written and, for a new run, the checkpoints of the old one."""
    if accelerator.is_main_process and directory.is_dir():
        for partial in directory.glob(f".{CHECKPOINT_PREFIX}*"):
            shutil.rmtree(partial)
        if not resuming:
            shutil.rmtree(directory)
    accelerator.wait_for_everyone()


def save_checkpoint(
    accelerator: Accelerator, directory: Path, step: int, run_state: dict[str, Any], keep: int | None = None
) -> Path:
    """`accelerator.save_state` (every process writes its part) into a partial folder renamed into place when
    complete; a step saved before (by the run a resumed one continues) is replaced. Then only the newest `keep`
    checkpoints stay (None: all)."""
    final = directory / f"{CHECKPOINT_PREFIX}{step}"
    partial, retired = directory / f".{final.name}.partial", directory / f".{final.name}.old"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    if accelerator.is_main_process:
        (partial / RUN_STATE).write_text(json.dumps(as_json(run_state), indent=2) + "\n")
        if final.exists():
            os.replace(final, retired)
        os.replace(partial, final)
        shutil.rmtree(retired, ignore_errors=True)
        for old in complete_checkpoints(directory)[:-keep] if keep else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final
