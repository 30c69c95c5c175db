"""EVA + ViT-Adapter + Mask2Former: shapes, merging meets the adapter, rotary positions, GFLOPs."""

import pytest
import torch

from algm_cli.merge import MergeState
from algm_cli.models.eva import EvaEncoder, mean_positions, rope_at
from algm_cli.models.mask2former import Mask2Former
from algm_cli.models.mask2former.model import LAYOUTS
from algm_cli.models.mask2former.flops import macs_breakdown, paper_convention
from algm_cli.models.schedule import NO_MERGE, algm_schedule
from algm_cli.models.vit_adapter import pool_to_merged

GROUPS = [(0, 2), (3, 5), (6, 8), (9, 11)]
EVA_G = LAYOUTS["eva_g"]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = Mask2Former("eva02_t", 3, 64, interactions=GROUPS, adapter_heads=6, dim=32, heads=4,
                        ffn=64, dec_ffn=64, queries=5, enc_layers=1, dec_layers=3, points=64)
    for injector in model.encoder.injectors:  # gamma starts at 0: make the injection act
        torch.nn.init.normal_(injector.gamma, std=0.5)
    return model.eval()


def test_adapter_gives_four_scales_and_the_model_image_size_scores(tiny):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = tiny.encoder(x)
        scores, stats = tiny.forward_with_stats(torch.randn(1, 3, 50, 60))  # padded inside
    assert [tuple(f.shape) for f in out.features] == [(2, 192, 16 // s, 16 // s) for s in (1, 2, 4, 8)]
    assert scores.shape == (1, 3, 50, 60) and stats == {}
    assert len(tiny.decoder.layers) == 3


def test_a_schedule_that_merges_nothing_equals_the_baseline_exactly(tiny):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tiny.schedule = NO_MERGE
        base = tiny(x)
        tiny.schedule = algm_schedule(1.0, 1.0, gbm_layers=(5, 9))  # scores never exceed 1
        same, stats = tiny.forward_with_stats(x)
    tiny.schedule = NO_MERGE
    assert stats == {"L1:clap": 1.0, "L5:gbm": 1.0, "L9:gbm": 1.0}
    assert torch.equal(base, same)


def test_merging_reduces_tokens_and_keeps_outputs_finite(tiny):
    tiny.schedule = algm_schedule(-1.0, -1.0, gbm_layers=(5,))
    with torch.no_grad():
        scores, stats = tiny.forward_with_stats(torch.randn(2, 3, 64, 64))
    tiny.schedule = NO_MERGE
    assert stats["L1:clap"] == 0.25 and stats["L5:gbm"] < 0.25
    assert torch.isfinite(scores).all()


def test_training_loss_backpropagates_with_merging(tiny):
    tiny.train()
    tiny.schedule = algm_schedule(-1.0, -1.0, gbm_layers=(5,))
    loss = tiny.training_loss(torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64)))
    loss.backward()
    tiny.schedule = NO_MERGE
    tiny.eval()
    assert torch.isfinite(loss)
    assert tiny.encoder.encoder.blocks[0].attn.qkv.weight.grad is not None


def test_rotary_embedding_of_integer_positions_is_timms_and_merged_ones_are_midway():
    enc = EvaEncoder("eva02_t", 64)
    grid = (4, 4)
    full = enc.rope.get_embed()  # (16, 2D)
    rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    positions = torch.stack([rows.flatten(), cols.flatten()], -1)
    assert torch.allclose(rope_at(full, positions, grid[1]), full, atol=1e-5)
    # tokens 0 and 1 merged: the pair sits at (0, 0.5); rotating twice by half a step = one step
    half = rope_at(full, torch.tensor([[0.0, 0.5]]), grid[1])[0]
    sin, cos = half.chunk(2, -1)
    sin0, cos0 = full[0].chunk(2, -1)
    sin1, cos1 = full[1].chunk(2, -1)
    # angle(half) - angle(0) == angle(1) - angle(half)
    d1 = torch.atan2(sin * cos0 - cos * sin0, cos * cos0 + sin * sin0)
    d2 = torch.atan2(sin1 * cos - cos1 * sin, cos1 * cos + sin1 * sin)
    assert torch.allclose(d1, d2, atol=1e-5)
    state = MergeState(index=torch.tensor([[0, 0, 1, 2]]), sizes=torch.tensor([[2.0, 1.0, 1.0]]))
    assert torch.equal(mean_positions(state, (2, 2)), torch.tensor([[[0.0, 0.5], [1.0, 0.0], [1.0, 1.0]]]))


def test_injector_update_pools_into_merged_tokens_by_size_weighted_mean():
    state = MergeState(index=torch.tensor([[1, 0, 1, 1]]), sizes=torch.tensor([[1.0, 3.0]]))
    update = torch.tensor([[[1.0], [2.0], [3.0], [5.0]]])
    assert torch.equal(pool_to_merged(update, state), torch.tensor([[[2.0], [3.0]]]))


@pytest.mark.slow
def test_eva_g_gflops_at_the_paper_convention():
    parts = macs_breakdown(lambda: Mask2Former("eva_g", 150, 896, **EVA_G), 896)
    assert abs(parts["total"] - 6746.0) < 1.0  # the full count: backbone 4.28 T, adapter, head
    assert abs(paper_convention(parts) - 4080) / 4080 < 0.03


def test_layer_wise_lr_decay_groups(tiny):
    groups = tiny.param_groups(0.05, 0.5)
    scale = {id(p): (g["lr_scale"], g["weight_decay"]) for g in groups for p in g["params"]}
    blocks = tiny.encoder.encoder.blocks
    assert scale[id(tiny.encoder.encoder.patch_embed.proj.weight)] == (0.5 ** 13, 0.05)
    assert scale[id(blocks[0].attn.qkv.weight)] == (0.5 ** 12, 0.05)
    assert scale[id(blocks[11].mlp.fc1.weight)] == (0.5, 0.05)
    assert scale[id(tiny.encoder.encoder.pos_embed)] == (0.5 ** 13, 0.0)
    assert scale[id(tiny.decoder.class_embed.bias)] == (1.0, 0.0)
    assert sum(len(g["params"]) for g in groups) == len(list(tiny.parameters()))


def test_linear_warm_up_factor():
    from algm_cli.engine.train import warmup_factor

    assert warmup_factor(0, 500) == pytest.approx(1e-6)
    assert warmup_factor(250, 500) == pytest.approx(0.5, rel=1e-5)
    assert warmup_factor(500, 500) == 1.0 and warmup_factor(7, 0) == 1.0
