"""A dataset of (image, label map) file pairs with label remapping and readable errors.

Every problem a user can fix (missing folder, orphan file, unreadable image, label values out of
range) raises `DatasetError` with one message that names the file or folder; missing folders also
print the layout the dataset expects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from .classes import generated_palette
from .transforms import IGNORE

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class DatasetError(ValueError):
    """A dataset that cannot be read, with a message naming the file or folder."""


class SegmentationFolder(Dataset):
    """Pairs of image and label files; samples are {"image" uint8 (3,H,W), "label" int64 (H,W)}.

    Subclasses find `pairs` and set `title` and `reduce_zero_label` (the resize scales are the
    dataset config's `train_scale` / `eval_short_side`). Returned labels use 0..K-1 and
    255 = ignore for every dataset: with `reduce_zero_label` the file's 0 becomes 255 and k
    becomes k-1 (255 stays 255).
    """

    title = "dataset"
    reduce_zero_label = False

    def __init__(self, pairs: Iterable[tuple[Path, Path]], num_classes: int,
                 class_names: Iterable[str], palette=None) -> None:
        class_names = list(class_names)
        if not 1 <= num_classes < IGNORE:
            raise DatasetError(f"{self.title}: num_classes must be in 1..{IGNORE - 1} "
                               f"({IGNORE} is the ignore value), got {num_classes}")
        if len(class_names) != num_classes:
            raise DatasetError(f"{self.title}: {len(class_names)} class names given for "
                               f"{num_classes} classes")
        self.pairs = sorted((Path(img), Path(lab)) for img, lab in pairs)
        self.num_classes = num_classes
        self.class_names = class_names
        self.ignore_index = IGNORE
        self.palette = _as_palette(palette, num_classes, self.title)

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images, {self.num_classes} classes)"

    def sample_name(self, image_path: Path) -> str:
        """Return the sample's name (the image file's stem; subclasses strip layout suffixes)."""
        return image_path.stem

    def remap(self, raw: Tensor) -> Tensor:
        """Return int64 labels in 0..K-1 / 255 from the file's raw values (any shape)."""
        raw = raw.long()
        if not self.reduce_zero_label:
            return raw
        return torch.where((raw == 0) | (raw == IGNORE), torch.full_like(raw, IGNORE), raw - 1)

    def check_label(self, label: Tensor, path: Path) -> None:
        """Raise DatasetError naming `path` if remapped `label` has values outside 0..K-1 / 255."""
        values = torch.unique(label)
        bad = values[(values != IGNORE) & ((values < 0) | (values >= self.num_classes))]
        if bad.numel() == 0:
            return
        shown = bad[:10].tolist()
        more = f" (and {bad.numel() - 10} more)" if bad.numel() > 10 else ""
        if self.reduce_zero_label:
            rule = (f"raw values in the file {[v + 1 for v in shown]}; this dataset stores class k "
                    f"as k+1 and 0 = ignore, so raw values must be 0..{self.num_classes} or 255")
        else:
            rule = f"raw values are used as-is: 0..{self.num_classes - 1} or 255 = ignore"
        raise DatasetError(f"{self.title}: label {path} has values {shown}{more} outside "
                           f"0..{self.num_classes - 1} after remapping ({rule})")

    def __getitem__(self, index: int) -> dict:
        image_path, label_path = self.pairs[index]
        image = read_image(image_path)  # (H, W, 3) uint8
        raw = read_label(label_path)  # (H, W) raw indices
        if image.shape[:2] != raw.shape:
            raise DatasetError(f"{self.title}: image {image_path} is "
                               f"{image.shape[1]}x{image.shape[0]} but its label {label_path} is "
                               f"{raw.shape[1]}x{raw.shape[0]}")
        label = self.remap(torch.from_numpy(raw.astype(np.int64)))  # (H, W) int64
        self.check_label(label, label_path)
        return {"image": torch.from_numpy(image).permute(2, 0, 1).contiguous(),  # (3, H, W)
                "label": label, "name": self.sample_name(image_path)}


