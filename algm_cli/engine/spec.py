"""The run specification: a frozen, validated view of a composed Hydra config, resolved once.

`resolve_spec(cfg)` reads the DictConfig once (model family from the registry, backbone facts,
dataset protocol, merge settings, training recipe, evaluation protocol), checks every value
through one error path (ConfigError) and returns a `RunSpec`; the stages take the spec (or plain
values from it), never the DictConfig. The run and training identities are hashes of the same
payloads as before the spec existed, so existing rows and checkpoints keep their ids.
"""

from __future__ import annotations

import sys
from pathlib import Path
from dataclasses import dataclass, field
from types import MappingProxyType

from omegaconf import DictConfig, OmegaConf

from ..data.transforms import IGNORE
from ..models.registry import BackboneFacts, Family, backbone as backbone_facts, family
from ..models.registry import NEWER_METHODS, SCHEDULE_METHODS, THRESHOLD_METHODS
from .store import config_key
from .tasks import check_task
from .train import recipe_options

# keys of the run config that do not change a run's result (left out of its identity)
BOOKKEEPING_KEYS = ("force", "results_dir", "work_dir", "experiment", "runs", "runs_by_dataset")


class ConfigError(ValueError):
    """A config value that cannot work, with a message naming the key and what is expected."""


def report_error(err: Exception, command: str) -> None:
    """Print one clear error line and exit with status 2 (no traceback)."""
    print(f"{command}: error: {err}", file=sys.stderr)
    sys.exit(2)


def frozen(mapping) -> MappingProxyType:
    """Return a read-only plain-container copy of a DictConfig / mapping (resolved)."""
    if isinstance(mapping, DictConfig):
        mapping = OmegaConf.to_container(mapping, resolve=True)
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class DatasetSpec:
    """Dataset protocol: name, files, classes, crop, sliding stride, resizes."""

    name: str
    root: str
    num_classes: int
    crop: int  # training crop = throughput / FLOPs square = sliding window
    stride: int  # sliding-window stride
    eval_short_side: int
    train_scale: tuple[int, int]
    ignore_index: int = IGNORE
    fingerprint: str | None = None  # of the training split (preflight.py): the data's identity


@dataclass(frozen=True)
class MergeSpec:
    """Merge settings: method, its options and the raw thresholds of both phases."""

    method: str
    options: MappingProxyType  # the merge group as plain values (conf/merge/<method>.yaml)
    during_training: bool
    batching: str
    bucket: int
    eval_thresholds: tuple  # (CLAP, GBM): a number, 'auto' or 'released'
    train_thresholds: tuple
    released_clap: float  # the backbone's hand-set CLAP threshold for this dataset

    @property
    def schedule_based(self) -> bool:
        """True for methods run as an encoder schedule (none, ALGM family, ToMe)."""
        return self.method in SCHEDULE_METHODS

    @property
    def newer(self) -> bool:
        """True for the newer training-free schedules (PiToMe, MPM, ATC)."""
        return self.method in NEWER_METHODS

    @property
    def threshold_based(self) -> bool:
        """True for ALGM and its ablations (CLAP / GBM thresholds)."""
        return self.method in THRESHOLD_METHODS

    def reduction_active(self, phase: str) -> bool:
        """True when a model-built reduction (baselines, Segformer++) acts in `phase`."""
        return not self.schedule_based and (phase == "eval" or self.during_training)

    def needs_calibration(self) -> bool:
        """True when some threshold of the run is `auto` (ALGM-family methods only)."""
        values = [*self.eval_thresholds, *self.train_thresholds]
        return self.threshold_based and any(isinstance(v, str) and v == "auto" for v in values)


@dataclass(frozen=True)
class TrainRecipe:
    """Resolved training settings (dataset defaults filled in, smoke applied)."""

    optimizer: str
    iterations: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    poly_power: float
    min_lr: float
    amp: bool
    checkpoint_every: int
    head_lr_mult: float = 1.0  # the released recipes' extras (engine/train.py RECIPE_DEFAULTS)
    warmup_iters: int = 0  # linear warm-up (SegViT, Segformer 1500; EVA + Mask2Former 500)
    warmup_ratio: float = 1e-6
    grad_clip: float | None = None
    norm_decay: bool = True
    layer_decay: float | None = None  # layer-wise LR decay (EVA + Mask2Former: 0.95)
    init_from: str | None = None  # fine-tuning: the trained checkpoint training starts from

    def settings(self) -> dict:
        """Return the settings that identify a trained model (everything but checkpointing)."""
        out = {k: getattr(self, k) for k in ("optimizer", "iterations", "batch_size", "lr",
                                             "momentum", "weight_decay", "poly_power",
                                             "min_lr", "amp", "head_lr_mult", "warmup_iters",
                                             "warmup_ratio", "grad_clip", "norm_decay")}
        if self.layer_decay is not None:
            out["layer_decay"] = self.layer_decay
        if self.init_from is not None:  # the start model is part of the identity
            path = Path(self.init_from)
            out["init_from"] = f"{path.resolve()}:{path.stat().st_mtime if path.exists() else 0}"
        return out


