"""Token buckets: padding post-merge tokens (masked keys) leaves every output unchanged."""

import pytest
import torch

from algm_cli.models.schedule import algm_schedule
from algm_cli.models.segmenter import Segmenter
from algm_cli.models.blocks import bucketed, full_block, padded_block


def test_bucketed_rounds_up():
    assert [bucketed(n, 32) for n in (1, 32, 33, 64)] == [32, 32, 64, 64]


@pytest.mark.parametrize("bias", [False, True])
def test_padded_block_equals_the_plain_block(bias):
    torch.manual_seed(0)
    model = Segmenter("vit_t", 3, "linear", 32).eval()
    blk = model.encoder.blocks[3]
    x = torch.randn(2, 7, 192)
    extra = torch.randn(2, 1, 1, 7) if bias else None
    with torch.no_grad():
        torch.testing.assert_close(padded_block(full_block, blk, x, extra, 8),
                                   full_block(blk, x, extra), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("proportional", [False, True])
def test_bucketed_model_equals_unbucketed_after_merging(proportional):
    torch.manual_seed(0)
    schedule = algm_schedule(0.0, 0.0, proportional_attention=proportional)  # merges a lot
    model = Segmenter("vit_t", 5, "mask", 64, schedule=schedule).eval()
    images = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        plain, stats = model.forward_with_stats(images)
        model.encoder.bucket = 8
        padded, padded_stats = model.forward_with_stats(images)
    assert stats == padded_stats and stats["L5:gbm"] < 0.5
    torch.testing.assert_close(padded, plain, atol=1e-4, rtol=1e-4)
