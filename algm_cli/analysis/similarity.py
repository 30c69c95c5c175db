"""Token-similarity study (paper Sec. 3.2, Fig. 2): are similar tokens tokens of one class?

Every 16 x 16 patch gets the majority label of its pixels; a patch whose majority is the ignore
label takes part in no pair. For two distinct tokens of an image, the pair is *intra-class* when
both patches carry the same label and *inter-class* otherwise. Two views:

(a) local: in one early layer (layer 1), only pairs inside the same k x k window (windows aligned
    at (0, 0), full windows only, as CLAP cuts them), for several k;
(b) global: in every layer, all pairs of the image.

Statistics are pooled over pairs, not over images: counts, sums and sums of squares of the
similarities are accumulated over every pair of every image, so the mean and (population) std
of a row describe all its pairs at once and an image with more valid pairs weighs more. (A mean
of per-image means would weigh a 3-pair image like a 3000-pair one.) Each unordered pair counts
once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

from ..data.transforms import IGNORE  # noqa: E402
from ..engine.calibrate import Moments  # noqa: E402

PAIR_TYPES = ("intra", "inter")
COLUMNS = ["analysis", "layer", "window", "pair_type", "mean", "std", "count"]


def patch_labels(label: Tensor, patch: int = 16, ignore: int = IGNORE) -> Tensor:
    """Return (gh, gw) int64: each patch's majority label of `label` (H, W), `ignore` if that wins.

    H and W must be multiples of `patch`. Ties go to the smallest label id, and the ignore label
    loses every tie, so a patch is excluded only when ignore pixels strictly outnumber each class.
    """
    H, W = label.shape
    if H % patch or W % patch:
        raise ValueError(f"label map {H}x{W} is not a multiple of the patch size {patch}")
    gh, gw = H // patch, W // patch
    lab = label.long()
    valid = lab != ignore
    if bool((lab[valid] < 0).any()):
        raise ValueError("labels must be >= 0 (or the ignore label)")
    slots = int(lab[valid].max()) + 2 if bool(valid.any()) else 1  # classes + one ignore slot
    codes = torch.where(valid, lab, torch.full_like(lab, slots - 1))  # ignore -> last slot
    blocks = codes.reshape(gh, patch, gw, patch).permute(0, 2, 1, 3).reshape(gh * gw, patch * patch)
    offsets = torch.arange(gh * gw, device=lab.device).unsqueeze(1) * slots
    counts = torch.bincount((blocks + offsets).reshape(-1), minlength=gh * gw * slots)
    winner = counts.reshape(gh * gw, slots).argmax(dim=1)  # first maximum: smallest id wins ties
    winner = torch.where(winner == slots - 1, torch.full_like(winner, ignore), winner)
    return winner.reshape(gh, gw)


def window_groups(grid: tuple[int, int], k: int, device=None) -> Tensor:
    """Return (gh*gw,) int64: the k x k window (aligned at 0, 0) of each token, -1 outside one."""
    h, w = grid
    rows = torch.arange(h, device=device) // k
    cols = torch.arange(w, device=device) // k
    nh, nw = h // k, w // k
    ids = rows[:, None] * nw + cols[None, :]
    inside = (rows[:, None] < nh) & (cols[None, :] < nw)
    return torch.where(inside, ids, torch.full_like(ids, -1)).reshape(-1)


def pair_similarity_split(
    tokens: Tensor, labels: Tensor, groups: Tensor | None = None, ignore: int = IGNORE
) -> dict[str, Moments]:
    """Return {"intra", "inter"} moments of cosine similarity over unordered token pairs.

    tokens (N, C), labels (N,) with `ignore` for excluded tokens. groups (N,): pairs are taken
    only between tokens of the same group id >= 0 (a window); None: all pairs of the image.
    """
    if tokens.shape[0] != labels.shape[0]:
        raise ValueError(f"{tokens.shape[0]} tokens but {labels.shape[0]} labels")
    unit = F.normalize(tokens.double(), dim=-1)
    sim = unit @ unit.T  # (N, N)
    n = tokens.shape[0]
    keep = labels != ignore
    if groups is not None:
        keep = keep & (groups >= 0)
    mask = keep[:, None] & keep[None, :]
    mask &= torch.ones(n, n, dtype=torch.bool, device=tokens.device).triu(1)  # each pair once
    if groups is not None:
        mask &= groups[:, None] == groups[None, :]
    same = labels[:, None] == labels[None, :]
    out = {}
    for name, chosen in (("intra", mask & same), ("inter", mask & ~same)):
        values = sim[chosen]
        out[name] = Moments(float(values.numel()), float(values.sum()), float(values.square().sum()))
    return out


def _moments_pair() -> dict[str, Moments]:
    """Return empty intra / inter moments."""
    return {name: Moments() for name in PAIR_TYPES}


@dataclass
class SimilarityStudy:
    """Running intra / inter moments for the local (per window) and global (per layer) views."""

    windows: tuple[int, ...] = (2, 4, 8, 16, 32)
    local_layer: int = 1
    images: int = 0
    local: dict[int, dict[str, Moments]] = field(default_factory=dict)
    global_: dict[int, dict[str, Moments]] = field(default_factory=dict)

    def add(self, captured: dict[int, Tensor], labels: Tensor, grid: tuple[int, int]) -> None:
        """Add one image: captured[layer] (N, C) tokens, labels (N,) patch labels, grid (gh, gw)."""
        for layer, tokens in sorted(captured.items()):
            moments = pair_similarity_split(tokens, labels)
            acc = self.global_.setdefault(layer, _moments_pair())
            for name in PAIR_TYPES:
                acc[name].add(moments[name])
        tokens = captured[self.local_layer]
        for k in self.windows:
            if k > min(grid):  # no full k x k window in this image
                continue
            moments = pair_similarity_split(tokens, labels, window_groups(grid, k, labels.device))
            acc = self.local.setdefault(k, _moments_pair())
            for name in PAIR_TYPES:
                acc[name].add(moments[name])
        self.images += 1

    def skipped_windows(self) -> list[int]:
        """Return the window sizes that fit no image (larger than every grid)."""
        return [k for k in self.windows if k not in self.local]

    def table(self) -> pd.DataFrame:
        """Return the tidy table: analysis, layer, window, pair_type, mean, std, count."""
        rows = []
        views = (("local", self.local, lambda k: (self.local_layer, k)),
                 ("global", self.global_, lambda layer: (layer, None)))
        for analysis, store, where in views:
            for key in sorted(store):
                layer, window = where(key)
                for name in PAIR_TYPES:
                    m = store[key][name]
                    mean, std = (m.mean, m.std) if m.count else (float("nan"), float("nan"))
                    rows.append({"analysis": analysis, "layer": layer, "window": window,
                                 "pair_type": name, "mean": mean, "std": std,
                                 "count": int(m.count)})
        table = pd.DataFrame(rows, columns=COLUMNS)
        table["window"] = table["window"].astype("Int64")  # empty for the global rows
        return table


STYLE = {"intra": ("intra-class pairs", "tab:blue", "o"),
         "inter": ("inter-class pairs", "tab:red", "s")}


def _plot_bands(ax, table: pd.DataFrame, x: str) -> None:
    """Draw mean lines with a +-std band per pair type of `table` against column `x`."""
    for name in PAIR_TYPES:
        part = table[table.pair_type == name].sort_values(x)
        label, colour, marker = STYLE[name]
        positions = list(range(len(part))) if x == "window" else part[x].tolist()
        ax.plot(positions, part["mean"], marker=marker, color=colour, label=label, lw=2)
        ax.fill_between(positions, part["mean"] - part["std"], part["mean"] + part["std"],
                        color=colour, alpha=0.18, lw=0)
    ax.set_ylabel("cosine similarity (mean ± std)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")


def plot_local(table: pd.DataFrame, path, title: str = "") -> None:
    """Write Fig. 2a: intra vs inter similarity per k x k window in the local layer (PNG)."""
    local = table[table.analysis == "local"]
    if local.empty:
        raise ValueError("no local rows to plot: every window is larger than the token grid")
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    _plot_bands(ax, local, "window")
    windows = sorted(local.window.unique())
    ax.set_xticks(range(len(windows)), [f"{k}×{k}" for k in windows])
    ax.set_xlabel(f"window size k (layer {int(local.layer.iloc[0])}, after MHSA)")
    ax.set_title(title or "(a) local similarity", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_global(table: pd.DataFrame, path, title: str = "") -> None:
    """Write Fig. 2b: intra vs inter similarity over all pairs, per layer (PNG)."""
    glob = table[table.analysis == "global"]
    if glob.empty:
        raise ValueError("no global rows to plot")
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    _plot_bands(ax, glob, "layer")
    layers = sorted(int(v) for v in glob.layer.unique())
    ax.set_xticks(layers)
    ax.set_xlabel("layer (tokens after MHSA)")
    ax.set_title(title or "(b) global similarity", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
