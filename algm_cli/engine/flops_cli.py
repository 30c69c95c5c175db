"""`algm flops`: GFLOPs of the configured model at the dataset's crop size, no data needed."""

from __future__ import annotations

import hydra
import torch
from omegaconf import DictConfig

from .flops import count_gflops
from .setup import ConfigError, report_error, build_model, build_schedule, crop_size


def model_gflops(cfg: DictConfig) -> float:
    """Return the GFLOPs of one forward of the configured model on a seeded random image."""
    schedule = build_schedule(cfg, "eval", None)
    model = build_model(cfg, schedule)
    size = crop_size(cfg)
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(int(cfg.seed)))
    return count_gflops(model, image, bool(cfg.get("flops", {}).get("count_merge_ops", False)))


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
