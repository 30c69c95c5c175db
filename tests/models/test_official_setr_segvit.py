"""Released SETR (naive, PUP, MLA) and SegViT checkpoints load through `load_any_checkpoint` and
give the released forward's logits (tests/models/released_mmseg.py re-derives it)."""

import pytest
import torch
import torch.nn.functional as F

from algm_cli.models.convert import detect_format, load_any_checkpoint
from algm_cli.models.segvit import SegViT
from algm_cli.models.setr import SETR

from .released_mmseg import (
    released_segvit_state, released_setr_state, segvit_forward, setr_forward,
)

DIM, DEPTH, HEADS, CLASSES = 192, 12, 3, 5  # vit_t: the smallest 12-layer backbone
ATOL = 1e-4  # float32; measured max differences 0.8e-6 to 2.4e-6


def save(tmp_path, state: dict):
    """Save `state` the way mmseg does ({"meta", "state_dict"}); return the path."""
    path = tmp_path / "released.pth"
    torch.save({"meta": {"mmseg_version": "0.x"}, "state_dict": state}, path)
    return path


def images(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("decoder, grid", [("naive", 4), ("pup", 4), ("mla", 4), ("mla", 6)])
def test_released_setr_equals_released_forward(tmp_path, decoder, grid):
    state = released_setr_state(decoder, DIM, DEPTH, CLASSES, grid)
    model = SETR("vit_t", CLASSES, decoder, 64)
    fmt = load_any_checkpoint(model, save(tmp_path, state))
    assert fmt == ("setr_mla_mmseg" if decoder == "mla" else "setr_mmseg")
    x = images()
    if grid != 4:  # the release's loader rule for another grid: bilinear, align_corners=False
        pos = state["backbone.pos_embed"]
        patch = pos[:, 1:].reshape(1, grid, grid, DIM).permute(0, 3, 1, 2)
        patch = F.interpolate(patch, size=(4, 4), mode="bilinear", align_corners=False)
        state = {**state, "backbone.pos_embed": torch.cat(
            [pos[:, :1], patch.flatten(2).transpose(1, 2)], dim=1)}
    with torch.no_grad():
        ref, ref_aux = setr_forward(state, decoder, x, HEADS)
        ours = model.eval()(x)
        ours_aux = model.forward_aux(x)
    assert ours.shape == ref.shape == (2, CLASSES, 64, 64)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)
    assert len(ours_aux) == len(ref_aux)
    for a, b in zip(ours_aux, ref_aux):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


@pytest.mark.parametrize("grid", [4, 6])
def test_released_segvit_equals_released_forward(tmp_path, grid):
    state = released_segvit_state(DIM, DEPTH, HEADS, CLASSES, grid)
    model = SegViT("vit_t", CLASSES, 64)
    assert load_any_checkpoint(model, save(tmp_path, state)) == "segvit_mmseg"
    x = images(1)
    with torch.no_grad():
        ref = segvit_forward(state, x, HEADS)  # grid 6: mmseg resizes bicubically in forward
        ours = model.eval()(x)
    assert ours.shape == ref.shape == (2, CLASSES, 64, 64)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)


def test_class_token_kept_is_one_option_away_and_differs(tmp_path):
    path = save(tmp_path, released_setr_state("mla", DIM, DEPTH, CLASSES, 4))
    released = SETR("vit_t", CLASSES, "mla", 64)
    kept = SETR("vit_t", CLASSES, "mla", 64, class_token=True)  # this project's earlier reading
    load_any_checkpoint(released, path)
    load_any_checkpoint(kept, path)
    x = images()
    with torch.no_grad():
        assert (released.eval()(x) - kept.eval()(x)).abs().max() > 1e-2  # measured 0.12
    path = save(tmp_path, released_segvit_state(DIM, DEPTH, HEADS, CLASSES, 4))
    released = SegViT("vit_t", CLASSES, 64)
    kept = SegViT("vit_t", CLASSES, 64, class_token=True, pos_resize="bilinear")
    load_any_checkpoint(released, path)
    load_any_checkpoint(kept, path)
    with torch.no_grad():
        assert (released.eval()(x) - kept.eval()(x)).abs().max() > 1e-2  # measured 0.30


