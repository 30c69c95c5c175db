"""The interface every segmentation model of this project implements."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..data.transforms import IGNORE

# step label (e.g. "L1:clap", "L5:gbm") -> tokens kept after that step, as a fraction of the
# original patch tokens, averaged over the batch
MergeStats = dict[str, float]


class SegmentationModel(nn.Module):
    """A model mapping images (B, 3, H, W) to class scores (B, K, H, W) at input resolution.

    Subclasses implement `forward_with_stats`, which also returns the merge statistics of the
    forward (empty for models that do not merge); `forward` returns the scores only, so fvcore
    and plain training loops see one tensor. `training_loss` is the model's own training
    objective (cross-entropy on the logits unless the model's recipe says otherwise: SETR adds
    its auxiliary heads, SegViT uses its set-prediction loss).
    """

    num_classes: int

    def forward_with_stats(self, images: Tensor) -> tuple[Tensor, MergeStats]:
        """Return (logits (B, K, H, W), merge statistics of this forward)."""
        raise NotImplementedError

    def forward(self, images: Tensor) -> Tensor:
        """Return logits (B, K, H, W)."""
        return self.forward_with_stats(images)[0]

    def training_loss(self, images: Tensor, labels: Tensor, ignore_index: int = IGNORE) -> Tensor:
        """Return the scalar training loss on images (B, 3, H, W) and labels (B, H, W)."""
        return F.cross_entropy(self(images).float(), labels, ignore_index=ignore_index)


class TrainingObjective(nn.Module):
    """`forward(images, labels)` = the model's training loss, so DDP can wrap the whole step."""

    def __init__(self, model: SegmentationModel, ignore_index: int = IGNORE) -> None:
        super().__init__()
        self.model = model
        self.ignore_index = ignore_index

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        """Return the scalar loss of `model` on this batch."""
        return self.model.training_loss(images, labels, self.ignore_index)
