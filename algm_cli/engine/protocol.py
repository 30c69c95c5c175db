"""The evaluation protocol of a run (`protocol=paper|quick`, conf/protocols.yaml).

`paper` (the real datasets' default) does what the papers and the released code do: pretrained
ImageNet weights, the whole training set for calibration, every validation image for mIoU,
throughput and GFLOPs, the released evaluation script's windows (`python -m segm.eval.miou`:
stride = crop - 32, Cityscapes 512) with Segmenter's windows of one image run 4 at a time, and
the released thresholds. `quick` (the synthetic default) keeps this project's fast settings.
`eval.windows=training` selects the released training loop's evaluation instead (segm/config.yml
strides, one window at a time). This module turns those keys into numbers, the row's protocol
columns and the calibration guard; the values themselves live in the configs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from ..models.pretrained import describe, weights_spec
from .spec import ConfigError, per_dataset, train_recipe

PROTOCOLS = ("paper", "quick")
WINDOW_RULES = ("script", "training")


def check_protocol(cfg: DictConfig) -> None:
    """Raise ConfigError for an unknown protocol, window rule, window batch or weights value."""
    if str(cfg.protocol) not in PROTOCOLS:
        raise ConfigError(f"protocol={cfg.protocol}: expected one of {', '.join(PROTOCOLS)}")
    rule = str(cfg.eval.get("windows", "script"))
    if rule not in WINDOW_RULES:
        raise ConfigError(f"eval.windows={rule}: expected one of {', '.join(WINDOW_RULES)}")
    batch = cfg.eval.get("window_batch")
    if batch is not None and (not str(batch).isdigit() or int(batch) < 1):
        raise ConfigError(f"eval.window_batch={batch}: expected null or an integer >= 1")
    try:
        weights_spec(cfg.model.get("pretrained", False))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def loop_stride(cfg: DictConfig) -> int:
    """Return the released training loop's stride (segm/config.yml) for this backbone/dataset."""
    override = cfg.backbone.get("loop_eval_stride", {}) or {}
    if cfg.dataset.name in override:
        return int(override[cfg.dataset.name])
    value = cfg.dataset.get("loop_eval_stride")
    return int(value) if value is not None else per_dataset(cfg, 'eval_stride')


def eval_windows(cfg: DictConfig) -> tuple[int, int, int]:
    """Return (window, stride, window batch) of the sliding-window evaluation."""
    rule = str(cfg.eval.get("windows", "script"))
    if rule == "training" and cfg.model.name == "segmenter":
        stride, batch = loop_stride(cfg), 1
    else:  # mmseg families evaluate in training with their test settings: the same windows
        stride = per_dataset(cfg, 'eval_stride')
        paper = str(cfg.protocol) == "paper" and rule == "script"
        batch = int(cfg.model.get("eval_window_batch", 1)) if paper else 1
    if cfg.eval.get("window_batch") is not None:
        batch = int(cfg.eval.window_batch)
    return per_dataset(cfg, 'crop_size'), stride, batch


def protocol_columns(cfg: DictConfig, limits: dict) -> dict:
    """Return the row columns that say how the run was measured."""
    window, stride, batch = eval_windows(cfg)
    count_ops = bool(cfg.get("flops", {}).get("count_merge_ops", False))
    calibration = limits.get("calibration_images")
    return {
        "protocol": str(cfg.protocol),
        "eval_windows": str(cfg.eval.get("windows", "script")),
        "eval_window": window,
        "eval_stride": stride,
        "window_batch": batch,
        "calibration_images": "all" if calibration is None else int(calibration),
        "flops_convention": "fvcore+merge_ops" if count_ops else "fvcore",
        # the start weights: none | timm | hf:<id> | file:<path>; `checkpoint` when one replaces them
        "weights": "checkpoint" if cfg.get("checkpoint") is not None else
                   describe(cfg.model.get("pretrained", False), str(cfg.backbone.name)),
    }


def checkpoint_progress(path: Path) -> int | None:
    """Return the iteration stored in a training checkpoint (None when it has none)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable file is judged by the loader later
        return None
    return int(state["iteration"]) if isinstance(state, dict) and "iteration" in state else None


def check_calibration_base(cfg: DictConfig, identity: str, path: Path | None) -> None:
    """Raise ConfigError when the paper protocol would calibrate tau on meaningless weights.

    Fine: a given checkpoint, a finished trained baseline, or ImageNet-pretrained weights.
    Refused (unless calibrate.allow_untrained=true): random initial weights, and a baseline
    checkpoint that is still being trained (another job may be producing it).
    """
    if str(cfg.protocol) != "paper" or bool(cfg.get("calibrate", {}).get("allow_untrained")):
        return
    if identity.startswith("trained:") and path is not None:
        done, total = checkpoint_progress(path), train_recipe(cfg).iterations
        if done is not None and done < total:
            raise ConfigError(
                f"calibration: the trained baseline {path} is at iteration {done} of {total} "
                f"(another job may still be training it); rerun when it has finished, or pass "
                f"checkpoint=PATH, or calibrate.allow_untrained=true")
    if path is None and not weights_spec(cfg.model.get("pretrained", False)):
        raise ConfigError(
            "calibration under protocol=paper needs trained or pretrained weights, but there is "
            "no trained baseline and model.pretrained=false: train the baseline (merge=none) "
            "first, pass checkpoint=PATH or model.pretrained=true|PATH, or set "
            "calibrate.allow_untrained=true")
