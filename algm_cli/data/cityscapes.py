"""Cityscapes (gtFine, labelTrainIds): 19 classes, 255 = ignore; labels used as stored."""

from __future__ import annotations

from pathlib import Path

from .base import DatasetError, SegmentationFolder, match_pairs, require_dir, split_name
from .classes import CITYSCAPES_CLASSES, cityscapes_palette

SPLITS = {"train": "train", "val": "val"}
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelTrainIds.png"


def layout(root: Path) -> str:
    """Return the expected directory tree under `root`, for error messages."""
    return (f"expected layout under {root}:\n"
            f"  leftImg8bit/{{train,val}}/<city>/<city>_<seq>_<frame>{IMAGE_SUFFIX}\n"
            f"  gtFine/{{train,val}}/<city>/<city>_<seq>_<frame>{LABEL_SUFFIX}\n"
            f"  (the labelTrainIds files are made by cityscapesscripts: "
            f"CITYSCAPES_DATASET={root} csCreateTrainIdLabelImgs)")


def _key(path: Path, suffix: str) -> str:
    """Return "<city>/<stem>" of a Cityscapes file, with its layout suffix removed."""
    return f"{path.parent.name}/{path.name[: -len(suffix)]}"


class Cityscapes(SegmentationFolder):
    """Cityscapes fine annotations as train ids (0..18, 255 = ignore)."""

    title = "Cityscapes"
    reduce_zero_label = False

    def __init__(self, root, split: str) -> None:
        root = Path(root)
        sub = split_name(split, SPLITS, self.title)
        tree = layout(root)
        require_dir(root, self.title, tree, "the dataset root")
        img_dir = require_dir(root / "leftImg8bit" / sub, self.title, tree, f"{split} images")
        ann_dir = require_dir(root / "gtFine" / sub, self.title, tree, f"{split} labels")
        images = sorted(p for p in img_dir.glob(f"*/*{IMAGE_SUFFIX}") if p.is_file())
        if not images:
            raise DatasetError(f"{self.title}: no images (<city>/*{IMAGE_SUFFIX}) in "
                               f"{img_dir}\n{tree}")
        labels = sorted(p for p in ann_dir.glob(f"*/*{LABEL_SUFFIX}") if p.is_file())
        if not labels:
            hint = ""
            if any(ann_dir.glob("*/*_gtFine_labelIds.png")):
                hint = (" (found *_gtFine_labelIds.png: create the train-id labels with "
                        f"CITYSCAPES_DATASET={root} csCreateTrainIdLabelImgs)")
            raise DatasetError(f"{self.title}: no label files (<city>/*{LABEL_SUFFIX}) in "
                               f"{ann_dir}{hint}\n{tree}")
        pairs = match_pairs(
            images, labels, image_key=lambda p: _key(p, IMAGE_SUFFIX),
            label_key=lambda p: _key(p, LABEL_SUFFIX),
            label_for=lambda k: ann_dir / f"{k}{LABEL_SUFFIX}",
            image_for=lambda k: img_dir / f"{k}{IMAGE_SUFFIX}", title=self.title)
        super().__init__(pairs, len(CITYSCAPES_CLASSES), CITYSCAPES_CLASSES, cityscapes_palette())

    def sample_name(self, image_path: Path) -> str:
        """Return "<city>_<seq>_<frame>" (the image name without `_leftImg8bit.png`)."""
        return image_path.name[: -len(IMAGE_SUFFIX)]
