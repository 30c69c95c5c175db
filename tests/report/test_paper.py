"""The papers' numbers: CSVs load, spot values match the papers, each spec row finds its row."""

import pandas as pd
import pytest

from algm_cli.report.paper import PAPER_COLUMNS, load_layouts, load_paper, paper_row
from algm_cli.report.tables import GBM_LAYERS, TABLE_SPECS

from .conftest import PAPER_DIR


@pytest.fixture(scope="module")
def paper():
    return load_paper(PAPER_DIR)


def value(paper, table, **filters):
    row = paper_row(paper, table, filters)
    assert row is not None, (table, filters)
    return row


def test_every_results_csv_has_the_schema():
    for path in PAPER_DIR.glob("*.csv"):
        header = path.read_text().splitlines()[0].split(",")
        if path.name != "layouts_supp_tab1.csv":
            assert tuple(header) == PAPER_COLUMNS, path.name


def test_all_tables_are_present(paper):
    expected = {"tab1", "tab2a", "tab2b", "tab2c", "tab3", "tab4", "tab5a", "tab5b", "tab5c",
                "tab6", "supp_tab2", "supp_tab3", "supp_tab4a", "supp_tab4b", "supp_tab4c",
                "supp_tab4d", "supp_tab4e", "supp_tab4f", "supp_tab5", "supp_tab6", "segformerpp",
                "segformerpp_training_cityscapes", "segformerpp_training_ade20k"}
    assert set(paper["table"]) == expected
    counts = paper[paper.measure_set == "reported"].groupby("table").size()
    assert counts["tab1"] == 30 and counts["tab2a"] == 12 and counts["tab2b"] == 12
    assert counts["tab2c"] == 11 and counts["supp_tab6"] == 9 and counts["supp_tab4f"] == 5


def test_tab1_segmenter_vit_s_algm(paper):
    row = value(paper, "tab1", model="segmenter", backbone="vit_s", method="algm")
    assert (row.miou, row.ims, row.gflops) == (46.4, 192, 26.3)
    star = value(paper, "tab1", model="segmenter", backbone="vit_s", method="algm_star")
    assert (star.miou, star.ims, star.gflops) == (45.5, 235, 20.9)


def test_spot_values_across_tables(paper):
    assert value(paper, "tab1", model="segmenter", backbone="vit_l", method="ailurus",
                 setting="direct").gflops == 479
    assert pd.isna(value(paper, "tab1", model="segmenter", backbone="vit_l",
                         method="ailurus").ims)
    assert value(paper, "tab1", model="setr", backbone="vit_l", method="algm_star").ims == 29
    assert value(paper, "tab2b", backbone="vit_l", method="none").ims == 6.2
    assert value(paper, "tab2c", backbone="vit_l", method="elvit", setting="direct").miou == 57.9
    assert value(paper, "tab5a", variant="8x8").miou == 37.2
    assert value(paper, "tab5b", variant="gbm+gbm").ims == 216
    assert value(paper, "tab5c", variant="5").gflops == 26.2  # 26.3 in Tab. 5a/5b
    assert value(paper, "tab6", variant="random+no_reduce").miou == 44.4
    assert value(paper, "supp_tab4d", setting="direct").ims == 193
    assert value(paper, "supp_tab4f", variant="keys").gflops == 25.5
    assert value(paper, "supp_tab6", method="algm", setting="direct").gflops == 436
    assert value(paper, "supp_tab5", variant="11;21").gflops == 3722
    assert value(paper, "tab4", method="algm", setting="fine_tuning").miou == 61.7


def test_paired_and_relative_tables(paper):
    tab3 = paper[(paper.table == "tab3") & (paper.method == "dtop")].set_index("measure_set")
    assert tab3.loc["no_reduction", "gflops"] == 108
    assert tab3.loc["with_reduction", "gflops_delta_pct"] == -25
    supp3 = value(paper, "supp_tab3", method="paumer", variant="ims+100%")
    assert (supp3.miou, supp3.miou_delta, supp3.ims_delta_pct) == (34.6, -10.7, 100)


def test_segformerpp_numbers(paper):
    sfp = paper[paper.table == "segformerpp"]
    hq = sfp[(sfp.dataset == "cityscapes") & (sfp.method == "segformerpp_hq")].iloc[0]
    assert (hq.miou, hq.speedup) == (82.31, 1.61)
    fast = sfp[(sfp.dataset == "ade20k") & (sfp.method == "segformerpp_fast")].iloc[0]
    assert (fast.miou, fast.speedup) == (49.10, 1.20)
    memory = sfp[sfp.measure_set == "training_memory"].set_index("method").memory_gb
    assert memory.to_dict() == {"none": 48.3, "segformerpp_hq": 34.0, "segformerpp_fast": 30.5,
                                "segformerpp_2x2": 31.1}


def test_layouts_match_the_spec_gbm_layers():
    layouts = load_layouts(PAPER_DIR)
    table = {(r.model, r.backbone): r.gbm_layers for r in layouts.itertuples()}
    assert {k: v for k, v in table.items() if k in GBM_LAYERS} == GBM_LAYERS
    assert table[("eva", "vit_g")] == "11;21;31"
    assert set(layouts.clap_layer) == {"1"}


def test_every_spec_row_finds_exactly_one_paper_row(paper):
    for spec in TABLE_SPECS:
        for row in spec["rows"]:
            filters = {"dataset": spec["dataset"], **row["paper"]}
            hit = paper_row(paper, spec["paper_table"], filters)
            assert hit is not None, (spec["id"], row["paper"])
