"""swinv2_hf.optim: the Swin recipe's parameter groups (layer-wise decay, the original's no-decay list)."""

from __future__ import annotations

from conftest import tiny_config

from swinv2_hf import SwinV2ForImageClassification, SwinV2ForMaskedImageModeling
from swinv2_hf.optim import parameter_groups


def expected_layer(name: str) -> int:
    """The tiny tester (depths 1, 2, 1) layer by layer, written out: embeddings 0, blocks 1..4 in order, each
    patch merging with its stage's last block, the final norm and the head on top (5)."""
    table = {
        "swinv2.embeddings.": 0,
        "swinv2.encoder.stages.0.blocks.0.": 1,
        "swinv2.encoder.stages.0.downsample.": 1,
        "swinv2.encoder.stages.1.blocks.0.": 2,
        "swinv2.encoder.stages.1.blocks.1.": 3,
        "swinv2.encoder.stages.1.downsample.": 3,
        "swinv2.encoder.stages.2.blocks.0.": 4,
        "swinv2.layernorm.": 5,
        "classifier.": 5,
    }
    (layer,) = [layer for prefix, layer in table.items() if name.startswith(prefix)]
    return layer


def test_parameter_groups_decay_by_layer_and_exempt_the_original_list() -> None:
    model = SwinV2ForImageClassification(tiny_config(use_absolute_embeddings=True))
    groups = parameter_groups(model, learning_rate=1.0, weight_decay=0.05, layer_decay=0.5)
    seen = {}
    for group in groups:
        for name, parameter in zip(group["names"], group["params"]):
            seen[name] = (group["lr"], group["weight_decay"])
            assert parameter is model.get_parameter(name)
    assert sorted(seen) == sorted(name for name, _ in model.named_parameters())
    for name, (lr, weight_decay) in seen.items():
        assert lr == 0.5 ** (5 - expected_layer(name)), name
        exempt = (
            name.endswith((".bias", "norm.weight", "logit_scale", "q_bias", "v_bias", "position_embeddings"))
            or ".continuous_position_bias_mlp." in name
        )
        assert weight_decay == (0.0 if exempt else 0.05), name
    decayed = {name for name, (_, weight_decay) in seen.items() if weight_decay}
    assert "swinv2.encoder.stages.1.blocks.1.attention.qkv.weight" in decayed and "classifier.weight" in decayed
    assert "swinv2.encoder.stages.1.blocks.1.attention.continuous_position_bias_mlp.0.weight" not in decayed


def test_simmim_groups_exempt_the_mask_token_and_decay_the_decoder() -> None:
    model = SwinV2ForMaskedImageModeling(tiny_config(encoder_stride=8))
    decay = {name: group["weight_decay"] for group in parameter_groups(model, 1.0, 0.05) for name in group["names"]}
    assert decay["swinv2.embeddings.mask_token"] == 0.0
    assert decay["decoder.0.weight"] == 0.05 and decay["decoder.0.bias"] == 0.0
    assert {group["lr"] for group in parameter_groups(model, 1.0, 0.05)} == {1.0}  # no layer decay by default
