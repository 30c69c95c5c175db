"""Beyond the paper through the runner: EoMT, DINOv2 backbones, PiToMe / MPM / ATC schedules."""

from __future__ import annotations

import pandas as pd
import pytest
from hydra import compose, initialize_config_module

from algm_cli.data.synthetic import SyntheticSpec, generate
from algm_cli.engine.run import run
from algm_cli.engine.setup import ConfigError, build_model, build_schedule
from algm_cli.models.eomt import EoMT
from algm_cli.models.segmenter import Segmenter


def compose_run(*overrides: str):
    with initialize_config_module("algm_cli.conf", version_base="1.3"):
        return compose("run", list(overrides))


@pytest.mark.parametrize("overrides, layers", [
    (["merge=pitome"], list(range(1, 13))),           # every block, as released
    (["merge=pitome", "backbone=vit_l"], list(range(1, 25))),
    (["merge=mpm"], [1, 5]),                          # ALGM's positions
    (["merge=mpm", "backbone=vit_l"], [1, 7]),
    (["merge=atc"], [5]),                             # the GBM layer
    (["merge=atc", "merge.layers=[3,8]"], [3, 8]),
])
def test_newer_schedules_place_their_steps(overrides, layers):
    schedule = build_schedule(compose_run(*overrides), "eval", None)
    assert [s.layer for s in schedule.steps] == layers
    assert {s.method for s in schedule.steps} == {compose_run(*overrides).merge.method}


def test_pitome_schedule_uses_the_released_margin_and_keys():
    schedule = build_schedule(compose_run("merge=pitome", "merge.setting=0.9"), "eval", None)
    assert schedule.metric == "keys" and schedule.proportional_attention
    assert schedule.steps[0].margin == pytest.approx(0.9)
    assert schedule.steps[-1].margin == pytest.approx(0.9 - 0.8 * 11 / 12)
    assert all(s.keep == 0.9 for s in schedule.steps)


def test_eomt_and_dinov2_are_built_from_config():
    cfg = compose_run("model=eomt", "merge=none")
    model = build_model(cfg, build_schedule(cfg, "eval", None))
    assert isinstance(model, EoMT) and model.num_queries == 100 and model.prefix == 5
    seg = build_model(compose_run("backbone=dinov2_s", "merge=none"), build_schedule(
        compose_run("backbone=dinov2_s", "merge=none"), "eval", None))
    assert isinstance(seg, Segmenter) and seg.encoder.prefix == 5


@pytest.mark.parametrize("overrides, message", [
    (["model=eomt", "merge.gbm_layers=[10]"], "before its query blocks"),
    (["model=setr", "backbone=dinov2_s"], "register tokens"),
    (["backbone=dinov2_s", "merge.batching=ragged"], "register tokens"),
    (["model=eomt", "backbone=mit_b0", "merge=none"], "does not fit model=eomt"),
])
def test_misfits_are_one_line_errors(overrides, message):
    cfg = compose_run(*overrides)
    with pytest.raises(ConfigError, match=message):
        build_model(cfg, build_schedule(cfg, "eval", 0.9))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("beyond")
    generate(root / "synthetic", SyntheticSpec(train=4, val=2))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    ["model=eomt", "merge=none", "model.points=256"],
    ["model=eomt", "merge=algm", "model.num_queries=8", "model.points=256"],
    ["backbone=dinov2_s", "merge=algm"],
    ["merge=pitome"], ["merge=mpm", "merge.setting=0.5"], ["merge=atc"],
])
def test_smoke_runs_write_a_full_row(tiny, overrides):
    cfg = compose_run("smoke=true", f"results_dir={tiny / 'results'}", f"work_dir={tiny / 'work'}",
                      f"dataset.root={tiny / 'synthetic'}", *overrides)
    row = run(cfg)
    assert row["status"] == "ok" and row["model"] == cfg.model.name
    for key in ("miou", "ims", "gflops"):
        assert pd.notna(row[key]), key
    if cfg.merge.method != "none":
        assert 0 < row["kept_final"] < 1
    if cfg.merge.method in ("pitome", "mpm", "atc"):
        assert row["modules"] == cfg.merge.method and row["reduction"] == cfg.merge.setting
