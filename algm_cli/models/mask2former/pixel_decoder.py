"""Mask2Former's pixel decoder: a deformable-attention encoder over three scales plus an FPN level.

Layout (facebookresearch/Mask2Former `MSDeformAttnPixelDecoder`, mmdet's version in EVA's config):
- the three coarsest inputs (strides 32, 16, 8) are projected by 1x1 conv + GroupNorm(32) to
  `dim`, get a normalised sine position embedding plus a learned level embedding, and pass
  through `layers` post-norm encoder layers (deformable self-attention over all three levels,
  each query referring to its own pixel centre, then a ReLU FFN);
- the stride-4 input joins FPN-style: lateral 1x1 conv + GN, plus the stride-8 output upsampled
  bilinearly, then a 3x3 conv + GN + ReLU; a 1x1 conv gives the mask features.
Returns the mask features (stride 4) and the three encoded maps, coarsest first.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .msdeform_attn import MSDeformAttn, grid_reference


def sine_position(h: int, w: int, dim: int, device=None, temperature: float = 10000.0) -> Tensor:
    """Return DETR's normalised sine position embedding, (h * w, dim): dim/2 for y, then dim/2 for x."""
    half = dim // 2
    ys = (torch.arange(1, h + 1, device=device, dtype=torch.float32) / (h + 1e-6)) * 2 * math.pi
    xs = (torch.arange(1, w + 1, device=device, dtype=torch.float32) / (w + 1e-6)) * 2 * math.pi
    freq = temperature ** (2 * (torch.arange(half, device=device) // 2) / half)

    def encode(t: Tensor) -> Tensor:  # (n,) -> (n, half): sin and cos interleaved
        a = t[:, None] / freq
        return torch.stack([a[:, 0::2].sin(), a[:, 1::2].cos()], dim=-1).flatten(1)

    y, x = encode(ys), encode(xs)
    return torch.cat([y[:, None, :].expand(h, w, half), x[None, :, :].expand(h, w, half)],
                     dim=-1).reshape(h * w, dim)


def conv_gn(c_in: int, c_out: int, kernel: int, relu: bool = False) -> nn.Sequential:
    """Return conv (no bias) + GroupNorm(32) (+ ReLU)."""
    layers = [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
              nn.GroupNorm(min(32, c_out), c_out)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class DeformEncoderLayer(nn.Module):
    """Post-norm layer: deformable self-attention over the levels, then a ReLU FFN."""

    def __init__(self, dim: int, heads: int, levels: int, points: int, ffn: int) -> None:
        super().__init__()
        self.attn = MSDeformAttn(dim, heads, levels, points)
        self.norm1 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn)
        self.fc2 = nn.Linear(ffn, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, pos: Tensor, reference: Tensor, shapes) -> Tensor:
        """Return (B, S, dim) for tokens x (B, S, dim) of all levels."""
        x = self.norm1(x + self.attn(x + pos, reference, x, shapes))
        return self.norm2(x + self.fc2(F.relu(self.fc1(x))))


class PixelDecoder(nn.Module):
    """Multi-scale deformable-attention pixel decoder; `in_dims` are the stride 4, 8, 16, 32 widths."""

    def __init__(self, in_dims: list[int], dim: int = 256, mask_dim: int = 256, layers: int = 6,
                 heads: int = 8, points: int = 4, ffn: int = 1024) -> None:
        super().__init__()
        self.dim = dim
        self.input_proj = nn.ModuleList(conv_gn(c, dim, 1) for c in reversed(in_dims[1:]))
        self.level_embed = nn.Parameter(torch.randn(3, dim) * 0.02)
        self.layers = nn.ModuleList(DeformEncoderLayer(dim, heads, 3, points, ffn)
                                    for _ in range(layers))
        self.lateral = conv_gn(in_dims[0], dim, 1)
        self.output = conv_gn(dim, dim, 3, relu=True)
        self.mask_features = nn.Conv2d(dim, mask_dim, 1)

    def forward(self, feats: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Return (mask features (B, mask_dim, H/4, W/4), [stride 32, 16, 8 maps (B, dim, h, w)])."""
        coarse = [proj(f) for proj, f in zip(self.input_proj, reversed(feats[1:]))]
        shapes = [(int(f.shape[2]), int(f.shape[3])) for f in coarse]
        tokens = torch.cat([f.flatten(2).transpose(1, 2) for f in coarse], dim=1)  # (B, S, dim)
        pos = torch.cat([sine_position(h, w, self.dim, tokens.device) + self.level_embed[i]
                         for i, (h, w) in enumerate(shapes)]).to(tokens.dtype)[None]
        reference = grid_reference(shapes, tokens.device).to(tokens.dtype)[None]
        for layer in self.layers:
            tokens = layer(tokens, pos, reference, shapes)
        maps, start = [], 0
        for h, w in shapes:
            maps.append(tokens[:, start:start + h * w].transpose(1, 2).reshape(-1, self.dim, h, w))
            start += h * w
        fine = self.lateral(feats[0])
        fine = fine + F.interpolate(maps[-1], size=fine.shape[-2:], mode="bilinear",
                                    align_corners=False)
        return self.mask_features(self.output(fine)), maps
