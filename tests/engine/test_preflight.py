"""Preflight of `algm run`: bad values, folders and data fail in one line before any stage runs."""

import os
import shutil
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_module

from algm_cli.data import DatasetError
from algm_cli.data.synthetic import SyntheticSpec, generate
from algm_cli.engine.preflight import preflight, record_data_identity
from algm_cli.engine.run import run
from algm_cli.engine.setup import ConfigError, train_key
from algm_cli.engine.spec import resolve_spec
from algm_cli.models.schedule import NO_MERGE

from ..data.fakes import FAKES, write_both


# the generated files read through the ADE20K loader: no regeneration for another spec
ADE_SMALL = ["dataset=ade20k", "protocol=quick", "dataset.crop_size=32", "dataset.eval_short_side=32",
             "dataset.eval_stride=16", "dataset.train_scale=[64,32]"]


def cfg_for(tmp, *overrides, root):
    with initialize_config_module("algm_cli.conf", version_base="1.3"):
        return compose("run", [
            "smoke=true", f"results_dir={tmp / 'results'}", f"work_dir={tmp / 'work'}",
            *ADE_SMALL, f"dataset.root={root}", *overrides,
        ])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("preflight")
    generate(tmp / "synthetic", SyntheticSpec(train=4, val=2))
    return tmp


def copy_data(data, tmp):
    """Return a private copy of the tiny synthetic dataset (tests that break it)."""
    root = tmp / "copy"
    shutil.copytree(data / "synthetic", root)
    return root / "ADEChallengeData2016"


@pytest.mark.parametrize("override, expected", [
    ("merge.window=[2]", "merge.window=[2]: expected two window sizes [kh, kw] >= 1"),
    ("merge.window=[0,2]", "merge.window=[0,2]: expected two window sizes [kh, kw] >= 1"),
    ("train.batch_size=0", "train.batch_size=0: expected an integer >= 1"),
    ("train.iterations=-5", "train.iterations=-5: expected an integer >= 1"),
    ("train.iterations=abc", "train.iterations='abc': expected an integer >= 1"),
    ("train.lr=0", "train.lr=0: expected a number > 0"),
    ("eval.images=0", "eval.images=0: expected an integer >= 1"),
    ("tau=1.5", "tau=1.5: a cosine-similarity threshold must lie in [-1, 1]"),
    ("eval_tau=x", "eval_tau='x': expected auto, released or a number in [-1, 1]"),
    ("merge.train_gbm_threshold=-2", "merge.train_gbm_threshold=-2: a cosine-similarity"),
])
def test_bad_values_name_their_key_before_any_stage(data, tmp_path, override, expected):
    with pytest.raises(ConfigError) as err:
        run(cfg_for(tmp_path, override, root=data / "synthetic"))
    assert str(err.value).startswith(expected)
    assert not (tmp_path / "work" / "calibration").exists()
    assert not (tmp_path / "work" / "checkpoints").exists()


@pytest.mark.parametrize("key", ["results_dir", "work_dir"])
def test_unwritable_folders_are_named(data, tmp_path, key):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=rf"^{key}=.*a_file/sub: not writable"):
        run(cfg_for(tmp_path, f"{key}={blocker / 'sub'}", root=data / "synthetic"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_results_dir_is_named(data, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    with pytest.raises(ConfigError, match="results_dir=.*ro: not writable"):
        run(cfg_for(tmp_path, f"results_dir={folder}", root=data / "synthetic"))


def test_empty_validation_split_fails_before_calibration(data, tmp_path):
    ade = copy_data(data, tmp_path)
    for sub in ("images", "annotations"):
        for path in (ade / sub / "validation").iterdir():
            path.unlink()
    with pytest.raises(DatasetError, match="no images"):
        run(cfg_for(tmp_path, root=ade.parent))
    assert not (tmp_path / "work" / "checkpoints").exists()


def test_corrupt_validation_image_is_named_before_calibration(data, tmp_path):
    ade = copy_data(data, tmp_path)
    bad = sorted((ade / "images" / "validation").iterdir())[-1]
    bad.write_bytes(b"truncated")
    cfg = cfg_for(tmp_path, root=ade.parent)
    with pytest.raises(DatasetError, match=f"cannot read image {bad}"):
        preflight(cfg, list(cfg.stages))
    with pytest.raises(DatasetError, match="cannot read image"):
        run(cfg)
    assert not (tmp_path / "work" / "calibration").exists()


def test_missing_cityscapes_validation_label_fails_before_training(tmp_path):
    fake = FAKES["cityscapes"]
    root = tmp_path / "cityscapes"
    write_both(fake, root, train=2, val=2)
    fake.paths(root, "val", 1)[1].unlink()
    with initialize_config_module("algm_cli.conf", version_base="1.3"):
        cfg = compose("run", [
            "dataset=cityscapes", f"dataset.root={root}", "smoke=true", "merge=none",
            "dataset.crop_size=32", "dataset.eval_short_side=32", "dataset.eval_stride=16",
            "dataset.train_scale=[64,32]", f"results_dir={tmp_path / 'r'}",
            f"work_dir={tmp_path / 'w'}"])
    with pytest.raises(DatasetError, match="bremen_000001_000019"):
        run(cfg)
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_data_fingerprint_enters_the_trained_model_identity(data, tmp_path):
    ade = copy_data(data, tmp_path)
    keys = []
    for step in range(2):
        cfg = cfg_for(tmp_path, root=ade.parent)
        checked = preflight(cfg, list(cfg.stages))
        record_data_identity(cfg, checked)
        keys.append((train_key(resolve_spec(cfg), NO_MERGE), checked.fingerprints["train"]))
        label = sorted((ade / "annotations" / "training").iterdir())[0]
        label.write_bytes(label.read_bytes() + b"\0")  # a fixed / replaced data copy
    assert keys[0][0] != keys[1][0] and keys[0][1] != keys[1][1]
    assert keys[0][1].startswith("8f-")  # 4 images + 4 labels


@pytest.mark.slow
def test_cli_bad_value_is_one_line_with_exit_2(data, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "algm_cli.cli", "run", "smoke=true", "train.iterations=abc",
         *ADE_SMALL, f"dataset.root={data / 'synthetic'}", f"results_dir={tmp_path / 'r'}",
         f"work_dir={tmp_path / 'w'}"], capture_output=True, text=True, cwd=tmp_path, env=env,
        timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip() == ("algm run: error: train.iterations='abc': expected an integer "
                                  ">= 1")


def test_smoke_rows_default_to_their_own_folder():
    with initialize_config_module("algm_cli.conf", version_base="1.3"):
        assert compose("run", ["smoke=true"]).results_dir == "results/smoke"
        assert compose("run", []).results_dir == "results/runs"
        assert compose("run", ["smoke=true", "results_dir=/x"]).results_dir == "/x"


@pytest.mark.slow
def test_a_new_data_copy_retrains_and_the_row_records_it(data, tmp_path):
    ade = copy_data(data, tmp_path)
    first = run(cfg_for(tmp_path, "merge=none", "stages=[train,eval]", root=ade.parent))
    label = sorted((ade / "annotations" / "training").iterdir())[1]
    label.write_bytes(label.read_bytes() + b"\0")
    second = run(cfg_for(tmp_path, "merge=none", "stages=[train,eval]", root=ade.parent))
    assert second is not None and second["run_id"] != first["run_id"]  # not skipped as finished
    assert second["checkpoint"] != first["checkpoint"]  # retrained, old model not reused
    assert second["data_train"] != first["data_train"]
    assert second["data_val"] == first["data_val"] and first["data_val"].startswith("4f-")
