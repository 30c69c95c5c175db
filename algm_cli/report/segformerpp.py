"""Segformer++'s training and pose tables: the paper's numbers beside the reproduced runs.

- `segformerpp_training__<dataset>__<backbone>`: Segformer trained with each Segformer++ preset
  and the downsampling baseline (setting `training`, task segmentation): mIoU, training images/s,
  its speed-up over the trained baseline, training peak memory and its ratio to the baseline's.
  Paper columns (results/paper/segformerpp_training.csv, the public README's training tables,
  MiT-B5) appear for Cityscapes and ADE20K with mit_b5.
- `segformerpp_pose__<dataset>__<backbone>`: pose runs (task=pose), every method and setting:
  PCK@0.05/0.1/0.2, OKS AP, inference im/s and its speed-up, training memory and images/s.
  The paper's pose tables (JBD, COCO; results/paper/pose/segformerpp.csv: PCK@0.1, PCK@0.05,
  training speed-up, memory) are rendered as `segformerpp_pose_paper`.
Each cell comes from the most recent matching run (timestamp) that has the measure. Training
memory on a CPU is tracked tensor storage (engine/memory.py), on a GPU CUDA's max allocated;
images/s are hardware-bound: compare ratios within one table.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..engine.store import write_atomic
from .load import latest_with, select

METHODS = (("none", ("none",)), ("segformerpp_hq", ("segformerpp_hq",)),
           ("segformerpp_fast", ("segformerpp_fast",)),
           ("segformerpp_2x2", ("neighbour2d", "segformerpp_2x2")), ("downsample", ("downsample",)))
PAPER_GROUPS = (("cityscapes", "mit_b5"), ("ade20k", "mit_b5"))
NUMERIC = ("miou", "ims", "gflops", "train_ims", "train_peak_mem_mb", "pck05", "pck10", "pck20",
           "oks_ap")
NOTE = ("Reproduced cells: latest matching run per measure; CPU memory = peak tracked tensor "
        "storage (algm_cli/engine/memory.py), GPU memory = CUDA max allocated; im/s depend on the "
        "device, ratios are within this table.")


def _num(value) -> float:
    """Return a float (NaN when missing or not a number)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _fmt(value: float, digits: int = 2, suffix: str = "") -> str:
    """Return a fixed-digit number, '' when missing."""
    return "" if value is None or math.isnan(value) else f"{value:.{digits}f}{suffix}"


def _prepare(runs: pd.DataFrame) -> pd.DataFrame:
    """Return segformer runs with numeric measures and a `task` column."""
    rows = runs[runs["model"] == "segformer"].copy() if not runs.empty else runs.copy()
    if "task" not in rows.columns:
        rows["task"] = ""
    rows["task"] = rows["task"].fillna("").map(lambda v: str(v).strip().lower() or "segmentation")
    for column in NUMERIC:
        rows[column] = rows[column].map(_num) if column in rows.columns else math.nan
    return rows


def _latest(matches: pd.DataFrame) -> dict:
    """Return the latest value of each measure and the run ids used."""
    values, used = {}, []
    for measure in NUMERIC:
        row = latest_with(matches, measure)
        values[measure] = math.nan if row is None else float(row[measure])
        if row is not None:
            used.append(str(row["run_id"]) + (" (smoke)" if row.get("smoke") == "true" else ""))
    device = str(matches.iloc[-1]["device"]) if not matches.empty else ""
    return {**values, "runs": " ".join(dict.fromkeys(used)), "device": device,
            "matched": not matches.empty}


def training_table(runs: pd.DataFrame, paper: pd.DataFrame, dataset: str,
                   backbone: str) -> pd.DataFrame:
    """Return the training table of one (dataset, backbone)."""
    table = f"segformerpp_training_{dataset}"
    records, base = [], None
    for method, aliases in METHODS:
        matches = select(runs, {"dataset": dataset, "backbone": backbone, "method": aliases,
                                "setting": "training", "task": "segmentation"})
        got = _latest(matches)
        base = got if method == "none" else base
        p = paper[(paper["table"] == table) & (paper["method"] == method)] if not paper.empty else paper
        p = p.iloc[0] if len(p) and backbone == "mit_b5" else None
        speedup = got["train_ims"] / base["train_ims"] if base and base["train_ims"] > 0 else math.nan
        memory = (got["train_peak_mem_mb"] / base["train_peak_mem_mb"]
                  if base and base["train_peak_mem_mb"] > 0 else math.nan)
        label = method
        if method == "downsample" and not matches.empty and "reduction" in matches.columns:
            label = f"downsample ({matches.iloc[-1]['reduction']})"  # the input factor
        record = {"method": label}
        if p is not None:
            record.update({"paper mIoU": _fmt(p["miou"]),
                           "paper train speed-up": _fmt(p["speedup"], 2, "x") or "-",
                           "paper memory (GB)": _fmt(p["memory_gb"], 1)})
        record.update({
            "mIoU": _fmt(got["miou"]) if got["matched"] else "not run",
            "train im/s": _fmt(got["train_ims"]), "train speed-up": _fmt(speedup, 2, "x"),
            "train peak memory (MiB)": _fmt(got["train_peak_mem_mb"], 1),
            "memory vs baseline": _fmt(memory, 2, "x"), "device": got["device"],
            "runs": got["runs"]})
        records.append(record)
    return pd.DataFrame(records)


