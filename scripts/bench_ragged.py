#!/usr/bin/env python
"""Ragged vs min-count batching on mixed batches; writes results/bench/ragged.csv.

Segmenter ViT-S, 512 x 512, batch 8, on images of the synthetic dataset (resized to 512) through
a randomly initialised model, with tau calibrated on those images (mean + std of post-MHSA token
similarities, the paper's rule), so images differ in how much they merge. Measured in one run with
the project's throughput protocol (2 warm-up forwards, one timed batch per image):
- baseline: no merging, mixed batches;
- algm duplicates: ALGM on batches of 8 copies of one image (the released protocol's best case);
- algm min: ALGM, mixed batches, every image merges the batch minimum (the paper's rule);
- algm ragged: ALGM, mixed batches, each image merges its own count (packed execution).

    python scripts/bench_ragged.py [--images 8] [--out results/bench/ragged.csv]
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
from algm_cli.engine.throughput import measure_throughput
from algm_cli.models.schedule import algm_schedule
from algm_cli.models.segmenter import Segmenter

SIZE, BATCH = 512, 8


def images(count: int, root: Path) -> list[torch.Tensor]:
    """Return `count` synthetic validation images, normalised, resized to SIZE x SIZE."""
    generate(root)
    data = ADE20K(root, "val", num_classes=len(CLASS_NAMES))
    out = []
    for i in range(count):
        img = normalize(data[i]["image"])[None]
        out.append(F.interpolate(img, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[0])
    return out


def main() -> None:
    """Measure the four settings and write the CSV."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--root", default="data/synthetic")
    parser.add_argument("--out", default="results/bench/ragged.csv")
    args = parser.parse_args()
    torch.manual_seed(0)
    imgs = images(args.images, Path(args.root))
    model = Segmenter("vit_s", 150, "mask", SIZE).eval()
    tau = calibrate(model.encoder, [torch.stack(imgs[i : i + 4]) for i in range(0, len(imgs), 4)]).tau
    schedule = algm_schedule(tau, tau)
    with torch.inference_mode():
        model.schedule = schedule
        kept = [model.forward_with_stats(i[None])[1]["L5:gbm"] for i in imgs]
    rows = []
    settings = [("baseline", None, "min", "mixed"), ("algm", schedule, "min", "duplicates"),
                ("algm", schedule, "min", "mixed"), ("algm", schedule, "ragged", "mixed")]
    for method, sched, batching, mode in settings:
        model.schedule = sched if sched is not None else algm_schedule(1.0, 1.0)
        model.batching = batching
        speed = measure_throughput(model, imgs, BATCH, args.warmup, mode)
        rows.append({"method": method, "batching": batching, "mode": mode, "batch": BATCH,
                     "size": SIZE, "ims": round(speed["ims"], 3),
                     "batch_ms": round(speed["batch_ms"], 1), "tau": round(tau, 4),
                     "kept_final_per_image": ";".join(f"{k:.3f}" for k in kept)})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    dup = table.ims[1]
    table["vs_duplicates"] = (table.ims / dup).round(3)
    table["vs_baseline"] = (table.ims / table.ims[0]).round(3)
    table["threads"] = torch.get_num_threads()
    table["cpu"] = platform.processor() or platform.machine()
    table["torch"] = torch.__version__
    out = Path(args.out)
    write_atomic(out, table.to_csv(index=False))
    print(table.to_string(index=False))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
