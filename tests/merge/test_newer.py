"""PiToMe, mutual-pair merging and ATC against slow loop references written from their papers."""

import math

import pytest
import torch

from algm_cli.merge import MergeState
from algm_cli.merge.newer import atc_merge, mutual_pair_merge, pitome_margin, pitome_merge

from .reference import cos, groups_of


def sims(x: torch.Tensor) -> list[list[float]]:
    """Return the full cosine-similarity table of one image's tokens (N, C)."""
    return [[cos(a, b) for b in x] for a in x]


def pitome_reference(x: torch.Tensor, r: int, margin: float) -> set[frozenset[int]]:
    """PiToMe's groups for one image, straight from the paper's energy and pairing rule."""
    s = sims(x)
    n = len(s)
    elu = lambda v: v if v > 0 else math.exp(v) - 1  # noqa: E731
    energy = [sum(elu(s[i][j] - margin) for j in range(n)) / n for i in range(n)]
    order = sorted(range(n), key=lambda i: -energy[i])
    a, b = order[0:2 * r:2], order[1:2 * r:2]
    groups = {j: {j} for j in b}
    for i in a:
        groups[max(b, key=lambda j: s[i][j])].add(i)
    return {frozenset(g) for g in groups.values()} | {frozenset([i]) for i in order[2 * r:]}


def mpm_reference(x: torch.Tensor, tau: float) -> set[frozenset[int]]:
    """Mutual nearest-neighbour pairs above tau merge; everything else stays alone."""
    s = sims(x)
    n = len(s)
    nearest = [max((j for j in range(n) if j != i), key=lambda j: s[i][j]) for i in range(n)]
    groups, used = set(), set()
    for i in range(n):
        j = nearest[i]
        if nearest[j] == i and s[i][j] > tau and i not in used:
            groups.add(frozenset([i, j]))
            used |= {i, j}
    return groups | {frozenset([i]) for i in range(n) if i not in used}


def atc_reference(x: torch.Tensor, k: int, linkage: str) -> set[frozenset[int]]:
    """Naive agglomerative clustering: join the closest pair of clusters until k remain."""
    s = sims(x)
    clusters = [frozenset([i]) for i in range(len(s))]
    pick = {"average": lambda d: sum(d) / len(d), "complete": max, "single": min}[linkage]
    while len(clusters) > k:
        pairs = [(pick([1 - s[i][j] for i in p for j in q]), a, b)
                 for a, p in enumerate(clusters) for b, q in enumerate(clusters) if a < b]
        _, a, b = min(pairs)
        clusters = [c for i, c in enumerate(clusters) if i not in (a, b)] + [clusters[a] | clusters[b]]
    return set(clusters)


def random_tokens(seed: int, n: int = 14, c: int = 6) -> torch.Tensor:
    return torch.randn(1, n, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("r", [1, 3, 7])
def test_pitome_matches_reference(seed, r):
    x = random_tokens(seed)
    y, state = pitome_merge(x, MergeState.start(1, 14, dtype=x.dtype), r=r, margin=0.2)
    assert y.shape == (1, 14 - r, 6)
    assert groups_of(state.index[0]) == pitome_reference(x[0], r, 0.2)
    torch.testing.assert_close(state.unmerge(y)[0, 0], x[0, state.index[0] == state.index[0, 0]].mean(0))


def test_pitome_margins():
    assert pitome_margin(1, 12) == pytest.approx(0.9)
    assert pitome_margin(12, 12) == pytest.approx(0.9 - 0.8 * 11 / 12)
    assert pitome_margin(12, 12, "paper") == pytest.approx(0.9 - 0.9 * 11 / 12)
    with pytest.raises(ValueError, match="margin rule"):
        pitome_margin(1, 12, "other")


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tau", [-1.0, 0.0, 0.3])
def test_mpm_matches_reference(seed, tau):
    x = random_tokens(seed)
    y, state = mutual_pair_merge(x, MergeState.start(1, 14, dtype=x.dtype), threshold=tau)
    expected = mpm_reference(x[0], tau)
    assert groups_of(state.index[0]) == expected
    assert y.shape[1] == len(expected)


def test_mpm_batch_takes_the_minimum_best_pairs_first():
    x = torch.cat([random_tokens(s) for s in range(3)])
    _, state = mutual_pair_merge(x, MergeState.start(3, 14, dtype=x.dtype), threshold=-1.0)
    counts = state.steps[-1].eligible
    assert state.num_tokens == 14 - int(counts.min())
    for b in range(3):
        assert len(groups_of(state.index[b])) == state.num_tokens


@pytest.mark.parametrize("linkage", ["average", "complete", "single"])
@pytest.mark.parametrize("k", [1, 5, 9])
def test_atc_matches_reference(linkage, k):
    x = torch.cat([random_tokens(s, n=10) for s in range(2)])
    y, state = atc_merge(x, MergeState.start(2, 10, dtype=x.dtype), num_out=k, linkage=linkage)
    assert y.shape == (2, k, 6)
    for b in range(2):
        assert groups_of(state.index[b]) == atc_reference(x[b], k, linkage)


def test_atc_rejects_unknown_linkage():
    with pytest.raises(ValueError, match="linkage"):
        atc_merge(random_tokens(0), MergeState.start(1, 14), 4, linkage="ward")
