"""Segformer++ merge functions (bsm, n1d, n2d) on small hand-checked cases."""

import pytest
import torch
import torch.nn.functional as F

from algm_cli.merge.segformerpp import (
    bsm_merge,
    bsm_merge_count,
    grid_partition,
    merge_tokens,
    n1d_merge,
    n2d_merge,
)


def grid_tokens(h, w, c=3, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, h * w, c, generator=g)


# ----------------------------------------------------------------------------- n2d / n1d


def test_n2d_on_4x4_equals_average_pooling_and_unmerges_by_nearest_upsampling():
    x = grid_tokens(4, 4, c=5, batch=2)
    merged, state = n2d_merge(x, (4, 4), (2, 2))
    image = x.transpose(1, 2).reshape(2, 5, 4, 4)
    expected = F.avg_pool2d(image, 2).flatten(2).transpose(1, 2)  # (2, 4, 5)
    torch.testing.assert_close(merged, expected)
    assert state.sizes.tolist() == [[4.0] * 4] * 2
    up = F.interpolate(expected.transpose(1, 2).reshape(2, 5, 2, 2), scale_factor=2)
    torch.testing.assert_close(state.unmerge(merged), up.flatten(2).transpose(1, 2))


def test_n2d_border_windows_average_only_the_tokens_they_hold():
    h, w = 5, 3
    x = grid_tokens(h, w, c=2)
    merged, state = n2d_merge(x, (h, w), (2, 2))
    assert merged.shape == (1, 3 * 2, 2)
    grid = x[0].reshape(h, w, 2)
    for i in range(3):
        for j in range(2):
            window = grid[2 * i:2 * i + 2, 2 * j:2 * j + 2].reshape(-1, 2)
            torch.testing.assert_close(merged[0, i * 2 + j], window.mean(0))
    # every position gets back the mean of its own window
    full = state.unmerge(merged)[0].reshape(h, w, 2)
    torch.testing.assert_close(full[4, 2], grid[4, 2])  # a 1x1 corner window is exact
    torch.testing.assert_close(full[1, 1], grid[0:2, 0:2].reshape(-1, 2).mean(0))


def test_n1d_means_consecutive_tokens_with_a_short_last_group():
    x = torch.arange(7.0).reshape(1, 7, 1)
    merged, state = n1d_merge(x, 3)
    assert merged.flatten().tolist() == [1.0, 4.0, 6.0]
    assert state.sizes.tolist() == [[3.0, 3.0, 1.0]]
    assert state.unmerge(merged).flatten().tolist() == [1.0, 1.0, 1.0, 4.0, 4.0, 4.0, 6.0]


def test_trivial_pooling_windows_return_the_tokens_untouched():
    x = grid_tokens(3, 4)
    for merged, state in (n1d_merge(x, 1), n2d_merge(x, (3, 4), (1, 1))):
        assert torch.equal(merged, x)
        assert torch.equal(state.unmerge(merged), x)


# ----------------------------------------------------------------------------- bsm


def test_destinations_are_the_top_left_token_of_every_full_cell():
    assert grid_partition((4, 4), (2, 2)).nonzero().flatten().tolist() == [0, 2, 8, 10]
    # a 5 x 5 grid has four full 2 x 2 cells; the last row and column are all sources
    assert grid_partition((5, 5), (2, 2)).nonzero().flatten().tolist() == [0, 2, 10, 12]
    assert grid_partition((3, 8), (4, 4)).sum() == 0  # no full cell, no destination


def test_merge_count_is_a_fraction_of_all_tokens_capped_by_the_sources():
    assert bsm_merge_count(1024, 768, 0.6) == 614
    assert bsm_merge_count(1024, 960, 0.9) == 921
    assert bsm_merge_count(16, 12, 0.9) == 12


def planted_grid():
    """A 4 x 4 grid: 4 orthogonal destinations, sources with planted best-edge similarities."""
    x = torch.zeros(1, 16, 5)
    dst = [0, 2, 8, 10]
    for i, p in enumerate(dst):
        x[0, p, i] = 1.0
    # source position -> (its destination, cosine similarity to it)
    planted = {1: (0, 0.99), 4: (0, 0.5), 5: (1, 0.95), 3: (1, 0.4), 6: (1, 0.3),
               7: (1, 0.2), 9: (2, 0.9), 12: (2, 0.45), 13: (2, 0.35), 11: (3, 0.25),
               14: (3, 0.15), 15: (3, 0.1)}
    for p, (d, s) in planted.items():
        x[0, p, d] = s
        x[0, p, (d + 1) % 4] = s / 10  # a weaker edge to the next destination
        x[0, p, 4] = (1 - 1.01 * s * s) ** 0.5  # unit norm, so cosine = coordinate
    return x, dst, planted


