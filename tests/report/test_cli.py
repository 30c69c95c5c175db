"""`algm report` on the command line: tables and figures from a folder of run rows."""

import os
import subprocess
import sys

import pytest

from .conftest import ALGM, BASELINE, PAPER_DIR


@pytest.mark.slow
def test_report_command_writes_tables_figures_and_index(runs, tmp_path):
    runs.add(BASELINE, miou="45.0", ims="100", gflops="38.6")
    runs.add(ALGM, miou="46.0", ims="140", gflops="26.0")
    (runs.folder / "broken.csv").write_text("run_id,timestamp\nonly-one-field\n")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "algm_cli.cli", "report", f"runs_dir={runs.folder}",
         f"paper_dir={PAPER_DIR}", f"out_dir={out}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert "broken.csv" in result.stdout  # the bad file is reported, not averaged in
    table = (out / "tables" / "tab1.md").read_text()
    seg_s = next(line for line in table.splitlines() if line.startswith("| Seg-S + ALGM "))
    assert "46.0" in seg_s and "45.3" in (out / "tables" / "tab1.md").read_text()
    assert (out / "tables" / "tab1.tex").is_file() and (out / "report.md").is_file()
    assert list((out / "figures").glob("pareto__ade20k__segmenter_vit_s.png"))
