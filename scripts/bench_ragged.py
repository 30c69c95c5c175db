#!/usr/bin/env python
"""Ragged vs min-count batching on mixed batches, timed interleaved; writes results/bench/ragged.csv.

Segmenter ViT-S, 512 x 512, batch 8, on images of the synthetic dataset (resized to 512) through
a randomly initialised model, with tau calibrated on those images (mean + std of post-MHSA token
similarities, the paper's rule), so images differ in how much they merge. Settings:
- baseline: no merging, mixed batches;
- algm duplicates: ALGM on batches of 8 copies of one image (the released protocol's best case);
- algm min: ALGM, mixed batches, every image merges the batch minimum (the paper's rule);
- algm ragged: ALGM, mixed batches, each image merges its own count (packed execution).
Timing is interleaved (engine/timing.py): every round times one batch of each setting in turn
(round r uses batch r of each setting), so all settings share the machine's load; each row gives
the median im/s and the median, min and max of its per-round speed ratio to the duplicates.

    python scripts/bench_ragged.py [--images 8] [--rounds 5] [--out results/bench/ragged.csv]
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from algm_cli.data.ade20k import ADE20K
from algm_cli.data.synthetic import CLASS_NAMES, generate
from algm_cli.data.transforms import normalize
from algm_cli.engine.calibrate import calibrate
from algm_cli.engine.store import write_atomic
from algm_cli.engine.throughput import make_batches
from algm_cli.engine.timing import interleaved, summary_rows
from algm_cli.models.packed_attention import resolve
from algm_cli.models.schedule import algm_schedule
from algm_cli.models.segmenter import Segmenter

SIZE, BATCH = 512, 8


def images(count: int, root: Path, size: int = SIZE) -> list[torch.Tensor]:
    """Return `count` synthetic validation images, normalised, resized to size x size."""
    generate(root)
    data = ADE20K(root, "val", num_classes=len(CLASS_NAMES))
    out = []
    for i in range(count):
        img = normalize(data[i]["image"])[None]
        out.append(F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)[0])
    return out


def main() -> None:
    """Measure the four settings interleaved and write the CSV."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--backbone", default="vit_s")
    parser.add_argument("--root", default="data/synthetic")
    parser.add_argument("--out", default="results/bench/ragged.csv")
    args = parser.parse_args()
    torch.manual_seed(0)
    imgs = images(args.images, Path(args.root), args.size)
    model = Segmenter(args.backbone, 150, "mask", args.size).eval()
    tau = calibrate(model.encoder, [torch.stack(imgs[i : i + 4]) for i in range(0, len(imgs), 4)]).tau
    schedule = algm_schedule(tau, tau)
    with torch.inference_mode():
        model.schedule = schedule
        kept = [model.forward_with_stats(i[None])[1]["L5:gbm"] for i in imgs]
    batches = {mode: make_batches(imgs, args.batch, mode) for mode in ("duplicates", "mixed")}
    calls = {"n": 0}  # calls so far; round r (warm-up: round 0) uses batch r of each setting

    def setting(sched, batching, mode):
        def run_one():
            model.schedule, model.batching = sched, batching
            batch = batches[mode][calls["n"] // 4 % len(batches[mode])]
            with torch.inference_mode():
                model(batch)
            calls["n"] += 1
        return run_one

    settings = {"baseline min mixed": setting(algm_schedule(1.0, 1.0), "min", "mixed"),
                "algm min duplicates": setting(schedule, "min", "duplicates"),
                "algm min mixed": setting(schedule, "min", "mixed"),
                "algm ragged mixed": setting(schedule, "ragged", "mixed")}
    times = interleaved(settings, args.rounds, args.warmup)
    rows = []
    for row in summary_rows(times, "algm min duplicates", items=args.batch):
        method, batching, mode = row["setting"].split()
        rows.append({"method": method, "batching": batching, "mode": mode, "batch": args.batch,
                     "size": args.size, "ims": round(row["per_s"], 3),
                     "batch_ms": round(1e3 * row["median_s"], 1),
                     "vs_duplicates": round(row["ratio_median"], 3),
                     "vs_duplicates_min": round(row["ratio_min"], 3),
                     "vs_duplicates_max": round(row["ratio_max"], 3), "rounds": row["rounds"]})
    ragged_vs_min = summary_rows(times, "algm min mixed")[-1]
    table = pd.DataFrame(rows)
    table["ragged_vs_min"] = ""
    table.loc[3, "ragged_vs_min"] = (f"{ragged_vs_min['ratio_median']:.3f} "
                                     f"({ragged_vs_min['ratio_min']:.3f}-"
                                     f"{ragged_vs_min['ratio_max']:.3f})")
    table["tau"] = round(tau, 4)
    table["kept_final_per_image"] = ";".join(f"{k:.3f}" for k in kept)
    table["packed_attention"] = resolve("auto", torch.device("cpu"), torch.float32, False)
    table["threads"] = torch.get_num_threads()
    table["cpu"] = platform.processor() or platform.machine()
    table["torch"] = torch.__version__
    out = Path(args.out)
    write_atomic(out, table.to_csv(index=False))
    print(table.to_string(index=False))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
