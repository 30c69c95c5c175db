"""Learned baselines end to end through `algm run` (smoke): a row with the method's knob."""

import pandas as pd
import pytest
import torch

from algm_cli.engine.run import run
from algm_cli.engine.setup import ConfigError

from .test_run_cli import cfg_for, tiny_synthetic  # noqa: F401 (fixture)


def _row(tmp):
    (path,) = (tmp / "results").glob("*.csv")
    return pd.read_csv(path).iloc[0]


def test_dovit_smoke_run_writes_a_row(tiny_synthetic):  # noqa: F811
    run(cfg_for(tiny_synthetic, "merge=dovit", "merge.setting=0.5"))
    row = _row(tiny_synthetic)
    assert (row.method, row.setting, row.reduction, row.modules) == ("dovit", "training", 0.5,
                                                                     "dovit")
    assert row.gflops > 0 and 0 <= row.miou <= 100


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "model", "method"), [
    (["merge=cts", "merge.policy.backbone=small"], "segmenter", "cts"),
    (["merge=cts"], "segmenter", "cts"), (["merge=dtop"], "segmenter", "dtop"),
    (["merge=paumer"], "segmenter", "paumer"),
    (["model=setr", "backbone=vit_b", "merge=dtop"], "setr", "dtop"),
    (["model=segvit", "backbone=vit_t", "merge=dtop"], "segvit", "dtop")])
def test_learned_smoke_runs(tiny_synthetic, overrides, model, method):  # noqa: F811
    run(cfg_for(tiny_synthetic, *overrides))
    row = _row(tiny_synthetic)
    assert (row.model, row.method) == (model, method) and row.gflops > 0


def test_learned_method_needs_training_with_it(tiny_synthetic):  # noqa: F811
    with pytest.raises(ConfigError, match="merge.during_training must be true"):
        run(cfg_for(tiny_synthetic, "merge=dtop", "merge.during_training=false"))
    with pytest.raises(ConfigError, match="does not apply to model=segvit"):
        run(cfg_for(tiny_synthetic, "model=segvit", "backbone=vit_l", "merge=dovit"))


@pytest.mark.slow
def test_fine_tuning_starts_from_a_trained_model(tiny_synthetic):  # noqa: F811
    base = run(cfg_for(tiny_synthetic, "merge=none"))
    row = run(cfg_for(tiny_synthetic, "merge=algm", "tau=0.9",
                      f"train.init_from={base['checkpoint']}"))
    assert (row["setting"], row["init_from"]) == ("fine_tuning", base["checkpoint"])
    assert row["checkpoint"] != base["checkpoint"]
    # train.init_from=baseline finds the same checkpoint, also for a training-time reduction
    for merge in (["merge=algm", "tau=0.8"], ["merge=ailurus", "merge.during_training=true"]):
        row = run(cfg_for(tiny_synthetic, *merge, "train.init_from=baseline",
                          "train.iterations=2"))
        assert (row["setting"], row["init_from"]) == ("fine_tuning", base["checkpoint"])


def test_fine_tuning_errors_are_one_clear_line(tiny_synthetic):  # noqa: F811
    with pytest.raises(ConfigError, match="train.init_from=/nonexistent.pt: no such file"):
        run(cfg_for(tiny_synthetic, "train.init_from=/nonexistent.pt"))
    with pytest.raises(ConfigError, match="train.init_from=baseline: no trained baseline at"):
        run(cfg_for(tiny_synthetic, "merge=algm", "tau=0.9", "train.init_from=baseline"))
    foreign = tiny_synthetic / "foreign.pt"
    torch.save({"model": {"encoder.unknown": torch.zeros(1)}}, foreign)
    with pytest.raises(ConfigError, match=r"foreign.pt does not fit the model: missing keys .*"
                                          r"unexpected keys \['encoder.unknown'\]"):
        run(cfg_for(tiny_synthetic, "merge=algm", "tau=0.9", f"train.init_from={foreign}"))
    path = tiny_synthetic / "start.pt"
    path.write_bytes(b"")
    with pytest.raises(ConfigError, match="needs a merge method"):
        run(cfg_for(tiny_synthetic, "merge=none", f"train.init_from={path}"))
