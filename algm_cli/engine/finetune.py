"""Fine-tuning (`train.init_from=PATH`): start training from a trained model, merging active.

The paper's "Fine-tuning" setting (supp. Tab. 4d, supp. Tab. 6; EVA: 10k iterations at batch 8)
takes a model trained without merging and trains it further with merging for a short schedule.
Here `train.init_from` names that model's checkpoint (this project's or an official Segmenter
one); training then runs `train.iterations` iterations (set it: the dataset default is a full
schedule) with a fresh optimizer and LR schedule and the run's merge config active; the row's
`setting` column reads `fine_tuning`. The weights a learned method adds (CTS policy, exit heads)
are absent from a plain checkpoint and start freshly initialised; every other key must fit.
"""

from __future__ import annotations

from pathlib import Path

import torch
from ..models.segmenter import convert_official_state_dict
from .spec import ConfigError, RunSpec

# parameters a learned method adds to its network (may be missing from the checkpoint)
ADDED_PREFIXES = ("policy.", "exit_heads.")


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
    raw = torch.load(path, map_location="cpu", weights_only=True)
    state = convert_official_state_dict(raw, model)
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(ADDED_PREFIXES)]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise ConfigError(f"train.init_from={path} does not fit the model: missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}, mis-shaped {shapes[:3]}")
    model.load_state_dict(state, strict=False)
