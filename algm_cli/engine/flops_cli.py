"""`algm flops`: GFLOPs of the configured model at the dataset's crop size, no data needed."""

from __future__ import annotations

import hydra
import torch
from omegaconf import DictConfig

from .flops import count_gflops
from ..models.schedule import NO_MERGE
from .setup import ConfigError, report_error, build_model, build_schedule, crop_size


def model_gflops(cfg: DictConfig) -> float:
    """Return the GFLOPs of one forward of the configured model on a seeded random image."""
    schedule = build_schedule(cfg, "eval", None)
    model = build_model(cfg, schedule)
    size = crop_size(cfg)
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(int(cfg.seed)))
    return count_gflops(model, image)


def mask2former_gflops(cfg: DictConfig) -> tuple[dict[str, float], float]:
    """Return (GMACs breakdown of the full count, the paper's convention) on meta tensors."""
    from ..models.mask2former.flops import macs_breakdown, paper_convention

    parts = macs_breakdown(lambda: build_model(cfg, NO_MERGE), crop_size(cfg))
    return parts, paper_convention(parts)


@hydra.main(config_path="pkg://algm_cli.conf", config_name="flops", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Print the model, input size and `GFLOPs: <value>` (EVA + Mask2Former: full count first)."""
    try:
        if cfg.model.name == "mask2former" and cfg.merge.method == "none":
            parts, value = mask2former_gflops(cfg)
            print("full count (GMACs): " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()))
        else:
            value = model_gflops(cfg)
    except (ConfigError, ValueError) as err:
        report_error(err, "algm flops")
    size = crop_size(cfg)
    print(f"{cfg.model.name} {cfg.backbone.name} ({cfg.model.decoder} decoder), {cfg.dataset.name} "
          f"{size}x{size}, {cfg.dataset.num_classes} classes, merge={cfg.merge.method}")
    print(f"GFLOPs: {value:.2f}")
