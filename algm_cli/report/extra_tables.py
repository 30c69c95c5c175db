"""Tables whose layout differs from the main ones (issue 17), plus what every table needs to know
about what exists: which methods/models are implemented, and which hardware the paper timed on.

Two table kinds beside the main paper-vs-reproduced layout of `tables.build_table`:
- "own_baseline" (Tab. 3, supp. Tab. 2): every paper row reports its method's OWN baseline next to
  the reduced model (measure sets no_reduction / with_reduction in results/paper/). Reproduced:
  the row's `base` runs (the trained baseline of that network) and its `runs`.
- "ims_target" (supp. Tab. 3): rows at a throughput target (+50% / +100% im/s over the baseline).
  Reproduced: among the runs matching the row (e.g. ALGM at any inference tau, PAUMER at any
  entropy threshold) timed on the baseline's device, the one with the highest mIoU whose im/s is
  at least `target` x the baseline's; none reaching it reads `target not reached`.

A row whose model or method has no config in conf/ reads `not implemented` (distinct from
`not run`); a row with `reference: true` is another paper's number (`reference only`).
"""

from __future__ import annotations

import math
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pandas as pd

from .load import select

# the installed configs (conf/ is the package algm_cli.conf in editable and regular installs)
CONF = Path(str(resources.files("algm_cli.conf")))
# run-row method names that are not a conf/merge/<name>.yaml of their own
METHOD_ALIASES = {"algm_star": "algm", "segformerpp_2x2": "neighbour2d"}
# hardware of the paper's im/s per paper table (None: the paper prints no im/s, only speed-ups)
PAPER_HARDWARE = {"tab4": "4 Nvidia A6000", "supp_tab5": "4 Nvidia A6000", "segformerpp": None,
                  "tab3": None, "supp_tab2": None, "supp_tab3": None}
DEFAULT_HARDWARE = "one Nvidia A100 at batch 32"
EXTRA_TABLES = ("tab3", "tab4", "supp_tab2", "supp_tab3", "supp_tab5")  # specs in extra_specs.py


@lru_cache(maxsize=1)
def _conf_names() -> tuple[frozenset, frozenset]:
    """Return (model names, merge names) that have a config under conf/."""
    models = frozenset(p.stem for p in (CONF / "model").glob("*.yaml"))
    merges = frozenset(p.stem for p in (CONF / "merge").glob("*.yaml"))
    return models, merges


def implemented(filters: dict | None) -> bool:
    """Return True when the runner can produce rows matching these run filters."""
    if filters is None:
        return False
    models, merges = _conf_names()
    model, method = filters.get("model"), filters.get("method")
    if isinstance(model, str) and model not in models:
        return False
    return not (isinstance(method, str) and METHOD_ALIASES.get(method, method) not in merges)


def ims_note(spec: dict) -> str | None:
    """Return the im/s footnote true for this table (None when it shows no im/s at all)."""
    hardware = PAPER_HARDWARE.get(spec["paper_table"], DEFAULT_HARDWARE)
    repro = ("† im/s depends on the machine: reproduced values are measured on the device in the "
             "device column (throughput mode in brackets)")
    if hardware is None:
        return repro + "; the paper prints no im/s for this table, so only ratios compare."
    return repro + f"; the paper's are from {hardware}, so compare speed-ups, not im/s."


NOTE_DERIVED = ("* speed-up paper derived here: the paper's im/s over its baseline row's im/s "
                "(the paper prints no speed-up column for this table).")


def _fmt(value: float, digits: int, signed: bool = False) -> str:
    """Return a number with fixed digits ('' when missing)."""
    if value is None or pd.isna(value):
        return ""
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _pct(value: float, base: float) -> float:
    """Return 100 * (value / base - 1), NaN when either is missing."""
    if pd.isna(value) or pd.isna(base) or base == 0:
        return math.nan
    return 100.0 * (value / base - 1.0)


def _latest(runs: pd.DataFrame, filters: dict | None, measure: str) -> pd.Series | None:
    """Return the latest run matching filters that has `measure` (None when none)."""
    if filters is None or runs.empty:
        return None
    hits = select(runs, filters)
    hits = hits[hits[measure].notna()]
    return None if hits.empty else hits.iloc[-1]


def status_cell(row: dict, runs: pd.DataFrame, filters: dict | None) -> str | None:
    """Return `reference only`, `not implemented` or `not run` when the row has no run, else None."""
    if row.get("reference"):
        return "reference only"
    if not implemented(filters):
        return "not implemented"
    if filters is None or runs.empty or select(runs, filters).empty:
        return "not run"
    return None


def _paper_sets(paper: pd.DataFrame, spec: dict, row: dict) -> dict:
    """Return the paper's {measure_set: row} of one own-baseline row."""
    if paper.empty:
        return {}
    hits = paper[(paper["table"] == spec["paper_table"]) & (paper["row"] == row["paper_row"])]
    return {r["measure_set"]: r for _, r in hits.iterrows()}


def _relabel(spec: dict, label: str) -> str:
    """Return a paper label, renamed for a table moved to another backbone (tables.retarget)."""
    return label.replace(*spec["relabel"]) if "relabel" in spec else label


