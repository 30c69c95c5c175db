"""Tables: paper numbers beside the matching runs, deltas, `not run`, the latest run per cell."""

from pathlib import Path

import pytest

from algm_cli.report import build_report
from algm_cli.report.tables import latex_escape

from .conftest import ALGM, BASELINE, PAPER_DIR, RunWriter


def read_table(path: Path) -> dict[str, dict[str, str]]:
    """Parse a rendered Markdown table into {row label: {column: cell}}."""
    lines = [l for l in path.read_text().splitlines() if l.startswith("|")]
    split = [[c.strip() for c in l.strip("|").split("|")] for l in lines]
    header, body = split[0], split[2:]
    return {cells[0]: dict(zip(header, cells)) for cells in body}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("report")
    runs = RunWriter(tmp_path / "runs")
    runs.add(BASELINE, miou="45.0", ims="100", gflops="38.0")
    runs.add(ALGM, miou="40.0", ims="90", gflops="30.0")            # older 2x2 run: superseded
    newest = runs.add(ALGM, miou="46.0", ims="150", gflops="26.0")  # the 2x2 cell
    runs.add(ALGM, window="2x1", miou="46.3", ims="140", gflops="28.0", device="cpu x2")
    runs.add(ALGM, window="4x4", miou="44.0", ims="170", gflops="22.0")
    runs.add(ALGM, clap_threshold="0.7", gbm_threshold="0.7", miou="44.9", ims="190", gflops="21")
    runs.add(ALGM, clap_threshold="0.8", gbm_threshold="0.8", tuned="True", miou="45.4",
             ims="180", gflops="22.5")
    runs.add(ALGM, merge_value="random", reduce="False", miou="44.1", gflops="")
    runs.add(BASELINE, dataset="synthetic", miou="60.0", ims="500", gflops="0.50")
    runs.add(ALGM, dataset="synthetic", miou="61.5", ims="800", gflops="0.30")
    (runs.folder / "broken.csv").write_text("run_id,timestamp\n")
    paths, warnings = build_report(runs.folder, PAPER_DIR, tmp_path / "out")
    return {"paths": paths, "warnings": warnings, "tables": tmp_path / "out" / "tables",
            "newest": newest}


def test_tab5a_row_2x2_shows_latest_run_beside_paper(report):
    row = read_table(report["tables"] / "tab5a.md")["window 2x2"]
    assert (row["mIoU paper"], row["mIoU"], row["Δ mIoU"]) == ("46.4", "46.00", "-0.40")
    assert (row["GFLOPs paper"], row["GFLOPs"], row["Δ GFLOPs"]) == ("26.3", "26.00", "-0.30")
    assert (row["im/s paper"], row["im/s †"], row["Δ im/s †"]) == ("192", "150.0", "-42.0")
    assert (row["speed-up paper"], row["speed-up"]) == ("1.43x*", "1.50x")  # * derived
    assert row["runs"] == report["newest"] and row["device †"] == "NVIDIA H100 (duplicates)"


def test_missing_rows_read_not_run(report):
    table = read_table(report["tables"] / "tab5a.md")
    assert table["window 8x8"]["mIoU"] == "not run"
    assert table["window 8x8"]["mIoU paper"] == "37.2" and table["window 8x8"]["Δ mIoU"] == ""
    assert table["window 2x1"]["mIoU"] == "46.30"
    assert table["window 2x1"]["device †"] == "cpu x2 (duplicates)"


def test_ablation_and_sweep_runs_stay_out_of_main_table_cells(report):
    tab1 = read_table(report["tables"] / "tab1.md")
    assert tab1["Seg-S + ALGM"]["mIoU"] == "46.00"   # not the 4x4, 2x1 or tau=0.7 runs
    assert tab1["Seg-S + ALGM*"]["mIoU"] == "45.40"  # the tuned=true row
    assert tab1["Seg-S + ToMe"]["mIoU"] == "not run"
    assert tab1["Seg-T"]["mIoU"] == "not run" and tab1["Seg-T"]["mIoU paper"] == "38.1"


