# /// script
# requires-python = ">=3.10"
# dependencies = ["swinv2_hf", "torch>=2.6", "accelerate>=1.0", "datasets>=3.0", "scikit-learn>=1.3", "tqdm>=4.60"]
# ///
"""SimMIM masked-image-modeling pretraining of `SwinV2ForMaskedImageModeling` with Accelerate.

SimMIM (Xie et al., arXiv 2111.09886) is how Swin Transformer V2 pretrains its large models without labels:
random square regions of the image are replaced by a learned mask token and a one-layer decoder regresses their
pixels with an L1 loss (the model computes it). This script follows the SwinV2 SimMIM recipe: random resized crops
(scale 0.67-1) with horizontal flips, 60% of the image masked in patches of 32 px at 192 px, targets normalised over
47 px neighbourhoods, AdamW with warmup and cosine decay, gradient clipping. At other resolutions the two patch
sizes keep their share of the image (see `--mask_patch_size` and `--norm_target_patch_size`).

Runs offline on an embedded default, the training split of the classification example's digits (1,257 of
scikit-learn's handwritten digits, upscaled to 32 px RGB) with its small SwinV2, or on a folder of images
(`--train_dir`, any layout `datasets`' imagefolder reads; labels are ignored):

    python examples/simmim/run_simmim.py --output_dir outputs/simmim-digits
    torchrun --nproc_per_node 2 examples/simmim/run_simmim.py --output_dir outputs/simmim-digits
    accelerate launch --config_file examples/accelerate_configs/deepspeed_zero3.yaml examples/simmim/run_simmim.py \
        --train_dir /data/imagenet/train --config_name swinv2_giant_window12_192 --mixed_precision bf16 ...

Every random choice of a sample (crop, flip, mask) is drawn from (seed, epoch, sample index) and accelerate's
seedable sampler fixes the order, so N processes with batch b train on exactly the batches of one process with
batch N*b: the loss curves agree (tests/test_distributed.py). The output folder is Hub-ready (weights, config, code,
image processor, card); fine-tune it with the classification example (`--model_name_or_path <output_dir>`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from accelerate import Accelerator, DistributedType
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, InitProcessGroupKwargs, set_seed
from PIL import Image
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup
from transformers.utils.versions import require_version

from swinv2_hf import (
    PRESETS,
    CardFacts,
    Preprocessing,
    SwinV2Block,
    SwinV2Config,
    SwinV2ForMaskedImageModeling,
    atomic_directory,
    describe_preprocessing,
    image_processor_for,
    parameter_groups,
    prepare_output,
    push_folder,
    render_model_card,
)
from swinv2_hf_examples import classification as common
from swinv2_hf_examples.runtime import (
    MIXED_PRECISION_CHOICES,
    CheckpointedProgress,
    InputError,
    TrainingState,
    check_checkpointable,
    check_run_state,
    checkpoint_to_resume,
    default_checkpoint_dir,
    load_checkpoint,
    prepare_checkpoint_directory,
    resolve_mixed_precision,
    run_script,
    save_checkpoint,
    setup_logging,
    training_steps,
    warmup_steps,
)

INSTALL_HINT = "To fix: pip install -c constraints.txt -e '.[examples]' from the repository root."
require_version("torch>=2.6", INSTALL_HINT)  # torch.accelerator, public fully_shard
require_version("accelerate>=1.0", INSTALL_HINT)
require_version("datasets>=3.0", INSTALL_HINT)

logger = get_logger(__name__)

# The SwinV2 SimMIM recipe at 192 px (simmim_pretrain__swinv2_base__img192_window12__800ep.yaml): mask patches of
# 32 px covering 60% of the image, targets normalised over 47 px. Other resolutions keep the same shares.
PAPER_IMAGE_SIZE = 192
PAPER_MASK_PATCH_SIZE = 32
PAPER_NORM_TARGET_PATCH_SIZE = 47
CROP_SCALE_MIN = 0.67  # of the image's area; SimMIM's crops keep at least two thirds of it
FLIP_PROBABILITY = 0.5
LOSS_SUMMARY_STEPS = 10  # first and last averages in the results
GLOO_RELEASE_TIMEOUT_S, GLOO_RELEASE_POLL_S = 10.0, 0.001  # see wait_for_main_process


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument(
        "--train_dir",
        type=Path,
        default=None,
        help="A folder of images (datasets' imagefolder; labels ignored). Default: the embedded digits.",
    )
    data.add_argument("--max_train_samples", type=int, default=None, help="Use only the first N images (quick runs).")
    data.add_argument(
        "--dataloader_num_workers", type=int, default=0, help="Data-loading worker processes (0: the main one)."
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model_name_or_path",
        default=None,
        help="Continue from a swinv2_hf folder or Hub id (e.g. a converted SimMIM checkpoint).",
    )
    model.add_argument(
        "--config_name",
        default=None,
        help=f"A preset ({', '.join(sorted(PRESETS))}) or a config.json to train from scratch. "
        "Default: the classification example's small SwinV2 for the 32 px digits.",
    )
    model.add_argument("--image_size", type=int, default=None, help="Training resolution (default: the config's).")
    model.add_argument("--mask_ratio", type=float, default=0.6, help="Share of the mask patches that are masked.")
    model.add_argument(
        "--mask_patch_size",
        type=int,
        default=None,
        help="Side of the masked squares in pixels; a multiple of the model's patch size dividing the "
        "image. Default: 32 px at 192 px, scaled with the image size (4 px at 32 px).",
    )
    model.add_argument(
        "--norm_target_patch_size",
        type=int,
        default=None,
        help="Odd window of the target normalisation, 0 for raw pixels. Default: 47 at 192 px, scaled.",
    )
    model.add_argument("--gradient_checkpointing", action="store_true", help="Recompute every block in backward.")
    train = parser.add_argument_group("training")
    train.add_argument("--per_device_train_batch_size", type=int, default=64, help="Images per process and step.")
    train.add_argument("--gradient_accumulation_steps", type=int, default=1, help="Micro-batches per update.")
    train.add_argument("--learning_rate", type=float, default=2e-3, help="Peak learning rate of AdamW.")
    train.add_argument(
        "--weight_decay",
        type=float,
        default=0.05,
        help="AdamW decay (not on biases, norms, logit scales, position-bias MLPs, the mask token).",
    )
    train.add_argument("--num_train_epochs", type=int, default=10, help="Epochs over the training images.")
    train.add_argument("--max_train_steps", type=int, default=None, help="Stop after this many updates (not epochs).")
    train.add_argument(
        "--num_warmup_steps",
        type=float,
        default=0.1,
        help="Linear warmup before the cosine: updates, or a fraction of them below 1.",
    )
    train.add_argument("--max_grad_norm", type=float, default=5.0, help="Clip the gradient norm (0: off).")
    train.add_argument(
        "--mixed_precision",
        choices=MIXED_PRECISION_CHOICES,
        default=None,
        help="Autocast precision; auto: bf16 where the device computes it natively (default: the accelerate config's).",
    )
    train.add_argument("--seed", type=int, default=0, help="Seeds the initialisation, the order and every mask.")
    train.add_argument(
        "--fsdp2",
        action="store_true",
        help="Shard with PyTorch's FSDP2 (fully_shard per SwinV2Block and at the root), for runs where "
        "accelerate's FSDP plugin is unavailable (CPU processes over gloo). Without checkpoints.",
    )
    output = parser.add_argument_group("output")
    output.add_argument("--output_dir", type=Path, required=True, help="Where the Hub-ready folder is written.")
    output.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="Replace an existing --output_dir and an earlier run's checkpoints.",
    )
    output.add_argument(
        "--checkpoint_dir",
        type=Path,
        default=None,
        help="Where checkpoints go (default: <output_dir>_checkpoints, outside the Hub folder).",
    )
    output.add_argument(
        "--checkpointing_steps",
        default=None,
        help="Save the training state every N updates, or 'epoch' after each epoch.",
    )
    output.add_argument(
        "--resume_from_checkpoint",
        default=None,
        help="A checkpoint folder of this script, or 'latest' for the newest in --checkpoint_dir.",
    )
    output.add_argument("--logging_steps", type=int, default=10, help="Show the averaged loss every N updates.")
    output.add_argument("--push_to_hub", action="store_true", help="Upload the output folder to --hub_model_id.")
    output.add_argument("--hub_model_id", default=None, help="Repository id for --push_to_hub (user/name).")
    args = parser.parse_args(argv)
    check_args(args, parser)
    return args


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Refuse contradictory or impossible settings before any work, naming the fix."""
    args.checkpoint_dir = args.checkpoint_dir or default_checkpoint_dir(args.output_dir)
    if args.train_dir is not None and not args.train_dir.is_dir():
        parser.error(f"--train_dir {args.train_dir} is not a folder; pass a folder of images or leave it out.")
    if not 0 < args.mask_ratio < 1:
        parser.error(f"--mask_ratio must lie strictly between 0 and 1, got {args.mask_ratio}.")
    if args.model_name_or_path and args.config_name:
        parser.error("Give --model_name_or_path (continue from weights) or --config_name (from scratch), not both.")
    for name in (
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "num_train_epochs",
        "logging_steps",
        "max_train_steps",
        "image_size",
        "mask_patch_size",
    ):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}.")
    if args.learning_rate <= 0 or args.max_grad_norm < 0 or args.num_warmup_steps < 0:
        parser.error("--learning_rate must be positive, --max_grad_norm and --num_warmup_steps at least 0.")
    norm_patch = args.norm_target_patch_size
    if norm_patch is not None and (norm_patch < 0 or (norm_patch > 0 and norm_patch % 2 == 0)):
        parser.error(
            f"--norm_target_patch_size must be odd (a window centred on each pixel) or 0 for raw pixels, "
            f"got {args.norm_target_patch_size}."
        )
    if args.checkpointing_steps not in (None, "epoch"):
        if not args.checkpointing_steps.isdigit() or int(args.checkpointing_steps) < 1:
            parser.error(
                f"--checkpointing_steps must be a positive number of updates or 'epoch', got "
                f"{args.checkpointing_steps!r}."
            )
        args.checkpointing_steps = int(args.checkpointing_steps)
    if args.fsdp2 and (args.checkpointing_steps or args.resume_from_checkpoint):
        parser.error(
            "--fsdp2 trains without checkpoints; for sharded runs that checkpoint, use accelerate's FSDP "
            "plugin (examples/accelerate_configs/fsdp.yaml) or DeepSpeed instead."
        )
    # What the run reads, which the folder written at the end may never replace (Hub ids, presets, 'latest': no paths).
    named = (args.train_dir, args.model_name_or_path, args.config_name, args.resume_from_checkpoint)
    args.inputs = [args.checkpoint_dir, *(Path(path) for path in named if path is not None and Path(path).exists())]
    try:
        prepare_output(args.output_dir, args.overwrite_output_dir, args.inputs, "--overwrite_output_dir")
    except FileExistsError as error:
        parser.error(str(error))
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id (user/name).")


