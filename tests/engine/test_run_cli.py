"""`algm run` end to end on tiny data: the row, resume/skip, and clear errors for bad input."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module
from PIL import Image

from algm_cli.data.synthetic import SyntheticSpec, generate
from algm_cli.engine.run import run

METRICS = ["miou", "ims", "gflops", "kept_clap", "kept_final", "tau_calibrated"]


def cfg_for(tmp_path, *overrides):
    with initialize_config_module("algm_cli.conf", version_base="1.3"):
        return compose("run", [
            "smoke=true", f"results_dir={tmp_path / 'results'}", f"work_dir={tmp_path / 'work'}",
            f"dataset.root={tmp_path / 'synthetic'}", *overrides,
        ])


@pytest.fixture
def tiny_synthetic(tmp_path):
    generate(tmp_path / "synthetic", SyntheticSpec(train=4, val=2))
    return tmp_path


def test_smoke_run_writes_one_row_with_every_metric_and_skips_on_rerun(tiny_synthetic, capsys):
    tmp = tiny_synthetic
    row = run(cfg_for(tmp))
    files = list((tmp / "results").glob("*.csv"))
    assert len(files) == 1
    table = pd.read_csv(files[0])
    assert len(table) == 1 and table.status[0] == "ok"
    for key in METRICS:
        assert pd.notna(table[key][0]), key
    assert table.method[0] == "algm" and table.backbone[0] == "vit_t"
    assert row["run_id"] == table.run_id[0]
    assert run(cfg_for(tmp)) is None  # finished: skipped
    assert "already finished" in capsys.readouterr().out
    assert run(cfg_for(tmp, "force=true")) is not None


def test_direct_setting_reuses_the_baseline_checkpoint(tiny_synthetic):
    tmp = tiny_synthetic
    base = run(cfg_for(tmp, "merge=none"))
    direct = run(cfg_for(tmp, "merge.during_training=false", "stages=[calibrate,train,eval]"))
    assert direct["setting"] == "direct" and base["setting"] == "training"
    assert direct["checkpoint"] == base["checkpoint"]
    assert "final_loss" in direct  # the train stage found the finished checkpoint


def test_inference_only_sweep_reuses_the_trained_checkpoint(tiny_synthetic):
    tmp = tiny_synthetic
    a = run(cfg_for(tmp, "merge.clap_threshold=0.9", "merge.gbm_threshold=0.9",
                    "merge.train_clap_threshold=0.8", "merge.train_gbm_threshold=0.8",
                    "stages=[train,eval]"))
    b = run(cfg_for(tmp, "merge.clap_threshold=0.5", "merge.gbm_threshold=0.5",
                    "merge.train_clap_threshold=0.8", "merge.train_gbm_threshold=0.8",
                    "stages=[train,eval]"))
    assert a["checkpoint"] == b["checkpoint"] and a["run_id"] != b["run_id"]


def test_tau_sets_every_threshold(tiny_synthetic):
    row = run(cfg_for(tiny_synthetic, "tau=0.7", "stages=[eval]"))
    assert row["clap_threshold"] == row["gbm_threshold"] == row["train_clap_threshold"] == 0.7


def write_fake_ade(root, label_value=3, corrupt=False):
    for split in ("training", "validation"):
        (root / "ADEChallengeData2016/images" / split).mkdir(parents=True)
        (root / "ADEChallengeData2016/annotations" / split).mkdir(parents=True)
        img = root / "ADEChallengeData2016/images" / split / "a.jpg"
        if corrupt:
            img.write_bytes(b"not an image")
        else:
            Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(img)
        Image.fromarray(np.full((40, 48), label_value, np.uint8)).save(
            root / "ADEChallengeData2016/annotations" / split / "a.png")


ADE_SMALL = ["dataset=ade20k", "protocol=quick", "dataset.crop_size=32", "dataset.eval_short_side=32",
             "dataset.eval_stride=16", "dataset.train_scale=[64,32]", "stages=[train,eval]",
             "merge=none"]


@pytest.mark.parametrize("case, expected", [
    ("missing", "missing folder"),
    ("corrupt", "cannot read image"),
    ("label", "outside 0..149"),
])
def test_bad_datasets_give_clear_errors(tmp_path, case, expected):
    root = tmp_path / "ade"
    if case == "corrupt":
        write_fake_ade(root, corrupt=True)
    elif case == "label":
        write_fake_ade(root, label_value=200)
    with pytest.raises(ValueError, match=expected):
        run(cfg_for(tmp_path, *ADE_SMALL, f"dataset.root={root}"))


def test_checkpoint_that_does_not_fit_is_reported(tiny_synthetic):
    path = tiny_synthetic / "other.pt"
    torch.save({"model": {"encoder.cls_token": torch.zeros(1, 1, 7)}}, path)
    with pytest.raises(ValueError, match="does not fit the model"):
        run(cfg_for(tiny_synthetic, f"checkpoint={path}", "stages=[eval]", "merge=none"))


def test_threshold_out_of_range_is_reported(tiny_synthetic):
    with pytest.raises(ValueError, match=r"merge.clap_threshold=1.5: .* \[-1, 1\]"):
        run(cfg_for(tiny_synthetic, "merge.clap_threshold=1.5", "stages=[eval]"))


def cli(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "algm_cli.cli", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


@pytest.mark.slow
def test_cli_errors_are_one_line_without_traceback(tiny_synthetic):
    out = cli("run", "backbone=vit_x", cwd=tiny_synthetic)
    assert out.returncode != 0 and "Could not find 'backbone/vit_x'" in out.stderr
    assert "Traceback" not in out.stderr
    out = cli("run", "smoke=true", "merge.gbm_threshold=7", f"dataset.root={tiny_synthetic / 'synthetic'}",
              cwd=tiny_synthetic)
    assert out.returncode == 2 and "algm run: error: merge.gbm_threshold=7" in out.stderr
    assert "Traceback" not in out.stderr
    out = cli("run", "--help", cwd=tiny_synthetic)
    merge_line = next(line for line in out.stdout.splitlines() if line.startswith("merge: "))
    assert {"algm", "clap_only", "gbm_only", "none", "tome"} <= set(merge_line[7:].split(", "))
