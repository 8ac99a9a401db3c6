#!/usr/bin/env python
# /// script
# requires-python = ">=3.10"
# dependencies = ["swinv2_hf", "accelerate>=1.0", "datasets>=3.0", "evaluate>=0.4", "scikit-learn>=1.3", "tqdm>=4.60",
#                 "matplotlib>=3.7"]
# ///
"""Fine-tune SwinV2 for image classification with Accelerate (no Trainer), or train it from scratch.

With no arguments this is the repository's main job: a small SwinV2 trained from scratch on the embedded digits
(scikit-learn's 1,797 handwritten digits, upscaled; nothing is downloaded), evaluated every epoch, tested on a
held-out split, saved as a Hub-ready folder with its model card (outputs/digits/model), and asked to classify a
held-out image through `pipeline("image-classification")`:

    python examples/image_classification/run_classification.py

Fine-tuning a converted checkpoint on an image folder at a larger resolution and window, on several devices:

    accelerate launch examples/image_classification/run_classification.py --model_name_or_path swinv2-tiny \\
        --train_dir images/ --image_size 384 --window_size 24 --output_dir outputs/mine --push_to_hub

A killed run continues exactly where its last checkpoint left it (same data order, augmentations, dropout and
losses) with `--resume_from_checkpoint latest`.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, set_seed
from tqdm.auto import tqdm
from transformers import HfArgumentParser, get_cosine_schedule_with_warmup

from swinv2_hf import image_processor_for, parameter_groups
from swinv2_hf_examples import classification as common
from swinv2_hf_examples.classification import DataArguments, ImageData, ModelArguments, OutputArguments, argument
from swinv2_hf_examples.runtime import (
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

logger = get_logger(__name__)


def recipe(name: str, help: str) -> Any:
    """A loop argument whose default is the shared recipe's (swinv2_hf_examples.classification.TRAINING_DEFAULTS)."""
    return argument(common.TRAINING_DEFAULTS[name], help)


@dataclass
class LoopArguments:
    """The training loop (the Trainer script's TrainingArguments fields of the same names mean the same)."""

    output_dir: str = recipe("output_dir", "Run folder: model/ (Hub-ready), results.json, curves.png.")
    learning_rate: float = recipe("learning_rate", "Peak learning rate (of the head, with layer decay).")
    weight_decay: float = recipe("weight_decay", "AdamW weight decay of the weight matrices.")
    num_train_epochs: int = recipe("num_train_epochs", "Epochs.")
    max_train_steps: int | None = argument(None, "Stop after this many optimiser steps (overrides epochs).")
    per_device_train_batch_size: int = recipe("per_device_train_batch_size", "Training batch per device.")
    per_device_eval_batch_size: int = recipe("per_device_eval_batch_size", "Evaluation batch per device.")
    gradient_accumulation_steps: int = recipe("gradient_accumulation_steps", "Batches per optimiser step.")
    num_warmup_steps: float = argument(
        common.TRAINING_DEFAULTS["warmup_steps"], "Linear warmup before the cosine: steps, or a fraction below 1."
    )
    max_grad_norm: float = recipe("max_grad_norm", "Gradient clipping; 0 disables it.")
    label_smoothing_factor: float = recipe("label_smoothing_factor", "Label smoothing epsilon.")
    seed: int = recipe("seed", "Seeds initialisation, order and augmentation.")
    dataloader_num_workers: int = recipe("dataloader_num_workers", "Data-loading processes.")
    mixed_precision: str = argument(
        "auto",
        "no, bf16, fp16, or auto: bf16 where the device computes it natively.",
        choices=["auto", "no", "bf16", "fp16"],
    )
    gradient_checkpointing: bool = argument(False, "Recompute each block's activations in backward (less memory).")
    checkpointing_steps: int = argument(0, "Also checkpoint every this many optimiser steps (0: epoch ends only).")
    checkpoints_total_limit: int | None = argument(2, "Keep the newest this many checkpoints (None: all).")
    checkpoint_dir: str | None = argument(None, "Where step_N checkpoints go (default: <output_dir>_checkpoints).")
    resume_from_checkpoint: str | None = argument(None, "A checkpoint folder, or 'latest' in --checkpoint_dir.")
    push_to_hub: bool = argument(False, "Upload the model folder to the Hub at the end.")
    hub_model_id: str | None = argument(None, "The Hub repository (user/name) to create or update.")

    def __post_init__(self) -> None:
        common.require_positive(self)
        non_negative = (
            "weight_decay",
            "num_warmup_steps",
            "max_grad_norm",
            "checkpointing_steps",
            "dataloader_num_workers",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise InputError(f"--{name} must be >= 0, got {getattr(self, name)}.")
        if self.max_train_steps is not None and self.max_train_steps < 1:
            raise InputError(f"--max_train_steps must be at least 1, got {self.max_train_steps}.")
        self.checkpoint_dir = str(self.checkpoint_dir or default_checkpoint_dir(self.output_dir))
        if not 0 <= self.label_smoothing_factor < 1:
            raise InputError(f"--label_smoothing_factor must be in [0, 1), got {self.label_smoothing_factor}.")
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise InputError("--checkpoints_total_limit must be at least 1 (the checkpoint to resume from).")


@dataclass
class Progress(CheckpointedProgress):
    """Where training stands; saved in every checkpoint so a resumed run knows which
    batches of which epoch are done and keeps the curves of the steps before it."""

    epoch: int = 0
    batches_in_epoch: int = 0
    step: int = 0
    train_seconds: float = 0.0
    train_losses: list[list[float]] = field(default_factory=list)  # [step, loss]
    evaluations: list[dict[str, float]] = field(default_factory=list)


class Stopwatch:
    """Wall time of the training loop only, carried across a resume."""

    def __init__(self, elapsed: float = 0.0) -> None:
        self.elapsed, self.started = elapsed, time.perf_counter()

    def seconds(self) -> float:
        return self.elapsed + time.perf_counter() - self.started


def parse_args(
    argv: Sequence[str] | None = None,
) -> tuple[DataArguments, ModelArguments, OutputArguments, LoopArguments]:
    """The data, model and output arguments shared with the Trainer script, and this loop's; each is checked."""
    parser = HfArgumentParser((DataArguments, ModelArguments, OutputArguments, LoopArguments), description=__doc__)
    return tuple(parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False))


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------------


