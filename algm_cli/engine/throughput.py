"""Throughput as the ALGM supplement and released code measure it.

Each image is resized to a crop x crop square and repeated `batch` times ("duplicates", the
released protocol, a best case for adaptive merging since the batch minimum equals the image's
own count) or batched with other images ("mixed"). `warmup` untimed forwards run first; then each
batch's full forward (encoder, decoder, unmerge, upsampling; no sliding window) is timed with a
device synchronisation on both sides. im/s = batch / mean batch time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from tqdm import tqdm

MODES = ("duplicates", "mixed")


def device_sync(device: torch.device) -> None:
    """Wait for queued work on `device` (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_batches(images: Sequence[Tensor], batch: int, mode: str) -> list[Tensor]:
    """Return one (batch, 3, S, S) tensor per image: its duplicates, or a window of mixed images."""
    if mode not in MODES:
        raise ValueError(f"throughput mode must be one of {MODES}; got {mode!r}")
    if not images:
        raise ValueError("throughput needs at least one image")
    if mode == "duplicates":
        return [img.unsqueeze(0).expand(batch, -1, -1, -1).contiguous() for img in images]
    n = len(images)
    return [torch.stack([images[(i + j) % n] for j in range(batch)]) for i in range(n)]


@torch.inference_mode()
def measure_throughput(
    model: nn.Module,
    images: Sequence[Tensor],
    batch: int = 32,
    warmup: int = 50,
    mode: str = "duplicates",
    autocast_dtype: torch.dtype | None = None,
    clock: Callable[[], float] = time.perf_counter,
    rounds: int = 1,
) -> dict:
    """Return {"ims", "batch_ms", "batches", "mode"} for `model` on crop-square `images`.

    rounds: timed passes over all batches (1: the released protocol; more steady a noisy CPU).
    """
    if rounds < 1:
        raise ValueError(f"throughput rounds must be >= 1; got {rounds}")
    device = next(model.parameters()).device
    batches = [b.to(device) for b in make_batches(images, batch, mode)]
    model.eval()

    def forward(x: Tensor) -> Tensor:
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            return model(x)

    for i in tqdm(range(warmup), desc="warm-up", leave=False):
        forward(batches[i % len(batches)])
    times = []
    for x in tqdm(batches * rounds, desc="throughput", leave=False):
        device_sync(device)
        start = clock()
        forward(x)
        device_sync(device)
        times.append(clock() - start)
    mean = sum(times) / len(times)
    return {"ims": batch / mean, "batch_ms": 1e3 * mean, "batches": len(times), "mode": mode,
            "rounds": rounds}
