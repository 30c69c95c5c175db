"""The input scale factor of `merge=downsample` whose GFLOPs match a Segformer++ preset.

fvcore GFLOPs (`count_gflops`) of Segformer with the preset, then bisection on the factor of the
downsampling baseline (GFLOPs grow monotonically with the factor) to `--tol` in the factor.

    python scripts/downsample_factor.py --variant b5 --size 1024 --preset hq
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from algm_cli.engine.flops import count_gflops  # noqa: E402
from algm_cli.models.downsample import DownsampledSegformer  # noqa: E402
from algm_cli.models.segformer import Segformer, segformerpp_preset  # noqa: E402


def matching_factor(variant: str, size: int, preset: str, tol: float = 0.005,
                    classes: int = 19) -> tuple[float, float, float]:
    """Return (factor, its GFLOPs, the preset's GFLOPs) for a size x size input."""
    images = torch.randn(1, 3, size, size)
    target = count_gflops(Segformer(variant, classes, segformerpp_preset(preset)).eval(), images)
    lo, hi, best = 0.25, 1.0, (1.0, float("nan"))
    while hi - lo > tol:
        mid = (lo + hi) / 2
        flops = count_gflops(DownsampledSegformer(variant, classes, factor=mid).eval(), images)
        print(f"factor {mid:.4f}: {flops:.2f} GFLOPs (target {target:.2f})", flush=True)
        lo, hi = (mid, hi) if flops < target else (lo, mid)
        best = (mid, flops) if abs(flops - target) < abs(best[1] - target) or best[1] != best[1] else best
    return best[0], best[1], target


def main() -> None:
    """Print the matching factor for the command-line setting."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="b5")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--preset", default="hq")
    parser.add_argument("--tol", type=float, default=0.005)
    args = parser.parse_args()
    factor, flops, target = matching_factor(args.variant, args.size, args.preset, args.tol)
    print(f"MiT-{args.variant.upper()} {args.size}: {args.preset} {target:.2f} GFLOPs; "
          f"downsample factor {factor:.3f} -> {flops:.2f} GFLOPs")


if __name__ == "__main__":
    main()
