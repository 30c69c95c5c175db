"""CLAP: hand-computed cases, the loop reference, batch counts and bad input."""

import pytest
import torch

from algm_cli.merge import MergeState, clap_merge, gbm_merge, window_scores

from .reference import clap_groups, clap_scores, groups_of

E = torch.eye(4)


def grid_tokens(rows: list[list[torch.Tensor]]) -> torch.Tensor:
    """Return (1, h*w, C) tokens from a nested list of vectors in raster order."""
    return torch.stack([t for row in rows for t in row]).unsqueeze(0)


def test_hand_computed_4x4_grid():
    # windows: top-left all e0 (score 1), top-right e0,e0,e1,e1 (4 of 12 ordered pairs: 1/3),
    # bottom-left e0,e1,e2,e3 (score 0), bottom-right e2 x3 + (e2+e3) (high)
    e0, e1, e2, e3 = E
    mixed = e2 + e3
    x = grid_tokens([
        [e0, e0, e0, e0],
        [e0, e0, e1, e1],
        [e0, e1, e2, e2],
        [e2, e3, e2, mixed],
    ])
    scores = window_scores(x, (4, 4), (2, 2)).reshape(-1)
    c = 2 ** -0.5  # cos(e2, e2 + e3)
    expected = torch.tensor([1.0, 4 / 12, 0.0, (6 * 1 + 6 * c) / 12])
    torch.testing.assert_close(scores, expected)

    y, state = clap_merge(x, MergeState.start(1, 16), grid=(4, 4), window=(2, 2), threshold=0.5)
    # two windows pass 0.5: top-left (1.0) first, then bottom-right (0.85)
    assert y.shape == (1, 2 + 8, 4)
    torch.testing.assert_close(y[0, 0], e0)
    torch.testing.assert_close(y[0, 1], (3 * e2 + mixed) / 4)
    assert state.sizes.tolist() == [[4, 4] + [1] * 8]
    assert state.steps[-1].eligible.tolist() == [2]
    # unmerged tokens follow in raster order: 2, 3, 6, 7, 8, 9, 12, 13
    torch.testing.assert_close(y[0, 2:], x[0, [2, 3, 6, 7, 8, 9, 12, 13]])
    expected_index = [0, 0, 2, 3, 0, 0, 4, 5, 6, 7, 1, 1, 8, 9, 1, 1]
    assert state.index[0].tolist() == expected_index


def test_threshold_is_strict_unless_inclusive():
    e0, e1 = E[0], E[1]
    x = grid_tokens([[e0, e0], [e1, e1]])  # 4 of 12 ordered pairs have similarity 1
    score = float(window_scores(x, (2, 2), (2, 2)))
    assert score == pytest.approx(1 / 3)
    _, strict = clap_merge(x, MergeState.start(1, 4), (2, 2), (2, 2), threshold=score)
    _, incl = clap_merge(x, MergeState.start(1, 4), (2, 2), (2, 2), threshold=score, inclusive=True)
    assert strict.num_tokens == 4 and incl.num_tokens == 1


