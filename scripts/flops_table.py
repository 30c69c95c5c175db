#!/usr/bin/env python
"""Write results/flops_baselines.csv: baseline GFLOPs of every Segmenter setting in the paper.

Each row is counted by the same code as `algm flops` (fvcore, one forward at the dataset's crop
size) and listed beside the paper's value. Run: `python scripts/flops_table.py` (~1 minute).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_module

from algm_cli.engine.flops_cli import model_gflops
from algm_cli.engine.setup import crop_size
from algm_cli.engine.store import write_atomic

# (backbone, dataset, paper GFLOPs, paper table, extra overrides)
PAPER = [
    ("vit_t", "ade20k", 12.8, "tab1", []),
    ("vit_s", "ade20k", 38.6, "tab1", []),
    ("vit_b", "ade20k", 130, "tab1", []),
    ("vit_l", "ade20k", 672, "tab1", []),
    ("vit_s", "cityscapes", 116, "tab2b", []),
    ("vit_l", "cityscapes", 1005, "tab2b", ["model.decoder_layers=1"]),
    ("vit_l", "cityscapes", 1005, "tab2b", []),
    ("vit_s", "pascal_context", 32.1, "tab2c", []),
    ("vit_l", "pascal_context", 343, "tab2c", []),
    ("vit_s", "coco_stuff10k", 39, "tab2a", []),
    ("vit_b", "coco_stuff10k", 130, "tab2a", []),
    ("vit_l", "coco_stuff10k", 401, "tab2a", []),
]


def main() -> None:
    """Count every row and write the CSV atomically."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/flops_baselines.csv")
    args = parser.parse_args()
    rows = []
    with initialize_config_module("algm_cli.conf", version_base="1.3"):
        for backbone, dataset, paper, table, extra in PAPER:
            cfg = compose("flops", [f"backbone={backbone}", f"dataset={dataset}", *extra])
            value = model_gflops(cfg)
            rows.append({
                "model": "segmenter", "backbone": backbone, "dataset": dataset,
                "decoder_layers": cfg.model.decoder_layers, "crop_size": crop_size(cfg),
                "num_classes": cfg.dataset.num_classes, "gflops": round(value, 2),
                "paper_gflops": paper, "paper_table": table,
                "delta_pct": round(100 * (value / paper - 1), 2),
            })
            print(rows[-1], flush=True)
    out = Path(args.out)
    write_atomic(out, pd.DataFrame(rows).to_csv(index=False))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
