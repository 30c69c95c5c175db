"""Turn a run spec into the objects of a run: schedules, models, training keys, device, batches.

Every function takes the `RunSpec` (engine/spec.py); a composed DictConfig is accepted too and
resolved on the spot (tests, scripts). The names other modules import from here stay here:
`build_model`, `build_schedule`, `ConfigError`, `report_error`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from ..models.base import SegmentationModel
from ..models.registry import NEWER_METHODS, SCHEDULE_METHODS, THRESHOLD_METHODS, BuildRequest
from ..models.schedule import (
    NO_MERGE, MergeSchedule, MergeStepSpec, algm_schedule, newer_schedule,
)
from .spec import (
    ConfigError, RunSpec, check_thresholds, report_error, resolve_spec, run_key, thresholds,
    threshold_value,
)
from .store import config_key as config_hash
from .tasks import build_pose_model, task_name, task_payload

# the ALGM family (calibrated thresholds), kept under its old name for importers
ALGM_METHODS = THRESHOLD_METHODS

__all__ = [
    "ALGM_METHODS", "SCHEDULE_METHODS", "Batches", "ConfigError", "build_model",
    "build_schedule", "check_model_merge", "check_thresholds", "crop_size", "eval_stride",
    "pick_device", "report_error", "resolve_spec", "run_key", "thresholds", "train_key",
]


def crop_size(spec) -> int:
    """Return the crop (= training crop, throughput/FLOPs square) for this model and dataset."""
    return resolve_spec(spec).dataset.crop


def eval_stride(spec) -> int:
    """Return the sliding-window stride for this model and dataset."""
    return resolve_spec(spec).dataset.stride


def check_model_merge(spec) -> None:
    """Raise ConfigError when model, backbone, merge method or batching do not fit together."""
    resolve_spec(spec)


def build_schedule(spec, phase: str, tau: float | None) -> MergeSchedule:
    """Return the merge schedule of `phase` ("train" / "eval"); `tau` is the calibrated value."""
    spec = resolve_spec(spec)
    merge, m = spec.merge, spec.merge.options
    if merge.method == "none" or not merge.schedule_based or (
            phase == "train" and not merge.during_training):
        return NO_MERGE  # baselines and Segformer++ are built into the model (build_model)
    options = dict(
        window=tuple(m["window"]), placement=m["placement"], metric=m["metric"],
        value=m["value"], reduce=bool(m["reduce"]),
        proportional_attention=bool(m["proportional_attention"]), inclusive=bool(m["inclusive"]),
    )
    try:
        if merge.method == "tome":
            depth = spec.backbone.depth
            steps = tuple(MergeStepSpec(layer, "tome", r=int(m["tome_r"]))
                          for layer in range(1, depth + 1))
            return MergeSchedule(steps, **options)
        if merge.method in NEWER_METHODS:
            return newer_schedule(merge.method, spec.backbone.depth, float(m["setting"]),
                                  newer_layers(merge.method, m, spec.backbone.depth),
                                  m["margin_rule"], m["linkage"], **options)
        clap_raw, gbm_raw = merge.train_thresholds if phase == "train" else merge.eval_thresholds
        clap = threshold_value(clap_raw, "merge.clap_threshold", merge.released_clap, tau)
        gbm = threshold_value(gbm_raw, "merge.gbm_threshold", None, tau)
        rule = "released" if gbm == "released" else "fixed"
        return algm_schedule(
            clap if m["clap_layer"] is not None else None,
            None if rule == "released" else gbm,
            clap_layer=m["clap_layer"],
            gbm_layers=tuple(int(x) for x in m["gbm_layers"]),
            gbm_rule=rule,
            **options,
        )
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"merge config: {err}") from None


def newer_layers(method: str, m, depth: int) -> tuple[int, ...]:
    """Return the layers of a newer merge: `merge.layers`, else its default placement.

    Defaults: PiToMe every block (as released); MPM ALGM's positions (layer 1 and the GBM
    layers); ATC the GBM layers (one clustering in the middle of the encoder).
    """
    if m.get("layers") is not None:
        return tuple(int(x) for x in m["layers"])
    gbm = tuple(int(x) for x in m["gbm_layers"])
    return {"pitome": tuple(range(1, depth + 1)), "mpm": (1, *gbm), "atc": gbm}[method]


def build_model(spec, schedule: MergeSchedule, phase: str = "eval") -> SegmentationModel:
    """Return the configured model with `schedule` (ALGM / ToMe steps of ViT models).

    Baselines (EViT, ACT, ELViT, AiluRus, dense ToMe) and Segformer++ are part of the model; they
    act at inference, and in training only with merge.during_training=true (`phase`="train").
    Every variant of a model family holds the same parameters, so one checkpoint serves all.
    """
    spec = resolve_spec(spec)
    merge = spec.merge
    request = BuildRequest(
        backbone=spec.backbone.name, num_classes=spec.dataset.num_classes,
        img_size=spec.dataset.crop, schedule=schedule, model=spec.model_options,
        merge=merge.options, reduction_active=merge.reduction_active(phase),
        batching=merge.batching, bucket=merge.bucket,
        train_iterations=spec.train.iterations if spec.train is not None else 1,
    )
    try:
        if task_name(spec) == "pose":  # the pose heads of the Segformer family (engine/tasks.py)
            return build_pose_model(request, merge.method, spec.task)
        return spec.family.build(request, merge.method)
    except ValueError as err:
        raise ConfigError(f"model config: {err}") from None


def schedule_payload(schedule: MergeSchedule) -> dict:
    """Return a JSON-able description of a schedule (for hashing and rows)."""
    return json.loads(json.dumps(schedule, default=lambda o: o.__dict__))


def inference_model(spec, trained: SegmentationModel,
                    eval_schedule: MergeSchedule) -> SegmentationModel:
    """Return the model that evaluates `trained` (built for training) with the eval schedule.

    A reduction active only at inference (training-free baselines, Segformer++) needs the eval
    build holding the same parameters; ALGM / ToMe only swap the schedule.
    """
    if spec.merge.reduction_active("train") != spec.merge.reduction_active("eval"):
        model = build_model(spec, eval_schedule, "eval")
        model.load_state_dict(trained.state_dict())
        return model
    if hasattr(trained, "schedule"):
        trained.schedule = eval_schedule
    return trained


def train_key(spec: RunSpec, train_schedule: MergeSchedule) -> str:
    """Return the identity of a trained model: everything that changes its weights."""
    d = spec.dataset
    return config_hash({
        "model": dict(spec.model_options),
        "backbone": spec.backbone.name,
        # train_scale as its text, as the DictConfig list was hashed (keeps checkpoint ids)
        "dataset": {"name": d.name, "num_classes": d.num_classes,
                    "train_scale": str(list(d.train_scale)),
                    # the data itself (set by the preflight of `algm run`)
                    **({"fingerprint": d.fingerprint} if d.fingerprint else {})},
        "crop": d.crop,
        "train": spec.train.settings(),
        "schedule": schedule_payload(train_schedule),
        "reduction": dict(spec.merge.options) if spec.merge.reduction_active("train") else None,
        "seed": spec.seed,
        **({"task": task} if (task := task_payload(spec)) is not None else {}),
    })


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
