"""SegViT (Zhang et al., NeurIPS 2022): plain ViT + Attention-to-Mask (ATM) decoder, with merging.

Layout (released zbwxp/SegVit `ATMHead`), where merging meets the decoder (each level reads its
layer's tokens unmerged to the full grid), GFLOPs checks and deviations: docs/MODELS.md.

Training loss (`training_loss`, the released `ATMLoss`): a set-prediction loss on every level's
class and mask logits. Query k stands for class k, so the matching is fixed, not Hungarian (the
released criterion builds its indices from the label values): each class present in the image
supervises its query with class k and its mask with the binary map label == k; every other query
is supervised as no-object. Per level: cross-entropy over K + 1 (no-object weight 0.1), sigmoid
focal loss (alpha 0.25, gamma 2) x 20 and dice loss x 1 on the masks bilinearly upsampled to the
label size, both divided by the number of present masks in the batch; the levels' losses are
summed with equal weights. As released, ignore-label pixels count as background of every mask.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import Tensor, nn

from ..data.transforms import IGNORE
from .base import MergeStats, SegmentationModel
from .registry import SCHEDULE_METHODS, build_vit_family, mapping_builder, register_family
from .schedule import NO_MERGE, MergeSchedule
from .vit import PATCH
from .blocks import pad_to_patch, resize_crop
from .setr import layer_outputs, plain_vit_encoder

# encoder depth -> 1-based layers the ATM decoder reads (shallow to deep)
ATM_LAYERS: dict[int, tuple[int, ...]] = {12: (6, 8, 12), 24: (8, 16, 24)}


class ATMLayer(nn.Module):
    """One ATM decoder layer; returns updated queries and head-averaged mask logits."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"ATM width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.dropout = dropout
        self.self_qkv = nn.Linear(dim, 3 * dim)
        self.self_proj = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.norm3 = nn.LayerNorm(dim)

    def _split(self, x: Tensor) -> Tensor:
        """Return (B, L, D) as (B, heads, L, D / heads)."""
        B, L, D = x.shape
        return x.reshape(B, L, self.heads, D // self.heads).transpose(1, 2)

    def forward(self, queries: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Return (queries (B, Q, D), mask logits (B, Q, N)); memory: patch tokens (B, N, D)."""
        B, Q, D = queries.shape
        p = self.dropout if self.training else 0.0
        q, k, v = (self._split(t) for t in self.self_qkv(queries).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, h, Q, d)
        out = self.self_proj(out.transpose(1, 2).reshape(B, Q, D))
        x = self.norm1(queries + F.dropout(out, p, self.training))
        q, k, v = self._split(self.q(x)), self._split(self.k(memory)), self._split(self.v(memory))
        logits = (q @ k.transpose(-2, -1)) * (D // self.heads) ** -0.5  # (B, h, Q, N)
        masks = logits.mean(dim=1)  # (B, Q, N): the attention-to-mask output
        attn = F.dropout(logits.softmax(dim=-1), p, self.training)
        out = self.proj((attn @ v).transpose(1, 2).reshape(B, Q, D))
        x = self.norm2(x + F.dropout(out, p, self.training))
        ffn = self.fc2(F.dropout(F.relu(self.fc1(x)), p, self.training))
        return self.norm3(x + F.dropout(ffn, p, self.training)), masks


class ATMHead(nn.Module):
    """SegViT's ATM decoder over several encoder levels; returns per-level class and mask logits."""

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        levels: int = 3,
        dim: int = 512,
        heads: int = 16,
        depth: int = 3,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(in_dim, dim) for _ in range(levels))
        self.proj_norm = nn.ModuleList(nn.LayerNorm(dim) for _ in range(levels))
        self.levels = nn.ModuleList(
            nn.ModuleList(ATMLayer(dim, heads, dropout) for _ in range(depth))
            for _ in range(levels)
        )
        self.queries = nn.Embedding(num_classes, dim)  # one query per class
        self.class_embed = nn.Linear(dim, num_classes + 1)  # + the no-object class
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, feats: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Return (class logits (L, B, Q, K+1), summed mask logits (L, B, Q, N)) per level.

        feats: one (B, N, C) token tensor per level, deepest first. Entry l of the outputs is
        the prediction after level l: its queries' class logits and the sum of the mask logits of
        levels 0..l (the last entry is the model's prediction, the others deep supervision).
        """
        B = feats[0].shape[0]
        q = self.queries.weight.unsqueeze(0).expand(B, -1, -1)  # (B, Q, D)
        classes, masks = [], []
        total = None
        for x, proj, norm, layers in zip(feats, self.proj, self.proj_norm, self.levels):
            memory = norm(proj(x))  # (B, N, D)
            for layer in layers:
                q, level_masks = layer(q, memory)
            total = level_masks if total is None else total + level_masks
            classes.append(self.class_embed(q))
            masks.append(total)
        return torch.stack(classes), torch.stack(masks)


NO_OBJECT_WEIGHT = 0.1
MASK_WEIGHT = 20.0  # focal loss
DICE_WEIGHT = 1.0


def atm_loss(classes: Tensor, masks: Tensor, labels: Tensor, num_classes: int,
             ignore_index: int = IGNORE) -> Tensor:
    """Return SegViT's ATM loss summed over levels.

    classes: (L, B, K, K + 1) class logits; masks: (L, B, K, gh, gw) mask logits on the patch
    grid; labels: (B, H, W) with `ignore_index`. Query k is matched to class k.
    """
    L, B, K = classes.shape[:3]
    H, W = labels.shape[-2:]
    padded = (masks.shape[-2] * PATCH, masks.shape[-1] * PATCH)  # the padded input's size
    valid = labels != ignore_index
    onehot = F.one_hot(torch.where(valid, labels, 0), num_classes).permute(0, 3, 1, 2)
    onehot = (onehot * valid.unsqueeze(1)).float()  # (B, K, H, W) binary class maps
    present = onehot.flatten(2).amax(-1) > 0  # (B, K)
    targets = torch.where(present, torch.arange(K, device=labels.device), K)  # no-object = K
    weight = classes.new_ones(K + 1)
    weight[K] = NO_OBJECT_WEIGHT
    num_masks = max(float(present.sum()), 1.0)
    chosen = onehot[present]  # (M, H, W)
    total = classes.new_zeros(())
    for level in range(L):
        total = total + F.cross_entropy(classes[level].float().transpose(1, 2), targets, weight)
        if chosen.shape[0] == 0:
            continue
        logits = F.interpolate(masks[level].float(), size=padded, mode="bilinear",
                               align_corners=False)[..., :H, :W][present].flatten(1)  # (M, H*W)
        target = chosen.flatten(1)
        prob = logits.sigmoid()
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p_t = prob * target + (1 - prob) * (1 - target)
        alpha_t = 0.25 * target + 0.75 * (1 - target)
        focal = (alpha_t * bce * (1 - p_t) ** 2).mean(1).sum() / num_masks
        dice = 1 - (2 * (prob * target).sum(-1) + 1) / (prob.sum(-1) + target.sum(-1) + 1)
        total = total + MASK_WEIGHT * focal + DICE_WEIGHT * dice.sum() / num_masks
    return total


class SegViT(SegmentationModel):
    """ViT encoder + ATM decoder reading three encoder layers, with an optional merge schedule."""

    def __init__(
        self,
        backbone: str = "vit_l",
        num_classes: int = 150,
        img_size: int = 640,
        schedule: MergeSchedule = NO_MERGE,
        drop_path: float = 0.0,
        pretrained: bool = False,
        decoder_layers: int = 3,
        decoder_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.encoder = plain_vit_encoder(backbone, img_size, drop_path, pretrained)
        depth, dim = self.encoder.depth, self.encoder.dim
        if depth not in ATM_LAYERS:
            raise ValueError(f"SegViT needs a 12- or 24-layer ViT; {backbone} has {depth}")
        schedule.check_depth(depth)
        self.schedule = schedule
        self.layers = ATM_LAYERS[depth]
        self.decoder = ATMHead(dim, num_classes, len(self.layers), dim // 2, self.encoder.heads,
                               decoder_layers, decoder_dropout)

    def _decode(self, padded: Tensor) -> tuple[Tensor, Tensor, MergeStats]:
        """Return (class logits (L, B, Q, K+1), mask logits (L, B, Q, gh, gw), stats)."""
        depth = self.encoder.depth
        intermediate = tuple(layer for layer in self.layers if layer != depth)
        enc = self.encoder(padded, self.schedule, outputs=intermediate)
        tokens = layer_outputs(enc, self.layers, depth)  # layer -> (B, N, C), full grid
        classes, masks = self.decoder([tokens[layer] for layer in reversed(self.layers)])
        masks = masks.reshape(*masks.shape[:3], *enc.grid)
        return classes, masks, enc.stats

    def forward_atm(self, images: Tensor) -> tuple[Tensor, Tensor, MergeStats]:
        """Return (class logits (L, B, K, K+1), mask logits (L, B, K, gh, gw), stats) for a loss.

        The mask logits lie on the patch grid of the padded input (upsample them to the padded
        size and crop to (H, W) to compare with labels); L = 3 levels, the last the prediction.
        """
        return self._decode(pad_to_patch(images))

    def training_loss(self, images: Tensor, labels: Tensor, ignore_index: int = IGNORE) -> Tensor:
        """Return the ATM set-prediction loss summed over the decoder levels (see module doc)."""
        classes, masks, _ = self.forward_atm(images)
        return atm_loss(classes, masks, labels, self.num_classes, ignore_index)

    def forward_with_stats(self, images: Tensor) -> tuple[Tensor, MergeStats]:
        """Return (class scores (B, K, H, W), kept-token fractions after each merge step)."""
        size = (int(images.shape[-2]), int(images.shape[-1]))
        padded = pad_to_patch(images)
        classes, masks, stats = self._decode(padded)
        masks = resize_crop(masks[-1], (int(padded.shape[-2]), int(padded.shape[-1])), size)
        probs = classes[-1].softmax(dim=-1)[..., :-1]  # (B, Q, K): no-object dropped
        return torch.einsum("bqk,bqhw->bkhw", probs, masks.sigmoid()), stats


SEGVIT_OPTIONS = {"drop_path": (0.0, float), "pretrained": (False, bool),
                  "decoder_layers": (3, int), "decoder_dropout": (0.1, float)}


build_segvit = mapping_builder(SegViT, SEGVIT_OPTIONS)  # (cfg_model, backbone, classes, crop, schedule)

register_family(name="segvit", builder=partial(build_vit_family, SegViT, SEGVIT_OPTIONS),
                backbone="vit", merges=SCHEDULE_METHODS, bucket=True,
                objective="ATM: class CE + focal + dice per layer", analyze=True)
