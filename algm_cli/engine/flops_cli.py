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
from .setup import build_model, build_schedule
from .spec import ConfigError, merge_spec, report_error, resolve_spec

THRESHOLD_KEYS = ("clap_threshold", "gbm_threshold", "train_clap_threshold", "train_gbm_threshold")


def released_for_auto(cfg: DictConfig) -> DictConfig:
    """Return `cfg` with every `auto` merge threshold replaced by `released` (noted once)."""
    if not merge_spec(cfg).needs_calibration():
        return cfg
    with open_dict(cfg):
        for key in THRESHOLD_KEYS:
            if cfg.merge.get(key) == "auto":
                cfg.merge[key] = "released"
    print("note: thresholds 'auto' need calibration on data: using the released thresholds "
          "(tau=<number> sets your own)")
    return cfg


def model_gflops(spec) -> float:
    """Return the GFLOPs of one forward of the configured model on a seeded random image."""
    if isinstance(spec, DictConfig):
        spec = released_for_auto(spec)
    spec = resolve_spec(spec)
    model = build_model(spec, build_schedule(spec, "eval", None))
    size = spec.dataset.crop
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(spec.seed))
    return count_gflops(model, image)


@hydra.main(config_path="pkg://algm_cli.conf", config_name="flops", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Print the model, input size and `GFLOPs: <value>`."""
    try:
        spec = resolve_spec(released_for_auto(cfg))
        value = model_gflops(spec)
    except (ConfigError, ValueError) as err:
        report_error(err, "algm flops")
    size = spec.dataset.crop
    print(f"{cfg.model.name} {cfg.backbone.name} ({cfg.model.decoder} decoder), {cfg.dataset.name} "
          f"{size}x{size}, {cfg.dataset.num_classes} classes, merge={cfg.merge.method}")
    print(f"GFLOPs: {value:.2f}")
