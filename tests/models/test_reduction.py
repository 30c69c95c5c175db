"""Segmenter with the baseline reductions: shapes, no-reduction equality, token counts, configs."""

import os

import pytest
import torch
from hydra import compose, initialize_config_dir

from algm_cli.engine.flops import count_gflops
from algm_cli.models.reduction import (
    BASELINE_METHODS,
    ACTSpec,
    AiluRusSpec,
    ELViTSpec,
    EViTSpec,
    ReducedSegmenter,
    ToMeDenseSpec,
    build_reduced,
    reduction_from_config,
)
from algm_cli.models.segmenter import Segmenter

IMG = 64  # 4 x 4 patch grid
CONF = os.path.join(os.path.dirname(__file__), "..", "..", "conf")


def reducing_specs(depth: int) -> list:
    """Return one reducing spec per method for an encoder of `depth` layers (4 x 4 grid)."""
    mid = depth // 2
    return [
        EViTSpec((mid - 1, mid + 1), 0.5),  # 16 -> 8 + 1 -> 5 + 1
        ToMeDenseSpec(mid, 0.25),  # 16 -> 12 around every sub-block
        ACTSpec(mid, 0.25),  # 4 query clusters per head
        ELViTSpec(mid, 2, reference=4),  # 2 x 2 cluster grid
        AiluRusSpec(2, 0.5, k=3, radius=1),  # 8 clusters
    ]


def null_specs(depth: int) -> list:
    """Return one spec per method whose setting reduces nothing."""
    mid = depth // 2
    return [
        EViTSpec((mid - 1, mid + 1), 1.0),
        ToMeDenseSpec(1, 0.0),
        ACTSpec(1, 1.0),
        ELViTSpec(mid, 40),  # 40 per 40: the full grid
        AiluRusSpec(2, 1.0),
    ]


EXPECTED_STATS = {  # depth 12, 4 x 4 grid: tokens after each step / 16
    "evit": {"L5:evit": 9 / 16, "L7:evit": 6 / 16},
    "tome_dense": {f"L{layer}:tome_dense": 12 / 16 for layer in range(6, 13)},
    "act": {f"L{layer}:act": 4 / 16 for layer in range(6, 13)},
    "elvit": {"L6:elvit": 4 / 16},
    "ailurus": {"L2:ailurus": 8 / 16},
}


def reduced(backbone: str, spec, classes: int = 5, img: int = IMG) -> tuple:
    """Return (ReducedSegmenter, Segmenter) with the same random weights, in eval mode."""
    torch.manual_seed(0)
    base = Segmenter(backbone, classes, "mask", img).eval()
    model = ReducedSegmenter(spec, backbone, classes, "mask", img).eval()
    model.load_state_dict(base.state_dict())
    return model, base


@pytest.mark.parametrize("backbone", ["vit_t", "vit_s", "vit_b"])
def test_every_method_shapes_and_finiteness(backbone):
    model, _ = reduced(backbone, EViTSpec((1,), 1.0))
    x = torch.randn(2, 3, 50, IMG)  # padded to 64 x 64
    for spec in reducing_specs(model.encoder.depth):
        model.reduction = spec
        with torch.no_grad():
            logits, stats = model.forward_with_stats(x)
        assert logits.shape == (2, 5, 50, IMG), spec.method
        assert torch.isfinite(logits).all(), spec.method
        assert stats and all(0 < v < 1 for v in stats.values()), spec.method


def test_every_method_on_vit_l():
    torch.manual_seed(0)
    model = ReducedSegmenter(EViTSpec((1,), 1.0), "vit_l", 5, "mask", IMG).eval()
    x = torch.randn(1, 3, IMG, IMG)
    for spec in reducing_specs(24):
        model.reduction = spec
        with torch.no_grad():
            logits, stats = model.forward_with_stats(x)
        assert logits.shape == (1, 5, IMG, IMG) and torch.isfinite(logits).all(), spec.method


@pytest.mark.parametrize("spec", null_specs(12), ids=lambda s: s.method)
def test_no_reduction_setting_equals_the_baseline(spec):
    model, base = reduced("vit_t", spec)
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        a, b = base(x), model(x)
        _, stats = model.forward_with_stats(x)
    assert torch.allclose(a, b, atol=1e-5)
    assert all(v == 1.0 for v in stats.values())


