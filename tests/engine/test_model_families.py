"""The runner builds every model family and merge method from config, and rejects misfits."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module

from algm_cli.data.synthetic import SyntheticSpec, generate
from algm_cli.engine.run import run
from algm_cli.engine.setup import ConfigError, build_model, build_schedule, crop_size
from algm_cli.models.reduction import ReducedSegmenter
from algm_cli.models.segformer import Segformer
from algm_cli.models.segmenter import Segmenter
from algm_cli.models.segvit import SegViT
from algm_cli.models.setr import SETR


def compose_run(*overrides: str):
    with initialize_config_module("algm_cli.conf", version_base="1.3"):
        return compose("run", list(overrides))


@pytest.mark.parametrize("overrides, expected", [
    (["model=setr", "backbone=vit_l"], [13]),      # supp. Tab. 1: SETR-L GBM in layer 13
    (["model=setr", "backbone=vit_b"], [5]),
    (["model=segvit", "backbone=vit_l"], [12]),    # SegViT-L: layer 12
    (["backbone=vit_l"], [7]),                     # Segmenter ViT-L: layer 7
    (["backbone=vit_s"], [5]),
    (["model=setr", "backbone=vit_l", "merge.gbm_layers=[3,9]"], [3, 9]),
])
def test_gbm_layer_follows_the_model_layout(overrides, expected):
    assert list(compose_run(*overrides).merge.gbm_layers) == expected


def test_model_crop_overrides_backbone_and_dataset():
    assert crop_size(compose_run("backbone=vit_l", "dataset=ade20k")) == 640  # Segmenter-L
    assert crop_size(compose_run("model=setr", "backbone=vit_l", "dataset=ade20k")) == 512
    assert crop_size(compose_run("model=segformer", "dataset=cityscapes")) == 1024


def test_segformer_selects_its_backbone_merge_and_recipe():
    cfg = compose_run("model=segformer")
    assert (cfg.backbone.name, cfg.merge.method, cfg.train.optimizer) == (
        "mit_b0", "segformerpp_hq", "adamw")
    cfg = compose_run("model=segformer", "backbone=mit_b2", "merge=neighbour2d", "train.lr=0.1")
    assert (cfg.backbone.variant, cfg.merge.method, cfg.train.lr) == ("b2", "neighbour2d", 0.1)


@pytest.mark.parametrize("overrides, message", [
    (["model=segformer", "merge=algm"], "merge=algm does not apply to model=segformer"),
    (["model=setr", "merge=evit"], "merge=evit does not apply to model=setr"),
    (["model=segformer", "backbone=vit_s"], "backbone=vit_s does not fit model=segformer"),
    (["backbone=mit_b0"], "backbone=mit_b0 does not fit model=segmenter"),
    (["model=segmenter", "merge=segformerpp_fast"], "merge=segformerpp_fast does not apply"),
    (["merge=act", "merge.variant=release"], "merge.variant='release': expected released or paper"),
])
def test_misfit_model_and_merge_are_clear_errors(overrides, message):
    cfg = compose_run("merge.clap_threshold=0.9", "merge.gbm_threshold=0.9", *overrides)
    with pytest.raises(ConfigError, match=message):
        build_model(cfg, build_schedule(cfg, "eval", None))


@pytest.mark.parametrize("overrides, cls", [
    (["model=setr", "model.decoder=mla"], SETR),
    (["model=segvit"], SegViT),
    (["model=segformer"], Segformer),
    (["merge=elvit"], ReducedSegmenter),
])
def test_each_family_is_built_and_runs(overrides, cls):
    cfg = compose_run("dataset=synthetic", "tau=0.9", *overrides)
    model = build_model(cfg, build_schedule(cfg, "eval", None)).eval()
    assert type(model) is cls
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 8, 64, 64) and torch.isfinite(out).all()


def test_training_free_reductions_act_only_at_inference():
    cfg = compose_run("merge=evit")  # during_training=false
    assert type(build_model(cfg, build_schedule(cfg, "train", None), "train")) is Segmenter
    assert type(build_model(cfg, build_schedule(cfg, "eval", None), "eval")) is ReducedSegmenter
    seg = compose_run("model=segformer")
    assert build_model(seg, build_schedule(seg, "train", None), "train").merge.name == "none"
    assert build_model(seg, build_schedule(seg, "eval", None), "eval").merge.name == "hq"
    trained = compose_run("model=segformer", "merge.during_training=true")
    assert build_model(trained, build_schedule(trained, "train", None), "train").merge.name == "hq"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    generate(root / "synthetic", SyntheticSpec(train=4, val=2))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    ["model=setr", "model.decoder=pup"],
    ["model=segvit"],
    ["model=segformer"],
    ["model=segformer", "merge=none"],
    ["model=setr", "merge=tome", "merge.tome_r=2"],
    ["merge=evit"], ["merge=act"], ["merge=elvit"], ["merge=ailurus"], ["merge=tome_dense"],
])
def test_smoke_run_of_every_family_and_method_writes_a_full_row(tiny, overrides):
    cfg = compose_run("smoke=true", f"results_dir={tiny / 'results'}", f"work_dir={tiny / 'work'}",
                      f"dataset.root={tiny / 'synthetic'}", *overrides)
    row = run(cfg)
    assert row["status"] == "ok" and row["method"] == cfg.merge.method
    assert row["model"] == cfg.model.name
    for key in ("miou", "ims", "gflops"):
        assert pd.notna(row[key]), key
    if cfg.merge.method != "none":
        assert row["setting"] == ("training" if cfg.merge.during_training else "direct")
        assert 0 < row["kept_final"] < 1
