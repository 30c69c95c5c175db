"""Training augmentation and evaluation resizing of the mmseg / Segmenter pipelines.

Training (mmseg order): random keep-ratio resize (ratio in `ratio_range` times the base `scale`)
-> random crop with `cat_max_ratio` -> horizontal flip -> photometric distortion -> pad to the
crop size. Images stay uint8 (3, H, W); labels are int64 (H, W) with `ignore_index` for padding.
Every random number comes from the `generator` passed in, so a seed reproduces a sample exactly.

Differences from mmseg, all small: resizing uses torch's bilinear (image) and "nearest-exact"
(label) interpolation instead of OpenCV's (nearest-exact samples the same pixel centres as the
bilinear image, so label and image stay aligned); the HSV steps of the photometric distortion are
computed in float and rounded back to uint8; the image is padded with `pad_value` (0 by default)
in uint8, while mmseg pads after normalisation (there 0 is the mean colour, 128 here).

Evaluation: `eval_resize` resizes only the image; labels stay at their original resolution and
the logits are upsampled to the label size for scoring, as mmseg does. The dataset classes carry
the scales: `train_scale` / `eval_scale` = (long, short) keep-ratio bounds, ADE20K and
COCO-Stuff-10K (2048, 512), Pascal-Context (2048, 520), Cityscapes (2048, 1024).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = 255


# ----------------------------------------------------------------------------- random draws
def _uniform(g: torch.Generator, low: float, high: float) -> float:
    """Return a float drawn uniformly from [low, high)."""
    return low + (high - low) * float(torch.rand(1, generator=g))


def _randint(g: torch.Generator, low: int, high: int) -> int:
    """Return an int drawn uniformly from low..high-1."""
    return int(torch.randint(low, high, (1,), generator=g))


def _coin(g: torch.Generator) -> bool:
    """Return True with probability 1/2 (mmseg's `randint(2)`)."""
    return _randint(g, 0, 2) == 1


# ----------------------------------------------------------------------------- geometry
def rescale_size(h: int, w: int, scale: tuple[int, int]) -> tuple[int, int]:
    """Return (h, w) rescaled to fit within (long, short) = scale, keeping the aspect ratio."""
    long_max, short_max = max(scale), min(scale)
    factor = min(long_max / max(h, w), short_max / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def resize(image: Tensor, label: Tensor | None, size: tuple[int, int]):
    """Return (image bilinear uint8 (3,h,w), label nearest int64 (h,w) or None) at size (h, w)."""
    if tuple(image.shape[1:]) == tuple(size):
        return image, label
    img = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)
    img = img[0].round().clamp(0, 255).to(torch.uint8)
    if label is None:
        return img, None
    lab = F.interpolate(label[None, None].float(), size=size, mode="nearest-exact")[0, 0]
    return img, lab.long()


def random_resize(image: Tensor, label: Tensor, scale: tuple[int, int], ratio_range,
                  generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Return (image, label) rescaled to fit scale * ratio, ratio ~ U(ratio_range) (mmseg)."""
    ratio = 1.0 if ratio_range is None else _uniform(generator, *ratio_range)
    target = (int(scale[0] * ratio), int(scale[1] * ratio))
    return resize(image, label, rescale_size(image.shape[1], image.shape[2], target))


def _crop_ok(crop: Tensor, cat_max_ratio: float, ignore_index: int) -> bool:
    """Return True if `crop` has >1 class and its largest class covers < cat_max_ratio."""
    _, counts = torch.unique(crop[crop != ignore_index], return_counts=True)
    return len(counts) > 1 and float(counts.max()) / float(counts.sum()) < cat_max_ratio


def random_crop(image: Tensor, label: Tensor, crop_size: int, cat_max_ratio: float,
                ignore_index: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Return a random crop of at most crop_size x crop_size (mmseg RandomCrop).

    With cat_max_ratio < 1, up to 10 positions are tried; the first whose label has more than one
    class and whose largest class covers < cat_max_ratio of the non-ignore pixels is kept,
    otherwise the last one tried.
    """
    h, w = label.shape
    tries = 10 if cat_max_ratio < 1 else 1
    for _ in range(tries):
        y = _randint(generator, 0, max(h - crop_size, 0) + 1)
        x = _randint(generator, 0, max(w - crop_size, 0) + 1)
        crop = label[y : y + crop_size, x : x + crop_size]
        if tries == 1 or _crop_ok(crop, cat_max_ratio, ignore_index):
            break
    return image[:, y : y + crop_size, x : x + crop_size], crop


def random_flip(image: Tensor, label: Tensor, prob: float,
                generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Return (image, label) flipped left-right with probability `prob` (one draw either way)."""
    if float(torch.rand(1, generator=generator)) < prob:
        return image.flip(-1), label.flip(-1)
    return image, label


def pad_to(image: Tensor, label: Tensor, size: int, pad_value: int = 0,
           ignore_index: int = IGNORE) -> tuple[Tensor, Tensor]:
    """Return (image, label) padded at the bottom/right to at least size x size."""
    ph, pw = max(size - label.shape[0], 0), max(size - label.shape[1], 0)
    if ph == 0 and pw == 0:
        return image, label
    image = F.pad(image, (0, pw, 0, ph), value=pad_value)
    return image, F.pad(label, (0, pw, 0, ph), value=ignore_index)


# ----------------------------------------------------------------------------- colour
def rgb_to_hsv(rgb: Tensor) -> Tensor:
    """Return HSV (3, H, W) in [0, 1] (hue as a fraction of the circle) of float RGB in [0, 1]."""
    r, g, b = rgb.unbind(0)
    value, channel = rgb.max(0)
    delta = value - rgb.min(0).values
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(channel == 0, ((g - b) / safe) % 6,
                      torch.where(channel == 1, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = torch.where(delta > 0, hue / 6, torch.zeros_like(hue))
    sat = torch.where(value > 0, delta / torch.where(value > 0, value, torch.ones_like(value)),
                      torch.zeros_like(value))
    return torch.stack([hue, sat, value])


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """Return float RGB (3, H, W) in [0, 1] of HSV in [0, 1] (inverse of `rgb_to_hsv`)."""
    hue, sat, value = hsv.unbind(0)
    channels = []
    for n in (5.0, 3.0, 1.0):  # R, G, B
        k = (n + hue * 6) % 6
        channels.append(value - value * sat * torch.clamp(torch.minimum(k, 4 - k), 0, 1))
    return torch.stack(channels)


def _affine(img: Tensor, alpha: float = 1.0, beta: float = 0.0) -> Tensor:
    """Return img * alpha + beta clipped to [0, 255] and truncated to integers (mmseg convert)."""
    return (img * alpha + beta).clamp(0, 255).floor()


def _adjust_hsv(img: Tensor, saturation: float = 1.0, hue_shift: float = 0.0) -> Tensor:
    """Return float RGB (0..255 integers) with saturation scaled and hue rotated (fraction)."""
    hsv = rgb_to_hsv(img / 255)
    hue = (hsv[0] + hue_shift) % 1.0
    sat = (hsv[1] * saturation).clamp(0, 1)
    return (hsv_to_rgb(torch.stack([hue, sat, hsv[2]])) * 255).round().clamp(0, 255)


def photometric_distortion(image: Tensor, generator: torch.Generator, *,
                           brightness_delta: int = 32, contrast_range=(0.5, 1.5),
                           saturation_range=(0.5, 1.5), hue_delta: int = 18) -> Tensor:
    """Return uint8 (3, H, W) after mmseg's PhotoMetricDistortion.

    Each step runs with probability 1/2: brightness + U(-delta, delta); contrast x U(range) either
    first or last (another coin, mmseg's "mode"); saturation x U(range) in HSV; hue + an integer
    in [-hue_delta, hue_delta) in OpenCV units (180 = full circle).
    """
    g = generator
    img = image.float()
    if _coin(g):
        img = _affine(img, beta=_uniform(g, -brightness_delta, brightness_delta))
    contrast_first = _coin(g)
    if contrast_first and _coin(g):
        img = _affine(img, alpha=_uniform(g, *contrast_range))
    if _coin(g):
        img = _adjust_hsv(img, saturation=_uniform(g, *saturation_range))
    if _coin(g):
        img = _adjust_hsv(img, hue_shift=_randint(g, -hue_delta, hue_delta) / 180)
    if not contrast_first and _coin(g):
        img = _affine(img, alpha=_uniform(g, *contrast_range))
    return img.to(torch.uint8)


# ----------------------------------------------------------------------------- pipelines
def train_transform(image: Tensor, label: Tensor, *, crop_size: int, scale: tuple[int, int],
                    ratio_range=(0.5, 2.0), cat_max_ratio=0.75, flip_prob=0.5, photometric=True,
                    ignore_index=IGNORE, generator: torch.Generator,
                    pad_value: int = 0) -> tuple[Tensor, Tensor]:
    """Return (image uint8 (3,c,c), label int64 (c,c)): resize, crop, flip, photometric, pad."""
    if image.dim() != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
        raise ValueError(f"image must be uint8 (3, H, W), got {image.dtype} {tuple(image.shape)}")
    if tuple(label.shape) != tuple(image.shape[1:]):
        raise ValueError(f"label {tuple(label.shape)} and image {tuple(image.shape)} sizes differ")
    label = label.long()
    image, label = random_resize(image, label, scale, ratio_range, generator)
    image, label = random_crop(image, label, crop_size, cat_max_ratio, ignore_index, generator)
    image, label = random_flip(image, label, flip_prob, generator)
    if photometric:
        image = photometric_distortion(image, generator)
    image, label = pad_to(image, label, crop_size, pad_value, ignore_index)
    return image.contiguous(), label.contiguous()


def eval_size(h: int, w: int, *, short_side: int | None = None,
              scale: tuple[int, int] | None = None) -> tuple[int, int]:
    """Return the evaluation (h, w): short side = short_side, or fit within scale (long, short)."""
    if short_side is not None and scale is not None:
        raise ValueError("give eval_resize either short_side or scale, not both")
    if short_side is not None:
        factor = short_side / min(h, w)
        return int(h * factor + 0.5), int(w * factor + 0.5)
    if scale is not None:
        return rescale_size(h, w, scale)
    return h, w


def eval_resize(image: Tensor, label: Tensor | None = None, *, short_side: int | None = None,
                scale: tuple[int, int] | None = None):
    """Return the image (3,h,w) resized for evaluation, or (image, label) with label unchanged.

    `scale=(long, short)` is mmseg's keep-ratio rule (Segmenter's test pipeline: ADE20K
    (2048, 512), Cityscapes (2048, 1024)); `short_side` is a plain short-side resize. Labels are
    evaluated at their original resolution, so they are returned untouched.
    """
    size = eval_size(image.shape[1], image.shape[2], short_side=short_side, scale=scale)
    resized, _ = resize(image, None, size)
    return resized if label is None else (resized, label)


def normalize(image: Tensor, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> Tensor:
    """Return float32 (3, H, W): (image / 255 - mean) / std (Segmenter's ViT normalisation)."""
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (image.float() / 255 - m) / s
