"""Tiny fake copies of each dataset in its exact on-disk layout, written under a test folder.

`FAKES[name].write(root, split, count)` writes `count` random (image, label) pairs of that split;
`FAKES[name].paths(root, split, i)` says where pair i lives, so a test can overwrite or delete
one file. Images are 40 x 56 (H x W); raw labels are valid for the dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

H, W = 40, 56


def save_image(path: Path, image: np.ndarray) -> None:
    """Write an RGB uint8 (H, W, 3) image (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def save_label(path: Path, raw: np.ndarray, mode: str = "L") -> None:
    """Write raw label indices (H, W) as a single-channel PNG of `mode` ("L" or "P")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = np.ascontiguousarray(raw.astype(np.uint8))
    img = Image.frombytes(mode, (raw.shape[1], raw.shape[0]), raw.tobytes())
    if mode == "P":  # a palette whose colours differ from the indices
        img.putpalette([(7 * i + 50) % 256 for i in range(768)])
    img.save(path)


@dataclass(frozen=True)
class Fake:
    """How one dataset lays out its files."""

    name: str  # build_dataset key
    num_classes: int
    reduce_zero_label: bool
    tree_hint: str  # a fragment of the expected-layout text
    locate: Callable[[Path, str, int], tuple[Path, Path]]
    list_split: Callable[[Path, str, int], None] | None = None  # writes a split file if needed

    def paths(self, root: Path, split: str, index: int) -> tuple[Path, Path]:
        """Return (image path, label path) of pair `index` of `split`."""
        return self.locate(root, split, index)

    def raw_values(self) -> tuple[int, int]:
        """Return the (low, high) inclusive range of valid non-ignore raw label values."""
        return (1, self.num_classes) if self.reduce_zero_label else (0, self.num_classes - 1)

    def write(self, root: Path, split: str, count: int, seed: int = 0) -> list[tuple[Path, Path]]:
        """Write `count` random valid pairs of `split`; return their (image, label) paths."""
        rng = np.random.default_rng([seed, len(split)])
        low, high = self.raw_values()
        out = []
        for i in range(count):
            image_path, label_path = self.paths(root, split, i)
            save_image(image_path, rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
            raw = rng.integers(low, high + 1, (H, W))
            raw[0, :4] = 255 if not self.reduce_zero_label else 0  # some ignore pixels
            save_label(label_path, raw)
            out.append((image_path, label_path))
        if self.list_split is not None:
            self.list_split(root, split, count)
        return out


def _ade(root: Path, split: str, i: int) -> tuple[Path, Path]:
    """Return the ADE20K (image, label) paths of pair i."""
    sub = {"train": "training", "val": "validation"}[split]
    base = root / "ADEChallengeData2016"
    return (base / "images" / sub / f"ADE_{sub}_{i:08d}.jpg",
            base / "annotations" / sub / f"ADE_{sub}_{i:08d}.png")


def _cityscapes(root: Path, split: str, i: int) -> tuple[Path, Path]:
    """Return the Cityscapes (image, label) paths of pair i (two cities)."""
    city = ("aachen", "bremen")[i % 2]
    stem = f"{city}_{i:06d}_000019"
    return (root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
            root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png")


def _pascal_id(split: str, i: int) -> str:
    """Return the Pascal-Context id of pair i (val ids start at 5000)."""
    return f"2008_{(0 if split == 'train' else 5000) + i:06d}"


def _pascal(root: Path, split: str, i: int) -> tuple[Path, Path]:
    """Return the Pascal-Context (image, label) paths of pair i."""
    base = root / "VOCdevkit" / "VOC2010"
    name = _pascal_id(split, i)
    return base / "JPEGImages" / f"{name}.jpg", base / "SegmentationClassContext" / f"{name}.png"


def _pascal_list(root: Path, split: str, count: int) -> None:
    """Write the Pascal-Context split file listing `count` ids."""
    path = root / "VOCdevkit" / "VOC2010" / "ImageSets" / "SegmentationContext" / f"{split}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{_pascal_id(split, i)}\n" for i in range(count)))


def _coco(root: Path, split: str, i: int) -> tuple[Path, Path]:
    """Return the COCO-Stuff-10K (image, label) paths of pair i."""
    sub = {"train": "train2014", "val": "test2014"}[split]
    stem = f"COCO_{sub}_{i:012d}"
    return (root / "images" / sub / f"{stem}.jpg",
            root / "annotations" / sub / f"{stem}_labelTrainIds.png")


FAKES = {
    "ade20k": Fake("ade20k", 150, True, "ADEChallengeData2016/", _ade),
    "cityscapes": Fake("cityscapes", 19, False, "gtFine/{train,val}/<city>/", _cityscapes),
    "pascal_context": Fake("pascal_context", 59, True, "SegmentationClassContext/", _pascal,
                           _pascal_list),
    "coco_stuff10k": Fake("coco_stuff10k", 171, True, "annotations/train2014/", _coco),
}


def write_both(fake: Fake, root: Path, train: int = 3, val: int = 2) -> None:
    """Write a train and a val split of `fake` under root."""
    fake.write(root, "train", train)
    fake.write(root, "val", val)
