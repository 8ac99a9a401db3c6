"""Configuration of Swin Transformer V2 (Liu et al., "Swin Transformer V2: Scaling Up Capacity and Resolution",
arXiv 2111.09883, https://arxiv.org/abs/2111.09883).

The fields follow transformers' `Swinv2Config` where they mean the same thing, plus what the paper and the released
checkpoints need beyond it: the extra main-branch LayerNorm of SwinV2-H/G (`extra_norm_period`), the width of the
continuous-position-bias MLP, chunked (sequential) window attention and the SimMIM target normalisation.

`VARIANTS` is the one table of the model's variants: the released checkpoints with what the original model zoo
publishes about them, and the paper's huge and giant sizes. `SwinV2Config.from_preset`, the release names that
conversion takes, the model cards and the benchmarks all read it; it lives here so that `from_preset` works in remote
code too.

This file imports only `transformers` so that it ships as Hub remote code next to `modeling_swinv2_hf.py`.
Licence: Apache-2.0 (code); the architecture follows microsoft/Swin-Transformer (MIT).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from transformers import PretrainedConfig
from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneConfigMixin

IntOrPair = int | tuple[int, int]

# The kernels `config.linear_implementation` chooses from (kernels.py applies them).
LINEAR_IMPLEMENTATIONS = ("auto", "onednn", "torch")
# Paper constants (section 3.3): the continuous position bias MLP is 2 -> 512 -> heads with ReLU.
CPB_MLP_HIDDEN_SIZE = 512


def to_pair(value: IntOrPair | list[int], name: str) -> tuple[int, int]:
    """Return `value` as an (height, width) pair, rejecting anything that is not one or two positive integers."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive integer or a pair of them, got {value!r}.")
    return pair


@dataclass(frozen=True)
class Size:
    """A model size of the paper: the width, depths and heads that every variant of that size shares."""

    letter: str  # the paper's name for it: SwinV2-T, -S, -B, -L, -H, -G
    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    extra_norm_period: int = 0


@dataclass(frozen=True)
class Release:
    """A checkpoint of the original model zoo: its file and what the zoo publishes about it."""

    name: str  # the file name without `.pth`, also the name of its config in configs/swinv2
    timm_tag: str  # timm's name for these weights is `<variant>.<timm_tag>`
    top1: float | None  # ImageNet-1K validation, %; the 22K pretrained models have none of their own
    top5: float | None
    params_millions: int | None  # the zoo lists the 22K pretrained models only through their fine-tunes
    gflops: float | None  # multiply-adds, as the zoo counts them
    fine_tuned_from: str | None = None  # the variant whose 22K checkpoint a fine-tune starts from

    @property
    def url(self) -> str:
        """Where the original checkpoint is downloaded from."""
        return f"{RELEASE_URL}/{self.name}.pth"

    @property
    def pretrained_on(self) -> str:
        """The Hub's dataset id of the data the weights were pretrained on."""
        return _TIMM_TAG_DATASETS[self.timm_tag]

    @property
    def transformers_repo_id(self) -> str:
        """The repository of the same weights converted by transformers (microsoft/ on the Hub)."""
        return "microsoft/" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Variant:
    """A variant by its timm name: the architecture (`SwinV2Config.from_preset` builds it) and its release, if any."""

    name: str
    size: str  # a key of SIZES
    image_size: int
    window_size: int
    drop_path_rate: float  # the released config's stochastic depth (it matters only when training on)
    num_labels: int | None  # None: the config's default head (the paper sizes; set `num_labels`)
    pretrained_window_sizes: tuple[int, ...] | None = None  # the windows the position bias was pretrained with
    release: Release | None = None

    def config_arguments(self) -> dict[str, Any]:
        """The `SwinV2Config` arguments beyond the defaults."""
        size = SIZES[self.size]
        arguments = {
            "embed_dim": size.embed_dim,
            "depths": size.depths,
            "num_heads": size.num_heads,
            "extra_norm_period": size.extra_norm_period,
            "image_size": self.image_size,
            "window_size": self.window_size,
            "pretrained_window_sizes": self.pretrained_window_sizes,
            "drop_path_rate": self.drop_path_rate,
        }
        if self.num_labels is not None:
            arguments["num_labels"] = self.num_labels
        return arguments


