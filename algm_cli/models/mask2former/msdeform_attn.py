"""Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021) in plain PyTorch.

Each query looks at `points` locations per head and per level around its reference point and
takes their attention-weighted sum; the locations are bilinearly sampled with `grid_sample`
(align_corners=False, zeros outside), the computation the released CUDA kernel performs and
the reference fallback of Mask2Former / ViT-Adapter describes. A fused kernel may replace
`deform_sample` later; its inputs and outputs stay the same.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Shapes = list[tuple[int, int]]


def deform_sample(value: Tensor, shapes: Shapes, locations: Tensor, weights: Tensor) -> Tensor:
    """Return the deformable-attention output (B, Q, heads * d).

    value: (B, S, heads, d), the levels' maps flattened and concatenated (S = sum h_l * w_l);
    locations: (B, Q, heads, L, P, 2) as (x, y) in [0, 1] of each level's map;
    weights: (B, Q, heads, L, P), softmax-normalised over L * P.
    """
    B, _, heads, d = value.shape
    Q, L, P = locations.shape[1], locations.shape[3], locations.shape[4]
    grids = 2 * locations - 1  # grid_sample's [-1, 1] coordinates
    sampled, start = [], 0
    for level, (h, w) in enumerate(shapes):
        v = value[:, start:start + h * w].permute(0, 2, 3, 1).reshape(B * heads, d, h, w)
        start += h * w
        g = grids[:, :, :, level].transpose(1, 2).reshape(B * heads, Q, P, 2)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros",
                                     align_corners=False))  # (B*heads, d, Q, P)
    stacked = torch.stack(sampled, dim=-2).flatten(-2)  # (B*heads, d, Q, L*P)
    w = weights.transpose(1, 2).reshape(B * heads, 1, Q, L * P)
    out = (stacked * w).sum(-1)  # (B*heads, d, Q)
    return out.reshape(B, heads * d, Q).transpose(1, 2)


def grid_reference(shapes: Shapes, device=None) -> Tensor:
    """Return the pixel centres of every level's map, (S, 2) as (x, y) in [0, 1]."""
    refs = []
    for h, w in shapes:
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        refs.append(torch.stack([x.flatten(), y.flatten()], dim=-1))
    return torch.cat(refs)


class MSDeformAttn(nn.Module):
    """Deformable attention over `levels` maps: offsets and weights predicted from the query.

    value_ratio: the value projection's width relative to dim (ViT-Adapter's deform_ratio; 1 in
    Mask2Former's pixel decoder).
    """

    def __init__(self, dim: int, heads: int = 8, levels: int = 3, points: int = 4,
                 value_ratio: float = 1.0) -> None:
        super().__init__()
        inner = int(dim * value_ratio)
        if inner % heads:
            raise ValueError(f"deformable attention width {inner} is not divisible by {heads} heads")
        self.heads, self.levels, self.points = heads, levels, points
        self.offsets = nn.Linear(dim, heads * levels * points * 2)
        self.weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, inner)
        self.output_proj = nn.Linear(inner, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's init: offsets start on rays in `heads` directions, k-th point at k."""
        nn.init.zeros_(self.offsets.weight)
        angles = torch.arange(self.heads, dtype=torch.float32) * (2 * math.pi / self.heads)
        rays = torch.stack([angles.cos(), angles.sin()], -1)
        rays = rays / rays.abs().max(-1, keepdim=True).values  # (heads, 2) on the unit square
        scale = torch.arange(1, self.points + 1, dtype=torch.float32)[:, None]
        bias = rays[:, None, None, :] * scale  # (heads, 1, P, 2)
        self.offsets.bias.data.copy_(bias.expand(-1, self.levels, -1, -1).flatten())
        nn.init.zeros_(self.weights.weight)
        nn.init.zeros_(self.weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query: Tensor, reference: Tensor, value: Tensor, shapes: Shapes) -> Tensor:
        """Return (B, Q, dim); query (B, Q, dim), reference (B or 1, Q, 2) in [0, 1], value (B, S, dim)."""
        B, Q, _ = query.shape
        if sum(h * w for h, w in shapes) != value.shape[1]:
            raise ValueError(f"value has {value.shape[1]} tokens; the level shapes {shapes} need "
                             f"{sum(h * w for h, w in shapes)}")
        H, L, P = self.heads, self.levels, self.points
        v = self.value_proj(value).reshape(B, value.shape[1], H, -1)
        offsets = self.offsets(query).reshape(B, Q, H, L, P, 2)
        weights = self.weights(query).reshape(B, Q, H, L * P).softmax(-1).reshape(B, Q, H, L, P)
        sizes = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)
        locations = reference[:, :, None, None, None, :] + offsets / sizes[None, None, None, :, None, :]
        return self.output_proj(deform_sample(v, shapes, locations, weights))