@dataclass(frozen=True)
class EvalProtocol:
    """Image counts and timing settings of evaluation, throughput, FLOPs and calibration."""

    images: int | None
    throughput_images: int | None  # None: every image (protocol=paper)
    throughput_batch: int
    warmup: int
    flops_images: int | None
    calibration_images: int | None
    sliding: bool
    throughput_mode: str
    throughput_rounds: int


@dataclass(frozen=True)
class RunSpec:
    """Everything a run needs, resolved and validated once from the Hydra config."""

    model: str
    model_options: MappingProxyType  # the model group (conf/model/<name>.yaml)
    family: Family
    backbone: BackboneFacts
    dataset: DatasetSpec
    merge: MergeSpec
    train: TrainRecipe | None  # None for commands without training (analyze, flops)
    eval: EvalProtocol | None
    seed: int
    smoke: bool
    device: str
    checkpoint: str | None
    stages: tuple[str, ...]
    experiment: str
    work_dir: str
    results_dir: str
    force: bool
    run_id: str  # identity of the run: the resolved config minus bookkeeping keys
    # the task group (conf/task: segmentation | pose) and the dataset group as plain values
    task: MappingProxyType = field(default_factory=lambda: frozen({"name": "segmentation"}))
    dataset_options: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))


def per_dataset(cfg: DictConfig, key: str) -> int:
    """Return `key` for this dataset: the model's override, else the backbone's, else the dataset's."""
    for group in (cfg.model, cfg.backbone):
        override = group.get(key, {}) or {}
        if cfg.dataset.name in override:
            return int(override[cfg.dataset.name])
    return int(cfg.dataset[key])


def thresholds(cfg: DictConfig, phase: str) -> tuple:
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


def threshold_value(value, key: str, released: float | None, calibrated: float | None):
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


def check_thresholds(cfg: DictConfig) -> None:
    """Raise ConfigError for any threshold setting that is neither auto, released nor in [-1, 1]."""
    keys = ("merge.clap_threshold", "merge.gbm_threshold")
    for phase, prefix in (("eval", ""), ("train", "train_")):
        for key, value in zip(keys, thresholds(cfg, phase)):
            if not (isinstance(value, str) and value in ("auto", "released")):
                threshold_value(value, key.replace("merge.", f"merge.{prefix}"), None, None)


def merge_spec(cfg: DictConfig) -> MergeSpec:
    """Return the merge settings of `cfg` (thresholds checked)."""
    m = cfg.merge
    check_thresholds(cfg)
    variant = m.get("variant")  # the baselines' keys interpolate from merge.<variant>
    if variant is not None and variant not in ("released", "paper"):
        raise ConfigError(f"merge.variant={variant!r}: expected released or paper")
    if m.get("learned") and not m.during_training:
        raise ConfigError(f"merge={m.method} is learned (its policy / heads train with the "
                          "model): merge.during_training must be true")
    released = cfg.backbone.released_clap_threshold
    return MergeSpec(
        method=str(m.method), options=frozen(m), during_training=bool(m.during_training),
        batching=str(m.get("batching", "min")), bucket=int(m.get("bucket", 0)),
        eval_thresholds=thresholds(cfg, "eval"), train_thresholds=thresholds(cfg, "train"),
        released_clap=float(released.get(cfg.dataset.name, released["default"])),
    )


def dataset_spec(cfg: DictConfig) -> DatasetSpec:
    """Return the dataset protocol of `cfg` (crop and stride per model / backbone / dataset)."""
    d = cfg.dataset
    return DatasetSpec(
        name=str(d.name), root=str(d.root), num_classes=int(d.num_classes),
        crop=per_dataset(cfg, "crop_size"), stride=per_dataset(cfg, "eval_stride"),
        eval_short_side=int(d.eval_short_side), train_scale=tuple(int(v) for v in d.train_scale),
        fingerprint=d.get("fingerprint"),
    )


