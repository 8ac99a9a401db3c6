"""swinv2_hf: Swin Transformer V2 (arXiv 2111.09883) as Hugging Face Transformers models.

Importing the package registers the config, the models and a torchvision-free image processor with the Auto classes,
so `AutoModel.from_pretrained`, `AutoBackbone` (and detectors built through `backbone_config`) and pipelines find them.
"""

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForMaskedImageModeling,
)
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil
from transformers.models.vit.image_processing_vit import ViTImageProcessor

from .configuration_swinv2_hf import PRESETS, SwinV2Config
from .modeling_swinv2_hf import (
    SwinV2Backbone,
    SwinV2ForImageClassification,
    SwinV2ForMaskedImageModeling,
    SwinV2ImageClassifierOutput,
    SwinV2MaskedImageModelingOutput,
    SwinV2Model,
    SwinV2ModelOutput,
    SwinV2PreTrainedModel,
)

__version__ = "0.1.0"


def register() -> None:
    """Register SwinV2 with the Auto classes; safe to call again."""
    AutoConfig.register(SwinV2Config.model_type, SwinV2Config, exist_ok=True)
    for auto_class, model_class in (
        (AutoModel, SwinV2Model),
        (AutoModelForImageClassification, SwinV2ForImageClassification),
        (AutoModelForMaskedImageModeling, SwinV2ForMaskedImageModeling),
        (AutoBackbone, SwinV2Backbone),
    ):
        auto_class.register(SwinV2Config, model_class, exist_ok=True)
    # The PIL processor when torchvision is missing (it is on CPU-only machines), the torchvision one otherwise.
    AutoImageProcessor.register(
        SwinV2Config,
        image_processor_classes={"pil": ViTImageProcessorPil, "torchvision": ViTImageProcessor},
        exist_ok=True,
    )


register()

__all__ = [
    "PRESETS",
    "SwinV2Config",
    "SwinV2PreTrainedModel",
    "SwinV2Model",
    "SwinV2ForImageClassification",
    "SwinV2ForMaskedImageModeling",
    "SwinV2Backbone",
    "SwinV2ModelOutput",
    "SwinV2ImageClassifierOutput",
    "SwinV2MaskedImageModelingOutput",
    "register",
]
