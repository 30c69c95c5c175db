"""EoMT ("Your ViT is Secretly an Image Segmentation Model", Kerssies et al., CVPR 2025) with ALGM.

Architecture, as in tue-mps/eomt `models/eomt.py`: a plain DINOv2 ViT (timm, built with patch 16,
1 class + 4 register tokens) whose last `query_blocks` blocks also process `num_queries` learned
queries, prepended to the sequence before the first of them. Before each of those blocks (and
after the final norm) the queries predict class logits (Linear -> K + 1) and mask logits (a
3-layer MLP dotted with the patch features upscaled by ConvTranspose/depthwise-conv blocks to
stride 4). In those blocks the queries attend only to the patches inside their predicted mask
(masked attention); in training each (image, query) mask is switched off with the block's
annealing probability, which falls from 1 to 0 (poly 0.9) over a block-staggered window, so the
final model needs no mask at all (`attn_mask_probs` = 0 at inference).

Semantic inference: per-pixel scores = sum_q softmax(class_q)[:K] * sigmoid(mask_q), upsampled.
Training: Mask2Former's set loss (Hungarian matching, class CE with no-object weight 0.1, point
BCE + dice) on every block's prediction and the final one.

ALGM on EoMT (our choice; the EoMT issue #67 setting is CLAP in layer 1 and GBM in layer 7): the
merge schedule acts on the patch tokens of the blocks before the query blocks only (a step in a
query block is an error); the prefix tokens and the queries never merge. Merged patch tokens run
through the query blocks as they are; the mask head reads them unmerged to the full grid (one
gather), and a query's mask over a merged token is its mask logit averaged over the token's
members (the size-weighted mean, pooled through the merge state), so masked attention sees the
same regions as without merging.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import Tensor, nn

from ..merge import MergeState
from .base import MergeStats, SegmentationModel
from .blocks import attention, embed, pad_to_patch, resize_crop
from .registry import SCHEDULE_METHODS, BuildRequest, read_options, register_family
from .schedule import NO_MERGE, MergeSchedule
from .vit import ViTEncoder

PATCH = 16
# mask-annealing windows of the released ADE20K semantic config (iterations 6520 .. 32600 of a
# 40k schedule), as fractions of the run's iterations: block k anneals over [start_k, end_k]
ANNEAL_START = (0.163, 0.326, 0.489, 0.652)
ANNEAL_END = (0.326, 0.489, 0.652, 0.815)


class ScaleBlock(nn.Module):
    """x2 upsampling: ConvTranspose 2x2 stride 2, GELU, depthwise 3x3 conv, LayerNorm2d."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=False)
        self.norm = LayerNorm2d(dim)

    def forward(self, x: Tensor) -> Tensor:
        """Return (B, C, 2h, 2w) features from (B, C, h, w)."""
        return self.norm(self.conv2(self.act(self.conv1(x))))


def annealed_probability(step: int, total: int, block: int, blocks: int) -> float:
    """Return the probability that block `block` (0-based among `blocks`) masks attention."""
    k = block + len(ANNEAL_START) - blocks  # the last blocks use the last windows
    start, end = ANNEAL_START[max(k, 0)] * total, ANNEAL_END[max(k, 0)] * total
    if step < start:
        return 1.0
    if step >= end:
        return 0.0
    return (1.0 - (step - start) / (end - start)) ** 0.9


def semantic_scores(class_logits: Tensor, mask_logits: Tensor) -> Tensor:
    """Return (B, K, h, w) scores: class probabilities (no-object dropped) x mask probabilities."""
    return torch.einsum("bqk,bqhw->bkhw", class_logits.softmax(-1)[..., :-1], mask_logits.sigmoid())


