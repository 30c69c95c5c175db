"""The pose task of `algm run`: its datasets, training batches, metrics and evaluation stage.

Metrics, on person crops with predicted keypoints (decoded from heatmaps) and the labelled ones:
- PCK@t (mmpose's `PCKAccuracy`, norm_item="bbox"): a labelled keypoint is correct when the
  distance between prediction and label, each axis divided by the box width / height, is < t;
  PCK = correct / labelled keypoints over the set (reported for t = 0.05, 0.1, 0.2).
- OKS AP (COCO's keypoint AP, re-derived from pycocotools' `COCOeval` for one person per crop
  with the ground-truth box, as top-down evaluation with GT boxes): OKS = mean over labelled
  keypoints of exp(-d^2 / (2 area (2 sigma_k)^2)); all crops' predictions are ranked by score
  (mean of the keypoint heatmap maxima), each is a true positive at threshold t when its OKS >= t;
  precision is made monotone and read at the 101 recall points 0, 0.01, .., 1 (0 beyond the
  largest recall); AP = mean over t = 0.50, 0.55, .., 0.95. Persons without a labelled keypoint
  are ignored, as in COCO.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from ..data import DatasetError
from ..data.pose import COCO_SIGMAS, CocoKeypoints, SyntheticPose
from ..data.transforms import normalize
from ..models.pose import decode_heatmaps

OKS_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2))
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
PCK_THRESHOLDS = (0.05, 0.1, 0.2)


# ----------------------------------------------------------------------------- metrics


def pck(pred: np.ndarray, gt: np.ndarray, boxes: np.ndarray, threshold: float) -> float:
    """Return PCK@threshold of pred (N, K, 2) vs gt (N, K, 3) normalised by boxes (N, 4) w, h."""
    size = np.maximum(boxes[:, None, 2:4], 1e-6)  # (N, 1, 2)
    dist = np.linalg.norm((pred - gt[..., :2]) / size, axis=-1)  # (N, K)
    labelled = gt[..., 2] > 0
    if not labelled.any():
        return float("nan")
    return float((dist[labelled] < threshold).mean())


def oks(pred: np.ndarray, gt: np.ndarray, area: np.ndarray,
        sigmas: tuple[float, ...] = COCO_SIGMAS) -> np.ndarray:
    """Return the OKS (N,) of pred (N, K, 2) against gt (N, K, 3) with instance areas (N,)."""
    var = (2 * np.asarray(sigmas)) ** 2  # (K,)
    d2 = ((pred - gt[..., :2]) ** 2).sum(-1)  # (N, K)
    e = d2 / var / (area[:, None] + np.spacing(1)) / 2
    labelled = gt[..., 2] > 0
    count = labelled.sum(-1)
    return np.where(count > 0, (np.exp(-e) * labelled).sum(-1) / np.maximum(count, 1), 0.0)


def average_precision(tp: np.ndarray, scores: np.ndarray, positives: int) -> float:
    """Return COCO's 101-point interpolated AP of detections (tp flags, scores) over positives."""
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    tps = np.cumsum(tp[order])
    fps = np.cumsum(~tp[order])
    recall = tps / positives
    precision = tps / np.maximum(tps + fps, np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone from the right
    index = np.searchsorted(recall, RECALL_POINTS, side="left")
    at = np.where(index < len(precision), precision[np.minimum(index, len(precision) - 1)], 0.0)
    return float(at.mean())


def oks_ap(pred: np.ndarray, scores: np.ndarray, gt: np.ndarray, area: np.ndarray,
           sigmas: tuple[float, ...] = COCO_SIGMAS) -> dict[str, float]:
    """Return {"ap", "ap50", "ap75"} (fractions) of one prediction per person crop."""
    keep = (gt[..., 2] > 0).any(-1)  # COCO ignores persons without labelled keypoints
    values = oks(pred[keep], gt[keep], area[keep], sigmas)
    per_t = {t: average_precision(values >= t, scores[keep], int(keep.sum()))
             for t in OKS_THRESHOLDS}
    return {"ap": float(np.mean(list(per_t.values()))), "ap50": per_t[0.5], "ap75": per_t[0.75]}


# ----------------------------------------------------------------------------- data


def open_pose_dataset(spec, split: str):
    """Return the pose dataset of `split`: synthetic (generated in memory) or COCO keypoints."""
    d, size = spec.dataset_options, spec.dataset.crop
    if d["name"] == "synthetic_pose":
        count = int(d["train_images"] if split == "train" else d["val_images"])
        return SyntheticPose(count, size, seed=1 if split == "train" else 2)
    if d["name"] == "coco_keypoints":
        return CocoKeypoints(d["root"], str(d["splits"][split]), size, int(d["num_keypoints"]))
    raise DatasetError(f"dataset={d['name']} has no keypoints; task=pose expects dataset="
                       f"synthetic_pose or coco_keypoints")


@dataclass
class PoseBatches:
    """An endless stream of (images (B,3,S,S) normalised, keypoints (B,K,3)), from a seed."""

    dataset: object
    batch_size: int
    seed: int

    def __call__(self, start: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield batches from iteration `start` on (deterministic in seed and iteration)."""
        it, n = start, len(self.dataset)
        if n == 0:
            raise DatasetError("the pose training split has no usable person")
        while True:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + it)
            samples = [self.dataset[i] for i in torch.randint(n, (self.batch_size,), generator=g).tolist()]
            yield (torch.stack([normalize(s["image"]) for s in samples]),
                   torch.stack([s["keypoints"] for s in samples]))
            it += 1


# ----------------------------------------------------------------------------- stage


@torch.inference_mode()
def evaluate_pose(model, dataset, device: torch.device, limit: int | None,
                  batch: int = 16) -> dict:
    """Return the row's pose metrics (percent) of `model` on the first `limit` crops."""
    count = len(dataset) if limit is None else min(int(limit), len(dataset))
    if count == 0:
        raise DatasetError("the pose validation split has no usable person")
    preds, scores, gts, boxes, areas, kept = [], [], [], [], [], {}
    for start in tqdm(range(0, count, batch), desc="eval pose", leave=False):
        samples = [dataset[i] for i in range(start, min(start + batch, count))]
        images = torch.stack([normalize(s["image"]) for s in samples]).to(device)
        heatmaps, stats = model.forward_with_stats(images)
        xy, score = decode_heatmaps(heatmaps.float())
        preds.append(xy.cpu().numpy())
        scores.append(score.mean(-1).cpu().numpy())
        gts += [s["keypoints"].numpy() for s in samples]
        boxes += [s["bbox"].numpy() for s in samples]
        areas += [s["area"] for s in samples]
        kept = stats or kept
    pred, gt = np.concatenate(preds), np.stack(gts)
    box, area = np.stack(boxes), np.asarray(areas, dtype=np.float64)
    ap = oks_ap(pred, np.concatenate(scores), gt, area)
    row = {f"pck{int(round(t * 100)):02d}": 100 * pck(pred, gt, box, t) for t in PCK_THRESHOLDS}
    row.update(oks_ap=100 * ap["ap"], oks_ap50=100 * ap["ap50"], oks_ap75=100 * ap["ap75"],
               eval_images=count)
    return {**row, "kept": kept}
