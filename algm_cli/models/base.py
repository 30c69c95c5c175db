"""The interface every segmentation model of this project implements."""

from __future__ import annotations

from torch import Tensor, nn

# step label (e.g. "L1:clap", "L5:gbm") -> tokens kept after that step, as a fraction of the
# original patch tokens, averaged over the batch
MergeStats = dict[str, float]


class SegmentationModel(nn.Module):
    """A model mapping images (B, 3, H, W) to class logits (B, K, H, W) at input resolution.

    Subclasses implement `forward_with_stats`, which also returns the merge statistics of the
    forward (empty for models that do not merge); `forward` returns the logits only, so fvcore
    and plain training loops see one tensor.
    """

    num_classes: int

    def forward_with_stats(self, images: Tensor) -> tuple[Tensor, MergeStats]:
        """Return (logits (B, K, H, W), merge statistics of this forward)."""
        raise NotImplementedError

    def forward(self, images: Tensor) -> Tensor:
        """Return logits (B, K, H, W)."""
        return self.forward_with_stats(images)[0]
