"""Fine-tuning (`train.init_from=PATH`): start training from a trained model, merging active.

The paper's "Fine-tuning" setting (supp. Tab. 4d, supp. Tab. 6; EVA: 10k iterations at batch 8)
takes a model trained without merging and trains it further with merging for a short schedule.
Here `train.init_from` names that model's checkpoint (any format `checkpoint=` reads:
this project's, official Segmenter, released SETR / SegViT / Segformer; models/convert.py), or reads `baseline`: the checkpoint `algm run merge=none` trains for the same model,
backbone, dataset, seed and training settings at the dataset's full schedule (it must exist:
presets list the baseline run first). Training then runs `train.iterations` iterations (set it: the dataset default is a full
schedule) with a fresh optimizer and LR schedule and the run's merge config active; the row's
`setting` column reads `fine_tuning`. The weights a learned method adds (CTS policy, exit heads)
are absent from a plain checkpoint and start freshly initialised; every other key must fit.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from ..models.convert import convert_state_dict, read_checkpoint
from ..models.pretrained import mismatch
from ..models.schedule import NO_MERGE
from .setup import train_key
from .spec import ConfigError, RunSpec

BASELINE = "baseline"  # train.init_from=baseline: the trained baseline of the same config

# parameters a learned method adds to its network (may be missing from the checkpoint)
ADDED_PREFIXES = ("policy.", "exit_heads.")


def resolve_baseline(spec: RunSpec, full_iterations: int, work: Path) -> RunSpec:
    """Return `spec` with train.init_from=baseline replaced by that baseline's checkpoint path.

    full_iterations: the schedule the baseline was trained with (the dataset's, smoke applied).
    """
    base = replace(spec, train=replace(spec.train, iterations=full_iterations, init_from=None),
                   merge=replace(spec.merge, during_training=False))  # no training-time reduction
    path = work / "checkpoints" / f"{train_key(base, NO_MERGE)}.pt"
    if not path.is_file():
        raise ConfigError(f"train.init_from=baseline: no trained baseline at {path}; train it "
                          f"first with the same overrides and merge=none (train.iterations unset)")
    return replace(spec, train=replace(spec.train, init_from=str(path)))


def init_from(spec: RunSpec) -> Path | None:
    """Return the fine-tuning start checkpoint (None when not fine-tuning); check the spec."""
    value = None if spec.train is None else spec.train.init_from
    if value is None:
        return None
    path = Path(str(value))
    if not path.is_file():
        raise ConfigError(f"train.init_from={value}: no such file (expected a trained checkpoint)")
    if spec.checkpoint is not None:
        raise ConfigError("train.init_from and checkpoint= exclude each other: checkpoint= "
                          "evaluates a model, train.init_from fine-tunes one")
    if spec.merge.method == "none" or not spec.merge.during_training:
        raise ConfigError("train.init_from fine-tunes with merging: needs a merge method and "
                          "merge.during_training=true")
    return path


def load_start(model: torch.nn.Module, path: Path) -> None:
    """Load `path` into model; only the learned method's added parameters may be missing."""
    try:
        state, _ = convert_state_dict(read_checkpoint(path), model)
    except ValueError as err:
        raise ConfigError(f"train.init_from={path}: {err}") from None
    # the learned method's added parameters may be missing; every other key must fit
    own = {k: v for k, v in model.state_dict().items()
           if k in state or not k.startswith(ADDED_PREFIXES)}
    problems = mismatch(own, state)
    if problems:
        raise ConfigError(f"train.init_from={path} does not fit the model: {problems}")
    model.load_state_dict(state, strict=False)
