"""Paper tables beside reproduced runs: the cell logic, Markdown and LaTeX (specs: table_specs.py).

Reproduced cells: of all runs matching a row, each measure comes from the most recent run
(timestamp) that has that measure; a row with no matching run reads `not run`, a matching run
without that measure `not measured`. Deltas are reproduced - paper. im/s is hardware-bound: the
reproduced column is measured on the device named in the device column, the paper's on an A100.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ..engine.store import write_atomic
from .load import latest_with, select
from .paper import paper_row
from .table_specs import GBM_LAYERS, MEASURES, NOTE_IMS, NOTE_PICK, TABLE_SPECS

def _fmt(value: float, digits: int, signed: bool = False) -> str:
    """Return a number with fixed digits ('' when missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _ratio(value: float, base: float) -> float:
    """Return value / base, NaN when either is missing or base is 0."""
    if pd.isna(value) or pd.isna(base) or base == 0:
        return math.nan
    return value / base


def _reproduced(runs: pd.DataFrame, filters: Mapping) -> dict:
    """Return the latest value of each measure over the matching runs, with provenance."""
    matches = select(runs, filters)
    found = {m: latest_with(matches, m) for m in MEASURES}
    values = {m: (math.nan if r is None else float(r[m])) for m, r in found.items()}
    used = [r for r in found.values() if r is not None]
    run_ids = list(dict.fromkeys(str(r["run_id"]) + (" (smoke)" if r.get("smoke") == "true" else "")
                                 for r in used))
    speed = found["ims"]
    device = ""
    if speed is not None:
        mode = str(speed.get("throughput_mode", "") or "")
        device = str(speed["device"]) + (f" ({mode})" if mode else "")
    return {"matched": not matches.empty, **values, "runs": " ".join(run_ids), "device": device}


def _repro_cell(info: dict, measure: str, digits: int) -> str:
    """Return a reproduced cell: the value, `not run` or `not measured`."""
    if not info["matched"]:
        return "not run"
    value = info[measure]
    return "not measured" if math.isnan(value) else _fmt(value, digits)


def _paper_values(paper: pd.DataFrame, spec: dict, row: dict) -> dict:
    """Return the paper's label and measures of one spec row (NaN when absent)."""
    hit = None
    if row.get("paper") is not None and not paper.empty:
        hit = paper_row(paper, spec["paper_table"], {"dataset": spec["dataset"], **row["paper"]})
    out = {m: (math.nan if hit is None else hit[m]) for m in (*MEASURES, "speedup")}
    # As printed: '-' where the paper has no number, '' where the row has no paper row at all.
    out.update({f"{m}_text": ("" if hit is None else hit[f"{m}_text"] or "-") for m in MEASURES})
    out["label"] = row.get("label") or ("" if hit is None else hit["label"])
    return out


def _baseline_index(rows: list[dict]) -> list[int | None]:
    """Return for each row the index of the nearest baseline row at or above it."""
    out, current = [], None
    for i, row in enumerate(rows):
        if row["runs"].get("method") == "none":
            current = i
        out.append(current)
    return out


def _speedup(values: list[dict], bases: list[int | None], i: int) -> float:
    """Return row i's im/s over its baseline's (NaN when either is missing)."""
    base = bases[i]
    return math.nan if base is None else _ratio(values[i]["ims"], values[base]["ims"])


def _paper_speedup(paper_vals: list[dict], bases: list[int | None], i: int) -> float:
    """Return the paper's speed-up of row i: its own column, else im/s over the baseline's."""
    own = paper_vals[i]["speedup"]
    return own if not pd.isna(own) else _speedup(paper_vals, bases, i)


def _fmt_x(value: float) -> str:
    """Return a speed-up as '1.43x' ('' when missing)."""
    return "" if pd.isna(value) else f"{value:.2f}x"


def _paper_columns(pv: dict, rv: dict, paper_speedup: float, speedup: float) -> dict:
    """Return the cells of a row on the paper's dataset: paper, reproduced, delta per measure."""
    return {
        "mIoU paper": pv["miou_text"], "mIoU": _repro_cell(rv, "miou", 2),
        "Δ mIoU": _fmt(rv["miou"] - pv["miou"], 2, signed=True),
        "im/s paper": pv["ims_text"], "im/s †": _repro_cell(rv, "ims", 1),
        "Δ im/s †": _fmt(rv["ims"] - pv["ims"], 1, signed=True),
        "speed-up paper": _fmt_x(paper_speedup), "speed-up": _fmt_x(speedup),
        "GFLOPs paper": pv["gflops_text"], "GFLOPs": _repro_cell(rv, "gflops", 2),
        "Δ GFLOPs": _fmt(rv["gflops"] - pv["gflops"], 2, signed=True)}


def _run_columns(rv: dict, base: dict | None, speedup: float) -> dict:
    """Return the cells of a row on another dataset: reproduced values against its baseline."""
    miou_delta = rv["miou"] - base["miou"] if base else math.nan
    flops_ratio = _ratio(rv["gflops"], base["gflops"]) if base else math.nan
    return {"mIoU": _repro_cell(rv, "miou", 2), "Δ mIoU vs baseline": _fmt(miou_delta, 2, True),
            "im/s †": _repro_cell(rv, "ims", 1), "speed-up": _fmt_x(speedup),
            "GFLOPs": _repro_cell(rv, "gflops", 2), "GFLOPs vs baseline": _fmt_x(flops_ratio)}


def build_table(spec: dict, runs: pd.DataFrame, paper: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Return `spec` as a display frame for `dataset`; each cell: latest matching run (timestamp).

    Several runs matching one row: each measure comes from the most recent run (by `timestamp`)
    that has it. Paper columns and deltas appear only when `dataset` is the paper's.
    """
    rows = spec["rows"]
    paper_vals = [_paper_values(paper, spec, row) for row in rows]
    repro = [_reproduced(runs, {**row["runs"], "dataset": dataset}) for row in rows]
    bases = _baseline_index(rows)
    records = []
    for i, (pv, rv) in enumerate(zip(paper_vals, repro)):
        speedup = _speedup(repro, bases, i)
        if dataset == spec["dataset"]:
            cells = _paper_columns(pv, rv, _paper_speedup(paper_vals, bases, i), speedup)
        else:
            cells = _run_columns(rv, repro[bases[i]] if bases[i] is not None else None, speedup)
        label = pv["label"] or f"row {i + 1}"
        if "relabel" in spec:  # a table moved to another backbone (retarget)
            label = label.replace(*spec["relabel"])
        records.append({"row": label, **cells,
                        "device †": rv["device"], "runs": rv["runs"]})
    return pd.DataFrame(records)


def table_notes(spec: dict, dataset: str) -> list[str]:
    """Return the notes printed under a table."""
    notes = [NOTE_IMS, NOTE_PICK]
    if dataset == spec["dataset"]:
        notes.insert(0, f"Paper columns: {spec['paper_table']} in results/paper/ (dataset "
                        f"{spec['dataset']}); Δ = reproduced - paper.")
    else:
        notes.insert(0, f"Runs on {dataset}; the paper used {spec['dataset']}, so no paper "
                        "columns. Deltas and ratios are against the reproduced baseline row above.")
    if "moved_from" in spec:
        notes.append(f"Rows of TABLE_SPECS['{spec['moved_from']}'] (algm_cli/report/tables.py, "
                     "filters in row_filters.md) with the backbone swapped (`retarget`).")
    else:
        notes.append("Row -> run filters: row_filters.md next to this table "
                     f"(TABLE_SPECS['{spec['id']}'] in algm_cli/report/tables.py).")
    return notes


def to_markdown(frame: pd.DataFrame, title: str, notes: list[str]) -> str:
    """Return a Markdown table with a heading and notes."""
    body = frame.to_markdown(index=False, disable_numparse=True)
    return f"## {title}\n\n{body}\n\n" + "".join(f"- {n}\n" for n in notes)


LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "Δ": r"$\Delta$", "†": r"$^\dagger$",
                  "τ": r"$\tau$", "‡": r"$^\ddagger$"}


def latex_escape(text: str) -> str:
    """Return text with LaTeX special characters escaped."""
    return "".join(LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def to_latex(frame: pd.DataFrame, title: str, notes: list[str]) -> str:
    """Return a booktabs LaTeX table (needs \\usepackage{booktabs}) with caption and notes."""
    columns = "l" + "r" * (len(frame.columns) - 1)
    lines = [r"\begin{table}[t]", r"\centering", r"\scriptsize",
             rf"\caption{{{latex_escape(title)}}}", rf"\begin{{tabular}}{{{columns}}}",
             r"\toprule", " & ".join(latex_escape(c) for c in frame.columns) + r" \\", r"\midrule"]
    for record in frame.itertuples(index=False):
        lines.append(" & ".join(latex_escape(v) for v in record) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [rf"\par\smallskip\parbox{{\linewidth}}{{\tiny {latex_escape(n)}}}" for n in notes]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def _describe(filters: Mapping) -> str:
    """Return filters as 'key=value' text (tuples as a|b)."""
    def text(value):
        return "|".join(value) if isinstance(value, tuple) else (value or "(empty)")
    return ", ".join(f"{key}={text(value)}" for key, value in filters.items())


def filters_markdown(paper: pd.DataFrame, specs: list[dict] | None = None) -> str:
    """Return Markdown listing, per table row, its paper filters and its run filters."""
    parts = ["# Row -> run filters", "",
             "Every table row shows the most recent runs matching these filters; `dataset` is "
             "added from the table (the paper's, or the one a `__<dataset>` table is for).", ""]
    for spec in specs if specs is not None else TABLE_SPECS:
        rows = [{"row": _paper_values(paper, spec, row)["label"] or f"row {i + 1}",
                 "paper filters": _describe({"table": spec["paper_table"], **(row["paper"] or {})}),
                 "run filters": _describe(row["runs"])} for i, row in enumerate(spec["rows"])]
        parts += [f"## {spec['id']}: {spec['title']}", "",
                  pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True), ""]
    return "\n".join(parts)


def _has_match(spec: dict, runs: pd.DataFrame, dataset: str, least: int = 1) -> bool:
    """Return True when at least `least` rows of `spec` have a matching run on `dataset`."""
    hits = sum(not select(runs, {**row["runs"], "dataset": dataset}).empty for row in spec["rows"])
    return hits >= least


def _network(spec: dict) -> tuple[str, str] | None:
    """Return the (model, backbone) every row of `spec` reads, or None for a multi-network table."""
    networks = {(row["runs"].get("model"), row["runs"].get("backbone")) for row in spec["rows"]}
    return networks.pop() if len(networks) == 1 else None


def _pretty(backbone: str) -> str:
    """Return 'ViT-S' for 'vit_s' (other names unchanged)."""
    return f"ViT-{backbone[4:].upper()}" if backbone.startswith("vit_") else backbone


def retarget(spec: dict, backbone: str) -> dict:
    """Return a single-network spec moved to another backbone of the same model.

    Ablations are often rerun on a smaller backbone than the paper's; the rows keep their
    filters, with the backbone swapped and the default GBM layer following the new backbone's
    layout (rows that set another GBM layer keep it).
    """
    model, old = _network(spec)
    old_gbm, new_gbm = GBM_LAYERS.get((model, old)), GBM_LAYERS.get((model, backbone))
    rows = []
    for row in spec["rows"]:
        runs = {**row["runs"], "backbone": backbone}
        if old_gbm is not None and runs.get("gbm_layers") == old_gbm and new_gbm is not None:
            runs["gbm_layers"] = new_gbm
        rows.append({**row, "runs": runs})
    title = spec["title"].replace(_pretty(old), _pretty(backbone))
    if title == spec["title"]:
        title = f"{spec['title']} ({_pretty(backbone)})"
    short = lambda name: f"Seg-{name[4:].upper()}" if name.startswith("vit_") else name  # noqa: E731
    return {**spec, "id": f"{spec['id']}__{backbone}", "title": title, "rows": rows,
            "moved_from": spec["id"], "relabel": (short(old), short(backbone))}


def _variants(spec: dict, runs: pd.DataFrame, dataset: str) -> list[dict]:
    """Return the specs to render on a non-paper dataset: the spec, and for a single-network
    table every other backbone of its model with runs there (e.g. Tab. 5a on ViT-T)."""
    network = _network(spec)
    if network is None or runs.empty:
        return [spec]
    model, own = network
    here = runs[(runs["dataset"] == dataset) & (runs["model"] == model)]
    others = sorted(b for b in here["backbone"].unique() if b and b != own)
    return [spec] + [retarget(spec, b) for b in others]


def _write(frame: pd.DataFrame, title: str, notes: list[str], stem: Path) -> list[Path]:
    """Write stem.md and stem.tex; return both paths."""
    md, tex = stem.with_suffix(".md"), stem.with_suffix(".tex")
    write_atomic(md, to_markdown(frame, title, notes))
    write_atomic(tex, to_latex(frame, title, notes))
    return [md, tex]


def render_tables(runs: pd.DataFrame, paper: pd.DataFrame, out_dir: Path,
                  specs: list[dict] | None = None) -> list[Path]:
    """Write every spec's paper-dataset table and one per other dataset with matching runs."""
    folder = Path(out_dir) / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    datasets = sorted(d for d in runs["dataset"].unique() if d) if not runs.empty else []
    specs = specs if specs is not None else TABLE_SPECS
    guide = folder / "row_filters.md"
    write_atomic(guide, filters_markdown(paper, specs))
    paths: list[Path] = [guide]
    for spec in specs:
        frame = build_table(spec, runs, paper, spec["dataset"])
        title = f"{spec['title']}, {spec['dataset']}: paper vs reproduced"
        paths += _write(frame, title, table_notes(spec, spec["dataset"]), folder / spec["id"])
        for dataset in datasets:
            if dataset == spec["dataset"]:
                continue
            for variant in _variants(spec, runs, dataset):
                # a table moved to another backbone needs more than its baseline row
                if not _has_match(variant, runs, dataset, 2 if "moved_from" in variant else 1):
                    continue
                title = (f"{variant['title']}, reproduced on {dataset} "
                         f"(the paper used {spec['dataset']})")
                frame = build_table(variant, runs, paper, dataset)
                paths += _write(frame, title, table_notes(variant, dataset),
                                folder / f"{spec['id']}__{dataset}{variant['id'][len(spec['id']):]}")
    return paths