# ----------------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskGenerator:
    """SimMIM's masks: the image cut into squares of `mask_patch_size` pixels, exactly `ratio` of them (rounded up)
    masked, expanded to the model's patch grid. A fixed count keeps the loss a plain mean across processes."""

    image_size: int
    mask_patch_size: int
    model_patch_size: int
    ratio: float

    def __post_init__(self) -> None:
        if self.mask_patch_size % self.model_patch_size or self.image_size % self.mask_patch_size:
            raise InputError(
                f"The mask patch size ({self.mask_patch_size} px) must be a multiple of the model's patch size "
                f"({self.model_patch_size} px) and divide the image size ({self.image_size} px); choose "
                f"--mask_patch_size from {mask_patch_choices(self.image_size, self.model_patch_size)}."
            )

    def __call__(self, rng: np.random.Generator) -> torch.Tensor:
        """A (H/patch, W/patch) boolean mask, True where the model sees the mask token."""
        cells = self.image_size // self.mask_patch_size
        masked = rng.permutation(cells * cells)[: math.ceil(cells * cells * self.ratio)]
        mask = np.zeros(cells * cells, dtype=bool)
        mask[masked] = True
        scale = self.mask_patch_size // self.model_patch_size
        return torch.from_numpy(mask.reshape(cells, cells).repeat(scale, 0).repeat(scale, 1))


