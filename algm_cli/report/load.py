"""Run rows: read every results/runs/*.csv, validate, canonicalise, and select rows by filters.

Validation (each problem becomes a warning naming the file and line, and the row or file is
skipped, never averaged in): unreadable or empty files, a header missing a required column, a row
whose field count differs from the header's (a partial write), an empty identity field, an
unparseable timestamp, a non-numeric or non-finite metric, and status != ok.

Canonical values (so filters compare plain strings): lower-case text; booleans 'true'/'false';
layer lists '5;7'; thresholds as '%.6g' numbers or 'auto'/'released'; optional config columns that
are absent or empty take the runner's defaults (CONFIG_DEFAULTS).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..engine.rows import (  # the row schema, shared with the engine
    BOOL_COLUMNS, CONFIG_DEFAULTS, LAYER_COLUMNS, METRIC_COLUMNS, OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS, TEXT_COLUMNS, THRESHOLD_COLUMNS,
)

# Filter key with a special meaning: inference thresholds equal the training ones (not lowered).
AS_TRAINED = "as_trained"


@dataclass
class RunRows:
    """Valid run rows (canonical strings plus float metrics) and the warnings met on the way."""

    rows: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


def canon_text(value: str) -> str:
    """Return stripped lower-case text."""
    return str(value).strip().lower()


def canon_bool(value: str) -> str:
    """Return 'true' / 'false' for the usual spellings, else the lower-case text ('' stays '')."""
    text = canon_text(value)
    if text in ("true", "1", "1.0", "yes", "t", "y"):
        return "true"
    if text in ("false", "0", "0.0", "no", "f", "n"):
        return "false"
    return text


def canon_layers(value: str) -> str:
    """Return a layer list as '5;7' (accepts '5', '5.0', '[5, 7]', '5,7', '5;7')."""
    text = canon_text(value).strip("[]() ")
    if not text:
        return ""
    parts = [p for p in text.replace(",", ";").replace(" ", ";").split(";") if p]
    try:
        return ";".join(str(int(float(p))) for p in parts)
    except ValueError:
        return text


def canon_threshold(value: str) -> str:
    """Return a threshold as '%.6g' text, or the lower-case name (auto, released)."""
    text = canon_text(value)
    try:
        return f"{float(text):.6g}" if text else ""
    except ValueError:
        return text


def _parse_metric(text: str) -> float | None:
    """Return the float of a metric cell (NaN when empty); None when not a finite number."""
    text = text.strip()
    if text == "" or text.lower() in ("nan", "none", "null"):
        return math.nan
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _row_problem(record: dict) -> str | None:
    """Return why a raw record is invalid (None when valid)."""
    empty = [c for c in REQUIRED_COLUMNS if not record[c].strip()]
    if empty:
        return f"empty required field(s) {empty}"
    if canon_text(record["status"]) != "ok":
        return f"status {record['status'].strip()!r} (only ok rows are reported)"
    if pd.isna(pd.to_datetime(record["timestamp"].strip(), errors="coerce", utc=True)):
        return f"unparseable timestamp {record['timestamp']!r}"
    for column in METRIC_COLUMNS:
        if column in record and _parse_metric(record[column]) is None:
            return f"non-numeric {column} {record[column]!r}"
    return None


def _read_records(path: Path, warnings: list[str]) -> list[dict]:
    """Return the valid raw records (dicts of str) of one CSV file, warning about the rest."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            lines = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        warnings.append(f"{path.name}: unreadable ({err}); file skipped")
        return []
    lines = [(number, line) for number, line in enumerate(lines, 1) if line]
    if not lines:
        warnings.append(f"{path.name}: empty file; skipped")
        return []
    (_, header), body = lines[0], lines[1:]
    header = [h.strip() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        warnings.append(f"{path.name}: missing required column(s) {missing}; file skipped")
        return []
    if not body:
        warnings.append(f"{path.name}: header only, no rows; skipped")
    records = []
    for number, line in body:
        if len(line) != len(header):
            warnings.append(f"{path.name} line {number}: {len(line)} fields but the header has "
                            f"{len(header)} (partial or corrupt row); row skipped")
            continue
        record = dict(zip(header, line))
        problem = _row_problem(record)
        if problem:
            warnings.append(f"{path.name} line {number}: {problem}; row skipped")
            continue
        records.append({**record, "source_file": path.name, "source_line": number})
    return records


def _canonicalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Return the frame with canonical config strings, float metrics and a parsed time."""
    for column in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS, "source_file", "source_line"):
        if column not in frame.columns:
            frame[column] = ""
    frame = frame.fillna("")
    for column in TEXT_COLUMNS:
        frame[column] = frame[column].map(canon_text)
    for column in BOOL_COLUMNS:
        frame[column] = frame[column].map(canon_bool)
    for column in LAYER_COLUMNS:
        frame[column] = frame[column].map(canon_layers)
    for column in THRESHOLD_COLUMNS:
        frame[column] = frame[column].map(canon_threshold)
    for column, default in CONFIG_DEFAULTS.items():
        frame[column] = frame[column].where(frame[column] != "", default)
    for column in (*METRIC_COLUMNS, "tau_calibrated"):
        frame[column] = pd.to_numeric(frame[column].map(str).str.strip(), errors="coerce")
    frame["time"] = pd.to_datetime(frame["timestamp"].str.strip(), errors="coerce",
                                   format="mixed", utc=True)
    for column in ("run_id", "device", "experiment"):
        frame[column] = frame[column].map(lambda v: str(v).strip())
    return frame.sort_values(["time", "source_file", "source_line"], kind="stable",
                             ignore_index=True)


def load_runs(runs_dir: str | Path) -> RunRows:
    """Return the valid rows of every runs_dir/*.csv with a warning per skipped file or row."""
    warnings: list[str] = []
    folder = Path(runs_dir)
    if not folder.is_dir():
        return RunRows(_canonicalise(pd.DataFrame()), [f"{folder}: no runs folder"])
    records = []
    for path in sorted(folder.glob("*.csv")):
        records += _read_records(path, warnings)
    frame = pd.DataFrame(records, dtype=object) if records else pd.DataFrame()
    return RunRows(_canonicalise(frame), warnings)


def _as_trained(rows: pd.DataFrame) -> pd.Series:
    """Return a mask of rows whose inference thresholds equal their training thresholds."""
    same_clap = rows["clap_threshold"] == rows["train_clap_threshold"]
    same_gbm = rows["gbm_threshold"] == rows["train_gbm_threshold"]
    return same_clap & same_gbm


def select(rows: pd.DataFrame, filters: Mapping[str, str]) -> pd.DataFrame:
    """Return the rows matching every filter (canonical string equality), oldest first.

    A tuple or list value matches any of its items; a column the rows lack reads as ''.

    The key `thresholds` with value AS_TRAINED keeps rows whose inference thresholds equal their
    training thresholds (the default ALGM row, not an inference sweep / ALGM* probe).
    """
    mask = pd.Series(True, index=rows.index)
    for key, value in filters.items():
        if key == "thresholds":
            if value != AS_TRAINED:
                raise ValueError(f"unknown thresholds filter {value!r}")
            mask &= _as_trained(rows)
        else:
            wanted = [str(v) for v in value] if isinstance(value, (tuple, list)) else [str(value)]
            column = rows[key].astype(str) if key in rows.columns else pd.Series("", rows.index)
            mask &= column.isin(wanted)
    return rows[mask]


def latest_with(matches: pd.DataFrame, measure: str) -> pd.Series | None:
    """Return the most recent (timestamp) matching row that has `measure`, or None."""
    usable = matches[matches[measure].notna()]
    return None if usable.empty else usable.iloc[-1]