RELEASE_URL = "https://github.com/SwinTransformer/storage/releases/download/v2.0.0"
# Where the release figures below are published (microsoft/Swin-Transformer, "Main Results on ImageNet with
# Pretrained Models", SwinV2 rows); H and G are the paper's sizes, never released.
ZOO_URL = "https://github.com/microsoft/Swin-Transformer#main-results-on-imagenet-with-pretrained-models"
# timm's tags of the releases -> the Hub's dataset id of their pretraining data (ImageNet-22K is "imagenet-21k").
_TIMM_TAG_DATASETS = {"ms_in1k": "imagenet-1k", "ms_in22k": "imagenet-21k", "ms_in22k_ft_in1k": "imagenet-21k"}
# fmt: off
# The paper's sizes: 32 channels per head; SwinV2-H and -G add a main-branch LayerNorm every 6 layers (section 3.1).
SIZES: dict[str, Size] = {
    "tiny":  Size("T", 96,  (2, 2, 6, 2),  (3, 6, 12, 24)),
    "small": Size("S", 96,  (2, 2, 18, 2), (3, 6, 12, 24)),
    "base":  Size("B", 128, (2, 2, 18, 2), (4, 8, 16, 32)),
    "large": Size("L", 192, (2, 2, 18, 2), (6, 12, 24, 48)),
    "huge":  Size("H", 352, (2, 2, 18, 2), (11, 22, 44, 88),  extra_norm_period=6),
    "giant": Size("G", 512, (2, 2, 42, 4), (16, 32, 64, 128), extra_norm_period=6),
}
# Pretraining at 192 px with window 12 clips the last stage's window to its 6x6 map: what every transfer starts from.
_FROM_WINDOW_12 = (12, 12, 12, 6)
# The released checkpoints of microsoft/Swin-Transformer (configs/swinv2) and the paper's huge and giant sizes, each
# size's smallest first. Columns: timm name, size, image size, window, drop path rate, classes (the released 22K heads
# have 21841, though their YAMLs say 1000: tests/fixtures/README.md, fact 9), pretrained windows; release: file name,
# timm tag, top-1, top-5, parameters (M), GFLOPs, the variant it is fine-tuned from.
VARIANTS: dict[str, Variant] = {variant.name: variant for variant in (
    Variant("swinv2_tiny_window8_256",            "tiny",  256, 8,  0.2, 1000,  None,
            Release("swinv2_tiny_patch4_window8_256",   "ms_in1k",  81.8, 95.9, 28,  5.9)),
    Variant("swinv2_tiny_window16_256",           "tiny",  256, 16, 0.2, 1000,  None,
            Release("swinv2_tiny_patch4_window16_256",  "ms_in1k",  82.8, 96.2, 28,  6.6)),
    Variant("swinv2_small_window8_256",           "small", 256, 8,  0.3, 1000,  None,
            Release("swinv2_small_patch4_window8_256",  "ms_in1k",  83.7, 96.6, 50,  11.5)),
    Variant("swinv2_small_window16_256",          "small", 256, 16, 0.3, 1000,  None,
            Release("swinv2_small_patch4_window16_256", "ms_in1k",  84.1, 96.8, 50,  12.6)),
    Variant("swinv2_base_window8_256",            "base",  256, 8,  0.5, 1000,  None,
            Release("swinv2_base_patch4_window8_256",   "ms_in1k",  84.2, 96.9, 88,  20.3)),
    Variant("swinv2_base_window16_256",           "base",  256, 16, 0.5, 1000,  None,
            Release("swinv2_base_patch4_window16_256",  "ms_in1k",  84.6, 97.0, 88,  21.8)),
    Variant("swinv2_base_window12_192",           "base",  192, 12, 0.2, 21841, None,
            Release("swinv2_base_patch4_window12_192_22k", "ms_in22k", None, None, None, None)),
    Variant("swinv2_base_window12to16_192to256",  "base",  256, 16, 0.2, 1000,  _FROM_WINDOW_12,
            Release("swinv2_base_patch4_window12to16_192to256_22kto1k_ft", "ms_in22k_ft_in1k", 86.2, 97.9, 88, 21.8,
                    "swinv2_base_window12_192")),
    Variant("swinv2_base_window12to24_192to384",  "base",  384, 24, 0.2, 1000,  _FROM_WINDOW_12,
            Release("swinv2_base_patch4_window12to24_192to384_22kto1k_ft", "ms_in22k_ft_in1k", 87.1, 98.2, 88, 54.7,
                    "swinv2_base_window12_192")),
    Variant("swinv2_large_window12_192",          "large", 192, 12, 0.2, 21841, None,
            Release("swinv2_large_patch4_window12_192_22k", "ms_in22k", None, None, None, None)),
    Variant("swinv2_large_window12to16_192to256", "large", 256, 16, 0.2, 1000,  _FROM_WINDOW_12,
            Release("swinv2_large_patch4_window12to16_192to256_22kto1k_ft", "ms_in22k_ft_in1k", 86.9, 98.0, 197, 47.5,
                    "swinv2_large_window12_192")),
    Variant("swinv2_large_window12to24_192to384", "large", 384, 24, 0.2, 1000,  _FROM_WINDOW_12,
            Release("swinv2_large_patch4_window12to24_192to384_22kto1k_ft", "ms_in22k_ft_in1k", 87.6, 98.3, 197, 115.4,
                    "swinv2_large_window12_192")),
    Variant("swinv2_huge_window12_192",           "huge",  192, 12, 0.2, None),
    Variant("swinv2_giant_window12_192",          "giant", 192, 12, 0.2, None),
    # The paper fine-tunes SwinV2-G at 640 px with window 40 for ImageNet-1K V2 (table 2).
    Variant("swinv2_giant_window12to40_192to640", "giant", 640, 40, 0.2, 1000,  _FROM_WINDOW_12),
)}
# fmt: on
# The released variants by the original's checkpoint name: `--model-name` takes either name.
RELEASES: dict[str, Variant] = {variant.release.name: variant for variant in VARIANTS.values() if variant.release}
# What `SwinV2Config.from_preset` builds, by name.
PRESETS: dict[str, dict[str, Any]] = {name: variant.config_arguments() for name, variant in VARIANTS.items()}


