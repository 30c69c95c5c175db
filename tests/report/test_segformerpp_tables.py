"""Segformer++ training and pose tables: paper columns, ratios to the baseline, pose rows."""

import pandas as pd

from algm_cli.report import build_report

from .conftest import PAPER_DIR

SEG = {"model": "segformer", "backbone": "mit_b5", "dataset": "cityscapes", "setting": "training",
       "task": "segmentation", "status": "ok", "device": "NVIDIA H200", "smoke": "False"}


def _write(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(rows):
        record = {"run_id": f"r{i}", "timestamp": f"2026-12-03T10:00:{i:02d}", **row}
        pd.DataFrame([record]).to_csv(folder / f"r{i}.csv", index=False)


def test_training_table_puts_memory_and_speed_ratios_beside_the_paper(tmp_path):
    _write(tmp_path / "runs", [
        {**SEG, "method": "none", "miou": 80.0, "train_ims": 2.0, "train_peak_mem_mb": 40000},
        {**SEG, "method": "segformerpp_hq", "miou": 79.5, "train_ims": 3.0,
         "train_peak_mem_mb": 30000},
        {**SEG, "method": "downsample", "reduction": 0.5, "miou": 75.0, "train_ims": 8.0,
         "train_peak_mem_mb": 10000},
    ])
    paths, _ = build_report(tmp_path / "runs", PAPER_DIR, tmp_path / "out")
    text = (tmp_path / "out" / "tables" / "segformerpp_training__cityscapes__mit_b5.md").read_text()
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    hq = [c.strip() for c in lines["segformerpp_hq"].split("|")]
    assert hq[2:10] == ["82.19", "1.40x", "34.0", "79.50", "3.00", "1.50x", "30000.0", "0.75x"]
    down = [c.strip() for c in lines["downsample (0.5)"].split("|")]
    assert down[2:5] == ["79.24", "2.95x", "10.0"] and down[9] == "0.25x"
    assert "not run" in lines["segformerpp_fast"]


def test_pose_rows_get_their_own_table_and_stay_out_of_the_segmentation_tables(tmp_path):
    pose = {**SEG, "task": "pose", "dataset": "synthetic_pose", "backbone": "mit_b0"}
    _write(tmp_path / "runs", [
        {**pose, "method": "none", "pck05": 10, "pck10": 50, "pck20": 90, "oks_ap": 20,
         "ims": 10.0, "train_ims": 3.0, "train_peak_mem_mb": 100},
        {**pose, "method": "segformerpp_hq", "setting": "direct", "pck10": 49, "ims": 12.0},
    ])
    paths, _ = build_report(tmp_path / "runs", PAPER_DIR, tmp_path / "out")
    names = {p.name for p in paths}
    assert "segformerpp_pose__synthetic_pose__mit_b0.md" in names
    assert "segformerpp_pose_paper.md" in names
    assert not any("segformerpp_cityscapes__synthetic_pose" in n for n in names)
    text = (tmp_path / "out" / "tables" / "segformerpp_pose__synthetic_pose__mit_b0.md").read_text()
    hq = next(line for line in text.splitlines() if "segformerpp_hq" in line)
    cells = [c.strip() for c in hq.split("|")]
    assert cells[2] == "direct" and cells[4] == "49.0" and cells[9] == "1.20x"
    assert cells[10] == ""  # training-free: no training memory of its own
