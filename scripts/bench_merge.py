#!/usr/bin/env python
"""Time CLAP, GBM and unmerge against ViT-S transformer blocks; write results/bench/merge_overhead.csv.

ViT-S-sized tokens: N = 1024 patch tokens (a 512 x 512 crop at patch 16), C = 384, B in {1, 8}.
Tokens have the structure of real ones (a few flat regions plus noise) and thresholds are set so
that CLAP merges 40% of the 2x2 windows and GBM a third of the A tokens, which is about what ALGM
does on ADE20K with ViT-S (38.6 -> 26.3 GFLOPs). The reference is a timm ViT-S block on 1025
tokens (patch tokens + class token) times 12, the encoder of Segmenter ViT-S.

    python scripts/bench_merge.py [--out results/bench/merge_overhead.csv] [--min-run-time 2]
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import pandas as pd
import torch
from timm.models.vision_transformer import Block
from torch.utils import benchmark

from algm_cli.merge import MergeState, best_edges, clap_merge, gbm_merge, window_scores

GRID, C, HEADS, DEPTH = (32, 32), 384, 6, 12


def realistic_tokens(batch: int, seed: int = 0) -> torch.Tensor:
    """Return (B, 1024, 384) tokens: 16 flat regions of random size plus noise."""
    g = torch.Generator().manual_seed(seed)
    h, w = GRID
    centres = torch.randn(batch, 16, C, generator=g)
    cuts_y = torch.randint(1, h, (batch, 3), generator=g).sort(1).values
    cuts_x = torch.randint(1, w, (batch, 3), generator=g).sort(1).values
    ry = (torch.arange(h)[None, :, None] >= cuts_y[:, None, :]).sum(-1)  # (B, h)
    rx = (torch.arange(w)[None, :, None] >= cuts_x[:, None, :]).sum(-1)  # (B, w)
    region = (ry[:, :, None] * 4 + rx[:, None, :]).reshape(batch, -1)
    x = centres.gather(1, region[..., None].expand(-1, -1, C))
    return x + 0.8 * torch.randn(batch, h * w, C, generator=g)


def thresholds(x: torch.Tensor) -> tuple[float, float]:
    """Return (CLAP tau, GBM tau) merging 40% of windows and a third of the A tokens in image 0."""
    scores = window_scores(x[:1], GRID, (2, 2)).reshape(-1)
    clap_tau = float(scores.quantile(0.6))
    y, state = clap_merge(x[:1], MergeState.start(1, x.shape[1]), GRID, (2, 2), clap_tau)
    best, _ = best_edges(y)
    return clap_tau, float(best[0].quantile(2 / 3))


def time_us(fn, min_run_time: float) -> float:
    """Return the median time of fn() in microseconds."""
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(
        min_run_time=min_run_time
    ).median * 1e6


@torch.inference_mode()
def measure(batch: int, min_run_time: float) -> dict:
    """Return one row: per-op times, the 12-block reference, token counts and the overhead ratio."""
    x = realistic_tokens(batch)
    clap_tau, gbm_tau = thresholds(x)
    start = MergeState.start(batch, x.shape[1])
    y1, s1 = clap_merge(x, start, GRID, (2, 2), clap_tau)
    y2, s2 = gbm_merge(y1, s1, threshold=gbm_tau)
    block = Block(C, HEADS, qkv_bias=True).eval()
    tokens = torch.randn(batch, x.shape[1] + 1, C)
    t_clap = time_us(lambda: clap_merge(x, start, GRID, (2, 2), clap_tau), min_run_time)
    t_gbm = time_us(lambda: gbm_merge(y1, s1, threshold=gbm_tau), min_run_time)
    t_unmerge = time_us(lambda: s2.unmerge(y2), min_run_time)
    t_block = time_us(lambda: block(tokens), min_run_time)
    merge_total = t_clap + t_gbm + t_unmerge
    return {
        "batch": batch,
        "tokens": x.shape[1],
        "dim": C,
        "tokens_after_clap": s1.num_tokens,
        "tokens_after_gbm": s2.num_tokens,
        "clap_us": round(t_clap, 1),
        "gbm_us": round(t_gbm, 1),
        "unmerge_us": round(t_unmerge, 1),
        "block_us": round(t_block, 1),
        "forward_12_blocks_us": round(DEPTH * t_block, 1),
        "merge_total_us": round(merge_total, 1),
        "overhead_pct_of_forward": round(100 * merge_total / (DEPTH * t_block), 3),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }


def main() -> None:
    """Run the benchmark for B = 1 and B = 8 and write the CSV."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/bench/merge_overhead.csv")
    parser.add_argument("--min-run-time", type=float, default=2.0)
    parser.add_argument("--batches", default="1,8")
    args = parser.parse_args()
    rows = [measure(int(b), args.min_run_time) for b in args.batches.split(",")]
    table = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(out)
    print(table.to_string(index=False))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
