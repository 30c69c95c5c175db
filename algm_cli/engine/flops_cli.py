"""`algm flops`: GFLOPs of the configured model at the dataset's crop size, no data needed."""

from __future__ import annotations

import hydra
import torch
from omegaconf import DictConfig

from ..models.schedule import NO_MERGE
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


def mask2former_gflops(spec) -> tuple[dict[str, float], float]:
    """Return (GMACs breakdown of the full count, the paper's convention), counted on meta tensors."""
    from ..models.mask2former.flops import macs_breakdown, paper_convention

    parts = macs_breakdown(lambda: build_model(spec, NO_MERGE), spec.dataset.crop)
    return parts, paper_convention(parts)


@hydra.main(config_path="pkg://algm_cli.conf", config_name="flops", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Print the model, input size and `GFLOPs: <value>` (EVA + Mask2Former: full count first)."""
    try:
        spec = resolve_spec(cfg)
        if cfg.model.name == "mask2former" and cfg.merge.method == "none":
            parts, value = mask2former_gflops(spec)
            print("full count (GMACs): " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()))
        else:
            value = model_gflops(spec)
    except (ConfigError, ValueError) as err:
        report_error(err, "algm flops")
    size = spec.dataset.crop
    print(f"{cfg.model.name} {cfg.backbone.name} ({cfg.model.decoder} decoder), {cfg.dataset.name} "
          f"{size}x{size}, {cfg.dataset.num_classes} classes, merge={cfg.merge.method}")
    print(f"GFLOPs: {value:.2f}")
