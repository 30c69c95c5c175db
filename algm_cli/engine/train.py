"""Training with Segmenter's recipe: SGD, polynomial LR per iteration, the model's own loss.

Checkpoints are written atomically every `checkpoint_every` iterations and at the end, the one
before kept as `<name>.prev`; a rerun resumes from the latest one and says so ("resuming from
iteration 100 of 300"). A checkpoint also holds the torch random-number state (dropout, drop
path), and the batches are a function of (seed, iteration), so a resumed run equals an
uninterrupted one (on the CPU; CUDA kernels may differ in the last bits). An unreadable resume
checkpoint is named, moved aside to `<name>.corrupt`, and training restarts from `<name>.prev`
(or from scratch when there is none). Under `torchrun --nproc_per_node=N` (WORLD_SIZE > 1) the model runs
in DistributedDataParallel, each rank drawing its own samples; no SLURM variables are needed.
"""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from ..data.transforms import IGNORE
from ..models.base import TrainingObjective


def poly_lr(base_lr: float, iteration: int, total: int, power: float, min_lr: float) -> float:
    """Return the polynomial-decay LR at `iteration` (0-based) of `total`."""
    return (base_lr - min_lr) * (1 - iteration / total) ** power + min_lr


def warmup_factor(iteration: int, warmup: int, ratio: float = 1e-6) -> float:
    """Return mmcv's linear warm-up factor: from `ratio` at 0 to 1 at `warmup` iterations."""
    if iteration >= warmup:
        return 1.0
    return 1.0 - (1.0 - iteration / warmup) * (1.0 - ratio)


# extra recipe keys of `train:` (the released SETR / SegViT / Segformer recipes) and defaults
RECIPE_DEFAULTS = {"head_lr_mult": 1.0, "warmup_iters": 0, "warmup_ratio": 1e-6,
                   "grad_clip": None, "norm_decay": True, "layer_decay": None}


def recipe_options(train_cfg) -> dict:
    """Return the extra recipe settings of a `train:` config, defaults filled in."""
    out = {}
    for key, default in RECIPE_DEFAULTS.items():
        value = train_cfg.get(key, default)
        out[key] = value if value is None else type(default if default is not None else 0.0)(value)
    return out


def param_groups(model: nn.Module, head_lr_mult: float, norm_decay: bool) -> list[dict]:
    """Return optimizer groups: encoder vs head (every parameter outside `encoder.`), with or
    without weight decay for norm parameters (mmseg's custom_keys 'head' lr_mult, 'norm'
    decay_mult 0: names containing 'norm'); each group carries its `lr_mult`."""
    groups: dict[tuple[float, bool], list] = {}
    for name, param in model.named_parameters():
        mult = 1.0 if name.startswith("encoder.") else head_lr_mult
        decay = norm_decay or "norm" not in name
        groups.setdefault((mult, decay), []).append(param)
    return [{"params": params, "lr_mult": mult, **({} if decay else {"weight_decay": 0.0})}
            for (mult, decay), params in groups.items()]


def save_atomic(obj: dict, path: Path, keep_previous: bool = False) -> None:
    """torch.save to a temporary file, then rename into place (the old file -> `previous`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    if keep_previous and path.is_file():
        os.replace(path, previous(path))
    os.replace(tmp, path)


def previous(path: Path) -> Path:
    """Return where the checkpoint written before `path`'s current one is kept."""
    return path.with_name(f"{path.name}.prev")


