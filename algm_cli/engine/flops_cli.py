"""`algm flops`: GFLOPs of the configured model at the dataset's crop size, no data needed.

ALGM thresholds left at `auto` (calibration needs data and the calibrate stage, which this
command has not) become `released`: the released code's CLAP tau of the backbone and its in-batch
GBM rule; `tau=` (or merge.clap_threshold / gbm_threshold numbers) sets them instead.
"""

from __future__ import annotations

import hydra
import torch
from omegaconf import DictConfig, open_dict

from ..models.schedule import NO_MERGE
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


def model_gflops(spec, count_merge_ops: bool = False) -> float:
    """Return the GFLOPs of one forward of the configured model on a seeded random image.

    count_merge_ops: also count the merge operations (`flops.count_merge_ops`, engine/flops.py).
    """
    if isinstance(spec, DictConfig):
        spec = released_for_auto(spec)
    spec = resolve_spec(spec)
    model = build_model(spec, build_schedule(spec, "eval", None))
    size = spec.dataset.crop
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(spec.seed))
    return count_gflops(model, image, count_merge_ops)


def mask2former_gflops(spec) -> tuple[dict[str, float], float]:
    """Return (GMACs breakdown of the full count, the paper's convention), counted on meta tensors."""
    from ..models.mask2former.flops import macs_breakdown, paper_convention

    parts = macs_breakdown(lambda: build_model(spec, NO_MERGE), spec.dataset.crop)
    return parts, paper_convention(parts)


@hydra.main(config_path="pkg://algm_cli.conf", config_name="flops", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Print the model, input size and `GFLOPs: <value>` (EVA + Mask2Former: full count first)."""
    try:
        spec = resolve_spec(released_for_auto(cfg))
        if cfg.model.name == "mask2former" and cfg.merge.method == "none":
            parts, value = mask2former_gflops(spec)
            print("full count (GMACs): " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()))
        else:
            value = model_gflops(spec, bool(cfg.get("flops", {}).get("count_merge_ops", False)))
    except (ConfigError, ValueError) as err:
        report_error(err, "algm flops")
    size = spec.dataset.crop
    print(f"{cfg.model.name} {cfg.backbone.name} ({cfg.model.decoder} decoder), {cfg.dataset.name} "
          f"{size}x{size}, {cfg.dataset.num_classes} classes, merge={cfg.merge.method}")
    print(f"GFLOPs: {value:.2f}")
