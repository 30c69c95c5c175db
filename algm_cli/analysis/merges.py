"""Merged-token maps (paper Fig. 5, supp. Fig. 4-7): what CLAP and GBM merge on an image.

Per image four panels: (a) the input; (b) the mean pairwise cosine similarity of the tokens in
each CLAP window (2 x 2 by default) in the CLAP layer, after MHSA, as a heatmap; (c) the groups
merged by CLAP alone; (d) the groups after the whole schedule (CLAP then GBM). A group of two or
more original tokens gets one colour and an outline; tokens still alone are left clear.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from ..merge import window_scores  # noqa: E402
from ..models.schedule import MergeSchedule  # noqa: E402
from ..models.vit import PATCH  # noqa: E402


@dataclass
class MergeMaps:
    """What one image's merges look like on its (gh, gw) token grid."""

    grid: tuple[int, int]
    window: tuple[int, int]
    score_layer: int
    scores: Tensor  # (gh // kh, gw // kw) mean window similarity
    clap_threshold: float | None
    clap_index: Tensor | None  # (gh, gw) group of each original token after CLAP (None: no CLAP)
    final_index: Tensor  # (gh, gw) group after every step
    clap_tokens: int | None
    final_tokens: int
    final_label: str  # e.g. "L5:gbm"


def clap_only(schedule: MergeSchedule) -> MergeSchedule:
    """Return `schedule` keeping only its CLAP step (no steps when it has none)."""
    return replace(schedule, steps=tuple(s for s in schedule.steps if s.method == "clap"))


@torch.no_grad()
def merge_maps(encoder, image: Tensor, schedule: MergeSchedule) -> MergeMaps:
    """Return the merge maps of one image (1, 3, H, W) (H, W multiples of 16) under `schedule`."""
    if image.shape[0] != 1:
        raise ValueError("merge maps are drawn one image at a time (batch size 1)")
    local = clap_only(schedule)
    clap = local.steps[0] if local.steps else None
    layer = clap.layer if clap is not None else 1
    first = encoder(image, local, capture=(layer,))
    gh, gw = first.grid
    window = tuple(int(v) for v in schedule.window)
    scores = window_scores(first.captured[layer], (gh, gw), window)[0].cpu()  # (gh/kh, gw/kw)
    full = encoder(image, schedule)
    labels = [s.label for s in schedule.steps]
    return MergeMaps(
        grid=(gh, gw), window=window, score_layer=layer, scores=scores,
        clap_threshold=clap.threshold if clap is not None else None,
        clap_index=first.state.index[0].reshape(gh, gw).cpu() if clap is not None else None,
        final_index=full.state.index[0].reshape(gh, gw).cpu(),
        clap_tokens=first.state.num_tokens if clap is not None else None,
        final_tokens=full.state.num_tokens,
        final_label=labels[-1] if labels else "no merging",
    )


