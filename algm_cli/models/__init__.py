"""Segmentation models (backbones + merge schedules + decoders)."""

from .base import MergeStats, SegmentationModel

__all__ = ["MergeStats", "SegmentationModel"]
