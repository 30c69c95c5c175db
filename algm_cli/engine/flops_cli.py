"""`algm flops`: GFLOPs of the configured model at the dataset's crop size, no data needed.

ALGM thresholds left at `auto` (calibration needs data and the calibrate stage, which this
command has not) become `released`: the released code's CLAP tau of the backbone and its in-batch
GBM rule; `tau=` (or merge.clap_threshold / gbm_threshold numbers) sets them instead.
"""

from __future__ import annotations

import hydra
import torch
from omegaconf import DictConfig, open_dict

from .flops import count_gflops
from .setup import (
    ConfigError, build_model, build_schedule, crop_size, needs_calibration, report_error,
)

THRESHOLD_KEYS = ("clap_threshold", "gbm_threshold", "train_clap_threshold", "train_gbm_threshold")


def released_for_auto(cfg: DictConfig) -> DictConfig:
    """Return `cfg` with every `auto` merge threshold replaced by `released` (noted once)."""
    if not needs_calibration(cfg):
        return cfg
    with open_dict(cfg):
        for key in THRESHOLD_KEYS:
            if cfg.merge.get(key) == "auto":
                cfg.merge[key] = "released"
    print("note: thresholds 'auto' need calibration on data: using the released thresholds "
          "(tau=<number> sets your own)")
    return cfg


def model_gflops(cfg: DictConfig) -> float:
    """Return the GFLOPs of one forward of the configured model on a seeded random image."""
    cfg = released_for_auto(cfg)
    schedule = build_schedule(cfg, "eval", None)
    model = build_model(cfg, schedule)
    size = crop_size(cfg)
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(int(cfg.seed)))
    return count_gflops(model, image)


@hydra.main(config_path="pkg://algm_cli.conf", config_name="flops", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Print the model, input size and `GFLOPs: <value>`."""
    try:
        value = model_gflops(cfg)
    except (ConfigError, ValueError) as err:
        report_error(err, "algm flops")
    size = crop_size(cfg)
    print(f"{cfg.model.name} {cfg.backbone.name} ({cfg.model.decoder} decoder), {cfg.dataset.name} "
          f"{size}x{size}, {cfg.dataset.num_classes} classes, merge={cfg.merge.method}")
    print(f"GFLOPs: {value:.2f}")
