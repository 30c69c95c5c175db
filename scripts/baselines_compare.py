#!/usr/bin/env python
"""GFLOPs and CPU speed of the token-reduction baselines (issue 9) next to ALGM.

1. GFLOPs (fvcore, `count_gflops`, batch 1) of Segmenter + mask decoder on ADE20K (150 classes)
   for every method and setting: ViT-S at 512 (every setting listed in conf/merge/<method>.yaml)
   and ViT-L at 640 (each method's default setting, one more for ELViT, AiluRus, ToMe)
   -> results/baselines_gflops.csv.
2. CPU throughput at roughly matched GFLOPs, ViT-S 512 x 512, batch 1, all in this one process,
   timed interleaved (engine/timing.py: every round runs one forward of each method in turn; the
   speed-up is the median over >= 5 rounds of the per-round ratio, with its min and max): the
   baseline, ALGM at forced CLAP/GBM
   thresholds, and each method at the setting (from a short candidate list) whose GFLOPs are
   closest to the target (default 26.3: ALGM on ADE20K ViT-S, paper Tab. 1)
   -> results/bench/baselines_cpu.csv.

Weights are random (counts and speed do not depend on them; ALGM's data-dependent counts do, so
ALGM's thresholds are picked on the image used here). The image is one 512 x 512 sample of the
project's synthetic dataset (flat textured regions plus small objects).

    python scripts/baselines_compare.py [--target 26.3] [--rounds 5] [--skip-vit-l]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir

from algm_cli.data.synthetic import SyntheticSpec, class_styles, sample
from algm_cli.data.transforms import normalize
from algm_cli.engine.flops import count_gflops
from algm_cli.engine.store import write_atomic
from algm_cli.engine.timing import interleaved, summary_rows
from algm_cli.models.reduction import BASELINE_METHODS, ReducedSegmenter, reduction_from_config
from algm_cli.models.schedule import NO_MERGE, algm_schedule
from algm_cli.models.segmenter import Segmenter

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 150
VIT_L_EXTRA = {"elvit": [28], "ailurus": [0.6], "tome_dense": [0.5]}  # besides the defaults
CANDIDATES = {  # settings tried for the matched-GFLOPs CPU comparison (ViT-S 512)
    "evit": [0.7, 0.6, 0.5, 0.4],
    "tome_dense": [0.3, 0.4, 0.5],
    "act": [0.125, 0.0625, 0.03125],
    "elvit": [28, 24, 20, 16],
    "ailurus": [0.7, 0.6, 0.5, 0.4],
}
# forced (CLAP, GBM) thresholds tried for ALGM; random-weight tokens are far more alike than
# trained ones, hence thresholds near 1 (CLAP merges nothing above ~0.965 on this image)
ALGM_TAUS = [(0.96, 0.99), (0.96, 0.985), (0.955, 0.995), (0.955, 0.985), (0.95, 0.98)]


def merge_configs(backbone: str) -> dict:
    """Return {method: composed merge config} for every baseline at `backbone`.

    The paper variant (merge.variant=paper), which the committed CSVs were made with; the
    candidate settings below are in its units (ACT: a cluster fraction, not hash rounds).
    """
    paper = lambda m: [] if m == "ailurus" else ["merge.variant=paper"]  # noqa: E731
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return {m: compose("run", overrides=[f"merge={m}", f"backbone={backbone}", *paper(m)]).merge
                for m in BASELINE_METHODS}


def synthetic_image(size: int) -> torch.Tensor:
    """Return one normalised (1, 3, size, size) synthetic image."""
    image, _ = sample(3, SyntheticSpec(height=size, width=size), class_styles())
    return normalize(torch.from_numpy(image).permute(2, 0, 1))[None]


def describe(spec) -> str:
    """Return the reduction's fields other than the method, as 'k=v' pairs."""
    show = lambda v: "/".join(map(str, v)) if isinstance(v, tuple) else v  # noqa: E731
    return " ".join(f"{k}={show(v)}" for k, v in vars(spec).items() if k != "method")


class Models:
    """One encoder's weights shared by the baseline, ALGM and every reduced model."""

    def __init__(self, backbone: str, size: int) -> None:
        torch.manual_seed(0)
        self.backbone = backbone
        self.configs = merge_configs(backbone)
        self.base = Segmenter(backbone, CLASSES, "mask", size).eval()
        first = reduction_from_config(self.configs[BASELINE_METHODS[0]], backbone)
        self.reduced = ReducedSegmenter(first, backbone, CLASSES, "mask", size).eval()
        self.reduced.load_state_dict(self.base.state_dict())

    def baseline(self, method: str, setting: float):
        """Return the reduced model set to `method` at `setting` (shared weights)."""
        cfg = {**dict(self.configs[method]), "setting": setting}
        self.reduced.reduction = reduction_from_config(cfg, self.backbone)
        self.reduced.reduction.check(self.reduced.encoder.depth)
        return self.reduced

    def algm(self, taus: tuple[float, float], gbm_layer: int):
        """Return the Segmenter with ALGM at forced (CLAP, GBM) thresholds."""
        self.base.schedule = algm_schedule(*taus, gbm_layers=(gbm_layer,))
        return self.base

    def plain(self):
        """Return the Segmenter without merging."""
        self.base.schedule = NO_MERGE
        return self.base


