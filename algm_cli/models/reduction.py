"""Segmenter with another token-reduction method: EViT, ACT, ELViT, AiluRus, dense ToMe (issue 9).

The encoder forward here is its own block loop over the modules of `ViTEncoder` (patch
embedding, class token, position embeddings, timm blocks, final norm) and `models/blocks.py`, so a
`ReducedSegmenter` holds exactly the parameters of a `Segmenter` and loads the same checkpoints.
The method-specific tensor work lives in `algm_cli.merge.baselines`.

Every spec but AiluRus (no public code) has a `variant`: "released" (the default) runs the
Expedit-Segmenter release's rules (`algm_cli.models.expedit`, `algm_cli.merge.expedit`); "paper"
runs the rules below, which follow the papers' text.

Layers are 1-based. Where each method acts in layer l:
- evit: inside block l, between the attention residual and the MLP (as EViT), using that
  layer's class-token attention; repeated in every layer of `layers`.
- tome_dense: in every block l >= start, around each sub-block (merge -> attention -> unmerge,
  merge -> MLP -> unmerge); the residual stream stays at full resolution.
- act: in every block l >= start, the attention's queries are clustered.
- elvit / ailurus: on the input of block l (after l - 1 full-resolution blocks), once.
The decoder always sees the full token grid: ELViT rebuilds it with its k-NN reconstruction
layer, EViT and AiluRus copy every merged token back to the positions it stands for, before the
final norm. Statistics map "L<l>:<method>" to the patch tokens (ACT: queries) that layer
processes, as a fraction of the original count.

Default layers and the choices made where the sources are silent: docs/MODELS.md.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from ..merge import MergeState
from ..merge.baselines import (
    clustered_attention, cls_attention, dpc_merge, evit_fuse, evit_keep_count,
    knn_reconstruct, size_bias, soft_cluster, tome_dense_merge,
)
from . import expedit
from .base import MergeStats
from .schedule import NO_MERGE
from .registry import BuildRequest, register_merges
from .segmenter import Segmenter, segmenter_options
from .blocks import (
    attention, attention_output, attention_residual, embed, full_block, mlp_residual, pad_to_patch,
    resize_crop, split_qkv, with_cls,
)
from .reduction_specs import (
    BASELINE_METHODS, VARIANTS, ACTSpec, AiluRusSpec, ELViTSpec, EViTSpec, Reduction,
    ToMeDenseSpec, reduction_from_config,
)
from .vit import ViTEncoder

def fraction_count(num_tokens: int, fraction: float) -> int:
    """Return round(fraction * N), clamped to 1..N."""
    num_tokens = int(num_tokens)  # an int also while fvcore traces (sizes are tensors then)
    return max(1, min(num_tokens, round(fraction * num_tokens)))


# ----------------------------------------------------------------------------------------------
# one encoder loop per method; each returns (x (B, 1 + N, C) at full resolution, stats)


def encode_evit(
    encoder: ViTEncoder, x: Tensor, grid, spec: EViTSpec
) -> tuple[Tensor, MergeStats]:
    """Run the blocks with EViT's keep-and-fuse steps; return full-grid tokens and statistics."""
    state = MergeState.start(x.shape[0], x.shape[1] - 1, device=x.device, dtype=x.dtype)
    stats: MergeStats = {}
    for layer, blk in enumerate(encoder.blocks, start=1):
        if layer not in spec.layers:
            x = full_block(blk, x)
            continue
        x, (q, k, _) = attention_residual(blk, x)
        keep = evit_keep_count(state.num_tokens, spec.keep_rate)
        patches, state = evit_fuse(x[:, 1:], state, cls_attention(q, k), keep)
        x = mlp_residual(blk, with_cls(x[:, :1], patches))
        stats[f"L{layer}:evit"] = state.num_tokens / state.num_original
    return with_cls(x[:, :1], state.unmerge(x[:, 1:])), stats


def dense_attention(
    blk: nn.Module, x: Tensor, ratio: float, proportional: bool
) -> tuple[Tensor, MergeState]:
    """Return (attention branch (B, 1 + N, C) computed on merged tokens and unmerged, state)."""
    h = blk.norm1(x)
    merged, state = tome_dense_merge(h[:, 1:], ratio)
    bias = size_bias(state) if proportional else None
    out, _ = attention(blk.attn, with_cls(h[:, :1], merged), bias)
    return with_cls(out[:, :1], state.unmerge(out[:, 1:])), state


