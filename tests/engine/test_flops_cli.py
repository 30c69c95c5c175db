"""`algm flops merge=algm` needs no calibrate stage: auto thresholds become the released ones."""

import pytest
from hydra import compose, initialize_config_module

from algm_cli.engine.flops_cli import model_gflops


def flops_cfg(*overrides):
    with initialize_config_module("algm_cli.conf", version_base="1.3"):
        return compose("flops", ["backbone=vit_t", "dataset=synthetic", *overrides])


def test_algm_with_auto_thresholds_uses_the_released_ones(capsys):
    merged = model_gflops(flops_cfg("merge=algm"))
    assert "using the released thresholds" in capsys.readouterr().out
    baseline = model_gflops(flops_cfg("merge=none"))
    assert 0 < merged < baseline
    # tau=1: nothing merges, only the similarity scores are added to the baseline's count
    assert model_gflops(flops_cfg("merge=algm", "tau=1.0")) == pytest.approx(baseline, rel=1e-3)