def test_bsm_merges_exactly_the_k_most_similar_edges_into_their_destinations():
    x, dst, planted = planted_grid()
    merged, state = bsm_merge(x, (4, 4), (2, 2), r=3 / 16)
    assert merged.shape == (1, 13, 5)
    strongest = [1, 5, 9]  # similarities 0.99, 0.95, 0.9
    kept = [p for p in range(16) if p not in strongest]
    full = state.unmerge(merged)[0]
    for p in strongest:
        d = dst[planted[p][0]]
        torch.testing.assert_close(full[p], (x[0, p] + x[0, d]) / 2)
        torch.testing.assert_close(full[d], (x[0, p] + x[0, d]) / 2)
    untouched = [p for p in kept if p not in (0, 2, 8)]
    torch.testing.assert_close(full[untouched], x[0, untouched])
    # kept tokens stay in raster order: slot i holds the i-th kept position
    assert state.index[0, kept].tolist() == list(range(13))
    assert state.sizes[0].sum() == 16


def test_bsm_at_full_rate_merges_every_source_into_its_best_destination():
    x, dst, planted = planted_grid()
    merged, state = bsm_merge(x, (4, 4), (2, 2), r=1.0)  # capped at the 12 sources
    assert merged.shape == (1, 4, 5)
    for i, d in enumerate(dst):
        members = [d] + [p for p, (j, _) in planted.items() if j == i]
        torch.testing.assert_close(merged[0, i], x[0, members].mean(0))
        assert state.sizes[0, i] == len(members)


def test_bsm_with_r_zero_is_the_identity():
    x = grid_tokens(4, 6, batch=2)
    merged, state = bsm_merge(x, (4, 6), (2, 2), r=0.0)
    assert torch.equal(merged, x) and torch.equal(state.unmerge(merged), x)


def test_bsm_batches_images_independently():
    x = grid_tokens(6, 8, c=4, batch=3, seed=1)
    merged, state = bsm_merge(x, (6, 8), (2, 2), r=0.5)
    assert merged.shape == (3, 24, 4)
    for b in range(3):
        alone, alone_state = bsm_merge(x[b:b + 1], (6, 8), (2, 2), r=0.5)
        torch.testing.assert_close(merged[b:b + 1], alone)
        assert torch.equal(state.index[b], alone_state.index[0])


def test_bsm_keeps_gradients_and_the_mean_of_its_members():
    x = grid_tokens(8, 8, c=6, batch=2, seed=2).requires_grad_()
    merged, state = bsm_merge(x, (8, 8), (4, 4), r=0.8)
    assert merged.shape == (2, 64 - 51, 6)
    merged.sum().backward()
    # every token is in exactly one mean, with weight 1 / (size of its group)
    share = 1 / state.sizes.gather(1, state.index)  # (2, 64)
    torch.testing.assert_close(x.grad, share[..., None].expand_as(x))
    # each merged token is the mean of the original tokens mapped to it
    with torch.no_grad():
        counts = torch.zeros(2, merged.shape[1]).scatter_add_(1, state.index, torch.ones(2, 64))
        sums = torch.zeros(2, merged.shape[1], 6).scatter_add_(
            1, state.index[..., None].expand(-1, -1, 6), x
        )
        torch.testing.assert_close(merged, sums / counts[..., None])


def test_merge_tokens_dispatches_and_rejects_unknown_modes():
    x = grid_tokens(4, 4)
    assert merge_tokens(x, (4, 4), "n2d", cell=(2, 2))[0].shape == (1, 4, 3)
    assert merge_tokens(x, (4, 4), "n1d", factor=4)[0].shape == (1, 4, 3)
    assert merge_tokens(x, (4, 4), "bsm", r=0.5, cell=(2, 2))[0].shape == (1, 8, 3)
    with pytest.raises(ValueError, match="unknown"):
        merge_tokens(x, (4, 4), "tome")
    with pytest.raises(ValueError, match="grid"):
        n2d_merge(x, (3, 4), (2, 2))
