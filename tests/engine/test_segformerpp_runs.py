"""`algm run` for Segformer++'s extras: training memory/speed columns, downsampling, pose."""

import pandas as pd
import pytest
from hydra import compose, initialize_config_module

from algm_cli.data.synthetic import SyntheticSpec, generate
from algm_cli.engine.run import run
from algm_cli.engine.setup import ConfigError


def cfg_for(tmp_path, *overrides):
    with initialize_config_module("algm_cli.conf", version_base="1.3"):
        return compose("run", [
            "smoke=true", f"results_dir={tmp_path / 'results'}", f"work_dir={tmp_path / 'work'}",
            *overrides,
        ])


@pytest.fixture
def tiny_synthetic(tmp_path):
    generate(tmp_path / "synthetic", SyntheticSpec(train=4, val=2))
    return tmp_path


@pytest.mark.slow
def test_training_with_merging_records_memory_and_speed_then_downsampling_reuses_weights(
        tiny_synthetic):
    tmp = tiny_synthetic
    root = f"dataset.root={tmp / 'synthetic'}"
    trained = run(cfg_for(tmp, "model=segformer", "merge=segformerpp_hq",
                          "merge.during_training=true", root, "stages=[train,eval]"))
    assert trained["setting"] == "training" and trained["train_peak_mem_mb"] > 0
    assert trained["train_ims"] > 0 and trained["train_mem_method"] == "tensor_storage_peak"
    down = run(cfg_for(tmp, "model=segformer", "merge=downsample", "merge.setting=0.5", root,
                       "stages=[train,eval,flops]"))
    base = run(cfg_for(tmp, "model=segformer", "merge=none", root, "stages=[train,flops]"))
    assert down["checkpoint"] == base["checkpoint"]  # applied to the trained baseline
    assert down["reduction"] == 0.5 and down["kept_final"] == 0.25
    assert down["gflops"] < 0.4 * base["gflops"]
    table = pd.read_csv(next((tmp / "results").glob(f"{trained['run_id']}.csv")))
    assert {"train_peak_mem_mb", "train_ims"} <= set(table.columns)


@pytest.mark.slow
def test_pose_run_end_to_end_with_merging(tmp_path):
    row = run(cfg_for(tmp_path, "task=pose", "model=segformer", "merge=segformerpp_hq",
                      "dataset.train_images=4", "dataset.val_images=3"))
    assert row["task"] == "pose" and row["dataset"] == "synthetic_pose"
    for key in ("pck05", "pck10", "pck20", "oks_ap", "ims", "gflops", "train_peak_mem_mb"):
        assert row[key] is not None and row[key] >= 0, key
    assert row["eval_images"] == 2  # smoke: 2 crops


@pytest.mark.parametrize("overrides, expected", [
    (["task=pose", "model=segmenter"], "task=pose needs model=segformer"),
    (["task=pose", "model=segformer", "dataset=synthetic"], "has no keypoints"),
    (["model=segformer", "dataset=synthetic_pose"], "add task=pose"),
    (["model=segmenter", "merge=downsample"], "merge=downsample does not apply"),
])
def test_task_mismatches_are_config_errors(tmp_path, overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        run(cfg_for(tmp_path, *overrides))