def mask_patch_choices(image_size: int, model_patch_size: int) -> list[int]:
    return [size for size in range(model_patch_size, image_size + 1, model_patch_size) if image_size % size == 0]


def scaled_mask_patch_size(image_size: int, model_patch_size: int) -> int:
    """The valid mask patch size nearest to the paper's share of the image (32 of 192 px), larger on ties."""
    target = PAPER_MASK_PATCH_SIZE * image_size / PAPER_IMAGE_SIZE
    return min(reversed(mask_patch_choices(image_size, model_patch_size)), key=lambda size: abs(size - target))


def scaled_norm_target_patch_size(image_size: int) -> int:
    """The odd window nearest to the paper's share of the image (47 of 192 px), at least 3."""
    target = PAPER_NORM_TARGET_PATCH_SIZE * image_size / PAPER_IMAGE_SIZE
    return max(3, 2 * round((target - 1) / 2) + 1)


class SimMIMDataset(torch.utils.data.Dataset):
    """Augmented images and their masks. Every random choice comes from a generator seeded with (seed, epoch, index),
    so a sample is the same whichever process or worker draws it: the run does not depend on how it is split."""

    def __init__(self, images: list[dict[str, Any]], image_size: int, masks: MaskGenerator, seed: int) -> None:
        self.images, self.masks, self.seed = images, masks, seed
        self.transform = common.TrainTransform(
            size=(image_size, image_size),
            crop_scale_min=CROP_SCALE_MIN,
            hflip_probability=FLIP_PROBABILITY,
            resample=Image.Resampling.BICUBIC,
            mean=Preprocessing.mean,
            std=Preprocessing.std,
        )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        pixel_values = self.transform(common.open_image(self.images[index]), rng)
        return {"pixel_values": pixel_values, "bool_masked_pos": self.masks(rng)}


