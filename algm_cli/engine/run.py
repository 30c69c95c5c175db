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
from ..models.packed_attention import resolve as resolve_attention
from ..models.segmenter import load_checkpoint
from . import finetune, store
from .calibration import base_weights, run_calibration
from .data import TrainTransform, eval_samples, open_dataset, square_images
from .evaluate import evaluate
from .flops import gflops_split
from .preflight import preflight, record_data_identity
from .protocol import check_calibration_base, check_protocol, eval_windows, protocol_columns
from .rows import identity_columns
from .setup import (Batches, build_model, build_schedule, inference_model, pick_device,
                    train_key)
from .spec import ConfigError, RunSpec, report_error, resolve_spec, train_recipe
from .memory import TrainMeter
from .pose import PoseBatches, evaluate_pose, open_pose_dataset
from .tasks import task_name
from .throughput import measure_throughput
from .train import recipe_options, train

STAGES = ("calibrate", "train", "eval", "throughput", "flops")


def git_commit() -> str:
    """Return the short commit of the working tree, or 'unknown'."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=Path(__file__).parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def train_stage(spec: RunSpec, model, ckpt: Path, device) -> dict:
    """Train `model` with the spec's recipe (resuming from `ckpt`); return the row's columns."""
    recipe, crop = spec.train, spec.dataset.crop
    if task_name(spec) == "pose":  # person crops and keypoints (engine/pose.py)
        stream = PoseBatches(open_pose_dataset(spec, "train"), recipe.batch_size, spec.seed)
    else:
        stream = Batches(open_dataset(spec.dataset, "train"), TrainTransform(spec.dataset, crop),
                         recipe.batch_size, spec.seed)
    meter = TrainMeter(device, recipe.iterations)  # training peak memory, images/s (memory.py)
    with store.exclusive(ckpt, "training this model"):  # a parallel twin waits, then reuses it
        info = train(model, stream, iterations=recipe.iterations, lr=recipe.lr, checkpoint=ckpt,
                     momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                     poly_power=recipe.poly_power, min_lr=recipe.min_lr, amp=recipe.amp,
                     checkpoint_every=recipe.checkpoint_every, optimizer=recipe.optimizer,
                     ignore_index=spec.dataset.ignore_index, device=device, meter=meter,
                     **recipe_options(recipe.settings()))
    return {"train_iterations": info["iterations"], "final_loss": info["final_loss"],
            "train_batch": recipe.batch_size, **meter.result()}


def eval_stage(spec: RunSpec, model, val_set, device, windows: tuple[int, int, int]) -> dict:
    """Return mIoU and kept-token columns of `model` on the validation images.

    windows: (window, stride, window batch) of the protocol (engine/protocol.py).
    """
    limit, d = spec.eval.images, spec.dataset
    _, stride, window_batch = windows
    with torch.inference_mode():
        metrics = evaluate(model, ((i.to(device), l) for i, l in
                                   eval_samples(d, val_set, limit)),
                           d.num_classes, d.ignore_index, d.crop, stride,
                           sliding=spec.eval.sliding, total=limit or len(val_set),
                           window_batch=window_batch)
    kept = metrics["kept"]
    row = {"miou": 100 * metrics["miou"], "kept": json.dumps(kept)}
    if kept:
        labels = list(kept)
        row["kept_clap"] = next((kept[k] for k in labels if k.endswith(":clap")), None)
        row["kept_final"] = kept[labels[-1]]
    return row


def run(cfg) -> dict | None:
    """Run the configured stages; return the written row (None when skipped as finished)."""
    stages = list(cfg.stages)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"stages={stages}: unknown {unknown}; expected a subset of {list(STAGES)}")
    checked = preflight(cfg, stages)  # config, folders and data, before any expensive stage
    record_data_identity(cfg, checked)  # the data fingerprints enter the training and run ids
    spec = resolve_spec(cfg)
    check_protocol(cfg)
    run_id = spec.run_id
    results = Path(spec.results_dir)
    if not spec.force and (done := store.finished(results, run_id)) is not None:
        print(f"run {run_id} already finished ({store.row_path(results, run_id)}); force=true reruns")
        return None
    if spec.checkpoint is not None and not Path(spec.checkpoint).is_file():
        raise ConfigError(f"checkpoint={spec.checkpoint}: no such file")
    work = Path(spec.work_dir)
    if spec.train is not None and spec.train.init_from == finetune.BASELINE:
        full = train_recipe(OmegaConf.merge(cfg, {"train": {"iterations": None}})).iterations
        spec = finetune.resolve_baseline(spec, full, work)  # the baseline's own schedule
    start_from = finetune.init_from(spec)  # train.init_from: fine-tuning
    torch.manual_seed(spec.seed)
    device = pick_device(spec.device)
    limits, crop = spec.eval, spec.dataset.crop
    row = {"run_id": run_id, **identity_columns(spec),
           **protocol_columns(cfg, {"calibration_images": limits.calibration_images}),
           "stages": ";".join(stages),
           **{f"data_{split}": fp for split, fp in checked.fingerprints.items()}}
    start = time.time()

    if spec.merge.needs_calibration():
        check_calibration_base(cfg, *base_weights(spec, work))
    tau = run_calibration(spec, work, device, limits.calibration_images,
                          allowed="calibrate" in stages)
    row.update(tau_calibrated=tau,
               tau_weights=base_weights(spec, work)[0] if tau is not None else None)
    train_schedule = build_schedule(spec, "train", tau)
    eval_schedule = build_schedule(spec, "eval", tau)
    model = build_model(spec, train_schedule, "train")

    if spec.checkpoint is not None:
        load_checkpoint(model, Path(spec.checkpoint))
        row["checkpoint"] = spec.checkpoint
    else:
        ckpt = work / "checkpoints" / f"{train_key(spec, train_schedule)}.pt"
        row["checkpoint"] = str(ckpt)
        if "train" in stages:
            if start_from is not None and not ckpt.is_file():
                finetune.load_start(model, start_from)
                row["init_from"] = str(start_from)
            row.update(train_stage(spec, model, ckpt, device))
        elif ckpt.is_file():
            load_checkpoint(model, ckpt)
        else:
            print("no trained checkpoint for this config: evaluating the initial weights")
    model = inference_model(spec, model, eval_schedule)
    model.to(device).eval()

    pose = task_name(spec) == "pose"
    if any(s in stages for s in ("eval", "throughput", "flops")):
        val_set = open_pose_dataset(spec, "val") if pose else open_dataset(spec.dataset, "val")
    if "eval" in stages and pose:
        row.update(evaluate_pose(model, val_set, device, limits.images))
        row["kept"] = json.dumps(row["kept"])
    elif "eval" in stages:
        row.update(eval_stage(spec, model, val_set, device, eval_windows(cfg)))
    if "throughput" in stages:
        images = square_images(val_set, limits.throughput_images or len(val_set), crop)
        speed = measure_throughput(model, images, limits.throughput_batch, limits.warmup,
                                   limits.throughput_mode, rounds=limits.throughput_rounds)
        row.update(ims=speed["ims"], batch_ms=speed["batch_ms"], throughput_mode=speed["mode"],
                   throughput_batch=limits.throughput_batch, throughput_rounds=speed["rounds"])
        if getattr(model, "batching", "min") == "ragged":
            row["packed_attention"] = resolve_attention(
                model.packed_attention, device, torch.float32, model.schedule.proportional_attention)
    if "flops" in stages:
        n = limits.flops_images or limits.images or len(val_set)
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
    measures = ("pck10", "pck20", "oks_ap") if pose else ("miou",)
    summary = {k: row.get(k) for k in (*measures, "ims", "gflops", "kept_final",
                                       "train_peak_mem_mb", "train_ims") if k in row}
    print("result: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in summary.items()) + f"  -> {path}")
    return row


@hydra.main(config_path="pkg://algm_cli.conf", config_name="run", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point of `algm run`."""
    try:
        run(cfg)
    except (ConfigError, DatasetError, ValueError, OSError) as err:  # OSError: disk full, ...
        report_error(err, "algm run")
