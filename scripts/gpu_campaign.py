#!/usr/bin/env python
"""The GPU campaign of issue 20: Segmenter T/S/B/L, baseline vs ALGM, fp32 and bf16, ragged batches.

For every backbone at the paper's ADE20K crop (T/S/B 512, L 640), with 150 classes:
1. "paper": fp32 eager, batch 32 duplicates of one image (the released protocol), baseline vs
   ALGM (CLAP layer 1, GBM layer 5 / 7 for L);
2. "fast": bf16 autocast + compiled blocks (`ViTEncoder.compile_blocks`) + token buckets of 32,
   baseline vs ALGM, duplicates;
3. "mixed": ALGM on batches of 32 different images, batch-minimum count (the paper's rule) vs
   ragged batching (per-image counts, packed; `packed_attention=auto`, recorded), plus ALGM on
   duplicates, in fp32 and bf16 (eager).
Each group is timed interleaved (algm_cli/engine/timing.py): warm-up forwards of every setting in
turn (50, capped by --warmup-seconds per group so that ViT-L fits the time budget; the count done
is recorded), then --rounds rounds of one batch per setting; rows give the median im/s and the
median / min / max per-round speed ratio to the group's reference.

Weights: trained checkpoints where given (--checkpoints vit_s=path,...), else random. Either way
ALGM runs at one threshold tau for CLAP and GBM, bisected on the images so that the model's
GFLOPs (counted analytically from the per-layer token counts, the fvcore convention: one FLOP per
multiply-add; Segmenter ViT-S 512 gives 38.4 vs fvcore's 38.6) fall by the paper's ratio
(Tab. 1: T 12.8 -> 8.4, S 38.6 -> 26.3, B 130 -> 91, L 672 -> 438), i.e. calibrated models whose
kept-token fractions match the paper's GFLOPs.

Runs with the GPU machine's own PyTorch. Imports only torch, numpy, timm (+ its torchvision and
PIL), tqdm and this package's models / merge / timing modules: no hydra, omegaconf, fvcore or
pandas (bring a timm wheel if the machine lacks it). Writes results/gpu/campaign.csv (one row per
setting, with the device name and torch version).

    bash scripts/gpu_campaign.sh                      # on the GPU machine
    python scripts/gpu_campaign.py --dry-run          # CPU, tiny: checks the path end to end
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from algm_cli.data.synthetic import SyntheticSpec, class_styles, sample  # noqa: E402
from algm_cli.data.transforms import normalize  # noqa: E402
from algm_cli.engine.timing import interleaved, ratio_summary  # noqa: E402
from algm_cli.models.packed_attention import resolve  # noqa: E402
from algm_cli.models.schedule import NO_MERGE, algm_schedule  # noqa: E402
from algm_cli.models.segmenter import Segmenter, load_checkpoint  # noqa: E402

# backbone -> (crop, GBM layer, paper GFLOPs baseline, paper GFLOPs ALGM) (ADE20K, Tab. 1)
SETTINGS = {"vit_t": (512, 5, 12.8, 8.4), "vit_s": (512, 5, 38.6, 26.3),
            "vit_b": (512, 5, 130.0, 91.0), "vit_l": (640, 7, 672.0, 438.0)}
CLASSES, PATCH = 150, 16


def synthetic_images(count: int, size: int) -> list[torch.Tensor]:
    """Return `count` different normalised synthetic images (3, size, size)."""
    styles, spec = class_styles(), SyntheticSpec(height=size, width=size)
    return [normalize(torch.from_numpy(sample(i, spec, styles)[0]).permute(2, 0, 1))
            for i in range(count)]


def analytic_gflops(model: Segmenter, size: int, stats: dict) -> float:
    """Return Segmenter's GFLOPs (multiply-adds) at batch 1 given the kept fractions `stats`."""
    enc, n = model.encoder, (size // PATCH) ** 2
    C, K = enc.dim, CLASSES
    kept = {int(label[1:].split(":")[0]): frac for label, frac in stats.items()}
    macs, frac = n * 3 * PATCH * PATCH * C, 1.0
    for layer in range(1, enc.depth + 1):
        tokens = 1 + frac * n
        macs += 4 * tokens * C * C + 2 * tokens * tokens * C  # qkv, proj, q k^T, attn v
        frac = kept.get(layer, frac)
        macs += 8 * (1 + frac * n) * C * C  # MLP after a "between" merge
    m = frac * n
    dec = model.decoder
    if hasattr(dec, "blocks"):
        t = m + K
        macs += m * C * C + len(dec.blocks) * (12 * t * C * C + 2 * t * t * C)
        macs += t * C * C + m * K * C
    else:
        macs += m * C * K
    return macs / 1e9


@torch.inference_mode()
def calibrated_tau(model: Segmenter, images, size: int, gbm_layer: int, ratio: float) -> tuple:
    """Return (tau, GFLOPs, kept stats of image 0): tau whose mean GFLOPs ratio is `ratio`."""
    base = analytic_gflops(model, size, {})

    def mean_gflops(tau: float) -> tuple[float, dict]:
        model.schedule = algm_schedule(tau, tau, gbm_layers=(gbm_layer,))
        stats = [model.forward_with_stats(img[None])[1] for img in images]
        return statistics.mean(analytic_gflops(model, size, s) for s in stats), stats[0]

    low, high = -1.0, 1.0  # GFLOPs grow with tau
    for _ in range(14):
        mid = (low + high) / 2
        if mean_gflops(mid)[0] / base < ratio:
            low = mid
        else:
            high = mid
    gflops, stats = mean_gflops(high)
    return high, gflops, stats


def time_group(settings: dict, rounds: int, warmup: int, warmup_s: float,
               device: torch.device) -> tuple[dict, int]:
    """Warm up (count or seconds, whichever ends first), time interleaved; return (times, warm-ups)."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    start, done = time.perf_counter(), 0
    while done < warmup and time.perf_counter() - start < warmup_s:
        for fn in settings.values():
            fn()
        done += 1
    sync()
    return interleaved(settings, rounds, warmup=0, sync=sync), done


def forward(model, batches, precision: str, device: torch.device):
    """Return a callable running the model on the next batch of `batches` (cycling)."""
    state = {"i": 0}
    dtype = torch.bfloat16 if precision == "bf16" else None

    def run():
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype,
                                                     enabled=dtype is not None):
            model(batches[state["i"] % len(batches)])
        state["i"] += 1
    return run


def configure(model, schedule, batching="min", bucket=0):
    """Return a callable that sets the model's schedule, batching and bucket before a forward."""
    def apply():
        model.schedule, model.batching, model.encoder.bucket = schedule, batching, bucket
    return apply


def group_rows(model, groups, args, device, meta) -> list[dict]:
    """Time every group {name: (reference, {setting: (setup, run, info)})}; return rows."""
    rows = []
    for group, (reference, settings) in groups.items():
        calls = {name: (lambda s=setup, r=run: (s(), r())) for name, (setup, run, _) in
                 settings.items()}
        times, warm = time_group(calls, args.rounds, args.warmup, args.warmup_seconds,
                                 device)
        for name, (_, _, info) in settings.items():
            summary = ratio_summary(times, name, reference)
            median = statistics.median(times[name])
            rows.append({**meta, "group": group, "setting": name, **info,
                         "ims": round(args.batch / median, 2), "batch_ms": round(1e3 * median, 2),
                         "vs": reference, "ratio": round(summary["ratio_median"], 3),
                         "ratio_min": round(summary["ratio_min"], 3),
                         "ratio_max": round(summary["ratio_max"], 3), "rounds": args.rounds,
                         "warmup_done": warm})
            print({k: rows[-1][k] for k in ("backbone", "group", "setting", "ims", "ratio")},
                  flush=True)
    return rows


def campaign(backbone: str, args, device: torch.device, checkpoints: dict) -> list[dict]:
    """Run the three groups for one backbone; return its rows."""
    crop, gbm_layer, paper_base, paper_algm = SETTINGS[backbone]
    crop = args.crop or crop
    torch.manual_seed(0)
    model = Segmenter(backbone, CLASSES, "mask", crop).eval()
    if backbone in checkpoints:
        load_checkpoint(model, checkpoints[backbone])
    model.to(device)
    images = [img.to(device) for img in synthetic_images(args.images, crop)]
    tau, gflops, stats = calibrated_tau(model, images[: args.calibration_images], crop, gbm_layer,
                                        paper_algm / paper_base)
    algm = algm_schedule(tau, tau, gbm_layers=(gbm_layer,))
    dup = [img[None].expand(args.batch, -1, -1, -1).contiguous() for img in images[:4]]
    mixed = [torch.stack([images[(i + j) % len(images)] for j in range(args.batch)])
             for i in range(4)]
    meta = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "backbone": backbone, "crop": crop, "batch": args.batch,
            "weights": "trained" if backbone in checkpoints else "random", "tau": round(tau, 4),
            "gflops_base": round(analytic_gflops(model, crop, {}), 2),
            "gflops_algm": round(gflops, 2), "paper_gflops_base": paper_base,
            "paper_gflops_algm": paper_algm,
            "kept_image0": " ".join(f"{k}={v:.3f}" for k, v in stats.items())}

    def info(precision, compiled, bucket, method, batching, mode, bias=False):
        attention = ""
        if batching == "ragged":
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            attention = resolve(model.packed_attention, device, dtype, bias)
        return {"precision": precision, "compiled": compiled, "bucket": bucket, "method": method,
                "batching": batching, "mode": mode, "packed_attention": attention}

    def setting(schedule, batches, precision, batching="min", bucket=0, compiled=False):
        method = "baseline" if schedule is NO_MERGE else "algm"
        mode = "duplicates" if batches is dup else "mixed"
        return (configure(model, schedule, batching, bucket), forward(model, batches, precision,
                device), info(precision, compiled, bucket, method, batching, mode))

    rows = group_rows(model, {"paper": ("baseline", {
        "baseline": setting(NO_MERGE, dup, "fp32"), "algm": setting(algm, dup, "fp32")})},
        args, device, meta)
    for precision in ("fp32", "bf16"):
        rows += group_rows(model, {f"mixed_{precision}": ("algm min duplicates", {
            "algm min duplicates": setting(algm, dup, precision),
            "algm min mixed": setting(algm, mixed, precision),
            "algm ragged mixed": setting(algm, mixed, precision, "ragged")})}, args, device, meta)
    if not args.no_compile:
        options = {"backend": "eager"} if args.dry_run else {"dynamic": False}
        model.encoder.compile_blocks(**options)
        rows += group_rows(model, {"fast": ("baseline", {
            "baseline": setting(NO_MERGE, dup, "bf16", compiled=True),
            "algm": setting(algm, dup, "bf16", bucket=32, compiled=True)})}, args, device, meta)
    return rows