def rng_state() -> dict:
    """Return the torch random-number states (CPU, and every CUDA device when present)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the states `rng_state` returned."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_resume_state(checkpoint: Path, device: torch.device) -> tuple[dict, Path] | None:
    """Return (state, file) of the newest readable checkpoint (it, else the previous), or None.

    An unreadable file is moved aside to `<name>.corrupt` with a note naming it.
    """
    for path in (checkpoint, previous(checkpoint)):
        if not path.is_file():
            continue
        try:
            state = torch.load(path, map_location=device, weights_only=True)
            if not {"model", "optimizer", "iteration"} <= set(state):
                raise ValueError("not a training checkpoint (model, optimizer, iteration)")
        except Exception as err:  # noqa: BLE001 - truncated, empty or foreign files alike
            aside = path.with_name(f"{path.name}.corrupt")
            try:
                os.replace(path, aside)
            except FileNotFoundError:
                pass  # another rank of this job moved it already
            first = (str(err).splitlines() or [""])[0]
            reason = first.split(". ")[0][:120] or type(err).__name__
            print(f"checkpoint {path} is unreadable ({reason}); moved to {aside}",
                  file=sys.stderr)
            continue
        return state, path
    return None


OPTIMIZERS = ("sgd", "adamw")


def make_optimizer(name: str, params, lr: float, momentum: float, weight_decay: float):
    """Return SGD (Segmenter, SETR, SegViT recipes) or AdamW (Segformer's recipe)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"train.optimizer={name!r}: expected one of {list(OPTIMIZERS)}")


def distributed() -> tuple[int, int]:
    """Return (rank, world size), initialising the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank() if world > 1 else 0), world


def train(
    model: nn.Module,
    batches: Callable[[int], Iterator[tuple[Tensor, Tensor]]],
    *,
    iterations: int,
    lr: float,
    checkpoint: Path,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    poly_power: float = 0.9,
    min_lr: float = 1e-5,
    checkpoint_every: int = 500,
    ignore_index: int = IGNORE,
    amp: bool = False,
    optimizer: str = "sgd",
    device: torch.device = torch.device("cpu"),
    meter=None,
    head_lr_mult: float = 1.0,
    warmup_iters: int = 0,
    warmup_ratio: float = 1e-6,
    grad_clip: float | None = None,
    norm_decay: bool = True,
    layer_decay: float | None = None,
) -> dict:
    """Train `model` in place; return {"iterations", "final_loss"} and leave `checkpoint` written.

    batches(start) yields (images (B,3,S,S), labels (B,S,S)) from iteration `start` on.
    LR per iteration: poly decay times the linear warm-up factor, times each group's lr_mult
    (head_lr_mult for parameters outside the encoder) and lr_scale (layer_decay: layer-wise LR
    decay for models with `param_groups(weight_decay, layer_decay)`, EVA + Mask2Former);
    grad_clip: max gradient norm. A checkpoint holds {"model", "optimizer", "iteration", "rng"};
    a finished one (iteration == iterations) is loaded and training is skipped. `meter`
    (engine.memory.TrainMeter) measures training peak memory and images/s per iteration.
    """
    rank, world = distributed()
    model.to(device)
    if layer_decay is not None:
        if not hasattr(model, "param_groups"):
            raise ValueError("train.layer_decay needs a model with layer-wise parameter groups "
                             "(model=mask2former)")
        groups = model.param_groups(weight_decay, layer_decay)
    else:
        groups = param_groups(model, head_lr_mult, norm_decay)
    optimizer = make_optimizer(optimizer, groups, lr, momentum, weight_decay)
    start = 0
    found = read_resume_state(checkpoint, device)
    if found is not None:
        state, path = found
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise ValueError(f"checkpoint {path} does not fit this model: "
                             f"{str(err).splitlines()[0][:200]}") from None
        start = int(state["iteration"])
        if "rng" in state:
            set_rng_state(state["rng"])
        if rank == 0:
            print(f"resuming from iteration {start} of {iterations} ({path})" if start <
                  iterations else f"trained model found ({path}): training skipped")
    objective = TrainingObjective(model, ignore_index)  # the model's own loss (SETR aux, SegViT ATM)
    net = nn.parallel.DistributedDataParallel(objective) if world > 1 else objective
    net.train()
    loss_value = float("nan")
    progress = tqdm(total=iterations, initial=start, desc="train", disable=rank != 0, leave=False)
    stream = batches(start)
    for it in range(start, iterations):
        base = poly_lr(lr, it, iterations, poly_power, min_lr)
        base *= warmup_factor(it, warmup_iters, warmup_ratio) if warmup_iters else 1.0
        for group in optimizer.param_groups:
            group["lr"] = base * group.get("lr_mult", 1.0) * group.get("lr_scale", 1.0)
        images, labels = next(stream)
        images, labels = images.to(device), labels.to(device)
        measured = (meter.iteration(it - start, images.shape[0] * world, model, optimizer,
                                    images, labels) if meter is not None else nullcontext())
        with measured:
            with torch.autocast(device.type, dtype=torch.bfloat16,
                                enabled=amp and device.type == "cuda"):
                loss = net(images, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
        loss_value = loss.item()
        progress.update(1)
        progress.set_postfix(loss=f"{loss_value:.3f}", refresh=False)  # shown at the next print
        done = it + 1
        if rank == 0 and (done % checkpoint_every == 0 or done == iterations):
            save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "iteration": done, "rng": rng_state()}, checkpoint, keep_previous=True)
    progress.close()
    model.eval()
    return {"iterations": iterations, "final_loss": loss_value}
