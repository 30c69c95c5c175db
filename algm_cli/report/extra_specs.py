"""Specs of the tables issue 17 added: Tab. 3, Tab. 4, supp. Tab. 2, 3 and 5 (data only).

Same spec format as `tables.TABLE_SPECS`; `kind` selects the own-baseline or throughput-target
layout of `extra_tables` (absent: the main layout). Rows with `reference: true` are other papers'
numbers printed for context (Tab. 4's BEiT / SwinV2 rows), never reproduced.
"""

from __future__ import annotations

from .table_specs import algm_runs, baseline_runs, method_runs

EVA = ("eva", "vit_g")


def own_row(paper_row: int, model: str, backbone: str, method: str) -> dict:
    """Return an own-baseline row: paper row number, the network's baseline and the method."""
    return {"paper_row": paper_row, "base": baseline_runs(model, backbone),
            "runs": method_runs(model, backbone, method)}


def eva_row(method: str, setting: str, gbm_layers: str | None, **paper) -> dict:
    """Return a main-layout EVA row (paper filters by method, setting and GBM-layer variant)."""
    runs = baseline_runs(*EVA) if method == "none" else algm_runs(
        *EVA, setting=setting, gbm_layers=gbm_layers, clap_layer=None)
    filters = {"method": method, "setting": setting, **paper}
    if gbm_layers:
        filters["variant"] = gbm_layers
    return {"paper": filters, "runs": runs}


def reference_row(model: str, backbone: str) -> dict:
    """Return a row that only prints another paper's number."""
    return {"paper": {"model": model, "backbone": backbone}, "reference": True,
            "runs": {"model": model, "backbone": backbone, "method": "none"}}


def target_row(paper_row: int, method: str, target: float | None) -> dict:
    """Return a supp. Tab. 3 row: Segmenter ViT-S `method` at `target` x the baseline's im/s."""
    runs = baseline_runs("segmenter", "vit_s") if method == "none" else (
        algm_runs("segmenter", "vit_s", thresholds=None) if method == "algm"
        else method_runs("segmenter", "vit_s", method))
    return {"paper_row": paper_row, "runs": runs, "target": target}


EXTRA_SPECS: list[dict] = [
    {"id": "tab3", "title": "Tab. 3: vs DToP and DoViT, each against its own baseline",
     "paper_table": "tab3", "dataset": "ade20k", "kind": "own_baseline", "rows": [
         own_row(1, "setr", "vit_b", "dtop"), own_row(2, "setr", "vit_b", "algm"),
         own_row(3, "setr", "vit_b", "algm_star"), own_row(4, "segmenter", "vit_s", "dovit"),
         own_row(5, "segmenter", "vit_s", "algm"), own_row(6, "segmenter", "vit_s", "algm_star")]},
    {"id": "tab4", "title": "Tab. 4: EVA (ViT-Adapter + Mask2Former, ViT-g)", "paper_table": "tab4",
     "dataset": "ade20k", "rows": [
         eva_row("none", "training", None), eva_row("algm", "direct", "11;21;31"),
         eva_row("algm", "fine_tuning", "11;21;31"), reference_row("beit3", "beit3"),
         reference_row("beitv2", "vit_l"), reference_row("beit", "vit_l"),
         reference_row("swinv2", "swinv2_g")]},
    {"id": "supp_tab2", "title": "Supp. Tab. 2: Pascal-Context, vs DToP, each against its own "
     "baseline", "paper_table": "supp_tab2", "dataset": "pascal_context", "kind": "own_baseline",
     "rows": [own_row(1, "setr", "vit_b", "dtop"), own_row(2, "setr", "vit_b", "algm"),
              own_row(3, "setr", "vit_b", "algm_star"), own_row(4, "segvit", "vit_l", "dtop"),
              own_row(5, "segvit", "vit_l", "algm"), own_row(6, "segvit", "vit_l", "algm_star")]},
    {"id": "supp_tab3", "title": "Supp. Tab. 3: vs PAUMER at +50% and +100% im/s (Segmenter ViT-S)",
     "paper_table": "supp_tab3", "dataset": "ade20k", "kind": "ims_target", "rows": [
         target_row(1, "none", None), target_row(2, "paumer", 1.5), target_row(3, "paumer", 2.0),
         target_row(4, "algm", 1.5), target_row(5, "algm", 2.0)]},
    {"id": "supp_tab5", "title": "Supp. Tab. 5: EVA, GBM layers (training-free)",
     "paper_table": "supp_tab5", "dataset": "ade20k", "rows": [
         eva_row("none", "training", None), eva_row("algm", "direct", "11;21;31"),
         eva_row("algm", "direct", "11;21"), eva_row("algm", "direct", "11")]},
]