def test_setr_without_aux_heads_drops_the_released_aux_heads(tmp_path):
    state = released_setr_state("mla", DIM, DEPTH, CLASSES, 4)
    model = SETR("vit_t", CLASSES, "mla", 64, aux=False)
    assert load_any_checkpoint(model, save(tmp_path, state)) == "setr_mla_mmseg"
    with torch.no_grad():
        ours, (ref, _) = model.eval()(images()), setr_forward(state, "mla", images(), HEADS)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)


def test_unfit_released_checkpoints_get_one_line(tmp_path):
    state = released_segvit_state(DIM, DEPTH, HEADS, CLASSES, 4)
    state.pop("decode_head.class_embed.bias")
    state["decode_head.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as err:
        load_any_checkpoint(SegViT("vit_t", CLASSES, 64), save(tmp_path, state))
    message = str(err.value)
    assert "(segvit_mmseg format) does not fit the model" in message and "\n" not in message
    assert "decoder.class_embed.bias" in message and "decode_head.extra.weight" in message
    with pytest.raises(ValueError, match="setr_mla_mmseg format"):  # an MLA checkpoint, PUP model
        load_any_checkpoint(SETR("vit_t", CLASSES, "pup", 64),
                            save(tmp_path, released_setr_state("mla", DIM, DEPTH, CLASSES, 4)))


def test_formats_are_detected_unambiguously():
    for decoder, fmt in (("naive", "setr_mmseg"), ("pup", "setr_mmseg"), ("mla", "setr_mla_mmseg")):
        assert detect_format(released_setr_state(decoder, 8, 1, 2, 1)) == fmt
    assert detect_format(released_segvit_state(8, 1, 2, 2, 1, levels=1, layers=1)) == "segvit_mmseg"
    assert detect_format({"backbone.layers.0.ln1.weight": 0}) == "mmseg_vit"
    assert detect_format({"backbone.layers.0.ln1.weight": 0,
                          "decode_head.conv_seg.weight": 0}) == "mmseg_vit"


@pytest.mark.slow
@pytest.mark.parametrize("model, state", [
    (["model=setr", "model.decoder=mla"], lambda: released_setr_state("mla", DIM, DEPTH, 8, 32)),
    (["model=segvit"], lambda: released_segvit_state(DIM, DEPTH, HEADS, 8, 40)),
])
def test_algm_run_evaluates_a_released_checkpoint(tmp_path, model, state):
    from hydra import compose, initialize_config_module

    from algm_cli.data.synthetic import SyntheticSpec, generate
    from algm_cli.engine.run import run

    generate(tmp_path / "synthetic", SyntheticSpec(train=4, val=2))
    path = save(tmp_path, state())  # trained at 512 / 640: position embeddings get resized
    with initialize_config_module("algm_cli.conf", version_base="1.3"):
        cfg = compose("run", [
            "smoke=true", f"results_dir={tmp_path / 'results'}", f"work_dir={tmp_path / 'work'}",
            f"dataset.root={tmp_path / 'synthetic'}", "backbone=vit_t", *model,
            f"checkpoint={path}", "stages=[eval]", "merge=none"])
    row = run(cfg)
    assert row["status"] == "ok" and row["checkpoint"] == str(path) and row["miou"] >= 0


def test_an_mmseg_vit_without_a_known_head_is_refused_in_one_line(tmp_path):
    state = released_segvit_state(DIM, DEPTH, HEADS, CLASSES, 4)
    backbone_only = {k: v for k, v in state.items() if k.startswith("backbone.")}
    path = save(tmp_path, backbone_only)
    with pytest.raises(ValueError) as err:
        load_any_checkpoint(SegViT("vit_t", CLASSES, 64), path)
    assert str(err.value).startswith(f"checkpoint {path}: an mmseg checkpoint (backbone.*)")
    assert "\n" not in str(err.value)
