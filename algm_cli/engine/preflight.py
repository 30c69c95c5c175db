"""Preflight of `algm run`: every check that can fail cheaply, before the first expensive stage.

A bad value found after calibration and training costs hours on ADE20K, so `preflight(cfg)` runs
first and raises ConfigError / DatasetError with one line naming the key, file or folder:
- config values: integer counts (train.iterations, batch size, checkpoint interval, image counts)
  must be integers >= their minimum, rates numbers, merge.window two sizes >= 1, thresholds auto,
  released or a number in [-1, 1] (naming the key that set it: tau, eval_tau, merge.*);
- folders: results_dir and work_dir are created and a probe file written and removed;
- data: the splits the stages read are opened and a few samples of each decoded (first, middle,
  last), and the training split is fingerprinted (data identity, see fingerprint.py).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, ListConfig, open_dict

from ..data import DatasetError
from .data import open_dataset
from .fingerprint import data_fingerprint
from .spec import ConfigError, dataset_spec, merge_spec
from .tasks import check_task

# (key, smallest allowed value, null allowed): integer settings of a run
INTEGER_KEYS = (
    ("train.iterations", 1, True), ("train.batch_size", 1, True),
    ("train.checkpoint_every", 1, False), ("eval.images", 1, True),
    ("eval.throughput_images", 1, True), ("eval.throughput_batch", 1, False),
    ("eval.warmup", 0, False), ("eval.throughput_rounds", 1, True),
    ("eval.flops_images", 1, True), ("eval.calibration_images", 1, True),
    ("merge.tome_r", 0, True), ("seed", 0, False),
)
# (key, smallest allowed value, strictly above it): real-valued settings
NUMBER_KEYS = (("train.lr", 0.0, True), ("train.momentum", 0.0, False),
               ("train.weight_decay", 0.0, False), ("train.poly_power", 0.0, False),
               ("train.min_lr", 0.0, False))
SAMPLES_READ = 3  # samples decoded per split (first, middle, last)


@dataclass
class Checked:
    """What the preflight opened: the datasets of the needed splits and their fingerprints."""

    datasets: dict  # split -> dataset
    fingerprints: dict  # split -> fingerprint text


def lookup(cfg: DictConfig, key: str):
    """Return the value at dotted `key` (None when absent)."""
    node = cfg
    for part in key.split("."):
        node = node.get(part) if node is not None else None
    return node


def as_int(key: str, value, minimum: int) -> int:
    """Return `value` as an int >= minimum, or raise ConfigError naming `key`."""
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"{key}={value!r}: expected an integer >= {minimum}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r}: expected an integer >= {minimum}") from None
    if number < minimum:
        raise ConfigError(f"{key}={value}: expected an integer >= {minimum}")
    return number


def as_number(key: str, value, minimum: float, strict: bool) -> float:
    """Return `value` as a float above (strict) or at least `minimum`, or raise ConfigError."""
    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r}: expected a number {bound}") from None
    if not (number > minimum if strict else number >= minimum):
        raise ConfigError(f"{key}={value}: expected a number {bound}")
    return number


def check_values(cfg: DictConfig) -> None:
    """Raise ConfigError for the first config value of the wrong type or range."""
    for key, minimum, nullable in INTEGER_KEYS:
        value = lookup(cfg, key)
        fallback = key.replace("train.", "dataset.")
        if value is None and key.startswith("train.") and lookup(cfg, fallback) is not None:
            key, value = fallback, lookup(cfg, fallback)  # train.x: null takes the dataset's
        if value is not None or not nullable:
            as_int(key, value, minimum)
    for key, minimum, strict in NUMBER_KEYS:
        value = lookup(cfg, key)
        if value is None and key == "train.lr":
            key, value = "dataset.lr", cfg.dataset.get("lr")
        as_number(key, value, minimum, strict)
    check_window(cfg.merge.get("window", [2, 2]))
    if cfg.merge.get("clap_layer") is not None:
        as_int("merge.clap_layer", cfg.merge.clap_layer, 1)
    layers = cfg.merge.get("gbm_layers", [])
    if not isinstance(layers, (list, ListConfig)):
        raise ConfigError(f"merge.gbm_layers={layers!r}: expected a list of layers, e.g. [5]")
    for layer in layers:
        as_int("merge.gbm_layers", layer, 1)
    check_threshold_values(cfg)


def check_window(window) -> None:
    """Raise ConfigError unless merge.window is two integer sizes >= 1 ([kh, kw])."""
    expected = "expected two window sizes [kh, kw] >= 1, e.g. merge.window=[2,2]"
    if not isinstance(window, (list, tuple, ListConfig)) or len(window) != 2:
        raise ConfigError(f"merge.window={_show(window)}: {expected}")
    try:
        for size in window:
            as_int("merge.window", size, 1)
    except ConfigError:
        raise ConfigError(f"merge.window={_show(window)}: {expected}") from None


def _show(value) -> str:
    """Return a config value as the user typed it (lists as [a,b])."""
    if isinstance(value, (list, tuple, ListConfig)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return repr(value)


def threshold_sources(cfg: DictConfig) -> list[tuple[str, object]]:
    """Return (key, value) of every threshold setting in force, named as the user set it."""
    m = cfg.merge
    if cfg.get("tau") is not None:
        return [("tau", cfg.tau)]
    out = []
    for phase, shortcut in (("eval", "eval_tau"), ("train", "train_tau")):
        if cfg.get(shortcut) is not None:
            out.append((shortcut, cfg.get(shortcut)))
            continue
        for which in ("clap", "gbm"):
            key = f"{which}_threshold"
            if phase == "train" and m.get(f"train_{key}") is not None:
                out.append((f"merge.train_{key}", m.get(f"train_{key}")))
            elif m.get(key) is not None:
                out.append((f"merge.{key}", m.get(key)))
    return out


def check_threshold_values(cfg: DictConfig) -> None:
    """Raise ConfigError for a threshold that is neither auto, released nor a number in [-1, 1]."""
    for key, value in threshold_sources(cfg):
        if isinstance(value, str) and value in ("auto", "released"):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r}: expected auto, released or a number in "
                              "[-1, 1]") from None
        if not -1.0 <= number <= 1.0:
            raise ConfigError(f"{key}={value}: a cosine-similarity threshold must lie in "
                              "[-1, 1] (or auto / released)")


def check_writable(key: str, folder: Path) -> None:
    """Create `folder` and write a probe file in it, or raise ConfigError naming `key`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".algm-write-probe-"):
            pass
    except OSError as err:
        raise ConfigError(f"{key}={folder}: not writable ({err.strerror or err}); choose a folder "
                          "you can write to") from None


