"""Top-down pose data: person crops with K keypoints, from COCO keypoints files or synthetic.

A sample is a dict: "image" uint8 (3, S, S) (the person crop), "keypoints" float (K, 3) as
(x, y, visibility) in crop pixels (visibility 0: not labelled), "bbox" float (4,) the person box
(x, y, w, h) in crop pixels, "area" the instance area in crop pixels^2 (for OKS).

COCO (`CocoKeypoints`): person_keypoints_<split>.json + <split> images, the layout of COCO 2017
(`annotations/person_keypoints_{train,val}2017.json`, `{train,val}2017/*.jpg`). As COCO's tools
and mmpose do, crowd annotations and persons without a labelled keypoint are dropped; an
annotation whose keypoints are missing or not 3K numbers, or whose box is empty after clipping to
the image, is skipped and counted, with one warning line per file. The crop is the box centre,
side = 1.25 x the longer box side (mmpose's padding), resized to S x S.

Synthetic (`SyntheticPose`): stick figures with the 17 COCO joints drawn on a textured
background, generated in memory from (seed, index), so it needs no files. Left limbs are drawn in
warm colours and right limbs in cold ones (the left/right identity is visible), the head is a disc
with two eye dots.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import DatasetError

COCO_KEYPOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
                  "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                  "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
                  "right_ankle")
# per-keypoint OKS constants of COCO (cocoapi, pycocotools/cocoeval.py `kpt_oks_sigmas`)
COCO_SIGMAS = (0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07,
               0.87, 0.87, 0.89, 0.89)
COCO_SIGMAS = tuple(s / 10 for s in COCO_SIGMAS)
BOX_PADDING = 1.25


# ----------------------------------------------------------------------------- crops


def crop_person(image: torch.Tensor, keypoints: np.ndarray, bbox: np.ndarray,
                size: int) -> dict:
    """Return a sample: the square crop around `bbox` (x, y, w, h) of image (3, H, W) at size."""
    x, y, w, h = (float(v) for v in bbox)
    side = BOX_PADDING * max(w, h)
    x0, y0 = x + w / 2 - side / 2, y + h / 2 - side / 2
    # sample the crop with grid_sample (zeros outside the image), pixel centres aligned
    H, W = image.shape[-2:]
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) * side / size
    gx = (x0 + centres) / W * 2 - 1
    gy = (y0 + centres) / H * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None]  # (1, S, S, 2)
    crop = F.grid_sample(image[None].float(), grid, mode="bilinear", align_corners=False)[0]
    scale = size / side
    kps = np.asarray(keypoints, dtype=np.float32).reshape(-1, 3).copy()
    kps[:, 0] = (kps[:, 0] - x0) * scale
    kps[:, 1] = (kps[:, 1] - y0) * scale
    kps[kps[:, 2] == 0, :2] = 0
    box = np.array([(x - x0) * scale, (y - y0) * scale, w * scale, h * scale], dtype=np.float32)
    return {"image": crop.round().clamp(0, 255).to(torch.uint8), "keypoints": torch.from_numpy(kps),
            "bbox": torch.from_numpy(box), "area": float(w * h * scale * scale)}


# ----------------------------------------------------------------------------- COCO


def check_annotation(ann: dict, width: int, height: int, k: int) -> str | None:
    """Return why a COCO person annotation cannot be used (None: usable)."""
    kps = ann.get("keypoints")
    if not isinstance(kps, list) or len(kps) != 3 * k:
        return f"keypoints missing or not {3 * k} numbers"
    box = ann.get("bbox")
    if not isinstance(box, list) or len(box) != 4:
        return "bbox missing"
    x, y, w, h = box
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(width - 1.0, x + max(0.0, w - 1)), min(height - 1.0, y + max(0.0, h - 1))
    if x2 <= x1 or y2 <= y1:
        return "bbox empty or outside the image"
    return None


class CocoKeypoints:
    """Person crops of a COCO keypoints split (root/annotations/person_keypoints_<split>.json)."""

    def __init__(self, root: Path, split: str, size: int, num_keypoints: int = 17) -> None:
        ann_file = Path(root) / "annotations" / f"person_keypoints_{split}.json"
        if not ann_file.is_file():
            raise DatasetError(f"{ann_file}: no such file; expected the COCO layout "
                               f"<root>/annotations/person_keypoints_{split}.json and "
                               f"<root>/{split}/*.jpg")
        try:
            data = json.loads(ann_file.read_text())
            images = {int(im["id"]): im for im in data["images"]}
            annotations = data["annotations"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DatasetError(f"{ann_file}: not a COCO keypoints file ({err})") from None
        self.image_dir, self.size, self.k = Path(root) / split, size, num_keypoints
        self.items, skipped = [], 0
        for ann in annotations:
            image = images.get(int(ann.get("image_id", -1)))
            if ann.get("iscrowd", 0) or (ann.get("num_keypoints", 1) == 0):
                continue  # COCO evaluation ignores them; mmpose drops them
            problem = "image_id unknown" if image is None else check_annotation(
                ann, int(image["width"]), int(image["height"]), num_keypoints)
            if problem is not None:
                skipped += 1
                continue
            if not any(v > 0 for v in ann["keypoints"][2::3]):
                continue
            self.items.append((image["file_name"], ann))
        self.skipped = skipped
        if skipped:
            warnings.warn(f"{ann_file}: skipped {skipped} bad person annotations (missing "
                          f"keypoints, empty box or unknown image)", stacklevel=2)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        name, ann = self.items[index]
        path = self.image_dir / name
        if not path.is_file():
            raise DatasetError(f"{path}: image of annotation {ann.get('id')} not found")
        image = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)
        sample = crop_person(image, np.asarray(ann["keypoints"]), np.asarray(ann["bbox"]), self.size)
        scale = sample["bbox"][2].item() / max(float(ann["bbox"][2]), 1e-6)
        if "area" in ann:
            sample["area"] = float(ann["area"]) * scale * scale
        return sample


# ----------------------------------------------------------------------------- synthetic

# skeleton as (parent, child, limb length in torso units, angle spread); angles in degrees
_LEFT, _RIGHT = (230, 90, 40), (40, 120, 230)


def _segment_mask(xx: np.ndarray, yy: np.ndarray, a, b, radius: float) -> np.ndarray:
    """Return the pixels within `radius` of segment a-b."""
    ax, ay = a
    bx, by = b
    dx, dy = bx - ax, by - ay
    t = np.clip(((xx - ax) * dx + (yy - ay) * dy) / max(dx * dx + dy * dy, 1e-6), 0, 1)
    return (xx - ax - t * dx) ** 2 + (yy - ay - t * dy) ** 2 <= radius * radius


def stick_figure(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (image uint8 (S, S, 3), keypoints (17, 2) in pixels) of one random stick figure."""
    unit = size * rng.uniform(0.16, 0.22)  # torso length
    cx, cy = size / 2 + rng.uniform(-0.08, 0.08) * size, size / 2 + rng.uniform(-0.05, 0.05) * size
    lean = math.radians(rng.uniform(-20, 20))
    up = np.array([math.sin(lean), -math.cos(lean)])
    side = np.array([math.cos(lean), math.sin(lean)])
    neck = np.array([cx, cy]) + up * unit * 0.5
    pelvis = np.array([cx, cy]) - up * unit * 0.5
    kp = np.zeros((17, 2))
    kp[0] = neck + up * unit * 0.45  # nose = head centre
    kp[1], kp[2] = kp[0] + up * unit * 0.1 + side * unit * 0.12, kp[0] + up * unit * 0.1 - side * unit * 0.12
    kp[3], kp[4] = kp[0] + side * unit * 0.22, kp[0] - side * unit * 0.22
    kp[5], kp[6] = neck + side * unit * 0.35, neck - side * unit * 0.35  # shoulders
    kp[11], kp[12] = pelvis + side * unit * 0.22, pelvis - side * unit * 0.22  # hips

    def limb(start, length, degrees):
        a = math.radians(degrees)
        return start + length * unit * np.array([math.sin(a), math.cos(a)])

    for s, (sh, el, wr, hip, kn, an) in ((1, (5, 7, 9, 11, 13, 15)), (-1, (6, 8, 10, 12, 14, 16))):
        upper = s * rng.uniform(10, 150)
        kp[el] = limb(kp[sh], 0.55, upper)
        kp[wr] = limb(kp[el], 0.5, upper + s * rng.uniform(-30, 120))
        thigh = s * rng.uniform(-10, 60)
        kp[kn] = limb(kp[hip], 0.65, thigh)
        kp[an] = limb(kp[kn], 0.6, thigh + s * rng.uniform(-60, 10))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    base = rng.uniform(60, 200, size=3)
    image = base + rng.normal(0, 18, size=(size, size, 3))  # textured background
    width = max(1.5, size / 48)
    body = np.array([120, 120, 120])
    strokes = [((5, 6), body), ((11, 12), body), ((5, 11), _LEFT), ((6, 12), _RIGHT),
               ((5, 7), _LEFT), ((7, 9), _LEFT), ((6, 8), _RIGHT), ((8, 10), _RIGHT),
               ((11, 13), _LEFT), ((13, 15), _LEFT), ((12, 14), _RIGHT), ((14, 16), _RIGHT)]
    for (i, j), colour in strokes:
        image[_segment_mask(xx, yy, kp[i], kp[j], width)] = colour
    image[_segment_mask(xx, yy, kp[0], kp[0], unit * 0.28)] = (235, 200, 170)  # head
    for eye, colour in ((1, _LEFT), (2, _RIGHT)):
        image[_segment_mask(xx, yy, kp[eye], kp[eye], width)] = colour
    return image.clip(0, 255).astype(np.uint8), kp


class SyntheticPose:
    """`count` synthetic stick-figure crops of size x size, deterministic in (seed, index)."""

    def __init__(self, count: int, size: int, seed: int) -> None:
        self.count, self.size, self.seed = count, size, seed
        self._cache: dict[int, dict] = {}  # rendering costs ~20 ms; each crop is drawn once

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not 0 <= index < self.count:
            raise IndexError(index)
        if index not in self._cache:
            self._cache[index] = self._render(index)
        return self._cache[index]

    def _render(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index])
        image, kp = stick_figure(rng, self.size)
        inside = (kp >= 0).all(1) & (kp < self.size).all(1)
        keypoints = np.concatenate([kp, np.where(inside, 2.0, 0.0)[:, None]], 1).astype(np.float32)
        keypoints[~inside, :2] = 0
        lo, hi = kp[inside].min(0), kp[inside].max(0)
        pad = self.size * 0.03
        lo, hi = np.maximum(lo - pad, 0), np.minimum(hi + pad, self.size)
        box = np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]], dtype=np.float32)
        return {"image": torch.from_numpy(image).permute(2, 0, 1).contiguous(),
                "keypoints": torch.from_numpy(keypoints), "bbox": torch.from_numpy(box),
                "area": float(box[2] * box[3])}
