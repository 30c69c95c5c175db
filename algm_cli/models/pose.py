"""Top-down pose estimation with a Segformer (MiT) backbone and a keypoint heatmap head.

As the Segformer++ pose models (KieDani/SegformerPlusPlus, mmpose `SegformerHead` with the
`MSRAHeatmap` codec): the four MiT feature maps are projected, upsampled to 1/4 of the input,
fused and mapped to K heatmaps at 1/4 resolution. Here the head is Segformer's all-MLP decoder
with K outputs and no dropout (their per-stage 1x1 convs also carry BatchNorm + ReLU); the
merging is the same Segformer++ merging as for segmentation.

Targets: one unnormalised Gaussian (peak 1, sigma `sigma` heatmap pixels) per labelled keypoint
at its position / 4 (mmpose's MSRA codec: heatmap = keypoint * heatmap size / input size);
unlabelled keypoints (visibility 0) or keypoints outside the heatmap get weight 0. Loss: mean
squared error of weighted heatmaps (mmpose's KeypointMSELoss, use_target_weight=True).
Decoding: argmax per heatmap, shifted by a quarter pixel towards the larger neighbour on each
axis (MSRA's sub-pixel refinement), scaled back to input pixels; score = the heatmap maximum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import MergeStats
from .downsample import DownsampledSegformer
from .segformer import MIT_VARIANTS, AllMLPHead, Segformer, init_weights

STRIDE = 4  # heatmaps at 1/4 of the input


def keypoint_heatmaps(keypoints: Tensor, size: tuple[int, int], sigma: float) -> tuple[Tensor, Tensor]:
    """Return (heatmaps (B, K, h, w), weights (B, K)) for keypoints (B, K, 3) in input pixels."""
    h, w = size
    centre = keypoints[..., :2] / STRIDE  # (B, K, 2) heatmap pixels
    ys = torch.arange(h, dtype=keypoints.dtype, device=keypoints.device)
    xs = torch.arange(w, dtype=keypoints.dtype, device=keypoints.device)
    gx = torch.exp(-((xs - centre[..., :1]) ** 2) / (2 * sigma**2))  # (B, K, w)
    gy = torch.exp(-((ys - centre[..., 1:]) ** 2) / (2 * sigma**2))  # (B, K, h)
    heatmaps = gy[..., :, None] * gx[..., None, :]  # (B, K, h, w)
    inside = ((centre >= 0) & (centre <= torch.tensor([w - 1, h - 1], device=centre.device))).all(-1)
    weights = ((keypoints[..., 2] > 0) & inside).to(keypoints.dtype)
    return heatmaps, weights


def heatmap_loss(pred: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """Return the weighted MSE of heatmaps pred, target (B, K, h, w) with weights (B, K)."""
    w = weights[..., None, None]
    return F.mse_loss(pred.float() * w, target * w)


def decode_heatmaps(heatmaps: Tensor) -> tuple[Tensor, Tensor]:
    """Return (keypoints (B, K, 2) in input pixels, scores (B, K)) from heatmaps (B, K, h, w)."""
    B, K, h, w = heatmaps.shape
    flat = heatmaps.reshape(B, K, h * w)
    scores, index = flat.max(-1)
    y, x = index // w, index % w
    xy = torch.stack([x, y], -1).to(heatmaps.dtype)  # (B, K, 2)
    # quarter-pixel refinement towards the larger neighbour (interior peaks only)
    hm = F.pad(heatmaps, (1, 1, 1, 1), value=float("-inf"))
    batch = torch.arange(B, device=heatmaps.device)[:, None]
    kpt = torch.arange(K, device=heatmaps.device)[None]
    yp, xp = y + 1, x + 1
    dx = hm[batch, kpt, yp, xp + 1] - hm[batch, kpt, yp, xp - 1]
    dy = hm[batch, kpt, yp + 1, xp] - hm[batch, kpt, yp - 1, xp]
    interior_x, interior_y = (x > 0) & (x < w - 1), (y > 0) & (y < h - 1)
    xy[..., 0] += 0.25 * torch.where(interior_x, torch.sign(dx), torch.zeros_like(dx))
    xy[..., 1] += 0.25 * torch.where(interior_y, torch.sign(dy), torch.zeros_like(dy))
    return xy * STRIDE, scores


class PoseMixin:
    """Heatmap outputs, loss and decoding shared by the pose Segformers."""

    sigma: float

    def _setup_pose(self, num_keypoints: int, sigma: float) -> None:
        config = MIT_VARIANTS[self.variant]
        self.decode_head = AllMLPHead(config.dims, config.decoder_dim, num_keypoints, dropout=0.0)
        self.decode_head.apply(init_weights)
        for conv in self.decode_head.modules():  # mmpose's head init: convs normal(std 0.001)
            if isinstance(conv, nn.Conv2d):
                nn.init.normal_(conv.weight, std=0.001)
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)
        self.num_keypoints = num_keypoints
        self.sigma = float(sigma)

    def _encode(self, images: Tensor) -> tuple[list[Tensor], MergeStats]:
        return self.encoder(images, self.merge)

    def forward_with_stats(self, images: Tensor) -> tuple[Tensor, MergeStats]:
        """Return (heatmaps (B, K, H / 4, W / 4), merge statistics)."""
        features, stats = self._encode(images)
        return self.decode_head(features), stats

    def training_loss(self, images: Tensor, keypoints: Tensor, ignore_index: int = 255) -> Tensor:
        """Return the heatmap MSE of images (B, 3, H, W) against keypoints (B, K, 3)."""
        pred = self(images)
        target, weights = keypoint_heatmaps(keypoints.float(), pred.shape[-2:], self.sigma)
        return heatmap_loss(pred, target, weights)

    def predict_keypoints(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Return (keypoints (B, K, 2) in input pixels, scores (B, K))."""
        return decode_heatmaps(self(images).float())


class SegformerPose(PoseMixin, Segformer):
    """MiT encoder (with optional Segformer++ merging) + heatmap head: K heatmaps at 1/4."""

    def __init__(self, variant: str = "b0", num_keypoints: int = 17, merge=None,
                 drop_path: float = 0.1, sigma: float = 2.0, pretrained: bool | str = False) -> None:
        super().__init__(variant, num_keypoints, merge, drop_path, pretrained)
        self._setup_pose(num_keypoints, sigma)


class DownsampledSegformerPose(PoseMixin, DownsampledSegformer):
    """The downsampling baseline for pose: heatmaps at 1/4 of the full input, from a smaller input."""

    def __init__(self, variant: str = "b0", num_keypoints: int = 17, merge=None,
                 drop_path: float = 0.1, sigma: float = 2.0, factor: float = 0.5,
                 interpolation: str = "nearest", pretrained: bool | str = False) -> None:
        super().__init__(variant, num_keypoints, merge, drop_path, pretrained, factor=factor,
                         interpolation=interpolation)
        self._setup_pose(num_keypoints, sigma)

    def forward_with_stats(self, images: Tensor) -> tuple[Tensor, MergeStats]:
        """Return (heatmaps (B, K, H / 4, W / 4), stats) computed on the reduced input."""
        H, W = images.shape[-2:]
        small, kept = self.reduce_input(images)
        features, stats = self.encoder(small, self.merge)
        heatmaps = self.decode_head(features)  # (B, K, h / 4, w / 4) of the reduced input
        return F.interpolate(heatmaps, size=(H // STRIDE, W // STRIDE), mode="bilinear",
                             align_corners=False), {**stats, "input": kept}
