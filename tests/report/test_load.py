"""Run rows: corrupt files and partial or bad rows are reported and skipped, values canonical."""

from algm_cli.report.load import AS_TRAINED, canon_layers, canon_threshold, load_runs, select

from .conftest import ALGM, BASELINE, COLUMNS


def test_corrupt_file_and_partial_row_are_reported_and_skipped(runs):
    good = runs.add(ALGM)
    (runs.folder / "corrupt.csv").write_bytes(b"\x00\xff\xfe\x81 not a csv")
    header = ",".join(COLUMNS)
    full = runs.folder / f"{runs.add(BASELINE)}.csv"
    truncated = full.read_text().splitlines()[1][:25]  # a row cut short mid-write
    (runs.folder / "partial.csv").write_text(f"{header}\n{truncated}\n")
    loaded = load_runs(runs.folder)
    assert sorted(loaded.rows.run_id) == sorted([good, full.stem])
    text = "\n".join(loaded.warnings)
    assert "corrupt.csv: unreadable" in text
    assert "partial.csv line 2:" in text and "partial or corrupt row" in text


def test_missing_columns_bad_metric_and_failed_status_are_skipped(runs):
    runs.add(ALGM, miou="n/a")
    runs.add(ALGM, status="failed")
    runs.add(ALGM, timestamp="yesterday-ish")
    (runs.folder / "no_status.csv").write_text("run_id,timestamp,model\nx,2026-11-24,segmenter\n")
    (runs.folder / "empty.csv").write_text("")
    kept = runs.add(ALGM, gflops="")
    loaded = load_runs(runs.folder)
    assert list(loaded.rows.run_id) == [kept]
    text = "\n".join(loaded.warnings)
    assert "run001.csv line 2: non-numeric miou 'n/a'" in text
    assert "run002.csv line 2: status 'failed'" in text
    assert "run003.csv line 2: unparseable timestamp" in text
    assert "no_status.csv: missing required column(s)" in text
    assert "empty.csv: empty file" in text


def test_values_are_canonical_and_defaults_fill_missing_columns(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "old.csv").write_text(
        "run_id,timestamp,model,backbone,dataset,method,status,miou,gbm_layers,reduce,"
        "clap_threshold\n"
        'a,2026-11-24T10:00:00,Segmenter,ViT_S,ADE20K,ALGM,ok,46.1,"[5, 7]",True,0.850\n')
    row = load_runs(folder).rows.iloc[0]
    identity = (row.model, row.backbone, row.dataset, row.method)
    assert identity == ("segmenter", "vit_s", "ade20k", "algm")
    assert (row.gbm_layers, row.reduce, row.clap_threshold) == ("5;7", "true", "0.85")
    assert (row.window, row.placement, row.metric, row.setting, row.tuned) == (
        "2x2", "between", "tokens", "training", "false")
    assert row.miou == 46.1


def test_canonical_helpers():
    assert canon_layers("5.0") == canon_layers("[5]") == "5"
    assert canon_layers("1;5") == canon_layers("1, 5") == "1;5"
    assert canon_threshold("0.9000") == "0.9" and canon_threshold("Auto") == "auto"


def test_select_as_trained_and_any_of(runs):
    plain = runs.add(ALGM)
    runs.add(ALGM, clap_threshold="0.7", gbm_threshold="0.7")  # an inference sweep point
    rows = load_runs(runs.folder).rows
    assert list(select(rows, {"thresholds": AS_TRAINED}).run_id) == [plain]
    assert len(select(rows, {"method": ("tome", "algm")})) == 2
    assert select(rows, {"no_such_column": "x"}).empty


def test_no_runs_folder_or_no_valid_rows_gives_an_empty_table(tmp_path):
    assert load_runs(tmp_path / "missing").rows.empty
    (tmp_path / "bad.csv").write_text("garbage\n")
    loaded = load_runs(tmp_path)
    assert loaded.rows.empty and "bad.csv: missing required column(s)" in loaded.warnings[0]
