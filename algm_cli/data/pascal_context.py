"""Pascal-Context (mmseg layout), 59 classes: 0 = background = ignore, class k stored as k+1."""

from __future__ import annotations

from pathlib import Path

from .base import DatasetError, SegmentationFolder, require_dir, split_name
from .classes import PASCAL_CONTEXT_CLASSES

SPLITS = {"train": "train", "val": "val"}


def layout(root: Path) -> str:
    """Return the expected directory tree under `root`, for error messages."""
    return (f"expected layout under {root}:\n"
            f"  VOCdevkit/VOC2010/        (the root may also point at VOC2010)\n"
            f"    JPEGImages/<id>.jpg\n"
            f"    SegmentationClassContext/<id>.png   (0 = background = ignore, class k as k+1)\n"
            f"    ImageSets/SegmentationContext/train.txt, val.txt   (one <id> per line)\n"
            f"  (made by mmsegmentation's tools/dataset_converters/pascal_context.py)")


def dataset_folder(root: Path) -> Path:
    """Return the VOC2010 folder: root/VOCdevkit/VOC2010, or root itself if it has JPEGImages."""
    nested = root / "VOCdevkit" / "VOC2010"
    if nested.is_dir() or not (root / "JPEGImages").is_dir():
        return nested
    return root


def read_ids(path: Path, title: str, tree: str) -> list[str]:
    """Return the image ids listed in a split file, or raise DatasetError naming it."""
    if not path.is_file():
        raise DatasetError(f"{title}: missing split file {path}\n{tree}")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"{title}: split file {path} lists no images")
    return ids


class PascalContext(SegmentationFolder):
    """Pascal-Context 59 classes (background ignored), images listed by the split file."""

    title = "Pascal-Context"
    reduce_zero_label = True

    def __init__(self, root, split: str) -> None:
        root = Path(root)
        sub = split_name(split, SPLITS, self.title)
        tree = layout(root)
        require_dir(root, self.title, tree, "the dataset root")
        base = require_dir(dataset_folder(root), self.title, tree)
        img_dir = require_dir(base / "JPEGImages", self.title, tree, "images")
        ann_dir = require_dir(base / "SegmentationClassContext", self.title, tree, "labels")
        split_file = base / "ImageSets" / "SegmentationContext" / f"{sub}.txt"
        ids = read_ids(split_file, self.title, tree)
        pairs = [self._pair(img_dir, ann_dir, i, split_file) for i in ids]
        super().__init__(pairs, len(PASCAL_CONTEXT_CLASSES), PASCAL_CONTEXT_CLASSES)

    def _pair(self, img_dir: Path, ann_dir: Path, image_id: str,
              split_file: Path) -> tuple[Path, Path]:
        """Return (image, label) of `image_id`, or raise DatasetError naming both files."""
        image, label = img_dir / f"{image_id}.jpg", ann_dir / f"{image_id}.png"
        if not image.is_file() and not label.is_file():
            raise DatasetError(f"{self.title}: id {image_id!r} of {split_file} has neither an "
                               f"image ({image}) nor a label ({label})")
        if not label.is_file():
            raise DatasetError(f"{self.title}: image {image} has no label (expected {label})")
        if not image.is_file():
            raise DatasetError(f"{self.title}: label {label} has no image (expected {image})")
        return image, label
