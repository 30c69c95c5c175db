"""`algm analyze <similarity|merges|predictions> [key=value ...]`: config -> model, images, files.

The first word after `analyze` (one without '=') becomes the override `analysis=<word>` before
Hydra parses the command line, so `algm analyze merges checkpoint=...` and
`algm analyze analysis=merges checkpoint=...` are the same call.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor
from tqdm import tqdm

from ..data import DatasetError
from ..data.transforms import IGNORE, eval_resize, normalize
from ..engine.data import open_dataset
from ..engine.calibration import run_calibration
from ..engine.setup import (
    ConfigError, build_model, build_schedule, crop_size, eval_stride, pick_device, report_error,
    resolve_spec,
)
from ..engine.store import write_atomic
from ..models.registry import families
from ..models.schedule import NO_MERGE
from ..models.segmenter import load_checkpoint
from ..models.vit import PATCH
from .merges import merge_maps, plot_merge_grid, plot_merges
from .predictions import image_miou, palette_for, plot_predictions, predict
from .similarity import SimilarityStudy, patch_labels, plot_global, plot_local

ANALYSES = ("similarity", "merges", "predictions")
DEFAULT_IMAGES = {"similarity": 64, "merges": 4, "predictions": 4}


def positional_to_override(argv: list[str]) -> list[str]:
    """Return argv with a leading bare word (argv[1], no '=', not a flag) as `analysis=<word>`."""
    if len(argv) > 1 and "=" not in argv[1] and not argv[1].startswith("-"):
        return [argv[0], f"analysis={argv[1]}", *argv[2:]]
    return list(argv)


@dataclass
class Prepared:
    """One sample ready for the encoder: resized for evaluation, padded to the patch size."""

    name: str
    image: Tensor  # (1, 3, h, w) normalised, zero-padded to multiples of 16 (as Segmenter pads)
    display: np.ndarray  # (h, w, 3) uint8, the same pixels (black padding)
    label: Tensor  # (h, w) int64, nearest-resized, padding = ignore


def prepare(sample: dict, short_side: int) -> Prepared:
    """Return the sample resized to `short_side` (eval resize) and padded to a multiple of 16."""
    image = eval_resize(sample["image"], short_side=short_side)  # (3, h, w) uint8
    h, w = image.shape[1:]
    label = F.interpolate(sample["label"][None, None].float(), size=(h, w), mode="nearest")
    label = label[0, 0].long()
    ph, pw = (-h) % PATCH, (-w) % PATCH
    display = F.pad(image, (0, pw, 0, ph)).permute(1, 2, 0).numpy()
    return Prepared(
        name=str(sample.get("name", "")),
        image=F.pad(normalize(image), (0, pw, 0, ph)).unsqueeze(0),
        display=display,
        label=F.pad(label, (0, pw, 0, ph), value=IGNORE),
    )


def image_count(cfg: DictConfig) -> int:
    """Return the number of images of this analysis (`images`, or the analysis' default)."""
    count = cfg.images if cfg.images is not None else DEFAULT_IMAGES[cfg.analysis]
    if int(count) < 1:
        raise ConfigError(f"images={count}: expected a positive number of images")
    return int(count)


def split_of(cfg: DictConfig) -> str:
    """Return the dataset split (`split`, or train for similarity and val otherwise)."""
    if cfg.split is not None:
        return str(cfg.split)
    return "train" if cfg.analysis == "similarity" else "val"


def samples(cfg: DictConfig, dataset, count: int) -> Iterator[Prepared]:
    """Yield the first `count` samples of `dataset`, prepared."""
    for i in range(min(count, len(dataset))):
        yield prepare(dataset[i], int(cfg.dataset.eval_short_side))


def load_model(cfg: DictConfig, path, device: torch.device):
    """Return the configured model (no merging) with weights from `path` (None: initial), eval."""
    model = build_model(cfg, NO_MERGE)
    if path is not None:
        if not Path(str(path)).is_file():
            raise ConfigError(f"checkpoint={path}: no such file")
        load_checkpoint(model, Path(str(path)))
    return model.to(device).eval()


def require_checkpoint(cfg: DictConfig) -> None:
    """Raise ConfigError unless `checkpoint` is set (merges and predictions need a trained model)."""
    if cfg.checkpoint is None:
        raise ConfigError(f"`algm analyze {cfg.analysis}` needs checkpoint=<trained model .pt> "
                          "(e.g. from `algm run`, under work_dir/checkpoints/)")


def eval_schedule(cfg: DictConfig, device: torch.device):
    """Return the configured inference schedule; `auto` thresholds are calibrated on checkpoint."""
    if cfg.merge.method == "none":
        raise ConfigError(f"`algm analyze {cfg.analysis}` shows merging: choose a merge method "
                          "other than merge=none (e.g. merge=algm)")
    tau = run_calibration(resolve_spec(cfg), Path(str(cfg.work_dir)), device,
                          int(cfg.calibration_images), allowed=True)
    return build_schedule(cfg, "eval", tau), tau


def describe(cfg: DictConfig) -> str:
    """Return 'model backbone, dataset' for figure titles."""
    return f"{cfg.model.name} {cfg.backbone.name}, {cfg.dataset.name}"


def out_dirs(cfg: DictConfig) -> tuple[Path, Path]:
    """Return (figure folder, CSV folder), created."""
    figures, tables = Path(str(cfg.out_dir)), Path(str(cfg.csv_dir))
    figures.mkdir(parents=True, exist_ok=True)
    tables.mkdir(parents=True, exist_ok=True)
    return figures, tables


@torch.no_grad()
def analyze_similarity(cfg: DictConfig) -> dict[str, Path]:
    """Run the Fig. 2 study; write similarity.csv and the two PNGs; return their paths."""
    device = pick_device(str(cfg.device))
    if cfg.checkpoint is None:
        print("note: no checkpoint given: analysing the initial (untrained) weights")
    model = load_model(cfg, cfg.checkpoint, device)
    windows = tuple(int(k) for k in cfg.windows)
    if not windows or min(windows) < 2:
        raise ConfigError(f"windows={list(windows)}: expected window sizes >= 2")
    depth = model.encoder.depth
    if not 1 <= int(cfg.local_layer) <= depth:
        raise ConfigError(f"local_layer={cfg.local_layer}: expected 1..{depth}")
    split, count = split_of(cfg), image_count(cfg)
    dataset = open_dataset(resolve_spec(cfg).dataset, split)
    study = SimilarityStudy(windows=windows, local_layer=int(cfg.local_layer))
    layers = tuple(range(1, depth + 1))
    for item in tqdm(samples(cfg, dataset, count), total=min(count, len(dataset)),
                     desc="similarity"):
        out = model.encoder(item.image.to(device), NO_MERGE, capture=layers)
        labels = patch_labels(item.label).reshape(-1).to(device)  # (N,)
        study.add({layer: out.captured[layer][0] for layer in layers}, labels, out.grid)
    if study.images == 0:
        raise DatasetError(f"the {split} split has no images")
    skipped = study.skipped_windows()
    if skipped:
        print(f"note: windows {skipped} are larger than every token grid: skipped")
    table = study.table()
    table = table.assign(model=cfg.model.name, backbone=cfg.backbone.name,
                         dataset=cfg.dataset.name, split=split, images=study.images,
                         checkpoint=str(cfg.checkpoint) if cfg.checkpoint else "initial weights")
    figures, tables = out_dirs(cfg)
    paths = {"csv": tables / "similarity.csv", "local": figures / "similarity_local.png",
             "global": figures / "similarity_global.png"}
    write_atomic(paths["csv"], table.to_csv(index=False))
    where = f"{describe(cfg)} {split}, {study.images} images"
    plot_local(table, paths["local"], f"(a) local similarity in layer {cfg.local_layer}\n{where}")
    plot_global(table, paths["global"], f"(b) global similarity per layer\n{where}")
    shown = table[["analysis", "layer", "window", "pair_type", "mean", "std", "count"]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return paths


@torch.no_grad()
def analyze_merges(cfg: DictConfig) -> dict[str, Path]:
    """Draw CLAP / GBM merges on a few images; write merges_<name>.png and merges_grid.png."""
    require_checkpoint(cfg)
    device = pick_device(str(cfg.device))
    model = load_model(cfg, cfg.checkpoint, device)
    schedule, tau = eval_schedule(cfg, device)
    schedule.check_depth(model.encoder.depth)
    split, count = split_of(cfg), image_count(cfg)
    dataset = open_dataset(resolve_spec(cfg).dataset, split)
    figures, _ = out_dirs(cfg)
    items, paths = [], {}
    for item in tqdm(samples(cfg, dataset, count), total=min(count, len(dataset)), desc="merges"):
        maps = merge_maps(model.encoder, item.image.to(device), schedule)
        path = figures / f"merges_{item.name}.png"
        plot_merges(path, item.display, maps, item.name)
        items.append((item.name, item.display, maps))
        paths[item.name] = path
        n = maps.grid[0] * maps.grid[1]
        clap = f"CLAP {n} -> {maps.clap_tokens}, " if maps.clap_tokens is not None else ""
        print(f"{item.name}: {clap}{maps.final_label} -> {maps.final_tokens} tokens  ({path})")
    if not items:
        raise DatasetError(f"the {split} split has no images")
    paths["grid"] = figures / "merges_grid.png"
    plot_merge_grid(paths["grid"], items)
    steps = ", ".join(f"{s.label} tau={s.threshold if s.threshold is not None else s.rule}"
                      for s in schedule.steps)
    print(f"schedule: {steps}" + (f" (calibrated tau {tau:.4f})" if tau is not None else ""))
    return paths


@torch.no_grad()
def analyze_predictions(cfg: DictConfig) -> dict[str, Path]:
    """Draw input | baseline | ALGM | ground truth for a few images; write predictions.png."""
    require_checkpoint(cfg)
    device = pick_device(str(cfg.device))
    schedule, tau = eval_schedule(cfg, device)
    algm = load_model(cfg, cfg.checkpoint, device)
    algm.schedule = schedule
    base_path = cfg.baseline_checkpoint if cfg.baseline_checkpoint is not None else cfg.checkpoint
    baseline = load_model(cfg, base_path, device)
    split, count = split_of(cfg), image_count(cfg)
    dataset = open_dataset(resolve_spec(cfg).dataset, split)
    num_classes = int(cfg.dataset.num_classes)
    palette = palette_for(dataset, num_classes)
    crop, stride = crop_size(cfg), eval_stride(cfg)
    rows = []
    for i in tqdm(range(min(count, len(dataset))), desc="predictions"):
        sample = dataset[i]
        image = eval_resize(sample["image"], short_side=int(cfg.dataset.eval_short_side))
        image = normalize(image).unsqueeze(0).to(device)
        label = sample["label"]
        base_pred, _ = predict(baseline, image, tuple(label.shape), crop, stride)
        algm_pred, kept = predict(algm, image, tuple(label.shape), crop, stride)
        row = {"name": sample["name"], "image": sample["image"].permute(1, 2, 0).numpy(),
               "baseline": base_pred, "algm": algm_pred, "label": label,
               "baseline_miou": image_miou(base_pred, label, num_classes),
               "algm_miou": image_miou(algm_pred, label, num_classes),
               "kept": list(kept.values())[-1] if kept else None}
        rows.append(row)
        kept_text = f", kept {100 * row['kept']:.0f}%" if row["kept"] is not None else ""
        print(f"{row['name']}: mIoU baseline {100 * row['baseline_miou']:.1f}, "
              f"ALGM {100 * row['algm_miou']:.1f}{kept_text}")
    if not rows:
        raise DatasetError(f"the {split} split has no images")
    figures, _ = out_dirs(cfg)
    path = figures / "predictions.png"
    plot_predictions(path, rows, palette, getattr(dataset, "class_names", None))
    print(f"wrote {path}" + (f" (calibrated tau {tau:.4f})" if tau is not None else ""))
    return {"predictions": path}


def analyze(cfg: DictConfig) -> dict[str, Path]:
    """Run the analysis named by `cfg.analysis`; return the written files."""
    commands = {"similarity": analyze_similarity, "merges": analyze_merges,
                "predictions": analyze_predictions}
    if cfg.analysis not in commands:
        raise ConfigError(f"analysis={cfg.analysis!r}: expected one of {list(ANALYSES)} "
                          "(`algm analyze <similarity|merges|predictions> [key=value ...]`)")
    if not resolve_spec(cfg).family.analyze:
        able = [name for name, fam in families().items() if fam.analyze]
        raise ConfigError(f"algm analyze does not apply to model={cfg.model.name} (no plain ViT "
                          f"encoder); expected model= one of {', '.join(able)}")
    return commands[cfg.analysis](cfg)


@hydra.main(config_path="pkg://algm_cli.conf", config_name="analyze", version_base="1.3")
def app(cfg: DictConfig) -> None:
    """Hydra entry point: run the configured analysis, turning bad input into one error line."""
    try:
        paths = analyze(cfg)
    except (ConfigError, DatasetError, ValueError, FileNotFoundError) as err:
        report_error(err, "algm analyze")
    for key, path in paths.items():
        print(f"{key}: {path}")


def main() -> None:
    """Entry point of `algm analyze <what> [key=value ...]` (the word becomes analysis=<what>)."""
    sys.argv = positional_to_override(sys.argv)
    app()


if __name__ == "__main__":
    main()
