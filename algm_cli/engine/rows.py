"""The result-row schema: the columns an `algm run` row holds, shared by the engine and report.

The engine writes rows with `identity_columns` plus the measured columns; `report/load.py` reads
and validates them against the same column lists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the report reads the schema without importing torch
    from .spec import RunSpec

# every row has these (report: a row without one is skipped with a warning)
REQUIRED_COLUMNS = ("run_id", "timestamp", "model", "backbone", "dataset", "method", "status")
METRIC_COLUMNS = ("miou", "ims", "gflops", "kept_clap", "kept_final")
TEXT_COLUMNS = ("model", "backbone", "decoder", "dataset", "method", "setting", "window", "modules",
                "placement", "merge_value", "metric", "throughput_mode", "status")
BOOL_COLUMNS = ("reduce", "tuned", "smoke")
LAYER_COLUMNS = ("clap_layer", "gbm_layers")
THRESHOLD_COLUMNS = ("train_clap_threshold", "train_gbm_threshold", "clap_threshold",
                     "gbm_threshold")
# the runner's defaults of optional config columns (older rows may lack them)
CONFIG_DEFAULTS = {"setting": "training", "tuned": "false", "smoke": "false", "window": "2x2",
                   "placement": "between", "merge_value": "mean", "reduce": "true",
                   "metric": "tokens"}
# how a row was measured (engine/protocol.py; older rows lack them)
PROTOCOL_COLUMNS = ("protocol", "eval_windows", "eval_window", "eval_stride", "window_batch",
                    "calibration_images", "flops_convention", "weights", "tau_weights",
                    "gflops_merge_ops")
OPTIONAL_COLUMNS = ("experiment", "device", "git_commit", "decoder", "crop_size", "seed",
                    "throughput_mode", "modules", "tau_calibrated", "task", "variant",
                    *LAYER_COLUMNS, *THRESHOLD_COLUMNS, *METRIC_COLUMNS, *CONFIG_DEFAULTS,
                    *PROTOCOL_COLUMNS)


def identity_columns(spec: RunSpec) -> dict:
    """Return the config columns of a result row."""
    merge, m = spec.merge, spec.merge.options
    eval_clap, eval_gbm = merge.eval_thresholds
    train_clap, train_gbm = merge.train_thresholds
    steps = [("clap", m["clap_layer"])] if m["clap_layer"] is not None else []
    steps += [("gbm", layer) for layer in m["gbm_layers"]]
    if not merge.schedule_based or merge.newer:  # a baseline: its own name
        steps = [(merge.method, 0)]
    merging = merge.method != "none"
    direct = merging and (spec.checkpoint is not None or not merge.during_training)
    tuned_from = merging and spec.train is not None and spec.train.init_from is not None
    algm_family = merge.threshold_based
    return {
        "experiment": spec.experiment,
        "model": spec.model,
        "backbone": spec.backbone.name,
        "decoder": spec.model_options["decoder"],
        "dataset": spec.dataset.name,
        "method": merge.method,
        "setting": "direct" if direct else "fine_tuning" if tuned_from else "training",
        "window": f"{m['window'][0]}x{m['window'][1]}",
        "clap_layer": m["clap_layer"] if algm_family else None,
        "gbm_layers": ";".join(str(x) for x in m["gbm_layers"]) if algm_family else None,
        "modules": "+".join(name for name, _ in sorted(steps, key=lambda s: s[1])) or "-",
        "placement": m["placement"],
        "merge_value": m["value"],
        "reduce": bool(m["reduce"]),
        "metric": m["metric"],
        "train_clap_threshold": train_clap if algm_family else None,
        "train_gbm_threshold": train_gbm if algm_family else None,
        "clap_threshold": eval_clap if algm_family else None,
        "gbm_threshold": eval_gbm if algm_family else None,
        "tome_r": m["tome_r"] if merge.method == "tome" else None,
        "reduction": (m.get("setting") if merge.method in spec.family.merge_builders
                      or merge.newer else None),
        "variant": m.get("variant") if merge.method in spec.family.merge_builders else None,
        "tuned": False,
        "task": spec.task["name"],
        "crop_size": spec.dataset.crop,
        "seed": spec.seed,
        "smoke": spec.smoke,
    }
