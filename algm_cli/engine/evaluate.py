"""Evaluation: sliding-window inference and mIoU from one confusion matrix over the dataset."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Return window offsets covering [0, size): every `stride`, plus one flush with the end."""
    if size <= window:
        return [0]
    starts = list(range(0, size - window, stride))
    return starts + [size - window]


@torch.no_grad()
def sliding_window(
    forward: Callable[[Tensor], tuple[Tensor, dict]],
    image: Tensor,
    num_classes: int,
    window: int,
    stride: int,
    window_batch: int = 1,
) -> tuple[Tensor, list[dict]]:
    """Return (logits (1, K, H, W) averaged over overlapping windows, stats of each forward).

    image: (1, 3, H, W) normalised. Windows are `window` x `window` (smaller sides are not
    padded: the model pads to its patch size itself), placed every `stride` pixels plus one
    window flush with the bottom/right edge (Segmenter's and mmseg's rule), in raster order.
    window_batch: windows of this image run together in batches of this size (the released
    `segm.eval.miou --window-batch-size 4`), so ALGM's batch-minimum counts and the in-batch GBM
    threshold span those windows; 1 runs them one at a time. All windows of one image share a
    shape, so they stack.
    """
    if int(window_batch) < 1:
        raise ValueError(f"eval.window_batch must be >= 1; got {window_batch}")
    _, _, H, W = image.shape
    logits = image.new_zeros(1, num_classes, H, W)
    counts = image.new_zeros(1, 1, H, W)
    places = [(y, x) for y in window_starts(H, window, stride)
              for x in window_starts(W, window, stride)]
    stats = []
    for i in range(0, len(places), int(window_batch)):
        chunk = places[i : i + int(window_batch)]
        crops = torch.cat([image[..., y : y + window, x : x + window] for y, x in chunk])
        out, step_stats = forward(crops)  # (b, K, h, w)
        h, w = crops.shape[-2:]
        for k, (y, x) in enumerate(chunk):
            logits[..., y : y + h, x : x + w] += out[k : k + 1]
            counts[..., y : y + h, x : x + w] += 1
        stats.append(step_stats)
    return logits / counts, stats


def confusion(pred: Tensor, label: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    """Return the (K, K) confusion matrix (rows: truth, cols: prediction) of valid pixels."""
    valid = label != ignore_index
    index = label[valid] * num_classes + pred[valid]
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def miou_from_confusion(matrix: Tensor) -> tuple[float, list[float]]:
    """Return (mIoU over classes present in truth or prediction, per-class IoU; nan if absent)."""
    matrix = matrix.double()
    inter = matrix.diagonal()
    union = matrix.sum(0) + matrix.sum(1) - inter
    iou = inter / union  # nan where a class never appears
    present = union > 0
    return float(iou[present].mean()) if present.any() else float("nan"), iou.tolist()


def mean_stats(stats: Iterable[dict]) -> dict[str, float]:
    """Return the mean of each statistic over forwards (keys missing in some are averaged alone)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for s in stats:
        for k, v in s.items():
            sums[k] = sums.get(k, 0.0) + v
            counts[k] = counts.get(k, 0) + 1
    return {k: sums[k] / counts[k] for k in sums}


@torch.no_grad()
def evaluate(
    model,
    samples: Iterable[tuple[Tensor, Tensor]],
    num_classes: int,
    ignore_index: int,
    window: int,
    stride: int,
    sliding: bool = True,
    total: int | None = None,
    window_batch: int = 1,
) -> dict:
    """Return {"miou", "iou", "kept"} of `model` over (image (1,3,h,w) normalised, label (H,W)).

    The image may be resized for evaluation; logits are resized back to the label's resolution
    (bilinear) before the argmax, so mIoU is measured at the original resolution. Each image is
    its own batch; its sliding windows run `window_batch` at a time (merging adapts per batch).
    """
    model.eval()
    matrix = None
    all_stats: list[dict] = []
    for image, label in tqdm(samples, desc="eval", total=total, leave=False):
        if sliding:
            logits, stats = sliding_window(model.forward_with_stats, image, num_classes, window,
                                           stride, window_batch)
        else:
            logits, step = model.forward_with_stats(image)
            stats = [step]
        all_stats += stats
        logits = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
        pred = logits.argmax(1)[0].to(label.device)
        part = confusion(pred, label, num_classes, ignore_index)
        matrix = part if matrix is None else matrix + part
    if matrix is None:
        raise ValueError("evaluation needs at least one image")
    miou, iou = miou_from_confusion(matrix)
    return {"miou": miou, "iou": iou, "kept": mean_stats(all_stats)}
