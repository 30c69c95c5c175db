"""Results store: one CSV file per run under results_dir, written atomically.

A row is written to a temporary file in the same folder and renamed into place, so a crash never
leaves a half-written row; a finished run (status ok) is found by its run id and skipped on a rerun
unless forced. Files get the mode the umask gives (as `open()` would), not mkstemp's 0600.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from filelock import FileLock, Timeout


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


def umask_mode() -> int:
    """Return the mode a new file gets from the process umask (0o666 & ~umask)."""
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary file and an atomic rename (umask's mode)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_row(results_dir: str | Path, row: dict) -> Path:
    """Write one run's row (must hold `run_id`) atomically; return the file."""
    path = row_path(results_dir, row["run_id"])
    write_atomic(path, pd.DataFrame([row]).to_csv(index=False))
    return path


@contextmanager
def exclusive(path: Path, what: str) -> Iterator[None]:
    """Hold the lock file `<path>.lock` (waiting, with a note, while another job holds it).

    Under torchrun (WORLD_SIZE > 1) nothing is locked: the ranks of one job work together, and
    one rank waiting for another would deadlock the collective calls.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{path}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"waiting for another job {what} ({path}.lock)", flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
