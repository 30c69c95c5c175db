"""The run spec and the model registry: one resolution, one error path, combos refused."""

from __future__ import annotations

import dataclasses

import pytest
from hydra import compose, initialize_config_module

from algm_cli.engine.setup import ConfigError, build_schedule
from algm_cli.engine.spec import resolve_spec
from algm_cli.models.registry import BACKBONES, families, register_family


def spec_of(*overrides: str, config: str = "run"):
    """Return the resolved spec of `config` with `overrides`."""
    with initialize_config_module("algm_cli.conf", version_base="1.3"):
        return resolve_spec(compose(config, list(overrides)))


def test_spec_is_frozen_and_resolved_once():
    spec = spec_of("dataset=synthetic", "smoke=true")
    assert (spec.dataset.crop, spec.dataset.stride, spec.dataset.ignore_index) == (128, 96, 255)
    assert (spec.train.iterations, spec.train.batch_size) == (3, 2)
    assert (spec.eval.images, spec.eval.calibration_images) == (2, 2)
    assert spec.backbone.depth == 12 and spec.family.name == "segmenter"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 1
    with pytest.raises(TypeError):
        spec.merge.options["method"] = "tome"


def test_backbone_facts():
    assert [BACKBONES[f"vit_{s}"].depth for s in "tsbl"] == [12, 12, 12, 24]
    assert [BACKBONES[f"vit_{s}"].dim for s in "tsbl"] == [192, 384, 768, 1024]
    assert sum((3, 6, 40, 3)) == BACKBONES["mit_b5"].depth


def test_tome_schedule_spans_the_backbone_depth():
    spec = spec_of("merge=tome", "merge.tome_r=2", "backbone=vit_l", "dataset=synthetic")
    assert [s.layer for s in build_schedule(spec, "eval", None).steps] == list(range(1, 25))


@pytest.mark.parametrize("overrides, message", [
    (["model=setr", "merge.batching=ragged"],
     "merge.batching=ragged does not apply to model=setr merge=algm; expected merge.batching=min"),
    (["merge=evit", "++merge.batching=ragged"],
     "merge.batching=ragged does not apply to model=segmenter merge=evit"),
    (["model=segformer", "++merge.bucket=8"],
     "merge.bucket=8 does not apply to model=segformer merge=segformerpp_hq"),
    (["model=setr", "merge=evit"], "merge=evit does not apply to model=setr"),
    (["model=segformer", "backbone=vit_t"], "backbone=vit_t does not fit model=segformer"),
])
def test_unsupported_combinations_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match="^" + message.replace("+", r"\+").replace(".", r"\.")):
        spec_of(*overrides)


def test_analyze_refuses_a_family_without_a_vit_encoder():
    from algm_cli.analysis.cli import analyze

    with initialize_config_module("algm_cli.conf", version_base="1.3"):
        cfg = compose("analyze", ["model=segformer"])
    with pytest.raises(ConfigError, match="algm analyze does not apply to model=segformer"):
        analyze(cfg)


def test_a_family_registers_with_one_call():
    register_family(name="toy", builder=lambda request: request, backbone="vit",
                    merges=("none",))
    try:
        fam = families()["toy"]
        assert fam.batching == ("min",) and not fam.bucket and not fam.analyze
        with pytest.raises(ValueError, match="merge=algm does not apply to model=toy"):
            fam.check("vit_t", "algm", "min", 0)
    finally:
        families().pop("toy")


@pytest.mark.parametrize("model", ["segmenter", "segformer"])
def test_a_given_checkpoint_needs_no_start_weights(model):
    assert spec_of(f"model={model}", "protocol=paper").model_options["pretrained"] is True
    spec = spec_of(f"model={model}", "protocol=paper", "checkpoint=/some/model.pt")
    assert spec.model_options["pretrained"] is False  # an offline run never fetches them
