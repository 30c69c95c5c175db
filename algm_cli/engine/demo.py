"""`algm demo` (what `make demo` runs): the embedded default end to end, then a small table.

1. trains Segmenter ViT-T on the synthetic dataset without merging (the baseline) and measures
   it (mIoU, im/s, GFLOPs);
2. applies ALGM to that trained model training-free (the paper's "Direct" setting) with the tau
   calibrated on it (mean + std of token similarities), and measures again;
3. prints both rows and the speed-up. Rows land in results/demo (always measured afresh:
   force=true; a trained checkpoint in work_dir is reused).
Extra arguments are Hydra overrides applied to both runs (e.g. `algm demo smoke=true`).
"""

from __future__ import annotations

import sys

from hydra import compose, initialize_config_module

from .run import run
from .spec import ConfigError, report_error

# small timing batches, repeated (5 rounds) so the 2-core CPU's noise averages out
DEMO_EVAL = ["eval.throughput_images=8", "eval.throughput_batch=8", "eval.warmup=20",
             "eval.throughput_rounds=5", "eval.flops_images=8"]


def demo_configs(overrides: list[str]) -> tuple:
    """Return the composed (baseline, ALGM direct) configs."""
    with initialize_config_module("algm_cli.conf", version_base="1.3"):
        # force=true: the demo always measures afresh; training still reuses a checkpoint cached
        # in work_dir. results_dir=results/demo: the demo's quick timing protocol stays out of
        # the rows that `algm report` reads (results/runs, the released protocol)
        base = compose("run", ["merge=none", "force=true", "results_dir=results/demo",
                               *DEMO_EVAL, *overrides])
        algm = compose("run", ["merge=algm", "merge.during_training=false", "force=true",
                               "results_dir=results/demo", *DEMO_EVAL, *overrides])
    return base, algm


def table(base: dict, algm: dict) -> str:
    """Return the demo's summary table as text."""
    lines = [f"{'':<22}{'mIoU':>8}{'im/s':>9}{'GFLOPs':>9}{'kept':>8}"]
    for name, row in (("Segmenter ViT-T", base), ("+ ALGM (direct)", algm)):
        kept = row.get("kept_final")
        kept_text = "1.00" if kept is None or kept != kept else f"{kept:.2f}"
        lines.append(f"{name:<22}{row['miou']:>8.1f}{row['ims']:>9.1f}{row['gflops']:>9.2f}"
                     f"{kept_text:>8}")
    lines.append(f"ALGM speed-up: {algm['ims'] / base['ims']:.2f}x im/s, "
                 f"{base['gflops'] / algm['gflops']:.2f}x fewer GFLOPs, "
                 f"mIoU {algm['miou'] - base['miou']:+.1f} (calibrated tau {algm['tau_calibrated']:.3f})")
    return "\n".join(lines)


def main() -> int:
    """Run the demo; return the exit status."""
    overrides = sys.argv[1:]
    try:
        base_cfg, algm_cfg = demo_configs(overrides)
        rows = []
        for cfg in (base_cfg, algm_cfg):
            rows.append(run(cfg))
    except (ConfigError, ValueError) as err:
        report_error(err, "algm demo")
    print()
    print(table(*rows))
    return 0