def load_images(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Undecoded images (`datasets.Image` values), each checked: the digits' training split (1,257 images; the
    classifier's validation and test images stay unseen) or every image under --train_dir (labels ignored)."""
    if args.train_dir is None:
        data = common.load_data(common.DataArguments())
        images = data.splits["train"][data.image_column]
    else:
        folder = datasets.load_dataset("imagefolder", data_dir=str(args.train_dir), split="train")
        images = folder.cast_column("image", datasets.Image(decode=False))["image"]
    images = images[: args.max_train_samples]
    common.check_images(images)
    return images


# ----------------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------------


def load_config(args: argparse.Namespace, **overrides: Any) -> SwinV2Config:
    """The architecture to train from scratch: a preset, a config.json, or by default the classification example's
    small SwinV2 for the 32 px digits (three stages of patch 2, so encoder stride 8; 1.3M parameters)."""
    if args.config_name in PRESETS:
        return SwinV2Config.from_preset(args.config_name, **overrides)
    config_file = Path(args.config_name or common.DEFAULT_MODEL)
    if config_file.is_file():
        return SwinV2Config.from_dict({**json.loads(config_file.read_text()), **overrides})
    raise InputError(
        f"--config_name {args.config_name!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a config file."
    )


def build_model(args: argparse.Namespace) -> SwinV2ForMaskedImageModeling:
    """The SimMIM model at the training resolution, with the target normalisation scaled to it."""
    resolution = {} if args.image_size is None else {"image_size": args.image_size}
    if args.model_name_or_path:
        model = SwinV2ForMaskedImageModeling.from_pretrained(args.model_name_or_path, **resolution)
    else:
        model = SwinV2ForMaskedImageModeling(load_config(args, **resolution))
    config = model.config
    if not isinstance(config.image_size, int):
        raise InputError(
            f"SimMIM here trains square images; the config has image_size {config.image_size}. Pass --image_size."
        )
    if config.image_size % config.encoder_stride:
        raise InputError(
            f"The image size ({config.image_size} px) must be a multiple of the encoder's stride "
            f"({config.encoder_stride} px) for the decoder to rebuild it; pass e.g. --image_size "
            f"{max(config.encoder_stride, config.image_size // config.encoder_stride * config.encoder_stride)}."
        )
    config.mim_norm_target_patch_size = args.norm_target_patch_size
    if args.norm_target_patch_size is None:
        config.mim_norm_target_patch_size = scaled_norm_target_patch_size(config.image_size)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def build_data(
    args: argparse.Namespace, accelerator: Accelerator, config: SwinV2Config
) -> tuple[SimMIMDataset, torch.utils.data.DataLoader]:
    """The augmented, masked images and their loader (shuffled by the sampler accelerate makes seedable)."""
    masks = MaskGenerator(
        image_size=config.image_size,
        mask_patch_size=args.mask_patch_size or scaled_mask_patch_size(config.image_size, config.patch_size),
        model_patch_size=config.patch_size,
        ratio=args.mask_ratio,
    )
    with accelerator.main_process_first():
        dataset = SimMIMDataset(load_images(args), config.image_size, masks, args.seed)
    global_batch = args.per_device_train_batch_size * accelerator.num_processes
    if len(dataset) < global_batch:
        raise InputError(
            f"{len(dataset)} images cannot fill one batch of {global_batch} "
            f"({accelerator.num_processes} processes x {args.per_device_train_batch_size}); lower "
            "--per_device_train_batch_size or add images."
        )
    dataloader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.per_device_train_batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.dataloader_num_workers,
    )
    return dataset, dataloader


