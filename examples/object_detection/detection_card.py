"""The model card and results table of a detector trained by `run_detection.py`: huggingface_hub's ModelCard from
`card_template.md`, with the COCO metrics as model-index eval results (what the Hub shows as the model's scores)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from swinv2_hf import SwinV2Config, size_name

TEMPLATE = Path(__file__).with_name("card_template.md")
LICENSE = "apache-2.0"  # the code; the card says that the weights inherit their data's terms
HEADLINE_METRICS = {"map": "mAP", "map_50": "mAP@0.5", "map_75": "mAP@0.75"}
SECONDARY_METRICS = {
    "map_small": "mAP small",
    "map_medium": "mAP medium",
    "map_large": "mAP large",
    "mar_100": "mAR@100",
}
METRIC_NAMES = {**HEADLINE_METRICS, **SECONDARY_METRICS}
DETECTOR_NAMES = {"deformable_detr": "Deformable DETR", "rt_detr": "RT-DETR"}
DETECTOR_PAPERS = {
    "deformable_detr": (
        "Deformable DETR: Deformable Transformers for End-to-End Object Detection",
        "https://arxiv.org/abs/2010.04159",
    ),
    "rt_detr": ("DETRs Beat YOLOs on Real-time Object Detection", "https://arxiv.org/abs/2304.08069"),
}


def metric_label(name: str) -> str:
    """The display name of a results.json metric (`map_cat` -> `AP cat`)."""
    if name in METRIC_NAMES:
        return METRIC_NAMES[name]
    return f"AP {name.removeprefix('map_')}" if name.startswith("map_") else name


def results_table(metrics: dict[str, float], title: str) -> str:
    """A markdown table: the headline metrics first, then by object size, recall, and each category."""
    per_category = [name for name in metrics if name not in METRIC_NAMES and name.startswith("map_")]
    rows = [f"| {metric_label(n)} | {metrics[n]:.4f} |" for n in [*METRIC_NAMES, *per_category] if n in metrics]
    return "\n".join(
        [f"COCO box metrics on {title} (-1: no box of that kind)", "", "| metric | value |", "|---|---|", *rows]
    )


@dataclass
class CardFacts:
    """What the card states about a trained detector."""

    repo_id: str
    detector: str
    backbone_name: str
    backbone_pretrained: bool
    backbone: SwinV2Config
    dataset_name: str
    train_images: int
    validation_images: int
    training: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_run(
        cls,
        args: argparse.Namespace,
        backbone: Any,
        metrics: dict[str, float],
        train_images: int,
        validation_images: int,
    ) -> CardFacts:
        low, high = args.scale_range
        training = {
            "steps": args.max_train_steps,
            "batch size": args.per_device_train_batch_size,
            "gradient accumulation": args.gradient_accumulation_steps,
            "learning rate (head / backbone)": f"{args.learning_rate:g} / {args.backbone_learning_rate:g}",
            "schedule": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
            "image size (shorter / longer side at most)": f"{args.image_size} / {args.max_size}",
            "augmentation": f"flip p={args.flip_probability}, scale x{low}-{high}, "
            f"photometric {args.photometric_strength}",
            "seed": args.seed,
        }
        return cls(
            args.hub_model_id or args.output_dir.name,
            args.detector,
            backbone.name,
            backbone.pretrained,
            backbone.config,
            args.dataset_name,
            train_images,
            validation_images,
            training,
            metrics,
        )


def _eval_results(facts: CardFacts) -> list[EvalResult]:
    return [
        EvalResult(
            task_type="object-detection",
            task_name="Object Detection",
            dataset_type=facts.dataset_name,
            dataset_name=facts.dataset_name,
            dataset_split="validation",
            metric_type=name,
            metric_name=label,
            metric_value=round(facts.metrics[name], 4),
        )
        for name, label in HEADLINE_METRICS.items()
        if name in facts.metrics
    ]


def render_card(facts: CardFacts) -> ModelCard:
    card_data = ModelCardData(
        library_name="transformers",
        license=LICENSE,
        pipeline_tag="object-detection",
        tags=["object-detection", "vision", "swinv2", "swinv2_hf", facts.detector.replace("_", "-")],
        datasets=[facts.dataset_name],
        model_name=facts.repo_id,
        eval_results=_eval_results(facts),
    )
    paper_title, paper_url = DETECTOR_PAPERS[facts.detector]
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        title=facts.repo_id.rsplit("/", 1)[-1],
        detector_name=DETECTOR_NAMES[facts.detector],
        paper_title=paper_title,
        paper_url=paper_url,
        size=size_name(facts.backbone),
        backbone=facts.backbone,
        backbone_name=facts.backbone_name,
        backbone_pretrained=facts.backbone_pretrained,
        facts=facts,
        results=results_table(facts.metrics, f"{facts.dataset_name} ({facts.validation_images} validation images)"),
        repo_id=facts.repo_id,
    )


def write_model_card(path: Path, facts: CardFacts) -> None:
    render_card(facts).save(path)
