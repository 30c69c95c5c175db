"""Segmentation datasets in their standard layouts, and the training/evaluation transforms."""

from .base import DatasetError, SegmentationFolder
from .ade20k import ADE20K

DATASETS = {"ade20k": ADE20K}


def build_dataset(name: str, root, split: str) -> SegmentationFolder:
    """Return dataset `name` ("ade20k", ...) of `split` ("train" / "val") under `root`."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name](root, split)


__all__ = ["ADE20K", "DATASETS", "DatasetError", "SegmentationFolder", "build_dataset"]