def build_optimizer(
    args: argparse.Namespace, accelerator: Accelerator, model: torch.nn.Module
) -> torch.optim.Optimizer:
    """AdamW in the Swin recipe's groups; DeepSpeed's clipping set to `--max_grad_norm`."""
    groups = parameter_groups(model, args.learning_rate, args.weight_decay)
    if accelerator.state.deepspeed_plugin is not None:  # DeepSpeed clips by its config: make "auto" mean our flag
        accelerator.state.deepspeed_plugin.fill_match(
            "gradient_clipping", must_match=False, gradient_clipping=args.max_grad_norm
        )
    return torch.optim.AdamW(groups, lr=args.learning_rate)


# ----------------------------------------------------------------------------------------------------------------------
# Processes and sharding
# ----------------------------------------------------------------------------------------------------------------------


def uses_deepspeed() -> bool:
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def device_arguments() -> dict[str, Any]:
    """Accelerate picks the distributed mode from the device. Without GPUs, several processes (torchrun or
    `accelerate launch --multi_gpu`) need `cpu=True` to train data-parallel over gloo (otherwise each one trains
    alone), whereas DeepSpeed refuses `cpu=True` and needs the gloo backend named instead."""
    if torch.accelerator.is_available():
        return {}
    if uses_deepspeed() and "LOCAL_RANK" in os.environ:
        return {"kwargs_handlers": [InitProcessGroupKwargs(backend="gloo")]}
    return {"cpu": True}


