"""Automatic threshold (paper Sec. 3.3): tau = mean + std of token cosine similarities.

The base model runs over training images; in every layer the patch tokens after the MHSA residual
are taken, the cosine similarity of every pair of distinct tokens is computed, and the mean and
standard deviation over all pairs, layers and images give tau = mean + std. The paper pools all
layers into one tau used by CLAP and GBM alike; per-layer moments are kept in the result too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm


@dataclass
class Moments:
    """Running sums of similarities: count, sum, sum of squares (float64)."""

    count: float = 0.0
    total: float = 0.0
    squares: float = 0.0

    def add(self, other: Moments) -> None:
        """Accumulate another set of sums in place."""
        self.count += other.count
        self.total += other.total
        self.squares += other.squares

    @property
    def mean(self) -> float:
        """Return the mean similarity."""
        return self.total / self.count

    @property
    def std(self) -> float:
        """Return the population standard deviation of the similarities."""
        return max(self.squares / self.count - self.mean**2, 0.0) ** 0.5


def pair_moments(tokens: Tensor) -> Moments:
    """Return the moments of cosine similarities over all distinct token pairs of (B, N, C)."""
    unit = F.normalize(tokens.double(), dim=-1)
    sim = unit @ unit.transpose(1, 2)  # (B, N, N)
    B, N, _ = sim.shape
    diag = sim.diagonal(dim1=1, dim2=2)
    total = sim.sum() - diag.sum()
    squares = sim.square().sum() - diag.square().sum()
    return Moments(float(B * N * (N - 1)), float(total), float(squares))


@dataclass
class Calibration:
    """The calibrated threshold and the statistics behind it."""

    tau: float
    mean: float
    std: float
    images: int
    per_layer: dict[int, dict[str, float]]

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict."""
        return asdict(self)


@torch.no_grad()
def calibrate(encoder, images: Iterable[Tensor], layers: Iterable[int] | None = None) -> Calibration:
    """Return tau = mean + std over the encoder's post-MHSA tokens on `images` (each (B, 3, H, W)).

    encoder: a `ViTEncoder` (run without merging); layers: 1-based layers to use (default all).
    """
    layers = tuple(layers) if layers is not None else tuple(range(1, encoder.depth + 1))
    per_layer = {layer: Moments() for layer in layers}
    count = 0
    was_training = encoder.training
    encoder.eval()
    for batch in tqdm(images, desc="calibrate", leave=False):
        out = encoder(batch, capture=layers)
        for layer in layers:
            per_layer[layer].add(pair_moments(out.captured[layer]))
        count += batch.shape[0]
    encoder.train(was_training)
    if count == 0:
        raise ValueError("calibration needs at least one training image")
    pooled = Moments()
    for m in per_layer.values():
        pooled.add(m)
    return Calibration(
        tau=pooled.mean + pooled.std,
        mean=pooled.mean,
        std=pooled.std,
        images=count,
        per_layer={k: {"mean": m.mean, "std": m.std} for k, m in per_layer.items()},
    )
