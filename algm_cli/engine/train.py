"""Training with Segmenter's recipe: SGD, polynomial LR per iteration, the model's own loss.

Checkpoints are written atomically every `checkpoint_every` iterations and at the end; a rerun
resumes from the latest one. Under `torchrun --nproc_per_node=N` (WORLD_SIZE > 1) the model runs
in DistributedDataParallel, each rank drawing its own samples; no SLURM variables are needed.
"""

from __future__ import annotations

import os
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


def save_atomic(obj: dict, path: Path) -> None:
    """torch.save to a temporary file, then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
) -> dict:
    """Train `model` in place; return {"iterations", "final_loss"} and leave `checkpoint` written.

    batches(start) yields (images (B,3,S,S), labels (B,S,S)) from iteration `start` on.
    A checkpoint holds {"model", "optimizer", "iteration"}; a finished one (iteration ==
    iterations) is loaded and training is skipped.
    """
    rank, world = distributed()
    model.to(device)
    optimizer = make_optimizer(optimizer, model.parameters(), lr, momentum, weight_decay)
    start = 0
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["iteration"])
    objective = TrainingObjective(model, ignore_index)  # the model's own loss (SETR aux, SegViT ATM)
    net = nn.parallel.DistributedDataParallel(objective) if world > 1 else objective
    net.train()
    loss_value = float("nan")
    progress = tqdm(total=iterations, initial=start, desc="train", disable=rank != 0, leave=False)
    stream = batches(start)
    for it in range(start, iterations):
        for group in optimizer.param_groups:
            group["lr"] = poly_lr(lr, it, iterations, poly_power, min_lr)
        images, labels = next(stream)
        images, labels = images.to(device), labels.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            loss = net(images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_value = loss.item()
        progress.update(1)
        progress.set_postfix(loss=f"{loss_value:.3f}")
        done = it + 1
        if rank == 0 and (done % checkpoint_every == 0 or done == iterations):
            save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "iteration": done}, checkpoint)
    progress.close()
    model.eval()
    return {"iterations": iterations, "final_loss": loss_value}
