"""Training augmentation and evaluation resizing of the mmseg / Segmenter pipelines."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = 255


def _resize(image: Tensor, label: Tensor | None, size: tuple[int, int]):
    """Return image (bilinear) and label (nearest) resized to size (h, w)."""
    img = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)
    img = img.round().clamp(0, 255).to(torch.uint8)[0]
    if label is None:
        return img, None
    lab = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return img, lab


def rescale_size(h: int, w: int, scale: tuple[int, int]) -> tuple[int, int]:
    """Return (h, w) rescaled to fit within (long, short) = scale, keeping the aspect ratio."""
    long_max, short_max = max(scale), min(scale)
    factor = min(long_max / max(h, w), short_max / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def train_transform(image: Tensor, label: Tensor, *, crop_size: int, scale: tuple[int, int],
                    ratio_range=(0.5, 2.0), cat_max_ratio=0.75, flip_prob=0.5, photometric=True,
                    ignore_index=IGNORE, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Return (image uint8 (3,c,c), label int64 (c,c)): resize, crop, flip, pad."""
    g = generator
    ratio = ratio_range[0] + (ratio_range[1] - ratio_range[0]) * float(torch.rand(1, generator=g))
    size = rescale_size(image.shape[1], image.shape[2], (int(scale[0] * ratio), int(scale[1] * ratio)))
    image, label = _resize(image, label, size)
    h, w = label.shape
    for _ in range(10):
        y = int(torch.randint(max(h - crop_size, 0) + 1, (1,), generator=g))
        x = int(torch.randint(max(w - crop_size, 0) + 1, (1,), generator=g))
        crop = label[y : y + crop_size, x : x + crop_size]
        _, counts = torch.unique(crop[crop != ignore_index], return_counts=True)
        if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
            break
    image = image[:, y : y + crop_size, x : x + crop_size]
    label = label[y : y + crop_size, x : x + crop_size]
    if float(torch.rand(1, generator=g)) < flip_prob:
        image, label = image.flip(-1), label.flip(-1)
    ph, pw = crop_size - label.shape[0], crop_size - label.shape[1]
    if ph > 0 or pw > 0:
        image = F.pad(image, (0, pw, 0, ph), value=0)
        label = F.pad(label, (0, pw, 0, ph), value=ignore_index)
    return image.contiguous(), label.contiguous()


def eval_resize(image: Tensor, label: Tensor | None = None, *, short_side: int | None = None,
                scale: tuple[int, int] | None = None):
    """Return the image resized for evaluation (labels stay at original resolution)."""
    h, w = image.shape[1:]
    if short_side is not None:
        factor = short_side / min(h, w)
        size = (int(h * factor + 0.5), int(w * factor + 0.5))
    elif scale is not None:
        size = rescale_size(h, w, scale)
    else:
        return image if label is None else (image, label)
    resized, _ = _resize(image, None, size)
    return resized if label is None else (resized, label)


def normalize(image: Tensor, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> Tensor:
    """Return float32 (3, H, W): (image / 255 - mean) / std (Segmenter's ViT normalisation)."""
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    return (image.float() / 255 - m) / s
