"""Plain ViT encoder (timm's blocks) with merge steps between MHSA and MLP.

The encoder owns timm's parameters under Segmenter's names (`patch_embed.proj`, `cls_token`,
`pos_embed`, `blocks.{i}`, `norm`), so official Segmenter checkpoints and timm's AugReg weights
load without renaming. Its forward is written here rather than patched into timm: after each
layer's attention residual the schedule's merge step (if any) runs on the patch tokens, the class
token kept aside and never merged (as released).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..merge import MergeState
from .base import MergeStats
from .pretrained import create_timm
from .schedule import NO_MERGE, MergeSchedule, apply_step

# backbone name -> (timm model, embed dim, depth, heads); patch 16 everywhere
BACKBONES: dict[str, tuple[str, int, int, int]] = {
    "vit_t": ("vit_tiny_patch16_384", 192, 12, 3),
    "vit_s": ("vit_small_patch16_384", 384, 12, 6),
    "vit_b": ("vit_base_patch16_384", 768, 12, 12),
    "vit_l": ("vit_large_patch16_384", 1024, 24, 16),
}
PATCH = 16
PRETRAINED_SIZE = 384


def resize_pos_embed(pos_embed: Tensor, grid: tuple[int, int], prefix: int = 1,
                     mode: str = "bilinear") -> Tensor:
    """Return (1, prefix + gh*gw, C) position embeddings resized to `grid`.

    Segmenter's rule: the class-token embedding is kept, the patch embeddings are treated as a
    square image and resized bilinearly (align_corners=False); mode="bicubic" is mmseg's rule as
    the released SegViT config sets it.
    """
    cls_pos, patch_pos = pos_embed[:, :prefix], pos_embed[:, prefix:]
    n, c = int(patch_pos.shape[1]), int(patch_pos.shape[2])
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"position embeddings for {n} patches are not a square grid")
    if (side, side) == (int(grid[0]), int(grid[1])):
        return pos_embed
    img = patch_pos.reshape(1, side, side, c).permute(0, 3, 1, 2)
    img = F.interpolate(img, size=tuple(int(g) for g in grid), mode=mode, align_corners=False)
    return torch.cat([cls_pos, img.permute(0, 2, 3, 1).reshape(1, -1, c)], dim=1)


@dataclass
class EncoderOutput:
    """Final patch tokens (merged), class token, merge state, statistics, captured hiddens."""

    tokens: Tensor  # (B, N', C) after the final norm
    cls: Tensor  # (B, 1, C)
    state: MergeState
    grid: tuple[int, int]
    stats: MergeStats
    captured: dict[int, Tensor]  # layer -> (B, N', C) patch tokens after that layer's MHSA
    layers: dict[int, Tensor]  # layer -> (B, N, C) patch tokens after the layer, unmerged


def attention(attn: nn.Module, x: Tensor, bias: Tensor | None) -> tuple[Tensor, tuple]:
    """Return (timm Attention output, (q, k, v)) for x (B, N, C); bias is additive (B, 1, 1, N).

    Same computation as timm's fused path, exposing q/k/v for the keys/queries/values metrics.
    """
    B, N, C = x.shape
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # (B, heads, N, d)
    q, k = attn.q_norm(q), attn.k_norm(k)
    dropout = attn.attn_drop.p if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
    out = attn.norm(out.transpose(1, 2).reshape(B, N, -1))
    return attn.proj_drop(attn.proj(out)), (q, k, v)


def full_block(blk: nn.Module, x: Tensor, bias: Tensor | None) -> Tensor:
    """Return one timm block's output on x (B, L, C): attention residual, then MLP residual."""
    out, _ = attention(blk.attn, blk.norm1(x), bias)
    x = x + blk.drop_path1(blk.ls1(out))
    return x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))


