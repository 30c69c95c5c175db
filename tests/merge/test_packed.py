"""Packed merging: every image's result equals the batch-size-1 merge calls on that image alone."""

import pytest
import torch

from algm_cli.merge import MergeState, clap_merge, gbm_merge, tome_merge
from algm_cli.merge.packed import (
    PackedState,
    default_a_start,
    packed_clap,
    packed_gbm,
    packed_tome,
)

GRID = (6, 8)
N = GRID[0] * GRID[1]


def grids(batch=4, dim=8, seed=0) -> torch.Tensor:
    """Return (B, N, C) tokens from flat-ish (very mergeable) to noisy (barely mergeable)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(batch, 1, dim, generator=g)
    noise = torch.randn(batch, N, dim, generator=g) * torch.linspace(0.2, 2.0, batch)[:, None, None]
    return base + noise


def per_image(x, steps):
    """Return [(tokens (1, N_i, C), MergeState)] running the merge calls on each image alone."""
    out = []
    for img in x:
        y, state = img[None], MergeState.start(1, N)
        for step in steps:
            y, state = step(y, state)
        out.append((y, state))
    return out


def assert_matches(y, state, singles):
    """Assert packed (y, state) equals the per-image results, token for token."""
    assert list(state.counts) == [s.num_tokens for _, s in singles]
    for piece, size, (ys, s) in zip(y.split(state.counts), state.sizes.split(state.counts), singles):
        torch.testing.assert_close(piece, ys[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(size, s.sizes[0])
    assert torch.equal(state.index, torch.cat([s.index for _, s in singles]))
    for step, *single_steps in zip(state.steps, *[s.steps for _, s in singles]):
        if step.eligible is not None:
            assert step.eligible.tolist() == [int(t.eligible[0]) for t in single_steps]


def test_packed_clap_equals_per_image_clap():
    x = grids()
    y, state = packed_clap(x.reshape(-1, x.shape[-1]), PackedState.start(4, N), GRID, (2, 2), 0.2)
    singles = per_image(x, [lambda t, s: clap_merge(t, s, GRID, (2, 2), 0.2)])
    assert len(set(state.counts)) > 1  # the images really merge differently
    assert_matches(y, state, singles)


@pytest.mark.parametrize("rule", ["fixed", "released"])
@pytest.mark.parametrize("inclusive", [False, True])
def test_packed_gbm_after_clap_equals_per_image(rule, inclusive):
    x = grids(batch=5, seed=1)
    metric = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    flat, flat_metric = x.reshape(-1, x.shape[-1]), metric.reshape(-1, x.shape[-1])
    gbm = dict(threshold=0.3, threshold_rule=rule, layer=3, inclusive=inclusive)
    y, state = packed_clap(flat, PackedState.start(5, N), GRID, (2, 3), 0.1, inclusive=inclusive)
    # GBM on odd counts too (CLAP with 2x3 windows removes 5 tokens per window)
    y, state = packed_gbm(y, state, metric=y * 0.5 + 0.1, **gbm)
    singles = per_image(x, [
        lambda t, s: clap_merge(t, s, GRID, (2, 3), 0.1, inclusive=inclusive),
        lambda t, s: gbm_merge(t, s, metric=t * 0.5 + 0.1, **gbm),
    ])
    assert len(set(state.counts)) > 1
    assert_matches(y, state, singles)
    # and on a raw grid with a separate metric
    y, state = packed_gbm(flat, PackedState.start(5, N), metric=flat_metric, **gbm)
    singles = [gbm_merge(img[None], MergeState.start(1, N), metric=m[None], **gbm)
               for img, m in zip(x, metric)]
    assert_matches(y, state, singles)


def test_packed_tome_and_unmerge_equal_per_image():
    x = grids(batch=3, seed=3)
    flat = x.reshape(-1, x.shape[-1])
    y, state = packed_clap(flat, PackedState.start(3, N), GRID, (2, 2), 0.0)
    y, state = packed_tome(y, state, r=7)
    singles = per_image(x, [lambda t, s: clap_merge(t, s, GRID, (2, 2), 0.0),
                            lambda t, s: tome_merge(t, s, r=7)])
    assert_matches(y, state, singles)
    full = state.unmerge(y)  # (B, N, C)
    torch.testing.assert_close(full, torch.cat([s.unmerge(t) for t, s in singles]))


def test_nothing_to_merge_keeps_order_and_reduce_false_keeps_counts():
    x = grids(batch=2)
    flat = x.reshape(-1, x.shape[-1])
    y, state = packed_gbm(flat, PackedState.start(2, N), threshold=1.0)
    assert torch.equal(y, flat) and state.counts == (N, N)
    y, state = packed_gbm(flat, PackedState.start(2, N), threshold=0.2, reduce=False)
    singles = [gbm_merge(img[None], MergeState.start(1, N), threshold=0.2, reduce=False)
               for img in x]
    torch.testing.assert_close(y, torch.cat([t[0] for t, _ in singles]))
    assert state.counts == (N, N)


def test_split_parity_defaults_to_gbm_merge_and_is_a_parameter():
    x = grids(batch=2, seed=4)
    flat = x.reshape(-1, x.shape[-1])
    assert default_a_start() in (0, 1)
    for a_start in (0, 1):
        _, state = packed_gbm(flat, PackedState.start(2, N), threshold=0.0, a_start=a_start)
        # A holds the tokens of positions a_start, a_start + 2, ...; they are the ones merged away
        assert all(c == N - e for c, e in zip(state.counts, state.steps[0].eligible.tolist()))
    _, one = packed_gbm(flat, PackedState.start(2, N), threshold=0.0, a_start=1)
    _, zero = packed_gbm(flat, PackedState.start(2, N), threshold=0.0, a_start=0)
    assert not torch.equal(one.index, zero.index)


def test_bad_input_is_rejected():
    x = grids(batch=2).reshape(-1, 8)
    state = PackedState.start(2, N)
    with pytest.raises(ValueError, match="threshold"):
        packed_gbm(x, state)
    with pytest.raises(ValueError, match="counts"):
        packed_gbm(x[:-1], state, threshold=0.5)
    merged, merged_state = packed_clap(x, state, GRID, (2, 2), -1.0)
    with pytest.raises(ValueError, match="unmerged grids"):
        packed_clap(merged, merged_state, GRID)
