"""Segformer++ merges (Kienzle et al., 2024): grid bipartite matching and neighbour pooling.

Pure functions on (B, N, C) token tensors laid out in raster order of a (h, w) grid. Each call
starts from an unmerged grid (Segformer++ merges inside every attention call and carries nothing
between layers) and returns the merged tokens with a `MergeState` whose `unmerge` puts a token
back on every grid position with one gather. All pairs are (rows, cols), like `grid` = (h, w):
`cell` = (sy, sx) in the paper's notation.

- `bsm_merge`: bipartite soft matching with grid destinations. The destination set is the
  top-left token of every full cell (the deterministic choice of the released code, which calls
  tomesd's matcher with no_rand=True); every other token, including those in rows and columns
  that do not fill a whole cell, is a source. Each source keeps only its edge to its most similar
  destination (cosine similarity); the int(r * N) strongest edges, at most one per source, merge
  their source into its destination (size-weighted mean, i.e. the plain mean here).
- `n1d_merge`: mean of `factor` consecutive tokens (the last group may be shorter).
- `n2d_merge`: 2D average pooling with non-overlapping windows; windows cut by the grid border
  average the tokens they hold (avg_pool2d with ceil_mode, no padding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .counts import top_indices
from .state import MergeState, MergeStep, apply_assignment

MERGE_MODES = ("bsm", "n1d", "n2d")


def _check_grid(x: Tensor, grid: tuple[int, int]) -> tuple[int, int]:
    """Return grid as (h, w), or raise if it does not hold x's N tokens."""
    h, w = int(grid[0]), int(grid[1])
    if x.dim() != 3 or h * w != x.shape[1]:
        raise ValueError(f"grid {h}x{w} does not match tokens of shape {tuple(x.shape)}")
    return h, w


def _check_pair(pair: tuple[int, int], name: str) -> tuple[int, int]:
    """Return pair as two positive ints, or raise."""
    a, b = int(pair[0]), int(pair[1])
    if a < 1 or b < 1:
        raise ValueError(f"{name} must be two positive ints; got {pair!r}")
    return a, b


def _identity(x: Tensor, name: str) -> tuple[Tensor, MergeState]:
    """Return (x, the identity state with one step that kept every token)."""
    B, N, _ = x.shape
    state = MergeState.start(B, N, device=x.device, dtype=x.dtype)
    return x, MergeState(state.index, state.sizes, (MergeStep(name, N, N),))


