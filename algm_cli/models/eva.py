"""EVA backbones with merge hooks: EVA-01 ViT-g (its segmentation config) and EVA-02 T/S/B/L.

- `eva_g`: EVA-01's ViT-g as baaivision/EVA `EVA-01/seg` builds it for ADE20K single-scale
  (`eva_mask2former_896_20k_coco164k2ade20k_ss`): dim 1408, depth 40, 16 heads, MLP 6144 (GELU),
  patch 16 (the patch-14 kernel interpolated), qkv bias, absolute position embeddings, class
  token, global attention in every block. The multi-scale config's relative position bias and
  layer scale (`_relpos_layerscale`) are not built; neither changes the multiply-add count.
- `eva02_t/s/b/l`: timm's EVA-02 (SwiGLU MLP, rotary position embeddings, absolute position
  embeddings, class token), built with patch 16 at the crop size (as EVA's segmentation code
  does for patch-14 checkpoints); `pretrained=true` loads timm's ImageNet weights.

The blocks are timm's `EvaBlock`; this module runs them itself so that a merge step can sit
between a block's attention residual and its MLP (the paper's placement, 1-based layers), the
class token kept aside and never merged. Rotary embeddings of merged tokens: a merged token sits
at the size-weighted mean (row, column) of its members' grid positions, and its rotation angles
are those of that (fractional) position. The angles of the axial rotary embedding are affine in
(row, column), so they are recovered from timm's own embedding of the full grid (origin and the
one-step rotations along rows and columns, exact because every band rotates by < pi per patch)
and evaluated at the mean position; unmerged tokens keep timm's embedding exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch
from timm.layers import resample_abs_pos_embed
from timm.models.eva import Eva
from torch import Tensor, nn

from ..merge import MergeState
from .base import MergeStats
from .schedule import MergeSchedule, MergeStepSpec, apply_step

PATCH = 16
EVA_G = dict(embed_dim=1408, depth=40, num_heads=16, mlp_ratio=6144 / 1408, qkv_bias=True,
             use_abs_pos_emb=True, use_rot_pos_emb=False)
# backbone -> timm EVA-02 model (built with patch 16 at the crop size)
EVA02 = {"eva02_t": "eva02_tiny_patch14_224", "eva02_s": "eva02_small_patch14_224",
         "eva02_b": "eva02_base_patch14_224", "eva02_l": "eva02_large_patch14_224"}
BACKBONES = ("eva_g", *EVA02)


def build_eva(backbone: str, img_size: int, drop_path: float = 0.0, pretrained: bool = False) -> Eva:
    """Return timm's Eva for `backbone` at patch 16 and `img_size` (no classifier)."""
    if backbone == "eva_g":
        if pretrained:
            raise ValueError("backbone=eva_g has no hub weights here: pass checkpoint= instead")
        return Eva(img_size=img_size, patch_size=PATCH, num_classes=0, drop_path_rate=drop_path,
                   **EVA_G)
    if backbone not in EVA02:
        raise ValueError(f"unknown EVA backbone {backbone!r}; expected one of {list(BACKBONES)}")
    return timm.create_model(EVA02[backbone], pretrained=pretrained, img_size=img_size,
                             patch_size=PATCH, num_classes=0, drop_path_rate=drop_path)


def rope_at(full: Tensor, positions: Tensor, width: int) -> Tensor:
    """Return rotary embeddings (..., 2D) at fractional (row, col) positions (..., 2).

    full: timm's (h * w, 2D) sin/cos embedding of the grid in raster order (width w >= 1).
    """
    sin, cos = full.float().chunk(2, -1)
    theta0 = torch.atan2(sin[0], cos[0])

    def step(i: int) -> Tensor:  # rotation from token 0 to token i, in (-pi, pi]
        if i >= full.shape[0]:
            return torch.zeros_like(theta0)
        return torch.atan2(sin[i] * cos[0] - cos[i] * sin[0], cos[i] * cos[0] + sin[i] * sin[0])

    d_col, d_row = step(1) if width > 1 else torch.zeros_like(theta0), step(width)
    theta = theta0 + positions[..., :1] * d_row + positions[..., 1:] * d_col
    return torch.cat([theta.sin(), theta.cos()], dim=-1).to(full.dtype)


