"""CPU speed of EVA + ViT-Adapter + Mask2Former with and without ALGM, side by side in one process.

Builds the model of a backbone config (random weights, or a trained checkpoint), then times
batch-B fp32 inference on the same images with no merging and with ALGM (CLAP layer 1, GBM at
the backbone's layers, thresholds given), alternating the two in each round so that machine
load affects both alike; prints median latency, speed-up, tokens kept and fvcore GFLOPs.

    python scripts/mask2former_speed.py --backbone eva02_t --size 128 --tau 0.9 \
        --checkpoint runs/checkpoints/<key>.pt --data data/synthetic
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from algm_cli.data.ade20k import ADE20K  # noqa: E402
from algm_cli.engine.data import square_images  # noqa: E402
from algm_cli.engine.flops import count_gflops  # noqa: E402
from algm_cli.models.mask2former import build_mask2former  # noqa: E402
from algm_cli.models.registry import BuildRequest  # noqa: E402
from algm_cli.models.schedule import NO_MERGE, algm_schedule  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"


def main() -> None:
    """Print the side-by-side timing of the unmerged and ALGM models."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="eva02_t")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--tau", type=float, default=0.9, help="CLAP and GBM threshold")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--model-size", type=int, default=None,
                   help="crop the checkpoint was built for (default --size); inputs of another "
                        "size get resized position embeddings")
    p.add_argument("--data", default=None,
                   help="an ADE20K-layout root (e.g. data/synthetic): time its first validation "
                        "images resized to size x size instead of random noise")
    args = p.parse_args()
    backbone = OmegaConf.load(CONF / "backbone" / f"{args.backbone}.yaml")
    request = BuildRequest(args.backbone, args.classes, args.model_size or args.size, NO_MERGE,
                           {}, {})
    model = build_mask2former(request).eval()
    if args.checkpoint:
        model.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=True)["model"])
    algm = algm_schedule(args.tau, args.tau, gbm_layers=tuple(backbone.gbm_layers))
    if args.data:
        val = ADE20K(Path(args.data), "val", num_classes=args.classes)
        images = torch.stack(square_images(val, args.batch, args.size))
    else:
        images = torch.randn(args.batch, 3, args.size, args.size,
                             generator=torch.Generator().manual_seed(0))
    times = {"none": [], "algm": []}
    kept = {}
    with torch.inference_mode():
        for name, schedule in (("none", NO_MERGE), ("algm", algm)):  # warm-up
            model.schedule = schedule
            kept[name] = model.forward_with_stats(images)[1]
        for _ in range(args.rounds):
            for name, schedule in (("none", NO_MERGE), ("algm", algm)):
                model.schedule = schedule
                start = time.perf_counter()
                model(images)
                times[name].append(time.perf_counter() - start)
    flops = {}
    for name, schedule in (("none", NO_MERGE), ("algm", algm)):
        model.schedule = schedule
        flops[name] = count_gflops(model, images[:1])
    base = statistics.median(times["none"])
    for name in ("none", "algm"):
        ms = statistics.median(times[name]) * 1e3
        print(f"{name:5s} {ms:8.1f} ms/batch  speed-up {base * 1e3 / ms:.2f}x  GFLOPs {flops[name]:.3f}"
              f"  kept {kept[name]}")
    print(f"threads {torch.get_num_threads()}, batch {args.batch}, {args.size}x{args.size}, tau {args.tau}")


if __name__ == "__main__":
    main()
