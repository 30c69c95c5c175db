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
from algm_cli.models.reduction import BASELINE_METHODS, reduction_from_config

PRESETS = sorted(p.stem for p in (Path(__file__).parents[2] / "conf" / "experiment").glob("*.yaml"))


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


@pytest.mark.parametrize("name", PRESETS)
def test_preset_runs_compose_into_valid_configs(name):
    runs = combinations(name)
    assert runs, name
    with initialize_config_module("algm_cli.conf", version_base="1.3"):
        for overrides in runs:
            cfg = compose("run", [f"+experiment={name}", *overrides])
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
