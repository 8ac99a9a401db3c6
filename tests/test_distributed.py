"""Two CPU processes over gloo train exactly what one process trains at the same global batch: DDP (torchrun),
PyTorch FSDP2 (`fully_shard` per SwinV2Block, run_simmim.py --fsdp2) and DeepSpeed ZeRO-2/ZeRO-3 (accelerate launch
with the configs of examples/accelerate_configs/), each the real engine driving examples/simmim/run_simmim.py.

Every sample's crop and mask are drawn from (seed, epoch, index) and the seedable sampler fixes the order, so two
processes with batch 4 see the batches of one process with batch 8; the losses must agree per update within 1e-5
(measured: 6e-8 for every engine). Clipping at 0.2 is active on these gradients, so each engine's clipping is
compared too. 48 images make 6 updates an epoch: the 8 updates cross an epoch boundary.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from simmim_runs import accelerate_launch, results, run_simmim, torchrun, write_tiny_config

GLOBAL_BATCH = 8
PROCESSES = 2
STEPS = 8
MAX_LOSS_DIFFERENCE = 1e-5
# Of the saved models after 8 updates (measured: 4.1e-7 to 4.5e-6). Adam turns float32 rounding in a near-zero
# gradient into a visible share of a 1e-3 step, so the bound leaves room for other CPUs' kernels; a process that
# trained on other batches, or missed an update, would be off by about the learning rate, 1e-3.
MAX_WEIGHT_DIFFERENCE = 5e-5
DEEPSPEED_INSTALL = "DS_BUILD_SHM_COMM=1 pip install -c constraints.txt --no-build-isolation deepspeed==0.19.8"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("distributed")


def arguments(work: Path, name: str, batch_size: int) -> list:
    return [
        "--config_name",
        write_tiny_config(work),
        "--max_train_samples",
        48,
        "--per_device_train_batch_size",
        batch_size,
        "--max_train_steps",
        STEPS,
        "--learning_rate",
        1e-3,
        "--max_grad_norm",
        0.2,
        "--output_dir",
        work / name,
    ]


@pytest.fixture(scope="module")
def one_process(work: Path) -> Path:
    """The reference: one process with the whole global batch."""
    run_simmim(arguments(work, "one_process", GLOBAL_BATCH))
    return work / "one_process"


def assert_same_training(run: Path, reference: Path) -> None:
    """Same loss at every update, and the same weights saved at the end (gathered from the shards)."""
    losses, expected = results(run)["losses"], results(reference)["losses"]
    assert results(run)["processes"] == PROCESSES and len(losses) == len(expected) == STEPS
    difference = max(abs(a - b) for a, b in zip(losses, expected))
    assert difference <= MAX_LOSS_DIFFERENCE, (difference, losses, expected)
    weights, expected_weights = load_file(run / "model.safetensors"), load_file(reference / "model.safetensors")
    assert weights.keys() == expected_weights.keys()
    for key, value in weights.items():
        torch.testing.assert_close(value, expected_weights[key], rtol=0, atol=MAX_WEIGHT_DIFFERENCE, msg=key)


@pytest.mark.slow
def test_ddp_matches_one_process(work: Path, one_process: Path) -> None:
    output = run_simmim(arguments(work, "ddp", GLOBAL_BATCH // PROCESSES), torchrun(PROCESSES))
    assert "DistributedType.MULTI_CPU  Backend: gloo" in output
    assert_same_training(work / "ddp", one_process)


@pytest.mark.slow
def test_fsdp2_matches_unsharded(work: Path, one_process: Path) -> None:
    output = run_simmim([*arguments(work, "fsdp2", GLOBAL_BATCH // PROCESSES), "--fsdp2"], torchrun(PROCESSES))
    held = [(int(part), int(whole)) for part, whole in re.findall(r"holds (\d+) of (\d+) parameter values", output)]
    assert len(held) == PROCESSES and all(part < whole for part, whole in held), held  # really sharded
    assert sum(part for part, _ in held) >= held[0][1]
    assert_same_training(work / "fsdp2", one_process)


@pytest.mark.slow
@pytest.mark.parametrize("config", ["deepspeed_zero2.yaml", "deepspeed_zero3.yaml", "deepspeed_zero3_offload.yaml"])
def test_deepspeed_matches_unsharded(work: Path, one_process: Path, config: str) -> None:
    if importlib.util.find_spec("deepspeed") is None:
        pytest.fail(f"DeepSpeed is not installed; install it with: {DEEPSPEED_INSTALL}")
    name = config.removesuffix(".yaml")
    output = run_simmim(arguments(work, name, GLOBAL_BATCH // PROCESSES), accelerate_launch(config, PROCESSES))
    assert "DistributedType.DEEPSPEED  Backend: gloo" in output
    assert f"'stage': {3 if 'zero3' in config else 2}" in output
    assert_same_training(work / name, one_process)