class EoMT(SegmentationModel):
    """DINOv2 ViT whose last blocks segment with learned queries; optional ALGM schedule."""

    def __init__(
        self,
        backbone: str = "dinov2_s",
        num_classes: int = 150,
        img_size: int = 512,
        schedule: MergeSchedule = NO_MERGE,
        num_queries: int = 100,
        query_blocks: int = 4,
        drop_path: float = 0.0,
        pretrained: bool = False,
        iterations: int = 1,
        points: int = 12544,
    ) -> None:
        super().__init__()
        self.encoder = ViTEncoder(backbone, img_size, drop_path, pretrained)
        self.num_classes, self.dim = num_classes, self.encoder.dim
        self.depth, self.prefix = self.encoder.depth, self.encoder.prefix
        if not 1 <= query_blocks <= self.depth:
            raise ValueError(f"query_blocks must lie in [1, {self.depth}]; got {query_blocks}")
        self.num_queries, self.query_blocks = num_queries, query_blocks
        self.first_query_layer = self.depth - query_blocks + 1  # 1-based
        schedule.check_depth(self.depth)
        self.schedule = schedule
        self.queries = nn.Embedding(num_queries, self.dim)
        self.class_head = nn.Linear(self.dim, num_classes + 1)
        self.mask_head = nn.Sequential(
            nn.Linear(self.dim, self.dim), nn.GELU(), nn.Linear(self.dim, self.dim), nn.GELU(),
            nn.Linear(self.dim, self.dim))
        upscales = max(1, int(math.log2(PATCH)) - 2)
        self.upscale = nn.Sequential(*[ScaleBlock(self.dim) for _ in range(upscales)])
        self.register_buffer("train_step", torch.zeros((), dtype=torch.long))
        self.iterations, self.points = max(int(iterations), 1), points

    @property
    def schedule(self) -> MergeSchedule:
        """Return the merge schedule (steps only before the query blocks)."""
        return self._schedule

    @schedule.setter
    def schedule(self, schedule: MergeSchedule) -> None:
        late = [s.layer for s in schedule.steps if s.layer >= self.first_query_layer]
        if late:
            raise ValueError(f"EoMT merges only before its query blocks (layers < "
                             f"{self.first_query_layer}); got merge layers {late}")
        self._schedule = schedule

    def mask_probabilities(self) -> list[float]:
        """Return each query block's masking probability now (0 outside training)."""
        if not self.training:
            return [0.0] * self.query_blocks
        step = int(self.train_step)
        return [annealed_probability(step, self.iterations, k, self.query_blocks)
                for k in range(self.query_blocks)]

    def predict(self, x: Tensor, state: MergeState, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Return (class logits (B, Q, K+1), mask logits (B, Q, 4h, 4w)) from normed tokens x."""
        q, patches = x[:, : self.num_queries], x[:, self.num_queries + self.prefix:]
        full = state.unmerge(patches)  # (B, N, C) on the grid
        features = full.transpose(1, 2).reshape(x.shape[0], self.dim, *grid)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_head(q), self.upscale(features))
        return self.class_head(q), masks

    def attention_bias(self, masks: Tensor, state: MergeState, grid, prob: float) -> Tensor | None:
        """Return the additive (B, 1, L, L) mask letting queries see only their predicted region."""
        if prob <= 0:
            return None
        B, Q = masks.shape[:2]
        on_grid = F.interpolate(masks.detach(), size=grid, mode="bilinear", align_corners=False)
        per_token = on_grid.flatten(2)  # (B, Q, N)
        if state.num_tokens < state.num_original:  # pool the members of each merged token
            summed = per_token.new_zeros(B, Q, state.num_tokens).scatter_add_(
                2, state.index[:, None].expand(-1, Q, -1), per_token)
            per_token = summed / state.sizes[:, None].to(summed)
        blocked = per_token <= 0  # (B, Q, N') patches outside the query's mask
        keep = torch.rand(B, Q, 1, device=masks.device) >= prob  # annealing: mask switched off
        blocked = blocked & ~keep
        L = self.num_queries + self.prefix + state.num_tokens
        bias = masks.new_zeros(B, 1, L, L)
        bias[:, 0, :Q, Q + self.prefix:] = bias.new_zeros(blocked.shape).masked_fill(
            blocked, -float("inf"))
        return bias

    def forward_all(self, images: Tensor) -> tuple[list[tuple[Tensor, Tensor]], MergeStats]:
        """Return every prediction (class, mask logits) (query blocks, then final) and merge stats."""
        x, grid = embed(self.encoder, self.encoder.prepare(images))  # (B, P + N, C)
        B = x.shape[0]
        state = MergeState.start(B, grid[0] * grid[1], device=x.device, dtype=x.dtype)
        predictions, stats, probs = [], {}, self.mask_probabilities()
        for layer, blk in enumerate(self.encoder.blocks, start=1):
            bias = None
            if layer == self.first_query_layer:
                x = torch.cat([self.queries.weight.expand(B, -1, -1), x], dim=1)
            if layer >= self.first_query_layer:
                classes, masks = self.predict(self.encoder.norm(x), state, grid)
                predictions.append((classes, masks))
                bias = self.attention_bias(masks, state, grid, probs[layer - self.first_query_layer])
            out, qkv = attention(blk.attn, blk.norm1(x), bias)
            x = x + blk.drop_path1(blk.ls1(out))
            spec = self.schedule.at(layer)
            if spec is not None:
                # before the query blocks x holds the prefix and patch tokens only: the ViT
                # encoder's own merge step applies (prefix aside, the schedule's metric)
                x, state = self.encoder._merge(spec, self.schedule, x, state, grid, qkv)
                stats[spec.label] = state.num_tokens / state.num_original
            x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
        predictions.append(self.predict(self.encoder.norm(x), state, grid))
        return predictions, stats

    def forward_with_stats(self, images: Tensor) -> tuple[Tensor, MergeStats]:
        """Return (semantic scores (B, K, H, W), merge statistics)."""
        padded = pad_to_patch(images, PATCH)
        predictions, stats = self.forward_all(padded)
        scores = semantic_scores(*predictions[-1])
        return resize_crop(scores, padded.shape[-2:], images.shape[-2:]), stats

    def training_loss(self, images: Tensor, labels: Tensor, ignore_index: int = 255) -> Tensor:
        """Return the set loss summed over every prediction; advance the annealing step."""
        from .mask2former.criterion import set_loss

        predictions, _ = self.forward_all(images)
        self.train_step += 1
        # masks stay at stride 4: the loss samples points in normalised coordinates
        return set_loss(predictions, labels, self.num_classes, ignore_index, points=self.points)


# model options of conf/model/eomt.yaml: key -> (default, cast)
EOMT_OPTIONS = {"num_queries": (100, int), "query_blocks": (4, int), "drop_path": (0.0, float),
                "pretrained": (False, bool), "points": (12544, int)}


def build_eomt(request: BuildRequest) -> EoMT:
    """Return the EoMT of `request` (backbone, classes, crop, schedule, model options)."""
    return EoMT(request.backbone, request.num_classes, request.img_size, request.schedule,
                iterations=request.train_iterations, **read_options(request.model, EOMT_OPTIONS))


register_family(name="eomt", builder=build_eomt, backbone="vit", merges=SCHEDULE_METHODS,
                batching=("min",), bucket=False, objective="mask classification (set loss)",
                registers=True)
