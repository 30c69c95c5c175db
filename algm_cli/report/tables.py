"""Paper tables beside reproduced runs: the table specs, the cell logic, Markdown and LaTeX.

TABLE_SPECS is the one place that says how each paper row maps to run rows. A spec is a dict:
  id           output file stem (tables/<id>.md, tables/<id>.tex)
  title        caption
  paper_table  the `table` value of its rows in results/paper/*.csv
  dataset      the paper's dataset; runs on other datasets get their own "<id>__<dataset>" table
  rows         list of {"paper": filters on the paper CSV (or None), "runs": filters on run rows,
               optional "label"}; the dataset filter is added to both from the table being built.
Run filters compare canonical strings (see load.py); a tuple value means "any of"; the key
`thresholds: AS_TRAINED` keeps runs evaluated at their training thresholds (plain ALGM, not an
inference sweep). Plain ALGM rows pin every ablation knob to the paper's default (2x2 window, CLAP
in layer 1, GBM in the supp. Tab. 1 layer, between MHSA and MLP, mean, reduction, token features),
so an ablation run never fills a main-table cell; other methods (ToMe, ...) match on model,
backbone, method and setting only (any ToMe r). tables/row_filters.md lists every row's filters.

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

from .extra_tables import EXTRA_TABLES, NOTE_DERIVED, build_extra_table, extra_notes, ims_note, status_cell
from .load import AS_TRAINED, latest_with, select
from .paper import paper_row

MEASURES = ("miou", "ims", "gflops")
# GBM layer of each network (supp. Tab. 1; also results/paper/layouts_supp_tab1.csv).
GBM_LAYERS = {("segmenter", "vit_t"): "5", ("segmenter", "vit_s"): "5",
              ("segmenter", "vit_b"): "5", ("segmenter", "vit_l"): "7",
              ("segvit", "vit_l"): "12", ("setr", "vit_b"): "5", ("setr", "vit_l"): "13"}
SEGFORMER = {"model": "segformer", "backbone": ("mit_b5", "b5")}
SEGFORMER_BASE = {**SEGFORMER, "method": "none", "setting": "training"}
SEG_S = ("segmenter", "vit_s")


def baseline_runs(model: str, backbone: str) -> dict:
    """Return run filters of the trained baseline (no merging)."""
    return {"model": model, "backbone": backbone, "method": "none", "setting": "training"}


def algm_runs(model: str, backbone: str, **changes) -> dict:
    """Return run filters of plain ALGM with every knob at the paper default; None drops a key."""
    filters = {"model": model, "backbone": backbone, "method": "algm", "setting": "training",
               "tuned": "false", "thresholds": AS_TRAINED, "window": "2x2", "clap_layer": "1",
               "gbm_layers": GBM_LAYERS.get((model, backbone)), "placement": "between",
               "merge_value": "mean", "reduce": "true", "metric": "tokens"}
    filters.update(changes)
    return {key: value for key, value in filters.items() if value is not None}


def method_runs(model: str, backbone: str, method: str, setting: str = "training") -> dict:
    """Return run filters of one method row of a main table (Tab. 1, 2; supp. Tab. 6)."""
    if method == "none":
        return baseline_runs(model, backbone)
    if method == "algm":
        return algm_runs(model, backbone, setting=setting)
    if method == "algm_star":
        return algm_runs(model, backbone, setting=setting, tuned="true", thresholds=None)
    return {"model": model, "backbone": backbone, "method": method, "setting": setting}


def main_row(model: str, backbone: str, method: str, setting: str = "training") -> dict:
    """Return a spec row whose paper and run filters share model, backbone, method, setting."""
    paper = {"model": model, "backbone": backbone, "method": method, "setting": setting}
    return {"paper": paper, "runs": method_runs(model, backbone, method, setting)}


def group(model: str, backbone: str, methods: list) -> list[dict]:
    """Return main-table rows for one network; items are a method or (method, setting)."""
    items = [m if isinstance(m, tuple) else (m, "training") for m in methods]
    return [main_row(model, backbone, method, setting) for method, setting in items]


def ablation(variant: str | None, runs: dict, **paper) -> dict:
    """Return an ablation spec row: paper row by `variant` (plus extra paper filters)."""
    filters = {"variant": variant, **paper} if variant is not None else dict(paper)
    return {"paper": filters, "runs": runs}


BASELINE_S = {"paper": {"method": "none"}, "runs": baseline_runs(*SEG_S)}
TABLE_SPECS: list[dict] = [
    {"id": "tab1", "title": "Tab. 1: main results", "paper_table": "tab1",
     "dataset": "ade20k", "rows": [
         *group("segmenter", "vit_t", ["none", "cts", "tome", "algm", "algm_star"]),
         *group("segmenter", "vit_s", ["none", "cts", "tome", "algm", "algm_star"]),
         *group("segmenter", "vit_b", ["none", "cts", "tome", ("elvit", "direct"), "algm",
                                       "algm_star"]),
         *group("segmenter", "vit_l", ["none", "cts", "tome", "elvit", ("elvit", "direct"),
                                       ("ailurus", "direct"), "algm", "algm_star"]),
         *group("segvit", "vit_l", ["none", "algm", "algm_star"]),
         *group("setr", "vit_l", ["none", "algm", "algm_star"])]},
    {"id": "tab2a", "title": "Tab. 2a: main results", "paper_table": "tab2a",
     "dataset": "coco_stuff10k", "rows": [
         *group("segmenter", "vit_s", ["none", "cts", "algm", "algm_star"]),
         *group("segmenter", "vit_b", ["none", "cts", "algm", "algm_star"]),
         *group("segmenter", "vit_l", ["none", "cts", "algm", "algm_star"])]},
    {"id": "tab2b", "title": "Tab. 2b: main results", "paper_table": "tab2b",
     "dataset": "cityscapes", "rows": [
         *group("segmenter", "vit_s", ["none", "cts", "algm", "algm_star"]),
         *group("segmenter", "vit_l", ["none", "cts", "tome", "elvit", ("elvit", "direct"),
                                       ("ailurus", "direct"), "algm", "algm_star"])]},
    {"id": "tab2c", "title": "Tab. 2c: main results", "paper_table": "tab2c",
     "dataset": "pascal_context", "rows": [
         *group("segmenter", "vit_s", ["none", "cts", "algm", "algm_star"]),
         *group("segmenter", "vit_l", ["none", "cts", "tome", "elvit", ("elvit", "direct"),
                                       "algm", "algm_star"])]},
    {"id": "tab5a", "title": "Tab. 5a: CLAP window size (Segmenter ViT-S)", "paper_table": "tab5a",
     "dataset": "ade20k", "rows": [BASELINE_S] + [
         ablation(w, algm_runs(*SEG_S, window=w)) for w in ("2x2", "4x4", "8x8", "2x1", "2x4")]},
    {"id": "tab5b", "title": "Tab. 5b: merging modules in layers 1 and 5 (Segmenter ViT-S)",
     "paper_table": "tab5b", "dataset": "ade20k", "rows": [
         BASELINE_S,
         ablation("clap+-", algm_runs(*SEG_S, method="clap_only", gbm_layers="")),
         ablation("gbm+-", algm_runs(*SEG_S, method="gbm_only", clap_layer="", gbm_layers="1")),
         ablation("-+gbm", algm_runs(*SEG_S, method="gbm_only", clap_layer="", gbm_layers="5")),
         ablation("gbm+gbm", algm_runs(*SEG_S, method="gbm_only", clap_layer="",
                                       gbm_layers="1;5")),
         ablation("clap+gbm", algm_runs(*SEG_S))]},
    {"id": "tab5c", "title": "Tab. 5c: GBM layer (Segmenter ViT-S)", "paper_table": "tab5c",
     "dataset": "ade20k", "rows": [BASELINE_S] + [
         ablation(layer, algm_runs(*SEG_S, gbm_layers=layer))
         for layer in ("2", "4", "5", "6", "8")]},
    {"id": "tab6", "title": "Tab. 6: attention balancing (reduction) x token denoising (average)",
     "paper_table": "tab6", "dataset": "ade20k", "rows": [
         {"label": "Baseline (from Tab. 5a)", "paper": {"table": "tab5a", "method": "none"},
          "runs": baseline_runs(*SEG_S)},
         ablation("mean+reduce", algm_runs(*SEG_S, merge_value="mean", reduce="true")),
         ablation("mean+no_reduce", algm_runs(*SEG_S, merge_value="mean", reduce="false")),
         ablation("random+reduce", algm_runs(*SEG_S, merge_value="random", reduce="true")),
         ablation("random+no_reduce", algm_runs(*SEG_S, merge_value="random", reduce="false"))]},
    {"id": "supp_tab4a", "title": "Supp. Tab. 4a: one or two GBM modules (Segmenter ViT-S)",
     "paper_table": "supp_tab4a", "dataset": "ade20k", "rows": [
         BASELINE_S, ablation("5;7", algm_runs(*SEG_S, gbm_layers="5;7")),
         ablation("5", algm_runs(*SEG_S, gbm_layers="5"))]},
    {"id": "supp_tab4b", "title": "Supp. Tab. 4b: merging module placement (Segmenter ViT-S)",
     "paper_table": "supp_tab4b", "dataset": "ade20k", "rows": [
         BASELINE_S, ablation("after_mlp", algm_runs(*SEG_S, placement="after_mlp")),
         ablation("between", algm_runs(*SEG_S, placement="between"))]},
    {"id": "supp_tab4c", "title": "Supp. Tab. 4c: token merging operation (Segmenter ViT-S)",
     "paper_table": "supp_tab4c", "dataset": "ade20k", "rows": [
         BASELINE_S, ablation("random", algm_runs(*SEG_S, merge_value="random")),
         ablation("mean", algm_runs(*SEG_S, merge_value="mean"))]},
    {"id": "supp_tab4d", "title": "Supp. Tab. 4d: effect of training (Segmenter ViT-S)",
     "paper_table": "supp_tab4d", "dataset": "ade20k", "rows": [
         BASELINE_S,
         ablation(None, algm_runs(*SEG_S, setting="direct"), setting="direct"),
         ablation(None, algm_runs(*SEG_S, setting="fine_tuning"), setting="fine_tuning"),
         ablation(None, algm_runs(*SEG_S, setting="training"), method="algm",
                  setting="training")]},
    {"id": "supp_tab4e", "title": "Supp. Tab. 4e: CLAP layer (Segmenter ViT-S, GBM in layer 5)",
     "paper_table": "supp_tab4e", "dataset": "ade20k", "rows": [BASELINE_S] + [
         ablation(layer, algm_runs(*SEG_S, clap_layer=layer)) for layer in ("1", "2", "3")]},
    {"id": "supp_tab4f", "title": "Supp. Tab. 4f: features for the similarity (Segmenter ViT-S)",
     "paper_table": "supp_tab4f", "dataset": "ade20k", "rows": [BASELINE_S] + [
         ablation(m, algm_runs(*SEG_S, metric=m))
         for m in ("keys", "queries", "values", "tokens")]},
    {"id": "supp_tab6", "title": "Supp. Tab. 6: direct vs trained (Segmenter ViT-L)",
     "paper_table": "supp_tab6", "dataset": "ade20k", "rows": group("segmenter", "vit_l", [
         "none", ("algm", "direct"), ("elvit", "direct"), ("ailurus", "direct"),
         ("tome", "direct"), "algm", "elvit", "tome", ("ailurus", "fine_tuning")])},
    {"id": "segformerpp_cityscapes",
     "title": "Segformer++ (MiT-B5 at 1024, no retraining)",
     "paper_table": "segformerpp", "dataset": "cityscapes", "rows": [
         {"paper": {"method": "none"}, "runs": SEGFORMER_BASE},
         {"paper": {"method": "segformerpp_hq"},
          "runs": {**SEGFORMER, "method": "segformerpp_hq", "setting": "direct"}},
         {"paper": {"method": "segformerpp_fast"},
          "runs": {**SEGFORMER, "method": "segformerpp_fast", "setting": "direct"}},
         {"paper": {"method": "segformerpp_2x2"},
          "runs": {**SEGFORMER, "method": ("segformerpp_2x2", "neighbour2d"),
                   "setting": "direct"}}]},
    {"id": "segformerpp_ade20k",
     "title": "Segformer++ (MiT-B5 at 640, trained with merging)",
     "paper_table": "segformerpp", "dataset": "ade20k", "rows": [
         {"paper": {"method": "none"}, "runs": SEGFORMER_BASE},
         {"paper": {"method": "segformerpp_hq"},
          "runs": {**SEGFORMER, "method": "segformerpp_hq", "setting": "training"}},
         {"paper": {"method": "segformerpp_fast"},
          "runs": {**SEGFORMER, "method": "segformerpp_fast", "setting": "training"}}]},
]

NOTE_IMS = ("† im/s depends on the machine: reproduced values are measured on the device in the "
            "device column (throughput mode in brackets); the paper's are from one Nvidia A100 at "
            "batch 32 (EVA: 4 A6000), so compare speed-ups, not im/s.")
NOTE_PICK = ("Each reproduced cell is the most recent matching run (timestamp) that has that "
             "measure; `not run` = no matching run, `not measured` = the run lacks that stage; "
             "(smoke) marks a smoke=true run.")


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
    return {"matched": not matches.empty, **values, "runs": " ".join(run_ids), "device": device,
            "status": None}


def _repro_cell(info: dict, measure: str, digits: int) -> str:
    """Return a reproduced cell: the value, `not run` or `not measured`."""
    if info["status"]:
        return info["status"]
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


def _paper_speedup(paper_vals: list[dict], bases: list[int | None], i: int) -> str:
    """Return the paper's speed-up of row i: its own column, else im/s over the baseline's (*)."""
    own = paper_vals[i]["speedup"]
    if not pd.isna(own):
        return _fmt_x(own)
    derived = _fmt_x(_speedup(paper_vals, bases, i))
    return derived + "*" if derived else ""


def _fmt_x(value: float) -> str:
    """Return a speed-up as '1.43x' ('' when missing)."""
    return "" if pd.isna(value) else f"{value:.2f}x"


def _paper_columns(pv: dict, rv: dict, paper_speedup: str, speedup: float) -> dict:
    """Return the cells of a row on the paper's dataset: paper, reproduced, delta per measure."""
    return {
        "mIoU paper": pv["miou_text"], "mIoU": _repro_cell(rv, "miou", 2),
        "Δ mIoU": _fmt(rv["miou"] - pv["miou"], 2, signed=True),
        "im/s paper": pv["ims_text"], "im/s †": _repro_cell(rv, "ims", 1),
        "Δ im/s †": _fmt(rv["ims"] - pv["ims"], 1, signed=True),
        "speed-up paper": paper_speedup, "speed-up": _fmt_x(speedup),
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
    if spec.get("kind"):  # Tab. 3 / supp. Tab. 2 / supp. Tab. 3 layouts
        return build_extra_table(spec, runs, paper, dataset)
    rows = spec["rows"]
    paper_vals = [_paper_values(paper, spec, row) for row in rows]
    repro = [_reproduced(runs, {**row["runs"], "dataset": dataset}) for row in rows]
    for row, info in zip(rows, repro):  # not implemented / reference only / not run
        info["status"] = status_cell(row, runs, {**row["runs"], "dataset": dataset})
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
    if spec.get("kind"):
        notes = extra_notes(spec) + [NOTE_PICK]
    else:
        notes = [ims_note(spec), NOTE_PICK]
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
                     f"(spec '{spec['id']}' in algm_cli/report/"
                     f"{'extra_specs' if spec['paper_table'] in EXTRA_TABLES else 'tables'}.py).")
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
                 "paper filters": _describe({"table": spec["paper_table"],
                                             **(row.get("paper") or {}),
                                             **({"row": str(row["paper_row"])}
                                                if "paper_row" in row else {})}),
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
    """Write stem.md and stem.tex (noting derived paper speed-ups); return both paths."""
    if "speed-up paper" in frame and frame["speed-up paper"].str.endswith("*").any():
        notes = [*notes, NOTE_DERIVED]
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
    if specs is None:
        from .extra_specs import EXTRA_SPECS

        specs = TABLE_SPECS + EXTRA_SPECS
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
