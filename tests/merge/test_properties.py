"""Properties of merge + unmerge on random inputs, composition, ablation operators, gradients."""

import pytest
import torch

from algm_cli.merge import MergeState, clap_merge, gbm_merge, tome_merge

from .reference import groups_of


def smooth_tokens(batch: int, h: int, w: int, c: int, seed: int) -> torch.Tensor:
    """Return (B, h*w, C) tokens made of a few flat regions plus noise, so that some windows merge."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(batch, 4, c, generator=g)
    region = (torch.arange(h)[:, None] * 2 // h) * 2 + (torch.arange(w)[None, :] * 2 // w)
    x = centres[:, region.reshape(-1)]
    return x + 0.3 * torch.randn(batch, h * w, c, generator=g)


def group_means(x0: torch.Tensor, index: torch.Tensor, num: int) -> torch.Tensor:
    """Return (B, num, C): the mean of the original tokens of each group, by explicit loops."""
    out = torch.zeros(x0.shape[0], num, x0.shape[2], dtype=x0.dtype)
    for b in range(x0.shape[0]):
        for g in range(num):
            out[b, g] = x0[b, index[b] == g].mean(0)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_nothing_merged_keeps_every_position(seed):
    x = torch.randn(3, 6 * 8, 5, generator=torch.Generator().manual_seed(seed))
    state = MergeState.start(3, 48)
    y, state = clap_merge(x, state, (6, 8), (2, 2), threshold=1.0)
    y, state = gbm_merge(y, state, threshold=1.0)
    assert torch.equal(state.unmerge(y), x)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("batch", [1, 3])
def test_composition_equals_mean_of_each_final_group(seed, batch):
    h, w, c = 8, 10, 6
    x0 = smooth_tokens(batch, h, w, c, seed).double()
    state = MergeState.start(batch, h * w, dtype=torch.float64)
    x, state = clap_merge(x0, state, (h, w), (2, 2), threshold=0.6)
    x, state = gbm_merge(x, state, threshold=0.7)
    x, state = tome_merge(x, state, r=5)
    # sizes sum to N and count the members of each group
    assert torch.all(state.sizes.sum(1) == h * w)
    counts = torch.stack([torch.bincount(i, minlength=state.num_tokens) for i in state.index])
    assert torch.equal(counts.double(), state.sizes)
    # every merged token is exactly the mean of the original tokens it stands for
    torch.testing.assert_close(x, group_means(x0, state.index, state.num_tokens))
    torch.testing.assert_close(state.unmerge(x), group_means(x0, state.index, state.num_tokens)
                               .gather(1, state.index[..., None].expand(-1, -1, c)))
    assert [s.name for s in state.steps] == ["clap", "gbm", "tome"]


def test_batch_of_one_is_adaptive_and_batch_results_use_each_images_best():
    x0 = smooth_tokens(3, 8, 8, 4, seed=7)
    alone = [
        clap_merge(x0[b : b + 1], MergeState.start(1, 64), (8, 8), (2, 2), threshold=0.5)[1]
        for b in range(3)
    ]
    _, batched = clap_merge(x0, MergeState.start(3, 64), (8, 8), (2, 2), threshold=0.5)
    own = [s.steps[-1].eligible.item() for s in alone]
    assert batched.steps[-1].eligible.tolist() == own
    assert batched.num_tokens == 64 - 3 * min(own)
    assert [s.num_tokens for s in alone] == [64 - 3 * c for c in own]


def test_random_value_takes_one_member_and_keeps_sizes():
    x0 = smooth_tokens(2, 8, 8, 4, seed=3)
    g = torch.Generator().manual_seed(0)
    y, state = clap_merge(x0, MergeState.start(2, 64), (8, 8), (2, 2), threshold=0.3,
                          value="random", generator=g)
    assert state.num_tokens < 64
    for b in range(2):
        for t in range(state.num_tokens):
            members = x0[b, state.index[b] == t]
            assert (members == y[b, t]).all(dim=1).any()  # y is one of its members
    ref_sizes = clap_merge(x0, MergeState.start(2, 64), (8, 8), (2, 2), threshold=0.3)[1].sizes
    assert torch.equal(state.sizes, ref_sizes)


def test_replicate_without_reduction_keeps_count_and_gives_group_mean():
    x0 = smooth_tokens(1, 8, 8, 4, seed=5)
    y, state = clap_merge(x0, MergeState.start(1, 64), (8, 8), (2, 2), threshold=0.3, reduce=False)
    _, merged = clap_merge(x0, MergeState.start(1, 64), (8, 8), (2, 2), threshold=0.3)
    assert y.shape == x0.shape and state.num_tokens == 64 and state.in_raster_order
    means = group_means(x0, merged.index, merged.num_tokens)[0]
    torch.testing.assert_close(y[0], means[merged.index[0]])
    # replicating keeps raster order, so CLAP can still follow (as in Tab. 6's variant)
    clap_merge(y, state, (8, 8), (2, 2), threshold=0.3)


def test_gradients_flow_through_merged_values():
    x0 = smooth_tokens(2, 6, 6, 3, seed=11).double().requires_grad_(True)

    def forward(x):
        s = MergeState.start(2, 36, dtype=torch.float64)
        y, s = clap_merge(x, s, (6, 6), (2, 2), threshold=0.4)
        y, s = gbm_merge(y.sin(), s, threshold=0.6)
        return s.unmerge(y * y.sum(-1, keepdim=True))

    # the merge decisions are piecewise constant: perturbations of gradcheck must not flip them
    torch.autograd.gradcheck(forward, (x0,), eps=1e-7, atol=1e-5)
    assert forward(x0).sum().backward() is None and x0.grad.abs().sum() > 0


def test_groups_are_those_of_the_index_map():
    x0 = smooth_tokens(1, 4, 4, 3, seed=2)
    _, state = clap_merge(x0, MergeState.start(1, 16), (4, 4), (2, 2), threshold=-1.0)
    assert groups_of(state.index[0]) == {
        frozenset({0, 1, 4, 5}), frozenset({2, 3, 6, 7}),
        frozenset({8, 9, 12, 13}), frozenset({10, 11, 14, 15}),
    }
