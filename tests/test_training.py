"""swinv2_hf.training: the Swin recipe's parameter groups, and checkpoints of Accelerate's state that are written
whole, found by step, pruned, and refused when another run wrote them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from conftest import reset_accelerate, tiny_config

from swinv2_hf import SwinV2ForImageClassification, SwinV2ForMaskedImageModeling
from swinv2_hf.training import (
    RUN_STATE,
    InputError,
    check_run_state,
    checkpoint_to_resume,
    complete_checkpoints,
    parameter_groups,
    prepare_checkpoint_directory,
    save_checkpoint,
)


def expected_layer(name: str) -> int:
    """The tiny tester (depths 1, 2, 1) layer by layer, written out: embeddings 0, blocks 1..4 in order, each
    patch merging with its stage's last block, the final norm and the head on top (5)."""
    table = {"swinv2.embeddings.": 0, "swinv2.encoder.stages.0.blocks.0.": 1, "swinv2.encoder.stages.0.downsample.": 1,
             "swinv2.encoder.stages.1.blocks.0.": 2, "swinv2.encoder.stages.1.blocks.1.": 3,
             "swinv2.encoder.stages.1.downsample.": 3, "swinv2.encoder.stages.2.blocks.0.": 4, "swinv2.layernorm.": 5,
             "classifier.": 5}  # fmt: skip
    (layer,) = [layer for prefix, layer in table.items() if name.startswith(prefix)]
    return layer


def test_parameter_groups_decay_by_layer_and_exempt_the_original_list() -> None:
    model = SwinV2ForImageClassification(tiny_config(use_absolute_embeddings=True))
    groups = parameter_groups(model, learning_rate=1.0, weight_decay=0.05, layer_decay=0.5)
    seen = {}
    for group in groups:
        for name, parameter in zip(group["names"], group["params"]):
            seen[name] = (group["lr"], group["weight_decay"])
            assert parameter is model.get_parameter(name)
    assert sorted(seen) == sorted(name for name, _ in model.named_parameters())
    for name, (lr, weight_decay) in seen.items():
        assert lr == 0.5 ** (5 - expected_layer(name)), name
        exempt = (name.endswith((".bias", "norm.weight", "logit_scale", "q_bias", "v_bias", "position_embeddings"))
                  or ".continuous_position_bias_mlp." in name)  # fmt: skip
        assert weight_decay == (0.0 if exempt else 0.05), name
    decayed = {name for name, (_, weight_decay) in seen.items() if weight_decay}
    assert "swinv2.encoder.stages.1.blocks.1.attention.qkv.weight" in decayed and "classifier.weight" in decayed
    assert "swinv2.encoder.stages.1.blocks.1.attention.continuous_position_bias_mlp.0.weight" not in decayed


def test_simmim_groups_exempt_the_mask_token_and_decay_the_decoder() -> None:
    model = SwinV2ForMaskedImageModeling(tiny_config(encoder_stride=8))
    decay = {name: group["weight_decay"] for group in parameter_groups(model, 1.0, 0.05) for name in group["names"]}
    assert decay["swinv2.embeddings.mask_token"] == 0.0
    assert decay["decoder.0.weight"] == 0.05 and decay["decoder.0.bias"] == 0.0
    assert {group["lr"] for group in parameter_groups(model, 1.0, 0.05)} == {1.0}  # no layer decay by default


@pytest.fixture
def accelerator() -> Accelerator:
    accelerator = Accelerator(cpu=True)
    yield accelerator
    reset_accelerate()


def saved_weight(checkpoint: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(checkpoint / "model.safetensors")["weight"]


def test_checkpoints_are_renamed_into_place_whole_and_pruned(accelerator: Accelerator, tmp_path: Path) -> None:
    model = accelerator.prepare(torch.nn.Linear(2, 2, bias=False))
    directory = tmp_path / "checkpoints"
    for step in (9, 10, 11):
        with torch.no_grad():
            model.weight.fill_(step)
        saved = save_checkpoint(accelerator, directory, step, {"seed": 0, "path": tmp_path}, keep=2)
        assert saved == directory / f"step_{step}"
    assert [path.name for path in complete_checkpoints(directory)] == ["step_10", "step_11"]  # by number, not name
    assert json.loads((directory / "step_11" / RUN_STATE).read_text()) == {"seed": 0, "path": str(tmp_path)}
    assert sorted(path.name for path in directory.iterdir()) == ["step_10", "step_11"]  # nothing partial is left
    with torch.no_grad():
        model.weight.fill_(-1)
    save_checkpoint(accelerator, directory, 10, {"seed": 0}, keep=2)  # a resumed run passing step 10 again
    assert torch.equal(saved_weight(directory / "step_10"), torch.full((2, 2), -1.0))
    assert checkpoint_to_resume("latest", directory, overwrite=False) == directory / "step_11"


def test_a_half_written_checkpoint_is_never_resumed_and_is_cleared(accelerator: Accelerator, tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    (directory / ".step_5.partial").mkdir(parents=True)
    (directory / "step_6").mkdir()  # killed before run_state.json was written
    assert complete_checkpoints(directory) == []
    with pytest.raises(InputError, match=r"latest: no complete step_N checkpoint in"):
        checkpoint_to_resume("latest", directory, overwrite=False)
    with pytest.raises(InputError, match=r"step_6 is not a checkpoint of this script \(no run_state.json\)"):
        checkpoint_to_resume(directory / "step_6", directory, overwrite=False)
    prepare_checkpoint_directory(accelerator, directory, resuming=True)
    assert sorted(path.name for path in directory.iterdir()) == ["step_6"]
    prepare_checkpoint_directory(accelerator, directory, resuming=False)
    assert not directory.exists()


def test_a_new_run_does_not_bury_an_earlier_runs_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "step_3").mkdir()
    (tmp_path / "step_3" / RUN_STATE).write_text("{}")
    with pytest.raises(InputError, match="holds checkpoints of an earlier run.*--resume_from_checkpoint latest"):
        checkpoint_to_resume(None, tmp_path, overwrite=False)
    assert checkpoint_to_resume(None, tmp_path, overwrite=True) is None
    assert checkpoint_to_resume(None, tmp_path / "empty", overwrite=False) is None


def test_a_checkpoint_of_another_run_is_refused_naming_what_differs(tmp_path: Path) -> None:
    (tmp_path / RUN_STATE).write_text(json.dumps({"depths": [1, 2, 1], "seed": 0, "data": "/a"}))
    check_run_state(tmp_path, {"depths": (1, 2, 1), "seed": 0, "data": Path("/a")})  # as JSON stores them: the same
    with pytest.raises(InputError, match=r"depths: checkpoint \[1, 2, 1\], this run \[2, 2, 2\]; seed: checkpoint 0, "
                                         r"this run 1\)\. Resume with the arguments of that run"):
        check_run_state(tmp_path, {"depths": (2, 2, 2), "seed": 1, "data": Path("/a")})
