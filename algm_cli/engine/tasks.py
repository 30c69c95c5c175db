"""Segformer variants of a run: Segformer++ presets, the downsampling baseline, the pose task.

One entry point for the runner (`build_segformer`), so the model registry can take it over whole.
"""

from __future__ import annotations

from omegaconf import DictConfig

from ..models.downsample import DownsampledSegformer
from ..models.pose import DownsampledSegformerPose, SegformerPose
from ..models.segformer import Segformer, segformerpp_preset

TASKS = ("segmentation", "pose")


class TaskError(ValueError):
    """A task setting that cannot work (reported like a ConfigError)."""


def task_name(cfg: DictConfig) -> str:
    """Return the run's task (segmentation when the config has no task group)."""
    task = cfg.get("task")
    return "segmentation" if task is None else str(task.name)


def check_task(cfg: DictConfig) -> None:
    """Raise TaskError when the task does not exist or does not fit the model / dataset."""
    task = task_name(cfg)
    if task not in TASKS:
        raise TaskError(f"task={task!r} is not available; expected one of {', '.join(TASKS)}")
    if task == "pose":
        if cfg.model.name != "segformer":
            raise TaskError(f"task=pose needs model=segformer (a MiT backbone); got "
                            f"model={cfg.model.name}")
        if "num_keypoints" not in cfg.dataset:
            raise TaskError(f"dataset={cfg.dataset.name} has no keypoints; task=pose expects "
                            f"dataset=synthetic_pose or coco_keypoints")
    elif "num_keypoints" in cfg.dataset:
        raise TaskError(f"dataset={cfg.dataset.name} is a keypoints dataset; add task=pose")


def task_payload(cfg: DictConfig) -> dict | None:
    """Return what the task adds to a trained model's identity (None for segmentation)."""
    if task_name(cfg) == "segmentation":
        return None
    return {"task": task_name(cfg), "sigma": float(cfg.task.sigma)}


def build_segformer(cfg: DictConfig, active: bool) -> Segformer:
    """Return the run's Segformer: segmentation or pose, Segformer++ preset or downsampling.

    `active`: whether the run's reduction acts in this phase (else the plain model).
    """
    m, variant = cfg.merge, str(cfg.backbone.variant)
    options = {"drop_path": float(cfg.model.drop_path)}
    pose = task_name(cfg) == "pose"
    if pose:
        options["sigma"] = float(cfg.task.sigma)
    outputs = int(cfg.dataset.num_keypoints if pose else cfg.dataset.num_classes)
    if m.method == "downsample" and active:
        down = {"factor": float(m.setting), "interpolation": str(m.get("interpolation", "nearest"))}
        cls = DownsampledSegformerPose if pose else DownsampledSegformer
        return cls(variant, outputs, None, **options, **down)
    preset = segformerpp_preset(m.method if active and m.method != "downsample" else "none")
    return (SegformerPose if pose else Segformer)(variant, outputs, preset, **options)
