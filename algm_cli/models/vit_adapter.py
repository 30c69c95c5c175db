"""ViT-Adapter (Chen et al., ICLR 2023) around an EVA ViT, with token merging inside the ViT.

Layout (czczup/ViT-Adapter `ViTAdapter` / `BEiTAdapter`, as EVA's segmentation config uses it):
- spatial prior module: a BN-ReLU conv stem (3x3 s2, 3x3, 3x3, max-pool: stride 4) and three
  3x3 s2 convs (strides 8, 16, 32), each level projected by 1x1 conv to the ViT width; the
  stride 8/16/32 maps, flattened with a learned level embedding, form the adapter tokens c;
- the blocks are split into groups (`interactions`, e.g. [0-9], [10-19], [20-29], [30-39] for
  ViT-g); before each group an injector adds deformable attention from the ViT tokens (queries
  at their 1/16 pixel centres) to the three adapter levels, scaled by a zero-initialised gamma;
  after each group an extractor updates c by deformable attention from c to the ViT tokens
  (one level, 1/16) plus a ConvFFN (fc, 3x3 depthwise conv per level, GELU, fc; hidden
  cffn_ratio x width); the last group runs two more extractors;
- output: c's three levels as maps, the stride-4 map = stem + transposed-conv upsampling of the
  stride-8 map; the ViT tokens after group k are added to level k, resized bilinearly (x4, x2,
  x1, x0.5), then BatchNorm per level: four maps at strides 4, 8, 16, 32.

Where merging meets the adapter: the ViT's tokens may be merged (merge state from the encoder).
The extractor reads them UNMERGED to the 1/16 grid (each patch takes its group's token), so it
sees the baseline's layout. The injector is computed on the unmerged grid too (every member
queries at its own pixel centre) and written INTO the merged tokens through the merge state: a
merged token receives the size-weighted mean of its members' updates (pooled by the merge map).
With nothing merged both are the identity, so a schedule that merges nothing equals the baseline
exactly. The injector therefore costs full-grid FLOPs even after merging (it is ~1% of the ViT).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..merge import MergeState
from .base import MergeStats
from .eva import EvaEncoder, run_layers
from .mask2former.msdeform_attn import MSDeformAttn, grid_reference
from .schedule import NO_MERGE, MergeSchedule


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    """Return a 3x3 conv (no bias), BatchNorm and ReLU."""
    return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True)]


class SpatialPrior(nn.Module):
    """Conv stem: image -> maps at strides 4, 8, 16, 32, all projected to `dim` channels."""

    def __init__(self, inplanes: int, dim: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn_relu(3, inplanes, 2), *conv_bn_relu(inplanes, inplanes),
                                  *conv_bn_relu(inplanes, inplanes), nn.MaxPool2d(3, 2, 1))
        self.down = nn.ModuleList([nn.Sequential(*conv_bn_relu(inplanes, 2 * inplanes, 2)),
                                   nn.Sequential(*conv_bn_relu(2 * inplanes, 4 * inplanes, 2)),
                                   nn.Sequential(*conv_bn_relu(4 * inplanes, 4 * inplanes, 2))])
        widths = (inplanes, 2 * inplanes, 4 * inplanes, 4 * inplanes)
        self.proj = nn.ModuleList(nn.Conv2d(w, dim, 1) for w in widths)

    def forward(self, images: Tensor) -> list[Tensor]:
        """Return [c1..c4] (B, dim, H/s, W/s) for s = 4, 8, 16, 32."""
        maps = [self.stem(images)]
        for down in self.down:
            maps.append(down(maps[-1]))
        return [proj(m) for proj, m in zip(self.proj, maps)]


class ConvFFN(nn.Module):
    """fc -> 3x3 depthwise conv on each of the three levels -> GELU -> fc."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.dw = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)

    def forward(self, x: Tensor, shapes: list[tuple[int, int]]) -> Tensor:
        """Return (B, S, dim) for the levels' tokens x (B, S, dim)."""
        x = self.fc1(x)
        parts, start = [], 0
        for h, w in shapes:
            part = x[:, start:start + h * w].transpose(1, 2).reshape(x.shape[0], -1, h, w)
            parts.append(self.dw(part).flatten(2).transpose(1, 2))
            start += h * w
        return self.fc2(F.gelu(torch.cat(parts, dim=1)))


class Injector(nn.Module):
    """ViT tokens <- deformable attention to the adapter's three levels, times gamma (init 0)."""

    def __init__(self, dim: int, heads: int, points: int, ratio: float) -> None:
        super().__init__()
        self.query_norm, self.feat_norm = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = MSDeformAttn(dim, heads, 3, points, ratio)
        self.gamma = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor, c: Tensor, reference: Tensor, shapes) -> Tensor:
        """Return the update (B, N, dim) for full-grid ViT tokens x, given adapter tokens c."""
        return self.gamma * self.attn(self.query_norm(x), reference, self.feat_norm(c), shapes)


