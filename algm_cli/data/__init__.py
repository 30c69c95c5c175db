"""Segmentation datasets in their standard layouts, and the training/evaluation transforms.

`build_dataset(name, root, split)` returns a dataset whose samples are
{"image": uint8 (3, H, W), "label": int64 (H, W) in 0..K-1 with 255 = ignore, "name": str}.
"""

from __future__ import annotations

from types import MappingProxyType

from .ade20k import ADE20K
from .base import DatasetError, SegmentationFolder
from .cityscapes import Cityscapes
from .coco_stuff import COCOStuff10K
from .pascal_context import PascalContext

# name -> dataset class (read-only)
DATASETS = MappingProxyType({
    "ade20k": ADE20K,
    "cityscapes": Cityscapes,
    "pascal_context": PascalContext,
    "coco_stuff10k": COCOStuff10K,
})


def build_dataset(name: str, root, split: str) -> SegmentationFolder:
    """Return dataset `name` (a key of DATASETS) of `split` ("train" / "val") under `root`."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name](root, split)


__all__ = ["ADE20K", "COCOStuff10K", "Cityscapes", "DATASETS", "DatasetError", "PascalContext",
           "SegmentationFolder", "build_dataset"]