def run_state(
    data: ImageData,
    model_args: ModelArguments,
    config: transformers.PretrainedConfig,
    args: LoopArguments,
    num_processes: int,
) -> dict[str, Any]:
    """What a checkpoint must agree with to continue the same run: the model, the data and the batching."""
    return {
        "model": model_args.model_name_or_path,
        **common.architecture(config),
        "split_sizes": data.sizes(),
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "num_processes": num_processes,
        "seed": args.seed,
    }


# ----------------------------------------------------------------------------------------------------------------------
# Training and evaluation
# ----------------------------------------------------------------------------------------------------------------------


def evaluation_loop(
    accelerator: Accelerator, model: torch.nn.Module, dataloader: torch.utils.data.DataLoader, num_labels: int
) -> dict[str, float]:
    """Loss (without smoothing) and top-k accuracy over a whole split, gathered from every process."""
    model.eval()
    metric = common.load_metric()
    total_loss, count = 0.0, 0
    for batch in dataloader:
        with torch.no_grad():
            logits = model(pixel_values=batch["pixel_values"]).logits
        logits, labels = accelerator.gather_for_metrics((logits.float(), batch["labels"]))
        total_loss += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        count += len(labels)
        metric.add_batch(predictions=logits.cpu().numpy(), references=labels.cpu().numpy())
    return {"loss": total_loss / count, **metric.compute(top_k=common.top_k_for(num_labels))}


@dataclass
class Training:
    """What the loop works on, once prepared by Accelerate."""

    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    train_set: common.ImageExamples
    train_loader: torch.utils.data.DataLoader
    validation_loader: torch.utils.data.DataLoader
    mixer: common.BatchMixer
    total_steps: int


def training_step(run: Training, batch: dict[str, torch.Tensor], args: LoopArguments) -> torch.Tensor:
    """Forward and backward of one batch; the optimiser steps only where the accumulation window closes."""
    accelerator = run.accelerator
    with accelerator.accumulate(run.model):
        pixel_values, targets = batch["pixel_values"], batch["labels"]
        if run.mixer.enabled:
            pixel_values, targets = run.mixer(pixel_values, targets, key=accelerator.step)
        logits = run.model(pixel_values=pixel_values).logits
        loss = common.classification_loss(logits, targets, args.label_smoothing_factor)
        accelerator.backward(loss)
        if accelerator.sync_gradients and args.max_grad_norm:
            accelerator.clip_grad_norm_(run.model.parameters(), args.max_grad_norm)
        run.optimizer.step()
        run.optimizer.zero_grad()
    return loss.detach()


