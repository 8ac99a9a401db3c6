"""examples/simmim/run_simmim.py: the reconstruction loss falls on the digits, the pretrained encoder loads whole into
the classifier, a resumed run continues the same curve, and bad input is refused with a message naming the fix."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import reset_accelerate
from PIL import Image
from safetensors.torch import load_file
from simmim_runs import load_script, results, run_simmim, write_tiny_config

from swinv2_hf import SwinV2ForImageClassification
from swinv2_hf_examples.runtime import InputError

run_simmim_module = load_script()

# 320 digits in batches of 16: 20 updates an epoch, 40 in all; checkpoints after updates 13, 26 and 39.
STEPS = 40
CHECKPOINT_EVERY = 13
RESUME_FROM = 26
# Measured with seeds 0, 1 and 2: the mean of the last 10 losses is 0.72-0.74 of the mean of the first 10
# (0.53 -> 0.38, 0.50 -> 0.37, 0.53 -> 0.38); a run that learns nothing stays near 1.
MAX_LOSS_RATIO = 0.85


def arguments(folder: Path, output: str) -> list:
    return [
        "--config_name",
        write_tiny_config(folder),
        "--max_train_samples",
        320,
        "--per_device_train_batch_size",
        16,
        "--max_train_steps",
        STEPS,
        "--checkpointing_steps",
        CHECKPOINT_EVERY,
        "--checkpoint_dir",
        folder / "checkpoints",
        "--output_dir",
        folder / output,
    ]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SimMIM run on the embedded digits; returns its work folder (model/, checkpoints/)."""
    folder = tmp_path_factory.mktemp("simmim")
    run_simmim(arguments(folder, "model"))
    return folder


@pytest.mark.slow
def test_reconstruction_loss_falls(pretrained: Path) -> None:
    run = results(pretrained / "model")
    assert len(run["losses"]) == STEPS
    assert run["last_loss_mean"] < MAX_LOSS_RATIO * run["first_loss_mean"], run


@pytest.mark.slow
def test_encoder_loads_into_the_classifier(pretrained: Path) -> None:
    """Only the head is new: no encoder key is missing and every encoder weight is the pretrained one."""
    folder = pretrained / "model"
    classifier, info = SwinV2ForImageClassification.from_pretrained(
        folder, num_labels=10, ignore_mismatched_sizes=True, output_loading_info=True
    )
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]
    assert not info["mismatched_keys"]
    saved = load_file(folder / "model.safetensors")
    encoder = {key: value for key, value in classifier.state_dict().items() if key.startswith("swinv2.")}
    assert encoder.keys() <= saved.keys()
    for key, value in encoder.items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0, msg=key)
    assert (folder / "preprocessor_config.json").is_file() and (folder / "README.md").is_file()


@pytest.mark.slow
def test_resume_continues_the_same_curve(pretrained: Path) -> None:
    """Resuming mid-epoch (update 26 is batch 6 of the second epoch) gives the losses of the uninterrupted run."""
    checkpoint = pretrained / "checkpoints" / f"step_{RESUME_FROM}"
    run_simmim([*arguments(pretrained, "resumed"), "--resume_from_checkpoint", checkpoint])
    uninterrupted, resumed = results(pretrained / "model")["losses"], results(pretrained / "resumed")["losses"]
    np.testing.assert_allclose(resumed, uninterrupted, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_resume_from_another_model_is_refused_before_anything_is_written(pretrained: Path) -> None:
    """The default model (embed_dim 48) asked to continue the tiny one's checkpoint (16)."""
    before = sorted(path.name for path in (pretrained / "checkpoints").iterdir())
    try:
        with pytest.raises(InputError, match=r"another model or run .*embed_dim: checkpoint 16, this run 48"):
            run_simmim_module.main(
                [
                    "--output_dir",
                    str(pretrained / "other"),
                    "--checkpoint_dir",
                    str(pretrained / "checkpoints"),
                    "--resume_from_checkpoint",
                    "latest",
                ]
            )
    finally:
        reset_accelerate()
    assert sorted(path.name for path in (pretrained / "checkpoints").iterdir()) == before
    assert not (pretrained / "other").exists()


def test_mask_generator_masks_the_share_at_the_patch_grid() -> None:
    generator = run_simmim_module.MaskGenerator(image_size=32, mask_patch_size=8, model_patch_size=2, ratio=0.6)
    mask = generator(np.random.default_rng(0))
    assert mask.shape == (16, 16) and mask.dtype == torch.bool
    cells = mask[::4, ::4]  # one entry per 8 px mask patch
    assert cells.sum() == math.ceil(16 * 0.6)
    assert torch.equal(mask, cells.repeat_interleave(4, 0).repeat_interleave(4, 1))
    assert torch.equal(mask, generator(np.random.default_rng(0)))


def test_patch_sizes_keep_the_papers_share_of_the_image() -> None:
    assert run_simmim_module.scaled_mask_patch_size(192, 4) == 32
    assert run_simmim_module.scaled_mask_patch_size(32, 2) == 4
    assert run_simmim_module.scaled_norm_target_patch_size(192) == 47
    assert run_simmim_module.scaled_norm_target_patch_size(32) == 7


def test_mask_patch_that_does_not_fit_is_refused() -> None:
    with pytest.raises(ValueError, match=r"choose --mask_patch_size from \[2, 4, 8, 16, 32\]"):
        run_simmim_module.MaskGenerator(image_size=32, mask_patch_size=6, model_patch_size=2, ratio=0.6)


def test_existing_output_is_not_replaced_without_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        run_simmim_module.parse_args(["--output_dir", str(tmp_path)])
    assert "pass --overwrite_output_dir" in capsys.readouterr().err


def test_corrupt_image_is_named_before_training(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 8)).save(images / "good.png")
    (images / "broken.png").write_bytes(b"not an image")
    args = run_simmim_module.parse_args(["--train_dir", str(images), "--output_dir", str(tmp_path / "out")])
    with pytest.raises(InputError, match=r"broken\.png is not a readable image.*Remove or replace the file"):
        run_simmim_module.load_images(args)
