"""Model cards for converted and trained SwinV2 folders, made with huggingface_hub's ModelCard from one template
(`templates/model_card.md`), so that a converted release and `model_cards/` carry the same card."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from torch.utils.flop_counter import FlopCounterMode

from . import modeling_swinv2_hf
from .configuration_swinv2_hf import SIZES, VARIANTS, ZOO_URL, SwinV2Config, Variant, size_of
from .modeling_swinv2_hf import SwinV2PreTrainedModel

TEMPLATE = Path(__file__).with_name("templates") / "model_card.md"
SAMPLE_IMAGE_URL = "http://images.cocodataset.org/val2017/000000039769.jpg"
LICENSE = "mit"  # the original weights and code (microsoft/Swin-Transformer) are MIT
# The largest float64 difference of a converted model's outputs to the original's, over every tensor of the reference
# cases (tests/fixtures; it is case B's last stage), measured on an AMD EPYC Zen 3: the figure README.md states.
ORIGINAL_FLOAT64_DIFFERENCE = 3e-12
_DATASET_NAMES = {"imagenet-1k": "ImageNet-1K", "imagenet-21k": "ImageNet-22K (21,841 classes)"}
# fmt: off
_TASKS = {  # architecture -> (pipeline tag, Auto class, what the card calls the model)
    "SwinV2ForImageClassification": ("image-classification", "AutoModelForImageClassification",
                                     "for image classification"),
    "SwinV2ForMaskedImageModeling": (None, "AutoModelForMaskedImageModeling", "for masked image modeling (SimMIM)"),
    "SwinV2Model":                  ("image-feature-extraction", "AutoModel", "as a feature extractor"),
    "SwinV2Backbone":               ("image-feature-extraction", "AutoModel", "as a feature extractor"),
}
# fmt: on


@dataclass
class CardFacts:
    """What a card states beyond the config: where the weights come from and what was measured on them."""

    repo_id: str
    architecture: str = "SwinV2ForImageClassification"
    model_name: str | None = None
    variant: Variant | None = None  # the released variant the weights are: the card states what the zoo publishes
    preprocessing: str = ""
    conversion: str | None = None
    extra_tags: list[str] = field(default_factory=list)
    results: dict[str, float] = field(default_factory=dict)  # metric name -> value, measured by a training script
    dataset: str | None = None


def size_name(config: SwinV2Config) -> str:
    """The paper's size letter (T, S, B, L, H, G), or the width for a size of its own."""
    size = size_of(config)
    return SIZES[size].letter if size else f"C{config.embed_dim}"


def count_parameters_and_flops(config: SwinV2Config, architecture: str) -> tuple[int, float]:
    """Parameters and multiply-adds of one image at the config's size, on the meta device (no memory, no time)."""
    model_class: type[SwinV2PreTrainedModel] = getattr(modeling_swinv2_hf, architecture)
    height, width = config.image_height_width
    with torch.device("meta"):
        model = model_class(config).eval()
        pixels = torch.empty(1, config.num_channels, height, width)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(pixels)
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() / 2


def usage_snippet(repo_id: str, architecture: str) -> str:
    """A snippet that runs as written against `repo_id` (tests run it against a local Hub)."""
    if architecture == "SwinV2ForImageClassification":
        return (
            "from transformers import pipeline\n\n"
            f'repo = "{repo_id}"\n'
            'classifier = pipeline("image-classification", model=repo, trust_remote_code=True)\n'
            f'print(classifier("{SAMPLE_IMAGE_URL}", top_k=5))'
        )
    _, auto_class, _ = _TASKS[architecture]
    lines = [
        "import torch",
        f"from transformers import AutoImageProcessor, {auto_class}",
        "from transformers.image_utils import load_image",
        "",
        f'repo = "{repo_id}"',
        f'image = load_image("{SAMPLE_IMAGE_URL}")',
        "processor = AutoImageProcessor.from_pretrained(repo)",
        f"model = {auto_class}.from_pretrained(repo, trust_remote_code=True).eval()",
        'pixel_values = processor(image, return_tensors="pt").pixel_values',
    ]
    if architecture == "SwinV2ForMaskedImageModeling":
        lines += [
            "patches = (model.config.image_size // model.config.patch_size) ** 2",
            "bool_masked_pos = torch.rand(1, patches, generator=torch.Generator().manual_seed(0)) < 0.6",
            "with torch.no_grad():",
            "    outputs = model(pixel_values, bool_masked_pos=bool_masked_pos)",
            "print(outputs.loss.item(), tuple(outputs.reconstruction.shape))",
        ]
    else:
        lines += ["with torch.no_grad():", "    features = model(pixel_values).pooler_output", "print(features.shape)"]
    return "\n".join(lines)