def mean_positions(state: MergeState, grid: tuple[int, int]) -> Tensor:
    """Return the size-weighted mean (row, col) of each current token's members, (B, N', 2)."""
    B, N = state.index.shape
    idx = torch.arange(N, device=state.index.device)
    rc = torch.stack([idx // grid[1], idx % grid[1]], -1).float()  # (N, 2)
    sums = torch.zeros(B, state.num_tokens, 2, device=rc.device)
    sums.scatter_add_(1, state.index[..., None].expand(-1, -1, 2), rc.expand(B, -1, -1))
    return sums / state.sizes.float()[..., None]


@dataclass
class Step:
    """What one layer did: captured post-MHSA patch tokens (or None) and the merge it ran."""

    captured: Tensor | None
    label: str | None


class EvaEncoder(nn.Module):
    """An EVA ViT whose layers can be run one at a time with merge steps between MHSA and MLP."""

    def __init__(self, backbone: str = "eva02_t", img_size: int = 512, drop_path: float = 0.0,
                 pretrained: bool = False) -> None:
        super().__init__()
        eva = build_eva(backbone, img_size, drop_path, pretrained)
        self.patch_embed, self.cls_token, self.pos_embed = eva.patch_embed, eva.cls_token, eva.pos_embed
        self.rope, self.blocks = eva.rope, eva.blocks
        self.dim, self.depth = eva.embed_dim, len(eva.blocks)
        self.heads = eva.blocks[0].attn.num_heads

    def embed(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Return (class token + patch tokens with position embeddings (B, 1 + N, C), grid)."""
        x = self.patch_embed.proj(images)  # (B, C, gh, gw)
        grid = (int(x.shape[2]), int(x.shape[3]))
        x = x.flatten(2).transpose(1, 2)
        pos = self.pos_embed
        if pos is not None:
            pos = resample_abs_pos_embed(pos, new_size=grid, old_size=self.patch_embed.grid_size,
                                         num_prefix_tokens=1)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return (x + pos if pos is not None else x), grid

    def rope_for(self, state: MergeState, grid: tuple[int, int]) -> Tensor | None:
        """Return the rotary embedding of the current patch tokens: (N, 2D) or (B, 1, N', 2D)."""
        if self.rope is None:
            return None
        if tuple(self.rope.feat_shape) != grid:
            self.rope.update_feat_shape(list(grid))
        full = self.rope.get_embed()
        if state.num_tokens == state.num_original and state.in_raster_order:
            return full
        return rope_at(full, mean_positions(state, grid), grid[1])[:, None]

    def layer(self, index: int, x: Tensor, state: MergeState, grid: tuple[int, int],
              rope: Tensor | None, spec: MergeStepSpec | None, schedule: MergeSchedule,
              capture: bool = False) -> tuple[Tensor, MergeState, Step]:
        """Run 0-based block `index` on x (B, 1 + N', C), merging after its MHSA if `spec` says."""
        blk = self.blocks[index]
        bias = None
        if schedule.proportional_attention and state.num_tokens < state.num_original:
            sizes = torch.cat([state.sizes.new_ones(x.shape[0], 1), state.sizes], dim=1)
            bias = sizes.log()[:, None, None, :].to(x.dtype)
        out = blk.attn(blk.norm1(x), rope=rope, attn_mask=bias)
        x = x + blk.drop_path1(out if blk.gamma_1 is None else blk.gamma_1 * out)
        captured = x[:, 1:] if capture else None
        if spec is not None and schedule.placement == "between":
            x, state = self._merge(spec, schedule, x, state, grid)
        out = blk.mlp(blk.norm2(x))
        x = x + blk.drop_path2(out if blk.gamma_2 is None else blk.gamma_2 * out)
        if spec is not None and schedule.placement == "after_mlp":
            x, state = self._merge(spec, schedule, x, state, grid)
        return x, state, Step(captured, spec.label if spec is not None else None)

    @staticmethod
    def _merge(spec, schedule, x, state, grid) -> tuple[Tensor, MergeState]:
        """Merge the patch tokens of x (B, 1 + N, C); the class token stays first and unmerged."""
        if schedule.metric != "tokens":
            raise ValueError(f"merge.metric={schedule.metric!r}: EVA backbones merge on tokens only")
        patches, state = apply_step(spec, schedule, x[:, 1:], state, grid, None)
        return torch.cat([x[:, :1], patches], dim=1), state


def run_layers(encoder: EvaEncoder, x: Tensor, state: MergeState, grid: tuple[int, int],
               layers: range, schedule: MergeSchedule, capture: tuple[int, ...],
               captured: dict[int, Tensor], stats: MergeStats) -> tuple[Tensor, MergeState]:
    """Run the 0-based blocks `layers`; fill `captured` / `stats` (1-based layers); return (x, state)."""
    rope = encoder.rope_for(state, grid)
    for i in layers:
        x, new_state, step = encoder.layer(i, x, state, grid, rope, schedule.at(i + 1), schedule,
                                           capture=i + 1 in capture)
        if step.captured is not None:
            captured[i + 1] = step.captured
        if step.label is not None:
            stats[step.label] = new_state.num_tokens / new_state.num_original
            rope = encoder.rope_for(new_state, grid)
        state = new_state
    return x, state
