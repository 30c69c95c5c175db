"""Paper table specs (data): how each paper row maps to run rows; rendered by tables.py.

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
"""

from __future__ import annotations

from .load import AS_TRAINED

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
