"""Plain ViT encoder (timm's blocks) with merge steps between MHSA and MLP.

The encoder owns timm's parameters under Segmenter's names (`patch_embed.proj`, `cls_token`,
`pos_embed`, `blocks.{i}`, `norm`), so official Segmenter checkpoints and timm's AugReg weights
load without renaming. Its forward is written here rather than patched into timm: after each
layer's attention residual the schedule's merge step (if any) runs on the patch tokens, the class
token kept aside and never merged (as released).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from ..merge import MergeState
from .base import MergeStats
from .blocks import (
    attention_residual, embed, full_block, mlp_residual, padded_block, resize_pos_embed,
)
from .pretrained import create_timm
from .registry import backbone as backbone_facts
from .schedule import NO_MERGE, MergeSchedule, apply_step

PATCH = 16  # every ViT backbone (models/registry.py BACKBONES)
PRETRAINED_SIZE = 384


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


class ViTEncoder(nn.Module):
    """ViT-T/S/B/L (AugReg) or DINOv2 patch-16 encoder with prefix tokens and merge hooks.

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
        facts = backbone_facts(backbone)
        if facts.kind != "vit":
            raise ValueError(f"unknown backbone {backbone!r}; expected a ViT (vit_t..vit_l)")
        if pos_resize not in ("bilinear", "bicubic"):
            raise ValueError(f"pos_resize must be bilinear or bicubic; got {pos_resize!r}")
        self.dim, self.depth, self.heads = facts.dim, facts.depth, facts.heads
        self.pos_resize = pos_resize
        if facts.registers and not class_token:
            raise ValueError(f"backbone {backbone!r} has register tokens; it keeps its class token")
        self.prefix = (1 + facts.registers) if class_token else 0  # tokens before the patches
        if facts.registers:  # DINOv2: timm's own norms (eps 1e-6, as pretrained), patch 16
            vit = create_timm(facts.timm_name, pretrained, img_size, img_size,
                              resize=partial(resize_pos_embed, prefix=0, mode=pos_resize),
                              num_classes=0, drop_path_rate=drop_path, patch_size=PATCH)
        else:
            vit = create_timm(
                facts.timm_name, pretrained, PRETRAINED_SIZE, img_size,
                resize=partial(resize_pos_embed, mode=pos_resize),
                num_classes=0,
                drop_path_rate=drop_path,
                norm_layer=partial(nn.LayerNorm, eps=1e-5),  # Segmenter's eps (timm's ViT: 1e-6)
            )
        self.patch_embed, self.blocks, self.norm = vit.patch_embed, vit.blocks, vit.norm
        self.cls_token = vit.cls_token
        if facts.registers:
            self.reg_token = vit.reg_token
            # the data are normalised with mean = std = 0.5 (Segmenter); DINOv2 was trained on
            # ImageNet's statistics: x' = (0.5 x + 0.5 - mean) / std, as an affine map
            mean = torch.tensor(vit.pretrained_cfg["mean"]).view(1, 3, 1, 1)
            std = torch.tensor(vit.pretrained_cfg["std"]).view(1, 3, 1, 1)
            self.register_buffer("input_scale", 0.5 / std, persistent=False)
            self.register_buffer("input_shift", (0.5 - mean) / std, persistent=False)
        grid = (img_size // PATCH, img_size // PATCH)
        pos_prefix = 0 if facts.registers else 1  # DINOv2: no class-token position embedding
        self.pos_embed = nn.Parameter(resize_pos_embed(vit.pos_embed.data, grid, pos_prefix,
                                                       mode=pos_resize))
        self.bucket = 0
        self.block_fn = full_block

    def prepare(self, images: Tensor) -> Tensor:
        """Return images in the backbone's own normalisation (DINOv2: ImageNet statistics)."""
        if not hasattr(self, "input_scale"):
            return images
        return images * self.input_scale + self.input_shift

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
        x, grid = embed(self, self.prepare(images))  # (B, p + N, C), p = self.prefix
        p = self.prefix
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
                x, qkv = attention_residual(blk, x, bias)
                if layer in capture:
                    captured[layer] = x[:, p:]
                if spec is not None and schedule.placement == "between":
                    x, state = self._merge(spec, schedule, x, state, grid, qkv)
                    stats[spec.label] = state.num_tokens / state.num_original
                x = mlp_residual(blk, x)
                if spec is not None and schedule.placement == "after_mlp":
                    x, state = self._merge(spec, schedule, x, state, grid, None)
                    stats[spec.label] = state.num_tokens / state.num_original
            if layer in outputs:
                layers[layer] = state.unmerge(x[:, p:])
        x = self.norm(x)
        return EncoderOutput(x[:, p:], x[:, :min(p, 1)], state, grid, stats, captured, layers)

    def _merge(self, spec, schedule, x, state, grid, qkv) -> tuple[Tensor, MergeState]:
        """Merge the patch tokens of x (B, p + N, C); the prefix tokens stay first, unmerged.

        With a class token (and registers) aside, GBM / ToMe split as the official codes do,
        the prefix counted as position 0 of A.
        """
        p = self.prefix
        cls, patches = x[:, :p], x[:, p:]
        metric = None
        if schedule.metric != "tokens":
            q, k, v = qkv
            chosen = {"queries": q, "keys": k, "values": v}[schedule.metric]
            metric = chosen.mean(dim=1)[:, p:]  # (B, N, d): averaged over heads, prefix dropped
        patches, state = apply_step(spec, schedule, patches, state, grid, metric,
                                    class_token=p >= 1)
        return torch.cat([cls, patches], dim=1), state
