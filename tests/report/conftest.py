"""Fixtures for the report tests: run rows written the way the runner writes them."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAPER_DIR = ROOT / "results" / "paper"
COLUMNS = [
    "run_id", "timestamp", "git_commit", "device", "experiment", "model", "backbone", "decoder",
    "dataset", "method", "setting", "window", "clap_layer", "gbm_layers", "modules", "placement",
    "merge_value", "reduce", "metric", "train_clap_threshold", "train_gbm_threshold",
    "clap_threshold", "gbm_threshold", "tome_r", "tuned", "crop_size", "seed", "smoke", "miou",
    "ims", "throughput_mode", "gflops", "kept_clap", "kept_final", "tau_calibrated", "status",
]
ALGM = {"model": "segmenter", "backbone": "vit_s", "decoder": "mask", "dataset": "ade20k",
        "method": "algm", "setting": "training", "window": "2x2", "clap_layer": "1",
        "gbm_layers": "5", "modules": "clap+gbm", "placement": "between", "merge_value": "mean",
        "reduce": "True", "metric": "tokens", "train_clap_threshold": "auto",
        "train_gbm_threshold": "auto", "clap_threshold": "auto", "gbm_threshold": "auto",
        "tuned": "False", "crop_size": "512", "seed": "0", "smoke": "False", "miou": "46.0",
        "ims": "150.0", "throughput_mode": "duplicates", "gflops": "26.0", "kept_clap": "0.8",
        "kept_final": "0.6", "tau_calibrated": "0.87", "status": "ok", "device": "NVIDIA H100",
        "git_commit": "abc1234", "experiment": ""}
BASELINE = {**ALGM, "method": "none", "clap_layer": "", "gbm_layers": "", "modules": "-",
            "train_clap_threshold": "", "train_gbm_threshold": "", "clap_threshold": "",
            "gbm_threshold": "", "kept_clap": "", "kept_final": "", "tau_calibrated": ""}


class RunWriter:
    """Writes one CSV per run under a folder, with increasing timestamps."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.count = 0
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, base: dict, **changes) -> str:
        """Write one run row (base updated by changes); return its run id."""
        self.count += 1
        row = {c: "" for c in COLUMNS}
        row.update(base)
        row.update({"run_id": f"run{self.count:03d}",
                    "timestamp": f"2026-11-24T10:00:{self.count:02d}"})
        row.update({k: str(v) for k, v in changes.items()})
        with (self.folder / f"{row['run_id']}.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, COLUMNS)
            writer.writeheader()
            writer.writerow(row)
        return row["run_id"]


@pytest.fixture
def runs(tmp_path) -> RunWriter:
    """Return a writer of run rows under tmp_path/runs."""
    return RunWriter(tmp_path / "runs")