def train(run: Training, args: LoopArguments, progress: Progress, state: dict[str, Any]) -> None:
    """The epochs from wherever `progress` stands: steps, checkpoints every `checkpointing_steps` and at each epoch
    end (after its evaluation), skipping the batches a resumed epoch already trained on."""
    accelerator = run.accelerator
    num_epochs = math.ceil(run.total_steps / math.ceil(len(run.train_loader) / args.gradient_accumulation_steps))
    bar = tqdm(
        total=run.total_steps, initial=progress.step, desc="training", disable=not accelerator.is_local_main_process
    )
    stopwatch = Stopwatch(progress.train_seconds)
    saved = TrainingState(run.model, run.optimizer, run.lr_scheduler, progress)
    num_labels = accelerator.unwrap_model(run.model).config.num_labels
    for epoch in range(progress.epoch, num_epochs):
        run.model.train()
        run.train_set.set_epoch(epoch)
        run.train_loader.set_epoch(epoch)
        step_losses = []
        for batch in accelerator.skip_first_batches(run.train_loader, progress.batches_in_epoch):
            step_losses.append(training_step(run, batch, args))
            progress.batches_in_epoch += 1
            if not accelerator.sync_gradients:
                continue
            run.lr_scheduler.step()
            progress.step += 1
            step_loss = accelerator.gather(torch.stack(step_losses)).mean().item()
            progress.train_losses.append([progress.step, step_loss])
            step_losses = []
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{step_loss:.4f}")
            end_of_epoch = accelerator.gradient_state.end_of_dataloader or progress.step >= run.total_steps
            if args.checkpointing_steps and progress.step % args.checkpointing_steps == 0 and not end_of_epoch:
                progress.train_seconds = stopwatch.seconds()
                save_checkpoint(
                    accelerator, Path(args.checkpoint_dir), progress.step, state, saved, args.checkpoints_total_limit
                )
            if progress.step >= run.total_steps:
                break
        metrics = evaluation_loop(accelerator, run.model, run.validation_loader, num_labels)
        progress.evaluations.append({"epoch": epoch + 1, "step": progress.step, **metrics})
        progress.epoch, progress.batches_in_epoch = epoch + 1, 0
        if accelerator.is_main_process:
            bar.write(f"epoch {epoch + 1}: " + ", ".join(f"validation {k} {v:.4f}" for k, v in metrics.items()))
        progress.train_seconds = stopwatch.seconds()
        save_checkpoint(
            accelerator, Path(args.checkpoint_dir), progress.step, state, saved, args.checkpoints_total_limit
        )
    bar.close()


