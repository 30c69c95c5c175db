#!/usr/bin/env bash
# The synthetic-dataset campaign behind the committed results/ (Segmenter ViT-T on the embedded
# dataset, 2 CPU cores: about 1.5 hours). Every step is an ordinary `algm` command; rerunning the
# script skips finished runs and reuses trained checkpoints (work_dir=runs), so a killed campaign
# resumes. Ends with `algm report`, which renders results/tables and results/figures.
set -euo pipefail
cd "$(dirname "$0")/.."
ALGM=${ALGM:-.venv/bin/algm}
export HF_HUB_OFFLINE=1

# Tab. 1-style rows: baseline, ALGM (trained with the calibrated tau), ALGM applied training-free
$ALGM run merge=none
$ALGM run merge=algm
$ALGM run merge=algm merge.during_training=false
$ALGM run merge=tome merge.tome_r=2

# Fig. 4: inference tau swept on the ALGM model trained with the calibrated tau (no retraining),
# and on models trained with fixed taus (one training per train_tau)
$ALGM sweep merge=algm eval_tau=0.6,0.7,0.75,0.8,0.85,0.9,0.95
$ALGM sweep +experiment=fig4 backbone=vit_t train_tau=0.8,0.9 eval_tau=0.6,0.7,0.8,0.9,0.95

# ALGM*: the lowest inference tau that keeps the baseline's mIoU (bisection, every probe kept)
$ALGM tune

# Tab. 5a: CLAP window sizes (five trainings)
$ALGM sweep +experiment=table5a backbone=vit_t

# Supp. Fig. 1: the token-reduction baselines over their settings, training-free on the baseline
$ALGM sweep +experiment=supp_fig1

$ALGM report
