#!/usr/bin/env bash
# The GPU throughput campaign (issue 10) on a lent GPU machine:
# 1. the paper's protocol (Segmenter ViT-T/S/B at 512, ViT-L at 640, batch 32 duplicates,
#    50 warm-up, fp32 + bf16), baseline vs ALGM -> results/gpu/throughput.csv;
# 2. torch.compile on a stream of different images, without and with token buckets (recompiles,
#    speed-up) -> results/gpu/compile_buckets.csv.
# Extra arguments go to step 1 (e.g. --checkpoints vit_s=runs/checkpoints/<id>.pt).
set -euo pipefail
cd "$(dirname "$0")/.."
python scripts/gpu_throughput.py --out results/gpu/throughput.csv "$@"
python scripts/compile_buckets.py --backbone vit_s --size 512 --out results/gpu/compile_buckets.csv
