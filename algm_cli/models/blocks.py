"""ViT block toolkit shared by the dense (vit.py), ragged (ragged.py) and baseline (reduction.py)
encoders: patch + position embedding, attention exposing q/k/v, a block split at its merge point
(`attention_residual` -> merge -> `mlp_residual`), token buckets, and the pad -> upsample -> crop
step of the segmentation heads. Packed (ragged) attention lives in `models/packed_attention.py`.

Plain blocks run timm's own `Block.forward` (fused attention with an additive mask); where a merge
needs q/k/v, `attention` repeats timm's `Attention.forward` (fused path) and returns them too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

QKV = tuple[Tensor, Tensor, Tensor]  # each (B, heads, N, d)


# ---------------------------------------------------------------------------------- embedding


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


def embed(encoder: nn.Module, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """Return (tokens (B, P + N, C) with prefix tokens and position embeddings, grid (h, w)).

    The prefix is the class token, then the encoder's register tokens if it has any
    (`encoder.reg_token`, DINOv2). Position embeddings cover the class token and the patches
    (Segmenter, AugReg ViTs), or the patches only when the encoder has registers (DINOv2, timm's
    `no_embed_class`). An encoder with `prefix` 0 (class_token=False) drops the class token after
    the position embeddings are added (mmseg's with_cls_token=False); `pos_resize` picks the
    interpolation.
    """
    B = images.shape[0]
    x = encoder.patch_embed.proj(images)  # (B, C, h, w)
    grid = (int(x.shape[2]), int(x.shape[3]))
    x = x.flatten(2).transpose(1, 2)
    mode = getattr(encoder, "pos_resize", "bilinear")
    registers = getattr(encoder, "reg_token", None)
    if registers is not None:
        x = x + resize_pos_embed(encoder.pos_embed, grid, prefix=0, mode=mode)
        prefix = torch.cat([encoder.cls_token, registers], dim=1).expand(B, -1, -1)
        return torch.cat([prefix, x], dim=1), grid
    x = torch.cat([encoder.cls_token.expand(B, -1, -1), x], dim=1)
    x = x + resize_pos_embed(encoder.pos_embed, grid, mode=mode)
    return x[:, 1 - getattr(encoder, "prefix", 1) :], grid


def with_cls(cls: Tensor, patches: Tensor) -> Tensor:
    """Return (B, 1 + N, C): the class token (B, 1, C) followed by the patch tokens."""
    return torch.cat([cls, patches], dim=1)


# ---------------------------------------------------------------------------------- attention


def split_qkv(attn: nn.Module, x: Tensor) -> QKV:
    """Return timm Attention's normed (q, k, v), each (B, heads, N, d), for x (B, N, C)."""
    B, N, _ = x.shape
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    return attn.q_norm(q), attn.k_norm(k), v


def attention_output(attn: nn.Module, out: Tensor, x: Tensor) -> Tensor:
    """Return timm Attention's output projection of heads `out` (B, N, heads*d); x is its input."""
    out = attn.norm(out)
    gate = getattr(attn, "gate", None)  # timm's gated attention (newer versions)
    if gate is not None:
        out = out * gate(x).sigmoid()
    return attn.proj_drop(attn.proj(out))


def attention(attn: nn.Module, x: Tensor, bias: Tensor | None) -> tuple[Tensor, QKV]:
    """Return (timm Attention output, (q, k, v)) for x (B, N, C); bias is additive (B, 1, 1, N)."""
    B, N, _ = x.shape
    q, k, v = split_qkv(attn, x)
    dropout = attn.attn_drop.p if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
    return attention_output(attn, out.transpose(1, 2).reshape(B, N, -1), x), (q, k, v)


# ---------------------------------------------------------------------------------- blocks


def attention_residual(blk: nn.Module, x: Tensor, bias: Tensor | None = None) -> tuple[Tensor, QKV]:
    """Return (x + attention branch, (q, k, v)) for a timm block."""
    out, qkv = attention(blk.attn, blk.norm1(x), bias)
    return x + blk.drop_path1(blk.ls1(out)), qkv


def mlp_residual(blk: nn.Module, x: Tensor) -> Tensor:
    """Return x + MLP branch for a timm block."""
    return x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))


def full_block(blk: nn.Module, x: Tensor, bias: Tensor | None = None) -> Tensor:
    """Return one timm block's output on x (B, L, C) (timm's own forward, additive mask)."""
    return blk(x, attn_mask=bias)


def bucketed(length: int, bucket: int) -> int:
    """Return `length` rounded up to a multiple of `bucket`."""
    return -(-length // bucket) * bucket


def padded_block(block_fn, blk: nn.Module, x: Tensor, bias: Tensor | None, bucket: int) -> Tensor:
    """Run `block_fn` on x (B, L, C) zero-padded to a multiple of `bucket` tokens; return (B, L, C).

    bucket=0 runs it unpadded. Padded positions are masked out as keys (additive -inf), so the
    valid tokens' outputs equal the unpadded block's; the padded rows are computed and dropped.
    With adaptive merging the token count changes every image; padding to a few bucket sizes lets
    a compiled block reuse its graphs instead of recompiling for every count.
    """
    B, L, _ = x.shape
    extra = bucketed(L, bucket) - L if bucket else 0
    if extra == 0:
        return block_fn(blk, x, bias)
    key_bias = x.new_zeros(B, 1, 1, L) if bias is None else bias.to(x.dtype)
    key_bias = F.pad(key_bias, (0, extra), value=float("-inf"))
    return block_fn(blk, F.pad(x, (0, 0, 0, extra)), key_bias)[:, :L]


# ---------------------------------------------------------------------------------- heads


def pad_to_patch(images: Tensor, patch: int = 16) -> Tensor:
    """Return images (B, 3, H, W) zero-padded at the bottom/right to multiples of `patch`."""
    H, W = images.shape[-2:]
    pad_h, pad_w = (-H) % patch, (-W) % patch
    return F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images


def resize_crop(x: Tensor, padded: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """Return x (B, K, h, w) upsampled bilinearly to the padded size, cropped to `size` (H, W)."""
    x = F.interpolate(x, size=padded, mode="bilinear", align_corners=False)
    return x[..., : size[0], : size[1]]