def group_colours(index: Tensor, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return (colours (gh, gw, 3) float, merged (gh, gw) bool) for a group map `index` (gh, gw).

    Groups of size >= 2 get colours from a shuffled qualitative palette (deterministic in
    `seed`), in order of first appearance, so neighbouring groups rarely share a colour.
    """
    flat = index.reshape(-1).numpy()
    _, first, inverse, sizes = np.unique(flat, return_index=True, return_inverse=True,
                                         return_counts=True)
    merged_group = sizes >= 2
    order = np.argsort(first)  # groups by first appearance in raster order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    base = np.concatenate([plt.get_cmap("tab20").colors, plt.get_cmap("Set1").colors])
    base = base[np.random.default_rng(seed).permutation(len(base))]
    colours = base[rank % len(base)][inverse].reshape(*index.shape, 3)
    return colours, merged_group[inverse].reshape(index.shape)


def overlay_groups(image: np.ndarray, index: Tensor, alpha: float = 0.55,
                   scale: int = 1) -> np.ndarray:
    """Return (H*scale, W*scale, 3) float: `image` (H, W, 3) uint8 with merged groups painted.

    `index` (gh, gw) gives each 16 x 16 patch's group; merged patches are tinted with their
    group's colour, and group borders touching a merged patch are drawn in white.
    """
    colours, merged = group_colours(index)
    patch = PATCH * scale
    img = image.astype(np.float32) / 255
    if scale > 1:
        img = img.repeat(scale, 0).repeat(scale, 1)
    H, W = img.shape[:2]
    def up(a: np.ndarray) -> np.ndarray:  # (gh, gw, ...) per patch -> (H, W, ...) per pixel
        return a.repeat(patch, 0).repeat(patch, 1)[:H, :W]

    tint, where, ids = up(colours), up(merged), up(index.numpy())
    out = np.where(where[..., None], (1 - alpha) * img + alpha * tint, img)
    edge = np.zeros((H, W), dtype=bool)
    right = (ids[:, 1:] != ids[:, :-1]) & (where[:, 1:] | where[:, :-1])
    down = (ids[1:] != ids[:-1]) & (where[1:] | where[:-1])
    edge[:, 1:] |= right
    edge[:, :-1] |= right
    edge[1:] |= down
    edge[:-1] |= down
    out[edge] = 1.0
    return out


def display_scale(height: int, width: int, target: int = 480) -> int:
    """Return an integer upscaling so small images get crisp, thin group outlines."""
    return max(1, target // max(height, width))


def draw_row(axes, image: np.ndarray, maps: MergeMaps, name: str = "") -> None:
    """Draw the four panels of one image on `axes` (4 axes)."""
    H, W = image.shape[:2]
    scale = display_scale(H, W)
    kh, kw = maps.window
    n = maps.grid[0] * maps.grid[1]
    ax = axes[0]
    ax.imshow(image, extent=(0, W, H, 0), interpolation="bilinear")
    ax.set_title(f"(a) input{f' · {name}' if name else ''}", fontsize=9)
    ax = axes[1]
    ax.imshow(np.full((H, W, 3), 0.92))  # light grey where no full window lies
    scores = maps.scores.numpy()
    sh, sw = scores.shape
    tau = maps.clap_threshold
    if tau is None:
        colouring = dict(cmap="viridis")
    else:  # diverging around tau: blue windows stay, red windows merge
        low, high = min(float(scores.min()), tau - 0.01), max(float(scores.max()), tau + 0.01)
        colouring = dict(cmap="RdBu_r", norm=TwoSlopeNorm(tau, low, high))
    im = ax.imshow(scores, extent=(0, sw * kw * PATCH, sh * kh * PATCH, 0),
                   interpolation="nearest", **colouring)
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    bar = plt.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    bar.ax.tick_params(labelsize=7)
    title = f"(b) mean {kh}×{kw} window similarity, L{maps.score_layer}"
    if tau is not None:
        bar.set_ticks([low, (low + tau) / 2, tau, high])  # the two halves have unequal scales
        bar.ax.set_yticklabels([f"{v:.2f}" for v in (low, (low + tau) / 2, tau, high)])
        bar.ax.axhline(tau, color="black", lw=1.5)
        for r, c in zip(*np.nonzero(scores > tau)):  # windows above tau: outlined
            ax.add_patch(Rectangle((c * kw * PATCH, r * kh * PATCH), kw * PATCH, kh * PATCH,
                                   fill=False, edgecolor="black", lw=1.0))
        title += f"\nred, outlined: above τ = {tau:.3f}"
    ax.set_title(title, fontsize=9)
    ax = axes[2]
    if maps.clap_index is None:
        ax.imshow(image, extent=(0, W, H, 0))
        ax.set_title("(c) no CLAP step in the schedule", fontsize=9)
    else:
        ax.imshow(overlay_groups(image, maps.clap_index, scale=scale), extent=(0, W, H, 0))
        ax.set_title(f"(c) CLAP: {n} → {maps.clap_tokens} tokens", fontsize=9)
    ax = axes[3]
    ax.imshow(overlay_groups(image, maps.final_index, scale=scale), extent=(0, W, H, 0))
    after = "CLAP + GBM" if maps.clap_index is not None else maps.final_label
    ax.set_title(f"(d) {after} ({maps.final_label}): {maps.final_tokens} tokens", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])


def plot_merges(path, image: np.ndarray, maps: MergeMaps, name: str = "") -> None:
    """Write one image's row of four panels (PNG)."""
    H, W = image.shape[:2]
    fig, axes = plt.subplots(1, 4, figsize=(4 * 3.4, 3.4 * H / W + 0.6), dpi=120,
                             squeeze=False)
    draw_row(axes[0], image, maps, name)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_merge_grid(path, items: list[tuple[str, np.ndarray, MergeMaps]]) -> None:
    """Write the grid of every image's four panels, one row per image (PNG)."""
    if not items:
        raise ValueError("no images to draw")
    H, W = items[0][1].shape[:2]
    rows = len(items)
    fig, axes = plt.subplots(rows, 4, figsize=(4 * 3.4, rows * (3.4 * H / W + 0.6) + 0.2),
                             dpi=120, squeeze=False)
    for r, (name, image, maps) in enumerate(items):
        draw_row(axes[r], image, maps, name)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
