"""Other token-reduction methods (the baselines of supp. Fig. 1 / Tab. 6) on bare tensors.

Pure functions, no model knowledge; `algm_cli.models.reduction` places them in a ViT. Each
function states the rule it implements; where the source papers leave a choice, the choice is a
parameter and the docstring says which default was picked and why.

- EViT (Liang et al., ICLR 2022): `cls_attention` + `evit_fuse` keep the top-k patch tokens by
  class-token attention and fuse the rest into one attention-weighted token.
- ToMe, dense form (ELViT's study): `tome_dense_merge` merges a fraction of a sub-block's input by
  bipartite matching; the caller unmerges the sub-block output with `state.unmerge`.
- ACT (Zheng et al., 2020): `kmeans` clusters queries, `clustered_attention` attends with the
  centroid queries and broadcasts each centroid's output back to its members.
- ELViT (Liang et al., NeurIPS 2022): `soft_cluster` (grid-initialised local soft k-means) and
  `knn_reconstruct` (rebuild full resolution from the k nearest cluster tokens).
- AiluRus (Li et al., NeurIPS 2023): `density_peak_clusters` (spatially aware density-peak
  clustering) and `dpc_merge` (cluster means, tracked in a `MergeState` for reconstruction).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .bipartite import tome_merge
from .state import MergeState, MergeStep, apply_assignment

# ----------------------------------------------------------------------------------------------
# shared helpers


def squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """Return (..., N, M) squared Euclidean distances between a (..., N, d) and b (..., M, d).

    Written as |a|^2 + |b|^2 - 2 a.b^T (one matmul, which fvcore counts) and clamped at 0.
    """
    cross = a @ b.transpose(-1, -2)
    sq = (a * a).sum(-1, keepdim=True) + (b * b).sum(-1).unsqueeze(-2) - 2 * cross
    return sq.clamp_min(0.0)


def grid_coords(grid: tuple[int, int], device=None) -> Tensor:
    """Return (h*w, 2) long (row, col) of every raster-order position of a grid."""
    h, w = grid
    rows = torch.arange(h, device=device).repeat_interleave(w)
    cols = torch.arange(w, device=device).repeat(h)
    return torch.stack([rows, cols], dim=1)


def chebyshev_within(grid: tuple[int, int], radius: int, device=None) -> Tensor:
    """Return (N, N) bool: grid positions i and j are at most `radius` rows and cols apart."""
    pos = grid_coords(grid, device)
    gap = (pos[:, None, :] - pos[None, :, :]).abs().amax(-1)  # (N, N)
    return gap <= radius


def weighted_regroup(
    x: Tensor, state: MergeState, assign: Tensor, num_out: int, weights: Tensor, name: str
) -> tuple[Tensor, MergeState]:
    """Return (tokens (B, num_out, C), state): each slot is the weighted mean of its members.

    Like `apply_assignment`, but with arbitrary non-negative weights (B, N) instead of sizes for
    the values; sizes still add up, and the index map composes, so `state.unmerge` keeps working.
    """
    B, N, C = x.shape
    offsets = (torch.arange(B, device=x.device) * num_out).unsqueeze(1)
    flat = (assign + offsets).reshape(-1)  # (B*N,)
    w = weights.to(x.dtype).reshape(-1)
    total = w.new_zeros(B * num_out).index_add(0, flat, w)
    summed = x.new_zeros(B * num_out, C).index_add(0, flat, x.reshape(B * N, C) * w[:, None])
    merged = (summed / total.clamp_min(1e-12)[:, None]).reshape(B, num_out, C)
    sizes = state.sizes.reshape(-1)
    new_sizes = sizes.new_zeros(B * num_out).index_add(0, flat, sizes).reshape(B, num_out)
    step = MergeStep(name, N, num_out)
    new_state = MergeState(assign.gather(1, state.index), new_sizes, state.steps + (step,))
    return merged, new_state


# ----------------------------------------------------------------------------------------------
# EViT


def cls_attention(q: Tensor, k: Tensor) -> Tensor:
    """Return (B, N-1) the class token's attention to each patch token, averaged over heads.

    q, k: (B, heads, N, d) with the class token first. The attention row is
    softmax(q_cls k^T / sqrt(d)) over all N keys (class token included), as in EViT; the class
    column is then dropped.
    """
    scale = q.shape[-1] ** -0.5
    logits = (q[:, :, :1] @ k.transpose(-1, -2)) * scale  # (B, heads, 1, N)
    return logits.softmax(dim=-1).mean(dim=1)[:, 0, 1:]


def evit_keep_count(num_tokens: int, keep_rate: float) -> int:
    """Return how many of `num_tokens` patch tokens EViT keeps: ceil(keep_rate * N), at most N."""
    if not 0.0 < keep_rate <= 1.0:
        raise ValueError(f"EViT keep rate must lie in (0, 1]; got {keep_rate}")
    num_tokens = int(num_tokens)  # an int also while fvcore traces
    return min(num_tokens, math.ceil(keep_rate * num_tokens - 1e-9))


def evit_fuse(
    x: Tensor, state: MergeState, scores: Tensor, keep: int
) -> tuple[Tensor, MergeState]:
    """Return (tokens (B, keep + 1, C), state): EViT's reorganisation of patch tokens (B, N, C).

    The `keep` tokens with the highest `scores` (B, N) stay, in their current order (EViT keeps
    top-k order; order does not matter to attention, and keeping it makes keep = N the identity).
    The others are fused into one token appended last: their mean weighted by their scores (EViT's
    attentive fusion, normalised here so the fused token is an average). In the state every
    dropped position points at that fused token, so a final `state.unmerge` gives each dropped
    position the fused token of the step that dropped it, followed through later steps (a fused
    token is an ordinary token afterwards and may itself be dropped into a later fused token).
    """
    B, N, _ = x.shape
    if not 0 < keep <= N:
        raise ValueError(f"EViT must keep between 1 and {N} tokens; got {keep}")
    if keep == N:
        return x, state
    kept = scores.topk(keep, dim=1).indices.sort(dim=1).values  # (B, keep) in current order
    assign = torch.full((B, N), keep, dtype=torch.long, device=x.device)
    assign.scatter_(1, kept, torch.arange(keep, device=x.device).expand(B, keep))
    weights = torch.where(assign == keep, scores, torch.ones_like(scores))  # kept: weight 1
    return weighted_regroup(x, state, assign, keep + 1, weights, "evit")


# ----------------------------------------------------------------------------------------------
# ToMe, dense form


def tome_dense_count(num_tokens: int, ratio: float) -> int:
    """Return the merges of one dense-ToMe sub-block: floor(ratio * N), at most N // 2."""
    if not 0.0 <= ratio <= 0.5:
        raise ValueError(f"dense ToMe merge ratio must lie in [0, 0.5]; got {ratio}")
    num_tokens = int(num_tokens)  # an int also while fvcore traces
    return min(int(ratio * num_tokens + 1e-9), num_tokens // 2)


def tome_dense_merge(x: Tensor, ratio: float) -> tuple[Tensor, MergeState]:
    """Return (merged patch tokens (B, N - r, C), state) for one sub-block input x (B, N, C).

    ELViT's dense port of ToMe: r = floor(ratio * N) bipartite merges (cosine similarity of the
    sub-block input itself, size-weighted means), computed afresh for every sub-block from the
    identity state. The caller runs the sub-block on the merged tokens and returns them to full
    resolution with `state.unmerge`; `state.sizes` gives ToMe's proportional-attention bias.
    """
    B, N, _ = x.shape
    start = MergeState.start(B, N, device=x.device, dtype=x.dtype)
    return tome_merge(x, start, r=tome_dense_count(N, ratio))


def size_bias(state: MergeState, prefix: int = 1) -> Tensor | None:
    """Return the (B, 1, 1, prefix + N') log-size attention bias of ToMe, or None without merges."""
    if state.num_tokens == state.num_original:
        return None
    ones = state.sizes.new_ones(state.batch_size, prefix)
    return torch.cat([ones, state.sizes], dim=1).log()[:, None, None, :]


# ----------------------------------------------------------------------------------------------
# ACT


def strided_init(points: Tensor, k: int) -> Tensor:
    """Return (M, k, d) initial centres: the points at positions floor(i * N / k), i < k."""
    N = points.shape[1]
    idx = torch.arange(k, device=points.device) * N // k
    return points[:, idx]


def kmeans(points: Tensor, k: int, iters: int = 3) -> tuple[Tensor, Tensor]:
    """Return (centroids (M, k, d), assignment (M, N) long) of k-means on points (M, N, d).

    Initialised with evenly strided points (deterministic, no sequential seeding), then `iters`
    Lloyd rounds: assign every point to its nearest centre, move every centre to the mean of its
    members (a centre without members stays where it is). The returned assignment is the one the
    returned centroids were computed from, so every centroid is its members' exact mean.
    """
    M, N, d = points.shape
    if not 1 <= k <= N:
        raise ValueError(f"k-means needs 1 <= k <= N = {N}; got k = {k}")
    if iters < 1:
        raise ValueError(f"k-means needs at least one iteration; got {iters}")
    centres = strided_init(points, k)
    offsets = (torch.arange(M, device=points.device) * k).unsqueeze(1)
    flat_points = points.reshape(M * N, d)
    for _ in range(iters):
        assign = squared_distances(points, centres).argmin(dim=-1)  # (M, N)
        flat = (assign + offsets).reshape(-1)
        counts = points.new_zeros(M * k).index_add(0, flat, points.new_ones(M * N))
        sums = points.new_zeros(M * k, d).index_add(0, flat, flat_points)
        mean = sums / counts.clamp_min(1.0)[:, None]
        centres = torch.where(counts[:, None] > 0, mean, centres.reshape(M * k, d)).reshape(M, k, d)
    return centres, assign


def clustered_attention(
    q: Tensor, k: Tensor, v: Tensor, clusters: int, iters: int = 3, exact: int = 1
) -> Tensor:
    """Return (B, heads, N, d) attention output with clustered queries (ACT).

    q, k, v: (B, heads, N, d). The first `exact` queries (the class token) attend exactly; the
    other N - exact queries of every head are grouped into `clusters` clusters by k-means
    (`kmeans`), each centroid query attends to all keys (softmax(c k^T / sqrt(d)) v), and every
    query receives its centroid's output. Keys and values are untouched. Choice: ACT hashes
    queries with multi-round LSH and gets an adaptive cluster count; k-means with a fixed count
    is used here so the reduction is a fixed, configurable setting and batches keep one shape.
    """
    B, H, N, d = q.shape
    head, rest = q[:, :, :exact], q[:, :, exact:]
    centres, assign = kmeans(rest.reshape(B * H, N - exact, d), clusters, iters)
    queries = torch.cat([head, centres.reshape(B, H, clusters, d)], dim=2)  # (B, H, exact + K, d)
    out = F.scaled_dot_product_attention(queries, k, v)
    index = assign.reshape(B, H, N - exact, 1).expand(-1, -1, -1, v.shape[-1])
    members = out[:, :, exact:].gather(2, index)  # (B, H, N - exact, d)
    return torch.cat([out[:, :, :exact], members], dim=2)


# ----------------------------------------------------------------------------------------------
# ELViT


def cluster_grid_side(side: int, setting: float, reference: int = 40) -> int:
    """Return the cluster-grid side for a token-grid side: round(setting * side / reference), >= 1.

    ELViT's Segmenter ViT-L settings are cluster grids for a 40 x 40 token grid (640 crop); other
    grids get the same fraction of their side.
    """
    return max(1, min(side, round(setting * side / reference)))


def initial_labels(grid: tuple[int, int], cluster_grid: tuple[int, int], device=None) -> Tensor:
    """Return (N, 2) long: the (row, col) of the cluster cell each token starts in (nearest)."""
    pos = grid_coords(grid, device)  # floor(pos * h' / h) in exact integer arithmetic
    return pos * torch.tensor(cluster_grid, device=device) // torch.tensor(grid, device=device)


def local_window(
    grid: tuple[int, int], cluster_grid: tuple[int, int], window: int, device=None
) -> Tensor:
    """Return (N, K) bool: centre j lies in the window x window cells around token i's start."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"the ELViT window must be an odd positive size; got {window}")
    labels = initial_labels(grid, cluster_grid, device)  # (N, 2)
    centres = grid_coords(cluster_grid, device)  # (K, 2)
    gap = (labels[:, None, :] - centres[None, :, :]).abs().amax(-1)
    return gap <= window // 2


def soft_cluster(
    x: Tensor,
    grid: tuple[int, int],
    cluster_grid: tuple[int, int],
    iters: int = 5,
    window: int = 5,
    temperature: float = 100.0,
) -> Tensor:
    """Return (B, K, C) cluster tokens of x (B, N, C) on a (h, w) grid, K = h' * w' (ELViT).

    Centres start as the average pooling of the token grid to (h', w'). Each of `iters` rounds
    computes every token's soft assignment to the centres inside the window x window cells around
    its start cell, softmax(-|x - c|^2 / temperature) over that window, and moves each centre to
    the assignment-weighted mean of its tokens. temperature=100 corresponds to the 0.01 factor on
    squared distances of the released Expedit code (its SAM port); it is not tuned here.
    """
    B, N, C = x.shape
    h, w = grid
    centres = F.adaptive_avg_pool2d(x.transpose(1, 2).reshape(B, C, h, w), cluster_grid)
    centres = centres.flatten(2).transpose(1, 2)  # (B, K, C)
    outside = ~local_window(grid, cluster_grid, window, x.device)  # (N, K)
    for _ in range(iters):
        logits = -squared_distances(x, centres) / temperature  # (B, N, K)
        affinity = logits.masked_fill(outside, -float("inf")).softmax(dim=-1)
        mass = affinity.sum(dim=1).clamp_min(1e-12)  # (B, K)
        centres = (affinity.transpose(1, 2) @ x) / mass[..., None]
    return centres


def knn_reconstruct(
    saved: Tensor,
    anchors: Tensor,
    clustered: Tensor,
    k: int = 20,
    temperature: float = 100.0,
    weighting: str = "softmax",
) -> Tensor:
    """Return (B, N, C) full-resolution tokens rebuilt from clustered tokens (ELViT).

    saved: (B, N, C) full-resolution tokens kept at the clustering layer; anchors: (B, K, C) the
    cluster tokens made from them there; clustered: (B, K, C) the same cluster tokens after the
    remaining layers. Each token takes the weighted sum of the `clustered` tokens of its k most
    similar anchors (similarity -|saved - anchor|^2 / temperature). weighting="softmax": softmax
    over those k (the paper's description; default); "l2": exp(similarity) L2-normalised over the
    k, as the released Expedit code does.
    """
    K = anchors.shape[1]
    k = min(k, K)
    logits = -squared_distances(saved, anchors) / temperature  # (B, N, K)
    top, idx = logits.topk(k, dim=-1)
    if weighting == "softmax":
        weights = top.softmax(dim=-1)
    elif weighting == "l2":
        weights = F.normalize((top - top[..., :1]).exp(), dim=-1)  # shift-invariant after norm
    else:
        raise ValueError(f"ELViT reconstruction weighting must be softmax or l2; got {weighting!r}")
    dense = torch.zeros_like(logits).scatter(-1, idx, weights)  # (B, N, K), k non-zeros per row
    return dense @ clustered


# ----------------------------------------------------------------------------------------------
# AiluRus


def density_peak_clusters(
    x: Tensor,
    grid: tuple[int, int],
    num_clusters: int,
    k: int = 5,
    radius: int = 2,
    assign_radius: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Return (assignment (B, N) -> [0, K), centres (B, K) positions) of spatially aware DPC.

    On x (B, N, C) over a (h, w) grid, with d_ij the RMS per-channel distance |x_i - x_j| / sqrt(C):
    - local density rho_i = exp(-mean of d_ij^2 over i's k nearest neighbours in feature space
      among the tokens within `radius` rows/cols of i (the spatial neighbourhood; i excluded);
    - distance to higher density delta_i = min d_ij over tokens j of higher density (ties broken
      by position), and max_j d_ij for the densest token;
    - the K tokens with the highest rho * delta are the centres (ranked in log space, so no
      underflow); every token joins its nearest centre in feature space (with `assign_radius`,
      only centres within that many rows/cols compete, falling back to all centres when none is
      that close); every centre joins its own cluster.
    Centres are returned in raster order, so cluster slot j is the j-th centre by position.
    """
    B, N, C = x.shape
    if not 1 <= num_clusters <= N:
        raise ValueError(f"AiluRus needs 1 <= clusters <= N = {N}; got {num_clusters}")
    feats = x.detach().float() / math.sqrt(C)
    dist2 = squared_distances(feats, feats)  # (B, N, N)
    near = chebyshev_within(grid, radius, x.device)
    near &= ~torch.eye(N, dtype=torch.bool, device=x.device)  # a token is not its own neighbour
    kk = max(1, min(k, int(near.sum(1).min())))
    knn = dist2.masked_fill(~near, float("inf")).topk(kk, dim=-1, largest=False).values
    log_rho = -knn.mean(dim=-1)  # (B, N)
    order = torch.arange(N, device=x.device)
    higher = (log_rho[:, None, :] > log_rho[:, :, None]) | (
        (log_rho[:, None, :] == log_rho[:, :, None]) & (order[None, :] < order[:, None])
    )  # higher[b, i, j]: token j is denser than token i
    dist = dist2.sqrt()
    delta = dist.masked_fill(~higher, float("inf")).amin(dim=-1)
    delta = torch.where(torch.isinf(delta), dist.amax(dim=-1), delta)
    score = log_rho + delta.clamp_min(1e-12).log()
    centres = score.topk(num_clusters, dim=1).indices.sort(dim=1).values  # (B, K)
    to_centre = dist2.gather(2, centres[:, None, :].expand(B, N, num_clusters))  # (B, N, K)
    if assign_radius is not None:
        close = chebyshev_within(grid, assign_radius, x.device)[:, centres].permute(1, 0, 2)
        close = close | ~close.any(dim=-1, keepdim=True)  # no centre close by: all compete
        to_centre = to_centre.masked_fill(~close, float("inf"))
    assign = to_centre.argmin(dim=-1)  # (B, N)
    slots = torch.arange(num_clusters, device=x.device).expand(B, num_clusters)
    return assign.scatter(1, centres, slots), centres


def dpc_merge(
    x: Tensor,
    state: MergeState,
    grid: tuple[int, int],
    num_clusters: int,
    k: int = 5,
    radius: int = 2,
    assign_radius: int | None = None,
) -> tuple[Tensor, MergeState]:
    """Return (cluster tokens (B, K, C), state): AiluRus clustering of x (B, N, C), cluster means.

    The tokens must still be in raster order on `grid` (a single clustering step). `state.unmerge`
    then gives every original position its cluster's token (AiluRus' reconstruction).
    """
    if not state.in_raster_order:
        raise ValueError("AiluRus clustering needs the tokens in raster order (no earlier merge)")
    assign, _ = density_peak_clusters(x, grid, num_clusters, k, radius, assign_radius)
    step = MergeStep("ailurus", x.shape[1], num_clusters)
    return apply_assignment(x, state, assign, num_clusters, step)
