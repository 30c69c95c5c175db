"""Mask2Former (Cheng et al., CVPR 2022) on EVA + ViT-Adapter, with token merging in the ViT."""

from .model import Mask2Former, build_mask2former

__all__ = ["Mask2Former", "build_mask2former"]