def shard_with_fsdp2(model: torch.nn.Module) -> None:
    """FSDP2 as accelerate's FSDP plugin applies it (`fsdp_version: 2`, wrap at `SwinV2Block`): each block is a
    unit gathered for its own forward and backward, the root holds the rest (embeddings, merging, decoder)."""
    from torch.distributed.fsdp import fully_shard

    for module in model.modules():
        if isinstance(module, SwinV2Block):
            fully_shard(module)
    fully_shard(model)
    held = sum(parameter.to_local().numel() for parameter in model.parameters())
    total = sum(parameter.numel() for parameter in model.parameters())
    logger.info(f"FSDP2: this process holds {held} of {total} parameter values", main_process_only=False)


def prepare_zero3(accelerator: Accelerator, model: torch.nn.Module) -> None:
    """Make each SwinV2Block one ZeRO-3 unit, gathered whole on entering it (what FSDP's wrap at SwinV2Block does),
    instead of hooking and tracing every sub-module: SwinV2 reads some sub-modules' weights without calling them
    (the fused qkv projection, the position-bias MLP), which a per-module trace does not follow."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None and plugin.zero_stage == 3:
        from deepspeed.utils import set_z3_leaf_modules

        set_z3_leaf_modules(model, [SwinV2Block])


def full_state_dict(accelerator: Accelerator, model: torch.nn.Module, fsdp2: bool) -> dict[str, torch.Tensor]:
    """The complete weights, on the main process at least (sharded runs gather them: every process must call this)."""
    if fsdp2:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return accelerator.get_state_dict(model)


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Progress(CheckpointedProgress):
    """Where training stands; saved with accelerate's state so that a resumed run continues the same curve."""

    completed_steps: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    losses: list[float] = field(default_factory=list)


def run_state(
    args: argparse.Namespace, config: SwinV2Config, masks: MaskGenerator, num_processes: int
) -> dict[str, Any]:
    """What a checkpoint must agree with to continue the same run: the model, the images, the masks, the batching."""
    settings = ("train_dir", "max_train_samples", "per_device_train_batch_size", "gradient_accumulation_steps", "seed")
    return {
        **common.architecture(config),
        "mim_norm_target_patch_size": config.mim_norm_target_patch_size,
        "mask_patch_size": masks.mask_patch_size,
        "mask_ratio": masks.ratio,
        **{name: getattr(args, name) for name in settings},
        "num_processes": num_processes,
    }


# ----------------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------------


def wants_checkpoint(args: argparse.Namespace, progress: Progress, end_of_epoch: bool) -> bool:
    if args.checkpointing_steps is None or (args.checkpointing_steps == "epoch") != end_of_epoch:
        return False
    return end_of_epoch or progress.completed_steps % args.checkpointing_steps == 0


def train(
    accelerator: Accelerator,
    args: argparse.Namespace,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    dataloader: torch.utils.data.DataLoader,
    dataset: SimMIMDataset,
    progress: Progress,
    max_train_steps: int,
    state: dict[str, Any],
) -> None:
    """The update loop from `progress` to `max_train_steps`; `progress.losses` holds the loss of every update,
    averaged over its micro-batches and the processes. Checkpoints carry the run state `state`."""
    bar = tqdm(total=max_train_steps, initial=progress.completed_steps, disable=not accelerator.is_local_main_process)
    saved = TrainingState(model, optimizer, scheduler, progress)
    while progress.completed_steps < max_train_steps:
        model.train()
        dataset.set_epoch(progress.epoch)
        loader = accelerator.skip_first_batches(dataloader, progress.batches_in_epoch)
        loader.set_epoch(progress.epoch)
        micro_losses = []
        for batch in loader:
            with accelerator.accumulate(model):
                with accelerator.autocast():  # the prepared model autocasts itself, one sharded by FSDP2 does not
                    loss = model(**batch).loss
                micro_losses.append(accelerator.reduce(loss.detach(), "mean").item())
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            progress.batches_in_epoch += 1
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            progress.completed_steps += 1
            progress.losses.append(float(np.mean(micro_losses)))
            micro_losses = []
            bar.update(1)
            if progress.completed_steps % args.logging_steps == 0:
                bar.set_postfix(loss=f"{np.mean(progress.losses[-args.logging_steps :]):.4f}", epoch=progress.epoch)
            if wants_checkpoint(args, progress, end_of_epoch=False):
                save_checkpoint(accelerator, args.checkpoint_dir, progress.completed_steps, state, saved)
            if progress.completed_steps >= max_train_steps:
                break
        if progress.batches_in_epoch == len(dataloader):  # the epoch ran to its end
            progress.epoch, progress.batches_in_epoch = progress.epoch + 1, 0
            if wants_checkpoint(args, progress, end_of_epoch=True):
                save_checkpoint(accelerator, args.checkpoint_dir, progress.completed_steps, state, saved)
    bar.close()


