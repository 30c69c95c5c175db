"""A dataset of (image, label map) file pairs with label remapping and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

IGNORE = 255


class DatasetError(ValueError):
    """A dataset that cannot be read, with a message naming the file or folder."""


class SegmentationFolder(Dataset):
    """Pairs of image and label files; samples are {"image" uint8 (3,H,W), "label" int64 (H,W)}.

    Subclasses find `pairs` and set `num_classes`, `class_names`, `reduce_zero_label`.
    Returned labels use 0..K-1 and 255 = ignore for every dataset.
    """

    reduce_zero_label = False

    def __init__(self, pairs: list[tuple[Path, Path]], num_classes: int, class_names: list[str]):
        self.pairs = sorted(pairs)
        self.num_classes = num_classes
        self.class_names = list(class_names)
        self.ignore_index = IGNORE

    def __len__(self) -> int:
        return len(self.pairs)

    def remap(self, raw: np.ndarray) -> np.ndarray:
        """Return labels in 0..K-1 / 255 from the file's raw values."""
        raw = raw.astype(np.int64)
        if self.reduce_zero_label:
            return np.where((raw == 0) | (raw == IGNORE), IGNORE, raw - 1)
        return raw

    def __getitem__(self, index: int) -> dict:
        image_path, label_path = self.pairs[index]
        image = read_image(image_path)
        label = self.remap(read_label(label_path))
        if image.shape[:2] != label.shape:
            raise DatasetError(f"image {image_path} is {image.shape[1]}x{image.shape[0]} but label "
                               f"{label_path} is {label.shape[1]}x{label.shape[0]}")
        bad = np.unique(label[(label != IGNORE) & ((label < 0) | (label >= self.num_classes))])
        if bad.size:
            raise DatasetError(f"label {label_path} has values {bad.tolist()[:10]} outside "
                               f"0..{self.num_classes - 1} (ignore = {IGNORE})")
        return {"image": torch.from_numpy(image).permute(2, 0, 1).contiguous(),
                "label": torch.from_numpy(label), "name": image_path.stem}


def read_image(path: Path) -> np.ndarray:
    """Return an RGB uint8 (H, W, 3) array, or raise DatasetError naming the file."""
    try:
        with Image.open(path) as img:
            return np.array(img.convert("RGB"))
    except (OSError, UnidentifiedImageError) as err:
        raise DatasetError(f"cannot read image {path}: {err}") from None


def read_label(path: Path) -> np.ndarray:
    """Return the raw label indices (H, W) of a PNG, or raise DatasetError naming the file."""
    try:
        with Image.open(path) as img:
            return np.array(img)
    except (OSError, UnidentifiedImageError) as err:
        raise DatasetError(f"cannot read label {path}: {err}") from None


def match_pairs(images: list[Path], labels: list[Path], image_key, label_key) -> list[tuple[Path, Path]]:
    """Return (image, label) pairs matched by key, or raise DatasetError naming an orphan."""
    by_key = {label_key(p): p for p in labels}
    pairs = []
    for img in images:
        key = image_key(img)
        if key not in by_key:
            raise DatasetError(f"image {img} has no label (looked for a label with key {key!r})")
        pairs.append((img, by_key.pop(key)))
    if by_key:
        orphan = next(iter(by_key.values()))
        raise DatasetError(f"label {orphan} has no image")
    return pairs
