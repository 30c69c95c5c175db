#!/usr/bin/env python
"""Time CLAP, GBM and unmerge against ViT-S transformer blocks; write results/bench/merge_overhead.csv.

ViT-S-sized tokens: N = 1024 patch tokens (a 512 x 512 crop at patch 16), C = 384, B in {1, 8}.
Tokens have the structure of real ones (a few flat regions plus noise) and thresholds are set so
that CLAP merges 40% of the 2x2 windows and GBM a third of the A tokens, which is about what ALGM
does on ADE20K with ViT-S (38.6 -> 26.3 GFLOPs). The reference is a timm ViT-S block on 1025
tokens (patch tokens + class token) times 12, the encoder of Segmenter ViT-S. Timing is
interleaved (engine/timing.py): every round times the merge path (CLAP + GBM + unmerge, `--repeat`
calls, averaged) and then one block, so both see the same machine load; the overhead is the
median over rounds of merge / (12 x block), with its min and max.

    python scripts/bench_merge.py [--out results/bench/merge_overhead.csv] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import platform
from pathlib import Path

import pandas as pd
import torch
from timm.models.vision_transformer import Block

from algm_cli.engine.timing import interleaved
from algm_cli.merge.packed import PackedState, packed_clap, packed_gbm
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


@torch.inference_mode()
def measure(batch: int, rounds: int, repeat: int) -> dict:
    """Return one row: per-op times, the 12-block reference, token counts and the overhead ratio."""
    x = realistic_tokens(batch)
    clap_tau, gbm_tau = thresholds(x)
    start = MergeState.start(batch, x.shape[1])
    y1, s1 = clap_merge(x, start, GRID, (2, 2), clap_tau)
    y2, s2 = gbm_merge(y1, s1, threshold=gbm_tau)
    block = Block(C, HEADS, qkv_bias=True).eval()
    tokens = torch.randn(batch, x.shape[1] + 1, C)
    parts = {"clap": lambda: clap_merge(x, start, GRID, (2, 2), clap_tau),
             "gbm": lambda: gbm_merge(y1, s1, threshold=gbm_tau),
             "unmerge": lambda: s2.unmerge(y2)}
    # the packed core (merge.batching=ragged): every image its own count, one vectorised pass
    flat, pstart = x.reshape(-1, C), PackedState.start(batch, x.shape[1])
    p1, ps1 = packed_clap(flat, pstart, GRID, (2, 2), clap_tau)
    p2, ps2 = packed_gbm(p1, ps1, threshold=gbm_tau)
    packed = {"packed_clap": lambda: packed_clap(flat, pstart, GRID, (2, 2), clap_tau),
              "packed_gbm": lambda: packed_gbm(p1, ps1, threshold=gbm_tau),
              "packed_unmerge": lambda: ps2.unmerge(p2)}
    settings = {name: (lambda fn=fn: [fn() for _ in range(repeat)])
                for name, fn in {**parts, **packed}.items()}
    settings["block"] = lambda: block(tokens)
    times = interleaved(settings, rounds, warmup=1)
    per_round = [sum(times[n][r] for n in parts) / repeat for r in range(rounds)]
    overhead = [100 * m / (DEPTH * b) for m, b in zip(per_round, times["block"])]
    packed_round = [sum(times[n][r] for n in packed) / repeat for r in range(rounds)]
    packed_pct = [100 * m / (DEPTH * b) for m, b in zip(packed_round, times["block"])]
    med = {name: 1e6 * statistics.median(ts) / (1 if name == "block" else repeat)
           for name, ts in times.items()}
    t_clap, t_gbm, t_unmerge, t_block = med["clap"], med["gbm"], med["unmerge"], med["block"]
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
        "overhead_pct_of_forward": round(statistics.median(overhead), 3),
        "overhead_pct_min": round(min(overhead), 3),
        "overhead_pct_max": round(max(overhead), 3),
        "packed_tokens_after_gbm": sum(ps2.counts) / batch,
        "packed_total_us": round(sum(med[n] for n in packed), 1),
        "packed_overhead_pct": round(statistics.median(packed_pct), 3),
        "packed_overhead_pct_min": round(min(packed_pct), 3),
        "packed_overhead_pct_max": round(max(packed_pct), 3),
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }


def main() -> None:
    """Run the benchmark for B = 1 and B = 8 and write the CSV."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/bench/merge_overhead.csv")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=5, help="merge-path calls per round")
    parser.add_argument("--batches", default="1,8")
    args = parser.parse_args()
    rows = [measure(int(b), args.rounds, args.repeat) for b in args.batches.split(",")]
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
