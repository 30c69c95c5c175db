"""EoMT: annealing, semantic inference, masked attention over merged tokens, merging placement."""

import pytest
import torch

from algm_cli.merge import MergeState
from algm_cli.models.eomt import EoMT, annealed_probability, semantic_scores
from algm_cli.models.schedule import NO_MERGE, algm_schedule


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return EoMT("dinov2_s", num_classes=5, img_size=64, num_queries=6, query_blocks=4,
                iterations=100, points=64).eval()


def blocky(seed: int) -> torch.Tensor:
    """Return (2, 3, 64, 64) images made of 32 x 32 constant blocks (so windows can merge)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 2, 2, generator=g).repeat_interleave(32, -1).repeat_interleave(32, -2)


def test_annealing_windows_hand_values():
    # the last of 4 blocks anneals over [0.652, 0.815] x 1000 iterations
    assert annealed_probability(0, 1000, 3, 4) == 1.0
    assert annealed_probability(652, 1000, 3, 4) == pytest.approx(1.0)
    assert annealed_probability(733, 1000, 3, 4) == pytest.approx((1 - 81 / 163) ** 0.9)
    assert annealed_probability(815, 1000, 3, 4) == 0.0
    # the first block's window comes first
    assert annealed_probability(300, 1000, 0, 4) == pytest.approx((1 - (300 - 163) / 163) ** 0.9)


def test_semantic_scores_hand_computed():
    classes = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 0.0, -9.0]]])  # (1, 2 queries, K=2 + 1)
    masks = torch.tensor([[[[0.0]], [[10.0]]]])  # (1, 2, 1, 1)
    p0 = torch.tensor([1 / 3, 1 / 3])
    e = torch.tensor([2.0, 0.0, -9.0]).exp()
    p1 = e[:2] / e.sum()
    expected = p0 * 0.5 + p1 * torch.sigmoid(torch.tensor(10.0))
    torch.testing.assert_close(semantic_scores(classes, masks)[0, :, 0, 0], expected)


def test_no_merge_schedule_equals_baseline_and_merging_reduces(model):
    x = blocky(0)
    with torch.no_grad():
        base, stats = model.forward_with_stats(x)
        model.schedule = algm_schedule(1.0, 1.0, 1, (5,))  # nothing can pass tau = 1
        same, _ = model.forward_with_stats(x)
        model.schedule = algm_schedule(0.3, 0.3, 1, (5,))
        merged, merged_stats = model.forward_with_stats(x)
        model.schedule = NO_MERGE
    assert stats == {}
    assert torch.equal(base, same)
    assert merged.shape == base.shape
    assert merged_stats["L5:gbm"] < merged_stats["L1:clap"] < 1.0


def test_merging_inside_query_blocks_is_refused(model):
    with pytest.raises(ValueError, match="before its query blocks"):
        model.schedule = algm_schedule(0.9, 0.9, 1, (9,))


def test_masked_attention_pools_mask_logits_over_merged_members(model):
    Q, P = model.num_queries, model.prefix
    masks = torch.zeros(1, Q, 4, 4)
    masks[0, 0, 0, 0], masks[0, 0, 0, 1] = 3.0, -1.0  # query 0: token 0 in, token 1 out
    masks[0, 1] = -1.0
    masks[0, 1, 0, 0] = 0.5  # query 1: token 0 barely in
    # tokens 0 and 1 merged into slot 0; every other token alone
    index = torch.tensor([[0, 0, *range(1, 15)]])
    sizes = torch.ones(1, 15)
    sizes[0, 0] = 2
    state = MergeState(index, sizes)
    torch.manual_seed(0)
    bias = model.attention_bias(masks, state, (4, 4), prob=1.0)
    assert bias.shape == (1, 1, Q + P + 15, Q + P + 15)
    row = bias[0, 0, :, Q + P:]
    assert row[0, 0] == 0  # mean(3, -1) = 1 > 0: visible
    assert row[1, 0] == -float("inf")  # mean(0.5, -1) < 0: blocked
    assert (bias[0, 0, Q:] == 0).all()  # prefix and patch tokens attend everywhere
    assert (bias[0, 0, :Q, :Q + P] == 0).all()  # queries see queries and prefix tokens
    assert model.attention_bias(masks, state, (4, 4), prob=0.0) is None


@pytest.mark.slow
def test_training_loss_is_finite_and_advances_annealing(model):
    model.train()
    before = int(model.train_step)
    x = blocky(1)
    labels = torch.randint(0, 5, (2, 64, 64))
    labels[:, :8] = 255
    model.schedule = algm_schedule(0.3, 0.3, 1, (5,))
    loss = model.training_loss(x, labels)
    loss.backward()
    model.schedule = NO_MERGE
    model.eval()
    assert torch.isfinite(loss)
    assert int(model.train_step) == before + 1
    assert model.queries.weight.grad is not None and model.queries.weight.grad.abs().sum() > 0