def dense_mlp(blk: nn.Module, x: Tensor, ratio: float) -> Tensor:
    """Return the MLP branch (B, 1 + N, C) computed on merged tokens and unmerged."""
    h = blk.norm2(x)
    merged, state = tome_dense_merge(h[:, 1:], ratio)
    out = blk.mlp(with_cls(h[:, :1], merged))
    return with_cls(out[:, :1], state.unmerge(out[:, 1:]))


def encode_tome_dense(
    encoder: ViTEncoder, x: Tensor, grid, spec: ToMeDenseSpec
) -> tuple[Tensor, MergeStats]:
    """Run the blocks with dense ToMe around every sub-block from `start`; return tokens, stats."""
    stats: MergeStats = {}
    for layer, blk in enumerate(encoder.blocks, start=1):
        if layer < spec.start:
            x = full_block(blk, x)
            continue
        out, state = dense_attention(blk, x, spec.ratio, spec.proportional_attention)
        x = x + blk.drop_path1(blk.ls1(out))
        x = x + blk.drop_path2(blk.ls2(dense_mlp(blk, x, spec.ratio)))
        stats[f"L{layer}:tome_dense"] = state.num_tokens / state.num_original
    return x, stats


def act_attention(attn: nn.Module, x: Tensor, clusters: int, iterations: int) -> Tensor:
    """Return the timm Attention output for x (B, 1 + N, C) with ACT's clustered patch queries."""
    B, N, _ = x.shape
    q, k, v = split_qkv(attn, x)  # (B, heads, N, d)
    out = clustered_attention(q, k, v, clusters, iterations, exact=1)
    return attention_output(attn, out.transpose(1, 2).reshape(B, N, -1), x)


def encode_act(encoder: ViTEncoder, x: Tensor, grid, spec: ACTSpec) -> tuple[Tensor, MergeStats]:
    """Run the blocks with ACT attention from `start` on; return tokens and statistics."""
    stats: MergeStats = {}
    num = x.shape[1] - 1
    clusters = fraction_count(num, spec.fraction)
    for layer, blk in enumerate(encoder.blocks, start=1):
        if layer < spec.start:
            x = full_block(blk, x)
            continue
        if clusters < num:
            out = act_attention(blk.attn, blk.norm1(x), clusters, spec.iterations)
            x = mlp_residual(blk, x + blk.drop_path1(blk.ls1(out)))
        else:  # as many clusters as queries: exact attention
            x = full_block(blk, x)
        stats[f"L{layer}:act"] = clusters / num
    return x, stats


def encode_elvit(
    encoder: ViTEncoder, x: Tensor, grid, spec: ELViTSpec
) -> tuple[Tensor, MergeStats]:
    """Run the blocks with ELViT's clustering and k-NN reconstruction; return tokens, stats."""
    stats: MergeStats = {}
    cluster_grid = spec.cluster_grid(grid)
    reduce = cluster_grid != tuple(grid)
    saved = anchors = None
    for layer, blk in enumerate(encoder.blocks, start=1):
        if layer == spec.layer:
            stats[f"L{layer}:elvit"] = cluster_grid[0] * cluster_grid[1] / (grid[0] * grid[1])
        if layer == spec.layer and reduce:  # the full grid as cluster grid: nothing to do
            saved = x[:, 1:]
            anchors = soft_cluster(saved, grid, cluster_grid, spec.iterations, spec.window,
                                   spec.temperature)
            x = with_cls(x[:, :1], anchors)
        x = full_block(blk, x)
    if saved is None:
        return x, stats
    full = knn_reconstruct(saved, anchors, x[:, 1:], spec.k, spec.temperature, spec.weighting)
    return with_cls(x[:, :1], full), stats


