"""The embedded synthetic segmentation dataset, written to disk in the ADE20K layout.

Each image has large "stuff" regions (a horizon splitting sky-like and ground-like classes, and a
vertical wall/floor cut) and a few small "thing" objects (rectangles and ellipses). Every class
has its own mean colour, stripe texture (frequency, orientation, amplitude) and noise level, so
tokens inside a region are similar but not identical (merging has redundancy to exploit) and
small objects carry detail that over-merging destroys. Labels follow ADE20K: 0 = ignore (a one
pixel outline around objects), class c is stored as c + 1.

Generation is seeded and deterministic, takes a few seconds, and is cached: a marker file holds
the generation parameters, and a folder with a matching marker is reused. Concurrent first runs
are safe: one process generates under a file lock (root/.synthetic.lock) into a temporary folder
that is renamed into place; the others wait and reuse it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image

CLASS_NAMES = ("sky", "grass", "water", "wall", "floor", "car", "person", "sign")
NUM_STUFF = 5
MARKER = "synthetic.json"
VERSION = 1


@dataclass(frozen=True)
class SyntheticSpec:
    """Size and seed of the generated dataset."""

    train: int = 240
    val: int = 24
    height: int = 128
    width: int = 160
    seed: int = 0
    version: int = VERSION


def class_styles(seed: int = 1234) -> dict[str, np.ndarray]:
    """Return per-class colour (K, 3), stripe frequency, angle, amplitude and noise (K,)."""
    rng = np.random.default_rng(seed)
    k = len(CLASS_NAMES)
    return {
        "colour": rng.uniform(0.15, 0.85, size=(k, 3)),
        "freq": rng.uniform(0.05, 0.5, size=k),
        "angle": rng.uniform(0, np.pi, size=k),
        "amp": rng.uniform(0.03, 0.12, size=k),
        "noise": rng.uniform(0.02, 0.07, size=k),
    }


def _stuff_layout(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Return an (h, w) map of stuff classes: a wavy horizon and a vertical cut below it."""
    ys, xs = np.mgrid[0:h, 0:w]
    top, bottom = rng.choice(3, size=2, replace=False)  # sky / grass / water above the horizon
    horizon = h * rng.uniform(0.3, 0.6) + 6 * np.sin(xs / w * 2 * np.pi * rng.uniform(0.5, 2))
    cut = w * rng.uniform(0.3, 0.7)
    lower = np.where(xs < cut, 3, 4) if rng.random() < 0.5 else np.full((h, w), bottom)
    return np.where(ys < horizon, top, lower)


def _add_things(rng: np.random.Generator, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (label with 1-4 objects drawn in, boolean outline mask of the objects)."""
    h, w = label.shape
    ys, xs = np.mgrid[0:h, 0:w]
    outline = np.zeros((h, w), dtype=bool)
    for _ in range(rng.integers(1, 5)):
        cls = rng.integers(NUM_STUFF, len(CLASS_NAMES))
        rh, rw = rng.integers(6, 24, size=2)
        cy, cx = rng.integers(rh, h - rh), rng.integers(rw, w - rw)
        if rng.random() < 0.5:
            inside = (np.abs(ys - cy) <= rh) & (np.abs(xs - cx) <= rw)
        else:
            inside = ((ys - cy) / rh) ** 2 + ((xs - cx) / rw) ** 2 <= 1
        grown = np.zeros_like(inside)
        grown[1:-1, 1:-1] = inside[:-2, 1:-1] | inside[2:, 1:-1] | inside[1:-1, :-2] | inside[1:-1, 2:]
        outline |= grown & ~inside
        label = np.where(inside, cls, label)
    return label, outline & ~np.isin(label, np.arange(NUM_STUFF, len(CLASS_NAMES)))


def render(label: np.ndarray, rng: np.random.Generator, styles: dict) -> np.ndarray:
    """Return a uint8 (h, w, 3) image whose pixels follow their class's colour and texture."""
    h, w = label.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    angle, freq = styles["angle"][label], styles["freq"][label]
    stripes = np.sin(freq * (xs * np.cos(angle) + ys * np.sin(angle)))
    shade = styles["amp"][label] * stripes
    noise = styles["noise"][label][..., None] * rng.standard_normal((h, w, 3))
    light = rng.uniform(-0.08, 0.08)  # per-image brightness
    img = styles["colour"][label] + shade[..., None] + noise + light
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def sample(index: int, spec: SyntheticSpec, styles: dict) -> tuple[np.ndarray, np.ndarray]:
    """Return (image uint8 (h, w, 3), ADE-style label uint8 (h, w)) of sample `index`."""
    rng = np.random.default_rng([spec.seed, index])
    stuff = _stuff_layout(rng, spec.height, spec.width)
    label, outline = _add_things(rng, stuff)
    image = render(label, rng, styles)
    ade = (label + 1).astype(np.uint8)
    ade[outline] = 0
    return image, ade


def _is_current(marker: Path, spec: SyntheticSpec) -> bool:
    """Return True when `marker` records exactly `spec` (the folder beside it is complete)."""
    try:
        return json.loads(marker.read_text()) == asdict(spec)
    except (OSError, ValueError):
        return False


def _write_split(out: Path, split: str, count: int, offset: int, spec, styles) -> None:
    """Write `count` samples of `split` (images and ADE-style labels) under `out`."""
    img_dir = out / "images" / split
    ann_dir = out / "annotations" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, label = sample(offset + i, spec, styles)
        name = f"synthetic_{split}_{i:05d}"
        Image.fromarray(image).save(img_dir / f"{name}.png")
        Image.fromarray(label).save(ann_dir / f"{name}.png")


def generate(root: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Write (or reuse) the dataset under root/ADEChallengeData2016; return that folder."""
    root = Path(root)
    out = root / "ADEChallengeData2016"
    marker = root / MARKER
    if _is_current(marker, spec):
        return out
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".synthetic.lock")):
        if _is_current(marker, spec):  # another process generated it while we waited
            return out
        marker.unlink(missing_ok=True)
        staging = root / f".{out.name}.partial"
        if staging.exists():
            shutil.rmtree(staging)
        styles = class_styles()
        _write_split(staging, "training", spec.train, 0, spec, styles)
        _write_split(staging, "validation", spec.val, spec.train, spec, styles)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(spec)))
        tmp.replace(marker)  # the marker appears only once every file is in place
    return out
