"""The baselines as the Expedit-Segmenter release computes them (`variant=released`).

ELViT's Segmenter release (github.com/Expedit-LargeScale-Vision-Transformer/Expedit-Segmenter,
Liang et al., NeurIPS 2022) also ships its EViT, ACT and dense-ToMe ports; the ALGM paper's
baseline numbers come from those settings. Pure functions re-deriving that arithmetic (no code
copied); `algm_cli.models.reduction` places them in the ViT. The paper-text rules stay in
`algm_cli.merge.baselines` (`variant=paper`). The release file each rule follows:

- `knn_weights`: mmseg/ops/reconstruction.py TokenReconstructionBlock: weights exp(-f * |a - c|^2)
  over all cluster tokens, every weight below the k-th largest set to 0 (ties kept), the row
  L2-normalised. ELViT: f = 0.02, k = 20; EViT's fill: f = 0.005, k = 1.
- ELViT clustering: mmseg/ops/cluster.py, which is `baselines.soft_cluster` with
  temperature 1 / 0.02 = 50.
- `evit_released_prune` / `evit_released_fill`: mmseg/models/backbones/evit.py (EViT block and
  EViT.reconstruct).
- `tome_released_plan`: mmseg/ops/tome/tome/merge.py bipartite_soft_matching + merge_wavg as
  patched into every sub-block by mmseg/ops/tome/tome/patch/mmseg.py.
- `act_hashes` / `act_groups` / `act_released_attention`: mmseg/ops/ACT/ada_clustering_attention.py
  and the CUDA kernel extensions/ada_cluster.cu, in plain PyTorch with a seeded generator.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .baselines import squared_distances

ELVIT_FACTOR = 0.02  # the released Segmenter config: clustering and reconstruction `temperture`
ELVIT_RECON_K = 20
EVIT_FILL_FACTOR = 0.005  # the released EViT configs: reconstruction_cfg temperture, k = 1
ACT_BUCKET = 8.0  # E2LSH bucket width r of ACT's _compute_hashes


# ----------------------------------------------------------------------------------------------
# k-NN reconstruction (ELViT; EViT's fill with k = 1)


def knn_weights(feats: Tensor, anchors: Tensor, k: int, factor: float) -> Tensor:
    """Return (B, N, K) reconstruction weights of feats (B, N, C) from anchors (B, K, C).

    w = exp(-factor * squared distance), unshifted (so far tokens underflow to 0 as in the
    release); entries below the row's k-th largest w are zeroed (ties with it stay, as the
    release's `>=` mask), and each row is divided by its L2 norm (F.normalize, eps 1e-12: a row
    of zeros stays zero).
    """
    w = torch.exp(-factor * squared_distances(feats, anchors))  # (B, N, K)
    kth = w.topk(min(k, w.shape[-1]), dim=-1).values[..., -1:]
    return F.normalize(torch.where(w >= kth, w, torch.zeros_like(w)), dim=-1)


def knn_restore(feats: Tensor, anchors: Tensor, values: Tensor, k: int = ELVIT_RECON_K,
                factor: float = ELVIT_FACTOR) -> Tensor:
    """Return (B, N, D): every token of feats (B, N, C) rebuilt from values (B, K, D) of anchors."""
    return knn_weights(feats, anchors, k, factor) @ values


# ----------------------------------------------------------------------------------------------
# EViT


def evit_released_keep(num_tokens: int, keep_rate: float) -> int:
    """Return ceil(keep_rate * num_tokens) as released (no tolerance: ceil(0.55 * 100) = 56)."""
    return min(int(num_tokens), math.ceil(keep_rate * int(num_tokens)))


def evit_released_prune(x: Tensor, scores: Tensor, keep: int) -> tuple[Tensor, Tensor]:
    """Return (tokens (B, keep + 1, C), kept (B, keep)) of EViT's released step on x (B, N, C).

    The `keep` tokens of highest class attention `scores` (B, N), highest first, then one fused
    token: the sum of the other tokens weighted by their scores, not divided by the weight total.
    """
    B, N, C = x.shape
    kept = scores.topk(keep, dim=1, largest=True, sorted=True).indices  # (B, keep)
    dropped = torch.ones_like(scores).scatter(1, kept, 0.0)  # 1 on the dropped positions
    fused = (x * (scores * dropped)[..., None]).sum(dim=1, keepdim=True)  # (B, 1, C)
    return torch.cat([x.gather(1, kept[..., None].expand(B, keep, C)), fused], dim=1), kept


def evit_released_fill(before: Tensor, kept: Tensor, kept_out: Tensor,
                       factor: float = EVIT_FILL_FACTOR) -> Tensor:
    """Return (B, N, D): the tokens of one EViT step brought back to its N input positions.

    before: (B, N, C) the step's input tokens; kept: (B, keep) the kept positions (in the order of
    kept_out); kept_out: (B, keep, D) their outputs (the fused token already dropped). A kept
    position takes its output; a dropped one the output of its nearest kept token by `before`
    (`knn_weights` with k = 1: weight 1, or 0 where exp(-factor * d) underflows). The release
    writes batch element 0 only; here every element is treated as it treats element 0.
    """
    B, N, C = before.shape
    keep = kept.shape[1]
    if keep == N:
        return kept_out.new_zeros(B, N, kept_out.shape[-1]).scatter(
            1, kept[..., None].expand_as(kept_out), kept_out)
    ones = torch.ones_like(kept).float()
    is_kept = torch.zeros(B, N, device=before.device).scatter(1, kept, ones)
    dropped = is_kept.argsort(dim=1, stable=True)[:, : N - keep]  # ascending, as complement_idx
    gather = lambda t, i: t.gather(1, i[..., None].expand(*i.shape, t.shape[-1]))  # noqa: E731
    fill = knn_weights(gather(before, dropped), gather(before, kept), 1, factor) @ kept_out
    out = kept_out.new_zeros(B, N, kept_out.shape[-1])
    out = out.scatter(1, kept[..., None].expand_as(kept_out), kept_out)
    return out.scatter(1, dropped[..., None].expand_as(fill), fill)


# ----------------------------------------------------------------------------------------------
# dense ToMe


def tome_released_count(num_tokens: int, ratio: float) -> int:
    """Return the released dense-ToMe merges for num_tokens tokens (class token included).

    int(num_tokens * ratio) (Python truncation, no tolerance), at most (num_tokens - 1) // 2.
    """
    num_tokens = int(num_tokens)
    return max(0, min(int(num_tokens * ratio), (num_tokens - 1) // 2))


def tome_released_plan(x: Tensor, ratio: float) -> tuple[Tensor, int]:
    """Return (slot (B, T) long, number of slots) of one released dense-ToMe merge of x (B, T, C).

    x holds the class token at position 0. A = positions 0, 2, 4, ..., B = 1, 3, ...; cosine
    similarity of x itself; the class token's row of A is -inf (never merged, stays slot 0).
    The r = `tome_released_count(T, ratio)` A tokens with the best match move into their B
    partner. Slots: the unmerged A tokens in position order, then the B tokens in order.
    """
    B, T, _ = x.shape
    r = tome_released_count(T, ratio)
    if r == 0:
        return torch.arange(T, device=x.device).expand(B, T), T
    metric = x / x.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    scores = metric[:, ::2] @ metric[:, 1::2].transpose(1, 2)  # (B, |A|, |B|)
    scores[:, 0, :] = -math.inf
    best, partner = scores.max(dim=-1)
    order = best.argsort(dim=-1, descending=True)  # (B, |A|)
    src, unmerged = order[:, :r], order[:, r:].sort(dim=-1).values
    num_a, num_b = scores.shape[1], scores.shape[2]
    kept = num_a - r
    a_slot = torch.empty(B, num_a, dtype=torch.long, device=x.device)
    a_slot.scatter_(1, unmerged, torch.arange(kept, device=x.device).expand(B, kept))
    a_slot.scatter_(1, src, kept + partner.gather(1, src))
    slot = torch.empty(B, T, dtype=torch.long, device=x.device)
    slot[:, ::2] = a_slot
    slot[:, 1::2] = kept + torch.arange(num_b, device=x.device)
    return slot, kept + num_b


def slot_means(x: Tensor, slot: Tensor, num_slots: int) -> Tensor:
    """Return (B, num_slots, C): the plain mean of the tokens of x (B, T, C) in every slot."""
    B, T, C = x.shape
    sums = x.new_zeros(B, num_slots, C).scatter_add(1, slot[..., None].expand(B, T, C), x)
    counts = x.new_zeros(B, num_slots).scatter_add(1, slot, x.new_ones(B, T))
    return sums / counts.clamp_min(1.0)[..., None]


def slot_gather(y: Tensor, slot: Tensor) -> Tensor:
    """Return (B, T, C): every position takes its slot's row of y (B, num_slots, C)."""
    return y.gather(1, slot[..., None].expand(*slot.shape, y.shape[-1]))


