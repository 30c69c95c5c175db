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
def test_smoke_runs_without_and_with_algm_fine_tuned_from_the_baseline(tmp_path):
    generate(tmp_path / "synthetic", SyntheticSpec(train=4, val=2))
    base = run(cfg_for(tmp_path, "merge=none"))
    row = run(cfg_for(tmp_path, "merge=algm", "train.init_from=baseline", "train.iterations=2"))
    table = pd.concat([pd.read_csv(p) for p in (tmp_path / "results").glob("*.csv")])
    table = table.set_index("method")
    assert (table.status == "ok").all() and (table.model == "mask2former").all()
    assert (table.backbone == "eva02_t").all() and table.miou.notna().all()
    assert (table.gflops > 0).all()
    assert str(row["gbm_layers"]) == "5" and 0 < row["kept_final"] <= 1
    assert (row["setting"], row["init_from"]) == ("fine_tuning", base["checkpoint"])


def test_mask2former_needs_an_eva_backbone_and_an_algm_family_merge(tmp_path):
    with pytest.raises(ConfigError, match="backbone=vit_s does not fit model=mask2former"):
        resolve_spec(cfg_for(tmp_path, "backbone=vit_s"))
    with pytest.raises(ConfigError, match="merge=tome does not apply to model=mask2former"):
        resolve_spec(cfg_for(tmp_path, "merge=tome"))
    with pytest.raises(ConfigError, match="backbone=eva02_t does not fit model=segmenter"):
        resolve_spec(cfg_for(tmp_path, model="segmenter"))

