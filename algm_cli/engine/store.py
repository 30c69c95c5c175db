"""Results store: one CSV file per run under results_dir, written atomically.

A row is written to a temporary file in the same folder and renamed into place, so a crash never
leaves a half-written row; a finished run (status ok) is found by its run id and skipped on a rerun
unless forced.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import pandas as pd


def config_key(payload: dict) -> str:
    """Return a short stable hash of a JSON-able dict."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def row_path(results_dir: str | Path, run_id: str) -> Path:
    """Return the CSV path of run `run_id`."""
    return Path(results_dir) / f"{run_id}.csv"


def finished(results_dir: str | Path, run_id: str) -> dict | None:
    """Return the stored row of a finished run (status ok), or None."""
    path = row_path(results_dir, run_id)
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return None  # a corrupt file counts as not finished: the run is redone
    ok = table[table.get("status", pd.Series(dtype=str)) == "ok"]
    return None if ok.empty else ok.iloc[-1].to_dict()


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_row(results_dir: str | Path, row: dict) -> Path:
    """Write one run's row (must hold `run_id`) atomically; return the file."""
    path = row_path(results_dir, row["run_id"])
    write_atomic(path, pd.DataFrame([row]).to_csv(index=False))
    return path
