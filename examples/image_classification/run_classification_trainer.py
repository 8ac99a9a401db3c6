#!/usr/bin/env python
# /// script
# requires-python = ">=3.10"
# dependencies = ["swinv2_hf", "accelerate>=1.0", "datasets>=3.0", "evaluate>=0.4", "scikit-learn>=1.3",
#                 "matplotlib>=3.7"]
# ///
"""Fine-tune SwinV2 for image classification with transformers' Trainer: the twin of run_classification.py.

The same data, transforms, model loading, loss, metric and output folder (swinv2_hf_examples/classification.py), and
the same defaults (the digits main job). Trainer would put every weight matrix under weight decay, the position-bias MLP
included, with one learning rate; this script gives it the Swin recipe's parameter groups instead (layer-wise
learning-rate decay, no decay on biases, norms, `logit_scale` and the position-bias MLP):

    python examples/image_classification/run_classification_trainer.py --output_dir outputs/digits-trainer

Trainer's own flags (TrainingArguments) apply: --learning_rate, --num_train_epochs, --gradient_accumulation_steps,
--bf16, --gradient_checkpointing, --save_steps, --resume_from_checkpoint (a folder or 'latest'), --push_to_hub ...
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import EvalPrediction, HfArgumentParser, Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from swinv2_hf import image_processor_for, parameter_groups
from swinv2_hf_examples import classification as common
from swinv2_hf_examples.classification import DataArguments, ModelArguments, OutputArguments
from swinv2_hf_examples.runtime import (
    InputError,
    check_same_run,
    native_bf16,
    run_script,
)

# TrainingArguments defaults for the recipe both scripts share; any flag still overrides them.
TRAINER_DEFAULTS = {
    **common.TRAINING_DEFAULTS,
    "lr_scheduler_type": "cosine",
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "logging_steps": 10,
    "report_to": "none",
    "remove_unused_columns": False,  # the examples are dicts of tensors made by ImageExamples
    "bf16": native_bf16(),
    "use_cpu": not torch.cuda.is_available(),  # TrainingArguments refuses bf16 on a CPU it was not told to use
}


class AugmentationEpoch(TrainerCallback):
    """Tells the training examples which epoch starts: their random crops and flips are seeded by (seed, epoch,
    index), and Trainer's `set_epoch` reaches only the sampler."""

    def __init__(self, examples: common.ImageExamples) -> None:
        self.examples = examples

    def on_epoch_begin(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        self.examples.set_epoch(math.floor(state.epoch or 0))


class SwinV2Trainer(Trainer):
    """Trainer with the Swin recipe's optimiser groups and the shared loss (label smoothing, mixup/cutmix)."""

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean; Trainer divides it for accumulation

    def __init__(self, *args: Any, layer_decay: float, mixer: common.BatchMixer, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.layer_decay, self.mixer, self.mixed_batches = layer_decay, mixer, 0

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            groups = parameter_groups(self.model, self.args.learning_rate, self.args.weight_decay, self.layer_decay)
            self.optimizer = torch.optim.AdamW(
                groups,
                lr=self.args.learning_rate,
                eps=self.args.adam_epsilon,
                betas=(self.args.adam_beta1, self.args.adam_beta2),
            )
        return self.optimizer

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        pixel_values, targets = inputs["pixel_values"], inputs["labels"]
        if model.training and self.mixer.enabled:
            pixel_values, targets = self.mixer(pixel_values, targets, key=self.mixed_batches)
            self.mixed_batches += 1
        outputs = model(pixel_values=pixel_values)
        smoothing = self.args.label_smoothing_factor if model.training else 0.0
        loss = common.classification_loss(outputs.logits, targets, smoothing)
        return (loss, outputs) if return_outputs else loss


def parse_args(
    argv: Sequence[str] | None = None,
) -> tuple[DataArguments, ModelArguments, OutputArguments, TrainingArguments]:
    """The arguments shared with run_classification.py and TrainingArguments, with the recipe's defaults."""
    parser = HfArgumentParser((DataArguments, ModelArguments, OutputArguments, TrainingArguments), description=__doc__)
    parser.set_defaults(**TRAINER_DEFAULTS)
    arguments = tuple(parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False))
    common.require_positive(arguments[-1])
    return arguments


def checkpoint_to_resume(training_args: TrainingArguments, model: torch.nn.Module) -> str | None:
    """The checkpoint to resume, checked against the model before Trainer loads it."""
    requested = training_args.resume_from_checkpoint
    if requested is None:
        return None
    output_dir = training_args.output_dir
    checkpoint = get_last_checkpoint(output_dir) if requested == "latest" and Path(output_dir).is_dir() else requested
    if checkpoint is None or not (Path(checkpoint) / "config.json").is_file():
        raise InputError(
            f"--resume_from_checkpoint {requested}: no Trainer checkpoint there (a checkpoint-N folder with "
            f"config.json); give one of {output_dir}/checkpoint-N or 'latest'."
        )
    check_same_run(
        Path(checkpoint), json.loads((Path(checkpoint) / "config.json").read_text()), common.architecture(model.config)
    )
    return checkpoint


def summarize(
    trainer: Trainer,
    data: common.ImageData,
    data_args: DataArguments,
    layer_decay: float,
    test_metrics: dict[str, float],
    train_seconds: float,
) -> common.RunSummary:
    """The run's results from Trainer's log history, in the layout run_classification.py reports."""
    history = trainer.state.log_history
    evaluations = [
        {
            "epoch": round(entry["epoch"]),
            "step": entry["step"],
            **{
                name.removeprefix("eval_"): value
                for name, value in entry.items()
                if name.startswith("eval_") and ("loss" in name or "accuracy" in name)
            },
        }
        for entry in history
        if "eval_loss" in entry
    ]
    args = trainer.args
    return common.RunSummary(
        script=Path(__file__).name,
        dataset=data_args.dataset_label,
        split_sizes=data.sizes(),
        test_metrics={
            name.removeprefix("test_"): value
            for name, value in test_metrics.items()
            if "loss" in name or "accuracy" in name
        },
        train_losses=[(entry["step"], entry["loss"]) for entry in history if "loss" in entry],
        evaluations=evaluations,
        train_seconds=train_seconds,
        hyperparameters=common.hyperparameters(
            trainer.model,
            {
                "epochs": args.num_train_epochs,
                "optimiser steps": trainer.state.global_step,
                "batch": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
                "learning rate": args.learning_rate,
                "layer decay": layer_decay,
                "weight decay": args.weight_decay,
                "warmup steps": args.warmup_steps,
                "label smoothing": args.label_smoothing_factor,
                "mixed precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "no",
            },
        ),
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    data_args, model_args, output_args, training_args = parse_args(argv)
    output_dir = Path(training_args.output_dir)
    inputs = common.run_inputs(data_args, model_args, training_args.resume_from_checkpoint)
    common.refuse_existing_output(output_dir, output_args.overwrite_output_dir, inputs)
    push_to = common.push_target(training_args.push_to_hub, training_args.hub_model_id)
    training_args.push_to_hub = False  # the finished model folder is pushed, with its card; not every checkpoint

    # Data and model (every check runs here, before anything is written).
    with training_args.main_process_first(desc="loading the data"):
        data = common.load_data(data_args)
    set_seed(training_args.seed)  # before the model, so that both scripts start from the same weights
    model, preprocessing = common.load_model(model_args, data.labels, data_args)
    checkpoint = checkpoint_to_resume(training_args, model)
    processor = image_processor_for(model.config, preprocessing)
    train_set = common.ImageExamples(
        data, "train", common.train_transform(processor, model.config, data_args), training_args.seed
    )
    validation_set, test_set = (
        common.ImageExamples(data, split, common.EvalTransform(processor), training_args.seed)
        for split in ("validation", "test")
    )

    metric = common.load_metric()
    top_k = common.top_k_for(len(data.labels))

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        return metric.compute(predictions=prediction.predictions, references=prediction.label_ids, top_k=top_k)

    layer_decay = model_args.resolved_layer_decay
    trainer = SwinV2Trainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=validation_set,
        data_collator=common.collate,
        compute_metrics=compute_metrics,
        callbacks=[AugmentationEpoch(train_set)],
        layer_decay=layer_decay,
        mixer=common.mixer_for(data_args, training_args.label_smoothing_factor, len(data.labels), training_args.seed),
    )
    train_output = trainer.train(resume_from_checkpoint=checkpoint)
    test_metrics = trainer.evaluate(test_set, metric_key_prefix="test")
    summary = summarize(trainer, data, data_args, layer_decay, test_metrics, train_output.metrics["train_runtime"])
    if trainer.is_world_process_zero():
        model_dir = common.write_outputs(
            output_dir,
            trainer.model,
            processor,
            summary,
            preprocessing,
            training_args.hub_model_id,
            output_args,
            inputs,
        )
        common.finish(summary, model_dir, data, push_to)
    return summary.as_json()


if __name__ == "__main__":
    run_script(main, sys.argv[1:])
