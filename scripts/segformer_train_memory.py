"""Training peak memory and images/s of Segformer with each Segformer++ preset and downsampling.

Random images and labels at --size, AdamW, the model's loss; `TrainMeter` (engine/memory.py)
measures: on CUDA the max allocated memory, on a CPU the peak of tracked tensor storage during one
iteration; images/s over the other iterations after the first. The ratios to the unmerged model
are what compares with Segformer++'s training table (48.3 GB -> 34.0 HQ / 30.5 fast / 31.1 2x2 /
10.0 downsampling for MiT-B5 at Cityscapes 1024). Written atomically to --out.

    python scripts/segformer_train_memory.py --variant b0 --size 512 --batch 2 --iterations 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from algm_cli.engine.memory import TrainMeter  # noqa: E402
from algm_cli.engine.store import write_atomic  # noqa: E402
from algm_cli.models.downsample import DownsampledSegformer  # noqa: E402
from algm_cli.models.segformer import Segformer, segformerpp_preset  # noqa: E402

METHODS = ["none", "hq", "fast", "2x2", "downsample"]


def measure(variant: str, method: str, size: int, batch: int, iterations: int, factor: float,
            device: torch.device) -> dict:
    """Return the meter's result for one method."""
    torch.manual_seed(0)
    if method == "downsample":
        model = DownsampledSegformer(variant, 19, factor=factor)
    else:
        model = Segformer(variant, 19, segformerpp_preset(method))
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=6e-5)
    meter = TrainMeter(device, iterations)
    for it in range(iterations):
        images = torch.randn(batch, 3, size, size, device=device)
        labels = torch.randint(19, (batch, size, size), device=device)
        with meter.iteration(it, batch, model, opt, images, labels):
            loss = model.training_loss(images, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return meter.result()


def main() -> None:
    """Measure every method and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="b0")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--factor", type=float, default=0.5, help="downsampling factor")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="results/bench/segformer_train_memory.csv")
    args = parser.parse_args()
    rows = []
    for method in METHODS:
        result = measure(args.variant, method, args.size, args.batch, args.iterations,
                         args.factor, torch.device(args.device))
        rows.append({"variant": args.variant, "method": method, "size": args.size,
                     "batch": args.batch, **result})
        print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    base = frame.iloc[0]
    frame["memory_ratio"] = frame["train_peak_mem_mb"] / base["train_peak_mem_mb"]
    frame["speedup"] = frame["train_ims"] / base["train_ims"]
    frame["device"] = args.device
    write_atomic(Path(args.out), frame.to_csv(index=False, float_format="%.4g"))
    print(frame.to_string(index=False))


if __name__ == "__main__":
    main()
