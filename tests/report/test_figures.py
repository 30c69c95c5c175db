"""Figures exist when their runs do, and are skipped with a warning when they do not."""

import logging

import pytest

from algm_cli.report import render_report
from algm_cli.report.figures import sweep_points
from algm_cli.report.load import load_runs

from .conftest import ALGM, BASELINE, PAPER_DIR

PNG = b"\x89PNG\r\n\x1a\n"
SYN = {"dataset": "synthetic", "backbone": "vit_t", "crop_size": "128"}


def add_sweep(runs):
    """Write a Fig. 4-style sweep (2 training x 3 inference taus), a tuned row, a baseline."""
    runs.add(BASELINE, **SYN, miou="50.0", ims="400", gflops="1.0")
    for train in ("0.85", "0.9"):
        for infer in ("0.8", "0.85", "0.9"):
            miou = 48.0 + 20 * (float(infer) - 0.8) + (float(train) - 0.85) * 10
            runs.add(ALGM, **SYN, train_clap_threshold=train, train_gbm_threshold=train,
                     clap_threshold=infer, gbm_threshold=infer, miou=f"{miou:.2f}",
                     gflops=f"{0.5 + float(infer) - 0.8:.2f}", ims="600")
    runs.add(ALGM, **SYN, train_clap_threshold="0.9", train_gbm_threshold="0.9",
             clap_threshold="0.87", gbm_threshold="0.87", tuned="True", miou="50.2",
             gflops="0.56", ims="650")
    runs.add(ALGM, **SYN, method="tome", clap_layer="", gbm_layers="", miou="47.0", gflops="0.7")


def test_all_three_figures_are_drawn(runs, tmp_path):
    add_sweep(runs)
    paths = render_report(runs.folder, PAPER_DIR, tmp_path / "out")
    figures = {p.name for p in paths if p.suffix == ".png"}
    assert figures == {"threshold_sweep__synthetic__segmenter_vit_t.png",
                       "algm_star__synthetic__segmenter_vit_t.png",
                       "pareto__synthetic__segmenter_vit_t.png"}
    for path in paths:
        assert path.is_file()
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == PNG and path.stat().st_size > 10_000
    index = (tmp_path / "out" / "report.md").read_text()
    assert "algm_star__synthetic__segmenter_vit_t.png" in index and "- none" in index


def test_sweep_points_place_auto_at_the_calibrated_tau(runs):
    runs.add(ALGM, **SYN)  # auto thresholds, tau_calibrated 0.87
    runs.add(ALGM, **SYN, clap_threshold="0.8", gbm_threshold="0.8")
    runs.add(ALGM, **SYN, clap_threshold="0.8", gbm_threshold="0.7")  # not on one axis: dropped
    points = sweep_points(load_runs(runs.folder).rows).sort_values("tau")
    assert list(points.tau) == [0.8, 0.87]
    assert set(points.line) == {"training τ = auto (calibrated)"}


def test_missing_runs_skip_figures_with_warnings(runs, tmp_path, caplog):
    runs.add(BASELINE, **SYN)
    with caplog.at_level(logging.WARNING, logger="algm_cli.report"):
        paths = render_report(runs.folder, PAPER_DIR, tmp_path / "out")
    assert not [p for p in paths if p.suffix == ".png"]
    text = caplog.text
    for name in ("threshold_sweep", "algm_star", "pareto"):
        assert f"figure {name} skipped" in text


@pytest.mark.parametrize("empty", [True, False])
def test_report_without_runs_still_renders_paper_tables(tmp_path, empty):
    folder = tmp_path / "runs"
    if not empty:
        folder.mkdir()
    paths = render_report(folder, PAPER_DIR, tmp_path / "out")
    assert (tmp_path / "out" / "tables" / "tab1.md") in paths
    assert "not run" in (tmp_path / "out" / "tables" / "tab1.md").read_text()


def test_sweep_point_takes_each_measure_from_the_latest_run_that_has_it(runs):
    point = dict(SYN, clap_threshold="0.8", gbm_threshold="0.8")
    runs.add(ALGM, **point, miou="40.0", gflops="1.0")
    runs.add(ALGM, **point, miou="41.0", gflops="")  # an eval-only rerun
    points = sweep_points(load_runs(runs.folder).rows)
    assert (len(points), points.miou.iloc[0], points.gflops.iloc[0]) == (1, 41.0, 1.0)
