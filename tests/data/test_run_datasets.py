"""`algm run dataset=<name> dataset.root=<fake copy>` completes for every real dataset layout."""

from __future__ import annotations

import pandas as pd
import pytest
from hydra import compose, initialize_config_module

from algm_cli.engine.run import run

from .fakes import FAKES, write_both


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAKES))
def test_short_run_on_a_fake_copy_writes_a_row(name, tmp_path):
    root = tmp_path / name
    write_both(FAKES[name], root, train=3, val=2)
    # the dataset's own loader and label rules, at a small crop so the check stays fast
    with initialize_config_module("algm_cli.conf", version_base="1.3"):
        cfg = compose("run", [
            f"dataset={name}", f"dataset.root={root}", "smoke=true", "protocol=quick",
            "dataset.crop_size=64", "dataset.eval_short_side=64", "dataset.eval_stride=48",
            "dataset.train_scale=[128,64]", f"results_dir={tmp_path / 'results'}",
            f"work_dir={tmp_path / 'work'}",
        ])
    row = run(cfg)
    assert row["dataset"] == name and row["status"] == "ok"
    table = pd.read_csv(next((tmp_path / "results").glob("*.csv")))
    assert 0 <= table.miou[0] <= 100 and table.gflops[0] > 0