def summarize(args: argparse.Namespace, accelerator: Accelerator, progress: Progress, seconds: float) -> dict[str, Any]:
    """The run's figures for results.json."""
    first, last = progress.losses[:LOSS_SUMMARY_STEPS], progress.losses[-LOSS_SUMMARY_STEPS:]
    per_update = args.per_device_train_batch_size * args.gradient_accumulation_steps
    return {
        "train_steps": progress.completed_steps,
        "epochs": progress.epoch,
        "processes": accelerator.num_processes,
        "global_batch_size": per_update * accelerator.num_processes,
        "first_loss_mean": float(np.mean(first)),
        "last_loss_mean": float(np.mean(last)),
        "losses": progress.losses,
        "train_seconds": round(seconds, 1),
    }


def save_outputs(
    accelerator: Accelerator, args: argparse.Namespace, model: torch.nn.Module, results: dict[str, Any]
) -> None:
    """The Hub-ready folder, written to a temporary sibling and renamed when complete: weights (gathered from the
    shards), config, code, image processor, card and results.json. A plain model of the same config is saved so
    that sharding wrappers leave no trace in config.json."""
    state_dict = full_state_dict(accelerator, model, args.fsdp2)
    if accelerator.is_main_process:
        config = accelerator.unwrap_model(model).config
        with torch.device("meta"):
            plain = SwinV2ForMaskedImageModeling(config)
        preprocessing = Preprocessing(crop_fraction=1.0)
        processor = image_processor_for(config, preprocessing)
        facts = CardFacts(
            repo_id=args.hub_model_id or args.output_dir.name,
            architecture=type(plain).__name__,
            preprocessing=describe_preprocessing(config, preprocessing),
            dataset=args.train_dir.name if args.train_dir else "sklearn-digits",
            extra_tags=["simmim"],
        )
        with atomic_directory(
            args.output_dir, args.overwrite_output_dir, args.inputs, "--overwrite_output_dir"
        ) as folder:
            plain.save_pretrained(folder, state_dict={key: value.contiguous() for key, value in state_dict.items()})
            processor.save_pretrained(folder)
            render_model_card(config, facts).save(folder / "README.md")
            (folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        if args.push_to_hub:
            push_folder(args.output_dir, args.hub_model_id, commit_message="SimMIM pretraining")
    wait_for_main_process(accelerator)


def wait_for_main_process(accelerator: Accelerator) -> None:
    """`accelerator.wait_for_everyone()` for the end of the run, safe for gloo at exit. gloo completes collectives on
    worker threads that drop their tensors only afterwards (and a barrier also keeps every collective in flight when
    it started: here the all-gathers of a ZeRO-3 state dict). A tensor the interpreter owns whose last reference goes
    away on such a thread while Python shuts down aborts the process ("terminate called without an active
    exception", seen with ZeRO-3 over gloo on a loaded CPU). So: an all-reduce, which keeps nothing else, and a wait
    until gloo has let go of its tensor."""
    if accelerator.num_processes == 1:
        return
    token = torch.zeros(1, device=accelerator.device)
    torch.distributed.all_reduce(token)
    deadline = time.monotonic() + GLOO_RELEASE_TIMEOUT_S
    while token._use_count() > 1 and time.monotonic() < deadline:
        time.sleep(GLOO_RELEASE_POLL_S)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    checkpoint = checkpoint_to_resume(args.resume_from_checkpoint, args.checkpoint_dir, args.overwrite_output_dir)

    # Accelerator: the seedable sampler gives every process the same order, whatever their number.
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=resolve_mixed_precision(args.mixed_precision),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        **device_arguments(),
    )
    if args.fsdp2 and accelerator.distributed_type != DistributedType.MULTI_CPU:
        raise InputError(
            "--fsdp2 is for several CPU processes (torchrun --nproc_per_node N); on GPUs launch with "
            "examples/accelerate_configs/fsdp.yaml instead."
        )
    setup_logging(accelerator)
    if args.checkpointing_steps or checkpoint is not None:
        check_checkpointable(accelerator)
    logger.info(accelerator.state, main_process_only=False)
    set_seed(args.seed)

    # Model and data.
    model = build_model(args)
    config = model.config
    dataset, dataloader = build_data(args, accelerator, config)
    state = run_state(args, config, dataset.masks, accelerator.num_processes)
    if checkpoint is not None:
        check_run_state(checkpoint, state)

    # Sharding, optimiser and schedule.
    if args.fsdp2:
        shard_with_fsdp2(model)
    prepare_zero3(accelerator, model)
    optimizer = build_optimizer(args, accelerator, model)
    if args.fsdp2:  # the model is already sharded; preparing it would wrap it in DDP as well
        optimizer, dataloader = accelerator.prepare(optimizer, dataloader)
    else:
        model, optimizer, dataloader = accelerator.prepare(model, optimizer, dataloader)
    # Warmup and cosine decay to zero, in optimiser steps; not prepared (Accelerate's wrapper steps once per process).
    max_train_steps = training_steps(
        dataloader, args.gradient_accumulation_steps, args.num_train_epochs, args.max_train_steps
    )
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, warmup_steps(args.num_warmup_steps, max_train_steps), max_train_steps
    )

    progress = Progress()
    prepare_checkpoint_directory(accelerator, args.checkpoint_dir, resuming=checkpoint is not None)
    if checkpoint is not None:
        load_checkpoint(accelerator, checkpoint, TrainingState(model, optimizer, scheduler, progress))
        logger.info(f"Resumed from {checkpoint} at update {progress.completed_steps}", main_process_only=True)
    logger.info(
        f"SimMIM: {len(dataset)} images at {config.image_size} px, {dataset.masks.mask_patch_size} px mask patches "
        f"({args.mask_ratio:.0%} masked), targets normalised over {config.mim_norm_target_patch_size} px; "
        f"{accelerator.num_processes} processes x {args.per_device_train_batch_size} images x "
        f"{args.gradient_accumulation_steps} accumulation; {max_train_steps} updates from {progress.completed_steps}",
        main_process_only=True,
    )
    start = time.perf_counter()
    train(accelerator, args, model, optimizer, scheduler, dataloader, dataset, progress, max_train_steps, state)
    results = summarize(args, accelerator, progress, time.perf_counter() - start)
    logger.info(
        f"Reconstruction loss: {results['first_loss_mean']:.4f} over the first updates, "
        f"{results['last_loss_mean']:.4f} over the last (up to {LOSS_SUMMARY_STEPS} each)",
        main_process_only=True,
    )
    save_outputs(accelerator, args, model, results)
    accelerator.end_training()


if __name__ == "__main__":
    run_script(main, sys.argv[1:])
