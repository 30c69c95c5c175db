#!/usr/bin/env bash
# The GPU campaign of issue 20 on a lent GPU machine, with the machine's own PyTorch:
# Segmenter ViT-T/S/B (512) and ViT-L (640), batch 32, baseline vs calibrated ALGM in fp32 (the
# paper's protocol) and bf16 + compiled + bucketed, ragged vs min-count on mixed batches, all timed
# interleaved -> results/gpu/campaign.csv. Needs torch, numpy, timm (+ torchvision, PIL), tqdm;
# no hydra / omegaconf / fvcore / pandas. If timm is missing: pip install --no-deps <timm wheel>.
# First checks the whole path on the CPU in seconds (--dry-run). Extra arguments go to the GPU
# run (e.g. --backbones vit_s --checkpoints vit_s=runs/checkpoints/<id>.pt).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python -c "import torch, timm, numpy, tqdm; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python scripts/gpu_campaign.py --dry-run --out /tmp/gpu_campaign_dry.csv
python scripts/gpu_campaign.py --out results/gpu/campaign.csv "$@"