def gflops_rows(models: Models, image: torch.Tensor, settings: dict, crop: int) -> list[dict]:
    """Return GFLOPs rows for the baseline and each method at each of its `settings`."""
    rows = [{"backbone": models.backbone, "crop": crop, "method": "none", "setting": None,
             "reduction": "", "gflops": round(count_gflops(models.plain(), image), 2)}]
    for method in BASELINE_METHODS:
        for setting in settings[method]:
            model = models.baseline(method, setting)
            t0 = time.perf_counter()
            gflops = count_gflops(model, image)
            rows.append({"backbone": models.backbone, "crop": crop, "method": method,
                         "setting": setting, "reduction": describe(model.reduction),
                         "gflops": round(gflops, 2)})
            print(f"  {models.backbone} {method} {setting}: {gflops:.1f} GFLOPs "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)
    base = rows[0]["gflops"]
    for row in rows:
        row["gflops_vs_base_pct"] = round(100 * (row["gflops"] / base - 1), 1)
    return rows


def closest(options: list[tuple], target: float) -> tuple:
    """Return the (gflops, ...) option whose GFLOPs are nearest to `target`."""
    return min(options, key=lambda o: abs(o[0] - target))


@torch.inference_mode()
def cpu_rows(models: Models, image: torch.Tensor, target: float, rounds: int,
             known: dict) -> list[dict]:
    """Return timing rows: baseline, ALGM and every method at the setting closest to `target`."""
    picks = [("none", None, count_gflops(models.plain(), image), models.plain)]
    algm = [(count_gflops(models.algm(taus, 5), image), taus) for taus in ALGM_TAUS]
    g, taus = closest(algm, target)
    picks.append(("algm", "clap={} gbm={}".format(*taus), g, lambda: models.algm(taus, 5)))
    for method in BASELINE_METHODS:
        options = []
        for setting in CANDIDATES[method]:
            key = (method, setting)
            if key not in known:
                known[key] = count_gflops(models.baseline(method, setting), image)
            options.append((known[key], setting))
        g, setting = closest(options, target)
        picks.append((method, setting, g, lambda m=method, s=setting: models.baseline(m, s)))
    stats, settings = {}, {}
    for method, setting, _, make in picks:
        _, found = make().forward_with_stats(image)  # the token fractions
        stats[method] = " ".join(f"{k}={v:.3f}" for k, v in found.items())
        settings[method] = lambda make=make: make()(image)
    summary = {r["setting"]: r for r in summary_rows(interleaved(settings, rounds), "none")}
    rows = []
    for method, setting, gflops, _ in picks:
        ms = 1e3 * summary[method]["median_s"]
        rows.append({"method": method, "setting": setting, "gflops": round(gflops, 2),
                     "median_ms": round(ms, 1), "images_per_s": round(1e3 / ms, 3),
                     "stats": stats[method],
                     "speedup_vs_base": round(summary[method]["ratio_median"], 3),
                     "speedup_min": round(summary[method]["ratio_min"], 3),
                     "speedup_max": round(summary[method]["ratio_max"], 3), "rounds": rounds})
        print(f"  cpu {method} {setting}: {gflops:.1f} GFLOPs, {ms:.0f} ms", flush=True)
    for row in rows:
        row.update(backbone="vit_s", crop=image.shape[-1], batch=1, target_gflops=target,
                   threads=torch.get_num_threads(), cpu=platform.processor() or platform.machine(),
                   torch=torch.__version__)
    return rows


def write_csv(rows: list[dict], path: Path) -> pd.DataFrame:
    """Write rows to `path` atomically; return them as a table."""
    table = pd.DataFrame(rows)
    write_atomic(path, table.to_csv(index=False))
    return table


def main() -> None:
    """Count GFLOPs (ViT-S 512, ViT-L 640), time ViT-S on the CPU, write both CSVs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gflops-out", default="results/baselines_gflops.csv")
    parser.add_argument("--cpu-out", default="results/bench/baselines_cpu.csv")
    parser.add_argument("--target", type=float, default=26.3, help="ViT-S 512 GFLOPs to match")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--skip-vit-l", action="store_true")
    args = parser.parse_args()
    os.chdir(ROOT)
    start = time.perf_counter()

    small = Models("vit_s", 512)
    image = synthetic_image(512)
    settings = {m: [float(s) for s in small.configs[m].settings] for m in BASELINE_METHODS}
    rows = gflops_rows(small, image, settings, 512)
    known = {(r["method"], r["setting"]): r["gflops"] for r in rows if r["method"] != "none"}
    if not args.skip_vit_l:
        large = Models("vit_l", 640)
        extra = {m: sorted({float(large.configs[m].setting), *VIT_L_EXTRA.get(m, [])},
                           reverse=True) for m in BASELINE_METHODS}
        rows += gflops_rows(large, synthetic_image(640), extra, 640)
        del large
    gflops = write_csv(rows, Path(args.gflops_out))
    print(gflops.to_string(index=False))

    cpu = write_csv(cpu_rows(small, image, args.target, args.rounds, known),
                    Path(args.cpu_out))
    print(cpu.drop(columns=["cpu", "torch", "backbone", "crop", "batch"]).to_string(index=False))
    print(f"wrote {args.gflops_out} and {args.cpu_out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
