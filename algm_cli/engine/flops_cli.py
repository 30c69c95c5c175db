"""`algm flops`: GFLOPs of the configured model at the dataset's crop size, no data needed."""

from __future__ import annotations

import hydra
import torch
from omegaconf import DictConfig

from .flops import count_gflops
from .setup import build_model, build_schedule
from .spec import ConfigError, report_error, resolve_spec


def model_gflops(spec) -> float:
    """Return the GFLOPs of one forward of the configured model on a seeded random image."""
    spec = resolve_spec(spec)
    model = build_model(spec, build_schedule(spec, "eval", None))
    size = spec.dataset.crop
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(spec.seed))
    return count_gflops(model, image)


@hydra.main(config_path="pkg://algm_cli.conf", config_name="flops", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Print the model, input size and `GFLOPs: <value>`."""
    try:
        spec = resolve_spec(cfg)
        value = model_gflops(spec)
    except (ConfigError, ValueError) as err:
        report_error(err, "algm flops")
    size = spec.dataset.crop
    print(f"{cfg.model.name} {cfg.backbone.name} ({cfg.model.decoder} decoder), {cfg.dataset.name} "
          f"{size}x{size}, {cfg.dataset.num_classes} classes, merge={cfg.merge.method}")
    print(f"GFLOPs: {value:.2f}")
