"""Segformer++'s downsampling baseline: a lower input resolution instead of token merging.

The released code (KieDani/SegformerPlusPlus, mmseg backbone `mit.py`, `down_sample=True`)
resizes the input by 0.5 with `F.interpolate`'s default (nearest) mode at the start of the
encoder; the decoder runs at 1/4 of the reduced input and the logits are resized bilinearly to
the full input, as for every Segformer. Here the factor is `merge.setting` (the released 0.5, or
the factor whose GFLOPs match a preset's, see conf/merge/downsample.yaml) and the mode an option
(`merge.interpolation`: nearest, the released one, or bilinear). No tokens are merged; the model
holds the same parameters as the plain Segformer, so one checkpoint serves both.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .base import MergeStats
from .registry import BuildRequest, register_merges
from .segformer import Segformer, segformer_options

INTERPOLATIONS = ("nearest", "bilinear")


def downsampled_size(size: tuple[int, int], factor: float) -> tuple[int, int]:
    """Return the reduced (h, w) of an input of `size` (floor, as F.interpolate's scale_factor)."""
    return max(1, int(size[0] * factor)), max(1, int(size[1] * factor))


class DownsampledSegformer(Segformer):
    """A Segformer whose encoder sees the input resized by `factor` (0 < factor <= 1)."""

    def __init__(self, *args, factor: float = 0.5, interpolation: str = "nearest", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not 0.0 < factor <= 1.0:
            raise ValueError(f"merge.setting={factor}: a downsampling factor must lie in (0, 1]")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"merge.interpolation={interpolation!r}: expected one of "
                             f"{list(INTERPOLATIONS)}")
        self.factor = float(factor)
        self.interpolation = interpolation

    def reduce_input(self, images: Tensor) -> tuple[Tensor, float]:
        """Return (images resized by the factor (B, 3, h, w), kept pixel fraction h w / (H W))."""
        size = images.shape[-2:]
        small_size = downsampled_size((size[0], size[1]), self.factor)
        options = {} if self.interpolation == "nearest" else {"align_corners": False}
        small = F.interpolate(images, size=small_size, mode=self.interpolation, **options)
        return small, small_size[0] * small_size[1] / (size[0] * size[1])

    def forward_with_stats(self, images: Tensor) -> tuple[Tensor, MergeStats]:
        """Return (logits (B, K, H, W) at the full input size, {"input": kept pixel fraction})."""
        small, kept = self.reduce_input(images)
        features, stats = self.encoder(small, self.merge)
        logits = self.decode_head(features)  # (B, K, h / 4, w / 4) of the reduced input
        logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return logits, {**stats, "input": kept}


def build_downsampled(request: BuildRequest) -> DownsampledSegformer:
    """Return the downsampling baseline of `request` (merge.setting = factor)."""
    m = request.merge
    return DownsampledSegformer(request.backbone.removeprefix("mit_"), int(request.num_classes),
                                **segformer_options(request), factor=float(m["setting"]),
                                interpolation=str(m.get("interpolation", "nearest")))


register_merges("segformer", ("downsample",), build_downsampled)
