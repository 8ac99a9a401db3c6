"""Regularisation in training mode: stochastic depth drops whole samples' residual branches and rescales the kept
ones, on the original's linear schedule over the blocks; dropout and attention dropout act only in training, draw
from the global generator, and leave evaluation exactly the model without them."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import randomize_weights, tiny_config

from swinv2_hf import SwinV2ForImageClassification
from swinv2_hf.modeling_swinv2_hf import SwinV2Block, SwinV2DropPath

SAMPLES = 4000
DROP_PROB = 0.3


def test_drop_path_keeps_or_drops_each_sample_whole_and_rescales_the_kept() -> None:
    """Each sample's branch is either all zero or all 1/keep_prob times itself; the dropped share is within five
    binomial standard deviations of drop_prob, so the mean over samples stays the input's."""
    module = SwinV2DropPath(DROP_PROB).train()
    torch.manual_seed(0)
    output = module(torch.ones(SAMPLES, 7, 5))
    per_sample = output.flatten(1)
    assert torch.equal(per_sample, per_sample[:, :1].expand_as(per_sample))  # one decision per sample
    kept = per_sample[:, 0][per_sample[:, 0] != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - DROP_PROB)), rtol=1e-6, atol=0)
    dropped = (per_sample[:, 0] == 0).float().mean().item()
    assert abs(dropped - DROP_PROB) < 5 * math.sqrt(DROP_PROB * (1 - DROP_PROB) / SAMPLES)
    assert torch.equal(module.eval()(output), output)


def test_stochastic_depth_rises_linearly_over_all_blocks_as_the_original() -> None:
    """The original's `[x.item() for x in torch.linspace(0, drop_path_rate, sum(depths))]`, block by block."""
    model = SwinV2ForImageClassification(tiny_config(drop_path_rate=0.3))
    blocks = [module for module in model.modules() if isinstance(module, SwinV2Block)]
    rates = [getattr(block.drop_path, "drop_prob", 0.0) for block in blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])  # depths (1, 2, 1): four blocks from 0 to the rate


@pytest.mark.parametrize("field", ["hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"])
def test_dropout_acts_in_training_only(field: str) -> None:
    """With the probability at 0.5: training forwards differ between draws and repeat under the same seed; in
    evaluation the model is exactly the one without it (same weights)."""
    plain = randomize_weights(SwinV2ForImageClassification(tiny_config()), seed=2)
    regularised = SwinV2ForImageClassification(tiny_config(**{field: 0.5}))
    regularised.load_state_dict(plain.state_dict())
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(regularised.eval()(pixels).logits, plain.eval()(pixels).logits)
        regularised.train()
        torch.manual_seed(3)
        first = regularised(pixels).logits
        second = regularised(pixels).logits
        torch.manual_seed(3)
        repeated = regularised(pixels).logits
        plain_train = plain.train()(pixels).logits
    assert not torch.equal(first, second)
    assert torch.equal(first, repeated)
    assert not torch.equal(first, plain_train)
