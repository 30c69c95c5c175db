"""Figures from run rows (PNG, matplotlib's object API on the Agg canvas, no pyplot state).

1. threshold_sweep (paper Fig. 4 / supp. Fig. 2): mIoU and GFLOPs vs the inference threshold, one
   line per training threshold, per (dataset, model, backbone);
2. algm_star (supp. Fig. 3): mIoU vs the inference threshold, the baseline as a horizontal line,
   ALGM*'s tau marked (the tuned=true row, else the lowest probed tau with mIoU >= baseline);
3. pareto (supp. Fig. 1): mIoU vs GFLOPs, every run as a faint dot, one line per method through
   its Pareto-optimal runs, and the paper's Tab. 1/2 points where dataset, model and backbone
   match.
Sweeps use plain ALGM runs (every knob but the thresholds at the paper default) whose CLAP and
GBM inference thresholds are equal; `auto` is placed at the run's calibrated tau. A figure whose
runs are missing is skipped with a warning.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .load import select
from .tables import GBM_LAYERS

DPI = 120
MODEL_NAMES = {"segmenter": "Segmenter", "setr": "SETR", "segvit": "SegViT",
               "segformer": "Segformer"}
GROUP = ["dataset", "model", "backbone"]
PAPER_TABLES = ("tab1", "tab2a", "tab2b", "tab2c")
SWEEP_KNOBS = {"method": "algm", "window": "2x2", "clap_layer": "1", "placement": "between",
               "merge_value": "mean", "reduce": "true", "metric": "tokens"}


def _tau_value(name: str, calibrated: float) -> float:
    """Return a threshold setting as a number ('auto' -> calibrated tau; NaN if unknown)."""
    if name == "auto":
        return calibrated if not pd.isna(calibrated) else math.nan
    try:
        return float(name)
    except ValueError:
        return math.nan


def _line_label(row: pd.Series) -> str:
    """Return the legend label of a run's training threshold."""
    if row["setting"] == "direct":
        return "direct (trained without merging)"
    clap, gbm = row["train_clap_threshold"], row["train_gbm_threshold"]
    text = clap if gbm in ("", clap) else f"{clap} / {gbm}"
    return f"training τ = {text}" + (" (calibrated)" if text == "auto" else "")


def _inference_tau(row: pd.Series) -> float:
    """Return the run's inference threshold when CLAP and GBM share it, else NaN."""
    clap, gbm = row["clap_threshold"], row["gbm_threshold"]
    if gbm not in ("", clap):
        return math.nan
    return _tau_value(clap, row["tau_calibrated"])


def sweep_points(runs: pd.DataFrame) -> pd.DataFrame:
    """Return plain-ALGM sweep points: group, line (training tau), tau, mIoU, GFLOPs, tuned."""
    rows = select(runs, SWEEP_KNOBS)
    default_gbm = [GBM_LAYERS.get((m, b), g) for m, b, g in
                   zip(rows["model"], rows["backbone"], rows["gbm_layers"])]
    rows = rows[rows["gbm_layers"] == pd.Series(default_gbm, index=rows.index, dtype=object)]
    if rows.empty:
        return pd.DataFrame(columns=[*GROUP, "line", "tau", "miou", "gflops", "tuned"])
    points = rows.assign(line=rows.apply(_line_label, axis=1),
                         tau=rows.apply(_inference_tau, axis=1))
    points = points[points["tau"].notna()].assign(tuned=lambda f: f["tuned"] == "true")
    # Like the tables: per point, each measure from the latest run that has it.
    merged = points.groupby([*GROUP, "line", "tau"], as_index=False, sort=True).agg(
        miou=("miou", "last"), gflops=("gflops", "last"), tuned=("tuned", "any"))
    return merged.assign(tuned=merged["tuned"].map({True: "true", False: "false"}))


def _baseline(runs: pd.DataFrame, key: tuple) -> pd.Series | None:
    """Return the latest trained baseline run (with mIoU) of a (dataset, model, backbone)."""
    filters = dict(zip(GROUP, key), method="none", setting="training")
    rows = select(runs, filters)
    rows = rows[rows["miou"].notna()]
    return None if rows.empty else rows.iloc[-1]


def _title(key: tuple) -> str:
    """Return 'Segmenter ViT-S on ade20k' for a group key."""
    dataset, model, backbone = key
    pretty = f"ViT-{backbone[4:].upper()}" if backbone.startswith("vit_") else backbone
    return f"{MODEL_NAMES.get(model, model)} {pretty} on {dataset}"


