"""Training peak memory and training speed, measured around the iterations of the train stage.

Peak memory (`train_peak_mem_mb`, MiB):
- CUDA: `torch.cuda.max_memory_allocated` over the whole training loop (statistics reset when
  the loop starts), the number Segformer++ reports as training VRAM (their README's "Memory");
- CPU: the peak of live tensor storage during one tracked iteration (forward, backward and
  optimizer step), counted by `TensorMemoryTracker`: a TorchDispatchMode that adds the bytes of
  every new storage an operator returns and subtracts them when the storage is freed, on top of
  the storages alive when tracking starts (parameters, gradients, optimizer state, the batch).
  It counts tensors, not allocator caches or Python objects, so it is comparable between runs
  of this project, not with RSS. Only one iteration is tracked because the mode costs Python
  time per operator; that iteration is left out of the speed.

Speed (`train_ims`, images/s): images of the timed iterations / their wall time (device
synchronised on both sides). The first iteration (allocations, lazy initialisation) and the
tracked CPU iteration are not timed; with too few iterations every one is timed.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

MIB = 2**20


def _storages(obj) -> Iterator[torch.UntypedStorage]:
    """Yield the storages of the (dense, materialised) tensors among the leaves of `obj`."""
    for leaf in tree_flatten(obj)[0]:
        dense = isinstance(leaf, torch.Tensor) and leaf.layout == torch.strided
        if dense and leaf.device.type != "meta":
            yield leaf.untyped_storage()


class TensorMemoryTracker(TorchDispatchMode):
    """Dispatch mode tracking live tensor-storage bytes and their peak (`peak_bytes`)."""

    def __init__(self, alive: list[torch.Tensor] = ()) -> None:
        super().__init__()
        self._seen: dict[int, int] = {}
        self.live_bytes = 0
        self.peak_bytes = 0
        for storage in _storages(list(alive)):
            self._add(storage)

    def _release(self, key: int, nbytes: int) -> None:
        if self._seen.pop(key, None) is not None:
            self.live_bytes -= nbytes

    def _add(self, storage: torch.UntypedStorage) -> None:
        key = storage.data_ptr()
        if key == 0 or key in self._seen:
            return
        nbytes = storage.nbytes()
        self._seen[key] = nbytes
        self.live_bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        weakref.finalize(storage, self._release, key, nbytes)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for storage in _storages(out):
            self._add(storage)
        return out


def module_tensors(*objects) -> list[torch.Tensor]:
    """Return the parameters, gradients and buffers of modules and the state of optimizers."""
    tensors: list[torch.Tensor] = []
    for obj in objects:
        if isinstance(obj, nn.Module):
            for p in obj.parameters():
                tensors += [p.detach()] + ([p.grad] if p.grad is not None else [])
            tensors += list(obj.buffers())
        elif isinstance(obj, torch.optim.Optimizer):
            tensors += [t for t in tree_flatten(obj.state_dict()["state"])[0]
                        if isinstance(t, torch.Tensor)]
    return tensors


class TrainMeter:
    """Measures training peak memory and images/s; wrap each iteration in `iteration(...)`."""

    def __init__(self, device: torch.device, total: int) -> None:
        self.device = device
        self.total = total
        self.tracked = 1 if (device.type != "cuda" and total > 1) else -1
        self.timed_images = 0
        self.timed_seconds = 0.0
        self.peak_bytes: int | None = None
        self.seen = False  # no iteration ran (a finished checkpoint was loaded): nothing measured
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def iteration(self, index: int, images: int, *alive) -> Iterator[None]:
        """Time (and on CPU possibly track) iteration `index` of `images` images.

        `alive`: modules / optimizers / tensors whose storages exist before the iteration.
        """
        self.seen = True
        track = index == self.tracked
        timed = not track and (index > 0 or self.total <= 2 - (self.tracked > 0))
        if track:
            tracker = TensorMemoryTracker(module_tensors(*alive))
            with tracker:
                yield
            self.peak_bytes = tracker.peak_bytes
            return
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        if timed:
            self.timed_seconds += time.perf_counter() - start
            self.timed_images += images

    def result(self) -> dict:
        """Return {"train_peak_mem_mb", "train_ims", "train_mem_method"} (None when unmeasured)."""
        if not self.seen:
            return {"train_peak_mem_mb": None, "train_ims": None, "train_mem_method": None}
        if self.device.type == "cuda":
            peak, method = torch.cuda.max_memory_allocated(self.device), "cuda_max_allocated"
        else:
            peak, method = self.peak_bytes, "tensor_storage_peak"
        ims = self.timed_images / self.timed_seconds if self.timed_seconds > 0 else None
        return {"train_peak_mem_mb": None if peak is None else peak / MIB, "train_ims": ims,
                "train_mem_method": method}
