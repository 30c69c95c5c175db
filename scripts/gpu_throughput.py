#!/usr/bin/env python
"""The paper's throughput protocol on a GPU: Segmenter ViT-T/S/B at 512 and ViT-L at 640.

Baseline vs ALGM at the released settings (CLAP at the backbone's hand-set tau in layer 1, GBM
with the released in-batch rule in layer 5 / 7), batch 32 duplicates of each image, 50 warm-up
forwards, fp32 and bf16 autocast, images of the synthetic dataset resized to the crop. Merge
counts depend on the weights: pass trained models with --checkpoints (random weights time the
same layers but merge differently). The baseline runs without any merge step. Writes
results/gpu/throughput.csv with the device name; speed-ups are ratios within one run.

    python scripts/gpu_throughput.py                 # on a CUDA machine
    python scripts/gpu_throughput.py --dry-run       # CPU, tiny sizes: checks the path end to end
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from algm_cli.data.ade20k import ADE20K
from algm_cli.data.synthetic import CLASS_NAMES, generate
from algm_cli.data.transforms import normalize
from algm_cli.engine.flops import count_gflops
from algm_cli.engine.store import write_atomic
from algm_cli.engine.throughput import measure_throughput
from algm_cli.models.schedule import NO_MERGE, algm_schedule
from algm_cli.models.segmenter import Segmenter, load_checkpoint

# backbone -> (crop, released CLAP tau on ADE20K, GBM layer)
SETTINGS = {"vit_t": (512, 0.90, 5), "vit_s": (512, 0.88, 5), "vit_b": (512, 0.94, 5),
            "vit_l": (640, 0.95, 7)}


def load_images(root: Path, count: int, size: int) -> list[torch.Tensor]:
    """Return `count` normalised synthetic validation images resized to size x size."""
    generate(root)
    data = ADE20K(root, "val", num_classes=len(CLASS_NAMES))
    return [F.interpolate(normalize(data[i]["image"])[None], size=(size, size), mode="bilinear",
                          align_corners=False)[0] for i in range(min(count, len(data)))]


def main() -> None:
    """Measure every backbone, baseline and ALGM, fp32 and bf16; write the CSV."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, 64 px, batch 2, warm-up 1")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--backbones", default="vit_t,vit_s,vit_b,vit_l")
    parser.add_argument("--root", default="data/synthetic")
    parser.add_argument("--out", default="results/gpu/throughput.csv")
    parser.add_argument("--checkpoints", default="",
                        help="trained models, e.g. vit_s=runs/a.pt,vit_l=runs/b.pt (150 classes); "
                             "trained weights merge like the paper's, random ones do not")
    args = parser.parse_args()
    checkpoints = dict(item.split("=", 1) for item in args.checkpoints.split(",") if item)
    device = torch.device("cpu" if args.dry_run or not torch.cuda.is_available() else "cuda")
    batch, warmup = (2, 1) if args.dry_run else (32, 50)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = []
    for backbone in args.backbones.split(","):
        crop, clap_tau, gbm_layer = SETTINGS[backbone]
        crop = 64 if args.dry_run else crop
        images = load_images(Path(args.root), 2 if args.dry_run else args.images, crop)
        model = Segmenter(backbone, 150, "mask", crop).to(device).eval()
        algm = algm_schedule(clap_tau, None, gbm_layers=(gbm_layer,), gbm_rule="released",
                             inclusive=True)
        if backbone in checkpoints:
            load_checkpoint(model, checkpoints[backbone])
        for method, schedule in (("baseline", NO_MERGE), ("algm", algm)):
            model.schedule = schedule
            gflops = count_gflops(model.cpu(), images[0][None]) if args.dry_run else None
            model.to(device)
            for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
                speed = measure_throughput(model, images, batch, warmup, "duplicates", dtype)
                rows.append({"backbone": backbone, "crop": crop, "method": method,
                             "precision": precision, "batch": batch, "warmup": warmup,
                             "ims": round(speed["ims"], 2), "gflops": gflops, "device": name})
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    base = table[table.method == "baseline"].set_index(["backbone", "precision"]).ims
    table["speedup"] = [round(r.ims / base[(r.backbone, r.precision)], 3) for r in table.itertuples()]
    out = Path(args.out)
    write_atomic(out, table.to_csv(index=False))
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
