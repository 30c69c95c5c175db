"""The provenance section at the top of report.md: where the reproduced numbers come from."""

from __future__ import annotations

import pandas as pd

SYNTHETIC_WARNING = ("**Warning: reproduced numbers from the synthetic dataset (8 classes, "
                     "generated images) are not comparable with the paper's; they check that the "
                     "pipeline runs, not the paper's claims.**")


def _values(rows: pd.DataFrame, column: str) -> list[str]:
    """Return the sorted distinct non-empty values of a column ('' when absent)."""
    if column not in rows.columns:
        return []
    return sorted({str(v).strip() for v in rows[column] if str(v).strip() not in ("", "nan")})


def _counts(rows: pd.DataFrame, column: str) -> str:
    """Return 'value (n runs), ...' for a column."""
    if column not in rows.columns or rows.empty:
        return "none"
    counts = rows[column].map(lambda v: str(v).strip() or "(unknown)").value_counts()
    return ", ".join(f"{value} ({n} runs)" for value, n in sorted(counts.items()))


def provenance_lines(rows: pd.DataFrame) -> list[str]:
    """Return Markdown lines saying which data, hardware, seeds and protocol made the rows."""
    lines = ["## Provenance of the reproduced numbers", ""]
    if rows.empty:
        return lines + ["- No run rows: every reproduced cell reads `not run`.", ""]
    smoke = int((rows.get("smoke", pd.Series(dtype=str)) == "true").sum())
    iterations = _values(rows, "train_iterations")
    times = rows["time"].dropna() if "time" in rows.columns else pd.Series(dtype=object)
    span = (f"{times.min():%Y-%m-%d} to {times.max():%Y-%m-%d}" if not times.empty else "unknown")
    lines += [
        f"- Runs: {len(rows)} rows ({smoke} smoke=true), {span}; commits "
        f"{', '.join(_values(rows, 'git_commit')) or 'unknown'}.",
        f"- Datasets: {_counts(rows, 'dataset')}.",
        f"- Hardware (im/s): {_counts(rows, 'device')}.",
        f"- Seeds: {', '.join(_values(rows, 'seed')) or 'unknown'} (one run per config; no "
        "averaging over seeds, no error bars).",
        f"- Protocol: training iterations per run {', '.join(iterations) or 'unknown'}; mIoU "
        "by sliding-window evaluation on the dataset's val split; GFLOPs by fvcore at the crop "
        "size; im/s on the device above (see each table's † note).",
    ]
    if "synthetic" in set(rows["dataset"]):
        lines.append(f"- {SYNTHETIC_WARNING}")
    return lines + [""]
