#!/usr/bin/env python
"""The learned token-reduction baselines beside ALGM, from their finished `algm run` rows.

For each method (default: none, algm, cts, dtop, dovit, paumer) the newest finished row of
`algm run merge=<method>` on the chosen backbone and dataset (experiment "", setting training) is
read from results/runs; its trained checkpoint is loaded into the model the run evaluated
(inference schedule with the row's calibrated tau), and all of them are timed in one process,
interleaved round by round (engine/timing.py: median per-round speed ratio vs the baseline with
its min-max spread), on batches of duplicates of the validation images, as the runner's
throughput stage builds them. mIoU, GFLOPs and kept fraction are the rows' own.
-> results/bench/learned_<dataset>_<backbone>.csv and one line per method on stdout.

    python scripts/learned_compare.py [--backbone vit_t] [--dataset synthetic] [--rounds 7]
                                      [--include-smoke] [hydra overrides of those runs ...]
"""

from __future__ import annotations

import argparse
import glob
import math
import os
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_module

from algm_cli.engine.data import open_dataset, square_images
from algm_cli.engine.setup import build_model, build_schedule, inference_model
from algm_cli.engine.spec import resolve_spec
from algm_cli.engine.store import write_atomic
from algm_cli.engine.throughput import make_batches
from algm_cli.engine.timing import format_ratio, interleaved, summary_rows
from algm_cli.models.segmenter import load_checkpoint

METHODS = ("none", "algm", "cts", "dtop", "dovit", "paumer")


def newest_rows(runs_dir: Path, backbone: str, dataset: str, methods,
                smoke: bool = False) -> dict[str, pd.Series]:
    """Return {method: its newest finished trained row of a plain `algm run`}."""
    frames = [pd.read_csv(p) for p in glob.glob(str(runs_dir / "*.csv"))]
    if not frames:
        raise SystemExit(f"no run rows in {runs_dir}")
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[(rows.backbone == backbone) & (rows.dataset == dataset) & (rows.status == "ok")
                & (rows.experiment.fillna("") == "") & (rows.setting == "training")
                & (smoke | (rows.smoke.astype(str).str.lower() == "false"))]
    found = {}
    for method in methods:
        mine = rows[rows.method == method].sort_values("timestamp")
        if mine.empty:
            raise SystemExit(f"no finished row of `algm run merge={method} backbone={backbone} "
                             f"dataset={dataset}` in {runs_dir}: run it first")
        found[method] = mine.iloc[-1]
    return found


def trained_model(row: pd.Series, backbone: str, dataset: str, overrides=()) -> tuple:
    """Return (the inference model of `row`'s run with its trained weights, its spec)."""
    with initialize_config_module("algm_cli.conf", version_base="1.3"):
        cfg = compose("run", [f"merge={row.method}", f"backbone={backbone}",
                              f"dataset={dataset}", *overrides])
    spec = resolve_spec(cfg)
    tau = None if pd.isna(row.get("tau_calibrated")) else float(row.tau_calibrated)
    model = build_model(spec, build_schedule(spec, "train", tau), "train")
    load_checkpoint(model, Path(row.checkpoint))
    return inference_model(spec, model, build_schedule(spec, "eval", tau)).eval(), spec


def main() -> None:
    """Time the trained methods interleaved; write the CSV and print one line per method."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="vit_t")
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs-dir", default="results/runs")
    parser.add_argument("--out", default="results/bench")
    parser.add_argument("--include-smoke", action="store_true", help="smoke=true rows count too")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides the runs were made with")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = newest_rows(Path(args.runs_dir), args.backbone, args.dataset, args.methods,
                       args.include_smoke)
    models, spec = {}, None
    for method, row in rows.items():
        models[method], spec = trained_model(row, args.backbone, args.dataset, args.overrides)
    d, e = spec.dataset, spec.eval
    images = square_images(open_dataset(d, "val"), e.throughput_images or 8, d.crop)
    batches = make_batches(images, e.throughput_batch, "duplicates")

    def runner(model):
        def forward():
            with torch.inference_mode():
                for x in batches:
                    model(x)
        return forward

    times = interleaved({m: runner(models[m]) for m in args.methods}, rounds=args.rounds)
    reference = args.methods[0]
    table = []
    for summary in summary_rows(times, reference, items=len(batches) * e.throughput_batch):
        row = rows[summary["setting"]]
        table.append({"method": summary["setting"], "miou": row.miou, "gflops": row.gflops,
                      "kept_final": row.get("kept_final"), "ims": summary["per_s"],
                      "speedup_vs": reference, "speedup": summary["ratio_median"],
                      "speedup_min": summary["ratio_min"], "speedup_max": summary["ratio_max"],
                      "rounds": summary["rounds"], "train_iterations": row.train_iterations,
                      "run_id": row.run_id, "threads": torch.get_num_threads()})
        kept = row.get("kept_final")
        kept = "" if kept is None or (isinstance(kept, float) and math.isnan(kept)) else \
            f", kept {kept:.2f}"
        print(f"{summary['setting']:>7}: mIoU {row.miou:.2f}, {row.gflops:.3f} GFLOPs{kept}, "
              f"{summary['per_s']:.0f} im/s, {format_ratio(summary)} vs {reference}")
    out = Path(args.out) / f"learned_{args.dataset}_{args.backbone}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, pd.DataFrame(table).to_csv(index=False))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
