#!/usr/bin/env python
"""torch.compile with adaptive merging: recompiles and speed with and without token buckets.

ALGM's token count changes with every image, so a compiled encoder (static shapes) recompiles for
each new count. Padding the tokens after a merge to a multiple of `bucket` (masked keys,
`ViTEncoder.bucket`) bounds the number of shapes. For each mode this script runs a stream of
different images at batch 1 (adaptive per image) twice and records:
- graphs: the graphs dynamo compiled (first pass: every new shape; second pass should add none);
- first_pass_s: wall time of the first pass (includes compiling);
- ims: images per second of the second pass (shapes already seen).
Modes: eager; compiled without buckets; compiled with `--bucket` (default 32). Weights come from
`--checkpoint` (a trained model merges like real ones) or are random. Writes `--out` atomically.

    python scripts/compile_buckets.py --backbone vit_s --size 512 --checkpoint runs/...pt   # GPU
    python scripts/compile_buckets.py --dry-run     # CPU, ViT-T 64 px, dynamo's eager backend
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
import torch._dynamo
import torch.nn.functional as F
from torch._dynamo.utils import counters

from algm_cli.data.ade20k import ADE20K
from algm_cli.data.synthetic import CLASS_NAMES, generate
from algm_cli.data.transforms import normalize
from algm_cli.engine.store import write_atomic
from algm_cli.models.schedule import algm_schedule
from algm_cli.models.segmenter import Segmenter, load_checkpoint
from algm_cli.models.blocks import full_block


def stream(root: Path, count: int, size: int) -> list[torch.Tensor]:
    """Return `count` different normalised synthetic validation images (1, 3, size, size)."""
    generate(root)
    data = ADE20K(root, "val", num_classes=len(CLASS_NAMES))
    return [F.interpolate(normalize(data[i % len(data)]["image"])[None], size=(size, size),
                          mode="bilinear", align_corners=False) for i in range(count)]


def sync(device: torch.device) -> None:
    """Wait for the device."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_mode(model: Segmenter, images: list, device, compiled: bool, bucket: int,
             backend: str) -> dict:
    """Return the measurements of one mode (see the module doc)."""
    torch._dynamo.reset()
    counters.clear()
    model.encoder.bucket = bucket
    model.encoder.block_fn = (torch.compile(full_block, backend=backend, dynamic=False)
                              if compiled else full_block)
    counts = set()
    with torch.inference_mode():
        start = time.perf_counter()
        for image in images:
            _, stats = model.forward_with_stats(image.to(device))
            counts.add(tuple(round(v, 6) for v in stats.values()))
        sync(device)
        first = time.perf_counter() - start
        graphs_first = int(counters["stats"]["unique_graphs"])
        start = time.perf_counter()
        for image in images:
            model(image.to(device))
        sync(device)
        second = time.perf_counter() - start
    return {"graphs": graphs_first, "graphs_after_second_pass": int(counters["stats"]["unique_graphs"]),
            "token_counts": len(counts), "first_pass_s": round(first, 2),
            "ims": round(len(images) / second, 2)}


def main() -> None:
    """Measure eager, compiled and compiled + buckets; write the CSV."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, ViT-T 64 px, eager backend")
    parser.add_argument("--backbone", default="vit_s")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--bucket", type=int, default=32)
    parser.add_argument("--clap", type=float, default=0.88, help="CLAP tau (ViT-S released)")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--num-classes", type=int, default=150)
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--root", default="data/synthetic")
    parser.add_argument("--out", default="results/gpu/compile_buckets.csv")
    args = parser.parse_args()
    if args.dry_run:
        args.backbone, args.size, args.images, args.backend = "vit_t", 64, 4, "eager"
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    # every distinct shape may need its own graph: let dynamo keep them all
    for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                 "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 4096)
    schedule = algm_schedule(args.clap, None, gbm_layers=(5,), gbm_rule="released",
                             inclusive=True)
    model = Segmenter(args.backbone, args.num_classes, "mask", args.size, schedule=schedule)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint)
    model = model.to(device).eval()
    images = stream(Path(args.root), args.images, args.size)
    rows = []
    for mode, compiled, bucket in (("eager", False, 0), ("compiled", True, 0),
                                   (f"compiled_bucket{args.bucket}", True, args.bucket)):
        row = {"mode": mode, "backbone": args.backbone, "size": args.size, "images": len(images),
               "backend": args.backend if compiled else "-",
               **run_mode(model, images, device, compiled, bucket, args.backend),
               "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
        rows.append(row)
        print(row, flush=True)
    table = pd.DataFrame(rows)
    table["speedup_vs_eager"] = (table.ims / table.ims[0]).round(3)
    write_atomic(Path(args.out), table.to_csv(index=False))
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