def grid_partition(
    grid: tuple[int, int], cell: tuple[int, int], device: torch.device | str | None = None
) -> Tensor:
    """Return (N,) bool, True at the destinations: the top-left token of every full cell."""
    h, w = grid
    sy, sx = cell
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    row_ok = (rows % sy == 0) & (rows < (h // sy) * sy)  # (h,)
    col_ok = (cols % sx == 0) & (cols < (w // sx) * sx)  # (w,)
    return (row_ok[:, None] & col_ok[None, :]).reshape(-1)


def bsm_merge_count(num_tokens: int, num_sources: int, r: float) -> int:
    """Return how many sources bsm merges: int(r * N), capped at the number of sources."""
    return max(0, min(int(r * num_tokens), num_sources))


def bsm_merge(
    x: Tensor,
    grid: tuple[int, int],
    cell: tuple[int, int],
    r: float,
    metric: Tensor | None = None,
) -> tuple[Tensor, MergeState]:
    """Merge the fraction r of all tokens into grid destinations; return (tokens, state).

    x: (B, N, C) in raster order of grid (h, w); metric: (B, N, C') for the similarities
    (default x). Output: (B, N - k, C) with k = `bsm_merge_count(N, n_sources, r)`; the kept
    tokens (destinations and unmerged sources) stay in raster order.
    """
    h, w = _check_grid(x, grid)
    sy, sx = _check_pair(cell, "bsm cell")
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"bsm r is a fraction of the tokens, in [0, 1]; got {r}")
    B, N, _ = x.shape
    metric = x if metric is None else metric
    if metric.shape[:2] != x.shape[:2]:
        raise ValueError(f"metric shape {tuple(metric.shape)} does not match x {tuple(x.shape)}")
    is_dst = grid_partition((h, w), (sy, sx), x.device)  # (N,)
    dst_pos = is_dst.nonzero().squeeze(1)  # (N_dst,) grid positions
    src_pos = (~is_dst).nonzero().squeeze(1)  # (N_src,)
    k = bsm_merge_count(N, src_pos.numel(), r) if dst_pos.numel() else 0
    if k == 0:
        return _identity(x, "bsm")
    with torch.no_grad():
        unit = F.normalize(metric.detach().float(), dim=-1)
        scores = unit[:, src_pos] @ unit[:, dst_pos].transpose(1, 2)  # (B, N_src, N_dst)
        best, partner = scores.max(dim=-1)  # (B, N_src) each
        chosen = top_indices(best, k)  # (B, k) source ranks, strongest edge first
        merged_src = torch.zeros_like(best, dtype=torch.bool).scatter(
            1, chosen, torch.ones_like(chosen, dtype=torch.bool)
        )
        merged = torch.zeros(B, N, dtype=torch.bool, device=x.device)
        merged[:, src_pos] = merged_src
        slot = (~merged).long().cumsum(dim=1) - 1  # (B, N) rank among kept tokens
        target = torch.where(merged_src, dst_pos[partner], src_pos)  # (B, N_src) grid position
        assign = slot.clone()
        assign[:, src_pos] = slot.gather(1, target)
    state = MergeState.start(B, N, device=x.device, dtype=x.dtype)
    return apply_assignment(x, state, assign, N - k, MergeStep("bsm", N, N - k))


def _pooled_state(
    window_id: Tensor, num_out: int, batch_size: int, dtype: torch.dtype, name: str
) -> MergeState:
    """Return the state of a fixed pooling: token i joins window `window_id[i]` (N,)."""
    sizes = torch.bincount(window_id, minlength=num_out).to(dtype)  # (N',)
    step = MergeStep(name, window_id.numel(), num_out)
    return MergeState(
        index=window_id.expand(batch_size, -1),
        sizes=sizes.expand(batch_size, -1),
        steps=(step,),
    )


def n1d_merge(x: Tensor, factor: int) -> tuple[Tensor, MergeState]:
    """Return (B, ceil(N / factor), C) means of consecutive tokens, and the state to unmerge."""
    factor = int(factor)
    if factor < 1:
        raise ValueError(f"n1d factor must be >= 1; got {factor}")
    if factor == 1:
        return _identity(x, "n1d")
    B, N, C = x.shape
    pooled = F.avg_pool1d(x.transpose(1, 2), factor, factor, ceil_mode=True)  # (B, C, N')
    window_id = torch.arange(N, device=x.device) // factor
    state = _pooled_state(window_id, pooled.shape[-1], B, x.dtype, "n1d")
    return pooled.transpose(1, 2), state


def n2d_merge(
    x: Tensor, grid: tuple[int, int], window: tuple[int, int]
) -> tuple[Tensor, MergeState]:
    """Return (B, ceil(h / kh) * ceil(w / kw), C) window means in raster order, and the state."""
    h, w = _check_grid(x, grid)
    kh, kw = _check_pair(window, "n2d window")
    if kh == kw == 1:
        return _identity(x, "n2d")
    B, N, C = x.shape
    image = x.transpose(1, 2).reshape(B, C, h, w)
    pooled = F.avg_pool2d(image, (kh, kw), (kh, kw), ceil_mode=True)  # (B, C, gh, gw)
    gh, gw = pooled.shape[-2:]
    rows = torch.arange(h, device=x.device) // kh
    cols = torch.arange(w, device=x.device) // kw
    window_id = (rows[:, None] * gw + cols[None, :]).reshape(-1)  # (N,)
    state = _pooled_state(window_id, gh * gw, B, x.dtype, "n2d")
    return pooled.flatten(2).transpose(1, 2), state


def merge_tokens(
    x: Tensor,
    grid: tuple[int, int],
    mode: str,
    r: float = 0.0,
    cell: tuple[int, int] = (2, 2),
    factor: int = 2,
    metric: Tensor | None = None,
) -> tuple[Tensor, MergeState]:
    """Return (merged tokens, state) for one Segformer++ mode: bsm (r, cell), n1d, n2d (cell)."""
    if mode == "bsm":
        return bsm_merge(x, grid, cell, r, metric)
    if mode == "n1d":
        return n1d_merge(x, factor)
    if mode == "n2d":
        return n2d_merge(x, grid, cell)
    raise ValueError(f"unknown Segformer++ merge mode {mode!r}; expected one of {MERGE_MODES}")