def _as_palette(palette, num_classes: int, title: str) -> Tensor:
    """Return `palette` as uint8 (K, 3), or a generated one when it is None."""
    if palette is None:
        return generated_palette(num_classes)
    out = torch.as_tensor(np.asarray(palette, dtype=np.uint8)).reshape(-1, 3)
    if len(out) != num_classes:
        raise DatasetError(f"{title}: the palette has {len(out)} colours for {num_classes} classes")
    return out


def read_image(path: Path) -> np.ndarray:
    """Return an RGB uint8 (H, W, 3) array, or raise DatasetError naming the file."""
    try:
        with Image.open(path) as img:
            return np.array(img.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DatasetError(f"cannot read image {path}: {err}") from None


def read_label(path: Path) -> np.ndarray:
    """Return the raw label indices (H, W) of a single-channel PNG (mode L, P, I;16 or I)."""
    try:
        with Image.open(path) as img:
            mode = img.mode
            raw = np.array(img)  # mode P gives palette indices, never colours
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DatasetError(f"cannot read label {path}: {err}") from None
    if raw.ndim != 2:
        raise DatasetError(f"label {path} has mode {mode} ({raw.shape[-1]} channels); expected a "
                           f"single-channel index image (mode L or P), not colour-coded labels")
    return raw


def require_dir(path: Path, title: str, tree: str, what: str = "") -> Path:
    """Return `path` if it is a folder, else raise DatasetError naming it and showing `tree`."""
    if not path.is_dir():
        note = f" ({what})" if what else ""
        raise DatasetError(f"{title}: missing folder {path}{note}\n{tree}")
    return path


def split_name(split: str, splits: dict[str, str], title: str) -> str:
    """Return the on-disk name of `split` ("train" / "val"), or raise DatasetError."""
    if split not in splits:
        raise DatasetError(f"{title}: unknown split {split!r}; expected one of {list(splits)}")
    return splits[split]


def list_images(folder: Path, pattern: str = "*") -> list[Path]:
    """Return the sorted image files (.jpg, .jpeg, .png) in `folder` matching glob `pattern`."""
    return sorted(p for p in folder.glob(pattern)
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _by_key(paths: list[Path], key: Callable[[Path], str], kind: str,
            title: str) -> dict[str, Path]:
    """Return {key: path}, or raise DatasetError naming two files that share a key."""
    out: dict[str, Path] = {}
    for path in paths:
        k = key(path)
        if k in out:
            raise DatasetError(f"{title}: two {kind} files for sample {k!r}: {out[k]} and {path}")
        out[k] = path
    return out


def match_pairs(images: list[Path], labels: list[Path], *, image_key: Callable[[Path], str],
                label_key: Callable[[Path], str], label_for: Callable[[str], str],
                image_for: Callable[[str], str], title: str) -> list[tuple[Path, Path]]:
    """Return sorted (image, label) pairs matched by key; an orphan raises DatasetError.

    `label_for(key)` / `image_for(key)` describe where the missing partner was looked for.
    """
    image_of = _by_key(images, image_key, "image", title)
    label_of = _by_key(labels, label_key, "label", title)
    lonely_images = sorted(image_of.keys() - label_of.keys())
    if lonely_images:
        key = lonely_images[0]
        raise DatasetError(f"{title}: image {image_of[key]} has no label (expected "
                           f"{label_for(key)}){_more(lonely_images, 'images without labels')}")
    lonely_labels = sorted(label_of.keys() - image_of.keys())
    if lonely_labels:
        key = lonely_labels[0]
        raise DatasetError(f"{title}: label {label_of[key]} has no image (expected "
                           f"{image_for(key)}){_more(lonely_labels, 'labels without images')}")
    return sorted((image_of[k], label_of[k]) for k in image_of)


def _more(keys: list[str], what: str) -> str:
    """Return ' and N more <what>' when more than one key is listed, else ''."""
    return f"; and {len(keys) - 1} more {what}" if len(keys) > 1 else ""
