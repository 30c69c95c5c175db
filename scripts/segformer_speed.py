"""CPU inference time and GFLOPs of Segformer with the Segformer++ presets.

For each variant and preset: fvcore GFLOPs (`count_gflops`) and the median latency of batch-1
fp32 inference under torch.inference_mode (torch.utils.benchmark, after warm-up runs), with the
speed-up over the unmerged model measured in the same run. The table is written atomically
(store.write_atomic) to results/segformer_cpu.csv.

    python scripts/segformer_speed.py --variants b0 --size 1024 --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from torch.utils import benchmark

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from algm_cli.engine.flops import count_gflops  # noqa: E402
from algm_cli.engine.store import write_atomic  # noqa: E402
from algm_cli.models.segformer import Segformer, segformerpp_preset  # noqa: E402

COLUMNS = ["variant", "preset", "size", "gflops", "ms", "speedup", "threads", "torch"]
PRESETS = ["none", "hq", "fast", "2x2"]


def median_ms(model: torch.nn.Module, images: torch.Tensor, warmup: int, runs: int) -> float:
    """Return the median latency in ms of `runs` timed forwards after `warmup` untimed ones."""
    with torch.inference_mode():
        for _ in range(warmup):
            model(images)
        timer = benchmark.Timer(stmt="model(images)", globals={"model": model, "images": images})
        times = [timer.timeit(1).median for _ in range(runs)]
    return statistics.median(times) * 1e3


def measure(variant: str, size: int, classes: int, warmup: int, runs: int) -> list[dict]:
    """Return one row per preset for `variant` at size x size (speed-ups vs. "none")."""
    torch.manual_seed(0)
    model = Segformer(variant, num_classes=classes).eval()
    images = torch.randn(1, 3, size, size)
    rows = []
    for preset in PRESETS:
        model.merge = segformerpp_preset(preset)
        start = time.perf_counter()
        gflops = count_gflops(model, images)
        ms = median_ms(model, images, warmup, runs)
        rows.append(
            {
                "variant": variant,
                "preset": preset,
                "size": size,
                "gflops": round(gflops, 2),
                "ms": round(ms, 1),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
            }
        )
        print(f"{variant} {preset:5s} {gflops:8.2f} GFLOPs {ms:9.1f} ms "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    base = rows[0]["ms"]
    for row in rows:
        row["speedup"] = round(base / row["ms"], 3)
    return rows


def main(argv: list[str] | None = None) -> None:
    """Measure, print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # b5 is off by default: one 1024 x 1024 forward takes ~25 s on 2 CPU cores, so four presets
    # with warm-up and repeats need ~6 min (add it with --variants b0 b5 --warmup 1 --runs 1)
    parser.add_argument("--variants", nargs="+", default=["b0"])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=19, help="19: Cityscapes")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("results/segformer_cpu.csv"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for variant in args.variants:
        rows += measure(variant, args.size, args.classes, args.warmup, args.runs)
    write_atomic(args.out, pd.DataFrame(rows, columns=COLUMNS).to_csv(index=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