def make_loaders(
    data: ImageData,
    processor: Any,
    config: transformers.PretrainedConfig,
    data_args: DataArguments,
    args: LoopArguments,
) -> tuple[common.ImageExamples, torch.utils.data.DataLoader, torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    """The augmented training set and its shuffled loader (its own seeded generator: nothing drawn from the global
    one, which a resume restores), and the validation and test loaders (the image processor, in order)."""
    train_set = common.ImageExamples(data, "train", common.train_transform(processor, config, data_args), args.seed)
    options = {"collate_fn": common.collate, "num_workers": args.dataloader_num_workers}
    train_loader = torch.utils.data.DataLoader(
        train_set,
        shuffle=True,
        batch_size=args.per_device_train_batch_size,
        generator=torch.Generator().manual_seed(args.seed),
        **options,
    )
    validation_loader, test_loader = (
        torch.utils.data.DataLoader(
            common.ImageExamples(data, split, common.EvalTransform(processor), args.seed),
            batch_size=args.per_device_eval_batch_size,
            **options,
        )
        for split in ("validation", "test")
    )
    return train_set, train_loader, validation_loader, test_loader


def run_summary(
    accelerator: Accelerator,
    model: torch.nn.Module,
    data: ImageData,
    data_args: DataArguments,
    args: LoopArguments,
    progress: Progress,
    test_metrics: dict[str, float],
    layer_decay: float,
) -> common.RunSummary:
    """What the run reports in results.json and the model card."""
    return common.RunSummary(
        script=Path(__file__).name,
        dataset=data_args.dataset_label,
        split_sizes=data.sizes(),
        test_metrics=test_metrics,
        train_losses=[tuple(item) for item in progress.train_losses],
        evaluations=progress.evaluations,
        train_seconds=progress.train_seconds,
        hyperparameters=common.hyperparameters(
            accelerator.unwrap_model(model),
            {
                "epochs": progress.epoch,
                "optimiser steps": progress.step,
                "batch": args.per_device_train_batch_size
                * args.gradient_accumulation_steps
                * accelerator.num_processes,
                "learning rate": args.learning_rate,
                "layer decay": layer_decay,
                "weight decay": args.weight_decay,
                "warmup steps": args.num_warmup_steps,
                "label smoothing": args.label_smoothing_factor,
                "mixed precision": accelerator.mixed_precision,
            },
        ),
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    data_args, model_args, output_args, args = parse_args(argv)
    output_dir = Path(args.output_dir)
    inputs = common.run_inputs(data_args, model_args, args.resume_from_checkpoint)
    common.refuse_existing_output(output_dir, output_args.overwrite_output_dir, inputs)
    push_to = common.push_target(args.push_to_hub, args.hub_model_id)
    checkpoint = checkpoint_to_resume(
        args.resume_from_checkpoint, Path(args.checkpoint_dir), output_args.overwrite_output_dir
    )

    # Accelerator: shuffling from a seeded sampler (seed + epoch), never from the global generator, so that
    # skipping batches on resume gives the same order; the loop steps the scheduler itself (once per optimiser step).
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=resolve_mixed_precision(args.mixed_precision),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    setup_logging(accelerator, logging.WARNING)
    set_seed(args.seed)

    # Data and model (every check runs here, before anything is written).
    with accelerator.main_process_first():
        data = common.load_data(data_args)
    model, preprocessing = common.load_model(model_args, data.labels, data_args)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    state = run_state(data, model_args, model.config, args, accelerator.num_processes)
    if checkpoint is not None:
        check_run_state(checkpoint, state)
    processor = image_processor_for(model.config, preprocessing)
    train_set, train_loader, validation_loader, test_loader = make_loaders(
        data, processor, model.config, data_args, args
    )

    # Optimiser: layer-wise decay groups, warmup + cosine over the optimiser steps.
    layer_decay = model_args.resolved_layer_decay
    groups = parameter_groups(model, args.learning_rate, args.weight_decay, layer_decay)
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate)
    model, optimizer, train_loader, validation_loader, test_loader = accelerator.prepare(
        model, optimizer, train_loader, validation_loader, test_loader
    )
    total_steps = training_steps(
        train_loader, args.gradient_accumulation_steps, args.num_train_epochs, args.max_train_steps
    )
    lr_scheduler = get_cosine_schedule_with_warmup(
        optimizer, warmup_steps(args.num_warmup_steps, total_steps), total_steps
    )
    check_checkpointable(accelerator)
    progress = Progress()
    prepare_checkpoint_directory(accelerator, Path(args.checkpoint_dir), resuming=checkpoint is not None)
    if checkpoint is not None:
        load_checkpoint(accelerator, checkpoint, TrainingState(model, optimizer, lr_scheduler, progress))
        accelerator.print(f"Resumed from {checkpoint}: epoch {progress.epoch + 1}, step {progress.step}.")
    accelerator.print(
        f"{data_args.dataset_label}: {data.sizes()} images of {len(data.labels)} classes; "
        f"{sum(p.numel() for p in model.parameters()):,} parameters; {total_steps} optimiser steps; "
        f"layer decay {layer_decay}; mixed precision {accelerator.mixed_precision}."
    )

    # Loop, then the test split with the final weights.
    mixer = common.mixer_for(data_args, args.label_smoothing_factor, len(data.labels), args.seed)
    train(
        Training(
            accelerator, model, optimizer, lr_scheduler, train_set, train_loader, validation_loader, mixer, total_steps
        ),
        args,
        progress,
        state,
    )
    test_metrics = evaluation_loop(accelerator, model, test_loader, len(data.labels))
    summary = run_summary(accelerator, model, data, data_args, args, progress, test_metrics, layer_decay)

    # Outputs: the Hub-ready folder, results and curves (main process), then the push and a pipeline check.
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model_dir = common.write_outputs(
            output_dir,
            accelerator.unwrap_model(model),
            processor,
            summary,
            preprocessing,
            args.hub_model_id,
            output_args,
            inputs,
        )
        common.finish(summary, model_dir, data, push_to)
    accelerator.end_training()
    return summary.as_json()


if __name__ == "__main__":
    run_script(main, sys.argv[1:])
