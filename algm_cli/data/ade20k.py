"""ADE20K (ADEChallengeData2016): 150 classes; label 0 = ignore, class k stored as k+1."""

from __future__ import annotations

from pathlib import Path

from .base import (
    DatasetError, SegmentationFolder, list_images, match_pairs, require_dir, split_name,
)
from .classes import ADE20K_CLASSES

SPLITS = {"train": "training", "val": "validation"}
FOLDER = "ADEChallengeData2016"


def layout(root: Path) -> str:
    """Return the expected directory tree under `root`, for error messages."""
    return (f"expected layout under {root}:\n"
            f"  {FOLDER}/          (the root may also point at this folder)\n"
            f"    images/training/*.jpg        (or .png)\n"
            f"    images/validation/*.jpg\n"
            f"    annotations/training/*.png   (same stems; 0 = ignore, class k stored as k+1)\n"
            f"    annotations/validation/*.png")


def dataset_folder(root: Path) -> Path:
    """Return the ADEChallengeData2016 folder: root/ADEChallengeData2016, or root itself."""
    if (root / FOLDER).is_dir() or not (root / "images").is_dir():
        return root / FOLDER
    return root


class ADE20K(SegmentationFolder):
    """ADE20K layout; `num_classes` / `class_names` / `palette` can be overridden.

    The overrides serve datasets written in the same layout (the synthetic one): with
    `class_names` alone, num_classes = len(class_names); with a num_classes other than 150 and no
    names, the names are "class_0", "class_1", ...
    """

    title = "ADE20K"
    reduce_zero_label = True

    def __init__(self, root, split: str, *, num_classes: int | None = None,
                 class_names=None, palette=None) -> None:
        root = Path(root)
        sub = split_name(split, SPLITS, self.title)
        tree = layout(root)
        require_dir(root, self.title, tree, "the dataset root")
        base = require_dir(dataset_folder(root), self.title, tree)
        img_dir = require_dir(base / "images" / sub, self.title, tree, f"{split} images")
        ann_dir = require_dir(base / "annotations" / sub, self.title, tree, f"{split} labels")
        images = list_images(img_dir)
        if not images:
            raise DatasetError(f"{self.title}: no images (*.jpg, *.png) in {img_dir}\n{tree}")
        labels = sorted(p for p in ann_dir.glob("*.png") if p.is_file())
        if not labels:
            raise DatasetError(f"{self.title}: no label files (*.png) in {ann_dir}\n{tree}")
        pairs = match_pairs(
            images, labels, image_key=lambda p: p.stem, label_key=lambda p: p.stem,
            label_for=lambda k: ann_dir / f"{k}.png",
            image_for=lambda k: f"{img_dir / k}.jpg (or .png)",
            title=self.title)
        num_classes, names = _classes(num_classes, class_names)
        super().__init__(pairs, num_classes, names, palette)


def _classes(num_classes: int | None, class_names) -> tuple[int, list[str]]:
    """Return (K, names) from the optional overrides, with ADE20K's 150 classes by default."""
    if class_names is not None:
        names = list(class_names)
        return (len(names) if num_classes is None else num_classes), names
    if num_classes is None or num_classes == len(ADE20K_CLASSES):
        return len(ADE20K_CLASSES), list(ADE20K_CLASSES)
    return num_classes, [f"class_{i}" for i in range(num_classes)]
