"""Issue 17 tables: own-baseline (Tab. 3), throughput targets (supp. Tab. 3), statuses, notes."""

import pandas as pd
import pytest

from algm_cli.report.extra_specs import EXTRA_SPECS
from algm_cli.report.extra_tables import build_extra_table, implemented, ims_note, status_cell
from algm_cli.report.load import load_runs
from algm_cli.report.paper import load_paper
from algm_cli.report.provenance import SYNTHETIC_WARNING, provenance_lines

from .conftest import ALGM, BASELINE, PAPER_DIR

SPECS = {spec["id"]: spec for spec in EXTRA_SPECS}


@pytest.fixture(scope="module")
def paper():
    return load_paper(PAPER_DIR)


def by_label(frame: pd.DataFrame) -> dict:
    return {r["row"]: r for r in frame.to_dict("records")}


def test_own_baseline_row_compares_with_its_network_baseline(runs, paper):
    setr = {"model": "setr", "backbone": "vit_b", "decoder": "naive"}
    runs.add(BASELINE, **setr, miou="40.0", gflops="100.0", ims="10")
    runs.add(ALGM, **setr, miou="41.5", gflops="80.0", ims="15")
    rows = load_runs(runs.folder).rows
    table = by_label(build_extra_table(SPECS["tab3"], rows, paper, "ade20k"))
    row = table["SETR-B + ALGM"]
    assert (row["mIoU base paper"], row["mIoU paper"], row["Δ mIoU paper"]) == ("46.4", "47.1",
                                                                                 "+0.7")
    assert (row["GFLOPs base paper"], row["GFLOPs paper"], row["Δ GFLOPs % paper"]) == (
        "108", "86", "-20")
    assert (row["mIoU base"], row["mIoU"], row["Δ mIoU"]) == ("40.00", "41.50", "+1.50")
    assert (row["GFLOPs"], row["Δ GFLOPs %"], row["speed-up †"]) == ("80.00", "-20", "1.50x")
    assert table["Seg-S + ALGM"]["mIoU"] == "not run"


def test_ims_target_picks_best_miou_reaching_the_target(runs, paper):
    runs.add(BASELINE, miou="45.0", ims="100")
    runs.add(ALGM, miou="45.5", ims="140")                     # +40%: reaches no target
    runs.add(ALGM, clap_threshold="0.8", gbm_threshold="0.8", miou="44.0", ims="160")
    runs.add(ALGM, clap_threshold="0.7", gbm_threshold="0.7", miou="43.0", ims="155")
    runs.add(ALGM, clap_threshold="0.6", gbm_threshold="0.6", miou="40.0", ims="210")
    runs.add(ALGM, clap_threshold="0.5", gbm_threshold="0.5", miou="44.9", ims="300",
             device="cpu x2")                                  # other device: never compared
    rows = load_runs(runs.folder).rows
    table = by_label(build_extra_table(SPECS["supp_tab3"], rows, paper, "ade20k"))
    plus50, plus100 = table["Seg-S + ALGM (+50% im/s)"], table["Seg-S + ALGM (+100% im/s)"]
    assert (plus50["mIoU"], plus50["Δ mIoU"], plus50["im/s gain % †"]) == ("44.00", "-1.00", "+60")
    assert (plus100["mIoU"], plus100["im/s gain % †"]) == ("40.00", "+110")
    assert (table["Seg-S"]["mIoU"], table["Seg-S"]["mIoU paper"]) == ("45.00", "45.3")


def test_status_distinguishes_not_implemented_reference_and_not_run():
    empty = load_runs("/nonexistent").rows
    assert status_cell({}, empty, {"model": "segmenter", "method": "algm"}) == "not run"
    assert status_cell({}, empty, {"model": "segmenter", "method": "nosuch"}) == "not implemented"
    assert status_cell({}, empty, {"model": "nosuch", "method": "algm"}) == "not implemented"
    assert status_cell({"reference": True}, empty, {"model": "beit3"}) == "reference only"
    assert implemented({"model": "segmenter", "method": "algm_star"})


def test_ims_notes_name_the_right_hardware():
    assert "A100" in ims_note({"paper_table": "tab1"})
    assert "A6000" in ims_note({"paper_table": "tab4"})
    note = ims_note({"paper_table": "segformerpp"})
    assert "A100" not in note and "no im/s" in note


def test_provenance_warns_on_synthetic(runs):
    runs.add(BASELINE, dataset="synthetic", device="cpu x2", seed="0")
    lines = provenance_lines(load_runs(runs.folder).rows)
    text = "\n".join(lines)
    assert "synthetic (1 runs)" in text and "cpu x2 (1 runs)" in text
    assert SYNTHETIC_WARNING in text
