"""The calibration stage of a run: tau on the run's base model, cached in work_dir/calibration.

The base model is `checkpoint=` if given, else the trained baseline of the same training config
if one exists, else the freshly initialised (or pretrained) model; the cache key names it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..models.schedule import NO_MERGE
from ..models.segmenter import load_checkpoint
from . import store
from .calibrate import calibrate
from .data import open_dataset, square_images
from .setup import build_model, train_key
from .spec import ConfigError, RunSpec


def base_weights(spec: RunSpec, work: Path) -> tuple[str, Path | None]:
    """Return (identity, path) of the weights calibration runs on (path None: initial model)."""
    if spec.checkpoint is not None:
        path = Path(spec.checkpoint)
        return f"checkpoint:{path.resolve()}:{path.stat().st_mtime if path.exists() else 0}", path
    key = train_key(spec, NO_MERGE)
    path = work / "checkpoints" / f"{key}.pt"
    if path.is_file():
        return f"trained:{key}", path
    pretrained = spec.model_options["pretrained"]
    return f"init:{spec.model}:{spec.backbone.name}:{pretrained}:{spec.seed}", None


def run_calibration(spec: RunSpec, work: Path, device, images: int, allowed: bool) -> float | None:
    """Return the calibrated tau (cached in work_dir/calibration), or None when not needed."""
    if not spec.merge.needs_calibration():
        return None
    identity, weights = base_weights(spec, work)
    key = store.config_key({"weights": identity, "dataset": spec.dataset.name,
                            "crop": spec.dataset.crop, "images": images})
    cache = work / "calibration" / f"{key}.json"
    if cache.is_file():
        return json.loads(cache.read_text())["tau"]
    if not allowed:
        raise ConfigError("a threshold is 'auto' but no calibration is cached for this base model;"
                          " add 'calibrate' to stages or set merge.clap_threshold/gbm_threshold")
    model = build_model(spec, NO_MERGE)
    if weights is not None:
        load_checkpoint(model, weights)
    model.to(device)
    train_set = open_dataset(spec.dataset, "train")
    batch = square_images(train_set, images, spec.dataset.crop)
    batches = [torch.stack(batch[i : i + 4]).to(device) for i in range(0, len(batch), 4)]
    result = calibrate(model.encoder, batches)
    payload = {**result.to_dict(), "weights": identity}
    store.write_atomic(cache, json.dumps(payload, indent=1))
    print(f"calibrated tau = {result.tau:.4f} (mean {result.mean:.4f} + std {result.std:.4f}, "
          f"{result.images} images)")
    return result.tau
