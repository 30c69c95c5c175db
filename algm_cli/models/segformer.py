"""Segformer (Xie et al., NeurIPS 2021): MiT-B0..B5 encoder + all-MLP decoder, with Segformer++.

Encoder: four stages, each an overlapping patch embedding (strided conv + LayerNorm), blocks of
efficient self-attention (keys/values from a k = s = sr conv + LayerNorm of the tokens) and
Mix-FFN (Linear, 3x3 depthwise conv, GELU, Linear), then a LayerNorm. Decoder: per-stage Linear
to the embedding dim, bilinear upsampling to 1/4, concat, 1x1 conv + BN + ReLU, dropout, 1x1
classifier; `forward_with_stats` upsamples the logits bilinearly to the input size.

Segformer++ (Kienzle et al., 2024; `SegformerMerge`) merges tokens inside every attention call
of the chosen stages, nothing carried between layers, in the order of the released code
(KieDani/SegformerPlusPlus, mmseg backbone `mit.py`):
- keys/values: the spatial reduction (conv + LayerNorm) runs first, then the merge acts on the
  reduced (h / sr, w / sr) grid; the merged set is the attention's key/value set, with no size
  weighting of the keys (the released code uses plain multi-head attention);
- queries: the merge acts on the (normalised) block input, the query projection, attention and
  output projection run on the merged queries, and the result is unmerged to the full grid
  before the residual connection.
Merge similarities are cosine similarities of the tokens being merged (no separate metric).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn

from .base import MergeStats, SegmentationModel
from .mit_weights import load_mit_weights
from .pretrained import weights_spec
from .registry import BuildRequest, register_family
from .segformer_presets import (  # noqa: F401  (the presets are part of this model's interface)
    PRESET_ALIASES, SegformerMerge, StageMerge, TokenMerge, segformerpp_preset,
)

Grid = tuple[int, int]


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class MiTConfig:
    """Widths and depths of one MiT variant (heads, reductions and kernels are shared)."""

    dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    decoder_dim: int
    heads: tuple[int, int, int, int] = (1, 2, 5, 8)
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    patch_sizes: tuple[int, int, int, int] = (7, 3, 3, 3)
    strides: tuple[int, int, int, int] = (4, 2, 2, 2)
    mlp_ratio: int = 4


MIT_VARIANTS: dict[str, MiTConfig] = {
    "b0": MiTConfig((32, 64, 160, 256), (2, 2, 2, 2), 256),
    "b1": MiTConfig((64, 128, 320, 512), (2, 2, 2, 2), 256),
    "b2": MiTConfig((64, 128, 320, 512), (3, 4, 6, 3), 768),
    "b3": MiTConfig((64, 128, 320, 512), (3, 4, 18, 3), 768),
    "b4": MiTConfig((64, 128, 320, 512), (3, 8, 27, 3), 768),
    "b5": MiTConfig((64, 128, 320, 512), (3, 6, 40, 3), 768),
}


# ----------------------------------------------------------------------------- encoder


def tokens_to_map(x: Tensor, grid: Grid) -> Tensor:
    """Return a contiguous (B, C, h, w) map from tokens (B, h * w, C).

    Contiguous on purpose: CPU bilinear upsampling of the strided view is ~4x slower.
    """
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *grid).contiguous()


class OverlapPatchEmbed(nn.Module):
    """Strided conv with overlapping windows (padding k // 2), then LayerNorm."""

    def __init__(self, in_chans: int, dim: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel, stride, kernel // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Grid]:
        """Return (tokens (B, h * w, C), grid (h, w)) for a feature map (B, C_in, H, W)."""
        x = self.proj(x)  # (B, C, h, w)
        grid = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), grid


class EfficientSelfAttention(nn.Module):
    """Multi-head attention whose keys/values come from a spatially reduced copy of the tokens."""

    def __init__(self, dim: int, heads: int, sr_ratio: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.sr_norm = nn.LayerNorm(dim)

    def reduce(self, x: Tensor, grid: Grid) -> tuple[Tensor, Grid]:
        """Return (key/value source tokens (B, N_kv, C), their grid) after spatial reduction."""
        if self.sr_ratio == 1:
            return x, grid
        reduced = self.sr(tokens_to_map(x, grid))  # (B, C, h / sr, w / sr)
        kv_grid = (reduced.shape[2], reduced.shape[3])
        return self.sr_norm(reduced.flatten(2).transpose(1, 2)), kv_grid

    def forward(self, x: Tensor, grid: Grid, merge: StageMerge) -> tuple[Tensor, dict[str, float]]:
        """Return (attention output (B, N, C), kept fraction per merged set: "q" / "kv")."""
        B, N, C = x.shape
        d = C // self.heads
        kept: dict[str, float] = {}
        kv_src, kv_grid = self.reduce(x, grid)  # (B, N_kv, C)
        if merge.kv is not None:
            kv_src, kv_state = merge.kv.apply(kv_src, kv_grid)
            kept["kv"] = kv_state.num_tokens / kv_state.num_original
        q_src, q_state = x, None
        if merge.q is not None:
            q_src, q_state = merge.q.apply(x, grid)  # (B, N_q, C)
            kept["q"] = q_state.num_tokens / q_state.num_original
        n_q, n_kv = q_src.shape[1], kv_src.shape[1]
        q = self.q(q_src).reshape(B, n_q, self.heads, d).transpose(1, 2)  # (B, h, N_q, d)
        k, v = self.kv(kv_src).reshape(B, n_kv, 2, self.heads, d).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N_q, d)
        out = self.proj(out.transpose(1, 2).reshape(B, n_q, C))  # (B, N_q, C)
        if q_state is not None:
            out = q_state.unmerge(out)  # (B, N, C)
        return out, kept


class MixFFN(nn.Module):
    """Linear -> 3x3 depthwise conv -> GELU -> Linear (the conv supplies position information)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, grid: Grid) -> Tensor:
        """Return (B, N, C) for tokens (B, N, C) on grid."""
        hidden = self.dwconv(tokens_to_map(self.fc1(x), grid)).flatten(2).transpose(1, 2)
        return self.fc2(self.act(hidden))


class MiTBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + ffn(norm(x)), with drop-path."""

    def __init__(
        self, dim: int, heads: int, sr_ratio: int, mlp_ratio: int, drop_path: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EfficientSelfAttention(dim, heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = MixFFN(dim, dim * mlp_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, grid: Grid, merge: StageMerge) -> tuple[Tensor, dict[str, float]]:
        """Return (tokens (B, N, C), kept fractions of this block's attention merges)."""
        attn, kept = self.attn(self.norm1(x), grid, merge)
        x = x + self.drop_path(attn)
        x = x + self.drop_path(self.ffn(self.norm2(x), grid))
        return x, kept


class MiTStage(nn.Module):
    """Overlapping patch embedding, `depth` blocks, LayerNorm; returns a feature map."""

    def __init__(
        self,
        in_chans: int,
        dim: int,
        depth: int,
        heads: int,
        sr_ratio: int,
        kernel: int,
        stride: int,
        mlp_ratio: int,
        drop_paths: list[float],
    ) -> None:
        super().__init__()
        self.patch_embed = OverlapPatchEmbed(in_chans, dim, kernel, stride)
        self.blocks = nn.ModuleList(
            MiTBlock(dim, heads, sr_ratio, mlp_ratio, drop_paths[i]) for i in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor, merge: StageMerge) -> tuple[Tensor, dict[str, float]]:
        """Return (feature map (B, C, h, w), kept fraction per merged set, mean over blocks)."""
        tokens, grid = self.patch_embed(x)
        totals: dict[str, float] = {}
        for block in self.blocks:
            tokens, kept = block(tokens, grid, merge)
            for key, value in kept.items():
                totals[key] = totals.get(key, 0.0) + value
        depth = len(self.blocks)
        return tokens_to_map(self.norm(tokens), grid), {k: v / depth for k, v in totals.items()}


class MiTEncoder(nn.Module):
    """Mix Transformer: four stages at strides 4, 8, 16, 32."""

    def __init__(self, config: MiTConfig, drop_path: float = 0.1) -> None:
        super().__init__()
        total = sum(config.depths)
        rates = [drop_path * i / max(total - 1, 1) for i in range(total)]  # linear in depth
        stages, start, in_chans = [], 0, 3
        for i, (dim, depth) in enumerate(zip(config.dims, config.depths)):
            stages.append(
                MiTStage(
                    in_chans, dim, depth, config.heads[i], config.sr_ratios[i],
                    config.patch_sizes[i], config.strides[i], config.mlp_ratio,
                    rates[start:start + depth],
                )
            )
            start, in_chans = start + depth, dim
        self.stages = nn.ModuleList(stages)

    def forward(self, images: Tensor, merge: SegformerMerge) -> tuple[list[Tensor], MergeStats]:
        """Return (four feature maps (B, C_i, H / 2^(i+2), W / 2^(i+2)), merge statistics)."""
        features, stats, x = [], {}, images
        for i, (stage, stage_merge) in enumerate(zip(self.stages, merge.stages), start=1):
            x, kept = stage(x, stage_merge)
            features.append(x)
            stats.update({f"s{i}:{key}": value for key, value in kept.items()})
        return features, stats


# ----------------------------------------------------------------------------- decoder


class AllMLPHead(nn.Module):
    """Segformer's decoder: per-stage Linear, upsample to 1/4, concat, fuse, classify."""

    def __init__(
        self, in_dims: tuple[int, ...], dim: int, num_classes: int, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(d, dim) for d in in_dims)
        self.fuse = nn.Sequential(
            nn.Conv2d(len(in_dims) * dim, dim, 1, bias=False),
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(dim, num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        """Return logits (B, K, h1, w1) at the resolution of the first feature map."""
        size = features[0].shape[-2:]
        maps = []
        for proj, feat in zip(self.proj, features):
            grid = (feat.shape[2], feat.shape[3])
            mapped = tokens_to_map(proj(feat.flatten(2).transpose(1, 2)), grid)  # (B, E, h, w)
            if mapped.shape[-2:] != size:
                mapped = F.interpolate(mapped, size=size, mode="bilinear", align_corners=False)
            maps.append(mapped)
        fused = self.fuse(torch.cat(maps[::-1], dim=1))  # deepest stage first, as the original
        return self.classifier(self.dropout(fused))


# ----------------------------------------------------------------------------- model


def init_weights(module: nn.Module) -> None:
    """Initialise Linear (trunc. normal 0.02), LayerNorm (1, 0) and Conv2d (He, fan-out)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / (fan_out // module.groups)))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class Segformer(SegmentationModel):
    """Segformer MiT-B0..B5 with the all-MLP decoder and optional Segformer++ token merging.

    `merge` is plain configuration read at every forward, so it may be swapped on a trained
    model (Segformer++ needs no retraining): `model.merge = segformerpp_preset("hq")`.
    Merge statistics: "s{stage}:{q|kv}" -> tokens left after that merge as a fraction of the set
    it merged (all queries; for keys/values, the set left by the spatial reduction), averaged
    over the blocks of the stage; the count is fixed, so it is the same for every image.
    pretrained: False (random), True (`nvidia/mit-b{N}` from the Hugging Face cache) or a path
    to NVlabs / Hugging Face ImageNet-1k MiT weights (models/mit_weights.py).
    """

    def __init__(
        self,
        variant: str = "b0",
        num_classes: int = 150,
        merge: SegformerMerge | None = None,
        drop_path: float = 0.1,
        pretrained: bool | str = False,
    ) -> None:
        super().__init__()
        if variant not in MIT_VARIANTS:
            known = list(MIT_VARIANTS)
            raise ValueError(f"unknown Segformer variant {variant!r}; expected one of {known}")
        config = MIT_VARIANTS[variant]
        self.variant = variant
        self.num_classes = num_classes
        self.merge = SegformerMerge() if merge is None else merge
        self.encoder = MiTEncoder(config, drop_path)
        self.decode_head = AllMLPHead(config.dims, config.decoder_dim, num_classes)
        self.apply(init_weights)
        if weights_spec(pretrained):  # ImageNet-1k MiT weights (models/mit_weights.py)
            load_mit_weights(self.encoder, pretrained, variant)

    def forward_with_stats(self, images: Tensor) -> tuple[Tensor, MergeStats]:
        """Return (logits (B, K, H, W), kept fraction per merged stage set, e.g. "s1:kv")."""
        features, stats = self.encoder(images, self.merge)
        logits = self.decode_head(features)  # (B, K, H / 4, W / 4)
        logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return logits, stats


def build_segformer(request: BuildRequest) -> Segformer:
    """Return the Segformer of `request`; its Segformer++ preset only while the merge is active."""
    preset = request.merge["method"] if request.reduction_active else "none"
    return Segformer(request.backbone.removeprefix("mit_"), int(request.num_classes),
                     segformerpp_preset(preset), **segformer_options(request))


def segformer_options(request: BuildRequest) -> dict:
    """Return the keyword options every Segformer builder reads: drop_path and pretrained."""
    return {"drop_path": float(request.model["drop_path"]),
            "pretrained": weights_spec(request.model.get("pretrained", False))}


register_family(name="segformer", builder=build_segformer, backbone="mit",
                merges=("none", *PRESET_ALIASES), objective="cross_entropy")
