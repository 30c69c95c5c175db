"""Tasks of a run (segmentation, pose): their checks, identity and the pose models.

Pose (`task=pose`) reuses the Segformer family: the same MiT encoder and Segformer++ merging (or
the downsampling baseline) with a keypoint heatmap head (models/pose.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..models.pose import DownsampledSegformerPose, SegformerPose
from ..models.registry import BuildRequest
from ..models.segformer import segformer_options, segformerpp_preset

TASKS = ("segmentation", "pose")


class TaskError(ValueError):
    """A task setting that cannot work (reported like a ConfigError)."""


def task_name(spec) -> str:
    """Return the run's task (segmentation when the spec has none)."""
    return str(getattr(spec, "task", {"name": "segmentation"})["name"])


def check_task(model: str, task: Mapping, dataset: Mapping) -> None:
    """Raise TaskError when the task does not exist or does not fit the model / dataset."""
    name = str(task["name"])
    if name not in TASKS:
        raise TaskError(f"task={name!r} is not available; expected one of {', '.join(TASKS)}")
    if name == "pose":
        if model != "segformer":
            raise TaskError(f"task=pose needs model=segformer (a MiT backbone); got model={model}")
        if "num_keypoints" not in dataset:
            raise TaskError(f"dataset={dataset['name']} has no keypoints; task=pose expects "
                            f"dataset=synthetic_pose or coco_keypoints")
    elif "num_keypoints" in dataset:
        raise TaskError(f"dataset={dataset['name']} is a keypoints dataset; add task=pose")


def task_payload(spec) -> dict | None:
    """Return what the task adds to a trained model's identity (None for segmentation)."""
    if task_name(spec) == "segmentation":
        return None
    return {"task": task_name(spec), "sigma": float(spec.task["sigma"])}


def build_pose_model(request: BuildRequest, method: str, task: Mapping):
    """Return the pose Segformer of `request`: a Segformer++ preset or the downsampling baseline.

    `request.reduction_active`: whether the run's reduction acts in this phase (else plain).
    """
    m = request.merge
    variant = request.backbone.removeprefix("mit_")
    options = {**segformer_options(request), "sigma": float(task["sigma"])}
    active = request.reduction_active
    if method == "downsample" and active:
        return DownsampledSegformerPose(
            variant, request.num_classes, None, **options, factor=float(m["setting"]),
            interpolation=str(m.get("interpolation", "nearest")))
    preset = segformerpp_preset(method if active and method != "downsample" else "none")
    return SegformerPose(variant, request.num_classes, preset, **options)