def test_measure_missing_from_a_run_reads_not_measured(report):
    row = read_table(report["tables"] / "tab6.md")["random token, no reduction"]
    assert (row["mIoU"], row["Δ mIoU"], row["GFLOPs"]) == ("44.10", "-0.30", "not measured")


def test_runs_on_another_dataset_get_their_own_table(report):
    tables = report["tables"]
    table = read_table(tables / "tab5a__synthetic.md")
    assert "mIoU paper" not in table["Baseline"]
    row = table["window 2x2"]
    assert (row["mIoU"], row["Δ mIoU vs baseline"]) == ("61.50", "+1.50")
    assert table["window 2x2"]["speed-up"] == "1.60x"
    assert table["window 4x4"]["mIoU"] == "not run"
    assert "reproduced on synthetic" in (tables / "tab5a__synthetic.md").read_text()
    assert not (tables / "supp_tab6__synthetic.md").exists()  # no ViT-L run on synthetic


def test_every_table_has_markdown_and_latex(report):
    names = {p.name for p in report["paths"]}
    for stem in ("tab1", "tab2a", "tab2b", "tab2c", "tab5a", "tab5b", "tab5c", "tab6",
                 "supp_tab4a", "supp_tab4b", "supp_tab4c", "supp_tab4d", "supp_tab4e",
                 "supp_tab4f", "supp_tab6"):
        assert {f"{stem}.md", f"{stem}.tex"} <= names
    tex = (report["tables"] / "tab5a.tex").read_text()
    assert r"\toprule" in tex and r"$\Delta$ mIoU" in tex and "not run" in tex


def test_broken_file_is_reported(report):
    assert any("broken.csv" in w for w in report["warnings"])


def test_latex_escape():
    assert latex_escape("a_b & 50% #1 {x}") == r"a\_b \& 50\% \#1 \{x\}"


def test_smoke_runs_are_marked(runs, tmp_path):
    runs.add(BASELINE, smoke="True")
    build_report(runs.folder, PAPER_DIR, tmp_path / "out", include_smoke=True)
    row = read_table(tmp_path / "out" / "tables" / "tab5a.md")["Baseline"]
    assert row["runs"] == "run001 (smoke)"


def test_single_network_tables_follow_the_runs_to_another_backbone(tmp_path):
    runs = RunWriter(tmp_path / "runs")
    tiny = {"dataset": "synthetic", "backbone": "vit_t"}
    runs.add(BASELINE, **tiny, miou="60.0", ims="500", gflops="0.50")
    runs.add(ALGM, **tiny, miou="61.5", ims="800", gflops="0.30")
    runs.add(ALGM, **tiny, window="4x4", miou="59.0", ims="900", gflops="0.25")
    runs.add(ALGM, dataset="synthetic", backbone="vit_l", gbm_layers="7", miou="70.0")
    build_report(runs.folder, PAPER_DIR, tmp_path / "out")
    tables = tmp_path / "out" / "tables"
    table = read_table(tables / "tab5a__synthetic__vit_t.md")
    assert table["window 2x2"]["mIoU"] == "61.50" and table["window 4x4"]["mIoU"] == "59.00"
    assert table["window 2x1"]["mIoU"] == "not run"
    assert table["Baseline"]["speed-up"] == "1.00x" and table["window 2x2"]["speed-up"] == "1.60x"
    assert "(Segmenter ViT-T)" in (tables / "tab5a__synthetic__vit_t.md").read_text()
    # ViT-L has one ALGM run but no baseline: a moved table needs two matched rows
    assert not (tables / "tab5a__synthetic__vit_l.md").exists()
    # the synthetic rows are not Seg-S runs: the ViT-S variant has nothing to show
    assert not (tables / "tab5a__synthetic.md").exists()
