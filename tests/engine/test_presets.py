"""Every experiment preset expands to runs whose configs are valid (composed, not run)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser

from algm_cli.engine.setup import (
    ALGM_METHODS, build_schedule, check_model_merge, check_thresholds, crop_size,
)
from omegaconf import OmegaConf

from algm_cli.engine.sweep import plan
from algm_cli.models.learned import EXIT_SPECS
from algm_cli.models.reduction import BASELINE_METHODS, reduction_from_config

PRESETS = sorted(p.stem for p in (Path(__file__).parents[2] / "conf" / "experiment").glob("*.yaml"))
# run-list presets whose lines depend on the dataset: one case per dataset
PER_DATASET = {"table2": ("coco_stuff10k", "cityscapes", "pascal_context")}
RUN_LISTS = ("table1", "table2", "table3", "supp_table2", "supp_table3")  # many lines: slow
CASES = [pytest.param(name, dataset, marks=[pytest.mark.slow] if name in RUN_LISTS else [])
         for name in PRESETS for dataset in PER_DATASET.get(name, (None,))]


def combinations(name: str) -> list[list[str]]:
    """Return the override lists of every run of preset `name`'s sweep."""
    with initialize_config_module("algm_cli.conf", version_base="1.3"):
        cfg = compose("run", [f"+experiment={name}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params or {}
    parser = OverridesParser.create()
    axes = []
    for key, value in params.items():
        (override,) = parser.parse_overrides([f"{key}={value}"])
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [value]
        axes.append([f"{key}={v}" for v in values])
    return [list(combo) for combo in itertools.product(*axes)]


@pytest.mark.parametrize(("name", "dataset"), CASES)
def test_preset_runs_compose_into_valid_configs(name, dataset):
    """Every run of the preset (grid or run list, as `algm sweep` plans it) is a valid config."""
    extra = [f"dataset={dataset}"] if dataset else []
    runs, _ = plan([f"+experiment={name}", *extra])
    assert runs, name
    if name == "table3":
        assert any("model=setr" in o and "merge=dtop" in o for _, o in runs)
    if name == "supp_table2":  # SegViT-L + DToP at the released ViT-L p0
        assert any({"model=segvit", "merge=dtop", "merge.setting=0.95"} <= set(o) for _, o in runs)
    with initialize_config_module("algm_cli.conf", version_base="1.3"):
        for command, overrides in runs:
            cfg = compose(command, overrides)
            assert cfg.experiment == name
            check_model_merge(cfg)
            check_thresholds(cfg)
            tau = 0.9 if cfg.merge.method in ALGM_METHODS else None
            build_schedule(cfg, "eval", tau)
            build_schedule(cfg, "train", tau)
            assert crop_size(cfg) > 0
            if cfg.merge.method in BASELINE_METHODS:
                depth = 24 if cfg.backbone.name == "vit_l" else 12
                reduction_from_config(dict(cfg.merge), cfg.backbone.name).check(depth)
            if cfg.merge.method in EXIT_SPECS:
                depth = 24 if cfg.backbone.name == "vit_l" else 12
                merge = OmegaConf.to_container(cfg.merge, resolve=True)
                EXIT_SPECS[cfg.merge.method](merge, depth).check(depth)


def test_supp_fig1_walks_each_baseline_through_its_five_settings():
    runs = combinations("supp_fig1")
    assert len(runs) == 25
    with initialize_config_module("algm_cli.conf", version_base="1.3"):
        settings = {}
        for overrides in runs:
            cfg = compose("run", ["+experiment=supp_fig1", *overrides])
            settings.setdefault(cfg.merge.method, []).append(float(cfg.merge.setting))
    assert settings["evit"] == [0.9, 0.8, 0.7, 0.6, 0.5]
    assert settings["elvit"] == [32, 28, 24, 20, 16]
    assert set(settings) == {"evit", "act", "elvit", "ailurus", "tome_dense"}


def test_table1_dry_run_lists_every_row_family():
    runs, is_list = plan(["+experiment=table1", "dataset=ade20k"])
    lines = [" ".join(o) for _, o in runs]
    assert is_list and len(lines) == 30
    for family in ("model=setr backbone=vit_l merge=algm", "model=segvit backbone=vit_l merge=none",
                   "backbone=vit_s merge=tome merge.tome_r=34", "backbone=vit_l merge=ailurus",
                   "backbone=vit_b merge=cts", "backbone=vit_l merge=elvit"):
        assert any(family in line for line in lines), family
    assert sum(command == "tune" for command, _ in runs) == 6  # ALGM* of every network


def test_command_line_sweep_crosses_a_run_list_and_line_keys_win():
    runs, _ = plan(["+experiment=table3", "seed=0,1", "backbone=vit_t"])
    assert len(runs) == 16
    assert all(o.count("backbone=vit_t") == 0 for _, o in runs)  # every line sets its backbone


def test_tune_keys_reach_only_the_tune_lines():
    runs, _ = plan(["+experiment=table3", "tune.grid=[0.8]"])
    for command, overrides in runs:
        assert ("tune.grid=[0.8]" in overrides) == (command == "tune")
