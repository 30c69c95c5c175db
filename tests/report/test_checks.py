"""`algm report` input checks: impossible values are invalid rows, smoke rows stay out, and a
missing or empty runs_dir is an error (exit 2) instead of blanked tables."""

import sys

import pytest

from algm_cli.report import build_report
from algm_cli.report.cli import main as report_main
from algm_cli.report.load import load_runs

from .conftest import ALGM, BASELINE, PAPER_DIR, RunWriter


@pytest.mark.parametrize("column, value, expected", [
    ("miou", "1e308", "impossible miou 1e+308 (expected [0, 100])"),
    ("miou", "-0.5", "impossible miou -0.5 (expected [0, 100])"),
    ("miou", "100.5", "impossible miou 100.5 (expected [0, 100])"),
    ("ims", "0", "impossible ims 0 (expected > 0)"),
    ("gflops", "-2", "impossible gflops -2 (expected > 0)"),
    ("kept_final", "1.5", "impossible kept_final 1.5 (expected [0, 1])"),
])
def test_impossible_values_make_the_row_invalid(runs, column, value, expected):
    runs.add(ALGM, **{column: value})
    loaded = load_runs(runs.folder)
    assert loaded.rows.empty
    assert loaded.warnings == [f"run001.csv line 2: {expected}; row skipped"]


def test_plausible_edge_values_are_kept(runs):
    runs.add(ALGM, miou="0", kept_final="1", ims="0.01", gflops="")
    assert len(load_runs(runs.folder).rows) == 1


def test_smoke_rows_are_left_out_unless_included(runs, tmp_path):
    runs.add(BASELINE, miou="45.0")
    runs.add(ALGM, smoke="True", miou="1.76")
    loaded = load_runs(runs.folder, include_smoke=False)
    assert list(loaded.rows.miou) == [45.0]
    assert loaded.warnings == ["1 smoke=true row(s) left out (include_smoke=true shows them)"]
    assert len(load_runs(runs.folder, include_smoke=True).rows) == 2
    _, warnings = build_report(runs.folder, PAPER_DIR, tmp_path / "out")
    assert warnings[0].startswith("1 smoke=true row(s) left out")


def report_cli(monkeypatch, tmp_path, *args):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["algm report", f"paper_dir={PAPER_DIR}",
                                      f"out_dir={tmp_path / 'out'}", *args])
    with pytest.raises(SystemExit) as code:
        report_main()
    return code.value.code


def test_missing_runs_dir_is_an_error(monkeypatch, tmp_path, capsys):
    assert report_cli(monkeypatch, tmp_path, f"runs_dir={tmp_path / 'typo'}") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"algm report: error: runs_dir={tmp_path / 'typo'}: no such folder")
    assert len(err.splitlines()) == 1 and not (tmp_path / "out").exists()


def test_runs_dir_without_valid_rows_is_an_error(monkeypatch, tmp_path, capsys):
    RunWriter(tmp_path / "runs").add(BASELINE, smoke="True")
    assert report_cli(monkeypatch, tmp_path, f"runs_dir={tmp_path / 'runs'}") == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"algm report: error: runs_dir={tmp_path / 'runs'}: no valid run rows (1 "
                   "smoke=true row(s) left out (include_smoke=true shows them)); nothing "
                   "rewritten")
    assert not (tmp_path / "out").exists()