def read_samples(dataset, split: str, cfg: DictConfig) -> None:
    """Decode the first, middle and last sample of `dataset`; DatasetError when it is empty."""
    n = len(dataset)
    if n == 0:
        raise DatasetError(f"dataset={cfg.dataset.name}: the {split} split under "
                           f"{cfg.dataset.root} has no images")
    for index in sorted({0, n // 2, n - 1})[:SAMPLES_READ]:
        dataset[index]  # raises DatasetError naming an unreadable file or bad label


def needed_splits(cfg: DictConfig, stages: list[str]) -> list[str]:
    """Return the splits the stages read: train (training, calibration, data identity), val."""
    splits = []
    if cfg.checkpoint is None or ("calibrate" in stages and merge_spec(cfg).needs_calibration()):
        splits.append("train")
    if any(s in stages for s in ("eval", "throughput", "flops")):
        splits.append("val")
    return splits


def preflight(cfg: DictConfig, stages: list[str]) -> Checked:
    """Check config values, folders and data of a run; return the opened datasets."""
    check_values(cfg)
    check_writable("results_dir", Path(str(cfg.results_dir)))
    check_writable("work_dir", Path(str(cfg.work_dir)))
    if cfg.checkpoint is not None and not Path(str(cfg.checkpoint)).is_file():
        raise ConfigError(f"checkpoint={cfg.checkpoint}: no such file")
    datasets, fingerprints = {}, {}
    task = cfg.get("task") or {"name": "segmentation"}
    try:  # a task that does not fit the dataset fails here, before the dataset is opened
        check_task(str(cfg.model.name), task, cfg.dataset)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if str(task.get("name", "segmentation")) != "segmentation":
        return Checked(datasets, fingerprints)  # pose data: checked by its own loader for now
    for split in needed_splits(cfg, stages):
        datasets[split] = open_dataset(dataset_spec(cfg), split)
        read_samples(datasets[split], split, cfg)
        fingerprints[split] = data_fingerprint(datasets[split])
    return Checked(datasets, fingerprints)


def record_data_identity(cfg: DictConfig, checked: Checked) -> None:
    """Store the fingerprints in cfg.dataset (fingerprint: training split, val_fingerprint)."""
    with open_dict(cfg):
        cfg.dataset.fingerprint = checked.fingerprints.get("train")
        cfg.dataset.val_fingerprint = checked.fingerprints.get("val")