def _figure(columns: int) -> tuple[Figure, list]:
    """Return a new Agg figure and its axes (one row)."""
    figure = Figure(figsize=(5.6 * columns, 4.2), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, columns)
    return figure, list(axes) if columns > 1 else [axes]


def _save(figure: Figure, path: Path) -> Path:
    """Save the figure as PNG and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    figure.savefig(tmp, dpi=DPI)  # a crash never leaves a half-written PNG in place
    os.replace(tmp, path)
    return path


def _stem(kind: str, key: tuple) -> str:
    """Return the file stem of a figure of one group."""
    dataset, model, backbone = key
    return f"{kind}__{dataset}__{model}_{backbone}"


def _plot_sweep(points: pd.DataFrame, base: pd.Series | None, key: tuple, path: Path) -> Path:
    """Draw mIoU and GFLOPs vs the inference threshold, one line per training threshold."""
    figure, (left, right) = _figure(2)
    for line, part in points.groupby("line", sort=True):
        part = part.sort_values("tau")
        left.plot(part["tau"], part["miou"], marker="o", label=line)
        flops = part[part["gflops"].notna()]
        right.plot(flops["tau"], flops["gflops"], marker="o", label=line)
    if base is not None:
        for axis, measure in ((left, "miou"), (right, "gflops")):
            if not pd.isna(base[measure]):
                axis.axhline(base[measure], color="grey", linestyle="--",
                             label="baseline (no merging)")
    for axis, ylabel in ((left, "mIoU (%)"), (right, "GFLOPs per image")):
        axis.set_xlabel("inference threshold τ")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    left.set_title("mIoU vs threshold")
    right.set_title("GFLOPs vs threshold")
    figure.suptitle(f"ALGM threshold sweep: {_title(key)}")
    return _save(figure, path)


def _star_choice(line: pd.DataFrame, baseline_miou: float) -> tuple[pd.Series | None, str]:
    """Return ALGM*'s point on one line and how it was chosen."""
    tuned = line[line["tuned"] == "true"]
    if not tuned.empty:
        return tuned.iloc[-1], "algm tune (tuned=true)"
    passing = line[line["miou"] >= baseline_miou].sort_values("tau")
    if passing.empty:
        return None, "no τ reaches the baseline"
    return passing.iloc[0], "lowest τ with mIoU ≥ baseline"


def _plot_star(points: pd.DataFrame, base: pd.Series, key: tuple, path: Path) -> Path:
    """Draw mIoU vs inference threshold with the baseline line and ALGM* marked per line."""
    figure, (axis,) = _figure(1)
    axis.axhline(base["miou"], color="grey", linestyle="--",
                 label=f"baseline mIoU {base['miou']:.2f}")
    for line, part in points.groupby("line", sort=True):
        part = part.sort_values("tau")
        (drawn,) = axis.plot(part["tau"], part["miou"], marker="o", label=line)
        star, how = _star_choice(part, base["miou"])
        if star is None:
            axis.plot([], [], " ", label=f"{line}: {how}")
            continue
        axis.plot([star["tau"]], [star["miou"]], marker="*", markersize=18, linestyle="none",
                  color=drawn.get_color(), markeredgecolor="black",
                  label=f"ALGM* τ = {star['tau']:.3f} ({how})")
        axis.axvline(star["tau"], color=drawn.get_color(), linestyle=":", alpha=0.7)
    axis.set_xlabel("inference threshold τ")
    axis.set_ylabel("mIoU (%)")
    axis.set_title(f"Obtaining ALGM*: {_title(key)}")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _save(figure, path)


def _method_label(row: pd.Series) -> str:
    """Return the Pareto legend label of a run: its method, marked when applied directly, and
    the baseline variant where the row records one (rows from before variants have none)."""
    variant = row.get("variant")
    label = row["method"] + (f" [{variant}]" if isinstance(variant, str) and variant else "")
    return label + (" (direct)" if row["setting"] == "direct" else "")


def _pareto_front(points: pd.DataFrame) -> pd.DataFrame:
    """Return the points no other point beats in both GFLOPs (lower) and mIoU (higher)."""
    ordered = points.sort_values(["gflops", "miou"], ascending=[True, False])
    best, keep = -math.inf, []
    for index, miou in zip(ordered.index, ordered["miou"]):
        if miou > best:
            keep.append(index)
            best = miou
    return ordered.loc[keep]


