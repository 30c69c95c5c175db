#!/usr/bin/env bash
# The GPU throughput campaign (issue 10): the paper's protocol on a lent GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
python scripts/gpu_throughput.py --out results/gpu/throughput.csv "$@"
