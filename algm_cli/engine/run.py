"""`algm run`: one experiment, stages calibrate -> train -> eval -> throughput -> flops, one row.

How the stages share work (all files under work_dir, keyed by the config that made them):
- the trained model is identified by everything that changes its weights (model, backbone,
  dataset, training settings, training-time merge schedule, seed): a run that differs only in
  inference settings (thresholds, ALGM*, throughput mode) reuses the checkpoint, and the "Direct"
  setting (merge.during_training=false) reuses the baseline's;
- calibration runs on the base model: `checkpoint=` if given, else the trained baseline of the
  same training config if one exists, else the freshly initialised (or pretrained) model;
- the result row is written atomically to results_dir/<run_id>.csv; an identical finished run is
  skipped unless force=true.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from ..data import DatasetError
from ..models.schedule import NO_MERGE
from ..models.segmenter import load_checkpoint
from . import store
from .calibrate import calibrate
from .data import TrainTransform, eval_samples, open_dataset, square_images
from .evaluate import evaluate
from .flops import gflops_split
from .protocol import check_calibration_base, check_protocol, eval_windows, protocol_columns
from .setup import (
    ALGM_METHODS, BASELINE_METHODS, SCHEDULE_METHODS, Batches, ConfigError, build_model,
    build_schedule, check_model_merge, check_thresholds, crop_size,
    needs_calibration, pick_device, reduction_active, report_error, run_key, thresholds,
    train_key, train_settings,
)
from .throughput import measure_throughput
from .train import recipe_options, save_atomic, train

STAGES = ("calibrate", "train", "eval", "throughput", "flops")


def git_commit() -> str:
    """Return the short commit of the working tree, or 'unknown'."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=Path(__file__).parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def identity_columns(cfg: DictConfig) -> dict:
    """Return the config columns of a result row."""
    m = cfg.merge
    eval_clap, eval_gbm = thresholds(cfg, "eval")
    train_clap, train_gbm = thresholds(cfg, "train")
    steps = [("clap", m.clap_layer)] if m.clap_layer is not None else []
    steps += [("gbm", layer) for layer in m.gbm_layers]
    if m.method not in SCHEDULE_METHODS:  # a baseline or Segformer++: its own name
        steps = [(m.method, 0)]
    merging = m.method != "none"
    direct = merging and (cfg.checkpoint is not None or not m.during_training)
    algm_family = m.method in ALGM_METHODS
    return {
        "experiment": cfg.experiment,
        "model": cfg.model.name,
        "backbone": cfg.backbone.name,
        "decoder": cfg.model.decoder,
        "dataset": cfg.dataset.name,
        "method": m.method,
        "setting": "direct" if direct else "training",
        "window": f"{m.window[0]}x{m.window[1]}",
        "clap_layer": m.clap_layer if algm_family else None,
        "gbm_layers": ";".join(str(x) for x in m.gbm_layers) if algm_family else None,
        "modules": "+".join(name for name, _ in sorted(steps, key=lambda s: s[1])) or "-",
        "placement": m.placement,
        "merge_value": m.value,
        "reduce": bool(m.reduce),
        "metric": m.metric,
        "train_clap_threshold": train_clap if algm_family else None,
        "train_gbm_threshold": train_gbm if algm_family else None,
        "clap_threshold": eval_clap if algm_family else None,
        "gbm_threshold": eval_gbm if algm_family else None,
        "tome_r": m.tome_r if m.method == "tome" else None,
        "reduction": m.get("setting") if m.method in BASELINE_METHODS else None,
        "tuned": False,
        "crop_size": crop_size(cfg),
        "seed": int(cfg.seed),
        "smoke": bool(cfg.smoke),
    }


def eval_limits(cfg: DictConfig) -> dict:
    """Return the image counts and timing settings, shrunk when smoke=true."""
    e = cfg.eval
    limits = {
        "images": e.images, "throughput_images": e.throughput_images,
        "throughput_batch": int(e.throughput_batch), "warmup": int(e.warmup),
        "flops_images": e.flops_images, "calibration_images": e.calibration_images,
    }  # None: every image of the split
    if cfg.smoke:
        limits.update(images=2, throughput_images=2, throughput_batch=2, warmup=1,
                      flops_images=1, calibration_images=2)
    return limits


