"""Qualitative predictions (paper Fig. 8-9): input, baseline, ALGM and ground truth side by side."""

from __future__ import annotations

import colorsys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from torch import Tensor  # noqa: E402

from ..data.transforms import IGNORE  # noqa: E402
from ..engine.evaluate import confusion, miou_from_confusion, sliding_window  # noqa: E402

IGNORE_COLOUR = (0, 0, 0)


def default_palette(num_classes: int) -> np.ndarray:
    """Return a deterministic (K, 3) uint8 palette: tab10/tab20 colours, then spread hues."""
    if num_classes <= 10:
        base = plt.get_cmap("tab10").colors[:num_classes]
    elif num_classes <= 20:
        base = plt.get_cmap("tab20").colors[:num_classes]
    else:  # golden-ratio hue steps, three lightness levels
        base = [colorsys.hls_to_rgb((i * 0.618033988749895) % 1.0, (0.45, 0.6, 0.3)[i % 3], 0.75)
                for i in range(num_classes)]
    return (np.asarray(base, dtype=np.float64) * 255).round().astype(np.uint8)


def palette_for(dataset, num_classes: int) -> np.ndarray:
    """Return the dataset's (K, 3) uint8 palette if it has one, else `default_palette(K)`."""
    palette = getattr(dataset, "palette", None)
    if palette is None:
        return default_palette(num_classes)
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    if len(palette) < num_classes:
        raise ValueError(f"the dataset palette has {len(palette)} colours for {num_classes} classes")
    return palette


def colorize(label: Tensor | np.ndarray, palette: np.ndarray, ignore: int = IGNORE) -> np.ndarray:
    """Return (H, W, 3) uint8: each pixel of `label` (H, W) in its class colour, ignore in black."""
    lab = np.asarray(label.cpu() if isinstance(label, Tensor) else label).astype(np.int64)
    table = np.zeros((max(len(palette), 1) + 1, 3), dtype=np.uint8)
    table[: len(palette)] = palette
    table[-1] = IGNORE_COLOUR
    index = np.where((lab == ignore) | (lab < 0) | (lab >= len(palette)), len(table) - 1, lab)
    return table[index]


@torch.no_grad()
def predict(model, image: Tensor, size: tuple[int, int], crop: int,
            stride: int) -> tuple[Tensor, dict[str, float]]:
    """Return (prediction (H, W) at `size`, kept-token fractions) for image (1, 3, h, w).

    Sliding-window inference (window = crop, every `stride` px) when a side exceeds the crop,
    one forward otherwise; the logits are resized bilinearly to `size` before the argmax.
    """
    if max(image.shape[-2:]) > crop:
        logits, stats = sliding_window(model.forward_with_stats, image, model.num_classes, crop,
                                       stride)
    else:
        logits, step = model.forward_with_stats(image)
        stats = [step]
    logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    kept: dict[str, list[float]] = {}
    for s in stats:
        for k, v in s.items():
            kept.setdefault(k, []).append(float(v))
    return logits.argmax(1)[0].cpu(), {k: sum(v) / len(v) for k, v in kept.items()}


def image_miou(pred: Tensor, label: Tensor, num_classes: int, ignore: int = IGNORE) -> float:
    """Return one image's mIoU (classes present in its truth or prediction)."""
    return miou_from_confusion(confusion(pred, label, num_classes, ignore))[0]


def plot_predictions(path, rows: list[dict], palette: np.ndarray,
                     class_names: list[str] | None = None) -> None:
    """Write the prediction grid (PNG): one row per image, columns input | baseline | ALGM | truth.

    rows: dicts with "name", "image" (H, W, 3) uint8, "baseline", "algm", "label" (H, W),
    "baseline_miou", "algm_miou", "kept" (final kept fraction or None).
    """
    if not rows:
        raise ValueError("no images to draw")
    H, W = rows[0]["image"].shape[:2]
    n = len(rows)
    height = n * (3.0 * H / W + 0.4) + 0.5  # inches: panels + a title line each + the legend
    fig, axes = plt.subplots(n, 4, figsize=(4 * 3.0, height), dpi=120, squeeze=False)
    for r, row in enumerate(rows):
        kept = row.get("kept")
        kept_text = f", {100 * kept:.0f}% tokens" if kept is not None else ""
        base_title = f"(b) baseline · mIoU {100 * row['baseline_miou']:.1f}"
        algm_title = f"(c) ALGM · mIoU {100 * row['algm_miou']:.1f}{kept_text}"
        panels = [
            (row["image"], f"(a) input · {row['name']}"),
            (colorize(row["baseline"], palette), base_title),
            (colorize(row["algm"], palette), algm_title),
            (colorize(row["label"], palette), "(d) ground truth"),
        ]
        for ax, (picture, title) in zip(axes[r], panels):
            ax.imshow(picture, interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    present = sorted({int(c) for row in rows for key in ("label", "baseline", "algm")
                      for c in np.unique(np.asarray(row[key])) if 0 <= int(c) < len(palette)})
    names = class_names or [f"class {i}" for i in range(len(palette))]
    handles = [Patch(color=palette[c] / 255, label=names[c]) for c in present[:24]]
    handles.append(Patch(color=np.asarray(IGNORE_COLOUR) / 255, label="ignore"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 9), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.4 / height, 1, 1))
    fig.savefig(path)
    plt.close(fig)
