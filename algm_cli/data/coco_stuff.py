"""COCO-Stuff-10K (mmseg-converted labelTrainIds): 171 classes; 0 = unlabeled = ignore.

mmseg's converter (tools/dataset_converters/coco_stuff10k.py) maps the .mat annotations, where 0
is "unlabeled" and 1..182 the COCO-Stuff ids, to 0 (unlabeled) and 1..171, and mmseg reads them
with reduce_zero_label=True; so does this loader by default: file 0 -> 255, k -> k-1.
"""

from __future__ import annotations

from pathlib import Path

from .base import (
    DatasetError, SegmentationFolder, list_images, match_pairs, require_dir, split_name,
)
from .classes import COCO_STUFF_CLASSES

SPLITS = {"train": "train2014", "val": "test2014"}
LABEL_SUFFIX = "_labelTrainIds.png"


def layout(root: Path) -> str:
    """Return the expected directory tree under `root`, for error messages."""
    return (f"expected layout under {root}:\n"
            f"  images/train2014/<name>.jpg        (split train)\n"
            f"  images/test2014/<name>.jpg         (split val)\n"
            f"  annotations/train2014/<name>{LABEL_SUFFIX}\n"
            f"  annotations/test2014/<name>{LABEL_SUFFIX}\n"
            f"  (label files: 0 = unlabeled, class k stored as k+1)\n"
            f"  (made by mmsegmentation's tools/dataset_converters/coco_stuff10k.py)")


class COCOStuff10K(SegmentationFolder):
    """COCO-Stuff-10K: 9k train2014 / 1k test2014 images, 171 classes.

    `reduce_zero_label=False` reads label files that already hold 0..170 with 255 = ignore (a
    conversion other than mmseg's).
    """

    title = "COCO-Stuff-10K"
    reduce_zero_label = True

    def __init__(self, root, split: str, *, reduce_zero_label: bool = True) -> None:
        self.reduce_zero_label = reduce_zero_label
        root = Path(root)
        sub = split_name(split, SPLITS, self.title)
        tree = layout(root)
        require_dir(root, self.title, tree, "the dataset root")
        img_dir = require_dir(root / "images" / sub, self.title, tree, f"{split} images")
        ann_dir = require_dir(root / "annotations" / sub, self.title, tree, f"{split} labels")
        images = list_images(img_dir)
        if not images:
            raise DatasetError(f"{self.title}: no images (*.jpg) in {img_dir}\n{tree}")
        labels = sorted(p for p in ann_dir.glob(f"*{LABEL_SUFFIX}") if p.is_file())
        if not labels:
            hint = ""
            if any(ann_dir.glob("*.mat")):
                hint = (" (found raw *.mat annotations: convert them with mmsegmentation's "
                        "tools/dataset_converters/coco_stuff10k.py)")
            raise DatasetError(f"{self.title}: no label files (*{LABEL_SUFFIX}) in {ann_dir}"
                               f"{hint}\n{tree}")
        pairs = match_pairs(
            images, labels, image_key=lambda p: p.stem,
            label_key=lambda p: p.name[: -len(LABEL_SUFFIX)],
            label_for=lambda k: ann_dir / f"{k}{LABEL_SUFFIX}",
            image_for=lambda k: img_dir / f"{k}.jpg", title=self.title)
        super().__init__(pairs, len(COCO_STUFF_CLASSES), COCO_STUFF_CLASSES)