@pytest.mark.parametrize("spec", reducing_specs(12), ids=lambda s: s.method)
def test_token_counts_after_each_step_match_the_setting(spec):
    model, base = reduced("vit_t", spec)
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        logits, stats = model.forward_with_stats(x)
        differs = not torch.allclose(logits, base(x), atol=1e-4)
    assert stats == pytest.approx(EXPECTED_STATS[spec.method])
    assert differs, "a reducing setting should change the output"


def test_act_with_one_cluster_per_token_equals_the_baseline_through_kmeans():
    # 4 x 4 grid, 16 clusters: the k-means path itself (not the exact shortcut) at full count
    from algm_cli.models.reduction import act_attention
    from algm_cli.models.blocks import attention

    model, _ = reduced("vit_t", ACTSpec(1, 1.0))
    blk = model.encoder.blocks[0]
    x = torch.randn(2, 17, 192)
    with torch.no_grad():
        exact, _ = attention(blk.attn, x, None)
        clustered = act_attention(blk.attn, x, clusters=16, iterations=2)
    assert torch.allclose(exact, clustered, atol=1e-5)


def test_gradients_flow_through_every_method():
    model, _ = reduced("vit_t", EViTSpec((1,), 1.0))
    model.train()
    for spec in reducing_specs(12):
        model.reduction = spec
        model.zero_grad()
        model(torch.randn(2, 3, IMG, IMG)).square().mean().backward()
        grad = model.encoder.blocks[0].attn.qkv.weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, spec.method


def test_every_method_lowers_gflops():
    model, base = reduced("vit_t", EViTSpec((1,), 1.0), img=128)  # 8 x 8 grid
    image = torch.randn(1, 3, 128, 128)
    full = count_gflops(base, image)
    specs = [EViTSpec((4, 7, 10), 0.5), ToMeDenseSpec(2, 0.5), ACTSpec(2, 0.25),
             ELViTSpec(4, 20), AiluRusSpec(2, 0.5)]
    for spec in specs:
        model.reduction = spec
        assert count_gflops(model, image) < full, spec.method


def test_same_parameters_as_segmenter():
    model, base = reduced("vit_t", ELViTSpec(6, 28))
    assert model.state_dict().keys() == base.state_dict().keys()


@pytest.mark.parametrize("method", BASELINE_METHODS)
def test_merge_configs_build_models(method):
    with initialize_config_dir(config_dir=os.path.abspath(CONF), version_base=None):
        cfg = compose("run", overrides=[f"merge={method}", "backbone=vit_t"])
        large = compose("run", overrides=[f"merge={method}", "backbone=vit_l"])
    m = cfg.merge
    assert m.method == method and float(m.setting) in [float(v) for v in m.settings]
    assert not m.during_training and m.clap_layer is None and list(m.gbm_layers) == []
    model = build_reduced(m, "vit_t", num_classes=3, decoder="linear", img_size=IMG)
    with torch.no_grad():
        logits, stats = model.forward_with_stats(torch.randn(1, 3, IMG, IMG))
    assert logits.shape == (1, 3, IMG, IMG) and stats
    spec_l = reduction_from_config(large.merge, "vit_l")
    assert spec_l != model.reduction  # per-backbone layers
    for setting in m.settings:  # every listed setting is a valid reduction
        reduction_from_config({**dict(m), "setting": setting}, "vit_t").check(12)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="not a baseline"):
        reduction_from_config({"method": "algm", "setting": 1}, "vit_s")
    with pytest.raises(ValueError, match="outside the encoder's layers"):
        build_reduced({"method": "elvit", "setting": 28, "layer": 13}, "vit_s", img_size=IMG)
    with pytest.raises(ValueError, match="keep rate"):
        build_reduced({"method": "evit", "setting": 1.5, "layers": [4]}, "vit_s", img_size=IMG)
    with pytest.raises(ValueError, match="no entry for backbone"):
        reduction_from_config({"method": "act", "setting": 0.5, "start_layer": {"vit_l": 11}},
                              "vit_s")