def _eval_results(facts: CardFacts) -> list[EvalResult] | None:
    results = []
    release = facts.variant.release if facts.variant else None
    if release is not None and release.top1 is not None:
        for metric, value in (("top-1 accuracy", release.top1), ("top-5 accuracy", release.top5)):
            results.append(
                EvalResult(
                    task_type="image-classification",
                    dataset_type="imagenet-1k",
                    dataset_name="ImageNet-1K",
                    dataset_split="validation",
                    metric_type="accuracy",
                    metric_name=metric,
                    metric_value=value,
                    source_name="Swin Transformer model zoo",
                    source_url=ZOO_URL,
                )
            )
    for metric, value in facts.results.items():
        results.append(
            EvalResult(
                task_type="image-classification",
                dataset_type=facts.dataset or "custom",
                dataset_name=facts.dataset or "custom",
                dataset_split="test",
                metric_type=metric.split(" ")[0],
                metric_name=metric,
                metric_value=value,
            )
        )
    return results or None


def render_model_card(config: SwinV2Config, facts: CardFacts) -> ModelCard:
    """The card of a folder holding `config` and weights described by `facts`."""
    pipeline_tag, _, task_description = _TASKS[facts.architecture]
    release = facts.variant.release if facts.variant else None
    pretrained_on = release.pretrained_on if release else facts.dataset
    base_model = None
    if release is not None and release.fine_tuned_from:
        base_model = VARIANTS[release.fine_tuned_from].release.transformers_repo_id
    card_data = ModelCardData(
        license=LICENSE,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=["vision", "swinv2", "swinv2_hf", *(t for t in [pipeline_tag] if t), *facts.extra_tags],
        datasets=[pretrained_on] if pretrained_on else None,
        base_model=base_model,
        model_name=facts.model_name or facts.repo_id,
        eval_results=_eval_results(facts),
    )
    parameters, multiply_adds = count_parameters_and_flops(config, facts.architecture)
    published_flops = f"; published {release.gflops}G" if release and release.gflops else ""
    published_params = f" (published {release.params_millions}M)" if release and release.params_millions else ""
    height, width = config.image_height_width
    pretrained_windows = [w for w in config.pretrained_window_sizes if w]
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        title=facts.model_name or facts.repo_id.rsplit("/", 1)[-1],
        size_name=size_name(config),
        task_description=task_description,
        config=config,
        resolution=f"{height}x{width}",
        pretrained_windows=", ".join(map(str, config.pretrained_window_sizes)) if pretrained_windows else "",
        parameters=f"{parameters / 1e6:.1f}M{published_params}",
        flops=f"{multiply_adds / 1e9:.2f}G at {height}x{width}{published_flops}",
        classes=config.num_labels if facts.architecture == "SwinV2ForImageClassification" else None,
        pretrained_on=_DATASET_NAMES.get(pretrained_on, pretrained_on) if pretrained_on else None,
        source_url=release.url if release else None,
        timm_name=f"{facts.variant.name}.{release.timm_tag}" if release else None,
        model_name=facts.model_name,
        preprocessing=facts.preprocessing,
        conversion=facts.conversion,
        top1=release.top1 if release else None,
        top5=release.top5 if release else None,
        zoo_url=ZOO_URL,
        usage=usage_snippet(facts.repo_id, facts.architecture),
        repo_id=facts.repo_id,
        float64_difference=f"{ORIGINAL_FLOAT64_DIFFERENCE:g}",
    )
