"""Mask2Former's set loss for semantic segmentation: Hungarian matching, CE + point mask losses.

As in facebookresearch/Mask2Former (`HungarianMatcher`, `SetCriterion`) and mmdet's config in
EVA's repository:
- targets: one binary mask per class present in the image (ignored pixels belong to none);
- matching cost = 2 * (-p(class)) + 5 * BCE + 5 * dice, the mask terms on `points` random
  points shared by predictions and targets (`scipy.optimize.linear_sum_assignment`);
- loss = 2 * class CE over K + 1 (no-object weight 0.1) + 5 * BCE + 5 * dice, the mask terms on
  `points` importance-sampled points per matched mask: `oversample` x points random candidates,
  the `importance` share most uncertain (|logit| smallest) kept, the rest fresh random points;
  mask terms divided by the number of target masks; summed over every decoder prediction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from .transformer_decoder import Prediction

CLASS_WEIGHT, MASK_WEIGHT, DICE_WEIGHT, NO_OBJECT_WEIGHT = 2.0, 5.0, 5.0, 0.1


def point_sample(maps: Tensor, coords: Tensor) -> Tensor:
    """Return maps (N, h, w) bilinearly sampled at coords (N, P, 2) as (x, y) in [0, 1]: (N, P)."""
    grid = (2 * coords - 1)[:, :, None, :]  # (N, P, 1, 2)
    return F.grid_sample(maps[:, None], grid, align_corners=False)[:, 0, :, 0]


def semantic_targets(labels: Tensor, num_classes: int, ignore_index: int) -> list[tuple[Tensor, Tensor]]:
    """Return per image (classes (T,), binary masks (T, H, W) float) of the classes present."""
    out = []
    for label in labels:
        present = torch.unique(label)
        present = present[(present != ignore_index) & (present < num_classes)]
        out.append((present, (label[None] == present[:, None, None]).float()))
    return out


def dice_cost(pred: Tensor, target: Tensor) -> Tensor:
    """Return the pairwise dice cost (Q, T) of mask logits pred (Q, P) and targets (T, P)."""
    p = pred.sigmoid()
    num = 2 * p @ target.T
    return 1 - (num + 1) / (p.sum(-1)[:, None] + target.sum(-1)[None] + 1)


def bce_cost(pred: Tensor, target: Tensor) -> Tensor:
    """Return the pairwise mean BCE (Q, T) of mask logits pred (Q, P) and targets (T, P)."""
    pos = F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred), reduction="none")
    neg = F.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred), reduction="none")
    return (pos @ target.T + neg @ (1 - target).T) / pred.shape[1]


@torch.no_grad()
def hungarian_match(classes: Tensor, masks: Tensor, target_classes: Tensor, target_masks: Tensor,
                    points: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Return (query indices, target indices) of the minimum-cost matching for one image.

    classes (Q, K+1) logits; masks (Q, h, w) logits; target_masks (T, H, W).
    """
    if target_classes.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    coords = torch.rand(1, points, 2, generator=generator).to(masks)
    pred = point_sample(masks, coords.expand(masks.shape[0], -1, -1))
    tgt = point_sample(target_masks.to(masks), coords.expand(target_masks.shape[0], -1, -1))
    cost = (-CLASS_WEIGHT * classes.softmax(-1)[:, target_classes]
            + MASK_WEIGHT * bce_cost(pred.float(), tgt.float())
            + DICE_WEIGHT * dice_cost(pred.float(), tgt.float()))
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


def uncertain_points(logits: Tensor, points: int, oversample: float, importance: float,
                     generator: torch.Generator | None = None) -> Tensor:
    """Return (N, points, 2) coordinates: the most uncertain of oversampled candidates + random."""
    N = logits.shape[0]
    candidates = torch.rand(N, int(points * oversample), 2, generator=generator).to(logits)
    uncertainty = -point_sample(logits, candidates).abs()  # (N, oversampled)
    k = int(importance * points)
    top = uncertainty.topk(k, dim=1).indices
    chosen = torch.gather(candidates, 1, top[..., None].expand(-1, -1, 2))
    fresh = torch.rand(N, points - k, 2, generator=generator).to(logits)
    return torch.cat([chosen, fresh], dim=1)


def set_loss(predictions: list[Prediction], labels: Tensor, num_classes: int,
             ignore_index: int = 255, points: int = 12544, oversample: float = 3.0,
             importance: float = 0.75, generator: torch.Generator | None = None) -> Tensor:
    """Return the summed set loss of every prediction (class logits (B, Q, K+1), masks (B, Q, h, w))."""
    targets = semantic_targets(labels, num_classes, ignore_index)
    num_masks = max(sum(int(t[0].numel()) for t in targets), 1)
    total = labels.new_zeros((), dtype=torch.float32)
    for classes, masks in predictions:
        classes, masks = classes.float(), masks.float()
        B, Q = classes.shape[:2]
        weight = classes.new_ones(num_classes + 1)
        weight[-1] = NO_OBJECT_WEIGHT
        wanted = torch.full((B, Q), num_classes, dtype=torch.long, device=classes.device)
        picked_pred, picked_tgt = [], []
        for b, (t_cls, t_masks) in enumerate(targets):
            rows, cols = hungarian_match(classes[b], masks[b], t_cls, t_masks, points, generator)
            wanted[b, rows.to(classes.device)] = t_cls[cols.to(t_cls.device)]
            picked_pred.append(masks[b][rows.to(masks.device)])
            picked_tgt.append(t_masks[cols.to(t_masks.device)])
        total = total + CLASS_WEIGHT * F.cross_entropy(classes.transpose(1, 2), wanted, weight)
        pred, tgt = torch.cat(picked_pred), torch.cat(picked_tgt).to(masks)
        if pred.shape[0] == 0:
            total = total + 0 * masks.sum()
            continue
        with torch.no_grad():
            coords = uncertain_points(pred.detach(), points, oversample, importance, generator)
            tgt_points = point_sample(tgt, coords)
        pred_points = point_sample(pred, coords)
        bce = F.binary_cross_entropy_with_logits(pred_points, tgt_points, reduction="none").mean(1)
        p = pred_points.sigmoid()
        dice = 1 - (2 * (p * tgt_points).sum(-1) + 1) / (p.sum(-1) + tgt_points.sum(-1) + 1)
        total = total + (MASK_WEIGHT * bce.sum() + DICE_WEIGHT * dice.sum()) / num_masks
    return total
