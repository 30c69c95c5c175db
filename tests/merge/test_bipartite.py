"""GBM and ToMe: hand-computed matchings, the released threshold rule, batches, the reference.

The hand-computed cases use the split of a sequence without a class token (class_token=False:
A = even positions); test_official_parity.py pins the default split (class token at position 0
of A, as official ToMe and the released GBM).
"""

import math
import statistics

import pytest
import torch

from algm_cli.merge import MergeState, best_edges, gbm_merge, released_gbm_threshold, tome_merge

from .reference import bipartite_groups, groups_of


def unit(deg: float) -> torch.Tensor:
    """Return the 2-D unit vector at `deg` degrees."""
    rad = math.radians(deg)
    return torch.tensor([math.cos(rad), math.sin(rad)])


# positions 0, 2, 4 are A; 1, 3, 5 are B.
ANGLES = [0, 10, 90, 60, 180, 115]
# best edges: A0 -> B0 (cos 10 deg), A1 -> B2 (cos 25 deg), A2 -> B2 (cos 65 deg)
BEST = [math.cos(math.radians(10)), math.cos(math.radians(25)), math.cos(math.radians(65))]


def tokens(angles=ANGLES) -> torch.Tensor:
    """Return (1, N, 2) tokens at the given angles."""
    return torch.stack([unit(a) for a in angles]).unsqueeze(0)


def test_best_edges_hand_computed():
    scores, partner = best_edges(tokens(), class_token=False)
    torch.testing.assert_close(scores[0], torch.tensor(BEST))
    assert partner[0].tolist() == [0, 2, 2]


def test_gbm_hand_computed_threshold():
    x = tokens()
    y, state = gbm_merge(x, MergeState.start(1, 6), threshold=0.9, class_token=False)
    # A0 (0.985) and A1 (0.906) pass; output: unmerged A2, then B0+A0, B1, B2+A1
    assert state.sizes.tolist() == [[1, 2, 1, 2]]
    assert state.index.tolist() == [[1, 1, 3, 2, 0, 3]]
    torch.testing.assert_close(y[0, 0], x[0, 4])
    torch.testing.assert_close(y[0, 1], (x[0, 0] + x[0, 1]) / 2)
    torch.testing.assert_close(y[0, 2], x[0, 3])
    torch.testing.assert_close(y[0, 3], (x[0, 2] + x[0, 5]) / 2)
    _, state = gbm_merge(x, MergeState.start(1, 6), threshold=0.95, class_token=False)
    assert state.sizes.tolist() == [[1, 1, 2, 1, 1]]


def test_gbm_thresholds_that_merge_nothing_and_everything():
    x = tokens()
    y, state = gbm_merge(x, MergeState.start(1, 6), threshold=1.0, class_token=False)
    assert torch.equal(y, x) and state.num_tokens == 6
    y, state = gbm_merge(x, MergeState.start(1, 6), threshold=-1.0, class_token=False)
    assert state.num_tokens == 3 and state.sizes.tolist() == [[2, 1, 3]]


def test_released_rule_by_hand():
    s = BEST
    for layer, expected in [(1, 0), (5, 2), (12, 2)]:
        tau = statistics.mean(s) + statistics.stdev(s) / layer
        assert released_gbm_threshold(torch.tensor([s]), layer) == pytest.approx(tau, abs=1e-6)
        _, state = gbm_merge(tokens(), MergeState.start(1, 6), threshold_rule="released",
                             layer=layer, class_token=False)
        assert state.steps[-1].eligible.item() == sum(v >= tau for v in s) == expected


def test_released_rule_averages_mean_and_std_over_the_batch():
    s0 = torch.tensor([0.9, 0.5, 0.1])
    s1 = torch.tensor([0.8, 0.8, 0.2])
    expected = (s0.mean() + s1.mean()) / 2 + (s0.std() + s1.std()) / 2 / 3
    assert released_gbm_threshold(torch.stack([s0, s1]), 3) == pytest.approx(float(expected))


def test_gbm_batch_uses_minimum_count_and_each_images_strongest_edges():
    img0 = tokens()  # 2 edges above 0.9
    img1 = tokens([0, 10, 90, 240, 180, 300])  # A0 -> B0 only
    x = torch.cat([img0, img1])
    y, state = gbm_merge(x, MergeState.start(2, 6), threshold=0.9, class_token=False)
    assert state.steps[-1].eligible.tolist() == [2, 1]
    assert state.num_tokens == 5
    # image 0 merges its strongest edge only: A0 into B0
    assert groups_of(state.index[0]) == {
        frozenset({0, 1}), frozenset({2}), frozenset({3}), frozenset({4}), frozenset({5})
    }


def test_tome_fixed_r_and_cap():
    x = tokens()
    _, state = tome_merge(x, MergeState.start(1, 6), r=1, class_token=False)
    assert state.sizes.tolist() == [[1, 1, 2, 1, 1]]
    _, state = tome_merge(x, MergeState.start(1, 6), r=100, class_token=False)  # cap N // 2 = 3
    assert state.sizes.tolist() == [[2, 1, 3]]
    _, state = tome_merge(x, MergeState.start(1, 6), r=0, class_token=False)
    assert state.num_tokens == 6
    _, state = tome_merge(tokens(ANGLES[:5]), MergeState.start(1, 5), r=100,
                          class_token=False)  # odd N: cap 2
    assert state.num_tokens == 3


@pytest.mark.parametrize("class_token", [False, True])
@pytest.mark.parametrize("n", [7, 16, 33])
def test_gbm_matches_loop_reference(n, class_token):
    torch.manual_seed(n)
    x = torch.randn(1, n, 5) + torch.randn(1, 1, 5)
    best, _ = bipartite_groups(x[0], 0, class_token=class_token)
    ranked = sorted(best)
    k = len(ranked) // 3
    tau = (ranked[k] + ranked[k + 1]) / 2  # between two scores: no rounding can flip a decision
    count = sum(b > tau for b in best)
    _, ref_groups = bipartite_groups(x[0], count, class_token=class_token)
    _, state = gbm_merge(x, MergeState.start(1, n), threshold=tau, class_token=class_token)
    assert groups_of(state.index[0]) == set(ref_groups)


def test_gbm_needs_a_threshold_or_the_released_rule():
    with pytest.raises(ValueError, match="threshold"):
        gbm_merge(tokens(), MergeState.start(1, 6), class_token=False)
    with pytest.raises(ValueError, match="layer"):
        gbm_merge(tokens(), MergeState.start(1, 6), threshold_rule="released", class_token=False)
    with pytest.raises(ValueError, match="threshold_rule"):
        gbm_merge(tokens(), MergeState.start(1, 6), threshold=0.5, threshold_rule="auto")
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        gbm_merge(tokens(), MergeState.start(1, 6), threshold=-2, class_token=False)
