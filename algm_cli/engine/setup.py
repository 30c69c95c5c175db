"""Turn a composed Hydra config into the objects of a run: schedules, models, data, keys.

Kept apart from the stages so each stage takes plain objects and stays testable without Hydra.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from ..models.schedule import NO_MERGE, MergeSchedule, MergeStepSpec, algm_schedule
from ..models.segmenter import Segmenter
from .store import config_key as config_hash


class ConfigError(ValueError):
    """A config value that cannot work, with a message naming the key and what is expected."""


def report_error(err: Exception, command: str) -> None:
    """Print one clear error line and exit with status 2 (no traceback)."""
    print(f"{command}: error: {err}", file=sys.stderr)
    sys.exit(2)


def crop_size(cfg: DictConfig) -> int:
    """Return the crop (= training crop, throughput/FLOPs square) for this backbone and dataset."""
    override = cfg.backbone.get("crop_size", {}) or {}
    return int(override.get(cfg.dataset.name, cfg.dataset.crop_size))


def eval_stride(cfg: DictConfig) -> int:
    """Return the sliding-window stride for this backbone and dataset."""
    override = cfg.backbone.get("eval_stride", {}) or {}
    return int(override.get(cfg.dataset.name, cfg.dataset.eval_stride))


def _threshold(value, key: str, released: float | None, calibrated: float | None):
    """Return a number, 'released' (GBM's in-batch rule) or raise ConfigError for `value`."""
    if isinstance(value, str):
        if value == "auto":
            if calibrated is None:
                raise ConfigError(f"{key}=auto needs the calibrate stage (or a number)")
            return calibrated
        if value == "released":
            return "released" if released is None else released
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{key}={value!r}: expected auto, released or a number in [-1, 1]")
    value = float(value)
    if not -1.0 <= value <= 1.0:
        raise ConfigError(f"{key}={value}: a cosine-similarity threshold must lie in [-1, 1]")
    return value


def thresholds(cfg: DictConfig, phase: str) -> tuple[str | float | None, str | float | None]:
    """Return the raw (CLAP, GBM) threshold settings of `phase` ("train" or "eval")."""
    m = cfg.merge
    clap, gbm = m.clap_threshold, m.gbm_threshold
    if phase == "train":
        clap = m.train_clap_threshold if m.train_clap_threshold is not None else clap
        gbm = m.train_gbm_threshold if m.train_gbm_threshold is not None else gbm
    shortcut = cfg.get("train_tau" if phase == "train" else "eval_tau")
    if shortcut is not None:
        clap = gbm = shortcut
    if cfg.get("tau") is not None:
        clap = gbm = cfg.tau
    return clap, gbm


def check_thresholds(cfg: DictConfig) -> None:
    """Raise ConfigError for any threshold setting that is neither auto, released nor in [-1, 1]."""
    keys = ("merge.clap_threshold", "merge.gbm_threshold")
    for phase, prefix in (("eval", ""), ("train", "train_")):
        for key, value in zip(keys, thresholds(cfg, phase)):
            if not (isinstance(value, str) and value in ("auto", "released")):
                _threshold(value, key.replace("merge.", f"merge.{prefix}"), None, None)


def needs_calibration(cfg: DictConfig) -> bool:
    """Return True when some threshold of the run is `auto`."""
    if cfg.merge.method in ("none", "tome"):
        return False
    values = [*thresholds(cfg, "eval"), *thresholds(cfg, "train")]
    return any(isinstance(v, str) and v == "auto" for v in values)


def build_schedule(cfg: DictConfig, phase: str, tau: float | None) -> MergeSchedule:
    """Return the merge schedule of `phase` ("train" / "eval"); `tau` is the calibrated value."""
    m = cfg.merge
    if m.method == "none" or (phase == "train" and not m.during_training):
        return NO_MERGE
    options = dict(
        window=tuple(m.window), placement=m.placement, metric=m.metric, value=m.value,
        reduce=bool(m.reduce), proportional_attention=bool(m.proportional_attention),
        inclusive=bool(m.inclusive),
    )
    try:
        if m.method == "tome":
            depth = {"vit_l": 24}.get(cfg.backbone.name, 12)
            steps = tuple(MergeStepSpec(layer, "tome", r=int(m.tome_r)) for layer in range(1, depth + 1))
            return MergeSchedule(steps, **options)
        clap_raw, gbm_raw = thresholds(cfg, phase)
        released = cfg.backbone.released_clap_threshold
        released_clap = float(released.get(cfg.dataset.name, released["default"]))
        clap = _threshold(clap_raw, "merge.clap_threshold", released_clap, tau)
        gbm = _threshold(gbm_raw, "merge.gbm_threshold", None, tau)
        rule = "released" if gbm == "released" else "fixed"
        return algm_schedule(
            clap if m.clap_layer is not None else None,
            None if rule == "released" else gbm,
            clap_layer=m.clap_layer,
            gbm_layers=tuple(int(x) for x in m.gbm_layers),
            gbm_rule=rule,
            **options,
        )
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"merge config: {err}") from None


