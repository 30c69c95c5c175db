"""`algm run model=mask2former backbone=eva02_t` end to end on tiny synthetic data, with and without ALGM."""

import pandas as pd
import pytest
from hydra import compose, initialize_config_module

from algm_cli.data.synthetic import SyntheticSpec, generate
from algm_cli.engine.run import run
from algm_cli.engine.spec import ConfigError, resolve_spec


def cfg_for(tmp_path, *overrides, model="mask2former"):
    family = ["model=mask2former", "model.points=256"] if model == "mask2former" else [f"model={model}"]
    with initialize_config_module("algm_cli.conf", version_base="1.3"):
        return compose("run", [
            "smoke=true", f"results_dir={tmp_path / 'results'}", f"work_dir={tmp_path / 'work'}",
            f"dataset.root={tmp_path / 'synthetic'}", *family, "backbone=eva02_t", *overrides,
        ])


@pytest.mark.slow
@pytest.mark.parametrize("merge", ["none", "algm"])
def test_smoke_run_with_and_without_algm(tmp_path, merge):
    generate(tmp_path / "synthetic", SyntheticSpec(train=4, val=2))
    row = run(cfg_for(tmp_path, f"merge={merge}"))
    table = pd.read_csv(next((tmp_path / "results").glob("*.csv")))
    assert table.status[0] == "ok" and table.model[0] == "mask2former"
    assert table.backbone[0] == "eva02_t" and table.method[0] == merge
    assert pd.notna(table.miou[0]) and table.gflops[0] > 0
    if merge == "algm":
        assert str(table.gbm_layers[0]) == "5" and 0 < row["kept_final"] <= 1


def test_mask2former_needs_an_eva_backbone_and_an_algm_family_merge(tmp_path):
    with pytest.raises(ConfigError, match="backbone=vit_s does not fit model=mask2former"):
        resolve_spec(cfg_for(tmp_path, "backbone=vit_s"))
    with pytest.raises(ConfigError, match="merge=tome does not apply to model=mask2former"):
        resolve_spec(cfg_for(tmp_path, "merge=tome"))
    with pytest.raises(ConfigError, match="backbone=eva02_t does not fit model=segmenter"):
        resolve_spec(cfg_for(tmp_path, model="segmenter"))