def train_recipe(cfg: DictConfig) -> TrainRecipe:
    """Return the training recipe (dataset defaults filled in, smoke applied)."""
    t, d = cfg.train, cfg.dataset
    pick = lambda key: t[key] if t[key] is not None else d[key]  # noqa: E731
    iterations, batch_size = int(pick("iterations")), int(pick("batch_size"))
    if cfg.get("smoke"):
        iterations, batch_size = min(iterations, 3), min(batch_size, 2)
    return TrainRecipe(
        optimizer=str(t.get("optimizer", "sgd")), iterations=iterations, batch_size=batch_size,
        lr=float(pick("lr")), momentum=float(t.momentum), weight_decay=float(t.weight_decay),
        poly_power=float(t.poly_power), min_lr=float(t.min_lr), amp=bool(t.amp),
        checkpoint_every=int(t.checkpoint_every), **recipe_options(t),
        init_from=None if t.get("init_from") is None else str(t.init_from),
    )


def eval_protocol(cfg: DictConfig) -> EvalProtocol:
    """Return the evaluation protocol, shrunk when smoke=true."""
    e = cfg.eval
    count = lambda v: None if v is None else int(v)  # noqa: E731 - None: every image
    values = dict(images=e.images, throughput_images=count(e.throughput_images),
                  throughput_batch=int(e.throughput_batch), warmup=int(e.warmup),
                  flops_images=e.flops_images, calibration_images=count(e.calibration_images))
    if cfg.get("smoke"):
        values.update(images=2, throughput_images=2, throughput_batch=2, warmup=1,
                      flops_images=1, calibration_images=2)
    return EvalProtocol(**values, sliding=bool(e.sliding),
                        throughput_mode=str(e.throughput_mode),
                        throughput_rounds=int(e.get("throughput_rounds", 1)))


def run_key(cfg: DictConfig) -> str:
    """Return the identity of a run: the resolved config minus bookkeeping keys."""
    payload = OmegaConf.to_container(cfg, resolve=True)
    for key in BOOKKEEPING_KEYS:
        payload.pop(key, None)
    return config_key(payload)


def resolve_spec(cfg: DictConfig) -> RunSpec:
    """Return the validated RunSpec of a composed config; ConfigError names the bad key."""
    if isinstance(cfg, RunSpec):
        return cfg
    try:
        fam = family(str(cfg.model.name))
        merge = merge_spec(cfg)
        fam.check(str(cfg.backbone.name), merge.method, merge.batching, merge.bucket)
        facts = backbone_facts(str(cfg.backbone.name))
        task = frozen(cfg.task) if cfg.get("task") is not None else frozen({"name": "segmentation"})
        check_task(fam.name, task, frozen(cfg.dataset))  # engine/tasks.py
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(str(err)) from None
    # a command without training / evaluation groups (analyze, flops) may still carry a model's
    # partial `train:` overrides (recipes set iterations too); the group counts only when it is
    # complete (checkpoint_every exists only in conf/train/)
    has = lambda key, probe: key in cfg and cfg[key] is not None and probe in cfg[key]  # noqa: E731
    model_options = frozen(cfg.model)
    if cfg.get("checkpoint") is not None:  # every weight comes from it: no start weights to fetch
        model_options = MappingProxyType({**model_options, "pretrained": False})
    return RunSpec(
        model=fam.name, model_options=model_options, family=fam, backbone=facts,
        dataset=dataset_spec(cfg), merge=merge,
        train=train_recipe(cfg) if has("train", "checkpoint_every") else None,
        eval=eval_protocol(cfg) if has("eval", "images") else None,
        seed=int(cfg.get("seed", 0)), smoke=bool(cfg.get("smoke", False)),
        device=str(cfg.get("device", "auto")),
        checkpoint=None if cfg.get("checkpoint") is None else str(cfg.checkpoint),
        stages=tuple(cfg.get("stages", ())), experiment=str(cfg.get("experiment", "")),
        work_dir=str(cfg.get("work_dir", "runs")), results_dir=str(cfg.get("results_dir", "")),
        force=bool(cfg.get("force", False)), run_id=run_key(cfg),
        task=task, dataset_options=frozen(cfg.dataset),
    )