def _paper_points(paper: pd.DataFrame, key: tuple) -> pd.DataFrame:
    """Return the paper's Tab. 1/2 points (mIoU and GFLOPs) of a group."""
    if paper.empty:
        return paper
    dataset, model, backbone = key
    mask = (paper["table"].isin(PAPER_TABLES) & (paper["dataset"] == dataset)
            & (paper["model"] == model) & (paper["backbone"] == backbone)
            & paper["miou"].notna() & paper["gflops"].notna())
    return paper[mask]


def _plot_pareto(rows: pd.DataFrame, paper: pd.DataFrame, key: tuple, path: Path) -> Path:
    """Draw mIoU vs GFLOPs: every run faint, each method's Pareto front as a line, paper points."""
    figure, (axis,) = _figure(1)
    labelled = rows.assign(label=rows.apply(_method_label, axis=1))
    for label, part in labelled.groupby("label", sort=True):
        front = _pareto_front(part)
        (drawn,) = axis.plot(front["gflops"], front["miou"], marker="o",
                             label=f"{label} ({len(part)} run{'s' if len(part) > 1 else ''})")
        axis.scatter(part["gflops"], part["miou"], color=drawn.get_color(), alpha=0.35, s=18)
    points = _paper_points(paper, key)
    if not points.empty:
        axis.scatter(points["gflops"], points["miou"], facecolors="none", edgecolors="black",
                     marker="s", label="paper (Tab. 1/2)")
        for _, point in points.iterrows():
            axis.annotate(point["method"], (point["gflops"], point["miou"]), fontsize=7,
                          xytext=(3, 3), textcoords="offset points")
    axis.set_xlabel("GFLOPs per image (lower is cheaper)")
    axis.set_ylabel("mIoU (%)")
    axis.set_title(f"mIoU vs GFLOPs: {_title(key)}")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, title="lines join each method's Pareto-optimal runs",
                title_fontsize=8)
    return _save(figure, path)


def _sweep_figures(runs: pd.DataFrame, folder: Path, warnings: list[str]) -> list[Path]:
    """Write threshold-sweep and ALGM* figures for every group with enough runs."""
    points = sweep_points(runs)
    sweeps, stars = [], []
    for key, part in points.groupby(GROUP, sort=True):
        counts = part.groupby("line")["tau"].nunique()
        lines = part[part["line"].isin(counts[counts >= 2].index)]
        if lines.empty:
            continue
        base = _baseline(runs, key)
        path = folder / f"{_stem('threshold_sweep', key)}.png"
        sweeps.append(_plot_sweep(lines, base, key, path))
        if base is not None:
            tuned_lines = lines.loc[lines["tuned"] == "true", "line"].unique()
            chosen = lines[lines["line"].isin(tuned_lines)] if len(tuned_lines) else lines
            stars.append(_plot_star(chosen, base, key, folder / f"{_stem('algm_star', key)}.png"))
    if not sweeps:
        warnings.append("figure threshold_sweep skipped: no plain ALGM runs with >= 2 inference "
                        "thresholds for one training threshold "
                        "(e.g. `algm sweep +experiment=fig4`)")
    if not stars:
        warnings.append("figure algm_star skipped: needs a threshold sweep and a trained baseline "
                        "(method=none) of the same dataset, model and backbone")
    return sweeps + stars


def _pareto_figures(runs: pd.DataFrame, paper: pd.DataFrame, folder: Path,
                    warnings: list[str]) -> list[Path]:
    """Write one mIoU-vs-GFLOPs figure per group with at least two measured runs."""
    rows = runs[runs["miou"].notna() & runs["gflops"].notna()] if not runs.empty else runs
    paths = []
    if not rows.empty:
        for key, part in rows.groupby(GROUP, sort=True):
            if len(part) >= 2:
                paths.append(_plot_pareto(part, paper, key, folder / f"{_stem('pareto', key)}.png"))
    if not paths:
        warnings.append("figure pareto skipped: no dataset/model/backbone with >= 2 runs that "
                        "have both mIoU and GFLOPs")
    return paths


def render_figures(runs: pd.DataFrame, paper: pd.DataFrame,
                   out_dir: Path) -> tuple[list[Path], list[str]]:
    """Write every figure the runs allow under out_dir/figures; return (paths, warnings)."""
    folder = Path(out_dir) / "figures"
    warnings: list[str] = []
    paths = _sweep_figures(runs, folder, warnings)
    paths += _pareto_figures(runs, paper, folder, warnings)
    return paths, warnings
