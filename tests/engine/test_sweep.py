"""`algm sweep`: presets expand to their runs; a rerun skips finished runs (resume)."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from algm_cli.data.synthetic import SyntheticSpec, generate
from algm_cli.engine.setup import ConfigError
from algm_cli.engine.sweep import plan


def sweep(tmp_path, *args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "algm_cli.cli", "sweep", *args, "backbone=vit_t", "smoke=true",
         "stages=[eval]", f"results_dir={tmp_path / 'r'}", f"work_dir={tmp_path / 'w'}",
         f"dataset.root={tmp_path / 'syn'}", f"hydra.sweep.dir={tmp_path / 'multirun'}"],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)


@pytest.mark.slow
def test_user_example_sweeps_tau_and_rerun_skips(tmp_path):
    generate(tmp_path / "syn", SyntheticSpec(train=2, val=2))
    out = sweep(tmp_path, "tau=0.80,0.85,0.90")
    assert out.returncode == 0, out.stderr[-2000:]
    rows = pd.concat(pd.read_csv(f) for f in (tmp_path / "r").glob("*.csv"))
    assert sorted(rows.clap_threshold) == [0.80, 0.85, 0.90]
    again = sweep(tmp_path, "tau=0.80,0.85,0.90")
    assert again.stdout.count("already finished") == 3


@pytest.mark.slow
def test_table5b_preset_expands_to_its_five_rows(tmp_path):
    generate(tmp_path / "syn", SyntheticSpec(train=2, val=2))
    out = sweep(tmp_path, "+experiment=table5b", "tau=0.9")
    assert out.returncode == 0, out.stderr[-2000:]
    rows = pd.concat(pd.read_csv(f) for f in (tmp_path / "r").glob("*.csv"))
    got = sorted(zip(rows.modules, rows.gbm_layers.fillna("").astype(str)))
    assert got == [("clap", ""), ("clap+gbm", "5"), ("gbm", "1"), ("gbm", "5"), ("gbm+gbm", "1;5")]
    assert set(rows.experiment) == {"table5b"}


def test_dry_run_prints_one_line_per_run_and_runs_nothing(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "algm_cli.cli", "sweep", "+experiment=table1", "dataset=ade20k",
         "dry_run=true", f"results_dir={tmp_path / 'r'}"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [l for l in out.stdout.splitlines() if l.startswith("algm ")]
    assert len(lines) == 30
    assert any(l.startswith("algm run +experiment=table1 dataset=ade20k")
               and l.endswith("model=setr backbone=vit_l merge=algm") for l in lines)
    assert sum(l.startswith("algm tune ") for l in lines) == 6
    assert not (tmp_path / "r").exists()


def test_run_list_preset_needs_one_of_its_datasets():
    with pytest.raises(ConfigError, match="coco_stuff10k, cityscapes, pascal_context"):
        plan(["+experiment=table2"])
