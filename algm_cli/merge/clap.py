"""CLAP: Conditional Local Average Pooling, ALGM's local merging (paper Sec. 3.3).

The tokens of an (h, w) grid are cut into non-overlapping kh x kw windows aligned at (0, 0).
A window is merged into one token when the mean cosine similarity over all pairs of its tokens
(self-pairs excluded) exceeds the threshold. Rows and columns that do not fill a whole window are
never merged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .counts import batch_count, check_threshold, eligible_counts, top_indices
from .state import MergeState, MergeStep, apply_assignment


def _pair(value: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    """Return `value` as an (int, int) pair, accepting a single int for both."""
    if isinstance(value, int):
        return value, value
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints; got {value!r}")
    return int(value[0]), int(value[1])


def window_scores(
    metric: Tensor, grid: tuple[int, int], window: tuple[int, int]
) -> Tensor:
    """Return (B, gh, gw): mean pairwise cosine similarity, self-pairs excluded, per full window.

    Uses sum_{i != j} <u_i, u_j> = |sum_i u_i|^2 - sum_i |u_i|^2 for the unit vectors u_i, so the
    cost is linear in the window size instead of quadratic.
    """
    h, w = grid
    kh, kw = window
    B, N, C = metric.shape
    unit = F.normalize(metric.float(), dim=-1).reshape(B, h, w, C)
    # window means via average pooling on a channels-last view (a strided multi-dim sum is ~50x
    # slower on CPU); pooling drops the rows/columns that do not fill a whole window
    window_mean = F.avg_pool2d(unit.permute(0, 3, 1, 2), (kh, kw))  # (B, C, gh, gw)
    norms = F.avg_pool2d(unit.pow(2).sum(-1).unsqueeze(1), (kh, kw))  # (B, 1, gh, gw)
    k = kh * kw
    pair_sum = k * k * window_mean.pow(2).sum(1) - k * norms[:, 0]
    return pair_sum / (k * (k - 1))


def window_assignment(
    selected: Tensor, grid: tuple[int, int], window: tuple[int, int]
) -> tuple[Tensor, int]:
    """Return the (B, N) assignment for merging the windows `selected` (B, r), best first.

    Output order follows the authors' released code: the r merged windows first, in the order
    given (highest score first), then every unmerged token in raster order.
    """
    h, w = grid
    kh, kw = window
    B, r = selected.shape
    gh, gw = h // kh, w // kw
    device = selected.device
    # window id of every token (-1 outside full windows), (h, w) -> (N,)
    rows = torch.arange(h, device=device) // kh
    cols = torch.arange(w, device=device) // kw
    wid = rows[:, None] * gw + cols[None, :]
    wid = torch.where((rows[:, None] < gh) & (cols[None, :] < gw), wid, -1).reshape(-1)
    # slot of each window: its rank among the selected ones, or -1
    rank = torch.full((B, gh * gw + 1), -1, dtype=torch.long, device=device)
    rank.scatter_(1, selected, torch.arange(r, device=device).expand(B, r))
    token_rank = rank[:, wid]  # (B, N); wid == -1 reads the sentinel column (always -1)
    unmerged = token_rank < 0
    later = r + unmerged.long().cumsum(dim=1) - 1
    return torch.where(unmerged, later, token_rank), r + int(unmerged[0].sum())


def clap_merge(
    x: Tensor,
    state: MergeState,
    grid: tuple[int, int],
    window: int | tuple[int, int] = (2, 2),
    threshold: float = 0.88,
    metric: Tensor | None = None,
    inclusive: bool = False,
    value: str = "mean",
    reduce: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, MergeState]:
    """Merge each similar enough kh x kw window into one token; return (tokens, state).

    x: (B, N, C) patch tokens in raster order of `grid` = (h, w), N = h * w.
    metric: (B, N, C') features whose cosine similarity decides merging (default: x).
    threshold: a window merges when its score is > threshold (>= with inclusive=True, as the
      released code compares). Each image counts its windows above the threshold; with B > 1
      every image merges the batch minimum of those counts, taking its best-scoring windows.
    value / reduce / generator: the ablation operators, see `apply_assignment`.
    """
    kh, kw = _pair(window, "window")
    h, w = _pair(grid, "grid")
    threshold = check_threshold(threshold, "CLAP threshold")
    B, N, _ = x.shape
    if kh < 1 or kw < 1 or kh * kw < 2:
        raise ValueError(f"CLAP window must hold at least two tokens; got {kh}x{kw}")
    if not state.in_raster_order:
        raise ValueError("CLAP merges tokens of an unmerged grid; apply it before other merges")
    if h * w != N or state.sizes.shape != (B, N):
        raise ValueError(f"grid {h}x{w} does not match the {N} tokens given")
    metric = x if metric is None else metric
    if metric.shape[:2] != x.shape[:2]:
        raise ValueError(f"metric shape {tuple(metric.shape)} does not match x {tuple(x.shape)}")
    gh, gw = h // kh, w // kw
    if gh * gw == 0:  # the grid is smaller than one window: nothing can merge
        nothing = MergeStep("clap", N, N, torch.zeros(B, dtype=torch.long, device=x.device))
        return x, MergeState(state.index, state.sizes, state.steps + (nothing,))
    with torch.no_grad():
        scores = window_scores(metric.detach(), (h, w), (kh, kw)).reshape(B, gh * gw)
        eligible = eligible_counts(scores, threshold, inclusive)
        count = batch_count(eligible)
        selected = top_indices(scores, count)
        assign, num_out = window_assignment(selected, (h, w), (kh, kw))
    step = MergeStep("clap", N, num_out, eligible)
    return apply_assignment(x, state, assign, num_out, step, value, reduce, generator)