def build_model(cfg: DictConfig, schedule: MergeSchedule) -> Segmenter:
    """Return the configured model with `schedule`."""
    name = cfg.model.name
    if name != "segmenter":
        raise ConfigError(f"model={name!r} is not available; expected one of: segmenter")
    try:
        return Segmenter(
            backbone=cfg.backbone.name,
            num_classes=int(cfg.dataset.num_classes),
            decoder=cfg.model.decoder,
            img_size=crop_size(cfg),
            schedule=schedule,
            drop_path=float(cfg.model.drop_path),
            pretrained=bool(cfg.model.pretrained),
            decoder_dropout=float(cfg.model.decoder_dropout),
            decoder_layers=int(cfg.model.decoder_layers),
            batching=str(cfg.merge.get("batching", "min")),
        )
    except ValueError as err:
        raise ConfigError(f"model config: {err}") from None


def schedule_payload(schedule: MergeSchedule) -> dict:
    """Return a JSON-able description of a schedule (for hashing and rows)."""
    return json.loads(json.dumps(schedule, default=lambda o: o.__dict__))


def train_settings(cfg: DictConfig) -> dict:
    """Return the resolved training settings (dataset defaults filled in, smoke applied)."""
    t, d = cfg.train, cfg.dataset
    settings = {
        "iterations": int(t.iterations if t.iterations is not None else d.iterations),
        "batch_size": int(t.batch_size if t.batch_size is not None else d.batch_size),
        "lr": float(t.lr if t.lr is not None else d.lr),
        "momentum": float(t.momentum),
        "weight_decay": float(t.weight_decay),
        "poly_power": float(t.poly_power),
        "min_lr": float(t.min_lr),
        "amp": bool(t.amp),
    }
    if cfg.smoke:
        settings["iterations"] = min(settings["iterations"], 3)
        settings["batch_size"] = min(settings["batch_size"], 2)
    return settings


def train_key(cfg: DictConfig, train_schedule: MergeSchedule) -> str:
    """Return the identity of a trained model: everything that changes its weights."""
    return config_hash({
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "backbone": cfg.backbone.name,
        "dataset": {k: cfg.dataset[k] for k in ("name", "num_classes", "train_scale")},
        "crop": crop_size(cfg),
        "train": train_settings(cfg),
        "schedule": schedule_payload(train_schedule),
        "seed": int(cfg.seed),
    })


def run_key(cfg: DictConfig) -> str:
    """Return the identity of a run: the resolved config minus bookkeeping keys."""
    payload = OmegaConf.to_container(cfg, resolve=True)
    for key in ("force", "results_dir", "work_dir", "experiment"):
        payload.pop(key, None)
    return config_hash(payload)


def pick_device(name: str) -> torch.device:
    """Return the torch device for `device=` (auto: CUDA when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but no CUDA device is available")
    return device


@dataclass
class Batches:
    """An endless stream of augmented training batches, deterministic in (seed, iteration)."""

    dataset: object
    transform: object
    batch_size: int
    seed: int

    def __call__(self, start: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (images (B,3,S,S) normalised, labels (B,S,S)) from iteration `start` on."""
        it = start
        n = len(self.dataset)
        while True:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + it)
            picks = torch.randint(n, (self.batch_size,), generator=g).tolist()
            pairs = [self.transform(self.dataset[i], g) for i in picks]
            yield torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
            it += 1
