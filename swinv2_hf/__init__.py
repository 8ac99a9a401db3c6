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

from .atomic import MARKER, atomic_directory, atomic_file, clear_leftovers, prepare_output
from .configuration_swinv2_hf import PRESETS, RELEASES, VARIANTS, SwinV2Config
from .deployment import check_size, export, load_model_folder, read_size_range
from .hub_folder import (
    convert_checkpoint,
    describe_preprocessing,
    export_folder,
    image_processor_for,
    push_folder,
    save_detector,
    write_model_folder,
)
from .model_card import CardFacts, render_model_card, size_name
from .modeling_swinv2_hf import (
    SwinV2Backbone,
    SwinV2Block,
    SwinV2ForImageClassification,
    SwinV2ForMaskedImageModeling,
    SwinV2ImageClassifierOutput,
    SwinV2MaskedImageModelingOutput,
    SwinV2Model,
    SwinV2ModelOutput,
    SwinV2PreTrainedModel,
)
from .optim import parameter_groups
from .sources import Preprocessing
from .transfer import load_backbone_weights, pretraining_windows, transfer_config
from .version import __version__


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
    # Configuration and the paper's sizes and the released checkpoints
    "SwinV2Config",
    "VARIANTS",
    "PRESETS",
    "RELEASES",
    # Models
    "SwinV2PreTrainedModel",
    "SwinV2Model",
    "SwinV2ForImageClassification",
    "SwinV2ForMaskedImageModeling",
    "SwinV2Backbone",
    "SwinV2Block",
    "SwinV2ModelOutput",
    "SwinV2ImageClassifierOutput",
    "SwinV2MaskedImageModelingOutput",
    "register",
    # Training and transfer
    "parameter_groups",
    "transfer_config",
    "load_backbone_weights",
    "pretraining_windows",
    # Conversion and publishing
    "convert_checkpoint",
    "export_folder",
    "Preprocessing",
    "image_processor_for",
    "describe_preprocessing",
    "write_model_folder",
    "save_detector",
    "push_folder",
    "CardFacts",
    "render_model_card",
    "size_name",
    # Deployment
    "export",
    "load_model_folder",
    "read_size_range",
    "check_size",
    # Outputs that are complete or absent
    "MARKER",
    "prepare_output",
    "atomic_directory",
    "atomic_file",
    "clear_leftovers",
    "__version__",
]