@pytest.mark.parametrize("window", [(2, 1), (1, 2), (2, 4), (4, 2), (3, 3)])
def test_non_square_windows_match_reference(window):
    torch.manual_seed(0)
    grid = (8, 8)
    base = torch.randn(1, 64, 6)
    # make neighbours correlated so that some windows pass and some do not
    x = base + 2.0 * torch.randn(1, 1, 6)
    scores = clap_scores(x[0], grid, window)
    ranked = sorted(scores)
    tau = (ranked[len(ranked) // 2] + ranked[len(ranked) // 2 + 1]) / 2
    y, state = clap_merge(x, MergeState.start(1, 64), grid, window, threshold=tau)
    count = sum(s > tau for s in scores)
    assert state.steps[-1].eligible.item() == count
    assert groups_of(state.index[0]) == set(clap_groups(x[0], grid, window, count))
    torch.testing.assert_close(
        window_scores(x, grid, window).reshape(-1), torch.tensor(scores), atol=1e-6, rtol=0
    )


def test_grid_not_divisible_by_window_keeps_edges():
    x = torch.ones(1, 5 * 7, 3)  # every token identical: every full window merges
    y, state = clap_merge(x, MergeState.start(1, 35), grid=(5, 7), window=(2, 2), threshold=0.0)
    # full windows: 2 x 3 = 6 windows covering rows 0-3, cols 0-5; 35 - 24 = 11 tokens stay
    assert state.num_tokens == 6 + 11
    grid_index = state.index[0].reshape(5, 7)
    sizes = state.sizes[0][grid_index]
    assert (sizes[4, :] == 1).all() and (sizes[:, 6] == 1).all()
    assert (sizes[:4, :6] == 4).all()


def test_thresholds_that_merge_nothing_and_everything():
    torch.manual_seed(1)
    x = torch.randn(1, 16, 8)
    y, state = clap_merge(x, MergeState.start(1, 16), (4, 4), (2, 2), threshold=1.0)
    assert state.num_tokens == 16 and torch.equal(y, x)
    y, state = clap_merge(x, MergeState.start(1, 16), (4, 4), (2, 2), threshold=-1.0)
    assert state.num_tokens == 4 and state.sizes.tolist() == [[4, 4, 4, 4]]


def test_batch_merges_minimum_count_with_each_images_best_windows():
    e0, e1, e2, e3 = E
    same = [[e0, e0, e1, e1], [e0, e0, e1, e1], [e2, e2, e3, e3], [e2, e2, e3, e3]]
    # image 0: all four windows uniform; image 1: only bottom-right window uniform
    img0 = grid_tokens(same)
    diff = [[e0, e1, e0, e1], [e2, e3, e2, e3], [e0, e1, e3, e3], [e2, e3, e3, e3]]
    img1 = grid_tokens(diff)
    x = torch.cat([img0, img1])
    y, state = clap_merge(x, MergeState.start(2, 16), (4, 4), (2, 2), threshold=0.9)
    assert state.steps[-1].eligible.tolist() == [4, 1]
    assert state.num_tokens == 16 - 3
    # image 1 merges its only uniform window (bottom-right: tokens 10, 11, 14, 15)
    assert groups_of(state.index[1]) >= {frozenset({10, 11, 14, 15})}
    # alone, image 0 would merge all four windows
    _, alone = clap_merge(img0, MergeState.start(1, 16), (4, 4), (2, 2), threshold=0.9)
    assert alone.num_tokens == 4


def test_metric_decides_merging_not_values():
    torch.manual_seed(2)
    x = torch.randn(1, 16, 4)
    metric = torch.ones(1, 16, 3)  # every window perfectly similar in the metric
    y, state = clap_merge(x, MergeState.start(1, 16), (4, 4), (2, 2), threshold=0.5, metric=metric)
    assert state.num_tokens == 4
    torch.testing.assert_close(state.unmerge(y)[0, 0], x[0, [0, 1, 4, 5]].mean(0))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(grid=(3, 5)), "grid 3x5"),
        (dict(window=(1, 1)), "at least two tokens"),
        (dict(threshold=1.5), "[-1, 1]"),
        (dict(threshold="high"), "number"),
    ],
)
def test_bad_input_is_named(kwargs, message):
    args = dict(grid=(4, 4), window=(2, 2), threshold=0.5) | kwargs
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        clap_merge(torch.randn(1, 16, 4), MergeState.start(1, 16), **args)


def test_clap_after_another_merge_is_refused():
    x = torch.ones(1, 16, 4)
    y, state = gbm_merge(x, MergeState.start(1, 16), threshold=0.5)
    with pytest.raises(ValueError, match="unmerged grid"):
        clap_merge(y, state, (4, 4), (2, 2), threshold=0.5)