# ----------------------------------------------------------------------------------------------
# ACT


def act_hashes(q: Tensor, rounds: int, generator: torch.Generator,
               bucket: float = ACT_BUCKET) -> Tensor:
    """Return (M, N) int64 E2LSH codes of queries q (M, N, d), `rounds` hash rounds.

    One Gaussian projection (d, rounds) and one offset in [0, 1) per round, shared by all M rows,
    drawn from `generator` (randn, then rand: the release's order on the global RNG);
    code_j = floor((q . w_j + b_j) / bucket) minus its minimum over the N queries; the rounds are
    packed as sum_j code_j << 2j in int64 (overlaps and overflow included, as released).
    """
    d = q.shape[-1]
    weights = torch.randn(d, rounds, generator=generator).to(q.device, q.dtype)
    offset = torch.rand(rounds, generator=generator).to(q.device, q.dtype)
    codes = torch.floor(((q @ weights).transpose(1, 2) + offset[:, None]) / bucket).long()
    codes = codes - codes.amin(dim=-1, keepdim=True)  # (M, rounds, N)
    shifts = torch.arange(rounds, device=q.device, dtype=torch.long) * 2
    return (codes << shifts[:, None]).sum(dim=1)


def act_groups(hashes: Tensor) -> Tensor:
    """Return (M, N) long: each query's group = rank of its hash among the row's distinct ones."""
    ordered, position = hashes.sort(dim=-1)
    step = (ordered[:, 1:] != ordered[:, :-1]).long()
    ranks = torch.cat([torch.zeros_like(step[:, :1]), step.cumsum(dim=-1)], dim=1)
    return torch.empty_like(ranks).scatter(1, position, ranks)


def act_released_attention(q: Tensor, k: Tensor, v: Tensor, rounds: int,
                           generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Return (output (B, H, N, d), clusters (B, H)) of ACT's released query-clustered attention.

    q, k, v: (B, H, N, d), class query included. Queries scaled by d^-1/2 are hashed
    (`act_hashes`) and grouped (`act_groups`) per (image, head); each group's mean query attends
    to all keys (softmax(c k^T) v); every query receives its group's output.
    """
    B, H, N, d = q.shape
    scaled = (q * d ** -0.5).reshape(B * H, N, d)
    groups = act_groups(act_hashes(scaled, rounds, generator))  # (B*H, N)
    num = int(groups.max()) + 1
    centres = slot_means(scaled, groups, num)  # (B*H, num, d)
    attn = (centres @ k.reshape(B * H, N, d).transpose(1, 2)).softmax(dim=-1)
    out = slot_gather(attn @ v.reshape(B * H, N, d), groups)
    return out.reshape(B, H, N, d), (groups.amax(dim=-1) + 1).reshape(B, H)