def _own_baseline_record(spec, row, runs, paper, dataset) -> dict:
    """Return the display cells of one own-baseline row."""
    sets = _paper_sets(paper, spec, row)
    label = sets["with_reduction"]["label"] if "with_reduction" in sets else row.get("label", "")
    if dataset != spec["dataset"]:
        sets = {}
    base_p, red_p = sets.get("no_reduction"), sets.get("with_reduction")
    filters = {**row["runs"], "dataset": dataset}
    base_f = {**row["base"], "dataset": dataset}
    status = status_cell(row, runs, filters)
    values = {}
    for key, flt in (("base", base_f), ("red", filters)):
        for m in ("miou", "gflops", "ims"):
            hit = _latest(runs, flt, m)
            values[(key, m)] = math.nan if hit is None else float(hit[m])
    ids = [str(r["run_id"]) for r in (_latest(runs, base_f, "miou"), _latest(runs, filters, "miou"))
           if r is not None]

    def cell(key, m, digits):
        if key == "red" and status:
            return status
        value = values[(key, m)]
        return "not run" if pd.isna(value) else _fmt(value, digits)

    record = {"row": _relabel(spec, label)}
    if dataset == spec["dataset"]:
        record.update({
            "mIoU base paper": "" if base_p is None else base_p["miou_text"],
            "mIoU paper": "" if red_p is None else red_p["miou_text"],
            "Δ mIoU paper": "" if red_p is None else red_p["miou_delta_text"],
            "GFLOPs base paper": "" if base_p is None else base_p["gflops_text"],
            "GFLOPs paper": "" if red_p is None else red_p["gflops_text"],
            "Δ GFLOPs % paper": "" if red_p is None else _fmt(red_p["gflops_delta_pct"], 0, True)})
    record.update({
        "mIoU base": cell("base", "miou", 2), "mIoU": cell("red", "miou", 2),
        "Δ mIoU": _fmt(values[("red", "miou")] - values[("base", "miou")], 2, True),
        "GFLOPs base": cell("base", "gflops", 2), "GFLOPs": cell("red", "gflops", 2),
        "Δ GFLOPs %": _fmt(_pct(values[("red", "gflops")], values[("base", "gflops")]), 0, True),
        "speed-up †": (f"{values[('red', 'ims')] / values[('base', 'ims')]:.2f}x"
                       if not pd.isna(values[("red", "ims")] / values[("base", "ims")]) else ""),
        "runs": " ".join(dict.fromkeys(ids))})
    return record


def _target_pick(runs, filters, base, target) -> pd.Series | None:
    """Return the best-mIoU run matching filters whose im/s >= target x the baseline's."""
    hits = select(runs, filters)
    hits = hits[hits["miou"].notna() & hits["ims"].notna() & (hits["device"] == base["device"])]
    hits = hits[hits["ims"] >= target * float(base["ims"])]
    return None if hits.empty else hits.sort_values("miou", kind="stable").iloc[-1]


def _ims_target_record(spec, row, runs, paper, dataset, base) -> dict:
    """Return the display cells of one row of a throughput-target table."""
    from .paper import paper_row

    hit = None
    if not paper.empty:
        hit = paper_row(paper, spec["paper_table"], {"dataset": spec["dataset"],
                                                     "row": row["paper_row"]})
    filters = {**row["runs"], "dataset": dataset}
    status = status_cell(row, runs, filters)
    record = {"row": _relabel(spec, "" if hit is None else hit["label"])}
    if dataset == spec["dataset"]:
        record.update({"mIoU paper": "" if hit is None else hit["miou_text"],
                       "Δ mIoU paper": "" if hit is None else hit["miou_delta_text"],
                       "im/s gain % paper": "" if hit is None else hit["ims_delta_pct_text"]})
    target = row.get("target")
    if target is None:  # the baseline row
        pick = base
        status = status if pick is None or status else None
    elif status is None:
        pick = None if base is None else _target_pick(runs, filters, base, target)
        status = "target not reached" if pick is None else None
    else:
        pick = None
    record.update({
        "mIoU": status or _fmt(float(pick["miou"]), 2),
        "Δ mIoU": ("" if pick is None or base is None
                   else _fmt(float(pick["miou"]) - float(base["miou"]), 2, True)),
        "im/s gain % †": ("" if pick is None or base is None
                          else _fmt(_pct(float(pick["ims"]), float(base["ims"])), 0, True)),
        "device †": "" if pick is None else str(pick["device"]),
        "runs": "" if pick is None else str(pick["run_id"])})
    return record


def build_extra_table(spec: dict, runs: pd.DataFrame, paper: pd.DataFrame,
                      dataset: str) -> pd.DataFrame:
    """Return the display frame of an own-baseline or throughput-target spec on `dataset`."""
    if spec["kind"] == "own_baseline":
        return pd.DataFrame([_own_baseline_record(spec, row, runs, paper, dataset)
                             for row in spec["rows"]])
    base_filters = {**spec["rows"][0]["runs"], "dataset": dataset}
    base = None
    if not runs.empty:
        hits = select(runs, base_filters)
        hits = hits[hits["miou"].notna() & hits["ims"].notna()]
        base = None if hits.empty else hits.iloc[-1]
    return pd.DataFrame([_ims_target_record(spec, row, runs, paper, dataset, base)
                         for row in spec["rows"]])


def extra_notes(spec: dict) -> list[str]:
    """Return the notes of an own-baseline or throughput-target table."""
    if spec["kind"] == "own_baseline":
        return ["Each paper row compares a method with ITS OWN baseline (results/paper/ measure "
                "sets no_reduction / with_reduction); reproduced: the latest trained baseline run "
                "of that network (mIoU base, GFLOPs base) and the method's latest run.",
                ims_note(spec) + " Speed-up † = reproduced im/s over the reproduced "
                "baseline's."]
    return ["Reproduced: among the matching runs timed on the baseline's device, the best mIoU "
            "whose im/s is at least the target (1.5x, 2x) of the baseline's; `target not "
            "reached` when none is. ALGM rows: trained ALGM at any inference tau "
            "(`algm sweep +experiment=supp_table3`).", ims_note(spec)]
