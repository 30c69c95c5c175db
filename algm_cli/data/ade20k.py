"""ADE20K (ADEChallengeData2016): 150 classes, label 0 = ignore (reduce_zero_label)."""

from __future__ import annotations

from pathlib import Path

from .base import DatasetError, SegmentationFolder, match_pairs

SPLITS = {"train": "training", "val": "validation"}
TREE = """expected layout:
  <root>/ADEChallengeData2016/images/{training,validation}/*.jpg
  <root>/ADEChallengeData2016/annotations/{training,validation}/*.png"""


class ADE20K(SegmentationFolder):
    """ADE20K layout; num_classes / class_names overridable (the synthetic set uses the layout)."""

    reduce_zero_label = True

    def __init__(self, root, split: str, num_classes: int = 150, class_names=None) -> None:
        root = Path(root)
        base = root if root.name == "ADEChallengeData2016" else root / "ADEChallengeData2016"
        if split not in SPLITS:
            raise DatasetError(f"split {split!r}: expected one of {list(SPLITS)}")
        img_dir = base / "images" / SPLITS[split]
        ann_dir = base / "annotations" / SPLITS[split]
        for folder in (img_dir, ann_dir):
            if not folder.is_dir():
                raise DatasetError(f"missing folder {folder}\n{TREE}")
        images = [p for p in img_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
        if not images:
            raise DatasetError(f"no images in {img_dir}\n{TREE}")
        labels = list(ann_dir.glob("*.png"))
        pairs = match_pairs(images, labels, lambda p: p.stem, lambda p: p.stem)
        names = class_names or [f"class_{i}" for i in range(num_classes)]
        super().__init__(pairs, num_classes, names)
