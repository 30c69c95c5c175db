"""Segmenter with merge schedules: shapes, no-merge equivalence, gradients, checkpoints."""

import pytest
import torch

from algm_cli.models.schedule import MergeSchedule, MergeStepSpec, algm_schedule
from algm_cli.models.segmenter import Segmenter, load_checkpoint
from algm_cli.models.blocks import resize_pos_embed

IMG = 64  # a 4x4 patch grid keeps every backbone cheap


def make(backbone="vit_t", decoder="mask", schedule=MergeSchedule(), classes=5, **kw):
    torch.manual_seed(0)
    return Segmenter(backbone, classes, decoder, IMG, schedule, **kw).eval()


@pytest.mark.parametrize("decoder", ["linear", "mask"])
@pytest.mark.parametrize("backbone", ["vit_t", "vit_s", "vit_b", "vit_l"])
def test_shapes_every_backbone_and_decoder(backbone, decoder):
    model = make(backbone, decoder, algm_schedule(0.0, 0.0, gbm_layers=(2,)))
    with torch.no_grad():
        logits, stats = model.forward_with_stats(torch.randn(2, 3, 50, 64))  # padded to 64x64
    assert logits.shape == (2, 5, 50, 64)
    assert set(stats) == {"L1:clap", "L2:gbm"}


def test_nothing_merges_equals_baseline_exactly():
    base = make()
    merged = make(schedule=algm_schedule(1.0, 1.0))  # scores never exceed 1
    merged.load_state_dict(base.state_dict())
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        a = base(x)
        b, stats = merged.forward_with_stats(x)
    assert torch.equal(a, b)
    assert stats == {"L1:clap": 1.0, "L5:gbm": 1.0}


def test_proportional_attention_is_neutral_without_merges_and_active_with():
    x = torch.randn(1, 3, IMG, IMG)
    plain = make(schedule=algm_schedule(1.0, 1.0))
    prop = make(schedule=algm_schedule(1.0, 1.0, proportional_attention=True))
    prop.load_state_dict(plain.state_dict())
    with torch.no_grad():
        assert torch.equal(plain(x), prop(x))
    forced = algm_schedule(-1.0, -1.0, gbm_layers=(2,))
    plain.schedule = forced
    prop.schedule = MergeSchedule(forced.steps, proportional_attention=True)
    with torch.no_grad():
        assert not torch.allclose(plain(x), prop(x))


def test_forced_merging_is_finite_and_differentiable():
    model = make(schedule=algm_schedule(-1.0, -1.0, gbm_layers=(3,))).train()
    x = torch.randn(2, 3, IMG, IMG)
    logits, stats = model.forward_with_stats(x)
    assert torch.isfinite(logits).all()
    assert stats["L1:clap"] == 4 / 16  # every 2x2 window of the 4x4 grid merged
    assert stats["L3:gbm"] == 2 / 16  # GBM then halves the 4 tokens
    logits.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "metric, placement",
    [("tokens", "between"), ("keys", "between"), ("queries", "between"), ("values", "between"),
     ("tokens", "after_mlp")],
)
def test_metric_and_placement_options(metric, placement):
    schedule = MergeSchedule(algm_schedule(0.0, 0.0).steps, metric=metric, placement=placement)
    with torch.no_grad():
        logits, stats = make(schedule=schedule).forward_with_stats(torch.randn(1, 3, IMG, IMG))
    assert logits.shape == (1, 5, IMG, IMG) and stats


def test_tome_schedule_merges_r_per_layer():
    steps = tuple(MergeStepSpec(layer, "tome", r=2) for layer in range(1, 5))
    schedule = MergeSchedule(steps, proportional_attention=True)
    with torch.no_grad():
        _, stats = make(schedule=schedule).forward_with_stats(torch.randn(1, 3, IMG, IMG))
    assert [round(v * 16) for v in stats.values()] == [14, 12, 10, 8]


def test_schedule_errors_are_clear():
    with pytest.raises(ValueError, match="exceed the encoder depth 12"):
        make(schedule=algm_schedule(0.9, 0.9, gbm_layers=(13,)))
    with pytest.raises(ValueError, match="threshold"):
        algm_schedule(1.5, 0.9)
    with pytest.raises(ValueError, match="exists only with placement='between'"):
        MergeSchedule(metric="keys", placement="after_mlp")
    with pytest.raises(ValueError, match="unknown backbone"):
        Segmenter("vit_x", 5)


def official_state_dict(model: Segmenter, grid: int) -> dict:
    """Return `model`'s weights in the official Segmenter format at another grid size."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["encoder.pos_embed"] = resize_pos_embed(sd["encoder.pos_embed"], (grid, grid))
    sd["encoder.head.weight"] = torch.zeros(1000, model.encoder.dim)
    sd["encoder.head.bias"] = torch.zeros(1000)
    return {"model": sd, "epoch": 3}


def test_official_checkpoint_converts_and_loads(tmp_path):
    source = make()
    path = tmp_path / "checkpoint.pth"
    torch.save(official_state_dict(source, 4), path)
    target = Segmenter("vit_t", 5, "mask", IMG)
    load_checkpoint(target, path)
    x = torch.randn(1, 3, IMG, IMG)
    with torch.no_grad():
        assert torch.equal(source(x), target.eval()(x))
    # a checkpoint at another grid is resized bilinearly, as Segmenter does
    torch.save(official_state_dict(source, 6), path)
    load_checkpoint(target, path)


def test_checkpoint_that_does_not_fit_is_a_clear_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model": make(classes=7).state_dict()}, path)
    with pytest.raises(ValueError, match=r"does not fit the model: .*shape mismatches"):
        load_checkpoint(make(classes=5), path)
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable torch file"):
        load_checkpoint(make(), tmp_path / "junk.pth")
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint(make(), tmp_path / "missing.pth")
