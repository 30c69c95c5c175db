"""Segmenter with another token-reduction method: EViT, ACT, ELViT, AiluRus, dense ToMe (issue 9).

The encoder forward here is its own block loop over the modules of `ViTEncoder` (patch
embedding, class token, position embeddings, timm blocks, final norm) and `models/blocks.py`, so a
`ReducedSegmenter` holds exactly the parameters of a `Segmenter` and loads the same checkpoints.
The method-specific tensor work lives in `algm_cli.merge.baselines`.

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
from dataclasses import dataclass

from torch import Tensor, nn

from ..merge import MergeState
from ..merge.baselines import (
    clustered_attention, cls_attention, cluster_grid_side, dpc_merge, evit_fuse, evit_keep_count,
    knn_reconstruct, size_bias, soft_cluster, tome_dense_merge,
)
from .base import MergeStats
from .schedule import NO_MERGE
from .registry import BuildRequest, register_merges
from .segmenter import Segmenter, segmenter_options
from .blocks import (
    attention, attention_output, attention_residual, embed, full_block, mlp_residual, pad_to_patch,
    resize_crop, split_qkv, with_cls,
)
from .vit import ViTEncoder

BASELINE_METHODS = ("evit", "act", "elvit", "ailurus", "tome_dense")


def _check_layer(layer: int, depth: int, what: str) -> None:
    """Raise ValueError unless 1 <= layer <= depth."""
    if not 1 <= layer <= depth:
        raise ValueError(f"{what} layer {layer} is outside the encoder's layers 1..{depth}")


@dataclass(frozen=True)
class EViTSpec:
    """EViT: in each of `layers`, keep ceil(keep_rate * N) patch tokens, fuse the rest into one."""

    layers: tuple[int, ...]
    keep_rate: float
    method: str = "evit"

    def check(self, depth: int) -> None:
        """Raise ValueError for layers outside 1..depth or a keep rate outside (0, 1]."""
        evit_keep_count(1, self.keep_rate)
        for layer in self.layers:
            _check_layer(layer, depth, "EViT")


@dataclass(frozen=True)
class ToMeDenseSpec:
    """Dense ToMe: from layer `start` on, merge floor(ratio * N) tokens around every sub-block."""

    start: int
    ratio: float
    proportional_attention: bool = True
    method: str = "tome_dense"

    def check(self, depth: int) -> None:
        """Raise ValueError for a start outside 1..depth or a ratio outside [0, 0.5]."""
        _check_layer(self.start, depth, "dense ToMe start")
        if not 0.0 <= self.ratio <= 0.5:
            raise ValueError(f"dense ToMe merge ratio must lie in [0, 0.5]; got {self.ratio}")


@dataclass(frozen=True)
class ACTSpec:
    """ACT: from layer `start`, attend with round(fraction * N) k-means query centroids per head."""

    start: int
    fraction: float
    iterations: int = 3
    method: str = "act"

    def check(self, depth: int) -> None:
        """Raise ValueError for a start outside 1..depth, a bad fraction or no iterations."""
        _check_layer(self.start, depth, "ACT start")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"ACT cluster fraction must lie in (0, 1]; got {self.fraction}")
        if self.iterations < 1:
            raise ValueError(f"ACT needs at least one k-means iteration; got {self.iterations}")


@dataclass(frozen=True)
class ELViTSpec:
    """ELViT: cluster the input of `layer` to a grid of side `side` per `reference` token side."""

    layer: int
    side: float
    reference: int = 40
    iterations: int = 5
    window: int = 5
    temperature: float = 100.0
    k: int = 20
    weighting: str = "softmax"
    method: str = "elvit"

    def check(self, depth: int) -> None:
        """Raise ValueError for a layer outside 1..depth or a non-positive size or temperature."""
        _check_layer(self.layer, depth, "ELViT clustering")
        if self.side <= 0 or self.reference <= 0 or self.temperature <= 0 or self.k < 1:
            raise ValueError("ELViT side, reference grid, temperature and k must be positive")
        if self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"the ELViT window must be an odd positive size; got {self.window}")
        if self.weighting not in ("softmax", "l2"):
            raise ValueError(f"ELViT weighting must be softmax or l2; got {self.weighting!r}")

    def cluster_grid(self, grid: tuple[int, int]) -> tuple[int, int]:
        """Return the (h', w') cluster grid for a (h, w) token grid."""
        return (cluster_grid_side(grid[0], self.side, self.reference),
                cluster_grid_side(grid[1], self.side, self.reference))


@dataclass(frozen=True)
class AiluRusSpec:
    """AiluRus: cluster the input of `layer` into round(fraction * N) density-peak clusters."""

    layer: int
    fraction: float
    k: int = 5
    radius: int = 2
    assign_radius: int | None = None
    proportional_attention: bool = False
    method: str = "ailurus"

    def check(self, depth: int) -> None:
        """Raise ValueError for a layer outside 1..depth or a fraction outside (0, 1]."""
        _check_layer(self.layer, depth, "AiluRus clustering")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"AiluRus cluster fraction must lie in (0, 1]; got {self.fraction}")
        if self.k < 1 or self.radius < 1:
            raise ValueError("AiluRus needs k >= 1 neighbours and a spatial radius >= 1")


Reduction = EViTSpec | ToMeDenseSpec | ACTSpec | ELViTSpec | AiluRusSpec


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
) -> tuple[Tensor, Tensor, tuple[int, int], MergeStats]:
    """Return (patch tokens (B, N, C) on the full grid after the final norm, class token
    (B, 1, C), grid, statistics) of `encoder` on images (B, 3, H, W) reduced as `spec` says."""
    x, grid = embed(encoder, images)
    x, stats = ENCODERS[spec.method](encoder, x, grid, spec)
    x = encoder.norm(x)
    return x[:, 1:], x[:, :1], grid, stats


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
        tokens, _, (gh, gw), stats = reduced_encode(self.encoder, padded, self.reduction)
        scores = self.decoder(tokens)  # (B, N, K) on the full grid
        masks = scores.transpose(1, 2).reshape(images.shape[0], self.num_classes, gh, gw)
        return resize_crop(masks, padded.shape[-2:], images.shape[-2:]), stats


def per_backbone(value, backbone: str, key: str):
    """Return `value`, or value[backbone] (else value['default']) when it is a mapping."""
    if not isinstance(value, Mapping):
        return value
    if backbone in value:
        return value[backbone]
    if "default" in value:
        return value["default"]
    raise ValueError(f"merge.{key} has no entry for backbone {backbone!r} and no 'default'")


def reduction_from_config(merge: Mapping, backbone: str) -> Reduction:
    """Return the reduction described by a `merge` config (conf/merge/<method>.yaml).

    Keys: method, setting (the method's reduction knob, see each yaml), and per method
    evit: layers; tome_dense: start_layer, proportional_attention; act: start_layer, iterations;
    elvit: layer, reference_grid, iterations, cluster_window, temperature, recon_k,
    recon_weighting; ailurus: layer, density_k, density_radius, assign_radius,
    proportional_attention. Layer keys may map backbone names (and 'default') to values.
    """
    method = merge["method"]
    if method not in BASELINE_METHODS:
        raise ValueError(f"merge.method={method!r} is not a baseline; expected {BASELINE_METHODS}")
    setting = float(merge["setting"])
    get = lambda key: per_backbone(merge[key], backbone, key)  # noqa: E731
    if method == "evit":
        return EViTSpec(tuple(int(v) for v in get("layers")), setting)
    if method == "tome_dense":
        return ToMeDenseSpec(int(get("start_layer")), setting,
                             bool(merge.get("proportional_attention", True)))
    if method == "act":
        return ACTSpec(int(get("start_layer")), setting, int(merge.get("iterations", 3)))
    if method == "elvit":
        return ELViTSpec(int(get("layer")), setting, int(merge.get("reference_grid", 40)),
                         int(merge.get("iterations", 5)), int(merge.get("cluster_window", 5)),
                         float(merge.get("temperature", 100.0)), int(merge.get("recon_k", 20)),
                         str(merge.get("recon_weighting", "softmax")))
    radius = merge.get("assign_radius")
    return AiluRusSpec(int(get("layer")), setting, int(merge.get("density_k", 5)),
                       int(merge.get("density_radius", 2)),
                       None if radius is None else int(radius),
                       bool(merge.get("proportional_attention", False)))


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
    "Reduction", "ToMeDenseSpec", "build_reduced", "fraction_count", "reduced_encode",
    "reduction_from_config",
]