def bucketed(length: int, bucket: int) -> int:
    """Return `length` rounded up to a multiple of `bucket`."""
    return -(-length // bucket) * bucket


def padded_block(block_fn, blk: nn.Module, x: Tensor, bias: Tensor | None, bucket: int) -> Tensor:
    """Run `block_fn` on x (B, L, C) zero-padded to a multiple of `bucket` tokens; return (B, L, C).

    bucket=0 runs it unpadded.

    Padded positions are masked out as keys (additive -inf), so the valid tokens' outputs equal
    the unpadded block's; the padded rows are computed and dropped. With adaptive merging the
    token count changes every image; padding to a few bucket sizes lets a compiled block reuse
    its graphs instead of recompiling for every count.
    """
    B, L, _ = x.shape
    extra = bucketed(L, bucket) - L if bucket else 0
    if extra == 0:
        return block_fn(blk, x, bias)
    key_bias = x.new_zeros(B, 1, 1, L) if bias is None else bias.to(x.dtype)
    key_bias = F.pad(key_bias, (0, extra), value=float("-inf"))
    return block_fn(blk, F.pad(x, (0, 0, 0, extra)), key_bias)[:, :L]


class ViTEncoder(nn.Module):
    """ViT-T/S/B/L patch-16 encoder with class token and per-layer merge hooks.

    pretrained: False, True (timm's AugReg weights via the Hugging Face cache) or a path to a
    timm-format state dict (models/pretrained.py). class_token=False drops the class token right
    after the position embeddings are added (mmseg's `with_cls_token=False`, the released
    SETR-MLA and SegViT); merges then split the tokens without one. pos_resize: the position
    embeddings' interpolation, "bilinear" (Segmenter) or "bicubic" (mmseg / SegViT).

    bucket: 0 (default) runs every block at its exact token count; n > 0 pads the tokens of the
    blocks after a merge to a multiple of n (masked keys), so that a compiled `block_fn`
    (`compile_blocks`) sees a handful of shapes. Results equal the unpadded ones.
    """

    def __init__(
        self,
        backbone: str = "vit_s",
        img_size: int = 512,
        drop_path: float = 0.0,
        pretrained: bool | str = False,
        class_token: bool = True,
        pos_resize: str = "bilinear",
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; expected one of {list(BACKBONES)}")
        if pos_resize not in ("bilinear", "bicubic"):
            raise ValueError(f"pos_resize must be bilinear or bicubic; got {pos_resize!r}")
        timm_name, self.dim, self.depth, self.heads = BACKBONES[backbone]
        self.pos_resize = pos_resize
        self.prefix = 1 if class_token else 0  # tokens kept before the patches in the blocks
        vit = create_timm(
            timm_name, pretrained, PRETRAINED_SIZE, img_size,
            resize=partial(resize_pos_embed, mode=pos_resize),
            num_classes=0,
            drop_path_rate=drop_path,
            norm_layer=partial(nn.LayerNorm, eps=1e-5),  # Segmenter's eps (timm's ViT: 1e-6)
        )
        self.patch_embed, self.blocks, self.norm = vit.patch_embed, vit.blocks, vit.norm
        self.cls_token = vit.cls_token
        grid = (img_size // PATCH, img_size // PATCH)
        self.pos_embed = nn.Parameter(resize_pos_embed(vit.pos_embed.data, grid, mode=pos_resize))
        self.bucket = 0
        self.block_fn = full_block

    def compile_blocks(self, **options) -> None:
        """Run the blocks without a merge step through `torch.compile(full_block, **options)`."""
        self.block_fn = torch.compile(full_block, **options)

    def forward(
        self,
        images: Tensor,
        schedule: MergeSchedule = NO_MERGE,
        capture: tuple[int, ...] = (),
        outputs: tuple[int, ...] = (),
    ) -> EncoderOutput:
        """Encode images (B, 3, H, W), H and W multiples of 16, merging as `schedule` says.

        capture: layers whose post-MHSA patch tokens are returned as they are (calibration).
        outputs: layers whose block outputs are returned unmerged to the full (B, N, C) grid, for
        decoders that read intermediate layers (SETR's MLA and auxiliary heads, SegViT): each
        original patch gets the token it was merged into at that depth.
        """
        B = images.shape[0]
        x = self.patch_embed.proj(images)  # (B, C, gh, gw)
        grid = (int(x.shape[2]), int(x.shape[3]))
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)
        x = x + resize_pos_embed(self.pos_embed, grid, mode=self.pos_resize)
        p = self.prefix
        x = x[:, 1 - p :]  # class_token=False: dropped after the position embeddings
        state = MergeState.start(B, grid[0] * grid[1], device=x.device, dtype=x.dtype)
        stats: MergeStats = {}
        captured: dict[int, Tensor] = {}
        layers: dict[int, Tensor] = {}
        for layer, blk in enumerate(self.blocks, start=1):
            spec = schedule.at(layer)
            bias = None
            merged = state.num_tokens < state.num_original
            if schedule.proportional_attention and merged:
                sizes = torch.cat([state.sizes.new_ones(B, p), state.sizes], dim=1)
                bias = sizes.log()[:, None, None, :].to(x.dtype)  # (B, 1, 1, p + N')
            if spec is None and layer not in capture:  # a plain block: no merge, nothing kept
                x = padded_block(self.block_fn, blk, x, bias, self.bucket if merged else 0)
            else:
                out, qkv = attention(blk.attn, blk.norm1(x), bias)
                x = x + blk.drop_path1(blk.ls1(out))
                if layer in capture:
                    captured[layer] = x[:, p:]
                if spec is not None and schedule.placement == "between":
                    x, state = self._merge(spec, schedule, x, state, grid, qkv)
                    stats[spec.label] = state.num_tokens / state.num_original
                x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
                if spec is not None and schedule.placement == "after_mlp":
                    x, state = self._merge(spec, schedule, x, state, grid, None)
                    stats[spec.label] = state.num_tokens / state.num_original
            if layer in outputs:
                layers[layer] = state.unmerge(x[:, p:])
        x = self.norm(x)
        return EncoderOutput(x[:, p:], x[:, :p], state, grid, stats, captured, layers)

    def _merge(self, spec, schedule, x, state, grid, qkv) -> tuple[Tensor, MergeState]:
        """Merge the patch tokens of x (B, p + N, C); a class token stays first and unmerged."""
        p = self.prefix
        cls, patches = x[:, :p], x[:, p:]
        metric = None
        if schedule.metric != "tokens":
            q, k, v = qkv
            chosen = {"queries": q, "keys": k, "values": v}[schedule.metric]
            metric = chosen.mean(dim=1)[:, p:]  # (B, N, d): averaged over heads, class dropped
        patches, state = apply_step(spec, schedule, patches, state, grid, metric, class_token=p == 1)
        return torch.cat([cls, patches], dim=1), state
