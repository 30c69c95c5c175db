"""`algm analyze`: outputs outside the committed results/, stale files removed, smoke, --help."""

import os
import subprocess
import sys

from hydra import compose, initialize_config_module

from algm_cli.analysis.cli import image_count, out_dirs


def cfg_for(*overrides):
    with initialize_config_module("algm_cli.conf", version_base="1.3"):
        return compose("analyze", list(overrides))


def test_default_outputs_are_outside_the_committed_results():
    cfg = cfg_for()
    assert not str(cfg.out_dir).startswith("results") and not str(cfg.csv_dir).startswith("results")


def test_an_analysis_removes_only_its_own_previous_files(tmp_path):
    for name in ("merges_old_image.png", "merges_grid.png", "similarity_local.png", "other.png"):
        (tmp_path / name).write_bytes(b"png")
    out_dirs(cfg_for("analysis=merges", f"out_dir={tmp_path}", f"csv_dir={tmp_path}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.png", "similarity_local.png"]


def test_smoke_is_a_key_and_shrinks_the_image_count():
    assert image_count(cfg_for("analysis=similarity", "smoke=true")) == 2
    assert image_count(cfg_for("analysis=similarity")) == 64


def test_help_names_the_command_and_lists_the_analyses(tmp_path):
    out = subprocess.run([sys.executable, "-m", "algm_cli.cli", "analyze", "--help"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0
    assert out.stdout.startswith("usage: algm analyze <analysis> [key=value ...]")
    for word in ("similarity", "merges", "predictions", "checkpoint", "out_dir", "smoke"):
        assert word in out.stdout
