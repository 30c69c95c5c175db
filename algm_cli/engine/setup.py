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

from ..models.base import SegmentationModel
from ..models.pretrained import weights_spec
from ..models.reduction import BASELINE_METHODS, build_reduced
from ..models.schedule import NO_MERGE, MergeSchedule, MergeStepSpec, algm_schedule
from ..models.segformer import PRESET_ALIASES, Segformer, segformerpp_preset
from ..models.segmenter import Segmenter
from ..models.segvit import build_segvit
from ..models.setr import build_setr
from .store import config_key as config_hash
from .train import recipe_options


MODELS = ("segmenter", "setr", "segvit", "segformer")
# merge methods: ALGM and its ablations (calibrated thresholds), ToMe (both schedules on the ViT
# encoder), the baselines built into a Segmenter, and Segformer++ presets built into Segformer
ALGM_METHODS = ("algm", "clap_only", "gbm_only")
SCHEDULE_METHODS = ("none", *ALGM_METHODS, "tome")
VIT_METHODS = (*SCHEDULE_METHODS, *BASELINE_METHODS)
SEGFORMER_METHODS = ("none", *PRESET_ALIASES)


class ConfigError(ValueError):
    """A config value that cannot work, with a message naming the key and what is expected."""


def report_error(err: Exception, command: str) -> None:
    """Print one clear error line and exit with status 2 (no traceback)."""
    print(f"{command}: error: {err}", file=sys.stderr)
    sys.exit(2)


def _per_dataset(cfg: DictConfig, key: str) -> int:
    """Return `key` for this dataset: the model's override, else the backbone's, else the dataset's."""
    for group in (cfg.model, cfg.backbone):
        override = group.get(key, {}) or {}
        if cfg.dataset.name in override:
            return int(override[cfg.dataset.name])
    return int(cfg.dataset[key])


def crop_size(cfg: DictConfig) -> int:
    """Return the crop (= training crop, throughput/FLOPs square) for this model and dataset."""
    return _per_dataset(cfg, "crop_size")


def eval_stride(cfg: DictConfig) -> int:
    """Return the sliding-window stride for this model and dataset."""
    return _per_dataset(cfg, "eval_stride")


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
    """Return True when some threshold of the run is `auto` (ALGM-family methods only)."""
    if cfg.merge.method not in ALGM_METHODS:
        return False
    values = [*thresholds(cfg, "eval"), *thresholds(cfg, "train")]
    return any(isinstance(v, str) and v == "auto" for v in values)


def build_schedule(cfg: DictConfig, phase: str, tau: float | None) -> MergeSchedule:
    """Return the merge schedule of `phase` ("train" / "eval"); `tau` is the calibrated value."""
    m = cfg.merge
    if m.method == "none" or m.method not in SCHEDULE_METHODS or (
            phase == "train" and not m.during_training):
        return NO_MERGE  # baselines and Segformer++ are built into the model (build_model)
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


def check_model_merge(cfg: DictConfig) -> None:
    """Raise ConfigError when the merge method does not fit the model family."""
    model, method = cfg.model.name, cfg.merge.method
    if model not in MODELS:
        raise ConfigError(f"model={model!r} is not available; expected one of: {', '.join(MODELS)}")
    allowed = {"segmenter": VIT_METHODS, "setr": SCHEDULE_METHODS, "segvit": SCHEDULE_METHODS,
               "segformer": SEGFORMER_METHODS}[model]
    if method not in allowed:
        raise ConfigError(f"merge={method} does not apply to model={model}; expected merge= one of "
                          f"{', '.join(allowed)}")
    vit = str(cfg.backbone.name).startswith("vit_")
    if (model == "segformer") == vit:
        expected = "mit_b0..mit_b5" if model == "segformer" else "vit_t, vit_s, vit_b or vit_l"
        raise ConfigError(f"backbone={cfg.backbone.name} does not fit model={model}; "
                          f"expected backbone={expected}")


def reduction_active(cfg: DictConfig, phase: str) -> bool:
    """Return True when a model-built reduction (baselines, Segformer++) acts in `phase`."""
    m = cfg.merge
    return m.method not in SCHEDULE_METHODS and (phase == "eval" or bool(m.during_training))


def build_model(cfg: DictConfig, schedule: MergeSchedule, phase: str = "eval") -> SegmentationModel:
    """Return the configured model with `schedule` (ALGM / ToMe steps of ViT models).

    Baselines (EViT, ACT, ELViT, AiluRus, dense ToMe) and Segformer++ are part of the model; they
    act at inference, and in training only with merge.during_training=true (`phase`="train").
    Every variant of a model family holds the same parameters, so one checkpoint serves all.
    """
    check_model_merge(cfg)
    name, m = cfg.model.name, cfg.merge
    size, classes = crop_size(cfg), int(cfg.dataset.num_classes)
    active = reduction_active(cfg, phase)
    try:
        if name == "segformer":
            preset = m.method if active else "none"
            return Segformer(str(cfg.backbone.variant), classes, segformerpp_preset(preset),
                             drop_path=float(cfg.model.drop_path))
        if name == "setr":
            model = build_setr(cfg.model, cfg.backbone.name, classes, size, schedule)
        elif name == "segvit":
            model = build_segvit(cfg.model, cfg.backbone.name, classes, size, schedule)
        else:
            model = build_segmenter(cfg, schedule, active, size, classes)
        model.encoder.bucket = int(m.get("bucket", 0))
        return model
    except ValueError as err:
        raise ConfigError(f"model config: {err}") from None


def build_segmenter(cfg: DictConfig, schedule: MergeSchedule, active: bool, size: int,
                    classes: int) -> Segmenter:
    """Return the Segmenter of the config (a ReducedSegmenter for an active baseline)."""
    m = cfg.merge
    options = dict(decoder=cfg.model.decoder, img_size=size,
                   drop_path=float(cfg.model.drop_path),
                   pretrained=weights_spec(cfg.model.pretrained),
                   decoder_dropout=float(cfg.model.decoder_dropout),
                   decoder_layers=int(cfg.model.decoder_layers),
                   decoder_norm_eps=float(cfg.model.get("decoder_norm_eps", 1e-5)))
    if m.method in BASELINE_METHODS and active:
        merge = OmegaConf.to_container(m, resolve=True)
        return build_reduced(merge, cfg.backbone.name, classes, **options)
    return Segmenter(backbone=cfg.backbone.name, num_classes=classes, schedule=schedule,
                     batching=str(m.get("batching", "min")), **options)


def schedule_payload(schedule: MergeSchedule) -> dict:
    """Return a JSON-able description of a schedule (for hashing and rows)."""
    return json.loads(json.dumps(schedule, default=lambda o: o.__dict__))


def train_settings(cfg: DictConfig) -> dict:
    """Return the resolved training settings (dataset defaults filled in, smoke applied)."""
    t, d = cfg.train, cfg.dataset
    settings = {
        "optimizer": str(t.get("optimizer", "sgd")),
        "iterations": int(t.iterations if t.iterations is not None else d.iterations),
        "batch_size": int(t.batch_size if t.batch_size is not None else d.batch_size),
        "lr": float(t.lr if t.lr is not None else d.lr),
        "momentum": float(t.momentum),
        "weight_decay": float(t.weight_decay),
        "poly_power": float(t.poly_power),
        "min_lr": float(t.min_lr),
        "amp": bool(t.amp),
    }
    settings.update(recipe_options(t))
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
        "reduction": (OmegaConf.to_container(cfg.merge, resolve=True)
                      if reduction_active(cfg, "train") else None),
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