def encode_ailurus(
    encoder: ViTEncoder, x: Tensor, grid, spec: AiluRusSpec
) -> tuple[Tensor, MergeStats]:
    """Run the blocks with AiluRus clustering at `layer`; return full-grid tokens and stats."""
    state = MergeState.start(x.shape[0], x.shape[1] - 1, device=x.device, dtype=x.dtype)
    stats: MergeStats = {}
    clusters = fraction_count(state.num_original, spec.fraction)
    for layer, blk in enumerate(encoder.blocks, start=1):
        if layer == spec.layer and clusters < state.num_original:
            patches, state = dpc_merge(x[:, 1:], state, grid, clusters, spec.k, spec.radius,
                                       spec.assign_radius)
            x = with_cls(x[:, :1], patches)
        if layer == spec.layer:
            stats[f"L{layer}:ailurus"] = clusters / state.num_original
        x = full_block(blk, x, size_bias(state) if spec.proportional_attention else None)
    return with_cls(x[:, :1], state.unmerge(x[:, 1:])), stats


ENCODERS = {
    "evit": encode_evit,
    "tome_dense": encode_tome_dense,
    "act": encode_act,
    "elvit": encode_elvit,
    "ailurus": encode_ailurus,
}


def reduced_encode(
    encoder: ViTEncoder, images: Tensor, spec: Reduction
) -> tuple[Tensor, Tensor, tuple[int, int], MergeStats, expedit.Restore]:
    """Return (patch tokens (B, N', C) after the final norm, class token (B, 1, C), grid,
    statistics, restore) of `encoder` on images (B, 3, H, W) reduced as `spec` says.

    N' = N (the full grid) unless `restore` is not None: then it maps the decoder's scores of the
    N' tokens to the N positions (released ELViT).
    """
    x, grid = embed(encoder, images)
    if getattr(spec, "variant", "paper") == "released":
        x, stats, restore = expedit.ENCODERS[spec.method](encoder, x, grid, spec)
        return x[:, 1:], x[:, :1], grid, stats, restore
    x, stats = ENCODERS[spec.method](encoder, x, grid, spec)
    x = encoder.norm(x)
    return x[:, 1:], x[:, :1], grid, stats, None


# ----------------------------------------------------------------------------------------------
# the model and its config


class ReducedSegmenter(Segmenter):
    """Segmenter whose encoder applies a baseline token reduction (same parameters as Segmenter)."""

    def __init__(self, reduction: Reduction, backbone: str = "vit_s", num_classes: int = 150,
                 decoder: str = "mask", img_size: int = 512, **segmenter_kwargs) -> None:
        super().__init__(backbone, num_classes, decoder, img_size, NO_MERGE, **segmenter_kwargs)
        reduction.check(self.encoder.depth)
        self.reduction = reduction

    def forward_with_stats(self, images: Tensor) -> tuple[Tensor, MergeStats]:
        """Return (logits (B, K, H, W), per-layer token fractions of the reduction)."""
        padded = pad_to_patch(images)
        tokens, _, (gh, gw), stats, restore = reduced_encode(self.encoder, padded, self.reduction)
        scores = self.decoder(tokens)  # (B, N', K)
        scores = scores if restore is None else restore(scores)  # (B, N, K) on the full grid
        masks = scores.transpose(1, 2).reshape(images.shape[0], self.num_classes, gh, gw)
        return resize_crop(masks, padded.shape[-2:], images.shape[-2:]), stats


def build_reduced(merge: Mapping, backbone: str = "vit_s", num_classes: int = 150,
                  decoder: str = "mask", img_size: int = 512,
                  **segmenter_kwargs) -> ReducedSegmenter:
    """Return a ReducedSegmenter for the `merge` config of a baseline (see reduction_from_config).

    segmenter_kwargs go to Segmenter (drop_path, pretrained, decoder_dropout, decoder_layers).
    """
    return ReducedSegmenter(reduction_from_config(merge, backbone), backbone, num_classes,
                            decoder, img_size, **segmenter_kwargs)


def build_reduced_model(request: BuildRequest) -> ReducedSegmenter:
    """Return the ReducedSegmenter of `request` (an active baseline merge method)."""
    return build_reduced(dict(request.merge), request.backbone, int(request.num_classes),
                         **segmenter_options(request))


register_merges("segmenter", BASELINE_METHODS, build_reduced_model)


__all__ = [
    "ACTSpec", "AiluRusSpec", "BASELINE_METHODS", "ELViTSpec", "EViTSpec", "ReducedSegmenter",
    "Reduction", "ToMeDenseSpec", "VARIANTS", "build_reduced", "fraction_count", "reduced_encode",
    "reduction_from_config",
]