class Extractor(nn.Module):
    """Adapter tokens <- deformable attention to the 1/16 ViT tokens, then ConvFFN."""

    def __init__(self, dim: int, heads: int, points: int, ratio: float, cffn_ratio: float) -> None:
        super().__init__()
        self.query_norm, self.feat_norm = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = MSDeformAttn(dim, heads, 1, points, ratio)
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = ConvFFN(dim, int(dim * cffn_ratio))

    def forward(self, c: Tensor, x: Tensor, reference: Tensor, grid, shapes) -> Tensor:
        """Return updated adapter tokens (B, S, dim) from full-grid ViT tokens x (B, N, dim)."""
        c = c + self.attn(self.query_norm(c), reference, self.feat_norm(x), [grid])
        return c + self.ffn(self.ffn_norm(c), shapes)


def pool_to_merged(update: Tensor, state: MergeState) -> Tensor:
    """Return the size-weighted mean of a full-grid update (B, N, C) over each merged group, (B, N', C)."""
    B, N, C = update.shape
    sums = update.new_zeros(B, state.num_tokens, C)
    sums.scatter_add_(1, state.index[..., None].expand(-1, -1, C), update)
    return sums / state.sizes.to(update.dtype)[..., None]


@dataclass
class AdapterOutput:
    """Four-scale features, merge statistics, captured post-MHSA tokens, final merge state."""

    features: list[Tensor]  # strides 4, 8, 16, 32: (B, dim, H/s, W/s)
    stats: MergeStats
    captured: dict[int, Tensor]
    state: MergeState


class EvaAdapter(nn.Module):
    """EVA ViT + ViT-Adapter; `forward(images, schedule)` returns four-scale features."""

    def __init__(self, encoder: EvaEncoder, interactions: list[tuple[int, int]], heads: int,
                 points: int = 4, ratio: float = 0.5, cffn_ratio: float = 0.25,
                 inplanes: int = 64) -> None:
        super().__init__()
        dim = encoder.dim
        interactions = [tuple(g) for g in interactions]
        covered = [i for a, b in interactions for i in range(a, b + 1)]
        if len(interactions) != 4 or covered != list(range(encoder.depth)):
            raise ValueError(f"adapter interactions {interactions} must be 4 groups covering "
                             f"blocks 0..{encoder.depth - 1} in order")
        self.encoder, self.interactions, self.dim = encoder, interactions, dim
        self.depth = encoder.depth
        self.spm = SpatialPrior(inplanes, dim)
        self.level_embed = nn.Parameter(torch.randn(3, dim) * 0.02)
        self.injectors = nn.ModuleList(Injector(dim, heads, points, ratio) for _ in interactions)
        self.extractors = nn.ModuleList(Extractor(dim, heads, points, ratio, cffn_ratio)
                                        for _ in range(len(interactions) + 2))
        self.up = nn.ConvTranspose2d(dim, dim, 2, 2)
        self.norms = nn.ModuleList(nn.BatchNorm2d(dim) for _ in range(4))

    def forward(self, images: Tensor, schedule: MergeSchedule = NO_MERGE,
                capture: tuple[int, ...] = ()) -> AdapterOutput:
        """Encode images (B, 3, H, W), H and W multiples of 32, merging as `schedule` says."""
        schedule.check_depth(self.depth)
        c1, *levels = self.spm(images)
        shapes = [(int(m.shape[2]), int(m.shape[3])) for m in levels]
        c = torch.cat([m.flatten(2).transpose(1, 2) + self.level_embed[i]
                       for i, m in enumerate(levels)], dim=1)  # (B, S, dim)
        x, grid = self.encoder.embed(images)
        B = x.shape[0]
        state = MergeState.start(B, grid[0] * grid[1], device=x.device, dtype=x.dtype)
        ref_x = grid_reference([grid], x.device).to(x.dtype)[None]
        ref_c = grid_reference(shapes, x.device).to(x.dtype)[None]
        stats: MergeStats = {}
        captured: dict[int, Tensor] = {}
        extractors = iter(self.extractors)
        outs = []  # the ViT's patch tokens after each group, unmerged: (B, N, dim)
        for injector, (first, last) in zip(self.injectors, self.interactions):
            full = state.unmerge(x[:, 1:])
            update = pool_to_merged(injector(full, c, ref_x, shapes), state)
            x = torch.cat([x[:, :1], x[:, 1:] + update], dim=1)
            x, state = run_layers(self.encoder, x, state, grid, range(first, last + 1), schedule,
                                  capture, captured, stats)
            outs.append(state.unmerge(x[:, 1:]))
            c = next(extractors)(c, outs[-1], ref_c, grid, shapes)
        for extractor in extractors:  # the last interaction's two extra extractors
            c = extractor(c, outs[-1], ref_c, grid, shapes)
        maps, start = [], 0
        for h, w in shapes:
            maps.append(c[:, start:start + h * w].transpose(1, 2).reshape(B, self.dim, h, w))
            start += h * w
        c1 = c1 + self.up(maps[0])
        feats = [c1, *maps]
        out = []
        for norm, f, tokens in zip(self.norms, feats, outs[-4:]):
            vit = tokens.transpose(1, 2).reshape(B, self.dim, *grid)
            if vit.shape[-2:] != f.shape[-2:]:
                vit = F.interpolate(vit, size=f.shape[-2:], mode="bilinear", align_corners=False)
            out.append(norm(f + vit))
        return AdapterOutput(out, stats, captured, state)