def find_variant(name: str) -> Variant:
    """The variant a timm name (`swinv2_tiny_window8_256`, a pretrained tag such as `.ms_in1k` ignored) or the name
    of an original release (`swinv2_tiny_patch4_window8_256`) stands for.

    Raises:
        ValueError: an unknown name; the message lists the known ones.
    """
    variant = VARIANTS.get(name.split(".", 1)[0]) or RELEASES.get(name)
    if variant is None:
        raise ValueError(
            f"Unknown SwinV2 model name {name!r}. Known names: {', '.join(VARIANTS)}, and the original releases "
            f"{', '.join(RELEASES)}."
        )
    return variant


def size_of(config: SwinV2Config) -> str | None:
    """The key of SIZES whose width, depths and heads `config` has, or None for a size of its own."""
    shape = (config.embed_dim, tuple(config.depths), tuple(config.num_heads))
    return next((key for key, size in SIZES.items() if shape == (size.embed_dim, size.depths, size.num_heads)), None)


def size_variant(size: str) -> Variant:
    """The variant that stands for a size where one is needed (timm's `architecture` of an export, the benchmarks'
    `--size`): the size's first in VARIANTS, window 8 at 256 px for T, S and B, window 12 at 192 px for L, H and G."""
    return next(variant for variant in VARIANTS.values() if variant.size == size)


