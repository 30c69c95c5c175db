"""Learned baselines: CTS sharing plan and purity targets, exit rules, and the reductions that
act on nothing equal the plain Segmenter exactly."""

import pytest
import torch

from algm_cli.models.learned.cts import CTSSegmenter, purity_targets, share_plan
from algm_cli.models.learned.exits import (
    ExitSpec, choose_exits, exit_scores, token_labels, top_per_class,
)
from algm_cli.models.learned.models import ExitSegmenter
from algm_cli.models.blocks import embed, full_block as plain_block
from algm_cli.models.segmenter import Segmenter

SMALL = dict(backbone="vit_t", num_classes=3, decoder="linear", img_size=64)


def test_share_plan_orders_kept_patches_then_shared_groups():
    # 4 x 4 patch grid = 2 x 2 groups; groups 3 and 0 score highest -> shared
    kept, groups, token = share_plan(torch.tensor([[0.9, 0.1, 0.2, 0.95]]), (4, 4), 2)
    assert groups.tolist() == [[0, 3]]
    assert kept.tolist() == [[2, 3, 6, 7, 8, 9, 12, 13]]  # groups 1 and 2, raster order
    expected = [8, 8, 0, 1,
                8, 8, 2, 3,
                4, 5, 9, 9,
                6, 7, 9, 9]
    assert token.tolist() == [expected]


def test_purity_targets_one_class_several_and_unlabelled():
    labels = torch.full((1, 32, 96), 255)
    labels[:, :, :32] = 2                      # region 0: one class
    labels[:, :, 32:64] = 1
    labels[:, 0, 40] = 0                       # region 1: two classes
    labels[:, 5, 70] = 4                       # region 2: one labelled pixel, rest ignored
    assert purity_targets(labels).tolist() == [[[1, 0, 1]]]
    assert purity_targets(torch.full((1, 32, 32), 255)).tolist() == [[[255]]]


def test_top_per_class_keeps_the_k_most_confident_of_each_class():
    conf = torch.tensor([[0.99, 0.98, 0.97, 0.96, 0.5]])
    pred = torch.tensor([[0, 0, 0, 1, 1]])
    eligible = conf > 0.9
    keep = top_per_class(conf, pred, eligible, classes=2, k=2)
    assert keep.tolist() == [[True, True, False, True, False]]


def test_dtop_rule_and_batch_minimum_exit_count():
    spec = ExitSpec("dtop", (1,), 0.9, keep_per_class=1)
    logits = torch.tensor([[[9.0, 0], [8.0, 0], [7.0, 0], [0, 0]],
                           [[9.0, 0], [0, 0], [0, 0], [0, 0]]])
    score, eligible = exit_scores(logits, spec)
    assert eligible.tolist() == [[False, True, True, False], [False, False, False, False]]
    assert choose_exits(score, eligible).shape == (2, 0)  # image 2 has none: batch minimum 0
    leave = choose_exits(score[:1], eligible[:1])
    assert sorted(leave.tolist()[0]) == [1, 2]


def test_entropy_rule_pauses_low_entropy_tokens():
    spec = ExitSpec("paumer", (1,), 0.5, criterion="entropy")
    logits = torch.tensor([[[10.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    _, eligible = exit_scores(logits, spec)
    assert eligible.tolist() == [[True, False]]


def test_token_labels_take_the_patch_centre():
    labels = torch.arange(32 * 32).reshape(1, 32, 32)
    assert token_labels(labels, (2, 2)).tolist() == [[8 * 32 + 8, 8 * 32 + 24, 24 * 32 + 8,
                                                      24 * 32 + 24]]


@pytest.mark.parametrize("method", ["dtop", "dovit"])
def test_exits_that_never_fire_equal_segmenter(method):
    torch.manual_seed(0)
    plain = Segmenter(**SMALL).eval()
    spec = ExitSpec(method, (3, 6), 1.0, logits_from="head" if method == "dtop" else "decoder")
    model = ExitSegmenter(spec, **SMALL).eval()
    model.load_state_dict(plain.state_dict(), strict=False)
    images = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        out, stats = model.forward_with_stats(images)
        assert torch.allclose(out, plain(images), atol=1e-5)
    assert stats == {f"L3:{method}": 1.0, f"L6:{method}": 1.0}


def test_tokens_exiting_after_layer_one_keep_their_layer_one_features():
    torch.manual_seed(0)
    model = ExitSegmenter(ExitSpec("dovit", (1,), 0.0), **SMALL).eval()
    images = torch.randn(1, 3, 64, 64)
    from algm_cli.models.learned.exits import exit_encode

    with torch.no_grad():
        out = exit_encode(model.encoder, images, model.exit_heads, model.spec, 3)
        x, _ = embed(model.encoder, images)
        x = plain_block(model.encoder.blocks[0], x)
        expected = model.encoder.norm(x)[:, 1:]
    assert out.exited.all() and out.stats == {"L1:dovit": 0.0}
    assert torch.allclose(out.tokens, expected, atol=1e-5)


def test_cts_sharing_nothing_equals_segmenter_and_shares_a_fixed_count():
    torch.manual_seed(0)
    plain = Segmenter(**SMALL).eval()
    model = CTSSegmenter(0.0, {"backbone": "small"}, **SMALL).eval()
    model.load_state_dict(plain.state_dict(), strict=False)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(images), plain(images), atol=1e-5)
        model.share_fraction = 0.5  # 4 x 4 patches = 4 groups, 2 shared: 16 - 6 = 10 tokens
        logits, stats = model.forward_with_stats(images)
    assert logits.shape == (2, 3, 64, 64) and stats == {"L0:cts": 10 / 16}


def test_cts_training_loss_reaches_the_policy():
    torch.manual_seed(0)
    model = CTSSegmenter(0.5, {"backbone": "small"}, **SMALL)
    labels = torch.randint(0, 3, (2, 64, 64))
    model.training_loss(torch.randn(2, 3, 64, 64), labels).backward()
    assert model.policy.classify.weight.grad.abs().sum() > 0
