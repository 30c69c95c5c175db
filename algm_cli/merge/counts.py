"""Merge counts from similarity scores: thresholds, per-image counts and the batch rule."""

from __future__ import annotations

import torch
from torch import Tensor


def check_threshold(threshold: float, name: str = "threshold") -> float:
    """Return `threshold` as a float, or raise if it is not a cosine similarity in [-1, 1]."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [-1, 1]; got {threshold!r}") from None
    if not -1.0 <= value <= 1.0:
        raise ValueError(
            f"{name} must lie in [-1, 1] (it is compared with cosine similarities); got {value}"
        )
    return value


def eligible_counts(scores: Tensor, threshold: float, inclusive: bool = False) -> Tensor:
    """Return (B,) counts of scores above the threshold (`>`; `>=` when inclusive)."""
    above = scores >= threshold if inclusive else scores > threshold
    return above.sum(dim=1)


def batch_count(eligible: Tensor) -> int:
    """Return the count every image of the batch merges: the batch minimum (supp. Sec. 2).

    With B = 1 this is the image's own count (adaptive per image); with B > 1 every image merges
    as many tokens as the least mergeable image allows, taking its own highest-scoring candidates.
    """
    return int(eligible.min().item()) if eligible.numel() else 0


def released_gbm_threshold(best_scores: Tensor, layer: int) -> float:
    """Return the released code's in-batch GBM threshold: mean(s) + std(s) / layer.

    `best_scores` (B, N_A) are the best-match similarities of the A tokens; the mean and the
    (unbiased) standard deviation are taken per image and then averaged over the batch, exactly
    as tue-mps/algm-segmenter does. The paper's text instead fixes tau = mean + std of token
    similarities over the training set (see `algm_cli.engine.calibrate`).
    """
    if layer < 1:
        raise ValueError(f"layer must be the 1-based index of the merging layer; got {layer}")
    if best_scores.shape[1] < 2:
        return float("inf")
    mean = best_scores.mean(dim=1).mean()
    std = best_scores.std(dim=1).mean()
    return float((mean + std / layer).item())


def top_indices(scores: Tensor, count: int) -> Tensor:
    """Return (B, count) indices of each row's highest scores, best first (stable on ties)."""
    if count == 0:
        return scores.new_zeros(scores.shape[0], 0, dtype=torch.long)
    return scores.argsort(dim=1, descending=True, stable=True)[:, :count]