def base_weights(cfg: DictConfig, work: Path) -> tuple[str, Path | None]:
    """Return (identity, path) of the weights calibration runs on (path None: initial model)."""
    if cfg.checkpoint is not None:
        path = Path(str(cfg.checkpoint))
        return f"checkpoint:{path.resolve()}:{path.stat().st_mtime if path.exists() else 0}", path
    key = train_key(cfg, NO_MERGE)
    path = work / "checkpoints" / f"{key}.pt"
    if path.is_file():
        return f"trained:{key}", path
    weights = protocol_columns(cfg, {})["weights"]
    return f"init:{cfg.model.name}:{cfg.backbone.name}:{weights}:{cfg.seed}", None


def run_calibration(cfg, work, device, limits, allowed: bool) -> float | None:
    """Return the calibrated tau (cached in work_dir/calibration), or None when not needed."""
    if not needs_calibration(cfg):
        return None
    identity, weights = base_weights(cfg, work)
    check_calibration_base(cfg, identity, weights)
    key = store.config_key({"weights": identity, "dataset": cfg.dataset.name,
                            "crop": crop_size(cfg), "images": limits["calibration_images"]})
    cache = work / "calibration" / f"{key}.json"
    if cache.is_file():
        return json.loads(cache.read_text())["tau"]
    if not allowed:
        raise ConfigError("a threshold is 'auto' but no calibration is cached for this base model;"
                          " add 'calibrate' to stages or set merge.clap_threshold/gbm_threshold")
    model = build_model(cfg, NO_MERGE)
    if weights is not None:
        load_checkpoint(model, weights)
    model.to(device)
    train_set = open_dataset(cfg, "train")
    images = square_images(train_set, limits["calibration_images"] or len(train_set),
                           crop_size(cfg))
    batches = [torch.stack(images[i : i + 4]).to(device) for i in range(0, len(images), 4)]
    result = calibrate(model.encoder, batches)
    payload = {**result.to_dict(), "weights": identity}
    store.write_atomic(cache, json.dumps(payload, indent=1))
    print(f"calibrated tau = {result.tau:.4f} (mean {result.mean:.4f} + std {result.std:.4f}, "
          f"{result.images} images)")
    return result.tau


