"""Encoder loops of the baselines as the Expedit-Segmenter release runs them (`variant=released`).

Each loop takes a `ViTEncoder`, the embedded tokens x (B, 1 + N, C) with the class token first,
the token grid and a spec from `algm_cli.models.reduction`, and returns
(x (B, 1 + N', C) after the final norm, stats, restore): the release applies the final
LayerNorm before any reconstruction, so these loops apply it themselves. `restore` is None or
maps the decoder's per-token scores (B, N', K) to the full grid (B, N, K) (ELViT: the released
config reconstructs the mask logits, see `encode_elvit`). The tensor rules live in
`algm_cli.merge.expedit`; layers are 1-based as in reduction.py. Release files:
mmseg/models/backbones/{hourglass_vit,evit,tome_vit,vit_act}.py and mmseg/models/segmentors/
encoder_decoder.py of github.com/Expedit-LargeScale-Vision-Transformer/Expedit-Segmenter.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..merge.baselines import cls_attention, soft_cluster
from ..merge.expedit import (
    act_released_attention,
    evit_released_fill,
    evit_released_keep,
    evit_released_prune,
    knn_restore,
    slot_gather,
    slot_means,
    tome_released_count,
    tome_released_plan,
)
from .base import MergeStats
from .blocks import attention, attention_output, full_block, mlp_residual, split_qkv, with_cls
from .vit import ViTEncoder

Restore = Callable[[Tensor], Tensor] | None


def attn_branch(blk: nn.Module, h: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
    """Return (attention branch of a timm block on normed tokens h, (q, k, v))."""
    out, qkv = attention(blk.attn, h, None)
    return blk.drop_path1(blk.ls1(out)), qkv


def mlp_branch(blk: nn.Module, h: Tensor) -> Tensor:
    """Return the MLP branch of a timm block on normed tokens h."""
    return blk.drop_path2(blk.ls2(blk.mlp(h)))


def encode_elvit(encoder: ViTEncoder, x: Tensor, grid, spec) -> tuple[Tensor, MergeStats, Restore]:
    """ELViT as released: cluster the input of `spec.layer`, final norm, then reconstruct.

    Clustering with the factor 0.02 (temperature 50). The released Segmenter config leaves the
    reconstruction `location` at -1, which the backbone loop never reaches: the decoder reads the
    cluster tokens and the segmentor rebuilds its mask logits on the full grid with the k-NN
    weights (k 20, factor 0.02) of the clustering layer's tokens to their cluster centres
    (spec.reconstruct="logits", the default). "tokens" rebuilds the normed tokens instead (the
    release with location = last layer).
    """
    cluster_grid = spec.cluster_grid(grid)
    stats: MergeStats = {}
    saved = anchors = None
    for layer, blk in enumerate(encoder.blocks, start=1):
        if layer == spec.layer:
            stats[f"L{layer}:elvit"] = cluster_grid[0] * cluster_grid[1] / (grid[0] * grid[1])
            if cluster_grid != tuple(grid):
                saved = x[:, 1:]
                anchors = soft_cluster(saved, grid, cluster_grid, spec.iterations, spec.window,
                                       spec.temperature)
                x = with_cls(x[:, :1], anchors)
        x = full_block(blk, x, None)
    x = encoder.norm(x)
    if saved is None:
        return x, stats, None
    factor = 1.0 / spec.temperature
    if spec.reconstruct == "tokens":
        full = knn_restore(saved, anchors, x[:, 1:], spec.k, factor)
        return with_cls(x[:, :1], full), stats, None
    return x, stats, lambda scores: knn_restore(saved, anchors, scores, spec.k, factor)


def encode_evit(encoder: ViTEncoder, x: Tensor, grid, spec) -> tuple[Tensor, MergeStats, Restore]:
    """EViT as released: prune between attention and MLP in `spec.layers`, fill back at the end.

    keep = ceil(keep_rate * tokens) counted over the patch tokens plus an earlier fused token;
    the fused token is an unnormalised attention-weighted sum; after the final norm every step is
    undone last to first, each dropping its fused token and filling dropped positions with their
    nearest kept token (`evit_released_fill`).
    """
    stats: MergeStats = {}
    steps = []  # (tokens before the step (B, n, C), kept positions (B, keep))
    num = x.shape[1] - 1
    for layer, blk in enumerate(encoder.blocks, start=1):
        if layer not in spec.layers:
            x = full_block(blk, x, None)
            continue
        out, (q, k, _) = attn_branch(blk, blk.norm1(x))
        x = x + out
        keep = evit_released_keep(x.shape[1] - 1, spec.keep_rate)
        if keep < x.shape[1] - 1:
            patches, kept = evit_released_prune(x[:, 1:], cls_attention(q, k), keep)
            steps.append((x[:, 1:], kept))
            x = with_cls(x[:, :1], patches)
        x = mlp_residual(blk, x)
        stats[f"L{layer}:evit"] = (x.shape[1] - 1) / num
    x = encoder.norm(x)
    patches = x[:, 1:]
    for before, kept in reversed(steps):
        patches = evit_released_fill(before, kept, patches[:, :-1])
    return with_cls(x[:, :1], patches), stats, None


def dense_branch(branch: Callable[[Tensor], Tensor], h: Tensor, ratio: float) -> Tensor:
    """Return branch(h) computed on h (B, T, C) merged by released dense ToMe, then unmerged."""
    slot, num = tome_released_plan(h, ratio)
    if num == h.shape[1]:
        return branch(h)
    return slot_gather(branch(slot_means(h, slot, num)), slot)


def encode_tome_dense(encoder: ViTEncoder, x: Tensor, grid, spec
                      ) -> tuple[Tensor, MergeStats, Restore]:
    """Dense ToMe as released: every sub-block from `spec.start` runs on its merged input.

    r = int(ratio * T) of the T tokens with the class token (at position 0 of A), plain means,
    no proportional attention (`tome_released_plan`).
    """
    stats: MergeStats = {}
    for layer, blk in enumerate(encoder.blocks, start=1):
        if layer < spec.start:
            x = full_block(blk, x, None)
            continue
        attend = lambda h: attn_branch(blk, h)[0]  # noqa: E731, B023
        x = x + dense_branch(attend, blk.norm1(x), spec.ratio)
        x = x + dense_branch(lambda h: mlp_branch(blk, h), blk.norm2(x), spec.ratio)  # noqa: B023
        merged = tome_released_count(x.shape[1], spec.ratio)
        stats[f"L{layer}:tome_dense"] = (x.shape[1] - 1 - merged) / (x.shape[1] - 1)
    return encoder.norm(x), stats, None


def act_attention(attn: nn.Module, h: Tensor, rounds: int, generator: torch.Generator
                  ) -> tuple[Tensor, Tensor]:
    """Return (timm Attention output on normed h (B, T, C) with ACT's released query hashing,
    clusters per (image, head) (B, H))."""
    B, T, C = h.shape
    q, k, v = split_qkv(attn, h)  # (B, heads, T, d)
    out, clusters = act_released_attention(q, k, v, rounds, generator)
    return attention_output(attn, out.transpose(1, 2).reshape(B, T, C), h), clusters


def encode_act(encoder: ViTEncoder, x: Tensor, grid, spec) -> tuple[Tensor, MergeStats, Restore]:
    """ACT as released: from `spec.start` on, every query (class query included) is hashed with
    `spec.hashes` E2LSH rounds into a variable number of groups per image and head.

    The hash projections come from a generator seeded with `spec.seed` at every forward and drawn
    layer after layer (the release draws from the global RNG, on the GPU). Statistics: the mean
    number of groups per image and head over the 1 + N queries.
    """
    generator = torch.Generator().manual_seed(spec.seed)
    stats: MergeStats = {}
    num = x.shape[1]
    for layer, blk in enumerate(encoder.blocks, start=1):
        if layer < spec.start:
            x = full_block(blk, x, None)
            continue
        out, clusters = act_attention(blk.attn, blk.norm1(x), spec.hashes, generator)
        x = mlp_residual(blk, x + blk.drop_path1(blk.ls1(out)))
        stats[f"L{layer}:act"] = float(clusters.float().mean()) / num
    return encoder.norm(x), stats, None


ENCODERS = {"elvit": encode_elvit, "evit": encode_evit, "tome_dense": encode_tome_dense,
            "act": encode_act}