class SwinV2Config(BackboneConfigMixin, PretrainedConfig):
    r"""Configuration of a Swin Transformer V2 model ([`SwinV2Model`] and the task models built on it).

    Defaults give SwinV2-T at 256 px with window 8 (`swinv2_tiny_window8_256`).

    Args:
        image_size (`int` or `tuple[int, int]`, defaults to 256):
            The resolution the model is built and pretrained for. Any input size works at run time: windows and
            shifts follow the actual feature maps; this size only fixes the absolute position embeddings (if any)
            and the default image processor.
        patch_size (`int`, defaults to 4): Side of the square patches of the patch embedding.
        num_channels (`int`, defaults to 3): Channels of the input images.
        embed_dim (`int`, defaults to 96): Width C of the first stage; stage i has C * 2**i channels.
        depths (`tuple[int, ...]`, defaults to `(2, 2, 6, 2)`): Number of blocks in each stage.
        num_heads (`tuple[int, ...]`, defaults to `(3, 6, 12, 24)`): Attention heads in each stage.
        window_size (`int`, defaults to 8): Side of the attention windows. A stage whose feature map is not larger
            than the window uses one window covering the map (the smaller side) and no shift, as the original does.
        pretrained_window_sizes (`tuple[int, ...]`, defaults to zeros): Per stage, the window the weights were
            pretrained with; the log-spaced coordinates of the position bias are normalised by it (paper eq. 4),
            which is how a model pretrained with window 12 transfers to window 24. 0 means "the current window".
        mlp_ratio (`float`, defaults to 4.0): Hidden width of the MLP relative to the block width.
        qkv_bias (`bool`, defaults to True): Learnable biases for queries and values (keys never have one).
        hidden_dropout_prob (`float`, defaults to 0.0): Dropout after the embeddings, the attention projection and
            the MLP.
        attention_probs_dropout_prob (`float`, defaults to 0.0): Dropout on the attention probabilities.
        drop_path_rate (`float`, defaults to 0.1): Stochastic depth, rising linearly to this value over all blocks.
        hidden_act (`str`, defaults to `"gelu"`): Activation of the MLP (a name from `transformers.activations`).
        use_absolute_embeddings (`bool`, defaults to False): Add learned absolute position embeddings after the
            patch embedding (the original's `ape`; no release uses it).
        patch_norm (`bool`, defaults to True): LayerNorm after the patch embedding.
        layer_norm_eps (`float`, defaults to 1e-5): Epsilon of every LayerNorm.
        extra_norm_period (`int`, defaults to 0): Add a LayerNorm on the main branch after every `extra_norm_period`
            blocks of a stage (paper section 3.1: "every 6 layers" for SwinV2-H and SwinV2-G). 0 disables it.
        cpb_mlp_hidden_size (`int`, defaults to 512): Hidden width of the continuous-position-bias MLP.
        attention_chunk_size (`int`, defaults to 0): Process at most this many windows (per image) at once in each
            attention layer, the paper's sequential self-attention for high resolutions: same outputs and
            gradients, bounded attention memory. 0 processes all windows together.
        linear_implementation (`str`, defaults to `"auto"`): The kernel of the linear layers (`kernels.py`). `"auto"`
            takes oneDNN's GEMM on x86 CPUs where it computes the dtype natively (float32 everywhere; bfloat16 and
            float16 only with AVX512-BF16/AMX/AVX512-FP16, otherwise the product runs in float32) and standard
            PyTorch ops elsewhere and whenever the model is traced, exported or quantized. `"onednn"` takes oneDNN
            wherever it computes the call, on any CPU; `"torch"` never leaves `F.linear`. Same outputs within float
            rounding; can be changed at any time (`model.config.linear_implementation = "torch"`).
        initializer_range (`float`, defaults to 0.02): Standard deviation of the truncated normal initialisation.
        encoder_stride (`int`, defaults to 32): Upsampling factor of the SimMIM decoder (the total stride of the
            encoder).
        mim_norm_target_patch_size (`int`, defaults to 47): SimMIM normalises each target pixel by the mean and
            variance of the odd-sized patch around it (the SwinV2 SimMIM recipe uses 47). 0 regresses raw pixels, as
            transformers' `Swinv2ForMaskedImageModeling` does.
        out_features (`list[str]`, *optional*): Stages a [`SwinV2Backbone`] returns, from `stage_names`
            (`"stem"`, `"stage1"`, ...). Defaults to the last stage.
        out_indices (`list[int]`, *optional*): The same as indices into `stage_names`.

    Example (run by the test suite):

    >>> import torch
    >>> from swinv2_hf import SwinV2Backbone, SwinV2Config
    >>> config = SwinV2Config.from_preset("swinv2_tiny_window8_256", out_features=["stage2", "stage4"])
    >>> config.hidden_size, config.stage_names
    (768, ['stem', 'stage1', 'stage2', 'stage3', 'stage4'])
    >>> backbone = SwinV2Backbone(config).eval()
    >>> [tuple(feature_map.shape) for feature_map in backbone(torch.randn(1, 3, 256, 256)).feature_maps]
    [(1, 192, 32, 32), (1, 768, 8, 8)]
    """

    model_type = "swinv2_hf"
    _auto_class = "AutoConfig"  # save_pretrained ships this file as remote code
    # Generic names used by transformers utilities (pipelines, VisionEncoderDecoder, ...).
    attribute_map = {"num_attention_heads": "num_heads", "num_hidden_layers": "num_layers"}

    def __init__(
        self,
        image_size: IntOrPair = 256,
        patch_size: int = 4,
        num_channels: int = 3,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int = 8,
        pretrained_window_sizes: tuple[int, ...] | None = None,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        drop_path_rate: float = 0.1,
        hidden_act: str = "gelu",
        use_absolute_embeddings: bool = False,
        patch_norm: bool = True,
        layer_norm_eps: float = 1e-5,
        extra_norm_period: int = 0,
        cpb_mlp_hidden_size: int = CPB_MLP_HIDDEN_SIZE,
        attention_chunk_size: int = 0,
        linear_implementation: str = "auto",
        initializer_range: float = 0.02,
        encoder_stride: int = 32,
        mim_norm_target_patch_size: int = 47,
        out_features: list[str] | None = None,
        out_indices: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        self.image_size = list(image_size) if isinstance(image_size, (tuple, list)) else image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.embed_dim = embed_dim
        self.depths = list(depths)
        self.num_heads = list(num_heads)
        self.window_size = window_size
        self.pretrained_window_sizes = (
            [0] * len(self.depths) if pretrained_window_sizes is None else list(pretrained_window_sizes)
        )
        self.mlp_ratio = mlp_ratio
        self.qkv_bias = qkv_bias
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.drop_path_rate = drop_path_rate
        self.hidden_act = hidden_act
        self.use_absolute_embeddings = use_absolute_embeddings
        self.patch_norm = patch_norm
        self.layer_norm_eps = layer_norm_eps
        self.extra_norm_period = extra_norm_period
        self.cpb_mlp_hidden_size = cpb_mlp_hidden_size
        self.attention_chunk_size = attention_chunk_size
        self.linear_implementation = linear_implementation
        self.initializer_range = initializer_range
        self.encoder_stride = encoder_stride
        self.mim_norm_target_patch_size = mim_norm_target_patch_size
        self._validate(kwargs.get("num_labels"))
        for derived in ("num_layers", "hidden_size", "stage_names"):  # saved by to_dict, always recomputed
            kwargs.pop(derived, None)
        # Derived fields, kept here only: `num_layers` for `attribute_map`, `hidden_size` for VisionEncoderDecoder and
        # pipelines (channels after the last stage), `stage_names` for the backbone API.
        self.num_layers = len(self.depths)
        self.hidden_size = embed_dim * 2 ** (self.num_layers - 1)
        self.stage_names = ["stem"] + [f"stage{index}" for index in range(1, self.num_layers + 1)]
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        super().__init__(**kwargs)

    @property
    def image_height_width(self) -> tuple[int, int]:
        """`image_size` as (height, width), whether it was given as one side or two."""
        return to_pair(self.image_size, "image_size")

    @property
    def stage_channels(self) -> list[int]:
        """Channels of every entry of `stage_names` (the stem has the first stage's width)."""
        return [self.embed_dim] + [self.embed_dim * 2**index for index in range(self.num_layers)]

    def _validate(self, num_labels: int | None) -> None:
        """Reject configs that would only fail later, deep inside the model, with the rule and the fix.

        `num_labels` is checked as passed: transformers turns it into `id2label`, and a negative count into an empty
        one, which reads back as 0 (no head) without a word.
        """
        to_pair(self.image_size, "image_size")
        integer = isinstance(num_labels, int) and not isinstance(num_labels, bool)
        if num_labels is not None and (not integer or num_labels < 0):
            raise ValueError(
                f"num_labels must be a non-negative integer (the classes of the head; 0 builds no head), "
                f"got {num_labels!r}."
            )
        for name in ("patch_size", "num_channels", "embed_dim", "window_size", "cpb_mlp_hidden_size", "encoder_stride"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        for name in (
            "mlp_ratio",
            "hidden_dropout_prob",
            "attention_probs_dropout_prob",
            "drop_path_rate",
            "layer_norm_eps",
            "initializer_range",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}.")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} is a probability in [0, 1), got {getattr(self, name)!r}.")
        if self.hidden_act not in ACT2FN:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not an activation transformers knows; e.g. 'gelu'.")
        if self.mlp_ratio <= 0 or self.layer_norm_eps <= 0:
            raise ValueError(
                f"mlp_ratio and layer_norm_eps must be positive, got {self.mlp_ratio}, {self.layer_norm_eps}."
            )
        if not self.depths or any(not isinstance(d, int) or d <= 0 for d in self.depths):
            raise ValueError(f"depths must be a non-empty list of positive integers, got {self.depths}.")
        lengths = {
            "depths": len(self.depths),
            "num_heads": len(self.num_heads),
            "pretrained_window_sizes": len(self.pretrained_window_sizes),
        }
        if len(set(lengths.values())) != 1:
            raise ValueError(
                f"depths, num_heads and pretrained_window_sizes need one entry per stage, got lengths "
                f"{lengths}. Give each list {len(self.depths)} entries."
            )
        for stage, heads in enumerate(self.num_heads):
            channels = self.embed_dim * 2**stage
            if not isinstance(heads, int) or heads <= 0 or channels % heads:
                raise ValueError(
                    f"stage {stage} has {channels} channels (embed_dim * 2**{stage}), which {heads!r} "
                    f"heads do not divide. Choose num_heads[{stage}] among the divisors of {channels}."
                )
        if any(not isinstance(w, int) or w < 0 or w == 1 for w in self.pretrained_window_sizes):
            raise ValueError(
                f"pretrained_window_sizes must be 0 (none) or windows of at least 2, got "
                f"{self.pretrained_window_sizes}: the coordinates are divided by (window - 1)."
            )
        for name in ("extra_norm_period", "attention_chunk_size", "mim_norm_target_patch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer (0 disables it), got {value!r}.")
        if self.linear_implementation not in LINEAR_IMPLEMENTATIONS:
            raise ValueError(
                f"linear_implementation must be one of {', '.join(LINEAR_IMPLEMENTATIONS)}, got "
                f"{self.linear_implementation!r}: 'auto' picks the fastest kernel that computes the call."
            )
        if self.mim_norm_target_patch_size and self.mim_norm_target_patch_size % 2 == 0:
            raise ValueError(
                f"mim_norm_target_patch_size must be odd (the patch is centred on each pixel), got "
                f"{self.mim_norm_target_patch_size}; SimMIM uses 47."
            )

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> SwinV2Config:
        """Build the config of a variant of `VARIANTS`, e.g. `swinv2_tiny_window8_256`.

        Args:
            name: Its timm name (a pretrained tag after a dot, `.ms_in1k`, is ignored) or the name of its original
                release (`swinv2_tiny_patch4_window8_256`).
            overrides: Any config field, applied on top of the variant's (e.g. `num_labels=10`, `image_size=512`).

        Raises:
            ValueError: an unknown name; the message lists the known ones.
        """
        return cls(**{**PRESETS[find_variant(name).name], **overrides})