def main() -> None:
    """Run the campaign for the chosen backbones and write the CSV."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU, ViT-T at 64 px, batch 2, 2 rounds, eager 'compile'")
    parser.add_argument("--backbones", default="vit_t,vit_s,vit_b,vit_l")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--warmup-seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=32, help="different images (mixed batches)")
    parser.add_argument("--calibration-images", type=int, default=8)
    parser.add_argument("--crop", type=int, default=0, help="0: the paper's crop per backbone")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--checkpoints", default="", help="e.g. vit_s=runs/a.pt (150 classes)")
    parser.add_argument("--out", default="results/gpu/campaign.csv")
    args = parser.parse_args()
    if args.dry_run:
        args.backbones, args.crop, args.batch = "vit_t", 64, 2
        args.warmup, args.rounds, args.images, args.calibration_images = 1, 2, 4, 2
    unknown = [b for b in args.backbones.split(",") if b not in SETTINGS]
    if unknown:
        sys.exit(f"gpu_campaign: --backbones {unknown} unknown; expected some of {list(SETTINGS)}")
    checkpoints = dict(item.split("=", 1) for item in args.checkpoints.split(",") if item)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    rows = []
    for backbone in args.backbones.split(","):
        rows += campaign(backbone, args, device, checkpoints)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    tmp = out.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(out)
    print(f"wrote {out} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
