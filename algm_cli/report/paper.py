"""The papers' own numbers: tidy CSVs under results/paper/ (schema in results/paper/README.md).

Results files share one schema (PAPER_COLUMNS): one row per (table, row, measure set). The module
layout of supp. Tab. 1 has its own schema and lives in `layouts_supp_tab1.csv`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

PAPER_COLUMNS = (
    "table", "row", "label", "dataset", "model", "backbone", "decoder", "method", "setting",
    "variant", "measure_set", "miou", "ims", "gflops", "miou_delta", "ims_delta_pct",
    "gflops_delta_pct", "speedup", "memory_gb", "note",
)
NUMERIC_COLUMNS = ("miou", "ims", "gflops", "miou_delta", "ims_delta_pct", "gflops_delta_pct",
                   "speedup", "memory_gb")
LAYOUT_FILE = "layouts_supp_tab1.csv"


def _read_results_file(path: Path) -> pd.DataFrame:
    """Read one results CSV: text as str, measures as float and as printed (`<m>_text`)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in PAPER_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing paper columns {missing}")
    for column in NUMERIC_COLUMNS:
        frame[f"{column}_text"] = frame[column]
        frame[column] = pd.to_numeric(frame[column].mask(frame[column] == ""), errors="raise")
    frame["row"] = frame["row"].astype(int)
    frame["source_file"] = path.name
    return frame


def load_paper(paper_dir: str | Path) -> pd.DataFrame:
    """Return every paper results row from paper_dir/*.csv (the layouts file excluded)."""
    files = sorted(p for p in Path(paper_dir).glob("*.csv") if p.name != LAYOUT_FILE)
    if not files:
        return pd.DataFrame(columns=[*PAPER_COLUMNS, "source_file"])
    return pd.concat([_read_results_file(p) for p in files], ignore_index=True)


def load_layouts(paper_dir: str | Path) -> pd.DataFrame:
    """Return supp. Tab. 1 (CLAP / GBM layer of each network and backbone) as strings."""
    return pd.read_csv(Path(paper_dir) / LAYOUT_FILE, dtype=str, keep_default_na=False)


def paper_row(paper: pd.DataFrame, table: str, filters: Mapping[str, str]) -> pd.Series | None:
    """Return the one 'reported' row of `table` matching `filters` (None; error if several)."""
    wanted = {"measure_set": "reported", **filters, "table": filters.get("table", table)}
    mask = pd.Series(True, index=paper.index)
    for column, value in wanted.items():
        mask &= paper[column].astype(str) == str(value)
    hits = paper[mask]
    if len(hits) > 1:
        raise ValueError(f"paper filter {wanted} matches {len(hits)} rows: make it more specific")
    return None if hits.empty else hits.iloc[0]