def run(cfg: DictConfig) -> dict | None:
    """Run the configured stages; return the written row (None when skipped as finished)."""
    stages = list(cfg.stages)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"stages={stages}: unknown {unknown}; expected a subset of {list(STAGES)}")
    check_model_merge(cfg)
    check_thresholds(cfg)
    check_protocol(cfg)
    run_id = run_key(cfg)
    results = Path(str(cfg.results_dir))
    if not cfg.force and (done := store.finished(results, run_id)) is not None:
        print(f"run {run_id} already finished ({store.row_path(results, run_id)}); force=true reruns")
        return None
    if cfg.checkpoint is not None and not Path(str(cfg.checkpoint)).is_file():
        raise ConfigError(f"checkpoint={cfg.checkpoint}: no such file")
    torch.manual_seed(int(cfg.seed))
    device = pick_device(str(cfg.device))
    work = Path(str(cfg.work_dir))
    limits = eval_limits(cfg)
    crop = crop_size(cfg)
    row = {"run_id": run_id, **identity_columns(cfg), **protocol_columns(cfg, limits),
           "stages": ";".join(stages)}
    start = time.time()

    tau = run_calibration(cfg, work, device, limits, allowed="calibrate" in stages)
    row.update(tau_calibrated=tau, tau_weights=base_weights(cfg, work)[0] if tau is not None else None)
    train_schedule = build_schedule(cfg, "train", tau)
    eval_schedule = build_schedule(cfg, "eval", tau)
    model = build_model(cfg, train_schedule, "train")

    if cfg.checkpoint is not None:
        load_checkpoint(model, Path(str(cfg.checkpoint)))
        row["checkpoint"] = str(cfg.checkpoint)
    else:
        ckpt = work / "checkpoints" / f"{train_key(cfg, train_schedule)}.pt"
        row["checkpoint"] = str(ckpt)
        if "train" in stages:
            settings = train_settings(cfg)
            train_set = open_dataset(cfg, "train")
            stream = Batches(train_set, TrainTransform(cfg, crop), settings["batch_size"],
                             int(cfg.seed))
            info = train(model, stream, iterations=settings["iterations"], lr=settings["lr"],
                         checkpoint=ckpt, momentum=settings["momentum"],
                         weight_decay=settings["weight_decay"], poly_power=settings["poly_power"],
                         min_lr=settings["min_lr"], amp=settings["amp"],
                         checkpoint_every=int(cfg.train.checkpoint_every),
                         optimizer=settings["optimizer"], device=device,
                         **recipe_options(settings))
            row.update(train_iterations=info["iterations"], final_loss=info["final_loss"])
        elif ckpt.is_file():
            load_checkpoint(model, ckpt)
        else:
            print("no trained checkpoint for this config: evaluating the initial weights")
    if reduction_active(cfg, "train") != reduction_active(cfg, "eval"):
        # a training-free baseline / Segformer++: the inference model holds the same parameters
        trained = model
        model = build_model(cfg, eval_schedule, "eval")
        model.load_state_dict(trained.state_dict())
    elif hasattr(model, "schedule"):
        model.schedule = eval_schedule  # ALGM / ToMe: only the schedule changes
    model.to(device).eval()

    if any(s in stages for s in ("eval", "throughput", "flops")):
        val_set = open_dataset(cfg, "val")
    if "eval" in stages:
        _, stride, window_batch = eval_windows(cfg)
        with torch.inference_mode():
            metrics = evaluate(model, ((i.to(device), l) for i, l in
                                       eval_samples(cfg, val_set, limits["images"])),
                               int(cfg.dataset.num_classes), 255, crop, stride,
                               sliding=bool(cfg.eval.sliding),
                               total=limits["images"] or len(val_set), window_batch=window_batch)
        kept = metrics["kept"]
        row.update(miou=100 * metrics["miou"], kept=json.dumps(kept))
        if kept:
            labels = list(kept)
            row["kept_clap"] = next((kept[k] for k in labels if k.endswith(":clap")), None)
            row["kept_final"] = kept[labels[-1]]
    if "throughput" in stages:
        images = square_images(val_set, limits["throughput_images"] or len(val_set), crop)
        speed = measure_throughput(model, images, limits["throughput_batch"], limits["warmup"],
                                   str(cfg.eval.throughput_mode),
                                   rounds=int(cfg.eval.get("throughput_rounds", 1)))
        row.update(ims=speed["ims"], batch_ms=speed["batch_ms"], throughput_mode=speed["mode"],
                   throughput_batch=limits["throughput_batch"])
    if "flops" in stages:
        n = limits["flops_images"] or limits["images"] or len(val_set)
        images = square_images(val_set, n, crop)
        counts = [gflops_split(model, i[None].to(device)) for i in images]  # (fvcore, merge ops)
        plain, extra = (sum(c[k] for c in counts) / len(counts) for k in (0, 1))
        merge_ops = bool(cfg.get("flops", {}).get("count_merge_ops", False))
        row.update(gflops=plain + extra if merge_ops else plain, gflops_merge_ops=extra)
    row.update(device=torch.cuda.get_device_name(device) if device.type == "cuda" else
               f"cpu x{torch.get_num_threads()}", git_commit=git_commit(),
               timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"), seconds=round(time.time() - start, 1),
               status="ok")
    path = store.write_row(results, row)
    summary = {k: row.get(k) for k in ("miou", "ims", "gflops", "kept_final")}
    print("result: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in summary.items()) + f"  -> {path}")
    return row


@hydra.main(config_path="pkg://algm_cli.conf", config_name="run", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point of `algm run`."""
    try:
        run(cfg)
    except (ConfigError, DatasetError, ValueError, FileNotFoundError) as err:
        report_error(err, "algm run")
