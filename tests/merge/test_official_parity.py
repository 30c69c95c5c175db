"""GBM / ToMe called as the encoder calls them equal the official codes on the same tokens.

The reference below re-derives, in a few explicit lines, what official ToMe's bipartite soft
matching (facebookresearch/ToMe, tome/merge.py) and the released GBM (tue-mps/algm-segmenter,
algm/global_merge.py) do to a whole sequence whose class token sits at position 0: alternate
split with the class token heading A, class-token edges at -inf, the best edge of each A token,
the top edges merged into their B partners by size-weighted mean, unmerged A tokens kept in their
order, output [unmerged A, B]. The package functions are instead called on the patch tokens with
the class token set aside, and the class token is put back in front.
"""

import pytest
import torch

from algm_cli.merge import MergeState, gbm_merge, tome_merge


def official_step(seq: torch.Tensor, sizes: torch.Tensor, count_rule) -> tuple:
    """Return (seq', sizes') of one official bipartite merge of (B, 1 + N, C) with class token 0."""
    B, T, C = seq.shape
    unit = seq / seq.norm(dim=-1, keepdim=True)
    scores = unit[:, 0::2] @ unit[:, 1::2].transpose(1, 2)  # (B, T_A, T_B)
    scores[:, 0, :] = -float("inf")  # the class token never merges
    best, partner = scores.max(dim=-1)
    r = count_rule(best)
    outs, out_sizes = [], []
    for i in range(B):
        order = sorted(range(best.shape[1]), key=lambda k: -float(best[i, k]))
        merged, kept = order[:r], sorted(order[r:])
        a_x, b_x = seq[i, 0::2] * sizes[i, 0::2, None], seq[i, 1::2] * sizes[i, 1::2, None]
        a_s, b_s = sizes[i, 0::2].clone(), sizes[i, 1::2].clone()
        b_x, b_s = b_x.clone(), b_s.clone()
        for k in merged:
            b_x[partner[i, k]] += a_x[k]
            b_s[partner[i, k]] += a_s[k]
        new_s = torch.cat([a_s[kept], b_s])
        outs.append(torch.cat([a_x[kept], b_x]) / new_s[:, None])
        out_sizes.append(new_s)
    return torch.stack(outs), torch.stack(out_sizes)


def released_count(layer: int):
    """Return the released GBM count rule: batch minimum of scores >= mean + std / layer."""

    def rule(best: torch.Tensor) -> int:
        patch = best[:, 1:]  # the class token's row (-inf) is left out of mean and std
        tau = patch.mean(dim=1).mean() + patch.std(dim=1).mean() / layer
        return int((best >= tau).sum(dim=1).min())

    return rule


def ours(x: torch.Tensor, steps) -> torch.Tensor:
    """Return the class token + merged patch tokens after `steps`, called as the encoder does."""
    cls, patches = x[:, :1], x[:, 1:]
    state = MergeState.start(x.shape[0], patches.shape[1])
    for step in steps:
        patches, state = step(patches, state)
    return torch.cat([cls, patches], dim=1)


@pytest.mark.parametrize("grid, r", [((14, 14), 16), ((14, 14), 64), ((5, 7), 9)])
def test_tome_equals_official_with_class_token(grid, r):
    torch.manual_seed(r)
    n = grid[0] * grid[1]
    x = torch.randn(2, 1 + n, 8) + 0.5 * torch.randn(1, 1, 8)
    ref, sizes = official_step(x, torch.ones(2, 1 + n), lambda best: r)
    ref, _ = official_step(ref, sizes, lambda best: r)  # a second step exercises the sizes
    got = ours(x, [lambda p, s: tome_merge(p, s, r=r)] * 2)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("layer", [1, 5])
def test_released_gbm_equals_official_with_class_token(layer):
    torch.manual_seed(layer)
    n = 14 * 14
    x = torch.randn(3, 1 + n, 8) + 0.7 * torch.randn(1, 1, 8)
    ref, _ = official_step(x, torch.ones(3, 1 + n), released_count(layer))
    got = ours(x, [lambda p, s: gbm_merge(p, s, threshold_rule="released", layer=layer)])
    assert got.shape == ref.shape and got.shape[1] < 1 + n
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)


def test_the_old_even_split_differs_from_official():
    torch.manual_seed(0)
    x = torch.randn(1, 1 + 196, 8) + 0.5 * torch.randn(1, 1, 8)
    ref, _ = official_step(x, torch.ones(1, 197), lambda best: 16)
    even = ours(x, [lambda p, s: tome_merge(p, s, r=16, class_token=False)])
    assert not torch.allclose(even, ref, atol=1e-3)