def pose_table(runs: pd.DataFrame, dataset: str, backbone: str) -> pd.DataFrame:
    """Return the reproduced pose table of one (dataset, backbone): every method and setting."""
    records, base = [], None
    for setting in ("training", "direct"):
        for method, aliases in METHODS:
            matches = select(runs, {"dataset": dataset, "backbone": backbone, "method": aliases,
                                    "setting": setting, "task": "pose"})
            if matches.empty:
                continue
            got = _latest(matches)
            base = got if (method, setting) == ("none", "training") else base
            if setting == "direct":  # trained without merging: its training is the baseline's
                got.update(train_ims=math.nan, train_peak_mem_mb=math.nan)
            speedup = got["ims"] / base["ims"] if base and base["ims"] > 0 else math.nan
            label = method
            if method == "downsample" and "reduction" in matches.columns:
                label = f"downsample ({matches.iloc[-1]['reduction']})"
            records.append({
                "method": label, "setting": setting, "PCK@0.05": _fmt(got["pck05"], 1),
                "PCK@0.1": _fmt(got["pck10"], 1), "PCK@0.2": _fmt(got["pck20"], 1),
                "OKS AP": _fmt(got["oks_ap"], 1), "GFLOPs": _fmt(got["gflops"], 3),
                "im/s": _fmt(got["ims"], 1), "speed-up": _fmt(speedup, 2, "x"),
                "train peak memory (MiB)": _fmt(got["train_peak_mem_mb"], 1),
                "train im/s": _fmt(got["train_ims"], 2), "device": got["device"],
                "runs": got["runs"]})
    return pd.DataFrame(records)


def pose_paper_table(pose_paper: pd.DataFrame) -> pd.DataFrame:
    """Return the paper's pose numbers (JBD, COCO) as one display table."""
    frame = pose_paper.rename(columns={"pck10": "PCK@0.1", "pck05": "PCK@0.05",
                                       "speedup": "train speed-up", "memory_gb": "memory (GB)"})
    frame = frame[["dataset", "label", "PCK@0.1", "PCK@0.05", "train speed-up", "memory (GB)"]]
    return frame.astype(object).where(frame.notna(), "-")


def _write(frame: pd.DataFrame, title: str, notes: list[str], stem: Path) -> Path:
    """Write stem.md; return its path."""
    body = frame.to_markdown(index=False, disable_numparse=True) if not frame.empty else "(no rows)"
    path = stem.with_suffix(".md")
    write_atomic(path, f"## {title}\n\n{body}\n\n" + "".join(f"- {n}\n" for n in notes))
    return path


def render_segformerpp_tables(runs: pd.DataFrame, paper: pd.DataFrame, paper_dir: Path,
                              out_dir: Path) -> list[Path]:
    """Write the Segformer++ training and pose tables under out_dir/tables; return their paths."""
    folder = Path(out_dir) / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    rows = _prepare(runs)
    paths = []
    seg = rows[(rows["task"] == "segmentation") & (rows["setting"] == "training")]
    groups = set(PAPER_GROUPS) | set(zip(seg["dataset"], seg["backbone"]))
    source = "results/paper/segformerpp_training.csv (the public README's training tables)"
    for dataset, backbone in sorted(groups):
        frame = training_table(rows, paper, dataset, backbone)
        title = f"Segformer++ training with merging, {dataset}, {backbone}"
        notes = [f"Paper columns: {source}, MiT-B5." if backbone == "mit_b5" and (
            dataset, backbone) in PAPER_GROUPS else "No paper columns (the paper used MiT-B5 "
            "on Cityscapes 1024 / ADE20K 640).", NOTE]
        paths.append(_write(frame, title, notes,
                            folder / f"segformerpp_training__{dataset}__{backbone}"))
    pose = rows[rows["task"] == "pose"]
    for dataset, backbone in sorted(set(zip(pose["dataset"], pose["backbone"]))):
        title = f"Segformer++ pose estimation, {dataset}, {backbone}"
        notes = ["Speed-up: inference im/s over the trained baseline (none, training).", NOTE]
        paths.append(_write(pose_table(rows, dataset, backbone), title, notes,
                            folder / f"segformerpp_pose__{dataset}__{backbone}"))
    pose_file = Path(paper_dir) / "pose" / "segformerpp.csv"
    if pose_file.is_file():
        frame = pose_paper_table(pd.read_csv(pose_file))
        paths.append(_write(frame, "Segformer++ pose estimation: the paper's numbers (MiT-B5)",
                            [f"Source: {pose_file.as_posix()} (the public README's pose tables)."],
                            folder / "segformerpp_pose_paper"))
    return paths
