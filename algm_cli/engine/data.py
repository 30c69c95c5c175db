"""Datasets of a run: the configured dataset, its training stream and evaluation samples."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import DatasetError, build_dataset
from ..data.ade20k import ADE20K
from ..data.synthetic import CLASS_NAMES, generate
from ..data.transforms import eval_resize, normalize, train_transform
from .spec import DatasetSpec


def open_dataset(dataset: DatasetSpec, split: str):
    """Return the dataset of `split` ("train"/"val"); the synthetic one is generated if needed."""
    name, root = dataset.name, Path(dataset.root)
    if name == "synthetic":
        generate(root)
        return ADE20K(root, split, num_classes=len(CLASS_NAMES), class_names=list(CLASS_NAMES))
    return build_dataset(name, root, split)


class TrainTransform:
    """Callable (sample, generator) -> (image normalised (3,S,S), label (S,S)) for training."""

    def __init__(self, dataset: DatasetSpec, crop: int) -> None:
        self.crop = crop
        self.scale = tuple(dataset.train_scale)

    def __call__(self, sample: dict, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Return the augmented, normalised (image, label) pair."""
        image, label = train_transform(
            sample["image"], sample["label"], crop_size=self.crop, scale=self.scale,
            generator=generator,
        )
        return normalize(image), label


def eval_samples(spec: DatasetSpec, dataset, limit: int | None) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (image (1,3,h,w) resized + normalised, label (H,W) at original size)."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for i in range(count):
        sample = dataset[i]
        image = eval_resize(sample["image"], short_side=spec.eval_short_side)
        yield normalize(image).unsqueeze(0), sample["label"]


def square_images(dataset, count: int, size: int) -> list[Tensor]:
    """Return the first `count` images resized to size x size and normalised (throughput, FLOPs)."""
    out = []
    for i in range(min(count, len(dataset))):
        image = normalize(dataset[i]["image"]).unsqueeze(0)
        out.append(F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)[0])
    if not out:
        raise DatasetError("the validation split has no images")
    return out
