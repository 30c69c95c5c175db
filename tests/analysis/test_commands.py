"""The three `algm analyze` commands end to end on a tiny model and a tiny synthetic dataset."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module
from PIL import Image

from algm_cli.analysis.cli import analyze, positional_to_override
from algm_cli.analysis.merges import group_colours, overlay_groups
from algm_cli.analysis.predictions import colorize, default_palette, palette_for
from algm_cli.data.synthetic import SyntheticSpec, generate
from algm_cli.models.segmenter import Segmenter

DPI = 120


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Return (tmp folder, checkpoint path) with a tiny synthetic set and a tiny saved model."""
    tmp = tmp_path_factory.mktemp("analysis")
    generate(tmp / "synthetic", SyntheticSpec(train=2, val=2))
    torch.manual_seed(0)
    model = Segmenter("vit_t", 8, "mask", 64)
    path = tmp / "tiny.pt"
    torch.save({"model": model.state_dict()}, path)
    return tmp, path


def cfg_for(tmp, *overrides):
    with initialize_config_module("algm_cli.conf", version_base="1.3"):
        return compose("analyze", [
            f"dataset.root={tmp / 'synthetic'}", f"out_dir={tmp / 'figures'}",
            f"csv_dir={tmp / 'tables'}", f"work_dir={tmp / 'work'}", "device=cpu", "images=2",
            *overrides,
        ])


def png_size(path):
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as img:
        return img.size  # (width, height)


def assert_size(path, width_in, height_in):
    width, height = png_size(path)
    assert abs(width - width_in * DPI) <= 1 and abs(height - height_in * DPI) <= 1


def test_similarity_writes_the_tidy_csv_and_both_figures(setup):
    tmp, ckpt = setup
    paths = analyze(cfg_for(tmp, "analysis=similarity", f"checkpoint={ckpt}"))
    table = pd.read_csv(paths["csv"])
    for column in ("analysis", "layer", "window", "pair_type", "mean", "std", "count", "model",
                   "backbone", "dataset", "checkpoint"):
        assert column in table.columns
    # 128 x 160 images: an 8 x 10 grid, so 16 and 32 do not fit
    assert sorted(table[table.analysis == "local"].window.unique()) == [2, 4, 8]
    assert sorted(table[table.analysis == "global"].layer.unique()) == list(range(1, 13))
    assert table["window"][table.analysis == "global"].isna().all()
    assert (table["count"] > 0).all() and table["mean"].between(-1, 1).all()
    assert set(table.dataset) == {"synthetic"} and set(table.backbone) == {"vit_t"}
    assert_size(paths["local"], 6, 4.2)
    assert_size(paths["global"], 6, 4.2)


def test_merges_draws_one_png_per_image_and_a_grid(setup):
    tmp, ckpt = setup
    paths = analyze(cfg_for(tmp, "analysis=merges", f"checkpoint={ckpt}", "calibration_images=2"))
    names = [k for k in paths if k != "grid"]
    assert len(names) == 2 and all(paths[n].name == f"merges_{n}.png" for n in names)
    aspect = 128 / 160
    for n in names:
        assert_size(paths[n], 4 * 3.4, 3.4 * aspect + 0.6)
    assert_size(paths["grid"], 4 * 3.4, 2 * (3.4 * aspect + 0.6) + 0.2)
    assert list((tmp / "work" / "calibration").glob("*.json"))  # tau=auto was calibrated


def test_predictions_draws_the_comparison_grid(setup):
    tmp, ckpt = setup
    paths = analyze(cfg_for(tmp, "analysis=predictions", f"checkpoint={ckpt}", "tau=0.5"))
    assert paths["predictions"].name == "predictions.png"
    assert_size(paths["predictions"], 4 * 3.0, 2 * (3.0 * 128 / 160 + 0.4) + 0.5)


def test_commands_that_need_a_checkpoint_say_so(setup):
    tmp, _ = setup
    from algm_cli.engine.setup import ConfigError

    for what in ("merges", "predictions"):
        with pytest.raises(ConfigError, match="needs checkpoint="):
            analyze(cfg_for(tmp, f"analysis={what}"))
    with pytest.raises(ConfigError, match="expected one of"):
        analyze(cfg_for(tmp, "analysis=nonsense"))


def test_positional_word_becomes_the_analysis_override():
    assert positional_to_override(["algm analyze", "merges", "images=2"]) == [
        "algm analyze", "analysis=merges", "images=2"]
    assert positional_to_override(["algm analyze", "images=2"]) == ["algm analyze", "images=2"]
    assert positional_to_override(["algm analyze", "--help"]) == ["algm analyze", "--help"]


def test_command_line_runs_and_reports_errors_in_one_line(setup):
    tmp, ckpt = setup
    common = [f"dataset.root={tmp / 'synthetic'}", f"out_dir={tmp / 'cli_figures'}",
              f"csv_dir={tmp / 'cli_tables'}", "images=1", "device=cpu",
              f"hydra.run.dir={tmp / 'hydra'}", "windows=[2]"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "algm_cli.analysis.cli"]
    ok = subprocess.run([*cmd, "similarity", *common], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert (tmp / "cli_tables" / "similarity.csv").is_file()
    bad = subprocess.run([*cmd, "merges", *common], capture_output=True, text=True, env=env)
    assert bad.returncode == 2
    assert "algm analyze: error:" in bad.stderr and "Traceback" not in bad.stderr


def test_group_overlay_tints_merged_patches_only():
    index = torch.tensor([[0, 0, 1], [2, 3, 3]])
    colours, merged = group_colours(index)
    assert merged.tolist() == [[True, True, False], [False, True, True]]
    assert np.allclose(colours[0, 0], colours[0, 1]) and np.allclose(colours[1, 1], colours[1, 2])
    image = np.full((32, 48, 3), 100, dtype=np.uint8)
    out = overlay_groups(image, index)
    assert out.shape == (32, 48, 3)
    # the inside of the single patches (away from the outlines) keeps the image's pixels
    assert np.allclose(out[4:12, 36:44], 100 / 255) and np.allclose(out[20:28, 4:12], 100 / 255)
    assert not np.allclose(out[4:12, 4:12], 100 / 255)


def test_palette_is_deterministic_and_ignore_is_black():
    a, b = default_palette(8), default_palette(8)
    assert a.shape == (8, 3) and (a == b).all() and len({tuple(c) for c in a}) == 8
    big = default_palette(150)
    assert big.shape == (150, 3) and len({tuple(c) for c in big}) == 150
    assert (palette_for(object(), 8) == a).all()
    rgb = colorize(torch.tensor([[0, 255], [7, 3]]), a)
    assert (rgb[0, 1] == 0).all() and (rgb[0, 0] == a[0]).all() and (rgb[1, 0] == a[7]).all()


def test_prepare_resizes_and_pads_with_ignore():
    from algm_cli.analysis.cli import prepare

    sample = {"image": torch.full((3, 100, 150), 200, dtype=torch.uint8),
              "label": torch.ones(100, 150, dtype=torch.long), "name": "x"}
    item = prepare(sample, short_side=120)  # 120 x 180 -> padded to 128 x 192
    assert item.image.shape == (1, 3, 128, 192) and item.display.shape == (128, 192, 3)
    assert item.label.shape == (128, 192)
    assert (item.label[:120, :180] == 1).all() and (item.label[120:] == 255).all()
    assert (item.image[..., 120:, :] == 0).all() and (item.display[120:] == 0).all()
